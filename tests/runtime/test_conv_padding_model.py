"""Regression for the heap corruption of issue #15: a ~1 KB ONNX model whose Conv has large
pads and dilations (taps lying wholly in the padding) made the compiled kernels zero-fill past
their im2col rows. Every backend must now give onnxruntime's answer, through the session
(the planner's fast path) and through conv2d directly (where onnxruntime is missing, as on
32-bit ARM, the NumPy reference conv2d gives the answer)."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

import edgedl  # noqa: E402
from edgedl.kernels.conv import conv2d  # noqa: E402

try:
    import onnxruntime as ort
except ImportError:
    ort = None

# (input HxW, kernel, pads (top, left, bottom, right), dilations, strides, group)
CASES = [
    ((5, 5), (3, 3), (0, 3000, 0, 3000), (1, 3000), (1, 1), 1),
    ((5, 5), (3, 3), (3000, 0, 3000, 0), (3000, 1), (1, 1), 1),
    ((5, 5), (3, 3), (40, 40, 40, 40), (30, 30), (1, 1), 1),
    ((7, 6), (3, 3), (500, 500, 500, 500), (400, 400), (7, 5), 1),
    ((5, 5), (3, 3), (0, 3000, 0, 3000), (1, 3000), (1, 1), 2),       # depthwise
    ((6, 6), (5, 5), (2000, 2000, 2000, 2000), (999, 999), (2, 2), 2),
    ((4, 9), (2, 4), (0, 100, 3, 7), (2, 33), (1, 3), 1),
]


def _model(c, m, hw, k, pads, dil, strides, group, w):
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=list(pads), dilations=list(dil),
                            strides=list(strides), group=group, name="hostile_conv")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, *hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_taps_in_padding(backend, case):
    hw, k, pads, dil, strides, group = case
    rng = np.random.default_rng(7)
    c = 2
    m = 2 if group == 2 else 3
    x = rng.standard_normal((1, c, *hw)).astype(np.float32)
    w = rng.standard_normal((m, c // group, *k)).astype(np.float32)
    blob = _model(c, m, hw, k, pads, dil, strides, group, w)
    if ort is not None:
        want = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    else:
        want = conv2d(x, w, pads=pads, dilations=dil, strides=strides, group=group,
                      backend="numpy")
    sess = edgedl.InferenceSession(blob, backend=backend)
    for _ in range(2):            # the second run reuses the planned buffers
        got = sess.run(None, {"x": x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    direct = conv2d(x, w, pads=pads, dilations=dil, strides=strides, group=group,
                    backend=backend)
    np.testing.assert_allclose(direct, want, rtol=1e-5, atol=1e-5)
