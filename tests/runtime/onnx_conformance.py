"""Run onnx's node test cases (onnx.backend.test.case.node) through edgedl.onnx.backend.

Shared by tests/runtime/test_conformance.py; ``python tests/runtime/onnx_conformance.py`` prints every
failing case (to maintain conformance_excluded.txt).
"""
import builtins
import os
import warnings

import numpy as np

from edgedl.kernels.activation_table import BY_ONNX

#: The op types of issue 4's list: a case is selected when every node of its graph is one.
#: The activations' are those of edgedl's activation table (the planner's internal Silu aside).
OPS = {op for op, rec in BY_ONNX.items() if rec.onnx_since} | set("""Conv ConvTranspose
BatchNormalization Exp Log Add Sub Mul Div Sqrt Pow Neg Abs Max Min MaxPool AveragePool
GlobalAveragePool GlobalMaxPool Concat Reshape Transpose Flatten
Split Slice Gather Squeeze Unsqueeze Shape Cast Constant ConstantOfShape Range Expand Identity
Pad Resize Upsample MatMul Gemm NonMaxSuppression TopK ReduceMax ReduceMean ReduceSum ArgMax
Tile Where Equal Less Greater Floor Ceil LRN Dropout SpaceToDepth DepthToSpace
ScatterND ScatterElements Scatter GatherND CumSum OneHot Trilu Einsum IsNaN IsInf
InstanceNormalization LayerNormalization GroupNormalization Gelu Erf
QuantizeLinear DequantizeLinear DynamicQuantizeLinear QLinearConv QLinearMatMul ConvInteger
MatMulInteger""".split())

_DTYPES = {np.dtype(t) for t in (np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                                 np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)}
HERE = os.path.dirname(os.path.abspath(__file__))
EXCLUDED_FILE = os.path.join(HERE, "conformance_excluded.txt")


# the same dtypes as TensorProto element types (onnx 1.12 keeps bfloat16 data in uint16 arrays:
# the declared types tell those cases apart)
_ELEM_TYPES = {1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13}


def _ok_dtypes(case):
    g = case.model.graph
    if any(vi.type.tensor_type.elem_type not in _ELEM_TYPES for vi in list(g.input) + list(g.output)):
        return False
    if any(a.name == "to" and a.i not in _ELEM_TYPES for n in g.node for a in n.attribute):
        return False
    for inputs, outputs in case.data_sets:
        for a in list(inputs) + list(outputs):
            if not isinstance(a, (np.ndarray, np.generic)) or a.dtype not in _DTYPES:
                return False
    return True


def node_cases():
    """Every node test case the installed onnx generates."""
    from onnx.backend.test.case.node import collect_testcases
    # onnx 1.12's case exporters (Debian bookworm's python3-onnx, the 32-bit ARM test tool)
    # still use np.float/np.int/np.bool, which that Debian's numpy 1.24 removed: give them
    # the builtins they aliased while the cases are built, then take them away again.
    gone = [n for n in ("float", "int", "bool", "object") if n not in np.__dict__]
    for n in gone:
        setattr(np, n, getattr(builtins, n))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cases = collect_testcases(None)   # None = every op (onnx < 1.13 has no default)
    finally:
        for n in gone:
            delattr(np, n)
    return cases


def selected_cases():
    """onnx's node cases whose ops are all in OPS and whose tensors are float/int/bool."""
    cases = node_cases()
    out = []
    for c in cases:
        ops = {n.op_type for n in c.model.graph.node}
        if ops and ops <= OPS and _ok_dtypes(c):
            out.append(c)
    return sorted(out, key=lambda c: c.name)


def excluded():
    """name -> reason, from conformance_excluded.txt (``name: reason`` lines, # comments)."""
    ex = {}
    with open(EXCLUDED_FILE) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, reason = line.partition(":")
                ex[name.strip()] = reason.strip()
    return ex


def run_case(case, backend=None):
    """Raise AssertionError (or the edgedl error) when edgedl disagrees with the case."""
    from edgedl.onnx import backend as eb
    rep = eb.prepare(case.model, backend=backend)
    for inputs, expected in case.data_sets:
        got = rep.run(inputs)
        assert len(got) >= len(expected), f"{len(got)} outputs, expected {len(expected)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            g = np.asarray(g)
            assert g.dtype == e.dtype, f"output {i}: dtype {g.dtype}, expected {e.dtype}"
            assert g.shape == e.shape, f"output {i}: shape {g.shape}, expected {e.shape}"
            if e.dtype.kind == "f":
                np.testing.assert_allclose(g, e, rtol=max(case.rtol, 1e-4),
                                           atol=max(case.atol, 1e-6),
                                           err_msg=f"output {i}")
            else:
                np.testing.assert_array_equal(g, e, err_msg=f"output {i}")


if __name__ == "__main__":   # pragma: no cover - maintenance helper
    import sys
    cases = selected_cases()
    fails = 0
    for c in cases:
        try:
            run_case(c, sys.argv[1] if len(sys.argv) > 1 else None)
        except Exception as e:
            fails += 1
            msg = str(e).strip().splitlines()
            print(f"{c.name}: {type(e).__name__}: {' '.join(msg[:3])[:300]}")
    print(f"{len(cases) - fails}/{len(cases)} pass")
