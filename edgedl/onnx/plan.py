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

from ..errors import ModelError
from .ops import OPS, Ctx

#: Ops whose output shape depends on input *values*; shapes downstream are not static.
DATA_DEPENDENT = {"NonZero", "NonMaxSuppression", "TopK", "Range", "ConstantOfShape", "Expand",
                  "Tile", "Reshape", "Slice", "Resize", "Upsample", "Pad", "Split", "Squeeze",
                  "Unsqueeze", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean",
                  "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
                  "ReduceLogSumExp"}
#: Ops whose output is known from the input's shape alone.
SHAPE_ONLY = {"Shape", "Size"}


class Plan:
    __slots__ = ("steps", "n_slots", "template", "in_slots", "out_slots", "nodes", "first")

    def __init__(self):
        self.steps = []       # (fn, in_slots, out_slots, free_slots)
        self.nodes = []       # the Node of each step (profiling, errors)


def _first(fn):
    return lambda *a: fn(*a)[0]


def _as_tuple(r, n):
    if isinstance(r, tuple):
        return r
    if isinstance(r, list):
        return tuple(r)
    return (r,)


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
    for node in graph.nodes:
        ins = node.inputs
        n = len(ins)
        while n and not ins[n - 1]:
            n -= 1
        ins = ins[:n]
        vals = [None if not i else known[i] if i in known else live[i] for i in ins]
        consts = [known.get(i) if i else None for i in ins]
        try:
            ctx = Ctx(node, graph.opset, consts,
                      [None if v is None else np.shape(v) for v in vals],
                      [None if v is None else np.asarray(v).dtype for v in vals], backend,
                      static=not any(i in dynamic for i in ins if i))
            fn = OPS[node.op_type](ctx)
            raw = fn(*vals)
            res = _as_tuple(raw, len(node.outputs))
        except ModelError:
            raise
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
        if len(outs) == 1 and isinstance(raw, (tuple, list)):
            fn = _first(fn)
        if node.op_type in DATA_DEPENDENT and any(ins[i] in live for i in range(1, n)
                                                  if ins[i]) or \
                node.op_type in ("NonZero", "NonMaxSuppression") or \
                any(i in dynamic for i in ins if i):
            dynamic.update(o for o in outs if o)
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
    plan.first = {}
    _set_frees(plan, set(plan.out_slots.values()) | set(const_slots.values()))
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
    plan.steps = [(fn, tuple(i for i in ins), tuple(outs), tuple(fr))
                  for fn, ins, outs, fr in plan.steps]


def run(plan, feed_slots):
    """Execute a plan; feed_slots: list of (slot, array). Returns the slot list."""
    vals = list(plan.template)
    for s, v in feed_slots:
        vals[s] = v
    for fn, ins, outs, frees in plan.steps:
        r = fn(*[None if i is None else vals[i] for i in ins])
        if len(outs) == 1:
            vals[outs[0]] = r
        else:
            for o, v in zip(outs, r):
                if o is not None:
                    vals[o] = v
        for s in frees:
            vals[s] = None
    return vals


def run_profiled(plan, feed_slots, times):
    """Like run, adding each step's seconds to ``times[k]``."""
    vals = list(plan.template)
    for s, v in feed_slots:
        vals[s] = v
    clock = time.perf_counter
    for k, (fn, ins, outs, frees) in enumerate(plan.steps):
        t0 = clock()
        r = fn(*[None if i is None else vals[i] for i in ins])
        times[k] += clock() - t0
        if len(outs) == 1:
            vals[outs[0]] = r
        else:
            for o, v in zip(outs, r):
                if o is not None:
                    vals[o] = v
        for s in frees:
            vals[s] = None
    return vals
