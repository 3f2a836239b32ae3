"""Exceptions raised by edgedl.

Every error edgedl raises on purpose derives from :class:`EdgeDLError`, and also from the
built-in exception a caller would naturally catch (``TypeError`` for a wrong dtype,
``ValueError`` for a wrong shape or value, ...), so both ``except EdgeDLError`` and
``except ValueError`` work.
"""


class EdgeDLError(Exception):
    """Base class of every exception raised by edgedl."""


class ValidationError(EdgeDLError, ValueError):
    """An argument has a wrong value, shape or rank (the message names the argument)."""


class ShapeError(ValidationError):
    """An array has the wrong shape or rank."""


class DTypeError(EdgeDLError, TypeError):
    """An array has a dtype the kernel does not accept."""


class BackendError(EdgeDLError, RuntimeError):
    """A backend is unknown, unavailable, or lacks the requested kernel."""


class MissingDependencyError(EdgeDLError, ImportError):
    """An optional package needed for this feature is not installed."""


class ModelError(EdgeDLError, ValueError):
    """An ONNX model is malformed, truncated or inconsistent."""


class UnsupportedOpsError(EdgeDLError, NotImplementedError):
    """The model uses ONNX ops edgedl does not implement.

    ``ops`` maps each unsupported op type to the list of its node names.
    """

    def __init__(self, ops):
        self.ops = {k: list(v) for k, v in ops.items()}
        lines = [f"  {op}: {', '.join(n or '<unnamed>' for n in names)}"
                 for op, names in sorted(self.ops.items())]
        super().__init__(f"unsupported ONNX ops ({len(self.ops)} op types):\n" + "\n".join(lines))


class InputError(EdgeDLError, ValueError):
    """A feed passed to ``InferenceSession.run`` has a wrong name, dtype or rank."""


class ResourceError(EdgeDLError, MemoryError):
    """An allocation would exceed edgedl's memory limit (see ``edgedl.set_memory_limit``);
    the message names what (tensor, node, image), the bytes it needs and the limit."""
