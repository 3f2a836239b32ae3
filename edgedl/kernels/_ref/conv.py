"""NumPy reference of the convolution kernels (ONNX Conv-1/11, ConvTranspose-1/11, NCHW).

The public wrapper (``edgedl.kernels.conv``) validates, resolves pads and splits a convolution
into these pieces; the numba and Cython twins implement the same functions:

- ``im2col``: one image (C, H, W) -> columns (C*kh*kw, OH*OW), zeros where the window is in
  the padding. A GEMM with the (M, C*kh*kw) weights then gives the convolution.
- ``col2im``: the adjoint, accumulated into (M, OH, OW) (ConvTranspose = GEMM + col2im).
- ``bias_act``: the fused epilogue, in place on (N, M, L): y = act(y + bias[m]).
- ``depthwise_conv2d``: direct depthwise convolution (group == C == M) with the epilogue.
- ``pack_conv_weights`` / ``conv_gemm``: a dense convolution of one image (one group) as a
  GEMM of the (M, C*kh*kw) weights with its columns, plus the epilogue. The weights are packed
  once into whatever layout the backend's GEMM reads (here: unchanged). This reference is one
  im2col and one np.matmul; the numba twin blocks and threads it (edgedl.kernels._gemm), the
  Cython twin runs its own float32 GEMM with im2col, GEMM and epilogue fused per block.

Activation codes (``act``) and their parameters ``p0, p1`` / ``slopes`` are the epilogue
codes of ``edgedl.kernels.activation_table`` (``EPILOGUE``, named ``ACT_*`` below); the wrapper
maps the public activation names onto them.
"""
import numpy as np

from ..activation_table import ACTIVATIONS, EPILOGUE, EPILOGUES
from . import activations as _acts

ACT_NONE = EPILOGUE["none"]
ACT_CLIP = EPILOGUE["clip"]                  # min(max(y, p0), p1): relu (0, inf), relu6, clip
ACT_PRELU = EPILOGUE["prelu"]                # y if y >= 0 else slopes[m] * y: leaky_relu, prelu


def _epilogue_reference(code):
    """The elementwise reference of epilogue ``code`` (hard_sigmoid, hard_swish, sigmoid,
    silu, tanh, ...): the activation's own twin in _ref.activations, with the table's fixed
    parameters for an alias (silu = swish(1.0)), and how many of (p0, p1) it takes."""
    rec = ACTIVATIONS[EPILOGUES[code]]
    name, fixed = rec.alias_of or (rec.name, None)
    return getattr(_acts, name), fixed, len(rec.params)


def _taps(n_in, n_out, k, stride, pad, dil):
    """For each tap i: (lo, hi, off) such that output o in [lo, hi) reads input o*stride + off."""
    res = []
    for i in range(k):
        off = i * dil - pad
        lo = 0 if off >= 0 else min(n_out, (-off + stride - 1) // stride)
        last = n_in - 1 - off
        hi = 0 if last < 0 else min(n_out, last // stride + 1)
        res.append((lo, max(lo, hi), off))
    return res


def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):
    """x (C, H, W) -> cols (C*kh*kw, oh*ow); row c*kh*kw + i*kw + j holds tap (i, j) of c."""
    c, h, w = x.shape
    cols4 = cols.reshape(c, kh, kw, oh, ow)
    cols4[...] = 0
    for i, (r0, r1, roff) in enumerate(_taps(h, oh, kh, sh, ph, dh)):
        for j, (c0, c1, coff) in enumerate(_taps(w, ow, kw, sw, pw, dw)):
            if r1 > r0 and c1 > c0:
                cols4[:, i, j, r0:r1, c0:c1] = x[:, r0 * sh + roff:(r1 - 1) * sh + roff + 1:sh,
                                                 c0 * sw + coff:(c1 - 1) * sw + coff + 1:sw]


def col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, ih, iw, out):
    """Adjoint of im2col: cols (M*kh*kw, ih*iw) accumulated into out (M, OH, OW).

    Input pixel (y, x) of tap (i, j) lands on output (y*sh - ph + i*dh, x*sw - pw + j*dw).
    """
    m, oh, ow = out.shape
    cols5 = cols.reshape(m, kh, kw, ih, iw)
    # an input->output map is im2col's output->input map with in/out swapped
    for i in range(kh):
        for j in range(kw):
            for y in range(ih):
                oy = y * sh - ph + i * dh
                if not 0 <= oy < oh:
                    continue
                xs = np.arange(iw) * sw - pw + j * dw
                ok = (xs >= 0) & (xs < ow)
                out[:, oy, xs[ok]] += cols5[:, i, j, y, ok]


def _activate(y, act, p0, p1, slopes):
    """act(y) for y of shape (N, M, ...) (a new array)."""
    if act == ACT_NONE:
        return y
    if act == ACT_CLIP:
        return np.minimum(np.maximum(y, p0), p1)
    if act == ACT_PRELU:
        s = slopes.reshape((1, -1) + (1,) * (y.ndim - 2))
        return np.where(y >= 0, y, y * s)
    if 0 <= act < len(EPILOGUES):
        fn, fixed, n = _epilogue_reference(act)
        out = np.empty_like(y)
        fn(y, *(fixed if fixed is not None else (p0, p1)[:n]), out)
        return out
    raise ValueError(f"unknown activation code {act}")


def bias_act(y, bias, act, p0, p1, slopes):
    """In place on y (N, M, L): y = act(y + bias[m])."""
    with np.errstate(over="ignore"):
        y[...] = _activate(y + bias[None, :, None], act, p0, p1, slopes)


def depthwise_conv2d(x, w, bias, sh, sw, ph, pw, dh, dw, act, p0, p1, slopes, out):
    """Depthwise conv: x (N, C, H, W), w (C, kh, kw) -> out (N, C, OH, OW), with epilogue."""
    n, c, h, wd = x.shape
    _, kh, kw = w.shape
    oh, ow = out.shape[2:]
    acc = np.zeros(out.shape, dtype=x.dtype)
    for i, (r0, r1, roff) in enumerate(_taps(h, oh, kh, sh, ph, dh)):
        for j, (c0, c1, coff) in enumerate(_taps(wd, ow, kw, sw, pw, dw)):
            if r1 > r0 and c1 > c0:
                acc[:, :, r0:r1, c0:c1] += w[None, :, i, j, None, None] * x[
                    :, :, r0 * sh + roff:(r1 - 1) * sh + roff + 1:sh,
                    c0 * sw + coff:(c1 - 1) * sw + coff + 1:sw]
    acc += bias[None, :, None, None]
    with np.errstate(over="ignore"):
        out[...] = _activate(acc, act, p0, p1, slopes)


def pack_conv_weights(w):
    """(M, K) weights -> the operand conv_gemm reads (here: the same array)."""
    return np.ascontiguousarray(w)


def conv_gemm(x, wp, bias, kh, kw, sh, sw, ph, pw, dh, dw, act, p0, p1, slopes, y):
    """Dense conv of one image: x (C, H, W), wp = pack_conv_weights(w (M, C*kh*kw)),
    y (M, OH, OW) = act(conv + bias[m]); all C-contiguous, y not overlapping x. Plainly
    im2col + one matmul (the fast backends block and thread it: edgedl.kernels._gemm)."""
    m, oh, ow = y.shape
    cols = np.empty((wp.shape[1], oh * ow), x.dtype)
    im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols)
    np.matmul(wp, cols, out=y.reshape(m, oh * ow))
    if act != ACT_NONE or np.any(bias):
        bias_act(y.reshape(1, m, -1), bias, act, p0, p1, slopes)
