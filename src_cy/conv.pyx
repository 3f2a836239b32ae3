# cython: boundscheck=False, wraparound=False
"""Cython twins of edgedl.kernels._ref.conv (same names and arguments; see there for shapes).

The wrapper validated every shape and made the arrays C-contiguous, hence no bounds checks.
im2col / col2im walk each tap's valid output range (``_tap_lo`` / ``_tap_hi``), depthwise
works on a zero-bordered copy of each plane: no branches in inner loops.
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, uint16_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset, memmove

from cpython.buffer cimport PyBuffer_Release, PyBUF_ND, PyBUF_STRIDES, PyBUF_WRITABLE
from cpython.exc cimport PyErr_Clear
from edl_buffer cimport PyBUF_FORMAT, disjoint, f32_shape4, get_buffer, get_pair, release_pair
from edl_omp cimport omp_get_max_threads, omp_set_num_threads
# the epilogue codes: generated from edgedl/kernels/activation_table.py (tools/gen_act_codes.py)
from edl_act_table cimport *


cdef extern from "edl_conv.h":
    const Py_ssize_t EDL_IM2COL_NARROW
    int edl_im2col_padded_ok(Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dw) noexcept nogil
    void edl_pad_planes_f(const float* x, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                          Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                          Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow,
                          float fill, float* pad, Py_ssize_t ld) noexcept nogil
    void edl_padded_row_offsets(Py_ssize_t c, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t dh,
                                Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow,
                                Py_ssize_t* off) noexcept nogil
    void edl_rows_layout(Py_ssize_t c, Py_ssize_t h, Py_ssize_t w, Py_ssize_t kh,
                         Py_ssize_t kw, Py_ssize_t pt, Py_ssize_t pb, Py_ssize_t pl,
                         Py_ssize_t pr, Py_ssize_t dh, Py_ssize_t dw, float* pad,
                         Py_ssize_t* off, int32_t* shift) noexcept nogil
    void edl_rows_planes_f(const float* x, Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t h,
                           Py_ssize_t w, Py_ssize_t pt, Py_ssize_t pb, Py_ssize_t pl,
                           float* pad) noexcept nogil
    void edl_im2col_rows_f(const float* x, Py_ssize_t h, Py_ssize_t w, Py_ssize_t r0,
                           Py_ssize_t r1, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                           Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                           Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow, float fill,
                           float* dst) noexcept nogil
    void edl_im2col_rows_d(const double* x, Py_ssize_t h, Py_ssize_t w, Py_ssize_t r0,
                           Py_ssize_t r1, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                           Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                           Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow, double fill,
                           double* dst) noexcept nogil
    void edl_direct_row(const float** src, Py_ssize_t T, const float* wq, const float* bias,
                        int mv, float* out, Py_ssize_t ostride, Py_ssize_t n, float lo,
                        float hi, int sig) noexcept nogil
    int edl_direct_wide() noexcept nogil
    int edl_direct_deep() noexcept nogil
    void edl_direct_set_wide(int wide) noexcept nogil
    int edl_direct_ok() noexcept nogil
    void edl_dw3s1_flat_f(const float* x, Py_ssize_t h, Py_ssize_t w, int top, int bottom,
                          const float* wt, float b, float lo, float hi, int sig,
                          const uint16_t* mlr, float* out) noexcept nogil
    int edl_dw3_flat_ok() noexcept nogil
    void edl_dw3s2_flat_f(const float* x, Py_ssize_t h, Py_ssize_t w, Py_ssize_t sh,
                          Py_ssize_t ph, const float* wt, float b, float lo, float hi, int sig,
                          float* out, Py_ssize_t oy0, Py_ssize_t oy1, Py_ssize_t ow) noexcept nogil
    void edl_dw3s1_lr_masks(Py_ssize_t h, Py_ssize_t w, uint16_t* mlr) noexcept nogil
    void edl_dw3_same_rows2_f(const float* x0, const float* x1, const float* x2,
                              const float* x3, const float* w, float* r0, float* r1,
                              Py_ssize_t n, float b, float lo, float hi) noexcept nogil
    int edl_dw3_same_plane_f(const float* x, Py_ssize_t h, Py_ssize_t r0, Py_ssize_t r1,
                             Py_ssize_t n, const float* zero, const float* w, float b,
                             float lo, float hi, float* out) noexcept nogil
    void edl_dw3_same_row_f(const float* x0, const float* x1, const float* x2,
                            const float* x3, const float* w, float* r0, float* r1,
                            Py_ssize_t n, float b, float lo, float hi) noexcept nogil
    void edl_full3_f(const float* x0, const float* x1, const float* x2, const float* w,
                     float* row, Py_ssize_t n) noexcept nogil
    void edl_full3_d(const double* x0, const double* x1, const double* x2, const double* w,
                     double* row, Py_ssize_t n) noexcept nogil
    int edl_dw5_bands_f(const float* x, Py_ssize_t wp, const float* w, float* out,
                        Py_ssize_t oh, Py_ssize_t ow, float b, float lo, float hi) noexcept nogil
    void edl_full5v_f(const float* x, Py_ssize_t wp, const float* w, float* row,
                      Py_ssize_t n) noexcept nogil
    void edl_full5_f(const float* x0, const float* x1, const float* x2, const float* x3,
                     const float* x4, const float* w, float* row, Py_ssize_t n) noexcept nogil
    void edl_full5_d(const double* x0, const double* x1, const double* x2, const double* x3,
                     const double* x4, const double* w, double* row,
                     Py_ssize_t n) noexcept nogil
    void edl_acc3_f(const float* x, const float* w, float* row, Py_ssize_t n, Py_ssize_t sw,
                    Py_ssize_t dw) noexcept nogil
    void edl_acc3_d(const double* x, const double* w, double* row, Py_ssize_t n,
                    Py_ssize_t sw, Py_ssize_t dw) noexcept nogil
    void edl_acc5_f(const float* x, const float* w, float* row, Py_ssize_t n, Py_ssize_t sw,
                    Py_ssize_t dw) noexcept nogil
    void edl_acc5_d(const double* x, const double* w, double* row, Py_ssize_t n,
                    Py_ssize_t sw, Py_ssize_t dw) noexcept nogil
    void edl_full3s2_f(const float* p, Py_ssize_t rs, Py_ssize_t wq, const float* w,
                       float* row, Py_ssize_t n) noexcept nogil
    void edl_full3s2_d(const double* p, Py_ssize_t rs, Py_ssize_t wq, const double* w,
                       double* row, Py_ssize_t n) noexcept nogil
    void edl_full5s2_f(const float* p, Py_ssize_t rs, Py_ssize_t wq, const float* w,
                       float* row, Py_ssize_t n) noexcept nogil
    void edl_full5s2_d(const double* p, Py_ssize_t rs, Py_ssize_t wq, const double* w,
                       double* row, Py_ssize_t n) noexcept nogil
    void edl_dw3s2_row_f(const float* x0, const float* x1, const float* x2, const float* w,
                         float* row, Py_ssize_t n, Py_ssize_t wd, float b, float lo,
                         float hi) noexcept nogil
    void edl_dw3s2_split_row_f(const float* e0, const float* o0, const float* e1,
                               const float* o1, const float* e2, const float* o2,
                               const float* w, float* row, Py_ssize_t n, float b, float lo,
                               float hi) noexcept nogil
    void edl_deinterleave_f(const float* x, Py_ssize_t n, float* e, float* o) noexcept nogil
    int edl_dw3s2_split_min() noexcept nogil
    void edl_split2_f(const float* src, Py_ssize_t n, float* e, Py_ssize_t wq,
                      Py_ssize_t pw) noexcept nogil
    void edl_split2_d(const double* src, Py_ssize_t n, double* e, Py_ssize_t wq,
                      Py_ssize_t pw) noexcept nogil
    void edl_gather_f(const float* src, Py_ssize_t sw, float* dst, Py_ssize_t n) noexcept nogil
    void edl_im2col_s1_f(const float* plane, Py_ssize_t h, Py_ssize_t w, Py_ssize_t ro,
                         Py_ssize_t off, Py_ssize_t rows, float* dst) noexcept nogil
    void edl_im2col_s1_d(const double* plane, Py_ssize_t h, Py_ssize_t w, Py_ssize_t ro,
                         Py_ssize_t off, Py_ssize_t rows, double* dst) noexcept nogil
    void edl_gather_d(const double* src, Py_ssize_t sw, double* dst,
                      Py_ssize_t n) noexcept nogil
    void edl_epilogue_f(float* v, Py_ssize_t n, float b, int act, float lo, float hi,
                        float s) noexcept nogil
    void edl_epilogue_d(double* v, Py_ssize_t n, double b, int act, double lo, double hi,
                        double s) noexcept nogil
    void edl_scale_epilogue_f(const float* src, float* dst, Py_ssize_t n, float a, float b,
                              int act, float lo, float hi, float s) noexcept nogil
    void edl_residual_epilogue_f(float* v, const float* r, Py_ssize_t n, float b, int act,
                                 float lo, float hi, float s) noexcept nogil
    void edl_add_f(float* v, const float* r, Py_ssize_t n) noexcept nogil
    void edl_epilogue_rows_f(const float* src, Py_ssize_t ss, float* dst, Py_ssize_t ds,
                             Py_ssize_t rows, Py_ssize_t n, float b, int act, float lo,
                             float hi, float s) noexcept nogil
    void edl_copy_rows_f(const float* src, Py_ssize_t ss, float* dst, Py_ssize_t ds,
                         Py_ssize_t rows, Py_ssize_t n) noexcept nogil


cdef extern from "edl_pool.h":
    void edl_max_rows_f(const float* a, const float* b, float* v, Py_ssize_t n) noexcept nogil
    void edl_max_pairs_f(const float* v, float* d, Py_ssize_t n) noexcept nogil
    int edl_max2x2s2_plane_f(const float* x, Py_ssize_t w, float* d, Py_ssize_t oh,
                             Py_ssize_t ow) noexcept nogil
    void edl_max3x3s2_plane_f(const float* src, Py_ssize_t h, Py_ssize_t w, float* dst,
                              Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t pt, Py_ssize_t pl,
                              float* v) noexcept nogil


cdef extern from "edl_gemm.h":
    ctypedef struct edl_gemm_epi:
        const float* bias
        int clamp
        float lo, hi
        int sig
    int edl_gemm_mr() noexcept nogil
    int edl_gemm_nr() noexcept nogil
    Py_ssize_t edl_gemm_panels(Py_ssize_t M, int mr) noexcept nogil
    void edl_gemm_pack_a(const float* a, Py_ssize_t M, Py_ssize_t K, Py_ssize_t lda,
                         float* ap) noexcept nogil
    Py_ssize_t edl_gemm_scratch(Py_ssize_t M, Py_ssize_t K) noexcept nogil
    ctypedef struct edl_gemm_brows:
        const Py_ssize_t* off
        const int32_t* shift
        Py_ssize_t w
    void edl_gemm_cols(const float* ap, Py_ssize_t M, Py_ssize_t K, const float* b,
                       Py_ssize_t ldb, const edl_gemm_brows* br, float* c, Py_ssize_t ldc,
                       Py_ssize_t j0, Py_ssize_t j1, float* scratch,
                       const edl_gemm_epi* epi) noexcept nogil
    Py_ssize_t edl_gemm_kblocks(Py_ssize_t M, Py_ssize_t K) noexcept nogil
    void edl_gemm_cols_k(const float* ap, Py_ssize_t M, Py_ssize_t K, Py_ssize_t k0,
                         Py_ssize_t kc, const float* b, Py_ssize_t ldb, float* c,
                         Py_ssize_t ldc, Py_ssize_t j0, Py_ssize_t j1, float* scratch,
                         const edl_gemm_epi* epi, int first, int last) noexcept nogil
    void edl_gemm_rows(const float* ap, Py_ssize_t M, Py_ssize_t K, Py_ssize_t p0,
                       Py_ssize_t p1, const float* b, Py_ssize_t ldb, float* c, Py_ssize_t ldc,
                       Py_ssize_t j0, Py_ssize_t j1, float* scratch,
                       const edl_gemm_epi* epi) noexcept nogil


# Below this much work (elements or multiply-adds) a loop runs on the calling thread only:
# waking an OpenMP team costs ~5 us on an idle machine and ~100 us on a loaded 2-core one.
cdef enum:
    _PAR_ELEMS = 1 << 17
    # conv_gemm: multiply-adds below which one thread does it all (~10 us of FMAs), and
    # the im2col bytes of one column block (stays in L2 while every filter panel reads it)
    _PAR_MACS = 1 << 20
    _DIRECT_TAPS = 320    # most taps (C * kh * kw) a conv takes the direct path with
    _GEMM_BLOCK_BYTES = 384 << 10
    # deep GEMMs (K blocked, see edl_gemm.h): the bytes of a column block's C and one K
    # block of its im2col (A is read once per block: 48-column blocks of a 256 x 2304 A ran
    # at half speed)
    _GEMM_DEEP_BYTES = 768 << 10
    # depthwise stride 1: output rows narrower than this run as one flat row per plane
    _FLAT_W = 48
    # ... except 3x3 'same' convs from this width up (_depthwise_same: two rows a call, no
    # padded copy; 64x40x40 and 64x20x20 ran at 0.82-0.84 of onnxruntime's node, flat 0.86-0.90)
    _SAME_W = 18
    # pointwise -> depthwise chains (_pw_dw_f32): the bytes of the pointwise output band a
    # thread keeps (all channels, the band's rows and the two rows around it)
    _PWDW_BAND_BYTES = 256 << 10
    # conv -> max pool (_conv_maxpool_f32): the bytes of the conv rows a thread keeps
    _POOL_BAND_BYTES = 128 << 10
    # depthwise conv -> 2x2 max pool (_dw_maxpool_f32): conv rows of a channel a pass (even)
    _DW_POOL_ROWS = 16


cdef inline Py_ssize_t _tap_lo(Py_ssize_t n_dst, Py_ssize_t stride,
                               Py_ssize_t off) noexcept nogil:
    """First destination o with o*stride + off >= 0, at most n_dst: a tap that lies wholly in
    a large padding (off far below 0) has none, and its zero-fill [0, lo) must stay inside
    the n_dst destinations (unclamped, it wrote past the row: heap corruption)."""
    return 0 if off >= 0 else min(n_dst, (-off + stride - 1) // stride)


cdef inline Py_ssize_t _tap_hi(Py_ssize_t n_src, Py_ssize_t n_dst, Py_ssize_t stride,
                               Py_ssize_t off) noexcept nogil:
    """One past the last destination o < n_dst with o*stride + off < n_src (>= _tap_lo).

    Together: [lo, hi) are the destinations whose source index is inside [0, n_src).
    (Values, not out-pointers: prange makes assigned variables thread-private.)
    """
    cdef Py_ssize_t last = n_src - 1 - off, lo = _tap_lo(n_dst, stride, off), hi
    hi = 0 if last < 0 else min(n_dst, last // stride + 1)
    return hi if hi > lo else lo


cdef inline void _epilogue(floating* v, Py_ssize_t n, floating b, int act, floating lo,
                           floating hi, floating s) noexcept nogil:
    """In place: v[k] = act(v[k] + b), in edl_conv.h (float32 with its SIMD clones)."""
    if floating is float:
        edl_epilogue_f(v, n, b, act, lo, hi, s)
    else:
        edl_epilogue_d(v, n, b, act, lo, hi, s)


def bias_act(floating[:, :, ::1] y, const floating[::1] bias, int act, double p0, double p1,
             const floating[::1] slopes):
    cdef Py_ssize_t n = y.shape[0], m = y.shape[1], L = y.shape[2], q
    if n * m * L == 0:
        return
    for q in prange(n * m, nogil=True, schedule="static",
                    use_threads_if=n * m * L >= _PAR_ELEMS):
        _epilogue(&y[q // m, q % m, 0], L, bias[q % m], act, <floating>p0, <floating>p1,
                  slopes[q % m])


cdef void _im2col_row(const floating* x, Py_ssize_t h, Py_ssize_t w, Py_ssize_t r,
                      Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                      Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                      Py_ssize_t oh, Py_ssize_t ow, floating* dst) noexcept nogil:
    """Row r (channel r // (kh*kw), tap (i, j)) of im2col(x) for oh output rows, into dst."""
    cdef Py_ssize_t ch = r // (kh * kw), i = (r // kw) % kh, j = r % kw
    cdef Py_ssize_t off = j * dw - pw, lo = _tap_lo(ow, sw, off), hi = _tap_hi(w, ow, sw, off)
    cdef Py_ssize_t oy, ox, iy
    cdef const floating* src
    if sh == 1 and sw == 1 and ow == w:     # the shifted plane, one run (any dilation)
        if floating is float:
            edl_im2col_s1_f(x + ch * h * w, h, w, i * dh - ph, off, oh, dst)
        else:
            edl_im2col_s1_d(x + ch * h * w, h, w, i * dh - ph, off, oh, dst)
        return
    for oy in range(oh):
        iy = oy * sh - ph + i * dh
        if iy < 0 or iy >= h:
            for ox in range(ow):
                dst[ox] = 0
        else:
            src = x + (ch * h + iy) * w
            for ox in range(lo):
                dst[ox] = 0
            if floating is float:
                edl_gather_f(src + lo * sw + off, sw, dst + lo, hi - lo)
            else:
                edl_gather_d(src + lo * sw + off, sw, dst + lo, hi - lo)
            for ox in range(hi, ow):
                dst[ox] = 0
        dst += ow


cdef void _im2col_rows(const floating* x, Py_ssize_t h, Py_ssize_t w, Py_ssize_t r0,
                       Py_ssize_t r1, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
                       Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                       Py_ssize_t dw, Py_ssize_t oh, Py_ssize_t ow,
                       floating* dst) noexcept nogil:
    """Rows [r0, r1) of im2col(x) for oh output rows into dst: narrow outputs in one walk
    (edl_im2col.h: per-row calls cost more than the copying there), else row by row."""
    cdef Py_ssize_t r
    if ow < EDL_IM2COL_NARROW:
        if floating is float:
            edl_im2col_rows_f(x, h, w, r0, r1, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 0, dst)
        else:
            edl_im2col_rows_d(x, h, w, r0, r1, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 0, dst)
        return
    for r in range(r0, r1):
        _im2col_row(x, h, w, r, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dst + (r - r0) * oh * ow)


def im2col(const floating[:, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh,
           Py_ssize_t ow, floating[:, ::1] cols):
    cdef Py_ssize_t c = x.shape[0], h = x.shape[1], w = x.shape[2], ch, kk = kh * kw
    if c * kh * kw * oh * ow == 0:
        return
    for ch in prange(c, nogil=True, schedule="static",
                     use_threads_if=c * kh * kw * oh * ow >= _PAR_ELEMS):
        _im2col_rows(&x[0, 0, 0], h, w, ch * kk, (ch + 1) * kk, kh, kw, sh, sw, ph, pw, dh, dw,
                     oh, ow, &cols[ch * kk, 0])


def col2im(const floating[:, ::1] cols, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t ih,
           Py_ssize_t iw, floating[:, :, ::1] out):
    cdef Py_ssize_t m = out.shape[0], oh = out.shape[1], ow = out.shape[2]
    cdef Py_ssize_t mm, i, j, r, y, xx, oy, off, lo, hi
    cdef floating* dst
    cdef const floating* src
    if m * ih * iw == 0:
        return
    for mm in prange(m, nogil=True, schedule="static",
                     use_threads_if=m * kh * kw * ih * iw >= _PAR_ELEMS):
        for i in range(kh):
            for j in range(kw):
                r = (mm * kh + i) * kw + j
                off = j * dw - pw
                lo = _tap_lo(iw, sw, off)
                hi = _tap_hi(ow, iw, sw, off)
                for y in range(ih):
                    oy = y * sh - ph + i * dh
                    if oy < 0 or oy >= oh:
                        continue
                    src = &cols[r, y * iw]
                    dst = &out[mm, oy, 0]
                    for xx in range(lo, hi):
                        dst[xx * sw + off] += src[xx]


cdef inline void _acc3(const floating* src, const floating* w, floating* row, Py_ssize_t n,
                       Py_ssize_t sw, Py_ssize_t dw) noexcept nogil:
    """row[k] += the 3 taps of one kernel row, k < n (src: the padded input row)."""
    if floating is float:
        edl_acc3_f(src, w, row, n, sw, dw)
    else:
        edl_acc3_d(src, w, row, n, sw, dw)


cdef inline void _acc5(const floating* src, const floating* w, floating* row, Py_ssize_t n,
                       Py_ssize_t sw, Py_ssize_t dw) noexcept nogil:
    if floating is float:
        edl_acc5_f(src, w, row, n, sw, dw)
    else:
        edl_acc5_d(src, w, row, n, sw, dw)


cdef inline void _full3(const floating* x0, const floating* w, floating* row, Py_ssize_t wp,
                        Py_ssize_t n) noexcept nogil:
    """row[k] = the whole 3x3 window at stride 1 (input rows x0, x0 + wp, x0 + 2 wp)."""
    if floating is float:
        edl_full3_f(x0, x0 + wp, x0 + 2 * wp, w, row, n)
    else:
        edl_full3_d(x0, x0 + wp, x0 + 2 * wp, w, row, n)


cdef inline void _full5(const floating* x0, const floating* w, floating* row, Py_ssize_t wp,
                        Py_ssize_t n) noexcept nogil:
    if floating is float:
        edl_full5v_f(x0, wp, w, row, n)
    else:
        edl_full5_d(x0, x0 + wp, x0 + 2 * wp, x0 + 3 * wp, x0 + 4 * wp, w, row, n)


cdef inline void _acc1(const floating* src, floating wv, floating* row, Py_ssize_t lo,
                       Py_ssize_t hi, Py_ssize_t sw, Py_ssize_t off) noexcept nogil:
    """row[ox] += wv * one tap (any kernel width)."""
    cdef Py_ssize_t ox
    if sw == 1:
        src = src + off
        for ox in range(lo, hi):
            row[ox] += wv * src[ox]
    else:
        for ox in range(lo, hi):
            row[ox] += wv * src[ox * sw + off]


def depthwise_conv2d(const floating[:, :, :, ::1] x, const floating[:, :, ::1] w,
                     const floating[::1] bias,
                     Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                     Py_ssize_t dh, Py_ssize_t dw, int act, double p0, double p1,
                     const floating[::1] slopes, floating[:, :, :, ::1] out):
    cdef int err
    if x.shape[0] * x.shape[1] * out.shape[2] * out.shape[3] == 0:
        return
    with nogil:
        err = _depthwise(&x[0, 0, 0, 0], x.shape[0] * x.shape[1], x.shape[1], x.shape[2],
                         x.shape[3], &w[0, 0, 0], w.shape[1], w.shape[2], &bias[0], sh, sw,
                         ph, pw, dh, dw, act, <floating>p0, <floating>p1, &slopes[0],
                         &out[0, 0, 0, 0], out.shape[2], out.shape[3])
    if err:
        raise MemoryError("depthwise_conv2d: out of memory for the plane buffers")


cdef int _depthwise(const floating* x, Py_ssize_t planes, Py_ssize_t c, Py_ssize_t h,
                    Py_ssize_t wd, const floating* w, Py_ssize_t kh, Py_ssize_t kw,
                    const floating* bias, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
                    Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, int act, floating lo,
                    floating hi, const floating* slopes, floating* out, Py_ssize_t oh,
                    Py_ssize_t ow) noexcept nogil:
    """Depthwise conv of `planes` = N * C planes x (h, wd) -> out (oh, ow), weights (C, kh,
    kw); everything C-contiguous. Each channel plane is first copied into a zero-bordered
    buffer (only if padded), so that every output row is a branch-free pass over whole rows
    of windows. Returns 0, or 1 if a buffer's allocation failed."""
    # the padded input region the outputs read: rows [-ph, hp - ph), columns [-pw, wp - pw)
    cdef Py_ssize_t hp = (oh - 1) * sh + (kh - 1) * dh + 1
    cdef Py_ssize_t wp = (ow - 1) * sw + (kw - 1) * dw + 1
    cdef Py_ssize_t rows_in = min(h, hp - ph), cols_in = min(wd, wp - pw)
    cdef bint padded = ph > 0 or pw > 0 or hp > h + ph or wp > wd + pw
    cdef bint unit = sw == 1 and dh == 1 and dw == 1
    cdef bint s2 = sw == 2 and dh == 1 and dw == 1 and kh == kw and (kw == 3 or kw == 5)
    cdef Py_ssize_t q, oy, i, j, k, r
    cdef floating* buf = NULL
    cdef floating* row
    cdef const floating* xp
    cdef const floating* src
    cdef const floating* wc
    if s2:
        return _depthwise_s2(x, planes, c, h, wd, w, kh, bias, sh, ph, pw, act, lo, hi,
                             slopes, out, oh, ow)
    cdef bint same3 = unit and sh == 1 and kh == kw == 3 and ph == pw == 1 and oh == h \
        and ow == wd
    if floating is float:
        if same3 and _flat3_wanted(h, wd, act):
            return _depthwise_same_flat(x, planes, c, h, wd, w, bias, act, lo, hi, slopes, out)
    if same3 and ow >= _SAME_W:
        return _depthwise_same(x, planes, c, h, wd, w, bias, act, lo, hi, slopes, out)
    if kh == 1 and kw == 1 and sh == 1 and sw == 1 and not padded and oh == h and ow == wd:
        _depthwise_1x1(x, planes, c, h * wd, w, bias, act, lo, hi, slopes, out)
        return 0
    if not padded:
        wp = wd
    # 5x5 float32 from 4 rows and 16 columns (edl_dw5_bands_f's precondition): bands of
    # output rows straight into out, the bias and a clip in their store
    cdef bint band5 = False
    if floating is float:
        band5 = unit and sh == 1 and kh == kw == 5 and oh >= 4 and ow >= 16
    cdef bint fused = act == ACT_NONE or act == ACT_CLIP
    cdef floating flo = lo if act == ACT_CLIP else -INFINITY
    cdef floating fhi = hi if act == ACT_CLIP else INFINITY
    # Narrow planes at stride 1: the whole plane as one long row of windows over the flat
    # (padded) plane, wp - ow junk outputs per row dropped when copied out: rows of 22
    # spent more on per-row calls and tails than on the windows.
    cdef bint flat = unit and sh == 1 and kh == kw and (kh == 3 or kh == 5) and ow < _FLAT_W \
        and not band5
    cdef floating* tmp = NULL
    cdef int err = 0
    with parallel(use_threads_if=planes * oh * ow * kh * kw >= _PAR_ELEMS):
        if padded:
            buf = <floating*>calloc(hp * wp, sizeof(floating))   # borders stay zero
        if flat:
            tmp = <floating*>malloc(oh * wp * sizeof(floating))
        for q in prange(planes, schedule="static"):
            if (padded and buf == NULL) or (flat and tmp == NULL):
                err += 1
                continue
            xp = x + q * h * wd
            if padded:
                if floating is float:
                    edl_copy_rows_f(xp, wd, buf + ph * wp + pw, wp, rows_in, cols_in)
                else:
                    for r in range(rows_in):
                        src = xp + r * wd
                        row = buf + (r + ph) * wp + pw
                        for k in range(cols_in):
                            row[k] = src[k]
                xp = buf
            wc = w + (q % c) * kh * kw
            if floating is float:
                if band5:
                    edl_dw5_bands_f(xp, wp, wc, out + q * oh * ow, oh, ow,
                                    bias[q % c] if fused else 0, flo, fhi)
                    if not fused:
                        _epilogue(out + q * oh * ow, oh * ow, bias[q % c], act, lo, hi,
                                  slopes[q % c])
                    continue
            if flat:
                if kh == 3:
                    _full3(xp, wc, tmp, wp, (oh - 1) * wp + ow)
                else:
                    _full5(xp, wc, tmp, wp, (oh - 1) * wp + ow)
                if floating is float:      # copied out of tmp by the epilogue's pass
                    edl_epilogue_rows_f(tmp, wp, out + q * oh * ow, ow, oh, ow, bias[q % c],
                                        act, lo, hi, slopes[q % c])
                else:
                    for oy in range(oh):
                        memcpy(out + (q * oh + oy) * ow, tmp + oy * wp, ow * sizeof(floating))
                    _epilogue(out + q * oh * ow, oh * ow, bias[q % c], act, lo, hi,
                              slopes[q % c])
                continue
            for oy in range(oh):
                row = out + (q * oh + oy) * ow
                src = xp + oy * sh * wp
                if unit and kh == 3 and kw == 3:
                    _full3(src, wc, row, wp, ow)
                elif unit and kh == 5 and kw == 5:
                    _full5(src, wc, row, wp, ow)
                else:
                    for k in range(ow):
                        row[k] = 0
                    for i in range(kh):
                        if kw == 3:
                            _acc3(src + i * dh * wp, wc + i * kw, row, ow, sw, dw)
                        elif kw == 5:
                            _acc5(src + i * dh * wp, wc + i * kw, row, ow, sw, dw)
                        else:
                            for j in range(kw):
                                _acc1(src + i * dh * wp, wc[i * kw + j], row, 0, ow, sw,
                                      j * dw)
            # the plane at once (in cache): one loop tail instead of one a row
            _epilogue(out + q * oh * ow, oh * ow, bias[q % c], act, lo, hi, slopes[q % c])
        free(buf)
        free(tmp)
    return err != 0


cdef void _depthwise_1x1(const floating* x, Py_ssize_t planes, Py_ssize_t c, Py_ssize_t n,
                         const floating* w, const floating* bias, int act, floating lo,
                         floating hi, const floating* slopes, floating* out) noexcept nogil:
    """1x1 at stride 1, no padding (see edl_scale_epilogue_f): each plane of n values in one
    pass, planes over the threads."""
    cdef Py_ssize_t q, k
    for q in prange(planes, schedule="static", use_threads_if=planes * n >= _PAR_ELEMS):
        if floating is float:
            edl_scale_epilogue_f(x + q * n, out + q * n, n, w[q % c], bias[q % c], act, lo,
                                 hi, slopes[q % c])
        else:
            for k in range(n):
                out[q * n + k] = x[q * n + k] * w[q % c]
            _epilogue(out + q * n, n, bias[q % c], act, lo, hi, slopes[q % c])


cdef void _depthwise3_s2_flat(const float* x, Py_ssize_t planes, Py_ssize_t c, Py_ssize_t h,
                              Py_ssize_t wd, const float* w, const float* bias, Py_ssize_t sh,
                              Py_ssize_t ph, int act, float lo, float hi, const float* slopes,
                              float* out, Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """3x3 at column stride 2 with one column of left padding on AVX-512 or AVX2: each plane's
    output rows straight from its input rows (edl_dw3s2_flat_f), the bias and a clip, sigmoid
    or SiLU in registers, other activations over the rows afterwards. The threads take runs
    of output rows of every plane (_dw_row_runs)."""
    cdef Py_ssize_t q, t, r0, r1
    cdef int sig = act if act == ACT_SIGMOID or act == ACT_SILU else 0
    cdef bint fused = act == ACT_NONE or act == ACT_CLIP or sig != 0
    cdef float flo = lo if act == ACT_CLIP else -INFINITY
    cdef float fhi = hi if act == ACT_CLIP else INFINITY
    cdef int nt = _dw_row_runs(planes * oh * ow * 9, oh)
    for t in prange(nt, schedule="static", nogil=True, use_threads_if=nt > 1):
        r0 = t * oh // nt
        r1 = (t + 1) * oh // nt
        for q in range(planes):
            edl_dw3s2_flat_f(x + q * h * wd, h, wd, sh, ph, w + (q % c) * 9,
                             bias[q % c] if fused else 0, flo, fhi, sig, out + q * oh * ow,
                             r0, r1, ow)
            if not fused:
                _epilogue(out + (q * oh + r0) * ow, (r1 - r0) * ow, bias[q % c], act, lo, hi,
                          slopes[q % c])


cdef inline int _dw_row_runs(Py_ssize_t work, Py_ssize_t rows) noexcept nogil:
    """Threads for a flat depthwise run split by output rows (1 below _PAR_ELEMS of work): a
    thread's rows of every plane are the pixels the GEMM after it gives that thread (its
    columns), and the rows the stem conv before it wrote. Split by planes, a 1x1 conv after
    it read half its input from the other core's cache (YOLOX's 16 -> 32 at 104 x 104:
    174 us on one thread, 169 on two, against 154 / 80 alone)."""
    cdef int nt = omp_get_max_threads() if work >= _PAR_ELEMS else 1
    return <int>max(min(<Py_ssize_t>nt, rows), 1)


cdef int _depthwise_s2(const floating* x, Py_ssize_t planes, Py_ssize_t c, Py_ssize_t h,
                       Py_ssize_t wd, const floating* w, Py_ssize_t k_, const floating* bias,
                       Py_ssize_t sh, Py_ssize_t ph, Py_ssize_t pw, int act, floating lo,
                       floating hi, const floating* slopes, floating* out, Py_ssize_t oh,
                       Py_ssize_t ow) noexcept nogil:
    """3x3 / 5x5 at column stride 2, dilation 1: each plane copied into a zero-bordered
    buffer split by column parity (see EDL_CONV_ROWS_S2), whole windows per output.
    Returns 0, or 1 if the buffer's calloc failed."""
    cdef Py_ssize_t hp = (oh - 1) * sh + k_, wp = (ow - 1) * 2 + k_
    cdef Py_ssize_t wq = (wp + 1) // 2, rs = 2 * wq
    cdef Py_ssize_t rows_in = min(h, hp - ph), cols_in = min(wd, wp - pw)
    cdef Py_ssize_t q, oy, r
    cdef int err = 0
    cdef floating* buf = NULL
    cdef floating* row
    cdef const floating* wc
    if floating is float:
        if k_ == 3 and pw == 1 and edl_dw3_flat_ok():    # AVX-512 or AVX2
            _depthwise3_s2_flat(x, planes, c, h, wd, w, bias, sh, ph, act, lo, hi, slopes, out,
                                oh, ow)
            return 0
        if k_ == 3 and sh == 2 and pw == 1:
            return _depthwise3_s2_f(x, planes, c, h, wd, w, bias, ph, act, lo, hi, slopes, out,
                                    oh, ow)
    with parallel(use_threads_if=planes * oh * ow * k_ * k_ >= _PAR_ELEMS):
        buf = <floating*>calloc(hp * rs, sizeof(floating))   # borders stay zero
        for q in prange(planes, schedule="static"):
            if buf == NULL:
                err += 1
                continue
            for r in range(rows_in):
                if floating is float:
                    edl_split2_f(x + (q * h + r) * wd, cols_in, buf + (r + ph) * rs, wq, pw)
                else:
                    edl_split2_d(x + (q * h + r) * wd, cols_in, buf + (r + ph) * rs, wq, pw)
            wc = w + (q % c) * k_ * k_
            for oy in range(oh):
                row = out + (q * oh + oy) * ow
                if floating is float:
                    if k_ == 3:
                        edl_full3s2_f(buf + oy * sh * rs, rs, wq, wc, row, ow)
                    else:
                        edl_full5s2_f(buf + oy * sh * rs, rs, wq, wc, row, ow)
                else:
                    if k_ == 3:
                        edl_full3s2_d(buf + oy * sh * rs, rs, wq, wc, row, ow)
                    else:
                        edl_full5s2_d(buf + oy * sh * rs, rs, wq, wc, row, ow)
            _epilogue(out + q * oh * ow, oh * ow, bias[q % c], act, lo, hi, slopes[q % c])
        free(buf)
    return err != 0


cdef int _depthwise3_s2_f(const float* x, Py_ssize_t planes, Py_ssize_t c, Py_ssize_t h,
                          Py_ssize_t wd, const float* w, const float* bias, Py_ssize_t ph,
                          int act, float lo, float hi, const float* slopes, float* out,
                          Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """3x3 at stride 2 with one column of left padding where the CPU has no flat run (SSE,
    ARM): output rows of >= 17 (edl_dw3s2_split_min) from a copy of the plane split by
    column parity (even width, ow = wd / 2: edl_deinterleave_f, then edl_dw3s2_split_row_f),
    narrower ones from the input rows in place (edl_dw3s2_row_f); a zero row where the window leaves the plane. The bias
    and a clip in the row kernels' store, other activations over the plane afterwards.
    Returns 0, or 1 if a buffer's allocation failed."""
    cdef Py_ssize_t q, oy, iy, hw = wd // 2
    cdef int err = 0
    cdef float* zero = NULL
    cdef float* ev = NULL
    cdef float* od
    cdef const float* xp
    cdef const float* wc
    cdef bint fused = act == ACT_NONE or act == ACT_CLIP
    cdef bint split = wd % 2 == 0 and ow == hw and ow >= edl_dw3s2_split_min()
    cdef float flo = lo if act == ACT_CLIP else -INFINITY
    cdef float fhi = hi if act == ACT_CLIP else INFINITY
    with parallel(use_threads_if=planes * oh * ow * 9 >= _PAR_ELEMS):
        zero = <float*>calloc(wd, sizeof(float))
        if split:
            ev = <float*>malloc(h * wd * sizeof(float))
        od = ev + h * hw if split else NULL
        for q in prange(planes, schedule="static"):
            if zero == NULL or (split and ev == NULL):
                err += 1
                continue
            xp = x + q * h * wd
            wc = w + (q % c) * 9
            if split:
                edl_deinterleave_f(xp, h * hw, ev, od)
            for oy in range(oh):
                iy = oy * 2 - ph
                if split:
                    edl_dw3s2_split_row_f(ev + iy * hw if 0 <= iy < h else zero,
                                          od + iy * hw if 0 <= iy < h else zero,
                                          ev + (iy + 1) * hw if 0 <= iy + 1 < h else zero,
                                          od + (iy + 1) * hw if 0 <= iy + 1 < h else zero,
                                          ev + (iy + 2) * hw if 0 <= iy + 2 < h else zero,
                                          od + (iy + 2) * hw if 0 <= iy + 2 < h else zero,
                                          wc, out + (q * oh + oy) * ow, ow,
                                          bias[q % c] if fused else 0, flo, fhi)
                else:
                    edl_dw3s2_row_f(xp + iy * wd if 0 <= iy < h else zero,
                                    xp + (iy + 1) * wd if 0 <= iy + 1 < h else zero,
                                    xp + (iy + 2) * wd if 0 <= iy + 2 < h else zero,
                                    wc, out + (q * oh + oy) * ow, ow, wd,
                                    bias[q % c] if fused else 0, flo, fhi)
            if not fused:
                _epilogue(out + q * oh * ow, oh * ow, bias[q % c], act, lo, hi, slopes[q % c])
        free(zero)
        free(ev)
    return err != 0


def pack_conv_weights(const floating[:, ::1] w):
    """(M, K) weights -> conv_gemm's operand: float32 in the GEMM micro-kernel's panels
    (see edl_gemm.h), float64 as a flat copy (that path uses NumPy's BLAS)."""
    cdef Py_ssize_t m = w.shape[0], k = w.shape[1]
    cdef int mr = edl_gemm_mr()
    cdef float[::1] view
    import numpy as np      # here, not at import: the built modules import without NumPy
    if floating is double:
        return np.array(w).reshape(-1)     # conv_gemm takes it flat
    else:
        ap = np.zeros(edl_gemm_panels(m, mr) * k * mr, np.float32)
        view = ap
        if m * k:
            edl_gemm_pack_a(&w[0, 0], m, k, k, &view[0])
        return ap


def conv_gemm(const floating[:, :, ::1] x, const floating[::1] wp, const floating[::1] bias,
              Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph,
              Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, int act, double p0, double p1,
              const floating[::1] slopes, floating[:, :, ::1] y):
    cdef Py_ssize_t m = y.shape[0], K = x.shape[0] * kh * kw, L = y.shape[1] * y.shape[2]
    if floating is float:
        _check_packed("conv_gemm", wp.shape[0], m, K)
        if m * L and _conv_gemm_f32(&x[0, 0, 0], x.shape[0], x.shape[1], x.shape[2], &wp[0],
                                    &bias[0], kh, kw, sh, sw, ph, pw, dh, dw, act,
                                    <float>p0, <float>p1, &slopes[0], &y[0, 0, 0], m,
                                    y.shape[1], y.shape[2]):
            raise MemoryError("conv_gemm: out of memory for the column buffers")
    else:
        import numpy as np
        from edgedl.kernels._gemm import conv_gemm_blocked, needs_epilogue
        ya = np.asarray(y)
        conv_gemm_blocked(im2col, np.asarray(x), np.asarray(wp).reshape(m, K), kh, kw, sh,
                          sw, ph, pw, dh, dw, ya)
        if needs_epilogue(np.asarray(bias), act):
            bias_act(ya.reshape(1, m, L), bias, act, p0, p1, slopes)


cdef int _check_packed(str who, Py_ssize_t n, Py_ssize_t m, Py_ssize_t K) except -1:
    """n values of packed weights must be pack_conv_weights' layout of (m, K) float32."""
    if n != edl_gemm_panels(m, edl_gemm_mr()) * K * edl_gemm_mr():
        raise ValueError(f"{who}: wp has {n} values; it must come from pack_conv_weights of "
                         f"({m}, {K}) float32 weights")
    return 0


cdef bint _f32_array(const Py_buffer* b, Py_ssize_t d0, Py_ssize_t d1, Py_ssize_t d2,
                     Py_ssize_t d3) noexcept:
    """b is a float32 (native order) buffer of shape (d0, d1, d2, d3)."""
    cdef Py_ssize_t shape[4]
    shape[0], shape[1], shape[2], shape[3] = d0, d1, d2, d3
    return f32_shape4(b, shape)


cdef bint _image_pair(x, y, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w, Py_ssize_t m,
                      Py_ssize_t oh, Py_ssize_t ow, Py_buffer* bx, Py_buffer* by):
    """The buffers of x, a float32 (1, c, h, w) array, and y, a writable float32 (1, m, oh,
    ow) one not overlapping it, both C-contiguous: True with both held (release_pair),
    else False with neither."""
    if not get_pair(x, bx, y, by, PyBUF_FORMAT):
        return False
    if (_f32_array(bx, 1, c, h, w) and _f32_array(by, 1, m, oh, ow)
            and disjoint(bx, by, False)):
        return True
    release_pair(bx, by)
    return False


cdef class ConvF32:
    """A float32 conv of one image bound to its weights, bias, epilogue and geometry
    (conv2d_plan's fast path, which the ONNX runtime takes for nearly every conv): dense
    (conv_gemm, ``wp`` packed by pack_conv_weights) or depthwise (``wp`` the (C, kh, kw)
    weights flattened).

    ``call(x, y, nthreads)`` runs it and returns True when x is a C-contiguous float32
    (1, C, H, W) array and y a writable C-contiguous float32 (1, M, OH, OW) one not
    overlapping x; otherwise it returns False and touches nothing (the caller then takes the
    general path, which raises the right errors). Two plain buffer requests replace the
    twin's fused-type dispatch and its typed memoryviews, and the caller's shape / dtype /
    contiguity checks: a model's conv calls run with the interpreter cache-cold.
    """
    cdef const float[::1] wp, bias, slopes, wdir
    cdef Py_ssize_t c, h, w, m, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw
    cdef int act
    cdef readonly bint depthwise
    cdef readonly bint direct       # runs _conv_direct_f32 (no im2col, no GEMM)
    cdef bint res_after             # a residual is added after the activation
    cdef Py_ssize_t groups          # > 1: a grouped dense conv (see _groups)
    cdef float lo, hi

    def __init__(self, bint depthwise, const float[::1] wp, const float[::1] bias,
                 const float[::1] slopes, Py_ssize_t c, Py_ssize_t h, Py_ssize_t w,
                 Py_ssize_t m, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t kh, Py_ssize_t kw,
                 Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
                 Py_ssize_t dw, int act, double p0, double p1, const float[::1] direct=None,
                 bint res_after=False, Py_ssize_t groups=1):
        """direct: weights for _conv_direct_f32 ((M + 7) // 8 groups of K taps x 8 channels,
        pack_direct_weights), which then runs instead of the GEMM (dense convs of few taps,
        dilation 1, output rows of >= 8). res_after: a call's residual is added after the
        activation (y = act(conv + bias) + res), not before it. groups > 1: a grouped dense
        conv (GEMM path, no residual), ``wp`` each group's pack_conv_weights in turn."""
        cdef Py_ssize_t K = c * kh * kw
        if groups < 1 or c % groups or m % groups or (groups > 1 and (
                depthwise or direct is not None)):
            raise ValueError(f"ConvF32: groups={groups} must divide C and M, and go with "
                             f"neither the depthwise nor the direct path")
        self.groups = groups
        c, m = c // groups, m // groups     # one group's, checked below
        K = c * kh * kw
        self.direct = direct is not None
        if self.direct:
            if (depthwise or dh != 1 or dw != 1 or ow < 8 or K > _DIRECT_TAPS
                    or direct.shape[0] != (m + 7) // 8 * 8 * K):
                raise ValueError(f"ConvF32: direct weights need a dense conv of <= "
                                 f"{_DIRECT_TAPS} taps, dilation 1, output rows >= 8 and "
                                 f"{(m + 7) // 8 * 8 * K} values")
            self.wdir = direct
        if depthwise and (m != c or wp.shape[0] != K):
            raise ValueError(f"ConvF32: depthwise weights need M = C = {c} and C * kh * kw "
                             f"= {K} values, got M = {m} and {wp.shape[0]}")
        if not depthwise:
            if wp.shape[0] % groups:
                raise ValueError("ConvF32: wp must hold every group's packed weights")
            _check_packed("ConvF32", wp.shape[0] // groups, m, K)
        c, m = c * groups, m * groups
        if bias.shape[0] != m or slopes.shape[0] != m or min(c, h, w, m, oh, ow) < 1:
            raise ValueError("ConvF32: bias and slopes need M values, every size >= 1")
        self.depthwise, self.wp, self.bias, self.slopes = depthwise, wp, bias, slopes
        self.c, self.h, self.w, self.m, self.oh, self.ow = c, h, w, m, oh, ow
        self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw = (
            kh, kw, sh, sw, ph, pw, dh, dw)
        self.act, self.lo, self.hi = act, <float>p0, <float>p1
        self.res_after = res_after

    def __call__(self, x, y, int nthreads, res=None):
        """``res``: the residual (1, M, OH, OW) float32, C-contiguous, not overlapping y, of
        a conv fused with the Add after it: y = act(conv + bias + res), or act(conv + bias)
        + res where bound with res_after. Dense GEMM convs only (others return False)."""
        cdef Py_buffer bx, by, br
        cdef int r = 0
        cdef bint ok
        cdef const float* rp = NULL
        cdef _Direct d
        if res is not None:
            if self.direct or self.depthwise or self.groups > 1:
                return False
            if get_buffer(res, &br, PyBUF_ND | PyBUF_FORMAT) < 0:
                PyErr_Clear()
                return False
        if not get_pair(x, &bx, y, &by, PyBUF_FORMAT):
            if res is not None:
                PyBuffer_Release(&br)
                return False
            return self._strided(x, y, nthreads)
        ok = (_f32_array(&bx, 1, self.c, self.h, self.w)
              and _f32_array(&by, 1, self.m, self.oh, self.ow) and disjoint(&bx, &by, False))
        if res is not None:
            ok = ok and _f32_array(&br, 1, self.m, self.oh, self.ow) and disjoint(&br, &by, False)
            rp = <const float*>br.buf
        if ok:
            if omp_get_max_threads() != nthreads:
                omp_set_num_threads(nthreads)
            with nogil:
                if self.direct:
                    d = self._direct()
                    r = _conv_direct_f32(&d, <const float*>bx.buf, <float*>by.buf)
                elif self.depthwise:
                    r = _depthwise(<const float*>bx.buf, self.c, self.c, self.h, self.w,
                                   &self.wp[0], self.kh, self.kw, &self.bias[0], self.sh,
                                   self.sw, self.ph, self.pw, self.dh, self.dw, self.act,
                                   self.lo, self.hi, &self.slopes[0], <float*>by.buf,
                                   self.oh, self.ow)
                elif self.groups > 1:
                    r = self._groups(<const float*>bx.buf, <float*>by.buf)
                else:
                    r = _conv_gemm_f32(<const float*>bx.buf, self.c, self.h, self.w,
                                       &self.wp[0], &self.bias[0], self.kh, self.kw, self.sh,
                                       self.sw, self.ph, self.pw, self.dh, self.dw, self.act,
                                       self.lo, self.hi, &self.slopes[0], <float*>by.buf,
                                       self.m, self.oh, self.ow, rp, self.res_after)
        release_pair(&bx, &by)
        if res is not None:
            PyBuffer_Release(&br)
        if r:
            raise MemoryError("conv: out of memory for its buffers")
        return ok

    cdef bint _strided(self, x, y, int nthreads) except -1:
        """A pointwise (1x1, stride 1, unpadded) dense conv of an x whose channel planes are
        C-contiguous but further apart than a plane (every k-th channel of a larger array: a
        channel shuffle's half, kept a view by the planner), read in place by the GEMM (its
        rows of B that stride apart). False, touching nothing, for any other x or conv."""
        cdef Py_buffer bx, by
        cdef Py_ssize_t hw = self.h * self.w, cs
        cdef int r = 0
        cdef bint ok
        if (self.direct or self.depthwise or self.groups > 1 or self.kh != 1 or self.kw != 1
                or self.sh != 1 or self.sw != 1 or self.oh != self.h or self.ow != self.w):
            return False
        if get_buffer(x, &bx, PyBUF_STRIDES | PyBUF_FORMAT) < 0:
            PyErr_Clear()
            return False
        if get_buffer(y, &by, PyBUF_ND | PyBUF_WRITABLE | PyBUF_FORMAT) < 0:
            PyErr_Clear()
            PyBuffer_Release(&bx)
            return False
        cs = bx.strides[1] // 4 if bx.ndim == 4 else 0
        # planes of hw floats cs floats apart (cs >= hw: no plane overlaps the next), the
        # extent of x's planes not overlapping y
        ok = (_f32_array(&bx, 1, self.c, self.h, self.w) and bx.strides[3] == 4
              and bx.strides[2] == 4 * self.w and bx.strides[1] % 4 == 0 and cs >= hw
              and _f32_array(&by, 1, self.m, self.oh, self.ow)
              and (<const char*>bx.buf + ((self.c - 1) * cs + hw) * 4 <= <const char*>by.buf
                   or <const char*>by.buf + by.len <= <const char*>bx.buf))
        if ok:
            if omp_get_max_threads() != nthreads:
                omp_set_num_threads(nthreads)
            with nogil:
                r = _conv_gemm_f32(<const float*>bx.buf, self.c, self.h, self.w, &self.wp[0],
                                   &self.bias[0], 1, 1, 1, 1, 0, 0, 1, 1, self.act, self.lo,
                                   self.hi, &self.slopes[0], <float*>by.buf, self.m, self.oh,
                                   self.ow, NULL, False, cs)
        release_pair(&bx, &by)
        if r:
            raise MemoryError("conv: out of memory for its buffers")
        return ok

    cdef _Direct _direct(self) noexcept nogil:
        """The direct path's arguments (self.direct)."""
        cdef _Direct d
        d.wq, d.bias, d.slopes = &self.wdir[0], &self.bias[0], &self.slopes[0]
        d.c, d.h, d.wd, d.m, d.oh, d.ow = self.c, self.h, self.w, self.m, self.oh, self.ow
        d.kh, d.kw, d.sh, d.sw, d.ph, d.pw = self.kh, self.kw, self.sh, self.sw, self.ph, self.pw
        d.act, d.lo, d.hi = self.act, self.lo, self.hi
        return d

    cdef int _groups(self, const float* xb, float* yb) noexcept nogil:
        """The grouped conv: group g's GEMM on input channels g * C / groups.. into output
        channels g * M / groups... Groups that split evenly over the threads go to them
        whole, one parallel region (each group's GEMM then runs on its thread alone:
        nested regions are serial); otherwise group after group, each split over the
        threads as a dense conv is. (ShuffleNet's 4-group 1x1 convs at 28x28, each group
        split over both threads, had taken 98 us on one thread and 129 on two in the model;
        whole groups: 132 -> 71 us standalone.)"""
        cdef Py_ssize_t g, gs = self.groups, cg = self.c // gs, mg = self.m // gs
        cdef Py_ssize_t ws = self.wp.shape[0] // gs, xs = cg * self.h * self.w
        cdef Py_ssize_t ys = mg * self.oh * self.ow
        cdef int nt = omp_get_max_threads(), err = 0
        cdef bint whole = (nt > 1 and gs % nt == 0 and
                           self.m * cg * self.kh * self.kw * self.oh * self.ow >= _PAR_MACS)
        if whole:
            for g in prange(gs, schedule="static", num_threads=nt):
                err += self._group(g, xb + g * xs, yb + g * ys, ws, cg, mg)
        else:
            for g in range(gs):
                err += self._group(g, xb + g * xs, yb + g * ys, ws, cg, mg)
        return err != 0

    cdef int _group(self, Py_ssize_t g, const float* xg, float* yg, Py_ssize_t ws,
                    Py_ssize_t cg, Py_ssize_t mg) noexcept nogil:
        return _conv_gemm_f32(xg, cg, self.h, self.w, &self.wp[g * ws], &self.bias[g * mg],
                              self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh,
                              self.dw, self.act, self.lo, self.hi, &self.slopes[g * mg], yg,
                              mg, self.oh, self.ow)


cdef class ConvMaxPoolF32:
    """A ConvF32 on its direct path whose output only a max pool reads, run as one
    (_conv_maxpool_f32): 3x3 windows at stride 2 with pads top / left ``pt``, ``pl`` <= 1
    (``pk`` 3; every window with an in-image row and column), or 2x2 at stride 2 without
    padding (``pk`` 2); pooled output (1, M, ``poh``, ``pow``).

    ``call(x, y, nthreads)`` as ConvF32's (no residual): True when done, else False having
    touched nothing."""
    cdef ConvF32 conv
    cdef Py_ssize_t pk, pt, pl, poh, pw_

    def __init__(self, ConvF32 conv, Py_ssize_t pk, Py_ssize_t pt, Py_ssize_t pl,
                 Py_ssize_t poh, Py_ssize_t pow):
        cdef bint ok = conv.direct and conv.groups == 1 and poh >= 1 and pow >= 1 and (
            (pk == 3 and 0 <= pt <= 1 and 0 <= pl <= 1 and 2 * (poh - 1) - pt < conv.oh
             and 2 * (pow - 1) - pl < conv.ow)
            or (pk == 2 and pt == 0 and pl == 0 and 2 * poh <= conv.oh
                and 2 * pow <= conv.ow))
        # or a 3x3 'same' depthwise conv (stride 1, padding 1, rows of >= _SAME_W) and a 2x2
        # stride-2 pool of all of its output's row and column pairs (_dw_maxpool_f32)
        ok = ok or (conv.depthwise and conv.kh == conv.kw == 3 and conv.sh == conv.sw == 1
                    and conv.ph == conv.pw == 1 and conv.dh == conv.dw == 1
                    and conv.oh == conv.h and conv.ow == conv.w and conv.w >= _SAME_W
                    and pk == 2 and pt == 0 and pl == 0 and poh == conv.oh // 2 >= 1
                    and pow == conv.ow // 2)
        if not ok:
            raise ValueError("ConvMaxPoolF32: needs a direct ConvF32 and a 3x3 stride-2 pool "
                             "(pads <= 1, every window in the image) or a 2x2 stride-2 one "
                             "(no padding) of its output, or a 3x3 'same' depthwise ConvF32 "
                             "(rows of >= 18) and that 2x2 pool")
        self.conv, self.pk, self.pt, self.pl, self.poh, self.pw_ = conv, pk, pt, pl, poh, pow

    def __call__(self, x, y, int nthreads, res=None):
        cdef Py_buffer bx, by
        cdef int r = 0
        cdef _Direct d
        cdef _PwDw k
        if res is not None or not _image_pair(x, y, self.conv.c, self.conv.h, self.conv.w,
                                              self.conv.m, self.poh, self.pw_, &bx, &by):
            return False
        if omp_get_max_threads() != nthreads:
            omp_set_num_threads(nthreads)
        if self.conv.depthwise:
            k = self._depthwise()
            with nogil:
                r = _dw_maxpool_f32(&k, <const float*>bx.buf, <float*>by.buf)
        else:
            with nogil:
                d = self.conv._direct()
                r = _conv_maxpool_f32(&d, <const float*>bx.buf, <float*>by.buf, self.pk,
                                      self.pt, self.pl, self.poh, self.pw_)
        release_pair(&bx, &by)
        if r:
            raise MemoryError("ConvMaxPoolF32: out of memory for its buffers")
        return True

    cdef _PwDw _depthwise(self):
        """The depthwise conv and its pool as _dw_maxpool_f32 takes them (a _PwDw whose 1x1
        is unused)."""
        cdef _PwDw k
        cdef ConvF32 cv = self.conv
        k.wp = k.b1 = k.s1 = NULL
        k.act1, k.lo1, k.hi1 = ACT_NONE, 0, 0
        k.w2, k.b2, k.s2 = &cv.wp[0], &cv.bias[0], &cv.slopes[0]
        k.act2, k.lo2, k.hi2 = cv.act, cv.lo, cv.hi
        k.c, k.h, k.wd, k.m, k.pool = cv.c, cv.h, cv.w, cv.c, True
        return k


def direct_ok():
    """Whether this build has the direct path (x86-64 and aarch64: vector registers)."""
    return edl_direct_ok() != 0


def direct_wide(force=None):
    """Whether _conv_direct_f32 runs 16-pixel blocks here (x86-64 with AVX-512F), else 8;
    ``force`` (tests: both are correct on any CPU) sets it, -1 back to the CPU's choice."""
    if force is not None:
        edl_direct_set_wide(<int>force)
    return edl_direct_wide() != 0


def direct_deep():
    """Whether the direct path takes up to 320 taps on rows of >= 64 here (edl_direct_deep:
    the 16-pixel blocks of direct_wide, or AVX2's 4-channel x 24-pixel blocks)."""
    return edl_direct_deep() != 0


def pack_direct_weights(const float[:, ::1] w):
    """(M, K) weights -> _conv_direct_f32's: (M + 7) // 8 groups, each K taps x 8 channels
    (zeros past M)."""
    cdef Py_ssize_t m = w.shape[0], k = w.shape[1], g, t, j
    import numpy as np
    out = np.zeros((m + 7) // 8 * 8 * k, np.float32)
    cdef float[::1] o = out
    for g in range((m + 7) // 8):
        for t in range(k):
            for j in range(min(8, m - 8 * g)):
                o[(g * k + t) * 8 + j] = w[8 * g + j, t]
    return out


cdef struct _Direct:
    # a dense conv on the direct path (ConvF32's geometry; wq: pack_direct_weights)
    const float* wq
    const float* bias
    const float* slopes
    Py_ssize_t c, h, wd, m, oh, ow, kh, kw, sh, sw, ph, pw
    int act
    float lo, hi


cdef inline Py_ssize_t _direct_wq(const _Direct* d) noexcept nogil:
    """Values a column phase of a split input row holds."""
    return ((d.ow - 1) * d.sw + d.kw + d.sw - 1) // d.sw


cdef float* _direct_scratch(const _Direct* d) noexcept nogil:
    """A thread's buffer for _direct_row, every slot empty (NULL if malloc failed): the tap
    pointers and row indices first (malloc's alignment), the split rows after."""
    cdef Py_ssize_t T = d.c * d.kh * d.kw, u
    cdef float* buf = <float*>malloc(T * sizeof(void*) + d.c * d.kh * sizeof(Py_ssize_t)
                                     + d.c * d.kh * d.sw * _direct_wq(d) * sizeof(float))
    cdef Py_ssize_t* held
    if buf != NULL:
        held = <Py_ssize_t*>((<const float**>buf) + T)
        for u in range(d.c * d.kh):
            held[u] = -d.ph - d.kh - 1          # below every row index (>= -ph)
    return buf


cdef void _split2(const float* xr, Py_ssize_t wd, Py_ssize_t pw, float* split,
                  Py_ssize_t wq) noexcept nogil:
    """_direct_row's split of input row xr (wd columns) at stride 2: phase p's wq values at
    split + p * wq, column j at phase (j + pw) % 2, index (j + pw) // 2, zeros elsewhere.
    One de-interleave pass (edl_deinterleave_f) instead of a strided gather per phase (8% of
    FastestDet's 3x3 s2 stem)."""
    cdef Py_ssize_t pe = pw % 2, po = 1 - pe     # the phases of even and odd columns
    cdef Py_ssize_t oe = min(pw // 2, wq), oo = min((pw + 1) // 2, wq)   # their first index
    cdef Py_ssize_t ne = max(min((wd + 1) // 2, wq - oe), 0)   # even columns kept
    cdef Py_ssize_t no = max(min(wd // 2, wq - oo), 0)         # odd ones
    cdef Py_ssize_t n = min(ne, no), i
    cdef float* e = split + pe * wq
    cdef float* o = split + po * wq
    memset(e, 0, oe * sizeof(float))
    memset(e + oe + ne, 0, (wq - oe - ne) * sizeof(float))
    memset(o, 0, oo * sizeof(float))
    memset(o + oo + no, 0, (wq - oo - no) * sizeof(float))
    edl_deinterleave_f(xr, n, e + oe, o + oo)
    for i in range(n, ne):
        e[oe + i] = xr[2 * i]
    for i in range(n, no):
        o[oo + i] = xr[2 * i + 1]


cdef void _direct_row(const _Direct* d, const float* xb, float* buf, Py_ssize_t oy,
                      float* dst, Py_ssize_t ps) noexcept nogil:
    """Output row oy of every channel (channel t's at dst + t * ps), activated, without
    im2col: the kh input rows of each channel are copied zero-padded and split by column
    phase (sw phases of _direct_wq values: phase p holds padded columns p, p + sw, ...), so
    tap (ci, i, j) is the contiguous run at phase j % sw, offset j // sw; edl_direct_row then
    computes 8 output channels at a time. A split row stays in slot (r + ph) % kh of its
    channel while the next output rows read it (kh > sh: a 3x3 s2 stem split each input row
    1.5 times, 15% of its time). buf: _direct_scratch's, the thread's own."""
    cdef Py_ssize_t T = d.c * d.kh * d.kw, kh = d.kh, sw = d.sw, wq_ = _direct_wq(d)
    cdef Py_ssize_t ci, i, j, p, r, g, u0, u1, first, t, slot
    cdef const float** src = <const float**>buf
    cdef Py_ssize_t* held = <Py_ssize_t*>(src + T)  # the input row in each (channel, slot)
    cdef float* rows = <float*>(held + d.c * kh)
    cdef float* dst_
    cdef const float* xr
    # the bias and a clip, sigmoid or SiLU in the kernel's registers; others a pass per row
    cdef int sig = d.act if d.act == ACT_SIGMOID or d.act == ACT_SILU else 0
    cdef bint fused = d.act == ACT_NONE or d.act == ACT_CLIP or sig != 0
    cdef float flo = d.lo if d.act == ACT_CLIP else -INFINITY
    cdef float fhi = d.hi if d.act == ACT_CLIP else INFINITY
    for ci in range(d.c):
        for i in range(kh):
            r = oy * d.sh + i - d.ph
            slot = (r + d.ph) % kh          # r >= -ph
            for j in range(d.kw):
                src[(ci * kh + i) * d.kw + j] = (rows + ((ci * kh + slot) * sw + j % sw) * wq_
                                                 + j // sw)
            if held[ci * kh + slot] == r:
                continue
            held[ci * kh + slot] = r
            if sw == 2 and 0 <= r < d.h:
                _split2(xb + (ci * d.h + r) * d.wd, d.wd, d.pw,
                        rows + (ci * kh + slot) * 2 * wq_, wq_)
                continue
            for p in range(sw):
                dst_ = rows + ((ci * kh + slot) * sw + p) * wq_
                # phase p's value u is input column u * sw + p - pw: in the image for u in
                # [u0, u1)
                first = p - d.pw
                u0 = 0 if first >= 0 else (-first + sw - 1) // sw
                u1 = min(wq_, (d.wd - 1 - first) // sw + 1) if d.wd - 1 >= first else 0
                if r < 0 or r >= d.h or u1 <= u0:
                    memset(dst_, 0, wq_ * sizeof(float))
                    continue
                xr = xb + (ci * d.h + r) * d.wd
                memset(dst_, 0, u0 * sizeof(float))
                edl_gather_f(xr + u0 * sw + first, sw, dst_ + u0, u1 - u0)
                memset(dst_ + u1, 0, (wq_ - u1) * sizeof(float))
    for g in range((d.m + 7) // 8):
        edl_direct_row(src, T, d.wq + g * T * 8, d.bias + 8 * g, <int>min(8, d.m - 8 * g),
                       dst + 8 * g * ps, ps, d.ow, flo, fhi, sig)
    if not fused:
        for t in range(d.m):
            _epilogue(dst + t * ps, d.ow, <float>0, d.act, d.lo, d.hi, d.slopes[t])


cdef int _conv_direct_f32(const _Direct* d, const float* xb, float* yb) noexcept nogil:
    """Dense conv of few taps (dilation 1, ow >= 8) without im2col, row by row
    (_direct_row). Output rows go to the threads (static chunks: consecutive rows, whose
    split input rows each thread keeps). Returns 0, or 1 if a malloc failed."""
    cdef Py_ssize_t L = d.oh * d.ow, oy
    cdef int err = 0
    cdef float* buf = NULL
    with parallel(use_threads_if=d.m * d.c * d.kh * d.kw * L >= _PAR_MACS):
        buf = _direct_scratch(d)
        for oy in prange(d.oh, schedule="static"):
            if buf == NULL:
                err += 1
                continue
            _direct_row(d, xb, buf, oy, yb + oy * d.ow, L)
        free(buf)
    return err != 0


cdef void _max2x2s2_plane(const float* x, Py_ssize_t w, float* out, Py_ssize_t oh,
                          Py_ssize_t ow, float* v) noexcept nogil:
    """2x2 stride-2 max pool of the 2 oh rows of w at x into out (oh, ow): one pass where
    edl_max2x2s2_plane_f has one (AVX-512), else row pairs then column pairs through v (2 ow
    floats of scratch)."""
    cdef Py_ssize_t i
    if edl_max2x2s2_plane_f(x, w, out, oh, ow):
        return
    for i in range(oh):
        edl_max_rows_f(x + 2 * i * w, x + (2 * i + 1) * w, v, 2 * ow)
        edl_max_pairs_f(v, out + i * ow, ow)


cdef void _conv_maxpool_rows(const _Direct* d, const float* xb, float* yb, Py_ssize_t pk,
                             Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t poh, Py_ssize_t pow_,
                             Py_ssize_t a0, Py_ssize_t a1, Py_ssize_t band, Py_ssize_t ps,
                             float* dbuf, float* cbuf, float* v) noexcept nogil:
    """Pooled rows [a0, a1) of _conv_maxpool_f32, band rows at a time: the conv rows a
    band's windows read into cbuf (channel planes ps floats apart), those the previous band
    computed (3x3: its last row) moved up rather than computed again, then each channel's
    pool from there into yb."""
    cdef Py_ssize_t ow = d.ow, a = a0, b, lo, hi, plo = 0, phi = 0, q, oy, k0
    cdef float* out
    cdef float* plane
    while a < a1:
        b = min(a + band, a1)
        lo = max(2 * a - pt, 0)
        hi = min(2 * (b - 1) - pt + pk, d.oh)
        k0 = lo
        if a > a0 and plo <= lo < phi:
            for q in range(d.m):
                memmove(cbuf + q * ps, cbuf + q * ps + (lo - plo) * ow,
                        (phi - lo) * ow * sizeof(float))
            k0 = phi
        for oy in range(k0, hi):
            _direct_row(d, xb, dbuf, oy, cbuf + (oy - lo) * ow, ps)
        for q in range(d.m):
            out = yb + (q * poh + a) * pow_
            plane = cbuf + q * ps
            if pk == 3:     # the plane's first row is conv row lo: its top padding then
                edl_max3x3s2_plane_f(plane, hi - lo, ow, out, b - a, pow_, lo - (2 * a - pt),
                                     pl, v)
            else:
                _max2x2s2_plane(plane, ow, out, b - a, pow_, v)
        plo, phi = lo, hi
        a = b


cdef int _conv_maxpool_f32(const _Direct* d, const float* xb, float* yb, Py_ssize_t pk,
                           Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t poh,
                           Py_ssize_t pow_) noexcept nogil:
    """The direct conv d, then a max pool of pk x pk windows (3: pads pt, pl <= 1; 2: no
    padding) at stride 2 into yb ((m, poh, pow_)), band by band of pooled rows: the conv's
    rows stay in L2 for the pool instead of going through memory (FastestDet's 24 x 176 x
    176 stem output, 3 MB). The threads take runs of pooled rows (a run's first band
    computes the conv row it shares with the run before again). The same kernels as the
    separate steps: the same values. Returns 0, or 1 if a malloc failed."""
    cdef Py_ssize_t ow = d.ow, t, i
    # at least 2 pooled rows a band: bands of one (SqueezeNet's 64 x 111 x 111 stem) moved a
    # row per channel and called the pool per row for every 2 conv rows (3% of the pair)
    cdef Py_ssize_t band = max((_POOL_BAND_BYTES // (d.m * ow * 4) - 1) // 2, 2)
    cdef Py_ssize_t ps = (2 * band + 1) * ow
    cdef Py_ssize_t vlen = max(pl + ow, 2 * pow_ + 1) + 16
    cdef int nt = omp_get_max_threads() \
        if d.m * d.c * d.kh * d.kw * d.oh * ow >= _PAR_MACS else 1
    cdef int err = 0
    cdef float* dbuf = NULL
    cdef float* cbuf = NULL
    cdef float* v = NULL
    nt = <int>max(min(<Py_ssize_t>nt, poh), 1)
    with parallel(use_threads_if=nt > 1):
        dbuf = _direct_scratch(d)
        cbuf = <float*>malloc(d.m * ps * sizeof(float))
        v = <float*>malloc(vlen * sizeof(float))
        for t in prange(nt, schedule="static"):
            if dbuf == NULL or cbuf == NULL or v == NULL:
                err += 1
                continue
            for i in range(vlen):       # the 3x3 rows' padding cells
                v[i] = -INFINITY
            _conv_maxpool_rows(d, xb, yb, pk, pt, pl, poh, pow_, t * poh // nt,
                               (t + 1) * poh // nt, band, ps, dbuf, cbuf, v)
        free(dbuf)
        free(cbuf)
        free(v)
    return err != 0


cdef int _conv_narrow_f32(const float* xb, Py_ssize_t c, Py_ssize_t h, Py_ssize_t wd,
                          const float* wp, const float* bias, Py_ssize_t kh, Py_ssize_t kw,
                          Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, int act,
                          float lo, float hi, const float* slopes, float* yb, Py_ssize_t m,
                          Py_ssize_t oh, Py_ssize_t ow, int threads) noexcept nogil:
    """A stride-1 conv of narrow outputs: the GEMM over the im2col of the padded width, oh
    rows of wq = ow + (kw - 1) dw columns into a scratch C, then each row's ow values copied
    out with the bias and activation (edl_epilogue_rows_f). The GEMM reads that im2col's rows
    where they lie in the padded planes (edl_pad_planes_f, one run a tap:
    edl_padded_row_offsets), never copied out: a 96 -> 96 3x3 at 28 x 28 wrote and re-read a
    2.9 MB im2col, past L2, for a 0.3 MB input. The wq - ow extra columns cost GEMM work,
    which on planes this small is far less than the per-row im2col they replace (UltraFace's
    256 -> 6 / 12 heads at 4 x 5, in the model: 80 / 86 -> 32 / 41 us). ``threads`` > 1 split
    the output rows (the planes are padded once, before). Returns 0, or 1 if a malloc
    failed."""
    cdef Py_ssize_t K = c * kh * kw, wq = ow + (kw - 1) * dw, hq = oh + (kh - 1) * dh
    # rows rounded up to 16 floats: whole vectors, which the GEMM reads in place
    cdef Py_ssize_t n2 = (oh * wq + 15) // 16 * 16, L = oh * ow, i, t, r0, r1
    cdef Py_ssize_t npad = c * hq * wq + (kw - 1) * dw + n2 - oh * wq
    cdef int nt = <int>min(<Py_ssize_t>threads, oh), err = 0
    # the row offsets (K of them), then floats for: the padded planes and C
    cdef Py_ssize_t* off = <Py_ssize_t*>malloc(K * sizeof(Py_ssize_t)
                                               + (npad + m * n2) * sizeof(float))
    cdef float* scratch = NULL
    if off == NULL:
        return 1
    cdef float* pad = <float*>(off + K)
    cdef float* y2 = pad + npad
    cdef edl_gemm_brows br
    edl_pad_planes_f(xb, c, h, wd, kh, kw, ph, pw, dh, dw, oh, ow, 0, pad, n2)
    edl_padded_row_offsets(c, kh, kw, dh, dw, oh, ow, off)
    br.off = off
    br.shift = NULL
    br.w = wq
    with parallel(use_threads_if=nt > 1, num_threads=nt):
        scratch = <float*>malloc((edl_gemm_scratch(m, K) + 16) * sizeof(float))
        for t in prange(nt, schedule="static"):
            if scratch == NULL:
                err += 1
                continue
            r0 = t * oh // nt
            r1 = (t + 1) * oh // nt
            edl_gemm_cols(wp, m, K, pad, 0, &br, y2, n2, r0 * wq, n2 if r1 == oh else r1 * wq,
                          _line_aligned(scratch), NULL)
            for i in range(m):
                edl_epilogue_rows_f(y2 + i * n2 + r0 * wq, wq, yb + i * L + r0 * ow, ow,
                                    r1 - r0, ow, bias[i], act, lo, hi, slopes[i])
        free(scratch)
    free(off)
    return err != 0


cdef int _conv_rows_f32(const float* xb, Py_ssize_t c, Py_ssize_t h, Py_ssize_t wd,
                        const float* wp, const float* bias, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t pt, Py_ssize_t pb, Py_ssize_t pl, Py_ssize_t pr,
                        Py_ssize_t dh, Py_ssize_t dw, int act, float lo, float hi,
                        const float* slopes, float* yb, Py_ssize_t m, Py_ssize_t oh,
                        int threads, const float* res, bint res_after) noexcept nogil:
    """A stride-1 conv whose output rows keep the input's width (pl + pr = (kw - 1) dw): the
    GEMM reads its im2col rows in the planes laid out with zero rows above and below
    (edl_rows_planes_f: a copy of each plane, the left / right padding masked as the rows are
    gathered) and writes the output itself, the bias and a clip / sigmoid / SiLU in its
    registers. The output goes in blocks of whole rows whose C stays in L2 while the K blocks
    of a deep GEMM pass over it, the threads taking runs of blocks; ``res`` / ``res_after``
    as in _conv_gemm_f32, on each block while it is in cache. Returns 0, or 1 if a malloc
    failed."""
    cdef Py_ssize_t K = c * kh * kw, L = oh * wd, hq = h + pt + pb, blk, r0, r1, i, q, j0, n
    cdef Py_ssize_t per = max(_GEMM_DEEP_BYTES // (m * wd * 4), 1)
    cdef Py_ssize_t nb = max(oh // per, min(<Py_ssize_t>threads, oh))
    cdef int err = 0
    cdef edl_gemm_epi gepi
    cdef bint before = res != NULL and not res_after    # the residual inside the activation
    cdef bint regs = not before and _register_epilogue(bias, act, lo, hi, &gepi)
    cdef edl_gemm_brows br
    # the row offsets and shifts (K of each), then the planes
    cdef Py_ssize_t* off = <Py_ssize_t*>malloc(K * (sizeof(Py_ssize_t) + sizeof(int32_t))
                                               + (pl + c * hq * wd + pr) * sizeof(float))
    cdef float* scratch = NULL
    if off == NULL:
        return 1
    cdef int32_t* shift = <int32_t*>(off + K)
    cdef float* pad = <float*>(shift + K)
    edl_rows_layout(c, h, wd, kh, kw, pt, pb, pl, pr, dh, dw, pad, off, shift)
    br.off = off
    br.shift = shift
    br.w = wd
    if threads > 1 and nb > threads:
        nb -= nb % threads      # whole rounds
    # the planes, a run a thread; a parallel region of its own: its end is the barrier the
    # GEMM needs (Cython's prange inside `with parallel()` does not wait)
    for q in prange(threads, schedule="static", use_threads_if=threads > 1 and nb > 1):
        edl_rows_planes_f(xb, q * c // threads, (q + 1) * c // threads, h, wd, pt, pb, pl, pad)
    with parallel(use_threads_if=threads > 1 and nb > 1):
        scratch = <float*>malloc((edl_gemm_scratch(m, K) + 16) * sizeof(float))
        for blk in prange(nb, schedule="static"):
            if scratch == NULL:
                err += 1
                continue
            r0 = blk * oh // nb
            r1 = (blk + 1) * oh // nb
            j0, n = r0 * wd, (r1 - r0) * wd
            edl_gemm_cols(wp, m, K, pad, 0, &br, yb, L, j0, j0 + n, _line_aligned(scratch),
                          &gepi if regs else NULL)
            for i in range(m):
                if before:
                    edl_residual_epilogue_f(yb + i * L + j0, res + i * L + j0, n, bias[i], act,
                                            lo, hi, slopes[i])
                    continue
                if not regs:
                    _epilogue(yb + i * L + j0, n, bias[i], act, lo, hi, slopes[i])
                if res != NULL:     # the residual after the activation
                    edl_add_f(yb + i * L + j0, res + i * L + j0, n)
        free(scratch)
    free(off)
    return err != 0


cdef inline bint _register_epilogue(const float* bias, int act, float lo, float hi,
                                    edl_gemm_epi* g) noexcept nogil:
    """g: the bias and activation for the GEMM's registers (edl_gemm_epi); False where the
    activation is not one they apply (then the caller takes a pass over C)."""
    g.bias = bias
    # 1: the lower bound only (relu: hi = inf, whose min is an identity that took 5% of a
    # K = 16 1x1 conv's tile), 2: both
    g.clamp = (2 if hi < INFINITY else 1) if act == ACT_CLIP else 0
    g.lo = lo
    g.hi = hi
    g.sig = act if act == ACT_SIGMOID or act == ACT_SILU else 0
    return act == ACT_NONE or act == ACT_CLIP or act == ACT_SIGMOID or act == ACT_SILU


cdef inline float* _line_aligned(float* p) noexcept nogil:
    """p rounded up to a 64-byte boundary (16 floats past it must be allocated): the GEMM's
    copy of a strip of B sits there, so that its rows of 48 floats are whole cache lines
    (malloc gives 16 bytes: every vector load of the strip split across two lines)."""
    return <float*>((<size_t>p + 63) & ~(<size_t>63))


cdef int _conv_gemm_f32(const float* xb, Py_ssize_t c, Py_ssize_t h, Py_ssize_t wd,
                        const float* wp, const float* bias, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t dh, Py_ssize_t dw, int act, float lo, float hi,
                        const float* slopes, float* yb, Py_ssize_t m, Py_ssize_t oh,
                        Py_ssize_t ow, const float* res=NULL,
                        bint res_after=False, Py_ssize_t ldx=0) noexcept nogil:
    """im2col, GEMM and epilogue fused per block of output columns; thread t takes the t-th
    run of blocks (static): the same columns on every call and in the pointwise convs before
    and after, so each core reads what its own L2 holds. (Handed out as threads came free,
    blocks moved between cores from call to call: a 64 -> 64 1x1 at 52x52 ran at 0.59 of
    one thread's time on two, 0.47 static; a thread slowed by a busy neighbour is the
    session's ThreadGovernor's business, which then runs one thread.) x (c, h, wd)
    and y (m, oh, ow) C-contiguous, wp packed for M = m, K = c * kh * kw.
    1x1 stride-1 unpadded convs read x in place. ``res`` (m, oh, ow), not overlapping y, or
    NULL: the Add after the conv, in the block's epilogue before the activation (see
    edl_residual_epilogue_f), or after it (``res_after``: the activation stays in the GEMM's
    registers where it can). ``ldx``: x's channel stride in floats when not h * wd (a 1x1
    stride-1 unpadded conv reading every k-th channel of a larger array in place: a channel
    shuffle's half, see ConvF32). Returns 0, or 1 if a malloc failed."""
    cdef Py_ssize_t K = c * kh * kw, L = oh * ow, nr = edl_gemm_nr()
    cdef Py_ssize_t ldb = ldx if ldx else L
    cdef bint pointwise = (kh == 1 and kw == 1 and sh == 1 and sw == 1 and ph == 0 and pw == 0
                           and oh == h and ow == wd)
    # a block is a run of columns (pointwise) or of whole output rows (im2col), at least NR
    # columns wide, with its im2col columns within the L2 budget
    cdef Py_ssize_t unit = 1 if pointwise else ow, steps = L if pointwise else oh
    cdef Py_ssize_t least = (nr + unit - 1) // unit
    cdef Py_ssize_t per = max(_GEMM_BLOCK_BYTES // (max(K, 1) * 4 * unit), least)
    # deep: im2col one K block of a column block at a time (see the loop), the blocks sized
    # by their C and that im2col
    cdef Py_ssize_t nkb = edl_gemm_kblocks(m, K)
    if nkb > 1:
        per = max(_GEMM_DEEP_BYTES // ((m + (K + nkb - 1) // nkb) * 4 * unit), least)
    cdef Py_ssize_t nb = max(steps // per, 1), most
    cdef bint par = m * K * L >= _PAR_MACS
    cdef int threads = omp_get_max_threads()
    cdef Py_ssize_t pb = oh - h - ph + (kh - 1) * dh, pr = ow - wd - pw + (kw - 1) * dw
    if sh == 1 and sw == 1 and kh * kw > 1 and ow == wd and pb >= 0 and pr >= 0:
        return _conv_rows_f32(xb, c, h, wd, wp, bias, kh, kw, ph, pb, pw, pr, dh, dw, act, lo,
                              hi, slopes, yb, m, oh, threads if par else 1, res, res_after)
    if edl_im2col_padded_ok(oh, ow, kh, kw, sh, sw, dw) and res == NULL:
        return _conv_narrow_f32(xb, c, h, wd, wp, bias, kh, kw, ph, pw, dh, dw, act, lo, hi,
                                slopes, yb, m, oh, ow, threads if par else 1)
    if par and threads > 1 and nb < threads:
        # small K: the L2 budget alone would leave one block
        nb = max(nb, min(threads, steps // least))
    if par and nb > threads > 1:
        # whole rounds: 3 blocks on 2 threads ran as 2 + 1
        nb -= nb % threads
    # pointwise with few columns and many filters (the late 1x1 convs of a CNN: 13x13 = 169
    # columns, 256 filters): the threads split the filters instead, each reading its share of
    # the weights (column blocks left a thread idle or recomputed overlapping strips, and
    # each read all of A: 2 threads took 0.75 of 1 thread's time)
    cdef Py_ssize_t mr = edl_gemm_mr(), npan = edl_gemm_panels(m, mr)
    cdef bint by_rows = (pointwise and par and threads > 1 and L < 4 * threads * nr
                         and npan >= 2 * threads)
    if by_rows:
        nb = threads
    most = (steps + nb - 1) // nb
    cdef bint epi = act != ACT_NONE
    cdef edl_gemm_epi gepi
    cdef edl_gemm_epi* pgepi = NULL
    cdef Py_ssize_t blk, s0, s1, j0, j1, r, i, kb, k0, k1, p0, p1, r0, r1
    cdef int err = 0
    cdef float* buf = NULL
    cdef float* scratch = NULL
    cdef Py_ssize_t cols = 0 if pointwise else max((K + nkb - 1) // nkb, 1) * most * ow
    for i in range(m):
        epi = epi or bias[i] != 0
    cdef bint before = res != NULL and not res_after    # the residual inside the activation
    epi = epi or before
    if epi and not before and _register_epilogue(bias, act, lo, hi, &gepi):
        # bias (+ relu / clip, sigmoid, SiLU) in the GEMM's registers: no pass over C after
        pgepi = &gepi
        epi = False
    with parallel(use_threads_if=nb > 1 and par):
        # per thread, once: the im2col columns of a block and the GEMM's scratch
        buf = <float*>malloc((cols + edl_gemm_scratch(m, K) + 16) * sizeof(float))
        scratch = _line_aligned(buf + cols)
        for blk in prange(nb, schedule="static"):
            if buf == NULL:
                err += 1
                continue
            s0 = blk * steps // nb
            s1 = (blk + 1) * steps // nb
            r0, r1 = 0, m
            if by_rows:          # filters p0.. of every column
                j0, j1 = 0, L
                p0 = blk * npan // nb
                p1 = (blk + 1) * npan // nb
                r0, r1 = p0 * mr, (m if p1 == npan else p1 * mr)
                edl_gemm_rows(wp, m, K, p0, p1, xb, ldb, yb, L, 0, L, scratch, pgepi)
            elif pointwise:
                j0, j1 = s0, s1
                edl_gemm_cols(wp, m, K, xb, ldb, NULL, yb, L, j0, j1, scratch, pgepi)
            else:
                j0, j1 = s0 * ow, s1 * ow
                # rows s0.. of the output: the same im2col with the top pad shifted, one K
                # block at a time
                for kb in range(nkb):
                    k0 = kb * K // nkb
                    k1 = (kb + 1) * K // nkb
                    _im2col_rows(xb, h, wd, k0, k1, kh, kw, sh, sw, ph - s0 * sh, pw, dh, dw,
                                 s1 - s0, ow, buf)
                    if nkb == 1:
                        edl_gemm_cols(wp, m, K, buf, j1 - j0, NULL, yb + j0, L, 0, j1 - j0,
                                      scratch, pgepi)
                    else:
                        edl_gemm_cols_k(wp, m, K, k0, k1 - k0, buf, j1 - j0, yb + j0, L, 0,
                                        j1 - j0, scratch, pgepi, kb == 0, kb == nkb - 1)
            if before:   # while the block is still in cache
                for r in range(r0, r1):
                    edl_residual_epilogue_f(yb + r * L + j0, res + r * L + j0, j1 - j0,
                                            bias[r], act, lo, hi, slopes[r])
            else:
                if epi:     # an activation the GEMM's registers could not apply
                    for r in range(r0, r1):
                        _epilogue(yb + r * L + j0, j1 - j0, bias[r], act, lo, hi, slopes[r])
                if res != NULL:     # the residual after the activation
                    for r in range(r0, r1):
                        edl_add_f(yb + r * L + j0, res + r * L + j0, j1 - j0)
        free(buf)
    return err != 0


cdef inline bint _flat3_wanted(Py_ssize_t h, Py_ssize_t wd, int act) noexcept nogil:
    """Where _depthwise_same_flat runs. AVX-512: rows under 64 (from 64 the two-row kernel's
    shared loads keep up: 16 x 104 x 104 0.26 against 0.28 ns an output), or a sigmoid / SiLU,
    which the flat run applies in its registers (16 x 104 x 104 + SiLU 0.60 -> 0.48 ns).
    AVX2: rows under _SAME_W = 18 (from 18 edl_dw3_same_plane_f's whole-row vectors win: 64 x
    18 x 18 0.85x the flat run's time, 64 x 40 x 40 0.75x, 96 x 48 x 48 0.80x; 64 x 16 x 16
    1.03x), or under 64 with a sigmoid / SiLU (the flat run's registers, not a pass after).
    Planes of < 2^30 values (the AVX2 run's lane indices are int32)."""
    cdef int level = edl_dw3_flat_ok()
    cdef bint sig = act == ACT_SIGMOID or act == ACT_SILU
    if level < 1 or h * wd >= (1 << 30):
        return False
    if level == 2:
        return wd < 64 or sig
    return wd < _SAME_W or (sig and wd < 64)


cdef int _depthwise_same_flat(const float* x, Py_ssize_t planes, Py_ssize_t c, Py_ssize_t h,
                              Py_ssize_t wd, const float* w, const float* bias, int act,
                              float lo, float hi, const float* slopes,
                              float* out) noexcept nogil:
    """_depthwise_same on AVX-512 or AVX2: each plane one flat run of masked 16- or 8-output
    vectors (edl_dw3s1_flat_f), the bias and a clip, sigmoid or SiLU in its registers, other
    activations over the rows afterwards; the threads take bands of rows of every plane
    (_dw_row_runs: the same values as whole planes). Returns 0, or 1 if the masks' malloc
    failed."""
    cdef Py_ssize_t q, t, r0, r1, n = h * wd
    cdef int sig = act if act == ACT_SIGMOID or act == ACT_SILU else 0
    cdef bint fused = act == ACT_NONE or act == ACT_CLIP or sig != 0
    cdef float flo = lo if act == ACT_CLIP else -INFINITY
    cdef float fhi = hi if act == ACT_CLIP else INFINITY
    cdef int nt = _dw_row_runs(planes * n * 9, h)
    cdef uint16_t* mlr = <uint16_t*>malloc(((n + 15) // 16) * 2 * sizeof(uint16_t))
    if mlr == NULL:
        return 1
    edl_dw3s1_lr_masks(h, wd, mlr)
    for t in prange(nt, schedule="static", nogil=True, use_threads_if=nt > 1):
        r0 = t * h // nt
        r1 = (t + 1) * h // nt
        for q in range(planes):        # rows r0 .. r1 - 1: a band of the plane
            edl_dw3s1_flat_f(x + q * n + r0 * wd, r1 - r0, wd, r0 == 0, r1 == h,
                             w + (q % c) * 9, bias[q % c] if fused else 0, flo, fhi, sig, mlr,
                             out + q * n + r0 * wd)
            if not fused:
                _epilogue(out + q * n + r0 * wd, (r1 - r0) * wd, bias[q % c], act, lo, hi,
                          slopes[q % c])
    free(mlr)
    return 0


cdef void _dw3_same_rows_f(const float* p, Py_ssize_t h, Py_ssize_t r0, Py_ssize_t r1,
                          Py_ssize_t wd, const float* zero, const float* wc, float bq,
                          float flo, float fhi, float* out) noexcept nogil:
    """Output rows [r0, r1) of a float32 3x3 'same' depthwise plane (rows of >= 18 at p,
    h of them; ``zero``: wd zeros, the rows above and below it) into out (row r0's), the bias
    bq and a clip to [flo, fhi] in the stores: the whole band at once where
    edl_dw3_same_plane_f runs (AVX2), else edl_dw3_same_rows2_f, two rows a call. The plain
    conv and the pointwise -> depthwise bands both come here: the same values."""
    cdef Py_ssize_t oy
    cdef const float* x0
    cdef const float* x2
    cdef float* row
    if edl_dw3_same_plane_f(p, h, r0, r1, wd, zero, wc, bq, flo, fhi, out):
        return
    for oy in range(r0, r1, 2):
        row = out + (oy - r0) * wd
        x0 = p + (oy - 1) * wd if oy >= 1 else zero
        x2 = p + (oy + 1) * wd if oy + 1 < h else zero
        if oy + 1 < r1:
            edl_dw3_same_rows2_f(x0, p + oy * wd, x2, p + (oy + 2) * wd if oy + 2 < h else zero,
                                 wc, row, row + wd, wd, bq, flo, fhi)
        else:
            edl_dw3_same_row_f(x0, p + oy * wd, x2, x2, wc, row, row, wd, bq, flo, fhi)


cdef int _depthwise_same(const floating* x, Py_ssize_t planes, Py_ssize_t c, Py_ssize_t h,
                         Py_ssize_t wd, const floating* w, const floating* bias, int act,
                         floating lo, floating hi, const floating* slopes,
                         floating* out) noexcept nogil:
    """3x3, stride 1, padding 1 on every side: the interior columns read the input rows in
    place (rows above / below the plane are a row of zeros), the two edge columns are
    written out tap by tap. No padded copy of the plane (that copy was a fifth of the time).
    (5x5 keeps the copying path: its 4 edge columns of 5 rows cost more than the copy.)
    Returns 0, or 1 if the zero row's calloc failed."""
    cdef Py_ssize_t q, oy
    cdef int err = 0
    cdef floating* zero = NULL
    cdef floating* row
    cdef const floating* xp
    cdef const floating* x0
    cdef const floating* x1
    cdef const floating* x2
    cdef const floating* wc
    cdef floating bq
    # float32 rows of >= 18: the plane at once where edl_dw3_same_plane_f runs (AVX2), else
    # _dw3_same_rows_f; the bias and a clip (ReLU, ReLU6) in their stores, other activations
    # over the plane afterwards. (The caller passes rows of >= _SAME_W = 18; the check keeps
    # the kernels' n >= 18 if that changes.)
    cdef bint vec = floating is float and wd >= 18
    cdef bint fused = vec and (act == ACT_NONE or act == ACT_CLIP)
    cdef floating flo = lo if act == ACT_CLIP else -INFINITY
    cdef floating fhi = hi if act == ACT_CLIP else INFINITY
    with parallel(use_threads_if=planes * h * wd * 9 >= _PAR_ELEMS):
        zero = <floating*>calloc(wd, sizeof(floating))
        for q in prange(planes, schedule="static"):
            if zero == NULL:
                err += 1
                continue
            xp = x + q * h * wd
            wc = w + (q % c) * 9
            bq = bias[q % c] if fused else 0
            if vec:
                if floating is float:
                    _dw3_same_rows_f(xp, h, 0, h, wd, zero, wc, bq, flo, fhi, out + q * h * wd)
                if not fused:
                    _epilogue(out + q * h * wd, h * wd, bias[q % c], act, lo, hi,
                              slopes[q % c])
                continue
            for oy in range(h):
                row = out + (q * h + oy) * wd
                x0 = xp + (oy - 1) * wd if oy >= 1 else zero
                x1 = xp + oy * wd
                x2 = xp + (oy + 1) * wd if oy + 1 < h else zero
                if floating is float:
                    edl_full3_f(x0, x1, x2, wc, row + 1, wd - 2)
                else:
                    edl_full3_d(x0, x1, x2, wc, row + 1, wd - 2)
                # the two edge columns, straight-line (a loop over taps cost as much as
                # the rest of the row)
                row[0] = (wc[1] * x0[0] + wc[2] * x0[1] + wc[4] * x1[0] + wc[5] * x1[1]
                          + wc[7] * x2[0] + wc[8] * x2[1])
                row[wd - 1] = (wc[0] * x0[wd - 2] + wc[1] * x0[wd - 1] + wc[3] * x1[wd - 2]
                               + wc[4] * x1[wd - 1] + wc[6] * x2[wd - 2] + wc[7] * x2[wd - 1])
            # the epilogue over the whole plane (still in L1 / L2), not a row at a time: per
            # row of 52 SiLU's scalar loop tail cost as much as its vector part
            _epilogue(out + q * h * wd, h * wd, bias[q % c], act, lo, hi, slopes[q % c])
        free(zero)
    return err != 0


# ----------------------------------------------------------------------------- 1x1 -> depthwise
cdef struct _PwDw:
    # the 1x1 conv (stride 1, no padding): pack_conv_weights of its (m, c) weights, bias,
    # activation (code, lo, hi, PReLU-like slopes)
    const float* wp
    const float* b1
    const float* s1
    int act1
    float lo1
    float hi1
    # the 3x3 depthwise conv (stride 1, padding 1) on its output: (m, 9) weights, ...
    const float* w2
    const float* b2
    const float* s2
    int act2
    float lo2
    float hi2
    Py_ssize_t c, h, wd, m
    bint pool         # then a 2x2 stride-2 max pool (no padding, floor)


cdef void _pw_rows(const _PwDw* k, const float* x, Py_ssize_t lo, Py_ssize_t hi, float* dst,
                   Py_ssize_t ps, float* scratch) noexcept nogil:
    """Rows [lo, hi) of the 1x1 conv's output, every channel, into dst (channel planes ps
    floats apart), activated."""
    cdef Py_ssize_t n = (hi - lo) * k.wd, q
    cdef edl_gemm_epi e
    cdef bint regs = _register_epilogue(k.b1, k.act1, k.lo1, k.hi1, &e)
    if n <= 0:
        return
    edl_gemm_cols(k.wp, k.m, k.c, x + lo * k.wd, k.h * k.wd, NULL, dst, ps, 0, n, scratch,
                  &e if regs else NULL)
    if not regs:       # an activation the GEMM's registers do not apply
        for q in range(k.m):
            _epilogue(dst + q * ps, n, k.b1[q], k.act1, k.lo1, k.hi1, k.s1[q])


cdef void _dw_band(const _PwDw* k, const float* buf, Py_ssize_t ps, Py_ssize_t base,
                   Py_ssize_t r0, Py_ssize_t r1, const float* zero, float* tmp,
                   const uint16_t* mlr, float* y) noexcept nogil:
    """Depthwise output rows [r0, r1) of every channel from the 1x1's rows in buf (row
    base + i at i * wd of each plane), activated, into y, or pooled into y (r0, r1 even).
    mlr: edl_dw3s1_lr_masks of the band's rows where _depthwise_same_flat's kernel runs
    (the same kernel as the unfused depthwise conv: the same values), else NULL."""
    cdef Py_ssize_t wd = k.wd, h = k.h, q, oy, ow2 = wd // 2, oh2 = h // 2
    cdef int sig = k.act2 if mlr != NULL and (k.act2 == ACT_SIGMOID or k.act2 == ACT_SILU) \
        else 0
    cdef bint fused = k.act2 == ACT_NONE or k.act2 == ACT_CLIP or sig != 0
    cdef float flo = k.lo2 if k.act2 == ACT_CLIP else -INFINITY
    cdef float fhi = k.hi2 if k.act2 == ACT_CLIP else INFINITY
    cdef const float* p
    cdef float* out
    cdef float* row
    cdef float bq
    for q in range(k.m):
        p = buf + q * ps - base * wd       # row r of the plane at p + r * wd
        out = tmp if k.pool else y + (q * h + r0) * wd
        bq = k.b2[q] if fused else 0
        if mlr != NULL:
            edl_dw3s1_flat_f(p + r0 * wd, r1 - r0, wd, r0 == 0, r1 == h, k.w2 + q * 9, bq,
                             flo, fhi, sig, mlr, out)
        else:
            _dw3_same_rows_f(p, h, r0, r1, wd, zero, k.w2 + q * 9, bq, flo, fhi, out)
        if not fused:
            _epilogue(out, (r1 - r0) * wd, k.b2[q], k.act2, k.lo2, k.hi2, k.s2[q])
        if k.pool:
            row = y + (q * oh2 + r0 // 2) * ow2
            _max2x2s2_plane(tmp, wd, row, (r1 - r0) // 2, ow2, tmp + (r1 - r0) * wd)


cdef void _pw_dw_range(const _PwDw* k, const float* x, float* y, Py_ssize_t t0, Py_ssize_t t1,
                       Py_ssize_t band, float* buf, float* tmp, const float* zero,
                       const uint16_t* mlr, float* scratch) noexcept nogil:
    """Depthwise output rows [t0, t1), band by band: the 1x1's rows r0 - 1 .. r1 of a band
    [r0, r1) in buf (planes of band + 2 rows), the two the next band shares moved up
    rather than computed again."""
    cdef Py_ssize_t wd = k.wd, h = k.h, ps = (band + 2) * wd, r0 = t0, r1, lo, q
    while r0 < t1:
        r1 = min(r0 + band, t1)
        if r0 == t0:
            lo = max(r0 - 1, 0)
        else:       # rows r0 - 1, r0 were the last two of the previous band
            for q in range(k.m):
                memcpy(buf + q * ps, buf + q * ps + band * wd, 2 * wd * sizeof(float))
            lo = min(r0 + 1, h)
        _pw_rows(k, x, lo, min(r1 + 1, h), buf + (lo - r0 + 1) * wd, ps, scratch)
        _dw_band(k, buf, ps, r0 - 1, r0, r1, zero, tmp, mlr, y)
        r0 = r1


cdef int _band_masks(Py_ssize_t band, Py_ssize_t wd, int act, uint16_t** mlr) noexcept nogil:
    """*mlr: where _dw_band takes the flat run (_flat3_wanted), its edl_dw3s1_lr_masks for
    bands of ``band`` rows of wd (a shorter last band reads a prefix), else NULL. Returns 1
    if malloc failed. The caller frees *mlr."""
    mlr[0] = NULL
    if not _flat3_wanted(band, wd, act):
        return 0
    mlr[0] = <uint16_t*>malloc(((band * wd + 15) // 16) * 2 * sizeof(uint16_t))
    if mlr[0] == NULL:
        return 1
    edl_dw3s1_lr_masks(band, wd, mlr[0])
    return 0


cdef int _dw_maxpool_f32(const _PwDw* k, const float* x, float* y) noexcept nogil:
    """k's 3x3 'same' depthwise conv of x (m, h, wd) and its 2x2 stride-2 max pool into y
    (m, h // 2, wd // 2), _DW_POOL_ROWS conv rows at a time (_dw_band: each channel's rows
    pooled while in L1, not written out whole and read back by the pool: YuNet's 16 x 160
    x 160 and 64 x 80 x 80 units). The same kernels as the separate steps: the same values.
    The threads take runs of row pairs. Returns 0, or 1 if a malloc failed."""
    cdef Py_ssize_t wd = k.wd, rows = k.h // 2 * 2, band = _DW_POOL_ROWS, t, t0, t1, r0
    cdef int nt = omp_get_max_threads() if k.m * k.h * wd * 9 >= _PAR_ELEMS else 1
    cdef int err = 0
    cdef float* tmp = NULL
    cdef float* zero = NULL
    cdef uint16_t* mlr = NULL
    if _band_masks(band, wd, k.act2, &mlr):
        return 1
    nt = <int>max(min(<Py_ssize_t>nt, rows // 2), 1)
    with parallel(use_threads_if=nt > 1):
        tmp = <float*>malloc((band + 1) * wd * sizeof(float))
        zero = <float*>calloc(wd, sizeof(float))
        for t in prange(nt, schedule="static"):
            if tmp == NULL or zero == NULL:
                err += 1
                continue
            t0 = t * rows // nt // 2 * 2
            t1 = (t + 1) * rows // nt // 2 * 2
            r0 = t0
            while r0 < t1:
                _dw_band(k, x, k.h * wd, 0, r0, min(r0 + band, t1), zero, tmp, mlr, y)
                r0 = r0 + band
        free(tmp)
        free(zero)
    free(mlr)
    return err != 0


cdef int _pw_dw_f32(const _PwDw* k, const float* x, float* y) noexcept nogil:
    """The chain on x (c, h, wd) into y ((m, h, wd), or (m, h // 2, wd // 2) pooled); the
    threads take runs of output rows (each its own band buffers; a run's first band
    computes the 1x1's row above it again). Returns 0, or 1 if a malloc failed."""
    cdef Py_ssize_t wd = k.wd, rows = k.h // 2 * 2 if k.pool else k.h, t, t0, t1
    cdef Py_ssize_t band = max(_PWDW_BAND_BYTES // (k.m * wd * 4) - 2, 2)
    cdef int nt = omp_get_max_threads() if k.m * k.c * k.h * wd >= _PAR_MACS else 1
    cdef int err = 0
    cdef float* buf = NULL
    cdef float* tmp = NULL
    cdef float* zero = NULL
    cdef float* scr = NULL
    cdef uint16_t* mlr = NULL
    if k.pool:
        band -= band % 2
    if _band_masks(band, wd, k.act2, &mlr):
        return 1
    nt = <int>max(min(<Py_ssize_t>nt, rows // 2), 1)
    with parallel(use_threads_if=nt > 1):
        buf = <float*>malloc(k.m * (band + 2) * wd * sizeof(float))
        tmp = <float*>malloc((band + 1) * wd * sizeof(float))
        zero = <float*>calloc(wd, sizeof(float))
        scr = <float*>malloc((edl_gemm_scratch(k.m, k.c) + 16) * sizeof(float))
        for t in prange(nt, schedule="static"):
            if buf == NULL or tmp == NULL or zero == NULL or scr == NULL:
                err += 1
                continue
            t0 = t * rows // nt
            t1 = (t + 1) * rows // nt
            if k.pool:          # whole row pairs
                t0 = t0 // 2 * 2
                t1 = t1 // 2 * 2
            _pw_dw_range(k, x, y, t0, t1, band, buf, tmp, zero, mlr, _line_aligned(scr))
        free(buf)
        free(tmp)
        free(zero)
        free(scr)
    free(mlr)
    return err != 0


cdef class PwDwF32:
    """A float32 1x1 conv (stride 1, no padding; conv_gemm's packed weights) whose output only
    a 3x3 depthwise conv (stride 1, padding 1) reads, optionally then a 2x2 stride-2 max pool,
    run as one: band by band of rows, every channel of the 1x1's band staying in L2 for the
    depthwise conv (and its output in L1 for the pool) instead of a round trip through
    memory per step (YuNet's pointwise -> depthwise units at 80x80 and 160x160). The same
    kernels and summation order as the separate convs: the same values.

    ``call(x, y, nthreads)``: True when done (x a C-contiguous float32 (1, C, H, W) array, y
    a writable C-contiguous float32 (1, M, H, W) or, pooled, (1, M, H // 2, W // 2) one not
    overlapping x), else False having touched nothing."""
    cdef const float[::1] wp, b1, s1, w2, b2, s2
    cdef _PwDw k
    cdef Py_ssize_t oh, ow

    def __init__(self, const float[::1] wp, const float[::1] b1, const float[::1] s1,
                 int act1, double lo1, double hi1, const float[::1] w2, const float[::1] b2,
                 const float[::1] s2, int act2, double lo2, double hi2, Py_ssize_t c,
                 Py_ssize_t h, Py_ssize_t w, Py_ssize_t m, bint pool):
        """wp: pack_conv_weights of the (M, C) 1x1 weights; w2: the (M, 3, 3) depthwise
        weights flattened; b*, s*: M biases and slopes each; act*, lo*, hi*: the
        epilogues (edl_act_table codes)."""
        _check_packed("PwDwF32", wp.shape[0], m, c)
        if (min(c, h, m) < 1 or w < _SAME_W or w2.shape[0] != 9 * m
                or min(b1.shape[0], s1.shape[0], b2.shape[0], s2.shape[0]) != m
                or max(b1.shape[0], s1.shape[0], b2.shape[0], s2.shape[0]) != m
                or (pool and h < 2)):
            raise ValueError(f"PwDwF32: needs (M, 3, 3) depthwise weights, M biases and "
                             f"slopes each, rows of >= {_SAME_W} and (pooled) >= 2 rows")
        self.wp, self.b1, self.s1, self.w2, self.b2, self.s2 = wp, b1, s1, w2, b2, s2
        self.k.wp, self.k.b1, self.k.s1 = &wp[0], &b1[0], &s1[0]
        self.k.w2, self.k.b2, self.k.s2 = &w2[0], &b2[0], &s2[0]
        self.k.act1, self.k.lo1, self.k.hi1 = act1, <float>lo1, <float>hi1
        self.k.act2, self.k.lo2, self.k.hi2 = act2, <float>lo2, <float>hi2
        self.k.c, self.k.h, self.k.wd, self.k.m, self.k.pool = c, h, w, m, pool
        self.oh, self.ow = (h // 2, w // 2) if pool else (h, w)

    def __call__(self, x, y, int nthreads, res=None):
        cdef Py_buffer bx, by
        cdef int r = 0
        if res is not None or not _image_pair(x, y, self.k.c, self.k.h, self.k.wd, self.k.m,
                                              self.oh, self.ow, &bx, &by):
            return False
        if omp_get_max_threads() != nthreads:
            omp_set_num_threads(nthreads)
        with nogil:
            r = _pw_dw_f32(&self.k, <const float*>bx.buf, <float*>by.buf)
        release_pair(&bx, &by)
        if r:
            raise MemoryError("PwDwF32: out of memory for its band buffers")
        return True
