# cython: boundscheck=False, wraparound=False, cdivision=True
"""Cython twins of edgedl.kernels._ref.quant (same names and arguments; see there).

The public wrapper validated every shape and dtype and made the arrays C-contiguous, hence no
bounds checks. Plain C loops written so gcc vectorises them: the GEMM adds four widened
8-bit rows of b, times four scalars of a, into an int32 accumulator row per pass, over column
tiles that keep their slice of b in cache (tiles run in parallel). Requantization is
onnxruntime's: float32 product, round half to even (lrintf in the default rounding mode),
saturate.
"""
from cython.parallel cimport prange
from libc.math cimport nearbyintf

ctypedef signed char s8_t
ctypedef unsigned char u8_t
ctypedef short s16_t
ctypedef unsigned short u16_t

ctypedef fused q8:
    s8_t
    u8_t

ctypedef fused q8b:
    s8_t
    u8_t

ctypedef fused qin:
    s8_t
    u8_t
    s16_t
    u16_t
    int

ctypedef fused qout:
    s8_t
    u8_t
    s16_t
    u16_t

cdef enum:
    # below this many elements a loop runs on one thread (thread start-up would dominate)
    PAR_ELEMS = 32768
    # GEMM column tile: an int32 accumulator row of it stays in L1, b's K x TILE slice in L2
    TILE = 256


cdef inline float _clampf(float v, float lo, float hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef inline void _limits(qout *dummy, float *lo, float *hi) noexcept nogil:
    if qout is s8_t:
        lo[0] = -128.0
        hi[0] = 127.0
    elif qout is u8_t:
        lo[0] = 0.0
        hi[0] = 255.0
    elif qout is s16_t:
        lo[0] = -32768.0
        hi[0] = 32767.0
    else:
        lo[0] = 0.0
        hi[0] = 65535.0


def quantize_linear(const float[:, :, ::1] x, const float[::1] scale, const int[::1] zero_point,
                    qout[:, :, ::1] out):
    cdef Py_ssize_t a = x.shape[0], c = x.shape[1], b = x.shape[2], p, q, ch
    cdef float lo, hi, s, z
    _limits(<qout *>NULL, &lo, &hi)
    if a * c * b == 0:
        return
    for p in prange(a * c, nogil=True, schedule="static", use_threads_if=a * c * b >= PAR_ELEMS):
        ch = p % c
        s = scale[ch]
        z = <float>zero_point[ch]
        for q in range(b):
            out[p // c, ch, q] = <qout>_clampf(nearbyintf(x[p // c, ch, q] / s) + z, lo, hi)


def dequantize_linear(const qin[:, :, ::1] x, const float[::1] scale, const int[::1] zero_point,
                      float[:, :, ::1] out):
    cdef Py_ssize_t a = x.shape[0], c = x.shape[1], b = x.shape[2], p, q, ch
    cdef float s
    cdef long long z
    if a * c * b == 0:
        return
    for p in prange(a * c, nogil=True, schedule="static", use_threads_if=a * c * b >= PAR_ELEMS):
        ch = p % c
        s = scale[ch]
        z = zero_point[ch]
        for q in range(b):
            out[p // c, ch, q] = <float>(<long long>x[p // c, ch, q] - z) * s


def im2col_q(const q8[:, :, ::1] x, int fill, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh,
             Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
             Py_ssize_t oh, Py_ssize_t ow, q8[:, ::1] cols):
    cdef Py_ssize_t c = x.shape[0], h = x.shape[1], w = x.shape[2], r, ch, i, j, oy, ox, iy, ix
    cdef q8 f = <q8>fill
    cdef q8 *dst
    cdef const q8 *src
    if c * kh * kw * oh * ow == 0:
        return
    for r in prange(c * kh * kw, nogil=True, schedule="static",
                    use_threads_if=c * kh * kw * oh * ow >= PAR_ELEMS):
        ch = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        dst = &cols[r, 0]
        for oy in range(oh):
            iy = oy * sh - ph + i * dh
            if iy < 0 or iy >= h:
                for ox in range(ow):
                    dst[oy * ow + ox] = f
            else:
                src = &x[ch, iy, 0]
                for ox in range(ow):
                    ix = ox * sw - pw + j * dw
                    dst[oy * ow + ox] = src[ix] if 0 <= ix < w else f


cdef void _gemm_tile(const q8 *a, const int *a_zp, const q8b *b, const int *b_zp, int *acc,
                     Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, Py_ssize_t q0,
                     Py_ssize_t nq) noexcept nogil:
    """Columns [q0, q0 + nq) of acc = (a - a_zp) @ (b - b_zp)."""
    cdef Py_ssize_t i, kk, q
    cdef int a0, a1, a2, a3, asum
    cdef int *row
    cdef const q8b *b0
    cdef const q8b *b1
    cdef const q8b *b2
    cdef const q8b *b3
    for i in range(m):
        row = acc + i * n + q0
        for q in range(nq):
            row[q] = 0
        asum = 0
        kk = 0
        while kk + 4 <= k:
            a0 = <int>a[i * k + kk] - a_zp[i]
            a1 = <int>a[i * k + kk + 1] - a_zp[i]
            a2 = <int>a[i * k + kk + 2] - a_zp[i]
            a3 = <int>a[i * k + kk + 3] - a_zp[i]
            asum = asum + a0 + a1 + a2 + a3
            b0 = b + kk * n + q0
            b1 = b0 + n
            b2 = b1 + n
            b3 = b2 + n
            for q in range(nq):
                row[q] += a0 * <int>b0[q] + a1 * <int>b1[q] + a2 * <int>b2[q] + a3 * <int>b3[q]
            kk = kk + 4
        while kk < k:
            a0 = <int>a[i * k + kk] - a_zp[i]
            asum = asum + a0
            b0 = b + kk * n + q0
            for q in range(nq):
                row[q] += a0 * <int>b0[q]
            kk = kk + 1
        for q in range(nq):
            row[q] -= asum * b_zp[q0 + q]


def qgemm(const q8[:, ::1] a, const int[::1] a_zp, const q8b[:, ::1] b, const int[::1] b_zp,
          int[:, ::1] acc):
    cdef Py_ssize_t m = a.shape[0], k = a.shape[1], n = b.shape[1], t, nt, q0
    if m * n == 0:
        return
    if k == 0:
        acc[:, :] = 0
        return
    nt = (n + TILE - 1) // TILE
    for t in prange(nt, nogil=True, schedule="static", use_threads_if=m * k * n >= PAR_ELEMS * 8):
        q0 = t * TILE
        _gemm_tile(&a[0, 0], &a_zp[0], &b[0, 0], &b_zp[0], &acc[0, 0], m, k, n, q0,
                   TILE if q0 + TILE <= n else n - q0)


def qdepthwise(const q8[:, :, ::1] x, int x_zp, const q8b[:, :, ::1] w, const int[::1] w_zp,
               Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh,
               Py_ssize_t dw, int[:, :, ::1] acc):
    cdef Py_ssize_t c = x.shape[0], h = x.shape[1], wd = x.shape[2]
    cdef Py_ssize_t kh = w.shape[1], kw = w.shape[2], oh = acc.shape[1], ow = acc.shape[2]
    cdef Py_ssize_t ch, oy, ox, i, j, iy, ix
    cdef int wv, s
    if c * oh * ow == 0:
        return
    for ch in prange(c, nogil=True, schedule="static",
                     use_threads_if=c * oh * ow * kh * kw >= PAR_ELEMS):
        for oy in range(oh):
            for ox in range(ow):
                acc[ch, oy, ox] = 0
        for i in range(kh):
            for j in range(kw):
                wv = <int>w[ch, i, j] - w_zp[ch]
                for oy in range(oh):
                    iy = oy * sh - ph + i * dh
                    if iy < 0 or iy >= h:
                        continue
                    for ox in range(ow):
                        ix = ox * sw - pw + j * dw
                        if 0 <= ix < wd:
                            acc[ch, oy, ox] += wv * (<int>x[ch, iy, ix] - x_zp)


def requantize(const int[:, :, ::1] acc, const int[::1] bias, const float[::1] scale,
               int zero_point, qout[:, :, ::1] out):
    cdef Py_ssize_t a = acc.shape[0], c = acc.shape[1], b = acc.shape[2], p, q, ch
    cdef float lo, hi, s, z = <float>zero_point
    cdef int bi
    _limits(<qout *>NULL, &lo, &hi)
    if a * c * b == 0:
        return
    for p in prange(a * c, nogil=True, schedule="static", use_threads_if=a * c * b >= PAR_ELEMS):
        ch = p % c
        s = scale[ch]
        bi = bias[ch]
        for q in range(b):
            out[p // c, ch, q] = <qout>_clampf(
                nearbyintf(<float>(acc[p // c, ch, q] + bi) * s) + z, lo, hi)


def lookup(const unsigned char[::1] x, const q8[::1] table, q8[::1] out):
    cdef Py_ssize_t n = x.shape[0], i
    with nogil:
        for i in range(n):
            out[i] = table[x[i]]
