#!/usr/bin/env bash
# tools/test-arm.sh - Raspberry Pi readiness under emulation (issue 6), end to end.
#
#   bash tools/test-arm.sh                 # arm64 + armhf + cross-build (items 1-3)
#   bash tools/test-arm.sh arm64           # 1. pip install . and the whole suite in emulated arm64
#   bash tools/test-arm.sh armhf           # 2. the same in emulated 32-bit ARM (Debian numpy, no numba)
#   bash tools/test-arm.sh cross           # 3. CMake cross-build on the host, disassembly check,
#                                          #    kernel tests of those modules in emulated arm64
#   bash tools/test-arm.sh startup         # 4. start-up figures in emulated arm64 (not run by default)
#   bash tools/test-arm.sh wheels [ARGS]   # issue 17 item 2: the wheels and sdist in fresh roots
#                                          #    (tools/test-arm-wheels.sh; not run by default)
#
# Needs root, Debian's apt and PyPI. The emulated roots are built by arm_chroot.sh (from
# $EDGEDL_SHARED/tools or ../shared/tools beside the repo) on first use: ~8 min and ~1 GB each,
# under $ARM_ROOT (default ~/.cache/edgedl-armroot). Later runs reuse them.
# Settings: ARM_ROOT, ARM_CPU (cortex-a72 = Pi 4, cortex-a76 = Pi 5), EDGEDL_SHARED,
# ARM_PYTEST (pytest arguments; default: the whole suite, tests/), ARM_PYTEST_HF (armhf's),
# ARM_SRC (the source tree to test, default this checkout; e.g. a `git archive HEAD` export).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${EDGEDL_SHARED:-$REPO/../shared}
CHROOT=$SHARED/tools/arm_chroot.sh
[ -f "$CHROOT" ] || { echo "test-arm.sh: $CHROOT not found (set EDGEDL_SHARED)" >&2; exit 2; }
SHARED=$(cd "$SHARED" && pwd)

export ARM_ROOT=${ARM_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/edgedl-armroot}
export ARM_OUT=${ARM_OUT:-$ARM_ROOT/out}          # bind-mounted at /out inside the roots
export ARM_SRC=${ARM_SRC:-$REPO}                  # the sources to test (default: this checkout),
export ARM_SRC_MODE=copy                          # copied afresh to /src for every command
export ARM_SUITE=${ARM_SUITE:-bookworm}
ARM_PYTEST=${ARM_PYTEST:-tests}
ARM_PYTEST_HF=${ARM_PYTEST_HF:-$ARM_PYTEST}
# Host-downloaded wheels for the venvs (arm_chroot.sh adds them to its defaults' venv).
PIP_ARM64="numpy numba onnxruntime onnx cython pytest setuptools wheel pytest-benchmark hypothesis Pillow"
PIP_ARM64="$PIP_ARM64 pyflakes radon opencv-python-headless av dask[distributed] tqdm"   # the rest of [test]
PIP_ARMHF="pytest cython>=3.0 setuptools wheel pytest-benchmark hypothesis"   # Debian's cython3 is 0.29
# libgomp1: the extensions use OpenMP (Raspberry Pi OS has it; a minimal Debian root does not).
APT_ARM64="libgomp1"
# PyPI has no armv7 wheels of Pillow or onnx: Debian's (onnx 1.12) are the tests' model writer;
# edgedl itself never imports onnx (do_armhf checks a model and the demo run with it blocked).
APT_ARMHF="libgomp1 python3-pil python3-onnx"

log() { printf '\n[test-arm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
# arm ARCH CMD...: arm_chroot.sh with that architecture's settings.
arm() {
  local arch=$1; shift
  if [ "$arch" = arm64 ]; then
    ARM_ARCH=arm64 ARM_PIP="$PIP_ARM64" ARM_APT="$APT_ARM64" bash "$CHROOT" "$@"
  else
    ARM_ARCH=armhf ARM_PIP="$PIP_ARMHF" ARM_APT="$APT_ARMHF" bash "$CHROOT" "$@"
  fi
}
rootfs() { echo "${ARM_ROOTFS:-$ARM_ROOT/$ARM_SUITE-$1}"; }

setup() {   # build/refresh the root, give it shared/ (models, images) at /out/shared
  log "setup $1 root (first time ~8 min)"
  arm "$1" setup
  mkdir -p "$ARM_OUT/shared"
  cp -a "$SHARED/models" "$SHARED/images" "$ARM_OUT/shared/" 2>/dev/null || true
}

# The in-root part of items 1 and 2: install the package (non-editable, as a user would), show
# what was found, run the suite from /src with the installed package (pytest puts tests/ on
# sys.path, not /src), and copy the built modules out for the disassembly test.
install_and_test() {   # ARCH EXTRAS PIP_FLAGS REQUIRE PYTEST_ARGS [SHELL_CMD before pytest, in /src]
  local arch=$1 extras=$2 flags=$3 req=$4 args=$5 pre=${6:-true} t=$SECONDS
  log "$arch: pip install .$extras and pytest $args"
  ARM_ENV="EDGEDL_SHARED=/out/shared EDGEDL_REQUIRE_BACKENDS=$req" arm "$arch" run "
    set -e
    pip install $flags '.$extras' >/tmp/pip.log 2>&1 || { tail -40 /tmp/pip.log; exit 1; }
    cd /tmp
    python -c 'import edgedl, sys; edgedl.show_config(); assert \"site-packages\" in edgedl.__file__, edgedl.__file__'
    mkdir -p /out/pip-$arch && rm -f /out/pip-$arch/*.so
    cp \"\$(python -c 'import edgedl, os; print(os.path.dirname(edgedl.__file__))')\"/_cy/*.so /out/pip-$arch/
    # hide the source package, so tests and their subprocesses all use the installed one
    cd /src && mv edgedl edgedl.src && $pre
    pytest -q -p no:cacheprovider --tb=short -o faulthandler_timeout=900 $args"
  log "$arch: install + tests took $((SECONDS - t)) s (emulated)"
}

do_arm64() {
  setup arm64
  install_and_test arm64 "[test]" "--no-build-isolation" 1 "$ARM_PYTEST"
  log "arm64: edgedl detect (the demo: bundled model and image)"
  arm arm64 run 'set -e; cd /tmp; edgedl detect; edgedl detect --json >/tmp/det.json
    python -c "import json; d = json.load(open(\"/tmp/det.json\")); print(\"detect --json:\", str(d)[:300])"'
}

do_armhf() {
  setup armhf
  # Debian's numpy and Pillow; no numba ("reported absent", issue 6 item 2): Debian's own
  # python3-numba (0.56, pulled in by arm_chroot.sh's debian profile) is removed once.
  if [ -d "$(rootfs armhf)/usr/lib/python3/dist-packages/numba" ]; then
    log "armhf: removing Debian's python3-numba (the target has no numba)"
    arm armhf exec apt-get remove -y -qq python3-numba python3-llvmlite >/dev/null
  fi
  # Debian's python3-onnx (1.12) is there for the tests, which write their models with it;
  # the tests that need a newer onnx, onnxruntime (the oracle) or numba skip, saying so.
  install_and_test armhf "" "--no-build-isolation" 0 "$ARM_PYTEST_HF"

  log "armhf: numba absent; with onnx (and protobuf) blocked: a model loads and runs, the demo"
  arm armhf run '
    cd /tmp
    python - <<EOF
import importlib.abc, io, os, runpy, sys
class Blocked(importlib.abc.MetaPathFinder):   # as if onnx were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "onnx" or name.startswith("google.protobuf"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
sys.meta_path.insert(0, Blocked())
import numpy as np, edgedl
s = io.StringIO(); edgedl.show_config(s); print(s.getvalue())
assert "numba" not in edgedl.backends() and "cython" in edgedl.backends(), edgedl.backends()
assert "backend numba   MISSING" in s.getvalue()
model = os.path.join(os.path.dirname(edgedl.__file__), "data", "fastestdet.onnx")
sess = edgedl.InferenceSession(model)
y = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 352, 352), np.float32)})[0]
print("fastestdet output", y.shape)
sys.argv = ["edgedl", "detect"]
try:
    runpy.run_module("edgedl", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
bad = sorted(m for m in sys.modules if m.split(".")[0] == "onnx" or m.startswith("google.protobuf"))
assert not bad, bad
print("the model and the demo ran with onnx blocked")
EOF'
}

do_cross() {
  command -v cmake >/dev/null || { apt-get update -qq; apt-get install -y -qq cmake >/dev/null; }
  python3 -c 'import Cython' 2>/dev/null || python3 -m pip install -q "cython>=3.0"
  # only the root's files are needed here: skip setup when done (its lock is held while
  # another command runs in that root, and this step may run alongside)
  if [ -f "$(rootfs arm64)/.arm_setup_done" ] && [ -d "$ARM_OUT/shared" ]; then :; else setup arm64; fi
  local b=$ARM_OUT/cross-arm64 t=$SECONDS
  log "cross: CMake build with cmake/aarch64-linux-gnu.cmake into $b"
  rm -rf "$b"
  cmake -S "$ARM_SRC" -B "$b" -DCMAKE_TOOLCHAIN_FILE="$REPO/cmake/aarch64-linux-gnu.cmake" \
        -DEDGEDL_SYSROOT="$(rootfs arm64)" >"$b.log" 2>&1 || { tail -30 "$b.log"; exit 1; }
  grep -E 'OpenMP|Check for working C compiler' "$b.log" || true
  cmake --build "$b" -j 2 >>"$b.log" 2>&1 || { tail -30 "$b.log"; exit 1; }
  ls "$b/edgedl/_cy"
  log "cross: build took $((SECONDS - t)) s; disassembly check (host)"
  local dirs=$b/edgedl/_cy
  [ -d "$ARM_OUT/pip-arm64" ] && dirs=$dirs:$ARM_OUT/pip-arm64   # the in-root pip build too
  (cd "$ARM_SRC" && EDGEDL_ARM_BUILD=$dirs python3 -m pytest -q -p no:cacheprovider tests/test_arm_build.py)
  log "cross: the cross-built modules in emulated arm64: import + kernel tests (Cython, NumPy)"
  # A private copy of the sources with these modules in /out (not /src: this step may run
  # while another command uses /src). `python -m pytest` from there: that package wins over
  # the venv's. numba is deselected: the cross build only makes the Cython modules.
  local s=$ARM_OUT/cross-src
  rm -rf "$s"; mkdir -p "$s"
  tar -C "$ARM_SRC" --exclude=.git --exclude=build --exclude='build-*' --exclude=__pycache__ \
      --exclude='*.so' --exclude='*.egg-info' -cf - . | tar -C "$s" -xf -
  cp "$b"/edgedl/_cy/*.so "$s/edgedl/_cy/"
  # PYTHONPATH: the tests' `python -c` subprocesses run with PYTHONSAFEPATH=1 (no current
  # folder on sys.path) and there is no installed package here
  ARM_ENV="EDGEDL_SHARED=/out/shared EDGEDL_REQUIRE_BACKENDS=1 PYTHONPATH=/out/cross-src" \
    arm arm64 exec /bin/bash -c '
    set -e; cd /out/cross-src
    python tools/import_built.py edgedl/_cy
    python -c "import edgedl._cy._runtime as m; assert m.__file__.startswith(\"/out/\"), m.__file__"
    python -m pytest -q -p no:cacheprovider --tb=short -o faulthandler_timeout=900 -k "not numba" tests/kernels tests/test_registry.py'
}

# 4. Start-up in emulated arm64 (ratios only: emulated times are not benchmarks).
# Installed with pip --target into /opt/edl-startup (root-owned: read-only for a user), from a
# copy under /out, so it runs alongside the other steps without touching /src or the venv.
do_startup() {
  if [ -f "$(rootfs arm64)/.arm_setup_done" ] && [ -d "$ARM_OUT/shared" ]; then :; else setup arm64; fi
  log "startup: edgedl warmup, import + first inference vs steady state, read-only install"
  local s=$ARM_OUT/startup-src
  rm -rf "$s"; mkdir -p "$s"
  tar -C "$ARM_SRC" --exclude=.git --exclude=build --exclude='build-*' --exclude=__pycache__ \
      --exclude='*.so' --exclude='*.egg-info' -cf - . | tar -C "$s" -xf -
  ARM_ENV="EDGEDL_SHARED=/out/shared EDGEDL_NUM_THREADS=1 PYTHONPATH=/opt/edl-startup" \
    arm arm64 exec /bin/bash -c '
    rm -rf /opt/edl-startup /tmp/edl-startup-build; cp -a /out/startup-src /tmp/edl-startup-build
    pip install --no-build-isolation --no-deps --target /opt/edl-startup /tmp/edl-startup-build \
      >/tmp/pip-startup.log 2>&1 || { tail -40 /tmp/pip-startup.log; exit 1; }
    chmod -R go-w /opt/edl-startup
    edgedl() { python -m edgedl "$@"; }
    cd /tmp
    cat >/tmp/first.py <<EOF
import sys, time
t0 = time.perf_counter()
import numpy as np, edgedl
sess = edgedl.InferenceSession(sys.argv[1], backend=sys.argv[2])
t1 = time.perf_counter()
inp = sess.get_inputs()[0]
x = np.random.default_rng(0).random([d if isinstance(d, int) and d > 0 else 1 for d in inp.shape],
                                    dtype=np.float32)
t2 = time.perf_counter(); sess.run(None, {inp.name: x}); t3 = time.perf_counter()
steady = []
for _ in range(3):
    a = time.perf_counter(); sess.run(None, {inp.name: x}); steady.append(time.perf_counter() - a)
load, first, st = t1 - t0, t3 - t2, sorted(steady)[1]
print(f"  {sys.argv[2]:6s}: import+load {load:.2f} s, first run {first:.2f} s, steady run {st:.2f} s;"
      f" (import+load+first)/(import+load+steady) = {(load + first) / (load + st):.2f}")
EOF
    m=/out/shared/models/fastestdet.onnx
    has_session() { python -c "import edgedl.onnx.session" 2>/dev/null; }
    echo "== as root (package dir writable, numba cache in the package)"
    TIMEFORMAT="edgedl warmup, empty cache: %R s"; time edgedl warmup >/dev/null
    TIMEFORMAT="edgedl warmup, warm cache:  %R s"; time edgedl warmup >/dev/null
    if has_session; then
      echo "import + first inference of $m (warm cache), fresh process each:"
      for b in numba cython numpy; do python /tmp/first.py $m $b; done
    else
      echo "edgedl.InferenceSession not available: inference start-up not measured"
    fi
    echo "== read-only install: as nobody, HOME=/tmp/h"
    rm -rf /tmp/h; mkdir -p /tmp/h; chown 65534 /tmp/h
    asuser() { setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/tmp/h "$@"; }
    python -c "import edgedl; assert edgedl.__file__.startswith(\"/opt/edl-startup/\"), edgedl.__file__"
    asuser python -c "import os, edgedl; from edgedl import _config
print(\"package dir writable:\", os.access(_config._PKG_DIR, os.W_OK), \"-> numba cache:\", _config.numba_cache_location())"
    # one kernel, not the whole warmup (that is ~25 min under emulation): compile + store, then load
    k="import time, numpy as np, edgedl; t = time.perf_counter(); edgedl.sigmoid(np.ones(8, np.float32), backend=\"numba\"); print(\"%.2f\" % (time.perf_counter() - t))"
    echo "numba sigmoid first call as nobody: empty user cache $(asuser python -c "$k") s," \
         "then in a new process $(asuser python -c "$k") s"
    echo "numba index files in the user cache: $(find /tmp/h -name "*.nbi" | wc -l)"'
}

main() {
  t0=$SECONDS
  what=${1:-all}
  case "$what" in
    all)   # each part in its own process, so one failing still lets the others run
      failed=() logs=()
      for part in arm64 armhf cross; do
        logs+=("$ARM_OUT/test-arm-$part.log"); mkdir -p "$ARM_OUT"
        bash "$0" "$part" 2>&1 | tee "$ARM_OUT/test-arm-$part.log" || failed+=("$part")
      done
      log "summary (pytest closing lines; emulated times)"
      for f in "${logs[@]}"; do
        grep -hE '^=*[ ]*[0-9]+ (passed|failed)|test-arm.sh .*(OK|FAILED) in' "$f" | sed "s|^|  $(basename "$f" .log): |" >&2 || true
      done
      if [ ${#failed[@]} -gt 0 ]; then log "test-arm.sh all: FAILED: ${failed[*]} ($((SECONDS - t0)) s)"; exit 1; fi ;;
    arm64) do_arm64 ;;
    armhf) do_armhf ;;
    cross) do_cross ;;
    startup) do_startup ;;
    wheels) shift; bash "$REPO/tools/test-arm-wheels.sh" "$@" ;;
    *) sed -n '2,19p' "$0"; exit 2 ;;
  esac
  log "test-arm.sh $what: OK in $((SECONDS - t0)) s"
}

# one line: bash has read the whole file before running anything (safe to edit while running)
main "$@"; exit $?
