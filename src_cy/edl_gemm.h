/* edl_gemm.h - float32 GEMM for convolutions: C[M, N] = A[M, K] @ B[K, N], B and C strided rows.
 *
 * Why not NumPy's BLAS: a conv GEMM is thin (M = 16..64 filters, K = 16..600) and wide
 * (N = every output pixel); OpenBLAS packs B for each call and runs such shapes at 30-90
 * GFLOP/s here, half of the core's FMA rate. This one reads B in place (no packing: a
 * column block of B stays in L2 while every filter panel passes over it), keeps an
 * MR x NR tile of C in registers for the whole K loop and adds the bias (and a relu / clip
 * clamp, or a sigmoid / SiLU) there before the store; other activations are left to the
 * caller, on a block of C still in cache.
 *
 * A is packed once per weight tensor into panels of MR rows (k-major: panel[k * MR + i]),
 * so the micro-kernel reads it as one stream. Edges need no masked code: the last panel
 * starts at row M - MR and the last strip at column N - NR, overlapping the previous
 * one (those outputs are computed twice and assigned the same value; the last strip uses the
 * narrowest kernel that covers it, so at most one vector is recomputed); fewer than MR rows
 * get zero rows in their panel and a scratch tile, fewer than NR columns a padded copy.
 *
 * Deep GEMMs (K > 2 * EDL_GEMM_KC, M a multiple of MR: the 3x3 convs of 256+ channels) run
 * in K blocks of <= EDL_GEMM_KC, block after block over the same tiles (each adds to what
 * the previous one stored: the sums of one pass, in the same order), with A packed block by
 * block; there the overlapping edges would add twice, so the last columns take the narrow
 * kernels (<= 8 columns) or a scratch block instead.
 *
 * Micro-kernels are written once with GCC vector types and instantiated per ISA: AVX-512
 * (8 x 48: 24 of the 32 zmm registers accumulate; 8 x 32 ran at 2/3 of its speed), AVX2+FMA
 * (4 x 24) and a 128-bit baseline (SSE2) on x86-64, picked at run time (no -march: wheels
 * stay portable); elsewhere only the 128-bit one (NEON on aarch64: 8 x 8, 16 accumulators).
 */
#ifndef EDL_GEMM_H
#define EDL_GEMM_H
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "edl_math.h"

/* The conv epilogues a tile applies in registers before its store (the others take a pass
 * over the block of C afterwards): + bias[row], then optionally a clamp to [lo, hi] (relu,
 * relu6, clip; clamp 1: hi is +inf, the max alone) that keeps NaN, as the conv epilogue
 * does, or `sig`: EDL_ACT_SIGMOID or EDL_ACT_SILU (0: neither), the operations of
 * edl_sigmoid_f32 / edl_swish_f32 on the tile's vectors. As a pass of its own, YOLOX's SiLU
 * cost ~0.1 ns a value more than the activation itself (re-reading and re-writing the block
 * of C). */
typedef struct { const float *bias; int clamp; float lo, hi; int sig; } edl_gemm_epi;

/* One k step of the tile: acc[i][v] += a[i] * bv[v]. On x86 each a[i] is broadcast by the
 * FMA itself (a memory operand); on aarch64 A's MR values are loaded as MR / 4 128-bit
 * registers and each row's FMLA takes its value by lane (FMLA by element): one load per 4
 * rows instead of one per row (llvm-mca -mcpu=neoverse-n1 per k step: 8x8 8.55 -> 8.05
 * cycles, 8x4 4.57 -> 4.05; tools/mca.py).
 * Same products and sums either way. */
#if defined(__aarch64__)
#include <arm_neon.h>
/* row 4q + l, vector v: by lane l of A's q-th register */
#define EDL_GEMM_LANE(VT, v, q, l)                                                         \
    acc[4 * (q) + (l)][v] = (VT)vfmaq_laneq_f32((float32x4_t)acc[4 * (q) + (l)][v],        \
                                                (float32x4_t)bv[v], av[q], l);
#define EDL_GEMM_KSTEP(VT, MR, NV)                                                          \
    {                                                                                      \
        float32x4_t av[(MR) / 4];                                                          \
        EDL_UNROLL for (int q = 0; q < (MR) / 4; q++) av[q] = vld1q_f32(a + 4 * q);        \
        EDL_UNROLL for (int q = 0; q < (MR) / 4; q++)                                      \
            EDL_UNROLL for (int v = 0; v < (NV); v++) {                                    \
                EDL_GEMM_LANE(VT, v, q, 0) EDL_GEMM_LANE(VT, v, q, 1)                      \
                EDL_GEMM_LANE(VT, v, q, 2) EDL_GEMM_LANE(VT, v, q, 3)                      \
            }                                                                              \
    }
#else
#define EDL_GEMM_KSTEP(VT, MR, NV)                                                          \
    EDL_UNROLL for (int i = 0; i < (MR); i++) {                                            \
        const float ai = a[i];                         /* broadcast by the vector op */    \
        EDL_UNROLL for (int v = 0; v < (NV); v++) acc[i][v] += bv[v] * ai;                 \
    }
#endif

/* MR x (NV vectors of VB bytes) tile: c[i * ldc + j] = sum_k a[k * MR + i] * b[k * ldb + j]
 * (`load`: c[i * ldc + j] + that sum, the next K block of the same tile: the same
 * summation order as one pass), then the epilogue when `epi` is not NULL (epi->bias: the
 * tile's MR rows; SIG: the sigmoid / SiLU twin, for epi->sig, else the clamp's).
 * The _pk twin also stores the rows of B it reads, contiguously, at pk (K x NV*W): the first
 * filter panel of a strip packs it for the others at no extra pass. ``pfa`` (or NULL): a
 * panel of A to prefetch into L2 along the way (edl_gemm_prefetch_panel). */
#define EDL_GEMM_DEF(FN, VT, IVT, UVT, ATTR, VB, MR, NV, PK, SIG)                           \
ATTR static void FN(ptrdiff_t K, const float *restrict a, const float *restrict b,        \
                    ptrdiff_t ldb, float *restrict c, ptrdiff_t ldc, float *restrict pk,  \
                    const edl_gemm_epi *epi, int load, const float *pfa) {                \
    enum { W = (VB) / 4 };                                                                 \
    VT acc[MR][NV];                                                                        \
    (void)pk;                                                                              \
    EDL_UNROLL for (int i = 0; i < (MR); i++)                                              \
        EDL_UNROLL for (int v = 0; v < (NV); v++) {                                        \
            if (load) memcpy(&acc[i][v], c + i * ldc + v * W, VB);                         \
            else acc[i][v] = (VT){0};                                                      \
        }                                                                                  \
    for (ptrdiff_t k = 0; k < K; k++) {                                                   \
        VT bv[NV];                                                                         \
        EDL_UNROLL for (int v = 0; v < (NV); v++) memcpy(&bv[v], b + v * W, VB);         \
        if (PK) {                                                                          \
            EDL_UNROLL for (int v = 0; v < (NV); v++) memcpy(pk + v * W, &bv[v], VB);    \
            pk += (NV) * W;                                                                \
        }                                                                                  \
        EDL_GEMM_KSTEP(VT, MR, NV)                                                         \
        if (pfa && !(k & 1)) __builtin_prefetch(pfa + k * (MR), 0, 2);                     \
        a += (MR);                                                                         \
        b += ldb;                                                                          \
    }                                                                                      \
    if (epi) {                                                                             \
        EDL_UNROLL for (int i = 0; i < (MR); i++) {                                        \
            const float bi = epi->bias[i];                                                 \
            EDL_UNROLL for (int v = 0; v < (NV); v++) acc[i][v] += bi;                    \
        }                                                                                  \
        if (!(SIG) && epi->clamp) {  /* t = lo > t ? lo : t; t = hi < t ? hi : t */        \
            const VT lo = (VT){0} + epi->lo, hi = (VT){0} + epi->hi;                      \
            EDL_UNROLL for (int i = 0; i < (MR); i++)                                      \
                EDL_UNROLL for (int v = 0; v < (NV); v++)                                  \
                    acc[i][v] = EDL_VMAX_##VB(VT, IVT, lo, acc[i][v]);                     \
            if (epi->clamp > 1)                                                            \
                EDL_UNROLL for (int i = 0; i < (MR); i++)                                  \
                    EDL_UNROLL for (int v = 0; v < (NV); v++)                              \
                        acc[i][v] = EDL_VMIN_##VB(VT, IVT, hi, acc[i][v]);                 \
        } else if (SIG) {                                                                  \
            const int silu = epi->sig == EDL_ACT_SILU;                                     \
            EDL_UNROLL for (int i = 0; i < (MR); i++)                                      \
                EDL_UNROLL for (int v = 0; v < (NV); v++)                                  \
                    acc[i][v] = EDL_VSIG(VT, IVT, UVT, acc[i][v], silu, VB);               \
        }                                                                                  \
    }                                                                                      \
    EDL_UNROLL for (int i = 0; i < (MR); i++)                                              \
        EDL_UNROLL for (int v = 0; v < (NV); v++) memcpy(c + i * ldc + v * W, &acc[i][v], VB); \
}
#define EDL_GEMM_MICRO(NAME, ATTR, VB, MR, NV)                                              \
typedef float NAME##_vec __attribute__((vector_size(VB)));                                \
typedef int32_t NAME##_ivec __attribute__((vector_size(VB)));                             \
typedef uint32_t NAME##_uvec __attribute__((vector_size(VB)));                            \
EDL_GEMM_DEF(NAME, NAME##_vec, NAME##_ivec, NAME##_uvec, ATTR, VB, MR, NV, 0, 0)            \
EDL_GEMM_DEF(NAME##_pk, NAME##_vec, NAME##_ivec, NAME##_uvec, ATTR, VB, MR, NV, 1, 0)         \
EDL_GEMM_DEF(NAME##_s, NAME##_vec, NAME##_ivec, NAME##_uvec, ATTR, VB, MR, NV, 0, 1)          \
EDL_GEMM_DEF(NAME##_s_pk, NAME##_vec, NAME##_ivec, NAME##_uvec, ATTR, VB, MR, NV, 1, 1)

/* NP panels x NT (<= 4) columns, for the last few columns of a K-blocked GEMM: each panel's
 * MR rows are one vector (a load per k), each column's B value is broadcast; B is read in
 * place and C stored column by column, no padded copy (a 16-wide kernel on one column did
 * 16 times its work: 7x7 convs, N = 49 = 48 + 1). NP = 4 panels at once keep 4 * NT FMA
 * chains in flight. Panel q of A at a + q * ps, its C rows at c + q * MR * ldc. The same
 * products summed in the same order as the wide kernels (`load`, `epi` as there, epi->bias
 * the NP * MR rows). */
#define EDL_GEMM_NARROW(FN, ATTR, MR, NP, NT)                                                \
ATTR static void FN(ptrdiff_t K, const float *restrict a, ptrdiff_t ps,                    \
                    const float *restrict b, ptrdiff_t ldb, float *restrict c, ptrdiff_t ldc, \
                    const edl_gemm_epi *epi, int load) {                                   \
    typedef float vt __attribute__((vector_size((MR) * 4)));                              \
    vt acc[NP][NT];                                                                        \
    EDL_UNROLL for (int q = 0; q < (NP); q++)                                              \
        EDL_UNROLL for (int j = 0; j < (NT); j++) {                                        \
            acc[q][j] = (vt){0};                                                           \
            if (load)                                                                      \
                EDL_UNROLL for (int i = 0; i < (MR); i++)                                  \
                    acc[q][j][i] = c[(q * (MR) + i) * ldc + j];                            \
        }                                                                                  \
    for (ptrdiff_t k = 0; k < K; k++) {                                                   \
        EDL_UNROLL for (int q = 0; q < (NP); q++) {                                        \
            vt av;                                                                         \
            memcpy(&av, a + q * ps + k * (MR), sizeof av);                                 \
            EDL_UNROLL for (int j = 0; j < (NT); j++) acc[q][j] += av * b[k * ldb + j];    \
        }                                                                                  \
    }                                                                                      \
    EDL_UNROLL for (int q = 0; q < (NP); q++)                                              \
        EDL_UNROLL for (int j = 0; j < (NT); j++)                                          \
            EDL_UNROLL for (int i = 0; i < (MR); i++) {                                    \
                float t = acc[q][j][i];                                                    \
                if (epi) {                                                                 \
                    t += epi->bias[q * (MR) + i];                                          \
                    if (epi->clamp) {                 /* as the wide kernels: NaN stays */ \
                        t = epi->lo > t ? epi->lo : t;                                     \
                        t = epi->hi < t ? epi->hi : t;                                     \
                    } else if (epi->sig) {                                                 \
                        float d = 1.0f / (1.0f + edl_exp_sat(-t));                         \
                        t = epi->sig == EDL_ACT_SILU ? t * d : d;                          \
                    }                                                                      \
                }                                                                          \
                c[(q * (MR) + i) * ldc + j] = t;                                           \
            }                                                                              \
}
#define EDL_GEMM_NARROWS(NAME, ATTR, MR)                                                     \
EDL_GEMM_NARROW(NAME##_1_1, ATTR, MR, 1, 1) EDL_GEMM_NARROW(NAME##_1_2, ATTR, MR, 1, 2)    \
EDL_GEMM_NARROW(NAME##_1_3, ATTR, MR, 1, 3) EDL_GEMM_NARROW(NAME##_1_4, ATTR, MR, 1, 4)    \
EDL_GEMM_NARROW(NAME##_4_1, ATTR, MR, 4, 1) EDL_GEMM_NARROW(NAME##_4_2, ATTR, MR, 4, 2)    \
EDL_GEMM_NARROW(NAME##_4_3, ATTR, MR, 4, 3) EDL_GEMM_NARROW(NAME##_4_4, ATTR, MR, 4, 4)
#define EDL_GEMM_NARROW_SET(k, NAME)                                                         \
    k.nw[0][0] = NAME##_1_1; k.nw[0][1] = NAME##_1_2; k.nw[0][2] = NAME##_1_3;              \
    k.nw[0][3] = NAME##_1_4; k.nw[1][0] = NAME##_4_1; k.nw[1][1] = NAME##_4_2;              \
    k.nw[1][2] = NAME##_4_3; k.nw[1][3] = NAME##_4_4;
typedef void (*edl_gemm_narrow_fn)(ptrdiff_t, const float *, ptrdiff_t, const float *,
                                   ptrdiff_t, float *, ptrdiff_t, const edl_gemm_epi *, int);

typedef void (*edl_gemm_micro_fn)(ptrdiff_t, const float *, const float *, ptrdiff_t,
                                  float *, ptrdiff_t, float *, const edl_gemm_epi *, int,
                                  const float *);

#ifdef EDL_X86_MV
#define EDL_GEMM_X86 1
EDL_GEMM_MICRO(edl_gemm_avx512_1, EDL_AVX512, 64, 8, 1)
EDL_GEMM_MICRO(edl_gemm_avx512_2, EDL_AVX512, 64, 8, 2)
EDL_GEMM_MICRO(edl_gemm_avx512_3, EDL_AVX512, 64, 8, 3)
EDL_GEMM_MICRO(edl_gemm_avx2_1, EDL_AVX2, 32, 4, 1)
EDL_GEMM_MICRO(edl_gemm_avx2_2, EDL_AVX2, 32, 4, 2)
EDL_GEMM_MICRO(edl_gemm_avx2_3, EDL_AVX2, 32, 4, 3)
EDL_GEMM_NARROWS(edl_gemm_avx512_n, EDL_AVX512, 8)
EDL_GEMM_NARROWS(edl_gemm_avx2_n, EDL_AVX2, 4)
#define EDL_BASE_MR 4
#elif defined(__aarch64__)
#define EDL_BASE_MR 8                         /* 32 NEON registers: 16 accumulators */
#else
#define EDL_BASE_MR 4
#endif
EDL_GEMM_MICRO(edl_gemm_base_1, EDL_CONTRACT, 16, EDL_BASE_MR, 1)
EDL_GEMM_MICRO(edl_gemm_base_2, EDL_CONTRACT, 16, EDL_BASE_MR, 2)
EDL_GEMM_NARROWS(edl_gemm_base_n, EDL_CONTRACT, EDL_BASE_MR)

/* fn[s][v - 1]: the MR x (v * W) micro-kernel, v = 1..NV, pk[s][v - 1] its packing twin;
 * NR = NV * W columns; s = 1: the twins whose epilogue is the sigmoid / SiLU (epi->sig), s =
 * 0: the others (that code in the same function spilled registers around the clamp's
 * tiles: a 48 -> 48 1x1 at 22x22 ran ~5% slower) */
typedef struct {
    edl_gemm_micro_fn fn[2][3], pk[2][3];
    edl_gemm_narrow_fn nw[2][4];      /* nw[0 or 1][t - 1]: 1 or 4 panels x t columns */
    int mr, nr, w, nv;
} edl_gemm_kernel;

/* the fn / pk tables of kernel set k from the 1, 2 and 3-vector kernels A, B, C */
#define EDL_GEMM_SET(k, A, B, C)                                                             \
    k.fn[0][0] = A; k.fn[0][1] = B; k.fn[0][2] = C;                                       \
    k.pk[0][0] = A##_pk; k.pk[0][1] = B##_pk; k.pk[0][2] = C##_pk;                        \
    k.fn[1][0] = A##_s; k.fn[1][1] = B##_s; k.fn[1][2] = C##_s;                           \
    k.pk[1][0] = A##_s_pk; k.pk[1][1] = B##_s_pk; k.pk[1][2] = C##_s_pk;

/* The micro-kernels for this CPU (decided once; cheap to call again). */
static edl_gemm_kernel edl_gemm_select(void) {
    edl_gemm_kernel k;
#ifdef EDL_GEMM_X86
    const int isa = edl_x86_level();
    if (isa == 2) {
        EDL_GEMM_SET(k, edl_gemm_avx512_1, edl_gemm_avx512_2, edl_gemm_avx512_3)
        EDL_GEMM_NARROW_SET(k, edl_gemm_avx512_n)
        k.mr = 8; k.w = 16; k.nv = 3; k.nr = 48;
        return k;
    }
    if (isa == 1) {
        EDL_GEMM_SET(k, edl_gemm_avx2_1, edl_gemm_avx2_2, edl_gemm_avx2_3)
        EDL_GEMM_NARROW_SET(k, edl_gemm_avx2_n)
        k.mr = 4; k.w = 8; k.nv = 3; k.nr = 24;
        return k;
    }
#endif
    EDL_GEMM_SET(k, edl_gemm_base_1, edl_gemm_base_2, edl_gemm_base_2)
    EDL_GEMM_NARROW_SET(k, edl_gemm_base_n)
    k.mr = EDL_BASE_MR; k.w = 4; k.nv = 2; k.nr = 8;
    return k;
}

static inline int edl_gemm_mr(void) { return edl_gemm_select().mr; }
static inline int edl_gemm_nr(void) { return edl_gemm_select().nr; }

/* Number of MR-row panels for M rows, and the packed size in floats. */
static inline ptrdiff_t edl_gemm_panels(ptrdiff_t M, int mr) { return (M + mr - 1) / mr; }

/* Depth of the K blocks: a strip of B (kc x NR) stays in L1 while every panel of A passes
 * over it, and the M x kc block of A in L2 while every strip does. Unblocked, a deep GEMM
 * (3x3 convs of 256+ channels: K = 2304+) streamed all of A from L3 for each strip of B. */
#define EDL_GEMM_KC 192

/* K blocks for an M x K GEMM (1: one pass); block kb is rows kb * K / n .. (kb + 1) * K / n.
 * The packed A of a blocked GEMM is laid out block by block (see edl_gemm_pack_a).
 * Only for M a multiple of MR: the last panel of other M overlaps its neighbour's rows,
 * which the blocks would then add twice. */
static inline ptrdiff_t edl_gemm_kblocks(ptrdiff_t M, ptrdiff_t K) {
    return M % edl_gemm_mr() == 0 && K > 2 * EDL_GEMM_KC ? (K + EDL_GEMM_KC - 1) / EDL_GEMM_KC
                                                          : 1;
}

/* A (M x K, row stride lda) -> panels; panel p holds rows r0 = min(p*MR, M-MR) .. r0+MR-1
 * (rows past M are zero when M < MR). With K blocks (edl_gemm_kblocks), block by block:
 * block kb (rows k0..k1 of the depth) at ap + k0 * panels * MR, its panel p at + p * (k1 - k0)
 * * MR, so that the M x kc block the GEMM reads is one run of memory (read from DRAM, the
 * 6 KB pieces of the panels 150+ KB apart ran at a third of ORT's bandwidth); unblocked,
 * panel p at ap + p * K * MR. */
static void edl_gemm_pack_a(const float *a, ptrdiff_t M, ptrdiff_t K, ptrdiff_t lda,
                            float *restrict ap) {
    int mr = edl_gemm_mr();
    ptrdiff_t np = edl_gemm_panels(M, mr), nkb = edl_gemm_kblocks(M, K);
    for (ptrdiff_t kb = 0; kb < nkb; kb++) {
        ptrdiff_t k0 = kb * K / nkb, k1 = (kb + 1) * K / nkb;
        for (ptrdiff_t p = 0; p < np; p++) {
            ptrdiff_t r0 = p * mr;
            if (M >= mr && r0 > M - mr) r0 = M - mr;
            float *dst = ap + k0 * np * mr + p * (k1 - k0) * mr;
            for (ptrdiff_t k = k0; k < k1; k++)
                for (int i = 0; i < mr; i++)
                    dst[(k - k0) * mr + i] = r0 + i < M ? a[(r0 + i) * lda + k] : 0.0f;
        }
    }
}

/* The first strip of a block of C reads every panel of A once, from memory when A is a
 * model's weights (ResNet-50's late convs: 2-9 MB of them for 49 columns): it prefetches the
 * panel EDL_GEMM_PFA ahead into L2 while it runs one (``pfa``), a line every second k step of
 * the micro-kernel (a burst of a panel's lines before each call stalled on the core's fill
 * buffers: 11% of ResNet-50's time). Cold 2048 x 512 at 49 columns: 0.45 of the time with the
 * whole next block prefetched at once, 512 x 4608: 0.56; 0.9-1.0 where C is wide and A small. */
#define EDL_GEMM_PFA 4
static inline void edl_gemm_prefetch_panel(const float *a, ptrdiff_t floats) {
    for (ptrdiff_t o = 0; o < floats * 4; o += 64) __builtin_prefetch((const char *)a + o, 0, 2);
}

/* B given row by row (a stride-1 conv's im2col, read where it lies in the input planes):
 * row k at b + off[k]; with `shift`, a conv's rows of w columns with no padding columns
 * (only zero rows above and below): column j of row k holds the input at column
 * j % w + shift[k] of its row, 0 where that falls outside [0, w) (the left / right padding,
 * the tap kx * dw - pw); the value there in memory (the neighbouring row's end) is not used.
 * shift NULL: rows of a padded width, read as they are. */
typedef struct { const ptrdiff_t *off; const int32_t *shift; ptrdiff_t w; } edl_gemm_brows;

/* Masks of the shifts -EDL_GATHER_SPAN..EDL_GATHER_SPAN (every 3x3 to 17x17 conv of
 * dilation 1); others take the compare per value. */
#define EDL_GATHER_SPAN 8

/* edl_gemm_gather's body; always inlined, so that its callers' constant n (a whole strip of
 * NR columns) unrolls into whole vectors. A masked row is its n values ANDed with the mask of
 * its shift (all ones where column j + t's tap falls inside the row, else 0.0f), made at its
 * first use in the strip; the rest of a 3x3 conv's rows (shift 0) are plain copies. Per row
 * of 24 the compare per value, the modulo per column and a memcpy call per unshifted row
 * had cost ~13 cycles: 9% of a 16 -> 64 3x3 conv at 55x55, now 7%. */
static inline __attribute__((always_inline)) void edl_gemm_gather_n(
        const float *b, const edl_gemm_brows *br, ptrdiff_t k0, ptrdiff_t K, ptrdiff_t j,
        ptrdiff_t n, float *dst, ptrdiff_t ldd) {
    int32_t col[48];
    uint32_t mask[2 * EDL_GATHER_SPAN + 1][48];
    unsigned char made[2 * EDL_GATHER_SPAN + 1] = {0};
    const uint32_t w = (uint32_t)br->w;
    if (br->shift) {                       /* column of j + t within its row, no division */
        int32_t cj = (int32_t)(j % br->w);
        for (ptrdiff_t t = 0; t < n; t++) {
            col[t] = cj;
            cj = cj + 1 == (int32_t)w ? 0 : cj + 1;
        }
    }
    for (ptrdiff_t k = 0; k < K; k++, dst += ldd) {
        const float *src = b + br->off[k0 + k];
        const int32_t sh = br->shift ? br->shift[k0 + k] : 0;
        if (sh == 0) {
            /* the next strip's columns: 48 rows of 16 planes are more streams than the
               prefetchers follow (16 -> 64 3x3 at 55x55 and 32 -> 128 at 27x27 1-2% faster) */
            __builtin_prefetch(src + n + 15, 0, 3);
            for (ptrdiff_t t = 0; t < n; t++) dst[t] = src[t];
        } else if (sh >= -EDL_GATHER_SPAN && sh <= EDL_GATHER_SPAN) {
            uint32_t *m = mask[sh + EDL_GATHER_SPAN];
            if (!made[sh + EDL_GATHER_SPAN]) {
                for (ptrdiff_t t = 0; t < n; t++) m[t] = (uint32_t)(col[t] + sh) < w ? ~0u : 0u;
                made[sh + EDL_GATHER_SPAN] = 1;
            }
            for (ptrdiff_t t = 0; t < n; t++) {
                uint32_t v;
                memcpy(&v, src + t, 4);
                v &= m[t];
                memcpy(dst + t, &v, 4);
            }
        } else {
            for (ptrdiff_t t = 0; t < n; t++) {
                const float v = src[t];
                dst[t] = (uint32_t)(col[t] + sh) < w ? v : 0.0f;
            }
        }
    }
}

/* Rows k0 .. k0 + K of such a B, columns [j, j + n) (n <= 48; b points at column j), into
 * dst (rows ldd apart). A masked row reads all n values and keeps those inside. */
EDL_SIMD_KERNEL static void edl_gemm_gather(const float *b, const edl_gemm_brows *br,
                                            ptrdiff_t k0, ptrdiff_t K, ptrdiff_t j, ptrdiff_t n,
                                            float *dst, ptrdiff_t ldd) {
    if (n == 24)                /* AVX2's NR */
        edl_gemm_gather_n(b, br, k0, K, j, 24, dst, ldd);
    else if (n == 48)           /* AVX-512's */
        edl_gemm_gather_n(b, br, k0, K, j, 48, dst, ldd);
    else if (n == 8)            /* the 128-bit kernels' */
        edl_gemm_gather_n(b, br, k0, K, j, 8, dst, ldd);
    else
        edl_gemm_gather_n(b, br, k0, K, j, n, dst, ldd);
}

/* One strip of C, `width` = v * W columns: C[r, 0:width] for every panel of packed A, from
 * B rows at b + k * ldb (or, given `br`, B's columns jb.. of edl_gemm_brows rows at b, copied
 * into `strip` first: the rows lie in L1 / L2, ~2% of the strip's FMAs at K = 864), with the
 * epilogue `epi` (NULL: none; its bias has M rows). Panel p
 * of A is at ap + p * ps (ps = K * MR, or the whole depth's for one K block of it); `load`
 * adds to C (the next K block; needs M >= MR). The first panel also copies the strip into
 * `strip` (K x width, contiguous) and the others read that copy: read in place, every panel
 * went back to L2 for rows ~ldb apart, which the prefetchers do not follow. ``pfa``: the
 * strip is the block's first (edl_gemm_prefetch_panel). */
static void edl_gemm_strip(const edl_gemm_kernel *kr, int v, const float *ap, ptrdiff_t ps,
                           ptrdiff_t M, ptrdiff_t K, const float *b, ptrdiff_t ldb,
                           const edl_gemm_brows *br, ptrdiff_t jb, float *c, ptrdiff_t ldc,
                           ptrdiff_t width, float *strip, const edl_gemm_epi *epi, int load,
                           int pfa) {
    int mr = kr->mr, sg = epi != NULL && epi->sig != 0;
    if (br) {
        edl_gemm_gather(b, br, 0, K, jb, width, strip, width);
        b = strip;
        ldb = width;
    }
    float tile[8 * 48];                       /* one MR x NR tile when M < MR */
    float bias_pad[8] = {0};                  /* and its bias rows */
    ptrdiff_t np = edl_gemm_panels(M, mr), ahead = pfa ? EDL_GEMM_PFA : 0;
    for (ptrdiff_t p = 0; p < ahead && p < np; p++) edl_gemm_prefetch_panel(ap + p * ps, ps);
    for (ptrdiff_t p = 0; p < np; p++) {
        const float *pa = p + ahead < np && ahead ? ap + (p + ahead) * ps : NULL;
        ptrdiff_t r0 = p * mr;
        if (r0 > M - mr) r0 = M - mr;          /* overlaps the previous panel */
        float *dst = r0 >= 0 ? c + r0 * ldc : tile;
        ptrdiff_t ldd = r0 >= 0 ? ldc : kr->nr;
        edl_gemm_epi pe, *pep = NULL;
        if (epi) {
            pe = *epi;
            if (r0 >= 0) pe.bias = epi->bias + r0;
            else {
                for (ptrdiff_t i = 0; i < M; i++) bias_pad[i] = epi->bias[i];
                pe.bias = bias_pad;
            }
            pep = &pe;
        }
        if (p == 0 && np > 1 && !br)
            kr->pk[sg][v - 1](K, ap, b, ldb, dst, ldd, strip, pep, load, pa);
        else if (p == 0)
            kr->fn[sg][v - 1](K, ap, b, ldb, dst, ldd, NULL, pep, load, pa);
        else
            kr->fn[sg][v - 1](K, ap + p * ps, strip, width, dst, ldd, NULL, pep, load, pa);
        if (r0 < 0)                            /* M < MR: zero rows in the panel */
            for (ptrdiff_t i = 0; i < M; i++)
                memcpy(c + i * ldc, tile + i * kr->nr, (size_t)width * sizeof(float));
    }
}

/* Prefetch K rows of `width` floats at b, ldb apart. A strip of B read in place (1x1 convs:
 * x itself) is K rows a whole plane apart: more streams than the hardware prefetchers follow
 * (~32), so the first panel of each strip otherwise waits on L3 / memory row by row. */
static inline void edl_gemm_prefetch_strip(const float *b, ptrdiff_t ldb, ptrdiff_t K,
                                           ptrdiff_t width) {
    for (ptrdiff_t k = 0; k < K; k++) {
        const char *r = (const char *)(b + k * ldb);
        for (ptrdiff_t o = 0; o < width * 4; o += 64) __builtin_prefetch(r + o, 0, 3);
        __builtin_prefetch(r + width * 4 - 4, 0, 3);
    }
}

/* Whether a strip of K rows of B ldb floats apart, read in place, is prefetched ahead
 * (edl_gemm_prefetch_strip): on the AVX-512 Xeon 64 -> 64 at 80x80 out of cache ran 3-12%
 * faster with it (at K = 16 the prefetches only cost); on Zen 3 (AVX2) it gained nowhere
 * and cost 1-2% (64 -> 64 at 80x80 banded in PwDwF32 767 -> 752 us without; 256 -> 64 at
 * 56x56, 32 -> 32 at 160x160 the same or better; A/B in alternating processes). */
static inline int edl_gemm_strip_prefetch(ptrdiff_t K, ptrdiff_t ldb) {
#ifdef EDL_X86_MV
    if (edl_x86_level() == 1) return 0;
#endif
    return K >= 32 && ldb * 4 >= 4096;
}

/* Floats of scratch edl_gemm_cols needs: a packed strip of B, and for blocks narrower than
 * NR a zero-padded copy of B and an M x NR block of C. The caller allocates it once (per
 * thread), not per block. */
static inline ptrdiff_t edl_gemm_scratch(ptrdiff_t M, ptrdiff_t K) {
    return (2 * (K > 0 ? K : 1) + M) * edl_gemm_nr();
}

/* One K block of C[:, j0:j1] += A[:, k0:k0+kc] @ B[k0:k0+kc, j0:j1]: `b` points at B's row k0
 * (or B's rows are `br`'s, already from row k0 on),
 * A is the whole packed A (depth K, in blocks of np_all panels), M a multiple of MR: the M rows
 * from panel p0 (c and epi->bias point at row p0 * MR). `first`: C = instead of +=; `last`: the
 * epilogue `epi` too. Blocks must come in order over the same columns (their sums are then
 * those of one pass). The ragged last strip would overlap its neighbour (and add twice): it
 * takes a zero-padded copy of its columns and an M x NR block of C in scratch, kept from
 * block to block and copied out with the last. */
static void edl_gemm_cols_kp(const float *ap, ptrdiff_t np_all, ptrdiff_t p0, ptrdiff_t M,
                             ptrdiff_t K, ptrdiff_t k0, ptrdiff_t kc, const float *b,
                             ptrdiff_t ldb, const edl_gemm_brows *br, float *c, ptrdiff_t ldc,
                             ptrdiff_t j0, ptrdiff_t j1, float *scratch,
                             const edl_gemm_epi *epi, int first, int last) {
    edl_gemm_kernel kr = edl_gemm_select();
    ptrdiff_t nr = kr.nr, ps = kc * kr.mr, jf = j0 + (j1 - j0) / nr * nr;
    float *strip = scratch, *pad = strip + (K > 0 ? K : 1) * nr, *cb = pad + (K > 0 ? K : 1) * nr;
    int tv = (int)((j1 - jf + kr.w - 1) / kr.w);     /* vectors of the ragged strip */
    int prefetch = !br && edl_gemm_strip_prefetch(kc, ldb);
    const edl_gemm_epi *e = last ? epi : NULL;
    ptrdiff_t np = edl_gemm_panels(M, kr.mr);
    ap += k0 * np_all * kr.mr + p0 * kc * kr.mr;      /* this block's panels */
    for (ptrdiff_t j = j0; j < jf; j += nr) {
        if (prefetch && j + nr < jf) edl_gemm_prefetch_strip(b + j + nr, ldb, kc, nr);
        edl_gemm_strip(&kr, kr.nv, ap, ps, M, kc, b + j, ldb, br, j, c + j, ldc, nr, strip, e,
                       !first, j == j0);
    }
    /* a few columns: the narrow kernels, B in place or (br) its columns gathered; not with
       a sigmoid / SiLU epilogue where the columns come from im2col rows (br), whose blocks of
       output rows, and so ragged ends, change with the thread count: the narrow kernels'
       scalar sigmoid may differ from the tiles' by an ulp */
    const float *bn = b;
    ptrdiff_t ldn = ldb, jn = 0;
    if (jf < j1 && j1 - jf <= 8 && br && !(epi && epi->sig)) {
        edl_gemm_gather(b + jf, br, 0, kc, jf, j1 - jf, pad, j1 - jf);
        bn = pad;
        ldn = j1 - jf;
        jn = jf;
    }
    if (jf < j1 && j1 - jf <= 8 && (!br || bn == pad)) {
        for (ptrdiff_t p = 0; p < np;) {
            int g = np - p >= 4;                  /* 4 panels at once, or 1 */
            edl_gemm_epi pe, *pep = NULL;
            if (e) {
                pe = *e;
                pe.bias = e->bias + p * kr.mr;
                pep = &pe;
            }
            for (ptrdiff_t j = jf; j < j1; j += 4) {
                int t = j1 - j < 4 ? (int)(j1 - j) : 4;
                kr.nw[g][t - 1](kc, ap + p * ps, ps, bn + (j - jn), ldn,
                                c + p * kr.mr * ldc + j, ldc, pep, !first);
            }
            p += g ? 4 : 1;
        }
    } else if (jf < j1 && (j1 - jf) % kr.w == 0) {   /* whole vectors: B and C in place */
        edl_gemm_strip(&kr, tv, ap, ps, M, kc, b + jf, ldb, br, jf, c + jf, ldc, j1 - jf,
                       strip, e, !first, jf == j0);
    } else if (jf < j1) {
        if (br) edl_gemm_gather(b + jf, br, 0, kc, jf, j1 - jf, pad, nr);
        for (ptrdiff_t k = 0; k < kc; k++) {
            if (!br) memcpy(pad + k * nr, b + k * ldb + jf, (size_t)(j1 - jf) * sizeof(float));
            memset(pad + k * nr + (j1 - jf), 0, (size_t)(tv * kr.w - (j1 - jf)) * sizeof(float));
        }
        edl_gemm_strip(&kr, tv, ap, ps, M, kc, pad, nr, NULL, 0, cb, nr, tv * kr.w, strip, e,
                       !first, jf == j0);
        if (last)
            for (ptrdiff_t i = 0; i < M; i++)
                memcpy(c + i * ldc + jf, cb + i * nr, (size_t)(j1 - jf) * sizeof(float));
    }
}

/* edl_gemm_cols_kp over every panel of A */
static inline void edl_gemm_cols_k(const float *ap, ptrdiff_t M, ptrdiff_t K, ptrdiff_t k0,
                                   ptrdiff_t kc, const float *b, ptrdiff_t ldb, float *c,
                                   ptrdiff_t ldc, ptrdiff_t j0, ptrdiff_t j1, float *scratch,
                                   const edl_gemm_epi *epi, int first, int last) {
    edl_gemm_cols_kp(ap, edl_gemm_panels(M, edl_gemm_mr()), 0, M, K, k0, kc, b, ldb, NULL, c,
                     ldc, j0, j1, scratch, epi, first, last);
}

/* C[:, j0:j1] = A @ B[:, j0:j1] for packed A (M rows, depth K, not K-blocked), strip by strip
 * of NR columns, with the epilogue `epi` (NULL: none); `scratch` holds edl_gemm_scratch(M, K)
 * floats. Fewer than NR columns are computed from a zero-padded copy of B into scratch,
 * then copied into C. */
static void edl_gemm_cols_1(const float *ap, ptrdiff_t M, ptrdiff_t K, const float *b,
                            ptrdiff_t ldb, const edl_gemm_brows *br, float *c, ptrdiff_t ldc,
                            ptrdiff_t j0, ptrdiff_t j1, float *scratch,
                            const edl_gemm_epi *epi) {
    edl_gemm_kernel kr = edl_gemm_select();
    int nr = kr.nr;
    ptrdiff_t n = j1 - j0, ps = K * kr.mr;
    float *strip = scratch;
    if (n <= 0) return;
    if (n < nr && n % kr.w == 0) {     /* whole vectors: the narrow kernel reads B in place */
        edl_gemm_strip(&kr, (int)(n / kr.w), ap, ps, M, K, b + j0, ldb, br, j0, c + j0, ldc,
                       n, strip, epi, 0, 1);
        return;
    }
    if (n < nr) {       /* the narrowest kernel over a zero-padded copy, rows `wd` wide */
        float *pad = strip + (K > 0 ? K : 1) * nr, *cb = pad + (K > 0 ? K : 1) * nr;
        int nv = (int)((n + kr.w - 1) / kr.w);
        ptrdiff_t wd = nv * kr.w;
        if (br) edl_gemm_gather(b + j0, br, 0, K, j0, n, pad, wd);
        for (ptrdiff_t k = 0; k < K; k++) {      /* short rows: no memcpy / memset calls */
            const float *src = b + k * ldb + j0;
            float *dst = pad + k * wd;
            if (!br)
                for (ptrdiff_t j = 0; j < n; j++) dst[j] = src[j];
            for (ptrdiff_t j = n; j < wd; j++) dst[j] = 0.0f;
        }
        edl_gemm_strip(&kr, nv, ap, ps, M, K, pad, wd, NULL, 0, cb, nr, wd, strip, epi, 0, 1);
        for (ptrdiff_t i = 0; i < M; i++)
            memcpy(c + i * ldc + j0, cb + i * nr, (size_t)n * sizeof(float));
        return;
    }
    /* B read in place with rows far apart (1x1 convs): past ~32 rows the hardware
       prefetchers lose track of the streams (edl_gemm_strip_prefetch) */
    int prefetch = !br && edl_gemm_strip_prefetch(K, ldb);
    for (ptrdiff_t j = j0; j < j1; j += nr) {
        /* the last strip: the narrowest kernel that covers it, ending at j1 (it overlaps
           the previous strip by less than one vector) */
        int nv = kr.nv;
        ptrdiff_t rest = j1 - j;
        if (rest < nr) nv = (int)((rest + kr.w - 1) / kr.w);
        ptrdiff_t width = nv * kr.w, js = j + width <= j1 ? j : j1 - width;
        if (prefetch && j + nr < j1)      /* the next strip's K rows */
            edl_gemm_prefetch_strip(b + j + nr, ldb, K, j1 - j - nr < nr ? j1 - j - nr : nr);
        edl_gemm_strip(&kr, nv, ap, ps, M, K, b + js, ldb, br, js, c + js, ldc, width, strip,
                       epi, 0, j == j0);
    }
}

/* C[:, j0:j1] = A @ B[:, j0:j1] for packed A (M rows, depth K): block by block where A is
 * packed in K blocks (edl_gemm_kblocks), else edl_gemm_cols_1. B's row k is at b + k * ldb,
 * or, given `br` (then ldb is ignored), it is row k of edl_gemm_brows at b: a stride-1 conv's
 * im2col read where it lies in the input planes instead of copied out first (96 -> 96 3x3 at
 * 28 x 28: a 2.9 MB im2col, past L2, for a 0.3 MB input). With `br`, a ragged last strip of
 * a K-blocked GEMM takes the narrow kernels on its gathered columns (up to 8, no sigmoid /
 * SiLU: 7 x 7 outputs, 48 + 1 columns, ran a whole 16-column tile for the one), else the
 * zero-padded copy. */
static void edl_gemm_cols(const float *ap, ptrdiff_t M, ptrdiff_t K, const float *b,
                          ptrdiff_t ldb, const edl_gemm_brows *br, float *c, ptrdiff_t ldc,
                          ptrdiff_t j0, ptrdiff_t j1, float *scratch, const edl_gemm_epi *epi) {
    ptrdiff_t nkb = edl_gemm_kblocks(M, K);
    if (j1 <= j0) return;
    if (nkb == 1) {
        edl_gemm_cols_1(ap, M, K, b, ldb, br, c, ldc, j0, j1, scratch, epi);
        return;
    }
    for (ptrdiff_t kb = 0; kb < nkb; kb++) {
        ptrdiff_t k0 = kb * K / nkb, k1 = (kb + 1) * K / nkb;
        edl_gemm_brows sub;                        /* the block's rows */
        if (br) {
            sub = *br;
            sub.off += k0;
            if (sub.shift) sub.shift += k0;
        }
        edl_gemm_cols_kp(ap, edl_gemm_panels(M, edl_gemm_mr()), 0, M, K, k0, k1 - k0,
                         br ? b : b + k0 * ldb, ldb, br ? &sub : NULL, c, ldc, j0, j1, scratch,
                         epi, kb == 0, kb == nkb - 1);
    }
}

/* Rows of panels p0 .. p1 of C = A @ B[:, j0:j1] (rows p0 * MR .. min(p1 * MR, M)), so that
 * threads can split the filters of a GEMM with few columns: each reads its part of A only
 * (the late 1x1 convs of a CNN: 169 columns, 256 x 512 weights). M >= MR. */
static void edl_gemm_rows(const float *ap, ptrdiff_t M, ptrdiff_t K, ptrdiff_t p0, ptrdiff_t p1,
                          const float *b, ptrdiff_t ldb, float *c, ptrdiff_t ldc, ptrdiff_t j0,
                          ptrdiff_t j1, float *scratch, const edl_gemm_epi *epi) {
    ptrdiff_t mr = edl_gemm_mr(), np = edl_gemm_panels(M, mr), nkb = edl_gemm_kblocks(M, K);
    ptrdiff_t r0 = p0 * mr, rows = (p1 >= np ? M : p1 * mr) - r0;
    edl_gemm_epi sub, *se = NULL;
    if (p1 <= p0 || j1 <= j0) return;
    if (epi) {
        sub = *epi;
        sub.bias = epi->bias + r0;
        se = &sub;
    }
    /* the packed panels from p0 on are laid out as those of an A of `rows` rows (the last one
       starts at M - MR in both), block by block where A is K-blocked */
    if (nkb == 1) {
        edl_gemm_cols_1(ap + p0 * K * mr, rows, K, b, ldb, NULL, c + r0 * ldc, ldc, j0, j1,
                        scratch, se);
        return;
    }
    for (ptrdiff_t kb = 0; kb < nkb; kb++) {
        ptrdiff_t k0 = kb * K / nkb, k1 = (kb + 1) * K / nkb;
        edl_gemm_cols_kp(ap, np, p0, rows, K, k0, k1 - k0, b + k0 * ldb, ldb, NULL, c + r0 * ldc,
                         ldc, j0, j1, scratch, se, kb == 0, kb == nkb - 1);
    }
}

#endif
