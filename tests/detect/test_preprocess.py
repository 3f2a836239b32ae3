"""Preprocessing (load, resize, normalise, layout), the inverse mapping, presets, drawing."""
import json

import numpy as np
import pytest
from PIL import Image

from edgedl.detect import (Detections, Transform, available_presets, draw_detections,
                           load_image, load_preset, normalize, preprocess, resize)
from edgedl.detect.decoders import FAMILIES
from edgedl.detect.preprocess import to_input
from edgedl.detect.presets import resolve, resolve_labels
from edgedl.errors import DTypeError, ShapeError, ValidationError

from bilinear_ref import bilinear


# ----------------------------------------------------------------------------- loading
def test_load_image_sources(tmp_path, rng):
    a = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), a)
    np.testing.assert_array_equal(load_image(str(tmp_path / "a.png")), a)
    np.testing.assert_array_equal(load_image(Image.fromarray(a)), a)
    rgba = Image.fromarray(np.dstack([a, np.full((7, 5), 9, np.uint8)]))
    np.testing.assert_array_equal(load_image(rgba), a)          # alpha dropped
    grey = a[:, :, 0]
    for g in (grey, grey[:, :, None], Image.fromarray(grey)):
        out = load_image(g)
        assert out.shape == (7, 5, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[:, :, 2], grey)
    # a non-contiguous view is fine
    np.testing.assert_array_equal(load_image(a[::2, ::-1]), a[::2, ::-1])


def test_load_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValidationError, match="cannot read"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(DTypeError, match="uint8"):
        load_image(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ShapeError, match=r"\(H, W, 3\)"):
        load_image(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ShapeError, match="empty"):
        load_image(np.zeros((0, 4, 3), np.uint8))
    with pytest.raises(ValidationError, match="file path, a PIL image"):
        load_image(42)


def _grey_ramp():
    return (np.arange(48 * 64).reshape(48, 64) * 7 % 256).astype(np.uint8)


@pytest.mark.parametrize("kind", ["I;16 png", "I;16B", "I tif", "I 8-bit", "F tif",
                                  "F 0..255"])
def test_load_image_scales_wide_grey_to_8_bits(tmp_path, kind):
    """A 16-bit PNG came out all white (Pillow's convert clips at 255), float all black."""
    g = _grey_ramp()
    im = {"I;16 png": lambda: Image.fromarray(g.astype(np.uint16) * 257),
          "I;16B": lambda: Image.frombytes("I;16B", (64, 48), (g.astype(">u2") * 257).tobytes()),
          "I tif": lambda: Image.fromarray(g.astype(np.int32) * 257),
          "I 8-bit": lambda: Image.fromarray(g.astype(np.int32)),
          "F tif": lambda: Image.fromarray(g.astype(np.float32) / 255),
          "F 0..255": lambda: Image.fromarray(g.astype(np.float32))}[kind]()
    if kind.endswith(("png", "tif")):
        path = tmp_path / ("x." + kind.split()[-1])
        im.save(path)
        # the file really is that wide (older Pillow reopens a 16-bit grey PNG as mode "I")
        assert Image.open(path).mode in {im.mode, "I"}
        im = path
    out = load_image(im)
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out, np.repeat(g[:, :, None], 3, axis=2))


def test_load_image_other_modes(tmp_path):
    g = _grey_ramp()
    rgb = np.dstack([g, 255 - g, g // 2])
    cases = {
        "la.png": (Image.fromarray(np.dstack([g, 255 - g]), "LA"), np.dstack([g] * 3)),
        "pa.png": (Image.fromarray(g).convert("P"), np.dstack([g] * 3)),
        "one.png": (Image.fromarray(g >= 128), np.dstack([np.where(g >= 128, 255, 0)] * 3)),
        "cmyk.tif": (Image.fromarray(rgb).convert("CMYK"), rgb),
        "rgba.png": (Image.fromarray(np.dstack([rgb, g]), "RGBA"), rgb),
    }
    for name, (im, want) in cases.items():
        kw = {"transparency": 3} if name == "pa.png" else {}     # P with transparency
        im.save(tmp_path / name, **kw)
        out = load_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (48, 64, 3), name
        np.testing.assert_array_equal(out, want.astype(np.uint8), err_msg=name)


def _png_header(width, height):
    """A PNG that declares width x height (8-bit grey) and holds no pixels."""
    import struct
    import zlib
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                               0, 0, 0)) + chunk(b"IEND", b""))


def test_load_image_decompression_bomb_is_one_sentence(tmp_path):
    from edgedl.errors import ResourceError
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(20000, 20000))
    with pytest.raises(ResourceError) as e:
        load_image(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "400,000,000 pixels" in msg
    assert "decompression-bomb limit" in msg and "bytes" in msg


def test_load_image_checks_memory_before_decoding(tmp_path):
    from edgedl import _memory
    from edgedl.errors import ResourceError
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(path)
    _memory.set_memory_limit(100_000)
    try:
        with pytest.raises(ResourceError, match=r"big.png \(400x300 pixels, mode L\) would "
                                                 r"need 600000 bytes"):
            load_image(path)
    finally:
        _memory.reset_memory_limit()
    assert load_image(path).shape == (300, 400, 3)


# ----------------------------------------------------------------------------- resize
def test_stretch_resize_and_identity():
    img = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
    out, t = resize(img, 8, 3)
    assert out.shape == (3, 8, 3)
    assert (t.scale_x, t.scale_y, t.pad_x, t.pad_y) == (2.0, 0.5, 0.0, 0.0)
    same, t = resize(img, 4, 6)
    assert same is img and t.scale_x == 1 and t.scale_y == 1


@pytest.mark.parametrize("placement", ["topleft", "center"])
def test_letterbox_padding_and_inverse(placement):
    img = np.full((50, 100, 3), 200, np.uint8)            # 100 wide, 50 high
    out, t = resize(img, 64, 64, "letterbox", placement, pad_value=114)
    assert out.shape == (64, 64, 3) and t.scale_x == t.scale_y == 0.64
    top = 0 if placement == "topleft" else (64 - 32) // 2
    assert t.pad_y == top and t.pad_x == 0
    assert np.all(out[top:top + 32] == 200)
    pad = np.ones(64, bool)
    pad[top:top + 32] = False
    assert np.all(out[pad] == 114)
    # boxes and points map back to original pixels
    b = np.array([[0, top, 64, top + 32], [6.4, top + 3.2, 12.8, top + 6.4]], np.float32)
    np.testing.assert_allclose(t.boxes_to_original(b), [[0, 0, 100, 50], [10, 5, 20, 10]],
                               atol=1e-4)
    pts = np.array([[[32, top + 16]]], np.float32)
    np.testing.assert_allclose(t.points_to_original(pts), [[[50, 25]]], atol=1e-4)


def test_boxes_clipped_to_image():
    t = Transform(1.0, 1.0, 0.0, 0.0, 10, 20)
    np.testing.assert_array_equal(t.boxes_to_original([[-5, -5, 15, 25]]), [[0, 0, 10, 20]])
    np.testing.assert_array_equal(t.boxes_to_original([[-5, -5, 15, 25]], clip=False),
                                  [[-5, -5, 15, 25]])
    assert t.boxes_to_original(np.zeros((0, 4))).shape == (0, 4)


def test_resize_bad_arguments():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValidationError, match="resize"):
        resize(img, 4, 4, "crop")
    with pytest.raises(ValidationError, match="placement"):
        resize(img, 4, 4, "letterbox", "middle")


@pytest.mark.parametrize("hw", [(37, 53), (300, 451), (40, 40), (512, 96), (1000, 23)])
@pytest.mark.parametrize("mode,placement", [("stretch", "topleft"), ("letterbox", "topleft"),
                                            ("letterbox", "center")])
def test_to_input_matches_float_bilinear(hw, mode, placement, backend, rng):
    """Resize + normalise in one call == cv2-style bilinear, then the affine, then padding
    (up- and downscales, big shrinks that gather few source rows, portrait and landscape)."""
    img = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    W, H = 48, 40
    scale, mean, std, pad = 1 / 255, [0.1, 0.2, 0.3], [0.5, 0.25, 2.0], (10, 20, 30)
    for order in ("rgb", "bgr"):
        for layout in ("nchw", "nhwc"):
            x, t = to_input(img, W, H, mode, placement, pad, order, scale, mean, std, layout,
                            backend=backend)
            nw, nh = round(hw[1] * t.scale_x), round(hw[0] * t.scale_y)
            px, py = int(t.pad_x), int(t.pad_y)
            want = np.empty((H, W, 3))
            want[...] = pad
            want[py:py + nh, px:px + nw] = bilinear(img, nw, nh)
            if order == "bgr":
                want = want[:, :, ::-1]
            want = (want * scale - mean) / std
            want = want.transpose(2, 0, 1)[None] if layout == "nchw" else want[None]
            assert x.dtype == np.float32 and x.shape == want.shape
            np.testing.assert_allclose(x, want, atol=2e-5)


def test_to_input_out_identity_and_float64(rng):
    img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    buf = np.full((1, 3, 20, 30), np.nan, np.float64)
    x, t = to_input(img, 30, 20, "letterbox", channel_order="bgr", mean=[1, 2, 3],
                    dtype=np.float64, out=buf)
    assert x is buf and t.scale_x == 1 and t.pad_x == 0
    np.testing.assert_array_equal(x[0], img[:, :, ::-1].transpose(2, 0, 1) - [[[1]], [[2]],
                                                                              [[3]]])
    # reused: a second image overwrites all of it (letterbox border included)
    x, _ = to_input(img[:10], 30, 20, "letterbox", "center", 7, dtype=np.float64, out=buf)
    assert not np.isnan(x).any() and np.all(x[0, :, :5] == 7)
    with pytest.raises(ShapeError, match="out must be"):
        to_input(img, 30, 20, out=np.empty((1, 3, 20, 30), np.float32)[..., :-1])


def test_resize_is_cv2_inter_linear(rng):
    """The uint8 resize rounds the same bilinear: cv2.resize INTER_LINEAR up to its 11-bit
    fixed-point weights (one grey level)."""
    cv2 = pytest.importorskip("cv2")
    img = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    for w, h in ((40, 30), (200, 101), (83, 20)):
        out, _ = resize(img, w, h)
        ref = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.abs(out.astype(int) - ref).max() <= 1


# ----------------------------------------------------------------------------- normalise
@pytest.mark.parametrize("order", ["rgb", "bgr"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_formula(order, layout, dtype, rng):
    img = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    mean, std, scale = [1.0, 2.0, 3.0], [0.5, 2.0, 4.0], 1 / 255
    x = normalize(img, order, scale, mean, std, layout, dtype)
    src = img[:, :, ::-1] if order == "bgr" else img
    want = (src.astype(np.float64) * scale - np.array(mean)) / np.array(std)
    want = want.transpose(2, 0, 1)[None] if layout == "nchw" else want[None]
    assert x.dtype == dtype and x.shape == want.shape
    np.testing.assert_allclose(x, want, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_normalize_bad_arguments():
    img = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ValidationError, match="std must not contain 0"):
        normalize(img, std=[1, 0, 1])
    with pytest.raises(ValidationError, match="mean and std"):
        normalize(img, mean=[1, 2])
    with pytest.raises(ValidationError, match="channel_order"):
        normalize(img, "hsv")
    with pytest.raises(ValidationError, match="layout"):
        normalize(img, layout="chw")


def test_preprocess_one_call():
    x, t = preprocess(np.zeros((20, 10, 3), np.uint8), 16, 16, "letterbox", "center", 255,
                      "bgr", 1 / 255)
    assert x.shape == (1, 3, 16, 16)
    assert x[0, 0, 0, 0] == pytest.approx(1.0) and x[0, 0, 8, 8] == 0.0
    assert t.pad_x == 4 and t.scale_y == 0.8


# ----------------------------------------------------------------------------- presets
def test_bundled_presets_resolve():
    names = available_presets()
    assert set(names) >= {"fastestdet", "ultraface_rfb320", "yunet_n_320", "yolox_nano"}
    for n in names:
        cfg = resolve(n)
        assert cfg["family"] in FAMILIES
        assert cfg["input_width"] and cfg["input_height"]


def test_preset_picked_by_model_name_and_overrides():
    cfg = resolve(None, None, {"score_threshold": 0.1}, "/x/yolox_nano.onnx")
    assert cfg["family"] == "yolox" and cfg["score_threshold"] == 0.1
    assert cfg["pad_value"] == 114 and cfg["resize"] == "letterbox"
    with pytest.raises(ValidationError, match="preset= or --preset.*family= or --family"):
        resolve(None, None, {}, "/x/unknown.onnx")


def test_preset_errors_name_the_key(tmp_path):
    with pytest.raises(ValidationError, match="unknown override key 'score_treshold'"):
        resolve("fastestdet", None, {"score_treshold": 0.3})
    with pytest.raises(ValidationError, match="unknown preset"):
        resolve("no_such_preset")
    with pytest.raises(ValidationError, match="contradicts"):
        resolve("fastestdet", "yolox")
    with pytest.raises(ValidationError, match="family must be one of"):
        resolve(None, "yolo9000")
    with pytest.raises(ValidationError, match="score_threshold"):
        resolve("fastestdet", None, {"score_threshold": 1.5})
    with pytest.raises(ValidationError, match="no 'family'"):
        resolve({"score_threshold": 0.5})
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValidationError, match="cannot read preset"):
        resolve(str(tmp_path / "broken.json"))


def test_user_preset_as_dict_and_file(tmp_path):
    preset = {"family": "yolov8", "description": "mine", "score_threshold": 0.4,
              "labels": ["a", "b"]}
    cfg = resolve(preset)
    assert cfg["score_threshold"] == 0.4 and cfg["placement"] == "center"
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(preset))
    assert resolve(str(path))["labels"] == ["a", "b"]
    assert load_preset(str(path))["name"] == "mine"


def test_labels():
    coco = resolve_labels("coco80")
    assert len(coco) == 80 and coco[0] == "person" and coco[41] == "cup"
    assert resolve_labels(["x", 2]) == ["x", "2"] and resolve_labels(None) is None
    with pytest.raises(ValidationError, match="unknown label set"):
        resolve_labels("imagenet")


# ----------------------------------------------------------------------------- drawing
def test_draw_detections_marks_boxes_and_keypoints():
    img = np.zeros((60, 80, 3), np.uint8)
    d = Detections(np.array([[10, 20, 50, 55]], np.float32), np.array([0.9], np.float32),
                   np.array([0]), ["face"], np.array([[[30, 40]]], np.float32))
    out = np.asarray(draw_detections(img, d, line_width=2))
    assert out.shape == img.shape
    assert out[40, 10].any() and out[40, 49].any()      # box edges drawn
    assert out[40, 30].any()                            # keypoint drawn
    assert not out[40, 20].any()                        # inside the box untouched
    assert not out[2, 75].any()                         # far corner untouched
    assert not img.any()                                # input unchanged


def test_detections_to_list():
    d = Detections(np.array([[1, 2, 3, 4]], np.float32), np.array([0.5], np.float32),
                   np.array([3]), ["cat"])
    assert d.to_list() == [{"label": "cat", "class_id": 3, "score": 0.5,
                            "box": [1.0, 2.0, 3.0, 4.0]}]
    assert len(d) == 1
