"""Shared fixtures: the ``backend`` fixture, the ``../shared`` folder, ARM-emulation sizes.

``EDGEDL_REQUIRE_BACKENDS=1`` (set by CI) turns a missing backend into a failure instead of a
skip, so a broken build cannot pass by testing only NumPy.
"""
import os
import pathlib

import numpy as np
import pytest

import edgedl
from edgedl._config import BACKEND_ORDER, why_unavailable

REPO = pathlib.Path(__file__).resolve().parents[1]

# edgedl reads models without the onnx package; the tests that write their models with it (or
# compare with it) skip without it, each with its reason (tests/onnx_compat.py), the others run.
# (The runtime tests' folder is not named `onnx`: as a namespace package it would shadow it.)
ARM_EMULATED = os.environ.get("ARM_EMULATED", "") not in ("", "0")

# Tests start Python subprocesses (`python -c ...`, `python -m edgedl`) from the checkout: the
# current folder first on their sys.path would import the source tree, which in a plain
# (non-editable) install has no compiled extensions, instead of the installed package.
os.environ.setdefault("PYTHONSAFEPATH", "1")


def shared_path():
    """The shared/ folder beside the checkout (or $EDGEDL_SHARED), or None."""
    env = os.environ.get("EDGEDL_SHARED")
    for cand in ([pathlib.Path(env)] if env else []) + [REPO.parent / "shared", REPO / "shared"]:
        if (cand / "models").is_dir():
            return cand
    return None


def require_backend(name):
    """Skip the calling test when backend ``name`` is missing (fail under CI, which sets
    EDGEDL_REQUIRE_BACKENDS); returns name."""
    reason = why_unavailable(name)
    if reason is not None:
        if os.environ.get("EDGEDL_REQUIRE_BACKENDS", "") not in ("", "0"):
            pytest.fail(f"backend {name} required but unavailable: {reason}")
        pytest.skip(f"backend {name} unavailable: {reason}")
    return name


@pytest.fixture(params=BACKEND_ORDER)
def backend(request):
    """Every backend; a missing one is skipped with its reason (a failure under CI)."""
    return require_backend(request.param)


@pytest.fixture(scope="session")
def shared_dir():
    p = shared_path()
    if p is None:
        pytest.skip("../shared (models and images) is not beside this checkout; "
                    "set EDGEDL_SHARED=/path/to/shared to run these tests")
    return p


@pytest.fixture
def rng(request):
    # A seed per test, stable across runs, different between tests.
    import zlib
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def tail_sizes():
    """Tail sizes every elementwise kernel is checked at (vector-width edges)."""
    return (0, 1, 7, 127, 128, 1000) if not ARM_EMULATED else (0, 1, 7, 127, 128)


def run_cli(capsys, *argv):
    """``edgedl ARGV...`` in this process: (exit status, stdout, stderr)."""
    from edgedl import cli
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def json_records(out):
    """The JSON lines ``edgedl detect --json`` printed."""
    import json
    return [json.loads(line) for line in out.splitlines()]
