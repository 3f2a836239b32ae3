"""Soak: many inferences and many sessions in one process, with flat memory (issue 15 point 8).

    python tools/soak.py                       # 10,000 runs each loop, 200 sessions, 10 MB limit
    python tools/soak.py --runs 2000 --sessions 50 --backend numba
    nice python tools/soak.py --json soak.json # also write the figures as JSON

Phases (each its own RSS baseline, after its own warm-up, so one phase's caches do not count
against the next):
  detector  ``edgedl.Detector`` on the demo model (edgedl/data/fastestdet.onnx) and image
            (edgedl/data/astronaut.jpg, decoded from the file every run, as the CLI does);
  session   a raw ``InferenceSession.run`` loop on one fixed input tensor;
  create    InferenceSession and Detector created, run once and dropped, ``--sessions`` times
            each, then gc; weak references check that none of them stays alive.
RSS is read from /proc/self/statm (resident pages) at the start, after the warm-up, every
``--every`` runs and at the end. Every run's output is compared with the first one (same input,
same output: bit-identical). Exit status 1 if a phase's RSS grows by more than ``--limit-mb``
after its warm-up, an output differs, or a dropped object stays alive. Not part of CI: the
defaults take several minutes (run it with ``nice`` on a shared machine).
"""
import argparse
import gc
import json
import os
import sys
import time
import weakref

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "edgedl", "data")
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb():
    """Resident set size of this process in MB (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def same(a, b):
    """Bit-identical outputs (lists of arrays, or Detections)."""
    if hasattr(a, "boxes"):
        a, b = [a.boxes, a.scores, a.class_ids], [b.boxes, b.scores, b.class_ids]
    return len(a) == len(b) and all(x.shape == y.shape and x.dtype == y.dtype
                                    and x.tobytes() == y.tobytes() for x, y in zip(a, b))


def loop(name, run, runs, warmup, every, limit):
    """``run()`` warmup + runs times; RSS figures and output checks as a dict."""
    res = {"phase": name, "rss_start_mb": round(rss_mb(), 1)}
    first = run()
    for _ in range(warmup - 1):
        run()
    gc.collect()
    base = rss_mb()
    res["rss_after_warmup_mb"] = round(base, 1)
    peak, differ, t0 = base, 0, time.perf_counter()
    for i in range(1, runs + 1):
        differ += not same(run(), first)
        if i % every == 0 or i == runs:
            now = rss_mb()
            peak = max(peak, now)
            print(f"  {name}: {i:6d} runs  RSS {now:7.1f} MB  ({now - base:+.1f} since warm-up)",
                  flush=True)
    dt = time.perf_counter() - t0
    gc.collect()
    end = rss_mb()
    res.update(runs=runs, warmup=warmup, rss_end_mb=round(end, 1), rss_peak_mb=round(peak, 1),
               growth_mb=round(end - base, 2), ms_per_run=round(1000 * dt / max(runs, 1), 2),
               outputs_differing=differ)
    res["ok"] = end - base <= limit and differ == 0
    return res


def churn(name, make, n, limit, warm=10):
    """Create, run once and drop ``make()``'s object n times (after ``warm`` unmeasured ones)."""
    for _ in range(warm):
        make()
    gc.collect()
    before = rss_mb()
    refs, t0 = [], time.perf_counter()
    for i in range(n):
        obj = make()
        try:
            refs.append(weakref.ref(obj))
        except TypeError:           # no weakref support: only RSS is checked
            pass
        del obj
    dt = time.perf_counter() - t0
    gc.collect()
    after = rss_mb()
    alive = sum(r() is not None for r in refs)
    res = {"phase": name, "created": n, "rss_before_mb": round(before, 1),
           "rss_after_gc_mb": round(after, 1), "growth_mb": round(after - before, 2),
           "alive_after_gc": alive if refs else None, "ms_each": round(1000 * dt / max(n, 1), 1)}
    res["ok"] = after - before <= limit and not alive
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10000, help="measured runs per loop (10000)")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured runs first (200)")
    ap.add_argument("--sessions", type=int, default=200,
                    help="sessions and detectors created and dropped (200 each)")
    ap.add_argument("--every", type=int, default=1000, help="print RSS every N runs (1000)")
    ap.add_argument("--limit-mb", type=float, default=10.0,
                    help="allowed RSS growth per phase after warm-up (10 MB)")
    ap.add_argument("--backend", default=None, help="kernel backend (default: edgedl's)")
    ap.add_argument("--model", default=os.path.join(DATA, "fastestdet.onnx"))
    ap.add_argument("--image", default=os.path.join(DATA, "astronaut.jpg"))
    ap.add_argument("--phases", default="detector,session,create",
                    help="comma-separated subset of detector,session,create")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a = ap.parse_args(argv)
    if min(a.runs, a.warmup, a.sessions, a.every) < 1:
        ap.error("--runs, --warmup, --sessions and --every must be >= 1")

    t_start, rss0 = time.perf_counter(), rss_mb()
    import edgedl
    from edgedl import Detector, InferenceSession
    if a.backend:
        edgedl.set_backend(a.backend)
    print(f"edgedl {edgedl.__version__} from {os.path.dirname(edgedl.__file__)}; backend "
          f"{edgedl.get_backend()}, {edgedl.get_num_threads()} thread(s); model {a.model}; "
          f"RSS at start {rss0:.1f} MB", flush=True)

    sess = InferenceSession(a.model)
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    feed = {inp.name: np.random.default_rng(8).random(shape, dtype=np.float32)}

    def make_session():
        s = InferenceSession(a.model)
        s.run(None, feed)
        return s

    def make_detector():
        d = Detector(a.model)
        d(a.image)
        return d

    phases = {
        "detector": lambda: loop("detector", lambda det=Detector(a.model): det(a.image),
                                 a.runs, a.warmup, a.every, a.limit_mb),
        "session": lambda: loop("session", lambda: sess.run(None, feed), a.runs, a.warmup,
                                a.every, a.limit_mb),
        "create": lambda: [churn("create InferenceSession", make_session, a.sessions, a.limit_mb),
                           churn("create Detector", make_detector, a.sessions, a.limit_mb)],
    }
    results = []
    for name in a.phases.split(","):
        if name not in phases:
            ap.error(f"--phases: unknown phase {name!r}; expected detector, session, create")
        print(f"== {name}", flush=True)
        r = phases[name]()
        for one in (r if isinstance(r, list) else [r]):
            print("  " + json.dumps(one), flush=True)
            results.append(one)

    ok = all(r["ok"] for r in results)
    summary = {"ok": ok, "backend": edgedl.get_backend(), "limit_mb": a.limit_mb,
               "rss_start_mb": round(rss0, 1), "rss_end_mb": round(rss_mb(), 1),
               "seconds": round(time.perf_counter() - t_start, 1), "phases": results}
    print(f"== {'OK' if ok else 'FAILED'}: RSS {rss0:.1f} MB at start, {rss_mb():.1f} MB at the "
          f"end, {summary['seconds']} s", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
