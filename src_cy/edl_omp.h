/* OpenMP when the compiler has it, serial stubs otherwise: the build must work without it. */
#ifndef EDL_OMP_H
#define EDL_OMP_H
#ifdef _OPENMP
#include <omp.h>
#define EDL_OPENMP 1
#else
#define EDL_OPENMP 0
static inline void omp_set_num_threads(int n) { (void)n; }
static inline int omp_get_max_threads(void) { return 1; }
#endif
#endif
