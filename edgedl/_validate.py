"""Argument checks shared by every public wrapper.

Kernels behind the wrappers (NumPy reference, numba and Cython twins) assume their inputs are
valid; the Cython ones skip bounds checks because of it. So every check lives here, once.
Messages name the argument, what was expected and what was given.
"""
import math
import numbers
import sys

import numpy as np

from .errors import DTypeError, ShapeError, ValidationError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
#: largest stride / pad / dilation / kernel size a kernel accepts: ONNX allows any int64, but
#: the kernels index with Py_ssize_t (32 bits on armhf): each value stays far inside it, and
#: check_extent bounds what they add up to.
MAX_GEOMETRY = min(2**31 - 1, sys.maxsize // 4)
#: outputs above this size are checked against the memory limit (edgedl._memory) first
_CHECKED_BYTES = 64 << 20


def float_array(x, name="x", min_ndim=0, ndim=None):
    """``x`` as a float32/float64 ndarray (no copy); integers, complex, object are refused."""
    if not isinstance(x, np.ndarray):
        if isinstance(x, (list, tuple, numbers.Real)) and not isinstance(x, bool):
            x = np.asarray(x)
            if x.dtype.kind in "iu":
                x = x.astype(np.float64)
        else:
            raise DTypeError(f"{name} must be a NumPy array of float32 or float64, "
                             f"got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise DTypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    check_ndim(x, name, min_ndim=min_ndim, ndim=ndim)
    return x


def check_ndim(x, name, min_ndim=0, ndim=None):
    if ndim is not None and x.ndim != ndim:
        raise ShapeError(f"{name} must have rank {ndim}, got rank {x.ndim} (shape {x.shape})")
    if x.ndim < min_ndim:
        raise ShapeError(f"{name} must have rank >= {min_ndim}, got rank {x.ndim} "
                         f"(shape {x.shape})")


def check_shape(x, shape, name):
    """``shape`` may contain None for "any size"."""
    ok = x.ndim == len(shape) and all(s is None or s == d for s, d in zip(shape, x.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ShapeError(f"{name} must have shape {want}, got {x.shape}")


def same_dtype(a, b, name_a, name_b):
    if a.dtype != b.dtype:
        raise DTypeError(f"{name_a} and {name_b} must have the same dtype, got {a.dtype} "
                         f"and {b.dtype}")


def output(out, shape, dtype, name="out"):
    """A preallocated output: a new array if ``out`` is None, else ``out`` checked."""
    shape = tuple(shape)
    if out is None:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes > _CHECKED_BYTES:     # a size that came from hostile geometry: one sentence
            from ._memory import check_alloc
            check_alloc(nbytes, f"the output {name} of shape {shape} ({np.dtype(dtype)})")
        try:
            return np.empty(shape, dtype=dtype)
        except (MemoryError, ValueError):
            from .errors import ResourceError
            raise ResourceError(f"cannot allocate the output {name} of shape {shape} "
                                f"({np.dtype(dtype)}): {nbytes} bytes") from None
    if not isinstance(out, np.ndarray):
        raise DTypeError(f"{name} must be a NumPy array, got {type(out).__name__}")
    if out.shape != shape:
        raise ShapeError(f"{name} must have shape {shape}, got {out.shape}")
    if out.dtype != np.dtype(dtype):
        raise DTypeError(f"{name} must have dtype {np.dtype(dtype)}, got {out.dtype}")
    if not out.flags.writeable:
        raise ValidationError(f"{name} is read-only")
    return out


def finite(x, name):
    """Refuse NaN / inf (e.g. box coordinates)."""
    if x.size and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        raise ValidationError(f"{name} contains NaN or inf (first at index {tuple(bad)})")
    return x


def real(v, name, lo=None, hi=None, lo_open=False, hi_open=False):
    """A Python float from a real scalar, optionally within [lo, hi] (or open ends)."""
    if isinstance(v, bool) or not isinstance(v, (numbers.Real, np.floating, np.integer)):
        raise ValidationError(f"{name} must be a real number, got {type(v).__name__} {v!r}")
    v = float(v)
    if v != v:
        raise ValidationError(f"{name} must not be NaN")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValidationError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise ValidationError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {v}")
    return v


def integer(v, name, lo=None, hi=None):
    if type(v) is not int:          # the common case first: the ABC checks cost ~1 us
        if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
            raise ValidationError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
        v = int(v)
    if lo is not None and v < lo:
        raise ValidationError(f"{name} must be >= {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValidationError(f"{name} must be <= {hi}, got {v}")
    return v


def int_tuple(v, name, length, lo=None, hi=None):
    """A tuple of ``length`` Python ints (a single int is repeated), each in [lo, hi]."""
    if type(v) is int or isinstance(v, (numbers.Integral, np.integer)) and \
            not isinstance(v, bool):
        v = (int(v),) * length
    try:
        v = tuple(v)
    except TypeError:
        raise ValidationError(f"{name} must be a sequence of {length} integers, got {v!r}")
    if len(v) != length:
        raise ValidationError(f"{name} must have {length} values, got {len(v)}: {v}")
    if all(type(e) is int and (lo is None or e >= lo) and (hi is None or e <= hi) for e in v):
        return v                    # plain ints in range: nothing to convert or report
    return tuple(integer(e, f"{name}[{i}]", lo=lo, hi=hi) for i, e in enumerate(v))


def geometry(v, name, length, lo):
    """Strides, pads, dilations, kernel sizes: ``int_tuple`` within [lo, MAX_GEOMETRY]."""
    return int_tuple(v, name, length, lo=lo, hi=MAX_GEOMETRY)


def check_extent(axis, n_in, n_out, k, stride, dil, pad_begin, pad_end):
    """The span of indices a sliding-window kernel computes along one axis (every output's
    start o * stride - pad_begin plus every tap's i * dil) must fit the kernels' Py_ssize_t
    index arithmetic with room to spare (on 32-bit ARM that is 2**31): ValidationError."""
    span = (n_out - 1) * stride + (k - 1) * dil + 1 + pad_begin + pad_end + n_in
    if span > sys.maxsize // 2:
        raise ValidationError(
            f"geometry along {axis} spans {span} indices (input {n_in}, output {n_out}, kernel "
            f"{k}, stride {stride}, dilation {dil}, pads {pad_begin}/{pad_end}), more than this "
            f"platform's kernels index ({sys.maxsize // 2})")


def effective_strides(strides, out_hw, kernel_hw=None, dilations=None):
    """What the kernels are given: a stride along an axis with one output is never used
    (that output reads from offset 0), nor a dilation along a kernel of size 1; both become
    1, so that absurd values (2**31) never enter the kernels' index arithmetic or buffers."""
    st = tuple(1 if o == 1 else s for s, o in zip(strides, out_hw))
    if kernel_hw is None:
        return st
    return st, tuple(1 if k == 1 else d for d, k in zip(dilations, kernel_hw))


def choice(v, name, options):
    if v not in options:
        raise ValidationError(f"{name} must be one of {', '.join(map(repr, options))}, got {v!r}")
    return v


# ----------------------------------------------------------------------------- plans
def plan_input(x_shape, dtype):
    """A plan's fixed input (conv2d_plan, pool2d_plan, resize2d_plan): (x_shape as 4 ints
    >= 0, dtype float32 or float64)."""
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise ValidationError(f"dtype must be float32 or float64, got {dtype}")
    return int_tuple(x_shape, "x_shape", 4, lo=0), dtype


def check_planned(x, x_shape, dtype):
    """A plan's only per-call check: x has the planned shape and dtype."""
    if x.shape != x_shape or x.dtype != dtype:
        raise ShapeError(f"x must have shape {x_shape} and dtype {dtype} (as planned), got "
                         f"{x.shape} {x.dtype}")
