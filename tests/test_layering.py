"""The import layering of edgedl, checked on the source (an AST scan: nothing is imported).

    cli (cli.py, __main__)
      -> the package surface (edgedl/__init__, _warmup)
        -> detect, batch
          -> onnx
            -> kernels API (edgedl/kernels/<family>.py; planned entries such as conv2d_plan live
               there too)
              -> kernels internals: _dispatch (wrappers only), the shared helpers _gemm / _blas,
                 the backends _ref / _numba / edgedl._cy (never one another)
                -> base: _config, errors, _validate, _memory

A module may import its own layer and the layers below, never one above. The kernels' private
modules are for edgedl/kernels/ only; the wrappers reach the optional backends (numba, Cython)
through _dispatch only (the reference they may import: it is always there). No onnxruntime,
torch, OpenCV or TensorFlow anywhere. ``importlib.import_module`` / ``__import__`` with a computed
name hides an edge from readers and from this test: flagged outside the documented probes below.
Python-level imports of edgedl in src_cy/*.pyx are checked too (their backend is _cy).
"""
import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "edgedl"
if not (PKG / "__init__.py").is_file():    # e.g. the emulated ARM runs test the installed copy
    pytest.skip("the layering checks read the checkout's edgedl/ sources, absent here",
                allow_module_level=True)

FORBIDDEN = {"onnxruntime", "torch", "torchvision", "cv2", "tensorflow"}
BACKENDS = {"edgedl.kernels._ref": "numpy", "edgedl.kernels._numba": "numba",
            "edgedl._cy": "cython"}
# (activation_table: the activation family's table, read by every layer from the backends up)
SHARED_KERNEL_HELPERS = {"edgedl.kernels._gemm", "edgedl.kernels._blas",
                         "edgedl.kernels.activation_table"}
BASE = {"edgedl._config", "edgedl.errors", "edgedl._validate", "edgedl._memory", "edgedl._files"}

# Computed import_module names that are allowed, each with its reason.
DYNAMIC_IMPORTS = {
    "edgedl.kernels._dispatch": "loads a family's twin module for the chosen backend",
    "edgedl._config": "probes which optional backends (numba, the Cython build) import",
    "edgedl": "PEP 562 lazy public surface: edgedl.X imports X's module on first use",
}
# Upward edges that are allowed, each with its reason: (importer, imported).
UPWARD = {
    ("edgedl._config", "edgedl._cy._runtime"):
        "the thread setter and show_config probe the optional Cython runtime",
}


def _within(mod, pkg):
    return mod == pkg or mod.startswith(pkg + ".")


def layer(mod):
    """(rank, name) of a module: higher ranks sit above lower ones."""
    if mod in ("edgedl.cli", "edgedl.__main__"):
        return 6, "cli"
    if mod in ("edgedl", "edgedl._warmup"):
        return 5, "package surface"
    if _within(mod, "edgedl.detect") or mod in ("edgedl.batch", "edgedl.quantize",
                                                 "edgedl._weight_rounding"):
        return 4, "detect"
    if _within(mod, "edgedl.onnx"):
        return 3, "onnx"
    if any(_within(mod, b) for b in BACKENDS) or mod in SHARED_KERNEL_HELPERS \
            or mod == "edgedl.kernels._dispatch":
        return 1, "kernels internals"
    if _within(mod, "edgedl.kernels"):
        return 2, "kernels API"
    if mod in BASE:
        return 0, "base"
    raise AssertionError(f"{mod} is in no layer: add it to tests/test_layering.py")


def backend_of(mod):
    return next((b for p, b in BACKENDS.items() if _within(mod, p)), None)


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(mod):
    p = ROOT.joinpath(*mod.split("."))
    return (p.with_suffix(".py").exists() or (p / "__init__.py").exists()
            or (ROOT / "src_cy" / (mod.rsplit(".", 1)[-1] + ".pyx")).exists()
            and mod.startswith("edgedl._cy."))


def _imports(path, mod):
    """(line, imported module, name or None) of every import in the file; a computed
    import_module / __import__ as (line, None, source text)."""
    pkg = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    src = path.read_text()
    for n in ast.walk(ast.parse(src)):
        if isinstance(n, ast.Import):
            for a in n.names:
                yield n.lineno, a.name, None
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg.split(".")[:len(pkg.split(".")) - n.level + 1]
                target = ".".join(base + ([n.module] if n.module else []))
            else:
                target = n.module
            for a in n.names:
                sub = f"{target}.{a.name}"
                yield (n.lineno, sub, None) if _is_module(sub) else (n.lineno, target, a.name)
        elif isinstance(n, ast.Call):
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in ("import_module", "__import__") and n.args:
                arg = n.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield n.lineno, arg.value, None
                else:
                    yield n.lineno, None, ast.get_source_segment(src, n)


def _pyx_imports(path):
    for i, line in enumerate(path.read_text().splitlines(), 1):
        m = re.match(r"\s*(?:from\s+(edgedl[\w.]*)\s+(?:c?import)|import\s+(edgedl[\w.]*))", line)
        if m:
            yield i, m.group(1) or m.group(2), None


def _check(mod, where, imports):
    bad = []
    rank, lname = layer(mod)
    seen = set()
    for line, target, name in imports:
        if target is not None and name != "__version__":
            if (line, target) in seen:      # one report per imported module
                continue
            seen.add((line, target))
        at = f"{where}:{line}"
        if target is None:
            if mod not in DYNAMIC_IMPORTS:
                bad.append(f"{at}: computed import {name} (import the module by name)")
            continue
        top = target.split(".")[0]
        if top in FORBIDDEN:
            bad.append(f"{at}: imports {target} (a test oracle only, never in edgedl/)")
        if top != "edgedl":
            continue
        if target == "edgedl" and name == "__version__":
            continue            # a constant of edgedl/__init__, which loads nothing upward
        trank, tname = layer(target)
        if trank > rank and (mod, target) not in UPWARD:
            bad.append(f"{at}: {lname} imports {target} ({tname}, a layer above)")
        private = (target.startswith("edgedl.kernels._") or _within(target, "edgedl._cy"))
        if private and not (_within(mod, "edgedl.kernels") or backend_of(mod)) \
                and (mod, target) not in UPWARD:
            bad.append(f"{at}: imports {target}, private to edgedl/kernels/ "
                       f"(use the public kernels API)")
        if target == "edgedl.kernels._dispatch" and layer(mod)[0] != 2:
            bad.append(f"{at}: imports _dispatch (only the kernels' public wrappers dispatch)")
        b, tb = backend_of(mod), backend_of(target)
        if b and tb and b != tb:
            bad.append(f"{at}: the {b} backend imports the {tb} backend ({target}); shared "
                       f"helpers belong in {sorted(SHARED_KERNEL_HELPERS)}")
        if b and not tb and trank == 1 and target not in SHARED_KERNEL_HELPERS:
            bad.append(f"{at}: the {b} backend imports {target}")
        if rank == 2 and tb in ("numba", "cython"):
            bad.append(f"{at}: a kernels wrapper imports the optional {tb} backend directly "
                       f"(go through _dispatch)")
    return bad


def _sources():
    for p in sorted(PKG.rglob("*.py")):
        if "__pycache__" not in p.parts:
            yield p


def test_every_module_has_a_layer():
    for p in _sources():
        layer(_module_name(p))


def test_no_import_breaks_the_layering():
    bad = []
    for p in _sources():
        mod = _module_name(p)
        bad += _check(mod, p.relative_to(ROOT), _imports(p, mod))
    for p in sorted((ROOT / "src_cy").glob("*.pyx")):
        mod = f"edgedl._cy.{p.stem}"
        bad += _check(mod, p.relative_to(ROOT), _pyx_imports(p))
    assert not bad, "layering violations:\n" + "\n".join(bad)


@pytest.mark.parametrize("mod", sorted(DYNAMIC_IMPORTS))
def test_documented_exceptions_are_still_needed(mod):
    """An exception nobody needs any more is dropped, so the list stays honest."""
    path = ROOT.joinpath(*mod.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    assert any(t is None for _, t, _ in _imports(path, mod)), \
        f"{mod} no longer computes an import name: drop it from DYNAMIC_IMPORTS"


def test_the_scan_catches_violations():
    """The checker itself: each rule fires on a made-up import."""
    cases = {
        ("edgedl.kernels.conv", "edgedl.onnx.plan"): "a layer above",
        ("edgedl.detect.batch", "edgedl.cli"): "a layer above",
        ("edgedl.onnx.ops.nn", "edgedl.kernels._dispatch"): "private",
        ("edgedl.kernels._numba.conv", "edgedl.kernels._ref.conv"): "backend imports",
        ("edgedl.kernels.conv", "edgedl.kernels._numba.conv"): "optional numba",
        ("edgedl.kernels._ref.conv", "torch"): "test oracle",
    }
    for (mod, target), words in cases.items():
        bad = _check(mod, mod, [(1, target, None)])
        assert any(words in b for b in bad), (mod, target, bad)
    assert _check("edgedl.onnx.ops.nn", "x", [(1, None, "import_module(name)")])
    assert not _check("edgedl.onnx.ops.nn", "x", [(1, "edgedl.kernels.conv", None)])


def test_warmup_and_docs_name_every_kernel_family():
    """_warmup.FAMILIES (which cli bench uses too) and the kernels package docstring list every
    family of edgedl/kernels/ (a family = a public wrapper module with a reference twin)."""
    import edgedl._warmup
    import edgedl.kernels
    families = {p.stem for p in (PKG / "kernels" / "_ref").glob("*.py") if p.stem[0] != "_"}
    assert families == {p.stem for p in (PKG / "kernels").glob("*.py") if p.stem[0] != "_"
                        and f"edgedl.kernels.{p.stem}" not in SHARED_KERNEL_HELPERS}
    assert set(edgedl._warmup.FAMILIES) == families
    doc = edgedl.kernels.__doc__
    assert [f for f in sorted(families) if f not in doc] == []
