# Shared part of edgedl's cross toolchain files (included by aarch64-linux-gnu.cmake and
# arm-linux-gnueabihf.cmake, which set EDGEDL_TRIPLET, CMAKE_SYSTEM_PROCESSOR and the flags).
#
# EDGEDL_SYSROOT (-D or environment): a root filesystem of the target with python3-dev
# installed, e.g. the one tools/arm_chroot.sh builds (~/.cache/edgedl-armroot/bookworm-arm64).
# From it the target's Python headers and extension suffix are found, so a cross build is just
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DEDGEDL_SYSROOT=$HOME/.cache/edgedl-armroot/bookworm-arm64
# Without a sysroot, the cross compiler's own libc is used and the target's Python include
# directory and suffix must be given (-DEDGEDL_TARGET_PYTHON_INCLUDE, -DEDGEDL_TARGET_EXT_SUFFIX).
set(CMAKE_SYSTEM_NAME Linux)

# try_compile() projects re-read this file without the -D cache: pass the sysroot on by env.
if(EDGEDL_SYSROOT)
  set(ENV{EDGEDL_SYSROOT} "${EDGEDL_SYSROOT}")
elseif(DEFINED ENV{EDGEDL_SYSROOT})
  set(EDGEDL_SYSROOT "$ENV{EDGEDL_SYSROOT}")
endif()

set(CMAKE_C_COMPILER ${EDGEDL_TRIPLET}-gcc)
set(CMAKE_CXX_COMPILER ${EDGEDL_TRIPLET}-g++)

if(EDGEDL_SYSROOT)
  if(NOT EXISTS "${EDGEDL_SYSROOT}/usr/include")
    message(FATAL_ERROR "EDGEDL_SYSROOT=${EDGEDL_SYSROOT} has no usr/include")
  endif()
  set(CMAKE_SYSROOT "${EDGEDL_SYSROOT}")
  set(CMAKE_FIND_ROOT_PATH "${EDGEDL_SYSROOT}")
  # Target Python: the newest python3.X with headers in the sysroot (Debian layout).
  if(NOT EDGEDL_TARGET_PYTHON_INCLUDE)
    file(GLOB _edgedl_py_h "${EDGEDL_SYSROOT}/usr/include/python3.*/Python.h")
    list(SORT _edgedl_py_h COMPARE NATURAL)
    list(POP_BACK _edgedl_py_h _edgedl_py_h_last)
    if(_edgedl_py_h_last)
      get_filename_component(_edgedl_py_inc "${_edgedl_py_h_last}" DIRECTORY)
      set(EDGEDL_TARGET_PYTHON_INCLUDE "${_edgedl_py_inc}" CACHE PATH "target Python.h dir")
    endif()
  endif()
  if(NOT EDGEDL_TARGET_EXT_SUFFIX AND EDGEDL_TARGET_PYTHON_INCLUDE)
    get_filename_component(_edgedl_py "${EDGEDL_TARGET_PYTHON_INCLUDE}" NAME)   # python3.11
    string(REPLACE "python3." "" _edgedl_minor "${_edgedl_py}")
    set(EDGEDL_TARGET_EXT_SUFFIX ".cpython-3${_edgedl_minor}-${EDGEDL_TRIPLET}.so"
        CACHE STRING "target extension suffix")
  endif()
endif()

# Host programs (cython, python) from the host; headers and libraries from the target.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Lets CMake run target programs (try_run) through qemu when it is installed.
find_program(_edgedl_qemu qemu-${EDGEDL_QEMU_ARCH}-static qemu-${EDGEDL_QEMU_ARCH})
if(_edgedl_qemu)
  if(EDGEDL_SYSROOT)
    set(CMAKE_CROSSCOMPILING_EMULATOR "${_edgedl_qemu};-L;${EDGEDL_SYSROOT}")
  else()
    set(CMAKE_CROSSCOMPILING_EMULATOR "${_edgedl_qemu};-L;/usr/${EDGEDL_TRIPLET}")
  endif()
endif()
