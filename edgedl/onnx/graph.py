"""Load an ONNX model into a small mutable graph: nodes, constants, inputs and outputs.

Parsing is done by the ``onnx`` package; everything after it (validation, Constant nodes turned
into constants, external data, dead-node removal, the unsupported-op report) happens here, so the
planner works on plain Python objects and NumPy arrays.
"""
import heapq
import json
import os

import numpy as np

from .._memory import check_alloc
from ..errors import ModelError, UnsupportedOpsError
from . import proto as P
from .proto import read_model  # noqa: F401  (the loader's entry: cli, detect)

#: Domains whose ops we implement ('' and 'ai.onnx' are the same default domain).
DEFAULT_DOMAINS = ("", "ai.onnx")
#: Default-domain opsets we load: what onnx 1.23 and onnxruntime 1.32 know (onnxruntime warns
#: below 7; the handlers keep the older attribute spellings). A newer opset may change an
#: op's meaning, so it is refused until the handlers have been checked against it.
OPSET_RANGE = (1, 28)
#: IR versions we read (0 = unset, accepted as onnxruntime does; 14 = onnx 1.23's IR).
IR_RANGE = (0, 14)


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

    @property
    def key(self):
        """The handler key (``op_key``): the op type, prefixed by a non-default domain."""
        return op_key(self.op_type, self.domain)

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
    return P.np_dtype(elem_type)


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
    dims = _dims(vi.type)
    if dims is not None:
        # some converters write -1 for a dynamic dim; onnxruntime reads it as unknown, too
        dims = [None if isinstance(d, int) and d < 0 else d for d in dims]
    return ValueInfo(vi.name, elem, dims)


# ----------------------------------------------------------------------------- reading
# Models are read by edgedl's own protobuf reader (proto.py: no onnx import, which costs ~0.9 s
# of start-up and does not exist on 32-bit Pi OS); it reads external data with the model's
# folder as the only allowed place, checking sizes and the memory limit first.


def to_array(t, what="initializer"):
    """A TensorProto as an owned NumPy array, its data size checked against its dims and the
    memory limit first."""
    arr = P.to_array(t, None, what)
    if arr.dtype == object:
        raise ModelError(f"{what} {t.name!r} has unsupported element type "
                         f"{P.type_name(t.data_type)}")
    return arr


def attr_value(a):
    """An AttributeProto as a Python value (tensors as NumPy arrays)."""
    A = P.AttributeProto
    if a.type == A.TENSOR:
        return to_array(a.t, "attribute")
    if a.type == A.TENSORS:
        return [to_array(t, "attribute") for t in a.tensors]
    if a.type == A.GRAPH or a.type == A.GRAPHS:
        return a   # control flow is not supported; kept for the report
    v = P.attribute_value(a)
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    elif isinstance(v, list):     # plain Python values, as the handlers expect
        v = [e.decode("utf-8", "replace") if isinstance(e, bytes)
             else e.item() if isinstance(e, np.generic) else e for e in v]
    elif isinstance(v, np.generic):
        v = v.item()
    return v


_CONSTANT_ATTRS = {"value": None, "value_float": np.float32, "value_floats": np.float32,
                   "value_int": np.int64, "value_ints": np.int64}


def _constant_value(node):
    """The value of a Constant node (every opset's attribute spelling), checked: the schema
    check skips Constant nodes, as onnxruntime does."""
    a = node.attrs
    for name, dtype in _CONSTANT_ATTRS.items():
        if name not in a:
            continue
        v = a[name]
        ok = isinstance(v, np.ndarray) if dtype is None else \
            all(isinstance(e, (int, float)) for e in (v if isinstance(v, list) else [v]))
        if not ok:
            raise ModelError(f"Constant node {node.name!r}: attribute {name!r} must be a "
                             f"{'tensor' if dtype is None else 'number or list of numbers'}"
                             f", got {type(v).__name__}")
        return v if dtype is None else np.array(v, dtype=dtype)
    raise ModelError(f"Constant node {node.name!r} has no supported value attribute "
                     f"(got {sorted(a)})")


# ----------------------------------------------------------------------------- graph
def _opsets(proto):
    """domain -> version of the model's opset imports; the default-domain opset checked
    against OPSET_RANGE and the IR version against IR_RANGE."""
    ir = proto.ir_version
    if not IR_RANGE[0] <= ir <= IR_RANGE[1]:
        raise ModelError(f"model ir_version is {ir}; edgedl reads IR versions "
                         f"{IR_RANGE[0]}-{IR_RANGE[1]}")
    opsets = {}
    for o in proto.opset_import:
        dom = "" if o.domain in DEFAULT_DOMAINS else o.domain
        if opsets.get(dom, o.version) != o.version:
            raise ModelError(f"opset_import lists domain {o.domain or 'ai.onnx'!r} twice, with "
                             f"versions {opsets[dom]} and {o.version}")
        opsets[dom] = o.version
    opset = opsets.get("")
    if opset is None and ir < 3:
        opset = opsets[""] = 1          # before IR 3 models had no opset imports
    if opset is None:
        raise ModelError("model imports no default-domain ('' / ai.onnx) opset")
    if not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ModelError(f"model imports default-domain (ai.onnx) opset {opset}; edgedl "
                         f"implements opsets {OPSET_RANGE[0]}-{OPSET_RANGE[1]}")
    return opset, opsets


def _node_label(n):
    return f"node {n.name!r} ({n.op_type})"


#: The schemas of the default-domain ops edgedl implements, per version: generated from the
#: onnx package by tools/gen_op_schemas.py (importing onnx.defs at load would cost ~0.9 s).
#: {op: [[since_version, min_in, max_in, min_out, max_out, {attr: [type, required]}], ...]}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "op_schemas.json")) as _f:
    _SCHEMAS = json.load(_f)["ops"]


class _Schema:
    __slots__ = ("since_version", "min_input", "max_input", "min_output", "max_output",
                 "attributes")

    def __init__(self, row):
        (self.since_version, self.min_input, self.max_input, self.min_output,
         self.max_output, self.attributes) = row


def _schema(op_type, opset):
    """The op's schema in force at ``opset``, or None when the op came later."""
    rows = [r for r in _SCHEMAS[op_type] if r[0] <= opset]
    return _Schema(rows[-1]) if rows else None


def _check_schema(n, name, opset, schemas):
    """A NodeProto against its op's schema at the model's opset, as onnxruntime checks it:
    the op exists at that opset, every attribute is known and of its type (a float `group`
    or a string `kernel_shape` would otherwise be misread), required ones are present."""
    label = f"node {name!r} ({n.op_type})"
    schema = schemas.get(n.op_type)
    if schema is None:
        schema = schemas[n.op_type] = _schema(n.op_type, opset)
        if schema is None:
            first = _SCHEMAS[n.op_type][0][0]
            raise ModelError(f"{label}: {n.op_type} is not in ai.onnx opset {opset} (the "
                             f"model's); it was introduced in opset {first}")
    for what, got, lo, hi in (("inputs", len(n.input), schema.min_input, schema.max_input),
                              ("outputs", len(n.output), schema.min_output,
                               schema.max_output)):
        if not lo <= got <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi < 1 << 30 else f">= {lo}"
            raise ModelError(f"{label}: has {got} {what}; {n.op_type} at opset {opset} takes "
                             f"{want}")
    if n.op_type == "Constant":
        return   # onnxruntime takes any opset's value_* spelling, and so does _constant_value
    spec = schema.attributes
    seen = set()
    for a in n.attribute:
        if a.name in seen:
            raise ModelError(f"{label}: attribute {a.name!r} is given twice")
        seen.add(a.name)
        if a.name not in spec:
            raise ModelError(f"{label}: unknown attribute {a.name!r} ({n.op_type} at opset "
                             f"{opset} takes {sorted(spec)})")
        want = spec[a.name][0]
        if a.type != want:
            names = P.AttributeProto.AttributeType
            got = names.Name(a.type) if a.type in names.values() else str(a.type)
            raise ModelError(f"{label}: attribute {a.name!r} must be {names.Name(want)}, "
                             f"got {got}")
    missing = sorted(k for k, v in spec.items() if v[1] and k not in seen)
    if missing:
        raise ModelError(f"{label}: required attribute(s) {missing} missing")


def _check_unique(g, nodes):
    """Every value has one definition (SSA, as onnxruntime checks): no name declared twice as
    a graph input or initializer, nor produced by a node and also by another node, an
    initializer or a graph input. An initializer may also be listed as a graph input (IR < 4
    models list every weight there)."""
    seen = set()
    for vi in g.input:
        if vi.name in seen:
            raise ModelError(f"graph input {vi.name!r} is declared twice")
        seen.add(vi.name)
    where = {name: "a graph input" for name in seen}
    seen = set()
    for t in g.initializer:
        if t.name in seen:
            raise ModelError(f"initializer {t.name!r} is defined twice")
        seen.add(t.name)
        where[t.name] = "an initializer"
    for n in nodes:
        for o in n.outputs:
            if not o:
                continue
            if o in where:
                raise ModelError(f"tensor {o!r} is defined twice: by {where[o]} and as an "
                                 f"output of {_node_label(n)}")
            where[o] = _node_label(n)


def op_key(op_type, domain=""):
    """The handler key of an op: its type in the default domain, ``"<domain>.<type>"`` in
    any other (e.g. ``"com.microsoft.QLinearAdd"``, which onnxruntime's quantizer writes)."""
    return op_type if domain in DEFAULT_DOMAINS else f"{domain}.{op_type}"


def build_graph(proto, supported):
    """Graph from a ModelProto. ``supported``: the handler keys (see ``op_key``)."""
    g = proto.graph
    opset, opsets = _opsets(proto)
    consts = _initializers(g)
    nodes = _nodes(g, supported, opset)
    _check_unique(g, nodes)
    rest = _take_constant_nodes(nodes, consts)
    inputs = [_value_info(vi) for vi in g.input if vi.name not in consts]
    outputs = [_value_info(vi) for vi in g.output]
    if not outputs:
        raise ModelError("the graph has no outputs (malformed or truncated model)")
    _check_inputs(inputs)
    graph = Graph(_toposort(rest, set(consts) | {vi.name for vi in inputs}), consts,
                  inputs, outputs, opset, proto.ir_version, opsets)
    _check_outputs_produced(graph)
    _check_weights(graph)
    graph.remove_dead()
    return graph


def _initializers(g):
    consts = {}
    for t in g.initializer:
        if not t.name:
            raise ModelError("an initializer has no name")
        consts[t.name] = to_array(t)
    for t in g.sparse_initializer:
        raise ModelError(f"sparse initializer {t.values.name!r} is not supported")
    return consts


def _nodes(g, supported, opset):
    """The graph's nodes as Node objects, each checked against its schema; every op without
    a handler is reported at once (UnsupportedOpsError lists them all with node names)."""
    protos, unsupported = [], {}
    for i, n in enumerate(g.node):
        key = op_key(n.op_type, n.domain)
        # a default-domain op onnx does not define (e.g. edgedl's internal Silu) is refused
        if key not in supported or (n.domain in DEFAULT_DOMAINS and n.op_type not in _SCHEMAS):
            unsupported.setdefault(key, []).append(n.name)
            continue
        protos.append((n, n.name or f"{n.op_type}_{i}"))
    if unsupported:
        raise UnsupportedOpsError(unsupported)
    schemas, nodes = {}, []
    for n, name in protos:
        if n.domain in DEFAULT_DOMAINS:     # other domains' handlers check their own nodes
            _check_schema(n, name, opset, schemas)
        attrs = {a.name: attr_value(a) for a in n.attribute}
        domain = "" if n.domain in DEFAULT_DOMAINS else n.domain
        nodes.append(Node(n.op_type, n.input, n.output, attrs, name, domain))
    return nodes


def _take_constant_nodes(nodes, consts):
    """Constant nodes become constants (real exports keep weights there); the other nodes."""
    rest = []
    for n in nodes:
        if n.op_type != "Constant" or n.domain:
            rest.append(n)
            continue
        if len(n.outputs) != 1 or not n.outputs[0]:
            raise ModelError(f"Constant node {n.name!r} must have one output")
        consts[n.outputs[0]] = np.array(_constant_value(n))
    return rest


def _check_inputs(inputs):
    for vi in inputs:
        if vi.dtype is None:
            raise ModelError(f"graph input {vi.name!r} has no tensor element type")
        if vi.dims is not None and all(isinstance(d, int) for d in vi.dims):
            size = vi.dtype.itemsize
            for d in vi.dims:
                size *= d
            check_alloc(size, f"graph input {vi.name!r} (declared shape {vi.dims}, "
                              f"{vi.dtype})")


def _check_outputs_produced(graph):
    produced = set(graph.consts) | {vi.name for vi in graph.inputs} | \
        {o for n in graph.nodes for o in n.outputs}
    missing = [o.name for o in graph.outputs if o.name not in produced]
    if missing:
        raise ModelError(f"graph outputs {missing} are produced by no node, input or "
                         "initializer (malformed or truncated model)")


def _toposort(nodes, available):
    """Nodes in an order where every input is produced before use; ModelError if impossible.

    Kahn's algorithm with consumer lists: each node waits for a count of missing inputs, and
    a node becomes ready when its last one is produced, so the work is linear in the edges.
    The ready queue is a heap of original positions: a list that is already sorted comes out
    unchanged (the planner and the fusions see the exporter's order)."""
    available = set(available) | {""}
    waiting = [0] * len(nodes)          # per node: inputs not produced yet
    consumers = {}                      # value -> positions of the nodes waiting for it
    ready = []
    for k, n in enumerate(nodes):
        for i in set(n.inputs):
            if i not in available:
                consumers.setdefault(i, []).append(k)
                waiting[k] += 1
        if not waiting[k]:
            ready.append(k)
    heapq.heapify(ready)
    order = []
    while ready:
        k = heapq.heappop(ready)
        order.append(nodes[k])
        for o in nodes[k].outputs:
            for j in consumers.pop(o, ()) if o else ():
                waiting[j] -= 1
                if not waiting[j]:
                    heapq.heappush(ready, j)
    if len(order) < len(nodes):
        produced = available | {o for n in nodes for o in n.outputs}
        stuck = [n for k, n in enumerate(nodes) if waiting[k]]
        for n in stuck:
            miss = [i for i in n.inputs if i not in produced]
            if miss:
                raise ModelError(f"{_node_label(n)} reads {miss}, which no node, graph input "
                                 "or initializer produces (malformed or truncated graph)")
        n = stuck[0]
        raise ModelError(f"{_node_label(n)} is on a cycle (or reads a value computed from "
                         f"one): the graph is not acyclic ({len(stuck)} nodes never become "
                         "ready)")
    return order


# ----------------------------------------------------------------------------- weights
def _known_shape(graph, name, declared):
    """The shape of a value when load time knows it: constants, and graph inputs with fixed
    declared dims (symbolic dims as None); else None."""
    if name in graph.consts:
        return tuple(np.shape(graph.consts[name]))
    return declared.get(name)


def _check_weights(graph):
    """Weight shapes against attributes and known input shapes, as onnxruntime checks them
    (it does at run time; here they fail at load, naming the node)."""
    declared = {vi.name: tuple(d if isinstance(d, int) else None for d in vi.dims)
                for vi in graph.inputs if vi.dims is not None}
    for n in graph.nodes:
        check = _WEIGHT_CHECKS.get(n.op_type)
        if check is not None:
            shapes = [_known_shape(graph, i, declared) if i else None for i in n.inputs]
            check(n, shapes + [None] * 3)


def _ints_attr(n, name):
    v = n.attrs.get(name)
    return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]


def _fail(n, msg):
    return ModelError(f"{_node_label(n)}: {msg}")


def _check_conv(n, shapes, transpose=False):
    x, w, b = shapes[:3]
    if w is None:
        return
    if len(w) < 3:
        raise _fail(n, f"weight {n.inputs[1]!r} must have rank >= 3 "
                       f"([{'C_in, C_out/group' if transpose else 'C_out, C_in/group'}, "
                       f"kernel...]), got shape {list(w)}")
    nsp = len(w) - 2
    ks = _ints_attr(n, "kernel_shape")
    if ks is not None and ks != list(w[2:]):
        raise _fail(n, f"kernel_shape {ks} disagrees with weight {n.inputs[1]!r} of shape "
                       f"{list(w)} (its kernel is {list(w[2:])})")
    for name, want in (("strides", nsp), ("dilations", nsp), ("pads", 2 * nsp)):
        v = _ints_attr(n, name)
        if v is not None and len(v) != want:
            raise _fail(n, f"{name} {v} must have {want} values for a {nsp}-D kernel "
                           f"(weight shape {list(w)})")
    group = int(n.attrs.get("group", 1))
    if group < 1:
        raise _fail(n, f"group must be >= 1, got {group}")
    # Conv: W is [M, C/group, k...]; ConvTranspose: W is [C, M/group, k...]
    if w[0] % group:
        raise _fail(n, f"weight {n.inputs[1]!r} of shape {list(w)}: its "
                       f"{'input' if transpose else 'output'} channels {w[0]} are not a "
                       f"multiple of group {group}")
    c_in = w[0] if transpose else w[1] * group
    m = w[1] * group if transpose else w[0]
    if x is not None:
        if len(x) != len(w):
            raise _fail(n, f"input {n.inputs[0]!r} of shape {list(x)} must have the weight's "
                           f"rank {len(w)} (weight shape {list(w)})")
        if x[1] is not None and x[1] != c_in:
            raise _fail(n, f"input {n.inputs[0]!r} has {x[1]} channels (shape {list(x)}); "
                           f"weight {n.inputs[1]!r} of shape {list(w)} with group {group} "
                           f"expects {c_in}")
    if b is not None and tuple(b) != (m,):
        raise _fail(n, f"bias {n.inputs[2]!r} must have shape [{m}] (one per output "
                       f"channel), got {list(b)}")


def _inner(n, a, b, ka, kb, how=""):
    if ka is not None and kb is not None and ka != kb:
        raise _fail(n, f"inner dimensions of A {list(a)} and B {list(b)}{how} differ: "
                       f"{ka} != {kb}")


def _check_gemm(n, shapes):
    a, b = shapes[:2]
    for i, s in ((0, a), (1, b)):
        if s is not None and len(s) != 2:
            raise _fail(n, f"input {n.inputs[i]!r} must be 2-D, got shape {list(s)}")
    if a is not None and b is not None:
        ta, tb = int(n.attrs.get("transA", 0)), int(n.attrs.get("transB", 0))
        _inner(n, a, b, a[1 - bool(ta)], b[bool(tb)], f" (transA={ta}, transB={tb})")


def _check_matmul(n, shapes):
    a, b = shapes[:2]
    if a is None or b is None or not len(a) or not len(b):
        return
    _inner(n, a, b, a[-1], b[0] if len(b) == 1 else b[-2])


_WEIGHT_CHECKS = {"Conv": _check_conv,
                  "ConvTranspose": lambda n, s: _check_conv(n, s, transpose=True),
                  "Gemm": _check_gemm, "MatMul": _check_matmul}


def load(model, supported):
    """Read and build: the entry point the session uses."""
    return build_graph(read_model(model), supported)
