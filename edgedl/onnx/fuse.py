"""Graph rewrites done once at load (they do not depend on input shapes):

1. BatchNormalization folded into the preceding Conv's weights and bias;
2. written-out activations recognised: ``x * Clip(x + 3, 0, 6) / 6`` (and the ``* (1/6)``,
   ``Clip(..) / 6 * x`` and ``x * HardSigmoid(x, 1/6, 0.5)`` spellings) -> HardSwish,
   ``x * Sigmoid(x)`` -> Silu (an internal op);
3. an activation that is the only reader of a Conv's output fused into the Conv epilogue;
4. Transpose -> Softmax/LogSoftmax -> the inverse Transpose (FastestDet's class scores) ->
   one softmax over the matching axis of the untransposed tensor (``_single_axis``: opset
   13's one-axis semantics also before opset 13, where the Softmax axis was the last one);
5. a zero Pad of H, W read only by an AveragePool without pads of its own (FastestDet) ->
   one AveragePool with those pads, counted (count_include_pad=1).

A rewrite only removes values nobody else reads and that are not graph outputs.
"""
import numpy as np

from .graph import Node
from .ops.nn import bn_coefficients


class _Rewriter:
    def __init__(self, graph):
        self.g = graph
        self.outputs = {o.name for o in graph.outputs}
        # A rewrite marks nodes removed / replaced and updates cons / prod for just those
        # nodes; g.nodes is rebuilt once per pass (compact). Editing the list and rebuilding
        # the maps per rewrite made loading quadratic: 4000 fused SiLUs took 80 s.
        self.removed = set()
        self.swap = {}           # replaced node -> the node taking its place
        self.refresh()

    def refresh(self):
        self.cons = self.g.consumers()
        self.prod = self.g.producers()

    def forget(self, nodes):
        """Take nodes out of cons / prod (before they change or go)."""
        for n in nodes:
            for i in set(n.inputs):
                if i in self.cons:
                    self.cons[i] = [c for c in self.cons[i] if c is not n]
            for o in n.outputs:
                if o and self.prod.get(o) is n:
                    del self.prod[o]

    def learn(self, nodes):
        """Put new or changed nodes into cons / prod."""
        for n in nodes:
            for i in n.inputs:
                if i:
                    self.cons.setdefault(i, []).append(n)
            for o in n.outputs:
                if o:
                    self.prod[o] = n

    def compact(self):
        """Apply this pass's replacements and removals to g.nodes in one sweep."""
        nodes = []
        for n in self.g.nodes:
            while n in self.swap:
                n = self.swap[n]
            if n not in self.removed:
                nodes.append(n)
        self.g.nodes = nodes
        self.swap.clear()

    def only_reader(self, value):
        """The single node reading ``value`` (None if 0 or >1 readers, or a graph output)."""
        if value in self.outputs:
            return None
        c = self.cons.get(value, [])
        return c[0] if len(c) == 1 else None

    def const(self, name):
        return self.g.consts.get(name) if name else None

    def scalar(self, name):
        v = self.const(name)
        if v is None or v.size != 1 or v.dtype.kind not in "fiu":
            return None
        return float(v.reshape(-1)[0])

    def other_input(self, node, value):
        """For a binary node reading ``value``: its other input name (None if both are it)."""
        a, b = node.inputs[:2]
        if a == value and b != value:
            return b
        if b == value and a != value:
            return a
        return None


def _clip_bounds(rw, node):
    if rw.g.opset < 11:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
        return lo, hi
    ins = node.inputs + ["", ""]
    lo = rw.scalar(ins[1]) if ins[1] else None
    hi = rw.scalar(ins[2]) if ins[2] else None
    if (ins[1] and lo is None) or (ins[2] and hi is None):
        return "dynamic", "dynamic"
    return lo, hi


def _near(v, want):
    return v is not None and abs(v - want) <= 1e-6 * max(1.0, abs(want))


def fold_batchnorm(rw):
    g = rw.g
    changed = False
    for conv in list(g.nodes):
        if conv.op_type != "Conv" or len(conv.inputs) < 2:
            continue
        bn = rw.only_reader(conv.outputs[0])
        if bn is None or bn.op_type != "BatchNormalization" or bn.inputs[0] != conv.outputs[0]:
            continue
        if bn.attrs.get("training_mode", 0) or len([o for o in bn.outputs if o]) > 1:
            continue
        w = rw.const(conv.inputs[1])
        params = [rw.const(n) for n in bn.inputs[1:5]]
        bias = rw.const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] else None
        has_bias_input = len(conv.inputs) > 2 and bool(conv.inputs[2])
        if w is None or any(p is None for p in params) or (has_bias_input and bias is None):
            continue
        if w.dtype.kind != "f":
            continue
        m = w.shape[0]
        if any(p.size != m for p in params):
            continue
        a, c = bn_coefficients(*[p.reshape(-1) for p in params], float(bn.attrs.get("epsilon",
                                                                                  1e-5)))
        b0 = np.zeros(m) if bias is None else bias.astype(np.float64)
        wname, bname = conv.outputs[0] + "::w_bn", conv.outputs[0] + "::b_bn"
        g.consts[wname] = (w.astype(np.float64) * a.reshape((-1,) + (1,) * (w.ndim - 1))
                           ).astype(w.dtype)
        g.consts[bname] = (b0 * a + c).astype(w.dtype)
        conv.inputs = [conv.inputs[0], wname, bname]
        conv.outputs = [bn.outputs[0]]
        rw.removed.add(bn)
        changed = True
    if changed:
        rw.compact()
        rw.refresh()


def _replace(rw, remove, new_node, at):
    """``new_node`` takes ``at``'s place in the order; the other ``remove`` nodes go."""
    rw.forget(remove)
    rw.learn([new_node])
    rw.removed.update(remove)
    rw.swap[at] = new_node


def _div_by_6(rw, node, value):
    """Is ``node`` value / 6 or value * (1/6)? Returns True/False."""
    if node is None:
        return False
    if node.op_type == "Div" and node.inputs[0] == value:
        return _near(rw.scalar(node.inputs[1]), 6.0)
    if node.op_type == "Mul":
        other = rw.other_input(node, value)
        return _near(rw.scalar(other), 1.0 / 6.0)
    return False


def rewrite_activations(rw):
    g = rw.g
    for node in list(g.nodes):
        if node in rw.removed:
            continue
        # ---- x * Sigmoid(x) -> Silu(x)
        if node.op_type == "Sigmoid":
            x = node.inputs[0]
            mul = rw.only_reader(node.outputs[0])
            if mul is not None and mul.op_type == "Mul" and \
                    rw.other_input(mul, node.outputs[0]) == x:
                _replace(rw, [node, mul], Node("Silu", [x], mul.outputs, {}, mul.name), mul)
            continue
        # ---- x * HardSigmoid(x, 1/6, 0.5) -> HardSwish(x)
        if node.op_type == "HardSigmoid":
            x = node.inputs[0]
            if not (_near(node.attrs.get("alpha", 0.2), 1 / 6) and
                    _near(node.attrs.get("beta", 0.5), 0.5)):
                continue
            mul = rw.only_reader(node.outputs[0])
            if mul is not None and mul.op_type == "Mul" and \
                    rw.other_input(mul, node.outputs[0]) == x:
                _replace(rw, [node, mul], Node("HardSwish", [x], mul.outputs, {}, mul.name),
                         mul)
            continue
        # ---- x * Clip(x + 3, 0, 6) / 6 and its spellings -> HardSwish(x)
        if node.op_type != "Add":
            continue
        a, b = node.inputs[:2]
        if _near(rw.scalar(b), 3.0) and rw.const(a) is None:
            x = a
        elif _near(rw.scalar(a), 3.0) and rw.const(b) is None:
            x = b
        else:
            continue
        clip = rw.only_reader(node.outputs[0])
        if clip is None:
            continue
        if clip.op_type == "Clip":
            lo, hi = _clip_bounds(rw, clip)
            if not (_near(lo, 0.0) and _near(hi, 6.0)):
                continue
        else:
            continue
        c = clip.outputs[0]
        nxt = rw.only_reader(c)
        if nxt is None:
            continue
        chain = None
        if nxt.op_type == "Mul" and rw.other_input(nxt, c) == x:        # (x * clip) / 6
            last = rw.only_reader(nxt.outputs[0])
            if _div_by_6(rw, last, nxt.outputs[0]):
                chain = [node, clip, nxt, last]
        elif _div_by_6(rw, nxt, c):                                      # x * (clip / 6)
            last = rw.only_reader(nxt.outputs[0])
            if last is not None and last.op_type == "Mul" and \
                    rw.other_input(last, nxt.outputs[0]) == x:
                chain = [node, clip, nxt, last]
        if chain:
            last = chain[-1]
            _replace(rw, chain, Node("HardSwish", [x], last.outputs, {}, last.name), last)


def fuse_conv_activations(rw):
    g = rw.g
    for conv in list(g.nodes):
        if conv.op_type != "Conv" or "_act" in conv.attrs:
            continue
        act = rw.only_reader(conv.outputs[0])
        if act is None or act.inputs[0] != conv.outputs[0]:
            continue
        t, a = act.op_type, act.attrs
        if t == "Relu":
            spec = ("relu", ())
        elif t == "Clip":
            lo, hi = _clip_bounds(rw, act)
            if lo == "dynamic":
                continue
            if _near(lo, 0.0) and _near(hi, 6.0):
                spec = ("relu6", ())
            elif _near(lo, 0.0) and hi is None:
                spec = ("relu", ())
            else:
                spec = ("clip", (-np.inf if lo is None else float(lo),
                                 np.inf if hi is None else float(hi)))
        elif t == "LeakyRelu":
            spec = ("leaky_relu", (float(a.get("alpha", 0.01)),))
        elif t == "PRelu":
            s = rw.const(act.inputs[1])
            w = rw.const(conv.inputs[1])
            if s is None or w is None or w.ndim != 4 or s.size not in (1, w.shape[0]):
                continue
            if s.size > 1 and not (s.ndim == 3 and s.shape == (w.shape[0], 1, 1)) and \
                    not (s.ndim == 4 and s.shape == (1, w.shape[0], 1, 1)):
                continue
            spec = ("prelu", (s.reshape(-1).astype(w.dtype) if s.size > 1
                              else float(s.reshape(-1)[0]),))
        elif t == "HardSigmoid":
            spec = ("hard_sigmoid", (float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))))
        elif t in ("HardSwish", "Sigmoid", "Tanh"):
            spec = ({"HardSwish": "hard_swish"}.get(t, t.lower()), ())
        elif t == "Silu":
            spec = ("silu", ())
        else:
            continue
        rw.forget([conv, act])
        conv.attrs["_act"], conv.attrs["_act_params"] = spec
        conv.outputs = list(act.outputs[:1])
        rw.learn([conv])
        rw.removed.add(act)


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


def _zero_pad_hw(rw, pad):
    """A Pad node's (top, left, bottom, right) when it pads a rank-4 tensor with zeros on
    H, W only (constant mode, pads >= 0, constant pads / value / axes), else None."""
    if pad.attrs.get("mode", "constant") != "constant":
        return None
    if rw.g.opset < 11:
        pads = pad.attrs.get("pads" if rw.g.opset >= 2 else "paddings")
        value, axes = float(pad.attrs.get("value", 0.0)), None
    else:
        ins = pad.inputs + ["", "", ""]
        pads, axes = rw.const(ins[1]), rw.const(ins[3])
        value = rw.scalar(ins[2]) if ins[2] else 0.0
        if ins[3] and axes is None:
            return None
    if pads is None or value != 0.0:
        return None
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


def fuse_pad_into_avgpool(rw):
    g = rw.g
    for pool in list(g.nodes):
        if pool.op_type != "AveragePool" or not pool.inputs:
            continue
        pad = rw.prod.get(pool.inputs[0])
        if pad is None or pad.op_type != "Pad" or rw.only_reader(pad.outputs[0]) is not pool:
            continue
        a = pool.attrs
        ks = [int(k) for k in a.get("kernel_shape", [])]
        if (len(ks) != 2 or a.get("auto_pad", "NOTSET") not in ("NOTSET", "")
                or any(int(p) for p in a.get("pads", [0] * 4)) or int(a.get("ceil_mode", 0))
                or any(int(d) != 1 for d in a.get("dilations", [1, 1]))):
            continue    # with ceil_mode, windows starting in the padding differ
        hw = _zero_pad_hw(rw, pad)
        if hw is None or hw[0] >= ks[0] or hw[2] >= ks[0] or hw[1] >= ks[1] or hw[3] >= ks[1]:
            continue    # pads must stay below the kernel (the pooling kernels' rule)
        attrs = dict(a, pads=list(hw), count_include_pad=1)
        new = Node("AveragePool", pad.inputs[:1], pool.outputs, attrs, pool.name)
        _replace(rw, [pad, pool], new, pool)


def optimize(graph, fuse=True):
    """Apply the rewrites in place; returns the graph."""
    if not fuse:
        return graph
    rw = _Rewriter(graph)
    for rewrite in (fold_batchnorm, rewrite_activations, fuse_conv_activations,
                    fuse_transposed_softmax, fuse_pad_into_avgpool):
        rewrite(rw)
        rw.compact()
    graph.remove_dead()
    return graph
