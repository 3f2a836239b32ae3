"""QDQ graphs onto integer kernels: the load-time rewrite of DequantizeLinear -> op ->
QuantizeLinear patterns (onnxruntime.quantization's QDQ format) into the quantized operators
that run on edgedl.kernels.quant, as onnxruntime's own QDQ transformer does:

- DQ(x), DQ(w), [DQ(int32 bias)] -> Conv -> Q            => QLinearConv
- ... -> Conv -> Relu / Clip -> Q (the activation between)  => QLinearConvLookup (the clamp
                                                            as its table: exact; the Cython
                                                            GEMM paths clamp in the
                                                            requantization instead)
- DQ(a), DQ(b) -> MatMul -> Q                            => QLinearMatMul (b per tensor,
                                                            or constant per column)
- DQ(a), DQ(b) [, DQ(int32 c)] -> Gemm -> Q              => com.microsoft.QGemm
- DQ(a), DQ(b) -> Add / Mul -> Q                         => com.microsoft.QLinearAdd / Mul
- DQ(x...) -> Concat -> Q                                => com.microsoft.QLinearConcat
- DQ(x) -> Sigmoid / LeakyRelu -> Q                      => com.microsoft.QLinearSigmoid /
                                                            QLinearLeakyRelu (lookup tables)
- DQ(x) -> AveragePool / GlobalAveragePool -> Q          => com.microsoft.QLinear...Pool
- DQ(x) -> Reshape / Transpose / MaxPool / nearest Resize / ... -> Q with the same scale
  and zero point                                         => the op on the integer tensor
- DQ(x) -> Pad -> Q with the same scale and zero point   => Pad of the integer tensor with
                                                            the constant value quantized
- DQ(x) -> float ops of x alone with constant operands along one axis at most (ScaleShift,
  per-channel Mul / Add / Sub / Div, Relu, Clip, ...) -> Q, later (fuse_float_islands,
  after the BatchNormalization and activation rewrites)
                                                         => QChannelLookup (one 256-entry
                                                            table per channel) or QLookup

Only 8-bit activations with per-tensor constant scales and zero points are rewritten (and
per-output-channel weight scales for Conv); anything else keeps the float ops between its
Q/DQ nodes, which is always correct. The DQ nodes a rewrite leaves unread are dropped with
the other dead nodes, so int8 weights stay int8 in the plan.
"""
from typing import NamedTuple

import numpy as np

from ..kernels import quant as _qk
from .graph import Node
from .rewriter import replace

_MS = "com.microsoft"  # onnxruntime's contrib ops domain
_ACT_TYPES = (np.dtype(np.uint8), np.dtype(np.int8))
#: ops that only move or select elements: DQ -> op -> Q with one scale and zero point is
#: the op on the integer tensor (its float values are the integers' images, exactly)
_MOVERS = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "MaxPool", "Slice",
           "Gather", "Identity", "DepthToSpace", "SpaceToDepth"}


class _QParams(NamedTuple):
    value: str          # the integer tensor (DQ's input, Q's output)
    scale: str
    zero: str           # '' when omitted (uint8 zero)
    axis: int
    node: object        # the DQ or Q node


def _dq(rw, value):
    """The DequantizeLinear that produces ``value``, as _QParams, else None."""
    n = rw.prod.get(value)
    if n is None or n.op_type != "DequantizeLinear" or n.domain or \
            n.attrs.get("block_size", 0):
        return None
    ins = list(n.inputs) + ["", ""]
    return _QParams(ins[0], ins[1], ins[2], int(n.attrs.get("axis", 1)), n)


def _q(rw, value):
    """The QuantizeLinear that is the only reader of ``value``, as _QParams, else None."""
    n = rw.only_reader(value)
    if n is None or n.op_type != "QuantizeLinear" or n.domain or n.inputs[0] != value or \
            n.attrs.get("block_size", 0) or int(n.attrs.get("output_dtype", 0) or 0) or \
            not int(n.attrs.get("saturate", 1)):
        return None
    ins = list(n.inputs) + ["", ""]
    return _QParams(n.outputs[0], ins[1], ins[2], int(n.attrs.get("axis", 1)), n)


def _per_tensor(rw, p):
    """A constant positive finite scalar scale and an 8-bit scalar zero point (or none)."""
    s = rw.const(p.scale)
    if s is None or s.size != 1 or s.dtype != np.float32 or not np.all(np.isfinite(s)) or \
            not np.all(s > 0):
        return False
    z = rw.const(p.zero) if p.zero else np.zeros((), np.uint8)
    return z is not None and z.size == 1 and z.dtype in _ACT_TYPES


def _zero_point(rw, p):
    """The zero point's name, a new uint8 zero constant when the DQ/Q omitted it."""
    if p.zero:
        return p.zero
    name = p.scale + "::zero_u8"
    rw.g.consts[name] = np.zeros((), np.uint8)
    return name


def _same_params(rw, a, b):
    za = rw.const(a.zero) if a.zero else np.zeros((), np.uint8)
    zb = rw.const(b.zero) if b.zero else np.zeros((), np.uint8)
    return np.array_equal(rw.const(a.scale), rw.const(b.scale)) and za.dtype == zb.dtype and \
        np.array_equal(za, zb)


def _rewrite(rw, remove, op_type, inputs, q, attrs, domain=""):
    """Replace ``remove`` (the op and its Q) by one node writing Q's output."""
    new = Node(op_type, inputs, q.node.outputs[:1], attrs, remove[0].name, domain)
    replace(rw, remove, new, q.node)
    return True


def _activations(rw, node, count):
    """DQ params of the node's first ``count`` inputs and the Q after it, all per tensor."""
    ins = [_dq(rw, v) for v in node.inputs[:count]]
    q = _q(rw, node.outputs[0]) if node.outputs else None
    if q is None or len(ins) < count or any(p is None or not _per_tensor(rw, p)
                                            for p in ins + [q]):
        return None, None
    return ins, q


# ----------------------------------------------------------------------------- patterns
def _conv_weights(rw, w, channels_axis_ok):
    """Constant 8-bit weights with a per-tensor or per-output-channel scale."""
    wq, s = rw.const(w.value), rw.const(w.scale)
    z = rw.const(w.zero) if w.zero else np.zeros((), np.uint8)
    if wq is None or wq.dtype not in _ACT_TYPES or s is None or z is None or \
            s.dtype != np.float32 or not np.all(np.isfinite(s)) or not np.all(s > 0):
        return False
    if s.size == 1 and z.size == 1:
        return True
    return channels_axis_ok(w.axis, wq) and s.ndim == 1 and s.size == wq.shape[0] and \
        z.size in (1, wq.shape[0])


def _conv_bias(rw, conv, x, w):
    """The int32 bias tensor's name ([] without a bias), None when the bias is not an int32
    DQ with scale x_scale * w_scale and zero point 0 (then the float path stays)."""
    if len(conv.inputs) < 3 or not conv.inputs[2]:
        return []
    b = _dq(rw, conv.inputs[2])
    bq = None if b is None else rw.const(b.value)
    if bq is None or bq.dtype != np.int32 or rw.const(b.scale) is None or \
            (b.zero and np.any(rw.const(b.zero) != 0)):
        return None
    want = rw.const(x.scale).astype(np.float64) * rw.const(w.scale).astype(np.float64)
    got = rw.const(b.scale).astype(np.float64)
    if not np.allclose(got.reshape(-1), np.broadcast_to(want.reshape(-1), got.reshape(-1).shape),
                       rtol=1e-5, atol=0):
        return None
    return [b.value]


def qlinear_conv(rw, conv):
    if conv.op_type != "Conv" or len(conv.inputs) < 2:
        return False
    ins, q = _activations(rw, conv, 1)
    inputs = None if ins is None else _qconv_inputs(rw, conv, ins[0], q)
    if inputs is None:
        return False
    return _rewrite(rw, [conv, q.node], "QLinearConv", inputs, q, dict(conv.attrs))


def _qconv_inputs(rw, conv, x, q):
    """QLinearConv's inputs for ``conv`` reading DQ ``x`` and quantized by ``q``, or None
    (weights or bias the integer kernels do not take)."""
    w = _dq(rw, conv.inputs[1])
    if w is None or not _conv_weights(rw, w, lambda axis, wq: axis in (0, -wq.ndim)):
        return None
    bias = _conv_bias(rw, conv, x, w)
    if bias is None:
        return None
    return [x.value, x.scale, _zero_point(rw, x), w.value, w.scale, _zero_point(rw, w),
            q.scale, _zero_point(rw, q)] + bias


def qlinear_conv_clamped(rw, conv):
    """DQ(x), DQ(w) -> Conv -> Relu / Clip (constant bounds) -> Q, the activation not
    quantized on its own (other exporters than onnxruntime's write it so) -> QLinearConv
    with the clamp as its table: Q is monotone, so Q(clip(v, lo, hi)) = clamp(Q(v), Q(lo),
    Q(hi)) exactly, applied by the conv's kernels as each row is made."""
    act = rw.only_reader(conv.outputs[0]) if conv.op_type == "Conv" and \
        len(conv.inputs) >= 2 and conv.outputs else None
    bounds = None if act is None else _clamp_bounds(rw, act)
    x = _dq(rw, conv.inputs[0]) if bounds else None
    q = _q(rw, act.outputs[0]) if bounds else None
    if x is None or q is None or not (_per_tensor(rw, x) and _per_tensor(rw, q)):
        return False
    inputs = _qconv_inputs(rw, conv, x, q)
    if inputs is None:
        return False
    s = rw.const(q.scale)
    z = rw.const(q.zero) if q.zero else np.zeros((), np.uint8)
    lo, hi = (_qk.quantize_linear(np.float32(b), s, z, backend=rw.backend)
              for b in bounds)
    every = np.arange(256, dtype=np.uint16).astype(np.uint8).view(z.dtype)
    name = act.outputs[0] + "::clamp_table"
    rw.g.consts[name] = np.clip(every, lo, hi).astype(z.dtype)
    attrs = dict(conv.attrs, lookup_axis=1, lookup_rank=0, lookup_channels=0)
    return _rewrite(rw, [conv, act, q.node], "QLinearConvLookup", inputs + [""] *
                    (9 - len(inputs)) + [name], q, attrs)


def _clamp_bounds(rw, act):
    """(lo, hi) of a Relu, or of a Clip whose bounds are constant scalars (inputs from
    opset 11, attributes before; a missing one unbounded), else None."""
    if act.domain or act.op_type not in ("Relu", "Clip"):
        return None
    if act.op_type == "Relu":
        return 0.0, np.inf
    if len(act.inputs) == 1:
        return (float(act.attrs.get("min", -np.inf)), float(act.attrs.get("max", np.inf)))
    bounds = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        name = act.inputs[i] if len(act.inputs) > i else ""
        v = rw.const(name) if name else np.float32(default)
        if v is None or v.size != 1 or v.dtype.kind != "f":
            return None
        bounds.append(float(np.asarray(v).reshape(-1)[0]))
    return tuple(bounds)


def _binary(rw, node, op_type, domain=""):
    """DQ(a), DQ(b) -> node -> Q as ``op_type``(a, a_scale, a_zero, b, ..., y_scale, y_zero)."""
    ins, q = _activations(rw, node, 2)
    if ins is None:
        return False
    inputs = [v for p in ins for v in (p.value, p.scale, _zero_point(rw, p))]
    return _rewrite(rw, [node, q.node], op_type, inputs + [q.scale, _zero_point(rw, q)], q,
                    {}, domain)


def qlinear_matmul(rw, mm):
    if mm.op_type != "MatMul" or len(mm.inputs) != 2:
        return False
    if _binary(rw, mm, "QLinearMatMul"):
        return True
    # constant weights quantized per column (onnxruntime's per-channel MatMul weights)
    ins, q = _activations(rw, mm, 1)
    w = None if ins is None else _dq(rw, mm.inputs[1])
    wq = None if w is None else rw.const(w.value)
    if wq is None or wq.ndim != 2 or not _per_column(rw, w, wq, 1):
        return False
    inputs = [ins[0].value, ins[0].scale, _zero_point(rw, ins[0]), w.value, w.scale,
              _zero_point(rw, w), q.scale, _zero_point(rw, q)]
    return _rewrite(rw, [mm, q.node], "QLinearMatMul", inputs, q, {})


def _per_column(rw, w, wq, axis):
    """Constant 8-bit 2-D weights whose scale (and zero point) vary along ``axis`` only."""
    s = rw.const(w.scale)
    z = rw.const(w.zero) if w.zero else np.zeros((), np.uint8)
    n = wq.shape[axis]
    return wq.dtype in _ACT_TYPES and s is not None and z is not None and \
        s.dtype == np.float32 and s.ndim == 1 and s.size == n and np.all(np.isfinite(s)) and \
        np.all(s > 0) and z.size in (1, n) and w.axis in (axis, axis - 2)


def qlinear_gemm(rw, gemm):
    """DQ(a), DQ(constant b) [, DQ(int32 c)] -> Gemm -> Q => com.microsoft.QGemm (as
    onnxruntime's QDQ transformer makes it): a per tensor, b per tensor or per column of B',
    c with scale a_scale * b_scale and zero point 0 (beta 1, alpha 1 then), transA 0."""
    if gemm.op_type != "Gemm" or len(gemm.inputs) < 2 or int(gemm.attrs.get("transA", 0)):
        return False
    ins, q = _activations(rw, gemm, 1)
    w = None if ins is None else _dq(rw, gemm.inputs[1])
    wq = None if w is None else rw.const(w.value)
    tb = int(gemm.attrs.get("transB", 0))
    if wq is None or wq.ndim != 2 or not (_conv_weights(rw, w, lambda *_: False) or
                                          _per_column(rw, w, wq, 0 if tb else 1)):
        return False
    alpha, beta = float(gemm.attrs.get("alpha", 1.0)), float(gemm.attrs.get("beta", 1.0))
    bias = []
    if len(gemm.inputs) > 2 and gemm.inputs[2]:
        bias = _conv_bias(rw, gemm, ins[0], w) if alpha == 1.0 and beta == 1.0 else None
        if bias is None:
            return False
    inputs = [ins[0].value, ins[0].scale, _zero_point(rw, ins[0]), w.value, w.scale,
              _zero_point(rw, w)] + (bias or [""]) + [q.scale, _zero_point(rw, q)]
    return _rewrite(rw, [gemm, q.node], "QGemm", inputs, q,
                    {"alpha": alpha, "transA": 0, "transB": tb}, _MS)


def qlinear_binary(rw, node):
    return node.op_type in ("Add", "Mul") and len(node.inputs) == 2 and \
        _binary(rw, node, f"QLinear{node.op_type}", _MS)


def qlinear_concat(rw, node):
    if node.op_type != "Concat" or not node.inputs:
        return False
    ins, q = _activations(rw, node, len(node.inputs))
    if ins is None:
        return False
    inputs = [q.scale, _zero_point(rw, q)] + \
        [v for p in ins for v in (p.value, p.scale, _zero_point(rw, p))]
    return _rewrite(rw, [node, q.node], "QLinearConcat", inputs, q,
                    {"axis": node.attrs.get("axis", 0)}, _MS)


_UNARY = {"Sigmoid": "QLinearSigmoid", "LeakyRelu": "QLinearLeakyRelu",
          "AveragePool": "QLinearAveragePool", "GlobalAveragePool": "QLinearGlobalAveragePool"}


def qlinear_unary(rw, node):
    if node.op_type not in _UNARY or len(node.inputs) != 1:
        return False
    ins, q = _activations(rw, node, 1)
    if ins is None:
        return False
    x = ins[0]
    attrs = dict(node.attrs)
    if node.op_type in ("AveragePool", "GlobalAveragePool"):
        attrs["channels_last"] = 0
    inputs = [x.value, x.scale, _zero_point(rw, x), q.scale, _zero_point(rw, q)]
    return _rewrite(rw, [node, q.node], _UNARY[node.op_type], inputs, q, attrs, _MS)


def _nearest_resize(node):
    """A Resize that only copies elements (nearest, not tf_crop_and_resize: no extrapolated
    float outside the image)."""
    return node.op_type == "Resize" and len(node.inputs) >= 2 and \
        node.attrs.get("mode", "nearest") in ("nearest", b"nearest") and \
        node.attrs.get("coordinate_transformation_mode", "half_pixel") not in (
            "tf_crop_and_resize", b"tf_crop_and_resize")


def integer_mover(rw, node):
    """DQ -> (an op that only moves elements: _MOVERS, a nearest Resize) -> Q with the same
    parameters: the op on the integer tensor; its other inputs (shapes, axes, indices,
    scales) stay as they are."""
    if (node.op_type not in _MOVERS and not _nearest_resize(node)) or not node.inputs or \
            len(node.outputs) != 1:
        return False
    ins, q = _activations(rw, node, 1)
    if ins is None or not _same_params(rw, ins[0], q):
        return False
    return _rewrite(rw, [node, q.node], node.op_type,
                    [ins[0].value] + list(node.inputs[1:]), q, dict(node.attrs))


def integer_pad(rw, node):
    """DQ(x) -> Pad -> Q with the same scale and zero point (opset 11+): the Pad on the
    integer tensor, its constant value quantized with them (Q(Pad(DQ(x), c)) is
    Pad(x, Q(c)): Q(DQ(x)) is x); edge and reflect pads only move elements."""
    if node.op_type != "Pad" or rw.g.opset < 11 or len(node.inputs) < 2 or \
            len(node.outputs) != 1:
        return False
    ins, q = _activations(rw, node, 1)
    if ins is None or not _same_params(rw, ins[0], q):
        return False
    value = node.inputs[2] if len(node.inputs) > 2 else ""
    if node.attrs.get("mode", "constant") == "constant":
        c = rw.const(value) if value else np.zeros((), np.float32)
        if c is None or c.size != 1 or c.dtype != np.float32:
            return False
        zero = _zero_point(rw, q)
        qc = _qk.quantize_linear(c.reshape(1), rw.const(q.scale).reshape(()),
                                 rw.const(zero).reshape(()), backend="numpy")
        value = f"{node.outputs[0]}::pad_value_q"
        rw.g.consts[value] = qc.reshape(())
    else:
        value = ""                           # unused (and float) in edge / reflect modes
    inputs = [ins[0].value, node.inputs[1], value] + list(node.inputs[3:4])
    return _rewrite(rw, [node, q.node], "Pad", inputs, q, dict(node.attrs))


_PATTERNS = (qlinear_conv, qlinear_conv_clamped, qlinear_matmul, qlinear_gemm, qlinear_binary,
             qlinear_concat, qlinear_unary, integer_mover, integer_pad)


def rewrite_qdq(rw):
    """Every matching DQ -> op -> Q pattern in one pass (see the module docstring)."""
    if not any(n.op_type == "DequantizeLinear" for n in rw.g.nodes):
        return
    for node in list(rw.g.nodes):
        if node not in rw.removed and not node.domain:
            any(pattern(rw, node) for pattern in _PATTERNS)


# ----------------------------------------------------------------------------- lookup chains
def _lookup_chain(rw, mul):
    """(x, sigmoid node) when ``mul`` is QLinearMul(x, QLinearSigmoid(x)) (SiLU on 8-bit
    tensors) with constant parameters and the sigmoid read by ``mul`` alone, else None."""
    if mul.key != _MS + ".QLinearMul" or len(mul.inputs) < 7:
        return None
    a, b = mul.inputs[0], mul.inputs[3]
    for x, s in ((a, b), (b, a)):
        sig = rw.prod.get(s)
        if sig is not None and sig.key == _MS + ".QLinearSigmoid" and sig.inputs[0] == x \
                and rw.only_reader(s) is mul and x != s:
            params = [i for i in sig.inputs[1:] + mul.inputs[1:3] + mul.inputs[4:] if i]
            zero = rw.const(sig.inputs[2]) if len(sig.inputs) > 2 and sig.inputs[2] else None
            if all(rw.const(i) is not None for i in params) and zero is not None and \
                    zero.dtype in _ACT_TYPES:
                return x, sig, zero.dtype
    return None


def _evaluate_chain(rw, nodes, x, x_dtype, probe=None):
    """The chain ``nodes`` (reading ``x``) evaluated on every 8-bit value of x, in the order
    of x's bits as uint8: the 256-entry table that replaces it (or on ``probe``, values of
    x of another shape)."""
    from .plan import evaluate_constant
    g = rw.g
    values = {x: np.arange(256, dtype=np.uint16).astype(np.uint8).view(x_dtype)
              if probe is None else probe}
    for n in nodes:
        probe = Node(n.op_type, n.inputs, n.outputs, n.attrs, n.name, n.domain)
        saved = {}
        for i in n.inputs:
            if i in values:
                saved[i] = g.consts.get(i)
                g.consts[i] = values[i]
        try:
            out = evaluate_constant(g, probe, rw.backend)
        finally:
            for i, v in saved.items():
                if v is None:
                    del g.consts[i]
                else:
                    g.consts[i] = v
        values[n.outputs[0]] = out[0]
    return values[nodes[-1].outputs[0]]


def fuse_int8_lookups(rw):
    """QLinearMul(x, QLinearSigmoid(x)) (SiLU on an 8-bit tensor: YOLOX writes 104 of them)
    -> one QLookup(x, table): the two integer ops evaluated once on all 256 values of x, so
    the result is theirs to the bit, at the cost of one table lookup per element."""
    for mul in list(rw.g.nodes):
        found = None if mul in rw.removed else _lookup_chain(rw, mul)
        if found is None:
            continue
        x, sig, x_dtype = found
        name = mul.outputs[0] + "::table"
        rw.g.consts[name] = _evaluate_chain(rw, [sig, mul], x, x_dtype)
        replace(rw, [sig, mul], Node("QLookup", [x, name], mul.outputs[:1], {}, mul.name), mul)


def fuse_conv_lookups(rw):
    """QLinearConv -> QLookup / QChannelLookup of its output alone (an 8-bit activation, or
    a BatchNormalization island after it: UltraFace's 35, YOLOX's 104 SiLUs) -> one
    QLinearConvLookup: the conv kernels look each row or plane up while it is in cache,
    instead of a node and a pass of its own. Its handler checks the tables' layout against
    the conv's output shape (one table, or one per output channel along axis 1) and
    otherwise runs the two steps as before."""
    for lk in list(rw.g.nodes):
        if lk in rw.removed or lk.key not in ("QLookup", "QChannelLookup") or \
                len(lk.inputs) < 2:
            continue
        conv = rw.prod.get(lk.inputs[0])
        if conv is None or conv.key != "QLinearConv" or conv in rw.removed or \
                rw.only_reader(conv.outputs[0]) is not lk:
            continue
        tables = rw.const(lk.inputs[1])
        yz = rw.const(conv.inputs[7]) if len(conv.inputs) > 7 and conv.inputs[7] else \
            np.zeros((), np.uint8)
        if tables is None or yz is None or tables.dtype != yz.dtype:
            continue
        ins = list(conv.inputs) + [""] * (9 - len(conv.inputs))
        attrs = dict(conv.attrs, lookup_axis=int(lk.attrs.get("axis", 1)),
                     lookup_rank=int(lk.attrs.get("rank", 0)),
                     lookup_channels=int(lk.key == "QChannelLookup"))
        replace(rw, [conv, lk], Node("QLinearConvLookup", ins[:9] + [lk.inputs[1]],
                                     lk.outputs[:1], attrs, conv.name), lk)


def fuse_concat_requant(rw):
    """A QLinearConcat input whose scale / zero point differ from the output's, made by a
    QLinearConv (or QLinearConvLookup) that only the concat reads: the concat's
    requantization table moves into the conv's (composed with its own table, the same bytes
    as the two steps), and the input takes the output's parameters, so the planner lets the
    conv write straight into its slice of the concat (FastestDet: 19 concats, most with
    one such input). Only one table per tensor or per output channel (axis 1) composes."""
    for cat in list(rw.g.nodes):
        if cat in rw.removed or cat.key != _MS + ".QLinearConcat" or len(cat.inputs) < 5 or \
                (len(cat.inputs) - 2) % 3:
            continue
        ys, yz = rw.const(cat.inputs[0]), rw.const(cat.inputs[1])
        if ys is None or yz is None or ys.size != 1 or yz.size != 1:
            continue
        ins = list(cat.inputs)
        for j in range(2, len(ins), 3):
            conv = _concat_conv(rw, cat, ins[j], yz.dtype)
            xs, xz = rw.const(ins[j + 1]), rw.const(ins[j + 2])
            if conv is None or xs is None or xz is None or xs.size != 1 or xz.dtype != \
                    yz.dtype or (np.array_equal(xs, ys) and np.array_equal(xz, yz)):
                continue
            table = _qk.lookup_table(lambda v: v, xs, xz, yz.dtype, ys, yz, yz.dtype,
                                     backend=rw.backend)
            _compose_conv_table(rw, conv, table)
            ins[j + 1], ins[j + 2] = ins[0], ins[1]
        if ins != list(cat.inputs):
            rw.forget([cat])
            cat.inputs = ins
            rw.learn([cat])


def _concat_conv(rw, cat, value, dtype):
    """The QLinearConv / QLinearConvLookup of 8-bit ``dtype`` making ``value`` for ``cat``
    alone (read once) with a table layout that composes, else None."""
    conv = rw.prod.get(value)
    if conv is None or conv in rw.removed or conv.key not in ("QLinearConv",
                                                              "QLinearConvLookup") or \
            rw.only_reader(value) is not cat or cat.inputs.count(value) != 1:
        return None
    yz = rw.const(conv.inputs[7]) if len(conv.inputs) > 7 and conv.inputs[7] else \
        np.zeros((), np.uint8)
    if yz is None or yz.dtype != dtype:
        return None
    if conv.key == "QLinearConvLookup":
        t, w = rw.const(conv.inputs[9]), rw.const(conv.inputs[3])
        if t is None or w is None or not (t.ndim == 1 or t.shape[0] == 1 or
                                          _conv_channel_tables(conv, t, w.shape[0])):
            return None
    return conv


def _conv_channel_tables(conv, t, m):
    """QLinearConvLookup's tables are one per output channel (axis 1 of its 4-D output:
    an axis counted from the end of constants of rank <= 4 is that axis too)."""
    axis, rank = int(conv.attrs.get("lookup_axis", 1)), int(conv.attrs.get("lookup_rank", 0))
    return (int(conv.attrs.get("lookup_channels", 0)) and t.shape[0] == m and
            (axis == 1 or (axis == -3 and rank <= 4)))


def _compose_conv_table(rw, conv, table):
    """conv's output looked up in ``table`` (256 of its type) after its own table."""
    name = conv.outputs[0] + "::concat_table"
    if conv.key == "QLinearConvLookup":
        own = rw.const(conv.inputs[9])
        rw.g.consts[name] = table[own.view(np.uint8)]
        new = Node("QLinearConvLookup", conv.inputs[:9] + [name], conv.outputs, conv.attrs,
                   conv.name)
    else:
        ins = list(conv.inputs) + [""] * (9 - len(conv.inputs))
        rw.g.consts[name] = np.ascontiguousarray(table)
        attrs = dict(conv.attrs, lookup_axis=1, lookup_rank=0, lookup_channels=0)
        new = Node("QLinearConvLookup", ins[:9] + [name], conv.outputs, attrs, conv.name)
    replace(rw, [conv], new, conv)


# ----------------------------------------------------------------------------- float islands
#: float ops of one tensor computed element by element (y[i] from x[i] alone)
_ISLAND_UNARY = {"Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Silu", "Tanh",
                 "Elu", "Selu", "Softplus", "Mish", "Abs", "Neg", "Exp", "Log", "Sqrt",
                 "Reciprocal", "Erf", "Identity", "Floor", "Ceil", "Round", "Sign", "Sin",
                 "Cos"}
#: ... and with constant operands, which broadcast (NumPy's rules) along one axis at most
_ISLAND_BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"}
#: ... and those whose constants are per channel along axis 1 (ScaleShift: fuse.py's
#: BatchNormalization not after a Conv) or scalars (Clip's bounds)
_ISLAND_CHANNEL = {"ScaleShift", "BatchNormalization", "PRelu", "Clip"}
_MAX_ISLAND = 64        # nodes in one chain (a bound on the walk, far above real models)


class _Island(NamedTuple):
    channels: int       # 1 when every constant is a single value
    axis: object        # None (no channel axis), >= 0 (an axis of x), < 0 (from the end)
    rank: int           # the largest rank of a broadcasting constant (the output's at least)


def _broadcast_axis(v):
    """(channels, axis from the end, rank) of a constant operand that varies along one axis
    (channels 1 and axis None for a single value), else None."""
    if v.size == 1:
        return 1, None, v.ndim
    varying = [k for k, d in enumerate(v.shape) if d != 1]
    if len(varying) != 1:
        return None
    k = varying[0]
    return v.shape[k], k - v.ndim, v.ndim


def _island_step(rw, node, value):
    """The constants' _Island of one float op reading ``value`` (its only non-constant
    input, read once), else None."""
    if node.domain or len([o for o in node.outputs if o]) != 1 or not node.outputs[0]:
        return None
    ins = [i for i in node.inputs if i]
    if ins.count(value) != 1 or any(rw.const(i) is None for i in ins if i != value):
        return None
    t = node.op_type
    if t in _ISLAND_UNARY:
        return _Island(1, None, 0) if ins == [value] else None
    if t in _ISLAND_BINARY:
        return _binary_island(rw, t, ins, value)
    if t not in _ISLAND_CHANNEL or node.inputs[0] != value:
        return None
    return _channel_island(rw, node, ins)


def _binary_island(rw, t, ins, value):
    """An elementwise op (Add, Mul, Sub, Div, Pow, Max...) of ``value`` and constants that
    each vary along one axis at most."""
    if len(ins) < 2 or (t in ("Sub", "Div", "Pow") and len(ins) != 2):
        return None
    got = [_broadcast_axis(rw.const(i)) for i in ins if i != value]
    if any(g is None for g in got):
        return None
    return _merge_islands([_Island(*g) for g in got])


def _channel_island(rw, node, ins):
    """Clip (scalar bounds), PRelu (a slope along one axis), BatchNormalization (inference)
    and ScaleShift (per-channel parameters on axis 1)."""
    t = node.op_type
    if t == "Clip":
        return _Island(1, None, 0) if all(rw.const(i).size == 1 for i in ins[1:]) else None
    if t == "PRelu":        # the slope broadcasts to x (one way): x's rank stays
        g = _broadcast_axis(rw.const(ins[1])) if len(ins) == 2 else None
        return None if g is None else _Island(g[0], g[1], 0)
    if t == "BatchNormalization" and (node.attrs.get("training_mode", 0) or
                                      not node.attrs.get("spatial", 1)):
        return None
    params = [rw.const(i) for i in ins[1:]]
    if not params or any(p.ndim != 1 or p.size != params[0].size for p in params):
        return None
    rank = int(node.attrs.get("_rank", 0) or 0) if t == "ScaleShift" else 0
    # axis 1 of x; as an axis from the end when fuse.py knew x's rank (x's own rank)
    if rank >= 2:
        return _Island(params[0].size, 1 - rank, rank)
    return _Island(params[0].size, 1, 0)


def _merge_islands(steps):
    """The _Island of a chain of steps, or None when their channel axes differ."""
    c, axis, rank = 1, None, 0
    for s in steps:
        if s is None:
            return None
        rank = max(rank, s.rank)
        if s.axis is None:
            continue
        if axis is None:
            c, axis = s.channels, s.axis
        elif axis != s.axis or (s.channels != c and 1 not in (s.channels, c)):
            return None
        else:
            c = max(c, s.channels)
    if axis is not None and axis >= 0 and rank > 2:
        return None     # x's rank unknown: a constant of rank > 2 could move axis 1
    return _Island(c, axis, rank)


def _island_chain(rw, q):
    """(DQ params, the float ops in order) of DQ -> float ops -> ``q`` where each op's
    output is read by the next alone, else None."""
    nodes, v = [], q.node.inputs[0]
    while len(nodes) <= _MAX_ISLAND:
        p = rw.prod.get(v)
        if p is None:
            return None
        if p.op_type == "DequantizeLinear":
            d = _dq(rw, v)
            return (d, nodes[::-1]) if d is not None and nodes else None
        if p.op_type not in _ISLAND_UNARY | _ISLAND_BINARY | _ISLAND_CHANNEL or p.domain:
            return None
        data = [i for i in p.inputs if i and rw.const(i) is None]
        if len(data) != 1 or (nodes and rw.only_reader(v) is not nodes[-1]):
            return None
        nodes.append(p)
        v = data[0]
    return None


def _island_probe(x_dtype, island):
    """(every 8-bit value of x (in the order of its bits as uint8) in every channel, shaped so
    that the chain's constants broadcast onto it as onto x, are its channels first?): the
    values on the last axis (one image: a ScaleShift runs as on a model's tensor), or first
    when the channels are the last axis."""
    bits = np.arange(256, dtype=np.uint16).astype(np.uint8).view(x_dtype)
    if island.axis is None:
        return bits, True
    if island.axis >= 0:    # axis 1 of x, whose rank fuse.py did not know: 4 as in CNNs
        shape = (1, island.channels, 1, 256)
    elif island.axis == -1:
        shape = (256, island.channels)
    else:
        shape = (island.channels,) + (1,) * (-island.axis - 2) + (256,)
    lead = (1,) * max(0, island.rank - len(shape))
    first = island.axis != -1
    probe = bits.reshape(-1, 1) if not first else bits
    return np.ascontiguousarray(np.broadcast_to(probe, shape)).reshape(lead + shape), first


def fuse_float_islands(rw):
    """DequantizeLinear -> float ops of one tensor with constant operands (ScaleShift, a
    per-channel Mul / Add / Sub / Div, activations: see _ISLAND_*) -> QuantizeLinear, all
    Q/DQ parameters per tensor and 8-bit: the islands a QDQ model keeps in float between
    its integer ops (UltraFace: 35 BatchNormalizations not after a Conv). Each becomes one
    table lookup: the chain evaluated at load on all 256 values of x, one table per channel
    when a constant varies along a channel axis (QChannelLookup), else one table (QLookup).
    The tables are the chain's own results on this backend: the output is the float
    chain's to the bit."""
    if not any(n.op_type == "DequantizeLinear" for n in rw.g.nodes):
        return
    for qn in list(rw.g.nodes):
        if qn in rw.removed or qn.op_type != "QuantizeLinear" or qn.domain:
            continue
        q = _q(rw, qn.inputs[0])
        found = None if q is None or q.node is not qn else _island_chain(rw, q)
        if found is None:
            continue
        d, nodes = found
        if not (_per_tensor(rw, d) and _per_tensor(rw, q) and d.zero):
            continue        # x's type is the zero point's (omitted: x might not be 8-bit)
        vals = [d.node.outputs[0]] + [n.outputs[0] for n in nodes]
        island = _merge_islands([_island_step(rw, n, v) for n, v in zip(nodes, vals)])
        tables = None if island is None else _island_tables(rw, d, q, nodes, island)
        if tables is not None:
            replace(rw, nodes + [q.node], _island_node(rw, d, q, nodes, island, *tables),
                    q.node)


def _island_tables(rw, d, q, nodes, island):
    """(the tables of the chain ``nodes`` between DQ ``d`` and Q ``q``, whether they come
    channel-major) evaluated on every 8-bit value of x, or None when a kernel refuses."""
    probe, first = _island_probe(rw.const(d.zero).dtype, island)
    try:    # (values x may never take: no warnings for Log / Sqrt / Div of them)
        with np.errstate(all="ignore"):
            # the Q / DQ kernels the per-tensor handlers run, without planning them
            v = _qk.dequantize_linear(probe, rw.const(d.scale), rw.const(d.zero),
                                      backend=rw.backend)
            v = _evaluate_chain(rw, nodes, d.node.outputs[0], None, v)
            if not isinstance(v, np.ndarray) or v.dtype != np.float32:
                return None
            t = _qk.quantize_linear(v, rw.const(q.scale),
                                    rw.const(q.zero) if q.zero else None,
                                    backend=rw.backend)
    except Exception:       # an op or attribute the kernels refuse: keep the float ops
        return None
    if t.size != 256 * island.channels or t.dtype not in _ACT_TYPES:
        return None
    return t, first


def _island_node(rw, d, q, nodes, island, t, first):
    """The QLookup (one table) or QChannelLookup node that replaces the island."""
    name = q.node.outputs[0] + "::tables"
    if island.axis is None and island.rank == 0:
        rw.g.consts[name] = np.ascontiguousarray(t.reshape(256))
        return Node("QLookup", [d.value, name], q.node.outputs[:1], {}, nodes[0].name)
    t = t.reshape(island.channels, 256) if first else t.reshape(256, -1).T
    rw.g.consts[name] = np.ascontiguousarray(t)
    attrs = {"axis": -1 if island.axis is None else island.axis, "rank": island.rank}
    return Node("QChannelLookup", [d.value, name], q.node.outputs[:1], attrs, nodes[0].name)
