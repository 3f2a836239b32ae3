"""Pooling, every backend vs onnxruntime and NumPy in the same run, float32, one thread.

Run: pytest benchmarks/bench_pooling.py --benchmark-only [-k maxpool_3x3]

MaxPool 3x3 s2 p1, MaxPool 5x5 s1 p2 (SPPF), AvgPool 3x3 s1 p1, GlobalAveragePool and
GlobalMaxPool at 1x64x80x80, 1x16x320x320 and 1x576x14x14 on the cython, numba and numpy
backends (the public functions) and through pool2d_plan on cython with a preallocated output
(what the ONNX runtime runs: "planned"), against onnxruntime's single-node session.run
(intra_op_num_threads=1) and np.copyto of the input size (the memory-bandwidth roofline). The
closing table gives medians and the ratios of the cython (default), planned and numba runs to
onnxruntime and of cython to the copy.
"""
import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import edgedl  # noqa: E402
from edgedl._config import BACKEND_ORDER, why_unavailable  # noqa: E402
from edgedl.kernels import pooling as P  # noqa: E402

from _common import (Table, copy_roofline, fill_roofline, ort_single_node,  # noqa: E402
                     single_thread, timed)

#: and Inception's branch pools: many 14 x 14 planes
SIZES = {"1x64x80x80": (1, 64, 80, 80), "1x16x320x320": (1, 16, 320, 320),
         "1x576x14x14": (1, 576, 14, 14)}

# case -> (edgedl call(x, backend), ONNX op, ONNX attrs, opset)
CASES = {
    "maxpool_3x3_s2_p1": (lambda x, b: P.max_pool2d(x, (3, 3), (2, 2), (1, 1, 1, 1), backend=b),
                          "MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2],
                                          pads=[1, 1, 1, 1]), 12),
    "maxpool_5x5_s1_p2": (lambda x, b: P.max_pool2d(x, (5, 5), (1, 1), (2, 2, 2, 2), backend=b),
                          "MaxPool", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]), 12),
    "avgpool_3x3_s1_p1": (lambda x, b: P.avg_pool2d(x, (3, 3), (1, 1), (1, 1, 1, 1), backend=b),
                          "AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 19),
    "global_avg_pool": (lambda x, b: P.global_avg_pool2d(x, backend=b),
                        "GlobalAveragePool", {}, 1),
    "global_max_pool": (lambda x, b: P.global_max_pool2d(x, backend=b),
                        "GlobalMaxPool", {}, 1),
}
RUNTIMES = list(BACKEND_ORDER) + ["planned", "onnxruntime"]


def _planned(case, x):
    """pool2d_plan's run on cython with its output allocated once (None for global pools)."""
    _, op, attrs, _ = CASES[case]
    if op not in ("MaxPool", "AveragePool"):
        return None
    run = P.pool2d_plan(x.shape, "max" if op == "MaxPool" else "avg", attrs["kernel_shape"],
                        attrs.get("strides"), attrs["pads"], backend="cython")
    out = np.empty(run.out_shape, x.dtype)
    return lambda: run(x, out)

TABLE = Table(
    "pooling, float32, 1 thread",
    cols=["cython", "planned", "numba", "numpy", "onnxruntime", "copy"],
    ratios={"cy/ort": lambda r, t: t.ratio(r, "cython", "onnxruntime"),
            "pl/ort": lambda r, t: t.ratio(r, "planned", "onnxruntime"),
            "nb/ort": lambda r, t: t.ratio(r, "numba", "onnxruntime"),
            "cy/copy": lambda r, t: t.ratio(r, "cython", "copy")},
    note="copy = np.copyto of the input array (read + write): the bandwidth roofline")
COPY = {}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield
    fill_roofline(TABLE, COPY)


def _input(shape):
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("size", SIZES)
def test_copy_roofline(benchmark, size):
    COPY[size] = timed(benchmark, copy_roofline(_input(SIZES[size])))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("case", CASES)
def test_pool(benchmark, case, runtime, size):
    x = _input(SIZES[size])
    call, op, attrs, opset = CASES[case]
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
        fn = ort_single_node(op, [("x", x)], attrs, opset)
    elif runtime == "planned":
        reason = why_unavailable("cython")
        if reason is not None:
            pytest.skip(reason)
        fn = _planned(case, x)
        if fn is None:
            pytest.skip("no planned form")
        np.testing.assert_allclose(fn(), call(x, "numpy"), rtol=1e-5, atol=1e-6)
    else:
        reason = why_unavailable(runtime)
        if reason is not None:
            pytest.skip(reason)
        fn = lambda: call(x, runtime)   # noqa: E731
        # same answer as the reference before timing (a fast wrong kernel is worthless)
        np.testing.assert_allclose(fn(), call(x, "numpy"), rtol=1e-5, atol=1e-6)
    rounds = 10 if runtime == "numpy" else 30
    TABLE.record((case, size), runtime, timed(benchmark, fn, rounds=rounds))
