"""Quantized ops: QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear, QLinearConv,
ConvInteger, QLinearMatMul, MatMulInteger (ai.onnx) and the com.microsoft ops that
onnxruntime's QOperator quantizer writes (QLinear Add, Mul, Sigmoid, LeakyRelu, Softmax,
Concat, AveragePool, GlobalAveragePool; QGemm), all on edgedl.kernels.quant.

QLinearConv / QLinearMatMul take their inputs exactly as the ONNX spec orders them, so a graph
rewrite (DQ -> Conv -> Q into QLinearConv) can create these nodes directly. Bad scales or zero
points (wrong shape or type, scale <= 0 or not finite) are a ModelError naming the node.
"""
import numpy as np

from ...errors import EdgeDLError, ModelError
from ...kernels import activations as _acts, conv as _conv, pooling as _pool, quant as _q
from . import ints, op, takes_out
from .nn import _even_hw, _spatial
from .tensor import copy_rows

MS = "com.microsoft."


def _guarded(ctx, f):
    """f with the kernels' argument errors turned into a ModelError naming the node."""
    def g(*args):
        try:
            return f(*args)
        except ModelError:
            raise
        except (EdgeDLError, ValueError, TypeError) as e:
            raise ctx.fail(str(e)) from e
    return g


def _axis_block(ctx):
    if int(ctx.attr("block_size", 0) or 0) != 0:
        raise ctx.fail("blocked quantization (block_size > 0) is not supported")
    return int(ctx.attr("axis", 1))


# ----------------------------------------------------------------------------- Q / DQ
_OUTPUT_DTYPES = {2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16}   # TensorProto codes


@op("QuantizeLinear")
def quantize_linear(ctx):
    axis = _axis_block(ctx)
    b = ctx.backend
    dtype = None
    od = int(ctx.attr("output_dtype", 0) or 0)
    if od:
        if od not in _OUTPUT_DTYPES:
            raise ctx.fail(f"output_dtype {od} is not supported (uint8, int8, uint16 and "
                           "int16 are)")
        dtype = _OUTPUT_DTYPES[od]
    zdt = ctx.dtypes[2] if ctx.has(2) else None
    if zdt is not None and zdt not in _q.QDQ_TYPES:
        raise ctx.fail(f"y_zero_point of type {zdt} is not supported (uint8, int8, uint16 and "
                       "int16 are)")
    if ctx.dtypes[0] not in (np.dtype(np.float32),):
        raise ctx.fail(f"input x of type {ctx.dtypes[0]} is not supported (float32 is)")

    if ctx.static and all(ctx.is_const(i) for i in range(1, ctx.n_in)):
        try:
            run = _q.quantize_linear_plan(ctx.shapes[0], ctx.consts[1], ctx.consts[2]
                                          if ctx.has(2) else None, axis, dtype, backend=b)
        except (EdgeDLError, ValueError, TypeError) as e:
            raise ctx.fail(str(e)) from e
        return takes_out(lambda x, *_, out=None: run(x, out), run._fast)

    def f(x, scale, zp=None):
        return _q.quantize_linear(x, scale, zp, axis=axis, dtype=dtype, backend=b)
    return _guarded(ctx, f)


@op("DequantizeLinear")
def dequantize_linear(ctx):
    axis = _axis_block(ctx)
    b = ctx.backend
    if ctx.dtypes[0] not in _q.QDQ_TYPES + (np.dtype(np.int32),):
        raise ctx.fail(f"input x of type {ctx.dtypes[0]} is not supported (8- and 16-bit "
                       "integers and int32 are)")
    if ctx.dtypes[1] not in (np.dtype(np.float32),):
        raise ctx.fail(f"x_scale of type {ctx.dtypes[1]} is not supported (float32 is)")

    if ctx.static and all(ctx.is_const(i) for i in range(1, ctx.n_in)):
        try:
            run = _q.dequantize_linear_plan(ctx.shapes[0], ctx.dtypes[0], ctx.consts[1],
                                            ctx.consts[2] if ctx.has(2) else None, axis,
                                            backend=b)
        except (EdgeDLError, ValueError, TypeError) as e:
            raise ctx.fail(str(e)) from e
        return takes_out(lambda x, *_, out=None: run(x, out), run._fast)

    def f(x, scale, zp=None):
        return _q.dequantize_linear(x, scale, zp, axis=axis, backend=b)
    return _guarded(ctx, f)


@op("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx):
    b = ctx.backend
    return _guarded(ctx, lambda x: _q.dynamic_quantize_linear(x, backend=b))


# ----------------------------------------------------------------------------- conv / matmul
def _conv_attrs(ctx):
    if len(ctx.shapes[0]) != 4:
        raise ctx.fail(f"only 2-D convolutions (rank-4 input) are supported, got rank "
                       f"{len(ctx.shapes[0])}")
    _even_hw(ctx)
    strides = _spatial(ctx, "strides", 2, [1])
    dil = _spatial(ctx, "dilations", 2, [1])
    pads = _spatial(ctx, "pads", 4, [0])
    group = int(ctx.attr("group", 1))
    auto_pad = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    return strides, pads, dil, group, auto_pad


@op("QLinearConv")
def qlinear_conv(ctx):
    """Inputs as the ONNX spec: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale,
    y_zero_point, bias (optional, int32)."""
    strides, pads, dil, group, auto_pad = _conv_attrs(ctx)
    b = ctx.backend
    if ctx.static and all(ctx.is_const(i) for i in range(1, ctx.n_in)):
        try:    # validated and laid out once; per call only the kernels run
            run = _q.qlinear_conv2d_plan(ctx.shapes[0], ctx.dtypes[0], *ctx.consts[1:8],
                                         ctx.consts[8] if ctx.has(8) else None, strides, pads,
                                         dil, group, auto_pad, backend=b)
        except (EdgeDLError, ValueError, TypeError) as e:
            raise ctx.fail(str(e)) from e
        return takes_out(lambda x, *_, out=None: run(x, out), run._fast)

    def f(x, xs, xz, w, ws, wz, ys, yz, bias=None):
        return _q.qlinear_conv2d(x, xs, xz, w, ws, wz, ys, yz, bias, strides, pads, dil,
                                 group, auto_pad, backend=b)
    return _guarded(ctx, f)


@op("QLinearConvLookup")   # internal: QLinearConv, then QLookup / QChannelLookup (qdq.py)
def qlinear_conv_lookup(ctx):
    """Inputs: QLinearConv's nine (the bias may be ''), then the tables: one (256,) or one
    per channel (C, 256) with the lookup's axis / rank in ``lookup_axis`` / ``lookup_rank``.
    Planned with the tables in the conv's kernels when they are one per output channel along
    axis 1 of its output (or one table); else the conv and the lookup as two steps."""
    strides, pads, dil, group, auto_pad = _conv_attrs(ctx)
    b = ctx.backend
    tables = ctx.const(9)
    static = ctx.static and all(ctx.is_const(i) for i in range(1, 9) if ctx.has(i))
    if static and tables is not None:
        try:
            w = ctx.consts[3]
            m = int(np.asarray(w).shape[0])
            t = np.asarray(tables)
            per_channel = None
            if t.ndim == 1 or (t.ndim == 2 and t.shape[0] == 1):
                per_channel = np.tile(t.reshape(1, 256), (m, 1))
            elif t.ndim == 2 and int(ctx.attr("lookup_channels", 0)):
                xs = tuple(ctx.shapes[0])
                oshape = (xs[0], m) + _conv._conv_geometry(xs, tuple(np.shape(w)), strides,
                                                           pads, dil, group, auto_pad)[4]
                full, ax = _channel_layout(oshape, t.shape[0],
                                           int(ctx.attr("lookup_axis", 1)),
                                           int(ctx.attr("lookup_rank", 0)))
                if full == oshape and ax == 1 and t.shape[0] == m:
                    per_channel = t
            if per_channel is not None:
                run = _q.qlinear_conv2d_plan(ctx.shapes[0], ctx.dtypes[0], *ctx.consts[1:8],
                                             ctx.consts[8] if ctx.has(8) else None, strides,
                                             pads, dil, group, auto_pad, backend=b,
                                             tables=per_channel)
                return takes_out(lambda x, *_, out=None: run(x, out), run._fast)
        except (EdgeDLError, ValueError, TypeError) as e:
            raise ctx.fail(str(e)) from e
    # any other layout: the two ops as they were
    one = int(ctx.attr("lookup_channels", 0)) == 0
    axis, rank = int(ctx.attr("lookup_axis", 1)), int(ctx.attr("lookup_rank", 0))

    def f(x, xs, xz, w, ws, wz, ys, yz, bias, tabs):
        y = _q.qlinear_conv2d(x, xs, xz, w, ws, wz, ys, yz, bias, strides, pads, dil, group,
                              auto_pad, backend=b)
        if one or tabs.ndim == 1:
            return _q.lookup(y, tabs.reshape(-1), backend=b)
        full, ax = _channel_layout(y.shape, tabs.shape[0], axis, rank)
        return _q.channel_lookup(_widen(y, full), tabs, ax, backend=b)
    return _guarded(ctx, f)


@op("ConvInteger")
def conv_integer(ctx):
    strides, pads, dil, group, auto_pad = _conv_attrs(ctx)
    b = ctx.backend

    def f(x, w, xz=None, wz=None):
        return _q.conv_integer2d(x, w, xz, wz, strides, pads, dil, group, auto_pad, backend=b)
    return _guarded(ctx, f)


@op("QLinearMatMul")
def qlinear_matmul(ctx):
    b = ctx.backend

    def f(a, as_, az, bm, bs, bz, ys, yz):
        return _q.qlinear_matmul(a, as_, az, bm, bs, bz, ys, yz, backend=b)
    return _guarded(ctx, f)


@op(MS + "QGemm")
def qgemm(ctx):
    """onnxruntime's QGemm: A, a_scale, a_zero_point, B, b_scale, b_zero_point, C (int32,
    optional), y_scale, y_zero_point (optional: a float output without them)."""
    b = ctx.backend
    alpha = float(ctx.attr("alpha", 1.0))
    ta, tb = bool(ctx.attr("transA", 0)), bool(ctx.attr("transB", 0))

    def f(a, as_, az, bm, bs, bz, c=None, ys=None, yz=None):
        return _q.qgemm(a, as_, az, bm, bs, bz, c, ys, yz, alpha, ta, tb, backend=b)
    return _guarded(ctx, f)


@op("MatMulInteger")
def matmul_integer(ctx):
    b = ctx.backend

    def f(a, bm, az=None, bz=None):
        return _q.matmul_integer(a, bm, az, bz, backend=b)
    return _guarded(ctx, f)


# ----------------------------------------------------------------------------- com.microsoft
@op(MS + "QLinearAdd", MS + "QLinearMul")
def qlinear_binary(ctx):
    kind = "add" if ctx.node.op_type == "QLinearAdd" else "mul"
    b = ctx.backend
    params = (1, 2, 4, 5, 6, 7)
    if ctx.dtypes[0] in _q.QTYPES and all(ctx.is_const(i) for i in params if ctx.has(i)):
        table = _binary_as_table(ctx, kind)
        if table is not None:
            return table
        try:    # constant parameters: validated and folded once
            run = _q.qlinear_binary_plan(kind, *(ctx.consts[i] if ctx.has(i) else None
                                                 for i in params), ctx.dtypes[0], backend=b)
        except (EdgeDLError, ValueError, TypeError) as e:
            raise ctx.fail(str(e)) from e
        if ctx.static and tuple(ctx.shapes[0]) == tuple(ctx.shapes[3]):
            return takes_out(lambda a, sa, za, bm, *_, out=None: run(a, bm, out))
        return _guarded(ctx, lambda a, sa, za, bm, *_: run(a, bm))

    def f(a, sa, za, bm, sb, zb, sc, zc=None):
        if zc is None:
            zc = np.zeros((), a.dtype)
        return _q.qlinear_binary(kind, a, sa, za, bm, sb, zb, sc, zc)
    return _guarded(ctx, f)


def _binary_as_table(ctx, kind):
    """QLinearAdd / QLinearMul with one operand a constant single value and the other of the
    output's shape (a box decoder's scale by a variance, a shift): a function of one 8-bit
    value, so a 256-entry table made by qlinear_binary itself on every value (the same
    float32 arithmetic, bit for bit), looked up in one pass. None when it does not apply."""
    if not ctx.static:
        return None
    for var, const in ((0, 3), (3, 0)):
        c = ctx.consts[const]
        if c is None or np.size(c) != 1 or ctx.consts[var] is not None:
            continue
        vshape = tuple(ctx.shapes[var])
        if tuple(np.broadcast_shapes(vshape, np.shape(c))) != vshape:
            continue
        dt = np.dtype(ctx.dtypes[0])
        every = np.arange(256, dtype=np.uint16).astype(np.uint8).view(dt)
        fixed = np.full(256, np.asarray(c).reshape(-1)[0], dt)
        pa, pb = (every, fixed) if var == 0 else (fixed, every)
        z = [ctx.consts[i] if ctx.has(i) else None for i in (2, 5, 7)]
        z = [np.zeros((), dt) if v is None else v for v in z]
        try:
            table = _q.qlinear_binary(kind, pa, ctx.consts[1], z[0], pb, ctx.consts[4], z[1],
                                      ctx.consts[6], z[2])
            run = _q.lookup_plan(vshape, dt, table, backend=ctx.backend)
        except (EdgeDLError, ValueError, TypeError) as e:
            raise ctx.fail(str(e)) from e
        if var == 0:
            return takes_out(lambda x, *_, out=None: run(x, out), run._fast)
        return takes_out(lambda _a, _sa, _za, x, *_, out=None: run(x, out))
    return None


def _table_op(ctx, fn):
    """A unary QLinear op (X, X_scale, X_zero_point, Y_scale, Y_zero_point) as a 256-entry
    lookup table, built once when the parameters are constants (they are in quantized models)."""
    b = ctx.backend
    cache = {}
    if ctx.static and all(ctx.is_const(i) for i in range(1, ctx.n_in)):
        c = [ctx.consts[i] if ctx.has(i) else None for i in range(1, 5)]
        xdt = np.dtype(ctx.dtypes[0])
        try:
            xz = np.zeros((), xdt) if c[1] is None else c[1]
            yz = np.zeros((), xdt) if c[3] is None else c[3]
            t = _q.lookup_table(fn, c[0], xz, xdt, c[2], yz, np.asarray(yz).dtype, backend=b)
        except (EdgeDLError, ValueError, TypeError) as e:
            raise ctx.fail(str(e)) from e
        return _lookup_planned(ctx, t)

    def f(x, xs, xz, ys, yz=None):
        xz = np.zeros((), x.dtype) if xz is None else xz
        yz = np.zeros((), x.dtype) if yz is None else yz
        key = (np.asarray(xs).tobytes(), np.asarray(xz).tobytes(), np.asarray(ys).tobytes(),
               np.asarray(yz).tobytes(), x.dtype.str)
        t = cache.get(key)
        if t is None:
            t = cache[key] = _q.lookup_table(fn, xs, xz, x.dtype, ys, yz,
                                             np.asarray(yz).dtype, backend=b)
        return _q.lookup(x, t, backend=b)
    return _guarded(ctx, f)


def _lookup_planned(ctx, table):
    """The planned lookup of input 0 through a constant table (validated now; per call only
    the kernel), or None when shapes are not static."""
    if not ctx.static:
        return None
    try:
        run = _q.lookup_plan(ctx.shapes[0], ctx.dtypes[0], table, backend=ctx.backend)
    except (EdgeDLError, ValueError, TypeError) as e:
        raise ctx.fail(str(e)) from e
    return takes_out(lambda x, *_, out=None: run(x, out), run._fast)


@op("QLookup")   # internal: y = table[x] (chains of 8-bit integer ops fused at load, qdq.py)
def qlookup(ctx):
    table, b = ctx.const(1), ctx.backend
    return _lookup_planned(ctx, table) or _guarded(ctx, lambda x, *_: _q.lookup(x, table,
                                                                               backend=b))


def _channel_layout(x_shape, c, axis, rank):
    """(the shape x broadcasts to, its channel axis) of a QChannelLookup: ``axis`` >= 0 is
    an axis of x itself; < 0 counts from the end of the chain's constants, which broadcast
    against x as NumPy does (rank: their largest rank; a size-1 axis of x takes C)."""
    x_shape = tuple(x_shape)
    if axis >= 0:
        return x_shape, axis
    nd = max(len(x_shape), rank, -axis)
    shape = (1,) * (nd - len(x_shape)) + x_shape
    ax = nd + axis
    if shape[ax] == 1 and c > 1:
        shape = shape[:ax] + (c,) + shape[ax + 1:]
    return shape, ax


def _widen(x, full):
    """x broadcast to ``full`` (from _channel_layout) as the float chain's constants
    broadcast it, contiguous; x itself when it has that shape."""
    if tuple(x.shape) == tuple(full):
        return x
    return np.ascontiguousarray(np.broadcast_to(
        x.reshape((1,) * (len(full) - x.ndim) + x.shape), full))


@op("QChannelLookup")   # internal: y[.., c, ..] = tables[c, x] (per-channel float islands, qdq.py)
def qchannel_lookup(ctx):
    """One 256-entry table per channel along ``axis`` (a DequantizeLinear -> per-channel
    float ops -> QuantizeLinear chain evaluated at load on every value of every channel;
    one table when the chain's constants are all single values of rank >= 1)."""
    tables, b = ctx.const(1), ctx.backend
    axis, rank = int(ctx.attr("axis", 1)), int(ctx.attr("rank", 0))
    c = tables.shape[0] if tables.ndim == 2 else -1

    def layout(shape):
        full, ax = _channel_layout(shape, c, axis, rank)
        if ax >= len(full):
            raise ctx.fail(f"an input of shape {tuple(shape)} has no axis {axis}")
        return full

    def kernel(full, dtype):
        if c == 1:
            return _q.lookup_plan(full, dtype, tables[0], backend=b)
        return _q.channel_lookup_plan(full, dtype, tables, _channel_layout(
            full, c, axis, rank)[1], backend=b)

    if ctx.static:
        try:
            full = layout(ctx.shapes[0])
            run = kernel(full, ctx.dtypes[0])
        except ModelError:
            raise
        except (EdgeDLError, ValueError, TypeError) as e:
            raise ctx.fail(str(e)) from e
        if full == tuple(ctx.shapes[0]):
            return takes_out(lambda x, *_, out=None: run(x, out), run._fast)
        return lambda x, *_: run(_widen(x, full))

    def f(x, *_):
        full = layout(x.shape)
        return kernel(full, x.dtype)(_widen(x, full))
    return _guarded(ctx, f)


@op(MS + "QLinearSigmoid")
def qlinear_sigmoid(ctx):
    b = ctx.backend
    return _table_op(ctx, lambda v: _acts.sigmoid(v, backend=b))


@op(MS + "QLinearLeakyRelu")
def qlinear_leaky_relu(ctx):
    alpha = float(ctx.attr("alpha", 0.01))
    return _table_op(ctx, lambda v: np.where(v >= 0, v, v * np.float32(alpha)))


@op(MS + "QLinearSoftmax")
def qlinear_softmax(ctx):
    """Dequantize, softmax along ``axis`` (the 2-D coerced form for opset < 13), quantize."""
    b = ctx.backend
    rank = len(ctx.shapes[0])
    version = int(ctx.attr("opset", 13))
    axis = int(ctx.attr("axis", -1 if version >= 13 else 1))
    axis = axis + rank if axis < 0 else axis

    def f(x, xs, xz, ys, yz=None):
        yz = np.zeros((), x.dtype) if yz is None else yz
        v = _q.dequantize_linear(x, xs, xz, backend=b)
        if version < 13:
            v2 = v.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)
            v = _acts.softmax(v2, axis=-1, backend=b).reshape(x.shape)
        else:
            v = _acts.softmax(v, axis=axis, backend=b)
        return _q.quantize_linear(v, ys, yz, backend=b)
    return _guarded(ctx, f)


@op(MS + "QLinearConcat")
def qlinear_concat(ctx):
    """Inputs Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per tensor: each input
    whose parameters differ from the output's goes through a requantization table."""
    axis = int(ctx.attr("axis"))
    b = ctx.backend
    if (ctx.n_in - 2) % 3 or ctx.n_in < 5:
        raise ctx.fail(f"takes Y_scale, Y_zero_point and (X, X_scale, X_zero_point) triples, "
                       f"got {ctx.n_in} inputs")
    tables = {}
    planned = _concat_planned(ctx, axis)
    if planned is not None:
        return planned

    def f(ys, yz, *rest):
        parts = []
        for i in range(0, len(rest), 3):
            x, xs, xz = rest[i:i + 3]
            if x.dtype != np.asarray(yz).dtype:
                raise ctx.fail(f"input {2 + i} has type {x.dtype}, the output {np.asarray(yz).dtype}")
            if np.array_equal(xs, ys) and np.array_equal(xz, yz):
                parts.append(x)
                continue
            t = tables.get(i)
            if t is None:
                t = tables[i] = _q.lookup_table(lambda v: v, xs, xz, x.dtype, ys, yz,
                                                x.dtype, backend=b)
            parts.append(_q.lookup(x, t, backend=b))
        ax = axis + parts[0].ndim if axis < 0 else axis
        return np.concatenate(parts, axis=ax)
    return _guarded(ctx, f)


def _concat_planned(ctx, axis):
    """QLinearConcat with constant scales and zero points and static shapes: each input's
    requantization table made now, the inputs written straight into their slice of the
    output (a copy, or the lookup's own output where the slice is contiguous)."""
    n = (ctx.n_in - 2) // 3
    if not (ctx.static and ctx.is_const(0) and ctx.is_const(1)
            and all(ctx.is_const(3 + 3 * j) and ctx.is_const(4 + 3 * j) for j in range(n))):
        return None
    ys, yz = ctx.consts[0], ctx.consts[1]
    ydt = np.asarray(yz).dtype
    shapes = [tuple(ctx.shapes[2 + 3 * j]) for j in range(n)]
    rank = len(shapes[0])
    ax = axis + rank if axis < 0 else axis
    if not 0 <= ax < rank or any(len(sh) != rank or sh[:ax] + sh[ax + 1:] !=
                                 shapes[0][:ax] + shapes[0][ax + 1:] for sh in shapes):
        raise ctx.fail(f"inputs of shapes {shapes} do not concatenate on axis {axis}")
    runs, bounds, o = [], [], 0
    for j, sh in enumerate(shapes):
        xs, xz = ctx.consts[3 + 3 * j], ctx.consts[4 + 3 * j]
        if np.dtype(ctx.dtypes[2 + 3 * j]) != ydt:
            raise ctx.fail(f"input {2 + 3 * j} has type {np.dtype(ctx.dtypes[2 + 3 * j])}, "
                           f"the output {ydt}")
        if np.array_equal(xs, ys) and np.array_equal(xz, yz):
            runs.append(None)
        else:
            try:
                t = _q.lookup_table(lambda v: v, xs, xz, ydt, ys, yz, ydt, backend=ctx.backend)
                runs.append(_q.lookup_plan(sh, ydt, t, backend=ctx.backend))
            except (EdgeDLError, ValueError, TypeError) as e:
                raise ctx.fail(str(e)) from e
        bounds.append((o, o + sh[ax]))
        o += sh[ax]
    out_shape = shapes[0][:ax] + (o,) + shapes[0][ax + 1:]
    contiguous = all(d == 1 for d in out_shape[:ax])    # each input's slice is one block
    data = [2 + 3 * j for j in range(n)]

    def concat(todo):
        """The step filling ``out`` from the inputs in ``todo``; the planner wrote the others
        into their slices (contiguous) already, in their own parameters: those requantize
        in place, those in the output's need nothing."""
        jobs = [(data[j], (slice(None),) * ax + (slice(a, b),), run, data[j] in todo)
                for j, (run, (a, b)) in enumerate(zip(runs, bounds))
                if data[j] in todo or run is not None]

        def f(*args, out=None):
            y = np.empty(out_shape, ydt) if out is None else out
            for i, key, run, copied in jobs:
                dst = y[key]
                x = args[i] if copied else dst
                if run is None:
                    copy_rows(dst, x)
                elif contiguous:
                    run(x, dst)
                else:
                    copy_rows(dst, run(x))
            return y
        f.concat_inputs = data
        f.concat_rest = concat
        return takes_out(f)
    return concat(set(data))


@op(MS + "QLinearGlobalAveragePool")
def qlinear_global_average_pool(ctx):
    b = ctx.backend
    cl = bool(ctx.attr("channels_last", 0))

    def f(x, xs, xz, ys, yz):
        return _q.qlinear_global_avg_pool2d(x, xs, xz, ys, yz, channels_last=cl, backend=b)
    return _guarded(ctx, f)


def _planned_qavg(ctx, kernel, strides, pads, ceil, auto_pad, cip):
    """QLinearAveragePool (NCHW) of a fixed shape with constant parameters, planned once
    (validated at load, none per call): the integer window sums requantized
    (qlinear_avg_pool2d_plan; FastestDet's 48x46x46 pool 56 -> 46 us), else (a window
    without input, sums too long for float32) dequantize, float pool, quantize. None to
    take the unplanned calls."""
    b = ctx.backend
    c = [ctx.consts[i] if ctx.has(i) else None for i in range(1, 5)]
    xdt = np.dtype(ctx.dtypes[0])
    try:
        run = _q.qlinear_avg_pool2d_plan(ctx.shapes[0], xdt, kernel, c[0], c[1], c[2],
                                         c[3], strides, pads, ceil_mode=ceil,
                                         auto_pad=auto_pad, count_include_pad=cip, backend=b)
        if run is not None:
            return run
        dq = _q.dequantize_linear_plan(ctx.shapes[0], xdt, c[0], c[1], backend=b)
        pool = _pool.pool2d_plan(ctx.shapes[0], "avg", kernel, strides, pads,
                                 ceil_mode=ceil, auto_pad=auto_pad, count_include_pad=cip,
                                 backend=b)
        yz = np.zeros((), xdt) if c[3] is None else c[3]
        q = _q.quantize_linear_plan(pool.out_shape, c[2], yz, backend=b)
    except (EdgeDLError, ValueError, TypeError):
        return None
    return lambda x: q(pool(dq(x)))


@op(MS + "QLinearAveragePool")
def qlinear_average_pool(ctx):
    """Integer window sums requantized (qlinear_avg_pool2d_plan), else dequantize, edgedl's
    AveragePool (ONNX attributes), quantize."""
    b = ctx.backend
    rank = len(ctx.shapes[0])
    if rank != 4:
        raise ctx.fail(f"only 2-D pooling (rank-4 input) is supported, got rank {rank}")
    cl = bool(ctx.attr("channels_last", 0))
    kernel = ints(ctx.attr("kernel_shape"))
    strides = _spatial(ctx, "strides", 2, [1])
    pads = _spatial(ctx, "pads", 4, [0])
    auto_pad = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    ceil = bool(ctx.attr("ceil_mode", 0))
    cip = bool(ctx.attr("count_include_pad", 0))

    if not cl and ctx.static and all(ctx.is_const(i) for i in range(1, ctx.n_in)):
        planned = _planned_qavg(ctx, kernel, strides, pads, ceil, auto_pad, cip)
        if planned is not None:
            return _guarded(ctx, lambda x, *_: planned(x))

    def f(x, xs, xz, ys, yz=None):
        yz = np.zeros((), x.dtype) if yz is None else yz
        if cl:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        run = _q.qlinear_avg_pool2d_plan(x.shape, x.dtype, kernel, xs, xz, ys, yz, strides,
                                         pads, ceil_mode=ceil, auto_pad=auto_pad,
                                         count_include_pad=cip, backend=b)
        if run is not None:
            y = run(x)
        else:
            v = _q.dequantize_linear(x, xs, xz, backend=b)
            y = _q.quantize_linear(_pool.avg_pool2d(v, kernel, strides, pads, ceil_mode=ceil,
                                                    auto_pad=auto_pad, count_include_pad=cip,
                                                    backend=b), ys, yz, backend=b)
        return np.ascontiguousarray(y.transpose(0, 2, 3, 1)) if cl else y
    return _guarded(ctx, f)
