"""NumPy reference of the region kernels: connected components of a binary map and what the
DB text detector needs of each component (pixel count and value sum, minimum-area rectangle).

No ONNX op; the semantics follow OpenCV where it has the same thing (``connectedComponents``
with 4/8 connectivity, ``minAreaRect`` of the pixel centres). The public wrapper
(``edgedl.kernels.regions``) validated the arguments; these functions assume them:

- ``label_regions(mask, connectivity, labels) -> n``: mask (H, W) uint8 (nonzero = on),
  labels (H, W) int32 written with 0 for off pixels and 1..n per component, numbered in the
  raster order of each component's first pixel (so every backend gives the same labels).
- ``region_sums(labels, values, counts, sums)``: counts[k] / sums[k] = pixel count / float64
  sum of ``values`` over the pixels labelled k + 1.
- ``min_area_rects(labels, rects)``: rects[k] = (cx, cy, w, h, angle) of the smallest-area
  rectangle holding the pixel centres (x = column, y = row) of region k + 1; ``angle``
  (radians, in (-pi, pi]) is the direction of the side of length w, which is a side of the
  convex hull. Hull edges are tried in the hull's order (monotone chain over the points in
  raster order) and a later edge wins only when its area is smaller by more than a relative
  1e-9, so near-ties resolve the same way in every backend. One pixel gives w = h = 0; a
  straight line of pixels gives h = 0; a label in 1..n with no pixel gives NaN.
"""
import numpy as np

#: relative margin by which a later caliper must beat the best area (see module docstring)
AREA_RTOL = 1e-9


def _runs(on):
    """Horizontal runs of on pixels in raster order: (row, first column, end column
    (exclusive)) arrays."""
    d = np.diff(on.astype(np.int8), axis=1, prepend=0, append=0)
    ys, x0 = np.nonzero(d == 1)
    _, x1 = np.nonzero(d == -1)
    return ys, x0, x1


def _touching_runs(ys, x0, x1, width, connectivity):
    """(a, b) index pairs of runs a in row y and b in row y + 1 that touch: they overlap
    (4-connectivity) or overlap / meet at a corner (8-connectivity). With the runs in raster
    order, b ranges over [lo, hi) of a composite key row * (width + 2) + column."""
    c = 1 if connectivity == 8 else 0
    key = lambda y, x: y * (width + 2) + x
    lo = np.searchsorted(key(ys, x1), key(ys + 1, x0 - c), side="right")
    hi = np.searchsorted(key(ys, x0), key(ys + 1, x1 + c), side="left")
    n = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(len(ys)), n)
    b = np.repeat(lo, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    return a, b


def label_regions(mask, connectivity, labels):
    """Runs of on pixels are the nodes, touching runs of adjacent rows the edges; every run
    takes the smallest run index of its component (minimum propagated over the edges, then
    pointer jumping, until nothing changes). That run is the component's first in raster
    order, so numbering the representatives in increasing order numbers the components by
    their first pixel. Vectorised over runs: the NumPy backend serves real maps too."""
    on = mask != 0
    h, w = on.shape
    ys, x0, x1 = _runs(on)
    a, b = _touching_runs(ys, x0, x1, w, connectivity)
    rep = np.arange(len(ys))
    while True:
        new = rep.copy()
        m = np.minimum(new[a], new[b])
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]                           # pointer jumping: a run names a run
        if np.array_equal(new, rep):
            break
        rep = new
    roots, final = np.unique(rep, return_inverse=True)      # ascending = raster order
    run_of_pixel = np.cumsum(np.diff(on.astype(np.int8), axis=1, prepend=0).ravel() == 1) - 1
    labels[...] = 0
    labels[on] = (final[run_of_pixel[on.ravel()]] + 1).astype(np.int32)
    return len(roots)


def region_sums(labels, values, counts, sums):
    n = len(counts)
    flat = labels.ravel()
    counts[...] = np.bincount(flat, minlength=n + 1)[1:]
    sums[...] = np.bincount(flat, weights=values.ravel().astype(np.float64),
                            minlength=n + 1)[1:]


def _hull(pts):
    """Convex hull (monotone chain, collinear points dropped) of int points sorted by (y, x),
    counter-clockwise in (y, x) order; one point for a single point."""
    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    if len(pts) == 1:
        return pts
    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def _min_rect(hull):
    h = np.asarray(hull, np.float64)
    if len(h) == 1:
        return h[0, 0], h[0, 1], 0.0, 0.0, 0.0
    best = None
    for i in range(len(h)):
        d = h[(i + 1) % len(h)] - h[i]
        norm = np.hypot(d[0], d[1])
        ux, uy = d[0] / norm, d[1] / norm
        pu = h[:, 0] * ux + h[:, 1] * uy
        pv = h[:, 1] * ux - h[:, 0] * uy           # along the normal (-uy, ux)
        u0, u1, v0, v1 = pu.min(), pu.max(), pv.min(), pv.max()
        area = (u1 - u0) * (v1 - v0)
        if best is None or area < best[0] * (1.0 - AREA_RTOL):
            best = (area, ux, uy, u0, u1, v0, v1)
    _, ux, uy, u0, u1, v0, v1 = best
    cu, cv = 0.5 * (u0 + u1), 0.5 * (v0 + v1)
    return cu * ux - cv * uy, cu * uy + cv * ux, u1 - u0, v1 - v0, np.arctan2(uy, ux)


def min_area_rects(labels, rects):
    """The hull of a region is that of the two ends of its horizontal runs (a run is cut
    where the label changes), so only those points go through the hull."""
    n = len(rects)
    h, w = labels.shape
    d = np.diff(labels, axis=1, prepend=0, append=0) != 0
    ys, xs = np.nonzero((d[:, :-1] | d[:, 1:]) & (labels != 0))     # run starts and ends
    lab = labels[ys, xs]
    order = np.lexsort((xs, ys, lab))            # by region, raster order inside each
    starts = np.searchsorted(lab[order], np.arange(1, n + 2))
    for k in range(n):
        idx = order[starts[k]:starts[k + 1]]
        pts = [(int(x), int(y)) for x, y in zip(xs[idx], ys[idx])]
        rects[k] = _min_rect(_hull(pts)) if pts else np.nan     # a label with no pixel
