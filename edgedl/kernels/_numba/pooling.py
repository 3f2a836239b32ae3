"""numba twins of edgedl.kernels._ref.pooling (same names and arguments; see there for semantics).

Max and average pooling are separable: a window's max (sum) is the max (sum) over its rows of
the max (sum) over its columns. Each plane is done in two passes: a horizontal pass (every
input row -> one value per output column, into a per-plane scratch (H, OW)) and a vertical
pass over the scratch rows. That costs kh + kw instead of kh * kw operations per output, and
every inner loop walks a precomputed valid range (no padding checks) over contiguous memory.
Planes (N * C) run in parallel.
"""
import numpy as np
from numba import prange

from edgedl._config import njit


@njit
def _tap_range(n_in, n_out, stride, off):
    """[lo, hi): outputs o < n_out whose tap reads o*stride + off inside [0, n_in)."""
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    last = n_in - 1 - off
    hi = 0 if last < 0 else min(n_out, last // stride + 1)
    return lo, max(lo, hi)


@njit
def _nanmax(acc, v):
    # NaN-propagating max: a NaN in v enters, a NaN in acc stays (v > NaN is False).
    return v if (v > acc or v != v) else acc


@njit
def _valid_counts(n_in, n_out, k, stride, pad_begin, pad_end, dil):
    """Per output index: number of in-image taps, and of taps inside the padded extent."""
    valid = np.zeros(n_out, dtype=np.int64)
    padded = np.zeros(n_out, dtype=np.int64)
    for o in range(n_out):
        start = o * stride - pad_begin
        for i in range(k):
            t = start + i * dil
            if 0 <= t < n_in:
                valid[o] += 1
            if -pad_begin <= t < n_in + pad_end:
                padded[o] += 1
    return valid, padded


@njit
def _hpass(row, dst, kw, sw, pl, dw, is_max):
    """dst[o] = max (or sum) over the in-image taps j of row[o*sw + j*dw - pl]."""
    n_in = row.shape[0]
    n_out = dst.shape[0]
    init = -np.inf if is_max else 0.0
    for o in range(n_out):
        dst[o] = init
    for j in range(kw):
        off = j * dw - pl
        lo, hi = _tap_range(n_in, n_out, sw, off)
        if is_max:
            if sw == 1:
                for o in range(lo, hi):
                    dst[o] = _nanmax(dst[o], row[o + off])
            else:
                for o in range(lo, hi):
                    dst[o] = _nanmax(dst[o], row[o * sw + off])
        else:
            if sw == 1:
                for o in range(lo, hi):
                    dst[o] += row[o + off]
            else:
                for o in range(lo, hi):
                    dst[o] += row[o * sw + off]


@njit
def _plane(src, dst, tmp, kh, kw, sh, sw, pt, pl, dh, dw, is_max):
    """One (H, W) plane -> (OH, OW): horizontal pass into tmp (H, OW), then vertical pass."""
    h = src.shape[0]
    oh, ow = dst.shape
    for r in range(h):
        _hpass(src[r], tmp[r], kw, sw, pl, dw, is_max)
    init = -np.inf if is_max else 0.0
    for o in range(oh):
        d = dst[o]
        for c in range(ow):
            d[c] = init
        start = o * sh - pt
        for i in range(kh):
            r = start + i * dh
            if 0 <= r < h:
                t = tmp[r]
                if is_max:
                    for c in range(ow):
                        d[c] = _nanmax(d[c], t[c])
                else:
                    for c in range(ow):
                        d[c] += t[c]


@njit(parallel=True)
def max_pool2d(x, kernel_shape, strides, pads, dilations, out):
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = kernel_shape[0], kernel_shape[1]
    sh, sw = strides[0], strides[1]
    dh, dw = dilations[0], dilations[1]
    pt, pl = pads[0], pads[1]
    vh = _valid_counts(h, oh, kh, sh, pt, pads[2], dh)[0]
    vw = _valid_counts(w, ow, kw, sw, pl, pads[3], dw)[0]
    lowest = np.finfo(x.dtype).min
    for p in prange(n * c):
        b, ch = p // c, p % c
        tmp = np.empty((h, ow), dtype=x.dtype)
        dst = out[b, ch]
        _plane(x[b, ch], dst, tmp, kh, kw, sh, sw, pt, pl, dh, dw, True)
        # windows without any in-image tap (only possible with dilations): lowest, as ORT
        for r in range(oh):
            for q in range(ow):
                if vh[r] == 0 or vw[q] == 0:
                    dst[r, q] = lowest
    return out


@njit(parallel=True)
def avg_pool2d(x, kernel_shape, strides, pads, dilations, count_include_pad, out):
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = kernel_shape[0], kernel_shape[1]
    sh, sw = strides[0], strides[1]
    dh, dw = dilations[0], dilations[1]
    pt, pl = pads[0], pads[1]
    vh, ph = _valid_counts(h, oh, kh, sh, pt, pads[2], dh)
    vw, pw = _valid_counts(w, ow, kw, sw, pl, pads[3], dw)
    # 1 / divisor factorises over the two axes; 0 where the window has no in-image tap
    sh_ = np.zeros(oh, dtype=x.dtype)
    sw_ = np.zeros(ow, dtype=x.dtype)
    for r in range(oh):
        if vh[r] > 0:
            sh_[r] = 1.0 / (ph[r] if count_include_pad else vh[r])
    for q in range(ow):
        if vw[q] > 0:
            sw_[q] = 1.0 / (pw[q] if count_include_pad else vw[q])
    for p in prange(n * c):
        b, ch = p // c, p % c
        tmp = np.empty((h, ow), dtype=x.dtype)
        dst = out[b, ch]
        _plane(x[b, ch], dst, tmp, kh, kw, sh, sw, pt, pl, dh, dw, False)
        for r in range(oh):
            s = sh_[r]
            d = dst[r]
            for q in range(ow):
                d[q] *= s * sw_[q]
    return out


@njit(parallel=True)
def global_avg_pool2d(x, out):
    n, c, h, w = x.shape
    inv = 1.0 / (h * w)
    for p in prange(n * c):
        b, ch = p // c, p % c
        s = 0.0   # float64 accumulator (reassoc lets numba vectorise it)
        for r in range(h):
            row = x[b, ch, r]
            for q in range(w):
                s += row[q]
        out[b, ch, 0, 0] = s * inv
    return out


@njit(parallel=True)
def global_max_pool2d(x, out):
    n, c, h, w = x.shape
    for p in prange(n * c):
        b, ch = p // c, p % c
        m = x[b, ch, 0, 0]
        for r in range(h):
            row = x[b, ch, r]
            for q in range(w):
                m = _nanmax(m, row[q])
        out[b, ch, 0, 0] = m
    return out
