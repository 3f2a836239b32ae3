"""NumPy reference of the pooling kernels (ONNX MaxPool-12, AveragePool-19, GlobalAveragePool-1,
GlobalMaxPool-1; NCHW, 2-D), with onnxruntime's semantics where the spec is loose.

The public wrapper (``edgedl.kernels.pooling``) validates the arguments, resolves ``auto_pad``
and ``ceil_mode`` into explicit pads and an output shape, and allocates ``out``; these functions
fill ``out`` (N, C, OH, OW). Window ``(oh, ow)`` reads rows ``oh*sh - pt + i*dh`` (i < kh) and
columns ``ow*sw - pl + j*dw`` (j < kw); taps outside the image are padding.

- max: the maximum of the in-image taps; NaN propagates (a window holding a NaN gives NaN);
  a window with no in-image tap gives the lowest finite value (as onnxruntime).
- average: the sum of the in-image taps divided by their number (``count_include_pad`` False),
  or by the number of taps inside the padded extent ``[-pt, H + pb)`` x ``[-pl, W + pr)``
  (True; a ceil-mode window that runs past the bottom/right padding counts fewer taps, as
  onnxruntime does); 0 for a window with no in-image tap. (SAME_* with kernel < stride can
  resolve to a negative end pad: the wrapper then crops x so the end pad here is 0, which is
  onnxruntime's AveragePool behaviour.)

NaN/inf note: onnxruntime's own max results for NaN inputs depend on its code path (MLAS
float32 vs the generic loops) and on the NaN's position in the window; edgedl always
propagates NaN, and treats -inf as a value (a window of -inf gives -inf).
"""
import numpy as np


def _tap_range(n_in, n_out, stride, off):
    """[lo, hi): outputs o < n_out whose tap reads o*stride + off inside [0, n_in)."""
    lo = 0 if off >= 0 else min(n_out, (-off + stride - 1) // stride)
    last = n_in - 1 - off
    hi = 0 if last < 0 else min(n_out, last // stride + 1)
    return lo, max(lo, hi)


def _axis_counts(n_in, n_out, k, stride, pad_begin, pad_end, dil):
    """Per output index: number of in-image taps, and of taps inside the padded extent."""
    valid = np.zeros(n_out, dtype=np.int64)
    for i in range(k):
        lo, hi = _tap_range(n_in, n_out, stride, i * dil - pad_begin)
        valid[lo:hi] += 1
    start = np.arange(n_out) * stride - pad_begin
    taps = start[:, None] + np.arange(k) * dil
    padded = ((taps >= -pad_begin) & (taps < n_in + pad_end)).sum(axis=1)
    return valid, padded


def _accumulate(x, kernel_shape, strides, pads, dilations, out, op):
    """out[..., r, c] = op(out, x at tap) for every tap of every window, skipping padding."""
    n, c, h, w = x.shape
    oh, ow = out.shape[2:]
    for i in range(kernel_shape[0]):
        roff = i * dilations[0] - pads[0]
        r0, r1 = _tap_range(h, oh, strides[0], roff)
        if r1 <= r0:
            continue
        for j in range(kernel_shape[1]):
            coff = j * dilations[1] - pads[1]
            c0, c1 = _tap_range(w, ow, strides[1], coff)
            if c1 <= c0:
                continue
            src = x[:, :, r0 * strides[0] + roff:(r1 - 1) * strides[0] + roff + 1:strides[0],
                    c0 * strides[1] + coff:(c1 - 1) * strides[1] + coff + 1:strides[1]]
            dst = out[:, :, r0:r1, c0:c1]
            with np.errstate(invalid="ignore"):     # inf + -inf = NaN is the right answer
                op(dst, src, out=dst)


def max_pool2d(x, kernel_shape, strides, pads, dilations, out):
    """ONNX MaxPool on x (N, C, H, W) into out (N, C, OH, OW); pads (top, left, bottom, right)."""
    h, w = x.shape[2:]
    oh, ow = out.shape[2:]
    out[...] = -np.inf
    _accumulate(x, kernel_shape, strides, pads, dilations, out, np.maximum)
    vh, _ = _axis_counts(h, oh, kernel_shape[0], strides[0], pads[0], pads[2], dilations[0])
    vw, _ = _axis_counts(w, ow, kernel_shape[1], strides[1], pads[1], pads[3], dilations[1])
    empty = (vh[:, None] == 0) | (vw[None, :] == 0)
    out[:, :, empty] = np.finfo(out.dtype).min
    return out


def avg_pool2d(x, kernel_shape, strides, pads, dilations, count_include_pad, out):
    """ONNX AveragePool (opset 19: with dilations) on x (N, C, H, W) into out (N, C, OH, OW)."""
    h, w = x.shape[2:]
    oh, ow = out.shape[2:]
    out[...] = 0
    _accumulate(x, kernel_shape, strides, pads, dilations, out, np.add)
    vh, ph = _axis_counts(h, oh, kernel_shape[0], strides[0], pads[0], pads[2], dilations[0])
    vw, pw = _axis_counts(w, ow, kernel_shape[1], strides[1], pads[1], pads[3], dilations[1])
    valid = vh[:, None] * vw[None, :]
    div = ph[:, None] * pw[None, :] if count_include_pad else valid
    div = np.where(valid > 0, div, 1).astype(out.dtype)
    out /= div
    return out


def global_avg_pool2d(x, out):
    """ONNX GlobalAveragePool: out (N, C, 1, 1) = mean of each (H, W) plane."""
    out[...] = np.mean(x, axis=(2, 3), keepdims=True, dtype=np.float64).astype(out.dtype)
    return out


def global_max_pool2d(x, out):
    """ONNX GlobalMaxPool: out (N, C, 1, 1) = max of each (H, W) plane (NaN propagates)."""
    out[...] = np.max(x, axis=(2, 3), keepdims=True)
    return out
