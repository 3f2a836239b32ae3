"""Decoders of every family on synthetic outputs that encode known boxes.

A fake session (the onnxruntime API) returns hand-built outputs; each test writes, in the
family's own encoding, a box whose pixels are known, plus distractors, and checks the Detector
finds exactly the expected boxes/classes/keypoints after NMS, in original pixels.
"""
import math

import numpy as np
import pytest

from edgedl.detect import Detector
from edgedl.errors import ModelError, ValidationError


class Arg:
    def __init__(self, name, shape, type="tensor(float)"):
        self.name, self.shape, self.type = name, shape, type


class FakeSession:
    """onnxruntime's API over fixed outputs (repeated along the batch axis of the feed)."""

    def __init__(self, input_shape, outputs, input_name="x"):
        self.inputs = [Arg(input_name, list(input_shape))]
        self.outputs = [(n, np.asarray(a, np.float32)) for n, a in outputs]
        self.feeds = []

    def get_inputs(self):
        return self.inputs

    def get_outputs(self):
        return [Arg(n, list(a.shape)) for n, a in self.outputs]

    def run(self, names, feed):
        self.feeds.append(feed)
        n = next(iter(feed.values())).shape[0]
        return [np.concatenate([a] * n) if a.ndim >= 3 else a.copy() for _, a in self.outputs]


def logit(p):
    return math.log(p / (1 - p))


def run(family, size, outputs, image=None, **kw):
    w, h = size
    sess = FakeSession((1, 3, h, w), outputs)
    det = Detector(None, family=family, session=sess, resize="stretch", **kw)
    img = image if image is not None else np.zeros((h, w, 3), np.uint8)
    return det(img), sess


def assert_boxes(d, want, atol=1e-3):
    np.testing.assert_allclose(d.boxes, np.array(want, np.float32).reshape(-1, 4), atol=atol)


# ----------------------------------------------------------------------------- yolov8
def test_yolov8_class_aware_nms():
    C, N = 3, 8 * 8 + 4 * 4 + 2 * 2
    p = np.full((1, 4 + C, N), 0.01, np.float32)
    p[0, :4] = 1.0
    p[0, :4, 5] = [20, 30, 10, 16]                 # -> (15, 22, 25, 38), class 2, 0.9
    p[0, 4 + 2, 5] = 0.9
    p[0, :4, 6] = [20.5, 30, 10, 16]               # same class, overlapping: suppressed
    p[0, 4 + 2, 6] = 0.8
    p[0, :4, 7] = [20, 30, 10, 16]                 # another class, same place: kept
    p[0, 4 + 1, 7] = 0.7
    d, _ = run("yolov8", (64, 64), [("output0", p)], labels=["a", "b", "c"])
    assert_boxes(d, [[15, 22, 25, 38], [15, 22, 25, 38]])
    assert d.class_ids.tolist() == [2, 1] and d.labels == ["c", "b"]
    np.testing.assert_allclose(d.scores, [0.9, 0.7], rtol=1e-6)
    # class-agnostic: the other class is suppressed as well
    d, _ = run("yolov8", (64, 64), [("output0", p)], class_agnostic=True)
    assert d.class_ids.tolist() == [2]


def test_yolov8_transposed_and_threshold_override():
    N = 84
    p = np.zeros((1, N, 4 + 1), np.float32)        # (N, 4 + C) export
    p[0, 3] = [32, 32, 20, 20, 0.3]
    d, _ = run("yolov8", (64, 64), [("out", p)])
    assert_boxes(d, [[22, 22, 42, 42]])
    d, _ = run("yolov8", (64, 64), [("out", p)], score_threshold=0.5)
    assert len(d) == 0 and d.boxes.shape == (0, 4)


# ----------------------------------------------------------------------------- yolov5
ANCH = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


def _yolov5_cell():
    """Raw logits of one anchor: xy offset 0 (-> +0.5 cell), wh (2*0.5)^2 = anchor size."""
    return np.array([0, 0, 0, 0, 5, -5, 5], np.float32)       # obj, cls0, cls1 logits


EXPECT5 = [[20, 5, 36, 35]]     # stride 8, cell (row 2, col 3), anchor 1 (16 x 30)


@pytest.mark.parametrize("layout", ["nchw", "anchors_first", "fastestv2"])
def test_yolov5_layouts(layout):
    na, C = 3, 2
    outs = []
    for lvl, s in enumerate((8, 16, 32)):
        f = 64 // s
        if layout == "nchw":
            o = np.full((1, na * (5 + C), f, f), -10, np.float32)
            if lvl == 0:
                o[0, 1 * 7:2 * 7, 2, 3] = _yolov5_cell()
        elif layout == "anchors_first":
            o = np.full((1, na, f, f, 5 + C), -10, np.float32)
            if lvl == 0:
                o[0, 1, 2, 3] = _yolov5_cell()
        else:
            o = np.full((1, f, f, na * 5 + C), -10, np.float32)
            if lvl == 0:
                o[0, 2, 3, 4:8] = 0                   # anchor 1 box
                o[0, 2, 3, 12 + 1] = 5                # anchor 1 objectness
                o[0, 2, 3, 15:17] = [-5, 5]           # classes (shared by the anchors)
        outs.append((f"out{s}", o))
    d, _ = run("yolov5", (64, 64), outs[::-1], anchors=ANCH)     # order must not matter
    assert_boxes(d, EXPECT5)
    assert d.class_ids.tolist() == [1]
    np.testing.assert_allclose(d.scores, [1 / (1 + math.exp(-5)) ** 2], rtol=1e-5)


def test_yolov5_decoded_export_with_powers():
    p = np.zeros((1, 10, 7), np.float32)
    p[0, 4] = [30, 40, 20, 10, 0.81, 0.0, 0.64]
    d, _ = run("yolov5", (64, 64), [("output", p)], decoded=True, obj_power=0.5,
               cls_power=0.5)
    assert_boxes(d, [[20, 35, 40, 45]])
    np.testing.assert_allclose(d.scores, [0.9 * 0.8], rtol=1e-5)


# ----------------------------------------------------------------------------- nanodet / picodet
def _bins(dists, nb=8):
    r = np.full((4, nb), -20, np.float32)
    for i, k in enumerate(dists):
        r[i, k] = 20
    return r.ravel()


def test_nanodet_plus_single_output():
    C, nb = 2, 8
    n = 64 + 16 + 4 + 1
    p = np.zeros((1, n, C + 4 * nb), np.float32)
    p[0, :, C:] = np.tile(_bins([0, 0, 0, 0]), (n, 1))
    row = 64 + 1 * 4 + 2                     # stride 16, cell (1, 2): centre (32, 16)
    p[0, row, 1] = 0.8
    p[0, row, C:] = _bins([1, 0, 2, 1])
    d, _ = run("nanodet", (64, 64), [("output", p)])
    assert_boxes(d, [[16, 16, 64, 32]])
    assert d.class_ids.tolist() == [1]
    assert d.labels == ["1"]          # COCO names only on an 80-class model (issue #11)


def test_picodet_per_stride_outputs():
    C, nb = 3, 8
    cls, reg = [], []
    for s in (8, 16, 32, 64):
        f = math.ceil(64 / s)
        c = np.zeros((1, f * f, C), np.float32)
        r = np.tile(_bins([0, 0, 0, 0]), (1, f * f, 1))
        if s == 16:
            c[0, 1 * f + 2, 0] = 0.7                  # centre ((2.5) * 16, (1.5) * 16)
            r[0, 1 * f + 2] = _bins([1, 0, 1, 1])
        cls.append((f"cls{s}", c))
        reg.append((f"reg{s}", r))
    d, _ = run("picodet", (64, 64), cls + reg)
    assert_boxes(d, [[24, 24, 56, 40]])
    assert d.class_ids.tolist() == [0]


# ----------------------------------------------------------------------------- scrfd
def test_scrfd_boxes_and_keypoints():
    na = 2
    scores, boxes, kps = [], [], []
    for s in (8, 16, 32):
        n = (64 // s) ** 2 * na
        sc = np.zeros((n, 1), np.float32)
        bb = np.ones((n, 4), np.float32)
        kp = np.zeros((n, 10), np.float32)
        if s == 8:
            i = (3 * 8 + 4) * na + 1                  # cell (3, 4): centre (32, 24)
            sc[i] = 0.9
            bb[i] = [1, 1, 2, 2]
            kp[i] = [0, 0, 1, 0, 0, 1, -1, 0, 0, -1]
        scores.append(sc)
        boxes.append(bb)
        kps.append(kp)
    outs = [(f"o{i}", a) for i, a in enumerate(scores + boxes + kps)]
    d, _ = run("scrfd", (64, 64), outs)
    assert_boxes(d, [[24, 16, 48, 40]])
    want = np.array([[32, 24], [40, 24], [32, 32], [24, 24], [32, 16]], np.float32)
    np.testing.assert_allclose(d.keypoints[0], want, atol=1e-4)


# ----------------------------------------------------------------------------- ssd
def test_ssd_prior_decode_with_variances():
    # priors: 4x4 at step 8 (min size 8) then 2x2 at step 16 (min size 16) = 20
    n = 20
    scores = np.zeros((1, n, 2), np.float32)
    scores[0, :, 0] = 5                                # background wins everywhere ...
    scores[0, 5] = [0, 5]                              # ... but prior 5 (row 1, col 1)
    deltas = np.zeros((1, n, 4), np.float32)
    deltas[0, 5] = [0.5, 0, math.log(2) / 0.2, 0]      # cx += 0.5 * 0.1 * w, w *= 2
    d, _ = run("ssd", (32, 32), [("scores", scores), ("boxes", deltas)], boxes_decoded=False,
               min_sizes=[[8], [16]], steps=[8, 16], score_activation="softmax",
               labels=["face"])
    assert_boxes(d, [[4.4, 8, 20.4, 16]])
    assert d.labels == ["face"]
    np.testing.assert_allclose(d.scores, [1 / (1 + math.exp(-5))], rtol=1e-5)


def test_ssd_prior_count_mismatch_is_a_model_error():
    with pytest.raises(ModelError, match="priors"):
        run("ssd", (32, 32), [("scores", np.ones((1, 7, 2))), ("boxes", np.zeros((1, 7, 4)))],
            boxes_decoded=False, min_sizes=[[8], [16]], steps=[8, 16])


def test_ssd_decoded_normalised_boxes_scaled_to_original():
    scores = np.zeros((1, 3, 2), np.float32)
    scores[0, 1] = [0.1, 0.9]
    boxes = np.zeros((1, 3, 4), np.float32)
    boxes[0, 1] = [0.25, 0.5, 0.5, 1.0]
    img = np.zeros((100, 200, 3), np.uint8)            # original 200 x 100, input 32 x 24
    d, _ = run("ssd", (32, 24), [("scores", scores), ("boxes", boxes)], image=img)
    assert_boxes(d, [[50, 50, 100, 100]])


# ----------------------------------------------------------------------------- mapping back
def test_letterbox_center_maps_boxes_back():
    # 128 x 64 image into a 64 x 64 input, centred: scale 0.5, 16 px padding on top
    p = np.zeros((1, 5, 84), np.float32)
    p[0, :, 0] = [32, 32, 20, 10, 0.9]          # input box (22, 27, 42, 37)
    sess = FakeSession((1, 3, 64, 64), [("o", p)])
    det = Detector(None, family="yolov8", session=sess)          # letterbox centre by default
    img = np.zeros((64, 128, 3), np.uint8)
    d = det(img)
    assert_boxes(d, [[44, 22, 84, 42]])
    x = sess.feeds[-1]["x"]
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, :16], 114 / 255, rtol=1e-6)     # padding rows
    np.testing.assert_allclose(x[0, :, 16:48], 0.0)                      # the image


def test_nhwc_layout_and_dynamic_size():
    p = np.zeros((1, 5, 84), np.float32)
    sess = FakeSession(("N", "H", "W", 3), [("o", p)])
    with pytest.raises(ValidationError, match="input_width"):     # 10 rows: no size fits
        Detector(None, family="yolov8", session=FakeSession(("N", "H", "W", 3),
                                                            [("o", p[:, :, :10])]))
    # 84 rows are the cells of strides 8/16/32 on a 64 x 64 input: the size is read from them
    assert Detector(None, family="yolov8", session=sess).width == 64
    det = Detector(None, family="yolov8", session=sess, layout="nhwc", input_width=64,
                   input_height=64)
    out = det([np.zeros((10, 10, 3), np.uint8)] * 3)           # dynamic batch: one run
    assert len(out) == 3 and len(sess.feeds) == 1
    assert sess.feeds[0]["x"].shape == (3, 64, 64, 3)
