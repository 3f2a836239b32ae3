"""Detector pipelines: preprocessing, inference, postprocessing and end-to-end, per model.

Run: pytest benchmarks/bench_detect.py --benchmark-only [-k yunet]

For each of the four shared models, on astronaut.png (512x512, decoded once, so PNG decoding
is not counted): ``preprocess`` (resize + normalise), ``postprocess`` (decode + NMS + mapping
back, on stored outputs), and the whole pipeline ``end_to_end`` on each edgedl backend and on
onnxruntime as the peer (same Detector, session injected). One thread everywhere.
The closing table gives medians, the pre+post share of end-to-end time (target: <= 20 %,
issue 5) and each runtime's end-to-end time relative to onnxruntime.
"""
import statistics

import numpy as np
import pytest

import edgedl
from edgedl._config import BACKEND_ORDER, why_unavailable
from edgedl.detect import Detector, load_image
from _common import show_now, single_thread

MODELS = ["fastestdet", "ultraface_rfb320", "yunet_n_320", "yolox_nano"]
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


def detector(shared, model, runtime):
    key = (model, runtime)
    if key not in _detectors:
        path = str(shared / "models" / f"{model}.onnx")
        if runtime == "onnxruntime":
            ort = pytest.importorskip("onnxruntime")
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
            _detectors[key] = Detector(path, session=sess)
        else:
            reason = why_unavailable(runtime)
            if reason:
                pytest.skip(f"backend {runtime} unavailable: {reason}")
            _detectors[key] = Detector(path, backend=runtime, num_threads=1)
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


def _ms(v):
    return f"{v * 1e3:7.2f}" if v is not None else f"{'-':>7s}"
