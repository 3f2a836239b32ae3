# cython: boundscheck=False, wraparound=False, cdivision=True
"""Cython twins of edgedl.kernels._ref.quant (same names and arguments; see there).

The public wrapper validated every shape and dtype and made the arrays C-contiguous, hence no
bounds checks. The inner loops are plain C in edl_quant.h that gcc vectorises: the GEMM packs
each column tile of b as interleaved int16 pairs of rows (multiply-add pairs into int32: exact
for 8-bit operands), four rows of a per pass; tiles run in parallel. Depthwise walks each
tap's valid output range (no branches inside). Requantization is onnxruntime's: float32
product, clamp, round half to even, saturate.
"""
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from cpython.buffer cimport PyBuffer_Release, PyBUF_ND
from edl_buffer cimport PyBUF_FORMAT, PyErr_Clear, disjoint, get_buffer, get_pair, release_pair
from edl_omp cimport omp_get_max_threads, omp_set_num_threads

import numpy as np

cdef extern from "edl_quant.h" nogil:
    # int32_t / short there are int / short here (the same C types on every target)
    void edl_qgemm_pairs(const short *a, const short *bp, int *acc, Py_ssize_t lda,
                         Py_ssize_t m, Py_ssize_t kp2, Py_ssize_t nq)
    int edl_q_u8s8()
    int edl_q_amx()
    int edl_im2col_padded_ok(Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dw)
    void edl_im2col_padded_u8(const unsigned char *x, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                              Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                              Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow,
                              unsigned char fill, unsigned char *pad, unsigned char *cols,
                              Py_ssize_t ld)
    Py_ssize_t edl_q_u8s8_cols()
    void edl_lookup(const unsigned char *x, const unsigned char *t, unsigned char *out,
                    Py_ssize_t n)
    void edl_qgemm_u8s8(const signed char *a, const unsigned char *bq, int *acc,
                        Py_ssize_t lda, Py_ssize_t m, Py_ssize_t kq, Py_ssize_t nq)
    void edl_qpack4_u8(const unsigned char *b, Py_ssize_t ldb, Py_ssize_t rows, Py_ssize_t nq,
                       Py_ssize_t nq16, unsigned char *d)
    void edl_qpack_u8(const unsigned char *b0, const unsigned char *b1, short *d, Py_ssize_t nq)
    void edl_qpack_s8(const signed char *b0, const signed char *b1, short *d, Py_ssize_t nq)
    void edl_qdw3_u8(const unsigned char *x0, const unsigned char *x1, const unsigned char *x2,
                     const int *w, int corr, int *d, Py_ssize_t n)
    void edl_qdwk_u8_fast(const unsigned char *x, Py_ssize_t wp, Py_ssize_t kh, Py_ssize_t kw,
                          const int *w, int w8, int corr, int *d, Py_ssize_t n)
    void edl_qdw3_u8_fast(const unsigned char *x0, const unsigned char *x1,
                          const unsigned char *x2, const int *w, int w8, int corr, int *d,
                          Py_ssize_t n)
    ctypedef struct edl_qcd_plan:
        Py_ssize_t ng
    int edl_qcd_make_plan(edl_qcd_plan *p, Py_ssize_t c, Py_ssize_t kh, Py_ssize_t kw,
                          Py_ssize_t sw, Py_ssize_t hp, Py_ssize_t wp)
    void edl_qconv_direct_rows_vnni(const unsigned char *buf, Py_ssize_t wp, Py_ssize_t sh,
                               Py_ssize_t sw, const edl_qcd_plan *p, const int *w4,
                               Py_ssize_t m, const int *corr, const float *scale, int zp,
                               int s8, unsigned char *out, Py_ssize_t oh, Py_ssize_t ow,
                               Py_ssize_t oy0, Py_ssize_t oy1)
    ctypedef struct edl_qdwf_plan:
        Py_ssize_t ng
    int edl_qdwf_make_plan(edl_qdwf_plan *p, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t wp)
    void edl_qdw_flat_vnni512(const edl_qdwf_plan *p, const unsigned char *x, Py_ssize_t wp,
                              Py_ssize_t kh, Py_ssize_t kw, const int *w, int corr, int bias,
                              float scale, int zp, int s8, unsigned char *tmp,
                              unsigned char *out, Py_ssize_t oh, Py_ssize_t ow)
    int edl_qdw_plane_rq(const unsigned char *x, Py_ssize_t wp, Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t sh, Py_ssize_t sw, const int *w, int w8, int corr,
                         int bias, float scale, int zp, int s8, void *out, Py_ssize_t oh,
                         Py_ssize_t ow)
    void edl_qdw3s2_u8_fast(const unsigned char *x0, const unsigned char *x1,
                            const unsigned char *x2, const int *w, int w8, int corr, int *d,
                            Py_ssize_t n)
    void edl_qdw3_s8(const signed char *x0, const signed char *x1, const signed char *x2,
                     const int *w, int corr, int *d, Py_ssize_t n)
    void edl_qdw3s2_u8(const unsigned char *x0, const unsigned char *x1,
                       const unsigned char *x2, const int *w, int corr, int *d, Py_ssize_t n)
    void edl_qdw3s2_s8(const signed char *x0, const signed char *x1, const signed char *x2,
                       const int *w, int corr, int *d, Py_ssize_t n)
    void edl_gather_u8(unsigned char *d, const unsigned char *s, Py_ssize_t stride,
                       Py_ssize_t n)
    void edl_im2col_flat_u8(unsigned char *dst, const unsigned char *src, Py_ssize_t off,
                            Py_ssize_t rows, Py_ssize_t ow, Py_ssize_t lo, Py_ssize_t hi,
                            unsigned char f)
    void edl_qdwk_u8(const unsigned char *x, Py_ssize_t wp, Py_ssize_t kh, Py_ssize_t kw,
                     Py_ssize_t st, const int *w, int corr, int *d, Py_ssize_t n)
    void edl_qdwk_s8(const signed char *x, Py_ssize_t wp, Py_ssize_t kh, Py_ssize_t kw,
                     Py_ssize_t st, const int *w, int corr, int *d, Py_ssize_t n)
    void edl_qdw_tap_u8(int *d, const unsigned char *s, Py_ssize_t stride, int w, int z,
                        Py_ssize_t n)
    void edl_qdw_tap_s8(int *d, const signed char *s, Py_ssize_t stride, int w, int z,
                        Py_ssize_t n)
    void edl_quantize_u8(const float *x, float s, int z, float lo, float hi, unsigned char *out,
                         Py_ssize_t n)
    void edl_quantize_s8(const float *x, float s, int z, float lo, float hi, signed char *out,
                         Py_ssize_t n)
    Py_ssize_t edl_qavg_pitch(Py_ssize_t ow, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dw)
    Py_ssize_t edl_qavg_buf(Py_ssize_t oh, Py_ssize_t pitch, Py_ssize_t kw, Py_ssize_t sw,
                            Py_ssize_t dw)
    void edl_qavg_plane_u8(const unsigned char *x, Py_ssize_t w, const int *y0, const int *ny,
                           Py_ssize_t pl, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh,
                           Py_ssize_t dw, const int *corr, const float *mult, int z, float lo,
                           float hi, int *buf, unsigned char *out, Py_ssize_t oh,
                           Py_ssize_t ow)
    void edl_qavg_plane_s8(const signed char *x, Py_ssize_t w, const int *y0, const int *ny,
                           Py_ssize_t pl, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh,
                           Py_ssize_t dw, const int *corr, const float *mult, int z, float lo,
                           float hi, int *buf, signed char *out, Py_ssize_t oh,
                           Py_ssize_t ow)
    void edl_quantize_u16(const float *x, float s, int z, float lo, float hi,
                          unsigned short *out, Py_ssize_t n)
    void edl_quantize_s16(const float *x, float s, int z, float lo, float hi, short *out,
                          Py_ssize_t n)
    void edl_dequantize_u8(const unsigned char *x, float s, int z, float *out, Py_ssize_t n)
    void edl_dequantize_s8(const signed char *x, float s, int z, float *out, Py_ssize_t n)
    void edl_dequantize_u16(const unsigned short *x, float s, int z, float *out, Py_ssize_t n)
    void edl_dequantize_s16(const short *x, float s, int z, float *out, Py_ssize_t n)
    void edl_qbinary_u8(const unsigned char *a, const unsigned char *b, Py_ssize_t n, int mul,
                        float ra, float rb, float fixed, float za, float zb, float zc,
                        float lo, float hi, unsigned char *out)
    void edl_qbinary_s8(const signed char *a, const signed char *b, Py_ssize_t n, int mul,
                        float ra, float rb, float fixed, float za, float zb, float zc,
                        float lo, float hi, signed char *out)
    void edl_requant_u8(const int *acc, int bias, float s, int z, float lo, float hi,
                        unsigned char *out, Py_ssize_t n)
    void edl_requant_s8(const int *acc, int bias, float s, int z, float lo, float hi,
                        signed char *out, Py_ssize_t n)
    void edl_requant_lookup8(const int *acc, int bias, float s, int z, float lo, float hi,
                             int s8, const unsigned char *t, unsigned char *out, Py_ssize_t n)
    void edl_requant_u16(const int *acc, int bias, float s, int z, float lo, float hi,
                         unsigned short *out, Py_ssize_t n)
    void edl_requant_s16(const int *acc, int bias, float s, int z, float lo, float hi,
                         short *out, Py_ssize_t n)

ctypedef signed char s8_t
ctypedef unsigned char u8_t
ctypedef short s16_t
ctypedef unsigned short u16_t

ctypedef fused q8:
    s8_t
    u8_t

ctypedef fused q8b:
    s8_t
    u8_t

ctypedef fused qin:
    s8_t
    u8_t
    s16_t
    u16_t
    int

ctypedef fused qout:
    s8_t
    u8_t
    s16_t
    u16_t

cdef enum:
    # below this many elements a loop runs on one thread (thread start-up would dominate)
    PAR_ELEMS = 32768
    # GEMM column tile: an int32 accumulator row of it stays in L1, b's K x TILE slice in L2
    TILE = 256


cdef inline void _limits(qout *dummy, float *lo, float *hi) noexcept nogil:
    if qout is s8_t:
        lo[0] = -128.0
        hi[0] = 127.0
    elif qout is u8_t:
        lo[0] = 0.0
        hi[0] = 255.0
    elif qout is s16_t:
        lo[0] = -32768.0
        hi[0] = 32767.0
    else:
        lo[0] = 0.0
        hi[0] = 65535.0


def quantize_linear(const float[:, :, ::1] x, const float[::1] scale, const int[::1] zero_point,
                    qout[:, :, ::1] out):
    cdef Py_ssize_t a = x.shape[0], c = x.shape[1], b = x.shape[2], p
    cdef float lo, hi
    _limits(<qout *>NULL, &lo, &hi)
    if a * c * b == 0:
        return
    for p in prange(a * c, nogil=True, schedule="static", use_threads_if=a * c * b >= PAR_ELEMS):
        if qout is u8_t:
            edl_quantize_u8(&x[p // c, p % c, 0], scale[p % c], zero_point[p % c], lo, hi,
                            &out[p // c, p % c, 0], b)
        elif qout is s8_t:
            edl_quantize_s8(&x[p // c, p % c, 0], scale[p % c], zero_point[p % c], lo, hi,
                            &out[p // c, p % c, 0], b)
        elif qout is u16_t:
            edl_quantize_u16(&x[p // c, p % c, 0], scale[p % c], zero_point[p % c], lo, hi,
                             &out[p // c, p % c, 0], b)
        else:
            edl_quantize_s16(&x[p // c, p % c, 0], scale[p % c], zero_point[p % c], lo, hi,
                             &out[p // c, p % c, 0], b)


def dequantize_linear(const qin[:, :, ::1] x, const float[::1] scale, const int[::1] zero_point,
                      float[:, :, ::1] out):
    cdef Py_ssize_t a = x.shape[0], c = x.shape[1], b = x.shape[2], p, q, ch
    cdef float s
    cdef long long z
    if a * c * b == 0:
        return
    for p in prange(a * c, nogil=True, schedule="static", use_threads_if=a * c * b >= PAR_ELEMS):
        ch = p % c
        s = scale[ch]
        z = zero_point[ch]
        if qin is u8_t:
            edl_dequantize_u8(&x[p // c, ch, 0], s, zero_point[ch], &out[p // c, ch, 0], b)
        elif qin is s8_t:
            edl_dequantize_s8(&x[p // c, ch, 0], s, zero_point[ch], &out[p // c, ch, 0], b)
        elif qin is u16_t:
            edl_dequantize_u16(&x[p // c, ch, 0], s, zero_point[ch], &out[p // c, ch, 0], b)
        elif qin is s16_t:
            edl_dequantize_s16(&x[p // c, ch, 0], s, zero_point[ch], &out[p // c, ch, 0], b)
        else:   # int32 (zero point 0): the difference in 64 bits
            for q in range(b):
                out[p // c, ch, q] = <float>(<long long>x[p // c, ch, q] - z) * s


cdef inline Py_ssize_t _first(Py_ssize_t n_dst, Py_ssize_t stride, Py_ssize_t off) noexcept nogil:
    """First output o (at most n_dst) whose input o * stride + off is >= 0."""
    return 0 if off >= 0 else min(n_dst, (-off + stride - 1) // stride)


cdef inline Py_ssize_t _stop(Py_ssize_t n_src, Py_ssize_t n_dst, Py_ssize_t stride,
                             Py_ssize_t off, Py_ssize_t lo) noexcept nogil:
    """One past the last output o < n_dst whose input o * stride + off is < n_src (>= lo)."""
    cdef Py_ssize_t last = n_src - 1 - off
    if last < 0:
        return lo
    return max(lo, min(n_dst, last // stride + 1))


def im2col_q(const q8[:, :, ::1] x, int fill, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
             Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
             Py_ssize_t oh, Py_ssize_t ow, q8[:, ::1] cols):
    if cols.shape[0] != x.shape[0] * kh * kw or cols.shape[1] != oh * ow:
        raise ValueError(f"im2col_q: cols must be ({x.shape[0] * kh * kw}, {oh * ow}), got "
                         f"({cols.shape[0]}, {cols.shape[1]})")
    if x.shape[0] * kh * kw * oh * ow == 0:
        return
    with nogil:
        _im2col_rows(<const unsigned char *>&x[0, 0, 0], x.shape[0], x.shape[1], x.shape[2],
                     <unsigned char><q8>fill, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow,
                     <unsigned char *>&cols[0, 0])


cdef void _im2col_rows(const unsigned char *x, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                       unsigned char f, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                       Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                       Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow,
                       unsigned char *cols) noexcept nogil:
    """im2col_q on the bytes (either 8-bit type): x (C, H, W), cols (C kh kw, oh ow), every
    size >= 1."""
    cdef Py_ssize_t r, ch, i, j, oy, iy, off, lo, hi, oy0, oy1
    cdef unsigned char *dst
    cdef const unsigned char *src
    # stride 1 with the output as wide as the input ("same" 3x3s): a tap's rows in the image
    # are one shifted copy of the plane, then the few border cells of each row set to the
    # fill (a memset and a memcpy per 40-byte row cost a quarter of a 3x3 conv)
    cdef bint flat = sh == 1 and sw == 1 and ow == w
    for r in prange(c * kh * kw, schedule="static",
                    use_threads_if=c * kh * kw * oh * ow >= PAR_ELEMS):
        ch = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        off = j * dw - pw
        lo = _first(ow, sw, off)          # outputs [lo, hi) of each row read the image
        hi = _stop(w, ow, sw, off, lo)
        dst = cols + r * oh * ow
        if flat:
            oy0 = min(max(0, ph - i * dh), oh)    # output rows whose input row is inside
            oy1 = max(min(oh, h + ph - i * dh), oy0)
            if oy0 > 0:
                memset(dst, f, oy0 * ow)
            if oy1 < oh:
                memset(dst + oy1 * ow, f, (oh - oy1) * ow)
            if oy1 > oy0:
                edl_im2col_flat_u8(dst + oy0 * ow, x + (ch * h + oy0 - ph + i * dh) * w, off,
                                   oy1 - oy0, ow, lo, hi, f)
            continue
        for oy in range(oh):
            iy = oy * sh - ph + i * dh
            if iy < 0 or iy >= h:
                memset(dst + oy * ow, f, ow)
                continue
            src = x + (ch * h + iy) * w
            memset(dst + oy * ow, f, lo)
            if sw == 1:
                memcpy(dst + oy * ow + lo, src + lo + off, hi - lo)
            elif hi > lo:
                edl_gather_u8(dst + oy * ow + lo, src + lo * sw + off, sw, hi - lo)
            memset(dst + oy * ow + hi, f, ow - hi)


def padded_im2col_ok(Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t kh, Py_ssize_t kw,
                     Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dw):
    """Whether a conv of this geometry takes im2col_q_padded (edl_im2col_padded_ok: the rule
    the float convs follow too)."""
    return edl_im2col_padded_ok(oh, ow, kh, kw, sh, sw, dw) != 0


def im2col_q_padded(const q8[:, :, ::1] x, int fill, Py_ssize_t kh, Py_ssize_t kw,
                    Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh,
                    Py_ssize_t ow, q8[::1] pad, q8[:, ::1] cols):
    """Stride 1: the columns of the padded width (edl_im2col.h): cols (C kh kw, ld) with
    ld >= oh * wq, wq = ow + (kw - 1) dw, column oy * wq + ox the window of output (oy, ox)
    for ox < ow (the rest junk); pad: scratch of C (oh + (kh - 1) dh) wq + (kw - 1) dw +
    ld - oh * wq values. Sizes are checked here: the kernel indexes unchecked."""
    cdef Py_ssize_t c = x.shape[0], h = x.shape[1], w = x.shape[2], ld = cols.shape[1]
    cdef Py_ssize_t wq = ow + (kw - 1) * dw, hq = oh + (kh - 1) * dh
    cdef Py_ssize_t need = c * hq * wq + (kw - 1) * dw + ld - oh * wq
    if min(kh, kw, dh, dw, oh, ow) < 1 or min(ph, pw) < 0:
        raise ValueError("im2col_q_padded: sizes must be >= 1 and pads >= 0")
    if cols.shape[0] != c * kh * kw or ld < oh * wq or pad.shape[0] < need:
        raise ValueError(f"im2col_q_padded: cols must be ({c * kh * kw}, >= {oh * wq}) and "
                         f"pad hold {need} values, got {cols.shape[0]} x {ld} and "
                         f"{pad.shape[0]}")
    if c == 0:
        return
    with nogil:
        edl_im2col_padded_u8(<const unsigned char *>&x[0, 0, 0], c, h, w, kh, kw, ph, pw, dh,
                             dw, oh, ow, <unsigned char>fill, <unsigned char *>&pad[0],
                             <unsigned char *>&cols[0, 0], ld)


cdef void _gemm_tile(const short *a16, const int *asum, const q8b *b, const int *b_zp,
                     int *acc, Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, Py_ssize_t q0,
                     Py_ssize_t nq, short *bp) noexcept nogil:
    """Columns [q0, q0 + nq) of acc = a16 @ (b - b_zp), a16 = a - a_zp (rows padded to even
    length), asum its row sums; bp scratch for the packed tile."""
    cdef Py_ssize_t kp2 = (k + 1) // 2, p, q, i
    for p in range(kp2):
        if q8b is u8_t:
            edl_qpack_u8(b + 2 * p * n + q0, b + (2 * p + 1) * n + q0 if 2 * p + 1 < k else NULL,
                         bp + 2 * p * nq, nq)
        else:
            edl_qpack_s8(b + 2 * p * n + q0, b + (2 * p + 1) * n + q0 if 2 * p + 1 < k else NULL,
                         bp + 2 * p * nq, nq)
    edl_qgemm_pairs(a16, bp, acc + q0, n, m, kp2, nq)
    for i in range(m):
        for q in range(nq):
            acc[i * n + q0 + q] -= asum[i] * b_zp[q0 + q]


def qgemm(const q8[:, ::1] a, const int[::1] a_zp, const q8b[:, ::1] b, const int[::1] b_zp,
          int[:, ::1] acc):
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1], t, nt, q0, i, kk, ka
    cdef short *a16
    cdef short *bp
    cdef int *asum
    cdef int s, failed = 0
    cdef int *pfailed = &failed
    if m * n == 0:
        return
    if k == 0:
        acc[:, :] = 0
        return
    ka = 2 * ((k + 1) // 2)
    a16 = <short *>malloc(m * ka * sizeof(short))
    asum = <int *>malloc(m * sizeof(int))
    if a16 == NULL or asum == NULL:
        free(a16)
        free(asum)
        raise MemoryError("qgemm: no memory for the packed rows of a")
    with nogil:
        for i in range(m):
            s = 0
            for kk in range(k):
                a16[i * ka + kk] = <short>(<int>a[i, kk] - a_zp[i])
                s = s + a16[i * ka + kk]
            if ka > k:
                a16[i * ka + k] = 0
            asum[i] = s
        nt = (n + TILE - 1) // TILE
        with parallel(use_threads_if=m * k * n >= PAR_ELEMS * 8):
            bp = <short *>malloc(ka * TILE * sizeof(short))
            for t in prange(nt, schedule="static"):
                q0 = t * TILE
                if bp != NULL:
                    _gemm_tile(a16, asum, &b[0, 0], &b_zp[0], &acc[0, 0], m, k, n, q0,
                               TILE if q0 + TILE <= n else n - q0, bp)
                else:
                    pfailed[0] = 1
            free(bp)
    free(a16)
    free(asum)
    if failed:
        raise MemoryError("qgemm: no memory for a packed tile of b")


cdef void _gemm_requant_tile(const signed char *w8, const short *a16, bint u8s8,
                             const q8 *b, Py_ssize_t k, Py_ssize_t n, Py_ssize_t m,
                             Py_ssize_t q0, Py_ssize_t nq, const int *corr, const float *scale,
                             int zero_point, float lo, float hi, q8b *out, void *pack,
                             int *tacc, const unsigned char *tables) noexcept nogil:
    """Columns [q0, q0 + nq) of out = requantize(w @ b + corr), clamped to [lo, hi]: the
    tile's int32 products in tacc (m rows), each row requantized while it is in cache."""
    cdef Py_ssize_t kq = (k + 3) // 4, kp2 = (k + 1) // 2, p, i, ld
    if u8s8:
        ld = (nq + edl_q_u8s8_cols() - 1) // edl_q_u8s8_cols() * edl_q_u8s8_cols()
        for p in range(kq):
            edl_qpack4_u8(<const unsigned char *>(b + 4 * p * n + q0), n, min(4, k - 4 * p),
                          nq, ld, <unsigned char *>pack + 4 * p * ld)
        edl_qgemm_u8s8(w8, <const unsigned char *>pack, tacc, ld, m, kq, ld)
    else:
        ld = nq
        for p in range(kp2):
            if q8 is u8_t:
                edl_qpack_u8(b + 2 * p * n + q0,
                             b + (2 * p + 1) * n + q0 if 2 * p + 1 < k else NULL,
                             <short *>pack + 2 * p * nq, nq)
            else:
                edl_qpack_s8(b + 2 * p * n + q0,
                             b + (2 * p + 1) * n + q0 if 2 * p + 1 < k else NULL,
                             <short *>pack + 2 * p * nq, nq)
        edl_qgemm_pairs(a16, <const short *>pack, tacc, ld, m, kp2, nq)
    for i in range(m):              # each row's activation table (if any) as it is made
        edl_requant_lookup8(tacc + i * ld, corr[i], scale[i], zero_point, lo, hi,
                            q8b is s8_t, NULL if tables == NULL else tables + 256 * i,
                            <unsigned char *>(out + i * n + q0), nq)


def qgemm_pack(const short[:, ::1] wd):
    """The weights of qgemm_requant laid out for its kernels, once (a plan keeps them): int16
    rows padded to even length (the pairs kernel), and int8 rows padded to a multiple of 4
    for the u8 x s8 dot kernels (VNNI) when those exist and every value fits int8 (else
    None). Returns (int8 rows or None, int16 rows, M, K)."""
    cdef Py_ssize_t m = wd.shape[0], k = wd.shape[1], i, kk
    cdef Py_ssize_t ka = 4 * ((k + 3) // 4), ka2 = 2 * ((k + 1) // 2)
    cdef bint s8w = k > 0 and edl_q_u8s8() > 0          # vpdpbusd: w must fit int8
    a16 = np.zeros((m, max(1, ka2)), np.int16)
    cdef short[:, ::1] av = a16
    for i in range(m):
        for kk in range(k):
            av[i, kk] = wd[i, kk]
            if wd[i, kk] < -128 or wd[i, kk] > 127:
                s8w = False
    if not s8w:
        return (None, a16, m, k)
    w8 = np.zeros((m, ka), np.int8)
    cdef signed char[:, ::1] wv = w8
    for i in range(m):
        for kk in range(k):
            wv[i, kk] = <signed char>wd[i, kk]
    return (w8, a16, m, k)


def qgemm_requant(const short[:, ::1] wd, const int[::1] corr, const float[::1] scale,
                  int zero_point, const q8[:, ::1] b, q8b[:, ::1] out):
    qgemm_requant_packed(qgemm_pack(wd), corr, scale, zero_point, b, out)


cdef const unsigned char *_tables(const unsigned char[:, ::1] tables, Py_ssize_t m,
                                  str who) except? NULL:
    """The first byte of m activation tables of 256 entries (NULL for none), checked."""
    if tables is None:
        return NULL
    if tables.shape[0] < m or tables.shape[1] != 256:
        raise ValueError(f"{who}: {m} channels need ({m}, 256) tables, got "
                         f"({tables.shape[0]}, {tables.shape[1]})")
    return &tables[0, 0]


def qgemm_requant_packed(tuple pk, const int[::1] corr, const float[::1] scale,
                         int zero_point, const q8[:, ::1] b, q8b[:, ::1] out,
                         const unsigned char[:, ::1] tables=None):
    """qgemm_requant with the weights qgemm_pack laid out (no per-call packing); tables
    (M, 256): out[i] = tables[i][out[i]] as each tile row is made (an 8-bit activation)."""
    cdef Py_ssize_t m = pk[2], k = pk[3], n = b.shape[1]
    cdef const short[:, ::1] av = pk[1]
    cdef const signed char[:, ::1] wv
    cdef const signed char *w8 = NULL
    # the kernels index by these sizes unchecked: a pack that does not fit the call is an
    # error, not a read past its end
    if (av.shape[0] != m or av.shape[1] < 2 * ((k + 1) // 2) or b.shape[0] != k
            or out.shape[0] != m or out.shape[1] != n or corr.shape[0] < m
            or scale.shape[0] < m):
        raise ValueError(f"qgemm_requant_packed: a pack of {m} x {k} weights does not fit "
                         f"b ({b.shape[0]}, {b.shape[1]}), out ({out.shape[0]}, {out.shape[1]}), "
                         f"{corr.shape[0]} corr, {scale.shape[0]} scales")
    cdef const unsigned char *tp = _tables(tables, m, "qgemm_requant_packed")
    if m * n == 0:
        return
    if pk[0] is not None:
        wv = pk[0]
        if wv.shape[0] != m or wv.shape[1] < 4 * ((k + 3) // 4):
            raise ValueError("qgemm_requant_packed: the int8 rows do not fit the pack")
        w8 = &wv[0, 0]
    cdef int failed
    with nogil:
        failed = _qgemm_rq(w8, &av[0, 0], &b[0, 0], q8 is s8_t, k, n, m, &corr[0], &scale[0],
                           zero_point, &out[0, 0], q8b is s8_t, tp,
                           -128.0 if q8b is s8_t else 0.0, 127.0 if q8b is s8_t else 255.0)
    if failed:
        raise MemoryError("qgemm_requant: no memory for a packed tile of b")


cdef int _qgemm_rq(const signed char *w8, const short *a16, const void *b, bint b_s8,
                   Py_ssize_t k, Py_ssize_t n, Py_ssize_t m, const int *corr,
                   const float *scale, int zero_point, void *out, bint out_s8,
                   const unsigned char *tp, float lo, float hi) noexcept nogil:
    """out (M, N) = requantize(w @ b + corr) clamped to [lo, hi] (the output type's range, or
    narrower: a Relu / Clip after the conv), then looked up in tp's M tables when not NULL,
    in column tiles run in parallel: w the qgemm_pack of M x K weights (w8 its int8 rows or
    NULL, a16 its int16 rows), b (K, N) uint8 or int8 (b_s8), out uint8 or int8 (out_s8).
    The u8 x s8 dot kernels run where w8 is given and b is unsigned, the int16 pairs else.
    Returns 1 where a thread's tile buffers could not be allocated (out is then garbage)."""
    cdef Py_ssize_t kq = (k + 3) // 4, kp2 = (k + 1) // 2, t, nt, nq, q0
    cdef bint u8s8 = w8 != NULL and not b_s8
    cdef void *pack
    cdef int *tacc
    cdef int failed = 0
    cdef int *pfailed = &failed
    nt = (n + TILE - 1) // TILE
    with parallel(use_threads_if=m * k * n >= PAR_ELEMS * 8):
        pack = malloc(max(1, 4 * max(kq, kp2) * TILE))
        tacc = <int *>malloc(m * TILE * sizeof(int))
        for t in prange(nt, schedule="static"):
            q0 = t * TILE
            nq = TILE if q0 + TILE <= n else n - q0
            if pack == NULL or tacc == NULL:
                pfailed[0] = 1
            elif b_s8 and out_s8:
                _gemm_requant_tile(w8, a16, u8s8, <const s8_t *>b, k, n, m, q0, nq, corr,
                                   scale, zero_point, lo, hi, <s8_t *>out, pack, tacc, tp)
            elif b_s8:
                _gemm_requant_tile(w8, a16, u8s8, <const s8_t *>b, k, n, m, q0, nq, corr,
                                   scale, zero_point, lo, hi, <u8_t *>out, pack, tacc, tp)
            elif out_s8:
                _gemm_requant_tile(w8, a16, u8s8, <const u8_t *>b, k, n, m, q0, nq, corr,
                                   scale, zero_point, lo, hi, <s8_t *>out, pack, tacc, tp)
            else:
                _gemm_requant_tile(w8, a16, u8s8, <const u8_t *>b, k, n, m, q0, nq, corr,
                                   scale, zero_point, lo, hi, <u8_t *>out, pack, tacc, tp)
        free(pack)
        free(tacc)
    return failed


cdef int _qdwp(const q8 *x, Py_ssize_t c, Py_ssize_t h, Py_ssize_t wd, int x_zp,
               const q8b *w, Py_ssize_t kh, Py_ssize_t kw, const int *w_zp, Py_ssize_t sh,
               Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t oh, Py_ssize_t ow,
               int *acc, void *out, bint out_s8, const int *bias, const float *scale,
               int zero_point, const unsigned char *tables) noexcept nogil:
    """Depthwise conv (dilation 1): each plane copied into a buffer padded with the zero point
    (so every tap is in range and (x - x_zp) sums as sum(w * x) - x_zp * sum(w)), then one
    pass per output row, or one over the whole plane at stride 1 (3x3: the fused 9-tap
    kernels, VNNI rows where the CPU has them) into acc (C, oh, ow) int32, or (out not NULL)
    into a row buffer requantized at once into out (uint8, or int8 when out_s8) with
    bias[ch] and scale[ch], then (tables not NULL) looked up in channel ch's table of 256
    while the plane is in cache. x (C, H, W) and w (C, kh, kw) C-contiguous, w_zp C values.
    Returns 1 where a thread's buffers could not be allocated (the output is then garbage),
    else 0."""
    cdef Py_ssize_t nk = kh * kw
    cdef Py_ssize_t hp = (oh - 1) * sh + kh, wp = (ow - 1) * sw + kw
    cdef Py_ssize_t ch, r, iy, lo, hi, oy, t
    cdef bint k3 = kh == 3 and kw == 3 and sh == sw and sh <= 2
    cdef int wsum, w8, done
    cdef int *wk
    cdef const q8b *wch
    cdef int *row
    cdef int *d
    cdef q8 *buf
    cdef int failed = 0
    cdef int *pfailed = &failed
    cdef float flo = -128.0 if out_s8 else 0.0
    cdef float fhi = 127.0 if out_s8 else 255.0
    # stride 1 into 8-bit outputs: the whole plane as one flat run, where the CPU has it
    cdef edl_qdwf_plan flat
    cdef bint flat_ok = (q8 is u8_t and out != NULL and sh == 1 and sw == 1
                         and edl_qdwf_make_plan(&flat, kh, kw, wp))
    with parallel(use_threads_if=c * oh * ow * nk >= PAR_ELEMS):
        # per thread: the plane (+ kw + 64 bytes that the stride-1 run and the VNNI rows
        # read past its end, never used), the taps, the int32 rows (a plane at stride 1)
        buf = <q8 *>malloc(hp * wp * sizeof(q8) + kw + 64)
        wk = <int *>malloc(nk * sizeof(int))
        row = <int *>malloc((oh * wp if sh == 1 and sw == 1 else ow) * sizeof(int))
        for ch in prange(c, schedule="static"):
            if buf == NULL or wk == NULL or row == NULL:
                pfailed[0] = 1
                continue
            wsum = 0
            w8 = 1
            wch = w + ch * nk           # the channel's taps in a row
            for t in range(nk):
                wk[t] = <int>wch[t] - w_zp[ch]
                wsum = wsum + wk[t]
                if wk[t] < -128 or wk[t] > 127:
                    w8 = 0
            memset(buf, <unsigned char><q8>x_zp, hp * wp + kw + 64)
            lo = max(0, pw)                       # buffer columns holding image columns
            hi = min(wp, wd + pw)
            for r in range(hp):
                iy = r - ph
                if 0 <= iy < h and hi > lo:
                    memcpy(buf + r * wp + lo, x + (ch * h + iy) * wd + lo - pw,
                           (hi - lo) * sizeof(q8))
            # the plane requantized as it is computed, where the CPU has those kernels
            done = 0
            if flat_ok and w8:
                edl_qdw_flat_vnni512(&flat, <const unsigned char *>buf, wp, kh, kw, wk,
                                     x_zp * wsum, bias[ch], scale[ch], zero_point, out_s8,
                                     <unsigned char *>row,
                                     <unsigned char *>out + ch * oh * ow, oh, ow)
                done = 1
            elif q8 is u8_t and out != NULL:
                done = edl_qdw_plane_rq(buf, wp, kh, kw, sh, sw, wk, w8, x_zp * wsum,
                                        bias[ch], scale[ch], zero_point, out_s8,
                                        <char *>out + ch * oh * ow, oh, ow)
            if not done and sh == 1 and sw == 1:
                # stride 1: the output plane as one run of oh * wp values at the buffer's
                # pitch (value oy * wp + ox reads buf[oy * wp + ox + i * wp + j]; the wp - ow
                # values past each row are never read): a few long loops instead of a call
                # per row, which short rows (a 22-wide plane) spent in loop overhead
                if q8 is u8_t:
                    if k3:
                        edl_qdw3_u8_fast(buf, buf + wp, buf + 2 * wp, wk, w8, x_zp * wsum,
                                         row, oh * wp)
                    else:
                        edl_qdwk_u8_fast(buf, wp, kh, kw, wk, w8, x_zp * wsum, row, oh * wp)
                else:
                    if k3:
                        edl_qdw3_s8(buf, buf + wp, buf + 2 * wp, wk, x_zp * wsum, row,
                                    oh * wp)
                    else:
                        edl_qdwk_s8(buf, wp, kh, kw, 1, wk, x_zp * wsum, row, oh * wp)
                if out != NULL:
                    # the whole run requantized in one call (per 22-value row the call and
                    # its loop tail cost as much as the conv), into the padded plane's bytes
                    # (no longer read), then each row's ow bytes copied out
                    if out_s8:
                        edl_requant_s8(row, bias[ch], scale[ch], zero_point, flo, fhi,
                                       <signed char *>buf, oh * wp)
                    else:
                        edl_requant_u8(row, bias[ch], scale[ch], zero_point, flo, fhi,
                                       <unsigned char *>buf, oh * wp)
                for oy in range(oh):
                    if out == NULL:
                        memcpy(acc + (ch * oh + oy) * ow, row + oy * wp, ow * sizeof(int))
                    else:
                        memcpy(<char *>out + (ch * oh + oy) * ow, <char *>buf + oy * wp, ow)
                done = 1
            for oy in range(0 if done else oh):
                r = oy * sh * wp
                d = row if out != NULL else acc + (ch * oh + oy) * ow
                if not k3:
                    if q8 is u8_t:
                        edl_qdwk_u8(buf + r, wp, kh, kw, sw, wk, x_zp * wsum, d, ow)
                    else:
                        edl_qdwk_s8(buf + r, wp, kh, kw, sw, wk, x_zp * wsum, d, ow)
                elif q8 is u8_t:
                    edl_qdw3s2_u8_fast(buf + r, buf + r + wp, buf + r + 2 * wp, wk, w8,
                                       x_zp * wsum, d, ow)
                else:
                    edl_qdw3s2_s8(buf + r, buf + r + wp, buf + r + 2 * wp, wk, x_zp * wsum,
                                  d, ow)
                if out != NULL:
                    if out_s8:
                        edl_requant_s8(row, bias[ch], scale[ch], zero_point, flo, fhi,
                                       <signed char *>out + (ch * oh + oy) * ow, ow)
                    else:
                        edl_requant_u8(row, bias[ch], scale[ch], zero_point, flo, fhi,
                                       <unsigned char *>out + (ch * oh + oy) * ow, ow)
            if tables != NULL and out != NULL:
                edl_lookup(<unsigned char *>out + ch * oh * ow, tables + 256 * ch,
                           <unsigned char *>out + ch * oh * ow, oh * ow)
        free(buf)
        free(wk)
        free(row)
    return failed


def qconv_direct_requant(const unsigned char[:, :, ::1] x, int x_zp,
                         const signed char[:, ::1] w4, Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                         const int[::1] corr, const float[::1] scale, int zero_point, out,
                         const unsigned char[:, ::1] tables=None):
    """A dense conv (dilation 1) of few input channels, requantized as it is computed
    (edl_qconv_direct_rows_vnni): x (C, H, W) uint8; w4 (M16, 4 * ceil(C kh kw / 4)) the weights
    minus their zero points as int8, tap order (c, i, j), zeros past the taps and past M
    (M16 a multiple of 16 >= M); out (M, OH, OW) uint8 or int8, then (tables (M, 256))
    each channel's plane looked up in its table. Returns False, having done nothing, where
    the CPU or the shape has no such kernel (the caller's GEMM path runs)."""
    if out.dtype.itemsize != 1 or out.dtype.kind not in "iu":
        raise ValueError(f"qconv_direct_requant: out must be uint8 or int8, got {out.dtype}")
    cdef Py_ssize_t c = x.shape[0], h = x.shape[1], wd = x.shape[2]
    cdef unsigned char[:, :, ::1] o8 = out.view("uint8")
    cdef Py_ssize_t m = o8.shape[0], oh = o8.shape[1], ow = o8.shape[2]
    cdef Py_ssize_t hp = (oh - 1) * sh + kh, wp = (ow - 1) * sw + kw
    cdef Py_ssize_t ng = (c * kh * kw + 3) // 4
    cdef bint s8 = out.dtype.kind == "i"
    cdef edl_qcd_plan plan
    if m * oh * ow == 0 or oh < 1 or ow < 1:
        return False
    cdef const unsigned char *tp = _tables(tables, m, "qconv_direct_requant")
    if not edl_qcd_make_plan(&plan, c, kh, kw, sw, hp, wp):
        return False
    # the kernel reads these unchecked (the padded planes are sized from oh, ow: any
    # geometry stays inside them)
    if (w4.shape[0] < (m + 15) // 16 * 16 or w4.shape[1] != 4 * ng or corr.shape[0] < m
            or scale.shape[0] < m or sh < 1 or ph < 0 or pw < 0):
        raise ValueError("qconv_direct_requant: the weights, parameters or geometry do not "
                         f"fit x {tuple(x.shape)} and out {tuple(out.shape)}")
    cdef int failed
    with nogil:
        failed = _qconv_direct(&x[0, 0, 0], c, h, wd, x_zp, <const int *>&w4[0, 0], m, kh, kw,
                               sh, sw, ph, pw, &plan, &corr[0], &scale[0], zero_point, s8,
                               &o8[0, 0, 0], oh, ow, tp)
    if failed:
        raise MemoryError("qconv_direct_requant: no memory for the padded planes")
    return True


cdef int _qconv_direct(const unsigned char *x, Py_ssize_t c, Py_ssize_t h, Py_ssize_t wd,
                       int x_zp, const int *w32, Py_ssize_t m, Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                       const edl_qcd_plan *plan, const int *corr, const float *scale,
                       int zero_point, bint s8, unsigned char *o8, Py_ssize_t oh,
                       Py_ssize_t ow, const unsigned char *tp) noexcept nogil:
    """qconv_direct_requant's work on checked arguments (x (C, H, W), o8 (M, OH, OW), plan
    made for this geometry). Returns 1 where the padded planes could not be allocated."""
    cdef Py_ssize_t hp = (oh - 1) * sh + kh, wp = (ow - 1) * sw + kw
    cdef Py_ssize_t ch, r, iy, lo, hi, t, nt, mm
    cdef Py_ssize_t k = c * kh * kw
    cdef unsigned char *buf = <unsigned char *>malloc(c * hp * wp + 64)
    if buf == NULL:
        return 1
    memset(buf, <unsigned char>x_zp, c * hp * wp + 64)
    lo = max(0, pw)                       # buffer columns holding image columns
    hi = min(wp, wd + pw)
    if hi > lo:
        for t in prange(c * hp, schedule="static", use_threads_if=c * hp * wp >= PAR_ELEMS):
            ch = t // hp
            r = t % hp
            iy = r - ph
            if 0 <= iy < h:
                memcpy(buf + t * wp + lo, x + (ch * h + iy) * wd + lo - pw, hi - lo)
    # blocks of 4 output rows a thread step
    nt = (oh + 3) // 4
    for t in prange(nt, schedule="static", use_threads_if=m * k * oh * ow >= PAR_ELEMS * 8):
        edl_qconv_direct_rows_vnni(buf, wp, sh, sw, plan, w32, m, corr, scale, zero_point, s8,
                                   o8, oh, ow, 4 * t, min(oh, 4 * t + 4))
    if tp != NULL:
        for mm in prange(m, schedule="static", use_threads_if=m * oh * ow >= PAR_ELEMS):
            edl_lookup(o8 + mm * oh * ow, tp + 256 * mm, o8 + mm * oh * ow, oh * ow)
    free(buf)
    return 0


cdef int _check_dw(Py_ssize_t c, Py_ssize_t wc, Py_ssize_t nzp, Py_ssize_t oc,
                   Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                   Py_ssize_t dw, str who) except -1:
    """The depthwise kernels index w, w_zp and the output by x's channel and trust the
    geometry: refuse arguments that do not fit (the Python wrappers pass only these)."""
    if wc < c or nzp < c or oc != c or min(sh, sw, dh, dw) < 1 or ph < 0 or pw < 0:
        raise ValueError(f"{who}: {c} channels need weights, zero points and an output of "
                         f"{c} channels and a valid geometry, got {wc}, {nzp}, {oc}, strides "
                         f"({sh}, {sw}), pads ({ph}, {pw}), dilations ({dh}, {dw})")
    return 0


def qdepthwise(const q8[:, :, ::1] x, int x_zp, const q8b[:, :, ::1] w, const int[::1] w_zp,
               Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
               Py_ssize_t dw, int[:, :, ::1] acc):
    cdef Py_ssize_t c = x.shape[0], h = x.shape[1], wd = x.shape[2]
    cdef Py_ssize_t kh = w.shape[1], kw = w.shape[2], oh = acc.shape[1], ow = acc.shape[2]
    cdef Py_ssize_t ch, oy, ox, i, j, iy, off, lo, hi
    cdef int wv
    _check_dw(c, w.shape[0], w_zp.shape[0], acc.shape[0], sh, sw, ph, pw, dh, dw, "qdepthwise")
    if c * oh * ow == 0:
        return
    if dh == 1 and dw == 1:
        if _qdwp(&x[0, 0, 0], c, h, wd, x_zp, &w[0, 0, 0], kh, kw, &w_zp[0], sh, sw, ph, pw,
                 oh, ow, &acc[0, 0, 0], NULL, False, NULL, NULL, 0, NULL):
            raise MemoryError("qdepthwise: no memory for a padded plane")
        return
    for ch in prange(c, nogil=True, schedule="static",
                     use_threads_if=c * oh * ow * kh * kw >= PAR_ELEMS):
        for oy in range(oh):
            for ox in range(ow):
                acc[ch, oy, ox] = 0
        for i in range(kh):
            for j in range(kw):
                wv = <int>w[ch, i, j] - w_zp[ch]
                off = j * dw - pw
                lo = _first(ow, sw, off)
                hi = _stop(wd, ow, sw, off, lo)
                if hi <= lo:
                    continue
                for oy in range(oh):
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= h:
                        continue
                    if q8 is u8_t:
                        edl_qdw_tap_u8(&acc[ch, oy, lo], &x[ch, iy, lo * sw + off], sw, wv,
                                       x_zp, hi - lo)
                    else:
                        edl_qdw_tap_s8(&acc[ch, oy, lo], &x[ch, iy, lo * sw + off], sw, wv,
                                       x_zp, hi - lo)


def qdepthwise_requant(const q8[:, :, ::1] x, int x_zp, const q8b[:, :, ::1] w,
                       const int[::1] w_zp, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                       Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, const int[::1] bias,
                       const float[::1] scale, int zero_point, out,
                       const unsigned char[:, ::1] tables=None):
    if out.dtype.itemsize != 1 or out.dtype.kind not in "iu":
        raise ValueError(f"qdepthwise_requant: out must be uint8 or int8, got {out.dtype}")
    cdef Py_ssize_t c = x.shape[0]
    cdef unsigned char[:, :, ::1] o8 = out.view("uint8")
    cdef Py_ssize_t oh = o8.shape[1], ow = o8.shape[2]
    cdef bint s8 = out.dtype.kind == "i"
    cdef const unsigned char *tp = _tables(tables, c, "qdepthwise_requant")
    _check_dw(c, w.shape[0], w_zp.shape[0], o8.shape[0], sh, sw, ph, pw, dh, dw,
              "qdepthwise_requant")
    if bias.shape[0] < c or scale.shape[0] < c:
        raise ValueError(f"qdepthwise_requant: {c} channels need {c} biases and scales, got "
                         f"{bias.shape[0]} and {scale.shape[0]}")
    cdef Py_ssize_t ch
    if c * oh * ow == 0:
        return
    if dh == 1 and dw == 1:
        if _qdwp(&x[0, 0, 0], c, x.shape[1], x.shape[2], x_zp, &w[0, 0, 0], w.shape[1],
                 w.shape[2], &w_zp[0], sh, sw, ph, pw, oh, ow, NULL, &o8[0, 0, 0], s8,
                 &bias[0], &scale[0], zero_point, tp):
            raise MemoryError("qdepthwise: no memory for a padded plane")
        return
    import numpy as np
    acc = np.empty((c, oh, ow), np.int32)
    qdepthwise(x, x_zp, w, w_zp, sh, sw, ph, pw, dh, dw, acc)
    requantize(acc.reshape(1, c, oh * ow), bias, scale, zero_point, out.reshape(1, c, oh * ow))
    if tp != NULL:
        for ch in range(c):
            edl_lookup(&o8[ch, 0, 0], tp + 256 * ch, &o8[ch, 0, 0], oh * ow)


def requantize(const int[:, :, ::1] acc, const int[::1] bias, const float[::1] scale,
               int zero_point, qout[:, :, ::1] out):
    cdef Py_ssize_t a = acc.shape[0], c = acc.shape[1], b = acc.shape[2], p
    cdef float lo, hi
    _limits(<qout *>NULL, &lo, &hi)
    if a * c * b == 0:
        return
    for p in prange(a * c, nogil=True, schedule="static", use_threads_if=a * c * b >= PAR_ELEMS):
        if qout is u8_t:
            edl_requant_u8(&acc[p // c, p % c, 0], bias[p % c], scale[p % c], zero_point, lo, hi,
                           &out[p // c, p % c, 0], b)
        elif qout is s8_t:
            edl_requant_s8(&acc[p // c, p % c, 0], bias[p % c], scale[p % c], zero_point, lo, hi,
                           &out[p // c, p % c, 0], b)
        elif qout is u16_t:
            edl_requant_u16(&acc[p // c, p % c, 0], bias[p % c], scale[p % c], zero_point, lo,
                            hi, &out[p // c, p % c, 0], b)
        else:
            edl_requant_s16(&acc[p // c, p % c, 0], bias[p % c], scale[p % c], zero_point, lo,
                            hi, &out[p // c, p % c, 0], b)


def lookup(const unsigned char[::1] x, const q8[::1] table, q8[::1] out):
    if x.shape[0]:
        with nogil:
            edl_lookup(&x[0], <const unsigned char *>&table[0], <unsigned char *>&out[0],
                       x.shape[0])


def channel_lookup(const unsigned char[:, :, ::1] x, const q8[:, ::1] tables,
                   q8[:, :, ::1] out):
    cdef Py_ssize_t a = x.shape[0], c = x.shape[1], b = x.shape[2], p
    if a * c * b == 0:
        return
    for p in prange(a * c, nogil=True, schedule="static", use_threads_if=a * c * b >= PAR_ELEMS):
        edl_lookup(&x[p // c, p % c, 0], <const unsigned char *>&tables[p % c, 0],
                   <unsigned char *>&out[p // c, p % c, 0], b)


def qbinary(const q8[::1] a, const q8[::1] b, int mul, float ra, float rb, float fixed,
            float za, float zb, float zc, float lo, float hi, q8[::1] out):
    cdef Py_ssize_t n = a.shape[0]
    if b.shape[0] != n or out.shape[0] != n:
        raise ValueError(f"qbinary: a, b and out must have one length, got {n}, "
                         f"{b.shape[0]} and {out.shape[0]}")
    if n == 0:
        return
    with nogil:
        if q8 is u8_t:
            edl_qbinary_u8(&a[0], &b[0], n, mul, ra, rb, fixed, za, zb, zc, lo, hi, &out[0])
        else:
            edl_qbinary_s8(&a[0], &b[0], n, mul, ra, rb, fixed, za, zb, zc, lo, hi, &out[0])


def lookup2(const unsigned char[::1] a, const unsigned char[::1] b, const q8[::1] table,
            q8[::1] out):
    cdef Py_ssize_t n = a.shape[0], i
    with nogil:
        for i in range(n):
            out[i] = table[(<Py_ssize_t>a[i] << 8) | b[i]]


def qavg_pool2d(const q8[:, :, ::1] x, const int[::1] y0, const int[::1] ny, Py_ssize_t pl,
                Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                const int[:, ::1] corr, const float[:, ::1] mult, int zero_point,
                q8[:, :, ::1] out):
    """The integer QLinearAveragePool (kernels._ref.quant.qavg_pool2d), a plane at a time
    (edl_qavg_plane_*: the window rows of every output row summed into padded int32 rows,
    the kw taps of all of them in one run, the plane requantized). The wrapper checked
    every index range."""
    cdef Py_ssize_t p = x.shape[0], w = x.shape[2]
    cdef Py_ssize_t oh = mult.shape[0], ow = mult.shape[1]
    cdef Py_ssize_t nbuf = edl_qavg_buf(oh, edl_qavg_pitch(ow, kw, sw, dw), kw, sw, dw)
    cdef Py_ssize_t pln
    cdef int *buf
    cdef float lo, hi
    cdef int failed = 0
    cdef int *pfailed = &failed
    lo = -128.0 if q8 is s8_t else 0.0
    hi = 127.0 if q8 is s8_t else 255.0
    if p == 0:
        return
    with nogil, parallel(use_threads_if=p * oh * ow >= PAR_ELEMS):
        buf = <int *>malloc(nbuf * sizeof(int))
        for pln in prange(p, schedule="static"):
            if buf == NULL:
                pfailed[0] = 1
                continue
            if q8 is u8_t:
                edl_qavg_plane_u8(<const unsigned char *>&x[pln, 0, 0], w, &y0[0], &ny[0], pl,
                                  kw, sw, dh, dw, &corr[0, 0], &mult[0, 0], zero_point, lo,
                                  hi, buf, <unsigned char *>&out[pln, 0, 0], oh, ow)
            else:
                edl_qavg_plane_s8(<const signed char *>&x[pln, 0, 0], w, &y0[0], &ny[0], pl,
                                  kw, sw, dh, dw, &corr[0, 0], &mult[0, 0], zero_point, lo,
                                  hi, buf, <signed char *>&out[pln, 0, 0], oh, ow)
        free(buf)
    if failed:
        raise MemoryError("qavg_pool2d: out of memory for a row buffer")


def int8_gemm_isa():
    """The u8 x s8 GEMM this process runs: "amx" (AMX-INT8 tiles, then AVX-512 VNNI for the
    rows past a multiple of 16), "avx512vnni", "avxvnni", or "int16 pairs" (AVX2 vpmaddwd or
    plain C); EDGEDL_INT8_ISA (read once) forces the lower ones."""
    if edl_q_amx():
        return "amx"
    return {2: "avx512vnni", 1: "avxvnni"}.get(edl_q_u8s8(), "int16 pairs")


# ----------------------------------------------------------------------------- bound convs
cdef enum:
    QC_DIRECT = 0   # 1x1, stride 1, no pads: x's planes are the GEMM's columns
    QC_ROWS = 1     # im2col (_im2col_rows), then the GEMM
    QC_PADDED = 2   # im2col of the padded width, the GEMM, each row's ow values copied out
    QC_STEM = 3     # _qconv_direct: few input channels, AVX-512 VNNI + VBMI
    QC_DW = 4       # depthwise, dilation 1 (_qdwp)


cdef bint _shaped(const Py_buffer *b, char fmt, const Py_ssize_t *shape, int ndim) noexcept:
    """b has the format character fmt (native order) and this shape."""
    cdef const char *f = b.format
    cdef int i
    if f[0] == b'@' or f[0] == b'=' or f[0] == b'|':
        f += 1
    if f[0] != fmt or f[1] != 0 or b.ndim != ndim:
        return False
    for i in range(ndim):
        if b.shape[i] != shape[i]:
            return False
    return True


cdef class QConv8:
    """An 8-bit QLinearConv of one image bound to its prepared weights, requantization and
    geometry: kernels.quant.qlinear_conv2d_plan's fast path on the Cython backend (the ONNX
    runtime's int8 convs), as conv.ConvF32 is for float32. Dense (group 1: ``pk`` from
    qgemm_pack of the weights minus their zero points, ``corr`` = bias - xz * their row
    sums) or depthwise (``wdw`` the (C, kh, kw) weights, ``wz`` their zero points,
    ``corr`` the bias; dilation 1). ``stem``: the direct kernel's weights
    (qconv_direct_requant's w4) where that kernel may run. The path is chosen here, once,
    by the rules the general path follows (``kind``). ``clamp`` (lo, hi): ``tables`` are
    that clamp of the output (a Relu / Clip after the conv): the GEMM paths then clamp in the
    requantization and skip the lookup.

    ``call(x, y, nthreads)`` runs it and returns True when x is a C-contiguous (1, C, H, W)
    array of the planned 8-bit type and y a writable C-contiguous (1, M, OH, OW) one of the
    output's, not overlapping x; otherwise it returns False and touches nothing (the caller
    then takes the general path, which raises the right errors). No Python runs between the
    buffer requests and the kernels: a small conv's ~4 us of argument handling was ~10% of
    an int8 detector's time.
    """
    cdef list keep              # the arrays behind the pointers below
    cdef const signed char *w8
    cdef const short *a16
    cdef const void *wdw
    cdef const int *wz
    cdef const int *w32
    cdef const int *corr
    cdef const float *scale
    cdef const unsigned char *tables
    cdef edl_qcd_plan plan
    cdef int kind
    cdef int xz, yz
    cdef bint x_s8, y_s8, w_s8
    cdef float lo, hi           # the requantization's clamp (the GEMM paths)
    cdef Py_ssize_t c, h, w, m, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw, k, wq, ld, npad
    cdef Py_ssize_t xshape[4]
    cdef Py_ssize_t yshape[4]
    cdef char xf, yf            # x's and y's buffer format: b'B' uint8, b'b' int8

    def __init__(self, bint depthwise, pk, wdw, wz, stem, const int[::1] corr,
                 const float[::1] scale, int xz, int yz, bint x_s8, bint y_s8, tables,
                 Py_ssize_t c, Py_ssize_t h, Py_ssize_t w, Py_ssize_t m, Py_ssize_t oh,
                 Py_ssize_t ow, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                 Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, clamp=None):
        if min(c, h, w, m, oh, ow, kh, kw, sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
            raise ValueError("QConv8: every size must be >= 1 and pads >= 0")
        if corr.shape[0] < m or scale.shape[0] < m:
            raise ValueError(f"QConv8: {m} channels need {m} corrections and scales")
        self.keep = [corr, scale]
        self.corr, self.scale = &corr[0], &scale[0]
        self.xz, self.yz, self.x_s8, self.y_s8 = xz, yz, x_s8, y_s8
        self.c, self.h, self.w, self.m, self.oh, self.ow = c, h, w, m, oh, ow
        self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw = (
            kh, kw, sh, sw, ph, pw, dh, dw)
        self.k = c * kh * kw
        self.xshape[:] = [1, c, h, w]
        self.yshape[:] = [1, m, oh, ow]
        self.xf, self.yf = ord("b" if x_s8 else "B"), ord("b" if y_s8 else "B")
        self.tables = self._bind_tables(tables)
        self.lo, self.hi = (-128.0, 127.0) if y_s8 else (0.0, 255.0)
        if depthwise:
            self._bind_depthwise(wdw, wz)
        else:
            self._bind_dense(pk, stem)
        if clamp is not None and self.kind in (QC_DIRECT, QC_ROWS, QC_PADDED):
            # the tables are this clamp (clamp_of_tables): the requantization's bounds
            # instead of a lookup; the other paths keep the tables
            if not self.lo <= clamp[0] <= clamp[1] <= self.hi:
                raise ValueError(f"QConv8: clamp {clamp} outside the output type's range")
            self.lo, self.hi = clamp
            self.tables = NULL

    cdef const unsigned char *_bind_tables(self, tables) except? NULL:
        if tables is None:
            return NULL
        cdef const unsigned char[:, ::1] t = tables
        self.keep.append(t)
        return _tables(t, self.m, "QConv8")

    cdef int _bind_depthwise(self, wdw, wz) except -1:
        cdef const signed char[:, :, ::1] wv = wdw.view("int8")
        cdef const int[::1] zv = wz
        if (self.m != self.c or wv.shape[0] != self.c or wv.shape[1] != self.kh
                or wv.shape[2] != self.kw or zv.shape[0] < self.c or self.dh != 1
                or self.dw != 1):
            raise ValueError(f"QConv8: depthwise weights must be ({self.c}, {self.kh}, "
                             f"{self.kw}) with {self.c} zero points, M = C and dilation 1")
        self.keep += [wv, zv]
        self.wdw, self.wz, self.w_s8 = &wv[0, 0, 0], &zv[0], wdw.dtype.kind == "i"
        self.kind = QC_DW
        return 0

    cdef int _bind_dense(self, tuple pk, stem) except -1:
        cdef const short[:, ::1] av = pk[1]
        cdef const signed char[:, ::1] wv
        cdef const signed char[:, ::1] sv
        if (pk[2] != self.m or pk[3] != self.k or av.shape[0] != self.m
                or av.shape[1] < 2 * ((self.k + 1) // 2)):
            raise ValueError(f"QConv8: the pack must hold {self.m} x {self.k} weights")
        self.keep.append(av)
        self.a16 = &av[0, 0]
        if pk[0] is not None:
            wv = pk[0]
            if wv.shape[0] != self.m or wv.shape[1] < 4 * ((self.k + 3) // 4):
                raise ValueError("QConv8: the int8 rows do not fit the pack")
            self.keep.append(wv)
            self.w8 = &wv[0, 0]
        self.kind = QC_ROWS
        if self.kh == self.kw == self.sh == self.sw == 1 and self.ph == self.pw == 0:
            # (a 1x1 conv's end pads only add output cells: then oh, ow say so)
            if self.oh == self.h and self.ow == self.w:
                self.kind = QC_DIRECT
        elif edl_im2col_padded_ok(self.oh, self.ow, self.kh, self.kw, self.sh, self.sw,
                                  self.dw):
            self.kind = QC_PADDED
            self.wq = self.ow + (self.kw - 1) * self.dw
            self.ld = (self.oh * self.wq + 15) // 16 * 16   # whole 16-column steps
            self.npad = (self.c * (self.oh + (self.kh - 1) * self.dh) * self.wq
                         + (self.kw - 1) * self.dw + self.ld - self.oh * self.wq)
        if stem is not None and not self.x_s8 and self.dh == 1 and self.dw == 1:
            sv = stem
            if (sv.shape[0] >= (self.m + 15) // 16 * 16 and sv.shape[1] == 4 * ((self.k + 3) // 4)
                    and edl_qcd_make_plan(&self.plan, self.c, self.kh, self.kw, self.sw,
                                          (self.oh - 1) * self.sh + self.kh,
                                          (self.ow - 1) * self.sw + self.kw)):
                self.keep.append(sv)
                self.w32 = <const int *>&sv[0, 0]
                self.kind = QC_STEM
        return 0

    @property
    def path(self):
        """The kernel path chosen: "direct" (1x1), "rows" (im2col + GEMM), "padded" (narrow
        outputs), "stem" (few input channels) or "depthwise"."""
        return ("direct", "rows", "padded", "stem", "depthwise")[self.kind]

    @property
    def bounds(self):
        """The requantization's clamp (lo, hi) and whether a lookup table follows it."""
        return (int(self.lo), int(self.hi)), self.tables != NULL

    def __call__(self, x, y, int nthreads):
        cdef Py_buffer bx, by
        cdef int failed = 0
        cdef bint ok
        if not get_pair(x, &bx, y, &by, PyBUF_FORMAT):
            return False
        ok = (_shaped(&bx, self.xf, self.xshape, 4) and _shaped(&by, self.yf, self.yshape, 4)
              and disjoint(&bx, &by, False))
        if ok:
            if omp_get_max_threads() != nthreads:
                omp_set_num_threads(nthreads)
            with nogil:
                failed = self._run(<const unsigned char *>bx.buf, <unsigned char *>by.buf)
        release_pair(&bx, &by)
        if failed:
            raise MemoryError("QConv8: out of memory for the conv's buffers")
        return ok

    cdef int _run(self, const unsigned char *x, unsigned char *y) noexcept nogil:
        cdef unsigned char *cols
        cdef Py_ssize_t L = self.oh * self.ow
        cdef int failed
        if self.kind == QC_DIRECT:
            return _qgemm_rq(self.w8, self.a16, x, self.x_s8, self.k, L, self.m, self.corr,
                             self.scale, self.yz, y, self.y_s8, self.tables, self.lo, self.hi)
        if self.kind == QC_STEM:
            return _qconv_direct(x, self.c, self.h, self.w, self.xz, self.w32, self.m,
                                 self.kh, self.kw, self.sh, self.sw, self.ph, self.pw,
                                 &self.plan, self.corr, self.scale, self.yz, self.y_s8, y,
                                 self.oh, self.ow, self.tables)
        if self.kind == QC_DW:
            return self._depthwise(x, y)
        if self.kind == QC_PADDED:
            return self._padded(x, y)
        cols = <unsigned char *>malloc(self.k * L)
        if cols == NULL:
            return 1
        _im2col_rows(x, self.c, self.h, self.w, <unsigned char>self.xz, self.kh, self.kw,
                     self.sh, self.sw, self.ph, self.pw, self.dh, self.dw, self.oh, self.ow,
                     cols)
        failed = _qgemm_rq(self.w8, self.a16, cols, self.x_s8, self.k, L, self.m, self.corr,
                           self.scale, self.yz, y, self.y_s8, self.tables, self.lo, self.hi)
        free(cols)
        return failed

    cdef int _padded(self, const unsigned char *x, unsigned char *y) noexcept nogil:
        """QC_PADDED: the GEMM into oh x wq columns (ld with the step's slack), of which each
        row's first ow are the output's."""
        cdef Py_ssize_t r, oy
        cdef int failed = 1
        cdef unsigned char *pad = <unsigned char *>malloc(self.npad)
        cdef unsigned char *cols = <unsigned char *>malloc(self.k * self.ld)
        cdef unsigned char *y2 = <unsigned char *>malloc(self.m * self.ld)
        if pad != NULL and cols != NULL and y2 != NULL:
            edl_im2col_padded_u8(x, self.c, self.h, self.w, self.kh, self.kw, self.ph,
                                 self.pw, self.dh, self.dw, self.oh, self.ow,
                                 <unsigned char>self.xz, pad, cols, self.ld)
            failed = _qgemm_rq(self.w8, self.a16, cols, self.x_s8, self.k, self.ld, self.m,
                               self.corr, self.scale, self.yz, y2, self.y_s8, self.tables,
                               self.lo, self.hi)
            for r in range(self.m):
                for oy in range(self.oh):
                    memcpy(y + (r * self.oh + oy) * self.ow, y2 + r * self.ld + oy * self.wq,
                           self.ow)
        free(pad)
        free(cols)
        free(y2)
        return failed

    cdef int _depthwise(self, const unsigned char *x, unsigned char *y) noexcept nogil:
        if self.x_s8 and self.w_s8:
            return _qdwp(<const s8_t *>x, self.c, self.h, self.w, self.xz,
                         <const s8_t *>self.wdw, self.kh, self.kw, self.wz, self.sh, self.sw,
                         self.ph, self.pw, self.oh, self.ow, NULL, y, self.y_s8, self.corr,
                         self.scale, self.yz, self.tables)
        if self.x_s8:
            return _qdwp(<const s8_t *>x, self.c, self.h, self.w, self.xz,
                         <const u8_t *>self.wdw, self.kh, self.kw, self.wz, self.sh, self.sw,
                         self.ph, self.pw, self.oh, self.ow, NULL, y, self.y_s8, self.corr,
                         self.scale, self.yz, self.tables)
        if self.w_s8:
            return _qdwp(<const u8_t *>x, self.c, self.h, self.w, self.xz,
                         <const s8_t *>self.wdw, self.kh, self.kw, self.wz, self.sh, self.sw,
                         self.ph, self.pw, self.oh, self.ow, NULL, y, self.y_s8, self.corr,
                         self.scale, self.yz, self.tables)
        return _qdwp(<const u8_t *>x, self.c, self.h, self.w, self.xz, <const u8_t *>self.wdw,
                     self.kh, self.kw, self.wz, self.sh, self.sw, self.ph, self.pw, self.oh,
                     self.ow, NULL, y, self.y_s8, self.corr, self.scale, self.yz, self.tables)


# ----------------------------------------------------------------------------- bound maps
cdef enum:
    QM_QUANTIZE = 0     # float32 -> 8 bits: (x / scale[c]) rounded + zp[c], saturated
    QM_DEQUANTIZE = 1   # 8 bits -> float32: (x - zp[c]) * scale[c]
    QM_LOOKUP = 2       # 8 bits -> 8 bits: table[x]
    QM_MAX_RANK = 8


cdef class QMap8:
    """A planned elementwise 8-bit step bound to its constants (kernels.quant's Q / DQ /
    lookup plans on the Cython backend): "quantize" (float32 -> uint8 / int8), "dequantize"
    (uint8 / int8 -> float32), per tensor or per channel over the (a, c, b) view of x that
    the axis gives, or "lookup" (a 256-entry table, 8 bits both ways). ``call(x, y,
    nthreads)`` runs it and returns True when x and y are C-contiguous arrays of the planned
    shape and types, y writable and not overlapping x (a lookup may run in place); else
    False, nothing touched (the caller's general path then raises the right errors)."""
    cdef list keep
    cdef const float *scale
    cdef const int *zp
    cdef const unsigned char *table
    cdef Py_ssize_t shape[QM_MAX_RANK]
    cdef int ndim, kind
    cdef Py_ssize_t a, c, b
    cdef char xf, yf
    cdef float lo, hi

    def __init__(self, str kind, tuple shape, tuple shape3, str x_format, str y_format,
                 scale=None, zero_point=None, table=None):
        cdef const float[::1] sv
        cdef const int[::1] zv
        cdef const unsigned char[::1] tv
        cdef Py_ssize_t n = 1
        self.kind = {"quantize": QM_QUANTIZE, "dequantize": QM_DEQUANTIZE,
                     "lookup": QM_LOOKUP}[kind]
        if len(shape) > QM_MAX_RANK or len(shape3) != 3:
            raise ValueError(f"QMap8: at most rank {QM_MAX_RANK}, and a 3-part view")
        for i, d in enumerate(shape):
            self.shape[i] = d
            n *= d
        self.ndim = len(shape)
        self.a, self.c, self.b = shape3
        if self.a * self.c * self.b != n or min(shape3) < 0:
            raise ValueError(f"QMap8: the view {shape3} does not cover the shape {shape}")
        fx, fy = {QM_QUANTIZE: ("f", "bB"), QM_DEQUANTIZE: ("bB", "f"),
                  QM_LOOKUP: ("bB", "bB")}[self.kind]
        if len(x_format) != 1 or len(y_format) != 1 or x_format not in fx or y_format not in fy:
            raise ValueError(f"QMap8: {kind} takes formats {fx} -> {fy}")
        self.xf, self.yf = ord(x_format), ord(y_format)
        self.lo, self.hi = (-128.0, 127.0) if y_format == "b" else (0.0, 255.0)
        self.keep = []
        if self.kind == QM_LOOKUP:
            tv = table
            if tv.shape[0] != 256:
                raise ValueError("QMap8: a table has 256 entries")
            self.keep.append(tv)
            self.table = &tv[0]
        else:
            sv, zv = scale, zero_point
            if sv.shape[0] != self.c or zv.shape[0] != self.c:
                raise ValueError(f"QMap8: {self.c} channels need {self.c} scales and zero "
                                 f"points, got {sv.shape[0]} and {zv.shape[0]}")
            self.keep += [sv, zv]
            if self.c:
                self.scale, self.zp = &sv[0], &zv[0]

    def __call__(self, x, y, int nthreads):
        cdef Py_buffer bx, by
        cdef bint ok
        if not get_pair(x, &bx, y, &by, PyBUF_FORMAT):
            return False
        ok = (_shaped(&bx, self.xf, self.shape, self.ndim)
              and _shaped(&by, self.yf, self.shape, self.ndim)
              and disjoint(&bx, &by, self.kind == QM_LOOKUP))
        if ok:
            if omp_get_max_threads() != nthreads:
                omp_set_num_threads(nthreads)
            with nogil:
                self._run(bx.buf, by.buf)
        release_pair(&bx, &by)
        return ok

    cdef void _run(self, const void *x, void *y) noexcept nogil:
        cdef Py_ssize_t p, ch, n = self.a * self.c * self.b, b = self.b
        if n == 0:
            return
        if self.kind == QM_LOOKUP:
            edl_lookup(<const unsigned char *>x, self.table, <unsigned char *>y, n)
            return
        for p in prange(self.a * self.c, schedule="static", use_threads_if=n >= PAR_ELEMS):
            ch = p % self.c
            if self.kind == QM_QUANTIZE and self.yf == b'B':
                edl_quantize_u8(<const float *>x + p * b, self.scale[ch], self.zp[ch], self.lo,
                                self.hi, <unsigned char *>y + p * b, b)
            elif self.kind == QM_QUANTIZE:
                edl_quantize_s8(<const float *>x + p * b, self.scale[ch], self.zp[ch], self.lo,
                                self.hi, <signed char *>y + p * b, b)
            elif self.xf == b'B':
                edl_dequantize_u8(<const unsigned char *>x + p * b, self.scale[ch],
                                  self.zp[ch], <float *>y + p * b, b)
            else:
                edl_dequantize_s8(<const signed char *>x + p * b, self.scale[ch], self.zp[ch],
                                  <float *>y + p * b, b)


cdef class QBinary8:
    """A planned com.microsoft QLinearAdd / QLinearMul bound to its parameters (qbinary's:
    ``mul``, ``ra``, ``rb``, ``fixed``, ``za``, ``zb``, ``zc``, and the type's bounds):
    ``call(a, b, out)`` runs edl_qbinary (one thread) on a, b and out of one shape, all
    C-contiguous and of the planned 8-bit type (out writable; it may be a or b: the kernel
    reads each value before writing it), and returns True; otherwise False, nothing touched
    (broadcasting operands take the general path)."""
    cdef int mul
    cdef float ra, rb, fixed, za, zb, zc, lo, hi
    cdef char fmt

    def __init__(self, bint s8, int mul, float ra, float rb, float fixed, float za, float zb,
                 float zc, float lo, float hi):
        self.fmt = ord("b" if s8 else "B")
        self.mul, self.ra, self.rb, self.fixed = mul, ra, rb, fixed
        self.za, self.zb, self.zc, self.lo, self.hi = za, zb, zc, lo, hi

    def __call__(self, a, b, out):
        cdef Py_buffer ba, bb, bo
        cdef bint ok
        if not get_pair(a, &ba, out, &bo, PyBUF_FORMAT):
            return False
        if get_buffer(b, &bb, PyBUF_ND | PyBUF_FORMAT) < 0:
            PyErr_Clear()
            release_pair(&ba, &bo)
            return False
        ok = (_shaped(&ba, self.fmt, bo.shape, bo.ndim) and _shaped(&bb, self.fmt, bo.shape,
                                                                      bo.ndim)
              and _shaped(&bo, self.fmt, bo.shape, bo.ndim)
              and disjoint(&ba, &bo, True) and disjoint(&bb, &bo, True))
        if ok and bo.len:
            with nogil:
                if self.fmt == b'B':
                    edl_qbinary_u8(<const unsigned char *>ba.buf, <const unsigned char *>bb.buf,
                                   bo.len, self.mul, self.ra, self.rb, self.fixed, self.za,
                                   self.zb, self.zc, self.lo, self.hi,
                                   <unsigned char *>bo.buf)
                else:
                    edl_qbinary_s8(<const signed char *>ba.buf, <const signed char *>bb.buf,
                                   bo.len, self.mul, self.ra, self.rb, self.fixed, self.za,
                                   self.zb, self.zc, self.lo, self.hi, <signed char *>bo.buf)
        PyBuffer_Release(&bb)
        release_pair(&ba, &bo)
        return ok
