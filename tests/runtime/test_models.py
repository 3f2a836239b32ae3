"""The four shared detectors on the shared images, every backend, against onnxruntime:
max |edgedl - ORT| <= 1e-3 * max(1, max |ORT|) on every output (issue 4, section 6).
The tests that do not compare with onnxruntime run without it and without onnx (32-bit ARM)."""
import numpy as np
import pytest

PIL = pytest.importorskip("PIL.Image")

import edgedl  # noqa: E402
from ort_util import ort_session  # noqa: E402

MODELS = ["fastestdet", "ultraface_rfb320", "yunet_n_320", "yolox_nano"]
IMAGES = ["astronaut.png", "chelsea.png", "coffee.png", "grace_hopper.jpg"]


def _rgb(path):
    return np.asarray(PIL.open(path).convert("RGB"))


def _resize(img, w, h):
    return np.asarray(PIL.fromarray(img).resize((w, h), PIL.BILINEAR)).astype(np.float32)


def _letterbox(img, size, pad):
    """Keep-ratio resize into a size x size canvas, image at the top-left."""
    h, w = img.shape[:2]
    r = min(size / h, size / w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    canvas = np.full((size, size, 3), pad, dtype=np.float32)
    canvas[:nh, :nw] = _resize(img, nw, nh)
    return canvas


def preprocess(model, img):
    """As /work/shared/models/README.md says for each model; returns NCHW float32."""
    if model == "fastestdet":
        x = _resize(img, 352, 352)[..., ::-1] / 255.0            # BGR, /255
    elif model == "ultraface_rfb320":
        x = (_resize(img, 320, 240) - 127.0) / 128.0               # RGB
    elif model == "yunet_n_320":
        x = _letterbox(img, 320, 0.0)[..., ::-1]                   # BGR, raw
    else:
        x = _letterbox(img, 416, 114.0)[..., ::-1]                 # BGR, raw, pad 114
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


_ort_cache, _sess_cache = {}, {}


def _ort(shared_dir, model, image):
    key = (model, image)
    if key not in _ort_cache:
        pytest.importorskip("onnxruntime", reason="onnxruntime (the oracle) is not installed")
        onnx = pytest.importorskip("onnx")
        path = shared_dir / "models" / f"{model}.onnx"
        sess = ort_session(onnx.load(str(path)))
        x = preprocess(model, _rgb(shared_dir / "images" / image))
        name = sess.get_inputs()[0].name
        _ort_cache[key] = (x, {o.name: v for o, v in zip(sess.get_outputs(),
                                                         sess.run(None, {name: x}))})
    return _ort_cache[key]


def _session(shared_dir, model, backend):
    key = (model, backend)
    if key not in _sess_cache:
        _sess_cache[key] = edgedl.InferenceSession(str(shared_dir / "models" / f"{model}.onnx"),
                                                   backend=backend)
    return _sess_cache[key]


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("model", MODELS)
def test_model_matches_onnxruntime(shared_dir, model, image, backend):
    x, ref = _ort(shared_dir, model, image)
    sess = _session(shared_dir, model, backend)
    names = [o.name for o in sess.get_outputs()]
    assert set(names) == set(ref)
    got = sess.run(None, {sess.get_inputs()[0].name: x})
    for name, g in zip(names, got):
        r = ref[name]
        assert g.shape == r.shape and g.dtype == r.dtype, name
        err = float(np.abs(g.astype(np.float64) - r).max())
        assert err <= 1e-3 * max(1.0, float(np.abs(r).max())), f"{model} {name}: {err}"


def test_model_api_and_plan_reuse(shared_dir):
    sess = _session(shared_dir, "yunet_n_320", None)
    (inp,) = sess.get_inputs()
    assert inp.name == "input" and inp.shape == [1, 3, 320, 320]
    assert inp.type == "tensor(float)"
    assert [o.name for o in sess.get_outputs()][:3] == ["cls_8", "cls_16", "cls_32"]
    x = preprocess("yunet_n_320", _rgb(shared_dir / "images" / "astronaut.png"))
    a = sess.run(["obj_16", "cls_8"], {"input": x})
    b = sess.run(["obj_16", "cls_8"], {"input": x})      # second run: cached plan
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].shape == (1, 1600, 1)                    # the stride-8 grid: 40 x 40 cells
    a[0][...] = -1                                       # outputs belong to the caller
    np.testing.assert_array_equal(sess.run(["obj_16"], {"input": x})[0], b[0])


def test_fusion_happened(shared_dir):
    """Real exports get BatchNorm folded and activations fused into the convs."""
    nodes = _session(shared_dir, "ultraface_rfb320", None)._graph.nodes
    ops = [n.op_type for n in nodes]
    assert "BatchNormalization" not in ops
    # the Relu after its residual Add goes with the Add into the conv before it
    assert "Relu" not in ops, ops
    assert sum(1 for n in nodes if n.attrs.get("_residual")) == 1
    ops = [n.op_type for n in _session(shared_dir, "yolox_nano", None)._graph.nodes]
    assert "Sigmoid" not in ops and "Mul" not in ops, ops   # SiLU and head sigmoids fused
