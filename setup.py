"""Builds src_cy/*.pyx into edgedl._cy.* (metadata lives in pyproject.toml).

Flags and Cython directives come from src_cy/build_flags.txt (CMakeLists.txt reads the same
file). OpenMP is used when the compiler accepts -fopenmp, and left out otherwise.
Cython runs when it is installed (a checkout; it regenerates only what changed); without it the
generated C shipped in the sdist is compiled, provided it is newer than its sources
(tools/build_backend.py, the build backend, asks pip for Cython when that C is stale).
``EDGEDL_CY_ONLY=a,b`` builds only those modules (quick rebuilds while developing).
"""
import glob
import os
import subprocess
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext as _build_ext
from setuptools.command.sdist import sdist as _sdist

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "src_cy"))
import build_config as B  # noqa: E402  (the flags file's reader, shared with the build backend)

SRC = B.SRC
SETTINGS = B.read_settings(HERE)
BASE_CFLAGS = SETTINGS["cflags"]
MACROS = [tuple(m.split("=", 1)) for m in SETTINGS.get("macros", [])]
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


def extensions(omp, only=()):
    headers = sorted(glob.glob(os.path.join(SRC, "*.h")) + glob.glob(os.path.join(SRC, "*.pxd")))
    return [Extension(f"edgedl._cy.{name}", [os.path.join(SRC, name + ".pyx")],
                      include_dirs=[SRC], depends=headers,
                      extra_compile_args=BASE_CFLAGS + omp, extra_link_args=omp + SANITIZE[:1],
                      define_macros=MACROS)
            for name in B.pyx_modules(HERE) if not only or name in only]


def cythonize(exts, force=False):
    """Generate the C of these extensions (only what changed, unless force) and make it
    their sources."""
    from Cython.Build import cythonize as run
    generated = run(exts, include_path=[SRC], nthreads=0, force=force,
                    emit_linenums=bool(SANITIZE),   # sanitizer reports name .pyx lines
                    compiler_directives=B.cython_directives(HERE))
    sources = {g.name: g.sources for g in generated}
    for e in exts:
        e.sources = sources[e.name]


def _module(ext):
    return ext.name.rsplit(".", 1)[1]


def c_sources(exts):
    """Make the generated C the extensions' sources (no Cython here): a clear error when that
    C is missing or older than its .pyx / .pxd / flags."""
    stale = sorted(set(B.stale_c(HERE)) & {_module(e) for e in exts})
    if stale:
        sys.exit(f"edgedl: Cython>=3.0 is needed to build {', '.join(stale)} from src_cy/*.pyx "
                 "(no generated C, or it is older than its sources): pip install 'cython>=3.0', "
                 "or install from the sdist, which ships the C")
    for e in exts:
        e.sources = [os.path.join(SRC, _module(e) + ".c")]


def have_cython():
    import importlib.util
    return importlib.util.find_spec("Cython") is not None


def _flags_newer_than_c():
    flags = os.path.getmtime(os.path.join(HERE, B.FLAGS_FILE))
    cs = glob.glob(os.path.join(HERE, SRC, "*.c"))
    return any(os.path.getmtime(c) < flags for c in cs)


class build_ext(_build_ext):
    """Cythonize (when Cython is there) or take the shipped C, then compile. (In run, not
    finalize_options: sdist and egg_info finalize this command too, before Cython may be
    installed.)"""

    def run(self):
        if have_cython():
            # cythonize regenerates only what changed; a flags-file edit changes every module
            cythonize(self.extensions, force=_flags_newer_than_c())
        else:
            c_sources(self.extensions)
        super().run()


class sdist(_sdist):
    """Generate the C of every module first: the sdist then builds without Cython."""

    def run(self):
        cythonize(extensions([]), force=_flags_newer_than_c())   # writes src_cy/*.c
        super().run()


OMP = openmp_flags()
print(f"edgedl: OpenMP {'on' if OMP else 'off'}", file=sys.stderr)
ONLY = [m for m in os.environ.get("EDGEDL_CY_ONLY", "").split(",") if m]
setup(ext_modules=extensions(OMP, ONLY), cmdclass={"build_ext": build_ext, "sdist": sdist})
