# Plain buffer requests for the fast entries (activations.fast_f32, conv.ConvF32): cheaper
# than typed memoryviews when the interpreter runs cache-cold.
from cpython.buffer cimport PyBuffer_Release, PyBUF_FORMAT, PyBUF_ND, PyBUF_WRITABLE

cdef extern from "Python.h":
    # PyObject_GetBuffer without Cython's `except -1`: a refusal is an answer here, not an error
    int get_buffer "PyObject_GetBuffer"(object obj, Py_buffer *view, int flags)
    void PyErr_Clear()


cdef inline bint get_pair(object x, Py_buffer *bx, object y, Py_buffer *by,
                          int extra_flags) noexcept:
    """x's buffer and y's writable one (PyBUF_ND | extra_flags), or neither: False with the
    refusal cleared (the caller then takes its general path)."""
    if get_buffer(x, bx, PyBUF_ND | extra_flags) < 0:
        PyErr_Clear()
        return False
    if get_buffer(y, by, PyBUF_ND | PyBUF_WRITABLE | extra_flags) < 0:
        PyErr_Clear()
        PyBuffer_Release(bx)
        return False
    return True


cdef inline void release_pair(Py_buffer *bx, Py_buffer *by) noexcept:
    PyBuffer_Release(by)
    PyBuffer_Release(bx)


cdef inline bint disjoint(const Py_buffer *a, const Py_buffer *b, bint same_ok) noexcept:
    """a and b do not overlap (or, with same_ok, are exactly the same memory: in place)."""
    cdef const char *pa = <const char *>a.buf
    cdef const char *pb = <const char *>b.buf
    return (same_ok and pa == pb and a.len == b.len) or pa + a.len <= pb or pb + b.len <= pa


cdef inline bint native_f32(const char *f) noexcept:
    """The buffer format ``f`` (requested with PyBUF_FORMAT) is one native float32."""
    if f[0] == b'@' or f[0] == b'=':
        f += 1
    return f[0] == b'f' and f[1] == 0


cdef inline bint f32_shape4(const Py_buffer *b, const Py_ssize_t *shape) noexcept:
    """b (requested with PyBUF_FORMAT) is a native float32 buffer of the 4-D ``shape``."""
    return (native_f32(b.format) and b.ndim == 4 and b.shape[0] == shape[0]
            and b.shape[1] == shape[1] and b.shape[2] == shape[2] and b.shape[3] == shape[3])


cdef inline bint f32_pair4(object x, Py_buffer *bx, object y, Py_buffer *by,
                           const Py_ssize_t *xs, const Py_ssize_t *ys) noexcept:
    """x's and y's buffers, held (release_pair), when both are C-contiguous native float32
    arrays of the 4-D shapes xs / ys, y writable and not overlapping x; else False with
    nothing held (a bound kernel's one-call form then declines)."""
    if not get_pair(x, bx, y, by, PyBUF_FORMAT):
        return False
    if f32_shape4(bx, xs) and f32_shape4(by, ys) and disjoint(bx, by, False):
        return True
    release_pair(bx, by)
    return False
