"""edgedl's PEP 517 build backend: setuptools, asking for Cython only when it is needed.

The sdist ships the C that Cython generated from ``src_cy/*.pyx``, so a Raspberry Pi with a C
compiler and pip builds it without Cython. A checkout has no generated C (or stale C after an
edit): there Cython is required. pyproject.toml names this module (``backend-path``).
"""
import os
import sys

from setuptools import build_meta as _setuptools

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "src_cy"))
from build_config import stale_c  # noqa: E402

CYTHON = "Cython>=3.0"


def _with_cython(requires, needed):
    return list(requires) + ([CYTHON] if needed else [])


def get_requires_for_build_sdist(config_settings=None):
    # the sdist carries freshly generated C: always Cython
    return _with_cython(_setuptools.get_requires_for_build_sdist(config_settings), True)


def get_requires_for_build_wheel(config_settings=None):
    return _with_cython(_setuptools.get_requires_for_build_wheel(config_settings), bool(stale_c()))


def get_requires_for_build_editable(config_settings=None):
    return _with_cython(_setuptools.get_requires_for_build_editable(config_settings),
                        bool(stale_c()))


prepare_metadata_for_build_wheel = _setuptools.prepare_metadata_for_build_wheel
prepare_metadata_for_build_editable = _setuptools.prepare_metadata_for_build_editable
build_sdist = _setuptools.build_sdist
build_wheel = _setuptools.build_wheel
build_editable = _setuptools.build_editable
