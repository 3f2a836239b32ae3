/* im2col of narrow outputs for the float convs (conv.pyx; any element type T).

   Row r of the columns is channel r / (kh kw), tap (i, j) = (r / kw % kh, r % kw): the oh x ow
   input values that tap reads, `fill` where it falls in the padding (0, or the 8-bit zero
   point). The per-row paths (edl_im2col_s1_*, the u8 rows) call memset / memcpy a few times
   a row and divide to find the row's channel and tap: on the small planes of a detector's
   heads (3x3 convs over 256 channels at 4 x 5: 2304 rows of 20 values) those fixed costs
   were most of the conv and it took 3.5x onnxruntime's time. Here one call walks a range of
   rows with the channel and tap counted along, and every copy is an inline loop. (The same
   walk over bytes measured slower than quant.pyx's flat memcpy path: not used there.) */
#ifndef EDL_IM2COL_H
#define EDL_IM2COL_H
#include <stddef.h>

/* Outputs below this width take edl_im2col_rows_*; wider rows the per-row paths, whose
   memcpy and vector gathers beat an inline loop once a row has a few vectors. */
#define EDL_IM2COL_NARROW 32

/* gcc turns the short copy / fill loops back into memcpy / memset calls unless told not to */
#if defined(__GNUC__) && !defined(__clang__)
#define EDL_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define EDL_NO_LIBCALLS
#endif

#define EDL_IM2COL_ROWS(T, S)                                                               \
EDL_NO_LIBCALLS static void edl_im2col_rows_##S(const T *x, ptrdiff_t h, ptrdiff_t w, ptrdiff_t r0,       \
                                ptrdiff_t r1, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t sh,   \
                                ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t dh,   \
                                ptrdiff_t dw, ptrdiff_t oh, ptrdiff_t ow, T fill,          \
                                T *restrict dst) {                                         \
    if (r1 <= r0 || kh <= 0 || kw <= 0) return;                                            \
    const ptrdiff_t kk = kh * kw, n = oh * ow;                                             \
    ptrdiff_t ch = r0 / kk, i = r0 % kk / kw, j = r0 % kw;                                 \
    for (ptrdiff_t r = r0; r < r1; r++, dst += n) {                                        \
        const T *plane = x + ch * h * w;                                                   \
        const ptrdiff_t off = j * dw - pw;                                                 \
        /* outputs [lo, hi) of a row read columns inside the image */                      \
        ptrdiff_t lo, hi;                                                                   \
        if (sw == 1) {                                                                      \
            lo = off < 0 ? -off : 0;                                                        \
            hi = w - off;                                                                   \
        } else {                                                                            \
            lo = off < 0 ? (-off + sw - 1) / sw : 0;                                        \
            hi = w - off <= 0 ? 0 : (w - 1 - off) / sw + 1;                                 \
        }                                                                                   \
        if (lo > ow) lo = ow;                                                               \
        if (hi > ow) hi = ow;                                                               \
        if (hi < lo) hi = lo;                                                               \
        for (ptrdiff_t oy = 0; oy < oh; oy++) {                                            \
            const ptrdiff_t iy = oy * sh - ph + i * dh;                                    \
            T *restrict d = dst + oy * ow;                                                  \
            ptrdiff_t k = 0;                                                                \
            if (iy < 0 || iy >= h) {                                                        \
                for (; k < ow; k++) d[k] = fill;                                            \
                continue;                                                                   \
            }                                                                               \
            const T *row = plane + iy * w;                                                  \
            for (; k < lo; k++) d[k] = fill;                                                \
            if (sw == 1)                                                                    \
                for (; k < hi; k++) d[k] = row[k + off];                                    \
            else                                                                            \
                for (; k < hi; k++) d[k] = row[k * sw + off];                               \
            for (; k < ow; k++) d[k] = fill;                                                \
        }                                                                                   \
        if (++j == kw) {                  /* the next tap, channel after the last tap */   \
            j = 0;                                                                          \
            if (++i == kh) { i = 0; ch++; }                                                 \
        }                                                                                   \
    }                                                                                       \
}

#endif
