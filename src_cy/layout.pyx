# cython: boundscheck=False, wraparound=False
"""Cython twins of edgedl.kernels._ref.layout (same names and arguments), and the planned
transpose's one-call form (SwapAxes).

swap_axes copies tile by tile: 32 x 32 elements, whose source rows stay in L1 while the
tile's destination rows are written in order (4-byte values 8 x 8 blocks at a time through
registers, edl_layout.h); the threads take runs of output-row tiles. A row or a column of
one is one copy.
"""
from cython.parallel cimport prange
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, strcmp

from edl_buffer cimport PyBUF_FORMAT, disjoint, get_pair, release_pair
from edl_omp cimport omp_get_max_threads, omp_set_num_threads

cdef extern from "edl_layout.h":
    void edl_transpose_cols_u32(const uint32_t* x, uint32_t* y, Py_ssize_t nr, Py_ssize_t nc,
                                Py_ssize_t c0, Py_ssize_t c1) noexcept nogil

cdef enum:
    _TILE = 32
    # below this many elements one thread does it all (a parallel region's start and end
    # cost more than the copy)
    _PAR_ELEMS = 1 << 17

# the values' bits: the wrapper views any dtype as unsigned integers of its size
ctypedef fused bits_t:
    uint8_t
    uint16_t
    uint32_t
    uint64_t


cdef void _swap_cols(const bits_t* x, bits_t* y, Py_ssize_t nr, Py_ssize_t nc,
                     Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Output rows [c0, c1) of one batch, a 32-row tile of x at a time."""
    cdef Py_ssize_t c, r, r0 = 0, r1
    if bits_t is uint32_t:
        edl_transpose_cols_u32(x, y, nr, nc, c0, c1)
        return
    while r0 < nr:
        r1 = min(r0 + _TILE, nr)
        for c in range(c0, c1):
            for r in range(r0, r1):
                y[c * nr + r] = x[r * nc + c]
        r0 = r1


cdef void _swap(const bits_t* x, bits_t* y, Py_ssize_t nb, Py_ssize_t nr,
                Py_ssize_t nc) noexcept nogil:
    """y (nb, nc, nr) = x (nb, nr, nc) transposed per batch, C-contiguous, not overlapping."""
    cdef Py_ssize_t tiles = (nc + _TILE - 1) // _TILE, t, b, c0
    if nr == 1 or nc == 1:          # the same order: one copy
        memcpy(y, x, nb * nr * nc * sizeof(bits_t))
        return
    for t in prange(nb * tiles, schedule="static",
                    use_threads_if=nb * nr * nc >= _PAR_ELEMS):
        b = t // tiles
        c0 = (t % tiles) * _TILE
        _swap_cols(x + b * nr * nc, y + b * nr * nc, nr, nc, c0, min(c0 + _TILE, nc))


def swap_axes(const bits_t[:, :, ::1] x, bits_t[:, :, ::1] out):
    if x.shape[0] * x.shape[1] * x.shape[2]:
        _swap(&x[0, 0, 0], &out[0, 0, 0], x.shape[0], x.shape[1], x.shape[2])


cdef class SwapAxes:
    """A transpose bound to its input shape, dtype and (B, R, C) split (the planned
    transpose's one-call form, which the ONNX runtime's compiled plan calls):
    ``swap(x, y, nthreads)`` writes x's (B, R, C) view transposed to (B, C, R) into y and
    returns True, or returns False having touched nothing when x or y is not a C-contiguous
    array of the bound shapes and dtype (its buffer format), y not writable or overlapping
    x."""
    cdef Py_ssize_t nb, nr, nc
    cdef int size
    cdef bytes fmt
    cdef tuple xs, ys

    def __init__(self, tuple x_shape, tuple y_shape, bytes fmt, int itemsize, Py_ssize_t nb,
                 Py_ssize_t nr, Py_ssize_t nc):
        cdef Py_ssize_t n = 1, d
        for d in x_shape:
            n *= d
        if itemsize not in (1, 2, 4, 8) or nb * nr * nc != n or min(nb, nr, nc) < 0:
            raise ValueError("SwapAxes: (B, R, C) must split x's elements, of 1, 2, 4 or 8 "
                             "bytes")
        self.xs, self.ys, self.fmt, self.size = x_shape, y_shape, fmt, itemsize
        self.nb, self.nr, self.nc = nb, nr, nc

    cdef bint _is(self, const Py_buffer* b, tuple shape) noexcept:
        cdef Py_ssize_t i
        if b.itemsize != self.size or b.ndim != len(shape) or strcmp(b.format, self.fmt):
            return False
        for i in range(b.ndim):
            if b.shape[i] != <Py_ssize_t>shape[i]:
                return False
        return True

    def __call__(self, x, y, int nthreads):
        cdef Py_buffer bx, by
        cdef bint ok
        if not get_pair(x, &bx, y, &by, PyBUF_FORMAT):
            return False
        ok = self._is(&bx, self.xs) and self._is(&by, self.ys) and disjoint(&bx, &by, False)
        if ok and bx.len:
            if omp_get_max_threads() != nthreads:
                omp_set_num_threads(nthreads)
            with nogil:
                if self.size == 4:
                    _swap(<const uint32_t*>bx.buf, <uint32_t*>by.buf, self.nb, self.nr,
                          self.nc)
                elif self.size == 8:
                    _swap(<const uint64_t*>bx.buf, <uint64_t*>by.buf, self.nb, self.nr,
                          self.nc)
                elif self.size == 2:
                    _swap(<const uint16_t*>bx.buf, <uint16_t*>by.buf, self.nb, self.nr,
                          self.nc)
                else:
                    _swap(<const uint8_t*>bx.buf, <uint8_t*>by.buf, self.nb, self.nr, self.nc)
        release_pair(&bx, &by)
        return ok
