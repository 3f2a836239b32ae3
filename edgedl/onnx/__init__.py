"""ONNX runtime on edgedl's kernels: load, plan, run (the onnxruntime Python API).

Models are read by edgedl's own protobuf reader (``proto.py``): loading and running a model
needs only NumPy, also where the ``onnx`` package cannot be installed (32-bit Pi OS). The onnx
package serves the tools around it: ``edgedl.onnx.backend`` (onnx's test runner), shape
inference in ``edgedl info``, writing models.
"""
