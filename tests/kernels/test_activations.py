"""Activations: every kernel x backend x dtype against the NumPy reference, the reference
against onnxruntime single-node models (random attributes/axes), the derivatives against
finite differences and PyTorch's kink conventions; layouts, in-place, extremes, bad input."""
import numpy as np
import pytest

import edgedl
from edgedl.errors import BackendError, DTypeError, ShapeError, ValidationError
from edgedl.kernels import activations as A
from edgedl.kernels.activation_table import ACTIVATIONS as TABLE

from conftest import ARM_EMULATED, require_backend, tail_sizes

DTYPES = [np.float32, np.float64]


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


def _around_defaults(rec):
    return lambda r: {p.name: p.default * _u(r, 0.5, 1.5) for p in rec.params}


# name -> random keyword parameters (besides x / dy): the ranges below, else each parameter
# drawn around its default (the table's); prelu's slope and softmax's axis depend on x's shape
RANDOM = {
    "clip": lambda r: {"lo": _u(r, -3, 0), "hi": _u(r, 0.1, 3)},
    "leaky_relu": lambda r: {"alpha": _u(r, 0, 0.5)},
    "elu": lambda r: {"alpha": _u(r, 0.1, 2)},
    "selu": lambda r: {"alpha": _u(r, 1, 2), "gamma": _u(r, 0.5, 1.5)},
    "hard_sigmoid": lambda r: {"alpha": _u(r, 0.05, 0.5), "beta": _u(r, 0.2, 0.8)},
    "swish": lambda r: {"beta": _u(r, 0.2, 2)},
}
PARAMS = {n: None if r.kind in ("channel", "axis") else RANDOM.get(n, _around_defaults(r))
          for n, r in TABLE.items()}
NAMES = list(PARAMS)
SOFTMAX = tuple(n for n, r in TABLE.items() if r.kind == "axis")


def _params(name, rng, x):
    if name == "prelu":
        c = x.shape[1] if x.ndim >= 2 else 1
        return {"slope": rng.uniform(-0.5, 0.5, c).astype(x.dtype)}
    if name in SOFTMAX:
        return {"axis": int(rng.integers(-x.ndim, x.ndim))} if x.ndim else {}
    return PARAMS[name](rng)


def _tol(name, dtype, grad=False):
    # log_softmax and the gradients subtract nearly equal terms; alpha * x + beta may be
    # contracted to an FMA (hard_*): those get an absolute tolerance of a few ulp of 1.
    if dtype == np.float32:
        rtol, atol = 2e-6, 1e-37
        if grad or name in ("log_softmax", "hard_sigmoid", "hard_swish"):
            rtol, atol = 1e-5, 2e-6
    else:
        rtol, atol = 1e-12, 1e-300
        if grad or name in ("log_softmax", "hard_sigmoid", "hard_swish"):
            rtol, atol = 1e-11, 1e-13
    return dict(rtol=rtol, atol=atol)


def _x(rng, shape, dtype, scale=4.0):
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    if x.size > 4:   # the kinks themselves
        flat = x.reshape(-1)
        flat[:4] = [0.0, 6.0, -3.0, 3.0]
    return x


def _call(name, x, backend, dy=None, **kw):
    if dy is None:
        return getattr(edgedl, name)(x, backend=backend, **kw)
    return getattr(edgedl, name + "_grad")(x, dy, backend=backend, **kw)


def _shapes():
    shapes = [(n,) for n in tail_sizes()] + [(), (2, 3, 5, 7), (1, 16, 9, 9), (3, 0, 4)]
    return shapes if not ARM_EMULATED else shapes[:6]


# ----------------------------------------------------------------------------- vs reference
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("grad", [False, True], ids=["fwd", "grad"])
def test_matches_reference(backend, name, dtype, grad, rng):
    for shape in _shapes():
        if name in SOFTMAX and shape == ():
            continue
        x = _x(rng, shape, dtype)
        dy = rng.standard_normal(shape).astype(dtype) if grad else None
        kw = _params(name, rng, x)
        got = _call(name, x, backend, dy, **kw)
        want = _call(name, x, "numpy", dy, **kw)
        assert got.dtype == dtype and got.shape == x.shape
        np.testing.assert_allclose(got, want, **_tol(name, dtype, grad),
                                   err_msg=f"{name} grad={grad} {backend} {shape} {kw}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_strided_and_inplace(backend, name, dtype, rng):
    base = _x(rng, (4, 6, 10), dtype)
    dbase = rng.standard_normal((4, 6, 10)).astype(dtype)
    for view in (lambda a: a[:, ::2, 1:], lambda a: a.transpose(2, 0, 1),
                 lambda a: np.asfortranarray(a), lambda a: a[::-1]):
        x, dy = view(base), view(dbase)
        kw = _params(name, rng, x)
        want = _call(name, np.ascontiguousarray(x), "numpy", **kw)
        np.testing.assert_allclose(_call(name, x, backend, **kw), want, **_tol(name, dtype))
        gwant = _call(name, np.ascontiguousarray(x), "numpy", np.ascontiguousarray(dy), **kw)
        # out= a strided view, then in place on x and on dy
        out = np.zeros((x.shape[0], x.shape[1], 2 * x.shape[2]), dtype)[:, :, ::2]
        res = _call(name, x, backend, out=out, **kw)
        assert res is out
        np.testing.assert_allclose(out, want, **_tol(name, dtype))
        x2, dy2 = x.copy(), dy.copy()
        assert _call(name, x2, backend, dy2, out=dy2, **kw) is dy2
        np.testing.assert_allclose(dy2, gwant, **_tol(name, dtype, True))
        assert _call(name, x2, backend, out=x2, **kw) is x2
        np.testing.assert_allclose(x2, want, **_tol(name, dtype))


def test_overlapping_out(backend):
    a = np.arange(-8, 8, dtype=np.float32)
    want = edgedl.sigmoid(a[:-1].copy(), backend="numpy")
    edgedl.sigmoid(a[:-1], out=a[1:], backend=backend)   # shifted overlap: not in place
    np.testing.assert_allclose(a[1:], want, rtol=2e-6)


@pytest.mark.parametrize("name", ["sigmoid", "swish", "tanh", "elu", "selu", "softplus",
                                  "hard_swish", "mish"])
def test_inplace_long(backend, name, rng):
    """In place over several of the numba twins' in-place blocks (and a tail) gives exactly
    the out-of-place result, NaN included."""
    x = (rng.standard_normal(2 * 2048 + 37) * 6).astype(np.float32)
    x[[0, 2048, 4131]] = np.nan
    kw = _params(name, rng, x)
    want = _call(name, x, backend, **kw)
    x2 = x.copy()
    assert _call(name, x2, backend, out=x2, **kw) is x2
    np.testing.assert_array_equal(x2, want)


# ----------------------------------------------------------------------------- vs onnxruntime
def _ort_attrs(params):
    return lambda kw: {p.onnx_attr: kw[p.name] for p in params if p.name in kw}


# name -> (op_type, opset, attrs from our kwargs): the table's activations with an ONNX op of
# attributes only (Clip takes inputs, PRelu a slope: tested apart, as relu6 = Clip(0, 6))
ORT = {n: (r.onnx_op, max(r.onnx_since, 13), _ort_attrs(r.params))
       for n, r in TABLE.items()
       if r.onnx_op and r.onnx_since and r.kind in ("elementwise", "axis") and n != "clip"}


def _ort(op, inputs, attrs, opset):
    from ort_util import run_ort_node
    return run_ort_node(op, inputs, attrs, opset=opset)[0]


@pytest.mark.parametrize("name", sorted(ORT) + ["clip", "relu6", "prelu"])
def test_against_onnxruntime(backend, name, rng):
    pytest.importorskip("onnxruntime")
    for trial in range(4):
        shape = tuple(int(s) for s in rng.integers(1, 9, size=rng.integers(1, 5)))
        if trial == 0:
            shape = (1, 3, 17, 19)
        x = _x(rng, shape, np.float32, scale=float(rng.choice([1, 4, 30])))
        kw = _params(name, rng, x)
        if name in ("clip", "relu6"):
            lo, hi = (0.0, 6.0) if name == "relu6" else (kw["lo"], kw["hi"])
            want = _ort("Clip", [("x", x), ("lo", np.array(lo, np.float32)),
                              ("hi", np.array(hi, np.float32))],
                        {}, 13)
        elif name == "prelu":
            # ONNX slope layout: (C, 1, ..., 1) for the channel axis
            s = kw["slope"].reshape((-1,) + (1,) * (x.ndim - 2)) if x.ndim >= 2 else kw["slope"]
            want = _ort("PRelu", [("x", x), ("slope", s)], {}, 16)
            np.testing.assert_allclose(edgedl.prelu(x, s, backend=backend), want, rtol=1e-6)
        else:
            op, opset, attrs = ORT[name]
            want = _ort(op, [("x", x)], attrs(kw), opset)
        got = _call(name, x, backend, **kw)
        tol = dict(rtol=2e-6, atol=1e-6 if name == "log_softmax" else 1e-30)
        if name in ("mish", "softplus", "elu", "selu", "tanh", "sigmoid", "hard_sigmoid",
                    "hard_swish"):
            tol["atol"] = 2e-7   # onnxruntime's approximations (abs. error ~1e-7), FMAs
        np.testing.assert_allclose(got, want, **tol, err_msg=f"{name} {shape} {kw}")


def test_prelu_broadcasting(backend, rng):
    x = _x(rng, (2, 3, 4, 5), np.float32)
    for slope in (np.float32(0.2), rng.uniform(-1, 1, (3,)), rng.uniform(-1, 1, (4, 1)),
                  rng.uniform(-1, 1, (5,)).astype(np.float32), rng.uniform(-1, 1, (3, 1, 5)),
                  rng.uniform(-1, 1, (1, 3, 4, 5)), rng.uniform(-1, 1, (3, 1, 1)),
                  rng.uniform(-1, 1, 6).astype(np.float32)[::2]):   # strided per-channel
        s = np.asarray(slope, np.float32)
        # a 1-D slope of length x.shape[1] is per channel (axis 1); others broadcast as NumPy
        sb = s.reshape(1, 3, 1, 1) if s.shape == (3,) else s
        want = np.where(x >= 0, x, sb * x)
        np.testing.assert_allclose(edgedl.prelu(x, slope, backend=backend), want, rtol=1e-6)
        gw = np.where(x > 0, 1, np.broadcast_to(sb, x.shape)).astype(np.float32)
        np.testing.assert_allclose(edgedl.prelu_grad(x, np.ones_like(x), slope, backend=backend),
                                   gw, rtol=1e-6)
    with pytest.raises(ShapeError, match="slope"):
        edgedl.prelu(x, np.ones(4, np.float32), backend=backend)


# ----------------------------------------------------------------------------- derivatives
def test_reference_grads_match_finite_differences(rng):
    x = rng.uniform(-7, 7, (3, 4, 50))
    x = x[np.abs(np.abs(x) - 3) > 1e-3].reshape(-1)[:500]    # away from kinks
    x = x[np.abs(x - 6) > 1e-3][:450].reshape(3, 6, 25)
    x[np.abs(x) < 1e-3] = 0.5
    dy = rng.standard_normal(x.shape)
    h = 1e-6
    for name in NAMES:
        kw = _params(name, rng, x)
        if name == "clip":
            x = np.where(np.abs(x - kw["lo"]) < 1e-3, 0.5, x)
            x = np.where(np.abs(x - kw["hi"]) < 1e-3, 0.5, x)
        if name == "hard_sigmoid":
            v = kw["alpha"] * x + kw["beta"]
            x = np.where((np.abs(v) < 1e-3) | (np.abs(v - 1) < 1e-3), 0.5, x)
        f = lambda t: _call(name, t, "numpy", **kw)
        if name in SOFTMAX:   # vector-Jacobian product: d/dh <dy, f(x + h v)> per direction
            v = rng.standard_normal(x.shape)
            fd = (np.sum(dy * f(x + h * v)) - np.sum(dy * f(x - h * v))) / (2 * h)
            got = np.sum(_call(name, x, "numpy", dy, **kw) * v)
            assert abs(fd - got) <= 1e-6 * max(1, abs(fd)), name
        else:
            fd = dy * (f(x + h) - f(x - h)) / (2 * h)
            np.testing.assert_allclose(_call(name, x, "numpy", dy, **kw), fd, rtol=1e-6,
                                       atol=1e-7, err_msg=name)


KINKS = [   # (name, kwargs, x, expected f'(x)) -- PyTorch's conventions
    ("relu", {}, [0.0, -1e-30, 1e-30], [0, 0, 1]),
    ("relu6", {}, [0.0, 6.0, 3.0, 7.0], [0, 0, 1, 0]),
    ("clip", {"lo": -1.0, "hi": 2.0}, [-1.0, 2.0, -1.5, 2.5, 0.0], [1, 1, 0, 0, 1]),
    ("leaky_relu", {"alpha": 0.1}, [0.0, 1.0, -1.0], [0.1, 1, 0.1]),
    ("elu", {"alpha": 0.5}, [0.0, 1.0], [0.5, 1]),
    ("hard_sigmoid", {}, [-2.5, 2.5, 0.0, 3.0], [0, 0, 0.2, 0]),
    ("hard_swish", {}, [-3.0, 3.0, -4.0, 4.0, 0.0], [-0.5, 1.5, 0, 1, 0.5]),
    ("sigmoid", {}, [0.0], [0.25]),
    ("tanh", {}, [0.0], [1.0]),
    ("softplus", {}, [0.0], [0.5]),
    ("swish", {"beta": 1.0}, [0.0], [0.5]),
    ("mish", {}, [0.0], [np.tanh(np.log(2.0))]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,kw,x,want", KINKS, ids=[k[0] for k in KINKS])
def test_grad_at_kinks(backend, name, kw, x, want, dtype):
    x = np.array(x, dtype)
    got = _call(name, x, backend, np.ones_like(x), **kw)
    np.testing.assert_allclose(got, np.array(want, dtype), rtol=1e-6, atol=1e-7)


def test_selu_defaults_are_onnx_and_silu_is_swish(backend):
    x = np.linspace(-3, 3, 11)
    want = 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x))
    np.testing.assert_allclose(edgedl.selu(x, backend=backend), want, rtol=1e-12)
    np.testing.assert_allclose(edgedl.silu(x, backend=backend),
                               edgedl.swish(x, 1.0, backend=backend), rtol=1e-15)
    np.testing.assert_allclose(edgedl.silu_grad(x, x, backend=backend),
                               edgedl.swish_grad(x, x, 1.0, backend=backend), rtol=1e-15)


# ----------------------------------------------------------------------------- extremes
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_inputs_stay_finite(backend, dtype):
    big = np.finfo(dtype).max / 4
    x = np.array([-big, -1e30, -1e4, -100.0, -90, -88, 0.0, 88, 90, 100.0, 1e4, 1e30, big],
                 dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = edgedl.sigmoid(x, backend=backend)
        assert np.all((s >= 0) & (s <= 1)) and s[0] == 0 and s[-1] == 1
        np.testing.assert_allclose(edgedl.tanh(x, backend=backend)[[0, -1]], [-1, 1])
        sp = edgedl.softplus(x, backend=backend)
        assert np.all(np.isfinite(sp) & (sp >= 0)) and sp[-1] == x[-1]
        for name in ("swish", "mish", "elu", "selu"):
            y = _call(name, x, backend)
            assert np.all(np.isfinite(y)), name
            np.testing.assert_allclose(y[-3:], _call(name, x[-3:], "numpy"), rtol=2e-6)
        for name in ("sigmoid", "tanh", "softplus", "swish", "mish", "elu", "selu"):
            g = _call(name, x, backend, np.ones_like(x))
            assert np.all(np.isfinite(g)), name
    row = np.array([[-1e30, 1e30, 0.0, 1e30], [3.0, -1e30, 1e29, -2e29]], dtype)
    for axis in (0, 1, -1):
        sm = edgedl.softmax(row, axis=axis, backend=backend)
        lsm = edgedl.log_softmax(row, axis=axis, backend=backend)
        assert np.all(np.isfinite(sm)) and np.all(np.isfinite(lsm))
        np.testing.assert_allclose(sm.sum(axis=axis), 1, rtol=1e-6)
        np.testing.assert_allclose(lsm, _call("log_softmax", row, "numpy", axis=axis),
                                   rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax_special_values(backend, name, dtype):
    inf, nan = np.inf, np.nan
    rows = np.array([[0.0, -inf, 1.0, 0.0, -0.0, 2.0],      # -inf entries: exp = 0
                     [0.0, 1.0, nan, 2.0, 3.0, 4.0],        # NaN anywhere: NaN row
                     [0.0, inf, 1.0, 2.0, 3.0, 4.0],        # +inf: NaN row (inf - inf)
                     [-inf] * 6,                             # all -inf: NaN row
                     [5e-39, -5e-39, 0.0, -0.0, 1e-30, -1e-30]], dtype)   # tiny / zeros
    for x in (rows, np.tile(rows, (1, 7))):                  # short rows and > 16 lanes
        for axis in (-1, 0):
            with np.errstate(invalid="ignore"):
                want = _call(name, x, "numpy", axis=axis)
                got = _call(name, x, backend, axis=axis)
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7,
                                       err_msg=f"{name} {axis} {x.shape}")


@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax_wide_inner_axis(backend, name, rng):
    # inner extent > the Cython column block (512) and not a multiple of it; a NaN column
    x = (rng.standard_normal((2, 5, 1100)) * 5).astype(np.float32)
    x[1, 3, 1030] = np.nan
    with np.errstate(invalid="ignore"):
        want = _call(name, x, "numpy", axis=1)
        got = _call(name, x, backend, axis=1)
    np.testing.assert_allclose(got, want, **_tol(name, np.float32))
    assert np.isnan(got[1, :, 1030]).all() and not np.isnan(got[0]).any()
    xc = x.copy()
    _call(name, xc, backend, axis=1, out=xc)                  # in place
    np.testing.assert_allclose(xc, want, **_tol(name, np.float32))


@pytest.mark.parametrize("name", SOFTMAX)
@pytest.mark.parametrize("n", [1, 2, 3, 8, 9])
def test_softmax_many_narrow_rows(backend, name, n, rng):
    # (1100, n): a detector's per-anchor class scores; Cython runs n <= 8 vectorised across
    # rows in blocks of 512 (a partial last block here), with a NaN, a +inf and an all -inf
    # row among them
    x = (rng.standard_normal((1100, n)) * 5).astype(np.float32)
    x[600, 0], x[1099, -1], x[3] = np.nan, np.inf, -np.inf
    with np.errstate(invalid="ignore"):
        want = _call(name, x, "numpy", axis=-1)
        got = _call(name, x, backend, axis=-1)
        np.testing.assert_allclose(got, want, **_tol(name, np.float32))
        assert np.isnan(got[[3, 600, 1099]]).all() and not np.isnan(got[:3]).any()
        xc = x.copy()
        _call(name, xc, backend, axis=-1, out=xc)              # in place
    np.testing.assert_allclose(xc, want, **_tol(name, np.float32))


def test_nan_propagates(backend):
    x = np.array([np.nan, 1.0, -1.0], np.float32)
    for name in ("relu", "sigmoid", "tanh", "elu", "softplus", "swish", "mish", "hard_swish",
                 "leaky_relu", "selu"):
        assert np.isnan(_call(name, x, backend)[0]), name


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name", NAMES)
def test_bad_input(backend, name, rng):
    x = _x(rng, (2, 3, 4), np.float32)
    kw = _params(name, rng, x)
    for bad in (np.arange(6), np.ones(3, complex), np.array([1, "a"], object), "abc", None):
        with pytest.raises(DTypeError, match="x"):
            _call(name, bad, backend, **kw)
    with pytest.raises(ShapeError, match="out must have shape"):
        _call(name, x, backend, out=np.empty((2, 3, 5), np.float32), **kw)
    with pytest.raises(DTypeError, match="out must have dtype"):
        _call(name, x, backend, out=np.empty(x.shape, np.float64), **kw)
    with pytest.raises(ShapeError, match="dy must have the shape"):
        _call(name, x, backend, np.ones((2, 3), np.float32), **kw)
    with pytest.raises(DTypeError, match="dy"):
        _call(name, x, backend, np.ones(x.shape, np.float64), **kw)
    with pytest.raises(BackendError):
        _call(name, x, "fortran", **kw)


def test_bad_parameters():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ShapeError, match="axis"):
        edgedl.softmax(x, axis=2)
    with pytest.raises(ShapeError, match="axis"):
        edgedl.log_softmax_grad(x, x, axis=-3)
    with pytest.raises(ShapeError, match="rank"):
        edgedl.softmax(np.float32(1.0))
    with pytest.raises(ValidationError, match="axis"):
        edgedl.softmax(x, axis=1.5)
    with pytest.raises(ValidationError, match="alpha"):
        edgedl.leaky_relu(x, alpha="a")
    with pytest.raises(ValidationError, match="alpha"):
        edgedl.elu(x, alpha=float("nan"))
    with pytest.raises(ValidationError, match="lo"):
        edgedl.clip(x, lo=[1.0], hi=2.0)
    with pytest.raises(DTypeError, match="slope"):
        edgedl.prelu(x, np.ones(3, complex))
    with pytest.raises(ValidationError, match="read-only"):
        ro = np.ones_like(x)
        ro.flags.writeable = False
        edgedl.relu(x, out=ro)


def test_lists_and_scalars_are_accepted():
    np.testing.assert_allclose(edgedl.relu([-1, 2]), [0, 2])
    assert edgedl.sigmoid(0.0) == 0.5
    assert edgedl.relu([-1.5, 2.5]).dtype == np.float64


# The float32 fast path (wrapper -> edgedl._cy.activations.fast_f32) must decline every case it
# cannot do as the general path would, and agree with it on every case it does.
def _fast_cases(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32) * 4
    yield "plain", x, lambda: None
    yield "fresh out, 0-d", np.float32(rng.standard_normal()) * np.ones((), np.float32), \
        lambda: None
    yield "empty", np.ones((0, 4), np.float32), lambda: None
    yield "strided x", x[:, ::2], lambda: None
    yield "strided out", x, lambda: np.empty((3, 4, 10), np.float32)[..., ::2]
    yield "in place", x.copy(), "x"
    yield "big (prange)", rng.standard_normal((3, 70000)).astype(np.float32) * 4, lambda: None


@pytest.mark.parametrize("name", ["relu", "clip", "elu", "sigmoid", "tanh", "swish", "mish",
                                  "softmax", "log_softmax"])
def test_fast_path_matches_general(name, rng):
    require_backend("cython")
    kw = {"clip": {"lo": -1.0, "hi": 2.0}, "elu": {"alpha": 0.7}, "swish": {"beta": 1.3},
          "softmax": {"axis": 1}, "log_softmax": {"axis": -1}}.get(name, {})
    f = getattr(edgedl, name)
    for case, x, make_out in _fast_cases(rng):
        if name in ("softmax", "log_softmax") and x.ndim < 2:
            continue
        want = f(x.astype(np.float64), backend="numpy", **kw)
        out = x if make_out == "x" else make_out()
        got = f(x, out=out, backend="cython", **kw)
        assert got.dtype == np.float32 and got.shape == x.shape, case
        if out is not None:
            assert got is out, case
        np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-6, err_msg=f"{name} {case}")


def test_fast_path_declines_bad_out():
    require_backend("cython")
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    with pytest.raises(ShapeError):                 # same size, other shape
        edgedl.tanh(x, out=np.empty((4, 3), np.float32), backend="cython")
    with pytest.raises(ShapeError):
        edgedl.softmax(x, out=np.empty(12, np.float32), backend="cython")
    with pytest.raises(DTypeError):
        edgedl.tanh(x, out=np.empty((3, 4), np.float64), backend="cython")
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValidationError, match="read-only"):
        edgedl.sigmoid(x, out=ro, backend="cython")
    a = np.arange(-8, 8, dtype=np.float32)          # partial overlap: x is copied first
    want = edgedl.tanh(a[1:].copy(), backend="numpy")
    edgedl.tanh(a[1:], out=a[:-1], backend="cython")
    np.testing.assert_allclose(a[:-1], want, rtol=3e-6)
    from edgedl._cy import activations as cy
    with pytest.raises(ValueError, match="op code"):
        cy.fast_f32(-1, x, x.copy(), 1)


def test_fast_path_applies_thread_count_per_thread():
    # OpenMP thread counts are per calling thread: a new Python thread must still run the
    # fast path with get_num_threads() (checked through the runtime's view of that thread)
    require_backend("cython")
    import threading
    from edgedl._cy import _runtime
    x = np.ones(1 << 17, np.float32)
    prev = edgedl.get_num_threads()
    seen = []
    try:
        edgedl.set_num_threads(2)
        t = threading.Thread(target=lambda: (edgedl.tanh(x, backend="cython"),
                                             seen.append(_runtime.get_max_threads())))
        t.start()
        t.join()
    finally:
        edgedl.set_num_threads(prev)
    assert seen == [2 if _runtime.openmp_enabled() else 1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_plan(backend, dtype, rng):
    """activation_plan (the planner's in-place epilogue after a conv): every elementwise
    activation, its parameters validated once, in place on a 1-D array, the twin's bits and the
    wrapper's values."""
    from edgedl.kernels import _dispatch
    params = {"clip": (-1.0, 2.0), "leaky_relu": (0.1,), "elu": (0.5,),
              "selu": (1.5, 1.1), "hard_sigmoid": (0.3, 0.4), "swish": (1.5,)}
    x = (rng.standard_normal(1037) * 4).astype(dtype)
    for name in A._PLANNED:
        p = params.get(name, tuple(q.default for q in TABLE[name].params))
        run = A.activation_plan(name, p, dtype=dtype, backend=backend)
        want = np.empty_like(x)
        _dispatch.impl("activations", name, backend)(x, *(dtype(v) for v in p), want)
        y = x.copy()
        run(y, y)
        np.testing.assert_array_equal(y, want, err_msg=name)
        np.testing.assert_allclose(y, getattr(A, name)(x, *p, backend=backend),
                                   rtol=1e-5, atol=1e-6, err_msg=name)


def test_activation_plan_refuses_bad_arguments():
    with pytest.raises(ValidationError, match="name must be one of"):
        A.activation_plan("softmax")
    with pytest.raises(ValidationError, match=r"leaky_relu takes 1 parameters \('alpha',\)"):
        A.activation_plan("leaky_relu", ())
    with pytest.raises(ValidationError, match="alpha"):
        A.activation_plan("elu", ("a",))
    with pytest.raises(DTypeError, match="dtype must be float32 or float64, got int32"):
        A.activation_plan("relu", dtype=np.int32)
    # every elementwise activation is plannable (prelu takes a per-channel slope array)
    assert set(A._PLANNED) == set(A._NAMES) - {"prelu", "softmax", "log_softmax"}


def test_bound_f32_one_call_form(rng):
    """bound_f32: the Cython fast entry bound to a parameterless activation (the ONNX plan's
    one-call form): NumPy's values for float32, False with out untouched for any other dtype
    (int32 has float32's size), shape, layout or an out partly overlapping x; None for
    activations with parameters, softmax, and other backends."""
    from edgedl._config import why_unavailable
    if why_unavailable("cython") is not None:
        pytest.skip("the Cython backend is not built")
    from edgedl.kernels import activations as A
    x = rng.standard_normal((2, 3, 17)).astype(np.float32)
    for name in ("sigmoid", "relu", "tanh", "hard_swish"):
        act = A.bound_f32(name, "cython")
        out = np.full(x.shape, np.nan, np.float32)
        assert act(x, out, 1) is True
        np.testing.assert_allclose(out, getattr(A, name)(x, backend="numpy"), rtol=2e-6,
                                   atol=1e-7)
    act = A.bound_f32("sigmoid", "cython")
    out = np.zeros(x.shape, np.float32)
    big = np.zeros(x.size + 5, np.float32)
    for xa, oa in [(x.astype(np.float64), out), (x.view(np.int32), out.view(np.int32)),
                   (x[:1], out), (x[..., ::2], out[..., :9]), (x, out.astype(np.float64)),
                   (big[:x.size].reshape(x.shape), big[5:].reshape(x.shape))]:
        before = oa.copy()
        assert act(xa, oa, 1) is False
        np.testing.assert_array_equal(oa, before)
    assert A.bound_f32("leaky_relu", "cython") is None
    assert A.bound_f32("softmax", "cython") is None
    assert A.bound_f32("sigmoid", "numpy") is None
