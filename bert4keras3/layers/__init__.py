"""All Keras layers of bert4keras3 (import path ``bert4keras3.layers.X``).

The package is split by concern: ``core`` (embeddings, norms, attention,
feed-forward), ``heads`` (GlobalPointer family, CRF), ``t5`` (T5 relative
position bias), ``gau`` (Gated Attention Unit). Everything is re-exported here.
"""
import importlib

from bert4keras3.layers.core import *  # noqa: F401,F403
from bert4keras3.layers.core import __all__ as _core_all

__all__ = list(_core_all)

for _name in ("heads", "t5", "gau"):
    try:
        _module = importlib.import_module(f"bert4keras3.layers.{_name}")
    except ModuleNotFoundError as _e:  # family not present in this checkout
        if _e.name != f"bert4keras3.layers.{_name}":
            raise
        continue
    for _symbol in getattr(_module, "__all__", []):
        globals()[_symbol] = getattr(_module, _symbol)
        __all__.append(_symbol)
