"""Public kernel wrappers, one module per family: activations, boxes, conv, layout
(transpose), pooling, quant (int8), regions, resize (each validates its arguments, then
dispatches to the numpy / numba / Cython twin)."""
