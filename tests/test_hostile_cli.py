"""The ``edgedl`` command against hostile input: bad option values exit 2 with one line, huge
thread counts never reach OpenMP, and result files never overwrite an input, never share a
name and are written atomically (issue #15)."""
import json
import os
import subprocess
import sys

import importlib.util

import numpy as np
import pytest
from PIL import Image

from edgedl import _files, cli

needs_onnx = pytest.mark.skipif(importlib.util.find_spec("onnx") is None,
                                reason="the onnx package is not installed")


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- options
BAD_OPTIONS = [
    (["warmup", "--backend", "nosuch"], "unknown backend 'nosuch'"),
    (["bench", "--repeat", "0"], "--repeat: must be an integer from 1 to"),
    (["bench", "--repeat", "-5"], "--repeat"),
    (["bench", "--repeat", "lots"], "--repeat"),
    (["bench", "--backend", "nosuch"], "unknown backend"),
    (["bench", "--threads", "0"], "--threads must be an integer from 1 to"),
    (["bench", "--threads", "-2"], "--threads"),
    (["bench", "--threads", "1000000"], "got 1000000"),
    (["bench", "--threads", "two"], "--threads"),
    (["bench", "missing.onnx"], "model not found: missing.onnx"),
    (["info", "missing.onnx"], "model not found"),
    (["detect", "missing.onnx", "x.jpg"], "model not found"),
    (["detect", "--backend", "nosuch"], "unknown backend"),
    (["detect", "--threads", "1000000"], "--threads"),
    (["detect", "--out", "{file}"], "is not a folder"),
    (["detect", "--input-size", "0x0"], "--input-size"),
    (["detect", "--set", "nonsense"], "--set takes KEY=VALUE"),
    (["nosuchcommand"], "invalid choice"),
    (["detect", "--no-such-option"], "unrecognized arguments"),
]
ONNX_BAD_OPTIONS = [     # checked by the detector configuration (they load the demo model)
    (["detect", "--score-threshold", "1.5"], "--score-threshold"),
    (["detect", "--score-threshold", "-0.1"], "--score-threshold"),
    (["detect", "--iou-threshold", "2"], "--iou-threshold"),
    (["detect", "--family", "nosuch"], "nosuch"),
    (["detect", "--preset", "{missing}"], "unknown preset"),
]


@pytest.mark.parametrize("argv, text", BAD_OPTIONS + [
    pytest.param(a, t, marks=needs_onnx) for a, t in ONNX_BAD_OPTIONS])
def test_bad_option_value_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, text):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("x")
    argv = [a.format(file=tmp_path / "a_file", missing=tmp_path / "no.json") for a in argv]
    rc, out, err = run(capsys, *argv)
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in err and out == ""          # nothing ran
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgedl: error: "), err
    assert text in lines[0], lines[0]
    assert os.listdir(tmp_path) == ["a_file"]             # and nothing was written


def _subprocess(*argv, env=None):
    e = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "edgedl", *argv], capture_output=True,
                          text=True, env=e, timeout=300)


def test_huge_threads_never_reach_openmp():
    """--threads 1000000 killed the process (SIGSEGV in libgomp) on the Cython backend;
    EDGEDL_NUM_THREADS=1000000 likewise: now one line, before any kernel runs."""
    r = _subprocess("bench", "--threads", "1000000", "--repeat", "1")
    assert r.returncode == 2, (r.returncode, r.stderr[-500:])
    assert r.stderr.startswith("edgedl: error: --threads must be an integer from 1 to")
    for env in ({"EDGEDL_NUM_THREADS": "1000000"}, {"EDGEDL_BACKEND": "nosuch"}):
        r = _subprocess("bench", "--repeat", "1", env=env)
        assert r.returncode == 2, (r.returncode, r.stderr[-500:])
        assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""
    assert r.stderr.startswith("edgedl: error: unknown backend 'nosuch'")
    r = _subprocess("info-config", env={"EDGEDL_NUM_THREADS": "1000000"})
    assert r.returncode == 2 and r.stderr.startswith(
        "edgedl: error: EDGEDL_NUM_THREADS must be an integer from 1 to"), r.stderr


# ----------------------------------------------------------------------------- files
def _photo(path, size):
    """The demo photo resized to ``size``, saved at ``path`` (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.open(cli.DEMO_IMAGE).convert("RGB").resize(size).save(path)
    return path


def _detect_json(capsys, *argv):
    rc, out, err = run(capsys, "detect", *map(str, argv), "--json")
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()]      # JSON lines


@needs_onnx
def test_out_in_the_input_folder_never_overwrites_an_input(capsys, tmp_path):
    """a.jpg's annotated image is named a_detections.jpg -- the name of a later input, which
    was overwritten and then read (its 512x512 result instead of its own 96x64)."""
    a = _photo(tmp_path / "a.jpg", (128, 128))
    later = _photo(tmp_path / "a_detections.jpg", (96, 64))
    before = {p: p.read_bytes() for p in (a, later)}
    res = _detect_json(capsys, a, later, "--out", tmp_path)
    assert [(r["width"], r["height"]) for r in res] == [(128, 128), (96, 64)]
    assert all(p.read_bytes() == b for p, b in before.items())        # inputs untouched
    saved = [r["annotated"] for r in res]
    assert saved == [str(tmp_path / "a_detections-2.jpg"),
                     str(tmp_path / "a_detections_detections.jpg")]
    assert all(Image.open(s).size == (r["width"], r["height"]) for s, r in zip(saved, res))
    # run again over everything there: still no input overwritten, no name reused
    inputs = sorted(tmp_path.iterdir())
    before = {p: p.read_bytes() for p in inputs}
    res = _detect_json(capsys, *inputs, "--out", tmp_path)
    saved = [r["annotated"] for r in res]
    assert len(set(saved)) == len(saved) and not set(saved) & set(map(str, inputs))
    assert all(p.read_bytes() == b for p, b in before.items())


@needs_onnx
def test_same_stem_inputs_get_one_result_each(capsys, tmp_path):
    imgs = [_photo(tmp_path / "x.png", (64, 64)), _photo(tmp_path / "x.gif", (80, 64)),
            _photo(tmp_path / "a" / "y.jpg", (64, 96)), _photo(tmp_path / "b" / "y.jpg", (96, 96))]
    out = tmp_path / "out"
    res = _detect_json(capsys, *imgs, "--out", out)
    saved = [r["annotated"] for r in res]
    assert saved == [str(out / "x_detections.png"), str(out / "x_gif_detections.png"),
                     str(out / "a" / "y_detections.jpg"), str(out / "b" / "y_detections.jpg")]
    assert [Image.open(s).size for s in saved] == [(64, 64), (80, 64), (64, 96), (96, 96)]
    assert not [f for _, _, fs in os.walk(tmp_path) for f in fs if f.endswith(".tmp")]


def test_output_paths_rules(tmp_path):
    ins = [str(tmp_path / n) for n in ("x.JPG", "x.jpg", "x.jpeg", "X.png", "x.png", "x.tiff",
                                       "x", "sub/x.png")]
    got = _files.output_paths(ins, str(tmp_path / "o"))
    names = [os.path.relpath(p, tmp_path / "o") for p in got]
    assert names == ["x_detections.jpg", "x_detections-2.jpg", "x_detections.jpeg",
                     "X_detections.png", "x_detections-2.png", "x_tiff_detections.png",
                     "x_detections-3.png",
                     os.path.join("sub", "x_detections.png")]
    assert got == _files.output_paths(ins, str(tmp_path / "o"))        # deterministic
    # an output folder that is the input folder under another name (a symlink)
    (tmp_path / "in").mkdir()
    src = str(tmp_path / "in" / "p.jpg")
    victim = str(tmp_path / "in" / "p_detections.jpg")
    os.symlink(tmp_path / "in", tmp_path / "alias")
    got = _files.output_paths([src, victim], str(tmp_path / "alias"))
    assert got[0] == str(tmp_path / "alias" / "p_detections-2.jpg")
    # the model is protected too
    assert _files.output_paths([src], str(tmp_path / "in"), protect=[victim]) == \
        [str(tmp_path / "in" / "p_detections-2.jpg")]


def test_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "r_detections.png"
    target.write_bytes(b"previous result")
    im = Image.fromarray(np.zeros((8, 8, 3), np.uint8))

    def broken_save(self, fp, format=None, **kw):
        fp.write(b"half a PNG")
        raise OSError("disk full")
    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _files.save_atomic(im, str(target))
    assert target.read_bytes() == b"previous result"       # never half-written
    assert os.listdir(tmp_path) == [target.name]          # and no temporary left behind
    monkeypatch.undo()
    _files.save_atomic(im, str(target))
    assert Image.open(target).size == (8, 8) and os.listdir(tmp_path) == [target.name]
    # a link at the output path is replaced, its target is not written through
    other = tmp_path / "other.png"
    other.write_bytes(b"not mine")
    target.unlink()
    os.symlink(other, target)
    _files.save_atomic(im, str(target))
    assert other.read_bytes() == b"not mine" and not os.path.islink(target)


# ----------------------------------------------------------------------------- images
@needs_onnx
def test_16_bit_png_and_bomb_from_the_command_line(capsys, tmp_path, monkeypatch):
    """A 16-bit PNG was read as an all-white image (0 detections, no warning); an image above
    Pillow's decompression-bomb limit ended in a traceback."""
    grey = np.asarray(Image.open(cli.DEMO_IMAGE).convert("L"), np.uint16) * 257
    Image.fromarray(grey).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode in ("I;16", "I")   # "I": Pillow < 10
    Image.open(cli.DEMO_IMAGE).convert("L").save(tmp_path / "flat.png")
    res = _detect_json(capsys, tmp_path / "deep.png", tmp_path / "flat.png")
    assert res[0]["detections"] and res[0]["detections"] == res[1]["detections"]
    # the limit lowered so that a 100x100 image is a "bomb" (tests/detect has a real one)
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    rc, out, err = run(capsys, "detect", str(tmp_path / "bomb.png"), "--out", str(tmp_path))
    assert rc == 1 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "bomb.png" in lines[0] and "10,000 pixels" in lines[0], err
