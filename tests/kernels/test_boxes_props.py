"""Property tests (hypothesis) of the box kernels, on every backend:
kept boxes pairwise IoU <= threshold; every suppressed box overlaps a kept box with a higher or
equal score (earlier in the visit order) with IoU > threshold; batched NMS never lets classes
interact; assignment labels consistent with the IoU matrix."""
import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from edgedl.kernels import boxes as B  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)


@st.composite
def box_sets(draw, max_n=40, dtype=np.float32):
    n = draw(st.integers(0, max_n))
    # a coarse grid makes exact IoU ties, duplicates and zero-area boxes likely
    grid = draw(st.sampled_from([1.0, 0.5, 0.1]))
    xy = draw(hnp.arrays(np.int64, (n, 2), elements=st.integers(0, 20))) * grid
    wh = draw(hnp.arrays(np.int64, (n, 2), elements=st.integers(0, 10))) * grid
    boxes = np.concatenate([xy, xy + wh], 1).astype(dtype)
    scores = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, 8))).astype(dtype) / 8
    return boxes, scores


def _iou(boxes, i, j):
    return float(B.box_iou(boxes[i:i + 1], boxes[j:j + 1], backend="numpy")[0, 0])


def _check_greedy(boxes, scores, keep, thr):
    n = len(scores)
    order = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    pos = {i: p for p, i in enumerate(order)}
    kept = set(keep.tolist())
    assert len(kept) == len(keep)
    assert [pos[i] for i in keep] == sorted(pos[i] for i in keep), "not in visit order"
    for a in keep:
        for b in keep:
            if a != b:     # IoU in the box dtype, compared with the double threshold
                assert _iou(boxes, a, b) <= thr
    for j in range(n):
        if j in kept:
            continue
        supp = [i for i in keep if pos[i] < pos[j] and _iou(boxes, i, j) > thr]
        assert supp, f"box {j} dropped but no earlier kept box overlaps it > {thr}"
        assert all(scores[i] >= scores[j] for i in supp)


@SETTINGS
@given(data=box_sets(), thr=st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0]))
@pytest.mark.parametrize("be", ["numpy", "numba", "cython"])
def test_nms_greedy_properties(be, data, thr):
    from edgedl._config import why_unavailable
    if why_unavailable(be):
        pytest.skip(why_unavailable(be))
    boxes, scores = data
    keep = B.nms(boxes, scores, thr, backend=be)
    assert keep.dtype == np.int64
    _check_greedy(boxes, scores, keep, thr)


@SETTINGS
@given(data=box_sets(max_n=30), cls=st.lists(st.integers(0, 3), min_size=30, max_size=30),
       thr=st.sampled_from([0.0, 0.3, 0.6]))
@pytest.mark.parametrize("be", ["numba", "cython"])
def test_batched_nms_classes_independent(be, data, cls, thr):
    from edgedl._config import why_unavailable
    if why_unavailable(be):
        pytest.skip(why_unavailable(be))
    boxes, scores = data
    c = np.array(cls[:len(scores)], dtype=np.int64)
    keep = B.batched_nms(boxes, scores, c, thr, backend=be)
    np.testing.assert_array_equal(keep, B.batched_nms(boxes, scores, c, thr, backend="numpy"))
    for k in np.unique(c):
        idx = np.flatnonzero(c == k)
        mine = keep[c[keep] == k]
        np.testing.assert_array_equal(mine, idx[B.nms(boxes[idx], scores[idx], thr,
                                                       backend="numpy")])


@SETTINGS
@given(anchors=box_sets(max_n=40, dtype=np.float64), gts=box_sets(max_n=6, dtype=np.float64),
       pos=st.sampled_from([0.5, 0.7]), neg=st.sampled_from([0.1, 0.3, 0.5]),
       lq=st.booleans())
@pytest.mark.parametrize("be", ["numpy", "numba", "cython"])
def test_assignment_consistent_with_iou(be, anchors, gts, pos, neg, lq):
    from edgedl._config import why_unavailable
    if why_unavailable(be):
        pytest.skip(why_unavailable(be))
    a, g = anchors[0], gts[0]
    neg = min(neg, pos)
    r = B.assign_anchors(a, g, pos, neg, 0.2, lq, backend=be)
    if len(g) == 0:
        assert (r.labels == 0).all() and (r.gt_index == -1).all()
        return
    iou = B.box_iou(a, g, backend="numpy")
    if len(a):
        np.testing.assert_array_equal(r.max_iou, iou.max(1))
    for i in range(len(a)):
        lab, gi = r.labels[i], r.gt_index[i]
        assert (gi >= 0) == (lab == 1)
        if lab == 1:
            # positive: either above pos_iou with its argmax, or the best anchor of gt gi
            assert iou[i, gi] >= pos and gi == iou[i].argmax() or \
                (lq and iou[i, gi] == iou[:, gi].max() and iou[i, gi] >= 0.2)
        elif lab == 0:
            assert iou[i].max() < neg
        else:
            assert neg <= iou[i].max() < pos


# ----------------------------------------------------------------------------- hostile input
# Every compiled backend against the NumPy reference on random degenerate input (issue #15):
# zero width / height, identical points, duplicates, huge and tiny coordinates, score ties,
# thresholds at 0, 1 and values IoUs hit exactly, float32 and float64.
# EDGEDL_FUZZ_LONG=1: many more, random examples (minutes)
LONG = os.environ.get("EDGEDL_FUZZ_LONG", "") not in ("", "0")
HOSTILE = settings(max_examples=600 if LONG else 40, deadline=None, derandomize=not LONG)
EDGE_THRESHOLDS = [0.0, 1.0, 0.5, 1 / 3, 0.25, 2 / 3, float(np.nextafter(0.5, 1.0)), 1e-7,
                   1 - 1e-7]


@st.composite
def hostile_boxes(draw, max_n=200):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(0, max_n))
    scale = draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e15,
                                  float(np.finfo(dtype).max) / 8]))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):      # coarse grid: exact IoU ties, duplicates, zero-size boxes
        xy = rng.integers(-10, 10, (n, 2)) / 10 * scale
        wh = rng.integers(0, 6, (n, 2)) / 10 * scale
    else:
        xy = rng.uniform(-1, 1, (n, 2)) * scale
        wh = rng.uniform(0, 1, (n, 2)) ** 3 * scale
    b = np.concatenate([xy, xy + wh], 1)
    if n:
        k = rng.integers(0, n, n // 4)
        b[k[: len(k) // 2], 2] = b[k[: len(k) // 2], 0]      # zero width
        b[k[len(k) // 2:], 3] = b[k[len(k) // 2:], 1]        # zero height
        p = rng.integers(0, n, n // 10)
        b[p, 2:] = b[p, :2]                                  # points
        d = rng.integers(0, n, (n // 5, 2))
        b[d[:, 0]] = b[d[:, 1]]                              # duplicates
    b = b.astype(dtype)
    if draw(st.booleans()):
        s = rng.integers(0, 4, n) / 4                        # score ties
    else:
        s = rng.random(n)
    return b, s.astype(dtype)


def _compiled(be):
    from edgedl._config import why_unavailable
    if why_unavailable(be):
        pytest.skip(why_unavailable(be))


@HOSTILE
@given(data=hostile_boxes(), thr=st.one_of(st.sampled_from(EDGE_THRESHOLDS),
                                           st.floats(0, 1)),
       st_=st.one_of(st.none(), st.floats(0, 0.8)), mo=st.one_of(st.none(), st.integers(0, 30)))
@pytest.mark.parametrize("be", ["numba", "cython"])
def test_hostile_nms_matches_reference(be, data, thr, st_, mo):
    _compiled(be)
    b, s = data
    np.testing.assert_array_equal(B.nms(b, s, thr, st_, mo, backend=be),
                                  B.nms(b, s, thr, st_, mo, backend="numpy"))
    c = (np.arange(len(s)) * 7919) % 3
    np.testing.assert_array_equal(B.batched_nms(b, s, c, thr, st_, mo, backend=be),
                                  B.batched_nms(b, s, c, thr, st_, mo, backend="numpy"))


@settings(max_examples=150 if LONG else 12, deadline=None, derandomize=not LONG)
@given(data=hostile_boxes(max_n=120), thr=st.sampled_from(EDGE_THRESHOLDS),
       shift=st.integers(1, 60))
@pytest.mark.parametrize("be", ["numba", "cython"])
def test_hostile_nms_grid_path_matches_reference(be, data, thr, shift):
    # >= 2048 candidates take the compiled backends' grid paths of nms and soft_nms: tile
    # the hostile set with shifted copies (overlapping or not, depending on the shift)
    _compiled(be)
    b, s = data
    if len(s) == 0:
        return
    reps = -(-2100 // len(s))
    w = np.abs(b).max() * (shift / 20) if np.abs(b).max() > 0 else 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        off = np.arange(reps)[:, None, None] * np.array([w, w / 3, w, w / 3])
        bt = (b[None] + off).reshape(-1, 4).astype(b.dtype)
    if not np.isfinite(bt).all():
        return
    st_ = np.tile(s, reps) * np.repeat(np.linspace(1, 0.5, reps), len(s)).astype(s.dtype)
    np.testing.assert_array_equal(B.nms(bt, st_, thr, backend=be),
                                  B.nms(bt, st_, thr, backend="numpy"))
    method = "linear" if shift % 2 else "gaussian"
    i1, s1 = B.soft_nms(bt, st_, thr, 0.5, 0.001, method, backend=be)
    i2, s2 = B.soft_nms(bt, st_, thr, 0.5, 0.001, method, backend="numpy")
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-5)


@HOSTILE
@given(data=hostile_boxes(max_n=60), thr=st.sampled_from(EDGE_THRESHOLDS),
       sigma=st.sampled_from([0.05, 0.5, 2.0]), method=st.sampled_from(["gaussian", "linear"]))
@pytest.mark.parametrize("be", ["numba", "cython"])
def test_hostile_soft_nms_matches_reference(be, data, thr, sigma, method):
    _compiled(be)
    b, s = data
    i1, s1 = B.soft_nms(b, s, thr, sigma, 0.001, method, backend=be)
    i2, s2 = B.soft_nms(b, s, thr, sigma, 0.001, method, backend="numpy")
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, rtol=1e-5)


@HOSTILE
@given(a=hostile_boxes(max_n=40), kind=st.sampled_from(["iou", "giou", "diou", "ciou"]))
@pytest.mark.parametrize("be", ["numba", "cython"])
def test_hostile_iou_family_matches_reference(be, a, kind):
    _compiled(be)
    b = a[0]
    got = B.box_iou(b, b[::-1].copy(), kind, backend=be)
    want = B.box_iou(b, b[::-1].copy(), kind, backend="numpy")
    assert np.isfinite(got).all()
    lo = -1.5 if kind == "ciou" else -1.0
    assert (got >= lo - 1e-5).all() and (got <= 1 + 1e-5).all()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@HOSTILE
@given(data=hostile_boxes(max_n=80), thr=st.sampled_from(EDGE_THRESHOLDS),
       st_=st.one_of(st.none(), st.sampled_from([0.0, 0.25, 0.5])),
       mo=st.sampled_from([1, 5, 1000]), cpb=st.sampled_from([0, 1]))
@pytest.mark.parametrize("be", ["numba", "cython"])
def test_hostile_non_max_suppression_matches_reference(be, data, thr, st_, mo, cpb):
    _compiled(be)
    b, s = data
    n = len(s)
    flip = (np.arange(n) % 3) == 0
    b = b.copy()
    b[flip] = b[flip][:, [2, 3, 0, 1]]          # any diagonal corner order
    if cpb:                                     # centre, size: sizes >= 0
        b[:, 2:] = np.abs(b[:, 2:] - b[:, :2])
    sc = np.stack([s, s[::-1]])[None] if n else np.zeros((1, 2, 0), s.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        want = B.non_max_suppression(b[None], sc, mo, thr, st_, cpb, backend="numpy")
        got = B.non_max_suppression(b[None], sc, mo, thr, st_, cpb, backend=be)
    np.testing.assert_array_equal(got, want)
