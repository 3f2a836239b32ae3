"""ONNX Resize (opsets 10-19) on the last two axes of NCHW arrays.

The coordinate transform, rounding and filter weights are per-axis tables computed here in
NumPy (O(OH + OW)); the twins only gather / blend with them (O(N C OH OW)).
"""
import numbers

import numpy as np

from .. import _config, _validate as V
from ..errors import DTypeError, ShapeError, ValidationError
from . import _dispatch

__all__ = ["resize2d", "resize2d_plan", "resize_taps", "resize_linear_u8", "COORDINATE_MODES",
           "NEAREST_MODES", "MODES"]

MODES = ("nearest", "linear", "cubic")
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                    "align_corners", "asymmetric", "tf_half_pixel_for_nearest",
                    "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def source_coords(n_out, n_in, scale, mode, roi=(0.0, 1.0)):
    """Input coordinate of each output index along one axis (ONNX Resize).

    Computed in float32 like onnxruntime, so that ties (x.5 for rounding, integers for
    floor/ceil) fall the same way as there.
    """
    f = np.float32
    o = np.arange(n_out, dtype=f)
    scale, n_in_f, n_out_f, half = f(scale), f(n_in), f(n_out), f(0.5)
    if mode == "half_pixel":
        return (o + half) / scale - half
    if mode == "half_pixel_symmetric":
        adjustment = n_out_f / (scale * n_in_f)
        offset = n_in_f / f(2) * (f(1) - adjustment)
        return offset + ((o + half) / scale - half)
    if mode == "pytorch_half_pixel":
        return (o + half) / scale - half if n_out > 1 else np.zeros(n_out, f)
    if mode == "align_corners":
        return o * f(n_in - 1) / f(n_out - 1) if n_out > 1 else np.zeros(n_out, f)
    if mode == "asymmetric":
        return o / scale
    if mode == "tf_half_pixel_for_nearest":
        return (o + half) / scale
    # tf_crop_and_resize
    start, end = f(roi[0]), f(roi[1])
    if n_out > 1:
        return start * f(n_in - 1) + o * (end - start) * f(n_in - 1) / f(n_out - 1)
    return np.full(n_out, half * (start + end) * f(n_in - 1), f)


def nearest_index(xs, n_in, nearest_mode):
    """Round source coordinates to input indices (clamped to [0, n_in - 1])."""
    if nearest_mode == "round_prefer_floor":
        idx = np.ceil(xs - 0.5)
    elif nearest_mode == "round_prefer_ceil":
        idx = np.floor(xs + 0.5)
    elif nearest_mode == "floor":
        idx = np.floor(xs)
    else:
        idx = np.ceil(xs)
    return np.clip(idx, 0, n_in - 1).astype(np.int64)


def linear_taps(xs, n_in):
    """(indices (n, 2), weights (n, 2)) of linear interpolation, edge-clamped."""
    xs = np.clip(xs, 0, n_in - 1)
    i0 = np.floor(xs)
    t = xs - i0
    i0 = i0.astype(np.int64)
    idx = np.stack([i0, np.minimum(i0 + 1, n_in - 1)], axis=1)
    return idx, np.stack([1 - t, t], axis=1)


def cubic_taps(xs, n_in, a=-0.75, exclude_outside=False):
    """(indices (n, 4), weights (n, 4)) of the Keys cubic filter with coefficient ``a``."""
    i0 = np.floor(xs)
    t = xs - i0
    d = np.abs(np.stack([t + 1, t, 1 - t, 2 - t], axis=1))
    w = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                 np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
    raw = i0.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :]
    if exclude_outside:
        w = np.where((raw < 0) | (raw >= n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1, total)   # 0 only far outside (tf_crop_and_resize)
    return np.clip(raw, 0, n_in - 1), w


def _roi_hw(roi):
    if roi is None:
        return (0.0, 1.0), (0.0, 1.0)
    r = np.asarray(roi, dtype=np.float64).reshape(-1)
    if r.size == 8:            # ONNX roi of a rank-4 tensor: starts then ends of all axes
        r = r[[2, 3, 6, 7]]
    if r.size != 4 or not np.isfinite(r).all():
        raise ValidationError(f"roi must hold 4 finite values (start_h, start_w, end_h, end_w) "
                              f"or the 8 of an ONNX rank-4 roi, got {roi!r}")
    return (r[0], r[2]), (r[1], r[3])


#: the 8-bit types resize2d_plan's nearest mode takes besides the float ones
_COPY_DTYPES = (np.dtype(np.uint8), np.dtype(np.int8))
_TABLES = {}      # call signature -> validated tables (a model resizes the same way each run)
_TABLES_MAX = 256


def _tables(hw, out_hw, mode, ct, nearest_mode, cubic_coeff_a, exclude_outside,
            extrapolation_value, scales_hw, roi, dtype):
    """Validate the attributes and build the index / weight tables of one resize."""
    oh, ow = V.int_tuple(out_hw, "out_hw", 2, lo=0, hi=V.MAX_GEOMETRY)
    V.choice(mode, "mode", MODES)
    V.choice(ct, "coordinate_transformation_mode", COORDINATE_MODES)
    V.choice(nearest_mode, "nearest_mode", NEAREST_MODES)
    a = V.real(cubic_coeff_a, "cubic_coeff_a")
    excl = bool(V.integer(exclude_outside, "exclude_outside", lo=0, hi=1))
    if isinstance(extrapolation_value, bool) or not isinstance(
            extrapolation_value, (numbers.Real, np.floating, np.integer)):
        raise ValidationError(f"extrapolation_value must be a real number, got "
                              f"{extrapolation_value!r}")
    ev = float(extrapolation_value)
    h, w = hw
    if (h == 0 or w == 0) and oh * ow:
        raise ShapeError(f"cannot resize an empty {h}x{w} image to {oh}x{ow}")
    if scales_hw is None:   # onnxruntime's float32 out / in
        sh = np.float32(oh) / np.float32(h) if h else 1.0
        sw = np.float32(ow) / np.float32(w) if w else 1.0
    else:
        sh, sw = (V.real(s, f"scales_hw[{i}]", lo=0, lo_open=True, hi=float(V.MAX_GEOMETRY))
                  for i, s in enumerate(scales_hw))
    roi_h, roi_w = _roi_hw(roi)
    if oh * ow == 0 or h * w == 0:
        return (oh, ow), None
    ys = source_coords(oh, h, sh, ct, roi_h)
    xs = source_coords(ow, w, sw, ct, roi_w)
    if mode == "nearest":
        tabs = (nearest_index(ys, h, nearest_mode), nearest_index(xs, w, nearest_mode))
    else:
        if mode == "linear":
            (ih, wh), (iw, ww) = linear_taps(ys, h), linear_taps(xs, w)
        else:
            (ih, wh), (iw, ww) = cubic_taps(ys, h, a, excl), cubic_taps(xs, w, a, excl)
        tabs = (np.ascontiguousarray(ih), np.ascontiguousarray(wh, dtype),
                np.ascontiguousarray(iw), np.ascontiguousarray(ww, dtype))
    outside = None
    if ct == "tf_crop_and_resize":
        outside = ((ys < 0) | (ys > h - 1), (xs < 0) | (xs > w - 1), ev)
    return (oh, ow), (tabs, outside)


def resize2d(x, out_hw, mode="nearest", coordinate_transformation_mode="half_pixel",
             nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0,
             extrapolation_value=0.0, scales_hw=None, roi=None, out=None, backend=None):
    """ONNX Resize of x (N, C, H, W) to (N, C, OH, OW), ``out_hw`` = (OH, OW).

    ``scales_hw`` are the ONNX scales; when given they (not OH/H) enter the coordinate
    transform, as ONNX specifies. ``roi`` (start_h, start_w, end_h, end_w), or the 8 values of
    an ONNX rank-4 roi, is used by tf_crop_and_resize only.
    """
    x = V.float_array(x, "x", ndim=4)
    ct = coordinate_transformation_mode
    args = (x.shape[2:], out_hw, mode, ct, nearest_mode, cubic_coeff_a, exclude_outside,
            extrapolation_value, scales_hw, roi, x.dtype)
    try:
        key = tuple(tuple(v) if type(v) is list else v for v in args)
        hit = _TABLES.get(key)
    except TypeError:           # an unhashable argument (e.g. roi as an array): no caching
        key, hit = None, None
    if hit is None:
        hit = _tables(*args)
        if key is not None:
            if len(_TABLES) >= _TABLES_MAX:
                _TABLES.clear()
            _TABLES[key] = hit
    (oh, ow), plan = hit
    n, c = x.shape[:2]
    out = V.output(out, (n, c, oh, ow), x.dtype)
    if out.size == 0:
        return out
    y = out
    if not out.flags.c_contiguous or np.may_share_memory(out, x):
        y = np.empty(out.shape, x.dtype)
    _run(x, plan, mode, backend, y)
    if y is not out:
        out[...] = y
    return out


def _run(x, plan, mode, backend, y):
    """The kernel of one resize into C-contiguous y (not overlapping x)."""
    tabs, outside = plan
    if not x.flags.c_contiguous:
        x = np.ascontiguousarray(x)
    name = "resize_nearest" if mode == "nearest" else "resize_taps"
    _dispatch.impl("resize", name, backend)(x, *tabs, y)
    if outside is not None:
        # TF CropAndResize: samples outside the image take extrapolation_value
        y[:, :, outside[0], :] = outside[2]
        y[:, :, :, outside[1]] = outside[2]


def resize2d_plan(x_shape, out_hw, mode="nearest", coordinate_transformation_mode="half_pixel",
                  nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0,
                  extrapolation_value=0.0, scales_hw=None, roi=None, dtype=np.float32,
                  backend=None):
    """resize2d prepared once for a fixed input shape (the ONNX runtime's planner): validates
    and builds the coordinate tables now; returns ``run(x, out=None)``, which only checks x's
    shape and dtype. ``out``, when given, must be a C-contiguous array of ``run.out_shape``
    and x's dtype not overlapping x (not checked: this is the fast path).
    """
    if mode == "nearest" and np.dtype(dtype) in _COPY_DTYPES and \
            coordinate_transformation_mode != "tf_crop_and_resize":
        # nearest copies values: quantized tensors resize as they are (no float extrapolation)
        x_shape, dtype = V.int_tuple(x_shape, "x_shape", 4, lo=0), np.dtype(dtype)
    else:
        x_shape, dtype = V.plan_input(x_shape, dtype)
    (oh, ow), plan = _tables(x_shape[2:], out_hw, mode, coordinate_transformation_mode,
                             nearest_mode, cubic_coeff_a, exclude_outside, extrapolation_value,
                             scales_hw, roi, dtype)
    oshape = x_shape[:2] + (oh, ow)

    def run(x, out=None):
        V.check_planned(x, x_shape, dtype)
        y = np.empty(oshape, dtype) if out is None else out
        if y.size:
            _run(x, plan, mode, backend, y)
        return y
    run.out_shape = oshape
    run.bound = _bound_nearest(x_shape, oshape, plan, mode, dtype, backend)
    return run


def _bound_nearest(x_shape, oshape, plan, mode, dtype, backend):
    """The Cython ResizeNearestF32 of a planned float32 nearest resize (``bound(x, out,
    nthreads)``, see there), or None (other modes, dtypes or backends, and TF crop-and-resize
    samples outside the image)."""
    if (plan is None or plan[1] is not None or mode != "nearest" or dtype != np.float32 or
            _config.resolve_backend(backend) != "cython"):
        return None
    ih, iw = (np.ascontiguousarray(t, np.int64) for t in plan[0])
    return _dispatch.twin_module("resize", "cython").ResizeNearestF32(
        tuple(x_shape), tuple(oshape), ih, iw)


def _taps_table(idx, wts, names, n_in, n_out, dtype, k=None):
    """A (n_out, K) tap table: int64 indices in [0, n_in) and weights of ``dtype``, both
    C-contiguous (no copy when they already are)."""
    iname, wname = names
    idx, wts = np.asarray(idx), np.asarray(wts)
    if idx.dtype.kind not in "iu":
        raise DTypeError(f"{iname} must hold integer indices, got {idx.dtype}")
    if wts.dtype != dtype:
        raise DTypeError(f"{wname} must have the output's dtype {dtype}, got {wts.dtype}")
    V.check_shape(idx, (n_out, k), iname)
    V.check_shape(wts, idx.shape, wname)
    if idx.size and (idx.min() < 0 or idx.max() >= n_in):
        raise ValidationError(f"{iname} must index [0, {n_in}), got values in "
                              f"[{idx.min()}, {idx.max()}]")
    return np.ascontiguousarray(idx, np.int64), np.ascontiguousarray(wts)


def _float_out(out, ndim):
    out = V.float_array(out, "out", ndim=ndim)
    if not out.flags.writeable:
        raise ValidationError("out is read-only")
    return out


def resize_taps(x, ih, wh, iw, ww, out, backend=None):
    """Separable resize of x (N, C, H, W) into out (N, C, OH, OW) with explicit filter taps:
    out[n, c, o, p] = sum_j sum_k wh[o, j] * ww[p, k] * x[n, c, ih[o, j], iw[p, k]], ih/wh
    (OH, K) and iw/ww (OW, K) (e.g. from :func:`linear_taps`, or an area filter's taps).
    Writes ``out`` (x's dtype) and returns it."""
    x = V.float_array(x, "x", ndim=4)
    out = _float_out(out, 4)
    V.same_dtype(x, out, "x", "out")
    V.check_shape(out, x.shape[:2] + (None, None), "out")
    ih, wh = _taps_table(ih, wh, ("ih", "wh"), x.shape[2], out.shape[2], x.dtype)
    iw, ww = _taps_table(iw, ww, ("iw", "ww"), x.shape[3], out.shape[3], x.dtype)
    if out.size == 0:
        return out
    y = out
    if not out.flags.c_contiguous or np.may_share_memory(out, x):
        y = np.empty(out.shape, x.dtype)
    _dispatch.impl("resize", "resize_taps", backend)(np.ascontiguousarray(x), ih, wh, iw, ww, y)
    if y is not out:
        out[...] = y
    return out


def resize_linear_u8(x, ih, wh, iw, ww, chan, a, b, out, backend=None):
    """Bilinear resize of an H x W x C uint8 image straight into float planes (the image
    inputs of edgedl.detect, as cv2.resize INTER_LINEAR then a per-channel affine):
    out[c, o, p] = a[c] * sum_j sum_k wh[o, j] * ww[p, k] * x[ih[o, j], iw[p, k], chan[c]]
    + b[c], with 2 taps per axis (ih/wh (OH, 2), iw/ww (OW, 2), as from :func:`linear_taps`).
    ``chan`` picks the input channel of each output plane (RGB -> BGR); ``a``, ``b`` and the
    taps' weights have out's dtype; ``out`` (C', OH, OW) float32/float64 may be strided (a
    view into a padded input). Writes ``out`` and returns it."""
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
        raise DTypeError(f"x must be a uint8 NumPy array (an H x W x C image), got "
                         f"{getattr(x, 'dtype', type(x).__name__)}")
    V.check_ndim(x, "x", ndim=3)
    out = _float_out(out, 3)
    dt = out.dtype
    ih, wh = _taps_table(ih, wh, ("ih", "wh"), x.shape[0], out.shape[1], dt, 2)
    iw, ww = _taps_table(iw, ww, ("iw", "ww"), x.shape[1], out.shape[2], dt, 2)
    chan, a, b = np.asarray(chan), np.asarray(a), np.asarray(b)
    if chan.dtype.kind not in "iu":
        raise DTypeError(f"chan must hold integer channel indices, got {chan.dtype}")
    V.check_shape(chan, (out.shape[0],), "chan")
    if chan.size and (chan.min() < 0 or chan.max() >= x.shape[2]):
        raise ValidationError(f"chan must index x's {x.shape[2]} channels, got {chan.tolist()}")
    for v, name in ((a, "a"), (b, "b")):
        if v.dtype != dt:
            raise DTypeError(f"{name} must have out's dtype {dt}, got {v.dtype}")
        V.check_shape(v, (out.shape[0],), name)
    if out.size == 0:
        return out
    _dispatch.impl("resize", "resize_linear_u8", backend)(
        np.ascontiguousarray(x), ih, wh, iw, ww, np.ascontiguousarray(chan, np.int64),
        np.ascontiguousarray(a), np.ascontiguousarray(b), out)
    return out


def _warmup(backend):
    x = np.zeros((1, 1, 3, 3), np.float32)
    resize2d(x, (6, 6), backend=backend)
    resize2d(x, (6, 6), mode="linear", backend=backend)
    # the image-input kernel of edgedl.detect (into a C-contiguous and a strided output)
    img = np.zeros((3, 3, 3), np.uint8)
    i, w = linear_taps(source_coords(6, 3, 2.0, "half_pixel"), 3)
    w = w.astype(np.float32)
    ab = np.ones(3, np.float32)
    out = np.empty((3, 6, 8), np.float32)
    chan = np.arange(3, dtype=np.int64)
    for o in (out[:, :, :6].copy(), out[:, :, :6]):
        resize_linear_u8(img, i, w, i, w, chan, ab, ab, o, backend=backend)
