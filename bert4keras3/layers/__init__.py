"""All Keras layers of bert4keras3 (import path ``bert4keras3.layers.X``).

The package is split by concern: ``core`` (embeddings, norms, attention,
feed-forward), ``heads`` (GlobalPointer family, CRF, MEMM), ``t5`` (T5 relative
position bias), ``gau`` (Gated Attention Unit), ``extras`` (``Loss``, masked pooling,
sequence/batch concatenation). Everything is re-exported here.

As in bert4keras (whose ``layers`` module star-imported ``keras.layers``), every Keras
layer name not defined here is re-exported too, so ``from bert4keras3.layers import
Input, Dense, Lambda`` works; names defined here (``Embedding``, ``Add``,
``LayerNormalization``, ``MultiHeadAttention``, ``GlobalMaxPooling1D``, ...) are this
package's versions.
"""
import importlib

import keras as _keras

from bert4keras3.layers.core import *  # noqa: F401,F403
from bert4keras3.layers.core import __all__ as _core_all

__all__ = list(_core_all)

for _name in ("heads", "t5", "gau", "extras", "deberta"):
    try:
        _module = importlib.import_module(f"bert4keras3.layers.{_name}")
    except ModuleNotFoundError as _e:  # family not present in this checkout
        if _e.name != f"bert4keras3.layers.{_name}":
            raise
        continue
    for _symbol in getattr(_module, "__all__", []):
        globals()[_symbol] = getattr(_module, _symbol)
        if _symbol not in __all__:
            __all__.append(_symbol)

#: Keras layer names re-exported unchanged (bert4keras' ``from keras.layers import *``).
KERAS_LAYERS = sorted(
    _n for _n in dir(_keras.layers) if not _n.startswith("_") and _n not in globals()
)
for _symbol in KERAS_LAYERS:
    globals()[_symbol] = getattr(_keras.layers, _symbol)
__all__ += KERAS_LAYERS
