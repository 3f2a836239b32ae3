"""numba twins of edgedl.kernels._ref.conv (same names and arguments; see there for shapes).

im2col / col2im walk each tap's valid output range (``_tap_range``), so inner loops have no
bounds checks; depthwise reads a zero-bordered copy of each plane.
"""
import types

import numpy as np
from numba import prange

from edgedl import _config
from .. import _gemm
from ._table import EPILOGUE, njit

# the conv epilogue codes (edgedl.kernels.activation_table; see _table for numba's cache)
_NONE, _CLIP, _PRELU = EPILOGUE["none"], EPILOGUE["clip"], EPILOGUE["prelu"]
_HSIG, _HSWISH = EPILOGUE["hard_sigmoid"], EPILOGUE["hard_swish"]
_SIGMOID, _SILU, _TANH = EPILOGUE["sigmoid"], EPILOGUE["silu"], EPILOGUE["tanh"]


def _both(fn):
    """(serial, parallel) compilations of ``fn``; distinct names keep their caches apart."""
    ser = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                             fn.__defaults__, fn.__closure__)
    ser.__qualname__ = fn.__qualname__ + "_serial"
    return njit(ser), njit(parallel=True)(fn)


@njit
def _tap_range(n_src, n_dst, stride, off):
    """[lo, hi): destinations o with 0 <= o*stride + off < n_src (o < n_dst)."""
    lo = 0 if off >= 0 else min(n_dst, (-off + stride - 1) // stride)
    last = n_src - 1 - off
    hi = 0 if last < 0 else min(n_dst, last // stride + 1)
    return lo, max(lo, hi)


@njit
def _epilogue(v, b, act, lo, hi, s):
    """In place on the 1-D v: v = act(v + b); lo, hi, s already of v's dtype."""
    n = v.shape[0]
    one = s * 0 + 1
    if act == _NONE:
        for k in range(n):
            v[k] += b
    elif act == _CLIP:
        for k in range(n):
            v[k] = min(max(v[k] + b, lo), hi)
    elif act == _PRELU:
        for k in range(n):
            t = v[k] + b
            v[k] = t if t >= 0 else t * s
    elif act == _HSIG:
        for k in range(n):
            v[k] = min(max(lo * (v[k] + b) + hi, 0), one)
    elif act == _HSWISH:
        sixth = one / 6
        half = one / 2
        for k in range(n):
            t = v[k] + b
            v[k] = t * min(max(t * sixth + half, 0), one)
    elif act == _SIGMOID:
        for k in range(n):
            v[k] = one / (one + np.exp(-(v[k] + b)))
    elif act == _SILU:
        for k in range(n):
            t = v[k] + b
            v[k] = t / (one + np.exp(-t))
    elif act == _TANH:
        for k in range(n):
            v[k] = np.tanh(v[k] + b)


@njit
def _params(dtype_like, p0, p1):
    prm = np.empty(2, dtype_like.dtype)   # p0, p1 in the array's dtype (no float64 math)
    prm[0] = p0
    prm[1] = p1
    return prm[0], prm[1]


def _bias_act(y, bias, act, p0, p1, slopes):
    n, m, _ = y.shape
    lo, hi = _params(y, p0, p1)
    for q in prange(n * m):
        i, c = q // m, q % m
        _epilogue(y[i, c], bias[c], act, lo, hi, slopes[c])


def _im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):
    c, h, w = x.shape
    sw1 = max(sw, 1)
    for r in prange(c * kh * kw):
        ch, i, j = r // (kh * kw), (r // kw) % kh, r % kw
        off = j * dw - pw
        lo, hi = _tap_range(w, ow, sw, off)
        lo, hi = max(lo, 0), max(hi, 0)
        s0 = max(lo * sw + off, 0)
        crow, xc = cols[r], x[ch]
        # no views per row and indices that are visibly >= 0 (max): numba's negative-index
        # wrapping then vanishes and the copies vectorise
        for oy in range(oh):
            base = max(oy * ow, 0)
            iy = oy * sh - ph + i * dh
            if iy < 0 or iy >= h:
                for t in range(ow):
                    crow[base + t] = 0
                continue
            for t in range(lo):
                crow[base + t] = 0
            d0 = base + lo
            if sw == 1:
                for t in range(hi - lo):
                    crow[d0 + t] = xc[iy, s0 + t]
            else:
                for t in range(hi - lo):
                    crow[d0 + t] = xc[iy, s0 + t * sw1]
            d1 = base + hi
            for t in range(ow - hi):
                crow[d1 + t] = 0


def _col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, ih, iw, out):
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
def _acc3(s0, s1, s2, w, r):
    """r[k] += the 3 taps of one kernel row, each tap's inputs a contiguous slice."""
    w0, w1, w2 = w[0], w[1], w[2]
    for k in range(r.shape[0]):
        r[k] += w0 * s0[k] + w1 * s1[k] + w2 * s2[k]


@njit
def _acc5(s0, s1, s2, s3, s4, w, r):
    w0, w1, w2, w3, w4 = w[0], w[1], w[2], w[3], w[4]
    for k in range(r.shape[0]):
        r[k] += w0 * s0[k] + w1 * s1[k] + w2 * s2[k] + w3 * s3[k] + w4 * s4[k]


@njit
def _acc1(s0, wv, r):
    for k in range(r.shape[0]):
        r[k] += wv * s0[k]


@njit
def _full3(xp, r0, w, o, oy):
    """o[oy, k] = the whole 3x3 window at stride 1 (xp: the padded plane, phase axis of 1).

    Planes and row numbers rather than row views: a view per row costs reference counting;
    the loop-invariant indices are hoisted, the k + j ones are provably >= 0 (vectorises).
    """
    w0, w1, w2, w3, w4, w5 = w[0, 0], w[0, 1], w[0, 2], w[1, 0], w[1, 1], w[1, 2]
    w6, w7, w8 = w[2, 0], w[2, 1], w[2, 2]
    for k in range(o.shape[1]):
        o[oy, k] = (w0 * xp[r0, 0, k] + w1 * xp[r0, 0, k + 1] + w2 * xp[r0, 0, k + 2]
                    + w3 * xp[r0 + 1, 0, k] + w4 * xp[r0 + 1, 0, k + 1]
                    + w5 * xp[r0 + 1, 0, k + 2] + w6 * xp[r0 + 2, 0, k]
                    + w7 * xp[r0 + 2, 0, k + 1] + w8 * xp[r0 + 2, 0, k + 2])


@njit
def _full5(xp, r0, w, o, oy):
    for k in range(o.shape[1]):
        acc = (w[0, 0] * xp[r0, 0, k] + w[0, 1] * xp[r0, 0, k + 1] + w[0, 2] * xp[r0, 0, k + 2]
               + w[0, 3] * xp[r0, 0, k + 3] + w[0, 4] * xp[r0, 0, k + 4])
        for i in range(1, 5):
            acc += (w[i, 0] * xp[r0 + i, 0, k] + w[i, 1] * xp[r0 + i, 0, k + 1]
                    + w[i, 2] * xp[r0 + i, 0, k + 2] + w[i, 3] * xp[r0 + i, 0, k + 3]
                    + w[i, 4] * xp[r0 + i, 0, k + 4])
        o[oy, k] = acc


@njit
def _full3s2(xp, r0, w, o, oy):
    """Stride 2: padded column 2k + j is phase j % 2, index k + j // 2 (contiguous in k)."""
    for k in range(o.shape[1]):
        acc = w[0, 0] * xp[r0, 0, k] + w[0, 1] * xp[r0, 1, k] + w[0, 2] * xp[r0, 0, k + 1]
        for i in range(1, 3):
            acc += (w[i, 0] * xp[r0 + i, 0, k] + w[i, 1] * xp[r0 + i, 1, k]
                    + w[i, 2] * xp[r0 + i, 0, k + 1])
        o[oy, k] = acc


@njit
def _full5s2(xp, r0, w, o, oy):
    for k in range(o.shape[1]):
        acc = (w[0, 0] * xp[r0, 0, k] + w[0, 1] * xp[r0, 1, k] + w[0, 2] * xp[r0, 0, k + 1]
               + w[0, 3] * xp[r0, 1, k + 1] + w[0, 4] * xp[r0, 0, k + 2])
        for i in range(1, 5):
            acc += (w[i, 0] * xp[r0 + i, 0, k] + w[i, 1] * xp[r0 + i, 1, k]
                    + w[i, 2] * xp[r0 + i, 0, k + 1] + w[i, 3] * xp[r0 + i, 1, k + 1]
                    + w[i, 4] * xp[r0 + i, 0, k + 2])
        o[oy, k] = acc


@njit
def _tap(pr, sw, c, n):
    """The n inputs of a tap at padded column offset c, from a phase-split row
    pr[p, k] = padded[sw * k + p]: contiguous whatever the stride."""
    base = c // sw
    return pr[c - base * sw, base:base + n]


# _depthwise_conv2d's helpers work on a whole plane: called per output row, their array
# arguments cost more than a narrow row's work (1.8x on 20x20 planes, 1.1-1.2x on 80x80).
@njit
def _phase_split(xs, xp, ph, pw, sw, rows_in, cols_in):
    """xp[ph + r, p, k] = padded row r's column sw*k + p (xp zeroed before): each input row's
    columns by phase, so that every tap reads a contiguous slice."""
    # no views per row, indices visibly >= 0 (max): the copies vectorise
    pw0, sw1 = max(pw, 0), max(sw, 1)
    for r in range(rows_in):
        if sw == 1:
            for t in range(cols_in):
                xp[ph + r, 0, pw0 + t] = xs[r, t]
            continue
        for p in range(sw):          # input columns landing in phase p
            k0 = max((p - pw) % sw, 0)
            d0 = max((pw + k0) // sw, 0)
            for t in range((cols_in - 1 - k0) // sw + 1):
                xp[ph + r, p, d0 + t] = xs[r, k0 + t * sw1]


@njit
def _plane_rows(xp, wc, o, sh, kh, kw, dh, dw, sw, full, short, tmp, b, act, lo, hi, s):
    """Every output row of one plane from its (padded, phase-split) input xp, then the
    epilogue: whole 3x3 / 5x5 windows at stride 1 or 2 (a short stride-2 row computed 64 wide
    into tmp and its first outputs copied out), else kernel row by kernel row."""
    ow = o.shape[1]
    for oy in range(o.shape[0]):
        r0 = oy * sh
        row = o[oy]
        if full:
            if kw == 3:
                if sw == 1:
                    _full3(xp, r0, wc, o, oy)
                elif short:
                    _full3s2(xp, r0, wc, tmp, 0)
                else:
                    _full3s2(xp, r0, wc, o, oy)
            elif sw == 1:
                _full5(xp, r0, wc, o, oy)
            elif short:
                _full5s2(xp, r0, wc, tmp, 0)
            else:
                _full5s2(xp, r0, wc, o, oy)
            if short:
                for t in range(ow):
                    row[t] = tmp[0, t]
        else:
            row[:] = 0
            for i in range(kh):
                pr = xp[r0 + i * dh]
                if kw == 3:
                    _acc3(_tap(pr, sw, 0, ow), _tap(pr, sw, dw, ow), _tap(pr, sw, 2 * dw, ow),
                          wc[i], row)
                elif kw == 5:
                    _acc5(_tap(pr, sw, 0, ow), _tap(pr, sw, dw, ow), _tap(pr, sw, 2 * dw, ow),
                          _tap(pr, sw, 3 * dw, ow), _tap(pr, sw, 4 * dw, ow), wc[i], row)
                else:
                    for j in range(kw):
                        _acc1(_tap(pr, sw, j * dw, ow), wc[i, j], row)
        _epilogue(row, b, act, lo, hi, s)


def _depthwise_conv2d(x, w, bias, sh, sw, ph, pw, dh, dw, act, p0, p1, slopes, out):
    """Each channel plane is copied into a zero-bordered, column-phase-split buffer
    P[r, p, k] = padded[r, sw*k + p] (skipped when unpadded at stride 1), so every tap reads a
    contiguous slice and every output row is a branch-free vectorised pass."""
    n, c, h, wd = x.shape
    kh, kw = w.shape[1], w.shape[2]
    oh, ow = out.shape[2], out.shape[3]
    lo, hi = _params(x, p0, p1)
    # the padded input region the outputs read: rows [-ph, hp - ph), columns [-pw, wp - pw)
    hp = (oh - 1) * sh + (kh - 1) * dh + 1
    wp = (ow - 1) * sw + (kw - 1) * dw + 1
    wq = (wp + sw - 1) // sw
    rows_in, cols_in = min(h, hp - ph), min(wd, wp - pw)
    copy = sw > 1 or ph > 0 or pw > 0 or hp > h + ph or wp > wd + pw
    full = sw <= 2 and dh == 1 and dw == 1 and kh == kw and (kw == 3 or kw == 5)
    # At stride 2, rows shorter than LLVM's vector loop (32-64 outputs: it interleaves) ran
    # scalar: they are computed 64 wide into a scratch row (the buffer has zero columns in
    # excess) and the first ow copied out (1.5x faster on 20-wide rows).
    short = full and sw == 2 and ow < 64
    nr = 64 if short else ow
    if short:
        wq = max(wq, nr + (kw - 1) // sw)
    for q in prange(n * c):
        b, ch = q // c, q % c
        tmp = np.empty((1, nr if short else 0), x.dtype)
        if copy:
            xp = np.zeros((hp, sw, wq), x.dtype)
            _phase_split(x[b, ch], xp, ph, pw, sw, rows_in, cols_in)
        else:
            xp = x[b, ch].reshape((h, 1, wd))
        _plane_rows(xp, w[ch], out[b, ch], sh, kh, kw, dh, dw, sw, full, short, tmp, bias[ch],
                    act, lo, hi, slopes[ch])


_bias_act_s, _bias_act_p = _both(_bias_act)


def bias_act(y, bias, act, p0, p1, slopes):
    (_bias_act_p if y.size >= _config.NUMBA_PAR_WORK else _bias_act_s)(y, bias, act, p0, p1, slopes)


_im2col_s, _im2col_p = _both(_im2col)


def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):
    (_im2col_p if cols.size >= _config.NUMBA_PAR_WORK else _im2col_s)(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols)


_col2im_s, _col2im_p = _both(_col2im)


def col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, ih, iw, out):
    (_col2im_p if cols.size >= _config.NUMBA_PAR_WORK else _col2im_s)(cols, kh, kw, sh, sw, ph, pw, dh, dw, ih, iw, out)


def pack_conv_weights(w):
    """(M, K) weights -> conv_gemm's operand (NumPy's BLAS reads them as they are)."""
    return np.ascontiguousarray(w)


def conv_gemm(x, wp, bias, kh, kw, sh, sw, ph, pw, dh, dw, act, p0, p1, slopes, y):
    # NumPy's BLAS for the GEMM (numba's np.dot would need SciPy), numba for the rest
    _gemm.conv_gemm_blocked(im2col, x, wp, kh, kw, sh, sw, ph, pw, dh, dw, y)
    if _gemm.needs_epilogue(bias, act):
        bias_act(y.reshape(1, y.shape[0], -1), bias, act, p0, p1, slopes)


_depthwise_conv2d_s, _depthwise_conv2d_p = _both(_depthwise_conv2d)


def depthwise_conv2d(x, w, bias, sh, sw, ph, pw, dh, dw, act, p0, p1, slopes, out):
    (_depthwise_conv2d_p if out.size * w.shape[1] * w.shape[2] >= _config.NUMBA_PAR_WORK else _depthwise_conv2d_s)(x, w, bias, sh, sw, ph, pw, dh, dw, act, p0, p1, slopes, out)
