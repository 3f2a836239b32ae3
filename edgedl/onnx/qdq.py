"""QDQ graphs onto integer kernels: the load-time rewrite of DequantizeLinear -> op ->
QuantizeLinear patterns (onnxruntime.quantization's QDQ format) into the quantized operators
that run on edgedl.kernels.quant, as onnxruntime's own QDQ transformer does:

- DQ(x), DQ(w), [DQ(int32 bias)] -> Conv -> Q            => QLinearConv
- DQ(a), DQ(b) -> MatMul -> Q                            => QLinearMatMul
- DQ(a), DQ(b) -> Add / Mul -> Q                         => com.microsoft.QLinearAdd / Mul
- DQ(x...) -> Concat -> Q                                => com.microsoft.QLinearConcat
- DQ(x) -> Sigmoid / LeakyRelu -> Q                      => com.microsoft.QLinearSigmoid /
                                                            QLinearLeakyRelu (lookup tables)
- DQ(x) -> AveragePool / GlobalAveragePool -> Q          => com.microsoft.QLinear...Pool
- DQ(x) -> Reshape / Transpose / MaxPool / ... -> Q with the same scale and zero point
                                                         => the op on the integer tensor

Only 8-bit activations with per-tensor constant scales and zero points are rewritten (and
per-output-channel weight scales for Conv); anything else keeps the float ops between its
Q/DQ nodes, which is always correct. The DQ nodes a rewrite leaves unread are dropped with
the other dead nodes, so int8 weights stay int8 in the plan.
"""
from typing import NamedTuple

import numpy as np

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
    w = _dq(rw, conv.inputs[1])
    if ins is None or w is None or not _conv_weights(
            rw, w, lambda axis, wq: axis in (0, -wq.ndim)):
        return False
    x = ins[0]
    bias = _conv_bias(rw, conv, x, w)
    if bias is None:
        return False
    inputs = [x.value, x.scale, _zero_point(rw, x), w.value, w.scale, _zero_point(rw, w),
              q.scale, _zero_point(rw, q)] + bias
    return _rewrite(rw, [conv, q.node], "QLinearConv", inputs, q, dict(conv.attrs))


def _binary(rw, node, op_type, domain=""):
    """DQ(a), DQ(b) -> node -> Q as ``op_type``(a, a_scale, a_zero, b, ..., y_scale, y_zero)."""
    ins, q = _activations(rw, node, 2)
    if ins is None:
        return False
    inputs = [v for p in ins for v in (p.value, p.scale, _zero_point(rw, p))]
    return _rewrite(rw, [node, q.node], op_type, inputs + [q.scale, _zero_point(rw, q)], q,
                    {}, domain)


def qlinear_matmul(rw, mm):
    return mm.op_type == "MatMul" and _binary(rw, mm, "QLinearMatMul")


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


def integer_mover(rw, node):
    """DQ -> (an op that only moves elements) -> Q with the same parameters: the op on the
    integer tensor; its other inputs (shapes, axes, indices) stay as they are."""
    if node.op_type not in _MOVERS or not node.inputs or len(node.outputs) != 1:
        return False
    ins, q = _activations(rw, node, 1)
    if ins is None or not _same_params(rw, ins[0], q):
        return False
    return _rewrite(rw, [node, q.node], node.op_type,
                    [ins[0].value] + list(node.inputs[1:]), q, dict(node.attrs))


_PATTERNS = (qlinear_conv, qlinear_matmul, qlinear_binary, qlinear_concat, qlinear_unary,
             integer_mover)


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


def _evaluate_chain(rw, nodes, x, x_dtype):
    """The chain ``nodes`` (reading ``x``) evaluated on every 8-bit value of x, in the order
    of x's bits as uint8: the 256-entry table that replaces it."""
    from .plan import evaluate_constant
    g = rw.g
    values = {x: np.arange(256, dtype=np.uint16).astype(np.uint8).view(x_dtype)}
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
