"""The :class:`Transformer` base, config translation and ``build_transformer_model``.

A model is a :class:`Transformer` subclass that overrides ``apply_embeddings``,
``apply_main_layers``, ``apply_final_layers`` and its weight-name tables.
Layer names are stable, follow bert4keras and are the keys of every checkpoint mapping
(with ``prefix=`` every name starts with the prefix):

* ``Input-Token``, ``Input-Segment``, ``Input-Position`` (``custom_position_ids``)
* ``Embedding-Token``, ``Embedding-Segment``, ``Embedding-Token-Segment``,
  ``Embedding-Position``, ``Embedding-Norm``, ``Embedding-Dropout``, ``Embedding-Mapping``
* ``Attention-Mask`` (encoder), ``Attention-LM-Mask`` (lm), ``Attention-UniLM-Mask`` (unilm)
* ``Transformer-{i}-MultiHeadSelfAttention`` (+ ``-Dropout``, ``-Add``, ``-Norm``)
* ``Transformer-{i}-FeedForward`` (+ ``-Dropout``, ``-Add``, ``-Norm``)
* ``Pooler``, ``Pooler-Dense``, ``NSP-Proba``, ``MLM-Dense``, ``MLM-Norm``, ``MLM-Bias``,
  ``MLM-Activation`` (RoFormerV2 / GAU-alpha: ``Output-Mapping``, ``Output-MLM-Dropout``,
  ``Output-MLM-Activation``)

T5 names are listed in :mod:`bert4keras3.models.t5`.
"""
import difflib
import functools
import inspect
import json
import os
import warnings

import numpy as np

import keras
from keras import ops

from bert4keras3 import backend as B
from bert4keras3 import checkpoints
from bert4keras3.generation import CachedDecoder, bucket_length
from bert4keras3.layers import (AttentionMask, FeedForward, GatedAttentionUnit,
                                LayerNormalization, MultiHeadAttention)

__all__ = ["Transformer", "build_transformer_model", "load_config", "register_model", "MODELS",
           "DecodingContext", "LMCachedDecoder", "BERT4KERAS_OPTIONS",
           "extend_with_language_model", "extend_with_unified_language_model"]


#: bert4keras build options (of any family). A family without one of them accepts it
#: switched off (``None`` / ``False`` / ``0`` / empty) and raises for any other value.
BERT4KERAS_OPTIONS = frozenset({
    "with_pool", "with_nsp", "with_mlm", "with_lm", "custom_position_ids",
    "hierarchical_position", "segment_vocab_size", "max_position", "shared_segment_embeddings",
    "keep_tokens", "compound_tokens", "residual_attention_scores", "ignore_invalid_weights",
    "autoresize_weights", "layers", "prefix", "name", "layer_norm_cond",
    "layer_norm_cond_hidden_size", "layer_norm_cond_hidden_act", "additional_input_layers",
    "attention_caches", "cross_position_bias", "sequence_length",
})


def is_set(value):
    """Whether a build option is switched on (not ``None`` / ``False`` / ``0`` / empty)."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return False
    if isinstance(value, (list, tuple, dict, str)) and len(value) == 0:
        return False
    return True


def _normalize_compound_tokens(compound_tokens, vocab_size):
    """``[ids]`` or ``(ids, weights)`` items -> list of ``(ids, weights)`` (validated)."""
    items = []
    for k, item in enumerate(compound_tokens):
        if isinstance(item, tuple) and len(item) == 2 and np.ndim(item[0]) == 1:
            ids, weights = list(item[0]), list(item[1])
        else:
            ids = list(np.atleast_1d(item))
            weights = [1.0] * len(ids)
        ids = [int(i) for i in ids]
        if not ids or len(ids) != len(weights):
            raise ValueError(
                f"compound_tokens[{k}] must be a non-empty list of ids or (ids, weights) of "
                f"equal lengths; found {item!r}"
            )
        bad = [i for i in ids if not 0 <= i < vocab_size]
        if bad:
            raise ValueError(
                f"compound_tokens[{k}] holds ids {bad} outside [0, {vocab_size}) (ids are in "
                "the vocabulary after keep_tokens)"
            )
        items.append((ids, [float(w) for w in weights]))
    return items


#: layers whose activations ``remat=True`` recomputes in the backward pass (bert4keras'
#: ``RECOMPUTE=1`` wraps the same ones: attention, GAU, feed-forward, layer norm)
REMAT_LAYERS = (MultiHeadAttention, GatedAttentionUnit, FeedForward, LayerNormalization)


def remat_layer(layer):
    """Make ``layer`` recompute its activations in the backward pass (``keras.remat``).

    Only the floating-point tensors among the call's arguments go through ``keras.remat``;
    the others (masks, ``training``, ``None``, Python numbers) are closed over, so they stay
    static (JAX's checkpoint would turn ``training=False`` into a traced boolean). Symbolic
    calls (model construction) run the plain call. The layer's sublayers run inside its recomputed
    call and are not wrapped again. Not serialized: a reloaded model trains without it.
    """
    call = layer.call

    @functools.wraps(call)
    def rematerialized(*args, **kwargs):
        flat = keras.tree.flatten((args, kwargs))
        if any(isinstance(x, keras.KerasTensor) for x in flat):
            return call(*args, **kwargs)
        # floating tensors go through keras.remat (they carry gradients); masks, ids and
        # Python values are closed over (TensorFlow's recompute_grad rejects bool inputs)
        is_tensor = [(isinstance(x, np.ndarray) or ops.is_tensor(x))
                     and "float" in keras.backend.standardize_dtype(x.dtype) for x in flat]

        def recompute(*tensors):
            it = iter(tensors)
            values = [next(it) if t else x for x, t in zip(flat, is_tensor)]
            a, k = keras.tree.pack_sequence_as((args, kwargs), values)
            return call(*a, **k)

        recompute.remat_layer = layer
        return keras.remat(recompute)(*[x for x, t in zip(flat, is_tensor) if t])

    rematerialized.remat_layer = layer
    layer.call = rematerialized
    return layer


class Transformer:
    """Base class: builds a functional Keras model from config entries (bert4keras shape).

    Subclasses override ``get_inputs``, ``apply_embeddings``, ``apply_main_layers``,
    ``apply_final_layers`` and the name tables ``GOOGLE_NAMES`` / ``HF_NAMES`` (Keras
    weight path template -> checkpoint name template; ``{i}`` is the layer index, ``{p}``
    the detected prefix).

    Build options shared by every family (as in bert4keras):

    * ``keep_tokens``: keep only these vocabulary rows (in this order);
    * ``compound_tokens``: extra vocabulary rows after those, each initialised from the
      checkpoint as the mean of the listed rows (an item is ``[ids]`` or
      ``(ids, weights)`` for a weighted mean);
    * ``prefix``: prepended to every layer name (two models in one graph);
    * ``ignore_invalid_weights``: checkpoint variables that are missing are skipped with
      a warning (their weights keep the initialisation) instead of raising;
    * ``layers``: a dict of layers to reuse by (prefixed) name;
    * ``remat``: gradient checkpointing; the attention, GAU, feed-forward and norm layers
      keep only their inputs for the backward pass and recompute the rest
      (:func:`remat_layer`). Default: bert4keras' ``RECOMPUTE=1`` environment variable.
      Not saved in a ``.keras`` file (a reloaded model trains without it);
    * ``dtype``: a Keras dtype policy for every layer of the model, e.g.
      ``"mixed_bfloat16"`` (float32 weights, bfloat16 compute) or ``"bfloat16"``; see
      ``docs/precision.md``. Default: the global policy;
    * ``layer_norm_cond`` (a tensor), ``layer_norm_cond_hidden_size``,
      ``layer_norm_cond_hidden_act`` and ``additional_input_layers``: conditional layer
      normalisation (families with gamma/beta norms only; see ``BERT``).

    After :meth:`build`: ``.model`` (the ``keras.Model``), ``.inputs`` / ``.input``,
    ``.outputs`` / ``.output`` (lists, or the single tensor, as in bert4keras).
    """

    #: checkpoint prefixes tried in order (Google TF / Hugging Face)
    GOOGLE_PREFIXES = ("bert/", "")
    HF_PREFIXES = ("", "bert.")
    GOOGLE_NAMES = {}
    HF_NAMES = {}
    #: checkpoint variables that are derived buffers, never loaded or reported
    IGNORED = (r"position_ids$", r"embed_positions\.weight$")
    #: model weights with no checkpoint counterpart (left at their initialisation):
    #: the condition projections of conditional layer normalisation
    NOT_IN_CHECKPOINTS = (r"/(gamma_dense|beta_dense|hidden_dense)/kernel$",)
    #: weights with one row per vocabulary entry (cut by ``keep_tokens``, extended by
    #: ``compound_tokens``)
    VOCAB_WEIGHTS = ("Embedding-Token/embeddings", "MLM-Bias/bias")
    #: final activations that cached decoding skips (it wants logits); unprefixed names
    OUTPUT_ACTIVATIONS = ("MLM-Activation",)
    #: options this family does not support: name -> reason (a set value raises)
    UNSUPPORTED_OPTIONS = {
        "residual_attention_scores": (
            "RealFormer's residual attention scores are not implemented (the attention "
            "layers do not return their scores, and no released checkpoint was trained "
            "with them); leave it False"),
        "autoresize_weights": (
            "checkpoints are loaded exactly: a shape mismatch is an error naming both "
            "shapes; resize the arrays yourself and load them with set_weights"),
        "attention_caches": (
            "key/value caches are managed by generate() (the layers take static caches); "
            "use generate() or snippets.AutoRegressiveDecoder"),
        "layer_norm_cond": "this family has no conditional layer normalisation",
        "additional_input_layers": "this family takes no additional inputs",
    }
    #: Hugging Face / family config keys -> bert4keras keys (added to ``CONFIG_ALIASES``)
    CONFIG_ALIASES = {}
    #: config-file keys that describe the file for this family (added to ``CONFIG_IGNORED``)
    CONFIG_IGNORED = frozenset()
    #: the :class:`DecodingContext` while the graph code runs for cached decoding
    decoding = None

    def __init__(self, vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
                 intermediate_size, hidden_act="gelu", dropout_rate=0.0,
                 attention_dropout_rate=0.0, embedding_size=None, attention_head_size=None,
                 attention_key_size=None, sequence_length=None, keep_tokens=None,
                 compound_tokens=None, residual_attention_scores=False,
                 ignore_invalid_weights=False, autoresize_weights=False, layers=None,
                 prefix=None, application="encoder", with_pool=False, with_mlm=None,
                 layer_norm_cond=None, layer_norm_cond_hidden_size=None,
                 layer_norm_cond_hidden_act=None, additional_input_layers=None,
                 attention_caches=None, layer_norm_eps=1e-12, initializer_range=0.02,
                 attention_normalization="softmax", softmax_plus_min_length=None, name=None,
                 remat=None, dtype=None, **kwargs):
        unknown = sorted(k for k, v in kwargs.items()
                         if k not in BERT4KERAS_OPTIONS or is_set(v))
        if unknown:
            raise ValueError(self.unknown_options_message(unknown))
        if application not in ("encoder", "lm", "unilm"):
            raise ValueError(
                f"application must be 'encoder', 'lm' or 'unilm', found {application!r}"
            )
        #: vocabulary rows of a checkpoint (before ``keep_tokens``)
        self.full_vocab_size = vocab_size
        if keep_tokens is not None:
            keep_tokens = [int(t) for t in keep_tokens]
            bad = [t for t in keep_tokens if not 0 <= t < vocab_size]
            if bad:
                raise ValueError(
                    f"keep_tokens must be ids in [0, {vocab_size}), found {bad[:5]}"
                )
            vocab_size = len(keep_tokens)
        #: vocabulary rows taken from a checkpoint (after ``keep_tokens``)
        self.base_vocab_size = vocab_size
        self.compound_tokens = None
        if compound_tokens is not None:
            self.compound_tokens = _normalize_compound_tokens(compound_tokens, vocab_size)
            vocab_size += len(self.compound_tokens)
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
        # bert4keras: the lm / unilm applications predict tokens, so the MLM head is on
        # unless switched off explicitly
        self.with_mlm = (application in ("lm", "unilm")) if with_mlm is None else with_mlm
        self.residual_attention_scores = residual_attention_scores
        self.ignore_invalid_weights = ignore_invalid_weights
        self.autoresize_weights = autoresize_weights
        self.layer_norm_cond = layer_norm_cond
        self.layer_norm_cond_hidden_size = layer_norm_cond_hidden_size
        self.layer_norm_cond_hidden_act = layer_norm_cond_hidden_act
        self.additional_input_layers = additional_input_layers
        self.attention_caches = attention_caches
        self.layer_norm_eps = layer_norm_eps
        self.initializer = keras.initializers.TruncatedNormal(stddev=initializer_range)
        self.attention_normalization = attention_normalization
        self.softmax_plus_min_length = softmax_plus_min_length
        if remat is None:  # bert4keras: RECOMPUTE=1 in the environment
            remat = os.environ.get("RECOMPUTE", "0").strip().lower() in ("1", "true", "yes", "on")
        if not isinstance(remat, (bool, int)):
            raise ValueError(f"remat must be True or False, found {remat!r}")
        self.remat = bool(remat)
        if dtype is not None:
            try:
                dtype = keras.dtype_policies.get(dtype)
            except ValueError as e:
                raise ValueError(f"dtype must be a Keras dtype policy (e.g. 'float32', "
                                 f"'mixed_bfloat16', 'mixed_float16'), found {dtype!r}") from e
        self.dtype = dtype
        self.prefix = prefix or ""
        self.name = name
        self.layers = {} if layers is None else layers
        self.attention_mask = None
        self.pass_inputs = None
        self.inputs = self.input = None
        self.outputs = self.output = None
        self.model = None
        self.built = False

    # -- options ------------------------------------------------------------
    @classmethod
    def option_names(cls):
        """Every build option / config entry this family accepts (constructor arguments)."""
        names = set()
        for klass in cls.__mro__:
            init = klass.__dict__.get("__init__")
            if init is None or klass is object:
                continue
            for p in inspect.signature(init).parameters.values():
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                    names.add(p.name)
        return names

    def unknown_options_message(self, names):
        known = self.option_names()
        hints = []
        for n in names:
            close = difflib.get_close_matches(n, sorted(known), n=1)
            if n in BERT4KERAS_OPTIONS:
                hints.append(f"{n!r} (a bert4keras option that {type(self).__name__} does "
                             "not have; leave it unset)")
            elif close:
                hints.append(f"{n!r} (did you mean {close[0]!r}?)")
            else:
                hints.append(repr(n))
        return (f"{type(self).__name__} does not support the build option(s) "
                f"{', '.join(hints)}; see docs/porting.md for the options of each model")

    def check_options(self):
        """Raise for a set option that this family does not support (``UNSUPPORTED_OPTIONS``)."""
        for option, reason in self.UNSUPPORTED_OPTIONS.items():
            value = getattr(self, option, None)
            if is_set(value):
                shown = value if isinstance(value, (bool, int, float, str)) else type(value).__name__
                raise ValueError(f"{type(self).__name__} does not support the build option "
                                 f"{option}={shown!r}: {reason}")

    # -- building -----------------------------------------------------------
    def prefixed(self, name):
        """``name`` with the model's ``prefix`` (``None`` stays ``None``)."""
        return None if name is None else self.prefix + name

    def unprefixed(self, path):
        """A weight path or layer name without the model's ``prefix``."""
        if self.prefix and path.startswith(self.prefix):
            return path[len(self.prefix):]
        return path

    def apply(self, inputs=None, layer=None, arguments=None, **kwargs):
        """Create (or reuse, by ``name``) a layer and call it on ``inputs``.

        ``name`` gets the model's ``prefix``. During cached decoding
        (:meth:`cached_call`) the call goes through the :class:`DecodingContext`,
        which feeds caches and positions to the layers.
        """
        name = self.prefixed(kwargs.get("name"))
        kwargs["name"] = name
        if name not in self.layers:
            if self.dtype is not None and "dtype" not in kwargs:
                kwargs["dtype"] = self.dtype  # the layers hand it on to their sublayers
            self.layers[name] = layer(**kwargs)
            if self.remat and isinstance(self.layers[name], REMAT_LAYERS):
                remat_layer(self.layers[name])
        if inputs is None:
            return self.layers[name]
        if self.decoding is not None:
            return self.decoding.call(self.layers[name], inputs, arguments or {})
        return self.layers[name](inputs, **(arguments or {}))

    def build(self, layer_norm_cond=None, layer_norm_cond_hidden_size=None,
              layer_norm_cond_hidden_act=None, additional_input_layers=None,
              attention_caches=None):
        """Build the functional model; returns the ``keras.Model``.

        The arguments (bert4keras' ``build`` arguments) override the constructor's.
        """
        if self.built:
            return self.model
        for option, value in (("layer_norm_cond", layer_norm_cond),
                              ("layer_norm_cond_hidden_size", layer_norm_cond_hidden_size),
                              ("layer_norm_cond_hidden_act", layer_norm_cond_hidden_act),
                              ("additional_input_layers", additional_input_layers),
                              ("attention_caches", attention_caches)):
            if value is not None:
                setattr(self, option, value)
        self.check_options()
        inputs = self.get_inputs()
        self.set_inputs(inputs, self.additional_input_layers)
        outputs = self.call(inputs)
        self.set_outputs(outputs)
        model_inputs = self.inputs[0] if len(self.inputs) == 1 else self.inputs
        self.model = keras.Model(model_inputs, self.output, name=self.name)
        self.built = True
        return self.model

    def call(self, inputs):
        """The graph code: embeddings, every block, the final layers (one pass)."""
        x = self.apply_embeddings(inputs)
        for index in range(self.num_hidden_layers):
            x = self.apply_main_layers(x, index)
        return self.apply_final_layers(x)

    def set_inputs(self, inputs, additional_input_layers=None):
        """Set ``.inputs`` (a list) and ``.input`` (the tensor, or the list when several)."""
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if additional_input_layers is not None:
            if not isinstance(additional_input_layers, (list, tuple)):
                additional_input_layers = [additional_input_layers]
            inputs.extend(additional_input_layers)
        self.inputs = inputs
        self.input = inputs[0] if len(inputs) == 1 else inputs

    def set_outputs(self, outputs):
        """Set ``.outputs`` (a list) and ``.output`` (the tensor, or the list when several)."""
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        self.outputs = outputs
        self.output = outputs[0] if len(outputs) == 1 else outputs

    @staticmethod
    def simplify(inputs):
        """Drop ``None`` from a list; a single remaining element is returned alone."""
        inputs = [i for i in inputs if i is not None]
        return inputs[0] if len(inputs) == 1 else inputs

    def get_inputs(self):
        raise NotImplementedError

    def apply_embeddings(self, inputs):
        raise NotImplementedError

    def apply_main_layers(self, inputs, index):
        raise NotImplementedError

    def apply_final_layers(self, inputs):
        raise NotImplementedError

    def begin_pass(self, token_ids, segment_ids=None, position_ids=None):
        """Start a pass of the graph code on these inputs (called by ``apply_embeddings``).

        The attention mask is built per pass from the inputs of that pass, so the
        same layers can be called on other inputs (BERT-of-Theseus, siamese models).
        """
        self.pass_inputs = {"token": token_ids, "segment": segment_ids,
                            "position": position_ids}
        self.attention_mask = None

    def compute_attention_mask(self):
        """Boolean ``[batch, 1, seq, seq]`` mask for the application (once per pass).

        Built from the token (and, for ``unilm``, segment) ids of the current pass
        (see :meth:`begin_pass`); during cached decoding it is the visibility of the
        cache slots instead.
        """
        if self.decoding is not None:
            return self.decoding.mask
        if self.attention_mask is None:
            current = self.pass_inputs
            if current is None:  # graph code called without apply_embeddings
                segments = self.inputs[1] if len(self.inputs) > 1 else None
                current = {"token": self.inputs[0], "segment": segments}
            if self.application == "unilm":
                if current.get("segment") is None:
                    raise ValueError(
                        "application='unilm' needs segment ids; found segment_vocab_size=0"
                    )
                inputs = [current["token"], current["segment"]]
            else:
                inputs = current["token"]
            name = {"encoder": "Attention-Mask", "lm": "Attention-LM-Mask",
                    "unilm": "Attention-UniLM-Mask"}[self.application]
            self.attention_mask = self.apply(inputs, AttentionMask, mode=self.application,
                                             name=name)
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
            self.pass_inputs = None
            self.attention_mask = None

    def decode_graph(self, inputs, last=None):
        """The graph code cached decoding runs (override for encoder-decoders)."""
        x = self.apply_embeddings(inputs)
        for index in range(self.num_hidden_layers):
            x = self.apply_main_layers(x, index)
        if last is not None:
            x = ops.take_along_axis(x, ops.reshape(last, (-1, 1, 1)), axis=1)
        return self.apply_final_layers(x)

    def output_activation_names(self):
        """Prefixed names of the final activations that cached decoding skips."""
        return tuple(self.prefixed(n) for n in self.OUTPUT_ACTIVATIONS)

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
    def google_save_prefix(self):
        """The checkpoint prefix written by :meth:`save_weights_as_checkpoint`."""
        return self.GOOGLE_PREFIXES[0]

    def expand_names(self, fmt, prefix):
        """The name table of ``fmt`` expanded over layer indices: ``{path: (name, transform)}``.

        Keys are unprefixed Keras weight paths.
        """
        table = self.GOOGLE_NAMES if fmt == "google" else self.HF_NAMES
        expanded = {}
        for key, value in table.items():
            name, transform = value if isinstance(value, tuple) else (value, None)
            indices = range(self.num_hidden_layers) if "{i}" in key else [None]
            for i in indices:
                expanded[key.format(i=i)] = (name.format(i=i, p=prefix), transform)
        return expanded

    def weight_names(self, fmt, prefix):
        """Map every Keras weight path of the model to a checkpoint name.

        ``fmt``: ``"google"`` or ``"hf"``. Returns
        ``{keras_path: (checkpoint_name, transform)}`` with transform
        ``None`` or ``"T"`` (transpose); paths are the model's own (with the ``prefix``
        option), names are the checkpoint's.
        """
        expanded = self.expand_names(fmt, prefix)
        mapping = {}
        for w in self.model.weights:
            key = self.unprefixed(w.path)
            if key in expanded:
                mapping[w.path] = expanded[key]
        return mapping

    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        """Load weights from a Google TF checkpoint, Hugging Face files or ``.weights.h5``.

        ``checkpoint`` may also be a dict ``{Google name: array}``; ``mapping``
        (``{unprefixed keras weight path: name or (name, "T")}``) replaces the model's
        name table (see :func:`bert4keras3.checkpoints.load_into`).
        """
        checkpoints.load_into(self, checkpoint, mapping=mapping)

    def save_weights_as_checkpoint(self, filename, mapping=None, dtype=None):
        """Write the weights as a TensorFlow checkpoint with Google's variable names.

        ``filename``: the checkpoint prefix (``.../bert_model.ckpt``); ``mapping``
        (optional): ``{keras_weight_path: name or (name, "T")}`` with unprefixed paths,
        replacing the model's Google table; ``dtype``: the variables' dtype (default: the
        weights' own). The file loads back with ``build_transformer_model(config,
        filename)`` bit-exactly (a vocabulary cut by ``keep_tokens`` / extended by
        ``compound_tokens`` is written as it is).
        """
        return checkpoints.save_google_checkpoint(self, filename, mapping=mapping, dtype=dtype)


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

    ``slot_positions`` (``[batch, length]`` or ``[length]``): the position held by each
    cache slot; self-attention layers whose ``uses_key_positions`` is true (relative
    position embeddings, e.g. NEZHA's) get it as ``key_positions``.

    Self-attention caches are keyed by layer name and call: a layer called several times
    in one pass (ALBERT's blocks shared across depth) keeps one cache per call
    (``name``, ``name#1``, ``name#2``, ...), the same keys in the prompt pass and every step.

    Layers named in the model's ``OUTPUT_ACTIVATIONS`` are skipped (logits out); every
    other layer is called as in the graph.
    """

    def __init__(self, mask, positions, index, length, caches=None, static=None,
                 key_positions=None, skip=(), slot_positions=None):
        self.mask = mask
        self.positions = positions
        self.index = index
        self.length = length
        self.caches = dict(caches or {})
        self.static = dict(static or {})
        self.key_positions = key_positions
        self.skip = tuple(skip)
        self.slot_positions = slot_positions
        self.calls = {}

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
        # the context supplies the positions of the new tokens (custom_position_ids too)
        arguments = {k: v for k, v in arguments.items()
                     if k not in ("positions", "key_positions")}
        if arguments.get("key") is not None:  # cross-attention over fixed states
            key = arguments.pop("key")
            value = arguments.pop("value", key)
            cache = self.static.get(name)
            if cache is None:
                cache = layer.kv_cache(key, value)
            out, self.static[name] = layer(inputs, cache=cache, **arguments)
            return out
        count = self.calls.get(name, 0)
        self.calls[name] = count + 1
        key = name if count == 0 else f"{name}#{count}"
        cache = self.caches.get(key)
        if cache is None:
            cache = layer.init_cache(ops.shape(inputs)[0], self.length)
        if getattr(layer, "uses_key_positions", False):
            arguments["key_positions"] = self.slot_positions
        out, self.caches[key] = layer(inputs, positions=self.positions, cache=cache,
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
    ``P + t`` with position ``L_r + t`` (the context's ``slot_positions``, for relative
    position embeddings). A new token sees the ``L_r`` prompt slots and the
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
        if transformer.layer_norm_cond is not None or transformer.additional_input_layers:
            raise ValueError(
                "generate() feeds token (and segment) ids only, so it cannot decode a model "
                "built with layer_norm_cond / additional_input_layers; decode it with "
                "snippets.AutoRegressiveDecoder, whose predict calls model.predict with "
                "every input"
            )
        self.transformer = self.owner = transformer
        self.application = app
        self.vocab_size = transformer.vocab_size
        self.segments = getattr(transformer, "segment_vocab_size", 0) > 0
        if app == "unilm" and not self.segments:
            raise ValueError("application='unilm' needs segment embeddings; found "
                             "segment_vocab_size=0")
        #: the model takes an ``Input-Position`` (fed with the decoding positions)
        self.custom_positions = bool(getattr(transformer, "custom_position_ids", False))
        # absolute position embeddings bound the length; rotary ones do not
        self.max_position = None
        if transformer.prefixed("Embedding-Position") in transformer.layers:
            self.max_position = transformer.max_position
            if getattr(transformer, "hierarchical_position", None):
                self.max_position = transformer.max_position ** 2

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

    def _slot_positions(self, lengths, width, length):
        """``[batch, length]`` position of each cache slot (see the class docstring)."""
        slots = ops.arange(length, dtype="int32")[None]
        return ops.where(slots < width, slots, lengths[:, None] + slots - width)

    def _run(self, token_ids, segment_ids, context, last=None):
        inputs = [token_ids, segment_ids] if self.segments else [token_ids]
        if self.custom_positions:
            inputs.append(context.positions)
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
                                  skip=self.transformer.output_activation_names(),
                                  slot_positions=self._slot_positions(lengths, width, length))
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
                                  caches=cache, skip=self.transformer.output_activation_names(),
                                  slot_positions=self._slot_positions(lengths, width, length))
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
    "id2label", "label2id", "finetuning_task", "problem_type", "return_dict",
    "output_hidden_states", "output_attentions", "torchscript",
}
REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size")


def translate_keys(config, aliases):
    """Rename alias keys to bert4keras keys; a bert4keras key present wins over its alias."""
    out = {}
    for key, value in config.items():
        target = aliases.get(key, key)
        if target != key and target in config:
            continue
        out[target] = value
    return out


def extend_with_language_model(BaseModel):
    """bert4keras' LM extension: ``BaseModel`` with a causal mask (``application="lm"``)."""
    class LanguageModel(BaseModel):
        def __init__(self, *args, **kwargs):
            kwargs["application"] = "lm"
            super().__init__(*args, **kwargs)

    LanguageModel.__name__ = LanguageModel.__qualname__ = f"LanguageModel_{BaseModel.__name__}"
    return LanguageModel


def extend_with_unified_language_model(BaseModel):
    """bert4keras' UniLM extension: ``BaseModel`` with the seq2seq mask (``"unilm"``)."""
    class UnifiedLanguageModel(BaseModel):
        def __init__(self, *args, **kwargs):
            kwargs["application"] = "unilm"
            super().__init__(*args, **kwargs)

    UnifiedLanguageModel.__name__ = UnifiedLanguageModel.__qualname__ = (
        f"UnifiedLanguageModel_{BaseModel.__name__}")
    return UnifiedLanguageModel


def load_config(config_path, keep=(), aliases=None, ignored=()):
    """Read a JSON config (path or dict) and translate its keys to bert4keras names.

    ``keep``: keys of ``CONFIG_IGNORED`` that the model class wants to see anyway
    (a class lists them in ``CONFIG_KEEP``, e.g. T5's ``tie_word_embeddings``);
    ``aliases`` / ``ignored``: a family's own key translations and file-only keys.
    """
    if isinstance(config_path, dict):
        raw = dict(config_path)
    else:
        if not os.path.exists(config_path):
            raise FileNotFoundError(f"config file not found: {config_path!r}")
        with open(config_path, encoding="utf-8") as f:
            raw = json.load(f)
    position_type = raw.get("position_embedding_type")
    if position_type not in (None, "absolute"):
        raise ValueError(
            f"position_embedding_type={position_type!r} is not supported (only 'absolute' "
            "position embeddings; RoFormer is model='roformer'); found it in the config"
        )
    if raw.get("rotary_value"):
        raise ValueError("rotary_value=True (rotary on values) is not supported; found it in config")
    ignored = (set(CONFIG_IGNORED) | set(ignored)) - set(keep)
    aliases = {**CONFIG_ALIASES, **(aliases or {})}
    raw = {k: v for k, v in raw.items()
           if k not in ignored and not k.startswith("_") and k != "rotary_value"}
    config = translate_keys(raw, aliases)
    return {k: v for k, v in config.items() if k not in ignored}


def _model_class(model):
    if isinstance(model, str):
        key = model.lower()
        if key not in MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {sorted(MODELS)}")
        return MODELS[key]
    if isinstance(model, type) and issubclass(model, Transformer):
        return model
    raise ValueError(f"model must be a name or a Transformer subclass, found {model!r}")


def build_transformer_model(config_path=None, checkpoint_path=None, model="bert",
                            application="encoder", return_keras_model=True, **kwargs):
    """Build a pretrained transformer in one call (bert4keras API).

    Args:
        config_path: JSON config path or dict (bert4keras/Google or Hugging Face keys).
        checkpoint_path: Google TF checkpoint prefix, Hugging Face directory /
            ``*.safetensors`` / ``pytorch_model.bin``, or a ``*.weights.h5``.
        model: ``bert``, ``roberta``, ``roformer``, ``roformer_v2``, ``gau_alpha``,
            ``t5`` / ``t5.1.1`` / ``mt5.1.1`` (``_encoder`` / ``_decoder``) or a
            :class:`Transformer` subclass.
        application: ``encoder``, ``lm`` (causal) or ``unilm`` (seq2seq mask); ``lm`` and
            ``unilm`` switch the MLM head on unless ``with_mlm=False`` is given.
        return_keras_model: return the ``keras.Model`` (else the builder object,
            with ``.model``).
        **kwargs: build options (bert4keras names: ``with_pool``, ``with_nsp``,
            ``with_mlm``, ``keep_tokens``, ``compound_tokens``, ``custom_position_ids``,
            ``hierarchical_position``, ``segment_vocab_size``, ``layer_norm_cond``, ...,
            ``prefix``, ``ignore_invalid_weights``) and config overrides. An option the
            model does not support, or an unknown keyword, raises an error naming it.
            Unknown keys of the config file are listed in a warning and not used.

    Example::

        model = build_transformer_model("bert_config.json", "bert_model.ckpt")
        hidden = model.predict([token_ids, segment_ids])
    """
    cls = _model_class(model)
    aliases = {**CONFIG_ALIASES, **cls.CONFIG_ALIASES}
    config = {}
    if config_path is not None:
        config = load_config(config_path, keep=getattr(cls, "CONFIG_KEEP", ()),
                             aliases=cls.CONFIG_ALIASES, ignored=cls.CONFIG_IGNORED)
        known = cls.option_names()
        unknown = sorted(k for k in config if k not in known)
        if unknown:
            where = "config" if isinstance(config_path, dict) else repr(config_path)
            warnings.warn(f"{cls.__name__} ignores unknown config entries {unknown} of "
                          f"{where} (not build options of this model)", stacklevel=2)
            config = {k: v for k, v in config.items() if k not in unknown}
    config.update(translate_keys(kwargs, aliases))
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
