"""Detection box kernels, plain NumPy reference (the obviously correct version).

The public wrappers in ``edgedl.kernels.boxes`` validate and prepare every argument (score
ordering, thresholds rounded to the box dtype where the op demands it, preallocated outputs);
these functions only compute. The numba and Cython twins take the same arguments.

IoU of two xyxy boxes, identical in every backend and in the box dtype (float32 boxes are
computed in float32, as torchvision.ops.nms and onnxruntime's NonMaxSuppression do; an area
that overflows to inf gives IoU 0, or NaN inside NMS, which never suppresses)::

    w = max(0, min(x2a, x2b) - max(x1a, x1b)),  h likewise,  inter = w * h
    union = (area_a + area_b) - inter,           iou = inter / union   (0 when union <= 0)

NMS decisions compare ``float64(iou) > iou_threshold``; the wrapper passes the threshold as the
op defines it (torchvision: a double; ONNX NonMaxSuppression: rounded to float32 first).
"""
import math

import numpy as np

#: ``kind`` codes of box_iou / box_iou_aligned (the wrapper maps the names).
KINDS = {"iou": 0, "giou": 1, "diou": 2, "ciou": 3}
_DIOU_EPS = 1e-7          # torchvision's eps in distance_box_iou / complete_box_iou


def _area(b):
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


@np.errstate(over="ignore", invalid="ignore")   # an overflowing area gives IoU 0, by design
def _iou_family(a, b, kind):
    """IoU-family values of broadcast pairs ``a[..., 4]`` / ``b[..., 4]`` in their dtype."""
    dt = a.dtype
    zero = dt.type(0)
    if kind:
        a, b = _unit_scale(a, b)
    w = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), zero)
    h = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), zero)
    inter = w * h
    union = (_area(a) + _area(b)) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > zero, inter / np.where(union > zero, union, dt.type(1)), zero)
    if kind == 0:
        return iou
    # enclosing box
    ew = np.maximum(a[..., 2], b[..., 2]) - np.minimum(a[..., 0], b[..., 0])
    eh = np.maximum(a[..., 3], b[..., 3]) - np.minimum(a[..., 1], b[..., 1])
    if kind == 1:     # GIoU = iou - (C - union) / C   (C = enclosing area; 0-area C -> iou)
        c = ew * eh
        with np.errstate(divide="ignore", invalid="ignore"):
            pen = np.where(c > zero, (c - union) / np.where(c > zero, c, dt.type(1)), zero)
        return iou - pen
    # DIoU = iou - rho^2 / (diag^2 + eps)
    ew = np.maximum(ew, zero)
    eh = np.maximum(eh, zero)
    diag = ew * ew + eh * eh + dt.type(_DIOU_EPS)
    dx = (a[..., 0] + a[..., 2]) / dt.type(2) - (b[..., 0] + b[..., 2]) / dt.type(2)
    dy = (a[..., 1] + a[..., 3]) / dt.type(2) - (b[..., 1] + b[..., 3]) / dt.type(2)
    diou = iou - (dx * dx + dy * dy) / diag
    if kind == 2:
        return diou
    # CIoU = diou - alpha * v, v = 4/pi^2 (atan(wb/hb) - atan(wa/ha))^2; a zero-area box has no
    # aspect ratio: v = 0 then (a zero denominator's term is 0), so CIoU stays in [-1, 1]
    wa, ha = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
    wb, hb = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    d = np.arctan2(wb, hb) - np.arctan2(wa, ha)
    v = np.where((wa > zero) & (ha > zero) & (wb > zero) & (hb > zero),
                 dt.type(4.0 / math.pi ** 2) * d * d, zero)
    alpha = v / ((dt.type(1) - iou) + v + dt.type(_DIOU_EPS))
    return diou - alpha * v


def _unit_scale(a, b):
    """GIoU / DIoU / CIoU are scale-invariant: a pair whose largest |coordinate| m would
    overflow the squares and areas (16 m^2 = inf in the box dtype) is divided by m, so those
    values stay finite (no inf - inf = NaN). Other pairs are untouched."""
    a, b = np.broadcast_arrays(a, b)
    mag = np.maximum(np.abs(a).max(-1), np.abs(b).max(-1))
    with np.errstate(over="ignore"):
        huge = np.isinf(mag * mag * a.dtype.type(16))
    if not huge.any():
        return a, b
    sc = np.where(huge, mag, a.dtype.type(1))[..., None]
    return a / sc, b / sc


def box_iou(a, b, kind, out):
    """Pairwise IoU / GIoU / DIoU / CIoU of a (N, 4) and b (M, 4) into out (N, M)."""
    out[...] = _iou_family(a[:, None, :], b[None, :, :], kind)


def box_iou_aligned(a, b, kind, out):
    """IoU-family values of the pairs (a[i], b[i]) into out (N,)."""
    out[...] = _iou_family(a, b, kind)


def nms(boxes, order, bounds, iou_threshold, max_output, keep):
    """Greedy NMS over segments of candidates; keep[p] = 1 if candidate order[p] survives.

    ``order[bounds[s]:bounds[s + 1]]`` is one independent problem (a class, or a (batch, class)
    pair of ONNX NonMaxSuppression, opset 10-13), already filtered by score and sorted by score
    descending, ties by lower index. Each segment keeps at most ``max_output`` boxes (< 0: no
    limit). A candidate is suppressed when its IoU with a kept box is > iou_threshold.
    """
    keep[:] = 0
    with np.errstate(over="ignore", invalid="ignore"):
        area = _area(boxes)
    for s in range(len(bounds) - 1):
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        idx = order[lo:hi]
        alive = np.ones(hi - lo, dtype=bool)
        kept = 0
        for p in range(hi - lo):
            if not alive[p]:
                continue
            if 0 <= max_output <= kept:
                break
            keep[lo + p] = 1
            kept += 1
            i, rest = idx[p], idx[p + 1:]
            alive[p + 1:] &= ~_suppresses(boxes, area, i, rest, iou_threshold)


@np.errstate(over="ignore", invalid="ignore")
def _suppresses(boxes, area, i, js, thr):
    """Boolean array: kept box i suppresses boxes js (same formula as every twin)."""
    bi, bj = boxes[i], boxes[js]
    zero = boxes.dtype.type(0)
    w = np.maximum(np.minimum(bi[2], bj[:, 2]) - np.maximum(bi[0], bj[:, 0]), zero)
    h = np.maximum(np.minimum(bi[3], bj[:, 3]) - np.maximum(bi[1], bj[:, 1]), zero)
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / ((area[i] + area[js]) - inter)
    return iou.astype(np.float64) > thr        # NaN (0/0) compares False: never suppresses


def soft_nms(boxes, scores, iou_threshold, sigma, score_threshold, method, picked, picked_scores):
    """Soft-NMS (Bodla et al. 2017); returns how many boxes were picked.

    ``scores`` is a float64 work copy, decayed in place. Repeatedly pick the highest current
    score (> score_threshold; ties -> lower index), record it, and decay every other remaining
    score: method 0 gaussian ``s *= exp(-iou^2 / sigma)``, method 1 linear ``s *= 1 - iou``
    where iou > iou_threshold.
    """
    n = boxes.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        area = _area(boxes)
    alive = np.ones(n, dtype=bool)
    count = 0
    while True:
        cand = np.where(alive, scores, -np.inf)
        if n == 0:
            break
        i = int(np.argmax(cand))          # first maximum = lower index on ties
        if not (cand[i] > score_threshold):
            break
        picked[count] = i
        picked_scores[count] = scores[i]
        count += 1
        alive[i] = False
        rest = np.flatnonzero(alive)
        if rest.size == 0:
            break
        iou = _iou_of(boxes, area, i, rest).astype(np.float64)
        if method == 0:
            scores[rest] *= np.exp(-(iou * iou) / sigma)
        else:
            scores[rest] *= np.where(iou > iou_threshold, 1.0 - iou, 1.0)
    return count


@np.errstate(over="ignore", invalid="ignore")
def _iou_of(boxes, area, i, js):
    bi, bj = boxes[i], boxes[js]
    zero = boxes.dtype.type(0)
    w = np.maximum(np.minimum(bi[2], bj[:, 2]) - np.maximum(bi[0], bj[:, 0]), zero)
    h = np.maximum(np.minimum(bi[3], bj[:, 3]) - np.maximum(bi[1], bj[:, 1]), zero)
    inter = w * h
    union = (area[i] + area[js]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > zero, inter / np.where(union > zero, union, 1), zero)


def assign_anchors(anchors, gt_boxes, pos_iou, neg_iou, min_pos_iou, low_quality,
                   labels, gt_index, max_iou):
    """Max-IoU assignment (mmdetection MaxIoUAssigner, gt_max_assign_all=True).

    Thresholds are compared with IoU values in the box dtype (the wrapper rounds them to it,
    as torch/mmdet compare).
    """
    n, m = anchors.shape[0], gt_boxes.shape[0]
    labels[:] = -1
    gt_index[:] = -1
    if m == 0:
        labels[:] = 0
        max_iou[:] = 0
        return
    if n == 0:
        return
    ious = np.empty((n, m), anchors.dtype)
    box_iou(anchors, gt_boxes, 0, ious)
    arg = np.argmax(ious, axis=1)
    mx = ious[np.arange(n), arg]
    max_iou[:] = mx
    mx64 = mx.astype(np.float64)
    labels[(mx64 >= 0) & (mx64 < neg_iou)] = 0
    pos = mx64 >= pos_iou
    labels[pos] = 1
    gt_index[pos] = arg[pos]
    if low_quality:
        gmax = ious.max(axis=0)
        for j in range(m):
            if float(gmax[j]) >= min_pos_iou:
                hit = ious[:, j] == gmax[j]
                labels[hit] = 1
                gt_index[hit] = j


def _bce_and_qt(x, t):
    """Stable BCE-with-logits, p = sigmoid(x), q = sigmoid(-x) and 1 - p_t = p(1-t) + q t."""
    one = x.dtype.type(1)
    e = np.exp(-np.abs(x))
    # max(x, 0) - x t without cancellation (x (1 - t) is exact 0 for t = 1)
    ce = np.where(x >= 0, x * (one - t), -x * t) + np.log1p(e)
    p = np.where(x >= 0, one / (one + e), e / (one + e))
    q = np.where(x >= 0, e / (one + e), one / (one + e))
    return ce, p, q, p * (one - t) + q * t


def sigmoid_focal_loss(logits, targets, coef, alpha, gamma, out):
    """Elementwise focal loss (RetinaNet; torchvision.ops.sigmoid_focal_loss, reduction none)
    times ``coef`` (the weights, or ones), of 1-D arrays, into out. ``alpha < 0``: no alpha."""
    x, t = logits, targets
    one = x.dtype.type(1)
    ce, p, q, qt = _bce_and_qt(x, t)
    loss = ce * _pow(qt, gamma)
    if alpha >= 0:
        a = x.dtype.type(alpha)
        loss = (a * t + (one - a) * (one - t)) * loss
    out[:] = loss * coef


def sigmoid_focal_loss_grad(logits, targets, coef, alpha, gamma, out):
    """d(loss_i)/d(logits_i) times coef (weights x upstream gradient x 1/n for mean)."""
    x, t = logits, targets
    one = x.dtype.type(1)
    ce, p, q, qt = _bce_and_qt(x, t)
    # d(1 - p_t)/dx = (1 - 2t) p q ;  d ce/dx = p - t
    g = (p - t) * _pow(qt, gamma)
    if gamma != 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            dm = np.where(qt > 0, x.dtype.type(gamma) * _pow(qt, gamma - 1.0) * (one - 2 * t)
                          * p * q, 0)
        g = g + ce * dm
    if alpha >= 0:
        a = x.dtype.type(alpha)
        g = (a * t + (one - a) * (one - t)) * g
    out[:] = g * coef


def _pow(b, e):
    """b ** e with 0 ** 0 = 1 (as C pow), in b's dtype."""
    return np.power(b, b.dtype.type(e))


def encode_boxes(gt, priors, variances, out):
    """SSD / Faster R-CNN deltas (dx, dy, dw, dh) of xyxy gt w.r.t. xyxy priors, divided by
    variances (vx, vy, vw, vh)."""
    dt = gt.dtype
    half = dt.type(0.5)
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    px, py = priors[:, 0] + half * pw, priors[:, 1] + half * ph
    gw, gh = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
    gx, gy = gt[:, 0] + half * gw, gt[:, 1] + half * gh
    v = variances.astype(dt)
    out[:, 0] = (gx - px) / pw / v[0]
    out[:, 1] = (gy - py) / ph / v[1]
    out[:, 2] = np.log(gw / pw) / v[2]
    out[:, 3] = np.log(gh / ph) / v[3]


def decode_boxes(deltas, priors, variances, max_log_ratio, out):
    """Inverse of encode_boxes; deltas row r uses priors[r % len(priors)]. dw, dh (after the
    variances) are clamped to <= max_log_ratio (torchvision/mmdetection: log(1000 / 16))."""
    dt = deltas.dtype
    half = dt.type(0.5)
    pri = priors[np.arange(deltas.shape[0]) % max(priors.shape[0], 1)]
    pw, ph = pri[:, 2] - pri[:, 0], pri[:, 3] - pri[:, 1]
    px, py = pri[:, 0] + half * pw, pri[:, 1] + half * ph
    v = variances.astype(dt)
    lim = dt.type(max_log_ratio)
    cx = px + deltas[:, 0] * v[0] * pw
    cy = py + deltas[:, 1] * v[1] * ph
    w = pw * np.exp(np.minimum(deltas[:, 2] * v[2], lim))
    h = ph * np.exp(np.minimum(deltas[:, 3] * v[3], lim))
    out[:, 0] = cx - half * w
    out[:, 1] = cy - half * h
    out[:, 2] = cx + half * w
    out[:, 3] = cy + half * h


def distance2bbox(points, distances, clip, max_w, max_h, out):
    """xyxy boxes from points (P, 2) and (left, top, right, bottom) distances (K, 4); row r
    uses points[r % P]. With clip, x is clamped to [0, max_w] and y to [0, max_h]."""
    pts = points[np.arange(distances.shape[0]) % max(points.shape[0], 1)]
    x1 = pts[:, 0] - distances[:, 0]
    y1 = pts[:, 1] - distances[:, 1]
    x2 = pts[:, 0] + distances[:, 2]
    y2 = pts[:, 1] + distances[:, 3]
    if clip:
        zero = distances.dtype.type(0)
        mw, mh = distances.dtype.type(max_w), distances.dtype.type(max_h)
        x1, x2 = np.clip(x1, zero, mw), np.clip(x2, zero, mw)
        y1, y2 = np.clip(y1, zero, mh), np.clip(y2, zero, mh)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = x1, y1, x2, y2
