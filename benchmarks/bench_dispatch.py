"""Per-node overhead of a planned graph (issue 13, target 2), at 1 thread.

1. A graph of 100 tiny nodes (Add / Mul / Relu / Concat + Slice on 1x8x8x8): edgedl's
   InferenceSession.run against onnxruntime's, in alternating blocks. Target: <= 3x ORT.
2. A planned Conv node's dispatch: the plan's step for a 1-node Conv (1x8x8x8, 8 1x1 filters)
   against the conv2d_plan kernel call that step wraps, both writing into the same buffer.
   Target: the step costs <= 0.5 us more than its kernel. Also shown: the whole compiled
   plan (``plan.run_steps``: its prologue and epilogue), ``session.run`` (feed checks, thread
   settings, output collection: paid once per run, not per node) and, per node, a chain of 50
   such Convs through ``session.run``.

Run: pytest benchmarks/bench_dispatch.py --benchmark-only -s
 or: python benchmarks/bench_dispatch.py
"""
import time

import numpy as np
import pytest

import edgedl
from _common import single_thread


def tiny_graph(n=100):
    """ONNX bytes of ``n`` nodes cycling Add, Mul, Relu and Concat(+Slice back to 8
    channels) on a 1x8x8x8 float32 input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.full((1, 8, 1, 1), 0.5, np.float32), "c")]
    inits += [numpy_helper.from_array(np.array(v, np.int64), name)
              for name, v in (("starts", [4]), ("ends", [12]), ("axes", [1]))]
    nodes, cur, prev, k = [], "x", "x", 0
    while len(nodes) < n:
        out, kind = f"t{k}", k % 4
        if kind == 0:
            nodes.append(helper.make_node("Add", [cur, "c"], [out]))
        elif kind == 1:
            nodes.append(helper.make_node("Mul", [cur, "c"], [out]))
        elif kind == 2:
            nodes.append(helper.make_node("Relu", [cur], [out]))
        else:
            nodes.append(helper.make_node("Concat", [cur, prev], [out + "c"], axis=1))
            nodes.append(helper.make_node("Slice", [out + "c", "starts", "ends", "axes"],
                                          [out]))
        prev, cur, k = cur, out, k + 1
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def conv_chain(n):
    """ONNX bytes of ``n`` chained 1x1 Convs (8 -> 8 channels, bias) on 1x8x8x8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = (np.random.default_rng(0).standard_normal((8, 8, 1, 1)) * 0.3).astype(np.float32)
    nodes, cur = [], "x"
    for i in range(n):
        nodes.append(helper.make_node("Conv", [cur, "w", "b"], [f"y{i}"], name=f"conv{i}"))
        cur = f"y{i}"
    graph = helper.make_graph(
        nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, 8, 8, 8])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(8, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _x():
    return np.random.default_rng(1).random((1, 8, 8, 8), dtype=np.float32)


def _ort(model):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def _per_call(fn, calls=200, repeats=21):
    """Median seconds per call over ``repeats`` loops of ``calls`` calls (after a warm-up)."""
    for _ in range(calls):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        ts.append((time.perf_counter() - t0) / calls)
    return float(np.median(ts))


def paired(fns, blocks=7, calls=200):
    """Median seconds per call of each callable in ``fns``, measured in alternating blocks
    (the same noise for all)."""
    acc = [[] for _ in fns]
    for _ in range(blocks):
        for f, a in zip(fns, acc):
            a.append(_per_call(f, calls, 3))
    return [float(np.median(a)) for a in acc]


def _planned_conv():
    """(session, the compiled plan, its Conv step, the kernel the step wraps, x, out)."""
    x = _x()
    sess = edgedl.InferenceSession(conv_chain(1), num_threads=1)
    for _ in range(3):              # plan, then compile the plan
        sess.run(None, {"x": x})
    plan = next(iter(sess._plans.values()))
    step = plan.steps[0].fn
    cells = [c.cell_contents for c in (step.__closure__ or ())]
    kernel = next(c for c in cells if callable(c) and hasattr(c, "out_shape"))
    out = np.empty(kernel.out_shape, np.float32)
    return sess, plan, step, kernel, x, out


def summary():
    with single_thread():
        lines = [f"backend {edgedl.get_backend()}; 1 thread; medians, alternating blocks"]
        x = _x()
        feed = {"x": x}
        model = tiny_graph()
        e = edgedl.InferenceSession(model, num_threads=1)
        for _ in range(3):
            e.run(None, feed)
        try:
            o = _ort(model)
        except ImportError:
            o = None
        if o is not None:
            np.testing.assert_array_equal(e.run(None, feed)[0], o.run(None, feed)[0])
            te, to = paired([lambda: e.run(None, feed), lambda: o.run(None, feed)])
            lines.append(f"100 tiny nodes: edgedl {te * 1e6:.1f} us, onnxruntime "
                         f"{to * 1e6:.1f} us, ratio {te / to:.2f} (target <= 3)")
        sess, plan, step, kernel, x, out = _planned_conv()
        vals = list(plan.template)
        vals[plan.in_slots["x"]] = x
        arena = plan.new_arena()
        tk, ts, tp, tr = paired([lambda: kernel(x, out), lambda: step(x, None, None, out=out),
                                 lambda: plan.run_steps(vals, arena),
                                 lambda: sess.run(None, feed)])
        lines.append(f"1-node Conv 1x8x8x8: kernel {tk * 1e6:.2f} us, planned step "
                     f"{ts * 1e6:.2f} us -> dispatch {(ts - tk) * 1e6:+.2f} us (target "
                     f"<= 0.5); whole plan {tp * 1e6:.2f} us, session.run {tr * 1e6:.2f} us")
        chain = edgedl.InferenceSession(conv_chain(50), num_threads=1)
        for _ in range(3):
            chain.run(None, feed)
        tc, tk = paired([lambda: chain.run(None, feed), lambda: kernel(x, out)], calls=40)
        lines.append(f"50 chained Convs via session.run: {tc / 50 * 1e6:.2f} us a node, "
                     f"kernel alone {tk * 1e6:.2f} us -> {(tc / 50 - tk) * 1e6:+.2f} us a node")
    return "\n".join(lines)


def test_tiny_graph_latency(benchmark):
    pytest.importorskip("onnx")
    x = _x()
    sess = edgedl.InferenceSession(tiny_graph(), num_threads=1)
    benchmark.pedantic(lambda: sess.run(None, {"x": x}), rounds=200, iterations=5,
                       warmup_rounds=5)


def test_planned_conv_step(benchmark):
    pytest.importorskip("onnx")
    _, _, step, _, x, out = _planned_conv()
    benchmark.pedantic(lambda: step(x, None, None, out=out), rounds=200, iterations=20,
                       warmup_rounds=5)


def test_zz_summary(benchmark):
    pytest.importorskip("onnxruntime")
    text = benchmark.pedantic(summary, rounds=1, iterations=1)
    print("\n" + text)


if __name__ == "__main__":
    print(summary())
