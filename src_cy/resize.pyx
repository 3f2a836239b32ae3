# cython: boundscheck=False, wraparound=False
"""Cython twins of edgedl.kernels._ref.resize (same names and arguments).

The wrapper validated the shapes and built the index tables (all inside the image).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

from edl_buffer cimport f32_pair4, release_pair
from edl_omp cimport omp_get_max_threads, omp_set_num_threads

# Below this much work a loop runs on the calling thread only (waking an OpenMP team costs
# ~5 us on an idle machine, ~100 us on a loaded 2-core one).
cdef enum:
    _PAR_ELEMS = 1 << 17

# nearest only copies values: the float types and the 8-bit ones of quantized tensors
ctypedef fused nearest_t:
    float
    double
    unsigned char
    signed char


def resize_nearest(const nearest_t[:, :, :, ::1] x, int64_t[::1] ih, int64_t[::1] iw,
                   nearest_t[:, :, :, ::1] out):
    if x.shape[0] * x.shape[1] * out.shape[2] * out.shape[3] == 0:
        return
    _nearest(&x[0, 0, 0, 0], &out[0, 0, 0, 0], x.shape[0] * x.shape[1], x.shape[2],
             x.shape[3], out.shape[2], out.shape[3], &ih[0], &iw[0])


cdef void _nearest(const nearest_t* xp, nearest_t* yp, Py_ssize_t planes, Py_ssize_t h,
                   Py_ssize_t w, Py_ssize_t oh, Py_ssize_t ow, const int64_t* ih,
                   const int64_t* iw) noexcept nogil:
    """resize_nearest on C-contiguous planes x (planes x h x w) into y (planes x oh x ow, all
    > 0); ih / iw: the source row / column of each output one, inside the image."""
    cdef Py_ssize_t q, o, p
    cdef const nearest_t* src
    cdef nearest_t* dst
    cdef nearest_t* dst2
    cdef nearest_t v
    cdef bint twice = ow == 2 * w    # each source column twice (2x upsampling), in order
    for p in range(ow if twice else 0):
        if iw[p] != p >> 1:
            twice = False
            break
    for q in prange(planes, schedule="static", use_threads_if=planes * oh * ow >= _PAR_ELEMS):
        o = 0
        while o < oh:
            dst = yp + (q * oh + o) * ow
            src = xp + (q * h + ih[o]) * w
            if twice and o + 1 < oh and ih[o + 1] == ih[o]:
                # 2x in both axes: one pass writes both output rows (vectorises: a load,
                # two interleaves, four stores per vector), no gather and no row copy
                dst2 = dst + ow
                for p in range(w):
                    v = src[p]
                    dst[2 * p] = v
                    dst[2 * p + 1] = v
                    dst2[2 * p] = v
                    dst2[2 * p + 1] = v
                o = o + 2
                continue
            if o > 0 and ih[o] == ih[o - 1]:
                # upsampling repeats source rows: copy the row just written (in cache)
                memcpy(dst, dst - ow, ow * sizeof(nearest_t))
            elif twice:
                for p in range(w):
                    v = src[p]
                    dst[2 * p] = v
                    dst[2 * p + 1] = v
            else:
                for p in range(ow):
                    dst[p] = src[iw[p]]
            o = o + 1


cdef class ResizeNearestF32:
    """A float32 nearest resize bound to its shapes and index tables (resize2d_plan's
    one-call form, which the ONNX runtime's compiled plan calls): ``resize(x, y, nthreads)``
    fills y and returns True, or returns False having touched nothing when x or y is not a
    C-contiguous float32 array of the bound shapes, y not writable or overlapping x. The
    tables are checked here (the kernel indexes with them unchecked). Through the general
    wrapper a 2x upsampling in YuNet took 15 us in the model against 6 us repeated: its
    Python layers run cache-cold between large convs."""
    cdef Py_ssize_t xs[4]
    cdef Py_ssize_t ys[4]
    cdef int64_t[::1] ih, iw

    def __init__(self, tuple x_shape, tuple y_shape, int64_t[::1] ih, int64_t[::1] iw):
        cdef int i
        if len(x_shape) != 4 or len(y_shape) != 4:
            raise ValueError("ResizeNearestF32: needs 4-D shapes")
        for i in range(4):
            self.xs[i] = x_shape[i]
            self.ys[i] = y_shape[i]
        if self.xs[0] != self.ys[0] or self.xs[1] != self.ys[1] or \
                ih.shape[0] != self.ys[2] or iw.shape[0] != self.ys[3]:
            raise ValueError("ResizeNearestF32: shapes and tables disagree")
        for i in range(ih.shape[0]):
            if not 0 <= ih[i] < self.xs[2]:
                raise ValueError("ResizeNearestF32: a row index outside the input")
        for i in range(iw.shape[0]):
            if not 0 <= iw[i] < self.xs[3]:
                raise ValueError("ResizeNearestF32: a column index outside the input")
        self.ih, self.iw = ih, iw

    def __call__(self, x, y, int nthreads):
        cdef Py_buffer bx, by
        if not f32_pair4(x, &bx, y, &by, self.xs, self.ys):
            return False
        if by.len:
            if omp_get_max_threads() != nthreads:
                omp_set_num_threads(nthreads)
            with nogil:
                _nearest(<const float*>bx.buf, <float*>by.buf, self.xs[0] * self.xs[1],
                         self.xs[2], self.xs[3], self.ys[2], self.ys[3], &self.ih[0],
                         &self.iw[0])
        release_pair(&bx, &by)
        return True


def resize_taps(const floating[:, :, :, ::1] x, int64_t[:, ::1] ih, floating[:, ::1] wh,
                int64_t[:, ::1] iw, floating[:, ::1] ww, floating[:, :, :, ::1] out):
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], w = x.shape[3]
    cdef Py_ssize_t oh = out.shape[2], ow = out.shape[3], kh = ih.shape[1], kw = iw.shape[1]
    cdef Py_ssize_t q, o, p, a, k
    cdef const floating* src
    cdef floating* dst
    cdef floating* tmp = NULL
    cdef floating wt, acc
    if n * c * oh * ow == 0:
        return
    with nogil, parallel(use_threads_if=n * c * oh * (ow * kw + w * kh) >= _PAR_ELEMS):
        tmp = <floating*>malloc(w * sizeof(floating))
        for q in prange(n * c, schedule="static"):
            for o in range(oh):
                # vertical blend of the kh source rows (contiguous, vectorises) ...
                src = &x[q // c, q % c, ih[o, 0], 0]
                wt = wh[o, 0]
                for k in range(w):
                    tmp[k] = wt * src[k]
                for a in range(1, kh):
                    src = &x[q // c, q % c, ih[o, a], 0]
                    wt = wh[o, a]
                    for k in range(w):
                        tmp[k] = tmp[k] + wt * src[k]
                # ... then the horizontal taps
                dst = &out[q // c, q % c, o, 0]
                for p in range(ow):
                    acc = 0
                    for a in range(kw):
                        acc = acc + ww[p, a] * tmp[iw[p, a]]
                    dst[p] = acc
        free(tmp)


def resize_linear_u8(const uint8_t[:, :, ::1] x, int64_t[:, ::1] ih, floating[:, ::1] wh,
                     int64_t[:, ::1] iw, floating[:, ::1] ww, int64_t[::1] chan,
                     floating[::1] a, floating[::1] b, floating[:, :, :] out):
    cdef Py_ssize_t nc = x.shape[2], w3 = x.shape[1] * x.shape[2]
    cdef Py_ssize_t oh = out.shape[1], ow = out.shape[2], c, o, p, k, sc
    cdef const uint8_t* s0
    cdef const uint8_t* s1
    cdef const int64_t* ix = &iw[0, 0]
    cdef const floating* wx = &ww[0, 0]
    cdef floating* tmp
    cdef floating w0, w1, ac, bc
    if oh * ow == 0:
        return
    with nogil:
        tmp = <floating*>malloc(w3 * sizeof(floating))
        for o in range(oh):
            # vertical blend of the two source rows, channels interleaved (contiguous) ...
            s0 = &x[ih[o, 0], 0, 0]
            s1 = &x[ih[o, 1], 0, 0]
            w0 = wh[o, 0]
            w1 = wh[o, 1]
            for k in range(w3):
                tmp[k] = w0 * s0[k] + w1 * s1[k]
            # ... then the horizontal taps of each output plane, with its channel and affine
            for c in range(out.shape[0]):
                sc = chan[c]
                ac = a[c]
                bc = b[c]
                for p in range(ow):
                    out[c, o, p] = (wx[2 * p] * tmp[ix[2 * p] * nc + sc] +
                                    wx[2 * p + 1] * tmp[ix[2 * p + 1] * nc + sc]) * ac + bc
        free(tmp)
