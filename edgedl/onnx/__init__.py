"""ONNX runtime on edgedl's kernels: load, plan, run (the onnxruntime Python API).

Needs the ``onnx`` package for parsing; where it cannot be installed (e.g. 32-bit ARM) the
kernels still work and importing this package raises one clear error.
"""
try:
    import onnx as _onnx  # noqa: F401
except ImportError as e:   # pragma: no cover - exercised on armhf
    from ..errors import MissingDependencyError
    raise MissingDependencyError(
        "edgedl.onnx needs the 'onnx' package (pip install onnx); it is not installed or "
        f"failed to import: {e}") from e
