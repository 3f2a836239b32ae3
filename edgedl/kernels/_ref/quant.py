"""NumPy reference of the int8 kernels (ONNX QuantizeLinear-10/13/19/21, DequantizeLinear,
QLinearConv-10, ConvInteger-10, QLinearMatMul-10/21, MatMulInteger-10).

The public wrapper (``edgedl.kernels.quant``) validates and broadcasts every argument, so these
take plain arrays: per-channel parameters are 1-D along axis 1 of an (A, C, B) view, zero
points are int32. Rounding is onnxruntime's: a float32 value, round half to even, saturate.

- ``quantize_linear``: out = sat(rint(x / scale[c]) + zp[c]), x / scale in float32 (NaN
  gives the lowest value, as onnxruntime's clamp does).
- ``dequantize_linear``: out = float32(x - zp[c]) * scale[c].
- ``im2col_q``: one image (C, H, W) of 8-bit ints -> columns (C*kh*kw, OH*OW); the padding
  holds ``fill`` (the input zero point, so that it adds nothing once zp is subtracted).
- ``qgemm``: acc (M, N) int32 = sum_k (a[m,k] - a_zp[m]) * (b[k,n] - b_zp[n]); a conv is
  this GEMM of its (M, C*kh*kw) weights with the im2col columns.
- ``qgemm_requant``: out (M, N) 8-bit = requantize(wd @ b + corr[m]) with wd (M, K) int16
  the weights minus their zero points and b the raw 8-bit columns (corr holds the bias minus
  b's zero point times wd's row sums): a QLinearConv's GEMM and requantization in one call.
- ``qdepthwise_requant``: qdepthwise, then requantize (bias, scale per channel) into out
  (C, OH, OW) 8-bit: a depthwise QLinearConv in one call.
- ``qdepthwise``: the direct depthwise conv (group == C == M) into int32.
- ``requantize``: out = sat(rint(float32(acc + bias[c]) * scale[c]) + zp).
- ``lookup``: out[i] = table[x[i] as uint8] (a 256-entry table: activations of quantized
  values, and the requantization of QLinearConcat's inputs).
- ``channel_lookup``: out[n, c, p] = tables[c, x[n, c, p]] (x the bits of 8-bit values as
  uint8, one 256-entry table per channel: a chain of per-channel float ops between a
  DequantizeLinear and a QuantizeLinear, evaluated at load on all 256 values of each channel).
- ``lookup2``: out[i] = table[a[i] * 256 + b[i]], bits as uint8 (a 65536-entry table: the
  com.microsoft QLinearAdd / QLinearMul of two 8-bit tensors).
- ``qbinary``: those two ops value by value in float32 (kernels.quant.qlinear_binary's
  arithmetic): add out = sat(rint((fixed + a * ra) + b * rb)), mul out = sat(rint((a - za) *
  (b - zb) * ra) + zc); a, b, out 1-D of one 8-bit type.

The integer products are summed here as float64 through NumPy's BLAS: every partial sum of
8-bit products stays far below 2**53, so the result is exact (and fast enough to check
whole models against).
"""
import numpy as np

from .conv import _taps


def _limits(dtype):
    info = np.iinfo(dtype)
    return info.min, info.max


def quantize_linear(x, scale, zero_point, out):
    """x float (A, C, B), scale float32 (C,), zero_point int32 (C,) -> out int8/uint8 (A, C, B)."""
    lo, hi = _limits(out.dtype)
    z = zero_point[None, :, None].astype(np.float32)
    v = x.astype(np.float32) / scale[None, :, None]
    # clamp to [lo - z, hi - z] first, as onnxruntime does: fmax sends NaN to the low end
    v = np.fmin(np.fmax(v, np.float32(lo) - z), np.float32(hi) - z)
    out[...] = (np.rint(v) + z).astype(out.dtype)


def dequantize_linear(x, scale, zero_point, out):
    """x int (A, C, B), scale float32 (C,), zero_point int32 (C,) -> out float32 (A, C, B)."""
    d = x.astype(np.int64) - zero_point[None, :, None]
    out[...] = d.astype(np.float32) * scale[None, :, None]


def im2col_q(x, fill, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):
    """x (C, H, W) -> cols (C*kh*kw, oh*ow) of x's dtype; padding = fill."""
    c, h, w = x.shape
    cols4 = cols.reshape(c, kh, kw, oh, ow)
    cols4[...] = fill
    for i, (r0, r1, roff) in enumerate(_taps(h, oh, kh, sh, ph, dh)):
        for j, (c0, c1, coff) in enumerate(_taps(w, ow, kw, sw, pw, dw)):
            if r1 > r0 and c1 > c0:
                cols4[:, i, j, r0:r1, c0:c1] = x[:, r0 * sh + roff:(r1 - 1) * sh + roff + 1:sh,
                                                 c0 * sw + coff:(c1 - 1) * sw + coff + 1:sw]


def qgemm(a, a_zp, b, b_zp, acc):
    """a (M, K), b (K, N) 8-bit ints; a_zp (M,), b_zp (N,) int32 -> acc (M, N) int32."""
    af = a.astype(np.float64) - a_zp[:, None]
    bf = b.astype(np.float64) - b_zp[None, :]
    acc[...] = (af @ bf).astype(np.int32)


def qgemm_requant(wd, corr, scale, zero_point, b, out):
    """wd (M, K) int16, corr (M,) int32, scale (M,) float32, b (K, N) 8-bit -> out (M, N)."""
    acc = (wd.astype(np.float64) @ b.astype(np.float64)).astype(np.int64).astype(np.int32)
    requantize(acc[None], corr, scale, zero_point, out[None])


def qgemm_pack(wd):
    """wd (M, K) int16 -> the weights as qgemm_requant_packed takes them, laid out once per
    plan (the Cython twin makes its kernels' int8 / int16 rows; here: wd itself)."""
    return wd


def qgemm_requant_packed(pk, corr, scale, zero_point, b, out, tables=None):
    """qgemm_requant with weights from qgemm_pack; tables (M, 256) uint8 (the bits of the
    output type): then out[i] = tables[i][out[i]] (an 8-bit activation after it)."""
    qgemm_requant(pk, corr, scale, zero_point, b, out)
    if tables is not None:
        o8 = out.view(np.uint8).reshape(1, out.shape[0], -1)
        channel_lookup(o8, tables, o8)


def qdepthwise(x, x_zp, w, w_zp, sh, sw, ph, pw, dh, dw, acc):
    """x (C, H, W), w (C, kh, kw) 8-bit ints, x_zp int, w_zp (C,) int32 -> acc (C, OH, OW)
    int32 = sum over taps of (x - x_zp) * (w - w_zp[c]), padding contributing 0."""
    c, h, wd = x.shape
    _, kh, kw = w.shape
    oh, ow = acc.shape[1:]
    xs = x.astype(np.int64) - x_zp
    ws = w.astype(np.int64) - w_zp[:, None, None]
    tot = np.zeros(acc.shape, np.int64)
    for i, (r0, r1, roff) in enumerate(_taps(h, oh, kh, sh, ph, dh)):
        for j, (c0, c1, coff) in enumerate(_taps(wd, ow, kw, sw, pw, dw)):
            if r1 > r0 and c1 > c0:
                tot[:, r0:r1, c0:c1] += ws[:, i, j, None, None] * xs[
                    :, r0 * sh + roff:(r1 - 1) * sh + roff + 1:sh,
                    c0 * sw + coff:(c1 - 1) * sw + coff + 1:sw]
    acc[...] = tot.astype(np.int32)


def qdepthwise_requant(x, x_zp, w, w_zp, sh, sw, ph, pw, dh, dw, bias, scale, zero_point,
                       out, tables=None):
    """qdepthwise into int32, then requantize: out (C, OH, OW) uint8/int8; then (tables
    (C, 256) uint8) plane c through table c."""
    acc = np.empty(out.shape, np.int32)
    qdepthwise(x, x_zp, w, w_zp, sh, sw, ph, pw, dh, dw, acc)
    c = out.shape[0]
    requantize(acc.reshape(1, c, -1), bias, scale, zero_point, out.reshape(1, c, -1))
    if tables is not None:
        o8 = out.view(np.uint8).reshape(1, c, -1)
        channel_lookup(o8, tables, o8)


def requantize(acc, bias, scale, zero_point, out):
    """acc int32 (A, C, B), bias int32 (C,), scale float32 (C,), zero_point int ->
    out int8/uint8 (A, C, B)."""
    lo, hi = _limits(out.dtype)
    v = (acc.astype(np.int64) + bias[None, :, None]).astype(np.int32).astype(np.float32)
    q = np.rint(v * scale[None, :, None]) + np.float32(zero_point)
    out[...] = np.clip(q, lo, hi).astype(out.dtype)


def lookup(x, table, out):
    """x 1-D int8/uint8, table (256,) indexed by x's bits as uint8 -> out 1-D (table's dtype)."""
    out[...] = table[x.view(np.uint8)]


def channel_lookup(x, tables, out):
    """x (N, C, P) uint8 (the bits of 8-bit values), tables (C, 256) -> out (N, C, P)."""
    out[...] = tables[np.arange(x.shape[1])[None, :, None], x]


def qbinary(a, b, mul, ra, rb, fixed, za, zb, zc, lo, hi, out):
    f32 = np.float32
    if not mul:
        v = (f32(fixed) + a.astype(f32) * f32(ra)) + b.astype(f32) * f32(rb)
        out[...] = np.clip(np.rint(v), lo, hi)
        return
    v = (a.astype(f32) - f32(za)) * (b.astype(f32) - f32(zb)) * f32(ra)
    out[...] = np.clip(np.rint(v) + f32(zc), lo, hi)


def lookup2(a, b, table, out):
    """a, b 1-D uint8 (the bits of 8-bit values), table (65536,) -> out 1-D (table's dtype)."""
    out[...] = table[a.astype(np.intp) * 256 + b]


def qavg_pool2d(x, y0, ny, pl, kw, sw, dh, dw, corr, mult, zero_point, out):
    """x 8-bit (P, H, W); output row oy sums input rows y0[oy] + i*dh (i < ny[oy]), output
    column ox the columns ox*sw - pl + j*dw (j < kw) inside the image; out (P, OH, OW) of
    x's type = sat(rint(float32(sum - corr[oy, ox]) * mult[oy, ox]) + zero_point): the
    integer QLinearAveragePool. The window sums as 0/1 selection matrices around x."""
    lo, hi = _limits(out.dtype)
    h, w = x.shape[1:]
    oh, ow = mult.shape
    rows = np.zeros((oh, h), np.int64)
    cols = np.zeros((ow, w), np.int64)
    for oy in range(oh):
        rows[oy, y0[oy] + dh * np.arange(ny[oy])] = 1
    for ox in range(ow):
        c = ox * sw - pl + dw * np.arange(kw)
        cols[ox, c[(c >= 0) & (c < w)]] = 1
    acc = rows[None] @ x.astype(np.int64) @ cols.T[None]
    v = (acc - corr[None]).astype(np.float32) * mult[None]
    z = np.float32(zero_point)
    v = np.fmin(np.fmax(v, np.float32(lo) - z), np.float32(hi) - z)
    out[...] = (np.rint(v) + z).astype(out.dtype)
