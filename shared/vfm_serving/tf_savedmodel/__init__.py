"""TensorFlow SavedModel backends (Derm Foundation): load, micro-batched calls, fallbacks."""
