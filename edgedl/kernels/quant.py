"""Integer (int8 / uint8) kernels with ONNX semantics: QuantizeLinear, DequantizeLinear,
DynamicQuantizeLinear, QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger, and the
com.microsoft QLinear* ops onnxruntime's quantizer writes (Add, Mul, Sigmoid, LeakyRelu,
Softmax, Concat, AveragePool, GlobalAveragePool) as wrappers over the same kernels.

Arithmetic follows onnxruntime: products summed exactly in int32, then requantized through
a float32 multiplier (x_scale * w_scale / y_scale), rounded half to even and saturated.
Activations of quantized values are 256-entry lookup tables (dequantize, the float function,
quantize), as onnxruntime builds them. Every scale must be a finite float > 0 and every zero
point an 8-bit (or int32 where ONNX says so) integer of the right shape; anything else is a
ValidationError / ShapeError / DTypeError naming the argument.
"""
import numpy as np

from .. import _config
from .. import _validate as V
from ..errors import DTypeError, ShapeError, ValidationError
from . import _dispatch
from .conv import _conv_geometry

__all__ = ["QTYPES", "QDQ_TYPES", "quantize_linear", "dequantize_linear",
           "quantize_linear_plan", "dequantize_linear_plan", "dynamic_quantize_linear",
           "requantize", "qlinear_conv2d", "qlinear_conv2d_plan",
           "conv_integer2d", "qlinear_matmul", "matmul_integer", "qgemm", "lookup_table",
           "lookup",
           "qlinear_binary", "qlinear_binary_plan", "qlinear_binary_table", "lookup2",
           "qlinear_global_avg_pool2d", "qlinear_avg_pool2d_plan",
           "lookup_plan", "channel_lookup", "channel_lookup_plan"]

#: the quantized element types the integer kernels take
QTYPES = (np.dtype(np.uint8), np.dtype(np.int8))
#: QuantizeLinear / DequantizeLinear also take the 16-bit types of opset 21
QDQ_TYPES = QTYPES + (np.dtype(np.uint16), np.dtype(np.int16))
#: products of two 8-bit values minus their zero points are at most 255 * 255 in magnitude:
#: sums of up to this many stay exact in int32
MAX_K = (2**31 - 1) // (255 * 255)
# taps (C kh kw) up to which a dense conv of uint8 input may take the direct stem kernel
_STEM_MAX_K = 128


# ----------------------------------------------------------------------------- arguments
def _qarray(x, name, dtypes=QTYPES):
    if not isinstance(x, np.ndarray):
        raise DTypeError(f"{name} must be a NumPy array of {'/'.join(map(str, dtypes))}, got "
                         f"{type(x).__name__}")
    if x.dtype not in dtypes:
        raise DTypeError(f"{name} must have dtype {' or '.join(map(str, dtypes))}, got {x.dtype}")
    return x


def _scale(s, name, n=None):
    """A scale: a finite float > 0, or n of them (per channel) -> float32 (1,) or (n,)."""
    s = np.asarray(s)
    if s.dtype.kind != "f":
        raise DTypeError(f"{name} must be a float tensor, got dtype {s.dtype}")
    if s.ndim > 1 or (s.size != 1 and (n is None or s.size != n)) or s.size == 0:
        want = "a scalar" if n is None else f"a scalar or 1-D of length {n}"
        raise ShapeError(f"{name} must be {want}, got shape {s.shape}")
    s = s.astype(np.float32).reshape(-1)
    if not (np.isfinite(s).all() and (s > 0).all()):
        raise ValidationError(f"{name} must be finite and > 0, got {s[:8].tolist()}")
    return s


def _zero_point(z, name, n=None, dtypes=QTYPES, default=np.uint8):
    """A zero point: None (0 of ``default``), a scalar or n values of an integer type in
    ``dtypes`` -> (int32 (1,) or (n,), its dtype)."""
    if z is None:
        return np.zeros(1, np.int32), np.dtype(default)
    z = np.asarray(z)
    if z.dtype not in dtypes:
        raise DTypeError(f"{name} must have dtype {' or '.join(map(str, dtypes))}, got {z.dtype}")
    if z.ndim > 1 or (z.size != 1 and (n is None or z.size != n)) or z.size == 0:
        want = "a scalar" if n is None else f"a scalar or 1-D of length {n}"
        raise ShapeError(f"{name} must be {want}, got shape {z.shape}")
    return z.astype(np.int32).reshape(-1), z.dtype


def _axis(axis, ndim, name="axis"):
    axis = V.integer(axis, name, lo=-max(ndim, 1), hi=max(ndim, 1) - 1)
    return axis % max(ndim, 1)


def _acb(x, axis, per_channel):
    """x as the (A, C, B) view the per-channel kernels take (C = 1 when per tensor)."""
    if not per_channel or x.ndim == 0:
        return x.reshape(1, 1, -1)
    a = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(a, x.shape[axis], -1)


def _params(scale, zp, x, axis, sname, zname, zdtypes=QTYPES, default=np.uint8):
    """Validated (scale (C,), zp (C,), zp dtype, per_channel, axis) of a Q/DQ op."""
    per = np.ndim(scale) == 1 and np.size(scale) != 1 or np.ndim(zp) == 1 and np.size(zp) != 1
    if per and x.ndim == 0:
        raise ShapeError(f"{sname} is per-axis but the input is a scalar")
    axis = _axis(axis, x.ndim) if per else 0     # the axis matters only per channel
    n = x.shape[axis] if per else None
    s = _scale(scale, sname, n)
    z, zdt = _zero_point(zp, zname, n, zdtypes, default)
    if per:     # one of the two may be given per tensor: broadcast both along the axis
        s = np.broadcast_to(s, (n,)).copy() if s.size == 1 else s
        z = np.broadcast_to(z, (n,)).copy() if z.size == 1 else z
    return s, z, zdt, per, axis


def _contig(x):
    return np.ascontiguousarray(x)


def _kernel(name, backend):
    return _dispatch.impl("quant", name, backend)


def _bound_backend(backend):
    """Whether a plan binds its Cython fast path (QConv8, QMap8): the Cython backend named
    explicitly (as the ONNX runtime names it), where the other backends' plans keep calling
    their twins."""
    return backend is not None and _config.resolve_backend(backend) == "cython"


def _bound_run(fast, x, out, shape, dtype):
    """A plan's bound fast path on x (made contiguous if it is a strided view, e.g. of a
    Transpose): its output (``out``, or a new array), or None where it declined (the plan's
    general path then runs and raises what it must)."""
    y = np.empty(shape, dtype) if out is None else out
    n = _config.get_num_threads()
    if fast(x, y, n) or (isinstance(x, np.ndarray) and not x.flags.c_contiguous and
                         fast(np.ascontiguousarray(x), y, n)):
        return y
    return None


def _bound_map(kind, shape, shape3, x_dtype, y_dtype, scale=None, zero_point=None,
               table=None, backend=None):
    """The Cython QMap8 of a planned quantize / dequantize / lookup over 8-bit types (the
    bound fast path: no Python between the buffers and the kernel), or None (other types,
    other backends)."""
    if not _bound_backend(backend) or len(shape) > 8:
        return None
    fmt = {np.dtype(np.uint8): "B", np.dtype(np.int8): "b", np.dtype(np.float32): "f"}
    xf, yf = fmt.get(np.dtype(x_dtype)), fmt.get(np.dtype(y_dtype))
    if xf is None or yf is None or (kind != "lookup" and "f" not in xf + yf):
        return None
    if table is not None:
        table = np.ascontiguousarray(table).view(np.uint8)
    return _dispatch.twin_module("quant", "cython").QMap8(kind, shape, shape3, xf, yf, scale,
                                                          zero_point, table)


def _numba_writable(x, backend):
    """numba compiles a second specialisation for read-only arrays: copy those for it."""
    if _config.resolve_backend(backend) == "numba" and not x.flags.writeable:
        return x.copy()
    return x


# ----------------------------------------------------------------------------- Q / DQ
def quantize_linear(x, scale, zero_point=None, axis=1, dtype=None, out=None, backend=None):
    """ONNX QuantizeLinear (opsets 10-21): y = saturate(round(x / scale) + zero_point), round
    half to even. ``scale`` / ``zero_point`` scalar (per tensor) or 1-D along ``axis``; the
    output type is zero_point's (uint8 when omitted, or ``dtype``): uint8, int8, uint16 or
    int16."""
    x = V.float_array(np.asarray(x) if np.isscalar(x) else x, "x")
    s, z, zdt, per, axis = _params(scale, zero_point, x, axis, "y_scale", "y_zero_point",
                                   QDQ_TYPES, default=np.uint8 if dtype is None else dtype)
    if zero_point is None and dtype is not None:
        zdt = np.dtype(dtype)
        if zdt not in QDQ_TYPES:
            raise DTypeError(f"dtype must be one of {', '.join(map(str, QDQ_TYPES))}, got {zdt}")
    out = V.output(out, x.shape, zdt)
    xv = _numba_writable(_contig(_acb(np.asarray(x, np.float32), axis, per)), backend)
    y = np.empty(xv.shape, zdt)
    _kernel("quantize_linear", backend)(xv, s, z, y)
    out[...] = y.reshape(x.shape)
    return out


def dequantize_linear(x, scale, zero_point=None, axis=1, out=None, backend=None):
    """ONNX DequantizeLinear (opsets 10-21): y = float32(x - zero_point) * scale; x uint8,
    int8, uint16, int16 or int32 (whose zero point must be 0); per tensor or per axis."""
    x = _qarray(x, "x", QDQ_TYPES + (np.dtype(np.int32),))
    s, z, zdt, per, axis = _params(scale, zero_point, x, axis, "x_scale", "x_zero_point",
                                   QDQ_TYPES + (np.dtype(np.int32),), default=x.dtype)
    if zero_point is not None and zdt != x.dtype:
        raise DTypeError(f"x_zero_point must have x's dtype {x.dtype}, got {zdt}")
    if x.dtype == np.int32 and np.any(z):
        raise ValidationError("x_zero_point must be 0 for int32 x (ONNX DequantizeLinear)")
    out = V.output(out, x.shape, np.float32)
    xv = _numba_writable(_contig(_acb(x, axis, per)), backend)
    y = np.empty(xv.shape, np.float32)
    _kernel("dequantize_linear", backend)(xv, s, z, y)
    out[...] = y.reshape(x.shape)
    return out


def _qdq_plan(kind, x_shape, x_dtype, scale, zero_point, axis, dtype, backend):
    x_shape = tuple(int(d) for d in x_shape)
    x = np.zeros(x_shape, x_dtype)     # validation only: zeros raise no float warnings
    if kind == "quantize_linear":
        y0 = quantize_linear(x, scale, zero_point, axis, dtype, backend="numpy")
        s, z, _, per, ax = _params(scale, zero_point, x, axis, "y_scale", "y_zero_point",
                                   QDQ_TYPES, default=y0.dtype)
    else:
        y0 = dequantize_linear(x, scale, zero_point, axis, backend="numpy")
        s, z, _, per, ax = _params(scale, zero_point, x, axis, "x_scale", "x_zero_point",
                                   QDQ_TYPES + (np.dtype(np.int32),), default=x.dtype)
    shape3, ydt = _acb(x, ax, per).shape, y0.dtype
    s, z = np.array(s), np.array(z)     # writable copies (numba specialises on read-only)
    fast = _bound_map(kind.split("_")[0], x_shape, shape3, x_dtype, ydt, s, z, backend=backend)

    def run(x, out=None):
        y = None if fast is None else _bound_run(fast, x, out, x_shape, ydt)
        if y is not None:
            return y
        y = _planned_output(x, x_shape, x_dtype, x_shape, ydt, out)
        if y.size:
            bk = _config.resolve_backend(backend)
            _kernel(kind, bk)(_numba_writable(_contig(x), bk).reshape(shape3), s, z,
                              y.reshape(shape3))
        return y
    run.out_shape = x_shape
    run._fast = fast
    return run


def quantize_linear_plan(x_shape, scale, zero_point=None, axis=1, dtype=None, backend=None):
    """quantize_linear for float32 x of a fixed shape and constant parameters, validated once:
    returns ``run(x, out=None)`` (out C-contiguous, of the output shape and type)."""
    return _qdq_plan("quantize_linear", x_shape, np.float32, scale, zero_point, axis, dtype,
                     backend)


def dequantize_linear_plan(x_shape, x_dtype, scale, zero_point=None, axis=1, backend=None):
    """dequantize_linear for x of a fixed shape and type and constant parameters, validated
    once: returns ``run(x, out=None)`` (out C-contiguous float32 of x's shape)."""
    return _qdq_plan("dequantize_linear", x_shape, x_dtype, scale, zero_point, axis, None,
                     backend)


def dynamic_quantize_linear(x, backend=None):
    """ONNX DynamicQuantizeLinear-11: uint8 y with scale = (max(0, x) - min(0, x)) / 255 and
    zero point round(-min / scale) over the whole tensor -> (y, y_scale, y_zero_point)."""
    x = V.float_array(x, "x")
    x = np.asarray(x, np.float32)
    V.finite(x, "x")
    lo = np.float32(min(0.0, float(x.min()))) if x.size else np.float32(0)
    hi = np.float32(max(0.0, float(x.max()))) if x.size else np.float32(0)
    scale = np.float32((hi - lo) / np.float32(255))
    if scale == 0:       # an all-zero tensor: any scale maps it to the zero point 0
        scale = np.float32(1)
    zp = np.uint8(np.clip(np.rint(np.float32(0) - lo / scale), 0, 255))
    y = quantize_linear(x, scale, zp, backend=backend)
    return y, np.array(scale, np.float32), np.array(zp, np.uint8)


def requantize(acc, bias, scale, zero_point, dtype=np.uint8, axis=1, out=None, backend=None):
    """int32 accumulators -> 8-bit: saturate(round(float32(acc + bias[c]) * scale[c]) + zp),
    onnxruntime's requantization; bias (int32) and scale per channel along ``axis`` or one
    value each; zero_point one integer of ``dtype`` (uint8 or int8)."""
    acc = _qarray(acc, "acc", (np.dtype(np.int32),))
    dtype = np.dtype(dtype)
    if dtype not in QTYPES:
        raise DTypeError(f"dtype must be uint8 or int8, got {dtype}")
    axis = _axis(axis, acc.ndim)
    c = acc.shape[axis] if acc.ndim else 1
    s = _scale(scale, "scale", c)
    b = np.zeros(1, np.int32) if bias is None else np.asarray(bias)
    if b.dtype != np.int32:
        raise DTypeError(f"bias must have dtype int32, got {b.dtype}")
    if b.ndim > 1 or b.size not in (1, c):
        raise ShapeError(f"bias must have 1 or {c} values, got shape {b.shape}")
    per = s.size > 1 or b.size > 1
    if per:
        s = np.broadcast_to(s, (c,)).copy()
        b = np.broadcast_to(b.reshape(-1), (c,)).copy()
    zp = V.integer(int(np.asarray(zero_point).reshape(-1)[0]) if np.size(zero_point) == 1
                   else zero_point, "zero_point", lo=np.iinfo(dtype).min, hi=np.iinfo(dtype).max)
    out = V.output(out, acc.shape, dtype)
    av = _numba_writable(_contig(_acb(acc, axis, per)), backend)
    y = out if out.flags.c_contiguous else np.empty(acc.shape, dtype)
    _kernel("requantize", backend)(av, b.reshape(-1).astype(np.int32), s, zp, y.reshape(av.shape))
    if y is not out:
        out[...] = y
    return out


# ----------------------------------------------------------------------------- conv
def _conv_args(x, w, x_zero_point, w_zero_point, strides, pads, dilations, group, auto_pad):
    x = _qarray(x, "x")
    w = _qarray(w, "w")
    V.check_ndim(x, "x", ndim=4)
    V.check_ndim(w, "w", ndim=4)
    m = w.shape[0]
    xz, xzdt = _zero_point(x_zero_point, "x_zero_point", None, default=x.dtype)
    if x_zero_point is not None and xzdt != x.dtype:
        raise DTypeError(f"x_zero_point must have x's dtype {x.dtype}, got {xzdt}")
    wz, wzdt = _zero_point(w_zero_point, "w_zero_point", m, default=w.dtype)
    if w_zero_point is not None and wzdt != w.dtype:
        raise DTypeError(f"w_zero_point must have w's dtype {w.dtype}, got {wzdt}")
    geo = _conv_geometry(x.shape, w.shape, strides, pads, dilations, group, auto_pad)
    k = w.shape[1] * w.shape[2] * w.shape[3]
    if k > MAX_K:
        raise ShapeError(f"w has {k} taps per output (C/group*kH*kW); int32 accumulation is "
                         f"exact only up to {MAX_K}")
    return x, w, int(xz[0]), np.broadcast_to(wz, (m,)).astype(np.int32), geo


def _planned_output(x, x_shape, x_dtype, y_shape, y_dtype, out):
    """A planned int8 call's check that x is what the plan was made for, and its output
    (``out``, or a new array)."""
    if x.shape != x_shape or x.dtype != x_dtype:
        raise ShapeError(f"x must have shape {x_shape} and dtype {x_dtype} (as planned), "
                         f"got {x.shape} {x.dtype}")
    return np.empty(y_shape, y_dtype) if out is None else out


def _group_columns(x, group, cg, L, im2col, geometry, direct):
    """(image, group, its (cg * kh * kw, L) columns) for every image and group of x: the
    plane itself for a 1x1 stride-1 conv (``direct``), else im2col into one reused buffer."""
    kh, kw = geometry[1], geometry[2]
    cols = None if direct else np.empty((cg * kh * kw, L), x.dtype)
    for i in range(x.shape[0]):
        for g in range(group):
            xg = x[i, g * cg:(g + 1) * cg]
            if direct:
                yield i, g, xg.reshape(cg, L)
            else:
                im2col(xg, *geometry, cols)
                yield i, g, cols


def _conv_runner(x_shape, xz, w, wz, geo, backend):
    """``acc(x)`` -> int32 (N, M, OH, OW) = sum over taps of (x - xz) * (w - wz[m]) for x of
    ``x_shape``, with the weights laid out and the kernels resolved once (per backend)."""
    group, (sh, sw), (dh, dw), pads, (oh, ow) = geo
    n, c, h, wd = x_shape
    m, cg, kh, kw = w.shape
    w = np.ascontiguousarray(w)
    oshape = (n, m, oh, ow)
    mg, L = m // group, oh * ow
    depthwise = group == c and m == c
    direct = kh == kw == sh == sw == 1 and not any(pads)
    wg = w.reshape(c, kh, kw) if depthwise else w.reshape(group, mg, cg * kh * kw)
    xfill = np.full(L, xz, np.int32)
    bound = {}

    def kernels(bk):
        got = bound.get(bk)
        if got is None:
            ww = _numba_writable(wg, bk)
            got = bound[bk] = (ww, _kernel("qdepthwise" if depthwise else "qgemm", bk),
                               None if depthwise or direct else _kernel("im2col_q", bk))
        return got

    def acc_of(x):
        acc = np.empty(oshape, np.int32)
        if acc.size == 0:
            return acc
        bk = _config.resolve_backend(backend)
        ww, k, im2col = kernels(bk)
        x = _numba_writable(_contig(x), bk)
        if depthwise:
            for i in range(n):
                k(x[i], xz, ww, wz, sh, sw, pads[0], pads[1], dh, dw, acc[i])
            return acc
        geometry = (xz, kh, kw, sh, sw, pads[0], pads[1], dh, dw, oh, ow)
        for i, g, b in _group_columns(x, group, cg, L, im2col, geometry, direct):
            k(ww[g], wz[g * mg:(g + 1) * mg], b, xfill,
              acc[i, g * mg:(g + 1) * mg].reshape(mg, L))
        return acc
    acc_of.out_shape = oshape
    return acc_of


def _conv_acc(x, xz, w, wz, geo, backend):
    return _conv_runner(x.shape, xz, w, wz, geo, backend)(x)


def conv_integer2d(x, w, x_zero_point=None, w_zero_point=None, strides=(1, 1),
                   pads=(0, 0, 0, 0), dilations=(1, 1), group=1, auto_pad="NOTSET",
                   backend=None):
    """ONNX ConvInteger-10 on NCHW: int32 sum of (x - x_zero_point) * (w - w_zero_point);
    x_zero_point per tensor, w_zero_point per tensor or per output channel (M,)."""
    x, w, xz, wz, geo = _conv_args(x, w, x_zero_point, w_zero_point, strides, pads, dilations,
                                   group, auto_pad)
    return _conv_acc(x, xz, w, wz, geo, backend)


def conv_multiplier(x_scale, w_scale, y_scale, m):
    """onnxruntime's requantization multiplier of a QLinearConv: float32 x_scale * w_scale[m]
    / y_scale (per output channel)."""
    xs = _scale(x_scale, "x_scale")
    ws = _scale(w_scale, "w_scale", m)
    ys = _scale(y_scale, "y_scale")
    return np.broadcast_to((xs[0] * ws) / ys[0], (m,)).astype(np.float32)


def _bias32(bias, m):
    if bias is None:
        return np.zeros(m, np.int32)
    b = np.asarray(bias)
    if b.dtype != np.int32:
        raise DTypeError(f"bias must have dtype int32, got {b.dtype}")
    V.check_shape(b, (m,), "bias")
    return np.ascontiguousarray(b)


def qlinear_conv2d(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point,
                   bias=None, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1,
                   auto_pad="NOTSET", out=None, backend=None):
    """ONNX QLinearConv-10 on NCHW: x uint8/int8 (per-tensor scale and zero point), w
    int8/uint8 with per-tensor or per-output-channel scale and zero point, bias int32 (M,)
    (in units of x_scale * w_scale), y of y_zero_point's type."""
    x, w, xz, wz, geo = _conv_args(x, w, x_zero_point, w_zero_point, strides, pads, dilations,
                                   group, auto_pad)
    m = w.shape[0]
    mult = conv_multiplier(x_scale, w_scale, y_scale, m)
    yz, ydt = _zero_point(y_zero_point, "y_zero_point", None, default=x.dtype)
    b = _bias32(bias, m)
    acc = _conv_acc(x, xz, w, wz, geo, backend)
    return requantize(acc, b, mult, int(yz[0]), ydt, axis=1, out=out, backend=backend)


def clamp_of_tables(tables, dtype):
    """(lo, hi) where every row of ``tables`` ((M, 256), the bits of 8-bit ``dtype`` values
    as uint8) is the clamp t[v] = min(max(v, lo), hi) (a Relu / Clip after a conv, in the
    integer domain), else None."""
    t = np.asarray(tables)
    if t.ndim != 2 or t.shape[1] != 256 or t.shape[0] == 0 or (t != t[:1]).any():
        return None
    dtype = np.dtype(dtype)
    v = np.arange(256, dtype=np.uint8).view(dtype).astype(np.int32)   # index -> value
    got = t[0].view(dtype).astype(np.int32)
    lo, hi = int(got.min()), int(got.max())
    return (lo, hi) if (got == np.clip(v, lo, hi)).all() else None


def _qconv_gemm_plan(x_shape, x_dtype, xz, w, wz, geo, bias, mult, yz, ydt, backend,
                     tables):
    """run(x, out=None) of a grouped / dense QLinearConv as one qgemm_requant per image and
    group: the weights minus their zero points (int16) and corr = bias - xz * their row sums
    made here, so the kernel multiplies the raw 8-bit columns and requantizes each tile as
    it leaves the GEMM (no int32 tensor between them). tables: (M, 256) uint8, an 8-bit
    activation's per output channel, or None."""
    group, (sh, sw), (dh, dw), pads, (oh, ow) = geo
    n, c, h, wdt = x_shape
    m, cg, kh, kw = w.shape
    mg, L, k = m // group, oh * ow, cg * kh * kw
    oshape = (n, m, oh, ow)
    wd = (w.reshape(group, mg, k).astype(np.int16) - wz.reshape(group, mg, 1).astype(np.int16))
    # exact in int64, then wrapped to int32 like the kernels' sums (the total fits int32)
    corr = (bias.astype(np.int64) - xz * wd.sum(axis=2, dtype=np.int64).reshape(m))
    corr = corr.astype(np.int32).reshape(group, mg)
    mult = np.ascontiguousarray(mult, np.float32).reshape(group, mg)
    direct = kh == kw == sh == sw == 1 and not any(pads)
    # a stem over few channels (the image's): the direct kernel where the Cython backend
    # has it for this CPU and shape (it says so on its first call), else the GEMM
    stem = (group == 1 and k <= _STEM_MAX_K and dh == dw == 1 and not direct
            and x_dtype == np.uint8 and -128 <= wd.min(initial=0) and wd.max(initial=0) <= 127)
    narrow_run = []     # _NarrowQConv where it runs: made on the first Cython call
    bound = {}
    fast = None
    if n == 1 and group == 1 and _bound_backend(backend):
        stem_w = None
        if stem:
            stem_w = np.zeros(((m + 15) // 16 * 16, 4 * ((k + 3) // 4)), np.int8)
            stem_w[:m, :k] = wd.reshape(m, k)
        cy = _dispatch.twin_module("quant", "cython")
        clamp = None if tables is None else clamp_of_tables(tables, ydt)
        fast = cy.QConv8(False, cy.qgemm_pack(wd[0]), None, None, stem_w, corr[0], mult[0],
                         xz, yz, x_dtype == np.int8, ydt == np.int8, tables, c, h, wdt, m, oh,
                         ow, kh, kw, sh, sw, pads[0], pads[1], dh, dw, clamp)

    def kernels(bk):
        # the kernels, and the weights laid out for them once per backend (qgemm_pack)
        got = bound.get(bk)
        if got is None:
            pack = _kernel("qgemm_pack", bk)
            stem_kernel = None
            if stem and bk == "cython":
                w4 = np.zeros(((m + 15) // 16 * 16, 4 * ((k + 3) // 4)), np.int8)
                w4[:m, :k] = wd.reshape(m, k)
                stem_kernel = (_kernel("qconv_direct_requant", bk), w4)
            got = bound[bk] = [_kernel("qgemm_requant_packed", bk),
                               None if direct else _kernel("im2col_q", bk),
                               [pack(_numba_writable(wd[g], bk)) for g in range(group)],
                               stem_kernel]
        return got

    def run(x, out=None):
        y = None if fast is None else _bound_run(fast, x, out, oshape, ydt)
        if y is not None:
            return y
        y = _planned_output(x, x_shape, x_dtype, oshape, ydt, out)
        if y.size == 0:
            return y
        bk = _config.resolve_backend(backend)
        got = kernels(bk)
        gemm, im2col, packed, stem_kernel = got
        x = _numba_writable(_contig(x), bk)
        if stem_kernel is not None:
            kern, w4 = stem_kernel
            args = (xz, w4, kh, kw, sh, sw, pads[0], pads[1], corr[0], mult[0], yz)
            if kern(x[0], *args, y[0], tables):
                for i in range(1, n):
                    kern(x[i], *args, y[i], tables)
                return y
            got[3] = None             # not on this CPU or shape: the GEMM from now on
        if bk == "cython":
            if not narrow_run:
                narrow_run.append(_NarrowQConv.make(x_dtype, ydt, w.shape, geo))
            if narrow_run[0] is not None:
                narrow_run[0](x, y, xz, gemm, packed, corr, mult, yz, tables)
                return y
        geometry = (xz, kh, kw, sh, sw, pads[0], pads[1], dh, dw, oh, ow)
        for i, g, bm in _group_columns(x, group, cg, L, im2col, geometry, direct):
            gemm(packed[g], corr[g], mult[g], yz, bm, y[i, g * mg:(g + 1) * mg].reshape(mg, L),
                 None if tables is None else tables[g * mg:(g + 1) * mg])
        return y
    run.out_shape = oshape
    run._fast = fast
    return run


class _NarrowQConv:
    """_qconv_gemm_plan's stride-1 convs of narrow outputs on the Cython backend: the GEMM
    over the im2col of the padded width (im2col_q_padded: one copy a tap, where the per-row
    im2col spent most of the time of a head's 3x3 conv over 256 channels at 4 x 5), into
    oh x wq columns, of which each row's first ow are the output. Its scratch buffers are
    kept between calls (a pool: concurrent runs each take their own)."""

    @classmethod
    def make(cls, x_dtype, y_dtype, wshape, geo):
        """The runner of a conv of this geometry, or None where the Cython rule
        (padded_im2col_ok, shared with the float convs) says the per-row path runs."""
        _, (sh, sw), (_, dw), _, (oh, ow) = geo
        cy = _dispatch.twin_module("quant", "cython")
        if not cy.padded_im2col_ok(oh, ow, wshape[2], wshape[3], sh, sw, dw):
            return None
        return cls(x_dtype, y_dtype, wshape, geo)

    def __init__(self, x_dtype, y_dtype, wshape, geo):
        group, _, (dh, dw), pads, (oh, ow) = geo
        m, cg, kh, kw = wshape
        self.geo, self.wshape, self.x_dtype, self.y_dtype = geo, wshape, x_dtype, y_dtype
        self.wq = ow + (kw - 1) * dw
        self.ld = -(-oh * self.wq // 16) * 16      # whole 16-column steps of the packing
        self.npad = cg * (oh + (kh - 1) * dh) * self.wq + (kw - 1) * dw + self.ld - oh * self.wq
        self.im2col = _dispatch.twin_module("quant", "cython").im2col_q_padded
        self.pool = []

    def _scratch(self):
        try:
            return self.pool.pop()
        except IndexError:
            _, cg, kh, kw = self.wshape
            mg = self.wshape[0] // self.geo[0]
            return (np.empty(self.npad, self.x_dtype),
                    np.empty((cg * kh * kw, self.ld), self.x_dtype),
                    np.empty((mg, self.ld), self.y_dtype))

    def __call__(self, x, y, xz, gemm, packed, corr, mult, yz, tables):
        group, _, (dh, dw), pads, (oh, ow) = self.geo
        m, cg, kh, kw = self.wshape
        mg, wq = m // group, self.wq
        pad, cols, y2 = buffers = self._scratch()
        try:
            for i in range(x.shape[0]):
                for g in range(group):
                    self.im2col(x[i, g * cg:(g + 1) * cg], xz, kh, kw, pads[0], pads[1], dh,
                                dw, oh, ow, pad, cols)
                    gemm(packed[g], corr[g], mult[g], yz, cols, y2,
                         None if tables is None else tables[g * mg:(g + 1) * mg])
                    y[i, g * mg:(g + 1) * mg] = y2[:, :oh * wq].reshape(mg, oh, wq)[:, :, :ow]
        finally:
            self.pool.append(buffers)


def qlinear_conv2d_plan(x_shape, x_dtype, x_scale, x_zero_point, w, w_scale, w_zero_point,
                        y_scale, y_zero_point, bias=None, strides=(1, 1), pads=(0, 0, 0, 0),
                        dilations=(1, 1), group=1, auto_pad="NOTSET", backend=None,
                        tables=None):
    """qlinear_conv2d prepared once for a fixed input shape and constant parameters (the ONNX
    planner's path): validates everything now; returns ``run(x, out=None)``, which checks
    only x's shape and dtype and runs the kernels. ``run.out_shape`` is (N, M, OH, OW).
    ``tables`` (M, 256) of y's type: then y[:, c] = tables[c][y[:, c]] (an 8-bit activation
    after the conv, QChannelLookup's semantics), applied as the Cython kernels make each
    row or plane, right after the conv on the other backends."""
    x_shape = tuple(int(d) for d in x_shape)
    x_dtype = np.dtype(x_dtype)
    x, w, xz, wz, geo = _conv_args(np.empty(x_shape, x_dtype), w, x_zero_point, w_zero_point,
                                   strides, pads, dilations, group, auto_pad)
    m = w.shape[0]
    mult = conv_multiplier(x_scale, w_scale, y_scale, m)
    yz, ydt = _zero_point(y_zero_point, "y_zero_point", None, default=x_dtype)
    yz = int(yz[0])
    b = np.array(_bias32(bias, m))      # a writable copy (numba specialises on read-only)
    group = geo[0]
    if tables is not None:      # their bits as uint8, a writable copy (numba: no read-only)
        tables = np.array(_qarray(tables, "tables"), order="C")
        if tables.dtype != ydt or tables.shape != (m, 256):
            raise ShapeError(f"tables must be ({m}, 256) {ydt} (the conv's output type), got "
                             f"{tables.shape} {tables.dtype}")
        tables = tables.view(np.uint8)
    if not (group == x_shape[1] and m == x_shape[1]):      # not depthwise: fused GEMM
        return _qconv_gemm_plan(x_shape, x_dtype, xz, w, wz, geo, b, mult, yz, ydt, backend,
                                tables)
    return _qconv_depthwise_plan(x_shape, x_dtype, xz, w, wz, geo, b, mult, yz, ydt, backend,
                                 tables)


def _qconv_depthwise_plan(x_shape, x_dtype, xz, w, wz, geo, bias, mult, yz, ydt, backend,
                          tables):
    """run(x, out=None) of a depthwise QLinearConv: one qdepthwise_requant per image (the
    Cython kernel requantizes each output row as it is made)."""
    _, (sh, sw), (dh, dw), pads, (oh, ow) = geo
    n, c = x_shape[:2]
    kh, kw = w.shape[2:]
    oshape = (n, c, oh, ow)
    wc = np.ascontiguousarray(w.reshape(c, kh, kw))
    wz = np.array(wz, np.int32)
    bound = {}
    fast = None
    if n == 1 and dh == dw == 1 and _bound_backend(backend):
        fast = _dispatch.twin_module("quant", "cython").QConv8(
            True, None, wc, wz, None, bias, mult, xz, yz, x_dtype == np.int8, ydt == np.int8,
            tables, c, x_shape[2], x_shape[3], c, oh, ow, kh, kw, sh, sw, pads[0], pads[1],
            dh, dw)

    def kernel(bk):
        got = bound.get(bk)
        if got is None:
            got = bound[bk] = (_kernel("qdepthwise_requant", bk), _numba_writable(wc, bk))
        return got

    def run(x, out=None):
        y = None if fast is None else _bound_run(fast, x, out, oshape, ydt)
        if y is not None:
            return y
        y = _planned_output(x, x_shape, x_dtype, oshape, ydt, out)
        if y.size:
            bk = _config.resolve_backend(backend)
            k, ww = kernel(bk)
            x = _numba_writable(_contig(x), bk)
            for i in range(n):
                k(x[i], xz, ww, wz, sh, sw, pads[0], pads[1], dh, dw, bias, mult, yz, y[i],
                  tables)
        return y
    run.out_shape = oshape
    run._fast = fast
    return run


# ----------------------------------------------------------------------------- matmul
def _mm_zp(z, name, n, dtype):
    zz, zdt = _zero_point(z, name, n, default=dtype)
    if z is not None and zdt != dtype:
        raise DTypeError(f"{name} must have the dtype of its matrix ({dtype}), got {zdt}")
    return np.broadcast_to(zz, (n,)).astype(np.int32)


def _matmul_acc(a, b, a_zp, b_zp, backend):
    """int32 of np.matmul(a - a_zp[row], b - b_zp[col]) with NumPy's broadcasting."""
    a = _qarray(a, "a")
    b = _qarray(b, "b")
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"a and b must have rank >= 1, got shapes {a.shape} and {b.shape}")
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    m, k = a2.shape[-2:]
    if b2.shape[-2] != k:
        raise ShapeError(f"a and b do not multiply: shapes {a.shape} and {b.shape}")
    if k > MAX_K:
        raise ShapeError(f"inner dimension {k} exceeds {MAX_K} (int32 accumulation)")
    n = b2.shape[-1]
    try:
        batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ShapeError(f"a and b batch dimensions do not broadcast: shapes {a.shape} and "
                         f"{b.shape}") from None
    az = _mm_zp(a_zp, "a_zero_point", m, a.dtype)
    bz = _mm_zp(b_zp, "b_zero_point", n, b.dtype)
    ab = _numba_writable(np.ascontiguousarray(np.broadcast_to(a2, batch + (m, k))), backend)
    bb = _numba_writable(np.ascontiguousarray(np.broadcast_to(b2, batch + (k, n))), backend)
    acc = np.empty(batch + (m, n), np.int32)
    gemm = _kernel("qgemm", backend)
    af, bf, cf = ab.reshape(-1, m, k), bb.reshape(-1, k, n), acc.reshape(-1, m, n)
    for i in range(cf.shape[0]):
        gemm(af[i], az, bf[i], bz, cf[i])
    shape = acc.shape
    if a.ndim == 1:
        shape = shape[:-2] + shape[-1:]
    if b.ndim == 1:
        shape = shape[:-1]
    return acc.reshape(shape), m, n


def matmul_integer(a, b, a_zero_point=None, b_zero_point=None, backend=None):
    """ONNX MatMulInteger-10: int32 matmul of (a - a_zero_point) and (b - b_zero_point);
    a_zero_point per tensor or per row (M,), b_zero_point per tensor or per column (N,)."""
    return _matmul_acc(a, b, a_zero_point, b_zero_point, backend)[0]


def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point,
                   out=None, backend=None):
    """ONNX QLinearMatMul-10/21: the requantized matmul; a's parameters per tensor or per row,
    b's per tensor or per column (not both per row and per column), y's per tensor."""
    a = _qarray(a, "a")
    b = _qarray(b, "b")
    m = a.shape[-2] if a.ndim >= 2 else 1
    n = b.shape[-1] if b.ndim >= 2 else 1
    as_ = _scale(a_scale, "a_scale", m)
    bs = _scale(b_scale, "b_scale", n)
    ys = _scale(y_scale, "y_scale")
    if as_.size > 1 and bs.size > 1:
        raise ValidationError("a_scale per row and b_scale per column together are not "
                              "supported (one requantization axis)")
    yz, ydt = _zero_point(y_zero_point, "y_zero_point", None, default=a.dtype)
    acc, m, n = _matmul_acc(a, b, a_zero_point, b_zero_point, backend)
    mult = (as_ * bs) / ys[0]
    if acc.ndim == 0:
        acc = acc.reshape(1)
    if bs.size > 1:
        axis = acc.ndim - 1
    elif as_.size > 1:
        axis = acc.ndim - 2
    else:
        axis = max(acc.ndim - 1, 0)
    y = requantize(acc, None, mult.astype(np.float32), int(yz[0]), ydt, axis=axis,
                   backend=backend)
    if out is not None:
        out[...] = y
        return out
    return y


def qgemm(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c=None, y_scale=None,
          y_zero_point=None, alpha=1.0, trans_a=False, trans_b=False, backend=None):
    """com.microsoft QGemm (onnxruntime's quantized Gemm, also what its QDQ transformer makes
    of DQ -> Gemm -> Q): acc = (A' - a_zero_point) @ (B' - b_zero_point) in int32 (A' = a or
    a.T, B' likewise; a's parameters per tensor, b's per tensor or per column of B'), plus
    ``c`` (int32, broadcast to (M, N)), then requantized with float32 alpha * a_scale *
    b_scale[n] / y_scale into y_zero_point's type, or (no y_zero_point) that float32 scale
    times acc (y_scale dividing it when given, as onnxruntime does)."""
    a, b = _qarray(a, "a"), _qarray(b, "b")
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"a and b must be 2-D, got shapes {a.shape} and {b.shape}")
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    n = b.shape[1]
    as_ = _scale(a_scale, "a_scale")
    bs = _scale(b_scale, "b_scale", n)
    acc, m, n = _matmul_acc(a, b, a_zero_point, b_zero_point, backend)
    if c is not None:
        c = np.asarray(c)
        if c.dtype != np.int32:
            raise DTypeError(f"c must have dtype int32, got {c.dtype}")
        try:
            acc = acc + np.broadcast_to(c, (m, n))      # int32 sums wrap, as the kernels'
        except ValueError:
            raise ShapeError(f"c of shape {c.shape} does not broadcast to ({m}, {n})") \
                from None
    mult = np.float32(alpha) * as_[0] * bs                 # onnxruntime's order, float32
    if y_scale is not None:
        mult = mult / _scale(y_scale, "y_scale")[0]
    mult = np.broadcast_to(mult.astype(np.float32), (n,))
    if y_zero_point is None:
        return acc.astype(np.float32) * mult
    yz, ydt = _zero_point(y_zero_point, "y_zero_point", None, default=a.dtype)
    return requantize(np.ascontiguousarray(acc, np.int32), None, mult, int(yz[0]), ydt,
                      axis=1, backend=backend)


# ----------------------------------------------------------------------------- tables
def lookup_table(fn, x_scale, x_zero_point, x_dtype, y_scale, y_zero_point, y_dtype,
                 backend=None):
    """The 256-entry table of y = quantize(fn(dequantize(x))) indexed by x's bits as uint8
    (onnxruntime's QLinearSigmoid / LeakyRelu / Concat requantization); ``fn`` maps a
    float32 array to a float32 array."""
    x_dtype = np.dtype(x_dtype)
    if x_dtype not in QTYPES:
        raise DTypeError(f"x dtype must be uint8 or int8, got {x_dtype}")
    xs = np.arange(256, dtype=np.uint16).astype(np.uint8).view(x_dtype)
    f = dequantize_linear(xs, x_scale, np.asarray(x_zero_point, x_dtype), backend=backend)
    yv = np.asarray(fn(f), np.float32)
    return quantize_linear(yv, y_scale, np.asarray(y_zero_point, y_dtype), backend=backend)


def lookup(x, table, out=None, backend=None):
    """out = table[x's bits as uint8] elementwise; x uint8/int8, table (256,) uint8/int8."""
    x = _qarray(x, "x")
    table = _qarray(table, "table")
    V.check_shape(table, (256,), "table")
    out = V.output(out, x.shape, table.dtype)
    xf = _contig(x).reshape(-1).view(np.uint8)
    y = out if out.flags.c_contiguous else np.empty(x.shape, table.dtype)
    _kernel("lookup", backend)(_numba_writable(xf, backend), _numba_writable(
        np.ascontiguousarray(table), backend), y.reshape(-1))
    if y is not out:
        out[...] = y
    return out


def lookup_plan(x_shape, x_dtype, table, backend=None):
    """lookup for x of a fixed shape and 8-bit type with a constant table, validated once:
    returns ``run(x, out=None)`` (out C-contiguous, of x's shape and the table's type)."""
    x_shape = tuple(int(d) for d in x_shape)
    x_dtype = np.dtype(x_dtype)
    if x_dtype not in QTYPES:
        raise DTypeError(f"x must have dtype uint8 or int8, got {x_dtype}")
    table = np.array(_qarray(table, "table"))      # a writable copy (numba: no read-only)
    V.check_shape(table, (256,), "table")
    n = int(np.prod(x_shape, dtype=np.int64))
    fast = _bound_map("lookup", x_shape, (1, 1, n), x_dtype, table.dtype, table=table,
                      backend=backend)

    def run(x, out=None):
        y = None if fast is None else _bound_run(fast, x, out, x_shape, table.dtype)
        if y is not None:
            return y
        y = _planned_output(x, x_shape, x_dtype, x_shape, table.dtype, out)
        if n:
            bk = _config.resolve_backend(backend)
            _kernel("lookup", bk)(_numba_writable(_contig(x), bk).reshape(n).view(np.uint8),
                                  table, y.reshape(n))
        return y
    run.out_shape = x_shape
    run._fast = fast
    return run


def _channel_tables(tables, x_shape, axis):
    """Validated (tables as a writable C-contiguous copy, axis >= 0, x as (N, C, P))."""
    tables = np.array(_qarray(tables, "tables"), order="C")   # numba: no read-only arrays
    if tables.ndim != 2 or tables.shape[1] != 256:
        raise ShapeError(f"tables must have shape (C, 256), got {tables.shape}")
    if len(x_shape) == 0:
        raise ShapeError("x must have at least one axis (the channel axis), got a scalar")
    axis = _axis(axis, len(x_shape))
    if x_shape[axis] != tables.shape[0]:
        raise ShapeError(f"tables has {tables.shape[0]} rows but x has {x_shape[axis]} "
                         f"channels (axis {axis} of shape {tuple(x_shape)})")
    n = int(np.prod(x_shape[:axis], dtype=np.int64))
    p = int(np.prod(x_shape[axis + 1:], dtype=np.int64))
    return tables, axis, (n, tables.shape[0], p)


def channel_lookup(x, tables, axis=1, out=None, backend=None):
    """A table per channel: out[..., c, ...] = tables[c, x[..., c, ...]'s bits as uint8]
    along ``axis``; x uint8/int8, tables (C, 256) uint8/int8 with C = x.shape[axis]; out has
    x's shape and the tables' type. (A per-channel float chain between a DequantizeLinear
    and a QuantizeLinear, evaluated on all 256 values of each channel.)"""
    x = _qarray(x, "x")
    tables, axis, shape3 = _channel_tables(tables, x.shape, axis)
    out = V.output(out, x.shape, tables.dtype)
    if x.size == 0:
        return out
    y = out if out.flags.c_contiguous else np.empty(x.shape, tables.dtype)
    bk = _config.resolve_backend(backend)
    _kernel("channel_lookup", bk)(_numba_writable(_contig(x).view(np.uint8).reshape(shape3),
                                                  bk), tables, y.reshape(shape3))
    if y is not out:
        out[...] = y
    return out


def channel_lookup_plan(x_shape, x_dtype, tables, axis=1, backend=None):
    """channel_lookup for x of a fixed shape and 8-bit type with constant tables, validated
    once: returns ``run(x, out=None)`` (out C-contiguous, of x's shape and the tables' type).
    One table (C == 1 along a size-1 axis) runs as ``lookup``."""
    x_shape = tuple(int(d) for d in x_shape)
    x_dtype = np.dtype(x_dtype)
    if x_dtype not in QTYPES:
        raise DTypeError(f"x must have dtype uint8 or int8, got {x_dtype}")
    tables, axis, shape3 = _channel_tables(tables, x_shape, axis)
    if tables.shape[0] == 1:
        one = lookup_plan(x_shape, x_dtype, tables[0], backend)
        run = lambda x, out=None: one(x, out)   # noqa: E731
        run.out_shape = x_shape
        return run
    n = int(np.prod(x_shape, dtype=np.int64))

    def run(x, out=None):
        y = _planned_output(x, x_shape, x_dtype, x_shape, tables.dtype, out)
        if n:
            bk = _config.resolve_backend(backend)
            _kernel("channel_lookup", bk)(
                _numba_writable(_contig(x), bk).view(np.uint8).reshape(shape3), tables,
                y.reshape(shape3))
        return y
    run.out_shape = x_shape
    run._fast = None     # (no bound form yet)
    return run


# ----------------------------------------------------------------------------- com.microsoft
def qlinear_binary(op, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale,
                   c_zero_point):
    """com.microsoft QLinearAdd / QLinearMul with NumPy broadcasting, in onnxruntime's float32
    arithmetic: add = round(zc - (ra*za + rb*zb) + ra*a + rb*b) with ra = a_scale / c_scale,
    rb = b_scale / c_scale (its x86 kernel's order), mul = round((a - za) * (b - zb) *
    (a_scale * b_scale / c_scale)) + zc, saturated."""
    a = _qarray(a, "A")
    b = _qarray(b, "B")
    if a.dtype != b.dtype:
        raise DTypeError(f"A and B must have one dtype, got {a.dtype} and {b.dtype}")
    sa, sb, sc = (_scale(s, n) for s, n in ((a_scale, "A_scale"), (b_scale, "B_scale"),
                                              (c_scale, "C_scale")))
    za, zb, zc = (_zero_point(z, n, None, (a.dtype,), a.dtype)[0][0]
                  for z, n in ((a_zero_point, "A_zero_point"), (b_zero_point, "B_zero_point"),
                               (c_zero_point, "C_zero_point")))
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ShapeError(f"A and B do not broadcast: shapes {a.shape} and {b.shape}") from None
    mul, ra, rb, fixed, zaf, zbf, zcf = _qbinary_params(op, sa, sb, sc, za, zb, zc)
    info = np.iinfo(a.dtype)
    if not mul:
        v = (fixed + a.astype(np.float32) * ra) + b.astype(np.float32) * rb
        return np.clip(np.rint(v), info.min, info.max).astype(a.dtype)
    fa = (a.astype(np.int32) - za).astype(np.float32)
    fb = (b.astype(np.int32) - zb).astype(np.float32)
    v = fa * fb * ra
    return np.clip(np.rint(v) + zcf, info.min, info.max).astype(a.dtype)


def _qbinary_params(op, sa, sb, sc, za, zb, zc):
    """(mul, ra, rb, fixed, za, zb, zc) float32 of qlinear_binary: add in onnxruntime's x86
    form, the zero points folded into one constant (v = (fixed + a * ra) + b * rb); mul
    v = (a - za) * (b - zb) * ra, rounded, + zc."""
    if op == "add":
        ra, rb = sa[0] / sc[0], sb[0] / sc[0]
        fixed = np.float32(zc) - (ra * np.float32(za) + rb * np.float32(zb))
        return 0, ra, rb, fixed, np.float32(0), np.float32(0), np.float32(0)
    if op == "mul":
        return (1, (sa[0] * sb[0]) / sc[0], np.float32(0), np.float32(0), np.float32(za),
                np.float32(zb), np.float32(zc))
    raise ValidationError(f"op must be 'add' or 'mul', got {op!r}")


def qlinear_binary_plan(op, a_scale, a_zero_point, b_scale, b_zero_point, c_scale,
                        c_zero_point, dtype, backend=None):
    """qlinear_binary with constant parameters and 8-bit ``dtype``, validated once: returns
    ``run(a, b, out=None)`` (a, b of ``dtype``, broadcasting). The kernel ``qbinary`` computes
    the float32 arithmetic of qlinear_binary value by value, the same bits."""
    dtype = np.dtype(dtype)
    if dtype not in QTYPES:
        raise DTypeError(f"dtype must be uint8 or int8, got {dtype}")
    zero = np.zeros(1, dtype)
    qlinear_binary(op, zero, a_scale, a_zero_point, zero, b_scale, b_zero_point, c_scale,
                   c_zero_point)                                    # validates everything
    sa, sb, sc = (_scale(s, n) for s, n in ((a_scale, "A_scale"), (b_scale, "B_scale"),
                                              (c_scale, "C_scale")))
    za, zb, zc = (_zero_point(z, n, None, (dtype,), dtype)[0][0]
                  for z, n in ((a_zero_point, "A_zero_point"), (b_zero_point, "B_zero_point"),
                               (c_zero_point, "C_zero_point")))
    params = tuple(float(v) for v in _qbinary_params(op, sa, sb, sc, za, zb, zc))
    info = np.iinfo(dtype)
    bounds = (float(info.min), float(info.max))
    fast = (_dispatch.twin_module("quant", "cython").QBinary8(
        dtype == np.int8, int(params[0]), *params[1:], *bounds)
        if _bound_backend(backend) else None)

    def run(a, b, out=None):
        if fast is not None:    # (operands of one shape, contiguous: else declined)
            y = np.empty(np.shape(a), dtype) if out is None else out
            if fast(a, b, y):
                return y
        a = _qarray(a, "A", (dtype,))
        b = _qarray(b, "B", (dtype,))
        if a.shape != b.shape:
            try:
                a, b = np.broadcast_arrays(a, b)
            except ValueError:
                raise ShapeError(f"A and B do not broadcast: shapes {a.shape} and "
                                 f"{b.shape}") from None
        out = V.output(out, a.shape, dtype)
        y = out if out.flags.c_contiguous else np.empty(a.shape, dtype)
        if y.size:
            bk = _config.resolve_backend(backend)
            _kernel("qbinary", bk)(_numba_writable(_contig(a), bk).reshape(-1),
                                   _numba_writable(_contig(b), bk).reshape(-1),
                                   int(params[0]), *params[1:], *bounds, y.reshape(-1))
        if y is not out:
            out[...] = y
        return out
    return run


def qlinear_binary_table(op, a_scale, a_zero_point, b_scale, b_zero_point, c_scale,
                         c_zero_point, dtype):
    """The 65536-entry table of qlinear_binary(op, ...) over every pair of 8-bit values of
    ``dtype``, indexed by a's bits * 256 + b's bits (for ``lookup2``)."""
    dtype = np.dtype(dtype)
    if dtype not in QTYPES:
        raise DTypeError(f"dtype must be uint8 or int8, got {dtype}")
    bits = np.arange(256, dtype=np.uint16).astype(np.uint8).view(dtype)
    a, b = np.repeat(bits, 256), np.tile(bits, 256)
    z = [np.zeros((), dtype) if v is None else v
         for v in (a_zero_point, b_zero_point, c_zero_point)]
    return qlinear_binary(op, a, a_scale, z[0], b, b_scale, z[1], c_scale, z[2])


def lookup2(a, b, table, out=None, backend=None):
    """out = table[a's bits * 256 + b's bits] elementwise with NumPy broadcasting; a, b of one
    8-bit type, table (65536,) uint8/int8."""
    a = _qarray(a, "a")
    b = _qarray(b, "b")
    table = _qarray(table, "table")
    V.check_shape(table, (65536,), "table")
    if a.dtype != b.dtype:
        raise DTypeError(f"a and b must have one dtype, got {a.dtype} and {b.dtype}")
    if a.shape != b.shape:
        try:
            a, b = np.broadcast_arrays(a, b)
        except ValueError:
            raise ShapeError(f"a and b do not broadcast: shapes {a.shape} and {b.shape}") \
                from None
    out = V.output(out, a.shape, table.dtype)
    y = out if out.flags.c_contiguous else np.empty(a.shape, table.dtype)
    bk = _config.resolve_backend(backend)
    flat = [_numba_writable(_contig(v).reshape(-1).view(np.uint8), bk) for v in (a, b)]
    _kernel("lookup2", bk)(flat[0], flat[1], _numba_writable(np.ascontiguousarray(table), bk),
                           y.reshape(-1))
    if y is not out:
        out[...] = y
    return out


def qlinear_global_avg_pool2d(x, x_scale, x_zero_point, y_scale, y_zero_point,
                              channels_last=False, backend=None):
    """com.microsoft QLinearGlobalAveragePool: the int32 sum of (x - zx) over the spatial
    axes, requantized by x_scale / (y_scale * H*W) (onnxruntime's arithmetic)."""
    x = _qarray(x, "X")
    V.check_ndim(x, "X", min_ndim=3)
    zx = _zero_point(x_zero_point, "x_zero_point", None, (x.dtype,), x.dtype)[0][0]
    zy = _zero_point(y_zero_point, "y_zero_point", None, (x.dtype,), x.dtype)[0][0]
    sx, sy = _scale(x_scale, "x_scale"), _scale(y_scale, "y_scale")
    axes = tuple(range(1, x.ndim - 1)) if channels_last else tuple(range(2, x.ndim))
    hw = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if hw == 0:
        raise ShapeError(f"X must have a non-empty spatial size, got shape {x.shape}")
    if hw > (2**31 - 1) // 255:
        raise ShapeError(f"X's spatial size {hw} overflows the int32 sum")
    acc = x.astype(np.int32).sum(axis=axes, keepdims=True, dtype=np.int64) - hw * int(zx)
    mult = np.float32(sx[0] / (sy[0] * np.float32(hw)))
    return requantize(acc.astype(np.int32), None, mult, int(zy), x.dtype, backend=backend)


def qlinear_avg_pool2d_plan(x_shape, x_dtype, kernel_shape, x_scale, x_zero_point, y_scale,
                            y_zero_point, strides=None, pads=(0, 0, 0, 0), dilations=(1, 1),
                            ceil_mode=False, auto_pad="NOTSET", count_include_pad=False,
                            backend=None):
    """com.microsoft QLinearAveragePool of NCHW ``x_shape`` (uint8 / int8) in integers,
    validated once: each window's exact int32 sum of (x - x_zero_point) over its taps inside
    the image (padding is a real 0), times x_scale / (y_scale * count) in float32, rounded
    half to even, plus y_zero_point, saturated. count: the taps inside the image, or with
    ``count_include_pad`` the whole kernel (as onnxruntime divides). That is onnxruntime's
    float average of the dequantized values up to its float rounding (within one step).
    Returns ``run(x, out=None)`` (``run.out_shape``), or None where a window holds no input
    or its sums would not stay exact (the caller's float path then computes it)."""
    from . import pooling as P
    x_shape = tuple(int(d) for d in x_shape)
    x_dtype = np.dtype(x_dtype)
    if x_dtype not in QTYPES:
        raise DTypeError(f"x must have dtype uint8 or int8, got {x_dtype}")
    if len(x_shape) != 4:
        raise ShapeError(f"x must be 4-D (N, C, H, W), got shape {x_shape}")
    zx = _zero_point(x_zero_point, "x_zero_point", None, (x_dtype,), x_dtype)[0][0]
    zy = _zero_point(y_zero_point, "y_zero_point", None, (x_dtype,), x_dtype)[0][0]
    sx, sy = _scale(x_scale, "x_scale"), _scale(y_scale, "y_scale")
    ks, st, pd, dl, out_hw = P._geometry(x_shape, kernel_shape, strides, pads, dilations,
                                         ceil_mode, auto_pad)
    cip = P._flag(count_include_pad, "count_include_pad")
    hw = x_shape[2:]
    if pd[2] < 0 or pd[3] < 0:
        hw, pd = P._avg_extent(hw, pd)
    axes = [P.axis_windows(hw[a], ks[a], st[a], pd[a], pd[a + 2], dl[a], out_hw[a])
            for a in range(2)]
    valid = axes[0][1][:, None] * axes[1][1][None, :]
    # onnxruntime's QLinearAveragePool divides by the whole kernel with count_include_pad,
    # also where a ceil_mode window reaches past the end padding (its float AveragePool
    # counts only the taps inside the padded extent there)
    count = np.full_like(valid, ks[0] * ks[1]) if cip else valid
    # a row buffer of the windows' padded extent (the kernels' columns): hostile kernel
    # widths, whose taps nearly all lie in the padding, take the float path (it trims them)
    extent = (out_hw[1] - 1) * st[1] + (ks[1] - 1) * dl[1] + 1
    if valid.min() == 0 or count.min() == 0 or valid.max() * 255 >= 2**24 or \
            extent > 4 * (hw[1] + pd[1] + pd[3]) + 64:
        return None
    y0 = (np.arange(out_hw[0], dtype=np.int64) * st[0] - pd[0] + axes[0][0] * dl[0])
    y0, ny = y0.astype(np.int32), axes[0][1].astype(np.int32)
    mult = (np.float64(sx[0]) / (np.float64(sy[0]) * count)).astype(np.float32)
    corr = (valid * int(zx)).astype(np.int32)
    out_shape = x_shape[:2] + tuple(out_hw)
    planes = x_shape[0] * x_shape[1]

    def run(x, out=None):
        y = _planned_output(x, x_shape, x_dtype, out_shape, x_dtype, out)
        if planes:
            bk = _config.resolve_backend(backend)
            _kernel("qavg_pool2d", bk)(
                _numba_writable(_contig(x), bk).reshape((planes,) + x_shape[2:]), y0, ny,
                pd[1], ks[1], st[1], dl[0], dl[1], corr, mult, int(zy),
                y.reshape((planes,) + out_shape[2:]))
        return y
    run.out_shape = out_shape
    return run


def _warmup(backend):
    """Compile/load every int8 kernel (uint8 activations, int8 weights, both output types)."""
    x = np.zeros((1, 2, 5, 5), np.uint8)
    for wdt in (np.int8, np.uint8):
        w = np.zeros((2, 2, 3, 3), wdt)
        qlinear_conv2d(x, 0.1, np.uint8(0), w, 0.1, wdt(0), 0.1, np.uint8(0), pads=(1,) * 4,
                       backend=backend)
        qlinear_conv2d(x, 0.1, np.uint8(0), w[:, :1], 0.1, wdt(0), 0.1, np.uint8(0), group=2,
                       backend=backend)
    y = quantize_linear(np.zeros(8, np.float32), 0.1, np.int8(0), backend=backend)
    dequantize_linear(y, 0.1, np.int8(0), backend=backend)
    lookup(y, np.zeros(256, np.int8), backend=backend)
    channel_lookup(y.reshape(2, 4), np.zeros((4, 256), np.uint8), backend=backend)
