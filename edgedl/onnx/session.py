"""``edgedl.InferenceSession``: the onnxruntime Python API on edgedl's kernels.

    sess = edgedl.InferenceSession("model.onnx")
    outputs = sess.run(None, {sess.get_inputs()[0].name: x})

Load (graph.py) -> rewrites (fuse.py) -> one plan per input-shape signature (plan.py).
"""
import collections
import threading
import time

import numpy as np

from .. import _config
from .._memory import gc_paused
from ..errors import InputError, ValidationError
from ..kernels import conv as _conv
from . import fuse as _fuse, graph as _graph, plan as _plan, proto as _proto
from .ops import OPS

_MAX_PLANS = 8
_PROFILE_RUNS = 1000    # per-run node times kept for profile_report's medians


def onnx_type_string(elem_type):
    """ONNX element type -> onnxruntime's type string, e.g. 'tensor(float)'."""
    try:
        name = _proto.DataType.Name(elem_type).lower()
    except ValueError:
        name = "undefined"
    return f"tensor({name})"


class NodeArg:
    """What ``get_inputs()`` / ``get_outputs()`` return (onnxruntime's NodeArg fields)."""
    __slots__ = ("name", "shape", "type")

    def __init__(self, vi):
        self.name = vi.name
        self.shape = None if vi.dims is None else list(vi.dims)
        self.type = onnx_type_string(vi.elem_type)

    def __repr__(self):
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape!r})"


# onnxruntime.InferenceSession's keywords beyond its signature: accepted and ignored here, as
# sess_options / providers / provider_options are, so code written for onnxruntime runs unchanged
_ORT_KEYWORDS = ("disabled_optimizers", "enable_fallback", "read_config_from_model")


class InferenceSession:
    """Run an ONNX model on edgedl's kernels.

    ``model``: a path, bytes or ``onnx.ModelProto``. ``backend``: kernel backend (None = the
    current one at run time). ``num_threads``: threads while running (None = edgedl's setting).
    ``adaptive_threads`` (default True): with more than one thread, each run uses either
    all of them or one, whichever recent runs found faster (see ``ThreadGovernor``): a
    neighbour process holding a core makes OpenMP's barriers wait on a descheduled thread,
    and one thread is then faster. ``profile=True`` records per-node times (see :meth:`profile_report`). ``fuse=False``
    disables the graph rewrites (BatchNorm folding, activation fusion) — for testing.
    ``sess_options`` (an onnxruntime SessionOptions or alike): its ``intra_op_num_threads``
    (> 0) is the thread count when ``num_threads`` is None; the rest of it, ``providers``,
    ``provider_options`` and onnxruntime's other keywords are ignored, so code written for
    onnxruntime runs unchanged; any other keyword is refused (ValidationError). The thread
    count applies to this session's runs only, in the calling thread.
    """

    def __init__(self, model, backend=None, num_threads=None, profile=False, fuse=True,
                 sess_options=None, providers=None, provider_options=None,
                 adaptive_threads=True, **kwargs):
        unknown = sorted(set(kwargs) - set(_ORT_KEYWORDS))
        if unknown:     # a typo (num_thread=2) must not pass silently
            import inspect
            known = [p for p in inspect.signature(InferenceSession).parameters if p != "kwargs"]
            raise ValidationError(
                f"InferenceSession got unknown keyword argument{'s' * (len(unknown) > 1)} "
                f"{', '.join(unknown)}; it accepts {', '.join(known)} (and onnxruntime's "
                f"{', '.join(_ORT_KEYWORDS)}, ignored)")
        # fails early on an unknown backend; numba (~0.45 s to import on x86, seconds on a
        # Pi) is loaded with the session, like onnxruntime sets up its kernels, not in run()
        if _config.resolve_backend(backend) == "numba":
            _config.load_numba()
        self._backend = backend
        self._num_threads = _session_threads(num_threads, sess_options)
        self._profile = bool(profile)
        self._adaptive = bool(adaptive_threads) and not self._profile
        self._governors = {}
        with gc_paused():
            g = _graph.load(model, OPS)
            # tables fused from integer ops are computed by the kernels the runs will use
            self._graph = _fuse.optimize(g, fuse=fuse,
                                         backend=_config.resolve_backend(backend))
        self._inputs = [NodeArg(vi) for vi in g.inputs]
        self._outputs = [NodeArg(vi) for vi in g.outputs]
        self._input_info = {vi.name: vi for vi in g.inputs}
        # per input: (name, dtype, rank or None, ((axis, fixed dim), ...)) for _check_feed
        self._input_specs = [(vi.name, vi.dtype, None if vi.dims is None else len(vi.dims),
                              tuple((ax, d) for ax, d in enumerate(vi.dims or ())
                                    if isinstance(d, int))) for vi in g.inputs]
        self._output_names = [vi.name for vi in g.outputs]
        self._plans = {}
        self._lock = threading.Lock()
        self._times = {}        # signature -> per-run lists of per-step seconds (the last runs)

    # ------------------------------------------------------------------ onnxruntime API
    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)

    def get_overridable_initializers(self):
        return []

    def get_providers(self):
        return ["EdgeDLExecutionProvider"]

    def get_modelmeta(self):
        return None

    @property
    def opset(self):
        return self._graph.opset

    def run(self, output_names, input_feed, run_options=None):
        """Outputs named in ``output_names`` (None = all) for ``input_feed`` {name: array}."""
        names = self._check_outputs(output_names)
        feed = self._check_feed(input_feed)
        backend = _config.resolve_backend(self._backend)
        key = (backend,) + tuple((name, a.shape, a.dtype.str) for name, a in feed.items())
        _conv.single_threaded_blas()   # the conv GEMMs are split over edgedl's threads
        # the session's thread count holds for this call in this thread only, never globally
        n = self._num_threads or _config.get_num_threads()
        gov = self._governor(key, n) if backend != "numpy" and n > 1 else None
        if gov is not None:
            n = gov.choose()
        token = _config.push_num_threads(n)
        try:
            if backend != "numpy":
                _config.apply_threads(backend)     # the plan calls twin kernels directly
            with np.errstate(all="ignore"):     # inf/nan are ONNX results, not warnings
                if gov is None:
                    return self._run(key, backend, feed, names)
                t0 = time.perf_counter()
                out = self._run(key, backend, feed, names)
                gov.record(n, time.perf_counter() - t0)
                return out
        finally:
            _config.pop_num_threads(token)

    def _governor(self, key, n):
        """The thread governor of this input signature and thread count (None if disabled)."""
        if not self._adaptive or key not in self._plans:
            return None             # the first run plans (traced), it is not timed
        gov = self._governors.get((key, n))
        if gov is None:
            gov = self._governors[(key, n)] = ThreadGovernor(n)
        return gov

    # ------------------------------------------------------------------ internals
    def _run(self, key, backend, feed, names):
        p = self._plans.get(key)
        if p is None:
            with self._lock:
                p = self._plans.get(key)
                if p is None:
                    with gc_paused():
                        p, values = _plan.build(self._graph, feed, backend)
                    if len(self._plans) >= _MAX_PLANS:
                        self._plans.pop(next(iter(self._plans)))
                    self._plans[key] = p
                    self._times[key] = collections.deque(maxlen=_PROFILE_RUNS)
                    return _handed_over([values[n] for n in names], feed, p)
        feed_slots = [(p.in_slots[n], a) for n, a in feed.items()]

        def collect(vals):
            return _handed_over([vals[p.out_slots[n]] for n in names], feed, p)
        if self._profile:
            times = [0.0] * len(p.steps)
            self._times[key].append(times)
            return _plan.run_profiled(p, feed_slots, collect, times)
        return _plan.run(p, feed_slots, collect)

    def _check_outputs(self, output_names):
        if output_names is None:
            return list(self._output_names)
        if isinstance(output_names, str):
            raise InputError("output_names must be a list of names or None, got a string "
                             f"{output_names!r}")
        names = list(output_names)
        unknown = [n for n in names if n not in self._output_names]
        if unknown:
            raise InputError(f"unknown output name(s) {unknown}; the model's outputs are "
                             f"{self._output_names}")
        return names

    def _check_feed(self, input_feed):
        """{name: array} in the model's input order, every input checked (see _full_check)."""
        if type(input_feed) is dict and len(input_feed) == len(self._input_specs):
            feed = {}
            for name, dtype, ndim, fixed in self._input_specs:     # the common case, fast
                a = input_feed.get(name)
                if type(a) is not np.ndarray or a.dtype != dtype or \
                        (ndim is not None and a.ndim != ndim) or \
                        any(a.shape[ax] != d for ax, d in fixed):
                    break
                feed[name] = a
            else:
                return feed
        return self._full_check(input_feed)

    def _full_check(self, input_feed):
        if not isinstance(input_feed, dict):
            raise InputError(f"input_feed must be a dict {{input name: array}}, got "
                             f"{type(input_feed).__name__}")
        unknown = [n for n in input_feed if n not in self._input_info]
        if unknown:
            raise InputError(f"unknown input name(s) {unknown}; the model's inputs are "
                             f"{list(self._input_info)}")
        feed = {}
        for name, vi in self._input_info.items():
            if name not in input_feed:
                raise InputError(f"missing input {name!r}; the model's inputs are "
                                 f"{list(self._input_info)}")
            a = input_feed[name]
            if not isinstance(a, np.ndarray):
                if isinstance(a, (list, tuple, int, float, bool, np.generic)):
                    a = np.asarray(a, dtype=vi.dtype)
                else:
                    raise InputError(f"input {name!r} must be a NumPy array, got "
                                     f"{type(a).__name__}")
            if a.dtype != vi.dtype:
                raise InputError(f"input {name!r} must have dtype {vi.dtype} "
                                 f"({onnx_type_string(vi.elem_type)}), got {a.dtype}")
            if vi.dims is not None and a.ndim != len(vi.dims):
                raise InputError(f"input {name!r} must have rank {len(vi.dims)} (declared "
                                 f"shape {vi.dims}), got rank {a.ndim} (shape {a.shape})")
            # fixed declared dims are enforced as onnxruntime does; symbolic ones are free
            bad = [ax for ax, d in enumerate(vi.dims or ()) if isinstance(d, int) and
                   a.shape[ax] != d]
            if bad:
                raise InputError(f"input {name!r} has shape {list(a.shape)} but the model "
                                 f"declares {vi.dims}: axis {bad[0]} must be "
                                 f"{vi.dims[bad[0]]}, got {a.shape[bad[0]]}")
            feed[name] = a
        return feed

    # ------------------------------------------------------------------ profiling
    def profile_report(self, by="op_type"):
        """Per-op-type (or per-node with ``by="node"``) times over the profiled runs (the last
        1000 of each input signature): a list of (name, ms per run, count, share of the run)
        sorted by time, each node's time the median over runs (a busy box makes means lie)."""
        if not self._profile:
            raise RuntimeError("create the session with profile=True to record node times")
        totals = {}
        for key, p in self._plans.items():
            runs = self._times.get(key)
            if not runs:
                continue
            medians = np.median(np.array(runs), axis=0)
            for node, t in zip(p.nodes, medians):
                label = node.op_type if by == "op_type" else f"{node.name} ({node.op_type})"
                if node.op_type == "Conv" and by == "op_type" and node.attrs.get("_act"):
                    label = f"Conv+{node.attrs['_act']}"
                tot, cnt = totals.get(label, (0.0, 0))
                totals[label] = (tot + float(t) * 1e3, cnt + 1)
        whole = sum(t for t, _ in totals.values()) or 1.0
        rows = [(k, t, c, t / whole) for k, (t, c) in totals.items()]
        return sorted(rows, key=lambda r: -r[1])

    def format_profile(self, by="op_type"):
        rows = self.profile_report(by)
        lines = [f"{'op':28s} {'ms/run':>8s} {'count':>6s} {'share':>6s}"]
        lines += [f"{k:28s} {t:8.3f} {c:6d} {s:6.1%}" for k, t, c, s in rows]
        return "\n".join(lines)


class ThreadGovernor:
    """Picks the thread count of each run: ``n`` or 1, whichever is faster now.

    It keeps the last ``KEEP`` run times at each count and uses ``n`` threads only while
    their median beats one thread's by ``MARGIN`` (else the spare core is better left to
    others). The count not in use is measured in bursts of ``BURST`` runs: at the start in
    turn until both have KEEP times (16 runs), then once every ``PROBE`` runs, and a probe's
    times replace that count's older ones. So a change (a neighbour starting or ending a
    busy loop) is noticed at once when the count in use slows past the other's median, and
    at the next probe the other way. The first run after a change of count is not recorded:
    it wakes the workers parked during one-thread runs (measured on the 2-core VM, YuNet: a
    lone 2-thread run among 1-thread ones took 5.5-16 ms where 2 threads in a row take 3.4
    and one thread 5.3, so one-run probes kept 2 threads off for good). A probe whose first
    timed run is ``GIVE_UP`` times slower than the count in use stops there (2 threads
    beside a busy neighbour: 2-6x slower runs). On one thread the probes come sooner after
    a switch, every ``PROBE_MIN`` runs, then at twice the interval each time the probe
    confirms it, up to PROBE: a noisy spell of three slow 2-thread runs had sent YOLOX-nano
    (0.6x the time on 2 threads) to one thread for 64 runs at a time, and the probes that
    followed met more of the spell (bench_threads: 2t/1t 0.97). At most BURST runs in
    PROBE are probes once settled: the median latency never sees them.
    """
    KEEP, PROBE, PROBE_MIN, BURST, MARGIN, GIVE_UP = 5, 64, 8, 4, 0.95, 1.5

    def __init__(self, n):
        self.n = n
        self.times = {1: collections.deque(maxlen=self.KEEP),
                      n: collections.deque(maxlen=self.KEEP)}
        self.runs = 0
        self.use = n
        self.trying, self.burst = n, 0      # the count measured, runs left of its burst
        self.last = None                    # the count of the previous run
        self.measured = False               # both counts have had KEEP times
        self.interval = self.PROBE           # runs between probes of the other count
        self.next_probe = self.PROBE

    def choose(self):
        self.runs += 1
        if self.burst:
            self.burst -= 1
            return self.trying
        other = 1 if self.use == self.n else self.n
        if not self.measured:       # the start: the count with fewer times, so in turn
            c = min((other, self.use), key=lambda k: len(self.times[k]))
        elif self.runs >= self.next_probe:
            # a probe's times alone stand for the other count: older ones may come from a
            # noisy spell (the 2-core VM has them: 2-thread runs at 7-9 ms for a few runs
            # where they take 3.4) and kept 2 threads off for two more probes
            c = other
            self.times[c].clear()
            self.interval = min(2 * self.interval, self.PROBE)
            self.next_probe = self.runs + self.interval
        else:
            return self.use
        self.trying, self.burst = c, self.BURST - 1
        return c

    def record(self, n, seconds):
        switched, self.last = n != self.last, n
        if switched:
            return
        self.times[n].append(seconds)
        if (self.measured and self.burst and n != self.use and self.times[self.use]
                and seconds > self.GIVE_UP * _median(self.times[self.use])):
            self.burst = 0      # a probe clearly slower (a neighbour holds a core): no more
        many, one = self.times[self.n], self.times[1]
        self.measured = self.measured or min(len(many), len(one)) >= self.KEEP
        if self.measured and many and one:
            use = self.n if _median(many) < self.MARGIN * _median(one) else 1
            if use != self.use:     # on one thread, look back at n soon (see above)
                self.interval = self.PROBE_MIN if use == 1 else self.PROBE
                self.next_probe = self.runs + self.interval
            self.use = use


def _median(xs):
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


def _session_threads(num_threads, sess_options):
    """The session's own thread count: ``num_threads``, else onnxruntime's
    ``sess_options.intra_op_num_threads`` when above 0 (0 = default), else None."""
    if num_threads is not None:
        return _config.check_num_threads(num_threads, "num_threads")
    n = getattr(sess_options, "intra_op_num_threads", 0)
    if n == 0 or n is None:
        return None
    return _config.check_num_threads(n, "sess_options.intra_op_num_threads")


def _handed_over(values, feed, plan):
    """The outputs as arrays the caller may keep and modify: those whose memory belongs to
    the run (arrays a step allocated, or views of them) as they are; copies of views of the
    plan's constants, its recycled buffers or the feeds, of read-only or non-contiguous
    arrays, and of a second output on memory an earlier one already took."""
    taken = {id(_plan.memory_root(a)) for a in feed.values()}
    out = []
    for v in values:
        v = np.asarray(v)
        root = _plan.memory_root(v)
        r = id(root)
        if root.base is not None or r in taken or r in plan.const_roots or \
                r in plan.arena_roots or not v.flags.writeable or not v.flags.c_contiguous:
            v = np.array(v, order="C")
        else:
            taken.add(id(root))
        out.append(v)
    return out
