"""The ``edgedl`` command."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="edgedl", description=__doc__)
    sub = parser.add_subparsers(dest="cmd")
    sub.add_parser("info-config", help="print versions, backends, threads and cache dir")
    w = sub.add_parser("warmup", help="compile the numba cache ahead of time")
    w.add_argument("--backend", default="numba")
    args = parser.parse_args(argv)
    import edgedl
    if args.cmd == "warmup":
        times = edgedl.warmup(args.backend, verbose=True)
        print(f"warmed {len(times)} kernel families")
        return 0
    edgedl.show_config()
    return 0
