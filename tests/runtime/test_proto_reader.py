"""edgedl's own ONNX reader (edgedl/onnx/proto.py, issue 17 point 3) against the onnx package:
the same graph, field by field, for every shared model, every onnx node test case and every
model / tensor file shipped in onnx's backend test data; every tensor encoding (raw, typed
packed and unpacked, int32_data carrying 8/16-bit types, external data with its confinement
rules); wire-format corner cases; and hostile bytes (truncations, flips, lengths claiming
gigabytes, deep nesting), which must all end in one ModelError naming the byte offset.

The reader must work without onnx: a child process blocks ``onnx`` and ``google.protobuf``
and reads a model, and the tests that do not compare with onnx run where it is missing
(32-bit Pi OS). ``EDGEDL_FUZZ_LONG=1`` runs ten times the fuzz cases.
"""
import glob
import math
import os
import random
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from edgedl import _memory
from edgedl.errors import ModelError, ResourceError
from edgedl.onnx import proto as P
from onnx_compat import np_dtype, onnx_version

try:
    import onnx
    from onnx import helper, numpy_helper
except ImportError:             # 32-bit Pi OS: the reader's own tests still run
    onnx = helper = numpy_helper = None
needs_onnx = pytest.mark.skipif(onnx is None, reason="needs the onnx package (the oracle)")

T = P.TensorProto               # element types: the same numbers as onnx's
LONG = os.environ.get("EDGEDL_FUZZ_LONG", "") not in ("", "0")
#: element types the reader decodes (the others have no NumPy dtype without ml_dtypes)
SUPPORTED = [T.FLOAT, T.UINT8, T.INT8, T.UINT16, T.INT16, T.INT32, T.INT64, T.STRING, T.BOOL,
             T.FLOAT16, T.DOUBLE, T.UINT32, T.UINT64, T.COMPLEX64, T.COMPLEX128]


@pytest.fixture(autouse=True)
def _default_memory_limit(monkeypatch):
    monkeypatch.delenv("EDGEDL_MEMORY_LIMIT", raising=False)
    _memory.reset_memory_limit()
    yield
    _memory.reset_memory_limit()


# ----------------------------------------------------------------------------- comparison
def _same_scalar(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return type(a) is type(b) and a == b


def assert_same(mine, theirs, path="model"):
    """Every field of edgedl's message equals onnx's (presence, values, nested messages)."""
    assert type(mine).__name__ == type(theirs).__name__, path
    known = theirs.DESCRIPTOR.fields_by_name if hasattr(theirs, "DESCRIPTOR") else None
    for name, kind, rep, _ in type(mine)._FIELDS.values():
        if known is not None and name not in known:
            continue                      # a field newer than this onnx (1.12 on 32-bit ARM)
        where = f"{path}.{name}"
        m, t = getattr(mine, name), getattr(theirs, name)
        if rep == P._SINGLE:
            assert mine.HasField(name) == theirs.HasField(name), where
            if kind == P._MSG:
                if mine.HasField(name):           # absent: both are empty defaults
                    assert_same(m, t, where)
            else:
                assert _same_scalar(m, t), f"{where}: {m!r} != {t!r}"
        elif rep == P._ARRAY:
            want = np.asarray(t, dtype=m.dtype)
            assert isinstance(m, np.ndarray) and m.shape == want.shape, where
            assert np.array_equal(m, want, equal_nan=m.dtype.kind == "f"), where
        else:
            assert isinstance(m, list) and len(m) == len(t), f"{where}: {len(m)} != {len(t)}"
            for k, (x, y) in enumerate(zip(m, t)):
                if kind == P._MSG:
                    assert_same(x, y, f"{where}[{k}]")
                else:
                    assert _same_scalar(x, y), f"{where}[{k}]: {x!r} != {y!r}"
    for group in set(type(mine)._ONEOF.values()):
        assert mine.WhichOneof(group) == theirs.WhichOneof(group), f"{path}.<{group}>"


def assert_same_array(t_mine, t_onnx, what):
    if t_onnx.data_type not in SUPPORTED or t_onnx.HasField("segment"):
        with pytest.raises(ModelError):
            P.to_array(t_mine)
        return
    want = numpy_helper.to_array(t_onnx)
    # to_array also takes onnx's own TensorProto (duck typing: the lead may pass either)
    for got in (P.to_array(t_mine), P.to_array(t_onnx)):
        assert got.dtype == want.dtype and got.shape == want.shape, what
        assert got.flags.writeable, what
        if want.dtype == object:
            assert got.tolist() == want.tolist(), what
        else:
            assert np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"), what


def _tensors_and_attrs(g_mine, g_onnx, path):
    """Yield (mine, onnx, where) for every tensor of a graph and its subgraphs, checking
    attribute_value against helper.get_attribute_value on the way."""
    for i, (a, b) in enumerate(zip(g_mine.initializer, g_onnx.initializer)):
        yield a, b, f"{path}.initializer[{i}]"
    for i, (n, m) in enumerate(zip(g_mine.node, g_onnx.node)):
        for a, b in zip(n.attribute, m.attribute):
            where = f"{path}.node[{i}].{a.name}"
            if b.ref_attr_name:
                with pytest.raises(ModelError):
                    P.attribute_value(a)
                continue
            va, vb = P.attribute_value(a), helper.get_attribute_value(b)
            assert type(P.attribute_value(b)) is type(vb), where
            if b.type in (b.TENSOR, b.GRAPH, b.SPARSE_TENSOR, b.TYPE_PROTO):
                va, vb = [va], [vb]
            if isinstance(vb, list):
                assert isinstance(va, list) and len(va) == len(vb), where
                for x, y in zip(va, vb):
                    if isinstance(y, onnx.GraphProto):
                        yield from _tensors_and_attrs(x, y, where)
                    elif isinstance(y, onnx.TensorProto):
                        yield x, y, where
                    elif not isinstance(y, (onnx.SparseTensorProto, onnx.TypeProto)):
                        assert _same_scalar(x, y), where
            else:
                assert _same_scalar(va, vb), f"{where}: {va!r} != {vb!r}"


def check_model_bytes(data, where):
    """Parse with both readers; the trees, the tensors and the attribute values agree."""
    theirs = onnx.load_from_string(data)
    mine = P.parse_model(data, where)
    assert_same(mine, theirs)
    for a, b, w in _tensors_and_attrs(mine.graph, theirs.graph, where):
        assert_same_array(a, b, w)
    return mine


# ----------------------------------------------------------------------------- real models
def _shared_models(shared_dir):
    paths = sorted(glob.glob(str(shared_dir / "models" / "*.onnx")))
    if not paths:
        pytest.skip("no shared models")
    return paths


@needs_onnx
def test_shared_models_match_onnx(shared_dir):
    for path in _shared_models(shared_dir):
        with open(path, "rb") as f:
            m = check_model_bytes(f.read(), path)
        assert len(m.graph.node) > 50 and len(m.graph.initializer) > 50, path
        assert m.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3, path


def test_read_model_reads_the_shared_models(shared_dir, tmp_path):
    for path in _shared_models(shared_dir):
        m = P.read_model(path)
        assert len(m.graph.node) > 50 and m.opset_import[0].version >= 9, path
        arrays = [P.to_array(t, what="initializer") for t in m.graph.initializer]
        assert sum(a.size for a in arrays) > 50000, path
        assert all(a.dtype in (np.float32, np.int64) and a.flags.writeable for a in arrays)
        assert m.graph.input[0].type.tensor_type.elem_type == T.FLOAT
    with pytest.raises(ModelError, match="cannot read ONNX model"):
        P.load_model(str(tmp_path / "missing.onnx"))


@needs_onnx
def test_runtime_graph_and_session_same_from_both_readers(shared_dir, monkeypatch):
    """The drop-in claim: graph.py's build_graph, the detector's model facts and a session's
    outputs are the same from this reader's ModelProto as from onnx's."""
    from edgedl.detect import autoconfig
    from edgedl.onnx import graph as _graph, session as _session
    from edgedl.onnx.ops import OPS

    def key(g):
        return ([(n.op_type, n.name, n.inputs, n.outputs, n.domain, sorted(n.attrs))
                 for n in g.nodes], [(v.name, v.elem_type, v.dtype, v.dims)
                                     for v in g.inputs + g.outputs],
                g.opset, g.ir_version, g.opsets, sorted(g.consts))

    def facts(p, path):
        f = autoconfig.model_facts(autoconfig.ProtoIO(p), p, path)
        return (f.input_name, f.input_shape, f.input_type, f.outputs, f.metadata, f.layout,
                f.width, f.height, sorted(f.graph.head_ops(f.outputs[0].name)))

    rng = np.random.default_rng(0)
    for path in _shared_models(shared_dir):
        theirs, mine = onnx.load(path), P.read_model(path)
        g1, g2 = _graph.build_graph(theirs, OPS), _graph.build_graph(mine, OPS)
        assert key(g1) == key(g2), path
        for n1, n2 in zip(g1.nodes, g2.nodes):
            for k, v in n1.attrs.items():
                w = n2.attrs[k]
                assert type(v) is type(w) and np.array_equal(v, w), (path, n1.name, k)
        for k, v in g1.consts.items():
            assert v.dtype == g2.consts[k].dtype and np.array_equal(v, g2.consts[k]), k
        assert facts(theirs, path) == facts(mine, path), path
        if "yolox" in path:
            continue                      # the largest: its graph is enough
        ref = _session.InferenceSession(theirs)
        x = rng.random([d if isinstance(d, int) else 1 for d in ref.get_inputs()[0].shape],
                       dtype=np.float32)
        want = ref.run(None, {ref.get_inputs()[0].name: x})
        with monkeypatch.context() as mp:
            mp.setattr(_graph, "read_model", P.read_model)
            sess = _session.InferenceSession(path)
        got = sess.run(None, {sess.get_inputs()[0].name: x})
        assert all(np.array_equal(a, b) for a, b in zip(got, want)), path


def _node_cases():
    from onnx_conformance import node_cases
    return node_cases()


@needs_onnx
def test_onnx_node_cases_match_onnx():
    """Every node test case onnx generates (~1900 models: every op, attribute type and
    tensor data type of the spec), and the arrays of their data sets as TensorProtos."""
    cases = _node_cases()
    assert len(cases) > (1000 if onnx_version() >= (1, 14) else 900)   # 924 in onnx 1.12
    dtypes = set()
    for c in cases:
        check_model_bytes(c.model.SerializeToString(), c.name)
        for arrays in c.data_sets[:1]:
            for arr in list(arrays[0]) + list(arrays[1]):
                if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biufcUO":
                    continue             # sequences, optionals, ml_dtypes
                t = numpy_helper.from_array(arr, "x")
                assert_same_array(P.parse(P.TensorProto, t.SerializeToString()), t, c.name)
                dtypes.add(arr.dtype.str)
    assert len(dtypes) >= 12, dtypes


@needs_onnx
def test_onnx_backend_data_files_match_onnx():
    """The model.onnx and tensor .pb files shipped in onnx's backend test data."""
    data_dir = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    files = sorted(glob.glob(os.path.join(data_dir, "**", "*.*"), recursive=True))
    models = [f for f in files if f.endswith(".onnx")]
    tensors = [f for f in files if f.endswith(".pb")]
    if not models:
        pytest.skip("this onnx wheel ships no backend test data")
    for f in models:
        with open(f, "rb") as fh:
            check_model_bytes(fh.read(), f)
    for f in tensors:
        with open(f, "rb") as fh:
            data = fh.read()
        t = onnx.TensorProto()
        t.ParseFromString(data)
        mine = P.parse(P.TensorProto, data, f)
        assert_same(mine, t, f)
        assert_same_array(mine, t, f)


# ----------------------------------------------------------------------------- tensors
def _values(dt, rng):
    if dt == T.STRING:
        return np.array(["", "a", "ünï", "x" * 40, "b", "c"], dtype=object).reshape(2, 3)
    npdt = np_dtype(dt)
    if npdt.kind == "b":
        return rng.integers(0, 2, (2, 3)).astype(bool)
    if npdt.kind in "iu":
        info = np.iinfo(npdt)
        v = rng.integers(info.min, info.max, (2, 3), dtype=npdt, endpoint=True)
        v.flat[:2] = (info.min, info.max)
        return v
    v = rng.standard_normal((2, 3)) * 1e3
    if npdt.kind == "c":
        v = v + 1j * rng.standard_normal((2, 3))
    v = v.astype(npdt)
    v.flat[0] = -0.0
    v.flat[1] = np.nan if npdt.kind == "f" else v.flat[1]
    v.flat[2] = np.inf if npdt.kind == "f" else v.flat[2]
    return v


ENCODINGS = [(dt, raw) for dt in SUPPORTED for raw in (False, True)
             if not (raw and dt == T.STRING)]      # strings have no raw encoding


@needs_onnx
@pytest.mark.parametrize("dt,raw", ENCODINGS, ids=[
    f"{T.DataType.Name(d)}-{'raw' if r else 'typed'}" for d, r in ENCODINGS])
def test_every_data_type_and_encoding(dt, raw, rng):
    if dt in (T.COMPLEX64, T.COMPLEX128) and not raw and onnx_version() < (1, 14):
        pytest.skip("onnx 1.12's numpy_helper.to_array (the oracle) cannot decode typed complex")
    v = _values(dt, rng)
    if raw:
        t = numpy_helper.from_array(v, "t")
    else:
        vals = v.flatten().tolist()
        if dt == T.STRING:                # bytes: onnx 1.12 takes no str
            vals = [x.encode() for x in vals]
        t = helper.make_tensor("t", dt, v.shape, vals, raw=False)
    for variant in (t, _zero_size(t)):
        data = variant.SerializeToString()
        mine = P.parse(P.TensorProto, data)
        assert_same(mine, variant, "tensor")
        assert_same_array(mine, variant, "tensor")
    got = P.to_array(P.parse(P.TensorProto, t.SerializeToString()))
    assert got.dtype == v.dtype if dt != T.STRING else got.dtype == object
    assert np.array_equal(got, v, equal_nan=v.dtype.kind in "fc")


def _zero_size(t):
    z = onnx.TensorProto()
    z.CopyFrom(t)
    del z.dims[:]
    z.dims.extend([0, 3])
    for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data",
              "string_data"):
        del getattr(z, f)[:]
    if z.HasField("raw_data"):
        z.raw_data = b""
    return z


@needs_onnx
def test_int32_data_carries_small_types_as_onnx_does():
    """int32_data holding 8/16-bit values and float16 bits, out-of-range values wrapped (as
    numpy_helper wraps them), negatives as 10-byte varints."""
    vals = [-1, 0, 1, 127, 128, 255, 256, -129, 65535, 65536, -32768, (1 << 31) - 1, -(1 << 31)]
    for dt in (T.INT8, T.UINT8, T.INT16, T.UINT16, T.FLOAT16, T.BOOL, T.INT32):
        t = onnx.TensorProto(name="t", data_type=dt, dims=[len(vals)])
        t.int32_data.extend(vals)
        mine = P.parse(P.TensorProto, t.SerializeToString())
        assert mine.int32_data.tolist() == vals
        got, want = P.to_array(mine), numpy_helper.to_array(t)
        assert got.dtype == want.dtype
        if dt == T.BOOL:                 # onnx keeps the byte (a bool holding 2); edgedl 0/1
            # an older onnx (1.12) takes any nonzero int32 as True (256 too): there compare
            # only the values that fit a byte
            wraps = want.view(np.uint8)[vals.index(256)] == 0
            byte = slice(None) if wraps else np.array(vals) % 256 == vals
            assert np.array_equal(got[byte], want.view(np.uint8)[byte] != 0)
        else:
            assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


@needs_onnx
def test_uint64_and_int64_extremes():
    t = onnx.TensorProto(name="u", data_type=T.UINT64, dims=[3])
    t.uint64_data.extend([0, (1 << 64) - 1, 1 << 63])
    i = onnx.TensorProto(name="i", data_type=T.INT64, dims=[4])
    i.int64_data.extend([-(1 << 63), (1 << 63) - 1, -1, 0])
    u32 = onnx.TensorProto(name="u32", data_type=T.UINT32, dims=[2])
    u32.uint64_data.extend([(1 << 32) - 1, 1 << 32])          # wraps, as numpy_helper
    for x in (t, i, u32):
        mine = P.parse(P.TensorProto, x.SerializeToString())
        assert_same(mine, x, x.name)
        if x is u32 and onnx_version() < (1, 14):
            # onnx 1.12's to_array cannot convert 1 << 32 where a C long is 32-bit (armhf)
            assert P.to_array(mine).tolist() == [(1 << 32) - 1, 0]
            continue
        assert_same_array(mine, x, x.name)


# ----------------------------------------------------------------------------- wire format
def _varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(num, wt):
    return _varint(num << 3 | wt)


def _ld(num, payload):
    return _key(num, 2) + _varint(len(payload)) + payload


def _vi(num, v):
    return _key(num, 0) + _varint(v)


def _model(graph_bytes, extra=b""):
    return _vi(1, 8) + _ld(8, _ld(1, b"") + _vi(2, 13)) + _ld(7, graph_bytes) + extra


def _node(op=b"Relu", attrs=b""):
    return _ld(1, _ld(1, b"x") + _ld(2, b"y") + _ld(4, op) + attrs)


def _same_as_onnx(data):
    """Parse with the reader; and with onnx, where it is installed: the same tree."""
    mine = P.parse(P.ModelProto, data)
    if onnx is not None:
        theirs = onnx.ModelProto()
        theirs.ParseFromString(data)
        assert_same(mine, theirs)
    return mine


def test_large_typed_int_fields_decode_in_chunks(rng):
    """Packed varints are decoded with NumPy in chunks: a field longer than one chunk, with
    1- to 10-byte values; int32_data carrying int16 values wraps them as numpy_helper."""
    n = P._CHUNK + 1000
    v = rng.integers(-(1 << 63), (1 << 63) - 1, n, dtype=np.int64, endpoint=True)
    v[::3] = rng.integers(-5, 300, v[::3].size)
    packed = b"".join(_varint(x) for x in v.tolist())
    t = P.parse(T, _vi(1, n) + _vi(2, T.INT64) + _ld(7, packed))
    got = P.to_array(t)
    assert got.dtype == np.int64 and np.array_equal(got, v)
    u = P.parse(T, _vi(1, n) + _vi(2, T.INT16) + _ld(5, packed))
    assert np.array_equal(P.to_array(u), v.astype(np.int16))


def test_unpacked_and_mixed_repeated_encodings():
    """Repeated scalars written one by one (not packed), packed in several chunks, and both
    mixed: values keep their order, as protobuf reads them."""
    floats = [1.5, -2.25, float("inf"), 3.0]
    ints = [-1, 5, -(1 << 63), (1 << 63) - 1] + list(range(-20, 20))    # > 32 bytes: NumPy path
    attr_f = _ld(1, b"fs") + _vi(20, 6) + b"".join(_key(7, 5) + struct.pack("<f", f)
                                                    for f in floats[:2]) + \
        _ld(7, struct.pack("<2f", *floats[2:]))
    attr_i = _ld(1, b"is") + _vi(20, 7) + _vi(8, ints[0]) + \
        _ld(8, b"".join(_varint(v) for v in ints[1:30])) + b"".join(_vi(8, v) for v in ints[30:])
    tensor = _vi(1, 3) + _vi(2, 1) + _key(4, 5) + struct.pack("<f", 1.0) + \
        _ld(4, struct.pack("<f", 2.0)) + _key(4, 5) + struct.pack("<f", 3.0) + _ld(8, b"w")
    itensor = _vi(1, 3) + _vi(2, 7) + _vi(7, -5) + _ld(7, _varint(6) + _varint(-7)) + _ld(8, b"i")
    g = _node(b"Foo", _ld(5, attr_f) + _ld(5, attr_i)) + _ld(5, tensor) + _ld(5, itensor)
    m = _same_as_onnx(_model(g))
    a = m.graph.node[0].attribute
    assert a[0].floats == floats and a[1].ints == ints
    assert P.to_array(m.graph.initializer[0]).tolist() == [1.0, 2.0, 3.0]
    assert P.to_array(m.graph.initializer[1]).tolist() == [-5, 6, -7]


def test_protobuf_merge_oneof_unknown_fields_and_wire_types():
    """What protobuf does and the reader copies: unknown fields (every wire type) skipped, a
    known field with another wire type skipped, a singular message given twice merged, the
    last scalar wins, a oneof keeps its last member, an unknown enum value reads as absent,
    an int32 keeps the low 32 bits."""
    dim = _ld(1, _vi(1, 7) + _ld(2, b"N"))                     # dim_value then dim_param
    dim2 = _ld(1, _ld(2, b"N") + _vi(1, 7))                    # dim_param then dim_value
    ttype = _ld(1, _vi(1, 1) + _ld(2, dim + dim2))
    vi = _ld(1, b"x") + _ld(2, _ld(4, b"") + ttype)            # sequence_type, then tensor_type
    unknown = _vi(99, 5) + _key(98, 5) + b"abcd" + _key(97, 1) + b"12345678" + _ld(96, b"zz")
    graph1 = _node() + _ld(11, vi) + unknown + _ld(2, b"first")
    graph2 = _ld(12, _ld(1, b"y")) + _ld(2, b"second")
    attr = _ld(1, b"a") + _vi(20, 99) + _key(3, 5) + b"\0\0\0\0" + _vi(3, 4)  # bad enum; i fixed32
    tensor = _vi(2, (1 << 32) + 6) + _ld(8, b"t")              # data_type keeps 6 (INT32)
    data = _model(graph1, _ld(7, graph2) + _ld(7, _node(b"Sig", _ld(5, attr)) + _ld(5, tensor)) +
                  _vi(1, 9) + unknown + _key(2, 0) + b"\x01")  # producer_name as a varint
    m = _same_as_onnx(data)
    g = m.graph
    assert [n.op_type for n in g.node] == ["Relu", "Sig"] and g.name == "second"
    assert m.ir_version == 9 and not m.HasField("producer_name")
    assert g.input[0].type.WhichOneof("value") == "tensor_type"
    dims = g.input[0].type.tensor_type.shape.dim
    assert dims[0].WhichOneof("value") == "dim_param" and dims[0].dim_value == 0
    assert dims[1].WhichOneof("value") == "dim_value" and dims[1].dim_value == 7
    a = g.node[1].attribute[0]
    assert not a.HasField("type") and a.type == 0 and a.i == 4
    assert g.initializer[0].data_type == T.INT32


def test_defaults_and_protobuf_api():
    m = P.parse_model(_model(_node()))
    assert not m.graph.node[0].HasField("name") and m.graph.node[0].name == ""
    vi = P.ValueInfoProto()
    assert not vi.HasField("type") and vi.type.tensor_type.elem_type == 0
    assert not vi.type.tensor_type.HasField("shape") and vi.type.tensor_type.shape.dim == []
    assert vi.type.WhichOneof("value") is None
    t = P.TensorProto()
    assert t.float_data.size == 0 and t.dims == [] and t.data_location == t.DEFAULT
    assert P.TensorProto.DataType.Name(P.TensorProto.FLOAT16) == "FLOAT16"
    assert P.TensorProto.BFLOAT16 == 16 and P.AttributeProto.GRAPHS == 10    # onnx.proto
    with pytest.raises(ValueError):
        P.TensorProto.DataType.Name(999)
    with pytest.raises(ValueError):
        t.HasField("dims")                       # repeated: protobuf raises too
    t.raw_data = b"\0" * 4                       # graph.py's external-data loader sets it
    assert t.HasField("raw_data")
    assert "raw_data" in repr(t)
    t = P.TensorProto(name="w", data_type=P.TensorProto.INT64, dims=[2], int64_data=[-1, 7])
    assert P.to_array(t).tolist() == [-1, 7] and t.HasField("name") and not t.HasField("segment")
    with pytest.raises(TypeError):
        P.TensorProto(nme="w")


@needs_onnx
def test_subgraphs_and_attribute_values():
    """If / Loop bodies (GRAPH, GRAPHS), nested three deep, and every attribute type."""
    inner = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "inner", [],
                              [helper.make_tensor_value_info("b", T.FLOAT, [2])])
    mid = helper.make_graph([helper.make_node("If", ["c"], ["b"], then_branch=inner,
                                              else_branch=inner)], "mid", [],
                            [helper.make_tensor_value_info("b", T.FLOAT, None)])
    t = numpy_helper.from_array(np.arange(6, dtype=np.int64).reshape(2, 3), "k")
    sp = helper.make_sparse_tensor(numpy_helper.from_array(np.array([1.0], np.float32), "v"),
                                   numpy_helper.from_array(np.array([0], np.int64), "i"), [4])
    node = helper.make_node(
        "Custom", ["x"], ["y"], domain="my.domain", name="n", f=0.1, i=-3, s="ü", t=t, g=mid,
        floats=[0.5, -1e30], ints=[-1, 1 << 40], strings=["a", "b"], tensors=[t, t],
        graphs=[inner, mid], sparse_tensor=sp,
        tp=helper.make_tensor_type_proto(T.FLOAT, ["N", 3]))
    node.attribute.append(onnx.AttributeProto(name="r", ref_attr_name="r",
                                              type=onnx.AttributeProto.INT))
    g = helper.make_graph([node], "main", [helper.make_tensor_value_info("x", 1, ["N", 3])],
                          [helper.make_tensor_value_info("y", 1, None)], [t])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("my.domain", 2)])
    helper.set_model_props(m, {"labels": "cat,dog", "stride": "8"})
    mine = check_model_bytes(m.SerializeToString(), "subgraphs")
    names = [g.name for g in P.iter_graphs(mine.graph)]
    assert names[0] == "main" and sorted(names) == ["inner"] * 5 + ["main"] + ["mid"] * 2
    assert {p.key: p.value for p in mine.metadata_props} == {"labels": "cat,dog", "stride": "8"}
    vals = {a.name: P.attribute_value(a) for a in mine.graph.node[0].attribute
            if not a.ref_attr_name}
    assert vals["s"] == "ü".encode() and vals["i"] == -3 and vals["f"] == np.float32(0.1)
    assert vals["ints"] == [-1, 1 << 40] and vals["strings"] == [b"a", b"b"]


def _nested(levels):
    """A model whose graph nests ``levels`` subgraphs (node > attribute > graph each)."""
    g = _ld(2, b"innermost")
    for _ in range(levels):
        g = _ld(1, _ld(4, b"Loop") + _ld(5, _ld(1, b"body") + _vi(20, 5) + _ld(6, g)))
    return _model(g)


def test_nesting_depth_matches_protobufs_limit():
    """Protobuf's limit exactly: 33 subgraph levels (100 messages below the model) read, 34
    refused, by both readers; 2000 levels refused fast, without a RecursionError."""
    m = _same_as_onnx(_nested(33))
    assert list(P.iter_graphs(m.graph))[-1].name == "innermost"
    if onnx is not None:
        with pytest.raises(Exception):
            onnx.load_from_string(_nested(34))
    with pytest.raises(ModelError, match=r"nested deeper than 100 levels"):
        P.parse_model(_nested(34))
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="nested deeper"):
        P.parse_model(_nested(2000))
    assert time.perf_counter() - t0 < 1.0


# ----------------------------------------------------------------------------- hostile bytes
MALFORMED = [
    ("group", _model(_node()) + _key(30, 3) + _key(30, 4), r"groups \(wire type 3\)"),
    ("end group", _key(5, 4), r"groups"),
    ("wire type 7", _model(b"") + _key(9, 7), r"invalid wire type 7"),
    ("field 0", _vi(0, 1), r"field number 0"),
    ("truncated varint", _vi(1, 8)[:1] + b"\x80", r"truncated varint"),
    ("11-byte varint", _key(1, 0) + b"\xff" * 10 + b"\x01", r"longer than 10 bytes"),
    ("length claims 4 GB", _key(7, 2) + _varint(1 << 32) + b"\0" * 8,
     r"claims 4294967296 bytes, only 8"),
    ("length claims 2^63", _model(_key(1, 2) + _varint((1 << 63) + 5)), r"claims"),
    ("nested length past its parent", _ld(7, _key(1, 2) + _varint(50) + b"x") + b"\0" * 60,
     r"claims 50 bytes, only 1"),
    ("fixed32 truncated", _key(2, 5) + b"\0\0", r"truncated fixed32"),
    ("packed floats % 4", _model(_ld(5, _ld(4, b"\0" * 7))), r"7 bytes is not a multiple of 4"),
    ("packed ints cut", _model(_ld(5, _ld(7, b"\x80" * 40))), r"truncated varint"),
    ("name not UTF-8", _model(_ld(1, _ld(3, b"\xff\xfe"))), r"not valid UTF-8"),
    ("no graph", _vi(1, 7), r"has no graph"),
    ("empty", b"", r"is empty"),
]


@pytest.mark.parametrize("data,pattern", [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_bytes_are_one_model_error(data, pattern):
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match=pattern) as e:
        P.parse_model(data, "m.onnx")
    assert time.perf_counter() - t0 < 1.0          # no hang, no gigabyte allocation
    assert "m.onnx" in str(e.value)
    if data and "no graph" not in pattern:
        assert "at byte" in str(e.value)


def test_error_names_offset_and_field_path():
    bad = _model(_node(attrs=_ld(5, _ld(1, b"alpha") + _key(2, 5) + b"\0")))
    with pytest.raises(ModelError) as e:
        P.parse_model(bad, "m.onnx")
    msg = str(e.value)
    off = int(msg.split("at byte ")[1].split()[0])
    assert bad[off] == _key(2, 5)[0]                 # the key of the cut float
    assert "ModelProto.graph > GraphProto.node > NodeProto.attribute > AttributeProto.f" in msg


def test_tensor_size_mismatches_and_unsupported_types():
    cases = [
        (dict(data_type=T.FLOAT, dims=[2, 3], raw_data=b"\0" * 20),
         r"initializer 'w': raw_data has 20 bytes, its dims \[2, 3\] x float32 need 24"),
        (dict(data_type=T.INT64, dims=[4], int64_data=[1, 2, 3]),
         r"3 values in int64_data, its dims \[4\] need 4"),
        (dict(data_type=T.FLOAT, dims=[-2, 3]), "negative dimensions"),
        (dict(data_type=T.FLOAT, dims=[1 << 20, 1 << 20], raw_data=b"\0" * 4),
         "need 4398046511104"),
        (dict(data_type=T.FLOAT, dims=[0, 1 << 62, 1 << 62]), "cannot be represented"),
        (dict(data_type=T.STRING, dims=[1], string_data=[b"\xff"]), "not valid UTF-8"),
        (dict(data_type=T.FLOAT, dims=[1], raw_data=b"\0" * 4, segment=P.Segment(begin=0)),
         "segmented"),
    ] + [(dict(data_type=dt, dims=[1], raw_data=b"\0\0"), "does not support")
         for dt in (T.BFLOAT16, T.FLOAT8E4M3FN, T.INT4, T.UNDEFINED, 77)]
    for fields, pattern in cases:
        with pytest.raises(ModelError, match=pattern):
            P.to_array(T(name="w", **fields), what="initializer")


def _mutants(data, rng, n):
    """Deterministic mutants: truncations, bit flips, random bytes, spliced varints; half the
    positions in the first tenth of the file, where the nodes are (weights come later)."""
    out = []
    for k in range(n):
        b = bytearray(data)

        def at():
            return rng.randrange(len(b) if rng.random() < 0.5 else len(b) // 10)
        kind = k % 4
        if kind == 0:
            b = b[:rng.randrange(1, len(b))]
        elif kind == 1:
            for _ in range(rng.choice((1, 2, 8))):
                b[at()] ^= 1 << rng.randrange(8)
        elif kind == 2:
            i = at()
            b[i:i + 4] = bytes(rng.randrange(256) for _ in range(4))
        else:               # a huge or negative varint where a byte was (a length, a dim)
            i = at()
            b[i:i + 1] = _varint(rng.choice((1 << 31, (1 << 64) - 1, 1 << 40, 127, 0)))
        out.append(bytes(b))
    return out


#: mutants per shared model (the small ones more: they are cheaper)
FUZZ_CASES = {"yunet_n_320.onnx": 120, "ultraface_rfb320.onnx": 60, "fastestdet.onnx": 60,
              "yolox_nano.onnx": 30}


def test_fuzz_shared_models(shared_dir):
    """Mutants of the shared models: each parses or raises ModelError, and then its tensors
    decode or raise ModelError / ResourceError — never another exception. Where onnx also
    parses the mutant, both readers agree on the whole tree (checked on every 4th, for
    time); where onnx refuses it, the reader refuses it too (without onnx: the first part)."""
    paths = _shared_models(shared_dir)
    rng = random.Random(17)
    t0 = time.perf_counter()
    counts = {"parsed": 0, "refused": 0}
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        n = FUZZ_CASES.get(os.path.basename(path), 30) * (10 if LONG else 1)
        for k, mut in enumerate(_mutants(data, rng, n)):
            try:
                mine = P.parse_model(mut, "mutant")
            except ModelError:
                counts["refused"] += 1
                if onnx is None:
                    continue
                try:
                    onnx.load_from_string(mut)
                except Exception:
                    continue
                # onnx reads what the reader refuses only for the documented differences
                msg = str(_err(mut))
                assert "UTF-8" in msg or "groups" in msg or "no graph" in msg, msg
                continue
            counts["parsed"] += 1
            for t in mine.graph.initializer:
                try:
                    P.to_array(t)
                except (ModelError, ResourceError):
                    pass
            for n in mine.graph.node:
                for a in n.attribute:
                    try:
                        P.attribute_value(a)
                    except ModelError:
                        pass
            if onnx is None:
                continue
            try:
                theirs = onnx.load_from_string(mut)
            except Exception as e:
                pytest.fail(f"{path} mutant {k}: onnx refuses it ({e}), edgedl's reader not")
            if k % 4 == 0:
                assert_same(mine, theirs, f"mutant {k}")
    print(f"\nfuzz: {counts}")
    assert counts["parsed"] > 10 and counts["refused"] > 10, counts
    assert time.perf_counter() - t0 < (600 if LONG else 60)


def _err(data):
    try:
        P.parse_model(data, "mutant")
    except ModelError as e:
        return e
    return None


def test_random_bytes_never_crash():
    rng = random.Random(3)
    for k in range(500 if not LONG else 5000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        try:
            P.parse(P.ModelProto, data)
        except ModelError:
            pass
        except Exception as e:              # pragma: no cover - the assertion explains
            pytest.fail(f"case {k} ({data!r}): {type(e).__name__}: {e}")


# ----------------------------------------------------------------------------- external data
def _external_model(folder, **info):
    """m.onnx in ``folder`` whose initializer w (float32 [3, 4]) lives in w.bin; ``info``
    replaces its external_data entries (default: location w.bin)."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    (folder / "w.bin").write_bytes(w.tobytes())
    entries = b"".join(_ld(13, _ld(1, k.encode()) + _ld(2, str(v).encode()))
                       for k, v in (info or {"location": "w.bin"}).items())
    tensor = _vi(1, 3) + _vi(1, 4) + _vi(2, T.FLOAT) + _ld(8, b"w") + entries + _vi(14, 1)
    out = _ld(12, _ld(1, b"y"))
    (folder / "m.onnx").write_bytes(_model(_node() + _ld(5, tensor) + out))
    return w, str(folder / "m.onnx")


def test_external_data(tmp_path):
    w, path = _external_model(tmp_path)
    m = P.load_model(path)
    t = m.graph.initializer[0]
    assert P.uses_external_data(t) and not t.HasField("raw_data")
    assert np.array_equal(P.to_array(t, str(tmp_path)), w)
    with pytest.raises(ModelError, match="not given as a path"):
        P.to_array(t)
    with pytest.raises(ModelError, match="not given as a path"):
        P.read_model(open(path, "rb").read())
    m = P.read_model(path)                         # graph.py's read_model: data loaded
    t = m.graph.initializer[0]
    assert t.HasField("raw_data") and not t.external_data and t.data_location == 0
    assert np.array_equal(P.to_array(t), w)
    if onnx is not None:
        assert_same(m, onnx.load(path))
        assert_same(P.load_model(path), onnx.load(path, load_external_data=False))


@pytest.mark.parametrize("info,pattern", [
    ({"location": "../outside.bin"}, "outside the model's folder"),
    ({"location": "/etc/passwd"}, "outside the model's folder"),
    ({"location": "link.bin"}, "outside the model's folder"),
    ({"offset": 0}, "without a location"),
    ({"location": "w.bin", "offset": 40}, "truncated"),
    ({"location": "w.bin", "length": 44}, "need 48 bytes"),
    ({"location": "w.bin", "offset": -1}, "negative offset"),
    ({"location": "w.bin", "offset": "x"}, "cannot read external data"),
    ({"location": "missing.bin"}, "cannot read external data"),
])
def test_external_data_confinement(tmp_path, info, pattern):
    """graph.py's rules: the data file inside the model's folder (symlinks resolved), offset
    and length within it and matching the tensor's size."""
    sub = tmp_path / "model"
    sub.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 48)
    os.symlink(tmp_path / "outside.bin", sub / "link.bin")
    _, path = _external_model(sub, **info)
    with pytest.raises(ModelError, match=pattern):
        P.read_model(path)


# ----------------------------------------------------------------------------- no onnx
def test_reader_works_without_onnx_or_protobuf(shared_dir):
    """In a process where importing onnx or google.protobuf fails, the reader loads a
    model. (edgedl/onnx/__init__.py still imports onnx until the loader is switched over,
    so the module is loaded from its file.)"""
    path = _shared_models(shared_dir)[0]
    code = f"""
import importlib.abc, importlib.util, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "onnx" or name.startswith("google.protobuf"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location("edgedl.onnx.proto", {P.__file__!r})
P = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = P
spec.loader.exec_module(P)
m = P.load_model({path!r})
n = sum(P.to_array(t).size for t in m.graph.initializer)
bad = [k for k in sys.modules if k.split(".")[0] == "onnx" or k.startswith("google")]
print(len(m.graph.node), n, bad)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    nodes, n, bad = r.stdout.split(maxsplit=2)
    assert int(nodes) > 50 and int(n) > 1000 and bad.strip() == "[]"
