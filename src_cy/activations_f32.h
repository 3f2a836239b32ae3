/* float32 loops of the exp/log-based activations (called by activations.pyx per chunk).
 *
 * Contiguous x -> y, n elements; y may be x itself (same-index elementwise access only, which is
 * why `restrict` is safe here) but must not otherwise overlap it (the Python wrapper copies).
 * Every loop is branch-free so gcc vectorises it; EDL_SIMD_KERNEL adds AVX2/AVX-512 clones.
 * NaN inputs give NaN: the exp helpers carry it through (edl_math.h).
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

/* gcc's jump threading splits these loops at edl_exp_sat's two clamps and folds each clamped
 * end to its constant (sigmoid 0 or 1, swish v * 0 or v): per vector three or four compares and
 * blends instead of one max and one min. Turned off there, the AVX2 clone's swish went from
 * 0.46 to 0.34 ns/value (sigmoid 0.32 -> 0.30) and the AVX-512 swish from 0.263 to 0.241
 * (32768 values, L2-resident, one thread on an AVX-512 Xeon); same operations, same results. */
#if defined(__GNUC__) && !defined(__clang__)
#define EDL_NO_THREAD __attribute__((optimize("no-thread-jumps")))
#else
#define EDL_NO_THREAD
#endif

/* sigmoid(v) = 1 / (1 + exp(-v)): accurate on both sides (for v << 0 the division keeps the
 * relative accuracy of exp), 0 from v = -88.4 down, no branch or select. Within 2.5 ulp of the
 * float64 sigmoid (swish 2.9). The divide stays: on an AVX-512 Xeon rcp14ps + one Newton step
 * measured ~5% slower than vdivps (the loop is bound by the vector ports, not the divider; the
 * divide is ~24% of it), rcpps + Newton on the AVX2 clone ~13% slower and up to ~2 ulp worse. */
EDL_SIMD_KERNEL EDL_NO_THREAD static void edl_sigmoid_f32(const float *restrict x,
                                                          float *restrict y, edl_idx n) {
    for (edl_idx i = 0; i < n; i++) y[i] = 1.0f / (1.0f + edl_exp_sat(-x[i]));
}

EDL_SIMD_KERNEL EDL_NO_THREAD static void edl_swish_f32(const float *restrict x,
                                                        float *restrict y, edl_idx n,
                                                        float beta) {
    for (edl_idx i = 0; i < n; i++) {   /* v * sigmoid: v / (1 + e) made gcc split the division */
        float v = x[i], d = 1.0f / (1.0f + edl_exp_sat(-beta * v));
        y[i] = v * d;
    }
}

/* tanh|v| = t / (-2 - t), t = expm1(-2|v|): no cancellation anywhere. The one-FMA reduction
 * is enough: its error only matters when exp(-2|v|) is small next to 1 (within 2.5 ulp). */
EDL_SIMD_KERNEL static void edl_tanh_f32(const float *restrict x, float *restrict y, edl_idx n) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], s, q;
        edl_exp_core(edl_exp_clamp_lo(-2.0f * fabsf(v)), &s, &q, 0);
        float t = s * q + (s - 1.0f);
        y[i] = copysignf(t / (-2.0f - t), v);   /* a bit operation, cheaper than a select */
    }
}

/* gamma * (v if v > 0 else alpha * expm1(v)); elu is gamma = 1. No jump threading (as the
 * sigmoids): AVX2 clone 0.36 -> 0.32 ns/value, AVX-512 0.196 -> 0.188 */
EDL_SIMD_KERNEL EDL_NO_THREAD static void edl_selu_f32(const float *restrict x,
                                                       float *restrict y, edl_idx n,
                                                       float alpha, float gamma) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], m = edl_expm1_neg(v > 0.0f ? 0.0f : v);   /* NaN v stays NaN */
        y[i] = gamma * (v > 0.0f ? v : alpha * m);
    }
}

/* max(v, 0) + log1p(exp(-|v|)) */
EDL_SIMD_KERNEL static void edl_softplus_f32(const float *restrict x, float *restrict y,
                                             edl_idx n) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], e = edl_exp_neg(-fabsf(v));
        y[i] = (v > 0.0f ? v : 0.0f) + edl_log1p01f(e);
    }
}

/* v * tanh(softplus(v)) = v * N / D, with e = exp(-|v|):
 * v > 0: N = 1 + 2e, D = 1 + 2e + 2e^2;  v <= 0: N = e (e + 2), D = N + 2 */
EDL_SIMD_KERNEL static void edl_mish_f32(const float *restrict x, float *restrict y, edl_idx n) {
    for (edl_idx i = 0; i < n; i++) {
        float v = x[i], e = edl_exp_neg(-fabsf(v));
        float pn = 1.0f + 2.0f * e, nn = e * (e + 2.0f);
        float num = v > 0.0f ? pn : nn, den = v > 0.0f ? pn + 2.0f * e * e : nn + 2.0f;
        y[i] = v * num / den;
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

typedef int32_t edl_v16i __attribute__((vector_size(64)));

/* a > b ? a : b, lane-wise (a NaN in a never wins); a macro: no vector arguments by value.
 * In pieces of the registers' width: GCC compared the 16 lanes one by one on AVX2 and NEON. */
#define EDL_VMAX(a, b) EDL_VSEL_CLONES(edl_v16f, a, b, 1)

/* 16 vectors v[r] -> one vector whose lane r reduces v[r] (max or sum) over its 16 lanes: a
 * transposing tree of 15 shuffle pairs, where 16 separate horizontal reductions take 64 steps */
#if defined(__clang__)
#define EDL_SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define EDL_SHUF(a, b, ...) __builtin_shuffle(a, b, (edl_v16i){__VA_ARGS__})
#endif
#define EDL_TREE(NAME, OP)                                                                    \
static inline void NAME(const edl_v16f *v, edl_v16f *out) {                            \
    edl_v16f c[8], d[4], e[2];                                                                \
    for (int k = 0; k < 8; k++)                                                               \
        c[k] = OP(EDL_SHUF(v[2 * k], v[2 * k + 1], 0, 1, 2, 3, 4, 5, 6, 7,                    \
                           16, 17, 18, 19, 20, 21, 22, 23),                                   \
                  EDL_SHUF(v[2 * k], v[2 * k + 1], 8, 9, 10, 11, 12, 13, 14, 15,              \
                           24, 25, 26, 27, 28, 29, 30, 31));                                  \
    for (int k = 0; k < 4; k++)                                                               \
        d[k] = OP(EDL_SHUF(c[2 * k], c[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11,                  \
                           16, 17, 18, 19, 24, 25, 26, 27),                                   \
                  EDL_SHUF(c[2 * k], c[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15,                \
                           20, 21, 22, 23, 28, 29, 30, 31));                                  \
    for (int k = 0; k < 2; k++)                                                               \
        e[k] = OP(EDL_SHUF(d[2 * k], d[2 * k + 1], 0, 1, 4, 5, 8, 9, 12, 13,                  \
                           16, 17, 20, 21, 24, 25, 28, 29),                                   \
                  EDL_SHUF(d[2 * k], d[2 * k + 1], 2, 3, 6, 7, 10, 11, 14, 15,                \
                           18, 19, 22, 23, 26, 27, 30, 31));                                  \
    *out = OP(EDL_SHUF(e[0], e[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), \
              EDL_SHUF(e[0], e[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)); \
}
#define EDL_ADD(a, b) ((a) + (b))
EDL_TREE(edl_tree_max, EDL_VMAX)
EDL_TREE(edl_tree_sum, EDL_ADD)

#define EDL_SM_BLOCK 512
/* one row at a time (its own clones: not inlined, a plain static would be the baseline ISA) */
EDL_SIMD_KERNEL static void edl_softmax_rows1_f32(const float *restrict x, float *restrict y,
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

/* Rows in blocks of 16 (for rows short enough that a block stays in L1): each row's maximum and
 * sum are first kept as 16-lane partial vectors, and one transposing tree reduces the 16 rows
 * at once; the per-row horizontal reductions otherwise cost as much as the exps on rows of 80.
 * No NaN / inf scan: the max skips NaN, and a row with a NaN, a +inf or only -inf gets a NaN
 * exp (NaN - m, inf - inf, -inf + inf), so its sum is not >= 1 (the maximum's exp is 1):
 * exactly the rows that are all NaN in NumPy. */
EDL_SIMD_KERNEL static void edl_softmax_rows_f32(const float *restrict x, float *restrict y,
                                                 edl_idx rows, edl_idx n, int log_mode) {
    edl_idx r0 = 0, i;
    /* log-softmax re-reads x after the block's sums: measured slower from rows of ~128 on */
    if (n <= (log_mode ? 96 : EDL_SM_BLOCK)) {
        const edl_idx nv = n - n % 16;
        for (; r0 + 16 <= rows; r0 += 16) {
            edl_v16f part[16], v, mv, sv;
            float e[EDL_SM_BLOCK];
            for (int r = 0; r < 16; r++) {
                const float *xr = x + (r0 + r) * n;
                edl_v16f m;
                for (int l = 0; l < 16; l++) m[l] = -INFINITY;
                for (i = 0; i < nv; i += 16) {
                    memcpy(&v, xr + i, sizeof v);
                    m = EDL_VMAX(v, m);
                }
                for (; i < n; i++) m[0] = xr[i] > m[0] ? xr[i] : m[0];
                part[r] = m;
            }
            edl_tree_max(part, &mv);
            for (int r = 0; r < 16; r++) {
                const float *xr = x + (r0 + r) * n;
                float *yr = y + (r0 + r) * n, m = mv[r];
                edl_v16f s = {0};
                float *er = log_mode ? e : yr;  /* y may be x: log mode keeps x intact */
                /* fetch the next block's row while this one computes (the block is computed
                 * from L1, and the hardware prefetcher does not run that far ahead) */
                if (r0 + 16 + r < rows)
                    for (i = 0; i < n; i += 16) __builtin_prefetch(xr + 16 * n + i, 0, 3);
                for (i = 0; i < n; i++) er[i] = edl_exp_neg(xr[i] - m);
                for (i = 0; i < nv; i += 16) {
                    memcpy(&v, er + i, sizeof v);
                    s += v;
                }
                for (; i < n; i++) s[0] += er[i];
                part[r] = s;
            }
            edl_tree_sum(part, &sv);
            for (int r = 0; r < 16; r++) {
                const float *xr = x + (r0 + r) * n;
                float *yr = y + (r0 + r) * n, m = mv[r];
                if (!(sv[r] >= 1.0f)) {         /* rare: NaN, +inf or all -inf */
                    for (i = 0; i < n; i++) yr[i] = NAN;
                } else if (log_mode) {
                    float ls = logf(sv[r]);     /* (x - m) is exact: subtract log(s) apart */
                    for (i = 0; i < n; i++) yr[i] = (xr[i] - m) - ls;
                } else {
                    float inv = 1.0f / sv[r];
                    for (i = 0; i < n; i++) yr[i] *= inv;
                }
            }
        }
    }
    edl_softmax_rows1_f32(x + r0 * n, y + r0 * n, rows - r0, n, log_mode);
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


/* Softmax (or log-softmax) of rows of n <= EDL_NARROW values (a detector's per-anchor
 * background / face scores: (16800, 2)): blocks of EDL_COLS rows transposed to (n, rows),
 * the column kernel vectorised along the rows, transposed back. Row by row the exps ran
 * scalar (a (4420, 2) softmax: 54 us). Same NaN / inf rule as the row kernels. */
#define EDL_NARROW 8
EDL_SIMD_KERNEL static void edl_softmax_narrow_f32(const float *restrict x, float *restrict y,
                                                   edl_idx rows, edl_idx n, int log_mode) {
    float t[EDL_NARROW * EDL_COLS], m[EDL_COLS], s[EDL_COLS], f[EDL_COLS];
    for (edl_idx r0 = 0; r0 < rows; r0 += EDL_COLS) {
        const edl_idx w = rows - r0 < EDL_COLS ? rows - r0 : EDL_COLS;
        for (edl_idx r = 0; r < w; r++)
            for (edl_idx j = 0; j < n; j++) t[j * w + r] = x[(r0 + r) * n + j];
        edl_softmax_cols_f32(t, t, n, w, m, s, f, log_mode);
        for (edl_idx r = 0; r < w; r++)
            for (edl_idx j = 0; j < n; j++) y[(r0 + r) * n + j] = t[j * w + r];
    }
}

#endif
