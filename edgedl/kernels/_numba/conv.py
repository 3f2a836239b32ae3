"""numba twins of edgedl.kernels._ref.conv (same names and arguments; see there for shapes).

Every loop walks a tap's valid output range (computed once, ``_tap_range``), so there are no
bounds checks in the inner loops and stride-1 rows vectorise.
"""
import numpy as np
from numba import prange

from edgedl._config import njit


@njit
def _tap_range(n_src, n_dst, stride, off):
    """[lo, hi): destinations o with 0 <= o*stride + off < n_src (o < n_dst)."""
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    last = n_src - 1 - off
    hi = 0 if last < 0 else min(n_dst, last // stride + 1)
    return lo, max(lo, hi)


@njit
def _epilogue(v, b, act, lo, hi, s):
    """In place on the 1-D v: v = act(v + b); lo, hi, s already of v's dtype."""
    n = v.shape[0]
    one = s * 0 + 1
    if act == 0:
        for k in range(n):
            v[k] += b
    elif act == 1:
        for k in range(n):
            v[k] = min(max(v[k] + b, lo), hi)
    elif act == 2:
        for k in range(n):
            t = v[k] + b
            v[k] = t if t >= 0 else t * s
    elif act == 3:
        for k in range(n):
            v[k] = min(max(lo * (v[k] + b) + hi, 0), one)
    elif act == 4:
        sixth = one / 6
        half = one / 2
        for k in range(n):
            t = v[k] + b
            v[k] = t * min(max(t * sixth + half, 0), one)
    elif act == 5:
        for k in range(n):
            v[k] = one / (one + np.exp(-(v[k] + b)))
    elif act == 6:
        for k in range(n):
            t = v[k] + b
            v[k] = t / (one + np.exp(-t))
    elif act == 7:
        for k in range(n):
            v[k] = np.tanh(v[k] + b)


@njit
def _params(dtype_like, p0, p1):
    prm = np.empty(2, dtype_like.dtype)   # p0, p1 in the array's dtype (no float64 math)
    prm[0] = p0
    prm[1] = p1
    return prm[0], prm[1]


@njit(parallel=True)
def bias_act(y, bias, act, p0, p1, slopes):
    n, m, _ = y.shape
    lo, hi = _params(y, p0, p1)
    for q in prange(n * m):
        i, c = q // m, q % m
        _epilogue(y[i, c], bias[c], act, lo, hi, slopes[c])


@njit(parallel=True)
def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):
    c, h, w = x.shape
    for ch in prange(c):
        for i in range(kh):
            for j in range(kw):
                r = (ch * kh + i) * kw + j
                off = j * dw - pw
                lo, hi = _tap_range(w, ow, sw, off)
                for oy in range(oh):
                    dst = cols[r, oy * ow:(oy + 1) * ow]
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= h:
                        dst[:] = 0
                        continue
                    src = x[ch, iy]
                    for ox in range(lo):
                        dst[ox] = 0
                    if sw == 1:
                        dst[lo:hi] = src[lo + off:hi + off]
                    else:
                        for ox in range(lo, hi):
                            dst[ox] = src[ox * sw + off]
                    for ox in range(hi, ow):
                        dst[ox] = 0


@njit(parallel=True)
def col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, ih, iw, out):
    m, oh, ow = out.shape
    for mm in prange(m):
        for i in range(kh):
            for j in range(kw):
                r = (mm * kh + i) * kw + j
                off = j * dw - pw
                lo, hi = _tap_range(ow, iw, sw, off)
                for y in range(ih):
                    oy = y * sh - ph + i * dh
                    if oy < 0 or oy >= oh:
                        continue
                    src = cols[r, y * iw:(y + 1) * iw]
                    dst = out[mm, oy]
                    for xx in range(lo, hi):
                        dst[xx * sw + off] += src[xx]


# Inner loops index views with a zero-based induction variable (``for k in range(n)``): numba
# wraps negative indices, and only an index LLVM can prove non-negative loses that branch
# and vectorises.

@njit
def _dw_row(xp, w, row, oy, sh, sw, ph, dh, dw, jlo, jhi, joff, h):
    """One output row of one channel, any kernel: row = sum over taps, tap by tap."""
    kh, kw = w.shape
    row[:] = 0
    for i in range(kh):
        iy = oy * sh - ph + i * dh
        if iy < 0 or iy >= h:
            continue
        for j in range(kw):
            lo, hi = jlo[j], jhi[j]
            if hi <= lo:
                continue
            wv = w[i, j]
            s = xp[iy, lo * sw + joff[j]:(hi - 1) * sw + joff[j] + 1:sw]
            r = row[lo:hi]
            for k in range(hi - lo):
                r[k] += wv * s[k]


@njit
def _acc3(src, w, row, lo, hi, sw, off, dw):
    """row[lo:hi] += the 3 taps of one kernel row (every tap inside for those columns)."""
    w0, w1, w2 = w[0], w[1], w[2]
    n = hi - lo
    a = lo * sw + off
    r = row[lo:hi]
    if sw == 1:
        s0, s1, s2 = src[a:a + n], src[a + dw:a + dw + n], src[a + 2 * dw:a + 2 * dw + n]
    else:
        e = a + (n - 1) * sw + 1
        s0, s1, s2 = src[a:e:sw], src[a + dw:e + dw:sw], src[a + 2 * dw:e + 2 * dw:sw]
    for k in range(n):
        r[k] += w0 * s0[k] + w1 * s1[k] + w2 * s2[k]


@njit
def _acc5(src, w, row, lo, hi, sw, off, dw):
    w0, w1, w2, w3, w4 = w[0], w[1], w[2], w[3], w[4]
    n = hi - lo
    a = lo * sw + off
    e = a + (n - 1) * sw + 1
    r = row[lo:hi]
    s0, s1, s2 = src[a:e:sw], src[a + dw:e + dw:sw], src[a + 2 * dw:e + 2 * dw:sw]
    s3, s4 = src[a + 3 * dw:e + 3 * dw:sw], src[a + 4 * dw:e + 4 * dw:sw]
    for k in range(n):
        r[k] += w0 * s0[k] + w1 * s1[k] + w2 * s2[k] + w3 * s3[k] + w4 * s4[k]


@njit
def _full3(x0, x1, x2, w, r):
    """r[k] = the whole 3x3 window (stride 1, dilation 1; rows x0..x2 start at column 0 of
    the window): 9 FMAs per store."""
    w0, w1, w2, w3, w4, w5 = w[0, 0], w[0, 1], w[0, 2], w[1, 0], w[1, 1], w[1, 2]
    w6, w7, w8 = w[2, 0], w[2, 1], w[2, 2]
    for k in range(r.shape[0]):
        r[k] = (w0 * x0[k] + w1 * x0[k + 1] + w2 * x0[k + 2]
                + w3 * x1[k] + w4 * x1[k + 1] + w5 * x1[k + 2]
                + w6 * x2[k] + w7 * x2[k + 1] + w8 * x2[k + 2])


@njit
def _full5(x0, x1, x2, x3, x4, w, r):
    for k in range(r.shape[0]):
        acc = w[0, 0] * x0[k] + w[0, 1] * x0[k + 1] + w[0, 2] * x0[k + 2] \
            + w[0, 3] * x0[k + 3] + w[0, 4] * x0[k + 4]
        acc += w[1, 0] * x1[k] + w[1, 1] * x1[k + 1] + w[1, 2] * x1[k + 2] \
            + w[1, 3] * x1[k + 3] + w[1, 4] * x1[k + 4]
        acc += w[2, 0] * x2[k] + w[2, 1] * x2[k + 1] + w[2, 2] * x2[k + 2] \
            + w[2, 3] * x2[k + 3] + w[2, 4] * x2[k + 4]
        acc += w[3, 0] * x3[k] + w[3, 1] * x3[k + 1] + w[3, 2] * x3[k + 2] \
            + w[3, 3] * x3[k + 3] + w[3, 4] * x3[k + 4]
        r[k] = acc + w[4, 0] * x4[k] + w[4, 1] * x4[k + 1] + w[4, 2] * x4[k + 2] \
            + w[4, 3] * x4[k + 3] + w[4, 4] * x4[k + 4]


@njit(parallel=True)
def depthwise_conv2d(x, w, bias, sh, sw, ph, pw, dh, dw, act, p0, p1, slopes, out):
    n, c, h, wd = x.shape
    kh, kw = w.shape[1], w.shape[2]
    oh, ow = out.shape[2], out.shape[3]
    lo, hi = _params(x, p0, p1)
    jlo = np.empty(kw, np.int64)
    jhi = np.empty(kw, np.int64)
    joff = np.empty(kw, np.int64)
    for j in range(kw):
        joff[j] = j * dw - pw
        jlo[j], jhi[j] = _tap_range(wd, ow, sw, joff[j])
    # 3- and 5-wide kernels: taps summed in registers on the interior columns [xlo, xhi)
    # (every tap inside), the few border columns one by one
    xlo, xhi = jlo[0], jhi[kw - 1]
    fast = (kw == 3 or kw == 5) and xlo < xhi
    unit = kh == kw and sw == 1 and dh == 1 and dw == 1
    m = xhi - xlo
    a = xlo - pw                       # first input column of the interior windows
    for q in prange(n * c):
        b, ch = q // c, q % c
        xp = x[b, ch]
        wc = w[ch]
        for oy in range(oh):
            row = out[b, ch, oy]
            iy = oy * sh - ph
            if fast and unit and iy >= 0 and iy + kh <= h:
                if kw == 3:
                    _full3(xp[iy, a:a + m + 2], xp[iy + 1, a:a + m + 2],
                           xp[iy + 2, a:a + m + 2], wc, row[xlo:xhi])
                else:
                    _full5(xp[iy, a:a + m + 4], xp[iy + 1, a:a + m + 4],
                           xp[iy + 2, a:a + m + 4], xp[iy + 3, a:a + m + 4],
                           xp[iy + 4, a:a + m + 4], wc, row[xlo:xhi])
            elif fast:
                row[xlo:xhi] = 0
                for i in range(kh):
                    iy = oy * sh - ph + i * dh
                    if 0 <= iy < h:
                        if kw == 3:
                            _acc3(xp[iy], wc[i], row, xlo, xhi, sw, -pw, dw)
                        else:
                            _acc5(xp[iy], wc[i], row, xlo, xhi, sw, -pw, dw)
            if fast:
                for ox in range(0, xlo):
                    row[ox] = _dw_point(xp, wc, oy, ox, sh, sw, ph, pw, dh, dw, h, wd)
                for ox in range(xhi, ow):
                    row[ox] = _dw_point(xp, wc, oy, ox, sh, sw, ph, pw, dh, dw, h, wd)
            else:
                _dw_row(xp, wc, row, oy, sh, sw, ph, dh, dw, jlo, jhi, joff, h)
            _epilogue(row, bias[ch], act, lo, hi, slopes[ch])


@njit
def _dw_point(xp, w, oy, ox, sh, sw, ph, pw, dh, dw, h, wd):
    kh, kw = w.shape
    acc = w[0, 0] * 0
    for i in range(kh):
        iy = oy * sh - ph + i * dh
        if iy < 0 or iy >= h:
            continue
        for j in range(kw):
            ix = ox * sw - pw + j * dw
            if 0 <= ix < wd:
                acc += w[i, j] * xp[iy, ix]
    return acc
