# cython: boundscheck=False, wraparound=False
"""Cython twins of edgedl.kernels._ref.resize (same names and arguments).

The wrapper validated the shapes and built the index tables (all inside the image).
"""
from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

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
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], w = x.shape[3]
    cdef Py_ssize_t oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t q, o, p
    cdef const nearest_t* src
    cdef nearest_t* dst
    cdef nearest_t* dst2
    cdef nearest_t v
    cdef bint twice = ow == 2 * w    # each source column twice (2x upsampling), in order
    if n * c * oh * ow == 0:
        return
    for p in range(ow if twice else 0):
        if iw[p] != p >> 1:
            twice = False
            break
    for q in prange(n * c, nogil=True, schedule="static",
                    use_threads_if=n * c * oh * ow >= _PAR_ELEMS):
        o = 0
        while o < oh:
            dst = &out[q // c, q % c, o, 0]
            src = &x[q // c, q % c, ih[o], 0]
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
