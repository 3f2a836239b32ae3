"""Transpose (kernels.layout), every backend vs NumPy's strided copy and onnxruntime's
Transpose node in the same run, one thread.

Run: pytest benchmarks/bench_layout.py --benchmark-only

Shapes: detector heads (YOLOX's (1, 85, 3549) -> (0, 2, 1) output, YuNet's 4- and 10-channel
NCHW -> NHWC maps) and a 64-channel NCHW -> NHWC map. The copy reads and writes each value
once: the bound is a plain copy of as many bytes (column "copy"); the closing table gives
medians and the Cython twin's time relative to that copy, to NumPy's and to onnxruntime's
(ORT's includes its session call and the output allocation).
"""
import numpy as np
import pytest

from edgedl._config import BACKEND_ORDER, why_unavailable
from edgedl.kernels import layout as L
from _common import Table, copy_roofline, ort_single_node, show_now, single_thread, timed

T = Table("transpose, 1 thread",
          cols=list(BACKEND_ORDER) + ["np.copyto", "onnxruntime", "copy"],
          ratios={"cy/copy": lambda row, t: t.ratio(row, "cython", "copy"),
                  "cy/np": lambda row, t: t.ratio(row, "cython", "np.copyto"),
                  "cy/ort": lambda row, t: t.ratio(row, "cython", "onnxruntime")})

CASES = {"yolox_head": ((1, 85, 3549), (0, 2, 1)), "nhwc_4": ((1, 4, 40, 40), (0, 2, 3, 1)),
         "nhwc_10": ((1, 10, 40, 40), (0, 2, 3, 1)), "nhwc_64": ((1, 64, 52, 52), (0, 2, 3, 1))}


@pytest.fixture(scope="module", autouse=True)
def one_thread(request):
    with single_thread():
        yield
    show_now(request.config, lambda w: [w(line) for line in [""] + T.lines()])


@pytest.mark.parametrize("runtime", list(BACKEND_ORDER) + ["np.copyto", "onnxruntime", "copy"])
@pytest.mark.parametrize("name", list(CASES))
def test_transpose(benchmark, name, runtime):
    shape, perm = CASES[name]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = np.empty(tuple(shape[p] for p in perm), np.float32)
    if runtime == "np.copyto":
        fn = lambda: np.copyto(out, x.transpose(perm))  # noqa: E731
    elif runtime == "copy":
        fn = copy_roofline(x)
    elif runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
        fn = ort_single_node("Transpose", [("x", x)], {"perm": list(perm)})
    else:
        if why_unavailable(runtime):
            pytest.skip(why_unavailable(runtime))
        fn = lambda: L.transpose(x, perm, out=out, backend=runtime)  # noqa: E731
    fn()
    benchmark.group = f"transpose {name}"
    T.record(name, runtime, timed(benchmark, fn, rounds=200, warmup=5))
