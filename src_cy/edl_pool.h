/* C kernels of pooling.pyx: 2x2 stride-2 windows and three-tap folds with SIMD clones.
 * Static functions: each extension that includes this header gets its own copy. */
#ifndef EDL_POOL_H
#define EDL_POOL_H
#include <stddef.h>
#include "edl_math.h"
/* One output row of a 2x2 stride-2 pool from input rows a, b (n outputs). EDL_SIMD_KERNEL:
   AVX2 / AVX-512 clones de-interleave the pairs with shuffles (2x faster than SSE2).
   Max propagates NaN like _nanmax. */
#define EDL_POOL2X2(T, S)                                                                  \
EDL_SIMD_KERNEL static void edl_max2x2_##S(const T *restrict a, const T *restrict b,      \
                                           T *restrict d, ptrdiff_t n) {                  \
    for (ptrdiff_t q = 0; q < n; q++) {                                                   \
        T u = a[2 * q], v = a[2 * q + 1], s = b[2 * q], t = b[2 * q + 1];                 \
        T m = v > u ? v : u;                                                              \
        m = v != v ? v : m;                                                               \
        T r = t > s ? t : s;                                                              \
        r = t != t ? t : r;                                                               \
        T y = r > m ? r : m;                                                              \
        d[q] = r != r ? r : y;                                                            \
    }                                                                                     \
}                                                                                         \
EDL_SIMD_KERNEL static void edl_avg2x2_##S(const T *restrict a, const T *restrict b,      \
                                           T *restrict d, ptrdiff_t n) {                  \
    for (ptrdiff_t q = 0; q < n; q++)                                                     \
        d[q] = ((a[2 * q] + a[2 * q + 1]) + (b[2 * q] + b[2 * q + 1])) * (T)0.25;         \
}
EDL_POOL2X2(float, f)
EDL_POOL2X2(double, d)
/* Three-tap folds with the AVX2 / AVX-512 clones (the generic _fold is SSE2 only): rows
   a, b, c -> d (the vertical pass of a 3-row window), and s[2q..2q+2] -> d[q] (the
   horizontal pass of a 3-wide window at stride 2). mode as _op: 0 sum, 1 max of a
   NaN-free plane, 2 NaN-propagating max; the same association as _fold. */
#define EDL_OP(M, A, B) ((M) == 0 ? (A) + (B) : (M) == 1 ? ((B) > (A) ? (B) : (A))     \
                         : ((B) != (B) ? (B) : ((B) > (A) ? (B) : (A))))
#define EDL_FOLD3(T, S, M)                                                                 \
EDL_SIMD_KERNEL static void edl_fold3_##S##M(const T *a, const T *b, const T *c,          \
                                             T *restrict d, ptrdiff_t n) {                \
    for (ptrdiff_t q = 0; q < n; q++) d[q] = EDL_OP(M, EDL_OP(M, a[q], b[q]), c[q]);     \
}                                                                                         \
EDL_SIMD_KERNEL static void edl_fold3s2_##S##M(const T *s, T *restrict d, ptrdiff_t n) { \
    for (ptrdiff_t q = 0; q < n; q++)                                                     \
        d[q] = EDL_OP(M, EDL_OP(M, s[2 * q], s[2 * q + 1]), s[2 * q + 2]);               \
}
EDL_FOLD3(float, f, 0)
EDL_FOLD3(float, f, 1)
EDL_FOLD3(float, f, 2)
EDL_FOLD3(double, d, 0)
EDL_FOLD3(double, d, 1)
EDL_FOLD3(double, d, 2)
static void edl_fold3_f(const float *a, const float *b, const float *c, float *d,
                        ptrdiff_t n, int mode) {
    if (mode == 0) edl_fold3_f0(a, b, c, d, n);
    else if (mode == 1) edl_fold3_f1(a, b, c, d, n);
    else edl_fold3_f2(a, b, c, d, n);
}
static void edl_fold3_d(const double *a, const double *b, const double *c, double *d,
                        ptrdiff_t n, int mode) {
    if (mode == 0) edl_fold3_d0(a, b, c, d, n);
    else if (mode == 1) edl_fold3_d1(a, b, c, d, n);
    else edl_fold3_d2(a, b, c, d, n);
}
static void edl_fold3s2_f(const float *s, float *d, ptrdiff_t n, int mode) {
    if (mode == 0) edl_fold3s2_f0(s, d, n);
    else if (mode == 1) edl_fold3s2_f1(s, d, n);
    else edl_fold3s2_f2(s, d, n);
}
static void edl_fold3s2_d(const double *s, double *d, ptrdiff_t n, int mode) {
    if (mode == 0) edl_fold3s2_d0(s, d, n);
    else if (mode == 1) edl_fold3s2_d1(s, d, n);
    else edl_fold3s2_d2(s, d, n);
}

#endif
