"""Layout kernels: moving a tensor's axes in memory (ONNX Transpose).

``transpose(x, perm)`` is NumPy's ``np.transpose`` made contiguous. A permutation that keeps a
leading run of axes and rotates the others (NCHW -> NHWC ``(0, 2, 3, 1)``, back ``(0, 3, 1,
2)``, ``(0, 2, 1)``, a matrix's ``(1, 0)``: what detector heads and channel shuffles do) is one
batched 2-D transpose of a reshaped view, which the twins copy tile by tile; other
permutations, object arrays and strided inputs take NumPy's copy. Semantics in
``edgedl.kernels._ref.layout``.
"""
import math

import numpy as np

from .. import _config, _validate as V
from ..errors import DTypeError, ShapeError, ValidationError
from . import _dispatch

__all__ = ["transpose", "transpose_plan", "moves_no_data"]

_FAMILY = "layout"
_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _perm(perm, ndim):
    """perm as a tuple (None: the axes reversed), checked to be a permutation of ndim axes."""
    if perm is None:
        return tuple(range(ndim - 1, -1, -1))
    try:
        p = tuple(int(a) for a in perm)
    except (TypeError, ValueError):
        raise ValidationError(f"perm must be a sequence of axes, got {perm!r}") from None
    if sorted(p) != list(range(ndim)):
        raise ValidationError(f"perm must be a permutation of the {ndim} axes 0..{ndim - 1}, "
                              f"got {list(p)}")
    return p


def _split(shape, perm):
    """(B, R, C) when perm keeps axes 0..a-1 and moves b..n-1 before a..b-1 (a < b < n), so
    that the transpose is (B, R, C) -> (B, C, R) of the reshaped array; else None."""
    n = len(perm)
    a = 0
    while a < n and perm[a] == a:
        a += 1
    if a >= n - 1:
        return None
    b = perm[a]
    if perm[a:] != tuple(range(b, n)) + tuple(range(a, b)):
        return None
    # math.prod: a NumPy reduction costs microseconds, more than a head's copy
    return math.prod(shape[:a]), math.prod(shape[a:b]), math.prod(shape[b:])


def moves_no_data(shape, perm):
    """Whether the transpose keeps the order of every axis longer than 1: then it is a
    reshape, a view of the same memory ((1, 1, H, W) -> (1, H, W, 1): a one-channel head)."""
    kept = [a for a in perm if shape[a] != 1]
    return kept == sorted(kept)


def _fast(dtype, split):
    """Whether the twins' swap_axes takes it (a rotation, plain values of 1-8 bytes)."""
    return split is not None and dtype.itemsize in _BITS and not dtype.hasobject


def transpose(x, perm=None, out=None, backend=None):
    """ONNX Transpose: x's axes in the order ``perm`` (None: reversed), as a new C-contiguous
    array, or written into ``out`` (C-contiguous, the permuted shape, x's dtype)."""
    if not isinstance(x, np.ndarray):
        raise DTypeError(f"x must be a NumPy array, got {type(x).__name__}")
    p = _perm(perm, x.ndim)
    oshape = tuple(x.shape[a] for a in p)
    if out is None:
        y = np.empty(oshape, x.dtype)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != x.dtype:
            raise DTypeError(f"out must be a NumPy array of x's dtype {x.dtype}")
        if out.shape != oshape:
            raise ShapeError(f"out must have shape {oshape}, got {out.shape}")
        if not out.flags.writeable:
            raise ValidationError("out is read-only")
        y = out
    split = _split(x.shape, p)
    if (y.size and _fast(x.dtype, split) and x.flags.c_contiguous and y.flags.c_contiguous
            and (out is None or not np.may_share_memory(x, y))):
        bits = _BITS[x.dtype.itemsize]
        _dispatch.impl(_FAMILY, "swap_axes", backend)(x.reshape(split).view(bits),
                                                      y.reshape(split[0], split[2],
                                                                split[1]).view(bits))
    else:
        np.copyto(y, x.transpose(p) if not np.may_share_memory(x, y) else
                  x.transpose(p).copy())
    return y


def transpose_plan(x_shape, perm, dtype, backend=None):
    """transpose prepared once for a fixed input shape and dtype (the ONNX runtime's
    planner): returns ``run(x, out=None)`` (``out``, when given, a C-contiguous array of
    ``run.out_shape`` and x's dtype not overlapping x: not checked, this is the fast path),
    and ``run.bound``, the Cython one-call form (SwapAxes) where it applies, else None."""
    x_shape = V.int_tuple(x_shape, "x_shape", len(tuple(x_shape)), lo=0)
    dtype = np.dtype(dtype)
    p = _perm(perm, len(x_shape))
    oshape = tuple(x_shape[a] for a in p)
    split = _split(x_shape, p)
    fast = _fast(dtype, split)

    def run(x, out=None):
        if x.shape != x_shape or x.dtype != dtype:
            raise ShapeError(f"x must have shape {x_shape} and dtype {dtype} (as planned), "
                             f"got {x.shape} {x.dtype}")
        y = np.empty(oshape, dtype) if out is None else out
        if fast and x.flags.c_contiguous and y.size:
            bits = _BITS[dtype.itemsize]
            _dispatch.impl(_FAMILY, "swap_axes", backend)(
                x.reshape(split).view(bits), y.reshape(split[0], split[2], split[1]).view(bits))
        else:
            np.copyto(y, x.transpose(p))
        return y
    run.out_shape = oshape
    run.bound = None
    if fast and _config.resolve_backend(backend) == "cython":
        fmt = memoryview(np.empty(1, dtype)).format.encode()
        run.bound = _dispatch.twin_module(_FAMILY, "cython").SwapAxes(
            x_shape, oshape, fmt, dtype.itemsize, *split)
    return run


def _warmup(backend):
    """Compile / load the kernel once (``edgedl.warmup``): float32 NCHW -> NHWC."""
    transpose(np.zeros((1, 3, 2, 2), np.float32), (0, 2, 3, 1), backend=backend)
