"""Read ONNX files without the ``onnx`` or ``protobuf`` packages: pure Python + NumPy.

``import onnx`` costs ~0.85 s and onnx has no 32-bit ARM wheels, so the runtime reads models
with this module. It decodes the protobuf wire format into light objects that carry the same
field names and semantics as onnx's generated classes for the subset the runtime uses::

    m = parse_model(open("model.onnx", "rb").read(), "model.onnx")
    for t in m.graph.initializer:
        w = to_array(t, base_dir)            # numpy_helper.to_array, validated
    for n in m.graph.node:
        attrs = {a.name: attribute_value(a) for a in n.attribute}   # helper.get_attribute_value

Semantics kept from protobuf (proto2, as onnx.proto is): an absent singular field reads as its
default ('' / 0 / an empty message, shared: do not mutate it) and ``HasField`` is False; a
repeated field is a list; a oneof keeps its last member (``WhichOneof``); a singular message
seen twice is merged; a known field with an unexpected wire type and unknown fields are
skipped; an int32 field keeps the low 32 bits of its varint, an unknown enum value reads as
absent. Differences: TensorProto's bulk fields (float_data, int32_data, int64_data,
double_data, uint64_data) are 1-D NumPy arrays, not lists (one read-only view of the file for
packed floats); string fields that are not UTF-8, groups (wire types 3/4) and messages nested
deeper than MAX_DEPTH are refused; doc strings, training info and device configurations are
skipped.

Every malformed input raises one ModelError naming the byte offset, the field path and what is
wrong; lengths are checked against the bytes left before anything is sliced or allocated.

API: ``parse_model(bytes, where)``, ``load_model(path)``, ``read_model(path | bytes |
ModelProto | onnx.ModelProto)`` (graph.py's read_model: external data loaded),
``parse(cls, bytes)`` (e.g. a TensorProto .pb file), ``to_array(tensor, base_dir, what)``,
``attribute_value(attr)``, ``np_dtype(elem_type)``, ``type_name(elem_type)``,
``tensor_size``, ``read_external``, ``load_external_data``, ``iter_graphs``; the message
classes ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, SparseTensorProto,
ValueInfoProto, TypeProto (.Tensor, ...), TensorShapeProto (.Dimension), OperatorSetIdProto,
StringStringEntryProto, FunctionProto, with onnx's enum constants (TensorProto.FLOAT,
TensorProto.DataType.Name, TensorProto.EXTERNAL, AttributeProto.GRAPH, ...).
"""
import os
import struct

import numpy as np

from .._memory import check_alloc
from ..errors import ModelError

#: Deepest message nesting read, below the top message: protobuf's own default limit, so
#: exactly what onnx parses, this parses (each subgraph level costs 3: NodeProto >
#: AttributeProto > GraphProto, so 33 nested If / Loop bodies).
MAX_DEPTH = 100

_M64 = (1 << 64) - 1
# kinds of scalar fields, and how they arrive on the wire
_INT64, _INT32, _UINT64, _ENUM, _FLOAT, _DOUBLE, _STRING, _BYTES, _MSG = range(9)
_SINGLE, _LIST, _ARRAY = 0, 1, 2          # singular / repeated as list / repeated as ndarray
_VARINTS = (_INT64, _INT32, _UINT64, _ENUM)
_CHUNK = 1 << 18                          # varints decoded per NumPy pass
#: dtype of a packed ndarray field, by kind
_ARRAY_DTYPE = {_FLOAT: np.dtype("<f4"), _DOUBLE: np.dtype("<f8"), _INT32: np.dtype(np.int32),
                _INT64: np.dtype(np.int64), _UINT64: np.dtype(np.uint64)}


class _Malformed(Exception):
    """Internal: a wire-format error at a byte offset; ``path`` grows as it unwinds."""

    def __init__(self, offset, what):
        super().__init__(what)
        self.offset, self.what, self.path = offset, what, []


class _Enum:
    """The part of protobuf's EnumTypeWrapper the runtime uses: ``Name``, ``Value``."""

    def __init__(self, names):
        self._names = dict(names)                       # value -> name
        self._values = {v: k for k, v in self._names.items()}

    def Name(self, number):
        try:
            return self._names[number]
        except (KeyError, TypeError):
            raise ValueError(f"enum has no name defined for value {number!r}") from None

    def Value(self, name):
        try:
            return self._values[name]
        except (KeyError, TypeError):
            raise ValueError(f"enum has no value defined for name {name!r}") from None

    def items(self):
        return list(self._values.items())

    def values(self):
        return list(self._names)


class Message:
    """Base of the message classes. Present singular fields live in the instance's
    ``__dict__``; absent ones fall back to the class default."""
    _FIELDS = {}         # field number -> (name, kind, repeated, message class or enum values)
    _BY_NAME = {}        # field name -> the same tuple
    _LISTS = ()          # names of the repeated fields kept as lists
    _ONEOF = {}          # member field name -> oneof name
    _ARRAYS = ()         # names of the repeated fields kept as ndarrays
    _READERS = {}        # field key (number << 3 | wire type) -> its reader (see _readers)

    def __init__(self, **fields):
        d = self.__dict__
        for name in self._LISTS:
            d[name] = []
        for name, value in fields.items():           # TensorProto(name="w", dims=[2, 3])
            if name not in self._BY_NAME:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            spec = self._BY_NAME[name]
            setattr(self, name, np.asarray(value, _ARRAY_DTYPE[spec[1]]) if spec[2] == _ARRAY
                    else list(value) if spec[2] == _LIST else value)

    @classmethod
    def _new(cls):
        """An empty message, as ``cls()`` without the keyword handling: the reader makes
        one per message of a model (~2,500 for a small detector, ~20,000 for a larger one)."""
        msg = object.__new__(cls)
        d = msg.__dict__
        for name in cls._LISTS:
            d[name] = []
        return msg

    def HasField(self, name):
        spec = self._BY_NAME.get(name)
        if spec is not None and spec[2] == _SINGLE:
            return name in self.__dict__
        if name in self._ONEOF.values():
            return self.WhichOneof(name) is not None
        raise ValueError(f'Protocol message {type(self).__name__} has no singular "{name}" '
                         "field.")

    def WhichOneof(self, group):
        members = [f for f, g in self._ONEOF.items() if g == group]
        if not members:
            raise ValueError(f'Protocol message {type(self).__name__} has no "{group}" field.')
        for f in members:
            if f in self.__dict__:
                return f
        return None

    def __repr__(self):
        shown = []
        for name, kind, rep, _ in self._FIELDS.values():
            v = getattr(self, name)
            if (name not in self.__dict__) if rep == _SINGLE else not len(v):
                continue
            if kind == _BYTES and rep == _SINGLE and len(v) > 32:
                v = f"<{len(v)} bytes>"
            elif rep == _ARRAY:
                v = f"<{v.dtype} array of {v.size}>"
            shown.append(f"{name}={v!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


class _Default:
    """Class attribute of a message field: protobuf's default instance (empty, shared; do not
    mutate it), made on first read."""

    def __init__(self, cls):
        self._cls, self._value = cls, None

    def __get__(self, obj, owner):
        if obj is None:
            return self
        if self._value is None:
            self._value = self._cls()
        return self._value


_SCALAR_DEFAULT = {_STRING: "", _BYTES: b"", _FLOAT: 0.0, _DOUBLE: 0.0}


def _message(name, fields=None, oneof=None, consts=None):
    """A Message subclass; ``fields`` {number: (field name, kind, repeated[, message class
    or enum values])} may be given later with _define (recursive types)."""
    cls = type(name, (Message,), dict(consts or {}))
    if fields is not None:
        _define(cls, fields, oneof)
    return cls


def _define(cls, fields, oneof=None):
    cls._FIELDS = {num: (f[0], f[1], f[2], f[3] if len(f) > 3 else None)
                   for num, f in fields.items()}
    cls._BY_NAME = {s[0]: s for s in cls._FIELDS.values()}
    cls._LISTS = tuple(s[0] for s in cls._FIELDS.values() if s[2] == _LIST)
    cls._ONEOF = dict(oneof or {})
    cls._ARRAYS = tuple(s[0] for s in cls._FIELDS.values() if s[2] == _ARRAY)
    cls._READERS = _readers(cls)
    for fname, kind, rep, sub in cls._FIELDS.values():
        if rep == _ARRAY:
            empty = np.empty(0, _ARRAY_DTYPE[kind])
            empty.flags.writeable = False
            setattr(cls, fname, empty)
        elif rep == _SINGLE:
            setattr(cls, fname, _Default(sub) if kind == _MSG else _SCALAR_DEFAULT.get(kind, 0))


# ----------------------------------------------------------------------------- field readers
# A message class's _READERS maps each key it accepts (field number << 3 | wire type) to
# read(msg, buf, v, pos, depth), where v is what _parse found: the varint's value (wire type
# 0), the offset of the fixed64 / fixed32 value (1, 5), or the offset of the payload ending at
# pos (2). A known field in a wire type its kind never uses has no reader, so it is skipped as
# an unknown field (e.g. a packed encoding of a singular scalar).

def _readers(cls):
    """The readers of ``cls``'s fields, by key (built once per class, by _define)."""
    table = {}
    for num, spec in cls._FIELDS.items():
        kind, rep = spec[1], spec[2]
        if kind in _VARINTS:
            table[num << 3] = _varint_reader(cls, spec)
        elif kind in _FIXED_WIRE:
            table[num << 3 | _FIXED_WIRE[kind]] = _fixed_reader(cls, spec)
        else:                                          # message, string, bytes
            table[num << 3 | 2] = _DELIMITED_READER[kind](cls, spec)
            continue
        if rep != _SINGLE:                             # a repeated scalar may come packed too
            table[num << 3 | 2] = _packed_reader(spec)
    return table


def _keeper(cls, name, rep):
    """keep(msg, value) for the fields that need more than an append or a set: a value of an
    ndarray field joins its unpacked part, a oneof member clears its siblings; None for the
    others (the readers append or set inline: they run once per field of a model)."""
    if rep == _ARRAY:
        return lambda msg, v: _unpacked_part(msg, name).append(v)
    if rep == _SINGLE and name in cls._ONEOF:
        siblings = tuple(f for f, g in cls._ONEOF.items()
                         if g == cls._ONEOF[name] and f != name)

        def keep_member(msg, v):        # _set, with the siblings looked up once
            d = msg.__dict__
            for f in siblings:
                if f in d:
                    del d[f]
            d[name] = v
        return keep_member
    return None


def _message_reader(cls, spec):
    name, _, rep, sub = spec
    if rep:
        def read(msg, buf, begin, end, depth):
            child = sub._new()
            msg.__dict__[name].append(child)
            _parse(child, buf, begin, end, depth + 1)
        return read
    keep = _keeper(cls, name, rep)

    def read_one(msg, buf, begin, end, depth):
        child = msg.__dict__.get(name)          # a singular message seen again is merged
        if child is None:
            child = sub._new()
        if keep is None:
            msg.__dict__[name] = child
        else:
            keep(msg, child)
        _parse(child, buf, begin, end, depth + 1)
    return read_one


def _string_reader(cls, spec):
    name, _, rep, _ = spec
    keep = _keeper(cls, name, rep)

    def read(msg, buf, begin, end, depth):
        try:
            v = str(buf[begin:end], "utf-8")
        except UnicodeDecodeError as e:
            raise _Malformed(begin + e.start, "string field is not valid UTF-8") from None
        if rep:
            msg.__dict__[name].append(v)
        elif keep is None:
            msg.__dict__[name] = v
        else:
            keep(msg, v)
    return read


def _bytes_reader(cls, spec):
    name, _, rep, _ = spec
    if rep:
        return lambda msg, buf, begin, end, depth: msg.__dict__[name].append(buf[begin:end])

    def read(msg, buf, begin, end, depth):
        msg.__dict__[name] = buf[begin:end]
    return read


_DELIMITED_READER = {_MSG: _message_reader, _STRING: _string_reader, _BYTES: _bytes_reader}
_FIXED_WIRE = {_FLOAT: 5, _DOUBLE: 1}
#: a varint's value as each kind reads it: v & mask, minus wrap when at least half
_VARINT_RANGE = {_INT64: (_M64, 1 << 63, 1 << 64), _UINT64: (_M64, 1 << 64, 0),
                 _INT32: (0xFFFFFFFF, 1 << 31, 1 << 32), _ENUM: (0xFFFFFFFF, 1 << 31, 1 << 32)}


def _varint_reader(cls, spec):
    name, kind, rep, allowed = spec        # allowed: a closed enum's values (else None)
    mask, half, wrap = _VARINT_RANGE[kind]
    keep = _keeper(cls, name, rep)

    def read(msg, buf, v, pos, depth):
        v &= mask
        if v >= half:
            v -= wrap
        if allowed is not None and v not in allowed:
            return                         # proto2 closed enum: an unknown value reads as absent
        if rep == _LIST:
            msg.__dict__[name].append(v)
        elif keep is None:
            msg.__dict__[name] = v
        else:
            keep(msg, v)
    return read


def _fixed_reader(cls, spec):
    name, kind, rep, _ = spec
    keep = _keeper(cls, name, rep)
    fmt = "<f" if kind == _FLOAT else "<d"

    def read(msg, buf, offset, pos, depth):
        v = struct.unpack_from(fmt, buf, offset)[0]
        if rep == _LIST:
            msg.__dict__[name].append(v)
        elif keep is None:
            msg.__dict__[name] = v
        else:
            keep(msg, v)
    return read


def _packed_reader(spec):
    """A repeated scalar field's packed encoding: its values extend the list, or become the
    next part of the ndarray (bulk tensor data)."""
    name, kind, rep, _ = spec
    if rep == _ARRAY:
        return lambda msg, buf, begin, end, depth: _array_parts(msg, name).append(
            _packed(buf, begin, end, kind, rep))
    return lambda msg, buf, begin, end, depth: msg.__dict__[name].extend(
        _packed(buf, begin, end, kind, rep))


def _array_parts(msg, name):
    """The parts of ndarray field ``name`` read so far: a list in the message until
    _join_arrays, after the field's earlier value when the message is merged into."""
    d = msg.__dict__
    parts = d.get(name)
    if type(parts) is not list:
        parts = d[name] = [] if parts is None else [parts]
    return parts


def _unpacked_part(msg, name):
    """The list gathering the unpacked values of ``name`` that follow its last part."""
    parts = _array_parts(msg, name)
    if not parts or not isinstance(parts[-1], list):
        parts.append([])
    return parts[-1]


def _join_arrays(msg):
    """Each ndarray field read as parts becomes one array of its dtype, parts in order."""
    d = msg.__dict__
    for name in msg._ARRAYS:
        parts = d.get(name)
        if type(parts) is list:
            dt = _ARRAY_DTYPE[msg._BY_NAME[name][1]]
            arrs = [np.asarray(p, dtype=dt) for p in parts]
            d[name] = arrs[0] if len(arrs) == 1 else np.concatenate(arrs)


_DATA_TYPES = ["UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64",
               "STRING", "BOOL", "FLOAT16", "DOUBLE", "UINT32", "UINT64", "COMPLEX64",
               "COMPLEX128", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
               "FLOAT8E5M2FNUZ", "UINT4", "INT4", "FLOAT4E2M1", "FLOAT8E8M0", "UINT2", "INT2",
               "FLOAT6E2M3", "FLOAT6E3M2"]
_ATTR_TYPES = {"UNDEFINED": 0, "FLOAT": 1, "INT": 2, "STRING": 3, "TENSOR": 4, "GRAPH": 5,
               "FLOATS": 6, "INTS": 7, "STRINGS": 8, "TENSORS": 9, "GRAPHS": 10,
               "SPARSE_TENSOR": 11, "SPARSE_TENSORS": 12, "TYPE_PROTO": 13, "TYPE_PROTOS": 14}
DataType = _Enum(enumerate(_DATA_TYPES))
AttributeType = _Enum((v, k) for k, v in _ATTR_TYPES.items())
DataLocation = _Enum({0: "DEFAULT", 1: "EXTERNAL"})

# The schema: onnx.proto (IR 14) minus doc strings, denotations, training info, device
# configurations and quantization annotations (skipped as unknown fields).
StringStringEntryProto = _message("StringStringEntryProto", {
    1: ("key", _STRING, _SINGLE), 2: ("value", _STRING, _SINGLE)})
OperatorSetIdProto = _message("OperatorSetIdProto", {
    1: ("domain", _STRING, _SINGLE), 2: ("version", _INT64, _SINGLE)})
Segment = _message("Segment", {1: ("begin", _INT64, _SINGLE), 2: ("end", _INT64, _SINGLE)})
TensorProto = _message("TensorProto", {
    1: ("dims", _INT64, _LIST),
    2: ("data_type", _INT32, _SINGLE),
    3: ("segment", _MSG, _SINGLE, Segment),
    4: ("float_data", _FLOAT, _ARRAY),
    5: ("int32_data", _INT32, _ARRAY),
    6: ("string_data", _BYTES, _LIST),
    7: ("int64_data", _INT64, _ARRAY),
    8: ("name", _STRING, _SINGLE),
    9: ("raw_data", _BYTES, _SINGLE),
    10: ("double_data", _DOUBLE, _ARRAY),
    11: ("uint64_data", _UINT64, _ARRAY),
    13: ("external_data", _MSG, _LIST, StringStringEntryProto),
    14: ("data_location", _ENUM, _SINGLE, frozenset(DataLocation.values())),
    16: ("metadata_props", _MSG, _LIST, StringStringEntryProto),
}, consts=dict(DataType=DataType, DataLocation=DataLocation, Segment=Segment,
               DEFAULT=0, EXTERNAL=1, **{n: v for v, n in enumerate(_DATA_TYPES)}))
SparseTensorProto = _message("SparseTensorProto", {
    1: ("values", _MSG, _SINGLE, TensorProto), 2: ("indices", _MSG, _SINGLE, TensorProto),
    3: ("dims", _INT64, _LIST)})
Dimension = _message("Dimension", {
    1: ("dim_value", _INT64, _SINGLE), 2: ("dim_param", _STRING, _SINGLE)},
    oneof={"dim_value": "value", "dim_param": "value"})
TensorShapeProto = _message("TensorShapeProto", {1: ("dim", _MSG, _LIST, Dimension)},
                            consts={"Dimension": Dimension})
TypeProto = _message("TypeProto")          # recursive: fields defined below
TensorTypeProto = _message("Tensor", {
    1: ("elem_type", _INT32, _SINGLE), 2: ("shape", _MSG, _SINGLE, TensorShapeProto)})
SparseTensorTypeProto = _message("SparseTensor", dict(TensorTypeProto._FIELDS))
SequenceTypeProto = _message("Sequence", {1: ("elem_type", _MSG, _SINGLE, TypeProto)})
OptionalTypeProto = _message("Optional", {1: ("elem_type", _MSG, _SINGLE, TypeProto)})
MapTypeProto = _message("Map", {1: ("key_type", _INT32, _SINGLE),
                                2: ("value_type", _MSG, _SINGLE, TypeProto)})
OpaqueTypeProto = _message("Opaque", {1: ("domain", _STRING, _SINGLE),
                                      2: ("name", _STRING, _SINGLE)})
_TYPE_FIELDS = {1: ("tensor_type", _MSG, _SINGLE, TensorTypeProto),
                4: ("sequence_type", _MSG, _SINGLE, SequenceTypeProto),
                5: ("map_type", _MSG, _SINGLE, MapTypeProto),
                7: ("opaque_type", _MSG, _SINGLE, OpaqueTypeProto),
                8: ("sparse_tensor_type", _MSG, _SINGLE, SparseTensorTypeProto),
                9: ("optional_type", _MSG, _SINGLE, OptionalTypeProto)}
_define(TypeProto, _TYPE_FIELDS, {s[0]: "value" for s in _TYPE_FIELDS.values()})
for _c in (TensorTypeProto, SparseTensorTypeProto, SequenceTypeProto, MapTypeProto,
           OptionalTypeProto, OpaqueTypeProto):
    setattr(TypeProto, _c.__name__, _c)
ValueInfoProto = _message("ValueInfoProto", {
    1: ("name", _STRING, _SINGLE), 2: ("type", _MSG, _SINGLE, TypeProto),
    4: ("metadata_props", _MSG, _LIST, StringStringEntryProto)})
GraphProto = _message("GraphProto")        # recursive through AttributeProto
AttributeProto = _message("AttributeProto", {
    1: ("name", _STRING, _SINGLE),
    21: ("ref_attr_name", _STRING, _SINGLE),
    20: ("type", _ENUM, _SINGLE, frozenset(AttributeType.values())),
    2: ("f", _FLOAT, _SINGLE),
    3: ("i", _INT64, _SINGLE),
    4: ("s", _BYTES, _SINGLE),
    5: ("t", _MSG, _SINGLE, TensorProto),
    6: ("g", _MSG, _SINGLE, GraphProto),
    22: ("sparse_tensor", _MSG, _SINGLE, SparseTensorProto),
    14: ("tp", _MSG, _SINGLE, TypeProto),
    7: ("floats", _FLOAT, _LIST),
    8: ("ints", _INT64, _LIST),
    9: ("strings", _BYTES, _LIST),
    10: ("tensors", _MSG, _LIST, TensorProto),
    11: ("graphs", _MSG, _LIST, GraphProto),
    23: ("sparse_tensors", _MSG, _LIST, SparseTensorProto),
    15: ("type_protos", _MSG, _LIST, TypeProto),
}, consts=dict(AttributeType=AttributeType, **_ATTR_TYPES))
NodeProto = _message("NodeProto", {
    1: ("input", _STRING, _LIST), 2: ("output", _STRING, _LIST), 3: ("name", _STRING, _SINGLE),
    4: ("op_type", _STRING, _SINGLE), 7: ("domain", _STRING, _SINGLE),
    8: ("overload", _STRING, _SINGLE), 5: ("attribute", _MSG, _LIST, AttributeProto),
    9: ("metadata_props", _MSG, _LIST, StringStringEntryProto)})
_define(GraphProto, {
    1: ("node", _MSG, _LIST, NodeProto), 2: ("name", _STRING, _SINGLE, None),
    5: ("initializer", _MSG, _LIST, TensorProto),
    15: ("sparse_initializer", _MSG, _LIST, SparseTensorProto),
    11: ("input", _MSG, _LIST, ValueInfoProto), 12: ("output", _MSG, _LIST, ValueInfoProto),
    13: ("value_info", _MSG, _LIST, ValueInfoProto),
    16: ("metadata_props", _MSG, _LIST, StringStringEntryProto)})
FunctionProto = _message("FunctionProto", {
    1: ("name", _STRING, _SINGLE), 4: ("input", _STRING, _LIST), 5: ("output", _STRING, _LIST),
    6: ("attribute", _STRING, _LIST), 11: ("attribute_proto", _MSG, _LIST, AttributeProto),
    7: ("node", _MSG, _LIST, NodeProto), 9: ("opset_import", _MSG, _LIST, OperatorSetIdProto),
    10: ("domain", _STRING, _SINGLE), 13: ("overload", _STRING, _SINGLE),
    12: ("value_info", _MSG, _LIST, ValueInfoProto),
    14: ("metadata_props", _MSG, _LIST, StringStringEntryProto)})
ModelProto = _message("ModelProto", {
    1: ("ir_version", _INT64, _SINGLE),
    8: ("opset_import", _MSG, _LIST, OperatorSetIdProto),
    2: ("producer_name", _STRING, _SINGLE), 3: ("producer_version", _STRING, _SINGLE),
    4: ("domain", _STRING, _SINGLE), 5: ("model_version", _INT64, _SINGLE),
    7: ("graph", _MSG, _SINGLE, GraphProto),
    14: ("metadata_props", _MSG, _LIST, StringStringEntryProto),
    25: ("functions", _MSG, _LIST, FunctionProto)})


# ----------------------------------------------------------------------------- wire format
def _varint(buf, pos, end):
    """(value, next position) of the varint at ``pos``; value may exceed 64 bits (callers
    mask)."""
    result = shift = 0
    start = pos
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed(start, "varint longer than 10 bytes")
    raise _Malformed(start, "truncated varint (the data ends inside it)")


def _signed(v, kind):
    """A varint's value as a field of ``kind`` reads it (see _VARINT_RANGE)."""
    mask, half, wrap = _VARINT_RANGE[kind]
    v &= mask
    return v - wrap if v >= half else v


def _varints_np(buf, start, end, kind):
    """Packed varints in [start, end) decoded with NumPy (no per-value Python loop), in
    chunks of about _CHUNK bytes so the temporaries stay small."""
    a = np.frombuffer(buf, np.uint8, end - start, start)
    if a[-1] >= 0x80:
        raise _Malformed(end - 1, "truncated varint at the end of a packed field")
    ends = np.flatnonzero(a < 0x80)
    check_alloc(ends.size * 8, f"packed field of {ends.size} values")
    parts, lo = [], 0
    for k in range(0, ends.size, _CHUNK):
        e = ends[k:k + _CHUNK]
        starts = np.empty_like(e)
        starts[0] = lo
        starts[1:] = e[:-1] + 1
        lens = e - starts + 1
        if lens.max() > 10:
            raise _Malformed(start + int(starts[np.argmax(lens > 10)]),
                             "varint longer than 10 bytes")
        shift = (np.arange(lo, e[-1] + 1) - np.repeat(starts, lens)).astype(np.uint64) * \
            np.uint64(7)
        payload = (a[lo:e[-1] + 1] & 0x7F).astype(np.uint64) << shift
        parts.append(np.bitwise_or.reduceat(payload, starts - lo))
        lo = int(e[-1]) + 1
    v = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if kind == _INT32 or kind == _ENUM:
        return (v & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32)
    return v.view(np.int64) if kind == _INT64 else v


def _packed(buf, start, end, kind, rep):
    """A packed repeated scalar field: an ndarray (rep == _ARRAY) or a list."""
    n = end - start
    if kind == _FLOAT or kind == _DOUBLE:
        size = 4 if kind == _FLOAT else 8
        if n % size:
            raise _Malformed(start, f"packed {'float' if size == 4 else 'double'} field of "
                                    f"{n} bytes is not a multiple of {size}")
        arr = np.frombuffer(buf, _ARRAY_DTYPE[kind], n // size, start)
        return arr if rep == _ARRAY else arr.tolist()
    if rep == _ARRAY or n > 32:
        arr = _varints_np(buf, start, end, kind) if n else np.empty(0, _ARRAY_DTYPE[kind])
        return arr if rep == _ARRAY else arr.tolist()
    out = []
    while start < end:
        v, start = _varint(buf, start, end)
        out.append(_signed(v, kind))
    return out


def _parse(msg, buf, pos, end, depth):
    """Fill ``msg`` from the bytes buf[pos:end] (merging, as protobuf's MergeFrom): split them
    into fields, each read by the reader its class has for the field's key (see _readers)."""
    if depth > MAX_DEPTH:
        raise _Malformed(pos, f"messages nested deeper than {MAX_DEPTH} levels")
    readers = msg._READERS
    num = 0
    try:
        while pos < end:
            start, num = pos, 0
            key = buf[pos]
            pos += 1
            if key >= 0x80:
                key, pos = _varint(buf, start, end)
                if key > 0xFFFFFFFF:
                    raise _Malformed(start, f"field key {key} is out of range")
            num, wt = key >> 3, key & 7
            if num == 0:
                raise _Malformed(start, "field number 0 is invalid")
            if wt == 2:                                    # length-delimited: v = its start
                if pos >= end:
                    raise _Malformed(pos, "truncated length")
                n = buf[pos]
                pos += 1
                if n >= 0x80:
                    n, pos = _varint(buf, pos - 1, end)
                if n > end - pos:
                    raise _Malformed(start, f"field {num} claims {n} bytes, only {end - pos} "
                                            "are left")
                v, pos = pos, pos + n
            elif wt == 0:                                  # varint: v = its value
                v = buf[pos] if pos < end else 0x80
                if v < 0x80:
                    pos += 1
                else:
                    v, pos = _varint(buf, pos, end)
            else:                                          # fixed64 / fixed32: v = its offset
                v, pos = pos, _fixed_end(buf, pos, end, start, num, wt)
            read = readers.get(key)
            if read is not None:                           # else unknown: skipped, as protobuf
                read(msg, buf, v, pos, depth)
    except _Malformed as e:
        spec = msg._FIELDS.get(num)
        e.path.append(f"{type(msg).__name__}.{spec[0]}" if spec else type(msg).__name__)
        raise
    if msg._ARRAYS:
        _join_arrays(msg)
    return msg


def _fixed_end(buf, pos, end, start, num, wt):
    """Where the fixed64 (wire type 1) or fixed32 (5) value at ``pos`` ends; groups (3, 4)
    and the undefined wire types are refused."""
    if wt == 5 or wt == 1:
        size = 4 if wt == 5 else 8
        if end - pos < size:
            raise _Malformed(start, f"field {num}: truncated "
                                    f"{'fixed32' if wt == 5 else 'fixed64'} value")
        return pos + size
    if wt == 3 or wt == 4:
        raise _Malformed(start, f"field {num} uses protobuf groups (wire type {wt}), "
                                "which ONNX never writes")
    raise _Malformed(start, f"field {num} has invalid wire type {wt}")


def _set(msg, name, value):
    """Set a singular field; a oneof member clears its siblings."""
    group = msg._ONEOF.get(name)
    if group is not None:
        for other, g in msg._ONEOF.items():
            if g == group and other != name:
                msg.__dict__.pop(other, None)
    msg.__dict__[name] = value


def parse(cls, data, where="<bytes>"):
    """A ``cls`` (e.g. TensorProto for a .pb tensor file) from its serialized bytes;
    ModelError naming ``where``, the byte offset and the field path when malformed."""
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    elif not isinstance(data, bytes):
        raise ModelError(f"{where}: expected bytes, got {type(data).__name__}")
    try:
        return _parse(cls(), data, 0, len(data), 0)
    except _Malformed as e:
        path = " > ".join(reversed(e.path)) or cls.__name__
        raise ModelError(f"ONNX {cls.__name__[:-5].lower() or 'message'} {where} is malformed "
                         f"at byte {e.offset} (in {path}): {e.what}") from None


def parse_model(data, where="<bytes>"):
    """A ModelProto from the bytes of an .onnx file (external data is not read here: see
    to_array / load_external_data). ModelError when empty, malformed or without a graph."""
    if not data:
        raise ModelError(f"ONNX model {where} is empty")
    m = parse(ModelProto, data, where)
    if not m.HasField("graph"):
        raise ModelError(f"ONNX model {where} has no graph (not an ONNX model, or truncated)")
    return m


def load_model(path):
    """parse_model of a file (external data is left in place: see read_model)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"cannot read ONNX model {os.fspath(path)!r}: {e}") from e
    return parse_model(data, os.fspath(path))


def read_model(model):
    """graph.py's ``read_model`` on this reader: a ModelProto from a path, bytes, one of
    ours, or anything with ``SerializeToString`` (an ``onnx.ModelProto``, without importing
    onnx); external data read from the model's folder (a path only)."""
    base_dir = None
    if isinstance(model, ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray, memoryview)):
        proto = parse_model(bytes(model), "<bytes>")
    elif isinstance(model, (str, os.PathLike)):
        proto = load_model(model)
        base_dir = os.path.dirname(os.path.abspath(os.fspath(model)))
    elif callable(getattr(model, "SerializeToString", None)):
        try:
            data = model.SerializeToString()
        except Exception as e:        # e.g. protobuf's 2 GB limit
            raise ModelError(f"cannot serialize the {type(model).__name__} given: {e}") from e
        proto = parse_model(data, f"<{type(model).__name__}>")
    else:
        raise ModelError(f"model must be a path, bytes or onnx.ModelProto, got "
                         f"{type(model).__name__}")
    return load_external_data(proto, base_dir)


# ----------------------------------------------------------------------------- tensors
#: NumPy dtype of each element type the runtime supports (others: bfloat16, float8, 4/2/6-bit
#: have no NumPy dtype without ml_dtypes).
_NP = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32,
       7: np.int64, 8: object, 9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32,
       13: np.uint64, 14: np.complex64, 15: np.complex128}
_NP = {k: np.dtype(v) for k, v in _NP.items()}
#: typed field holding values when there is no raw_data, and values per element; every
#: other type uses int32_data, one per element (as numpy_helper.to_array reads them)
_FIELD = {1: ("float_data", 1), 14: ("float_data", 2), 11: ("double_data", 1),
          15: ("double_data", 2), 7: ("int64_data", 1), 12: ("uint64_data", 1),
          13: ("uint64_data", 1), 8: ("string_data", 1)}


def np_dtype(elem_type):
    """The NumPy dtype of an ONNX element type, or None (unknown, or no NumPy dtype)."""
    return _NP.get(elem_type)


def type_name(elem_type):
    """'FLOAT', 'INT64', ... (onnx's TensorProto.DataType.Name), or 'type <n>'."""
    try:
        return DataType.Name(elem_type)
    except ValueError:
        return f"type {elem_type}"


def tensor_size(t, what="tensor"):
    """(elements, bytes of raw data or None for strings) of a TensorProto from its dims;
    ModelError on a negative dim or an element type without a NumPy dtype."""
    dims = list(t.dims)
    if any(d < 0 for d in dims):
        raise ModelError(f"{what} {t.name!r} has negative dimensions {dims}")
    dt = np_dtype(t.data_type)
    if dt is None:
        raise ModelError(f"{what} {t.name!r} has element type {type_name(t.data_type)} "
                         f"({t.data_type}), which edgedl does not support")
    n = 1
    for d in dims:
        n *= d                      # Python ints: no overflow
    return n, None if dt == object else n * dt.itemsize


def read_external(t, base_dir, what="tensor"):
    """The bytes of an external-data tensor: its location confined to ``base_dir`` (the
    model's folder), offset/length checked against the file and the tensor's size, the
    memory limit checked before reading (the rules of graph.py's loader)."""
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location")
    if base_dir is None:
        raise ModelError(f"{what} {t.name!r} has external data ({loc!r}) but the model was "
                         "not given as a path, so its folder is unknown")
    if not loc:
        raise ModelError(f"{what} {t.name!r} has external data without a location")
    base = os.path.realpath(base_dir)
    full = os.path.realpath(os.path.join(base, loc))
    if os.path.isabs(loc) or os.path.commonpath([base, full]) != base:
        raise ModelError(f"{what} {t.name!r}: external data location {loc!r} is outside "
                         f"the model's folder {base_dir!r}; refused")
    _, nbytes = tensor_size(t, what)
    try:
        offset = int(info.get("offset", 0) or 0)
        length = int(info["length"]) if info.get("length") else None
        if offset < 0 or (length is not None and length < 0):
            raise ValueError(f"negative offset {offset} or length {length}")
        in_file = max(os.path.getsize(full) - offset, 0)
    except (OSError, ValueError) as e:
        raise ModelError(f"{what} {t.name!r}: cannot read external data {loc!r}: {e}") from e
    # without a length the tensor's own size is read, as onnxruntime does
    need = length if length is not None else nbytes if nbytes is not None else in_file
    if nbytes is not None and need != nbytes:
        raise ModelError(f"{what} {t.name!r}: its dims {list(t.dims)} need {nbytes} bytes "
                         f"but external data {loc!r} has {need}")
    if need > in_file:
        raise ModelError(f"{what} {t.name!r}: external data {loc!r} is truncated "
                         f"({in_file} of {need} bytes)")
    check_alloc(need, f"{what} {t.name!r} (external data {loc!r})")
    try:
        with open(full, "rb") as f:
            f.seek(offset)
            data = f.read(need)
    except OSError as e:
        raise ModelError(f"{what} {t.name!r}: cannot read external data {loc!r}: {e}") from e
    if len(data) != need:
        raise ModelError(f"{what} {t.name!r}: external data {loc!r} is truncated "
                         f"({len(data)} of {need} bytes)")
    return data


def uses_external_data(t):
    return t.data_location == TensorProto.EXTERNAL


def to_array(t, base_dir=None, what="tensor"):
    """A TensorProto as an owned, writable NumPy array: numpy_helper.to_array's values and
    dtype, after checking the data size against the dims and the memory limit. External
    data is read from ``base_dir`` (see read_external). ModelError on a segment, an
    unsupported element type, a size mismatch, dims NumPy cannot represent or a string that
    is not UTF-8. Takes onnx's own TensorProto, too."""
    if t.HasField("segment"):
        raise ModelError(f"{what} {t.name!r} is segmented, which edgedl does not support")
    flat = _flat_values(t, base_dir, what)
    dims = list(t.dims)
    try:
        return flat.reshape(dims)
    except ValueError as e:      # e.g. [0, 2**62, 2**62]: no data, but too big for NumPy
        raise ModelError(f"{what} {t.name!r}: dims {dims} cannot be represented: {e}") from None


def _flat_values(t, base_dir, what):
    """The values of ``t`` as a new 1-D array of its dtype, sizes checked."""
    n, nbytes = tensor_size(t, what)
    dims = list(t.dims)
    dt = _NP[t.data_type]
    if t.data_type == TensorProto.STRING:
        if len(t.string_data) != n:
            raise ModelError(f"{what} {t.name!r} has {len(t.string_data)} values in "
                             f"string_data, its dims {dims} need {n}")
        try:
            return np.array([s.decode("utf-8") for s in t.string_data], dtype=object)
        except UnicodeDecodeError as e:
            raise ModelError(f"{what} {t.name!r}: a string is not valid UTF-8: {e}") from None
    raw = read_external(t, base_dir, what) if uses_external_data(t) else \
        t.raw_data if t.HasField("raw_data") else None
    if raw is not None:
        if len(raw) != nbytes:
            raise ModelError(f"{what} {t.name!r}: raw_data has {len(raw)} bytes, its dims "
                             f"{dims} x {dt} need {nbytes}")
        check_alloc(nbytes, f"{what} {t.name!r} (shape {dims})")
        if dt == np.bool_:     # any non-zero byte is True (never a bool holding 2)
            return np.frombuffer(raw, np.uint8) != 0
        return np.frombuffer(raw, dt.newbyteorder("<")).astype(dt)
    field, per = _FIELD.get(t.data_type, ("int32_data", 1))
    # an ndarray already (no copy); a list for an onnx TensorProto, which works here too
    vals = np.asarray(getattr(t, field), dtype=_ARRAY_DTYPE[TensorProto._BY_NAME[field][1]])
    if len(vals) != n * per:
        raise ModelError(f"{what} {t.name!r} has {len(vals)} values in {field}, its dims "
                         f"{dims} need {n * per}")
    check_alloc(nbytes, f"{what} {t.name!r} (shape {dims})")
    if per == 2:                                       # complex: (real, imaginary) pairs
        return vals.astype(vals.dtype.newbyteorder("=")).view(dt)
    if dt == np.bool_:
        return vals.astype(np.uint8) != 0
    if dt == np.float16:                               # the bits in the low 16 of each int32
        return vals.astype(np.uint16).view(dt)
    return vals.astype(dt)                             # a new array; ints wrap as numpy's


def attribute_value(a):
    """helper.get_attribute_value: the Python value of an AttributeProto (bytes for
    STRING(S), TensorProto / GraphProto objects for tensors and graphs, lists for the
    plural types, None for UNDEFINED); ModelError for a reference attribute (inside
    functions only)."""
    if a.ref_attr_name:
        raise ModelError(f"attribute {a.name!r} refers to attribute {a.ref_attr_name!r} of "
                         "an enclosing function; it has no value of its own")
    field = _ATTR_FIELD.get(a.type)
    if field is None:
        return None
    v = getattr(a, field)
    return list(v) if a.type in _PLURAL else v


_ATTR_FIELD = {1: "f", 2: "i", 3: "s", 4: "t", 5: "g", 11: "sparse_tensor", 13: "tp",
               6: "floats", 7: "ints", 8: "strings", 9: "tensors", 10: "graphs",
               12: "sparse_tensors", 14: "type_protos"}
_PLURAL = {6, 7, 8, 9, 10, 12, 14}


def iter_graphs(g):
    """``g`` first, then every subgraph in its node attributes (If / Loop / Scan bodies),
    at any depth."""
    todo = [g]
    while todo:
        g = todo.pop()
        yield g
        for n in g.node:
            for a in n.attribute:
                if a.HasField("g"):
                    todo.append(a.g)
                todo.extend(a.graphs)


def load_external_data(model, base_dir):
    """Read every external-data tensor of ``model`` (initializers and tensor attributes, in
    every subgraph) into its raw_data, as onnx.load does: afterwards data_location is
    DEFAULT and external_data is empty."""
    for g in iter_graphs(model.graph):
        tensors = list(g.initializer)
        for n in g.node:
            for a in n.attribute:
                if a.HasField("t"):
                    tensors.append(a.t)
                tensors.extend(a.tensors)
        for t in tensors:
            if uses_external_data(t):
                t.raw_data = read_external(t, base_dir, "tensor")
                del t.external_data[:]
                t.data_location = TensorProto.DEFAULT
    return model
