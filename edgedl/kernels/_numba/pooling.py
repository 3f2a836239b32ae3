"""numba twins of edgedl.kernels._ref.pooling (same names and arguments; see there for semantics).

Same scheme as the Cython twin: max and average pooling are separable, so per output row a
vertical pass folds the window's in-image input rows into a scratch row (padded with -inf / 0,
so the horizontal pass needs no bounds checks), then a horizontal pass folds kw shifted runs
of it (for strides > 1, runs of its stride phases). Each loop folds up to three sources (one
store per three loads). Max uses a plain compare (vectorises to maxps) on planes without
NaN/inf and the NaN-propagating max otherwise. Planes (N * C) run in parallel.

The fold and plane functions exist once per operation (sum, max, NaN-max), made by small
factories, so each loop is compiled with its operation known (a runtime switch inside the
loops would not vectorise) without inlining at numba's IR level (which multiplied compile
time).
"""
import numpy as np
from numba import prange

from edgedl._config import njit


@njit
def _add(a, b):
    return a + b


@njit
def _fmax(a, b):
    # max for NaN-free planes: a single maxps per vector
    return b if b > a else a


@njit
def _nanmax(acc, v):
    # NaN-propagating max: a NaN in acc stays (v > NaN is False), a NaN in v enters.
    # Two selects, no short-circuit `or`, so LLVM emits branch-free vector code.
    m = v if v > acc else acc
    return v if v != v else m


@njit
def _all_finite(v):
    """False if the 1-D v holds a NaN (or an inf: that only costs the slower exact path)."""
    acc = v.dtype.type(0)
    zero = v.dtype.type(0)
    for q in range(v.shape[0]):
        acc += v[q] * zero     # 0 for finite values, NaN for NaN and +-inf
    return acc == 0


def _make_fold(op):
    @njit
    def fold(d, t, length, src, offs, n):
        """d[t + q] = op over i < n of src[offs[i] + q] for q < length; n >= 1.

        uint64 offsets and indices (numba emits no negative-index wraparound code for them)
        and no array views (each costs atomic refcounting): plain loops LLVM vectorises.
        Three sources in the first pass, then d plus up to three more per pass (LLVM does
        not vectorise a fourth source from the same array)."""
        u = np.uint64
        t, length = u(t), u(length)
        m = min(n, 3)
        a = offs[0]
        if m == 1:
            for q in range(length):
                d[t + q] = src[a + q]
        elif m == 2:
            b = offs[1]
            for q in range(length):
                d[t + q] = op(src[a + q], src[b + q])
        else:
            b, c = offs[1], offs[2]
            for q in range(length):
                d[t + q] = op(op(src[a + q], src[b + q]), src[c + q])
        i = m
        while i < n:
            m = min(n - i, 3)
            a = offs[i]
            if m == 1:
                for q in range(length):
                    d[t + q] = op(d[t + q], src[a + q])
            elif m == 2:
                b = offs[i + 1]
                for q in range(length):
                    d[t + q] = op(op(d[t + q], src[a + q]), src[b + q])
            else:
                b, c = offs[i + 1], offs[i + 2]
                for q in range(length):
                    d[t + q] = op(op(d[t + q], src[a + q]), op(src[b + q], src[c + q]))
            i += m
    return fold


def _make_plane(fold, fill):
    @njit
    def plane(flat, dst, vpad, phases, offs, lext, kh, kw, sh, sw, pt, pl, dh, dw, h, w, oh,
              ow):
        """One plane (flat, h*w) -> dst (flat, oh*ow). vpad: padded scratch row; phases:
        scratch for its stride phases (sw > 1); offs: uint64 scratch of max(kh, kw)."""
        vpad[:] = fill
        vlen = vpad.shape[0]
        plen = phases.shape[0] // sw
        for o in range(oh):
            n_rows = 0
            for i in range(kh):
                r = o * sh - pt + i * dh
                if 0 <= r < h:
                    offs[n_rows] = r * w
                    n_rows += 1
            if n_rows == 0:     # all-padding rows (dilations only): fixed up by the caller
                vpad[lext:lext + w] = fill
            else:
                fold(vpad, lext, w, flat, offs, n_rows)
            if sw == 1:
                for j in range(kw):
                    offs[j] = lext - pl + j * dw
                fold(dst, o * ow, ow, vpad, offs, kw)
            else:
                # split vpad into its sw phases so every tap is a contiguous run:
                # vpad[t + q*sw] == phases[(t % sw) * plen + t // sw + q]
                for ph in range(sw):
                    for i in range((vlen - ph + sw - 1) // sw):
                        phases[ph * plen + i] = vpad[i * sw + ph]
                for j in range(kw):
                    t = lext - pl + j * dw
                    offs[j] = (t % sw) * plen + t // sw
                fold(dst, o * ow, ow, phases, offs, kw)
    return plane


_plane_sum = _make_plane(_make_fold(_add), 0.0)
_plane_max = _make_plane(_make_fold(_fmax), -np.inf)
_plane_nanmax = _make_plane(_make_fold(_nanmax), -np.inf)


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


@njit(parallel=True)
def _pool(x, kernel_shape, strides, pads, dilations, count_include_pad, out, is_max):
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    kh, kw = kernel_shape[0], kernel_shape[1]
    sh, sw = strides[0], strides[1]
    dh, dw = dilations[0], dilations[1]
    pt, pl = pads[0], pads[1]
    vh, ph = _valid_counts(h, oh, kh, sh, pt, pads[2], dh)
    vw, pw = _valid_counts(w, ow, kw, sw, pl, pads[3], dw)
    # 1 / divisor factorises over the two axes; 0 where the window has no in-image tap
    sch = np.zeros(oh, dtype=x.dtype)
    scw = np.zeros(ow, dtype=x.dtype)
    for r in range(oh):
        if vh[r] > 0:
            sch[r] = 1.0 / (ph[r] if count_include_pad else vh[r])
    for q in range(ow):
        if vw[q] > 0:
            scw[q] = 1.0 / (pw[q] if count_include_pad else vw[q])
    has_empty = (vh == 0).any() or (vw == 0).any()
    lowest = np.finfo(x.dtype).min
    lext = max(pl, 0)
    vlen = lext + max(w, (ow - 1) * sw + (kw - 1) * dw - pl + 1)
    xf = x.reshape((n * c, h * w))
    of = out.reshape((n * c, oh * ow))
    for p in prange(n * c):
        vpad = np.empty(vlen, dtype=x.dtype)
        phases = np.empty(sw * ((vlen + sw - 1) // sw) if sw > 1 else 0, dtype=x.dtype)
        offs = np.empty(max(kh, kw), dtype=np.uint64)
        src, dst = xf[p], of[p]
        args = (src, dst, vpad, phases, offs, lext, kh, kw, sh, sw, pt, pl, dh, dw, h, w, oh, ow)
        if not is_max:
            _plane_sum(*args)
        elif _all_finite(src):
            _plane_max(*args)
        else:
            _plane_nanmax(*args)
        if not is_max:
            for r in range(oh):
                s = sch[r]
                for q in range(ow):
                    dst[r * ow + q] *= s * scw[q]
        elif has_empty:
            # windows without any in-image tap (dilations only): lowest, as onnxruntime
            for r in range(oh):
                for q in range(ow):
                    if vh[r] == 0 or vw[q] == 0:
                        dst[r * ow + q] = lowest


@njit
def _is_2x2s2(x, kernel_shape, strides, pads, dilations, out):
    """2x2 window, stride 2, no padding, every window inside the plane (YuNet's MaxPools)."""
    return (kernel_shape[0] == 2 and kernel_shape[1] == 2 and strides[0] == 2 and
            strides[1] == 2 and dilations[0] == 1 and dilations[1] == 1 and pads[0] == 0 and
            pads[1] == 0 and 2 * out.shape[2] <= x.shape[2] and 2 * out.shape[3] <= x.shape[3])


@njit(parallel=True)
def _pool_2x2s2(x, out, is_max):
    """One pass, four loads per output; max is the exact NaN-propagating one (no per-plane
    NaN check needed), average divides by 4 (every tap is in the image)."""
    n, c, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    xf = x.reshape(n * c * h * w)
    of = out.reshape(n * c * oh * ow)
    u = np.uint64
    quarter = x.dtype.type(0.25)
    for p in prange(n * c):
        for o in range(oh):
            a = u(p * h * w + 2 * o * w)
            b = a + u(w)
            d = u(p * oh * ow + o * ow)
            if is_max:
                for q in range(u(ow)):
                    of[d + q] = _nanmax(_nanmax(xf[a + u(2) * q], xf[a + u(2) * q + u(1)]),
                                        _nanmax(xf[b + u(2) * q], xf[b + u(2) * q + u(1)]))
            else:
                for q in range(u(ow)):
                    of[d + q] = ((xf[a + u(2) * q] + xf[a + u(2) * q + u(1)]) +
                                 (xf[b + u(2) * q] + xf[b + u(2) * q + u(1)])) * quarter


@njit
def max_pool2d(x, kernel_shape, strides, pads, dilations, out):
    if _is_2x2s2(x, kernel_shape, strides, pads, dilations, out):
        _pool_2x2s2(x, out, True)
    else:
        _pool(x, kernel_shape, strides, pads, dilations, False, out, True)
    return out


@njit
def avg_pool2d(x, kernel_shape, strides, pads, dilations, count_include_pad, out):
    if _is_2x2s2(x, kernel_shape, strides, pads, dilations, out):
        _pool_2x2s2(x, out, False)
    else:
        _pool(x, kernel_shape, strides, pads, dilations, count_include_pad, out, False)
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


@njit
def _vec_max(v):
    """max of the 1-D v: one pass over blocks of 64, elementwise into 64 lanes (a plain loop
    LLVM vectorises; a select reduction would not be without nnan) that also sums v * 0
    (0 unless NaN/inf); only a plane holding NaN/inf takes a second, exact NaN pass."""
    u = np.uint64
    m = u(v.shape[0])
    m64 = m - m % u(64)
    acc = np.empty(64, dtype=v.dtype)
    chk = np.zeros(64, dtype=v.dtype)
    zero = v.dtype.type(0)
    acc[:] = v[0]
    for i in range(u(0), m64, u(64)):
        for k in range(u(64)):
            acc[k] = _fmax(acc[k], v[i + k])
            chk[k] += v[i + k] * zero
    if chk.sum() != 0:
        acc[:] = v[0]
        for i in range(u(0), m64, u(64)):
            for k in range(u(64)):
                acc[k] = _nanmax(acc[k], v[i + k])
    r = acc[0]
    for k in range(1, 64):
        r = _nanmax(r, acc[k])
    for i in range(m64, m):
        r = _nanmax(r, v[i])
    return r


@njit(parallel=True)
def global_max_pool2d(x, out):
    n, c, h, w = x.shape
    xf = x.reshape((n * c, h * w))
    for p in prange(n * c):
        out[p // c, p % c, 0, 0] = _vec_max(xf[p])
    return out
