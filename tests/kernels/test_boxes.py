"""Detection box kernels: every kernel x backend x dtype against the NumPy reference; the
reference against naive per-pair Python transcriptions (torchvision's nms loop, mmdetection's
MaxIoUAssigner, torchvision's sigmoid_focal_loss); non_max_suppression against onnxruntime's
NonMaxSuppression node; edge cases (empty, one box, ties, duplicates, zero area) and bad input.
Property tests (hypothesis) are in test_boxes_props.py."""
import math

import numpy as np
import pytest

from edgedl.errors import DTypeError, ShapeError, ValidationError
from edgedl.kernels import boxes as B

from conftest import ARM_EMULATED
from ort_util import run_ort_node

DTYPES = [np.float32, np.float64]
KINDS = ["iou", "giou", "diou", "ciou"]


# ----------------------------------------------------------------------------- data
def rand_boxes(rng, n, dtype=np.float32, size=100.0, wmin=1.0, wmax=30.0, integer=False):
    xy = rng.random((n, 2)) * size
    wh = rng.uniform(wmin, wmax, (n, 2))
    b = np.concatenate([xy, xy + wh], 1)
    return (np.round(b) if integer else b).astype(dtype)


def clustered(rng, n, dtype=np.float32, objects=None, jitter=0.15):
    """Detector-like output: boxes jittered around a few objects, random scores."""
    k = objects or max(1, n // 50)
    centers = rng.random((k, 2)) * 600
    sizes = rng.uniform(10, 200, (k, 2))
    o = rng.integers(0, k, n)
    c = centers[o] + rng.normal(0, jitter, (n, 2)) * sizes[o]
    s = sizes[o] * np.exp(rng.normal(0, jitter, (n, 2)))
    b = np.concatenate([c - s / 2, c + s / 2], 1).astype(dtype)
    return b, rng.random(n).astype(dtype)


# ----------------------------------------------------------------------------- naive twins
def naive_iou(a, b, kind="iou"):
    """One pair, float64, straight from the papers / torchvision (eps 1e-7)."""
    a, b = [float(v) for v in a], [float(v) for v in b]
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = inter / union if union > 0 else 0.0
    if kind == "iou":
        return iou
    cw = max(a[2], b[2]) - min(a[0], b[0])
    ch = max(a[3], b[3]) - min(a[1], b[1])
    if kind == "giou":
        c = cw * ch
        return iou - (c - union) / c if c > 0 else iou
    rho2 = (((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2
            + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2)
    diou = iou - rho2 / (cw * cw + ch * ch + 1e-7)
    if kind == "diou":
        return diou
    if min(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1]) <= 0:
        return diou       # a zero-area box has no aspect ratio: no aspect term (issue 15)
    v = 4 / math.pi ** 2 * (math.atan2(b[2] - b[0], b[3] - b[1])
                            - math.atan2(a[2] - a[0], a[3] - a[1])) ** 2
    return diou - v / (1 - iou + v + 1e-7) * v


def naive_nms(boxes, scores, thr, score_threshold=None, max_output=None):
    """torchvision's CPU nms_kernel loop (box dtype arithmetic), plus the score filter."""
    dt = boxes.dtype.type
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    cand = [i for i in range(len(scores))
            if score_threshold is None or scores[i] > scores.dtype.type(score_threshold)]
    cand.sort(key=lambda i: (-float(scores[i]), i))
    supp = set()
    keep = []
    for a, i in enumerate(cand):
        if i in supp:
            continue
        if max_output is not None and len(keep) >= max_output:
            break
        keep.append(i)
        for j in cand[a + 1:]:
            if j in supp:
                continue
            w = max(dt(0), min(x2[i], x2[j]) - max(x1[i], x1[j]))
            h = max(dt(0), min(y2[i], y2[j]) - max(y1[i], y1[j]))
            inter = w * h
            with np.errstate(invalid="ignore", divide="ignore"):
                ovr = inter / ((areas[i] + areas[j]) - inter)
            if float(ovr) > thr:
                supp.add(j)
    return np.array(keep, dtype=np.int64)


def naive_assign(anchors, gts, pos, neg, minpos, low_quality):
    """mmdetection MaxIoUAssigner (gt_max_assign_all=True), as a plain loop."""
    n, m = len(anchors), len(gts)
    labels = np.full(n, -1, np.int8)
    gi = np.full(n, -1, np.int64)
    if m == 0:
        return np.zeros(n, np.int8), gi, np.zeros(n)
    ious = np.array([[naive_iou(a, g) for g in gts] for a in anchors]).reshape(n, m)
    mx = ious.max(1) if n else np.zeros(0)
    arg = ious.argmax(1) if n else np.zeros(0, int)
    for i in range(n):
        if 0 <= mx[i] < neg:
            labels[i] = 0
        if mx[i] >= pos:
            labels[i], gi[i] = 1, arg[i]
    if low_quality and n:
        for j in range(m):
            g = ious[:, j].max()
            if g >= minpos:
                for i in range(n):
                    if ious[i, j] == g:
                        labels[i], gi[i] = 1, j
    return labels, gi, mx


def torchvision_focal(x, t, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss(reduction="none"), transcribed, float64."""
    x, t = x.astype(np.float64), t.astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    ce = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


# ----------------------------------------------------------------------------- IoU
@pytest.mark.parametrize("kind", KINDS)
def test_reference_iou_matches_naive(kind, rng):
    a = rand_boxes(rng, 9, np.float64)
    b = np.concatenate([rand_boxes(rng, 6, np.float64), a[:2], [[5, 5, 5, 9]]])  # equal + 0-area
    got = B.box_iou(a, b, kind, backend="numpy")
    want = np.array([[naive_iou(x, y, kind) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_box_iou_backends(backend, kind, dtype, rng):
    for n, m in [(1, 1), (7, 3), (127, 20), (64, 33), (0, 5), (5, 0)]:
        a, b = rand_boxes(rng, n, dtype), rand_boxes(rng, m, dtype)
        if n > 3 and m > 3:
            b[:2] = a[:2]                      # identical pairs: IoU exactly 1
            b[2] = [3, 3, 3, 8]                # zero-area box
        got = B.box_iou(a, b, kind, backend=backend)
        want = B.box_iou(a, b, kind, backend="numpy")
        assert got.dtype == dtype and got.shape == (n, m)
        assert np.isfinite(got).all()
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
        if kind == "iou" and backend != "numba":    # numba may fuse a multiply-add (1 ulp)
            np.testing.assert_array_equal(got, want)
        al = B.box_iou_aligned(a[:min(n, m)], b[:min(n, m)], kind, backend=backend)
        np.testing.assert_allclose(al, np.diagonal(want)[:min(n, m)], rtol=rtol, atol=rtol)


def test_box_iou_zero_area_and_identity(backend):
    a = np.array([[0, 0, 0, 0], [1, 1, 1, 5], [2, 2, 4, 4], [2, 2, 4, 4]], np.float32)
    for kind in KINDS:
        m = B.box_iou(a, a, kind, backend=backend)
        assert not np.isnan(m).any(), kind
        assert m[2, 3] == pytest.approx(1.0, abs=1e-6)
    iou = B.box_iou(a, a, backend=backend)
    assert (iou[:2] == 0).all() and (iou[:, :2] == 0).all()


def test_box_iou_layouts_and_out(backend, rng):
    a = rand_boxes(rng, 40, np.float64)
    b = rand_boxes(rng, 30, np.float64)
    big = np.zeros((80, 8))
    big[::2, 1:8:2] = a                     # non-contiguous input
    want = B.box_iou(a, b, "giou", backend="numpy")
    np.testing.assert_allclose(B.box_iou(big[::2, 1:8:2], b, "giou", backend=backend), want,
                               rtol=1e-12)
    out = np.empty((40, 30))
    assert B.box_iou(a, b, "giou", out=out, backend=backend) is out
    np.testing.assert_allclose(out, want, rtol=1e-12)
    outt = np.empty((30, 40)).T             # non-contiguous out
    assert B.box_iou(a, b, "giou", out=outt, backend=backend) is outt
    np.testing.assert_allclose(outt, want, rtol=1e-12)
    with pytest.raises(ShapeError, match="out"):
        B.box_iou(a, b, out=np.empty((30, 40)))
    with pytest.raises(DTypeError, match="out"):
        B.box_iou(a, b, out=np.empty((40, 30), np.float32))


def test_box_iou_lists_accepted():
    assert B.box_iou([[0, 0, 2, 2]], [[1, 1, 3, 3]])[0, 0] == pytest.approx(1 / 7)


# ----------------------------------------------------------------------------- NMS
@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_reference_matches_torchvision_loop(dtype, rng):
    for trial in range(12):
        n = int(rng.integers(0, 120))
        b, s = clustered(rng, n, dtype, objects=int(rng.integers(1, 6)))
        thr = float(rng.choice([0.0, 0.3, 0.5, 0.7, 1.0, rng.random()]))
        st = None if trial % 3 == 0 else float(rng.random() * 0.5)
        mo = None if trial % 4 else int(rng.integers(0, 10))
        got = B.nms(b, s, thr, st, mo, backend="numpy")
        np.testing.assert_array_equal(got, naive_nms(b, s, thr, st, mo))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nms_backends(backend, dtype, rng):
    sizes = [0, 1, 2, 7, 127, 128, 1000] + ([] if ARM_EMULATED else [3000])
    for n in sizes:
        for thr in (0.0, 0.45, 0.7, 1.0):
            b, s = clustered(rng, n, dtype)
            want = B.nms(b, s, thr, backend="numpy")
            got = B.nms(b, s, thr, backend=backend)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, want, err_msg=f"n={n} thr={thr}")
        st = float(rng.random() * 0.5)
        mo = int(rng.integers(0, 50))
        np.testing.assert_array_equal(B.nms(b, s, 0.5, st, mo, backend=backend),
                                      B.nms(b, s, 0.5, st, mo, backend="numpy"))


def test_nms_mixed_sizes_wide_windows(backend, rng):
    # huge and tiny boxes together, many near-threshold pairs: exercises the x1 window bounds
    for trial in range(4):
        n = 150 if trial == 0 else 600
        x1 = rng.random(n) * 100
        y1 = rng.random(n) * 100
        w = np.exp(rng.uniform(-2, 6, n))
        h = w * np.exp(rng.normal(0, 0.3, n))
        b = np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32)
        s = rng.random(n).astype(np.float32)
        for thr in (0.05, 0.3, 0.5, 0.9):
            want = naive_nms(b, s, thr) if trial == 0 else B.nms(b, s, thr, backend="numpy")
            np.testing.assert_array_equal(B.nms(b, s, thr, backend=backend), want)


def test_nms_ties_duplicates_and_integer_boxes(backend, rng):
    b = rand_boxes(rng, 60, np.float32, size=20, integer=True)
    b = np.concatenate([b, b[:20]])                          # exact duplicates
    s = rng.integers(0, 4, len(b)).astype(np.float32) / 4    # many exact score ties
    s[:3] = [0.0, -0.0, 0.0]
    for thr in (0.0, 0.25, 0.5, 1 / 3, 1.0):                 # thresholds IoUs hit exactly
        np.testing.assert_array_equal(B.nms(b, s, thr, backend=backend), naive_nms(b, s, thr))
    one = B.nms(b[:1], s[:1], 0.5, backend=backend)
    np.testing.assert_array_equal(one, [0])
    dup = np.repeat(b[:1], 5, 0)
    np.testing.assert_array_equal(B.nms(dup, np.ones(5, np.float32), 0.9, backend=backend), [0])
    np.testing.assert_array_equal(B.nms(dup, np.ones(5, np.float32), 1.0, backend=backend),
                                  np.arange(5))


def test_nms_zero_area_never_suppresses(backend):
    b = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 4], [1, 1, 1, 4]], np.float64)
    np.testing.assert_array_equal(B.nms(b, np.array([4.0, 3, 2, 1]), 0.0, backend=backend),
                                  [0, 1, 2, 3])


def test_nms_non_contiguous_and_dtypes(backend, rng):
    b, s = clustered(rng, 300, np.float64)
    big = np.zeros((300, 8))
    big[:, ::2] = b
    want = B.nms(b, s, 0.5, backend="numpy")
    np.testing.assert_array_equal(B.nms(big[:, ::2], s, 0.5, backend=backend), want)
    np.testing.assert_array_equal(B.nms(b, s.astype(np.float32), 0.5, backend=backend),
                                  B.nms(b, s.astype(np.float32), 0.5, backend="numpy"))


def test_nms_threshold_semantics(backend):
    # float32 IoU fl(2/6) = 0.33333334 is > the double 1/3 (torchvision compares so: dropped)
    # but not > float32(1/3) (onnxruntime's float threshold: kept)
    b = np.array([[0, 0, 2, 2], [1, 0, 3, 2]], np.float32)   # IoU = 2 / 6
    s = np.array([1, 0.5], np.float32)
    assert len(B.nms(b, s, 1 / 3, backend=backend)) == 1
    onnx = B.non_max_suppression(b[None], s[None, None], 5, 1 / 3, backend=backend)
    assert len(onnx) == 2
    if pytest.importorskip("onnxruntime"):
        np.testing.assert_array_equal(onnx, _ort_nms(b[None], s[None, None], 5, 1 / 3, None, 0))
    assert len(B.nms(b, s, 0.34, backend=backend)) == 2
    b2 = np.array([[0, 0, 3, 1], [1, 0, 3, 1]], np.float32)  # IoU = 2 / 3
    assert len(B.nms(b2, s, 0.5, backend=backend)) == 1
    b3 = np.array([[0, 0, 2, 1], [0, 0, 1, 1]], np.float32)  # IoU = 0.5 exactly: kept (>)
    assert len(B.nms(b3, s, 0.5, backend=backend)) == 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_batched_nms(backend, dtype, rng):
    for n, ncls in [(0, 3), (1, 1), (50, 3), (1000, 80), (700, 1)]:
        b, s = clustered(rng, n, dtype)
        c = rng.integers(0, ncls, n)
        got = B.batched_nms(b, s, c, 0.5, backend=backend)
        want = []
        for k in np.unique(c):
            idx = np.flatnonzero(c == k)
            want.extend(idx[naive_nms(b[idx], s[idx], 0.5)])
        want = np.array(sorted(want, key=lambda i: (-float(s[i]), i)), dtype=np.int64)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(B.batched_nms(b, s, c, 0.5, 0.2, 17, backend=backend),
                                      B.batched_nms(b, s, c, 0.5, 0.2, 17, backend="numpy"))
    # negative and large class ids
    b, s = clustered(rng, 200, dtype)
    c = rng.choice([-5, 3, 100000], 200)
    got = B.batched_nms(b, s, c, 0.4, backend=backend)
    for k in (-5, 3, 100000):
        idx = np.flatnonzero(c == k)
        np.testing.assert_array_equal(np.sort(got[c[got] == k]),
                                      np.sort(idx[naive_nms(b[idx], s[idx], 0.4)]))


def naive_soft_nms(b, s, thr, sigma, st, method):
    s = s.astype(np.float64).copy()
    alive = list(range(len(s)))
    idx, sc = [], []
    while alive:
        i = max(alive, key=lambda k: (s[k], -k))
        if not s[i] > st:
            break
        idx.append(i)
        sc.append(s[i])
        alive.remove(i)
        for j in alive:
            iou = naive_iou(b[i], b[j])
            if method == "gaussian":
                s[j] *= math.exp(-iou * iou / sigma)
            elif iou > thr:
                s[j] *= 1 - iou
    return np.array(idx, np.int64), np.array(sc)


@pytest.mark.parametrize("method", ["gaussian", "linear"])
def test_soft_nms(backend, method, rng):
    for n in (0, 1, 13, 150):
        b, s = clustered(rng, n, np.float64)
        sig = float(rng.uniform(0.1, 1))
        st = float(rng.uniform(0, 0.3))
        idx, sc = B.soft_nms(b, s, 0.3, sig, st, method, backend=backend)
        widx, wsc = naive_soft_nms(b, s, 0.3, sig, st, method)
        np.testing.assert_array_equal(idx, widx)
        np.testing.assert_allclose(sc, wsc, rtol=1e-12)
        assert sc.dtype == np.float64
    b, s = clustered(rng, 100, np.float32)
    i1, s1 = B.soft_nms(b, s, method=method, backend=backend)
    i2, s2 = B.soft_nms(b, s, method=method, backend="numpy")
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-6)
    assert s1.dtype == np.float32


# ----------------------------------------------------------------------------- ONNX NMS
def _ort_nms(bx, sc, mo, it, st, cpb):
    ins = [("b", bx), ("s", sc), ("m", np.array([mo], np.int64)),
           ("i", np.array([it], np.float32))]
    if st is not None:
        ins.append(("t", np.array([st], np.float32)))
    return run_ort_node("NonMaxSuppression", ins, {"center_point_box": cpb}, opset=11)[0]


def test_non_max_suppression_vs_onnxruntime(backend, rng):
    pytest.importorskip("onnxruntime")
    for trial in range(40):
        nb, nc = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        n = int(rng.integers(0, 150))
        cpb = int(trial % 2)
        if trial % 5 == 0:                      # integer grid: many exact IoU ties
            bx = rng.integers(0, 12, (nb, n, 4)).astype(np.float32)
        else:
            b, _ = clustered(rng, nb * n, np.float32, objects=int(rng.integers(1, 8)))
            bx = (b / 600).reshape(nb, n, 4)
        if cpb:
            bx[..., 2:] = np.abs(bx[..., 2:]) + 0.01
        else:
            flip = rng.random((nb, n)) < 0.5    # corners in either order
            bx[flip] = bx[flip][:, [2, 3, 0, 1]]
        sc = rng.random((nb, nc, n)).astype(np.float32)
        if trial % 7 == 0:
            sc = np.round(sc * 4) / 4           # score ties
        mo = int(rng.choice([0, 1, 3, 10, 1000]))
        it = float(rng.choice([0.0, 0.3, 0.5, 0.7, 1.0, rng.random()]))
        st = None if trial % 3 == 0 else float(rng.choice([0.0, 0.25, 0.5, rng.random()]))
        want = _ort_nms(bx, sc, mo, it, st, cpb)
        got = B.non_max_suppression(bx, sc, mo, it, st, cpb, backend=backend)
        assert got.dtype == np.int64 and got.shape[1:] == (3,)
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")


def test_non_max_suppression_detector_shape_and_nan(backend, rng):
    # YOLO-like: one batch, 80 classes, mostly tiny scores; NaN scores are never candidates
    # when a score_threshold is given (as in onnxruntime), and refused without one
    pytest.importorskip("onnxruntime")
    n = 700
    b, _ = clustered(rng, n, np.float32)
    bx = b[None]
    sc = (rng.random((1, 80, n)) ** 12).astype(np.float32)
    sc[0, 3, :10] = np.nan
    want = _ort_nms(bx, sc, 50, 0.45, 0.25, 0)
    np.testing.assert_array_equal(B.non_max_suppression(bx, sc, 50, 0.45, 0.25,
                                                        backend=backend), want)
    with pytest.raises(ValidationError, match="NaN"):
        B.non_max_suppression(bx, sc, 50, 0.45, backend=backend)


def test_non_max_suppression_scalar_forms(backend, rng):
    bx = rng.random((2, 30, 4)).astype(np.float32)
    sc = rng.random((2, 3, 30)).astype(np.float32)
    want = B.non_max_suppression(bx, sc, 5, 0.4, 0.2, backend=backend)
    got = B.non_max_suppression(bx, sc, np.array([5], np.int64), np.array(0.4, np.float32),
                                np.array([0.2], np.float32), np.array(0), backend=backend)
    np.testing.assert_array_equal(got, want)
    assert B.non_max_suppression(bx, sc, backend=backend).shape == (0, 3)   # default 0 boxes
    assert B.non_max_suppression(bx, sc, -1, 0.5, backend=backend).shape == (0, 3)
    assert B.non_max_suppression(bx[:, :0], sc[:, :, :0], 5, 0.5, backend=backend).shape == (0, 3)
    b64 = B.non_max_suppression(bx.astype(np.float64), sc.astype(np.float64), 5, 0.4, 0.2,
                                backend=backend)
    np.testing.assert_array_equal(b64, B.non_max_suppression(
        bx.astype(np.float64), sc.astype(np.float64), 5, 0.4, 0.2, backend="numpy"))


# ----------------------------------------------------------------------------- assignment
@pytest.mark.parametrize("dtype", DTYPES)
def test_assign_anchors_matches_mmdet_loop(backend, dtype, rng):
    for n, m in [(0, 3), (5, 0), (1, 1), (60, 4), (200, 9)]:
        anchors = rand_boxes(rng, n, dtype, size=50, wmin=5, wmax=25, integer=True)
        gts = rand_boxes(rng, m, dtype, size=50, wmin=5, wmax=25, integer=True)
        if n > 10 and m > 2:
            anchors[:3] = gts[0]               # ties at the gt's best IoU (= 1)
            anchors[5] = gts[1]
        for lq in (True, False):
            pos, neg, mp = 0.5, 0.3, 0.2
            r = B.assign_anchors(anchors, gts, pos, neg, mp, lq, backend=backend)
            assert isinstance(r, B.AssignResult)
            assert r.labels.dtype == np.int8 and r.gt_index.dtype == np.int64
            assert r.max_iou.dtype == dtype
            lab, gi, mx = naive_assign(anchors, gts, pos, neg, mp, lq)
            np.testing.assert_array_equal(r.labels, lab)
            np.testing.assert_array_equal(r.gt_index, gi)
            np.testing.assert_allclose(r.max_iou, mx, rtol=1e-6, atol=1e-7)
            ref = B.assign_anchors(anchors, gts, pos, neg, mp, lq, backend="numpy")
            for x, y in zip(r, ref):
                np.testing.assert_array_equal(x, y)


def test_assign_anchors_random_float(backend, rng):
    anchors = rand_boxes(rng, 3000, np.float32, size=200, wmin=4, wmax=60)
    gts = rand_boxes(rng, 20, np.float32, size=200, wmin=4, wmax=60)
    want = B.assign_anchors(anchors, gts, backend="numpy")
    got = B.assign_anchors(anchors, gts, backend=backend)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.gt_index, want.gt_index)
    np.testing.assert_allclose(got.max_iou, want.max_iou, rtol=1e-6, atol=1e-7)
    assert (got.labels == 1).any() and (got.labels == 0).any() and (got.labels == -1).any()


def test_objectness_weights():
    r = B.AssignResult(np.array([1, 0, -1, 1], np.int8), np.array([0, -1, -1, 2]),
                       np.zeros(4, np.float32))
    w = B.objectness_weights(r, 2.0, 0.5)
    np.testing.assert_array_equal(w, [2, 0.5, 0, 2])
    assert w.dtype == np.float32
    with pytest.raises(ValidationError, match="pos_weight"):
        B.objectness_weights(r, -1.0)


# ----------------------------------------------------------------------------- focal loss
@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_loss_vs_torchvision(backend, dtype, rng):
    for shape in [(0,), (1,), (7,), (127,), (16, 80)]:
        x = (rng.normal(size=shape) * 4).astype(dtype)
        t = (rng.random(shape) < 0.3).astype(dtype)
        for alpha, gamma in [(0.25, 2.0), (-1.0, 0.0), (0.5, 1.0), (0.9, 0.5)]:
            want = torchvision_focal(x, t, alpha, gamma)
            rtol = 2e-5 if dtype == np.float32 else 1e-12
            got = B.sigmoid_focal_loss(x, t, alpha, gamma, reduction="none", backend=backend)
            assert got.dtype == dtype and got.shape == shape
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-3)
            s = B.sigmoid_focal_loss(x, t, alpha, gamma, backend=backend)
            assert s.dtype == dtype
            np.testing.assert_allclose(s, want.sum(), rtol=rtol * 10)
            if x.size:
                m = B.sigmoid_focal_loss(x, t, alpha, gamma, reduction="mean", backend=backend)
                np.testing.assert_allclose(m, want.mean(), rtol=rtol * 10)


def test_focal_loss_weights_and_soft_targets(backend, rng):
    x = rng.normal(size=(10, 5)) * 3
    t = rng.random((10, 5))
    w = rng.random((10, 1))
    got = B.sigmoid_focal_loss(x, t, weights=w, reduction="none", backend=backend)
    np.testing.assert_allclose(got, torchvision_focal(x, t) * w, rtol=1e-12, atol=1e-15)
    g = B.sigmoid_focal_loss_grad(x, t, weights=w, reduction="mean", backend=backend)
    np.testing.assert_allclose(g, B.sigmoid_focal_loss_grad(x, t, weights=w, reduction="mean",
                                                           backend="numpy"), rtol=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_focal_grad_finite_differences(backend, gamma, reduction, rng):
    x = rng.normal(size=40) * 3
    t = np.where(rng.random(40) < 0.5, rng.random(40), (rng.random(40) < 0.5) * 1.0)
    w = rng.random(40) + 0.5
    dy = rng.normal(size=40) if reduction == "none" else 1.7
    g = B.sigmoid_focal_loss_grad(x, t, 0.25, gamma, w, reduction, dy, backend=backend)
    h = 1e-6
    lp = B.sigmoid_focal_loss(x + h, t, 0.25, gamma, w, "none", backend="numpy")
    lm = B.sigmoid_focal_loss(x - h, t, 0.25, gamma, w, "none", backend="numpy")
    fd = (lp - lm) / (2 * h) * (dy if reduction == "none" else dy)
    if reduction == "mean":
        fd = fd / x.size
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_extreme_logits(backend, dtype):
    x = np.array([-100, -80, -30, -1e-3, 0, 30, 80, 100], dtype)
    for tv in (0.0, 1.0, 0.3):
        t = np.full(x.shape, tv, dtype)
        loss = B.sigmoid_focal_loss(x, t, reduction="none", backend=backend)
        grad = B.sigmoid_focal_loss_grad(x, t, reduction="none", backend=backend)
        assert np.isfinite(loss).all() and np.isfinite(grad).all()
        assert (loss >= 0).all()
        want = torchvision_focal(x, t)
        np.testing.assert_allclose(loss, want, rtol=1e-4, atol=1e-30)
    # confident and right -> ~0 loss; confident and wrong -> ~alpha * |x|
    assert B.sigmoid_focal_loss(x[-1:], np.ones(1, dtype), backend=backend) < 1e-30
    assert B.sigmoid_focal_loss(x[-1:], np.zeros(1, dtype), alpha=0.25,
                                backend=backend) == pytest.approx(0.75 * 100, rel=1e-5)


# ----------------------------------------------------------------------------- box coding
@pytest.mark.parametrize("dtype", DTYPES)
def test_encode_decode(backend, dtype, rng):
    for n in (0, 1, 7, 128):
        pri = rand_boxes(rng, n, dtype)
        gt = rand_boxes(rng, n, dtype)
        for var in ((0.1, 0.2), (1.0, 1.0), (0.1, 0.1, 0.2, 0.2)):
            d = B.encode_boxes(gt, pri, var, backend=backend)
            rtol = 1e-4 if dtype == np.float32 else 1e-10
            np.testing.assert_allclose(d, B.encode_boxes(gt, pri, var, backend="numpy"),
                                       rtol=rtol, atol=rtol)
            back = B.decode_boxes(d, pri, var, backend=backend)
            assert back.dtype == dtype
            np.testing.assert_allclose(back, gt, rtol=rtol, atol=rtol * 100)
    # hand-checked value: prior (0,0,10,10), gt (1,2,11,22): dx=0.1/0.1, dy=0.7/0.1, ...
    d = B.encode_boxes([[1.0, 2, 11, 22]], [[0.0, 0, 10, 10]], backend=backend)
    np.testing.assert_allclose(d, [[1.0, 7.0, 0.0, math.log(2) / 0.2]], rtol=1e-12)
    # batched deltas against one prior set; clamping keeps exp finite
    pri = rand_boxes(rng, 5, dtype)
    big = np.full((3, 5, 4), 50, dtype)
    out = B.decode_boxes(big, pri, backend=backend)
    assert out.shape == (3, 5, 4) and np.isfinite(out).all()
    np.testing.assert_allclose(out, B.decode_boxes(big, pri, backend="numpy"), rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_distance2bbox(backend, dtype, rng):
    pts = (rng.random((50, 2)) * 100).astype(dtype)
    dist = (rng.random((2, 50, 4)) * 30).astype(dtype)
    got = B.distance2bbox(pts, dist, backend=backend)
    want = np.concatenate([pts - dist[..., :2], pts + dist[..., 2:]], -1)
    np.testing.assert_array_equal(got, want)
    got = B.distance2bbox(pts, dist, max_shape=(60, 80), backend=backend)
    np.testing.assert_array_equal(got[..., 0::2], np.clip(want[..., 0::2], 0, 80))
    np.testing.assert_array_equal(got[..., 1::2], np.clip(want[..., 1::2], 0, 60))
    assert B.distance2bbox(pts[:0], dist[:, :0], backend=backend).shape == (2, 0, 4)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs():
    good = np.array([[0, 0, 1, 1], [0, 0, 2, 2]], np.float32)
    s = np.array([0.5, 0.4], np.float32)
    nan = good.copy()
    nan[1, 2] = np.nan
    inf = good.copy()
    inf[0, 0] = -np.inf
    with pytest.raises(ValidationError, match="boxes contains NaN or inf"):
        B.nms(nan, s, 0.5)
    with pytest.raises(ValidationError, match="NaN or inf"):
        B.box_iou(inf, good)
    with pytest.raises(ShapeError, match=r"boxes must have shape \(\*, 4\)"):
        B.nms(good[:, :3], s, 0.5)
    with pytest.raises(ShapeError, match="rank 2"):
        B.nms(good[None], s, 0.5)
    with pytest.raises(ShapeError, match="one score per box"):
        B.nms(good, s[:1], 0.5)
    with pytest.raises(ValidationError, match="scores contains NaN"):
        B.nms(good, np.array([np.nan, 1], np.float32), 0.5)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValidationError, match="iou_threshold"):
            B.nms(good, s, bad)
    with pytest.raises(ValidationError, match="iou_threshold"):
        B.non_max_suppression(good[None], s[None, None], 5, 1.2)
    with pytest.raises(ValidationError, match="max_output"):
        B.nms(good, s, 0.5, max_output=-2)
    with pytest.raises(DTypeError, match="float32 or float64"):
        B.nms(good.astype(np.int32), s, 0.5)
    with pytest.raises(DTypeError, match="same dtype"):
        B.box_iou(good, good.astype(np.float64))
    with pytest.raises(ValidationError, match="kind"):
        B.box_iou(good, good, "dice")
    with pytest.raises(ShapeError, match="same shape"):
        B.box_iou_aligned(good, good[:1])
    with pytest.raises(ShapeError, match="class_ids"):
        B.batched_nms(good, s, np.array([0]), 0.5)
    with pytest.raises(DTypeError, match="class_ids"):
        B.batched_nms(good, s, np.array([0.0, 1.0]), 0.5)
    with pytest.raises(ValidationError, match="method"):
        B.soft_nms(good, s, method="hard")
    with pytest.raises(ValidationError, match="sigma"):
        B.soft_nms(good, s, sigma=0)
    with pytest.raises(ShapeError, match="scores must have shape"):
        B.non_max_suppression(good[None], s[None, None, :1], 5, 0.5)
    with pytest.raises(ValidationError, match="center_point_box"):
        B.non_max_suppression(good[None], s[None, None], 5, 0.5, center_point_box=2)
    with pytest.raises(ValidationError, match="neg_iou must be <= pos_iou"):
        B.assign_anchors(good, good, pos_iou=0.3, neg_iou=0.5)
    with pytest.raises(ValidationError, match="pos_iou"):
        B.assign_anchors(good, good, pos_iou=2.0)
    with pytest.raises(ShapeError, match="targets"):
        B.sigmoid_focal_loss(s, s[:1])
    with pytest.raises(ValidationError, match="logits contains NaN or inf"):
        B.sigmoid_focal_loss(np.array([0.0, np.inf]), np.array([0.0, 1.0]))
    with pytest.raises(ValidationError, match="reduction"):
        B.sigmoid_focal_loss(s, s, reduction="avg")
    with pytest.raises(ValidationError, match="targets must lie"):
        B.sigmoid_focal_loss(s, s * 3)
    with pytest.raises(ValidationError, match="gamma"):
        B.sigmoid_focal_loss(s, s, gamma=-1)
    with pytest.raises(ShapeError, match="weights"):
        B.sigmoid_focal_loss(s, s, weights=np.ones(3))
    with pytest.raises(ValidationError, match=r"priors\[0\].*positive width"):
        B.encode_boxes(good, np.array([[0, 0, 0, 1], [0, 0, 1, 1]], np.float32))
    with pytest.raises(ValidationError, match="variances"):
        B.encode_boxes(good, good, variances=(0.1, 0.2, 0.3))
    with pytest.raises(ShapeError, match="rows per batch"):
        B.decode_boxes(good, good[:1])
    with pytest.raises(ShapeError, match=r"points must have shape \(N, 2\)"):
        B.distance2bbox(good, good)
    with pytest.raises(ValidationError, match="max_shape"):
        B.distance2bbox(good[:, :2], good, max_shape=(3,))


def test_warmup_runs(backend):
    B._warmup(backend)
