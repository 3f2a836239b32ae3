# Scalar math shared by the .pyx kernels, fused over float / double: libm's float or double
# function, and for float the vectorisable polynomials of edl_math.h (_exp_neg, _expm1_neg,
# _log1p01; double keeps libm there).
from cython cimport floating
from libc.math cimport exp, expf, expm1, log, logf, log1p, log1pf, tanh, tanhf

cdef extern from "edl_math.h" nogil:
    float edl_exp_neg(float x)
    float edl_expm1_neg(float x)
    float edl_log1p01f(float u)


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef inline floating _log(floating v) noexcept nogil:
    if floating is float:
        return logf(v)
    else:
        return log(v)


cdef inline floating _log1p(floating v) noexcept nogil:
    if floating is float:
        return log1pf(v)
    else:
        return log1p(v)


cdef inline floating _tanh(floating v) noexcept nogil:
    if floating is float:
        return tanhf(v)
    else:
        return tanh(v)


cdef inline floating _exp_neg(floating v) noexcept nogil:
    """exp(v) for v <= 0 (float32: the vectorisable polynomial)."""
    if floating is float:
        return edl_exp_neg(v)
    else:
        return exp(v)


cdef inline floating _expm1_neg(floating v) noexcept nogil:
    """exp(v) - 1 for v <= 0, accurate near 0."""
    if floating is float:
        return edl_expm1_neg(v)
    else:
        return expm1(v)


cdef inline floating _log1p01(floating u) noexcept nogil:
    """log(1 + u) for 0 <= u <= 1."""
    if floating is float:
        return edl_log1p01f(u)
    else:
        return log1p(u)
