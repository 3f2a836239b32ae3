"""Configuration from the model: which family decodes it, its input, its labels.

``model_facts`` reads what a model declares (inputs, outputs, ``metadata_props``, the ops of
its head); ``RULES`` holds one rule per family that looks at those facts and returns a
:class:`Match` with a reason and the settings it read (strides, what the graph decodes, the
class count); ``configure`` layers the sources into one configuration and remembers where
each setting came from:

    family defaults  <-  read from the model  <-  preset  <-  user

A bundled preset is found by the model's content (input / output names and shapes), never by
its file name, and overrides inference only where it differs. Setting names in error messages
are written `like_this`, so the command line can show them as its flags.
"""
import ast
import dataclasses
import json
import math
import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError, ValidationError
from . import decoders
from . import presets as _presets

# ----------------------------------------------------------------------------- keys
#: key -> (meaning, command-line value). Keys of new families without an entry still get an
#: option and a line in the reference ("no description").
KEYS = {
    "input_name": ("model input fed with the image (default: the first input)", "NAME"),
    "input_width": ("network input width in pixels (default: the model's declared input, or "
                    "its metadata `imgsz`)", "W"),
    "input_height": ("network input height in pixels (as input_width)", "H"),
    "resize": ("stretch to the input size, or letterbox (keep the aspect ratio, pad)",
               "stretch|letterbox"),
    "placement": ("where a letterboxed image sits: topleft or center", "topleft|center"),
    "pad_value": ("letterbox padding value (0..255, before scale/mean/std)", "V"),
    "channel_order": ("channel order the model expects (images are read as RGB)", "rgb|bgr"),
    "scale": ("pixel multiplier before mean/std: input = (pixel * scale - mean) / std", "S"),
    "mean": ("per-channel mean subtracted after scale (1 or 3 values)", "M,M,M"),
    "std": ("per-channel divisor after the mean (1 or 3 values)", "S,S,S"),
    "layout": ("input layout nchw or nhwc (default: from the declared input)", "nchw|nhwc"),
    "score_threshold": ("keep candidates scoring above this", "T"),
    "iou_threshold": ("NMS: suppress boxes overlapping a better one by more than this IoU",
                      "T"),
    "class_agnostic": ("NMS across classes (true) or per class (false)", "true|false"),
    "max_detections": ("at most this many detections per image", "N"),
    "clip": ("clip boxes to the image", "true|false"),
    "labels": ("class names: a text file (one name a line), a bundled set (coco80) or a "
               "comma-separated list; must have one name per class", "FILE|SET|A,B,..."),
    "strides": ("feature-map strides of the output levels (default: read from the output "
                "shapes where possible)", "8,16,32"),
    "obj_power": ("score = objectness**obj_power * class**cls_power", "P"),
    "cls_power": ("see obj_power", "P"),
    "decoded": ("the graph already decodes boxes to input pixels (read from the graph)",
                "true|false"),
    "boxes_decoded": ("ssd: boxes are already xyxy (decoded in graph) rather than prior "
                      "deltas", "true|false"),
    "normalized": ("ssd: decoded boxes are in [0, 1] rather than pixels", "true|false"),
    "background_class": ("ssd: index of the background score column (none: no background)",
                         "K|none"),
    "score_activation": ("activation still to apply to the scores: none (done in graph), "
                         "sigmoid or softmax", "none|sigmoid|softmax"),
    "variances": ("ssd: prior-box variances (center, size)", "V,V"),
    "min_sizes": ("ssd: prior sizes per level, JSON, e.g. [[10,16,24],[32,48]]", "JSON"),
    "steps": ("ssd: prior steps per level", "8,16,32,64"),
    "apply_sigmoid": ("yolov5: apply the sigmoid to raw head outputs (false when the graph "
                      "did)", "true|false"),
    "anchors": ("yolov5: anchor w,h pairs per level in input pixels, JSON, e.g. "
                "[[10,13,16,30,33,23],[30,61,62,45,59,119]]", "JSON"),
    "row_order": ("yolov5 flattened rows: anchor_major (YOLOv5's view(na, H, W, 5+C)) or "
                  "cell_major", "anchor_major|cell_major"),
    "reg_max": ("GFL heads: bins per box side minus one", "N"),
    "center_offset": ("GFL heads: cell centre = (grid + offset) * stride (nanodet: none = by "
                      "generation)", "O|none"),
    "generation": ("nanodet: m (NanoDet-m, centres at +0.5 stride), plus (NanoDet-Plus) or "
                   "auto (told from the outputs)", "auto|m|plus"),
    "num_anchors": ("scrfd: anchors per cell", "N"),
    "variant": ("centernet: centernet, centerface, or auto (CenterFace for one class with 5 "
                "landmarks)", "auto|centernet|centerface"),
    "peak_nms": ("centernet: keep only heatmap cells that are the maximum of their 3x3 "
                 "neighbourhood", "true|false"),
    "top_k": ("centernet: at most this many heatmap peaks", "K"),
    "mask_threshold": ("db: probability above which a pixel is text", "T"),
    "unclip_ratio": ("db: grow each text box by area * ratio / perimeter", "R"),
    "min_size": ("db: drop text boxes with a shorter side (pixels)", "N"),
    "dilate": ("db: dilate the text mask by 2x2 first", "true|false"),
    "max_candidates": ("db: at most this many text regions", "N"),
    "swap_xy": ("mtcnn: the models see transposed images (the reference's convention)",
                "true|false"),
    "min_face_size": ("mtcnn: smallest face in pixels (sets the pyramid's first scale)", "PX"),
    "scale_factor": ("mtcnn: scale between pyramid levels", "F"),
    "pnet_threshold": ("mtcnn: P-Net face probability threshold", "T"),
    "pnet_nms": ("mtcnn: NMS IoU within one pyramid level", "T"),
    "pnet_merge_nms": ("mtcnn: NMS IoU over all levels' P-Net boxes", "T"),
    "rnet_threshold": ("mtcnn: R-Net face probability threshold", "T"),
    "rnet_nms": ("mtcnn: NMS IoU after the R-Net", "T"),
}

#: metadata keys read (ONNX metadata_props)
_META_LABEL_KEYS = ("names", "character", "labels")


def describe(key):
    return KEYS.get(key, ("(no description)", "VALUE"))


# ----------------------------------------------------------------------------- facts
def _fixed(d):
    return int(d) if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None


@dataclass
class Output:
    name: str
    shape: list          # without the batch axis when the output has one (rank >= 3)


@dataclass
class ModelFacts:
    """What a model declares: enough to pick a family without running it."""
    name: str
    input_name: str
    input_shape: list
    input_type: str
    outputs: list
    metadata: dict
    layout: str = "nchw"
    width: int = None
    height: int = None
    size_from: str = None         # "input" or "metadata"
    graph: "HeadGraph" = None

    def describe_outputs(self):
        return ", ".join(f"{o.name} {list(o.shape)}" for o in self.outputs)


_SHAPE_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast"}
#: ops whose inputs after the first are shapes, indices or sizes
_DATA_FIRST = {"Slice", "Expand", "Tile", "Gather", "Pad", "Resize", "Split", "TopK"}


class HeadGraph:
    """The ops near the outputs: what the graph already decodes."""

    def __init__(self, proto):
        g = proto.graph
        self.producer = {o: n for n in g.node for o in n.output if o}
        self.dims = {t.name: list(t.dims) for t in g.initializer}

    def _skip(self, name):
        n = self.producer.get(name)
        while n is not None and n.op_type in _SHAPE_OPS and n.input:
            name = n.input[0]
            n = self.producer.get(name)
        return n

    def head_ops(self, name):
        """Op types between an output and the last Conv / MatMul before it (YOLOv8's DFL, a
        1-output-channel Conv over a Softmax, is part of the head)."""
        seen, ops, todo = set(), set(), [name]
        while todo and len(seen) < 2000:
            n = self.producer.get(todo.pop())
            if n is None or id(n) in seen:
                continue
            seen.add(id(n))
            if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm"):
                w = self.dims.get(n.input[1]) if len(n.input) > 1 else None
                src = self._skip(n.input[0])
                if not (w and w[0] == 1 and src is not None and src.op_type == "Softmax"):
                    continue
            if n.op_type == "Shape":
                continue                      # shape arithmetic is not a decode
            ops.add(n.op_type)
            # data only: the shape / index inputs of a Reshape, Slice, ... are computed
            data = n.input[:1] if n.op_type in _SHAPE_OPS | _DATA_FIRST else n.input
            todo.extend(i for i in data if i)
        return ops

    def concat_kinds(self, name):
        """Producer op types of the innermost Concat feeding an output (its first branch at
        every level), e.g. ['Conv', 'Sigmoid', 'Sigmoid'] for YOLOX's (box, obj, cls)."""
        n = self._skip(name)
        kinds = None
        while n is not None and n.op_type == "Concat":
            parts = [self._skip(i) for i in n.input]
            kinds = [p.op_type if p is not None else "input" for p in parts]
            if parts and parts[0] is not None and parts[0].op_type == "Concat":
                n = parts[0]
            else:
                break
        return kinds


def read_metadata(proto=None, session=None):
    """ONNX metadata_props as a dict (from the proto, or an onnxruntime-like session)."""
    if proto is not None:
        return {p.key: p.value for p in proto.metadata_props}
    try:
        meta = session.get_modelmeta()
        return dict(getattr(meta, "custom_metadata_map", None) or {})
    except Exception:            # a session without get_modelmeta: no metadata
        return {}


_ELEM_TYPES = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32",
               7: "int64", 9: "bool", 10: "float16", 11: "double", 16: "bfloat16"}


class _Arg:
    def __init__(self, vi):
        t = vi.type.tensor_type
        self.name = vi.name
        self.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in t.shape.dim] if t.HasField("shape") else None
        # onnxruntime's type names (without importing onnx: edgedl's own reader may be in use)
        self.type = f"tensor({_ELEM_TYPES.get(t.elem_type, f'type {t.elem_type}')})"


class ProtoIO:
    """``get_inputs`` / ``get_outputs`` of a ModelProto (initializers are not inputs), for
    facts without a session (``edgedl info``)."""

    def __init__(self, proto):
        inits = {t.name for t in proto.graph.initializer}
        self._inputs = [_Arg(vi) for vi in proto.graph.input if vi.name not in inits]
        self._outputs = [_Arg(vi) for vi in proto.graph.output]

    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)


def model_facts(session, proto=None, name=None):
    """Facts of a model from its session (``get_inputs`` / ``get_outputs``) and, when
    available, its ModelProto (metadata and the head's ops)."""
    inputs = session.get_inputs()
    if not inputs:
        raise ModelError(f"model {name or '<in memory>'} has no inputs")
    inp = inputs[0]
    outs = []
    for o in session.get_outputs():
        shape = list(o.shape or [])
        if len(shape) >= 3 and (shape[0] == 1 or _fixed(shape[0]) is None):
            shape = shape[1:]
        outs.append(Output(o.name, shape))
    f = ModelFacts(name or "<in memory>", inp.name, list(inp.shape or []),
                   str(getattr(inp, "type", "")), outs, read_metadata(proto, session),
                   graph=HeadGraph(proto) if proto is not None else None)
    s = f.input_shape
    if len(s) == 4:
        c1, c3 = _fixed(s[1]), _fixed(s[3])
        f.layout = "nhwc" if c3 in (1, 3) and c1 not in (1, 3) else "nchw"
        h, w = (s[2], s[3]) if f.layout == "nchw" else (s[1], s[2])
        if _fixed(h) and _fixed(w):
            f.height, f.width, f.size_from = int(h), int(w), "input"
    if f.width is None:
        size = _meta_imgsz(f.metadata)
        if size:
            f.height, f.width = size
            f.size_from = "metadata"
    return f


def _literal(text):
    """A Python / JSON literal from metadata text (ast.literal_eval: never eval)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        try:
            return json.loads(text)
        except ValueError:
            return None


def _meta_imgsz(meta):
    v = _literal(meta["imgsz"]) if "imgsz" in meta else None
    if isinstance(v, int):
        v = [v, v]
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(_fixed(x) for x in v):
        return int(v[0]), int(v[1])           # Ultralytics: [height, width]
    return None


def metadata_labels(meta):
    """(labels list, metadata key) from Ultralytics ``names``, Paddle ``character`` or
    ``labels``; (None, None) when the model carries none."""
    for key in _META_LABEL_KEYS:
        if key not in meta:
            continue
        text = meta[key]
        v = _literal(text)
        if isinstance(v, dict):
            try:
                ids = sorted(int(k) for k in v)
            except (TypeError, ValueError):
                continue
            if ids == list(range(len(ids))):
                return [str(v[k] if k in v else v[str(k)]) for k in ids], key
            continue
        if isinstance(v, (list, tuple)):
            return [str(x) for x in v], key
        if key == "names":                 # Ultralytics writes a dict literal: nothing else
            continue
        sep = "\n" if "\n" in text else ","
        names = [s.strip() for s in text.split(sep) if s.strip()]
        if names:
            return names, key
    return None, None


# ----------------------------------------------------------------------------- rules
@dataclass
class Match:
    family: str
    reason: str
    settings: dict = field(default_factory=dict)
    num_classes: int = None


def _cells(width, height, strides, per_cell=1):
    return sum(math.ceil(width / s) * math.ceil(height / s) for s in strides) * per_cell


def _fit_rows(f, n, strides, per_cell=1):
    """True when ``n`` rows are the cells of ``strides`` on the input (or, with a symbolic
    input, on some square input, which then becomes the size read from the model)."""
    if not _fixed(n):
        return False
    if f.width and f.height:
        return _cells(f.width, f.height, strides, per_cell) == n
    return any(_cells(t, t, strides, per_cell) == n for t in range(32, 2049, 32))


def _size_from_rows(f, n, strides, per_cell=1):
    if f.width and f.height:
        return {}
    t = next(t for t in range(32, 2049, 32) if _cells(t, t, strides, per_cell) == n)
    return {"input_width": t, "input_height": t}


def _ints(shape):
    return all(_fixed(d) for d in shape)


def _is_ultralytics(f):
    return "names" in f.metadata and ("imgsz" in f.metadata or "stride" in f.metadata)


def _rule_fastestdet(f):
    if len(f.outputs) != 1 or len(f.outputs[0].shape) != 3:
        return None
    c, h, w = f.outputs[0].shape
    if not (_fixed(c) and c >= 6):
        return None
    if f.width and (h, w) != (math.ceil(f.height / 16), math.ceil(f.width / 16)):
        return None
    return Match("fastestdet", f"one ({c}, {h}, {w}) map at stride 16: objectness, 4 box "
                               f"values, {c - 5} class scores", {}, c - 5)


def _rule_ssd(f):
    if len(f.outputs) != 2 or any(len(o.shape) != 2 for o in f.outputs):
        return None
    a, b = _ssd_boxes_first(*f.outputs)
    if a.shape[1] != 4 or a.shape[0] != b.shape[0] or not (_fixed(b.shape[1]) and
                                                            b.shape[1] >= 2):
        return None
    st, how = _ssd_decoding(f, a, b)
    return Match("ssd", f"two outputs with the same {a.shape[0]} rows: boxes {a.name!r} "
                        f"(N, 4) and scores {b.name!r} (N, {b.shape[1]}) with a background "
                        f"column; {how}", st, b.shape[1] - 1)


def _ssd_role(o):
    """"boxes" or "scores" by an SSD output's name, or None."""
    name = o.name.lower()
    if any(k in name for k in ("box", "loc")):
        return "boxes"
    if any(k in name for k in ("score", "conf")):
        return "scores"
    return None


def _ssd_boxes_first(a, b):
    """The two SSD outputs as (boxes, scores): by their names, else the one 4 wide first."""
    if _ssd_role(a) == "scores" or _ssd_role(b) == "boxes" or (_ssd_role(a) is None and
                                                                a.shape[1] != 4):
        return b, a
    return a, b


def _ssd_decoding(f, a, b):
    """({"boxes_decoded", "score_activation"}, why) from the head's ops in the graph; without
    it, whether the boxes are decoded by the boxes output's name ("loc": prior deltas)."""
    st = {}
    if f.graph is not None:
        st["boxes_decoded"] = "Exp" in f.graph.head_ops(a.name)
        done = f.graph.head_ops(b.name) & {"Softmax", "Sigmoid"}
        st["score_activation"] = "none" if done else "softmax"
        how = (f"boxes {'decoded in graph (Exp)' if st['boxes_decoded'] else 'raw prior deltas'}"
               f", scores {'activated in graph' if done else 'raw logits'}")
    else:
        st["boxes_decoded"] = "loc" not in a.name.lower()
        how = f"boxes {'decoded' if st['boxes_decoded'] else 'prior deltas'} (by output name)"
    return st, how


def _single_rows(f):
    """(N, D) of a lone rank-2 output, else None."""
    if len(f.outputs) != 1 or len(f.outputs[0].shape) != 2:
        return None
    n, d = f.outputs[0].shape
    return (n, d) if _fixed(n) and _fixed(d) else None


def _rule_yolox(f):
    nd = _single_rows(f)
    if nd is None or nd[1] < 6 or not _fit_rows(f, nd[0], (8, 16, 32)) or _is_ultralytics(f):
        return None
    st = _size_from_rows(f, nd[0], (8, 16, 32))
    why = ""
    if f.graph is not None:
        name = f.outputs[0].name
        kinds, ops = f.graph.concat_kinds(name), f.graph.head_ops(name)
        if kinds and kinds[0] == "Sigmoid":
            return None                  # class scores first: nanodet
        # a decode in graph: exp() of the sizes, grid offsets and strides (YOLOX's
        # decode_in_inference, YOLOv6); a raw head only activates and concatenates
        arith = sorted(ops & {"Exp", "Mul", "Add", "Sub"})
        st["decoded"] = bool(arith)
        why = f"; boxes {'decoded in graph (' + ', '.join(arith) + ')' if arith else 'raw'}"
        if kinds:
            why += f", head concat {'+'.join(kinds)} = box, objectness, classes"
    return Match("yolox", f"one ({nd[0]}, {nd[1]}) output: one row per cell of strides "
                          f"8/16/32, 4 box + objectness + {nd[1] - 5} classes{why}",
                 st, nd[1] - 5)


_NA = 3          # anchors per cell of YOLOv5-style heads


def _rule_yolov5(f):
    nd = _single_rows(f)
    if nd is not None:
        return _yolov5_rows(f, nd)
    if len(f.outputs) < 2 or not f.width:
        return None
    return _yolov5_grids(f)


def _yolov5_rows(f, nd):
    """One (N, 5 + C) output: 3 anchors per cell of strides 8/16/32."""
    if nd[1] < 6 or not _fit_rows(f, nd[0], (8, 16, 32), _NA):
        return None
    # the Detect layer's decode multiplies by the grid / anchors; a raw head only
    # reshapes and concatenates (without the graph: YOLOv5's default export, decoded)
    ops = f.graph.head_ops(f.outputs[0].name) if f.graph is not None else {"Mul"}
    st = dict(_size_from_rows(f, nd[0], (8, 16, 32), _NA),
              decoded=bool(ops & {"Mul", "Pow", "Add", "Exp"}))
    return Match("yolov5", f"one ({nd[0]}, {nd[1]}) output: 3 anchors per cell of strides "
                           f"8/16/32, {'decoded in graph' if st['decoded'] else 'raw'}, "
                           f"{nd[1] - 5} classes", st, nd[1] - 5)


def _yolov5_grids(f):
    """One raw anchor-grid output per stride (any of the layouts _yolov5_level knows), all
    with the same class count."""
    levels = []
    for o in f.outputs:
        hit = _yolov5_level(f, o.shape)
        if hit is None:
            return None
        levels.append(hit)
    strides = sorted(s for s, _, _ in levels)
    ncls = {c for _, c, _ in levels}
    if len(set(strides)) != len(strides) or len(ncls) != 1 or min(ncls) < 1:
        return None
    st = {"strides": strides, "decoded": False}
    why = ""
    if f.graph is not None:
        tails = [f.graph._skip(o.name) for o in f.outputs]
        st["apply_sigmoid"] = not all(t is not None and t.op_type == "Sigmoid" for t in tails)
        why = "; sigmoid " + ("still to apply" if st["apply_sigmoid"] else "in graph")
    kinds = sorted({k for _, _, k in levels})
    return Match("yolov5", f"{len(levels)} raw anchor-grid outputs ({', '.join(kinds)}) at "
                           f"strides {strides}, {_NA} anchors, {min(ncls)} classes{why}", st,
                 min(ncls))


def _yolov5_level(f, shape):
    """(stride, classes, layout) of one per-stride YOLOv5-style output, or None."""
    grids = {(math.ceil(f.height / s), math.ceil(f.width / s)): s for s in (8, 16, 32, 64, 128)}
    if not _ints(shape):
        return None
    if len(shape) == 4 and shape[0] == _NA and tuple(shape[1:3]) in grids:
        return grids[tuple(shape[1:3])], shape[3] - 5, "(na, H, W, 5+C)"
    if len(shape) == 3 and tuple(shape[1:]) in grids and shape[0] % _NA == 0 and \
            shape[0] // _NA > 5:
        return grids[tuple(shape[1:])], shape[0] // _NA - 5, "(na*(5+C), H, W)"
    if len(shape) == 3 and tuple(shape[:2]) in grids and shape[2] > 5 * _NA:
        return grids[tuple(shape[:2])], shape[2] - 5 * _NA, "(H, W, na*5+C)"
    if len(shape) == 2 and shape[1] > 5:
        for (h, w), s in grids.items():
            if h * w * _NA == shape[0]:
                return s, shape[1] - 5, "(H*W*na, 5+C)"
    return None


def _rule_yolov8(f):
    nd = _single_rows(f)
    if nd is None:
        return None
    a, b = nd
    transposed = a > b
    n, d = (a, b) if transposed else (b, a)
    if d < 5 or not _fit_rows(f, n, (8, 16, 32)):
        return None
    st = _size_from_rows(f, n, (8, 16, 32))
    ops = f.graph.head_ops(f.outputs[0].name) if f.graph is not None else set()
    evidence = ("Ultralytics metadata" if _is_ultralytics(f) else
                "DFL softmax in graph" if "Softmax" in ops else None)
    if transposed and evidence is None and f.graph is not None:
        return None                          # (N, 5+C) without DFL: yolox / yolov5 layouts
    layout = f"({n}, {d}) transposed" if transposed else f"({d}, {n})"
    return Match("yolov8", f"one {layout} output: cx, cy, w, h + {d - 4} classes per cell of "
                           f"strides 8/16/32, no objectness"
                           + (f" ({evidence})" if evidence else ""), st, d - 4)


def _gfl_strides(f, n):
    for strides in ((8, 16, 32, 64), (8, 16, 32)):
        if _fit_rows(f, n, strides):
            return list(strides)
    return None


def _rule_nanodet(f):
    nb = 4 * (decoders.family_defaults("nanodet")["reg_max"] + 1)
    nd = _single_rows(f)
    if nd is None:
        return _gfl_per_level(f, "nanodet", nb)
    if _is_ultralytics(f):
        return None
    strides = _gfl_strides(f, nd[0])
    if strides is None or nd[1] <= nb:
        return None
    why = ""
    if f.graph is not None:
        kinds = f.graph.concat_kinds(f.outputs[0].name)
        if not kinds or kinds[0] != "Sigmoid" or "Softmax" in f.graph.head_ops(
                f.outputs[0].name):
            return None
        why = f"; head concat {'+'.join(kinds)} = class scores (sigmoid in graph), box bins"
    st = dict(_size_from_rows(f, nd[0], strides), strides=strides)
    return Match("nanodet", f"one ({nd[0]}, {nd[1]}) output: one row per cell of strides "
                            f"{strides}, {nd[1] - nb} classes + 4x{nb // 4} GFL bins{why}",
                 st, nd[1] - nb)


def _gfl_per_level(f, family, nb):
    """GFL heads with outputs per stride: class scores (N, C) and box bins (N, 4 * bins) per
    level. NanoDet-m names them cls_pred_stride_8 / dis_pred_stride_8 and has 3 levels;
    PaddleDetection's PicoDet has 4 and Paddle tensor names. Three unnamed levels fit both."""
    groups = _per_level(f)
    if groups and family == "nanodet" and len(groups) == len(f.outputs) >= 3:
        return _nanodet_merged_levels(f, groups, nb)
    if not groups or len(groups) < 3 or len(f.outputs) != 2 * len(groups):
        return None
    ncls = _gfl_classes(groups, nb)
    strides = _level_strides(f, groups, 1)
    if strides is None or ncls is None:
        return None
    nanodet_names = any("stride" in o.name.lower() for o in f.outputs)
    fits = family == "nanodet" if nanodet_names else (len(groups) == 3 or family == "picodet")
    if not fits:
        return None
    st = {"strides": strides}
    if f.graph is not None:
        st["score_activation"] = _gfl_score_activation(f, ncls, nb)
    names = " (named by stride)" if nanodet_names else ""
    return Match(family, f"{len(f.outputs)} outputs{names}, per stride {strides} class scores "
                         f"(N, {ncls}) and GFL box bins (N, {nb})", st, ncls)


def _gfl_classes(groups, nb):
    """The class count of per-level (scores, box bins) pairs: each level has a pair of
    outputs, one ``nb`` wide, and all levels the same other width; else None."""
    ncls = set()
    for outs in groups.values():
        dims = sorted(o.shape[1] for o in outs)
        if len(dims) != 2 or dims.count(nb) < 1:     # levels of unequal size: no GFL pairs
            return None
        ncls.add(dims[0] if dims[1] == nb else dims[1])
    return ncls.pop() if len(ncls) == 1 else None


def _gfl_score_activation(f, c, nb):
    """"none" when every class-score output ends in Sigmoid in the graph, else "sigmoid"."""
    cls = [o for o in f.outputs if o.shape[1] == c] if c != nb else f.outputs[::2]
    tails = [f.graph._skip(o.name) for o in cls]
    return "none" if all(t is not None and t.op_type == "Sigmoid" for t in tails) else \
        "sigmoid"


def _nanodet_merged_levels(f, groups, nb):
    """NanoDet-m exported with one (N_s, C + 4 * bins) output per stride."""
    dims = {o.shape[1] for o in f.outputs}
    strides = _level_strides(f, groups, 1)
    if len(dims) != 1 or min(dims) <= nb or strides is None:
        return None
    c = min(dims) - nb
    return Match("nanodet", f"{len(f.outputs)} outputs, per stride {strides} class scores and "
                            f"GFL box bins merged (N, {c} + {nb})", {"strides": strides}, c)


def _per_level(f):
    """Group rank-2 outputs by row count -> {rows: [Output]}, or None if any is not (N, D)."""
    if any(len(o.shape) != 2 or not _ints(o.shape) for o in f.outputs):
        return None
    groups = {}
    for o in f.outputs:
        groups.setdefault(o.shape[0], []).append(o)
    return groups


def _level_strides(f, rows, per_cell):
    """Strides of the levels with these row counts (input size needed), or None."""
    if not f.width:
        return None
    by_rows = {math.ceil(f.width / s) * math.ceil(f.height / s) * per_cell: s
               for s in (8, 16, 32, 64, 128)}
    if not all(r in by_rows for r in rows):
        return None
    return sorted(by_rows[r] for r in rows)


def _rule_picodet(f):
    return _gfl_per_level(f, "picodet", 4 * (decoders.family_defaults("picodet")["reg_max"] + 1))


def _rule_yunet(f):
    groups = _per_level(f)
    if not groups or len(f.outputs) != 4 * len(groups):
        return None
    for outs in groups.values():
        dims = sorted(o.shape[1] for o in outs)
        if dims[:3] != [1, 1, 4] or dims[3] % 2:
            return None
    strides = _level_strides(f, groups, 1)
    if strides is None:
        return None
    return Match("yunet", f"{len(f.outputs)} outputs, per stride {strides} cls (N, 1), obj "
                          f"(N, 1), bbox (N, 4), kps (N, {dims[3]})", {"strides": strides}, 1)


def _rule_scrfd(f):
    groups = _per_level(f)
    if not groups or len(f.outputs) not in (2 * len(groups), 3 * len(groups)):
        return None
    for outs in groups.values():
        dims = sorted(o.shape[1] for o in outs)
        if dims[:2] != [1, 4] or (len(dims) == 3 and dims[2] % 2):
            return None
    for na in (2, 1):
        strides = _level_strides(f, groups, na)
        if strides is not None:
            kps = " and keypoints" if len(f.outputs) == 3 * len(groups) else ""
            return Match("scrfd", f"{len(f.outputs)} outputs, per stride {strides} score "
                                  f"(N, 1), bbox distances (N, 4){kps}, {na} anchors per cell",
                         {"strides": strides, "num_anchors": na}, 1)
    return None


def _rule_centernet(f):
    outs = f.outputs
    if len(outs) not in (3, 4) or any(len(o.shape) != 3 for o in outs):
        return None
    if len({tuple(o.shape[1:]) for o in outs}) != 1:
        return None
    named = _centernet_maps_by_role(outs)
    if named is None:
        return None
    hm = named["heatmap"]
    if not _fixed(hm.shape[0]) or any(o.shape[0] != 2 for k, o in named.items()
                                      if k in ("scale", "offset")):
        return None
    h, w = hm.shape[1:]
    if f.width and (h, w) != (math.ceil(f.height / 4), math.ceil(f.width / 4)):
        return None
    lm = " + landmarks (10)" if len(outs) == 4 else ""
    st, why = _heatmap_activation(f, hm)
    return Match("centernet", f"heatmap ({hm.shape[0]}, {h}, {w}) + scale (2) + offset (2)"
                              f"{lm} at stride 4{why}", st, hm.shape[0])


def _heatmap_activation(f, hm):
    """({"score_activation": ...}, why) from the graph: a heatmap ending in Sigmoid is
    activated already; without the graph, ({}, "") (the family default)."""
    if f.graph is None:
        return {}, ""
    t = f.graph._skip(hm.name)
    act = "none" if t is not None and t.op_type == "Sigmoid" else "sigmoid"
    return {"score_activation": act}, \
        f"; heatmap sigmoid {'in graph' if act == 'none' else 'to apply'}"


def _centernet_role(name):
    """A CenterNet output's role by its name (heatmap, scale, offset, landmarks), or None."""
    nm = name.lower()
    if "heat" in nm or nm in ("hm", "hmap"):
        return "heatmap"
    if "scale" in nm or "wh" in nm or "size" in nm:
        return "scale"
    if "off" in nm or "reg" in nm:
        return "offset"
    if "landmark" in nm or "lm" in nm:
        return "landmarks"
    return None


def _centernet_maps_by_role(outs):
    """{role: output} of CenterNet's maps: by their names when each names its role, else by
    channel count (C, 2, 2 [, 10]); None when neither fits."""
    named = {}
    for o in outs:
        role = _centernet_role(o.name)
        if role:
            named[role] = o
    if len(named) == len(outs):
        return named
    two = [o for o in outs if o.shape[0] == 2]
    ten = [o for o in outs if o.shape[0] == 10]
    rest = [o for o in outs if o.shape[0] not in (2, 10)]
    if len(two) != 2 or len(rest) != 1 or len(ten) != len(outs) - 3:
        return None
    return {"heatmap": rest[0], "scale": two[0], "offset": two[1]}


def _rule_db(f):
    if len(f.outputs) != 1 or len(f.outputs[0].shape) != 3:
        return None
    c, h, w = f.outputs[0].shape
    s = f.input_shape
    ih, iw = (s[2], s[3]) if len(s) == 4 and f.layout == "nchw" else (
        (s[1], s[2]) if len(s) == 4 else (None, None))
    both_symbolic = not any(_fixed(d) for d in (h, w, ih, iw)) and ih is not None
    if c != 1 or h is None or ((h, w) != (ih, iw) and not both_symbolic):
        return None
    return Match("db", f"one (1, {h}, {w}) probability map the size of the input", {}, 1)


def _rule_mtcnn(f):
    """MTCNN's P-Net alone: box offsets and face probabilities on one grid, 4 and 2 channels
    (last, or first for NCHW exports)."""
    if len(f.outputs) != 2 or any(len(o.shape) != 3 for o in f.outputs):
        return None
    for ch in (lambda sh: sh[2], lambda sh: sh[0]):
        if sorted(ch(o.shape) for o in f.outputs) == [2, 4]:
            return Match("mtcnn", "two maps on one grid with 4 (box offsets) and 2 (face "
                                  "probabilities) channels: an MTCNN P-Net, decoded alone at "
                                  "one scale (give P-, R- and O-Net together for the cascade)",
                         {}, 1)
    return None


def _rule_yolov10(f):
    """Box selection in the graph (YOLOv10, Ultralytics end2end, YOLOv7 --end2end): (K, 6)
    or (K, 7) rows that are not one per cell of a grid."""
    if len(f.outputs) != 1 or len(f.outputs[0].shape) != 2:
        return None
    k, d = f.outputs[0].shape
    if d not in (6, 7):
        return None
    ops = f.graph.head_ops(f.outputs[0].name) if f.graph is not None else set()
    picked = ops & {"TopK", "NonMaxSuppression", "GatherElements", "GatherND"}
    grid = _fixed(k) and any(_fit_rows(f, k, s, n) for s in ((8, 16, 32), (8, 16, 32, 64))
                             for n in (1, _NA))
    if grid and not picked:
        return None
    ncls = len(metadata_labels(f.metadata)[0] or []) or None
    how = f"selected in graph ({', '.join(sorted(picked))})" if picked else \
        "not one per grid cell"
    layout = ("x1, y1, x2, y2, score, class" if d == 6 else
              "batch, x1, y1, x2, y2, class, score")
    return Match("yolov10", f"one ({k}, {d}) output: rows {layout}, {how}", {}, ncls)


def _rule_retinaface(f):
    """RetinaFace: loc (N, 4), conf (N, 2), landms (N, 10) on 2 priors per cell of strides
    8/16/32."""
    if len(f.outputs) != 3 or any(len(o.shape) != 2 for o in f.outputs):
        return None
    if sorted(o.shape[1] for o in f.outputs) != [2, 4, 10] or \
            len({o.shape[0] for o in f.outputs}) != 1:
        return None
    n = f.outputs[0].shape[0]
    if f.width and _fixed(n) and not _fit_rows(f, n, (8, 16, 32), 2):
        return None
    return Match("retinaface", f"loc (N, 4), conf (N, 2), landms (N, 10) with the same {n} "
                               f"rows: 2 priors per cell of strides 8/16/32", {}, 1)


#: one rule per family: facts -> Match or None
RULES = {
    "fastestdet": _rule_fastestdet, "ssd": _rule_ssd, "yolox": _rule_yolox,
    "yunet": _rule_yunet, "yolov5": _rule_yolov5, "yolov8": _rule_yolov8,
    "nanodet": _rule_nanodet, "picodet": _rule_picodet, "scrfd": _rule_scrfd,
    "centernet": _rule_centernet, "db": _rule_db, "mtcnn": _rule_mtcnn,
    "yolov10": _rule_yolov10, "retinaface": _rule_retinaface,
}


def matches(facts):
    """Every family whose rule accepts the model."""
    found = []
    for fam, rule in RULES.items():
        if fam not in decoders.FAMILIES:
            continue
        m = rule(facts)
        if m is not None:
            found.append(m)
    return found


def infer_family(facts):
    """The one family that fits the model's outputs, or a ValidationError saying why not."""
    if facts.metadata.get("task", "detect") != "detect":
        raise ValidationError(f"model {facts.name} is an Ultralytics {facts.metadata['task']!r} "
                              f"model; edgedl decodes detection models (task 'detect')")
    found = matches(facts)
    if len(found) == 1:
        return found[0]
    if not found:
        raise ValidationError(
            f"cannot tell the detector family of model {facts.name} from its outputs "
            f"({facts.describe_outputs()}): give `family` "
            f"({', '.join(sorted(decoders.FAMILIES))}) or `preset`")
    raise ValidationError(
        f"model {facts.name} fits several families: "
        + "; ".join(f"{m.family} ({m.reason})" for m in found)
        + ": give `family` to choose")


# ----------------------------------------------------------------------------- configure
@dataclass
class Config:
    """A resolved configuration and where each setting came from."""
    settings: dict                 # key -> value (the Detector's config)
    sources: dict                  # key -> "model" | "family" | "preset" | "user"
    family: str
    reason: str                    # why this family
    num_classes: int = None
    metadata: dict = field(default_factory=dict)
    preset_name: str = None
    per_image_size: tuple = None   # (longest-side limit, multiple): input sized per image
    size_from: str = None          # where the input size came from, in words


#: families whose reference code sizes each image itself, used when the model's input is
#: symbolic and nothing fixes it: (longest side at most, both sides a multiple of) —
#: PaddleOCR's DB det (det_limit_side_len 960, det_limit_type "max", multiples of 32)
PER_IMAGE_SIZE = {"db": (960, 32)}


def bundled_preset_for(facts):
    """The bundled preset whose ``match`` block fits the model's inputs and outputs, or None."""
    outs = {o.name: o.shape for o in facts.outputs}
    for name in _presets.available_presets():
        p = _presets.load_preset(name)
        m = p.get("match")
        if not m:
            continue
        ok = all(list(facts.input_shape) == list(s) and facts.input_name == k
                 for k, s in m.get("inputs", {}).items())
        ok = ok and set(m.get("outputs", {})) == set(outs) and all(
            list(outs[k]) == list(s)[1:] if len(s) >= 3 else list(outs[k]) == list(s)
            for k, s in m["outputs"].items())
        if ok:
            return p
    return None


def configure(facts, preset=None, family=None, overrides=None, bundled=True):
    """family defaults <- model <- preset <- user overrides, validated, with sources.

    ``preset`` None: a bundled preset is used when the model's content matches one (unless
    ``bundled`` is False). Labels come back as a list of names, or None (numeric).
    """
    p = _choose_preset(facts, preset, family, bundled)
    preset_dir = p.get("_dir")
    match = _match_family(facts, preset, family, p)
    fam = match.family
    cfg, src, key = _merge_settings(facts, match, p, overrides)
    per_image = _per_image_size(cfg, fam, facts)
    _check_types(cfg, src, fam)
    cfg = _presets._check(cfg)
    _check_anchors(cfg, fam, facts)
    _check_priors(cfg, fam, facts)
    cfg["labels"] = _labels(cfg["labels"], src["labels"], preset_dir, match.num_classes,
                            facts, key)
    return Config(cfg, src, fam, match.reason, match.num_classes, dict(facts.metadata),
                  p.get("name"), per_image, _size_from(per_image, src, facts))


def _choose_preset(facts, preset, family, bundled):
    """The preset in use: the one given, else the bundled one matching the model (unless the
    user's family differs), else {}."""
    if preset is not None:
        return _presets.load_preset(preset)
    if not bundled:
        return {}
    p = bundled_preset_for(facts) or {}
    if family is not None and p.get("family") != family:
        return {}                        # the user's family wins over a bundled preset
    return p


def _match_family(facts, preset, family, p):
    """The family's Match: inferred from the outputs, or the one the user / preset names."""
    fam = family if family is not None else p.get("family")
    if family is not None and p.get("family") not in (None, family):
        raise ValidationError(f"`family` {family!r} contradicts the preset's family "
                              f"{p['family']!r}")
    if fam is not None:
        given = "given" if family is not None else f"from preset {p.get('name')!r}"
        return _named_family_match(facts, fam, given)
    if preset is not None:
        raise ValidationError(f"the preset {p.get('name', '')!r} has no \"family\" key; "
                              f"give `family`")
    return infer_family(facts)


def _named_family_match(facts, fam, given):
    """A family the user (or preset) named: its rule's reading of the outputs when they fit,
    a warning naming the families they do fit otherwise; the user's word stands."""
    decoders.family_defaults(fam)             # a clear error for an unknown family
    rule = RULES.get(fam)
    match = rule(facts) if rule else None
    if match is None and rule is not None and facts.graph is not None:
        # the shapes fit but the head's ops looked like another family's: the user's word
        match = rule(dataclasses.replace(facts, graph=None))
    others = [] if match is not None or rule is None else matches(facts)
    if others:          # the user's word stands, but not silently
        warnings.warn(
            f"`family` {fam!r} ({given}) does not fit model {facts.name} by its outputs "
            f"({facts.describe_outputs()}); they look like "
            + "; ".join(f"{m.family}'s ({m.reason})" for m in others), stacklevel=5)
    if match is None:
        return Match(fam, f"{given}; the output shapes were not checked against it", {}, None)
    return Match(fam, f"{given}; the outputs agree: {match.reason}", match.settings,
                 match.num_classes)


def _merge_settings(facts, match, p, overrides):
    """(settings, their sources, the metadata key of the labels): the family's defaults, then
    what the model says, the preset, the user's overrides; an unknown key is an error."""
    fam = match.family
    cfg = decoders.family_defaults(fam)
    src = dict.fromkeys(cfg, "family")

    def put(k, v, origin):
        if k not in cfg:
            raise ValidationError(f"unknown {origin} key {k!r} for family {fam!r}; known "
                                  f"keys: {', '.join(sorted(cfg))}")
        if origin == "preset" and cfg[k] == v:
            return                                  # agrees: keep where it came from
        cfg[k] = v
        src[k] = origin

    # read from the model
    model = {"input_name": facts.input_name, "layout": facts.layout}
    if facts.width:
        model.update(input_width=facts.width, input_height=facts.height)
    model.update(match.settings)
    labels, key = metadata_labels(facts.metadata)
    if labels is not None:
        model["labels"] = labels
    for k, v in model.items():
        if k in cfg:
            put(k, v, "model")
    for k, v in p.items():
        if k not in _presets.META_KEYS:
            put(k, v, "preset")
    for k, v in (overrides or {}).items():
        put(k, v, "user")
    cfg["family"] = fam
    return cfg, src, key


def _per_image_size(cfg, fam, facts):
    """The family's per-image sizing rule when nothing fixes the input size (None when
    something does); an error when the size is symbolic and the family has no such rule."""
    if (cfg["input_width"] is None and cfg["input_height"] is None and fam in PER_IMAGE_SIZE
            and facts.width is None):
        return PER_IMAGE_SIZE[fam]
    if cfg["input_width"] is None or cfg["input_height"] is None:
        raise ValidationError(
            f"model {facts.name}: input {facts.input_name!r} has a symbolic size "
            f"{facts.input_shape} and nothing in the model fixes it: give `input_width` and "
            f"`input_height`")
    return None


def _check_anchors(cfg, fam, facts):
    """A raw YOLOv5-style head needs one anchor level per output stride."""
    if fam == "yolov5" and not cfg["decoded"] and len(cfg["anchors"]) != len(cfg["strides"]):
        raise ValidationError(
            f"model {facts.name} has {len(cfg['strides'])} output strides {cfg['strides']} but "
            f"`anchors` lists {len(cfg['anchors'])} levels: give `anchors` (w, h pairs per "
            f"level, as the model was trained"
            + ("; Yolo-FastestV2's COCO ones are [[12.64, 19.39, 37.88, 51.48, 55.71, 138.31], "
               "[126.91, 78.23, 131.57, 214.55, 279.92, 258.87]]"
               if cfg["strides"] == [16, 32] else "") + ")")


def _size_from(per_image, src, facts):
    """Where the input size came from, in words."""
    if per_image:
        return "sized per image by the family's rule"
    return ({"user": "given", "preset": "the preset", "family": "the family default"}.get(
        src["input_width"]) or
        {"input": "the declared input", "metadata": "metadata imgsz"}.get(
            facts.size_from, "the output rows"))


def _check_priors(cfg, fam, facts):
    """Prior-box families: the priors of `min_sizes` / `steps` must be as many as the box
    rows (else every box would sit on another prior's place: say so now, not at run time)."""
    if not (fam == "retinaface" or (fam == "ssd" and not cfg["boxes_decoded"])):
        return
    rows = [o.shape[0] for o in facts.outputs if len(o.shape) == 2 and o.shape[1] == 4]
    w, h = cfg["input_width"], cfg["input_height"]
    if len(rows) != 1 or not _fixed(rows[0]) or not w:
        return
    n = sum(math.ceil(w / st) * math.ceil(h / st) * len(sz)
            for sz, st in zip(cfg["min_sizes"], cfg["steps"]))
    if n != rows[0]:
        raise ModelError(
            f"model {facts.name} has {rows[0]} boxes but `min_sizes` {cfg['min_sizes']} at "
            f"`steps` {cfg['steps']} give {n} priors on a {w}x{h} input: give the model's "
            f"`min_sizes` and `steps`")


def _check_types(cfg, src, fam):
    """Settings from a preset or the user have the type of the family's default, for every
    key (the value checks of presets._check and the decoders come after)."""
    flag = lambda v: isinstance(v, (bool, np.bool_))
    number = lambda v: isinstance(v, numbers.Real) and not flag(v)       # NumPy scalars too
    kinds = [(bool, flag, "true or false"),
             (int, lambda v: number(v) and float(v).is_integer(), "an integer"),
             (float, number, "a number"),
             (str, lambda v: isinstance(v, str), "text"),
             ((list, tuple), lambda v: isinstance(v, (list, tuple)), "a list")]
    defaults = decoders.family_defaults(fam)
    for k, v in cfg.items():
        d = defaults.get(k)
        if src.get(k) not in ("preset", "user") or d is None or v is None or k == "labels":
            continue
        if k in ("mean", "std") and number(v):
            continue                                    # one value for every channel
        for typ, ok, want in kinds:
            if isinstance(d, typ):
                if not ok(v):
                    raise ValidationError(f"`{k}` must be {want} (family {fam!r}), got {v!r}")
                if typ in (bool, int, float):
                    cfg[k] = typ(v)
                break


def _labels(value, origin, preset_dir, num_classes, facts, meta_key):
    names = _presets.resolve_labels(value, base_dir=preset_dir if origin == "preset" else None)
    if names is not None and num_classes is None and origin == "family" and len(names) > 1:
        # the outputs do not say how many classes there are: the family's default list
        # (COCO-80) could name the classes of another dataset
        warnings.warn(f"model {facts.name} does not show how many classes it has, so the "
                      f"family's default `labels` may not be its own; showing class numbers "
                      f"(give `labels`)", stacklevel=4)
        return None
    if names is None or num_classes is None or len(names) == num_classes:
        return names
    where = {"user": "the given `labels`", "preset": "the preset's `labels`",
             "model": f"the model's metadata {meta_key!r}",
             "family": "the family's default `labels`"}[origin]
    msg = (f"{where} has {len(names)} names but model {facts.name} has {num_classes} "
           f"class{'es' * (num_classes != 1)}")
    if origin in ("user", "preset"):
        raise ValidationError(msg + ": give one name per class in `labels`")
    warnings.warn(msg + "; showing class numbers instead", stacklevel=4)
    return None


# ----------------------------------------------------------------------------- reference
def all_keys():
    """Every configuration key -> the families that use it (in family-table order)."""
    keys = {}
    for fam in decoders.FAMILIES:
        for k in decoders.family_defaults(fam):
            keys.setdefault(k, []).append(fam)
    return keys


def families_reference():
    """docs/families.md: every family (decoder, defaults, how it is recognised) and key."""
    lines = ["# Detector families and configuration keys", "",
             "Generated by `edgedl.detect.autoconfig.families_reference()`: "
             "`edgedl detect --help-families > docs/families.md`; do not edit by hand.", "",
             "A configuration is built in layers: family defaults, then what is read from the "
             "model (input size, layout, strides, what the graph decodes, labels from "
             "`metadata_props`), then a preset (a bundled one is found by the model's content), "
             "then your settings (`Detector(..., key=value)`, or on the command line the option "
             "below or `--set key=value`). `edgedl info MODEL` shows the result and where each "
             "setting came from.", "", "## Families", ""]
    for fam, (fn, _) in decoders.FAMILIES.items():
        doc = " ".join((fn.__doc__ or "").split())
        rule = RULES.get(fam)
        lines.append(f"### {fam}")
        lines.append("")
        lines.append(doc or "(no description)")
        lines.append("")
        lines.append("Recognised from the model: " + _RULE_TEXT.get(
            fam, "yes." if rule else f"no (give `--family {fam}`)."))
        lines.append("")
        own = {k: v for k, v in decoders.family_defaults(fam).items()
               if k not in decoders.COMMON_DEFAULTS or decoders.COMMON_DEFAULTS[k] != v}
        if own:
            lines.append("Defaults that differ from the common ones: " + ", ".join(
                f"`{k}` = `{_show(v)}`" for k, v in own.items()))
            lines.append("")
    lines += ["## Keys", "", "Every key is also `--set key=value`; `input_width` and "
              "`input_height` are `--input-size WxH` together.", "",
              "| key | option | meaning | default | families |", "|---|---|---|---|---|"]
    for k, fams in all_keys().items():
        meaning, metavar = describe(k)
        if k in decoders.COMMON_DEFAULTS:
            default = f"`{_show(decoders.COMMON_DEFAULTS[k])}` (see the families)"
        else:
            default = "; ".join(f"{f}: `{_show(decoders.family_defaults(f)[k])}`" for f in fams)
        used = "all" if len(fams) == len(decoders.FAMILIES) else ", ".join(fams)
        lines.append(f"| `{k}` | `{cli_flag(k)} {metavar.replace('|', '/')}` | "
                     f"{meaning.replace('|', '/')} | {default} | {used} |")
    return "\n".join(lines) + "\n"


_RULE_TEXT = {
    "fastestdet": "one (1, 5+C, H/16, W/16) output.",
    "ssd": "two outputs with the same rows, (1, N, 4) boxes and (1, N, C) scores; an Exp "
           "in the boxes' head means decoded in graph.",
    "yolox": "one (1, N, 5+C) output, N = cells of strides 8/16/32; box, objectness, classes "
             "concatenated in that order (no DFL softmax).",
    "yunet": "per stride cls (N, 1), obj (N, 1), bbox (N, 4), kps (N, 2K).",
    "yolov5": "one (1, 3N, 5+C) decoded output, or one raw output per stride in any of "
              "(1, 3, H, W, 5+C), (1, 3(5+C), H, W), (1, H, W, 3*5+C), (H*W*3, 5+C).",
    "yolov8": "one (1, 4+C, N) output, N = cells of strides 8/16/32 (transposed only with "
              "Ultralytics metadata or a DFL softmax in graph).",
    "nanodet": "one (1, N, C + 32) output, N = cells of strides 8/16/32/64 or 8/16/32, class "
               "scores (sigmoid) first.",
    "picodet": "per stride class scores (N, C) and box bins (N, 32).",
    "scrfd": "per stride score (N, 1), bbox (N, 4) [and kps (N, 10)], 1 or 2 anchors per cell.",
    "centernet": "heatmap (1, C, H/4, W/4) + scale (1, 2, ..) + offset (1, 2, ..) "
                 "[+ landmarks (1, 10, ..)].",
    "yolov10": "one (1, K, 6) or (1, K, 7) output whose rows are not one per grid cell, or "
               "picked in graph (TopK / NonMaxSuppression); labels from Ultralytics metadata.",
    "retinaface": "loc (1, N, 4), conf (1, N, 2), landms (1, N, 10), N = 2 priors per cell "
                  "of strides 8/16/32.",
    "mtcnn": "a P-Net alone (two maps with 4 and 2 channels on one grid); the detector is "
             "the cascade of three models (P-, R-, O-Net) given together: "
             "`Detector([pnet, rnet, onet])`, `edgedl detect P.onnx R.onnx O.onnx IMAGE`.",
    "db": "one (1, 1, H, W) map the size of the input. With a symbolic input and no "
          "`--input-size`, each image is fed at its own size, as PaddleOCR does: longest "
          "side at most 960, both sides rounded to multiples of 32.",
}


def _show(v):
    return json.dumps(v) if not isinstance(v, float) else f"{v:.6g}"


# ----------------------------------------------------------------------------- command line
def cli_flag(key):
    return "--input-size" if key in ("input_width", "input_height") else \
        "--" + key.replace("_", "-")


def cli_message(msg):
    """A configuration error for a command-line user: `key` -> its flag."""
    msg = msg.replace("`input_width` and `input_height`", "--input-size WxH")
    msg = msg.replace("`input_width`", "--input-size WxH").replace("`input_height`",
                                                                      "--input-size WxH")
    msg = msg.replace("`family`", "--family").replace("`preset`", "--preset")
    for k in sorted(all_keys(), key=len, reverse=True):
        msg = msg.replace(f"`{k}`", cli_flag(k))
    return msg


def parse_value(key, text):
    """A command-line value -> a Python value: JSON / Python literal, true/false/none,
    a comma-separated list of numbers or names, or the text itself."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    v = _literal(t)
    if isinstance(v, (int, float, list, tuple, dict)) and not isinstance(v, bool):
        return list(v) if isinstance(v, tuple) else v
    if "," in t:
        parts = [s.strip() for s in t.split(",")]
        nums = [_literal(s) for s in parts]
        if all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in nums):
            return nums
        return parts
    return t


def parse_size(text):
    """'320x240' (W x H) or '320' -> (width, height)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) < 1:
        raise ValidationError(f"--input-size must be WxH (e.g. 320x320), got {text!r}")
    return nums[0], nums[1]

