# cython: boundscheck=False, wraparound=False
"""Cython twins of edgedl.kernels._ref.activations (same names, parameters and layouts).

The wrapper validated everything (dtypes, shapes, contiguity, no partial overlap), hence no
bounds checks. Elementwise kernels run in chunks of CHUNK elements over an OpenMP prange; the
float32 exp/log-based forwards call the vectorised loops of activations_f32.h, everything else
is a plain loop gcc vectorises (float32 exp via edl_math.h, float64 via libm).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expm1, log, log1p, fabs, INFINITY, NAN
from libc.stdlib cimport malloc, free
from libc.string cimport memcmp
from edl_buffer cimport PyBUF_FORMAT, disjoint, get_pair, native_f32, release_pair
from edl_omp cimport omp_get_max_threads, omp_set_num_threads
from edl_fmath cimport _exp_neg, _expm1_neg, _log1p01
# the op codes: generated from edgedl/kernels/activation_table.py (tools/gen_act_codes.py)
from edl_act_table cimport *

cdef extern from "activations_f32.h" nogil:
    void edl_clip_f32(const float *x, float *y, Py_ssize_t n, float lo, float hi)
    void edl_leaky_f32(const float *x, float *y, Py_ssize_t n, float alpha)
    void edl_hard_sigmoid_f32(const float *x, float *y, Py_ssize_t n, float alpha, float beta)
    void edl_hard_swish_f32(const float *x, float *y, Py_ssize_t n)
    void edl_sigmoid_f32(const float *x, float *y, Py_ssize_t n)
    void edl_swish_f32(const float *x, float *y, Py_ssize_t n, float beta)
    void edl_tanh_f32(const float *x, float *y, Py_ssize_t n)
    void edl_selu_f32(const float *x, float *y, Py_ssize_t n, float alpha, float gamma)
    void edl_softplus_f32(const float *x, float *y, Py_ssize_t n)
    void edl_mish_f32(const float *x, float *y, Py_ssize_t n)
    void edl_softmax_rows_f32(const float *x, float *y, Py_ssize_t rows, Py_ssize_t n,
                              int log_mode)
    void edl_softmax_cols_f32(const float *x, float *y, Py_ssize_t n, Py_ssize_t inner,
                              float *m, float *s, float *f, int log_mode)
    void edl_softmax_narrow_f32(const float *x, float *y, Py_ssize_t rows, Py_ssize_t n,
                                int log_mode)
    enum: EDL_COLS
    enum: EDL_NARROW

cdef enum:
    CHUNK = 16384


# ----------------------------------------------------------------------------- scalar math
cdef inline floating _sig(floating v) noexcept nogil:
    cdef floating e = _exp_neg(-fabs(v))
    return 1 / (1 + e) if v >= 0 else e / (1 + e)


cdef inline floating _sig_d(floating v) noexcept nogil:
    """sigmoid'(v) = s (1 - s) = e / (1 + e)^2, e = exp(-|v|): symmetric, no cancellation."""
    cdef floating e = _exp_neg(-fabs(v))
    cdef floating d = 1 / (1 + e)
    return e * d * d


cdef inline floating _nan(floating v, floating r) noexcept nogil:
    return r if v == v else v


# ----------------------------------------------------------------------------- elementwise
cdef void _chunk(int op, const floating *x, const floating *dy, floating *y, Py_ssize_t n,
                 floating a, floating b) noexcept nogil:
    """y[:n] = op(x[:n]) (or its gradient times dy); a, b the op's parameters."""
    cdef Py_ssize_t i
    cdef floating v, e, d, t, s, num, den, nn
    if op == OP_RELU or op == OP_RELU6 or op == OP_CLIP:   # relu = clip(0, inf): NaN, -0.0 kept
        if op == OP_RELU:
            a, b = 0, INFINITY
        elif op == OP_RELU6:
            a, b = 0, 6
        if floating is float:
            edl_clip_f32(x, y, n, a, b)
        else:
            for i in range(n):
                v = x[i]
                v = a if v < a else v
                y[i] = b if v > b else v
    elif op == OP_LEAKY_RELU:
        if floating is float:
            edl_leaky_f32(x, y, n, a)
        else:
            for i in range(n):
                v = x[i]
                y[i] = v if not v < 0 else a * v
    elif op == OP_ELU or op == OP_SELU:
        if floating is float:
            edl_selu_f32(x, y, n, a, 1 if op == OP_ELU else b)
        else:
            if op == OP_ELU:
                b = 1
            for i in range(n):
                v = x[i]
                y[i] = b * (v if v > 0 else a * expm1(v if v < 0 else 0)) if v == v else v
    elif op == OP_SIGMOID:
        if floating is float:
            edl_sigmoid_f32(x, y, n)
        else:
            for i in range(n):
                y[i] = _nan(x[i], _sig(x[i]))
    elif op == OP_HARD_SIGMOID:
        if floating is float:
            edl_hard_sigmoid_f32(x, y, n, a, b)
        else:
            for i in range(n):
                v = a * x[i] + b
                v = 0 if v < 0 else v
                y[i] = 1 if v > 1 else v
    elif op == OP_TANH:
        if floating is float:
            edl_tanh_f32(x, y, n)
        else:
            for i in range(n):
                t = expm1(-2 * fabs(x[i]))
                t = -t / (2 + t)
                y[i] = _nan(x[i], -t if x[i] < 0 else t)
    elif op == OP_SOFTPLUS:
        if floating is float:
            edl_softplus_f32(x, y, n)
        else:
            for i in range(n):
                v = x[i]
                y[i] = _nan(v, (v if v > 0 else 0) + log1p(exp(-fabs(v))))
    elif op == OP_SWISH:
        if floating is float:
            edl_swish_f32(x, y, n, a)
        else:
            for i in range(n):
                y[i] = _nan(x[i], x[i] * _sig(a * x[i]))
    elif op == OP_HARD_SWISH:
        if floating is float:
            edl_hard_swish_f32(x, y, n)
        else:
            for i in range(n):
                v = x[i]
                t = v * <floating>(1.0 / 6.0) + <floating>0.5
                t = 0 if t < 0 else t
                y[i] = v * (1 if t > 1 else t)
    elif op == OP_MISH:
        if floating is float:
            edl_mish_f32(x, y, n)
        else:
            for i in range(n):
                v = x[i]
                e = exp(-fabs(v))
                nn = e * (e + 2)
                num = 1 + 2 * e if v > 0 else nn
                den = 1 + 2 * e + 2 * e * e if v > 0 else nn + 2
                y[i] = _nan(v, v * num / den)
    # gradients: y = dy * f'(x), PyTorch's values at kinks
    elif op == OP_RELU_G:
        for i in range(n):
            y[i] = dy[i] if x[i] > 0 else 0
    elif op == OP_RELU6_G:
        for i in range(n):
            y[i] = dy[i] if (x[i] > 0 and x[i] < 6) else 0
    elif op == OP_CLIP_G:
        for i in range(n):
            y[i] = dy[i] if (x[i] >= a and x[i] <= b) else 0
    elif op == OP_LEAKY_RELU_G:
        for i in range(n):
            y[i] = dy[i] if x[i] > 0 else a * dy[i]
    elif op == OP_ELU_G or op == OP_SELU_G:
        if op == OP_ELU_G:
            b = 1
        for i in range(n):
            v = x[i]
            e = _exp_neg(v if v < 0 else 0)
            y[i] = b * dy[i] * (1 if v > 0 else a * e)
    elif op == OP_SIGMOID_G:
        for i in range(n):
            y[i] = dy[i] * _sig_d(x[i])
    elif op == OP_HARD_SIGMOID_G:
        for i in range(n):
            v = a * x[i] + b
            y[i] = a * dy[i] if (v > 0 and v < 1) else 0
    elif op == OP_TANH_G:
        for i in range(n):
            e = _exp_neg(-2 * fabs(x[i]))         # 1 - tanh^2 = 4e / (1 + e)^2
            d = 1 / (1 + e)
            y[i] = dy[i] * (4 * e * d * d)
    elif op == OP_SOFTPLUS_G:
        for i in range(n):
            y[i] = dy[i] * _sig(x[i])
    elif op == OP_SWISH_G:
        for i in range(n):
            v = x[i]
            y[i] = dy[i] * (_sig(a * v) + a * v * _sig_d(a * v))
    elif op == OP_HARD_SWISH_G:
        for i in range(n):
            v = x[i]
            y[i] = 0 if v < -3 else (dy[i] * (v * <floating>(1.0 / 3.0) + <floating>0.5)
                                     if v <= 3 else dy[i])
    elif op == OP_MISH_G:
        for i in range(n):
            v = x[i]
            e = _exp_neg(-fabs(v))
            nn = e * (e + 2)
            num = 1 + 2 * e if v > 0 else nn
            den = num + 2 * e * e if v > 0 else nn + 2
            t = num / den                                   # tanh(softplus(v))
            # 1 - t^2 = (den^2 - num^2) / den^2, expanded to avoid cancellation
            s = (4 * e * e * (1 + e) * (1 + e) if v > 0 else 4 * (nn + 1)) / (den * den)
            y[i] = dy[i] * (t + v * _sig(v) * s)


cdef void _apply_ptr(int op, const floating *px, const floating *pd, floating *po, Py_ssize_t n,
                     floating fa, floating fb) noexcept nogil:
    cdef Py_ssize_t c, i0
    if n <= CHUNK:      # no OpenMP team for small inputs: waking threads costs more
        _chunk(op, px, pd, po, n, fa, fb)
        return
    for c in prange((n + CHUNK - 1) // CHUNK, schedule="static"):
        i0 = c * CHUNK
        _chunk(op, px + i0, pd + i0, po + i0, min(CHUNK, n - i0), fa, fb)


cdef void _apply(int op, const floating[::1] x, const floating[::1] dy, floating[::1] out,
                 double a, double b) noexcept:
    if x.shape[0] == 0:
        return
    with nogil:
        _apply_ptr(op, &x[0], &dy[0], &out[0], x.shape[0], <floating>a, <floating>b)


# ----------------------------------------------------------------------------- softmax
cdef void _softmax_block(int mode, const floating *x, const floating *dy, floating *y,
                         Py_ssize_t n, Py_ssize_t inner, floating *m, floating *s,
                         floating *g) noexcept nogil:
    """One (n, inner) block reduced over n, vectorised along inner (mode branches stay outside
    the loops); m, s, g are scratch of length inner. y may alias x or dy."""
    cdef Py_ssize_t j, k, o
    cdef floating v, e
    cdef bint flagged = False, nan_col
    for k in range(inner):
        m[k] = x[k]
        s[k] = 0
        g[k] = 0
    for j in range(n):
        o = j * inner
        for k in range(inner):
            v = x[o + k]
            m[k] = v if v > m[k] else m[k]
            g[k] += v - v                         # NaN if any NaN or +-inf in the column
    for k in range(inner):
        if g[k] != 0:                             # rare: NaN, +inf or all -inf -> NaN column
            g[k] = 0
            nan_col = m[k] == -INFINITY
            for j in range(n):
                v = x[j * inner + k]
                nan_col = nan_col or v != v or v == INFINITY
            if nan_col:
                m[k] = NAN
                flagged = True
    if mode == OP_SOFTMAX:
        for j in range(n):
            o = j * inner
            for k in range(inner):
                e = _exp_neg(x[o + k] - m[k])
                y[o + k] = e
                s[k] += e
        for k in range(inner):
            s[k] = 1 / s[k]
        for j in range(n):
            o = j * inner
            for k in range(inner):
                y[o + k] = y[o + k] * s[k]
    elif mode == OP_LOG_SOFTMAX:
        for j in range(n):
            o = j * inner
            for k in range(inner):
                s[k] += _exp_neg(x[o + k] - m[k])
        for k in range(inner):
            s[k] = log(s[k])
        for j in range(n):
            o = j * inner
            for k in range(inner):
                y[o + k] = (x[o + k] - m[k]) - s[k]   # x - m exact: keep log(s) apart
    elif mode == OP_SOFTMAX_G:            # s * (dy - sum(dy * s)); y may be dy: recompute exp
        for j in range(n):
            o = j * inner
            for k in range(inner):
                e = _exp_neg(x[o + k] - m[k])
                s[k] += e
                g[k] += e * dy[o + k]
        for k in range(inner):
            s[k] = 1 / s[k]
            g[k] = g[k] * s[k]
        for j in range(n):
            o = j * inner
            for k in range(inner):
                y[o + k] = _exp_neg(x[o + k] - m[k]) * s[k] * (dy[o + k] - g[k])
    else:                                 # dy - softmax * sum(dy)
        for j in range(n):
            o = j * inner
            for k in range(inner):
                s[k] += _exp_neg(x[o + k] - m[k])
                g[k] += dy[o + k]
        for k in range(inner):
            s[k] = 1 / s[k]
        for j in range(n):
            o = j * inner
            for k in range(inner):
                y[o + k] = dy[o + k] - _exp_neg(x[o + k] - m[k]) * s[k] * g[k]
    if flagged:
        for k in range(inner):
            if m[k] != m[k]:
                for j in range(n):
                    y[j * inner + k] = NAN


cdef inline void _softmax_rows(const float *x, float *y, Py_ssize_t rows, Py_ssize_t n,
                               int log_mode) noexcept nogil:
    # many rows of a few values: vectorised across the rows (see edl_softmax_narrow_f32)
    if n <= EDL_NARROW and rows >= 16:
        edl_softmax_narrow_f32(x, y, rows, n, log_mode)
    else:
        edl_softmax_rows_f32(x, y, rows, n, log_mode)


cdef int _softmax_ptr(int mode, const floating *px, const floating *pd, floating *po,
                      Py_ssize_t outer, Py_ssize_t n, Py_ssize_t inner) noexcept nogil:
    """The (outer, n, inner) softmax family over n; -1 when out of memory for scratch."""
    cdef Py_ssize_t o, rows, r0
    cdef int failed = 0
    cdef floating *scratch
    if outer == 0 or n == 0 or inner == 0:
        return 0
    if floating is float:
        if inner == 1 and (mode == OP_SOFTMAX or mode == OP_LOG_SOFTMAX):
            rows = max(1, CHUNK // n)            # rows per parallel task
            if outer <= rows:
                _softmax_rows(px, po, outer, n, mode == OP_LOG_SOFTMAX)
                return 0
            for o in prange((outer + rows - 1) // rows, schedule="static"):
                r0 = o * rows
                _softmax_rows(px + r0 * n, po + r0 * n, min(rows, outer - r0), n,
                              mode == OP_LOG_SOFTMAX)
            return 0
    cdef Py_ssize_t width = inner
    if floating is float:
        if mode == OP_SOFTMAX or mode == OP_LOG_SOFTMAX:
            width = min(inner, EDL_COLS)        # the C loop works in column blocks
    for o in prange(outer, schedule="static",
                    num_threads=1 if outer * n * inner <= CHUNK else omp_get_max_threads()):
        scratch = <floating *>malloc(3 * width * sizeof(floating))
        if scratch != NULL:
            if floating is float:
                if mode == OP_SOFTMAX or mode == OP_LOG_SOFTMAX:
                    edl_softmax_cols_f32(px + o * n * inner, po + o * n * inner, n, inner,
                                         scratch, scratch + width, scratch + 2 * width,
                                         mode == OP_LOG_SOFTMAX)
                else:
                    _softmax_block(mode, px + o * n * inner, pd + o * n * inner,
                                   po + o * n * inner, n, inner, scratch, scratch + width,
                                   scratch + 2 * width)
            else:
                _softmax_block(mode, px + o * n * inner, pd + o * n * inner,
                               po + o * n * inner, n, inner, scratch, scratch + width,
                               scratch + 2 * width)
            free(scratch)
        else:
            failed += 1
    return -1 if failed else 0


cdef int _softmax(int mode, const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                  floating[:, :, ::1] out) except -1:
    cdef int r
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        return 0
    with nogil:
        r = _softmax_ptr(mode, &x[0, 0, 0], &dy[0, 0, 0], &out[0, 0, 0], x.shape[0],
                         x.shape[1], x.shape[2])
    if r:
        raise MemoryError("softmax: out of memory for the scratch rows")
    return 0


# ----------------------------------------------------------------------------- float32 fast entry
# The wrappers' common case (float32, C-contiguous, out given or fresh) skips the twins' typed
# memoryviews: right after a kernel the interpreter runs cache-cold, and acquiring two
# memoryviews then costs ~6 us more than the two buffer requests below. The op codes are the
# table's (edgedl.kernels.activation_table: Activation.fast_code).
def fast_f32(int op, x, out, int nthreads, double a=0, double b=0, Py_ssize_t outer=0,
             Py_ssize_t n=0, Py_ssize_t inner=0):
    """out = op(x) for float32 arrays x and out (the caller checked both dtypes) when both are
    C-contiguous, of one shape, out writable and not partly overlapping x; True if done,
    False (nothing touched) otherwise. Elementwise ops take a, b; softmax / log_softmax the
    (outer, n, inner) split of x's shape. Runs on `nthreads` OpenMP threads."""
    if not (0 <= op < OP_N_ELEMENTWISE or op == OP_SOFTMAX or op == OP_LOG_SOFTMAX):
        raise ValueError(f"fast_f32: {op} is not a forward op code of the activation table")
    return _fast_f32(op, x, out, nthreads, a, b, outer, n, inner)


cdef class FastF32:
    """fast_f32 bound to one elementwise op code without parameters (a planned activation's
    one-call form, which the ONNX runtime's compiled plan calls): ``act(x, out, nthreads)``.
    It checks the dtypes too (float32 buffers), so the plan's call needs no wrapper."""
    cdef int op

    def __init__(self, int op):
        if not 0 <= op < OP_N_ELEMENTWISE:
            raise ValueError(f"FastF32: {op} is not an elementwise op code")
        self.op = op

    def __call__(self, x, out, int nthreads):
        return _fast_f32(self.op, x, out, nthreads, 0, 0, 0, 0, 0, True)


cdef bint _fast_f32(int op, x, out, int nthreads, double a, double b, Py_ssize_t outer,
                    Py_ssize_t n, Py_ssize_t inner, bint check_f32=False) except -1:
    cdef Py_buffer bx, bo
    cdef bint ok = False
    cdef int r = 0
    if not get_pair(x, &bx, out, &bo, PyBUF_FORMAT if check_f32 else 0):
        return False
    ok = (bx.itemsize == 4 and bo.itemsize == 4 and bx.ndim == bo.ndim and bx.len == bo.len
          and (not check_f32 or (native_f32(bx.format) and native_f32(bo.format)))
          and (bx.ndim == 0 or memcmp(bx.shape, bo.shape, bx.ndim * sizeof(Py_ssize_t)) == 0)
          and disjoint(&bx, &bo, True)
          and (op < OP_SOFTMAX or outer * n * inner * 4 == bx.len))
    if ok and bx.len:
        if omp_get_max_threads() != nthreads:
            omp_set_num_threads(nthreads)
        with nogil:
            if op >= OP_SOFTMAX:
                r = _softmax_ptr(op, <const float *>bx.buf, <const float *>bx.buf,
                                 <float *>bo.buf, outer, n, inner)
            else:
                _apply_ptr(op, <const float *>bx.buf, <const float *>bx.buf, <float *>bo.buf,
                           bx.len // 4, <float>a, <float>b)
    release_pair(&bx, &bo)
    if r:
        raise MemoryError("softmax: out of memory for the scratch rows")
    return ok


# ----------------------------------------------------------------------------- public twins
def relu(const floating[::1] x, floating[::1] out):
    _apply(OP_RELU, x, x, out, 0, 0)


def relu6(const floating[::1] x, floating[::1] out):
    _apply(OP_RELU6, x, x, out, 0, 0)


def clip(const floating[::1] x, double lo, double hi, floating[::1] out):
    _apply(OP_CLIP, x, x, out, lo, hi)


def leaky_relu(const floating[::1] x, double alpha, floating[::1] out):
    _apply(OP_LEAKY_RELU, x, x, out, alpha, 0)


def prelu(const floating[:, :, ::1] x, const floating[::1] slope, floating[:, :, ::1] out):
    _prelu(x, x, slope, out, False)


def elu(const floating[::1] x, double alpha, floating[::1] out):
    _apply(OP_ELU, x, x, out, alpha, 1)


def selu(const floating[::1] x, double alpha, double gamma, floating[::1] out):
    _apply(OP_SELU, x, x, out, alpha, gamma)


def sigmoid(const floating[::1] x, floating[::1] out):
    _apply(OP_SIGMOID, x, x, out, 0, 0)


def hard_sigmoid(const floating[::1] x, double alpha, double beta, floating[::1] out):
    _apply(OP_HARD_SIGMOID, x, x, out, alpha, beta)


def tanh(const floating[::1] x, floating[::1] out):
    _apply(OP_TANH, x, x, out, 0, 0)


def softplus(const floating[::1] x, floating[::1] out):
    _apply(OP_SOFTPLUS, x, x, out, 0, 0)


def swish(const floating[::1] x, double beta, floating[::1] out):
    _apply(OP_SWISH, x, x, out, beta, 0)


def hard_swish(const floating[::1] x, floating[::1] out):
    _apply(OP_HARD_SWISH, x, x, out, 0, 0)


def mish(const floating[::1] x, floating[::1] out):
    _apply(OP_MISH, x, x, out, 0, 0)


def softmax(const floating[:, :, ::1] x, floating[:, :, ::1] out):
    _softmax(OP_SOFTMAX, x, x, out)


def log_softmax(const floating[:, :, ::1] x, floating[:, :, ::1] out):
    _softmax(OP_LOG_SOFTMAX, x, x, out)


def relu_grad(const floating[::1] x, const floating[::1] dy, floating[::1] out):
    _apply(OP_RELU_G, x, dy, out, 0, 0)


def relu6_grad(const floating[::1] x, const floating[::1] dy, floating[::1] out):
    _apply(OP_RELU6_G, x, dy, out, 0, 0)


def clip_grad(const floating[::1] x, const floating[::1] dy, double lo, double hi,
              floating[::1] out):
    _apply(OP_CLIP_G, x, dy, out, lo, hi)


def leaky_relu_grad(const floating[::1] x, const floating[::1] dy, double alpha, floating[::1] out):
    _apply(OP_LEAKY_RELU_G, x, dy, out, alpha, 0)


def prelu_grad(const floating[:, :, ::1] x, const floating[:, :, ::1] dy, const floating[::1] slope,
               floating[:, :, ::1] out):
    _prelu(x, dy, slope, out, True)


def elu_grad(const floating[::1] x, const floating[::1] dy, double alpha, floating[::1] out):
    _apply(OP_ELU_G, x, dy, out, alpha, 1)


def selu_grad(const floating[::1] x, const floating[::1] dy, double alpha, double gamma,
              floating[::1] out):
    _apply(OP_SELU_G, x, dy, out, alpha, gamma)


def sigmoid_grad(const floating[::1] x, const floating[::1] dy, floating[::1] out):
    _apply(OP_SIGMOID_G, x, dy, out, 0, 0)


def hard_sigmoid_grad(const floating[::1] x, const floating[::1] dy, double alpha, double beta,
                      floating[::1] out):
    _apply(OP_HARD_SIGMOID_G, x, dy, out, alpha, beta)


def tanh_grad(const floating[::1] x, const floating[::1] dy, floating[::1] out):
    _apply(OP_TANH_G, x, dy, out, 0, 0)


def softplus_grad(const floating[::1] x, const floating[::1] dy, floating[::1] out):
    _apply(OP_SOFTPLUS_G, x, dy, out, 0, 0)


def swish_grad(const floating[::1] x, const floating[::1] dy, double beta, floating[::1] out):
    _apply(OP_SWISH_G, x, dy, out, beta, 0)


def hard_swish_grad(const floating[::1] x, const floating[::1] dy, floating[::1] out):
    _apply(OP_HARD_SWISH_G, x, dy, out, 0, 0)


def mish_grad(const floating[::1] x, const floating[::1] dy, floating[::1] out):
    _apply(OP_MISH_G, x, dy, out, 0, 0)


def softmax_grad(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                 floating[:, :, ::1] out):
    _softmax(OP_SOFTMAX_G, x, dy, out)


def log_softmax_grad(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                     floating[:, :, ::1] out):
    _softmax(OP_LOG_SOFTMAX_G, x, dy, out)


# ----------------------------------------------------------------------------- prelu
cdef void _prelu(const floating[:, :, ::1] x, const floating[:, :, ::1] dy,
                 const floating[::1] slope,
                 floating[:, :, ::1] out, bint grad) noexcept:
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2], t, k, base
    cdef floating a, v
    if outer == 0 or C == 0 or inner == 0:
        return
    cdef const floating *px = &x[0, 0, 0]
    cdef const floating *pd = &dy[0, 0, 0]
    cdef floating *po = &out[0, 0, 0]
    cdef const floating *ps = &slope[0]
    for t in prange(outer * C, nogil=True, schedule="static",
                    num_threads=1 if outer * C * inner <= CHUNK else omp_get_max_threads()):
        a = ps[t % C]
        base = t * inner
        if grad:
            for k in range(inner):
                po[base + k] = pd[base + k] if px[base + k] > 0 else a * pd[base + k]
        elif floating is float:
            edl_leaky_f32(px + base, po + base, inner, a)
        else:
            for k in range(inner):
                v = px[base + k]
                po[base + k] = v if not v < 0 else a * v
