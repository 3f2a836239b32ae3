"""numba twins of edgedl.kernels._ref.quant (same names and arguments; see there for semantics).

Plain loops. Quantize / dequantize / requantize compile without fast-math: onnxruntime's
rounding needs the exact float32 division and product (``arcp`` would turn x / s into
x * (1 / s), one LSB off now and then). The GEMM runs row by row, each k adding one widened row of b times a scalar
into an int32 accumulator row (LLVM vectorises that inner loop), rows in parallel.
"""
import numpy as np
from numba import prange

from edgedl._config import njit


@njit
def _sat(v, lo, hi):
    return lo if v < lo else hi if v > hi else v


@njit(parallel=True, fastmath=False)
def quantize_linear(x, scale, zero_point, out):
    a, c, b = x.shape
    info = np.iinfo(out.dtype)
    lo, hi = np.float32(info.min), np.float32(info.max)
    for p in prange(a * c):
        ch = p % c
        s = np.float32(scale[ch])
        z = np.float32(zero_point[ch])
        xr = x[p // c, ch]
        yr = out[p // c, ch]
        flo, fhi = lo - z, hi - z
        for q in range(b):
            v = np.float32(xr[q]) / s
            v = v if v > flo else flo       # NaN -> the low end, as onnxruntime clamps
            v = v if v < fhi else fhi
            yr[q] = np.float32(np.rint(v)) + z


@njit(parallel=True, fastmath=False)
def dequantize_linear(x, scale, zero_point, out):
    a, c, b = x.shape
    for p in prange(a * c):
        ch = p % c
        s = np.float32(scale[ch])
        z = np.int64(zero_point[ch])
        xr = x[p // c, ch]
        yr = out[p // c, ch]
        for q in range(b):
            yr[q] = np.float32(np.int64(xr[q]) - z) * s


@njit(parallel=True)
def im2col_q(x, fill, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, cols):
    c, h, w = x.shape
    f = cols.dtype.type(fill)
    for r in prange(c * kh * kw):
        ch = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        for oy in range(oh):
            iy = oy * sh - ph + i * dh
            base = oy * ow
            if iy < 0 or iy >= h:
                for ox in range(ow):
                    cols[r, base + ox] = f
                continue
            for ox in range(ow):
                ix = ox * sw - pw + j * dw
                cols[r, base + ox] = x[ch, iy, ix] if 0 <= ix < w else f


@njit(parallel=True)
def qgemm(a, a_zp, b, b_zp, acc):
    m, k = a.shape
    n = b.shape[1]
    for i in prange(m):
        row = acc[i]
        row[:] = 0
        azp = np.int32(a_zp[i])
        # sum_k (a - azp) * b, then subtract b_zp[n] * sum_k (a - azp)
        asum = np.int32(0)
        for kk in range(k):
            av = np.int32(a[i, kk]) - azp
            asum += av
            br = b[kk]
            for q in range(n):
                row[q] += av * np.int32(br[q])
        for q in range(n):
            row[q] -= asum * np.int32(b_zp[q])


@njit(parallel=True, fastmath=False)
def qgemm_requant(wd, corr, scale, zero_point, b, out):
    m, k = wd.shape
    n = b.shape[1]
    info = np.iinfo(out.dtype)
    lo, hi = np.float32(info.min), np.float32(info.max)
    z = np.float32(zero_point)
    for i in prange(m):
        row = np.zeros(n, np.int32)
        for kk in range(k):
            wv = np.int32(wd[i, kk])
            br = b[kk]
            for q in range(n):
                row[q] += wv * np.int32(br[q])
        s = np.float32(scale[i])
        c = np.int32(corr[i])
        yr = out[i]
        for q in range(n):
            v = np.float32(np.rint(np.float32(np.int32(row[q] + c)) * s)) + z   # (wrapped)
            yr[q] = _sat(v, lo, hi)


def qgemm_pack(wd):
    """As the reference: the weights themselves (numba reads wd as it is)."""
    return wd


def qgemm_requant_packed(pk, corr, scale, zero_point, b, out, tables=None):
    qgemm_requant(pk, corr, scale, zero_point, b, out)
    if tables is not None:          # (M, 256) tables: row i through table i, in place
        o8 = out.view(np.uint8).reshape(1, out.shape[0], -1)
        channel_lookup(o8, tables, o8)


@njit(parallel=True)
def qdepthwise(x, x_zp, w, w_zp, sh, sw, ph, pw, dh, dw, acc):
    c, h, wd = x.shape
    kh, kw = w.shape[1], w.shape[2]
    oh, ow = acc.shape[1], acc.shape[2]
    xz = np.int32(x_zp)
    for ch in prange(c):
        wz = np.int32(w_zp[ch])
        for oy in range(oh):
            for ox in range(ow):
                s = np.int32(0)
                for i in range(kh):
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= h:
                        continue
                    for j in range(kw):
                        ix = ox * sw - pw + j * dw
                        if 0 <= ix < wd:
                            s += (np.int32(x[ch, iy, ix]) - xz) * (np.int32(w[ch, i, j]) - wz)
                acc[ch, oy, ox] = s


@njit(parallel=True, fastmath=False)
def requantize(acc, bias, scale, zero_point, out):
    a, c, b = acc.shape
    info = np.iinfo(out.dtype)
    lo, hi = np.float32(info.min), np.float32(info.max)
    z = np.float32(zero_point)
    for p in prange(a * c):
        ch = p % c
        s = np.float32(scale[ch])
        bi = np.int32(bias[ch])
        ar = acc[p // c, ch]
        yr = out[p // c, ch]
        for q in range(b):
            # int32 + int32 widens in numba: wrap it as the int32 sums of the other kernels
            v = np.float32(np.rint(np.float32(np.int32(ar[q] + bi)) * s)) + z
            yr[q] = _sat(v, lo, hi)


@njit
def lookup(x, table, out):
    xu = x.view(np.uint8)
    for i in range(xu.shape[0]):
        out[i] = table[xu[i]]


@njit(parallel=True)
def channel_lookup(x, tables, out):
    n, c, b = x.shape
    for p in prange(n * c):
        ch = p % c
        t = tables[ch]
        xr = x[p // c, ch]
        yr = out[p // c, ch]
        for i in range(b):
            yr[i] = t[xr[i]]


@njit
def qbinary(a, b, mul, ra, rb, fixed, za, zb, zc, lo, hi, out):
    # each float32 operation as a float64 one rounded to float32 (exact: float64 holds twice
    # float32's precision and more): LLVM fuses a float32 multiply and add into an FMA,
    # whose single rounding moved ties (123.5 -> 123.49...) against the reference
    f32 = np.float32
    ra, rb, fixed = np.float64(f32(ra)), np.float64(f32(rb)), np.float64(f32(fixed))
    za, zb, zc = np.float64(za), np.float64(zb), np.float64(zc)
    for i in range(a.shape[0]):
        if mul:
            v = np.float64(f32((np.float64(a[i]) - za) * (np.float64(b[i]) - zb)))
            v = np.rint(np.float64(f32(v * ra))) + zc
        else:
            v = np.float64(f32(fixed + np.float64(f32(np.float64(a[i]) * ra))))
            v = np.rint(np.float64(f32(v + np.float64(f32(np.float64(b[i]) * rb)))))
        out[i] = min(max(v, lo), hi)


@njit
def lookup2(a, b, table, out):
    for i in range(a.shape[0]):
        out[i] = table[np.int64(a[i]) * 256 + np.int64(b[i])]


def qdepthwise_requant(x, x_zp, w, w_zp, sh, sw, ph, pw, dh, dw, bias, scale, zero_point,
                       out, tables=None):
    _qdepthwise_requant(x, x_zp, w, w_zp, sh, sw, ph, pw, dh, dw, bias, scale, zero_point,
                        out)
    if tables is not None:          # (C, 256) tables: plane c through table c, in place
        o8 = out.view(np.uint8).reshape(1, out.shape[0], -1)
        channel_lookup(o8, tables, o8)


@njit
def _qdepthwise_requant(x, x_zp, w, w_zp, sh, sw, ph, pw, dh, dw, bias, scale, zero_point,
                        out):
    c, oh, ow = out.shape
    acc = np.empty((c, oh, ow), np.int32)
    qdepthwise(x, x_zp, w, w_zp, sh, sw, ph, pw, dh, dw, acc)
    requantize(acc.reshape(1, c, oh * ow), bias, scale, zero_point, out.reshape(1, c, oh * ow))


@njit(parallel=True, fastmath=False)
def qavg_pool2d(x, y0, ny, pl, kw, sw, dh, dw, corr, mult, zero_point, out):
    p, h, w = x.shape
    oh, ow = mult.shape
    wb = (ow - 1) * sw + (kw - 1) * dw + 1
    n = min(w, wb - pl)
    info = np.iinfo(out.dtype)
    lo, hi = np.float32(info.min), np.float32(info.max)
    z = np.float32(zero_point)
    for pln in prange(p):
        cs = np.empty(wb, np.int32)       # the output row's window rows, summed (padded)
        acc = np.empty(ow, np.int32)
        for oy in range(oh):
            cs[:] = 0
            for i in range(ny[oy]):
                r = x[pln, y0[oy] + i * dh]
                for q in range(n):
                    cs[pl + q] += np.int32(r[q])
            acc[:] = 0
            for j in range(kw):
                for ox in range(ow):
                    acc[ox] += cs[ox * sw + j * dw]
            for ox in range(ow):
                v = np.float32(np.float32(acc[ox] - corr[oy, ox]) * mult[oy, ox])
                out[pln, oy, ox] = _sat(np.float32(np.rint(v)) + z, lo, hi)
