"""``edgedl.warmup()``: compile (or load from cache) every numba kernel for float32.

Each public kernel module may define ``_warmup(backend)`` that calls its kernels once on tiny
float32 inputs; this runs them all, so the first real inference does not pay JIT time.
"""
import importlib
import time

from . import _config

FAMILIES = ("activations", "pooling", "boxes", "conv")


def warmup(backend="numba", verbose=False):
    """Compile/load the kernels of ``backend`` (default numba). Returns {family: seconds}.

    A no-op (empty dict) when the backend is unavailable.
    """
    if backend not in _config.backends():
        return {}
    times = {}
    for fam in FAMILIES:
        try:
            mod = importlib.import_module(f"edgedl.kernels.{fam}")
        except ImportError:
            continue
        fn = getattr(mod, "_warmup", None)
        if fn is None:
            continue
        t = time.perf_counter()
        fn(backend)
        times[fam] = time.perf_counter() - t
        if verbose:
            print(f"warmup {backend} {fam}: {times[fam]:.2f} s")
    return times
