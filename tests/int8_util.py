"""The four shared models quantized by onnxruntime.quantization (a test-only dependency), for the
int8 tests and benchmarks: QOperator, QDQ per-channel and QDQ per-tensor, calibrated on the
shared images with each model's own preprocessing (../shared/models/README.md).

``quantized(shared, model, form, out_dir)`` writes ``<out_dir>/<model>.<form>.onnx`` once and
returns its path; ``feed(shared, model, image)`` is the float input of one image.
"""
import pathlib

import numpy as np

#: model -> (input size (H, W), channel order, mean, std) as each project feeds it
PREPROCESS = {
    "fastestdet": ((352, 352), "bgr", 0.0, 255.0),
    "ultraface_rfb320": ((240, 320), "rgb", 127.0, 128.0),
    "yunet_n_320": ((320, 320), "bgr", 0.0, 1.0),
    "yolox_nano": ((416, 416), "bgr", 0.0, 1.0),
}
MODELS = tuple(PREPROCESS)
FORMS = ("qoperator", "qdq_per_channel", "qdq_per_tensor")


def feed(shared, model, image):
    """(1, 3, H, W) float32 input of ``image`` (a file name in shared/images): a stretch
    resize (the calibration only needs realistic value ranges, not each family's letterbox)."""
    from PIL import Image
    (h, w), order, mean, std = PREPROCESS[model]
    im = Image.open(pathlib.Path(shared) / "images" / image).convert("RGB").resize((w, h))
    x = np.asarray(im, np.float32)
    if order == "bgr":
        x = x[:, :, ::-1]
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)


def images(shared):
    return sorted(p.name for p in (pathlib.Path(shared) / "images").iterdir()
                  if p.suffix in (".png", ".jpg"))


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over the shared images."""

    def __init__(self, shared, model, name, n):
        self.items = iter([{name: feed(shared, model, im)} for im in images(shared)[:n]])

    def get_next(self):
        return next(self.items, None)


def quantized(shared, model, form, out_dir, n_calib=2):
    """Path of ``model`` quantized in ``form`` (one of FORMS) under out_dir (made once)."""
    from ort_util import ort_int8_exact
    # 7-bit weights where onnxruntime's own u8 x s8 kernels saturate (AVX2 without VNNI:
    # ort_util.ort_int8_exact), so that it is an exact oracle there too
    reduce_range = not ort_int8_exact()
    out = pathlib.Path(out_dir) / f"{model}.{form}{'.rr' * reduce_range}.onnx"
    if out.exists():
        return out
    import onnx
    from onnxruntime import quantization as Q
    src = pathlib.Path(shared) / "models" / f"{model}.onnx"
    # onnxruntime's pre-processing (shape inference) writes the model the quantizer reads
    pre = pathlib.Path(out_dir) / f"{model}.pre.onnx"
    if not pre.exists():
        Q.quant_pre_process(str(src), str(pre), skip_optimization=True, skip_symbolic_shape=True)
    proto = onnx.load(str(pre))
    name = proto.graph.input[0].name
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:      # per-axis Q/DQ needs opset 13: onnx's converter lifts the model first
        from onnx import version_converter
        up = pathlib.Path(out_dir) / f"{model}.op13.onnx"
        onnx.save(version_converter.convert_version(proto, 13), str(up))
        pre = up
    fmt = Q.QuantFormat.QOperator if form == "qoperator" else Q.QuantFormat.QDQ
    tmp = out.with_suffix(".tmp.onnx")
    Q.quantize_static(str(pre), str(tmp), _Reader(shared, model, name, n_calib),
                      quant_format=fmt, per_channel=form != "qdq_per_tensor",
                      activation_type=Q.QuantType.QUInt8, weight_type=Q.QuantType.QInt8,
                      calibrate_method=Q.CalibrationMethod.MinMax, reduce_range=reduce_range)
    tmp.rename(out)
    return out


def op_types(path):
    """{op key (domain-prefixed outside ai.onnx): count} of a model."""
    import onnx
    res = {}
    for n in onnx.load(str(path)).graph.node:
        k = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        res[k] = res.get(k, 0) + 1
    return res
