"""The four shared detectors quantized by onnxruntime.quantization (calibrated on the shared
images, tests/int8_util.py), run on edgedl against onnxruntime on the same int8 model.

Every output within one quantization step of onnxruntime's and equal (to float noise far
below a step) on >= 99.9% of its elements:

- QOperator (QLinearConv and the com.microsoft QLinear ops on the integer kernels): cython and
  numpy on all four models, numba on one (its JIT costs seconds per kernel).
- QDQ per-channel and per-tensor, which the loader rewrites onto the same integer kernels
  (DQ -> Conv -> Q into QLinearConv, ...), against onnxruntime's own QDQ fusion (its default
  optimizations): cython on all four.

The quantized models are made once per session in a temporary folder (about 25 s).
"""
import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("PIL")

import int8_util as U  # noqa: E402
from conftest import require_backend  # noqa: E402
from ort_util import ort_int8_exact  # noqa: E402

#: share of elements equal to onnxruntime's, and the largest difference in steps
EXACT, MAX_STEPS = 0.999, 1.0


@pytest.fixture(scope="session")
def int8_dir(tmp_path_factory, shared_dir):
    return tmp_path_factory.mktemp("int8_models")


def _step_of_outputs(path):
    """{graph output: its quantization step}: the scale of the DequantizeLinear it comes from
    (through shape-only ops); float ops after it (Softmax, Exp, ...) scale the step, so those
    outputs get the largest step of the model's final DequantizeLinear nodes."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    prod = {o: n for n in m.graph.node for o in n.output}
    steps = {}
    for out in m.graph.output:
        node, hops = prod.get(out.name), 0
        while node is not None and node.op_type != "DequantizeLinear" and hops < 8:
            node, hops = prod.get(node.input[0]), hops + 1
        s = None
        if node is not None and node.op_type == "DequantizeLinear" and node.input[1] in inits:
            s = float(np.max(inits[node.input[1]]))
        steps[out.name] = s
    known = [s for s in steps.values() if s]
    return {k: v if v else max(known) for k, v in steps.items()}


def _ort(path, x, optimized=True):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.get_inputs()[0].name, [o.name for o in s.get_outputs()], s.run(
        None, {s.get_inputs()[0].name: x})


def _edgedl(path, name, x, backend):
    import edgedl
    return edgedl.InferenceSession(str(path), backend=backend, num_threads=1).run(
        None, {name: x})


def _differences(path, got, names, want):
    """Per output: (share equal, largest difference in steps)."""
    steps = _step_of_outputs(path)
    res = {}
    for n, g, w in zip(names, got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, n
        d = np.abs(g.astype(np.float64) - w.astype(np.float64))
        step = 1.0 if g.dtype.kind in "iu" else steps[n]
        # float noise of the ops after the last DequantizeLinear is far below one step
        k = d / step
        res[n] = ((k <= 1e-3).mean(), float(k.max()) if k.size else 0.0)
    return res


CASES = [(m, b) for m in U.MODELS for b in ("cython", "numpy")] + [("yunet_n_320", "numba")]


def _after_softmax(path):
    """The graph outputs computed by a Softmax (through Q / DQ / shape-only ops)."""
    import onnx
    m = onnx.load(str(path))
    prod = {o: n for n in m.graph.node for o in n.output}
    found = set()
    for out in m.graph.output:
        node, hops = prod.get(out.name), 0
        while node is not None and node.op_type != "Softmax" and hops < 6:
            node, hops = prod.get(node.input[0]), hops + 1
        if node is not None and node.op_type == "Softmax":
            found.add(out.name)
    return found


def _check(model, form, backend, int8_dir, shared_dir):
    path = U.quantized(shared_dir, model, form, int8_dir)
    x = U.feed(shared_dir, model, "grace_hopper.jpg")
    name, names, want = _ort(path, x)
    got = _edgedl(path, name, x, require_backend(backend))
    # onnxruntime's QDQ fusion turns DQ -> Softmax -> Q into its QLinearSoftmax, whose
    # rounding is not Softmax + QuantizeLinear's (ultraface's scores: half of them one step
    # lower); edgedl runs the graph as written. Those outputs: within a step, not equal.
    softmax = _after_softmax(path) if form != "qoperator" else set()
    # Where onnxruntime's u8 x s8 kernels are not exact (AVX2 without VNNI: the models are
    # quantized with 7-bit weights there, tests/int8_util.py), its fused QDQ convs still
    # round one step apart from edgedl (and from its own unfused graph) on up to 0.2% of
    # fastestdet's outputs (measured 99.82% / 99.88% equal); 99.9% on VNNI / AVX-512.
    exact_share = EXACT if ort_int8_exact() or form == "qoperator" else 0.998
    for out, (exact, steps) in _differences(path, got, names, want).items():
        assert steps <= MAX_STEPS + 1e-3, f"{model} {form} {out}: {steps:.2f} steps off"
        if out not in softmax:
            assert exact >= exact_share, \
                f"{model} {form} {out}: only {exact:.4%} equal to onnxruntime"


@pytest.mark.parametrize("model,backend", CASES)
def test_qoperator_matches_onnxruntime(model, backend, int8_dir, shared_dir):
    _check(model, "qoperator", backend, int8_dir, shared_dir)


@pytest.mark.parametrize("form", ["qdq_per_channel", "qdq_per_tensor"])
@pytest.mark.parametrize("model", U.MODELS)
def test_qdq_matches_onnxruntime(model, form, int8_dir, shared_dir):
    _check(model, form, "cython", int8_dir, shared_dir)


def test_quantizer_writes_the_ops_we_run(int8_dir, shared_dir):
    """The com.microsoft ops onnxruntime's QOperator quantizer writes for the shared models
    are all implemented (QLinearLeakyRelu / QLinearGlobalAveragePool are too, unused here)."""
    from edgedl.onnx.ops import OPS
    seen = set()
    for m in U.MODELS:
        seen |= set(U.op_types(U.quantized(shared_dir, m, "qoperator", int8_dir)))
    assert {k for k in seen if k.startswith("com.microsoft.")} <= set(OPS)
    assert "QLinearConv" in seen
