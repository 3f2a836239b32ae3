# Plain buffer requests for the fast entries (activations.fast_f32, conv.ConvGemmF32): cheaper
# than typed memoryviews when the interpreter runs cache-cold.
from cpython.buffer cimport PyBuffer_Release, PyBUF_FORMAT, PyBUF_ND, PyBUF_WRITABLE

cdef extern from "Python.h":
    # PyObject_GetBuffer without Cython's `except -1`: a refusal is an answer here, not an error
    int get_buffer "PyObject_GetBuffer"(object obj, Py_buffer *view, int flags)
    void PyErr_Clear()
