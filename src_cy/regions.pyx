# cython: boundscheck=False, wraparound=False
"""Cython twins of edgedl.kernels._ref.regions (same names and arguments).

The wrapper (edgedl.kernels.regions) validated shapes, dtypes and label ranges. Same
algorithms as the numba twins: two-pass union-find labelling (a union keeps the smaller root,
so renumbering roots in increasing order gives raster-order labels), and minimum-area
rectangles from the two ends of every horizontal run of a region (they hold its hull).
"""
from cython cimport floating
from libc.math cimport atan2, sqrt, INFINITY, NAN
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc

cdef double AREA_RTOL = 1e-9     # as edgedl.kernels._ref.regions.AREA_RTOL


cdef inline int32_t _find(int32_t* parent, int32_t a) noexcept nogil:
    while parent[a] != a:
        parent[a] = parent[parent[a]]          # path halving
        a = parent[a]
    return a


cdef inline int32_t _union(int32_t* parent, int32_t a, int32_t b) noexcept nogil:
    cdef int32_t ra = _find(parent, a), rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
        return ra
    parent[ra] = rb
    return rb


def label_regions(const uint8_t[:, ::1] mask, int connectivity, int32_t[:, ::1] labels):
    cdef Py_ssize_t h = mask.shape[0], w = mask.shape[1], y, x, xx, dx
    cdef int32_t m = 0, n = 0, cur, nb, k, r
    cdef const uint8_t* mrow
    cdef int32_t* lrow
    cdef int32_t* prow
    cdef int32_t* parent = <int32_t*>malloc((h * w + 1) * sizeof(int32_t))
    cdef int32_t* final = <int32_t*>malloc((h * w + 1) * sizeof(int32_t))
    if parent == NULL or final == NULL:
        free(parent)
        free(final)
        raise MemoryError()
    with nogil:
        parent[0] = 0
        final[0] = 0
        for y in range(h):
            mrow = &mask[y, 0]
            lrow = &labels[y, 0]
            prow = &labels[y - 1, 0] if y > 0 else NULL
            for x in range(w):
                if mrow[x] == 0:
                    lrow[x] = 0
                    continue
                cur = lrow[x - 1] if x > 0 else 0
                # the row above: up-left, up, up-right (8-connectivity) or up (4)
                if prow != NULL:
                    for dx in range(-1, 2):
                        if dx != 0 and connectivity == 4:
                            continue
                        xx = x + dx
                        if 0 <= xx < w and prow[xx] != 0 and prow[xx] != cur:
                            nb = prow[xx]
                            cur = nb if cur == 0 else _union(parent, cur, nb)
                if cur == 0:
                    m += 1
                    parent[m] = m
                    cur = m
                lrow[x] = cur
        # renumber roots in increasing order: a non-root's root is smaller, numbered already
        for k in range(1, m + 1):
            r = _find(parent, k)
            if r == k:
                n += 1
                final[k] = n
            else:
                final[k] = final[r]
        for y in range(h):
            lrow = &labels[y, 0]
            for x in range(w):
                lrow[x] = final[lrow[x]]
    free(parent)
    free(final)
    return n


def region_sums(const int32_t[:, ::1] labels, const floating[:, ::1] values,
                int64_t[::1] counts, double[::1] sums):
    cdef Py_ssize_t h = labels.shape[0], w = labels.shape[1], y, x, n = counts.shape[0], k
    with nogil:
        for k in range(n):
            counts[k] = 0
            sums[k] = 0.0
        for y in range(h):
            for x in range(w):
                k = labels[y, x]
                if k != 0:
                    counts[k - 1] += 1
                    sums[k - 1] += <double>values[y, x]


cdef inline int64_t _cross(int64_t ax, int64_t ay, int64_t bx, int64_t by, int64_t cx,
                           int64_t cy) noexcept nogil:
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)


cdef Py_ssize_t _hull(const int64_t* px, const int64_t* py, Py_ssize_t n, int64_t* hx,
                      int64_t* hy) noexcept nogil:
    """Monotone chain over points sorted by (y, x) -> hull size (vertices in hx, hy)."""
    cdef Py_ssize_t i, k = 0, lo
    if n <= 1:
        if n == 0:
            return 0
        hx[0] = px[0]
        hy[0] = py[0]
        return 1
    for i in range(n):
        while k >= 2 and _cross(hx[k - 2], hy[k - 2], hx[k - 1], hy[k - 1], px[i], py[i]) <= 0:
            k -= 1
        hx[k] = px[i]
        hy[k] = py[i]
        k += 1
    lo = k + 1
    for i in range(n - 2, -1, -1):
        while k >= lo and _cross(hx[k - 2], hy[k - 2], hx[k - 1], hy[k - 1], px[i], py[i]) <= 0:
            k -= 1
        hx[k] = px[i]
        hy[k] = py[i]
        k += 1
    return k - 1


cdef void _min_rect(const int64_t* hx, const int64_t* hy, Py_ssize_t nh,
                    double[:, ::1] rects, Py_ssize_t r) noexcept nogil:
    cdef Py_ssize_t i, j, q
    cdef double best = -1.0, bux = 0, buy = 0, bu0 = 0, bu1 = 0, bv0 = 0, bv1 = 0
    cdef double dx, dy, norm, ux, uy, u0, u1, v0, v1, pu, pv, area, cu, cv
    if nh == 0:                                 # a label with no pixel
        for i in range(5):
            rects[r, i] = NAN
        return
    if nh == 1:
        rects[r, 0] = <double>hx[0]
        rects[r, 1] = <double>hy[0]
        rects[r, 2] = 0.0
        rects[r, 3] = 0.0
        rects[r, 4] = 0.0
        return
    for i in range(nh):
        j = i + 1 if i + 1 < nh else 0
        dx = <double>(hx[j] - hx[i])
        dy = <double>(hy[j] - hy[i])
        norm = sqrt(dx * dx + dy * dy)
        ux = dx / norm
        uy = dy / norm
        u0 = INFINITY
        v0 = INFINITY
        u1 = -INFINITY
        v1 = -INFINITY
        for q in range(nh):
            pu = hx[q] * ux + hy[q] * uy
            pv = hy[q] * ux - hx[q] * uy
            if pu < u0:
                u0 = pu
            if pu > u1:
                u1 = pu
            if pv < v0:
                v0 = pv
            if pv > v1:
                v1 = pv
        area = (u1 - u0) * (v1 - v0)
        if best < 0 or area < best * (1.0 - AREA_RTOL):
            best, bux, buy, bu0, bu1, bv0, bv1 = area, ux, uy, u0, u1, v0, v1
    cu = 0.5 * (bu0 + bu1)
    cv = 0.5 * (bv0 + bv1)
    rects[r, 0] = cu * bux - cv * buy
    rects[r, 1] = cu * buy + cv * bux
    rects[r, 2] = bu1 - bu0
    rects[r, 3] = bv1 - bv0
    rects[r, 4] = atan2(buy, bux)


cdef inline bint _run_end(const int32_t* row, Py_ssize_t x, Py_ssize_t w,
                          int32_t k) noexcept nogil:
    """Pixel x of a row (label k) starts or ends a horizontal run."""
    return (x == 0 or row[x - 1] != k or x == w - 1 or row[x + 1] != k)


def min_area_rects(const int32_t[:, ::1] labels, double[:, ::1] rects):
    cdef Py_ssize_t n = rects.shape[0], h = labels.shape[0], w = labels.shape[1]
    cdef Py_ssize_t y, x, k, a, total, biggest = 0, nh
    cdef int32_t lab
    cdef const int32_t* row
    # the two ends of every horizontal run, grouped by region in raster order (counting sort)
    cdef int64_t* start = <int64_t*>calloc(n + 2, sizeof(int64_t))
    cdef int64_t* fill = <int64_t*>malloc((n + 2) * sizeof(int64_t))
    cdef int64_t* px = NULL
    cdef int64_t* py = NULL
    cdef int64_t* hx = NULL
    cdef int64_t* hy = NULL
    try:
        if start == NULL or fill == NULL:
            raise MemoryError()
        with nogil:
            for y in range(h):
                row = &labels[y, 0]
                for x in range(w):
                    lab = row[x]
                    if lab != 0 and _run_end(row, x, w, lab):
                        start[lab + 1] += 1
            for k in range(1, n + 2):
                start[k] += start[k - 1]
            for k in range(n):
                if start[k + 2] - start[k + 1] > biggest:
                    biggest = start[k + 2] - start[k + 1]
        total = start[n + 1]
        px = <int64_t*>malloc((total + 1) * sizeof(int64_t))
        py = <int64_t*>malloc((total + 1) * sizeof(int64_t))
        hx = <int64_t*>malloc((2 * biggest + 2) * sizeof(int64_t))
        hy = <int64_t*>malloc((2 * biggest + 2) * sizeof(int64_t))
        if px == NULL or py == NULL or hx == NULL or hy == NULL:
            raise MemoryError()
        with nogil:
            for k in range(n + 2):
                fill[k] = start[k]
            for y in range(h):
                row = &labels[y, 0]
                for x in range(w):
                    lab = row[x]
                    if lab != 0 and _run_end(row, x, w, lab):
                        px[fill[lab]] = x
                        py[fill[lab]] = y
                        fill[lab] += 1
            for k in range(n):
                a = start[k + 1]
                nh = _hull(px + a, py + a, start[k + 2] - a, hx, hy)
                _min_rect(hx, hy, nh, rects, k)
    finally:
        free(start)
        free(fill)
        free(px)
        free(py)
        free(hx)
        free(hy)
