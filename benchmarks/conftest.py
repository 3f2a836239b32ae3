"""Prints the result tables of benchmarks/_common.py at the end of the session."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_terminal_summary(terminalreporter):
    mod = sys.modules.get("_common")
    if mod is None:
        return
    for table in mod.TABLES:
        lines = table.lines()
        if lines:
            terminalreporter.write_line("")
            for line in lines:
                terminalreporter.write_line(line)
