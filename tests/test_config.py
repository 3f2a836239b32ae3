"""Backend selection, threads, show_config, numba policy (cache dir, thread-safe layer)."""
import io
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import edgedl
from edgedl import _config
from edgedl.errors import BackendError, ValidationError


def _run(code, env=None, timeout=300):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, env=e, timeout=timeout)
    return r


def test_backends_listed_fastest_first():
    b = edgedl.backends()
    assert b[-1] == "numpy"
    assert b == [n for n in _config.BACKEND_ORDER if n in b]
    for name in _config.BACKEND_ORDER:
        assert (name in b) == (_config.why_unavailable(name) is None)


def test_set_and_use_backend():
    before = edgedl.get_backend()
    try:
        edgedl.set_backend("numpy")
        assert edgedl.get_backend() == "numpy"
        for name in edgedl.backends():
            with edgedl.use_backend(name):
                assert edgedl.get_backend() == name
            assert edgedl.get_backend() == "numpy"
    finally:
        edgedl.set_backend(before)


def test_use_backend_is_per_thread():
    seen = {}
    inside = threading.Event()
    done = threading.Event()

    def other():
        inside.wait(5)
        seen["other"] = edgedl.get_backend()
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with edgedl.use_backend("numpy"):
        inside.set()
        done.wait(5)
        seen["main"] = edgedl.get_backend()
    t.join()
    assert seen["main"] == "numpy"
    assert seen["other"] == edgedl.get_backend()


def test_unknown_or_missing_backend_is_a_clear_error():
    with pytest.raises(BackendError, match="unknown backend 'cuda'"):
        edgedl.set_backend("cuda")
    with pytest.raises(BackendError, match="unknown backend"):
        with edgedl.use_backend("tpu"):
            pass


def test_env_backend_and_threads():
    r = _run("""
        import edgedl
        print(edgedl.get_backend(), edgedl.get_num_threads())
    """, env={"EDGEDL_BACKEND": "numpy", "EDGEDL_NUM_THREADS": "3"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["numpy", "3"]


def test_bad_env_threads_is_a_clear_error():
    for bad in ("zero", "0", "-3", "1.5", "1000000"):
        r = _run("import edgedl; edgedl.get_num_threads()", env={"EDGEDL_NUM_THREADS": bad})
        assert r.returncode == 1, (bad, r.returncode, r.stderr[-500:])
        assert "ValidationError: EDGEDL_NUM_THREADS must be an integer from 1 to " in r.stderr
        assert bad in r.stderr.splitlines()[-1]


def test_set_num_threads():
    before = edgedl.get_num_threads()
    try:
        edgedl.set_num_threads(1)
        assert edgedl.get_num_threads() == 1
        edgedl.set_num_threads(np.int64(2))          # any integer type
        assert edgedl.get_num_threads() == 2 and type(edgedl.get_num_threads()) is int
        edgedl.set_num_threads(_config.MAX_THREADS)
        for bad in (0, -2, 1.5, "2", True, None, _config.MAX_THREADS + 1, 10**6, 2**63):
            with pytest.raises(ValidationError, match=r"num_threads must be an integer from "
                                                      rf"1 to {_config.MAX_THREADS}"):
                edgedl.set_num_threads(bad)
        assert edgedl.get_num_threads() == _config.MAX_THREADS     # unchanged by a refusal
    finally:
        edgedl.set_num_threads(before)
    assert _config.MAX_THREADS >= max(64, 4 * os.cpu_count())


@pytest.mark.parametrize("how", ["set_num_threads", "env", "session"])
def test_huge_thread_count_is_refused_before_openmp(how):
    """10^6 threads crashed the process (SIGSEGV in libgomp's GOMP_parallel, which puts
    per-thread start data on the stack); now refused in _config before any kernel sees it."""
    require_cython = _config.why_unavailable("cython")
    if require_cython:
        pytest.skip(require_cython)
    if how == "session":
        pytest.importorskip("onnx", reason="the test builds its model with the onnx package")
    r = _run(f"""
        import numpy as np, edgedl
        from edgedl.errors import ValidationError
        how = {how!r}
        try:
            if how == "set_num_threads":
                edgedl.set_num_threads(1_000_000)
            elif how == "session":
                from onnx import helper, TensorProto, numpy_helper
                x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 80, 80])
                y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 80, 80])
                w = numpy_helper.from_array(np.ones((32, 32, 3, 3), np.float32), "w")
                g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"],
                                                        pads=[1, 1, 1, 1])], "g", [x], [y], [w])
                s = edgedl.InferenceSession(helper.make_model(g).SerializeToString(),
                                            backend="cython", num_threads=1_000_000)
                s.run(None, dict(x=np.ones((1, 32, 80, 80), np.float32)))
            x = np.ones((1, 32, 80, 80), np.float32)
            w = np.ones((32, 32, 3, 3), np.float32)
            edgedl.conv2d(x, w, None, (1, 1), (1, 1, 1, 1), backend="cython")
            print("ran")
        except ValidationError as e:
            print("refused:", e)
    """, env={"EDGEDL_NUM_THREADS": "1000000"} if how == "env" else {})
    assert r.returncode == 0, f"process died ({r.returncode}): {r.stderr[-1000:]}"
    what = {"set_num_threads": "num_threads", "env": "EDGEDL_NUM_THREADS",
            "session": "num_threads"}[how]
    assert r.stdout.startswith(f"refused: {what} must be an integer from 1 to "), r.stdout
    assert "got 1000000" in r.stdout


def test_use_num_threads_is_per_thread_and_restores():
    before = edgedl.get_num_threads()
    seen = {}
    inside = threading.Event()
    done = threading.Event()

    def other():
        inside.wait(5)
        seen["other"] = edgedl.get_num_threads()
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with _config.use_num_threads(before + 2):
        with _config.use_num_threads(None):           # None: no change
            assert edgedl.get_num_threads() == before + 2
        inside.set()
        done.wait(5)
        seen["main"] = edgedl.get_num_threads()
    t.join()
    assert seen == {"main": before + 2, "other": before}
    assert edgedl.get_num_threads() == before
    with pytest.raises(ValidationError, match="num_threads"):
        with _config.use_num_threads(0):
            pass


def test_show_config_says_what_is_there():
    buf = io.StringIO()
    edgedl.show_config(file=buf)
    text = buf.getvalue()
    for name in _config.BACKEND_ORDER:
        assert f"backend {name}" in text
    assert "threads:" in text and "numba cache dir:" in text


def test_import_is_light():
    # numba and onnx are imported lazily: `import edgedl` must not pull them in.
    r = _run("""
        import sys, edgedl
        print(sorted(m for m in ('numba', 'onnx', 'PIL', 'onnxruntime') if m in sys.modules))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_numba_absent_is_reported_not_an_error():
    r = _run("""
        import edgedl, io
        print(edgedl.backends())
        buf = io.StringIO(); edgedl.show_config(file=buf)
        print('MISSING' in buf.getvalue() and 'EDGEDL_DISABLE_NUMBA' in buf.getvalue())
        x = edgedl.relu(__import__('numpy').ones(3, 'float32'))
        print(float(x.sum()))
    """, env={"EDGEDL_DISABLE_NUMBA": "1"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert "numba" not in lines[0] and "numpy" in lines[0]
    assert lines[1] == "True" and lines[2] == "3.0"


def test_numba_cache_goes_to_edgedl_cache_dir(tmp_path):
    pytest.importorskip("numba")
    r = _run("""
        import numpy as np, edgedl
        edgedl.sigmoid(np.ones(5, np.float32), backend='numba')
        from edgedl import _config
        print(_config.numba_cache_location())
    """, env={"EDGEDL_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path)
    files = [f for _, _, fs in os.walk(tmp_path) for f in fs]
    assert any(f.endswith(".nbi") for f in files), files


def test_read_only_package_falls_back_to_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEDL_CACHE_DIR", raising=False)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_config, "_pkg_writable", lambda: False)
    assert _config.numba_cache_location() == str(tmp_path / "edgedl" / "numba")


def test_parallel_numba_from_many_threads_does_not_abort():
    """numba's workqueue layer aborts on concurrent parallel calls; edgedl must not."""
    pytest.importorskip("numba")
    r = _run("""
        import threading, numpy as np, edgedl
        from edgedl import _config
        from edgedl.kernels import _dispatch
        nb = _config.load_numba()

        @_config.njit(parallel=True, cache=False)
        def psum(x):
            s = 0.0
            for i in nb.prange(x.size):
                s += x[i]
            return s

        x = np.ones(200_000)
        errors = []
        def work():
            try:
                _config.apply_threads('numba')
                for _ in range(50):
                    assert psum(x) == x.size
                    edgedl.sigmoid(np.ones(1000, np.float32), backend='numba')
            except Exception as e:
                errors.append(repr(e))
        ts = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in ts]; [t.join() for t in ts]
        print('errors', errors, nb.threading_layer())
    """, env={"EDGEDL_NUM_THREADS": "2"})
    assert r.returncode == 0, f"process died ({r.returncode}): {r.stderr[-2000:]}"
    assert "errors []" in r.stdout, r.stdout


def test_kernels_concurrently_on_every_backend(backend):
    x = np.linspace(-5, 5, 100_000, dtype=np.float32)
    want = edgedl.sigmoid(x, backend="numpy")
    results, errors = [], []

    def work():
        try:
            for _ in range(20):
                results.append(edgedl.sigmoid(x, backend=backend))
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors
    assert len(results) == 80
    for r in results:
        np.testing.assert_allclose(r, want, rtol=1e-6, atol=1e-7)


def test_warmup_compiles_numba_kernels():
    pytest.importorskip("numba")
    times = edgedl.warmup("numba")
    assert "activations" in times
    assert edgedl.warmup("nonexistent") == {}


@pytest.mark.parametrize("user", [{}, {"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "77"}])
def test_openmp_wait_policy_default_and_user_setting(user):
    """import edgedl sets a short OpenMP spin (GOMP_SPINCOUNT=30000) before any compiled
    kernel loads, unless the user chose a wait policy or spin count (theirs is kept)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(user)
    code = ("import os, edgedl; print(os.environ.get('OMP_WAIT_POLICY'), "
            "os.environ.get('GOMP_SPINCOUNT'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    want = {(): "None 30000", ("OMP_WAIT_POLICY",): "ACTIVE None",
            ("GOMP_SPINCOUNT",): "None 77"}[tuple(user)]
    assert r.stdout.split("\n")[0] == want


# ----------------------------------------------------------------------------- sessions
def _conv_model(convs=3, c=16, hw=48):
    """A chain of 3x3 convs big enough that the conv GEMMs are split over threads."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(1)
    nodes, inits, prev = [], [], "x"
    for i in range(convs):
        w = (rng.standard_normal((c * 2 if i % 2 == 0 else c, c * 2 if i % 2 else c, 3, 3))
             * 0.1).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Sigmoid", [f"c{i}"], [f"y{i}"]))
        prev = f"y{i}"
    cout = c * 2 if convs % 2 else c
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])
    y = helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, cout, hw, hw])
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m.SerializeToString(), rng.standard_normal((1, c, hw, hw)).astype(np.float32)


def _seen_threads(sess):
    """Wrap ``sess._run`` to record, mid-run, the thread count of the running thread and of
    another thread started then."""
    seen = []
    run = sess._run

    def spy(*a):
        box = []
        t = threading.Thread(target=lambda: box.append(edgedl.get_num_threads()))
        t.start()
        t.join()
        seen.append((edgedl.get_num_threads(), box[0]))
        return run(*a)
    sess._run = spy
    return seen


def test_session_thread_count_is_its_own():
    model, x = _conv_model(convs=1, hw=8)
    before = edgedl.get_num_threads()
    # the count as asked, every run (the adaptive governor would try 1 thread on run 2)
    sess = edgedl.InferenceSession(model, num_threads=before + 2, adaptive_threads=False)
    seen = _seen_threads(sess)
    sess.run(None, {"x": x})
    with _config.use_num_threads(before + 1):        # the caller's own setting is kept
        sess.run(None, {"x": x})
        assert edgedl.get_num_threads() == before + 1
    # the run used the session's count; everyone else kept theirs during and after it
    assert seen == [(before + 2, before)] * 2
    assert edgedl.get_num_threads() == before
    for bad in (0, -1, 10**6, 2.0):
        with pytest.raises(ValidationError, match=r"^num_threads must be an integer from 1"):
            edgedl.InferenceSession(model, num_threads=bad)


def test_session_honours_sess_options_intra_op_num_threads():
    import types
    model, x = _conv_model(convs=1, hw=8)
    before = edgedl.get_num_threads()
    opts = [types.SimpleNamespace(intra_op_num_threads=before + 3)]
    try:
        import onnxruntime as ort           # the real options object, when the oracle is here
        o = ort.SessionOptions()
        o.intra_op_num_threads = before + 3
        opts.append(o)
    except ImportError:
        pass
    for o in opts:
        sess = edgedl.InferenceSession(model, sess_options=o)
        seen = _seen_threads(sess)
        sess.run(None, {"x": x})
        assert seen == [(before + 3, before)]
    # num_threads wins over the options; 0 (onnxruntime's "default") keeps edgedl's setting
    for kw, want in (({"num_threads": before + 1}, before + 1), ({}, before)):
        o = types.SimpleNamespace(intra_op_num_threads=0 if not kw else before + 3)
        sess = edgedl.InferenceSession(model, sess_options=o, **kw)
        seen = _seen_threads(sess)
        sess.run(None, {"x": x})
        assert seen == [(want, before)]
    with pytest.raises(ValidationError, match="sess_options.intra_op_num_threads must be an "
                                              "integer from 1"):
        edgedl.InferenceSession(model, sess_options=types.SimpleNamespace(
            intra_op_num_threads=-1))


def test_shared_session_is_deterministic_across_threads(backend):
    """Same input, same bits: 4 Python threads running one 2-thread session vs serial runs.
    (numba / numpy differed in the last bits: the conv GEMMs' chunk edges moved with the
    scheduling, and OpenBLAS rounds differently for different chunk widths.)"""
    model, x = _conv_model()
    sess = edgedl.InferenceSession(model, backend=backend, num_threads=2)
    want = sess.run(None, {"x": x})[0]
    got, errors = [], []

    def work():
        try:
            for _ in range(3):
                got.append(sess.run(None, {"x": x})[0])
        except Exception as e:    # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    got += [sess.run(None, {"x": x})[0] for _ in range(3)]
    assert not errors and len(got) == 15
    assert all(np.array_equal(g, want) for g in got), \
        [float(np.abs(g - want).max()) for g in got]


@pytest.mark.parametrize("shape", [(32, 288, 6400), (96, 27, 4096), (2048, 64, 40)])
def test_gemm_split_same_bits_whoever_computes_it(shape, monkeypatch):
    """The two extreme schedules of a 2-thread GEMM give the same bits: the caller alone (no
    helper ever comes) and a helper that takes every chunk before the caller starts; so do
    1 and 3 threads."""
    from edgedl.kernels import _gemm
    m, k, n = shape
    rng = np.random.default_rng(3)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    outs = []

    def helper_first(job, helpers):
        t = threading.Thread(target=job.run)
        t.start()
        t.join()
    for submit in (lambda job, helpers: None, helper_first):
        monkeypatch.setattr(_gemm._pool, "submit", submit)
        out = np.empty((m, n), np.float32)
        _gemm.matmul_into(a, b, out, threads=2)
        outs.append(out)
    # and the thread count changes nothing either (a session's governor switches 1 <-> n)
    for threads in (1, 3):
        out = np.empty((m, n), np.float32)
        _gemm.matmul_into(a, b, out, threads=threads)
        outs.append(out)
    np.testing.assert_allclose(outs[0], a @ b, rtol=1e-4, atol=1e-4)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
