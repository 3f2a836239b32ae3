"""onnx's own node test cases, for every op of issue 4's list, through edgedl.onnx.backend.

Cases excluded in conformance_excluded.txt carry their reason; every other selected case must
pass, and the selected-minus-excluded share must stay >= 95%.
"""
import glob
import os

import numpy as np
import pytest

pytest.importorskip("onnx")

from onnx_conformance import excluded, run_case, selected_cases  # noqa: E402

CASES = selected_cases()
EXCLUDED = excluded()


def _onnx_version():
    import onnx
    return tuple(int(p) for p in onnx.__version__.split(".")[:2])


# The list is kept against the onnx of the [test] extra (>= 1.14, 532 cases selected). Debian
# bookworm's onnx 1.12 (the 32-bit ARM test tool) has 369 of them and lacks some excluded ones.
CURRENT_ONNX = _onnx_version() >= (1, 14)


def test_pass_rate_and_allow_list():
    names = {c.name for c in CASES}
    stale = sorted(set(EXCLUDED) - names)
    if CURRENT_ONNX:
        assert not stale, f"conformance_excluded.txt names cases that are not selected: {stale}"
    assert all(EXCLUDED.values()), "every excluded case needs a reason"
    least = 400 if CURRENT_ONNX else 350
    assert len(CASES) >= least, f"only {len(CASES)} onnx node cases selected"
    rate = 1 - len(set(EXCLUDED) & names) / len(CASES)
    assert rate >= 0.95, f"only {rate:.1%} of {len(CASES)} cases are not excluded"


@pytest.mark.parametrize("case", [c for c in CASES if c.name not in EXCLUDED],
                         ids=lambda c: c.name)
def test_node_case(case):
    run_case(case)


def test_backend_api_run_node():
    import onnx
    from onnx import helper
    from edgedl.onnx import backend
    node = helper.make_node("Add", ["a", "b"], ["c"])
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    (c,) = backend.run_node(node, [a, a])
    np.testing.assert_array_equal(c, a + a)
    assert backend.supports_device("CPU")
    assert not backend.supports_device("CUDA")
    model = helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 3])
                      for n in "ab"],
        [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [2, 3])]))
    np.testing.assert_array_equal(backend.run_model(model, [a, a])[0], 2 * a)


def _light_models():
    import onnx
    d = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    return sorted(glob.glob(os.path.join(d, "light_*.onnx")))


# the biggest light models take seconds on the NumPy paths; keep the quick ones
_LIGHT = [p for p in _light_models() if not any(k in p for k in ("vgg19", "alexnet",
                                                                 "zfnet512"))] or [
    pytest.param(None, marks=pytest.mark.skip(
        reason="this onnx package ships no backend/test/data/light models (Debian's does not)"))]


@pytest.mark.parametrize("path", _LIGHT, ids=lambda p: os.path.basename(p)[6:-5] if p else "none")
def test_light_model(path):
    """onnx's "light" model-zoo cases (weights from ConstantOfShape), fed as onnx's runner
    feeds them (arange / n), against the expected outputs shipped in the wheel."""
    import onnx
    from onnx import numpy_helper
    from edgedl.onnx import backend
    model = onnx.load(path)
    inits = {i.name for i in model.graph.initializer}
    feeds = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1
                      for d in vi.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feeds.append((np.arange(n).reshape(shape) / n).astype(np.float32))
    got = backend.prepare(model).run(feeds)
    for i, g in enumerate(got):
        ref_path = path[:-5] + f"_output_{i}.pb"
        t = onnx.TensorProto()
        with open(ref_path, "rb") as f:
            t.ParseFromString(f.read())
        ref = numpy_helper.to_array(t)
        np.testing.assert_allclose(g, ref, rtol=1e-3, atol=1e-5)
