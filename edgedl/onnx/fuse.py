"""Graph rewrites done once at load (they do not depend on input shapes), in this order:

0. QDQ patterns onto integer kernels, and chains of 8-bit integer ops of one tensor (SiLU
   as QLinearMul(x, QLinearSigmoid(x))) into one 256-entry lookup (qdq.py);
1. constant folding: a node whose inputs are all constants is evaluated once (exporters that
   write weights as ConstantOfShape, Unsqueeze'd or Cast constants, e.g. the onnx wheel's
   classic CNNs, then look like any other model to the folds below); an Identity, or an
   inference-mode Dropout whose mask nobody reads, bypassed (its readers read its input);
1b. YOLOv5 / YOLOX's Focus (four stride-2 parity Slices -> Concat -> Conv) -> one Conv
   with stride 2 and a kernel twice as large on the Slices' input;
2. BatchNormalization (every opset's spelling) folded into the preceding Conv's weights and
   bias; one not preceded by a Conv becomes a ``ScaleShift`` (an internal op: x * a + c per
   channel, run as a depthwise 1x1 convolution with a fused epilogue);
3. per-channel Mul / Add / Sub by a constant folded into a preceding Conv or ScaleShift (the
   Mul/Add pairs some exporters write after BatchNormalization);
4. written-out activations recognised: ``x * Sigmoid(x)`` -> Silu (an internal op),
   ``x * HardSigmoid(x, 1/6, 0.5)`` and ``x * Clip(x + 3, 0, 6) / 6`` (with its ``* (1/6)``
   and ``Clip(..) / 6 * x`` spellings) -> HardSwish;
4b. int8 "float islands": DQ -> float ops of one tensor whose constants vary along one axis
   at most (a ScaleShift, per-channel Mul/Add, Relu, activations...) -> Q, with 8-bit
   per-tensor Q/DQ, -> one lookup of 256 entries per channel (QChannelLookup) or one table
   (QLookup) evaluated at load through the chain itself (qdq.py);
5. an activation that is the only reader of a Conv's or ScaleShift's output fused into its
   epilogue (which activations fuse: ``kernels.activation_table``); then a Conv read only by
   an Add of a computed value r fused with it: r added before the Conv's activation
   (Conv -> Add -> act, ResNet) or after it (Conv -> act -> Add, YOLO's CSP shortcuts);
5b. a 1x1 Conv read only by a 3x3 depthwise Conv (maybe then a 2x2 stride-2 MaxPool) ->
   one ``PointwiseDepthwise`` (an internal op, run band by band of rows where the 1x1's
   output would not stay in the last-level cache; elsewhere the planner runs the parts);
5c. a dense or 3x3 depthwise Conv read only by a 3x3 or 2x2 stride-2 MaxPool -> one
   ``ConvMaxPool`` (an internal op: the pool taken band by band from the conv's rows while
   they are in L2, where the conv runs on the direct path or is a 'same' depthwise one;
   elsewhere the planner runs the parts; 5b's units keep their depthwise conv and pool as
   one when unfused);
6. Transpose -> Softmax/LogSoftmax -> the inverse Transpose (FastestDet's class scores) ->
   one softmax over the matching axis of the untransposed tensor (``_single_axis``: opset
   13's one-axis semantics also before opset 13, where the Softmax axis was the last one);
6b. a Concat read only by a Transpose -> ``ConcatTransposed`` (an internal op: each input
   transposed into its slice of the output; YOLO heads' Concat -> Transpose);
7. a zero Pad of H, W read only by an AveragePool without pads of its own (FastestDet) ->
   one AveragePool with those pads, counted (count_include_pad=1); the same for an int8
   Pad with the input zero point before a QLinearAveragePool;
8. (int8) a QLinearConv read only by a QLookup / QChannelLookup -> QLinearConvLookup, the
   tables applied by the conv kernels (qdq.fuse_conv_lookups); a QLinearConv read only by
   a QLinearConcat that requantizes it: that table in the conv too (qdq.fuse_concat_requant);
9. a channel shuffle split by scalar Gathers (Transpose -> Reshape -> Gathers -> Conv /
   Concat): the Transpose a view (``_view``), each half strided channels read in place.

A rewrite only removes values nobody else reads and that are not graph outputs.
"""
import numpy as np

from ..kernels.activation_table import BY_ONNX
from .graph import Node
from .ops.nn import bn_coefficients
from .plan import evaluate_constant
from .qdq import (fuse_concat_requant, fuse_conv_lookups, fuse_float_islands,
                  fuse_int8_lookups, rewrite_qdq)
from .rewriter import Rewriter, near as _near, replace as _replace


# ----------------------------------------------------------------------------- 1b. Focus
#: A Slice end at least this large means "to the end of the axis" (exporters write INT64_MAX).
_TO_THE_END = 1 << 30


def _slice_steps(rw, node):
    """A Slice's (start, end, axis, step) tuples when its parameters are constants given as
    inputs (opset >= 10), else None."""
    if rw.g.opset < 10 or len(node.inputs) < 5 or not all(node.inputs[1:5]):
        return None
    vals = [rw.const(i) for i in node.inputs[1:5]]
    if any(v is None or v.dtype.kind not in "iu" for v in vals):
        return None
    return list(zip(*(np.asarray(v).reshape(-1).tolist() for v in vals)))


def _parity_slice(rw, value):
    """(source value, {axis: start}, the Slice nodes) when ``value`` is a chain of Slices
    (constant starts / ends / axes / steps, each read only by the next) taking every second
    element of axes 2 and 3 (or -2, -1) from start 0 or 1 to the end, else None."""
    picked, nodes = {}, []
    node = rw.prod.get(value)
    while node is not None and node.op_type == "Slice" and not node.domain:
        steps = _slice_steps(rw, node)
        if steps is None:
            return None
        for st, en, ax, sp in steps:
            ax = ax + 4 if ax < 0 else ax
            if ax not in (2, 3) or ax in picked or sp != 2 or st not in (0, 1) or \
                    en < _TO_THE_END:
                return None
            picked[ax] = st
        nodes.append(node)
        inner = rw.prod.get(node.inputs[0])
        if inner is not None and inner.op_type == "Slice" and \
                rw.only_reader(node.inputs[0]) is not node:
            return None     # an inner slice read elsewhere too: keep the graph as it is
        node = inner
    return (nodes[-1].inputs[0], picked, nodes) if len(picked) == 2 else None


def _plain_geometry(a):
    """Conv attributes of group 1, stride 1, dilation 1 and explicit pads."""
    return (int(a.get("group", 1)) == 1 and a.get("auto_pad", "NOTSET") in ("NOTSET", "")
            and all(int(v) == 1 for v in list(a.get("strides", [1, 1])) +
                    list(a.get("dilations", [1, 1]))))


def _focus_conv(rw, conv):
    """(weights, concat) of a Conv / QLinearConv that may end a Focus: constant 4-D weights
    over 4k channels, stride 1, dilation 1, group 1, its input a channel Concat (QLinearConcat)
    of four tensors read only by it; else None."""
    quantized = conv.op_type == "QLinearConv"
    if conv.op_type not in ("Conv", "QLinearConv") or conv.domain or \
            len(conv.inputs) < (4 if quantized else 2) or not _plain_geometry(conv.attrs):
        return None
    w = rw.const(conv.inputs[3 if quantized else 1])
    cat = rw.prod.get(conv.inputs[0])
    if w is None or w.ndim != 4 or w.dtype.kind not in ("iu" if quantized else "f") or \
            w.shape[1] % 4 or cat is None or \
            cat.key != ("com.microsoft.QLinearConcat" if quantized else "Concat") or \
            int(cat.attrs.get("axis", 0)) != 1 or \
            len(cat.inputs) != (14 if quantized else 4) or \
            rw.only_reader(cat.outputs[0]) is not conv:
        return None
    return w, cat


def _focus_parts(rw, conv, cat):
    """(the four parity slices (source, {axis: start}, nodes), the quantizers or Nones) of a
    Focus ending at ``conv``, the four parities each once from one source; else None."""
    if conv.op_type == "QLinearConv":
        quants = _focus_quantizers(rw, conv, cat)
        if quants is None:
            return None
        sliced, readers = [q.inputs[0] for q in quants], quants
    else:
        quants, sliced, readers = [None] * 4, cat.inputs, [cat] * 4
    parts = [_parity_slice(rw, v) if rw.only_reader(v) is r else None
             for v, r in zip(sliced, readers)]
    if any(p is None for p in parts) or len({p[0] for p in parts}) != 1 or \
            len({(p[1][2], p[1][3]) for p in parts}) != 4:
        return None
    return parts, quants


def fold_focus_into_conv(rw):
    """YOLOv5 / YOLOX's Focus: Concat(axis 1) of the four parity slices x[..., a::2, b::2]
    read only by a Conv (stride 1, dilation 1, group 1) -> one Conv on x with stride 2, a
    kernel twice as large and pads doubled: concat channel block p = (a, b) at kernel tap
    (i, j) becomes tap (2i + a, 2j + b) of x. The same sums (in another order), without
    the four strided copies (0.25-0.5 ms for YOLOX-nano's 416x416 image) or the 12-channel
    tensor; the stem then runs as a dense conv over 3 channels (x's own). ``_even_hw``
    keeps the Concat's rule: odd H or W (slices of unequal size) is an error. In a QDQ model
    (QuantizeLinear per slice -> QLinearConcat -> QLinearConv, one scale and zero point
    throughout) the image is quantized once and the QLinearConv folded alike."""
    for conv in list(rw.g.nodes):
        found = _focus_conv(rw, conv)
        split = found and _focus_parts(rw, conv, found[1])
        if split:
            _fold_focus(rw, conv, *found, *split)


def _fold_focus(rw, conv, w, cat, parts, quants):
    m, c4, kh, kw = w.shape
    c = c4 // 4
    w2 = np.zeros((m, c, 2 * kh, 2 * kw), w.dtype)     # every tap is set below
    for blk, (_, par, _) in enumerate(parts):
        w2[:, :, par[2]::2, par[3]::2] = w[:, blk * c:(blk + 1) * c]
    wname = conv.outputs[0] + "::w_focus"
    rw.g.consts[wname] = w2
    a = conv.attrs
    attrs = dict(a, kernel_shape=[2 * kh, 2 * kw], strides=[2, 2], _even_hw=1,
                 pads=[2 * int(v) for v in a.get("pads", [0, 0, 0, 0])])
    gone = [cat, conv] + [n for p in parts for n in p[2]]
    src = parts[0][0]
    if quants[0] is not None:   # quantize the image once (the four quantizers are one)
        q = quants[0]
        qsrc = conv.outputs[0] + "::x_focus"
        _replace(rw, [q], Node("QuantizeLinear", [src] + q.inputs[1:], [qsrc], q.attrs,
                               q.name), q)
        gone += quants[1:]
        ins = [qsrc] + conv.inputs[1:3] + [wname] + conv.inputs[4:]
    else:
        ins = [src, wname] + conv.inputs[2:]
    _replace(rw, gone, Node(conv.op_type, ins, conv.outputs, attrs, conv.name), conv)


def _focus_quantizers(rw, conv, qcat):
    """A Focus in a QDQ model (after rewrite_qdq): the four QuantizeLinear nodes feeding the
    QLinearConcat, when they, the concat's output and the conv's input all have one scale
    and zero point (quantizing is then elementwise and commutes with the slices: the int32
    sums of the folded QLinearConv are the same, bit for bit); else None."""
    def same(names):
        vals = [rw.const(n) for n in names]
        return all(v is not None and v.size == 1 for v in vals) and all(
            v.dtype == vals[0].dtype and v.reshape(-1)[0] == vals[0].reshape(-1)[0]
            for v in vals)
    quants = [rw.prod.get(qcat.inputs[2 + 3 * j]) for j in range(4)]
    if any(q is None or q.key != "QuantizeLinear" or len(q.inputs) < 3 or not q.inputs[2]
           or rw.only_reader(q.outputs[0]) is not qcat for q in quants):
        return None
    scales = [qcat.inputs[0], conv.inputs[1]] + [qcat.inputs[3 + 3 * j] for j in range(4)] \
        + [q.inputs[1] for q in quants]
    zeros = [qcat.inputs[1], conv.inputs[2]] + [qcat.inputs[4 + 3 * j] for j in range(4)] \
        + [q.inputs[2] for q in quants]
    return quants if same(scales) and same(zeros) else None


# ----------------------------------------------------------------------------- 1. constants
#: Ops that must not be evaluated once: their value differs from run to run.
_NOT_FOLDED = {"RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _read(rw, node):
    """Does anything read the node's outputs? (A QDQ rewrite leaves its weights' DQ nodes
    unread: folding them would make float copies of int8 weights.)"""
    return any(o in rw.outputs or rw.cons.get(o) for o in node.outputs if o)


def fold_constants(rw):
    """Evaluate every node whose inputs are all constants (the planner would fold it on
    each plan; folding at load lets the rewrites below see the weights)."""
    g = rw.g
    for node in g.nodes:
        ins = [i for i in node.inputs if i]
        if not ins or node.op_type in _NOT_FOLDED or node.domain or \
                any(i not in g.consts for i in ins) or not _read(rw, node):
            continue
        values = evaluate_constant(g, node)
        for o, v in zip(node.outputs, values):
            if o:
                g.consts[o] = v
        rw.removed.add(node)
    rw.compact()
    rw.refresh()


def _pass_through_source(rw, node):
    """The value an Identity, or an inference-mode Dropout whose mask nobody reads, passes on
    unchanged (None if the node must stay: a graph output, a read mask, training mode)."""
    if node.domain or node.op_type not in ("Identity", "Dropout") or not node.inputs[0]:
        return None
    if node.op_type == "Dropout":
        mode = node.inputs[2] if len(node.inputs) > 2 else ""
        if mode and (rw.const(mode) is None or bool(np.any(rw.const(mode)))):
            return None
        if any(o in rw.outputs or rw.cons.get(o) for o in node.outputs[1:] if o):
            return None
    if node.outputs[0] in rw.outputs:
        return None
    return node.inputs[0]


def bypass_pass_through(rw):
    """Readers of an Identity / inference Dropout read its input instead and the node goes
    (a Dropout left in an exported classifier allocated its all-true mask on every run)."""
    for node in rw.g.nodes:
        src = _pass_through_source(rw, node)
        if src is None:
            continue
        out = node.outputs[0]
        readers = list(rw.cons.get(out, []))
        rw.forget(readers + [node])
        for r in readers:
            r.inputs = [src if i == out else i for i in r.inputs]
        rw.learn(readers)
        rw.removed.add(node)


# ----------------------------------------------------------------------------- 2-3. affine folds
def _bn_affine(rw, bn):
    """(a, c) float64 per channel of an inference BatchNormalization with constant
    parameters (y = x * a + c along axis 1), else None. Every opset: opset < 9's ``spatial``
    must be 1 (per channel), ``is_test`` / ``momentum`` / ``consumed_inputs`` do not matter
    for inference, training mode or extra outputs keep the node."""
    if bn.attrs.get("training_mode", 0) or len([o for o in bn.outputs if o]) > 1:
        return None
    if not bn.attrs.get("spatial", 1) or len(bn.inputs) < 5:
        return None
    params = [rw.const(n) for n in bn.inputs[1:5]]
    if any(p is None or p.dtype.kind != "f" for p in params):
        return None
    m = params[0].size
    if any(p.ndim != 1 or p.size != m for p in params):
        return None
    return bn_coefficients(*params, float(bn.attrs.get("epsilon", 1e-5)))


def _channel_vector(v, rank, channels):
    """A constant operand of a per-channel Mul/Add on a rank-``rank`` tensor with
    ``channels`` channels (axis 1), as a float64 (channels,) vector; None when it broadcasts
    any other way (or would change the output's shape)."""
    if v is None or v.dtype.kind != "f" or v.ndim > rank:
        return None
    if v.size == 1:
        return np.full(channels, float(v.reshape(-1)[0]))
    shape = (1,) * (rank - v.ndim) + v.shape
    if rank < 2 or shape[1] != channels or any(d != 1 for k, d in enumerate(shape) if k != 1):
        return None
    return v.reshape(-1).astype(np.float64)


def _affine_of(rw, node, value, rank, channels):
    """(a, c) of ``node`` as y = value * a + c per channel, or None. Mul, Add and Sub (value
    first) by a constant, and a BatchNormalization reading ``value``."""
    if node.op_type == "BatchNormalization":
        return _bn_affine(rw, node) if node.inputs[0] == value else None
    other = rw.other_input(node, value) if len(node.inputs) == 2 else None
    if node.op_type == "Sub" and node.inputs[0] != value:
        other = None            # c - x is not x * 1 + c
    if node.op_type not in ("Mul", "Add", "Sub") or other is None:
        return None
    v = _channel_vector(rw.const(other), rank, channels)
    if v is None:
        return None
    one, zero = np.ones(channels), np.zeros(channels)
    return {"Mul": (v, zero), "Add": (one, v), "Sub": (one, -v)}[node.op_type]


def _conv_affine_target(rw, conv):
    """(weights, rank, channels) of a Conv whose output an affine op may fold into."""
    if conv.op_type != "Conv" or "_act" in conv.attrs or len(conv.inputs) < 2:
        return None
    w = rw.const(conv.inputs[1])
    if w is None or w.dtype.kind != "f" or w.ndim < 3:
        return None
    if len(conv.inputs) > 2 and conv.inputs[2] and rw.const(conv.inputs[2]) is None:
        return None
    return w, w.ndim, w.shape[0]


def _fold_into_conv(rw, conv, w, a, c):
    g = rw.g
    b0 = np.zeros(w.shape[0]) if len(conv.inputs) < 3 or not conv.inputs[2] else \
        rw.const(conv.inputs[2]).astype(np.float64)
    wname, bname = conv.outputs[0] + "::w_fold", conv.outputs[0] + "::b_fold"
    g.consts[wname] = (w.astype(np.float64) * a.reshape((-1,) + (1,) * (w.ndim - 1))
                       ).astype(w.dtype)
    g.consts[bname] = (b0 * a + c).astype(w.dtype)
    conv.inputs = [conv.inputs[0], wname, bname]


def fold_affine_into_conv(rw):
    """Conv -> BatchNormalization / per-channel Mul, Add, Sub by constants (any chain of
    them, each the only reader of the previous output) -> one Conv with new weights."""
    g = rw.g
    changed = False
    for conv in g.nodes:
        target = _conv_affine_target(rw, conv)
        if target is None:
            continue
        _, rank, m = target
        while True:
            nxt = rw.only_reader(conv.outputs[0])
            ac = None if nxt is None else _affine_of(rw, nxt, conv.outputs[0], rank, m)
            if ac is None:
                break
            _fold_into_conv(rw, conv, rw.const(conv.inputs[1]), *ac)
            rw.absorb(conv, nxt)
            changed = True
    if changed:
        rw.compact()
        rw.refresh()


#: Ops whose output has the rank of their first input.
_SAME_RANK = {"Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid",
              "HardSwish", "Silu", "Elu", "Selu", "Softplus", "Mish", "Dropout", "Identity",
              "BatchNormalization", "ScaleShift", "Concat", "MaxPool", "AveragePool",
              "GlobalAveragePool", "GlobalMaxPool", "LRN", "Conv", "ConvTranspose"}


def _rank_of(rw, value):
    """The rank of ``value`` when load time can tell it (following rank-keeping ops back to a
    constant or a declared graph input), else None."""
    declared = {vi.name: vi.dims for vi in rw.g.inputs}
    for _ in range(10000):      # a chain, not a search: each op has one first input
        if value in rw.g.consts:
            return rw.g.consts[value].ndim
        if value in declared:
            return None if declared[value] is None else len(declared[value])
        node = rw.prod.get(value)
        if node is None or node.op_type not in _SAME_RANK or node.domain:
            return None
        value = node.inputs[0]
    return None


def batchnorm_to_scale_shift(rw):
    """An inference BatchNormalization left over (not after a Conv) -> ScaleShift(x, a, c),
    absorbing the per-channel Mul / Add / Sub chain after it. ``_rank`` is the input's rank
    when known (a per-channel operand is recognised at that rank; scalars at any rank)."""
    g = rw.g
    for bn in list(g.nodes):
        ac = None if bn.op_type != "BatchNormalization" else _bn_affine(rw, bn)
        if ac is None:
            continue
        a, c = ac
        rank = _rank_of(rw, bn.inputs[0])
        ss = Node("ScaleShift", bn.inputs[:1], bn.outputs[:1], {"_rank": rank or 0}, bn.name)
        _replace(rw, [bn], ss, bn)
        while True:
            nxt = rw.only_reader(ss.outputs[0])
            step = None if nxt is None else \
                _affine_of(rw, nxt, ss.outputs[0], rank or 2, a.size)
            if step is None or (rank is None and not _scalar_operand(rw, nxt)):
                break
            a, c = a * step[0], c * step[0] + step[1]
            rw.absorb(ss, nxt)
        dt = rw.const(bn.inputs[1]).dtype
        names = [ss.outputs[0] + "::scale", ss.outputs[0] + "::shift"]
        g.consts[names[0]], g.consts[names[1]] = a.astype(dt), c.astype(dt)
        rw.forget([ss])
        ss.inputs = ss.inputs[:1] + names
        rw.learn([ss])


def _scalar_operand(rw, node):
    """Does binary ``node`` combine its input with a one-element constant?"""
    return any(rw.const(i) is not None and rw.const(i).size == 1 for i in node.inputs[:2])


# ----------------------------------------------------------------------------- 4. activations
def _clip_bounds(rw, node):
    if rw.g.opset < 11:
        return node.attrs.get("min"), node.attrs.get("max")
    ins = node.inputs + ["", ""]
    lo = rw.scalar(ins[1]) if ins[1] else None
    hi = rw.scalar(ins[2]) if ins[2] else None
    if (ins[1] and lo is None) or (ins[2] and hi is None):
        return "dynamic", "dynamic"
    return lo, hi


def _self_product(rw, node, op_type):
    """The Mul reading ``node``'s output and ``node``'s first input (x * f(x)), or None."""
    mul = rw.only_reader(node.outputs[0])
    if mul is not None and mul.op_type == "Mul" and \
            rw.other_input(mul, node.outputs[0]) == node.inputs[0]:
        _replace(rw, [node, mul], Node(op_type, node.inputs[:1], mul.outputs, {}, mul.name),
                 mul)
        return True
    return False


def silu_from_sigmoid(rw, node):
    """x * Sigmoid(x) -> Silu(x)."""
    return node.op_type == "Sigmoid" and _self_product(rw, node, "Silu")


def hard_swish_from_hard_sigmoid(rw, node):
    """x * HardSigmoid(x, 1/6, 0.5) -> HardSwish(x)."""
    if node.op_type != "HardSigmoid" or not (
            _near(node.attrs.get("alpha", 0.2), 1 / 6) and
            _near(node.attrs.get("beta", 0.5), 0.5)):
        return False
    return _self_product(rw, node, "HardSwish")


def _div_by_6(rw, node, value):
    """Is ``node`` value / 6 or value * (1/6)?"""
    if node is None:
        return False
    if node.op_type == "Div" and node.inputs[0] == value:
        return _near(rw.scalar(node.inputs[1]), 6.0)
    if node.op_type == "Mul":
        return _near(rw.scalar(rw.other_input(node, value)), 1.0 / 6.0)
    return False


def _plus_3(rw, add):
    """x when ``add`` is x + 3 (either order), else None."""
    a, b = add.inputs[:2]
    if _near(rw.scalar(b), 3.0) and rw.const(a) is None:
        return a
    if _near(rw.scalar(a), 3.0) and rw.const(b) is None:
        return b
    return None


def _hard_swish_tail(rw, x, c):
    """After ``c`` = Clip(x + 3, 0, 6): the (Mul, Div) or (Div, Mul) pair ending the
    x * c / 6 spellings, or None."""
    nxt = rw.only_reader(c)
    if nxt is None:
        return None
    if nxt.op_type == "Mul" and rw.other_input(nxt, c) == x:        # (x * clip) / 6
        last = rw.only_reader(nxt.outputs[0])
        return [nxt, last] if _div_by_6(rw, last, nxt.outputs[0]) else None
    if _div_by_6(rw, nxt, c):                                        # x * (clip / 6)
        last = rw.only_reader(nxt.outputs[0])
        if last is not None and last.op_type == "Mul" and \
                rw.other_input(last, nxt.outputs[0]) == x:
            return [nxt, last]
    return None


def hard_swish_from_clip(rw, add):
    """x * Clip(x + 3, 0, 6) / 6 and its spellings -> HardSwish(x)."""
    if add.op_type != "Add":
        return False
    x = _plus_3(rw, add)
    clip = None if x is None else rw.only_reader(add.outputs[0])
    if clip is None or clip.op_type != "Clip":
        return False
    lo, hi = _clip_bounds(rw, clip)
    if not (_near(lo, 0.0) and _near(hi, 6.0)):
        return False
    tail = _hard_swish_tail(rw, x, clip.outputs[0])
    if tail is None:
        return False
    last = tail[-1]
    _replace(rw, [add, clip] + tail, Node("HardSwish", [x], last.outputs, {}, last.name),
             last)
    return True


_ACTIVATION_PATTERNS = (silu_from_sigmoid, hard_swish_from_hard_sigmoid, hard_swish_from_clip)


def rewrite_activations(rw):
    for node in list(rw.g.nodes):
        if node not in rw.removed:
            any(pattern(rw, node) for pattern in _ACTIVATION_PATTERNS)


# ----------------------------------------------------------------------------- 5. epilogues
def _clip_spec(rw, act):
    lo, hi = _clip_bounds(rw, act)
    if lo == "dynamic":
        return None
    if _near(lo, 0.0) and _near(hi, 6.0):
        return "relu6", ()
    if _near(lo, 0.0) and hi is None:
        return "relu", ()
    return "clip", (-np.inf if lo is None else float(lo), np.inf if hi is None else float(hi))


def _prelu_spec(rw, act, channels, dtype):
    """A PRelu with a constant scalar or per-channel slope, else None."""
    s = rw.const(act.inputs[1])
    if s is None or s.size not in (1, channels):
        return None
    if s.size > 1 and s.shape not in ((channels, 1, 1), (1, channels, 1, 1)):
        return None
    return "prelu", (s.reshape(-1).astype(dtype) if s.size > 1 else float(s.reshape(-1)[0]),)


def _epilogue_spec(rw, act, channels, dtype):
    """(activation name, params) of a node that can run as a conv epilogue, else None.
    Which ops fuse and their attribute defaults come from the activation table."""
    t = act.op_type
    if t == "Clip":
        return _clip_spec(rw, act)
    if t == "PRelu":
        return None if channels is None else _prelu_spec(rw, act, channels, dtype)
    rec = BY_ONNX.get(t)
    if rec is None or rec.fuse_code is None or act.domain:
        return None
    return rec.name, tuple(float(act.attrs.get(p.onnx_attr, p.attr_default))
                           for p in rec.params)


def _epilogue_host(rw, node):
    """(channels, dtype) of a Conv / 4-D ScaleShift that can take a fused activation."""
    if "_act" in node.attrs:
        return None
    if node.op_type == "Conv":
        w = rw.const(node.inputs[1]) if len(node.inputs) > 1 else None
        return (None, np.float32) if w is None else (w.shape[0], w.dtype)
    if node.op_type == "ScaleShift" and node.attrs.get("_rank") == 4:
        a = rw.const(node.inputs[1])
        return a.size, a.dtype
    return None


def fuse_epilogue_activations(rw):
    """An activation that is the only reader of a Conv's (or 4-D ScaleShift's) output runs
    in its epilogue: ``_act`` / ``_act_params`` attributes, the activation node removed."""
    for node in list(rw.g.nodes):
        host = _epilogue_host(rw, node)
        act = None if host is None else rw.only_reader(node.outputs[0])
        if act is None or act.inputs[0] != node.outputs[0]:
            continue
        spec = _epilogue_spec(rw, act, *host)
        if spec is None:
            continue
        node.attrs["_act"], node.attrs["_act_params"] = spec
        rw.absorb(node, act)


fuse_conv_activations = fuse_epilogue_activations   # the name before ScaleShift fused too


def _residual_pair(rw, add):
    """(conv, r) of an Add / Sum whose one operand is a Conv's output that only it reads
    (4-D constant weights; an activation of its own or not) and whose other operand r is
    computed (not a constant: those fold into the bias); else None."""
    if (add.op_type not in ("Add", "Sum") or add.domain or len(add.inputs) != 2
            or "" in add.inputs or add.attrs.get("broadcast") or add.inputs[0] == add.inputs[1]):
        return None
    for i in (0, 1):
        conv, other = rw.prod.get(add.inputs[i]), add.inputs[1 - i]
        if (conv is None or conv.op_type != "Conv" or conv.domain or len(conv.inputs) < 2
                or conv.attrs.get("_residual")
                or rw.only_reader(conv.outputs[0]) is not add or rw.const(other) is not None):
            continue
        w = rw.const(conv.inputs[1])
        if w is not None and w.ndim == 4:
            return conv, other
    return None


def fuse_residual_adds(rw):
    """Conv -> Add / Sum(conv output, r) [-> activation]: one Conv (``_residual`` 1, inputs
    x, w, bias or "", r) whose epilogue adds r and then applies the activation (ResNet's
    blocks); Conv with its fused activation -> Add: ``_residual`` 2, r added after the
    activation (YOLO's CSP shortcuts, x + SiLU(conv(...))). r must already be computed
    where the Add is: the fused node takes the Add's place. Runs after
    fuse_epilogue_activations."""
    for add in list(rw.g.nodes):
        pair = None if add in rw.removed else _residual_pair(rw, add)
        if pair is None:
            continue
        conv, other = pair
        w = rw.const(conv.inputs[1])
        bias = conv.inputs[2] if len(conv.inputs) > 2 else ""
        after = "_act" in conv.attrs
        new = Node("Conv", [conv.inputs[0], conv.inputs[1], bias, other],
                   list(add.outputs[:1]), dict(conv.attrs, _residual=2 if after else 1),
                   conv.name)
        remove = [conv, add]
        act = None if after else rw.only_reader(add.outputs[0])
        spec = None if act is None or act.inputs[0] != add.outputs[0] else \
            _epilogue_spec(rw, act, w.shape[0], w.dtype)
        if spec is not None:
            new.attrs["_act"], new.attrs["_act_params"] = spec
            new.outputs = list(act.outputs[:1])
            remove.append(act)
        _replace(rw, remove, new, add)


def _conv_of(rw, node, kernel, group_is_channels):
    """node's constant 4-D weights when it is a plain Conv (no residual, no Focus rule,
    explicit pads, dilation 1) of ``kernel`` (kh, kw) whose group is 1, or with
    ``group_is_channels`` one per output channel of one input channel each; else None."""
    a = node.attrs
    if (node.op_type != "Conv" or node.domain or len(node.inputs) < 2 or a.get("_residual")
            or a.get("_even_hw") or a.get("auto_pad", "NOTSET") not in ("NOTSET", "")
            or any(int(v) != 1 for v in a.get("dilations", [1, 1]))):
        return None
    w = rw.const(node.inputs[1])
    if w is None or w.ndim != 4 or w.dtype.kind != "f" or w.shape[2:] != kernel:
        return None
    group = int(a.get("group", 1))
    return w if group == (w.shape[0] if group_is_channels else 1) and \
        (w.shape[1] == 1 or not group_is_channels) else None


def _max_pool_2x2(rw, node):
    """Whether node is a MaxPool of 2x2 windows at stride 2, no padding, floor, one output."""
    a = node.attrs
    return (node.op_type == "MaxPool" and not node.domain and len(node.outputs) == 1
            and [int(v) for v in a.get("kernel_shape", [])] == [2, 2]
            and [int(v) for v in a.get("strides", [1, 1])] == [2, 2]
            and not any(int(v) for v in a.get("pads", [0] * 4))
            and all(int(v) == 1 for v in a.get("dilations", [1, 1]))
            and not int(a.get("ceil_mode", 0)) and not int(a.get("storage_order", 0))
            and a.get("auto_pad", "NOTSET") in ("NOTSET", "", "VALID"))


def _pointwise_depthwise_pair(rw, pw):
    """The depthwise Conv (3x3, stride 1, padding 1, as many channels as pw makes) that
    alone reads the output of ``pw``, a 1x1 Conv of stride 1 without padding; else None."""
    w1 = None if pw in rw.removed else _conv_of(rw, pw, (1, 1), False)
    dw = None if w1 is None else rw.only_reader(pw.outputs[0])
    if dw is None or dw.inputs[0] != pw.outputs[0] or \
            any(int(v) != 1 for v in pw.attrs.get("strides", [1, 1])) or \
            any(int(v) for v in pw.attrs.get("pads", [0] * 4)):
        return None
    w2 = _conv_of(rw, dw, (3, 3), True)
    if w2 is None or w2.shape[0] != w1.shape[0] or \
            any(int(v) != 1 for v in dw.attrs.get("strides", [1, 1])) or \
            [int(v) for v in dw.attrs.get("pads", [0] * 4)] != [1, 1, 1, 1]:
        return None
    return dw


def fuse_pointwise_depthwise(rw):
    """1x1 Conv (stride 1, no padding) read only by a 3x3 depthwise Conv (stride 1, padding
    1), that one maybe read only by a 2x2 stride-2 MaxPool -> PointwiseDepthwise (an
    internal op: kernels.conv.pointwise_depthwise_plan, one pass band by band of rows
    instead of the 1x1's whole output through memory; ``_parts``: the nodes it replaces,
    which the planner runs instead where that does not pay). Each conv keeps its fused
    activation. Runs after fuse_residual_adds (a conv with a residual stays as it is)."""
    for pw in list(rw.g.nodes):
        dw = _pointwise_depthwise_pair(rw, pw)
        if dw is None:
            continue
        pool = rw.only_reader(dw.outputs[0])
        pool = pool if pool is not None and _max_pool_2x2(rw, pool) else None
        last = pool or dw
        # unfused, the depthwise conv and its pool stay one ConvMaxPool (its own parts again)
        attrs = {"_pool": int(pool is not None),
                 "_parts": (pw, _conv_maxpool_node(dw, pool)) if pool else (pw, dw)}
        for key, src in (("_pw_act", pw), ("_act", dw)):
            if "_act" in src.attrs:
                attrs[key] = src.attrs["_act"]
                attrs[key + "_params"] = tuple(src.attrs.get("_act_params", ()))
        ins = [pw.inputs[0], pw.inputs[1], pw.inputs[2] if len(pw.inputs) > 2 else "",
               dw.inputs[1], dw.inputs[2] if len(dw.inputs) > 2 else ""]
        new = Node("PointwiseDepthwise", ins, list(last.outputs[:1]), attrs, dw.name)
        _replace(rw, [pw, dw] + ([pool] if pool else []), new, last)


def _max_pool_s2(node):
    """Whether node is a MaxPool (one output) of 3x3 or 2x2 windows at stride 2, dilation 1:
    the pools ConvMaxPool may take (its handler checks the padding)."""
    a = node.attrs
    return (node.op_type == "MaxPool" and not node.domain
            and len([o for o in node.outputs if o]) == 1
            and [int(v) for v in a.get("kernel_shape", [])] in ([3, 3], [2, 2])
            and [int(v) for v in a.get("strides", [1, 1])] == [2, 2]
            and all(int(v) == 1 for v in a.get("dilations", [1, 1]))
            and not int(a.get("storage_order", 0)))


def _conv_maxpool_node(conv, pool):
    """The ConvMaxPool of conv and the MaxPool that alone reads it (``_parts``: the two)."""
    return Node("ConvMaxPool", list(conv.inputs), list(pool.outputs[:1]),
                {"_parts": (conv, pool)}, conv.name)


def fuse_conv_maxpool(rw):
    """A dense 2-D Conv (group 1, constant weights, maybe with its fused activation) read
    only by a 3x3 or 2x2 stride-2 MaxPool, or a 3x3 'same' depthwise Conv read only by a
    2x2 one -> ConvMaxPool (an internal op: kernels.conv.conv_maxpool_plan, the pool run
    band by band on the conv's rows while they are in L2 or L1: stem convs and their pools,
    YuNet's depthwise convs and theirs). ``_parts``: the two nodes, which the planner runs
    instead where the dense conv does not take the direct path, the depthwise one's rows are
    narrow, or the pool is not one the kernel takes. Runs after fuse_pointwise_depthwise
    (whose pooled units stay theirs)."""
    for pool in list(rw.g.nodes):
        conv = rw.prod.get(pool.inputs[0]) if pool.inputs and _max_pool_s2(pool) else None
        if conv is None or conv in rw.removed or rw.only_reader(conv.outputs[0]) is not pool:
            continue
        w = rw.const(conv.inputs[1]) if len(conv.inputs) > 1 else None
        if w is None or w.ndim != 4 or (_conv_of(rw, conv, tuple(w.shape[2:]), False) is None
                                        and not _same_depthwise_pool(rw, conv, pool)):
            continue
        _replace(rw, [conv, pool], _conv_maxpool_node(conv, pool), pool)


def _same_depthwise_pool(rw, conv, pool):
    """Whether conv is a 3x3 depthwise Conv of stride 1 and padding 1 and pool a 2x2
    stride-2 MaxPool without padding (the depthwise pair ConvMaxPool takes)."""
    return (_conv_of(rw, conv, (3, 3), True) is not None and _max_pool_2x2(rw, pool)
            and all(int(v) == 1 for v in conv.attrs.get("strides", [1, 1]))
            and [int(v) for v in conv.attrs.get("pads", [0] * 4)] == [1, 1, 1, 1])


# ----------------------------------------------------------------------------- 6-7. layout
def fuse_transposed_concat(rw):
    """A Concat read only by a Transpose -> ConcatTransposed (an internal op): each input
    transposed straight into its slice of the output, the concat axis permuted along (YOLO
    heads: YOLOX's (1, 85, 2704 | 676 | 169) -> Concat(axis 2) -> Transpose(0, 2, 1) ->
    (1, 3549, 85); the Concat's copy, 86 us strided, goes). ``_parts``: the two nodes, which
    the planner runs instead where the slices are not contiguous or a shape not fixed."""
    for t in list(rw.g.nodes):
        if t.op_type != "Transpose" or len(t.inputs) != 1:
            continue
        c = rw.prod.get(t.inputs[0])
        if c is None or c.op_type != "Concat" or rw.only_reader(c.outputs[0]) is not t or \
                len(c.inputs) < 2 or not all(c.inputs) or "axis" not in c.attrs:
            continue
        attrs = {"axis": int(c.attrs["axis"]), "_parts": (c, t)}
        if t.attrs.get("perm") is not None:
            attrs["perm"] = [int(a) for a in t.attrs["perm"]]
        new = Node("ConcatTransposed", list(c.inputs), list(t.outputs[:1]), attrs, t.name)
        _replace(rw, [c, t], new, t)


def fuse_transposed_softmax(rw):
    g = rw.g
    for sm in list(g.nodes):
        if sm.op_type not in ("Softmax", "LogSoftmax") or len(sm.inputs) != 1:
            continue
        t1 = rw.prod.get(sm.inputs[0])
        t2 = rw.only_reader(sm.outputs[0])
        if t1 is None or t1.op_type != "Transpose" or rw.only_reader(t1.outputs[0]) is not sm \
                or t2 is None or t2.op_type != "Transpose":
            continue
        p, q = t1.attrs.get("perm"), t2.attrs.get("perm")
        if p is None or q is None or len(p) != len(q) or \
                sorted(p) != list(range(len(p))) or any(p[q[i]] != i for i in range(len(p))):
            continue
        nd = len(p)
        axis = int(sm.attrs.get("axis", 1 if g.opset < 13 else -1))
        axis += nd if axis < 0 else 0
        if not 0 <= axis < nd or (g.opset < 13 and axis != nd - 1):
            continue        # before opset 13 only a last-axis softmax is a one-axis one
        new = Node(sm.op_type, t1.inputs[:1], t2.outputs,
                   {"axis": int(p[axis]), "_single_axis": 1}, sm.name)
        _replace(rw, [t1, sm, t2], new, t2)


#: Readers of a view with strided channels that take it as it is: a Conv (its planned run
#: reads a 1x1's channels in place, other convs copy it first; so do the fused units that
#: begin with one) and a Concat (it copies anyway).
_VIEW_READERS = ("Conv", "PointwiseDepthwise", "ConvMaxPool", "Concat")


def _scalar_gather_to_views(rw, value):
    """Every reader of ``value`` is a Gather of one constant index (basic indexing: a view)
    whose every reader is in _VIEW_READERS; none is a graph output."""
    gathers = rw.cons.get(value, [])
    if not gathers or value in rw.outputs:
        return False
    for gt in gathers:
        idx = rw.const(gt.inputs[1]) if len(gt.inputs) > 1 else None
        if gt.op_type != "Gather" or gt.domain or idx is None or np.ndim(idx) != 0 or \
                gt.inputs[0] != value or gt.outputs[0] in rw.outputs:
            return False
        readers = rw.cons.get(gt.outputs[0], [])
        if not readers or any(r.op_type not in _VIEW_READERS or r.domain for r in readers):
            return False
    return True


def shuffle_as_views(rw):
    """A channel shuffle split into halves by scalar Gathers (ShuffleNetV2 as FastestDet
    exports it: (1, C, H, W) -> Reshape (C/2, 2, HW) -> Transpose(1, 0, 2) -> Reshape (2, 1,
    C/2, H, W) -> Gather 0 / 1 -> Conv, Concat): the Transpose marked ``_view``, so that it
    returns NumPy's transposed view instead of a copy; the Reshape after it then splits the
    last axis of that view and each half is every second channel of the input, in place
    (ConvF32 reads such a 1x1 conv's input rows two planes apart; a Concat copies it as it
    would the Transpose's output). The Transpose's copy was 3% of FastestDet's time."""
    for t in list(rw.g.nodes):
        if t.op_type != "Transpose" or t.domain or len(t.inputs) != 1:
            continue
        r = rw.only_reader(t.outputs[0])
        if r is None or r.op_type != "Reshape" or r.domain or \
                not _scalar_gather_to_views(rw, r.outputs[0]):
            continue
        t.attrs["_view"] = 1


def _pad_spec(rw, pad):
    """(pads, value, axes) of a constant-mode Pad, or None when any of them is computed."""
    if pad.attrs.get("mode", "constant") != "constant":
        return None
    if rw.g.opset < 11:
        pads = pad.attrs.get("pads" if rw.g.opset >= 2 else "paddings")
        return pads, float(pad.attrs.get("value", 0.0)), None
    ins = pad.inputs + ["", "", ""]
    axes = rw.const(ins[3])
    if ins[3] and axes is None:
        return None
    return rw.const(ins[1]), (rw.scalar(ins[2]) if ins[2] else 0.0), axes


def _zero_pad_hw(rw, pad, zero=0.0):
    """A Pad node's (top, left, bottom, right) when it pads a rank-4 tensor with zeros (or
    ``zero``) on H, W only (constant mode, pads >= 0, constant pads / value / axes), else
    None."""
    spec = _pad_spec(rw, pad)
    if spec is None or spec[0] is None or spec[1] != zero:
        return None
    pads, _, axes = spec
    pads = [int(v) for v in np.asarray(pads).reshape(-1)]
    n = len(pads) // 2
    if axes is None and n != 4:
        return None
    width = dict.fromkeys(range(4), (0, 0))
    for i, a in enumerate(range(4) if axes is None else np.asarray(axes).reshape(-1)):
        a = int(a) + 4 if int(a) < 0 else int(a)
        if not 0 <= a < 4:
            return None
        width[a] = (pads[i], pads[n + i])
    if min(pads) < 0 or width[0] != (0, 0) or width[1] != (0, 0):
        return None
    (t, b), (le, r) = width[2], width[3]
    return t, le, b, r


def _plain_avgpool_kernel(pool):
    """An AveragePool's 2-D kernel shape when it has no pads, ceil_mode or dilation of its
    own (with ceil_mode, windows starting in the padding differ), else None."""
    a = pool.attrs
    ks = [int(k) for k in a.get("kernel_shape", [])]
    if (len(ks) != 2 or a.get("auto_pad", "NOTSET") not in ("NOTSET", "")
            or any(int(p) for p in a.get("pads", [0] * 4)) or int(a.get("ceil_mode", 0))
            or any(int(d) != 1 for d in a.get("dilations", [1, 1]))):
        return None
    return ks


def fuse_pad_into_avgpool(rw):
    for pool in list(rw.g.nodes):
        quantized = pool.key == "com.microsoft.QLinearAveragePool"
        if pool.op_type != "AveragePool" and not quantized or not pool.inputs or \
                int(pool.attrs.get("channels_last", 0)):            # (NHWC: other axes)
            continue
        pad = rw.prod.get(pool.inputs[0])
        if pad is None or pad.op_type != "Pad" or rw.only_reader(pad.outputs[0]) is not pool:
            continue
        ks = _plain_avgpool_kernel(pool)
        # an int8 pool's zero is its input zero point (a pad with it: QDQ's padded zeros)
        zero = 0.0 if not quantized else \
            rw.scalar(pool.inputs[2]) if len(pool.inputs) > 2 and pool.inputs[2] else 0.0
        hw = None if ks is None or zero is None else _zero_pad_hw(rw, pad, zero)
        if hw is None or hw[0] >= ks[0] or hw[2] >= ks[0] or hw[1] >= ks[1] or hw[3] >= ks[1]:
            continue    # pads must stay below the kernel (the pooling kernels' rule)
        attrs = dict(pool.attrs, pads=list(hw), count_include_pad=1)
        new = Node(pool.op_type, pad.inputs[:1] + pool.inputs[1:], pool.outputs, attrs,
                   pool.name, pool.domain)
        _replace(rw, [pad, pool], new, pool)


#: The rewrites in order (each a pass over the graph; see the module docstring).
REWRITES = (rewrite_qdq, fuse_int8_lookups, fold_constants, bypass_pass_through,
            fold_focus_into_conv,
            fold_affine_into_conv,
            batchnorm_to_scale_shift, rewrite_activations, fuse_float_islands,
            fuse_epilogue_activations, fuse_residual_adds, fuse_pointwise_depthwise,
            fuse_conv_maxpool, fuse_transposed_softmax, fuse_transposed_concat,
            fuse_pad_into_avgpool, fuse_conv_lookups, fuse_concat_requant, shuffle_as_views)


def fold_batchnorm(rw):
    """BatchNormalization (and per-channel Mul/Add) after a Conv folded into it."""
    fold_affine_into_conv(rw)


def optimize(graph, fuse=True, backend="numpy"):
    """Apply the rewrites in place; returns the graph. ``backend``: the kernels that compute
    the values a rewrite derives from integer ops (lookup tables), as the session will run
    them (constant folding itself uses the reference)."""
    if not fuse:
        return graph
    rw = Rewriter(graph, backend)
    for rewrite in REWRITES:
        removed, consts = len(rw.removed), set(graph.consts)
        rewrite(rw)
        # a pass that removed, replaced or (un)named no value left the graph as it was
        # (most passes on most models): skip the three sweeps (~0.5 ms a pass)
        if rw.swap or len(rw.removed) != removed or graph.consts.keys() != consts:
            rw.compact()
            graph.remove_dead()     # e.g. the DQ nodes a QDQ rewrite left unread
            rw.refresh()
    return graph
