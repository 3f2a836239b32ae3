"""Backend selection, thread count, numba policy and cache directory.

Nothing here imports numba eagerly: ``import numba`` alone costs ~0.45 s, which a user on a
Raspberry Pi pays only when the numba backend is actually used.
"""
import contextlib
import contextvars
import importlib
import importlib.util
import numbers
import os
import sys
import threading

from .errors import BackendError, ValidationError

#: Backends, fastest first (the default is the first available one).
BACKEND_ORDER = ("cython", "numba", "numpy")

#: The one place numba's compile flags live. No ``nnan``/``ninf``: kernels must keep NaN
#: semantics (e.g. max-pool over a NaN), only reassociation/contractions are allowed.
NUMBA_FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

#: numba kernels with a parallel twin run it from this much work on (elements, or elements x
#: taps): numba's thread pool costs ~20 us per call on an idle machine and up to milliseconds
#: on a loaded one, far more than a small convolution takes. Warm-up sets it to 0 for a moment
#: to compile the parallel twins too.
NUMBA_PAR_WORK = 1 << 17

# How long idle OpenMP workers spin before they sleep. libgomp's default (300000 spins,
# ~ms) steals the cores the next kernel needs on a busy board: FastestDet at 2 threads on a
# loaded 2-core machine took 1076 ms with it, 67 ms with GOMP_SPINCOUNT=10000, 28 ms passive
# (12 ms at 1 thread). Passive waiting makes every parallel region wake its workers through
# the kernel, though, and a model runs ~100 short regions: at 2 threads on an idle 2-core
# machine the four shared detectors took 1.3-1.7x their 1-thread time passive, 0.72-0.81x
# with a 10000-spin wait (which covers the gap between two kernels). But after an idle
# spell (200 ms between bursts of runs, as a camera loop has) the 10000-spin workers fell
# asleep between regions on a 2-core Intel VM: YuNet at a fixed 2 threads took 3-21 ms a
# run (2.3 ms back to back), so the thread governor kept it on one thread; 30000 spins
# (~3 ms of a core after each run there) kept it at 2.2-4.3 ms, 2 threads paid in every
# bench_models run (2t/1t 0.70-0.83 against up to 1.04), and beside a busy neighbour
# bench_threads still gave 1.00-1.01. Threads are opt-in (default 1: no workers, no
# spinning), so the spin serves those who ask for them. libgomp reads this when it loads,
# i.e. before the first compiled kernel is imported; a user's own OMP_WAIT_POLICY /
# GOMP_SPINCOUNT wins.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "30000"

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_lock = threading.RLock()
_unavailable = {}          # backend -> reason it is missing
_available = None          # cached list
_global_backend = None     # set by set_backend / EDGEDL_BACKEND
_ctx_backend = contextvars.ContextVar("edgedl_backend", default=None)
_num_threads = None
_ctx_threads = contextvars.ContextVar("edgedl_num_threads", default=None)
_applied = threading.local()   # per-thread: thread count already applied to numba/OpenMP
_numba = None
numba_lock = None          # a lock around parallel numba calls when its layer is not thread-safe


# ----------------------------------------------------------------------------- backends
def _probe_cython():
    try:
        importlib.import_module("edgedl._cy._runtime")
        return None
    except ImportError as e:
        return f"compiled extensions not importable ({e}); build them with `pip install .`"


def _probe_numba():
    if os.environ.get("EDGEDL_DISABLE_NUMBA", "") not in ("", "0"):
        return "disabled by EDGEDL_DISABLE_NUMBA"
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed (pip install 'edgedl[numba]')"
    return None


def backends():
    """Available backends, best first. ``numpy`` is always there."""
    global _available
    if _available is None:
        with _lock:
            avail = []
            for name in BACKEND_ORDER:
                reason = {"cython": _probe_cython, "numba": _probe_numba,
                          "numpy": lambda: None}[name]()
                if reason is None:
                    avail.append(name)
                else:
                    _unavailable[name] = reason
            _available = avail
    return list(_available)


def why_unavailable(name):
    """The reason a backend is missing, or None if it is available."""
    backends()
    return _unavailable.get(name)


def _check_backend(name):
    if name not in BACKEND_ORDER:
        raise BackendError(f"unknown backend {name!r}; expected one of {', '.join(BACKEND_ORDER)}")
    if name not in backends():
        raise BackendError(f"backend {name!r} is not available: {_unavailable.get(name)}")
    return name


def _default_backend():
    env = os.environ.get("EDGEDL_BACKEND")
    if env:
        return _check_backend(env.strip().lower())
    return backends()[0]


def get_backend():
    """The backend kernels use when called with ``backend=None``."""
    name = _ctx_backend.get()
    if name is not None:
        return name
    global _global_backend
    if _global_backend is None:
        _global_backend = _default_backend()
    return _global_backend


def set_backend(name):
    """Set the process-wide default backend."""
    global _global_backend
    _global_backend = _check_backend(name)


@contextlib.contextmanager
def use_backend(name):
    """Use ``name`` inside the ``with`` block (per thread / per asyncio task)."""
    token = _ctx_backend.set(_check_backend(name))
    try:
        yield name
    finally:
        _ctx_backend.reset(token)


def resolve_backend(backend):
    """``backend`` argument of a kernel -> a concrete available backend name."""
    if backend is None:
        return get_backend()
    if backend in _available_set():
        return backend
    return _check_backend(backend)


def _available_set():
    return _available if _available is not None else backends()


# ----------------------------------------------------------------------------- threads
#: The most threads edgedl accepts. libgomp puts per-thread start data for a parallel region
#: on the calling thread's stack (alloca): ~10^5 threads overflow it and the process dies
#: with SIGSEGV inside GOMP_parallel, and thousands of threads exhaust memory long before.
#: No edge board gains from more threads than 4 per core.
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))


def check_num_threads(n, what="num_threads"):
    """``n`` as an int in [1, MAX_THREADS], else a ValidationError naming ``what`` (the
    argument, option or environment variable it came from) and the accepted range."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= MAX_THREADS:
        raise ValidationError(f"{what} must be an integer from 1 to {MAX_THREADS} (4 per core, "
                              f"at least 64), got {n!r}")
    return int(n)


def _env_threads():
    env = os.environ.get("EDGEDL_NUM_THREADS")
    if env:
        try:
            env = int(env)
        except ValueError:
            pass                     # reported as the text it is
        return check_num_threads(env, "EDGEDL_NUM_THREADS")
    # One thread by default: measured on the four shared detectors (2-core x86, idle machine),
    # 2 threads were 1.0-1.1x the 1-thread time with spinning OpenMP workers and 1.3-1.8x with
    # passive ones, and far slower when another process holds a core. Opt in with
    # set_num_threads / EDGEDL_NUM_THREADS for large single kernels, where it does pay.
    return 1


def get_num_threads():
    """Threads a kernel may use (numba prange / OpenMP): the innermost use_num_threads of
    this thread / task, else the process-wide setting."""
    n = _ctx_threads.get()
    if n is not None:
        return n
    global _num_threads
    if _num_threads is None:
        _num_threads = _env_threads()
    return _num_threads


def set_num_threads(n):
    """Set the process-wide number of threads kernels may use (1 to MAX_THREADS)."""
    global _num_threads
    _num_threads = check_num_threads(n)


@contextlib.contextmanager
def use_num_threads(n):
    """Use ``n`` threads inside the ``with`` block, in this thread / asyncio task only
    (None: no change). A session's ``num_threads`` applies this way to its own runs."""
    if n is None:
        yield get_num_threads()
        return
    token = _ctx_threads.set(check_num_threads(n))
    try:
        yield n
    finally:
        _ctx_threads.reset(token)


@contextlib.contextmanager
def kept_process_settings():
    """The process-wide backend and thread count as they were, again on leaving the block:
    ``edgedl.cli.main`` sets them for its command, and a caller that runs it in-process
    (tests, scripts) must not be left on that command's backend or threads."""
    global _global_backend, _num_threads
    saved = (_global_backend, _num_threads)
    try:
        yield
    finally:
        _global_backend, _num_threads = saved


def push_num_threads(n):
    """``use_num_threads`` without the context manager, for per-run hot paths (``n`` already
    checked): returns the token ``pop_num_threads`` takes (None when ``n`` is None)."""
    return None if n is None else _ctx_threads.set(n)


def pop_num_threads(token):
    if token is not None:
        _ctx_threads.reset(token)


def apply_threads(backend):
    """Make the calling thread's numba / OpenMP thread count match get_num_threads().

    Both numba's and OpenMP's counts are per calling thread, so this is checked per thread;
    it costs one attribute lookup when nothing changed.
    """
    n = get_num_threads()
    key = "n_" + backend
    if getattr(_applied, key, None) == n:
        return
    if backend == "numba":
        nb = load_numba()
        nb.set_num_threads(min(n, nb.config.NUMBA_NUM_THREADS))
        # numba's 'omp' layer starting up resets this thread's OpenMP count (shared with the
        # Cython kernels) to NUMBA_NUM_THREADS: re-apply it on the next Cython call
        _applied.__dict__.pop("n_cython", None)
    elif backend == "cython":
        importlib.import_module("edgedl._cy._runtime").set_num_threads(n)
    setattr(_applied, key, n)


# ----------------------------------------------------------------------------- caches
_l2 = None
_llc = None
_SYSFS_CACHE = "/sys/devices/system/cpu/cpu0/cache"


def l2_cache_bytes():
    """One core's L2 cache in bytes: EDGEDL_L2_BYTES if set, else Linux's sysfs (cpu0's
    level-2 data or unified cache), else 1 MiB (a Raspberry Pi 4's Cortex-A72 cluster).
    Kernels size their blocks by it."""
    global _l2
    if _l2 is None:
        _l2 = _env_bytes("EDGEDL_L2_BYTES") or _sysfs_cache(2) or 1 << 20
    return _l2


def last_level_cache_bytes():
    """The last-level cache in bytes (an L3 where there is one, a Pi 4's L2 cluster cache
    where not): EDGEDL_LLC_BYTES if set, else sysfs's largest level for cpu0, else
    l2_cache_bytes(). The planner fuses a chain to save a round trip through memory only
    where the value between its steps would not stay here: below it, the separate steps
    ran as fast or faster."""
    global _llc
    if _llc is None:
        _llc = _env_bytes("EDGEDL_LLC_BYTES") or _sysfs_cache(None) or l2_cache_bytes()
    return _llc


def _env_bytes(name):
    env = os.environ.get(name)
    return int(env) if env and env.isdigit() and int(env) > 0 else None


def _sysfs_cache(level):
    """cpu0's data or unified cache of this level in bytes (None: the highest level
    listed), or None where sysfs does not say."""
    base = _SYSFS_CACHE
    found = {}
    try:
        for d in sorted(os.listdir(base)):
            def read(f):
                with open(os.path.join(base, d, f)) as fh:
                    return fh.read().strip()
            if d.startswith("index") and read("type") in ("Data", "Unified"):
                size = read("size")
                mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:].upper(), 1)
                found[int(read("level"))] = int(size.rstrip("KkMm")) * mult
    except (OSError, ValueError):
        return None
    return found.get(level) if level is not None else found.get(max(found, default=0))


# ----------------------------------------------------------------------------- numba
def cache_dir():
    """Where edgedl keeps its numba cache when the package directory is not writable."""
    env = os.environ.get("EDGEDL_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgedl", "numba")


def _pkg_writable():
    d = os.path.join(_PKG_DIR, "kernels", "_numba", "__pycache__")
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK)


def numba_cache_location():
    """The directory numba's cache files go to for edgedl's kernels."""
    if os.environ.get("EDGEDL_CACHE_DIR") or os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ.get("EDGEDL_CACHE_DIR") or os.environ["NUMBA_CACHE_DIR"]
    if _pkg_writable():
        return os.path.join(_PKG_DIR, "kernels", "_numba", "__pycache__")
    return cache_dir()


def load_numba():
    """Import numba once, with edgedl's policy applied (cache dir, thread-safe layer)."""
    global _numba, numba_lock
    if _numba is not None:
        return _numba
    with _lock:
        if _numba is not None:
            return _numba
        reason = _probe_numba()
        if reason:
            raise BackendError(f"numba backend unavailable: {reason}")
        import numba
        explicit = os.environ.get("EDGEDL_CACHE_DIR")
        if explicit or (not os.environ.get("NUMBA_CACHE_DIR") and not _pkg_writable()):
            # read-only install (e.g. installed as root, run as a user): cache per user
            numba.config.CACHE_DIR = explicit or cache_dir()
        if not os.environ.get("NUMBA_THREADING_LAYER"):
            # numba's default 'workqueue' layer aborts the process when two Python threads
            # enter parallel kernels at once; prefer a thread-safe layer, else serialise.
            safe = False
            for mod in ("numba.np.ufunc.omppool", "numba.np.ufunc.tbbpool"):
                try:
                    importlib.import_module(mod)
                    safe = True
                    break
                except Exception:
                    pass
            if safe:
                numba.config.THREADING_LAYER = "threadsafe"
            else:
                numba.config.THREADING_LAYER = "workqueue"
                numba_lock = threading.Lock()
        elif os.environ["NUMBA_THREADING_LAYER"].lower() == "workqueue":
            numba_lock = threading.Lock()
        _numba = numba
        return numba


def njit(*args, parallel=False, **kwargs):
    """``numba.njit`` with edgedl's flags: cache=True, nogil, edgedl's fastmath set.

    Use it bare (``@njit``) or with options (``@njit(parallel=True)``). Importing the module
    that uses it imports numba but compiles nothing.
    """
    nb = load_numba()
    opts = dict(cache=True, nogil=True, fastmath=set(NUMBA_FASTMATH), error_model="numpy",
                parallel=parallel)
    opts.update(kwargs)
    if args and callable(args[0]):
        return nb.njit(**opts)(args[0])
    return nb.njit(*args, **opts)


# ----------------------------------------------------------------------------- reporting
def show_config(file=None):
    """Print versions, backends (and why one is missing), threads and the cache directory."""
    import platform
    import numpy as np
    out = file or sys.stdout
    from . import __version__
    p = lambda *a: print(*a, file=out)
    p(f"edgedl {__version__}  (python {platform.python_version()}, {platform.machine()}, "
      f"{platform.system()})")
    p(f"numpy {np.__version__}")
    for name in BACKEND_ORDER:
        reason = why_unavailable(name)
        if reason is None:
            extra = ""
            if name == "numba":
                try:
                    import numba
                    extra = f"numba {numba.__version__}"
                except Exception as e:   # pragma: no cover - broken install
                    extra = f"import failed: {e}"
            elif name == "cython":
                rt = importlib.import_module("edgedl._cy._runtime")
                extra = f"OpenMP {'on' if rt.openmp_enabled() else 'off'}"
            p(f"backend {name:7s} available   {extra}")
        else:
            p(f"backend {name:7s} MISSING     {reason}")
    p(f"current backend: {get_backend()}")
    p(f"threads: {get_num_threads()}")
    p(f"L2 cache: {l2_cache_bytes() >> 10} KiB per core, last level "
      f"{last_level_cache_bytes() >> 10} KiB")
    p(f"numba cache dir: {numba_cache_location()}")
    # the package's version without importing it (import onnx alone costs ~0.9 s)
    try:
        from importlib.metadata import PackageNotFoundError, version
        p(f"onnx {version('onnx')} (tools only: models are read by edgedl's own reader)")
    except PackageNotFoundError:
        p("onnx not installed: models load and run without it; onnx's test runner "
          "(edgedl.onnx.backend) and `edgedl info`'s FLOP count need it")
