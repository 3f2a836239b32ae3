"""Post-training static quantization on edgedl alone: ``quantize_static`` and
``edgedl quantize MODEL.onnx --calib IMAGES -o MODEL.int8.onnx``.

The float model runs on edgedl (no onnxruntime) over calibration images prepared exactly as
``edgedl detect`` prepares them (the Detector's own ``preprocess``). A copy of the graph whose
outputs include every activation that feeds or leaves a quantizable op makes those tensors
visible; an observer per tensor turns what it saw into a range, then a scale and zero point.
The result is a QDQ model (QuantizeLinear / DequantizeLinear pairs around Conv, MatMul, Add,
Mul, Concat, Sigmoid, LeakyRelu, average pooling; element movers such as MaxPool, Reshape,
Transpose share their input's parameters), the layout onnxruntime's QDQ quantizer writes:
per-channel symmetric int8 weights (axis 0), int32 biases with scale x_scale * w_scale,
uint8 (asymmetric) or int8 activations. BatchNormalization after a Conv is folded into it
first, and a Relu (or Clip from 0) right after a quantized op is absorbed into its output's
quantization, whose range starts at 0. Both onnxruntime and edgedl load the result; edgedl's
load-time QDQ rewrite (edgedl/onnx/qdq.py) runs it on its integer kernels.

Bias correction (on by default, ``bias_correction=False`` / ``--no-bias-correction`` turns
it off): rounding a Conv's weights changes each output channel by the rounding error summed
over the kernel window times the input channels' values, and on inputs with a non-zero mean
(anything after a ReLU, an image) most of that change is a constant per output channel.
The observers keep each channel's mean over the calibration images, and every int8 Conv's
bias absorbs (rounded - float weights) x those means, so the int8 output channels keep the
float means. It is what brought FastestDet's held-back scores back (without the sensitivity
search: recall 7/11 -> 11/11, output SNR 15.5 -> 18.1 dB; YuNet +1.5 dB, UltraFace +0.9 dB,
YOLOX-Nano unchanged): its misses were class scores that drifted down (0.61 -> 0.36)
through a softmax, a shift rather than noise.

Weight rounding (``weight_rounding="gptq"``, ``--weight-rounding``; ``"nearest"`` rounds
each weight alone): a Conv's weights are rounded one input column at a time, each column's
error moved onto the columns after it by the inverse Gram matrix of the Conv's input windows
on the calibration images (GPTQ; edgedl/_weight_rounding.py). Bias correction then takes
what mean change is left. Held-back output SNR, nearest -> GPTQ (2026-12-04): FastestDet
19.3 -> 20.1 dB (recall 9/11 -> 10/11), UltraFace 43.1 -> 45.3, YuNet 25.2 -> 25.6,
YOLOX-Nano 15.4 -> 15.5; 1-3.5 s more per model (most of it inverting the Gram matrices).

Sensitivity search (``max_error_share=0.1``, ``--max-error-share``; 0 turns it off): the
8-bit noise of a few activations can dominate a model's output error. In YOLOX-Nano the
output of its second Conv (before the SiLU) alone made 52% of the output error of all 341
quantized activations (the median one 0.01%): the following 1x1 Conv amplifies white noise
~14 dB more than the signal, and on a page of text the objectness of five detections fell
from ~0.5 to <= 0.05. No per-tensor range or step rule finds it (its step is 5% of its RMS,
finer than most). So the float model runs with Q/DQ pairs on sets of activations (weights
float) on the first calibration images; the errors of independent noises add, so a set
whose output error is at most ``max_error_share`` of the all-activations one holds no
dominant activation, and larger sets are halved (the first half measured, the second taken
as the rest). The activations found stay float with the ops around them; up to three
rounds against the error left, while it exceeds 1% of the outputs' power (20 dB). Measured
on the shared models (13 calibration images): YOLOX-Nano 5 activations (recall 24/29 ->
27/29, 16 of 113 Convs float), YuNet 5 (held-back output SNR 19.9 -> 24.3 dB, 7 of 59 Convs
float), FastestDet 3 (18.1 -> 18.3 dB, 28 of 70 Convs float, 25 before; recall 11/11 ->
9/11: a detection 0.006 above its threshold and a close class flip on the other side now),
UltraFace none (44 dB already, 6 of 52 Convs float); 3-14 s.

A third of the images (every third one, from the first) is held back: the int8 model's
detections on them are matched against the float model's (IoU >= 0.5, same class) and the
recall and mean score difference returned.
"""
import os
from typing import NamedTuple

import numpy as np

from ._weight_rounding import ConvInputGram, gptq_round
from .errors import ValidationError

OBSERVERS = ("minmax", "percentile")
WEIGHT_ROUNDINGS = ("gptq", "nearest")
ACTIVATION_TYPES = ("uint8", "int8")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: ops computed in integers between their Q/DQ pairs: which inputs are activations
_QUANTIZED = {"Conv": (0,), "MatMul": None, "Add": None, "Mul": None, "Concat": None,
              "Sigmoid": (0,), "LeakyRelu": (0,), "AveragePool": (0,),
              "GlobalAveragePool": (0,)}
#: ops that only move or select elements: their output shares their input's parameters
_MOVERS = {"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice",
           "Gather", "DepthToSpace", "SpaceToDepth"}
#: activations a quantized output's clamp already performs when its range starts at 0
_CLAMPS = {"Relu", "Clip"}
_FLOAT = 1          # onnx.TensorProto.FLOAT


class QuantizeResult(NamedTuple):
    """What ``quantize_static`` did: the written model, the images used (calibration and
    held back) and the accuracy check on the held-back ones (``recall`` None when the float
    model found nothing there)."""
    out_path: str
    calibration_images: int
    held_back_images: int
    quantized_tensors: int
    recall: object
    mean_score_diff: object
    float_detections: int
    matched: int
    int8_detections: int = 0
    sensitive: tuple = ()           # activations the sensitivity search kept float

    def summary(self):
        rec = "n/a (no float detections)" if self.recall is None else f"{self.recall:.3f}"
        diff = "n/a" if self.mean_score_diff is None else f"{self.mean_score_diff:+.4f}"
        kept = f" ({len(self.sensitive)} kept float by the sensitivity search)" \
            if self.sensitive else ""
        return (f"wrote {self.out_path}: {self.quantized_tensors} activations quantized{kept}, "
                f"calibrated on {self.calibration_images} images; on {self.held_back_images} "
                f"held-back images: recall {rec} ({self.matched}/{self.float_detections} float "
                f"detections matched at IoU >= 0.5, {self.int8_detections - self.matched} "
                f"int8 ones unmatched), mean score difference {diff}")


# ----------------------------------------------------------------------------- images
def _is_image_name(path):
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def collect_images(calib):
    """``calib`` (a folder, an image file, an array, or a list of these) as a list of
    (name, image) with image a path or an array. A folder gives its image files (by
    extension, sorted); a folder without any, or a file that is not an image, is an error."""
    if isinstance(calib, (str, os.PathLike, np.ndarray)):
        calib = [calib]
    items = []
    for entry in calib:
        if isinstance(entry, np.ndarray):
            items.append((f"array {len(items)}", entry))
        elif os.path.isdir(entry):
            found = sorted(f for f in os.listdir(entry) if _is_image_name(f)
                           and os.path.isfile(os.path.join(entry, f)))
            if not found:
                raise ValidationError(f"calibration folder {os.fspath(entry)} holds no images "
                                      f"({', '.join(IMAGE_EXTENSIONS)})")
            items += [(f, os.path.join(entry, f)) for f in found]
        elif os.path.isfile(entry):
            items.append((os.path.basename(entry), os.fspath(entry)))
        else:
            raise FileNotFoundError(f"calibration images: no such file or folder: {entry}")
    if not items:
        raise ValidationError("no calibration images given")
    return items


def sample_images():
    """scikit-image's bundled sample photos (edgedl[test] installs scikit-image) as
    (name, H×W×3 or H×W uint8 array), without the three that are also in the shared
    images (astronaut, chelsea, coffee)."""
    try:
        from skimage import data
    except ImportError:
        raise ImportError("the sample images need scikit-image: pip install scikit-image") \
            from None
    names = ("camera", "rocket", "coins", "moon", "page", "text", "immunohistochemistry",
             "retina", "hubble_deep_field", "brick", "grass", "gravel", "colorwheel", "logo",
             "cell", "clock")
    out = []
    for name in names:
        try:
            im = np.asarray(getattr(data, name)())
        except Exception:           # a sample this version lacks or would download
            continue
        if im.ndim == 3 and im.shape[2] == 4:
            im = im[:, :, :3]
        out.append((name, np.ascontiguousarray(im.astype(np.uint8))))
    return out


def _load(name, image):
    from .detect.preprocess import load_image
    try:
        return load_image(image, name)
    except Exception as e:
        raise ValidationError(f"calibration image {name} cannot be read as an image: "
                              f"{e}") from e


# ----------------------------------------------------------------------------- observers
class MinMax:
    """The smallest and largest value seen."""

    def __init__(self):
        self.lo, self.hi = np.inf, -np.inf
        self.floor, self.ceil = np.inf, -np.inf     # the least range reported (widen)
        self.power, self.count = 0.0, 0         # sum of squares, values seen
        self.csum, self.ccount = None, 0        # per-channel (axis 1) sums, values each

    def update(self, x):
        if x.size:
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))
            flat = x.astype(np.float64).ravel()
            self.power += float(flat @ flat)
            self.count += x.size
            if x.ndim >= 2:
                sums = x.astype(np.float64).sum(axis=tuple(i for i in range(x.ndim) if i != 1))
                if self.csum is None or self.csum.shape != sums.shape:
                    self.csum, self.ccount = np.zeros_like(sums), 0
                self.csum += sums
                self.ccount += x.size // x.shape[1]

    def channel_mean(self):
        """The mean of each channel (axis 1) over the values seen; None for values
        without channels."""
        return None if self.csum is None or not self.ccount else self.csum / self.ccount

    def step_ratio(self, scale):
        """The quantization step relative to the values' RMS: the noise 8 bits add (a
        ratio r costs about 20*log10(r) - 10.8 dB of signal-to-noise)."""
        rms = np.sqrt(self.power / max(self.count, 1))
        return float(scale) / rms if rms > 0 else 0.0

    def widen(self, lo, hi):
        """The range reported holds [lo, hi] at least."""
        self.floor, self.ceil = lo, hi

    def range(self):
        lo, hi = self._range()
        return min(lo, self.floor), max(hi, self.ceil)

    def _range(self):
        return (0.0, 0.0) if self.lo > self.hi else (self.lo, self.hi)


class Percentile(MinMax):
    """The ``percentile``-th quantiles of the values seen, each tail apart, from a histogram
    over [-R, R] that doubles R (merging bin pairs, exactly) when a value falls outside."""

    def __init__(self, percentile=99.999, bins=4096):
        super().__init__()
        self.q = percentile / 100.0
        self.counts = np.zeros(bins, np.int64)
        self.radius = 0.0

    def update(self, x):
        if not x.size:
            return
        super().update(x)
        need = max(abs(self.lo), abs(self.hi))
        if not np.isfinite(need):          # reported by the caller, naming the tensor
            return
        if self.radius == 0.0:
            self.radius = need or 1.0
        while need > self.radius:
            self._double()
        h, _ = np.histogram(x, bins=self.counts.size, range=(-self.radius, self.radius))
        self.counts += h

    def _double(self):
        n = self.counts.size
        pairs = self.counts.reshape(-1, 2).sum(axis=1)
        self.counts = np.zeros(n, np.int64)
        self.counts[n // 4: n // 4 + n // 2] = pairs
        self.radius *= 2.0

    def _range(self):
        lo, hi = super()._range()
        total = self.counts.sum()
        if total == 0:
            return lo, hi
        edges = np.linspace(-self.radius, self.radius, self.counts.size + 1)
        cum = np.cumsum(self.counts) / total
        qlo = edges[np.searchsorted(cum, 1.0 - self.q)]
        qhi = edges[min(np.searchsorted(cum, self.q) + 1, self.counts.size)]
        return max(lo, float(qlo)), min(hi, float(qhi))


def _observer(kind, percentile):
    if kind == "minmax":
        return MinMax()
    return Percentile(percentile)


# ----------------------------------------------------------------------------- parameters
def _qrange(activation_type):
    return (0, 255) if activation_type == "uint8" else (-128, 127)


def activation_params(lo, hi, activation_type="uint8"):
    """(scale, zero point) of an asymmetric 8-bit activation over [lo, hi] (widened to
    hold 0 exactly, as onnxruntime does: zero padding and ReLU's floor stay exact)."""
    qmin, qmax = _qrange(activation_type)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / (qmax - qmin)
    if not np.isfinite(scale) or scale <= 1e-12:
        scale = 1.0
    zero = int(np.clip(np.rint(qmin - lo / scale), qmin, qmax))
    dtype = np.uint8 if activation_type == "uint8" else np.int8
    return np.float32(scale), dtype(zero)


def weight_params(w, per_channel):
    """Symmetric int8 weights ([-127, 127], zero point 0): (int8 array, float32 scales),
    one scale per output channel (axis 0) or one for the tensor."""
    w = np.asarray(w, np.float64)
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1) if per_channel and w.ndim > 1 \
        else np.array(np.abs(w).max() if w.size else 0.0)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shaped = scale.reshape((-1,) + (1,) * (w.ndim - 1)) if scale.ndim else scale
    q = np.clip(np.rint(w / shaped.astype(np.float64)), -127, 127).astype(np.int8)
    return q, scale


def bias_int32(b, x_scale, w_scale):
    """int32 bias with scale x_scale * w_scale (float32), zero point 0."""
    scale = (np.float64(x_scale) * np.asarray(w_scale, np.float64)).astype(np.float32)
    q = np.rint(np.asarray(b, np.float64) / scale.astype(np.float64))
    info = np.iinfo(np.int32)
    return np.clip(q, info.min, info.max).astype(np.int32), scale


# ----------------------------------------------------------------------------- the graph
class _Model:
    """The float model as editable lists: nodes (NodeProtos), initializers as arrays."""

    def __init__(self, proto):
        from onnx import numpy_helper
        self.proto = proto
        g = proto.graph
        self.inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self.nodes = []
        for n in g.node:
            value = _constant_tensor(n)
            if value is not None:
                self.inits[n.output[0]] = value
            else:
                self.nodes.append(n)
        self.inputs = [i.name for i in g.input if i.name not in self.inits]
        self.outputs = [o.name for o in g.output]
        self.exclude = set()        # node names kept in float (the caller's)
        self.skip = set()           # ids of nodes kept in float (too coarse in 8 bits)
        self.float_outputs = True   # the output tail (_output_tail) stays float

    def readers(self, name):
        return [n for n in self.nodes if name in n.input]

    def producer(self, name):
        return next((n for n in self.nodes if name in n.output), None)

    def rename_output(self, old, new):
        """``old`` (a node output) becomes ``new`` everywhere it is read or written."""
        for n in self.nodes:
            for seq in (n.input, n.output):
                for i, v in enumerate(seq):
                    if v == old:
                        seq[i] = new

    def to_proto(self, extra_nodes_first=(), nodes=None):
        from onnx import numpy_helper
        g = self.proto.graph
        del g.node[:]
        g.node.extend(list(extra_nodes_first) + list(nodes if nodes is not None else self.nodes))
        del g.initializer[:]
        used = {v for n in g.node for v in n.input} | set(self.outputs)
        g.initializer.extend(numpy_helper.from_array(np.asarray(a), k)
                             for k, a in self.inits.items() if k in used)
        keep = [i for i in g.input if i.name not in self.inits]
        del g.input[:]
        g.input.extend(keep)
        del g.value_info[:]
        return self.proto


def _constant_tensor(node):
    """A Constant node's tensor value, else None."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    from onnx import numpy_helper
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
    return None


def _prepared(model_path):
    """The float model at opset >= 13 (per-axis Q/DQ), Constant nodes as initializers and
    BatchNormalization folded into the Conv before it."""
    import onnx
    try:
        proto = onnx.load(os.fspath(model_path))
    except Exception as e:
        raise ValidationError(f"cannot read the model {model_path}: {e}") from e
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        from onnx import version_converter
        # initializers listed as graph inputs (IR 4) would stay overridable inputs
        names = {t.name for t in proto.graph.initializer}
        keep = [i for i in proto.graph.input if i.name not in names]
        del proto.graph.input[:]
        proto.graph.input.extend(keep)
        try:
            proto = version_converter.convert_version(proto, 13)
        except Exception as e:      # e.g. onnx < 1.14 on Softmax of unknown input shape
            raise ValidationError(
                f"the model imports opset {opset}; quantizing it per channel needs opset 13, "
                f"and onnx {onnx.__version__}'s version converter could not lift it ({e}); "
                "onnx >= 1.14 does") from e
    m = _Model(proto)
    _fold_batchnorm(m)
    return m


def _fold_batchnorm(m):
    for bn in [n for n in m.nodes if n.op_type == "BatchNormalization"]:
        conv = m.producer(bn.input[0])
        if conv is None or conv.op_type != "Conv" or len(m.readers(bn.input[0])) != 1 or \
                bn.input[0] in m.outputs or conv.input[1] not in m.inits or \
                any(v not in m.inits for v in bn.input[1:5]) or len(conv.input) > 2 and \
                conv.input[2] and conv.input[2] not in m.inits:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (m.inits[v].astype(np.float64) for v in bn.input[1:5])
        k = gamma / np.sqrt(var + eps)
        w = m.inits[conv.input[1]].astype(np.float64)
        b = m.inits[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and \
            conv.input[2] else np.zeros(w.shape[0])
        wname, bname = conv.output[0] + "_bnfold_w", conv.output[0] + "_bnfold_b"
        m.inits[wname] = (w * k.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
        m.inits[bname] = ((b - mean) * k + beta).astype(np.float32)
        del conv.input[1:]
        conv.input.extend([wname, bname])
        out = bn.output[0]
        m.nodes.remove(bn)
        m.rename_output(conv.output[0], out)


def _float_tensors(m):
    """Names of the float32 values (shape inference's element types)."""
    import onnx
    try:
        inferred = onnx.shape_inference.infer_shapes(m.to_proto())
    except Exception:
        inferred = m.proto
    g = inferred.graph
    return {vi.name for vi in list(g.value_info) + list(g.input) + list(g.output)
            if vi.type.tensor_type.elem_type == _FLOAT}


def _act_inputs(node, m):
    """(activation inputs, constant float inputs) of a quantized node."""
    which = _QUANTIZED[node.op_type]
    names = [node.input[i] for i in which] if which else [v for v in node.input if v]
    return ([v for v in names if v not in m.inits],
            [v for v in names if v in m.inits])


def _eligible(node, m, floats):
    """A quantizable node whose tensors are all float (shape arithmetic is not), not
    excluded by name."""
    if node.op_type not in _QUANTIZED or node.domain not in ("", "ai.onnx") or \
            node.name in m.exclude or id(node) in m.skip:
        return False
    acts, consts = _act_inputs(node, m)
    if not acts or node.output[0] not in floats or any(v not in floats for v in acts):
        return False
    if node.op_type == "Conv":
        return node.input[1] in m.inits and (len(node.input) < 3 or not node.input[2]
                                             or node.input[2] in m.inits)
    return all(m.inits[v].dtype == np.float32 for v in consts)


def _absorb_clamps(m, floats):
    """A Relu / Clip(0, ...) right after a quantizable node, as its only reader: removed,
    the node writing the clamp's output (whose range, starting at 0, makes the quantizer's
    saturation the clamp). Returns ({clamp output: upper bound}, [(clamp, its producer)])
    for _restore_clamps."""
    bounds, absorbed = {}, []
    for act in [n for n in m.nodes if n.op_type in _CLAMPS]:
        lo, hi = _clamp_bounds(act, m)
        prod = m.producer(act.input[0])
        if lo != 0.0 or hi is None or prod is None or not _eligible(prod, m, floats) or \
                len(m.readers(act.input[0])) != 1 or act.input[0] in m.outputs:
            continue
        out = act.output[0]
        m.nodes.remove(act)
        m.rename_output(prod.output[0], out)
        bounds[out] = hi
        absorbed.append((act, prod))
    return bounds, absorbed


def _restore_clamps(m, absorbed, quantized):
    """Put back the clamps whose producer stayed float (no quantized output to clamp)."""
    kept = {id(n) for n in quantized}
    for act, prod in absorbed:
        if id(prod) not in kept:
            prod.output[0] = act.input[0]
            m.nodes.insert(m.nodes.index(prod) + 1, act)


def _clamp_bounds(act, m):
    if act.op_type == "Relu":
        return 0.0, np.inf
    lo = next((a.f for a in act.attribute if a.name == "min"), -np.inf)
    hi = next((a.f for a in act.attribute if a.name == "max"), np.inf)
    vals = [m.inits.get(v) if v else None for v in list(act.input[1:3]) + [None, None]][:2]
    if len(act.input) > 1 and act.input[1]:
        lo = float(vals[0]) if vals[0] is not None else None
    if len(act.input) > 2 and act.input[2]:
        hi = float(vals[1]) if vals[1] is not None else None
    return lo, hi


#: ops that may lie between a model's last convolutions and its outputs (reshaping, joining,
#: scoring and box-decoding arithmetic): what they compute is kept float there
_TAIL_OPS = _MOVERS | {"Concat", "Split", "Sigmoid", "Softmax", "LogSoftmax", "Add", "Sub",
                       "Mul", "Div", "Exp", "Log", "Sqrt", "Relu", "Clip", "Identity"}


def _output_tail(m):
    """The tensors that reach only graph outputs, through _TAIL_OPS alone: a graph output,
    or a tensor every reader of which is such an op with outputs all in the tail. They get
    no Q/DQ, and the nodes writing them stay float: the last convolutions (a detector's
    score and box heads), as quantization recipes keep the last layer wide. Their 8-bit
    step moved scores near the detection threshold by up to one step (FastestDet: 0.656 ->
    0.631 against a 0.65 threshold), and a requantized output costs precision for no speed."""
    if not m.float_outputs:
        return set()
    readers = {}
    for n in m.nodes:
        for v in n.input:
            readers.setdefault(v, []).append(n)
    tail = set(m.outputs)

    def in_tail(n):
        return n.op_type in _TAIL_OPS and all(o in tail for o in n.output if o)
    changed = True
    while changed:
        changed = False
        for n in m.nodes:
            if not in_tail(n):
                continue
            for v in n.input:
                if v and v not in tail and v not in m.inits and \
                        all(in_tail(r) for r in readers[v]):
                    tail.add(v)
                    changed = True
    return tail


def _plan(m, floats):
    """{activation tensor: the tensor whose parameters it uses} and the quantized nodes;
    the output tail (_output_tail) and the nodes writing it stay float."""
    share, quantized = {}, []
    tail = _output_tail(m)
    for n in m.nodes:
        if _eligible(n, m, floats) and n.output[0] not in tail:
            quantized.append(n)
            for v in _act_inputs(n, m)[0] + [n.output[0]]:
                share.setdefault(v, v)
    changed = True
    while changed:
        changed = False
        for n in m.nodes:
            if n.op_type not in _MOVERS or len(n.output) != 1 or not n.input or \
                    n.input[0] not in floats or n.input[0] in m.inits:
                continue
            x, y = n.input[0], n.output[0]
            if (x in share or y in share) and share.get(y) != share.get(x, x):
                share.setdefault(x, x)
                share[y] = share[x]
                changed = True
    return {t: r for t, r in share.items() if t not in tail}, quantized


# ----------------------------------------------------------------------------- calibration
def _conv_grams(m, quantized):
    """{(input, weight name): ConvInputGram} of the quantized 2-D Convs, the smallest first
    while their Gram matrices fit TOTAL_GRAM (each at most MAX_GRAM); the others keep
    nearest rounding."""
    from onnx import helper
    from ._weight_rounding import TOTAL_GRAM
    sized = {}
    for n in quantized:
        if n.op_type != "Conv" or (n.input[0], n.input[1]) in sized:
            continue
        key = (n.input[0], n.input[1])
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        shape = m.inits[n.input[1]].shape
        size = ConvInputGram.size(shape, attrs)
        if size is not None:
            sized[key] = (size, shape, attrs)
    grams, used = {}, 0
    for key, (size, shape, attrs) in sorted(sized.items(), key=lambda kv: kv[1][0]):
        if used + size > TOTAL_GRAM:
            break
        used += size
        grams[key] = ConvInputGram(shape, attrs, seed=len(grams))
    return grams


def _calibrate(proto, tensors, det, images, observer, backend, quiet, grams=None):
    """Run the float model ``proto`` (as it was before clamps were absorbed, with
    ``tensors`` as extra outputs) on edgedl over ``images`` prepared by the detector
    ``det``; {tensor: observer}. ``grams``: {(Conv input, weight name): ConvInputGram}
    fed with those inputs too."""
    import onnx
    from .batch import Progress
    from .onnx.session import InferenceSession
    inputs = {i.name for i in proto.graph.input}
    have = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.helper.make_tensor_value_info(t, _FLOAT, None)
                              for t in tensors if t not in have and t not in inputs)
    sess = InferenceSession(proto.SerializeToString(), backend=backend)
    fetch = [t for t in tensors if t not in inputs]
    obs = {t: _observer(*observer) for t in tensors}
    bar = Progress(len(images), quiet=quiet, least=1)
    try:
        for name, image in images:
            x, _ = det.preprocess(_load(name, image))
            outs = dict(zip(fetch, sess.run(fetch, {det.input_name: x})))
            outs.update((t, x) for t in tensors if t in inputs)
            for (t, _), gram in (grams or {}).items():
                gram.update(outs[t])
            for t, v in outs.items():
                obs[t].update(np.asarray(v))
                if not np.isfinite(obs[t].lo) or not np.isfinite(obs[t].hi):
                    raise ValidationError(f"activation {t!r} is not finite on calibration "
                                          f"image {name}: the float model cannot be "
                                          f"calibrated there")
            bar.update()
    finally:
        bar.close()
    return obs


# ----------------------------------------------------------------------------- writing
class _Writer:
    """Q/DQ pairs and quantized constants added to the model."""

    def __init__(self, m):
        from onnx import helper
        self.m, self.helper = m, helper
        self.taken = {v for n in m.nodes for v in list(n.input) + list(n.output)} | \
            set(m.inits) | set(m.inputs) | set(m.outputs)
        self.first = []            # DQ nodes of constants and graph inputs' Q/DQ
        self.after = {}            # value -> Q/DQ nodes placed after its producer

    def name(self, base):
        cand, k = base, 1
        while cand in self.taken:
            k += 1
            cand = f"{base}_{k}"
        self.taken.add(cand)
        return cand

    def const(self, base, value):
        name = self.name(base)
        self.m.inits[name] = value
        return name

    def dq_const(self, base, q, scale, zero, axis=None):
        """A quantized constant and its DequantizeLinear; the float value's name."""
        ins = [self.const(base + "_quantized", q), self.const(base + "_scale", scale),
               self.const(base + "_zero_point", zero)]
        out = self.name(base + "_dequantized")
        kw = {"axis": axis} if axis is not None else {}
        self.first.append(self.helper.make_node("DequantizeLinear", ins, [out],
                                                self.name(base + "_DequantizeLinear"), **kw))
        return out

    def qdq(self, value, scale, zero):
        """Q -> DQ after ``value``; the dequantized name (a graph output keeps its name:
        its producer then writes a new one)."""
        s = self.const(value + "_scale", scale)
        z = self.const(value + "_zero_point", zero)
        q = self.name(value + "_QuantizeLinear_Output")
        if value in self.m.outputs:        # only the producer changes: readers read DQ
            src, out = self.name(value + "_float"), value
            prod = self.m.producer(value)
            prod.output[list(prod.output).index(value)] = src
        else:
            src, out = value, self.name(value + "_DequantizeLinear_Output")
        nodes = [self.helper.make_node("QuantizeLinear", [src, s, z], [q],
                                       self.name(value + "_QuantizeLinear")),
                 self.helper.make_node("DequantizeLinear", [q, s, z], [out],
                                       self.name(value + "_DequantizeLinear"))]
        if value in self.m.inputs:
            self.first += nodes
        else:
            self.after[src] = nodes
        return out


def _write_qdq(m, share, quantized, params, per_channel, activation_type, means=None,
               grams=None):
    """The QDQ model: activations, weights, biases and float constants of the quantized
    nodes; returns (proto, number of activation tensors quantized). ``means``: {activation:
    its per-channel means} for the bias correction of the Convs reading it; ``grams``:
    {(input, weight name): ConvInputGram} for the Convs whose weights GPTQ rounds."""
    w = _Writer(m)
    gram_of = {id(n): (grams or {}).get((n.input[0], n.input[1])) for n in quantized
               if n.op_type == "Conv"}
    readers = {}
    for t in share:
        readers[t] = [(n, i) for n in m.nodes for i, v in enumerate(n.input) if v == t]
    deq = {t: w.qdq(t, *params[share[t]]) for t in share}
    for t, rs in readers.items():
        if deq[t] != t:
            for n, i in rs:
                n.input[i] = deq[t]
    done = {}
    scale_of = {deq[t]: params[share[t]][0] for t in share}
    mean_of = {deq[t]: means[t] for t in share if means and means.get(t) is not None}
    for n in quantized:
        _quantize_constants(n, w, m, scale_of, per_channel, activation_type, done, mean_of,
                            gram_of.get(id(n)))
    nodes = []
    for n in m.nodes:
        nodes.append(n)
        for v in n.output:
            nodes += w.after.get(v, [])
    return m.to_proto(w.first, nodes), len(share)


def _quantize_constants(n, w, m, scale_of, per_channel, activation_type, done, mean_of,
                        gram=None):
    if n.op_type == "Conv":
        _conv_weights(n, w, m, scale_of[n.input[0]], per_channel, mean_of.get(n.input[0]),
                      gram)
        return
    for i, v in enumerate(n.input):
        if v not in m.inits or not v:
            continue
        if v not in done:
            a = m.inits[v]
            if n.op_type == "MatMul":          # a weight: symmetric int8, one scale
                q, s = weight_params(a, per_channel=False)
                done[v] = w.dq_const(v, q, s, np.int8(0))
            else:                               # an operand: quantized as an activation
                s, z = activation_params(a.min(initial=0.0), a.max(initial=0.0),
                                         activation_type)
                q = np.clip(np.rint(a / s) + z, *_qrange(activation_type)).astype(z.dtype)
                done[v] = w.dq_const(v, q, s, z)
        n.input[i] = done[v]


def _conv_weights(n, w, m, x_scale, per_channel, x_mean=None, gram=None):
    """The Conv's int8 weights and int32 bias, the bias corrected for the rounded
    weights when the input's channel means are known (a Conv without a bias gets one).
    With ``gram`` (a ConvInputGram that saw windows) the weights are rounded by GPTQ on the
    same scales, else to nearest."""
    wf = m.inits[n.input[1]]
    q, s = weight_params(wf, per_channel)
    if gram is not None and gram.windows:
        q = gptq_round(wf, s, gram.gram)
    axis = 0 if s.ndim else None
    n.input[1] = w.dq_const(n.input[1], q, s, np.zeros(s.shape, np.int8), axis)
    has_bias = len(n.input) > 2 and bool(n.input[2])
    shift = weight_shift(wf, q, s, x_mean)
    if not has_bias and shift is None:
        return
    b = np.asarray(m.inits[n.input[2]] if has_bias else np.zeros(wf.shape[0]), np.float64)
    if shift is not None:
        b = b - shift
    bq, bs = bias_int32(b, x_scale, s)
    name = w.dq_const(n.input[2] if has_bias else n.output[0] + "_bias", bq, bs,
                      np.zeros(bs.shape, np.int32), axis)
    if has_bias:
        n.input[2] = name
    else:
        del n.input[2:]
        n.input.append(name)


def weight_shift(w, q, scale, x_mean):
    """Bias correction: the mean change of each output channel of a Conv (weights ``w``,
    groups inferred from the channel counts) when its weights are rounded to ``q`` *
    ``scale`` and its input channels have the means ``x_mean`` (the calibration images'):
    the rounding error of each (output, input channel) kernel, summed over the window,
    times that input channel's mean (zero padding aside). Subtracted from the bias, it
    keeps each output channel's mean. None without means or when the counts disagree."""
    if x_mean is None or w.ndim < 2:
        return None
    x_mean = np.asarray(x_mean, np.float64).ravel()
    cout, cin_g = w.shape[0], w.shape[1]
    if not cin_g or x_mean.size % cin_g or cout % (x_mean.size // cin_g):
        return None
    groups = x_mean.size // cin_g
    scale = np.asarray(scale, np.float64)
    err = q.astype(np.float64) * (scale.reshape((-1,) + (1,) * (w.ndim - 1))
                                  if scale.ndim else scale) - np.asarray(w, np.float64)
    err = err.reshape(groups, cout // groups, cin_g, -1).sum(axis=3)
    return (err * x_mean.reshape(groups, 1, cin_g)).sum(axis=2).ravel()


#: output ranges an op fixes whatever the calibration saw: a sigmoid's confident scores
#: (near 1) may be rare in the calibration images, and clipped there they would cap scores
_FIXED_RANGES = {"Sigmoid": (0.0, 1.0)}
#: calibration images the sensitivity search runs on (the first ones)
_SENSITIVITY_IMAGES = 3
#: the output error (squared error over the outputs' power) of the activations' 8-bit noise
#: below which no activation is searched out: 1%, an output signal-to-noise ratio of 20 dB
_ENOUGH_ERROR = 0.01
#: the least input range of a Sigmoid: logits of +-4.6 are scores of 0.01 and 0.99, so a
#: detection head's logits calibrated on images without a confident object of some class
#: or size still reach confident scores
_SIGMOID_LOGIT = 4.6


def _params(share, obs, bounds, activation_type):
    """{root tensor: (scale, zero point)} from the observed ranges; ``bounds``: {tensor:
    upper bound} of absorbed clamps (the range starts at 0 and stops there at the latest)
    and {tensor: (lo, hi)} of fixed ranges."""
    out = {}
    for root in set(share.values()):
        lo, hi = obs[root].range()
        if isinstance(bounds.get(root), tuple):
            lo, hi = bounds[root]
        elif root in bounds:
            lo, hi = 0.0, min(hi, bounds[root])
        out[root] = activation_params(lo, hi, activation_type)
    return out


def _keep_coarse_float(m, floats, share, quantized, obs, bounds, activation_type, ratio):
    """The plan without the activations whose 8-bit step exceeds ``ratio`` of their RMS:
    the nodes that read or write one stay float (repeated: a mover may pass the same
    parameters on to a neighbour). Returns (share, quantized nodes, parameters)."""
    params = _params(share, obs, bounds, activation_type)
    for _ in range(8):
        if not ratio:
            break
        coarse = {t for t in share if obs[t].step_ratio(params[share[t]][0]) > ratio}
        skip = {id(n) for n in quantized if any(v in coarse for v in list(n.input) +
                                                 list(n.output))}
        if not skip:
            break
        m.skip |= skip
        share, quantized = _plan(m, floats)
        params = _params(share, obs, bounds, activation_type)
    return share, quantized, params


# ----------------------------------------------------------------------------- sensitivity
def _fake_quantized(proto, share, params, roots):
    """A copy of the float model ``proto`` with a QuantizeLinear -> DequantizeLinear pair
    on every activation whose parameters are those of one of ``roots`` (weights float)."""
    import onnx
    from onnx import helper, numpy_helper
    q = onnx.ModelProto()
    q.CopyFrom(proto)
    g = q.graph
    inputs = {i.name for i in g.input}
    pick = [t for t in share if share[t] in roots]
    nodes, after, first = list(g.node), {}, []
    for t in pick:
        scale, zero = params[share[t]]
        sn, zn, qn, fn = (f"{t}::fq_{k}" for k in ("scale", "zero", "q", "f"))
        g.initializer.extend([numpy_helper.from_array(np.asarray(scale), sn),
                              numpy_helper.from_array(np.asarray(zero), zn)])
        if t in inputs:             # readers read the DQ's output instead
            for n in nodes:
                for i, v in enumerate(n.input):
                    if v == t:
                        n.input[i] = fn
            first += [helper.make_node("QuantizeLinear", [t, sn, zn], [qn]),
                      helper.make_node("DequantizeLinear", [qn, sn, zn], [fn])]
            continue
        prod = next((n for n in nodes if t in n.output), None)
        if prod is None:
            continue
        prod.output[list(prod.output).index(t)] = fn       # the DQ writes t
        after[id(prod)] = after.get(id(prod), []) + [
            helper.make_node("QuantizeLinear", [fn, sn, zn], [qn]),
            helper.make_node("DequantizeLinear", [qn, sn, zn], [t])]
    del g.node[:]
    g.node.extend(first)
    for n in nodes:
        g.node.append(n)
        g.node.extend(after.get(id(n), []))
    return q


def _sensitive(proto, share, params, det, images, backend, max_share):
    """The activations (roots of ``share``) whose 8-bit noise alone makes more than
    ``max_share`` of the output error of all of them at once: the output error (squared
    difference over the float outputs' power, per output, averaged) of a float simulation
    with Q/DQ on a set of activations, on ``images``. The errors of independent noises add,
    so a set below the share holds no such activation, and a set above it is halved: the
    first half measured, the second taken as the rest. Repeated (up to 3 rounds) against
    the error left without the ones found, while that error exceeds ``_ENOUGH_ERROR``."""
    from .onnx.session import InferenceSession
    xs = [det.preprocess(_load(name, image))[0] for name, image in images]

    def outs(model):
        sess = InferenceSession(model.SerializeToString(), backend=backend)
        return [sess.run(None, {det.input_name: x}) for x in xs]
    ref = outs(proto)
    power = [[max(float(np.square(a, dtype=np.float64).sum()), 1e-30) for a in r] for r in ref]

    def error(roots):
        if not roots:
            return 0.0
        got = outs(_fake_quantized(proto, share, params, set(roots)))
        return float(np.mean([float(np.square(np.asarray(b, np.float64) - a).sum()) / p
                              for r, g, pw in zip(ref, got, power)
                              for a, b, p in zip(r, g, pw)]))

    order = {t: i for i, t in enumerate(share)}
    left = sorted(set(share.values()), key=order.get)
    found = []
    for _ in range(3):
        total = error(left)
        if total <= _ENOUGH_ERROR:
            break
        new, todo = [], [(left, total)]
        while todo:
            group, e = todo.pop()
            if e <= max_share * total:
                continue
            if len(group) == 1:
                new += group
                continue
            half = len(group) // 2
            first = error(group[:half])         # the other half's: what is left of e
            todo += [(group[:half], first), (group[half:], max(e - first, 0.0))]
        if not new:
            break
        found += new
        left = [t for t in left if t not in new]
    return found


# ----------------------------------------------------------------------------- accuracy
def match_detections(ref, got, iou=0.5):
    """(matched, mean score difference got - ref) of ``got`` against ``ref`` (Detections):
    each reference box, best first, takes the best unmatched box of its class at IoU >= iou."""
    from .kernels.boxes import box_iou
    if not len(ref) or not len(got):
        return 0, []
    m = box_iou(np.asarray(ref.boxes, np.float64), np.asarray(got.boxes, np.float64))
    m[np.asarray(ref.class_ids)[:, None] != np.asarray(got.class_ids)[None, :]] = 0.0
    used, diffs = set(), []
    for i in np.argsort(-np.asarray(ref.scores), kind="stable"):
        for j in np.argsort(-m[i], kind="stable"):
            if m[i, j] < iou:
                break
            if j not in used:
                used.add(j)
                diffs.append(float(got.scores[j]) - float(ref.scores[i]))
                break
    return len(diffs), diffs


def _accuracy(det, out_path, held, backend, det_kw):
    from .detect import Detector
    if not held:
        return None, None, 0, 0, 0
    qdet = Detector(out_path, backend=backend, family=det.family, **det_kw)
    total, found, diffs = 0, 0, []
    for name, image in held:
        im = _load(name, image)
        ref, got = det(im), qdet(im)
        total, found = total + len(ref), found + len(got)
        diffs += match_detections(ref, got)[1]
    recall = len(diffs) / total if total else None
    return recall, (float(np.mean(diffs)) if diffs else None), total, len(diffs), found


# ----------------------------------------------------------------------------- entry point
def _check_args(observer, activation_type, holdout, percentile, max_error_share=None,
                weight_rounding="gptq"):
    if weight_rounding not in WEIGHT_ROUNDINGS:
        raise ValidationError(f"weight_rounding must be one of {', '.join(WEIGHT_ROUNDINGS)}, "
                              f"got {weight_rounding!r}")
    if observer not in OBSERVERS:
        raise ValidationError(f"observer must be one of {', '.join(OBSERVERS)}, got "
                              f"{observer!r}")
    if activation_type not in ACTIVATION_TYPES:
        raise ValidationError(f"activation_type must be uint8 or int8, got "
                              f"{activation_type!r}")
    if not 0 <= holdout < 1:
        raise ValidationError(f"holdout must be a fraction in [0, 1), got {holdout!r}")
    if not 50 < percentile <= 100:
        raise ValidationError(f"percentile must be in (50, 100], got {percentile!r}")
    if max_error_share is not None and not 0 <= max_error_share < 1:
        raise ValidationError(f"max_error_share must be a fraction in [0, 1), got "
                              f"{max_error_share!r}")


def split_holdout(items, holdout):
    """(calibration, held back): every k-th item from the first held back, k = round(1 /
    holdout) (a third: every third); nothing held back for holdout 0 or fewer than 2 items."""
    if holdout <= 0 or len(items) < 2:
        return list(items), []
    k = max(2, int(round(1.0 / holdout)))
    return ([x for i, x in enumerate(items) if i % k],
            [x for i, x in enumerate(items) if not i % k])


def quantize_static(model_path, calib_images, out_path, *, per_channel=True,
                    activation_type="uint8", observer="minmax", holdout=1 / 3,
                    percentile=99.999, samples=False, nodes_to_exclude=(),
                    max_step_ratio=0.1, max_error_share=0.1, bias_correction=True,
                    weight_rounding="gptq", float_outputs=True, backend=None, quiet=False,
                    **detector_options):
    """Quantize the float ONNX detector ``model_path`` into a QDQ model at ``out_path``.

    ``calib_images``: a folder of images, an image file or array, or a list of these
    (``samples=True`` adds scikit-image's bundled sample photos). Every third image
    (``holdout``) is held back from calibration for the accuracy check. ``observer``: how
    an activation's range is chosen: ``"minmax"`` or ``"percentile"`` (the ``percentile``-th
    quantile each side). ``per_channel``: one weight scale per output
    channel (else per tensor). ``activation_type``: ``"uint8"`` or ``"int8"`` (both
    asymmetric). ``max_step_ratio``: an activation whose quantization step exceeds this
    share of its RMS on the calibration images (a wide range held by few values: about
    31 dB signal-to-noise at 0.1) stays float, with the ops that read or write it
    (0 or None: quantize every one). ``max_error_share``: an activation whose 8-bit noise
    alone makes more than this share of the output error of all activations' noise (a
    float simulation on the first calibration images) stays float with the ops around it,
    while that error exceeds 1% of the outputs' power (0 or None: no search; see
    ``_sensitive``). ``weight_rounding``: ``"gptq"`` (error-compensating, see above) or
    ``"nearest"``. ``bias_correction``: each int8 Conv's bias absorbs
    the mean change its rounded weights make on the calibration images (their input
    channels' means; see :func:`weight_shift`). ``nodes_to_exclude``: node names kept in
    float. ``float_outputs``: what lies between the last Convs and the outputs (reshapes,
    concats, sigmoids, box arithmetic: ``_output_tail``) and the Convs writing it stay float,
    so scores and boxes are not requantized (False: quantize them too).
    ``detector_options`` configure the Detector whose preprocessing prepares
    the images (``family=``, ``preset=``, any configuration key). Returns a
    :class:`QuantizeResult`.
    """
    _check_args(observer, activation_type, holdout, percentile, max_error_share,
                weight_rounding)
    from .detect import Detector
    items = collect_images(calib_images)
    if samples:
        items += sample_images()
    calib, held = split_holdout(items, holdout)
    det = Detector(os.fspath(model_path), backend=backend, **detector_options)
    m = _prepared(model_path)
    m.exclude = set(nodes_to_exclude) - {""}
    m.float_outputs = bool(float_outputs)
    floats = _float_tensors(m)
    import onnx
    original = onnx.ModelProto()
    original.CopyFrom(m.to_proto())
    plain = onnx.ModelProto()
    plain.CopyFrom(original)
    bounds, absorbed = _absorb_clamps(m, floats)
    bounds.update((n.output[0], _FIXED_RANGES[n.op_type]) for n in m.nodes
                  if n.op_type in _FIXED_RANGES)
    logits = {n.input[0] for n in m.nodes if n.op_type == "Sigmoid"}
    share, quantized = _plan(m, floats)
    grams = _conv_grams(m, quantized) if weight_rounding == "gptq" else None
    obs = _calibrate(original, sorted(share), det, calib, (observer, percentile), backend,
                     quiet, grams)
    for t in logits & set(obs):
        obs[t].widen(-_SIGMOID_LOGIT, _SIGMOID_LOGIT)
    share, quantized, params = _keep_coarse_float(m, floats, share, quantized, obs, bounds,
                                                  activation_type, max_step_ratio)
    sensitive = []
    if max_error_share and share and calib:
        sensitive = _sensitive(plain, share, params, det, calib[:_SENSITIVITY_IMAGES],
                               backend, max_error_share)
        if sensitive:
            m.skip |= {id(n) for n in quantized if any(share.get(v) in sensitive for v in
                                                         list(n.input) + list(n.output))}
            share, quantized = _plan(m, floats)
            share, quantized, params = _keep_coarse_float(m, floats, share, quantized, obs,
                                                          bounds, activation_type,
                                                          max_step_ratio)
    _restore_clamps(m, absorbed, quantized)
    means = {t: obs[t].channel_mean() for t in share} if bias_correction else None
    proto, count = _write_qdq(m, share, quantized, params, per_channel, activation_type,
                              means, grams)
    onnx.checker.check_model(proto)
    out_path = os.fspath(out_path)
    from ._files import write_atomic
    write_atomic(out_path, lambda f: f.write(proto.SerializeToString()))
    det_kw = {k: v for k, v in detector_options.items() if k != "family"}
    recall, diff, total, matched, found = _accuracy(det, out_path, held, backend, det_kw)
    return QuantizeResult(out_path, len(calib), len(held), count, recall, diff, total, matched,
                          found, tuple(sensitive))
