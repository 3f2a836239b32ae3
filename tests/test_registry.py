"""Every kernel family has a twin of every reference function in every backend, with the same
signature; and the public surface is importable."""
import importlib
import importlib.util
import inspect
import pkgutil

import pytest

import edgedl
import edgedl.kernels._ref as ref_pkg
from edgedl._config import why_unavailable

FAMILIES = sorted(m.name for m in pkgutil.iter_modules(ref_pkg.__path__))


def _public_functions(mod):
    return {n: f for n, f in vars(mod).items()
            if not n.startswith("_") and callable(f) and getattr(f, "__module__", "") == mod.__name__}


def _params(fn):
    fn = getattr(fn, "py_func", fn)   # numba dispatcher -> the Python function
    return [p.name for p in inspect.signature(fn).parameters.values()]


def test_there_are_families():
    assert "activations" in FAMILIES


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("twin", ["numba", "cython"])
def test_twins_match_reference(family, twin):
    reason = why_unavailable(twin)
    if reason is not None:
        pytest.skip(reason)
    ref = importlib.import_module(f"edgedl.kernels._ref.{family}")
    if twin == "numba":
        edgedl._config.load_numba()
        mod = importlib.import_module(f"edgedl.kernels._numba.{family}")
    else:
        mod = importlib.import_module(f"edgedl._cy.{family}")
    want = _public_functions(ref)
    assert want, f"reference module {family} exports no kernels"
    missing = [n for n in want if not callable(getattr(mod, n, None))]
    assert not missing, f"{twin} twin of {family} lacks {missing}"
    for name, fn in want.items():
        assert _params(getattr(mod, name)) == _params(fn), f"{twin} {family}.{name} signature"


def test_public_names_resolve():
    from edgedl.errors import MissingDependencyError
    missing = []
    for n in edgedl._WHERE:
        try:
            getattr(edgedl, n)
        except MissingDependencyError:
            # edgedl.onnx / edgedl.detect without the onnx package (e.g. 32-bit ARM): the
            # name resolves to one clear error naming the package, which is what we want
            assert importlib.util.find_spec("onnx") is None, n
        except AttributeError:
            missing.append(n)
    assert not missing, f"public names that do not resolve: {missing}"
