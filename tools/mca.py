"""Static analysis of the NEON kernels with llvm-mca (issue 13 item 6): no Pi needed.

    python tools/mca.py                      # GEMM, depthwise and exp tables, every CPU model
    python tools/mca.py --kernel gemm --json # the figures as JSON (tests/test_mca.py reads these)
    python tools/mca.py --asm                # also print each analysed loop

Each kernel's hot loop is compiled for aarch64 the way the wheels build it
(``aarch64-linux-gnu-gcc -march=armv8-a`` and the extensions' flags: -O3 ...), cut out of the
assembly (the loop with the most 128-bit vector instructions) and given to ``llvm-mca``:

  gemm       edl_gemm_base_2 (src_cy/edl_gemm.h): the 8 x 8 NEON micro-kernel, one k step per
             iteration (16 FMLA .4s = 64 multiply-adds); also its packing twin and the 8 x 4 one;
  depthwise  edl_full3_f / edl_full3s2_f: 3x3 depthwise rows at stride 1 and 2;
  exp        a y[i] = edl_exp_sat(x[i]) loop (edl_math.h's exp core, as the sigmoids call it);
  int8       edl_qgemm_pairs_neon (src_cy/edl_quant.h): the int8 GEMM as aarch64 runs it (no
             dot-product instructions on a Cortex-A72: 8-bit values widened to int16 pairs,
             SMLAL by element into int32), its k loop: 4 rows x 16 columns x one pair of k
             (128 multiply-adds) an iteration; also the plain C loop it replaced (now the
             tails'). Printed against the float32 8 x 8 micro-kernel: cycles per 8 x 8 block
             of one k step (64 multiply-adds) for both.

Figures per CPU model: cycles per iteration (llvm-mca's steady state over 200 iterations),
multiply-adds per cycle (integer ones for int8), and that as a fraction of two fp32 peaks:
  nominal  2 x 128-bit FMA pipes = 8 fp32 FMA / cycle (the issue's A72 / A76 peak);
  model    what the scheduling model itself allows: llvm-mca on a block of independent
           FMLA .4s (LLVM's Cortex-A57 model, which it uses for the A72, issues one FMLA .4s per
           cycle, taking both FP pipes: 4 FMA / cycle, half the nominal peak).
LLVM has no Cortex-A72 or A76 model of its own: -mcpu=cortex-a72 (and, up to at least LLVM 19,
cortex-a76) run on the Cortex-A57 model, named here from the resource names llvm-mca prints
(A57Unit*). For the Pi 5's A76 the nearest model is Neoverse N1 (the A76's server sibling:
4-wide dispatch, two full 128-bit FP pipes), present from LLVM 17 (Debian's llvm-19 package).

Tools: $EDGEDL_AARCH64_CC or aarch64-linux-gnu-gcc (Debian: gcc-aarch64-linux-gnu) and
$LLVM_MCA or the newest llvm-mca-NN / llvm-mca on PATH (Debian: llvm, llvm-19). Exit status 2
when one is missing.
"""
import argparse
import ast
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src_cy")
NOMINAL_FMA_PER_CYCLE = 8          # 2 pipes x 4 fp32 lanes
TARGET = 0.75                      # issue 13: the GEMM micro-kernel at >= 75% of peak
# -mcpu names: the Pi 4 (A72), the Pi 5 (A76) and the A76's nearest LLVM model
CPUS = ("cortex-a72", "cortex-a76", "neoverse-n1")
MODEL_NAMES = {"A57Unit": "Cortex-A57 (AArch64SchedA57)", "N1Unit": "Neoverse N1",
               "CortexA55Unit": "Cortex-A55", "THX2T99": "ThunderX2", "N2Unit": "Neoverse N2",
               "V1Unit": "Neoverse V1", "A510Unit": "Cortex-A510"}

# kernel -> (marker that finds its C source in src_cy, [(function, label, note)], extra C)
KERNELS = {
    "gemm": ("EDL_GEMM_MICRO(edl_gemm_base_2", [
        ("edl_gemm_base_2", "GEMM 8x8 micro-kernel (edl_gemm_base_2)", "one k step: 8x8 MACs"),
        ("edl_gemm_base_2_pk", "GEMM 8x8, packing twin (_pk)", "one k step, B row stored"),
        ("edl_gemm_base_1", "GEMM 8x4 micro-kernel (edl_gemm_base_1)", "one k step: 8x4 MACs"),
    ], ""),
    "depthwise": ("edl_full3_", [
        ("edl_full3_f", "depthwise 3x3 stride 1 row (edl_full3_f)", ""),
        ("edl_full3s2_f", "depthwise 3x3 stride 2 row (edl_full3s2_f)", ""),
    ], ""),
    "exp": ("edl_sigmoid_f32(", [
        ("edl_sigmoid_f32", "sigmoid loop (edl_exp_sat: the exp core)", ""),
        ("edl_swish_f32", "SiLU loop (edl_exp_sat)", ""),
        ("edl_mca_exp_neg", "exp(x <= 0) loop (edl_exp_neg, softmax's)", ""),
    ], """
EDL_CONTRACT void edl_mca_exp_neg(const float *restrict x, float *restrict y, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) y[i] = edl_exp_neg(x[i]);
}
"""),
    # (the innermost loop: the function's 4-row block loop holds it and scalar tails)
    "int8": ("edl_qgemm_pairs_neon(", [
        ("edl_qgemm_pairs_neon", "int8 GEMM 4x16 NEON (edl_qgemm_pairs_neon)",
         "4 rows x 16 columns x 2 k: 128 MACs"),
        ("edl_qgemm_pairs_c", "int8 GEMM, C pairs (edl_qgemm_pairs_c)",
         "4 rows x 8 columns x 2 k: 64 MACs (tails)"),
    ], ""),
}
#: kernels whose analysed loop is the innermost one (else the one with most vector work)
INNERMOST = {"int8"}
#: integer multiply(-accumulate) instructions -> MACs per instruction, by destination lanes
_INT_MAC = {"smull", "smull2", "smlal", "smlal2", "umull", "umull2", "umlal", "umlal2",
            "mla", "mul", "sdot", "udot"}


class ToolMissing(RuntimeError):
    """The cross compiler or llvm-mca is not installed."""


def find_tools():
    """(cross compiler, llvm-mca): paths, or ToolMissing naming the Debian package."""
    cc = os.environ.get("EDGEDL_AARCH64_CC") or shutil.which("aarch64-linux-gnu-gcc")
    if not cc:
        raise ToolMissing("aarch64-linux-gnu-gcc not found (Debian: apt-get install "
                          "gcc-aarch64-linux-gnu, or set EDGEDL_AARCH64_CC)")
    mca = os.environ.get("LLVM_MCA")
    if not mca:                     # the newest versioned one: newer LLVMs have more models
        found = []
        for d in os.environ.get("PATH", "").split(os.pathsep):
            for p in glob.glob(os.path.join(d, "llvm-mca-[0-9]*")):
                m = re.search(r"llvm-mca-(\d+)$", p)
                if m and os.access(p, os.X_OK):
                    found.append((int(m.group(1)), p))
        mca = max(found)[1] if found else shutil.which("llvm-mca")
    if not mca:
        raise ToolMissing("llvm-mca not found (Debian: apt-get install llvm, or llvm-19 for "
                          "the Neoverse N1 model; or set LLVM_MCA)")
    return cc, mca


# the wheels' flags when neither file below says (-std=c99 also keeps gcc from contracting
# a*b+c outside the kernels marked EDL_CONTRACT; -fno-trapping-math lets it vectorise selects)
DEFAULT_CFLAGS = ["-O3", "-std=c99", "-fno-math-errno", "-fno-trapping-math"]


def base_cflags():
    """The extensions' compiler flags: src_cy/build_flags.txt's `cflags` line, else
    setup.py's BASE_CFLAGS list, else DEFAULT_CFLAGS."""
    flags_file = os.path.join(SRC, "build_flags.txt")
    if os.path.exists(flags_file):
        with open(flags_file) as f:
            for line in f:
                key, _, value = line.split("#", 1)[0].partition("=")
                if key.strip() == "cflags":
                    return value.split()
    with open(os.path.join(ROOT, "setup.py")) as f:
        tree = ast.parse(f.read())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "BASE_CFLAGS"
                and isinstance(node.value, ast.List)):
            return list(ast.literal_eval(node.value))
    return list(DEFAULT_CFLAGS)


def _verbatim_c(path):
    """The C of a .pyx's ``cdef extern from *:`` verbatim blocks (as Cython emits them)."""
    with open(path) as f:
        text = f.read()
    blocks = re.findall(r'cdef extern from \*:\s*\n\s*"""(.*?)"""', text, re.S)
    return "\n".join(textwrap.dedent(b) for b in blocks)


def kernel_source(marker):
    """C text that defines the kernel: an #include of the header that holds `marker`, or the
    verbatim C blocks of the .pyx that does (headers first: C moves out of .pyx files)."""
    for path in sorted(glob.glob(os.path.join(SRC, "*.h"))):
        with open(path) as f:
            if marker in f.read():
                return f'#include "{os.path.basename(path)}"\n'
    for path in sorted(glob.glob(os.path.join(SRC, "*.pyx"))):
        c = _verbatim_c(path)
        if marker in c:
            return c
    raise LookupError(f"no C source in src_cy/ contains {marker!r}: did the kernel move or "
                      f"get renamed? (update KERNELS in tools/mca.py)")


def compile_asm(kernel, cc):
    """aarch64 assembly text of the kernel's translation unit."""
    marker, funcs, extra = KERNELS[kernel]
    keep = ", ".join(f"(void *){fn}" for fn, _, _ in funcs if not extra or fn not in extra)
    unit = ("#include <stddef.h>\n#include <stdint.h>\n" + kernel_source(marker) + extra
            + (f"\n__attribute__((used)) void *edl_mca_keep[] = {{{keep}}};\n" if keep else ""))
    flags = base_cflags()
    with tempfile.TemporaryDirectory() as d:
        c, s = os.path.join(d, "k.c"), os.path.join(d, "k.s")
        with open(c, "w") as f:
            f.write(unit)
        cmd = [cc, *flags, "-march=armv8-a", "-fno-asynchronous-unwind-tables", "-I", SRC,
               "-S", "-o", s, c]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
        with open(s) as f:
            return f.read()


# conditional branches (an -O3 loop is tested at its bottom; a plain `b` back is a jump into
# shared code): bne / b.ne (gcc writes the first, llvm the second), cbz, cbnz, tbz, tbnz
_BRANCH = re.compile(r"^\s*(b\.?[a-z]{2}|cbn?z|tbn?z)\s+(?:.*,\s*)?(\.L\w+)\s*$")


def hot_loop(asm, func, innermost=False):
    """Instructions of `func`'s loop with the most 128-bit vector instructions: the lines from
    a label to a conditional branch back to it (inner blocks included; ``innermost``: only
    loops with no loop inside)."""
    m = re.search(rf"^{re.escape(func)}:\n(.*?)^\s*\.size\s+{re.escape(func)},", asm, re.M | re.S)
    if not m:
        raise LookupError(f"{func} not found in the assembly")
    lines = m.group(1).splitlines()
    labels = {ln.strip()[:-1]: i for i, ln in enumerate(lines) if re.match(r"^\.L\w+:", ln)}
    best = None
    for i, ln in enumerate(lines):
        b = _BRANCH.match(ln)
        if b and labels.get(b.group(2), i) < i:
            body = [x.strip() for x in lines[labels[b.group(2)]:i + 1]]
            body = [x for x in body if x and not x.startswith(".") and not x.endswith(":")]
            if "ret" in body:           # a branch back to a shared exit, not a loop
                continue
            if innermost and any(_BRANCH.match(x) and labels.get(_BRANCH.match(x).group(2), i)
                                 < labels[b.group(2)] for x in body[:-1]):
                continue                # (a branch back past its start: a loop inside)
            if innermost and sum(bool(_BRANCH.match(x)) and labels.get(
                    _BRANCH.match(x).group(2), -1) >= labels[b.group(2)] and labels.get(
                    _BRANCH.match(x).group(2), -1) < i for x in body[:-1]):
                continue
            score = sum(".4s" in x or re.search(r"\bq\d+\b", x) is not None for x in body)
            if best is None or score > best[0]:
                best = (score, body)
    if best is None:
        raise LookupError(f"{func} has no loop")
    return best[1]


def loop_counts(body):
    """Multiply-adds (fp32 lanes), loads, stored floats and instructions of one iteration."""
    fma = macs = loads = stored = 0
    for x in body:
        op, _, args = x.partition("\t") if "\t" in x else x.partition(" ")
        op = op.strip()
        if op in ("fmla", "fmls"):
            fma += 4 if ".4s" in args else 2 if ".2s" in args else 1
        elif op in ("fmadd", "fmsub", "fnmadd", "fnmsub"):
            fma += 1
        elif op in _INT_MAC:
            dest = args.split(",")[0]
            lanes = 4 if ".4s" in dest else 8 if ".8h" in dest else 2 if ".2" in dest else 1
            macs += lanes * (4 if op.endswith("dot") else 1)
        if op.startswith(("ldr", "ldp", "ld1", "ldur")):
            loads += 1
        if op.startswith(("str", "stp", "st1", "stur")):
            regs = re.findall(r"\b([qsd])\d+\b|v\d+\.4s", args.split("[")[0])
            size = {"q": 4, "d": 2, "s": 1, "": 4}
            stored += sum(size[r] for r in regs)
    return {"instructions": len(body), "fma_lanes": fma, "int_macs": macs, "loads": loads,
            "floats_stored": stored}


def run_mca(mca, body, cpu, iterations=200):
    """llvm-mca's figures for `body` on `cpu`: cycles per iteration, dispatch width, block
    reciprocal throughput and the scheduling model (from its resource names)."""
    text = "\n".join(body) + "\n"
    cmd = [mca, "-mtriple=aarch64-linux-gnu", f"-mcpu={cpu}", f"-iterations={iterations}"]
    r = subprocess.run(cmd, input=text, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    out = r.stdout

    def num(key):
        m = re.search(rf"^{key}:\s+([\d.]+)", out, re.M)
        return float(m.group(1)) if m else float("nan")

    res = re.findall(r"^\[[\d.]+\]\s+-\s+(\S+)", out, re.M)
    prefix = os.path.commonprefix(res) if res else "?"
    prefix = re.sub(r"Unit.*", "Unit", prefix) if "Unit" in prefix else prefix
    model = next((v for k, v in MODEL_NAMES.items() if prefix.startswith(k)), prefix)
    return {"cycles_per_iter": num("Total Cycles") / num("Iterations"),
            "dispatch_width": num("Dispatch Width"), "block_rthroughput":
            num("Block RThroughput"), "model": model, "resources": sorted(set(res))}


def model_fma_ceiling(mca, cpu):
    """FMA lanes per cycle the model allows: 12 independent FMLA .4s per iteration."""
    body = [f"fmla v{i}.4s, v30.4s, v31.4s" for i in range(12)]
    return 48 / run_mca(mca, body, cpu, iterations=400)["cycles_per_iter"]


def analyse(kernels=tuple(KERNELS), cpus=CPUS, tools=None):
    """Rows of figures, one per (loop, CPU)."""
    cc, mca = tools or find_tools()
    ceilings = {cpu: model_fma_ceiling(mca, cpu) for cpu in cpus}
    rows = []
    for k in kernels:
        asm = compile_asm(k, cc)
        for fn, label, note in KERNELS[k][1]:
            body = hot_loop(asm, fn, k in INNERMOST)
            counts = loop_counts(body)
            macs = counts["int_macs"] if k == "int8" else counts["fma_lanes"]
            for cpu in cpus:
                m = run_mca(mca, body, cpu)
                cyc = m["cycles_per_iter"]
                fpc = macs / cyc
                rows.append({"kernel": k, "function": fn, "label": label, "note": note,
                             "cpu": cpu, **counts, **m, "macs": macs,
                             "cycles_per_64_macs": 64 * cyc / macs if macs else None,
                             "fma_per_cycle": fpc,
                             "frac_nominal": fpc / NOMINAL_FMA_PER_CYCLE,
                             "model_fma_ceiling": ceilings[cpu],
                             "frac_model": fpc / ceilings[cpu],
                             # (the GEMM's stores in the loop are its packed copy of B)
                             "cycles_per_float_out": (cyc / counts["floats_stored"]
                                                      if counts["floats_stored"] and
                                                      k not in ("gemm", "int8") else None),
                             "asm": body})
    return rows


def versions(tools):
    cc, mca = tools
    v = [subprocess.run([t, "--version"], capture_output=True, text=True).stdout
         for t in (cc, mca)]
    llvm = re.search(r"LLVM version ([\d.]+)", v[1])
    return {"cc": v[0].splitlines()[0] if v[0] else cc,
            "llvm_mca": f"{mca} (LLVM {llvm.group(1) if llvm else '?'})"}


def format_table(rows, tools):
    ver = versions(tools)
    out = [f"compiler: {ver['cc']} {' '.join(base_cflags())} -march=armv8-a",
           f"analyser: {ver['llvm_mca']}",
           f"peak: nominal {NOMINAL_FMA_PER_CYCLE} fp32 FMA/cycle (2 x 128-bit pipes); "
           "'model' = the scheduling model's own FMLA .4s ceiling", ""]
    seen = set()
    for r in rows:
        if r["cpu"] not in seen:
            seen.add(r["cpu"])
            out.append(f"-mcpu={r['cpu']}: scheduling model {r['model']}, dispatch width "
                       f"{r['dispatch_width']:.0f}, FMLA .4s ceiling "
                       f"{r['model_fma_ceiling']:.1f} FMA/cycle")
    out += ["", "per loop iteration: instr = instructions, ld = load instructions, FMA = fp32 "
            "multiply-adds (int8: integer ones), cyc/it = llvm-mca cycles;", "FMA/cyc over the "
            "nominal peak and over the model's ceiling; cyc/out = cycles per float stored "
            "(outputs)", ""]
    hdr = (f"{'loop':44s} {'cpu':12s} {'instr':>5s} {'ld':>3s} {'FMA':>4s} {'cyc/it':>7s} "
           f"{'FMA/cyc':>7s} {'%nominal':>8s} {'%model':>7s} {'cyc/out':>7s}")
    out += [hdr, "-" * len(hdr)]
    for r in rows:
        cpo = f"{r['cycles_per_float_out']:.2f}" if r["cycles_per_float_out"] else "-"
        out.append(f"{r['label']:44s} {r['cpu']:12s} {r['instructions']:5d} {r['loads']:3d} "
                   f"{r['macs']:4d} {r['cycles_per_iter']:7.2f} {r['fma_per_cycle']:7.2f} "
                   f"{100 * r['frac_nominal']:7.1f}% {100 * r['frac_model']:6.1f}% {cpo:>7s}")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", action="append", choices=sorted(KERNELS),
                    help="analyse only these (repeatable; default all)")
    ap.add_argument("--cpu", action="append", help=f"-mcpu values (default {', '.join(CPUS)})")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--asm", action="store_true", help="print each analysed loop")
    a = ap.parse_args(argv)
    try:
        tools = find_tools()
    except ToolMissing as e:
        print(f"mca.py: {e}", file=sys.stderr)
        return 2
    rows = analyse(tuple(a.kernel or KERNELS), tuple(a.cpu or CPUS), tools)
    if a.json:
        print(json.dumps({"tools": versions(tools), "rows": rows}, indent=1))
        return 0
    print(format_table(rows, tools))
    if a.asm:
        for r in rows:
            if r["cpu"] == rows[0]["cpu"]:
                print(f"\n{r['label']} ({r['function']}):\n    " + "\n    ".join(r["asm"]))
    gemm = [r for r in rows if r["function"] == "edl_gemm_base_2"]
    int8 = {r["cpu"]: r for r in rows if r["function"] == "edl_qgemm_pairs_neon"}
    if gemm and int8:
        print("\nint8 vs float32 GEMM, cycles per 8 x 8 block of one k step (64 MACs):")
        for r in gemm:
            q = int8.get(r["cpu"])
            if q:
                print(f"  {r['cpu']:12s} int8 {q['cycles_per_64_macs']:.2f}, float32 "
                      f"{r['cycles_per_64_macs']:.2f} (int8 / float32 "
                      f"{q['cycles_per_64_macs'] / r['cycles_per_64_macs']:.2f})")
    if gemm:
        print("\nGEMM micro-kernel vs the 75% target:")
        for r in gemm:
            print(f"  {r['cpu']:12s} ({r['model']}): {100 * r['frac_nominal']:.1f}% of the "
                  f"nominal peak, {100 * r['frac_model']:.1f}% of the model's ceiling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
