"""The ARM extension modules use only baseline instructions (issue 6 item 3, issue 17 item 1).

A Raspberry Pi 4 (Cortex-A72, ARMv8.0-A + CRC, no crypto) has no LSE atomics, RDM, FP16
arithmetic, dot product, RCpc, SVE... A module using one of them dies with SIGILL there.
The check disassembles every aarch64 module found in:
- ``$EDGEDL_ARM_BUILD`` (folders, ``os.pathsep``-separated; tools/test-arm.sh sets it to the
  CMake cross-build and to the modules ``pip install .`` built in the emulated root), or
  ``build-arm64/edgedl/_cy`` of the repo;
- the imported ``edgedl._cy`` package itself when running on aarch64.
- the wheels named by ``$EDGEDL_WHEELS`` (wheel files or folders of them, ``os.pathsep``-
  separated; tools/build-wheels.sh sets it): each is unpacked and every aarch64, 32-bit ARM and
  x86-64 shared object in it is checked, the vendored libgomp included (x86-64: AVX / AVX-512
  only inside the functions picked at run time, the target_clones copies and the micro-kernels
  of one ISA, named after it).
It is skipped with a message when there is no such module or no objdump for it.

32-bit ARM (armv7l wheels, Debian armhf) must stay within ARMv7-A + VFPv3 (+ NEON): no ARMv8
AArch32 additions (VMAXNM, VRINT*, VSEL, LDA/STL, CRC32, crypto), no VFPv4 fused
multiply-add, no half-precision conversions and no ARMv7VE integer divide, which a Pi 2's
Cortex-A7 has but the armv7-a baseline (and Debian's own builds) do not assume.

gcc's default ``-moutline-atomics`` links small ``__aarch64_*`` helpers (cas, swp, ldadd...)
that test ``__aarch64_have_lse_atomics`` at run time and otherwise use LL/SC (ldxr/stxr): LSE
inside those helpers is allowed, provided the LL/SC fallback is there.
"""
import os
import pathlib
import platform
import re
import shutil
import subprocess
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EM_AARCH64 = 183
EM_ARM = 40
EM_X86_64 = 62

_LSE = re.compile(r"^(casp?|swp|ld(add|clr|eor|set|[su]m(ax|in))|st(add|clr|eor|set|[su]m(ax|in)))"
                  r"(a|al|l)?(b|h)?$")
_BY_NAME = {
    "sqrdmlah": "v8.1 RDM", "sqrdmlsh": "v8.1 RDM",
    "sdot": "v8.2 dot product", "udot": "v8.2 dot product", "usdot": "v8.6 I8MM",
    "sudot": "v8.6 I8MM", "smmla": "v8.6 I8MM", "ummla": "v8.6 I8MM", "usmmla": "v8.6 I8MM",
    "bfdot": "v8.6 BF16", "bfmmla": "v8.6 BF16", "bfcvt": "v8.6 BF16", "bfcvtn": "v8.6 BF16",
    "fcmla": "v8.3 complex", "fcadd": "v8.3 complex", "fjcvtzs": "v8.3 JSCVT",
    "ldapr": "v8.3 RCpc", "ldaprb": "v8.3 RCpc", "ldaprh": "v8.3 RCpc",
    "retaa": "v8.3 PAuth", "retab": "v8.3 PAuth", "braa": "v8.3 PAuth", "brab": "v8.3 PAuth",
    "blraa": "v8.3 PAuth", "blrab": "v8.3 PAuth", "ldraa": "v8.3 PAuth", "ldrab": "v8.3 PAuth",
    "cfinv": "v8.4 FlagM", "rmif": "v8.4 FlagM", "setf8": "v8.4 FlagM", "setf16": "v8.4 FlagM",
    "frint32x": "v8.5 FRINTTS", "frint32z": "v8.5 FRINTTS", "frint64x": "v8.5 FRINTTS",
    "frint64z": "v8.5 FRINTTS", "ptrue": "SVE", "whilelo": "SVE", "whilelt": "SVE",
    "eor3": "v8.2 SHA3", "rax1": "v8.2 SHA3", "xar": "v8.2 SHA3", "bcax": "v8.2 SHA3",
}
_HALF = re.compile(r"\bh\d+\b|\.[48]h\b")         # FP16 operands (scalar h0, vector .4h/.8h)
_SVE = re.compile(r"\bz\d+\.[bhsdq]\b|\bp\d+/[zm]\b")
_FUNC = re.compile(r"^[0-9a-f]+ <(.+)>:$")
_INSN = re.compile(r"^\s*[0-9a-f]+:\s+(?:[0-9a-f]{8}\s+)?([a-z][a-z0-9.]*)\s*(.*)$")
# 32-bit ARM: Thumb-2 words are printed as "f8d3 1234" (with raw bytes), or just the mnemonic
_INSN_ARM32 = re.compile(r"^\s*[0-9a-f]+:\s+(?:[0-9a-f]{4,8}(?: [0-9a-f]{4})?\s+)?"
                         r"([a-z][a-z0-9.]*)\s*(.*)$")


def classify(mnemonic, operands=""):
    """Why this instruction is not baseline ARMv8.0-A (+CRC), or None if it is."""
    m = mnemonic.split(".")[0]
    if _LSE.match(m):
        return "v8.1 LSE atomic"
    if m in _BY_NAME:
        return _BY_NAME[m]
    if m.startswith(("aes", "sha1", "sha256", "sha512", "sm3", "sm4")) or (
            m.startswith("pmull") and ".1q" in operands):
        return "crypto extension (the Pi 4 has none)"
    if _SVE.search(operands):
        return "SVE"
    # FP16 arithmetic is v8.2; conversions to/from half (fcvt*) are v8.0. The integer
    # instructions on .4h/.8h vectors do not start with "f".
    if m.startswith("f") and not m.startswith("fcvt") and _HALF.search(operands):
        return "v8.2 FP16 arithmetic"
    return None


# (No HLT: compilers never emit it, and in stripped Thumb code, which has no mapping symbols,
# objdump decodes literal-pool words such as 0xbaa4 as "hlt".)
_ARM32_V8 = re.compile(r"^(vmaxnm|vminnm|vrint[anpmxzr]|vsel(eq|ge|gt|vs)|vcvt[anpm]|"
                       r"ld(a|aex)[bhd]?|st(l|lex)[bhd]?|sevl|dcps[123])$")


def classify_arm32(mnemonic, operands=""):
    """Why this 32-bit ARM instruction is beyond ARMv7-A + VFPv3 + NEON, or None if it is not."""
    m = mnemonic.split(".")[0]
    if _ARM32_V8.match(m):
        return "ARMv8 AArch32"
    if m.startswith(("aes", "sha1", "sha256")) or (m == "vmull" and ".p64" in mnemonic):
        return "ARMv8 crypto"
    if m.startswith("crc32"):
        return "ARMv8 CRC32"
    if m in ("vfma", "vfms", "vfnma", "vfnms"):
        return "VFPv4 fused multiply-add"
    if m in ("vcvtb", "vcvtt") or (m == "vcvt" and ".f16" in mnemonic):
        return "half-precision extension"
    if m in ("sdiv", "udiv"):
        return "ARMv7VE integer divide"
    return None


def scan_arm32(disassembly):
    """[(function, instruction, why)] for every 32-bit ARM instruction beyond the baseline."""
    bad, func = [], "?"
    for line in disassembly.splitlines():
        f = _FUNC.match(line)
        if f:
            func = f.group(1)
            continue
        i = _INSN_ARM32.match(line)
        if i:
            why = classify_arm32(i.group(1), i.group(2))
            if why is not None:
                bad.append((func, f"{i.group(1)} {i.group(2)}".strip(), why))
    return bad


_X86_WIDE = re.compile(r"%[yz]mm\d+|%k[1-7]\b")
# the functions allowed AVX: target_clones copies (name.arch_x86_64_v3.N / _v4) and the
# micro-kernels written for one ISA, called only after a CPU check (edl_gemm_avx2_*,
# edl_gemm_avx512_*, edl_qgemm_*_vnni, ...)
_X86_DISPATCHED = re.compile(r"\.arch_x86_64_v[34]\b|avx2|avx512|vnni")


def scan_x86(disassembly):
    """[(function, instruction, why)]: AVX (VEX/EVEX) code outside the run-time-dispatched
    functions, which would die with SIGILL on an x86-64 without AVX."""
    bad, func = [], "?"
    for line in disassembly.splitlines():
        f = _FUNC.match(line)
        if f:
            func = f.group(1)
            continue
        i = _INSN.match(line)
        if not i or _X86_DISPATCHED.search(func):
            continue
        mnem, ops = i.group(1), i.group(2)
        if (mnem.startswith("v") and mnem not in ("verr", "verw")) or _X86_WIDE.search(ops):
            bad.append((func, f"{mnem} {ops}".strip(), "AVX outside a dispatched clone"))
    return bad


def scan(disassembly):
    """(bad, helpers): bad = [(function, instruction, why)] outside the outline-atomics helpers;
    helpers = {helper: has an LL/SC fallback} for the __aarch64_* helpers that use LSE.

    In a stripped library (the vendored libgomp) the helpers have no names: there an LSE
    instruction is accepted in the helpers' shape, ``cbz w16, <LL/SC path>`` (w16 = the
    run-time LSE flag) right before it and ``ret`` right after it."""
    bad, helpers, func, lse, llsc = [], {}, "?", False, False
    prev, pending = ("", ""), None

    def close():
        if func.startswith("__aarch64_") and lse:
            helpers[func] = llsc
    for line in disassembly.splitlines():
        f = _FUNC.match(line)
        if f:
            close()
            func, lse, llsc = f.group(1), False, False
            continue
        i = _INSN.match(line)
        if not i:
            continue
        mnem, ops = i.group(1), i.group(2)
        if pending is not None:     # an unnamed helper's LSE instruction: ret must follow
            if mnem != "ret":
                bad.append(pending)
            pending = None
        if mnem in ("ldxr", "ldaxr", "ldxrb", "ldaxrb", "ldxrh", "ldaxrh", "ldxp", "ldaxp"):
            llsc = True
        why = classify(mnem, ops)
        unnamed_helper = prev[0] == "cbz" and prev[1].startswith("w16,")
        prev = (mnem, ops)
        if why is None:
            continue
        if func.startswith("__aarch64_") and why == "v8.1 LSE atomic":
            lse = True
            continue
        if why == "v8.1 LSE atomic" and unnamed_helper:
            pending = (func, f"{mnem} {ops}".strip(), why)
            continue
        bad.append((func, f"{mnem} {ops}".strip(), why))
    if pending is not None:
        bad.append(pending)
    close()
    return bad, helpers


def _elf_machine(path):
    with open(path, "rb") as fh:
        head = fh.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def _module_dirs():
    dirs = [pathlib.Path(d) for d in os.environ.get("EDGEDL_ARM_BUILD", "").split(os.pathsep) if d]
    if not dirs:
        dirs.append(REPO / "build-arm64" / "edgedl" / "_cy")
    if platform.machine() in ("aarch64", "arm64"):
        try:
            import edgedl._cy
            dirs += [pathlib.Path(p) for p in edgedl._cy.__path__]
        except ImportError:
            pass
    return dirs


def _modules():
    found = set()
    for d in _module_dirs():
        if d.is_dir():
            found |= {p.resolve() for p in d.iterdir()
                      if p.suffix == ".so" and _elf_machine(p) == EM_AARCH64}
    return sorted(found)


def _objdump():
    for name in ("aarch64-linux-gnu-objdump", "llvm-objdump"):
        if shutil.which(name):
            return shutil.which(name)
    if platform.machine() in ("aarch64", "arm64") and shutil.which("objdump"):
        return shutil.which("objdump")
    return None


# ------------------------------------------------------------- the checker itself (always run)
@pytest.mark.parametrize("insn, ops, bad", [
    ("ldaddal", "w1, w0, [x2]", True), ("casal", "w0, w1, [x2]", True), ("swpa", "x0, x1, [x2]", True),
    ("stadd", "w0, [x1]", True), ("ldsmaxalb", "w0, w1, [x2]", True), ("caspal", "x0, x1, x2, x3, [x4]", True),
    ("sdot", "v0.4s, v1.16b, v2.16b", True), ("fadd", "h0, h1, h2", True),
    ("fmla", "v0.8h, v1.8h, v2.8h", True), ("ld1w", "{z0.s}, p0/z, [x0]", True),
    ("ldapr", "w0, [x1]", True), ("aese", "v0.16b, v1.16b", True),
    ("ldaxr", "w0, [x1]", False), ("stlxr", "w3, w0, [x1]", False), ("ldr", "q0, [x1]", False),
    ("fadd", "v0.4s, v1.4s, v2.4s", False), ("fcvtn", "v0.4h, v1.4s", False),
    ("fcvt", "h0, s0", False), ("add", "v0.8h, v1.8h, v2.8h", False), ("fmaxnm", "s0, s1, s2", False),
    ("crc32w", "w0, w0, w1", False), ("ldset", "w0, w1, [x2]", True), ("ldsetal", "w0, w1, [x2]", True),
    ("ldp", "x0, x1, [sp]", False), ("stp", "x29, x30, [sp, #-16]!", False), ("paciasp", "", False),
])
def test_classify(insn, ops, bad):
    assert (classify(insn, ops) is not None) == bad, (insn, ops, classify(insn, ops))


def test_scan_allows_lse_only_in_outline_helpers():
    dis = """
0000000000001000 <__aarch64_ldadd4_acq_rel>:
    1000:	ldaddal	w0, w1, [x2]
    1004:	ldaxr	w16, [x1]
0000000000002000 <kernel>:
    2000:	ldaxr	w0, [x1]
    2004:	ldaddal	w0, w1, [x2]
"""
    bad, helpers = scan(dis)
    assert helpers == {"__aarch64_ldadd4_acq_rel": True}
    assert bad == [("kernel", "ldaddal w0, w1, [x2]", "v8.1 LSE atomic")]


def test_scan_allows_lse_in_unnamed_helpers_of_a_stripped_library():
    dis = """
0000000000034000 <acc_exported@@OACC_2.5>:
   345b8:	ldrb	w16, [x16, #2256]
   345bc:	cbz	w16, 345c8 <acc_exported@@OACC_2.5+0x11c>
   345c0:	casa	w0, w1, [x2]
   345c4:	ret
   345c8:	mov	w16, w0
   345cc:	ldaxr	w0, [x2]
   345d0:	cbz	w0, 345e0 <acc_exported@@OACC_2.5+0x130>
   345d4:	swpa	w0, w0, [x1]
   345d8:	add	x0, x0, #1
   345dc:	ldadd	x0, x0, [x1]
"""
    bad, _ = scan(dis)
    assert [b[1] for b in bad] == ["swpa w0, w0, [x1]", "ldadd x0, x0, [x1]"]


@pytest.mark.parametrize("insn, ops, bad", [
    ("vadd.f32", "d0, d1, d2", False), ("vmla.f32", "q0, q1, q2", False),
    ("vcvt.s32.f32", "s0, s0", False), ("vcvtr.s32.f32", "s0, s0", False), ("ldrex", "r0, [r1]", False),
    ("strexd", "r0, r2, r3, [r1]", False), ("dmb", "ish", False), ("vsqrt.f32", "s0, s1", False),
    ("vmaxnm.f32", "s0, s1, s2", True), ("vrintz.f32", "s0, s1", True), ("vseleq.f32", "s0, s1, s2", True),
    ("vcvta.s32.f32", "s0, s1", True), ("lda", "r0, [r1]", True), ("stlex", "r2, r0, [r1]", True),
    ("crc32w", "r0, r0, r1", True), ("aese.8", "q0, q1", True), ("vfma.f32", "d0, d1, d2", True),
    ("vcvtb.f32.f16", "s0, s1", True), ("vcvt.f16.f32", "d0, q1", True), ("sdiv", "r0, r1, r2", True),
])
def test_classify_arm32(insn, ops, bad):
    assert (classify_arm32(insn, ops) is not None) == bad, (insn, ops, classify_arm32(insn, ops))


# ---------------------------------------------------------------- the built modules
def _check(mods, machine):
    """Disassembly problems of the modules of one architecture (skips without an objdump)."""
    if machine == EM_X86_64:
        objdump, kind = shutil.which("objdump") if platform.machine() == "x86_64" else None, "x86_64"
    elif machine == EM_AARCH64:
        objdump, kind = _objdump(), "aarch64"
    else:
        objdump, kind = shutil.which("arm-linux-gnueabihf-objdump") or shutil.which("llvm-objdump"), "arm"
    if objdump is None:
        pytest.skip(f"no {kind} objdump (binutils for {kind})")
    problems = []
    for so in mods:
        out = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(so)], capture_output=True,
                             text=True, check=True).stdout
        if machine == EM_X86_64:
            bad = scan_x86(out)
        elif machine == EM_AARCH64:
            assert any(_INSN.match(l) for l in out.splitlines()), f"no instructions in {so}"
            bad, helpers = scan(out)
            problems += [f"{so.name}: {h} uses LSE with no LL/SC fallback"
                         for h, ok in helpers.items() if not ok]
        else:
            assert any(_INSN_ARM32.match(l) for l in out.splitlines()), f"no instructions in {so}"
            bad = scan_arm32(out)
        problems += [f"{so.name}: {fn}: {insn} ({why})" for fn, insn, why in bad[:20]]
    return problems


def test_aarch64_modules_are_baseline_armv8():
    mods = _modules()
    if not mods:
        pytest.skip("no aarch64 extension modules to check: cross-build them with "
                    "`bash tools/test-arm.sh cross` (or cmake -DCMAKE_TOOLCHAIN_FILE="
                    "cmake/aarch64-linux-gnu.cmake -B build-arm64) or set EDGEDL_ARM_BUILD")
    problems = _check(mods, EM_AARCH64)
    assert not problems, "non-baseline ARMv8 instructions:\n" + "\n".join(problems)


def _wheels():
    found = []
    for entry in os.environ.get("EDGEDL_WHEELS", "").split(os.pathsep):
        p = pathlib.Path(entry) if entry else None
        if p is not None and p.is_dir():
            found += sorted(p.glob("*.whl"))
        elif p is not None and p.suffix == ".whl":
            found.append(p)
    return found


@pytest.fixture(scope="module")
def wheel_objects(tmp_path_factory):
    """{ELF machine: [shared objects]} of the ARM wheels in $EDGEDL_WHEELS, unpacked."""
    wheels = _wheels()
    if not wheels:
        pytest.skip("no wheels to check: set EDGEDL_WHEELS to wheel files or folders "
                    "(tools/build-wheels.sh does, after building them into dist/)")
    by_machine = {}
    for whl in wheels:
        dest = tmp_path_factory.mktemp(whl.stem[:40])
        with zipfile.ZipFile(whl) as z:
            z.extractall(dest)
        for so in dest.rglob("*.so*"):
            if so.is_file():
                by_machine.setdefault(_elf_machine(so), []).append(so)
    return by_machine


@pytest.mark.parametrize("machine", [EM_AARCH64, EM_ARM, EM_X86_64], ids=["aarch64", "armv7l", "x86_64"])
def test_wheel_objects_are_baseline(wheel_objects, machine):
    """Every shared object of the wheels, vendored libraries included: baseline instructions
    (x86-64: AVX only in the run-time-dispatched functions)."""
    mods = wheel_objects.get(machine)
    if not mods:
        pytest.skip(f"no {({EM_AARCH64: 'aarch64', EM_ARM: 'armv7l'}).get(machine, 'x86_64')} "
                    "wheel in $EDGEDL_WHEELS")
    assert any(m.name.startswith("conv.") for m in mods), [m.name for m in mods]
    problems = _check(mods, machine)
    assert not problems, "non-baseline instructions in the wheels:\n" + "\n".join(problems)


def test_scan_x86_allows_avx_only_in_dispatched_functions():
    dis = """
0000000000001000 <edl_sigmoid_f32.arch_x86_64_v4.0>:
    1000:	vmovups (%rdi),%zmm0
0000000000001100 <edl_gemm_avx2_1>:
    1100:	vfmadd231ps %ymm1,%ymm2,%ymm0
0000000000002000 <kernel>:
    2000:	movups (%rdi),%xmm0
    2004:	vaddps %xmm1,%xmm0,%xmm0
"""
    assert scan_x86(dis) == [("kernel", "vaddps %xmm1,%xmm0,%xmm0", "AVX outside a dispatched clone")]
