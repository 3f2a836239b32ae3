"""Neural-network ops: Conv (with a fused epilogue), ConvTranspose, BatchNormalization, pooling,
LRN, MatMul/Gemm, Resize/Upsample, NonMaxSuppression."""
import numpy as np

from ...kernels import activations as _acts, boxes as _boxes, conv as _conv, pooling as _pool
from ...kernels import resize as _resize
from ..graph import Node
from . import Ctx, Unfuse, ints, op, takes_out
from .elementwise import _FLOATS

_INT8S = (np.dtype(np.uint8), np.dtype(np.int8))


def _spatial(ctx, name, n, default):
    """Attribute `name` as ints, or n copies of default[0] when absent."""
    v = ctx.attr(name)
    return [default[0]] * n if v is None else ints(v)


def _as_2d(ctx, x_rank, what):
    """1-D (N, C, W) ops run on the 2-D kernels as (N, C, 1, W); 3-D+ are refused."""
    nsp = x_rank - 2
    if nsp not in (1, 2):
        raise ctx.fail(f"{what} supports 1-D and 2-D spatial inputs (rank 3 or 4), got rank "
                       f"{x_rank}")
    return nsp


def _lift(v, nsp, fill):
    """Per-axis attribute of a 1-D op -> its 2-D form (H axis = `fill`)."""
    if nsp == 2 or v is None:
        return v
    return [fill] + list(v)


def _lift_pads(p, nsp):
    if nsp == 2 or p is None:
        return p
    return [0, p[0], 0, p[1]]


# ----------------------------------------------------------------------------- conv
#: Epilogues the conv twins compute with a scalar exp: run the activation kernel (vectorised)
#: in place on the conv output instead.
_POST_ACTS = {"sigmoid": ("sigmoid", ()), "silu": ("swish", (1.0,)), "tanh": ("tanh", ())}
#: ...except these on the Cython backend, whose conv kernels apply them as each tile leaves
#: the registers (the GEMM tile, the direct stem) or a row the store: one pass less over the
#: output. YOLOX-nano float32, 1 thread: 12.5 -> 11.7 ms (the SiLU after each conv).
_CY_EPILOGUE_ACTS = {"sigmoid", "silu"}


def _even_hw(ctx):
    """A folded Focus (fuse.fold_focus_into_conv, attribute ``_even_hw``) keeps the rule of
    the Concat it replaced: its parity slices had one size only for an even H and W."""
    xs = ctx.shapes[0]
    if ctx.attr("_even_hw") and (len(xs) != 4 or any(
            isinstance(d, int) and d % 2 for d in xs[2:])):
        raise ctx.fail(f"the Focus slices of an input of shape {list(xs)} differ in size "
                       "(their Concat needs an even height and width)")


@op("Conv")
def conv(ctx):
    xs = ctx.shapes[0]
    nsp = _as_2d(ctx, len(xs), "Conv")
    if ctx.dtypes[0] not in _FLOATS:
        raise ctx.fail(f"input dtype {ctx.dtypes[0]} is not supported")
    strides = _lift(_spatial(ctx, "strides", nsp, [1]), nsp, 1)
    dil = _lift(_spatial(ctx, "dilations", nsp, [1]), nsp, 1)
    pads = _lift_pads(_spatial(ctx, "pads", 2 * nsp, [0]), nsp)
    group = int(ctx.attr("group", 1))
    auto_pad = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    act = ctx.attr("_act")
    act_params = tuple(ctx.attr("_act_params", ()))
    dt = ctx.dtypes[0]
    _even_hw(ctx)
    if ctx.attr("_residual"):
        return _residual_conv(ctx, nsp, (strides, pads, dil, group, auto_pad), act,
                              act_params)
    if nsp == 2 and ctx.static and ctx.is_const(1) and (not ctx.has(2) or ctx.is_const(2)):
        return _planned_conv(ctx, ctx.consts[1], ctx.consts[2] if ctx.has(2) else None,
                             strides, pads, dil, group, auto_pad, act, act_params)

    k = _conv.conv2d
    b = ctx.backend
    w_const = ctx.consts[1]
    if w_const is not None:
        w_const = np.ascontiguousarray(w_const, dtype=dt)
        if nsp == 1:
            w_const = w_const[:, :, None, :]
    bias = ctx.consts[2] if ctx.has(2) else None
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=dt)

    def f(x, w, bias_in=None):
        if w_const is not None:
            w = w_const
        elif nsp == 1:
            w = w[:, :, None, :]
        bb = bias if bias is not None else bias_in
        if nsp == 1:
            y = k(x[:, :, None, :], w, bb, strides, pads, dil, group, auto_pad, act,
                  act_params, backend=b)
            return y[:, :, 0, :]
        return k(x, w, bb, strides, pads, dil, group, auto_pad, act, act_params, backend=b)
    return f


def _residual_conv(ctx, nsp, geometry, act, act_params):
    """Conv + Add (+ activation) fused by fuse.fuse_residual_adds: inputs (x, w, bias or
    "", residual); y = act(conv(x) + bias + residual), or (``_residual`` 2) act(conv(x) +
    bias) + residual. Planned: the residual goes into the conv's epilogue
    (conv2d_plan(residual=True / "after")) when it has the output's shape and dtype;
    otherwise (a broadcast residual, shapes not fixed) the conv, the add and the activation
    in the graph's order. ``geometry``: (strides, pads, dilations, group, auto_pad) as conv()
    read them."""
    after = int(ctx.attr("_residual")) == 2
    xs, ws, rs = ctx.shapes[0], ctx.shapes[1], ctx.shapes[3]
    if (nsp == 2 and ctx.static and ctx.is_const(1) and (not ctx.has(2) or ctx.is_const(2))
            and ctx.dtypes[3] == ctx.dtypes[0] and rs is not None):
        strides, pads, dil, group, auto_pad = geometry
        oshape = (xs[0], ws[0]) + _conv._conv_geometry(tuple(xs), tuple(ws), strides, pads,
                                                       dil, group, auto_pad)[4]
        if tuple(rs) == oshape:
            return _planned_conv(ctx, ctx.consts[1], ctx.consts[2] if ctx.has(2) else None,
                                 *geometry, act, act_params,
                                 residual="after" if after else True)
    node = ctx.node
    drop = ("_residual",) if after else ("_residual", "_act", "_act_params")
    plain = Node("Conv", node.inputs[:3], node.outputs,
                 {k: v for k, v in node.attrs.items() if k not in drop}, node.name)
    conv_only = conv(Ctx(plain, ctx.opset, ctx.consts[:3], ctx.shapes[:3], ctx.dtypes[:3],
                         ctx.backend, ctx.static))
    backend = ctx.backend
    if after:
        return lambda x, w, bias=None, res=None: np.add(conv_only(x, w, bias), res)
    return lambda x, w, bias=None, res=None: _conv.add_and_activate(
        conv_only(x, w, bias), res, act, act_params, backend)


def _planned_conv(ctx, w, bias, strides, pads, dil, group, auto_pad, act, act_params,
                  residual=False):
    """Conv resolved once for a fixed input shape by conv.conv2d_plan (validation, weight
    layout, pads, kernel path); per call only the kernels run, into the planner's buffer."""
    b = ctx.backend
    dt = ctx.dtypes[0]
    post = None
    if act in _POST_ACTS and not (b == "cython" and act in _CY_EPILOGUE_ACTS):
        post = _acts.activation_plan(*_POST_ACTS[act], dtype=dt, backend=b)
        act, act_params = None, ()
    # a separate activation pass must come before a residual added after it: then the
    # residual is one more pass too
    late = residual == "after" and post is not None
    try:
        run = _conv.conv2d_plan(ctx.shapes[0], w, bias, strides, pads, dil, group, auto_pad,
                                act, act_params, dtype=dt, backend=b,
                                residual=False if late else residual)
    except ValueError as e:
        raise ctx.fail(str(e)) from e
    if post is None and not residual:
        return takes_out(lambda x, *_, out=None: run(x, out), run._fast)

    @takes_out
    def f(x, *rest, out=None):
        if late:
            res = rest[-1]
            if out is not None and np.may_share_memory(res, out):   # the conv writes first
                res = res.copy()
            y = run(x, out)
            post(y.reshape(-1), y.reshape(-1))
            return np.add(y, res, out=y)
        y = run(x, out, rest[-1]) if residual else run(x, out)
        if post is not None:
            flat = y.reshape(-1)
            post(flat, flat)
        return y
    return f


@op("PointwiseDepthwise")   # internal: fuse.fuse_pointwise_depthwise
def pointwise_depthwise(ctx):
    """A 1x1 Conv (inputs 1, 2: weights, bias or "") read only by a 3x3 depthwise Conv
    (inputs 3, 4; stride 1, padding 1), with ``_pool`` then read only by a 2x2 stride-2
    MaxPool: kernels.conv.pointwise_depthwise_plan (one banded kernel on the Cython
    backend) where that pays, else its parts as the planner's steps (which also report any
    bad input). Activations: ``_pw_act`` / ``_pw_act_params`` (the 1x1's), ``_act`` /
    ``_act_params`` (the depthwise one's)."""
    w1, w2 = ctx.const(1), ctx.const(3)
    b1 = ctx.const(2) if ctx.has(2) else None
    b2 = ctx.const(4) if ctx.has(4) else None
    acts = (ctx.attr("_pw_act"), ctx.attr("_act"))
    params = (tuple(ctx.attr("_pw_act_params", ())), tuple(ctx.attr("_act_params", ())))
    pool = bool(ctx.attr("_pool", 0))
    dt, b = ctx.dtypes[0], ctx.backend
    if not (ctx.static and _conv.pointwise_depthwise_pays(ctx.shapes[0], w1.shape[0], dt, b)):
        raise Unfuse()          # the planner runs the parts (``_parts``) instead
    try:
        run = _conv.pointwise_depthwise_plan(ctx.shapes[0], w1, b1, w2, b2, acts, params,
                                             pool, dtype=dt, backend=b)
    except ValueError as e:
        raise ctx.fail(str(e)) from e
    return takes_out(lambda x, *_, out=None: run(x, out), run._fast)


@op("ConvMaxPool")   # internal: fuse.fuse_conv_maxpool
def conv_max_pool(ctx):
    """A dense Conv (inputs as the Conv's; ``_parts``: it and the MaxPool that alone reads
    it): kernels.conv.conv_maxpool_plan as one banded kernel where the conv takes the direct
    path on a fixed float32 image and the pool's windows are ones the kernel takes; else
    its parts as the planner's steps (which also report any bad input)."""
    conv_node, pool_node = ctx.attr("_parts")
    xs, dt, b = ctx.shapes[0], ctx.dtypes[0], ctx.backend
    cc = Ctx(conv_node, ctx.opset, ctx.consts, ctx.shapes, ctx.dtypes, b, ctx.static)
    act = cc.attr("_act")
    if (not ctx.static or b != "cython" or dt != np.float32 or xs is None or len(xs) != 4
            or not ctx.is_const(1) or (ctx.has(2) and not ctx.is_const(2))
            or cc.attr("_residual") or cc.attr("_even_hw")
            or (act in _POST_ACTS and act not in _CY_EPILOGUE_ACTS)):
        raise Unfuse()
    geometry = (_spatial(cc, "strides", 2, [1]), _spatial(cc, "pads", 4, [0]),
                _spatial(cc, "dilations", 2, [1]), int(cc.attr("group", 1)),
                cc.attr("auto_pad", "NOTSET") or "NOTSET")
    pool = _pool_attrs(Ctx(pool_node, ctx.opset, [None], [xs], [dt], b, True), 2)
    try:
        run = _conv.conv_maxpool_plan(xs, ctx.consts[1], ctx.consts[2] if ctx.has(2) else None,
                                      *geometry, act, tuple(cc.attr("_act_params", ())), pool,
                                      dtype=dt, backend=b)
    except ValueError:
        raise Unfuse() from None        # the parts report it
    if run._fast is None:
        raise Unfuse()
    return takes_out(lambda x, *_, out=None: run(x, out), run._fast)


@op("ScaleShift")   # internal: x * a + c per channel, from BatchNormalization (fuse.py)
def scale_shift(ctx):
    """y = x * a + c along axis 1 (a, c constant (C,) vectors), with the fused activation
    (``_act``, only given at rank 4): a depthwise 1x1 convolution, whose epilogue applies
    the activation in the same pass; other ranks and dtypes in NumPy."""
    a, c = ctx.const(1), ctx.const(2)
    dt, nd = ctx.dtypes[0], len(ctx.shapes[0])
    act, act_params = ctx.attr("_act"), tuple(ctx.attr("_act_params", ()))
    if nd == 4 and dt in _FLOATS:
        w, bias = a.astype(dt).reshape(-1, 1, 1, 1), c.astype(dt)
        if ctx.static:
            return _planned_conv(ctx, w, bias, [1, 1], [0, 0, 0, 0], [1, 1], a.size,
                                 "NOTSET", act, act_params)
        return lambda x, *_: _conv.conv2d(x, w, bias, (1, 1), (0, 0, 0, 0), (1, 1), a.size,
                                          "NOTSET", act, act_params, backend=ctx.backend)
    if act is not None:
        raise ctx.fail(f"a fused {act} needs a float32/float64 rank-4 input, got {dt} rank "
                       f"{nd}")
    return _channel_affine(a, c, dt, nd)


def _channel_affine(a, c, dtype, rank):
    """y = x * a + c with (C,) vectors along axis 1 of a rank-``rank`` x (NumPy, in place
    into the planner's buffer)."""
    shape = (-1,) + (1,) * (rank - 2)
    a, c = a.astype(dtype).reshape(shape), c.astype(dtype).reshape(shape)

    @takes_out
    def f(x, *_, out=None):
        y = np.multiply(x, a, out=out)
        y += c
        return y
    return f


@op("ConvTranspose")
def conv_transpose(ctx):
    k = _conv.conv_transpose2d
    xs = ctx.shapes[0]
    nsp = _as_2d(ctx, len(xs), "ConvTranspose")
    strides = _lift(_spatial(ctx, "strides", nsp, [1]), nsp, 1)
    dil = _lift(_spatial(ctx, "dilations", nsp, [1]), nsp, 1)
    pads = _lift_pads(_spatial(ctx, "pads", 2 * nsp, [0]), nsp)
    opad = _lift(_spatial(ctx, "output_padding", nsp, [0]), nsp, 0)
    oshape = ctx.attr("output_shape")
    if oshape is not None:
        oshape = ints(oshape)[-nsp:]
        oshape = _lift(oshape, nsp, 1)
    group = int(ctx.attr("group", 1))
    auto_pad = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    b = ctx.backend

    def f(x, w, bias=None):
        if nsp == 1:
            y = k(x[:, :, None, :], w[:, :, None, :], bias, strides, pads, dil, group, opad,
                  oshape, auto_pad, backend=b)
            return y[:, :, 0, :]
        return k(x, w, bias, strides, pads, dil, group, opad, oshape, auto_pad, backend=b)
    return f


def bn_coefficients(scale, bias, mean, var, eps):
    """BatchNormalization as y = x * a + c per channel (float64)."""
    a = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    return a, bias.astype(np.float64) - mean.astype(np.float64) * a


@op("BatchNormalization")
def batch_norm(ctx):
    eps = float(ctx.attr("epsilon", 1e-5))
    nd = len(ctx.shapes[0])
    bshape = (-1,) + (1,) * (nd - 2)
    dt = ctx.dtypes[0]
    if all(ctx.is_const(i) for i in (1, 2, 3, 4)):
        a, c = bn_coefficients(*(ctx.consts[i] for i in (1, 2, 3, 4)), eps)
        return _channel_affine(a, c, dt, nd)

    def g(x, scale, bias, mean, var):
        a, c = bn_coefficients(scale, bias, mean, var, eps)
        return (x * a.reshape(bshape) + c.reshape(bshape)).astype(x.dtype)
    return g


# ----------------------------------------------------------------------------- pooling
def _pool_attrs(ctx, nsp):
    ks = ints(ctx.attr("kernel_shape"))
    strides = ctx.attr("strides")
    strides = ints(strides) if strides is not None else [1] * nsp
    pads = _spatial(ctx, "pads", 2 * nsp, [0])
    dil = _spatial(ctx, "dilations", nsp, [1])
    return (_lift(ks, nsp, 1), _lift(strides, nsp, 1), _lift_pads(pads, nsp),
            _lift(dil, nsp, 1), bool(ctx.attr("ceil_mode", 0)),
            ctx.attr("auto_pad", "NOTSET") or "NOTSET")


def _normalize(x, axes, eps):
    """(x - mean) / sqrt(var + eps) over ``axes``, in float32 at least (ONNX's stash_type 1)
    and float64 for float64 input; also returns mean and 1 / sqrt(var + eps) (keepdims)."""
    t = np.float64 if x.dtype == np.float64 else np.float32
    xf = x.astype(t, copy=False)
    mean = xf.mean(axis=axes, keepdims=True)
    d = xf - mean
    inv = 1.0 / np.sqrt((d * d).mean(axis=axes, keepdims=True) + t(eps))
    return d * inv, mean, inv


def _affine(ctx, y, scale, bias, shape, dtype):
    """y * scale + bias with both reshaped to ``shape`` (broadcast), cast to dtype."""
    try:
        y = y * np.reshape(scale, shape)
        if bias is not None:
            y = y + np.reshape(bias, shape)
    except ValueError:
        raise ctx.fail(f"scale {np.shape(scale)} / bias {np.shape(bias)} do not fit the "
                       f"normalized shape {shape}") from None
    return y.astype(dtype, copy=False)


@op("InstanceNormalization")
def instance_normalization(ctx):
    eps = float(ctx.attr("epsilon", 1e-5))

    def f(x, scale, bias):
        if x.ndim < 3:
            raise ctx.fail(f"input must be (N, C, D1, ...), got shape {x.shape}")
        y, _, _ = _normalize(x, tuple(range(2, x.ndim)), eps)
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        return _affine(ctx, y, scale, bias, shape, x.dtype)
    return f


@op("LayerNormalization")
def layer_normalization(ctx):
    axis, eps = int(ctx.attr("axis", -1)), float(ctx.attr("epsilon", 1e-5))
    n_out = len(ctx.node.outputs)

    def f(x, scale, bias=None):
        a = axis + x.ndim if axis < 0 else axis
        if not 0 <= a < x.ndim:
            raise ctx.fail(f"axis {axis} out of range for rank {x.ndim}")
        y, mean, inv = _normalize(x, tuple(range(a, x.ndim)), eps)
        sh = (1,) * a + x.shape[a:]
        out = _affine(ctx, y, scale, bias, sh, x.dtype)
        return (out, mean, inv)[:n_out] if n_out > 1 else out
    return f


@op("GroupNormalization")
def group_normalization(ctx):
    g, eps = ctx.attr("num_groups"), float(ctx.attr("epsilon", 1e-5))
    if g is None or int(g) < 1:
        raise ctx.fail(f"num_groups must be a positive integer, got {g!r}")
    g = int(g)
    per_group = ctx.opset < 21          # opset 18: scale / bias have one value per group

    def f(x, scale, bias):
        if x.ndim < 3 or x.shape[1] % g:
            raise ctx.fail(f"input {x.shape} must be (N, C, D1, ...) with C a multiple of "
                           f"num_groups {g}")
        n, c = x.shape[:2]
        xg = x.reshape((n, g, -1))
        y, _, _ = _normalize(xg, (2,), eps)
        if per_group:
            return _affine(ctx, y, scale, bias, (1, g, 1), x.dtype).reshape(x.shape)
        y = y.reshape(x.shape)
        return _affine(ctx, y, scale, bias, (1, c) + (1,) * (x.ndim - 2), x.dtype)
    return f


@op("MaxPool", "AveragePool")
def pool(ctx):
    t = ctx.node.op_type
    nsp = _as_2d(ctx, len(ctx.shapes[0]), t)
    if len([o for o in ctx.node.outputs if o]) > 1:
        raise ctx.fail("the Indices output of MaxPool is not supported")
    ks, strides, pads, dil, ceil, auto_pad = _pool_attrs(ctx, nsp)
    if ctx.dtypes[0] not in _FLOATS:
        if t != "MaxPool" or ctx.dtypes[0].kind not in "iu" or ctx.dtypes[0].itemsize > 4:
            raise ctx.fail(f"input dtype {ctx.dtypes[0]} is not supported")
        if ctx.dtypes[0] in (np.uint8, np.int8) and nsp == 2 and ctx.static:
            try:    # exact on the integers (a float round trip took 1.2 ms of FastestDet int8)
                planned = _pool.pool2d_plan(ctx.shapes[0], "max", ks, strides, pads, dil, ceil,
                                            auto_pad, dtype=ctx.dtypes[0], backend=ctx.backend)
            except ValueError as e:
                raise ctx.fail(str(e)) from e
            return takes_out(lambda x, *_, out=None: planned(x, out))
        # small integers are exact in float64 (8- and 16-bit ones in float32, the fast
        # kernels: int8 models max-pool quantized tensors): pool there, cast back
        ft = np.dtype(np.float32 if ctx.dtypes[0].itemsize <= 2 else np.float64)
        ctx.dtypes = [ft]
        as_float = pool(ctx)
        return lambda x: as_float(x.astype(ft)).astype(x.dtype)
    pk = _pool
    b = ctx.backend
    if nsp == 2 and ctx.static:     # validated once; per call only the kernel runs
        try:
            planned = pk.pool2d_plan(ctx.shapes[0], "max" if t == "MaxPool" else "avg", ks,
                                     strides, pads, dil, ceil, auto_pad,
                                     bool(ctx.attr("count_include_pad", 0)), ctx.dtypes[0], b)
        except ValueError as e:
            raise ctx.fail(str(e)) from e
        return takes_out(lambda x, *_, out=None: planned(x, out), planned.bound)
    if t == "MaxPool":
        def run(x, out=None):
            return pk.max_pool2d(x, ks, strides, pads, dil, ceil, auto_pad, out=out, backend=b)
    else:
        cip = bool(ctx.attr("count_include_pad", 0))

        def run(x, out=None):
            return pk.avg_pool2d(x, ks, strides, pads, dil, ceil, auto_pad,
                                 count_include_pad=cip, out=out, backend=b)
    if nsp == 1:
        return lambda x: run(x[:, :, None, :])[:, :, 0, :]
    return takes_out(run)


@op("GlobalAveragePool", "GlobalMaxPool")
def global_pool(ctx):
    avg = ctx.node.op_type == "GlobalAveragePool"
    if len(ctx.shapes[0]) == 4 and ctx.dtypes[0] in _FLOATS:
        k = getattr(_pool, "global_avg_pool2d" if avg else "global_max_pool2d")
        b = ctx.backend
        return lambda x: k(x, backend=b)
    axes = tuple(range(2, len(ctx.shapes[0])))
    if avg:
        return lambda x: np.mean(x, axis=axes, keepdims=True, dtype=x.dtype)
    return lambda x: np.max(x, axis=axes, keepdims=True)


@op("LRN")
def lrn(ctx):
    """y = x / (bias + alpha / size * (sum of x^2 over the size channels around c))^beta,
    in x's dtype (float16 in float32): the window sum as size shifted adds (a running cumsum
    would cancel), the power as square roots for beta 0.5 / 0.75 / 1 (np.power costs ~10x
    more: LRN was 43% of ZFNet-512's time computed in float64)."""
    size = int(ctx.attr("size"))
    alpha, beta = float(ctx.attr("alpha", 1e-4)), float(ctx.attr("beta", 0.75))
    bias = float(ctx.attr("bias", 1.0))
    if size < 1:
        raise ctx.fail(f"size must be >= 1, got {size}")
    lo = (size - 1) // 2          # channels below c in the window; size - 1 - lo above

    def f(x):
        xf = x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)
        c = x.shape[1]
        sq = np.square(xf)
        t = sq.copy()
        for d in range(-lo, size - lo):   # t[:, k] += sq[:, k + d] where k + d is a channel
            if d:
                a, b = max(0, -d), min(c, c - d)
                if a < b:
                    t[:, a:b] += sq[:, a + d:b + d]
        t *= alpha / size
        t += bias
        if beta == 0.75:
            np.sqrt(t, out=t)              # t^-0.75 = 1 / (sqrt(t) * sqrt(sqrt(t)))
            t *= np.sqrt(t)
        elif beta == 0.5:
            np.sqrt(t, out=t)
        elif beta != 1.0:
            np.power(t, beta, out=t)
        y = xf / t
        return y if y.dtype == x.dtype else y.astype(x.dtype)
    return f


# ----------------------------------------------------------------------------- matmul
@op("MatMul")
def matmul(ctx):
    if ctx.is_const(1):
        w = np.ascontiguousarray(ctx.consts[1])
        return lambda a, _: np.matmul(a, w)
    return np.matmul


@op("Gemm")
def gemm(ctx):
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    ta, tb = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    bconst = ctx.consts[1]
    if bconst is not None:
        bconst = np.ascontiguousarray(bconst.T if tb else bconst)
        if alpha != 1.0:
            bconst = (bconst * alpha).astype(bconst.dtype)
    cconst = ctx.consts[2] if ctx.has(2) else None
    if cconst is not None and beta != 1.0:
        cconst = (cconst * beta).astype(cconst.dtype)

    def f(a, bmat, c=None):
        if ta:
            a = a.T
        if bconst is not None:
            y = a @ bconst
        else:
            y = a @ (bmat.T if tb else bmat)
            if alpha != 1.0:
                y = y * np.asarray(alpha, dtype=y.dtype)
        if cconst is not None:
            y += cconst
        elif c is not None:
            y = y + (c * beta).astype(y.dtype) if beta != 1.0 else y + c
        return y.astype(a.dtype, copy=False)
    return f


# ----------------------------------------------------------------------------- resize
def _resize_to_sizes(shape, ax, sizes, policy):
    """(output shape, scale per axis) for the ``sizes`` input on axes ``ax``: each axis to its
    size ("stretch"), or one scale for them all that keeps the aspect ratio, the smaller
    ("not_larger") or the larger ("not_smaller") of the per-axis ones."""
    full_scales, full_sizes = [1.0] * len(shape), list(shape)
    if policy != "stretch":
        r = [sizes[i] / shape[a] for i, a in enumerate(ax)]
        s = min(r) if policy == "not_larger" else max(r)
        for a in ax:
            full_scales[a] = s
            full_sizes[a] = int(np.floor(shape[a] * s + 0.5))
    else:
        for i, a in enumerate(ax):
            full_sizes[a] = sizes[i]
            full_scales[a] = sizes[i] / shape[a]
    return full_sizes, full_scales


def _resize_by_scales(shape, ax, scales):
    """(output shape, scale per axis) for the ``scales`` input on axes ``ax``."""
    full_scales, full_sizes = [1.0] * len(shape), list(shape)
    sc = [float(v) for v in np.asarray(scales).reshape(-1)]
    for i, a in enumerate(ax):
        full_scales[a] = sc[i]
        full_sizes[a] = int(np.floor(shape[a] * sc[i]))
    return full_sizes, full_scales


def _resize_roi_hw(roi, nd, ax):
    """(start H, start W, end H, end W) of tf_crop_and_resize's roi: starts then ends of every
    axis, or of the ``ax`` axes only when the node has ``axes``."""
    r = np.asarray(roi, dtype=np.float64).reshape(-1)
    if ax is None:
        return (r[nd - 2], r[nd - 1], r[2 * nd - 2], r[2 * nd - 1])
    n = len(ax)
    pos = [ax.index(nd - 2), ax.index(nd - 1)]
    return (r[pos[0]], r[pos[1]], r[n + pos[0]], r[n + pos[1]])


def _resize_fn(ctx, mode, ctm, nearest_mode, cubic_a, exclude, extrap, scales_of, sizes_of,
               roi_of, axes=None, policy="stretch"):
    """A function x, *inputs -> resized x on resize2d (scaling only on the two last axes)."""
    rk = _resize
    k = rk.resize2d
    b = ctx.backend
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)

    def geometry(x_shape, inputs):
        """-> (output shape, scales of the last two axes or None, roi of H, W or None)"""
        shape = tuple(x_shape)
        nd = len(shape)
        ax = list(range(nd)) if axes is None else [a + nd if a < 0 else a for a in axes]
        scales = scales_of(inputs)
        sizes = sizes_of(inputs)
        if sizes is not None and len(sizes):
            full_sizes, full_scales = _resize_to_sizes(shape, ax, ints(sizes), policy)
            scl = None if policy == "stretch" else full_scales
        else:
            full_sizes, full_scales = _resize_by_scales(shape, ax, scales)
            scl = full_scales
        if nd < 2 or any(full_sizes[a] != shape[a] or full_scales[a] != 1.0
                         for a in range(nd - 2)):
            raise ctx.fail("only the two last axes can be resized (e.g. H, W of NCHW); got "
                           f"scales {full_scales} for input shape {shape}")
        roi = roi_of(inputs)
        roi_hw = None
        if roi is not None and ctm == "tf_crop_and_resize":
            roi_hw = _resize_roi_hw(roi, nd, None if axes is None else ax)
        return full_sizes, None if scl is None else (scl[-2], scl[-1]), roi_hw

    inputs_at_plan = tuple(ctx.consts[i] if ctx.has(i) else None
                           for i in range(1, len(ctx.node.inputs)))
    if (ctx.static and len(ctx.shapes[0]) == 4 and (ctx.dtypes[0] in _FLOATS or _copies(
            ctx.dtypes[0], mode, ctm))
            and all(ctx.is_const(i) for i in range(1, len(ctx.node.inputs)) if ctx.has(i))):
        # constant scales / sizes / roi and a fixed shape: tables built once
        full_sizes, scales_hw, roi_hw = geometry(ctx.shapes[0], inputs_at_plan)
        try:
            run = rk.resize2d_plan(ctx.shapes[0], full_sizes[-2:], mode, ctm, nearest_mode,
                                   cubic_a, exclude, extrap, scales_hw, roi_hw, ctx.dtypes[0],
                                   b)
        except ValueError as e:
            raise ctx.fail(str(e)) from e
        return takes_out(lambda x, *_, out=None: run(x, out), run.bound)

    def f(x, *inputs):
        if mode == "nearest" and x.dtype in _INT8S:
            # quantized values the plan did not take: nearest copies them, exact in float32
            return f(x.astype(np.float32), *inputs).astype(x.dtype)
        full_sizes, scales_hw, roi_hw = geometry(x.shape, inputs)
        x4 = x.reshape((-1, 1) + x.shape[-2:]) if x.ndim != 4 else x
        y = k(x4, (full_sizes[-2], full_sizes[-1]), mode, ctm, nearest_mode, cubic_a, exclude,
              extrap, scales_hw=scales_hw, roi=roi_hw, backend=b)
        return y.reshape(full_sizes)
    return f


def _copies(dtype, mode, ctm):
    """A nearest resize of 8-bit values that the planned kernels copy as they are."""
    return mode == "nearest" and ctm != "tf_crop_and_resize" and dtype in _INT8S


@op("Resize")
def resize(ctx):
    mode = ctx.attr("mode", "nearest")
    if ctx.opset < 11:
        return _resize_fn(ctx, mode, "asymmetric", "floor", -0.75, 0, 0.0,
                          lambda ins: ins[0], lambda ins: None, lambda ins: None)
    if int(ctx.attr("antialias", 0)):
        raise ctx.fail("antialias=1 is not supported")
    ctm = ctx.attr("coordinate_transformation_mode", "half_pixel")
    nm = ctx.attr("nearest_mode", "round_prefer_floor")
    cubic_a = float(ctx.attr("cubic_coeff_a", -0.75))
    excl = int(ctx.attr("exclude_outside", 0))
    extrap = float(ctx.attr("extrapolation_value", 0.0))
    axes = ctx.attr("axes")
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")

    def get(i):
        def g(ins):
            if i - 1 < len(ins) and ins[i - 1] is not None and ins[i - 1].size:
                return ins[i - 1]
            return None
        return g
    return _resize_fn(ctx, mode, ctm, nm, cubic_a, excl, extrap, get(2), get(3), get(1),
                      None if axes is None else ints(axes), policy)


@op("Upsample")
def upsample(ctx):
    mode = ctx.attr("mode", "nearest")
    if ctx.opset < 9:
        sc = ctx.attr("scales")
        return _resize_fn(ctx, mode, "asymmetric", "floor", -0.75, 0, 0.0,
                          lambda ins: sc, lambda ins: None, lambda ins: None)
    return _resize_fn(ctx, mode, "asymmetric", "floor", -0.75, 0, 0.0,
                      lambda ins: ins[0], lambda ins: None, lambda ins: None)


# ----------------------------------------------------------------------------- boxes
@op("NonMaxSuppression")
def nms(ctx):
    k = _boxes.non_max_suppression
    cpb = int(ctx.attr("center_point_box", 0))
    b = ctx.backend

    def f(boxes, scores, max_out=None, iou=None, score_thr=None):
        mo = 0 if max_out is None or max_out.size == 0 else int(max_out.reshape(-1)[0])
        it = 0.0 if iou is None or iou.size == 0 else float(iou.reshape(-1)[0])
        st = None if score_thr is None or score_thr.size == 0 else \
            float(score_thr.reshape(-1)[0])
        return k(boxes, scores, mo, it, st, cpb, backend=b)
    return f
