# cython: boundscheck=False, wraparound=False
"""Cython twins of edgedl.kernels._ref.conv (same names and arguments; see there for shapes).

The wrapper validated every shape and made the arrays C-contiguous, hence no bounds checks.
Each tap walks only its valid output range (``_tap_lo`` / ``_tap_hi``): no branches in inner loops.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, tanh, tanhf
from libc.stdlib cimport malloc, free



cdef inline Py_ssize_t _tap_lo(Py_ssize_t stride, Py_ssize_t off) noexcept nogil:
    """First destination o with o*stride + off >= 0."""
    return 0 if off >= 0 else (-off + stride - 1) // stride


cdef inline Py_ssize_t _tap_hi(Py_ssize_t n_src, Py_ssize_t n_dst, Py_ssize_t stride,
                               Py_ssize_t off) noexcept nogil:
    """One past the last destination o < n_dst with o*stride + off < n_src (>= _tap_lo).

    Together: [lo, hi) are the destinations whose source index is inside [0, n_src).
    (Values, not out-pointers: prange makes assigned variables thread-private.)
    """
    cdef Py_ssize_t last = n_src - 1 - off, lo = _tap_lo(stride, off), hi
    hi = 0 if last < 0 else min(n_dst, last // stride + 1)
    return hi if hi > lo else lo


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef inline floating _tanh(floating v) noexcept nogil:
    if floating is float:
        return tanhf(v)
    else:
        return tanh(v)


cdef inline floating _clamp(floating v, floating lo, floating hi) noexcept nogil:
    v = v if v > lo else lo
    return v if v < hi else hi


cdef void _epilogue(floating* v, Py_ssize_t n, floating b, int act, floating lo,
                    floating hi, floating s) noexcept nogil:
    """In place: v[k] = act(v[k] + b); one branch per row, vectorisable loops."""
    cdef Py_ssize_t k
    cdef floating t
    if act == 0:
        for k in range(n):
            v[k] = v[k] + b
    elif act == 1:
        for k in range(n):
            t = v[k] + b
            t = t if t > lo else lo
            v[k] = t if t < hi else hi
    elif act == 2:
        for k in range(n):
            t = v[k] + b
            v[k] = t if t >= 0 else t * s
    elif act == 3:
        for k in range(n):
            v[k] = _clamp(lo * (v[k] + b) + hi, 0, 1)
    elif act == 4:
        for k in range(n):
            t = v[k] + b
            v[k] = t * _clamp(t * <floating>(1.0 / 6.0) + <floating>0.5, 0, 1)
    elif act == 5:
        for k in range(n):
            v[k] = 1 / (1 + _exp(-(v[k] + b)))
    elif act == 6:
        for k in range(n):
            t = v[k] + b
            v[k] = t / (1 + _exp(-t))
    elif act == 7:
        for k in range(n):
            v[k] = _tanh(v[k] + b)


def bias_act(floating[:, :, ::1] y, floating[::1] bias, int act, double p0, double p1,
             floating[::1] slopes):
    cdef Py_ssize_t n = y.shape[0], m = y.shape[1], L = y.shape[2], q
    if n * m * L == 0:
        return
    for q in prange(n * m, nogil=True, schedule="static"):
        _epilogue(&y[q // m, q % m, 0], L, bias[q % m], act, <floating>p0, <floating>p1,
                  slopes[q % m])


def im2col(floating[:, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t oh,
           Py_ssize_t ow, floating[:, ::1] cols):
    cdef Py_ssize_t c = x.shape[0], h = x.shape[1], w = x.shape[2]
    cdef Py_ssize_t r, ch, i, j, oy, ox, iy, off, lo, hi
    cdef floating* dst
    cdef floating* src
    if c * kh * kw * oh * ow == 0:
        return
    for r in prange(c * kh * kw, nogil=True, schedule="static"):
        ch = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        off = j * dw - pw
        lo = _tap_lo(sw, off)
        hi = _tap_hi(w, ow, sw, off)
        for oy in range(oh):
            dst = &cols[r, oy * ow]
            iy = oy * sh - ph + i * dh
            if iy < 0 or iy >= h:
                for ox in range(ow):
                    dst[ox] = 0
                continue
            src = &x[ch, iy, 0]
            for ox in range(lo):
                dst[ox] = 0
            if sw == 1:
                for ox in range(lo, hi):
                    dst[ox] = src[ox + off]
            else:
                for ox in range(lo, hi):
                    dst[ox] = src[ox * sw + off]
            for ox in range(hi, ow):
                dst[ox] = 0


def col2im(floating[:, ::1] cols, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
           Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t ih,
           Py_ssize_t iw, floating[:, :, ::1] out):
    cdef Py_ssize_t m = out.shape[0], oh = out.shape[1], ow = out.shape[2]
    cdef Py_ssize_t mm, i, j, r, y, xx, oy, off, lo, hi
    cdef floating* dst
    cdef floating* src
    if m * ih * iw == 0:
        return
    for mm in prange(m, nogil=True, schedule="static"):
        for i in range(kh):
            for j in range(kw):
                r = (mm * kh + i) * kw + j
                off = j * dw - pw
                lo = _tap_lo(sw, off)
                hi = _tap_hi(ow, iw, sw, off)
                for y in range(ih):
                    oy = y * sh - ph + i * dh
                    if oy < 0 or oy >= oh:
                        continue
                    src = &cols[r, y * iw]
                    dst = &out[mm, oy, 0]
                    for xx in range(lo, hi):
                        dst[xx * sw + off] += src[xx]


cdef inline void _acc3(const floating* src, const floating* w, floating* row, Py_ssize_t lo,
                       Py_ssize_t hi, Py_ssize_t sw, Py_ssize_t off,
                       Py_ssize_t dw) noexcept nogil:
    """row[ox] += the 3 taps of one kernel row (columns [lo, hi) have every tap inside)."""
    cdef floating w0 = w[0], w1 = w[1], w2 = w[2]
    cdef Py_ssize_t ox, a
    if sw == 1 and dw == 1:       # the common case, written so that gcc vectorises it
        src = src + off
        for ox in range(lo, hi):
            row[ox] += w0 * src[ox] + w1 * src[ox + 1] + w2 * src[ox + 2]
    else:
        for ox in range(lo, hi):
            a = ox * sw + off
            row[ox] += w0 * src[a] + w1 * src[a + dw] + w2 * src[a + 2 * dw]


cdef inline void _acc5(const floating* src, const floating* w, floating* row, Py_ssize_t lo,
                       Py_ssize_t hi, Py_ssize_t sw, Py_ssize_t off,
                       Py_ssize_t dw) noexcept nogil:
    cdef floating w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4]
    cdef Py_ssize_t ox, a
    if sw == 1 and dw == 1:
        src = src + off
        for ox in range(lo, hi):
            row[ox] += (w0 * src[ox] + w1 * src[ox + 1] + w2 * src[ox + 2]
                        + w3 * src[ox + 3] + w4 * src[ox + 4])
    else:
        for ox in range(lo, hi):
            a = ox * sw + off
            row[ox] += (w0 * src[a] + w1 * src[a + dw] + w2 * src[a + 2 * dw]
                        + w3 * src[a + 3 * dw] + w4 * src[a + 4 * dw])


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


cdef floating _dw_point(const floating* xp, const floating* w, Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t h, Py_ssize_t wd, Py_ssize_t oy, Py_ssize_t ox,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t dh, Py_ssize_t dw) noexcept nogil:
    """One output pixel with bounds checks (border columns)."""
    cdef floating acc = 0
    cdef Py_ssize_t i, j, iy, ix
    for i in range(kh):
        iy = oy * sh - ph + i * dh
        if iy < 0 or iy >= h:
            continue
        for j in range(kw):
            ix = ox * sw - pw + j * dw
            if 0 <= ix < wd:
                acc += w[i * kw + j] * xp[iy * wd + ix]
    return acc


def depthwise_conv2d(floating[:, :, :, ::1] x, floating[:, :, ::1] w, floating[::1] bias,
                     Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                     Py_ssize_t dh, Py_ssize_t dw, int act, double p0, double p1,
                     floating[::1] slopes, floating[:, :, :, ::1] out):
    cdef Py_ssize_t n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
    cdef Py_ssize_t kh = w.shape[1], kw = w.shape[2], oh = out.shape[2], ow = out.shape[3]
    cdef Py_ssize_t q, ch, oy, ox, i, j, iy, xlo, xhi
    cdef floating lo = <floating>p0, hi = <floating>p1
    cdef floating* row
    cdef const floating* xp
    cdef const floating* wc
    cdef bint fast
    if n * c * oh * ow == 0:
        return
    # per-tap valid column ranges, shared by all rows and channels
    cdef Py_ssize_t* jr = <Py_ssize_t*>malloc(3 * kw * sizeof(Py_ssize_t))
    if jr == NULL:
        raise MemoryError()
    for j in range(kw):
        jr[3 * j + 2] = j * dw - pw
        jr[3 * j] = _tap_lo(sw, jr[3 * j + 2])
        jr[3 * j + 1] = _tap_hi(wd, ow, sw, jr[3 * j + 2])
    # 3- and 5-wide kernels: each kernel row's taps summed in registers on the interior
    # columns [xlo, xhi) where every tap is inside; the few border columns one by one
    xlo = jr[0]
    xhi = jr[3 * (kw - 1) + 1]
    fast = (kw == 3 or kw == 5) and xlo < xhi
    try:
        for q in prange(n * c, nogil=True, schedule="static"):
            ch = q % c
            xp = &x[q // c, ch, 0, 0]
            wc = &w[ch, 0, 0]
            for oy in range(oh):
                row = &out[q // c, ch, oy, 0]
                if fast:
                    for ox in range(xlo, xhi):
                        row[ox] = 0
                    for i in range(kh):
                        iy = oy * sh - ph + i * dh
                        if iy >= 0 and iy < h:
                            if kw == 3:
                                _acc3(xp + iy * wd, wc + i * kw, row, xlo, xhi, sw, -pw, dw)
                            else:
                                _acc5(xp + iy * wd, wc + i * kw, row, xlo, xhi, sw, -pw, dw)
                    for ox in range(xlo):
                        row[ox] = _dw_point(xp, wc, kh, kw, h, wd, oy, ox, sh, sw, ph, pw,
                                            dh, dw)
                    for ox in range(xhi, ow):
                        row[ox] = _dw_point(xp, wc, kh, kw, h, wd, oy, ox, sh, sw, ph, pw,
                                            dh, dw)
                else:
                    for ox in range(ow):
                        row[ox] = 0
                    for i in range(kh):
                        iy = oy * sh - ph + i * dh
                        if iy >= 0 and iy < h:
                            for j in range(kw):
                                _acc1(xp + iy * wd, wc[i * kw + j], row, jr[3 * j],
                                      jr[3 * j + 1], sw, jr[3 * j + 2])
                _epilogue(row, ow, bias[ch], act, lo, hi, slopes[ch])
    finally:
        free(jr)
