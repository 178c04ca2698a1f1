"""bert4keras3: bert4keras-style transformers on Keras 3 (JAX, TensorFlow, PyTorch)."""

__version__ = "0.1.0"
