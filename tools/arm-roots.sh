# tools/arm-roots.sh - sourced by tools/build-wheels.sh and tools/test-arm-wheels.sh: the
# pristine emulated Debian bookworm roots those two start from, and throw-away copies of them.
#
# The pristine ("base") roots are built once by ../shared/tools/arm_chroot.sh (~8-10 min each)
# under $ARM_WHEELS_ROOT (default $ARM_ROOT/wheels, apart from tools/test-arm.sh's roots, whose
# venvs hold numpy, numba, Cython...). They are never used directly: every build or test gets a
# fresh copy (cp -a --reflink=auto) that is deleted afterwards.
#   arm64: Python 3.11, /opt/venv with pytest + hypothesis only; no compiler, no numpy.
#   armhf: the same plus Debian's python3-numpy and python3-pil (PyPI has no armv7 wheels of
#          them); Debian's numba, llvmlite and cython3 (pulled in by arm_chroot.sh's debian
#          profile) are removed once.
# The arm64 one has no libgomp1: a wheel must bring its own.
# shellcheck shell=bash

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${EDGEDL_SHARED:-$REPO/../shared}
CHROOT=$SHARED/tools/arm_chroot.sh
[ -f "$CHROOT" ] || { echo "$0: $CHROOT not found (set EDGEDL_SHARED)" >&2; exit 2; }
ARM_ROOT=${ARM_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/edgedl-armroot}
WROOT=${ARM_WHEELS_ROOT:-$ARM_ROOT/wheels}
export ARM_OUT=$WROOT/out          # bind-mounted at /out inside every root
mkdir -p "$ARM_OUT"

log() { printf '\n[%s %s] %s\n' "$(basename "$0" .sh)" "$(date +%H:%M:%S)" "$*" >&2; }

# chroot ARCH [VAR=VALUE...] -- ARGS...: arm_chroot.sh with the base roots' settings.
chroot_base() {
  local arch=$1; shift
  local profile=pip apt=""
  [ "$arch" = armhf ] && { profile=debian; apt=python3-pil; }
  env ARM_ROOT="$WROOT" ARM_ARCH="$arch" ARM_PROFILE="$profile" ARM_PIP="pytest hypothesis" \
      ARM_APT="$apt" ARM_SRC_MODE=none bash "$CHROOT" "$@"
}

base_root() { echo "$WROOT/bookworm-$1"; }

# base_setup ARCH: build the pristine root once (idempotent).
base_setup() {
  local arch=$1 r
  r=$(base_root "$arch")
  [ -f "$r/.edgedl_base_done" ] && return 0
  log "$arch: building the pristine root $r (once, ~10 min)"
  chroot_base "$arch" setup
  if [ "$arch" = armhf ]; then
    chroot_base armhf exec apt-get remove -y -qq python3-numba python3-llvmlite cython3 >/dev/null
    chroot_base armhf exec apt-get autoremove -y -qq >/dev/null
  fi
  touch "$r/.edgedl_base_done"
}

# fresh_root ARCH NAME: a throw-away copy of the base root; prints its path; logs the copy time.
fresh_root() {
  local arch=$1 dst=$WROOT/fresh-$2 t0
  rm -rf --one-file-system "$dst"
  t0=$(date +%s.%N)
  cp -a --reflink=auto "$(base_root "$arch")" "$dst"
  log "$arch: fresh root $dst: copied in $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5) s ($(du -sh --one-file-system "$dst" | cut -f1))"
  echo "$dst"
}

drop_root() { rm -rf --one-file-system "$1"; }

# in_root ROOT ARCH FASTCC "K=V ..." SCRIPT: run the bash SCRIPT inside ROOT (FASTCC=1: the host's
# cross gcc is on PATH; 0: no compiler at all, since the roots install none).
in_root() {
  ARM_ROOT="$WROOT" ARM_ROOTFS="$1" ARM_ARCH="$2" ARM_FASTCC="$3" ARM_ENV="$4" \
    bash "$CHROOT" exec /bin/bash -c "$5"
}
