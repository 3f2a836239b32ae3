"""Static checks of edgedl/'s source: no unused imports, locals or names (pyflakes).

pyflakes is a development tool, not a dependency: the test skips with a reason when it is not
installed (``pip install pyflakes``). A line marked ``# noqa`` is an intended exception (a
re-export, an import for its side effect) and is not reported.
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


def test_readme_op_count_is_the_schema_tables():
    """README's count of ONNX op types is that of edgedl/onnx/op_schemas.json (the ops the
    loader accepts), so the figure cannot drift from the code."""
    import json
    import re
    ops = json.loads((ROOT / "edgedl" / "onnx" / "op_schemas.json").read_text())["ops"]
    m = re.search(r"(\d+) ONNX op types", (ROOT / "README.md").read_text())
    assert m, "README no longer states the ONNX op count"
    assert int(m.group(1)) == len(ops)
