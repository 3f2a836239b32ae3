# Shared declarations of the OpenMP shim (edl_omp.h); cimport it instead of cython's openmp,
# which needs <omp.h> even when the compiler has no OpenMP.
cdef extern from "edl_omp.h" nogil:
    int EDL_OPENMP
    void omp_set_num_threads(int n)
    int omp_get_max_threads()
