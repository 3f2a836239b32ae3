"""The cheap part of the sanitizer run (issue 15 point 6); the full run is tools/sanitize.sh.

- test_conv_pool_under_asan: the conv extension built with AddressSanitizer + UBSan (setup.py's
  EDGEDL_CY_SANITIZE=1) into a temp folder, then hostile conv / pool calls (huge pads and
  dilations, strides past the input, taps wholly in the padding) in a subprocess with libasan
  preloaded, each compared with the NumPy reference: no sanitizer report, same answers. (Only
  conv is instrumented here; the pool calls are checked against the reference only. Every
  module is instrumented in tools/sanitize.sh, which runs these cases too.)
- test_conv_pool_numba_boundscheck: the same calls on numba with NUMBA_BOUNDSCHECK=1 and a fresh
  cache (numba's cache key ignores the flag: an old cache would run unchecked code).

Cost (2-core x86): the ASan build ~21 s once per change of conv.pyx, the shared .pxd/.h or
setup.py (cached in ~/.cache/edgedl/asan/), the numba run 3-8 s (its slow pooling /
direct-depthwise compiles are left to tools/sanitize.sh): 25 s fresh, ~5 s cached. Skipped without gcc + libasan + Cython, off Linux and under ARM
emulation; EDGEDL_SANITIZE=0 skips all, EDGEDL_SANITIZE=1 runs every case on numba too and
makes a missing toolchain a failure instead of a skip.

This file is also the subprocess: ``python test_sanitize.py`` runs the hostile cases.
"""
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ARM_EMULATED, require_backend

REPO = pathlib.Path(__file__).resolve().parents[1]
_ENV = os.environ.get("EDGEDL_SANITIZE", "")


# numba compiles these kernels for tens of seconds with bounds checks (pooling, the direct
# depthwise path): the default suite's numba run leaves them to tools/sanitize.sh.
_SLOW_ON_NUMBA = ("depthwise strides", "max_pool", "avg_pool")


def _hostile_cases():
    """(name, kernel, args, kwargs): geometry an untrusted model can ask for."""
    rng = np.random.default_rng(15)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)
    x, w = f32(1, 2, 5, 5), f32(3, 2, 3, 3)
    xd, wd = f32(1, 4, 6, 6), f32(4, 1, 3, 3)
    big = dict(pads=(0, 3000, 0, 3000), dilations=(1, 3000))
    return [
        # issue 15's heap overflow: taps wholly in a huge padding (im2col's zero-fill range)
        ("conv wide pads+dilation", "conv2d", (x, w), big),
        ("conv tall pads+dilation", "conv2d", (x, w),
         dict(pads=(3000, 0, 3000, 0), dilations=(3000, 1))),
        ("conv both, float64", "conv2d", (x.astype(np.float64), w.astype(np.float64)),
         dict(pads=(3000, 3000, 3000, 3000), dilations=(3000, 3000))),
        ("conv 1x1 kernel in padding", "conv2d", (x, f32(3, 2, 1, 1)),
         dict(pads=(7, 7, 7, 7))),
        ("conv strides past the input", "conv2d", (x, w),
         dict(pads=(1, 1, 1, 1), strides=(1000, 1000))),
        ("conv stride + dilation + pads", "conv2d", (x, w),
         dict(pads=(0, 2999, 1, 2999), strides=(2, 7), dilations=(1, 3000))),
        ("depthwise wide pads+dilation", "conv2d", (xd, wd), dict(group=4, **big)),
        ("depthwise strides past the input", "conv2d", (xd, wd),
         dict(group=4, pads=(2, 2, 2, 2), strides=(999, 999))),
        ("grouped conv + bias + relu", "conv2d", (xd, f32(4, 2, 3, 3), f32(4)),
         dict(group=2, activation="relu", **big)),
        # the flat 3x3 'same' depthwise run (AVX-512): planes of one column, one row, a
        # width not a multiple of 16, the interior's shifted loads at the plane's ends
        ("depthwise 3x3 same, 1 column", "conv2d", (f32(1, 3, 9, 1), f32(3, 1, 3, 3), f32(3)),
         dict(group=3, pads=(1, 1, 1, 1), activation="silu")),
        ("depthwise 3x3 same, 1 row", "conv2d", (f32(1, 2, 1, 37), f32(2, 1, 3, 3)),
         dict(group=2, pads=(1, 1, 1, 1), activation="relu")),
        ("depthwise 3x3 same, 5 x 23", "conv2d", (f32(1, 2, 5, 23), f32(2, 1, 3, 3)),
         dict(group=2, pads=(1, 1, 1, 1))),
        ("depthwise 3x3 same, row bands", "conv2d", (f32(1, 16, 41, 40), f32(16, 1, 3, 3)),
         dict(group=16, pads=(1, 1, 1, 1))),
        ("depthwise 3x3 s2, row runs", "conv2d", (f32(1, 16, 83, 81), f32(16, 1, 3, 3)),
         dict(group=16, pads=(1, 1, 1, 1), strides=(2, 2))),
        ("depthwise 3x3 s2, 3 x 33", "conv2d", (f32(1, 2, 3, 33), f32(2, 1, 3, 3)),
         dict(group=2, pads=(1, 1, 1, 1), strides=(2, 2), activation="silu")),
        ("depthwise 3x3 s2, 1 column", "conv2d", (f32(1, 2, 5, 1), f32(2, 1, 3, 3)),
         dict(group=2, pads=(0, 1, 2, 1), strides=(1, 2))),
        ("conv_transpose large pads", "conv_transpose2d", (x, f32(2, 3, 3, 3)),
         dict(pads=(0, 2, 0, 2), dilations=(1, 3), strides=(1, 2))),
        ("max_pool large dilation", "max_pool2d", (f32(1, 2, 3, 3000),),
         dict(kernel_shape=(1, 2), pads=(0, 1, 0, 1), dilations=(1, 2999))),
        ("max_pool stride past the input", "max_pool2d", (x,),
         dict(kernel_shape=(3, 3), pads=(2, 2, 2, 2), strides=(1000, 1000), ceil_mode=True)),
        ("max_pool 3x3 s1 p1, 2 x 1 planes", "max_pool2d", (f32(1, 3, 2, 1),),
         dict(kernel_shape=(3, 3), pads=(1, 1, 1, 1))),
        ("avg_pool 3x3 s1 p1, 3 x 17 planes", "avg_pool2d", (f32(1, 3, 3, 17),),
         dict(kernel_shape=(3, 3), pads=(1, 1, 1, 1))),
        ("avg_pool pads, count_include_pad", "avg_pool2d", (x,),
         dict(kernel_shape=(5, 5), pads=(4, 4, 4, 4), strides=(3, 3), count_include_pad=True)),
        ("avg_pool large dilation, ceil", "avg_pool2d", (f32(1, 1, 4, 3001),),
         dict(kernel_shape=(1, 3), pads=(0, 2, 0, 2), dilations=(1, 1500), ceil_mode=True)),
    ]


def _cases(backend, everything):
    return [c for c in _hostile_cases()
            if everything or backend != "numba" or not c[0].startswith(_SLOW_ON_NUMBA)]


def _run_cases(backend, everything):
    """Each case on ``backend`` against the NumPy reference (same result or same exception
    type); prints one line per case, exits 1 on a disagreement. Called in the subprocess."""
    import edgedl
    bad = 0
    for name, kernel, args, kw in _cases(backend, everything):
        fn = getattr(edgedl, kernel)
        try:
            ref = fn(*args, backend="numpy", **kw)
        except Exception as e:   # the reference refuses: the backend must refuse alike
            ref = e
        try:
            got = fn(*args, backend=backend, **kw)
        except Exception as e:
            got = e
        what = lambda r: f"{type(r).__name__}: {r}" if isinstance(r, Exception) else \
            f"shape {r.shape}"
        if isinstance(ref, Exception) or isinstance(got, Exception):
            ok = type(ref) is type(got)
        else:
            tol = 1e-4 if ref.dtype == np.float32 else 1e-10
            ok = ref.shape == got.shape and np.allclose(got, ref, rtol=tol, atol=tol,
                                                         equal_nan=True)
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {backend} {name}: {what(got)}"
              + ("" if ok else f" (reference: {what(ref)})"), flush=True)
    return 1 if bad else 0


# ----------------------------------------------------------------------------- the tests
def _toolchain():
    """(cc, libasan path) or a reason it is missing."""
    if _ENV == "0":
        return "EDGEDL_SANITIZE=0"
    if not sys.platform.startswith("linux"):
        return "the sanitizer build is set up for Linux + gcc only"
    if ARM_EMULATED:
        return "too slow under ARM emulation (the build alone takes minutes)"
    cc = os.environ.get("CC", "gcc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler {cc!r}"
    try:
        lib = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True,
                             text=True).stdout.strip()
    except OSError as e:
        return f"{cc} does not run: {e}"
    if not os.path.isabs(lib) or not os.path.exists(lib):
        return f"{cc} has no AddressSanitizer runtime (libasan.so)"
    try:
        import Cython  # noqa: F401
    except ImportError:
        return "Cython is not installed"
    return cc, lib


def _need_toolchain():
    tc = _toolchain()
    if isinstance(tc, str):
        if _ENV not in ("", "0"):
            pytest.fail(f"EDGEDL_SANITIZE={_ENV} but the sanitizer build cannot run: {tc}")
        pytest.skip(tc)
    return tc


def _run_sub(env, backend):
    """This file as a subprocess running the cases on ``backend`` (all of them when
    EDGEDL_SANITIZE=1, else numba skips its slow compiles)."""
    # the edgedl this pytest imports (installed or editable): no source tree on PYTHONPATH,
    # which has no compiled modules after a plain `pip install .`
    env = {**os.environ, **env}
    env.pop("EDGEDL_BACKEND", None)
    # run as a script it needs its own folder on sys.path (for conftest), which conftest's
    # PYTHONSAFEPATH=1 would drop; the checkout itself is not on the path either way
    env.pop("PYTHONSAFEPATH", None)
    which = "all" if _ENV not in ("", "0") else "cheap"
    return subprocess.run([sys.executable, __file__, backend, which], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=900)


def _check(r, backend):
    out = r.stdout + r.stderr
    assert "AddressSanitizer" not in out and "runtime error:" not in out, out[-6000:]
    assert "index is out of bounds" not in out, out[-6000:]
    assert r.returncode == 0, out[-6000:]
    lines = [s for s in r.stdout.splitlines() if s.startswith(("ok ", "BAD"))]
    assert len(lines) == len(_cases(backend, _ENV not in ("", "0"))), out[-6000:]
    assert all(s.startswith("ok ") for s in lines), out


def _build_key(cc):
    """Hash of everything the instrumented conv module is built from (not the other .pyx)."""
    h = hashlib.sha256()
    src = sorted(p for p in (REPO / "src_cy").iterdir() if p.suffix in (".pxd", ".h", ".txt", ".py"))
    for p in [REPO / "setup.py", REPO / "src_cy" / "conv.pyx"] + src:
        h.update(p.name.encode() + p.read_bytes())
    import Cython
    ver = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    h.update(f"{sys.version}|{np.__version__}|{Cython.__version__}|{ver}".encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def asan_conv(tmp_path_factory):
    """(folder with edgedl._cy's conv module built with ASan + UBSan, libasan path).

    The build (~20 s of CPU) is kept in ~/.cache/edgedl/asan/<hash of its sources>, so it is
    paid once per change of src_cy/ or setup.py."""
    cc, lib = _need_toolchain()
    require_backend("cython")
    base = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
    cached = base / "edgedl" / "asan" / _build_key(cc)
    if not list(cached.glob("conv.*")):
        work = tmp_path_factory.mktemp("asan")
        shutil.copytree(REPO / "src_cy", work / "src_cy",
                        ignore=shutil.ignore_patterns("*.c", "*.so", "__pycache__"))
        shutil.copy(REPO / "setup.py", work / "setup.py")
        env = {**os.environ, "EDGEDL_CY_SANITIZE": "1", "EDGEDL_CY_ONLY": "conv", "CC": cc}
        r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext",
                            "--build-lib", "lib", "--build-temp", "tmp"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        folder = work / "lib" / "edgedl" / "_cy"
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}")
        try:   # publish whole or not at all: a concurrent run sees no half-written folder
            shutil.copytree(folder, tmp)
            os.replace(tmp, cached)
        except OSError:   # read-only home, or another run published first: use this build
            shutil.rmtree(tmp, ignore_errors=True)
            cached = folder
        else:             # keep only this build (~10 MB each)
            for old in cached.parent.iterdir():
                if old.name != cached.name and "." not in old.name:
                    shutil.rmtree(old, ignore_errors=True)
    built = list(cached.glob("conv.*"))
    assert built, f"no conv module in {cached}"
    assert b"__asan_report" in built[0].read_bytes(), f"{built[0]} is not instrumented"
    return str(cached), lib


def test_asan_is_live(asan_conv):
    """The preload reports a deliberate one-byte heap overflow (memset is intercepted), so
    the silence of the next test means something."""
    _, lib = asan_conv
    code = ("import ctypes, numpy as np; a = np.zeros(8, np.uint8); "
            "ctypes.memset(a.ctypes.data, 0, 9)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "LD_PRELOAD": lib,
                            "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1"})
    assert r.returncode != 0 and "heap-buffer-overflow" in r.stderr, r.stderr[-3000:]


def test_conv_pool_under_asan(asan_conv):
    folder, lib = asan_conv
    # detect_leaks=0: CPython's own allocations live until exit (noise, not bugs)
    r = _run_sub({"LD_PRELOAD": lib, "EDGEDL_ASAN_CONV": folder,
                  "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1",
                  "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}, "cython")
    assert f"conv from {folder}" in r.stdout, (r.stdout + r.stderr)[-6000:]
    _check(r, "cython")


def test_conv_pool_numba_boundscheck(tmp_path):
    if _ENV == "0" or ARM_EMULATED:
        pytest.skip("EDGEDL_SANITIZE=0" if _ENV == "0" else "compiles too slowly under emulation")
    require_backend("numba")
    cache = str(tmp_path / "numba-cache")    # fresh: the cache key ignores NUMBA_BOUNDSCHECK
    r = _run_sub({"NUMBA_BOUNDSCHECK": "1", "EDGEDL_CACHE_DIR": cache,
                  "NUMBA_CACHE_DIR": cache}, "numba")
    _check(r, "numba")


if __name__ == "__main__":
    # python test_sanitize.py BACKEND [all|cheap]
    backend, which = sys.argv[1], (sys.argv[2:] or ["all"])[0]
    folder = os.environ.get("EDGEDL_ASAN_CONV")
    if folder:
        # the instrumented conv module first, the checkout's other modules after it
        import edgedl._cy
        assert "edgedl._cy.conv" not in sys.modules
        edgedl._cy.__path__.insert(0, folder)
        import edgedl._cy.conv
        print(f"conv from {os.path.dirname(edgedl._cy.conv.__file__)}", flush=True)
    if backend == "numba" and os.environ.get("NUMBA_BOUNDSCHECK") == "1":
        from edgedl._config import load_numba
        assert load_numba().config.BOUNDSCHECK == 1, "NUMBA_BOUNDSCHECK is not on"
    sys.exit(_run_cases(backend, which == "all"))
