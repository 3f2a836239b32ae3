"""QDQ patterns rewritten onto integer ops at load (edgedl/onnx/qdq.py), each checked against
onnxruntime (which runs its own QDQ transformer) on every backend, and the patterns that must
keep their float ops (16-bit, per-tensor parameters computed at run time, a mismatched bias
scale) still right."""
import platform

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import edgedl  # noqa: E402
from edgedl.onnx import fuse  # noqa: E402
from ort_util import ort_exact_weights, ort_session  # noqa: E402
from test_synthetic import _model, _vi  # noqa: E402

U8 = TensorProto.UINT8


def _q_dq(prefix, scale, zero, dtype=np.uint8):
    return [(f"{prefix}_s", np.array(scale, np.float32)), (f"{prefix}_z", np.array(zero, dtype))]


def _conv_model(rng, per_channel=True, bias=True, bias_scale=1.0, q_zero=True, c_in=3):
    c_out = 4
    w = rng.integers(-100, 100, (c_out, c_in, 3, 3)).astype(np.int8)
    ws = rng.uniform(0.002, 0.01, c_out if per_channel else ()).astype(np.float32)
    inits = _q_dq("x", 0.02, 128) + [("w", w), ("w_s", ws),
                                      ("w_z", np.zeros(ws.shape, np.int8))]
    inits += _q_dq("y", 0.05, 100)
    nodes = [helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["wf"], axis=0)]
    conv_in = ["xf", "wf"]
    if bias:
        inits += [("b", rng.integers(-2000, 2000, c_out).astype(np.int32)),
                  ("b_s", (np.float32(0.02) * ws * np.float32(bias_scale)).astype(np.float32)
                   .reshape(-1))]
        nodes.append(helper.make_node("DequantizeLinear", ["b", "b_s"], ["bf"], axis=0))
        conv_in.append("bf")
    nodes.append(helper.make_node("Conv", conv_in, ["yf"], pads=[1, 1, 1, 1]))
    q_in = ["yf", "y_s", "y_z"] if q_zero else ["yf", "y_s"]
    nodes.append(helper.make_node("QuantizeLinear", q_in, ["yq"]))
    return _model(nodes, [_vi("xq", [1, c_in, 6, 7], U8)], [_vi("yq", None, U8)], inits)


def _run_both(model, feed, backend, equal=0.999):
    model = ort_exact_weights(model)        # 7-bit weights where onnxruntime saturates
    sess = edgedl.InferenceSession(model.SerializeToString(), backend=backend)
    ref = ort_session(model).run(None, feed)
    sess.run(None, feed)
    got = sess.run(None, feed)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype and g.shape == r.shape
        diff = np.abs(g.astype(np.int32) - r.astype(np.int32)) if g.dtype.kind in "iu" \
            else np.abs(g - r)
        assert diff.max() <= 1, diff.max()          # one LSB at most
        assert (diff == 0).mean() >= equal
    return sess


def _ops(sess):
    return sorted(n.key for n in sess._graph.nodes)


@pytest.mark.parametrize("per_channel, bias, q_zero", [(True, True, True), (False, True, True),
                                                       (True, False, True),
                                                       (False, False, False)])
def test_conv_becomes_qlinear_conv(backend, rng, per_channel, bias, q_zero):
    m = _conv_model(rng, per_channel, bias, q_zero=q_zero)
    x = rng.integers(0, 256, (1, 3, 6, 7)).astype(np.uint8)
    s = _run_both(m, {"xq": x}, backend)
    assert _ops(s) == ["QLinearConv"]
    # the weights stay int8 constants: no float copy of them in the graph
    assert all(v.dtype != np.float32 or v.size < 8 for v in s._graph.consts.values())


@pytest.mark.parametrize("act", ["Relu", "Clip", "Clip6"])
@pytest.mark.parametrize("ydt", [np.uint8, np.int8])
def test_conv_activation_quantize_becomes_a_clamped_qlinear_conv(backend, rng, act, ydt):
    """DQ -> Conv -> Relu / Clip -> Q with no Q between the conv and the activation (as
    other exporters than onnxruntime's write it): one QLinearConvLookup whose table is the
    clamp to [Q(lo), Q(hi)], within one LSB of onnxruntime; on the Cython backend the
    clamp is the requantization's bounds (no lookup)."""
    m = _conv_model(rng, c_in=16)          # 16 x 3 x 3 taps: the GEMM path, not the stem
    g = m.graph
    conv = next(n for n in g.node if n.op_type == "Conv")
    q = next(n for n in g.node if n.op_type == "QuantizeLinear")
    conv.output[0] = "cf"
    if act == "Relu":
        node = helper.make_node("Relu", ["cf"], ["yf"])
    else:
        lo, hi = (-0.5, 1.5) if act == "Clip" else (0.0, 6.0)
        g.initializer.extend([onnx.numpy_helper.from_array(np.array(lo, np.float32), "lo"),
                              onnx.numpy_helper.from_array(np.array(hi, np.float32), "hi")])
        node = helper.make_node("Clip", ["cf", "lo", "hi"], ["yf"])
    g.node.insert(list(g.node).index(q), node)
    if ydt == np.int8:
        z = next(i for i in g.initializer if i.name == "y_z")
        z.CopyFrom(onnx.numpy_helper.from_array(np.array(-20, np.int8), "y_z"))
        g.output[0].type.tensor_type.elem_type = TensorProto.INT8
    x = rng.integers(0, 256, (1, 16, 6, 7)).astype(np.uint8)
    s = _run_both(m, {"xq": x}, backend)
    assert _ops(s) == ["QLinearConvLookup"]
    if backend == "cython":
        (plan,) = s._plans.values()
        (conv,) = [st.fn.bound for st in plan.steps]       # the step's bound QConv8
        (lo, hi), table = conv.bounds
        assert not table and (lo, hi) != (np.iinfo(ydt).min, np.iinfo(ydt).max)


def test_a_bias_of_another_scale_keeps_the_float_path(backend, rng):
    m = _conv_model(rng, bias_scale=1.5)
    x = rng.integers(0, 256, (1, 3, 6, 7)).astype(np.uint8)
    s = _run_both(m, {"xq": x}, backend)
    assert "Conv" in _ops(s) and "QLinearConv" not in _ops(s)


def _chain_model(op, **attrs):
    """DQ(a) [, DQ(b)] -> op -> Q, parameters per tensor."""
    two = op in ("Add", "Mul", "Concat")
    inits = _q_dq("a", 0.03, 120) + _q_dq("b", 0.05, 90) + _q_dq("y", 0.04, 110)
    nodes = [helper.make_node("DequantizeLinear", ["aq", "a_s", "a_z"], ["af"])]
    ins = ["af"]
    if two:
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "b_s", "b_z"], ["bf"]))
        ins.append("bf")
    if op == "Reshape":
        inits.append(("shape", np.array([1, -1], np.int64)))
        ins.append("shape")
        inits = [(n, v) for n, v in inits if not n.startswith("y")] + \
            _q_dq("y", 0.03, 120)              # a mover: the same parameters on both sides
    if op == "MaxPool":
        inits = [(n, v) for n, v in inits if not n.startswith("y")] + _q_dq("y", 0.03, 120)
    nodes += [helper.make_node(op, ins, ["yf"], **attrs),
              helper.make_node("QuantizeLinear", ["yf", "y_s", "y_z"], ["yq"])]
    inputs = [_vi("aq", [1, 4, 5, 6], U8)] + ([_vi("bq", [1, 4, 5, 6], U8)] if two else [])
    return _model(nodes, inputs, [_vi("yq", None, U8)], inits)


@pytest.mark.parametrize("op, attrs, want", [
    ("Add", {}, "com.microsoft.QLinearAdd"), ("Mul", {}, "com.microsoft.QLinearMul"),
    ("Concat", {"axis": 1}, "com.microsoft.QLinearConcat"),
    ("Sigmoid", {}, "com.microsoft.QLinearSigmoid"),
    ("LeakyRelu", {"alpha": 0.1}, "com.microsoft.QLinearLeakyRelu"),
    ("GlobalAveragePool", {}, "com.microsoft.QLinearGlobalAveragePool"),
    ("AveragePool", {"kernel_shape": [2, 2]}, "com.microsoft.QLinearAveragePool"),
    ("MaxPool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, "MaxPool"),
    ("Reshape", {}, "Reshape")])
def test_chains_become_integer_ops(backend, rng, op, attrs, want):
    m = _chain_model(op, **attrs)
    feed = {"aq": rng.integers(0, 256, (1, 4, 5, 6)).astype(np.uint8)}
    if op in ("Add", "Mul", "Concat"):
        feed["bq"] = rng.integers(0, 256, (1, 4, 5, 6)).astype(np.uint8)
    # the average's float rounding (sum order, divide or multiply by 1/n) differs from
    # onnxruntime's on the numpy and numba backends: one LSB on a few elements of the 80;
    # edgedl's QLinearAdd / Mul follow onnxruntime's x86 float arithmetic, its aarch64
    # kernels requantize in fixed point (one LSB on ~9% of these elements under qemu)
    equal = 0.999
    if op == "AveragePool" or (op in ("Add", "Mul") and platform.machine() not in
                               ("x86_64", "AMD64", "i686")):
        equal = 0.85
    s = _run_both(m, feed, backend, equal=equal)
    assert _ops(s) == [want]


@pytest.mark.parametrize("mode, value, pool, want", [
    ("constant", None, True, ["com.microsoft.QLinearAveragePool"]),     # padded zeros: fused
    ("constant", 0.5, True, ["Pad", "com.microsoft.QLinearAveragePool"]),
    ("constant", -9.0, False, ["Pad"]),                 # quantizes to 0: saturated
    ("reflect", None, False, ["Pad"])])
def test_pad_becomes_an_integer_pad(backend, rng, mode, value, pool, want):
    """DQ -> Pad -> Q with one scale and zero point (FastestDet's head): the Pad of the
    integer tensor with its value quantized; a zero Pad before an int8 AveragePool (QDQ's
    padding of zeros, the zero point here) folds into it, counted (count_include_pad)."""
    inits = _q_dq("a", 0.03, 120) + _q_dq("y", 0.04, 110) + \
        [("pads", np.array([0, 0, 1, 2, 0, 0, 1, 0], np.int64))]
    pad_in = ["af", "pads"]
    if value is not None:
        inits.append(("v", np.array(value, np.float32)))
        pad_in.append("v")
    nodes = [helper.make_node("DequantizeLinear", ["aq", "a_s", "a_z"], ["af"]),
             helper.make_node("Pad", pad_in, ["pf"], mode=mode),
             helper.make_node("QuantizeLinear", ["pf", "a_s", "a_z"], ["pq"])]
    out = "pq"
    if pool:
        nodes += [helper.make_node("DequantizeLinear", ["pq", "a_s", "a_z"], ["pd"]),
                  helper.make_node("AveragePool", ["pd"], ["yf"], kernel_shape=[3, 3],
                                   strides=[2, 2]),
                  helper.make_node("QuantizeLinear", ["yf", "y_s", "y_z"], ["yq"])]
        out = "yq"
    m = _model(nodes, [_vi("aq", [1, 4, 9, 10], U8)], [_vi(out, None, U8)], inits)
    feed = {"aq": rng.integers(0, 256, (1, 4, 9, 10)).astype(np.uint8)}
    s = _run_both(m, feed, backend, equal=0.85 if pool else 1.0)
    assert _ops(s) == want


def test_sixteen_bit_and_run_time_scales_keep_the_float_ops(backend, rng):
    """A uint16 Q/DQ pair and a scale computed at run time are not rewritten; the results
    still match onnxruntime."""
    nodes = [helper.make_node("DequantizeLinear", ["aq", "a_s", "a_z"], ["af"]),
             helper.make_node("Sigmoid", ["af"], ["sf"]),
             helper.make_node("QuantizeLinear", ["sf", "y_s", "y_z"], ["yq"]),
             helper.make_node("Mul", ["s_in", "two"], ["s2"]),
             helper.make_node("DequantizeLinear", ["bq", "s2", "b_z"], ["bf"]),
             helper.make_node("Relu", ["bf"], ["rf"]),
             helper.make_node("QuantizeLinear", ["rf", "y2_s", "y2_z"], ["y2q"])]
    inits = [("a_s", np.array(0.001, np.float32)), ("a_z", np.array(30000, np.uint16)),
             ("y_s", np.array(1 / 65535, np.float32)), ("y_z", np.array(0, np.uint16)),
             ("two", np.array(2.0, np.float32)), ("b_z", np.array(10, np.uint8))] + \
        _q_dq("y2", 0.05, 0)
    m = _model(nodes, [_vi("aq", [2, 50], TensorProto.UINT16), _vi("bq", [2, 50], U8),
                       _vi("s_in", [], TensorProto.FLOAT)],
               [_vi("yq", None, TensorProto.UINT16), _vi("y2q", None, U8)], inits, opset=21,
               ir=10)
    feed = {"aq": rng.integers(0, 65536, (2, 50)).astype(np.uint16),
            "bq": rng.integers(0, 256, (2, 50)).astype(np.uint8),
            "s_in": np.array(0.02, np.float32)}
    s = _run_both(m, feed, backend)
    assert {"Sigmoid", "Relu"} <= set(_ops(s))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_int8_silu_becomes_one_lookup(backend, rng, dtype):
    """QLinearMul(x, QLinearSigmoid(x)) (YOLOX's SiLU in both int8 formats) -> one QLookup
    whose table is the two ops evaluated on all 256 values: equal to onnxruntime's bits."""
    t = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    z = 128 if dtype == np.uint8 else 0
    nodes = [helper.make_node("QLinearSigmoid", ["x", "x_s", "x_z", "s_s", "s_z"], ["s"],
                              domain="com.microsoft"),
             helper.make_node("QLinearMul", ["x", "x_s", "x_z", "s", "s_s", "s_z", "y_s",
                                             "y_z"], ["y"], domain="com.microsoft")]
    inits = _q_dq("x", 0.05, z, dtype) + _q_dq("s", 1 / 255, z - 128 if z else -128, dtype) + \
        _q_dq("y", 0.04, z // 2, dtype)
    m = _model(nodes, [_vi("x", [1, 3, 7, 9], t)], [_vi("y", None, t)], inits,
               extra_opsets=[("com.microsoft", 1)])
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (1, 3, 7, 9)).astype(dtype)
    # within one LSB of onnxruntime, as the two ops are (tests/kernels/test_quant.py) ...
    s = _run_both(m, {"x": x}, backend, equal=0.98)
    assert _ops(s) == ["QLookup"]
    # ... and to the bit what the two ops give on this backend
    unfused = edgedl.InferenceSession(m.SerializeToString(), backend=backend, fuse=False)
    np.testing.assert_array_equal(s.run(None, {"x": x})[0], unfused.run(None, {"x": x})[0])


# ----------------------------------------------------------------------------- float islands
def _island_model(kind, dtype, relu, shape=(1, 5, 6, 7), c=5):
    """DQ(x) -> per-channel float ops -> [Relu] -> Q with per-tensor 8-bit Q/DQ parameters
    (the islands onnxruntime's QDQ quantizer leaves around a BatchNormalization not after a
    Conv, or an exporter's per-channel Mul / Add): ``kind`` bn, muladd, scalar (Mul / Add
    by single values), last (per-channel constants along the last axis), rank4 (constants
    of shape (1, C, 1, 1) on a rank-3 x: the output gains an axis)."""
    t = TensorProto.UINT8 if dtype == np.uint8 else TensorProto.INT8
    z = 128 if dtype == np.uint8 else 0
    r = np.random.default_rng(11)
    inits = _q_dq("x", 0.037, z - 3, dtype) + _q_dq("y", 0.029, z + 5, dtype)
    nodes = [helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["v0"])]
    cshape = {"bn": None, "muladd": (c, 1, 1), "scalar": (), "last": (c,),
              "rank4": (1, c, 1, 1)}[kind]
    if kind == "bn":
        inits += [("g", r.uniform(0.5, 2, c).astype(np.float32)),
                  ("b", r.uniform(-1, 1, c).astype(np.float32)),
                  ("m", r.uniform(-0.5, 0.5, c).astype(np.float32)),
                  ("var", r.uniform(0.2, 3, c).astype(np.float32))]
        nodes.append(helper.make_node("BatchNormalization", ["v0", "g", "b", "m", "var"],
                                      ["v1"], epsilon=1e-3))
    else:
        inits += [("mul", r.uniform(-2, 2, cshape).astype(np.float32)),
                  ("add", r.uniform(-1, 1, cshape).astype(np.float32))]
        nodes += [helper.make_node("Mul", ["v0", "mul"], ["vm"]),
                  helper.make_node("Add", ["add", "vm"], ["v1"])]
    last = "v1"
    if relu:
        nodes.append(helper.make_node("Relu", ["v1"], ["v2"]))
        last = "v2"
    nodes.append(helper.make_node("QuantizeLinear", [last, "y_s", "y_z"], ["yq"]))
    return _model(nodes, [_vi("xq", list(shape), t)], [_vi("yq", None, t)], inits)


def _island_outputs(m, feed, backend):
    """(the rewritten session, its output, the un-rewritten run's, onnxruntime's)."""
    s = edgedl.InferenceSession(m.SerializeToString(), backend=backend)
    plain = edgedl.InferenceSession(m.SerializeToString(), backend=backend, fuse=False)
    return (s, s.run(None, feed)[0], plain.run(None, feed)[0],
            ort_session(m).run(None, feed)[0])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("kind, relu", [("bn", True), ("bn", False), ("muladd", True),
                                        ("muladd", False), ("last", True), ("scalar", True)])
def test_float_islands_become_one_lookup(backend, rng, dtype, kind, relu):
    """DQ -> per-channel affine -> [Relu] -> Q: one table lookup per channel (QChannelLookup;
    QLookup when every constant is one value), no float op, no Q/DQ left; the output equals
    onnxruntime's and the float chain's run without the rewrite, on every 8-bit value of
    every channel."""
    shape = (2, 5, 16, 16) if kind != "last" else (2, 3, 256, 5)
    m = _island_model(kind, dtype, relu, shape)
    # every value in every channel (and random ones in the second image)
    x = np.empty(shape, dtype)
    bits = np.arange(256, dtype=np.uint16).astype(np.uint8).view(dtype)
    x[0] = bits.reshape((1, 16, 16) if kind != "last" else (1, 256, 1))
    info = np.iinfo(dtype)
    x[1] = rng.integers(info.min, info.max + 1, shape[1:]).astype(dtype)
    s, got, plain, ref = _island_outputs(m, {"xq": x}, backend)
    assert _ops(s) == ["QLookup" if kind == "scalar" else "QChannelLookup"]
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(got, plain)
    np.testing.assert_array_equal(got, ref)
    yz = (128 if dtype == np.uint8 else 0) + 5
    if relu:        # the tables hold the Relu: nothing below the output zero point
        assert got.astype(np.int32).min() == yz


def _conv_then_lookup_model(rng, cin, cout, k, group, act, width=37):
    """DQ(x), DQ(w), DQ(bias) -> Conv -> Q -> then an 8-bit activation the rewrites turn into
    a lookup: ``bn`` (BatchNormalization + Relu between DQ and Q: a QChannelLookup) or
    ``silu`` (Sigmoid and Mul in QDQ form: one QLookup)."""
    w = rng.integers(-100, 100, (cout, cin // group, k, k)).astype(np.int8)
    ws = rng.uniform(0.002, 0.01, cout).astype(np.float32)
    inits = _q_dq("x", 0.02, 128) + _q_dq("c", 0.05, 100) + _q_dq("y", 0.03, 90) + \
        [("w", w), ("w_s", ws), ("w_z", np.zeros(cout, np.int8)),
         ("b", rng.integers(-2000, 2000, cout).astype(np.int32)),
         ("b_s", (np.float32(0.02) * ws).astype(np.float32))]
    nodes = [helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["wf"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "b_s"], ["bf"], axis=0),
             helper.make_node("Conv", ["xf", "wf", "bf"], ["cf"], pads=[k // 2] * 4,
                              group=group),
             helper.make_node("QuantizeLinear", ["cf", "c_s", "c_z"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "c_s", "c_z"], ["cd"])]
    if act == "bn":
        inits += [("g", rng.uniform(0.5, 2, cout).astype(np.float32)),
                  ("be", rng.uniform(-1, 1, cout).astype(np.float32)),
                  ("mu", rng.uniform(-0.5, 0.5, cout).astype(np.float32)),
                  ("var", rng.uniform(0.2, 3, cout).astype(np.float32))]
        nodes += [helper.make_node("BatchNormalization", ["cd", "g", "be", "mu", "var"],
                                   ["bn"]),
                  helper.make_node("Relu", ["bn"], ["r"]),
                  helper.make_node("QuantizeLinear", ["r", "y_s", "y_z"], ["yq"])]
    else:
        inits += _q_dq("s", 1 / 256, 0)
        nodes += [helper.make_node("Sigmoid", ["cd"], ["sg"]),
                  helper.make_node("QuantizeLinear", ["sg", "s_s", "s_z"], ["sq"]),
                  helper.make_node("DequantizeLinear", ["sq", "s_s", "s_z"], ["sd"]),
                  helper.make_node("Mul", ["cd", "sd"], ["mu_"]),
                  helper.make_node("QuantizeLinear", ["mu_", "y_s", "y_z"], ["yq"])]
    return _model(nodes, [_vi("xq", [1, cin, 11, width], U8)], [_vi("yq", None, U8)], inits)


@pytest.mark.parametrize("cin, cout, k, group, width", [
    (3, 24, 3, 1, 37),      # a stem (the direct kernel where the CPU has it)
    (40, 20, 3, 1, 37),     # im2col + GEMM
    (40, 20, 3, 1, 9),      # narrow: the GEMM over the padded width
    (16, 8, 1, 1, 37),      # 1x1 GEMM
    (12, 12, 3, 12, 37)])   # depthwise
@pytest.mark.parametrize("act", ["bn", "silu"])
def test_conv_then_lookup_is_one_node(backend, rng, monkeypatch, cin, cout, k, group, width,
                                     act):
    """QLinearConv -> QChannelLookup / QLookup becomes one QLinearConvLookup (the tables
    applied by the conv's kernels as rows / planes are made): the same bits as the two nodes
    (the rewrites without fuse_conv_lookups; fuse=False would run the float QDQ graph, whose
    float32 conv may round a value on a quantization step the other way) and onnxruntime's
    within one LSB (the SiLU's QLinearSigmoid / QLinearMul on 98% of the values, as
    test_int8_silu_becomes_one_lookup)."""
    m = _conv_then_lookup_model(rng, cin, cout, k, group, act, width)
    x = rng.integers(0, 256, (1, cin, 11, width)).astype(np.uint8)
    s = _run_both(m, {"xq": x}, backend, equal=0.98 if act == "silu" else 0.999)
    assert _ops(s) == ["QLinearConvLookup"]
    monkeypatch.setattr(fuse, "REWRITES",
                        tuple(r for r in fuse.REWRITES if r is not fuse.fuse_conv_lookups))
    plain = edgedl.InferenceSession(m.SerializeToString(), backend=backend)
    assert _ops(plain) == sorted(["QLinearConv", "QChannelLookup" if act == "bn" else "QLookup"])
    np.testing.assert_array_equal(s.run(None, {"xq": x})[0], plain.run(None, {"xq": x})[0])


def _conv_concat_model(rng, act):
    """Two QDQ convs (the second + a BN island when ``act``) -> Concat on channels, each in
    other parameters than the concat's output, plus the graph input itself: FastestDet's
    shuffle units."""
    inits = _q_dq("x", 0.02, 128) + _q_dq("o", 0.04, 120) + _q_dq("p", 0.03, 110) + \
        _q_dq("y", 0.05, 100)
    nodes = [helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xf"])]
    for i, (cout, q) in enumerate(((5, "o"), (4, "p"))):
        w = rng.integers(-100, 100, (cout, 3, 3, 3)).astype(np.int8)
        ws = rng.uniform(0.002, 0.01, cout).astype(np.float32)
        inits += [(f"w{i}", w), (f"w{i}_s", ws), (f"w{i}_z", np.zeros(cout, np.int8))]
        nodes += [helper.make_node("DequantizeLinear", [f"w{i}", f"w{i}_s", f"w{i}_z"],
                                   [f"w{i}f"], axis=0),
                  helper.make_node("Conv", ["xf", f"w{i}f"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("QuantizeLinear", [f"c{i}", f"{q}_s", f"{q}_z"], [f"q{i}"]),
                  helper.make_node("DequantizeLinear", [f"q{i}", f"{q}_s", f"{q}_z"],
                                   [f"d{i}"])]
    last = "d1"
    if act:
        inits += [("sc", rng.uniform(0.5, 2, 4).astype(np.float32)),
                  ("sh", rng.uniform(-1, 1, 4).astype(np.float32).reshape(1, 4, 1, 1))]
        inits += _q_dq("r", 0.02, 0)
        nodes += [helper.make_node("Mul", ["d1", "sc4"], ["m1"]),
                  helper.make_node("Add", ["m1", "sh"], ["a1"]),
                  helper.make_node("Relu", ["a1"], ["r1"]),
                  helper.make_node("QuantizeLinear", ["r1", "r_s", "r_z"], ["rq"]),
                  helper.make_node("DequantizeLinear", ["rq", "r_s", "r_z"], ["rd"])]
        inits += [("sc4", inits[-3][1].reshape(1, 4, 1, 1))]
        last = "rd"
    nodes += [helper.make_node("Concat", ["d0", last, "xf"], ["cat"], axis=1),
              helper.make_node("QuantizeLinear", ["cat", "y_s", "y_z"], ["yq"])]
    return _model(nodes, [_vi("xq", [1, 3, 9, 33], U8)], [_vi("yq", None, U8)], inits)


@pytest.mark.parametrize("act", [False, True])
def test_concat_requantization_moves_into_the_convs(backend, rng, act):
    """A QLinearConcat's requantization of a conv's output (read by the concat alone) moves
    into the conv's table, composed with the conv's own (a BN + Relu island): the same bits
    as the unfused graph, onnxruntime's within one LSB; the graph input keeps its
    requantization in the concat."""
    m = _conv_concat_model(rng, act)
    x = rng.integers(0, 256, (1, 3, 9, 33)).astype(np.uint8)
    s = _run_both(m, {"xq": x}, backend)
    assert _ops(s) == ["QLinearConvLookup", "QLinearConvLookup", "com.microsoft.QLinearConcat"]
    (cat,) = [n for n in s._graph.nodes if n.op_type == "QLinearConcat"]
    assert cat.inputs[3:5] == cat.inputs[6:8] == cat.inputs[:2] != cat.inputs[9:11]
    plain = edgedl.InferenceSession(m.SerializeToString(), backend=backend, fuse=False)
    np.testing.assert_array_equal(s.run(None, {"xq": x})[0], plain.run(None, {"xq": x})[0])


def test_conv_then_lookup_with_run_time_scales(backend, rng):
    """A QLinearConvLookup whose conv has a scale fed at run time (no plan): the conv, then
    the table, as the two nodes run them."""
    w = rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)
    inits = [("x_z", np.uint8(128)), ("w", w), ("w_s", np.float32(0.004)),
             ("w_z", np.int8(0)), ("c_s", np.float32(0.05)), ("c_z", np.uint8(100)),
             ("s_s", np.float32(1 / 256)), ("s_z", np.uint8(0)), ("y_s", np.float32(0.03)),
             ("y_z", np.uint8(90))]
    nodes = [helper.make_node("QLinearConv", ["xq", "x_s", "x_z", "w", "w_s", "w_z", "c_s",
                                              "c_z"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QLinearSigmoid", ["c", "c_s", "c_z", "s_s", "s_z"], ["s"],
                              domain="com.microsoft"),
             helper.make_node("QLinearMul", ["c", "c_s", "c_z", "s", "s_s", "s_z", "y_s",
                                             "y_z"], ["y"], domain="com.microsoft")]
    m = _model(nodes, [_vi("xq", [1, 3, 6, 9], U8), _vi("x_s", [], TensorProto.FLOAT)],
               [_vi("y", None, U8)], [(k, np.asarray(v)) for k, v in inits],
               extra_opsets=[("com.microsoft", 1)])
    feed = {"xq": rng.integers(0, 256, (1, 3, 6, 9)).astype(np.uint8),
            "x_s": np.array(0.02, np.float32)}
    s = edgedl.InferenceSession(m.SerializeToString(), backend=backend)
    assert _ops(s) == ["QLinearConvLookup"]
    plain = edgedl.InferenceSession(m.SerializeToString(), backend=backend, fuse=False)
    np.testing.assert_array_equal(s.run(None, feed)[0], plain.run(None, feed)[0])


def test_float_island_constants_may_widen_the_output(backend, rng):
    """Constants of shape (1, 5, 1, 1) on an x of shape (1, 6, 7): the float chain
    broadcasts to (1, 5, 6, 7) (each channel's constants on the same x), so does the
    lookup."""
    m = _island_model("rank4", np.uint8, True, shape=(1, 6, 7))
    x = rng.integers(0, 256, (1, 6, 7)).astype(np.uint8)
    s, got, plain, ref = _island_outputs(m, {"xq": x}, backend)
    assert _ops(s) == ["QChannelLookup"]
    assert got.shape == ref.shape == (1, 5, 6, 7)
    np.testing.assert_array_equal(got, plain)
    np.testing.assert_array_equal(got, ref)


def test_float_islands_that_are_not_one_channel_axis_stay(backend, rng):
    """A constant varying along two axes, or an intermediate read by a second node, keeps
    the float ops (still right)."""
    r = np.random.default_rng(3)
    inits = _q_dq("x", 0.03, 120) + _q_dq("y", 0.05, 100) + _q_dq("y2", 0.05, 90) + \
        [("w2", r.uniform(-2, 2, (5, 1, 7)).astype(np.float32)),
         ("w1", r.uniform(-2, 2, (5, 1, 1)).astype(np.float32))]
    nodes = [helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["v0"]),
             helper.make_node("Mul", ["v0", "w2"], ["a"]),                 # two axes
             helper.make_node("QuantizeLinear", ["a", "y_s", "y_z"], ["yq"]),
             helper.make_node("Mul", ["v0", "w1"], ["b"]),
             helper.make_node("Relu", ["b"], ["br"]),
             helper.make_node("QuantizeLinear", ["br", "y2_s", "y2_z"], ["y2q"]),
             helper.make_node("Identity", ["b"], ["b_out"])]           # b read twice
    m = _model(nodes, [_vi("xq", [1, 5, 6, 7], U8)],
               [_vi("yq", None, U8), _vi("y2q", None, U8),
                _vi("b_out", None, TensorProto.FLOAT)], inits)
    x = rng.integers(0, 256, (1, 5, 6, 7)).astype(np.uint8)
    s = _run_both(m, {"xq": x}, backend)
    ops = _ops(s)
    assert "QChannelLookup" not in ops and "QLookup" not in ops
    assert ops.count("Mul") == 2 and "Relu" in ops


@pytest.mark.parametrize("act, attrs", [("Sigmoid", {}), ("HardSwish", {}), ("Clip", {}),
                                        ("LeakyRelu", {"alpha": 0.2}), ("Div", {}),
                                        ("Sqrt", {})])
def test_float_islands_with_activations(backend, rng, act, attrs):
    """DQ -> per-channel Mul -> an activation (or a Div by a per-channel constant) -> Q:
    one QChannelLookup equal to the float chain's run without the rewrite (on a plane
    longer than the vector steps) and within one LSB of onnxruntime."""
    r = np.random.default_rng(5)
    inits = _q_dq("x", 0.05, 128) + _q_dq("y", 0.02, 100) + \
        [("m", r.uniform(-2, 2, (7, 1, 1)).astype(np.float32)),
         ("lo", np.array(-0.5, np.float32)), ("hi", np.array(1.5, np.float32)),
         ("dv", r.uniform(0.5, 2, (7, 1, 1)).astype(np.float32))]
    ins = {"Clip": ["b", "lo", "hi"], "Div": ["b", "dv"]}.get(act, ["b"])
    nodes = [helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["a"]),
             helper.make_node("Mul", ["a", "m"], ["b"]),
             helper.make_node(act, ins, ["c"], **attrs),
             helper.make_node("QuantizeLinear", ["c", "y_s", "y_z"], ["yq"])]
    m = _model(nodes, [_vi("xq", [1, 7, 37, 53], U8)], [_vi("yq", None, U8)], inits,
               opset=18)
    x = rng.integers(0, 256, (1, 7, 37, 53)).astype(np.uint8)
    s, got, plain, _ = _island_outputs(m, {"xq": x}, backend)
    assert _ops(s) == ["QChannelLookup"]
    np.testing.assert_array_equal(got, plain)
    _run_both(m, {"xq": x}, backend, equal=0.99)


@pytest.mark.parametrize("kind", ["bn", "rank4", "scalar"])
def test_float_islands_with_symbolic_shapes(backend, kind):
    """Inputs with symbolic dimensions: each run's shape gets the float chain's output (a
    rank-3 x widened by rank-4 constants too), equal to the un-rewritten run's and to
    onnxruntime's."""
    shape, runs = (("N", 5, "H", 7), [(2, 5, 3, 7), (1, 5, 9, 7)]) if kind != "rank4" else \
        (("N", "H", 7), [(1, 3, 7), (1, 4, 7)])
    m = _island_model(kind, np.uint8, True, shape=shape)
    r = np.random.default_rng(9)
    for run_shape in runs:
        x = r.integers(0, 256, run_shape).astype(np.uint8)
        s, got, plain, ref = _island_outputs(m, {"xq": x}, backend)
        assert _ops(s) == ["QLookup" if kind == "scalar" else "QChannelLookup"]
        assert got.shape == ref.shape
        np.testing.assert_array_equal(got, plain)
        np.testing.assert_array_equal(got, ref)


def _qdq_focus_model(rng, slice_scale=0.02):
    """A QDQ Focus as onnxruntime's quantizer writes YOLOX's: float image -> parity slices
    (rows then columns) -> Q -> DQ each -> Concat -> Q -> DQ -> Conv (int8 weights per
    channel, bias) -> Q."""
    end = np.iinfo(np.int64).max
    inits = _q_dq("c", 0.02, 128) + _q_dq("p", slice_scale, 128) + _q_dq("y", 0.05, 100)
    w = rng.integers(-100, 100, (4, 12, 3, 3)).astype(np.int8)
    ws = rng.uniform(0.002, 0.01, 4).astype(np.float32)
    inits += [("w", w), ("w_s", ws), ("w_z", np.zeros(4, np.int8)),
              ("b", rng.integers(-2000, 2000, 4).astype(np.int32)),
              ("b_s", (np.float32(0.02) * ws).astype(np.float32)),
              ("end", np.array([end])), ("two", np.array([2])), ("ax2", np.array([2])),
              ("ax3", np.array([3])), ("zero", np.array([0])), ("one", np.array([1]))]
    nodes, cat = [], []
    for p, (a, b) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        st = ["zero", "one"]
        nodes += [helper.make_node("Slice", ["x", st[a], "end", "ax2", "two"], [f"r{p}"]),
                  helper.make_node("Slice", [f"r{p}", st[b], "end", "ax3", "two"], [f"s{p}"]),
                  helper.make_node("QuantizeLinear", [f"s{p}", "p_s", "p_z"], [f"q{p}"]),
                  helper.make_node("DequantizeLinear", [f"q{p}", "p_s", "p_z"], [f"d{p}"])]
        cat.append(f"d{p}")
    nodes += [helper.make_node("Concat", cat, ["cat"], axis=1),
              helper.make_node("QuantizeLinear", ["cat", "c_s", "c_z"], ["cq"]),
              helper.make_node("DequantizeLinear", ["cq", "c_s", "c_z"], ["cf"]),
              helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["wf"], axis=0),
              helper.make_node("DequantizeLinear", ["b", "b_s"], ["bf"], axis=0),
              helper.make_node("Conv", ["cf", "wf", "bf"], ["yf"], pads=[1, 1, 1, 1]),
              helper.make_node("QuantizeLinear", ["yf", "y_s", "y_z"], ["yq"])]
    return _model(nodes, [_vi("x", [1, 3, 10, 8])], [_vi("yq", None, U8)], inits)


@pytest.mark.parametrize("slice_scale, folded", [(0.02, True), (0.03, False)])
def test_qdq_focus_folds_into_one_strided_qlinear_conv(backend, rng, slice_scale, folded):
    """With one scale and zero point from the slices' quantizers to the conv's input, the
    int8 Focus becomes QuantizeLinear(image) -> one stride-2 QLinearConv (the same int32
    sums); with another scale on the slices it keeps its slices and concat. Both match
    onnxruntime."""
    m = _qdq_focus_model(rng, slice_scale)
    x = rng.uniform(-2, 2, (1, 3, 10, 8)).astype(np.float32)
    s = _run_both(m, {"x": x}, backend)
    if folded:
        assert _ops(s) == ["QLinearConv", "QuantizeLinear"]
        assert s._graph.nodes[-1].attrs["strides"] == [2, 2]
    else:
        assert "Slice" in _ops(s)


def _gemm_model(rng, op, trans_b=0, per_column=False, bias=True, alpha=1.0, bias_scale=1.0):
    """DQ(a) [1 x 3 x 16 or 5 x 16], DQ(constant int8 b) [, DQ(int32 c)] -> MatMul / Gemm -> Q
    (onnxruntime.quantization's spelling of a quantized classifier head)."""
    k, n = 16, 6
    shape = (k, n) if not trans_b else (n, k)
    w = rng.integers(-100, 100, shape).astype(np.int8)
    ws = rng.uniform(0.002, 0.01, n if per_column else ()).astype(np.float32)
    inits = _q_dq("a", 0.02, 128) + [("w", w), ("w_s", ws), ("w_z", np.zeros(ws.shape, np.int8))]
    inits += _q_dq("y", 0.05, 100)
    nodes = [helper.make_node("DequantizeLinear", ["aq", "a_s", "a_z"], ["af"]),
             helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["wf"],
                              axis=0 if trans_b else 1)]
    ins = ["af", "wf"]
    if op == "Gemm" and bias:
        inits += [("b", rng.integers(-2000, 2000, n).astype(np.int32)),
                  ("b_s", (np.float32(0.02) * ws * np.float32(bias_scale)).reshape(-1))]
        nodes.append(helper.make_node("DequantizeLinear", ["b", "b_s"], ["bf"], axis=0))
        ins.append("bf")
    attrs = {"transB": trans_b, "alpha": alpha} if op == "Gemm" else {}
    nodes += [helper.make_node(op, ins, ["yf"], **attrs),
              helper.make_node("QuantizeLinear", ["yf", "y_s", "y_z"], ["yq"])]
    a_shape = [5, k] if op == "Gemm" else [1, 3, k]
    return _model(nodes, [_vi("aq", a_shape, U8)], [_vi("yq", None, U8)], inits)


@pytest.mark.parametrize("per_column", [False, True])
def test_matmul_becomes_qlinear_matmul(backend, rng, per_column):
    """DQ -> MatMul -> Q with constant weights per tensor or per column: QLinearMatMul."""
    m = _gemm_model(rng, "MatMul", per_column=per_column)
    a = rng.integers(0, 256, (1, 3, 16)).astype(np.uint8)
    s = _run_both(m, {"aq": a}, backend)
    assert _ops(s) == ["QLinearMatMul"]


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("per_column", [False, True])
@pytest.mark.parametrize("bias, alpha", [(True, 1.0), (False, 1.0), (False, 0.5)])
def test_gemm_becomes_qgemm(backend, rng, trans_b, per_column, bias, alpha):
    """DQ -> Gemm -> Q (transB either way, weights per tensor or per column of B', an int32
    bias of scale a_scale * b_scale, alpha without a bias): onnxruntime's QGemm."""
    m = _gemm_model(rng, "Gemm", trans_b, per_column, bias, alpha)
    a = rng.integers(0, 256, (5, 16)).astype(np.uint8)
    s = _run_both(m, {"aq": a}, backend)
    assert _ops(s) == ["com.microsoft.QGemm"]


def test_gemm_with_a_bias_of_another_scale_keeps_the_float_path(backend, rng):
    """A bias whose scale is not a_scale * b_scale: the float Gemm between the Q / DQ stays,
    checked against the float64 formula (onnxruntime fuses it anyway and lands 1 LSB off
    in ~40% of the outputs)."""
    m = _gemm_model(rng, "Gemm", bias_scale=1.5)
    a = rng.integers(0, 256, (5, 16)).astype(np.uint8)
    s = edgedl.InferenceSession(m.SerializeToString(), backend=backend)
    got = s.run(None, {"aq": a})[0]
    c = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    y = ((a - 128.0) * 0.02) @ (c["w"] * c["w_s"].astype(np.float64)) + \
        c["b"] * c["b_s"].astype(np.float64)
    want = np.clip(np.round(y / np.float32(0.05)) + 100, 0, 255)
    assert np.abs(got - want).max() <= 1 and (got == want).mean() >= 0.9
    assert "Gemm" in _ops(s) and "com.microsoft.QGemm" not in _ops(s)


@pytest.mark.parametrize("ctm", ["asymmetric", "half_pixel", "tf_crop_and_resize"])
def test_nearest_resize_between_dq_and_q_runs_on_the_integers(backend, rng, ctm):
    """DQ -> Resize (nearest, constant scales) -> Q with one scale and zero point: the
    Resize on the 8-bit tensor (it only copies values), but not tf_crop_and_resize (its
    outside is a float extrapolation value): the float ops stay there."""
    inits = _q_dq("a", 0.03, 120) + [("roi", np.array([0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9],
                                                      np.float32)),
                                     ("scales", np.array([1, 1, 2, 2], np.float32))]
    inits += _q_dq("y", 0.03, 120)
    nodes = [helper.make_node("DequantizeLinear", ["aq", "a_s", "a_z"], ["af"]),
             helper.make_node("Resize", ["af", "roi", "scales"], ["yf"], mode="nearest",
                              coordinate_transformation_mode=ctm, nearest_mode="floor"),
             helper.make_node("QuantizeLinear", ["yf", "y_s", "y_z"], ["yq"])]
    m = _model(nodes, [_vi("aq", [1, 4, 5, 6], U8)], [_vi("yq", None, U8)], inits)
    a = rng.integers(0, 256, (1, 4, 5, 6)).astype(np.uint8)
    s = _run_both(m, {"aq": a}, backend, equal=1.0)
    if ctm == "tf_crop_and_resize":
        assert "QuantizeLinear" in _ops(s)
    else:
        assert _ops(s) == ["Resize"]
