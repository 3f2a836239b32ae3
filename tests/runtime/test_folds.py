"""Load-time folds for any exporter's spelling (issue 13, target 1): constants computed by
nodes, BatchNormalization of every opset folded into a Conv or turned into one ScaleShift,
per-channel Mul / Add / Sub folded, activations fused after any folded chain; and the cases
that must stay as they are. Each graph is checked against onnxruntime on every backend."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402

from test_synthetic import _check, _model, _vi, _w  # noqa: E402


def _bn_inits(rng, c, prefix="n"):
    return [(f"{prefix}_g", rng.uniform(0.5, 2, c).astype(np.float32)),
            (f"{prefix}_b", _w(rng, c)), (f"{prefix}_m", _w(rng, c)),
            (f"{prefix}_v", rng.uniform(0.2, 2, c).astype(np.float32))]


def _bn(x, y, prefix="n", **attrs):
    return helper.make_node("BatchNormalization", [x] + [f"{prefix}_{s}" for s in "gbmv"],
                            [y], **attrs)


def _ops(sess):
    return [n.op_type for n in sess._graph.nodes]


def _conv_bn_relu(rng, opset):
    attrs = {"is_test": 1} if opset < 7 else {}
    if opset < 6:
        attrs["consumed_inputs"] = [0, 0, 0, 1, 1]
    if opset < 9:
        attrs["spatial"] = 1
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             _bn("c", "bn", epsilon=1e-3, **attrs), helper.make_node("Relu", ["bn"], ["y"])]
    r = np.random.default_rng(rng.integers(1 << 30))     # the same weights for both opsets
    return _model(nodes, [_vi("x", [1, 3, 7, 6])], [_vi("y", None)],
                  [("w", _w(r, 5, 3, 3, 3))] + _bn_inits(r, 5), opset=opset)


@pytest.mark.parametrize("opset", [1, 6, 7, 9, 14, 15])
def test_batchnorm_of_every_opset_folds_into_conv(backend, rng, opset):
    seed = rng.integers(1 << 30)
    m = _conv_bn_relu(np.random.default_rng(seed), opset)
    # onnxruntime has no BatchNormalization-6 kernel: its opset-7 twin is the reference
    ref = _conv_bn_relu(np.random.default_rng(seed), 7) if opset < 7 else None
    x = rng.standard_normal((1, 3, 7, 6)).astype(np.float32)
    s = _check(m, [{"x": x}], backend, fused_away={"BatchNormalization", "Relu"},
               ort_model=ref)
    assert _ops(s) == ["Conv"]


def test_weights_from_nodes_and_channel_mul_add_fold(backend, rng):
    """Conv weights made by ConstantOfShape / Unsqueeze / Cast nodes (the onnx wheel's
    classic CNNs), then BN -> Mul -> Add -> Relu with (C, 1, 1) operands: one Conv+relu."""
    c = 4
    nodes = [helper.make_node("ConstantOfShape", ["wshape"], ["w0"],
                              value=helper.make_tensor("v", 1, [1], [0.05])),
             helper.make_node("Add", ["w0", "wnoise"], ["w"]),
             helper.make_node("Conv", ["x", "w"], ["c"]),
             _bn("c", "bn"),
             helper.make_node("Unsqueeze", ["scale", "axes"], ["scale3"]),
             helper.make_node("Mul", ["bn", "scale3"], ["m"]),
             helper.make_node("Cast", ["shift64"], ["shift"], to=1),
             helper.make_node("Add", ["shift", "m"], ["a"]),
             helper.make_node("Sub", ["a", "one"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    inits = [("wshape", np.array([c, 3, 3, 3], np.int64)), ("wnoise", _w(rng, c, 3, 3, 3)),
             ("scale", rng.uniform(0.5, 1.5, c).astype(np.float32)),
             ("axes", np.array([1, 2], np.int64)),
             ("shift64", rng.standard_normal((c, 1, 1))),
             ("one", np.array(0.25, np.float32))] + _bn_inits(rng, c)
    m = _model(nodes, [_vi("x", [1, 3, 8, 8])], [_vi("y", None)], inits)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    s = _check(m, [{"x": x}], backend)
    assert _ops(s) == ["Conv"] and s._graph.nodes[0].attrs["_act"] == "relu"


def test_batchnorm_without_conv_becomes_one_scale_shift(backend, rng):
    """BN after a Concat (DenseNet) -> Mul -> Add -> Relu: one ScaleShift with the relu in
    its epilogue; a second BN whose input rank is unknown keeps a (C,1,1) Mul separate."""
    c = 6
    nodes = [helper.make_node("Concat", ["x", "x2"], ["cat"], axis=1),
             _bn("cat", "bn"),
             helper.make_node("Mul", ["bn", "scale"], ["m"]),
             helper.make_node("Add", ["m", "shift"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"]),
             _bn("u", "bn2", prefix="p"),
             helper.make_node("Mul", ["bn2", "scale"], ["y2"])]
    inits = [("scale", rng.uniform(0.5, 1.5, (c, 1, 1)).astype(np.float32)),
             ("shift", _w(rng, 1, c, 1, 1))] + _bn_inits(rng, c) + _bn_inits(rng, c, "p")
    m = _model(nodes, [_vi("x", [1, 2, 5, 7]), _vi("x2", [1, 4, 5, 7]), _vi("u", None)],
               [_vi("y", None), _vi("y2", None)], inits)
    feed = {"x": rng.standard_normal((1, 2, 5, 7)).astype(np.float32),
            "x2": rng.standard_normal((1, 4, 5, 7)).astype(np.float32),
            "u": rng.standard_normal((2, c, 3, 4)).astype(np.float32)}
    s = _check(m, [feed], backend)
    assert _ops(s) == ["Concat", "ScaleShift", "ScaleShift", "Mul"]
    assert s._graph.nodes[1].attrs["_act"] == "relu"


@pytest.mark.parametrize("rank", [2, 3, 5])
def test_scale_shift_at_other_ranks(backend, rng, rank):
    shape = [2, 3, 4, 5, 2][:rank]
    nodes = [_bn("x", "bn"), helper.make_node("Mul", ["bn", "k"], ["y"])]
    inits = [("k", np.array(1.5, np.float32))] + _bn_inits(rng, 3)
    m = _model(nodes, [_vi("x", shape)], [_vi("y", None)], inits)
    s = _check(m, [{"x": rng.standard_normal(shape).astype(np.float32)}], backend)
    assert _ops(s) == ["ScaleShift"]


def test_operands_that_are_not_per_channel_stay(backend, rng):
    """A (C,) operand broadcasts along the last axis, a full-size one per element, c - x is
    no affine x * a + c, a Conv output read twice cannot change: none of them folds."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"]),
             helper.make_node("Mul", ["c1", "last"], ["y1"]),          # (C,) on W
             helper.make_node("Conv", ["x", "w"], ["c2"]),
             helper.make_node("Add", ["c2", "full"], ["y2"]),          # per element
             helper.make_node("Conv", ["x", "w"], ["c3"]),
             helper.make_node("Sub", ["chan", "c3"], ["y3"]),          # c - x
             helper.make_node("Conv", ["x", "w"], ["c4"]),
             helper.make_node("Mul", ["c4", "chan"], ["y4"]),
             helper.make_node("Add", ["c4", "y4"], ["y5"])]            # c4 read twice
    inits = [("w", _w(rng, 4, 3, 1, 1)), ("last", _w(rng, 4)), ("full", _w(rng, 1, 4, 4, 4)),
             ("chan", _w(rng, 4, 1, 1))]
    m = _model(nodes, [_vi("x", [1, 3, 4, 4])],
               [_vi(y, None) for y in ("y1", "y2", "y3", "y5")], inits)
    s = _check(m, [{"x": rng.standard_normal((1, 3, 4, 4)).astype(np.float32)}], backend)
    assert _ops(s).count("Conv") == 4 and {"Mul", "Add", "Sub"} <= set(_ops(s))


def test_training_mode_and_non_spatial_batchnorm_stay(rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             _bn("c", "y", spatial=0, epsilon=1e-3)]
    inits = [("w", _w(rng, 4, 3, 1, 1))] + [
        (n, v.reshape(-1)) for n, v in _bn_inits(rng, 4)]
    m = _model(nodes, [_vi("x", [1, 3, 4, 4])], [_vi("y", None)], inits, opset=7)
    import edgedl
    s = edgedl.InferenceSession(m.SerializeToString())
    assert "BatchNormalization" in _ops(s)


def test_constant_folding_keeps_random_ops_and_guards_memory():
    """A ConstantOfShape asking for terabytes fails at load with the memory guard."""
    import edgedl
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"]),
             helper.make_node("Add", ["x", "big"], ["y"])]
    m = _model(nodes, [_vi("x", [1])], [_vi("y", None)],
               [("shape", np.array([1 << 20, 1 << 20], np.int64))])
    with pytest.raises(edgedl.errors.ResourceError, match="ConstantOfShape"):
        edgedl.InferenceSession(m.SerializeToString()).run(None, {"x": np.ones(1, np.float32)})


@pytest.mark.parametrize("name, left", [("inception_v2", {"Conv"}),
                                        ("densenet121", {"Conv", "ScaleShift"}),
                                        ("shufflenet", {"Conv"}), ("resnet50", {"Conv"})])
def test_classic_cnns_fold(name, left):
    """The onnx wheel's classic CNNs (weights from ConstantOfShape nodes, opset-9
    BatchNormalization, Mul/Add after it): no BatchNormalization, Mul or Add left, and no
    Relu that follows a Conv or ScaleShift."""
    import os
    import edgedl
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                        f"light_{name}.onnx")
    if not os.path.exists(path):
        pytest.skip(f"{path} is not in this onnx wheel")
    s = edgedl.InferenceSession(path)
    ops = _ops(s)
    assert not {"BatchNormalization", "Mul", "Add", "ConstantOfShape"} & set(ops)
    prod = {o: n for n in s._graph.nodes for o in n.outputs}
    assert all(prod[n.inputs[0]].op_type not in left for n in s._graph.nodes
               if n.op_type == "Relu" and n.inputs[0] in prod)
