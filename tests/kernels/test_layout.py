"""Layout kernels (transpose): every backend against NumPy's np.transpose and the planned
form's one-call Cython path, and a Transpose node against onnxruntime."""
import numpy as np
import pytest

from edgedl._config import why_unavailable
from edgedl.errors import DTypeError, ShapeError, ValidationError
from edgedl.kernels import layout as L

from ort_util import ort_session, single_node_model

# rotations of trailing axes (the twins' swap_axes: tile edges, 8 x 8 blocks, rows of 1, a
# batch, every element size) and others (NumPy's copy)
CASES = [((1, 85, 3549), (0, 2, 1)), ((1, 4, 40, 40), (0, 2, 3, 1)), ((2, 4, 5, 3), (0, 2, 3, 1)),
         ((2, 10, 9, 7), (0, 2, 3, 1)), ((1, 64, 26, 26), (0, 2, 3, 1)),
         ((1, 33, 17, 5), (0, 3, 1, 2)), ((37, 70), (1, 0)), ((1, 1, 12, 12), (0, 2, 3, 1)),
         ((3, 1, 5), (0, 2, 1)), ((2, 3, 4, 5), (0, 1, 3, 2)),
         ((1, 58, 2, 7, 7), (0, 2, 1, 3, 4)),
         ((2, 3, 4), (2, 0, 1)), ((4, 5, 6), None), ((7,), (0,)), ((0, 3, 4), (0, 2, 1))]
DTYPES = [np.float32, np.float64, np.uint8, np.int8, np.int16, np.int64, np.bool_]


@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_vs_numpy(backend, dtype, rng):
    for shape, perm in CASES:
        x = (rng.standard_normal(shape) * 50).astype(dtype)
        want = np.ascontiguousarray(np.transpose(x, perm))
        got = L.transpose(x, perm, backend=backend)
        assert got.flags.c_contiguous and got.dtype == dtype
        np.testing.assert_array_equal(got, want, err_msg=f"{shape} {perm}")
        out = np.full(want.shape, 1, dtype)
        assert L.transpose(x, perm, out=out, backend=backend) is out
        np.testing.assert_array_equal(out, want)
        if x.ndim >= 2:              # a strided x: NumPy's copy
            xs = np.repeat(x, 2, axis=-1)[..., ::2]
            np.testing.assert_array_equal(L.transpose(xs, perm, backend=backend), want)


def test_transpose_refuses(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    with pytest.raises(ValidationError, match="permutation"):
        L.transpose(x, (0, 1, 1))
    with pytest.raises(ValidationError, match="permutation"):
        L.transpose(x, (0, 1))
    with pytest.raises(ValidationError, match="sequence"):
        L.transpose(x, "abc")
    with pytest.raises(DTypeError, match="NumPy array"):
        L.transpose([[1, 2]], (1, 0))
    with pytest.raises(ShapeError, match="out must have shape"):
        L.transpose(x, (0, 2, 1), out=np.empty((2, 3, 4), np.float32))
    with pytest.raises(DTypeError, match="dtype"):
        L.transpose(x, (0, 2, 1), out=np.empty((2, 4, 3), np.float64))
    ro = np.empty((2, 4, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValidationError, match="read-only"):
        L.transpose(x, (0, 2, 1), out=ro)
    run = L.transpose_plan(x.shape, (0, 2, 1), np.float32)
    with pytest.raises(ShapeError, match="as planned"):
        run(x.astype(np.float64))


def test_moves_no_data():
    assert L.moves_no_data((1, 1, 40, 40), (0, 2, 3, 1))
    assert L.moves_no_data((1, 8, 1, 1), (0, 2, 3, 1))
    assert not L.moves_no_data((1, 4, 40, 40), (0, 2, 3, 1))
    assert not L.moves_no_data((3, 2), (1, 0))


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_plan_and_bound_form(backend, dtype, rng):
    """transpose_plan gives np.transpose's values on every backend; on the Cython backend
    its one-call form (``run.bound``) too, and it declines (False, out untouched) arrays of
    other shapes, dtypes or layouts, a read-only out and one overlapping x."""
    for shape, perm in CASES:
        x = (rng.standard_normal(shape) * 50).astype(dtype)
        want = np.ascontiguousarray(np.transpose(x, perm))
        run = L.transpose_plan(shape, perm, dtype, backend)
        assert run.out_shape == want.shape
        np.testing.assert_array_equal(run(x), want)
        if run.bound is None:
            continue
        out = np.full(want.shape, 1, dtype)
        assert run.bound(x, out, 2) is True
        np.testing.assert_array_equal(out, want)
    if backend != "cython" or why_unavailable("cython") is not None:
        return
    x = (rng.standard_normal((1, 6, 5, 4)) * 50).astype(dtype)
    run = L.transpose_plan(x.shape, (0, 2, 3, 1), dtype, "cython")
    other = np.float64 if dtype != np.float64 else np.float32
    out = np.zeros(run.out_shape, dtype)
    ro = np.zeros(run.out_shape, dtype)
    ro.flags.writeable = False
    flat = np.zeros(x.size, dtype)
    for xa, oa in [(x.astype(other), out), (x[..., ::-1], out), (x, out.astype(other)),
                   (x, ro), (x, out.reshape(1, -1)), (x.reshape(6, 20), out),
                   (flat.reshape(x.shape), flat.reshape(run.out_shape))]:
        before = oa.copy()
        assert run.bound(xa, oa, 1) is False
        np.testing.assert_array_equal(oa, before)
    if dtype == np.float32:      # int32 has float32's size, not its format
        assert run.bound(x.view(np.int32), out.view(np.int32), 1) is False


@pytest.mark.parametrize("shape, perm", [((1, 85, 3549), [0, 2, 1]),
                                         ((1, 4, 40, 40), [0, 2, 3, 1]),
                                         ((1, 1, 10, 10), [0, 2, 3, 1]),
                                         ((2, 3, 4, 5), [3, 1, 0, 2])])
def test_transpose_node_vs_onnxruntime(backend, shape, perm, rng):
    import edgedl
    x = rng.standard_normal(shape).astype(np.float32)
    m = single_node_model("Transpose", [("x", x)], {"perm": perm})
    want = ort_session(m).run(None, {"x": x})[0]
    s = edgedl.InferenceSession(m, backend=backend)
    for _ in range(3):                         # traced, then planned
        got = s.run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, want)
        got[...] = 0                           # the caller's to keep: not the plan's buffer
