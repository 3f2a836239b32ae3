"""onnxruntime as an oracle: build a one-node model with onnx.helper and run it.

onnxruntime is a test dependency only; edgedl itself never imports it.
"""
import functools

import pytest

from onnx_compat import elem_type

_NP2ONNX = None


def _onnx_type(dtype):
    return elem_type(dtype)


def single_node_model(op_type, inputs, attrs=None, opset=17, n_outputs=1, output_dtypes=None,
                      domain=""):
    """A ModelProto with one node; ``inputs`` is a list of (name, array or None for omitted)."""
    import onnx
    from onnx import helper
    in_names, graph_inputs = [], []
    for name, arr in inputs:
        if arr is None:
            in_names.append("")
            continue
        in_names.append(name)
        graph_inputs.append(helper.make_tensor_value_info(name, _onnx_type(arr.dtype),
                                                          list(arr.shape)))
    out_names = [f"y{i}" for i in range(n_outputs)]
    dtypes = output_dtypes or [None] * n_outputs
    # outputs without a declared type: onnxruntime infers them
    outputs = [helper.make_tensor_value_info(n, _onnx_type(d), None) if d is not None
               else helper.make_empty_tensor_value_info(n) for n, d in zip(out_names, dtypes)]
    node = helper.make_node(op_type, in_names, out_names, domain=domain, **(attrs or {}))
    graph = helper.make_graph([node], "single", graph_inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, opset)])
    model.ir_version = min(model.ir_version, 9)
    return model


def ort_session(model, threads=1):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def run_ort_node(op_type, inputs, attrs=None, opset=17, n_outputs=1, output_dtypes=None):
    """Run one ONNX node on onnxruntime; returns the list of outputs."""
    model = single_node_model(op_type, inputs, attrs, opset, n_outputs, output_dtypes)
    sess = ort_session(model)
    feed = {name: arr for name, arr in inputs if arr is not None}
    return sess.run(None, feed)


@functools.lru_cache(maxsize=None)
def ort_int8_exact():
    """Whether onnxruntime's u8 x s8 integer GEMMs are exact on this CPU. On x86 with AVX2
    but no VNNI they sum pairs of products with vpmaddubsw, which saturates at int16: with
    weights past 7 bits (255 * 127 * 2 > 32767) its QLinearConv / MatMulInteger / QDQ convs
    then differ from the definition by up to tens of steps (why its quantizer offers
    reduce_range). edgedl's kernels are exact on every CPU."""
    import numpy as np
    a = np.full((1, 2), 255, np.uint8)
    b = np.full((2, 1), 127, np.int8)
    model = single_node_model("MatMulInteger", [("a", a), ("b", b)], opset=10)
    return int(ort_session(model).run(None, {"a": a, "b": b})[0][0, 0]) == 2 * 255 * 127


def ort_exact_weights(model):
    """``model`` (a ModelProto, changed in place and returned) as onnxruntime computes it
    exactly on this CPU: where its u8 x s8 GEMMs saturate (ort_int8_exact), every int8
    initializer of two or more dimensions (the weights; zero points and scales are 0-D /
    1-D) is clipped to 7 bits. Both runtimes then run the same model; the full-range
    weights are checked against the definition by the kernel tests."""
    if ort_int8_exact():
        return model
    import numpy as np
    from onnx import numpy_helper
    for i, t in enumerate(model.graph.initializer):
        if t.data_type == 3 and len(t.dims) >= 2:          # INT8
            w = np.clip(numpy_helper.to_array(t), -64, 63)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, t.name))
    return model
