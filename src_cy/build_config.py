"""Build settings shared by setup.py and tools/build_backend.py (no setuptools here).

``build_flags.txt`` beside this file is the one place the compiler flags, macros and Cython
directives are written; CMakeLists.txt reads it too. ``stale_c`` says which modules need
Cython: those whose generated C is missing or older than what Cython reads to write it.
"""
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = "src_cy"
FLAGS_FILE = os.path.join(SRC, "build_flags.txt")


def read_settings(root=ROOT):
    """{key: [values]} from src_cy/build_flags.txt ('#' starts a comment)."""
    settings = {}
    with open(os.path.join(root, FLAGS_FILE)) as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line:
                key, _, value = line.partition("=")
                settings[key.strip()] = value.split()
    return settings


def cython_directives(root=ROOT):
    """The directives as cythonize wants them: {"binding": True, "language_level": 3, ...}."""
    def value(v):
        return {"True": True, "False": False}.get(v, int(v) if v.isdigit() else v)
    return {k: value(v) for k, _, v in (d.partition("=") for d in read_settings(root)["directives"])}


def pyx_modules(root=ROOT):
    """The .pyx stems (module names under edgedl._cy), sorted."""
    return sorted(os.path.splitext(os.path.basename(p))[0]
                  for p in glob.glob(os.path.join(root, SRC, "*.pyx")))


def stale_c(root=ROOT):
    """The modules whose generated C is missing or older than what Cython reads to write it
    (the .pyx, every .pxd, the flags file): those need Cython."""
    src = os.path.join(root, SRC)
    shared = glob.glob(os.path.join(src, "*.pxd")) + [os.path.join(root, FLAGS_FILE)]
    newest_shared = max(os.path.getmtime(p) for p in shared)
    stale = []
    for name in pyx_modules(root):
        c = os.path.join(src, name + ".c")
        inputs = max(newest_shared, os.path.getmtime(os.path.join(src, name + ".pyx")))
        # whole seconds: an sdist's tar stores them
        if not os.path.exists(c) or int(os.path.getmtime(c)) < int(inputs):
            stale.append(name)
    return stale
