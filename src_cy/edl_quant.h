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
#include <string.h>
#include "edl_im2col.h"

#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__) && defined(__GNUC__) \
    && !defined(__clang__) && __GNUC__ >= 11 && !defined(EDL_NO_CLONES)
#define EDL_Q_KERNEL __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EDL_Q_KERNEL
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(EDL_NO_CLONES)
#define EDL_QGEMM_AVX2 1
#include <immintrin.h>
#include <stdlib.h>
#if defined(__linux__) && __GNUC__ >= 11
#define EDL_QGEMM_AMX 1
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <string.h>

/* Store a 4 x 16 int32 tile held as 8 AVX2 vectors (row r: c<r>0, c<r>1) at r0, rows lda apart. */
#define EDL_STORE_4X16(r0, lda, c00, c01, c10, c11, c20, c21, c30, c31) do {               \
    _mm256_storeu_si256((__m256i *)(r0), (c00));                                            \
    _mm256_storeu_si256((__m256i *)((r0) + 8), (c01));                                      \
    _mm256_storeu_si256((__m256i *)((r0) + (lda)), (c10));                                  \
    _mm256_storeu_si256((__m256i *)((r0) + (lda) + 8), (c11));                              \
    _mm256_storeu_si256((__m256i *)((r0) + 2 * (lda)), (c20));                              \
    _mm256_storeu_si256((__m256i *)((r0) + 2 * (lda) + 8), (c21));                          \
    _mm256_storeu_si256((__m256i *)((r0) + 3 * (lda)), (c30));                              \
    _mm256_storeu_si256((__m256i *)((r0) + 3 * (lda) + 8), (c31));                          \
} while (0)

/* The pair loop of edl_qgemm_pairs with AVX2's vpmaddwd (gcc's vectoriser widens with
   vpmullw / vpmulhw / shuffles instead), or AVX-VNNI's vpdpwssd (the same multiply-add
   pairs, accumulated in one instruction): 4 rows x 16 columns of int32 accumulators, one
   broadcast pair of a per row and two loads of b per step. Columns past the last multiple
   of 16 are left to the caller. Run only where the CPU has the extension (checked below). */
#define EDL_QGEMM_X86(NAME, TARGET, DOT)                                                     \
__attribute__((target(TARGET))) static ptrdiff_t NAME(                                       \
        const int16_t *restrict a, const int16_t *restrict bp, int32_t *restrict acc,        \
        ptrdiff_t lda, ptrdiff_t m, ptrdiff_t kp2, ptrdiff_t nq) {                           \
    const ptrdiff_t ka = 2 * kp2, nv = nq & ~(ptrdiff_t)15;                                 \
    for (ptrdiff_t i = 0; i + 4 <= m; i += 4) {                                             \
        const int16_t *a0 = a + i * ka;                                                     \
        for (ptrdiff_t q = 0; q < nv; q += 16) {                                            \
            __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;          \
            __m256i c20 = c00, c21 = c00, c30 = c00, c31 = c00;                             \
            for (ptrdiff_t p = 0; p < kp2; p++) {                                           \
                const int16_t *b = bp + p * 2 * nq + 2 * q;                                 \
                const __m256i b0 = _mm256_loadu_si256((const __m256i *)b);                  \
                const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + 16));           \
                int32_t w[4];                                                               \
                for (int r = 0; r < 4; r++) memcpy(&w[r], a0 + r * ka + 2 * p, 4);          \
                const __m256i w0 = _mm256_set1_epi32(w[0]), w1 = _mm256_set1_epi32(w[1]);   \
                const __m256i w2 = _mm256_set1_epi32(w[2]), w3 = _mm256_set1_epi32(w[3]);   \
                c00 = DOT(c00, b0, w0); c01 = DOT(c01, b1, w0);                             \
                c10 = DOT(c10, b0, w1); c11 = DOT(c11, b1, w1);                             \
                c20 = DOT(c20, b0, w2); c21 = DOT(c21, b1, w2);                             \
                c30 = DOT(c30, b0, w3); c31 = DOT(c31, b1, w3);                             \
            }                                                                               \
            int32_t *r0 = acc + i * lda + q;                                                \
            EDL_STORE_4X16(r0, lda, c00, c01, c10, c11, c20, c21, c30, c31);                \
        }                                                                                   \
    }                                                                                       \
    return nv;                                                                              \
}
#define EDL_DOT_AVX2(c, b, w) _mm256_add_epi32((c), _mm256_madd_epi16((b), (w)))
EDL_QGEMM_X86(edl_qgemm_pairs_avx2, "avx2", EDL_DOT_AVX2)
#if __GNUC__ >= 11
#define EDL_QGEMM_VNNI 1
EDL_QGEMM_X86(edl_qgemm_pairs_vnni, "avx2,avxvnni", _mm256_dpwssd_avx_epi32)
#endif

/* u8 x s8 GEMM on VNNI's vpdpbusd: each int32 lane sums 4 products of an unsigned byte of b
   and a signed byte of a (exact: no int16 step, unlike pmaddubsw), so b needs no widening
   and each instruction does twice the pairs kernel's work. a: m rows of 4 * kq int8; bq: b
   packed as [p][q][4] (the 4 k values of column q side by side), nq a multiple of 16.
   acc[i][q] (row stride lda) = sum over k of a[i][k] * b[k][q]; 4 rows x 16 columns per
   block, one row at a time for the last m % 4. */
#define EDL_QGEMM_U8S8(NAME, TARGET, DOT)                                                    \
__attribute__((target(TARGET))) static void NAME(                                            \
        const int8_t *restrict a, const uint8_t *restrict bq, int32_t *restrict acc,         \
        ptrdiff_t lda, ptrdiff_t m, ptrdiff_t kq, ptrdiff_t nq) {                            \
    const ptrdiff_t ka = 4 * kq;                                                            \
    ptrdiff_t i = 0;                                                                        \
    for (; i + 4 <= m; i += 4) {                                                            \
        const int8_t *a0 = a + i * ka;                                                      \
        for (ptrdiff_t q = 0; q < nq; q += 16) {                                            \
            __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;          \
            __m256i c20 = c00, c21 = c00, c30 = c00, c31 = c00;                             \
            for (ptrdiff_t p = 0; p < kq; p++) {                                            \
                const uint8_t *b = bq + p * 4 * nq + 4 * q;                                 \
                const __m256i b0 = _mm256_loadu_si256((const __m256i *)b);                  \
                const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + 32));           \
                int32_t w[4];                                                               \
                for (int r = 0; r < 4; r++) memcpy(&w[r], a0 + r * ka + 4 * p, 4);          \
                const __m256i w0 = _mm256_set1_epi32(w[0]), w1 = _mm256_set1_epi32(w[1]);   \
                const __m256i w2 = _mm256_set1_epi32(w[2]), w3 = _mm256_set1_epi32(w[3]);   \
                c00 = DOT(c00, b0, w0); c01 = DOT(c01, b1, w0);                             \
                c10 = DOT(c10, b0, w1); c11 = DOT(c11, b1, w1);                             \
                c20 = DOT(c20, b0, w2); c21 = DOT(c21, b1, w2);                             \
                c30 = DOT(c30, b0, w3); c31 = DOT(c31, b1, w3);                             \
            }                                                                               \
            int32_t *r0 = acc + i * lda + q;                                                \
            EDL_STORE_4X16(r0, lda, c00, c01, c10, c11, c20, c21, c30, c31);                \
        }                                                                                   \
    }                                                                                       \
    for (; i < m; i++) {                                                                    \
        const int8_t *a0 = a + i * ka;                                                      \
        for (ptrdiff_t q = 0; q < nq; q += 16) {                                            \
            __m256i c0 = _mm256_setzero_si256(), c1 = c0;                                   \
            for (ptrdiff_t p = 0; p < kq; p++) {                                            \
                const uint8_t *b = bq + p * 4 * nq + 4 * q;                                 \
                int32_t w;                                                                  \
                memcpy(&w, a0 + 4 * p, 4);                                                  \
                const __m256i w0 = _mm256_set1_epi32(w);                                    \
                c0 = DOT(c0, _mm256_loadu_si256((const __m256i *)b), w0);                   \
                c1 = DOT(c1, _mm256_loadu_si256((const __m256i *)(b + 32)), w0);            \
            }                                                                               \
            _mm256_storeu_si256((__m256i *)(acc + i * lda + q), c0);                        \
            _mm256_storeu_si256((__m256i *)(acc + i * lda + q + 8), c1);                    \
        }                                                                                   \
    }                                                                                       \
}
EDL_QGEMM_U8S8(edl_qgemm_u8s8_avx512, "avx2,avx512f,avx512vl,avx512bw,avx512vnni",
               _mm256_dpbusd_epi32)

/* The same with 512-bit vectors where AVX-512 VNNI is there: 4 rows x 32 columns per block
   (nq a multiple of 32), twice the products per instruction. */
__attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512vnni"))) static void
edl_qgemm_u8s8_avx512zmm(const int8_t *restrict a, const uint8_t *restrict bq,
                         int32_t *restrict acc, ptrdiff_t lda, ptrdiff_t m, ptrdiff_t kq,
                         ptrdiff_t nq) {
    const ptrdiff_t ka = 4 * kq;
    ptrdiff_t i = 0;
    /* 8 rows at once where there are: 16 independent dot chains (4 rows' 8 left the dot
       units waiting on vpdpbusd latency) and half the loads of b per product */
    for (; i + 8 <= m; i += 8) {
        const int8_t *a0 = a + i * ka;
        for (ptrdiff_t q = 0; q < nq; q += 32) {
            __m512i c[8][2];
            for (int r = 0; r < 8; r++) c[r][0] = c[r][1] = _mm512_setzero_si512();
            for (ptrdiff_t p = 0; p < kq; p++) {
                const uint8_t *b = bq + p * 4 * nq + 4 * q;
                const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64);
                for (int r = 0; r < 8; r++) {
                    int32_t w;
                    memcpy(&w, a0 + r * ka + 4 * p, 4);
                    const __m512i wv = _mm512_set1_epi32(w);
                    c[r][0] = _mm512_dpbusd_epi32(c[r][0], b0, wv);
                    c[r][1] = _mm512_dpbusd_epi32(c[r][1], b1, wv);
                }
            }
            for (int r = 0; r < 8; r++) {
                _mm512_storeu_si512(acc + (i + r) * lda + q, c[r][0]);
                _mm512_storeu_si512(acc + (i + r) * lda + q + 16, c[r][1]);
            }
        }
    }
    for (; i + 4 <= m; i += 4) {
        const int8_t *a0 = a + i * ka;
        for (ptrdiff_t q = 0; q < nq; q += 32) {
            __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00;
            __m512i c20 = c00, c21 = c00, c30 = c00, c31 = c00;
            for (ptrdiff_t p = 0; p < kq; p++) {
                const uint8_t *b = bq + p * 4 * nq + 4 * q;
                const __m512i b0 = _mm512_loadu_si512(b), b1 = _mm512_loadu_si512(b + 64);
                int32_t w[4];
                for (int r = 0; r < 4; r++) memcpy(&w[r], a0 + r * ka + 4 * p, 4);
                const __m512i w0 = _mm512_set1_epi32(w[0]), w1 = _mm512_set1_epi32(w[1]);
                const __m512i w2 = _mm512_set1_epi32(w[2]), w3 = _mm512_set1_epi32(w[3]);
                c00 = _mm512_dpbusd_epi32(c00, b0, w0); c01 = _mm512_dpbusd_epi32(c01, b1, w0);
                c10 = _mm512_dpbusd_epi32(c10, b0, w1); c11 = _mm512_dpbusd_epi32(c11, b1, w1);
                c20 = _mm512_dpbusd_epi32(c20, b0, w2); c21 = _mm512_dpbusd_epi32(c21, b1, w2);
                c30 = _mm512_dpbusd_epi32(c30, b0, w3); c31 = _mm512_dpbusd_epi32(c31, b1, w3);
            }
            int32_t *r0 = acc + i * lda + q;
            _mm512_storeu_si512(r0, c00);
            _mm512_storeu_si512(r0 + 16, c01);
            _mm512_storeu_si512(r0 + lda, c10);
            _mm512_storeu_si512(r0 + lda + 16, c11);
            _mm512_storeu_si512(r0 + 2 * lda, c20);
            _mm512_storeu_si512(r0 + 2 * lda + 16, c21);
            _mm512_storeu_si512(r0 + 3 * lda, c30);
            _mm512_storeu_si512(r0 + 3 * lda + 16, c31);
        }
    }
    for (; i < m; i++) {
        const int8_t *a0 = a + i * ka;
        for (ptrdiff_t q = 0; q < nq; q += 32) {
            __m512i c0 = _mm512_setzero_si512(), c1 = c0;
            for (ptrdiff_t p = 0; p < kq; p++) {
                const uint8_t *b = bq + p * 4 * nq + 4 * q;
                int32_t w;
                memcpy(&w, a0 + 4 * p, 4);
                const __m512i w0 = _mm512_set1_epi32(w);
                c0 = _mm512_dpbusd_epi32(c0, _mm512_loadu_si512(b), w0);
                c1 = _mm512_dpbusd_epi32(c1, _mm512_loadu_si512(b + 64), w0);
            }
            _mm512_storeu_si512(acc + i * lda + q, c0);
            _mm512_storeu_si512(acc + i * lda + q + 16, c1);
        }
    }
}
#if __GNUC__ >= 11
EDL_QGEMM_U8S8(edl_qgemm_u8s8_avxvnni, "avx2,avxvnni", _mm256_dpbusd_avx_epi32)
#endif

/* b rows k0 .. k0 + 3 (fewer at the end of k: zeros), columns [0, nq) of row stride ldb ->
   d[q][4] for q < nq16 (zeros past nq): one step of the u8s8 GEMM's packed b. SSE2 byte and
   word interleaves, 16 columns at a time. */
static void edl_qpack4_u8(const uint8_t *restrict b, ptrdiff_t ldb, ptrdiff_t rows,
                          ptrdiff_t nq, ptrdiff_t nq16, uint8_t *restrict d) {
    const uint8_t *r[4];
    for (int t = 0; t < 4; t++) r[t] = t < rows ? b + t * ldb : NULL;
    ptrdiff_t q = 0;
    for (; q + 16 <= nq; q += 16) {
        const __m128i x0 = _mm_loadu_si128((const __m128i *)(r[0] + q));
        const __m128i x1 = r[1] ? _mm_loadu_si128((const __m128i *)(r[1] + q))
                                : _mm_setzero_si128();
        const __m128i x2 = r[2] ? _mm_loadu_si128((const __m128i *)(r[2] + q))
                                : _mm_setzero_si128();
        const __m128i x3 = r[3] ? _mm_loadu_si128((const __m128i *)(r[3] + q))
                                : _mm_setzero_si128();
        const __m128i lo01 = _mm_unpacklo_epi8(x0, x1), hi01 = _mm_unpackhi_epi8(x0, x1);
        const __m128i lo23 = _mm_unpacklo_epi8(x2, x3), hi23 = _mm_unpackhi_epi8(x2, x3);
        _mm_storeu_si128((__m128i *)(d + 4 * q), _mm_unpacklo_epi16(lo01, lo23));
        _mm_storeu_si128((__m128i *)(d + 4 * q + 16), _mm_unpackhi_epi16(lo01, lo23));
        _mm_storeu_si128((__m128i *)(d + 4 * q + 32), _mm_unpacklo_epi16(hi01, hi23));
        _mm_storeu_si128((__m128i *)(d + 4 * q + 48), _mm_unpackhi_epi16(hi01, hi23));
    }
    for (; q < nq; q++)
        for (int t = 0; t < 4; t++) d[4 * q + t] = r[t] ? r[t][q] : 0;
    if (nq16 > q) memset(d + 4 * q, 0, (size_t)(4 * (nq16 - q)));   /* the padding columns */
}

/* 0: no u8s8 kernel, 1: AVX-VNNI, 2: AVX-512 VNNI (256-bit vectors); EDGEDL_INT8_ISA=avx2 or
   c turns it off (the int16 pairs path runs instead). */
static int edl_q_u8s8(void) {
    static int isa = -1;
    if (isa < 0) {
        const char *force = getenv("EDGEDL_INT8_ISA");
        isa = 0;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512vnni")
                && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw"))
            isa = 2;
#if __GNUC__ >= 11
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni"))
            isa = 1;
#endif
        if (force && (strcmp(force, "avx2") == 0 || strcmp(force, "c") == 0)) isa = 0;
    }
    return isa;
}

/* Columns the packed b of edl_qgemm_u8s8 is padded to (and nq's multiple there). */
static ptrdiff_t edl_q_u8s8_cols(void) { return edl_q_u8s8() == 2 ? 32 : 16; }

#if defined(EDL_QGEMM_AMX)
/* AMX (Sapphire Rapids and later Xeons): tdpbsud multiplies a 16 x 64 int8 tile of a (16
   rows, 64 k) by a 16 x 64 uint8 tile of b in exactly the packed layout above (16 groups of
   4 k, 16 columns of 4 bytes) into a 16 x 16 int32 tile: 16 K products in one instruction
   (~16 cycles), 16 times vpdpbusd's 512-bit rate. Linux hands out the tile state only on
   request (arch_prctl ARCH_REQ_XCOMP_PERM): 1 where that was granted and the CPU has
   AMX-INT8 (CPUID 7.0 EDX bits 24, 25); EDGEDL_INT8_ISA set to anything turns it off
   (avx512: the VNNI kernels alone, to compare). */
static int edl_q_amx(void) {
    static int ok = -1;
    if (ok < 0) {
        unsigned int ea, eb, ec, ed;
        const char *force = getenv("EDGEDL_INT8_ISA");
        ok = 0;
        if (!(force && *force) && edl_q_u8s8() == 2 && __get_cpuid_count(7, 0, &ea, &eb, &ec, &ed)
                && (ed >> 24 & 1) && (ed >> 25 & 1))
            ok = syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */,
                         18 /* XFEATURE_XTILEDATA */) == 0;
    }
    return ok;
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} edl_amx_cfg;

/* Tiles 0-3: int32 sums (16 x 16); 4, 5: a (16 rows x kt groups of 4 bytes); 6, 7: b (kt
   rows of 16 columns x 4 bytes). Loading a configuration zeroes every tile. */
__attribute__((target("amx-tile"))) static void edl_amx_config_vnni(ptrdiff_t kt) {
    edl_amx_cfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) { c.rows[t] = 16; c.colsb[t] = 64; }
    c.colsb[4] = c.colsb[5] = (uint16_t)(4 * kt);
    c.rows[6] = c.rows[7] = (uint8_t)kt;
    _tile_loadconfig(&c);
}

/* One block of 16 or 32 rows (m2) x 16 or 32 columns (n2) at (m0, n0): the sums start from
   acc (load: a K tail was written there first) or 0, take the k groups [0, kf) and go back
   to acc. Tile numbers must be constants, hence the branches. */
__attribute__((target("amx-tile,amx-int8"))) static void edl_amx_block_vnni(
        const int8_t *a, const uint8_t *bq, int32_t *acc, ptrdiff_t lda, ptrdiff_t ka,
        ptrdiff_t sb, ptrdiff_t kf, ptrdiff_t m0, ptrdiff_t n0, int m2, int n2, int load) {
    int32_t *c0 = acc + m0 * lda + n0, *c2 = c0 + 16 * lda;
    const ptrdiff_t ldc = 4 * lda;
    if (load) {
        _tile_loadd(0, c0, ldc);
        if (n2) _tile_loadd(1, c0 + 16, ldc);
        if (m2) _tile_loadd(2, c2, ldc);
        if (m2 && n2) _tile_loadd(3, c2 + 16, ldc);
    } else {
        _tile_zero(0); _tile_zero(1); _tile_zero(2); _tile_zero(3);
    }
    for (ptrdiff_t p = 0; p < kf; p += 16) {
        const int8_t *ap = a + m0 * ka + 4 * p;
        const uint8_t *bp = bq + p * sb + 4 * n0;
        _tile_loadd(4, ap, ka);
        _tile_loadd(6, bp, sb);
        _tile_dpbsud(0, 4, 6);
        if (n2) { _tile_loadd(7, bp + 64, sb); _tile_dpbsud(1, 4, 7); }
        if (m2) {
            _tile_loadd(5, ap + 16 * ka, ka);
            _tile_dpbsud(2, 5, 6);
            if (n2) _tile_dpbsud(3, 5, 7);
        }
    }
    _tile_stored(0, c0, ldc);
    if (n2) _tile_stored(1, c0 + 16, ldc);
    if (m2) _tile_stored(2, c2, ldc);
    if (m2 && n2) _tile_stored(3, c2 + 16, ldc);
}

/* acc rows [0, m16) (a multiple of 16) = a @ b for kq >= 16 groups and nq a multiple of 16:
   the last kq % 16 groups first (their own configuration), then the whole groups of 16 on
   top, in blocks of 32 x 32. */
__attribute__((target("amx-tile,amx-int8"))) static void edl_qgemm_u8s8_amx_vnni(
        const int8_t *a, const uint8_t *bq, int32_t *acc, ptrdiff_t lda, ptrdiff_t m16,
        ptrdiff_t kq, ptrdiff_t nq) {
    const ptrdiff_t ka = 4 * kq, sb = 4 * nq, kf = kq / 16 * 16, kt = kq - kf;
    if (kt) {
        edl_amx_config_vnni(kt);
        for (ptrdiff_t m0 = 0; m0 < m16; m0 += 16)
            for (ptrdiff_t n0 = 0; n0 < nq; n0 += 16) {
                _tile_zero(0);
                _tile_loadd(4, a + m0 * ka + 4 * kf, ka);
                _tile_loadd(6, bq + kf * sb + 4 * n0, sb);
                _tile_dpbsud(0, 4, 6);
                _tile_stored(0, acc + m0 * lda + n0, 4 * lda);
            }
    }
    edl_amx_config_vnni(16);
    for (ptrdiff_t m0 = 0; m0 < m16; m0 += 32)
        for (ptrdiff_t n0 = 0; n0 < nq; n0 += 32)
            edl_amx_block_vnni(a, bq, acc, lda, ka, sb, kf, m0, n0, m0 + 32 <= m16,
                               n0 + 32 <= nq, kt != 0);
    _tile_release();
}
#endif

static void edl_qgemm_u8s8(const int8_t *restrict a, const uint8_t *restrict bq,
                           int32_t *restrict acc, ptrdiff_t lda, ptrdiff_t m, ptrdiff_t kq,
                           ptrdiff_t nq) {
#if __GNUC__ >= 11
    if (edl_q_u8s8() == 1) { edl_qgemm_u8s8_avxvnni(a, bq, acc, lda, m, kq, nq); return; }
#endif
#if defined(EDL_QGEMM_AMX)
    if (m >= 16 && kq >= 16 && nq % 16 == 0 && edl_q_amx()) {
        const ptrdiff_t m16 = m / 16 * 16;
        edl_qgemm_u8s8_amx_vnni(a, bq, acc, lda, m16, kq, nq);
        if (m16 == m) return;
        a += m16 * 4 * kq;
        acc += m16 * lda;
        m -= m16;
    }
#endif
    if (nq % 32 == 0) edl_qgemm_u8s8_avx512zmm(a, bq, acc, lda, m, kq, nq);
    else edl_qgemm_u8s8_avx512(a, bq, acc, lda, m, kq, nq);
}

/* 0: neither, 1: AVX2, 2: AVX2 + AVX-VNNI; EDGEDL_INT8_ISA=avx2 forces the AVX2 path (to
   measure it on a VNNI machine), =c the plain C loop. */
static int edl_q_isa(void) {
    static int isa = -1;
    if (isa < 0) {
        const char *force = getenv("EDGEDL_INT8_ISA");
        isa = __builtin_cpu_supports("avx2") ? 1 : 0;
#ifdef EDL_QGEMM_VNNI
        if (isa && __builtin_cpu_supports("avxvnni")) isa = 2;
#endif
        if (force && strcmp(force, "avx2") == 0 && isa > 1) isa = 1;
        if (force && strcmp(force, "c") == 0) isa = 0;
    }
    return isa;
}
#endif

#ifdef EDL_QGEMM_AVX2
/* out[i] = t[x[i]] for a 256-byte table, 64 bytes per step: vpermi2b looks up the low 7 bits
   in t[0:128] and in t[128:256], the top bit picks between the two (AVX-512 VBMI). */
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void edl_lookup_avx512vbmi(
        const uint8_t *x, const uint8_t *restrict t, uint8_t *out, ptrdiff_t n) {
    const __m512i t0 = _mm512_loadu_si512(t), t1 = _mm512_loadu_si512(t + 64);
    const __m512i t2 = _mm512_loadu_si512(t + 128), t3 = _mm512_loadu_si512(t + 192);
    for (ptrdiff_t i = 0; i < n; i += 64) {
        const __mmask64 live = n - i >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (n - i)) - 1;
        const __m512i v = _mm512_maskz_loadu_epi8(live, x + i);
        const __m512i lo = _mm512_permutex2var_epi8(t0, v, t1);
        const __m512i hi = _mm512_permutex2var_epi8(t2, v, t3);
        _mm512_mask_storeu_epi8(out + i, live,
                                _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi));
    }
}

/* Any kh x kw stride-1 depthwise run on vpdpbusd (YuNet's and FastestDet's 5x5s): each kernel
   row's taps in groups of 4 (the last zero-padded), a group one shuffle of a 16-byte load at
   x_r + q + 4g into 8 outputs' 4-byte windows and one dot; rows wp apart. kw <= 16, kh <= 16.
   Returns how many outputs it wrote (a multiple of 8); reads up to 4 * ceil(kw / 4) + 11
   bytes past x + (kh - 1) * wp + n. */
/* 8 outputs' 4-byte windows of the 16 bytes at p (the shuffle `sh` below) */
#define EDL_QDWK_WIN(p, sh)                                                                  \
    _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(p))), (sh))
#define EDL_QDWK_VNNI(NAME, TARGET, DOT)                                                     \
__attribute__((target(TARGET), always_inline)) static inline ptrdiff_t NAME##_body(          \
        const uint8_t *restrict x, ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw,                 \
        const int32_t *restrict w, int32_t corr, int32_t *restrict d, ptrdiff_t n) {         \
    const __m256i sh = _mm256_setr_epi8(0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6,     \
                                        4, 5, 6, 7, 5, 6, 7, 8, 6, 7, 8, 9, 7, 8, 9, 10);   \
    const ptrdiff_t ng = (kw + 3) / 4;                                                      \
    __m256i wg[64];                                /* kh * ng <= 16 * 4 weight groups */     \
    for (ptrdiff_t r = 0; r < kh; r++)                                                      \
        for (ptrdiff_t g = 0; g < ng; g++) {                                                \
            uint32_t v = 0;                                                                 \
            for (ptrdiff_t j = 0; j < 4 && 4 * g + j < kw; j++)                             \
                v |= (uint32_t)(uint8_t)w[r * kw + 4 * g + j] << (8 * j);                   \
            wg[r * ng + g] = _mm256_set1_epi32((int32_t)v);                                 \
        }                                                                                   \
    const __m256i c = _mm256_set1_epi32(-corr);                                             \
    ptrdiff_t q = 0;                                                                        \
    /* four groups of 8 outputs at once: each group's dots form one dependent chain (kh * ng \
       long, ~5 cycles a link), four chains keep the dot units busy (5x5: 1.9x faster) */  \
    for (; q + 32 <= n; q += 32) {                                                          \
        __m256i a0 = c, a1 = c, a2 = c, a3 = c;                                             \
        for (ptrdiff_t r = 0; r < kh; r++)                                                  \
            for (ptrdiff_t g = 0; g < ng; g++) {                                            \
                const uint8_t *p = x + r * wp + q + 4 * g;                                  \
                const __m256i wv = wg[r * ng + g];                                          \
                a0 = DOT(a0, EDL_QDWK_WIN(p, sh), wv);                                      \
                a1 = DOT(a1, EDL_QDWK_WIN(p + 8, sh), wv);                                  \
                a2 = DOT(a2, EDL_QDWK_WIN(p + 16, sh), wv);                                 \
                a3 = DOT(a3, EDL_QDWK_WIN(p + 24, sh), wv);                                 \
            }                                                                               \
        _mm256_storeu_si256((__m256i *)(d + q), a0);                                        \
        _mm256_storeu_si256((__m256i *)(d + q + 8), a1);                                    \
        _mm256_storeu_si256((__m256i *)(d + q + 16), a2);                                   \
        _mm256_storeu_si256((__m256i *)(d + q + 24), a3);                                   \
    }                                                                                       \
    for (; q + 8 <= n; q += 8) {                                                            \
        __m256i a = c;                                                                      \
        for (ptrdiff_t r = 0; r < kh; r++)                                                  \
            for (ptrdiff_t g = 0; g < ng; g++)                                              \
                a = DOT(a, EDL_QDWK_WIN(x + r * wp + q + 4 * g, sh), wg[r * ng + g]);       \
        _mm256_storeu_si256((__m256i *)(d + q), a);                                         \
    }                                                                                       \
    return q;                                                                               \
}                                                                                           \
__attribute__((target(TARGET))) static ptrdiff_t NAME(                                       \
        const uint8_t *restrict x, ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw,                 \
        const int32_t *restrict w, int32_t corr, int32_t *restrict d, ptrdiff_t n) {         \
    return NAME##_body(x, wp, kh, kw, w, corr, d, n);                                       \
}                                                                                           \
/* the 3x3 case with its sizes known (unrolled: one dot a kernel row) */                    \
__attribute__((target(TARGET))) static ptrdiff_t NAME##3(                                    \
        const uint8_t *restrict x, ptrdiff_t wp, const int32_t *restrict w, int32_t corr,    \
        int32_t *restrict d, ptrdiff_t n) {                                                  \
    return NAME##_body(x, wp, 3, 3, w, corr, d, n);                                         \
}
EDL_QDWK_VNNI(edl_qdwk_vnni512, "avx2,avx512f,avx512vl,avx512bw,avx512vnni", _mm256_dpbusd_epi32)
#if __GNUC__ >= 11
EDL_QDWK_VNNI(edl_qdwk_avxvnni, "avx2,avxvnni", _mm256_dpbusd_avx_epi32)
#endif
/* vpdpbusd on plain AVX2, exact: the even and the odd bytes of each 4-byte group as 16-bit
   lanes (x zero-extended, w sign-extended), two vpmaddwd (pairs of u8 x s8 products, at most
   2 * 255 * 128 in magnitude: no saturation, unlike vpmaddubsw), two adds. 7 operations for
   32 products where the C loop's vpmovzxbd / vpmulld / vpaddd per tap took ~16; the weights'
   split is hoisted out of the loops that reuse them. */
__attribute__((target("avx2"), always_inline)) static inline __m256i edl_dpbusd_avx2(
        __m256i acc, __m256i x, __m256i w) {
    const __m256i xe = _mm256_and_si256(x, _mm256_set1_epi16(0x00FF));
    const __m256i xo = _mm256_srli_epi16(x, 8);
    const __m256i we = _mm256_srai_epi16(_mm256_slli_epi16(w, 8), 8);
    const __m256i wo = _mm256_srai_epi16(w, 8);
    return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(xe, we),
                                                  _mm256_madd_epi16(xo, wo)));
}
EDL_QDWK_VNNI(edl_qdwk_avx2, "avx2", edl_dpbusd_avx2)

/* 3x3 depthwise rows at stride 2 on vpdpbusd (as edl_qdwk_vnni*, one dot a kernel row of 3 int8
   weights and a 0): output q's window starts at x[2q]; each 128-bit lane holds 4 outputs'
   windows, from 16 bytes at x + 2q (lane 0) and x + 2q + 8 (lane 1). Reads up to 7 bytes past
   x_r + 2n + 1. */
#define EDL_QDW3S2_VNNI(NAME, TARGET, DOT)                                                   \
__attribute__((target(TARGET))) static ptrdiff_t NAME(                                       \
        const uint8_t *restrict x0, const uint8_t *restrict x1, const uint8_t *restrict x2, \
        const int32_t *restrict w, int32_t corr, int32_t *restrict d, ptrdiff_t n) {         \
    const __m256i sh = _mm256_setr_epi8(0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9,     \
                                        0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9);    \
    const uint8_t *xr[3] = {x0, x1, x2};                                                    \
    __m256i wr[3];                                                                          \
    for (int r = 0; r < 3; r++)                                                             \
        wr[r] = _mm256_set1_epi32((int32_t)((uint32_t)(uint8_t)w[3 * r]                     \
                                            | (uint32_t)(uint8_t)w[3 * r + 1] << 8          \
                                            | (uint32_t)(uint8_t)w[3 * r + 2] << 16));      \
    const __m256i c = _mm256_set1_epi32(-corr);                                             \
    ptrdiff_t q = 0;                                                                        \
    for (; q + 8 <= n; q += 8) {                                                            \
        __m256i a = c;                                                                      \
        for (int r = 0; r < 3; r++) {                                                       \
            const __m256i v = _mm256_loadu2_m128i((const __m128i *)(xr[r] + 2 * q + 8),     \
                                                  (const __m128i *)(xr[r] + 2 * q));        \
            a = DOT(a, _mm256_shuffle_epi8(v, sh), wr[r]);                                  \
        }                                                                                   \
        _mm256_storeu_si256((__m256i *)(d + q), a);                                         \
    }                                                                                       \
    return q;                                                                               \
}
EDL_QDW3S2_VNNI(edl_qdw3s2_vnni512, "avx2,avx512f,avx512vl,avx512bw,avx512vnni",
                _mm256_dpbusd_epi32)
#if __GNUC__ >= 11
EDL_QDW3S2_VNNI(edl_qdw3s2_avxvnni, "avx2,avxvnni", _mm256_dpbusd_avx_epi32)
#endif
EDL_QDW3S2_VNNI(edl_qdw3s2_avx2, "avx2", edl_dpbusd_avx2)

/* A whole depthwise plane on AVX-512 VNNI with its requantization fused: no int32 plane is
   written and read back, and no row is left to a scalar tail (the separate requantization
   pass was 38% of a 48x22x22 stride-2 conv, its 22-value rows too short for its vector loop).
   out[oy][ox] (row pitch ow) = requant(sum of w[i][j] * x[(oy sh + i) wp + ox sw + j] - corr)
   with EDL_REQUANT's steps in vector form: vcvtps2dq rounds half to even in the default
   rounding mode as the EDL_RND trick does, and the values are in range before the narrowing
   (a truncation, whatever the output type).
   x: the plane padded with the zero point, row pitch wp, 64 readable bytes past its end (the
   last block of a row computes 8 outputs and stores the live ones). Taps as edl_qdwk_vnni*:
   groups of 4 along the kernel row, one dot a group; at column stride 2 each 128-bit lane
   holds 4 outputs' windows, from 16 bytes at x + 2q (+ 8 for the upper lane). */
#define EDL_RQ_TARGET "avx2,avx512f,avx512vl,avx512bw,avx512vnni"
__attribute__((target(EDL_RQ_TARGET), always_inline)) static inline __m128i edl_rq8_bytes(
        __m256i a, __m256 s, __m256 flo, __m256 fhi, __m256i z) {
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(a), s);     /* a: the bias included */
    v = _mm256_min_ps(_mm256_max_ps(v, flo), fhi);
    /* in [lo, hi] now: the truncating narrowing serves both types */
    return _mm256_cvtepi32_epi8(_mm256_add_epi32(_mm256_cvtps_epi32(v), z));
}
/* 8 outputs' windows of group g's taps (column stride SW) starting at p */
#define EDL_QDWP_WIN(p, SW, sh)                                                              \
    ((SW) == 1 ? EDL_QDWK_WIN(p, sh)                                                         \
               : _mm256_shuffle_epi8(_mm256_loadu2_m128i((const __m128i *)((p) + 8),         \
                                                         (const __m128i *)(p)), (sh)))
/* 32 sums (bias included) -> 32 bytes in order, with fewer steps than four edl_rq8_bytes:
   only the top is clamped in float (a huge v would convert to INT_MIN); the saturating
   packs to int16, the zero point's saturating add and the pack to 8 bits clamp the bottom
   (round(v) + z <= lo exactly where v <= lo - z + 1/2 rounds there) and are exact in range.
   The packs work per 128-bit lane: vpermd puts the four vectors' halves back in order. */
__attribute__((target(EDL_RQ_TARGET), always_inline)) static inline __m256i edl_rq32_bytes(
        __m256i a0, __m256i a1, __m256i a2, __m256i a3, __m256 s, __m256 fhi, __m256i z16,
        int s8) {
#define EDL_RQI(a) _mm256_cvtps_epi32(_mm256_min_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a), s), fhi))
    const __m256i p01 = _mm256_adds_epi16(_mm256_packs_epi32(EDL_RQI(a0), EDL_RQI(a1)), z16);
    const __m256i p23 = _mm256_adds_epi16(_mm256_packs_epi32(EDL_RQI(a2), EDL_RQI(a3)), z16);
#undef EDL_RQI
    const __m256i b = s8 ? _mm256_packs_epi16(p01, p23) : _mm256_packus_epi16(p01, p23);
    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
/* Outputs q .. q + 8 nb - 1 (those before ow stored) of NR output rows: nb groups of 8, each
   its own dot chain (kh * ng links of ~5 cycles: a row of 22 done 8 at a time waited on
   them). NR 2 (stride 1): rows oy and oy + 1 from kh + 1 input rows, each window made once
   for both. NR 1: even and odd kernel rows in separate chains (half the length). c: the
   bias minus corr, the sums' start. */
__attribute__((target(EDL_RQ_TARGET), always_inline)) static inline void edl_qdw_step(
        const uint8_t *xr, ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t ng, const ptrdiff_t sw,
        const __m256i *wg, __m256i shf, __m256i c, const int nb, const int NR, ptrdiff_t q,
        ptrdiff_t ow, uint8_t *o, __m256 vs, __m256 flo, __m256 fhi, __m256i vz,
        __m256i z16, int s8) {
    __m256i a[2][4], e[2][4];
    for (int n = 0; n < NR; n++)
        for (int b = 0; b < nb; b++) { a[n][b] = c; e[n][b] = _mm256_setzero_si256(); }
    for (ptrdiff_t r = 0; r < kh + NR - 1; r++)
        for (ptrdiff_t g = 0; g < ng; g++) {
            const uint8_t *p = xr + r * wp + sw * q + 4 * g;
            for (int b = 0; b < nb; b++) {
                const __m256i win = EDL_QDWP_WIN(p + 8 * sw * b, sw, shf);
                for (int n = 0; n < NR; n++) {
                    const ptrdiff_t kr = r - n;                  /* row n's kernel row */
                    if (kr < 0 || kr >= kh) continue;
                    const __m256i wv = wg[kr * ng + g];
                    if (NR == 1 && (kr & 1)) e[n][b] = _mm256_dpbusd_epi32(e[n][b], win, wv);
                    else a[n][b] = _mm256_dpbusd_epi32(a[n][b], win, wv);
                }
            }
        }
    for (int n = 0; n < NR; n++) {
        uint8_t *on = o + n * ow;
        if (NR == 1)
            for (int b = 0; b < nb; b++) a[n][b] = _mm256_add_epi32(a[n][b], e[n][b]);
        if (nb == 4 && q + 32 <= ow) {
            _mm256_storeu_si256((__m256i *)(on + q), edl_rq32_bytes(a[n][0], a[n][1], a[n][2],
                                                                  a[n][3], vs, fhi, z16, s8));
            continue;
        }
        for (int b = 0; b < nb; b++) {
            const __m128i v = edl_rq8_bytes(a[n][b], vs, flo, fhi, vz);
            const ptrdiff_t at = q + 8 * b;
            if (at + 8 <= ow) _mm_storel_epi64((__m128i *)(on + at), v);
            else if (at < ow)
                _mm_mask_storeu_epi8(on + at, (__mmask16)((1u << (ow - at)) - 1), v);
        }
    }
}
/* One output row (NR 1) or two (NR 2): blocks of 32, then the rest (a narrow plane's whole
   row) in as many chains as it has blocks of 8. */
#define EDL_QDW_ROWS(NR)                                                                     \
    do {                                                                                    \
        ptrdiff_t q = 0;                                                                    \
        for (; q + 32 <= ow; q += 32)                                                       \
            edl_qdw_step(xr, wp, kh, ng, sw, wg, shf, c, 4, NR, q, ow, o, vs, flo, fhi, vz, \
                         z16, s8);                                                          \
        const ptrdiff_t left = ow - q;                                                      \
        if (left > 16)                                                                      \
            edl_qdw_step(xr, wp, kh, ng, sw, wg, shf, c, 4, NR, q, ow, o, vs, flo, fhi, vz, \
                         z16, s8);                                                          \
        else if (left > 8)                                                                  \
            edl_qdw_step(xr, wp, kh, ng, sw, wg, shf, c, 2, NR, q, ow, o, vs, flo, fhi, vz, \
                         z16, s8);                                                          \
        else if (left > 0)                                                                  \
            edl_qdw_step(xr, wp, kh, ng, sw, wg, shf, c, 1, NR, q, ow, o, vs, flo, fhi, vz, \
                         z16, s8);                                                          \
    } while (0)
__attribute__((target(EDL_RQ_TARGET), always_inline)) static inline void edl_qdw_plane_rq_body(
        const uint8_t *x, ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh,
        const ptrdiff_t sw, const int32_t *w, int32_t corr, int32_t bias, float scale,
        int32_t zp, int s8, uint8_t *out, ptrdiff_t oh, ptrdiff_t ow) {
    const __m256i shf = sw == 1
        ? _mm256_setr_epi8(0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6,
                           4, 5, 6, 7, 5, 6, 7, 8, 6, 7, 8, 9, 7, 8, 9, 10)
        : _mm256_setr_epi8(0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9,
                           0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9);
    const ptrdiff_t ng = (kw + 3) / 4;
    __m256i wg[64];                                    /* kh * ng <= 16 * 4 weight groups */
    for (ptrdiff_t r = 0; r < kh; r++)
        for (ptrdiff_t g = 0; g < ng; g++) {
            uint32_t v = 0;
            for (ptrdiff_t j = 0; j < 4 && 4 * g + j < kw; j++)
                v |= (uint32_t)(uint8_t)w[r * kw + 4 * g + j] << (8 * j);
            wg[r * ng + g] = _mm256_set1_epi32((int32_t)v);
        }
    const float lo = s8 ? -128.0f : 0.0f, hi = s8 ? 127.0f : 255.0f;
    /* the sums start at bias - corr (wrapping, as the int32 sums of EDL_REQUANT do) */
    const __m256i c = _mm256_set1_epi32((int32_t)((uint32_t)bias - (uint32_t)corr));
    const __m256i vz = _mm256_set1_epi32(zp), z16 = _mm256_set1_epi16((int16_t)zp);
    const __m256 vs = _mm256_set1_ps(scale), flo = _mm256_set1_ps(lo - (float)zp);
    const __m256 fhi = _mm256_set1_ps(hi - (float)zp);
    ptrdiff_t oy = 0;
    if (sh == 1 && sw == 1)
        for (; oy + 2 <= oh; oy += 2) {
            const uint8_t *xr = x + oy * wp;
            uint8_t *o = out + oy * ow;
            EDL_QDW_ROWS(2);
        }
    for (; oy < oh; oy++) {
        const uint8_t *xr = x + oy * sh * wp;
        uint8_t *o = out + oy * ow;
        EDL_QDW_ROWS(1);
    }
}
#undef EDL_QDW_ROWS
/* the two column strides, and the 3x3 kernel with its sizes known (unrolled) */
#define EDL_QDW_PLANE_RQ(NAME, KH, KW, SW)                                                   \
__attribute__((target(EDL_RQ_TARGET))) static void NAME(                                     \
        const uint8_t *x, ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh,            \
        const int32_t *w, int32_t corr, int32_t bias, float scale, int32_t zp, int s8,       \
        uint8_t *out, ptrdiff_t oh, ptrdiff_t ow) {                                          \
    (void)kh; (void)kw;                                                                     \
    edl_qdw_plane_rq_body(x, wp, KH, KW, sh, SW, w, corr, bias, scale, zp, s8, out, oh, ow); \
}
EDL_QDW_PLANE_RQ(edl_qdw_plane_vnni512_k3s1, 3, 3, 1)
EDL_QDW_PLANE_RQ(edl_qdw_plane_vnni512_k3s2, 3, 3, 2)
EDL_QDW_PLANE_RQ(edl_qdw_plane_vnni512_s1, kh, kw, 1)
EDL_QDW_PLANE_RQ(edl_qdw_plane_vnni512_s2, kh, kw, 2)
#endif

/* A conv over few input channels (a detector's stem on the image: K = C kh kw <= 128),
   direct on AVX-512 VNNI + VBMI and requantized as computed, where im2col + pack + GEMM +
   a requantization pass moved ~4 bytes per MAC-row through memory (YuNet's 3 -> 16 3x3 s2:
   0.35 ms for 11 M MACs). K is cut into groups of 4 taps (the last zero-padded); a group's
   taps lie in at most 2 rows of the zero-point-padded planes (kw >= 3 keeps it so), and one
   vpermt2b of 64 bytes from each of those rows gives 16 outputs' 4-byte windows; each output
   channel's 4 weights are then one broadcast vpdpbusd. 16 output channels (or 8 for the
   last few) accumulate at once over all groups, so a window is made once per 16 channels. */
#define EDL_QCD_TARGET "avx2,avx512f,avx512vl,avx512bw,avx512vnni,avx512vbmi"
#define EDL_QCD_MAXG 32
#ifdef EDL_QGEMM_AVX2
static int edl_q_vbmi(void);
#endif
typedef struct {
    ptrdiff_t ng;
    ptrdiff_t ra[EDL_QCD_MAXG], rb[EDL_QCD_MAXG];   /* a group's rows: offsets in the planes */
    uint8_t idx[EDL_QCD_MAXG][64];                   /* its vpermt2b indices (64+: row rb) */
} edl_qcd_plan;

/* The plan of a c x kh x kw kernel at column stride sw over planes hp x wp; 0 if it does
   not fit (more than 128 taps, a group over 3 rows, windows past 64 bytes, no VBMI). */
static int edl_qcd_make_plan(edl_qcd_plan *p, ptrdiff_t c, ptrdiff_t kh, ptrdiff_t kw,
                             ptrdiff_t sw, ptrdiff_t hp, ptrdiff_t wp) {
#ifdef EDL_QGEMM_AVX2
    const ptrdiff_t k = c * kh * kw;
    p->ng = (k + 3) / 4;
    if (k <= 0 || p->ng > EDL_QCD_MAXG || sw < 1 || 15 * sw + kw - 1 > 63
            || edl_q_u8s8() != 2 || !edl_q_vbmi())
        return 0;
    for (ptrdiff_t g = 0; g < p->ng; g++) {
        ptrdiff_t rows[2] = {-1, -1};
        for (ptrdiff_t t = 0; t < 4 && 4 * g + t < k; t++) {
            const ptrdiff_t kk = 4 * g + t, ci = kk / (kh * kw), i = kk / kw % kh;
            const ptrdiff_t off = ci * hp * wp + i * wp;
            if (rows[0] < 0 || rows[0] == off) rows[0] = off;
            else if (rows[1] < 0 || rows[1] == off) rows[1] = off;
            else return 0;
        }
        p->ra[g] = rows[0];
        p->rb[g] = rows[1] < 0 ? rows[0] : rows[1];
        for (ptrdiff_t o = 0; o < 16; o++)
            for (ptrdiff_t t = 0; t < 4; t++) {
                const ptrdiff_t kk = 4 * g + t;
                if (kk >= k) { p->idx[g][4 * o + t] = 0; continue; }   /* weight 0 */
                const ptrdiff_t ci = kk / (kh * kw), i = kk / kw % kh, j = kk % kw;
                const ptrdiff_t off = ci * hp * wp + i * wp;
                p->idx[g][4 * o + t] = (uint8_t)((off == p->ra[g] ? 0 : 64) + sw * o + j);
            }
    }
    return 1;
#else
    (void)p; (void)c; (void)kh; (void)kw; (void)sw; (void)hp; (void)wp;
    return 0;
#endif
}

#ifdef EDL_QGEMM_AVX2
/* 16 int32 sums -> 16 bytes, as edl_rq8_bytes */
__attribute__((target(EDL_QCD_TARGET), always_inline)) static inline __m128i edl_rq16_bytes(
        __m512i a, int32_t bias, float s, __m512 flo, __m512 fhi, __m512i z) {
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(a, _mm512_set1_epi32(bias))),
                             _mm512_set1_ps(s));
    v = _mm512_min_ps(_mm512_max_ps(v, flo), fhi);
    return _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(v), z));
}
/* Output channels m0 .. m0 + MC - 1 (those below m stored) at outputs q .. q + 15 of a row. */
__attribute__((target(EDL_QCD_TARGET), always_inline)) static inline void edl_qcd_block(
        const uint8_t *base, ptrdiff_t sw, ptrdiff_t q, const edl_qcd_plan *p,
        const int32_t *w4, const int MC, ptrdiff_t m0, ptrdiff_t m, const int32_t *corr,
        const float *scale, __m512 flo, __m512 fhi, __m512i z, uint8_t *o, ptrdiff_t plane,
        __mmask16 live) {
    __m512i acc[16];
    for (int r = 0; r < MC; r++) acc[r] = _mm512_setzero_si512();
    const ptrdiff_t ng = p->ng;
    for (ptrdiff_t g = 0; g < ng; g++) {
        const __m512i a = _mm512_loadu_si512(base + p->ra[g] + sw * q);
        const __m512i b = _mm512_loadu_si512(base + p->rb[g] + sw * q);
        const __m512i win = _mm512_permutex2var_epi8(a, _mm512_loadu_si512(p->idx[g]), b);
        for (int r = 0; r < MC; r++)
            acc[r] = _mm512_dpbusd_epi32(acc[r], win, _mm512_set1_epi32(w4[(m0 + r) * ng + g]));
    }
    for (int r = 0; r < MC; r++)
        if (m0 + r < m)
            _mm_mask_storeu_epi8(o + (m0 + r) * plane + q, live,
                                 edl_rq16_bytes(acc[r], corr[m0 + r], scale[m0 + r], flo, fhi, z));
}
/* Output rows oy0 .. oy1 - 1 of all m channels: out (m, oh, ow) from the c planes in buf
   (hp x wp each, padded with the zero point, 64 readable bytes past the last); w4: the
   weights minus their zero points as int8, ng groups of 4 a channel (one int32 each), rows
   up to a multiple of 16 (zeros past m). */
__attribute__((target(EDL_QCD_TARGET))) static void edl_qconv_direct_rows_vnni(
        const uint8_t *buf, ptrdiff_t wp, ptrdiff_t sh, ptrdiff_t sw, const edl_qcd_plan *p,
        const int32_t *w4, ptrdiff_t m, const int32_t *corr, const float *scale, int32_t zp,
        int s8, uint8_t *out, ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t oy0, ptrdiff_t oy1) {
    const float lo = s8 ? -128.0f : 0.0f, hi = s8 ? 127.0f : 255.0f;
    const __m512 flo = _mm512_set1_ps(lo - (float)zp), fhi = _mm512_set1_ps(hi - (float)zp);
    const __m512i z = _mm512_set1_epi32(zp);
    for (ptrdiff_t oy = oy0; oy < oy1; oy++) {
        const uint8_t *base = buf + oy * sh * wp;
        uint8_t *o = out + oy * ow;
        for (ptrdiff_t q = 0; q < ow; q += 16) {
            const __mmask16 live = ow - q >= 16 ? (__mmask16)0xFFFF
                                                : (__mmask16)((1u << (ow - q)) - 1);
            ptrdiff_t m0 = 0;
            for (; m - m0 > 8; m0 += 16)
                edl_qcd_block(base, sw, q, p, w4, 16, m0, m, corr, scale, flo, fhi, z, o,
                              oh * ow, live);
            if (m0 < m)
                edl_qcd_block(base, sw, q, p, w4, 8, m0, m, corr, scale, flo, fhi, z, o,
                              oh * ow, live);
        }
    }
}
#else
static void edl_qconv_direct_rows_vnni(const uint8_t *buf, ptrdiff_t wp, ptrdiff_t sh,
                                  ptrdiff_t sw, const edl_qcd_plan *p, const int32_t *w4,
                                  ptrdiff_t m, const int32_t *corr, const float *scale,
                                  int32_t zp, int s8, uint8_t *out, ptrdiff_t oh,
                                  ptrdiff_t ow, ptrdiff_t oy0, ptrdiff_t oy1) {
    /* never called: edl_qcd_make_plan returns 0 here */
    (void)buf; (void)wp; (void)sh; (void)sw; (void)p; (void)w4; (void)m; (void)corr;
    (void)scale; (void)zp; (void)s8; (void)out; (void)oh; (void)ow; (void)oy0; (void)oy1;
}
#endif

#ifdef EDL_QGEMM_AVX2
/* A depthwise plane at stride 1 (any kh x kw with kw >= 3 and at most 64 taps) on AVX-512
   VNNI + VBMI, requantized as computed. The outputs are one flat run at the padded plane's
   pitch (output i = oy wp + ox reads x[i + r wp + j]; the wp - ow values past each row are
   computed and dropped), 16 a vector, so a 22-wide plane fills 22 of every 26 lanes where
   rows of blocks of 8 filled 22 of 32. The taps go in groups of 4 in row-major order (each
   within 2 rows: kw >= 3), a group's 16 windows one vpermb of a 64-byte load holding both
   rows where the pitch allows (wp + 15 + kw <= 64), else one vpermt2b of the two rows'
   loads, then one vpdpbusd: 7 of each for a 5x5 kernel where the 8-wide rows took 10
   windows and 10 dot products per 8 outputs. Reads up to 63 bytes past the plane (x's
   slack). */
#define EDL_QDWF_NV 4
typedef struct {
    ptrdiff_t ng, one;
    ptrdiff_t ra[16], rb[16];         /* a group's two rows: offsets in the padded plane */
    uint8_t idx[16][64];              /* its permute indices (row rb: + 64, or + wp if one) */
} edl_qdwf_plan;

/* The plan of a kh x kw kernel over planes of pitch wp; 0 where it does not run (no
   VNNI + VBMI, kw < 3, more than 64 taps) or where the row kernels are faster: 3x3 (the
   two-row kernel shares each window between two output rows; the flat run took 1.5x its
   time on 80x80 and 160x160 planes, the same on 20x20, where 5x5 at 22x22 took 0.5-0.64x
   of the row kernel's, old and new builds interleaved on this Zen 4). */
static int edl_qdwf_make_plan(edl_qdwf_plan *p, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t wp) {
    const ptrdiff_t k = kh * kw;
    if (kw < 3 || k > 64 || (kh == 3 && kw == 3) || edl_q_u8s8() != 2 || !edl_q_vbmi())
        return 0;
    p->ng = (k + 3) / 4;
    p->one = wp + 15 + kw - 1 < 64;      /* both rows of every group in one 64-byte load */
    for (ptrdiff_t g = 0; g < p->ng; g++) {
        const ptrdiff_t r0 = (4 * g) / kw;
        p->ra[g] = r0 * wp;
        p->rb[g] = (r0 + 1 < kh ? r0 + 1 : r0) * wp;
        for (ptrdiff_t t = 0; t < 4; t++) {
            const ptrdiff_t kk = 4 * g + t;
            /* tap kk of output o: its row's byte o + column (a zero weight past the taps) */
            const ptrdiff_t at = kk >= k ? -1 : (kk / kw == r0 ? 0 : p->one ? wp : 64) + kk % kw;
            for (ptrdiff_t o = 0; o < 16; o++)
                p->idx[g][4 * o + t] = at < 0 ? 0 : (uint8_t)(at + o);
        }
    }
    return 1;
}

/* One plane: x padded (pitch wp, oh + kh - 1 rows, 63 readable bytes past them), w the
   kh * kw taps minus the weights' zero point (int8 range), tmp oh * wp bytes of scratch. */
__attribute__((target(EDL_QCD_TARGET))) static void edl_qdw_flat_vnni512(
        const edl_qdwf_plan *p, const uint8_t *x, ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw,
        const int32_t *w, int32_t corr, int32_t bias, float scale, int32_t zp, int s8,
        uint8_t *tmp, uint8_t *out, ptrdiff_t oh, ptrdiff_t ow) {
    const ptrdiff_t k = kh * kw, ng = p->ng, n = oh * wp;
    __m512i wv[16];
    for (ptrdiff_t g = 0; g < ng; g++) {
        uint32_t wg = 0;
        for (ptrdiff_t t = 0; t < 4 && 4 * g + t < k; t++)
            wg |= (uint32_t)(uint8_t)w[4 * g + t] << (8 * t);
        wv[g] = _mm512_set1_epi32((int32_t)wg);
    }
    const float lo = s8 ? -128.0f : 0.0f, hi = s8 ? 127.0f : 255.0f;
    const __m512 flo = _mm512_set1_ps(lo - (float)zp), fhi = _mm512_set1_ps(hi - (float)zp);
    const __m512i z = _mm512_set1_epi32(zp);
    /* the sums start at bias - corr (wrapping, as the int32 sums of EDL_REQUANT do) */
    const __m512i c = _mm512_set1_epi32((int32_t)((uint32_t)bias - (uint32_t)corr));
    ptrdiff_t i = 0;
    if (p->one)
        for (; i + 16 * EDL_QDWF_NV <= n; i += 16 * EDL_QDWF_NV) {
            __m512i acc[EDL_QDWF_NV];
            for (int v = 0; v < EDL_QDWF_NV; v++) acc[v] = c;
            for (ptrdiff_t g = 0; g < ng; g++) {
                const __m512i id = _mm512_loadu_si512(p->idx[g]);
                const uint8_t *pa = x + i + p->ra[g];
                for (int v = 0; v < EDL_QDWF_NV; v++)
                    acc[v] = _mm512_dpbusd_epi32(acc[v], _mm512_permutexvar_epi8(
                        id, _mm512_loadu_si512(pa + 16 * v)), wv[g]);
            }
            for (int v = 0; v < EDL_QDWF_NV; v++)
                _mm_storeu_si128((__m128i *)(tmp + i + 16 * v),
                                 edl_rq16_bytes(acc[v], 0, scale, flo, fhi, z));
        }
    for (; i + 16 * EDL_QDWF_NV <= n; i += 16 * EDL_QDWF_NV) {
        __m512i acc[EDL_QDWF_NV];
        for (int v = 0; v < EDL_QDWF_NV; v++) acc[v] = c;
        for (ptrdiff_t g = 0; g < ng; g++) {
            const __m512i id = _mm512_loadu_si512(p->idx[g]);
            const uint8_t *pa = x + i + p->ra[g], *pb = x + i + p->rb[g];
            for (int v = 0; v < EDL_QDWF_NV; v++)
                acc[v] = _mm512_dpbusd_epi32(acc[v], _mm512_permutex2var_epi8(
                    _mm512_loadu_si512(pa + 16 * v), id, _mm512_loadu_si512(pb + 16 * v)),
                    wv[g]);
        }
        for (int v = 0; v < EDL_QDWF_NV; v++)
            _mm_storeu_si128((__m128i *)(tmp + i + 16 * v),
                             edl_rq16_bytes(acc[v], 0, scale, flo, fhi, z));
    }
    for (; i < n; i += 16) {   /* (one-load indices stay below 64: they pick from ra's) */
        __m512i acc = c;
        for (ptrdiff_t g = 0; g < ng; g++)
            acc = _mm512_dpbusd_epi32(acc, _mm512_permutex2var_epi8(
                _mm512_loadu_si512(x + i + p->ra[g]), _mm512_loadu_si512(p->idx[g]),
                _mm512_loadu_si512(x + i + p->rb[g])), wv[g]);
        const ptrdiff_t left = n - i;
        _mm_mask_storeu_epi8(tmp + i, left >= 16 ? (__mmask16)0xFFFF
                                                 : (__mmask16)((1u << left) - 1),
                             edl_rq16_bytes(acc, 0, scale, flo, fhi, z));
    }
    /* each row's ow bytes out of the run */
    for (ptrdiff_t oy = 0; oy < oh; oy++)
        for (ptrdiff_t q = 0; q < ow; q += 64) {
            const ptrdiff_t left = ow - q;
            const __mmask64 m = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
            _mm512_mask_storeu_epi8(out + oy * ow + q, m,
                                    _mm512_maskz_loadu_epi8(m, tmp + oy * wp + q));
        }
}
#else
typedef struct { ptrdiff_t ng; } edl_qdwf_plan;
static int edl_qdwf_make_plan(edl_qdwf_plan *p, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t wp) {
    (void)p; (void)kh; (void)kw; (void)wp;
    return 0;
}
static void edl_qdw_flat_vnni512(const edl_qdwf_plan *p, const uint8_t *x, ptrdiff_t wp,
        ptrdiff_t kh, ptrdiff_t kw, const int32_t *w, int32_t corr, int32_t bias, float scale,
        int32_t zp, int s8, uint8_t *tmp, uint8_t *out, ptrdiff_t oh, ptrdiff_t ow) {
    /* never called: edl_qdwf_make_plan returns 0 here */
    (void)p; (void)x; (void)wp; (void)kh; (void)kw; (void)w; (void)corr; (void)bias;
    (void)scale; (void)zp; (void)s8; (void)tmp; (void)out; (void)oh; (void)ow;
}
#endif

/* edl_qdw_plane_vnni512_* where they run: AVX-512 VNNI (EDGEDL_INT8_ISA unset or avx512), w in
   int8 (w8: checked by the caller), a kernel of at most 16 x 16, column stride 1 or 2.
   Returns 0 (nothing done: the caller's int32 rows and separate requantization run) else. */
static int edl_qdw_plane_rq(const uint8_t *x, ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw,
                            ptrdiff_t sh, ptrdiff_t sw, const int32_t *w, int w8, int32_t corr,
                            int32_t bias, float scale, int32_t zp, int s8, void *out,
                            ptrdiff_t oh, ptrdiff_t ow) {
#ifdef EDL_QGEMM_AVX2
    if (!w8 || edl_q_u8s8() != 2 || kh > 16 || kw > 16 || (sw != 1 && sw != 2)) return 0;
    const int k3 = kh == 3 && kw == 3;
    if (sw == 1) (k3 ? edl_qdw_plane_vnni512_k3s1 : edl_qdw_plane_vnni512_s1)(
        x, wp, kh, kw, sh, w, corr, bias, scale, zp, s8, (uint8_t *)out, oh, ow);
    else (k3 ? edl_qdw_plane_vnni512_k3s2 : edl_qdw_plane_vnni512_s2)(
        x, wp, kh, kw, sh, w, corr, bias, scale, zp, s8, (uint8_t *)out, oh, ow);
    return 1;
#else
    (void)x; (void)wp; (void)kh; (void)kw; (void)sh; (void)sw; (void)w; (void)w8; (void)corr;
    (void)bias; (void)scale; (void)zp; (void)s8; (void)out; (void)oh; (void)ow;
    return 0;
#endif
}
#ifdef EDL_QGEMM_AVX2

/* out[i] = t[x[i]] for a 256-byte table on AVX2, 32 bytes a step, each half of the table
   (x < 128, and x ^ 128 < 128 for the other) as 8 rows of 16 entries, one vpshufb a row.
   Row k's index x +sat (0x70 - 16k) keeps x's low nibble (0x70 - 16k is 0 mod 16) and has
   bit 7 set (looks up 0) where x's high nibble h > k, clear where h <= k: so the rows hold
   differences d[k] = t[k] ^ t[k + 1] (d[7] = t[7]) and the xor of rows h..7 is t[h].
   Rows of zero differences (a table flat there: a Relu's or the saturation's range) are
   left out. Returns how many it wrote (a multiple of 32). */
__attribute__((target("avx2"))) static ptrdiff_t edl_lookup_avx2(
        const uint8_t *x, const uint8_t *restrict t, uint8_t *out, ptrdiff_t n) {
    __m256i d[16], rl[8], cl[8], rh[8], ch[8];
    int nl = 0, nh = 0;
    for (int k = 0; k < 16; k++)
        d[k] = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(t + 16 * k)));
    for (int k = 0; k < 16; k++) {
        if (k % 8 != 7) d[k] = _mm256_xor_si256(d[k], d[k + 1]);
        if (_mm256_testz_si256(d[k], d[k])) continue;
        const __m256i c = _mm256_set1_epi8((char)(0x70 - 16 * (k % 8)));
        if (k < 8) { rl[nl] = d[k]; cl[nl++] = c; } else { rh[nh] = d[k]; ch[nh++] = c; }
    }
    const __m256i flip = _mm256_set1_epi8((char)0x80);
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i v = _mm256_loadu_si256((const __m256i *)(x + i));
        const __m256i w = _mm256_xor_si256(v, flip);
        __m256i r = _mm256_setzero_si256();
        for (int j = 0; j < nl; j++)
            r = _mm256_xor_si256(r, _mm256_shuffle_epi8(rl[j], _mm256_adds_epu8(v, cl[j])));
        for (int j = 0; j < nh; j++)
            r = _mm256_xor_si256(r, _mm256_shuffle_epi8(rh[j], _mm256_adds_epu8(w, ch[j])));
        _mm256_storeu_si256((__m256i *)(out + i), r);
    }
    return i;
}

/* 1 where edl_lookup_avx512vbmi runs (EDGEDL_INT8_ISA=avx2 / c turn it off). */
static int edl_q_vbmi(void) {
    static int has = -1;
    if (has < 0) {
        const char *force = getenv("EDGEDL_INT8_ISA");
        has = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi");
        if (force && (strcmp(force, "avx2") == 0 || strcmp(force, "c") == 0)) has = 0;
    }
    return has;
}
#endif

/* out[i] = t[x[i]]: a 256-entry table (int8 activations as lookups): AVX-512 VBMI, else
   AVX2 (EDGEDL_INT8_ISA=c: the plain loop), then the plain loop for the tail. x and out may
   be the same bytes (the convs' fused lookups: each element read before it is written). */
static void edl_lookup(const uint8_t *x, const uint8_t *restrict t, uint8_t *out,
                       ptrdiff_t n) {
#ifdef EDL_QGEMM_AVX2
    if (n >= 64 && edl_q_vbmi()) { edl_lookup_avx512vbmi(x, t, out, n); return; }
    ptrdiff_t done = n >= 32 && edl_q_isa() ? edl_lookup_avx2(x, t, out, n) : 0;
    x += done; out += done; n -= done;
#endif
    for (ptrdiff_t i = 0; i < n; i++) out[i] = t[x[i]];
}

#ifndef EDL_QGEMM_AMX
static int edl_q_amx(void) { return 0; }
#endif
#ifndef EDL_QGEMM_AVX2     /* no u8s8 kernel: the callers take the pairs path */
static int edl_q_u8s8(void) { return 0; }
static ptrdiff_t edl_q_u8s8_cols(void) { return 16; }
static void edl_qgemm_u8s8(const int8_t *a, const uint8_t *bq, int32_t *acc, ptrdiff_t lda,
                           ptrdiff_t m, ptrdiff_t kq, ptrdiff_t nq) {
    (void)a; (void)bq; (void)acc; (void)lda; (void)m; (void)kq; (void)nq;
}
static void edl_qpack4_u8(const uint8_t *b, ptrdiff_t ldb, ptrdiff_t rows, ptrdiff_t nq,
                          ptrdiff_t nq16, uint8_t *d) {
    (void)b; (void)ldb; (void)rows; (void)nq; (void)nq16; (void)d;
}
#endif

/* acc[i][q] (row stride lda) for i < m, q < nq: sum over pairs p < kp2 of
   a[i][2p] * bp[p][q][0] + a[i][2p+1] * bp[p][q][1]; a rows of 2 * kp2 int16. */
EDL_Q_KERNEL static void edl_qgemm_pairs_c(const int16_t *restrict a, const int16_t *restrict bp,
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

#if defined(__aarch64__)
#include <arm_neon.h>
/* The pair loop on aarch64 NEON (a Cortex-A72 has no dot-product instructions): 4 rows x 16
   columns of int32 accumulators held in 16 registers over the whole k loop (gcc's
   vectorised C loop loaded and stored them at every pair of k: 30 llvm-mca cycles per 64
   multiply-adds on the A72's model, against the float32 micro-kernel's 16). Per pair of k:
   the 4 rows' two values in one vector (4 lane loads), two de-interleaving loads of the 16
   columns' pairs, 32 SMLAL (by element) = 128 multiply-adds. Columns past the last multiple
   of 16 are left to the caller. */
#define EDL_QNEON_ROW(r)                                                                     \
    do {                                                                                    \
        c[r][0] = vmlal_laneq_s16(c[r][0], vget_low_s16(b0.val[0]), av, 2 * (r));            \
        c[r][0] = vmlal_laneq_s16(c[r][0], vget_low_s16(b0.val[1]), av, 2 * (r) + 1);        \
        c[r][1] = vmlal_high_laneq_s16(c[r][1], b0.val[0], av, 2 * (r));                     \
        c[r][1] = vmlal_high_laneq_s16(c[r][1], b0.val[1], av, 2 * (r) + 1);                 \
        c[r][2] = vmlal_laneq_s16(c[r][2], vget_low_s16(b1.val[0]), av, 2 * (r));            \
        c[r][2] = vmlal_laneq_s16(c[r][2], vget_low_s16(b1.val[1]), av, 2 * (r) + 1);        \
        c[r][3] = vmlal_high_laneq_s16(c[r][3], b1.val[0], av, 2 * (r));                     \
        c[r][3] = vmlal_high_laneq_s16(c[r][3], b1.val[1], av, 2 * (r) + 1);                 \
    } while (0)
static ptrdiff_t edl_qgemm_pairs_neon(const int16_t *restrict a, const int16_t *restrict bp,
                                      int32_t *restrict acc, ptrdiff_t lda, ptrdiff_t m,
                                      ptrdiff_t kp2, ptrdiff_t nq) {
    const ptrdiff_t ka = 2 * kp2, nv = nq & ~(ptrdiff_t)15;
    for (ptrdiff_t i = 0; i + 4 <= m; i += 4) {
        const int16_t *a0 = a + i * ka;
        for (ptrdiff_t q = 0; q < nv; q += 16) {
            int32x4_t c[4][4];
            for (int r = 0; r < 4; r++)
                for (int j = 0; j < 4; j++) c[r][j] = vdupq_n_s32(0);
            for (ptrdiff_t p = 0; p < kp2; p++) {
                const int16_t *b = bp + p * 2 * nq + 2 * q;
                const int16x8x2_t b0 = vld2q_s16(b), b1 = vld2q_s16(b + 16);
                int32x4_t ap = vdupq_n_s32(0);      /* row r's pair: lanes 2r, 2r + 1 */
                int32_t v;
                memcpy(&v, a0 + 2 * p, 4);
                ap = vsetq_lane_s32(v, ap, 0);
                memcpy(&v, a0 + ka + 2 * p, 4);
                ap = vsetq_lane_s32(v, ap, 1);
                memcpy(&v, a0 + 2 * ka + 2 * p, 4);
                ap = vsetq_lane_s32(v, ap, 2);
                memcpy(&v, a0 + 3 * ka + 2 * p, 4);
                ap = vsetq_lane_s32(v, ap, 3);
                const int16x8_t av = vreinterpretq_s16_s32(ap);
                EDL_QNEON_ROW(0);
                EDL_QNEON_ROW(1);
                EDL_QNEON_ROW(2);
                EDL_QNEON_ROW(3);
            }
            for (int r = 0; r < 4; r++)
                for (int j = 0; j < 4; j++) vst1q_s32(acc + (i + r) * lda + q + 4 * j, c[r][j]);
        }
    }
    return nv;
}
#undef EDL_QNEON_ROW
#endif

/* edl_qgemm_pairs_c, with 4-row x 16-column register blocks where the CPU has them (AVX2,
   AVX-VNNI, aarch64 NEON). */
static void edl_qgemm_pairs(const int16_t *restrict a, const int16_t *restrict bp,
                            int32_t *restrict acc, ptrdiff_t lda, ptrdiff_t m, ptrdiff_t kp2,
                            ptrdiff_t nq) {
#if defined(EDL_QGEMM_AVX2) || defined(__aarch64__)
#ifdef EDL_QGEMM_AVX2
    int isa = m >= 4 && nq >= 16 ? edl_q_isa() : 0;
#else
    int isa = m >= 4 && nq >= 16;
#endif
    if (isa) {
        ptrdiff_t m4 = m & ~(ptrdiff_t)3, nv;
#ifdef EDL_QGEMM_AVX2
#ifdef EDL_QGEMM_VNNI
        if (isa == 2) nv = edl_qgemm_pairs_vnni(a, bp, acc, lda, m4, kp2, nq);
        else
#endif
        nv = edl_qgemm_pairs_avx2(a, bp, acc, lda, m4, kp2, nq);
#else
        nv = edl_qgemm_pairs_neon(a, bp, acc, lda, m4, kp2, nq);
#endif
        if (nv < nq) {      /* the last columns of the first m4 rows: bp's layout by column */
            for (ptrdiff_t i = 0; i < m4; i++) {
                int32_t *r = acc + i * lda;
                const int16_t *ai = a + i * 2 * kp2;
                for (ptrdiff_t q = nv; q < nq; q++) {
                    int32_t s = 0;
                    for (ptrdiff_t p = 0; p < kp2; p++)
                        s += (int32_t)ai[2 * p] * bp[p * 2 * nq + 2 * q]
                           + (int32_t)ai[2 * p + 1] * bp[p * 2 * nq + 2 * q + 1];
                    r[q] = s;
                }
            }
        }
        if (m4 < m) edl_qgemm_pairs_c(a + m4 * 2 * kp2, bp, acc + m4 * lda, lda, m - m4, kp2, nq);
        return;
    }
#endif
    edl_qgemm_pairs_c(a, bp, acc, lda, m, kp2, nq);
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

/* One output row of a 3x3 stride-1 depthwise conv from three rows of a plane padded with the
   zero point z: d[q] = sum of w[3i + j] * xi[q + j] - corr, corr = z * sum(w). */
#define EDL_QDW3(NAME, T)                                                                    \
EDL_Q_KERNEL static void NAME(const T *restrict x0, const T *restrict x1, const T *restrict x2,\
                              const int32_t *restrict w, int32_t corr, int32_t *restrict d,  \
                              ptrdiff_t n) {                                                 \
    const int32_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];         \
    const int32_t w6 = w[6], w7 = w[7], w8 = w[8];                                          \
    for (ptrdiff_t q = 0; q < n; q++)                                                       \
        d[q] = w0 * x0[q] + w1 * x0[q + 1] + w2 * x0[q + 2] + w3 * x1[q] + w4 * x1[q + 1]   \
             + w5 * x1[q + 2] + w6 * x2[q] + w7 * x2[q + 1] + w8 * x2[q + 2] - corr;        \
}
EDL_QDW3(edl_qdw3_u8, uint8_t)
EDL_QDW3(edl_qdw3_s8, int8_t)

/* edl_qdw3_u8 with the VNNI run (edl_qdwk_*3: x1 - x0 = x2 - x1 = the row pitch) where the
   CPU has it and w fits int8 (w8: checked by the caller); the C loop finishes the last n % 8
   (the rows need 16 readable bytes of slack). */
static void edl_qdw3_u8_fast(const uint8_t *x0, const uint8_t *x1, const uint8_t *x2,
                             const int32_t *w, int w8, int32_t corr, int32_t *d, ptrdiff_t n) {
    ptrdiff_t q = 0;
#ifdef EDL_QGEMM_AVX2
    if (w8) {
        const int isa = edl_q_u8s8();
#if __GNUC__ >= 11
        if (isa == 1) q = edl_qdwk_avxvnni3(x0, x1 - x0, w, corr, d, n);
        else
#endif
        if (isa == 2) q = edl_qdwk_vnni5123(x0, x1 - x0, w, corr, d, n);
        else if (edl_q_isa() >= 1) q = edl_qdwk_avx23(x0, x1 - x0, w, corr, d, n);
    }
#else
    (void)w8;
#endif
    if (q < n) edl_qdw3_u8(x0 + q, x1 + q, x2 + q, w, corr, d + q, n - q);
}

/* The same at stride 2 along the row (x0.. point at the window's first column). */
#define EDL_QDW3S2(NAME, T)                                                                  \
EDL_Q_KERNEL static void NAME(const T *restrict x0, const T *restrict x1, const T *restrict x2,\
                              const int32_t *restrict w, int32_t corr, int32_t *restrict d,  \
                              ptrdiff_t n) {                                                 \
    const int32_t w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5];         \
    const int32_t w6 = w[6], w7 = w[7], w8 = w[8];                                          \
    for (ptrdiff_t q = 0; q < n; q++)                                                       \
        d[q] = w0 * x0[2 * q] + w1 * x0[2 * q + 1] + w2 * x0[2 * q + 2] + w3 * x1[2 * q]    \
             + w4 * x1[2 * q + 1] + w5 * x1[2 * q + 2] + w6 * x2[2 * q] + w7 * x2[2 * q + 1]\
             + w8 * x2[2 * q + 2] - corr;                                                   \
}
EDL_QDW3S2(edl_qdw3s2_u8, uint8_t)
EDL_QDW3S2(edl_qdw3s2_s8, int8_t)

/* edl_qdw3s2_u8 with the VNNI rows where they run (as edl_qdw3_u8_fast). */
static void edl_qdw3s2_u8_fast(const uint8_t *x0, const uint8_t *x1, const uint8_t *x2,
                               const int32_t *w, int w8, int32_t corr, int32_t *d,
                               ptrdiff_t n) {
    ptrdiff_t q = 0;
#ifdef EDL_QGEMM_AVX2
    if (w8) {
        const int isa = edl_q_u8s8();
#if __GNUC__ >= 11
        if (isa == 1) q = edl_qdw3s2_avxvnni(x0, x1, x2, w, corr, d, n);
        else
#endif
        if (isa == 2) q = edl_qdw3s2_vnni512(x0, x1, x2, w, corr, d, n);
        else if (edl_q_isa() >= 1) q = edl_qdw3s2_avx2(x0, x1, x2, w, corr, d, n);
    }
#else
    (void)w8;
#endif
    if (q < n) edl_qdw3s2_u8(x0 + 2 * q, x1 + 2 * q, x2 + 2 * q, w, corr, d + q, n - q);
}

/* One output row of a kh x kw depthwise conv at column stride st from kh rows (row pitch wp)
   of a plane padded with the zero point: d[q] = sum of w[i][j] * x[i][q * st + j] - corr,
   tap by tap over an int32 row that stays in L1. */
#define EDL_QDWK(NAME, T)                                                                    \
EDL_Q_KERNEL static void NAME(const T *restrict x, ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw, \
                              ptrdiff_t st, const int32_t *restrict w, int32_t corr,         \
                              int32_t *restrict d, ptrdiff_t n) {                            \
    for (ptrdiff_t q = 0; q < n; q++) d[q] = -corr;                                         \
    for (ptrdiff_t i = 0; i < kh; i++)                                                      \
        for (ptrdiff_t j = 0; j < kw; j++) {                                                \
            const int32_t wv = w[i * kw + j];                                               \
            const T *restrict s = x + i * wp + j;                                           \
            if (st == 1)                                                                    \
                for (ptrdiff_t q = 0; q < n; q++) d[q] += wv * s[q];                        \
            else                                                                            \
                for (ptrdiff_t q = 0; q < n; q++) d[q] += wv * s[q * st];                   \
        }                                                                                   \
}
EDL_QDWK(edl_qdwk_u8, uint8_t)
EDL_QDWK(edl_qdwk_s8, int8_t)

/* edl_qdwk_u8 at stride 1 with the VNNI run where the CPU has it, w fits int8 (w8) and the
   kernel is at most 16 x 16; the C loop finishes the last n % 8. */
static void edl_qdwk_u8_fast(const uint8_t *x, ptrdiff_t wp, ptrdiff_t kh, ptrdiff_t kw,
                             const int32_t *w, int w8, int32_t corr, int32_t *d, ptrdiff_t n) {
    ptrdiff_t q = 0;
#ifdef EDL_QGEMM_AVX2
    if (w8 && kh <= 16 && kw <= 16) {
        const int isa = edl_q_u8s8();
#if __GNUC__ >= 11
        if (isa == 1) q = edl_qdwk_avxvnni(x, wp, kh, kw, w, corr, d, n);
        else
#endif
        if (isa == 2) q = edl_qdwk_vnni512(x, wp, kh, kw, w, corr, d, n);
        else if (edl_q_isa() >= 1) q = edl_qdwk_avx2(x, wp, kh, kw, w, corr, d, n);
    }
#else
    (void)w8;
#endif
    if (q < n) edl_qdwk_u8(x + q, wp, kh, kw, 1, w, corr, d + q, n - q);
}

/* d[q] = s[q * stride] for q < n: one row of a strided im2col (gcc vectorises stride 2 with
   byte shuffles / truncating moves; the generic loop otherwise). */
EDL_Q_KERNEL static void edl_gather_u8(uint8_t *restrict d, const uint8_t *restrict s,
                                       ptrdiff_t stride, ptrdiff_t n) {
    if (stride == 2)
        for (ptrdiff_t q = 0; q < n; q++) d[q] = s[2 * q];
    else
        for (ptrdiff_t q = 0; q < n; q++) d[q] = s[q * stride];
}

EDL_IM2COL_PADDED(uint8_t, u8)    /* int8 too: copies of bytes */

/* The in-image rows oy0 .. oy1 - 1 of one im2col tap at stride 1 when the output is as wide
   as the input (ow): their values [lo, hi) are one run of the plane, src[q + off] (src:
   the first row's input row, off: the tap's column offset), and the few
   border cells of each row ([0, lo) and [hi, ow)) the fill. The border loops (a cell or
   two) must stay plain loops: gcc made them 1-byte memset calls (a third of the whole
   im2col), or vectorised them with run-time checks that cost as much. */
__attribute__((optimize("no-tree-loop-distribute-patterns", "no-tree-vectorize")))
static void edl_im2col_flat_u8(uint8_t *restrict dst, const uint8_t *restrict src,
                               ptrdiff_t off, ptrdiff_t rows, ptrdiff_t ow, ptrdiff_t lo,
                               ptrdiff_t hi, uint8_t f) {
    if (rows <= 0) return;
    if (hi > lo) memcpy(dst + lo, src + lo + off, (size_t)((rows - 1) * ow + hi - lo));
    for (ptrdiff_t r = 0; r < rows; r++) {
        uint8_t *d = dst + r * ow;
        for (ptrdiff_t q = 0; q < lo && q < ow; q++) d[q] = f;
        for (ptrdiff_t q = hi > lo ? hi : lo; q < ow; q++) d[q] = f;
    }
}

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
   [lo - z, hi - z] first (as onnxruntime does), then rounded half to even (EDL_RND). */
/* com.microsoft QLinearAdd / QLinearMul of two 8-bit tensors of one shape, in float32 as
   qlinear_binary (kernels/quant.py) and onnxruntime's x86 form compute them, operation for
   operation: add v = (fixed + a * ra) + b * rb; mul v = ((a - za) * (b - zb)) * m + zc after
   rounding. No contraction into FMAs (a fused a * ra + fixed rounds once, not twice, and
   would move ties): the same bits as the 65536-entry table it replaces, whose lookups (a
   random byte load each) ran at ~1.4 ns a value, 10x this loop. v is clamped to one step
   outside the type's range before the rounding trick (it needs |v| <= 2^22). */
#define EDL_QBINARY(NAME, T)                                                                 \
__attribute__((optimize("fp-contract=off"))) EDL_Q_KERNEL                                   \
static void NAME(const T *restrict a, const T *restrict b, ptrdiff_t n, int mul, float ra,  \
                 float rb, float fixed, float za, float zb, float zc, float lo, float hi,   \
                 T *restrict out) {                                                         \
    if (!mul) {                                                                             \
        for (ptrdiff_t q = 0; q < n; q++) {                                                 \
            float v = (fixed + (float)a[q] * ra) + (float)b[q] * rb;                        \
            v = v < lo - 1.0f ? lo - 1.0f : v;                                              \
            v = v > hi + 1.0f ? hi + 1.0f : v;                                              \
            v = (v + EDL_RND) - EDL_RND;                                                    \
            v = v < lo ? lo : v;                                                            \
            v = v > hi ? hi : v;                                                            \
            out[q] = (T)(int32_t)v;                                                         \
        }                                                                                   \
        return;                                                                             \
    }                                                                                       \
    for (ptrdiff_t q = 0; q < n; q++) {                                                     \
        float v = (((float)a[q] - za) * ((float)b[q] - zb)) * ra;                           \
        v = v < lo - zc - 1.0f ? lo - zc - 1.0f : v;                                        \
        v = v > hi - zc + 1.0f ? hi - zc + 1.0f : v;                                        \
        v = ((v + EDL_RND) - EDL_RND) + zc;                                                 \
        v = v < lo ? lo : v;                                                                \
        v = v > hi ? hi : v;                                                                \
        out[q] = (T)(int32_t)v;                                                             \
    }                                                                                       \
}
#define EDL_REQUANT(NAME, T)                                                                 \
EDL_Q_KERNEL static void NAME(const int32_t *restrict acc, int32_t bias, float s, int32_t z, \
                              float lo, float hi, T *restrict out, ptrdiff_t n) {            \
    const float flo = lo - (float)z, fhi = hi - (float)z;                                   \
    for (ptrdiff_t q = 0; q < n; q++) {                                                     \
        float v = (float)(acc[q] + bias) * s;                                               \
        v = v < flo ? flo : v;                                                              \
        v = v > fhi ? fhi : v;                                                              \
        out[q] = (T)((int32_t)((v + EDL_RND) - EDL_RND) + z);                                               \
    }                                                                                       \
}
/* Round half to even of |v| <= 2^22 in the default rounding mode: adding and subtracting
   1.5 * 2^23 leaves no fraction bits (vectorises everywhere; lrintf's long result did not). */
#define EDL_RND 12582912.0f

/* out[q] = sat(round_half_even(x[q] / s) + z): onnxruntime's QuantizeLinear (a true division,
   clamp to [lo - z, hi - z], then round). NaN becomes lo - z's value (as MINPS/MAXPS give). */
#define EDL_QUANTIZE(NAME, T)                                                                \
EDL_Q_KERNEL static void NAME(const float *restrict x, float s, int32_t z, float lo, float hi,\
                              T *restrict out, ptrdiff_t n) {                                \
    const float flo = lo - (float)z, fhi = hi - (float)z;                                   \
    for (ptrdiff_t q = 0; q < n; q++) {                                                     \
        float v = x[q] / s;                                                                 \
        v = v > flo ? v : flo;                                                              \
        v = v < fhi ? v : fhi;                                                              \
        out[q] = (T)((int32_t)((v + EDL_RND) - EDL_RND) + z);                                               \
    }                                                                                       \
}
EDL_QUANTIZE(edl_quantize_div_u8, uint8_t)
EDL_QUANTIZE(edl_quantize_div_s8, int8_t)

/* EDL_QUANTIZE without the division: q0 = x * r (r = 1 / s rounded), then one correction
   through two FMAs, q0 + (x - q0 s) r, is the correctly rounded x / s (Markstein's theorem;
   checked against the division on 4e8 (x, s) pairs: the same float wherever |x / s| < 2^29
   and x is normal, the same integer everywhere). Where q0 is huge or NaN it is kept (it
   saturates, NaN goes low as before). A float32 division is ~16 cycles a 16-lane vector on
   recent Intel cores; the input QuantizeLinear of a detector (300-500 K values) was
   division-bound. EDL_Q_FMA_OK: r normal, and s >= 2^-100 so that the residual x - q0 s is
   exact wherever |x / s| can reach 1/4 (|x| >= 2^-102; below, both forms round to 0). */
#define EDL_Q_FMA_OK(s, r) ((s) >= 0x1p-100f && __builtin_isnormal(r))
#define EDL_QUANTIZE_FMA(NAME, T, TARGET)                                                   \
TARGET static void NAME(const float *restrict x, float s, float r, int32_t z, float lo,    \
                        float hi, T *restrict out, ptrdiff_t n) {                          \
    const float flo = lo - (float)z, fhi = hi - (float)z;                                   \
    for (ptrdiff_t q = 0; q < n; q++) {                                                     \
        const float q0 = x[q] * r;                                                          \
        float v = __builtin_fmaf(__builtin_fmaf(-q0, s, x[q]), r, q0);                      \
        v = __builtin_fabsf(q0) < 0x1p30f ? v : q0;                                         \
        v = v > flo ? v : flo;                                                              \
        v = v < fhi ? v : fhi;                                                              \
        out[q] = (T)((int32_t)((v + EDL_RND) - EDL_RND) + z);                               \
    }                                                                                       \
}
#if defined(EDL_QGEMM_AVX2)
#define EDL_Q_AVX512_FMA __attribute__((target("avx512f,avx512bw,avx512vl,fma")))
#define EDL_Q_AVX2_FMA __attribute__((target("avx2,fma")))
EDL_QUANTIZE_FMA(edl_quantize_u8_avx512, uint8_t, EDL_Q_AVX512_FMA)
EDL_QUANTIZE_FMA(edl_quantize_s8_avx512, int8_t, EDL_Q_AVX512_FMA)
EDL_QUANTIZE_FMA(edl_quantize_u8_avx2, uint8_t, EDL_Q_AVX2_FMA)
EDL_QUANTIZE_FMA(edl_quantize_s8_avx2, int8_t, EDL_Q_AVX2_FMA)
/* 2: AVX-512 (F, BW, VL), 1: AVX2 + FMA, 0: neither (the division) */
static int edl_q_fma_isa(void) {
    static int isa = -1;
    if (isa < 0)
        isa = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
              && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma") ? 2
              : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return isa;
}
#define EDL_QUANTIZE_PICK(T, S)                                                             \
static void edl_quantize_##S(const float *x, float s, int32_t z, float lo, float hi,        \
                             T *out, ptrdiff_t n) {                                         \
    const float r = 1.0f / s;                                                               \
    const int isa = EDL_Q_FMA_OK(s, r) ? edl_q_fma_isa() : 0;                               \
    if (isa == 2) edl_quantize_##S##_avx512(x, s, r, z, lo, hi, out, n);                    \
    else if (isa == 1) edl_quantize_##S##_avx2(x, s, r, z, lo, hi, out, n);                 \
    else edl_quantize_div_##S(x, s, z, lo, hi, out, n);                                     \
}
#elif defined(__aarch64__)
EDL_QUANTIZE_FMA(edl_quantize_u8_fma, uint8_t, )
EDL_QUANTIZE_FMA(edl_quantize_s8_fma, int8_t, )
#define EDL_QUANTIZE_PICK(T, S)                                                             \
static void edl_quantize_##S(const float *x, float s, int32_t z, float lo, float hi,        \
                             T *out, ptrdiff_t n) {                                         \
    const float r = 1.0f / s;                                                               \
    if (EDL_Q_FMA_OK(s, r)) edl_quantize_##S##_fma(x, s, r, z, lo, hi, out, n);             \
    else edl_quantize_div_##S(x, s, z, lo, hi, out, n);                                     \
}
#else
#define EDL_QUANTIZE_PICK(T, S)                                                             \
static void edl_quantize_##S(const float *x, float s, int32_t z, float lo, float hi,        \
                             T *out, ptrdiff_t n) {                                         \
    edl_quantize_div_##S(x, s, z, lo, hi, out, n);                                          \
}
#endif
EDL_QUANTIZE_PICK(uint8_t, u8)
EDL_QUANTIZE_PICK(int8_t, s8)

/* One plane of the integer QLinearAveragePool (quant.pyx's qavg_pool2d says what), in three
   passes over the whole plane: each output row's window rows summed into a row of the
   int32 buffer V (pitch P = edl_qavg_pitch: the left padding and any columns past the image
   hold 0), then the kw taps of every window as one run over V (output q of the run reads
   V[q * sw + j * dw]: with P a multiple of sw, row oy's outputs start at oy * P / sw), then
   the plane's sums requantized by each output's multiplier (EDL_REQUANT's rounding). Per output
   row, the loops were 10-44 values long and spent their time in scalar tails (FastestDet's
   3x3 s2 pool of 48 x 44 x 44: 1.2 us a plane). buf: edl_qavg_buf(oh, P, sw) int32. */
static inline ptrdiff_t edl_qavg_pitch(ptrdiff_t ow, ptrdiff_t kw, ptrdiff_t sw, ptrdiff_t dw) {
    const ptrdiff_t wb = (ow - 1) * sw + (kw - 1) * dw + 1;
    return (wb + sw - 1) / sw * sw;
}
static inline ptrdiff_t edl_qavg_buf(ptrdiff_t oh, ptrdiff_t pitch, ptrdiff_t kw,
                                     ptrdiff_t sw, ptrdiff_t dw) {
    /* V, (kw - 1) * dw readable zeros past it, the run's oh * P / sw sums */
    return oh * pitch + (kw - 1) * dw + oh * pitch / sw;
}
#define EDL_QAVG_PLANE(NAME, T)                                                             \
EDL_Q_KERNEL static void NAME(const T *restrict x, ptrdiff_t w, const int32_t *y0,         \
        const int32_t *ny, ptrdiff_t pl, ptrdiff_t kw, ptrdiff_t sw, ptrdiff_t dh,           \
        ptrdiff_t dw, const int32_t *restrict corr, const float *restrict mult, int32_t z,   \
        float lo, float hi, int32_t *restrict buf, T *restrict out, ptrdiff_t oh,           \
        ptrdiff_t ow) {                                                                     \
    const ptrdiff_t P = edl_qavg_pitch(ow, kw, sw, dw), run = oh * P / sw;                  \
    const ptrdiff_t n = w < P - pl ? w : P - pl;                                            \
    const float flo = lo - (float)z, fhi = hi - (float)z;                                   \
    int32_t *restrict v = buf, *restrict sums = buf + oh * P + (kw - 1) * dw;               \
    for (ptrdiff_t q = 0; q < oh * P + (kw - 1) * dw; q++) v[q] = 0;                        \
    for (ptrdiff_t oy = 0; oy < oh; oy++) {                                                 \
        int32_t *restrict vr = v + oy * P + pl;                                             \
        for (ptrdiff_t i = 0; i < ny[oy]; i++) {                                            \
            const T *restrict r = x + (y0[oy] + i * dh) * w;                                \
            for (ptrdiff_t q = 0; q < n; q++) vr[q] += r[q];                                \
        }                                                                                   \
    }                                                                                       \
    for (ptrdiff_t q = 0; q < run; q++) sums[q] = 0;                                        \
    for (ptrdiff_t j = 0; j < kw; j++) {                                                    \
        const int32_t *restrict c = v + j * dw;                                             \
        if (sw == 1) for (ptrdiff_t q = 0; q < run; q++) sums[q] += c[q];                   \
        else if (sw == 2) for (ptrdiff_t q = 0; q < run; q++) sums[q] += c[2 * q];          \
        else for (ptrdiff_t q = 0; q < run; q++) sums[q] += c[q * sw];                      \
    }                                                                                       \
    /* the rows' ow sums side by side (each moves left: a forward copy is safe), then the   \
       plane requantized in one loop (row by row, 22 values a row ran as scalar code) */    \
    for (ptrdiff_t oy = 1; oy < oh && P / sw != ow; oy++)                                   \
        memmove(sums + oy * ow, sums + oy * (P / sw), (size_t)ow * sizeof(int32_t));        \
    for (ptrdiff_t q = 0; q < oh * ow; q++) {                                               \
        float t = (float)(sums[q] - corr[q]) * mult[q];                                     \
        t = t < flo ? flo : t;                                                              \
        t = t > fhi ? fhi : t;                                                              \
        out[q] = (T)((int32_t)((t + EDL_RND) - EDL_RND) + z);                               \
    }                                                                                       \
}
EDL_QAVG_PLANE(edl_qavg_plane_u8, uint8_t)
EDL_QAVG_PLANE(edl_qavg_plane_s8, int8_t)
EDL_QUANTIZE(edl_quantize_u16, uint16_t)
EDL_QUANTIZE(edl_quantize_s16, int16_t)

/* out[q] = float(x[q] - z) * s: DequantizeLinear (an exact integer difference, one rounding). */
#define EDL_DEQUANTIZE(NAME, T)                                                              \
EDL_Q_KERNEL static void NAME(const T *restrict x, float s, int32_t z, float *restrict out,  \
                              ptrdiff_t n) {                                                 \
    for (ptrdiff_t q = 0; q < n; q++) out[q] = (float)((int32_t)x[q] - z) * s;              \
}
EDL_DEQUANTIZE(edl_dequantize_u8, uint8_t)
EDL_DEQUANTIZE(edl_dequantize_s8, int8_t)
EDL_DEQUANTIZE(edl_dequantize_u16, uint16_t)
EDL_DEQUANTIZE(edl_dequantize_s16, int16_t)

EDL_QBINARY(edl_qbinary_u8, uint8_t)
EDL_QBINARY(edl_qbinary_s8, int8_t)
EDL_REQUANT(edl_requant_u8_c, uint8_t)
EDL_REQUANT(edl_requant_s8_c, int8_t)
EDL_REQUANT(edl_requant_u16, uint16_t)
EDL_REQUANT(edl_requant_s16, int16_t)

#ifdef EDL_QGEMM_AVX2
/* EDL_REQUANT of 8-bit outputs on AVX-512, 64 values a step in fewer operations than gcc's
   vectorisation of it: vcvtps2dq rounds half to even in the default rounding mode (the
   EDL_RND trick's result), the clamped values are in range, so the saturating packs to
   int16, the zero point's add and the pack to bytes are exact; vpermd puts the packs'
   128-bit lanes back in order. Returns how many it wrote (a multiple of 64). */
#define EDL_REQUANT8(NAME, TARGET, LOOKUP)                                                  \
__attribute__((target(TARGET))) static ptrdiff_t NAME(                                      \
        const int32_t *restrict acc, int32_t bias, float s, int32_t z, float lo, float hi,  \
        int s8, const uint8_t *t, uint8_t *restrict out, ptrdiff_t n) {                     \
    const __m512i vb = _mm512_set1_epi32(bias), z16 = _mm512_set1_epi16((int16_t)z);        \
    const __m512 vs = _mm512_set1_ps(s), flo = _mm512_set1_ps(lo - (float)z);               \
    const __m512 fhi = _mm512_set1_ps(hi - (float)z);                                       \
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14,        \
                                            3, 7, 11, 15);                                  \
    __m512i t0 = _mm512_setzero_si512(), t1 = t0, t2 = t0, t3 = t0;                         \
    (void)t0; (void)t1; (void)t2; (void)t3;                                                 \
    if (LOOKUP) {                                                                           \
        t0 = _mm512_loadu_si512(t); t1 = _mm512_loadu_si512(t + 64);                        \
        t2 = _mm512_loadu_si512(t + 128); t3 = _mm512_loadu_si512(t + 192);                 \
    }                                                                                       \
    ptrdiff_t q = 0;                                                                        \
    for (; q + 64 <= n; q += 64) {                                                          \
        const __m512i p01 = _mm512_adds_epi16(_mm512_packs_epi32(EDL_RQ16(acc + q),         \
                                                                 EDL_RQ16(acc + q + 16)), z16); \
        const __m512i p23 = _mm512_adds_epi16(_mm512_packs_epi32(EDL_RQ16(acc + q + 32),    \
                                                                 EDL_RQ16(acc + q + 48)), z16); \
        __m512i v = _mm512_permutexvar_epi32(                                                \
            order, s8 ? _mm512_packs_epi16(p01, p23) : _mm512_packus_epi16(p01, p23));      \
        if (LOOKUP) EDL_LOOKUP64(v, t0, t1, t2, t3);                                        \
        _mm512_storeu_si512(out + q, v);                                                    \
    }                                                                                       \
    return q;                                                                               \
}
#define EDL_RQ16(p) _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(            \
        _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_loadu_si512(p), vb)), vs), flo), fhi))
#define EDL_LOOKUP64(v, t0, t1, t2, t3) (void)0
EDL_REQUANT8(edl_requant8_avx512, EDL_RQ_TARGET, 0)
#undef EDL_LOOKUP64
/* the same, each byte then looked up in the 256-entry table t while it is in a register
   (an activation after the conv; AVX-512 VBMI, as edl_lookup_avx512vbmi). As a separate
   pass over each tile row the lookup cost a quarter of a K = 16 conv's time. */
#define EDL_LOOKUP64(v, t0, t1, t2, t3)                                                      \
    v = _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), _mm512_permutex2var_epi8(t0, v, t1),  \
                               _mm512_permutex2var_epi8(t2, v, t3))
EDL_REQUANT8(edl_requant8_lookup_vbmi, EDL_RQ_TARGET ",avx512vbmi", 1)
#undef EDL_LOOKUP64
#undef EDL_RQ16
#endif
/* edl_requant_u8 / _s8: the AVX-512 loop where it runs, the C loop for the rest */
static void edl_requant_u8(const int32_t *acc, int32_t bias, float s, int32_t z, float lo,
                           float hi, uint8_t *out, ptrdiff_t n) {
    ptrdiff_t q = 0;
#ifdef EDL_QGEMM_AVX2
    if (n >= 64 && edl_q_u8s8() == 2) q = edl_requant8_avx512(acc, bias, s, z, lo, hi, 0, NULL, out, n);
#endif
    if (q < n) edl_requant_u8_c(acc + q, bias, s, z, lo, hi, out + q, n - q);
}
static void edl_requant_s8(const int32_t *acc, int32_t bias, float s, int32_t z, float lo,
                           float hi, int8_t *out, ptrdiff_t n) {
    ptrdiff_t q = 0;
#ifdef EDL_QGEMM_AVX2
    if (n >= 64 && edl_q_u8s8() == 2)
        q = edl_requant8_avx512(acc, bias, s, z, lo, hi, 1, NULL, (uint8_t *)out, n);
#endif
    if (q < n) edl_requant_s8_c(acc + q, bias, s, z, lo, hi, out + q, n - q);
}
/* edl_requant_u8 (s8 0) or _s8 (s8 1), each byte then looked up in the 256-entry table t
   (an 8-bit activation; t NULL: none) in the same pass where the CPU has VBMI */
static void edl_requant_lookup8(const int32_t *acc, int32_t bias, float s, int32_t z, float lo,
                                float hi, int s8, const uint8_t *t, uint8_t *out, ptrdiff_t n) {
    ptrdiff_t q = 0;
#ifdef EDL_QGEMM_AVX2
    if (t != NULL && n >= 64 && edl_q_u8s8() == 2 && edl_q_vbmi())
        q = edl_requant8_lookup_vbmi(acc, bias, s, z, lo, hi, s8, t, out, n);
#endif
    if (q == n) return;
    if (s8) edl_requant_s8(acc + q, bias, s, z, lo, hi, (int8_t *)out + q, n - q);
    else edl_requant_u8(acc + q, bias, s, z, lo, hi, out + q, n - q);
    if (t != NULL) edl_lookup(out + q, t, out + q, n - q);
}

#endif
