"""A report people can look at (issue 13): the shared detectors on edgedl, onnxruntime and
OpenCV DNN, one thread each, as a markdown table and a PNG chart, with the machine described.

    python benchmarks/report.py                     # writes docs/bench/models.{md,png,json}
    python benchmarks/report.py --out /tmp/r --rounds 60 fastestdet yolox_nano

Each model is timed on the three runtimes in interleaved blocks (a pause, one untimed run, then
``--block`` timed runs; the runtimes' order rotates from block to block), so load from other
processes falls on all three alike; the figures are medians, the ratios are of medians from the
same run. Every run is timed on two clocks, wall time and the process's CPU time; the chart
uses CPU time by default (``--clock``): at one thread it is the run's own work, the same as the
wall time on an idle machine, and it stays steady on a loaded one, where wall times jump by
scheduler time slices. edgedl and onnxruntime sessions come from bench_models.py (same inputs, same
settings); OpenCV DNN (``cv2.dnn.readNetFromONNX``, a benchmark-only peer, never imported by
edgedl) gets the same input tensor, and a model it cannot load or run is reported as such.
The static ARM table of tools/mca.py is appended when its tools are installed.

Needs onnxruntime and opencv-python-headless (the [bench] extra) and matplotlib for the chart
(without it the markdown is still written). The machine this runs on is usually shared and
busy: the header records the load average before and after.
"""
import argparse
import datetime
import json
import math
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import bench_models as bm  # noqa: E402  (this folder's module: the runners and inputs)

import edgedl  # noqa: E402

RUNTIMES = ("edgedl", "onnxruntime", "opencv")
COLORS = {"edgedl": "#1f77b4", "onnxruntime": "#7f7f7f", "opencv": "#2ca02c"}


def _opencv(model):
    """A run() for OpenCV DNN on the model, or the reason it cannot run it (a string)."""
    try:
        import cv2
    except ImportError as e:
        return f"OpenCV not installed ({e})"
    cv2.setNumThreads(1)
    path = str(bm._shared() / "models" / f"{model}.onnx")
    try:
        net = cv2.dnn.readNetFromONNX(path)          # its default engine, on the CPU
        names = net.getUnconnectedOutLayersNames()
        x = bm._input(model)

        def run():
            net.setInput(x)
            return net.forward(names)
        for _ in range(3):                                   # load-time work, warm caches
            run()
    except cv2.error as e:
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        return f"OpenCV cannot run it: {lines[-1].strip() if lines else e}"
    return run


def measure(model, rounds, block):
    """{runtime: (wall seconds, process CPU seconds) or the reason it did not run}, one model,
    interleaved blocks. CPU time is the robust figure on a loaded machine: at one thread it is
    the run's own work, without the time spent waiting for a core."""
    runs = {"edgedl": bm._runner("edgedl", model, 1),
            "onnxruntime": bm._runner("onnxruntime", model, 1),
            "opencv": _opencv(model)}
    live = [r for r in RUNTIMES if callable(runs[r])]
    times = {r: [] for r in live}
    cpu = {r: [] for r in live}
    for i in range(max(1, rounds // block)):
        for r in live[i % len(live):] + live[:i % len(live)]:   # rotate who goes first
            f = runs[r]
            time.sleep(0.02)          # let the other runtime's idle spinning threads settle
            f()
            for _ in range(block):
                c0, t0 = time.process_time(), time.perf_counter()
                f()
                times[r].append(time.perf_counter() - t0)
                cpu[r].append(time.process_time() - c0)
    return {r: (times[r], cpu[r]) if r in times else runs[r] for r in RUNTIMES}


def _cpu():
    """CPU model, its vector flags of interest, logical CPUs."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and name in ("", platform.machine(),
                                                                          platform.processor()):
                    name = val.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    wanted = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
              "amx_tile", "asimd", "fphp", "asimddp", "sve", "neon", "vfpv4"]
    return name, [f for f in wanted if f in flags], os.cpu_count()


def _isa(flags):
    """The widest vector ISA among the flags, for the chart's title."""
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("sve", "SVE"),
                       ("asimd", "NEON"), ("neon", "NEON")):
        if flag in flags:
            return name
    return "no SIMD flags found"


def _versions():
    out = {"python": platform.python_version(), "numpy": np.__version__,
           "edgedl": f"{edgedl.__version__} (backend {edgedl.get_backend()})"}
    for mod, name in (("onnxruntime", "onnxruntime"), ("cv2", "opencv")):
        try:
            out[name] = __import__(mod).__version__
        except ImportError:
            out[name] = "not installed"
    return out


def _source():
    """Which edgedl was measured: the checkout's commit (and whether it had local changes)."""
    import subprocess
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{os.path.dirname(edgedl.__file__)} (not a git checkout)"
    return f"commit {rev}" + (" with uncommitted changes" if dirty else "")


def _mca_table():
    """tools/mca.py's table, or None when its tools are missing."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import mca
        tools = mca.find_tools()
    except Exception:                  # no cross compiler / llvm-mca here: the section is left out
        return None
    return mca.format_table(mca.analyse(tools=tools), tools)


def _geo(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def run(models, rounds, block, source=None):
    load0 = os.getloadavg()
    t0 = time.time()
    results = {m: measure(m, rounds, block) for m in models}
    cpu, flags, ncpu = _cpu()
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu, "flags": flags, "logical_cpus": ncpu, "threads": 1,
            "loadavg_before": load0, "loadavg_after": os.getloadavg(),
            "seconds": round(time.time() - t0, 1), "rounds": rounds, "block": block,
            "platform": platform.platform(), "versions": _versions(),
            "source": source or _source(),
            "models": {m: {r: (v if isinstance(v, str) else _stats(*v))
                           for r, v in res.items()} for m, res in results.items()}}


def _stats(wall, cpu):
    ms = lambda xs, q: 1e3 * float(np.percentile(xs, q))      # noqa: E731
    return {"median_ms": ms(wall, 50), "p25_ms": ms(wall, 25), "p75_ms": ms(wall, 75),
            "cpu_median_ms": ms(cpu, 50), "cpu_p25_ms": ms(cpu, 25), "cpu_p75_ms": ms(cpu, 75),
            "runs": len(wall)}


CLOCKS = {"cpu": ("cpu_", "CPU time"), "wall": ("", "wall time")}


def _ms(cell, clock="wall", key="median_ms"):
    return cell[CLOCKS[clock][0] + key] if isinstance(cell, dict) else None


def _table(rep, clock):
    """Markdown rows: medians [quartiles] per runtime on `clock`, ratios, geometric means."""
    out = ["| model | edgedl ms | onnxruntime ms | OpenCV DNN ms | edgedl / ORT | "
           "edgedl / OpenCV |", "|---|---:|---:|---:|---:|---:|"]
    ro, rc = [], []
    for m, res in rep["models"].items():
        cells = [f"{_ms(res[r], clock):.2f} [{_ms(res[r], clock, 'p25_ms'):.2f}-"
                 f"{_ms(res[r], clock, 'p75_ms'):.2f}]" if isinstance(res[r], dict) else "n/a"
                 for r in RUNTIMES]
        e, o, k = (_ms(res[r], clock) for r in RUNTIMES)
        ro.append(e / o if e and o else None)
        rc.append(e / k if e and k else None)
        cells += [f"{x:.2f}" if x else "n/a" for x in (ro[-1], rc[-1])]
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    geo = [_geo(ro), _geo(rc)]
    out.append("| geometric mean | | | | " + " | ".join(f"{g:.2f}" if g else "n/a"
                                                        for g in geo) + " |")
    return out


def _cap(text):
    return text[:1].upper() + text[1:]


def markdown(rep, clock, mca_table=None, chart=None):
    la = ", ".join(f"{x:.2f}" for x in rep["loadavg_before"])
    lb = ", ".join(f"{x:.2f}" for x in rep["loadavg_after"])
    v = rep["versions"]
    other = "wall" if clock == "cpu" else "cpu"
    out = ["# edgedl vs onnxruntime vs OpenCV DNN: the shared detectors", "",
           f"Generated by `python benchmarks/report.py --clock {clock}` on {rep['date']}.", "",
           "**Machine** (shared with other jobs, and busy while this ran):", "",
           f"- CPU: {rep['cpu']}; {rep['logical_cpus']} logical CPUs; vector flags: "
           f"{', '.join(rep['flags']) or 'none found'}",
           f"- threads: {rep['threads']} per runtime (edgedl num_threads=1, onnxruntime "
           "intra_op_num_threads=1, cv2.setNumThreads(1))",
           f"- load average (1, 5, 15 min): {la} before, {lb} after ({rep['seconds']} s run)",
           f"- {rep['platform']}; Python {v['python']}, NumPy {v['numpy']}, edgedl {v['edgedl']}, "
           f"onnxruntime {v['onnxruntime']}, OpenCV {v['opencv']}",
           f"- edgedl measured: {rep['source']}",
           f"- method: per model, {rep['rounds']} timed runs per runtime in interleaved blocks of "
           f"{rep['block']} (a 20 ms pause and one untimed run before each block, the "
           "runtimes' order rotating); medians, with the 25th-75th percentile in brackets. Each "
           "run is timed on two clocks: wall time, and the process's CPU time (at one thread, "
           "the run's own work without the time spent waiting for a core: on an idle machine "
           "the two agree, on a loaded one only the CPU time stays steady)", ""]
    if chart:
        out += [f"![per-model {CLOCKS[clock][1]} and ratios]({chart})", ""]
    out += [f"**{_cap(CLOCKS[clock][1])}** (the chart's clock):", ""] + _table(rep, clock)
    out += ["", f"{_cap(CLOCKS[other][1])}, same runs:", ""] + _table(rep, other)
    out += ["", "Ratios below 1 mean edgedl is faster."]
    notes = [f"- {m}, {r}: {c}" for m, res in rep["models"].items() for r, c in res.items()
             if isinstance(c, str)]
    if notes:
        out += ["", "Not measured:"] + notes
    if mca_table:
        out += ["", "## ARM, statically (`python tools/mca.py`)", "",
                "No Raspberry Pi here: the NEON loops are cross-compiled for aarch64 and "
                "analysed by llvm-mca (see tools/mca.py's docstring for the method).", "",
                "```", mca_table, "```"]
    return "\n".join(out) + "\n"


def chart(rep, path, clock):
    """Two panels: median time per model and runtime; ratios to onnxruntime."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    models = list(rep["models"])
    name = CLOCKS[clock][1]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 0.9 * len(models) + 2.6))
    h = 0.8 / len(RUNTIMES)
    for i, r in enumerate(RUNTIMES):
        ys = [j + (i - 1) * h for j in range(len(models))]
        vals = [_ms(rep["models"][m][r], clock) or 0 for m in models]
        ax1.barh(ys, vals, h, label=r, color=COLORS[r])
        for y, v in zip(ys, vals):
            ax1.text(v, y, f" {v:.1f}" if v else " n/a", va="center", fontsize=7)
    ax1.set_yticks(range(len(models)), models)
    ax1.invert_yaxis()
    ax1.set_xlabel(f"median {name} per inference, ms (1 thread; lower is better)")
    ax1.set_xlim(0, ax1.get_xlim()[1] * 1.12)          # room for the value labels
    ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8)
    for i, r in enumerate(("edgedl", "opencv")):
        ys = [j + (i - 0.5) * h for j in range(len(models))]
        vals = []
        for m in models:
            a, o = _ms(rep["models"][m][r], clock), _ms(rep["models"][m]["onnxruntime"], clock)
            vals.append(a / o if a and o else 0)
        ax2.barh(ys, vals, h, label=f"{r} / onnxruntime", color=COLORS[r])
        for y, v in zip(ys, vals):
            ax2.text(v, y, f" {v:.2f}" if v else " n/a", va="center", fontsize=7)
    ax2.axvline(1.0, color="k", lw=0.8)
    ax2.set_yticks(range(len(models)), models)
    ax2.invert_yaxis()
    ax2.set_xlabel(f"{name} relative to onnxruntime (< 1: faster)")
    ax2.set_xlim(0, ax2.get_xlim()[1] * 1.12)
    ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8)
    la = rep["loadavg_before"][0]
    fig.suptitle(f"{rep['cpu']} ({_isa(rep['flags'])}), 1 thread, medians of {rep['rounds']} "
                 f"interleaved runs ({name}); shared machine, load {la:.2f}; {rep['date']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="*", help=f"default: {', '.join(bm.MODELS)}")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "bench"),
                    help="output folder (default docs/bench)")
    ap.add_argument("--rounds", type=int, default=60, help="timed runs per runtime and model")
    ap.add_argument("--block", type=int, default=2, help="runs per interleaved block")
    ap.add_argument("--source", help="what edgedl is (default: the checkout's git commit)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                    help="the chart's and first table's clock (default cpu: steady on a loaded "
                         "machine; both are always measured and tabulated)")
    ap.add_argument("--no-mca", action="store_true", help="leave out the static ARM table")
    a = ap.parse_args(argv)
    if bm._shared() is None:
        print("report.py: ../shared/models not found (set EDGEDL_SHARED)", file=sys.stderr)
        return 2
    unknown = [m for m in a.models if m not in bm.MODELS]
    if unknown:
        print(f"report.py: unknown model(s) {unknown}; known: {list(bm.MODELS)}", file=sys.stderr)
        return 2
    rep = run(a.models or list(bm.MODELS), a.rounds, a.block, a.source)
    os.makedirs(a.out, exist_ok=True)
    png = None
    try:
        chart(rep, os.path.join(a.out, "models.png"), a.clock)
        png = "models.png"
    except ImportError:
        print("report.py: matplotlib not installed: no chart (pip install matplotlib)",
              file=sys.stderr)
    md = markdown(rep, a.clock, None if a.no_mca else _mca_table(), png)
    with open(os.path.join(a.out, "models.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.out, "models.json"), "w") as f:
        json.dump(rep, f, indent=1)
    print(md)
    print(f"wrote {a.out}/models.md, models.json" + (", models.png" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
