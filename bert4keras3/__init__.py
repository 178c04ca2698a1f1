"""bert4keras3: bert4keras-style transformers on Keras 3 (JAX, TensorFlow, PyTorch)."""

from bert4keras3 import _keras2

_keras2.install()  # fit_generator & co., nested-list inputs (see bert4keras3/_keras2.py)

__version__ = "0.1.0"
