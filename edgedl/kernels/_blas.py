"""Thread count of NumPy's BLAS (OpenBLAS), which the conv kernels' GEMMs run on.

``_gemm`` keeps it at 1 and splits the GEMMs over edgedl's own threads: a "1-thread" run must
not use every core, and OpenBLAS's static split stalls on a busy machine. Found through the
library NumPy loaded (no threadpoolctl dependency); a no-op where not found.
"""
import ctypes
import threading

_lock = threading.Lock()
_setter = None
_getter = None
_current = None
_probed = False

_NAMES = [("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
          ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
          ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
          ("openblas_set_num_threads", "openblas_get_num_threads")]


def _probe():
    global _setter, _getter, _probed
    _probed = True
    import numpy  # noqa: F401  (loads its BLAS)
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "blas" in ln.lower() and "/" in ln})
    except OSError:
        return
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for s, g in _NAMES:
            if hasattr(lib, s) and hasattr(lib, g):
                _setter, _getter = getattr(lib, s), getattr(lib, g)
                _setter.argtypes = [ctypes.c_int]
                _getter.restype = ctypes.c_int
                return


def set_threads(n):
    """Make the BLAS use ``n`` threads (cheap when it already does)."""
    global _current
    if _current == n:
        return
    with _lock:
        if not _probed:
            _probe()
        if _setter is not None:
            _setter(int(n))
        _current = n


def get_threads():
    if not _probed:
        _probe()
    return None if _getter is None else int(_getter())
