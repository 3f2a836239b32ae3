# cython: language_level=3
"""Runtime facts of the compiled backend: OpenMP presence and its thread count."""
from edl_omp cimport EDL_OPENMP, omp_set_num_threads, omp_get_max_threads


def openmp_enabled():
    """True if the extensions were compiled with OpenMP."""
    return bool(EDL_OPENMP)


def set_num_threads(int n):
    """Threads for the calling thread's subsequent OpenMP regions (prange)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    omp_set_num_threads(n)


def get_max_threads():
    return omp_get_max_threads()
