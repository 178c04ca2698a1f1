"""The :class:`Transformer` base, config translation and ``build_transformer_model``.

A model is a :class:`Transformer` subclass that overrides ``apply_embeddings``,
``apply_main_layers``, ``apply_final_layers`` and its weight-name tables.
Layer names are stable and are the keys of every checkpoint mapping:

* ``Input-Token``, ``Input-Segment``
* ``Embedding-Token``, ``Embedding-Segment``, ``Embedding-Position``,
  ``Embedding-Norm``, ``Embedding-Mapping``
* ``Transformer-{i}-MultiHeadSelfAttention`` (+ ``-Dropout``, ``-Add``, ``-Norm``)
* ``Transformer-{i}-FeedForward`` (+ ``-Dropout``, ``-Add``, ``-Norm``)
* ``Pooler``, ``Pooler-Dense``, ``MLM-Dense``, ``MLM-Norm``, ``MLM-Bias``,
  ``MLM-Activation``
"""
import json
import os
import warnings

import keras
from keras import ops

from bert4keras3 import checkpoints
from bert4keras3.layers import AttentionMask

__all__ = ["Transformer", "build_transformer_model", "load_config", "register_model", "MODELS"]


class Transformer:
    """Base class: builds a functional Keras model from config entries.

    Subclasses override ``get_inputs``, ``apply_embeddings``,
    ``apply_main_layers``, ``apply_final_layers`` and the name tables
    ``GOOGLE_NAMES`` / ``HF_NAMES`` (Keras weight path template -> checkpoint
    name template; ``{i}`` is the layer index, ``{p}`` the detected prefix).
    """

    #: checkpoint prefixes tried in order (Google TF / Hugging Face)
    GOOGLE_PREFIXES = ("bert/", "")
    HF_PREFIXES = ("", "bert.")
    GOOGLE_NAMES = {}
    HF_NAMES = {}
    #: checkpoint variables that are derived buffers, never loaded or reported
    IGNORED = (r"position_ids$", r"embed_positions\.weight$")
    #: weights with one row per vocabulary entry (cut by ``keep_tokens``)
    VOCAB_WEIGHTS = ("Embedding-Token/embeddings", "MLM-Bias/bias")

    def __init__(self, vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
                 intermediate_size, hidden_act="gelu", dropout_rate=0.0,
                 attention_dropout_rate=0.0, embedding_size=None, attention_head_size=None,
                 attention_key_size=None, sequence_length=None, keep_tokens=None,
                 application="encoder", with_pool=False, with_mlm=False,
                 layer_norm_eps=1e-12, initializer_range=0.02, attention_normalization="softmax",
                 softmax_plus_min_length=None, name=None, **kwargs):
        if application not in ("encoder", "lm", "unilm"):
            raise ValueError(
                f"application must be 'encoder', 'lm' or 'unilm', found {application!r}"
            )
        if keep_tokens is not None:
            keep_tokens = [int(t) for t in keep_tokens]
            bad = [t for t in keep_tokens if not 0 <= t < vocab_size]
            if bad:
                raise ValueError(
                    f"keep_tokens must be ids in [0, {vocab_size}), found {bad[:5]}"
                )
            self.full_vocab_size = vocab_size
            vocab_size = len(keep_tokens)
        else:
            self.full_vocab_size = vocab_size
        self.vocab_size = vocab_size
        self.keep_tokens = keep_tokens
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.attention_head_size = attention_head_size or hidden_size // num_attention_heads
        self.attention_key_size = attention_key_size or self.attention_head_size
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.dropout_rate = dropout_rate or 0.0
        self.attention_dropout_rate = attention_dropout_rate or 0.0
        self.embedding_size = embedding_size or hidden_size
        self.sequence_length = sequence_length
        self.application = application
        self.with_pool = with_pool
        self.with_mlm = with_mlm
        self.layer_norm_eps = layer_norm_eps
        self.initializer = keras.initializers.TruncatedNormal(stddev=initializer_range)
        self.attention_normalization = attention_normalization
        self.softmax_plus_min_length = softmax_plus_min_length
        self.name = name
        if kwargs:
            warnings.warn(
                f"{type(self).__name__} ignores unknown config entries {sorted(kwargs)}",
                stacklevel=3,
            )
        self.layers = {}
        self.attention_mask = None
        self.inputs = None
        self.outputs = None
        self.model = None

    # -- building -----------------------------------------------------------
    def apply(self, inputs=None, layer=None, arguments=None, **kwargs):
        """Create (or reuse, by ``name``) a layer and call it on ``inputs``."""
        name = kwargs.get("name")
        if name not in self.layers:
            self.layers[name] = layer(**kwargs)
        if inputs is None:
            return self.layers[name]
        return self.layers[name](inputs, **(arguments or {}))

    def build(self):
        """Build the functional model; returns the ``keras.Model``."""
        self.inputs = self.get_inputs()
        x = self.apply_embeddings(self.inputs)
        for index in range(self.num_hidden_layers):
            x = self.apply_main_layers(x, index)
        self.outputs = self.apply_final_layers(x)
        inputs = self.inputs[0] if len(self.inputs) == 1 else self.inputs
        self.model = keras.Model(inputs, self.outputs, name=self.name)
        return self.model

    def get_inputs(self):
        raise NotImplementedError

    def apply_embeddings(self, inputs):
        raise NotImplementedError

    def apply_main_layers(self, inputs, index):
        raise NotImplementedError

    def apply_final_layers(self, inputs):
        raise NotImplementedError

    def compute_attention_mask(self):
        """Boolean ``[batch, 1, seq, seq]`` mask for the application (built once)."""
        if self.attention_mask is None:
            inputs = self.inputs[:2] if self.application == "unilm" else self.inputs[:1]
            if self.application == "unilm" and len(inputs) < 2:
                raise ValueError(
                    "application='unilm' needs segment ids; found segment_vocab_size=0"
                )
            self.attention_mask = self.apply(
                inputs if len(inputs) > 1 else inputs[0],
                AttentionMask, mode=self.application, name="Attention-Mask",
            )
        return self.attention_mask

    # -- generation ---------------------------------------------------------
    def cached_decoder(self):
        """A :class:`bert4keras3.generation.CachedDecoder` for this model.

        The default serves the ``lm`` / ``unilm`` applications of the encoder
        families; encoder-decoder families override it.
        """
        from bert4keras3.models.decoding import lm_cached_decoder

        return lm_cached_decoder(self)

    def generate(self, inputs, max_new_tokens, method="greedy", beam_size=4, top_k=None,
                 top_p=None, temperature=1.0, end_id=None, min_new_tokens=0, allowed=None,
                 seed=None, **kwargs):
        """Cached, compiled decoding (see :func:`bert4keras3.generation.generate`).

        ``inputs``: LM — prompt token ids (0-padded batch); UniLM —
        ``[token_ids, segment_ids]`` (the prompt is segment 0). Returns one list
        of new ids per input.
        """
        from bert4keras3.generation import generate

        return generate(self.cached_decoder(), inputs, max_new_tokens, method=method,
                        beam_size=beam_size, top_k=top_k, top_p=top_p,
                        temperature=temperature, end_id=end_id,
                        min_new_tokens=min_new_tokens, allowed=allowed, seed=seed, **kwargs)

    # -- weights ------------------------------------------------------------
    def weight_names(self, fmt, prefix):
        """Map every Keras weight path of the model to a checkpoint name.

        ``fmt``: ``"google"`` or ``"hf"``. Returns
        ``{keras_path: (checkpoint_name, transform)}`` with transform
        ``None`` or ``"T"`` (transpose).
        """
        table = self.GOOGLE_NAMES if fmt == "google" else self.HF_NAMES
        expanded = {}
        for key, value in table.items():
            name, transform = value if isinstance(value, tuple) else (value, None)
            indices = range(self.num_hidden_layers) if "{i}" in key else [None]
            for i in indices:
                expanded[key.format(i=i)] = (name.format(i=i, p=prefix), transform)
        mapping = {}
        for w in self.model.weights:
            if w.path in expanded:
                mapping[w.path] = expanded[w.path]
        return mapping

    def load_weights_from_checkpoint(self, checkpoint_path):
        """Load weights from a Google TF checkpoint, Hugging Face files or ``.weights.h5``."""
        checkpoints.load_into(self, checkpoint_path)


# ---------------------------------------------------------------------------
# build_transformer_model
# ---------------------------------------------------------------------------

#: model name -> Transformer subclass; filled by :func:`register_model`
MODELS = {}


def register_model(*names):
    """Class decorator adding a :class:`Transformer` subclass under ``names``."""
    def wrap(cls):
        for name in names:
            MODELS[name] = cls
        return cls
    return wrap

#: Hugging Face / Google config keys -> bert4keras keys
CONFIG_ALIASES = {
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "type_vocab_size": "segment_vocab_size",
    "max_position_embeddings": "max_position",
}
#: config keys that describe the file, not the model
CONFIG_IGNORED = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "pad_token_id", "bos_token_id", "eos_token_id", "position_embedding_type",
    "use_cache", "classifier_dropout", "gradient_checkpointing", "directionality",
    "pooler_fc_size", "pooler_num_attention_heads", "pooler_num_fc_layers",
    "pooler_size_per_head", "pooler_type", "output_past", "is_decoder",
    "add_cross_attention", "chunk_size_feed_forward", "tie_word_embeddings",
}
REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size")


def load_config(config_path, keep=()):
    """Read a JSON config (path or dict) and translate its keys to bert4keras names.

    ``keep``: keys of ``CONFIG_IGNORED`` that the model class wants to see anyway
    (a class lists them in ``CONFIG_KEEP``, e.g. T5's ``tie_word_embeddings``).
    """
    if isinstance(config_path, dict):
        raw = dict(config_path)
    else:
        if not os.path.exists(config_path):
            raise FileNotFoundError(f"config file not found: {config_path!r}")
        with open(config_path, encoding="utf-8") as f:
            raw = json.load(f)
    config = {}
    for key, value in raw.items():
        if (key in CONFIG_IGNORED and key not in keep) or key.startswith("_"):
            continue
        config[CONFIG_ALIASES.get(key, key)] = value
    if config.get("rotary_value"):
        raise ValueError("rotary_value=True (rotary on values) is not supported; found it in config")
    config.pop("rotary_value", None)
    return config


def build_transformer_model(config_path=None, checkpoint_path=None, model="bert",
                            application="encoder", return_keras_model=True, **kwargs):
    """Build a pretrained transformer in one call (bert4keras API).

    Args:
        config_path: JSON config path or dict (bert4keras/Google or Hugging Face keys).
        checkpoint_path: Google TF checkpoint prefix, Hugging Face directory /
            ``*.safetensors`` / ``pytorch_model.bin``, or a ``*.weights.h5``.
        model: ``bert``, ``roberta``, ``roformer``, ``roformer_v2``, ... or a
            :class:`Transformer` subclass.
        application: ``encoder``, ``lm`` (causal) or ``unilm`` (seq2seq mask).
        return_keras_model: return the ``keras.Model`` (else the builder object,
            with ``.model``).
        **kwargs: override config entries (``with_pool``, ``with_mlm``,
            ``keep_tokens``, ``dropout_rate``, ...).

    Example::

        model = build_transformer_model("bert_config.json", "bert_model.ckpt")
        hidden = model.predict([token_ids, segment_ids])
    """
    if isinstance(model, str):
        key = model.lower()
        if key not in MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {sorted(MODELS)}")
        cls = MODELS[key]
    elif isinstance(model, type) and issubclass(model, Transformer):
        cls = model
    else:
        raise ValueError(f"model must be a name or a Transformer subclass, found {model!r}")
    keep = getattr(cls, "CONFIG_KEEP", ())
    config = load_config(config_path, keep=keep) if config_path is not None else {}
    config.update(kwargs)
    missing = [k for k in getattr(cls, "REQUIRED_KEYS", REQUIRED_KEYS) if k not in config]
    if missing:
        raise ValueError(f"config is missing required key(s) {missing} for model {model!r}")
    config["application"] = application
    if checkpoint_path is not None:
        checkpoints.detect_format(checkpoint_path)  # fail fast on a bad path
    transformer = cls(**config)
    transformer.build()
    if checkpoint_path is not None:
        transformer.load_weights_from_checkpoint(checkpoint_path)
    return transformer.model if return_keras_model else transformer
