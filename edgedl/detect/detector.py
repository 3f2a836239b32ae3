"""``Detector``: an image in, boxes out — preprocessing, the model, decoding, NMS, mapping back."""
import os
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError, ValidationError
from . import presets as _presets
from .decoders import decoder
from .preprocess import load_image, to_input


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
    """An object detector from an ONNX model and a preset.

    ``Detector(model, preset=None, family=None, *, session=None, backend=None,
    num_threads=None, **overrides)``. ``model`` is a path, bytes or ModelProto; ``preset`` a
    bundled preset name (``edgedl.detect.available_presets()``), a JSON file or a dict;
    ``family`` a decoder family with its defaults; keyword ``overrides`` replace single
    settings (``score_threshold=0.4``). Without preset and family, a bundled preset named like
    the model file is used. ``session`` replaces ``edgedl.InferenceSession`` with any object
    offering onnxruntime's API (``get_inputs``, ``get_outputs``, ``run``).

    ``det(image)`` takes a path, a PIL image or an H×W×3 uint8 RGB array and returns
    :class:`Detections`; a list of images gives a list. ``det.timings`` holds the last call's
    preprocess / inference / postprocess seconds.
    """

    def __init__(self, model, preset=None, family=None, *, session=None, backend=None,
                 num_threads=None, **overrides):
        name = os.fspath(model) if isinstance(model, (str, os.PathLike)) else None
        if name is not None and session is None and not os.path.exists(name):
            raise FileNotFoundError(f"model: no such file: {name}")
        self.config = _presets.resolve(preset, family, overrides, name)
        self.family = self.config["family"]
        self.backend = backend
        self._decode = decoder(self.family)
        if session is None:
            from ..onnx.session import InferenceSession
            session = InferenceSession(model, backend=backend, num_threads=num_threads)
        self.session = session
        self.labels = _presets.resolve_labels(self.config["labels"])
        self._setup_io()
        self.timings = {}

    def _setup_io(self):
        cfg = self.config
        inputs = self.session.get_inputs()
        want = cfg["input_name"]
        inp = next((i for i in inputs if i.name == want), None) if want else inputs[0]
        if inp is None:
            raise ValidationError(f"input_name {want!r} is not a model input; inputs: "
                                  f"{[i.name for i in inputs]}")
        self.input_name = inp.name
        shape = list(inp.shape or [])
        if len(shape) != 4:
            raise ModelError(f"input {inp.name!r} must be a 4-D image tensor, got shape {shape}")
        hw = shape[2:4] if cfg["layout"] == "nchw" else shape[1:3]
        fixed = lambda d: isinstance(d, (int, np.integer)) and d > 0
        self.height = cfg["input_height"] or (int(hw[0]) if fixed(hw[0]) else None)
        self.width = cfg["input_width"] or (int(hw[1]) if fixed(hw[1]) else None)
        if self.width is None or self.height is None:
            raise ValidationError(f"input {inp.name!r} has a dynamic size {shape}: give "
                                  f"input_width= and input_height=")
        self.batch = int(shape[0]) if fixed(shape[0]) else None      # None: any batch
        self.dtype = np.float64 if "double" in str(getattr(inp, "type", "")) else np.float32
        self.output_names = [o.name for o in self.session.get_outputs()]

    # ------------------------------------------------------------------ pipeline steps
    def preprocess(self, image, out=None):
        """One image -> (input tensor with batch axis 1, Transform); written into ``out`` if
        given (an array of the input's shape and dtype)."""
        cfg = self.config
        return to_input(load_image(image), self.width, self.height, cfg["resize"],
                        cfg["placement"], cfg["pad_value"], cfg["channel_order"], cfg["scale"],
                        cfg["mean"], cfg["std"], cfg["layout"], self.dtype, out=out,
                        backend=self.backend)

    def postprocess(self, outputs, transform):
        """Outputs of one image (batch axis removed) -> Detections in original pixels."""
        cfg = self.config
        cand = self._decode(outputs, self.output_names, cfg, self.width, self.height)
        keep = self._nms(cand)
        boxes = transform.boxes_to_original(cand.boxes[keep], cfg["clip"])
        kps = None if cand.keypoints is None else transform.points_to_original(
            cand.keypoints[keep])
        ids = cand.class_ids[keep]
        labels = [self._label(c) for c in ids]
        return Detections(boxes, cand.scores[keep], ids, labels, kps)

    def _label(self, c):
        return self.labels[c] if self.labels is not None and 0 <= c < len(self.labels) \
            else str(int(c))

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
    def __call__(self, image):
        if isinstance(image, (list, tuple)):
            return self.detect_batch(image)
        return self.detect_batch([image])[0]

    def detect_batch(self, images):
        """A list of images -> a list of Detections (batched when the model allows it)."""
        t0 = time.perf_counter()
        pre = [self.preprocess(im) for im in images]
        t1 = time.perf_counter()
        if self.batch == 1 or len(pre) <= 1:
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
        res = [self.postprocess(outs, t) for outs, (_, t) in zip(per_image, pre)]
        t3 = time.perf_counter()
        self.timings = {"preprocess": t1 - t0, "inference": t2 - t1, "postprocess": t3 - t2}
        return res

    def draw(self, image, detections=None):
        """``image`` with ``detections`` (detected now if None) drawn: a PIL image."""
        from .draw import draw_detections
        img = load_image(image)
        return draw_detections(img, self(img) if detections is None else detections)

    def __repr__(self):
        return (f"Detector(family={self.family!r}, input={self.width}x{self.height}, "
                f"score_threshold={self.config['score_threshold']}, "
                f"iou_threshold={self.config['iou_threshold']})")
