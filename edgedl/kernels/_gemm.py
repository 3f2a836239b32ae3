"""The conv kernels' GEMMs: NumPy's BLAS on one thread, split over edgedl's own threads, and
the blocked im2col + GEMM the fast backends' dense convolutions run on (``conv_gemm_blocked``).

OpenBLAS splits a GEMM statically over its threads, so on a busy machine one preempted worker
stalls the whole GEMM (FastestDet at 2 threads with another process on a core: 6.5 ms at one
thread, 72 ms with OpenBLAS on 2). Here the output is cut into more chunks than threads and the
threads (the caller too) take chunks as they come free, so a preempted thread delays only the
chunk it holds. np.matmul releases the GIL, so plain Python threads run the chunks in parallel.

Chunk edges depend only on the shape, never on the thread count or on which thread turns up
when: OpenBLAS rounds a column's sums differently in GEMMs of different widths, so edges that
moved with the scheduling made the same input give different last bits run after run, and
edges set by the thread count did the same whenever a session's thread governor switched
between 1 and n threads (seen on AVX2 OpenBLAS kernels). One thread computes a splittable
GEMM chunk by chunk on the same edges.
"""
import collections
import os
import threading

import numpy as np

from .. import _config
from . import _blas

# Multiply-adds (M*N*K) below which the caller computes the GEMM alone (waking a worker and the
# per-chunk Python overhead cost ~20-40 us), and the least work of one chunk.
_MIN_WORK = 1 << 21
_CHUNK_WORK = 1 << 19
_ALIGN = 16     # chunk edges on 16 columns (64 bytes of float32): whole SIMD blocks / lines
_CHUNKS = 8     # equal chunks a splittable GEMM is cut into (enough to balance 2-4 threads)


def single_threaded_blas():
    """Keep NumPy's BLAS on one thread (edgedl's threads split the GEMMs instead)."""
    _blas.set_threads(1)


class _Job:
    """One GEMM split along one side of the output into chunks of ``chunk`` rows / columns
    (the last one takes the rest); threads calling run() take chunks until none is left.
    While no helper has turned up (all cores busy elsewhere), the caller claims everything
    left at once, so it never waits for a late helper; it still computes that rest chunk by
    chunk on the same edges (see the module note)."""
    __slots__ = ("a", "b", "out", "by_cols", "size", "least", "chunk", "pos", "busy",
                 "helped", "lock", "done", "error")

    def __init__(self, a, b, out, by_cols, size, least, chunk):
        self.a, self.b, self.out, self.by_cols = a, b, out, by_cols
        self.size, self.least, self.chunk = size, least, chunk
        self.pos = self.busy = 0
        self.helped = False
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error = None

    def _edge(self, s):
        """The end of the chunk starting at ``s``: a function of (s, size, least, chunk),
        i.e. of the shape only, never of the threads or of which one asks when."""
        return self.size if self.size - s - self.chunk < self.least else s + self.chunk

    def _take(self, caller):
        with self.lock:
            if not caller:
                self.helped = True
            s = self.pos
            if s >= self.size:
                return None
            e = self.size if caller and s and not self.helped else self._edge(s)
            self.pos = e
            self.busy += 1
        return s, e

    def run(self, caller=False):
        a, b, out = self.a, self.b, self.out
        while True:
            got = self._take(caller)
            if got is None:
                return
            s, end = got
            try:
                while s < end:
                    edge = self._edge(s)
                    if self.by_cols:
                        np.matmul(a, b[:, s:edge], out=out[:, s:edge])
                    else:
                        np.matmul(a[s:edge], b, out=out[s:edge])
                    s = edge
            except BaseException as e:    # re-raised in the calling thread
                self.error = e
            with self.lock:
                self.busy -= 1
                if self.busy == 0 and self.pos >= self.size:
                    self.done.set()


class _Pool:
    """Persistent daemon workers that wait for jobs on one queue (started lazily)."""

    def __init__(self):
        self.cv = threading.Condition(threading.Lock())
        self.queue = collections.deque()
        self.workers = 0

    def submit(self, job, helpers):
        with self.cv:
            while self.workers < helpers:
                threading.Thread(target=self._work, name="edgedl-gemm", daemon=True).start()
                self.workers += 1
            self.queue.extend([job] * helpers)
            self.cv.notify(helpers)

    def _work(self):
        while True:
            with self.cv:
                while not self.queue:
                    self.cv.wait()
                job = self.queue.popleft()
            job.run()


_pool = _Pool()


def _reset_after_fork():
    global _pool
    _pool = _Pool()      # the child has none of the parent's worker threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def matmul_into(a, b, out, threads=None):
    """``np.matmul(a, b, out=out)`` for 2-D a (M, K), b (K, N), out (M, N), on up to
    ``threads`` threads (default edgedl.get_num_threads()).

    Small GEMMs run on the caller alone. ``out`` must not overlap a or b. Safe to call from
    several Python threads at once.
    """
    if _blas._current != 1:
        _blas.set_threads(1)
    m, k = a.shape
    n = b.shape[1]
    t = _config.get_num_threads() if threads is None else threads
    work = m * n * k
    if work < _MIN_WORK:
        np.matmul(a, b, out=out)
        return out
    # split the longer side (conv: N = output pixels, usually)
    by_cols = n >= m
    size, align = (n, _ALIGN) if by_cols else (m, 4)
    least = max(align, -(-size * _CHUNK_WORK // work // align) * align)
    if size < 2 * least:
        np.matmul(a, b, out=out)
        return out
    job = _Job(a, b, out, by_cols, size, least,
               max(least, -(-size // _CHUNKS // align) * align))
    if t > 1:
        _pool.submit(job, min(t, size // least) - 1)
    job.run(caller=True)
    job.done.wait()
    if job.error is not None:
        raise job.error
    return out


# Columns of one im2col block: they stay in L2 (~384 KB) while the GEMM reads them, but
# blocks have at least 256 columns: 1.2-1.4x faster than one big im2col. GEMMs with few
# output rows (a stem conv: 16-24 filters over K = 27..108) read each block only once:
# smaller blocks (~L2/4 in all) ran 15-25% faster there.
_COLS_BUDGET = 384 << 10
_COLS_BUDGET_SMALL_M, _SMALL_M = 128 << 10, 32


def conv_gemm_blocked(im2col, x, w, kh, kw, sh, sw, ph, pw, dh, dw, y):
    """y (M, OH, OW) = w (M, K) @ im2col(x) with NumPy's BLAS (split over edgedl's threads),
    one block of output rows at a time (``im2col`` is the calling backend's twin)."""
    c, h, wd = x.shape
    m, oh, ow = y.shape
    y2 = y.reshape(m, oh * ow)
    if kh == kw == 1 and sh == sw == 1 and ph == pw == 0 and (oh, ow) == (h, wd):
        matmul_into(w, x.reshape(c, h * wd), y2)
        return
    K = w.shape[1]
    budget = _COLS_BUDGET_SMALL_M if m < _SMALL_M else _COLS_BUDGET
    rb = min(oh, max(budget // (K * ow * x.itemsize), -(-256 // ow)))
    cols = np.empty((K, rb * ow), dtype=x.dtype)
    for o0 in range(0, oh, rb):
        r = min(rb, oh - o0)
        cb = cols.reshape(-1)[:K * r * ow].reshape(K, r * ow)    # contiguous, as im2col needs
        # rows o0.. of the output: the same im2col with the top pad shifted
        im2col(x, kh, kw, sh, sw, ph - o0 * sh, pw, dh, dw, r, ow, cb)
        matmul_into(w, cb, y2[:, o0 * ow:(o0 + r) * ow])


def needs_epilogue(bias, act):
    """Whether a conv's epilogue has work: an activation (code 0 is ACT_NONE) or a bias."""
    return act != 0 or bool(np.any(bias))
