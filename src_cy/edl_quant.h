/* Inner loops of the int8 kernels (src_cy/quant.pyx), plain C that gcc vectorises.
 *
 * GEMM: B's rows are packed in pairs, interleaved as int16 (b[k][q], b[k+1][q] side by side),
 * and A's values (minus their zero point) are int16 too, so each pair of products summed
 * into int32 is one pmaddwd (x86) / smlal pair (aarch64) lane: exact for 8-bit operands
 * (|a - za| <= 255, |b| <= 255, no int16 saturation, unlike pmaddubsw). Four rows of A share
 * each load of B. EDL_Q_KERNEL: AVX-512 / AVX2 / baseline clones picked at load time; no FP
 * contraction (the requantization must round exactly like onnxruntime).
 */
#ifndef EDL_QUANT_H
#define EDL_QUANT_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && defined(__GNUC__) \
    && !defined(__clang__) && __GNUC__ >= 11 && !defined(EDL_NO_CLONES)
#define EDL_Q_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EDL_Q_KERNEL
#endif

/* acc[i][q] (row stride lda) for i < m, q < nq: sum over pairs p < kp2 of
   a[i][2p] * bp[p][q][0] + a[i][2p+1] * bp[p][q][1]; a rows of 2 * kp2 int16. */
EDL_Q_KERNEL static void edl_qgemm_pairs(const int16_t *restrict a, const int16_t *restrict bp,
                                         int32_t *restrict acc, ptrdiff_t lda, ptrdiff_t m,
                                         ptrdiff_t kp2, ptrdiff_t nq) {
    ptrdiff_t ka = 2 * kp2, i = 0;
    for (; i + 4 <= m; i += 4) {
        int32_t *r0 = acc + i * lda, *r1 = r0 + lda, *r2 = r1 + lda, *r3 = r2 + lda;
        const int16_t *a0 = a + i * ka, *a1 = a0 + ka, *a2 = a1 + ka, *a3 = a2 + ka;
        for (ptrdiff_t q = 0; q < nq; q++) r0[q] = r1[q] = r2[q] = r3[q] = 0;
        for (ptrdiff_t p = 0; p < kp2; p++) {
            const int16_t *b = bp + p * 2 * nq;
            const int32_t x0 = a0[2 * p], y0 = a0[2 * p + 1], x1 = a1[2 * p], y1 = a1[2 * p + 1];
            const int32_t x2 = a2[2 * p], y2 = a2[2 * p + 1], x3 = a3[2 * p], y3 = a3[2 * p + 1];
            for (ptrdiff_t q = 0; q < nq; q++) {
                const int32_t u = b[2 * q], v = b[2 * q + 1];
                r0[q] += x0 * u + y0 * v;
                r1[q] += x1 * u + y1 * v;
                r2[q] += x2 * u + y2 * v;
                r3[q] += x3 * u + y3 * v;
            }
        }
    }
    for (; i < m; i++) {
        int32_t *r0 = acc + i * lda;
        const int16_t *a0 = a + i * ka;
        for (ptrdiff_t q = 0; q < nq; q++) r0[q] = 0;
        for (ptrdiff_t p = 0; p < kp2; p++) {
            const int16_t *b = bp + p * 2 * nq;
            const int32_t x0 = a0[2 * p], y0 = a0[2 * p + 1];
            for (ptrdiff_t q = 0; q < nq; q++) r0[q] += x0 * b[2 * q] + y0 * b[2 * q + 1];
        }
    }
}

/* Rows b0, b1 (nq values each; b1 NULL: zeros) -> d[2q] = b0[q], d[2q + 1] = b1[q] as int16:
   one row pair of a packed GEMM tile. */
#define EDL_QPACK(NAME, T)                                                                   \
EDL_Q_KERNEL static void NAME(const T *restrict b0, const T *restrict b1, int16_t *restrict d,\
                              ptrdiff_t nq) {                                                \
    if (b1 == NULL) {                                                                       \
        for (ptrdiff_t q = 0; q < nq; q++) { d[2 * q] = b0[q]; d[2 * q + 1] = 0; }          \
        return;                                                                             \
    }                                                                                       \
    for (ptrdiff_t q = 0; q < nq; q++) { d[2 * q] = b0[q]; d[2 * q + 1] = b1[q]; }          \
}
EDL_QPACK(edl_qpack_u8, uint8_t)
EDL_QPACK(edl_qpack_s8, int8_t)

/* d[q] += w * (s[q * stride] - z) for q < n (one tap of a depthwise row). */
EDL_Q_KERNEL static void edl_qdw_tap_u8(int32_t *restrict d, const uint8_t *restrict s,
                                        ptrdiff_t stride, int32_t w, int32_t z, ptrdiff_t n) {
    if (stride == 1)
        for (ptrdiff_t q = 0; q < n; q++) d[q] += w * ((int32_t)s[q] - z);
    else
        for (ptrdiff_t q = 0; q < n; q++) d[q] += w * ((int32_t)s[q * stride] - z);
}

EDL_Q_KERNEL static void edl_qdw_tap_s8(int32_t *restrict d, const int8_t *restrict s,
                                        ptrdiff_t stride, int32_t w, int32_t z, ptrdiff_t n) {
    if (stride == 1)
        for (ptrdiff_t q = 0; q < n; q++) d[q] += w * ((int32_t)s[q] - z);
    else
        for (ptrdiff_t q = 0; q < n; q++) d[q] += w * ((int32_t)s[q * stride] - z);
}

/* out[q] = sat(round_half_even(float(acc[q] + bias) * s) + z): the value is clamped to
   [lo - z, hi - z] first (as onnxruntime does), then lrintf rounds it in the default mode. */
#define EDL_REQUANT(NAME, T)                                                                 \
EDL_Q_KERNEL static void NAME(const int32_t *restrict acc, int32_t bias, float s, int32_t z, \
                              float lo, float hi, T *restrict out, ptrdiff_t n) {            \
    const float flo = lo - (float)z, fhi = hi - (float)z;                                   \
    for (ptrdiff_t q = 0; q < n; q++) {                                                     \
        float v = (float)(acc[q] + bias) * s;                                               \
        v = v < flo ? flo : v;                                                              \
        v = v > fhi ? fhi : v;                                                              \
        out[q] = (T)((int32_t)lrintf(v) + z);                                               \
    }                                                                                       \
}
EDL_REQUANT(edl_requant_u8, uint8_t)
EDL_REQUANT(edl_requant_s8, int8_t)
EDL_REQUANT(edl_requant_u16, uint16_t)
EDL_REQUANT(edl_requant_s16, int16_t)

#endif
