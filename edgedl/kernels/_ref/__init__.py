"""Plain NumPy references: obviously correct, always available. Same names as the twins."""
