"""NumPy reference of the layout kernels: moving axes of a tensor in memory (ONNX Transpose).

The public wrapper (``edgedl.kernels.layout``) validated the arguments; this assumes them:

- ``swap_axes(x, out)``: x (B, R, C) and out (B, C, R), both C-contiguous, of one dtype (any:
  the wrapper passes unsigned integers of the element size, the values' bits), not
  overlapping: out[b, c, r] = x[b, r, c]. Every transpose that keeps a leading run of axes
  and rotates the rest (NCHW -> NHWC (0, 2, 3, 1), NHWC -> NCHW, (0, 2, 1), a 2-D .T) is this
  on a reshaped view.
"""
import numpy as np


def swap_axes(x, out):
    np.copyto(out, x.transpose(0, 2, 1))
