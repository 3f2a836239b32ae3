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


def _neighbours(connectivity):
    """Offsets (dy, dx) of the neighbours of a pixel."""
    four = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    return four if connectivity == 4 else four + [(-1, -1), (-1, 1), (1, -1), (1, 1)]


def _shifted(a, dy, dx, fill):
    """b[y, x] = a[y + dy, x + dx], ``fill`` outside."""
    h, w = a.shape
    b = np.full_like(a, fill)
    b[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)] = \
        a[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    return b


def label_regions(mask, connectivity, labels):
    """Each on pixel takes the smallest flat index (+1) of its component, by propagating the
    minimum to neighbours and jumping through labels until nothing changes; then those
    representatives are renumbered 1..n in raster order."""
    on = mask != 0
    h, w = on.shape
    big = np.iinfo(np.int64).max
    lab = np.where(on, np.arange(1, h * w + 1, dtype=np.int64).reshape(h, w), big)
    while True:
        new = lab.copy()
        for dy, dx in _neighbours(connectivity):
            np.minimum(new, _shifted(lab, dy, dx, big), out=new, where=on)
        flat = new.ravel()
        new[on] = flat[new[on] - 1]          # a label names a pixel of the same component
        if np.array_equal(new, lab):
            break
        lab = new
    reps = np.unique(lab[on])                # ascending = raster order of first pixels
    labels[...] = 0
    labels[on] = (np.searchsorted(reps, lab[on]) + 1).astype(np.int32)
    return len(reps)


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
    n = len(rects)
    ys, xs = np.nonzero(labels)                 # raster order
    lab = labels[ys, xs]
    order = np.argsort(lab, kind="stable")      # by region, raster order inside each
    starts = np.searchsorted(lab[order], np.arange(1, n + 2))
    for k in range(n):
        idx = order[starts[k]:starts[k + 1]]
        pts = [(int(x), int(y)) for x, y in zip(xs[idx], ys[idx])]
        rects[k] = _min_rect(_hull(pts)) if pts else np.nan     # a label with no pixel
