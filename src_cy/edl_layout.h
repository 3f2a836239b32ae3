/* edl_layout.h - the batched 2-D transpose of layout.pyx: y (nc x nr) = x (nr x nc)^T.
 *
 * Tiles of 32 x 32 elements keep a tile's source rows in L1 while its destination rows are
 * written in order. Inside a tile, 4-byte values go 8 x 8 at a time through registers: eight
 * 8-lane rows loaded, transposed by three rounds of two-source shuffles (pairs of lanes, then
 * pairs of pairs, then halves: AVX's unpack / shuffle / permute2f128 pattern, written with
 * GCC's generic vectors so that every target gets its own shuffles: two SSE registers a
 * vector on baseline x86-64, NEON zips on ARM), stored as eight rows. The scalar loop was
 * ~1.2 cycles an element (YOLOX's 85 x 3549 head: 95 us, NumPy's strided copy 115 us);
 * edges that do not fill an 8 x 8 block stay scalar. */
#ifndef EDL_LAYOUT_H
#define EDL_LAYOUT_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "edl_math.h"

#define EDL_LAYOUT_TILE 32

typedef uint32_t edl_v8u32 __attribute__((vector_size(32)));

/* y[c * ldy + r] = x[r * ldx + c] for r, c < 8 */
/* (always inlined: each clone of the caller then shuffles with its own instructions) */
static inline __attribute__((always_inline)) void
edl_transpose8x8_u32(const uint32_t *x, ptrdiff_t ldx, uint32_t *y, ptrdiff_t ldy) {
    edl_v8u32 a[8], t[8], u[8];
    for (int i = 0; i < 8; i++) memcpy(&a[i], x + i * ldx, sizeof a[i]);
    for (int i = 0; i < 8; i += 2) {          /* lanes of row pairs interleaved */
        t[i] = __builtin_shuffle(a[i], a[i + 1], (edl_v8u32){0, 8, 1, 9, 4, 12, 5, 13});
        t[i + 1] = __builtin_shuffle(a[i], a[i + 1], (edl_v8u32){2, 10, 3, 11, 6, 14, 7, 15});
    }
    for (int i = 0; i < 8; i += 4)            /* then pairs of them */
        for (int j = 0; j < 2; j++) {
            u[i + 2 * j] = __builtin_shuffle(t[i + j], t[i + j + 2],
                                             (edl_v8u32){0, 1, 8, 9, 4, 5, 12, 13});
            u[i + 2 * j + 1] = __builtin_shuffle(t[i + j], t[i + j + 2],
                                                 (edl_v8u32){2, 3, 10, 11, 6, 7, 14, 15});
        }
    for (int c = 0; c < 4; c++) {             /* halves: columns c and c + 4 */
        edl_v8u32 lo = __builtin_shuffle(u[c], u[c + 4], (edl_v8u32){0, 1, 2, 3, 8, 9, 10, 11});
        edl_v8u32 hi = __builtin_shuffle(u[c], u[c + 4],
                                         (edl_v8u32){4, 5, 6, 7, 12, 13, 14, 15});
        memcpy(y + c * ldy, &lo, sizeof lo);
        memcpy(y + (c + 4) * ldy, &hi, sizeof hi);
    }
}

/* Four rows of 8 -> 32 contiguous values y[4 c + r] = x[r * ldx + c]: a box head's
   NCHW -> NHWC (4 channels), whose output rows are too short for 8 x 8 blocks */
static inline __attribute__((always_inline)) void
edl_interleave4_u32(const uint32_t *x, ptrdiff_t ldx, uint32_t *y) {
    edl_v8u32 a[4], t[4];
    for (int i = 0; i < 4; i++) memcpy(&a[i], x + i * ldx, sizeof a[i]);
    for (int i = 0; i < 4; i += 2) {
        t[i] = __builtin_shuffle(a[i], a[i + 1], (edl_v8u32){0, 8, 1, 9, 2, 10, 3, 11});
        t[i + 1] = __builtin_shuffle(a[i], a[i + 1], (edl_v8u32){4, 12, 5, 13, 6, 14, 7, 15});
    }
    for (int j = 0; j < 2; j++) {
        edl_v8u32 lo = __builtin_shuffle(t[j], t[j + 2], (edl_v8u32){0, 1, 8, 9, 2, 3, 10, 11});
        edl_v8u32 hi = __builtin_shuffle(t[j], t[j + 2],
                                         (edl_v8u32){4, 5, 12, 13, 6, 7, 14, 15});
        memcpy(y + 16 * j, &lo, sizeof lo);
        memcpy(y + 16 * j + 8, &hi, sizeof hi);
    }
}

/* Output rows [c0, c1) of one batch: y (nc x nr) = x (nr x nc)^T, 4-byte values. */
EDL_SIMD_KERNEL static void edl_transpose_cols_u32(const uint32_t *x, uint32_t *y,
                                                   ptrdiff_t nr, ptrdiff_t nc, ptrdiff_t c0,
                                                   ptrdiff_t c1) {
    if (nr == 4) {
        ptrdiff_t c = c0;
        for (; c + 8 <= c1; c += 8) edl_interleave4_u32(x + c, nc, y + 4 * c);
        for (; c < c1; c++)
            for (ptrdiff_t r = 0; r < 4; r++) y[4 * c + r] = x[r * nc + c];
        return;
    }
    for (ptrdiff_t r0 = 0; r0 < nr; r0 += EDL_LAYOUT_TILE) {
        ptrdiff_t r1 = r0 + EDL_LAYOUT_TILE < nr ? r0 + EDL_LAYOUT_TILE : nr;
        ptrdiff_t rb = r0 + (r1 - r0) / 8 * 8;          /* whole 8-row blocks end here */
        ptrdiff_t c = c0;
        for (; c + 8 <= c1; c += 8) {
            for (ptrdiff_t r = r0; r < rb; r += 8)
                edl_transpose8x8_u32(x + r * nc + c, nc, y + c * nr + r, nr);
            for (ptrdiff_t cc = c; cc < c + 8; cc++)
                for (ptrdiff_t r = rb; r < r1; r++) y[cc * nr + r] = x[r * nc + cc];
        }
        for (; c < c1; c++)
            for (ptrdiff_t r = r0; r < r1; r++) y[c * nr + r] = x[r * nc + c];
    }
}
#endif
