"""Load an ONNX model into a small mutable graph: nodes, constants, inputs and outputs.

Parsing is done by the ``onnx`` package; everything after it (validation, Constant nodes turned
into constants, external data, dead-node removal, the unsupported-op report) happens here, so the
planner works on plain Python objects and NumPy arrays.
"""
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import ModelError, UnsupportedOpsError

#: Domains whose ops we implement ('' and 'ai.onnx' are the same default domain).
DEFAULT_DOMAINS = ("", "ai.onnx")


class Node:
    """One ONNX node: op type, input/output value names ('' = omitted), attributes as Python."""
    __slots__ = ("op_type", "name", "inputs", "outputs", "attrs", "domain")

    def __init__(self, op_type, inputs, outputs, attrs=None, name="", domain=""):
        self.op_type = op_type
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs or {})
        self.name = name
        self.domain = domain

    def __repr__(self):
        return f"Node({self.op_type} {self.name!r}: {self.inputs} -> {self.outputs})"


class ValueInfo:
    """A graph input/output: name, element type (onnx enum), numpy dtype, declared dims."""
    __slots__ = ("name", "elem_type", "dtype", "dims")

    def __init__(self, name, elem_type, dims):
        self.name = name
        self.elem_type = elem_type
        self.dtype = _np_dtype(elem_type) if elem_type else None
        self.dims = dims      # list of int / str (symbolic) / None (unknown), or None (no shape)


class Graph:
    def __init__(self, nodes, consts, inputs, outputs, opset, ir_version, opsets):
        self.nodes = nodes          # topologically sorted list of Node
        self.consts = consts        # name -> np.ndarray (initializers, Constant nodes)
        self.inputs = inputs        # list of ValueInfo the caller feeds
        self.outputs = outputs      # list of ValueInfo
        self.opset = opset          # default-domain opset version
        self.ir_version = ir_version
        self.opsets = opsets        # domain -> version

    def consumers(self):
        """value name -> list of nodes reading it."""
        cons = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    cons.setdefault(i, []).append(n)
        return cons

    def producers(self):
        return {o: n for n in self.nodes for o in n.outputs if o}

    def remove_dead(self):
        """Drop nodes none of whose outputs reach a graph output, and unused constants."""
        needed = {o.name for o in self.outputs}
        keep = []
        for n in reversed(self.nodes):
            if any(o in needed for o in n.outputs if o):
                keep.append(n)
                needed.update(i for i in n.inputs if i)
        self.nodes = keep[::-1]
        self.consts = {k: v for k, v in self.consts.items() if k in needed}


def _np_dtype(elem_type):
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:
        return None


def _dims(type_proto):
    if not type_proto.HasField("tensor_type"):
        return None
    tt = type_proto.tensor_type
    if not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dims


def _value_info(vi):
    elem = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
    return ValueInfo(vi.name, elem, _dims(vi.type))


# ----------------------------------------------------------------------------- reading
def read_model(model):
    """A ModelProto from a path, bytes or ModelProto; ModelError on anything unreadable."""
    base_dir = None
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray, memoryview)):
        proto = _parse(bytes(model), "<bytes>")
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ModelError(f"cannot read ONNX model {path!r}: {e}") from e
        proto = _parse(data, path)
        base_dir = os.path.dirname(os.path.abspath(path))
    else:
        raise ModelError(f"model must be a path, bytes or onnx.ModelProto, got "
                         f"{type(model).__name__}")
    _load_external(proto, base_dir)
    return proto


def _parse(data, where):
    if not data:
        raise ModelError(f"ONNX model {where} is empty")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:
        raise ModelError(f"ONNX model {where} is malformed or truncated: {e}") from e
    if not proto.HasField("graph"):
        raise ModelError(f"ONNX model {where} has no graph (not an ONNX model, or truncated)")
    return proto


def _external_tensors(graph):
    for t in graph.initializer:
        yield t
    for n in graph.node:
        for a in n.attribute:
            if a.HasField("t"):
                yield a.t


def _load_external(proto, base_dir):
    """Read external-data tensors, refusing any location outside the model's folder."""
    for t in _external_tensors(proto.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location")
        if base_dir is None:
            raise ModelError(f"tensor {t.name!r} has external data ({loc!r}) but the model was "
                             "not given as a path, so its folder is unknown")
        if not loc:
            raise ModelError(f"tensor {t.name!r} has external data without a location")
        base = os.path.realpath(base_dir)
        full = os.path.realpath(os.path.join(base, loc))
        if os.path.isabs(loc) or os.path.commonpath([base, full]) != base:
            raise ModelError(f"tensor {t.name!r}: external data location {loc!r} is outside "
                             f"the model's folder {base_dir!r}; refused")
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else None
            with open(full, "rb") as f:
                f.seek(offset)
                data = f.read() if length is None else f.read(length)
        except (OSError, ValueError) as e:
            raise ModelError(f"tensor {t.name!r}: cannot read external data {loc!r}: {e}") from e
        if length is not None and len(data) != length:
            raise ModelError(f"tensor {t.name!r}: external data {loc!r} is truncated "
                             f"({len(data)} of {length} bytes)")
        t.raw_data = data
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


def to_array(t, what="initializer"):
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        raise ModelError(f"{what} {t.name!r} cannot be decoded (malformed or truncated): "
                         f"{e}") from e
    if arr.dtype == object:
        raise ModelError(f"{what} {t.name!r} has unsupported element type {t.data_type}")
    return np.array(arr)   # own, writable copy


def attr_value(a):
    """An AttributeProto as a Python value (tensors as NumPy arrays)."""
    if a.type == onnx.AttributeProto.TENSOR:
        return to_array(a.t, "attribute")
    if a.type == onnx.AttributeProto.TENSORS:
        return [to_array(t, "attribute") for t in a.tensors]
    if a.type == onnx.AttributeProto.GRAPH or a.type == onnx.AttributeProto.GRAPHS:
        return a   # control flow is not supported; kept for the report
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    elif isinstance(v, list) and v and isinstance(v[0], bytes):
        v = [s.decode("utf-8", "replace") for s in v]
    return v


def _constant_value(node):
    """The value of a Constant node (every opset's attribute spelling)."""
    a = node.attrs
    if "value" in a:
        return a["value"]
    if "value_float" in a:
        return np.array(a["value_float"], dtype=np.float32)
    if "value_floats" in a:
        return np.array(a["value_floats"], dtype=np.float32)
    if "value_int" in a:
        return np.array(a["value_int"], dtype=np.int64)
    if "value_ints" in a:
        return np.array(a["value_ints"], dtype=np.int64)
    raise ModelError(f"Constant node {node.name!r} has no supported value attribute "
                     f"(got {sorted(a)})")


# ----------------------------------------------------------------------------- graph
def build_graph(proto, supported):
    """Graph from a ModelProto. ``supported`` is the set of op types with handlers."""
    g = proto.graph
    opsets = {}
    for o in proto.opset_import:
        opsets[o.domain or ""] = o.version
    if "ai.onnx" in opsets:
        opsets.setdefault("", opsets["ai.onnx"])
    opset = opsets.get("", None)
    if opset is None:
        opset = 1 if proto.ir_version < 3 else None
    if opset is None:
        raise ModelError("model imports no default-domain ('' / ai.onnx) opset")

    consts = {}
    for t in g.initializer:
        if not t.name:
            raise ModelError("an initializer has no name")
        consts[t.name] = to_array(t)
    for t in g.sparse_initializer:
        raise ModelError(f"sparse initializer {t.values.name!r} is not supported")

    nodes, unsupported = [], {}
    for i, n in enumerate(g.node):
        attrs = {a.name: attr_value(a) for a in n.attribute}
        node = Node(n.op_type, n.input, n.output, attrs, n.name or f"{n.op_type}_{i}",
                    n.domain)
        if node.domain not in DEFAULT_DOMAINS or node.op_type not in supported:
            key = node.op_type if node.domain in DEFAULT_DOMAINS else \
                f"{node.domain}.{node.op_type}"
            unsupported.setdefault(key, []).append(n.name)
            continue
        nodes.append(node)
    if unsupported:
        raise UnsupportedOpsError(unsupported)

    # Constant nodes become constants (real exports keep weights there).
    rest = []
    for n in nodes:
        if n.op_type == "Constant":
            if len(n.outputs) != 1 or not n.outputs[0]:
                raise ModelError(f"Constant node {n.name!r} must have one output")
            consts[n.outputs[0]] = np.array(_constant_value(n))
        else:
            rest.append(n)

    inputs = [_value_info(vi) for vi in g.input if vi.name not in consts]
    outputs = [_value_info(vi) for vi in g.output]
    if not outputs:
        raise ModelError("the graph has no outputs (malformed or truncated model)")
    for vi in inputs:
        if vi.dtype is None:
            raise ModelError(f"graph input {vi.name!r} has no tensor element type")

    graph = Graph(_toposort(rest, set(consts) | {vi.name for vi in inputs}), consts,
                  inputs, outputs, opset, proto.ir_version, opsets)
    produced = set(graph.consts) | {vi.name for vi in inputs} | \
        {o for n in graph.nodes for o in n.outputs}
    missing = [o.name for o in outputs if o.name not in produced]
    if missing:
        raise ModelError(f"graph outputs {missing} are produced by no node, input or "
                         "initializer (malformed or truncated model)")
    graph.remove_dead()
    return graph


def _toposort(nodes, available):
    """Nodes in an order where every input is produced before use; ModelError if impossible."""
    available = set(available) | {""}
    done, order, pending = set(), [], list(nodes)
    while pending:
        progress, left = False, []
        for n in pending:
            if all(i in available for i in n.inputs):
                order.append(n)
                available.update(n.outputs)
                progress = True
            else:
                left.append(n)
        if not progress:
            n = left[0]
            miss = [i for i in n.inputs if i not in available]
            raise ModelError(f"node {n.name!r} ({n.op_type}) reads {miss}, which no node, "
                             "graph input or initializer produces (malformed, truncated or "
                             "cyclic graph)")
        pending = left
    return order


def load(model, supported):
    """Read and build: the entry point the session uses."""
    return build_graph(read_model(model), supported)
