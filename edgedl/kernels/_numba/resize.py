"""numba twins of edgedl.kernels._ref.resize (same names and arguments)."""
import numpy as np
from numba import prange

from edgedl import _config
from edgedl._config import njit
from edgedl.kernels._numba.conv import _both


def _resize_nearest(x, ih, iw, out):
    n, c = x.shape[0], x.shape[1]
    oh, ow = out.shape[2], out.shape[3]
    for q in prange(n * c):
        b, ch = q // c, q % c
        for o in range(oh):
            dst = out[b, ch, o]
            if o > 0 and ih[o] == ih[o - 1]:
                # upsampling repeats source rows: copy the row just written (in cache)
                prev = out[b, ch, o - 1]
                for p in range(ow):
                    dst[p] = prev[p]
                continue
            src = x[b, ch, ih[o]]
            for p in range(ow):
                dst[p] = src[iw[p]]


def _resize_taps(x, ih, wh, iw, ww, out):
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = ih.shape[1], iw.shape[1]
    for q in prange(n * c):
        b, ch = q // c, q % c
        tmp = np.empty(w, x.dtype)
        for o in range(oh):
            # vertical blend of the kh source rows (contiguous, vectorises) ...
            src = x[b, ch, ih[o, 0]]
            wt = wh[o, 0]
            for k in range(w):
                tmp[k] = wt * src[k]
            for a in range(1, kh):
                src = x[b, ch, ih[o, a]]
                wt = wh[o, a]
                for k in range(w):
                    tmp[k] += wt * src[k]
            # ... then the horizontal taps
            dst = out[b, ch, o]
            for p in range(ow):
                acc = ww[p, 0] * tmp[iw[p, 0]]
                for a in range(1, kw):
                    acc += ww[p, a] * tmp[iw[p, a]]
                dst[p] = acc


_resize_nearest_s, _resize_nearest_p = _both(_resize_nearest)


def resize_nearest(x, ih, iw, out):
    (_resize_nearest_p if out.size >= _config.NUMBA_PAR_WORK else _resize_nearest_s)(x, ih, iw, out)


_resize_taps_s, _resize_taps_p = _both(_resize_taps)


def resize_taps(x, ih, wh, iw, ww, out):
    (_resize_taps_p if out.size * (ih.shape[1] + iw.shape[1]) >= _config.NUMBA_PAR_WORK else _resize_taps_s)(x, ih, wh, iw, ww, out)


@njit
def resize_linear_u8(x, ih, wh, iw, ww, chan, a, b, out):
    w3 = x.shape[1] * x.shape[2]
    nc = x.shape[2]
    oh, ow = out.shape[1], out.shape[2]
    flat = x.reshape(x.shape[0], w3)
    tmp = np.empty(w3, out.dtype)
    for o in range(oh):
        # vertical blend of the two source rows, all channels interleaved (contiguous) ...
        s0, s1 = flat[ih[o, 0]], flat[ih[o, 1]]
        w0, w1 = wh[o, 0], wh[o, 1]
        for k in range(w3):
            tmp[k] = w0 * s0[k] + w1 * s1[k]
        # ... then the horizontal taps of each output plane, with its channel and affine
        for c in range(out.shape[0]):
            sc, ac, bc = chan[c], a[c], b[c]
            dst = out[c, o]
            for p in range(ow):
                dst[p] = (ww[p, 0] * tmp[iw[p, 0] * nc + sc] +
                          ww[p, 1] * tmp[iw[p, 1] * nc + sc]) * ac + bc
