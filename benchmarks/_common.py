"""Helpers shared by the benchmark suites: one-thread ORT single-node sessions, a copy roofline,
and result tables printed at the end of the pytest session (see benchmarks/conftest.py).

Usage in a bench file::

    from _common import Table, timed, ort_single_node
    T = Table("activations, float32, 1 thread", cols=["cython", "numba", "numpy", "ort"],
              ratios={"cy/ort": lambda row, t: t.ratio(row, "cython", "ort")})
    def test_x(benchmark):
        T.record(("relu", "1x64x80x80"), "cython", timed(benchmark, fn))

Each table prints medians in microseconds and its ratio columns; the machine is shared and
noisy, so compare ratios measured in the same run rather than absolute times.
"""
import contextlib
import os
import pathlib
import sys

import numpy as np

import edgedl

TABLES = []

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


class Table:
    """Medians (seconds) by row key and column, with derived ratio columns."""

    def __init__(self, title, cols, ratios=None, note=""):
        self.title, self.cols, self.ratios, self.note = title, list(cols), ratios or {}, note
        self.rows = {}
        TABLES.append(self)

    def record(self, row, col, seconds):
        self.rows.setdefault(row, {})[col] = seconds

    def get(self, row, col):
        return self.rows.get(row, {}).get(col)

    def ratio(self, row, num, den):
        a, b = self.get(row, num), self.get(row, den)
        return a / b if a is not None and b else None

    def lines(self):
        if not self.rows:
            return []
        key_w = max(len(_key(r)) for r in self.rows)
        head = f"{'':{key_w}}" + "".join(f"{c:>12}" for c in self.cols) \
            + "".join(f"{r:>8}" for r in self.ratios)
        out = [f"== {self.title}  (medians in us; ratios < 1 mean faster)", head]
        for row in self.rows:
            cells = [self.get(row, c) for c in self.cols]
            s = f"{_key(row):{key_w}}" + "".join(
                f"{v * 1e6:12.1f}" if v is not None else f"{'-':>12}" for v in cells)
            for fn in self.ratios.values():
                v = fn(row, self)
                s += f"{v:8.2f}" if v is not None else f"{'-':>8}"
            out.append(s)
        if self.note:
            out.append(self.note)
        return out


def _key(row):
    return " ".join(map(str, row)) if isinstance(row, tuple) else str(row)


def timed(benchmark, fn, rounds=30, warmup=3):
    """Run ``fn`` under pytest-benchmark with a bounded number of rounds; the median (s)."""
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=warmup)
    return benchmark.stats.stats.median


def ort_single_node(op_type, inputs, attrs=None, opset=17):
    """A zero-argument callable running one ONNX node on onnxruntime with one thread."""
    from ort_util import ort_session, single_node_model
    sess = ort_session(single_node_model(op_type, inputs, attrs, opset), threads=1)
    feed = {name: arr for name, arr in inputs if arr is not None}
    return lambda: sess.run(None, feed)


def copy_roofline(x):
    """A callable copying ``x`` into a preallocated array: the read+write bandwidth bound."""
    out = np.empty_like(x)
    return lambda: np.copyto(out, x)


def show_now(config, write_table):
    """Print a benchmark file's own table right away, even without -s: ``write_table(print)``
    runs with pytest's output capture suspended."""
    capman = config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        write_table(print)


@contextlib.contextmanager
def single_thread():
    """Run the block with edgedl on one thread (the benchmarks' setting), then restore it."""
    prev = edgedl.get_num_threads()
    edgedl.set_num_threads(1)
    try:
        yield
    finally:
        edgedl.set_num_threads(prev)


def fill_roofline(table, copy_times, col="copy"):
    """Put the copy time of each row's size (row key = (kernel, size)) in ``col``."""
    for row in table.rows:
        if row[1] in copy_times:
            table.record(row, col, copy_times[row[1]])


def shared_dir():
    """The shared models and images folder: $EDGEDL_SHARED, else ../shared beside the
    checkout (CI) or shared/ inside it; None when absent (the benchmarks that need it skip)."""
    env = os.environ.get("EDGEDL_SHARED")
    here = pathlib.Path(__file__).resolve().parents[1]
    for cand in ([pathlib.Path(env)] if env else []) + [here.parent / "shared", here / "shared"]:
        if (cand / "models").is_dir():
            return cand
    return None
