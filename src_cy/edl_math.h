/* Vectorisable float32 exp / expm1 / log1p (edgedl's Cython kernels).
 *
 * libm's expf is an opaque call, so a loop around it runs one element at a time. These are
 * branch-free static inline functions (selects, int conversions, a polynomial) that gcc -O3
 * auto-vectorises with baseline SSE2 on x86-64 and NEON on aarch64, without -march flags or
 * -ffast-math (which must NOT be used: the rounding trick below needs IEEE evaluation order).
 * Accuracy: exp and expm1 within 1.5 ulp (Cody-Waite reduction, degree-6 near-minimax
 * polynomial), log1p within 3 ulp. exp below FLT_MIN (x < -87.34) flushes to 0.
 *
 * EDL_SIMD_KERNEL marks a loop function for runtime dispatch on x86-64 Linux/gcc: an AVX-512,
 * an AVX2+FMA and a baseline clone, picked at load time by the CPU (target_clones, no -march
 * needed, so wheels stay portable); it also lets gcc contract a*b+c into FMAs there.
 */
#ifndef EDL_MATH_H
#define EDL_MATH_H
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__)
#define EDL_CONTRACT __attribute__((optimize("fp-contract=fast")))
#else
#define EDL_CONTRACT
#endif
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && defined(__GNUC__) \
    && !defined(__clang__) && __GNUC__ >= 11 && !defined(EDL_NO_CLONES)
#define EDL_SIMD_KERNEL EDL_CONTRACT \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EDL_SIMD_KERNEL EDL_CONTRACT
#endif

#define EDL_EXP_LO (-87.33654f)   /* log(FLT_MIN): 2^n is a normal number above it */

static inline float edl_f32_from_bits(int32_t i) { float f; memcpy(&f, &i, sizeof f); return f; }

/* For x <= 0: exp(x) = s * (1 + q), s = 2^n exactly, q = expm1(r), r = x - n ln2, |r| <= ln2/2.
 * s = 0 below EDL_EXP_LO. A NaN x gives finite garbage: callers re-select NaN at the end. */
static inline void edl_exp_parts_neg(float x, float *s, float *q) {
    float xc = x >= EDL_EXP_LO ? x : EDL_EXP_LO;
    /* n = round(x / ln2): adding 1.5 * 2^23 rounds to an integer */
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f;               /* ln2 = C1 + C2, n * C1 exact */
    r = r - n * -2.12194440e-4f;
    float r2 = r * r;
    /* expm1(r) = r + r^2 P(r), P near-minimax on [-ln2/2, ln2/2] (Estrin: short chains) */
    float a = 4.9999988079e-01f + r * 1.6666518152e-01f;
    float b = 4.1669528931e-02f + r * 8.3689158782e-03f;
    float p = a + r2 * (b + r2 * 1.3751621591e-03f);
    *q = r + r2 * p;
    float ss = edl_f32_from_bits(((int32_t)n + 127) << 23);
    *s = x >= EDL_EXP_LO ? ss : 0.0f;
}

/* exp(x) for x <= 0 (NaN in, garbage out) */
static inline float edl_exp_neg(float x) {
    float s, q;
    edl_exp_parts_neg(x, &s, &q);
    return s * q + s;
}

/* exp(x) - 1 for x <= 0, without cancellation near 0 (for n = 0 it is q itself) */
static inline float edl_expm1_neg(float x) {
    float s, q;
    edl_exp_parts_neg(x, &s, &q);
    return s * q + (s - 1.0f);
}

/* exp(x) for any x <= 88 (larger x are clamped to 88); NaN propagates. */
static inline float edl_expf(float x) {
    float xc = x <= 0.0f ? x : 0.0f;
    float k = x <= 0.0f ? 0.0f : (x <= 88.0f ? x : 88.0f);
    /* exp(x) = exp(x - k') * exp(k'): handle x > 0 as 2^m * exp(x - m ln2) */
    float m = (k * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float s, q;
    edl_exp_parts_neg(xc + ((k - m * 0.693359375f) - m * -2.12194440e-4f), &s, &q);
    float y = (s * q + s) * edl_f32_from_bits(((int32_t)m + 127) << 23);
    return x == x ? y : x;
}

/* log(1 + u) for 0 <= u <= 1: 2 atanh(z), z = u / (2 + u) <= 1/3, odd series to z^13 */
static inline float edl_log1p01f(float u) {
    float z = u / (2.0f + u);
    float z2 = z * z;
    float p = 1.0f / 13.0f;
    p = p * z2 + 1.0f / 11.0f;
    p = p * z2 + 1.0f / 9.0f;
    p = p * z2 + 1.0f / 7.0f;
    p = p * z2 + 1.0f / 5.0f;
    p = p * z2 + 1.0f / 3.0f;
    return 2.0f * z + 2.0f * z * z2 * p;
}

#endif
