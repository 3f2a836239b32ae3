"""The activation family in one table: every list about activations is derived from it.

One ``Activation`` record per public activation, in code order. What reads it:

- ``edgedl.kernels.activations``: ``_NAMES`` (the twins), ``_PLANNED`` (the planned
  elementwise entries and their parameters), the Cython fast entry's op codes;
- ``edgedl.__init__``: the lazy public names (each with its ``_grad``);
- ``edgedl.kernels.conv``: which activations fuse into a convolution's epilogue, their
  parameter counts and defaults, the warm-up's epilogues (``fuse_code``, ``fuse_fixed``);
- the backends: ``EPILOGUE`` codes (numpy, numba), ``src_cy/edl_act_codes.h`` (Cython),
  generated from this module by ``tools/gen_act_codes.py`` (``tests/test_registry.py``
  fails when it is stale); the float32 exp polynomial ``EXP_F32`` (numba; the header
  ``edl_math.h`` reads the same numbers from the generated header);
- the ONNX layer: the handlers' attribute defaults (``Param.onnx_attr`` / ``onnx_default``),
  the Conv + activation fusion (``BY_ONNX[op].fuse_code``);
- tests and benchmarks: parameter lists, the ONNX op of each activation, the conformance ops.

This module imports nothing from edgedl: every layer from the backends up may read it.
"""
import zlib
from collections import namedtuple

_SELU_ALPHA = 1.6732632423543772
_SELU_GAMMA = 1.0507009873554805
_INF = float("inf")


class Param(namedtuple("Param", "name default onnx_attr onnx_default",
                       defaults=(None, None, None))):
    """One parameter of an activation: the wrapper's keyword ``name`` and ``default``
    (None: no default; clip's None means unbounded), the ONNX attribute it comes from
    (``onnx_attr``, None when it is an input, e.g. PRelu's slope) and that attribute's default
    when it differs from the wrapper's (``onnx_default``: ONNX stores float32 defaults)."""
    __slots__ = ()

    @property
    def attr_default(self):
        """The default of the ONNX attribute (the wrapper's unless ONNX rounds it)."""
        return self.default if self.onnx_default is None else self.onnx_default


# (collections.namedtuple, not typing.NamedTuple: edgedl's import reads this table, and the
# typing version costs twice as much to create)
class Activation(namedtuple("Activation", "name kind params onnx_op onnx_since fuse_code "
                                          "fuse_fixed fast_code has_grad alias_of",
                            defaults=((), None, None, None, None, None, True, None))):
    """One activation.

    kind: "elementwise" (a twin per name taking scalar parameters, planned as an epilogue),
    "channel" (prelu: a per-channel slope), "axis" (softmax family: a reduction along an
    axis), "alias" (a wrapper over another activation with fixed parameters: ``alias_of``).
    fuse_code: the conv epilogue code (``EPILOGUE``) it fuses as, None if it does not fuse;
    fuse_fixed: the epilogue's (p0, p1) when fixed by the activation instead of its params.
    fast_code: the op code of the Cython float32 fast entry (``fast_f32``), None if none.
    """
    __slots__ = ()


#: conv epilogue codes, in code order (the index is the code the twins switch on)
EPILOGUES = ("none", "clip", "prelu", "hard_sigmoid", "hard_swish", "sigmoid", "silu", "tanh")
EPILOGUE = {name: code for code, name in enumerate(EPILOGUES)}

_E = EPILOGUE
_RECORDS = [
    Activation("relu", "elementwise", (), "Relu", 1, _E["clip"], (0.0, _INF)),
    Activation("relu6", "elementwise", (), None, None, _E["clip"], (0.0, 6.0)),
    Activation("clip", "elementwise", (Param("lo", None, "min"), Param("hi", None, "max")),
               "Clip", 1, _E["clip"]),
    Activation("leaky_relu", "elementwise", (Param("alpha", 0.01, "alpha"),), "LeakyRelu", 1,
               _E["prelu"]),
    Activation("prelu", "channel", (Param("slope"),), "PRelu", 1, _E["prelu"]),
    Activation("elu", "elementwise", (Param("alpha", 1.0, "alpha"),), "Elu", 1),
    Activation("selu", "elementwise",
               (Param("alpha", _SELU_ALPHA, "alpha", 1.67326319217681884765625),
                Param("gamma", _SELU_GAMMA, "gamma", 1.05070102214813232421875)), "Selu", 1),
    Activation("sigmoid", "elementwise", (), "Sigmoid", 1, _E["sigmoid"]),
    Activation("hard_sigmoid", "elementwise",
               (Param("alpha", 0.2, "alpha"), Param("beta", 0.5, "beta")), "HardSigmoid", 1,
               _E["hard_sigmoid"]),
    Activation("tanh", "elementwise", (), "Tanh", 1, _E["tanh"]),
    Activation("softplus", "elementwise", (), "Softplus", 1),
    Activation("swish", "elementwise", (Param("beta", 1.0),)),
    # "Silu" is no ONNX op: the planner writes x * Sigmoid(x) as one (an internal op type)
    Activation("silu", "alias", (), "Silu", None, _E["silu"], alias_of=("swish", (1.0,))),
    Activation("hard_swish", "elementwise", (), "HardSwish", 14, _E["hard_swish"]),
    Activation("mish", "elementwise", (), "Mish", 18),
    Activation("softmax", "axis", (Param("axis", -1, "axis"),), "Softmax", 1),
    Activation("log_softmax", "axis", (Param("axis", -1, "axis"),), "LogSoftmax", 1),
]


def _with_fast_codes(records):
    """The Cython fast entry's codes: the elementwise ops 0..n-1 in table order, their
    gradients n..2n-1, then the axis ops (2n, 2n + 1, ...) and their gradients."""
    elem = [r.name for r in records if r.kind == "elementwise"]
    axis = [r.name for r in records if r.kind == "axis"]
    code = {n: i for i, n in enumerate(elem)}
    code.update({n: 2 * len(elem) + i for i, n in enumerate(axis)})
    return [r._replace(fast_code=code.get(r.name)) for r in records]


def op_codes():
    """Every op code of the Cython kernels: [(C name, code)] forward and gradient, in code
    order (what tools/gen_act_codes.py writes into src_cy/edl_act_codes.h)."""
    elem = [r for r in ACTIVATIONS.values() if r.kind == "elementwise"]
    axis = [r for r in ACTIVATIONS.values() if r.kind == "axis"]
    rows = [(r.name.upper(), r.fast_code) for r in elem]
    rows += [(r.name.upper() + "_G", r.fast_code + len(elem)) for r in elem]
    rows += [(r.name.upper(), r.fast_code) for r in axis]
    rows += [(r.name.upper() + "_G", r.fast_code + len(axis)) for r in axis]
    return rows


#: name -> record, in code order
ACTIVATIONS = {r.name: r for r in _with_fast_codes(_RECORDS)}
#: ONNX op type (and the planner's internal "Silu") -> record
BY_ONNX = {r.onnx_op: r for r in ACTIVATIONS.values() if r.onnx_op}
#: the activations that fuse into a conv epilogue, name -> record
FUSED = {n: r for n, r in ACTIVATIONS.items() if r.fuse_code is not None}
#: elementwise twins, name -> their parameter names (the planned epilogue entries)
PLANNED = {n: tuple(p.name for p in r.params) for n, r in ACTIVATIONS.items()
           if r.kind == "elementwise"}
#: the op codes of the elementwise forward kernels are 0 .. N_ELEMENTWISE - 1
N_ELEMENTWISE = len(PLANNED)

#: float32 exp polynomial shared by the numba twins and src_cy/edl_math.h: exp(x) = 2^n (1 + q),
#: r = x - n ln2 in two Cody-Waite steps (ln2 = C1 + C2, n * C1 exact), q = r + r^2 P(r), P of
#: degree 4 near-minimax on [-ln2/2, ln2/2]; LO = log(FLT_MIN), below which 2^n is subnormal.
EXP_F32 = {
    "LO": "-87.33654",
    "LOG2E": "1.44269504088896341",
    "C1": "0.693359375",
    "C2": "-2.12194440e-4",
    "P0": "4.9999988079e-01",
    "P1": "1.6666518152e-01",
    "P2": "4.1669528931e-02",
    "P3": "8.3689158782e-03",
    "P4": "1.3751621591e-03",
}


def _tag():
    """A short digest of everything the compiled twins take from this table as constants."""
    text = repr((EPILOGUES, op_codes(), sorted(EXP_F32.items())))
    return f"{zlib.crc32(text.encode()):08x}"


#: numba freezes module globals into its compiled code, and its cache is keyed on the source
#: file that defines a function, not on the modules its constants came from: the numba twins
#: append this digest to the cached functions' names (edgedl.kernels._numba._table), so a
#: changed table compiles afresh instead of loading stale code.
TAG = _tag()
