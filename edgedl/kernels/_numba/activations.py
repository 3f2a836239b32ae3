"""numba twins of edgedl.kernels._ref.activations (same names, parameters and layouts).

numba compiles ``math.exp`` to a libm call per element, which LLVM cannot vectorise (a naive
numba sigmoid runs ~13x slower than onnxruntime's). For float32 the exp/expm1/log1p below are
the same branch-free polynomial as ``src_cy/edl_math.h`` (its numbers: activation_table.EXP_F32): a Cody-Waite reduction, a degree-6
polynomial and 2^n built from its bits with a bitcast intrinsic, so the loops vectorise. float64
keeps libm. The helpers are ``@overload``-ed per dtype, and compiled without fast-math flags
(the rounding trick needs IEEE evaluation order) while the kernels use the project's flags.
"""
import math

import numpy as np

from ..._config import load_numba

load_numba()   # edgedl's numba policy (cache dir, threading layer) before numba's modules
from llvmlite import ir  # noqa: E402
from numba.core import types  # noqa: E402
from numba.extending import intrinsic, overload  # noqa: E402

from ._table import EXP_F32, njit  # noqa: E402  (njit: cache names tagged by the table)

# float32 constants: exact small integers keep float32 arithmetic in float32 (an int literal
# would promote it to float64) and are exact in float64 kernels too.
_f = np.float32
_ZERO, _HALF, _ONE, _TWO, _THREE, _FOUR, _SIX = (_f(0), _f(0.5), _f(1), _f(2), _f(3), _f(4),
                                                  _f(6))
# the exp polynomial's numbers: one definition, also written into src_cy/edl_act_table.h
_LO, _LOG2E, _C1, _C2, _P0, _P1, _P2, _P3, _P4 = (
    _f(EXP_F32[k]) for k in ("LO", "LOG2E", "C1", "C2", "P0", "P1", "P2", "P3", "P4"))


@intrinsic
def _f32_from_bits(typingctx, i):
    """Reinterpret the low 32 bits of an integer as a float32 (LLVM bitcast, vectorisable)."""
    if not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if v.type.width > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif v.type.width < 32:
            v = builder.sext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())
    return types.float32(i), codegen


@njit(inline="always")
def _exp_parts32(x):
    """For float32 x <= 0: (s, q) with exp(x) = s * (1 + q), s = 2^n (0 below _LO)."""
    xc = x if x >= _LO else _LO
    ni = -np.int32(_HALF - xc * _LOG2E)    # round(x / ln2): truncating a value >= 0 floors it
    n = np.float32(ni)
    r = (xc - n * _C1) - n * _C2           # ln2 = C1 + C2, n * C1 exact
    r2 = r * r
    p = (_P0 + r * _P1) + r2 * ((_P2 + r * _P3) + r2 * _P4)
    q = r + r2 * p
    s = _f32_from_bits((ni + np.int32(127)) << np.int32(23))
    return (s if x >= _LO else _ZERO), q


# Python stubs, specialised per dtype by the overloads below (callable from jitted code only).
def _exp_neg(x):
    """exp(x) for x <= 0."""


def _expm1_neg(x):
    """exp(x) - 1 for x <= 0, accurate near 0."""


def _log1p01(u):
    """log(1 + u) for 0 <= u <= 1."""


@overload(_exp_neg)
def _ov_exp_neg(x):
    if x == types.float32:
        _parts = _exp_parts32

        def impl(x):
            s, q = _parts(x)
            return s * q + s
        return impl
    return lambda x: math.exp(x)


@overload(_expm1_neg)
def _ov_expm1_neg(x):
    if x == types.float32:
        _parts = _exp_parts32

        def impl(x):
            s, q = _parts(x)
            return s * q + (s - _ONE)
        return impl
    return lambda x: math.expm1(x)


@overload(_log1p01)
def _ov_log1p01(u):
    if u == types.float32:
        c = tuple(_f(1 / k) for k in (13, 11, 9, 7, 5, 3))

        def impl(u):
            # 2 atanh(z), z = u / (2 + u) <= 1/3: odd series to z^13
            z = u / (_TWO + u)
            z2 = z * z
            p = c[0]
            for k in range(1, 6):
                p = p * z2 + c[k]
            return _TWO * z + _TWO * z * z2 * p
        return impl
    return lambda u: math.log1p(u)


def _key_view(x2):
    """The bits of a float32 array as int32 (for _row_max), the array itself otherwise."""


@overload(_key_view, inline="always")
def _ov_key_view(x2):
    if x2.dtype == types.float32:
        return lambda x2: x2.view(np.int32)
    return lambda x2: x2


def _row_max(xr, br):
    """max of a contiguous 1-D row (br: its _key_view), NaN if it holds a NaN."""


_I31, _IMAX = np.int32(31), np.int32(0x7fffffff)
_KEY_INF, _KEY_NEG_INF = np.int32(0x7f800000), np.int32(-2139095041)


@overload(_row_max, inline="always")
def _ov_row_max(xr, br):
    if xr.dtype == types.float32:
        def impl(xr, br):
            # integer max over an order-preserving map of the bits: vectorises (a float max
            # reduction needs no-NaN flags); NaN / +inf anywhere are flagged separately. Every
            # step stays int32 (numba widens int32 arithmetic to int64 otherwise), and the int
            # view is taken once per array, not per row (a view per row costs more than the max)
            key = np.int32(-2147483648)
            bad = np.int32(0)
            for i in range(br.size):
                v = br[i]
                k = np.int32(v ^ np.int32((v >> _I31) & _IMAX))
                key = max(key, k)
                bad |= np.int32(k >= _KEY_INF) | np.int32(k <= _KEY_NEG_INF)
            m = _f32_from_bits(key ^ ((key >> _I31) & _IMAX))
            if bad:
                for i in range(xr.size):
                    if xr[i] != xr[i]:
                        return xr[i]
            return m
        return impl

    def impl64(xr, br):
        m = xr[0]
        for i in range(xr.size):
            v = xr[i]
            if v > m or v != v:
                m = v
        return m
    return impl64


# ----------------------------------------------------------------------------- scalar helpers
@njit
def _sig(v):
    e = _exp_neg(-abs(v))
    d = _ONE / (_ONE + e)
    return d if v >= 0 else e * d


@njit
def _sig_d(v):
    """sigmoid'(v) = e / (1 + e)^2 with e = exp(-|v|): symmetric, no cancellation."""
    e = _exp_neg(-abs(v))
    d = _ONE / (_ONE + e)
    return e * d * d


@njit
def _mish_nd(v):
    """tanh(softplus(v)) = num / den, e = exp(-|v|); returns (num, den, e)."""
    e = _exp_neg(-abs(v))
    nn = e * (e + _TWO)
    if v > 0:
        return _ONE + _TWO * e, _ONE + _TWO * e + _TWO * e * e, e
    return nn, nn + _TWO, e


# ----------------------------------------------------------------------------- forward
@njit
def relu(x, out):
    for i in range(x.size):
        v = x[i]
        out[i] = v if not v < 0 else _ZERO


@njit
def relu6(x, out):
    for i in range(x.size):
        v = x[i]
        v = _ZERO if v < 0 else v
        out[i] = _SIX if v > 6 else v


@njit
def clip(x, lo, hi, out):
    for i in range(x.size):
        v = x[i]
        v = lo if v < lo else v
        out[i] = hi if v > hi else v


@njit
def leaky_relu(x, alpha, out):
    for i in range(x.size):
        v = x[i]
        out[i] = v if not v < 0 else alpha * v


@njit
def prelu(x, slope, out):
    outer, c, inner = x.shape
    for o in range(outer):
        for j in range(c):
            a = slope[j]
            for k in range(inner):
                v = x[o, j, k]
                out[o, j, k] = v if not v < 0 else a * v


@njit
def _elu_loop(x, alpha, out):
    for i in range(x.size):
        v = x[i]
        m = _expm1_neg(v if v < 0 else _ZERO)
        r = v if v > 0 else alpha * m
        out[i] = r if v == v else v


@njit
def _selu_loop(x, alpha, gamma, out):
    for i in range(x.size):
        v = x[i]
        m = _expm1_neg(v if v < 0 else _ZERO)
        r = gamma * (v if v > 0 else alpha * m)
        out[i] = r if v == v else v


@njit
def _sigmoid_loop(x, out):
    for i in range(x.size):
        v = x[i]
        r = _sig(v)
        out[i] = r if v == v else v


@njit
def hard_sigmoid(x, alpha, beta, out):
    for i in range(x.size):
        v = alpha * x[i] + beta
        v = _ZERO if v < 0 else v
        out[i] = _ONE if v > 1 else v


@njit
def _tanh_loop(x, out):
    for i in range(x.size):
        v = x[i]
        t = _expm1_neg(-_TWO * abs(v))   # tanh|v| = -t / (2 + t): no cancellation
        a = -t / (_TWO + t)
        a = -a if v < 0 else a
        out[i] = a if v == v else v


@njit
def _softplus_loop(x, out):
    for i in range(x.size):
        v = x[i]
        r = (v if v > 0 else _ZERO) + _log1p01(_exp_neg(-abs(v)))
        out[i] = r if v == v else v


@njit
def _swish_loop(x, beta, out):
    for i in range(x.size):
        v = x[i]
        r = v * _sig(beta * v)
        out[i] = r if v == v else v


@njit
def _hard_swish_loop(x, out):
    for i in range(x.size):
        v = x[i]
        t = v / _SIX + _HALF
        t = _ZERO if t < 0 else t
        out[i] = v * (_ONE if t > 1 else t)


@njit
def _mish_loop(x, out):
    for i in range(x.size):
        v = x[i]
        num, den, _ = _mish_nd(v)
        r = v * num / den
        out[i] = r if v == v else v


# ----------------------------------------------------------------------------- in place
# Called with out being x itself (the ONNX runtime applies a conv's sigmoid/SiLU in place),
# LLVM's runtime alias check fails and the loop runs its scalar copy: ~9x slower for the
# exp-based activations. In place, they run block by block from an L1-resident copy instead.
_BLOCK = 2048


def _in_place(loop):
    """njit run(buf, params): loop(buf, *params, buf) through a scratch copy per block."""
    def run(buf, params):
        n = buf.size
        tmp = np.empty(min(n, _BLOCK), buf.dtype)
        for s in range(0, n, _BLOCK):
            e = min(n, s + _BLOCK)
            t = tmp[:e - s]
            t[:] = buf[s:e]
            loop(t, *params, buf[s:e])
    run.__name__ = run.__qualname__ = loop.__name__ + "_in_place"   # distinct cache entries
    return njit(run)


@njit
def _same(x, out):
    return x.ctypes.data == out.ctypes.data


_elu_ip = _in_place(_elu_loop)


@njit
def elu(x, alpha, out):
    if _same(x, out):
        _elu_ip(out, (alpha,))
    else:
        _elu_loop(x, alpha, out)


_selu_ip = _in_place(_selu_loop)


@njit
def selu(x, alpha, gamma, out):
    if _same(x, out):
        _selu_ip(out, (alpha, gamma))
    else:
        _selu_loop(x, alpha, gamma, out)


_sigmoid_ip = _in_place(_sigmoid_loop)


@njit
def sigmoid(x, out):
    if _same(x, out):
        _sigmoid_ip(out, ())
    else:
        _sigmoid_loop(x, out)


_tanh_ip = _in_place(_tanh_loop)


@njit
def tanh(x, out):
    if _same(x, out):
        _tanh_ip(out, ())
    else:
        _tanh_loop(x, out)


_softplus_ip = _in_place(_softplus_loop)


@njit
def softplus(x, out):
    if _same(x, out):
        _softplus_ip(out, ())
    else:
        _softplus_loop(x, out)


_swish_ip = _in_place(_swish_loop)


@njit
def swish(x, beta, out):
    if _same(x, out):
        _swish_ip(out, (beta,))
    else:
        _swish_loop(x, beta, out)


_hard_swish_ip = _in_place(_hard_swish_loop)


@njit
def hard_swish(x, out):
    if _same(x, out):
        _hard_swish_ip(out, ())
    else:
        _hard_swish_loop(x, out)


_mish_ip = _in_place(_mish_loop)


@njit
def mish(x, out):
    if _same(x, out):
        _mish_ip(out, ())
    else:
        _mish_loop(x, out)


# ----------------------------------------------------------------------------- softmax
# _softmax3's steps for one block x[o] (n, inner), reduced over n: m the column maxima, s the
# sums of exp(x - m), g the sums the gradients need, e (inner == 1) the row's exps.
@njit
def _col_max(x, o, m):
    """m[k] = max over j of x[o, j, k]; NaN where a column holds a NaN or an infinity (as
    NumPy: the softmax of such a column is NaN)."""
    n, inner = x.shape[1], x.shape[2]
    for k in range(inner):
        m[k] = x[o, 0, k]
    for j in range(1, n):
        for k in range(inner):
            v = x[o, j, k]
            if v > m[k] or v != v:
                m[k] = v
    for k in range(inner):
        if not (m[k] > -np.inf and m[k] < np.inf):
            m[k] = np.nan


@njit
def _row_sums(x, dy, o, m, e, s, g, mode):
    """inner == 1, a contiguous row: one flat (vectorised) exp loop into e, then the sums."""
    n = x.shape[1]
    mk = m[0]
    for j in range(n):
        e[j] = _exp_neg(x[o, j, 0] - mk)
    t = s[0]
    for j in range(n):
        t += e[j]
    s[0] = t
    if mode == 2:
        t = g[0]
        for j in range(n):
            t += e[j] * dy[o, j, 0]
        g[0] = t
    elif mode == 3:
        t = g[0]
        for j in range(n):
            t += dy[o, j, 0]
        g[0] = t


@njit
def _col_sums(x, dy, o, m, s, g, mode):
    n, inner = x.shape[1], x.shape[2]
    for j in range(n):
        for k in range(inner):
            ev = _exp_neg(x[o, j, k] - m[k])
            s[k] += ev
            if mode == 2:
                g[k] += ev * dy[o, j, k]
            elif mode == 3:
                g[k] += dy[o, j, k]


@njit
def _log_rows(x, o, m, s, out):
    """(x - m) - log(s) in two passes: the flags allow reassociation, and x - (m + log s)
    would lose everything near the max of a row of huge values."""
    n, inner = x.shape[1], x.shape[2]
    for k in range(inner):
        s[k] = math.log(s[k])
    for j in range(n):
        for k in range(inner):
            out[o, j, k] = x[o, j, k] - m[k]
    for j in range(n):
        for k in range(inner):
            out[o, j, k] = out[o, j, k] - s[k]


@njit
def _scaled_rows(x, dy, o, m, e, s, g, mode, out):
    """softmax = exp(x - m) / s, and the gradients of modes 2 and 3 from it."""
    n, inner = x.shape[1], x.shape[2]
    for k in range(inner):
        if mode == 2:
            g[k] = g[k] / s[k]                 # sum(dy * softmax)
        s[k] = _ONE / s[k]
    for j in range(n):
        for k in range(inner):
            mk = m[k]
            r = (e[j] if inner == 1 else _exp_neg(x[o, j, k] - mk)) * s[k]
            if mode == 2:
                r = r * (dy[o, j, k] - g[k])
            elif mode == 3:
                r = dy[o, j, k] - r * g[k]
            out[o, j, k] = r if mk == mk else mk


@njit
def _softmax3(x, dy, out, mode):
    """mode 0 softmax, 1 log-softmax, 2 softmax grad, 3 log-softmax grad; over axis 1."""
    outer, n, inner = x.shape
    m = np.empty(inner, x.dtype)
    s = np.empty(inner, x.dtype)
    g = np.empty(inner, x.dtype)
    e = np.empty(n, x.dtype)
    for o in range(outer):
        _col_max(x, o, m)
        s[:] = 0
        g[:] = 0
        if inner == 1:
            _row_sums(x, dy, o, m, e, s, g, mode)
        else:
            _col_sums(x, dy, o, m, s, g, mode)
        if mode == 1:
            _log_rows(x, o, m, s, out)
        else:
            _scaled_rows(x, dy, o, m, e, s, g, mode, out)


@njit
def _softmax_rows(x, out, log_mode):
    """Softmax / log-softmax of the contiguous rows of x (outer, n, 1)."""
    outer, n = x.shape[0], x.shape[1]
    x2 = x.reshape(outer, n)
    o2 = out.reshape(outer, n)
    b2 = _key_view(x2)
    for r in range(outer):
        xr, yr = x2[r], o2[r]
        m = _row_max(xr, b2[r])
        if not (m > -np.inf and m < np.inf):          # NaN / inf rows: NaN, as NumPy
            for i in range(n):
                yr[i] = np.nan
            continue
        s = m - m
        if log_mode:
            for i in range(n):
                s += _exp_neg(xr[i] - m)
            ls = math.log(s)
            for i in range(n):          # (x - m) - log(s) in two passes: the flags allow
                yr[i] = xr[i] - m       # reassociation, and x - (m + log s) would lose the
            for i in range(n):          # digits near the max of a row of huge values
                yr[i] = yr[i] - ls
        else:
            for i in range(n):          # exps, then their sum: two simple loops vectorise
                yr[i] = _exp_neg(xr[i] - m)     # better than one (x is not read again)
            for i in range(n):
                s += yr[i]
            inv = _ONE / s
            for i in range(n):
                yr[i] = yr[i] * inv


@njit
def softmax(x, out):
    if x.shape[2] == 1:
        _softmax_rows(x, out, False)
    else:
        _softmax3(x, x, out, 0)


@njit
def log_softmax(x, out):
    if x.shape[2] == 1:
        _softmax_rows(x, out, True)
    else:
        _softmax3(x, x, out, 1)


# ----------------------------------------------------------------------------- gradients
@njit
def relu_grad(x, dy, out):
    for i in range(x.size):
        out[i] = dy[i] if x[i] > 0 else _ZERO


@njit
def relu6_grad(x, dy, out):
    for i in range(x.size):
        out[i] = dy[i] if (x[i] > 0 and x[i] < 6) else _ZERO


@njit
def clip_grad(x, dy, lo, hi, out):
    for i in range(x.size):
        out[i] = dy[i] if (x[i] >= lo and x[i] <= hi) else _ZERO


@njit
def leaky_relu_grad(x, dy, alpha, out):
    for i in range(x.size):
        out[i] = dy[i] if x[i] > 0 else alpha * dy[i]


@njit
def prelu_grad(x, dy, slope, out):
    outer, c, inner = x.shape
    for o in range(outer):
        for j in range(c):
            a = slope[j]
            for k in range(inner):
                out[o, j, k] = dy[o, j, k] if x[o, j, k] > 0 else a * dy[o, j, k]


@njit
def elu_grad(x, dy, alpha, out):
    for i in range(x.size):
        v = x[i]
        out[i] = dy[i] if v > 0 else alpha * _exp_neg(v if v < 0 else _ZERO) * dy[i]


@njit
def selu_grad(x, dy, alpha, gamma, out):
    for i in range(x.size):
        v = x[i]
        out[i] = gamma * (dy[i] if v > 0 else alpha * _exp_neg(v if v < 0 else _ZERO) * dy[i])


@njit
def sigmoid_grad(x, dy, out):
    for i in range(x.size):
        out[i] = dy[i] * _sig_d(x[i])


@njit
def hard_sigmoid_grad(x, dy, alpha, beta, out):
    for i in range(x.size):
        v = alpha * x[i] + beta
        out[i] = alpha * dy[i] if (v > 0 and v < 1) else _ZERO


@njit
def tanh_grad(x, dy, out):
    for i in range(x.size):
        e = _exp_neg(-_TWO * abs(x[i]))            # 1 - tanh^2 = 4e / (1 + e)^2
        d = _ONE / (_ONE + e)
        out[i] = dy[i] * (_FOUR * e * d * d)


@njit
def softplus_grad(x, dy, out):
    for i in range(x.size):
        out[i] = dy[i] * _sig(x[i])


@njit
def swish_grad(x, dy, beta, out):
    for i in range(x.size):
        bv = beta * x[i]
        out[i] = dy[i] * (_sig(bv) + bv * _sig_d(bv))


@njit
def hard_swish_grad(x, dy, out):
    for i in range(x.size):
        v = x[i]
        out[i] = _ZERO if v < -3 else (dy[i] * (v / _THREE + _HALF) if v <= 3 else dy[i])


@njit
def mish_grad(x, dy, out):
    for i in range(x.size):
        v = x[i]
        num, den, e = _mish_nd(v)
        t = num / den                               # tanh(softplus(v))
        # 1 - t^2 = (den^2 - num^2) / den^2, expanded to avoid cancellation
        if v > 0:
            w = _FOUR * e * e * (_ONE + e) * (_ONE + e)
        else:
            w = _FOUR * (num + _ONE)
        out[i] = dy[i] * (t + v * _sig(v) * (w / (den * den)))


@njit
def softmax_grad(x, dy, out):
    _softmax3(x, dy, out, 2)


@njit
def log_softmax_grad(x, dy, out):
    _softmax3(x, dy, out, 3)
