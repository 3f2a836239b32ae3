"""Region kernels on 2-D maps: connected components, per-region sums and minimum-area
rectangles — what a DB text detector does with its probability map.

Semantics in ``edgedl.kernels._ref.regions`` (OpenCV's ``connectedComponents`` and
``minAreaRect`` of the pixel centres, with labels numbered in raster order so every backend
gives the same ones). The wrappers check everything once; the twins trust them.
"""
import numpy as np

from .. import _validate as V
from ..errors import DTypeError, ShapeError, ValidationError
from . import _dispatch

__all__ = ["label_regions", "region_sums", "min_area_rects", "rect_corners"]

_FAMILY = "regions"


def _kernel(name, backend):
    return _dispatch.impl(_FAMILY, name, backend)


def _mask(mask):
    if not isinstance(mask, np.ndarray):
        raise DTypeError(f"mask must be a NumPy array of bool or integers, got "
                         f"{type(mask).__name__}")
    if mask.dtype.kind not in "biu":
        raise DTypeError(f"mask must have dtype bool or an integer dtype (threshold a float "
                         f"map first), got {mask.dtype}")
    V.check_ndim(mask, "mask", ndim=2)
    if mask.dtype == np.bool_:
        return np.ascontiguousarray(mask).view(np.uint8)
    if mask.dtype == np.uint8:
        return np.ascontiguousarray(mask)
    return (mask != 0).view(np.uint8)


def _labels(labels, n):
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int32:
        got = labels.dtype if isinstance(labels, np.ndarray) else type(labels).__name__
        raise DTypeError(f"labels must be an int32 NumPy array (from label_regions), got {got}")
    V.check_ndim(labels, "labels", ndim=2)
    n = V.integer(n, "n", lo=0)
    if labels.size:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi > n:
            raise ValidationError(f"labels must lie in [0, n] = [0, {n}], got values in "
                                  f"[{lo}, {hi}]")
    return np.ascontiguousarray(labels), n


def label_regions(mask, connectivity=8, out=None, backend=None):
    """Connected components of a 2-D binary ``mask`` (bool or integers, nonzero = on).

    Returns ``(labels, n)``: labels (H, W) int32 with 0 off and 1..n per component, numbered
    in the raster order of each component's first pixel; ``connectivity`` 4 or 8 (OpenCV's
    ``connectedComponents`` up to that numbering).
    """
    m = _mask(mask)
    if m.size >= 2 ** 31 - 1:                     # labels are int32
        raise ValidationError(f"mask has {m.size} pixels; at most 2**31 - 2 can be labelled")
    connectivity = V.choice(V.integer(connectivity, "connectivity"), "connectivity", (4, 8))
    res = V.output(out, m.shape, np.int32)
    tmp = res if res.flags.c_contiguous else np.empty(m.shape, np.int32)
    if m.size == 0:
        return res, 0
    n = int(_kernel("label_regions", backend)(m, connectivity, tmp))
    if tmp is not res:
        res[...] = tmp
    return res, n


def region_sums(labels, values, n, backend=None):
    """Per region k + 1 of ``labels`` (from :func:`label_regions`, values in [0, n]): its pixel
    count (int64) and the float64 sum of ``values`` (float32/float64, labels' shape) over it.
    Returns ``(counts (n,), sums (n,))``; NaN values propagate into their region's sum."""
    labels, n = _labels(labels, n)
    values = V.float_array(values, "values", ndim=2)
    if values.shape != labels.shape:
        raise ShapeError(f"values must have the shape of labels {labels.shape}, got "
                         f"{values.shape}")
    counts, sums = np.zeros(n, np.int64), np.zeros(n, np.float64)
    if n and labels.size:
        _kernel("region_sums", backend)(labels, np.ascontiguousarray(values), counts, sums)
    return counts, sums


def min_area_rects(labels, n, backend=None):
    """Minimum-area rectangle of the pixel centres of each region of ``labels`` -> (n, 5)
    float64 rows (cx, cy, w, h, angle): x is the column, y the row, ``angle`` (radians) the
    direction of side w. One pixel gives w = h = 0, a line h = 0, a label with no pixel NaN."""
    labels, n = _labels(labels, n)
    rects = np.empty((n, 5), np.float64)
    if n:
        _kernel("min_area_rects", backend)(labels, rects)
    return rects


def rect_corners(rects):
    """(n, 5) rectangles (cx, cy, w, h, angle) -> (n, 4, 2) corners, starting at centre
    - w/2 - h/2 and going along side w first."""
    r = V.float_array(rects, "rects", ndim=2)
    if r.shape[1] != 5:
        raise ShapeError(f"rects must have shape (n, 5) (cx, cy, w, h, angle), got {r.shape}")
    c, s = np.cos(r[:, 4]), np.sin(r[:, 4])
    u = np.stack([c, s], axis=1) * (0.5 * r[:, 2:3])         # half side w
    v = np.stack([-s, c], axis=1) * (0.5 * r[:, 3:4])        # half side h
    ctr = r[:, :2]
    return np.stack([ctr - u - v, ctr + u - v, ctr + u + v, ctr - u + v], axis=1)


def _warmup(backend):
    """Compile / load the kernels once (``edgedl.warmup``): a tiny map with two regions."""
    m = np.zeros((4, 5), np.uint8)
    m[0, :2] = m[2:, 3:] = 1
    for conn in (4, 8):
        labels, n = label_regions(m, conn, backend=backend)
    region_sums(labels, np.ones(m.shape, np.float32), n, backend=backend)
    min_area_rects(labels, n, backend=backend)
