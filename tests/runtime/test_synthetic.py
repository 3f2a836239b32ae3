"""Synthetic graphs (onnx.helper) for what real detectors use beyond the four shared models,
each compared with onnxruntime on every backend (issue 4, section 6)."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgedl  # noqa: E402
from edgedl.errors import ModelError  # noqa: E402
from ort_util import ort_session  # noqa: E402

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=13, ir=8, extra_opsets=()):
    g = helper.make_graph(nodes, "g", inputs, outputs,
                          [numpy_helper.from_array(v, n) for n, v in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] +
                          [helper.make_opsetid(d, v) for d, v in extra_opsets])
    m.ir_version = ir
    return m


def _vi(name, shape, t=F):
    return helper.make_tensor_value_info(name, t, shape)


def _w(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _check(model, feeds, backend, fused_away=(), rtol=1e-3, ort_model=None):
    """edgedl vs onnxruntime on each feed dict; ``fused_away`` op types must be gone."""
    ort = ort_session(ort_model or model)
    sess = edgedl.InferenceSession(model.SerializeToString(), backend=backend)
    ops = {n.op_type for n in sess._graph.nodes}
    assert not set(fused_away) & ops, f"not fused: {set(fused_away) & ops} in {ops}"
    for feed in feeds:
        ref = ort.run(None, feed)
        first = sess.run(None, feed)          # plans (traced run)
        got = sess.run(None, feed)            # runs the plan, recycled buffers
        assert len(got) == len(ref)
        for g, f, r in zip(got, first, ref):
            np.testing.assert_array_equal(g, f)
            assert g.shape == r.shape and g.dtype == r.dtype
            err = float(np.abs(g.astype(np.float64) - r).max()) if r.size else 0.0
            assert err <= rtol * max(1.0, float(np.abs(r).max())), err
    return sess


def _hardswish_nodes(x, y, style, opset):
    """x * Clip(x + 3, 0, 6) / 6 in several spellings (as exporters write it)."""
    clip_in = [f"{y}_a"] if opset < 11 else [f"{y}_a", "zero", "six"]
    clip_attrs = {"min": 0.0, "max": 6.0} if opset < 11 else {}
    nodes = [helper.make_node("Add", [x, "three"], [f"{y}_a"]),
             helper.make_node("Clip", clip_in, [f"{y}_c"], **clip_attrs)]
    if style == "div":          # (x * clip) / 6
        nodes += [helper.make_node("Mul", [x, f"{y}_c"], [f"{y}_m"]),
                  helper.make_node("Div", [f"{y}_m", "six"], [y])]
    elif style == "mul_sixth":  # (clip * x) * (1/6)
        nodes += [helper.make_node("Mul", [f"{y}_c", x], [f"{y}_m"]),
                  helper.make_node("Mul", [f"{y}_m", "sixth"], [y])]
    else:                       # x * (clip / 6)
        nodes += [helper.make_node("Div", [f"{y}_c", "six"], [f"{y}_d"]),
                  helper.make_node("Mul", [x, f"{y}_d"], [y])]
    return nodes


_CONSTS = [("three", np.array(3, np.float32)), ("zero", np.array(0, np.float32)),
           ("six", np.array(6, np.float32)), ("sixth", np.array(1 / 6, np.float32))]


@pytest.mark.parametrize("style,opset", [("div", 13), ("mul_sixth", 11), ("clip_div", 9)])
def test_mobilenetv3_block(backend, rng, style, opset):
    """expand 1x1 -> hard-swish (written out) -> depthwise 3x3 -> SE (HardSigmoid) ->
    project 1x1 -> residual add."""
    c, e = 8, 16
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]),
             *_hardswish_nodes("c1", "h1", style, opset),
             helper.make_node("Conv", ["h1", "wd", "bd"], ["dw"], group=e, pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["dw"], ["gap"]),
             helper.make_node("Conv", ["gap", "ws1", "bs1"], ["s1"]),
             helper.make_node("Relu", ["s1"], ["s1r"]),
             helper.make_node("Conv", ["s1r", "ws2", "bs2"], ["s2"]),
             helper.make_node("HardSigmoid", ["s2"], ["se"], alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["dw", "se"], ["dws"]),
             helper.make_node("Conv", ["dws", "w3", "b3"], ["p"]),
             helper.make_node("Add", ["p", "x"], ["y"])]
    inits = _CONSTS + [("w1", _w(rng, e, c, 1, 1)), ("b1", _w(rng, e)),
                       ("wd", _w(rng, e, 1, 3, 3)), ("bd", _w(rng, e)),
                       ("ws1", _w(rng, 4, e, 1, 1)), ("bs1", _w(rng, 4)),
                       ("ws2", _w(rng, e, 4, 1, 1)), ("bs2", _w(rng, e)),
                       ("w3", _w(rng, c, e, 1, 1)), ("b3", _w(rng, c))]
    m = _model(nodes, [_vi("x", [1, c, 13, 17])], [_vi("y", None)], inits, opset=opset)
    x = rng.standard_normal((1, c, 13, 17)).astype(np.float32) * 3
    _check(m, [{"x": x}], backend, fused_away={"Clip", "Div", "Relu", "HardSigmoid"}
           if style != "mul_sixth" else {"Clip", "Relu"})


def test_hard_swish_hard_sigmoid_silu_standalone(backend, rng):
    nodes = [helper.make_node("HardSigmoid", ["x"], ["hs"], alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["x", "hs"], ["y1"]),           # hard-swish spelling
             helper.make_node("Sigmoid", ["x"], ["sg"]),
             helper.make_node("Mul", ["sg", "x"], ["y2"]),           # SiLU spelling
             helper.make_node("HardSigmoid", ["x"], ["y3"])]          # alpha 0.2
    m = _model(nodes, [_vi("x", [2, 3, 5, 7])], [_vi(n, None) for n in ("y1", "y2", "y3")])
    x = rng.standard_normal((2, 3, 5, 7)).astype(np.float32) * 4
    _check(m, [{"x": x}], backend, fused_away={"Sigmoid", "Mul"})


@pytest.mark.parametrize("act", ["LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "SiLU"])
def test_depthwise_5x5_s2_with_activation(backend, rng, act):
    c = 6
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], group=c, strides=[2, 2],
                              pads=[2, 2, 2, 2], kernel_shape=[5, 5])]
    inits = [("w", _w(rng, c, 1, 5, 5))]
    if act == "PRelu":
        nodes.append(helper.make_node("PRelu", ["c", "slope"], ["y"]))
        inits.append(("slope", rng.uniform(0.05, 0.5, (c, 1, 1)).astype(np.float32)))
    elif act == "Clip":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
        inits += [("lo", np.array(-0.5, np.float32)), ("hi", np.array(1.5, np.float32))]
    elif act == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]),
                  helper.make_node("Mul", ["c", "s"], ["y"])]
    else:
        nodes.append(helper.make_node(act, ["c"], ["y"], **({"alpha": 0.1} if act ==
                                                            "LeakyRelu" else {})))
    m = _model(nodes, [_vi("x", [1, c, 21, 18])], [_vi("y", None)], inits)
    x = rng.standard_normal((1, c, 21, 18)).astype(np.float32)
    _check(m, [{"x": x}], backend, fused_away={act, "Mul", "Sigmoid"})


def test_conv_transpose_2x2_s2_and_batchnorm_fold(backend, rng):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "beta", "mu", "var"], ["bn"],
                              epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("ConvTranspose", ["r", "wt", "bt"], ["y"], strides=[2, 2],
                              kernel_shape=[2, 2])]
    inits = [("w", _w(rng, 8, 4, 3, 3)), ("b", _w(rng, 8)),
             ("g", rng.uniform(0.5, 2, 8).astype(np.float32)), ("beta", _w(rng, 8)),
             ("mu", _w(rng, 8)), ("var", rng.uniform(0.2, 2, 8).astype(np.float32)),
             ("wt", _w(rng, 8, 5, 2, 2)), ("bt", _w(rng, 5))]
    m = _model(nodes, [_vi("x", [1, 4, 9, 11])], [_vi("y", None)], inits)
    x = rng.standard_normal((1, 4, 9, 11)).astype(np.float32)
    _check(m, [{"x": x}], backend, fused_away={"BatchNormalization", "Relu"})


def test_nhwc_input_constant_node_weights_ir4_extra_domain(backend, rng):
    """NHWC input wrapped in Transposes, weights in Constant nodes, initializers repeated in
    graph.input (IR 4), an unused extra opset domain."""
    w = _w(rng, 5, 3, 3, 3)
    nodes = [helper.make_node("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2]),
             helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
             helper.make_node("Constant", [], ["b"], value_floats=list(_w(rng, 5))),
             helper.make_node("Conv", ["xc", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Mul", ["r", "k"], ["rk"]),
             helper.make_node("Transpose", ["rk"], ["y"], perm=[0, 2, 3, 1])]
    k = np.array([0.5], np.float32)
    m = _model(nodes, [_vi("x", [1, 10, 12, 3]), _vi("k", [1])], [_vi("y", None)],
               [("k", k)], opset=9, ir=4, extra_opsets=[("com.example.unused", 1)])
    sess = edgedl.InferenceSession(m)
    assert [i.name for i in sess.get_inputs()] == ["x"]
    x = rng.standard_normal((1, 10, 12, 3)).astype(np.float32)
    ort = ort_session(m)
    ref = ort.run(None, {"x": x})[0]
    for b in [backend]:
        got = edgedl.InferenceSession(m, backend=b).run(None, {"x": x})[0]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
        assert got.flags.c_contiguous


def test_dynamic_hw_and_bilinear_resize_with_runtime_sizes(backend, rng):
    """Symbolic H/W; Resize (linear, pytorch_half_pixel) to sizes computed from Shape at run
    time; one plan per input shape."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Shape", ["c"], ["s"]),
             helper.make_node("Slice", ["s", "st", "en"], ["hw"]),
             helper.make_node("Mul", ["hw", "two"], ["hw2"]),
             helper.make_node("Slice", ["s", "zero", "st"], ["nc"]),
             helper.make_node("Concat", ["nc", "hw2"], ["sizes"], axis=0),
             helper.make_node("Resize", ["c", "", "", "sizes"], ["up"], mode="linear",
                              coordinate_transformation_mode="pytorch_half_pixel"),
             helper.make_node("Resize", ["c", "", "scales"], ["nn"], mode="nearest"),
             helper.make_node("Softmax", ["up"], ["y"], axis=1)]
    inits = [("w", _w(rng, 4, 3, 3, 3)), ("st", np.array([2], np.int64)),
             ("en", np.array([4], np.int64)), ("two", np.array([2], np.int64)),
             ("zero", np.array([0], np.int64)),
             ("scales", np.array([1, 1, 2, 2], np.float32))]
    m = _model(nodes, [_vi("x", [1, 3, "H", "W"])], [_vi("y", None), _vi("nn", None)], inits)
    feeds = [{"x": rng.standard_normal((1, 3, h, w)).astype(np.float32)}
             for h, w in [(8, 10), (5, 7), (8, 10)]]
    sess = _check(m, feeds, backend)
    assert len(sess._plans) == 2
    assert sess.get_inputs()[0].shape == [1, 3, "H", "W"]


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_non_last_axis(backend, rng, opset):
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=1),
             helper.make_node("LogSoftmax", ["x"], ["z"], axis=-2)]
    m = _model(nodes, [_vi("x", [2, 5, 3, 4])], [_vi("y", None), _vi("z", None)], opset=opset)
    _check(m, [{"x": rng.standard_normal((2, 5, 3, 4)).astype(np.float32) * 3}], backend)


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_between_transposes(backend, rng, opset):
    """FastestDet's Transpose -> Softmax(last axis) -> inverse Transpose feeding a Concat
    (fused into one softmax over axis 1); a last-axis Softmax on a transposed view (runs in
    the view's memory order), a flattening opset-11 LogSoftmax on a transposed view, and a
    Softmax on a flipped (negative-stride) view."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 2, 1]),
             helper.make_node("Softmax", ["t"], ["s"], axis=3),
             helper.make_node("Transpose", ["s"], ["u"], perm=[0, 3, 2, 1]),
             helper.make_node("Concat", ["x", "u"], ["y"], axis=1),
             helper.make_node("Transpose", ["x"], ["t2"], perm=[0, 2, 1, 3]),
             helper.make_node("LogSoftmax", ["t2"], ["z"], axis=2),
             helper.make_node("Slice", ["x", "st", "en", "ax", "step"], ["f"]),
             helper.make_node("Softmax", ["f"], ["v"], axis=3),
             helper.make_node("Transpose", ["x"], ["t3"], perm=[0, 2, 3, 1]),
             helper.make_node("Softmax", ["t3"], ["s3"], axis=3),
             helper.make_node("Relu", ["s3"], ["w"])]
    inits = [("st", np.array([-1], np.int64)), ("en", np.array([-100], np.int64)),
             ("ax", np.array([3], np.int64)), ("step", np.array([-1], np.int64))]
    m = _model(nodes, [_vi("x", [1, 6, 5, 7])], [_vi("y", None), _vi("z", None),
                                                 _vi("v", None), _vi("w", None)], inits,
               opset=opset)
    sess = _check(m, [{"x": rng.standard_normal((1, 6, 5, 7)).astype(np.float32) * 3}],
                  backend)
    fused = [n for n in sess._graph.nodes if n.op_type == "Softmax" and n.outputs == ["u"]]
    assert len(fused) == 1 and fused[0].inputs == ["x"] and fused[0].attrs["axis"] == 1


@pytest.mark.parametrize("opset", [11, 18])
def test_pad_into_planned_buffer(backend, rng, opset):
    """Constant Pad (FastestDet's before an AveragePool) written into the planner's recycled
    buffer: zero and non-zero values, pads on some axes only (opset 18), two runs."""
    ax = ["axes"] if opset >= 18 else []
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Pad", ["r", "p0"], ["a"], mode="constant"),
             helper.make_node("AveragePool", ["a"], ["y"], kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("Pad", ["r", "p1", "v"] + ax, ["b"], mode="constant"),
             helper.make_node("Relu", ["b"], ["z"])]
    p1 = [0, 2, 1, 3] if opset >= 18 else [0, 0, 0, 2, 0, 0, 1, 3]
    inits = [("p0", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
             ("p1", np.array(p1, np.int64)), ("v", np.array(1.5, np.float32))]
    if opset >= 18:
        inits.append(("axes", np.array([1, 3], np.int64)))
    m = _model(nodes, [_vi("x", [1, 4, 9, 10])], [_vi("y", None), _vi("z", None)], inits,
               opset=opset)
    _check(m, [{"x": rng.standard_normal((1, 4, 9, 10)).astype(np.float32)}
               for _ in range(2)], backend)


@pytest.mark.parametrize("opset", [11, 18])
def test_zero_pad_fused_into_average_pool(backend, rng, opset):
    """Zero Pad of H, W -> AveragePool without pads (FastestDet) becomes one AveragePool
    counting those pads; every variant that is not equivalent keeps its Pad: a non-zero
    value, a channel pad, ceil_mode, pads >= kernel, a second reader, MaxPool."""
    def pad(name, src, pads, value=None):
        ins = [src, f"{name}_p"] + ([f"{name}_v"] if value is not None else [])
        nodes = [helper.make_node("Pad", ins, [name], mode="constant")]
        inits = [(f"{name}_p", np.array(pads, np.int64))]
        if value is not None:
            inits.append((f"{name}_v", np.array(value, np.float32)))
        return nodes, inits

    def avg(src, y, **kw):
        return helper.make_node("AveragePool", [src], [y], kernel_shape=[3, 3], **kw)

    fused, kept = [], []
    nodes, inits = [], []
    for i, (pads, value, kw, other) in enumerate([
            ([0, 0, 1, 1, 0, 0, 1, 1], None, dict(strides=[2, 2]), None),          # fused
            ([0, 0, 0, 1, 0, 0, 2, 0], 0.0, dict(count_include_pad=0), None),       # fused
            ([0, 0, 1, 1, 0, 0, 1, 1], 1.0, {}, None),                              # value
            ([0, 1, 1, 1, 0, 0, 1, 1], None, {}, None),                             # channel
            ([0, 0, 1, 1, 0, 0, 1, 1], None, dict(ceil_mode=1, strides=[2, 2]), None),
            ([0, 0, 3, 0, 0, 0, 0, 0], None, {}, None),                             # >= kernel
            ([0, 0, 1, 1, 0, 0, 1, 1], None, {}, "Relu"),                           # 2 readers
            ([0, 0, 1, 1, 0, 0, 1, 1], None, {}, "MaxPool")]):
        pn, pi = pad(f"a{i}", "x", pads, value)
        nodes += pn
        inits += pi
        if other == "MaxPool":
            nodes.append(helper.make_node("MaxPool", [f"a{i}"], [f"y{i}"], kernel_shape=[3, 3]))
        else:
            nodes.append(avg(f"a{i}", f"y{i}", **kw))
        if other == "Relu":
            nodes.append(helper.make_node("Relu", [f"a{i}"], [f"r{i}"]))
        (fused if i < 2 else kept).append(f"y{i}")
    outs = [_vi(f"y{i}", None) for i in range(8)] + [_vi("r6", None)]
    if opset >= 18:     # the same pads given on axes 2, 3 only
        nodes += [helper.make_node("Pad", ["x", "hp", "", "hw"], ["h"], mode="constant"),
                  avg("h", "y8")]
        inits += [("hp", np.array([1, 0, 2, 1], np.int64)), ("hw", np.array([2, 3], np.int64))]
        outs.append(_vi("y8", None))
        fused.append("y8")
    m = _model(nodes, [_vi("x", [1, 3, 9, 10])], outs, inits, opset=opset)
    sess = _check(m, [{"x": rng.standard_normal((1, 3, 9, 10)).astype(np.float32)}], backend)
    made = {n.outputs[0]: n for n in sess._graph.nodes}
    for y in fused:
        assert made[y].inputs == ["x"] and made[y].attrs["count_include_pad"] == 1, y
    for y in kept:
        assert made[made[y].inputs[0]].op_type == "Pad", y


def test_declared_shape_differs_from_fed(backend, rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], strides=[2, 2]),
             helper.make_node("MaxPool", ["c"], ["p1"], kernel_shape=[3, 3], strides=[2, 2],
                              auto_pad="SAME_UPPER"),
             helper.make_node("MaxPool", ["c"], ["p2"], kernel_shape=[2, 2], auto_pad="VALID"),
             helper.make_node("Upsample", ["p1", "sc"], ["u"], mode="nearest"),
             helper.make_node("Flatten", ["p2"], ["f"]),
             helper.make_node("Gemm", ["f", "g", "gc"], ["y"], transB=1)]
    inits = [("w", _w(rng, 4, 3, 3, 3)), ("sc", np.array([1, 1, 2, 2], np.float32)),
             ("g", _w(rng, 7, 4 * 8 * 11)), ("gc", _w(rng, 7))]
    m = _model(nodes, [_vi("x", [1, 3, 32, 32])], [_vi("u", None), _vi("y", None)], inits,
               opset=9)
    # a feed that contradicts a fixed declared shape is refused (issue 15, as onnxruntime
    # does); with symbolic H, W the same graph runs at 19x25 and matches onnxruntime
    m_sym = _model(nodes, [_vi("x", [1, 3, "h", "w"])], [_vi("u", None), _vi("y", None)],
                   inits, opset=9)
    x = rng.standard_normal((1, 3, 19, 25)).astype(np.float32)   # declared 32x32
    with pytest.raises(edgedl.errors.InputError, match=r"declares \[1, 3, 32, 32\]"):
        edgedl.InferenceSession(m, backend=backend).run(None, {"x": x})
    _check(m_sym, [{"x": x}], backend)


def test_shape_ops_split_cast_range_expand(backend, rng):
    nodes = [helper.make_node("Split", ["x", "sp"], ["a", "b"], axis=1),
             helper.make_node("Shape", ["a"], ["sa"]),
             helper.make_node("ConstantOfShape", ["sa"], ["ones"],
                              value=numpy_helper.from_array(np.array([1.5], np.float32))),
             helper.make_node("Add", ["a", "ones"], ["a1"]),
             helper.make_node("Range", ["r0", "r1", "r2"], ["rg"]),
             helper.make_node("Cast", ["rg"], ["rgf"], to=F),
             helper.make_node("Expand", ["rgf", "es"], ["ex"]),
             helper.make_node("Mul", ["b", "ex"], ["bm"]),
             helper.make_node("Concat", ["a1", "bm"], ["y"], axis=1),
             helper.make_node("ReduceMean", ["y"], ["m"], axes=[2, 3], keepdims=1),
             helper.make_node("TopK", ["x2", "k"], ["tv", "ti"], axis=-1),
             helper.make_node("Gather", ["x2", "ti"], ["gt"], axis=1),
             helper.make_node("Where", ["cond", "x2", "gt0"], ["wh"]),
             helper.make_node("Greater", ["x2", "gt0"], ["cond"])]
    nodes = nodes[:-2] + [nodes[-1], nodes[-2]]
    inits = [("sp", np.array([2, 3], np.int64)), ("r0", np.array(0, np.int64)),
             ("r1", np.array(6, np.int64)), ("r2", np.array(1, np.int64)),
             ("es", np.array([1, 3, 1, 6], np.int64)), ("k", np.array([3], np.int64)),
             ("gt0", np.array(0.0, np.float32))]
    m = _model(nodes, [_vi("x", [1, 5, 4, 6]), _vi("x2", [2, 6])],
               [_vi(n, None, TensorProto.INT64 if n == "ti" else F)
                for n in ("y", "m", "tv", "ti", "gt", "wh")], inits)
    feed = {"x": rng.standard_normal((1, 5, 4, 6)).astype(np.float32),
            "x2": rng.standard_normal((2, 6)).astype(np.float32)}
    _check(m, [feed], backend)


def test_big_convs_in_row_bands(backend, rng):
    """Convs whose im2col columns exceed the banding threshold (dilated, grouped, strided,
    asymmetric pads) — the planner builds them a band of output rows at a time."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], group=2, dilations=[2, 2],
                              pads=[2, 1, 3, 2]),
             helper.make_node("Conv", ["a", "w2", "b2"], ["y"], strides=[2, 2],
                              pads=[1, 0, 0, 1])]
    inits = [("w1", _w(rng, 8, 8, 3, 3)), ("w2", _w(rng, 6, 8, 3, 3)), ("b2", _w(rng, 6))]
    m = _model(nodes, [_vi("x", [1, 16, 203, 181])], [_vi("y", None)], inits)
    _check(m, [{"x": rng.standard_normal((1, 16, 203, 181)).astype(np.float32)}], backend)


@pytest.mark.parametrize("size, beta", [(5, 0.75), (3, 0.5), (3, 1.0), (1, 0.75), (7, 0.6),
                                        (11, 0.75), (4, 0.75)])
def test_lrn_against_onnxruntime(backend, rng, size, beta):
    """LRN (AlexNet, ZFNet, GoogLeNet): windows wider than the channels, the square-root
    powers and np.power, large and tiny values; onnxruntime takes odd sizes only, so an even
    one is held to the operator's formula in float64 (floor((size-1)/2) channels below c)."""
    x = (rng.standard_normal((2, 9, 5, 7)) * rng.choice([0.01, 1.0, 30.0], (2, 9, 1, 1)))
    x = x.astype(np.float32)
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=3e-4, beta=beta, bias=1.5)
    m = _model([node], [_vi("x", [2, 9, 5, 7])], [_vi("y", [2, 9, 5, 7])])
    if size % 2:
        _check(m, [{"x": x}], backend, rtol=1e-5)
        return
    sq, lo = x.astype(np.float64) ** 2, (size - 1) // 2
    s = np.stack([sq[:, max(0, c - lo):c - lo + size].sum(axis=1) for c in range(9)], axis=1)
    want = x / (1.5 + 3e-4 / size * s) ** beta
    got = edgedl.InferenceSession(m.SerializeToString(), backend=backend).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("b", [2, 3])
def test_space_to_depth_and_depth_to_space_against_onnxruntime(backend, rng, b):
    """SpaceToDepth (TF detectors, YOLOv5's Focus as one op) and DepthToSpace in both modes
    (PixelShuffle's CRD), batch 2, then back: the round trip is the identity."""
    x = rng.standard_normal((2, 3 * b * b, 4 * b, 5 * b)).astype(np.float32)
    nodes = [helper.make_node("SpaceToDepth", ["x"], ["s"], blocksize=b),
             helper.make_node("DepthToSpace", ["s"], ["dcr"], blocksize=b, mode="DCR"),
             helper.make_node("DepthToSpace", ["x"], ["crd"], blocksize=b, mode="CRD"),
             helper.make_node("DepthToSpace", ["x"], ["dflt"], blocksize=b)]
    m = _model(nodes, [_vi("x", list(x.shape))], [_vi(n, None) for n in ("s", "dcr", "crd",
                                                                           "dflt")])
    sess = _check(m, [{"x": x}], backend, rtol=0)
    s, dcr = sess.run(None, {"x": x})[:2]
    np.testing.assert_array_equal(dcr, x)
    assert s.shape == (2, 3 * b ** 4, 4, 5)


def test_space_depth_bad_input_names_the_node(backend):
    """H not a multiple of the block, C not one of its square, a bad mode or blocksize: a
    ModelError naming the node, not a reshape error."""
    x = np.zeros((1, 4, 6, 5), np.float32)
    for node, match in [
            (helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2, name="s2d"),
             "s2d.*multiples of blocksize 2"),
            (helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=3, name="d2s"),
             "d2s.*multiple of blocksize"),
            (helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="XYZ",
                              name="d2s_mode"), "d2s_mode.*mode"),
            (helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=0, name="s2d0"),
             "s2d0.*blocksize")]:
        m = _model([node], [_vi("x", [1, 4, 6, 5])], [_vi("y", None)])
        with pytest.raises(ModelError, match=match):
            edgedl.InferenceSession(m.SerializeToString(), backend=backend).run(None, {"x": x})


def test_scatter_gather_nd_cumsum_norms_against_onnxruntime(backend, rng):
    """The index and normalization ops of exports beyond the four shared models (YOLOv5's
    ScatterND box writes, TF's GatherND, FCOS-style GroupNorm heads, transformer LayerNorm),
    on one graph, against onnxruntime."""
    x = rng.standard_normal((2, 8, 5, 6)).astype(np.float32)
    idx = np.array([[[0, 3], [1, 7]], [[1, 0], [0, 5]]], np.int64)          # (2, 2, 2)
    upd = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
    gidx = np.array([[[2, -1]], [[4, 0]]], np.int64)                       # batch_dims 1
    eidx = rng.integers(-5, 5, (2, 8, 3, 6)).astype(np.int64)
    eupd = rng.standard_normal((2, 8, 3, 6)).astype(np.float32)
    inits = [("idx", idx), ("upd", upd), ("gidx", gidx), ("eidx", eidx), ("eupd", eupd),
             ("ax", np.array(2, np.int64)), ("s8", _w(rng, 8)), ("b8", _w(rng, 8)),
             ("s6", _w(rng, 6)), ("b6", _w(rng, 6))]
    nodes = [helper.make_node("ScatterND", ["x", "idx", "upd"], ["sn"], reduction="add"),
             helper.make_node("ScatterND", ["x", "idx", "upd"], ["sn2"]),
             helper.make_node("GatherND", ["x", "gidx"], ["gn"], batch_dims=1),
             helper.make_node("ScatterElements", ["x", "eidx", "eupd"], ["se"], axis=2,
                              reduction="max"),
             helper.make_node("CumSum", ["x", "ax"], ["cs"], exclusive=1, reverse=1),
             helper.make_node("InstanceNormalization", ["x", "s8", "b8"], ["inn"],
                              epsilon=1e-3),
             helper.make_node("LayerNormalization", ["x", "s6", "b6"], ["ln"], axis=-1),
             helper.make_node("GroupNormalization", ["x", "s8", "b8"], ["gnm"], num_groups=4)]
    outs = ["sn", "sn2", "gn", "se", "cs", "inn", "ln", "gnm"]
    m = _model(nodes, [_vi("x", list(x.shape))], [_vi(n, None) for n in outs], inits,
               opset=21, ir=10)
    _check(m, [{"x": x}], backend, rtol=1e-5)


def test_index_ops_out_of_range_name_the_node(backend):
    x = np.zeros((3, 4), np.float32)
    for node, inits in [
            (helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="snd"),
             [("i", np.array([[3]], np.int64)), ("u", np.zeros((1, 4), np.float32))]),
            (helper.make_node("GatherND", ["x", "i"], ["y"], name="gnd"),
             [("i", np.array([[0, -5]], np.int64))]),
            (helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=1, name="sel"),
             [("i", np.array([[4]], np.int64)), ("u", np.zeros((1, 1), np.float32))])]:
        m = _model([node], [_vi("x", [3, 4])], [_vi("y", None)], inits, opset=18)
        with pytest.raises(ModelError, match=f"{node.name}.*out of range"):
            edgedl.InferenceSession(m.SerializeToString(), backend=backend).run(None, {"x": x})
