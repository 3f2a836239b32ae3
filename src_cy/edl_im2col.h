/* im2col of narrow outputs (< EDL_IM2COL_NARROW columns), for any element type T.

   Row r of the columns is channel r / (kh kw), tap (i, j) = (r / kw % kh, r % kw): the oh x ow
   input values that tap reads, `fill` where it falls in the padding (0, or the 8-bit zero
   point). The per-row paths (edl_im2col_s1_*, the u8 rows) call memset / memcpy a few times
   a row and divide to find the row's channel and tap: on the small planes of a detector's
   heads (3x3 convs over 256 channels at 4 x 5: 2304 rows of 20 values) those fixed costs
   were most of the conv and it took 3.5x onnxruntime's time. Ways out here:
   - EDL_IM2COL_PADDED (stride 1; bytes in quant.pyx): one copy of the padded planes, then
     one contiguous run a tap, the GEMM computing a few junk columns; float32 (conv.pyx)
     keeps only the padded planes and has its GEMM read those runs in place (row offsets);
   - edl_rows_layout (float32, stride 1, rows as wide as the input's): the planes between
     zero rows, read by offsets with the edge taps masked: no copy a tap, no junk columns;
   - EDL_IM2COL_ROWS (float, any stride: what stride 1 does not cover): one call walks a
     range of rows with the channel and tap counted along, every copy an inline loop (the
     same walk over bytes measured slower than quant.pyx's flat memcpy path). */
#ifndef EDL_IM2COL_H
#define EDL_IM2COL_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Outputs below this width take these paths; wider rows the per-row ones, whose memcpy and
   vector gathers beat an inline loop once a row has a few vectors. */
#define EDL_IM2COL_NARROW 32

/* Whether a conv takes EDL_IM2COL_PADDED (the one rule for the float and the 8-bit convs):
   stride 1, a kernel wider than one tap, narrow outputs, at most 1024 of them (the columns
   are K x oh x wq values of scratch), and at most 3x junk columns (wide taps on planes of 1-3
   columns keep the per-row path). */
static inline int edl_im2col_padded_ok(ptrdiff_t oh, ptrdiff_t ow, ptrdiff_t kh, ptrdiff_t kw,
                                       ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t dw) {
    return sh == 1 && sw == 1 && kh * kw > 1 && ow < EDL_IM2COL_NARROW && oh * ow <= 1024
           && (kw - 1) * dw <= 3 * ow;
}

/* gcc turns the short copy / fill loops back into memcpy / memset calls unless told not to */
#if defined(__GNUC__) && !defined(__clang__)
#define EDL_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define EDL_NO_LIBCALLS
#endif

#define EDL_IM2COL_ROWS(T, S)                                                               \
EDL_NO_LIBCALLS EDL_SIMD_KERNEL static void edl_im2col_rows_##S(                           \
        const T *x, ptrdiff_t h, ptrdiff_t w, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t kh,    \
        ptrdiff_t kw, ptrdiff_t sh, ptrdiff_t sw, ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t dh, \
        ptrdiff_t dw, ptrdiff_t oh, ptrdiff_t ow, T fill, T *restrict dst) {               \
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
            else if (sw == 2)   /* a constant stride: vector loads and shuffles */          \
                for (; k < hi; k++) d[k] = row[2 * k + off];                                \
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

/* Stride 1, narrow outputs: the im2col of the padded width. The planes are copied once into
   `pad` with their padding (fill) around them, hq = oh + (kh - 1) dh rows of
   wq = ow + (kw - 1) dw values (edl_pad_planes_*); then tap (i, j) of a channel is ONE
   contiguous run of oh * wq values of its padded plane (output q = oy * wq + ox reads
   pad[(oy + i dh) wq + ox + j dw]): edl_im2col_padded_* copies it with one memcpy into a row
   of `ld` >= oh * wq values, the float32 GEMM reads it in place (edl_padded_row_offsets). The
   wq - ow values past each output row, and the ld - oh * wq after the last, are junk the
   caller drops (ld rounds a row up for a packing step, quant.pyx). A run may read up to
   (kw - 1) dw + ld - oh * wq values past its plane (into the next, or the tail): junk
   columns only; `pad` holds c * hq * wq + (kw - 1) * dw + ld - oh * wq values. Against
   the per-row walk this is one call a tap instead of a loop per output row of 4-20 values:
   the 3x3 heads over 256 channels at 4 x 5 spent most of their time there. */
#define EDL_IM2COL_PADDED(T, S)                                                             \
EDL_NO_LIBCALLS static void edl_pad_planes_##S(                                            \
        const T *x, ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t kw,     \
        ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t dh, ptrdiff_t dw, ptrdiff_t oh, ptrdiff_t ow, \
        T fill, T *restrict pad, ptrdiff_t ld) {                                           \
    const ptrdiff_t wq = ow + (kw - 1) * dw, hq = oh + (kh - 1) * dh;                     \
    const ptrdiff_t plane = hq * wq, n = oh * wq;                                         \
    /* padded columns [x0, x1) hold input columns [x0 - pw, x1 - pw) */                  \
    const ptrdiff_t x0 = pw < wq ? pw : wq, x1 = w + pw < wq ? w + pw : wq;               \
    for (ptrdiff_t ch = 0; ch < c; ch++)                                                  \
        for (ptrdiff_t yy = 0; yy < hq; yy++) {                                           \
            T *restrict d = pad + ch * plane + yy * wq;                                   \
            const ptrdiff_t iy = yy - ph;                                                 \
            ptrdiff_t k = 0;                                                              \
            if (iy >= 0 && iy < h) {                                                      \
                const T *src = x + (ch * h + iy) * w + (x0 - pw);                        \
                for (; k < x0; k++) d[k] = fill;                                          \
                for (; k < x1; k++) d[k] = src[k - x0];                                   \
            }                                                                             \
            for (; k < wq; k++) d[k] = fill;                                              \
        }                                                                                 \
    for (ptrdiff_t k = 0; k < (kw - 1) * dw + ld - n; k++) pad[c * plane + k] = fill;     \
}                                                                                         \
static void edl_im2col_padded_##S(                                                        \
        const T *x, ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t kw,     \
        ptrdiff_t ph, ptrdiff_t pw, ptrdiff_t dh, ptrdiff_t dw, ptrdiff_t oh, ptrdiff_t ow, \
        T fill, T *restrict pad, T *restrict cols, ptrdiff_t ld) {                         \
    const ptrdiff_t wq = ow + (kw - 1) * dw, plane = (oh + (kh - 1) * dh) * wq;           \
    edl_pad_planes_##S(x, c, h, w, kh, kw, ph, pw, dh, dw, oh, ow, fill, pad, ld);        \
    for (ptrdiff_t ch = 0; ch < c; ch++)                                                  \
        for (ptrdiff_t i = 0; i < kh; i++)                                                \
            for (ptrdiff_t j = 0; j < kw; j++, cols += ld)                                \
                memcpy(cols, pad + ch * plane + i * dh * wq + j * dw, (size_t)ld * sizeof(T));\
}

/* off[r] = where row r of that im2col starts in `pad` (channel r / (kh kw), tap (i, j)) */
static inline void edl_padded_row_offsets(ptrdiff_t c, ptrdiff_t kh, ptrdiff_t kw,
                                          ptrdiff_t dh, ptrdiff_t dw, ptrdiff_t oh,
                                          ptrdiff_t ow, ptrdiff_t *off) {
    const ptrdiff_t wq = ow + (kw - 1) * dw, plane = (oh + (kh - 1) * dh) * wq;
    for (ptrdiff_t ch = 0; ch < c; ch++)
        for (ptrdiff_t i = 0; i < kh; i++)
            for (ptrdiff_t j = 0; j < kw; j++)
                *off++ = ch * plane + i * dh * wq + j * dw;
}

/* Stride 1 with rows that keep their width (pl + pr = (kw - 1) dw: "same" padding, ow = w):
   the planes laid out whole between pt zero rows above and pb below (hq = h + pt + pb rows of
   w), after pl leading values and before pr trailing ones (their values are read, never
   used): pad holds pl + c hq w + pr. Row r of the im2col (channel r / (kh kw), tap (i, j))
   is the run at off[r] = pl + ch hq w + i dh w + j dw - pl, its columns shifted by
   shift[r] = j dw - pl (edl_gemm_brows: the columns that then fall outside the row read as
   0). Against an im2col no copy a tap, and against the padded width (edl_im2col_padded_*)
   no junk columns (at 13 x 13 those were 23% of the GEMM: 208 columns for 169, at 7 x 7
   31%) and C is the output itself. edl_rows_layout: the offsets and shifts, the lead and
   trail zeroed; edl_rows_planes_f: planes c0 .. c1 copied in. */
static void edl_rows_layout(ptrdiff_t c, ptrdiff_t h, ptrdiff_t w, ptrdiff_t kh, ptrdiff_t kw,
                            ptrdiff_t pt, ptrdiff_t pb, ptrdiff_t pl, ptrdiff_t pr,
                            ptrdiff_t dh, ptrdiff_t dw, float *pad, ptrdiff_t *off,
                            int32_t *shift) {
    const ptrdiff_t plane = (h + pt + pb) * w;
    memset(pad, 0, (size_t)pl * sizeof(float));
    memset(pad + pl + c * plane, 0, (size_t)pr * sizeof(float));
    for (ptrdiff_t ch = 0; ch < c; ch++)
        for (ptrdiff_t i = 0; i < kh; i++)
            for (ptrdiff_t j = 0; j < kw; j++) {
                *off++ = pl + ch * plane + i * dh * w + j * dw - pl;
                *shift++ = (int32_t)(j * dw - pl);
            }
}
static void edl_rows_planes_f(const float *x, ptrdiff_t c0, ptrdiff_t c1, ptrdiff_t h,
                              ptrdiff_t w, ptrdiff_t pt, ptrdiff_t pb, ptrdiff_t pl,
                              float *restrict pad) {
    const ptrdiff_t plane = (h + pt + pb) * w;
    for (ptrdiff_t ch = c0; ch < c1; ch++) {
        float *d = pad + pl + ch * plane;
        memset(d, 0, (size_t)(pt * w) * sizeof(float));
        memcpy(d + pt * w, x + ch * h * w, (size_t)(h * w) * sizeof(float));
        memset(d + (pt + h) * w, 0, (size_t)(pb * w) * sizeof(float));
    }
}

#endif
