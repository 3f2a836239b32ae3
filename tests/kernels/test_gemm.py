"""edgedl.kernels._gemm.matmul_into (the conv GEMMs split over edgedl's threads) vs np.matmul:
odd shapes, both split directions, strided operands, 1-3 threads, concurrent callers, errors."""
import threading

import numpy as np
import pytest

from edgedl.kernels import _blas, _gemm

TOL = {np.float32: 1e-5, np.float64: 1e-12}
SHAPES = [(1, 1, 1), (3, 5, 7), (17, 33, 1001), (33, 71, 257), (250, 19, 13), (7, 300, 129),
          (64, 64, 640), (129, 3, 2)]


@pytest.fixture
def split_everything(monkeypatch):
    """Split even tiny GEMMs into tiny chunks, so the threaded path runs on small shapes."""
    monkeypatch.setattr(_gemm, "_MIN_WORK", 0)
    monkeypatch.setattr(_gemm, "_CHUNK_WORK", 1)


def _check(got, a, b, dtype):
    want = a.astype(np.float64) @ b.astype(np.float64)
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    assert got.shape == want.shape
    assert np.abs(got - want).max(initial=0) <= TOL[dtype] * scale * max(1, a.shape[1])


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_matmul(split_everything, shape, dtype, threads, rng):
    m, k, n = shape
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = np.full((m, n), np.nan, dtype)
    assert _gemm.matmul_into(a, b, out, threads=threads) is out
    _check(out, a, b, dtype)


@pytest.mark.parametrize("threads", [2, 3])
def test_strided_operands_and_out_view(split_everything, threads, rng):
    # what conv passes: a transposed weight view, column blocks of a wider output
    a = rng.standard_normal((40, 24)).astype(np.float32).T          # (24, 40), F order
    b = rng.standard_normal((80, 40)).astype(np.float32)[::2].T    # (40, 40), strided
    big = np.full((24, 100), np.nan, np.float32)
    _gemm.matmul_into(a, b, big[:, 30:70], threads=threads)
    _check(big[:, 30:70], a, b, np.float32)
    assert np.isnan(big[:, :30]).all() and np.isnan(big[:, 70:]).all()


def test_default_sizes_split_a_large_gemm(rng):
    # default thresholds: this one is split (>= _MIN_WORK), the tiny one is not; both exact
    for m, k, n in [(64, 64, 1600), (4, 4, 4)]:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        out = np.empty((m, n), np.float32)
        _gemm.matmul_into(a, b, out, threads=2)
        _check(out, a, b, np.float32)


def test_concurrent_callers(split_everything, rng):
    """Several Python threads split their GEMMs over the one pool at the same time."""
    cases = []
    for i in range(6):
        m, k, n = 9 + 7 * i, 31 + i, 301 - 13 * i
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        cases.append((a, b, [np.empty((m, n), np.float32) for _ in range(20)]))
    errors = []
    start = threading.Barrier(len(cases))

    def work(a, b, outs, threads):
        try:
            start.wait()
            for o in outs:
                _gemm.matmul_into(a, b, o, threads=threads)
        except BaseException as e:   # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=c + (1 + i % 3,)) for i, c in enumerate(cases)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors
    for a, b, outs in cases:
        for o in outs:
            _check(o, a, b, np.float32)


def test_error_in_a_chunk_reaches_the_caller(split_everything, rng):
    a = rng.standard_normal((8, 5)).astype(np.float32)
    b = rng.standard_normal((5, 300)).astype(np.float32)
    with pytest.raises(TypeError):      # float -> int output: a casting error in every chunk
        _gemm.matmul_into(a, b, np.empty((8, 300), np.int32), threads=3)
    out = np.empty((8, 300), np.float32)    # the pool still works afterwards
    _gemm.matmul_into(a, b, out, threads=3)
    _check(out, a, b, np.float32)


def test_blas_kept_on_one_thread(rng):
    a = np.ones((2, 2), np.float32)
    _gemm.matmul_into(a, a, np.empty((2, 2), np.float32), threads=2)
    if _blas.get_threads() is None:
        pytest.skip("NumPy's BLAS exposes no thread setting here")
    assert _blas.get_threads() == 1
