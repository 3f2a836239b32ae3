"""Elementwise ops: arithmetic and comparisons on NumPy ufuncs (numpy broadcasting = ONNX
multidirectional broadcasting), activations on edgedl.kernels.activations."""
import math

import numpy as np

from ...kernels import activations as _acts
from ...kernels.activation_table import BY_ONNX
from . import op, takes_out

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# ----------------------------------------------------------------------------- binary
def _int_div(a, b):
    # ONNX integer Div truncates toward zero (like C), numpy's // floors
    q = np.floor_divide(a, b)
    fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
    return (q + fix).astype(np.result_type(a, b))


_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
           "Equal": np.equal, "Less": np.less, "Greater": np.greater,
           "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal,
           "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
           "BitShift": None}


@op("Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "And", "Or", "Xor")
def binary(ctx):
    t = ctx.node.op_type
    f = _BINARY[t]
    if t == "Div" and ctx.dtypes[0] is not None and ctx.dtypes[0].kind in "iu":
        return _int_div
    if ctx.opset < 7 and ctx.attr("broadcast", 0) and ctx.attr("axis") is not None:
        # legacy broadcasting: B aligned at `axis` of A
        axis = ctx.attr("axis")
        nd = len(ctx.shapes[0])
        axis = axis + nd if axis < 0 else axis
        tail = nd - axis - len(ctx.shapes[1])
        return lambda a, b: f(a, b.reshape(b.shape + (1,) * tail))
    if t in ("Add", "Sub", "Mul", "Div") and ctx.dtypes[0] in _FLOATS and \
            ctx.dtypes[1] == ctx.dtypes[0]:
        return takes_out(lambda a, b, out=None: f(a, b, out=out))
    return f


@op("Pow")
def pow_(ctx):
    dt = ctx.dtypes[0]
    if ctx.is_const(1) and ctx.consts[1].size == 1 and dt in _FLOATS:
        e = float(ctx.consts[1].reshape(-1)[0])
        if e == 2.0:
            return lambda a, b: np.multiply(a, a)
        if e == 1.0:
            return lambda a, b: a.copy()
        if e == 0.5:
            return lambda a, b: np.sqrt(a)

    def f(a, b):
        r = np.power(a, b.astype(a.dtype) if a.dtype.kind == "f" else b)
        return np.asarray(r).astype(a.dtype, copy=False)
    return f


@op("Max", "Min", "Sum", "Mean")
def variadic(ctx):
    t = ctx.node.op_type
    f = {"Max": np.maximum, "Min": np.minimum, "Sum": np.add, "Mean": np.add}[t]
    n = ctx.n_in

    def g(*xs):
        r = xs[0]
        if n == 1:
            return r.copy()
        for x in xs[1:]:
            r = f(r, x)
        if t == "Mean":
            r = (r / n).astype(r.dtype, copy=False)
        return r
    return g


@op("Where")
def where(ctx):
    return np.where


@op("Mod")
def mod(ctx):
    if ctx.attr("fmod", 0):
        return np.fmod
    return np.mod


# ----------------------------------------------------------------------------- unary
_UNARY = {"Exp": np.exp, "Log": np.log, "Sqrt": np.sqrt, "Neg": np.negative, "Abs": np.abs,
          "Floor": np.floor, "Ceil": np.ceil, "Not": np.logical_not, "Sin": np.sin,
          "Cos": np.cos, "Sign": np.sign, "Round": np.round}


@op(*_UNARY)
def unary(ctx):
    return _UNARY[ctx.node.op_type]


@op("Reciprocal")
def reciprocal(ctx):
    return lambda x: np.divide(1, x, dtype=x.dtype)


_ERF_EXACT = np.vectorize(math.erf, otypes=[np.float64])
# Numerical Recipes' erfc: t * exp(poly(t) - z^2), t = 1 / (1 + z/2), relative error
# < 1.2e-7 for z >= 0 (float32's half-ulp is 6e-8: a few ulp at most)
_ERFC_POLY = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
              -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def _erf(x):
    """erf elementwise: float32 (and integers, as float64) vectorised, float64 exact."""
    if x.dtype == np.float64:
        return _ERF_EXACT(x)
    z = np.abs(x.astype(np.float64))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC_POLY[-1])
    for c in reversed(_ERFC_POLY[:-1]):
        poly = poly * t + c
    with np.errstate(over="ignore", under="ignore"):
        y = 1.0 - t * np.exp(poly - z * z)
    # below 0.5, 1 - erfc cancels: the Taylor series there (relative error < 1e-13)
    near0 = z < 0.5
    zs = z[near0]
    z2, term, small = zs * zs, zs.copy(), zs.copy()
    for n in range(1, 12):
        term = term * -z2 / n
        small += term / (2 * n + 1)
    y[near0] = small * (2.0 / math.sqrt(math.pi))
    return np.copysign(y, x).astype(x.dtype, copy=False)


@op("Erf")
def erf(ctx):
    return lambda x: _erf(x)


@op("Gelu")
def gelu(ctx):
    """opset 20: x * (1 + erf(x / sqrt 2)) / 2, or the tanh approximation."""
    approx = ctx.attr("approximate", "none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    if approx not in ("none", "tanh"):
        raise ctx.fail(f"approximate must be 'none' or 'tanh', got {approx!r}")
    if approx == "tanh":
        k = math.sqrt(2 / math.pi)
        return lambda x: (0.5 * x * (1 + np.tanh(k * (x + 0.044715 * x ** 3)))).astype(x.dtype)
    return lambda x: (0.5 * x * (1 + _erf(x / np.asarray(math.sqrt(2), x.dtype)))).astype(
        x.dtype)


# ----------------------------------------------------------------------------- activations
def _act(ctx, name, *params, fallback=None):
    """A kernel from edgedl.kernels.activations for float inputs; NumPy for other dtypes."""
    dt = ctx.dtypes[0]
    if dt not in _FLOATS:
        if fallback is None:
            raise ctx.fail(f"input dtype {dt} is not supported (float32/float64 only)")
        return fallback
    k = getattr(_acts, name)
    b = ctx.backend
    if params:
        return takes_out(lambda x, *_, out=None: k(x, *params, out=out, backend=b))
    bound = _acts.bound_f32(name, b) if dt == np.float32 else None
    return takes_out(lambda x, *_, out=None: k(x, out=out, backend=b), bound)


# ONNX op types with a handler of their own below (inputs as parameters, axes, slopes)
_OWN_HANDLER = {"Clip", "PRelu", "Softmax", "LogSoftmax"}


@op(*(t for t in BY_ONNX if t not in _OWN_HANDLER))
def activation(ctx):
    """Relu, Sigmoid, LeakyRelu, Selu, ... (and the planner's internal Silu): the table's
    activation, its parameters from the node's attributes with the table's ONNX defaults."""
    rec = BY_ONNX[ctx.node.op_type]
    params = tuple(float(ctx.attr(p.onnx_attr, p.attr_default)) for p in rec.params)
    fallback = None
    if rec.name == "relu":   # integer tensors too
        fallback = lambda x: np.maximum(x, 0).astype(x.dtype)  # noqa: E731
    return _act(ctx, rec.name, *params, fallback=fallback)


def clip_bounds(ctx):
    """(lo, hi) of a Clip node, None where unbounded; attributes before opset 11, inputs after."""
    if ctx.opset < 11:
        lo, hi = ctx.attr("min"), ctx.attr("max")
        return (None if lo is None else float(lo)), (None if hi is None else float(hi))
    lo = ctx.const(1, "min") if ctx.has(1) else None
    hi = ctx.const(2, "max") if ctx.has(2) else None
    return (None if lo is None else lo.reshape(-1)[0].item(),
            None if hi is None else hi.reshape(-1)[0].item())


@op("Clip")
def clip(ctx):
    dyn = ctx.opset >= 11 and any(ctx.has(i) and not ctx.is_const(i) for i in (1, 2))
    if dyn or ctx.dtypes[0] not in _FLOATS:
        def f(x, lo=None, hi=None):
            if ctx.opset < 11:
                lo, hi = ctx.attr("min"), ctx.attr("max")
            r = x
            if lo is not None:
                r = np.maximum(r, np.asarray(lo).astype(x.dtype))
            if hi is not None:
                r = np.minimum(r, np.asarray(hi).astype(x.dtype))
            return np.array(r, dtype=x.dtype)
        return f
    lo, hi = clip_bounds(ctx)
    k = _acts
    b = ctx.backend
    if lo == 0 and hi == 6:
        return takes_out(lambda x, *_, out=None: k.relu6(x, out=out, backend=b))
    if lo == 0 and hi is None:
        return takes_out(lambda x, *_, out=None: k.relu(x, out=out, backend=b))
    lo = -np.inf if lo is None else lo
    hi = np.inf if hi is None else hi
    return takes_out(lambda x, *_, out=None: k.clip(x, lo, hi, out=out, backend=b))


@op("PRelu")
def prelu(ctx):
    if ctx.dtypes[0] not in _FLOATS:
        return lambda x, s: np.where(x < 0, x * s, x).astype(x.dtype)
    k = _acts.prelu
    b = ctx.backend
    nd = len(ctx.shapes[0])

    def onnx_slope(s):
        # the kernel reads a 1-D slope of length C along axis 1; ONNX broadcasts it from the
        # right (last axis), so give it an explicit leading axis
        return s.reshape(1, -1) if s.ndim == 1 and nd >= 2 and s.size > 1 else s
    if ctx.is_const(1):
        slope = np.ascontiguousarray(onnx_slope(ctx.consts[1]).astype(ctx.dtypes[0]))
        return lambda x, _s: k(x, slope, backend=b)
    return lambda x, s: k(x, onnx_slope(s).astype(x.dtype, copy=False), backend=b)


def _softmax_in_memory_order(k, x, ax, b):
    """Softmax over axis ``ax`` of a transposed view of a C-contiguous array (FastestDet's
    Transpose -> Softmax -> Transpose): run it on that array, at the axis ``ax`` is there, and
    return the same view of the result, instead of copying x into C order first (the kernel
    is as fast on a middle axis, and the following Transpose then gives C order back).
    None if x is not such a view."""
    order = sorted(range(x.ndim), key=lambda i: -x.strides[i])    # stable
    base = x.transpose(order)
    if not base.flags.c_contiguous:
        return None
    y = k(base, axis=order.index(ax), backend=b)
    return y.transpose(np.argsort(order))


def _flat_softmax(k, axis, b):
    # before opset 13: coerce to 2-D at `axis`, softmax over the flattened tail
    def f(x):
        ax = axis + x.ndim if axis < 0 else axis
        if ax == x.ndim - 1 and not x.flags.c_contiguous and x.size:
            y = _softmax_in_memory_order(k, x, ax, b)      # a single axis: opset 13's op
            if y is not None:
                return y
        lead = math.prod(x.shape[:ax])      # not np.prod: 2.5 us a call
        y = k(np.ascontiguousarray(x).reshape(lead, -1), axis=-1, backend=b)
        return y.reshape(x.shape)
    return f


@op("Softmax", "LogSoftmax")
def softmax(ctx):
    k = getattr(_acts,
                "softmax" if ctx.node.op_type == "Softmax" else "log_softmax")
    b = ctx.backend
    if ctx.opset < 13 and not ctx.attr("_single_axis"):
        return _flat_softmax(k, int(ctx.attr("axis", 1)), b)
    axis = int(ctx.attr("axis", -1))
    return takes_out(lambda x, out=None: k(x, axis=axis, out=out, backend=b))


# ----------------------------------------------------------------------------- type
@op("Cast")
def cast(ctx):
    from .. import graph
    dt = graph._np_dtype(int(ctx.attr("to")))
    if dt is None:
        raise ctx.fail(f"cast to element type {ctx.attr('to')} is not supported")
    return lambda x: x.astype(dt)


@op("CastLike")
def cast_like(ctx):
    return lambda x, like: x.astype(like.dtype)


@op("Identity")
def identity(ctx):
    return lambda x: x


@op("Dropout")
def dropout(ctx):
    """Inference: the identity (and the mask below). Training mode (opset 12's third
    input) would drop at random: refused, not silently run as the identity."""
    n_out = len([o for o in ctx.node.outputs if o])
    name = ctx.node.name
    # The inference mask: opset 12 says all true; before, it was "not filled" and
    # onnxruntime gives zeros (of the data's type before opset 10, bool from 10)
    mask_type, mask_fill = (np.bool_ if ctx.opset >= 10 else None), ctx.opset >= 12

    def run(x, ratio=None, training=None):
        if training is not None and bool(np.any(training)) and \
                (ratio is None or float(np.asarray(ratio).reshape(-1)[0]) > 0):
            raise ValueError(f"Dropout node {name!r}: training_mode=True is not supported "
                             "(edgedl runs inference)")
        if n_out == 1:
            return x
        return x, np.full(x.shape, mask_fill, mask_type or x.dtype)
    return run
