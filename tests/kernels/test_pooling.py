"""Pooling: every backend against the NumPy reference, the reference against a naive
window-by-window oracle, and all of them against onnxruntime over random attribute
configurations (MaxPool-12, AveragePool-19, GlobalAveragePool, GlobalMaxPool)."""
import numpy as np
import pytest

import edgedl
from edgedl._config import BACKEND_ORDER, why_unavailable
from edgedl.errors import DTypeError, ShapeError, ValidationError
from edgedl.kernels import pooling as P
from edgedl.kernels._ref import pooling as R

from ort_util import ort_session, single_node_model

AVAILABLE = [b for b in BACKEND_ORDER if why_unavailable(b) is None]
DTYPES = [np.float32, np.float64]
AUTO = ["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


def _random_config(rng, max_kernel=5, max_stride=3, max_dil=3):
    k = tuple(int(v) for v in rng.integers(1, max_kernel + 1, 2))
    return dict(kernel_shape=k,
                strides=tuple(int(v) for v in rng.integers(1, max_stride + 1, 2)),
                pads=tuple(int(rng.integers(0, k[i % 2])) for i in range(4)),
                dilations=tuple(int(v) for v in rng.integers(1, max_dil + 1, 2)),
                ceil_mode=bool(rng.integers(0, 2)),
                auto_pad=str(rng.choice(AUTO)))


def _call(kind, x, cfg, cip=False, **kw):
    if kind == "max":
        return P.max_pool2d(x, **cfg, **kw)
    return P.avg_pool2d(x, **cfg, count_include_pad=cip, **kw)


def _valid_or_none(hw, cfg):
    """Resolved (pads, out_hw), or None when the configuration gives an empty output."""
    pads = P.pool_pads(hw, cfg["kernel_shape"], cfg["strides"], cfg["auto_pad"], cfg["pads"])
    out_hw = P.pool_output_shape(hw, cfg["kernel_shape"], cfg["strides"], pads,
                                 cfg["dilations"], cfg["ceil_mode"])
    return None if min(out_hw) < 1 else (pads, out_hw)


def naive_pool(x, kind, cfg, cip=False):
    """Window by window, straight from the definition (the oracle of the reference)."""
    pads, (oh, ow) = _valid_or_none(x.shape[2:], cfg)
    (kh, kw), (sh, sw), (dh, dw) = cfg["kernel_shape"], cfg["strides"], cfg["dilations"]
    h, w = x.shape[2:]
    y = np.empty(x.shape[:2] + (oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            rows = [i * sh - pads[0] + a * dh for a in range(kh)]
            cols = [j * sw - pads[1] + b * dw for b in range(kw)]
            # onnxruntime's AveragePool ignores image rows/columns past a negative end pad
            # (SAME_* with kernel < stride); its MaxPool does not
            he, we = (h, w) if kind == "max" else (h + min(pads[2], 0), w + min(pads[3], 0))
            vr = [r for r in rows if 0 <= r < he]
            vc = [c for c in cols if 0 <= c < we]
            win = x[:, :, vr][:, :, :, vc].reshape(x.shape[:2] + (-1,))
            if kind == "max":
                y[:, :, i, j] = win.max(axis=2) if win.shape[2] else np.finfo(x.dtype).min
            elif win.shape[2] == 0:
                y[:, :, i, j] = 0
            else:
                n_pad = (sum(-pads[0] <= r < h + pads[2] for r in rows)
                         * sum(-pads[1] <= c < w + pads[3] for c in cols))
                y[:, :, i, j] = win.sum(axis=2, dtype=np.float64) / (n_pad if cip
                                                                      else win.shape[2])
    return y


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("n, k, s, p, d, ceil, want", [
    (5, 3, 2, (1, 1), 1, False, 3),
    (5, 2, 2, (1, 1), 1, True, 3),     # ceil gives 4, but the 4th window starts in the padding
    (6, 3, 2, (0, 0), 1, True, 3),
    (7, 3, 2, (0, 0), 1, True, 3),
    (8, 3, 2, (1, 1), 2, True, 4),
    (4, 5, 1, (2, 2), 1, False, 4),
    (1, 2, 1, (1, 1), 3, False, 0),    # empty: rejected by the kernels
])
def test_pool_output_shape(n, k, s, p, d, ceil, want):
    hw = P.pool_output_shape((n, n), (k, k), (s, s), (p[0], p[0], p[1], p[1]), (d, d), ceil)
    assert hw == (want, want)


def test_pool_pads_same():
    # total (ceil(in/s) - 1) * s + k - in, odd one at the end (UPPER) or beginning (LOWER)
    assert P.pool_pads((7, 7), (4, 4), (2, 2), "SAME_UPPER") == (1, 1, 2, 2)
    assert P.pool_pads((7, 7), (4, 4), (2, 2), "SAME_LOWER") == (2, 2, 1, 1)
    assert P.pool_pads((7, 7), (4, 4), (2, 2), "VALID", (1, 1, 1, 1)) == (0, 0, 0, 0)
    assert P.pool_pads((7, 7), (3, 3), (1, 1), "NOTSET", (1, 2, 0, 1)) == (1, 2, 0, 1)


# ----------------------------------------------------------------------------- vs oracles
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_reference_vs_naive(kind, dtype, rng):
    done = 0
    while done < 60:
        cfg = _random_config(rng)
        x = rng.standard_normal((2, 3, int(rng.integers(1, 12)), int(rng.integers(1, 12))))
        x = x.astype(dtype)
        if _valid_or_none(x.shape[2:], cfg) is None:
            continue
        cip = bool(rng.integers(0, 2))
        y = _call(kind, x, cfg, cip, backend="numpy")
        np.testing.assert_allclose(y, naive_pool(x, kind, cfg, cip), **_tol(dtype),
                                   err_msg=f"{kind} {cfg} cip={cip} x{x.shape}")
        done += 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_backend_vs_reference(backend, kind, dtype, rng):
    done = 0
    while done < 40:
        cfg = _random_config(rng)
        n, c = int(rng.integers(1, 3)), int(rng.integers(1, 5))
        x = rng.standard_normal((n, c, int(rng.integers(1, 20)), int(rng.integers(1, 20))))
        x = x.astype(dtype)
        if done % 4 == 3:   # some planes with NaN and inf: the exact (slow) path
            x.flat[rng.integers(0, x.size, 3)] = [np.nan, np.inf, -np.inf]
        if _valid_or_none(x.shape[2:], cfg) is None:
            continue
        cip = bool(rng.integers(0, 2))
        want = _call(kind, x, cfg, cip, backend="numpy")
        got = _call(kind, x, cfg, cip, backend=backend)
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **_tol(dtype),
                                   err_msg=f"{backend} {kind} {cfg} cip={cip} x{x.shape}")
        done += 1


def _random_cases(rng, n):
    """n random valid (float32 x, config, count_include_pad) pool cases."""
    cases = []
    while len(cases) < n:
        cfg = _random_config(rng)
        x = rng.standard_normal((int(rng.integers(1, 3)), int(rng.integers(1, 5)),
                                 int(rng.integers(1, 20)), int(rng.integers(1, 20))))
        if _valid_or_none(x.shape[2:], cfg) is not None:
            cases.append((x.astype(np.float32), cfg, bool(rng.integers(0, 2))))
    return cases


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_plan_matches_the_public_functions(backend, kind, rng):
    # pool2d_plan (the ONNX runtime's path) validates once: over random configurations,
    # including SAME_* with kernel < stride (avg crops the image), strided and read-only x
    for done, (x, cfg, cip) in enumerate(_random_cases(rng, 30)):
        run = P.pool2d_plan(x.shape, kind, **cfg, count_include_pad=cip, backend=backend)
        want = _call(kind, x, cfg, cip, backend="numpy")
        assert run.out_shape == want.shape
        xv = x
        if done % 3 == 1:
            xv = np.repeat(x, 2, axis=3)[:, :, :, ::2]          # strided view
        elif done % 3 == 2:
            xv = x.copy()
            xv.flags.writeable = False
        out = np.empty(run.out_shape, np.float32)
        assert run(xv, out) is out
        np.testing.assert_allclose(out, want, **_tol(np.float32), err_msg=f"{kind} {cfg}")
        np.testing.assert_allclose(run(xv), want, **_tol(np.float32))
    with pytest.raises(ShapeError, match="as planned"):
        run(np.zeros((9,) + x.shape[1:], np.float32))
    with pytest.raises(ShapeError, match="as planned"):
        run(x.astype(np.float64))
    with pytest.raises(ValidationError, match="kind"):
        P.pool2d_plan(x.shape, "min", (2, 2))
    with pytest.raises(ValidationError, match="pads must be smaller"):
        P.pool2d_plan((1, 1, 8, 8), kind, (2, 2), pads=(2, 0, 0, 0))


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_plan_bound_form(kind, rng):
    """A planned float32 pool on the Cython backend has a one-call form (``run.bound``, which
    the ONNX runtime's compiled plan calls): over random geometries it gives the NumPy
    reference, and it declines (False, out untouched) anything but C-contiguous float32
    arrays of the planned shapes, a read-only out, or an out overlapping x."""
    if why_unavailable("cython") is not None:
        pytest.skip("the Cython backend is not built")
    for x, cfg, cip in _random_cases(rng, 30):
        run = P.pool2d_plan(x.shape, kind, **cfg, count_include_pad=cip, backend="cython")
        if run.bound is None:       # cropped input or rescaled average: run's own path
            continue
        want = _call(kind, x, cfg, cip, backend="numpy")
        out = np.full(run.out_shape, np.nan, np.float32)
        assert run.bound(x, out, 1) is True
        np.testing.assert_allclose(out, want, **_tol(np.float32), err_msg=f"{kind} {cfg}")
    x = rng.standard_normal((1, 3, 12, 10)).astype(np.float32)
    run = P.pool2d_plan(x.shape, kind, (2, 2), (2, 2), backend="cython")
    out = np.zeros(run.out_shape, np.float32)
    ro = np.zeros(run.out_shape, np.float32)
    ro.flags.writeable = False
    flat = np.zeros(x.size, np.float32)
    for xa, oa in [(x.astype(np.float64), out), (x[:, :, :, ::-1], out), (x[:, :2], out),
                   (x, out.astype(np.float64)), (x, ro), (x, np.zeros((1, 3, 6, 6), np.float32)),
                   (flat.reshape(x.shape), flat[:out.size].reshape(out.shape))]:
        before = oa.copy()
        assert run.bound(xa, oa, 1) is False
        np.testing.assert_array_equal(oa, before)
    assert P.pool2d_plan(x.shape, kind, (2, 2), backend="numpy").bound is None
    assert P.pool2d_plan(x.shape, kind, (12, 10), backend="cython").bound is None   # global


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_global_vs_reference(backend, kind, dtype, rng):
    f = P.global_avg_pool2d if kind == "avg" else P.global_max_pool2d
    # planes of < 16, 16, 512 (whole 256-value blocks) and ragged sizes; 70 x 960 values:
    # runs of planes on threads
    for shape in [(1, 1, 1, 1), (2, 3, 7, 5), (1, 4, 1, 127), (1, 2, 128, 3), (2, 2, 33, 31),
                  (1, 3, 4, 4), (1, 2, 16, 32), (1, 70, 30, 32)]:
        x = rng.standard_normal(shape).astype(dtype)
        want = np.mean(x, axis=(2, 3), keepdims=True) if kind == "avg" else \
            np.max(x, axis=(2, 3), keepdims=True)
        got = f(x, backend=backend)
        assert got.dtype == dtype and got.shape == shape[:2] + (1, 1)
        np.testing.assert_allclose(got, want, **_tol(dtype))
        x[0, 0, 0, -1] = np.nan
        assert np.isnan(f(x, backend=backend)[0, 0, 0, 0])


def _ort_pool(op, x, cfg, cip):
    attrs = dict(kernel_shape=list(cfg["kernel_shape"]), strides=list(cfg["strides"]),
                 dilations=list(cfg["dilations"]), ceil_mode=int(cfg["ceil_mode"]),
                 auto_pad=cfg["auto_pad"])
    if cfg["auto_pad"] == "NOTSET":
        attrs["pads"] = list(cfg["pads"])
    if op == "AveragePool":
        attrs["count_include_pad"] = int(cip)
    model = single_node_model(op, [("x", x)], attrs, opset=19 if op == "AveragePool" else 12)
    return ort_session(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("chunk", range(3))
def test_vs_onnxruntime_random(chunk, rng):
    """~300 random MaxPool / AveragePool configurations, every backend vs onnxruntime."""
    pytest.importorskip("onnxruntime")
    compared = 0
    for it in range(100):
        op = ("MaxPool", "AveragePool")[it % 2]
        cfg = _random_config(rng)
        cip = bool(rng.integers(0, 2))
        # onnxruntime has AveragePool for float32 only
        dtype = np.float32 if op == "AveragePool" or it % 4 == 0 else np.float64
        x = rng.standard_normal((int(rng.integers(1, 3)), int(rng.integers(1, 4)),
                                 int(rng.integers(1, 14)), int(rng.integers(1, 14))))
        x = x.astype(dtype)
        kind = "max" if op == "MaxPool" else "avg"
        try:
            want = _ort_pool(op, x, cfg, cip)
        except Exception as e:
            if "negative" in str(e):    # onnxruntime: "Calculated output dimension is negative"
                want = np.empty((0,))
            else:
                # onnxruntime's float32 no-dilation MaxPool (MLAS) refuses the negative pads
                # SAME_* gives when kernel < stride; its float64 path computes them: use that.
                assert "padding" in str(e).lower(), str(e)
                if op != "MaxPool":
                    continue
                want = _ort_pool(op, x.astype(np.float64), cfg, cip).astype(dtype)
        if want.size == 0:
            with pytest.raises(ShapeError, match="empty"):
                _call(kind, x, cfg, cip)
            continue
        for b in AVAILABLE:
            got = _call(kind, x, cfg, cip, backend=b)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                                       err_msg=f"{b} {op} {cfg} cip={cip} x{x.shape}")
        compared += 1
    assert compared >= 70


def test_global_mean_of_large_planes_keeps_float32_accuracy(backend, rng):
    """Large values over large planes: one float32 sum over a whole plane drifts (~6e-4
    relative here); block sums kept in doubles stay within a few float32 ulps."""
    x = (1e4 + rng.standard_normal((1, 3, 300, 301))).astype(np.float32)
    got = P.global_avg_pool2d(x, backend=backend)
    want = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(got, want, rtol=3e-7, atol=0)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_vs_onnxruntime(op, rng):
    pytest.importorskip("onnxruntime")
    f = P.global_avg_pool2d if op == "GlobalAveragePool" else P.global_max_pool2d
    for shape in [(1, 3, 1, 1), (2, 5, 7, 127), (1, 8, 128, 1), (1, 16, 20, 20)]:
        x = rng.standard_normal(shape).astype(np.float32)
        want = ort_session(single_node_model(op, [("x", x)], opset=12)).run(None, {"x": x})[0]
        for b in AVAILABLE:
            np.testing.assert_allclose(f(x, backend=b), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- edge cases
def test_all_padding_window_matches_onnxruntime(backend):
    """A dilated window that misses the image: max gives the lowest finite value and the
    average 0, as onnxruntime."""
    x = np.array([[[[5.0, 6.0], [7.0, 8.0]]]], dtype=np.float32)
    cfg = dict(kernel_shape=(2, 2), pads=(1, 1, 1, 1), dilations=(3, 3))
    y = P.max_pool2d(x, **cfg, backend=backend)
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == np.finfo(np.float32).min
    assert P.avg_pool2d(x, **cfg, backend=backend)[0, 0, 0, 0] == 0
    assert P.avg_pool2d(x, **cfg, count_include_pad=True, backend=backend)[0, 0, 0, 0] == 0
    if pytest.importorskip("onnxruntime"):
        c = dict(cfg, strides=(1, 1), ceil_mode=False, auto_pad="NOTSET")
        assert _ort_pool("MaxPool", x, c, False)[0, 0, 0, 0] == y[0, 0, 0, 0]
        assert _ort_pool("AveragePool", x, c, True)[0, 0, 0, 0] == 0


def test_count_include_pad_ceil_window(backend):
    """A ceil-mode window running past the right padding divides by the taps inside the
    padded extent only (onnxruntime): [4, 5, pad] -> 5 / 3."""
    x = np.arange(1, 6, dtype=np.float32).reshape(1, 1, 1, 5)
    y = P.avg_pool2d(x, (1, 4), (1, 3), (0, 2, 0, 2), ceil_mode=True, count_include_pad=True,
                     backend=backend)
    np.testing.assert_allclose(y.ravel(), [3 / 4, 14 / 4, 5 / 3], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [8, 9, 34, 66])
def test_2x2_stride_2_fast_path(backend, dtype, width, rng):
    """The unpadded 2x2 s2 path (YuNet's MaxPools): odd sizes drop the last row / column,
    a NaN at any of the four taps of a window reaches its output, -inf stays -inf."""
    x = rng.standard_normal((2, 3, 7, width + 1)).astype(dtype)
    for t in range(4):                     # a NaN at tap t of window (0, t)
        x[0, 0, t // 2, 2 * t + t % 2] = np.nan
    x[1, 2] = -np.inf
    for f in (P.max_pool2d, P.avg_pool2d):
        got = f(x, (2, 2), (2, 2), backend=backend)
        assert got.shape == (2, 3, 3, (width + 1) // 2)
        np.testing.assert_allclose(got, f(x, (2, 2), (2, 2), backend="numpy"), rtol=1e-6,
                                   atol=1e-6)   # the average of 4: sums in another order
        assert np.isnan(got[0, 0, 0, :4]).all() and not np.isnan(got[0, 0, 1:]).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [(7, 9), (16, 33), (23, 40), (80, 80), (11, 176)])
@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 0, 1), (0, 1, 1, 0)])
def test_3x3_stride_2_max_path(backend, dtype, hw, pads, rng):
    """The one-call-a-row 3x3 s2 max (pads <= 1; FastestDet's stem pool), with ceil_mode
    (windows ending in the padding), rows whose output count is below, at and past a
    16-lane vector, and a NaN at each of the nine taps of a window: exact against the
    reference, the NaN in exactly the windows holding it."""
    x = rng.standard_normal((2, 3) + hw).astype(dtype)
    x[1, 2] = -np.inf
    taps = [(r, c) for r in range(3) for c in range(3)]
    for i, (r, c) in enumerate(taps[:min(9, hw[1] // 4)]):   # window (1, 1 + 2i) of plane 0
        x[0, 0, 2 - pads[0] + r, 2 * (1 + 2 * i) - pads[1] + c] = np.nan
    for ceil in (False, True):
        cfg = dict(kernel_shape=(3, 3), strides=(2, 2), pads=pads, ceil_mode=ceil)
        got = P.max_pool2d(x, **cfg, backend=backend)
        want = P.max_pool2d(x, **cfg, backend="numpy")
        np.testing.assert_array_equal(got, want)
        assert (got[1, 2] == -np.inf).all() and np.isnan(got[0, 0]).any()


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_many_tiny_planes(backend, kind, rng):
    """Tiny planes at stride 1 (the Cython backend folds up to 4096 cells of them at once,
    one under the other): plane counts that leave a partial last group, NaN and inf in one
    plane of a group, dilations (windows with no in-image tap), count_include_pad."""
    for hw, cfg in (((7, 7), dict(kernel_shape=(3, 3), pads=(1, 1, 1, 1))),
                    ((14, 14), dict(kernel_shape=(3, 3), pads=(1, 1, 1, 1))),
                    ((5, 6), dict(kernel_shape=(3, 2), pads=(2, 0, 1, 1), strides=(1, 2))),
                    ((4, 4), dict(kernel_shape=(2, 3), pads=(1, 2, 1, 2), dilations=(3, 2))),
                    ((1, 1), dict(kernel_shape=(3, 3), pads=(1, 1, 1, 1)))):
        for planes in (37, 101):
            x = rng.standard_normal((1, planes) + hw).astype(np.float32)
            x[0, planes // 2, 0, 0] = np.nan
            x[0, planes // 3, -1, -1] = np.inf
            for cip in (False, True):
                want = _call(kind, x, cfg, cip, backend="numpy")
                run = P.pool2d_plan(x.shape, kind, **cfg, count_include_pad=cip,
                                    backend=backend)
                np.testing.assert_allclose(run(x), want, **_tol(np.float32),
                                           err_msg=f"{hw} {cfg} {planes}")


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("hw", [(2, 1), (2, 5), (3, 17), (7, 7), (64, 64), (65, 64)])
def test_3x3_stride_1_padded_path(backend, kind, hw, rng):
    """3x3 stride-1 pools padded by 1 (Inception's branch pools), which the Cython backend
    runs a plane at a time as flat arrays (planes of 2+ rows, up to 4096 values; 65 x 64
    takes the general path): NaN / inf on a row's first and last columns and on the first
    and last rows must reach exactly their windows (not the neighbouring rows' ends)."""
    h, w = hw
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    x[0, 1, h - 1, 0] = np.nan
    x[0, 1, 0, w - 1] = np.nan
    x[1, 0, h // 2, w - 1] = np.inf
    x[1, 2, h - 1, w // 2] = -np.inf
    cfg = dict(kernel_shape=(3, 3), pads=(1, 1, 1, 1))
    for cip in (False, True):
        want = _call(kind, x, cfg, cip, backend="numpy")
        got = _call(kind, x, cfg, cip, backend=backend)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        np.testing.assert_allclose(got, want, **_tol(np.float32), err_msg=f"{hw} {cip}")


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_plan_of_a_window_over_the_whole_plane(backend, kind, rng):
    """A window exactly the plane (7x7 on 7x7 maps) runs the global kernels in the plan: the
    same values as the window pool (NaN kept), float32 and float64; a window with
    padding, a stride that leaves a second output or a dilation keeps the window path."""
    for dtype in (np.float32, np.float64):
        for hw in ((7, 7), (1, 1), (5, 9), (64, 3)):
            x = rng.standard_normal((2, 5) + hw).astype(dtype)
            x[1, 3, 0, 0] = np.nan
            for cip in (False, True):
                run = P.pool2d_plan(x.shape, kind, hw, count_include_pad=cip, dtype=dtype,
                                    backend=backend)
                assert run.out_shape == (2, 5, 1, 1)
                want = _call(kind, x, dict(kernel_shape=hw), cip, backend="numpy")
                got = run(x)
                assert np.isnan(got[1, 3, 0, 0])
                np.testing.assert_allclose(got, want, **_tol(dtype))
                if kind == "avg":
                    np.testing.assert_allclose(got[0], x[0].mean(axis=(1, 2), keepdims=True),
                                               **_tol(dtype))
    x = rng.standard_normal((1, 2, 7, 7)).astype(np.float32)
    for cfg in (dict(pads=(1, 1, 1, 1)), dict(strides=(1, 1), dilations=(1, 1))):
        run = P.pool2d_plan(x.shape, kind, (7, 7), **cfg, backend=backend)
        np.testing.assert_allclose(run(x), _call(kind, x, dict(kernel_shape=(7, 7), **cfg),
                                                  False, backend="numpy"), **_tol(np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("k", [2, 5, 9, 13])
def test_int8_max_pool_plan_small_planes(backend, dtype, k, rng):
    """Planes under 32 x 32 (YOLOX's SPP pools on 13 x 13) take the float32 kernels on the
    cast values, but 2x2 stride-2 pools the integer one: still exact, extremes included."""
    info = np.iinfo(dtype)
    x = rng.integers(info.min, int(info.max) + 1, (2, 5, 13, 13)).astype(dtype)
    x[0, 1] = info.min
    x[1, 3, 6, 6] = info.max
    cfg = dict(kernel_shape=(k, k), pads=(k // 2,) * 4) if k > 2 else \
        dict(kernel_shape=(2, 2), strides=(2, 2))
    run = P.pool2d_plan(x.shape, "max", dtype=dtype, backend=backend, **cfg)
    out = np.empty(run.out_shape, dtype)
    assert run(x, out) is out
    want = P.max_pool2d(x.astype(np.float32), backend="numpy", **cfg).astype(dtype)
    np.testing.assert_array_equal(out, want)
    attrs = {kk: list(v) for kk, v in cfg.items()}
    ort = ort_session(single_node_model("MaxPool", [("x", x)], attrs, 12))
    np.testing.assert_array_equal(out, ort.run(None, {"x": x})[0])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("cfg", [
    dict(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
    # the one-call 3x3 column-stride-2 rows: other row strides, pads, a window row below
    dict(kernel_shape=(3, 3), strides=(1, 2), pads=(0, 1, 1, 0), ceil_mode=True),
    dict(kernel_shape=(3, 3), strides=(3, 2), pads=(2, 0, 2, 2)),
    dict(kernel_shape=(2, 2), strides=(2, 2)),
    dict(kernel_shape=(5, 5), pads=(2, 2, 2, 2)),
    dict(kernel_shape=(3, 2), strides=(3, 1), pads=(2, 0, 1, 1), dilations=(2, 3),
         ceil_mode=True)])
@pytest.mark.parametrize("width", [62, 64, 70, 201])
def test_int8_max_pool_plan(backend, dtype, cfg, width, rng):
    """pool2d_plan's uint8 / int8 max (int8 models pool quantized tensors): exact, equal to
    the float kernels on the cast values and to onnxruntime's MaxPool, extremes included;
    rows of 62 - 201 (31 - 100 outputs: the scalar loop below 32, one 32-output block of
    16-bit pairs, the moved-back last block, scalar tails)."""
    info = np.iinfo(dtype)
    x = rng.integers(info.min, int(info.max) + 1, (2, 3, 17, width)).astype(dtype)
    x[0, 0, :3] = info.min
    x[1, 2, 5, 7] = info.max
    run = P.pool2d_plan(x.shape, "max", dtype=dtype, backend=backend, **cfg)
    out = np.empty(run.out_shape, dtype)
    assert run(x, out) is out and out.dtype == dtype
    want = P.max_pool2d(x.astype(np.float32), backend="numpy", **cfg).astype(dtype)
    np.testing.assert_array_equal(out, want)
    attrs = {k: list(v) if isinstance(v, tuple) else int(v) for k, v in cfg.items()}
    ort = ort_session(single_node_model("MaxPool", [("x", x)], attrs, 12))
    np.testing.assert_array_equal(out, ort.run(None, {"x": x})[0])
    with pytest.raises(ShapeError, match="as planned"):
        run(x.astype(np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf(backend, dtype, rng):
    """A window holding a NaN gives NaN (max and average), -inf stays -inf."""
    x = rng.standard_normal((1, 2, 9, 9)).astype(dtype)
    x[0, 0, 4, 4] = np.nan
    x[0, 1] = -np.inf
    y = P.max_pool2d(x, (3, 3), (1, 1), (1, 1, 1, 1), backend=backend)
    assert np.isnan(y[0, 0, 3:6, 3:6]).all()
    assert np.isnan(y[0, 0]).sum() == 9
    assert (y[0, 1] == -np.inf).all()
    a = P.avg_pool2d(x, (3, 3), (2, 2), backend=backend)
    assert np.isnan(a[0, 0, 1:3, 1:3]).all() and np.isnan(a[0, 0]).sum() == 4
    # the NaN enters whatever its position in the window (first, middle, last tap)
    for pos in range(3):
        z = np.zeros((1, 1, 1, 3), dtype=dtype)
        z[0, 0, 0, pos] = np.nan
        assert np.isnan(P.max_pool2d(z, (1, 3), backend=backend)).all()
        assert np.isnan(P.global_max_pool2d(z, backend=backend)).all()


@pytest.mark.parametrize("hw", [(13, 13), (9, 70), (70, 71)])
def test_small_and_large_planes(backend, hw, rng):
    """Pools on planes the Cython kernel folds whole (<= 4096 values) and row by row (larger),
    max and average, with a NaN, against the reference."""
    x = rng.standard_normal((1, 3) + hw).astype(np.float32)
    x[0, 1, hw[0] // 2, hw[1] // 3] = np.nan
    for cfg in [dict(kernel_shape=(5, 5), pads=(2, 2, 2, 2)),
                dict(kernel_shape=(13, 13), pads=(6, 6, 6, 6)),
                dict(kernel_shape=(3, 3), pads=(1, 0, 2, 1)),
                dict(kernel_shape=(2, 3), dilations=(1, 2), pads=(0, 1, 1, 2)),
                dict(kernel_shape=(1, 4), pads=(0, 3, 0, 0)),
                dict(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
                dict(kernel_shape=(3, 2), strides=(3, 2), dilations=(2, 3), pads=(2, 1, 0, 1))]:
        for kind in ("max", "avg"):
            np.testing.assert_allclose(_call(kind, x, cfg, backend=backend),
                                       _call(kind, x, cfg, backend="numpy"), rtol=1e-5,
                                       atol=1e-6, err_msg=f"{kind} {cfg}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", [
    dict(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
    dict(kernel_shape=(5, 5), pads=(2, 2, 2, 2)),
    dict(kernel_shape=(2, 3), strides=(3, 1)),                     # rows no window reads
    dict(kernel_shape=(3, 2), dilations=(2, 1), pads=(2, 0, 2, 0)),  # rows read out of order
])
def test_max_nan_or_inf_in_any_row(backend, dtype, cfg, rng):
    """A NaN or an inf in any one row gives the reference's answer: the Cython kernel checks
    each row when first read and takes the exact NaN-propagating max from there on."""
    x0 = rng.standard_normal((1, 2, 9, 11)).astype(dtype)
    for r in range(9):
        for bad in (np.nan, np.inf, -np.inf):
            x = x0.copy()
            x[0, 1, r, (3 * r) % 11] = bad
            np.testing.assert_array_equal(P.max_pool2d(x, backend=backend, **cfg),
                                          P.max_pool2d(x, backend="numpy", **cfg),
                                          err_msg=f"row {r}, {bad}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [(2, 2), (7, 9), (16, 33), (20, 20), (6, 70)])
def test_2x2_stride2_fast_path(backend, dtype, hw, rng):
    """The 2x2 stride-2 unpadded fast path (odd sizes drop the last row/column; ceil_mode and
    end pads keep the general path) equals the reference, NaN in any of the four taps."""
    x = rng.standard_normal((2, 3) + hw).astype(dtype)
    x[0, 0].flat[rng.integers(0, x[0, 0].size, 3)] = np.nan
    x[1, 2, 0, 1] = np.nan
    x[1, 1, 1, 0] = -np.inf
    for cfg in [dict(), dict(ceil_mode=True), dict(pads=(0, 0, 1, 1))]:
        for f in (P.max_pool2d, P.avg_pool2d):
            y = f(x, (2, 2), (2, 2), backend=backend, **cfg)
            ref = f(x, (2, 2), (2, 2), backend="numpy", **cfg)
            if f is P.max_pool2d:
                np.testing.assert_array_equal(y, ref)
            else:   # the summation order may differ
                tol = 2e-6 if dtype == np.float32 else 1e-14
                np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    y = P.max_pool2d(x, (2, 2), (2, 2), backend=backend)
    assert np.isnan(y[1, 2, 0, 0]) and y.dtype == dtype
    assert np.isnan(P.avg_pool2d(x, (2, 2), (2, 2), backend=backend)[1, 2, 0, 0])


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_nan_vs_onnxruntime(op, rng):
    """Where onnxruntime gives NaN, so does edgedl; windows without NaN agree. (onnxruntime's
    MaxPool drops some NaNs depending on its code path and the NaN's position; edgedl always
    propagates them.)"""
    pytest.importorskip("onnxruntime")
    for it in range(20):
        cfg = _random_config(rng, max_dil=1 if it % 2 else 3)
        x = rng.standard_normal((1, 2, 11, 12)).astype(np.float32)
        x[rng.random(x.shape) < 0.05] = np.nan
        if _valid_or_none(x.shape[2:], cfg) is None:
            continue
        try:
            want = _ort_pool(op, x, cfg, False)
        except Exception:
            continue    # configurations onnxruntime refuses are covered above
        nan_windows = np.isnan(naive_pool(x, "max" if op == "MaxPool" else "avg", cfg))
        for b in AVAILABLE:
            got = _call("max" if op == "MaxPool" else "avg", x, cfg, backend=b)
            assert (np.isnan(got) == nan_windows).all(), (b, cfg)
            assert np.isnan(got[np.isnan(want)]).all(), (b, cfg)
            np.testing.assert_allclose(got[~nan_windows], want[~nan_windows], rtol=1e-5,
                                       atol=1e-6)


@pytest.mark.parametrize("width", [1, 7, 127, 128])
def test_tail_widths(backend, width, rng):
    x = rng.standard_normal((1, 3, 5, width)).astype(np.float32)
    for cfg in [dict(kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1)),
                dict(kernel_shape=(5, 5), pads=(2, 2, 2, 2)),
                dict(kernel_shape=(2, 3), strides=(1, 3), ceil_mode=True, pads=(0, 1, 1, 2)),
                dict(kernel_shape=(3, 2), dilations=(2, 2), auto_pad="SAME_UPPER")]:
        full = dict(dict(strides=(1, 1), pads=(0,) * 4, dilations=(1, 1), ceil_mode=False,
                         auto_pad="NOTSET"), **cfg)
        for kind in ("max", "avg"):
            if _valid_or_none(x.shape[2:], full) is None:
                with pytest.raises(ShapeError, match="empty"):
                    _call(kind, x, cfg, backend=backend)
                continue
            np.testing.assert_allclose(_call(kind, x, cfg, backend=backend),
                                       naive_pool(x, kind, full), rtol=1e-5, atol=1e-6,
                                       err_msg=f"{kind} {cfg}")


def test_non_contiguous_and_out(backend, rng):
    base = rng.standard_normal((2, 4, 12, 14)).astype(np.float64)
    x = base[:, ::2, 1:, ::-1].transpose(0, 1, 3, 2)       # strided, reversed, transposed
    assert not x.flags.c_contiguous
    cfg = dict(kernel_shape=(3, 3), strides=(2, 1), pads=(1, 0, 1, 2))
    for kind in ("max", "avg"):
        want = _call(kind, np.ascontiguousarray(x), cfg, backend="numpy")
        np.testing.assert_allclose(_call(kind, x, cfg, backend=backend), want, rtol=1e-12)
        # a non-contiguous out= is filled and returned
        holder = np.zeros(want.shape[:3] + (2 * want.shape[3],))
        out = holder[..., ::2]
        assert _call(kind, x, cfg, out=out, backend=backend) is out
        np.testing.assert_allclose(out, want, rtol=1e-12)
        assert (holder[..., 1::2] == 0).all()
    g = P.global_max_pool2d(x, backend=backend)
    np.testing.assert_array_equal(g, x.max(axis=(2, 3), keepdims=True))


def test_out_is_input(backend, rng):
    x = rng.standard_normal((1, 3, 6, 7)).astype(np.float32)
    want = P.max_pool2d(x, (3, 3), pads=(1, 1, 1, 1), backend="numpy")
    y = P.max_pool2d(x, (3, 3), pads=(1, 1, 1, 1), out=x, backend=backend)
    assert y is x
    np.testing.assert_array_equal(x, want)


def test_read_only_input(backend, rng):
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    x.flags.writeable = False
    assert P.max_pool2d(x, (2, 2), backend=backend).shape == (1, 2, 4, 4)
    assert P.global_avg_pool2d(x, backend=backend).shape == (1, 2, 1, 1)


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (2, 0, 8, 8)])
def test_empty_batch(backend, shape):
    x = np.zeros(shape, dtype=np.float32)
    assert P.max_pool2d(x, (3, 3), (2, 2), backend=backend).shape == shape[:2] + (3, 3)
    assert P.avg_pool2d(x, (2, 2), backend=backend).shape == shape[:2] + (7, 7)
    assert P.global_avg_pool2d(x, backend=backend).shape == shape[:2] + (1, 1)
    assert P.global_max_pool2d(x, backend=backend).shape == shape[:2] + (1, 1)


def test_threads_agree(backend, rng):
    x = rng.standard_normal((2, 7, 23, 19)).astype(np.float32)
    old = edgedl.get_num_threads()
    try:
        res = []
        for n in (1, 2):
            edgedl.set_num_threads(n)
            res.append((P.max_pool2d(x, (3, 3), (2, 2), (1, 1, 1, 1), backend=backend),
                        P.avg_pool2d(x, (3, 3), backend=backend),
                        P.global_avg_pool2d(x, backend=backend)))
        for a, b in zip(*res):
            np.testing.assert_array_equal(a, b)
    finally:
        edgedl.set_num_threads(old)


def test_public_names():
    assert edgedl.max_pool2d is P.max_pool2d and edgedl.global_max_pool2d is P.global_max_pool2d
    assert set(R.__dict__) >= {"max_pool2d", "avg_pool2d", "global_avg_pool2d",
                               "global_max_pool2d"}


# ----------------------------------------------------------------------------- bad input
X = np.zeros((1, 2, 6, 6), dtype=np.float32)


@pytest.mark.parametrize("x, exc, match", [
    (np.zeros((1, 2, 6, 6), dtype=np.int32), DTypeError, "float32 or float64"),
    (np.zeros((1, 2, 6, 6), dtype=np.complex64), DTypeError, "float32 or float64"),
    (np.zeros((1, 2, 6, 6), dtype=object), DTypeError, "float32 or float64"),
    (np.zeros((2, 6, 6), dtype=np.float32), ShapeError, "rank 4"),
    (np.zeros((1, 2, 0, 6), dtype=np.float32), ShapeError, "non-empty spatial"),
    ("abc", DTypeError, "NumPy array"),
])
def test_bad_x(x, exc, match):
    for f in (lambda a: P.max_pool2d(a, (2, 2)), lambda a: P.avg_pool2d(a, (2, 2))):
        with pytest.raises(exc, match=match):
            f(x)
    if exc is not ShapeError or "rank" in match:
        for f in (P.global_avg_pool2d, P.global_max_pool2d):
            with pytest.raises(exc, match=match):
                f(x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kernel_shape=(0, 2)), r"kernel_shape\[0\] must be >= 1"),
    (dict(kernel_shape=(2,)), "kernel_shape must have 2 values"),
    (dict(kernel_shape=(2, 2), strides=(0, 1)), r"strides\[0\] must be >= 1"),
    (dict(kernel_shape=(2, 2), strides=(1, -1)), r"strides\[1\] must be >= 1"),
    (dict(kernel_shape=(2, 2), dilations=(1, 0)), r"dilations\[1\] must be >= 1"),
    (dict(kernel_shape=(2, 2), pads=(0, 2, 0, 0)), "pads must be smaller than kernel_shape"),
    (dict(kernel_shape=(3, 2), pads=(0, 0, 3, 0)), "pad bottom=3 >= kernel_shape"),
    (dict(kernel_shape=(2, 2), pads=(-1, 0, 0, 0)), r"pads\[0\] must be >= 0"),
    (dict(kernel_shape=(2, 2), pads=(1, 1)), "pads must have 4 values"),
    (dict(kernel_shape=(2, 2), auto_pad="SAME"), "auto_pad must be one of"),
    (dict(kernel_shape=(2, 2), ceil_mode=2), "ceil_mode"),
    (dict(kernel_shape=(2.5, 2)), "must be an integer"),
    (dict(kernel_shape=(7, 2)), "output would be empty"),
    (dict(kernel_shape=(2, 2), dilations=(9, 1)), "output would be empty"),
])
def test_bad_attributes(kwargs, match):
    for f in (P.max_pool2d, P.avg_pool2d):
        with pytest.raises(ValidationError, match=match):
            f(X, **kwargs)


def test_bad_out():
    with pytest.raises(ShapeError, match=r"out must have shape \(1, 2, 5, 5\)"):
        P.max_pool2d(X, (2, 2), out=np.empty((1, 2, 6, 6), np.float32))
    with pytest.raises(DTypeError, match="out must have dtype float32"):
        P.avg_pool2d(X, (2, 2), out=np.empty((1, 2, 5, 5), np.float64))
    with pytest.raises(ShapeError, match="out must have shape"):
        P.global_avg_pool2d(X, out=np.empty((1, 2), np.float32))
    with pytest.raises(ValidationError, match="count_include_pad"):
        P.avg_pool2d(X, (2, 2), count_include_pad="yes")


def test_warmup_runs():
    for b in AVAILABLE:
        P._warmup(b)
