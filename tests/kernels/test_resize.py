"""resize2d: every backend x dtype x mode x coordinate_transformation_mode x nearest_mode vs
onnxruntime Resize (and onnx's reference evaluator for tf_half_pixel_for_nearest, which
onnxruntime does not implement), twins vs the NumPy reference, edge cases, errors."""
import re

import numpy as np
import pytest

from edgedl.errors import DTypeError, ShapeError, ValidationError
from edgedl.kernels.resize import COORDINATE_MODES, NEAREST_MODES, resize2d

DTYPES = [np.float32, np.float64]
SIZES = [(23, 7), (1, 1), (22, 26), (5, 13)]     # up, down, to one pixel, odd factors


def _close(got, want, tol):
    assert got.shape == want.shape
    err = float(np.abs(got - want).max(initial=0))
    assert err <= tol, f"max error {err}"


def _ort_resize(x, sizes=None, scales=None, roi=None, opset=19, **attrs):
    from ort_util import run_ort_node
    f32 = np.float32
    ins = [("x", x), ("roi", None if roi is None else np.asarray(roi, f32)),
           ("scales", None if scales is None else np.asarray([1, 1, *scales], f32)),
           ("sizes", None if sizes is None else np.asarray([*x.shape[:2], *sizes], np.int64))]
    return run_ort_node("Resize", ins, attrs, opset=opset)[0]


ORT_MODES = [c for c in COORDINATE_MODES if c != "tf_half_pixel_for_nearest"]


def _sizes(ct):
    # onnxruntime ignores the roi of tf_crop_and_resize on an axis whose size is unchanged;
    # edgedl follows the spec there (checked against onnx's reference evaluator below)
    return [s for s in SIZES if ct != "tf_crop_and_resize" or s != (5, 13)]


@pytest.mark.parametrize("ct", ORT_MODES)
@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
def test_nearest_vs_onnxruntime(backend, ct, nearest_mode, rng):
    pytest.importorskip("onnxruntime")
    x = rng.standard_normal((2, 3, 11, 13)).astype(np.float32)
    roi = [0, 0, 0.1, 0.2, 1, 1, 0.9, 1.3]
    for size in _sizes(ct):
        want = _ort_resize(x, sizes=size, roi=roi if ct == "tf_crop_and_resize" else None,
                           mode="nearest", coordinate_transformation_mode=ct,
                           nearest_mode=nearest_mode, extrapolation_value=-7.0)
        got = resize2d(x, size, "nearest", ct, nearest_mode, extrapolation_value=-7.0,
                       roi=roi, backend=backend)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("ct", ORT_MODES)
def test_linear_cubic_vs_onnxruntime(backend, mode, ct, rng):
    pytest.importorskip("onnxruntime")
    x = rng.standard_normal((2, 3, 11, 13)).astype(np.float32)
    roi = [0.1, 0.2, 0.9, 1.3]
    for size in _sizes(ct):
        for excl in ((0, 1) if mode == "cubic" else (0,)):
            want = _ort_resize(x, sizes=size,
                               roi=[0, 0, .1, .2, 1, 1, .9, 1.3] if ct == "tf_crop_and_resize"
                               else None, mode=mode, coordinate_transformation_mode=ct,
                               exclude_outside=excl, cubic_coeff_a=-0.5,
                               extrapolation_value=2.5)
            got = resize2d(x, size, mode, ct, cubic_coeff_a=-0.5, exclude_outside=excl,
                           extrapolation_value=2.5, roi=roi, backend=backend)
            _close(got, want, 1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("ct", ["half_pixel", "asymmetric", "align_corners",
                                "half_pixel_symmetric", "pytorch_half_pixel"])
def test_scales_enter_the_transform(backend, mode, ct, rng):
    """With scales, ONNX uses the scale (not out/in) in the coordinate transform."""
    pytest.importorskip("onnxruntime")
    x = rng.standard_normal((1, 2, 10, 9)).astype(np.float32)
    for scales in ((1.7, 0.6), (2.0, 2.0), (0.5, 3.3)):
        want = _ort_resize(x, scales=scales, mode=mode, coordinate_transformation_mode=ct)
        got = resize2d(x, want.shape[2:], mode, ct, scales_hw=scales, backend=backend)
        _close(got, want, 1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_tf_crop_and_resize_vs_onnx_reference_evaluator(backend, mode, rng):
    """onnxruntime departs from the spec on an unchanged axis; onnx's evaluator does not."""
    pytest.importorskip("onnx.reference", reason="needs onnx >= 1.13's reference evaluator")
    from onnx.reference import ReferenceEvaluator
    from ort_util import single_node_model
    x = rng.standard_normal((1, 2, 7, 9)).astype(np.float32)
    roi = np.array([0, 0, 0.1, 0.2, 1, 1, 0.9, 1.3], np.float32)
    for size in ((14, 4), (3, 20), (7, 9), (5, 9)):
        feed = {"x": x, "roi": roi, "scales": np.zeros(0, np.float32),
                "sizes": np.array([1, 2, *size], np.int64)}
        model = single_node_model("Resize", list(feed.items()),
                                  dict(mode=mode, extrapolation_value=-3.0,
                                       coordinate_transformation_mode="tf_crop_and_resize"),
                                  opset=11)
        want = ReferenceEvaluator(model).run(None, feed)[0]
        got = resize2d(x, size, mode, "tf_crop_and_resize", extrapolation_value=-3.0,
                       roi=roi, backend=backend)
        _close(got, want, 1e-5)


@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
def test_tf_half_pixel_for_nearest(backend, nearest_mode, rng):
    """Neither onnxruntime nor onnx's evaluator has it (Resize-11 only): x = (o + 0.5) / scale."""
    x = rng.standard_normal((1, 2, 7, 9)).astype(np.float32)
    rnd = {"round_prefer_floor": lambda v: np.ceil(v - 0.5), "floor": np.floor,
           "round_prefer_ceil": lambda v: np.floor(v + 0.5), "ceil": np.ceil}[nearest_mode]
    for size in ((14, 4), (3, 20), (7, 9)):
        idx = [np.clip(rnd((np.arange(o) + 0.5) / (o / i)), 0, i - 1).astype(int)
               for o, i in zip(size, (7, 9))]
        got = resize2d(x, size, "nearest", "tf_half_pixel_for_nearest", nearest_mode,
                       backend=backend)
        np.testing.assert_array_equal(got, x[:, :, idx[0][:, None], idx[1][None, :]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_twins_vs_reference(backend, dtype, mode, rng):
    x = rng.standard_normal((2, 3, 9, 17)).astype(dtype)
    for size in ((18, 34), (4, 8), (1, 127), (128, 1), (9, 17)):
        got = resize2d(x, size, mode, backend=backend)
        assert got.dtype == dtype
        _close(got, resize2d(x, size, mode, backend="numpy"), 1e-12 if dtype == np.float64
               else 1e-5)
    # exact 2x nearest upsampling (YOLO/FPN necks): every pixel repeated
    up = resize2d(x, (18, 34), "nearest", "asymmetric", "floor", backend=backend)
    np.testing.assert_array_equal(up, x.repeat(2, axis=2).repeat(2, axis=3))
    # the kernels' 2x-columns path with rows that are not exactly doubled: 3x, shrunk, and
    # an odd count (the last row without its pair)
    for oh in (27, 5, 19, 1):
        got = resize2d(x, (oh, 34), "nearest", "asymmetric", "floor", backend=backend)
        np.testing.assert_array_equal(got, resize2d(x, (oh, 34), "nearest", "asymmetric",
                                                    "floor", backend="numpy"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_u8_image_kernel(backend, dtype, rng):
    """resize_linear_u8 (uint8 H x W x 3 -> float planes, channel pick + affine, for image
    inputs) == the float resize_taps reference on the picked planes, then the affine; into a
    strided (NHWC) output view too."""
    from edgedl.kernels._ref.resize import resize_taps
    from edgedl.kernels.resize import linear_taps, resize_linear_u8, source_coords

    def kern(*args):
        return resize_linear_u8(*args, backend=backend)
    for (h, w), (oh, ow) in (((9, 17), (4, 30)), ((40, 3), (41, 1)), ((1, 1), (3, 2))):
        x = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ih, wh = linear_taps(source_coords(oh, h, oh / h, "half_pixel"), h)
        iw, ww = linear_taps(source_coords(ow, w, ow / w, "half_pixel"), w)
        wh, ww = wh.astype(dtype), ww.astype(dtype)
        chan = np.array([2, 0, 1], np.int64)
        a, b = np.array([0.5, 2.0, -1.0], dtype), np.array([1.0, 0.0, -3.0], dtype)
        planes = np.ascontiguousarray(x.transpose(2, 0, 1)[chan][None], dtype)
        want = np.empty((1, 3, oh, ow), dtype)
        resize_taps(planes, ih, wh, iw, ww, want)
        want = want[0] * a[:, None, None] + b[:, None, None]
        got = np.empty((3, oh, ow), dtype)
        kern(x, ih, wh, iw, ww, chan, a, b, got)
        _close(got, want, 1e-10 if dtype == np.float64 else 2e-4)   # values to 510
        nhwc = np.zeros((oh + 2, ow, 3), dtype)
        kern(x, ih, wh, iw, ww, chan, a, b, nhwc[1:-1].transpose(2, 0, 1))
        _close(nhwc[1:-1].transpose(2, 0, 1), want, 1e-10 if dtype == np.float64 else 2e-4)
        assert not nhwc[0].any() and not nhwc[-1].any()


def _u8_case(dtype=np.float32, h=6, w=5, oh=4, ow=7):
    from edgedl.kernels.resize import linear_taps, source_coords
    ih, wh = linear_taps(source_coords(oh, h, oh / h, "half_pixel"), h)
    iw, ww = linear_taps(source_coords(ow, w, ow / w, "half_pixel"), w)
    x = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    one = np.ones(3, dtype)
    return [x, ih, wh.astype(dtype), iw, ww.astype(dtype), np.arange(3, dtype=np.int64), one, one,
            np.empty((3, oh, ow), dtype)]


@pytest.mark.parametrize("i, bad, err, words", [
    (0, np.zeros((6, 5, 3), np.float32), DTypeError, "x must be a uint8"),
    (0, np.zeros((6, 15), np.uint8), ShapeError, "x must have rank 3"),
    (1, np.full((4, 2), 6), ValidationError, "ih must index [0, 6)"),
    (1, np.zeros((4, 3), np.int64), ShapeError, "ih must have shape (4, 2)"),
    (2, np.zeros((4, 2)), DTypeError, "wh must have the output's dtype float32"),
    (3, np.full((7, 2), -1), ValidationError, "iw must index [0, 5)"),
    (3, np.zeros((7, 2)), DTypeError, "iw must hold integer indices"),
    (5, np.array([0, 1, 3]), ValidationError, "chan must index x's 3 channels"),
    (5, np.arange(2), ShapeError, "chan must have shape (3)"),
    (6, np.ones(3), DTypeError, "a must have out's dtype float32"),
    (8, np.empty((3, 4, 7), np.int32), DTypeError, "out must have dtype float32 or float64"),
])
def test_linear_u8_refuses_bad_arguments(backend, i, bad, err, words):
    """The public resize_linear_u8 validates before any backend runs (the Cython twin reads
    the tables without bounds checks)."""
    from edgedl.kernels.resize import resize_linear_u8
    args = _u8_case()
    args[i] = bad
    with pytest.raises(err, match=re.escape(words)):
        resize_linear_u8(*args, backend=backend)


def test_linear_u8_wrapper_is_the_twin(backend):
    """The wrapper adds checks only: the twin's exact bits, in place, returned."""
    from edgedl.kernels import _dispatch
    from edgedl.kernels.resize import resize_linear_u8
    args = _u8_case()
    want = args[-1].copy()
    _dispatch.impl("resize", "resize_linear_u8", backend)(*args[:-1], want)
    assert resize_linear_u8(*args, backend=backend) is args[-1]
    np.testing.assert_array_equal(args[-1], want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_resize_taps_public(backend, dtype, rng):
    """resize_taps with explicit taps == resize2d linear (the same taps), into a strided out;
    bad tables are refused with the argument named."""
    from edgedl.kernels.resize import linear_taps, resize_taps, source_coords
    x = rng.standard_normal((2, 3, 9, 6)).astype(dtype)
    ih, wh = linear_taps(source_coords(5, 9, 5 / 9, "half_pixel"), 9)
    iw, ww = linear_taps(source_coords(11, 6, 11 / 6, "half_pixel"), 6)
    want = resize2d(x, (5, 11), "linear", backend="numpy")
    base = np.zeros((2, 3, 5, 22), dtype)
    got = resize_taps(x, ih, wh.astype(dtype), iw, ww.astype(dtype), base[..., ::2],
                      backend=backend)
    assert got.base is base
    _close(got, want, 1e-12 if dtype == np.float64 else 1e-5)
    assert not base[..., 1::2].any()
    with pytest.raises(ValidationError, match=re.escape("iw must index [0, 6)")):
        resize_taps(x, ih, wh.astype(dtype), iw + 1, ww.astype(dtype), base[..., ::2],
                    backend=backend)
    other = np.float64 if dtype == np.float32 else np.float32
    with pytest.raises(DTypeError, match="x and out must have the same dtype"):
        resize_taps(x, ih, wh, iw, ww, np.empty((2, 3, 5, 11), other), backend=backend)


def test_non_contiguous_out_and_empty(backend, rng):
    base = rng.standard_normal((2, 6, 10, 16)).astype(np.float32)
    x = base[:, ::2, :, ::2]
    want = resize2d(np.ascontiguousarray(x), (15, 11), "linear", backend="numpy")
    _close(resize2d(x, (15, 11), "linear", backend=backend), want, 1e-6)
    big = np.zeros((2, 3, 15, 22), np.float32)
    res = resize2d(x, (15, 11), "linear", out=big[..., ::2], backend=backend)
    _close(res, want, 1e-6)
    assert not big[..., 1::2].any()
    same = np.ascontiguousarray(x)
    res = resize2d(same, (10, 8), "cubic", out=same, backend=backend)   # out may be x
    assert res is same
    _close(same, resize2d(np.ascontiguousarray(x), (10, 8), "cubic", backend="numpy"), 1e-6)
    assert resize2d(np.zeros((0, 3, 4, 4), np.float32), (8, 8), backend=backend).shape == \
        (0, 3, 8, 8)
    assert resize2d(x, (0, 5), backend=backend).shape == (2, 3, 0, 5)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_read_only_input(backend, mode, rng):
    """A read-only x (np.frombuffer, a model constant) is accepted on every backend."""
    x = rng.standard_normal((1, 3, 5, 6)).astype(np.float32)
    want = resize2d(x, (10, 12), mode, backend="numpy")
    x.flags.writeable = False
    np.testing.assert_allclose(resize2d(x, (10, 12), mode, backend=backend), want,
                               rtol=1e-5, atol=1e-6)


def test_resize_errors():
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ShapeError, match="rank 4"):
        resize2d(x[0], (8, 8))
    with pytest.raises(DTypeError):
        resize2d(x.astype(np.uint8), (8, 8))
    with pytest.raises(ValidationError, match="mode"):
        resize2d(x, (8, 8), mode="bilinear")
    with pytest.raises(ValidationError, match="coordinate_transformation_mode"):
        resize2d(x, (8, 8), coordinate_transformation_mode="corners")
    with pytest.raises(ValidationError, match="nearest_mode"):
        resize2d(x, (8, 8), nearest_mode="round")
    with pytest.raises(ValidationError, match="out_hw"):
        resize2d(x, (8,))
    with pytest.raises(ValidationError, match="out_hw"):
        resize2d(x, (8, -1))
    with pytest.raises(ValidationError, match="scales_hw"):
        resize2d(x, (8, 8), scales_hw=(2.0, 0.0))
    with pytest.raises(ValidationError, match="roi"):
        resize2d(x, (8, 8), roi=(0, 1))
    with pytest.raises(ValidationError, match="exclude_outside"):
        resize2d(x, (8, 8), exclude_outside=2)
    with pytest.raises(ShapeError, match="empty"):
        resize2d(np.zeros((1, 2, 0, 4), np.float32), (8, 8))
    with pytest.raises(ShapeError, match="out must have shape"):
        resize2d(x, (8, 8), out=np.zeros((1, 2, 8, 9), np.float32))


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_plan_matches_resize2d(backend, mode, rng):
    # resize2d_plan (the ONNX runtime's path for constant scales / sizes) builds the tables
    # once: every coordinate mode, sizes and scales, tf_crop_and_resize's extrapolation,
    # strided x, out given or not
    from edgedl.kernels.resize import resize2d_plan
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    roi = np.array([0.1, 0.2, 0.9, 1.3])
    for k, ct in enumerate(COORDINATE_MODES):
        size = SIZES[k % len(SIZES)]
        scales = (size[0] / 7, size[1] / 9) if k % 2 else None
        kw = dict(nearest_mode=NEAREST_MODES[k % 4], extrapolation_value=-2.0, roi=roi,
                  scales_hw=scales)
        want = resize2d(x, size, mode, ct, backend="numpy", **kw)
        run = resize2d_plan(x.shape, size, mode, ct, backend=backend, **kw)
        assert run.out_shape == want.shape
        xv = x if k % 3 else np.repeat(x, 2, axis=3)[..., ::2]
        _close(run(xv), want, 1e-5)
        out = np.full(want.shape, np.nan, np.float32)
        assert run(xv, out) is out
        _close(out, want, 1e-5)
    with pytest.raises(ShapeError, match="as planned"):
        run(x[:1])
    with pytest.raises(ValidationError, match="mode"):
        resize2d_plan(x.shape, (3, 3), "area")


def test_plan_nearest_bound_form(rng):
    """A planned float32 nearest resize on the Cython backend has a one-call form
    (``run.bound``, which the ONNX runtime's compiled plan calls): the NumPy reference in
    every coordinate mode but tf_crop_and_resize (which keeps run's path), the 2x path
    included; it declines (False, out untouched) anything but C-contiguous float32 arrays
    of the planned shapes, a read-only out or one overlapping x; out-of-image tables are
    refused when bound."""
    from edgedl._config import why_unavailable
    from edgedl.kernels.resize import resize2d_plan
    if why_unavailable("cython") is not None:
        pytest.skip("the Cython backend is not built")
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    for k, ct in enumerate(COORDINATE_MODES):
        for size in ((14, 18), (5, 13), (1, 1)):
            nm = NEAREST_MODES[k % 4]
            run = resize2d_plan(x.shape, size, "nearest", ct, nm, backend="cython")
            if ct == "tf_crop_and_resize":
                assert run.bound is None
                continue
            want = resize2d(x, size, "nearest", ct, nm, backend="numpy")
            out = np.full(want.shape, np.nan, np.float32)
            assert run.bound(x, out, 1) is True
            np.testing.assert_array_equal(out, want)
    run = resize2d_plan(x.shape, (14, 18), "nearest", backend="cython")
    out = np.zeros(run.out_shape, np.float32)
    ro = np.zeros(run.out_shape, np.float32)
    ro.flags.writeable = False
    big = np.zeros(out.size, np.float32)
    for xa, oa in [(x.astype(np.float64), out), (x[..., ::-1], out), (x[:1], out),
                   (x, out[:, :, :7]), (x, ro),
                   (big[:x.size].reshape(x.shape), big.reshape(out.shape))]:
        before = oa.copy()
        assert run.bound(xa, oa, 1) is False
        np.testing.assert_array_equal(oa, before)
    assert resize2d_plan(x.shape, (14, 18), "linear", backend="cython").bound is None
    assert resize2d_plan(x.shape, (14, 18), "nearest", backend="numpy").bound is None
    from edgedl._cy.resize import ResizeNearestF32
    with pytest.raises(ValueError, match="outside"):
        ResizeNearestF32(x.shape, (2, 3, 2, 2), np.array([0, 7], np.int64),
                         np.array([0, 1], np.int64))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_plan_nearest_copies_8bit_values(backend, dtype, rng):
    """resize2d_plan's nearest mode takes quantized (8-bit) tensors as they are, in every
    coordinate mode but tf_crop_and_resize (its outside is a float extrapolation value,
    refused): onnxruntime's values, the 2x path and ragged sizes."""
    pytest.importorskip("onnxruntime")
    from edgedl.kernels.resize import resize2d_plan
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (2, 3, 11, 13)).astype(dtype)
    for k, ct in enumerate(c for c in ORT_MODES if c != "tf_crop_and_resize"):
        for size in ((22, 26), (23, 7), (5, 13)):
            nm = NEAREST_MODES[k % 4]
            want = _ort_resize(x, sizes=size, mode="nearest", coordinate_transformation_mode=ct,
                               nearest_mode=nm)
            run = resize2d_plan(x.shape, size, "nearest", ct, nm, dtype=dtype, backend=backend)
            got = run(x)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, want)
    with pytest.raises(ValidationError, match="dtype"):
        resize2d_plan(x.shape, (4, 4), "linear", dtype=dtype)
    with pytest.raises(ValidationError, match="dtype"):
        resize2d_plan(x.shape, (4, 4), "nearest", "tf_crop_and_resize", dtype=dtype)


@pytest.mark.parametrize("case", ["planned", "scales_input", "tf_crop_and_resize"])
def test_uint8_resize_node_matches_onnxruntime(case, rng):
    """A nearest Resize node on uint8: planned on the 8-bit kernels (constant scales), or
    through float32 where the plan does not take it (scales fed at run time, the float
    outside of tf_crop_and_resize), both onnxruntime's values."""
    pytest.importorskip("onnxruntime")
    import edgedl
    from ort_util import ort_session, single_node_model
    x = rng.integers(0, 256, (1, 3, 5, 7)).astype(np.uint8)
    ct = "tf_crop_and_resize" if case == "tf_crop_and_resize" else "asymmetric"
    ins = [("x", x), ("roi", np.array([0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9], np.float32)),
           ("scales", np.array([1, 1, 2, 1.5], np.float32))]
    m = single_node_model("Resize", ins, dict(mode="nearest", coordinate_transformation_mode=ct,
                                              extrapolation_value=9.0), opset=13)
    if case != "scales_input":      # roi and scales as initializers: constants at load
        from onnx import numpy_helper
        g = m.graph
        keep = [i for i in g.input if i.name == "x"]
        del g.input[:]
        g.input.extend(keep)
        g.initializer.extend(numpy_helper.from_array(v, n) for n, v in ins[1:])
    feed = {"x": x} if case != "scales_input" else dict(ins)
    want = ort_session(m).run(None, feed)[0]
    s = edgedl.InferenceSession(m.SerializeToString(), backend="cython")
    for _ in range(2):          # the traced run, then the plan
        got = s.run(None, feed)[0]
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
