"""Builds src_cy/*.pyx into edgedl._cy.* (metadata lives in pyproject.toml).

Flags are portable: -O3, never -march=native (wheels built here run on other CPUs, e.g. a
Raspberry Pi). OpenMP is used when the compiler accepts -fopenmp, and left out otherwise.
``EDGEDL_CY_ONLY=a,b`` builds only those modules (quick rebuilds while developing).
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join("src_cy")
# -fno-math-errno / -fno-trapping-math let gcc vectorise loops with fmaxf, sqrtf and compares;
# they do not change results (no -ffast-math: NaN and signed-zero semantics stay IEEE).
BASE_CFLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-std=c99",
               "-Wno-unused-function", "-Wno-unreachable-code"]
# EDGEDL_CY_SANITIZE=1 (tools/sanitize.sh): AddressSanitizer + UBSan build, -O1 -g for readable
# reports; UB aborts. Import it only with libasan preloaded, never install it.
SANITIZE = (["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
             "-fno-omit-frame-pointer", "-g", "-O1"]
            if os.environ.get("EDGEDL_CY_SANITIZE", "") not in ("", "0") else [])
if SANITIZE:
    BASE_CFLAGS = [f for f in BASE_CFLAGS if f != "-O3"] + SANITIZE


def _cc():
    import sysconfig
    return (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()


def openmp_flags():
    """['-fopenmp'] if the C compiler builds and links an OpenMP program, else []."""
    if os.environ.get("EDGEDL_NO_OPENMP", "") not in ("", "0"):
        return []
    if sys.platform == "win32":
        return ["/openmp"]
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as d:
        c = os.path.join(d, "t.c")
        with open(c, "w") as f:
            f.write(src)
        try:
            r = subprocess.run(_cc() + ["-fopenmp", c, "-o", os.path.join(d, "t")],
                               capture_output=True)
        except OSError:
            return []
        return ["-fopenmp"] if r.returncode == 0 else []


def extensions():
    from Cython.Build import cythonize
    only = [m for m in os.environ.get("EDGEDL_CY_ONLY", "").split(",") if m]
    omp = openmp_flags()
    print(f"edgedl: OpenMP {'on' if omp else 'off'}", file=sys.stderr)
    exts = []
    for pyx in sorted(glob.glob(os.path.join(SRC, "*.pyx"))):
        name = os.path.splitext(os.path.basename(pyx))[0]
        if only and name not in only:
            continue
        exts.append(Extension(
            f"edgedl._cy.{name}", [pyx], include_dirs=[SRC],
            extra_compile_args=BASE_CFLAGS + omp, extra_link_args=omp + SANITIZE[:1],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]))
    return cythonize(exts, include_path=[SRC], language_level=3, nthreads=0,
                     emit_linenums=bool(SANITIZE),   # sanitizer reports name .pyx lines
                     compiler_directives={"binding": True, "embedsignature": True,
                                          "cdivision": True, "initializedcheck": False})


setup(ext_modules=extensions())
