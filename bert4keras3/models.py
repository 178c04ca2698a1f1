"""Transformer models in the bert4keras shape and ``build_transformer_model``.

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
from bert4keras3.layers import (
    AttentionMask,
    BiasAdd,
    Embedding,
    FeedForward,
    FirstToken,
    LayerNormalization,
    MultiHeadAttention,
    PositionEmbedding,
)

__all__ = [
    "Transformer",
    "BERT",
    "RoFormer",
    "RoFormerV2",
    "build_transformer_model",
]


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
# BERT
# ---------------------------------------------------------------------------

def _bert_tables(with_bias=True, with_norm=True, with_position=True):
    """Google and Hugging Face weight-name tables of the BERT layout."""
    g, h = {}, {}
    emb = [
        ("Embedding-Token/embeddings", "{p}embeddings/word_embeddings",
         "{p}embeddings.word_embeddings.weight"),
        ("Embedding-Segment/embeddings", "{p}embeddings/token_type_embeddings",
         "{p}embeddings.token_type_embeddings.weight"),
    ]
    if with_position:
        emb.append(("Embedding-Position/embeddings", "{p}embeddings/position_embeddings",
                    "{p}embeddings.position_embeddings.weight"))
    for key, gn, hn in emb:
        g[key], h[key] = gn, hn
    norms = [
        ("Embedding-Norm", "{p}embeddings/LayerNorm", "{p}embeddings.LayerNorm"),
        ("Transformer-{i}-MultiHeadSelfAttention-Norm",
         "{p}encoder/layer_{i}/attention/output/LayerNorm",
         "{p}encoder.layer.{i}.attention.output.LayerNorm"),
        ("Transformer-{i}-FeedForward-Norm", "{p}encoder/layer_{i}/output/LayerNorm",
         "{p}encoder.layer.{i}.output.LayerNorm"),
        ("MLM-Norm", "cls/predictions/transform/LayerNorm",
         "cls.predictions.transform.LayerNorm"),
    ]
    if with_norm:
        for key, gn, hn in norms:
            g[key + "/gamma"], h[key + "/gamma"] = gn + "/gamma", hn + ".weight"
            g[key + "/beta"], h[key + "/beta"] = gn + "/beta", hn + ".bias"
    denses = [
        ("Embedding-Mapping", "{p}encoder/embedding_hidden_mapping_in",
         "{p}embeddings_project"),
        ("Transformer-{i}-MultiHeadSelfAttention/q_dense",
         "{p}encoder/layer_{i}/attention/self/query",
         "{p}encoder.layer.{i}.attention.self.query"),
        ("Transformer-{i}-MultiHeadSelfAttention/k_dense",
         "{p}encoder/layer_{i}/attention/self/key",
         "{p}encoder.layer.{i}.attention.self.key"),
        ("Transformer-{i}-MultiHeadSelfAttention/v_dense",
         "{p}encoder/layer_{i}/attention/self/value",
         "{p}encoder.layer.{i}.attention.self.value"),
        ("Transformer-{i}-MultiHeadSelfAttention/o_dense",
         "{p}encoder/layer_{i}/attention/output/dense",
         "{p}encoder.layer.{i}.attention.output.dense"),
        ("Transformer-{i}-FeedForward/i0_dense", "{p}encoder/layer_{i}/intermediate/dense",
         "{p}encoder.layer.{i}.intermediate.dense"),
        ("Transformer-{i}-FeedForward/o_dense", "{p}encoder/layer_{i}/output/dense",
         "{p}encoder.layer.{i}.output.dense"),
        ("Pooler-Dense", "{p}pooler/dense", "{p}pooler.dense"),
        ("MLM-Dense", "cls/predictions/transform/dense", "cls.predictions.transform.dense"),
    ]
    for key, gn, hn in denses:
        g[key + "/kernel"], h[key + "/kernel"] = gn + "/kernel", (hn + ".weight", "T")
        if with_bias:
            g[key + "/bias"], h[key + "/bias"] = gn + "/bias", hn + ".bias"
    if with_bias:
        g["MLM-Bias/bias"], h["MLM-Bias/bias"] = "cls/predictions/output_bias", "cls.predictions.bias"
    return g, h


class BERT(Transformer):
    """BERT (and RoBERTa in BERT layout): absolute positions, post-LN blocks."""

    GOOGLE_NAMES, HF_NAMES = _bert_tables()
    GOOGLE_PREFIXES = ("bert/", "")
    HF_PREFIXES = ("", "bert.", "roberta.")
    #: the HF MLM decoder is tied to the word embeddings / output bias
    IGNORED = Transformer.IGNORED + (r"^cls\.predictions\.decoder\.(weight|bias)$",)
    use_bias = True
    rotary = False

    def __init__(self, max_position=512, segment_vocab_size=2, **kwargs):
        super().__init__(**kwargs)
        self.max_position = max_position
        self.segment_vocab_size = segment_vocab_size

    def get_inputs(self):
        inputs = [keras.Input((self.sequence_length,), dtype="int32", name="Input-Token")]
        if self.segment_vocab_size > 0:
            inputs.append(
                keras.Input((self.sequence_length,), dtype="int32", name="Input-Segment")
            )
        return inputs

    def embed_tokens_and_segments(self, inputs):
        """Token (+ segment) embeddings, shared by the BERT family."""
        x = self.apply(
            inputs[0], Embedding, input_dim=self.vocab_size, output_dim=self.embedding_size,
            embeddings_initializer=self.initializer, mask_zero=True, name="Embedding-Token",
        )
        if self.segment_vocab_size > 0:
            s = self.apply(
                inputs[1], Embedding, input_dim=self.segment_vocab_size,
                output_dim=self.embedding_size, embeddings_initializer=self.initializer,
                name="Embedding-Segment",
            )
            x = self.apply([x, s], keras.layers.Add, name="Embedding-Token-Segment")
        return x

    def apply_embeddings(self, inputs):
        x = self.embed_tokens_and_segments(inputs)
        if not self.rotary:
            x = self.apply(
                x, PositionEmbedding, input_dim=self.max_position,
                output_dim=self.embedding_size, embeddings_initializer=self.initializer,
                name="Embedding-Position",
            )
        x = self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps, name="Embedding-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                x, keras.layers.Dense, units=self.hidden_size,
                kernel_initializer=self.initializer, name="Embedding-Mapping",
            )
        return x

    def norm(self, x, name):
        """The post-norm used after each residual (standard LayerNorm here)."""
        return self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps, name=name)

    def apply_main_layers(self, inputs, index):
        attention_name = f"Transformer-{index}-MultiHeadSelfAttention"
        feed_forward_name = f"Transformer-{index}-FeedForward"
        mask = self.compute_attention_mask()

        x = self.apply(
            inputs, MultiHeadAttention, arguments={"attention_mask": mask},
            heads=self.num_attention_heads, head_size=self.attention_head_size,
            out_dim=self.hidden_size, key_size=self.attention_key_size,
            use_bias=self.use_bias, attention_dropout=self.attention_dropout_rate,
            normalization=self.attention_normalization,
            min_length=self.softmax_plus_min_length,
            rotary=self.rotary, kernel_initializer=self.initializer, name=attention_name,
        )
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name=f"{attention_name}-Dropout")
        x = self.apply([inputs, x], keras.layers.Add, name=f"{attention_name}-Add")
        x = self.norm(x, f"{attention_name}-Norm")

        xi = x
        x = self.apply(
            x, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
            use_bias=self.use_bias, kernel_initializer=self.initializer, name=feed_forward_name,
        )
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name=f"{feed_forward_name}-Dropout")
        x = self.apply([xi, x], keras.layers.Add, name=f"{feed_forward_name}-Add")
        return self.norm(x, f"{feed_forward_name}-Norm")

    def apply_mlm_head(self, x):
        """Transform + tied output embedding + bias + activation."""
        x = self.apply(
            x, keras.layers.Dense, units=self.embedding_size,
            activation=_activation(self.hidden_act),
            kernel_initializer=self.initializer, name="MLM-Dense",
        )
        x = self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps, name="MLM-Norm")
        x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        x = self.apply(x, BiasAdd, name="MLM-Bias")
        return x

    def apply_final_layers(self, inputs):
        outputs = [inputs]
        if self.with_pool:
            pool_act = self.with_pool if isinstance(self.with_pool, str) else "tanh"
            x = self.apply(inputs, FirstToken, name="Pooler")
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size, activation=pool_act,
                           kernel_initializer=self.initializer, name="Pooler-Dense")
            outputs.append(x)
        if self.with_mlm:
            x = self.apply_mlm_head(inputs)
            mlm_act = "softmax" if self.with_mlm is True else self.with_mlm
            x = self.apply(x, keras.layers.Activation, activation=mlm_act,
                           name="MLM-Activation")
            outputs.append(x)
        if len(outputs) == 1:
            return outputs[0]
        if len(outputs) == 2:
            return outputs[1]
        return outputs[1:]


class RoFormer(BERT):
    """RoFormer: BERT with rotary position embeddings in every attention layer."""

    GOOGLE_NAMES, HF_NAMES = _bert_tables(with_position=False)
    GOOGLE_PREFIXES = ("bert/", "roformer/", "")
    HF_PREFIXES = ("", "roformer.")
    rotary = True


class RoFormerV2(RoFormer):
    """RoFormerV2: no biases, parameter-free RMS post-norm, tied bias-free MLM head."""

    GOOGLE_NAMES, HF_NAMES = _bert_tables(with_bias=False, with_norm=False, with_position=False)
    use_bias = False

    def __init__(self, **kwargs):
        kwargs.setdefault("hidden_act", "relu")
        super().__init__(**kwargs)

    def norm(self, x, name):
        return self.apply(x, LayerNormalization, zero_mean=False, center=False, scale=False,
                          epsilon=self.layer_norm_eps, name=name)

    def apply_embeddings(self, inputs):
        x = self.embed_tokens_and_segments(inputs)
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        x = self.norm(x, "Embedding-Norm")
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size, use_bias=False,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    def apply_mlm_head(self, x):
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.embedding_size, use_bias=False,
                           kernel_initializer=self.initializer, name="Output-Mapping")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Output-MLM-Dropout")
        return self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")

    def apply_final_layers(self, inputs):
        if self.with_pool:
            raise ValueError("RoFormerV2 has no pooler; found with_pool=True")
        return super().apply_final_layers(inputs)


def _activation(name):
    from bert4keras3.backend import get_activation

    return get_activation(name)


# ---------------------------------------------------------------------------
# build_transformer_model
# ---------------------------------------------------------------------------

MODELS = {
    "bert": BERT,
    "roberta": BERT,
    "roformer": RoFormer,
    "roformer_v2": RoFormerV2,
}

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


def load_config(config_path):
    """Read a JSON config (path or dict) and translate its keys to bert4keras names."""
    if isinstance(config_path, dict):
        raw = dict(config_path)
    else:
        if not os.path.exists(config_path):
            raise FileNotFoundError(f"config file not found: {config_path!r}")
        with open(config_path, encoding="utf-8") as f:
            raw = json.load(f)
    config = {}
    for key, value in raw.items():
        if key in CONFIG_IGNORED or key.startswith("_"):
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
    config = load_config(config_path) if config_path is not None else {}
    config.update(kwargs)
    if isinstance(model, str):
        key = model.lower()
        if key not in MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {sorted(MODELS)}")
        cls = MODELS[key]
    elif isinstance(model, type) and issubclass(model, Transformer):
        cls = model
    else:
        raise ValueError(f"model must be a name or a Transformer subclass, found {model!r}")
    missing = [k for k in getattr(cls, "REQUIRED_KEYS", REQUIRED_KEYS) if k not in config]
    if missing:
        raise ValueError(f"config is missing required key(s) {missing} for model {model!r}")
    config["application"] = application
    transformer = cls(**config)
    transformer.build()
    if checkpoint_path is not None:
        transformer.load_weights_from_checkpoint(checkpoint_path)
    return transformer.model if return_keras_model else transformer
