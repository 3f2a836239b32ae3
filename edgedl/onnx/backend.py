"""``onnx.backend.base.Backend`` on edgedl, so onnx's conformance runner works:

    import onnx.backend.test
    from edgedl.onnx import backend
    globals().update(onnx.backend.test.BackendTest(backend, __name__).test_cases)
"""
import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from .session import InferenceSession


class EdgeDLRep(BackendRep):
    def __init__(self, session):
        self.session = session
        self._names = [i.name for i in session.get_inputs()]

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            # onnx's runner feeds every graph input in order, initializers included
            names = self._names if len(inputs) == len(self._names) else \
                self._all_names[:len(inputs)]
            feed = {n: v for n, v in zip(names, inputs) if n in self._names}
        return tuple(self.session.run(None, feed))

    @property
    def _all_names(self):
        return self.session._graph_input_names


class EdgeDLBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs):
        return cls.supports_device(device)

    @classmethod
    def supports_device(cls, device):
        return Device(device).type == DeviceType.CPU

    @classmethod
    def prepare(cls, model, device="CPU", backend=None, **kwargs):
        sess = InferenceSession(model, backend=backend)
        sess._graph_input_names = [vi.name for vi in model.graph.input] \
            if isinstance(model, onnx.ModelProto) else [i.name for i in sess.get_inputs()]
        return EdgeDLRep(sess)

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device="CPU", outputs_info=None, **kwargs):
        """Run one NodeProto on ``inputs`` (a list of arrays, in the node's input order)."""
        opset = kwargs.pop("opset_version", None) or onnx.defs.onnx_opset_version()
        vis, feed = [], {}
        for name, arr in zip(node.input, inputs):
            if not name:
                continue
            arr = np.asarray(arr)
            to_elem = getattr(helper, "np_dtype_to_tensor_dtype", None)   # onnx >= 1.13
            elem = to_elem(arr.dtype) if to_elem else onnx.mapping.NP_TYPE_TO_TENSOR_TYPE[arr.dtype]
            vis.append(helper.make_tensor_value_info(name, elem, arr.shape))
            feed[name] = arr
        outs = [helper.make_empty_tensor_value_info(o) for o in node.output if o]
        graph = helper.make_graph([node], "run_node", vis, outs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        return cls.prepare(model, device, **kwargs).run(feed)


prepare = EdgeDLBackend.prepare
run_model = EdgeDLBackend.run_model
run_node = EdgeDLBackend.run_node
supports_device = EdgeDLBackend.supports_device
is_compatible = EdgeDLBackend.is_compatible
