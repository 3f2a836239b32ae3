"""Region kernels (connected components, region sums, minimum-area rectangles): every backend
against the NumPy reference, and the reference against OpenCV (an oracle only)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgedl.errors import DTypeError, ShapeError, ValidationError
from edgedl.kernels import regions as R


def _run(mask, conn, backend, values=None):
    lab, n = R.label_regions(mask, conn, backend=backend)
    vals = mask.astype(np.float32) if values is None else values
    counts, sums = R.region_sums(lab, vals, n, backend=backend)
    return lab, n, counts, sums, R.min_area_rects(lab, n, backend=backend)


def _same_rects(a, b):
    """Same rectangles as corner sets (a square at 0 or 90 degrees is the same box)."""
    ca = np.sort(R.rect_corners(a).reshape(len(a), 8), axis=1)
    cb = np.sort(R.rect_corners(b).reshape(len(b), 8), axis=1)
    np.testing.assert_allclose(ca, cb, atol=1e-6)


def _check_against_ref(mask, conn, backend, values=None):
    got = _run(mask, conn, backend, values)
    want = _run(mask, conn, "numpy", values)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]
    np.testing.assert_array_equal(got[2], want[2])
    np.testing.assert_allclose(got[3], want[3], rtol=1e-12)
    _same_rects(got[4], want[4])
    return got


@pytest.mark.parametrize("conn", [4, 8])
@pytest.mark.parametrize("seed", range(6))
def test_random_masks_match_reference(backend, conn, seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 48, 2)
    mask = rng.random((h, w)) < (0.2 + 0.12 * seed)
    values = rng.random((h, w)).astype(np.float32)
    _check_against_ref(mask, conn, backend, values)


@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 2**32 - 1), st.sampled_from([4, 8]))
@settings(max_examples=40, deadline=None)
def test_property_matches_reference_all_backends(h, w, seed, conn):
    from edgedl import backends
    mask = np.random.default_rng(seed).random((h, w)) < 0.5
    for b in backends():
        _check_against_ref(mask, conn, b)


@pytest.mark.parametrize("conn", [4, 8])
@pytest.mark.parametrize("seed", range(4))
def test_reference_matches_opencv(conn, seed):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(100 + seed)
    mask = (rng.random((37, 53)) < 0.45).astype(np.uint8)
    lab, n, counts, _, rects = _run(mask, conn, "numpy")
    n_cv, lab_cv = cv2.connectedComponents(mask, connectivity=conn)
    assert n == n_cv - 1
    # the same partition: each of our regions is exactly one of OpenCV's
    for k in range(1, n + 1):
        assert len(np.unique(lab_cv[lab == k])) == 1
    assert len(np.unique(lab_cv[lab > 0])) == n
    for k in range(n):
        ys, xs = np.nonzero(lab == k + 1)
        _, (rw, rh), _ = cv2.minAreaRect(np.stack([xs, ys], 1).astype(np.float32))
        assert rects[k, 2] * rects[k, 3] == pytest.approx(rw * rh, rel=1e-4, abs=1e-3)
        assert counts[k] == len(xs)
        # every pixel centre inside the rectangle (in its frame)
        c, s = np.cos(rects[k, 4]), np.sin(rects[k, 4])
        dx, dy = xs - rects[k, 0], ys - rects[k, 1]
        assert np.all(np.abs(dx * c + dy * s) <= rects[k, 2] / 2 + 1e-6)
        assert np.all(np.abs(-dx * s + dy * c) <= rects[k, 3] / 2 + 1e-6)


def test_known_shapes(backend):
    m = np.zeros((12, 14), np.uint8)
    m[1:4, 2:9] = 1                       # 3 x 7 block: centres span 6 x 2
    m[6, 1] = 1                           # one pixel
    m[8:12, 12] = 1                       # vertical line of 4
    for i in range(5):                    # diagonal: one region with 8-conn, five with 4-conn
        m[6 + i, 4 + i] = 1
    lab, n, counts, _, rects = _run(m, 8, backend)
    assert n == 4
    assert list(counts) == [21, 1, 5, 4]          # raster order of first pixels
    block, dot, diag, line = rects
    assert sorted(block[2:4]) == pytest.approx([2.0, 6.0]) and block[:2] == pytest.approx([5, 2])
    assert list(dot[:4]) == [1.0, 6.0, 0.0, 0.0]
    assert sorted(line[2:4]) == pytest.approx([0.0, 3.0])
    assert sorted(diag[2:4]) == pytest.approx([0.0, 4 * np.sqrt(2)])
    assert _run(m, 4, backend)[1] == 8


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0)])
def test_empty_maps(backend, shape):
    lab, n = R.label_regions(np.zeros(shape, bool), backend=backend)
    assert n == 0 and lab.shape == shape and lab.dtype == np.int32
    c, s = R.region_sums(lab, np.zeros(shape, np.float32), n, backend=backend)
    assert c.shape == s.shape == (0,)
    assert R.min_area_rects(lab, n, backend=backend).shape == (0, 5)


def test_all_off_and_all_on(backend):
    lab, n, counts, sums, rects = _run(np.zeros((9, 7), np.uint8), 8, backend)
    assert n == 0 and not lab.any() and rects.shape == (0, 5)
    lab, n, counts, sums, rects = _run(np.ones((9, 7), bool), 8, backend)
    assert n == 1 and (lab == 1).all() and counts[0] == 63 and sums[0] == 63
    assert sorted(rects[0, 2:4]) == pytest.approx([6.0, 8.0])
    assert rects[0, :2] == pytest.approx([3.0, 4.0])


def test_checkerboard(backend):
    m = (np.add.outer(np.arange(11), np.arange(13)) % 2 == 0)
    assert _check_against_ref(m, 4, backend)[1] == int(m.sum())
    assert _check_against_ref(m, 8, backend)[1] == 1


def test_nan_values_propagate_into_their_region_only(backend):
    m = np.zeros((4, 8), bool)
    m[:, :3] = m[:, 5:] = True
    v = np.ones((4, 8))
    v[0, 0] = np.nan
    v[0, 4] = np.nan                      # off pixel: ignored
    _, n, counts, sums, _ = _run(m, 8, backend, v)
    assert n == 2 and np.isnan(sums[0]) and sums[1] == 12.0


def test_integer_masks_and_absent_labels(backend):
    m = np.array([[0, 3, 0], [0, 7, 0]], np.int64)
    lab, n = R.label_regions(m, backend=backend)
    assert n == 1 and lab.tolist() == [[0, 1, 0], [0, 1, 0]]
    rects = R.min_area_rects(lab, 3, backend=backend)          # labels 2, 3 have no pixel
    assert np.isnan(rects[1:]).all() and not np.isnan(rects[0]).any()
    c, s = R.region_sums(lab, np.ones((2, 3)), 3, backend=backend)
    assert c.tolist() == [2, 0, 0]


def test_out_argument(backend):
    m = np.eye(5, dtype=bool)
    out = np.full((5, 5), -1, np.int32)
    res, n = R.label_regions(m, 8, out=out, backend=backend)
    assert res is out and n == 1 and out.sum() == 5


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(DTypeError, match="mask"):
        R.label_regions(np.zeros((3, 3), np.float32))
    with pytest.raises(ShapeError, match="mask"):
        R.label_regions(np.zeros((1, 3, 3), bool))
    for bad in (6, 8.0, True, "8"):
        with pytest.raises(ValidationError, match="connectivity"):
            R.label_regions(np.zeros((3, 3), bool), connectivity=bad)
    lab = np.array([[0, 2]], np.int32)
    with pytest.raises(ValidationError, match=r"\[0, n\]"):
        R.min_area_rects(lab, 1)
    with pytest.raises(DTypeError, match="labels"):
        R.min_area_rects(lab.astype(np.int64), 2)
    with pytest.raises(ShapeError, match="values"):
        R.region_sums(lab, np.ones((2, 2)), 2)
    with pytest.raises(DTypeError, match="values"):
        R.region_sums(lab, np.ones((1, 2), np.int32), 2)
    with pytest.raises(ShapeError, match="out"):
        R.label_regions(np.zeros((3, 3), bool), out=np.zeros((2, 2), np.int32))


def test_warmup_runs(backend):
    R._warmup(backend)


def test_numba_area_tolerance_is_the_references():
    """The numba twin keeps its own AREA_RTOL (backends never import one another; the Cython
    twin writes it as a cdef constant): it must equal the reference's."""
    from conftest import require_backend
    from edgedl.kernels import _dispatch
    from edgedl.kernels._ref import regions as ref
    require_backend("numba")
    assert _dispatch.twin_module("regions", "numba").AREA_RTOL == ref.AREA_RTOL
