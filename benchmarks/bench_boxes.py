"""Box kernels, every backend vs the peers in the same run, one thread.

Run: pytest benchmarks/bench_boxes.py --benchmark-only [-k nms]

- nms on N = 100 .. 20000 clustered detector-like boxes (IoU 0.5) vs OpenCV
  ``cv2.dnn.NMSBoxes``, onnxruntime's NonMaxSuppression (single-node session) and the classic
  vectorised NumPy NMS (Fast R-CNN's py_cpu_nms);
- nms on 10^5 and 10^6 boxes spread over a 3840x2160 frame (sizes 10-200 px, IoU 0.5): the
  compiled backends' grid path (the numpy reference refuses > 20000 boxes; the peers are
  O(N^2) there and left out);
- batched_nms, 5000 boxes in 80 classes, vs ``cv2.dnn.NMSBoxesBatched`` and onnxruntime
  (scores [1, 80, N], each box scoring only in its class);
- box_iou and assign_anchors at 8400x20, 25200x50, 100000x10 vs NumPy broadcasting (the numpy
  backend is exactly that).

The closing table gives medians and each time relative to the row's peers.
"""
import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import edgedl  # noqa: E402
from edgedl._config import BACKEND_ORDER, why_unavailable  # noqa: E402
from edgedl.kernels import boxes as B  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from ort_util import ort_session, single_node_model  # noqa: E402
from _common import show_now, single_thread

BACKENDS = list(BACKEND_ORDER)
NMS_SIZES = [100, 1000, 5000, 20000]
NMS_PEERS = ["opencv", "onnxruntime", "numpy-vectorised"]
PAIR_SIZES = [(8400, 20), (25200, 50), (100000, 10)]
RESULTS = {}          # (group, runtime) -> median seconds


@pytest.fixture(scope="module", autouse=True)
def one_thread(request):
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass
    with single_thread():
        yield
    if RESULTS:
        show_now(request.config, _table)


# ----------------------------------------------------------------------------- data
def clustered(n, seed=0, jitter=0.15):
    """Detector-like output: n boxes jittered around n/50 objects in a 640x640 image."""
    rng = np.random.default_rng(seed)
    k = max(1, n // 50)
    centers = rng.random((k, 2)) * 600
    sizes = rng.uniform(10, 200, (k, 2))
    o = rng.integers(0, k, n)
    c = centers[o] + rng.normal(0, jitter, (n, 2)) * sizes[o]
    s = sizes[o] * np.exp(rng.normal(0, jitter, (n, 2)))
    boxes = np.concatenate([c - s / 2, c + s / 2], 1).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32), o


def anchors_and_gts(n, m, seed=0):
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * 640
    wh = rng.uniform(8, 256, (n, 2))
    a = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    xy = rng.random((m, 2)) * 600
    wh = rng.uniform(16, 300, (m, 2))
    return a, np.concatenate([xy, xy + wh], 1).astype(np.float32)


def py_cpu_nms(dets, scores, thresh):
    """The classic vectorised NumPy NMS (Fast R-CNN's py_cpu_nms, without the +1)."""
    x1, y1, x2, y2 = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1) * np.maximum(0.0, yy2 - yy1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return np.array(keep)


def _ort_nms_runner(boxes, scores3, max_out, thr, score_thr=None):
    pytest.importorskip("onnxruntime")
    bx = boxes[None][..., [1, 0, 3, 2]].copy()       # ONNX order [y1, x1, y2, x2]
    ins = [("b", bx), ("s", scores3), ("m", np.array([max_out], np.int64)),
           ("i", np.array([thr], np.float32))]
    if score_thr is not None:
        ins.append(("t", np.array([score_thr], np.float32)))
    sess = ort_session(single_node_model("NonMaxSuppression", ins, opset=11), threads=1)
    feed = dict(ins)
    return lambda: sess.run(None, feed)[0]


def _skip_missing(runtime):
    if runtime in BACKENDS and why_unavailable(runtime):
        pytest.skip(why_unavailable(runtime))


def _run(benchmark, group, runtime, fn, slow=False):
    fn()                                   # JIT / session warm-up outside the timing
    benchmark.group = group
    benchmark.pedantic(fn, rounds=3 if slow else 15, iterations=1 if slow else 3,
                       warmup_rounds=0 if slow else 1)
    RESULTS[(group, runtime)] = benchmark.stats.stats.median


# ----------------------------------------------------------------------------- nms
@pytest.mark.parametrize("runtime", BACKENDS + NMS_PEERS)
@pytest.mark.parametrize("n", NMS_SIZES)
def test_nms(benchmark, n, runtime):
    _skip_missing(runtime)
    boxes, scores, _ = clustered(n)
    want = B.nms(boxes, scores, 0.5, backend="numpy")
    slow = runtime in ("numpy", "numpy-vectorised") and n >= 5000
    if runtime in BACKENDS:
        fn = lambda: B.nms(boxes, scores, 0.5, backend=runtime)      # noqa: E731
    elif runtime == "opencv":
        cv2 = pytest.importorskip("cv2")
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        fn = lambda: cv2.dnn.NMSBoxes(xywh, scores, 0.0, 0.5)        # noqa: E731
    elif runtime == "onnxruntime":
        run = _ort_nms_runner(boxes, scores[None, None], n, 0.5)
        fn = lambda: run()                                            # noqa: E731
    else:
        fn = lambda: py_cpu_nms(boxes, scores, 0.5)                   # noqa: E731
    got = fn()
    got = np.asarray(got).reshape(-1, 3)[:, 2] if runtime == "onnxruntime" \
        else np.asarray(got).ravel()
    assert set(got.tolist()) == set(want.tolist())   # every peer keeps the same set here
    _run(benchmark, f"nms N={n}", runtime, fn, slow)


def spread(n, seed=0):
    """n boxes with centres uniform over a 3840x2160 frame, sizes 10-200 px, random scores."""
    rng = np.random.default_rng(seed)
    c = rng.random((n, 2)) * [3840, 2160]
    wh = rng.uniform(10, 200, (n, 2))
    boxes = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
    return boxes, rng.random(n).astype(np.float32)


@pytest.mark.parametrize("runtime", [b for b in BACKENDS if b != "numpy"])
@pytest.mark.parametrize("n", [100_000, 1_000_000], ids=["1e5", "1e6"])
def test_nms_spread(benchmark, n, runtime):
    _skip_missing(runtime)
    boxes, scores = spread(n)
    fn = lambda: B.nms(boxes, scores, 0.5, backend=runtime)          # noqa: E731
    _run(benchmark, f"nms spread N={n:.0e}", runtime, fn, slow=True)


@pytest.mark.parametrize("runtime", BACKENDS + ["opencv", "onnxruntime"])
def test_batched_nms(benchmark, runtime):
    _skip_missing(runtime)
    n, ncls = 5000, 80
    boxes, scores, obj = clustered(n)
    cls = (obj % ncls).astype(np.int64)
    want = B.batched_nms(boxes, scores, cls, 0.5, backend="numpy")
    if runtime in BACKENDS:
        fn = lambda: B.batched_nms(boxes, scores, cls, 0.5, backend=runtime)   # noqa: E731
    elif runtime == "opencv":
        cv2 = pytest.importorskip("cv2")
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        fn = lambda: cv2.dnn.NMSBoxesBatched(xywh, scores, cls.astype(np.int32),  # noqa: E731
                                             0.0, 0.5)
    else:
        s3 = np.zeros((1, ncls, n), np.float32)
        s3[0, cls, np.arange(n)] = scores
        run = _ort_nms_runner(boxes, s3, n, 0.5, score_thr=0.0)
        fn = lambda: run()                                            # noqa: E731
    got = fn()
    got = np.asarray(got).reshape(-1, 3)[:, 2] if runtime == "onnxruntime" \
        else np.asarray(got).ravel()
    assert set(got.tolist()) == set(want.tolist())
    _run(benchmark, f"batched_nms N={n} C={ncls}", runtime, fn, runtime == "numpy")


# ----------------------------------------------------------------------------- IoU / assign
@pytest.mark.parametrize("runtime", BACKENDS)
@pytest.mark.parametrize("size", PAIR_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_box_iou(benchmark, size, runtime):
    _skip_missing(runtime)
    a, g = anchors_and_gts(*size)
    out = np.empty(size, np.float32)
    fn = lambda: B.box_iou(a, g, out=out, backend=runtime)            # noqa: E731
    np.testing.assert_allclose(fn(), B.box_iou(a, g, backend="numpy"), atol=1e-6)
    _run(benchmark, f"box_iou {size[0]}x{size[1]}", runtime, fn)


@pytest.mark.parametrize("runtime", BACKENDS)
@pytest.mark.parametrize("size", PAIR_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_assign_anchors(benchmark, size, runtime):
    _skip_missing(runtime)
    a, g = anchors_and_gts(*size)
    fn = lambda: B.assign_anchors(a, g, backend=runtime)              # noqa: E731
    np.testing.assert_array_equal(fn().labels, B.assign_anchors(a, g, backend="numpy").labels)
    _run(benchmark, f"assign_anchors {size[0]}x{size[1]}", runtime, fn)


# ----------------------------------------------------------------------------- report
def _table(w):
    groups = list(dict.fromkeys(g for g, _ in RESULTS))
    w("")
    w("box kernels, 1 thread, float32: median ms; in brackets the time relative to the best peer"
      " (opencv / onnxruntime / numpy-vectorised for NMS, the numpy backend for IoU/assign)")
    cols = BACKENDS + NMS_PEERS
    w(f"{'':28s}" + "".join(f"{c:>22s}" for c in cols))
    for g in groups:
        peers = [RESULTS[(g, p)] for p in (NMS_PEERS if "nms" in g else ["numpy"])
                 if (g, p) in RESULTS]
        best = min(peers) if peers else None
        cells = []
        for c in cols:
            t = RESULTS.get((g, c))
            if t is None:
                cells.append(f"{'-':>22s}")
            else:
                r = f"({t / best:.3f}x)" if best else ""
                cells.append(f"{t * 1e3:>11.3f} {r:>10s}")
        w(f"{g:28s}" + "".join(cells))
    for g in groups:
        if g.startswith("box_iou"):
            n, m = (int(v) for v in g.split()[1].split("x"))
            w(f"{g}: " + ", ".join(f"{rt} {n * m / RESULTS[(g, rt)] / 1e9:.2f} Gpairs/s"
                                   for rt in BACKENDS if (g, rt) in RESULTS))
