"""int8 kernels: the reference against a naive oracle, every backend against the reference
(bit-exact), onnxruntime on single nodes (the ai.onnx ops and the com.microsoft QLinear ops its
quantizer writes), and bad arguments -> clear errors (a ModelError naming the node in a model)."""
import numpy as np
import pytest

from edgedl._config import BACKEND_ORDER, why_unavailable
from edgedl.errors import DTypeError, ModelError, ShapeError, ValidationError
from edgedl.kernels import quant as Q

from ort_util import ort_int8_exact, ort_session, single_node_model

AVAILABLE = [b for b in BACKEND_ORDER if why_unavailable(b) is None]
U8, S8 = np.uint8, np.int8


def _q(rng, shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape, dtype=dtype)


def naive_conv_integer(x, xz, w, wz, strides, pads, dil, group):
    """Output pixel by output pixel, in int64, straight from the definition."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh = (h + pads[0] + pads[2] - (kh - 1) * dil[0] - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - (kw - 1) * dil[1] - 1) // strides[1] + 1
    xs = x.astype(np.int64) - xz
    ws = w.astype(np.int64) - np.broadcast_to(wz, (m,))[:, None, None, None]
    y = np.zeros((n, m, oh, ow), np.int64)
    mg = m // group
    for b in range(n):
        for o in range(m):
            g = o // mg
            for i in range(oh):
                for j in range(ow):
                    s = 0
                    for ci in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                r = i * strides[0] - pads[0] + u * dil[0]
                                q = j * strides[1] - pads[1] + v * dil[1]
                                if 0 <= r < h and 0 <= q < wd:
                                    s += xs[b, g * cg + ci, r, q] * ws[o, ci, u, v]
                    y[b, o, i, j] = s
    return y


CONV_CASES = [  # (x shape, M, group, k, strides, pads, dilations)
    ((1, 3, 7, 9), 4, 1, 3, (1, 1), (1, 1, 1, 1), (1, 1)),
    ((2, 4, 6, 5), 6, 2, 3, (2, 1), (0, 1, 2, 0), (1, 2)),
    ((1, 5, 8, 8), 5, 5, 3, (1, 1), (1, 1, 1, 1), (1, 1)),        # depthwise
    ((1, 6, 9, 7), 6, 6, 5, (2, 2), (2, 2, 2, 2), (1, 1)),        # depthwise 5x5 s2
    ((1, 7, 13, 11), 7, 7, 5, (1, 1), (2, 2, 2, 2), (1, 1)),    # depthwise 5x5 s1 (VNNI rows)
    ((1, 8, 4, 4), 3, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),        # 1x1 direct
    ((1, 2, 5, 6), 4, 1, 2, (3, 2), (0, 0, 1, 1), (2, 1)),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_reference_conv_matches_naive(case, rng):
    xshape, m, group, k, st, pads, dil = case
    x = _q(rng, xshape, U8)
    w = _q(rng, (m, xshape[1] // group, k, k), S8)
    wz = rng.integers(-5, 6, m).astype(S8)
    got = Q.conv_integer2d(x, w, U8(17), wz, st, pads, dil, group, backend="numpy")
    np.testing.assert_array_equal(got, naive_conv_integer(x, 17, w, wz, st, pads, dil, group))


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("types", [(U8, S8), (S8, S8), (U8, U8)])
def test_qlinear_conv_backends_match_reference(backend, case, types, rng):
    xshape, m, group, k, st, pads, dil = case
    xt, wt = types
    x = _q(rng, xshape, xt)
    w = _q(rng, (m, xshape[1] // group, k, k), wt)
    args = (x, np.float32(0.05), xt(3), w, rng.uniform(1e-3, 2e-2, m).astype(np.float32),
            np.zeros(m, wt), np.float32(0.3), xt(7), rng.integers(-3000, 3000, m).astype(
                np.int32), st, pads, dil, group)
    want = Q.qlinear_conv2d(*args, backend="numpy")
    np.testing.assert_array_equal(Q.qlinear_conv2d(*args, backend=backend), want)
    acc = Q.conv_integer2d(x, w, xt(3), None, st, pads, dil, group, backend=backend)
    np.testing.assert_array_equal(acc, Q.conv_integer2d(x, w, xt(3), None, st, pads, dil,
                                                        group, backend="numpy"))


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("mkn", [(1, 1, 1), (3, 7, 5), (17, 127, 300), (4, 4, 513)])
def test_qgemm_tails(backend, mkn, rng):
    m, k, n = mkn
    a, b = _q(rng, (m, k), S8), _q(rng, (k, n), U8)
    az, bz = rng.integers(-3, 4, m).astype(np.int32), rng.integers(0, 255, n).astype(np.int32)
    want = (a.astype(np.int64) - az[:, None]) @ (b.astype(np.int64) - bz[None, :])
    for bk in ("numpy", backend):
        acc = np.empty((m, n), np.int32)
        from edgedl.kernels import _dispatch
        _dispatch.impl("quant", "qgemm", bk)(a, az, b, bz, acc)
        np.testing.assert_array_equal(acc, want)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", [U8, S8, np.uint16, np.int16])
def test_quantize_dequantize_rounding_and_axis(backend, dtype, rng):
    scale = np.float32([0.5, 0.25, 2.0])
    info = np.iinfo(dtype)
    zp = np.array([info.min + 1, 0 if info.min < 0 else 7, info.max - 3], dtype)
    # exact ties (round half to even), saturation both ways, ordinary values
    x = np.concatenate([np.arange(-6, 6, dtype=np.float32) + 0.5,
                        np.float32([-1e6, 1e6, 0.0, -0.0]),
                        rng.normal(0, 50, 20).astype(np.float32)])
    x = np.stack([x * s for s in (1, 0.5, 4)])[None]           # (1, 3, L), axis 1
    y = Q.quantize_linear(x, scale, zp, axis=1, backend=backend)
    assert y.dtype == dtype
    ref = np.clip(np.rint(x / scale[None, :, None]) + zp[None, :, None], info.min, info.max)
    np.testing.assert_array_equal(y, ref.astype(dtype))
    d = Q.dequantize_linear(y, scale, zp, axis=1, backend=backend)
    np.testing.assert_array_equal(
        d, ((y.astype(np.int64) - zp[None, :, None]).astype(np.float32) * scale[None, :, None]))
    # per tensor, axis -1
    y1 = Q.quantize_linear(x, np.float32(0.5), dtype(0), axis=-1, backend=backend)
    np.testing.assert_array_equal(y1, Q.quantize_linear(x, np.float32(0.5), dtype(0),
                                                        backend="numpy"))


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", [U8, S8])
def test_quantize_is_the_true_division_at_ties(backend, dtype, rng):
    """QuantizeLinear rounds x / s (a true float32 division, as onnxruntime): the compiled
    kernels' multiply-and-correct form (two FMAs) must give the same integers, also within
    an ulp of every rounding tie, for scales of every magnitude (a subnormal one, whose
    reciprocal overflows, takes the division)."""
    scales = np.concatenate([np.float32(10.0) ** rng.uniform(-7, 3, 60),
                             np.float32([1e-39, 3e-38, 0.1, 1 / 255, 0.0173])]).astype(np.float32)
    k = np.arange(-140, 140, dtype=np.float32) + np.float32(0.5)
    for scale in scales:
        ties = k * scale
        near = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)),
                               np.nextafter(ties, np.float32(-np.inf)),
                               rng.normal(0, 60, 200).astype(np.float32) * scale,
                               rng.normal(0, 1e3, 50).astype(np.float32)]).astype(np.float32)
        x = near.reshape(1, 1, -1)
        zp = dtype(3)
        info = np.iinfo(dtype)
        with np.errstate(over="ignore"):          # x / 1e-39 overflows to inf: saturates
            got = Q.quantize_linear(x, scale, zp, backend=backend)
            want = np.clip(np.rint(np.fmin(np.fmax(x / scale, np.float32(info.min - 3)),
                                           np.float32(info.max - 3))) + 3, info.min, info.max)
        np.testing.assert_array_equal(got, want.astype(dtype), err_msg=f"scale {scale!r}")


@pytest.mark.parametrize("backend", AVAILABLE)
def test_quantize_nan_and_inf_like_onnxruntime(backend):
    x = np.float32([np.nan, np.inf, -np.inf, 1.0])
    for dt, zp in ((U8, 10), (S8, -5)):
        y = Q.quantize_linear(x, np.float32(0.5), dt(zp), backend=backend)
        info = np.iinfo(dt)
        np.testing.assert_array_equal(y, np.array([info.min, info.max, info.min, zp + 2], dt))


@pytest.mark.parametrize("backend", AVAILABLE)
def test_requantize_and_lookup(backend, rng):
    acc = rng.integers(-200000, 200000, (2, 5, 33)).astype(np.int32)
    bias = rng.integers(-999, 999, 5).astype(np.int32)
    scale = rng.uniform(1e-4, 1e-3, 5).astype(np.float32)
    for dt, zp in ((U8, 128), (S8, -3)):
        want = Q.requantize(acc, bias, scale, zp, dt, backend="numpy")
        np.testing.assert_array_equal(Q.requantize(acc, bias, scale, zp, dt, backend=backend),
                                      want)
        v = np.rint((acc.astype(np.int64) + bias[:, None]).astype(np.float32)
                    * scale[:, None]) + zp
        np.testing.assert_array_equal(want, np.clip(v, np.iinfo(dt).min, np.iinfo(dt).max))
    # rows of 64+ (the AVX-512 loop and its tail): ties (scale 0.5, odd sums), saturation
    # both ways, sums near the int32 limits (acc + bias wraps in int32, as onnxruntime's)
    acc = rng.integers(-600, 600, (1, 3, 200)).astype(np.int32)
    acc[0, 1, :20] = [2**31 - 1, -2**31, 2**31 - 1000, -2**31 + 1000] * 5
    bias = np.int32([1, -1, 0])
    scale = np.float32([0.5, 0.5, 3e-3])
    for dt, zp in ((U8, 128), (S8, -3), (U8, 0), (S8, 127)):
        got = Q.requantize(acc, bias, scale, zp, dt, backend=backend)
        wrapped = (acc.astype(np.int64) + bias[:, None]).astype(np.int32)
        v = np.rint(wrapped.astype(np.float32) * scale[:, None]) + zp
        np.testing.assert_array_equal(got, np.clip(v, np.iinfo(dt).min, np.iinfo(dt).max))
    x = _q(rng, (3, 77), S8)
    t = _q(rng, 256, U8)
    np.testing.assert_array_equal(Q.lookup(x, t, backend=backend), t[x.view(U8)])


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", [U8, S8])
def test_binary_tables_match_the_formula(backend, dtype, rng):
    a, b = _q(rng, (2, 3, 5, 7), dtype), _q(rng, (3, 1, 7), dtype)
    z = (dtype(3), dtype(-2 if dtype == S8 else 9), dtype(5))
    for op in ("add", "mul"):
        t = Q.qlinear_binary_table(op, 0.0517, z[0], 0.0213, z[1], 0.1093, z[2], dtype)
        want = Q.qlinear_binary(op, a, 0.0517, z[0], b, 0.0213, z[1], 0.1093, z[2])
        np.testing.assert_array_equal(Q.lookup2(a, b, t, backend=backend), want)
    with pytest.raises(DTypeError, match="one dtype"):
        Q.lookup2(a, b.view(U8 if dtype == S8 else S8), t, backend=backend)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", [U8, S8])
def test_binary_plan_is_the_formula_on_every_pair(backend, dtype, rng):
    """qlinear_binary_plan (the planned QLinearAdd / QLinearMul: float32 value by value, no
    FMA contraction) gives qlinear_binary's bits on all 65536 pairs of 8-bit values for
    random parameters (ties included: (fixed + a * ra) + b * rb lands on x.5), and
    broadcasts."""
    info = np.iinfo(dtype)
    bits = np.arange(256, dtype=np.uint16).astype(U8).view(dtype)
    a, b = np.repeat(bits, 256), np.tile(bits, 256)
    for trial in range(12):
        op = ("add", "mul")[trial % 2]
        s = [np.float32(v) for v in rng.uniform(0.001, 0.2, 3)]
        z = [dtype(v) for v in rng.integers(info.min, int(info.max) + 1, 3)]
        want = Q.qlinear_binary(op, a, s[0], z[0], b, s[1], z[1], s[2], z[2])
        run = Q.qlinear_binary_plan(op, s[0], z[0], s[1], z[1], s[2], z[2], dtype,
                                    backend=backend)
        np.testing.assert_array_equal(run(a, b), want, err_msg=f"{op} {s} {z}")
    x, y = _q(rng, (2, 3, 5, 7), dtype), _q(rng, (3, 1, 7), dtype)
    out = np.empty((2, 3, 5, 7), dtype)
    assert run(x, y, out) is out
    np.testing.assert_array_equal(out, Q.qlinear_binary(op, x, s[0], z[0], y, s[1], z[1],
                                                        s[2], z[2]))
    with pytest.raises(DTypeError):
        run(x, y.view(U8 if dtype == S8 else S8))
    with pytest.raises(ShapeError, match="do not broadcast"):
        run(x, x[..., :3])


@pytest.mark.parametrize("dtype", [U8, S8])
def test_bound_binary_in_place_and_declines(dtype, rng):
    """The Cython plan's bound QLinearAdd / Mul (QBinary8): into one of its operands too,
    and declining (touching nothing) operands it was not made for: broadcasting, another
    type, not contiguous."""
    cq = pytest.importorskip("edgedl._cy.quant", reason="the Cython backend is not built")
    s, z = (np.float32(0.05), np.float32(0.03), np.float32(0.07)), (dtype(3), dtype(9), dtype(5))
    for op in ("add", "mul"):
        run = Q.qlinear_binary_plan(op, s[0], z[0], s[1], z[1], s[2], z[2], dtype,
                                    backend="cython")
        a, b = _q(rng, (2, 3, 5, 67), dtype), _q(rng, (2, 3, 5, 67), dtype)
        want = Q.qlinear_binary(op, a, s[0], z[0], b, s[1], z[1], s[2], z[2])
        got = a.copy()
        assert run(got, b, got) is got
        np.testing.assert_array_equal(got, want)
        fast = cq.QBinary8(dtype == S8, *[0] * 9)
        out = np.full(a.shape, 7, dtype)
        for x, y in ((a, b[:, :, :1]), (a.view(U8 if dtype == S8 else S8), b),
                     (a[..., ::-1], b), (a, b.astype(np.int16))):
            assert not fast(x, y, out)
        assert not fast(a, b, out[..., ::-1]) and (out == 7).all()


@pytest.mark.parametrize("backend", AVAILABLE)
def test_qlinear_matmul_batched(backend, rng):
    a = _q(rng, (2, 3, 5, 9), U8)
    b = _q(rng, (3, 9, 4), S8)
    args = (a, 0.02, U8(100), b, np.float32([0.01, 0.02, 0.03, 0.04]), np.zeros(4, S8), 0.1,
            U8(128))
    want = Q.qlinear_matmul(*args, backend="numpy")
    np.testing.assert_array_equal(Q.qlinear_matmul(*args, backend=backend), want)
    acc = (a.astype(np.int64) - 100) @ b.astype(np.int64)
    mult = (np.float32(0.02) * np.float32([0.01, 0.02, 0.03, 0.04])) / np.float32(0.1)
    ref = np.clip(np.rint(acc.astype(np.float32) * mult) + 128, 0, 255)
    np.testing.assert_array_equal(want, ref)


# ----------------------------------------------------------------------------- onnxruntime
def _run_both(op_type, inputs, attrs=None, opset=19, domain="", backend=None):
    import edgedl
    inputs = [(n, None if a is None else np.asarray(a)) for n, a in inputs]    # None: omitted
    model = single_node_model(op_type, inputs, attrs, opset=opset, domain=domain)
    if domain:   # com.microsoft ops live beside a default-domain opset
        from onnx import helper
        model.opset_import.append(helper.make_opsetid("", 17))
    feed = {n: np.asarray(a) for n, a in inputs if a is not None}
    want = ort_session(model).run(None, feed)[0]
    got = edgedl.InferenceSession(model.SerializeToString(), backend=backend).run(None, feed)[0]
    return got, want


def _run_both_const(op_type, inputs, consts, attrs=None, domain="com.microsoft",
                    backend=None):
    """_run_both with the inputs named in ``consts`` as initializers (as in quantized models:
    edgedl then plans the node with its parameters folded at load)."""
    import edgedl
    from onnx import numpy_helper
    inputs = [(n, np.asarray(a)) for n, a in inputs]
    model = single_node_model(op_type, inputs, attrs, opset=1, domain=domain)
    model.opset_import.append(__import__("onnx").helper.make_opsetid("", 17))
    g = model.graph
    keep = [i for i in g.input if i.name not in consts]
    del g.input[:]
    g.input.extend(keep)
    g.initializer.extend(numpy_helper.from_array(a, n) for n, a in inputs if n in consts)
    feed = {n: a for n, a in inputs if n not in consts}
    want = ort_session(model).run(None, feed)[0]
    got = edgedl.InferenceSession(model.SerializeToString(), backend=backend).run(None, feed)[0]
    return got, want


def _close_lsb(got, want, exact=0.98):
    """Within 1 LSB everywhere, equal nearly everywhere: the float32 arithmetic of onnxruntime's
    QLinear kernels differs from ours in the order of a product or sum (or an FMA) now and
    then, which moves a value within an ulp of a rounding tie by one step: with round-number
    scales (0.05 / 0.1), where exact ties are common, about 1 element in 100."""
    assert got.dtype == want.dtype and got.shape == want.shape
    d = np.abs(got.astype(np.int64) - want.astype(np.int64))
    assert d.max() <= 1, f"max difference {d.max()} LSB"
    assert (d == 0).mean() >= exact, f"only {(d == 0).mean():.4f} of elements equal"


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("case", CONV_CASES[:4])
def test_qlinear_conv_matches_onnxruntime(backend, case, rng):
    xshape, m, group, k, st, pads, dil = case
    x = _q(rng, xshape, U8)
    w = _ort_weights(rng, (m, xshape[1] // group, k, k))
    ins = [("x", x), ("xs", np.float32(0.05)), ("xz", U8(3)), ("w", w),
           ("ws", rng.uniform(1e-3, 2e-2, m).astype(np.float32)), ("wz", np.zeros(m, S8)),
           ("ys", np.float32(0.3)), ("yz", U8(7)),
           ("b", rng.integers(-3000, 3000, m).astype(np.int32))]
    got, want = _run_both("QLinearConv", ins, dict(strides=list(st), pads=list(pads),
                                                   dilations=list(dil), group=group),
                          opset=10, backend=backend)
    # the definition, computed plainly: int64 sums, onnxruntime's float32 requantization
    acc = naive_conv_integer(x, 3, w, 0, st, pads, dil, group) + \
        ins[-1][1][None, :, None, None]
    mult = (np.float32(0.05) * ins[4][1]) / np.float32(0.3)
    exact = np.clip(np.rint(acc.astype(np.float32) * mult[None, :, None, None]) + 7, 0, 255)
    np.testing.assert_array_equal(got, exact)
    np.testing.assert_array_equal(want, exact)


def _ort_weights(rng, shape):
    """int8 weights onnxruntime computes exactly on every x86 CPU: within 7 bits. On AVX2
    without VNNI its u8 x s8 kernels sum products in pairs with vpmaddubsw, which saturates
    at int16 (255 * 127 * 2 > 32767), so full-range weights come out wrong by up to ~40 LSB
    there (checked: its MatMulInteger equals that saturating sum); edgedl's AVX2 path widens
    first and is exact. (Why onnxruntime's quantizer offers reduce_range.) Full-range weights
    are checked against the definition in the reference tests above."""
    return rng.integers(-64, 64, shape).astype(S8)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_matmul_ops_match_onnxruntime(backend, rng):
    a, b = _q(rng, (3, 5, 16), U8), _ort_weights(rng, (16, 7))
    ins = [("a", a), ("as", np.float32(0.02)), ("az", U8(90)), ("b", b),
           ("bs", np.float32(0.03)), ("bz", S8(0)), ("ys", np.float32(0.2)), ("yz", U8(10))]
    got, want = _run_both("QLinearMatMul", ins, opset=10, backend=backend)
    np.testing.assert_array_equal(got, want)
    got, want = _run_both("MatMulInteger", [("a", a), ("b", b), ("az", U8(90)),
                                            ("bz", S8(0))], opset=10, backend=backend)
    np.testing.assert_array_equal(got, want)
    got, want = _run_both("ConvInteger", [("x", _q(rng, (1, 2, 6, 6), U8)),
                                          ("w", _q(rng, (3, 2, 3, 3), U8)), ("xz", U8(5)),
                                          ("wz", U8(9))],
                          dict(pads=[1, 1, 1, 1]), opset=10, backend=backend)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", AVAILABLE)
def test_dynamic_quantize_matches_onnxruntime(backend, rng):
    for x in (rng.normal(0, 3, (4, 50)).astype(np.float32), np.zeros((3, 3), np.float32),
              rng.uniform(1, 2, 9).astype(np.float32)):
        import edgedl
        model = single_node_model("DynamicQuantizeLinear", [("x", x)], opset=11, n_outputs=3)
        want = ort_session(model).run(None, {"x": x})
        got = edgedl.InferenceSession(model.SerializeToString(), backend=backend).run(
            None, {"x": x})
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def _ms_unary(x, op, attrs=None, backend=None):
    ins = [("x", x), ("xs", np.float32(0.07)), ("xz", x.dtype.type(11)),
           ("ys", np.float32(1 / 255 if op != "QLinearLeakyRelu" else 0.05)),
           ("yz", x.dtype.type(0 if op != "QLinearLeakyRelu" else 20))]
    return _run_both(op, ins, attrs, opset=1, domain="com.microsoft", backend=backend)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", [U8, S8])
def test_microsoft_ops_match_onnxruntime(backend, dtype, rng):
    x = _q(rng, (1, 4, 6, 6), dtype)
    _close_lsb(*_ms_unary(np.arange(256, dtype=np.uint16).astype(np.uint8).view(dtype)
                          .reshape(1, 1, 16, 16), "QLinearSigmoid", backend=backend))
    _close_lsb(*_ms_unary(x, "QLinearLeakyRelu", dict(alpha=0.1), backend=backend))
    y = _q(rng, (1, 4, 1, 6), dtype)
    for op in ("QLinearAdd", "QLinearMul"):
        # calibrated (not round) scales, as in real models: exact rounding ties are rare
        ins = [("a", x), ("as", np.float32(0.0517)), ("az", dtype(3)), ("b", y),
               ("bs", np.float32(0.0213)), ("bz", dtype(-2 if dtype == S8 else 9)),
               ("cs", np.float32(0.1093 if op == "QLinearAdd" else 0.4871)), ("cz", dtype(5))]
        _close_lsb(*_run_both(op, ins, opset=1, domain="com.microsoft", backend=backend))
    ins = [("ys", np.float32(0.1)), ("yz", dtype(4)), ("a", x), ("as", np.float32(0.1)),
           ("az", dtype(4)), ("b", y), ("bs", np.float32(0.03)), ("bz", dtype(1))]
    _close_lsb(*_run_both("QLinearConcat", ins, dict(axis=2), opset=1, domain="com.microsoft",
                          backend=backend))
    pool = [("x", x), ("xs", np.float32(0.05)), ("xz", dtype(3)), ("ys", np.float32(0.04)),
            ("yz", dtype(2))]
    _close_lsb(*_run_both("QLinearGlobalAveragePool", pool, dict(channels_last=0), opset=1,
                          domain="com.microsoft", backend=backend))
    _close_lsb(*_run_both("QLinearAveragePool", pool, dict(kernel_shape=[3, 3], strides=[2, 2],
                                                           pads=[1, 1, 1, 1]),
                          opset=1, domain="com.microsoft", backend=backend), exact=0.95)
    # constant parameters: the planned forms (qlinear_binary_plan, the planned pool)
    params = {"as", "az", "bs", "bz", "cs", "cz", "xs", "xz", "ys", "yz"}
    for op in ("QLinearAdd", "QLinearMul"):
        ins = [("a", x), ("as", np.float32(0.0517)), ("az", dtype(3)), ("b", y),
               ("bs", np.float32(0.0213)), ("bz", dtype(-2 if dtype == S8 else 9)),
               ("cs", np.float32(0.1093 if op == "QLinearAdd" else 0.4871)), ("cz", dtype(5))]
        _close_lsb(*_run_both_const(op, ins, params, backend=backend))
    big = _q(rng, (1, 3, 20, 20), dtype)
    pool[0] = ("x", big)
    _close_lsb(*_run_both_const("QLinearAveragePool", pool, params,
                                dict(kernel_shape=[3, 3], strides=[2, 2]), backend=backend),
               exact=0.95)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("types", [(U8, S8), (U8, U8), (S8, S8)])
@pytest.mark.parametrize("c_shape", [None, (), (7,), (1, 7), (5, 1), (5, 7)])
def test_qgemm_matches_onnxruntime(backend, types, c_shape, rng):
    """com.microsoft QGemm (QOperator's quantized Gemm, and the QDQ Gemm rewrite's target):
    transposes, alpha, b per tensor or per column, every broadcast of the int32 C, 8-bit or
    (no y_scale / y_zero_point) float output, against onnxruntime (full-range weights against
    the definition: test_qgemm_tails)."""
    at, bt = types
    for ta, tb, per_col, alpha, quantized in ((0, 0, False, 1.0, True), (1, 1, True, 1.0, True),
                                              (0, 1, True, 0.75, False)):
        a = _q(rng, (16, 5) if ta else (5, 16), at)
        b = _q(rng, (7, 16) if tb else (16, 7), bt)
        if at == U8 and bt == S8 and not ort_int8_exact():
            b = np.clip(b, -64, 63)     # as ort_exact_weights: its u8 x s8 GEMM saturates here
        bs = rng.uniform(0.002, 0.01, 7 if per_col else ()).astype(np.float32)
        bz = (rng.integers(-3, 4, bs.shape) if bt == S8 else
              rng.integers(120, 136, bs.shape)).astype(bt)
        ins = [("a", a), ("as", np.float32(0.0217)), ("az", at(3)), ("b", b), ("bs", bs),
               ("bz", bz)]
        c = None if c_shape is None else rng.integers(-3000, 3000, c_shape).astype(np.int32)
        ins.append(("c", c))
        if quantized:
            ins += [("ys", np.float32(0.3071)), ("yz", at(7))]
        attrs = dict(transA=ta, transB=tb, alpha=alpha)
        got, want = _run_both("QGemm", ins, attrs, opset=1, domain="com.microsoft",
                              backend=backend)
        if quantized:
            _close_lsb(got, want)
        else:
            assert got.dtype == want.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


#: (x shape, kernel, strides, pads, ceil_mode, count_include_pad, auto_pad)
QAVG_CASES = [((1, 48, 46, 46), (3, 3), (2, 2), (0, 0, 0, 0), 0, 0, "NOTSET"),    # FastestDet's
              ((2, 3, 9, 11), (3, 2), (1, 2), (1, 0, 2, 1), 0, 1, "NOTSET"),
              ((1, 4, 10, 7), (3, 3), (2, 2), (1, 1, 1, 1), 1, 0, "NOTSET"),
              ((1, 4, 10, 7), (3, 3), (2, 2), (1, 1, 1, 1), 1, 1, "NOTSET"),
              ((1, 2, 8, 9), (4, 4), (3, 3), (0, 0, 0, 0), 0, 1, "SAME_UPPER"),
              ((1, 2, 8, 9), (2, 3), (3, 1), (0, 0, 0, 0), 0, 0, "SAME_LOWER"),
              ((1, 5, 6, 6), (6, 6), (1, 1), (0, 0, 0, 0), 0, 0, "VALID")]


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", [U8, S8])
@pytest.mark.parametrize("case", QAVG_CASES)
def test_qlinear_avg_pool_in_integers(backend, dtype, case, rng):
    """The integer QLinearAveragePool (exact window sums, one float32 multiply) against
    onnxruntime's float average of the dequantized values, and exactly against the NumPy
    reference; the plan that takes the padded count, the image count, SAME pads, ceil."""
    from edgedl.kernels import pooling
    shape, k, st, pads, ceil, cip, auto = case
    x = _q(rng, shape, dtype)
    xs, xz, ys, yz = np.float32(0.0513), dtype(7), np.float32(0.0377), dtype(-3 if dtype == S8 else 4)
    attrs = dict(kernel_shape=list(k), strides=list(st), ceil_mode=ceil,
                 count_include_pad=cip, auto_pad=auto)
    if auto == "NOTSET":
        attrs["pads"] = list(pads)
    plan = Q.qlinear_avg_pool2d_plan(shape, dtype, k, xs, xz, ys, yz, st, pads,
                                     ceil_mode=ceil, auto_pad=auto, count_include_pad=cip,
                                     backend=backend)
    got = plan(x)
    ref = Q.qlinear_avg_pool2d_plan(shape, dtype, k, xs, xz, ys, yz, st, pads,
                                    ceil_mode=ceil, auto_pad=auto, count_include_pad=cip,
                                    backend="numpy")(x)
    np.testing.assert_array_equal(got, ref)
    # the float twin: dequantize, edgedl's AveragePool, quantize (its divisor differs where
    # a ceil_mode window reaches past the end padding with count_include_pad: onnxruntime's
    # AveragePool counts the taps inside the padded extent, its QLinearAveragePool the kernel)
    f = pooling.avg_pool2d(Q.dequantize_linear(x, xs, xz, backend="numpy"), k, st, pads,
                           ceil_mode=ceil, auto_pad=auto, count_include_pad=cip,
                           backend="numpy")
    if not (ceil and cip):
        _close_lsb(got, Q.quantize_linear(f, ys, yz, backend="numpy"), exact=0.97)
    ins = [("x", x), ("xs", xs), ("xz", xz), ("ys", ys), ("yz", yz)]
    want = _run_both_const("QLinearAveragePool", ins, {"xs", "xz", "ys", "yz"}, attrs,
                           backend=backend)
    _close_lsb(*want, exact=0.97)
    assert plan.out_shape == got.shape == want[1].shape


def test_qlinear_avg_pool_plan_refuses_bad_input(rng):
    x = _q(rng, (1, 2, 6, 6), U8)
    run = Q.qlinear_avg_pool2d_plan(x.shape, U8, (3, 3), 0.1, U8(0), 0.1, U8(0))
    with pytest.raises(ShapeError, match="as planned"):
        run(x[:, :1])
    with pytest.raises(DTypeError, match="x_zero_point"):
        Q.qlinear_avg_pool2d_plan(x.shape, U8, (3, 3), 0.1, S8(0), 0.1, U8(0))
    with pytest.raises(ValidationError, match="y_scale must be finite and > 0"):
        Q.qlinear_avg_pool2d_plan(x.shape, U8, (3, 3), 0.1, U8(0), -0.1, U8(0))
    with pytest.raises(ShapeError, match="4-D"):
        Q.qlinear_avg_pool2d_plan((2, 6, 6), U8, (3, 3), 0.1, U8(0), 0.1, U8(0))
    with pytest.raises(ValidationError, match="pads must be smaller than kernel_shape"):
        Q.qlinear_avg_pool2d_plan(x.shape, U8, (2, 2), 0.1, U8(0), 0.1, U8(0), pads=(2, 0, 0, 0))
    # a kernel of 65536+ taps: sums beyond float32's exact integers -> the caller's float path
    assert Q.qlinear_avg_pool2d_plan((1, 1, 300, 300), U8, (300, 300), 0.1, U8(0), 0.1,
                                     U8(0)) is None


@pytest.mark.parametrize("backend", AVAILABLE)
def test_qlinear_softmax_matches_onnxruntime(backend, rng):
    x = _q(rng, (2, 5, 30), U8)
    ins = [("x", x), ("xs", np.float32(0.1)), ("xz", U8(128)), ("ys", np.float32(1 / 256)),
           ("yz", U8(0))]
    _close_lsb(*_run_both("QLinearSoftmax", ins, dict(axis=-1, opset=13), opset=1,
                          domain="com.microsoft", backend=backend), exact=0.95)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("scale,err", [(0.0, ValidationError), (-1.0, ValidationError),
                                       (np.nan, ValidationError), (np.inf, ValidationError),
                                       (np.float32([0.1, 0.2]), ShapeError),
                                       (np.int32(1), DTypeError)])
def test_bad_scales(scale, err):
    x = np.zeros((1, 3, 2, 2), np.float32)
    with pytest.raises(err, match="scale"):
        Q.quantize_linear(x, scale, U8(0))
    with pytest.raises(err, match="scale"):
        Q.dequantize_linear(x.astype(U8), scale, U8(0))


def test_bad_zero_points_and_weights():
    x = np.zeros((1, 2, 4, 4), U8)
    w = np.zeros((3, 2, 3, 3), S8)
    with pytest.raises(DTypeError, match="y_zero_point"):
        Q.quantize_linear(np.zeros(3, np.float32), 0.1, np.int32(0))
    with pytest.raises(ShapeError, match="y_zero_point"):
        Q.quantize_linear(np.zeros((1, 3), np.float32), 0.1, np.zeros(2, U8), axis=1)
    with pytest.raises(DTypeError, match="x_zero_point"):
        Q.qlinear_conv2d(x, 0.1, S8(0), w, 0.1, S8(0), 0.1, U8(0))
    with pytest.raises(ShapeError, match="w_zero_point"):
        Q.qlinear_conv2d(x, 0.1, U8(0), w, 0.1, np.zeros(2, S8), 0.1, U8(0))
    with pytest.raises(ShapeError, match="w_scale"):
        Q.qlinear_conv2d(x, 0.1, U8(0), w, np.ones(4, np.float32), S8(0), 0.1, U8(0))
    with pytest.raises(DTypeError, match="bias"):
        Q.qlinear_conv2d(x, 0.1, U8(0), w, 0.1, S8(0), 0.1, U8(0), bias=np.zeros(3, np.int64))
    with pytest.raises(DTypeError, match="w"):
        Q.qlinear_conv2d(x, 0.1, U8(0), w.astype(np.float32), 0.1, S8(0), 0.1, U8(0))
    with pytest.raises(ValidationError, match="a_scale per row and b_scale per column"):
        Q.qlinear_matmul(np.zeros((2, 3), U8), np.ones(2, np.float32), U8(0),
                         np.zeros((3, 4), S8), np.ones(4, np.float32), S8(0), 1.0, U8(0))


@pytest.mark.parametrize("bad", ["scale_zero", "scale_nan", "zp_shape", "zp_dtype"])
def test_bad_model_parameters_name_the_node(bad):
    import edgedl
    from onnx import helper, numpy_helper
    xs = {"scale_zero": 0.0, "scale_nan": np.nan}.get(bad, 0.05)
    xz = {"zp_shape": np.zeros(3, U8), "zp_dtype": np.int32(0)}.get(bad, U8(3))
    x = np.zeros((1, 2, 4, 4), U8)
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in
             (("xs", np.float32(xs)), ("xz", xz), ("w", np.ones((2, 2, 1, 1), S8)),
              ("ws", np.float32(0.1)), ("wz", S8(0)), ("ys", np.float32(0.2)),
              ("yz", U8(0)))]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"],
                            ["y"], name="the_qconv")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 2, [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", 2, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ModelError, match="the_qconv"):
        edgedl.InferenceSession(m.SerializeToString()).run(None, {"x": x})


@pytest.mark.parametrize("bad", ["b_scale_zero", "b_scale_length", "c_shape"])
def test_bad_qgemm_parameters_name_the_node(bad):
    import edgedl
    from onnx import helper, numpy_helper
    bs = {"b_scale_zero": np.float32(0), "b_scale_length": np.full(3, 0.1, np.float32)}
    c = np.zeros((2, 3) if bad == "c_shape" else 4, np.int32)
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in
             (("as", np.float32(0.05)), ("az", U8(3)), ("b", np.ones((6, 4), S8)),
              ("bs", bs.get(bad, np.float32(0.1))), ("bz", S8(0)), ("c", c),
              ("ys", np.float32(0.2)), ("yz", U8(0)))]
    node = helper.make_node("QGemm", ["a", "as", "az", "b", "bs", "bz", "c", "ys", "yz"],
                            ["y"], name="the_qgemm", domain="com.microsoft")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", 2, [5, 6])],
                          [helper.make_tensor_value_info("y", 2, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                            helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(ModelError, match="the_qgemm"):
        edgedl.InferenceSession(m.SerializeToString()).run(None, {"a": np.zeros((5, 6), U8)})


def _run_with_isa(code, isa):
    """Run ``code`` in a fresh process whose Cython int8 kernels take the ``isa`` path
    (EDGEDL_INT8_ISA is read once, at the extension's import); it asserts its own results."""
    import os
    import subprocess
    import sys
    if why_unavailable("cython") is not None:
        pytest.skip("cython backend unavailable")
    env = dict(os.environ, EDGEDL_INT8_ISA=isa)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("isa", ["avx2", "c"])
def test_qgemm_forced_paths(isa):
    """EDGEDL_INT8_ISA forces the Cython GEMM's AVX2 or plain C path (read once per process:
    a subprocess each); both exact."""
    code = ("import numpy as np\n"
            "from edgedl.kernels import _dispatch\n"
            "g = _dispatch.impl('quant', 'qgemm', 'cython')\n"
            "r = np.random.default_rng(1)\n"
            "for m, k, n in ((5, 7, 40), (66, 131, 273), (8, 2, 16)):\n"
            "    a = r.integers(-128, 128, (m, k)).astype(np.int8)\n"
            "    b = r.integers(0, 256, (k, n)).astype(np.uint8)\n"
            "    az = r.integers(-3, 4, m).astype(np.int32)\n"
            "    bz = r.integers(0, 9, n).astype(np.int32)\n"
            "    acc = np.empty((m, n), np.int32)\n"
            "    g(a, az, b, bz, acc)\n"
            "    want = (a.astype(np.int64) - az[:, None]) @ (b.astype(np.int64) - bz)\n"
            "    assert (acc == want).all(), (m, k, n)\n")
    _run_with_isa(code, isa)


@pytest.mark.parametrize("isa", ["avx2", "c"])
def test_qdepthwise_forced_paths(isa):
    """EDGEDL_INT8_ISA=avx2 (vpdpbusd emulated by two vpmaddwd where VNNI would run) and c:
    the int8 depthwise convs (3x3 at strides 1 and 2, 5x5, 1x7) equal the NumPy twin's int32
    sums, at the weights' and inputs' extremes too, on widths around the 8- and 32-output
    steps."""
    code = ("import numpy as np\n"
            "from edgedl.kernels import _dispatch\n"
            "r = np.random.default_rng(4)\n"
            "cy = _dispatch.impl('quant', 'qdepthwise', 'cython')\n"
            "ref = _dispatch.impl('quant', 'qdepthwise', 'numpy')\n"
            "for kh, kw, s, p, w_ in ((3, 3, 1, 1, 22), (3, 3, 2, 1, 37), (5, 5, 1, 2, 22),\n"
            "                         (5, 5, 1, 2, 80), (1, 7, 1, 3, 33), (3, 3, 1, 0, 66)):\n"
            "    x = r.integers(0, 256, (4, 9, w_)).astype(np.uint8)\n"
            "    x[0] = 255\n"
            "    w = r.integers(-128, 128, (4, kh, kw)).astype(np.int8)\n"
            "    w[0] = -128\n"
            "    w[1] = 127\n"
            "    wz = np.zeros(4, np.int32)\n"
            "    oh, ow = (9 + 2 * p - kh) // s + 1, (w_ + 2 * p - kw) // s + 1\n"
            "    got = np.empty((4, oh, ow), np.int32)\n"
            "    want = np.empty((4, oh, ow), np.int32)\n"
            "    cy(x, 3, w, wz, s, s, p, p, 1, 1, got)\n"
            "    ref(x, 3, w, wz, s, s, p, p, 1, 1, want)\n"
            "    assert (got == want).all(), (kh, kw, s, w_)\n")
    _run_with_isa(code, isa)


def test_qgemm_amx_tiles_match_reference():
    """Where the CPU has AMX-INT8 and Linux grants the tile state, the u8 x s8 GEMM runs on
    the tiles (blocks of 16 / 32 rows and columns, K in whole groups of 64 plus a tail summed
    first, rows past a multiple of 16 on VNNI): the same bytes as the NumPy twin on shapes
    that take every one of those branches. Elsewhere the same shapes check the VNNI or
    int16-pairs kernels, and the ISA reported must say so."""
    import os
    import subprocess
    import sys
    if why_unavailable("cython") is not None:
        pytest.skip("cython backend unavailable")
    code = ("import numpy as np\n"
            "import edgedl._cy.quant as cq\n"
            "from edgedl.kernels import _dispatch\n"
            "ref = _dispatch.impl('quant', 'qgemm_requant', 'numpy')\n"
            "r = np.random.default_rng(11)\n"
            "for m, k, n in ((16, 64, 32), (40, 65, 300), (48, 336, 484), (96, 128, 16),\n"
            "                (33, 130, 513), (64, 1024, 169), (17, 255, 48)):\n"
            "    wd = r.integers(-128, 128, (m, k)).astype(np.int16)\n"
            "    b = r.integers(0, 256, (k, n)).astype(np.uint8)\n"
            "    corr = r.integers(-99999, 99999, m).astype(np.int32)\n"
            "    s = np.full(m, 3e-5, np.float32)\n"
            "    got, want = np.empty((m, n), np.uint8), np.empty((m, n), np.uint8)\n"
            "    cq.qgemm_requant(wd, corr, s, 7, b, got)\n"
            "    ref(wd, corr, s, 7, b, want)\n"
            "    assert (got == want).all(), (m, k, n)\n"
            "print(cq.int8_gemm_isa())\n")
    env = {k: v for k, v in os.environ.items() if k != "EDGEDL_INT8_ISA"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    isa = r.stdout.split()[-1]
    release = tuple(int(v) for v in os.uname().release.split(".")[:2] if v.isdigit())
    import platform
    if platform.machine() == "x86_64" and " amx_int8" in flags and " avx512_vnni" in flags \
            and release >= (5, 16):
        assert isa == "amx", r.stdout       # Linux 5.16+ grants the tiles on request
    else:
        assert isa != "amx", r.stdout


def _gemm_requant_case(rng, m, k, n, bdt, odt, wide):
    """Arguments of qgemm_requant: weights minus zero points within int8 (the u8 x s8 VNNI
    path) or beyond it (``wide``: the int16 pairs path), a scale that keeps most outputs
    off the saturation limits."""
    wd = rng.integers(-255 if wide else -128, 256 if wide else 128, (m, k)).astype(np.int16)
    b = _q(rng, (k, n), bdt)
    spread = 128.0 * 100.0 * np.sqrt(k) + 1.0
    corr = rng.integers(-spread, spread, m).astype(np.int32)
    scale = (rng.random(m) * 60.0 / spread + 1e-6).astype(np.float32)
    zp = int(_q(rng, (), odt))
    return wd, corr, scale, zp, b


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("bdt,odt,wide", [(U8, U8, False), (U8, S8, False), (S8, U8, False),
                                          (U8, U8, True), (S8, S8, True)])
def test_qgemm_requant_matches_reference(backend, bdt, odt, wide):
    """The fused GEMM + requantization equals requantize(int64 product + corr) on ragged
    shapes (k not a multiple of 4, n not of 16, m not of 4, tiles past 256 columns)."""
    from edgedl.kernels import _dispatch
    rng = np.random.default_rng(7)
    for m, k, n in ((1, 1, 1), (3, 5, 17), (6, 27, 300), (9, 130, 513), (4, 4, 16)):
        wd, corr, scale, zp, b = _gemm_requant_case(rng, m, k, n, bdt, odt, wide)
        acc = (wd.astype(np.int64) @ b.astype(np.int64) + corr[:, None]).astype(np.int32)
        want = np.empty((1, m, n), odt)
        _dispatch.impl("quant", "requantize", "numpy")(acc[None], np.zeros(m, np.int32),
                                                       scale, zp, want)
        got = np.empty((m, n), odt)
        _dispatch.impl("quant", "qgemm_requant", backend)(wd, corr, scale, zp, b, got)
        np.testing.assert_array_equal(got, want[0], err_msg=str((m, k, n)))
        if m * n > 100:
            assert 0.05 < np.mean((got != np.iinfo(odt).min) & (got != np.iinfo(odt).max))


@pytest.mark.parametrize("isa", ["avx2", "c"])
def test_qgemm_requant_forced_paths(isa):
    """EDGEDL_INT8_ISA=avx2 / c turn the u8 x s8 VNNI kernel off (the int16 pairs path runs):
    the same bytes as the NumPy twin, in a subprocess each (the switch is read once)."""
    code = ("import numpy as np\n"
            "from edgedl.kernels import _dispatch\n"
            "r = np.random.default_rng(3)\n"
            "for m, k, n in ((5, 7, 40), (66, 131, 273)):\n"
            "    wd = r.integers(-128, 128, (m, k)).astype(np.int16)\n"
            "    b = r.integers(0, 256, (k, n)).astype(np.uint8)\n"
            "    corr = r.integers(-9999, 9999, m).astype(np.int32)\n"
            "    s = np.full(m, 1e-4, np.float32)\n"
            "    got, want = np.empty((m, n), np.uint8), np.empty((m, n), np.uint8)\n"
            "    _dispatch.impl('quant', 'qgemm_requant', 'cython')(wd, corr, s, 7, b, got)\n"
            "    _dispatch.impl('quant', 'qgemm_requant', 'numpy')(wd, corr, s, 7, b, want)\n"
            "    assert (got == want).all(), (m, k, n)\n")
    _run_with_isa(code, isa)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", [U8, S8])
def test_lookup_ragged_lengths(backend, dtype):
    """The table lookup (64 bytes a step with AVX-512 VBMI in Cython) at lengths around its
    step: every element, the last partial step included."""
    rng = np.random.default_rng(5)
    table = _q(rng, 256, dtype)
    for n in (1, 63, 64, 65, 130, 1000):
        x = _q(rng, n, U8)
        np.testing.assert_array_equal(Q.lookup(x, table, backend=backend), table[x])


PLAN_CASES = CONV_CASES + [  # the planned kernels' own paths
    ((1, 4, 11, 37), 4, 4, 3, (1, 1), (1, 1, 1, 1), (1, 1)),      # dw 3x3 s1: VNNI rows + tail
    ((2, 3, 12, 21), 3, 3, 3, (2, 2), (1, 0, 0, 1), (1, 1)),      # dw 3x3 s2, asymmetric pads
    ((1, 5, 13, 26), 5, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1)),      # dw 5x5 s1 (padded rows)
    ((1, 3, 22, 22), 3, 3, 5, (1, 1), (2, 2, 2, 2), (1, 1)),      # FastestDet's head: VNNI run
    ((1, 2, 9, 40), 2, 2, 7, (1, 1), (3, 3, 3, 3), (1, 1)),       # dw 7x7 s1: 2 tap groups
    ((1, 4, 9, 10), 4, 4, 3, (1, 2), (0, 1, 2, 1), (1, 1)),       # dw, unequal strides
    ((1, 3, 9, 9), 3, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2)),        # dw dilated (tap path)
    ((1, 16, 10, 23), 7, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)),     # 1x1, m and n ragged
    ((1, 6, 14, 19), 9, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1)),      # grouped
    ((1, 3, 10, 75), 3, 3, 5, (2, 2), (2, 2, 2, 2), (1, 1)),      # dw 5x5 s2: 32 + 6 wide
    ((1, 2, 6, 16), 2, 2, 3, (1, 1), (1, 1, 1, 1), (1, 1)),       # dw rows of 2 whole blocks
    ((1, 2, 7, 64), 2, 2, 3, (2, 2), (1, 1, 1, 1), (1, 1)),       # dw s2: exactly 32 wide
    # stems over few channels (the direct kernel: K = C kh kw <= 128, 16 / 8 channels a block)
    ((1, 3, 21, 37), 24, 1, 3, (2, 2), (1, 1, 1, 1), (1, 1)),     # 16 + 8 channels, 19 wide
    ((2, 3, 9, 50), 40, 1, 3, (1, 1), (0, 1, 2, 1), (1, 1)),      # 16 + 16 + 8, pads uneven
    ((1, 12, 11, 30), 7, 1, 3, (1, 1), (1, 1, 1, 1), (1, 1)),     # K = 108, 7 channels
    ((1, 3, 13, 21), 5, 1, 5, (2, 2), (2, 2, 2, 2), (1, 1)),      # 5x5 s2
    ((1, 2, 6, 10), 3, 1, 7, (2, 1), (3, 3, 3, 3), (1, 1)),       # 7x7, rows at stride 2
    # stride 1, outputs < 32 wide: the GEMM over the padded width (_narrow_qconv)
    ((1, 20, 4, 5), 6, 1, 3, (1, 1), (1, 1, 1, 1), (1, 1)),       # a detector head's shape
    ((1, 16, 7, 9), 5, 1, 3, (1, 1), (2, 0, 1, 3), (2, 2)),       # dilated, pads uneven
    ((2, 40, 3, 3), 12, 2, 2, (1, 1), (1, 1, 1, 1), (1, 1)),      # 2 images, groups, 2x2
]


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("case", PLAN_CASES)
@pytest.mark.parametrize("types", [(U8, S8, U8), (U8, S8, S8), (S8, S8, S8), (U8, U8, U8)])
def test_qlinear_conv_plan_matches_reference(backend, case, types, rng):
    """The planned QLinearConv (fused GEMM + requantization, depthwise rows requantized as
    made) equals the unplanned reference, with weight zero points that push w - w_zp past
    int8 for some channels (the int16 paths) and not for others."""
    xshape, m, group, k, st, pads, dil = case
    xt, wt, yt = types
    x = _q(rng, xshape, xt)
    w = _q(rng, (m, xshape[1] // group, k, k), wt)
    wz = (rng.integers(0, 2, m) * rng.integers(-4, 5, m)).astype(wt) if wt == S8 else \
        rng.integers(100, 140, m).astype(wt)
    ws = rng.uniform(1e-3, 2e-2, m).astype(np.float32)
    bias = rng.integers(-3000, 3000, m).astype(np.int32)
    params = (np.float32(0.05), xt(3), w, ws, wz, np.float32(0.3), yt(7), bias)
    want = Q.qlinear_conv2d(x, *params[:6], yt(7), bias, st, pads, dil, group, backend="numpy")
    run = Q.qlinear_conv2d_plan(x.shape, x.dtype, *params, st, pads, dil, group,
                                backend=backend)
    np.testing.assert_array_equal(run(x), want)
    out = np.empty(run.out_shape, yt)
    assert run(x, out) is out
    np.testing.assert_array_equal(out, want)


BOUND_CASES = [  # (PLAN_CASES entry, the path QConv8 takes)
    (((1, 16, 10, 23), 7, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1)), {"direct"}),
    (((1, 5, 9, 9), 6, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1)), {"rows"}),    # 1x1 stride 2
    (((1, 16, 40, 41), 9, 1, 3, (1, 1), (1, 1, 1, 1), (1, 1)), {"rows"}),  # K > 128, wide
    (((1, 20, 4, 5), 6, 1, 3, (1, 1), (1, 1, 1, 1), (1, 1)), {"padded"}),
    (((1, 16, 7, 9), 5, 1, 3, (1, 1), (2, 0, 1, 3), (2, 2)), {"padded"}),
    (((1, 3, 21, 37), 24, 1, 3, (2, 2), (1, 1, 1, 1), (1, 1)), {"stem", "rows"}),
    (((1, 4, 11, 37), 4, 4, 3, (1, 1), (1, 1, 1, 1), (1, 1)), {"depthwise"}),
    (((1, 3, 10, 75), 3, 3, 5, (2, 2), (2, 2, 2, 2), (1, 1)), {"depthwise"}),
]


def test_clamp_of_tables_finds_only_one_clamp():
    """clamp_of_tables: (lo, hi) in the type's values where every row is that clamp."""
    for dt, lo, hi in ((U8, 7, 200), (U8, 0, 255), (S8, -3, 90), (S8, -128, 127)):
        values = np.arange(256, dtype=np.uint8).view(dt).astype(int)
        t = np.tile(np.clip(values, lo, hi).astype(dt), (3, 1)).view(U8)
        assert Q.clamp_of_tables(t, dt) == (lo, hi)
        other = t.copy()
        other[1, 5] ^= 1                         # one row differs
        assert Q.clamp_of_tables(other, dt) is None
        bent = t.copy()
        bent[:, 50] = bent[:, 51]                # not a clamp (flat inside the range)
        assert Q.clamp_of_tables(bent, dt) is None
    assert Q.clamp_of_tables(np.zeros((0, 256), U8), U8) is None


@pytest.mark.parametrize("case,paths", BOUND_CASES)
@pytest.mark.parametrize("types", [(U8, S8, U8), (U8, S8, S8), (S8, S8, S8), (U8, U8, U8)])
@pytest.mark.parametrize("lookup", [False, True, "clamp"])
def test_bound_qconv_matches_reference(case, paths, types, lookup, rng):
    """The Cython plan's bound conv (QConv8: one call, no Python between the buffers and
    the kernels) on each of its paths equals the NumPy reference, per-channel activation
    tables included, and tables that are one clamp (a Relu / Clip) become the GEMM paths'
    requantization bounds; it declines, touching nothing, what it was not bound for (the
    general path then raises)."""
    pytest.importorskip("edgedl._cy.quant", reason="the Cython backend is not built")
    xshape, m, group, k, st, pads, dil = case
    xt, wt, yt = types
    x = _q(rng, xshape, xt)
    w = _q(rng, (m, xshape[1] // group, k, k), wt)
    wz = rng.integers(-3, 4, m).astype(wt) if wt == S8 else rng.integers(100, 140, m).astype(wt)
    ws = rng.uniform(1e-3, 2e-2, m).astype(np.float32)
    bias = rng.integers(-3000, 3000, m).astype(np.int32)
    tables = _q(rng, (m, 256), yt) if lookup else None
    info = np.iinfo(yt)
    if lookup == "clamp":       # (a Relu's lower bound is the zero point's 7)
        bounds = (7, int(rng.integers(100, info.max))) if yt == U8 else (7, 90)
        values = np.arange(256, dtype=np.uint8).view(yt)
        tables = np.tile(np.clip(values.astype(int), *bounds).astype(yt), (m, 1))
    params = (np.float32(0.05), xt(3), w, ws, wz, np.float32(0.3), yt(7), bias)
    want = Q.qlinear_conv2d(x, *params[:6], yt(7), bias, st, pads, dil, group, backend="numpy")
    if lookup:
        want = np.stack([tables[c][want[0, c].view(U8)] for c in range(m)])[None]
    run = Q.qlinear_conv2d_plan(x.shape, x.dtype, *params, st, pads, dil, group,
                                backend="cython", tables=tables)
    fast = run._fast
    assert fast is not None and fast.path in paths
    gemm = fast.path in ("direct", "rows", "padded")
    clamped = lookup == "clamp" and gemm
    assert fast.bounds == (bounds if clamped else (info.min, info.max),
                           bool(lookup) and not clamped)
    if xt == S8:
        assert fast.path != "stem"              # the stem kernel reads unsigned columns
    y = np.full(run.out_shape, 5, yt)
    assert fast(x, y, 1)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(run(x), want)
    other = S8 if xt == U8 else U8
    for bad in (x.astype(other), x[:, :1], x.astype(np.float32)):
        assert not fast(bad, y, 1)
        with pytest.raises(ShapeError):
            run(bad, y)
    flipped = x[:, :, :, ::-1]                  # not contiguous: the general path runs it
    assert not fast(flipped, y, 1)
    np.testing.assert_array_equal(run(flipped), run(np.ascontiguousarray(flipped)))
    y[...] = 5
    assert not fast(x, y.astype(S8 if yt == U8 else U8), 1)      # the output's type
    assert not fast(x, y[:, :, ::-1], 1)        # not contiguous
    assert not fast(x, np.frombuffer(y.tobytes(), yt).reshape(y.shape), 1)     # read-only
    if x.nbytes >= y.nbytes and xt == yt:       # y inside x's memory
        assert not fast(x, x.reshape(-1)[:y.size].reshape(y.shape), 1)
    assert (y == 5).all()


@pytest.mark.parametrize("kind", ["quantize", "dequantize", "lookup"])
@pytest.mark.parametrize("dtype", [U8, S8])
@pytest.mark.parametrize("axis", [None, 1, -1])
def test_bound_maps_match_reference(kind, dtype, axis, rng):
    """The Cython plans' bound Q / DQ / lookup (QMap8) equal the NumPy twins per tensor and
    per axis (x's extremes, NaN and infinities included), and decline, touching nothing,
    what they were not bound for."""
    pytest.importorskip("edgedl._cy.quant", reason="the Cython backend is not built")
    shape = (2, 5, 3, 33)
    n = shape[axis] if axis is not None else 1
    scale = rng.uniform(0.01, 0.05, n).astype(np.float32) if axis is not None else \
        np.float32(0.02)
    zp = _q(rng, (n,), dtype) if axis is not None else dtype(3)
    if kind == "quantize":
        x = (rng.standard_normal(shape) * 4).astype(np.float32)
        x.flat[:5] = [np.nan, np.inf, -np.inf, 1e30, -1e30]
        run = Q.quantize_linear_plan(shape, scale, zp, axis=axis or 1, backend="cython")
        want = Q.quantize_linear(x, scale, zp, axis=axis or 1, backend="numpy")
    elif kind == "dequantize":
        x = _q(rng, shape, dtype)
        run = Q.dequantize_linear_plan(shape, dtype, scale, zp, axis=axis or 1,
                                       backend="cython")
        want = Q.dequantize_linear(x, scale, zp, axis=axis or 1, backend="numpy")
    else:
        x = _q(rng, shape, dtype)
        table = _q(rng, (256,), dtype)
        run = Q.lookup_plan(shape, dtype, table, backend="cython")
        want = table[x.view(U8)]
    assert run._fast is not None
    y = np.empty(shape, want.dtype)
    assert run._fast(x, y, 1)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(run(x), want)
    y[...] = 5
    other = np.float64 if x.dtype == np.float32 else (S8 if x.dtype == U8 else U8)
    for bad in (x.astype(other), x[:1], x[..., ::-1]):
        assert not run._fast(bad, y, 1)
    assert not run._fast(x, y[..., ::-1], 1)
    assert not run._fast(x, y.astype(np.float64), 1)
    assert (y == 5).all()
    with pytest.raises(ShapeError):
        run(x[:1])


STEM_CASES = [  # (C, H, W, M, k, stride (rows, columns), pads)
    (3, 21, 37, 24, 3, (2, 2), (1, 1, 1, 1)),
    (3, 9, 50, 40, 3, (1, 1), (0, 1, 2, 1)),
    (12, 11, 30, 7, 3, (1, 1), (1, 1, 1, 1)),
    (3, 13, 21, 5, 5, (2, 2), (2, 2, 2, 2)),
    (2, 6, 10, 3, 7, (2, 1), (3, 3, 3, 3)),
    (3, 40, 33, 16, 3, (2, 2), (0, 0, 1, 1)),
]


@pytest.mark.parametrize("case", STEM_CASES)
@pytest.mark.parametrize("yt", [U8, S8])
def test_stem_kernel_matches_reference(case, yt, rng):
    """The direct stem kernel (Cython, AVX-512 VNNI + VBMI) on its own: every output
    requantized as the reference does, saturating both ways; it declines shapes it has no
    plan for (more than 128 taps, taps of a group over three rows) instead of guessing."""
    cq = pytest.importorskip("edgedl._cy.quant", reason="the Cython backend is not built")
    c, h, wd, m, k, st, pads = case
    x = _q(rng, (1, c, h, wd), U8)
    w = _q(rng, (m, c, k, k), S8)
    ws = rng.uniform(1e-3, 4e-2, m).astype(np.float32)
    bias = rng.integers(-3000, 3000, m).astype(np.int32)
    want = Q.qlinear_conv2d(x, np.float32(0.05), U8(3), w, ws, np.zeros(m, S8), np.float32(0.3),
                            yt(7), bias, st, pads, (1, 1), 1, backend="numpy")
    kk = c * k * k
    w4 = np.zeros(((m + 15) // 16 * 16, 4 * ((kk + 3) // 4)), S8)
    w4[:m, :kk] = w.reshape(m, kk)
    corr = (bias - 3 * w.reshape(m, kk).astype(np.int64).sum(1)).astype(np.int32)
    mult = Q.conv_multiplier(np.float32(0.05), ws, np.float32(0.3), m)
    with pytest.raises(ValueError, match="uint8 or int8"):        # on every CPU
        cq.qconv_direct_requant(x[0], 3, w4, k, k, *st, pads[0], pads[1], corr, mult, 7,
                                np.zeros(want.shape[1:], np.float32))
    out = np.full(want.shape[1:], 99, yt)
    if not cq.qconv_direct_requant(x[0], 3, w4, k, k, *st, pads[0], pads[1], corr, mult, 7,
                                   out):
        assert (out == 99).all()                                  # declined: untouched
        pytest.skip("this CPU has no AVX-512 VNNI + VBMI (the GEMM path runs instead)")
    np.testing.assert_array_equal(out, want[0])
    assert {out.min(), out.max()} <= set(range(-128, 256)) and (out == np.iinfo(yt).max).any()
    # a kernel whose groups of 4 taps span 4 rows (1x1 over 8 channels) or over 128 taps:
    # declined
    for bc, bk in ((8, 1), (3, 7)):
        kk = bc * bk * bk
        w4b = np.zeros((w4.shape[0], 4 * ((kk + 3) // 4)), S8)
        o = np.empty((m, 4, 4), yt)
        assert not cq.qconv_direct_requant(np.zeros((bc, 10, 10), U8), 0, w4b, bk, bk, 1, 1,
                                           0, 0, corr, mult, 0, o)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("axis", [1, 2])
def test_planned_concat_and_tables_match_onnxruntime(backend, axis, rng):
    """QLinearConcat and QLinearSigmoid with constant scales and zero points (as in quantized
    models: the planned paths, tables made at load, inputs written into their output slice)
    against onnxruntime; one Concat input already in the output's parameters (a copy)."""
    import edgedl
    from onnx import helper, numpy_helper
    a, b = _q(rng, (1, 3, 4, 5), U8), _q(rng, (1, 3, 4, 5), U8)
    consts = {"ys": np.float32(0.1), "yz": U8(4), "as": np.float32(0.1), "az": U8(4),
              "bs": np.float32(0.0371), "bz": U8(9), "ss": np.float32(1 / 256), "sz": U8(0)}
    nodes = [helper.make_node("QLinearConcat", ["ys", "yz", "a", "as", "az", "b", "bs", "bz"],
                              ["c"], domain="com.microsoft", axis=axis),
             helper.make_node("QLinearSigmoid", ["c", "ys", "yz", "ss", "sz"], ["y"],
                              domain="com.microsoft")]
    shape = [1, 3, 4, 5]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, 2, shape)
                                       for n in ("a", "b")],
                          [helper.make_tensor_value_info(n, 2, None) for n in ("c", "y")],
                          initializer=[numpy_helper.from_array(np.asarray(v), k)
                                       for k, v in consts.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.microsoft", 1)])
    feed = {"a": a, "b": b}
    want = ort_session(m).run(None, feed)
    got = edgedl.InferenceSession(m.SerializeToString(), backend=backend).run(None, feed)
    for g_, w_ in zip(got, want):
        _close_lsb(g_, w_)


# ----------------------------------------------------------------------------- channel lookup
def _channel_lookup_numpy(x, tables, axis):
    """Plain NumPy: each element through its channel's table (x's bits as uint8)."""
    shape = [1] * x.ndim
    shape[axis] = -1
    c = np.arange(tables.shape[0]).reshape(shape)
    return tables[c, x.view(np.uint8)]


CHANNEL_LOOKUP_CASES = [((2, 5, 7, 3), 1), ((1, 3, 40, 33), 1), ((4, 6), -1), ((9,), 0),
                        ((3, 2, 4), 2), ((2, 3, 5), -3), ((1, 4, 0, 5), 1), ((1, 1, 6), 1)]


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("xdt, tdt", [(U8, U8), (S8, S8), (U8, S8), (S8, U8)])
def test_channel_lookup_matches_numpy(backend, xdt, tdt, rng):
    """One table per channel along the axis, direct and planned, against plain indexing."""
    for shape, axis in CHANNEL_LOOKUP_CASES:
        x = _q(rng, shape, xdt)
        tables = _q(rng, (shape[axis], 256), tdt)
        want = _channel_lookup_numpy(x, tables, axis)
        got = Q.channel_lookup(x, tables, axis, backend=backend)
        assert got.dtype == tdt and got.shape == x.shape
        np.testing.assert_array_equal(got, want, err_msg=f"{shape} axis {axis}")
        run = Q.channel_lookup_plan(shape, xdt, tables, axis, backend=backend)
        assert run.out_shape == shape
        np.testing.assert_array_equal(run(x), want)
        out = np.full(shape, 3, tdt)
        assert run(x, out) is out
        np.testing.assert_array_equal(out, want)
    # a strided input and a strided out (copied in and out by the wrapper)
    x = _q(rng, (2, 4, 6, 10), xdt)[:, :, :, ::2]
    tables = _q(rng, (4, 256), tdt)
    out = np.zeros((2, 4, 6, 10), tdt)[..., ::2]
    Q.channel_lookup(x, tables, out=out, backend=backend)
    np.testing.assert_array_equal(out, _channel_lookup_numpy(x, tables, 1))


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", [U8, S8])
def test_channel_lookup_ragged_planes(backend, dtype):
    """Planes of lengths around the vector steps: every element of every channel."""
    rng = np.random.default_rng(7)
    for p in (1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000):
        x = _q(rng, (2, 3, p), dtype)
        tables = _q(rng, (3, 256), dtype)
        np.testing.assert_array_equal(Q.channel_lookup(x, tables, backend=backend),
                                      _channel_lookup_numpy(x, tables, 1), err_msg=str(p))


def test_channel_lookup_bad_arguments():
    x = np.zeros((1, 3, 4), U8)
    t = np.zeros((3, 256), U8)
    with pytest.raises(DTypeError, match="x"):
        Q.channel_lookup(x.astype(np.float32), t)
    with pytest.raises(DTypeError, match="tables"):
        Q.channel_lookup(x, t.astype(np.int16))
    with pytest.raises(ShapeError, match=r"\(C, 256\)"):
        Q.channel_lookup(x, np.zeros((3, 255), U8))
    with pytest.raises(ShapeError, match=r"\(C, 256\)"):
        Q.channel_lookup(x, np.zeros(256, U8))
    with pytest.raises(ShapeError, match="4 rows but x has 3 channels"):
        Q.channel_lookup(x, np.zeros((4, 256), U8))
    with pytest.raises(ShapeError, match="3 rows but x has 4 channels"):
        Q.channel_lookup(x, t, axis=2)
    with pytest.raises(ShapeError, match="scalar"):
        Q.channel_lookup(np.zeros((), U8), t)
    with pytest.raises(ValidationError, match="axis"):
        Q.channel_lookup(x, t, axis=3)
    with pytest.raises(DTypeError, match="x"):
        Q.channel_lookup_plan((1, 3, 4), np.float32, t)
    run = Q.channel_lookup_plan((1, 3, 4), U8, t)
    with pytest.raises(ShapeError, match="as planned"):
        run(np.zeros((1, 3, 5), U8))
    with pytest.raises(ShapeError, match="as planned"):
        run(x.view(S8))


@pytest.mark.parametrize("isa", ["avx2", "c"])
def test_lookups_forced_paths(isa):
    """EDGEDL_INT8_ISA=avx2 (the 16-vpshufb AVX2 lookup where AVX-512 VBMI would run) and
    =c (the plain loop) give the tables' entries: every value, ragged lengths around the
    32-byte step, one table (random, flat over a range as after a Relu, constant, zero:
    the AVX2 path leaves the flat rows out) and one per channel."""
    code = ("import numpy as np\n"
            "from edgedl.kernels import quant as Q\n"
            "r = np.random.default_rng(2)\n"
            "flat = np.sort(r.integers(0, 256, 256)).astype(np.uint8)\n"
            "flat[:140] = flat[140]\n"
            "for n in (31, 32, 33, 64, 95, 256, 1000):\n"
            "    x = np.resize(r.permutation(256).astype(np.uint8), n)\n"
            "    for t in (r.integers(0, 256, 256).astype(np.uint8), flat,\n"
            "              np.full(256, 7, np.uint8), np.zeros(256, np.uint8)):\n"
            "        assert (Q.lookup(x, t, backend='cython') == t[x]).all(), (n, t[:4])\n"
            "    xs = np.stack([x, x[::-1], r.integers(0, 256, n).astype(np.uint8)])[None]\n"
            "    ts = r.integers(-128, 128, (3, 256)).astype(np.int8)\n"
            "    got = Q.channel_lookup(xs.view(np.int8), ts, backend='cython')\n"
            "    assert (got == ts[np.arange(3)[None, :, None], xs]).all(), n\n")
    _run_with_isa(code, isa)


@pytest.mark.parametrize("backend", [b for b in AVAILABLE if b != "numpy"])
def test_im2col_q_same_width_rows_match_reference(backend, rng):
    """im2col_q at stride 1 with the output as wide as the input (the Cython kernel copies a
    tap's in-image rows as one block, then refills the border cells): random kernels,
    dilations and pads, including pads past the kernel, against the NumPy twin."""
    from edgedl.kernels import _dispatch
    mine, ref = (_dispatch.impl("quant", "im2col_q", b) for b in (backend, "numpy"))
    done = 0
    while done < 150:
        c, h, w, kh, kw, dh, dw = (int(v) for v in rng.integers(1, [4, 9, 9, 5, 5, 3, 3]))
        pt, pb, pl = (int(v) for v in rng.integers(0, 5, 3))
        oh = h + pt + pb - (kh - 1) * dh
        if (kw - 1) * dw < pl or oh <= 0:
            continue
        x = rng.integers(0, 256, (c, h, w)).astype(np.uint8)
        a = np.empty((c * kh * kw, oh * w), np.uint8)
        b = np.empty_like(a)
        mine(x, 77, kh, kw, 1, 1, pt, pl, dh, dw, oh, w, a)
        ref(x, 77, kh, kw, 1, 1, pt, pl, dh, dw, oh, w, b)
        np.testing.assert_array_equal(a, b)
        done += 1


def test_qgemm_requant_packed_refuses_a_pack_that_does_not_fit():
    """The Cython GEMM indexes by the pack's sizes unchecked: b, out, corr or scale that do
    not fit them is a ValueError, not a read past an array's end."""
    pytest.importorskip("edgedl._cy.quant")
    from edgedl._cy import quant as cq
    pk = cq.qgemm_pack(np.ones((4, 9), np.int16))
    ok = dict(corr=np.zeros(4, np.int32), scale=np.ones(4, np.float32),
              b=np.ones((9, 5), np.uint8), out=np.empty((4, 5), np.uint8))
    cq.qgemm_requant_packed(pk, ok["corr"], ok["scale"], 0, ok["b"], ok["out"])
    assert (ok["out"] == 9).all()
    for bad in (dict(b=np.ones((8, 5), np.uint8)), dict(out=np.empty((3, 5), np.uint8)),
                dict(out=np.empty((4, 6), np.uint8)), dict(corr=np.zeros(2, np.int32)),
                dict(scale=np.ones(3, np.float32))):
        a = dict(ok, **bad)
        with pytest.raises(ValueError, match="does not fit"):
            cq.qgemm_requant_packed(pk, a["corr"], a["scale"], 0, a["b"], a["out"])


def test_qdepthwise_refuses_arguments_that_do_not_fit():
    """The Cython depthwise kernels index the weights, zero points, biases, scales and output
    by x's channel unchecked: any of them short of x's channels, an output of another
    channel count or dtype, or a stride / dilation < 1 is a ValueError, not a read or
    write past an array's end."""
    pytest.importorskip("edgedl._cy.quant")
    from edgedl._cy import quant as cq
    x = np.full((4, 6, 6), 5, np.uint8)
    ok = dict(w=np.ones((4, 3, 3), np.int8), w_zp=np.zeros(4, np.int32),
              bias=np.zeros(4, np.int32), scale=np.ones(4, np.float32),
              out=np.empty((4, 6, 6), np.uint8))

    def call(a, strides=(1, 1)):
        cq.qdepthwise_requant(x, 0, a["w"], a["w_zp"], *strides, 1, 1, 1, 1, a["bias"],
                              a["scale"], 0, a["out"])
    call(ok)
    assert (ok["out"][:, 1:-1, 1:-1] == 45).all() and (ok["out"][:, 0, 0] == 20).all()
    for bad in (dict(w=np.ones((3, 3, 3), np.int8)), dict(w_zp=np.zeros(2, np.int32)),
                dict(bias=np.zeros(3, np.int32)), dict(scale=np.ones(1, np.float32)),
                dict(out=np.empty((5, 6, 6), np.uint8)), dict(out=np.empty((4, 6, 6),
                                                                           np.float32))):
        with pytest.raises(ValueError, match="qdepthwise_requant"):
            call(dict(ok, **bad))
    with pytest.raises(ValueError, match="valid geometry"):
        call(ok, strides=(0, 1))
    acc = np.empty((3, 6, 6), np.int32)
    with pytest.raises(ValueError, match="qdepthwise"):
        cq.qdepthwise(x, 0, ok["w"], ok["w_zp"], 1, 1, 1, 1, 1, 1, acc)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("shape", [  # (C, H, W, kh, kw): the flat-run depthwise kernel's cases
    (3, 22, 22, 5, 5),     # one 64-byte load holds both rows of a group (vpermb)
    (2, 9, 45, 5, 5),      # wp = 49: two loads (vpermt2b)
    (2, 11, 14, 4, 4),     # groups that are whole rows
    (3, 12, 9, 5, 3),      # kw = 3: groups over two rows, kh != kw
    (2, 6, 7, 3, 5),       # a 3-row kernel that is not 3x3
    (2, 3, 4, 7, 7),       # fewer outputs than one vector; pads wider than the plane
    (1, 8, 12, 5, 5),      # oh * wp = 128: whole blocks of 4 vectors, no tail
    (2, 5, 5, 8, 8),       # 64 taps: 16 groups
])
@pytest.mark.parametrize("yt", [U8, S8])
def test_depthwise_kernels_of_any_size_match_reference(backend, shape, yt, rng):
    """Depthwise QLinearConv at stride 1 with kernels other than 3x3 (Cython on AVX-512 VNNI
    + VBMI: the plane as one flat run of 16-output vectors), same-size padding, equal to the
    reference bit for bit, both output types."""
    c, h, wd, kh, kw = shape
    x = _q(rng, (1, c, h, wd), U8)
    w = rng.integers(-127, 128, (c, 1, kh, kw)).astype(S8)
    ws = rng.uniform(1e-3, 2e-2, c).astype(np.float32)
    bias = rng.integers(-3000, 3000, c).astype(np.int32)
    pads = (kh // 2, kw // 2, (kh - 1) // 2, (kw - 1) // 2)
    params = (np.float32(0.05), U8(9), w, ws, np.zeros(c, S8), np.float32(0.3), yt(7), bias)
    want = Q.qlinear_conv2d(x, *params, (1, 1), pads, (1, 1), c, backend="numpy")
    run = Q.qlinear_conv2d_plan(x.shape, x.dtype, *params, (1, 1), pads, (1, 1), c,
                                backend=backend)
    assert want.shape == (1, c, h, wd)
    np.testing.assert_array_equal(run(x), want)


@pytest.mark.parametrize("backend", AVAILABLE)
@pytest.mark.parametrize("dtype", [U8, S8])
@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("const_side", ["a", "b"])
def test_binary_with_a_constant_single_value_is_a_table(backend, dtype, op, const_side):
    """QLinearAdd / QLinearMul by a constant single value (a box decoder's variance, a
    shift) run as a 256-entry table made by the reference arithmetic itself: every input
    value equals the unplanned reference bit for bit and onnxruntime within 1 LSB, with
    the constant on either side."""
    every = np.arange(256, dtype=np.uint16).astype(np.uint8).view(dtype).reshape(1, 128, 2)
    k = np.array(dtype(-77 if dtype == S8 else 201))
    var, const = ("b", "a") if const_side == "a" else ("a", "b")
    vals = {var: every, const: k}
    ins = [("a", vals["a"]), ("as", np.float32(0.0517)), ("az", dtype(3)), ("b", vals["b"]),
           ("bs", np.float32(0.0213)), ("bz", dtype(-2 if dtype == S8 else 9)),
           ("cs", np.float32(0.1093 if op == "QLinearAdd" else 0.0871)), ("cz", dtype(5))]
    params = {"as", "az", "bs", "bz", "cs", "cz", const}
    got, want = _run_both_const(op, ins, params, backend=backend)
    _close_lsb(got, want)
    ref = Q.qlinear_binary("add" if op == "QLinearAdd" else "mul", *(a for _, a in ins))
    np.testing.assert_array_equal(got, ref)
    assert len(np.unique(got)) > 20                     # not saturated everywhere
