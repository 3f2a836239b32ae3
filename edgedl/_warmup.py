"""``edgedl.warmup()``: compile (or load from cache) every numba kernel for float32.

Each public kernel module may define ``_warmup(backend)`` that calls its kernels once on tiny
float32 inputs; this runs them all, so the first real inference does not pay JIT time.
"""
import importlib.util
import time

from . import _config
from .kernels import activations, boxes, conv, layout, pooling, quant, regions, resize

# Every kernel family (tests/test_layering.py checks this against edgedl/kernels/): conv's
# warm-up also runs resize's numba kernels in their parallel variants.
FAMILIES = {"activations": activations, "pooling": pooling, "boxes": boxes, "conv": conv,
            "regions": regions, "resize": resize, "quant": quant, "layout": layout}


def warmup(backend="numba", verbose=False):
    """Compile/load the kernels of ``backend`` (default numba). Returns {family: seconds}.

    A no-op (empty dict) when the backend is unavailable.
    """
    if backend not in _config.backends():
        return {}
    times = {}
    for fam, mod in FAMILIES.items():
        fn = getattr(mod, "_warmup", None)
        if fn is None:
            continue
        t = time.perf_counter()
        fn(backend)
        times[fam] = time.perf_counter() - t
        if verbose:
            print(f"warmup {backend} {fam}: {times[fam]:.2f} s")
    t = time.perf_counter()
    if _run_demo_model(backend):
        # the planner's own paths (in-place epilogues, pads, concat views) on a real model
        times["demo model"] = time.perf_counter() - t
        if verbose:
            print(f"warmup {backend} demo model: {times['demo model']:.2f} s")
    return times


def _run_demo_model(backend):
    """One inference of the bundled demo model; False where onnx (or the file) is missing."""
    import os
    path = os.path.join(os.path.dirname(__file__), "data", "fastestdet.onnx")
    if not os.path.exists(path) or importlib.util.find_spec("onnx") is None:
        return False
    import numpy as np
    from .onnx.session import InferenceSession
    sess = InferenceSession(path, backend=backend)
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    sess.run(None, {inp.name: np.zeros(shape, np.float32)})
    return True
