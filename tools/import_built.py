"""Import every extension module in a build directory (e.g. CMake's build/edgedl/_cy).

Usage: python tools/import_built.py build/edgedl/_cy
Loads each file under its real name ``edgedl._cy.<name>`` and checks it has functions.
"""
import importlib.machinery
import importlib.util
import pathlib
import sys


def main(folder):
    files = sorted(p for p in pathlib.Path(folder).iterdir()
                   if p.name.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)))
    if not files:
        print(f"no extension modules in {folder}", file=sys.stderr)
        return 1
    for p in files:
        name = "edgedl._cy." + p.name.split(".")[0]
        spec = importlib.util.spec_from_file_location(name, p)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        n = sum(callable(v) for k, v in vars(mod).items() if not k.startswith("_"))
        print(f"imported {name} from {p.name}: {n} public callables")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/edgedl/_cy"))
