#!/usr/bin/env bash
# tools/sanitize.sh - the kernel, runtime and fuzz tests under AddressSanitizer + UBSan (Cython)
# and bounds checking (numba), issue 15 point 6.
#
#   bash tools/sanitize.sh                  # tests/kernels tests/runtime + every fuzz/hostile test
#   bash tools/sanitize.sh --quick          # conv, pooling, resize + the kernels' fuzz tests, -x
#   bash tools/sanitize.sh -- tests/kernels/test_conv.py -k cython    # these pytest arguments
#   bash tools/sanitize.sh --keep ...       # keep the work folder (the instrumented copy)
#   SANITIZE_DIR=/tmp/san bash tools/sanitize.sh --reuse ...   # rerun tests on the build kept
#                                           # there (sources not refreshed: after a failure only)
#
# What it does, none of it in the checkout (other people build and test there):
#  1. copies the working tree (uncommitted edits included; no .git, .so, generated .c, caches)
#     to a work folder ($SANITIZE_DIR, default a new /tmp/edgedl-sanitize.XXXX);
#  2. builds every src_cy/ extension there with EDGEDL_CY_SANITIZE=1 (setup.py: -O1 -g
#     -fsanitize=address,undefined -fno-sanitize-recover=undefined, #line directives so
#     reports name .pyx lines);
#  3. checks that the copy is what gets imported: edgedl and every edgedl._cy module from the
#     work folder, each module instrumented, numba bounds checking on with a fresh cache, and
#     a deliberate one-byte heap overflow is reported (the sanitizer is live);
#  4. runs tests/test_sanitize.py's hostile conv / pool cases (huge pads, dilations, strides)
#     on the cython and numba backends, then pytest; all with libasan preloaded (LD_PRELOAD,
#     inherited by the tests' subprocesses), NUMBA_BOUNDSCHECK=1 (an out-of-bounds numba
#     access raises IndexError "index is out of bounds" instead of corrupting memory) and
#     EDGEDL_REQUIRE_BACKENDS=1;
#  5. prints every sanitizer report (they go to files: a report from a subprocess, e.g. a
#     fuzz case, is not lost in a captured stderr) and exits 1 on a report or a test failure.
#
# ASAN_OPTIONS=detect_leaks=0: CPython keeps interned objects, arenas and module state alive
# until exit by design, so LeakSanitizer reports thousands of "leaks" that are not bugs (noise
# that would hide a real report). Leaks are covered by tools/soak.py (flat RSS) instead.
# abort_on_error=1: the first report aborts that process (pytest itself for an in-process kernel
# test), so the run stops at the first memory error; its report is printed at the end.
#
# Extra pytest options without replacing the default paths: PYTEST_ADDOPTS="--deselect ...".
# Known clash: a child process that caps its address space (RLIMIT_AS, e.g. the model fuzzer's
# children) cannot start under ASan, whose shadow memory reserves terabytes of it ("ERROR:
# Failed to mmap"); such a harness must skip the cap when libasan is in LD_PRELOAD.
# Settings: SANITIZE_DIR (work folder; kept if given), EDGEDL_SHARED (models/images, default
# ../shared beside the checkout), CC (compiler, default gcc).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ -f "$REPO/setup.py" ] && [ -d "$REPO/src_cy" ] || {
  echo "sanitize.sh: $REPO is not an edgedl checkout (run tools/sanitize.sh from one)" >&2; exit 2; }
QUICK=0 KEEP=0 REUSE=0 ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --keep) KEEP=1 ;;
    --reuse) REUSE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; ARGS+=("$@"); break ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done

log() { printf '\n[sanitize %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

CC=${CC:-gcc}
LIBASAN=$($CC -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || { echo "sanitize.sh: $CC has no libasan.so (install libasan / gcc)" >&2; exit 2; }
# libstdc++ preloaded too: python does not link it, and ASan's __cxa_throw interceptor then finds
# no real one and aborts ("CHECK failed ... real___cxa_throw") the first time a C++ library
# (onnxruntime, the tests' oracle) throws an exception.
LIBSTDCXX=$($CC -print-file-name=libstdc++.so)

if [ -n "${SANITIZE_DIR:-}" ]; then
  WORK=$SANITIZE_DIR KEEP=1
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d /tmp/edgedl-sanitize.XXXXXX)
fi
[ "$KEEP" = 1 ] || trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/src REPORTS=$WORK/reports
if [ "$REUSE" = 1 ] && ls "$SRC"/edgedl/_cy/*.so >/dev/null 2>&1; then
  log "reusing the instrumented build in $SRC (sources NOT refreshed)"
  rm -rf "$REPORTS"
  mkdir -p "$REPORTS"
else
  rm -rf "$SRC" "$REPORTS" "$WORK/numba-cache"
  mkdir -p "$SRC" "$REPORTS"

  log "copy the working tree to $SRC"
  tar -C "$REPO" -cf - --exclude=./.git --exclude=./build --exclude='./build-*' --exclude='*.so' \
    --exclude='*.c' --exclude=__pycache__ --exclude=.pytest_cache --exclude=.hypothesis \
    --exclude='*.egg-info' . | tar -C "$SRC" -xf -

  log "build the extensions with ASan + UBSan (log: $WORK/build.log)"
  t=$SECONDS
  if ! (cd "$SRC" && CC=$CC EDGEDL_CY_SANITIZE=1 nice python setup.py build_ext --inplace \
          >"$WORK/build.log" 2>&1); then
    tail -40 "$WORK/build.log" >&2
    echo "sanitize.sh: the instrumented build failed" >&2
    exit 2
  fi
  log "built in $((SECONDS - t)) s: $(cd "$SRC/edgedl/_cy" && ls -- *.so | sed 's/\..*//' | xargs)"
fi

export PYTHONPATH=$SRC${PYTHONPATH:+:$PYTHONPATH}
export LD_PRELOAD=$LIBASAN${LIBSTDCXX:+:$LIBSTDCXX}${LD_PRELOAD:+:$LD_PRELOAD}
# libubsan needs no preload: it may load after the program starts; it logs beside ASan.
# allocator_may_return_null=1: an impossible malloc (tests ask numpy for petabytes on purpose)
# returns NULL -> MemoryError as without ASan, instead of an "allocation-size-too-big" abort.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:log_path=$REPORTS/asan
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$REPORTS/ubsan
export NUMBA_BOUNDSCHECK=1
export EDGEDL_CACHE_DIR=$WORK/numba-cache NUMBA_CACHE_DIR=$WORK/numba-cache
export EDGEDL_REQUIRE_BACKENDS=1
export EDGEDL_SHARED=${EDGEDL_SHARED:-$REPO/../shared}
export SANITIZE_SRC=$SRC

log "check the instrumented copy is the one imported"
(cd "$WORK" && python - <<'EOF'
import glob, importlib, os, sys
src = os.environ["SANITIZE_SRC"]
import edgedl
from edgedl import _config
assert edgedl.__file__.startswith(src + os.sep), f"edgedl imported from {edgedl.__file__}"
sos = sorted(glob.glob(os.path.join(src, "edgedl", "_cy", "*.so")))
assert sos, "no extension modules were built"
for so in sos:
    name = os.path.basename(so).split(".")[0]
    mod = importlib.import_module(f"edgedl._cy.{name}")
    assert os.path.samefile(mod.__file__, so), f"edgedl._cy.{name} from {mod.__file__}"
    with open(so, "rb") as f:
        data = f.read()
    assert b"__asan_report" in data and b"__ubsan_handle" in data, f"{so} is not instrumented"
nb = _config.load_numba()
assert nb.config.BOUNDSCHECK == 1, "numba bounds checking is off"
assert _config.numba_cache_location() == os.environ["EDGEDL_CACHE_DIR"]
assert "cython" in edgedl.backends() and "numba" in edgedl.backends(), edgedl.backends()
print(f"ok: edgedl and {len(sos)} instrumented modules from {src}; numba boundscheck on, "
      f"cache {os.environ['EDGEDL_CACHE_DIR']}")
EOF
)
# Canaries: a deliberate one-byte heap overflow (memset is intercepted by ASan) must give a
# report, and an out-of-bounds numba index must raise; else nothing below would be caught.
(cd "$WORK" && ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:log_path=$WORK/canary python -c '
import ctypes, numpy as np
a = np.zeros(8, np.uint8)
ctypes.memset(a.ctypes.data, 0, 9)' || true) >/dev/null 2>&1
if ! grep -qs heap-buffer-overflow "$WORK"/canary.*; then
  echo "sanitize.sh: ASan is not live: a deliberate heap overflow was not reported" >&2
  exit 2
fi
rm -f "$WORK"/canary.*
(cd "$WORK" && python -c '
import numpy as np
from edgedl._config import njit
@njit(cache=False)
def f(a, i):
    return a[i]
try:
    f(np.zeros(3), 3)
except IndexError:
    pass
else:
    raise SystemExit("numba bounds checking is not live")')
log "canaries ok: ASan reports a heap overflow, numba raises IndexError out of bounds"

# The hostile conv / pool geometry of tests/test_sanitize.py (issue 15's heap overflow among
# them), every module instrumented here, before the long pytest run.
cd "$SRC"
hostile=0
for b in cython numba; do
  [ -f tests/test_sanitize.py ] || break
  log "hostile conv / pool cases on $b"
  python tests/test_sanitize.py $b || hostile=1
done

if [ ${#ARGS[@]} -eq 0 ]; then
  if [ "$QUICK" = 1 ]; then   # the kernels with the issue's bug class, and the kernels' fuzzing
    ARGS=(-x tests/kernels/test_conv.py tests/kernels/test_pooling.py tests/kernels/test_resize.py)
    extra=(tests/kernels/*fuzz*.py tests/kernels/*hostile*.py)
  else                        # + fuzz / hostile-input tests elsewhere (e.g. tests/test_*cli*)
    ARGS=(tests/kernels tests/runtime)
    extra=(tests/*fuzz*.py tests/*hostile*.py tests/*/*fuzz*.py tests/*/*hostile*.py)
  fi
  for f in "${extra[@]}"; do
    [ -f "$f" ] || continue
    case " ${ARGS[*]} " in
      *" $(dirname "$f") "*|*" $f "*) ;;
      *) ARGS+=("$f") ;;
    esac
  done
fi

log "pytest ${ARGS[*]}  (ASan + UBSan + NUMBA_BOUNDSCHECK=1; a fresh numba cache compiles first)"
cd "$SRC"
t=$SECONDS
set +e
nice pytest -q -p no:cacheprovider -o faulthandler_timeout=1800 "${ARGS[@]}" 2>&1 \
  | tee "$WORK/pytest.log"
rc=${PIPESTATUS[0]}
set -e
log "pytest exit status $rc after $((SECONDS - t)) s"

# A file holding only WARNINGs (e.g. "failed to allocate" for a refused petabyte malloc that
# allocator_may_return_null turned into a MemoryError) is a note, not a report.
n=0
for f in "$REPORTS"/*; do
  [ -f "$f" ] || continue
  if ! grep -qE 'ERROR|runtime error' "$f"; then
    log "note (warnings only) $f: $(head -c 300 "$f")"
    continue
  fi
  n=$((n + 1))   # the error and its stack, where the memory came from, summary
  log "sanitizer report $f"
  sed -n '1,/^$/p' "$f" | head -25 || true   # (head closing the pipe is no error)
  grep -A5 -E '^(allocated|freed|previously allocated) by' "$f" || true
  grep '^SUMMARY' "$f" || true
done
oob=$(grep -c "index is out of bounds" "$WORK/pytest.log" || true)
log "summary: $n sanitizer report(s), $oob numba out-of-bounds line(s) in the log, hostile cases $([ $hostile = 0 ] && echo ok || echo FAILED), pytest status $rc"
if [ "$n" -gt 0 ] || [ "$oob" -gt 0 ] || [ "$hostile" -ne 0 ] || [ "$rc" -ne 0 ]; then
  [ "$KEEP" = 1 ] && echo "work folder kept: $WORK" >&2
  exit 1
fi
