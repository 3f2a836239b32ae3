"""Static checks of edgedl/'s source: no unused imports, locals or names (pyflakes); no
function, method or closure above cyclomatic complexity 20 (radon), issue #16 item 3.

pyflakes and radon are development tools (the ``test`` extra), not dependencies: a test skips
with a reason when its tool is not installed. A line marked ``# noqa`` is an intended exception
(a re-export, an import for its side effect) and is not reported by pyflakes.
"""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if not (ROOT / "edgedl" / "__init__.py").is_file():    # e.g. the emulated ARM runs
    pytest.skip("these checks read the checkout's edgedl/ sources, absent here",
                allow_module_level=True)

# Reports left alone on purpose, each with its reason: (file, words of the message).
KNOWN = {}


def test_pyflakes_finds_nothing():
    pytest.importorskip("pyflakes", reason="pyflakes is not installed (pip install pyflakes)")
    res = subprocess.run([sys.executable, "-m", "pyflakes", "edgedl"], cwd=ROOT,
                         capture_output=True, text=True)
    bad = []
    for line in res.stdout.splitlines() + res.stderr.splitlines():
        path, lineno, _, msg = (line.split(":", 3) + ["", "", ""])[:4]
        if not lineno.isdigit():
            bad.append(line)
            continue
        src = (ROOT / path).read_text().splitlines()[int(lineno) - 1]
        if "# noqa" in src or any(path == f and w in msg for f, w in KNOWN):
            continue
        bad.append(line)
    assert not bad, "pyflakes:\n" + "\n".join(bad)


#: Most complexity a function may have (radon's cyclomatic complexity: 1 + one per branch,
#: loop, boolean operator, except clause, comprehension condition).
MAX_COMPLEXITY = 20
#: Functions above MAX_COMPLEXITY tolerated while their refactoring is under way, as
#: "path under edgedl/ without .py:qualified name" (e.g. "onnx/ops/nn:_resize_fn.geometry"),
#: each with a comment saying whose work it waits for. The second test fails as soon as one is
#: fixed or renamed, so the set only shrinks; empty since issue #16 item 3 landed.
PENDING = set()


def _complexities():
    """{"path:qualified name": complexity} of every function, method and closure in edgedl/
    (radon counts a closure apart from the function around it)."""
    from radon.complexity import cc_visit
    found = {}
    for path in sorted((ROOT / "edgedl").rglob("*.py")):
        module = path.relative_to(ROOT / "edgedl").with_suffix("").as_posix()
        for block in cc_visit(path.read_text()):
            for name, cc in _blocks(block):
                found[f"{module}:{name}"] = cc
    return found


def _blocks(block, prefix=""):
    """(qualified name, complexity) of a radon block and of everything defined inside it."""
    name = prefix + block.name
    if hasattr(block, "methods"):                      # a class: only its members count
        for inner in block.methods + block.inner_classes:
            yield from _blocks(inner, name + ".")
        return
    yield name, block.complexity
    for inner in block.closures:
        yield from _blocks(inner, name + ".")


def test_no_function_above_complexity_20():
    pytest.importorskip("radon", reason="radon is not installed (pip install radon)")
    over = {k: cc for k, cc in _complexities().items()
            if cc > MAX_COMPLEXITY and k not in PENDING}
    assert not over, (f"functions above cyclomatic complexity {MAX_COMPLEXITY} (split them by "
                      "meaning into named helpers):\n" +
                      "\n".join(f"  edgedl/{k} ({cc})" for k, cc in sorted(over.items())))


def test_pending_complexity_list_is_current():
    """Every PENDING name still exists and is still above the limit, so the list cannot go
    stale: once a function is refactored, its name leaves PENDING."""
    pytest.importorskip("radon", reason="radon is not installed (pip install radon)")
    found = _complexities()
    stale = sorted(k for k in PENDING if found.get(k, 0) <= MAX_COMPLEXITY)
    assert not stale, ("no longer above complexity {}: remove from PENDING in "
                       "tests/test_code_health.py:\n".format(MAX_COMPLEXITY) +
                       "\n".join(f"  edgedl/{k} ({found.get(k, 'gone')})" for k in stale))


def test_readme_op_count_is_the_schema_tables():
    """README's count of ONNX op types is that of edgedl/onnx/op_schemas.json (the ops the
    loader accepts), so the figure cannot drift from the code."""
    import json
    import re
    ops = json.loads((ROOT / "edgedl" / "onnx" / "op_schemas.json").read_text())["ops"]
    m = re.search(r"(\d+) ONNX op types", (ROOT / "README.md").read_text())
    assert m, "README no longer states the ONNX op count"
    assert int(m.group(1)) == len(ops)
