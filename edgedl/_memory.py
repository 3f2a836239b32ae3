"""Memory guard: refuse an allocation above a limit with one clear ResourceError.

Callers compute the bytes first (Python ints, so no overflow) and call
``check_alloc(nbytes, what)`` before allocating, e.g.
``check_alloc(n * c * h * w * 4, "conv2d output")``. The limit is, in order:
``set_memory_limit(bytes)``; else env ``EDGEDL_MEMORY_LIMIT`` (bytes, or with a suffix
K/M/G/T: "2G", "512M"; "none" = no limit); else 75% of the memory available now (Linux
/proc/meminfo MemAvailable, else sysconf), re-read at most once a second; unknown = no limit.
Linux overcommits, so without this a huge ``np.empty`` "succeeds" and the process is killed
later by the OOM killer instead of getting an exception.
"""
import contextlib
import gc
import os
import re
import time

from .errors import ResourceError, ValidationError

#: Share of the available memory one allocation may take by default.
DEFAULT_FRACTION = 0.75

_UNSET = object()
_explicit = _UNSET            # set_memory_limit's value (None = no limit)
_env_cache = (None, None)     # (EDGEDL_MEMORY_LIMIT string, parsed limit)
_avail_cache = (-1e9, None)   # (time.monotonic() when read, default limit)
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _parse(text, what):
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if text.strip().lower() in ("none", "off", "unlimited"):
        return None
    if not m or float(m.group(1)) * _SUFFIX[m.group(2).upper()] < 1:
        raise ValidationError(f"{what} must be a positive number of bytes (e.g. 2000000000, "
                              f"'512M', '2G') or 'none', got {text!r}")
    return int(float(m.group(1)) * _SUFFIX[m.group(2).upper()])


def available_memory():
    """Bytes of memory available to new allocations now, or None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024      # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _default_limit():
    global _avail_cache
    now = time.monotonic()
    if now - _avail_cache[0] > 1.0:
        avail = available_memory()
        _avail_cache = (now, None if not avail else int(avail * DEFAULT_FRACTION))
    return _avail_cache[1]


def _source():
    if _explicit is not _UNSET:
        return "set by edgedl.set_memory_limit"
    if os.environ.get("EDGEDL_MEMORY_LIMIT"):
        return "from EDGEDL_MEMORY_LIMIT"
    return f"{DEFAULT_FRACTION:.0%} of the available memory"


def get_memory_limit():
    """The largest allocation edgedl allows, in bytes, or None for no limit."""
    global _env_cache
    if _explicit is not _UNSET:
        return _explicit
    env = os.environ.get("EDGEDL_MEMORY_LIMIT")
    if env:
        if env != _env_cache[0]:
            _env_cache = (env, _parse(env, "EDGEDL_MEMORY_LIMIT"))
        return _env_cache[1]
    return _default_limit()


def set_memory_limit(nbytes):
    """Limit one allocation to ``nbytes`` (an int, or a string like "2G"); None = no limit.
    ``reset_memory_limit()`` goes back to EDGEDL_MEMORY_LIMIT / the default."""
    global _explicit
    if nbytes is not None:
        if isinstance(nbytes, str):
            nbytes = _parse(nbytes, "memory limit")
        elif isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 1:
            raise ValidationError(f"memory limit must be a positive int of bytes, a string "
                                  f"like '2G', or None, got {nbytes!r}")
    _explicit = None if nbytes is None else int(nbytes)


def reset_memory_limit():
    """Forget set_memory_limit: back to EDGEDL_MEMORY_LIMIT or the default."""
    global _explicit
    _explicit = _UNSET


def format_bytes(n):
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def check_alloc(nbytes, what):
    """Raise ResourceError if allocating ``nbytes`` for ``what`` (e.g. "tensor 'x'", "Conv
    node 'c1' output") would exceed the memory limit; else return None. Cheap: call it before
    every allocation whose size comes from user input."""
    limit = get_memory_limit()
    if limit is not None and nbytes > limit:
        raise ResourceError(f"{what} would need {nbytes} bytes ({format_bytes(nbytes)}), "
                            f"above edgedl's memory limit of {limit} bytes "
                            f"({format_bytes(limit)}, {_source()}); raise it with "
                            "edgedl.set_memory_limit() or EDGEDL_MEMORY_LIMIT")


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic collector paused for a burst of long-lived allocations: importing the
    runtime's modules, loading a model (thousands of messages, nodes, constants) and
    planning it. Its passes there find no garbage and cost ~10 ms of a detector's
    import + load + first run (measured on the shared models). Restored only by the call
    that paused it, so a nested or concurrent pause leaves it to the outer one."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
