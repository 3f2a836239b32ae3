"""edgedl.quantize / `edgedl quantize`: post-training static quantization on edgedl alone.

Fast: two shared models quantized on the four shared images (every third one held back:
chelsea and grace_hopper; a face in the calibration set, one held back), the written QDQ
model loaded by onnxruntime and edgedl (same int8 outputs within one step, >= 99.9% equal),
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
    output too (their names survive edgedl's rewrite: the QLinear op writes them)."""
    import onnx
    p = onnx.load(str(path))
    qs = [n.output[0] for n in p.graph.node if n.op_type == "QuantizeLinear"]
    p.graph.output.extend(onnx.helper.make_empty_tensor_value_info(q) for q in qs)
    return p.SerializeToString(), qs


@pytest.mark.parametrize("model", FAST_MODELS)
def test_written_model_runs_on_onnxruntime_and_edgedl_alike(model, backend, quantized,
                                                            shared_dir):
    ort = pytest.importorskip("onnxruntime")
    import edgedl
    res, path = quantized[model]
    assert res.calibration_images == 2 and res.held_back_images == 2
    name, x = _feed(shared_dir, model)
    data, qs = _with_integer_outputs(path)
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(qs, {name: x})
    got = edgedl.InferenceSession(data, backend=backend).run(qs, {name: x})
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
    """Every Conv written with int8 weights runs as QLinearConv (the others are the ones
    kept in float: max_step_ratio)."""
    import onnx
    import edgedl
    path = quantized[model][1]
    p = onnx.load(str(path))
    prod = {o: n.op_type for n in p.graph.node for o in n.output}
    int8_convs = sum(n.op_type == "Conv" and prod.get(n.input[1]) == "DequantizeLinear"
                     for n in p.graph.node)
    ops = [n.op_type for n in edgedl.InferenceSession(str(path))._graph.nodes]
    assert ops.count("QLinearConv") == int8_convs >= 40


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
                      nodes_to_exclude=["Conv_0"], max_step_ratio=0, holdout=0, quiet=True)
    nodes = edgedl.InferenceSession(str(out))._graph.nodes
    assert [n.name for n in nodes if n.op_type == "Conv"] == ["Conv_0"]


def test_weights_per_channel_symmetric_and_bias_int32(quantized):
    import onnx
    from onnx import numpy_helper
    p = onnx.load(str(quantized["yunet_n_320"][1]))
    inits = {t.name: numpy_helper.to_array(t) for t in p.graph.initializer}
    prod = {o: n for n in p.graph.node for o in n.output}
    conv = next(n for n in p.graph.node if n.op_type == "Conv")
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
    assert not out.exists()


def _first_conv_bias(path):
    import onnx
    from onnx import numpy_helper
    p = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in p.graph.initializer}
    prod = {o: n for n in p.graph.node for o in n.output}
    conv = next(n for n in p.graph.node if n.op_type == "Conv")
    return inits[prod[conv.input[2]].input[0]]


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
    assert _first_conv_bias(plain).tolist() != _first_conv_bias(out).tolist()
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
#: measured recall below 0.9 with the defaults (bias correction on): yolox_nano 24/29 (0.83;
#: 0.83 without it too). The misses are five 0.32-0.44 "birds" on the text image whose
#: objectness falls from ~0.5 to <= 0.05: the 8-bit noise of the stem (the first Conv ->
#: SiLU -> Conv, whose 1x1 Conv amplifies white noise ~14 dB more than the signal on such
#: high-frequency content; all but that pre-activation in float gives back ~0.35-0.48),
#: not a mean shift (2-19% of the error power) nor the output head (floating the last 20
#: activations changes nothing). --max-step-ratio 0.05 reaches 29/29 with 114 of 370
#: activations int8. FastestDet was 7/11 before the bias correction, 11/11 with it.
#: onnxruntime's quantizer on the same images: 8/11 (FastestDet) and 3/29.
_BELOW_TARGET = {"yolox_nano"}


@pytest.mark.skipif(not os.environ.get("EDGEDL_SLOW"), reason="set EDGEDL_SLOW=1 (~1 min)")
@pytest.mark.parametrize("model", ["fastestdet", "ultraface_rfb320", "yunet_n_320",
                                   "yolox_nano"])
def test_recall_on_shared_models_with_sample_images(model, shared_dir, tmp_path, request):
    pytest.importorskip("skimage")
    if model in _BELOW_TARGET:
        request.applymarker(pytest.mark.xfail(reason="recall below 0.9 (see _BELOW_TARGET)",
                                              strict=False))
    res = Q.quantize_static(shared_dir / "models" / f"{model}.onnx", shared_dir / "images",
                            tmp_path / "m.onnx", samples=True, quiet=True)
    print(res.summary())
    assert res.held_back_images == 7 and res.calibration_images == 13
    assert res.recall is not None and res.recall >= 0.9, res.summary()
