# Cross-compile edgedl's extensions for 64-bit ARM Linux (Raspberry Pi 3/4/5, Debian arm64).
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DEDGEDL_SYSROOT=<arm64 root filesystem with python3-dev>
#   cmake --build build-arm64 -j 2          # -> build-arm64/edgedl/_cy/*.cpython-3XX-aarch64-linux-gnu.so
# Needs Debian's gcc-aarch64-linux-gnu. See edgedl-cross.cmake for the options.
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(EDGEDL_TRIPLET aarch64-linux-gnu)
set(EDGEDL_QEMU_ARCH aarch64)
# Baseline ARMv8.0-A: a Pi 4's Cortex-A72 has no v8.1+ (LSE atomics, RDM, dot product...).
# gcc's default -moutline-atomics stays: its __aarch64_* helpers pick LSE only at run time
# when the CPU has it (tests/test_arm_build.py checks no other code uses v8.1+ instructions).
set(CMAKE_C_FLAGS_INIT "-march=armv8-a")
set(CMAKE_CXX_FLAGS_INIT "-march=armv8-a")
include(${CMAKE_CURRENT_LIST_DIR}/edgedl-cross.cmake)
