/* float32 loops of the exp/log-based activations (called by activations.pyx per chunk).
 *
 * Contiguous x -> y, n elements; y may be x itself (same-index elementwise access only, which is
 * why `restrict` is safe here) but must not otherwise overlap it (the Python wrapper copies).
 * Every loop is branch-free so gcc vectorises it; EDL_SIMD_KERNEL adds AVX2/AVX-512 clones.
 * NaN inputs give NaN (re-selected at the end, the exp helpers do not carry it).
 */
#ifndef EDL_ACTIVATIONS_F32_H
#define EDL_ACTIVATIONS_F32_H
#include <stddef.h>
#include "edl_math.h"

typedef ptrdiff_t edl_idx;

/* piecewise-linear: memory-bound, but the wide clones still halve the instruction count */
EDL_SIMD_KERNEL static void edl_clip_f32(const float *restrict x, float *restrict y, edl_idx n,
                                         float lo, float hi) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i];
        v = v < lo ? lo : v;                 /* NaN stays NaN; lo > hi gives hi */
        y[i] = v > hi ? hi : v;
    }
}

EDL_SIMD_KERNEL static void edl_leaky_f32(const float *restrict x, float *restrict y, edl_idx n,
                                          float alpha) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i];
        y[i] = v < 0.0f ? alpha * v : v;
    }
}

EDL_SIMD_KERNEL static void edl_hard_sigmoid_f32(const float *restrict x, float *restrict y,
                                                 edl_idx n, float alpha, float beta) {
    for (edl_idx i = 0; i < n; i++) {
        float v = alpha * x[i] + beta;
        v = v < 0.0f ? 0.0f : v;
        y[i] = v > 1.0f ? 1.0f : v;
    }
}

EDL_SIMD_KERNEL static void edl_hard_swish_f32(const float *restrict x, float *restrict y,
                                               edl_idx n) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], t = v * (1.0f / 6.0f) + 0.5f;
        t = t < 0.0f ? 0.0f : t;
        y[i] = v * (t > 1.0f ? 1.0f : t);
    }
}

/* sigmoid(b v) from e = exp(-|b v|): d = 1/(1+e) for b v >= 0, e d below (one division) */
static inline float edl_sigmoid_e(float bv, float e) {
    float d = 1.0f / (1.0f + e);
    return bv >= 0.0f ? d : e * d;
}

EDL_SIMD_KERNEL static void edl_sigmoid_f32(const float *restrict x, float *restrict y,
                                            edl_idx n) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], e = edl_exp_neg(-fabsf(v)), s = edl_sigmoid_e(v, e);
        y[i] = v == v ? s : v;
    }
}

EDL_SIMD_KERNEL static void edl_swish_f32(const float *restrict x, float *restrict y, edl_idx n,
                                          float beta) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], bv = beta * v, e = edl_exp_neg(-fabsf(bv)), s = v * edl_sigmoid_e(bv, e);
        y[i] = v == v ? s : v;
    }
}

/* tanh|v| = t / (-2 - t), t = expm1(-2|v|): no cancellation anywhere */
EDL_SIMD_KERNEL static void edl_tanh_f32(const float *restrict x, float *restrict y, edl_idx n) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], t = edl_expm1_neg(-2.0f * fabsf(v)), a = t / (-2.0f - t);
        a = copysignf(a, v);                  /* a bit operation, cheaper than a select */
        y[i] = v == v ? a : v;
    }
}

/* gamma * (v if v > 0 else alpha * expm1(v)); elu is gamma = 1 */
EDL_SIMD_KERNEL static void edl_selu_f32(const float *restrict x, float *restrict y, edl_idx n,
                                         float alpha, float gamma) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], m = edl_expm1_neg(v < 0.0f ? v : 0.0f);
        float a = gamma * (v > 0.0f ? v : alpha * m);
        y[i] = v == v ? a : v;
    }
}

/* max(v, 0) + log1p(exp(-|v|)) */
EDL_SIMD_KERNEL static void edl_softplus_f32(const float *restrict x, float *restrict y,
                                             edl_idx n) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], e = edl_exp_neg(-fabsf(v));
        float a = (v > 0.0f ? v : 0.0f) + edl_log1p01f(e);
        y[i] = v == v ? a : v;
    }
}

/* v * tanh(softplus(v)) = v * N / D, with e = exp(-|v|):
 * v > 0: N = 1 + 2e, D = 1 + 2e + 2e^2;  v <= 0: N = e (e + 2), D = N + 2 */
EDL_SIMD_KERNEL static void edl_mish_f32(const float *restrict x, float *restrict y, edl_idx n) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], e = edl_exp_neg(-fabsf(v));
        float pn = 1.0f + 2.0f * e, nn = e * (e + 2.0f);
        float num = v > 0.0f ? pn : nn, den = v > 0.0f ? pn + 2.0f * e * e : nn + 2.0f;
        float a = v * num / den;
        y[i] = v == v ? a : v;
    }
}

/* Softmax (or log-softmax) of `rows` contiguous rows of length n (y may be x).
 * The row max is an integer max over an order-preserving map of the float bits (integer
 * reductions vectorise without fast-math) with an OR flagging NaN/inf; the exps are summed by
 * edl_sum_f32 in explicit 16-lane vectors (an OpenMP simd reduction ends in 16 serial adds,
 * which cost as much as the exps on rows of 80). */
#define EDL_KEY_NEG_INF ((int32_t)0x807fffff)           /* edl_f32_key(-inf) */
static inline int32_t edl_f32_key(float v) {           /* monotonic float -> int32 map */
    int32_t b;
    memcpy(&b, &v, sizeof b);
    return b ^ ((b >> 31) & 0x7fffffff);
}

typedef float edl_v16f __attribute__((vector_size(64)));
typedef float edl_v4f __attribute__((vector_size(16)));

/* sum of y[0..n) in 16 lanes, reduced by halving (a short tree, not 16 serial adds) */
static inline float edl_sum_f32(const float *restrict y, edl_idx n) {
    edl_v16f a = {0}, b = {0}, v;
    edl_idx i = 0;
    for (; i + 32 <= n; i += 32) {
        memcpy(&v, y + i, sizeof v);
        a += v;
        memcpy(&v, y + i + 16, sizeof v);
        b += v;
    }
    for (; i + 16 <= n; i += 16) {
        memcpy(&v, y + i, sizeof v);
        a += v;
    }
    a += b;
    edl_v4f q0, q1, q2, q3;
    memcpy(&q0, (char *)&a, 16);
    memcpy(&q1, (char *)&a + 16, 16);
    memcpy(&q2, (char *)&a + 32, 16);
    memcpy(&q3, (char *)&a + 48, 16);
    q0 = (q0 + q2) + (q1 + q3);
    float s = (q0[0] + q0[2]) + (q0[1] + q0[3]);
    for (; i < n; i++) s += y[i];
    return s;
}

#define EDL_SM_BLOCK 512
EDL_SIMD_KERNEL static void edl_softmax_rows_f32(const float *restrict x, float *restrict y,
                                                 edl_idx rows, edl_idx n, int log_mode) {
    for (edl_idx r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        int32_t key = INT32_MIN, bad = 0;
        edl_idx i;
        for (i = 0; i < n; i++) {
            int32_t k = edl_f32_key(xr[i]);
            key = k > key ? k : key;
            bad |= (k >= 0x7f800000) | (k <= EDL_KEY_NEG_INF);   /* +-inf or NaN */
        }
        float m = edl_f32_from_bits(key ^ ((key >> 31) & 0x7fffffff));
        if (bad) {             /* rare: NaN, +inf or all -inf give NaN rows, as NumPy */
            int nan_row = 0;
            for (i = 0; i < n; i++) nan_row |= (xr[i] != xr[i]) | (xr[i] == INFINITY);
            if (nan_row || m == -INFINITY) {
                for (i = 0; i < n; i++) yr[i] = NAN;
                continue;
            }
        }
        if (log_mode) {           /* y may be x: the exps go to an L1 scratch block */
            float e[EDL_SM_BLOCK], s = 0.0f;
            for (edl_idx i0 = 0; i0 < n; i0 += EDL_SM_BLOCK) {
                edl_idx w = n - i0 < EDL_SM_BLOCK ? n - i0 : EDL_SM_BLOCK;
                for (i = 0; i < w; i++) e[i] = edl_exp_neg(xr[i0 + i] - m);
                s += edl_sum_f32(e, w);
            }
            float ls = logf(s);   /* (x - m) is exact: subtract log(s) separately */
            for (i = 0; i < n; i++) yr[i] = (xr[i] - m) - ls;
        } else {                  /* store the exps, sum them, scale: x is not read again */
            for (i = 0; i < n; i++) yr[i] = edl_exp_neg(xr[i] - m);
            float inv = 1.0f / edl_sum_f32(yr, n);
            for (i = 0; i < n; i++) yr[i] *= inv;
        }
    }
}

/* Softmax (or log-softmax) of an (n, inner) block over n, vectorised along inner in column
 * blocks of EDL_COLS that keep the scratch m, s, f (length >= EDL_COLS) in L1. y may be x. */
#define EDL_COLS 512
EDL_SIMD_KERNEL static void edl_softmax_cols_f32(const float *restrict x, float *restrict y,
                                                 edl_idx n, edl_idx inner, float *restrict m,
                                                 float *restrict s, float *restrict f,
                                                 int log_mode) {
    for (edl_idx k0 = 0; k0 < inner; k0 += EDL_COLS) {
        edl_idx w = inner - k0 < EDL_COLS ? inner - k0 : EDL_COLS, j, k;
        const float *xb = x + k0;
        float *yb = y + k0;
        int flagged = 0;
        for (k = 0; k < w; k++) m[k] = xb[k], s[k] = 0.0f, f[k] = 0.0f;
        for (j = 0; j < n; j++)
            for (k = 0; k < w; k++) {
                float v = xb[j * inner + k];
                m[k] = v > m[k] ? v : m[k];
                f[k] += v - v;                  /* NaN if any NaN or +-inf in the column */
            }
        for (k = 0; k < w; k++) {
            if (f[k] != 0.0f) {                 /* rare: NaN, +inf or all -inf: NaN column */
                int nan_col = m[k] == -INFINITY;
                for (j = 0; j < n; j++) {
                    float v = xb[j * inner + k];
                    nan_col |= (v != v) | (v == INFINITY);
                }
                if (nan_col) m[k] = NAN, flagged = 1;
            }
        }
        if (log_mode) {
            for (j = 0; j < n; j++)
                for (k = 0; k < w; k++) s[k] += edl_exp_neg(xb[j * inner + k] - m[k]);
            for (k = 0; k < w; k++) s[k] = logf(s[k]);
            for (j = 0; j < n; j++)    /* (x - m) is exact: subtract log(s) separately */
                for (k = 0; k < w; k++) yb[j * inner + k] = (xb[j * inner + k] - m[k]) - s[k];
        } else {
            for (j = 0; j < n; j++)
                for (k = 0; k < w; k++) {
                    float e = edl_exp_neg(xb[j * inner + k] - m[k]);
                    yb[j * inner + k] = e;
                    s[k] += e;
                }
            for (k = 0; k < w; k++) s[k] = 1.0f / s[k];
            for (j = 0; j < n; j++)
                for (k = 0; k < w; k++) yb[j * inner + k] *= s[k];
        }
        if (flagged)
            for (k = 0; k < w; k++)
                if (m[k] != m[k])
                    for (j = 0; j < n; j++) yb[j * inner + k] = NAN;
    }
}

#endif
