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

from conftest import json_records, run_cli
from PIL import Image

from edgedl import batch, cli

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnx") is None,
                                reason="the onnx package is not installed")


run, records = run_cli, json_records


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
    for data, text in ((b"", "stdin: no data"), (b"garbage", "stdin: cannot read its 7 bytes")):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        rc, out, err = run(capsys, "detect", "-", "--json")
        assert rc == 1 and records(out)[0]["error"].startswith(text), out


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
    if importlib.util.find_spec("tqdm") is not None:           # edgedl[progress]: tqdm's bar
        import tqdm
        p = batch.Progress(4, file=Tty())
        assert isinstance(p.bar, tqdm.tqdm)
        for _ in range(4):
            p.update()
        p.close()
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


def test_labels_never_overlap_nor_leave_the_image():
    """Crowded boxes at the edges ("rson 0.65" was a label cut at the left edge)."""
    from edgedl.detect.draw import layout_labels
    rng = np.random.default_rng(0)
    for trial in range(30):
        w, h = rng.integers(200, 700, 2)
        n = int(rng.integers(1, 25))
        n = min(n, int(w * h / 4 / (110 * 18)))        # labels that fit with room to spare
        xy = rng.uniform(-20, [w, h], (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 120, (n, 2))], 1)
        sizes = [(int(rng.integers(30, 110)), 18) for _ in range(n)]
        corners = layout_labels(boxes, sizes, int(w), int(h))
        rects = [(x, y, x + tw, y + th) for (x, y), (tw, th) in zip(corners, sizes)]
        assert all(0 <= r[0] and 0 <= r[1] and r[2] <= w and r[3] <= h for r in rects)
        for i in range(n):
            for j in range(i):
                a, b = rects[i], rects[j]
                assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), \
                    (trial, a, b)


def test_drawing_colours_per_class_and_scale():
    from edgedl.detect import Detections, draw_detections
    from edgedl.detect.draw import PALETTE
    d = Detections(np.array([[0, 0, 50, 40], [10, 5, 60, 45]], np.float32),
                   np.array([0.9, 0.8], np.float32), np.array([3, 7]), ["person", "dog"])
    for size in (120, 1200):
        im = np.asarray(draw_detections(np.zeros((size, size, 3), np.uint8), d))
        assert tuple(im[30, 0]) == PALETTE[3]               # the class-3 box's left edge
    big = np.asarray(draw_detections(np.zeros((1200, 1200, 3), np.uint8), d))
    # line width grows with the image: the left edge is several pixels thick at 1200 px
    assert tuple(big[30, 4]) == PALETTE[3] and tuple(im[30, 0]) == PALETTE[3]
