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

/* sigmoid(b * v) from e = exp(-|b v|): 1/(1+e) for b v >= 0, e/(1+e) below */
#define EDL_SIGMOID(bv, e) ((bv) >= 0.0f ? 1.0f / (1.0f + (e)) : (e) / (1.0f + (e)))

EDL_SIMD_KERNEL static void edl_sigmoid_f32(const float *restrict x, float *restrict y,
                                            edl_idx n) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], e = edl_exp_neg(-fabsf(v)), s = EDL_SIGMOID(v, e);
        y[i] = v == v ? s : v;
    }
}

EDL_SIMD_KERNEL static void edl_swish_f32(const float *restrict x, float *restrict y, edl_idx n,
                                          float beta) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], bv = beta * v, e = edl_exp_neg(-fabsf(bv)), s = v * EDL_SIGMOID(bv, e);
        y[i] = v == v ? s : v;
    }
}

/* tanh|v| = -t / (2 + t), t = expm1(-2|v|): no cancellation anywhere */
EDL_SIMD_KERNEL static void edl_tanh_f32(const float *restrict x, float *restrict y, edl_idx n) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], t = edl_expm1_neg(-2.0f * fabsf(v)), a = -t / (2.0f + t);
        a = v < 0.0f ? -a : a;
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

/* Softmax (or log-softmax) of `rows` contiguous rows of length n (y may be x). Max and sum use
 * EDL_LANES partial accumulators, reduced as a tree, so that they vectorise and no branch depends
 * on the data (the order of the sum differs from a serial one by rounding only). */
#define EDL_LANES 16
#define EDL_BUF 512
static inline float edl_hmax(float *acc) {
    for (int w = EDL_LANES / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++) acc[k] = acc[k + w] > acc[k] ? acc[k + w] : acc[k];
    return acc[0];
}
static inline float edl_hsum(float *acc) {
    for (int w = EDL_LANES / 2; w > 0; w /= 2)
        for (int k = 0; k < w; k++) acc[k] += acc[k + w];
    return acc[0];
}
EDL_SIMD_KERNEL static void edl_softmax_rows_f32(const float *restrict x, float *restrict y,
                                                 edl_idx rows, edl_idx n, int log_mode) {
    for (edl_idx r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *yr = y + r * n;
        float acc[EDL_LANES], bad[EDL_LANES], buf[EDL_BUF], m, s, b;
        edl_idx i, k, nv = n - n % EDL_LANES;
        for (k = 0; k < EDL_LANES; k++) acc[k] = -INFINITY, bad[k] = 0.0f;
        for (i = 0; i < nv; i += EDL_LANES)
            for (k = 0; k < EDL_LANES; k++) {
                float v = xr[i + k];
                acc[k] = v > acc[k] ? v : acc[k];
                bad[k] += v - v;                 /* NaN if v is NaN or +-inf */
            }
        m = edl_hmax(acc);
        b = edl_hsum(bad);
        for (; i < n; i++) {
            m = xr[i] > m ? xr[i] : m;
            b += xr[i] - xr[i];
        }
        if (b != 0.0f) {       /* rare: NaN or inf in the row; NaN results as NumPy gives */
            int nan_row = 0;
            for (i = 0; i < n; i++) nan_row |= (xr[i] != xr[i]) | (xr[i] == INFINITY);
            if (nan_row || m == -INFINITY) {
                for (i = 0; i < n; i++) yr[i] = NAN;
                continue;
            }                  /* else: finite values and -inf, which give exp = 0 below */
        }
        /* exp(x - m) as one flat loop (into y, or a stack buffer when y must keep x for the
         * log-softmax), then its sum with lane accumulators */
        s = 0.0f;
        for (edl_idx c0 = 0; c0 < n; c0 += EDL_BUF) {
            edl_idx c1 = n - c0 < EDL_BUF ? n - c0 : EDL_BUF, cv = c1 - c1 % EDL_LANES;
            float *e = log_mode ? buf : yr + c0;
            for (i = 0; i < c1; i++) e[i] = edl_exp_neg(xr[c0 + i] - m);
            for (k = 0; k < EDL_LANES; k++) acc[k] = 0.0f;
            for (i = 0; i < cv; i += EDL_LANES)
                for (k = 0; k < EDL_LANES; k++) acc[k] += e[i + k];
            s += edl_hsum(acc);
            for (i = cv; i < c1; i++) s += e[i];
        }
        if (log_mode) {
            float ls = logf(s);   /* (x - m) is exact: subtract log(s) separately */
            for (i = 0; i < n; i++) yr[i] = (xr[i] - m) - ls;
        } else {
            float inv = 1.0f / s;
            for (i = 0; i < n; i++) yr[i] *= inv;
        }
    }
}

#endif
