"""Transformer models in the bert4keras shape and ``build_transformer_model``.

Import path: ``from bert4keras3.models import build_transformer_model``.
The package is split by family: ``base`` (the :class:`Transformer` base, config
translation, the model registry), ``bert`` (BERT, RoFormer, RoFormerV2), and
further families in their own modules. Each family registers its names with
:func:`register_model`.
"""
from bert4keras3.models.base import (  # noqa: F401
    MODELS,
    Transformer,
    build_transformer_model,
    extend_with_language_model,
    extend_with_unified_language_model,
    load_config,
    register_model,
)
from bert4keras3.models.bert import BERT, RoFormer, RoFormerV2  # noqa: F401

__all__ = ["Transformer", "BERT", "RoFormer", "RoFormerV2", "build_transformer_model",
           "load_config", "register_model", "MODELS", "extend_with_language_model",
           "extend_with_unified_language_model"]

# further families register themselves on import
for _module in ("t5", "gau", "albert", "electra", "nezha", "gpt", "deberta"):
    try:
        _family = __import__(f"bert4keras3.models.{_module}", fromlist=["__all__"])
    except ModuleNotFoundError as _e:  # family not present in this checkout
        if _e.name != f"bert4keras3.models.{_module}":
            raise
    else:  # bert4keras exports the model classes from ``models`` (T5_Encoder, ...)
        for _name in getattr(_family, "__all__", ()):
            if isinstance(getattr(_family, _name), type):
                globals()[_name] = getattr(_family, _name)
                __all__.append(_name)
