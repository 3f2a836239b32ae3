# cython: boundscheck=False, wraparound=False
"""Cython twins of edgedl.kernels._ref.pooling (same names and arguments; see there).

The public wrapper validated everything and passes a C-contiguous x and out, so the kernels
work on raw pointers. Max and average pooling are separable: per output row, a vertical pass
folds the window's in-image input rows into a scratch row (padded with -inf / 0 so the next
pass needs no bounds checks), then a horizontal pass folds kw shifted views of a band of
such rows at once. Both passes
are edl_pool.h's folds (up to five sources per loop, AVX2 / AVX-512 clones, stride 1 and 2
vectorised). Max uses a plain maxps while the rows read hold no NaN/inf and the exact
NaN-propagating max from the first row that does (each row is checked when first read).
Planes (N * C) run in parallel.
"""
cimport cython
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from edl_buffer cimport f32_pair4, release_pair
from edl_omp cimport omp_get_max_threads, omp_set_num_threads


cdef extern from "edl_pool.h":
    void edl_imax_row_u8(unsigned char* v, const unsigned char* s, Py_ssize_t n) noexcept nogil
    void edl_imax_row_s8(signed char* v, const signed char* s, Py_ssize_t n) noexcept nogil
    void edl_imax_taps_u8(const unsigned char* v, Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t sw,
                          unsigned char* d, Py_ssize_t n) noexcept nogil
    void edl_imax_taps_s8(const signed char* v, Py_ssize_t kw, Py_ssize_t dw, Py_ssize_t sw,
                          signed char* d, Py_ssize_t n) noexcept nogil
    void edl_imax2x2_u8(const unsigned char* x, Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow,
                        unsigned char* v, unsigned char* d) noexcept nogil
    void edl_imax2x2_s8(const signed char* x, Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow,
                        signed char* v, signed char* d) noexcept nogil
    void edl_imax3s2_u8(const unsigned char* a, const unsigned char* b, const unsigned char* c,
                        Py_ssize_t w, unsigned char* v, Py_ssize_t pl, unsigned char* d,
                        Py_ssize_t n) noexcept nogil
    void edl_imax3s2_s8(const signed char* a, const signed char* b, const signed char* c,
                        Py_ssize_t w, signed char* v, Py_ssize_t pl, signed char* d,
                        Py_ssize_t n) noexcept nogil
    void edl_max3x3s2_d(const double* a, const double* b, const double* c, Py_ssize_t w,
                        double* v, Py_ssize_t pl, double* d, Py_ssize_t n) noexcept nogil
    void edl_fold_f(const float** src, int n, Py_ssize_t stride, float* d, Py_ssize_t length,
                    int mode) noexcept nogil
    void edl_fold_d(const double** src, int n, Py_ssize_t stride, double* d,
                    Py_ssize_t length, int mode) noexcept nogil
    bint edl_finite_f(const float* s, Py_ssize_t n) noexcept nogil
    void edl_avg3x3s1_plane_f(const float* x, Py_ssize_t h, Py_ssize_t w, float* v,
                              const int* keep_l, const int* keep_r, const float* rc,
                              float* d) noexcept nogil
    void edl_max3x3s1_plane_f(const float* x, Py_ssize_t h, Py_ssize_t w, float* v,
                              const int* keep_l, const int* keep_r, const float* rc,
                              float* d) noexcept nogil
    bint edl_finite_d(const double* s, Py_ssize_t n) noexcept nogil
    void edl_plane_means_f(const float* x, Py_ssize_t planes, Py_ssize_t m,
                           float* y) noexcept nogil
    void edl_max2x2_f(const float* a, const float* b, float* d, Py_ssize_t n) noexcept nogil
    void edl_max_rows_f(const float* a, const float* b, float* v, Py_ssize_t n) noexcept nogil
    void edl_max_pairs_f(const float* v, float* d, Py_ssize_t n) noexcept nogil
    int edl_max2x2s2_plane_f(const float* x, Py_ssize_t w, float* d, Py_ssize_t oh,
                             Py_ssize_t ow) noexcept nogil
    int edl_avg3x3s2_plane_f(const float* src, Py_ssize_t h, Py_ssize_t w, float* dst,
                             Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t pt, Py_ssize_t pl,
                             const float* sc, const float* scw, const float* zero) noexcept nogil
    void edl_max3x3s2_plane_f(const float* src, Py_ssize_t h, Py_ssize_t w, float* dst,
                              Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t pt, Py_ssize_t pl,
                              float* v) noexcept nogil
    void edl_max2x2_d(const double* a, const double* b, double* d, Py_ssize_t n) noexcept nogil
    void edl_avg2x2_f(const float* a, const float* b, float* d, Py_ssize_t n) noexcept nogil
    void edl_avg2x2_d(const double* a, const double* b, double* d, Py_ssize_t n) noexcept nogil


cdef inline floating _nanmax(floating acc, floating v) noexcept nogil:
    # NaN-propagating max: a NaN in acc stays (v > NaN is false), a NaN in v enters.
    # Two selects, no short-circuit `or`: gcc turns them into maxps + cmpunordps + blend.
    cdef floating m = v if v > acc else acc
    return v if v != v else m


cdef inline floating _fmax(floating acc, floating v) noexcept nogil:
    # max for NaN-free planes: exactly x86 maxps (a single instruction per vector)
    return v if v > acc else acc


cdef inline void _fold(floating* d, const floating** src, int n, Py_ssize_t length,
                       Py_ssize_t stride, int mode) noexcept nogil:
    """d[q] = op over i < n of src[i][q * stride], for q < length (n >= 1): edl_fold_*."""
    if floating is float:
        edl_fold_f(src, n, stride, d, length, mode)
    else:
        edl_fold_d(src, n, stride, d, length, mode)


cdef inline bint _finite(const floating* s, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return edl_finite_f(s, n)
    else:
        return edl_finite_d(s, n)


cdef void _plane(const floating* src, floating* dst, floating* vpad, const floating** ptrs,
                 unsigned char* seen, Py_ssize_t lext, Py_ssize_t wp, Py_ssize_t band,
                 Py_ssize_t h, Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t kh,
                 Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                 Py_ssize_t dh, Py_ssize_t dw, int mode) noexcept nogil:
    """One (h, w) plane -> (oh, ow), ``band`` output rows at a time. Per output row, the
    vertical pass folds the window's in-image input rows into its row of vpad (wp cells: lext
    cells of padding, the image row, padding to the end; -inf for max, 0 for sum). Then one
    horizontal pass folds kw shifted views of the band's rows as a single stream (wp / sw
    outputs a row: a row's last window ends inside its own row's padding), so the vector loop
    tail comes once a band instead of once a row (ow = 40 left 8 of 40 outputs to scalar code,
    a third of a 3x3 s2 pool); the band's rows are then copied out unless wp / sw == ow.
    vpad: band * (wp + wp / sw) cells, its first band * wp filled by the caller (once per
    thread: only image columns are written here). ptrs: scratch for max(kh, kw) pointers.
    mode 1 (max): input rows are checked for NaN/inf when first read (seen: h flags), just
    before the fold reads them again from L1 (up to 4096 values, whole rows, at once: a call
    per row cost a quarter of a 3x3 pool); a non-finite row switches this and every later
    output row to the exact max (mode 2), while the rows already folded were all checked
    finite."""
    cdef Py_ssize_t o, o0, b, i, j, r, c, nb, rows, qp = wp // sw
    cdef int n_rows
    cdef floating fill = 0 if mode == 0 else -INFINITY
    cdef floating* v
    cdef floating* hout = vpad + band * wp     # the band's horizontal results (qp a row)
    if mode == 1:
        memset(seen, 0, h)
    o0 = 0
    while o0 < oh:
        rows = min(band, oh - o0)
        for b in range(rows):
            o = o0 + b
            v = vpad + b * wp + lext            # column 0 of the image row
            n_rows = 0
            for i in range(kh):
                r = o * sh - pt + i * dh
                if 0 <= r < h:
                    ptrs[n_rows] = src + r * w
                    n_rows += 1
                    if mode == 1 and not seen[r]:
                        nb = min(h - r, max(1, 4096 // w))   # <= 16 KB: still in L1
                        memset(seen + r, 1, nb)
                        if not _finite(src + r * w, nb * w):
                            mode = 2
            if n_rows == 0:     # all-padding rows (dilations only): fixed up by the caller
                for c in range(w):
                    v[c] = fill
            else:
                _fold(v, ptrs, n_rows, w, 1, mode)
        for j in range(kw):     # tap j of stream output t reads vpad[lext - pl + t*sw + j*dw]
            ptrs[j] = vpad + lext - pl + j * dw
        if qp == ow:
            _fold(dst + o0 * ow, ptrs, <int> kw, rows * ow, sw, mode)
        else:
            _fold(hout, ptrs, <int> kw, (rows - 1) * qp + ow, sw, mode)
            for b in range(rows):
                memcpy(dst + (o0 + b) * ow, hout + b * qp, ow * sizeof(floating))
        o0 += rows


cdef void _plane_small(const floating* src, floating* dst, floating* buf, const floating** ptrs,
                       Py_ssize_t h, Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t kh,
                       Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl,
                       Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t hp, Py_ssize_t wp,
                       int mode) noexcept nogil:
    """A small plane (SPP's 13x13 pools) in a few long folds instead of two calls per short
    row, whose loop tails cost more than the work: the plane laid out with its padding in buf
    (hp x wp cells, fill elsewhere; wp a multiple of sw), the vertical fold of kh rows for all
    oh output rows (one stream at sh = 1: rows are wp apart), the horizontal fold of kw taps
    over those rows as one stream (a row's last window ends inside its own row), then the oh
    rows of ow values copied out (wp / sw apart). buf: (hp + oh) * wp cells."""
    cdef Py_ssize_t qp = wp // sw, r, c, i, o
    cdef Py_ssize_t c0 = max(0, -pl), c1 = min(w, wp - pl)   # image columns inside a row
    cdef floating fill = 0 if mode == 0 else -INFINITY
    cdef floating* v = buf + hp * wp
    if mode == 1 and not _finite(src, h * w):
        mode = 2
    cdef Py_ssize_t r0 = max(0, -pt), r1 = min(h, hp - pt)     # image rows inside buf
    if c1 <= c0:
        r1 = r0
    # only the padding cells are filled (a pool without padding: none; filling all of buf
    # first cost FastestDet's 3x3 s2 average pool a fifth of its time)
    for c in range(min((r0 + pt) * wp, hp * wp)):
        buf[c] = fill
    for r in range(r0, r1):
        for c in range((r + pt) * wp, (r + pt) * wp + c0 + pl):
            buf[c] = fill
        memcpy(buf + (r + pt) * wp + c0 + pl, src + r * w + c0, (c1 - c0) * sizeof(floating))
        for c in range((r + pt) * wp + c1 + pl, (r + pt + 1) * wp):
            buf[c] = fill
    for c in range(max(r1, r0) * wp + pt * wp, hp * wp):
        buf[c] = fill
    if sh == 1:
        for i in range(kh):
            ptrs[i] = buf + i * dh * wp
        _fold(v, ptrs, <int> kh, oh * wp, 1, mode)
    else:
        for o in range(oh):
            for i in range(kh):
                ptrs[i] = buf + (o * sh + i * dh) * wp
            _fold(v + o * wp, ptrs, <int> kh, wp, 1, mode)
    for i in range(kw):
        ptrs[i] = v + i * dw
    _fold(buf, ptrs, <int> kw, (oh - 1) * qp + ow, sw, mode)
    for o in range(oh):
        memcpy(dst + o * ow, buf + o * qp, ow * sizeof(floating))


cdef void _planes_tiny(const floating* src, floating* dst, floating* buf, const floating** ptrs,
                       Py_ssize_t nb, Py_ssize_t h, Py_ssize_t w, Py_ssize_t oh,
                       Py_ssize_t ow, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sw,
                       Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t hp, Py_ssize_t wp, int mode) noexcept nogil:
    """_plane_small for ``nb`` tiny planes at sh = 1 (Inception's 3x3 pools on 14x14 and 7x7
    maps), consecutive in src and dst, laid out one under the other in buf (hp x wp cells
    each): one vertical and one horizontal fold over them all, the output rows that straddle
    two planes computed and dropped. One plane a call spent more on the calls and the row
    copies (rows of 7-14 values: plain loops, not memcpy) than on the folds (1024 planes of
    7x7: 2.6x onnxruntime's time). buf: 2 * nb * hp * wp cells."""
    cdef Py_ssize_t qp = wp // sw, r, c, i, o, p
    cdef Py_ssize_t c0 = max(0, -pl), c1 = min(w, wp - pl)   # image columns inside a row
    cdef Py_ssize_t rows = (nb - 1) * hp + oh       # up to the last plane's last output row
    cdef floating fill = 0 if mode == 0 else -INFINITY
    cdef floating* v = buf + nb * hp * wp
    cdef floating* bp
    if mode == 1 and not _finite(src, nb * h * w):
        mode = 2
    for c in range(nb * hp * wp):
        buf[c] = fill
    for p in range(nb):
        bp = buf + p * hp * wp + c0 + pl
        for r in range(max(0, -pt), min(h, hp - pt)):
            for c in range(c1 - c0):
                bp[(r + pt) * wp + c] = src[(p * h + r) * w + c0 + c]
    for i in range(kh):
        ptrs[i] = buf + i * dh * wp
    _fold(v, ptrs, <int> kh, rows * wp, 1, mode)
    for i in range(kw):
        ptrs[i] = v + i * dw
    _fold(buf, ptrs, <int> kw, (rows - 1) * qp + ow, sw, mode)
    for p in range(nb):
        for o in range(oh):
            for c in range(ow):
                dst[(p * oh + o) * ow + c] = buf[(p * hp + o) * qp + c]


cdef void _plane_2x2s2(const floating* src, floating* dst, Py_ssize_t w, Py_ssize_t oh,
                       Py_ssize_t ow, bint is_max) noexcept nogil:
    """2x2 window, stride 2, no padding, every window inside the plane (YuNet's MaxPools):
    one pass, four loads per output. Max is the exact NaN-propagating one, so no per-plane
    NaN check is needed."""
    cdef Py_ssize_t o
    cdef const floating* a
    for o in range(oh):
        a = src + 2 * o * w
        if floating is float:
            if is_max:
                edl_max2x2_f(a, a + w, dst + o * ow, ow)
            else:
                edl_avg2x2_f(a, a + w, dst + o * ow, ow)
        else:
            if is_max:
                edl_max2x2_d(a, a + w, dst + o * ow, ow)
            else:
                edl_avg2x2_d(a, a + w, dst + o * ow, ow)


cdef void _max_2x2s2_f(const float* xp, float* yp, Py_ssize_t planes, Py_ssize_t h,
                       Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """float32 2x2 stride-2 max (see edl_max_rows_f): on AVX-512 both passes at once per
    plane (edl_max2x2s2_plane_f); else per plane the rows pass into a scratch plane of oh
    rows of 2 ow, then the pairs pass over all of it, or _plane_2x2s2 where the scratch
    cannot be allocated."""
    cdef Py_ssize_t p, o
    cdef float* v = NULL
    cdef const float* a
    if edl_max2x2s2_plane_f(xp, w, yp, 0, 0):          # AVX-512: one pass, no scratch
        for p in prange(planes, schedule="static"):
            edl_max2x2s2_plane_f(xp + p * h * w, w, yp + p * oh * ow, oh, ow)
        return
    with parallel():
        v = <float*>malloc(oh * 2 * ow * sizeof(float))
        for p in prange(planes, schedule="static"):
            if v == NULL:
                _plane_2x2s2(xp + p * h * w, yp + p * oh * ow, w, oh, ow, True)
                continue
            for o in range(oh):
                a = xp + p * h * w + 2 * o * w
                edl_max_rows_f(a, a + w, v + o * 2 * ow, 2 * ow)
            edl_max_pairs_f(v, yp + p * oh * ow, oh * ow)
        free(v)


cdef void _plane_3x3s2(const floating* src, floating* dst, floating* v, Py_ssize_t h,
                       Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t pt,
                       Py_ssize_t pl) noexcept nogil:
    """3x3 max, stride 2, pads <= 1, every window with an in-image row and column: one call
    per output row (edl_max3x3s2; float32: the plane in one call, edl_max3x3s2_plane_f).
    v: the scratch row (its padding cells -inf)."""
    cdef Py_ssize_t o, r0, f, i
    cdef const floating* rows[3]
    if floating is float:
        edl_max3x3s2_plane_f(src, h, w, dst, oh, ow, pt, pl, v)
        return
    for o in range(oh):
        r0 = 2 * o - pt
        f = max(r0, 0)                      # an in-image row of the window
        for i in range(3):
            rows[i] = src + (r0 + i if 0 <= r0 + i < h else f) * w
        edl_max3x3s2_d(rows[0], rows[1], rows[2], w, v, pl, dst + o * ow, ow)


cdef void _counts(Py_ssize_t n_in, Py_ssize_t n_out, Py_ssize_t k, Py_ssize_t stride,
                  Py_ssize_t pad_begin, Py_ssize_t pad_end, Py_ssize_t dil,
                  long* valid, long* padded) noexcept nogil:
    """Per output index: number of in-image taps, and of taps inside the padded extent."""
    cdef Py_ssize_t o, i, t
    for o in range(n_out):
        valid[o] = 0
        padded[o] = 0
        for i in range(k):
            t = o * stride - pad_begin + i * dil
            if 0 <= t < n_in:
                valid[o] += 1
            if -pad_begin <= t < n_in + pad_end:
                padded[o] += 1


cdef int _pool3x3s1_f(const float* x, float* y, Py_ssize_t planes, Py_ssize_t h,
                      Py_ssize_t w, bint count_include_pad, bint is_max) noexcept nogil:
    """3x3 stride-1 max or average pool padded by 1 on every side, of small planes (h >= 2,
    h * w <= 4096) one at a time as flat arrays (edl_max3x3s1_plane_f, edl_avg3x3s1_plane_f).
    Its row-edge masks and 1 / divisor map are made once for all planes, the divisor as the
    general path's (the product of the two axes' reciprocals). Returns 0, or 1 if a malloc
    failed."""
    cdef Py_ssize_t n = h * w, r, q, p
    cdef int err = 0
    cdef int cr, cq
    cdef int* keep = <int*>malloc(2 * n * sizeof(int))
    cdef float* rc = <float*>malloc(n * sizeof(float))
    cdef float* v
    if keep == NULL or rc == NULL:
        free(keep)
        free(rc)
        return 1
    for r in range(h):
        cr = 3 if count_include_pad else 3 - (r == 0) - (r == h - 1)
        for q in range(w):
            cq = 3 if count_include_pad else 3 - (q == 0) - (q == w - 1)
            keep[r * w + q] = q > 0
            keep[n + r * w + q] = q < w - 1
            rc[r * w + q] = <float>(1.0 / cr) * <float>(1.0 / cq)
    with parallel():
        v = <float*>malloc((n + 2) * sizeof(float))
        for p in prange(planes, schedule="static"):
            if v == NULL:
                err += 1
            elif is_max:
                edl_max3x3s1_plane_f(x + p * n, h, w, v, keep, keep + n, rc, y + p * n)
            else:
                edl_avg3x3s1_plane_f(x + p * n, h, w, v, keep, keep + n, rc, y + p * n)
        free(v)
    free(keep)
    free(rc)
    return err != 0


cdef inline bint _is_3x3s1(Py_ssize_t h, Py_ssize_t w, tuple kernel_shape, tuple strides,
                           tuple pads, tuple dilations):
    """The windows _pool3x3s1_f takes: 3x3, stride 1, dilation 1, padding 1 on every side,
    planes of 2+ rows and up to 4096 values (its buffer stays in L1)."""
    return kernel_shape == (3, 3) and strides == (1, 1) and dilations == (1, 1) and \
        pads == (1, 1, 1, 1) and h >= 2 and h * w <= 4096


cdef void _pool(const floating[:, :, :, ::1] x, tuple kernel_shape, tuple strides, tuple pads,
                tuple dilations, bint count_include_pad, floating[:, :, :, ::1] out,
                bint is_max):
    if x.shape[0] * x.shape[1] == 0 or out.shape[2] == 0 or out.shape[3] == 0:
        return
    _pool_ptr(&x[0, 0, 0, 0], &out[0, 0, 0, 0], x.shape[0] * x.shape[1], x.shape[2],
              x.shape[3], out.shape[2], out.shape[3], kernel_shape, strides, pads, dilations,
              count_include_pad, is_max)


cdef int _pool_ptr(const floating* xp, floating* yp, Py_ssize_t planes, Py_ssize_t h,
                   Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, tuple kernel_shape,
                   tuple strides, tuple pads, tuple dilations, bint count_include_pad,
                   bint is_max) except -1:
    """_pool on C-contiguous planes x (planes x h x w) into y (planes x oh x ow), all > 0."""
    cdef Py_ssize_t kh = kernel_shape[0], kw = kernel_shape[1]
    cdef Py_ssize_t sh = strides[0], sw = strides[1]
    cdef Py_ssize_t pt = pads[0], pl = pads[1], pb = pads[2], pr = pads[3]
    cdef Py_ssize_t dh = dilations[0], dw = dilations[1]
    cdef Py_ssize_t p, r, q
    cdef Py_ssize_t k = 0
    cdef floating* tmp = NULL
    cdef const floating** ptrs = NULL
    cdef floating* d
    cdef floating lowest = -3.4028234663852886e38 if floating is float else -1.7976931348623157e308
    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and dh == 1 and dw == 1 and pt == 0 \
            and pl == 0 and 2 * oh <= h and 2 * ow <= w:
        # every window is four in-image taps: no padding, divisor 4
        if floating is float:
            if is_max:
                _max_2x2s2_f(xp, yp, planes, h, w, oh, ow)
                return 0
        for p in prange(planes, nogil=True, schedule="static"):
            _plane_2x2s2(xp + p * h * w, yp + p * oh * ow, w, oh, ow, is_max)
        return 0
    if floating is float:
        if _is_3x3s1(h, w, kernel_shape, strides, pads, dilations):
            with nogil:
                k = _pool3x3s1_f(xp, yp, planes, h, w, count_include_pad, is_max)
            if k:
                raise MemoryError()
            return 0
    cdef long* vh = <long*> malloc(2 * (oh + ow) * sizeof(long))
    if vh == NULL:
        raise MemoryError()
    cdef long* ph = vh + oh
    cdef long* vw = ph + oh
    cdef long* pw = vw + ow
    cdef floating* sc = <floating*> malloc((oh + ow) * sizeof(floating))
    if sc == NULL:
        free(vh)
        raise MemoryError()
    cdef floating* scw = sc + oh
    cdef floating* smap = NULL           # avg of tiny planes: 1 / divisor of each output
    cdef bint has_empty = 0
    cdef unsigned char* seen = NULL
    # scratch row: lext padding cells, the image row, then what the last window reads past it
    # (wp: rounded up to a multiple of sw, so a band's rows are one horizontal stream)
    cdef Py_ssize_t lext = max(pl, 0)
    cdef Py_ssize_t row = lext + max(w, (ow - 1) * sw + (kw - 1) * dw - pl + 1)
    row = (row + sw - 1) // sw * sw
    cdef Py_ssize_t band = min(oh, max(1, 4096 // (row + row // sw)))   # in L1 with its output
    cdef Py_ssize_t vlen = band * (row + row // sw)
    # small planes: _plane_small's padded plane (hp x wp) and vertical result instead
    cdef Py_ssize_t hp = (oh - 1) * sh + (kh - 1) * dh + 1
    cdef Py_ssize_t wp = ((ow - 1) * sw + (kw - 1) * dw + sw) // sw * sw
    cdef bint small = h * w <= 4096 and (hp + oh) * wp <= 16384
    # tiny planes (up to 16x16 with their padding) at sh = 1 go nb at a time (about 4096
    # cells of buf: in L1 with the rest); larger ones were as fast or faster one a call
    cdef Py_ssize_t nb = max(1, min(planes, 4096 // (hp * wp))) \
        if small and sh == 1 and hp * wp <= 256 else 1
    cdef Py_ssize_t batches = (planes + nb - 1) // nb, bb, cnt, i, jj
    if not is_max and nb > 1:   # <= 256 values; larger planes scale row by row
        smap = <floating*> malloc(oh * ow * sizeof(floating))
        if smap == NULL:
            free(vh)
            free(sc)
            raise MemoryError()
    cdef bint win3s2 = kh == 3 and kw == 3 and sh == 2 and sw == 2 and dh == 1 and dw == 1 \
        and 0 <= pt <= 1 and 0 <= pl <= 1 and 2 * (oh - 1) - pt < h and 2 * (ow - 1) - pl < w
    cdef bint s2x3 = is_max and win3s2
    # the same windows averaged: edl_avg3x3s2_plane_f (AVX2 rows; zrow: the rows outside)
    cdef bint avg3 = floating is float and not is_max and win3s2
    cdef float* zrow = NULL
    if avg3:
        zrow = <float*> calloc(w, sizeof(float))
        if zrow == NULL:
            free(vh)
            free(sc)
            free(smap)
            raise MemoryError()
    if s2x3:
        small = False
        row = max(row, pl + w, 2 * ow + 1)
        band = 1
        vlen = max(vlen, row)
    if small:
        vlen = max(vlen, (hp + oh) * wp, 2 * nb * hp * wp)
    vlen = (vlen + 7) // 8 * 8    # keeps the pointer scratch after it aligned
    cdef int failed[1]
    failed[0] = 0
    with nogil:
        _counts(h, oh, kh, sh, pt, pb, dh, vh, ph)
        _counts(w, ow, kw, sw, pl, pr, dw, vw, pw)
        # 1 / divisor factorises over the two axes; 0 where no tap is in the image
        for r in range(oh):
            sc[r] = 0 if vh[r] == 0 else 1.0 / (ph[r] if count_include_pad else vh[r])
            has_empty = has_empty or vh[r] == 0
        for q in range(ow):
            scw[q] = 0 if vw[q] == 0 else 1.0 / (pw[q] if count_include_pad else vw[q])
            has_empty = has_empty or vw[q] == 0
        if smap != NULL:
            for r in range(oh):
                for q in range(ow):
                    smap[r * ow + q] = sc[r] * scw[q]
        with parallel():
            tmp = <floating*> malloc(vlen * sizeof(floating) + (kh + kw) * sizeof(void*) + h)
            if tmp != NULL:
                ptrs = <const floating**> (<char*> tmp + vlen * sizeof(floating))
                seen = <unsigned char*> (ptrs + kh + kw)
                if not small:   # _plane's padding cells: written once, read by every plane
                    for k in range(band * row):
                        tmp[k] = -INFINITY if is_max else 0
                for bb in prange(batches, schedule="static"):
                    p = bb * nb
                    cnt = min(nb, planes - p)
                    d = yp + p * oh * ow
                    if floating is float:
                        if avg3 and edl_avg3x3s2_plane_f(xp + p * h * w, h, w, d, oh, ow, pt,
                                                         pl, sc, scw, zrow):
                            continue
                    if s2x3:
                        _plane_3x3s2(xp + p * h * w, d, tmp, h, w, oh, ow, pt, pl)
                    elif nb > 1:
                        _planes_tiny(xp + p * h * w, d, tmp, ptrs, cnt, h, w, oh, ow, kh, kw,
                                     sw, pt, pl, dh, dw, hp, wp, 1 if is_max else 0)
                    elif small:
                        _plane_small(xp + p * h * w, d, tmp, ptrs, h, w, oh, ow, kh, kw, sh, sw,
                                     pt, pl, dh, dw, hp, wp, 1 if is_max else 0)
                    else:
                        _plane(xp + p * h * w, d, tmp, ptrs, seen, lext, row, band, h, w, oh,
                               ow, kh, kw, sh, sw, pt, pl, dh, dw, 1 if is_max else 0)
                    if smap != NULL:
                        for jj in range(cnt):
                            for i in range(oh * ow):
                                d[jj * oh * ow + i] *= smap[i]
                    elif not is_max:
                        for r in range(oh):
                            for q in range(ow):
                                d[r * ow + q] *= sc[r] * scw[q]
                    elif has_empty:
                        # windows without any in-image tap (dilations only): lowest, as ORT
                        for i in range(cnt * oh * ow):
                            if vh[(i // ow) % oh] == 0 or vw[i % ow] == 0:
                                d[i] = lowest
                free(tmp)
            else:
                failed[0] = 1   # an array element: shared, not thread-private
    free(vh)
    free(sc)
    free(smap)
    free(zrow)
    if failed[0]:
        raise MemoryError()
    return 0


cdef class PoolF32:
    """A float32 max / average pool bound to its input shape and geometry (pool2d_plan's
    one-call form, which the ONNX runtime's compiled plan calls): ``pool(x, y, nthreads)``
    pools x into y and returns True, or returns False having touched nothing when x or y is
    not a C-contiguous float32 array of the bound shapes, y not writable or overlapping x.
    The geometry was validated when bound (the kernel trusts it). Through the general
    wrapper a 64 x 40 x 40 2x2 max pool took 33 us inside YuNet against 10 us repeated:
    its Python layers run cache-cold between large convs."""
    cdef Py_ssize_t xs[4]
    cdef Py_ssize_t ys[4]
    cdef tuple ks, strides, pads, dilations
    cdef bint count_include_pad, is_max

    def __init__(self, tuple x_shape, tuple y_shape, tuple kernel_shape, tuple strides,
                 tuple pads, tuple dilations, bint count_include_pad, bint is_max):
        cdef int i
        if len(x_shape) != 4 or len(y_shape) != 4 or len(kernel_shape) != 2 or \
                len(strides) != 2 or len(pads) != 4 or len(dilations) != 2:
            raise ValueError("PoolF32: needs 4-D shapes and 2-D geometry")
        for i in range(4):
            self.xs[i] = x_shape[i]
            self.ys[i] = y_shape[i]
        if self.ys[0] != self.xs[0] or self.ys[1] != self.xs[1]:
            raise ValueError("PoolF32: x and y differ in N or C")
        self.ks, self.strides, self.pads, self.dilations = (kernel_shape, strides, pads,
                                                            dilations)
        self.count_include_pad, self.is_max = count_include_pad, is_max

    def __call__(self, x, y, int nthreads):
        cdef Py_buffer bx, by
        if not f32_pair4(x, &bx, y, &by, self.xs, self.ys):
            return False
        try:
            if by.len and bx.len:
                if omp_get_max_threads() != nthreads:
                    omp_set_num_threads(nthreads)
                _pool_ptr(<const float*>bx.buf, <float*>by.buf, self.xs[0] * self.xs[1],
                          self.xs[2], self.xs[3], self.ys[2], self.ys[3], self.ks,
                          self.strides, self.pads, self.dilations, self.count_include_pad,
                          self.is_max)
        finally:
            release_pair(&bx, &by)
        return True


def max_pool2d(const floating[:, :, :, ::1] x, tuple kernel_shape, tuple strides, tuple pads,
               tuple dilations, floating[:, :, :, ::1] out):
    _pool(x, kernel_shape, strides, pads, dilations, False, out, True)
    return out.base


ctypedef fused int8ish:
    unsigned char
    signed char


def max_pool2d_int8(const int8ish[:, :, :, ::1] x, tuple kernel_shape, tuple strides,
                    tuple pads, tuple dilations, int8ish[:, :, :, ::1] out):
    """MaxPool of uint8 / int8 (quantized) tensors, exact: max commutes with the monotonic
    (de)quantization. Per output row, the window's in-image rows' max into a row padded
    with the type's minimum, then the max of kw taps of it (edl_imax_*). A window with no
    in-image tap gives the minimum. Arguments as max_pool2d (validated by the caller)."""
    cdef Py_ssize_t n = x.shape[0], ch = x.shape[1], h = x.shape[2], w = x.shape[3]
    cdef Py_ssize_t oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t kh = kernel_shape[0], kw = kernel_shape[1]
    cdef Py_ssize_t sh = strides[0], sw = strides[1], pt = pads[0], pl = pads[1]
    cdef Py_ssize_t dh = dilations[0], dw = dilations[1]
    cdef Py_ssize_t planes = n * ch, p, o, i, r, c
    cdef Py_ssize_t lext = max(pl, 0)
    cdef Py_ssize_t row = lext + max(w, (ow - 1) * sw + (kw - 1) * dw - pl + 1)
    cdef int8ish fill = 0 if int8ish is cython.uchar else -128
    cdef int8ish* buf = NULL
    cdef int8ish* v
    cdef const int8ish* xp
    cdef int8ish* yp
    cdef bint first
    cdef int failed[1]
    # 3x3 stride 2 (any row stride), dilation 1: one edl_imax3s2 call per output row
    cdef bint k3s2 = kh == 3 and kw == 3 and sw == 2 and dh == 1 and dw == 1
    # 2x2 stride 2 without padding, every window in the image: edl_imax2x2 per plane, its
    # scratch (oh rows of 2 ow) in buf
    cdef bint k2s2 = (kh == 2 and kw == 2 and sh == 2 and sw == 2 and dh == 1 and dw == 1
                      and pt == 0 and pl == 0 and 2 * oh <= h and 2 * ow <= w)
    if k2s2:
        row = max(row, 2 * oh * ow)
    cdef const int8ish* ra      # its in-image rows (scalars: a C array in a prange would be
    cdef const int8ish* rb      # shared by the threads)
    cdef const int8ish* rc
    cdef Py_ssize_t nin
    failed[0] = 0
    if planes == 0 or oh == 0 or ow == 0:
        return out.base
    xp = &x[0, 0, 0, 0]
    yp = &out[0, 0, 0, 0]
    with nogil, parallel():
        # 64 bytes of slack: edl_imax3s2's 16-bit loads read one byte past the last tap
        buf = <int8ish*> malloc(row + 64)
        if buf == NULL:
            failed[0] = 1   # an array element: shared, not thread-private
        else:
            memset(buf, <int>fill, row + 64)   # the padding cells keep it; image cells rewritten
            v = buf + lext
            for p in prange(planes, schedule="static"):
                if k2s2:
                    if int8ish is cython.uchar:
                        edl_imax2x2_u8(xp + p * h * w, w, oh, ow, buf, yp + p * oh * ow)
                    else:
                        edl_imax2x2_s8(xp + p * h * w, w, oh, ow, buf, yp + p * oh * ow)
                    continue
                for o in range(oh):
                    if k3s2:
                        nin = 0               # the window's in-image rows, in order
                        ra = NULL
                        rb = NULL
                        rc = NULL
                        for i in range(3):
                            r = o * sh - pt + i
                            if 0 <= r < h:
                                if nin == 0:
                                    ra = xp + (p * h + r) * w
                                elif nin == 1:
                                    rb = xp + (p * h + r) * w
                                else:
                                    rc = xp + (p * h + r) * w
                                nin = nin + 1
                        if nin > 0:
                            if rb == NULL:            # max(x, x) = x: repeat one
                                rb = ra
                            if rc == NULL:
                                rc = ra
                            if int8ish is cython.uchar:
                                edl_imax3s2_u8(ra, rb, rc, w, buf + lext - pl, pl,
                                               yp + (p * oh + o) * ow, ow)
                            else:
                                edl_imax3s2_s8(ra, rb, rc, w, buf + lext - pl, pl,
                                               yp + (p * oh + o) * ow, ow)
                            continue
                    first = True
                    for i in range(kh):
                        r = o * sh - pt + i * dh
                        if 0 <= r < h:
                            if first:
                                memcpy(v, xp + (p * h + r) * w, w)
                                first = False
                            elif int8ish is cython.uchar:
                                edl_imax_row_u8(v, xp + (p * h + r) * w, w)
                            else:
                                edl_imax_row_s8(v, xp + (p * h + r) * w, w)
                    if first:
                        memset(v, <int>fill, w)
                    if int8ish is cython.uchar:
                        edl_imax_taps_u8(buf + lext - pl, kw, dw, sw, yp + (p * oh + o) * ow, ow)
                    else:
                        edl_imax_taps_s8(buf + lext - pl, kw, dw, sw, yp + (p * oh + o) * ow, ow)
            free(buf)
    if failed[0]:
        raise MemoryError()
    return out.base


def avg_pool2d(const floating[:, :, :, ::1] x, tuple kernel_shape, tuple strides, tuple pads,
               tuple dilations, bint count_include_pad, floating[:, :, :, ::1] out):
    _pool(x, kernel_shape, strides, pads, dilations, count_include_pad, out, False)
    return out.base


cdef double _plane_sum(const double* s, Py_ssize_t m) noexcept nogil:
    # float64 planes (float32 ones: edl_plane_means_f): 8 independent lanes, vectorised by gcc
    cdef double acc[8]
    cdef Py_ssize_t i, k, m8 = m - m % 8
    for k in range(8):
        acc[k] = 0
    for i in range(0, m8, 8):
        for k in range(8):
            acc[k] += s[i + k]
    for i in range(m8, m):
        acc[0] += s[i]
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))


cdef floating _plane_max(const floating* s, Py_ssize_t m) noexcept nogil:
    # One pass over blocks of 64: elementwise maxps into 64 lanes (a plain loop that gcc's
    # loop vectoriser handles) that also sums v * 0 (0 unless NaN/inf); only a plane holding
    # NaN/inf takes a second, exact NaN-propagating pass.
    # The 64 lanes are folded in halves (32, 16, ... 1: short vector loops), not one after
    # another: 63 dependent steps a plane, twice, were most of a 576 x 14 x 14 pool's time.
    cdef floating acc[64]
    cdef floating chk[64]
    cdef floating zero = 0
    cdef Py_ssize_t i, k, half, m64 = m - m % 64
    for k in range(64):
        acc[k] = s[0]
        chk[k] = 0
    for i in range(0, m64, 64):
        for k in range(64):
            acc[k] = _fmax(acc[k], s[i + k])
            chk[k] += s[i + k] * zero
    half = 32
    while half >= 1:
        for k in range(half):
            chk[k] += chk[k + half]
        half //= 2
    if chk[0] != 0:
        for k in range(64):
            acc[k] = s[0]
        for i in range(0, m64, 64):
            for k in range(64):
                acc[k] = _nanmax(acc[k], s[i + k])
    for i in range(m64, m):
        acc[0] = _nanmax(acc[0], s[i])
    half = 32
    while half >= 1:
        for k in range(half):
            acc[k] = _nanmax(acc[k], acc[k + half])
        half //= 2
    return acc[0]


def global_avg_pool2d(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out):
    cdef Py_ssize_t ch = x.shape[1], m = x.shape[2] * x.shape[3], p, planes = x.shape[0] * ch
    cdef double inv = 1.0 / m
    if planes == 0:
        return out.base
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* yp = &out[0, 0, 0, 0]
    # below 64K values (~10 us) one thread: waking a team costs ~5 us on an idle machine
    cdef int nt = omp_get_max_threads() if planes * m >= 65536 else 1
    cdef Py_ssize_t p0, p1
    if floating is float:        # runs of planes, a run a thread
        for p in prange(nt, nogil=True, schedule="static", num_threads=nt):
            p0 = p * planes // nt
            p1 = (p + 1) * planes // nt
            edl_plane_means_f(xp + p0 * m, p1 - p0, m, yp + p0)
    else:
        for p in prange(planes, nogil=True, schedule="static"):
            yp[p] = _plane_sum(xp + p * m, m) * inv
    return out.base


def global_max_pool2d(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] out):
    cdef Py_ssize_t ch = x.shape[1], m = x.shape[2] * x.shape[3], p, planes = x.shape[0] * ch
    if planes == 0:
        return out.base
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef floating* yp = &out[0, 0, 0, 0]
    for p in prange(planes, nogil=True, schedule="static"):
        yp[p] = _plane_max(xp + p * m, m)
    return out.base
