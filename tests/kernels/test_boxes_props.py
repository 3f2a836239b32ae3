"""Property tests (hypothesis) of the box kernels, on every backend:
kept boxes pairwise IoU <= threshold; every suppressed box overlaps a kept box with a higher or
equal score (earlier in the visit order) with IoU > threshold; batched NMS never lets classes
interact; assignment labels consistent with the IoU matrix."""
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
