"""numba twins of the references (imported only when the numba backend is used)."""
