"""``Detector``: an image in, boxes out — preprocessing, the model, decoding, NMS, mapping back."""
import os
import time
from dataclasses import dataclass, field

import numpy as np

from .._validate import choice
from ..errors import ModelError, ValidationError
from . import autoconfig as _auto
from .decoders import Candidates, decoder
from .preprocess import load_image, to_input


def _bgr_to_rgb(image):
    if not isinstance(image, np.ndarray):
        raise ValidationError(f"channel_order='bgr' applies to arrays (paths and PIL images "
                              f"are read as RGB), got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 3:
        return image[:, :, ::-1]
    return image                        # grey: no order; load_image checks the rest


def _fed_size(x, layout):
    """(width, height) of a network input tensor."""
    return (x.shape[3], x.shape[2]) if layout == "nchw" else (x.shape[2], x.shape[1])


def _sane(cand):
    """Drop candidates that are no box: a non-finite box or score, or x2 < x1 / y2 < y1
    (a negative size from wild regression outputs)."""
    b = cand.boxes
    ok = np.isfinite(cand.scores) & np.isfinite(b).all(axis=1) & (b[:, 2] >= b[:, 0]) & \
        (b[:, 3] >= b[:, 1])
    if ok.all():
        return cand
    return Candidates(b[ok], cand.scores[ok], cand.class_ids[ok],
                      None if cand.keypoints is None else cand.keypoints[ok])


@dataclass
class Detections:
    """Detections of one image, in original image pixels, best score first.

    ``boxes`` (N, 4) float32 xyxy; ``scores`` (N,) float32; ``class_ids`` (N,) int64;
    ``labels`` N class names; ``keypoints`` (N, K, 2) float32 x, y, or None.
    """
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: list = field(default_factory=list)
    keypoints: np.ndarray = None

    def __len__(self):
        return len(self.scores)

    def to_list(self):
        """A JSON-friendly list of dicts, one per detection."""
        rows = []
        for i in range(len(self)):
            row = {"label": self.labels[i] if self.labels else str(int(self.class_ids[i])),
                   "class_id": int(self.class_ids[i]), "score": round(float(self.scores[i]), 4),
                   "box": [round(float(v), 1) for v in self.boxes[i]]}
            if self.keypoints is not None:
                row["keypoints"] = [[round(float(x), 1), round(float(y), 1)]
                                    for x, y in self.keypoints[i]]
            rows.append(row)
        return rows


class Detector:
    """An object detector from an ONNX model, configured from the model itself.

    ``Detector(model, preset=None, family=None, *, session=None, backend=None,
    num_threads=None, **overrides)``. ``model`` is a path, bytes or ModelProto. With no
    preset and no family the configuration comes from the model: its family from the graph's
    outputs (``edgedl.detect.autoconfig``; two fitting families is an error naming both), its
    input size, layout and labels from its declared input and ``metadata_props``, and the
    family's reference preprocessing as defaults; a bundled preset whose ``match`` block fits
    the model's inputs and outputs is used too. ``preset`` is a bundled preset name
    (``edgedl.detect.available_presets()``), a JSON file or a dict; ``family`` a decoder family;
    keyword ``overrides`` replace single settings (``score_threshold=0.4``, ``labels=...``).
    Layers: family defaults, then the model, then the preset, then overrides; ``config`` is
    the result and ``sources`` says where each setting came from (``model``, ``family``,
    ``preset``, ``user``). ``session`` replaces ``edgedl.InferenceSession`` with any object
    offering onnxruntime's API (``get_inputs``, ``get_outputs``, ``run``).

    ``det(image, channel_order="rgb")`` takes a path, a PIL image or an H×W×3 uint8 array —
    arrays are taken as RGB; pass ``channel_order="bgr"`` for an OpenCV (BGR) array — and
    returns :class:`Detections` (boxes clipped to the image, finite, x1 <= x2, y1 <= y2:
    candidates that are no box are dropped before NMS); a
    list of images gives a list. ``det.timings`` holds the last call's preprocess / inference
    / postprocess seconds.
    """

    def __new__(cls, model=None, *args, **kwargs):
        # three models given together: the MTCNN cascade (edgedl.detect.cascade), which has
        # this class's call interface
        if cls is Detector and isinstance(model, (list, tuple)):
            from .cascade import MTCNN
            if len(model) != 3:
                raise ValidationError(f"a list of models is a cascade of three (MTCNN's P-, R- "
                                      f"and O-Net), got {len(model)}")
            return MTCNN(*model, *args, **kwargs)
        return super().__new__(cls)

    def __init__(self, model, preset=None, family=None, *, session=None, backend=None,
                 num_threads=None, **overrides):
        name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        if name is not None and session is None and not os.path.exists(name):
            raise FileNotFoundError(f"model: no such file: {name}")
        proto = None
        if model is not None and (name is None or os.path.exists(name)):
            from ..onnx.graph import read_model
            proto = read_model(model)            # once: metadata, the head's ops, the session
        # configured before the session is built: a configuration error comes first and fast
        facts = _auto.model_facts(session if session is not None else _auto.ProtoIO(proto),
                                  proto, name)
        conf = _auto.configure(facts, preset, family, overrides)
        if session is None:
            from ..onnx.session import InferenceSession
            session = InferenceSession(proto, backend=backend, num_threads=num_threads)
        self.session = session
        self.backend = backend
        self.config, self.sources = conf.settings, conf.sources
        self.family, self.family_reason = conf.family, conf.reason
        self.num_classes, self.metadata = conf.num_classes, conf.metadata
        self.per_image_size = conf.per_image_size
        self.labels = self.config["labels"]
        self._decode = decoder(self.family)
        self._setup_io()
        self.timings = {}

    def _setup_io(self):
        cfg = self.config
        inputs = self.session.get_inputs()
        want = cfg["input_name"]
        inp = next((i for i in inputs if i.name == want), None)
        if inp is None:
            raise ValidationError(f"`input_name` {want!r} is not a model input; inputs: "
                                  f"{[i.name for i in inputs]}")
        self.input_name = inp.name
        shape = list(inp.shape or [])
        if len(shape) != 4:
            raise ModelError(f"input {inp.name!r} must be a 4-D image tensor, got shape {shape}")
        # None: a symbolic input sized per image by the family's reference rule (db)
        self.height, self.width = cfg["input_height"], cfg["input_width"]
        fixed = lambda d: isinstance(d, (int, np.integer)) and d > 0
        self.batch = int(shape[0]) if fixed(shape[0]) else None      # None: any batch
        typ = str(getattr(inp, "type", "") or "tensor(float)")
        if typ not in ("tensor(float)", "tensor(double)"):
            raise ModelError(f"input {inp.name!r} takes {typ}; the detector feeds float32 or "
                             f"float64 images")
        self.dtype = np.float64 if typ == "tensor(double)" else np.float32
        self.output_names = [o.name for o in self.session.get_outputs()]

    # ------------------------------------------------------------------ pipeline steps
    def input_size(self, image):
        """(width, height) of the network input for an H×W×3 image: the configured size, or
        for a symbolic input that nothing fixes, the family's per-image rule (PaddleOCR's
        DB: longest side at most ``limit``, both sides rounded to a multiple)."""
        if self.per_image_size is None:
            return self.width, self.height
        limit, mult = self.per_image_size
        h, w = image.shape[:2]
        r = min(1.0, limit / max(h, w))
        return (max(mult, int(round(int(w * r) / mult) * mult)),
                max(mult, int(round(int(h * r) / mult) * mult)))

    def preprocess(self, image, out=None):
        """One image -> (input tensor with batch axis 1, Transform); written into ``out`` if
        given (an array of the input's shape and dtype)."""
        cfg = self.config
        image = load_image(image)
        width, height = self.input_size(image)
        return to_input(image, width, height, cfg["resize"],
                        cfg["placement"], cfg["pad_value"], cfg["channel_order"], cfg["scale"],
                        cfg["mean"], cfg["std"], cfg["layout"], self.dtype, out=out,
                        backend=self.backend)

    def postprocess(self, outputs, transform, size=None):
        """Outputs of one image (batch axis removed) -> Detections in original pixels;
        ``size`` the (width, height) the image was fed at (default: the configured size)."""
        cfg = self.config
        width, height = size or (self.width, self.height)
        cand = self._decode(outputs, self.output_names, cfg, width, height)
        cand = _sane(cand)
        keep = self._nms(cand)
        boxes = transform.boxes_to_original(cand.boxes[keep], cfg["clip"])
        kps = None if cand.keypoints is None else transform.points_to_original(
            cand.keypoints[keep])
        ids = cand.class_ids[keep]
        return Detections(boxes, cand.scores[keep], ids, self._labels_of(ids), kps)

    def _labels_of(self, ids):
        if self.labels is None:
            return [str(int(c)) for c in ids]
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.labels)):
            # the class count could not be read from the model: a list of another length
            raise ValidationError(f"`labels` has {len(self.labels)} names but the model "
                                  f"reported class {int(ids.max())}: give one name per class")
        return [self.labels[c] for c in ids]

    def _nms(self, cand):
        n = len(cand.scores)
        if n == 0:
            return np.zeros(0, np.int64)
        from ..kernels import boxes as kb
        cfg = self.config
        if cfg["class_agnostic"] or not np.any(cand.class_ids != cand.class_ids[0]):
            keep = kb.nms(cand.boxes, cand.scores, cfg["iou_threshold"], backend=self.backend)
        else:
            keep = kb.batched_nms(cand.boxes, cand.scores, cand.class_ids, cfg["iou_threshold"],
                                  backend=self.backend)
        keep = np.asarray(keep, np.int64)
        # best first (ties: lower index first), at most max_detections
        keep = keep[np.argsort(-cand.scores[keep], kind="stable")]
        return keep[:cfg["max_detections"]]

    def _run(self, x):
        return self.session.run(None, {self.input_name: x})

    # ------------------------------------------------------------------ call
    def __call__(self, image, channel_order="rgb"):
        if isinstance(image, (list, tuple)):
            return self.detect_batch(image, channel_order)
        return self.detect_batch([image], channel_order)[0]

    def detect_batch(self, images, channel_order="rgb"):
        """A list of images -> a list of Detections (batched when the model allows it).
        ``channel_order`` is that of array images: "rgb" (default) or "bgr" (OpenCV)."""
        choice(channel_order, "channel_order", ("rgb", "bgr"))
        t0 = time.perf_counter()
        if channel_order == "bgr":
            images = [_bgr_to_rgb(im) for im in images]
        pre = [self.preprocess(im) for im in images]
        t1 = time.perf_counter()
        if self.batch == 1 or len(pre) <= 1 or self.per_image_size is not None:
            runs = [self._run(x) for x, _ in pre]
            per_image = [[o[0] if o.ndim >= 3 else o for o in outs] for outs in runs]
        else:
            size = self.batch or len(pre)
            per_image = []
            for s in range(0, len(pre), size):
                chunk = [x for x, _ in pre[s:s + size]]
                n = len(chunk)
                if self.batch and n < size:       # fixed batch: pad the last chunk
                    chunk += [np.zeros_like(chunk[0])] * (size - n)
                outs = self._run(np.concatenate(chunk))
                per_image += [[o[i] if o.ndim >= 3 else o for o in outs] for i in range(n)]
        t2 = time.perf_counter()
        res = [self.postprocess(outs, t, _fed_size(x, self.config["layout"]))
               for outs, (x, t) in zip(per_image, pre)]
        t3 = time.perf_counter()
        self.timings = {"preprocess": t1 - t0, "inference": t2 - t1, "postprocess": t3 - t2}
        return res

    def draw(self, image, detections=None):
        """``image`` with ``detections`` (detected now if None) drawn: a PIL image."""
        from .draw import draw_detections
        img = load_image(image)
        return draw_detections(img, self(img) if detections is None else detections)

    def __repr__(self):
        size = f"{self.width}x{self.height}" if self.width else "per image"
        return (f"Detector(family={self.family!r}, input={size}, "
                f"score_threshold={self.config['score_threshold']}, "
                f"iou_threshold={self.config['iou_threshold']})")
