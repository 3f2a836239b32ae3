"""Planning: one traced run of the graph turned into a flat list of steps, then compiled.

A plan is built for one input-shape signature, in named passes:

1. ``_Trace`` runs the graph once on the real feed, node by node. A node whose inputs are
   all constants (initializers, Constant nodes, or the Shape of a tensor whose shape the
   signature fixes) is evaluated once and becomes a constant, so Shape / Gather / Concat /
   Unsqueeze / Cast / Range / Expand / ConstantOfShape / Slice chains disappear. Every other
   node's handler is built with its input shapes and constant inputs known and becomes a
   ``_Draft`` step (values by name, the output it may write into a recycled buffer).
2. ``_number_slots``: every run-time value gets a slot (an index into the run's value list).
3. ``_free_after_last_read``: each value is released after its last reader.
4. ``_assign_buffers``: recyclable outputs share buffers by liveness; the inputs of a
   channel Concat are written straight into the Concat's buffer (``_concat_groups``).
5. ``_compile``: the steps become one generated Python function, values in local variables,
   so a run costs no interpreter loop, list indexing or unpacking per node.

The result is a ``Plan`` of typed ``Step`` records (what the profiler and error messages read)
and the compiled ``run`` function (what executes).
"""
import functools
import time
from typing import NamedTuple

import numpy as np

from .. import _config
from .._memory import check_alloc
from ..errors import ModelError, ResourceError
from .ops import OPS, Ctx, Unfuse, ints

#: Ops whose output shape depends on input *values*; shapes downstream are not static.
DATA_DEPENDENT = {"NonZero", "NonMaxSuppression", "TopK", "Range", "ConstantOfShape", "Expand",
                  "Tile", "Reshape", "Slice", "Resize", "Upsample", "Pad", "Split", "Squeeze",
                  "Unsqueeze", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceMean",
                  "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
                  "ReduceLogSumExp"}
#: Ops whose output size depends on input values whatever the inputs are.
ALWAYS_DYNAMIC = {"NonZero", "NonMaxSuppression"}
#: Ops whose output is known from the input's shape alone.
SHAPE_ONLY = {"Shape", "Size"}
#: Ops whose inputs (those in the slice) share one element type T: onnxruntime refuses a mix
#: at load, where NumPy would silently promote it (float32 + int64 -> float64).
SAME_TYPE = dict.fromkeys(["Add", "Sub", "Mul", "Div", "Equal", "Less", "Greater",
                           "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Max", "Min",
                           "Sum", "Mean", "Concat", "MatMul", "Gemm", "Conv", "ConvTranspose",
                           "PRelu", "Clip"], slice(None))
SAME_TYPE["Where"] = slice(1, 3)


class Step(NamedTuple):
    """One planned node: ``fn(*values of ins[, out=arena view])`` -> value(s) for ``outs``."""
    fn: object          # the handler's function for this plan's shapes
    ins: tuple          # input slots (None: an omitted optional input)
    outs: tuple         # output slots (None: an output nobody reads)
    frees: tuple        # slots released after this step (their last reader)
    out_view: object    # index of the arena view passed as ``out=``, or None
    node: object        # the graph Node (profiling, error messages)


class Plan:
    __slots__ = ("steps", "n_slots", "template", "in_slots", "out_slots", "buffer_sizes",
                 "views", "arenas", "run_steps", "const_roots", "arena_roots")

    def __init__(self):
        self.steps = []         # Step records, in execution order
        self.buffer_sizes = []  # bytes of each recycled buffer
        self.views = []         # per view index: (buffer, byte offset, dtype, shape); buffer
        #                         None: an output handed to the caller, a new array each run
        self.arenas = []        # free arenas (one in use per concurrent run)
        self.run_steps = None   # the compiled steps: run_steps(vals, arena) (see _compile_later)
        self.const_roots = set()    # ids of the arrays owning the constants' memory
        self.arena_roots = set()    # ... and the arenas' (see memory_root)

    @property
    def nodes(self):
        return [s.node for s in self.steps]

    def new_arena(self):
        """The recycled buffers for one run, as the typed views the steps write into."""
        check_alloc(sum(self.buffer_sizes), f"the plan's {len(self.buffer_sizes)} recycled "
                                             "buffers")
        bufs = [_line_aligned_bytes(n) for n in self.buffer_sizes]
        self.arena_roots.update(id(memory_root(b)) for b in bufs)
        return [None if b is None else
                bufs[b][off:off + int(np.prod(shape)) * dt.itemsize].view(dt).reshape(shape)
                for b, off, dt, shape in self.views]

    def out_array(self, arena, v):
        """The array view v of this run writes into: the arena's, or a new one."""
        a = arena[v]
        if a is None:
            _, _, dt, shape = self.views[v]
            a = np.empty(shape, dt)
        return a


def memory_root(a):
    """The array owning a's memory (a itself if it owns it): the end of its chain of bases,
    or the last array before a non-array base (a buffer)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _line_aligned_bytes(n, line=64):
    """n bytes from a ``line``-byte boundary. NumPy starts a large array 16 or 32 bytes into
    a cache line, so that every 64-byte vector load or store of a kernel on it (every row of
    a plane whose rows are whole lines) spanned two lines."""
    raw = np.empty(n + line, np.uint8)
    off = -raw.ctypes.data % line
    return raw[off:off + n]


# ============================================================================ 1. trace
class _Draft:
    """A step while planning: values by name, the output buffer it wants (if any)."""
    __slots__ = ("node", "fn", "ins", "outs", "want", "view")

    def __init__(self, node, fn, ins, outs, want):
        self.node, self.fn, self.ins, self.outs, self.want = node, fn, ins, outs, want
        self.view = None        # arena view index, set by _assign_buffers


def _first(fn):
    return lambda *a: fn(*a)[0]


def _as_tuple(r):
    if isinstance(r, tuple):
        return r
    if isinstance(r, list):
        return tuple(r)
    return (r,)


def _trimmed_inputs(node):
    """The node's inputs without trailing omitted ('') ones."""
    ins = node.inputs
    n = len(ins)
    while n and not ins[n - 1]:
        n -= 1
    return ins[:n]


def _label(node):
    return f"{node.op_type} node {node.name!r}"


def _check_same_type(node, ins, vals):
    """Inputs that must share one element type do (see SAME_TYPE)."""
    part = SAME_TYPE.get(node.op_type)
    if part is None:
        return
    typed = [(i, np.asarray(v).dtype) for i, v in zip(ins[part], vals[part]) if v is not None]
    if len({dt for _, dt in typed}) > 1:
        raise ModelError(f"{_label(node)}: inputs {[i for i, _ in typed]} have element types "
                         f"{[str(dt) for _, dt in typed]}; {node.op_type} needs one type for "
                         "them")


def _value_sized_shape(op, node, vals):
    """(shape, item size) of an op's output sized by constant *values*, else None."""
    if op == "ConstantOfShape":
        item = np.asarray(node.attrs.get("value", np.zeros(1, np.float32))).dtype.itemsize
        return ints(vals[0]), item
    item = np.asarray(vals[0]).dtype.itemsize
    if op == "Expand":
        return np.broadcast_shapes(np.shape(vals[0]), tuple(ints(vals[1]))), item
    if op == "Tile":
        return [a * b for a, b in zip(np.shape(vals[0]), ints(vals[1]))], item
    if op == "Range":
        start, limit, delta = (np.asarray(v).item() for v in vals[:3])
        return [max(int(np.ceil((limit - start) / delta)), 0)], item
    return None


def _value_sized_output(node, vals):
    """Bytes of the output of an op whose size comes from constant *values* rather than
    shapes (a 1 KB model can ask ConstantOfShape for terabytes), so the memory guard runs
    before the handler allocates; None for other ops or when the handler will refuse the
    arguments anyway."""
    if node.op_type not in ("ConstantOfShape", "Expand", "Tile", "Range"):
        return None
    try:
        shape, item = _value_sized_shape(node.op_type, node, vals)
    except Exception:
        return None
    n = 1
    for d in shape:
        if d < 0:
            return None
        n *= int(d)
    return n * item


def _evaluate(ctx, vals):
    """Build the node's function and run it once: (fn, raw result). Errors name the node."""
    node = ctx.node
    try:
        fn = OPS[node.key](ctx)
        return fn, fn(*vals)
    except (ModelError, Unfuse):
        raise
    except (MemoryError, OverflowError) as e:
        # a kernel's guard (ResourceError), numpy's allocation, or (32-bit) a size past the
        # platform's index range
        raise ResourceError(f"{_label(node)}: {e or type(e).__name__} (input shapes "
                            f"{[np.shape(v) for v in vals]})") from e
    except Exception as e:
        raise ModelError(f"{_label(node)} failed while planning (input shapes "
                         f"{[np.shape(v) for v in vals]}): {type(e).__name__}: {e}") from e


def _prepare_and_run(node, vals, consts, opset, backend, static):
    """Check the node's inputs, build its function for these shapes and constants, run it
    once: (fn, raw result)."""
    ins = _trimmed_inputs(node)
    _check_same_type(node, ins, vals)
    nbytes = _value_sized_output(node, vals)
    if nbytes is not None:
        check_alloc(nbytes, f"the output of {_label(node)}")
    ctx = Ctx(node, opset, consts, [None if v is None else np.shape(v) for v in vals],
              [None if v is None else np.asarray(v).dtype for v in vals], backend,
              static=static)
    return _evaluate(ctx, vals)


def evaluate_constant(graph, node, backend="numpy"):
    """The output values of a node whose inputs are all constants of ``graph``, computed once
    (load-time constant folding, fuse.py: on the reference backend unless asked otherwise);
    errors as in planning."""
    vals = [graph.consts[i] if i else None for i in _trimmed_inputs(node)]
    _, raw = _prepare_and_run(node, vals, vals, graph.opset, backend, static=True)
    return [np.asarray(v) for v in _as_tuple(raw)]


class _Trace:
    """Pass 1: the traced run. After ``add`` has seen every node: ``drafts`` (the steps),
    ``known`` (constants, folded values included), ``live`` (this run's other values),
    ``shapes``, ``alias`` (value -> the recyclable outputs it may be a view of)."""

    def __init__(self, graph, feed, backend):
        self.graph, self.backend = graph, backend
        self.known = dict(graph.consts)
        self.live = dict(feed)
        self.shapes = {n: np.shape(v) for n, v in feed.items()}
        self.dynamic = set()        # values whose shape may change between runs
        self.alias = {}
        self.drafts = []
        self.graph_outs = {o.name for o in graph.outputs}
        # readers left per value: a value none will read is dropped from ``live`` at once,
        # so the allocator reuses its memory for the next outputs instead of faulting in
        # fresh pages (in a VM the traced run spent ~3x a steady run's time in its kernels)
        self.readers = {}
        for node in graph.nodes:
            for i in set(_trimmed_inputs(node)):
                if i:
                    self.readers[i] = self.readers.get(i, 0) + 1

    def value(self, name):
        return self.known[name] if name in self.known else self.live[name]

    def add(self, node):
        ins = _trimmed_inputs(node)
        vals = [self.value(i) if i else None for i in ins]
        try:
            fn, raw = _prepare_and_run(node, vals,
                                       [self.known.get(i) if i else None for i in ins],
                                       self.graph.opset, self.backend,
                                       static=not any(i in self.dynamic for i in ins if i))
        except Unfuse:
            return self._unfuse(node)
        res = _as_tuple(raw)
        if self._folds(node, ins):
            self.known.update((o, np.asarray(v)) for o, v in zip(node.outputs, res) if o)
        else:
            if len(node.outputs) == 1 and isinstance(raw, (tuple, list)):
                fn = _first(fn)
            self._record(node, fn, ins, vals, res)
        del vals, raw, res
        self._release(ins)

    def _unfuse(self, node):
        """Plan a fused node's parts in its place (its handler raised Unfuse): the values
        between them get their readers counted like the graph's."""
        parts = node.attrs["_parts"]
        made = {o for p in parts for o in p.outputs if o}
        for p in parts:
            for i in set(_trimmed_inputs(p)):
                if i in made:
                    self.readers[i] = self.readers.get(i, 0) + 1
        for p in parts:
            self.add(p)

    def _release(self, ins):
        """Drop the live values whose last reader this node was (graph outputs stay)."""
        for i in set(ins):
            if i and i in self.readers:
                self.readers[i] -= 1
                if not self.readers[i] and i not in self.graph_outs:
                    self.live.pop(i, None)

    def _folds(self, node, ins):
        """Is the node's output a constant of this plan?"""
        return all(not i or i in self.known for i in ins) or \
            (node.op_type in SHAPE_ONLY and ins[0] not in self.dynamic)

    def _makes_dynamic(self, node, ins):
        """May the node's output shape change between runs of this plan?"""
        if node.op_type in ALWAYS_DYNAMIC or any(i in self.dynamic for i in ins if i):
            return True
        return node.op_type in DATA_DEPENDENT and any(i in self.live for i in ins[1:] if i)

    def _record(self, node, fn, ins, vals, res):
        outs = list(node.outputs)
        for o, v in zip(outs, res):
            if o:
                self.live[o] = v
                self.shapes[o] = np.shape(v)
        if self._makes_dynamic(node, ins):
            self.dynamic.update(o for o in outs if o)
        for o, v in zip(outs, res):
            if o:
                self.alias[o] = self._views_of(ins, vals, v)
        want = self._recyclable(fn, outs, res)
        if want is not None:
            self.alias[outs[0]] = {outs[0]}
        self.drafts.append(_Draft(node, fn, list(ins), outs, want))

    def _views_of(self, ins, vals, v):
        """The recyclable buffers an output may be a view of (Reshape, Transpose, Slice...)."""
        if not isinstance(v, np.ndarray):
            return set()
        return set().union(*[self.alias.get(i, ()) for i, iv in zip(ins, vals)
                             if i in self.live and isinstance(iv, np.ndarray) and
                             np.may_share_memory(v, iv)])

    def _recyclable(self, fn, outs, res):
        """(shape, dtype) when the step's single output can live in a planned buffer: the
        function takes ``out=``, the shape is fixed, the value is its own contiguous array
        (a graph output's is then a new array each run, see _handed_over_buffers)."""
        if not getattr(fn, "takes_out", False) or len(outs) != 1:
            return None
        o, r = outs[0], res[0]
        if not o or o in self.dynamic or self.alias[o]:
            return None
        if not (isinstance(r, np.ndarray) and r.flags.c_contiguous):
            return None
        return r.shape, r.dtype


def _drop_unread(drafts, graph_outs):
    """The steps whose outputs some later step or the caller reads: a node read only by
    a Shape that this plan folded (the DequantizeLinear or Transpose feeding an exporter's
    Shape -> Gather -> Reshape chain) still ran every time, for nothing."""
    needed, keep = set(graph_outs), []
    for d in reversed(drafts):
        if any(o in needed for o in d.outs if o):
            keep.append(d)
            needed.update(i for i in d.ins if i)
    return keep[::-1]


# ============================================================================ 2-4. slots, frees, buffers
def _number_slots(trace, graph):
    """Pass 2: value name -> slot, for every value a step, the caller or an output touches."""
    slot = {}
    names = [n for d in trace.drafts for n in d.ins + d.outs if n]
    names += [o.name for o in graph.outputs] + [vi.name for vi in graph.inputs]
    for n in names:
        slot.setdefault(n, len(slot))
    return slot


def _free_after_last_read(drafts, slot, keep):
    """Pass 3: per step, the slots whose last reader it is (never those in ``keep``)."""
    last = {}
    for k, d in enumerate(drafts):
        for n in d.ins:
            if n:
                last[slot[n]] = k
        for n in d.outs:
            if n:
                last.setdefault(slot[n], k)   # produced but never read: free right away
    frees = [[] for _ in drafts]
    for s, k in last.items():
        if s not in keep:
            frees[k].append(s)
    return frees


def _concat_layout(node, want):
    """(axis, bytes per unit of the axis) of a recyclable Concat whose slices along the axis
    are contiguous (every dim before it is 1), else None."""
    shape, dt = want
    axis = node.attrs.get("axis", 0)
    axis = axis + len(shape) if axis < 0 else axis
    if int(np.prod(shape[:axis])) != 1:
        return None
    return axis, int(np.prod(shape[axis + 1:])) * dt.itemsize


def _concat_groups(drafts, trace):
    """Concats whose inputs can be written in place: ({producer step: (concat step, byte
    offset)}, {concat step: [(input index, slice) still copied]}). The slice of a channel-axis
    concat with leading dims of 1 is contiguous, so a conv (or any step taking ``out=``) can
    write straight into it and the copy disappears."""
    producer = {d.outs[0]: k for k, d in enumerate(drafts) if d.want is not None}
    member, copies = {}, {}
    for k, d in enumerate(drafts):
        data = _concat_data(d)
        if data is None or d.want is None or d.outs[0] in trace.graph_outs:
            continue        # (a graph output: a new array each run, np.concatenate's)
        layout = _concat_layout(d.node, d.want)
        if layout is None:
            continue
        mine, rest = _concat_members(k, d, layout, data, producer, member, drafts, trace)
        if mine:
            member.update(mine)
            copies[k] = rest
    return member, copies


def _concat_data(d):
    """The indices of a concat step's tensors along its axis: every input of a Concat, those
    a handler names (``fn.concat_inputs``, e.g. QLinearConcat's, which then also gives
    ``fn.concat_rest``); None for other steps."""
    if d.node.op_type == "Concat":
        return range(len(d.ins))
    return getattr(d.fn, "concat_inputs", None)


def _concat_members(k, d, layout, data, producer, member, drafts, trace):
    """For concat step k: ({producer: (k, offset)} written in place, [(index, slice)] not);
    ({}, []) when an input's size along the axis is unknown."""
    axis, inner = layout
    off, rest, mine = 0, [], {}
    for idx in data:
        name = d.ins[idx]
        if name not in trace.shapes:
            return {}, []
        size = trace.shapes[name][axis]
        j = producer.get(name)
        if (j is not None and j < k and j not in member and j not in mine and
                name not in trace.graph_outs and d.ins.count(name) == 1 and
                drafts[j].want[1] == d.want[1] and trace.alias.get(name) == {name}):
            mine[j] = (k, off)
        else:
            start = off // inner
            rest.append((idx, (slice(None),) * axis + (slice(start, start + size),)))
        off += size * inner
    return mine, rest


def _concat_rest(d, copies):
    """The concat step once its in-place inputs are already in ``out`` (the handler's
    ``concat_rest`` for other ops than Concat: given the indices still to do)."""
    if d.node.op_type != "Concat":
        return d.fn.concat_rest([idx for idx, _ in copies])

    def f(*xs, out=None):
        for idx, key in copies:
            out[key] = xs[idx]
        return out
    return f


def _handed_over_buffers(trace):
    """The values whose buffer a graph output is (or views) as a whole contiguous array
    (Conv -> Flatten -> output): their steps write into an array allocated on each run, not
    into a recycled buffer, and the caller gets it as it is; a view of the arena had to be
    copied out."""
    held = set()
    for o in trace.graph_outs:
        v = trace.value(o)
        if isinstance(v, np.ndarray) and v.flags.c_contiguous:
            held |= trace.alias.get(o, set())
    return held


class _Buffers:
    """Recycled buffers: best fit by size among the free ones, else a new one."""

    def __init__(self):
        self.sizes, self.free, self.owner = [], [], {}

    def take(self, need, node):
        fit = [b for b in self.free if self.sizes[b] >= need]
        if fit:
            b = min(fit, key=lambda b: self.sizes[b])
            self.free.remove(b)
            return b
        check_alloc(need, f"the planned buffer of {_label(node)}'s output")
        self.sizes.append(need)
        return len(self.sizes) - 1

    def of(self, name, want, node):
        """The buffer holding value ``name`` (taken on first use)."""
        if name not in self.owner:
            shape, dt = want
            self.owner[name] = self.take(max(int(np.prod(shape)) * dt.itemsize, 1), node)
        return self.owner[name]


def _release_points(drafts, alias, graph_outs):
    """step -> the buffers (by value name) free after it: the last step reading the value or
    any view of it; never within the run for values a graph output may view."""
    last = {}
    for k, d in enumerate(drafts):
        for i in d.ins:
            for r in alias.get(i, ()):
                last[r] = k
    for o in graph_outs:
        for r in alias.get(o, ()):
            last[r] = len(drafts)
    release = {}
    for r, k in last.items():
        release.setdefault(k, []).append(r)
    return release, last


def _assign_buffers(plan, trace):
    """Pass 4: give recyclable outputs buffers by liveness (see _Buffers, _release_points);
    inputs of a channel concat are written into the concat's buffer (_concat_groups)."""
    drafts = trace.drafts
    member, copies = _concat_groups(drafts, trace)
    fresh = _handed_over_buffers(trace)
    renamed = {drafts[j].outs[0]: drafts[c].outs[0] for j, (c, _) in member.items()}
    alias = {v: {renamed.get(r, r) for r in rs} for v, rs in trace.alias.items()}
    release, last = _release_points(drafts, alias, trace.graph_outs)
    bufs = _Buffers()
    for k, d in enumerate(drafts):
        if d.want is not None:
            if k in member:                       # writes into its concat's buffer
                c, off = member[k]
                b = bufs.of(drafts[c].outs[0], drafts[c].want, drafts[c].node)
            elif d.outs[0] in fresh and k not in copies:
                b, off = None, 0                      # a new array each run (plan.views)
            else:
                c, off = k, 0
                b = bufs.of(d.outs[0], d.want, d.node)
                if k in copies:
                    d.fn = _concat_rest(d, copies[k])
                if d.outs[0] not in last:         # never read: free at once
                    bufs.free.append(b)
            d.view = len(plan.views)
            plan.views.append((b, off, d.want[1], d.want[0]))
        for r in release.get(k, ()):
            if r in bufs.owner:
                bufs.free.append(bufs.owner[r])
    plan.buffer_sizes = bufs.sizes


# ============================================================================ 5. compile
def _bound(st):
    """The step's one-call form (takes_out's ``bound``) where the plan can use it: one
    output, written into an arena view, from a first input computed at run time."""
    if st.out_view is None or len(st.outs) != 1 or not st.ins or st.ins[0] is None:
        return None
    return getattr(st.fn, "bound", None)


def _step_lines(k, st):
    """Step k as source lines: the call, its outputs bound, its freed values dropped. A step
    with a one-call form runs that (``a3 if b5(v2, a3, nt) else f5(v2, v4, out=a3)``)."""
    args = ", ".join("None" if s is None else f"v{s}" for s in st.ins)
    if st.out_view is not None:
        args += f"{', ' if args else ''}out=a{st.out_view}"
    if len(st.outs) == 1:
        target = "_" if st.outs[0] is None else f"v{st.outs[0]}"
        call = f"f{k}({args})"
        if _bound(st) is not None:
            call = f"a{st.out_view} if b{k}(v{st.ins[0]}, a{st.out_view}, nt) else {call}"
        lines = [f"{target} = {call}"]
    else:
        lines = [f"r = f{k}({args})"]
        lines += [f"v{s} = r[{j}]" for j, s in enumerate(st.outs) if s is not None]
    return lines + [f"v{s} = None" for s in st.frees]


def _compile(steps, out_slots, views=()):
    """The steps as one generated function ``run(vals, arena)``: each value a local variable,
    each step one line (``v7 = f3(v2, v5, out=a1)``), a freed value set to None after its
    last reader, the graph outputs written back to ``vals``. Per node this leaves the
    handler's call itself, where an interpreted loop also paid ~1 us of list indexing,
    unpacking and length tests. ``views``: the plan's (see Plan.views)."""
    body = [line for k, st in enumerate(steps) for line in _step_lines(k, st)]
    bound = {k: _bound(st) for k, st in enumerate(steps) if _bound(st) is not None}
    new = {v: functools.partial(np.empty, shape, dt)
           for v, (b, _, dt, shape) in enumerate(views) if b is None}
    src = ["def make(fns, bound, new, threads):",
           "    " + "".join(f"f{k}, " for k in range(len(steps))) + "= fns" if steps
           else "    pass",
           "    " + "".join(f"b{k}, " for k in bound) + "= bound" if bound else "    pass",
           "    " + "".join(f"new{v}, " for v in new) + "= new" if new else "    pass",
           "    def run(vals, arena):", "        nt = threads()"]
    src += [f"        {line}"
            for line in _prologue(steps, new) + body + _epilogue(steps, out_slots)]
    src += ["        return vals", "    return run"]
    namespace = {}
    exec(compile("\n".join(src), "<edgedl plan>", "exec"), namespace)
    return namespace["make"]([st.fn for st in steps], list(bound.values()),
                             list(new.values()), _config.get_num_threads)


def _prologue(steps, new=()):
    """The compiled run's first lines: the values it reads that no step makes (inputs,
    constants) and the arena views (or, those in ``new``, this run's new arrays), into
    locals."""
    read = {s for st in steps for s in st.ins if s is not None}
    produced = {s for st in steps for s in st.outs if s is not None}
    views = sorted({st.out_view for st in steps if st.out_view is not None})
    return ([f"v{s} = vals[{s}]" for s in sorted(read - produced)] +
            [f"a{v} = new{v}()" if v in new else f"a{v} = arena[{v}]" for v in views])


def _epilogue(steps, out_slots):
    """Its last lines: the graph outputs it made, back into ``vals``."""
    produced = {s for st in steps for s in st.outs if s is not None}
    return [f"vals[{s}] = v{s}" for s in sorted(set(out_slots) & produced)]


def _compile_later(plan):
    """``run_steps`` that compiles the steps on its first call and then replaces itself.
    The traced run that built the plan already gave the first result, and compile() costs
    ~50 us a step (8-15 ms for a 160-node detector): a one-image run (``edgedl detect``)
    never pays it, a second run pays it once. Two threads may both compile; either result
    is the same function."""
    def first_call(vals, arena):
        plan.run_steps = _compile(plan.steps, plan.out_slots.values(), plan.views)
        return plan.run_steps(vals, arena)
    return first_call


# ============================================================================ build / run
def build(graph, feed, backend):
    """Plan for the shapes in ``feed`` (name -> array); returns (plan, values of this run)."""
    trace = _Trace(graph, feed, backend)
    for node in graph.nodes:
        trace.add(node)
    trace.drafts = _drop_unread(trace.drafts, trace.graph_outs)
    plan = Plan()
    slot = _number_slots(trace, graph)
    const_slots = {name: s for name, s in slot.items() if name in trace.known}
    plan.n_slots = len(slot)
    plan.template = [None] * plan.n_slots
    for name, s in const_slots.items():
        plan.template[s] = trace.known[name]
    plan.const_roots = {id(memory_root(v)) for v in plan.template      # outputs to copy
                        if isinstance(v, np.ndarray)}
    plan.in_slots = {vi.name: slot[vi.name] for vi in graph.inputs}
    plan.out_slots = {o.name: slot[o.name] for o in graph.outputs}
    frees = _free_after_last_read(trace.drafts, slot,
                                  set(plan.out_slots.values()) | set(const_slots.values()))
    _assign_buffers(plan, trace)
    plan.steps = [Step(d.fn, tuple(slot[i] if i else None for i in d.ins),
                       tuple(slot[o] if o else None for o in d.outs), tuple(fr), d.view,
                       d.node) for d, fr in zip(trace.drafts, frees)]
    plan.run_steps = _compile_later(plan)
    # an output that is a constant or a feed must be copied on return (the session does)
    values = {o.name: trace.value(o.name) for o in graph.outputs}
    return plan, values


def run(plan, feed_slots, collect):
    """Execute a plan; feed_slots: list of (slot, array). Returns ``collect(values)``, called
    before the run's buffers go back to the pool (a concurrent run may take them then)."""
    vals = list(plan.template)
    for s, v in feed_slots:
        vals[s] = v
    arena = plan.arenas.pop() if plan.arenas else plan.new_arena()
    try:
        return collect(plan.run_steps(vals, arena))
    finally:
        plan.arenas.append(arena)


def run_profiled(plan, feed_slots, collect, times):
    """Like run, one step at a time, adding each step's seconds to ``times[k]``."""
    vals = list(plan.template)
    for s, v in feed_slots:
        vals[s] = v
    clock = time.perf_counter
    arena = plan.arenas.pop() if plan.arenas else plan.new_arena()
    try:
        nt = _config.get_num_threads()
        for k, st in enumerate(plan.steps):
            fn, ins, outs, frees, ov, _ = st
            args = [None if i is None else vals[i] for i in ins]
            b = _bound(st)
            t0 = clock()
            o = None if ov is None else plan.out_array(arena, ov)
            if b is not None and b(args[0], o, nt):
                r = o
            else:
                r = fn(*args) if ov is None else fn(*args, out=o)
            times[k] += clock() - t0
            for o, v in zip(outs, (r,) if len(outs) == 1 else r):
                if o is not None:
                    vals[o] = v
            for s in frees:
                vals[s] = None
        return collect(vals)
    finally:
        plan.arenas.append(arena)
