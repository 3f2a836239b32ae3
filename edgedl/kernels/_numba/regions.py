"""numba twins of edgedl.kernels._ref.regions (same names and arguments).

Labelling is the classic two-pass union-find (provisional labels in raster order, a union keeps
the smaller root, so each root is its component's first pixel and renumbering roots in
increasing order gives the reference's raster-order labels). Rectangles use only the two ends
of every horizontal run of a region: they hold its convex hull.
"""
import math

import numpy as np

from ..._config import njit

AREA_RTOL = 1e-9    # as edgedl.kernels._ref.regions.AREA_RTOL (and src_cy/regions.pyx)


@njit
def _find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]          # path halving
        a = parent[a]
    return a


@njit
def _union(parent, a, b):
    ra, rb = _find(parent, a), _find(parent, b)
    if ra < rb:
        parent[rb] = ra
        return ra
    parent[ra] = rb
    return rb


@njit
def label_regions(mask, connectivity, labels):
    h, w = mask.shape
    parent = np.empty(h * w + 1, np.int32)        # provisional labels: at most one a pixel
    parent[0] = 0
    m = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] == 0:
                labels[y, x] = 0
                continue
            cur = labels[y, x - 1] if x > 0 else 0
            # the row above: up-left, up, up-right (8-connectivity) or up (4)
            if y > 0:
                for dx in range(-1, 2):
                    if dx != 0 and connectivity == 4:
                        continue
                    xx = x + dx
                    if 0 <= xx < w and labels[y - 1, xx] != 0 and labels[y - 1, xx] != cur:
                        nb = labels[y - 1, xx]
                        cur = nb if cur == 0 else _union(parent, cur, nb)
            if cur == 0:
                m += 1
                parent[m] = m
                cur = m
            labels[y, x] = cur
    final = np.zeros(m + 1, np.int32)
    n = 0
    for k in range(1, m + 1):
        r = _find(parent, k)
        if r == k:
            n += 1
            final[k] = n
        else:
            final[k] = final[r]                   # r < k: already numbered
    for y in range(h):
        for x in range(w):
            labels[y, x] = final[labels[y, x]]
    return n


@njit
def region_sums(labels, values, counts, sums):
    counts[:] = 0
    sums[:] = 0.0
    h, w = labels.shape
    for y in range(h):
        for x in range(w):
            k = labels[y, x]
            if k:
                counts[k - 1] += 1
                sums[k - 1] += np.float64(values[y, x])


@njit
def _cross(ax, ay, bx, by, cx, cy):
    return (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)


@njit
def _hull(px, py, n, hx, hy):
    """Monotone chain over points sorted by (y, x) -> hull size (vertices in hx, hy)."""
    if n <= 1:
        if n == 1:
            hx[0], hy[0] = px[0], py[0]
        return n
    k = 0
    for i in range(n):
        while k >= 2 and _cross(hx[k - 2], hy[k - 2], hx[k - 1], hy[k - 1], px[i], py[i]) <= 0:
            k -= 1
        hx[k], hy[k] = px[i], py[i]
        k += 1
    lo = k + 1
    for i in range(n - 2, -1, -1):
        while k >= lo and _cross(hx[k - 2], hy[k - 2], hx[k - 1], hy[k - 1], px[i], py[i]) <= 0:
            k -= 1
        hx[k], hy[k] = px[i], py[i]
        k += 1
    return k - 1


@njit
def _min_rect(hx, hy, nh, out):
    if nh == 0:                                 # a label with no pixel
        out[:] = np.nan
        return
    if nh == 1:
        out[0], out[1], out[2], out[3], out[4] = hx[0], hy[0], 0.0, 0.0, 0.0
        return
    best = -1.0
    bux = buy = bu0 = bu1 = bv0 = bv1 = 0.0
    for i in range(nh):
        j = i + 1 if i + 1 < nh else 0
        dx, dy = float(hx[j] - hx[i]), float(hy[j] - hy[i])
        norm = math.hypot(dx, dy)
        ux, uy = dx / norm, dy / norm
        u0 = v0 = math.inf
        u1 = v1 = -math.inf
        for q in range(nh):
            pu = hx[q] * ux + hy[q] * uy
            pv = hy[q] * ux - hx[q] * uy
            u0, u1, v0, v1 = min(u0, pu), max(u1, pu), min(v0, pv), max(v1, pv)
        area = (u1 - u0) * (v1 - v0)
        if best < 0 or area < best * (1.0 - AREA_RTOL):
            best, bux, buy, bu0, bu1, bv0, bv1 = area, ux, uy, u0, u1, v0, v1
    cu, cv = 0.5 * (bu0 + bu1), 0.5 * (bv0 + bv1)
    out[0] = cu * bux - cv * buy
    out[1] = cu * buy + cv * bux
    out[2] = bu1 - bu0
    out[3] = bv1 - bv0
    out[4] = math.atan2(buy, bux)


@njit
def min_area_rects(labels, rects):
    n = rects.shape[0]
    h, w = labels.shape
    # the two ends of every horizontal run, grouped by region in raster order (counting sort)
    start = np.zeros(n + 2, np.int64)
    for y in range(h):
        for x in range(w):
            k = labels[y, x]
            if k and (x == 0 or labels[y, x - 1] != k or x == w - 1 or labels[y, x + 1] != k):
                start[k + 1] += 1
    for k in range(1, n + 2):
        start[k] += start[k - 1]
    total = start[n + 1]
    px = np.empty(total, np.int64)
    py = np.empty(total, np.int64)
    fill = start.copy()
    biggest = 0
    for k in range(n):
        biggest = max(biggest, start[k + 2] - start[k + 1])
    for y in range(h):
        for x in range(w):
            k = labels[y, x]
            if k and (x == 0 or labels[y, x - 1] != k or x == w - 1 or labels[y, x + 1] != k):
                px[fill[k]] = x
                py[fill[k]] = y
                fill[k] += 1
    hx = np.empty(2 * biggest + 2, np.int64)
    hy = np.empty(2 * biggest + 2, np.int64)
    for k in range(n):
        a = start[k + 1]
        nh = _hull(px[a:start[k + 2]], py[a:start[k + 2]], start[k + 2] - a, hx, hy)
        _min_rect(hx, hy, nh, rects[k])
