"""int8 models: edgedl int8 vs onnxruntime int8 vs edgedl float32, one thread, in the same run.

The four shared detectors quantized by onnxruntime.quantization (tests/int8_util.py: QOperator
and QDQ per-channel, calibrated on the shared images). Each (model, form) is timed in
alternating blocks of runs of every runtime (the machine is shared and noisy) and the medians'
ratios are printed: int8 / ORT int8 (issue #14's target <= 1.0) and edgedl float32 / int8
(target >= 1.5 faster).

Run: python benchmarks/bench_int8.py [model ...] [--forms=qoperator,qdq_per_channel]
        [--isa=avx2] [--cache=DIR] [--rss]
 or: pytest benchmarks/bench_int8.py --benchmark-only -s
--isa=avx2 (or c) sets EDGEDL_INT8_ISA before any kernel runs: the AVX2 int16-pairs GEMM and
scalar lookups instead of VNNI / VBMI (--isa=avx512: VNNI without AMX). --cache=DIR keeps the quantized models between runs.
--rss: instead of timing, each model's peak resident memory (VmHWM) in a fresh process per
(model, float32 / int8 form): the interpreter and imports alone, then a session loaded and
run 5 times (issue 14: int8 weights stay int8 in the plan).
"""
import os
import pathlib
import sys
import tempfile
import time

import numpy as np
import pytest

import edgedl
from _common import shared_dir  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import int8_util as U  # noqa: E402

FORMS = ("qoperator", "qdq_per_channel")


def _shared(what=None):
    """The shared models' folder, or None (saying so when ``what`` is given)."""
    d = shared_dir()
    if d is None and what:
        print(f"../shared is missing: nothing to {what}")
    return d


def _ort(path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda feed: s.run(None, feed)


def _edgedl(path):
    s = edgedl.InferenceSession(str(path), backend="cython", num_threads=1)
    return lambda feed: s.run(None, feed)


def runners(shared, model, form, out_dir):
    """{runtime: run(feed)} and the feed of one (model, form)."""
    q = U.quantized(shared, model, form, out_dir)
    f32 = pathlib.Path(shared) / "models" / f"{model}.onnx"
    x = U.feed(shared, model, "grace_hopper.jpg")
    name = edgedl.InferenceSession(str(f32)).get_inputs()[0].name
    return {"edgedl int8": _edgedl(q), "ort int8": _ort(q), "edgedl f32": _edgedl(f32),
            "ort f32": _ort(f32)}, {name: x}


def paired(run, feed, rounds=20, block=5, cpu=None):
    """Median seconds per runtime, measured in alternating blocks of ``block`` runs; ``cpu``
    (a dict) receives the medians of the calling thread's CPU time per run too (one thread
    runs everything: on a shared box the wall time also counts the time others held the
    core, which the CPU time leaves out)."""
    times = {k: [] for k in run}
    ctimes = {k: [] for k in run}
    for f in run.values():
        f(feed)     # plan build / warm-up
    for _ in range(max(1, rounds // block)):
        for k, f in run.items():
            for _ in range(block):
                c = time.thread_time()
                t = time.perf_counter()
                f(feed)
                times[k].append(time.perf_counter() - t)
                ctimes[k].append(time.thread_time() - c)
    if cpu is not None:
        cpu.update({k: float(np.median(v)) for k, v in ctimes.items()})
    return {k: float(np.median(v)) for k, v in times.items()}


def summary(models=U.MODELS, forms=FORMS, rounds=20, cache=None):
    shared, res = _shared("benchmark"), {}
    if shared is None:
        return res
    with tempfile.TemporaryDirectory() as tmp:
        d = cache or tmp
        try:
            from edgedl._cy.quant import int8_gemm_isa
            gemm = int8_gemm_isa()
        except ImportError:             # no Cython build: the numba / NumPy kernels
            gemm = "n/a"
        print(f"int8 kernels: EDGEDL_INT8_ISA={os.environ.get('EDGEDL_INT8_ISA', '(auto)')}, "
              f"GEMM on {gemm}")
        print(f"{'model':18} {'form':16} {'':4} {'edgedl int8':>11} {'ort int8':>9} "
              f"{'edgedl f32':>10} {'ort f32':>8} {'int8/ort8':>9} {'f32/int8':>8}   "
              "(ms per run, medians, 1 thread; wall and the thread's CPU time)")
        for m in models:
            for form in forms:
                run, feed = runners(shared, m, form, d)
                cpu = {}
                t = paired(run, feed, rounds, cpu=cpu)
                res[(m, form)] = t
                for what, v in (("wall", t), ("cpu", cpu)):
                    print(f"{m:18} {form:16} {what:4} {v['edgedl int8'] * 1e3:11.2f} "
                          f"{v['ort int8'] * 1e3:9.2f} {v['edgedl f32'] * 1e3:10.2f} "
                          f"{v['ort f32'] * 1e3:8.2f} {v['edgedl int8'] / v['ort int8']:9.2f} "
                          f"{v['edgedl f32'] / v['edgedl int8']:8.2f}", flush=True)
    return res


_RSS_CHILD = """
import sys, numpy as np, edgedl
def hwm():
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM"))
path, feed = sys.argv[1], np.load(sys.argv[2])
base = hwm()
s = edgedl.InferenceSession(path, backend="cython", num_threads=1)
name = s.get_inputs()[0].name
for _ in range(5):
    s.run(None, {name: feed})
print(base, hwm())
"""


def rss(models=U.MODELS, forms=("qdq_per_channel",), cache=None):
    """Peak RSS (MB) of a session per model: float32 and each int8 form, one fresh process
    each (VmHWM after imports, and after loading and running)."""
    import subprocess
    shared, res = _shared("measure"), {}
    if shared is None:
        return res
    with tempfile.TemporaryDirectory() as tmp:
        d = cache or tmp
        print(f"{'model':18} {'form':16} {'imports MB':>10} {'peak MB':>8} {'session MB':>10}"
              "   (VmHWM; session = peak - imports)")
        for m in models:
            feed = os.path.join(tmp, f"{m}.npy")
            np.save(feed, U.feed(shared, m, "grace_hopper.jpg"))
            paths = {"float32": pathlib.Path(shared) / "models" / f"{m}.onnx"}
            paths.update({f: U.quantized(shared, m, f, d) for f in forms})
            for form, path in paths.items():
                out = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path), feed],
                                     capture_output=True, text=True, check=True).stdout
                base, peak = (int(v) / 1024 for v in out.split())
                res[(m, form)] = (base, peak)
                print(f"{m:18} {form:16} {base:10.1f} {peak:8.1f} {peak - base:10.1f}",
                      flush=True)
    return res


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("model", U.MODELS)
def test_int8_latency(benchmark, model, form, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    shared = _shared()
    if shared is None:
        pytest.skip("../shared is missing")
    run, feed = runners(shared, model, form, tmp_path_factory.mktemp("int8"))
    t = paired(run, feed, rounds=10)
    benchmark.extra_info.update({k: v * 1e3 for k, v in t.items()})
    benchmark.pedantic(run["edgedl int8"], args=(feed,), rounds=10, warmup_rounds=1)
    print(f"\n{model} {form}: int8/ort-int8 {t['edgedl int8'] / t['ort int8']:.2f}, "
          f"f32/int8 {t['edgedl f32'] / t['edgedl int8']:.2f}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    forms, cache = FORMS, None
    for a in sys.argv[1:]:
        if a.startswith("--forms="):
            forms = tuple(a.split("=", 1)[1].split(","))
        elif a.startswith("--isa="):
            os.environ["EDGEDL_INT8_ISA"] = a.split("=", 1)[1]
        elif a.startswith("--cache="):
            cache = a.split("=", 1)[1]
            os.makedirs(cache, exist_ok=True)
    if "--rss" in sys.argv[1:]:
        rss(tuple(args) or U.MODELS, forms if any(a.startswith("--forms=") for a in sys.argv)
            else ("qdq_per_channel",), cache=cache)
    else:
        summary(tuple(args) or U.MODELS, forms, cache=cache)
