/* C kernels of pooling.pyx: 2x2 stride-2 windows and k-source folds with SIMD clones.
 * Static functions: each extension that includes this header gets its own copy. */
#ifndef EDL_POOL_H
#define EDL_POOL_H
#include <stddef.h>
#include <stdint.h>
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
/* float32 2x2 stride-2 max in two passes, each a plain loop GCC vectorises at the clone's
   width without shuffles in the first: rows (v[j] = max(a[j], b[j]), j < n: two input rows
   into a scratch row) then pairs (d[q] = max(v[2q], v[2q + 1]), q < n: over a whole plane's
   scratch at once, one loop tail a plane). The one-pass loop above de-interleaved four
   streams and, its selects if-converted into masks, ran at ~0.9 cycles an input value on
   64x40x40 (L2). NaN propagates: b > a ? b : a keeps a when either is NaN, then a NaN b
   replaces it (GCC vectorised the stride-2 loop only with the selects in this order). */
#define EDL_NANMAX(a, b) ({ float a_ = (a), b_ = (b), m_ = b_ > a_ ? b_ : a_;                 \
                            b_ != b_ ? b_ : m_; })
EDL_SIMD_KERNEL static void edl_max_rows_f(const float *restrict a, const float *restrict b,
                                           float *restrict v, ptrdiff_t n) {
    for (ptrdiff_t j = 0; j < n; j++) v[j] = EDL_NANMAX(a[j], b[j]);
}
EDL_SIMD_KERNEL static void edl_max_pairs_f(const float *restrict v, float *restrict d,
                                            ptrdiff_t n) {
    for (ptrdiff_t q = 0; q < n; q++) d[q] = EDL_NANMAX(v[2 * q], v[2 * q + 1]);
}
#ifdef EDL_X86_MV          /* edl_math.h: x86-64 GCC, its level from edl_x86_level */
#include <immintrin.h>
#define EDL_POOL_AVX512 1
/* The same two steps in one pass on AVX-512 (no scratch plane): 32 inputs of each row, their
   maxima, then vpermt2ps picks the even and the odd ones for the pairs; the row's last
   outputs under masks. nanmax as EDL_NANMAX, bit for bit: vmaxps(b, a) is b > a ? b : a
   (a when either is NaN), then a NaN b replaces it. */
__attribute__((target("avx512f"), always_inline)) static inline __m512 edl_nanmax16(__m512 a,
                                                                                  __m512 b) {
    return _mm512_mask_mov_ps(_mm512_max_ps(b, a), _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q), b);
}
__attribute__((target("avx512f"))) static void edl_max2x2s2_rows_avx512(
        const float *x, ptrdiff_t w, float *d, ptrdiff_t oh, ptrdiff_t ow) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                         28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    for (ptrdiff_t o = 0; o < oh; o++) {
        const float *a = x + 2 * o * w, *b = a + w;
        float *y = d + o * ow;
        for (ptrdiff_t q = 0; q < ow; q += 16) {
            const ptrdiff_t left = 2 * (ow - q);         /* input columns still to read */
            const __mmask16 m0 = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
            const __mmask16 m1 = left >= 32 ? 0xFFFF
                               : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
            const __m512 v0 = edl_nanmax16(_mm512_maskz_loadu_ps(m0, a + 2 * q),
                                           _mm512_maskz_loadu_ps(m0, b + 2 * q));
            const __m512 v1 = edl_nanmax16(_mm512_maskz_loadu_ps(m1, a + 2 * q + 16),
                                           _mm512_maskz_loadu_ps(m1, b + 2 * q + 16));
            const __m512 r = edl_nanmax16(_mm512_permutex2var_ps(v0, ev, v1),
                                          _mm512_permutex2var_ps(v0, od, v1));
            _mm512_mask_storeu_ps(y + q, ow - q >= 16 ? 0xFFFF
                                                     : (__mmask16)((1u << (ow - q)) - 1), r);
        }
    }
}
__attribute__((target("avx2"), always_inline)) static inline __m256 edl_nanmax8(__m256 a,
                                                                                __m256 b) {
    return _mm256_blendv_ps(_mm256_max_ps(b, a), b, _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
}
/* The same on AVX2: per 8 outputs the two rows' 16 inputs, their maxima de-interleaved by
   vshufps + vpermpd; a row's last vector moved back to end at ow, or below 8 outputs from
   masked loads (the lanes past the row read nothing; their maxima are not stored). GCC's
   AVX2 clones of the two passes below kept YuNet's pooled 1x1 -> depthwise units waiting on
   a scratch row. */
__attribute__((target("avx2"))) static void edl_max2x2s2_rows_avx2(
        const float *x, ptrdiff_t w, float *d, ptrdiff_t oh, ptrdiff_t ow) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (ptrdiff_t o = 0; o < oh; o++) {
        const float *a = x + 2 * o * w, *b = a + w;
        float *y = d + o * ow;
        for (ptrdiff_t q = 0; q < ow; q += 8) {
            __m256 a0, a1, b0, b1;
            if (q > ow - 8 && ow >= 8)
                q = ow - 8;     /* the last vector moved back: masked stores are slow */
            if (ow - q >= 8) {
                a0 = _mm256_loadu_ps(a + 2 * q);
                a1 = _mm256_loadu_ps(a + 2 * q + 8);
                b0 = _mm256_loadu_ps(b + 2 * q);
                b1 = _mm256_loadu_ps(b + 2 * q + 8);
            } else {
                const int left = (int)(2 * (ow - q));        /* input columns still to read */
                const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lane);
                const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(left - 8), lane);
                a0 = _mm256_maskload_ps(a + 2 * q, m0);
                a1 = _mm256_maskload_ps(a + 2 * q + 8, m1);
                b0 = _mm256_maskload_ps(b + 2 * q, m0);
                b1 = _mm256_maskload_ps(b + 2 * q + 8, m1);
            }
            const __m256 v0 = edl_nanmax8(a0, b0), v1 = edl_nanmax8(a1, b1);
            const __m256 r = edl_nanmax8(edl_even8(v0, v1), edl_odd8(v0, v1));
            if (ow - q >= 8)
                _mm256_storeu_ps(y + q, r);
            else
                _mm256_maskstore_ps(y + q, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(ow - q)),
                                                              lane), r);
        }
    }
}
/* edl_max3x3s2_f's row (below) on AVX-512, in registers: per 16 outputs the three rows' max
   of the 33 columns they read (two vectors and one more column, -inf outside the row), then
   the taps 2q, 2q + 1 by de-interleaving (vpermt2ps) and 2q + 2 by shifting the even ones in
   by one. GCC's clone ran the stride-2 taps of a short row's last 16 outputs as scalar code,
   and a row through the scratch v waited on its own stores: 3-5 cycles an output on
   SqueezeNet's and FastestDet's pools. The same maxima in the same order (edl_nanmax16 is
   EDL_NANMAX bit for bit; v's padding cells were -inf). */
static inline __mmask16 edl_mask16(ptrdiff_t lo, ptrdiff_t hi) {       /* lanes lo .. hi - 1 */
    lo = lo < 0 ? 0 : lo;
    hi = hi > 16 ? 16 : hi;
    return hi <= lo ? 0 : (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}
__attribute__((target("avx512f"), always_inline)) static inline __m512 edl_max3col16(
        const float *a, const float *b, const float *c, ptrdiff_t c0, ptrdiff_t w) {
    const __mmask16 m = edl_mask16(-c0, w - c0);          /* the columns inside the row */
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    return edl_nanmax16(edl_nanmax16(_mm512_mask_loadu_ps(ninf, m, a + c0),
                                     _mm512_mask_loadu_ps(ninf, m, b + c0)),
                        _mm512_mask_loadu_ps(ninf, m, c + c0));
}
__attribute__((target("avx512f"))) static void edl_max3x3s2_row_avx512(
        const float *a, const float *b, const float *c, ptrdiff_t w, ptrdiff_t pl, float *d,
        ptrdiff_t n) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                         28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    const __m512i up = _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                                         16);
    for (ptrdiff_t q = 0; q < n; q += 16) {
        const ptrdiff_t c0 = 2 * q - pl;                  /* the block's first column */
        const __m512 lo = edl_max3col16(a, b, c, c0, w), hi = edl_max3col16(a, b, c, c0 + 16, w);
        const __m512 e0 = _mm512_permutex2var_ps(lo, ev, hi);
        const __m512 x = edl_max3col16(a, b, c, c0 + 32, w);          /* column c0 + 32 */
        const __m512 r = edl_nanmax16(edl_nanmax16(e0, _mm512_permutex2var_ps(lo, od, hi)),
                                      _mm512_permutex2var_ps(e0, up, x));
        _mm512_mask_storeu_ps(d + q, edl_mask16(0, n - q), r);
    }
}
/* The same rows on AVX2 (no masked max, no two-source permute): per 8 outputs the three
   rows' NaN-propagating max of columns c0 .. c0 + 15 and of the next 8 (the next block's
   first, carried over), de-interleaved by vshufps + vpermpd, the taps 2q + 2 the even ones
   moved down a lane with the next block's column c0 + 16 entering. Columns outside the row
   load as -inf (vmaskmovps does not fault on masked lanes, then a blend). GCC's AVX2 clone of
   edl_max3x3s2_f ran its stride-2 taps lane by lane (FastestDet's 24 x 176 x 176 pool: ~2x
   this). The same maxima in the same order as EDL_NANMAX. */
__attribute__((target("avx2"), always_inline)) static inline __m256 edl_max3col8(
        const float *a, const float *b, const float *c, ptrdiff_t c0, ptrdiff_t w) {
    if (c0 >= 0 && c0 + 8 <= w)
        return edl_nanmax8(edl_nanmax8(_mm256_loadu_ps(a + c0), _mm256_loadu_ps(b + c0)),
                           _mm256_loadu_ps(c + c0));
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i col = _mm256_add_epi32(lane, _mm256_set1_epi32((int)c0));
    const __m256i in = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), col),
                                           _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w), col));
    const __m256 ninf = _mm256_set1_ps(-INFINITY), m = _mm256_castsi256_ps(in);
    /* a masked lane reads nothing (the pad columns left of the row included) */
    const __m256 va = _mm256_blendv_ps(ninf, _mm256_maskload_ps(a + c0, in), m);
    const __m256 vb = _mm256_blendv_ps(ninf, _mm256_maskload_ps(b + c0, in), m);
    const __m256 vc = _mm256_blendv_ps(ninf, _mm256_maskload_ps(c + c0, in), m);
    return edl_nanmax8(edl_nanmax8(va, vb), vc);
}
__attribute__((target("avx2"))) static void edl_max3x3s2_row_avx2(
        const float *a, const float *b, const float *c, ptrdiff_t w, ptrdiff_t pl, float *d,
        ptrdiff_t n) {
    const __m256i down = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
    __m256 lo = edl_max3col8(a, b, c, -pl, w);
    for (ptrdiff_t q = 0; q < n; q += 8) {
        if (q > n - 8 && n >= 8) {      /* the last vector moved back to end at n (a masked
                                           store cost as much as a row's other vectors) */
            q = n - 8;
            lo = edl_max3col8(a, b, c, 2 * q - pl, w);
        }
        const ptrdiff_t c0 = 2 * q - pl;                  /* the block's first column */
        const __m256 hi = edl_max3col8(a, b, c, c0 + 8, w);
        const __m256 nx = edl_max3col8(a, b, c, c0 + 16, w);    /* the next block's lo */
        const __m256 e = edl_even8(lo, hi), o = edl_odd8(lo, hi);
        const __m256 e2 = _mm256_blend_ps(_mm256_permutevar8x32_ps(e, down),
                                          _mm256_permutevar8x32_ps(nx, _mm256_setzero_si256()),
                                          0x80);
        const __m256 r = edl_nanmax8(edl_nanmax8(e, o), e2);
        if (n - q >= 8) {
            _mm256_storeu_ps(d + q, r);
        } else {
            const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - q)),
                                                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            _mm256_maskstore_ps(d + q, keep, r);
        }
        lo = nx;
    }
}
/* The sum of three rows' columns c0 .. c0 + 7, columns outside the row 0 (a masked lane
   loads 0): an average pool's vertical taps */
__attribute__((target("avx2"), always_inline)) static inline __m256 edl_sum3col8(
        const float *a, const float *b, const float *c, ptrdiff_t c0, ptrdiff_t w) {
    if (c0 >= 0 && c0 + 8 <= w)
        return _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(a + c0), _mm256_loadu_ps(b + c0)),
                             _mm256_loadu_ps(c + c0));
    const __m256i col = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                         _mm256_set1_epi32((int)c0));
    const __m256i in = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), col),
                                           _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w), col));
    return _mm256_add_ps(_mm256_add_ps(_mm256_maskload_ps(a + c0, in),
                                       _mm256_maskload_ps(b + c0, in)),
                         _mm256_maskload_ps(c + c0, in));
}
/* the taps 2q, 2q + 1, 2q + 2 summed for the 8 outputs whose first column is c0 (lo: the
   column sums from c0; *nx: those from c0 + 16, the next block's lo) */
__attribute__((target("avx2"), always_inline)) static inline __m256 edl_sum3s2_8(
        const float *a, const float *b, const float *c, ptrdiff_t w, ptrdiff_t c0, __m256 lo,
        __m256 *nx) {
    const __m256i down = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
    const __m256 hi = edl_sum3col8(a, b, c, c0 + 8, w);
    *nx = edl_sum3col8(a, b, c, c0 + 16, w);
    const __m256 e = edl_even8(lo, hi), o = edl_odd8(lo, hi);
    const __m256 e2 = _mm256_blend_ps(_mm256_permutevar8x32_ps(e, down),
                                      _mm256_permutevar8x32_ps(*nx, _mm256_setzero_si256()),
                                      0x80);
    return _mm256_add_ps(_mm256_add_ps(e, o), e2);
}
/* One output row of a 3x3 stride-2 average pool as edl_max3x3s2_row_avx2 takes the max:
   (a + b + c) per column (padding columns and rows 0: a row outside the image is passed
   as a zero row), then taps 2q, 2q + 1, 2q + 2, times the divisor's factors sr * scw[q]
   (the general path's product, after the sums). FastestDet's 48 x 44 x 44 pool (pads 1,
   counted) took 2.2 ns an output through the small-plane path, onnxruntime's 0.55. */
__attribute__((target("avx2"))) static void edl_avg3x3s2_row_avx2(
        const float *a, const float *b, const float *c, ptrdiff_t w, ptrdiff_t pl, float *d,
        ptrdiff_t n, float sr, const float *scw) {
    const __m256 srv = _mm256_set1_ps(sr);
    __m256 lo = edl_sum3col8(a, b, c, -pl, w), nx;
    ptrdiff_t q = 0;
    for (; q + 8 <= n; q += 8) {
        const __m256 t = edl_sum3s2_8(a, b, c, w, 2 * q - pl, lo, &nx);
        _mm256_storeu_ps(d + q, _mm256_mul_ps(t, _mm256_mul_ps(srv, _mm256_loadu_ps(scw + q))));
        lo = nx;
    }
    if (q < n && n >= 8) {       /* the last vector moved back to end at n (a masked store
                                    cost as much as the row's other vectors on Zen 3) */
        q = n - 8;
        const ptrdiff_t c0 = 2 * q - pl;
        const __m256 t = edl_sum3s2_8(a, b, c, w, c0, edl_sum3col8(a, b, c, c0, w), &nx);
        _mm256_storeu_ps(d + q, _mm256_mul_ps(t, _mm256_mul_ps(srv, _mm256_loadu_ps(scw + q))));
    } else if (q < n) {
        const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256 t = edl_sum3s2_8(a, b, c, w, -pl, lo, &nx);
        const __m256 sv = _mm256_mul_ps(srv, _mm256_maskload_ps(scw, keep));
        _mm256_maskstore_ps(d, keep, _mm256_mul_ps(t, sv));
    }
}
#endif
/* 1 when edl_max2x2s2_plane_f ran: AVX-512 or AVX2 (the caller's two passes otherwise) */
static int edl_max2x2s2_plane_f(const float *x, ptrdiff_t w, float *d, ptrdiff_t oh,
                                ptrdiff_t ow) {
#ifdef EDL_POOL_AVX512
    if (edl_x86_level() == 2) {
        edl_max2x2s2_rows_avx512(x, w, d, oh, ow);
        return 1;
    }
    if (edl_x86_level() == 1) {
        edl_max2x2s2_rows_avx2(x, w, d, oh, ow);
        return 1;
    }
#endif
    (void)x; (void)w; (void)d; (void)oh; (void)ow;
    return 0;
}
EDL_POOL2X2(double, d)
/* Folds with the AVX2 / AVX-512 clones: d[q] = op over i < n of src[i][q * stride], q < len,
   n >= 1 sources (the rows of a window for the vertical pass, its shifted taps for the
   horizontal one). mode: 0 sum, 1 max of a NaN-free plane (one maxps), 2 NaN-propagating max.
   The first pass folds up to five sources (a 5x5 window in one load-op-store pass), each
   later pass d and up to four more, so d is stored once per four or five sources. Stride 1
   and 2 loops are written out so gcc vectorises them with constant strides (2: even/odd
   de-interleave). */
#define EDL_POOL_OP(T, S)                                                                  \
static inline T edl_pool_op_##S(int m, T a, T b) {                                        \
    if (m == 0) return a + b;                                                             \
    T r = b > a ? b : a;            /* maxps */                                           \
    return m == 2 && b != b ? b : r; /* + cmpunordps and a blend: a NaN in b enters */    \
}
EDL_POOL_OP(float, f)
EDL_POOL_OP(double, d)
/* One output row of a 3x3 stride-2 max pool (FastestDet's and ShuffleNet's stem pools) in one
   call: the exact NaN-propagating max of rows a, b, c (w values; a window row outside the
   image is passed as one of its in-image rows: max(x, x) = x) into v + pl, then n outputs of
   three taps 2q .. 2q + 2 of v. v: max(pl + w, 2n + 1) cells, those outside [pl, pl + w)
   -inf (written once by the caller). No per-plane NaN check and no per-row loop tails of
   the general two-pass fold, which cost 2x here. */
/* for (I = 0; I < N; I++) STMT for an idempotent STMT: whole blocks of B (a power of two: 16
   floats or 64 bytes, one AVX-512 vector), then the last B again as one fixed-length block
   ending at N instead of a scalar tail (rows of 40 or 88 outputs left 8 to it, as long as
   the vector part; byte rows of 176 and 88 left 48 and 24). */
#define EDL_BY(B, I, N, STMT)                                                             \
    do {                                                                                  \
        ptrdiff_t m_ = (N) & ~(ptrdiff_t)((B) - 1);                                       \
        for (ptrdiff_t I = 0; I < m_; I++) STMT;                                          \
        if (m_ < (N) && (N) >= (B)) {                                                     \
            ptrdiff_t e_ = (N) - (B);                                                     \
            for (ptrdiff_t j_ = 0; j_ < (B); j_++) { ptrdiff_t I = e_ + j_; STMT; }       \
        } else for (ptrdiff_t I = m_; I < (N); I++) STMT;                                 \
    } while (0)
#define EDL_BY16(I, N, STMT) EDL_BY(16, I, N, STMT)
#define EDL_BY64(I, N, STMT) EDL_BY(64, I, N, STMT)
#define EDL_MAX3X3S2(T, S)                                                                 \
EDL_SIMD_KERNEL static void edl_max3x3s2_##S(const T *restrict a, const T *restrict b,    \
                                             const T *restrict c, ptrdiff_t w,            \
                                             T *restrict v, ptrdiff_t pl, T *restrict d,  \
                                             ptrdiff_t n) {                               \
    T *col = v + pl;                                                                      \
    EDL_BY16(k, w, col[k] = edl_pool_op_##S(2, edl_pool_op_##S(2, a[k], b[k]), c[k]));     \
    EDL_BY16(q, n, d[q] = edl_pool_op_##S(2, edl_pool_op_##S(2, v[2 * q], v[2 * q + 1]),  \
                                          v[2 * q + 2]));                                \
}
EDL_MAX3X3S2(float, f)
/* A plane's 3x3 stride-2 max (pads pt, pl <= 1, every window with an in-image row and
   column): edl_max3x3s2_f per output row, a window row outside the image passed as one of
   its in-image rows (max(x, x) = x), v as there; on AVX-512 its one-pass twin. The rows in
   one call: SqueezeNet's 13 x 13 outputs spent as long in per-row calls as in the rows. */
static void edl_max3x3s2_plane_f(const float *src, ptrdiff_t h, ptrdiff_t w, float *dst,
                                 ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t pt, ptrdiff_t pl,
                                 float *v) {
#ifdef EDL_POOL_AVX512
    const int wide = edl_x86_level();
#endif
    for (ptrdiff_t o = 0; o < oh; o++) {
        const ptrdiff_t r0 = 2 * o - pt, f = r0 > 0 ? r0 : 0;    /* an in-image row */
        const float *rows[3];
        for (int i = 0; i < 3; i++)
            rows[i] = src + (r0 + i >= 0 && r0 + i < h ? r0 + i : f) * w;
#ifdef EDL_POOL_AVX512
        if (wide == 2) {
            edl_max3x3s2_row_avx512(rows[0], rows[1], rows[2], w, pl, dst + o * ow, ow);
            continue;
        }
        if (wide == 1) {
            edl_max3x3s2_row_avx2(rows[0], rows[1], rows[2], w, pl, dst + o * ow, ow);
            continue;
        }
#endif
        edl_max3x3s2_f(rows[0], rows[1], rows[2], w, v, pl, dst + o * ow, ow);
    }
}
/* A plane's 3x3 stride-2 average (pads pt, pl <= 1, every window with an in-image row and
   column) by edl_avg3x3s2_row_avx2, divisors sc[o] * scw[q]; zero: w zeros (the rows
   outside the image). 1 when it ran (AVX2 or AVX-512), 0: the caller's general path. */
static int edl_avg3x3s2_plane_f(const float *src, ptrdiff_t h, ptrdiff_t w, float *dst,
                                ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t pt, ptrdiff_t pl,
                                const float *sc, const float *scw, const float *zero) {
#ifdef EDL_POOL_AVX512
    if (edl_x86_level() < 1) return 0;
    for (ptrdiff_t o = 0; o < oh; o++) {
        const float *rows[3];
        for (int i = 0; i < 3; i++) {
            const ptrdiff_t r = 2 * o - pt + i;
            rows[i] = r >= 0 && r < h ? src + r * w : zero;
        }
        edl_avg3x3s2_row_avx2(rows[0], rows[1], rows[2], w, pl, dst + o * ow, ow, sc[o], scw);
    }
    return 1;
#else
    (void)src; (void)h; (void)w; (void)dst; (void)oh; (void)ow; (void)pt; (void)pl;
    (void)sc; (void)scw; (void)zero;
    return 0;
#endif
}
EDL_MAX3X3S2(double, d)
/* (an inline function, not a macro: nested macro folds repeat their operands and gcc then
   left the NaN-propagating max scalar) */
#define EDL_OP(M, A, B) _Generic((A), float: edl_pool_op_f, default: edl_pool_op_d)(M, A, B)
#define EDL_AT(P, ST) (P)[q * (ST)]
#define EDL_FOLD_PASSES(T, M, ST)                                                          \
    do {                                                                                  \
        int i = n < 5 ? n : 5;                                                            \
        const T *a = src[0], *b = src[i > 1], *c = src[2 * (i > 2)];                      \
        const T *e = src[3 * (i > 3)], *f = src[4 * (i > 4)];                             \
        ptrdiff_t q;                                                                      \
        switch (i) {                                                                      \
        case 1: for (q = 0; q < len; q++) d[q] = EDL_AT(a, ST); break;                    \
        case 2: for (q = 0; q < len; q++) d[q] = EDL_OP(M, EDL_AT(a, ST), EDL_AT(b, ST)); \
            break;                                                                        \
        case 3: for (q = 0; q < len; q++)                                                 \
                d[q] = EDL_OP(M, EDL_OP(M, EDL_AT(a, ST), EDL_AT(b, ST)), EDL_AT(c, ST)); \
            break;                                                                        \
        case 4: for (q = 0; q < len; q++)                                                 \
                d[q] = EDL_OP(M, EDL_OP(M, EDL_AT(a, ST), EDL_AT(b, ST)),                 \
                              EDL_OP(M, EDL_AT(c, ST), EDL_AT(e, ST)));                   \
            break;                                                                        \
        default: for (q = 0; q < len; q++)                                                \
                d[q] = EDL_OP(M, EDL_OP(M, EDL_OP(M, EDL_AT(a, ST), EDL_AT(b, ST)),       \
                                        EDL_OP(M, EDL_AT(c, ST), EDL_AT(e, ST))),         \
                              EDL_AT(f, ST));                                             \
        }                                                                                 \
        while (i < n) {                                                                   \
            int m = n - i < 4 ? n - i : 4;                                                \
            a = src[i]; b = src[i + (m > 1)]; c = src[i + 2 * (m > 2)];                   \
            e = src[i + 3 * (m > 3)];                                                     \
            switch (m) {                                                                  \
            case 1: for (q = 0; q < len; q++) d[q] = EDL_OP(M, d[q], EDL_AT(a, ST)); break; \
            case 2: for (q = 0; q < len; q++)                                             \
                    d[q] = EDL_OP(M, d[q], EDL_OP(M, EDL_AT(a, ST), EDL_AT(b, ST)));      \
                break;                                                                    \
            case 3: for (q = 0; q < len; q++)                                             \
                    d[q] = EDL_OP(M, EDL_OP(M, d[q], EDL_AT(a, ST)),                      \
                                  EDL_OP(M, EDL_AT(b, ST), EDL_AT(c, ST)));               \
                break;                                                                    \
            default: for (q = 0; q < len; q++)                                            \
                    d[q] = EDL_OP(M, EDL_OP(M, d[q], EDL_OP(M, EDL_AT(a, ST), EDL_AT(b, ST))), \
                                  EDL_OP(M, EDL_AT(c, ST), EDL_AT(e, ST)));               \
            }                                                                             \
            i += m;                                                                       \
        }                                                                                 \
    } while (0)
#define EDL_FOLD(T, S, M)                                                                  \
EDL_SIMD_KERNEL static void edl_fold_##S##M(const T *const *src, int n, ptrdiff_t stride, \
                                            T *restrict d, ptrdiff_t len) {               \
    if (n == 3 && stride <= 2) {    /* 3x3 windows: one short loop (rows of small planes) */ \
        const T *a = src[0], *b = src[1], *c = src[2];                                    \
        if (stride == 1)                                                                  \
            for (ptrdiff_t q = 0; q < len; q++) d[q] = EDL_OP(M, EDL_OP(M, a[q], b[q]), c[q]); \
        else                                                                              \
            for (ptrdiff_t q = 0; q < len; q++)                                           \
                d[q] = EDL_OP(M, EDL_OP(M, a[2 * q], b[2 * q]), c[2 * q]);                \
        return;                                                                           \
    }                                                                                     \
    if (stride == 1) EDL_FOLD_PASSES(T, M, 1);                                            \
    else if (stride == 2) EDL_FOLD_PASSES(T, M, 2);                                       \
    else EDL_FOLD_PASSES(T, M, stride);                                                   \
}
EDL_FOLD(float, f, 0)
EDL_FOLD(float, f, 1)
EDL_FOLD(float, f, 2)
EDL_FOLD(double, d, 0)
EDL_FOLD(double, d, 1)
EDL_FOLD(double, d, 2)
static void edl_fold_f(const float *const *src, int n, ptrdiff_t stride, float *d,
                       ptrdiff_t len, int mode) {
    if (mode == 0) edl_fold_f0(src, n, stride, d, len);
    else if (mode == 1) edl_fold_f1(src, n, stride, d, len);
    else edl_fold_f2(src, n, stride, d, len);
}
static void edl_fold_d(const double *const *src, int n, ptrdiff_t stride, double *d,
                       ptrdiff_t len, int mode) {
    if (mode == 0) edl_fold_d0(src, n, stride, d, len);
    else if (mode == 1) edl_fold_d1(src, n, stride, d, len);
    else edl_fold_d2(src, n, stride, d, len);
}
/* uint8 / int8 max (quantized tensors): v[k] = max(v[k], s[k]), and d[q] = max over
   j < kw of v[q * sw + j * dw] (stride 1 and 2 written out: constant strides vectorise) */
#define EDL_IMAX(T, S)                                                                     \
EDL_SIMD_KERNEL static void edl_imax_row_##S(T *restrict v, const T *restrict s,          \
                                             ptrdiff_t n) {                               \
    for (ptrdiff_t k = 0; k < n; k++) v[k] = s[k] > v[k] ? s[k] : v[k];                   \
}                                                                                         \
EDL_SIMD_KERNEL static void edl_imax_taps_##S(const T *restrict v, ptrdiff_t kw,          \
                                              ptrdiff_t dw, ptrdiff_t sw,                 \
                                              T *restrict d, ptrdiff_t n) {               \
    ptrdiff_t q, j;                                                                       \
    if (sw == 1) {                                                                        \
        for (q = 0; q < n; q++) d[q] = v[q];                                              \
        for (j = 1; j < kw; j++) {                                                        \
            const T *t = v + j * dw;                                                      \
            for (q = 0; q < n; q++) d[q] = t[q] > d[q] ? t[q] : d[q];                     \
        }                                                                                 \
    } else if (sw == 2) {                                                                 \
        for (q = 0; q < n; q++) d[q] = v[2 * q];                                          \
        for (j = 1; j < kw; j++) {                                                        \
            const T *t = v + j * dw;                                                      \
            for (q = 0; q < n; q++) d[q] = t[2 * q] > d[q] ? t[2 * q] : d[q];             \
        }                                                                                 \
    } else {                                                                              \
        for (q = 0; q < n; q++) d[q] = v[q * sw];                                         \
        for (j = 1; j < kw; j++) {                                                        \
            const T *t = v + j * dw;                                                      \
            for (q = 0; q < n; q++) d[q] = t[q * sw] > d[q] ? t[q * sw] : d[q];           \
        }                                                                                 \
    }                                                                                     \
}
EDL_IMAX(uint8_t, u8)
EDL_IMAX(int8_t, s8)
/* One output row of a 3x3 stride-2 uint8 / int8 max pool (FastestDet's stem pool, int8) in
   one call, as edl_max3x3s2 for floats: the max of rows a, b, c (w values; a window row
   outside the image passed as one of its in-image rows) into v + pl, then n outputs of
   taps 2q .. 2q + 2 of v (its cells outside [pl, pl + w) hold the type's minimum). The
   general path's row copy, row folds and three tap passes, a call each, cost 2x here. */
#define EDL_IMAX3S2(T, S)                                                                  \
static inline T edl_imax3_##S(T a, T b, T c) {                                            \
    T m = b > a ? b : a;                                                                  \
    return c > m ? c : m;                                                                 \
}                                                                                         \
static inline T edl_imax2_##S(T a, T b) { return b > a ? b : a; }                         \
/* 2x2 stride 2, no padding, a whole plane (x: rows of w): each output row's two input  \
   rows' max into v (oh rows of 2 ow), then the pairs of all of v in one loop (YuNet's pools \
   on quantized tensors; per output row, the general path's copy, row max and tap passes,  \
   and short rows' scalar tails (GCC's loop left 16 of 80 bytes to one), cost 1.6-3x the  \
   float32 kernel on a quarter of the bytes) */                                           \
EDL_SIMD_KERNEL static void edl_imax2x2_##S(const T *restrict x, ptrdiff_t w, ptrdiff_t oh, \
                                           ptrdiff_t ow, T *restrict v, T *restrict d) {  \
    for (ptrdiff_t o = 0; o < oh; o++) {                                                  \
        const T *a = x + 2 * o * w, *b = a + w;                                           \
        T *vo = v + 2 * o * ow;                                                           \
        if (ow >= 32) EDL_BY64(k, 2 * ow, vo[k] = edl_imax2_##S(a[k], b[k]));             \
        else EDL_BY16(k, 2 * ow, vo[k] = edl_imax2_##S(a[k], b[k]));  /* no scalar tail */ \
    }                                                                                     \
    if (oh * ow >= 64) EDL_BY64(q, oh * ow, d[q] = edl_imax2_##S(v[2 * q], v[2 * q + 1])); \
    else EDL_BY16(q, oh * ow, d[q] = edl_imax2_##S(v[2 * q], v[2 * q + 1]));             \
}                                                                                         \
EDL_SIMD_KERNEL static void edl_imax3s2_##S(const T *restrict a, const T *restrict b,     \
                                            const T *restrict c, ptrdiff_t w,             \
                                            T *restrict v, ptrdiff_t pl, T *restrict d,   \
                                            ptrdiff_t n) {                                \
    T *col = v + pl;                                                                      \
    EDL_BY64(k, w, col[k] = edl_imax3_##S(a[k], b[k], c[k]));                              \
    if (EDL_IMAX_PAIRS && n >= 32) { edl_imax3s2_taps_##S(v, d, n); return; }              \
    EDL_BY64(q, n, d[q] = edl_imax3_##S(v[2 * q], v[2 * q + 1], v[2 * q + 2]));            \
}
/* d[q] = max(v[2q], v[2q + 1], v[2q + 2]) for q < n (n >= 32; reads v[0 .. 2n + 1]), 32
   outputs a step: each 16-bit lane of two loads (at v + 2q and v + 2q + 2) holds a window's
   pair and its next tap in its low byte, so the stride-2 taps are shifts and masks, and the
   lanes narrow back to bytes (vpmovwb on AVX-512BW). gcc's own vectorisation of the byte
   loop above (de-interleaving shuffles) was ~6x slower (rows of 88 outputs). Little-endian
   x86-64 / aarch64 only (EDL_IMAX_PAIRS); the last block moved back to end at n. */
#if (defined(__x86_64__) || defined(__aarch64__)) && defined(__GNUC__) \
    && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define EDL_IMAX_PAIRS 1
#define EDL_IMAX3S2_TAPS(S, W, N8, LO, HI)                                                 \
EDL_SIMD_KERNEL static void edl_imax3s2_taps_##S(const void *restrict v, void *restrict d, \
                                                 ptrdiff_t n) {                           \
    for (ptrdiff_t q = 0;; q += 32) {                                                     \
        if (q > n - 32) q = n - 32;                                                       \
        W x, y;                                                                           \
        memcpy(&x, (const char *)v + 2 * q, 64);                                          \
        memcpy(&y, (const char *)v + 2 * q + 2, 64);                                      \
        W lo = LO(x), hi = HI(x), lo2 = LO(y);                                            \
        W k = (W)(hi > lo), m = (hi & k) | (lo & ~k);    /* max, as masks: C has no ?: */ \
        k = (W)(lo2 > m);                                                                 \
        m = (lo2 & k) | (m & ~k);                                                         \
        N8 r = __builtin_convertvector(m, N8);                                            \
        memcpy((char *)d + q, &r, 32);                                                    \
        if (q == n - 32) break;                                                           \
    }                                                                                     \
}
typedef uint16_t edl_v32u16 __attribute__((vector_size(64)));
typedef int16_t edl_v32s16 __attribute__((vector_size(64)));
typedef uint8_t edl_v32u8 __attribute__((vector_size(32)));
typedef int8_t edl_v32s8 __attribute__((vector_size(32)));
#define EDL_LO_U8(x) ((x) & 0xFF)
#define EDL_HI_U8(x) ((x) >> 8)
#define EDL_LO_S8(x) ((edl_v32s16)((edl_v32u16)(x) << 8) >> 8)   /* sign kept, no signed << */
#define EDL_HI_S8(x) ((x) >> 8)
EDL_IMAX3S2_TAPS(u8, edl_v32u16, edl_v32u8, EDL_LO_U8, EDL_HI_U8)
EDL_IMAX3S2_TAPS(s8, edl_v32s16, edl_v32s8, EDL_LO_S8, EDL_HI_S8)
#else
#define EDL_IMAX_PAIRS 0
static void edl_imax3s2_taps_u8(const void *v, void *d, ptrdiff_t n) { (void)v; (void)d; (void)n; }
static void edl_imax3s2_taps_s8(const void *v, void *d, ptrdiff_t n) { (void)v; (void)d; (void)n; }
#endif
EDL_IMAX3S2(uint8_t, u8)
EDL_IMAX3S2(int8_t, s8)
/* 1 if s[0..n) holds no NaN and no inf (x - x is 0 exactly for finite x): picks mode 1.
   An OR of compares, so the vectorised loop carries no long dependency chain. */
#define EDL_FINITE(T, S)                                                                   \
EDL_SIMD_KERNEL static int edl_finite_##S(const T *s, ptrdiff_t n) {                      \
    int bad = 0;                                                                          \
    for (ptrdiff_t i = 0; i < n; i++) bad |= (s[i] - s[i]) != 0;                          \
    return !bad;                                                                          \
}
EDL_FINITE(float, f)
EDL_FINITE(double, d)

/* NaN-propagating max: a NaN in acc stays (v > NaN is false), a NaN in v enters */
static inline float edl_nanmax_f(float acc, float v) {
    float m = v > acc ? v : acc;
    return v != v ? v : m;
}
/* 3x3 stride-1 pool with one cell of padding on every side, of one small (h, w) plane
   (h >= 2) as flat arrays: c = the column folds (rows above / below the plane are padding:
   the plane's first and last w cells just have one term fewer), then d = (left op centre)
   op right, the left / right terms padding where keep_l / keep_r are 0 (a row's first /
   last column: a select, so a NaN there does not leak across rows); the average times rc
   (1 / divisor of each output). MAX: the NaN-propagating max, padding -inf; else sums,
   padding 0. The same operations in the same order as the general path's vertical and
   horizontal folds. Every pass is one flat loop over the plane: per row, Inception's 14 x 14
   and 7 x 7 maps left most of each row to scalar tails (576 planes of 14 x 14: 1.4x
   onnxruntime's time). v: h * w + 2 cells; keep_l, keep_r (and rc): h * w each. */
#define EDL_POOL3S1_OP(MAX, a, b) ((MAX) ? edl_nanmax_f(a, b) : (a) + (b))
#define EDL_POOL3S1(NAME, MAX)                                                              \
EDL_SIMD_KERNEL static void NAME(const float *restrict x, ptrdiff_t h, ptrdiff_t w,        \
                                 float *restrict v, const int32_t *restrict keep_l,        \
                                 const int32_t *restrict keep_r, const float *restrict rc, \
                                 float *restrict d) {                                      \
    const float pad = MAX ? -INFINITY : 0.0f;                                              \
    ptrdiff_t n = h * w, i;                                                                \
    float *c = v + 1;                   /* v[0] and v[n + 1]: left / right of the ends */  \
    (void)rc;                                                                              \
    v[0] = pad;                                                                            \
    v[n + 1] = pad;                                                                        \
    for (i = 0; i < w; i++) c[i] = EDL_POOL3S1_OP(MAX, x[i], x[i + w]);                    \
    for (i = w; i < n - w; i++)                                                            \
        c[i] = EDL_POOL3S1_OP(MAX, EDL_POOL3S1_OP(MAX, x[i - w], x[i]), x[i + w]);         \
    for (i = n - w; i < n; i++) c[i] = EDL_POOL3S1_OP(MAX, x[i - w], x[i]);                \
    for (i = 0; i < n; i++) {                                                              \
        float l = keep_l[i] ? v[i] : pad, r = keep_r[i] ? v[i + 2] : pad;                  \
        float t = EDL_POOL3S1_OP(MAX, EDL_POOL3S1_OP(MAX, l, c[i]), r);                    \
        d[i] = MAX ? t : t * rc[i];                                                        \
    }                                                                                      \
}
EDL_POOL3S1(edl_avg3x3s1_plane_f, 0)
EDL_POOL3S1(edl_max3x3s1_plane_f, 1)

/* y[p] = the mean of plane p of m floats (GlobalAveragePool), p < planes: two 8-float
 * vector accumulators, their sum added into a double every 256 values (float sums of 16
 * values a lane lose nothing that matters; a whole plane in float would); the last m % 16
 * values from the plane's last 16, the lanes already counted masked off (m >= 16), or a
 * zero-padded copy. All in doubles in Cython's SSE2 code had run at 0.7 cycles a value:
 * SqueezeNet's 1000 x 13 x 13 mean took 74 us to ORT's 26. */
typedef float edl_pool_v8f __attribute__((vector_size(32)));
typedef int32_t edl_pool_v8i __attribute__((vector_size(32)));
static inline float edl_pool_v8_sum(edl_pool_v8f a) {
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
}
EDL_SIMD_KERNEL static void edl_plane_means_f(const float *x, ptrdiff_t planes, ptrdiff_t m,
                                              float *y) {
    const double inv = 1.0 / (double)m;
    const ptrdiff_t m16 = m - m % 16, rest = m - m16;
    edl_pool_v8i keep[2];             /* lanes of the last 16 values not in a whole block */
    for (int v = 0; v < 2; v++)
        for (int k = 0; k < 8; k++) keep[v][k] = 8 * v + k >= 16 - rest ? -1 : 0;
    for (ptrdiff_t p = 0; p < planes; p++, x += m) {
        edl_pool_v8f a0 = {0}, a1 = {0}, t0, t1;
        double acc = 0;
        for (ptrdiff_t i0 = 0; i0 < m16; i0 += 256) {
            const ptrdiff_t i1 = i0 + 256 < m16 ? i0 + 256 : m16;
            for (ptrdiff_t i = i0; i < i1; i += 16) {
                memcpy(&t0, x + i, 32);
                memcpy(&t1, x + i + 8, 32);
                a0 += t0;
                a1 += t1;
            }
            if (i1 < m16) {
                acc += edl_pool_v8_sum(a0 + a1);
                a0 = a1 = (edl_pool_v8f){0};
            }
        }
        if (rest && m >= 16) {
            memcpy(&t0, x + m - 16, 32);
            memcpy(&t1, x + m - 8, 32);
            a0 += (edl_pool_v8f)((edl_pool_v8i)t0 & keep[0]);
            a1 += (edl_pool_v8f)((edl_pool_v8i)t1 & keep[1]);
        } else if (rest) {
            float pad[16] = {0};
            for (ptrdiff_t k = 0; k < rest; k++) pad[k] = x[k];
            memcpy(&t0, pad, 32);
            memcpy(&t1, pad + 8, 32);
            a0 += t0;
            a1 += t1;
        }
        acc += edl_pool_v8_sum(a0 + a1);
        y[p] = (float)(acc * inv);
    }
}

#endif
