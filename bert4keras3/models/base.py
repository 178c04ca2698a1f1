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

import numpy as np

import keras
from keras import ops

from bert4keras3 import backend as B
from bert4keras3 import checkpoints
from bert4keras3.generation import CachedDecoder, bucket_length
from bert4keras3.layers import AttentionMask

__all__ = ["Transformer", "build_transformer_model", "load_config", "register_model", "MODELS",
           "DecodingContext", "LMCachedDecoder"]


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
    #: final activations that cached decoding skips (it wants logits)
    OUTPUT_ACTIVATIONS = ("MLM-Activation",)
    #: the :class:`DecodingContext` while the graph code runs for cached decoding
    decoding = None

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
        """Create (or reuse, by ``name``) a layer and call it on ``inputs``.

        During cached decoding (:meth:`cached_call`) the call goes through the
        :class:`DecodingContext`, which feeds caches and positions to the layers.
        """
        name = kwargs.get("name")
        if name not in self.layers:
            self.layers[name] = layer(**kwargs)
        if inputs is None:
            return self.layers[name]
        if self.decoding is not None:
            return self.decoding.call(self.layers[name], inputs, arguments or {})
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
        """Boolean ``[batch, 1, seq, seq]`` mask for the application (built once).

        During cached decoding it is the visibility of the cache slots instead.
        """
        if self.decoding is not None:
            return self.decoding.mask
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
    def cached_call(self, inputs, context, last=None):
        """Run the model's own graph code on tensors under a :class:`DecodingContext`.

        The same ``apply_embeddings`` / ``apply_main_layers`` / ``apply_final_layers``
        that build the Keras graph run on the new tokens; ``apply`` routes each layer
        call through ``context`` (caches, positions, masks). ``last`` (int ``[batch]``)
        keeps one position per row before the final layers. Returns the model output
        with final activations skipped (logits).
        """
        self.decoding = context
        try:
            return self.decode_graph(inputs, last)
        finally:
            self.decoding = None

    def decode_graph(self, inputs, last=None):
        """The graph code cached decoding runs (override for encoder-decoders)."""
        x = self.apply_embeddings(inputs)
        for index in range(self.num_hidden_layers):
            x = self.apply_main_layers(x, index)
        if last is not None:
            x = ops.take_along_axis(x, ops.reshape(last, (-1, 1, 1)), axis=1)
        return self.apply_final_layers(x)

    def cached_decoder(self):
        """A :class:`bert4keras3.generation.CachedDecoder` for this model.

        The default serves the ``lm`` / ``unilm`` applications of the encoder
        families; encoder-decoder families override it.
        """
        return LMCachedDecoder(self)

    def generate(self, inputs, max_new_tokens, method="greedy", beam_size=4, top_k=None,
                 top_p=None, temperature=1.0, end_id=None, min_new_tokens=0, allowed=None,
                 seed=None, **kwargs):
        """Cached, compiled decoding (see :func:`bert4keras3.generation.generate`).

        ``inputs``: LM — prompt token ids (0-padded batch, prompts of unequal lengths
        allowed); UniLM — ``[token_ids, segment_ids]`` (the prompt is segment 0). Returns
        one list of new ids per input. Further keywords (``repetition_penalty``,
        ``stop_sequences``, ``num_return_sequences``, ``return_scores``, ``streamer``, ...)
        are those of :func:`~bert4keras3.generation.generate`.
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
# cached decoding
# ---------------------------------------------------------------------------

class DecodingContext:
    """How the layers of a model behave while its graph code runs for cached decoding.

    Layers declare a ``decoding_role``:

    * ``"attention"`` (``MultiHeadAttention``, ``GatedAttentionUnit``): self-attention gets
      its key/value cache (created with ``length`` slots on first use), the positions of
      the new tokens and the write slot ``index``; cross-attention (a ``key`` argument)
      gets a read-only cache of the projected encoder states (``layer.kv_cache``), computed
      on first use and kept in ``static``;
    * ``"mask"`` (attention-mask layers): replaced by ``mask``, the visibility of the
      cache slots for the new tokens (``[batch, 1, q, length]``);
    * ``"positions"`` (position embeddings) and ``"relative_bias"`` (T5's bias): computed
      for ``positions`` (``[batch, q]``) and ``key_positions`` (``[length]``).

    Layers named in the model's ``OUTPUT_ACTIVATIONS`` are skipped (logits out); every
    other layer is called as in the graph.
    """

    def __init__(self, mask, positions, index, length, caches=None, static=None,
                 key_positions=None, skip=()):
        self.mask = mask
        self.positions = positions
        self.index = index
        self.length = length
        self.caches = dict(caches or {})
        self.static = dict(static or {})
        self.key_positions = key_positions
        self.skip = tuple(skip)

    def call(self, layer, inputs, arguments):
        role = getattr(layer, "decoding_role", None)
        if layer.name in self.skip:
            return inputs
        if role == "mask":
            return self.mask
        if role == "positions":
            return layer(inputs, positions=self.positions, **arguments)
        if role == "relative_bias":
            return layer(inputs, positions=self.positions, key_positions=self.key_positions,
                         **arguments)
        if role != "attention":
            return layer(inputs, **arguments)
        name = layer.name
        if arguments.get("key") is not None:  # cross-attention over fixed states
            arguments = dict(arguments)
            key = arguments.pop("key")
            value = arguments.pop("value", key)
            cache = self.static.get(name)
            if cache is None:
                cache = layer.kv_cache(key, value)
            out, self.static[name] = layer(inputs, cache=cache, **arguments)
            return out
        cache = self.caches.get(name)
        if cache is None:
            cache = layer.init_cache(ops.shape(inputs)[0], self.length)
        out, self.caches[name] = layer(inputs, positions=self.positions, cache=cache,
                                       cache_index=self.index, **arguments)
        return out


def _as_batch(x, name):
    """A 2-D int array from an array or a list of (possibly ragged) id lists (0-padded)."""
    if isinstance(x, (list, tuple)) and x and all(np.ndim(r) == 1 for r in x):
        width = max(len(r) for r in x)
        out = np.zeros((len(x), width), dtype="int64")
        for i, r in enumerate(x):
            out[i, :len(r)] = r
        x = out
    x = np.asarray(ops.convert_to_numpy(x) if not isinstance(x, np.ndarray) else x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D batch [batch, length]; found shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        if np.any(x != np.round(x)):
            raise ValueError(f"{name} must hold integer ids; found dtype {x.dtype}")
    return x.astype("int64")


class LMCachedDecoder(CachedDecoder):
    """Cached decoding of an encoder family built with ``application="lm"`` or ``"unilm"``.

    Cache layout (static shapes): prompts are right-padded with id 0 to a width ``P``
    (a multiple of 16); with room for ``M`` new tokens (rounded up to 16) every attention
    layer keeps ``T = P + M`` slots. Prompt token ``j`` of row ``r`` sits in slot ``j``
    (slots ``L_r .. P-1`` are padding and never visible); new token ``t`` sits in slot
    ``P + t`` with position ``L_r + t``. A new token sees the ``L_r`` prompt slots and the
    new slots up to itself: what the full model sees on ``prompt + generated`` (LM:
    causal; UniLM: the prompt is segment 0, new tokens segment 1), so the cached decode
    reproduces the uncached one. The model's own graph code runs both the prompt pass
    and each step (:meth:`Transformer.cached_call`).
    """

    BUCKET = 16

    def __init__(self, transformer):
        app = getattr(transformer, "application", None)
        if app not in ("lm", "unilm"):
            raise ValueError(
                "cached generation needs a model built with application='lm' or 'unilm'; "
                f"found application={app!r} (an encoder sees the whole sequence, so it "
                "cannot decode left to right)"
            )
        if not transformer.with_mlm:
            raise ValueError(
                "cached generation needs the MLM head for next-token logits: build the model "
                "with with_mlm=True (or 'linear'); found with_mlm=False"
            )
        if transformer.model is None:
            raise ValueError("the transformer is not built yet; call build() first")
        self.transformer = self.owner = transformer
        self.application = app
        self.vocab_size = transformer.vocab_size
        self.segments = getattr(transformer, "segment_vocab_size", 0) > 0
        if app == "unilm" and not self.segments:
            raise ValueError("application='unilm' needs segment embeddings; found "
                             "segment_vocab_size=0")
        # absolute position embeddings bound the length; rotary ones do not
        self.max_position = (transformer.max_position
                             if "Embedding-Position" in transformer.layers else None)

    def variables(self):
        return self.transformer.model.weights

    def _parse(self, inputs):
        if self.application == "unilm":
            if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
                raise ValueError(
                    "UniLM generation expects inputs=[token_ids, segment_ids]; found "
                    f"{type(inputs).__name__}"
                    + (f" of length {len(inputs)}" if isinstance(inputs, (list, tuple)) else "")
                )
            token_ids, segment_ids = (_as_batch(a, n) for a, n in
                                      zip(inputs, ("token_ids", "segment_ids")))
            if token_ids.shape != segment_ids.shape:
                raise ValueError(
                    f"token_ids and segment_ids must have the same shape; found "
                    f"{token_ids.shape} and {segment_ids.shape}"
                )
        else:
            if isinstance(inputs, (list, tuple)) and len(inputs) == 1 and \
                    np.ndim(inputs[0]) == 2:
                inputs = inputs[0]
            token_ids = _as_batch(inputs, "token_ids")
            segment_ids = np.zeros_like(token_ids)
        nonzero = token_ids != 0
        lengths = nonzero.sum(axis=1).astype("int32")
        if (lengths == 0).any():
            raise ValueError(f"every prompt needs at least one token; rows "
                             f"{np.nonzero(lengths == 0)[0].tolist()} are all padding (id 0)")
        right_padded = nonzero == (np.arange(token_ids.shape[1])[None] < lengths[:, None])
        if not right_padded.all():
            bad = np.nonzero(~right_padded.all(axis=1))[0].tolist()
            raise ValueError(f"prompts must be padded with id 0 on the right only; rows {bad} "
                             "have a 0 before a token")
        return token_ids, segment_ids, lengths

    def prepare(self, inputs, max_new_tokens):
        token_ids, segment_ids, lengths = self._parse(inputs)
        t = self.transformer
        if self.segments and segment_ids.max(initial=0) >= t.segment_vocab_size:
            raise ValueError(f"segment ids must be < {t.segment_vocab_size}; found "
                             f"{int(segment_ids.max())}")
        if token_ids.max(initial=0) >= self.vocab_size or token_ids.min(initial=0) < 0:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}); found "
                             f"[{int(token_ids.min())}, {int(token_ids.max())}]")
        if self.max_position is not None and \
                int(lengths.max()) + max_new_tokens > self.max_position:
            raise ValueError(
                f"prompt length {int(lengths.max())} + max_new_tokens {max_new_tokens} exceeds "
                f"the model's max_position {self.max_position}"
            )
        width = bucket_length(int(lengths.max()), self.BUCKET)
        length = width + bucket_length(max_new_tokens, self.BUCKET)
        pad = width - token_ids.shape[1]
        if pad > 0:
            token_ids = np.pad(token_ids, [[0, 0], [0, pad]])
            segment_ids = np.pad(segment_ids, [[0, 0], [0, pad]])
        else:
            token_ids, segment_ids = token_ids[:, :width], segment_ids[:, :width]
        arrays = {"token_ids": token_ids.astype("int32"),
                  "segment_ids": segment_ids.astype("int32"), "lengths": lengths}
        return arrays, (width, length)

    def _positions(self, positions):
        if self.max_position is not None:  # only padding slots can exceed it
            positions = ops.minimum(positions, self.max_position - 1)
        return positions

    def _run(self, token_ids, segment_ids, context, last=None):
        inputs = [token_ids, segment_ids] if self.segments else [token_ids]
        out = self.transformer.cached_call(inputs, context, last)
        out = out[-1] if isinstance(out, (list, tuple)) else out
        return ops.cast(out[:, -1], "float32")

    def prefill(self, arrays, key):
        width, length = key
        token_ids, segment_ids = arrays["token_ids"], arrays["segment_ids"]
        lengths = ops.cast(arrays["lengths"], "int32")
        rows = ops.shape(token_ids)[0]
        keys_ok = ops.not_equal(token_ids, 0)[:, None, None, :]
        if self.application == "unilm":
            mask = ops.logical_and(keys_ok, B.unilm_mask(segment_ids)[:, None])
        else:
            mask = ops.logical_and(keys_ok, B.causal_mask(width)[None, None])
        mask = ops.pad(mask, [[0, 0], [0, 0], [0, 0], [0, length - width]])
        positions = ops.broadcast_to(ops.arange(width, dtype="int32")[None], (rows, width))
        context = DecodingContext(mask, self._positions(positions), 0, length,
                                  skip=self.transformer.OUTPUT_ACTIVATIONS)
        logits = self._run(token_ids, segment_ids, context, last=lengths - 1)
        return logits, context.caches, {"lengths": lengths}

    def step(self, cache, static, token_ids, index, key):
        width, length = key
        lengths = static["lengths"]
        index = ops.cast(index, "int32")
        tokens = ops.cast(token_ids, "int32")[:, None]
        segment_ids = ops.full(ops.shape(tokens), 1 if self.application == "unilm" else 0,
                               dtype="int32")
        slot = width + index
        slots = ops.arange(length, dtype="int32")[None]
        visible = ops.logical_or(slots < lengths[:, None],
                                 ops.logical_and(slots >= width, slots <= slot))
        context = DecodingContext(visible[:, None, None, :],
                                  self._positions((lengths + index)[:, None]), slot, length,
                                  caches=cache, skip=self.transformer.OUTPUT_ACTIVATIONS)
        return self._run(tokens, segment_ids, context), context.caches


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
