"""Planning: shape inference and constant folding by one traced run, then a flat step list.

A plan is built for one input-shape signature. Building it runs the graph once on the real
feed, node by node: a node whose inputs are all constants (initializers, Constant nodes, or
the Shape of a tensor whose shape the signature fixes) is evaluated once and becomes a
constant — so Shape / Gather / Concat / Unsqueeze / Cast / Range / Expand / ConstantOfShape /
Slice chains disappear. Every other node's handler is built with its input shapes and
constant inputs known, and becomes one step ``(fn, input slots, output slots, slots to free)``.
"""
import time

import numpy as np

from .._memory import check_alloc
from ..errors import ModelError, ResourceError
from .ops import OPS, Ctx, ints

#: Ops whose output shape depends on input *values*; shapes downstream are not static.
DATA_DEPENDENT = {"NonZero", "NonMaxSuppression", "TopK", "Range", "ConstantOfShape", "Expand",
                  "Tile", "Reshape", "Slice", "Resize", "Upsample", "Pad", "Split", "Squeeze",
                  "Unsqueeze", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean",
                  "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
                  "ReduceLogSumExp"}
#: Ops whose output is known from the input's shape alone.
SHAPE_ONLY = {"Shape", "Size"}
#: Ops whose inputs (those in the slice) share one element type T: onnxruntime refuses a mix
#: at load, where NumPy would silently promote it (float32 + int64 -> float64).
SAME_TYPE = dict.fromkeys(["Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater",
                           "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Max", "Min",
                           "Sum", "Mean", "Concat", "MatMul", "Gemm", "Conv", "ConvTranspose",
                           "PRelu", "Clip"], slice(None))
SAME_TYPE["Where"] = slice(1, 3)


class Plan:
    __slots__ = ("steps", "n_slots", "template", "in_slots", "out_slots", "nodes",
                 "buffer_sizes", "views", "arenas")

    def __init__(self):
        self.steps = []       # (fn, in_slots, out_slots, free_slots, view index or None)
        self.nodes = []       # the Node of each step (profiling, errors)
        self.buffer_sizes = []  # bytes of each recycled buffer
        self.views = []       # per view index: (buffer, byte offset, dtype, shape)
        self.arenas = []      # free arenas (one in use per concurrent run)

    def new_arena(self):
        """The recycled buffers for one run, as the typed views the steps write into."""
        check_alloc(sum(self.buffer_sizes), f"the plan's {len(self.buffer_sizes)} recycled "
                                             "buffers")
        bufs = [np.empty(n, np.uint8) for n in self.buffer_sizes]
        return [bufs[b][off:off + int(np.prod(shape)) * dt.itemsize].view(dt).reshape(shape)
                for b, off, dt, shape in self.views]


def _first(fn):
    return lambda *a: fn(*a)[0]


def _as_tuple(r):
    if isinstance(r, tuple):
        return r
    if isinstance(r, list):
        return tuple(r)
    return (r,)


def _value_sized_output(node, vals):
    """Bytes of the output of an op whose size comes from constant *values* rather than
    shapes (a 1 KB model can ask ConstantOfShape for terabytes), so the memory guard runs
    before the handler allocates; None for other ops or when the handler will refuse the
    arguments anyway."""
    op = node.op_type
    try:
        if op == "ConstantOfShape":
            shape = ints(vals[0])
            item = np.asarray(node.attrs.get("value", np.zeros(1, np.float32))).dtype.itemsize
        elif op == "Expand":
            shape = np.broadcast_shapes(np.shape(vals[0]), tuple(ints(vals[1])))
            item = np.asarray(vals[0]).dtype.itemsize
        elif op == "Tile":
            shape = [a * b for a, b in zip(np.shape(vals[0]), ints(vals[1]))]
            item = np.asarray(vals[0]).dtype.itemsize
        elif op == "Range":
            start, limit, delta = (np.asarray(v).item() for v in vals[:3])
            shape = [max(int(np.ceil((limit - start) / delta)), 0)]
            item = np.asarray(vals[0]).dtype.itemsize
        else:
            return None
    except Exception:
        return None
    n = 1
    for d in shape:
        if d < 0:
            return None
        n *= int(d)
    return n * item


def build(graph, feed, backend):
    """Plan for the shapes in ``feed`` (name -> array); returns (plan, values of this run)."""
    slot = {}

    def slot_of(name):
        s = slot.get(name)
        if s is None:
            s = slot[name] = len(slot)
        return s

    known = dict(graph.consts)       # constants (initializers and folded values)
    live = dict(feed)                # run-time values of this traced run
    dynamic = set()                  # values whose shape may change between runs
    plan = Plan()
    graph_outs = {o.name for o in graph.outputs}
    alias = {}                       # value -> the recyclable buffers it may be a view of
    wants = []                       # per step: (shape, dtype) of a recyclable output, or None
    shapes = {n: np.shape(v) for n, v in feed.items()}
    for node in graph.nodes:
        ins = node.inputs
        n = len(ins)
        while n and not ins[n - 1]:
            n -= 1
        ins = ins[:n]
        vals = [None if not i else known[i] if i in known else live[i] for i in ins]
        consts = [known.get(i) if i else None for i in ins]
        label = f"{node.op_type} node {node.name!r}"
        if node.op_type in SAME_TYPE:
            typed = [(i, np.asarray(v).dtype) for i, v in
                     zip(ins[SAME_TYPE[node.op_type]], vals[SAME_TYPE[node.op_type]])
                     if v is not None]
            if len({dt for _, dt in typed}) > 1:
                raise ModelError(f"{label}: inputs {[i for i, _ in typed]} have element types "
                                 f"{[str(dt) for _, dt in typed]}; {node.op_type} needs one "
                                 "type for them")
        nbytes = _value_sized_output(node, vals)
        if nbytes is not None:
            check_alloc(nbytes, f"the output of {label}")
        try:
            ctx = Ctx(node, graph.opset, consts,
                      [None if v is None else np.shape(v) for v in vals],
                      [None if v is None else np.asarray(v).dtype for v in vals], backend,
                      static=not any(i in dynamic for i in ins if i))
            fn = OPS[node.op_type](ctx)
            raw = fn(*vals)
            res = _as_tuple(raw)
        except ModelError:
            raise
        except MemoryError as e:     # a kernel's guard (ResourceError) or numpy's allocation
            raise ResourceError(f"{label}: {e or type(e).__name__} (input shapes "
                                f"{[np.shape(v) for v in vals]})") from e
        except Exception as e:
            raise ModelError(f"{node.op_type} node {node.name!r} failed while planning "
                             f"(input shapes {[np.shape(v) for v in vals]}): "
                             f"{type(e).__name__}: {e}") from e
        outs = [o for o in node.outputs]
        fold = all(not i or i in known for i in ins) or \
            (node.op_type in SHAPE_ONLY and ins[0] not in dynamic)
        if fold:
            for o, v in zip(outs, res):
                if o:
                    known[o] = np.asarray(v)
            continue
        for o, v in zip(outs, res):
            if o:
                live[o] = v
                shapes[o] = np.shape(v)
        if len(outs) == 1 and isinstance(raw, (tuple, list)):
            fn = _first(fn)
        if node.op_type in DATA_DEPENDENT and any(ins[i] in live for i in range(1, n)
                                                  if ins[i]) or \
                node.op_type in ("NonZero", "NonMaxSuppression") or \
                any(i in dynamic for i in ins if i):
            dynamic.update(o for o in outs if o)
        # which live buffers may each output alias (views: Reshape, Transpose, Slice, ...)
        for o, v in zip(outs, res):
            if o:
                alias[o] = set().union(*[alias.get(i, ()) for i, iv in zip(ins, vals)
                                         if i in live and isinstance(v, np.ndarray) and
                                         isinstance(iv, np.ndarray) and
                                         np.may_share_memory(v, iv)])
        want = None
        o0 = outs[0] if len(outs) == 1 else None
        if getattr(fn, "takes_out", False) and o0 and o0 not in dynamic and \
                o0 not in graph_outs and isinstance(res[0], np.ndarray) and \
                res[0].flags.c_contiguous and not alias[o0]:
            want = (res[0].shape, res[0].dtype)
            alias[o0] = {o0}
        wants.append(want)
        plan.steps.append([fn, [slot_of(i) if i else None for i in ins],
                           [slot_of(o) if o else None for o in outs], []])
        plan.nodes.append(node)

    # graph outputs: a slot each (constants and feeds get one too)
    out_names = [o.name for o in graph.outputs]
    for name in out_names:
        slot_of(name)
    for vi in graph.inputs:
        slot_of(vi.name)
    const_slots = {name: s for name, s in slot.items() if name in known}
    plan.n_slots = len(slot)
    plan.template = [None] * plan.n_slots
    for name, s in const_slots.items():
        plan.template[s] = known[name]
    plan.in_slots = {vi.name: slot[vi.name] for vi in graph.inputs}
    plan.out_slots = {name: slot[name] for name in out_names}
    _set_frees(plan, set(plan.out_slots.values()) | set(const_slots.values()))
    _assign_buffers(plan, wants, alias, graph_outs, shapes)
    # an output that is a constant or a feed must be copied on return
    values = {name: (known[name] if name in known else live[name]) for name in out_names}
    return plan, values


def _set_frees(plan, keep):
    """Release each run-time value after its last reader, so buffers can be recycled."""
    last = {}
    for k, (fn, ins, outs, _) in enumerate(plan.steps):
        for s in ins:
            if s is not None:
                last[s] = k
        for s in outs:
            if s is not None and s not in last:
                last[s] = k          # produced but never read: free right away
    for s, k in last.items():
        if s not in keep:
            plan.steps[k][3].append(s)
    plan.steps = [[fn, tuple(i for i in ins), tuple(outs), tuple(fr), None]
                  for fn, ins, outs, fr in plan.steps]


def _concat_groups(nodes, wants, alias, graph_outs, shapes):
    """Concats whose inputs can be written in place: {producer step: (concat step, byte
    offset)}. The slice of a channel-axis concat with leading dims of 1 is contiguous, so a
    conv (or any step taking ``out=``) can write straight into it and the copy disappears."""
    producer = {n.outputs[0]: k for k, n in enumerate(nodes) if wants[k] is not None}
    member, copies = {}, {}
    for k, node in enumerate(nodes):
        if node.op_type != "Concat" or wants[k] is None:
            continue
        shape, dt = wants[k]
        axis = node.attrs.get("axis", 0)
        axis = axis + len(shape) if axis < 0 else axis
        if int(np.prod(shape[:axis])) != 1:
            continue
        inner = int(np.prod(shape[axis + 1:])) * dt.itemsize
        off, rest, mine = 0, [], {}
        for idx, name in enumerate(node.inputs):
            j = producer.get(name)
            size = shapes[name][axis] if name in shapes else None
            if size is None:
                break
            if (j is not None and j < k and j not in member and j not in mine and
                    name not in graph_outs and node.inputs.count(name) == 1 and
                    wants[j][1] == dt and alias.get(name) == {name}):
                mine[j] = (k, off)
            else:
                rest.append((idx, (slice(None),) * axis + (slice(off // inner, off // inner
                                                                 + size),)))
            off += size * inner
        else:
            if mine:
                member.update(mine)
                copies[k] = rest
    return member, copies


def _concat_rest(copies):
    """The Concat step once its in-place inputs are already in ``out``."""
    def f(*xs, out=None):
        for idx, key in copies:
            out[key] = xs[idx]
        return out
    return f


def _assign_buffers(plan, wants, alias, graph_outs, shapes):
    """Give recyclable outputs buffers by liveness: a buffer is free again after the last
    step reading it or any view of it; buffers holding a graph output (or a view returned as
    one) are never recycled within a run. Best fit by size among the free buffers. Inputs of
    a channel concat are written into the concat's buffer directly (see _concat_groups)."""
    nodes = plan.nodes
    member, copies = _concat_groups(nodes, wants, alias, graph_outs, shapes)
    renamed = {nodes[j].outputs[0]: nodes[c].outputs[0] for j, (c, _) in member.items()}
    if renamed:
        alias = {v: {renamed.get(r, r) for r in rs} for v, rs in alias.items()}
    last = {}
    for k, node in enumerate(nodes):
        for i in node.inputs:
            for r in alias.get(i, ()):
                last[r] = k
    for o in graph_outs:
        for r in alias.get(o, ()):
            last[r] = len(nodes)
    free, owner, sizes = [], {}, []
    release = {}
    for r, k in last.items():
        release.setdefault(k, []).append(r)

    def take(need, k):
        fit = [b for b in free if sizes[b] >= need]
        if fit:
            b = min(fit, key=lambda b: sizes[b])
            free.remove(b)
            return b
        check_alloc(need, f"the planned buffer of {nodes[k].op_type} node "
                          f"{nodes[k].name!r}'s output")
        sizes.append(need)
        return len(sizes) - 1

    for k, want in enumerate(wants):
        if want is not None:
            shape, dt = want
            name = nodes[k].outputs[0]
            if k in member:                       # writes into its concat's buffer
                c, off = member[k]
                cname = nodes[c].outputs[0]
                if cname not in owner:
                    cshape, cdt = wants[c]
                    owner[cname] = take(max(int(np.prod(cshape)) * cdt.itemsize, 1), c)
                plan.steps[k][4] = len(plan.views)
                plan.views.append((owner[cname], off, dt, shape))
            else:
                if name not in owner:
                    owner[name] = take(max(int(np.prod(shape)) * dt.itemsize, 1), k)
                plan.steps[k][4] = len(plan.views)
                plan.views.append((owner[name], 0, dt, shape))
                if k in copies:
                    plan.steps[k][0] = _concat_rest(copies[k])
                if name not in last:              # never read: free at once
                    free.append(owner[name])
        for r in release.get(k, ()):
            if r in owner:
                free.append(owner[r])
    plan.buffer_sizes = sizes
    plan.steps = [tuple(st) for st in plan.steps]


def run(plan, feed_slots, collect):
    """Execute a plan; feed_slots: list of (slot, array). Returns ``collect(values)``, called
    before the run's buffers go back to the pool (a concurrent run may take them then)."""
    vals = list(plan.template)
    for s, v in feed_slots:
        vals[s] = v
    arena = plan.arenas.pop() if plan.arenas else plan.new_arena()
    try:
        _loop(plan.steps, vals, arena)
        return collect(vals)
    finally:
        plan.arenas.append(arena)


def _loop(steps, vals, arena):
    for fn, ins, outs, frees, ov in steps:
        if ov is None:
            r = fn(*[None if i is None else vals[i] for i in ins])
        else:
            r = fn(*[None if i is None else vals[i] for i in ins], out=arena[ov])
        if len(outs) == 1:
            vals[outs[0]] = r
        else:
            for o, v in zip(outs, r):
                if o is not None:
                    vals[o] = v
        for s in frees:
            vals[s] = None


def run_profiled(plan, feed_slots, collect, times):
    """Like run, adding each step's seconds to ``times[k]``.

    The step body repeats ``_loop``'s on purpose: factoring it into a helper would add a Python
    call per node to every unprofiled run, which is the hot path of tiny models."""
    vals = list(plan.template)
    for s, v in feed_slots:
        vals[s] = v
    clock = time.perf_counter
    arena = plan.arenas.pop() if plan.arenas else plan.new_arena()
    for k, (fn, ins, outs, frees, ov) in enumerate(plan.steps):
        t0 = clock()
        if ov is None:
            r = fn(*[None if i is None else vals[i] for i in ins])
        else:
            r = fn(*[None if i is None else vals[i] for i in ins], out=arena[ov])
        times[k] += clock() - t0
        if len(outs) == 1:
            vals[outs[0]] = r
        else:
            for o, v in zip(outs, r):
                if o is not None:
                    vals[o] = v
        for s in frees:
            vals[s] = None
    try:
        return collect(vals)
    finally:
        plan.arenas.append(arena)
