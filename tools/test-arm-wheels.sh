#!/usr/bin/env bash
# tools/test-arm-wheels.sh - clean-root install tests of the wheels and the sdist (issue 17 item 2).
#
#   bash tools/test-arm-wheels.sh                 # aarch64 + armv7l wheels, then the sdist (arm64)
#   bash tools/test-arm-wheels.sh aarch64|armv7l|sdist|sdist-armhf   # one part
#   (also: bash tools/test-arm.sh wheels)
#
# Tests what tools/build-wheels.sh left in dist/ (EDGEDL_DIST), each in a FRESH copy of a pristine
# emulated Debian bookworm root (tools/arm-roots.sh; the copy is deleted afterwards):
# - a wheel: a root with NO compiler (ARM_FASTCC=0; gcc, cc and the cross gcc must be absent)
#   and no Cython (arm64: no libgomp1 either; armhf keeps the one Debian's numpy stack pulled
#   in, but the wheel's vendored copy must be the one loaded). pip installs the wheel: on aarch64 with the numba extra and its
#   dependencies from PyPI wheels (numpy, numba, onnx, Pillow; downloaded by the host's pip,
#   installed with --no-index); on armv7l with Debian's python3-numpy and python3-pil (PyPI has
#   no armv7 wheels of them) and no numba (then Debian's python3-onnx, a test tool some kernel
#   tests write their models with). Then: the vendored libgomp is the one loaded,
#   `edgedl --version`, `edgedl info-config`, `edgedl warmup` (timed), `edgedl detect` (the
#   demo), and tests/kernels (the sdist's copy) against the installed package; on armv7l also
#   tests/runtime and tests/detect (ONNX runtime, detectors, the shared models in /out/shared).
# - the sdist: a root WITH a compiler (the host's cross gcc, ARM_FASTCC=1) but no Cython: pip
#   installs it with build isolation (setuptools and wheel from PyPI; Cython must not be fetched),
#   then the same checks on the Cython and NumPy backends (numba not installed).
# Settings: EDGEDL_DIST, ARM_ROOT / ARM_WHEELS_ROOT (tools/arm-roots.sh), ARM_WHEELS_PYTEST
# (pytest arguments, default tests/kernels), ARM_WHEELS_PYTEST_HF (armv7l's), ARM_CPU
# (cortex-a72 = Pi 4 by default).
set -euo pipefail
# shellcheck source=tools/arm-roots.sh
source "$(dirname "${BASH_SOURCE[0]}")/arm-roots.sh"

DIST=${EDGEDL_DIST:-$REPO/dist}
PYTEST_ARGS=${ARM_WHEELS_PYTEST:-tests/kernels}
# armv7l: also the ONNX-runtime and detector tests on the shared models (issue 17: a 32-bit Pi
# user loads models with the wheel alone; there they are not covered by any other run)
PYTEST_ARGS_HF=${ARM_WHEELS_PYTEST_HF:-tests/kernels tests/runtime tests/detect}
[ -d "$DIST" ] || { log "no $DIST: run tools/build-wheels.sh first"; exit 2; }
DIST=$(cd "$DIST" && pwd)

one() {   # one file of dist/ matching the pattern, or an error
  local f; f=$(ls "$DIST"/$1 2>/dev/null | sort -V | tail -1)
  [ -n "$f" ] || { log "no $1 in $DIST: run tools/build-wheels.sh"; exit 2; }
  echo "$f"
}

# stage PART FILE: /out/PART with the file to install and the sdist's tests/
stage() {
  local o=$ARM_OUT/$1
  rm -rf "$o"; mkdir -p "$o"
  cp "$2" "$o/"
  tar -C "$o" -xzf "$(one 'edgedl-*.tar.gz')" --wildcards '*/tests' '*/docs' '*/tools' \
      --strip-components=1
  # the shared models and images, for the tests that use them (EDGEDL_SHARED=/out/shared)
  [ -d "$ARM_OUT/shared/models" ] || { mkdir -p "$ARM_OUT/shared"
    cp -a "$SHARED/models" "$SHARED/images" "$ARM_OUT/shared/"; }
  echo "$o"
}

# deps DIR WHEEL_ARCH REQ...: the target's binary wheels of REQ and their dependencies, fetched
# with the host's pip (fast) for CPython 3.11 on glibc <= 2.36.
deps() {
  local d=$1 arch=$2; shift 2
  local plats=(--platform "manylinux2014_$arch")
  for ((m = 17; m <= 36; m++)); do plats+=(--platform "manylinux_2_${m}_$arch"); done
  python3 -m pip download -q --only-binary=:all: "${plats[@]}" --python-version 3.11 \
    --implementation cp -d "$d" "$@" >&2
}

# The checks inside the root, after the install (a shell snippet; $PART is /out/<part>), then
# pytest with the arguments given (the sdist's tests, docs and tools beside them).
checks() { echo '
  cd /tmp
  python -c "import edgedl, sys; assert \"site-packages\" in edgedl.__file__, edgedl.__file__"
  echo "== edgedl --version: $(edgedl --version)"
  echo "== edgedl info-config"; edgedl info-config
  python - <<EOF
import edgedl._cy.conv, os
maps = open("/proc/self/maps").read()
gomp = sorted({l.split()[-1] for l in maps.splitlines() if "libgomp" in l})
print("== OpenMP runtime loaded:", gomp)
assert gomp, "no libgomp loaded"
if os.environ.get("EXPECT_VENDORED") == "1":
    assert all("edgedl.libs" in g for g in gomp), gomp
EOF
  echo "== edgedl warmup (emulated)"
  TIMEFORMAT="edgedl warmup, empty cache: %R s (emulated)"; time edgedl warmup >/tmp/warmup.log
  echo "== edgedl detect (the demo)"; edgedl detect
  mkdir -p /tmp/t && cp -r $PART/tests $PART/docs $PART/tools /tmp/t/ && cd /tmp/t
  python -m pytest -q -rs -p no:cacheprovider --tb=short -o faulthandler_timeout=900 '"$1"'
'; }

no_compiler='
  for c in gcc cc c99 c89 aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc; do
    if command -v $c >/dev/null; then echo "a compiler is present: $(command -v $c)"; exit 1; fi
  done
  echo "== no C compiler in this root"'
no_cython='
  if python -c "import Cython" 2>/dev/null; then echo "Cython is installed in this root"; exit 1; fi
  echo "== no Cython in this root"'

test_wheel() {   # ARCH MACHINE
  local arch=$1 machine=$2 t=$SECONDS whl o root extra="" req=1 find="" onnx_for_tests=""
  whl=$(one "edgedl-*manylinux*_$machine.whl")
  base_setup "$arch"
  o=$(stage "wheel-$arch" "$whl")
  if [ "$arch" = arm64 ]; then
    extra="[numba]"
    deps "$o/deps" "$machine" "$whl$extra"
    find="--find-links /out/wheel-$arch/deps"
  else
    req=0   # no numba on armv7l: the numba backend is reported absent (and skipped)
    # after the install (so it cannot satisfy a dependency): Debian's onnx 1.12, which some
    # kernel tests use to write their models, as tools/test-arm.sh's armhf run does
    onnx_for_tests="apt-get install -y -qq python3-onnx >/tmp/apt.log 2>&1 || { tail /tmp/apt.log; exit 1; }"
  fi
  log "$machine wheel: $(basename "$whl") in a fresh root without a compiler"
  root=$(fresh_root "$arch" "wheel-$arch")
  local rc=0
  local args=$PYTEST_ARGS
  [ "$arch" = armhf ] && args=$PYTEST_ARGS_HF
  in_root "$root" "$arch" 0 \
    "EDGEDL_REQUIRE_BACKENDS=$req EXPECT_VENDORED=1 PART=/out/wheel-$arch EDGEDL_SHARED=/out/shared" "
    set -e
    $no_compiler
    $no_cython
    if ls /usr/lib/*/libgomp.so.1 >/dev/null 2>&1; then echo '== (the root has a system libgomp1)'; else echo '== no system libgomp1'; fi
    TIMEFORMAT='pip install: %R s (emulated)'
    time pip install -q --no-index $find '/out/wheel-$arch/$(basename "$whl")$extra'
    python -c 'import edgedl, sys; b = edgedl.backends(); print(\"backends:\", b); assert \"cython\" in b'
    $onnx_for_tests
    $(checks "$args")" || rc=$?
  drop_root "$root"
  log "$machine wheel: exit $rc after $((SECONDS - t)) s (emulated)"
  return $rc
}

test_sdist() {   # ARCH
  local arch=$1 t=$SECONDS sd o root machine=aarch64
  [ "$arch" = armhf ] && machine=armv7l
  sd=$(one 'edgedl-*.tar.gz')
  base_setup "$arch"
  o=$(stage "sdist-$arch" "$sd")
  local find=""
  if [ "$arch" = arm64 ]; then deps "$o/deps" "$machine" numpy Pillow onnx; find="--find-links /out/sdist-$arch/deps"; fi
  log "sdist on $arch: $(basename "$sd") in a fresh root with a compiler (cross gcc) and no Cython"
  root=$(fresh_root "$arch" "sdist-$arch")
  local rc=0
  in_root "$root" "$arch" 1 "EDGEDL_REQUIRE_BACKENDS=0 PART=/out/sdist-$arch EDGEDL_SHARED=/out/shared" "
    set -e
    command -v gcc >/dev/null || { echo 'no compiler in this root'; exit 1; }
    echo \"== compiler: \$(gcc --version | head -1)\"
    $no_cython
    # the OpenMP runtime a Pi with gcc has (gcc depends on it); the build links against it
    apt-get install -y -qq libgomp1 >/tmp/apt.log 2>&1 || { tail /tmp/apt.log; exit 1; }
    TIMEFORMAT='pip install of the sdist: %R s (emulated Python, cross gcc)'
    time pip install -v $find '/out/sdist-$arch/$(basename "$sd")' >/tmp/pip.log 2>&1 || { tail -40 /tmp/pip.log; exit 1; }
    grep -E '^edgedl: OpenMP' /tmp/pip.log || true
    if grep -iE 'Collecting|Installing build dependencies|Successfully installed' /tmp/pip.log | grep -qi cython; then
      grep -i cython /tmp/pip.log | head; echo 'pip fetched Cython to build the sdist'; exit 1
    fi
    echo '== built from the shipped C: Cython was not fetched'
    $no_cython
    $(checks "$PYTEST_ARGS")" || rc=$?
  drop_root "$root"
  log "sdist on $arch: exit $rc after $((SECONDS - t)) s (emulated)"
  return $rc
}

main() {
  local t0=$SECONDS parts=("$@") failed=()
  [ ${#parts[@]} -gt 0 ] || parts=(aarch64 armv7l sdist)
  for p in "${parts[@]}"; do
    case "$p" in
      aarch64) test_wheel arm64 aarch64 || failed+=("$p") ;;
      armv7l) test_wheel armhf armv7l || failed+=("$p") ;;
      sdist) test_sdist arm64 || failed+=("$p") ;;
      sdist-armhf) test_sdist armhf || failed+=("$p") ;;
      *) sed -n '2,7p' "$0"; exit 2 ;;
    esac
  done
  if [ ${#failed[@]} -gt 0 ]; then
    log "test-arm-wheels.sh ${parts[*]}: FAILED: ${failed[*]} ($((SECONDS - t0)) s)"; exit 1
  fi
  log "test-arm-wheels.sh ${parts[*]}: OK in $((SECONDS - t0)) s"
}

main "$@"; exit $?
