"""Activations, every backend vs onnxruntime and NumPy in the same run, float32, one thread.

Run: pytest benchmarks/bench_activations.py --benchmark-only [-k sigmoid]

Each kernel at 1x64x80x80 and 1x16x320x320 on the cython, numba and numpy backends, onnxruntime's
single-node session.run (intra_op_num_threads=1) where ONNX has the op, and np.copyto of the
same size as the memory-bandwidth roofline. The closing table gives medians and the ratios of
the cython backend (the default) to onnxruntime and to the copy.
"""
import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import edgedl  # noqa: E402
from edgedl._config import BACKEND_ORDER, why_unavailable  # noqa: E402
from edgedl.kernels.activation_table import ACTIVATIONS  # noqa: E402

from _common import (Table, copy_roofline, fill_roofline, ort_single_node,  # noqa: E402
                     single_thread, timed)

SIZES = {"1x64x80x80": (1, 64, 80, 80), "1x16x320x320": (1, 16, 320, 320)}

# example parameters where the defaults would not do (or are not the usual case)
EXAMPLE_KW = {"clip": {"lo": -1.0, "hi": 1.0}, "leaky_relu": {"alpha": 0.1},
              "softmax": {"axis": -1}, "log_softmax": {"axis": -1}}


def _onnx(name, kw):
    """(ONNX op, attrs or Clip's bounds, opset) of the activation, None when ONNX has none."""
    rec = ACTIVATIONS[name]
    if name == "relu6":
        return "Clip", {"lo": 0.0, "hi": 6.0}, 13
    if rec.onnx_op is None:
        return None
    if rec.onnx_op == "Clip":
        return "Clip", dict(kw), 13
    attrs = {p.onnx_attr: kw[p.name] for p in rec.params if p.name in kw}
    return rec.onnx_op, attrs, max(rec.onnx_since, 13)


# kernel -> (edgedl kwargs (None: prelu's slope), (ONNX op, attrs / Clip's bounds, opset) or
# None): every activation of the table but aliases (silu = swish), and softmax over channels
KERNELS = {name: (None if rec.kind == "channel" else EXAMPLE_KW.get(name, {}),
                  _onnx(name, EXAMPLE_KW.get(name, {})))
           for name, rec in ACTIVATIONS.items() if rec.kind != "alias"}
KERNELS["softmax:axis1"] = ({"axis": 1}, ("Softmax", {"axis": 1}, 13))   # over channels
RUNTIMES = list(BACKEND_ORDER) + ["onnxruntime"]

TABLE = Table(
    "activations, float32, 1 thread", cols=["cython", "numba", "numpy", "onnxruntime", "copy"],
    ratios={"cy/ort": lambda r, t: t.ratio(r, "cython", "onnxruntime"),
            "cy/copy": lambda r, t: t.ratio(r, "cython", "copy"),
            "nb/ort": lambda r, t: t.ratio(r, "numba", "onnxruntime")},
    note="copy = np.copyto of the same array (read + write): the bandwidth roofline")
COPY = {}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield
    fill_roofline(TABLE, COPY)


def _input(shape):
    rng = np.random.default_rng(0)
    return (rng.standard_normal(shape) * 3).astype(np.float32)


@pytest.mark.parametrize("size", SIZES)
def test_copy_roofline(benchmark, size):
    COPY[size] = timed(benchmark, copy_roofline(_input(SIZES[size])))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("kernel", KERNELS)
def test_activation(benchmark, kernel, runtime, size):
    x = _input(SIZES[size])
    kw, onnx = KERNELS[kernel]
    slope = np.linspace(0.05, 0.3, x.shape[1], dtype=np.float32)
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
        if onnx is None:
            pytest.skip(f"ONNX has no single op for {kernel}")
        op, attrs, opset = onnx
        inputs = [("x", x)]
        if op == "Clip":
            inputs += [("lo", np.array(attrs["lo"], np.float32)),
                       ("hi", np.array(attrs["hi"], np.float32))]
            attrs = {}
        elif op == "PRelu":
            inputs.append(("slope", slope.reshape(-1, 1, 1)))
        fn = ort_single_node(op, inputs, attrs, opset)
    else:
        reason = why_unavailable(runtime)
        if reason:
            pytest.skip(reason)
        f = getattr(edgedl, kernel.split(":")[0])
        out = np.empty_like(x)
        if kernel == "prelu":
            fn = lambda: f(x, slope, out=out, backend=runtime)  # noqa: E731
        else:
            fn = lambda: f(x, out=out, backend=runtime, **kw)  # noqa: E731
        fn()   # compile / load outside the timing
    slow = runtime == "numpy" and size == "1x16x320x320"
    TABLE.record((kernel, size), runtime, timed(benchmark, fn, rounds=10 if slow else 30))
