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
from edgedl.errors import BackendError


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
    r = _run("import edgedl; edgedl.get_num_threads()", env={"EDGEDL_NUM_THREADS": "zero"})
    assert r.returncode != 0 and "EDGEDL_NUM_THREADS must be a positive integer" in r.stderr


def test_set_num_threads():
    before = edgedl.get_num_threads()
    try:
        edgedl.set_num_threads(1)
        assert edgedl.get_num_threads() == 1
        for bad in (0, -2, 1.5, "2", True):
            with pytest.raises(BackendError):
                edgedl.set_num_threads(bad)
    finally:
        edgedl.set_num_threads(before)


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
    """import edgedl sets a short OpenMP spin (GOMP_SPINCOUNT=10000) before any compiled
    kernel loads, unless the user chose a wait policy or spin count (theirs is kept)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(user)
    code = ("import os, edgedl; print(os.environ.get('OMP_WAIT_POLICY'), "
            "os.environ.get('GOMP_SPINCOUNT'))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    want = {(): "None 10000", ("OMP_WAIT_POLICY",): "ACTIVE None",
            ("GOMP_SPINCOUNT",): "None 77"}[tuple(user)]
    assert r.stdout.split("\n")[0] == want
