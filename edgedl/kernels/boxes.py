"""Detection box kernels: IoU family, NMS family (incl. ONNX NonMaxSuppression), anchor
assignment, sigmoid focal loss and box coding.

Boxes are xyxy float32/float64 arrays of shape (N, 4); indices are int64. Each wrapper checks
its arguments once (shapes, dtypes, NaN/inf coordinates, thresholds), prepares what every
backend shares (the score order of NMS candidates, thresholds rounded as the reference op
rounds them, output arrays) and calls the twin of the chosen backend.

Numerics, the same in every backend: IoU is computed in the box dtype with the formula of
torchvision.ops.nms and onnxruntime's NonMaxSuppression (``inter / ((area_a + area_b) -
inter)``); a box is suppressed when ``float64(iou) > iou_threshold``. ``nms`` takes the
threshold as a double (as torchvision does); ``non_max_suppression`` rounds it to float32 first
(the ONNX input is a float tensor), so it reproduces onnxruntime bit for bit. The numba twins
are compiled with edgedl's fastmath set (FMA contraction), which can move a box_iou value by
one ulp; the IoU behind NMS and soft-NMS decisions is compiled strictly, so every backend
keeps the same boxes.

Hostile input: NaN / inf coordinates and inverted xyxy boxes (x2 < x1 or y2 < y1) are refused
with a ValidationError naming the argument and the first bad row (non_max_suppression, as the
ONNX op, sorts each corner pair instead). A zero-area box has IoU 0 with every box (0/0 -> 0):
NMS keeps it and it suppresses nothing. GIoU / DIoU / CIoU stay finite for degenerate and huge
boxes (GIoU and DIoU in [-1, 1]; CIoU in [-1.5, 1]: its aspect term reaches 1/2 where DIoU is
near -1). Size: NMS on the numba / Cython backends is near-linear for boxes spread over an
image (from 2048 candidates per class: a grid of box centres per log-area level; 10^6 boxes
in about a second); the NumPy reference is O(N^2) and refuses more than 20000^2 candidate
pairs; soft_nms decays every box a pick overlaps (O(N^2) with huge boxes; the numba / Cython
backends find them on a grid from 2048 boxes) and refuses more than 20000 (numpy: 10000).
"""
import math
from typing import NamedTuple

import numpy as np

from .. import _config, _validate as V
from ..errors import DTypeError, ShapeError, ValidationError
from . import _dispatch
from ._ref.boxes import KINDS

__all__ = ["box_iou", "box_iou_aligned", "nms", "batched_nms", "soft_nms", "non_max_suppression",
           "assign_anchors", "AssignResult", "objectness_weights", "encode_boxes",
           "decode_boxes", "distance2bbox", "sigmoid_focal_loss", "sigmoid_focal_loss_grad"]

_FAMILY = "boxes"
_EMPTY_I64 = np.empty(0, dtype=np.int64)


class AssignResult(NamedTuple):
    """Result of :func:`assign_anchors`."""
    labels: np.ndarray      #: int8 [N]: 1 positive, 0 negative, -1 ignored
    gt_index: np.ndarray    #: int64 [N]: assigned gt for positives, -1 otherwise
    max_iou: np.ndarray     #: float [N]: best IoU of each anchor over the gts (0 without gts)


#: The NumPy reference's NMS is O(N^2) (vectorised over the remaining candidates per kept
#: box): it refuses more than this many candidate pairs (sum over classes of N_c^2), about
#: 3 s for 20000 spread boxes. soft_nms decays every box a pick overlaps, O(N^2) when huge
#: boxes overlap everything (the reference always scans every remaining box): at most
#: _SOFT_MAX boxes (spread: ~0.2 s compiled; boxes of 1-3000 px: ~2 s), _SOFT_MAX_REF on the
#: reference (~1.5 s).
_REF_MAX_PAIRS = 20000 ** 2
_SOFT_MAX = 20000
_SOFT_MAX_REF = 10000


# ----------------------------------------------------------------------------- checks
def _boxes(x, name, ndim=2, ordered=True):
    """A finite, C-contiguous float32/float64 array of shape (..., 4); with ``ordered``
    (xyxy boxes) every row must have x1 <= x2 and y1 <= y2."""
    x = V.float_array(x, name, ndim=ndim)
    if x.shape[-1] != 4:
        raise ShapeError(f"{name} must have shape ({', '.join(['*'] * (ndim - 1))}, 4) "
                         f"(xyxy boxes), got {x.shape}")
    V.finite(x, name)
    if ordered:
        _ordered(x, name)
    return np.ascontiguousarray(x)


def _ordered(x, name, strict=False):
    """Refuse inverted xyxy rows (x2 < x1 or y2 < y1; with ``strict`` also empty ones),
    naming the first bad row."""
    if not x.size:
        return
    x1, y1, x2, y2 = x[..., 0], x[..., 1], x[..., 2], x[..., 3]
    bad = (x2 <= x1) | (y2 <= y1) if strict else (x2 < x1) | (y2 < y1)
    if bad.any():
        row = np.argwhere(bad)[0]
        at = int(row[0]) if row.size == 1 else tuple(int(i) for i in row)
        need = "a positive width and height (x2 > x1, y2 > y1)" if strict else \
            "x1 <= x2 and y1 <= y2"
        raise ValidationError(f"{name}[{at}] = {x[tuple(row)].tolist()} is not a valid xyxy box: "
                              f"expected {need}")


def _check_ref_size(backend, counts, what):
    """The NumPy reference's O(N^2) NMS refuses more than _REF_MAX_PAIRS candidate pairs, so
    it cannot run for minutes; the compiled backends have no limit."""
    if _config.resolve_backend(backend) != "numpy":
        return
    pairs = int(np.dot(counts.astype(np.float64), counts.astype(np.float64)))
    if pairs > _REF_MAX_PAIRS:
        raise ValidationError(
            f"{what} on the numpy reference backend is O(N^2) and limited to "
            f"{_REF_MAX_PAIRS:.0e} candidate pairs (sum over classes of N^2; N = 20000 in one "
            f"class), got {pairs:.3g} ({int(counts.sum())} candidates): use backend='cython' or "
            f"'numba'")


def _scores(s, n, name="scores"):
    s = V.float_array(s, name, ndim=1)
    if s.shape[0] != n:
        raise ShapeError(f"{name} must have one score per box: expected shape ({n},), "
                         f"got {s.shape}")
    if s.size and np.isnan(s).any():
        first = int(np.argmax(np.isnan(s)))
        raise ValidationError(f"{name} contains NaN (first at index {first})")
    return s


def _threshold(v, name):
    return V.real(v, name, lo=0.0, hi=1.0)


def _max_output(v, name="max_output"):
    return -1 if v is None else V.integer(v, name, lo=0)


def _kind(kind):
    V.choice(kind, "kind", tuple(KINDS))
    return KINDS[kind]


def _same_dtype(a, b, na, nb):
    V.same_dtype(a, b, na, nb)


def _scalar_input(v, name):
    """An ONNX optional scalar input: a Python number or a 0-d / 1-element array."""
    if isinstance(v, np.ndarray):
        if v.size != 1:
            raise ShapeError(f"{name} must be a scalar or a 1-element array, got shape {v.shape}")
        v = v.reshape(()).item()
    return v


def _kernel(name, backend):
    return _dispatch.impl(_FAMILY, name, backend)


# ----------------------------------------------------------------------------- IoU
def box_iou(a, b, kind="iou", out=None, backend=None):
    """Pairwise IoU-family matrix (N, M) of xyxy boxes a (N, 4) and b (M, 4).

    kind: "iou", "giou" (generalized), "diou" (distance) or "ciou" (complete), as in
    torchvision.ops (DIoU/CIoU with its eps = 1e-7). Zero-area boxes give IoU 0, never NaN.
    """
    a, b = _boxes(a, "a"), _boxes(b, "b")
    _same_dtype(a, b, "a", "b")
    k = _kind(kind)
    res = V.output(out, (a.shape[0], b.shape[0]), a.dtype)
    tmp = res if res.flags.c_contiguous else np.empty(res.shape, a.dtype)
    if tmp.size:
        _kernel("box_iou", backend)(a, b, k, tmp)
    if tmp is not res:
        res[...] = tmp
    return res


def box_iou_aligned(a, b, kind="iou", out=None, backend=None):
    """IoU-family values of the N pairs (a[i], b[i]) -> (N,)."""
    a, b = _boxes(a, "a"), _boxes(b, "b")
    _same_dtype(a, b, "a", "b")
    if a.shape != b.shape:
        raise ShapeError(f"a and b must have the same shape (N, 4), got {a.shape} and {b.shape}")
    k = _kind(kind)
    res = V.output(out, (a.shape[0],), a.dtype)
    tmp = res if res.flags.c_contiguous else np.empty(res.shape, a.dtype)
    if tmp.size:
        _kernel("box_iou_aligned", backend)(a, b, k, tmp)
    if tmp is not res:
        res[...] = tmp
    return res


# ----------------------------------------------------------------------------- NMS
def _desc_order(s):
    """Indices of the 1-D scores ``s`` by score descending, ties by lower index first.

    Up to 512 scores (and for float64): a stable argsort of -s. Longer float32 rows: one sort
    of 64-bit keys (order-preserving score bits, then the index), ~8x faster at 5000.
    """
    n = s.shape[-1]
    if s.dtype == np.float32 and 512 < n < 2 ** 32:
        u = (s + np.float32(0)).view(np.uint32)            # -0.0 -> +0.0 (they tie)
        key = np.where(u >> 31 != 0, ~u, u | np.uint32(0x80000000))   # ascending float order
        k = (~key).astype(np.uint64) << np.uint64(32)
        k |= np.arange(n, dtype=np.uint64)
        k.sort(axis=-1)
        return (k & np.uint64(0xFFFFFFFF)).astype(np.int64)
    # argsort gives intp (int32 on 32-bit ARM); the kernels take int64
    return np.argsort(-s, axis=-1, kind="stable").astype(np.int64, copy=False)


def _row_desc_order(r, col, s, nrows, ncols):
    """(rows, cols) of the candidates sorted by row, score descending, then col.

    ``r`` / ``col`` / ``s``: row, column and score of each candidate. float32 scores, when
    row, score and column bits fit in 64: one unstable sort of unique packed keys (the fast
    path); otherwise a lexsort.
    """
    br = max(int(nrows - 1).bit_length(), 1)
    bc = max(int(ncols - 1).bit_length(), 1)
    if s.dtype == np.float32 and br + 32 + bc <= 64:
        u = (s + np.float32(0)).view(np.uint32)            # -0.0 -> +0.0 (they tie)
        key = np.where(u >> 31 != 0, ~u, u | np.uint32(0x80000000))   # ascending float order
        k = r.astype(np.uint64) << np.uint64(32 + bc)
        k |= (~key).astype(np.uint64) << np.uint64(bc)
        k |= col.astype(np.uint64)
        k.sort()
        return ((k >> np.uint64(32 + bc)).astype(np.int64),
                (k & np.uint64((1 << bc) - 1)).astype(np.int64))
    p = np.lexsort((col, -s, r))
    return r[p].astype(np.int64, copy=False), col[p].astype(np.int64, copy=False)


def _candidates(scores, score_threshold):
    """Indices with score > score_threshold (in the scores' dtype), sorted as NMS visits them."""
    if score_threshold is None:
        return _desc_order(scores)
    thr = V.real(score_threshold, "score_threshold")
    idx = np.flatnonzero(scores > scores.dtype.type(thr)).astype(np.int64, copy=False)
    return idx[_desc_order(scores[idx])]


def nms(boxes, scores, iou_threshold, score_threshold=None, max_output=None, backend=None):
    """Greedy non-maximum suppression -> int64 indices of the kept boxes, by score descending.

    Candidates (scores > score_threshold, if given) are visited by score descending, ties by
    lower index; a candidate is dropped when its IoU with an already kept box is strictly
    greater than iou_threshold. At most max_output boxes are kept. Same kept set as
    torchvision.ops.nms. A box of zero area is always kept and never suppresses (IoU 0).
    Inverted boxes (x2 < x1 or y2 < y1) are refused. The numba / Cython backends are
    near-linear for boxes spread over an image (10^6 in a few seconds); the numpy reference is
    O(N^2) and refuses more than 20000 candidates (per class: sum of N_c^2 <= 20000^2).
    """
    boxes = _boxes(boxes, "boxes")
    scores = _scores(scores, boxes.shape[0])
    thr = _threshold(iou_threshold, "iou_threshold")
    mo = _max_output(max_output)
    order = _candidates(scores, score_threshold)
    if order.size == 0 or mo == 0:
        return _EMPTY_I64.copy()
    _check_ref_size(backend, np.array([order.size]), "nms")
    keep = np.empty(order.shape[0], dtype=np.uint8)
    bounds = np.array([0, order.shape[0]], dtype=np.int64)
    _kernel("nms", backend)(boxes, order, bounds, thr, mo, keep)
    return order[keep.view(bool)]


def batched_nms(boxes, scores, class_ids, iou_threshold, score_threshold=None, max_output=None,
                backend=None):
    """NMS within each class (boxes of different classes never suppress each other).

    Returns int64 indices of the kept boxes of all classes by score descending (ties: lower
    index), at most max_output of them. Classes are partitioned exactly, not offset.
    """
    boxes = _boxes(boxes, "boxes")
    n = boxes.shape[0]
    scores = _scores(scores, n)
    if not isinstance(class_ids, np.ndarray):
        class_ids = np.asarray(class_ids)
    if class_ids.dtype.kind not in "iub":
        raise DTypeError(f"class_ids must be an integer array, got dtype {class_ids.dtype}")
    if class_ids.shape != (n,):
        raise ShapeError(f"class_ids must have shape ({n},) (one per box), got {class_ids.shape}")
    thr = _threshold(iou_threshold, "iou_threshold")
    mo = _max_output(max_output)
    glob = _candidates(scores, score_threshold)
    if glob.size == 0 or mo == 0:
        return _EMPTY_I64.copy()
    cls = class_ids[glob]
    if cls.size and cls.min() >= 0 and cls.max() < 2 ** 16:
        cls = cls.astype(np.uint16)            # stable sort of 16-bit keys is a radix sort
    perm = np.argsort(cls, kind="stable")      # classes contiguous, score order inside
    cs = cls[perm]
    cuts = np.flatnonzero(cs[1:] != cs[:-1]) + 1
    bounds = np.concatenate(([0], cuts, [cs.size])).astype(np.int64)
    _check_ref_size(backend, np.diff(bounds), "batched_nms")
    keep = np.empty(glob.size, dtype=np.uint8)
    _kernel("nms", backend)(boxes, glob[perm], bounds, thr, -1, keep)
    keep_glob = np.empty_like(keep)
    keep_glob[perm] = keep
    res = glob[keep_glob.view(bool)]
    return res if mo < 0 else res[:mo]


def soft_nms(boxes, scores, iou_threshold=0.3, sigma=0.5, score_threshold=0.001,
             method="gaussian", backend=None):
    """Soft-NMS (Bodla et al., 2017) -> (int64 indices in pick order, scores at pick time).

    Repeatedly picks the highest current score (> score_threshold; ties -> lower index) and
    decays the others: gaussian ``s *= exp(-iou**2 / sigma)`` (iou_threshold unused), linear
    ``s *= 1 - iou`` where iou > iou_threshold. Scores are decayed in float64 and returned in
    the dtype of ``scores``. Every box a pick overlaps is decayed, so up to O(N^2) work: at
    most 20000 boxes (10000 on the numpy backend), else a ValidationError.
    """
    boxes = _boxes(boxes, "boxes")
    scores = _scores(scores, boxes.shape[0])
    V.finite(scores, "scores")
    thr = _threshold(iou_threshold, "iou_threshold")
    sig = V.real(sigma, "sigma", lo=0.0, lo_open=True)
    st = V.real(score_threshold, "score_threshold")
    m = {"gaussian": 0, "linear": 1}[V.choice(method, "method", ("gaussian", "linear"))]
    n = boxes.shape[0]
    lim = _SOFT_MAX_REF if _config.resolve_backend(backend) == "numpy" else _SOFT_MAX
    if n > lim:
        raise ValidationError(f"soft_nms is up to O(N^2) and limited to {lim} boxes on this "
                              f"backend (numpy: {_SOFT_MAX_REF}, numba / cython: {_SOFT_MAX}), "
                              f"got {n}: filter by score first, or run it per class")
    picked = np.empty(n, dtype=np.int64)
    picked_scores = np.empty(n, dtype=np.float64)
    work = scores.astype(np.float64)
    cnt = _kernel("soft_nms", backend)(boxes, work, thr, sig, st, m, picked, picked_scores) \
        if n else 0
    return picked[:cnt].copy(), picked_scores[:cnt].astype(scores.dtype)


def non_max_suppression(boxes, scores, max_output_boxes_per_class=0, iou_threshold=0.0,
                        score_threshold=None, center_point_box=0, backend=None):
    """The ONNX NonMaxSuppression op (opset 10-13), output identical to onnxruntime's.

    boxes [B, N, 4] ([y1, x1, y2, x2], any diagonal corner pair; or [xc, yc, w, h] with
    center_point_box=1), scores [B, C, N]. Returns int64 [K, 3] rows (batch, class, box) in
    batch, class, then selection order. Scalars may be Python numbers or 1-element arrays;
    max_output_boxes_per_class <= 0 gives an empty result; only scores > score_threshold
    (strictly) are candidates; iou_threshold must lie in [0, 1]. Corners may come in either
    order (the op allows it; they are sorted with min / max as onnxruntime does). On the numpy
    backend at most 20000^2 candidate pairs (sum over (batch, class) of N^2).
    """
    boxes = _boxes(boxes, "boxes", ndim=3, ordered=False)   # any diagonal corner pair
    scores = V.float_array(scores, "scores", ndim=3)
    bsz, n = boxes.shape[0], boxes.shape[1]
    if scores.shape[0] != bsz or scores.shape[2] != n:
        raise ShapeError(f"scores must have shape [num_batches={bsz}, num_classes, "
                         f"spatial_dimension={n}] to match boxes {boxes.shape}, "
                         f"got {scores.shape}")
    st = _scalar_input(score_threshold, "score_threshold")
    if st is None and scores.size and np.isnan(scores).any():
        # with a score_threshold a NaN score is simply never a candidate (NaN > t is False)
        raise ValidationError("scores contains NaN (give a score_threshold to skip NaN scores)")
    mo = _scalar_input(max_output_boxes_per_class, "max_output_boxes_per_class")
    mo = V.integer(0 if mo is None else mo, "max_output_boxes_per_class")
    thr = _scalar_input(iou_threshold, "iou_threshold")
    thr = _threshold(0.0 if thr is None else thr, "iou_threshold")
    thr = float(np.float32(thr))           # the ONNX input is a float tensor
    cpb = V.integer(_scalar_input(center_point_box, "center_point_box"), "center_point_box")
    V.choice(cpb, "center_point_box", (0, 1))
    ncls = scores.shape[1]
    if mo <= 0 or scores.size == 0:
        return np.empty((0, 3), dtype=np.int64)
    # boxes -> ordered corners (x1 <= x2, y1 <= y2), computed as onnxruntime does in float
    flat = boxes.reshape(-1, 4)
    if cpb == 0:
        c = np.empty_like(flat)
        np.minimum(flat[:, 0], flat[:, 2], out=c[:, 0])
        np.minimum(flat[:, 1], flat[:, 3], out=c[:, 1])
        np.maximum(flat[:, 0], flat[:, 2], out=c[:, 2])
        np.maximum(flat[:, 1], flat[:, 3], out=c[:, 3])
    else:
        two = flat.dtype.type(2)
        hw, hh = flat[:, 2] / two, flat[:, 3] / two
        c = np.stack([flat[:, 0] - hw, flat[:, 1] - hh, flat[:, 0] + hw, flat[:, 1] + hh], 1)
    # per (batch, class) row: candidates by score descending, ties by lower index
    rows = scores.reshape(bsz * ncls, n)
    offs = (np.arange(bsz * ncls, dtype=np.int64) // ncls) * n    # row -> its batch's boxes
    if st is None:
        counts = np.full(bsz * ncls, n, dtype=np.int64)
        order = (_desc_order(rows) + offs[:, None]).ravel()
    else:
        # filter first (few candidates pass in practice), then one sort by (row, -score, index)
        st = rows.dtype.type(np.float32(V.real(st, "score_threshold")))
        flat = rows.ravel()
        idx = np.flatnonzero(flat > st)
        r, col = _row_desc_order(idx // n, idx % n, flat[idx], bsz * ncls, n)
        # intp: on 32-bit ARM bincount/repeat refuse int64 ("cannot cast int64 to int32")
        counts = np.bincount(r.astype(np.intp), minlength=bsz * ncls).astype(np.int64)
        order = col + offs[r]
    if order.size == 0:
        return np.empty((0, 3), dtype=np.int64)
    _check_ref_size(backend, counts, "non_max_suppression")
    bounds = np.zeros(bsz * ncls + 1, dtype=np.int64)
    np.cumsum(counts, out=bounds[1:])
    keep = np.empty(order.size, dtype=np.uint8)
    _kernel("nms", backend)(c, order, bounds, thr, mo, keep)
    sel = keep.view(bool)
    seg = np.repeat(np.arange(bsz * ncls, dtype=np.int64), counts.astype(np.intp))[sel]
    res = np.empty((seg.size, 3), dtype=np.int64)
    res[:, 0] = seg // ncls
    res[:, 1] = seg % ncls
    res[:, 2] = order[sel] - res[:, 0] * n
    return res


# ----------------------------------------------------------------------------- assignment
def assign_anchors(anchors, gt_boxes, pos_iou=0.7, neg_iou=0.3, min_pos_iou=0.3,
                   low_quality=True, backend=None):
    """Max-IoU anchor assignment (RPN / RetinaNet; mmdetection's MaxIoUAssigner with
    gt_max_assign_all=True) -> AssignResult(labels int8, gt_index int64, max_iou float).

    1. max_iou / argmax over the gts per anchor; 2. label 0 where 0 <= max_iou < neg_iou;
    3. label 1 (gt_index = argmax) where max_iou >= pos_iou; 4. others stay -1 (ignored);
    5. low_quality: for each gt in order whose best IoU >= min_pos_iou, every anchor whose IoU
    with it equals that best becomes positive for it (a later gt overwrites an earlier one).
    No gts: all anchors negative. Thresholds are compared in the box dtype (as mmdetection).
    """
    anchors, gt = _boxes(anchors, "anchors"), _boxes(gt_boxes, "gt_boxes")
    _same_dtype(anchors, gt, "anchors", "gt_boxes")
    dt = anchors.dtype
    pos = _threshold(pos_iou, "pos_iou")
    neg = _threshold(neg_iou, "neg_iou")
    mpi = _threshold(min_pos_iou, "min_pos_iou")
    if neg > pos:
        raise ValidationError(f"neg_iou must be <= pos_iou, got neg_iou={neg}, pos_iou={pos}")
    if not isinstance(low_quality, (bool, np.bool_)):
        raise ValidationError(f"low_quality must be a bool, got {low_quality!r}")
    n = anchors.shape[0]
    labels = np.empty(n, dtype=np.int8)
    gt_index = np.empty(n, dtype=np.int64)
    max_iou = np.empty(n, dtype=dt)
    r = lambda v: float(dt.type(v))            # noqa: E731  (compare in the box dtype)
    _kernel("assign_anchors", backend)(anchors, gt, r(pos), r(neg), r(mpi), bool(low_quality),
                                       labels, gt_index, max_iou)
    return AssignResult(labels, gt_index, max_iou)


def objectness_weights(result, pos_weight=1.0, neg_weight=1.0):
    """Per-anchor loss weights from an AssignResult: pos_weight for positives, neg_weight for
    negatives, 0 for ignored anchors; dtype of result.max_iou."""
    labels = np.asarray(result.labels)
    dt = np.asarray(result.max_iou).dtype
    if dt not in V.FLOAT_DTYPES:
        dt = np.dtype(np.float32)
    pw = V.real(pos_weight, "pos_weight", lo=0.0)
    nw = V.real(neg_weight, "neg_weight", lo=0.0)
    w = np.zeros(labels.shape, dtype=dt)
    w[labels == 1] = pw
    w[labels == 0] = nw
    return w


# ----------------------------------------------------------------------------- focal loss
def _focal_args(logits, targets, alpha, gamma, weights, reduction):
    x = V.finite(V.float_array(logits, "logits"), "logits")
    t = np.asarray(targets)
    if t.dtype.kind not in "biuf":
        raise DTypeError(f"targets must be a numeric array, got dtype {t.dtype}")
    if t.shape != x.shape:
        raise ShapeError(f"targets must have the shape of logits {x.shape}, got {t.shape}")
    t = np.ascontiguousarray(t, dtype=x.dtype).reshape(-1)
    if t.size and not ((t >= 0) & (t <= 1)).all():
        raise ValidationError("targets must lie in [0, 1]")
    a = V.real(alpha, "alpha", hi=1.0)        # alpha < 0 disables the alpha weighting
    g = V.real(gamma, "gamma", lo=0.0)
    V.choice(reduction, "reduction", ("none", "mean", "sum"))
    if weights is None:
        w = None
    else:
        w = np.asarray(weights)
        if w.dtype.kind not in "biuf":
            raise DTypeError(f"weights must be a numeric array, got dtype {w.dtype}")
        try:
            w = np.broadcast_to(w.astype(x.dtype, copy=False), x.shape)
        except ValueError:
            raise ShapeError(f"weights of shape {w.shape} do not broadcast to logits {x.shape}")
    return np.ascontiguousarray(x).reshape(-1), t, w, a, g


def _coef(w, scale, n, dt):
    """Per-element multiplier: weights (or ones) times a scalar, as a 1-D array of length n."""
    if w is None:
        return np.broadcast_to(np.array([scale], dtype=dt), (n,))
    return (w.astype(dt) * dt.type(scale)).reshape(-1) if scale != 1 else \
        np.ascontiguousarray(w).reshape(-1)


def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, weights=None, reduction="sum",
                       backend=None):
    """Sigmoid focal loss (Lin et al., RetinaNet), as torchvision.ops.sigmoid_focal_loss:
    ``alpha_t * (1 - p_t)**gamma * BCEWithLogits(logits, targets)`` times ``weights``
    (broadcast to logits), then reduced ("none" | "mean" | "sum"). alpha < 0 disables
    alpha_t. Stable for any finite logit (computed from log1p(exp(-|x|)) and sigmoid(-x)).
    """
    x, t, w, a, g = _focal_args(logits, targets, alpha, gamma, weights, reduction)
    dt = x.dtype
    out = np.empty(x.shape, dtype=dt)
    if x.size:
        _kernel("sigmoid_focal_loss", backend)(x, t, _coef(w, 1.0, x.size, dt), a, g, out)
    if reduction == "none":
        return out.reshape(np.shape(logits))
    total = out.sum(dtype=np.float64)
    if reduction == "mean":
        total = total / x.size if x.size else np.nan
    return dt.type(total)


def sigmoid_focal_loss_grad(logits, targets, alpha=0.25, gamma=2.0, weights=None,
                            reduction="sum", dy=1.0, backend=None):
    """d loss / d logits of :func:`sigmoid_focal_loss` (same arguments), times the upstream
    gradient ``dy`` (a scalar for "sum"/"mean", broadcastable to logits for "none")."""
    x, t, w, a, g = _focal_args(logits, targets, alpha, gamma, weights, reduction)
    dt = x.dtype
    shape = np.shape(logits)
    if reduction == "none" and isinstance(dy, np.ndarray) and dy.ndim:
        d = V.float_array(dy, "dy")
        try:
            d = np.broadcast_to(d.astype(dt, copy=False), shape)
        except ValueError:
            raise ShapeError(f"dy of shape {d.shape} does not broadcast to logits {shape}")
        w = d if w is None else w * d
        scale = 1.0
    else:
        scale = V.real(dy, "dy")
        if reduction == "mean" and x.size:
            scale /= x.size
    out = np.empty(x.shape, dtype=dt)
    if x.size:
        _kernel("sigmoid_focal_loss_grad", backend)(x, t, _coef(w, scale, x.size, dt), a, g, out)
    return out.reshape(shape)


# ----------------------------------------------------------------------------- box coding
def _variances(v):
    try:
        v = [V.real(e, "variances", lo=0.0, lo_open=True) for e in v]
    except TypeError:
        raise ValidationError(f"variances must be 2 (center, size) or 4 values, got {v!r}")
    if len(v) == 2:
        v = [v[0], v[0], v[1], v[1]]
    if len(v) != 4:
        raise ValidationError(f"variances must be 2 (center, size) or 4 values, got {len(v)}")
    return np.array(v, dtype=np.float64)


def _rows_with_priors(x, priors, xname, pname, width):
    """x (..., P, width) and priors (P, k) -> x as 2-D rows; row r pairs with priors[r % P]."""
    if x.ndim < 2 or x.shape[-1] != width:
        raise ShapeError(f"{xname} must have shape (..., N, {width}), got {x.shape}")
    if x.shape[-2] != priors.shape[0]:
        raise ShapeError(f"{xname} has {x.shape[-2]} rows per batch but {pname} has "
                         f"{priors.shape[0]}; expected {xname} shape (..., {priors.shape[0]}, "
                         f"{width})")
    return np.ascontiguousarray(x).reshape(-1, width)


def encode_boxes(gt, priors, variances=(0.1, 0.2), backend=None):
    """SSD / Faster R-CNN regression targets of xyxy gt boxes (..., N, 4) w.r.t. xyxy priors
    (N, 4): ``((gx - px) / (pw vx), (gy - py) / (ph vy), log(gw / pw) / vw, log(gh / ph) / vh)``
    with centres (x, y) and sizes (w, h); variances (v_center, v_size) or 4 values."""
    priors = _boxes(priors, "priors")
    gt = V.float_array(gt, "gt", min_ndim=2)
    V.finite(gt, "gt")
    _same_dtype(gt, priors, "gt", "priors")
    g2 = _rows_with_priors(gt, priors, "gt", "priors", 4)
    # log(w_gt / w_prior): both need positive widths and heights
    _ordered(priors, "priors", strict=True)
    _ordered(gt, "gt", strict=True)
    v = _variances(variances)
    out = np.empty(g2.shape, dtype=gt.dtype)
    if out.size:
        _kernel("encode_boxes", backend)(g2, priors, v, out)
    return out.reshape(gt.shape)


def decode_boxes(deltas, priors, variances=(0.1, 0.2), max_log_ratio=math.log(1000.0 / 16),
                 backend=None):
    """Inverse of :func:`encode_boxes`: deltas (..., N, 4) and xyxy priors (N, 4) -> xyxy
    boxes. dw, dh (after the variances) are clamped to max_log_ratio (torchvision/mmdetection
    default log(1000/16); None: no clamp) so exp never overflows."""
    priors = _boxes(priors, "priors")
    deltas = V.float_array(deltas, "deltas", min_ndim=2)
    V.finite(deltas, "deltas")
    _same_dtype(deltas, priors, "deltas", "priors")
    d2 = _rows_with_priors(deltas, priors, "deltas", "priors", 4)
    v = _variances(variances)
    lim = math.inf if max_log_ratio is None else V.real(max_log_ratio, "max_log_ratio")
    out = np.empty(d2.shape, dtype=deltas.dtype)
    if out.size:
        _kernel("decode_boxes", backend)(d2, priors, v, lim, out)
    return out.reshape(deltas.shape)


def distance2bbox(points, distances, max_shape=None, backend=None):
    """xyxy boxes from anchor points (N, 2) (x, y) and distances (..., N, 4) (left, top, right,
    bottom), as FCOS / YOLOv8 / mmdetection; with max_shape (height, width) x is clamped to
    [0, width] and y to [0, height]."""
    points = V.float_array(points, "points", ndim=2)
    if points.shape[1] != 2:
        raise ShapeError(f"points must have shape (N, 2), got {points.shape}")
    V.finite(points, "points")
    points = np.ascontiguousarray(points)
    distances = V.float_array(distances, "distances", min_ndim=2)
    V.finite(distances, "distances")
    _same_dtype(distances, points, "distances", "points")
    d2 = _rows_with_priors(distances, points, "distances", "points", 4)
    if max_shape is None:
        clip, mh, mw = False, 0.0, 0.0
    else:
        try:
            mh, mw = (V.real(e, "max_shape", lo=0.0) for e in max_shape)
        except (TypeError, ValueError) as e:
            raise ValidationError(f"max_shape must be (height, width) or None, got "
                                  f"{max_shape!r}") from e
        clip = True
    out = np.empty(d2.shape, dtype=distances.dtype)
    if out.size:
        _kernel("distance2bbox", backend)(points, d2, clip, mw, mh, out)
    return out.reshape(distances.shape)


# ----------------------------------------------------------------------------- warmup
def _warmup(backend):
    """Run every kernel once on tiny float32 inputs (compiles / loads the numba cache)."""
    f = np.float32
    b = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [0, 0, 2, 2.5]], dtype=f)
    s = np.array([0.9, 0.8, 0.7], dtype=f)
    for k in KINDS:
        box_iou(b, b, k, backend=backend)
        box_iou_aligned(b, b, k, backend=backend)
    nms(b, s, 0.5, backend=backend)
    batched_nms(b, s, np.array([0, 1, 0]), 0.5, backend=backend)
    soft_nms(b, s, backend=backend)
    non_max_suppression(b[None], s[None, None], 2, 0.5, 0.1, backend=backend)
    assign_anchors(b, b[:2], backend=backend)
    x = np.array([-1.0, 0.0, 2.0], dtype=f)
    sigmoid_focal_loss(x, np.array([0, 1, 1], dtype=f), backend=backend)
    sigmoid_focal_loss_grad(x, np.array([0, 1, 1], dtype=f), backend=backend)
    decode_boxes(encode_boxes(b, b, backend=backend), b, backend=backend)
    distance2bbox(b[:, :2], b, max_shape=(4, 4), backend=backend)
