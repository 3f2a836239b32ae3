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


def _dropout_graph(rng, opset=9, mask_read=False, training=None):
    """Conv -> Dropout (mask as a 2nd output) -> Identity -> Relu: what classifiers export."""
    ins = ["c"] if training is None else ["c", "ratio", "train"]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]),
             helper.make_node("Dropout", ins, ["d", "mask"], **({"ratio": 0.5} if
                                                                opset < 12 else {})),
             helper.make_node("Identity", ["d"], ["i"]),
             helper.make_node("Relu", ["i"], ["y"])]
    mask_type = onnx.TensorProto.BOOL if opset >= 10 else onnx.TensorProto.FLOAT
    outs = [_vi("y", None)] + ([_vi("mask", None, mask_type)] if mask_read else [])
    inits = [("w", _w(rng, 4, 3, 1, 1))]
    if training is not None:
        inits += [("ratio", np.array(0.5, np.float32)), ("train", np.array(training))]
    return _model(nodes, [_vi("x", [1, 3, 5, 5])], outs, inits, opset=opset)


@pytest.mark.parametrize("opset", [7, 10, 13])
def test_inference_dropout_and_identity_are_bypassed(backend, rng, opset):
    """An inference Dropout whose mask nobody reads, and an Identity, go: their readers read
    their input (the Relu then fuses into the Conv); a read mask keeps the Dropout."""
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    train = False if opset >= 12 else None
    s = _check(_dropout_graph(rng, opset, training=train), [{"x": x}], backend,
               fused_away={"Dropout", "Identity", "Relu"})
    assert _ops(s) == ["Conv"]
    s = _check(_dropout_graph(rng, opset, mask_read=True, training=train), [{"x": x}],
               backend, fused_away={"Identity"})
    assert _ops(s) == ["Conv", "Dropout", "Relu"]


def test_training_mode_dropout_is_refused(rng):
    import edgedl
    s = edgedl.InferenceSession(_dropout_graph(rng, 13, training=True).SerializeToString())
    assert "Dropout" in _ops(s)
    with pytest.raises(ValueError, match="Dropout.*training_mode"):
        s.run(None, {"x": np.ones((1, 3, 5, 5), np.float32)})


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


# ----------------------------------------------------------------------------- residual adds
def _residual_block(rng, add="Add", act="Relu", other="skip", opset=13, size=(6, 9), c=8):
    """x -> Conv a -> Relu -> Conv b; Add(b, r) -> act, with r: x itself ("skip"), a Conv of
    x placed after Conv b in the node order ("later"), a graph input ("input"), or a
    (1, c, 1, 1) computed value that broadcasts ("broadcast")."""
    h, w = size
    nodes = [helper.make_node("Conv", ["x", "wa", "ba"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "wb", "bb"], ["b"], pads=[1, 1, 1, 1])]
    inputs = [_vi("x", [1, c, h, w])]
    inits = [("wa", _w(rng, c, c, 3, 3)), ("ba", _w(rng, c)), ("wb", _w(rng, c, c, 3, 3)),
             ("bb", _w(rng, c))]
    r = "x"
    if other == "later":
        nodes.append(helper.make_node("Conv", ["x", "ws"], ["s"]))
        inits.append(("ws", _w(rng, c, c, 1, 1)))
        r = "s"
    elif other == "input":
        inputs.append(_vi("r", [1, c, h, w]))
        r = "r"
    elif other == "broadcast":
        nodes.append(helper.make_node("ReduceMean", ["x"], ["s"], axes=[2, 3]))
        r = "s"
    nodes.append(helper.make_node(add, ["b", r] if rng.random() < 0.5 else [r, "b"], ["sum"]))
    out = "sum"
    if act:
        nodes.append(helper.make_node(act, ["sum"], ["y"]))
        out = "y"
    return _model(nodes, inputs, [_vi(out, None)], inits, opset=opset)


@pytest.mark.parametrize("add", ["Add", "Sum"])
@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "LeakyRelu", None])
@pytest.mark.parametrize("other", ["skip", "later", "input", "broadcast"])
def test_residual_add_fuses_into_the_conv(backend, rng, add, act, other):
    """Conv -> Add(conv, r) -> activation: one Conv whose epilogue adds r, then the
    activation (ResNet's blocks), on the planned path and the general one (a residual
    that broadcasts), matching onnxruntime and the unfused graph."""
    m = _residual_block(rng, add, act, other)
    feed = {"x": rng.standard_normal((1, 8, 6, 9)).astype(np.float32)}
    if other == "input":
        feed["r"] = rng.standard_normal((1, 8, 6, 9)).astype(np.float32)
    s = _check(m, [feed], backend, fused_away={add} | ({act} if act else set()))
    fused = [n for n in s._graph.nodes if n.attrs.get("_residual")]
    assert len(fused) == 1
    import edgedl
    plain = edgedl.InferenceSession(m.SerializeToString(), backend=backend, fuse=False)
    np.testing.assert_allclose(s.run(None, feed)[0], plain.run(None, feed)[0], rtol=1e-5,
                               atol=1e-5)


def _fused_matches_plain(m, feed, backend, tol=0.0):
    """The fused graph's output is the unfused one's (within ``tol``; 0: the same bits) on 1
    and 2 threads, on the traced run and then the plan."""
    import edgedl
    for t in (1, 2):
        kw = dict(backend=backend, num_threads=t, adaptive_threads=False)
        fused = edgedl.InferenceSession(m.SerializeToString(), **kw)
        plain = edgedl.InferenceSession(m.SerializeToString(), fuse=False, **kw)
        for _ in range(2):
            np.testing.assert_allclose(fused.run(None, feed)[0], plain.run(None, feed)[0],
                                       rtol=tol, atol=tol)


def test_residual_add_shapes_and_readers_that_stay(backend, rng):
    """No fusion when the conv's output has another reader or the other operand is a
    constant; a stem conv (direct path) and a depthwise conv fuse and
    take the general path; big planes exercise the GEMM's blocks and threads."""
    c = 8
    x = rng.standard_normal((1, c, 5, 7)).astype(np.float32)
    inits = [("w", _w(rng, c, c, 3, 3)), ("k", _w(rng, 1, c, 5, 7))]
    two_readers = _model([helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
                          helper.make_node("Add", ["a", "x"], ["s"]),
                          helper.make_node("Mul", ["a", "s"], ["y"])],
                         [_vi("x", [1, c, 5, 7])], [_vi("y", None)], inits)
    const = _model([helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
                    helper.make_node("Add", ["a", "k"], ["y"])],
                   [_vi("x", [1, c, 5, 7])], [_vi("y", None)], inits)
    for m in (two_readers, const):
        s = _check(m, [{"x": x}], backend)
        assert not [n for n in s._graph.nodes if n.attrs.get("_residual")]
    for shape, w, group in (((1, 3, 64, 80), _w(rng, 3, 3, 3, 3), 1),        # direct stem
                            ((1, 16, 20, 24), _w(rng, 16, 1, 3, 3), 16),     # depthwise
                            ((1, 64, 40, 40), _w(rng, 64, 64, 3, 3, scale=0.05), 1)):  # GEMM
        m = _model([helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1],
                                     group=group),
                    helper.make_node("Add", ["x", "a"], ["s"]),
                    helper.make_node("Relu", ["s"], ["y"])],
                   [_vi("x", list(shape))], [_vi("y", None)], [("w", w)])
        xx = rng.standard_normal(shape).astype(np.float32)
        _check(m, [{"x": xx}], backend, fused_away={"Add", "Relu"})
        _fused_matches_plain(m, {"x": xx}, backend)


@pytest.mark.parametrize("act", ["Relu", "SiLU", "LeakyRelu", "Tanh"])
@pytest.mark.parametrize("case", ["gemm", "stem", "depthwise", "broadcast"])
def test_residual_add_after_the_activation_fuses(backend, rng, act, case):
    """Conv -> activation -> Add(., r) (YOLO's CSP shortcut x + SiLU(conv(...))): one Conv
    (``_residual`` 2) whose epilogue applies the activation, then adds r: the unfused
    graph's bits on the GEMM path (1 and 2 threads), the direct stem, a depthwise conv and
    a broadcast residual (general paths), and onnxruntime's values."""
    c, shape, group, w = {
        "gemm": (64, (1, 64, 40, 40), 1, _w(rng, 64, 64, 3, 3, scale=0.05)),
        "stem": (3, (1, 3, 64, 80), 1, _w(rng, 3, 3, 3, 3)),
        "depthwise": (16, (1, 16, 20, 24), 16, _w(rng, 16, 1, 3, 3)),
        "broadcast": (8, (1, 8, 6, 9), 1, _w(rng, 8, 8, 3, 3))}[case]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["a"], pads=[1, 1, 1, 1], group=group)]
    if act == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["a"], ["sg"]),
                  helper.make_node("Mul", ["a", "sg"], ["av"])]
    else:
        nodes.append(helper.make_node(act, ["a"], ["av"]))
    r = "x"
    if case == "broadcast":
        nodes.append(helper.make_node("ReduceMean", ["x"], ["r"], axes=[2, 3]))
        r = "r"
    nodes.append(helper.make_node("Add", [r, "av"], ["y"]))
    m = _model(nodes, [_vi("x", list(shape))], [_vi("y", None)],
               [("w", w), ("b", _w(rng, c))])
    xx = rng.standard_normal(shape).astype(np.float32)
    fused_away = {"Add", "Mul", "Sigmoid"} if act == "SiLU" else {"Add", act}
    s = _check(m, [{"x": xx}], backend, fused_away=fused_away)
    assert [n.attrs.get("_residual") for n in s._graph.nodes if n.op_type == "Conv"] == [2]
    _fused_matches_plain(m, {"x": xx}, backend, tol=2e-6)


def test_conv2d_plan_residual_checks_and_overlap(rng):
    """conv2d_plan(residual=True): a residual of the wrong shape is refused by name; one
    that shares memory with the output is read before the conv writes there."""
    from edgedl.kernels import conv as C
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    w = _w(rng, 4, 4, 1, 1)
    for bk in ("cython", "numpy"):
        run = C.conv2d_plan(x.shape, w, activation="relu", residual=True, backend=bk)
        assert (run._fast is not None) == (bk == "cython")      # ConvF32's GEMM path
        r = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
        want = np.maximum(C.conv2d(x, w, backend="numpy") + r, 0)
        np.testing.assert_allclose(run(x, None, r), want, rtol=1e-5, atol=1e-6)
        y = r.copy()
        np.testing.assert_allclose(run(x, y, y), want, rtol=1e-5, atol=1e-6)    # in place
        with pytest.raises(edgedl_errors().ValidationError, match="residual"):
            run(x, None, r[:, :2])
        after = C.conv2d_plan(x.shape, w, activation="relu", residual="after", backend=bk)
        assert (after._fast is not None) == (bk == "cython")
        want = np.maximum(C.conv2d(x, w, backend="numpy"), 0) + r
        np.testing.assert_allclose(after(x, None, r), want, rtol=1e-5, atol=1e-6)
        y = r.copy()
        np.testing.assert_allclose(after(x, y, y), want, rtol=1e-5, atol=1e-6)  # in place
    with pytest.raises(edgedl_errors().ValidationError, match="residual"):
        C.conv2d_plan(x.shape, w, residual="before")


def edgedl_errors():
    import edgedl.errors
    return edgedl.errors


_END = np.iinfo(np.int64).max
_PARITIES = [(0, 0), (1, 0), (0, 1), (1, 1)]      # YOLOv5 / YOLOX's order


def _focus(rng, chained=True, end=_END, pads=(1, 1, 1, 1), k=3, extra_reader=False,
           parities=_PARITIES):
    """x -> four parity slices (chained: rows then columns, as torch exports x[..., a::2,
    b::2]; else one Slice over both axes) -> Concat(axis 1) -> Conv(k, pads) + Relu."""
    nodes, inits, cat = [], [], []
    for p, (a, b) in enumerate(parities):
        if chained:
            inits += [(f"s{p}r", np.array([a])), (f"s{p}c", np.array([b]))]
            nodes += [helper.make_node("Slice", ["x", f"s{p}r", "end", "ax2", "two"], [f"r{p}"]),
                      helper.make_node("Slice", [f"r{p}", f"s{p}c", "end", "ax3", "two"],
                                       [f"q{p}"])]
        else:
            inits += [(f"s{p}", np.array([a, b]))]
            nodes += [helper.make_node("Slice", ["x", f"s{p}", "end2", "axes", "two2"],
                                       [f"q{p}"])]
        cat.append(f"q{p}")
    nodes += [helper.make_node("Concat", cat, ["cat"], axis=1),
              helper.make_node("Conv", ["cat", "w", "b"], ["c"], pads=list(pads)),
              helper.make_node("Relu", ["c"], ["y"])]
    outs = [_vi("y", None)]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["cat"], ["y2"]))
        outs.append(_vi("y2", None))
    inits += [("end", np.array([end])), ("end2", np.array([end, end])),
              ("ax2", np.array([2])), ("ax3", np.array([-1])), ("axes", np.array([-2, 3])),
              ("two", np.array([2])), ("two2", np.array([2, 2])),
              ("w", _w(rng, 5, 12, k, k)), ("b", _w(rng, 5))]
    return _model(nodes, [_vi("x", [1, 3, "h", "w"])], outs, inits, opset=13)


@pytest.mark.parametrize("chained", [True, False])
@pytest.mark.parametrize("k, pads", [(3, (1, 1, 1, 1)), (1, (0, 0, 0, 0)), (3, (0, 1, 2, 0))])
def test_focus_folds_into_one_strided_conv(backend, rng, chained, k, pads):
    """YOLOv5 / YOLOX's Focus (four stride-2 parity slices, Concat, Conv) runs as one
    Conv with stride 2 and a kernel twice as large on the image itself."""
    m = _focus(rng, chained, pads=pads, k=k)
    feeds = [{"x": rng.standard_normal((1, 3, h, w)).astype(np.float32)}
             for h, w in ((8, 10), (16, 6))]
    s = _check(m, feeds, backend, fused_away={"Slice", "Concat"}, rtol=1e-5)
    assert _ops(s) == ["Conv"]
    conv = s._graph.nodes[0]
    assert conv.attrs["strides"] == [2, 2] and conv.attrs["kernel_shape"] == [2 * k, 2 * k]
    # odd sizes: the slices differ in size, the Concat had no answer: a clear error
    with pytest.raises(edgedl_errors().ModelError, match="even height and width"):
        s.run(None, {"x": np.zeros((1, 3, 9, 10), np.float32)})


def test_focus_lookalikes_stay(rng):
    """Not a Focus: a Slice end short of "to the end", a Concat read elsewhere too, a
    parity taken twice: the graph keeps its Slices and Concat."""
    import edgedl
    for m in (_focus(rng, end=8), _focus(rng, extra_reader=True),
              _focus(rng, parities=[(0, 0), (1, 0), (0, 1), (0, 1)])):
        s = edgedl.InferenceSession(m.SerializeToString())
        assert "Concat" in _ops(s) and "Slice" in _ops(s)
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        from ort_util import ort_session
        want = ort_session(m).run(None, {"x": x})
        for g, r in zip(s.run(None, {"x": x}), want):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- 1x1 -> depthwise
def _pw_dw(rng, c=8, m=16, size=(20, 24), pool=True, acts=("Relu", "Relu"), dw=None,
           mp=None, extra_reader=False):
    """x -> 1x1 Conv -> act -> 3x3 depthwise Conv (pads 1) -> act [-> 2x2 MaxPool]; ``dw`` /
    ``mp``: attributes replacing the depthwise conv's / pool's; ``extra_reader``: the 1x1's
    output read by an Add too."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"])]
    a = "a"
    if acts[0]:
        nodes.append(helper.make_node(acts[0], ["a"], ["ar"]))
        a = "ar"
    nodes.append(helper.make_node("Conv", [a, "w2", "b2"], ["d"],
                                  **(dw or dict(pads=[1, 1, 1, 1], group=m))))
    d = "d"
    if acts[1]:
        nodes.append(helper.make_node(acts[1], ["d"], ["dr"]))
        d = "dr"
    out = d
    if pool:
        nodes.append(helper.make_node("MaxPool", [d], ["p"],
                                      **(mp or dict(kernel_shape=[2, 2], strides=[2, 2]))))
        out = "p"
    if extra_reader:
        nodes.append(helper.make_node("ReduceMean", [a], ["s"], axes=[1], keepdims=1))
        nodes.append(helper.make_node("Add", [out, "s"] if not pool else ["s", "s"], ["e"]))
    outs = [_vi(out, None)] + ([_vi("e", None)] if extra_reader else [])
    groups = (dw or {}).get("group", m)
    return _model(nodes, [_vi("x", [1, c, *size])], outs,
                  [("w1", _w(rng, m, c, 1, 1)), ("b1", _w(rng, m)),
                   ("w2", _w(rng, m, m // groups, 3, 3)), ("b2", _w(rng, m))])


def _plan_ops(sess):
    return [n.op_type for n in list(sess._plans.values())[0].nodes]


@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("acts", [("Relu", "Relu"), (None, "Relu"), ("LeakyRelu", None),
                                  ("Sigmoid", "HardSigmoid")])
@pytest.mark.parametrize("size", [(20, 24), (9, 7)])
def test_pointwise_depthwise_fuses(backend, rng, monkeypatch, pool, acts, size):
    """1x1 Conv -> depthwise 3x3 Conv [-> 2x2 MaxPool], each with its activation: one
    PointwiseDepthwise node. Where it pays (the 1x1's output past half of the last-level
    cache, here set small) the plan runs it as one banded kernel (Cython, rows >= 18),
    elsewhere as its parts; either way onnxruntime's values and the unfused graph's (within
    an ulp: there a Sigmoid runs as its own kernel, not in the conv's registers)."""
    from edgedl import _config
    monkeypatch.setattr(_config, "_llc", 64)
    m = _pw_dw(rng, pool=pool, acts=acts, size=size)
    x = rng.standard_normal((1, 8, *size)).astype(np.float32)
    gone = {"MaxPool"} if pool else set()
    s = _check(m, [{"x": x}], backend, fused_away=gone | {a for a in acts if a})
    assert _ops(s) == ["PointwiseDepthwise"]
    banded = backend == "cython" and size[1] >= 18
    assert _plan_ops(s) == (["PointwiseDepthwise"] if banded else
                            ["Conv", "Conv"] + (["MaxPool"] if pool else []))
    _fused_matches_plain(m, {"x": x}, backend, tol=2e-6)


def test_pointwise_depthwise_runs_as_its_parts_where_small(rng, monkeypatch):
    """Below half of the last-level cache the planner plans the fused node's parts (each
    step its own buffers; the values between them freed after their last reader), the
    depthwise conv and its pool kept one ConvMaxPool (its rows pooled while in L1): the same
    values, run after run, as the banded kernel's."""
    from edgedl import _config
    import edgedl
    monkeypatch.setattr(_config, "_llc", 1 << 40)
    m = _pw_dw(rng, acts=("Relu", "Relu"), extra_reader=False)
    s = edgedl.InferenceSession(m.SerializeToString(), backend="cython")
    x = rng.standard_normal((1, 8, 20, 24)).astype(np.float32)
    first = s.run(None, {"x": x})[0]
    assert _ops(s) == ["PointwiseDepthwise"] and _plan_ops(s) == ["Conv", "ConvMaxPool"]
    for _ in range(2):
        np.testing.assert_array_equal(s.run(None, {"x": x})[0], first)
    monkeypatch.setattr(_config, "_llc", 64)
    banded = edgedl.InferenceSession(m.SerializeToString(), backend="cython")
    np.testing.assert_array_equal(banded.run(None, {"x": x})[0], first)
    assert _plan_ops(banded) == ["PointwiseDepthwise"]


def test_cache_sizes_from_env_then_sysfs(tmp_path, monkeypatch):
    """The cache sizes the planner's fusion choice reads: the environment's override, else
    sysfs (its L2 and its largest level; an L2-only machine's last level is its L2), else
    1 MiB."""
    from edgedl import _config
    for i, (level, kind, size) in enumerate([(1, "Data", "32K"), (1, "Instruction", "32K"),
                                             (2, "Unified", "512K"), (3, "Unified", "32M")]):
        d = tmp_path / f"index{i}"
        d.mkdir()
        for f, v in (("level", level), ("type", kind), ("size", size)):
            (d / f).write_text(f"{v}\n")
    monkeypatch.setattr(_config, "_SYSFS_CACHE", str(tmp_path))
    for name in ("_l2", "_llc"):
        monkeypatch.setattr(_config, name, None)
    monkeypatch.delenv("EDGEDL_L2_BYTES", raising=False)
    monkeypatch.delenv("EDGEDL_LLC_BYTES", raising=False)
    assert (_config.l2_cache_bytes(), _config.last_level_cache_bytes()) == (512 << 10, 32 << 20)
    (tmp_path / "index3" / "type").write_text("Instruction\n")
    monkeypatch.setattr(_config, "_llc", None)
    assert _config.last_level_cache_bytes() == 512 << 10
    monkeypatch.setattr(_config, "_SYSFS_CACHE", str(tmp_path / "absent"))
    for name in ("_l2", "_llc"):
        monkeypatch.setattr(_config, name, None)
    monkeypatch.setenv("EDGEDL_LLC_BYTES", "3000000")
    assert (_config.l2_cache_bytes(), _config.last_level_cache_bytes()) == (1 << 20, 3000000)


def test_pointwise_depthwise_lookalikes_stay(rng, monkeypatch):
    """Not fused: the 1x1's output read elsewhere too (its depthwise conv and 2x2 pool
    then one ConvMaxPool), a strided / unpadded / grouped second conv; a pool of 3x3
    windows, with ceil_mode or padding stays a MaxPool of its own (the convs before it still
    fuse)."""
    from edgedl import _config
    import edgedl
    from ort_util import ort_session
    monkeypatch.setattr(_config, "_llc", 64)
    cases = [(_pw_dw(rng, extra_reader=True), False),
             (_pw_dw(rng, dw=dict(pads=[1, 1, 1, 1], group=16, strides=[2, 2])), False),
             (_pw_dw(rng, dw=dict(group=16)), False),
             (_pw_dw(rng, dw=dict(pads=[1, 1, 1, 1], group=4)), False)]
    for attrs in (dict(kernel_shape=[3, 3], strides=[2, 2]),
                  dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
                  dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1])):
        cases.append((_pw_dw(rng, size=(19, 23), mp=attrs), True))
    for k, (m, convs_fuse) in enumerate(cases):
        s = edgedl.InferenceSession(m.SerializeToString(), backend="cython")
        assert ("MaxPool" if k else "ConvMaxPool") in _ops(s), _ops(s)
        assert ("PointwiseDepthwise" in _ops(s)) == convs_fuse, _ops(s)
        assert not any(n.attrs.get("_pool") for n in s._graph.nodes)
        dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
        x = rng.standard_normal(dims).astype(np.float32)
        for g, r in zip(s.run(None, {"x": x}), ort_session(m).run(None, {"x": x})):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", ["yolo_head", "nhwc_to_nchw", "nchw_to_nhwc", "batch_of_2",
                                  "reversed", "dynamic", "mixed_types"])
def test_transposed_concat_fuses(backend, rng, case):
    """Concat -> Transpose (a YOLO head) -> one ConcatTransposed: each input transposed into
    its slice of the output, onnxruntime's values; where the slices are not contiguous (a
    batch of 2, the concat axis moved last) or the inputs' types differ (the Concat refuses),
    its parts run as steps; a symbolic dimension is planned per fed shape, fused."""
    shapes = {"yolo_head": ([1, 85, 52], [1, 85, 13], [1, 85, 7]),
              "nhwc_to_nchw": ([1, 5, 4, 3], [1, 5, 4, 2]),
              "nchw_to_nhwc": ([1, 3, 5, 4], [1, 2, 5, 4]),
              "batch_of_2": ([2, 5, 6], [2, 5, 3]),
              "reversed": ([4, 3], [4, 5]),
              "dynamic": ([1, 6, "n"], [1, 6, 4]),
              "mixed_types": ([1, 3, 4], [1, 3, 4])}[case]
    axis, perm = {"yolo_head": (2, [0, 2, 1]), "nhwc_to_nchw": (3, [0, 3, 1, 2]),
                  "nchw_to_nhwc": (1, [0, 2, 3, 1]),
                  "batch_of_2": (2, [0, 2, 1]), "reversed": (1, None),
                  "dynamic": (2, [0, 2, 1]), "mixed_types": (2, [0, 2, 1])}[case]
    names = [f"x{i}" for i in range(len(shapes))]
    t_attrs = {} if perm is None else {"perm": perm}
    nodes = [helper.make_node("Concat", names, ["c"], axis=axis),
             helper.make_node("Transpose", ["c"], ["y"], **t_attrs)]
    types = [onnx.TensorProto.FLOAT] * len(shapes)
    if case == "mixed_types":
        types[1] = onnx.TensorProto.DOUBLE
    m = _model(nodes, [_vi(n, s, t) for n, s, t in zip(names, shapes, types)], [_vi("y", None)])
    feed = {n: _w(rng, *[4 if d == "n" else d for d in s]) for n, s in zip(names, shapes)}
    if case == "mixed_types":
        import edgedl
        feed["x1"] = feed["x1"].astype(np.float64)
        with pytest.raises(Exception, match="Concat"):
            edgedl.InferenceSession(m.SerializeToString(), backend=backend).run(None, feed)
        return
    sess = _check(m, [feed], backend, fused_away=("Concat", "Transpose"))
    (plan,) = sess._plans.values()
    fused = [st.node.op_type for st in plan.steps] == ["ConcatTransposed"]
    assert fused == (case in ("yolo_head", "nhwc_to_nchw", "reversed", "dynamic")), plan.steps


def _conv_pool(rng, c=3, m=16, size=(40, 36), conv=None, mp=None, act="Relu",
               extra_reader=False):
    """x -> Conv (3x3 stride 2 pads 1, or ``conv``'s attributes) -> act -> MaxPool (3x3
    stride 2 pads 1, or ``mp``'s); ``extra_reader``: the conv's output read by an Add too."""
    ca = conv or dict(strides=[2, 2], pads=[1, 1, 1, 1])
    k = ca.pop("k", 3)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **ca)]
    cw = c // ca.get("group", 1)
    a = "c"
    if act:
        nodes.append(helper.make_node(act, ["c"], ["cr"]))
        a = "cr"
    nodes.append(helper.make_node("MaxPool", [a], ["y"], **(mp or dict(
        kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))))
    outs = [_vi("y", None)]
    if extra_reader:
        nodes.append(helper.make_node("Add", [a, a], ["z"]))
        outs.append(_vi("z", None))
    return _model(nodes, [_vi("x", [1, c, *size])], outs,
                  [("w", _w(rng, m, cw, k, k)), ("b", _w(rng, m))])


@pytest.mark.parametrize("act", ["Relu", None, "LeakyRelu", "HardSigmoid"])
@pytest.mark.parametrize("mp", [None, dict(kernel_shape=[2, 2], strides=[2, 2]),
                                dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)])
def test_conv_maxpool_fuses(backend, rng, act, mp):
    """A stem Conv (-> activation) read only by a 3x3 / 2x2 stride-2 MaxPool: one ConvMaxPool
    node, planned as one banded kernel on the Cython backend (the conv on its direct path)
    and as its parts elsewhere; onnxruntime's values and the unfused graph's bits."""
    from edgedl.kernels import _dispatch
    m = _conv_pool(rng, mp=mp, act=act)
    x = rng.standard_normal((1, 3, 40, 36)).astype(np.float32)
    s = _check(m, [{"x": x}], backend, fused_away={"MaxPool"} | ({act} if act else set()))
    assert _ops(s) == ["ConvMaxPool"]
    # 32-bit ARM builds have no direct conv path: the parts there
    banded = backend == "cython" and _dispatch.twin_module("conv", "cython").direct_ok()
    assert _plan_ops(s) == (["ConvMaxPool"] if banded else ["Conv", "MaxPool"])
    _fused_matches_plain(m, {"x": x}, backend)


def test_conv_maxpool_lookalikes_stay(rng):
    """Not fused: the conv's output read elsewhere too, a dilated or 3x3 stride-1 pool, a
    grouped conv; fused but planned as its parts: a 1x1 conv (not the direct path), a pool
    padded past the kernel's rule (pads 2 on a 3x3 window). Values as onnxruntime's."""
    import edgedl
    from conftest import require_backend
    from ort_util import ort_session
    require_backend("cython")
    cases = [(_conv_pool(rng, extra_reader=True), None),
             (_conv_pool(rng, mp=dict(kernel_shape=[3, 3], strides=[2, 2], dilations=[2, 2])),
              None),
             (_conv_pool(rng, mp=dict(kernel_shape=[3, 3], strides=[1, 1])), None),
             (_conv_pool(rng, c=4, conv=dict(strides=[2, 2], pads=[1, 1, 1, 1], group=2)),
              None),
             (_conv_pool(rng, conv=dict(k=1)), ["Conv", "MaxPool"]),
             (_conv_pool(rng, mp=dict(kernel_shape=[3, 3], strides=[2, 2], pads=[2, 2, 2, 2])),
              ["Conv", "MaxPool"])]
    for m, parts in cases:
        s = edgedl.InferenceSession(m.SerializeToString(), backend="cython")
        dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
        x = rng.standard_normal(dims).astype(np.float32)
        for g, r in zip(s.run(None, {"x": x}), ort_session(m).run(None, {"x": x})):
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
        assert ("ConvMaxPool" in _ops(s)) == (parts is not None), _ops(s)
        if parts:
            assert _plan_ops(s) == parts


@pytest.mark.parametrize("act", ["Relu", None, "Sigmoid", "LeakyRelu"])
@pytest.mark.parametrize("size", [(20, 24), (17, 19), (9, 12)])
def test_depthwise_maxpool_fuses(backend, rng, act, size):
    """A 3x3 'same' depthwise Conv (-> activation) read only by a 2x2 stride-2 MaxPool: one
    ConvMaxPool node, planned as one kernel on the Cython backend for rows of >= 18 (each
    channel's conv rows pooled while in L1; odd sizes drop the last row / column as the
    pool does) and as its parts elsewhere; onnxruntime's values and the unfused graph's
    bits on 1 and 2 threads (within an ulp for activations past a clip: unfused, each a
    kernel of its own after the bias; the fused conv's steps are test_conv's)."""
    c = 12
    m = _conv_pool(rng, c=c, m=c, size=size, act=act,
                   conv=dict(pads=[1, 1, 1, 1], group=c),
                   mp=dict(kernel_shape=[2, 2], strides=[2, 2]))
    x = rng.standard_normal((1, c, *size)).astype(np.float32)
    s = _check(m, [{"x": x}], backend, fused_away={"MaxPool"} | ({act} if act else set()))
    assert _ops(s) == ["ConvMaxPool"]
    one = backend == "cython" and size[1] >= 18
    assert _plan_ops(s) == (["ConvMaxPool"] if one else ["Conv", "MaxPool"])
    _fused_matches_plain(m, {"x": x}, backend, tol=0.0 if act in (None, "Relu") else 2e-6)


def _shuffle_split(rng, c=8, size=(20, 22), reader="Conv", opset=13):
    """A ShuffleNetV2 unit as FastestDet exports it: x -> 1x1 Conv -> Concat with x -> channel
    shuffle (Reshape (C, 2, HW) -> Transpose(1, 0, 2) -> Reshape (2, 1, C, H, W)) -> Gather
    0 / 1 -> a Concat of half 0 and ``reader`` (a 1x1 Conv, a 3x3 Conv or a Relu) of half 1."""
    h, w = size
    r1 = {"Conv": helper.make_node("Conv", ["g1", "w2"], ["b"]),
          "Conv3": helper.make_node("Conv", ["g1", "w3"], ["b"], pads=[1, 1, 1, 1]),
          "Relu": helper.make_node("Relu", ["g1"], ["b"])}[reader]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Concat", ["x", "ar"], ["old"], axis=1),
             helper.make_node("Reshape", ["old", "s1"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0, 2]),
             helper.make_node("Reshape", ["t", "s2"], ["halves"]),
             helper.make_node("Gather", ["halves", "i0"], ["g0"], axis=0),
             helper.make_node("Gather", ["halves", "i1"], ["g1"], axis=0), r1,
             helper.make_node("Concat", ["g0", "b"], ["y"], axis=1)]
    inits = [("w1", _w(rng, c, c, 1, 1)), ("w2", _w(rng, c, c, 1, 1)),
             ("w3", _w(rng, c, c, 3, 3)),
             ("s1", np.array([c, 2, h * w], np.int64)),
             ("s2", np.array([2, 1, c, h, w], np.int64)),
             ("i0", np.array(0, np.int64)), ("i1", np.array(1, np.int64))]
    return _model(nodes, [_vi("x", [1, c, h, w])], [_vi("y", None)], inits, opset=opset)


@pytest.mark.parametrize("reader", ["Conv", "Conv3", "Relu"])
def test_channel_shuffle_halves_are_views(backend, rng, reader):
    """A channel shuffle split by scalar Gathers: the Transpose returns a view (``_view``)
    where every half goes to a Conv or a Concat, so each half is every second channel of the
    Concat's buffer, in place; a 1x1 conv reads it there (ConvF32's strided rows), a 3x3 conv
    from a copy; a half read by anything else keeps the copying Transpose. onnxruntime's
    values either way."""
    m = _shuffle_split(rng, reader=reader)
    feed = {"x": _w(rng, 1, 8, 20, 22, scale=1.0)}
    sess = _check(m, [feed], backend)
    marked = [n for n in sess._graph.nodes if n.op_type == "Transpose" and n.attrs.get("_view")]
    assert len(marked) == (0 if reader == "Relu" else 1)
    (plan,) = sess._plans.values()
    (t,) = [st for st in plan.steps if st.node.op_type == "Transpose"]
    r = np.zeros((8, 2, 440), np.float32)
    assert np.shares_memory(t.fn(r), r) == (reader != "Relu")


def test_pointwise_conv_reads_strided_channels_in_place(rng):
    """ConvF32 on every second channel of a larger array: a 1x1 conv reads the planes in
    place (its fast path accepts the view), other convs and an output overlapping the view's
    planes decline it (the general path copies), and the values are the plain conv's."""
    pytest.importorskip("edgedl._cy.conv")
    from edgedl.kernels.conv import conv2d, conv2d_plan
    big = _w(rng, 1, 16, 9, 21, scale=1.0)
    x = big[:, 1::2]
    w1, w3, b = _w(rng, 5, 8, 1, 1), _w(rng, 5, 8, 3, 3), _w(rng, 5)
    run = conv2d_plan(x.shape, w1, b, activation="relu", backend="cython")
    y = np.empty(run.out_shape, np.float32)
    assert run._fast(x, y, 1, None)
    want = conv2d(np.ascontiguousarray(x), w1, b, activation="relu", backend="numpy")
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(x), want, rtol=1e-5, atol=1e-5)
    run3 = conv2d_plan(x.shape, w3, b, pads=(1, 1, 1, 1), backend="cython")
    assert not run3._fast(x, np.empty(run3.out_shape, np.float32), 1, None)
    np.testing.assert_allclose(run3(x), conv2d(np.ascontiguousarray(x), w3, b, pads=(1,) * 4,
                                               backend="numpy"), rtol=1e-4, atol=1e-4)
    # an output between the view's planes (inside their extent): refused
    assert not run._fast(x, big[:, 2:7], 1, None)
    # planes not contiguous within (a column step) or closer than a plane: refused
    wide = _w(rng, 1, 16, 9, 42)
    assert not run._fast(wide[:, 1::2, :, ::2], y, 1, None)
    close = np.lib.stride_tricks.as_strided(big, (1, 8, 9, 21), (big.strides[0], 21 * 4,
                                                                 21 * 4, 4))
    assert not run._fast(close, y, 1, None)
