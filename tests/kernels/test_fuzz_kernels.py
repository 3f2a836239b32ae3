"""Property-based fuzzing of the conv, pooling, resize and activation families (issue #15):
random shapes, strides, pads, dilations (from everyday values up to the 2**31 - 1 limit),
dtypes, layouts, NaN and inf. Every backend must give the NumPy reference's result or raise
the same ``edgedl.errors`` class; nothing may crash or hang. The box family has its own
properties in test_boxes_props.py.

Bounded for CI (a few dozen examples per backend and family); ``EDGEDL_FUZZ_LONG=1`` runs
many more. A regression here in a compiled kernel is usually an out-of-bounds access: run
tools/sanitize.sh to see where.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import edgedl
from edgedl._config import BACKEND_ORDER
from edgedl._validate import MAX_GEOMETRY
from edgedl.errors import EdgeDLError
from edgedl.kernels import activations as A
from edgedl.kernels.conv import conv2d, conv2d_plan, conv_output_shape, conv_transpose2d
from edgedl.kernels.pooling import avg_pool2d, max_pool2d, pool2d_plan, pool_output_shape
from edgedl.kernels.resize import resize2d

from conftest import require_backend

LONG = os.environ.get("EDGEDL_FUZZ_LONG", "") not in ("", "0")
FUZZ = settings(max_examples=400 if LONG else 25, deadline=None, derandomize=not LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
MAX_OUT = 20000      # output elements a case may have (the rest is assume()d away)

# strides / dilations / pads: mostly everyday values, sometimes hostile ones
small = st.integers(1, 3)
hostile = st.sampled_from([7, 64, 1000, 4096, 2**20, MAX_GEOMETRY])
stride_st = st.one_of(small, small, hostile)
pad_st = st.one_of(st.integers(0, 2), st.integers(0, 2), st.integers(0, 40),
                   st.sampled_from([1000, 3000]))


def _outcome(fn):
    """fn()'s array, or the edgedl exception class it raised."""
    try:
        return fn()
    except EdgeDLError as e:
        return type(e)


def _agree(got, want, dtype, what, rtol=None, atol=None):
    if isinstance(want, type) or isinstance(got, type):
        assert got is want, f"{what}: reference gives {want!r}, backend gives {got!r}"
        return
    assert got.shape == want.shape and got.dtype == want.dtype, what
    if rtol is None:
        rtol, atol = (2e-4, 2e-4) if dtype == np.float32 else (1e-9, 1e-9)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def _array(data, shape, dtype, specials=True, huge=False):
    """Random values, sometimes with NaN / inf (and with ``huge``, +-1e30) entries;
    sometimes a strided view. Sums (conv, average pooling) get no huge finite values: +1e30
    and -1e30 in one window cancel to anything between 0 and the true sum depending on the
    order of the additions, which legitimately differs between backends."""
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape).astype(dtype)
    if specials and a.size and data.draw(st.booleans(), label="specials"):
        k = max(1, a.size // 10)
        idx = rng.integers(0, a.size, k)
        pool = [np.nan, np.inf, -np.inf] + ([1e30, -1e30] if huge else [])
        a.reshape(-1)[idx] = rng.choice(np.array(pool, dtype=dtype), k)
    if a.ndim and a.shape[-1] > 1 and data.draw(st.booleans(), label="strided"):
        wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype)
        wide[..., ::2] = a
        a = wide[..., ::2]
    return a


@pytest.fixture(params=[b for b in BACKEND_ORDER if b != "numpy"])
def non_ref(request):
    """Every backend but the reference they are held against."""
    return require_backend(request.param)


# ----------------------------------------------------------------------------- conv
@FUZZ
@given(data=st.data())
def test_conv2d_fuzz(non_ref, data):
    backend = non_ref
    dtype = data.draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    n, c = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 4))
    h, w = data.draw(st.integers(1, 10)), data.draw(st.integers(1, 10))
    kh, kw = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    kind = data.draw(st.sampled_from(["dense", "depthwise", "grouped"]), label="kind")
    group = {"dense": 1, "depthwise": c, "grouped": c if c in (1, 3) else 2}[kind]
    if c % group:
        group = 1
    m = c if kind == "depthwise" else group * data.draw(st.integers(1, 3))
    strides = (data.draw(stride_st), data.draw(stride_st))
    dil = (data.draw(stride_st), data.draw(stride_st))
    pads = tuple(data.draw(pad_st) for _ in range(4))
    auto_pad = data.draw(st.sampled_from(["NOTSET"] * 3 + ["SAME_UPPER", "SAME_LOWER",
                                                           "VALID"]))
    try:
        oh, ow = conv_output_shape((h, w), (kh, kw), strides, pads, dil, auto_pad)
    except Exception:
        oh = ow = 0
    assume(n * m * max(oh, 0) * max(ow, 0) <= MAX_OUT)
    x = _array(data, (n, c, h, w), dtype, specials=data.draw(st.booleans()))
    wt = _array(data, (m, c // group, kh, kw), dtype, specials=False)
    bias = _array(data, (m,), dtype, specials=False) if data.draw(st.booleans()) else None
    act, params = data.draw(st.sampled_from([(None, ()), ("relu", ()), ("clip", (-1.0, 2.0)),
                                             ("leaky_relu", (0.1,)), ("hard_swish", ()),
                                             ("silu", ()), ("sigmoid", ())]))
    kw_ = dict(strides=strides, pads=pads, dilations=dil, group=group, auto_pad=auto_pad,
               activation=act, activation_params=params)
    what = f"conv2d {x.shape} w{wt.shape} {kw_}"
    want = _outcome(lambda: conv2d(x, wt, bias, **kw_, backend="numpy"))
    got = _outcome(lambda: conv2d(x, wt, bias, **kw_, backend=backend))
    _agree(got, want, dtype, what)
    if not isinstance(want, type):
        # the planned path (the ONNX runtime's; on Cython its one-call fast path)
        run = conv2d_plan(x.shape, wt, bias, dtype=dtype, backend=backend, **kw_)
        _agree(run(np.ascontiguousarray(x)), want, dtype, "planned " + what)


@FUZZ
@given(data=st.data())
def test_conv_transpose2d_fuzz(non_ref, data):
    backend = non_ref
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    c, h, w = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 6)), data.draw(
        st.integers(1, 6))
    group = data.draw(st.sampled_from([1, c]))
    k = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    strides = (data.draw(stride_st), data.draw(stride_st))
    dil = (data.draw(st.one_of(small, hostile)), data.draw(small))
    pads = tuple(data.draw(st.integers(0, 3)) for _ in range(4))
    oh = strides[0] * (h - 1) + (k[0] - 1) * dil[0] + 1
    ow = strides[1] * (w - 1) + (k[1] - 1) * dil[1] + 1
    assume(oh * ow * c * 2 <= MAX_OUT)
    x = _array(data, (1, c, h, w), dtype)
    wt = _array(data, (c, data.draw(st.integers(1, 2)), *k), dtype, specials=False)
    kw_ = dict(strides=strides, pads=pads, dilations=dil, group=group)
    want = _outcome(lambda: conv_transpose2d(x, wt, **kw_, backend="numpy"))
    got = _outcome(lambda: conv_transpose2d(x, wt, **kw_, backend=backend))
    _agree(got, want, dtype, f"conv_transpose2d {x.shape} w{wt.shape} {kw_}")


# ----------------------------------------------------------------------------- pooling
@FUZZ
@given(data=st.data())
def test_pool2d_fuzz(non_ref, data):
    backend = non_ref
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    kind = data.draw(st.sampled_from(["max", "avg"]))
    c, h, w = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 12)), data.draw(
        st.integers(1, 12))
    k = (data.draw(st.one_of(st.integers(1, 5), hostile)), data.draw(st.integers(1, 5)))
    strides = (data.draw(stride_st), data.draw(stride_st))
    dil = (data.draw(stride_st), data.draw(stride_st)) if kind == "max" else (1, 1)
    pads = tuple(data.draw(st.integers(0, 4)) for _ in range(4))
    ceil_mode = data.draw(st.booleans())
    auto_pad = data.draw(st.sampled_from(["NOTSET"] * 3 + ["SAME_UPPER", "SAME_LOWER",
                                                           "VALID"]))
    try:
        oh, ow = pool_output_shape((h, w), k, strides, pads, dil, ceil_mode, auto_pad)
    except Exception:
        oh = ow = 0
    assume(c * max(oh, 0) * max(ow, 0) <= MAX_OUT)
    x = _array(data, (1, c, h, w), dtype, huge=kind == "max")
    kw_ = dict(strides=strides, pads=pads, ceil_mode=ceil_mode, auto_pad=auto_pad)
    if kind == "max":
        fn, kw_["dilations"] = max_pool2d, dil
    else:
        fn, kw_["count_include_pad"] = avg_pool2d, data.draw(st.booleans())
    what = f"{kind}_pool2d {x.shape} k{k} {kw_}"
    want = _outcome(lambda: fn(x, k, **kw_, backend="numpy"))
    got = _outcome(lambda: fn(x, k, **kw_, backend=backend))
    _agree(got, want, dtype, what)
    if not isinstance(want, type):
        run = pool2d_plan(x.shape, kind, k, dtype=dtype, backend=backend, **kw_)
        _agree(run(np.ascontiguousarray(x)), want, dtype, "planned " + what)


# ----------------------------------------------------------------------------- resize
@FUZZ
@given(data=st.data())
def test_resize2d_fuzz(non_ref, data):
    backend = non_ref
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    h, w = data.draw(st.integers(1, 9)), data.draw(st.integers(1, 9))
    oh, ow = data.draw(st.integers(1, 40)), data.draw(st.integers(1, 40))
    mode = data.draw(st.sampled_from(["nearest", "linear", "cubic"]))
    ct = data.draw(st.sampled_from(["half_pixel", "asymmetric", "align_corners",
                                    "pytorch_half_pixel", "tf_half_pixel_for_nn"]))
    if ct == "tf_half_pixel_for_nn" and mode != "nearest":
        ct = "half_pixel"
    x = _array(data, (1, 2, h, w), dtype)
    kw_ = dict(mode=mode, coordinate_transformation_mode=ct)
    want = _outcome(lambda: resize2d(x, (oh, ow), **kw_, backend="numpy"))
    got = _outcome(lambda: resize2d(x, (oh, ow), **kw_, backend=backend))
    _agree(got, want, dtype, f"resize2d {x.shape} -> {(oh, ow)} {kw_}")


# ----------------------------------------------------------------------------- activations
def _act_params(name, x, data):
    if name == "prelu":
        c = x.shape[1] if x.ndim >= 2 else 1
        return {"slope": np.full(c, data.draw(st.floats(-1, 1)), x.dtype)}
    if name in ("softmax", "log_softmax"):
        return {"axis": data.draw(st.integers(-x.ndim, x.ndim - 1))} if x.ndim else {}
    return {}


@FUZZ
@given(data=st.data())
def test_activations_fuzz(non_ref, data):
    backend = non_ref
    name = data.draw(st.sampled_from(A._NAMES), label="name")
    fn = getattr(edgedl, name)
    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    shape = tuple(data.draw(st.lists(st.integers(0, 6), min_size=0, max_size=4)))
    assume(not (name in ("softmax", "log_softmax") and shape == ()))
    x = _array(data, shape, dtype, huge=name not in ("softmax", "log_softmax"))
    kw_ = _act_params(name, x, data)
    what = f"{name} {x.shape} strided={not x.flags.c_contiguous} {kw_}"
    want = _outcome(lambda: fn(x, **kw_, backend="numpy"))
    got = _outcome(lambda: fn(x, **kw_, backend=backend))
    # the fast backends' float32 exp is a polynomial: a few ulp
    tol = (dict(rtol=1e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13))
    _agree(got, want, dtype, what, **tol)
    if not isinstance(want, type) and x.flags.c_contiguous and x.size:
        y = x.copy()          # in place
        fn(y, **kw_, out=y, backend=backend)
        _agree(y, want, dtype, "in place " + what, **tol)


def test_conv2d_wide_rows_in_partial_blocks(backend):
    """Found by this fuzzer: float64 convs with very wide outputs run in blocks of output
    rows; the last, partial block's columns were a non-contiguous view the Cython im2col
    refused (ValueError)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 2))
    w = rng.standard_normal((1, 2, 3, 1))
    got = conv2d(x, w, pads=(1, 599, 1, 599), backend=backend)
    want = conv2d(x, w, pads=(1, 599, 1, 599), backend="numpy")
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
