"""Detection box kernels, numba twins of ``edgedl.kernels._ref.boxes`` (same names/arguments).

Arithmetic stays in the box dtype: float32 operands never meet a float64 literal (that would
promote the whole expression to float64), so constants are made in the data's dtype by ``_c``.
"""
import math

import numpy as np

from ..._config import njit

_DIOU_EPS = 1e-7
_FOUR_OVER_PI2 = 4.0 / math.pi ** 2


@njit
def _c(x, v):
    """The float ``v`` in the dtype of array ``x`` (call outside hot loops)."""
    buf = np.empty(1, x.dtype)
    buf[0] = v
    return buf[0]


# ----------------------------------------------------------------------------- IoU
@njit
def _soa(b):
    """b (M, 4) -> SoA columns x1, y1, x2, y2, area and two constants 0, 1 (in b's dtype), so
    loops over b vectorise."""
    m = b.shape[0]
    soa = np.empty((5, m + 2), b.dtype)
    soa[0, m] = 0
    soa[0, m + 1] = 1
    for j in range(m):
        soa[0, j], soa[1, j], soa[2, j], soa[3, j] = b[j, 0], b[j, 1], b[j, 2], b[j, 3]
        soa[4, j] = (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
    return soa


@njit
def _iou_row(a, i, soa, row):
    """row[j] = IoU(a[i], b[j]) for the SoA columns of b; branch-free, vectorises."""
    m = row.shape[0]
    z = soa[0, m]
    one = soa[0, m + 1]
    ax1, ay1, ax2, ay2 = a[i, 0], a[i, 1], a[i, 2], a[i, 3]
    aar = (ax2 - ax1) * (ay2 - ay1)
    bx1, by1, bx2, by2, bar = soa[0], soa[1], soa[2], soa[3], soa[4]
    for j in range(m):
        w = max(min(ax2, bx2[j]) - max(ax1, bx1[j]), z)
        h = max(min(ay2, by2[j]) - max(ay1, by1[j]), z)
        inter = w * h
        u = (aar + bar[j]) - inter
        pos = u > z
        row[j] = inter / (u if pos else one) if pos else z


@njit
def _iou_fast(a, b, out):
    """Plain IoU matrix, row by row."""
    soa = _soa(b)
    for i in range(a.shape[0]):
        _iou_row(a, i, soa, out[i])


@njit
def _col_max(col, nb):
    """max(col[:nb]) with four independent maxima (a float max reduction does not vectorise
    without nnan; four chains at least overlap)."""
    v0 = v1 = v2 = v3 = col[0]
    i = 0
    while i + 4 <= nb:
        v0 = max(v0, col[i])
        v1 = max(v1, col[i + 1])
        v2 = max(v2, col[i + 2])
        v3 = max(v3, col[i + 3])
        i += 4
    while i < nb:
        v0 = max(v0, col[i])
        i += 1
    return max(max(v0, v1), max(v2, v3))


@njit
def _iou_kind(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2, kind, cst):
    """One IoU-family value (kind 0..3), same formulas as the reference.

    cst = (0, 1, 2, eps, 4 / pi^2, 16) in the box dtype. GIoU / DIoU / CIoU of a pair whose
    largest |coordinate| m overflows 16 m^2 are computed on the pair divided by m (they are
    scale-invariant), so they stay finite, as in the reference."""
    z, one, two, eps, fpi, sixteen = cst
    if kind != 0:
        m = max(max(max(abs(ax1), abs(ay1)), max(abs(ax2), abs(ay2))),
                max(max(abs(bx1), abs(by1)), max(abs(bx2), abs(by2))))
        if m * m * sixteen == np.inf:
            ax1, ay1, ax2, ay2 = ax1 / m, ay1 / m, ax2 / m, ay2 / m
            bx1, by1, bx2, by2 = bx1 / m, by1 / m, bx2 / m, by2 / m
    w = max(min(ax2, bx2) - max(ax1, bx1), z)
    h = max(min(ay2, by2) - max(ay1, by1), z)
    inter = w * h
    u = ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1)) - inter
    iou = inter / u if u > z else z
    if kind == 0:
        return iou
    ew = max(ax2, bx2) - min(ax1, bx1)
    eh = max(ay2, by2) - min(ay1, by1)
    if kind == 1:
        c = ew * eh
        return iou - ((c - u) / c if c > z else z)
    ew = max(ew, z)
    eh = max(eh, z)
    diag = ew * ew + eh * eh + eps
    dx = (ax1 + ax2) / two - (bx1 + bx2) / two
    dy = (ay1 + ay2) / two - (by1 + by2) / two
    diou = iou - (dx * dx + dy * dy) / diag
    if kind == 2:
        return diou
    if not (ax2 - ax1 > z and ay2 - ay1 > z and bx2 - bx1 > z and by2 - by1 > z):
        return diou       # a zero-area box has no aspect ratio: its term is 0
    d = math.atan2(bx2 - bx1, by2 - by1) - math.atan2(ax2 - ax1, ay2 - ay1)
    v = fpi * d * d
    alpha = v / ((one - iou) + v + eps)
    return diou - alpha * v


@njit
def _consts(a):
    return (_c(a, 0.0), _c(a, 1.0), _c(a, 2.0), _c(a, _DIOU_EPS), _c(a, _FOUR_OVER_PI2),
            _c(a, 16.0))


@njit
def box_iou(a, b, kind, out):
    if a.shape[0] == 0 or b.shape[0] == 0:
        return
    if kind == 0:
        _iou_fast(a, b, out)
        return
    cst = _consts(a)
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            out[i, j] = _iou_kind(a[i, 0], a[i, 1], a[i, 2], a[i, 3],
                                  b[j, 0], b[j, 1], b[j, 2], b[j, 3], kind, cst)


@njit
def box_iou_aligned(a, b, kind, out):
    if a.shape[0] == 0:
        return
    cst = _consts(a)
    for i in range(a.shape[0]):
        out[i] = _iou_kind(a[i, 0], a[i, 1], a[i, 2], a[i, 3],
                           b[i, 0], b[i, 1], b[i, 2], b[i, 3], kind, cst)


# ----------------------------------------------------------------------------- NMS
# The IoU behind an NMS / soft-NMS decision is compiled without fastmath: a contraction
# moved IoUs at the threshold by an ulp (e.g. 0.50000006 -> 0.5 against t = 0.5), and the
# kept set must equal the other backends' exactly.
_STRICT = dict(fastmath=False)


@njit(**_STRICT)
def _suppresses(kb, q, x1, y1, x2, y2, aj, z, thr):
    """Kept box kb[q] (x1, y1, x2, y2, area) suppresses the candidate: float64(iou) > thr.

    Branch-free: no overlap gives inter = 0, iou = 0 (or 0/0 = NaN), never > thr. (LLVM makes
    max(w, 0) a maxss; the Cython twin needs ``&`` instead, same decisions.)"""
    w = max(min(kb[q, 2], x2) - max(kb[q, 0], x1), z)
    h = max(min(kb[q, 3], y2) - max(kb[q, 1], y1), z)
    inter = w * h
    iou = inter / ((kb[q, 4] + aj) - inter)
    return np.float64(iou) > thr


# Grid NMS (see the Cython twin, src_cy/boxes.pyx, for the reasoning): same constants.
_GRID_MIN = 2048    # shorter segments: _nms_xwindow (faster there on clustered boxes)
_SAMPLE = 255       # candidates sampled for the median box size
_BIG = 8.0          # t = 0: boxes this many times the median size are "big"
_TINY = 1e-30       # smaller candidates: the plain overlap window, all levels
_SLACK = 1e-5       # IoU rounding allowance in the distance bound
_LEVELS = 64        # most log(area) levels


@njit
def _nms_xwindow(boxes, order, lo, m, t, max_output, keep, kb, kx1, z):
    """Greedy NMS of one short segment with the kept boxes held sorted by x1.

    IoU(i, j) <= IoU of their x-extents, which bounds how far apart the x1 of two boxes with
    IoU > t can be: d < (1 - t) * w_earlier and d < (1 - t) / t * w_later (w_earlier/w_later:
    width of the box starting left/right). So a candidate only tests kept boxes in a small x1
    window around its own x1, nearest first (the usual suppressor), found by binary search.
    The window is widened by a relative 1e-4 so rounding can never hide a suppressor.
    """
    fe = (1.0 - t) * (1.0 + 1e-4) + 1e-4       # factor on w_earlier
    fl = fe / t if t > 0.0 else np.inf         # factor on w_later
    k = 0
    wmax = 0.0
    for p in range(lo, lo + m):
        if max_output >= 0 and k >= max_output:
            break
        j = order[p]
        x1, y1, x2, y2 = boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3]
        aj = (x2 - x1) * (y2 - y1)
        xj = np.float64(x1)
        wj = np.float64(x2) - xj
        # binary search: first kept with x1 > xj
        a, b = 0, k
        while a < b:
            mid = (a + b) >> 1
            if kx1[mid] <= xj:
                a = mid + 1
            else:
                b = mid
        ins = a
        sup = False
        # kept boxes starting left of j: d < fe * w_i <= fe * wmax, and d < fl * wj
        r = min(fe * wmax, fl * wj)
        q = ins - 1
        while q >= 0 and xj - kx1[q] <= r:
            if _suppresses(kb, q, x1, y1, x2, y2, aj, z, t):
                sup = True
                break
            q -= 1
        if not sup:
            # kept boxes starting right of j: d < fe * wj
            r = fe * wj
            q = ins
            while q < k and kx1[q] - xj <= r:
                if _suppresses(kb, q, x1, y1, x2, y2, aj, z, t):
                    sup = True
                    break
                q += 1
        if sup:
            continue
        for q in range(k, ins, -1):
            kx1[q] = kx1[q - 1]
            for c in range(5):
                kb[q, c] = kb[q - 1, c]
        kx1[ins] = xj
        kb[ins, 0], kb[ins, 1], kb[ins, 2], kb[ins, 3], kb[ins, 4] = x1, y1, x2, y2, aj
        k += 1
        wmax = max(wmax, wj)
        keep[p] = 1


@njit
def _cell(v, v0, inv, g):
    """The cell of coordinate v: floor((v - v0) * inv) clamped to [0, g - 1] (monotone)."""
    if g == 1:
        return 0
    t = (v - v0) * inv
    if not (t > 0):
        return 0
    return int(t) if t < g - 1 else g - 1


@njit
def _cells_along(extent, size, m):
    """About extent / size cells, 1 to m; 1 if the extent is 0 or overflows."""
    if not (extent > 0) or extent == np.inf:
        return 1
    t = extent / size
    if t < 1:
        return 1
    return int(t) if t < m else m


@njit
def _median_size(v, extent, m):
    """The median of v; extent / sqrt(m) if that is 0 (mostly zero-size boxes)."""
    v = np.sort(v)
    med = v[v.shape[0] // 2]
    return med if med > 0 else extent / math.sqrt(m)


@njit
def _live(a):
    """Area 0 (or inf / NaN from overflow): IoU 0 or NaN with every box, so the box never
    suppresses nor is suppressed: kept and never tested."""
    return a > 0 and a < np.inf


@njit
def _make_grid(boxes, order, lo, m, tl, cell):
    """(x0, y0, l0, il, bw, bh, gl, ix, iy, gx, gy, off): levels of log(area) as wide as
    log(1 / tl) (one if tl = 0), each a grid over the live candidates' centres with cells of
    ``cell`` x the level's box size (the median, scaled by the square root of the level's
    area over the median area), at most 2m cells in all; off[lv]: the level's first list
    head, off[gl] the big boxes' (over _BIG times the median size, with tl = 0 only)."""
    x0 = y0 = l0 = np.inf
    x1 = y1 = l1 = -np.inf
    for p in range(lo, lo + m):
        j = order[p]
        a = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
        if _live(a):
            c = boxes[j, 0] + 0.5 * (np.float64(boxes[j, 2]) - boxes[j, 0])
            x0 = min(x0, c)
            x1 = max(x1, c)
            c = boxes[j, 1] + 0.5 * (np.float64(boxes[j, 3]) - boxes[j, 1])
            y0 = min(y0, c)
            y1 = max(y1, c)
            if tl > 0:
                c = math.log(np.float64(a))
                l0 = min(l0, c)
                l1 = max(l1, c)
    ns = min(m, _SAMPLE)
    sw = np.empty(ns, np.float64)
    sh = np.empty(ns, np.float64)
    for p in range(ns):
        j = order[lo + p * (m // ns) + p * (m % ns) // ns]   # p m / ns, no overflow
        sw[p] = np.float64(boxes[j, 2]) - np.float64(boxes[j, 0])
        sh[p] = np.float64(boxes[j, 3]) - np.float64(boxes[j, 1])
    mw = _median_size(sw, x1 - x0, m)
    mh = _median_size(sh, y1 - y0, m)
    gl = _cells_along(l1 - l0, -math.log(tl), _LEVELS) if tl > 0 else 1
    il = gl / (l1 - l0) if gl > 1 else 0.0
    gx = np.empty(gl, np.int64)
    gy = np.empty(gl, np.int64)
    for lv in range(gl):
        r = 1.0
        if gl > 1 and mw > 0 and mh > 0:
            r = math.exp(0.5 * (l0 + (lv + 0.5) / il - math.log(mw) - math.log(mh)))
        gx[lv] = _cells_along(x1 - x0, cell * mw * r, m)
        gy[lv] = _cells_along(y1 - y0, cell * mh * r, m)
    while (gx * gy).sum() > 2 * m:      # halve the longer side of the finest level
        most = np.argmax(gx * gy)       # (gl <= 64 <= 2m always fits)
        if gx[most] >= gy[most]:
            gx[most] = (gx[most] + 1) // 2
        else:
            gy[most] = (gy[most] + 1) // 2
    off = np.zeros(gl + 1, np.int64)
    ix = np.zeros(gl, np.float64)
    iy = np.zeros(gl, np.float64)
    for lv in range(gl):
        off[lv + 1] = off[lv] + gx[lv] * gy[lv]
        if gx[lv] > 1:
            ix[lv] = gx[lv] / (x1 - x0)
        if gy[lv] > 1:
            iy[lv] = gy[lv] / (y1 - y0)
    bw = _BIG * mw if mw > 0 and tl == 0 else np.inf
    bh = _BIG * mh if mh > 0 and tl == 0 else np.inf
    return x0, y0, l0, il, bw, bh, gl, ix, iy, gx, gy, off


@njit
def _scan(kb, nxt, e, x1, y1, x2, y2, aj, z, t):
    """Does a kept box of the list starting at e suppress the candidate?"""
    while e >= 0:
        if _suppresses(kb, e, x1, y1, x2, y2, aj, z, t):
            return True
        e = nxt[e]
    return False


@njit
def _window(mx, my, rx, ry, x0, y0, ix, iy, gx, gy):
    """(cx0, cx1, cy0, cy1): the cells of one level a box centred at (mx, my) reaches within
    (rx, ry), widened by a rounding margin."""
    rx = rx * (1 + 1e-6) + 1e-12 * abs(mx)
    ry = ry * (1 + 1e-6) + 1e-12 * abs(my)
    return (_cell(mx - rx, x0, ix, gx), _cell(mx + rx, x0, ix, gx),
            _cell(my - ry, y0, iy, gy), _cell(my + ry, y0, iy, gy))


@njit
def _scan_cells(kb, nxt, head, base, gxl, cx0, cx1, cy0, cy1, own, x1, y1, x2, y2, aj, z, t):
    """Does a kept box listed in the cells [cx0, cx1] x [cy0, cy1] of the level whose first
    list head is ``base`` (but the cell ``own``, scanned already) suppress the candidate?"""
    for cy in range(cy0, cy1 + 1):
        for cx in range(cx0, cx1 + 1):
            c = base + cy * gxl + cx
            if c != own and _scan(kb, nxt, head[c], x1, y1, x2, y2, aj, z, t):
                return True
    return False


@njit
def _nms_grid(boxes, order, lo, m, t, max_output, keep, kb, nxt, head, z):
    """Greedy NMS of one segment, exact, near-linear for spread boxes (the Cython twin's
    _nms_grid explains the windows): kept boxes in lists per (area level, centre cell)
    through ``nxt``; with t = 0 the big ones in the list head[off[gl]] that every candidate
    scans."""
    tl = t - _SLACK if t > _SLACK else 0.0
    f = 0.5 * (1 - tl) / (1 + tl)
    cell = max(f * (1 + min(1 / tl, 2.0)) if tl > 0 else 1.5, 0.05)
    x0, y0, l0, il, bw, bh, gl, ix, iy, gx, gy, off = _make_grid(boxes, order, lo, m, tl, cell)
    big = off[gl]
    head[:big + 1] = -1
    wmax = np.zeros(gl, np.float64)
    hmax = np.zeros(gl, np.float64)
    k = 0
    for p in range(lo, lo + m):
        if max_output >= 0 and k >= max_output:
            break
        j = order[p]
        x1, y1, x2, y2 = boxes[j, 0], boxes[j, 1], boxes[j, 2], boxes[j, 3]
        aj = (x2 - x1) * (y2 - y1)
        keep[p] = 1
        if not _live(aj):
            k += 1                      # kept, never registered (slot k stays unused)
            continue
        w = np.float64(x2) - np.float64(x1)
        h = np.float64(y2) - np.float64(y1)
        mx = x1 + 0.5 * w
        my = y1 + 0.5 * h
        lv = _cell(math.log(np.float64(aj)), l0, il, gl) if gl > 1 else 0
        # a tiny area rounds to denormals, where the IoU bound fails: overlap is all we know
        wide = aj < _TINY or tl == 0
        l_lo = 0 if wide else max(lv - 1, 0)
        l_hi = gl if wide else min(lv + 2, gl)
        own = off[lv] + _cell(my, y0, iy[lv], gy[lv]) * gx[lv] + _cell(mx, x0, ix[lv], gx[lv])
        sup = (_scan(kb, nxt, head[own], x1, y1, x2, y2, aj, z, t)
               or _scan(kb, nxt, head[big], x1, y1, x2, y2, aj, z, t))
        lvl = l_lo
        while lvl < l_hi and not sup:
            if wide:
                rx, ry = 0.5 * (w + wmax[lvl]), 0.5 * (h + hmax[lvl])
            else:
                rx, ry = f * (w + min(w / tl, wmax[lvl])), f * (h + min(h / tl, hmax[lvl]))
            cx0, cx1, cy0, cy1 = _window(mx, my, rx, ry, x0, y0, ix[lvl], iy[lvl], gx[lvl],
                                         gy[lvl])
            sup = _scan_cells(kb, nxt, head, off[lvl], gx[lvl], cx0, cx1, cy0, cy1, own,
                              x1, y1, x2, y2, aj, z, t)
            lvl += 1
        if sup:
            keep[p] = 0
            continue
        if w > bw or h > bh:
            own = big
        else:
            wmax[lv] = max(wmax[lv], w)
            hmax[lv] = max(hmax[lv], h)
        kb[k, 0], kb[k, 1], kb[k, 2], kb[k, 3], kb[k, 4] = x1, y1, x2, y2, aj
        nxt[k] = head[own]
        head[own] = k
        k += 1


@njit
def nms(boxes, order, bounds, iou_threshold, max_output, keep):
    """Greedy NMS per segment, the exact greedy result: segments shorter than _GRID_MIN with
    an x1-sorted kept set (_nms_xwindow), longer ones on a grid (_nms_grid)."""
    nseg = bounds.shape[0] - 1
    keep[:] = 0
    if order.shape[0] == 0:
        return
    longest = 0
    for s in range(nseg):
        longest = max(longest, bounds[s + 1] - bounds[s])
    kb = np.empty((longest, 5), boxes.dtype)
    z = _c(boxes, 0.0)
    kx1 = np.empty(longest, np.float64)
    nxt = np.empty(longest if longest >= _GRID_MIN else 0, np.int64)
    head = np.empty(2 * longest + 2 if longest >= _GRID_MIN else 0, np.int64)
    for s in range(nseg):
        lo, m = bounds[s], bounds[s + 1] - bounds[s]
        if iou_threshold >= 1:
            # IoU <= 1 in floating point too (the Cython twin's _keep_all): keep them all
            keep[lo:lo + (m if max_output < 0 else min(m, max_output))] = 1
        elif m < _GRID_MIN:
            _nms_xwindow(boxes, order, lo, m, iou_threshold, max_output, keep, kb, kx1, z)
        else:
            _nms_grid(boxes, order, lo, m, iou_threshold, max_output, keep, kb, nxt, head, z)


@njit(**_STRICT)
def _iou_pair(boxes, area, i, j):
    z = area[i] - area[i]
    w = max(min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0]), z)
    h = max(min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1]), z)
    inter = w * h
    u = (area[i] + area[j]) - inter
    return inter / u if u > z else z


@njit
def _better(s, a, b):
    """The pick of two tournament entries: higher score, ties -> lower index (-1: none)."""
    if b < 0:
        return a
    if a < 0:
        return b
    return a if s[a] > s[b] or (s[a] == s[b] and a < b) else b


@njit
def _replay(tree, leaf, s):
    """Score of ``leaf`` changed: replay its matches up to the root tree[1]."""
    node = leaf >> 1
    while node >= 1:
        tree[node] = _better(s, tree[2 * node], tree[2 * node + 1])
        node >>= 1


@njit
def _decay(boxes, scores, area, ids, e0, e1, best, iou_threshold, sigma, method, chg, nchg):
    """Decay the alive boxes ids[e0:e1] by their IoU with the pick, as the O(N^2) loop; the
    changed ones are appended to chg[nchg:]; returns the new nchg."""
    for e in range(e0, e1):
        j = ids[e]
        if scores[j] == -np.inf or boxes[j, 0] >= boxes[best, 2] or boxes[j, 2] <= boxes[best, 0]:
            continue
        iou = np.float64(_iou_pair(boxes, area, best, j))
        old = scores[j]
        if method == 0:
            if iou > 0:
                scores[j] *= math.exp(-(iou * iou) / sigma)
        elif iou > iou_threshold:
            scores[j] *= 1.0 - iou
        if scores[j] != old:
            chg[nchg] = j
            nchg += 1
    return nchg


@njit
def _bucket(boxes, area, grid):
    """The live boxes listed per (level, centre cell) of ``grid`` (_make_grid's tuple):
    (slot of each box (-1: not live), start (each list's first index in ids, CSR), ids,
    wmax, hmax (the widest / tallest box of each level))."""
    x0, y0, l0, il, _, _, gl, ix, iy, gx, gy, off = grid
    n = boxes.shape[0]
    start = np.zeros(off[gl] + 1, np.int64)
    slot = np.empty(n, np.int64)
    wmax = np.zeros(gl, np.float64)
    hmax = np.zeros(gl, np.float64)
    for i in range(n):                  # the list (level, cell) of each live box
        if not _live(area[i]):
            slot[i] = -1                # IoU 0 with every box: never decayed
            continue
        w = np.float64(boxes[i, 2]) - np.float64(boxes[i, 0])
        h = np.float64(boxes[i, 3]) - np.float64(boxes[i, 1])
        lv = _cell(math.log(np.float64(area[i])), l0, il, gl) if gl > 1 else 0
        wmax[lv] = max(wmax[lv], w)
        hmax[lv] = max(hmax[lv], h)
        slot[i] = off[lv] + (_cell(boxes[i, 1] + 0.5 * h, y0, iy[lv], gy[lv]) * gx[lv]
                             + _cell(boxes[i, 0] + 0.5 * w, x0, ix[lv], gx[lv]))
        start[slot[i] + 1] += 1
    for c in range(off[gl]):
        start[c + 1] += start[c]
    ids = np.empty(n, np.int64)
    fill = start.copy()
    for i in range(n):
        if slot[i] >= 0:
            ids[fill[slot[i]]] = i
            fill[slot[i]] += 1
    return slot, start, ids, wmax, hmax


@njit
def _tournament(scores, n):
    """(tree, pw, depth): a tournament tree over the n scores, leaves at pw + i."""
    pw = 1
    depth = 0
    while pw < n:
        pw *= 2
        depth += 1
    tree = np.empty(2 * pw, np.int64)
    for i in range(pw):
        tree[pw + i] = i if i < n else -1
    for i in range(pw - 1, 0, -1):
        tree[i] = _better(scores, tree[2 * i], tree[2 * i + 1])
    return tree, pw, depth


@njit
def _decay_around(boxes, scores, area, grid, lists, best, iou_threshold, sigma, method, chg):
    """Decay the boxes of every level's cells that the pick ``best`` reaches; returns how
    many scores changed (their indices in chg)."""
    x0, y0, _, _, _, _, gl, ix, iy, gx, gy, off = grid
    _, start, ids, wmax, hmax = lists
    w = np.float64(boxes[best, 2]) - np.float64(boxes[best, 0])
    h = np.float64(boxes[best, 3]) - np.float64(boxes[best, 1])
    mx = boxes[best, 0] + 0.5 * w
    my = boxes[best, 1] + 0.5 * h
    nchg = 0
    for lv in range(gl):
        cx0, cx1, cy0, cy1 = _window(mx, my, 0.5 * (w + wmax[lv]), 0.5 * (h + hmax[lv]), x0, y0,
                                     ix[lv], iy[lv], gx[lv], gy[lv])
        if (cx1 - cx0 + 1) * (cy1 - cy0 + 1) >= start[off[lv + 1]] - start[off[lv]]:
            nchg = _decay(boxes, scores, area, ids, start[off[lv]], start[off[lv + 1]], best,
                          iou_threshold, sigma, method, chg, nchg)
            continue
        for cy in range(cy0, cy1 + 1):
            c = off[lv] + cy * gx[lv]
            nchg = _decay(boxes, scores, area, ids, start[c + cx0], start[c + cx1 + 1], best,
                          iou_threshold, sigma, method, chg, nchg)
    return nchg


@njit
def _soft_nms_grid(boxes, scores, area, iou_threshold, sigma, score_threshold, method, picked,
                   picked_scores):
    """Soft-NMS with the same picks and scores as the O(N^2) loop (the Cython twin's
    _soft_nms_grid explains it): a tournament tree for the highest score, a static grid of
    log-area levels (x4) of centre cells so a pick only decays the boxes it overlaps."""
    n = boxes.shape[0]
    grid = _make_grid(boxes, np.arange(n), 0, n, 0.25, 1.0)
    lists = _bucket(boxes, area, grid)
    slot = lists[0]
    tree, pw, depth = _tournament(scores, n)
    chg = np.empty(n, np.int64)
    count = 0
    while True:
        best = tree[1]
        if best < 0 or scores[best] == -np.inf or not (scores[best] > score_threshold):
            break
        picked[count] = best
        picked_scores[count] = scores[best]
        count += 1
        scores[best] = -np.inf
        _replay(tree, pw + best, scores)
        if slot[best] < 0:
            continue
        nchg = _decay_around(boxes, scores, area, grid, lists, best, iou_threshold, sigma,
                             method, chg)
        if nchg * depth > pw:           # many changes (a huge box): rebuild the tree once
            for i in range(pw - 1, 0, -1):
                tree[i] = _better(scores, tree[2 * i], tree[2 * i + 1])
        else:
            for i in range(nchg):
                _replay(tree, pw + chg[i], scores)
    return count


@njit
def soft_nms(boxes, scores, iou_threshold, sigma, score_threshold, method, picked, picked_scores):
    """O(N^2) like the reference below _GRID_MIN boxes, with cheap steps: a picked box's work
    score becomes -inf (alive scores are finite), and boxes apart in x (IoU 0: no decay) cost
    two compares; from _GRID_MIN boxes _soft_nms_grid (same picks and scores)."""
    n = boxes.shape[0]
    area = np.empty(n, boxes.dtype)
    for i in range(n):
        area[i] = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
    if n >= _GRID_MIN:
        return _soft_nms_grid(boxes, scores, area, iou_threshold, sigma, score_threshold, method,
                              picked, picked_scores)
    count = 0
    while count < n:
        best = -1
        bs = -np.inf
        for i in range(n):                  # first maximum: ties -> lower index
            if scores[i] > bs:
                best = i
                bs = scores[i]
        if best < 0 or not (bs > score_threshold):
            break
        picked[count] = best
        picked_scores[count] = bs
        count += 1
        scores[best] = -np.inf
        bx1, bx2 = boxes[best, 0], boxes[best, 2]
        for j in range(n):
            if scores[j] == -np.inf or boxes[j, 0] >= bx2 or boxes[j, 2] <= bx1:
                continue
            iou = np.float64(_iou_pair(boxes, area, best, j))
            if method == 0:
                if iou > 0:                 # exp(-0) = 1: most pairs need no exp
                    scores[j] *= math.exp(-(iou * iou) / sigma)
            elif iou > iou_threshold:
                scores[j] *= 1.0 - iou
    return count


# ----------------------------------------------------------------------------- assignment
_BLK = 128      # anchors per block of the assigner


@njit
def _iou_col(ab, nb, soa, j, col):
    """col[i] = IoU(anchor i of the SoA block ab, gt j): the formula of _iou_row, vectorised
    over anchors."""
    m = soa.shape[1] - 2
    z = soa[0, m]
    one = soa[0, m + 1]
    bx1, by1, bx2, by2, bar = soa[0, j], soa[1, j], soa[2, j], soa[3, j], soa[4, j]
    ax1, ay1, ax2, ay2, aar = ab[0], ab[1], ab[2], ab[3], ab[4]
    for i in range(nb):
        w = max(min(ax2[i], bx2) - max(ax1[i], bx1), z)
        h = max(min(ay2[i], by2) - max(ay1[i], by1), z)
        inter = w * h
        u = (aar[i] + bar) - inter
        pos = u > z
        col[i] = inter / (u if pos else one) if pos else z


@njit
def _assign_block(anchors, i0, nb, soa, ab, col, amax, aarg, gmax, pos_iou, neg_iou,
                  labels, gt_index, max_iou):
    """Anchors i0 .. i0 + nb - 1 in SoA (ab), gt by gt: their running max IoU and its gt
    (vectorised over the anchors), each gt's best IoU so far into gmax; then their labels."""
    for i in range(nb):
        ab[0, i], ab[1, i] = anchors[i0 + i, 0], anchors[i0 + i, 1]
        ab[2, i], ab[3, i] = anchors[i0 + i, 2], anchors[i0 + i, 3]
        ab[4, i] = ((anchors[i0 + i, 2] - anchors[i0 + i, 0])
                    * (anchors[i0 + i, 3] - anchors[i0 + i, 1]))
        amax[i] = -np.inf
        aarg[i] = 0
    for j in range(gmax.shape[0]):
        _iou_col(ab, nb, soa, j, col)
        jj = np.int32(j)
        for i in range(nb):        # strict >, gts in order: first maximum wins
            aarg[i] += np.int32(col[i] > amax[i]) * (jj - aarg[i])
            amax[i] = max(col[i], amax[i])
        gmax[j] = max(gmax[j], _col_max(col, nb))
    for i in range(nb):
        mx = amax[i]
        max_iou[i0 + i] = mx
        lab = -1
        gi = -1
        if mx >= pos_iou:
            lab = 1
            gi = aarg[i]
        elif mx >= 0.0 and mx < neg_iou:
            lab = 0
        labels[i0 + i] = lab
        gt_index[i0 + i] = gi


@njit
def _promote_low_quality(anchors, soa, gmax, min_pos_iou, labels, gt_index, max_iou):
    """Each gt whose best IoU reaches min_pos_iou makes the anchors with that IoU positive (a
    later gt overwrites an earlier one), on recomputed rows of the anchors that can reach it."""
    m = gmax.shape[0]
    any_eligible = False
    gmin = np.inf
    for j in range(m):
        if gmax[j] >= min_pos_iou:
            any_eligible = True
            gmin = min(gmin, np.float64(gmax[j]))
        else:
            gmax[j] = np.inf            # IoUs are <= 1: never matches
    if not any_eligible:
        return
    row = np.empty(m, anchors.dtype)
    for i in range(anchors.shape[0]):
        if max_iou[i] < gmin:           # cannot reach any eligible gt's best IoU
            continue
        _iou_row(anchors, i, soa, row)
        hit = False
        for j in range(m):
            hit |= row[j] == gmax[j]
        if hit:
            for j in range(m):
                if row[j] == gmax[j]:    # a later gt overwrites an earlier one
                    labels[i] = 1
                    gt_index[i] = j


@njit
def assign_anchors(anchors, gt_boxes, pos_iou, neg_iou, min_pos_iou, low_quality,
                   labels, gt_index, max_iou):
    """Two streaming passes, no N x M matrix (see the Cython twin): anchor blocks in SoA, gt by
    gt, so IoU, running max / argmax and each gt's best vectorise over anchors; then the
    low-quality promotion on recomputed rows of the anchors that can reach a gt's best."""
    n, m = anchors.shape[0], gt_boxes.shape[0]
    if m == 0:
        for i in range(n):
            labels[i] = 0
            gt_index[i] = -1
            max_iou[i] = 0
        return
    if n == 0:
        return
    soa = _soa(gt_boxes)
    gmax = np.full(m, -np.inf, anchors.dtype)
    ab = np.empty((5, _BLK), anchors.dtype)
    col = np.empty(_BLK, anchors.dtype)
    amax = np.empty(_BLK, anchors.dtype)
    aarg = np.empty(_BLK, np.int32)
    for i0 in range(0, n, _BLK):
        _assign_block(anchors, i0, min(_BLK, n - i0), soa, ab, col, amax, aarg, gmax, pos_iou,
                      neg_iou, labels, gt_index, max_iou)
    if low_quality:
        _promote_low_quality(anchors, soa, gmax, min_pos_iou, labels, gt_index, max_iou)


# ----------------------------------------------------------------------------- focal loss
@njit
def _focal_terms(x, t, z, one):
    """(ce, p, q, 1 - p_t), stable for any finite x."""
    e = math.exp(-abs(x))
    if x >= z:
        ce = x * (one - t) + math.log1p(e)   # max(x, 0) - x t, no cancellation
        p = one / (one + e)
        q = e / (one + e)
    else:
        ce = -x * t + math.log1p(e)
        p = e / (one + e)
        q = one / (one + e)
    return ce, p, q, p * (one - t) + q * t


@njit
def sigmoid_focal_loss(logits, targets, coef, alpha, gamma, out):
    z, one, a, g = _c(logits, 0.0), _c(logits, 1.0), _c(logits, alpha), _c(logits, gamma)
    for i in range(logits.shape[0]):
        x = logits[i]
        t = targets[i]
        ce, p, q, qt = _focal_terms(x, t, z, one)
        loss = ce * qt ** g
        if alpha >= 0:
            loss = (a * t + (one - a) * (one - t)) * loss
        out[i] = loss * coef[i]


@njit
def sigmoid_focal_loss_grad(logits, targets, coef, alpha, gamma, out):
    z, one, a, g = _c(logits, 0.0), _c(logits, 1.0), _c(logits, alpha), _c(logits, gamma)
    g1 = _c(logits, gamma - 1.0)
    for i in range(logits.shape[0]):
        x = logits[i]
        t = targets[i]
        ce, p, q, qt = _focal_terms(x, t, z, one)
        d = (p - t) * qt ** g
        if gamma != 0 and qt > z:
            # d(1 - p_t)/dx = (1 - 2t) p q
            d = d + ce * (g * qt ** g1 * (one - (t + t)) * p * q)
        if alpha >= 0:
            d = (a * t + (one - a) * (one - t)) * d
        out[i] = d * coef[i]


# ----------------------------------------------------------------------------- box coding
@njit
def encode_boxes(gt, priors, variances, out):
    npri = priors.shape[0]
    half = _c(gt, 0.5)
    vx, vy, vw, vh = (_c(gt, variances[0]), _c(gt, variances[1]), _c(gt, variances[2]),
                      _c(gt, variances[3]))
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
        out[r, 2] = math.log(gw / pw) / vw
        out[r, 3] = math.log(gh / ph) / vh


@njit
def decode_boxes(deltas, priors, variances, max_log_ratio, out):
    npri = priors.shape[0]
    half = _c(deltas, 0.5)
    lim = _c(deltas, max_log_ratio)
    vx, vy, vw, vh = (_c(deltas, variances[0]), _c(deltas, variances[1]),
                      _c(deltas, variances[2]), _c(deltas, variances[3]))
    for r in range(deltas.shape[0]):
        k = r % npri
        pw = priors[k, 2] - priors[k, 0]
        ph = priors[k, 3] - priors[k, 1]
        px = priors[k, 0] + half * pw
        py = priors[k, 1] + half * ph
        cx = px + deltas[r, 0] * vx * pw
        cy = py + deltas[r, 1] * vy * ph
        w = pw * math.exp(min(deltas[r, 2] * vw, lim))
        h = ph * math.exp(min(deltas[r, 3] * vh, lim))
        out[r, 0] = cx - half * w
        out[r, 1] = cy - half * h
        out[r, 2] = cx + half * w
        out[r, 3] = cy + half * h


@njit
def distance2bbox(points, distances, clip, max_w, max_h, out):
    npt = points.shape[0]
    z, mw, mh = _c(distances, 0.0), _c(distances, max_w), _c(distances, max_h)
    for r in range(distances.shape[0]):
        k = r % npt
        x1 = points[k, 0] - distances[r, 0]
        y1 = points[k, 1] - distances[r, 1]
        x2 = points[k, 0] + distances[r, 2]
        y2 = points[k, 1] + distances[r, 3]
        if clip:
            x1 = min(max(x1, z), mw)
            x2 = min(max(x2, z), mw)
            y1 = min(max(y1, z), mh)
            y2 = min(max(y2, z), mh)
        out[r, 0] = x1
        out[r, 1] = y1
        out[r, 2] = x2
        out[r, 3] = y2
