"""Start-up costs a user pays before the first result, each measured in a fresh process.

- `import edgedl` alone;
- first call of a kernel on the numba backend with an EMPTY cache (JIT compile), per kernel;
- the same first call with a WARM cache (numba import + cache load);
- first call on the Cython backend.

Run: pytest benchmarks/bench_startup.py --benchmark-only -s
Each round is a new Python process; the timings are read inside the process (perf_counter),
so interpreter start-up is not counted. Targets (issue 2): import < 0.3 s; warm first call
< 0.8 s including numba's import; Cython first call < 10 ms.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import edgedl

# (family, kernel, call) — a tiny float32 call of each kernel.
KERNELS = [
    ("activations", "sigmoid", "k(np.ones((1, 8, 4, 4), np.float32))"),
    ("activations", "hard_swish", "k(np.ones((1, 8, 4, 4), np.float32))"),
    ("activations", "softmax", "k(np.ones((1, 8, 4, 4), np.float32))"),
    ("pooling", "max_pool2d", "k(np.ones((1, 8, 9, 9), np.float32), (3, 3), (2, 2), (1, 1, 1, 1))"),
    ("boxes", "nms", "k(np.array([[0, 0, 1, 1], [0, 0, 1, 1.1]], np.float32), "
                     "np.array([0.9, 0.8], np.float32), 0.5)"),
    ("boxes", "box_iou", "k(np.array([[0, 0, 1, 1]], np.float32), "
                         "np.array([[0, 0, 1, 1.1]], np.float32))"),
]

CHILD = """
import time, json, sys
t0 = time.perf_counter()
import edgedl
t1 = time.perf_counter()
import numpy as np
import importlib
k = getattr(importlib.import_module('edgedl.kernels.{family}'), '{name}')
k = __import__('functools').partial(k, backend='{backend}')
t2 = time.perf_counter()
{call}
t3 = time.perf_counter()
{call}
t4 = time.perf_counter()
print(json.dumps(dict(import_s=t1 - t0, first_call_s=t3 - t2, second_call_s=t4 - t3)))
"""

RESULTS = []


@pytest.fixture(autouse=True, scope="module")
def _bytecode():
    """Compile edgedl's modules to __pycache__ first, as pip does when it installs the wheel.

    An editable install under PYTHONDONTWRITEBYTECODE=1 (some CI images set it) would otherwise
    recompile every imported module from source in every child process: 20-40 ms that no
    installed user pays, while onnxruntime's wheel comes with its bytecode."""
    import compileall
    compileall.compile_dir(os.path.dirname(edgedl.__file__), quiet=2)


def _child(family, name, call, backend, cache_dir):
    code = textwrap.dedent(CHILD).format(family=family, name=name, call=call, backend=backend)
    env = dict(os.environ, EDGEDL_CACHE_DIR=cache_dir, EDGEDL_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def _available(family, name):
    try:
        mod = __import__(f"edgedl.kernels.{family}", fromlist=[name])
    except ImportError:
        return False
    return hasattr(mod, name)


def test_import_time(benchmark):
    def once():
        r = subprocess.run([sys.executable, "-c",
                            "import time; t=time.perf_counter(); import edgedl; "
                            "print(time.perf_counter()-t)"], capture_output=True, text=True)
        return float(r.stdout)
    times = benchmark.pedantic(lambda: [once() for _ in range(5)], rounds=1, iterations=1)
    med = sorted(times)[len(times) // 2]
    benchmark.extra_info["import_s_median"] = med
    RESULTS.append(("import edgedl", "-", med, None))
    print(f"\nimport edgedl: median {med * 1e3:.0f} ms over 5 processes")


@pytest.mark.parametrize("family,name,call", KERNELS, ids=[k[1] for k in KERNELS])
def test_numba_first_call(benchmark, family, name, call):
    if "numba" not in edgedl.backends():
        pytest.skip("numba backend unavailable")
    if not _available(family, name):
        pytest.skip(f"{family}.{name} not built yet")
    with tempfile.TemporaryDirectory() as d:
        cold = benchmark.pedantic(_child, args=(family, name, call, "numba", d), rounds=1,
                                  iterations=1)
        warm = _child(family, name, call, "numba", d)
    benchmark.extra_info.update(cold_first_call_s=cold["first_call_s"],
                                warm_first_call_s=warm["first_call_s"])
    RESULTS.append((name, "numba", cold["first_call_s"], warm["first_call_s"]))
    print(f"\n{name} numba: empty cache {cold['first_call_s']:.2f} s, warm cache "
          f"{warm['first_call_s']:.3f} s (incl. numba import), steady {warm['second_call_s'] * 1e6:.0f} us")


@pytest.mark.parametrize("family,name,call", KERNELS, ids=[k[1] for k in KERNELS])
def test_cython_first_call(benchmark, family, name, call):
    if "cython" not in edgedl.backends():
        pytest.skip("cython backend unavailable")
    if not _available(family, name):
        pytest.skip(f"{family}.{name} not built yet")
    with tempfile.TemporaryDirectory() as d:
        r = benchmark.pedantic(_child, args=(family, name, call, "cython", d), rounds=1,
                               iterations=1)
    RESULTS.append((name, "cython", r["first_call_s"], None))
    print(f"\n{name} cython: first call {r['first_call_s'] * 1e3:.2f} ms")


def _shuffled_chain(n):
    import random
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Neg" if k % 2 else "Relu", [f"t{k}"], [f"t{k + 1}"])
             for k in range(n)]
    random.Random(15).shuffle(nodes)       # listed out of topological order
    vi = [helper.make_tensor_value_info(f"t{k}", TensorProto.FLOAT, [4]) for k in (0, n)]
    g = helper.make_graph(nodes, "chain", vi[:1], vi[1:])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.mark.parametrize("n", [2000, 8000])
def test_load_shuffled_chain(benchmark, n):
    """Session creation for an n-node chain listed in random order (issue 15: the sort was
    quadratic, 8000 nodes 24 s; onnxruntime 2 s). Linear now: ~0.2 s for 8000 nodes."""
    pytest.importorskip("onnx")
    data = _shuffled_chain(n)
    benchmark.pedantic(edgedl.InferenceSession, args=(data,), rounds=3, iterations=1)
    RESULTS.append((f"load chain {n}", "-", benchmark.stats.stats.median, None))
    try:
        import onnxruntime as ort
    except ImportError:
        return
    t = time.perf_counter()
    ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    RESULTS.append((f"  onnxruntime {n}", "-", time.perf_counter() - t, None))


def test_zz_summary():
    if not RESULTS:
        pytest.skip("nothing measured")
    print("\n\nstart-up (fresh processes)")
    print(f"{'what':16s} {'backend':8s} {'first call':>14s} {'warm cache':>12s}")
    for what, be, first, warm in RESULTS:
        w = f"{warm:10.3f} s" if warm is not None else ""
        print(f"{what:16s} {be:8s} {first:12.3f} s {w:>12s}")


# ----------------------------------------------------------------------------- ONNX reader
# Issue 17 point 3: edgedl's own protobuf reader (edgedl/onnx/proto.py) vs the onnx package.
# Each child imports one reader and reads one model (parse + every initializer to NumPy).
# The reader is loaded from its file: edgedl/onnx/__init__.py imports onnx until the loader
# is switched over to it, which would count onnx's import against it.
READER_IMPORT = {
    "edgedl": "import importlib.util, sys\n"
              "spec = importlib.util.spec_from_file_location('edgedl.onnx.proto', {file!r})\n"
              "P = importlib.util.module_from_spec(spec); sys.modules[spec.name] = P\n"
              "spec.loader.exec_module(P)",
    "onnx": "import onnx\nfrom onnx import numpy_helper",
}
READER_READ = {
    "edgedl": "m = P.load_model({path!r})\narrs = [P.to_array(t) for t in m.graph.initializer]",
    "onnx": "m = onnx.load({path!r})\n"
            "arrs = [numpy_helper.to_array(t) for t in m.graph.initializer]",
}
READER_CHILD = """
import json, time
t0 = time.perf_counter()
{imp}
t1 = time.perf_counter()
{read}
t2 = time.perf_counter()
{read}
t3 = time.perf_counter()
assert len(arrs) > 50 and 'onnx' not in __import__('sys').modules or {reader!r} == 'onnx'
print(json.dumps(dict(import_s=t1 - t0, read_s=t2 - t1, again_s=t3 - t2)))
"""
READERS = []
READER_MODELS = ["fastestdet", "yunet_n_320", "ultraface_rfb320", "yolox_nano"]


def _reader_child(reader, path):
    import edgedl.onnx.proto as _p  # noqa: F401  (only its file name: the child loads it)
    code = textwrap.dedent(READER_CHILD).format(
        imp=READER_IMPORT[reader].format(file=_p.__file__), read=READER_READ[reader].format(
            path=str(path)), reader=reader)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", READER_MODELS)
def test_onnx_reader(benchmark, model):
    """Import + first read in fresh processes (median of 5 each), edgedl's reader vs onnx."""
    from bench_models import _shared
    if _shared() is None:
        pytest.skip("../shared/models not found")
    pytest.importorskip("onnx")
    path = _shared() / "models" / f"{model}.onnx"

    def both():
        return {rd: [_reader_child(rd, path) for _ in range(5)] for rd in ("edgedl", "onnx")}
    runs = benchmark.pedantic(both, rounds=1, iterations=1)
    med = {rd: {k: sorted(r[k] for r in rs)[2] for k in rs[0]} for rd, rs in runs.items()}
    benchmark.extra_info.update({f"{rd}_{k}": v for rd, m in med.items() for k, v in m.items()})
    READERS.append((model, med))
    e, o = med["edgedl"], med["onnx"]
    print(f"\n{model}: import {e['import_s'] * 1e3:.0f} ms (onnx {o['import_s'] * 1e3:.0f}), "
          f"read {e['read_s'] * 1e3:.1f} ms (onnx {o['read_s'] * 1e3:.1f}), again "
          f"{e['again_s'] * 1e3:.1f} ms (onnx {o['again_s'] * 1e3:.1f})")


def test_zz_reader_summary():
    if not READERS:
        pytest.skip("nothing measured")
    print("\n\nONNX reader: fresh processes, medians of 5 (read = parse + every initializer "
          "to NumPy; again = a second read in the same process)")
    print(f"{'model':18s} {'reader':7s} {'import':>9s} {'read':>9s} {'again':>9s} "
          f"{'import+read':>12s}")
    for model, med in READERS:
        for rd, m in med.items():
            print(f"{model:18s} {rd:7s} {m['import_s'] * 1e3:7.0f}ms {m['read_s'] * 1e3:7.1f}ms "
                  f"{m['again_s'] * 1e3:7.1f}ms {(m['import_s'] + m['read_s']) * 1e3:10.0f}ms")


# Issue 17 point 3's target: import + InferenceSession(FastestDet) + the first run, in a fresh
# process, edgedl vs onnxruntime (medians of 5); edgedl must not be slower. Also how many of
# those seconds are `import onnx` (0 once the loader no longer needs it).
SEQUENCE_CHILD = {
    "edgedl": "import edgedl\ns = edgedl.InferenceSession({path!r})",
    "onnxruntime": "import onnxruntime as ort\n"
                   "s = ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])",
}
SEQUENCE = """
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import numpy as np
{make}
x = np.zeros([d if isinstance(d, int) else 1 for d in s.get_inputs()[0].shape], np.float32)
s.run(None, {{s.get_inputs()[0].name: x}})
t1, c1 = time.perf_counter(), time.process_time()
print(json.dumps(dict(total_s=t1 - t0, cpu_s=c1 - c0, onnx_imported='onnx' in sys.modules)))
"""
#: fresh processes per runtime, edgedl and onnxruntime alternating (a shared box drifts)
SEQUENCE_ROUNDS = int(os.environ.get("EDGEDL_STARTUP_ROUNDS", "9"))


def test_first_inference_sequence(benchmark):
    from bench_models import _shared
    if _shared() is None:
        pytest.skip("../shared/models not found")
    path = str(_shared() / "models" / "fastestdet.onnx")
    have_ort = __import__("importlib").util.find_spec("onnxruntime") is not None
    runtimes = ["edgedl"] + (["onnxruntime"] if have_ort else [])

    def child(rt):
        code = textwrap.dedent(SEQUENCE).format(make=SEQUENCE_CHILD[rt].format(path=path))
        env = dict(os.environ, EDGEDL_NUM_THREADS="1")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        return json.loads(r.stdout.strip().splitlines()[-1])
    def alternating():
        runs = {rt: [] for rt in runtimes}
        for _ in range(SEQUENCE_ROUNDS):
            for rt in runtimes:
                runs[rt].append(child(rt))
        return runs
    runs = benchmark.pedantic(alternating, rounds=1, iterations=1)
    med = {rt: statistics.median(r["total_s"] for r in rs) for rt, rs in runs.items()}
    cpu = {rt: statistics.median(r["cpu_s"] for r in rs) for rt, rs in runs.items()}
    benchmark.extra_info.update({f"{rt}_total_s": v for rt, v in med.items()})
    benchmark.extra_info.update({f"{rt}_cpu_s": v for rt, v in cpu.items()})
    for rt, v in med.items():
        RESULTS.append((f"fastestdet 1st run", rt[:8], v, None))
    ratio = (f"; edgedl/onnxruntime {med['edgedl'] / med['onnxruntime']:.2f}x wall, "
             f"{cpu['edgedl'] / cpu['onnxruntime']:.2f}x CPU" if len(med) > 1 else "")
    print(f"\nimport + InferenceSession(fastestdet) + first run, median of {SEQUENCE_ROUNDS} "
          "alternating processes: " +
          ", ".join(f"{rt} {v:.3f} s (CPU {cpu[rt]:.3f} s)" for rt, v in med.items()) + ratio +
          f" (edgedl imported onnx: {runs['edgedl'][0]['onnx_imported']})")
