/* C kernels of conv.pyx: depthwise row kernels, im2col gathers and the float32 epilogue.
 * Static functions: each extension that includes this header gets its own copy. */
#ifndef EDL_CONV_H
#define EDL_CONV_H
#include <stddef.h>
#include <string.h>
#include "edl_math.h"        /* includes edl_act_table.h: the EDL_ACT_* epilogue codes */
#include "activations_f32.h"
#include "edl_im2col.h"
/* Depthwise row kernels: whole 3x3 / 5x5 windows at stride 1 (x0.. are the input rows of
   the window, already padded), or one kernel row at any stride / dilation. EDL_SIMD_KERNEL
   adds AVX2+FMA / AVX-512 clones picked at load time (portable build, no -march). */
/* A row's tail (n % 8 outputs) as one more 8-wide chunk ending at n, recomputing a few
   outputs (harmless: the whole-window kernels only assign): a scalar tail cost as much
   as the vector part on rows of 20 or 40. */
#define EDL_TAIL8(n, STMT)                                                               \
    if ((n) & 7) {                                                                      \
        if ((n) >= 8) { for (ptrdiff_t k = (n) - 8; k < (n); k++) STMT; }               \
        else { for (ptrdiff_t k = 0; k < (n); k++) STMT; }                              \
    }
#define EDL_WIN5_STMT(T) {                                                               \
        T a = c[0] * x0[k] + c[1] * x0[k + 1] + c[2] * x0[k + 2] + c[3] * x0[k + 3]     \
            + c[4] * x0[k + 4];                                                         \
        a += c[5] * x1[k] + c[6] * x1[k + 1] + c[7] * x1[k + 2] + c[8] * x1[k + 3]      \
            + c[9] * x1[k + 4];                                                         \
        a += c[10] * x2[k] + c[11] * x2[k + 1] + c[12] * x2[k + 2] + c[13] * x2[k + 3]  \
            + c[14] * x2[k + 4];                                                        \
        a += c[15] * x3[k] + c[16] * x3[k + 1] + c[17] * x3[k + 2] + c[18] * x3[k + 3]  \
            + c[19] * x3[k + 4];                                                        \
        row[k] = a + c[20] * x4[k] + c[21] * x4[k + 1] + c[22] * x4[k + 2]              \
            + c[23] * x4[k + 3] + c[24] * x4[k + 4];                                    \
    }
/* aarch64, float: 8 outputs per iteration as two 4-lane vectors whose FMA chains are
   independent (GCC's vectorised loop ran one chain of 9 dependent FMLA per 4 outputs); each
   output's sum in the scalar loop's order. Leaves nv = 0 for the loop after it. */
#if defined(__aarch64__) && defined(__GNUC__)
typedef float edl_f4 __attribute__((vector_size(16)));
#define EDL_LD4(p) ({ edl_f4 t_; memcpy(&t_, (p), 16); t_; })
#define EDL_WIN3_V(k) (w0 * EDL_LD4(x0 + (k)) + w1 * EDL_LD4(x0 + (k) + 1)                  \
        + w2 * EDL_LD4(x0 + (k) + 2) + w3 * EDL_LD4(x1 + (k)) + w4 * EDL_LD4(x1 + (k) + 1)   \
        + w5 * EDL_LD4(x1 + (k) + 2) + w6 * EDL_LD4(x2 + (k)) + w7 * EDL_LD4(x2 + (k) + 1)   \
        + w8 * EDL_LD4(x2 + (k) + 2))
#define EDL_FULL3_NEON_f                                                                \
    {                                                                                   \
        for (ptrdiff_t k = 0; k < nv; k += 8) {                                         \
            edl_f4 r0 = EDL_WIN3_V(k), r1 = EDL_WIN3_V(k + 4);                          \
            memcpy(row + k, &r0, 16);                                                   \
            memcpy(row + k + 4, &r1, 16);                                               \
        }                                                                               \
        nv = 0;                                                                         \
    }
#else
#define EDL_FULL3_NEON_f
#endif
#define EDL_FULL3_NEON_d
#define EDL_CONV_ROWS(T, S)                                                               \
EDL_SIMD_KERNEL static void edl_full3_##S(const T *x0, const T *x1, const T *x2,        \
                                          const T *w, T *restrict row, ptrdiff_t n) {   \
    const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];           \
    const T w6 = w[6], w7 = w[7], w8 = w[8];                                            \
    ptrdiff_t nv = n & ~(ptrdiff_t)7;                                                   \
    EDL_FULL3_NEON_##S                                                                  \
    for (ptrdiff_t k = 0; k < nv; k++)                                                  \
        row[k] = w0 * x0[k] + w1 * x0[k + 1] + w2 * x0[k + 2] + w3 * x1[k]              \
               + w4 * x1[k + 1] + w5 * x1[k + 2] + w6 * x2[k] + w7 * x2[k + 1]          \
               + w8 * x2[k + 2];                                                        \
    EDL_TAIL8(n, row[k] = w0 * x0[k] + w1 * x0[k + 1] + w2 * x0[k + 2] + w3 * x1[k]     \
              + w4 * x1[k + 1] + w5 * x1[k + 2] + w6 * x2[k] + w7 * x2[k + 1]           \
              + w8 * x2[k + 2])                                                         \
}                                                                                       \
EDL_SIMD_KERNEL static void edl_full5_##S(const T *x0, const T *x1, const T *x2,        \
                                          const T *x3, const T *x4, const T *w,         \
                                          T *restrict row, ptrdiff_t n) {               \
    T c[25];                                                                            \
    for (int i = 0; i < 25; i++) c[i] = w[i];                                           \
    ptrdiff_t nv = n & ~(ptrdiff_t)7;                                                   \
    for (ptrdiff_t k = 0; k < nv; k++) EDL_WIN5_STMT(T);                                 \
    EDL_TAIL8(n, EDL_WIN5_STMT(T))                                                       \
}                                                                                       \
EDL_SIMD_KERNEL static void edl_acc3_##S(const T *x, const T *w, T *restrict row,       \
                                         ptrdiff_t n, ptrdiff_t sw, ptrdiff_t dw) {     \
    const T w0 = w[0], w1 = w[1], w2 = w[2];                                            \
    for (ptrdiff_t k = 0; k < n; k++)                                                   \
        row[k] += w0 * x[k * sw] + w1 * x[k * sw + dw] + w2 * x[k * sw + 2 * dw];       \
}                                                                                       \
EDL_SIMD_KERNEL static void edl_acc5_##S(const T *x, const T *w, T *restrict row,       \
                                         ptrdiff_t n, ptrdiff_t sw, ptrdiff_t dw) {     \
    const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4];                      \
    for (ptrdiff_t k = 0; k < n; k++)                                                   \
        row[k] += w0 * x[k * sw] + w1 * x[k * sw + dw] + w2 * x[k * sw + 2 * dw]        \
                + w3 * x[k * sw + 3 * dw] + w4 * x[k * sw + 4 * dw];                    \
}
/* t = lo > t ? lo : t, then hi < t ? hi : t, in vectors of VB bytes (EDL_VMAX_*: vmaxps /
   vminps on x86, which keep a NaN t; compare and select elsewhere). Both always: an infinite
   bound leaves t as it is (max(-inf, t) = t, NaN kept), and a test per bound in the loop
   had left GCC's AVX2 rows with scalar compares and branches per vector (64 x 80 x 80:
   ~1.5x the time). Expects VT lov / hiv in scope. */
#define EDL_CLAMPV(VT, IVT, VB, t)                                                        \
    EDL_VMINB(VB, VT, IVT, hiv, EDL_VMAXB(VB, VT, IVT, lov, (t)))
static inline float edl_clamp1(float t, float lo, float hi) {
    float v = lo > t ? lo : t;
    return hi < v ? hi : v;
}
/* 3x3 stride-1 depthwise with padding 1, whole output rows (n >= 18 columns, edges included)
   with the bias and a clip (act NONE: lo = -inf, hi = inf; NaN passes): x0.. are the input
   rows of the window (a zero row above / below the plane). Two output rows a call share the
   middle input rows: 12 vector loads for 2 output vectors, not 18. Per vector one chain of 5
   FMAs from the bias and one of 4, then max / min: 12 vector ops, not the 16 of three partial
   sums and compare-and-blend clamps, which ran at 1.7 cycles an output (64x80x80). Vectors
   of VB bytes, per ISA (edl_math.h: wider ones compared lane by lane). */
#define EDL_DW3_V(VB, a, b_, c, k)                                                        \
    EDL_CLAMPV(VT, IVT, VB,                                                               \
               (b + w0 * EDL_LDV(VT, a + (k) - 1) + w1 * EDL_LDV(VT, a + (k))             \
                + w2 * EDL_LDV(VT, a + (k) + 1) + w3 * EDL_LDV(VT, b_ + (k) - 1)          \
                + w4 * EDL_LDV(VT, b_ + (k)))                                             \
               + (w5 * EDL_LDV(VT, b_ + (k) + 1) + w6 * EDL_LDV(VT, c + (k) - 1)           \
                  + w7 * EDL_LDV(VT, c + (k)) + w8 * EDL_LDV(VT, c + (k) + 1)))
#define EDL_DW3_EDGES(a, b_, c, row)                                                      \
    row[0] = edl_clamp1((w1 * a[0] + w2 * a[1] + w4 * b_[0] + w5 * b_[1] + w7 * c[0]      \
                         + w8 * c[1]) + b, lo, hi);                                       \
    row[n - 1] = edl_clamp1((w0 * a[n - 2] + w1 * a[n - 1] + w3 * b_[n - 2]              \
                             + w4 * b_[n - 1] + w6 * c[n - 2] + w7 * c[n - 1]) + b, lo, hi);
/* the per-ISA 3x3 depthwise kernels' scope: VT / IVT (VB_ bytes, W floats), the 9 weights
   w0..w8 of w and the clip's vectors lov / hiv */
#define EDL_DW3_PROLOGUE(VT_, IVT_, VB_)                                                  \
    typedef VT_ VT;                                                                      \
    typedef IVT_ IVT __attribute__((unused));                                            \
    enum { W = VB_ / 4 };                                                                \
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];       \
    const float w6 = w[6], w7 = w[7], w8 = w[8];                                        \
    const VT lov = lo - (VT){0}, hiv = hi - (VT){0};
#define EDL_DW3_SAME_ISA(NAME, two, ATTR, VT_, IVT_, VB_)                                 \
ATTR static void NAME(const float *x0, const float *x1, const float *x2, const float *x3, \
                      const float *w, float *restrict r0, float *restrict r1,             \
                      ptrdiff_t n, float b, float lo, float hi) {                         \
    EDL_DW3_PROLOGUE(VT_, IVT_, VB_)                                                     \
    /* interior outputs 1 .. n - 2, the last vector moved back to end at n - 1 */       \
    for (ptrdiff_t k = 1;; k += W) {                                                    \
        if (k > n - W - 1) k = n - W - 1;                                               \
        VT t0 = EDL_DW3_V(VB_, x0, x1, x2, k);                                               \
        memcpy(r0 + k, &t0, sizeof t0);                                                 \
        if (two) {                                                                      \
            VT t1 = EDL_DW3_V(VB_, x1, x2, x3, k);                                           \
            memcpy(r1 + k, &t1, sizeof t1);                                             \
        }                                                                               \
        if (k == n - W - 1) break;                                                      \
    }                                                                                   \
    EDL_DW3_EDGES(x0, x1, x2, r0)                                                       \
    if (two) { EDL_DW3_EDGES(x1, x2, x3, r1) }                                          \
}
#define EDL_DW3_SAME_ISAS(ATTR, VT, IVT, VB, SFX)                                          \
EDL_DW3_SAME_ISA(edl_dw3_same_row_##SFX, 0, ATTR, VT, IVT, VB)                             \
EDL_DW3_SAME_ISA(edl_dw3_same_rows2_##SFX, 1, ATTR, VT, IVT, VB)
#ifdef EDL_X86_MV
EDL_DW3_SAME_ISAS(EDL_AVX512, edl_vf16, edl_vi16, 64, avx512)
EDL_DW3_SAME_ISAS(EDL_AVX2, edl_vf8, edl_vi8, 32, avx2)
EDL_DW3_SAME_ISAS(EDL_CONTRACT, edl_vf4, edl_vi4, 16, sse)
#else
EDL_DW3_SAME_ISAS(EDL_CONTRACT, edl_vf4, edl_vi4, 16, base)
#endif
#ifdef EDL_X86_MV
/* The same 3x3 'same' depthwise for a band of rows of a plane (rows of n >= 16) on AVX2,
   whole 8-output vectors: the nine weights, the bias and the clip's bounds broadcast once a
   band (the rows kernel did it every row pair and then spilled them: 18 loads a vector);
   the two edge vectors of a row mask their outside tap's load (lane 0 of column -1, lane 7
   of column n: vmaskmovps loads do not fault and read zeros) instead of the rows kernel's
   scalar edge columns and moved-back last vector. Two output rows a pass share their middle
   input rows' loads (EDL_DW3P_IN keeps each loaded vector for both rows' FMAs): 12 loads for
   18 FMAs, a third of them crossing a cache line. 64 x 80 x 80: 9.6 -> 6.0 cycles a vector
   of 8 outputs (FMAs alone: 4.5). ``zero``: n zeros, the rows above and below the plane.
   Each output the rows kernel's two chains of 5 and 4 products (outside taps as zeros),
   the bias and a clip in registers. */
/* one output row (o0) from input rows rw[0..2] (an odd band's last) */
#define EDL_DW3P_PASS(k, LD_L, LD_R)                                                        \
    {                                                                                      \
        edl_vf8 a = bv, c2 = z;                                                            \
        a += w0 * LD_L(rw[0] + (k) - 1);                                                   \
        a += w1 * EDL_LDV(edl_vf8, rw[0] + (k));                                           \
        a += w2 * LD_R(rw[0] + (k) + 1);                                                   \
        a += w3 * LD_L(rw[1] + (k) - 1);                                                   \
        a += w4 * EDL_LDV(edl_vf8, rw[1] + (k));                                           \
        c2 += w5 * LD_R(rw[1] + (k) + 1);                                                  \
        c2 += w6 * LD_L(rw[2] + (k) - 1);                                                  \
        c2 += w7 * EDL_LDV(edl_vf8, rw[2] + (k));                                          \
        c2 += w8 * LD_R(rw[2] + (k) + 1);                                                  \
        a = EDL_DW3P_CLIP(a + c2);                                                         \
        memcpy(o0 + (k), &a, sizeof a);                                                    \
    }
/* LD(p) loaded into a register once (GCC otherwise folds the load into each FMA using it:
   twice the loads) */
#define EDL_DW3P_IN(LD, p) ({ edl_vf8 v_ = LD(p); __asm__("" : "+x"(v_)); v_; })
/* two output rows (o0, o0 + n) from input rows rw[0..3] a pass: each of the 12 tap vectors
   loaded once and used by both rows' chains (the same sums as EDL_DW3P_PASS) */
#define EDL_DW3P_PASS2(k, LD_L, LD_R)                                                       \
    {                                                                                      \
        edl_vf8 a0 = bv, a1 = bv, c0, c1, v;                                               \
        const float *p0 = rw[0] + (k), *p1 = rw[1] + (k), *p2 = rw[2] + (k);               \
        const float *p3 = rw[3] + (k);                                                     \
        v = EDL_DW3P_IN(LD_L, p0 - 1); a0 += w0 * v;                                       \
        v = EDL_DW3P_IN(EDL_DW3P_LD, p0); a0 += w1 * v;                                    \
        v = EDL_DW3P_IN(LD_R, p0 + 1); a0 += w2 * v;                                       \
        v = EDL_DW3P_IN(LD_L, p1 - 1); a0 += w3 * v; a1 += w0 * v;                         \
        v = EDL_DW3P_IN(EDL_DW3P_LD, p1); a0 += w4 * v; a1 += w1 * v;                      \
        v = EDL_DW3P_IN(LD_R, p1 + 1); c0 = z + w5 * v; a1 += w2 * v;                      \
        v = EDL_DW3P_IN(LD_L, p2 - 1); c0 += w6 * v; a1 += w3 * v;                         \
        v = EDL_DW3P_IN(EDL_DW3P_LD, p2); c0 += w7 * v; a1 += w4 * v;                      \
        v = EDL_DW3P_IN(LD_R, p2 + 1); c0 += w8 * v; c1 = z + w5 * v;                      \
        v = EDL_DW3P_IN(LD_L, p3 - 1); c1 += w6 * v;                                       \
        v = EDL_DW3P_IN(EDL_DW3P_LD, p3); c1 += w7 * v;                                    \
        v = EDL_DW3P_IN(LD_R, p3 + 1); c1 += w8 * v;                                       \
        a0 = EDL_DW3P_CLIP(a0 + c0);                                                       \
        a1 = EDL_DW3P_CLIP(a1 + c1);                                                       \
        memcpy(o0 + (k), &a0, sizeof a0);                                                  \
        memcpy(o0 + n + (k), &a1, sizeof a1);                                              \
    }
#define EDL_DW3P_LD(p) EDL_LDV(edl_vf8, p)
#define EDL_DW3P_LDL(p) ((edl_vf8)_mm256_maskload_ps(p, ml))
#define EDL_DW3P_LDR(p) ((edl_vf8)_mm256_maskload_ps(p, mr))
/* the clip to [lo, hi] (NaN kept), without its min where hi is +inf (ReLU: one op of ~12 a
   vector fewer on the FMA pipes) */
#define EDL_DW3P_CLIP(a)                                                                    \
    (BOUNDED ? EDL_VMIN_32(edl_vf8, edl_vi8, hiv, EDL_VMAX_32(edl_vf8, edl_vi8, lov, a))   \
             : EDL_VMAX_32(edl_vf8, edl_vi8, lov, a))
#define EDL_DW3P_PLANE(NAME, BOUNDED_)                                                      \
EDL_AVX2 static void NAME(const float *x, ptrdiff_t h, ptrdiff_t r0, ptrdiff_t r1,         \
                          ptrdiff_t n, const float *zero, const float *wt, float b,        \
                          float lo, float hi, float *out) {                                \
    enum { BOUNDED = BOUNDED_ };                                                           \
    const edl_vf8 z = {0}, w0 = z + wt[0], w1 = z + wt[1], w2 = z + wt[2];                 \
    const edl_vf8 w3 = z + wt[3], w4 = z + wt[4], w5 = z + wt[5], w6 = z + wt[6];          \
    const edl_vf8 w7 = z + wt[7], w8 = z + wt[8], bv = z + b, lov = z + lo, hiv = z + hi;  \
    const __m256i ml = _mm256_setr_epi32(0, -1, -1, -1, -1, -1, -1, -1);                   \
    const __m256i mr = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, -1, 0);                   \
    (void)hiv;                                                                             \
    ptrdiff_t oy = r0;                                                                     \
    for (; oy + 1 < r1; oy += 2) {                                                         \
        const float *rw[4] = {oy >= 1 ? x + (oy - 1) * n : zero, x + oy * n,               \
                              x + (oy + 1) * n, oy + 2 < h ? x + (oy + 2) * n : zero};     \
        float *o0 = out + (oy - r0) * n;                                                   \
        EDL_DW3P_PASS2(0, EDL_DW3P_LDL, EDL_DW3P_LD)                                       \
        for (ptrdiff_t k = 8; k <= n - 9; k += 8)  /* [8, n - 8): k ends > n - 17 */       \
            EDL_DW3P_PASS2(k, EDL_DW3P_LD, EDL_DW3P_LD)                                    \
        EDL_DW3P_PASS2(n - 8, EDL_DW3P_LD, EDL_DW3P_LDR)                                   \
    }                                                                                      \
    if (oy < r1) {     /* an odd band's last row */                                        \
        const float *rw[3] = {oy >= 1 ? x + (oy - 1) * n : zero, x + oy * n,               \
                              oy + 1 < h ? x + (oy + 1) * n : zero};                       \
        float *o0 = out + (oy - r0) * n;                                                   \
        EDL_DW3P_PASS(0, EDL_DW3P_LDL, EDL_DW3P_LD)                                        \
        for (ptrdiff_t k = 8; k <= n - 9; k += 8)                                          \
            EDL_DW3P_PASS(k, EDL_DW3P_LD, EDL_DW3P_LD)                                     \
        EDL_DW3P_PASS(n - 8, EDL_DW3P_LD, EDL_DW3P_LDR)                                    \
    }                                                                                      \
}
EDL_DW3P_PLANE(edl_dw3_same_plane_avx2, 1)
EDL_DW3P_PLANE(edl_dw3_same_plane_relu_avx2, 0)
#endif
/* Output rows [r0, r1) (out: row r0's) of the plane at x (h rows of n; rows outside it
   read as zero's) by the kernel above where this CPU runs it (AVX2 without AVX-512, n >= 16):
   1, else 0 (the caller takes the rows kernels). */
static inline int edl_dw3_same_plane_f(const float *x, ptrdiff_t h, ptrdiff_t r0, ptrdiff_t r1,
                                       ptrdiff_t n, const float *zero, const float *wt,
                                       float b, float lo, float hi, float *out) {
#ifdef EDL_X86_MV
    if (edl_x86_level() == 1 && n >= 16) {
        (hi == INFINITY ? edl_dw3_same_plane_relu_avx2 : edl_dw3_same_plane_avx2)(
            x, h, r0, r1, n, zero, wt, b, lo, hi, out);
        return 1;
    }
#endif
    (void)x; (void)h; (void)r0; (void)r1; (void)n; (void)zero; (void)wt; (void)b; (void)lo;
    (void)hi; (void)out;
    return 0;
}
/* one output row (r0) of the windows x0..x2, or two (r0, r1: x0..x3) */
static inline void edl_dw3_same_row_f(const float *x0, const float *x1, const float *x2,
                                      const float *x3, const float *w, float *restrict r0,
                                      float *restrict r1, ptrdiff_t n, float b, float lo,
                                      float hi) {
    EDL_ISA_CALL(edl_dw3_same_row, (x0, x1, x2, x3, w, r0, r1, n, b, lo, hi))
}
static inline void edl_dw3_same_rows2_f(const float *x0, const float *x1, const float *x2,
                                        const float *x3, const float *w, float *restrict r0,
                                        float *restrict r1, ptrdiff_t n, float b, float lo,
                                        float hi) {
    EDL_ISA_CALL(edl_dw3_same_rows2, (x0, x1, x2, x3, w, r0, r1, n, b, lo, hi))
}
/* 3x3 stride-1 depthwise padded by 1 on every side: h output rows of w (n = h * w) from the
   input rows at x as one flat run of 16-output AVX-512 vectors, any w: the taps that leave
   the plane zeroed by masks (masked loads do not fault: no padded copy, no scalar edge
   columns, no vector moved back over its neighbour). top / bottom: the rows above / below the
   run are padding (else they are at x - w / x + n: a band of a plane). mlr[2 v],
   mlr[2 v + 1]: vector v's lanes not in column 0 / not in column w - 1 (edl_dw3s1_lr_masks,
   the same for every plane of a call). Interior vectors load each row once and shift their
   neighbours' lanes in with valignd (16 x 40 x 40: 0.36 -> 0.25 ns an output against the
   rows kernel, whose edges and overlapping last vector cost most at narrow rows); the others
   mask the padding rows and the lanes past n too. Every output the same two chains of 5 and 4
   products, padding taps as zeros, wherever its vector falls: a band gives the plane's
   values. The bias and a clip (sig 0), sigmoid or SiLU in registers. */
/* 8- and 16-lane vectors of the flat runs and the direct convs */
typedef float edl_v8f __attribute__((vector_size(32)));
typedef int32_t edl_v8i __attribute__((vector_size(32)));
typedef uint32_t edl_v8u __attribute__((vector_size(32)));
typedef uint32_t edl_v16u __attribute__((vector_size(64)));
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8 \
    && !defined(EDL_NO_CLONES)
#include <immintrin.h>
#define EDL_DW3F_TAPS(mul0, up, mid, dn)                                                    \
    ((mul0) + w0 * (up)[0] + w1 * (up)[1] + w2 * (up)[2] + w3 * (mid)[0] + w4 * (mid)[1]) \
        + (w5 * (mid)[2] + w6 * (dn)[0] + w7 * (dn)[1] + w8 * (dn)[2])
typedef float edl_f16v __attribute__((vector_size(64)));
typedef int32_t edl_i16v __attribute__((vector_size(64)));
typedef uint32_t edl_u16v __attribute__((vector_size(64)));
/* the 9 taps of output vector i; mk: the rows' lane masks (above, its own, below) */
#define EDL_DW3F_LOAD(t, p, w, mk, ml, mr)                                                  \
    for (int r_ = 0; r_ < 3; r_++) {                                                       \
        const float *q_ = (p) + (r_ - 1) * (w);                                            \
        t[r_][0] = (edl_f16v)_mm512_maskz_loadu_ps((mk)[r_] & (ml), q_ - 1);               \
        t[r_][1] = (edl_f16v)_mm512_maskz_loadu_ps((mk)[r_], q_);                          \
        t[r_][2] = (edl_f16v)_mm512_maskz_loadu_ps((mk)[r_] & (mr), q_ + 1);               \
    }
/* SIG: the sigmoid / SiLU twin (its constants would crowd the clip's loop), else the clip */
#define EDL_DW3F_ACT(a, SIG)                                                                \
    ((SIG) ? EDL_VSIG(edl_f16v, edl_i16v, edl_u16v, a, silu, 64)                           \
           : EDL_VMIN_64(edl_f16v, edl_i16v, hiv, EDL_VMAX_64(edl_f16v, edl_i16v, lov, a)))
#define EDL_DW3F(NAME, SIG)                                                                 \
__attribute__((target("avx512f,fma"))) EDL_CONTRACT                                        \
static void NAME(const float *x, ptrdiff_t h, ptrdiff_t w, int top, int bottom,           \
                 const float *wt, float b, float lo, float hi, int sig,                    \
                 const uint16_t *mlr, float *out) {                                        \
    const ptrdiff_t n = h * w;                                                             \
    const edl_f16v z = {0}, w0 = z + wt[0], w1 = z + wt[1], w2 = z + wt[2];                \
    const edl_f16v w3 = z + wt[3], w4 = z + wt[4], w5 = z + wt[5], w6 = z + wt[6];         \
    const edl_f16v w7 = z + wt[7], w8 = z + wt[8], bv = z + b, lov = z + lo, hiv = z + hi; \
    const int silu = sig == EDL_ACT_SILU;                                                  \
    /* vectors [v0, v1) have their rows above and below in memory, not padding */         \
    const ptrdiff_t nv = (n + 15) / 16, v0 = top ? (w + 15) / 16 : 0;                      \
    const ptrdiff_t v1 = !bottom ? n / 16 : n - w >= 16 ? (n - w - 16) / 16 + 1 : 0;       \
    (void)lov; (void)hiv; (void)silu;                                                      \
    for (ptrdiff_t v = 0; v < nv; v++) {                                                   \
        const ptrdiff_t i = 16 * v;                                                        \
        const __mmask16 ml = mlr[2 * v], mr = mlr[2 * v + 1];                              \
        edl_f16v t[3][3], a;                                                               \
        if (v >= v0 && v + 1 < v1) {                                                       \
            /* the interior but its last vector: each row's vector loaded once (C) and its  \
               neighbours' lanes shifted in by valignd (zeroed at row ends by its mask), P  \
               the previous vector's, N the next one's (in the plane: not the last) */      \
            __m512 P[3], C[3];                                                             \
            for (int r_ = 0; r_ < 3; r_++) {                                               \
                const float *q_ = x + i + (r_ - 1) * w;                                    \
                P[r_] = _mm512_maskz_loadu_ps(ml & 1 ? 0x8000 : 0, q_ - 16);  /* q_[-1] */ \
                C[r_] = _mm512_loadu_ps(q_);                                               \
            }                                                                              \
            for (; v + 1 < v1; v++) {                                                      \
                const ptrdiff_t j = 16 * v;                                                \
                const __mmask16 ml_ = mlr[2 * v], mr_ = mlr[2 * v + 1];                   \
                for (int r_ = 0; r_ < 3; r_++) {                                           \
                    const __m512 N = _mm512_loadu_ps(x + j + (r_ - 1) * w + 16);           \
                    t[r_][0] = (edl_f16v)_mm512_castsi512_ps(_mm512_maskz_alignr_epi32(     \
                        ml_, _mm512_castps_si512(C[r_]), _mm512_castps_si512(P[r_]), 15));  \
                    t[r_][1] = (edl_f16v)C[r_];                                            \
                    t[r_][2] = (edl_f16v)_mm512_castsi512_ps(_mm512_maskz_alignr_epi32(     \
                        mr_, _mm512_castps_si512(N), _mm512_castps_si512(C[r_]), 1));       \
                    P[r_] = C[r_];                                                         \
                    C[r_] = N;                                                             \
                }                                                                          \
                a = EDL_DW3F_TAPS(bv, t[0], t[1], t[2]);                                   \
                a = EDL_DW3F_ACT(a, SIG);                                                  \
                _mm512_storeu_ps(out + j, (__m512)a);                                      \
            }                                                                              \
            v--;                                                                           \
            continue;                                                                      \
        }                                                                                  \
        const ptrdiff_t left = n - i, below = n - w - i;                                   \
        const __mmask16 ma = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);         \
        const __mmask16 mt = !top || i >= w ? ma                                           \
            : w - i >= 16 ? 0 : (__mmask16)(ma & (0xFFFFu << (w - i)));                    \
        const __mmask16 mb = !bottom || below >= 16 ? ma                                   \
            : below <= 0 ? 0 : (__mmask16)(ma & ((1u << below) - 1));                      \
        const __mmask16 mk[3] = {mt, ma, mb};                                              \
        EDL_DW3F_LOAD(t, x + i, w, mk, ml, mr)                                             \
        a = EDL_DW3F_TAPS(bv, t[0], t[1], t[2]);                                           \
        a = EDL_DW3F_ACT(a, SIG);                                                          \
        _mm512_mask_storeu_ps(out + i, ma, (__m512)a);                                     \
    }                                                                                      \
}
EDL_DW3F(edl_dw3s1_flat_clip_avx512_f, 0)
EDL_DW3F(edl_dw3s1_flat_sig_avx512_f, 1)
static void edl_dw3s1_flat_avx512_f(const float *x, ptrdiff_t h, ptrdiff_t w, int top,
                                    int bottom, const float *wt, float b, float lo, float hi,
                                    int sig, const uint16_t *mlr, float *out) {
    (sig ? edl_dw3s1_flat_sig_avx512_f : edl_dw3s1_flat_clip_avx512_f)(
        x, h, w, top, bottom, wt, b, lo, hi, sig, mlr, out);
}
/* 3x3 depthwise at column stride 2 with one column of left padding (any row stride sh and
   top padding ph; rows outside the plane are zeros), one plane, AVX-512:
   output rows oy0 .. oy1 - 1 of ow (out: the plane's output), per output vector (16 outputs)
   and window row, the 32 input columns 2 k .. 2 k + 31 in two
   masked loads (columns past the row read as the right padding's zeros), split by parity
   with vpermt2ps (E: columns 2 k, O: 2 k + 1) and the left tap (2 k - 1) as O shifted by a
   lane with the previous vector's last (valignd; zeros before column 0). No copy of the plane
   split by parity and no scalar column: the split path took 0.8-1.1 ns an output (16 x 208 x
   208 at 3 cycles an output). Sums as the rows kernels' two chains; the bias and a clip
   (sig 0), sigmoid or SiLU in registers. */
#define EDL_DW3S2F(NAME, SIG)                                                               \
__attribute__((target("avx512f,fma"))) EDL_CONTRACT                                        \
static void NAME(const float *x, ptrdiff_t h, ptrdiff_t w, ptrdiff_t sh, ptrdiff_t ph,     \
                 const float *wt, float b, float lo, float hi, int sig, float *out,       \
                 ptrdiff_t oy0, ptrdiff_t oy1, ptrdiff_t ow) {                             \
    const edl_f16v z = {0}, w0 = z + wt[0], w1 = z + wt[1], w2 = z + wt[2];                \
    const edl_f16v w3 = z + wt[3], w4 = z + wt[4], w5 = z + wt[5], w6 = z + wt[6];         \
    const edl_f16v w7 = z + wt[7], w8 = z + wt[8], bv = z + b, lov = z + lo, hiv = z + hi; \
    const int silu = sig == EDL_ACT_SILU;                                                  \
    const __m512i ie = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6,   \
                                        4, 2, 0);                                          \
    const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));                         \
    (void)lov; (void)hiv; (void)silu;                                                      \
    for (ptrdiff_t oy = oy0; oy < oy1; oy++) {                                             \
        const float *rows[3];                                                              \
        for (int r = 0; r < 3; r++) {                                                      \
            const ptrdiff_t iy = oy * sh - ph + r;                                         \
            rows[r] = iy >= 0 && iy < h ? x + iy * w : NULL;                               \
        }                                                                                  \
        __m512 op[3] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};    \
        for (ptrdiff_t k = 0; k < ow; k += 16) {                                           \
            const ptrdiff_t la = w - 2 * k, lb = la - 16;     /* columns left from 2k */   \
            const __mmask16 ma = la >= 16 ? 0xFFFF : la <= 0 ? 0 : (__mmask16)((1u << la) - 1); \
            const __mmask16 mb = lb >= 16 ? 0xFFFF : lb <= 0 ? 0 : (__mmask16)((1u << lb) - 1); \
            edl_f16v t[3][3];                                                              \
            for (int r = 0; r < 3; r++) {                                                  \
                __m512 e = _mm512_setzero_ps(), o = e;                                     \
                if (rows[r]) {                                                             \
                    const __m512 A = lb >= 16 ? _mm512_loadu_ps(rows[r] + 2 * k)          \
                                              : _mm512_maskz_loadu_ps(ma, rows[r] + 2 * k);    \
                    const __m512 B = lb >= 16 ? _mm512_loadu_ps(rows[r] + 2 * k + 16)     \
                                              : _mm512_maskz_loadu_ps(mb, rows[r] + 2 * k + 16); \
                    e = _mm512_permutex2var_ps(A, ie, B);                                  \
                    o = _mm512_permutex2var_ps(A, io, B);                                  \
                }                                                                          \
                t[r][0] = (edl_f16v)_mm512_castsi512_ps(_mm512_alignr_epi32(                \
                    _mm512_castps_si512(o), _mm512_castps_si512(op[r]), 15));              \
                t[r][1] = (edl_f16v)e;                                                     \
                t[r][2] = (edl_f16v)o;                                                     \
                op[r] = o;                                                                 \
            }                                                                              \
            edl_f16v a = EDL_DW3F_TAPS(bv, t[0], t[1], t[2]);                              \
            a = EDL_DW3F_ACT(a, SIG);                                                      \
            const ptrdiff_t left = ow - k;                                                 \
            _mm512_mask_storeu_ps(out + oy * ow + k,                                       \
                                  left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1),     \
                                  (__m512)a);                                              \
        }                                                                                  \
    }                                                                                      \
}
EDL_DW3S2F(edl_dw3s2_flat_clip_avx512_f, 0)
EDL_DW3S2F(edl_dw3s2_flat_sig_avx512_f, 1)
static void edl_dw3s2_flat_avx512_f(const float *x, ptrdiff_t h, ptrdiff_t w, ptrdiff_t sh,
                                    ptrdiff_t ph, const float *wt, float b, float lo,
                                    float hi, int sig, float *out, ptrdiff_t oy0,
                                    ptrdiff_t oy1, ptrdiff_t ow) {
    (sig ? edl_dw3s2_flat_sig_avx512_f : edl_dw3s2_flat_clip_avx512_f)(
        x, h, w, sh, ph, wt, b, lo, hi, sig, out, oy0, oy1, ow);
}
/* The same flat run on AVX2 (8-output vectors, no mask registers): interior vectors load
   each tap (unaligned) and zero the left / right column taps with the lanes of mlr's byte
   (edl_lane8_masks: 8 KiB, one load a mask); the vectors whose taps leave the rows in
   memory mask their loads (vmaskmovps: masked lanes do not fault) and their last partial
   store goes lane by lane (Zen 3's masked stores are slow). The rows kernel spent most of a
   narrow row on its scalar edge columns and its moved-back last vector (64 x 20 x 20: 16
   cycles a vector of 8 outputs). Same two chains as the AVX-512 run: the same values. */
#define EDL_L8(b) {-((b) & 1), -(((b) >> 1) & 1), -(((b) >> 2) & 1), -(((b) >> 3) & 1),    \
                   -(((b) >> 4) & 1), -(((b) >> 5) & 1), -(((b) >> 6) & 1), -(((b) >> 7) & 1)}
#define EDL_L8X4(b) EDL_L8(b), EDL_L8((b) + 1), EDL_L8((b) + 2), EDL_L8((b) + 3)
#define EDL_L8X16(b) EDL_L8X4(b), EDL_L8X4((b) + 4), EDL_L8X4((b) + 8), EDL_L8X4((b) + 12)
#define EDL_L8X64(b) EDL_L8X16(b), EDL_L8X16((b) + 16), EDL_L8X16((b) + 32), \
                     EDL_L8X16((b) + 48)
/* lane j of entry b: -1 where bit j of b is set, else 0 */
static const int32_t edl_lane8_masks[256][8] __attribute__((aligned(32))) = {
    EDL_L8X64(0), EDL_L8X64(64), EDL_L8X64(128), EDL_L8X64(192)};
/* the 8-lane left / right masks of vector v (half v & 1 of mlr's 16-lane entry v >> 1) */
#define EDL_LR8(mlr, v, side)                                                               \
    EDL_LDV(edl_vi8, edl_lane8_masks[(mlr[2 * ((v) >> 1) + (side)] >> (8 * ((v) & 1))) & 255])
#define EDL_DW3F8(NAME, SIG)                                                                \
__attribute__((target("avx2,fma"))) EDL_CONTRACT                                           \
static void NAME(const float *x, ptrdiff_t h, ptrdiff_t w, int top, int bottom,           \
                 const float *wt, float b, float lo, float hi, int sig,                    \
                 const uint16_t *mlr, float *out) {                                        \
    const ptrdiff_t n = h * w, nv = (n + 7) / 8;                                           \
    const edl_vf8 z = {0}, w0 = z + wt[0], w1 = z + wt[1], w2 = z + wt[2];                 \
    const edl_vf8 w3 = z + wt[3], w4 = z + wt[4], w5 = z + wt[5], w6 = z + wt[6];          \
    const edl_vf8 w7 = z + wt[7], w8 = z + wt[8], bv = z + b, lov = z + lo, hiv = z + hi;  \
    const int silu = sig == EDL_ACT_SILU;                                                  \
    /* vectors [v0, v1) read only rows in memory (from lowb to upb, flat), none padding */ \
    const ptrdiff_t lowb = top ? 0 : -w, upb = bottom ? n : n + w;                         \
    const ptrdiff_t v0 = (lowb + w + 8) / 8;                                               \
    const ptrdiff_t v1 = upb - w - 9 >= 0 ? (upb - w - 9) / 8 + 1 : 0;                     \
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);                        \
    (void)lov; (void)hiv; (void)silu;                                                      \
    for (ptrdiff_t v = 0; v < nv; v++) {                                                   \
        edl_vf8 t[3][3], a;                                                                \
        for (; v >= v0 && v < v1; v++) {                                                   \
            const ptrdiff_t i = 8 * v;                                                     \
            const edl_vi8 ml = EDL_LR8(mlr, v, 0), mr = EDL_LR8(mlr, v, 1);                \
            for (int r_ = 0; r_ < 3; r_++) {                                               \
                const float *q_ = x + i + (r_ - 1) * w;                                    \
                t[r_][0] = (edl_vf8)((edl_vi8)EDL_LDV(edl_vf8, q_ - 1) & ml);              \
                t[r_][1] = EDL_LDV(edl_vf8, q_);                                           \
                t[r_][2] = (edl_vf8)((edl_vi8)EDL_LDV(edl_vf8, q_ + 1) & mr);              \
            }                                                                              \
            a = EDL_DW3F_TAPS(bv, t[0], t[1], t[2]);                                       \
            a = EDL_DW3F8_ACT(a, SIG);                                                     \
            memcpy(out + i, &a, sizeof a);                                                 \
        }                                                                                  \
        if (v >= nv) break;                                                                \
        const ptrdiff_t i = 8 * v;                                                         \
        const __m256i L = _mm256_add_epi32(_mm256_set1_epi32((int)i), iota);               \
        const __m256i ma = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), L);               \
        const __m256i mt = !top ? ma : _mm256_and_si256(                                   \
            ma, _mm256_cmpgt_epi32(L, _mm256_set1_epi32((int)w - 1)));                     \
        const __m256i mb = !bottom ? ma : _mm256_and_si256(                                \
            ma, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - w)), L));                   \
        const __m256i mk[3] = {mt, ma, mb};                                                \
        const __m256i ml = (__m256i)EDL_LR8(mlr, v, 0), mr = (__m256i)EDL_LR8(mlr, v, 1);  \
        for (int r_ = 0; r_ < 3; r_++) {                                                   \
            const float *q_ = x + i + (r_ - 1) * w;                                        \
            t[r_][0] = (edl_vf8)_mm256_maskload_ps(q_ - 1, _mm256_and_si256(mk[r_], ml));  \
            t[r_][1] = (edl_vf8)_mm256_maskload_ps(q_, mk[r_]);                            \
            t[r_][2] = (edl_vf8)_mm256_maskload_ps(q_ + 1, _mm256_and_si256(mk[r_], mr));  \
        }                                                                                  \
        a = EDL_DW3F_TAPS(bv, t[0], t[1], t[2]);                                           \
        a = EDL_DW3F8_ACT(a, SIG);                                                         \
        if (n - i >= 8) memcpy(out + i, &a, sizeof a);                                     \
        else for (ptrdiff_t j = 0; j < n - i; j++) out[i + j] = a[j];                      \
    }                                                                                      \
}
#define EDL_DW3F8_ACT(a, SIG)                                                               \
    ((SIG) ? EDL_VSIG(edl_vf8, edl_vi8, edl_v8u, a, silu, 32)                              \
           : EDL_VMIN_32(edl_vf8, edl_vi8, hiv, EDL_VMAX_32(edl_vf8, edl_vi8, lov, a)))
EDL_DW3F8(edl_dw3s1_flat_clip_avx2_f, 0)
EDL_DW3F8(edl_dw3s1_flat_sig_avx2_f, 1)
/* The stride-2 run (EDL_DW3S2F) on AVX2, 8 outputs a vector from the input rows in place
   (edl_dw3s2_sum8_avx2); the vectors at a row's end mask their loads (vmaskmovps: masked
   lanes read zeros, the padding, and do not fault). It replaced a copy of each plane split
   by column parity and rows over it: that copy was 40% of 24 x 88 x 88 s2. */
/* The sum of the 8 outputs from k, before the activation, in vshufps' lane order (rows[r]
   NULL: a row outside the plane, zeros; w > 0: the vector leaves the row of w, masked loads;
   0: it reads inside). Per row two loads (columns 2k .. 2k + 15), the centre and right taps
   their even and odd lanes (vshufps), the left taps the odd lanes moved up one output
   (vpermps; lane 0 the previous vector's last odd column, carried in cr[r]: zero at k = 0,
   the left padding). Row by row into EDL_DW3F_TAPS' two chains in its order (the same values
   as the AVX-512 run). Loads at 2k - 1 for the left taps split cache lines and were the
   pace (with the nine taps and weights spilled: 2.4 cycles an output). */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 edl_dw3s2_sum8_avx2(
        const float *const *rows, ptrdiff_t k, ptrdiff_t w, const __m256 *wv, __m256 b,
        __m256 *cr) {
    __m256i m0 = _mm256_setzero_si256(), m1 = m0;
    __m256 c1 = b, c2 = _mm256_setzero_ps();
    const __m256i up = _mm256_setr_epi32(7, 0, 5, 2, 1, 4, 3, 6);
    if (w) {
        const __m256i col = _mm256_add_epi32(_mm256_set1_epi32((int)(2 * k)),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w), col);
        m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w - 8), col);
    }
    for (int r = 0; r < 3; r++) {
        __m256 e = _mm256_setzero_ps(), o = e, l = e;
        if (rows[r]) {
            const float *p = rows[r] + 2 * k;
            const __m256 a0 = w ? _mm256_maskload_ps(p, m0) : _mm256_loadu_ps(p);
            const __m256 a1 = w ? _mm256_maskload_ps(p + 8, m1) : _mm256_loadu_ps(p + 8);
            e = _mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(2, 0, 2, 0));
            o = _mm256_shuffle_ps(a0, a1, _MM_SHUFFLE(3, 1, 3, 1));
            const __m256 rot = _mm256_permutevar8x32_ps(o, up);
            l = _mm256_blend_ps(rot, cr[r], 1);
            cr[r] = rot;
        }
        if (r == 0) {
            c1 = _mm256_fmadd_ps(wv[0], l, c1); c1 = _mm256_fmadd_ps(wv[1], e, c1);
            c1 = _mm256_fmadd_ps(wv[2], o, c1);
        } else if (r == 1) {
            c1 = _mm256_fmadd_ps(wv[3], l, c1); c1 = _mm256_fmadd_ps(wv[4], e, c1);
            c2 = _mm256_mul_ps(wv[5], o);
        } else {
            c2 = _mm256_fmadd_ps(wv[6], l, c2); c2 = _mm256_fmadd_ps(wv[7], e, c2);
            c2 = _mm256_fmadd_ps(wv[8], o, c2);
        }
    }
    return _mm256_add_ps(c1, c2);
}
/* a's lanes in output order (undoes vshufps' 0 1 4 5 2 3 6 7) */
#define EDL_S2_ORDER(a)                                                                     \
    _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd((__m256)(a)),                  \
                                           _MM_SHUFFLE(3, 1, 2, 0)))
#define EDL_DW3S2F8(NAME, SIG)                                                              \
__attribute__((target("avx2,fma"))) EDL_CONTRACT                                           \
static void NAME(const float *x, ptrdiff_t h, ptrdiff_t w, ptrdiff_t sh, ptrdiff_t ph,     \
                 const float *wt, float b, float lo, float hi, int sig, float *out,       \
                 ptrdiff_t oy0, ptrdiff_t oy1, ptrdiff_t ow) {                             \
    __m256 wv[9];                                                                          \
    for (int j = 0; j < 9; j++) wv[j] = _mm256_set1_ps(wt[j]);                            \
    const __m256 bv = _mm256_set1_ps(b);                                                   \
    const edl_vf8 z = {0}, lov = z + lo, hiv = z + hi;                                     \
    const int silu = sig == EDL_ACT_SILU;                                                  \
    (void)lov; (void)hiv; (void)silu;                                                      \
    for (ptrdiff_t oy = oy0; oy < oy1; oy++) {                                             \
        const float *rows[3];                                                              \
        float *o = out + oy * ow;                                                          \
        for (int r = 0; r < 3; r++) {                                                      \
            const ptrdiff_t iy = oy * sh - ph + r;                                         \
            rows[r] = iy >= 0 && iy < h ? x + iy * w : NULL;                               \
        }                                                                                  \
        __m256 cr[3] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};   \
        for (ptrdiff_t k = 0; k < ow; k += 8) {                                            \
            const int inside = 2 * k + 16 <= w;                 /* columns 2k .. 2k + 15 */ \
            /* two calls: each inlined with w constant (no masks) or not */                \
            edl_vf8 a = (edl_vf8)(inside ? edl_dw3s2_sum8_avx2(rows, k, 0, wv, bv, cr)     \
                                         : edl_dw3s2_sum8_avx2(rows, k, w, wv, bv, cr));   \
            const __m256 s = EDL_S2_ORDER(EDL_DW3F8_ACT(a, SIG));                          \
            if (ow - k >= 8) {                                                             \
                _mm256_storeu_ps(o + k, s);                                                \
            } else {                                                                       \
                const __m256i n_ = _mm256_set1_epi32((int)(ow - k));                       \
                _mm256_maskstore_ps(o + k, _mm256_cmpgt_epi32(n_, _mm256_setr_epi32(       \
                    0, 1, 2, 3, 4, 5, 6, 7)), s);                                          \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
}
EDL_DW3S2F8(edl_dw3s2_flat_clip_avx2_f, 0)
EDL_DW3S2F8(edl_dw3s2_flat_sig_avx2_f, 1)
/* the stride-2 flat run of this CPU: AVX-512 or AVX2 (edl_dw3_flat_ok) */
static void edl_dw3s2_flat_f(const float *x, ptrdiff_t h, ptrdiff_t w, ptrdiff_t sh,
                             ptrdiff_t ph, const float *wt, float b, float lo, float hi,
                             int sig, float *out, ptrdiff_t oy0, ptrdiff_t oy1, ptrdiff_t ow) {
    if (edl_x86_level() == 2)
        edl_dw3s2_flat_avx512_f(x, h, w, sh, ph, wt, b, lo, hi, sig, out, oy0, oy1, ow);
    else
        (sig ? edl_dw3s2_flat_sig_avx2_f : edl_dw3s2_flat_clip_avx2_f)(
            x, h, w, sh, ph, wt, b, lo, hi, sig, out, oy0, oy1, ow);
}
/* the flat run of this CPU: AVX-512 or AVX2 (edl_dw3_flat_ok) */
static void edl_dw3s1_flat_f(const float *x, ptrdiff_t h, ptrdiff_t w, int top, int bottom,
                             const float *wt, float b, float lo, float hi, int sig,
                             const uint16_t *mlr, float *out) {
    if (edl_x86_level() == 2)
        edl_dw3s1_flat_avx512_f(x, h, w, top, bottom, wt, b, lo, hi, sig, mlr, out);
    else
        (sig ? edl_dw3s1_flat_sig_avx2_f : edl_dw3s1_flat_clip_avx2_f)(
            x, h, w, top, bottom, wt, b, lo, hi, sig, mlr, out);
}
/* 2: the AVX-512 flat run, 1: the AVX2 one, 0: neither (the rows kernels) */
static inline int edl_dw3_flat_ok(void) { return edl_x86_level(); }
#else
static inline void edl_dw3s1_flat_f(const float *x, ptrdiff_t h, ptrdiff_t w, int top,
                                    int bottom, const float *wt, float b, float lo, float hi,
                                    int sig, const uint16_t *mlr, float *out) {
    (void)x; (void)h; (void)w; (void)top; (void)bottom; (void)wt; (void)b; (void)lo; (void)hi;
    (void)sig; (void)mlr; (void)out;
}
static inline int edl_dw3_flat_ok(void) { return 0; }
static inline void edl_dw3s2_flat_f(const float *x, ptrdiff_t h, ptrdiff_t w, ptrdiff_t sh,
                                    ptrdiff_t ph, const float *wt, float b, float lo,
                                    float hi, int sig, float *out, ptrdiff_t oy0,
                                    ptrdiff_t oy1, ptrdiff_t ow) {
    (void)x; (void)h; (void)w; (void)sh; (void)ph; (void)wt; (void)b; (void)lo; (void)hi;
    (void)sig; (void)out; (void)oy0; (void)oy1; (void)ow;
}
#endif
/* mlr for the flat runs (edl_dw3s1_flat_f): per 16-lane vector of the flat (h, w) plane, the lanes
   not in column 0, then those not in column w - 1 (2 * ceil(h * w / 16) masks). Made on
   every call: from the column of each vector's lane 0, only the lanes a row boundary falls on
   are cleared (a few steps a vector, not 16). */
static void edl_dw3s1_lr_masks(ptrdiff_t h, ptrdiff_t w, uint16_t *mlr) {
    ptrdiff_t nv = (h * w + 15) / 16, col = 0;          /* col: lane 0's column */
    for (ptrdiff_t v = 0; v < nv; v++) {
        unsigned l = 0xFFFF, r = 0xFFFF;
        for (ptrdiff_t j = (w - col) % w; j < 16; j += w) l &= ~(1u << j);
        for (ptrdiff_t j = w - 1 - col; j < 16; j += w) r &= ~(1u << j);
        mlr[2 * v] = (uint16_t)l;
        mlr[2 * v + 1] = (uint16_t)r;
        col += 16 % w;
        if (col >= w) col -= w;
    }
}
/* 3x3 stride-2 depthwise with left padding 1 (the common "same" downsampling), one whole
   output row of n from the input rows x0..x2 (wd values; a zero row where the window leaves
   the plane), bias and clip as above. Output k reads columns 2k-1 .. 2k+1: a plain loop GCC
   vectorises with de-interleaving loads (vpermt2ps on AVX-512, ld2-style on NEON), no copy of
   the plane split by column parity (that split took twice the time of the windows). */
EDL_SIMD_KERNEL static void edl_dw3s2_row_f(const float *x0, const float *x1, const float *x2,
                                           const float *w, float *restrict row, ptrdiff_t n,
                                           ptrdiff_t wd, float b, float lo, float hi) {
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];
    const float w6 = w[6], w7 = w[7], w8 = w[8];
    ptrdiff_t kend = (wd - 2) / 2 + 1;             /* outputs whose 2k + 1 < wd */
    if (kend > n) kend = n;
    for (ptrdiff_t k = 1; k < kend; k++) {
        const float *a = x0 + 2 * k - 1, *m = x1 + 2 * k - 1, *c = x2 + 2 * k - 1;
        float t = (b + w0 * a[0] + w1 * a[1] + w2 * a[2] + w3 * m[0] + w4 * m[1])
                + (w5 * m[2] + w6 * c[0] + w7 * c[1] + w8 * c[2]);
        t = lo > t ? lo : t;
        row[k] = hi < t ? hi : t;
    }
    for (ptrdiff_t k = 0; k < n; k += (k == 0 && kend > 1) ? kend : 1) {   /* the edges */
        float t = b;
        for (int j = 0; j < 3; j++) {
            ptrdiff_t col = 2 * k - 1 + j;
            if (col >= 0 && col < wd)
                t += w[j] * x0[col] + w[3 + j] * x1[col] + w[6 + j] * x2[col];
        }
        t = lo > t ? lo : t;
        row[k] = hi < t ? hi : t;
    }
}
/* The same windows from a plane split by column parity (e: even columns, o: odd ones, rows
   of n = wd / 2 values): output k reads o[k - 1], e[k], o[k] of each row, contiguous vector
   loads as in edl_dw3_same_rows2_f, per ISA (n >= 17; k = 0 reads the padding).
   Rows past 40 outputs: a fixed trip count of 16 strided lanes vectorised poorly (a mix of
   ymm, xmm and scalar code at 4-8 cycles an output). */
#define EDL_DW3S2_SPLIT_ISA(NAME, ATTR, VT_, IVT_, VB_)                                   \
ATTR static void NAME(const float *e0, const float *o0, const float *e1, const float *o1,  \
                      const float *e2, const float *o2, const float *w,                    \
                      float *restrict row, ptrdiff_t n, float b, float lo, float hi) {     \
    EDL_DW3_PROLOGUE(VT_, IVT_, VB_)                                                      \
    for (ptrdiff_t k = 1;; k += W) {                                                     \
        if (k > n - W) k = n - W;                                                        \
        VT t = EDL_CLAMPV(VT, IVT, VB_,                                                  \
            (b + w0 * EDL_LDV(VT, o0 + k - 1) + w1 * EDL_LDV(VT, e0 + k)                 \
             + w2 * EDL_LDV(VT, o0 + k) + w3 * EDL_LDV(VT, o1 + k - 1)                    \
             + w4 * EDL_LDV(VT, e1 + k))                                                 \
            + (w5 * EDL_LDV(VT, o1 + k) + w6 * EDL_LDV(VT, o2 + k - 1)                    \
               + w7 * EDL_LDV(VT, e2 + k) + w8 * EDL_LDV(VT, o2 + k)));                   \
        memcpy(row + k, &t, sizeof t);                                                   \
        if (k == n - W) break;                                                           \
    }                                                                                    \
    row[0] = edl_clamp1((b + w1 * e0[0] + w2 * o0[0] + w4 * e1[0])                       \
                        + (w5 * o1[0] + w7 * e2[0] + w8 * o2[0]), lo, hi);               \
}
#ifdef EDL_X86_MV
EDL_DW3S2_SPLIT_ISA(edl_dw3s2_split_row_avx512, EDL_AVX512, edl_vf16, edl_vi16, 64)
EDL_DW3S2_SPLIT_ISA(edl_dw3s2_split_row_avx2, EDL_AVX2, edl_vf8, edl_vi8, 32)
EDL_DW3S2_SPLIT_ISA(edl_dw3s2_split_row_sse, EDL_CONTRACT, edl_vf4, edl_vi4, 16)
#else
EDL_DW3S2_SPLIT_ISA(edl_dw3s2_split_row_base, EDL_CONTRACT, edl_vf4, edl_vi4, 16)
#endif
static inline void edl_dw3s2_split_row_f(const float *e0, const float *o0, const float *e1,
                                         const float *o1, const float *e2, const float *o2,
                                         const float *w, float *restrict row, ptrdiff_t n,
                                         float b, float lo, float hi) {
    EDL_ISA_CALL(edl_dw3s2_split_row, (e0, o0, e1, o1, e2, o2, w, row, n, b, lo, hi))
}
/* The narrowest rows the split rows take (n >= W + 1 for their vectors) where the caller
   prefers them to edl_dw3s2_row_f's stride-2 loads (not measured narrower; AVX2 and AVX-512
   take the flat runs, edl_dw3s2_flat_f, instead) */
static inline int edl_dw3s2_split_min(void) { return 17; }
/* e[i] = x[2 i], o[i] = x[2 i + 1], i < n: a whole plane of even width at once */
EDL_SIMD_KERNEL static void edl_deinterleave_clones(const float *restrict x, ptrdiff_t n,
                                                    float *restrict e, float *restrict o) {
    for (ptrdiff_t i = 0; i < n; i++) {
        e[i] = x[2 * i];
        o[i] = x[2 * i + 1];
    }
}
#ifdef EDL_X86_MV
/* AVX2: 16 inputs a step, vshufps + vpermpd (GCC's AVX2 clone of the loop above took longer
   than the stride-2 depthwise rows it feeds: 38% of 24 x 88 x 88 3x3 s2) */
__attribute__((target("avx2"))) static void edl_deinterleave_avx2(
        const float *restrict x, ptrdiff_t n, float *restrict e, float *restrict o) {
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 a = _mm256_loadu_ps(x + 2 * i), b = _mm256_loadu_ps(x + 2 * i + 8);
        _mm256_storeu_ps(e + i, edl_even8(a, b));
        _mm256_storeu_ps(o + i, edl_odd8(a, b));
    }
    for (; i < n; i++) {
        e[i] = x[2 * i];
        o[i] = x[2 * i + 1];
    }
}
#endif
static inline void edl_deinterleave_f(const float *restrict x, ptrdiff_t n,
                                      float *restrict e, float *restrict o) {
#ifdef EDL_X86_MV
    if (edl_x86_level() == 1) {
        edl_deinterleave_avx2(x, n, e, o);
        return;
    }
#endif
    edl_deinterleave_clones(x, n, e, o);
}
/* Direct dense conv for few taps (stem convs on RGB: K = C * kh * kw taps), one output
   row of 8 channels: out[m * ostride + k] = act(bias[m] + sum_t wq[8 t + m] * src[t][k]) for
   k < n (n >= W), m < mv (wq zero beyond); act a clip to [lo, hi] (NaN kept; SIG 0) or, in
   the SIG twins, sigmoid (silu 0) or SiLU (silu 1). src[t]: tap t's source row, contiguous
   (the caller splits each padded input row by column phase, so stride 2 reads no gather).
   Eight W-float accumulators (8 independent FMA chains; ymm on x86, 2 q registers each on
   NEON), the last pixel block moved back instead of a scalar tail. With K this small the GEMM
   path's im2col and its C tiles' loads and stores cost as much as the FMAs. The sigmoid runs
   on all 8 registers at once (one channel's at a time, its exps and divides waited on each
   other; as a pass per row after the store, SiLU cost YOLOX's stem ~8% more); the clip
   keeps its own twin: the sigmoid's code in the same function cost FastestDet's ReLU stem
   ~6% (the bias vectors no longer fitted in registers). */
/* NB (1 or 2) blocks of W pixels at k, k + W x 8 channels: the taps' loop, the activation
   and the store (EDL_DIRECT's names in scope) */
#define EDL_DIRECT_BLOCKS(VT, VI, VU, W, SIG, NB)                                            \
    {                                                                                      \
        VT acc[NB][8];                                                                     \
        EDL_UNROLL for (int u = 0; u < (NB); u++)                                          \
            EDL_UNROLL for (int m = 0; m < 8; m++) acc[u][m] = b[m] + z;                   \
        for (ptrdiff_t t = 0; t < T; t++) {                                                \
            const float *w = wq + 8 * t, *s_ = src[t] + k;                                 \
            EDL_UNROLL for (int u = 0; u < (NB); u++) {                                    \
                VT v;                                                                      \
                memcpy(&v, s_ + u * (W), sizeof v);                                        \
                EDL_UNROLL for (int m = 0; m < 8; m++) acc[u][m] += w[m] * v;              \
            }                                                                              \
        }                                                                                  \
        EDL_UNROLL for (int u = 0; u < (NB); u++) {                                        \
            if (SIG)                                                                       \
                EDL_UNROLL for (int m = 0; m < 8; m++)                                     \
                    acc[u][m] = EDL_VSIG(VT, VI, VU, acc[u][m], silu, M);                  \
            EDL_UNROLL for (int m = 0; m < 8; m++) {   /* unrolled: acc stays in registers */ \
                VT r = acc[u][m];                                                          \
                if (m >= mv) break;                                                        \
                if (!SIG) r = EDL_VMIN_M(VT, VI, hiv, EDL_VMAX_M(VT, VI, lov, r));         \
                memcpy(out + m * ostride + k + u * (W), &r, sizeof r);                     \
            }                                                                              \
        }                                                                                  \
    }
/* NAME: blocks of W pixels (vector type VT, its int twins VI / VU) x 8 channels, the last
   moved back to end at n; PAIRS: two blocks a pass over the taps while the row has 2 W
   pixels left (the same sums in the same order) */
#define EDL_DIRECT(NAME, VT, VI, VU, W, SIG, PAIRS)                                          \
EDL_SIMD_KERNEL static void NAME(const float *const *src, ptrdiff_t T, const float *wq,    \
                                 const float *bias, int mv, float *out, ptrdiff_t ostride, \
                                 ptrdiff_t n, float lo, float hi, int silu) {              \
    const VT z = {0}, lov = lo + z, hiv = hi + z;                                          \
    float b[8];                                                                            \
    (void)silu;                                                                            \
    for (int m = 0; m < 8; m++) b[m] = m < mv ? bias[m] : 0;                               \
    ptrdiff_t k = 0;                                                                       \
    if (PAIRS)                                                                             \
        for (; k + 2 * (W) <= n; k += 2 * (W)) EDL_DIRECT_BLOCKS(VT, VI, VU, W, SIG, 2)    \
    for (ptrdiff_t k0 = k; k0 < n; k0 += (W)) {                                            \
        k = k0 > n - (W) ? n - (W) : k0;                                                   \
        EDL_DIRECT_BLOCKS(VT, VI, VU, W, SIG, 1)                                           \
    }                                                                                      \
}
/* 8 pixels (ymm on x86, 2 q registers each on NEON: 16 of NEON's 32 for the accumulators)
   everywhere; 16 (one zmm each) where AVX-512 has 32 registers: half the weight broadcasts
   and source loads per multiply-add; from EDL_DIRECT_PAIR_TAPS taps two of them a pass. */
EDL_DIRECT(edl_direct8_f, edl_v8f, edl_v8i, edl_v8u, 8, 0, 0)
EDL_DIRECT(edl_direct16_f, edl_v16f, edl_v16i, edl_v16u, 16, 0, 0)
EDL_DIRECT(edl_direct8s_f, edl_v8f, edl_v8i, edl_v8u, 8, 1, 0)
EDL_DIRECT(edl_direct16s_f, edl_v16f, edl_v16i, edl_v16u, 16, 1, 0)
EDL_DIRECT(edl_direct32_f, edl_v16f, edl_v16i, edl_v16u, 16, 0, 1)
EDL_DIRECT(edl_direct32s_f, edl_v16f, edl_v16i, edl_v16u, 16, 1, 1)
#ifdef EDL_X86_MV
/* AVX2 (16 ymm registers): 4 of a group's 8 channels x NB blocks of 8 pixels at k, the
   channels from c0 (EDL_DIRECT_QUAD's names in scope). NB = 3: 12 accumulators, and per tap
   3 source loads and 4 weight broadcasts for 12 FMAs, where edl_direct8_f's 8 channels x 1
   block takes 1 + 8 loads for 8 FMAs (vbroadcastss is a load; Zen 3 issues two 256-bit
   loads and two FMAs a cycle: the loads bound it, ~5.6 cycles a tap whose FMAs need 4;
   YuNet's 3 -> 16 stem 455 -> 380 us). The same sums in the same order as edl_direct8_f. */
#define EDL_DIRECT_QUAD_BLOCKS(SIG, NB)                                                       \
    {                                                                                      \
        edl_v8f acc[NB][4];                                                                \
        EDL_UNROLL for (int u = 0; u < (NB); u++)                                          \
            EDL_UNROLL for (int m = 0; m < 4; m++) acc[u][m] = b[m] + z;                   \
        for (ptrdiff_t t = 0; t < T; t++) {                                                \
            const float *w = wq + 8 * t + c0, *s_ = src[t] + k;                            \
            edl_v8f v[NB];      /* the blocks, then a broadcast at a time: 12 + 3 + 1 */   \
            EDL_UNROLL for (int u = 0; u < (NB); u++) v[u] = EDL_LDV(edl_v8f, s_ + 8 * u); \
            EDL_UNROLL for (int m = 0; m < 4; m++) {                                       \
                const float wm = w[m];                                                     \
                EDL_UNROLL for (int u = 0; u < (NB); u++) acc[u][m] += wm * v[u];          \
            }                                                                              \
        }                                                                                  \
        EDL_UNROLL for (int u = 0; u < (NB); u++)                                          \
            EDL_UNROLL for (int m = 0; m < 4; m++) {                                       \
                edl_v8f r = acc[u][m];                                                     \
                if (c0 + m >= mv) break;                                                   \
                if (SIG) r = EDL_VSIG(edl_v8f, edl_v8i, edl_v8u, r, silu, 32);             \
                else r = EDL_VMIN_32(edl_v8f, edl_v8i, hiv,                                \
                                     EDL_VMAX_32(edl_v8f, edl_v8i, lov, r));              \
                memcpy(out + (c0 + m) * ostride + k + 8 * u, &r, sizeof r);                \
            }                                                                              \
    }
/* edl_direct8_f's row on AVX2: per half group, blocks of 24 pixels, then 16, then of 8
   (the last moved back to end at n) */
#define EDL_DIRECT_QUAD(NAME, SIG)                                                          \
EDL_AVX2 static void NAME(const float *const *src, ptrdiff_t T, const float *wq,           \
                          const float *bias, int mv, float *out, ptrdiff_t ostride,        \
                          ptrdiff_t n, float lo, float hi, int silu) {                     \
    const edl_v8f z = {0}, lov = lo + z, hiv = hi + z;                                     \
    (void)silu; (void)lov; (void)hiv;                                                      \
    for (int c0 = 0; c0 < mv; c0 += 4) {                                                   \
        float b[4];                                                                        \
        for (int m = 0; m < 4; m++) b[m] = c0 + m < mv ? bias[c0 + m] : 0;                 \
        ptrdiff_t k = 0;                                                                   \
        for (; k + 24 <= n; k += 24) EDL_DIRECT_QUAD_BLOCKS(SIG, 3)                        \
        if (k + 16 <= n) {     /* 8 FMA chains, not two passes of 4 (latency-bound) */     \
            EDL_DIRECT_QUAD_BLOCKS(SIG, 2)                                                 \
            k += 16;                                                                       \
        }                                                                                  \
        for (ptrdiff_t k0 = k; k0 < n; k0 += 8) {                                          \
            k = k0 > n - 8 ? n - 8 : k0;                                                   \
            EDL_DIRECT_QUAD_BLOCKS(SIG, 1)                                                 \
        }                                                                                  \
    }                                                                                      \
}
EDL_DIRECT_QUAD(edl_direct_quad_avx2, 0)
EDL_DIRECT_QUAD(edl_direct_quads_avx2, 1)
#endif
/* 1 where edl_direct16_f should run (x86-64 with AVX-512F); tests force either (both are
   correct everywhere) with edl_direct_set_wide */
static int edl_direct_wide_flag = -1;
static inline int edl_direct_wide(void) {
    if (edl_direct_wide_flag < 0) {
#ifdef EDL_X86_MV
        edl_direct_wide_flag = edl_x86_level() == 2;
#else
        edl_direct_wide_flag = 0;
#endif
    }
    return edl_direct_wide_flag;
}
static inline void edl_direct_set_wide(int wide) { edl_direct_wide_flag = wide; }
/* 1 where the direct path runs kernels that keep up with the GEMM on many taps (<= 320) on
   long rows: the 16-pixel ones, or AVX2's 4 x 3 blocks (edl_direct_quad_avx2: 3x3 12 -> 16
   at 208 x 208, YOLOX's stem, 0.79x the GEMM path's time; 32 -> 32 at 160 0.74x; 16 -> 32
   at 80 0.93x; but 24 -> 48 at 44 1.13x: rows of 64+ only, as for the wide kernels) */
static inline int edl_direct_deep(void) {
#ifdef EDL_X86_MV
    if (edl_x86_level() == 1) return 1;
#endif
    return edl_direct_wide();
}
/* Taps from which the 16-pixel kernels take two blocks a pass (PAIRS): 16 FMA chains,
   each tap's 8 weight broadcasts shared by 32 pixels. One AVX-512 core: 7x7 s2 3 -> 64 at
   224 (147 taps) 1.73 -> 1.60 ms, 3x3 12 -> 16 at 208 (YOLOX's stem) and 16 -> 32 at 80
   ~10% faster; 3x3 on RGB (27 taps) ~5% slower, so those keep one block. */
#define EDL_DIRECT_PAIR_TAPS 64
/* One output row of 8 channels of the direct conv: the kernel of this CPU's width (16 pixels
   where edl_direct_wide says so and the row has them) and this epilogue (sig:
   EDL_ACT_SIGMOID or EDL_ACT_SILU, else the clip to [lo, hi]); arguments as EDL_DIRECT's. */
static inline void edl_direct_row(const float *const *src, ptrdiff_t T, const float *wq,
                                  const float *bias, int mv, float *out, ptrdiff_t ostride,
                                  ptrdiff_t n, float lo, float hi, int sig) {
    int wide = edl_direct_wide() && n >= 16, silu = sig == EDL_ACT_SILU;
    if (wide && T >= EDL_DIRECT_PAIR_TAPS) {
        if (sig) edl_direct32s_f(src, T, wq, bias, mv, out, ostride, n, lo, hi, silu);
        else edl_direct32_f(src, T, wq, bias, mv, out, ostride, n, lo, hi, silu);
        return;
    }
#ifdef EDL_X86_MV
    if (!wide && edl_x86_level() == 1) {
        if (sig) edl_direct_quads_avx2(src, T, wq, bias, mv, out, ostride, n, lo, hi, silu);
        else edl_direct_quad_avx2(src, T, wq, bias, mv, out, ostride, n, lo, hi, silu);
        return;
    }
#endif
    if (sig && wide) edl_direct16s_f(src, T, wq, bias, mv, out, ostride, n, lo, hi, silu);
    else if (sig) edl_direct8s_f(src, T, wq, bias, mv, out, ostride, n, lo, hi, silu);
    else if (wide) edl_direct16_f(src, T, wq, bias, mv, out, ostride, n, lo, hi, silu);
    else edl_direct8_f(src, T, wq, bias, mv, out, ostride, n, lo, hi, silu);
}
/* 1 where the direct path has vector registers for its accumulators: x86-64 (SSE2 at least)
   and aarch64 (NEON). Debian's armhf compiles for VFPv3 without NEON: the GEMM path there. */
static inline int edl_direct_ok(void) {
#if defined(__x86_64__) || defined(__aarch64__)
    return 1;
#else
    return 0;
#endif
}
/* Stride 2: a padded row is stored split by column parity, e = even columns, then
   o = odd ones (wq each); tap j of output k is then e[k + j/2] or o[k + j/2]: contiguous
   loads instead of gathers. p: row r0's e; rs: row stride (2 wq). */
#define EDL_S2WIN3(T) {                                                                  \
        T a = w[0] * p[k] + w[1] * p[wq + k] + w[2] * p[k + 1];  /* not 0 + ...: one add */ \
        for (int i = 1; i < 3; i++) {                                                   \
            const T *e = p + i * rs, *o = e + wq;                                       \
            a += w[3 * i] * e[k] + w[3 * i + 1] * o[k] + w[3 * i + 2] * e[k + 1];       \
        }                                                                               \
        row[k] = a;                                                                     \
    }
#define EDL_S2WIN5(T) {                                                                  \
        T a = w[0] * p[k] + w[1] * p[wq + k] + w[2] * p[k + 1] + w[3] * p[wq + k + 1]   \
            + w[4] * p[k + 2];                                                          \
        for (int i = 1; i < 5; i++) {                                                   \
            const T *e = p + i * rs, *o = e + wq;                                       \
            a += w[5 * i] * e[k] + w[5 * i + 1] * o[k] + w[5 * i + 2] * e[k + 1]        \
               + w[5 * i + 3] * o[k + 1] + w[5 * i + 4] * e[k + 2];                     \
        }                                                                               \
        row[k] = a;                                                                     \
    }
#define EDL_CONV_ROWS_S2(T, S)                                                            \
EDL_SIMD_KERNEL static void edl_full3s2_##S(const T *p, ptrdiff_t rs, ptrdiff_t wq,     \
                                            const T *w, T *restrict row, ptrdiff_t n) { \
    ptrdiff_t nv = n & ~(ptrdiff_t)7;                                                   \
    for (ptrdiff_t k = 0; k < nv; k++) EDL_S2WIN3(T);                                   \
    EDL_TAIL8(n, EDL_S2WIN3(T))                                                         \
}                                                                                       \
EDL_SIMD_KERNEL static void edl_full5s2_##S(const T *p, ptrdiff_t rs, ptrdiff_t wq,     \
                                            const T *w, T *restrict row, ptrdiff_t n) { \
    ptrdiff_t nv = n & ~(ptrdiff_t)7;                                                   \
    for (ptrdiff_t k = 0; k < nv; k++) EDL_S2WIN5(T);                                   \
    EDL_TAIL8(n, EDL_S2WIN5(T))                                                         \
}                                                                                       \
/* one input row (n values) into a split padded row: column c = pw + k */                \
EDL_SIMD_KERNEL static void edl_split2_##S(const T *src, ptrdiff_t n, T *restrict e,    \
                                           ptrdiff_t wq, ptrdiff_t pw) {                \
    for (int p = 0; p < 2; p++) {                /* inputs k landing in parity p */     \
        ptrdiff_t k0 = (p - pw) & 1, d0 = (pw + k0) >> 1;                               \
        T *restrict dst = e + p * wq + d0;                                              \
        const T *s = src + k0;                                                          \
        ptrdiff_t cnt = n > k0 ? (n - k0 + 1) / 2 : 0;                                  \
        for (ptrdiff_t t = 0; t < cnt; t++) dst[t] = s[2 * t];                          \
    }                                                                                   \
}
/* im2col row: dst[k] = src[k * sw] for k < n; stride 1 is a memcpy, stride 2 gets
   AVX2 / AVX-512 clones (de-interleaving shuffles instead of scalar loads) */
#define EDL_GATHER(T, S)                                                                 \
EDL_SIMD_KERNEL static void edl_gather2_##S(const T *restrict src, T *restrict dst,     \
                                            ptrdiff_t n) {                              \
    for (ptrdiff_t k = 0; k < n; k++) dst[k] = src[2 * k];                              \
}                                                                                       \
static void edl_gather_##S(const T *restrict src, ptrdiff_t sw, T *restrict dst,        \
                           ptrdiff_t n) {                                               \
    if (n <= 0) return;                                                                 \
    if (sw == 1) memcpy(dst, src, (size_t)n * sizeof(T));                               \
    else if (sw == 2) edl_gather2_##S(src, dst, n);                                     \
    else for (ptrdiff_t k = 0; k < n; k++) dst[k] = src[k * sw];                        \
}
/* im2col row of a stride-1 conv whose output rows are as wide as the input's ("same"
   width, any dilation): the tap's source is then the plane shifted by
   ro rows and off columns, one contiguous run for the whole block of `rows` output rows:
   one copy, then zeros where the tap falls in the padding (rows outside the plane, and
   the columns wrapped in from the neighbouring rows). Per row, the general gather cost
   more in calls than in copying on rows of 14-80. */
#define EDL_IM2COL_S1(T, S)                                                              \
static void edl_im2col_s1_##S(const T *plane, ptrdiff_t h, ptrdiff_t w, ptrdiff_t ro,   \
                              ptrdiff_t off, ptrdiff_t rows, T *restrict dst) {        \
    ptrdiff_t n = rows * w, base = ro * w + off;  /* dst[d] = plane[base + d] */         \
    ptrdiff_t a = ro < 0 ? -ro : 0, z = h - ro < rows ? h - ro : rows;  /* valid rows */ \
    if (a > rows) a = rows;                                                             \
    if (z < a) z = a;                                                                   \
    ptrdiff_t d0 = a * w, d1 = z * w;                                                   \
    if (d0 < -base) d0 = -base;                   /* inside the plane */                 \
    if (d1 > h * w - base) d1 = h * w - base;                                           \
    if (d1 <= d0) d0 = d1 = 0;                    /* nothing: all zeros */               \
    memset(dst, 0, (size_t)d0 * sizeof(T));                                             \
    memcpy(dst + d0, plane + base + d0, (size_t)(d1 - d0) * sizeof(T));                 \
    memset(dst + d1, 0, (size_t)(n - d1) * sizeof(T));                                  \
    ptrdiff_t lo = off < 0 ? -off : 0, hi = off > 0 ? w - off : w;  /* valid columns */ \
    if (lo > w) lo = w;                                                                 \
    if (hi < lo) hi = lo;                                                               \
    if (lo == 0 && hi == w) return;                                                     \
    for (ptrdiff_t r = a; r < z; r++) {                                                 \
        T *d = dst + r * w;                                                             \
        for (ptrdiff_t k = 0; k < lo; k++) d[k] = 0;                                    \
        for (ptrdiff_t k = hi; k < w; k++) d[k] = 0;                                    \
    }                                                                                   \
}
EDL_IM2COL_ROWS(float, f)
EDL_IM2COL_ROWS(double, d)
EDL_IM2COL_PADDED(float, f)
EDL_IM2COL_S1(float, f)
EDL_IM2COL_S1(double, d)
EDL_GATHER(float, f)
EDL_GATHER(double, d)
EDL_CONV_ROWS(float, f)
EDL_CONV_ROWS(double, d)
EDL_CONV_ROWS_S2(float, f)
EDL_CONV_ROWS_S2(double, d)
/* 5x5 stride-1 depthwise: row[k] = the window at column k of the rows x + i * wp (i < 5),
   k < n, n >= W (the vector's floats). U = 4 output vectors an iteration share each weight's
   broadcast: per tap 1 + 4 loads for 4 FMAs, where edl_full5_f's auto-vectorised loop took 2
   loads a FMA (its 25 weights do not fit AVX2's 16 registers: reloaded for every vector) and
   one chain of 25 FMAs a vector (FastestDet's 96 x 22 x 22 head convs: ~75 us a conv, ORT's
   ~60). The sums in edl_full5_f's order: a chain per kernel row (a product, then FMAs), the
   rows' chains added in turn, the last row's taps FMAs onto that sum. The last vector moves
   back to end at n. */
#define EDL_FULL5_BLOCK(U)                                                                  \
    {                                                                                      \
        VT a[U], r[U];                                                                     \
        EDL_UNROLL for (int i = 0; i < 4; i++) {                                           \
            const float *p = x + i * wp + k;                                               \
            EDL_UNROLL for (int u = 0; u < (U); u++)                                       \
                r[u] = w[5 * i] * EDL_LDV(VT, p + u * W);                                  \
            EDL_UNROLL for (int j = 1; j < 5; j++) {                                       \
                const float wj = w[5 * i + j];                                             \
                EDL_UNROLL for (int u = 0; u < (U); u++)                                   \
                    r[u] += wj * EDL_LDV(VT, p + j + u * W);                               \
            }                                                                              \
            EDL_UNROLL for (int u = 0; u < (U); u++) a[u] = i ? a[u] + r[u] : r[u];        \
        }                                                                                  \
        EDL_UNROLL for (int j = 0; j < 5; j++) {                                           \
            const float wj = w[20 + j];                                                    \
            EDL_UNROLL for (int u = 0; u < (U); u++)                                       \
                a[u] += wj * EDL_LDV(VT, x + 4 * wp + k + j + u * W);                      \
        }                                                                                  \
        EDL_UNROLL for (int u = 0; u < (U); u++) memcpy(row + k + u * W, &a[u], sizeof(VT)); \
    }
#define EDL_FULL5_ISA(NAME, ATTR, VT_, VB_)                                                \
ATTR static void NAME(const float *x, ptrdiff_t wp, const float *w, float *restrict row,   \
                      ptrdiff_t n) {                                                       \
    typedef VT_ VT;                                                                        \
    enum { W = VB_ / 4 };                                                                  \
    ptrdiff_t k = 0;                                                                       \
    for (; k + 4 * W <= n; k += 4 * W) EDL_FULL5_BLOCK(4)                                  \
    for (ptrdiff_t k0 = k; k0 < n; k0 += W) {                                              \
        k = k0 > n - W ? n - W : k0;                                                       \
        EDL_FULL5_BLOCK(1)                                                                 \
    }                                                                                      \
}
#ifdef EDL_X86_MV
EDL_FULL5_ISA(edl_full5v_avx512, EDL_AVX512, edl_vf16, 64)
EDL_FULL5_ISA(edl_full5v_avx2, EDL_AVX2, edl_vf8, 32)
EDL_FULL5_ISA(edl_full5v_sse, EDL_CONTRACT, edl_vf4, 16)
#else
EDL_FULL5_ISA(edl_full5v_base, EDL_CONTRACT, edl_vf4, 16)
#endif
/* 5x5 stride-1 depthwise over a zero-bordered plane (rows of wp from x, the window of
   output (y, k) at x + y * wp + k): output rows of ow (oh >= 4, ow >= W) straight into
   out, the bias and a clip (act NONE: lo = -inf, hi = inf; NaN passes) in the store. Bands
   of 4 output rows x one vector: per kernel column j its 5 weights in registers and each
   input vector of the band's 8 rows loaded once for the up to 4 outputs it feeds (0.65
   loads a FMA; the row kernels' 1.25 kept the FMA pipes ~2/3 busy); 8 chains (even and odd
   kernel columns apart). The last band and vector moved back to end at oh / ow (outputs
   recomputed alike).
   Sums by kernel column, not edl_full5_f's rows: rounding may differ from it in the last
   bits. */
#define EDL_DW5_BANDS_ISA(NAME, ATTR, VT_, IVT_, VB_)                                      \
ATTR static void NAME(const float *x, ptrdiff_t wp, const float *w, float *restrict out,   \
                      ptrdiff_t oh, ptrdiff_t ow, float b, float lo, float hi) {           \
    typedef VT_ VT;                                                                        \
    typedef IVT_ IVT __attribute__((unused));                                              \
    enum { W = VB_ / 4 };                                                                  \
    const VT lov = lo - (VT){0}, hiv = hi - (VT){0};                                       \
    for (ptrdiff_t y0 = 0; y0 < oh; y0 += 4) {                                             \
        const ptrdiff_t y = y0 + 4 > oh ? oh - 4 : y0;                                     \
        for (ptrdiff_t k0 = 0; k0 < ow; k0 += W) {                                         \
            const ptrdiff_t k = k0 + W > ow ? ow - W : k0;                                 \
            const float *wb = w;  /* opaque: the 25 broadcasts not hoisted out and spilled */ \
            __asm__("" : "+r"(wb));                                                        \
            VT a[2][4];                                                                    \
            EDL_UNROLL for (int u = 0; u < 4; u++) a[0][u] = a[1][u] = (VT){0};            \
            EDL_UNROLL for (int j = 0; j < 5; j++) {                                       \
                VT wc[5];                                                                  \
                EDL_UNROLL for (int i = 0; i < 5; i++) wc[i] = wb[5 * i + j] - (VT){0};    \
                EDL_UNROLL for (int r = 0; r < 8; r++) {                                   \
                    const VT v = EDL_LDV(VT, x + (y + r) * wp + k + j);                    \
                    EDL_UNROLL for (int u = 0; u < 4; u++)                                 \
                        if (r - u >= 0 && r - u < 5) a[j & 1][u] += wc[r - u] * v;         \
                }                                                                          \
            }                                                                              \
            EDL_UNROLL for (int u = 0; u < 4; u++) {                                       \
                const VT t = EDL_CLAMPV(VT, IVT, VB_, (a[0][u] + a[1][u]) + b);            \
                memcpy(out + (y + u) * ow + k, &t, sizeof t);                              \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
}
#ifdef EDL_X86_MV
EDL_DW5_BANDS_ISA(edl_dw5_bands_avx512, EDL_AVX512, edl_vf16, edl_vi16, 64)
EDL_DW5_BANDS_ISA(edl_dw5_bands_avx2, EDL_AVX2, edl_vf8, edl_vi8, 32)
EDL_DW5_BANDS_ISA(edl_dw5_bands_sse, EDL_CONTRACT, edl_vf4, edl_vi4, 16)
#else
EDL_DW5_BANDS_ISA(edl_dw5_bands_base, EDL_CONTRACT, edl_vf4, edl_vi4, 16)
#endif
/* the bands of this CPU's widest vector, or 0 where the plane is narrower than it (then the
   row kernels) */
static inline int edl_dw5_bands_f(const float *x, ptrdiff_t wp, const float *w,
                                  float *restrict out, ptrdiff_t oh, ptrdiff_t ow, float b,
                                  float lo, float hi) {
    if (oh < 4 || ow < 16) return 0;
    EDL_ISA_CALL(edl_dw5_bands, (x, wp, w, out, oh, ow, b, lo, hi))
    return 1;
}
/* edl_full5_f's rows (x0 .. x0 + 4 wp) by the kernels above where the run has a vector of
   the widest ISA (16 floats), else edl_full5_f */
static inline void edl_full5v_f(const float *x, ptrdiff_t wp, const float *w,
                                float *restrict row, ptrdiff_t n) {
    if (n < 16) {
        edl_full5_f(x, x + wp, x + 2 * wp, x + 3 * wp, x + 4 * wp, w, row, n);
        return;
    }
    EDL_ISA_CALL(edl_full5v, (x, wp, w, row, n))
}
/* in-place activations (the functions allow y == x: same-index elementwise access) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wrestrict"
static inline void edl_conv_sigmoid_f(float *v, ptrdiff_t n) { edl_sigmoid_f32(v, v, n); }
static inline void edl_conv_silu_f(float *v, ptrdiff_t n) { edl_swish_f32(v, v, n, 1.0f); }
static inline void edl_conv_tanh_f(float *v, ptrdiff_t n) { edl_tanh_f32(v, v, n); }
#pragma GCC diagnostic pop
/* float32 epilogue over `rows` rows of n: dst = act(src + b) (acts as in _epilogue);
   src == dst (strides too) is in place. Its own clones: the same loops in Cython ran 4
   floats at a time (baseline SSE), ~10% of YuNet's time. Rows let a narrow depthwise
   plane be copied out of its padded buffer in the same pass, in one call. */
EDL_SIMD_KERNEL static void edl_epilogue_rows_f(const float *src, ptrdiff_t ss, float *dst,
                                                ptrdiff_t ds, ptrdiff_t rows, ptrdiff_t n,
                                                float b, int act, float lo, float hi,
                                                float s) {
    if (act >= EDL_ACT_SIGMOID && ds == n && rows > 1) {
        /* sigmoid / SiLU / tanh over contiguous rows: the bias row by row, then one call
           over them all (per row of 26 or 52, the exp loop's scalar tail cost as much as
           its vectors) */
        for (ptrdiff_t r = 0; r < rows; r++)
            for (ptrdiff_t k = 0; k < n; k++) dst[r * n + k] = src[r * ss + k] + b;
        if (act == EDL_ACT_SIGMOID) edl_conv_sigmoid_f(dst, rows * n);
        else if (act == EDL_ACT_SILU) edl_conv_silu_f(dst, rows * n);
        else edl_conv_tanh_f(dst, rows * n);
        return;
    }
    for (ptrdiff_t r = 0; r < rows; r++) {
        const float *v = src + r * ss;
        float *o = dst + r * ds;
        ptrdiff_t k;
        switch (act) {
        case EDL_ACT_NONE:
            for (k = 0; k < n; k++) o[k] = v[k] + b;
            break;
        case EDL_ACT_CLIP:                      /* clamps written so that NaN stays NaN */
            for (k = 0; k < n; k++) {
                float t = v[k] + b;
                t = lo > t ? lo : t;
                o[k] = hi < t ? hi : t;
            }
            break;
        case EDL_ACT_PRELU:
            for (k = 0; k < n; k++) {
                float t = v[k] + b;
                o[k] = t >= 0.0f ? t : t * s;
            }
            break;
        case EDL_ACT_HARD_SIGMOID:
            for (k = 0; k < n; k++) {
                float t = lo * (v[k] + b) + hi;
                t = 0.0f > t ? 0.0f : t;
                o[k] = 1.0f < t ? 1.0f : t;
            }
            break;
        case EDL_ACT_HARD_SWISH:
            for (k = 0; k < n; k++) {
                float t = v[k] + b, g = t * (1.0f / 6.0f) + 0.5f;
                g = 0.0f > g ? 0.0f : g;
                o[k] = t * (1.0f < g ? 1.0f : g);
            }
            break;
        default:
            for (k = 0; k < n; k++) o[k] = v[k] + b;
            if (act == EDL_ACT_SIGMOID) edl_conv_sigmoid_f(o, n);
            else if (act == EDL_ACT_SILU) edl_conv_silu_f(o, n);
            else edl_conv_tanh_f(o, n);
        }
    }
}
static inline void edl_epilogue_f(float *v, ptrdiff_t n, float b, int act, float lo,
                                  float hi, float s) {
    edl_epilogue_rows_f(v, 0, v, 0, 1, n, b, act, lo, hi, s);
}
/* depthwise 1x1 at stride 1 without padding (a BatchNormalization no conv could absorb, run as
   ScaleShift): dst = act(src * a + b) over n values, the product rounded before the bias is
   added, as every conv path does. In blocks of 4096 that stay in L1 between the scaling pass
   and the epilogue's: the general depthwise loop (zero, accumulate and epilogue passes per
   row) ran at a quarter of a copy's speed. */
EDL_SIMD_KERNEL static void edl_scale_epilogue_f(const float *src, float *dst, ptrdiff_t n,
                                                 float a, float b, int act, float lo,
                                                 float hi, float s) {
    for (ptrdiff_t i = 0; i < n; i += 4096) {
        ptrdiff_t m = n - i < 4096 ? n - i : 4096;
        for (ptrdiff_t k = 0; k < m; k++) dst[i + k] = src[i + k] * a;
        edl_epilogue_rows_f(dst + i, 0, dst + i, 0, 1, m, b, act, lo, hi, s);
    }
}
/* residual epilogue of a conv fused with the Add after it (ResNet blocks): v = act((v + b)
   + r) over n values, rounded as the conv's output then the Add would be, so the fused and
   the unfused graph give the same bits (the bias is added first, then the residual). */
EDL_SIMD_KERNEL static void edl_residual_epilogue_f(float *v, const float *r, ptrdiff_t n,
                                                    float b, int act, float lo, float hi,
                                                    float s) {
    for (ptrdiff_t k = 0; k < n; k++) v[k] = (v[k] + b) + r[k];
    if (act != EDL_ACT_NONE) edl_epilogue_rows_f(v, 0, v, 0, 1, n, 0.0f, act, lo, hi, s);
}
/* v += r over n values: the Add after a conv's activation (YOLO's CSP shortcut x +
   SiLU(conv(...))), on the block of the conv's output while it is in cache; the bits of the
   unfused Add. */
EDL_SIMD_KERNEL static void edl_add_f(float *v, const float *r, ptrdiff_t n) {
    for (ptrdiff_t k = 0; k < n; k++) v[k] = v[k] + r[k];
}
/* float64 epilogue, in place: v = act(v + b), the cases of the float32 one with libm's exp and
   tanh (no clones: float64 convs are rare) */
static void edl_epilogue_d(double *v, ptrdiff_t n, double b, int act, double lo, double hi,
                           double s) {
    ptrdiff_t k;
    switch (act) {
    case EDL_ACT_NONE:
        for (k = 0; k < n; k++) v[k] = v[k] + b;
        break;
    case EDL_ACT_CLIP:
        for (k = 0; k < n; k++) {
            double t = v[k] + b;
            t = lo > t ? lo : t;
            v[k] = hi < t ? hi : t;
        }
        break;
    case EDL_ACT_PRELU:
        for (k = 0; k < n; k++) {
            double t = v[k] + b;
            v[k] = t >= 0 ? t : t * s;
        }
        break;
    case EDL_ACT_HARD_SIGMOID:
        for (k = 0; k < n; k++) {
            double t = lo * (v[k] + b) + hi;
            t = 0.0 > t ? 0.0 : t;
            v[k] = 1.0 < t ? 1.0 : t;
        }
        break;
    case EDL_ACT_HARD_SWISH:
        for (k = 0; k < n; k++) {
            double t = v[k] + b, g = t * (1.0 / 6.0) + 0.5;
            g = 0.0 > g ? 0.0 : g;
            v[k] = t * (1.0 < g ? 1.0 : g);
        }
        break;
    case EDL_ACT_SIGMOID:
        for (k = 0; k < n; k++) v[k] = 1 / (1 + exp(-(v[k] + b)));
        break;
    case EDL_ACT_SILU:
        for (k = 0; k < n; k++) {
            double t = v[k] + b;
            v[k] = t / (1 + exp(-t));
        }
        break;
    case EDL_ACT_TANH:
        for (k = 0; k < n; k++) v[k] = tanh(v[k] + b);
        break;
    }
}
/* rows x n floats, row strides ss / ds, in one call: the per-row memcpy calls cost more
   than the copy itself on the rows of 10-40 of a narrow depthwise plane */
EDL_SIMD_KERNEL __attribute__((optimize("no-tree-loop-distribute-patterns")))
static void edl_copy_rows_f(const float *restrict src, ptrdiff_t ss, float *restrict dst,
                            ptrdiff_t ds, ptrdiff_t rows, ptrdiff_t n) {
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t k = 0; k < n; k++) dst[r * ds + k] = src[r * ss + k];
}

#endif
