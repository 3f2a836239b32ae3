"""Videos and cameras through PyAV (``edgedl[video]``): every frame or every N-th, an
annotated video out, a damaged file reported and skipped, a clear message without PyAV."""
import json
import os
import sys

import importlib.util

import numpy as np
import pytest

from conftest import json_records, run_cli

from edgedl import cli
from edgedl.detect import Detector
from edgedl.detect import video

av = pytest.importorskip("av", reason="PyAV (edgedl[video]) is not installed")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnx") is None,
                                reason="the onnx package is not installed")


run, records = run_cli, json_records


@pytest.fixture(scope="module")
def clip(tmp_path_factory, shared_dir):
    """6 frames at 5 fps: the cat three times, then Grace Hopper three times (320x240)."""
    from PIL import Image
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with video.VideoWriter(str(path), fps=5) as w:
        for name in ("chelsea.png", "grace_hopper.jpg"):
            im = Image.open(shared_dir / "images" / name).convert("RGB").resize((320, 240))
            for _ in range(3):
                w.write(np.asarray(im))
    return path


def test_read_frames_and_stride(clip):
    got = [(k, f.shape, fps) for k, f, fps in video.read_frames(str(clip))]
    assert got == [(k, (240, 320, 3), 5.0) for k in range(6)]
    assert [k for k, _, _ in video.read_frames(str(clip), stride=4)] == [0, 4]
    assert video.frame_count(str(clip)) == 6


def test_detect_on_video_frames(capsys, clip, tmp_path):
    rc, out, err = run(capsys, "detect", clip, "--json", "--stride", "2", "--out", tmp_path)
    assert rc == 0, err
    recs = records(out)
    assert [(r["source"], r["frame"]) for r in recs] == [(str(clip), k) for k in (0, 2, 4)]
    # the same detections as detecting the decoded frames directly
    det = Detector(cli.DEMO_MODEL)
    frames = {k: f for k, f, _ in video.read_frames(str(clip))}
    assert [r["detections"] for r in recs] == [det(frames[k]).to_list() for k in (0, 2, 4)]
    assert "cat" in [d["label"] for d in recs[0]["detections"]]
    assert "person" in [d["label"] for d in recs[2]["detections"]]
    # the annotated video: one frame per detected frame, same size, fps kept
    saved = tmp_path / "clip_detections.mp4"
    assert recs[0]["annotated"] == str(saved)
    out_frames = list(video.read_frames(str(saved)))
    assert len(out_frames) == 3 and out_frames[0][1].shape == (240, 320, 3)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp.mp4")]
    # --save-json ids are path#frame
    rc, out, err = run(capsys, "detect", clip, "--json", "--stride", "3", "--save-json",
                       "--out", tmp_path / "coco")
    coco = json.loads((tmp_path / "coco" / "predictions.json").read_text())
    assert [im["id"] for im in coco["images"]] == [f"{clip}#0", f"{clip}#3"]


def test_bad_video_and_camera(capsys, clip, tmp_path, monkeypatch):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip.read_bytes()[:2000])
    rc, out, err = run(capsys, "detect", broken, clip, "--json", "--stride", "5")
    assert rc == 1
    recs = records(out)
    assert set(recs[0]) == {"source", "error"} and "broken.mp4" in recs[0]["error"]
    assert [r.get("frame") for r in recs[1:]] == [0, 5]            # the next one still runs
    # no camera here: a clear one-line error; a camera stream is read like a file
    rc, out, err = run(capsys, "detect", "--source", "/dev/video9", "--json")
    assert rc == 1 and records(out) == [{"source": "/dev/video9",
                                         "error": "camera /dev/video9: no such device"}]
    real_open = video._open
    monkeypatch.setattr(video, "_open", lambda source, camera=False: real_open(str(clip)))
    rc, out, err = run(capsys, "detect", "--source", "0", "--json", "--stride", "2")
    assert rc == 0 and [(r["source"], r["frame"]) for r in records(out)] == [
        ("0", 0), ("0", 2), ("0", 4)]


def test_missing_pyav_names_the_extra(capsys, clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    rc, out, err = run(capsys, "detect", clip, "--json")
    assert rc == 1
    (rec,) = records(out)
    assert "pip install 'edgedl[video]'" in rec["error"]
    assert "clip.mp4" in rec["error"]
