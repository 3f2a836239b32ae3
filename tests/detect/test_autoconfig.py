"""Configuration from the model (issue #11): family rules, input, metadata, labels, sources.

Small ONNX graphs built here carry each family's exact output layout (declared shapes) and the
head ops a real export has (the Sigmoid / Concat / Exp / DFL Softmax the rules read); they are
never run — a fake session returns outputs of those shapes where a Detector must run. The four
shared models are recognised from renamed copies.
"""
import json
import os
import shutil
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from edgedl.detect import Detector, autoconfig  # noqa: E402
from edgedl.detect.presets import available_presets, load_preset  # noqa: E402
from edgedl.errors import ModelError, ValidationError  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = ["fastestdet", "ultraface_rfb320", "yunet_n_320", "yolox_nano"]


# ----------------------------------------------------------------------------- builders
class _Graph:
    def __init__(self, c=3):
        self.nodes, self.inits, self.n, self.c = [], [], 0, c

    def name(self, p):
        self.n += 1
        return f"{p}{self.n}"

    def conv(self, x="images", out_ch=4):
        w = self.name("w")
        self.inits.append(helper.make_tensor(w, TensorProto.FLOAT, [out_ch, self.c, 1, 1],
                                             [0.0] * (out_ch * self.c)))
        y = self.name("conv")
        self.nodes.append(helper.make_node("Conv", [x, w], [y]))
        return y

    def op(self, op_type, *inputs, **attrs):
        y = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [y], **attrs))
        return y

    def head(self, kind):
        """A head branch after a conv: 'raw', 'sigmoid', 'exp', 'softmax', 'mul' (a decode's
        arithmetic), 'dfl' (YOLOv8's: softmax, a 1-output-channel conv, then boxes times
        strides beside sigmoid class scores), or a list: a Concat of those branches."""
        if isinstance(kind, list):
            return self.op("Concat", *[self.head(k) for k in kind], axis=1)
        x = self.conv()
        if kind == "raw":
            return x
        if kind == "sigmoid":
            return self.op("Sigmoid", x)
        if kind == "exp":
            return self.op("Exp", x)
        if kind == "softmax":
            return self.op("Softmax", x, axis=1)
        if kind == "mul":
            return self.op("Mul", self.op("Sigmoid", x), x)
        if kind == "dfl":
            d = self.op("Softmax", x, axis=1)
            w = self.name("dflw")
            self.inits.append(helper.make_tensor(w, TensorProto.FLOAT, [1, 4, 1, 1], [0.0] * 4))
            y = self.name("dfl")
            self.nodes.append(helper.make_node("Conv", [d, w], [y]))
            return self.op("Concat", self.op("Mul", y, y), self.op("Sigmoid", self.conv()),
                           axis=1)
        raise ValueError(kind)


def make_model(outputs, input_shape=(1, 3, 64, 64), metadata=None, input_name="images"):
    """outputs: [(name, shape, head kind)] -> serialized ModelProto bytes."""
    g = _Graph(c=input_shape[1] if isinstance(input_shape[1], int) and input_shape[1] <= 4
               else 3)
    outs = []
    for name, shape, kind in outputs:
        y = g.head(kind)
        g.nodes.append(helper.make_node("Reshape", [y, g.name("s")], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))
    m = helper.make_model(helper.make_graph(g.nodes, "g", [x], outs, g.inits),
                          opset_imports=[helper.make_opsetid("", 13)])
    if metadata:
        helper.set_model_props(m, dict(metadata))
    return m.SerializeToString()


def facts_of(model_bytes, name="m.onnx"):
    proto = onnx.load_from_string(model_bytes)
    return autoconfig.model_facts(autoconfig.ProtoIO(proto), proto, name)


# the exact output layouts of each family at a 64 x 64 input (strides 8/16/32[/64])
ULTRA = {"names": "{0: 'cat', 1: 'dog'}", "imgsz": "[64, 64]", "stride": "32",
         "task": "detect"}
LAYOUTS = {
    "fastestdet": [("out", [1, 7, 4, 4], ["sigmoid", "raw", "softmax"])],
    "ssd": [("scores", [1, 100, 3], "softmax"), ("boxes", [1, 100, 4], "exp")],
    "yolox": [("output", [1, 84, 7], ["raw", "sigmoid", "sigmoid"])],
    "yolov5": [("output", [1, 252, 7], "mul")],
    "yolov5_per_stride": [("p8", [1, 3, 8, 8, 7], "raw"), ("p16", [1, 3, 4, 4, 7], "raw"),
                          ("p32", [1, 3, 2, 2, 7], "raw")],
    "yolov5_fastestv2_rows": [("r16", [48, 7], "raw"), ("r32", [12, 7], "raw")],
    "yolov8": [("output0", [1, 6, 84], "dfl")],
    "nanodet": [("output", [1, 85, 34], ["sigmoid", "raw"])],
    "nanodet_m_levels": [(f"out_{s}", [n, 34], ["sigmoid", "raw"])
                         for s, n in ((8, 64), (16, 16), (32, 4))],
    "picodet": [(f"{r}_{s}", [1, n, d], "sigmoid" if r == "cls" else "raw")
                for s, n in ((8, 64), (16, 16), (32, 4), (64, 1))
                for r, d in (("cls", 2), ("reg", 32))],
    "yunet": [(f"{r}_{s}", [1, n, d], "raw") for r, d in (("cls", 1), ("obj", 1),
                                                           ("bbox", 4), ("kps", 10))
              for s, n in ((8, 64), (16, 16), (32, 4))],
    "scrfd": [(f"{r}_{s}", [n * 2, d], "raw") for s, n in ((8, 64), (16, 16), (32, 4))
              for r, d in (("score", 1), ("bbox", 4), ("kps", 10))],
    "centernet": [("heatmap", [1, 1, 16, 16], "sigmoid"), ("scale", [1, 2, 16, 16], "raw"),
                  ("offset", [1, 2, 16, 16], "raw"), ("landmark", [1, 10, 16, 16], "raw")],
    "db": [("prob", [1, 1, 64, 64], "sigmoid")],
    "yolov10": [("output0", [1, 300, 6], "raw")],
    "retinaface": [("loc", [1, 168, 4], "raw"), ("conf", [1, 168, 2], "softmax"),
                   ("landms", [1, 168, 10], "raw")],
    "mtcnn": [("conv2d_4", [1, 27, 27, 4], "raw"), ("softmax", [1, 27, 27, 2], "softmax")],
}
FAMILY_OF = {k: k.split("_")[0] for k in LAYOUTS}
ANCHORS2 = {"anchors": [[12, 18, 37, 49, 52, 132], [115, 73, 119, 199, 242, 238]]}
CLASSES = {"fastestdet": 2, "ssd": 2, "yolox": 2, "yolov5": 2, "yolov5_per_stride": 2,
           "yolov5_fastestv2_rows": 2, "yolov8": 2, "nanodet": 2, "nanodet_m_levels": 2,
           "picodet": 2, "yunet": 1, "scrfd": 1, "centernet": 1, "db": 1, "yolov10": None,
           "retinaface": 1, "mtcnn": 1}


def _model(key, **kw):
    if key == "yolov8":
        kw.setdefault("metadata", ULTRA)
    if key == "mtcnn":
        kw.setdefault("input_shape", (1, 64, 64, 3))
    return make_model(LAYOUTS[key], **kw)


# ----------------------------------------------------------------------------- rules
@pytest.mark.filterwarnings("ignore:the family's default")
@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_each_family_is_recognised_with_a_reason(key):
    f = facts_of(_model(key))
    found = autoconfig.matches(f)
    assert [m.family for m in found] == [FAMILY_OF[key]], [(m.family, m.reason) for m in found]
    m = found[0]
    assert m.reason and m.num_classes == CLASSES[key]
    if key == "db":
        return
    conf = autoconfig.configure(f, overrides=ANCHORS2 if "fastestv2" in key else None)
    assert conf.family == FAMILY_OF[key] and conf.reason == m.reason
    assert (conf.settings["input_width"], conf.settings["input_height"]) == (64, 64)
    assert conf.sources["input_width"] == "model" and conf.sources["layout"] == "model"
    assert conf.settings["layout"] == ("nhwc" if key == "mtcnn" else "nchw")
    if CLASSES[key] is None:           # the class count is unknown: no default names
        assert conf.settings["labels"] is None


@pytest.mark.filterwarnings("ignore:the family's default")
def test_what_the_graph_decodes_is_read():
    ssd = autoconfig.configure(facts_of(_model("ssd")))
    assert ssd.settings["boxes_decoded"] is True and ssd.settings["score_activation"] == "none"
    assert ssd.sources["boxes_decoded"] == "model"
    raw = make_model([("conf", [1, 100, 3], "raw"), ("loc", [1, 100, 4], "raw")])
    m = autoconfig.matches(facts_of(raw))[0]       # (100 rows fit no default priors)
    assert m.settings == {"boxes_decoded": False, "score_activation": "softmax"}
    assert autoconfig.configure(facts_of(_model("yolov5"))).settings["decoded"] is True
    per = autoconfig.configure(facts_of(_model("yolov5_per_stride")))
    assert per.settings["decoded"] is False and per.settings["strides"] == [8, 16, 32]
    assert per.settings["apply_sigmoid"] is True
    cn = autoconfig.configure(facts_of(_model("centernet")))
    assert cn.settings["score_activation"] == "none"
    nano = autoconfig.configure(facts_of(_model("nanodet")))
    assert nano.settings["strides"] == [8, 16, 32, 64]


@pytest.mark.filterwarnings("ignore:the family's default")
def test_transposed_dfl_rows_are_ambiguous_without_ultralytics_metadata():
    # (N, 4 + C) after a DFL softmax: YOLOv8 transposed, or a YOLOv6-style (N, 5 + C) row
    m = make_model([("output0", [1, 84, 7], "dfl")])
    with pytest.raises(ValidationError, match="several families") as e:
        autoconfig.configure(facts_of(m))
    assert "yolox (" in str(e.value) and "yolov8 (" in str(e.value)
    assert "decoded in graph (Mul)" in str(e.value)
    m = make_model([("output0", [1, 84, 7], "dfl")], metadata=ULTRA)
    assert autoconfig.configure(facts_of(m)).family == "yolov8"


def test_prior_count_is_checked_when_configured():
    raw = make_model([("conf", [1, 100, 3], "raw"), ("loc", [1, 100, 4], "raw")])
    with pytest.raises(ModelError, match=r"100 boxes but `min_sizes`.*give the model's"):
        autoconfig.configure(facts_of(raw))
    # 64x64, steps 8/16/32 with 1/1/2 sizes: 64 + 16 + 8 = 88 priors
    ok = make_model([("conf", [1, 88, 3], "raw"), ("loc", [1, 88, 4], "raw")])
    conf = autoconfig.configure(facts_of(ok), overrides={
        "min_sizes": [[16], [32], [64, 96]], "steps": [8, 16, 32]})
    assert conf.settings["boxes_decoded"] is False


def test_yolov5_two_strides_need_anchors():
    f = facts_of(_model("yolov5_fastestv2_rows"))
    with pytest.raises(ValidationError, match=r"2 output strides \[16, 32\].*`anchors`"):
        autoconfig.configure(f)
    conf = autoconfig.configure(f, overrides=ANCHORS2)
    assert conf.settings["strides"] == [16, 32] and conf.sources["anchors"] == "user"


def test_several_fits_is_an_error_naming_them():
    # (1, 84, 7) with no graph to read (a foreign session): yolox, yolov8 (transposed) and
    # nanodet layouts all fit the shape
    class Sess:
        def get_inputs(self):
            return [type("A", (), {"name": "x", "shape": [1, 3, 64, 64], "type": "f"})()]

        def get_outputs(self):
            return [type("A", (), {"name": "y", "shape": [1, 84, 39], "type": "f"})()]

    f = autoconfig.model_facts(Sess(), None, "amb.onnx")
    with pytest.raises(ValidationError, match="fits several families") as e:
        autoconfig.configure(f)
    msg = str(e.value)
    assert "yolox (" in msg and "nanodet (" in msg and "`family`" in msg
    assert autoconfig.configure(f, family="yolox").family == "yolox"
    assert "--family" in autoconfig.cli_message(msg) and "`" not in autoconfig.cli_message(msg)


def test_unknown_layout_asks_for_a_family():
    f = facts_of(make_model([("y", [1, 3, 8, 8], "raw")]))
    with pytest.raises(ValidationError, match="cannot tell the detector family.*`family`"):
        autoconfig.configure(f)


def test_symbolic_size_from_metadata_rows_or_the_user():
    sym = ("N", 3, "H", "W")
    # Ultralytics imgsz fixes it
    conf = autoconfig.configure(facts_of(_model("yolov8", input_shape=sym)))
    assert (conf.settings["input_width"], conf.settings["input_height"]) == (64, 64)
    assert conf.sources["input_width"] == "model"
    # nothing fixes it: ask, naming the setting (the CLI names its flag)
    m = make_model([("scores", [1, "N", 3], "softmax"), ("boxes", [1, "N", 4], "exp")],
                   input_shape=sym)
    with pytest.raises(ValidationError, match="symbolic size") as e:
        autoconfig.configure(facts_of(m))
    assert "--input-size WxH" in autoconfig.cli_message(str(e.value))
    conf = autoconfig.configure(facts_of(m), overrides={"input_width": 96, "input_height": 64})
    assert conf.family == "ssd" and conf.sources["input_width"] == "user"
    # DB text detection sizes each image itself (PaddleOCR's rule), unless a size is given
    db = make_model([("prob", [1, 1, "H2", "W2"], "sigmoid")], input_shape=sym)
    conf = autoconfig.configure(facts_of(db))
    assert conf.family == "db" and conf.per_image_size == (960, 32)
    assert conf.settings["input_width"] is None
    conf = autoconfig.configure(facts_of(db), overrides={"input_width": 96, "input_height": 64})
    assert conf.per_image_size is None


def test_db_input_sized_per_image():
    mb = make_model([("prob", [1, 1, "H2", "W2"], "sigmoid")], input_shape=("N", 3, "H", "W"))
    fed = []

    class Sess(FakeSession):
        def run(self, names, feed):
            x = next(iter(feed.values()))
            fed.append(x.shape)
            return [np.zeros((x.shape[0], 1) + x.shape[2:], np.float32)]

    det = Detector(mb, session=Sess(mb, None))
    assert det.width is None and "per image" in repr(det)
    out = det([np.zeros((400, 600, 3), np.uint8), np.zeros((1000, 2000, 3), np.uint8)])
    assert len(out) == 2
    # PaddleOCR DetResizeForTest (limit 960, "max", Python's round: 12.5 -> 12):
    # 600x400 -> 608x384; 2000x1000 -> 960x480
    assert fed == [(1, 3, 384, 608), (1, 3, 480, 960)]


def test_layout_and_input_from_the_declared_input():
    m = make_model([("output", [1, 64, 7], ["raw", "sigmoid", "sigmoid"])],   # 48+12+4 rows
                   input_shape=(1, 64, 48, 3), input_name="in0")
    conf = autoconfig.configure(facts_of(m))
    s = conf.settings
    assert (s["layout"], s["input_name"], s["input_width"], s["input_height"]) == \
        ("nhwc", "in0", 48, 64)


# ----------------------------------------------------------------------------- metadata, labels
def test_ultralytics_metadata_gives_labels_and_refuses_other_tasks():
    conf = autoconfig.configure(facts_of(_model("yolov8")))
    assert conf.settings["labels"] == ["cat", "dog"] and conf.sources["labels"] == "model"
    assert "Ultralytics" in conf.reason or "DFL" in conf.reason
    pose = dict(ULTRA, task="pose")
    with pytest.raises(ValidationError, match="'pose'"):
        autoconfig.configure(facts_of(_model("yolov8", metadata=pose)))


def test_metadata_is_parsed_never_evaluated(tmp_path):
    marker = tmp_path / "ran"
    evil = {"names": f"__import__('pathlib').Path({str(marker)!r}).touch()", "imgsz": "[64]"}
    assert autoconfig.metadata_labels(evil) == (None, None)     # not a literal: ignored
    assert not marker.exists()
    assert autoconfig.metadata_labels({"character": "a\nb\nc"}) == (["a", "b", "c"],
                                                                     "character")
    assert autoconfig.metadata_labels({"labels": '["x", "y"]'}) == (["x", "y"], "labels")
    assert autoconfig.metadata_labels({"names": "{1: 'a', 0: 'b'}"}) == (["b", "a"], "names")
    assert autoconfig.metadata_labels({}) == (None, None)


def test_labels_never_of_another_length(tmp_path):
    f = facts_of(_model("yolox"))                        # 2 classes, family default coco80
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        conf = autoconfig.configure(f)
    assert conf.settings["labels"] is None                # numbers, not COCO names
    assert any("80 names" in str(x.message) and "2 classes" in str(x.message) for x in w)
    with pytest.raises(ValidationError, match="3 names .* 2 classes"):
        autoconfig.configure(f, overrides={"labels": ["a", "b", "c"]})
    with pytest.raises(ValidationError, match="80 names"):
        autoconfig.configure(f, overrides={"labels": "coco80"})
    txt = tmp_path / "names.txt"
    txt.write_text("left\nright\n")
    conf = autoconfig.configure(f, overrides={"labels": str(txt)})     # as typed
    assert conf.settings["labels"] == ["left", "right"] and conf.sources["labels"] == "user"


def test_preset_labels_file_stays_in_its_folder(tmp_path):
    f = facts_of(_model("yolox"))
    pdir = tmp_path / "presets"
    pdir.mkdir()
    (pdir / "names.txt").write_text("a\nb\n")
    (tmp_path / "secret.txt").write_text("s1\ns2\n")
    ok = pdir / "ok.json"
    ok.write_text(json.dumps({"family": "yolox", "labels": "names.txt"}))
    assert autoconfig.configure(f, str(ok)).settings["labels"] == ["a", "b"]
    for bad in ("../secret.txt", str(tmp_path / "secret.txt")):
        p = pdir / "bad.json"
        p.write_text(json.dumps({"family": "yolox", "labels": bad}))
        with pytest.raises(ValidationError, match="inside the preset's folder"):
            autoconfig.configure(f, str(p))


# ----------------------------------------------------------------------------- layering
@pytest.mark.filterwarnings("ignore:the family's default")
def test_layers_and_sources():
    f = facts_of(_model("yolox"))
    preset = {"family": "yolox", "score_threshold": 0.3, "iou_threshold": 0.5, "labels": None}
    conf = autoconfig.configure(f, preset, overrides={"iou_threshold": 0.6, "strides":
                                                      [8, 16, 32], "input_width": 64})
    src = conf.sources
    assert src["score_threshold"] == "family"            # the preset agrees: no change
    assert conf.settings["iou_threshold"] == 0.6 and src["iou_threshold"] == "user"
    assert src["strides"] == "user" and src["input_width"] == "user"
    assert src["resize"] == "family" and src["decoded"] == "model"
    # family then preset: a preset of another family is a contradiction
    with pytest.raises(ValidationError, match="contradicts"):
        autoconfig.configure(f, preset, family="yolov8")
    with pytest.raises(ValidationError, match="unknown user key 'nope'"):
        autoconfig.configure(f, overrides={"nope": 1})
    # every key has its family default's type (new families' keys too)
    db = facts_of(_model("db"))
    for key, bad, want in [("unclip_ratio", "abc", "a number"), ("dilate", 1, "true or false"),
                           ("min_size", 2.5, "an integer"), ("strides", "8", "a list")]:
        with pytest.raises(ValidationError, match=f"`{key}` must be {want}"):
            autoconfig.configure(db if key != "strides" else f, overrides={key: bad})
    conf = autoconfig.configure(db, overrides={"min_size": 3.0, "mean": 127.5,
                                               "unclip_ratio": np.float32(2.0),
                                               "dilate": np.bool_(True)})
    assert conf.settings["min_size"] == 3 and type(conf.settings["min_size"]) is int
    assert type(conf.settings["unclip_ratio"]) is float and conf.settings["dilate"] is True
    assert conf.settings["mean"] == [127.5] * 3


@pytest.fixture(scope="module")
def renamed(tmp_path_factory, shared_dir):
    d = tmp_path_factory.mktemp("renamed")
    out = {}
    for i, m in enumerate(SHARED):
        out[m] = str(d / f"model_{i}.onnx")
        shutil.copy(shared_dir / "models" / f"{m}.onnx", out[m])
    return out


@pytest.mark.parametrize("model", SHARED)
def test_shared_models_recognised_by_content(model, renamed, shared_dir):
    """Renamed copies: the bundled preset is found by the model's inputs/outputs, and the
    family inferred from the outputs alone agrees with it on every setting but the few the
    preset states otherwise."""
    from edgedl.onnx.graph import read_model
    proto = read_model(renamed[model])
    f = autoconfig.model_facts(autoconfig.ProtoIO(proto), proto, renamed[model])
    conf = autoconfig.configure(f)
    assert conf.preset_name == model
    alone = autoconfig.configure(f, bundled=False)
    preset = load_preset(model)
    assert alone.family == preset["family"]
    differs = {k for k in conf.settings if conf.settings[k] != alone.settings[k]}
    allowed = {"ultraface_rfb320": {"labels", "class_agnostic"},
               "yunet_n_320": {"class_agnostic"}}.get(model, set())
    assert differs <= allowed, differs
    assert {k for k, v in conf.sources.items() if v == "preset"} <= allowed
    # the same family given: the bundled preset still applies; another family: it does not
    assert autoconfig.configure(f, family=preset["family"]).preset_name == model


@pytest.mark.parametrize("model", SHARED)
def test_shared_models_same_detections_without_preset(model, renamed, shared_dir):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(renamed[model], providers=["CPUExecutionProvider"])
    auto = Detector(renamed[model], session=sess)
    ref = Detector(renamed[model], preset=model, session=sess)
    for img in ("astronaut.png", "grace_hopper.jpg"):       # a person, a face in each
        a, b = auto(shared_dir / "images" / img), ref(shared_dir / "images" / img)
        assert len(a) == len(b) > 0
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert a.labels == b.labels and a.class_ids.tolist() == b.class_ids.tolist()


def test_bundled_presets_carry_a_match_block():
    for name in available_presets():
        m = load_preset(name).get("match")
        assert m and m["inputs"] and m["outputs"], name


# ----------------------------------------------------------------------------- Detector
class FakeSession:
    def __init__(self, model_bytes, rng, scale=40.0, nan=False):
        proto = onnx.load_from_string(model_bytes)
        self._io = autoconfig.ProtoIO(proto)
        self.rng, self.scale, self.nan = rng, scale, nan

    def get_inputs(self):
        return self._io.get_inputs()

    def get_outputs(self):
        return self._io.get_outputs()

    def run(self, names, feed):
        x = next(iter(feed.values()))
        outs = []
        for o in self._io.get_outputs():
            shape = [x.shape[0] if i == 0 and len(o.shape) >= 3 else d
                     for i, d in enumerate(o.shape)]
            v = self.rng.standard_normal(shape).astype(np.float32) * self.scale
            if o.name in ("prob", "heatmap", "scores") or o.name.startswith(("cls", "obj")):
                v = 1 / (1 + np.exp(-v))
            if self.nan:
                flat = v.reshape(-1)
                flat[self.rng.integers(0, flat.size, max(1, flat.size // 50))] = np.nan
                flat[self.rng.integers(0, flat.size, max(1, flat.size // 50))] = np.inf
            outs.append(v)
        return outs


def _check_sane(d, w, h):
    b = d.boxes
    assert np.isfinite(b).all() and np.isfinite(d.scores).all()
    assert (b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all()
    assert (b >= 0).all() and (b[:, 0::2] <= w).all() and (b[:, 1::2] <= h).all()
    assert len(d.labels) == len(d)


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_box_sanity_in_every_family(key):
    """Wild outputs (large values: exp() overflows): every box finite, inside the image,
    x1 <= x2; with NaN / inf in the outputs, sane boxes or a clear edgedl error."""
    from edgedl.errors import EdgeDLError
    mb = _model(key)
    over = dict(ANCHORS2 if "fastestv2" in key else {}, score_threshold=0.05)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (50, 90, 3), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = Detector(mb, session=FakeSession(mb, rng), backend="numpy", **over)
        bad = Detector(mb, session=FakeSession(mb, rng, nan=True), backend="numpy", **over)
    found = 0
    for _ in range(3):
        d = det(img)
        _check_sane(d, 90, 50)
        found += len(d)
        try:
            _check_sane(bad(img), 90, 50)
        except EdgeDLError:
            pass
    assert found > 0 or key == "db"


def test_non_float_input_is_refused():
    m = onnx.load_from_string(_model("yolox"))
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    mb = m.SerializeToString()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelError, match=r"takes tensor\(uint8\)"):
            Detector(mb, session=FakeSession(mb, None))


def test_channel_order_per_call():
    mb = _model("yolox")
    seen = []

    class Sess(FakeSession):
        def run(self, names, feed):
            seen.append(next(iter(feed.values())).copy())
            return [np.zeros((1, 84, 7), np.float32)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det = Detector(mb, session=Sess(mb, None))
    rgb = np.random.default_rng(1).integers(0, 255, (40, 30, 3), dtype=np.uint8)
    det(rgb)
    det(np.ascontiguousarray(rgb[:, :, ::-1]), channel_order="bgr")
    np.testing.assert_array_equal(seen[0], seen[1])
    with pytest.raises(ValidationError, match="channel_order"):
        det(rgb, channel_order="bgra")


# ----------------------------------------------------------------------------- reference
def test_families_reference_is_up_to_date():
    """docs/families.md is generated: edgedl detect --help-families > docs/families.md"""
    text = autoconfig.families_reference()
    path = os.path.join(REPO, "docs", "families.md")
    with open(path, encoding="utf-8") as f:
        assert f.read() == text, \
            "docs/families.md is stale: edgedl detect --help-families > docs/families.md"
    for key, fams in autoconfig.all_keys().items():
        assert f"`{key}`" in text
    for fam in autoconfig.decoders.FAMILIES:
        assert f"### {fam}" in text


def test_parse_value_and_size():
    pv = autoconfig.parse_value
    assert pv("strides", "8,16,32") == [8, 16, 32] and pv("mean", "127.5") == 127.5
    assert pv("clip", "false") is False and pv("background_class", "none") is None
    assert pv("anchors", "[[10,13],[30,61]]") == [[10, 13], [30, 61]]
    assert pv("labels", "a,b") == ["a", "b"] and pv("resize", "letterbox") == "letterbox"
    assert autoconfig.parse_size("320x240") == (320, 240) == autoconfig.parse_size("320X240")
    assert autoconfig.parse_size("416") == (416, 416)
    with pytest.raises(ValidationError, match="--input-size"):
        autoconfig.parse_size("big")


def test_real_ppocr_det_needs_no_options():
    """PP-OCRv4 det (rapidocr-onnxruntime's copy; symbolic input): recognised as db, each
    image fed at PaddleOCR's size for it; two drawn lines of text, two boxes around them."""
    import importlib.util
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        pytest.skip("rapidocr-onnxruntime (ships PP-OCRv4 det) is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "models",
                        "ch_PP-OCRv4_det_infer.onnx")
    if not os.path.exists(path):
        pytest.skip(f"no PP-OCR det model at {path}")
    from PIL import Image, ImageDraw, ImageFont
    img = Image.new("RGB", (300, 150), "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=22)
    except TypeError:                             # Pillow < 10.1: no sizes
        font = ImageFont.load_default()
    draw.text((14, 20), "EDGE DETECTION", fill="black", font=font)
    draw.text((40, 90), "text on a Pi", fill="black", font=font)
    det = Detector(path)
    assert det.family == "db" and det.per_image_size == (960, 32)
    assert det.input_size(np.zeros((150, 300, 3), np.uint8)) == (288, 160)
    d = det(np.asarray(img))
    assert d.labels == ["text", "text"]
    top, bottom = sorted(d.boxes.tolist(), key=lambda b: b[1])
    assert top[1] < 30 < top[3] < 60 and top[0] < 20
    assert 80 < bottom[3] and bottom[1] < 100 and 30 < bottom[0] < 50
