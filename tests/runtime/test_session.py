"""Loading and feeding errors, the onnxruntime-style API, external data, profiling."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgedl  # noqa: E402
from edgedl.errors import InputError, ModelError, UnsupportedOpsError  # noqa: E402


def _small_model(opset=13):
    w = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) / 50
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["n", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_api_path_bytes_proto(tmp_path):
    m = _small_model()
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    x = np.ones((2, 3, 8, 8), np.float32)
    outs = [edgedl.InferenceSession(src).run(None, {"x": x})[0]
            for src in (str(p), p, m.SerializeToString(), m)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    s = edgedl.InferenceSession(m, providers=["CPUExecutionProvider"])
    (i,) = s.get_inputs()
    assert (i.name, i.shape, i.type) == ("x", ["n", 3, 8, 8], "tensor(float)")
    assert s.get_outputs()[0].name == "y"
    assert s.run(["y"], {"x": x})[0].shape == (2, 2, 8, 8)


def test_unknown_keywords_are_refused_with_the_accepted_ones():
    """A typo must not pass silently; onnxruntime's own keywords are accepted (and ignored)."""
    from edgedl.errors import ValidationError
    m = _small_model()
    with pytest.raises(ValidationError, match="unknown keyword argument num_thread; it accepts "
                       "model, backend, num_threads, profile, fuse, sess_options, providers, "
                       "provider_options"):
        edgedl.InferenceSession(m, num_thread=2)
    with pytest.raises(ValidationError, match="unknown keyword arguments a, b;"):
        edgedl.InferenceSession(m, b=1, a=2)
    s = edgedl.InferenceSession(m, sess_options=None, providers=["CPUExecutionProvider"],
                                provider_options=[{}], disabled_optimizers=["x"],
                                enable_fallback=0, read_config_from_model=0)
    assert s.run(None, {"x": np.ones((1, 3, 8, 8), np.float32)})[0].shape == (1, 2, 8, 8)


def test_malformed_and_truncated(tmp_path):
    data = _small_model().SerializeToString()
    for bad in (data[: len(data) // 2], data[:-7], b"\x00\x01garbage\xff" * 3, b""):
        with pytest.raises(ModelError):
            edgedl.InferenceSession(bad)
    with pytest.raises(ModelError):
        edgedl.InferenceSession(str(tmp_path / "missing.onnx"))
    with pytest.raises(ModelError):
        edgedl.InferenceSession(12)


def test_load_and_plan_leave_the_collector_as_they_found_it():
    """Loading and planning pause Python's cyclic GC (start-up): it is on again afterwards,
    also after a refused model, and a caller's own gc.disable() is kept."""
    import gc
    data = _small_model().SerializeToString()
    x = np.ones((1, 3, 8, 8), np.float32)
    assert gc.isenabled()
    try:
        edgedl.InferenceSession(data).run(None, {"x": x})
        assert gc.isenabled()
        with pytest.raises(ModelError):
            edgedl.InferenceSession(data[:-7])
        assert gc.isenabled()
        gc.disable()
        edgedl.InferenceSession(data).run(None, {"x": x})
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_steps_compile_on_the_second_run(rng):
    """The first run of a shape is the traced one; the steps are compiled when a second run
    needs them, and every later run gives the traced run's result."""
    s = edgedl.InferenceSession(_small_model())
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    first = s.run(None, {"x": x})[0]
    (plan,) = s._plans.values()
    lazy = plan.run_steps
    second = s.run(None, {"x": x})[0]
    assert plan.run_steps is not lazy       # replaced by the compiled function
    third = s.run(None, {"x": x})[0]
    np.testing.assert_array_equal(second, first)
    np.testing.assert_array_equal(third, first)


def _chain_model():
    """Conv -> Relu -> Conv (+ SiLU) -> Sigmoid: the planned convs have one-call forms."""
    r = np.random.default_rng(3)
    w1 = (r.standard_normal((4, 3, 3, 3)) / 5).astype(np.float32)
    w2 = (r.standard_normal((4, 4, 1, 1)) / 3).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Sigmoid", ["c2"], ["s2"], name="sig"),
             helper.make_node("Mul", ["c2", "s2"], ["m2"], name="silu"),
             helper.make_node("Flatten", ["m2"], ["y"], name="flat")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 3, 9, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_compiled_plan_calls_the_bound_kernels(rng):
    """The compiled plan calls a step's one-call form (``bound``: the Cython conv bound to
    its plan) directly, and falls back to the step's handler where that declines: both give
    the numpy backend's result (the SiLU in the second conv's kernel included)."""
    from edgedl._config import why_unavailable
    from edgedl.onnx import plan as P
    if why_unavailable("cython") is not None:
        pytest.skip("the Cython backend is not built")
    m = _chain_model()
    x = rng.standard_normal((1, 3, 9, 20)).astype(np.float32)
    want = edgedl.InferenceSession(m, backend="numpy").run(None, {"x": x})[0]
    s = edgedl.InferenceSession(m, backend="cython")
    s.run(None, {"x": x})
    (plan,) = s._plans.values()
    bound = [st for st in plan.steps if P._bound(st) is not None]
    assert len(bound) == 2 and len(plan.steps) == 3     # Relu and SiLU fused into the convs
    np.testing.assert_allclose(s.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-6)
    calls = []
    for st in bound:            # declining: the handler runs
        st.fn.bound = lambda x, out, nt, _c=calls: _c.append(nt) or False
    plan.run_steps = P._compile(plan.steps, plan.out_slots.values(), plan.views)
    np.testing.assert_allclose(s.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-6)
    assert calls == [1, 1]


def test_a_node_read_only_by_a_folded_shape_is_not_planned(rng):
    """x -> Transpose -> Shape -> Reshape's target: the plan folds the Shape (x's shape is
    fixed), so the Transpose has no reader left and no step (it used to run every time)."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1], name="tr"),
             helper.make_node("Shape", ["t"], ["s"], name="shape"),
             helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "s"], ["y"], name="reshape")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     ["n", 3, 4, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    s = edgedl.InferenceSession(m, backend="numpy")
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(s.run(None, {"x": x})[0],
                                      np.maximum(x, 0).reshape(2, 4, 5, 3))
    (plan,) = s._plans.values()
    assert [st.node.op_type for st in plan.steps] == ["Relu", "Reshape"]


def test_outputs_handed_over_without_copies(rng):
    """A graph output that is a planned step's output (here the conv's, through Flatten) is
    written into a new array each run and handed over as it is: the conv's bound kernel
    still runs, the caller's array is not a view of the plan's buffers, and the next run
    does not overwrite it. Outputs on the feed's or a constant's memory are copies."""
    from edgedl._config import why_unavailable
    from edgedl.onnx import plan as P
    m = _chain_model()
    x = rng.standard_normal((1, 3, 9, 20)).astype(np.float32)
    want = edgedl.InferenceSession(m, backend="numpy").run(None, {"x": x})[0]
    backend = "cython" if why_unavailable("cython") is None else "numpy"
    s = edgedl.InferenceSession(m, backend=backend)
    first = s.run(None, {"x": x})[0]
    (plan,) = s._plans.values()
    (last,) = [st for st in plan.steps if st.out_view is not None and
               plan.views[st.out_view][0] is None]
    assert last.node.name == "conv2" and (backend == "numpy" or P._bound(last) is not None)
    second = s.run(None, {"x": x})[0]
    third = s.run(None, {"x": 2 * x})[0]
    for a in (first, second, third):
        root = P.memory_root(a)
        assert root.base is None and id(root) not in plan.arena_roots
    assert not np.shares_memory(second, third)
    np.testing.assert_allclose(first, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second, want, rtol=1e-5, atol=1e-6)
    # an output that is the feed, a view of it, or a constant: copies
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["a"]),
                           helper.make_node("Reshape", ["x", "s"], ["b"]),
                           helper.make_node("Identity", ["s"], ["c"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT if n != "c"
                                                         else TensorProto.INT64, None)
                           for n in "abc"],
                          [numpy_helper.from_array(np.array([3, 2], np.int64), "s")])
    s = edgedl.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x = rng.standard_normal((2, 3)).astype(np.float32)
    for _ in range(2):
        a, b, c = s.run(None, {"x": x})
        assert not np.shares_memory(a, x) and not np.shares_memory(b, x)
        c[0] = 99
    np.testing.assert_array_equal(s.run(None, {"x": x})[2], [3, 2])


def test_plan_buffers_start_on_cache_lines(rng):
    """The plan's recycled buffers start on 64-byte boundaries (NumPy starts large arrays
    16 or 32 bytes into a line: every vector load / store of the kernels then split)."""
    from edgedl.onnx import plan as P
    for n in (1, 1000, 100_000, 3_000_000):
        b = P._line_aligned_bytes(n)
        assert b.size == n and b.ctypes.data % 64 == 0
    s = edgedl.InferenceSession(_chain_model(), backend="numpy")
    x = rng.standard_normal((1, 3, 9, 20)).astype(np.float32)
    s.run(None, {"x": x})
    (plan,) = s._plans.values()
    views = plan.new_arena()
    assert any(v is not None for v in views)
    assert all(plan.views[i][1] != 0 or v.ctypes.data % 64 == 0
               for i, v in enumerate(views) if v is not None)   # None: a new array a run


def test_unsupported_ops_listed_at_once():
    nodes = [helper.make_node("Det", ["x"], ["a"], name="e1"),
             helper.make_node("Det", ["a"], ["b"], name="e2"),
             helper.make_node("LSTM", ["b"], ["c"], name="l1"),
             helper.make_node("Relu", ["c"], ["d"], name="ok"),
             helper.make_node("Foo", ["d"], ["y"], domain="com.vendor", name="f")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [2, 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                            helper.make_opsetid("com.vendor", 1)])
    with pytest.raises(UnsupportedOpsError) as ei:
        edgedl.InferenceSession(m)
    assert ei.value.ops == {"Det": ["e1", "e2"], "LSTM": ["l1"], "com.vendor.Foo": ["f"]}
    assert "Det" in str(ei.value) and "e2" in str(ei.value)


def test_bad_feeds():
    s = edgedl.InferenceSession(_small_model())
    x = np.ones((1, 3, 8, 8), np.float32)
    with pytest.raises(InputError, match="unknown input"):
        s.run(None, {"x": x, "z": x})
    with pytest.raises(InputError, match="missing input"):
        s.run(None, {})
    with pytest.raises(InputError, match="dtype"):
        s.run(None, {"x": x.astype(np.float64)})
    with pytest.raises(InputError, match="rank"):
        s.run(None, {"x": x[0]})
    with pytest.raises(InputError, match="unknown output"):
        s.run(["nope"], {"x": x})
    with pytest.raises(InputError):
        s.run(None, [x])
    with pytest.raises(InputError, match=r"declares \['n', 3, 8, 8\]: axis 1 must be 3, got 4"):
        s.run(None, {"x": np.ones((1, 4, 8, 8), np.float32)})
    with pytest.raises(InputError, match="axis 3 must be 8, got 9"):
        s.run(None, {"x": np.ones((1, 3, 8, 9), np.float32)})
    s.run(None, {"x": np.ones((5, 3, 8, 8), np.float32)})     # symbolic batch: free
    m = _small_model()
    for d in m.graph.input[0].type.tensor_type.shape.dim:
        d.dim_param = "d"
    s = edgedl.InferenceSession(m)
    with pytest.raises(ModelError):       # 4 channels for a 3-channel conv: clear, no crash
        s.run(None, {"x": np.ones((1, 4, 8, 8), np.float32)})


def test_external_data(tmp_path):
    m = _small_model()
    onnx.save(m, str(tmp_path / "m.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    x = np.ones((1, 3, 8, 8), np.float32)
    ref = edgedl.InferenceSession(_small_model()).run(None, {"x": x})[0]
    got = edgedl.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, ref)
    # a location outside the model's folder is refused
    evil = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False)
    for t in evil.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = os.path.join("..", "weights.bin")
    sub = tmp_path / "sub"
    sub.mkdir()
    (tmp_path / "weights.bin").write_bytes((tmp_path / "weights.bin").read_bytes())
    onnx.save(evil, str(sub / "evil.onnx"))
    with pytest.raises(ModelError, match="outside"):
        edgedl.InferenceSession(str(sub / "evil.onnx"))
    with pytest.raises(ModelError, match="external data"):
        edgedl.InferenceSession(evil.SerializeToString())


def test_profile_and_threads():
    s = edgedl.InferenceSession(_small_model(), profile=True, num_threads=1)
    x = np.ones((1, 3, 8, 8), np.float32)
    before = edgedl.get_num_threads()
    for _ in range(3):
        s.run(None, {"x": x})
    assert edgedl.get_num_threads() == before
    rows = s.profile_report()
    assert rows and rows[0][0] == "Conv+relu" and rows[0][2] == 1
    assert abs(sum(r[3] for r in rows) - 1) < 1e-9
    assert "Conv+relu" in s.format_profile()
    with pytest.raises(RuntimeError):
        edgedl.InferenceSession(_small_model()).profile_report()


def test_profile_report_takes_medians(monkeypatch):
    """One run preempted by a busy neighbour must not dominate the report (a mean would)."""
    from edgedl.onnx import plan
    real, seconds = plan.run_profiled, iter([0.001, 0.001, 1.0])

    def fake(p, feed_slots, collect, times):
        r = real(p, feed_slots, collect, times)
        times[:] = [next(seconds)] * len(times)
        return r
    monkeypatch.setattr(plan, "run_profiled", fake)
    s = edgedl.InferenceSession(_small_model(), profile=True)
    x = np.ones((1, 3, 8, 8), np.float32)
    s.run(None, {"x": x})       # builds the plan (not profiled)
    for _ in range(3):
        s.run(None, {"x": x})
    name, ms, count, share = s.profile_report()[0]
    assert name == "Conv+relu" and count == 1 and ms == pytest.approx(1.0)


def test_fuse_off_matches_fuse_on(rng):
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    a = edgedl.InferenceSession(_small_model(), fuse=False).run(None, {"x": x})[0]
    b = edgedl.InferenceSession(_small_model()).run(None, {"x": x})[0]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def _governed(g, cost, runs):
    """The counts ``g`` picks over ``runs`` runs whose times ``cost(n, previous n)`` gives."""
    picks, last = [], None
    for _ in range(runs):
        n = g.choose()
        g.record(n, cost(n, last))
        picks.append(n)
        last = n
    return picks


def test_thread_governor_follows_the_faster_count():
    """Measures both counts in turn at first, then keeps the faster one; probes the other in
    bursts every PROBE runs and switches when the one in use slows down (a neighbour takes
    a core), or back on one probe when the other is faster again."""
    from edgedl.onnx.session import ThreadGovernor
    g = ThreadGovernor(2)
    speed = {1: 10.0, 2: 6.0}                     # idle: 2 threads pay
    picks = _governed(g, lambda n, last: speed[n], 200)
    start = 4 * g.BURST                           # two bursts of each count
    assert picks[:start].count(1) == picks[:start].count(2) == start // 2
    assert g.measured and g.use == 2
    probes = picks[start:].count(1)
    assert 0 < probes <= g.BURST * (len(picks[start:]) // g.PROBE + 1)
    speed[2] = 40.0                               # contention: 2 threads stall on barriers
    picks = _governed(g, lambda n, last: speed[n], 200)
    assert picks[:5].count(2) <= 3
    # a probe of 2 threads now gives up after its first timed run (GIVE_UP): 2 runs a probe,
    # the probes PROBE_MIN runs apart at first, then twice as far each time, up to PROBE
    backoff = int(np.log2(g.PROBE // g.PROBE_MIN)) + 1
    assert picks[10:].count(2) <= 2 * (backoff + len(picks[10:]) // g.PROBE + 1)
    assert picks[-g.PROBE:].count(2) <= 2 * 2
    speed[2] = 6.0                                # the neighbour is gone: back on one probe
    picks = _governed(g, lambda n, last: speed[n], 2 * g.PROBE)
    assert picks[-g.PROBE:].count(2) >= g.PROBE - g.BURST
    g = ThreadGovernor(2)                         # no gain from 2 threads: use 1
    _governed(g, lambda n, last: 10.0 if n == 1 else 9.8, 100)
    assert g.use == 1


def test_thread_governor_ignores_the_run_after_a_change_of_count():
    """The first 2-thread run after 1-thread runs wakes the parked workers: slow, but not
    what 2 threads cost in a row, so a probe must not judge by it (one-run probes did, and
    kept 2 threads off on the 2-core VM where they ran YuNet in 0.65x the time)."""
    from edgedl.onnx.session import ThreadGovernor
    g = ThreadGovernor(2)
    picks = _governed(g, lambda n, last: 30.0 if n != last else (10.0 if n == 1 else 6.0), 300)
    assert g.use == 2 and picks[-100:].count(2) >= 100 - 4 * g.BURST
    # a noisy spell of slow 2-thread runs sends it to 1 thread; the next probe alone
    # (not the spell's old times) brings it back
    g = ThreadGovernor(2)
    _governed(g, lambda n, last: 10.0 if n == 1 else 6.0, 50)
    _governed(g, lambda n, last: 10.0 if n == 1 else 20.0, 5)
    assert g.use == 1
    picks = _governed(g, lambda n, last: 10.0 if n == 1 else 6.0, g.PROBE_MIN + g.BURST)
    assert g.use == 2 and picks[-1] == 2          # soon: the first probe after a switch


def test_sessions_with_threads_use_the_governor(rng):
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    s = edgedl.InferenceSession(_small_model(), num_threads=2)
    ref = edgedl.InferenceSession(_small_model(), num_threads=1).run(None, {"x": x})[0]
    for _ in range(9):
        np.testing.assert_array_equal(s.run(None, {"x": x})[0], ref)
    (gov,) = s._governors.values()      # the first run plans, untimed; then a burst of each
    assert gov.runs == 8 and len(gov.times[1]) == len(gov.times[2]) == gov.BURST - 1
    for _ in range(4 * gov.BURST - 8):
        s.run(None, {"x": x})
    assert len(gov.times[1]) == len(gov.times[2]) == gov.KEEP     # KEEP runs of each first
    assert gov.measured
    off = edgedl.InferenceSession(_small_model(), num_threads=2, adaptive_threads=False)
    for _ in range(3):
        off.run(None, {"x": x})
    assert not off._governors
