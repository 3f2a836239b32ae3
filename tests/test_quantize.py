"""edgedl.quantize / `edgedl quantize`: post-training static quantization on edgedl alone.

Fast: two shared models quantized on the four shared images (every third one held back:
chelsea and grace_hopper; a face in the calibration set, one held back), the written QDQ
model loaded by onnxruntime and edgedl (each int8 tensor computed from the same int8 inputs:
within one step, >= 99.9% equal),
its Convs turned into QLinearConv by edgedl's load-time rewrite, the held-back faces found
again (those clear of the threshold), the bias correction against a NumPy convolution, and
bad arguments. Slow (EDGEDL_SLOW=1): the four shared models calibrated on the shared images
plus scikit-image's sample photos, recall >= 0.9 where it is met (see the xfails).
"""
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("PIL")

from onnx_compat import needs_onnx  # noqa: E402

# the shared models import opsets < 13: quantize lifts them with onnx's version converter,
# which before onnx 1.14 (Debian bookworm's 1.12 on 32-bit ARM) fails on their Softmax
pytestmark = needs_onnx((1, 14), "edgedl quantize lifts opset < 13 models with onnx's "
                        "version converter")

from edgedl.errors import ValidationError  # noqa: E402
from edgedl import quantize as Q  # noqa: E402

#: share of int8 elements equal between onnxruntime and edgedl (all within one step)
EXACT = 0.999
FAST_MODELS = ("yunet_n_320", "ultraface_rfb320")      # ultraface: BatchNormalization folded


@pytest.fixture(scope="module")
def quantized(shared_dir, tmp_path_factory):
    """{model: (QuantizeResult, path)} quantized once for the module."""
    out = tmp_path_factory.mktemp("quantize")
    images = [shared_dir / "images" / f for f in ("chelsea.png", "astronaut.png",
                                                  "coffee.png", "grace_hopper.jpg")]
    res = {}
    for m in FAST_MODELS:
        path = out / f"{m}.int8.onnx"
        res[m] = (Q.quantize_static(shared_dir / "models" / f"{m}.onnx",
                                    images, path, quiet=True), path)
    return res


def _feed(shared_dir, model):
    from edgedl import Detector
    det = Detector(str(shared_dir / "models" / f"{model}.onnx"))
    x, _ = det.preprocess(str(shared_dir / "images" / "astronaut.png"))
    return det.input_name, x


def _with_integer_outputs(path):
    """The model's bytes with every QuantizeLinear output (the int8 tensors) as a graph
    output too (their names survive edgedl's rewrite: the QLinear op writes them); weights
    clipped to 7 bits where onnxruntime's u8 x s8 kernels saturate (ort_util.ort_exact_weights:
    AVX2 without VNNI), so that it computes the model exactly there too."""
    import onnx
    from ort_util import ort_exact_weights
    p = ort_exact_weights(onnx.load(str(path)))
    qs = [n.output[0] for n in p.graph.node if n.op_type == "QuantizeLinear"]
    p.graph.output.extend(onnx.helper.make_empty_tensor_value_info(q) for q in qs)
    return p.SerializeToString(), qs


def _fed_integer_inputs(data, qs, values):
    """The model ``data`` (bytes) with every reader of a QuantizeLinear output ``qs[i]``
    reading a new graph input ``qs[i] + ":fed"`` instead (uint8, fed ``values[i]``): each
    quantized node then runs on the int8 tensors given, not on its runtime's own."""
    import onnx
    from onnx_compat import elem_type
    p = onnx.load_from_string(data)
    fed = {q: q + ":fed" for q in qs}
    for n in p.graph.node:
        for i, v in enumerate(n.input):
            if v in fed and n.op_type != "QuantizeLinear":
                n.input[i] = fed[v]
    p.graph.input.extend(onnx.helper.make_tensor_value_info(fed[q], elem_type(v.dtype),
                                                            list(v.shape))
                         for q, v in zip(qs, values))
    return p.SerializeToString()


@pytest.mark.parametrize("model", FAST_MODELS)
def test_written_model_runs_on_onnxruntime_and_edgedl_alike(model, backend, quantized,
                                                            shared_dir):
    """Every int8 tensor (QuantizeLinear output) of the written model, computed by edgedl
    and by onnxruntime from the same int8 inputs (onnxruntime's, fed to both), is within
    one step, >= 99.9% equal. Not along the whole chain: where the sensitivity search keeps
    convs float ahead of a QuantizeLinear (YuNet's Conv_2 .. Conv_15 on the default backend,
    Conv_0 .. Conv_15 on numpy), the two float32 convolutions differ by ~1e-6 (summation
    order; both within float32 rounding of a float64 evaluation) and put a few values on
    the other side of a rounding tie (e.g. 5 of 409,600 one step apart); the exact integer
    layers downstream carry that step on and compound it (YuNet's 3x3 depthwise Conv_37
    moves its output up to 1.1 steps per input step per tap: 2 steps apart there)."""
    ort = pytest.importorskip("onnxruntime")
    import edgedl
    res, path = quantized[model]
    assert res.calibration_images == 2 and res.held_back_images == 2
    name, x = _feed(shared_dir, model)
    data, qs = _with_integer_outputs(path)
    chain = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(qs, {name: x})
    fed = _fed_integer_inputs(data, qs, chain)
    feed = {name: x, **{q + ":fed": v for q, v in zip(qs, chain)}}
    want = ort.InferenceSession(fed, providers=["CPUExecutionProvider"]).run(qs, feed)
    for q, a, b in zip(qs, chain, want):          # the cut changes nothing onnxruntime does
        np.testing.assert_array_equal(a, b, err_msg=q)
    got = edgedl.InferenceSession(fed, backend=backend).run(qs, feed)
    equal = total = 0
    for q, a, b in zip(qs, want, got):
        assert a.dtype == b.dtype == np.uint8, q
        steps = np.abs(a.astype(np.int32) - b)
        assert steps.max() <= 1, f"{model} {backend} {q}: {steps.max()} steps apart"
        equal, total = equal + np.sum(steps == 0), total + steps.size
    assert equal / total >= EXACT, \
        f"{model} {backend}: {equal / total:.4%} of int8 elements equal"


@pytest.mark.parametrize("model", FAST_MODELS)
def test_convs_run_as_qlinearconv_on_edgedl(model, quantized):
    """Every Conv written with int8 weights runs as QLinearConv (or QLinearConvLookup: with
    a table fused after it; the others are the ones kept in float: max_step_ratio)."""
    import onnx
    import edgedl
    path = quantized[model][1]
    p = onnx.load(str(path))
    prod = {o: n.op_type for n in p.graph.node for o in n.output}
    int8_convs = sum(n.op_type == "Conv" and prod.get(n.input[1]) == "DequantizeLinear"
                     for n in p.graph.node)
    ops = [n.op_type for n in edgedl.InferenceSession(str(path))._graph.nodes]
    assert ops.count("QLinearConv") + ops.count("QLinearConvLookup") == int8_convs >= 40


#: a float detection scoring this far above the threshold must survive 8 bits (closer
#: ones may flip: the 8-bit scores move by a few hundredths, e.g. UltraFace's 0.754 "face"
#: on the held-back cat against its 0.7 threshold)
MARGIN = 0.1


@pytest.mark.parametrize("model", FAST_MODELS)
def test_recall_on_held_back_face(model, quantized, shared_dir):
    from edgedl import Detector
    res, path = quantized[model]
    assert res.float_detections >= 1          # grace_hopper's face
    assert res.recall is not None and abs(res.mean_score_diff) < 0.1, res.summary()
    det = Detector(str(shared_dir / "models" / f"{model}.onnx"))
    qdet = Detector(str(path), family=det.family)
    clear = 0
    for name in ("chelsea.png", "grace_hopper.jpg"):            # the held-back ones
        image = str(shared_dir / "images" / name)
        ref, got = det(image), qdet(image)
        k = int(np.sum(np.asarray(ref.scores) >= det.config["score_threshold"] + MARGIN))
        sure = type(ref)(ref.boxes[:k], ref.scores[:k], ref.class_ids[:k])   # best first
        clear += len(sure)
        assert Q.match_detections(sure, got)[0] == len(sure), (name, ref, got)
    assert clear >= 1, res.summary()


def test_float_fallback_keeps_the_float_model(shared_dir, tmp_path):
    """Every activation "too coarse" (max_step_ratio tiny): no Q/DQ at all, and the ReLUs
    absorbed into quantized outputs at first are back (the model computes the float one)."""
    import onnx
    from edgedl import InferenceSession
    src = shared_dir / "models" / "yunet_n_320.onnx"
    out = tmp_path / "f.onnx"
    res = Q.quantize_static(src, shared_dir / "images", out, max_step_ratio=1e-9, quiet=True)
    assert res.quantized_tensors == 0 and res.recall == 1.0
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "QuantizeLinear" not in ops
    assert ops.count("Relu") == [n.op_type for n in onnx.load(str(src)).graph.node].count("Relu")
    name, x = _feed(shared_dir, "yunet_n_320")
    for a, b in zip(InferenceSession(str(src)).run(None, {name: x}),
                    InferenceSession(str(out)).run(None, {name: x})):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_nodes_to_exclude_stay_float(shared_dir, tmp_path):
    import edgedl
    out = tmp_path / "e.onnx"
    Q.quantize_static(shared_dir / "models" / "yunet_n_320.onnx", shared_dir / "images", out,
                      nodes_to_exclude=["Conv_0"], max_step_ratio=0, max_error_share=0,
                      float_outputs=False, holdout=0, quiet=True)
    nodes = edgedl.InferenceSession(str(out))._graph.nodes
    assert [n.name for n in nodes if n.op_type == "Conv"] == ["Conv_0"]


def test_output_tail_stays_float(quantized):
    """By default the Convs whose outputs reach the graph outputs only through reshapes,
    concats, sigmoids and box arithmetic (YuNet's 12 head Convs) stay float, and no
    QuantizeLinear writes into that tail: scores and boxes are not requantized."""
    import onnx
    from edgedl.quantize import _Model, _output_tail
    p = onnx.load(str(quantized["yunet_n_320"][1]))
    int8 = {n.name for n in _quantized_convs(p)}
    convs = [n.name for n in p.graph.node if n.op_type == "Conv"]
    m = _Model(p)
    tail = _output_tail(m)
    heads = {n.name for n in m.nodes if n.op_type == "Conv" and n.output[0] in tail}
    assert len(heads) == 12 and heads <= set(convs) - int8 and len(int8) >= 40
    prod = {o: n for n in p.graph.node for o in n.output}
    for t in tail:
        assert getattr(prod.get(t), "op_type", None) != "DequantizeLinear", t


def _tail_model(extra_reader):
    """x -> Conv a -> Sigmoid -> Concat(., Reshape(Conv b)) -> y; a also read by a Conv c
    (into a second output) when ``extra_reader``."""
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 2, 4, 1], np.int64), "s")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], "ca"),
             helper.make_node("Sigmoid", ["a"], ["sa"], "sig"),
             helper.make_node("Conv", ["x", "w"], ["b"], "cb"),
             helper.make_node("Reshape", ["b", "s"], ["rb"], "rs"),
             helper.make_node("Concat", ["sa", "rb"], ["y"], "cat", axis=1)]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(helper.make_node("Conv", ["a", "w"], ["z"], "cc"))
        outs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [1, 2, 2, 2])],
                          outs, [w, shape])
    return helper.make_model(g)


@pytest.mark.parametrize("extra_reader", [False, True])
def test_output_tail(extra_reader):
    from edgedl.quantize import _Model, _output_tail
    m = _Model(_tail_model(extra_reader))
    tail = _output_tail(m)
    assert {"y", "sa", "rb", "b"} <= tail and "x" not in tail
    # a tensor also read by a Conv (not a tail op) is not in the tail, nor is what it reads
    assert ("a" in tail) != extra_reader
    m.float_outputs = False
    assert _output_tail(m) == set()


def _quantized_convs(p):
    """The Convs of ModelProto ``p`` written with int8 weights (weight input produced by a
    DequantizeLinear), in graph order: which ones stay float depends on the sensitivity
    search, whose float simulation runs on the default backend."""
    prod = {o: n for n in p.graph.node for o in n.output}
    return [n for n in p.graph.node if n.op_type == "Conv" and
            getattr(prod.get(n.input[1]), "op_type", None) == "DequantizeLinear"]


def test_weights_per_channel_symmetric_and_bias_int32(quantized):
    import onnx
    from onnx import numpy_helper
    p = onnx.load(str(quantized["yunet_n_320"][1]))
    inits = {t.name: numpy_helper.to_array(t) for t in p.graph.initializer}
    prod = {o: n for n in p.graph.node for o in n.output}
    conv = _quantized_convs(p)[0]         # the sensitivity search may keep earlier ones float
    wdq, bdq, xdq = prod[conv.input[1]], prod[conv.input[2]], prod[conv.input[0]]
    w, ws, wz = (inits[v] for v in wdq.input)
    assert w.dtype == np.int8 and np.all(wz == 0) and ws.shape == (w.shape[0],)
    assert np.abs(w).max() == 127 and w.min() >= -127
    b, bs = inits[bdq.input[0]], inits[bdq.input[1]]
    assert b.dtype == np.int32
    np.testing.assert_allclose(bs, inits[xdq.input[1]] * ws, rtol=1e-6)


def test_observers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(200_000).astype(np.float32)
    x[0] = 50.0                                   # one outlier
    mm, pc = Q.MinMax(), Q.Percentile(99.9)
    for part in np.array_split(x, 7):
        mm.update(part)
        pc.update(part)
    assert mm.range() == (float(x.min()), 50.0)
    inf = Q.Percentile()
    inf.update(np.array([1.0, np.inf], np.float32))       # no endless range doubling
    assert inf.hi == np.inf
    lo, hi = pc.range()
    want = np.quantile(x, [0.001, 0.999])
    assert abs(lo - want[0]) < 0.05 and abs(hi - want[1]) < 0.05
    assert Q.activation_params(-1.0, 3.0) == (np.float32(4 / 255), np.uint8(64))
    s, z = Q.activation_params(0.5, 2.0, "int8")      # widened to hold 0: zero at -128
    assert z == np.int8(-128) and s == np.float32(2 / 255)


def test_observer_channel_means():
    rng = np.random.default_rng(1)
    parts = [rng.standard_normal((1, 5, 7, 3)) + np.arange(5)[None, :, None, None]
             for _ in range(3)]
    ob = Q.MinMax()
    for x in parts:
        ob.update(x.astype(np.float32))
    want = np.concatenate(parts).astype(np.float32).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(ob.channel_mean(), want, rtol=1e-5, atol=1e-6)
    flat = Q.MinMax()
    flat.update(np.ones(4, np.float32))
    assert flat.channel_mean() is None


def _conv_valid(x, w, groups):
    """NumPy reference: a stride-1 Conv without padding of x (C, H, W), weights (O, C/g,
    kh, kw), as im2col + one einsum per group."""
    o, cg, kh, kw = w.shape
    h, wd = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    cols = np.stack([x[:, i:i + h, j:j + wd] for i in range(kh) for j in range(kw)], 1)
    out = [np.einsum("okl,klhw->ohw", w[g * (o // groups):(g + 1) * (o // groups)]
                     .reshape(o // groups, cg, kh * kw), cols[g * cg:(g + 1) * cg])
           for g in range(groups)]
    return np.concatenate(out)


@pytest.mark.parametrize("cin, cout, groups", [(6, 4, 1), (6, 4, 2), (5, 5, 5)])
def test_weight_shift_is_the_mean_change_of_the_conv_output(cin, cout, groups):
    """Bias correction: on an input whose channels are constant (their means), the
    rounded weights change every output channel by exactly weight_shift; on a random
    input with those channel means, by it on average."""
    rng = np.random.default_rng(cin + groups)
    w = rng.standard_normal((cout, cin // groups, 3, 3)) * rng.uniform(0.1, 3, (cout, 1, 1, 1))
    q, s = Q.weight_params(w, per_channel=True)
    wq = q * s.astype(np.float64).reshape(-1, 1, 1, 1)
    mean = rng.uniform(-2.0, 5.0, cin)
    shift = Q.weight_shift(w, q, s, mean)
    assert shift.shape == (cout,) and np.abs(shift).max() > 1e-4      # not trivially 0
    const = np.broadcast_to(mean[:, None, None], (cin, 6, 6)).copy()
    diff = _conv_valid(const, wq, groups) - _conv_valid(const, w, groups)
    np.testing.assert_allclose(diff, np.broadcast_to(shift[:, None, None], diff.shape),
                               rtol=1e-9, atol=1e-12)
    noisy = mean[:, None, None] + rng.standard_normal((cin, 200, 200))
    diff = _conv_valid(noisy, wq, groups) - _conv_valid(noisy, w, groups)
    corrected = diff - shift[:, None, None]
    assert np.abs(corrected.mean(axis=(1, 2))).max() < 0.2 * np.abs(shift).max()
    assert Q.weight_shift(w, q, s, None) is None
    assert Q.weight_shift(w, q, s, np.ones(cin + 1)) is None            # counts disagree


def _windows_reference(x, w_shape, groups, stride, pads, dil):
    """NumPy reference: every window of x (C, H, W) of a Conv as columns, per group:
    (groups, C/groups * kh * kw, windows)."""
    _, cg, kh, kw = w_shape
    x = np.pad(x, ((0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    cols = []
    for y in range(0, x.shape[1] - (kh - 1) * dil[0], stride[0]):
        for xx in range(0, x.shape[2] - (kw - 1) * dil[1], stride[1]):
            patch = x[:, y:y + (kh - 1) * dil[0] + 1:dil[0], xx:xx + (kw - 1) * dil[1] + 1:dil[1]]
            cols.append(patch.reshape(groups, cg * kh * kw))
    return np.stack(cols, axis=2)


@pytest.mark.parametrize("groups, stride, pads, dil, auto_pad", [
    (1, (1, 1), (1, 1, 1, 1), (1, 1), None), (2, (2, 1), (0, 2, 1, 0), (1, 2), None),
    (6, (2, 2), None, (1, 1), "SAME_UPPER"), (3, (1, 1), None, (1, 1), "VALID")])
def test_conv_input_gram_is_the_windows_gram(groups, stride, pads, dil, auto_pad):
    """GPTQ's H: the Gram matrix of a Conv's input windows, per group, equals the
    reference im2col's (every window taken on a small map), for strides, asymmetric pads,
    dilations, groups and auto_pad."""
    from edgedl._weight_rounding import ConvInputGram
    rng = np.random.default_rng(groups)
    w_shape = (6, 6 // groups, 3, 3)
    attrs = {"group": groups, "strides": list(stride), "dilations": list(dil)}
    if auto_pad:
        attrs["auto_pad"] = auto_pad
        h_in = 9
        total = max((-(-h_in // stride[0]) - 1) * stride[0] + 3 - h_in, 0)
        ref_pads = (total // 2, 1, total - total // 2, 1) if auto_pad == "SAME_UPPER" \
            else (0, 0, 0, 0)
    else:
        attrs["pads"] = list(pads)
        ref_pads = pads
    x = rng.standard_normal((2, 6, 9, 9)).astype(np.float32)
    gram = ConvInputGram(w_shape, attrs)
    gram.update(x)
    cols = [_windows_reference(im.astype(np.float64), w_shape, groups, stride, ref_pads, dil)
            for im in x]
    ref = sum(np.matmul(c, c.transpose(0, 2, 1)) for c in cols)
    assert gram.windows == sum(c.shape[2] for c in cols)
    np.testing.assert_allclose(gram.gram, ref, rtol=1e-5, atol=1e-4)
    gram.update(x[:, :5])                      # channels that do not fit: nothing added
    np.testing.assert_allclose(gram.gram, ref, rtol=1e-5, atol=1e-4)


def test_conv_grams_keep_to_their_memory_budget(monkeypatch):
    """GPTQ's Gram matrices (groups * K * K values a Conv) stay within TOTAL_GRAM for the
    whole model, the smallest Convs first; a Conv above MAX_GRAM or not 2-D gets none (it
    keeps nearest rounding)."""
    import types
    from onnx import helper
    from edgedl import _weight_rounding as R
    shapes = {"w1": (8, 4, 3, 3), "w2": (8, 16, 3, 3), "w3": (4, 2, 1, 1), "w4": (4, 4, 3),
              "w5": (8, 1, 3, 3)}
    nodes = [helper.make_node("Conv", [f"x{i}", w], [f"y{i}"], group=8 if w == "w5" else 1)
             for i, w in enumerate(shapes)] + [helper.make_node("Relu", ["y0"], ["r"])]
    m = types.SimpleNamespace(inits={w: np.zeros(sh, np.float32) for w, sh in shapes.items()})
    sizes = {"w1": 36 ** 2, "w2": 144 ** 2, "w3": 2 ** 2, "w5": 8 * 9 ** 2}
    monkeypatch.setattr(R, "TOTAL_GRAM", sizes["w3"] + sizes["w5"] + sizes["w1"])
    grams = Q._conv_grams(m, nodes)
    assert sorted(w for _, w in grams) == ["w1", "w3", "w5"]    # w2 past the budget, w4 1-D
    assert grams[("x4", "w5")].gram.shape == (8, 9, 9)
    monkeypatch.setattr(R, "MAX_GRAM", 100)
    assert sorted(w for _, w in Q._conv_grams(m, nodes)) == ["w3"]


def test_gptq_round_lowers_the_output_error_of_correlated_inputs():
    """On correlated inputs GPTQ's rounding gives a smaller output error X (Wq - W) than
    rounding each weight to nearest (same scales); on uncorrelated ones (a diagonal H) it
    is nearest rounding; weights stay in [-127, 127]."""
    from edgedl._weight_rounding import gptq_round
    rng = np.random.default_rng(0)
    cout, cin, groups = 8, 48, 2
    w = rng.standard_normal((cout, cin // groups, 1, 1)) * rng.uniform(0.1, 2, (cout, 1, 1, 1))
    q_near, s = Q.weight_params(w, per_channel=True)
    # neighbouring inputs move together (as neighbouring pixels do), around a mean
    x = np.cumsum(rng.standard_normal((cin, 4000)), axis=0) * 0.3 + 1.5
    xg = x.reshape(groups, cin // groups, -1)
    gram = np.matmul(xg, xg.transpose(0, 2, 1))
    q = gptq_round(w, s, gram)
    assert q.dtype == np.int8 and q.shape == w.shape and np.abs(q.astype(int)).max() <= 127

    def out_error(qw):
        d = (qw * s.reshape(-1, 1, 1, 1) - w).reshape(groups, cout // groups, -1)
        return float(np.sum(np.matmul(d, xg) ** 2))
    assert out_error(q) < 0.5 * out_error(q_near)
    diagonal = np.einsum("gij,ij->gij", gram, np.eye(cin // groups))
    np.testing.assert_array_equal(gptq_round(w, s, diagonal), q_near)
    dead = gram.copy()
    dead[:, 0, :] = dead[:, :, 0] = 0.0                   # an input that never moved
    assert np.array_equal(gptq_round(w, s, dead)[:, 0], q_near[:, 0])


def _chain_model():
    """x -> Relu -> a -> Mul 3 -> b -> Add 1 -> c -> Mul 0.5 -> y, and its NumPy twin
    (``quant``: {tensor: (scale, zero)} fake-quantized on the way)."""
    import onnx
    from onnx import helper, numpy_helper, TensorProto
    consts = [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in (("three", 3.0), ("one", 1.0), ("half", 0.5))]
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Mul", ["a", "three"], ["b"]),
         helper.make_node("Add", ["b", "one"], ["c"]), helper.make_node("Mul", ["c", "half"],
                                                                        ["y"])],
        "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], consts)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8

    def numpy_twin(x, quant):
        def fq(name, v):
            if name not in quant:
                return v
            s, z = (np.float64(p) for p in quant[name])
            return (np.clip(np.rint(v / s) + z, 0, 255) - z) * s
        a = fq("a", np.maximum(x, 0.0))
        b = fq("b", a * 3.0)
        c = fq("c", b + 1.0)
        return c * 0.5
    onnx.checker.check_model(proto)
    return proto, numpy_twin


class _FakeDetector:
    input_name = "x"

    def preprocess(self, image):
        return image, None


def _chain_params(coarse):
    """uint8 parameters of a, b, c over their ranges; those in ``coarse`` 40x coarser."""
    hi = {"a": 4.0, "b": 12.0, "c": 13.0}
    return {t: (np.float32(h / 255 * (40 if t in coarse else 1)), np.uint8(0))
            for t, h in hi.items()}


def test_fake_quantized_model_matches_numpy():
    from edgedl import InferenceSession
    proto, twin = _chain_model()
    params = _chain_params({"b"})
    share = {t: t for t in params}
    x = np.random.default_rng(3).standard_normal((1, 4, 8, 8)).astype(np.float32)
    for roots in ({"a", "b", "c"}, {"b"}, set()):
        fq = Q._fake_quantized(proto, share, params, roots)
        got = InferenceSession(fq.SerializeToString()).run(None, {"x": x})[0]
        want = twin(x.astype(np.float64), {t: params[t] for t in roots})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("coarse", [set(), {"a"}, {"a", "c"}])
def test_sensitivity_search_finds_the_dominant_activations(coarse, monkeypatch):
    """The activations found are those whose noise alone makes more than the share of the
    output error of all of them (NumPy twin), searched while that error exceeds 1%."""
    monkeypatch.setattr(Q, "_load", lambda name, image: image)
    proto, twin = _chain_model()
    params = _chain_params(coarse)
    share = {t: t for t in params}
    rng = np.random.default_rng(4)
    images = [(f"x{i}", rng.standard_normal((1, 4, 8, 8)).astype(np.float32))
              for i in range(3)]

    def error(roots):
        out = []
        for _, x in images:
            ref = twin(x.astype(np.float64), {})
            got = twin(x.astype(np.float64), {t: params[t] for t in roots})
            out.append(np.square(got - ref).sum() / np.square(ref).sum())
        return float(np.mean(out))
    total = error(share)
    want = sorted(t for t in share if total > Q._ENOUGH_ERROR and error({t}) > 0.1 * total)
    assert want == sorted(coarse)                       # the case is what it says
    left = set(share) - set(want)
    assert error(left) <= Q._ENOUGH_ERROR               # one round finds them all
    found = Q._sensitive(proto, share, params, _FakeDetector(), images, None, 0.1)
    assert sorted(found) == want


def test_split_holdout():
    calib, held = Q.split_holdout(list(range(7)), 1 / 3)
    assert held == [0, 3, 6] and calib == [1, 2, 4, 5]
    assert Q.split_holdout([1, 2], 0) == ([1, 2], [])


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments(shared_dir, tmp_path):
    model = shared_dir / "models" / "yunet_n_320.onnx"
    out = tmp_path / "o.onnx"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match="holds no images"):
        Q.quantize_static(model, tmp_path / "empty", out)
    with pytest.raises(FileNotFoundError, match="no such file"):
        Q.quantize_static(model, tmp_path / "missing", out)
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(ValidationError, match="notes.txt cannot be read as an image"):
        Q.quantize_static(model, [notes], out, holdout=0, quiet=True)
    fake = tmp_path / "imgs"
    fake.mkdir()
    shutil.copy(shared_dir / "images" / "astronaut.png", fake)
    (fake / "broken.jpg").write_bytes(b"\xff\xd8 no jpeg")
    with pytest.raises(ValidationError, match="broken.jpg cannot be read"):
        Q.quantize_static(model, fake, out, holdout=0, quiet=True)
    with pytest.raises(ValidationError, match="observer must be one of minmax, percentile"):
        Q.quantize_static(model, shared_dir / "images", out, observer="kl")
    with pytest.raises(ValidationError, match="activation_type"):
        Q.quantize_static(model, shared_dir / "images", out, activation_type="int16")
    with pytest.raises(ValidationError, match="percentile must be in"):
        Q.quantize_static(model, shared_dir / "images", out, observer="percentile",
                          percentile=5)
    with pytest.raises(ValidationError, match="holdout"):
        Q.quantize_static(model, shared_dir / "images", out, holdout=1.5)
    with pytest.raises(ValidationError, match="max_error_share"):
        Q.quantize_static(model, shared_dir / "images", out, max_error_share=1.0)
    with pytest.raises(ValidationError, match="weight_rounding must be one of gptq, nearest"):
        Q.quantize_static(model, shared_dir / "images", out, weight_rounding="adaround")
    assert not out.exists()


def _quantized_conv_constants(path, index):
    """{Conv name: its quantized input ``index`` (1: int8 weights, 2: int32 bias)} for the
    Convs written with int8 weights."""
    import onnx
    from onnx import numpy_helper
    p = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in p.graph.initializer}
    prod = {o: n for n in p.graph.node for o in n.output}
    return {n.name: inits[prod[n.input[index]].input[0]] for n in _quantized_convs(p)}


def test_cli(shared_dir, tmp_path, capsys):
    from edgedl.cli import main
    model = str(shared_dir / "models" / "yunet_n_320.onnx")
    out = tmp_path / "y.int8.onnx"
    images = [str(shared_dir / "images" / f) for f in ("chelsea.png", "astronaut.png",
                                                        "coffee.png", "grace_hopper.jpg")]
    args = [a for im in images for a in ("--calib", im)]
    assert main(["quantize", model, *args, "-o", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "recall 1.000" in text and "2 held-back images" in text
    plain = tmp_path / "plain.onnx"
    assert main(["quantize", model, *args, "-o", str(plain), "-q", "--no-bias-correction"]) == 0
    capsys.readouterr()
    plain_b, out_b = _quantized_conv_constants(plain, 2), _quantized_conv_constants(out, 2)
    first = next(c for c in out_b if c in plain_b)     # the first Conv int8 in both
    assert plain_b[first].tolist() != out_b[first].tolist()
    near = tmp_path / "near.onnx"
    assert main(["quantize", model, *args, "-o", str(near), "-q", "--weight-rounding",
                 "nearest"]) == 0
    capsys.readouterr()
    near_w, out_w = _quantized_conv_constants(near, 1), _quantized_conv_constants(out, 1)
    shared = [c for c in out_w if c in near_w]
    assert shared and any(near_w[c].tolist() != out_w[c].tolist() for c in shared)
    (tmp_path / "empty").mkdir()
    assert main(["quantize", model, "--calib", str(tmp_path / "empty"), "-o", str(out)]) == 1
    assert "holds no images" in capsys.readouterr().err
    assert main(["quantize", model, "--calib", str(tmp_path), "-o", str(out),
                 "--observer", "kl"]) == 2
    assert "--observer: invalid choice" in capsys.readouterr().err
    assert main(["quantize", str(tmp_path / "nope.onnx"), "--calib", str(tmp_path),
                 "-o", str(out)]) == 2
    assert "model not found" in capsys.readouterr().err


# ----------------------------------------------------------------------------- slow
#: measured on 2026-12-04 with the defaults (GPTQ weight rounding, bias correction,
#: sensitivity search, float output tail): fastestdet 10/11 (0.909; its miss is a float
#: score of 0.656 against the 0.65 threshold, 9/11 with nearest rounding), yolox_nano 27/29,
#: ultraface_rfb320 4/4, yunet_n_320 2/2. The held-back set is small (7 images): one box is
#: 3-9 points of recall, and the figures move with the float kernels' rounding (the
#: calibration ranges come from edgedl's own float run).
@pytest.mark.skipif(not os.environ.get("EDGEDL_SLOW"), reason="set EDGEDL_SLOW=1 (~1 min)")
@pytest.mark.parametrize("model", ["fastestdet", "ultraface_rfb320", "yunet_n_320",
                                   "yolox_nano"])
def test_recall_on_shared_models_with_sample_images(model, shared_dir, tmp_path):
    pytest.importorskip("skimage")
    res = Q.quantize_static(shared_dir / "models" / f"{model}.onnx", shared_dir / "images",
                            tmp_path / "m.onnx", samples=True, quiet=True)
    print(res.summary())
    assert res.held_back_images == 7 and res.calibration_images == 13
    assert res.recall is not None and res.recall >= 0.9, res.summary()
