"""NumPy reference of the resize kernels (ONNX Resize-10/11/13/18/19 on the last two axes).

The public wrapper (``edgedl.kernels.resize``) turns the ONNX attributes into per-axis
tables (coordinate transform, nearest rounding, linear/cubic weights); these kernels only
gather and blend with them, on x (N, C, H, W) -> out (N, C, OH, OW):

- ``resize_nearest``: out[..., o, p] = x[..., ih[o], iw[p]].
- ``resize_taps``: separable filter, out[..., o, p] = sum_a sum_b wh[o, a] * ww[p, b] *
  x[..., ih[o, a], iw[p, b]] (linear: 2 taps, cubic: 4 taps).
"""
import numpy as np


def resize_nearest(x, ih, iw, out):
    """out (N, C, OH, OW) = x[:, :, ih[:, None], iw[None, :]] (ih, iw int64)."""
    out[...] = x[:, :, ih[:, None], iw[None, :]]


def resize_taps(x, ih, wh, iw, ww, out):
    """Separable resize: rows then columns. ih/wh (OH, K) and iw/ww (OW, K)."""
    # rows: x[:, :, ih] is (N, C, OH, K, W) -> (N, C, OH, W)
    rows = np.einsum("ok,ncokw->ncow", wh, x[:, :, ih, :])
    # columns: rows[..., iw] is (N, C, OH, OW, K) -> (N, C, OH, OW)
    out[...] = np.einsum("pk,ncopk->ncop", ww, rows[..., iw])


def resize_linear_u8(x, ih, wh, iw, ww, chan, a, b, out):
    """Bilinear resize of an H×W×C uint8 image straight to float planes, for image inputs.

    out[c, o, p] = a[c] * sum_j sum_k wh[o, j] * ww[p, k] * x[ih[o, j], iw[p, k], chan[c]]
    + b[c]: 2 taps per axis (ih/wh (OH, 2), iw/ww (OW, 2)), output channel c read from input
    channel ``chan[c]`` (RGB -> BGR), an affine per channel (scale, mean, std); ``out``
    (C', OH, OW) float, any strides.
    """
    f = x.astype(out.dtype)
    rows = f[ih[:, 0]] * wh[:, 0, None, None] + f[ih[:, 1]] * wh[:, 1, None, None]
    cols = rows[:, iw[:, 0]] * ww[None, :, 0, None] + rows[:, iw[:, 1]] * ww[None, :, 1, None]
    out[...] = (cols[:, :, chan] * a + b).transpose(2, 0, 1)
