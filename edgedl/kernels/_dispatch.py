"""{kernel: {backend: function}}: where a public wrapper finds the twin it calls.

A kernel family ``F`` lives in three modules with the same function names and arguments:
``edgedl.kernels._ref.F`` (NumPy), ``edgedl.kernels._numba.F`` (numba) and ``edgedl._cy.F``
(Cython). A backend plugs in if its module imports. Lookups are cached, so a dispatch costs a
dict lookup plus the per-thread thread-count check.
"""
import importlib

from .. import _config
from ..errors import BackendError

_MODULE_OF_BACKEND = {
    "numpy": "edgedl.kernels._ref.{}",
    "numba": "edgedl.kernels._numba.{}",
    "cython": "edgedl._cy.{}",
}
_cache = {}


def twin_module(family, backend):
    """The module holding ``family``'s kernels for ``backend`` (imported on first use)."""
    if backend == "numba":
        _config.load_numba()
    try:
        return importlib.import_module(_MODULE_OF_BACKEND[backend].format(family))
    except ImportError as e:
        raise BackendError(f"backend {backend!r} has no module for kernel family {family!r}: {e}")


def impl(family, name, backend=None):
    """The function implementing ``family.name`` on ``backend`` (None = current backend)."""
    backend = _config.resolve_backend(backend)
    key = (family, name, backend)
    fn = _cache.get(key)
    if fn is None:
        mod = twin_module(family, backend)
        fn = getattr(mod, name, None)
        if fn is None:
            raise BackendError(f"backend {backend!r} lacks kernel {family}.{name}")
        if backend == "numba" and _config.numba_lock is not None:
            fn = _serialised(fn)
        _cache[key] = fn
    if backend != "numpy":
        _config.apply_threads(backend)
    return fn


def _serialised(fn):
    lock = _config.numba_lock

    def call(*args):
        with lock:
            return fn(*args)
    call.__wrapped__ = fn
    return call
