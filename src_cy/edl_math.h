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
#include "edl_act_table.h"   /* EDL_EXP_*: the polynomial's numbers, shared with the numba twins */

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

/* full unrolling of the small fixed loops over a kernel's registers */
#if defined(__GNUC__) && !defined(__clang__)
#define EDL_UNROLL _Pragma("GCC unroll 16")
#else
#define EDL_UNROLL
#endif

static inline float edl_f32_from_bits(int32_t i) { float f; memcpy(&f, &i, sizeof f); return f; }
static inline int32_t edl_f32_bits(float f) { int32_t i; memcpy(&i, &f, sizeof i); return i; }

/* exp(x) = s * (1 + q), s = 2^n exactly, q = expm1(r), r = x - n ln2, |r| <= ln2/2, for
 * EDL_EXP_LO <= x < 88.8 (callers clamp; n in -126..128, n = 128 makes s = +inf). A NaN x stays
 * NaN through q (callers clamp as max(LO, x), which keeps it): no NaN re-select needed.
 * `exact_r`: r = x - n ln2 in two Cody-Waite steps (exp to 1.5 ulp for every n); without it one
 * FMA with ln2 rounded, whose error n * 1.9e-9 is harmless where exp(x) is small next to 1. */
static inline void edl_exp_core(float xc, float *s, float *q, int exact_r) {
    /* t = round(x / ln2) + 127 + 1.5 * 2^23: adding the bias rounds to an integer, and t's low
     * mantissa bits then hold n + 127 (in 1..255), so a shift makes 2^n without a conversion */
    float t = xc * EDL_EXP_LOG2E + 12583039.0f;
    float n = t - 12583039.0f;
    float r = exact_r ? (xc - n * EDL_EXP_C1) - n * EDL_EXP_C2   /* n * C1 exact */
                      : xc - n * 0.693147182f;
    float r2 = r * r;
    /* expm1(r) = r + r^2 P(r), P near-minimax on [-ln2/2, ln2/2] (Estrin: short chains) */
    float a = EDL_EXP_P0 + r * EDL_EXP_P1;
    float b = EDL_EXP_P2 + r * EDL_EXP_P3;
    float p = a + r2 * (b + r2 * EDL_EXP_P4);
    *q = r + r2 * p;
    *s = edl_f32_from_bits((int32_t)((uint32_t)edl_f32_bits(t) << 23));
}

/* max(LO, x): a NaN x stays NaN (the comparison is false) */
static inline float edl_exp_clamp_lo(float x) { return EDL_EXP_LO > x ? EDL_EXP_LO : x; }

/* exp(x) for x <= 0, 0 below EDL_EXP_LO; NaN propagates */
static inline float edl_exp_neg(float x) {
    float s, q;
    edl_exp_core(edl_exp_clamp_lo(x), &s, &q, 1);
    float e = s * q + s;
    return x < EDL_EXP_LO ? 0.0f : e;
}

/* exp(x) - 1 for x <= 0, without cancellation near 0 (for n = 0 it is q itself); below
 * EDL_EXP_LO it is -1 already (s * (q + 1) < 2^-125 vanishes next to 1); NaN propagates */
static inline float edl_expm1_neg(float x) {
    float s, q;
    edl_exp_core(edl_exp_clamp_lo(x), &s, &q, 1);
    return s * q + (s - 1.0f);
}

/* exp(x) for the 1 / (1 + exp(x)) of sigmoids: within 2 ulp from EDL_EXP_LO to 88.37, +inf
 * above (exact ends for the sigmoid: 1 / (1 + inf) = 0, and 1 + 2^-126 = 1 below LO) */
static inline float edl_exp_sat(float x) {
    float xc = edl_exp_clamp_lo(x), s, q;
    xc = 88.8f < xc ? 88.8f : xc;                  /* min(88.8, xc), NaN kept */
    edl_exp_core(xc, &s, &q, 1);
    return s * (q + 1.0f);                          /* s = inf at n = 128: inf, not NaN */
}

/* GCC vectors of 4, 8 and 16 floats / int32 */
typedef float edl_vf4 __attribute__((vector_size(16)));
typedef int32_t edl_vi4 __attribute__((vector_size(16)));
typedef float edl_vf8 __attribute__((vector_size(32)));
typedef int32_t edl_vi8 __attribute__((vector_size(32)));
typedef float edl_vf16 __attribute__((vector_size(64)));
typedef int32_t edl_vi16 __attribute__((vector_size(64)));

/* c > x ? c : x (gt_) or c < x ? c : x lane-wise, pieces of PT (PIT: its int32 twin) at a
 * time: GCC compares a vector wider than the ISA's registers lane by lane (a scalar compare
 * and select each: see EDL_ISA_CALL), a vector of its registers' width at once */
#define EDL_VSEL_PIECES(VT, PT, PIT, c_, x_, gt_)                                          \
    ({                                                                                     \
        const VT c__ = (c_), x__ = (x_);                                                   \
        VT r__;                                                                            \
        for (unsigned j__ = 0; j__ < sizeof(VT) / sizeof(PT); j__++) {                     \
            PT c4_, x4_, r4_;                                                              \
            memcpy(&c4_, (const char *)&c__ + sizeof(PT) * j__, sizeof(PT));               \
            memcpy(&x4_, (const char *)&x__ + sizeof(PT) * j__, sizeof(PT));               \
            const PIT m4_ = (gt_) ? (PIT)(c4_ > x4_) : (PIT)(c4_ < x4_);                   \
            r4_ = (PT)(((PIT)c4_ & m4_) | ((PIT)x4_ & ~m4_));                              \
            memcpy((char *)&r__ + sizeof(PT) * j__, &r4_, sizeof(PT));                     \
        }                                                                                  \
        r__;                                                                               \
    })
/* NaN-keeping clamps of float vectors by a constant (VT float lanes, IVT int32 lanes):
 * EDL_VMAX_*(lo, x) = lo > x ? lo : x, EDL_VMIN_*(hi, x) = hi < x ? hi : x, so a NaN x stays
 * NaN. The suffix names the vector's bytes where the function's ISA is known (64: AVX-512,
 * 32: AVX2, 16: SSE / NEON), M where it is not (target_clones kernels): a compare and a
 * select. x86's MAXPS / MINPS return their second operand when either is NaN, exactly these
 * selects in one instruction; as compare + select the sigmoid's two clamps were 8 of the ~24
 * instructions of a GEMM tile's SiLU epilogue (AVX-512). */
#if defined(__x86_64__)
#define EDL_VSEL_M(VT, IVT, c_, x_, gt_)                                                   \
    ({                                                                                     \
        const VT c__ = (c_), x__ = (x_);                                                   \
        const IVT m__ = (gt_) ? (IVT)(c__ > x__) : (IVT)(c__ < x__);                       \
        (VT)(((IVT)c__ & m__) | ((IVT)x__ & ~m__));                                        \
    })
/* in target_clones kernels: 8 floats, AVX2's width (the AVX-512 clone takes two ymm) */
#define EDL_VSEL_CLONES(VT, c_, x_, gt_) EDL_VSEL_PIECES(VT, edl_vf8, edl_vi8, c_, x_, gt_)
#else
/* NEON's 16 bytes (the direct stem conv's 8-float clamp had been 8 fcmpe / csel) */
#define EDL_VSEL_M(VT, IVT, c_, x_, gt_) EDL_VSEL_PIECES(VT, edl_vf4, edl_vi4, c_, x_, gt_)
#define EDL_VSEL_CLONES(VT, c_, x_, gt_) EDL_VSEL_PIECES(VT, edl_vf4, edl_vi4, c_, x_, gt_)
#endif
#define EDL_VMAX_M(VT, IVT, lo, x) EDL_VSEL_M(VT, IVT, lo, x, 1)
#define EDL_VMIN_M(VT, IVT, hi, x) EDL_VSEL_M(VT, IVT, hi, x, 0)
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EDL_VMAX_64(VT, IVT, lo, x) ((VT)_mm512_max_ps((__m512)(lo), (__m512)(x)))
#define EDL_VMIN_64(VT, IVT, hi, x) ((VT)_mm512_min_ps((__m512)(hi), (__m512)(x)))
#define EDL_VMAX_32(VT, IVT, lo, x) ((VT)_mm256_max_ps((__m256)(lo), (__m256)(x)))
#define EDL_VMIN_32(VT, IVT, hi, x) ((VT)_mm256_min_ps((__m256)(hi), (__m256)(x)))
#define EDL_VMAX_16(VT, IVT, lo, x) ((VT)_mm_max_ps((__m128)(lo), (__m128)(x)))
#define EDL_VMIN_16(VT, IVT, hi, x) ((VT)_mm_min_ps((__m128)(hi), (__m128)(x)))
#else
#define EDL_VMAX_16 EDL_VMAX_M
#define EDL_VMIN_16 EDL_VMIN_M
#endif
/* the same with the size VB a macro argument (expanded before the paste) */
#define EDL_VMAXB(VB, VT, IVT, lo, x) EDL_VMAXB_(VB, VT, IVT, lo, x)
#define EDL_VMAXB_(VB, VT, IVT, lo, x) EDL_VMAX_##VB(VT, IVT, lo, x)
#define EDL_VMINB(VB, VT, IVT, hi, x) EDL_VMINB_(VB, VT, IVT, hi, x)
#define EDL_VMINB_(VB, VT, IVT, hi, x) EDL_VMIN_##VB(VT, IVT, hi, x)

/* Kernels that compare, instantiated per ISA. GCC lowers a comparison of vectors wider
 * than the ISA's registers (its 16-float vectors on AVX2, SSE or NEON) into a scalar compare
 * and select per lane: the 3x3 depthwise rows, written with 16-float vectors for AVX-512,
 * ran at 2.9 ns an output on an AVX2 EPYC (16 vcomiss / cmova a clamp), ~10x their vector
 * speed, and alike on aarch64 (fcmpe / csel). Such kernels are written once over a vector
 * of VB bytes (VT float, IVT int32 lanes) and instantiated at each ISA's register width, as
 * the GEMM's micro-kernels are: on x86-64 _avx512 (64), _avx2 (32) and _sse (16, the
 * baseline), picked by edl_x86_level() (EDL_ISA_CALL); elsewhere one 16-byte instance,
 * _base (NEON).
 * EDGEDL_F32_ISA=avx2 or sse (read once) caps the level, so that tests run every variant on
 * any x86 CPU. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8 \
    && !defined(EDL_NO_CLONES)
#define EDL_X86_MV 1
#include <stdlib.h>
#define EDL_AVX512 EDL_CONTRACT __attribute__((target("avx512f,fma")))
#define EDL_AVX2 EDL_CONTRACT __attribute__((target("avx2,fma")))
/* 2: AVX-512F, 1: AVX2 + FMA, 0: SSE2 */
static inline int edl_x86_level(void) {
    static int level = -1;
    if (level < 0) {
        __builtin_cpu_init();
        int l = __builtin_cpu_supports("avx512f") ? 2
              : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
        const char *cap = getenv("EDGEDL_F32_ISA");
        if (cap && !strcmp(cap, "sse")) l = 0;
        else if (cap && !strcmp(cap, "avx2") && l > 1) l = 1;
        level = l;
    }
    return level;
}
/* The even / odd floats of the 16 in a, b (a first), in order: vshufps, then vpermpd to undo
   its per-lane interleave (stride-2 pools and the stride-2 depthwise's column split) */
__attribute__((target("avx2"), always_inline)) static inline __m256 edl_even8(__m256 a,
                                                                              __m256 b) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))),
        _MM_SHUFFLE(3, 1, 2, 0)));
}
__attribute__((target("avx2"), always_inline)) static inline __m256 edl_odd8(__m256 a,
                                                                             __m256 b) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(
        _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))),
        _MM_SHUFFLE(3, 1, 2, 0)));
}
/* FN(ARGS) of this CPU's variant (FN##_avx512, _avx2 or _sse) */
#define EDL_ISA_CALL(FN, ARGS)                                                             \
    switch (edl_x86_level()) {                                                             \
    case 2: FN##_avx512 ARGS; break;                                                       \
    case 1: FN##_avx2 ARGS; break;                                                         \
    default: FN##_sse ARGS;                                                                \
    }
#else
#define EDL_ISA_CALL(FN, ARGS) FN##_base ARGS;
#endif
/* a vector of type VT from p (unaligned) */
#define EDL_LDV(VT, p) ({ VT t_; memcpy(&t_, (p), sizeof t_); t_; })

/* 1 / (1 + exp(-v)) of a vector v (silu: v / (1 + exp(-v))) with edl_exp_sat's clamps
 * (EDL_VMIN / EDL_VMAX of suffix VB: they keep NaN), reduction, polynomial and exponent
 * shift, written out for GCC's vector types (VT float, IVT int32 and UVT uint32 lanes of it).
 * A statement expression, so that it inlines into any ISA's kernel. Two operations fewer per
 * vector than the scalar edl_sigmoid_f32 / edl_swish_f32 as GCC vectorises them (their
 * negation and SiLU's v * (1 / d)): the GEMM tile's SiLU epilogue 0.24 -> 0.21 ns a value
 * (AVX-512 Xeon), YOLOX-nano ~2% faster. Within 2.5 ulp of float64 either way; the two may
 * differ by an ulp. */
#define EDL_VSIG(VT, IVT, UVT, v_, silu_, VB)                                              \
    ({                                                                                     \
        /* v clamped to [-88.8, -LO] is -x of edl_exp_sat's clamped x; the negation folds  \
           into the FMAs' constants, silu is one division (not v * (1 / d)) */             \
        const VT v0_ = (v_), lo_ = (VT){0} - EDL_EXP_LO, hi_ = (VT){0} - 88.8f;           \
        VT x_ = EDL_VMAX_##VB(VT, IVT, hi_, EDL_VMIN_##VB(VT, IVT, lo_, v0_));             \
        VT t_ = x_ * -EDL_EXP_LOG2E + 12583039.0f;                                         \
        VT n_ = t_ - 12583039.0f;                                                          \
        VT r_ = (-x_ - n_ * EDL_EXP_C1) - n_ * EDL_EXP_C2;                                 \
        VT r2_ = r_ * r_;                                                                  \
        VT a_ = EDL_EXP_P0 + r_ * EDL_EXP_P1;                                              \
        VT b_ = EDL_EXP_P2 + r_ * EDL_EXP_P3;                                              \
        VT q_ = r_ + r2_ * (a_ + r2_ * (b_ + r2_ * EDL_EXP_P4));                            \
        VT s_ = (VT)((UVT)t_ << 23);                                                       \
        VT d_ = 1.0f + s_ * (q_ + 1.0f), num_ = v0_;    /* s = inf at n = 128: not NaN */  \
        if (!(silu_)) num_ = (VT){0} + 1.0f;                                               \
        num_ / d_;                                                                         \
    })

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
