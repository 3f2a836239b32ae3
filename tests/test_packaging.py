"""The build's single sources of truth (issue 16 item 4, issue 17 item 4).

- src_cy/build_flags.txt is the only place compiler flags and Cython directives are written:
  setup.py and CMakeLists.txt read it and carry none of their own.
- .gitignore ignores exactly the C that Cython generates (one name per .pyx), never a
  hand-written .c.
- The generated C counts as fresh (usable without Cython) only when it is at least as new as
  its .pyx, every .pxd and the flags file.
- The package metadata: version from edgedl.__version__, license, classifiers, extras.
The wheels and the sdist themselves are built and installed by tools/build-wheels.sh and
tools/test-arm-wheels.sh (emulated, not part of this suite).
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
if not (ROOT / "src_cy" / "build_flags.txt").is_file():    # e.g. tests copied beside a wheel
    pytest.skip("the checkout's build files are not here", allow_module_level=True)
sys.path.insert(0, str(ROOT / "src_cy"))
import build_config  # noqa: E402


def test_flags_file_is_the_only_place():
    settings = build_config.read_settings(ROOT)
    assert "-O3" in settings["cflags"] and "-std=c99" in settings["cflags"], settings
    assert build_config.cython_directives(ROOT)["language_level"] == 3
    assert build_config.cython_directives(ROOT)["cdivision"] is True
    setup = (ROOT / "setup.py").read_text()
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "build_flags.txt" in cmake and "build_config" in setup
    for text, name in ((setup, "setup.py"), (cmake, "CMakeLists.txt")):
        code = "\n".join(l.split("#", 1)[0] for l in text.splitlines())   # not the comments
        for word in ("-fno-math-errno", "-fno-trapping-math", "-std=c99", "-Wno-unused-function",
                     "NPY_1_7_API_VERSION", "cdivision", "embedsignature", "initializedcheck",
                     "binding=", "language_level"):
            assert word not in code, f"{name} writes {word} itself"


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="not a git checkout")
def test_gitignore_names_generated_c_only():
    def ignored(rel):
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", rel], cwd=ROOT).returncode == 0
    for name in build_config.pyx_modules(ROOT):
        assert ignored(f"src_cy/{name}.c"), f"src_cy/{name}.c (Cython's output) is not in .gitignore"
    assert not ignored("src_cy/edl_hand_written.c"), "a hand-written C file would be ignored"
    assert not ignored("src_cy/edl_gemm.h")


def _tree(tmp_path, names=("a", "b")):
    src = tmp_path / "src_cy"
    src.mkdir()
    shutil.copy(ROOT / "src_cy" / "build_flags.txt", src)
    (src / "x.pxd").write_text("")
    for n in names:
        (src / f"{n}.pyx").write_text("")
    return src


def _age(path, seconds):
    t = path.stat().st_mtime - seconds
    os.utime(path, (t, t))


def test_generated_c_freshness(tmp_path):
    src = _tree(tmp_path)
    for p in src.iterdir():
        _age(p, 100)
    assert build_config.stale_c(tmp_path) == ["a", "b"]          # no C: Cython needed
    (src / "a.c").write_text("")
    (src / "b.c").write_text("")
    assert build_config.stale_c(tmp_path) == []                  # the sdist's case
    (src / "b.pyx").write_text("# edited")
    _age(src / "b.c", 50)
    assert build_config.stale_c(tmp_path) == ["b"]               # an edited .pyx
    (src / "b.c").write_text("")
    (src / "x.pxd").write_text("# edited")
    _age(src / "a.c", 50)
    _age(src / "b.c", 50)
    assert build_config.stale_c(tmp_path) == ["a", "b"]          # a .pxd: every module
    (src / "a.c").write_text("")
    (src / "b.c").write_text("")
    (src / "build_flags.txt").write_text((ROOT / "src_cy" / "build_flags.txt").read_text())
    _age(src / "a.c", 50)
    assert build_config.stale_c(tmp_path) == ["a"]               # the flags file


def test_metadata():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = meta["project"]
    assert project["dynamic"] == ["version"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "edgedl.__version__"}
    assert project["license"] == {"text": "Apache-2.0"} and (ROOT / "LICENSE").is_file()
    assert "License :: OSI Approved :: Apache Software License" in project["classifiers"]
    assert project["requires-python"].startswith(">=3.")
    assert {"numba", "test", "bench"} <= set(project["optional-dependencies"])
    # the build backend asks for Cython itself, only when the generated C is stale
    assert not any(r.lower().startswith("cython") for r in meta["build-system"]["requires"])
    assert meta["build-system"]["build-backend"] == "build_backend"
    assert (ROOT / meta["build-system"]["backend-path"][0] / "build_backend.py").is_file()
