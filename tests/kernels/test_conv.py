"""conv2d / conv_transpose2d: every backend x dtype vs a naive convolution, the NumPy
reference and onnxruntime (Conv / ConvTranspose), every fused activation, edge cases, errors."""
import numpy as np
import pytest

from edgedl.errors import DTypeError, ShapeError, ValidationError
from edgedl.kernels.conv import (ACTIVATIONS, conv2d, conv2d_plan, conv_output_shape,
                                 conv_transpose2d, pointwise_depthwise_plan, resolve_pads)

from conftest import ARM_EMULATED, require_backend

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-4, np.float64: 1e-10}


def _close(got, want, dtype):
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    err = float(np.abs(got - want).max(initial=0))
    assert got.shape == want.shape
    assert err <= TOL[dtype] * scale, f"max error {err} (scale {scale})"


def naive_conv(x, w, b, strides, pads, dilations, group):
    """Direct definition of ONNX Conv, pixel by tap (float64), independent of the kernels."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (h + pads[0] + pads[2] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    y = np.zeros((n, m, oh, ow))
    mg = m // group
    for g in range(group):
        xs = xp[:, g * cg:(g + 1) * cg]
        ws = w[g * mg:(g + 1) * mg].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                r0, c0 = i * dilations[0], j * dilations[1]
                patch = xs[:, :, r0:r0 + (oh - 1) * strides[0] + 1:strides[0],
                           c0:c0 + (ow - 1) * strides[1] + 1:strides[1]]
                y[:, g * mg:(g + 1) * mg] += np.einsum("nchw,mc->nmhw", patch, ws[:, :, i, j])
    if b is not None:
        y += b[None, :, None, None]
    return y


def np_act(y, act, params):
    if act is None:
        return y
    if act == "relu":
        return np.maximum(y, 0)
    if act == "relu6":
        return np.clip(y, 0, 6)
    if act == "clip":
        return np.clip(y, *params)
    if act == "leaky_relu":
        return np.where(y >= 0, y, params[0] * y)
    if act == "prelu":
        s = np.broadcast_to(np.asarray(params[0], dtype=np.float64).reshape(-1),
                            (y.shape[1],))
        return np.where(y >= 0, y, s[None, :, None, None] * y)
    if act == "hard_sigmoid":
        return np.clip(params[0] * y + params[1], 0, 1)
    if act == "hard_swish":
        return y * np.clip(y / 6 + 0.5, 0, 1)
    if act == "sigmoid":
        return 1 / (1 + np.exp(-y))
    if act == "silu":
        return y / (1 + np.exp(-y))
    if act == "tanh":
        return np.tanh(y)
    from edgedl.kernels import activations    # any other: the activation's own reference
    return getattr(activations, act)(y, *params, backend="numpy")


def random_config(rng, depthwise=None):
    """A random valid Conv: groups incl. depthwise, k 1/3/5/7, strides 1-2, dilations 1-3."""
    depthwise = rng.random() < 0.4 if depthwise is None else depthwise
    k = int(rng.choice([1, 3, 5, 7] if not depthwise else [3, 3, 5, 5, 7, 1]))
    kh, kw = (k, k) if rng.random() < 0.8 else (k, int(rng.choice([1, 3])))
    if depthwise:
        c = int(rng.integers(1, 9))
        group, m = c, c
    else:
        group = int(rng.choice([1, 1, 1, 2, 3]))
        c = group * int(rng.integers(1, 5))
        m = group * int(rng.integers(1, 5))
    strides = tuple(int(s) for s in rng.integers(1, 3, 2))
    dil = tuple(int(d) for d in rng.integers(1, 4, 2)) if rng.random() < 0.4 else (1, 1)
    pads = tuple(int(p) for p in rng.integers(0, kh // 2 + 2, 4))
    h = int(rng.integers((kh - 1) * dil[0] + 1, 24)) if not ARM_EMULATED else 9 + kh * dil[0]
    w = int(rng.integers((kw - 1) * dil[1] + 1, 24)) if not ARM_EMULATED else 9 + kw * dil[1]
    n = int(rng.integers(1, 3))
    return dict(n=n, c=c, m=m, h=h, w=w, kh=kh, kw=kw, group=group, strides=strides,
                pads=pads, dilations=dil)


def make_inputs(rng, cfg, dtype, bias=True):
    x = rng.standard_normal((cfg["n"], cfg["c"], cfg["h"], cfg["w"])).astype(dtype)
    wt = rng.standard_normal((cfg["m"], cfg["c"] // cfg["group"], cfg["kh"], cfg["kw"]))
    b = rng.standard_normal(cfg["m"]).astype(dtype) if bias else None
    return x, wt.astype(dtype), b


# ----------------------------------------------------------------------------- conv2d
@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_random_vs_naive(backend, dtype, rng):
    for trial in range(30):
        cfg = random_config(rng, depthwise=trial % 3 == 0)
        x, w, b = make_inputs(rng, cfg, dtype, bias=trial % 4 != 1)
        got = conv2d(x, w, b, cfg["strides"], cfg["pads"], cfg["dilations"], cfg["group"],
                     backend=backend)
        assert got.dtype == dtype
        _close(got, naive_conv(x, w, b, cfg["strides"], cfg["pads"], cfg["dilations"],
                               cfg["group"]), dtype)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dil", [1, 2])
@pytest.mark.parametrize("act", [None, "relu", "relu6"])
def test_depthwise_fast_paths_vs_reference(backend, k, stride, dil, act, rng):
    # tail widths around vector lengths, with same-padding and no padding, odd and even
    # heights (the 3x3 "same" kernel writes two rows a call, an odd last row alone); no
    # activation and a clamp (relu: the lower bound only) are applied in its store
    for width in (1, 2, 7, 8, 9, 17, 18, 33, 48, 49, 64, 150):  # 150: rows >= 64 at s2
        for pad, h in ((0, 2 * k * dil - 1), ((k // 2) * dil, 5), ((k // 2) * dil, 6)):
            w = max(width, 1 + (k - 1) * dil - 2 * pad)
            x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
            x[0, 1, h // 2, w // 2] = np.nan        # NaN reaches its window's outputs
            wt = rng.standard_normal((3, 1, k, k)).astype(np.float32)
            b = rng.standard_normal(3).astype(np.float32)
            args = (x, wt, b, (stride, stride), (pad,) * 4, (dil, dil), 3)
            want = conv2d(*args, activation=act, backend="numpy")
            out = np.full_like(want, np.inf)     # kernels must not read their output
            conv2d(*args, activation=act, out=out, backend=backend)
            np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
            _close(np.nan_to_num(out), np.nan_to_num(want), np.float32)


# The Cython depthwise kernels on 2 and 3 threads (planes shared out unevenly), one path
# each, big enough to take the threads: every output written, the epilogue on every plane.
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("k, s, p, d, shape", [
    (3, 1, 1, 1, (2, 40, 27, 30)),      # 'same': two rows a call
    (3, 1, 1, 1, (1, 300, 2, 30)),      # two rows
    (3, 2, 1, 1, (1, 48, 37, 40)),      # stride 2, split by column parity
    (3, 2, 1, 1, (1, 96, 31, 21)),      # stride 2, rows in place
    (5, 2, 2, 1, (1, 40, 29, 33)),      # 5x5 stride 2
    (3, 1, 0, 1, (1, 64, 33, 20)),      # narrow, no padding: one flat run a plane
    (5, 1, 4, 2, (1, 40, 25, 60)),      # padded copy, dilated
    (1, 1, 0, 1, (2, 32, 45, 70)),      # 1x1 scale and shift
])
@pytest.mark.parametrize("act", [None, "relu6", "silu"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_threaded(backend, threads, k, s, p, d, shape, act, dtype, rng):
    import edgedl
    c = shape[1]
    x = rng.standard_normal(shape).astype(dtype)
    wt = rng.standard_normal((c, 1, k, k)).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    args = (x, wt, b, (s, s), (p,) * 4, (d, d), c)
    want = naive_conv(*args)
    want = {None: want, "relu6": np.clip(want, 0, 6), "silu": want / (1 + np.exp(-want))}[act]
    out = np.full(want.shape, np.nan, dtype)     # every output written, none read
    saved = edgedl.get_num_threads()
    edgedl.set_num_threads(threads)
    try:
        conv2d(*args, activation=act, out=out, backend=backend)
    finally:
        edgedl.set_num_threads(saved)
    _close(out, want, dtype)


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_1x1_scale_shift(backend, act, dtype, rng):
    """A 1x1 depthwise conv at stride 1 without padding (what a BatchNormalization no conv
    absorbs runs as): its own one-pass path in the Cython backend, planes below, at and
    across its 4096-value blocks, every activation, two images."""
    params = {"clip": (-0.7, 1.3), "leaky_relu": (0.1,), "hard_sigmoid": (0.25, 0.4),
              "prelu": (rng.standard_normal(3),)}.get(act, ())
    for h, w in ((1, 1), (3, 5), (64, 64), (70, 70)):
        x = (3 * rng.standard_normal((2, 3, h, w))).astype(dtype)
        wt = rng.standard_normal((3, 1, 1, 1)).astype(dtype)
        b = rng.standard_normal(3).astype(dtype)
        args = (x, wt, b, (1, 1), (0, 0, 0, 0), (1, 1), 3)
        base = conv2d(*args, backend="numpy")
        np.testing.assert_array_equal(base, x * wt.reshape(1, 3, 1, 1) + b.reshape(1, 3, 1, 1))
        want = np_act(base.astype(np.float64), act, params) if act else base
        out = np.full_like(base, np.nan)         # the kernel must not read its output
        conv2d(*args, activation=act, activation_params=params, out=out, backend=backend)
        _close(out, want, dtype)


@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a])
@pytest.mark.parametrize("depthwise", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_activation_epilogue(backend, act, depthwise, dtype, rng):
    cfg = random_config(rng, depthwise=depthwise)
    cfg.update(n=2, h=9, w=11, pads=(1, 1, 1, 1), dilations=(1, 1))
    if not depthwise:
        cfg.update(group=1, c=3, m=5)
    x, w, b = make_inputs(rng, cfg, dtype)
    x *= 3   # reach both sides of the kinks (clip 6, hard_sigmoid 0/1)
    params = {"clip": (-0.7, 1.3), "leaky_relu": (0.1,), "hard_sigmoid": (0.25, 0.4),
              "prelu": (rng.standard_normal(cfg["m"]),)}.get(act, ())
    base = conv2d(x, w, b, cfg["strides"], cfg["pads"], cfg["dilations"], cfg["group"],
                  backend="numpy")
    want = np_act(base.astype(np.float64), act, params)
    got = conv2d(x, w, b, cfg["strides"], cfg["pads"], cfg["dilations"], cfg["group"],
                 activation=act, activation_params=params, backend=backend)
    _close(got, want, dtype)


# NaN in, NaN out through every fused epilogue (the Cython epilogue once clamped NaN to lo for
# relu / relu6 / clip / hard_sigmoid where NumPy and numba keep it): dense im2col GEMM, 1x1
# GEMM (bias + clamp in the micro-kernel), depthwise 3x3 "same" (rows >= 48) and strided.
@pytest.mark.parametrize("act", [a for a in ACTIVATIONS if a] + [None])
@pytest.mark.parametrize("kind", ["dense3x3", "pointwise", "dw_same", "dw_s2"])
def test_nan_propagates_through_epilogues(backend, act, kind, rng):
    c, m, k, group, stride = {"dense3x3": (3, 10, 3, 1, 1), "pointwise": (4, 10, 1, 1, 1),
                              "dw_same": (4, 4, 3, 4, 1), "dw_s2": (4, 4, 3, 4, 2)}[kind]
    x = rng.standard_normal((1, c, 12, 50)).astype(np.float32)
    x[0, :, 3, 7] = np.nan
    w = rng.standard_normal((m, c // group, k, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    params = {"clip": (-0.7, 1.3), "leaky_relu": (0.1,), "hard_sigmoid": (0.25, 0.4),
              "prelu": (rng.standard_normal(m),)}.get(act, ())
    args = (x, w, b, (stride, stride), (k // 2,) * 4, (1, 1), group)
    got = conv2d(*args, activation=act, activation_params=params, backend=backend)
    want = conv2d(*args, activation=act, activation_params=params, backend="numpy")
    assert np.isnan(want).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_activation_defaults_and_scalar_prelu(backend, rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32) * 4
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    base = conv2d(x, w, backend="numpy").astype(np.float64)
    _close(conv2d(x, w, activation="leaky_relu", backend=backend),
           np_act(base, "leaky_relu", (0.01,)), np.float32)
    _close(conv2d(x, w, activation="hard_sigmoid", backend=backend),
           np_act(base, "hard_sigmoid", (0.2, 0.5)), np.float32)
    _close(conv2d(x, w, activation="prelu", activation_params=(0.3,), backend=backend),
           np_act(base, "prelu", (0.3,)), np.float32)


def _ort_conv(x, w, b, attrs):
    from ort_util import run_ort_node
    inputs = [("x", x), ("w", w)] + ([("b", b)] if b is not None else [])
    return run_ort_node("Conv", inputs, attrs, opset=11)[0]


def test_conv2d_vs_onnxruntime(backend, rng):
    pytest.importorskip("onnxruntime")
    for trial in range(24):
        cfg = random_config(rng)
        x, w, b = make_inputs(rng, cfg, np.float32, bias=trial % 3 != 0)
        auto_pad = ["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"][trial % 5]
        if auto_pad.startswith("SAME"):
            cfg["dilations"] = (1, 1)   # onnxruntime refuses dilated SAME padding
        attrs = dict(strides=list(cfg["strides"]), dilations=list(cfg["dilations"]),
                     group=cfg["group"], kernel_shape=[cfg["kh"], cfg["kw"]])
        if auto_pad == "NOTSET":
            attrs["pads"] = list(cfg["pads"])
        else:
            attrs["auto_pad"] = auto_pad
        want = _ort_conv(x, w, b, attrs)
        got = conv2d(x, w, b, cfg["strides"], cfg["pads"], cfg["dilations"], cfg["group"],
                     auto_pad=auto_pad, backend=backend)
        _close(got, want, np.float32)


def test_auto_pad_helpers():
    # SAME_UPPER puts the odd padding pixel at the end, SAME_LOWER at the beginning
    assert resolve_pads((11, 11), (4, 4), (2, 2), (1, 1), "SAME_UPPER") == (1, 1, 2, 2)
    assert resolve_pads((11, 11), (4, 4), (2, 2), (1, 1), "SAME_LOWER") == (2, 2, 1, 1)
    assert resolve_pads((10, 10), (3, 3), (1, 1), (1, 1), "VALID", (5, 5, 5, 5)) == (0,) * 4
    assert resolve_pads((10, 10), (3, 3), pads=(1, 2, 3, 4)) == (1, 2, 3, 4)
    assert conv_output_shape((11, 7), (3, 3), (2, 2), auto_pad="SAME_UPPER") == (6, 4)
    assert conv_output_shape((11, 7), (3, 3), (1, 1), (1, 0, 1, 0), (2, 1)) == (9, 5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_and_out(backend, dtype, rng):
    base = rng.standard_normal((2, 8, 14, 18)).astype(dtype)
    x = base[:, ::2, ::-1, 1::2]                       # (2, 4, 14, 9), not contiguous
    for group, m in ((4, 4), (1, 6), (2, 4)):
        w = rng.standard_normal((m, 4 // group, 3, 3)).astype(dtype)
        b = rng.standard_normal(m).astype(dtype)
        want = naive_conv(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), group)
        _close(conv2d(x, w, b, pads=(1, 1, 1, 1), group=group, backend=backend), want, dtype)
        out = np.full((2, m, 14, 9), np.nan, dtype)
        res = conv2d(x, w, b, pads=(1, 1, 1, 1), group=group, out=out, backend=backend)
        assert res is out
        _close(out, want, dtype)
        big = np.zeros((2, m, 14, 18), dtype)          # a strided out
        conv2d(x, w, b, pads=(1, 1, 1, 1), group=group, out=big[:, :, :, ::2],
               backend=backend)
        _close(big[:, :, :, ::2], want, dtype)
        assert not big[:, :, :, 1::2].any()


@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("stride", [1, 2])
def test_pads_larger_than_the_input(backend, group, stride, rng):
    x = rng.standard_normal((2, 4, 3, 2)).astype(np.float32)
    for k in (1, 3, 5):
        w = rng.standard_normal((4, 4 // group, k, k)).astype(np.float32)
        pads = (6, 0, 2, 7)
        got = conv2d(x, w, None, (stride, stride), pads, group=group, activation="relu",
                     backend=backend)
        want = np.maximum(naive_conv(x, w, None, (stride, stride), pads, (1, 1), group), 0)
        _close(got, want, np.float32)


@pytest.mark.parametrize("group", [1, 4])
def test_out_may_be_x(backend, group, rng):
    x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 4 // group, 3, 3)).astype(np.float32)
    want = naive_conv(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1), group)
    res = conv2d(x, w, pads=(1, 1, 1, 1), group=group, out=x, backend=backend)
    assert res is x
    _close(x, want, np.float32)


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("group,wshape", [(8, (8, 1, 3, 3)), (1, (6, 8, 3, 3)),
                                          (1, (6, 8, 1, 1))])
@pytest.mark.parametrize("stride", [1, 2])
def test_read_only_inputs(backend, group, wshape, stride, rng):
    """Read-only x, w and bias (np.frombuffer, onnx.numpy_helper arrays) are accepted by
    conv2d, conv2d_plan and conv_transpose2d on every backend."""
    x = _read_only(rng.standard_normal((1, 8, 10, 10)).astype(np.float32))
    w = _read_only(rng.standard_normal(wshape).astype(np.float32))
    b = _read_only(rng.standard_normal(wshape[0]).astype(np.float32))
    kw = dict(strides=(stride, stride), pads=(1, 1, 1, 1), group=group)
    want = conv2d(x.copy(), w.copy(), b.copy(), activation="relu", backend="numpy", **kw)
    got = conv2d(x, w, b, activation="relu", backend=backend, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    run = conv2d_plan(x.shape, w, b, activation="relu", backend=backend, **kw)
    np.testing.assert_allclose(run(x), want, rtol=1e-4, atol=1e-5)
    wt = _read_only(rng.standard_normal((8, 2, 2, 2)).astype(np.float32))
    y = conv_transpose2d(x, wt, _read_only(np.ones(2, np.float32)), strides=(2, 2),
                           backend=backend)
    ref = conv_transpose2d(x.copy(), wt.copy(), np.ones(2, np.float32), strides=(2, 2),
                             backend="numpy")
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_repeated_calls_with_changing_arguments(backend, rng):
    """conv2d caches validated geometry / epilogue per call signature: every argument that
    changes the result must be part of it (and lists work like tuples)."""
    x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    seen = []
    for pads in ([1, 1, 1, 1], (0, 0, 0, 0), (1, 0, 1, 0), [1, 1, 1, 1]):
        for act, params in ((None, ()), ("clip", (-0.1, 0.2)), ("clip", [-0.3, 0.4]),
                            ("leaky_relu", (0.5,)), ("prelu", (np.arange(4.0),))):
            got = conv2d(x, w, None, [1, 1], pads, (1, 1), 4, activation=act,
                         activation_params=params, backend=backend)
            base = naive_conv(x, w, None, (1, 1), pads, (1, 1), 4)
            _close(got, np_act(base, act, tuple(params)), np.float32)
            seen.append(got.shape)
    assert len(set(seen)) == 3


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv2d_plan_matches_conv2d(backend, dtype, rng):
    for trial in range(12):
        cfg = random_config(rng, depthwise=trial % 3 == 0)
        x, w, b = make_inputs(rng, cfg, dtype, bias=trial % 2 == 0)
        kw = dict(strides=cfg["strides"], pads=cfg["pads"], dilations=cfg["dilations"],
                  group=cfg["group"], activation="clip", activation_params=(-0.5, 0.8))
        run = conv2d_plan(x.shape, w, b, dtype=dtype, backend=backend, **kw)
        want = conv2d(x, w, b, backend="numpy", **kw)
        assert run.out_shape == want.shape
        _close(run(x), want, dtype)
        out = np.full(want.shape, np.nan, dtype)
        assert run(x, out) is out
        _close(out, want, dtype)
    with pytest.raises(ShapeError, match="as planned"):
        run(x[:, :, :-1])
    with pytest.raises(ValidationError, match="group"):
        conv2d_plan((1, 4, 8, 8), np.zeros((4, 1, 3, 3), np.float32), group=3)


def test_plan_fast_path_declines_what_it_cannot_run(rng):
    # conv2d_plan(backend="cython") on one float32 image runs through ConvF32, which checks
    # x and out itself: everything it declines must still come out right (or raise) through
    # the general path
    require_backend("cython")
    from edgedl._cy import conv as cy
    x = rng.standard_normal((1, 6, 9, 11)).astype(np.float32)
    w = rng.standard_normal((10, 6, 3, 3)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    kw = dict(pads=(1, 1, 1, 1), activation="relu")
    want = conv2d(x, w, b, backend="numpy", **kw)
    run = conv2d_plan(x.shape, w, b, backend="cython", **kw)
    fast = run._fast
    assert isinstance(fast, cy.ConvF32)
    assert fast(x, np.empty(want.shape, np.float32), 1)            # it is bound and runs
    _close(run(x), want, np.float32)
    xs = np.repeat(x, 2, axis=3)[..., ::2]                          # strided x
    assert not fast(xs, np.empty(want.shape, np.float32), 1)
    _close(run(xs), want, np.float32)
    out = np.empty((1, 10, 9, 22), np.float32)[..., ::2]            # strided out
    assert not fast(x, out, 1)
    with pytest.raises(ShapeError, match="as planned"):
        run(x.astype(np.float64))
    ro = np.empty(want.shape, np.float32)
    ro.flags.writeable = False
    assert not fast(x, ro, 1)
    assert not fast(x, np.empty(want.shape, np.float64), 1)
    assert not fast(x[:, :5], np.empty(want.shape, np.float32), 1)  # other shape
    big = np.zeros(x.size + want.size, np.float32)                  # out overlapping x
    xo, yo = big[:x.size].reshape(x.shape), big[x.size - 7:x.size - 7 + want.size]
    xo[...] = x
    assert not fast(xo, yo.reshape(want.shape), 1)
    with pytest.raises(ValueError, match="pack_conv_weights"):
        cy.ConvF32(False, np.zeros(5, np.float32), b, b, 6, 9, 11, 10, 9, 11, 3, 3, 1, 1,
                   1, 1, 1, 1, 1, 0.0, 1.0)
    with pytest.raises(ValueError, match="direct weights"):     # a direct path misbound
        cy.ConvF32(False, cy.pack_conv_weights(w.reshape(10, -1)), b, b, 6, 9, 11, 10, 9, 11,
                   3, 3, 1, 1, 1, 1, 1, 1, 1, 0.0, 1.0, np.zeros(7, np.float32))
    assert conv2d_plan(x.shape, w, b, **kw)._fast is None          # backend not named


def test_plan_grouped_convs_bound(rng):
    # grouped dense convs (1 < group < C) take ConvF32 too: every group's GEMM, the groups
    # spread over the threads where they split evenly (4 groups, big enough), else group
    # after group (3 groups; 4 small ones); the numpy backend's values, the same on any
    # thread count
    require_backend("cython")
    from edgedl._cy import conv as cy
    cases = [((1, 240, 28, 28), (240, 60, 1, 1), 4, (0, 0, 0, 0), 1),
             ((1, 12, 14, 10), (9, 4, 3, 3), 3, (1, 1, 1, 1), 2),
             ((1, 8, 6, 7), (12, 2, 1, 1), 4, (0, 0, 0, 0), 1),
             ((1, 6, 11, 9), (6, 3, 3, 3), 2, (1, 0, 1, 0), 1)]
    for xs, ws, g, pads, st in cases:
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        b = rng.standard_normal(ws[0]).astype(np.float32)
        kw = dict(strides=(st, st), pads=pads, group=g, activation="relu6")
        want = conv2d(x, w, b, backend="numpy", **kw)
        run = conv2d_plan(x.shape, w, b, backend="cython", **kw)
        assert isinstance(run._fast, cy.ConvF32)
        outs = []
        for threads in (1, 2):
            got = np.full(want.shape, np.nan, np.float32)
            assert run._fast(x, got, threads)
            outs.append(got)
        _close(outs[0], want, np.float32)
        np.testing.assert_array_equal(outs[0], outs[1])
        assert not run._fast(x, got, 1, res=got.copy())     # no residual fused
    with pytest.raises(ValueError, match="groups"):
        cy.ConvF32(False, np.zeros(5, np.float32), b, b, 6, 9, 11, 6, 9, 11, 3, 3, 1, 1, 1,
                   1, 1, 1, 1, 0.0, 1.0, None, False, 4)


@pytest.mark.parametrize("strides, pads", [
    ((1, 1), (1, 1, 1, 1)), ((2, 2), (1, 1, 1, 1)), ((2, 2), (1, 1, 0, 0)),
    ((2, 2), (0, 1, 2, 1)), ((1, 2), (1, 1, 1, 1))])
@pytest.mark.parametrize("act", [None, "relu6", "silu", "sigmoid", "hard_swish"])
def test_depthwise_3x3_flat_runs(strides, pads, act, rng):
    # 3x3 depthwise padded by 1 at stride 1, or with a column of left padding at column
    # stride 2: on AVX-512 whole planes as flat runs of masked 16-output vectors, on AVX2
    # of 8-output ones (widths around multiples of 8 and 16, one column, one
    # row; 'same' and asymmetric pads), elsewhere the row kernels; a NaN on a row's first /
    # last column must stay in its windows
    require_backend("cython")
    for h, w in [(1, 37), (2, 1), (3, 7), (4, 8), (2, 9), (5, 15), (4, 16), (3, 17),
                 (6, 31), (3, 33), (4, 47), (2, 64), (7, 70)]:
        if h + pads[0] + pads[2] < 3 or w + pads[1] + pads[3] < 3:
            continue                                # an empty output: refused elsewhere
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        x[0, 1, h - 1, 0] = np.nan
        x[0, 2, 0, w - 1] = np.nan
        wt = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
        b = rng.standard_normal(3).astype(np.float32)
        kw = dict(strides=strides, pads=pads, group=3, activation=act)
        want = conv2d(x, wt, b, backend="numpy", **kw)
        run = conv2d_plan(x.shape, wt, b, backend="cython", **kw)
        out = np.full(run.out_shape, np.nan, np.float32)
        assert run(x, out) is out
        np.testing.assert_array_equal(np.isnan(out), np.isnan(want), err_msg=f"{h}x{w}")
        _close(np.nan_to_num(out), np.nan_to_num(want), np.float32)


@pytest.mark.parametrize("pads", [(2, 2, 2, 2), (0, 0, 0, 0), (1, 2, 3, 0)])
@pytest.mark.parametrize("act", [None, "relu6", "silu"])
def test_depthwise_5x5_bands(backend, pads, act, rng):
    # 5x5 stride 1 on float32 as bands of 4 output rows (the last band and the last vector
    # of a row moved back over outputs already written) from 4 rows and 16 columns up;
    # smaller planes on the row kernels; a NaN on an edge stays in its windows
    for h, w in [(4, 16), (5, 17), (7, 23), (8, 24), (9, 40), (22, 22), (3, 30), (12, 15)]:
        if h + pads[0] + pads[2] < 5 or w + pads[1] + pads[3] < 5:
            continue
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        x[0, 1, h - 1, 0] = np.nan
        x[0, 2, 0, w - 1] = np.nan
        wt = rng.standard_normal((3, 1, 5, 5)).astype(np.float32)
        b = rng.standard_normal(3).astype(np.float32)
        kw = dict(strides=(1, 1), pads=pads, group=3, activation=act)
        want = conv2d(x, wt, b, backend="numpy", **kw)
        run = conv2d_plan(x.shape, wt, b, backend=backend, **kw)
        out = np.full(run.out_shape, np.nan, np.float32)
        assert run(x, out) is out
        np.testing.assert_array_equal(np.isnan(out), np.isnan(want), err_msg=f"{h}x{w}")
        _close(np.nan_to_num(out), np.nan_to_num(want), np.float32)


@pytest.mark.parametrize("strides, hw", [((1, 1), (41, 40)), ((2, 2), (83, 81)),
                                         ((1, 1), (30, 70))])
def test_depthwise_3x3_threads(backend, strides, hw, rng):
    # depthwise convs big enough for threads (the flat runs, rows under 64 on AVX-512 or
    # AVX2, split by output rows, elsewhere by planes): the same bits on 1-3 threads
    x = rng.standard_normal((1, 16) + hw).astype(np.float32)
    w = rng.standard_normal((16, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    want = naive_conv(x, w, b, strides, (1,) * 4, (1, 1), 16)
    _same_bits_on_threads(conv2d_plan(x.shape, w, b, strides, (1,) * 4, group=16,
                                      activation="silu", backend=backend), x,
                          want / (1 + np.exp(-want)))


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride, dil", [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("width", [20, 60])
def test_plan_fast_path_depthwise(k, stride, dil, width, rng):
    # every depthwise kernel path (same 3x3 at rows >= 18, flat narrow planes, stride 2,
    # generic) through ConvF32, against NumPy
    require_backend("cython")
    x = rng.standard_normal((1, 5, 13, width)).astype(np.float32)
    w = rng.standard_normal((5, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    p = (k // 2) * dil
    kw = dict(strides=(stride, stride), pads=(p, p, p, p), dilations=(dil, dil), group=5,
              activation="hard_swish")
    run = conv2d_plan(x.shape, w, b, backend="cython", **kw)
    assert run._fast is not None
    out = np.full(run.out_shape, np.nan, np.float32)
    assert run(x, out) is out
    _close(out, conv2d(x, w, b, backend="numpy", **kw), np.float32)


@pytest.mark.parametrize("c, k, stride, pads", [
    (3, 3, (2, 2), (1, 1, 1, 1)), (3, 3, (1, 1), (1, 1, 1, 1)), (1, 3, (2, 2), (0, 1, 1, 0)),
    (7, 3, (1, 2), (2, 0, 1, 2)), (2, 5, (2, 2), (2, 2, 2, 2)), (3, 3, (3, 3), (1, 0, 0, 1)),
    (3, 3, (2, 2), (4, 3, 4, 3))])
@pytest.mark.parametrize("m", [5, 16, 24])
@pytest.mark.parametrize("act", [None, "relu6", "silu", "sigmoid", "tanh"])
def test_plan_direct_stem_path(c, k, stride, pads, m, act, rng):
    # dense convs of few taps (stem convs on RGB) run ConvF32's direct path: odd strides and
    # pads, rows not a multiple of 8 (the last block moved back), M not a multiple of 8,
    # the clip (its kernels) or sigmoid / SiLU (their twins) in the registers, or an epilogue
    # after the store (tanh), a NaN that must stay in its windows
    require_backend("cython")
    from edgedl._cy import conv as cy
    if not cy.direct_ok():
        pytest.skip("no direct conv path in this build (32-bit ARM: no NEON in Debian's armhf)")
    x = rng.standard_normal((1, c, 23, 61)).astype(np.float32)
    x[0, 0, 5, 17] = np.nan
    w = rng.standard_normal((m, c, k, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    kw = dict(strides=stride, pads=pads, activation=act)
    run = conv2d_plan(x.shape, w, b, backend="cython", **kw)
    assert run._fast is not None and run._fast.direct
    want = conv2d(x, w, b, backend="numpy", **kw)
    try:
        for wide in (0, 1):          # blocks of 8 and of 16 pixels, whatever this CPU picks
            cy.direct_wide(wide)
            out = np.full(run.out_shape, np.nan, np.float32)
            assert run(x, out) is out
            np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
            _close(np.nan_to_num(out), np.nan_to_num(want), np.float32)
    finally:
        cy.direct_wide(-1)
    # with 16-pixel blocks (AVX-512) or AVX2's 4 x 24, rows of >= 64 take it up to 320 taps
    xw = rng.standard_normal((1, 12, 9, 70)).astype(np.float32)
    ww = rng.standard_normal((m, 12, 3, 3)).astype(np.float32)
    wide_run = conv2d_plan(xw.shape, ww, b, backend="cython", pads=(1, 1, 1, 1))
    assert wide_run._fast.direct == cy.direct_deep()
    _close(wide_run(xw), conv2d(xw, ww, b, pads=(1, 1, 1, 1), backend="numpy"), np.float32)
    # 1x1 convs, rows under 16 and many taps keep the GEMM path
    for shape, wshape in [((1, 3, 23, 61), (m, 3, 1, 1)), ((1, 3, 9, 9), (m, 3, 3, 3)),
                          ((1, 8, 23, 61), (m, 8, 3, 3))]:
        assert not conv2d_plan(shape, np.ones(wshape, np.float32), backend="cython")._fast.direct



@pytest.mark.parametrize("stride, pads", [((2, 2), (1, 1, 1, 1)), ((1, 1), (2, 1, 0, 1))])
def test_plan_direct_rows_across_threads(stride, pads, rng):
    # the direct path keeps each split input row while the next output rows read it; the
    # threads take runs of output rows, each its own rows: 1 and 2 threads give the same
    # values, those of the NumPy backend, with rows of 24 + 16 + 8 (moved back) pixels
    require_backend("cython")
    from edgedl._cy import conv as cy
    if not cy.direct_ok():
        pytest.skip("no direct conv path in this build (32-bit ARM: no NEON in Debian's armhf)")
    x = rng.standard_normal((1, 3, 97, 2 * 43 + 1)).astype(np.float32)
    w = rng.standard_normal((20, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    kw = dict(strides=stride, pads=pads, activation="relu")
    run = conv2d_plan(x.shape, w, b, backend="cython", **kw)
    assert run._fast.direct
    import edgedl
    outs, saved = [], edgedl.get_num_threads()
    try:
        for threads in (1, 2):
            edgedl.set_num_threads(threads)
            outs.append(run(x))
    finally:
        edgedl.set_num_threads(saved)
    np.testing.assert_array_equal(outs[0], outs[1])
    _close(outs[0], conv2d(x, w, b, backend="numpy", **kw), np.float32)


@pytest.mark.parametrize("width", [64, 70, 83])
@pytest.mark.parametrize("act", [None, "relu6", "silu"])
def test_plan_direct_pairs_of_blocks(width, act, rng):
    # 64+ taps on 16-pixel blocks: two blocks a pass over the taps while a row has 32 pixels
    # left, then single blocks (83: one more; 70: one moved back over the pairs' pixels);
    # M = 13: a group of 8 channels and one of 5; a NaN stays in its windows
    require_backend("cython")
    from edgedl._cy import conv as cy
    if not cy.direct_ok():
        pytest.skip("no direct conv path in this build (32-bit ARM: no NEON in Debian's armhf)")
    x = rng.standard_normal((1, 12, 9, width)).astype(np.float32)
    x[0, 3, 4, 40] = np.nan
    w = rng.standard_normal((13, 12, 3, 3)).astype(np.float32)
    b = rng.standard_normal(13).astype(np.float32)
    kw = dict(pads=(1, 1, 1, 1), activation=act)
    want = conv2d(x, w, b, backend="numpy", **kw)
    try:
        cy.direct_wide(1)
        run = conv2d_plan(x.shape, w, b, backend="cython", **kw)
        assert run._fast.direct
        out = np.full(run.out_shape, np.nan, np.float32)
        assert run(x, out) is out
    finally:
        cy.direct_wide(-1)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(want))
    _close(np.nan_to_num(out), np.nan_to_num(want), np.float32)

def test_1x1_gemm_path_and_empty_batch(backend, rng):
    x = rng.standard_normal((2, 16, 7, 5)).astype(np.float32)
    w = rng.standard_normal((8, 16, 1, 1)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    _close(conv2d(x, w, b, activation="relu", backend=backend),
           np.maximum(naive_conv(x, w, b, (1, 1), (0,) * 4, (1, 1), 1), 0), np.float32)
    y = conv2d(np.zeros((0, 16, 7, 5), np.float32), w, b, backend=backend)
    assert y.shape == (0, 8, 7, 5) and y.dtype == np.float32
    y = conv2d(np.zeros((2, 0, 7, 5), np.float32), np.zeros((3, 0, 1, 1), np.float32),
               np.ones(3, np.float32), backend=backend)
    np.testing.assert_array_equal(y, 1.0)   # an empty sum plus the bias


# the GEMM path's edges: panels of MR filters and strips of NR columns overlap at the end
# (MR, NR = 8, 32 with AVX-512; 4, 24 with AVX2; 4 or 8, 8 on 128-bit SIMD), fewer filters
# than MR get a scratch tile, fewer columns than NR a padded copy
@pytest.mark.parametrize("m", [1, 3, 4, 7, 8, 9, 17, 33])
@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (3, 7), (4, 8), (5, 7), (6, 6), (3, 11),
                                (10, 10), (9, 37)])
@pytest.mark.parametrize("kind", ["1x1", "3x3s1", "3x3s2"])
def test_gemm_path_edges(backend, m, hw, kind, rng):
    c = 5
    k, s, p = {"1x1": (1, 1, 0), "3x3s1": (3, 1, 1), "3x3s2": (3, 2, 1)}[kind]
    x = rng.standard_normal((1, c) + hw).astype(np.float32)
    w = rng.standard_normal((m, c, k, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    # relu6 and sigmoid / SiLU are applied in the tiles' registers (the narrow kernels and
    # the scratch tile too)
    acts = {"relu6": lambda v: np.clip(v, 0, 6), None: lambda v: v,
            "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "silu": lambda v: v / (1 + np.exp(-v))}
    for bias, act in ((b, "relu6"), (None, None), (b, "sigmoid"), (None, "silu")):
        got = conv2d(x, w, bias, (s, s), (p,) * 4, activation=act, backend=backend)
        want = naive_conv(x, w, bias, (s, s), (p,) * 4, (1, 1), 1)
        _close(got, acts[act](want), np.float32)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["1x1", "3x3s1", "3x3s2", "grouped"])
def test_gemm_path_large_and_threaded(backend, threads, kind, rng):
    """Big enough for several column blocks shared out to the threads."""
    import edgedl
    shape, w_shape, s, p, g = {
        "1x1": ((2, 64, 40, 41), (40, 64, 1, 1), 1, 0, 1),
        "3x3s1": ((1, 32, 30, 29), (24, 32, 3, 3), 1, 1, 1),
        "3x3s2": ((1, 16, 61, 60), (20, 16, 3, 3), 2, 1, 1),
        "grouped": ((1, 32, 24, 24), (48, 16, 3, 3), 1, 1, 2)}[kind]
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    saved = edgedl.get_num_threads()
    edgedl.set_num_threads(threads)
    try:
        got = conv2d(x, w, b, (s, s), (p,) * 4, group=g, activation="silu", backend=backend)
    finally:
        edgedl.set_num_threads(saved)
    want = naive_conv(x, w, b, (s, s), (p,) * 4, (1, 1), g)
    _close(got, want / (1 + np.exp(-want)), np.float32)


# K > 2 * EDL_GEMM_KC (384): the Cython GEMM runs in K blocks (the im2col too) when M is a
# multiple of MR, a ragged last strip of columns in its own scratch block; other M in one pass
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m", [8, 9, 32, 33])
@pytest.mark.parametrize("hw", [(7, 7), (5, 11), (12, 12), (2, 3)])
@pytest.mark.parametrize("kind", ["1x1", "3x3s1", "3x3s2"])
def test_gemm_path_deep_k(backend, threads, m, hw, kind, rng):
    import edgedl
    c, k, s, p = {"1x1": (400, 1, 1, 0), "3x3s1": (60, 3, 1, 1), "3x3s2": (90, 3, 2, 1)}[kind]
    x = rng.standard_normal((1, c) + hw).astype(np.float32)
    w = rng.standard_normal((m, c, k, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    saved = edgedl.get_num_threads()
    edgedl.set_num_threads(threads)
    try:
        for bias, act in ((b, "relu"), (None, None), (b, "silu")):
            run = conv2d_plan(x.shape, w, bias, (s, s), (p,) * 4, activation=act,
                              backend=backend)
            got = run(x)
            want = naive_conv(x, w, bias, (s, s), (p,) * 4, (1, 1), 1)
            want = {"relu": np.maximum(want, 0), None: want,
                    "silu": want / (1 + np.exp(-want))}[act]
            _close(got, want, np.float32)
    finally:
        edgedl.set_num_threads(saved)


# 1x1 convs with few columns (< 4 strips a thread) and many filters: on 2 threads the Cython
# GEMM splits the filters (panels of MR) instead of the columns, K-blocked or not, the last
# range with the ragged panel; the epilogue and the residual over each thread's rows only
@pytest.mark.parametrize("m, c", [(100, 96), (256, 512), (64, 400), (40, 256)])
@pytest.mark.parametrize("hw", [(13, 13), (7, 9)])
def test_gemm_path_split_by_filters(backend, m, c, hw, rng):
    import edgedl
    x = rng.standard_normal((1, c) + hw).astype(np.float32)
    w = (rng.standard_normal((m, c, 1, 1)) * 0.1).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    r = rng.standard_normal((1, m) + hw).astype(np.float32)
    want = naive_conv(x, w, b, (1, 1), (0,) * 4, (1, 1), 1)
    saved = edgedl.get_num_threads()
    edgedl.set_num_threads(2)
    try:
        for act, f in (("relu6", lambda v: np.clip(v, 0, 6)),
                       ("silu", lambda v: v / (1 + np.exp(-v)))):
            _close(conv2d_plan(x.shape, w, b, activation=act, backend=backend)(x), f(want),
                   np.float32)
            got = conv2d_plan(x.shape, w, b, activation=act, backend=backend,
                              residual=True)(x, None, r)
            _close(got, f(want + r), np.float32)
            got = conv2d_plan(x.shape, w, b, activation=act, backend=backend,
                              residual="after")(x, None, r)
            _close(got, f(want) + r, np.float32)
    finally:
        edgedl.set_num_threads(saved)


# stride 1 with the output as wide as the input (any dilation, pads on one side or two): the
# Cython im2col copies each tap as one shifted run of the plane, then zeros the padding
@pytest.mark.parametrize("dil, pads", [(1, (1, 1, 1, 1)), (2, (2, 2, 2, 2)), (3, (3, 3, 3, 3)),
                                       (5, (5, 5, 5, 5)), (1, (0, 2, 2, 0)), (2, (4, 0, 0, 4)),
                                       (4, (1, 4, 7, 4))])
@pytest.mark.parametrize("hw", [(1, 1), (3, 2), (6, 7), (30, 40)])
def test_gemm_path_same_width_taps(backend, dil, pads, hw, rng):
    x = rng.standard_normal((1, 5) + hw).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    got = conv2d(x, w, b, (1, 1), pads, (dil, dil), backend=backend)
    _close(got, naive_conv(x, w, b, (1, 1), pads, (dil, dil), 1), np.float32)


# outputs narrower than EDL_IM2COL_NARROW (32): the Cython im2col walks each channel's taps
# in one call (edl_im2col.h) with the fill of the padding inline; every stride, dilation,
# kernel shape and padding side, widths on both sides of the switch, K split into blocks
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, s, d, pads, hw", [
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), (4, 5)),
    ((3, 3), (2, 2), (1, 1), (1, 1, 1, 1), (9, 9)),
    ((5, 3), (1, 2), (2, 1), (0, 3, 2, 1), (10, 13)),
    ((1, 4), (3, 1), (1, 3), (2, 0, 0, 5), (8, 29)),
    ((3, 3), (1, 1), (1, 1), (0, 0, 0, 0), (3, 33)),     # ow 31: narrow
    ((3, 3), (1, 1), (1, 1), (1, 0, 1, 0), (3, 34)),     # ow 32: row by row
    ((2, 2), (1, 1), (1, 1), (6, 7, 6, 7), (2, 2)),      # taps wholly in the padding
    ((3, 2), (1, 1), (2, 3), (1, 2, 0, 1), (7, 9)),
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), (4, 14)),     # 4 x 16 padded: a strip + 16
])
def test_gemm_path_narrow_outputs(backend, dtype, k, s, d, pads, hw, rng):
    # stride 1 there: the GEMM over the padded width (_conv_narrow_f32), the bias and the
    # activation applied as the rows are copied out
    acts = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0),
            "silu": lambda v: v / (1 + np.exp(-v))}
    for c, m, act in ((3, 6, None), (70, 16, "relu"), (70, 6, None), (5, 6, "silu")):
        # 70 x 9 taps with 16 filters (a multiple of the AVX-512 panel): the GEMM in K blocks
        x = rng.standard_normal((1, c) + hw).astype(dtype)
        w = rng.standard_normal((m, c) + k).astype(dtype)
        b = rng.standard_normal(m).astype(dtype)
        want = acts[act](naive_conv(x, w, b, s, pads, d, 1))
        _close(conv2d(x, w, b, s, pads, d, activation=act, backend=backend), want, dtype)
        if dtype == np.float32:
            _close(conv2d_plan(x.shape, w, b, s, pads, d, activation=act,
                               backend=backend)(x), want, dtype)


def _same_bits_on_threads(run, x, want):
    """run(x) on 1-3 threads: each close to want, and the same bits on each (the threads
    split the output, never a sum)."""
    from edgedl._config import use_num_threads
    outs = []
    for threads in (1, 2, 3):
        with use_num_threads(threads):
            outs.append(run(x).copy())
        _close(outs[-1], want, np.float32)
    np.testing.assert_array_equal(outs[1], outs[0])
    np.testing.assert_array_equal(outs[2], outs[0])


@pytest.mark.parametrize("c, m, hw, pads, dil", [
    (64, 24, (13, 13), (0, 0, 0, 0), 1),      # 24 filters: three AVX-512 panels
    (96, 96, (14, 14), (1, 1, 0, 0), 1),      # K = 864 in blocks
    (300, 10, (7, 9), (1, 0, 1, 0), 1),       # 10 filters: overlapping panels, one K pass
    (48, 32, (11, 9), (2, 1, 2, 1), 2),       # dilated: 11 padded columns a row
])
def test_gemm_path_narrow_outputs_threads(backend, c, m, hw, pads, dil, rng):
    # _conv_narrow_f32 (stride 1, outputs narrower than the input rows: the padded width) on
    # 1-3 threads: each takes a run of output rows (ragged column ranges, a padded copy for
    # the last strip) and copies its rows out
    x = rng.standard_normal((1, c) + hw).astype(np.float32)
    w = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    want = np.maximum(naive_conv(x, w, b, (1, 1), pads, (dil, dil), 1), 0)
    _same_bits_on_threads(conv2d_plan(x.shape, w, b, (1, 1), pads, (dil, dil),
                                      activation="relu", backend=backend), x, want)


@pytest.mark.parametrize("c, m, hw, k, pads, dil", [
    (8, 24, (9, 40), (3, 3), (1, 1, 1, 1), (1, 1)),       # wide rows, a ragged last strip
    (48, 16, (21, 70), (3, 3), (1, 1, 1, 1), (1, 1)),     # K = 432 in blocks, row blocks
    (5, 12, (12, 33), (5, 5), (2, 2, 2, 2), (1, 1)),
    (6, 16, (10, 36), (3, 3), (2, 2, 2, 2), (2, 2)),      # dilated "same"
    (4, 9, (8, 37), (3, 3), (0, 0, 2, 2), (1, 1)),        # all the padding after
    (7, 8, (11, 34), (1, 3), (0, 2, 0, 0), (1, 1)),       # all the padding before
    (3, 10, (15, 15), (3, 1), (1, 0, 1, 0), (1, 1)),
    (64, 24, (13, 13), (3, 3), (1, 1, 1, 1), (1, 1)),     # narrow planes
])
def test_gemm_path_rows_layout_threads(backend, c, m, hw, k, pads, dil, rng):
    # _conv_rows_f32 (stride 1, rows as wide as the input's): the im2col rows read from the
    # planes between zero rows, the taps past a row's ends masked; output in row blocks
    x = rng.standard_normal((1, c) + hw).astype(np.float32)
    w = rng.standard_normal((m, c) + k).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    want = naive_conv(x, w, b, (1, 1), pads, dil, 1)
    _same_bits_on_threads(conv2d_plan(x.shape, w, b, (1, 1), pads, dil, activation="silu",
                                      backend=backend), x, want / (1 + np.exp(-want)))


@pytest.mark.parametrize("c, m, hw", [
    (48, 16, (7, 7)),       # K = 432 in blocks, 49 columns: 48 + 1
    (64, 24, (14, 14)),     # 196: 4 x 48 + 4
    (48, 8, (3, 19)),       # 57: 48 + 9 (the zero-padded strip)
])
def test_gemm_path_rows_layout_ragged_clip(backend, c, m, hw, rng):
    # a K-blocked rows-layout GEMM whose last columns (up to 8) take the narrow kernels on
    # their gathered im2col columns (a clip epilogue), on 1 thread; with more, the row
    # blocks end elsewhere and other columns are ragged: the same bits either way
    x = rng.standard_normal((1, c) + hw).astype(np.float32)
    w = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    want = np.clip(naive_conv(x, w, b, (1, 1), (1,) * 4, (1, 1), 1), 0, 6)
    _same_bits_on_threads(conv2d_plan(x.shape, w, b, (1, 1), (1,) * 4, (1, 1),
                                      activation="relu6", backend=backend), x, want)


@pytest.mark.parametrize("hw", [(6, 40), (13, 13)])
def test_gemm_path_rows_layout_residual(backend, hw, rng):
    # the Add after a stride-1 3x3 conv (a YOLOv8 / ResNet-18 bottleneck), before or after
    # the activation, on each block of rows the rows layout writes, 1-3 threads
    from edgedl._config import use_num_threads
    x = rng.standard_normal((1, 24) + hw).astype(np.float32)
    w = (rng.standard_normal((20, 24, 3, 3)) * 0.1).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    r = rng.standard_normal((1, 20) + hw).astype(np.float32)
    want = naive_conv(x, w, b, (1, 1), (1,) * 4, (1, 1), 1)
    silu = lambda v: v / (1 + np.exp(-v))                               # noqa: E731
    for residual, f in ((True, lambda: silu(want + r)), ("after", lambda: silu(want) + r)):
        run = conv2d_plan(x.shape, w, b, (1, 1), (1,) * 4, activation="silu",
                          backend=backend, residual=residual)
        for threads in (1, 2, 3):
            with use_num_threads(threads):
                _close(run(x, None, r), f(), np.float32)


def test_conv_gemm_rejects_foreign_weights(backend):
    from edgedl.kernels import _dispatch
    x = np.zeros((4, 6, 6), np.float32)
    y = np.zeros((8, 6, 6), np.float32)
    z = np.zeros(8, np.float32)
    pack = _dispatch.impl("conv", "pack_conv_weights", backend)
    conv_gemm = _dispatch.impl("conv", "conv_gemm", backend)
    wp = pack(np.ones((8, 36), np.float32))
    conv_gemm(x + 1, wp, z, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0.0, 0.0, z, y)
    assert y[:, 2:4, 2:4].min() == y.max() == 36          # all 4 channels x 9 taps
    if backend == "cython":   # unchecked pointers: a wrong-size operand must be refused
        with pytest.raises(ValueError, match="pack_conv_weights"):
            conv_gemm(x, wp[:-1], z, 3, 3, 1, 1, 1, 1, 1, 1, 0, 0.0, 0.0, z, y)


def test_conv2d_errors():
    x = np.zeros((1, 4, 8, 8), np.float32)
    w = np.zeros((6, 4, 3, 3), np.float32)
    with pytest.raises(ShapeError, match="C/group"):
        conv2d(x, np.zeros((6, 3, 3, 3), np.float32))
    with pytest.raises(ValidationError, match="group=3 must divide the input channels"):
        conv2d(x, w, group=3)
    with pytest.raises(ValidationError, match="output channels"):
        conv2d(x, np.zeros((5, 2, 3, 3), np.float32), group=2)
    with pytest.raises(ShapeError, match="rank 4"):
        conv2d(x[0], w)
    with pytest.raises(DTypeError, match="float32 or float64"):
        conv2d(x.astype(np.int32), w)
    with pytest.raises(DTypeError):
        conv2d(x, w.astype(np.float16))
    with pytest.raises(ShapeError, match="bias"):
        conv2d(x, w, np.zeros(5, np.float32))
    with pytest.raises(ValidationError, match="activation must be one of"):
        conv2d(x, w, activation="gelu")
    with pytest.raises(ValidationError, match="takes 2 parameter"):
        conv2d(x, w, activation="clip", activation_params=(0.0,))
    with pytest.raises(ValidationError, match="prelu slope"):
        conv2d(x, w, activation="prelu", activation_params=(np.ones(4),))
    with pytest.raises(ValidationError, match="strides"):
        conv2d(x, w, strides=(0, 1))
    with pytest.raises(ValidationError, match="pads"):
        conv2d(x, w, pads=(1, 1, 1))
    with pytest.raises(ValidationError, match="auto_pad"):
        conv2d(x, w, auto_pad="SAME")
    with pytest.raises(ShapeError, match="empty"):
        conv2d(np.zeros((1, 4, 2, 2), np.float32), w)
    with pytest.raises(ShapeError, match="out must have shape"):
        conv2d(x, w, out=np.zeros((1, 6, 8, 8), np.float32))
    with pytest.raises(DTypeError, match="out must have dtype"):
        conv2d(x, w, out=np.zeros((1, 6, 6, 6), np.float64))


# ----------------------------------------------------------------------------- transpose
def naive_conv_transpose(x, w, b, strides, pads, dilations, group, out_hw):
    """Scatter definition of ONNX ConvTranspose (float64)."""
    n, c, h, wd = x.shape
    _, mg, kh, kw = w.shape
    cg = c // group
    full = np.zeros((n, mg * group, (h - 1) * strides[0] + (kh - 1) * dilations[0] + 1
                     + out_hw[0], (wd - 1) * strides[1] + (kw - 1) * dilations[1] + 1
                     + out_hw[1]))
    for g in range(group):
        xs = x[:, g * cg:(g + 1) * cg].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("nchw,cm->nmhw", xs, w[g * cg:(g + 1) * cg, :, i, j])
                r0, c0 = i * dilations[0], j * dilations[1]
                full[:, g * mg:(g + 1) * mg, r0:r0 + (h - 1) * strides[0] + 1:strides[0],
                     c0:c0 + (wd - 1) * strides[1] + 1:strides[1]] += contrib
    return full, b


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose_vs_onnxruntime_and_naive(backend, dtype, rng):
    from ort_util import run_ort_node
    pytest.importorskip("onnxruntime")
    for trial in range(16):
        group = int(rng.choice([1, 1, 2, 3]))
        c, mg = group * int(rng.integers(1, 4)), int(rng.integers(1, 4))
        kh, kw = (int(k) for k in rng.choice([1, 2, 3, 4, 5], 2))
        s = tuple(int(v) for v in rng.integers(1, 4, 2))
        d = tuple(int(v) for v in rng.integers(1, 3, 2))
        p = tuple(int(v) for v in rng.integers(0, 2, 4))
        op = tuple(int(rng.integers(0, v)) for v in s)
        x = rng.standard_normal((int(rng.integers(1, 3)), c, int(rng.integers(1, 9)),
                                 int(rng.integers(1, 9)))).astype(np.float32)
        w = rng.standard_normal((c, mg, kh, kw)).astype(np.float32)
        b = rng.standard_normal(mg * group).astype(np.float32) if trial % 2 else None
        mode = ["pads", "pads", "output_shape", "SAME_UPPER", "SAME_LOWER"][trial % 5]
        attrs = dict(strides=list(s), dilations=list(d), group=group)
        kwargs = dict(strides=s, dilations=d, group=group)
        if mode == "pads":
            attrs.update(pads=list(p), output_padding=list(op))
            kwargs.update(pads=p, output_padding=op)
        elif mode == "output_shape":
            shp = [x.shape[2] * s[0] + op[0] - 1, x.shape[3] * s[1] + s[1] - 1]
            attrs.update(output_shape=shp)
            kwargs.update(output_shape=shp)
        else:
            attrs.update(auto_pad=mode)
            kwargs.update(auto_pad=mode)
        ins = [("x", x), ("w", w)] + ([("b", b)] if b is not None else [])
        try:
            want = run_ort_node("ConvTranspose", ins, attrs, opset=11)[0]
        except Exception:   # ORT refuses some inconsistent shapes; so must we
            with pytest.raises(ValueError):
                conv_transpose2d(x, w, b, **kwargs, backend=backend)
            continue
        got = conv_transpose2d(x.astype(dtype), w.astype(dtype),
                               None if b is None else b.astype(dtype), **kwargs,
                               backend=backend)
        assert got.dtype == dtype
        _close(got, want, np.float32)
    # float64 exactness against the scatter definition
    x = rng.standard_normal((2, 4, 5, 6)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    full, _ = naive_conv_transpose(x, w, b, (2, 3), None, (1, 2), 2, (1, 0))
    want = full[:, :, 1:full.shape[2] - 0, 2:full.shape[3] - 1] + b[None, :, None, None]
    got = conv_transpose2d(x, w, b, (2, 3), (1, 2, 0, 1), (1, 2), 2, output_padding=(1, 0),
                           backend=backend)
    _close(got, want, dtype)


def test_conv_transpose_non_contiguous_out_and_errors(backend, rng):
    x = rng.standard_normal((1, 4, 5, 10)).astype(np.float32)[:, :, :, ::2]
    w = rng.standard_normal((4, 2, 2, 2)).astype(np.float32)
    want = conv_transpose2d(np.ascontiguousarray(x), w, strides=(2, 2), backend="numpy")
    out = np.zeros((1, 2, 10, 10), np.float32)
    assert conv_transpose2d(x, w, strides=(2, 2), out=out, backend=backend) is out
    _close(out, want, np.float32)
    assert conv_transpose2d(np.zeros((0, 4, 5, 5), np.float32), w, backend=backend).shape \
        == (0, 2, 6, 6)
    with pytest.raises(ShapeError, match="x.shape"):
        conv_transpose2d(x, np.zeros((3, 2, 2, 2), np.float32))
    with pytest.raises(ValidationError, match="group=3"):
        conv_transpose2d(x, w, group=3)
    with pytest.raises(ValidationError, match="output_shape"):
        conv_transpose2d(x, w, output_shape=(100, 100))
    with pytest.raises(ValidationError, match="output_padding"):
        conv_transpose2d(x, w, output_padding=(1,))
    with pytest.raises(DTypeError):
        conv_transpose2d(x.astype(np.int64), w)


def test_warmup_runs(backend):
    from edgedl.kernels import conv
    conv._warmup(backend)


# ----------------------------------------------------------------------------- 1x1 -> depthwise
_PW_DW_ACTS = [((None, "relu"), ((), ())), (("silu", "silu"), ((), ())),
               (("leaky_relu", "hard_swish"), ((0.1,), ())), (("relu6", None), ((), ())),
               (("sigmoid", "prelu"), ((), (0.25,)))]


def _pw_dw_reference(x, w1, b1, w2, b2, acts, params, pool):
    """The chain step by step: naive convs in float64, the activations, a floor 2x2 max."""
    y = np_act(naive_conv(x, w1, b1, (1, 1), (0, 0, 0, 0), (1, 1), 1), acts[0], params[0])
    y = np_act(naive_conv(y, w2, b2, (1, 1), (1, 1, 1, 1), (1, 1), w2.shape[0]), acts[1],
               params[1])
    if pool:
        n, m, h, w = y.shape
        y = y[:, :, :h // 2 * 2, :w // 2 * 2].reshape(n, m, h // 2, 2, w // 2, 2)
        y = y.max(axis=(3, 5))
    return y


def _pw_dw_inputs(rng, shape, m):
    x = rng.standard_normal(shape).astype(np.float32)
    w1 = (rng.standard_normal((m, shape[1], 1, 1)) * 0.4).astype(np.float32)
    w2 = (rng.standard_normal((m, 1, 3, 3)) * 0.4).astype(np.float32)
    return x, w1, rng.standard_normal(m).astype(np.float32), w2, \
        rng.standard_normal(m).astype(np.float32)


@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("acts, params", _PW_DW_ACTS)
@pytest.mark.parametrize("shape, m", [((1, 6, 23, 20), 10), ((1, 3, 9, 19), 16),
                                      ((2, 4, 7, 24), 5), ((1, 5, 6, 7), 3)])
def test_pointwise_depthwise_plan_vs_reference(backend, pool, acts, params, shape, m, rng):
    """1x1 conv -> 3x3 depthwise conv (padding 1) [-> 2x2 max pool] against the step by step
    definition on every backend: the banded kernel (Cython, one image, rows >= 18) and the
    planned steps (a batch of two, rows of 7, the other backends)."""
    x, w1, b1, w2, b2 = _pw_dw_inputs(rng, shape, m)
    run = pointwise_depthwise_plan(shape, w1, b1, w2, b2, acts, params, pool, backend=backend)
    want = _pw_dw_reference(x, w1, b1, w2, b2, acts, params, pool)
    assert run.out_shape == want.shape
    out = np.full(want.shape, np.nan, np.float32)
    assert run(x, out) is out
    _close(out, want, np.float32)
    _close(run(x), want, np.float32)


def _pw_dw_steps(shape, w1, b1, w2, b2, acts, params, pool):
    """The chain as the separate planned Cython steps (what the graph runs unfused)."""
    from edgedl.kernels.pooling import pool2d_plan
    pw = conv2d_plan(shape, w1, b1, activation=acts[0], activation_params=params[0],
                     backend="cython")
    dw = conv2d_plan(pw.out_shape, w2, b2, pads=(1, 1, 1, 1), group=w2.shape[0],
                     activation=acts[1], activation_params=params[1], backend="cython")
    mp = pool2d_plan(dw.out_shape, "max", (2, 2), (2, 2), backend="cython")
    return lambda x: mp(dw(pw(x))) if pool else dw(pw(x))


@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("acts, params", _PW_DW_ACTS[:3])
@pytest.mark.parametrize("shape, m", [((1, 16, 41, 18), 24), ((1, 32, 70, 128), 64),
                                      ((1, 8, 9, 300), 64), ((1, 8, 3, 33), 8)])
def test_pointwise_depthwise_kernel_is_the_steps(pool, threads, acts, params, shape, m, rng):
    """PwDwF32 (bands of rows, runs of them per thread, the 1x1's rows between bands moved
    rather than computed again) gives the separate steps' bits: the same kernels and sums.
    Heights that leave a short last band, odd heights under the pool, bands of 2 rows."""
    require_backend("cython")
    from edgedl._config import use_num_threads
    x, w1, b1, w2, b2 = _pw_dw_inputs(rng, shape, m)
    run = pointwise_depthwise_plan(shape, w1, b1, w2, b2, acts, params, pool,
                                   backend="cython")
    assert run._fast is not None
    want = _pw_dw_steps(shape, w1, b1, w2, b2, acts, params, pool)(x)
    with use_num_threads(threads):
        got = run(x)
    np.testing.assert_array_equal(got, want)


def test_pointwise_depthwise_fast_path_declines_and_checks(rng):
    """The banded kernel returns False for what it cannot run (strided or overlapping
    arrays, other shapes or dtypes), which the plan then runs step by step; its constructor
    refuses weights of the wrong size and rows too short for its row kernels; NaN inputs
    propagate as in the steps."""
    require_backend("cython")
    from edgedl._cy import conv as cy
    shape, m = (1, 4, 10, 20), 6
    x, w1, b1, w2, b2 = _pw_dw_inputs(rng, shape, m)
    run = pointwise_depthwise_plan(shape, w1, b1, w2, b2, (None, "relu"), ((), ()), True,
                                   backend="cython")
    fast, want = run._fast, _pw_dw_reference(x, w1, b1, w2, b2, (None, "relu"), ((), ()), True)
    assert isinstance(fast, cy.PwDwF32)
    xs = np.repeat(x, 2, axis=3)[..., ::2]
    assert not fast(xs, np.empty(want.shape, np.float32), 1)
    _close(run(xs), want, np.float32)
    assert not fast(x, np.empty((1, m, 10, 20), np.float32), 1)         # unpooled shape
    assert not fast(x, np.empty(want.shape, np.float64), 1)
    assert not fast(x, np.empty(want.shape, np.float32), 1, x)          # no residual
    big = np.zeros(x.size + 8, np.float32)
    assert not fast(big[:x.size].reshape(shape), big[8:8 + want.size].reshape(want.shape), 1)
    with pytest.raises(ShapeError, match="as planned"):
        run(x[..., :-1])
    wp = cy.pack_conv_weights(w1.reshape(m, -1))
    z = np.zeros(m, np.float32)
    for bad in (dict(w2=np.zeros(5, np.float32)), dict(w=17), dict(b1=np.zeros(3, np.float32)),
                dict(wp=np.zeros(7, np.float32)), dict(h=1, pool=True)):
        kw = dict(wp=wp, b1=z, s1=z, act1=0, lo1=0.0, hi1=0.0, w2=w2.reshape(-1), b2=z,
                  s2=z, act2=0, lo2=0.0, hi2=0.0, c=4, h=10, w=20, m=m, pool=False)
        kw.update(bad)
        with pytest.raises(ValueError):
            cy.PwDwF32(*kw.values())
    x[0, 1, 4, 7] = np.nan
    steps = _pw_dw_steps(shape, w1, b1, w2, b2, (None, "relu"), ((), ()), True)(x)
    np.testing.assert_array_equal(np.isnan(run(x)), np.isnan(steps))
    assert np.isnan(steps).any()
    with pytest.raises(ShapeError, match="1, 3, 3"):
        pointwise_depthwise_plan(shape, w1, b1, w2[:, :, :2], b2)


def _conv_pool_steps(shape, w, b, conv_kw, pool, backend="cython"):
    """The conv, then the max pool, as the separate planned steps (the unfused graph)."""
    from edgedl.kernels.pooling import pool2d_plan
    conv = conv2d_plan(shape, w, b, backend=backend, **conv_kw)
    mp = pool2d_plan(conv.out_shape, "max", *pool, backend=backend)
    return lambda x: mp(conv(x))


_CONV_POOLS = [((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),
               ((3, 3), (2, 2), (0, 0, 0, 0), (1, 1), True),
               ((3, 3), (2, 2), (1, 0, 0, 1), (1, 1), True),
               ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False)]


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("pool", _CONV_POOLS)
@pytest.mark.parametrize("act, params", [("relu", ()), (None, ()), ("leaky_relu", (0.1,)),
                                         ("silu", ())])
@pytest.mark.parametrize("shape, m, k, s, pads", [
    ((1, 3, 71, 66), 24, 3, 2, (1, 1, 1, 1)), ((1, 3, 40, 37), 10, 3, 1, (1, 1, 1, 1)),
    ((1, 2, 38, 41), 64, 5, 2, (2, 1, 0, 3)), ((1, 3, 30, 64), 8, 3, 2, (0, 0, 0, 0))])
def test_conv_maxpool_kernel_is_the_steps(threads, pool, act, params, shape, m, k, s, pads,
                                          rng):
    """ConvMaxPoolF32 (bands of pooled rows, the conv row two bands share moved rather than
    computed again, runs of bands per thread) gives the separate steps' bits, and the NumPy
    backend's values: stride-2 stems whose split rows take the de-interleave (odd and even
    pads and widths), 3x3 pools with and without padding and ceil_mode, 2x2 pools,
    activations in the registers and after them, bands of one pooled row (64 channels)."""
    require_backend("cython")
    from edgedl._config import use_num_threads
    from edgedl._cy import conv as cy
    from edgedl.kernels.conv import conv_maxpool_plan
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal((m, shape[1], k, k)) * 0.3).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    conv_kw = dict(strides=(s, s), pads=pads, activation=act, activation_params=params)
    run = conv_maxpool_plan(shape, w, b, pool=pool, backend="cython", **conv_kw)
    assert (run._fast is not None) == cy.direct_ok()    # 32-bit ARM: no direct path, steps
    want = _conv_pool_steps(shape, w, b, conv_kw, pool)(x)
    with use_num_threads(threads):
        got = run(x, np.full(want.shape, np.nan, np.float32))
    np.testing.assert_array_equal(got, want)
    _close(got, _conv_pool_steps(shape, w, b, conv_kw, pool, "numpy")(x), np.float32)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("act, params", [("relu", ()), (None, ()), ("relu6", ()),
                                         ("leaky_relu", (0.1,)), ("silu", ())])
@pytest.mark.parametrize("shape", [(1, 16, 40, 36), (1, 5, 37, 19), (1, 64, 5, 80),
                                   (1, 4, 34, 150), (1, 6, 20, 17)])
def test_depthwise_maxpool_kernel_is_the_steps(threads, act, params, shape, rng):
    """ConvMaxPoolF32 on a 3x3 'same' depthwise conv and a 2x2 stride-2 pool (each
    channel's conv rows pooled band by band, runs of row pairs per thread) gives the
    separate steps' bits and the NumPy backend's values: several bands, odd sizes (the
    pool's floor), a plane of 5 rows, activations in the stores and after them; rows under
    18 decline (the steps run)."""
    require_backend("cython")
    from edgedl._config import use_num_threads
    from edgedl.kernels.conv import conv_maxpool_plan
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal((c, 1, 3, 3)) * 0.3).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    conv_kw = dict(pads=(1, 1, 1, 1), group=c, activation=act, activation_params=params)
    pool = ((2, 2), (2, 2))
    run = conv_maxpool_plan(shape, w, b, pool=pool, backend="cython", **conv_kw)
    assert (run._fast is not None) == (shape[3] >= 18)
    want = _conv_pool_steps(shape, w, b, conv_kw, pool)(x)
    with use_num_threads(threads):
        got = run(x, np.full(want.shape, np.nan, np.float32))
    np.testing.assert_array_equal(got, want)
    _close(got, _conv_pool_steps(shape, w, b, conv_kw, pool, "numpy")(x), np.float32)


def test_conv_maxpool_declines_and_checks(rng):
    """The fused kernel returns False for what it cannot run (strided or overlapping arrays,
    other shapes or dtypes, a residual), which the plan then runs step by step; its
    constructor refuses pools it does not take; a conv off the direct path (1x1) or a pool
    it does not take (3x3 at stride 1, a trimmed window) plans as the two steps; NaN
    propagates as in the steps."""
    require_backend("cython")
    from edgedl._cy import conv as cy
    from edgedl.kernels.conv import conv_maxpool_plan
    if not cy.direct_ok():
        pytest.skip("this build has no direct conv path (32-bit ARM): no fused kernel")
    shape = (1, 3, 40, 36)
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    pool = _CONV_POOLS[0]
    run = conv_maxpool_plan(shape, w, b, (2, 2), (1, 1, 1, 1), activation="relu", pool=pool,
                            backend="cython")
    fast = run._fast
    steps = _conv_pool_steps(shape, w, b, dict(strides=(2, 2), pads=(1, 1, 1, 1),
                                               activation="relu"), pool)
    want = steps(x)
    assert isinstance(fast, cy.ConvMaxPoolF32) and want.shape == (1, 16, 10, 9)
    xs = np.repeat(x, 2, axis=3)[..., ::2]
    assert not fast(xs, np.empty(want.shape, np.float32), 1)
    _close(run(xs), want, np.float32)      # the conv's general path: another summation
    assert not fast(x, np.empty((1, 16, 20, 18), np.float32), 1)
    assert not fast(x, np.empty(want.shape, np.float64), 1)
    assert not fast(x, np.empty(want.shape, np.float32), 1, want)
    big = np.zeros(x.size + 8, np.float32)
    assert not fast(big[:x.size].reshape(shape), big[8:8 + want.size].reshape(want.shape), 1)
    with pytest.raises(ShapeError, match="as planned"):
        run(x[..., :-1])
    conv = conv2d_plan(shape, w, b, (2, 2), (1, 1, 1, 1), backend="cython")._fast
    for bad in ((3, 2, 1, 10, 9), (3, 1, 2, 10, 9), (2, 1, 0, 10, 9), (3, 1, 1, 12, 9),
                (3, 1, 1, 10, 11), (4, 1, 1, 5, 5), (2, 0, 0, 11, 9), (3, 1, 1, 0, 9)):
        with pytest.raises(ValueError):
            cy.ConvMaxPoolF32(conv, *bad)
    w1 = (rng.standard_normal((16, 3, 1, 1)) * 0.3).astype(np.float32)
    for ww, pl in ((w1, pool), (w, ((3, 3), (1, 1), (1, 1, 1, 1))),
                   (w, ((3, 3), (2, 2), (2, 2, 2, 2)))):
        r = conv_maxpool_plan(shape, ww, b, (2, 2), (1, 1, 1, 1), pool=pl, backend="cython")
        assert r._fast is None
        np.testing.assert_array_equal(
            r(x), _conv_pool_steps(shape, ww, b, dict(strides=(2, 2), pads=(1, 1, 1, 1)),
                                   pl)(x))
    x[0, 1, 7, 9] = np.nan
    got = run(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(steps(x)))
    assert np.isnan(got).any()


@pytest.mark.parametrize("isa", ["avx2", "sse"])
def test_float_kernels_at_each_x86_level(isa):
    """EDGEDL_F32_ISA caps the x86 level of the per-ISA float32 kernels (edl_math.h: the
    depthwise rows at stride 1 and 2 (3x3, and 5x5 at stride 1) and the GEMM, instantiated at
    each ISA's register width because GCC compares wider vectors lane by lane, and the 3x3 /
    2x2 stride-2 max pools' rows, the 3x3 stride-2 average pool's): each level, on any x86 CPU
    at or above it, against the NumPy backend, at widths around the 4-, 8- and 16-float
    steps, with the clip's NaN kept (read once per process: a subprocess each)."""
    import os
    import platform
    import subprocess
    import sys
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 levels only")
    require_backend("cython")
    code = (
        "import numpy as np\n"
        "from edgedl.kernels.conv import conv2d, pointwise_depthwise_plan\n"
        "from edgedl.kernels.pooling import avg_pool2d, max_pool2d\n"
        "r = np.random.default_rng(3)\n"
        "for wd in (18, 19, 25, 33, 34, 35, 41, 50, 67, 80):\n"
        "    x = r.standard_normal((1, 5, 7, wd)).astype(np.float32)\n"
        "    x[0, 1, 3, wd // 2] = np.nan\n"
        "    w = r.standard_normal((5, 1, 3, 3)).astype(np.float32)\n"
        "    b = r.standard_normal(5).astype(np.float32)\n"
        "    for s in (1, 2):\n"
        "        for act, p in ((None, ()), ('relu6', ()), ('clip', (-0.5, 0.7))):\n"
        "            kw = dict(strides=(s, s), pads=(1, 1, 1, 1), group=5, activation=act,\n"
        "                      activation_params=p)\n"
        "            got = conv2d(x, w, b, backend='cython', **kw)\n"
        "            want = conv2d(x, w, b, backend='numpy', **kw)\n"
        "            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5,\n"
        "                                       err_msg=f'{wd} {s} {act}')\n"
        "            assert (np.isnan(got) == np.isnan(want)).all(), (wd, s, act)\n"
        "    w5 = r.standard_normal((5, 1, 5, 5)).astype(np.float32)\n"
        "    kw = dict(pads=(2, 2, 2, 2), group=5)\n"
        "    got, want = (conv2d(x, w5, b, backend=be, **kw) for be in ('cython', 'numpy'))\n"
        "    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f'5x5 {wd}')\n"
        "    assert (np.isnan(got) == np.isnan(want)).all(), wd\n"
        "    w1 = r.standard_normal((12, 5, 1, 1)).astype(np.float32)\n"
        "    w2 = r.standard_normal((12, 1, 3, 3)).astype(np.float32)\n"
        "    b1, b2 = r.standard_normal((2, 12)).astype(np.float32)\n"
        "    run = pointwise_depthwise_plan(x.shape, w1, b1, w2, b2, ('relu', 'relu6'),\n"
        "                                   ((), ()), backend='cython')\n"
        "    y = conv2d(x, w1, b1, activation='relu', backend='numpy')\n"
        "    want = conv2d(y, w2, b2, pads=(1, 1, 1, 1), group=12, activation='relu6',\n"
        "                  backend='numpy')\n"
        "    np.testing.assert_allclose(run(x), want, rtol=1e-5, atol=1e-5, err_msg=str(wd))\n"
        "    for pads in ((1, 1, 1, 1), (0, 0, 0, 0), (0, 1, 1, 0)):\n"
        "        for ceil in (False, True):\n"
        "            kw = dict(kernel_shape=(3, 3), strides=(2, 2), pads=pads, ceil_mode=ceil)\n"
        "            np.testing.assert_array_equal(max_pool2d(x, **kw, backend='cython'),\n"
        "                                          max_pool2d(x, **kw, backend='numpy'))\n"
        "            for cip in (False, True):\n"
        "                got, want = (avg_pool2d(x, **kw, count_include_pad=cip, backend=be)\n"
        "                             for be in ('cython', 'numpy'))\n"
        "                np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)\n"
        "                assert (np.isnan(got) == np.isnan(want)).all(), (wd, pads, cip)\n"
        "    kw = dict(kernel_shape=(2, 2), strides=(2, 2))\n"
        "    np.testing.assert_array_equal(max_pool2d(x, **kw, backend='cython'),\n"
        "                                  max_pool2d(x, **kw, backend='numpy'))\n")
    env = dict(os.environ, EDGEDL_F32_ISA=isa)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
