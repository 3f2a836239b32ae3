"""The onnx package as a test tool, across the versions the tests meet: the [test] extra's
(>= 1.14) and Debian bookworm's python3-onnx 1.12 on 32-bit ARM, where PyPI has no onnx wheels.

edgedl itself never needs onnx at run time; the tests use it to write models and as an oracle.
"""
import importlib.util

import numpy as np
import pytest

HAVE_ONNX = importlib.util.find_spec("onnx") is not None


def onnx_version():
    """(major, minor) of the installed onnx, (0, 0) without it."""
    if not HAVE_ONNX:
        return (0, 0)
    import onnx
    return tuple(int(p) for p in onnx.__version__.split(".")[:2])


def needs_onnx(at_least=(1, 0), why="writes its model with the onnx package"):
    """Skip marker: onnx (at least version ``at_least``) is missing."""
    have = onnx_version()
    if not HAVE_ONNX:
        return pytest.mark.skipif(True, reason=f"needs the onnx package: {why}")
    return pytest.mark.skipif(have < tuple(at_least), reason=(
        f"needs onnx >= {'.'.join(map(str, at_least))} (this is {'.'.join(map(str, have))}): "
        f"{why}"))


def np_dtype(elem_type):
    """The NumPy dtype of a TensorProto element type (onnx.helper's name moved in 1.13)."""
    from onnx import helper
    if hasattr(helper, "tensor_dtype_to_np_dtype"):
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    from onnx import mapping                  # onnx < 1.13 (gone in later versions)
    return np.dtype(mapping.TENSOR_TYPE_TO_NP_TYPE[elem_type])


def elem_type(dtype):
    """The TensorProto element type of a NumPy dtype."""
    from onnx import helper
    if hasattr(helper, "np_dtype_to_tensor_dtype"):
        return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    from onnx import mapping
    return mapping.NP_TYPE_TO_TENSOR_TYPE[np.dtype(dtype)]
