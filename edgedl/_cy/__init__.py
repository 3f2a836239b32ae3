"""Compiled Cython extensions built from src_cy/ at install (not committed)."""
