"""Activations and their derivatives (ONNX semantics; PyTorch's choice at kinks).

Every function takes float32/float64 arrays of any shape (strided views too), returns an array
of the input's dtype, writes into ``out=`` when given (it may be ``x`` itself, or ``dy`` for a
gradient) and runs on ``backend=`` (None = the current backend). ``<name>_grad(x, dy, ...)``
returns dy * f'(x). The kernels themselves live in ``_ref``/``_numba``/``edgedl._cy``; this
module validates once, reshapes to the twins' calling convention and dispatches.
"""
import math

import numpy as np

from .. import _config, _validate as _v
from ..errors import DTypeError, ShapeError, ValidationError
from . import _dispatch
from .activation_table import ACTIVATIONS as _TABLE, PLANNED as _TABLE_PLANNED

_FAMILY = "activations"
_SELU_ALPHA, _SELU_GAMMA = (p.default for p in _TABLE["selu"].params)
# the Cython fast entry's op codes (the table's; src_cy/edl_act_table.h is generated from it)
_FAST_CODES = {n: r.fast_code for n, r in _TABLE.items() if r.fast_code is not None}


# ----------------------------------------------------------------------------- plumbing
def _flat(a):
    """A contiguous 1-D view of ``a``, or a contiguous copy when ``a`` is strided."""
    return (a if a.flags.c_contiguous else np.ascontiguousarray(a)).reshape(-1)


# Right after a kernel the interpreter runs cache-cold (the arrays evicted it from L2), and each
# generic check (an ABC isinstance, dtype equality, np.prod) then costs microseconds: the common
# case is recognised by a few identity tests, anything else takes the full _validate path.
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)


def _inputs(x, dy):
    if not (type(x) is np.ndarray and (x.dtype is _F32 or x.dtype is _F64)):
        x = _v.float_array(x, "x")
    if dy is not None:
        dy = _v.float_array(dy, "dy")
        if dy.shape != x.shape:
            raise ShapeError(f"dy must have the shape of x {x.shape}, got {dy.shape}")
        _v.same_dtype(x, dy, "x", "dy")
    return x, dy


def _output(out, x):
    """``out`` checked against x's shape and dtype, or a new array when None."""
    if (type(out) is np.ndarray and out.dtype is x.dtype and out.shape == x.shape
            and out.flags.writeable):
        return out
    return _v.output(out, x.shape, x.dtype)


def _unalias(a, out):
    """Copy an input that overlaps ``out`` without being exactly it (in-place is fine)."""
    if a is out or not np.may_share_memory(a, out):
        return a
    same = (a.__array_interface__["data"][0] == out.__array_interface__["data"][0]
            and a.strides == out.strides)
    return a if same else a.copy()


def _run(name, shape3, x, dy, out, backend, args):
    """Call twin ``name`` on contiguous views of x (and dy) reshaped to ``shape3`` (or 1-D)."""
    fn = _dispatch.impl(_FAMILY, name, backend)
    if x.size == 0:
        return out
    x = _unalias(x, out)
    ins = [x] if dy is None else [x, _unalias(dy, out)]
    ins = [_flat(a) for a in ins]
    direct = out.flags.c_contiguous
    res = out.reshape(-1) if direct else np.empty(x.size, x.dtype)
    if shape3 is not None:
        ins = [a.reshape(shape3) for a in ins]
        res = res.reshape(shape3)
    fn(*ins, *args, res)
    if not direct:
        np.copyto(out, res.reshape(out.shape))
    return out


_fast = None   # edgedl._cy.activations.fast_f32 once first needed


def _fast_f32(name, x, out, backend, args):
    """The common case (x a float32 ndarray, out None or a float32 ndarray, the Cython backend)
    in one call of the Cython fast entry, which checks contiguity, shapes and overlap itself:
    after a kernel that streamed a few MB the interpreter runs cache-cold, and the general
    path's steps then cost ~35 us per call, ~6x this one (measured after a 16 MB copy).
    Returns out, or None when the general path must run."""
    global _fast
    if _config.resolve_backend(backend) != "cython":
        return None
    if out is None:
        out = np.empty(x.shape, _F32)
    elif not (type(out) is np.ndarray and out.dtype is _F32):
        return None
    if _fast is None:
        _fast = _dispatch.twin_module(_FAMILY, "cython").fast_f32
    return out if _fast(_FAST_CODES[name], x, out, _config.get_num_threads(), *args) else None


def bound_f32(name, backend):
    """The Cython fast entry bound to the parameterless elementwise activation ``name``
    (``bound(x, out, nthreads) -> bool``: out = name(x) for float32 x, out C-contiguous of one
    shape, else False with nothing touched), which the ONNX runtime's compiled plan calls
    without this module's layers; None off the Cython backend or for other activations."""
    rec = _TABLE.get(name)
    if (rec is None or rec.params or name not in _FAST_CODES or
            _config.resolve_backend(backend) != "cython"):
        return None
    cy = _dispatch.twin_module(_FAMILY, "cython")
    code = _FAST_CODES[name]
    try:
        return cy.FastF32(code)
    except ValueError:          # not an elementwise code (softmax)
        return None


def _elementwise(name, x, dy, out, backend, params=()):
    if dy is None and type(x) is np.ndarray and x.dtype is _F32:
        y = _fast_f32(name, x, out, backend, params)
        if y is not None:
            return y
    x, dy = _inputs(x, dy)
    out = _output(out, x)
    t = x.dtype.type
    return _run(name, None, x, dy, out, backend, tuple(t(p) for p in params))


def _axis(x, axis):
    if x.ndim < 1:
        raise ShapeError("x must have rank >= 1 for a softmax, got a 0-d array")
    if type(axis) is not int:
        axis = _v.integer(axis, "axis")
    if not -x.ndim <= axis < x.ndim:
        raise ShapeError(f"axis must be in [{-x.ndim}, {x.ndim}) for x of shape {x.shape}, "
                         f"got {axis}")
    axis %= x.ndim
    # math.prod, not np.prod: right after a kernel the interpreter runs cache-cold and a
    # NumPy reduction costs ~30 us there, more than a small kernel's own time
    return math.prod(x.shape[:axis]), x.shape[axis], math.prod(x.shape[axis + 1:])


def _softmax_like(name, x, dy, axis, out, backend):
    if dy is None and type(x) is np.ndarray and x.dtype is _F32:
        y = _fast_f32(name, x, out, backend, (0.0, 0.0) + _axis(x, axis))
        if y is not None:
            return y
    x, dy = _inputs(x, dy)
    shape3 = _axis(x, axis)
    out = _output(out, x)
    return _run(name, shape3, x, dy, out, backend, ())


def _prelu_slope(x, slope):
    """(outer, C, inner) and slope as a contiguous (C,) array of x's dtype.

    A 1-D slope of length x.shape[1] applies along axis 1 (the public API contract); anything else follows
    ONNX PRelu's unidirectional (NumPy, right-aligned) broadcasting to x.
    """
    if not (type(slope) is np.ndarray and slope.dtype is x.dtype):
        slope = _v.float_array(slope, "slope").astype(x.dtype, copy=False)
    c = x.shape[1] if x.ndim >= 2 else 0
    if (slope.size == c and slope.flags.c_contiguous
            and slope.shape in ((c,), (c,) + (1,) * (x.ndim - 2))):
        # the common per-channel slope, (C,) or ONNX's (C, 1, 1): no NumPy calls (cold, they
        # cost tens of us after a kernel, as much as the kernel on small inputs)
        return (x.shape[0], c, math.prod(x.shape[2:])), slope.reshape(c)
    if slope.size == 1:
        slope = slope.reshape(())
    if slope.ndim == 1 and x.ndim >= 2 and slope.shape[0] == x.shape[1]:
        sp = (1, slope.shape[0]) + (1,) * (x.ndim - 2)
    else:
        if slope.ndim > x.ndim or any(s not in (1, d) for s, d in
                                      zip(slope.shape[::-1], x.shape[::-1])):
            raise ShapeError(f"slope of shape {slope.shape} does not broadcast to x of shape "
                             f"{x.shape} (expected ({x.shape[1] if x.ndim > 1 else 'C'},), or a "
                             f"shape unidirectionally broadcastable to x)")
        sp = (1,) * (x.ndim - slope.ndim) + slope.shape
    varying = [k for k, s in enumerate(sp) if s != 1]
    if not varying:
        return (1, 1, x.size), slope.reshape(1)
    a, b = varying[0], varying[-1] + 1
    # the slope varies over axes a..b-1 only: x is then (outer, C, inner) with C = that block
    block = np.broadcast_to(slope.reshape(sp)[(0,) * a], x.shape[a:b] + sp[b:])
    block = np.ascontiguousarray(block).reshape(-1)
    outer, inner = math.prod(x.shape[:a]), math.prod(x.shape[b:])
    return (outer, block.size, inner), block


def _prelu_like(name, x, dy, slope, out, backend):
    x, dy = _inputs(x, dy)
    shape3, s = _prelu_slope(x, slope)
    out = _output(out, x)
    return _run(name, shape3, x, dy, out, backend, (s,))


def _clip_bounds(lo, hi):
    lo = -np.inf if lo is None else _v.real(lo, "lo")
    hi = np.inf if hi is None else _v.real(hi, "hi")
    return lo, hi


# ----------------------------------------------------------------------------- forward
def relu(x, out=None, backend=None):
    """max(x, 0) (ONNX Relu)."""
    return _elementwise("relu", x, None, out, backend)


def relu6(x, out=None, backend=None):
    """min(max(x, 0), 6)."""
    return _elementwise("relu6", x, None, out, backend)


def clip(x, lo=None, hi=None, out=None, backend=None):
    """min(max(x, lo), hi) (ONNX Clip; None = unbounded; lo > hi gives hi)."""
    return _elementwise("clip", x, None, out, backend, _clip_bounds(lo, hi))


def leaky_relu(x, alpha=0.01, out=None, backend=None):
    """x if x >= 0 else alpha * x (ONNX LeakyRelu)."""
    return _elementwise("leaky_relu", x, None, out, backend, (_v.real(alpha, "alpha"),))


def prelu(x, slope, out=None, backend=None):
    """x if x >= 0 else slope * x (ONNX PRelu). A 1-D ``slope`` of length x.shape[1] applies
    per channel (axis 1); other shapes broadcast to x as in ONNX (right-aligned)."""
    return _prelu_like("prelu", x, None, slope, out, backend)


def elu(x, alpha=1.0, out=None, backend=None):
    """x if x > 0 else alpha * (exp(x) - 1) (ONNX Elu)."""
    return _elementwise("elu", x, None, out, backend, (_v.real(alpha, "alpha"),))


def selu(x, alpha=_SELU_ALPHA, gamma=_SELU_GAMMA, out=None, backend=None):
    """gamma * (x if x > 0 else alpha * (exp(x) - 1)) (ONNX Selu)."""
    return _elementwise("selu", x, None, out, backend,
                        (_v.real(alpha, "alpha"), _v.real(gamma, "gamma")))


def sigmoid(x, out=None, backend=None):
    """1 / (1 + exp(-x)) (ONNX Sigmoid); never overflows."""
    return _elementwise("sigmoid", x, None, out, backend)


def hard_sigmoid(x, alpha=0.2, beta=0.5, out=None, backend=None):
    """max(0, min(1, alpha * x + beta)) (ONNX HardSigmoid)."""
    return _elementwise("hard_sigmoid", x, None, out, backend,
                        (_v.real(alpha, "alpha"), _v.real(beta, "beta")))


def tanh(x, out=None, backend=None):
    """Hyperbolic tangent (ONNX Tanh)."""
    return _elementwise("tanh", x, None, out, backend)


def softplus(x, out=None, backend=None):
    """log(1 + exp(x)) (ONNX Softplus), stable for large |x|."""
    return _elementwise("softplus", x, None, out, backend)


def swish(x, beta=1.0, out=None, backend=None):
    """x * sigmoid(beta * x); SiLU at beta = 1."""
    return _elementwise("swish", x, None, out, backend, (_v.real(beta, "beta"),))


def silu(x, out=None, backend=None):
    """x * sigmoid(x) (= swish with beta = 1)."""
    return swish(x, 1.0, out=out, backend=backend)


def hard_swish(x, out=None, backend=None):
    """x * max(0, min(1, x / 6 + 1/2)) (ONNX HardSwish)."""
    return _elementwise("hard_swish", x, None, out, backend)


def mish(x, out=None, backend=None):
    """x * tanh(softplus(x)) (ONNX Mish)."""
    return _elementwise("mish", x, None, out, backend)


def softmax(x, axis=-1, out=None, backend=None):
    """exp(x - max) / sum along ``axis`` (ONNX Softmax-13); finite for any finite input."""
    return _softmax_like("softmax", x, None, axis, out, backend)


def log_softmax(x, axis=-1, out=None, backend=None):
    """x - max - log(sum(exp(x - max))) along ``axis`` (ONNX LogSoftmax-13)."""
    return _softmax_like("log_softmax", x, None, axis, out, backend)


# ----------------------------------------------------------------------------- gradients
def relu_grad(x, dy, out=None, backend=None):
    """dy where x > 0, else 0 (ReLU'(0) = 0)."""
    return _elementwise("relu_grad", x, dy, out, backend)


def relu6_grad(x, dy, out=None, backend=None):
    """dy where 0 < x < 6, else 0 (as PyTorch's hardtanh: 0 at both kinks)."""
    return _elementwise("relu6_grad", x, dy, out, backend)


def clip_grad(x, dy, lo=None, hi=None, out=None, backend=None):
    """dy where lo <= x <= hi, else 0 (as torch.clamp: the subgradient 1 at the bounds)."""
    return _elementwise("clip_grad", x, dy, out, backend, _clip_bounds(lo, hi))


def leaky_relu_grad(x, dy, alpha=0.01, out=None, backend=None):
    """dy where x > 0, else alpha * dy."""
    return _elementwise("leaky_relu_grad", x, dy, out, backend, (_v.real(alpha, "alpha"),))


def prelu_grad(x, dy, slope, out=None, backend=None):
    """dy where x > 0, else slope * dy (gradient with respect to x)."""
    return _prelu_like("prelu_grad", x, dy, slope, out, backend)


def elu_grad(x, dy, alpha=1.0, out=None, backend=None):
    """dy where x > 0, else alpha * exp(x) * dy."""
    return _elementwise("elu_grad", x, dy, out, backend, (_v.real(alpha, "alpha"),))


def selu_grad(x, dy, alpha=_SELU_ALPHA, gamma=_SELU_GAMMA, out=None, backend=None):
    """gamma * dy where x > 0, else gamma * alpha * exp(x) * dy."""
    return _elementwise("selu_grad", x, dy, out, backend,
                        (_v.real(alpha, "alpha"), _v.real(gamma, "gamma")))


def sigmoid_grad(x, dy, out=None, backend=None):
    """dy * s * (1 - s), s = sigmoid(x)."""
    return _elementwise("sigmoid_grad", x, dy, out, backend)


def hard_sigmoid_grad(x, dy, alpha=0.2, beta=0.5, out=None, backend=None):
    """alpha * dy where 0 < alpha * x + beta < 1, else 0 (as PyTorch's hardsigmoid)."""
    return _elementwise("hard_sigmoid_grad", x, dy, out, backend,
                        (_v.real(alpha, "alpha"), _v.real(beta, "beta")))


def tanh_grad(x, dy, out=None, backend=None):
    """dy * (1 - tanh(x)^2)."""
    return _elementwise("tanh_grad", x, dy, out, backend)


def softplus_grad(x, dy, out=None, backend=None):
    """dy * sigmoid(x)."""
    return _elementwise("softplus_grad", x, dy, out, backend)


def swish_grad(x, dy, beta=1.0, out=None, backend=None):
    """dy * (s + beta * x * s * (1 - s)), s = sigmoid(beta * x)."""
    return _elementwise("swish_grad", x, dy, out, backend, (_v.real(beta, "beta"),))


def silu_grad(x, dy, out=None, backend=None):
    """swish_grad with beta = 1."""
    return swish_grad(x, dy, 1.0, out=out, backend=backend)


def hard_swish_grad(x, dy, out=None, backend=None):
    """0 for x < -3, dy * (x / 3 + 1/2) for -3 <= x <= 3, dy above (as PyTorch)."""
    return _elementwise("hard_swish_grad", x, dy, out, backend)


def mish_grad(x, dy, out=None, backend=None):
    """dy * (t + x * sigmoid(x) * (1 - t^2)), t = tanh(softplus(x))."""
    return _elementwise("mish_grad", x, dy, out, backend)


def softmax_grad(x, dy, axis=-1, out=None, backend=None):
    """s * (dy - sum(dy * s)) along ``axis``, s = softmax(x)."""
    return _softmax_like("softmax_grad", x, dy, axis, out, backend)


def log_softmax_grad(x, dy, axis=-1, out=None, backend=None):
    """dy - softmax(x) * sum(dy) along ``axis``."""
    return _softmax_like("log_softmax_grad", x, dy, axis, out, backend)


# ----------------------------------------------------------------------------- planned
# Elementwise twins and their parameters, in the twins' order (the table's elementwise kind).
_PLANNED = _TABLE_PLANNED


def activation_plan(name, params=(), dtype=np.float32, backend=None):
    """The elementwise activation ``name`` prepared once (the ONNX planner's epilogue after a
    convolution): validates the name and ``params`` (the wrapper's parameters in order, e.g.
    ``("swish", (1.0,))``) now and returns ``run(x, out)``, which applies it to C-contiguous
    1-D arrays of ``dtype`` (``out`` may be ``x``; not checked: this is the fast path)."""
    _v.choice(name, "name", tuple(_PLANNED))
    dtype = np.dtype(dtype)
    if dtype not in (_F32, _F64):
        raise DTypeError(f"dtype must be float32 or float64, got {dtype}")
    names = _PLANNED[name]
    if len(params) != len(names):
        raise ValidationError(f"{name} takes {len(names)} parameters {names}, got "
                                 f"{len(params)}")
    if name == "clip":
        params = _clip_bounds(*params)
    args = tuple(dtype.type(_v.real(p, n)) for p, n in zip(params, names))
    fn = _dispatch.impl(_FAMILY, name, backend)
    return (lambda x, out: fn(x, *args, out)) if args else fn


# ----------------------------------------------------------------------------- warm-up
def _warmup(backend):
    """Call every kernel once on tiny float32 inputs (compiles/loads numba's cache)."""
    x = np.linspace(-4, 4, 16, dtype=np.float32).reshape(1, 2, 2, 4)
    dy = np.ones_like(x)
    slope = np.full(2, 0.25, np.float32)
    g = globals()
    for name in _NAMES:
        fn, gfn = g[name], g[name + "_grad"]
        if name == "prelu":
            fn(x, slope, backend=backend)
            gfn(x, dy, slope, backend=backend)
        elif name == "clip":
            fn(x, -1.0, 1.0, backend=backend)
            gfn(x, dy, -1.0, 1.0, backend=backend)
        else:
            fn(x, backend=backend)
            gfn(x, dy, backend=backend)


# the twins (the table's activations but aliases such as silu = swish(beta=1))
_NAMES = [n for n, r in _TABLE.items() if r.kind != "alias"]
