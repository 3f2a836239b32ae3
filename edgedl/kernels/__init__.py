"""Public kernel wrappers, one module per family: activations, pooling, conv, boxes."""
