"""The activation table's constants for the numba twins, and numba's cache kept honest about them.

numba compiles a module global into the code as a constant, and its cache is keyed on the file
that defines a function (path, line, modification time), not on the modules those constants
came from: after a change of ``edgedl.kernels.activation_table`` (an epilogue code, the exp
polynomial), a cached kernel would still carry the old values. ``njit`` here is
``edgedl._config.njit`` with the table's digest (``activation_table.TAG``) appended to each
function's name, which names its cache file: a changed table compiles afresh, an unchanged one
loads the cache as before. The numba modules that read the table compile with this ``njit``.
"""
from ..._config import njit as _njit
from ..activation_table import EPILOGUE, EXP_F32, TAG

__all__ = ["EPILOGUE", "EXP_F32", "TAG", "njit"]


def _tagged(fn):
    fn.__name__ = f"{fn.__name__}_t{TAG}"
    fn.__qualname__ = f"{fn.__qualname__}_t{TAG}"
    return fn


def njit(*args, **kwargs):
    """``edgedl._config.njit`` (bare or with options), cached under a table-tagged name."""
    if args and callable(args[0]):
        return _njit(_tagged(args[0]), **kwargs)
    deco = _njit(*args, **kwargs)
    return lambda fn: deco(_tagged(fn))
