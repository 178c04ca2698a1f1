"""All Keras layers of bert4keras3 (import path ``bert4keras3.layers.X``).

The package is split by concern: ``core`` (embeddings, norms, attention,
feed-forward), ``heads`` (GlobalPointer family, CRF).
"""
from bert4keras3.layers.core import *  # noqa: F401,F403
from bert4keras3.layers.core import __all__ as _core_all

__all__ = list(_core_all)

try:  # task heads live in their own module
    from bert4keras3.layers.heads import *  # noqa: F401,F403
    from bert4keras3.layers import heads as _heads

    __all__ += list(getattr(_heads, "__all__", []))
except ImportError:  # pragma: no cover - heads not present
    pass
