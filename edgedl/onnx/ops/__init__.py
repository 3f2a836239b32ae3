"""ONNX op handlers: ``OPS[op_type](ctx) -> fn`` where ``fn(*inputs)`` returns the output
array (or a tuple for multi-output nodes).

A handler runs once per plan, when the shapes of its inputs and the values of its constant
inputs are known (``ctx``); everything that depends only on those is resolved there, so the
returned function does as little as possible per call.
"""
import numpy as np

from ...errors import ModelError

OPS = {}


def op(*names):
    def deco(f):
        for n in names:
            OPS[n] = f
        return f
    return deco


class Unfuse(Exception):
    """Raised by the handler of an internal fused op (fuse.py; ``_parts`` attribute: the
    nodes it replaced, in order) when for these shapes its parts run better as steps of
    their own: the planner then plans the parts in its place."""


class Ctx:
    """What a handler knows when it builds its function."""
    __slots__ = ("node", "opset", "consts", "shapes", "dtypes", "backend", "static")

    def __init__(self, node, opset, consts, shapes, dtypes, backend, static=False):
        self.node = node
        self.opset = opset
        self.consts = consts      # per input: np.ndarray if constant, else None
        self.shapes = shapes      # per input: shape tuple seen while planning (None if omitted)
        self.dtypes = dtypes
        self.backend = backend    # a concrete backend name
        self.static = static      # input shapes are the same on every run of this plan

    def attr(self, name, default=None):
        return self.node.attrs.get(name, default)

    @property
    def n_in(self):
        """Number of inputs, trailing omitted ones excluded."""
        ins = self.node.inputs
        n = len(ins)
        while n and not ins[n - 1]:
            n -= 1
        return n

    def has(self, i):
        return i < len(self.node.inputs) and bool(self.node.inputs[i])

    def const(self, i, what=None):
        """The constant value of input i; ModelError when it is computed at run time."""
        if not self.has(i):
            return None
        v = self.consts[i]
        if v is None:
            raise ModelError(f"{self.node.op_type} node {self.node.name!r}: input {i} "
                             f"({what or self.node.inputs[i]!r}) must be a constant (an "
                             "initializer or computable from shapes); it is computed at run time")
        return v

    def is_const(self, i):
        return self.has(i) and self.consts[i] is not None

    def fail(self, msg):
        return ModelError(f"{self.node.op_type} node {self.node.name!r}: {msg}")


def takes_out(f, bound=None):
    """Mark a handler's function as accepting ``out=`` (a preallocated output buffer of the
    traced shape and dtype, which it must fill and return); the planner then recycles
    buffers by liveness instead of allocating each output on every run.

    ``bound``: f's one-call form (a planned kernel's Cython fast path, e.g. ConvF32, QConv8,
    QMap8), ``bound(x, out, nthreads) -> bool``: f's work on its first input into ``out``,
    True when done, False having touched nothing (f then runs and raises what it must). The
    compiled plan calls it directly, without f's Python layers."""
    f.takes_out = True
    if bound is not None:
        f.bound = bound
    return f


def ints(v):
    return [int(x) for x in np.asarray(v).reshape(-1)]


from . import elementwise, nn, quant, tensor  # noqa: E402,F401  (register handlers)
