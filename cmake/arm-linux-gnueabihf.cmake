# Cross-compile edgedl's extensions for 32-bit ARM Linux, Debian armhf (ARMv7-A, VFPv3-D16,
# Thumb-2: the Debian armhf baseline, runs on a Pi 2/3/4/5 with a 32-bit OS).
#   cmake -S . -B build-armhf -DCMAKE_TOOLCHAIN_FILE=cmake/arm-linux-gnueabihf.cmake \
#         -DEDGEDL_SYSROOT=<armhf root filesystem with python3-dev>
# Needs Debian's gcc-arm-linux-gnueabihf. See edgedl-cross.cmake for the options.
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(EDGEDL_TRIPLET arm-linux-gnueabihf)
set(EDGEDL_QEMU_ARCH arm)
set(CMAKE_C_FLAGS_INIT "-march=armv7-a -mfpu=vfpv3-d16 -mfloat-abi=hard -mthumb")
set(CMAKE_CXX_FLAGS_INIT "-march=armv7-a -mfpu=vfpv3-d16 -mfloat-abi=hard -mthumb")
include(${CMAKE_CURRENT_LIST_DIR}/edgedl-cross.cmake)
