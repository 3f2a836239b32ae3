"""Every kernel family has a twin of every reference function in every backend, with the same
signature; and the public surface is importable."""
import importlib
import importlib.util
import inspect
import pathlib
import pkgutil

import numpy as np
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


# ----------------------------------------------------------------------------- activation table
# Every list about activations is derived from edgedl/kernels/activation_table.py; these check
# each derived list (and the few written out by hand) against it.
from edgedl.kernels import activation_table as T  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
_CHECKOUT = (ROOT / "src_cy").is_dir() and (ROOT / "tools" / "gen_act_codes.py").is_file()
_needs_checkout = pytest.mark.skipif(not _CHECKOUT, reason="reads the checkout's sources")


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_table_records_are_consistent():
    assert list(T.ACTIVATIONS) == [r.name for r in T.ACTIVATIONS.values()]
    assert len(T.BY_ONNX) == sum(1 for r in T.ACTIVATIONS.values() if r.onnx_op)
    elem = [r for r in T.ACTIVATIONS.values() if r.kind == "elementwise"]
    assert [r.fast_code for r in elem] == list(range(len(elem))) == list(range(T.N_ELEMENTWISE))
    for r in T.ACTIVATIONS.values():
        assert r.kind in ("elementwise", "channel", "axis", "alias"), r
        assert (r.alias_of is not None) == (r.kind == "alias"), r
        if r.alias_of:
            assert T.ACTIVATIONS[r.alias_of[0]].kind == "elementwise", r
        assert r.fuse_code is None or 0 < r.fuse_code < len(T.EPILOGUES), r
        assert r.fuse_fixed is None or (r.fuse_code is not None and len(r.fuse_fixed) == 2), r
        assert all(isinstance(p, T.Param) for p in r.params), r
    # every epilogue code but "none" is some activation's
    assert {r.fuse_code for r in T.FUSED.values()} == set(range(1, len(T.EPILOGUES)))


def test_wrappers_follow_the_table():
    """A wrapper (and its _grad) per record, whose parameters and defaults are the table's."""
    from edgedl.kernels import activations as A
    assert A._NAMES == [n for n, r in T.ACTIVATIONS.items() if r.kind != "alias"]
    assert A._PLANNED == T.PLANNED
    assert list(edgedl._ACTIVATIONS) == list(T.ACTIVATIONS)
    for name, rec in T.ACTIVATIONS.items():
        for fn_name in [name] + ([name + "_grad"] if rec.has_grad else []):
            sig = inspect.signature(getattr(A, fn_name))
            lead = ["x"] + (["dy"] if fn_name.endswith("_grad") else [])
            assert list(sig.parameters) == lead + [p.name for p in rec.params] + \
                ["out", "backend"], fn_name
            for p in rec.params:     # a default of None: none, or None (clip's unbounded)
                d = sig.parameters[p.name].default
                assert d == p.default or (d is inspect.Parameter.empty and p.default is None), \
                    (fn_name, p.name)
            assert getattr(edgedl, fn_name) is getattr(A, fn_name)


def test_alias_is_its_target():
    import numpy as np
    x = np.linspace(-5, 5, 11)
    for name, rec in T.ACTIVATIONS.items():
        if rec.alias_of:
            target, params = rec.alias_of
            np.testing.assert_array_equal(getattr(edgedl, name)(x, backend="numpy"),
                                          getattr(edgedl, target)(x, *params, backend="numpy"))


def test_conv_epilogues_follow_the_table():
    from edgedl.kernels import conv
    from edgedl.kernels._ref import activations as ref_acts, conv as ref_conv
    assert conv.ACTIVATIONS == {None: 0, **{n: len(r.params) for n, r in T.FUSED.items()}}
    assert [a for a, _ in conv._WARMUP_EPILOGUES] == [None] + list(T.FUSED)
    assert (ref_conv.ACT_NONE, ref_conv.ACT_CLIP, ref_conv.ACT_PRELU) == \
        (T.EPILOGUE["none"], T.EPILOGUE["clip"], T.EPILOGUE["prelu"])
    # every other epilogue's reference is its activation's (silu: swish with beta 1)
    y = np.linspace(-5, 5, 24, dtype=np.float64).reshape(1, 2, 12)
    for code, name in enumerate(T.EPILOGUES):
        if name in ("none", "clip", "prelu"):
            continue
        rec = T.ACTIVATIONS[name]
        fn_name, fixed = rec.alias_of or (name, None)
        params = fixed or tuple(p.default for p in rec.params)
        want = np.empty_like(y)
        getattr(ref_acts, fn_name)(y, *params, want)
        np.testing.assert_array_equal(ref_conv._activate(y, code, *(params + (0.0, 0.0))[:2],
                                                         None), want)
    for name, rec in T.FUSED.items():
        params = conv._WARMUP_EPILOGUES[[a for a, _ in conv._WARMUP_EPILOGUES].index(name)][1]
        assert conv._epilogue(name, params, 2, "float32")[0] == rec.fuse_code


def test_onnx_handlers_and_schemas_follow_the_table():
    """Every ONNX op of the table has a handler; its opset and attribute names are the op's."""
    pytest.importorskip("edgedl.onnx")
    import json
    from edgedl.onnx.ops import OPS
    schemas = json.loads((pathlib.Path(edgedl.__file__).parent / "onnx" /
                          "op_schemas.json").read_text())["ops"]
    for op, rec in T.BY_ONNX.items():
        assert op in OPS, f"no ONNX handler for {op} ({rec.name})"
        if rec.onnx_since is None:          # the planner's internal Silu
            assert op not in schemas
            continue
        versions = schemas[op]
        assert versions[0][0] == rec.onnx_since, op
        attrs = versions[-1][5]
        for p in rec.params:
            assert p.onnx_attr is None or p.onnx_attr in attrs or rec.onnx_op == "Clip", \
                (op, p.onnx_attr)


def test_cython_op_codes_follow_the_table():
    """fast_f32 with each record's code computes that record's activation."""
    reason = why_unavailable("cython")
    if reason is not None:
        pytest.skip(reason)
    import numpy as np
    from edgedl._cy import activations as cy
    x = np.linspace(-4, 4, 24, dtype=np.float32).reshape(2, 3, 4)
    for name, rec in T.ACTIVATIONS.items():
        if rec.fast_code is None:
            continue
        out = np.empty_like(x)
        if rec.kind == "axis":
            assert cy.fast_f32(rec.fast_code, x, out, 1, 0.0, 0.0, 2, 3, 4)
            want = getattr(edgedl, name)(x.astype(np.float64), axis=1, backend="numpy")
        else:
            params = (-1.0, 2.0) if name == "clip" else tuple(p.default for p in rec.params)
            assert cy.fast_f32(rec.fast_code, x, out, 1, *params)
            want = getattr(edgedl, name)(x.astype(np.float64), *params, backend="numpy")
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6, err_msg=name)
    with pytest.raises(ValueError, match="forward op"):
        cy.fast_f32(T.N_ELEMENTWISE, x, np.empty_like(x), 1)


@_needs_checkout
def test_generated_headers_are_current():
    """src_cy/edl_act_table.h / .pxd are what tools/gen_act_codes.py makes of the table."""
    gen = _load(ROOT / "tools" / "gen_act_codes.py", "gen_act_codes")
    for path, text in gen.outputs().items():
        assert pathlib.Path(path).read_text() == text, \
            f"{pathlib.Path(path).name} is stale: run python tools/gen_act_codes.py"


def test_exp_constants_are_float32_exact():
    """The polynomial's numbers mean the same float32 in C (a float literal) and numba."""
    import numpy as np
    for k, v in T.EXP_F32.items():
        assert np.float32(v) == np.float32(float(v)), k


@_needs_checkout
def test_tests_benchmarks_and_conformance_cover_the_table():
    import sys
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]
    try:
        acts = _load(ROOT / "tests" / "kernels" / "test_activations.py", "_reg_test_acts")
        bench = _load(ROOT / "benchmarks" / "bench_activations.py", "_reg_bench_acts")
        conf = _load(ROOT / "tests" / "runtime" / "onnx_conformance.py", "_reg_conformance")
    finally:
        del sys.path[:2]
    assert list(acts.PARAMS) == list(T.ACTIVATIONS)
    assert {k.split(":")[0] for k in bench.KERNELS} == \
        {n for n, r in T.ACTIVATIONS.items() if r.kind != "alias"}
    assert {op for op, r in T.BY_ONNX.items() if r.onnx_since} <= conf.OPS


@_needs_checkout
def test_readme_kernels_table_names_every_activation():
    import re
    row = next(line for line in (ROOT / "README.md").read_text().splitlines()
               if line.startswith("| activations |"))
    missing = [n for n in T.ACTIVATIONS if not re.search(rf"\b{n}\b", row)]
    assert not missing, f"README's kernels table omits {missing}"


def test_numba_kernels_reading_the_table_are_tagged():
    """The numba modules that compile the table's values in cache every kernel under a name
    tagged by the table's digest (see edgedl/kernels/_numba/_table.py)."""
    reason = why_unavailable("numba")
    if reason is not None:
        pytest.skip(reason)
    edgedl._config.load_numba()
    from numba.core.registry import CPUDispatcher
    from edgedl.kernels._numba import activations, conv
    for mod in (activations, conv):
        kernels = {n: f for n, f in vars(mod).items()
                   if isinstance(f, CPUDispatcher) and f.py_func.__module__ == mod.__name__}
        assert kernels
        for name, f in kernels.items():
            assert f.py_func.__qualname__.endswith("_t" + T.TAG), f"{mod.__name__}.{name}"
