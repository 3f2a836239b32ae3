# cython: boundscheck=False, wraparound=False
"""Detection box kernels, Cython twins of ``edgedl.kernels._ref.boxes`` (same names and
arguments). Bounds checks are off: the public wrappers in ``edgedl.kernels.boxes`` validated
every shape, dtype and value. Arithmetic stays in the box dtype (float32 boxes in float),
with the same formulas, in the same order, as the reference.
"""
from cython cimport floating
from libc.math cimport atan2, atan2f, exp, expf, log, logf, log1p, log1pf, pow, powf, INFINITY
from libc.stdint cimport int8_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc
from libc.string cimport memmove

cdef double _DIOU_EPS = 1e-7
cdef double _FOUR_OVER_PI2 = 0.40528473456935108578   # 4 / pi^2


# ----------------------------------------------------------------------------- helpers
cdef inline floating _min(floating a, floating b) noexcept nogil:
    return a if a < b else b


cdef inline floating _max(floating a, floating b) noexcept nogil:
    return a if a > b else b


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating _log1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline floating _pow(floating x, floating y) noexcept nogil:
    if floating is float:
        return powf(x, y)
    else:
        return pow(x, y)


cdef inline floating _atan2(floating y, floating x) noexcept nogil:
    if floating is float:
        return atan2f(y, x)
    else:
        return atan2(y, x)


# ----------------------------------------------------------------------------- IoU
cdef void _iou_row(const floating* box, const floating* bx1, const floating* by1,
                   const floating* bx2, const floating* by2, const floating* bar, Py_ssize_t m,
                   floating* row) noexcept nogil:
    """One row of the plain IoU matrix (raw pointers, no memoryview in the parallel body);
    branch-free so gcc vectorises the loop over b."""
    cdef floating ax1 = box[0], ay1 = box[1], ax2 = box[2], ay2 = box[3]
    cdef floating aar = (ax2 - ax1) * (ay2 - ay1)
    cdef floating w, h, inter, u, d
    cdef Py_ssize_t j
    for j in range(m):
        w = _max(_min(ax2, bx2[j]) - _max(ax1, bx1[j]), <floating>0)
        h = _max(_min(ay2, by2[j]) - _max(ay1, by1[j]), <floating>0)
        inter = w * h
        u = (aar + bar[j]) - inter
        d = u if u > 0 else 1
        w = inter / d
        row[j] = w if u > 0 else 0


cdef int _iou_matrix(const floating[:, ::1] a, const floating[:, ::1] b,
                     floating[:, ::1] out) noexcept nogil:
    """Plain IoU matrix; b transposed to SoA once. Returns -1 if out of memory."""
    cdef Py_ssize_t n = a.shape[0], m = b.shape[0], i, j
    cdef floating* buf = <floating*>malloc(5 * m * sizeof(floating) + 1)
    if buf == NULL:
        return -1
    cdef floating* bx1 = buf
    cdef floating* by1 = buf + m
    cdef floating* bx2 = buf + 2 * m
    cdef floating* by2 = buf + 3 * m
    cdef floating* bar = buf + 4 * m
    for j in range(m):
        bx1[j] = b[j, 0]
        by1[j] = b[j, 1]
        bx2[j] = b[j, 2]
        by2[j] = b[j, 3]
        bar[j] = (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
    cdef const floating* pa = &a[0, 0]
    cdef floating* po = &out[0, 0]
    # serial on purpose: one thread already does > 1 Gpairs/s, and an OpenMP team on a busy
    # 2-core board measured 4x slower than this loop
    for i in range(n):
        _iou_row(pa + 4 * i, bx1, by1, bx2, by2, bar, m, po + i * m)
    free(buf)
    return 0


cdef enum:
    _BLK = 128          # anchors per SoA block (assigner, few-gt IoU matrix); fits in L1
    _FEW_GTS = 16       # IoU matrix: below this many columns, vectorise over rows instead


cdef void _iou_col(const floating* ax1, const floating* ay1, const floating* ax2,
                   const floating* ay2, const floating* aar, Py_ssize_t nb, floating bx1,
                   floating by1, floating bx2, floating by2, floating bar,
                   floating* col) noexcept nogil:
    """col[i] = IoU(anchor i of an SoA block, one gt box): the same formula as _iou_row,
    vectorised over anchors."""
    cdef floating w, h, inter, u, d
    cdef Py_ssize_t i
    for i in range(nb):
        w = _max(_min(ax2[i], bx2) - _max(ax1[i], bx1), <floating>0)
        h = _max(_min(ay2[i], by2) - _max(ay1[i], by1), <floating>0)
        inter = w * h
        u = (aar[i] + bar) - inter
        d = u if u > 0 else 1
        w = inter / d
        col[i] = w if u > 0 else 0


cdef int _iou_matrix_blocked(const floating[:, ::1] a, const floating[:, ::1] b,
                             floating[:, ::1] out) noexcept nogil:
    """Plain IoU matrix for few columns: rows are too short to vectorise, so blocks of a go
    to SoA and each column is computed over the block, then stored transposed."""
    cdef Py_ssize_t n = a.shape[0], m = b.shape[0], i, j, i0 = 0, nb
    cdef floating* ab = <floating*>malloc((5 + m) * _BLK * sizeof(floating))
    cdef floating* tile
    if ab == NULL:
        return -1
    tile = ab + 5 * _BLK
    while i0 < n:
        nb = min(<Py_ssize_t>_BLK, n - i0)
        for i in range(nb):
            ab[i] = a[i0 + i, 0]
            ab[_BLK + i] = a[i0 + i, 1]
            ab[2 * _BLK + i] = a[i0 + i, 2]
            ab[3 * _BLK + i] = a[i0 + i, 3]
            ab[4 * _BLK + i] = (a[i0 + i, 2] - a[i0 + i, 0]) * (a[i0 + i, 3] - a[i0 + i, 1])
        for j in range(m):
            _iou_col(ab, ab + _BLK, ab + 2 * _BLK, ab + 3 * _BLK, ab + 4 * _BLK, nb,
                     b[j, 0], b[j, 1], b[j, 2], b[j, 3],
                     (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]), tile + j * _BLK)
        for i in range(nb):
            for j in range(m):
                out[i0 + i, j] = tile[j * _BLK + i]
        i0 += nb
    free(ab)
    return 0


cdef floating _iou_kind(floating ax1, floating ay1, floating ax2, floating ay2, floating bx1,
                        floating by1, floating bx2, floating by2, int kind) noexcept nogil:
    """One IoU-family value (kind 0 iou, 1 giou, 2 diou, 3 ciou), formulas of the reference."""
    cdef floating w, h, inter, u, iou, ew, eh, c, diag, dx, dy, diou, d, v, alpha
    cdef floating eps = <floating>_DIOU_EPS
    w = _max(_min(ax2, bx2) - _max(ax1, bx1), <floating>0)
    h = _max(_min(ay2, by2) - _max(ay1, by1), <floating>0)
    inter = w * h
    u = ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1)) - inter
    iou = inter / u if u > 0 else 0
    if kind == 0:
        return iou
    ew = _max(ax2, bx2) - _min(ax1, bx1)
    eh = _max(ay2, by2) - _min(ay1, by1)
    if kind == 1:
        c = ew * eh
        return iou - ((c - u) / c if c > 0 else 0)
    ew = _max(ew, <floating>0)
    eh = _max(eh, <floating>0)
    diag = ew * ew + eh * eh + eps
    dx = (ax1 + ax2) / 2 - (bx1 + bx2) / 2
    dy = (ay1 + ay2) / 2 - (by1 + by2) / 2
    diou = iou - (dx * dx + dy * dy) / diag
    if kind == 2:
        return diou
    d = _atan2(bx2 - bx1, by2 - by1) - _atan2(ax2 - ax1, ay2 - ay1)
    v = <floating>_FOUR_OVER_PI2 * d * d
    alpha = v / ((1 - iou) + v + eps)
    return diou - alpha * v


def box_iou(const floating[:, ::1] a, const floating[:, ::1] b, int kind, floating[:, ::1] out):
    cdef Py_ssize_t n = a.shape[0], m = b.shape[0], i, j
    cdef int err = 0
    if n == 0 or m == 0:
        return
    with nogil:
        if kind == 0 and m < _FEW_GTS:
            err = _iou_matrix_blocked(a, b, out)
        elif kind == 0:
            err = _iou_matrix(a, b, out)
        else:
            for i in range(n):
                for j in range(m):
                    out[i, j] = _iou_kind(a[i, 0], a[i, 1], a[i, 2], a[i, 3],
                                          b[j, 0], b[j, 1], b[j, 2], b[j, 3], kind)
    if err:
        raise MemoryError()


def box_iou_aligned(const floating[:, ::1] a, const floating[:, ::1] b, int kind,
                    floating[::1] out):
    cdef Py_ssize_t i
    with nogil:
        for i in range(a.shape[0]):
            out[i] = _iou_kind(a[i, 0], a[i, 1], a[i, 2], a[i, 3],
                               b[i, 0], b[i, 1], b[i, 2], b[i, 3], kind)


# ----------------------------------------------------------------------------- NMS
cdef inline bint _suppresses(const floating* kb, floating x1, floating y1, floating x2,
                             floating y2, floating aj, double thr) noexcept nogil:
    """Kept box kb (x1, y1, x2, y2, area) suppresses the candidate: (double) iou > thr.

    Branch-free on purpose (``&``, not ``and``): gcc turns max(w, 0) into compare-and-jump,
    and those jumps are unpredictable; without overlap the decision is False either way."""
    cdef floating w = _min(kb[2], x2) - _max(kb[0], x1)
    cdef floating h = _min(kb[3], y2) - _max(kb[1], y1)
    cdef floating inter = w * h
    cdef floating iou = inter / ((kb[4] + aj) - inter)
    return (w > 0) & (h > 0) & (<double>iou > thr)


def nms(const floating[:, ::1] boxes, const int64_t[::1] order, const int64_t[::1] bounds,
        double iou_threshold, int64_t max_output, uint8_t[::1] keep):
    """Greedy NMS per segment with an x1-sorted kept set (see the numba twin's docstring:
    IoU(i, j) <= IoU of the x-extents bounds the x1 distance of boxes that can suppress)."""
    cdef Py_ssize_t nseg = bounds.shape[0] - 1, npos = order.shape[0]
    cdef Py_ssize_t s, p, q, lo, hi, mid, ins, k, longest = 0
    cdef int64_t j
    cdef double t = iou_threshold, xj, wj, wmax, r
    cdef double fe = (1.0 - t) * (1.0 + 1e-4) + 1e-4
    cdef double fl = fe / t if t > 0 else INFINITY
    cdef floating x1, y1, x2, y2, aj
    cdef bint sup
    cdef double* kx1
    cdef floating* kb
    for p in range(npos):
        keep[p] = 0
    if npos == 0:
        return
    for s in range(nseg):
        longest = max(longest, bounds[s + 1] - bounds[s])
    kx1 = <double*>malloc(longest * sizeof(double) + 1)
    kb = <floating*>malloc(5 * longest * sizeof(floating) + 1)
    if kx1 == NULL or kb == NULL:
        free(kx1)
        free(kb)
        raise MemoryError()
    with nogil:
        for s in range(nseg):
            k = 0
            wmax = 0.0
            for p in range(bounds[s], bounds[s + 1]):
                if max_output >= 0 and k >= max_output:
                    break
                j = order[p]
                x1 = boxes[j, 0]
                y1 = boxes[j, 1]
                x2 = boxes[j, 2]
                y2 = boxes[j, 3]
                aj = (x2 - x1) * (y2 - y1)
                xj = x1
                wj = <double>x2 - xj
                lo = 0
                hi = k
                while lo < hi:                  # first kept with x1 > xj
                    mid = (lo + hi) >> 1
                    if kx1[mid] <= xj:
                        lo = mid + 1
                    else:
                        hi = mid
                ins = lo
                sup = False
                r = min(fe * wmax, fl * wj)     # kept boxes starting left of j
                q = ins - 1
                while q >= 0 and xj - kx1[q] <= r:
                    if _suppresses(kb + 5 * q, x1, y1, x2, y2, aj, t):
                        sup = True
                        break
                    q -= 1
                if not sup:
                    r = fe * wj                 # kept boxes starting right of j
                    q = ins
                    while q < k and kx1[q] - xj <= r:
                        if _suppresses(kb + 5 * q, x1, y1, x2, y2, aj, t):
                            sup = True
                            break
                        q += 1
                if sup:
                    continue
                if k > ins:
                    memmove(&kx1[ins + 1], &kx1[ins], (k - ins) * sizeof(double))
                    memmove(&kb[5 * (ins + 1)], &kb[5 * ins], 5 * (k - ins) * sizeof(floating))
                kx1[ins] = xj
                kb[5 * ins] = x1
                kb[5 * ins + 1] = y1
                kb[5 * ins + 2] = x2
                kb[5 * ins + 3] = y2
                kb[5 * ins + 4] = aj
                k += 1
                wmax = max(wmax, wj)
                keep[p] = 1
    free(kx1)
    free(kb)


cdef inline floating _iou_pair(const floating[:, ::1] boxes, const floating* area, Py_ssize_t i,
                               Py_ssize_t j) noexcept nogil:
    cdef floating w = _max(_min(boxes[i, 2], boxes[j, 2]) - _max(boxes[i, 0], boxes[j, 0]),
                           <floating>0)
    cdef floating h = _max(_min(boxes[i, 3], boxes[j, 3]) - _max(boxes[i, 1], boxes[j, 1]),
                           <floating>0)
    cdef floating inter = w * h
    cdef floating u = (area[i] + area[j]) - inter
    return inter / u if u > 0 else 0


def soft_nms(const floating[:, ::1] boxes, double[::1] scores, double iou_threshold,
             double sigma, double score_threshold, int method, int64_t[::1] picked,
             double[::1] picked_scores):
    cdef Py_ssize_t n = boxes.shape[0], i, j, best, count = 0
    cdef double bs, iou
    cdef floating* area = <floating*>malloc(n * sizeof(floating) + 1)
    cdef uint8_t* alive = <uint8_t*>malloc(n + 1)
    if area == NULL or alive == NULL:
        free(area)
        free(alive)
        raise MemoryError()
    with nogil:
        for i in range(n):
            area[i] = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            alive[i] = 1
        while True:
            best = -1
            bs = -INFINITY
            for i in range(n):
                if alive[i] and (best < 0 or scores[i] > bs):
                    best = i
                    bs = scores[i]
            if best < 0 or not (bs > score_threshold):
                break
            picked[count] = best
            picked_scores[count] = bs
            count += 1
            alive[best] = 0
            for j in range(n):
                if alive[j]:
                    iou = _iou_pair(boxes, area, best, j)
                    if method == 0:
                        scores[j] *= exp(-(iou * iou) / sigma)
                    elif iou > iou_threshold:
                        scores[j] *= 1.0 - iou
    free(area)
    free(alive)
    return count


# ----------------------------------------------------------------------------- assignment
cdef inline floating _col_max(const floating* col, Py_ssize_t nb) noexcept nogil:
    cdef floating v0 = col[0], v1 = col[0], v2 = col[0], v3 = col[0]
    cdef Py_ssize_t i = 0
    while i + 4 <= nb:
        v0 = _max(v0, col[i])
        v1 = _max(v1, col[i + 1])
        v2 = _max(v2, col[i + 2])
        v3 = _max(v3, col[i + 3])
        i += 4
    while i < nb:
        v0 = _max(v0, col[i])
        i += 1
    return _max(_max(v0, v1), _max(v2, v3))


def assign_anchors(const floating[:, ::1] anchors, const floating[:, ::1] gt_boxes,
                   double pos_iou, double neg_iou, double min_pos_iou, bint low_quality,
                   int8_t[::1] labels, int64_t[::1] gt_index, floating[::1] max_iou):
    """Two streaming passes, no N x M matrix. The first goes block by block over the anchors
    (SoA, gt by gt, so the IoU, running max / argmax and each gt's best vectorise over
    anchors) and labels them; the second (low_quality only) recomputes the rows of the anchors
    that can reach an eligible gt's best IoU and promotes those that do."""
    cdef Py_ssize_t n = anchors.shape[0], m = gt_boxes.shape[0], i, j, i0, nb
    cdef floating mx, gmin = INFINITY
    cdef bint hit, any_eligible = False
    cdef floating* buf
    cdef floating* bx1
    cdef floating* by1
    cdef floating* bx2
    cdef floating* by2
    cdef floating* bar
    cdef floating* row
    cdef floating* gmax
    cdef floating* ab
    cdef floating* col
    cdef floating* amax
    cdef int* aarg
    if m == 0:
        for i in range(n):
            labels[i] = 0
            gt_index[i] = -1
            max_iou[i] = 0
        return
    if n == 0:
        return
    buf = <floating*>malloc((7 * m + 7 * _BLK) * sizeof(floating) + _BLK * sizeof(int))
    if buf == NULL:
        raise MemoryError()
    bx1, by1, bx2, by2, bar = buf, buf + m, buf + 2 * m, buf + 3 * m, buf + 4 * m
    row, gmax = buf + 5 * m, buf + 6 * m
    ab = buf + 7 * m                   # anchor block SoA: x1, y1, x2, y2, area (5 x _BLK)
    col = ab + 5 * _BLK
    amax = col + _BLK
    aarg = <int*>(amax + _BLK)
    with nogil:
        for j in range(m):
            bx1[j] = gt_boxes[j, 0]
            by1[j] = gt_boxes[j, 1]
            bx2[j] = gt_boxes[j, 2]
            by2[j] = gt_boxes[j, 3]
            bar[j] = (gt_boxes[j, 2] - gt_boxes[j, 0]) * (gt_boxes[j, 3] - gt_boxes[j, 1])
            gmax[j] = -INFINITY
        i0 = 0
        while i0 < n:
            nb = min(<Py_ssize_t>_BLK, n - i0)
            for i in range(nb):
                ab[i] = anchors[i0 + i, 0]
                ab[_BLK + i] = anchors[i0 + i, 1]
                ab[2 * _BLK + i] = anchors[i0 + i, 2]
                ab[3 * _BLK + i] = anchors[i0 + i, 3]
                ab[4 * _BLK + i] = ((anchors[i0 + i, 2] - anchors[i0 + i, 0])
                                    * (anchors[i0 + i, 3] - anchors[i0 + i, 1]))
                amax[i] = -INFINITY
                aarg[i] = 0
            for j in range(m):
                _iou_col(ab, ab + _BLK, ab + 2 * _BLK, ab + 3 * _BLK, ab + 4 * _BLK, nb,
                         bx1[j], by1[j], bx2[j], by2[j], bar[j], col)
                for i in range(nb):        # strict >, gts in order: first maximum wins
                    # arithmetic select and max: gcc vectorises these, not an if/else
                    aarg[i] += (col[i] > amax[i]) * (<int>j - aarg[i])
                    amax[i] = _max(col[i], amax[i])
                gmax[j] = _max(gmax[j], _col_max(col, nb))
            for i in range(nb):
                mx = amax[i]
                max_iou[i0 + i] = mx
                # -1 ignored, 0 negative (0 <= mx < neg), 1 positive (mx >= pos)
                labels[i0 + i] = <int8_t>(-1 + ((mx >= 0) & (mx < neg_iou)) + 2 * (mx >= pos_iou))
                gt_index[i0 + i] = aarg[i] if mx >= pos_iou else -1
            i0 += nb
        if low_quality:
            for j in range(m):
                if gmax[j] >= min_pos_iou:
                    any_eligible = True
                    gmin = _min(gmin, gmax[j])
                else:
                    gmax[j] = INFINITY        # IoUs are <= 1: never matches
        if any_eligible:
            for i in range(n):
                if max_iou[i] < gmin:         # cannot reach any eligible gt's best IoU
                    continue
                _iou_row(&anchors[i, 0], bx1, by1, bx2, by2, bar, m, row)
                hit = False
                for j in range(m):
                    hit = hit | (row[j] == gmax[j])
                if hit:
                    for j in range(m):
                        if row[j] == gmax[j]:    # a later gt overwrites an earlier one
                            labels[i] = 1
                            gt_index[i] = j
    free(buf)


# ----------------------------------------------------------------------------- focal loss
cdef inline void _focal_terms(floating x, floating t, floating* ce, floating* p, floating* q,
                              floating* qt) noexcept nogil:
    """BCE with logits, sigmoid(x), sigmoid(-x) and 1 - p_t, stable for any finite x."""
    cdef floating e = _exp(-x if x >= 0 else x)
    if x >= 0:
        ce[0] = x * (1 - t) + _log1p(e)      # max(x, 0) - x t, no cancellation
        p[0] = 1 / (1 + e)
        q[0] = e / (1 + e)
    else:
        ce[0] = -x * t + _log1p(e)
        p[0] = e / (1 + e)
        q[0] = 1 / (1 + e)
    qt[0] = p[0] * (1 - t) + q[0] * t


def sigmoid_focal_loss(const floating[::1] logits, const floating[::1] targets,
                       const floating[:] coef, double alpha, double gamma, floating[::1] out):
    cdef Py_ssize_t i
    cdef floating a = <floating>alpha, g = <floating>gamma, t, ce, p, q, qt, loss
    with nogil:
        for i in range(logits.shape[0]):
            t = targets[i]
            _focal_terms(logits[i], t, &ce, &p, &q, &qt)
            loss = ce * _pow(qt, g)
            if alpha >= 0:
                loss = (a * t + (1 - a) * (1 - t)) * loss
            out[i] = loss * coef[i]


def sigmoid_focal_loss_grad(const floating[::1] logits, const floating[::1] targets,
                            const floating[:] coef, double alpha, double gamma,
                            floating[::1] out):
    cdef Py_ssize_t i
    cdef floating a = <floating>alpha, g = <floating>gamma, g1 = <floating>(gamma - 1.0)
    cdef floating t, ce, p, q, qt, d
    with nogil:
        for i in range(logits.shape[0]):
            t = targets[i]
            _focal_terms(logits[i], t, &ce, &p, &q, &qt)
            d = (p - t) * _pow(qt, g)
            if gamma != 0 and qt > 0:
                # d(1 - p_t)/dx = (1 - 2t) p q
                d = d + ce * (g * _pow(qt, g1) * (1 - (t + t)) * p * q)
            if alpha >= 0:
                d = (a * t + (1 - a) * (1 - t)) * d
            out[i] = d * coef[i]


# ----------------------------------------------------------------------------- box coding
def encode_boxes(const floating[:, ::1] gt, const floating[:, ::1] priors,
                 const double[::1] variances, floating[:, ::1] out):
    cdef Py_ssize_t r, k, npri = priors.shape[0]
    cdef floating vx = <floating>variances[0], vy = <floating>variances[1]
    cdef floating vw = <floating>variances[2], vh = <floating>variances[3]
    cdef floating half = 0.5, pw, ph, px, py, gw, gh, gx, gy
    with nogil:
        for r in range(gt.shape[0]):
            k = r % npri
            pw = priors[k, 2] - priors[k, 0]
            ph = priors[k, 3] - priors[k, 1]
            px = priors[k, 0] + half * pw
            py = priors[k, 1] + half * ph
            gw = gt[r, 2] - gt[r, 0]
            gh = gt[r, 3] - gt[r, 1]
            gx = gt[r, 0] + half * gw
            gy = gt[r, 1] + half * gh
            out[r, 0] = (gx - px) / pw / vx
            out[r, 1] = (gy - py) / ph / vy
            out[r, 2] = _log(gw / pw) / vw
            out[r, 3] = _log(gh / ph) / vh


def decode_boxes(const floating[:, ::1] deltas, const floating[:, ::1] priors,
                 const double[::1] variances, double max_log_ratio, floating[:, ::1] out):
    cdef Py_ssize_t r, k, npri = priors.shape[0]
    cdef floating vx = <floating>variances[0], vy = <floating>variances[1]
    cdef floating vw = <floating>variances[2], vh = <floating>variances[3]
    cdef floating half = 0.5, lim = <floating>max_log_ratio, pw, ph, px, py, cx, cy, w, h
    with nogil:
        for r in range(deltas.shape[0]):
            k = r % npri
            pw = priors[k, 2] - priors[k, 0]
            ph = priors[k, 3] - priors[k, 1]
            px = priors[k, 0] + half * pw
            py = priors[k, 1] + half * ph
            cx = px + deltas[r, 0] * vx * pw
            cy = py + deltas[r, 1] * vy * ph
            w = pw * _exp(_min(deltas[r, 2] * vw, lim))
            h = ph * _exp(_min(deltas[r, 3] * vh, lim))
            out[r, 0] = cx - half * w
            out[r, 1] = cy - half * h
            out[r, 2] = cx + half * w
            out[r, 3] = cy + half * h


def distance2bbox(const floating[:, ::1] points, const floating[:, ::1] distances, bint clip,
                  double max_w, double max_h, floating[:, ::1] out):
    cdef Py_ssize_t r, k, npt = points.shape[0]
    cdef floating mw = <floating>max_w, mh = <floating>max_h, x1, y1, x2, y2, z = 0
    with nogil:
        for r in range(distances.shape[0]):
            k = r % npt
            x1 = points[k, 0] - distances[r, 0]
            y1 = points[k, 1] - distances[r, 1]
            x2 = points[k, 0] + distances[r, 2]
            y2 = points[k, 1] + distances[r, 3]
            if clip:
                x1 = _min(_max(x1, z), mw)
                x2 = _min(_max(x2, z), mw)
                y1 = _min(_max(y1, z), mh)
                y2 = _min(_max(y2, z), mh)
            out[r, 0] = x1
            out[r, 1] = y1
            out[r, 2] = x2
            out[r, 3] = y2
