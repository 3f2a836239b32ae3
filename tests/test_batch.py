"""``edgedl detect`` over many sources (issue #12): folders, globs, lists, stdin; bad files
reported and skipped; run folders; --save-txt / --save-json / --save-crops; --classes; the
progress bar and summary; the pipelined runner keeps input order."""
import io
import json
import os
import shutil
import sys

import importlib.util

import numpy as np
import pytest
from PIL import Image

from edgedl import batch, cli

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnx") is None,
                                reason="the onnx package is not installed")


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def records(out):
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def folder(tmp_path, shared_dir):
    """a/ with two photos and a sub-folder holding one more, a README (not an image)."""
    src = shared_dir / "images"
    d = tmp_path / "a"
    (d / "sub").mkdir(parents=True)
    shutil.copy(src / "chelsea.png", d / "chelsea.png")
    shutil.copy(src / "grace_hopper.jpg", d / "grace_hopper.jpg")
    shutil.copy(src / "coffee.png", d / "sub" / "coffee.png")
    (d / "README.md").write_text("not an image")
    return d


def test_folder_recursive_glob_and_list(capsys, tmp_path, folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, "detect", folder, "--json")
    assert rc == 0, err
    assert [r["source"] for r in records(out)] == [str(folder / "chelsea.png"),
                                                  str(folder / "grace_hopper.jpg")]
    rc, out, err = run(capsys, "detect", folder, "--json", "--recursive")
    names = [os.path.relpath(r["source"], folder) for r in records(out)]
    assert names == ["chelsea.png", "grace_hopper.jpg", os.path.join("sub", "coffee.png")]
    # a quoted glob (the shell did not expand it) is expanded by edgedl
    rc, out, err = run(capsys, "detect", str(folder / "**" / "*.png"), "--json")
    assert rc == 0, err
    assert sorted(os.path.basename(r["source"]) for r in records(out)) == ["chelsea.png",
                                                                           "coffee.png"]
    # a list: one path a line, relative to the list, comments and blank lines skipped
    lst = folder / "list.txt"
    lst.write_text("# two of them\nsub/coffee.png\n\nchelsea.png  # the cat\n")
    rc, out, err = run(capsys, "detect", lst, "--json")
    assert [os.path.relpath(r["source"], folder) for r in records(out)] == [
        os.path.join("sub", "coffee.png"), "chelsea.png"]
    cat = records(out)[1]["detections"]
    assert [d["label"] for d in cat] == ["cat"]
    assert set(records(out)[1]["time_ms"]) == {"preprocess", "inference", "postprocess"}
    assert not (tmp_path / "edgedl-out").exists()          # --json alone writes nothing


def test_stdin_image(capsys, monkeypatch, shared_dir, tmp_path):
    data = (shared_dir / "images" / "chelsea.png").read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    rc, out, err = run(capsys, "detect", "-", "--json")
    assert rc == 0, err
    (rec,) = records(out)
    assert rec["source"] == "-" and [d["label"] for d in rec["detections"]] == ["cat"]
    assert (rec["width"], rec["height"]) == (451, 300)


def test_bad_files_are_reported_and_skipped(capsys, tmp_path, folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (folder / "b_not_an_image.jpg").write_bytes(b"\x00garbage")
    good = Image.open(folder / "chelsea.png")
    buf = io.BytesIO()
    good.save(buf, format="PNG")
    (folder / "c_truncated.png").write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    argv = ["detect", folder, str(tmp_path / "missing.png"), "--json"]
    rc, out, err = run(capsys, *argv)
    assert rc == 1                                     # something failed: non-zero at the end
    recs = records(out)
    assert [os.path.basename(r["source"]) for r in recs] == [
        "b_not_an_image.jpg", "c_truncated.png", "chelsea.png", "grace_hopper.jpg",
        "missing.png"]
    errors = [r for r in recs if "error" in r]
    assert [set(r) for r in errors] == [{"source", "error"}] * 3
    assert all("\n" not in r["error"] and os.path.basename(r["source"]) in r["error"]
               for r in errors)
    assert [d["label"] for d in recs[2]["detections"]] == ["cat"]     # the run went on
    lines = [ln for ln in err.splitlines() if ln.startswith("edgedl: error:")]
    assert len(lines) == 3 and "Traceback" not in err
    assert "3 failed" in err.splitlines()[-1]          # the summary (stderr under --json)
    # --fail-fast: stops at the first failure
    rc, out, err = run(capsys, *argv, "--fail-fast")
    assert rc == 1 and [os.path.basename(r["source"]) for r in records(out)] == [
        "b_not_an_image.jpg"]


def test_run_folders_and_exist_ok(capsys, tmp_path, folder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for k in (1, 2):
        rc, out, err = run(capsys, "detect", folder / "chelsea.png")
        assert rc == 0, err
        assert (tmp_path / "edgedl-out" / f"run{k}" / "chelsea_detections.png").exists()
    rc, out, err = run(capsys, "detect", folder / "grace_hopper.jpg", "--exist-ok")
    assert sorted(os.listdir(tmp_path / "edgedl-out" / "run2")) == [
        "chelsea_detections.png", "grace_hopper_detections.jpg"]
    assert sorted(os.listdir(tmp_path / "edgedl-out")) == ["run1", "run2"]


def test_save_txt_json_crops_and_classes(capsys, tmp_path, folder, shared_dir):
    out_dir = tmp_path / "o"
    rc, out, err = run(capsys, "detect", folder, "--recursive", "--out", out_dir, "--json",
                       "--save-txt", "--save-json", "--save-crops")
    assert rc == 0, err
    recs = records(out)
    for r in recs:
        rel = os.path.relpath(r["source"], folder)
        txt = out_dir / "labels" / (os.path.splitext(rel)[0] + ".txt")
        rows = [ln.split() for ln in txt.read_text().splitlines()]
        assert len(rows) == len(r["detections"])
        for row, d in zip(rows, r["detections"]):
            x1, y1, x2, y2 = d["box"]
            want = [(x1 + x2) / 2 / r["width"], (y1 + y2) / 2 / r["height"],
                    (x2 - x1) / r["width"], (y2 - y1) / r["height"]]
            assert int(row[0]) == d["class_id"]
            # the record's box is rounded to 0.1 px, the text file's is not
            np.testing.assert_allclose([float(v) for v in row[1:5]], want, atol=0.11 / 300)
            assert float(row[5]) == pytest.approx(d["score"], abs=1e-4)
        assert os.path.exists(r["annotated"])
    coco = json.loads((out_dir / "predictions.json").read_text())
    assert [c["name"] for c in coco["categories"]][:2] == ["person", "bicycle"]
    assert [im["id"] for im in coco["images"]] == [r["source"] for r in recs]
    anns = [a for a in coco["annotations"] if a["image_id"] == recs[0]["source"]]
    x1, y1, x2, y2 = recs[0]["detections"][0]["box"]
    assert anns[0]["category_id"] == 15 and anns[0]["bbox"] == pytest.approx(
        [x1, y1, x2 - x1, y2 - y1], abs=0.11)
    crops = sorted(os.path.relpath(os.path.join(t, f), out_dir / "crops")
                   for t, _, fs in os.walk(out_dir / "crops") for f in fs)
    assert len(crops) == sum(len(r["detections"]) for r in recs)
    assert os.path.join("cat", "chelsea_0.jpg") in crops
    w = round(x2) - int(x1)
    assert abs(Image.open(out_dir / "crops" / "cat" / "chelsea_0.jpg").width - w) <= 1
    # --classes by name and by id keep only those; an unknown name is a usage error
    hopper = folder / "grace_hopper.jpg"
    rc, out, err = run(capsys, "detect", hopper, "--json", "--classes", "tie,0")
    assert sorted({d["label"] for d in records(out)[0]["detections"]}) == ["person", "tie"]
    rc, out, err = run(capsys, "detect", hopper, "--json", "--classes", "person")
    assert {d["label"] for d in records(out)[0]["detections"]} == {"person"}
    rc, out, err = run(capsys, "detect", hopper, "--json", "--classes", "dgo")
    assert rc == 2 and "'dgo' is not a class" in err and out == ""
    # --conf is --score-threshold
    a = records(run(capsys, "detect", hopper, "--json", "--conf", "0.8")[1])
    b = records(run(capsys, "detect", hopper, "--json", "--score-threshold", "0.8")[1])
    assert a == b or [r["detections"] for r in a] == [r["detections"] for r in b]
    assert all(d["score"] > 0.8 for d in a[0]["detections"])


def test_progress_bar_and_summary(capsys, tmp_path, folder, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    # silent when not a terminal, or quiet, or for few images
    assert not batch.Progress(50, file=io.StringIO()).on
    assert not batch.Progress(50, quiet=True, file=Tty()).on
    assert not batch.Progress(2, file=Tty()).on
    monkeypatch.setitem(sys.modules, "tqdm", None)           # the plain fallback
    tty = Tty()
    p = batch.Progress(4, file=tty)
    for _ in range(4):
        p.update()
    p.close()
    assert "4/4" in tty.getvalue() and "img/s" in tty.getvalue()
    # the summary line: images, detections, failures, stage means, images/s, where
    for k in range(4):
        shutil.copy(folder / "chelsea.png", folder / f"cat{k}.png")
    rc, out, err = run(capsys, "detect", folder, "--out", tmp_path / "o")
    last = out.strip().splitlines()[-1]
    assert last.startswith("6 images, ") and "0 failed" in last and "images/s" in last
    assert "mean preprocess" in last and f"results in {tmp_path / 'o'}" in last
    assert "start-up" in last
    assert len(out.strip().splitlines()) == 7                # one line per image + summary


def test_runner_keeps_order_and_overlaps(shared_dir, tmp_path):
    """Records come back in input order although decoding runs on threads ahead."""
    from edgedl.detect import Detector
    det = Detector(cli.DEMO_MODEL)
    imgs = [shared_dir / "images" / n for n in ("chelsea.png", "grace_hopper.jpg",
                                                "coffee.png", "astronaut.png")] * 3
    sources = batch.expand_sources(imgs)
    recs = []
    s = batch.run(sources, det, on_record=recs.append, decode_threads=3, prefetch=2)
    assert [r["source"] for r in recs] == [str(p) for p in imgs]
    assert s.images == 12 and s.failures == 0
    assert [r["detections"] for r in recs] == [det(str(p)).to_list() for p in imgs]
