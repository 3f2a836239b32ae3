"""Threads (issue 13, target 5): each shared detector at 1 and 2 threads, edgedl and
onnxruntime, on an idle machine and beside a busy neighbour (a CPU-bound process, as a camera
loop or a web server is on a Pi).

Run: python benchmarks/bench_threads.py [--busy] [--nice N] [--rounds 20] [model ...]
 or: pytest benchmarks/bench_threads.py --benchmark-only -s   (idle, then busy)

Targets: on an otherwise idle 2-core machine, models of >= 10 ms run >= 1.6x faster at 2
threads than at 1 and 2 threads never lose to 1; beside the busy neighbour, 2 threads never
take more than 1.2x the 1-thread time. The columns "2t/1t" are each runtime's 2-thread median
over its own 1-thread median (below 1: 2 threads pay).

Method: the four sessions of a model (edgedl 1 / 2 threads, onnxruntime 1 / 2 threads) run in
blocks of ``block`` timed runs in that order, each block after a 20 ms pause and one untimed run
(idle workers of either runtime spin for a while after a run and would steal the next one's
core); medians over ``rounds`` blocks, wall clock. edgedl's 2-thread session is warmed past its
thread governor's start (it measures both counts in turn for its first 16 runs, see
edgedl.onnx.session.ThreadGovernor), as any session that runs a stream of images is.
"""
import argparse
import multiprocessing
import os
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_models as bm  # noqa: E402

WARM = 24       # runs before timing: plan, caches, and edgedl's thread governor's start


def _spin(nice):
    """The neighbour: one core busy until terminated."""
    if nice:
        os.nice(nice)
    while True:
        pass


class Neighbour:
    """A busy-loop process for the ``with`` block (``nice``: its niceness)."""

    def __init__(self, nice=0):
        self.nice = nice
        self.proc = None

    def __enter__(self):
        self.proc = multiprocessing.get_context("spawn").Process(target=_spin,
                                                                 args=(self.nice,),
                                                                 daemon=True)
        self.proc.start()
        time.sleep(0.3)         # let it start and take its core
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.join()


def _session(runtime, model, threads):
    if runtime == "onnxruntime":
        sess = bm._ort(bm._path(model), threads)
    else:
        import edgedl
        sess = edgedl.InferenceSession(str(bm._path(model)), num_threads=threads)
    feed = {sess.get_inputs()[0].name: bm._input(model, sess)}
    for _ in range(WARM):
        sess.run(None, feed)
    return lambda: sess.run(None, feed)


def measure(model, runtimes=("edgedl", "onnxruntime"), rounds=20, block=5, pause=0.02):
    """{(runtime, threads): median seconds} of ``model``."""
    runs = {(rt, t): _session(rt, model, t) for rt in runtimes for t in (1, 2)}
    times = {k: [] for k in runs}
    # A fixed order, each runtime's 1 then 2 threads: edgedl's 2-thread block right after
    # onnxruntime's (a rotating order puts it there one round in four) ran at its 1-thread
    # speed for the whole measurement (YuNet 2t/1t 1.00 against 0.63-0.68 in this order),
    # the other pool's workers still on the cores (measured with 20 and 200 ms pauses)
    keys = list(runs)
    for _ in range(rounds):
        for k in keys:
            time.sleep(pause)
            runs[k]()
            for _ in range(block):
                t0 = time.perf_counter()
                runs[k]()
                times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def summary(models=tuple(bm.MODELS), busy=False, nice=0, rounds=20):
    runtimes = ["edgedl"]
    try:
        import onnxruntime  # noqa: F401
        runtimes.append("onnxruntime")
    except ImportError:
        pass
    where = f"beside a busy-loop process (nice {nice})" if busy else "idle (nothing else started)"
    lines = [f"2 vs 1 thread, {where}; {os.cpu_count()} logical CPUs; load average before: "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; medians of {rounds} blocks of 5",
             f"{'model':18s} " + " ".join(f"{rt + ' 1t ms':>16s} {rt + ' 2t ms':>16s} {'2t/1t':>6s}"
                                            for rt in runtimes)]
    ratios = {}
    ctx = Neighbour(nice) if busy else None
    if ctx:
        ctx.__enter__()
    try:
        for m in models:
            med = measure(m, runtimes, rounds)
            row = f"{m:18s} "
            for rt in runtimes:
                one, two = med[rt, 1], med[rt, 2]
                ratios[m, rt] = two / one
                row += f"{one * 1e3:16.2f} {two * 1e3:16.2f} {two / one:6.2f} "
            lines.append(row)
    finally:
        if ctx:
            ctx.__exit__(None, None, None)
    worst = max(ratios[m, "edgedl"] for m in models)
    lines.append(f"edgedl: worst 2t/1t {worst:.2f} "
                 + ("(target <= 1.2)" if busy else "(targets: < 1 on every model, <= 0.625 "
                    "on models of >= 10 ms)"))
    return "\n".join(lines), ratios


needs_shared = pytest.mark.skipif(bm._shared() is None, reason="../shared/models not found "
                                  "(set EDGEDL_SHARED)")


@needs_shared
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_threads_summary(benchmark, busy):
    text, _ = benchmark.pedantic(summary, kwargs={"busy": busy}, rounds=1, iterations=1)
    print("\n" + text)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=list(bm.MODELS))
    ap.add_argument("--busy", action="store_true", help="run beside a busy-loop process")
    ap.add_argument("--nice", type=int, default=0, help="the busy process's niceness")
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    print(summary(a.models, a.busy, a.nice, a.rounds)[0])
