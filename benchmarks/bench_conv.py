"""conv2d on shapes typical of small detectors, every backend vs onnxruntime, same run;
also conv_transpose2d and resize2d (the FPN / upsampling ops of the same detectors), and the
1x1 -> depthwise 3x3 (-> 2x2 max pool) chains of YuNet-style units, run as one banded kernel
(pointwise_depthwise_plan) against the same steps one after another and onnxruntime.

Run: pytest benchmarks/bench_conv.py --benchmark-only [-k dw3]

One thread everywhere: edgedl.set_num_threads(1), onnxruntime intra_op_num_threads=1, and
OpenBLAS (numpy's GEMM, used by the numba and NumPy backends' dense convs; the Cython one
has its own float32 GEMM) limited to one thread through OPENBLAS_NUM_THREADS, set below
before numpy is imported if not already set.
The closing table gives medians, GFLOP/s (2 * MACs / median) and each runtime's time
relative to onnxruntime (median / median, and min / min in brackets: the machine is shared
and noisy). The physical limit here: 2 AVX-512 FMAs per cycle = 64 FLOP/cycle; a loop of 16
independent zmm FMA chains measures ~239 GFLOP/s on one core (~3.7 GHz under load; OpenBLAS's
sgemm reaches ~150 on 512^3, onnxruntime's convs 160-200, edgedl's conv GEMM alone, hot,
175-200). Depthwise convs are bandwidth-bound (9 MACs per value read): compare them with a
copy of the input, not with the FLOP peak. The "r50" / "vgg" cases are the deep convs of the
classic CNNs (ResNet-50, VGG-19: K = 9 * C up to 4608), where the GEMM runs in K blocks.
"""
import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import edgedl  # noqa: E402
from edgedl._config import BACKEND_ORDER, why_unavailable  # noqa: E402
from edgedl.kernels.conv import (conv2d, conv2d_plan, conv_output_shape,  # noqa: E402
                                 pointwise_depthwise_plan)
from _common import show_now, single_thread

# name -> (C, H, W, M, k, stride, group, activation)
SHAPES = {
    "1x1 64->64 @80": (64, 80, 80, 64, 1, 1, 1, "relu"),
    "1x1 16->16 @160": (16, 160, 160, 16, 1, 1, 1, "relu"),
    "3x3 12->16 @208": (12, 208, 208, 16, 3, 1, 1, "relu"),
    "3x3 3->16 s2 @352": (3, 352, 352, 16, 3, 2, 1, "relu"),
    "dw3 s1 64ch @80": (64, 80, 80, 64, 3, 1, 64, "relu"),
    "dw3 s2 64ch @80": (64, 80, 80, 64, 3, 2, 64, "relu"),
    "dw3 s1 128ch @40": (128, 40, 40, 128, 3, 1, 128, "relu"),
    "dw3 s2 128ch @40": (128, 40, 40, 128, 3, 2, 128, "relu"),
    "dw3 s1 64ch @26 silu": (64, 26, 26, 64, 3, 1, 64, "silu"),
    "dw3 s2 16ch @208 silu": (16, 208, 208, 16, 3, 2, 16, "silu"),
    "dw5 s1 64ch @80": (64, 80, 80, 64, 5, 1, 64, "relu"),
    "dw5 s2 128ch @40": (128, 40, 40, 128, 5, 2, 128, "relu"),
    "3x3 32->32 @40": (32, 40, 40, 32, 3, 1, 1, "relu"),
    "3x3 64->64 @80": (64, 80, 80, 64, 3, 1, 1, "relu"),
    "r50 3x3 64@56": (64, 56, 56, 64, 3, 1, 1, "relu"),
    "r50 3x3 256@14": (256, 14, 14, 256, 3, 1, 1, "relu"),
    "r50 3x3 512@7": (512, 7, 7, 512, 3, 1, 1, "relu"),
    "r50 7x7 s2 3->64 @224": (3, 224, 224, 64, 7, 2, 1, "relu"),
    "incv2 3x3 192->320 @7": (192, 7, 7, 320, 3, 1, 1, "relu"),
    "r50 1x1 1024->256@14": (1024, 14, 14, 256, 1, 1, 1, "relu"),
    "vgg 3x3 256@56": (256, 56, 56, 256, 3, 1, 1, "relu"),
}
# name -> (C, H, W, M, k, stride, pad): ConvTranspose, weights (C, M, k, k)
TRANSPOSE = {
    "convT 2x2 s2 64->64 @40": (64, 40, 40, 64, 2, 2, 0),
    "convT 4x4 s2 32->16 @40": (32, 40, 40, 16, 4, 2, 1),
}
# name -> (C, H, W, OH, OW, mode, coordinate_transformation_mode)
RESIZE = {
    "resize nearest 2x 128ch @40": (128, 40, 40, 80, 80, "nearest", "asymmetric"),
    "resize linear 2x 64ch @40": (64, 40, 40, 80, 80, "linear", "half_pixel"),
}
# name -> (C, H, W, M, pool): 1x1 C -> M, ReLU-free; depthwise 3x3 with ReLU; maybe 2x2 max
CHAINS = {
    "1x1->dw 64->64 @80": (64, 80, 80, 64, False),
    "1x1->dw->pool 64->64 @80": (64, 80, 80, 64, True),
    "1x1->dw->pool 16->16 @160": (16, 160, 160, 16, True),
    "1x1->dw 16->64 @80": (16, 80, 80, 64, False),
    "1x1->dw 64->64 @40": (64, 40, 40, 64, False),
}
CHAIN_RUNTIMES = ("fused", "steps", "onnxruntime")
#: inputs / outputs cycled through, as a model's buffers are: each call finds its data out of
#: L2, as in a model (one buffer hot in cache made the chains look 20-30% faster)
_CYCLE = 4
RUNTIMES = list(BACKEND_ORDER) + ["onnxruntime"]
RESULTS = {}          # (case, runtime) -> median seconds
MINIMA = {}           # (case, runtime) -> fastest round
# One call per round, many rounds: on the shared, loaded 2-core machine a multi-call round
# is often preempted; medians of single calls, and the minima, are more stable.
_ROUNDS = 25


@pytest.fixture(scope="module", autouse=True)
def one_thread(request):
    with single_thread():
        yield
    if RESULTS:
        show_now(request.config, _table)


def _case(name):
    c, h, w, m, k, s, g, act = SHAPES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((m, c // g, k, k)) * 0.1).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    pads = (k // 2,) * 4
    return x, wt, b, (s, s), pads, g, act


def _flops(name):
    c, h, w, m, k, s, g, _ = SHAPES[name]
    oh, ow = conv_output_shape((h, w), (k, k), (s, s), (k // 2,) * 4)
    return 2.0 * m * oh * ow * (c // g) * k * k


def _ort_graph_session(nodes, x_info, inits, opset=13):
    """A one-thread onnxruntime session of a graph of ``nodes`` reading ``x_info`` (a value
    info) and the initializers ``inits`` (name, array), writing "y"."""
    ort = pytest.importorskip("onnxruntime")
    import onnx
    from onnx import helper
    graph = helper.make_graph(nodes, "g", [x_info], [helper.make_empty_tensor_value_info("y")],
                              initializer=[onnx.numpy_helper.from_array(v, n)
                                           for n, v in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def _x_info(x):
    from onnx import helper
    return helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype),
                                         list(x.shape))


def _ort_runner(x, wt, b, strides, pads, group, act):
    from onnx import helper
    node_out = "y" if act is None else "c"
    nodes = [helper.make_node("Conv", ["x", "w", "b"], [node_out], strides=list(strides),
                              pads=list(pads), group=group)]
    if act == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))   # ORT fuses Conv+Relu
    sess = _ort_graph_session(nodes, _x_info(x), [("w", wt), ("b", b)])
    return lambda: sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", list(SHAPES))
def test_conv2d(benchmark, name, runtime):
    x, wt, b, strides, pads, group, act = _case(name)
    if runtime == "onnxruntime":
        fn = _ort_runner(x, wt, b, strides, pads, group, act)
    else:
        if why_unavailable(runtime):
            pytest.skip(why_unavailable(runtime))
        out = np.empty((1, wt.shape[0]) + conv_output_shape(x.shape[2:], wt.shape[2:],
                                                             strides, pads), np.float32)
        # planned, as a model runs it (conv2d lays out the weights on every call: 9 MB of
        # them for the 512-channel 3x3)
        run = conv2d_plan(x.shape, wt, b, strides, pads, group=group, activation=act,
                          backend=runtime)

        def fn():
            return run(x, out)
    ref = fn()   # JIT / session warm-up outside the timing, and a correctness check
    want = conv2d(x, wt, b, strides, pads, group=group, activation=act, backend="numpy")
    assert np.abs(ref - want).max() <= 1e-3 * max(1.0, np.abs(want).max())
    benchmark.group = name
    benchmark.pedantic(fn, rounds=_ROUNDS if runtime != "numpy" else 5, iterations=1,
                       warmup_rounds=1)
    RESULTS[(name, runtime)] = benchmark.stats.stats.median
    MINIMA[(name, runtime)] = benchmark.stats.stats.min


def _ort_session(op, inputs, attrs, opset=13):
    from onnx import helper
    # weights and sizes as initializers, as in a real model
    node = helper.make_node(op, [n for n, _ in inputs], ["y"], **attrs)
    x = inputs[0][1]
    sess = _ort_graph_session([node], _x_info(x), [(n, a) for n, a in inputs if n != "x"],
                              opset)
    return lambda: sess.run(None, {"x": x})[0]


def _time(benchmark, name, runtime, fn, want):
    got = fn()
    assert np.abs(got - want).max() <= 1e-3 * max(1.0, np.abs(want).max())
    benchmark.group = name
    benchmark.pedantic(fn, rounds=_ROUNDS if runtime != "numpy" else 5, iterations=1,
                       warmup_rounds=1)
    RESULTS[(name, runtime)] = benchmark.stats.stats.median
    MINIMA[(name, runtime)] = benchmark.stats.stats.min


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", list(TRANSPOSE))
def test_conv_transpose2d(benchmark, name, runtime):
    from edgedl.kernels.conv import conv_transpose2d
    c, h, w, m, k, s, p = TRANSPOSE[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((c, m, k, k)) * 0.1).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    want = conv_transpose2d(x, wt, b, (s, s), (p,) * 4, backend="numpy")
    if runtime == "onnxruntime":
        fn = _ort_session("ConvTranspose", [("x", x), ("w", wt), ("b", b)],
                          dict(strides=[s, s], pads=[p] * 4))
    else:
        if why_unavailable(runtime):
            pytest.skip(why_unavailable(runtime))
        out = np.empty_like(want)

        def fn():
            return conv_transpose2d(x, wt, b, (s, s), (p,) * 4, out=out, backend=runtime)
    _time(benchmark, name, runtime, fn, want)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", list(RESIZE))
def test_resize2d(benchmark, name, runtime):
    from edgedl.kernels.resize import resize2d
    c, h, w, oh, ow, mode, ct = RESIZE[name]
    x = np.random.default_rng(0).standard_normal((1, c, h, w)).astype(np.float32)
    nm = "floor" if ct == "asymmetric" else "round_prefer_floor"
    want = resize2d(x, (oh, ow), mode, ct, nm, backend="numpy")
    if runtime == "onnxruntime":
        fn = _ort_session("Resize", [("x", x), ("roi", np.zeros(0, np.float32)),
                                     ("scales", np.zeros(0, np.float32)),
                                     ("sizes", np.array([1, c, oh, ow], np.int64))],
                          dict(mode=mode, coordinate_transformation_mode=ct, nearest_mode=nm))
    else:
        if why_unavailable(runtime):
            pytest.skip(why_unavailable(runtime))
        out = np.empty_like(want)

        def fn():
            return resize2d(x, (oh, ow), mode, ct, nm, out=out, backend=runtime)
    _time(benchmark, name, runtime, fn, want)


def _chain_case(name):
    c, h, w, m, pool = CHAINS[name]
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1, c, h, w)).astype(np.float32) for _ in range(_CYCLE)]
    w1 = (rng.standard_normal((m, c, 1, 1)) * 0.2).astype(np.float32)
    w2 = (rng.standard_normal((m, 1, 3, 3)) * 0.3).astype(np.float32)
    return xs, w1, rng.standard_normal(m).astype(np.float32), w2, \
        rng.standard_normal(m).astype(np.float32), pool


def _chain_ort(xs, w1, b1, w2, b2, pool):
    from onnx import helper
    m = w1.shape[0]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"]),
             helper.make_node("Conv", ["a", "w2", "b2"], ["d"], pads=[1, 1, 1, 1], group=m),
             helper.make_node("Relu", ["d"], ["r" if pool else "y"])]
    if pool:
        nodes.append(helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2],
                                      strides=[2, 2]))
    sess = _ort_graph_session(nodes, _x_info(xs[0]),
                              [("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)])
    k = [0]

    def fn():
        k[0] += 1
        return sess.run(None, {"x": xs[k[0] % _CYCLE]})[0]
    return fn


def _chain_edgedl(runtime, xs, w1, b1, w2, b2, pool):
    if why_unavailable("cython"):
        pytest.skip(why_unavailable("cython"))
    acts, k = (None, "relu"), [0]
    run = pointwise_depthwise_plan(xs[0].shape, w1, b1, w2, b2, acts, ((), ()), pool,
                                   backend="cython")
    outs = [np.empty(run.out_shape, np.float32) for _ in range(_CYCLE)]
    if runtime == "fused":
        assert run._fast is not None

        def fn():
            k[0] += 1
            return run(xs[k[0] % _CYCLE], outs[k[0] % _CYCLE])
        return fn
    from edgedl.kernels.pooling import pool2d_plan     # the planned steps, own buffers
    pw = conv2d_plan(xs[0].shape, w1, b1, backend="cython")
    dw = conv2d_plan(pw.out_shape, w2, b2, pads=(1, 1, 1, 1), group=w2.shape[0],
                     activation="relu", backend="cython")
    mp = pool2d_plan(dw.out_shape, "max", (2, 2), (2, 2), backend="cython")
    mids = [(np.empty(pw.out_shape, np.float32), np.empty(dw.out_shape, np.float32))
            for _ in range(_CYCLE)]

    def steps():
        k[0] += 1
        i = k[0] % _CYCLE
        t = dw(pw(xs[i], mids[i][0]), mids[i][1] if pool else outs[i])
        return mp(t, outs[i]) if pool else t
    return steps


@pytest.mark.parametrize("runtime", CHAIN_RUNTIMES)
@pytest.mark.parametrize("name", list(CHAINS))
def test_pointwise_depthwise_chain(benchmark, name, runtime):
    xs, w1, b1, w2, b2, pool = _chain_case(name)
    fn = (_chain_ort(xs, w1, b1, w2, b2, pool) if runtime == "onnxruntime" else
          _chain_edgedl(runtime, xs, w1, b1, w2, b2, pool))
    for _ in range(_CYCLE):
        got = fn()           # warm-up; the last one computed xs[0]'s answer
    want = conv2d(conv2d(xs[0], w1, b1, backend="numpy"), w2, b2, pads=(1, 1, 1, 1),
                  group=w2.shape[0], activation="relu", backend="numpy")
    if pool:
        from edgedl.kernels.pooling import max_pool2d
        want = max_pool2d(want, (2, 2), (2, 2), backend="numpy")
    assert np.abs(got - want).max() <= 1e-3 * max(1.0, np.abs(want).max())
    benchmark.group = name
    benchmark.pedantic(fn, rounds=_ROUNDS * 4, iterations=1, warmup_rounds=_CYCLE)
    RESULTS[(name, runtime)] = benchmark.stats.stats.median
    MINIMA[(name, runtime)] = benchmark.stats.stats.min


def _chain_table(w):
    if not any((name, rt) in RESULTS for name in CHAINS for rt in CHAIN_RUNTIMES):
        return
    w("")
    w("1x1 -> depthwise 3x3 (-> 2x2 max pool), 1 thread, inputs cycled out of L2: median ms "
      "and vs onnxruntime (median ratio [min ratio]); fused / steps: the banded kernel over "
      "the separate planned steps")
    w(f"{'case':28s} " + " ".join(f"{rt:>24s}" for rt in CHAIN_RUNTIMES) + "  fused/steps")
    for name in CHAINS:
        ort, ort_min = RESULTS.get((name, "onnxruntime")), MINIMA.get((name, "onnxruntime"))
        cells = []
        for rt in CHAIN_RUNTIMES:
            t = RESULTS.get((name, rt))
            ratio = f"{t / ort:5.2f}x [{MINIMA[(name, rt)] / ort_min:4.2f}]" if t and ort \
                else ""
            cells.append(f"{t * 1e3:8.3f} {ratio:>15s}" if t else f"{'-':>24s}")
        f, st = RESULTS.get((name, "fused")), RESULTS.get((name, "steps"))
        w(f"{name:28s} " + " ".join(cells) + (f"  {f / st:10.2f}" if f and st else ""))


def _table(w):
    _chain_table(w)
    w("")
    w("1 thread, float32 (conv2d with fused bias+relu): median ms, GFLOP/s for convolutions, "
      "time vs onnxruntime (median ratio [min ratio])")
    w(f"{'case':28s} " + " ".join(f"{rt:>31s}" for rt in RUNTIMES))
    for name in list(SHAPES) + list(TRANSPOSE) + list(RESIZE):
        ort, ort_min = RESULTS.get((name, "onnxruntime")), MINIMA.get((name, "onnxruntime"))
        cells = []
        for rt in RUNTIMES:
            t = RESULTS.get((name, rt))
            if t is None:
                cells.append(f"{'-':>31s}")
                continue
            ratio = f"{t / ort:5.2f}x [{MINIMA[(name, rt)] / ort_min:4.2f}]" if ort else ""
            gf = f"{_flops(name) / t / 1e9:6.1f}GF" if name in SHAPES else " " * 8
            cells.append(f"{t * 1e3:8.3f} {gf} {ratio:>14s}")
        w(f"{name:28s} " + " ".join(cells))
