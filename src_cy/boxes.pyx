# cython: boundscheck=False, wraparound=False
"""Detection box kernels, Cython twins of ``edgedl.kernels._ref.boxes`` (same names and
arguments). Bounds checks are off: the public wrappers in ``edgedl.kernels.boxes`` validated
every shape, dtype and value. Arithmetic stays in the box dtype (float32 boxes in float),
with the same formulas, in the same order, as the reference.
"""
from cython cimport floating
from libc.math cimport atan2, atan2f, exp, log, pow, powf, sqrt, fabs, INFINITY
from libc.stdint cimport int8_t, int64_t, uint8_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memmove
from edl_fmath cimport _exp, _log, _log1p

cdef double _DIOU_EPS = 1e-7
cdef double _FOUR_OVER_PI2 = 0.40528473456935108578   # 4 / pi^2


# ----------------------------------------------------------------------------- helpers
cdef inline floating _min(floating a, floating b) noexcept nogil:
    return a if a < b else b


cdef inline floating _max(floating a, floating b) noexcept nogil:
    return a if a > b else b


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
    """One IoU-family value (kind 0 iou, 1 giou, 2 diou, 3 ciou), formulas of the reference
    (a pair whose largest |coordinate| m overflows 16 m^2 is divided by m for kinds 1-3)."""
    cdef floating w, h, inter, u, iou, ew, eh, c, diag, dx, dy, diou, d, v, alpha, m
    cdef floating eps = <floating>_DIOU_EPS
    if kind != 0:
        m = _max(_max(_max(fabs(ax1), fabs(ay1)), _max(fabs(ax2), fabs(ay2))),
                 _max(_max(fabs(bx1), fabs(by1)), _max(fabs(bx2), fabs(by2))))
        if m * m * <floating>16 == INFINITY:
            ax1, ay1, ax2, ay2 = ax1 / m, ay1 / m, ax2 / m, ay2 / m
            bx1, by1, bx2, by2 = bx1 / m, by1 / m, bx2 / m, by2 / m
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
    if not (ax2 - ax1 > 0 and ay2 - ay1 > 0 and bx2 - bx1 > 0 and by2 - by1 > 0):
        return diou       # a zero-area box has no aspect ratio: its term is 0
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


# Grid NMS constants (the numba twin has the same):
cdef enum:
    _GRID_MIN = 2048    # shorter segments: _nms_xwindow (faster there on clustered boxes)
    _SAMPLE = 255       # candidates sampled for the median box size
    _LEVELS = 64        # most log(area) levels
cdef double _BIG = 8.0          # t = 0: boxes this many times the median size are "big"
cdef double _TINY = 1e-30       # smaller candidates: the plain overlap window, all levels
cdef double _SLACK = 1e-5       # IoU rounding allowance in the distance bound


cdef struct _Grid:
    double x0, y0, l0, il       # origin (lowest centre), lowest log(area), levels per unit
    double bw, bh               # wider / taller boxes go to the list of big boxes
    Py_ssize_t gl               # log(area) levels, each its own grid of cells:
    double ix[_LEVELS]          #   cells per unit along x, y
    double iy[_LEVELS]
    Py_ssize_t gx[_LEVELS]      #   cells along x, y
    Py_ssize_t gy[_LEVELS]
    Py_ssize_t off[_LEVELS + 1] #   first list head of the level; off[gl]: the big boxes


cdef int _cmp_double(const void* a, const void* b) noexcept nogil:
    cdef double x = (<const double*>a)[0], y = (<const double*>b)[0]
    return (x > y) - (x < y)


cdef inline Py_ssize_t _cell(double v, double v0, double inv, Py_ssize_t g) noexcept nogil:
    """The cell of coordinate v: floor((v - v0) * inv) clamped to [0, g - 1]. Monotone in v,
    so a centre within [c - r, c + r] lies in the cells of c - r .. c + r."""
    cdef double t
    if g == 1:
        return 0
    t = (v - v0) * inv
    if not (t > 0):
        return 0
    return <Py_ssize_t>t if t < <double>(g - 1) else g - 1


cdef Py_ssize_t _cells_along(double extent, double size, Py_ssize_t m) noexcept nogil:
    """About extent / size cells, 1 to m; 1 if the extent is 0 or overflows."""
    cdef double t
    if not (extent > 0) or extent == INFINITY:
        return 1
    t = extent / size
    return 1 if t < 1 else (<Py_ssize_t>t if t < m else m)


cdef double _median_size(double* v, Py_ssize_t n, double extent, Py_ssize_t m) noexcept nogil:
    """The median of v[:n] (sorted in place); extent / sqrt(m) if that is 0 (mostly
    zero-size boxes)."""
    qsort(v, n, sizeof(double), _cmp_double)
    return v[n // 2] if v[n // 2] > 0 else extent / sqrt(<double>m)


cdef inline bint _live(floating a) noexcept nogil:
    """A box of area 0 (or inf / NaN from overflow) has IoU 0 or NaN with every box, so it
    never suppresses nor is suppressed: NMS keeps it and never tests it."""
    return a > 0 and a < INFINITY


cdef void _make_grid(const floating* bx, const int64_t* order, Py_ssize_t m, double tl,
                     double cell, double* samp, _Grid* g) noexcept nogil:
    """Levels of log(area) as wide as log(1 / tl) (one if tl = 0), each a grid over the live
    candidates' centres with cells of ``cell`` x the level's box size (the median box size,
    scaled by the square root of the level's area over the median area); at most 2m cells
    in all. With tl = 0, boxes over _BIG times the median size go to the big boxes."""
    cdef double x0 = INFINITY, y0 = INFINITY, x1 = -INFINITY, y1 = -INFINITY
    cdef double l0 = INFINITY, l1 = -INFINITY, c, mw, mh, r, total
    cdef floating a
    cdef Py_ssize_t p, ns, lv, most
    cdef const floating* b
    for p in range(m):
        b = bx + 4 * order[p]
        a = (b[2] - b[0]) * (b[3] - b[1])
        if _live(a):
            c = b[0] + 0.5 * (<double>b[2] - b[0])
            x0 = min(x0, c)
            x1 = max(x1, c)
            c = b[1] + 0.5 * (<double>b[3] - b[1])
            y0 = min(y0, c)
            y1 = max(y1, c)
            if tl > 0:
                c = log(<double>a)
                l0 = min(l0, c)
                l1 = max(l1, c)
    ns = min(m, <Py_ssize_t>_SAMPLE)
    for p in range(ns):
        b = bx + 4 * order[p * (m // ns) + p * (m % ns) // ns]   # p m / ns, no overflow
        samp[p] = <double>b[2] - <double>b[0]
        samp[ns + p] = <double>b[3] - <double>b[1]
    mw = _median_size(samp, ns, x1 - x0, m)
    mh = _median_size(samp + ns, ns, y1 - y0, m)
    g.gl = _cells_along(l1 - l0, -log(tl), _LEVELS) if tl > 0 else 1
    g.il = g.gl / (l1 - l0) if g.gl > 1 else 0
    g.x0, g.y0, g.l0 = x0, y0, l0
    for lv in range(g.gl):
        r = 1
        if g.gl > 1 and mw > 0 and mh > 0:
            r = exp(0.5 * (l0 + (lv + 0.5) / g.il - log(mw) - log(mh)))
        g.gx[lv] = _cells_along(x1 - x0, cell * mw * r, m)
        g.gy[lv] = _cells_along(y1 - y0, cell * mh * r, m)
    while True:             # at most 2m cells: halve the longer side of the finest level
        total = 0                       # (in double: gx * gy may overflow a 32-bit ssize_t)
        most = 0
        for lv in range(g.gl):
            total += <double>g.gx[lv] * g.gy[lv]
            if <double>g.gx[lv] * g.gy[lv] > <double>g.gx[most] * g.gy[most]:
                most = lv
        if total <= 2.0 * m:            # (gl <= 64 <= 2m always fits)
            break
        if g.gx[most] >= g.gy[most]:
            g.gx[most] = (g.gx[most] + 1) // 2
        else:
            g.gy[most] = (g.gy[most] + 1) // 2
    g.off[0] = 0
    for lv in range(g.gl):
        g.off[lv + 1] = g.off[lv] + g.gx[lv] * g.gy[lv]
        g.ix[lv] = g.gx[lv] / (x1 - x0) if g.gx[lv] > 1 else 0
        g.iy[lv] = g.gy[lv] / (y1 - y0) if g.gy[lv] > 1 else 0
    g.bw = _BIG * mw if mw > 0 and tl == 0 else INFINITY
    g.bh = _BIG * mh if mh > 0 and tl == 0 else INFINITY


cdef inline bint _scan(const floating* kb, const Py_ssize_t* nxt, Py_ssize_t e, floating x1,
                       floating y1, floating x2, floating y2, floating aj,
                       double t) noexcept nogil:
    """Does a kept box of the list starting at e suppress the candidate?"""
    while e >= 0:
        if _suppresses(kb + 5 * e, x1, y1, x2, y2, aj, t):
            return True
        e = nxt[e]
    return False


cdef void _nms_grid(const floating* bx, const int64_t* order, Py_ssize_t m, double t,
                    int64_t max_output, uint8_t* keep, floating* kb, Py_ssize_t* nxt,
                    Py_ssize_t* head, double* samp) noexcept nogil:
    """Greedy NMS of one segment, exact, near-linear for spread boxes.

    A kept box goes into the list of its (log-area level, centre cell) (through ``nxt``,
    newest first from head[...]), or (t = 0 only), if over _BIG times the median size, into
    the list of big boxes which every candidate scans. IoU(a, b) > t needs the x-extents' IoU
    > t; with S = (wa + wb) / 2 and d the centres' distance that IoU is at most
    (S - d) / (S + d), so d < S (1 - t) / (1 + t), and t < wb / wa < 1 / t with wb at most the
    widest box of the level (likewise in y), and the areas within a factor 1 / t (the next
    levels): a candidate tests only the cells of that window around its centre in 3 levels
    (t lowered by _SLACK for float rounding). A candidate of area < _TINY (denormal products
    break the rounding bound) or with t = 0 tests every box it overlaps: d < S, all levels."""
    cdef _Grid g
    cdef Py_ssize_t p, c, k = 0, cx, cy, cx0, cx1, cy0, cy1, big, own, lv, lvl, l_lo, l_hi
    cdef const floating* b
    cdef floating x1, y1, x2, y2, aj
    cdef double w, h, mx, my, rx, ry
    cdef double wmax[_LEVELS]
    cdef double hmax[_LEVELS]
    cdef double tl = t - _SLACK if t > _SLACK else 0
    cdef double f = 0.5 * (1 - tl) / (1 + tl)
    cdef bint sup, wide
    # cells about the window of a box (t >= 0.5: half-width f (1 + 1/t) x its size)
    _make_grid(bx, order, m, tl, max(f * (1 + min(1 / tl, 2.0)) if tl > 0 else 1.5, 0.05),
               samp, &g)
    big = g.off[g.gl]
    for c in range(big + 1):
        head[c] = -1
    for lv in range(g.gl):
        wmax[lv] = 0
        hmax[lv] = 0
    for p in range(m):
        if max_output >= 0 and k >= max_output:
            break
        b = bx + 4 * order[p]
        x1, y1, x2, y2 = b[0], b[1], b[2], b[3]
        aj = (x2 - x1) * (y2 - y1)
        keep[p] = 1
        if not _live(aj):
            k += 1                      # kept, never registered (slot k stays unused)
            continue
        w = <double>x2 - x1
        h = <double>y2 - y1
        mx = x1 + 0.5 * w
        my = y1 + 0.5 * h
        lv = _cell(log(<double>aj), g.l0, g.il, g.gl) if g.gl > 1 else 0
        # a tiny area rounds to denormals, where the IoU bound fails: overlap is all we know
        wide = aj < _TINY or tl == 0
        l_lo = 0 if wide else max(lv - 1, 0)
        l_hi = g.gl if wide else min(lv + 2, g.gl)
        # own cell first (the usual suppressor is near), then the big boxes, then the windows
        own = g.off[lv] + (_cell(my, g.y0, g.iy[lv], g.gy[lv]) * g.gx[lv]
                           + _cell(mx, g.x0, g.ix[lv], g.gx[lv]))
        sup = (_scan(kb, nxt, head[own], x1, y1, x2, y2, aj, t)
               or _scan(kb, nxt, head[big], x1, y1, x2, y2, aj, t))
        lvl = l_lo
        while lvl < l_hi and not sup:
            if wide:
                rx = 0.5 * (w + wmax[lvl])
                ry = 0.5 * (h + hmax[lvl])
            else:
                rx = f * (w + min(w / tl, wmax[lvl]))
                ry = f * (h + min(h / tl, hmax[lvl]))
            rx = rx * (1 + 1e-6) + 1e-12 * fabs(mx)
            ry = ry * (1 + 1e-6) + 1e-12 * fabs(my)
            cx0 = _cell(mx - rx, g.x0, g.ix[lvl], g.gx[lvl])
            cx1 = _cell(mx + rx, g.x0, g.ix[lvl], g.gx[lvl])
            cy0 = _cell(my - ry, g.y0, g.iy[lvl], g.gy[lvl])
            cy1 = _cell(my + ry, g.y0, g.iy[lvl], g.gy[lvl])
            cy = cy0
            while cy <= cy1 and not sup:
                for cx in range(cx0, cx1 + 1):
                    c = g.off[lvl] + cy * g.gx[lvl] + cx
                    if c != own and _scan(kb, nxt, head[c], x1, y1, x2, y2, aj, t):
                        sup = True
                        break
                cy += 1
            lvl += 1
        if sup:
            keep[p] = 0
            continue
        if w > g.bw or h > g.bh:
            own = big
        else:
            wmax[lv] = max(wmax[lv], w)
            hmax[lv] = max(hmax[lv], h)
        kb[5 * k] = x1                  # kept boxes packed by slot: fewer cache misses
        kb[5 * k + 1] = y1
        kb[5 * k + 2] = x2
        kb[5 * k + 3] = y2
        kb[5 * k + 4] = aj
        nxt[k] = head[own]
        head[own] = k
        k += 1


cdef void _nms_xwindow(const floating* bx, const int64_t* order, Py_ssize_t m, double t,
                       int64_t max_output, uint8_t* keep, floating* kb,
                       double* kx1) noexcept nogil:
    """Greedy NMS of one short segment with the kept boxes held sorted by x1 (the fast path
    for a few thousand boxes; its insertion is O(kept)). IoU(i, j) <= IoU of the x-extents,
    which bounds how far apart the x1 of two boxes with IoU > t can be: d < (1 - t) *
    w_earlier and d < (1 - t) / t * w_later (w_earlier / w_later: width of the box starting
    left / right). So a candidate only tests kept boxes in a small x1 window around its own
    x1, nearest first (the usual suppressor), found by binary search. The window is widened by
    a relative 1e-4 so rounding can never hide a suppressor."""
    cdef Py_ssize_t p, q, lo, hi, mid, ins, k = 0
    cdef double xj, wj, wmax = 0.0, r
    cdef double fe = (1.0 - t) * (1.0 + 1e-4) + 1e-4
    cdef double fl = fe / t if t > 0 else INFINITY
    cdef const floating* b
    cdef floating x1, y1, x2, y2, aj
    cdef bint sup
    for p in range(m):
        if max_output >= 0 and k >= max_output:
            break
        b = bx + 4 * order[p]
        x1, y1, x2, y2 = b[0], b[1], b[2], b[3]
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


cdef void _keep_all(Py_ssize_t m, int64_t max_output, uint8_t* keep) noexcept nogil:
    """t >= 1: IoU <= 1 in floating point too (inter = fl(w h) <= each area, as w, h do not
    exceed the widths and heights and rounding is monotone; so fl(A + B) >= 2 inter and the
    union >= inter), so every candidate is kept, up to max_output. (N copies of one box
    would cost the grid N^2 / 2 tests.)"""
    cdef Py_ssize_t p
    for p in range(m if max_output < 0 else min(m, <Py_ssize_t>max_output)):
        keep[p] = 1


def nms(const floating[:, ::1] boxes, const int64_t[::1] order, const int64_t[::1] bounds,
        double iou_threshold, int64_t max_output, uint8_t[::1] keep):
    """Greedy NMS per segment, the exact greedy result: segments shorter than _GRID_MIN with
    an x1-sorted kept set (_nms_xwindow), longer ones on a grid (_nms_grid, near-linear when
    the boxes are spread)."""
    cdef Py_ssize_t nseg = bounds.shape[0] - 1, npos = order.shape[0], s, p, m, longest = 0
    for p in range(npos):
        keep[p] = 0
    if npos == 0:
        return
    for s in range(nseg):
        longest = max(longest, bounds[s + 1] - bounds[s])
    cdef floating* kb = <floating*>malloc(5 * longest * sizeof(floating) + 1)
    cdef Py_ssize_t* nxt = <Py_ssize_t*>malloc(longest * sizeof(Py_ssize_t) + 1)
    cdef Py_ssize_t* head = <Py_ssize_t*>malloc((2 * longest + 2) * sizeof(Py_ssize_t))
    cdef double* samp = <double*>malloc(2 * _SAMPLE * sizeof(double))
    if kb == NULL or nxt == NULL or head == NULL or samp == NULL:
        free(kb)
        free(nxt)
        free(head)
        free(samp)
        raise MemoryError()
    with nogil:
        for s in range(nseg):
            m = bounds[s + 1] - bounds[s]
            if iou_threshold >= 1:      # nothing is suppressed (see _keep_all)
                _keep_all(m, max_output, &keep[0] + bounds[s])
            elif m < _GRID_MIN:         # kx1: the head buffer, as doubles (m <= its length)
                _nms_xwindow(&boxes[0, 0], &order[0] + bounds[s], m, iou_threshold,
                             max_output, &keep[0] + bounds[s], kb, <double*>head)
            else:
                _nms_grid(&boxes[0, 0], &order[0] + bounds[s], m, iou_threshold, max_output,
                          &keep[0] + bounds[s], kb, nxt, head, samp)
    free(kb)
    free(nxt)
    free(head)
    free(samp)


cdef inline floating _iou_pair(const floating[:, ::1] boxes, const floating* area, Py_ssize_t i,
                               Py_ssize_t j) noexcept nogil:
    cdef floating w = _max(_min(boxes[i, 2], boxes[j, 2]) - _max(boxes[i, 0], boxes[j, 0]),
                           <floating>0)
    cdef floating h = _max(_min(boxes[i, 3], boxes[j, 3]) - _max(boxes[i, 1], boxes[j, 1]),
                           <floating>0)
    cdef floating inter = w * h
    cdef floating u = (area[i] + area[j]) - inter
    return inter / u if u > 0 else 0


cdef inline Py_ssize_t _better(const double* s, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """The pick of two tournament entries: higher score, ties -> lower index (-1: none)."""
    if b < 0:
        return a
    if a < 0:
        return b
    return a if s[a] > s[b] or (s[a] == s[b] and a < b) else b


cdef inline void _replay(Py_ssize_t* tree, Py_ssize_t leaf, const double* s) noexcept nogil:
    """Score of ``leaf`` changed: replay its matches up to the root tree[1]."""
    cdef Py_ssize_t node = leaf >> 1
    while node >= 1:
        tree[node] = _better(s, tree[2 * node], tree[2 * node + 1])
        node >>= 1


cdef Py_ssize_t _decay(const floating[:, ::1] boxes, double* scores, const floating* area,
                       const Py_ssize_t* ids, Py_ssize_t e0, Py_ssize_t e1, Py_ssize_t best,
                       double iou_threshold, double sigma, int method, Py_ssize_t* chg,
                       Py_ssize_t nchg) noexcept nogil:
    """Decay the alive boxes ids[e0:e1] by their IoU with the pick, as the O(N^2) loop; the
    changed ones are appended to chg[nchg:]; returns the new nchg."""
    cdef Py_ssize_t e, j
    cdef double iou, old
    for e in range(e0, e1):
        j = ids[e]
        if (scores[j] == -INFINITY or boxes[j, 0] >= boxes[best, 2]
                or boxes[j, 2] <= boxes[best, 0]):
            continue
        iou = _iou_pair(boxes, area, best, j)
        old = scores[j]
        if method == 0:
            if iou > 0:
                scores[j] *= exp(-(iou * iou) / sigma)
        elif iou > iou_threshold:
            scores[j] *= 1.0 - iou
        if scores[j] != old:
            chg[nchg] = j
            nchg += 1
    return nchg


cdef void _soft_nms_grid(const floating[:, ::1] boxes, double* scores, const floating* area,
                         double iou_threshold, double sigma, double score_threshold,
                         int method, int64_t* picked, double* picked_scores,
                         Py_ssize_t* count, Py_ssize_t* tree, Py_ssize_t pw, Py_ssize_t* start,
                         Py_ssize_t* ids, Py_ssize_t* slot, Py_ssize_t* chg, int64_t* order,
                         double* samp) noexcept nogil:
    """Soft-NMS with the same picks and scores as the O(N^2) loop: the highest score comes
    from a tournament tree (leaves tree[pw + i], replayed on every change), and a pick only
    decays the boxes it overlaps (IoU 0 leaves a score as it is), found in a static grid:
    _make_grid's log-area levels (x4 each) of centre cells, every live box in a CSR list
    (start / ids). A box overlaps the pick only if its centre is within half the sum of the
    widths (heights): each level is searched in the cells of that window, or all its boxes
    when they are fewer than those cells. A pick that changes more scores than the tree has
    levels per leaf (a huge box) rebuilds the tree once instead of replaying each leaf."""
    cdef Py_ssize_t n = boxes.shape[0], i, best, lv, c, cx, cx0, cx1, cy, cy0, cy1, nb, nchg
    cdef Py_ssize_t depth = 1
    cdef _Grid g
    cdef double w, h, mx, my, rx, ry
    cdef double wmax[_LEVELS]
    cdef double hmax[_LEVELS]
    for i in range(n):
        order[i] = i
    _make_grid(&boxes[0, 0], order, n, 0.25, 1.0, samp, &g)
    nb = g.off[g.gl]
    for c in range(nb + 1):
        start[c] = 0
    for lv in range(g.gl):
        wmax[lv] = 0
        hmax[lv] = 0
    for i in range(n):                  # the list (level, cell) of each live box
        if not _live(area[i]):
            slot[i] = -1                # IoU 0 with every box: never decayed
            continue
        w = <double>boxes[i, 2] - boxes[i, 0]
        h = <double>boxes[i, 3] - boxes[i, 1]
        lv = _cell(log(<double>area[i]), g.l0, g.il, g.gl) if g.gl > 1 else 0
        wmax[lv] = max(wmax[lv], w)
        hmax[lv] = max(hmax[lv], h)
        slot[i] = g.off[lv] + (_cell(boxes[i, 1] + 0.5 * h, g.y0, g.iy[lv], g.gy[lv]) * g.gx[lv]
                               + _cell(boxes[i, 0] + 0.5 * w, g.x0, g.ix[lv], g.gx[lv]))
        start[slot[i] + 1] += 1
    for c in range(nb):
        start[c + 1] += start[c]
    for i in range(n):
        if slot[i] >= 0:
            ids[start[slot[i]]] = i
            start[slot[i]] += 1
    for c in range(nb, 0, -1):          # each start[c] now holds its list's end
        start[c] = start[c - 1]
    start[0] = 0
    for i in range(pw):
        tree[pw + i] = i if i < n else -1
    for i in range(pw - 1, 0, -1):
        tree[i] = _better(scores, tree[2 * i], tree[2 * i + 1])
    while (<Py_ssize_t>1 << depth) < pw:
        depth += 1
    count[0] = 0
    while True:
        best = tree[1]
        if best < 0 or scores[best] == -INFINITY or not (scores[best] > score_threshold):
            break
        picked[count[0]] = best
        picked_scores[count[0]] = scores[best]
        count[0] += 1
        scores[best] = -INFINITY
        _replay(tree, pw + best, scores)
        if slot[best] < 0:
            continue
        w = <double>boxes[best, 2] - boxes[best, 0]
        h = <double>boxes[best, 3] - boxes[best, 1]
        mx = boxes[best, 0] + 0.5 * w
        my = boxes[best, 1] + 0.5 * h
        nchg = 0
        for lv in range(g.gl):
            rx = 0.5 * (w + wmax[lv]) * (1 + 1e-6) + 1e-12 * fabs(mx)
            ry = 0.5 * (h + hmax[lv]) * (1 + 1e-6) + 1e-12 * fabs(my)
            cx0 = _cell(mx - rx, g.x0, g.ix[lv], g.gx[lv])
            cx1 = _cell(mx + rx, g.x0, g.ix[lv], g.gx[lv])
            cy0 = _cell(my - ry, g.y0, g.iy[lv], g.gy[lv])
            cy1 = _cell(my + ry, g.y0, g.iy[lv], g.gy[lv])
            if (cx1 - cx0 + 1) * (cy1 - cy0 + 1) >= start[g.off[lv + 1]] - start[g.off[lv]]:
                nchg = _decay(boxes, scores, area, ids, start[g.off[lv]], start[g.off[lv + 1]],
                              best, iou_threshold, sigma, method, chg, nchg)
                continue
            for cy in range(cy0, cy1 + 1):
                c = g.off[lv] + cy * g.gx[lv]
                nchg = _decay(boxes, scores, area, ids, start[c + cx0], start[c + cx1 + 1],
                              best, iou_threshold, sigma, method, chg, nchg)
        if nchg * depth > pw:
            for i in range(pw - 1, 0, -1):
                tree[i] = _better(scores, tree[2 * i], tree[2 * i + 1])
        else:
            for i in range(nchg):
                _replay(tree, pw + chg[i], scores)


def soft_nms(const floating[:, ::1] boxes, double[::1] scores, double iou_threshold,
             double sigma, double score_threshold, int method, int64_t[::1] picked,
             double[::1] picked_scores):
    """O(N^2) like the reference below _GRID_MIN boxes, with cheap steps: a picked box's work
    score becomes -inf (alive scores are finite), and boxes apart in x (IoU 0: no decay) cost
    two compares; from _GRID_MIN boxes _soft_nms_grid (same picks and scores)."""
    cdef Py_ssize_t n = boxes.shape[0], i, j, best, count = 0, pw = 1
    cdef double bs, iou
    cdef floating bx1, bx2
    cdef floating* area = <floating*>malloc(n * sizeof(floating) + 1)
    cdef Py_ssize_t* buf = NULL
    cdef int64_t* order = NULL
    cdef double* samp = NULL
    if area == NULL:
        raise MemoryError()
    while pw < n:
        pw *= 2
    if n >= _GRID_MIN:                  # tree (2 pw), start (2n + 2), ids, slot, chg (n each)
        buf = <Py_ssize_t*>malloc((2 * pw + 5 * n + 2) * sizeof(Py_ssize_t))
        order = <int64_t*>malloc(n * sizeof(int64_t))
        samp = <double*>malloc(2 * _SAMPLE * sizeof(double))
        if buf == NULL or order == NULL or samp == NULL:
            free(area)
            free(buf)
            free(order)
            free(samp)
            raise MemoryError()
    with nogil:
        for i in range(n):
            area[i] = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
        if n >= _GRID_MIN:
            _soft_nms_grid(boxes, &scores[0], area, iou_threshold, sigma, score_threshold,
                           method, &picked[0], &picked_scores[0], &count, buf, pw,
                           buf + 2 * pw, buf + 2 * pw + 2 * n + 2, buf + 2 * pw + 3 * n + 2,
                           buf + 2 * pw + 4 * n + 2, order, samp)
        else:
            while count < n:
                best = -1
                bs = -INFINITY
                for i in range(n):          # first maximum: ties -> lower index
                    if scores[i] > bs:
                        best = i
                        bs = scores[i]
                if best < 0 or not (bs > score_threshold):
                    break
                picked[count] = best
                picked_scores[count] = bs
                count += 1
                scores[best] = -INFINITY
                bx1 = boxes[best, 0]
                bx2 = boxes[best, 2]
                for j in range(n):
                    if scores[j] == -INFINITY or boxes[j, 0] >= bx2 or boxes[j, 2] <= bx1:
                        continue
                    iou = _iou_pair(boxes, area, best, j)
                    if method == 0:
                        if iou > 0:             # exp(-0) = 1: most pairs need no exp
                            scores[j] *= exp(-(iou * iou) / sigma)
                    elif iou > iou_threshold:
                        scores[j] *= 1.0 - iou
    free(area)
    free(buf)
    free(order)
    free(samp)
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
