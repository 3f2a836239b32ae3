"""edgedl: CPU inference for edge devices on NumPy, Numba and Cython kernels.

The public surface is resolved lazily (PEP 562): ``import edgedl`` imports numpy and the small
configuration module only; numba, onnx and Pillow are imported when first needed.
"""
import importlib

from ._config import (  # noqa: F401  (the public surface)
    backends, get_backend, get_num_threads, set_backend, set_num_threads, show_config,
    use_backend)
from ._memory import gc_paused as _gc_paused
from .errors import EdgeDLError, UnsupportedOpsError  # noqa: F401  (the public surface)
from .kernels import activation_table as _activation_table

__version__ = "0.1.0"

# every activation of the family's table (pure data, imports nothing), each with its _grad
_ACTIVATIONS = list(_activation_table.ACTIVATIONS)
_LAZY = {
    "edgedl.kernels.activations": _ACTIVATIONS + [n + "_grad" for n in _ACTIVATIONS],
    "edgedl.kernels.pooling": ["max_pool2d", "avg_pool2d", "global_avg_pool2d",
                               "global_max_pool2d"],
    "edgedl.kernels.boxes": [
        "box_iou", "box_iou_aligned", "nms", "batched_nms", "soft_nms", "non_max_suppression",
        "assign_anchors", "AssignResult", "objectness_weights", "encode_boxes", "decode_boxes",
        "distance2bbox", "sigmoid_focal_loss", "sigmoid_focal_loss_grad",
    ],
    "edgedl.kernels.conv": ["conv2d", "conv_transpose2d"],
    "edgedl.kernels.resize": ["resize2d"],
    "edgedl.onnx.session": ["InferenceSession"],
    "edgedl.detect": ["Detector", "Detections"],
    "edgedl._warmup": ["warmup"],
    "edgedl._memory": ["set_memory_limit", "get_memory_limit"],
}
_WHERE = {name: mod for mod, names in _LAZY.items() for name in names}

__all__ = ["backends", "get_backend", "set_backend", "use_backend", "get_num_threads",
           "set_num_threads", "show_config", "EdgeDLError", "UnsupportedOpsError",
           "__version__"] + sorted(_WHERE)


def __getattr__(name):
    mod = _WHERE.get(name)
    if mod is None:
        if name in ("kernels", "onnx", "detect", "errors"):
            return importlib.import_module(f"edgedl.{name}")
        raise AttributeError(f"module 'edgedl' has no attribute {name!r}")
    with _gc_paused():      # the runtime's modules: ~10 ms of collector passes otherwise
        value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
