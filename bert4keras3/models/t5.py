"""The T5 family (T5 v1.0, T5.1.1, mT5) in the bert4keras shape, with a cached decoder.

Names (``build_transformer_model(..., model=NAME)``):

* ``t5`` / ``t5.1.0``: ReLU feed-forward, output tied to the token embedding and
  scaled by ``d_model ** -0.5``;
* ``t5.1.1`` / ``mt5.1.1``: gated GELU (tanh approximation) feed-forward, untied
  ``lm_head`` (``Decoder-Output-LM``), no output scale;
* ``<name>_encoder`` / ``<name>_decoder``: the encoder or the decoder alone.

With ``return_keras_model=False`` the object has ``.encoder``
(``token_ids -> hidden``), ``.decoder`` (``[encoder_hidden, decoder_token_ids]
-> probs``), ``.model`` (``[encoder_token_ids, decoder_token_ids] -> probs``)
and ``.generate(...)`` (cached, compiled decoding; decoding starts from id 0).

The encoder output is zero at padding positions (token id 0); the decoder reads
its cross-attention padding mask from those zero vectors, so
``decoder.predict([encoder.predict(ids), decoder_ids])`` handles 0-padded batches.

Layer names (the keys of the checkpoint tables below):
``Encoder-Input-Token``, ``Input-Context`` (the decoder's encoder states),
``Decoder-Input-Token`` (float32 inputs, as in bert4keras),
``Embedding-Token`` (shared), ``Encoder-Embedding-Dropout``,
``Encoder-Embedding-Relative-Position``,
``Encoder-Transformer-{i}-MultiHeadSelfAttention`` (+ ``-Norm``, ``-Dropout``, ``-Add``),
``Encoder-Transformer-{i}-FeedForward`` (+ ``-Norm``, ...), ``Encoder-Output-Norm``,
``Encoder-Output-Dropout``, ``Decoder-Embedding-Dropout``,
``Decoder-Embedding-Relative-Position``, ``Decoder-Transformer-{i}-MultiHeadSelfAttention``,
``Decoder-Transformer-{i}-MultiHeadCrossAttention``, ``Decoder-Transformer-{i}-FeedForward``,
``Decoder-Output-Norm``, ``Decoder-Output-Dropout``, ``Decoder-Output-Scale`` (tied only),
``Decoder-Output-LM`` (untied only), ``Decoder-Output-LM-Activation``.

Build options: ``with_lm`` (``True`` = probabilities, ``"linear"`` = logits, ``False`` =
the decoder's final hidden states), ``keep_tokens``, ``compound_tokens``, ``prefix``,
``ignore_invalid_weights``; options of the BERT family raise an error.

Example::

    t5 = build_transformer_model("config.json", "model.ckpt-1000000",
                                 model="mt5.1.1", return_keras_model=False)
    new_ids = t5.generate(token_ids, max_new_tokens=32, end_id=1)
"""
import numpy as np

import keras
from keras import ops

from bert4keras3.generation import CachedDecoder, bucket_length
from bert4keras3.layers import Add, Embedding, LayerNormalization, MultiHeadAttention
from bert4keras3.layers.t5 import (
    RelativePositionEmbeddingT5,
    T5AttentionMask,
    T5FeedForward,
    ZeroPaddedPositions,
)
from bert4keras3.models.base import DecodingContext, Transformer, register_model

__all__ = ["T5", "T5CachedDecoder", "t5_weight_tables"]


# ---------------------------------------------------------------------------
# checkpoint name tables
# ---------------------------------------------------------------------------

def t5_weight_tables(gated):
    """Google (Mesh TensorFlow) and Hugging Face name tables of the T5 layout.

    Keys are Keras weight paths with ``{i}`` the layer index (encoder layers for
    ``Encoder-*`` keys, decoder layers for ``Decoder-*``); Google names use
    ``{i:03d}``, ``{norm}`` (``rms_norm`` in mT5, ``layer_norm`` in T5) and
    ``{final}`` (``rms_norm`` / ``final_layer_norm``). Values are a name or
    ``(name, "T")`` for a transposed variable.
    """
    g = {"Embedding-Token/embeddings": "shared/embedding"}
    h = {"Embedding-Token/embeddings": "shared.weight"}
    ff = [("i0_dense", "wi_0"), ("i1_dense", "wi_1")] if gated else [("i0_dense", "wi")]
    ff.append(("o_dense", "wo"))
    for stack in ("Encoder", "Decoder"):
        s = stack.lower()
        key = f"{stack}-Embedding-Relative-Position/embeddings"
        g[key] = (f"{s}/block_000/layer_000/SelfAttention/relative_attention_bias", "T")
        h[key] = f"{s}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        attentions = [("MultiHeadSelfAttention", "SelfAttention")]
        if stack == "Decoder":
            attentions.append(("MultiHeadCrossAttention", "EncDecAttention"))
        sublayers = [(name, hf) for name, hf in attentions] + [("FeedForward", "DenseReluDense")]
        for sub, (name, theirs) in enumerate(sublayers):
            gb = f"{s}/block_{{i:03d}}/layer_{sub:03d}"
            hb = f"{s}.block.{{i}}.layer.{sub}"
            layer = f"{stack}-Transformer-{{i}}-{name}"
            g[f"{layer}-Norm/gamma"] = gb + "/{norm}/scale"
            h[f"{layer}-Norm/gamma"] = hb + ".layer_norm.weight"
            if name == "FeedForward":
                for ours, mesh in ff:
                    g[f"{layer}/{ours}/kernel"] = f"{gb}/{theirs}/{mesh}/kernel"
                    h[f"{layer}/{ours}/kernel"] = (f"{hb}.{theirs}.{mesh}.weight", "T")
            else:
                for x in "qkvo":
                    g[f"{layer}/{x}_dense/kernel"] = f"{gb}/{theirs}/{x}"
                    h[f"{layer}/{x}_dense/kernel"] = (f"{hb}.{theirs}.{x}.weight", "T")
        g[f"{stack}-Output-Norm/gamma"] = s + "/{final}/scale"
        h[f"{stack}-Output-Norm/gamma"] = f"{s}.final_layer_norm.weight"
    g["Decoder-Output-LM/embeddings"] = ("decoder/logits/kernel", "T")
    h["Decoder-Output-LM/embeddings"] = "lm_head.weight"
    return g, h


#: Hugging Face config keys -> bert4keras keys
T5_CONFIG_ALIASES = {
    "d_model": "hidden_size",
    "d_ff": "intermediate_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "d_kv": "attention_head_size",
    "layer_norm_epsilon": "layer_norm_eps",
}
#: config keys that describe training or the file, not the network
T5_CONFIG_IGNORED = {
    "is_encoder_decoder", "decoder_start_token_id", "initializer_factor", "n_positions",
    "dense_act_fn", "is_gated_act", "tokenizer_class", "task_specific_params", "id2label",
    "label2id", "attention_scale", "is_dropout", "use_cache", "output_past", "is_decoder",
    "return_dict", "torchscript", "scale_decoder_outputs", "gradient_checkpointing",
    "classifier_dropout", "max_position", "segment_vocab_size", "problem_type",
    "finetuning_task", "add_cross_attention",
}


def _t5_activation(hidden_act, feed_forward_proj, gated_default):
    """Resolve the feed-forward activation (a list = gated) from either config style."""
    if feed_forward_proj is not None:  # Hugging Face spelling
        proj = str(feed_forward_proj)
        if proj.startswith("gated-"):
            act = proj[len("gated-"):]
            return ["gelu_tanh" if act == "gelu" else act, "linear"]
        return proj
    if hidden_act is None:
        return ["gelu_tanh", "linear"] if gated_default else "relu"
    if isinstance(hidden_act, (list, tuple)):
        return ["gelu_tanh" if a == "gelu" else a for a in hidden_act]
    if gated_default:  # bert4keras-style T5.1.1 / mT5 configs say "gelu"
        return ["gelu_tanh" if hidden_act == "gelu" else hidden_act, "linear"]
    return hidden_act


class T5(Transformer):
    """T5 encoder-decoder (bert4keras shape). Subclasses fix ``version`` and ``part``.

    ``version``: ``"t5.1.0"`` (ReLU, tied output with the ``d_model**-0.5`` scale)
    or ``"t5.1.1"`` / ``"mt5.1.1"`` (gated GELU-tanh, untied ``lm_head``);
    ``part``: ``"seq2seq"``, ``"encoder"`` or ``"decoder"``. Config entries
    ``feed_forward_proj``, ``hidden_act`` and ``tie_word_embeddings`` override
    the version's defaults.
    """

    version = "t5.1.0"
    part = "seq2seq"
    REQUIRED_KEYS = ("vocab_size",)
    CONFIG_KEEP = ("tie_word_embeddings",)
    CONFIG_ALIASES = T5_CONFIG_ALIASES
    CONFIG_IGNORED = frozenset(T5_CONFIG_IGNORED)
    UNSUPPORTED_OPTIONS = {
        **Transformer.UNSUPPORTED_OPTIONS,
        "with_pool": "T5 has no pooler",
        "with_mlm": "T5's output head is the decoder's LM head (with_lm)",
        "cross_position_bias": (
            "the released T5 / mT5 models (and transformers) have no relative position "
            "bias in cross-attention; leave it False"),
    }
    #: Google checkpoints: which norm naming to read (chosen by most matches)
    GOOGLE_PREFIXES = ("rms_norm", "layer_norm")
    HF_PREFIXES = ("",)
    VOCAB_WEIGHTS = ("Embedding-Token/embeddings", "Decoder-Output-LM/embeddings")
    OUTPUT_ACTIVATIONS = ("Decoder-Output-LM-Activation",)
    GOOGLE_NAMES, HF_NAMES = t5_weight_tables(gated=True)

    def __init__(self, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                 num_decoder_layers=None, feed_forward_proj=None, tie_word_embeddings=None,
                 with_lm=True, cross_position_bias=False, version=None, **kwargs):
        if version is not None and version != self.version:
            raise ValueError(
                f"version={version!r} does not match this class ({type(self).__name__} is "
                f"{self.version!r}); choose the version with model='t5' / 't5.1.1' / 'mt5.1.1'"
            )
        if with_lm not in (True, False) and not isinstance(with_lm, str):
            raise ValueError(f"with_lm must be True, False or an activation name; found "
                             f"{with_lm!r}")
        config = {T5_CONFIG_ALIASES.get(k, k): v for k, v in kwargs.items()}
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                               "intermediate_size") if config.get(k) is None]
        if missing:
            raise ValueError(
                f"T5 config is missing {missing}; give them in bert4keras style "
                "(hidden_size, num_hidden_layers, num_attention_heads, intermediate_size) "
                "or Hugging Face style (d_model, num_layers, num_heads, d_ff)"
            )
        application = config.pop("application", "encoder")
        if application != "encoder":
            raise ValueError(
                f"T5 models are encoder-decoders; application must be left at 'encoder', "
                f"found {application!r}"
            )
        gated_default = self.version != "t5.1.0"
        config["hidden_act"] = _t5_activation(
            config.get("hidden_act"), feed_forward_proj, gated_default
        )
        config.setdefault("layer_norm_eps", 1e-6)
        if config.get("attention_dropout_rate") is None:
            config["attention_dropout_rate"] = config.get("dropout_rate", 0.0)
        super().__init__(**config)
        self.with_lm = with_lm
        self.cross_position_bias = cross_position_bias
        self.num_decoder_layers = int(num_decoder_layers or self.num_hidden_layers)
        self.relative_attention_num_buckets = int(relative_attention_num_buckets)
        self.relative_attention_max_distance = int(relative_attention_max_distance)
        # T5 v1.0 ties the output to the token embedding; T5.1.1 / mT5 have an lm_head.
        # Only an explicit ``False`` unties v1.0 (an old-style T5.1.1 config loaded as
        # "t5"): transformers >= 5 writes ``true`` into every T5 / mT5 config, so
        # ``true`` cannot untie-proof a T5.1.1 / mT5 model and is not used for them.
        tied = self.version == "t5.1.0"
        self.tie_word_embeddings = tied and tie_word_embeddings is not False
        gated = isinstance(self.hidden_act, (list, tuple)) and len(self.hidden_act) == 2
        if isinstance(self.hidden_act, (list, tuple)) and len(self.hidden_act) > 2:
            raise ValueError(f"T5 supports at most 2 gated activations, found {self.hidden_act}")
        self.GOOGLE_NAMES, self.HF_NAMES = t5_weight_tables(gated)
        ignored = [r"^(encoder|decoder)\.embed_tokens\.weight$"]
        if self.tie_word_embeddings:
            ignored.append(r"^lm_head\.weight$")
        if self.part == "encoder":  # a full checkpoint loaded into one half
            ignored += [r"^decoder[./]", r"^lm_head\."]
        elif self.part == "decoder":
            ignored += [r"^encoder[./]"]
        self.IGNORED = Transformer.IGNORED + tuple(ignored)
        self.encoder = None
        self.decoder = None
        self._cached_decoder = None

    # -- building -----------------------------------------------------------
    def build(self):
        """Build ``.encoder``, ``.decoder`` and ``.model`` (as ``part`` asks).

        The joined model is flat (the encoder and decoder layers called in one
        graph), so it saves to ``.keras`` like any functional model; ``.encoder``
        and ``.decoder`` share its layers. Inputs are float32 as in bert4keras.
        """
        if self.built:
            return self.model
        self.check_options()
        seq = self.sequence_length
        names = {k: f"{self.name}_{k}" if self.name else k for k in ("Encoder", "Decoder")}
        dec_ids = keras.Input((seq,), dtype="float32",
                              name=self.prefixed("Decoder-Input-Token"))
        if self.part in ("encoder", "seq2seq"):
            enc_ids = keras.Input((seq,), dtype="float32",
                                  name=self.prefixed("Encoder-Input-Token"))
            hidden = self.apply_encoder(enc_ids)
            self.encoder = keras.Model(enc_ids, hidden, name=names["Encoder"])
        if self.part in ("decoder", "seq2seq"):
            context = keras.Input((None, self.hidden_size), name=self.prefixed("Input-Context"))
            self.decoder = keras.Model([context, dec_ids], self.apply_decoder(context, dec_ids),
                                       name=names["Decoder"])
        if self.part == "encoder":
            self.model = self.encoder
        elif self.part == "decoder":
            self.model = self.decoder
        else:
            probs = self.apply_decoder(hidden, dec_ids)
            self.model = keras.Model([enc_ids, dec_ids], probs, name=self.name or "T5")
        self.set_inputs(self.model.inputs)
        self.set_outputs(self.model.outputs)
        self.built = True
        return self.model

    def embed(self, token_ids, stack):
        x = self.apply(
            token_ids, Embedding, input_dim=self.vocab_size, output_dim=self.hidden_size,
            embeddings_initializer=self.initializer, mask_zero=True, name="Embedding-Token",
        )
        return self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                          name=f"{stack}-Embedding-Dropout")

    def norm(self, x, name):
        """T5's RMS norm (scale only, no mean subtraction)."""
        return self.apply(x, LayerNormalization, zero_mean=False, center=False,
                          epsilon=self.layer_norm_eps, name=name)

    def residual(self, x, stack, i, name, sublayer):
        """Pre-norm residual block: ``x + dropout(sublayer(norm(x)))``."""
        layer_name = f"{stack}-Transformer-{i}-{name}"
        h = self.norm(x, f"{layer_name}-Norm")
        h = sublayer(h, layer_name)
        h = self.apply(h, keras.layers.Dropout, rate=self.dropout_rate,
                       name=f"{layer_name}-Dropout")
        return self.apply([x, h], Add, name=f"{layer_name}-Add")

    def attention(self, inputs, name, mask, bias=None, context=None):
        arguments = {"attention_mask": mask}
        if context is not None:
            arguments["key"] = arguments["value"] = context
        if bias is not None:
            arguments["attention_bias"] = bias
        return self.apply(
            inputs, MultiHeadAttention, arguments=arguments, heads=self.num_attention_heads,
            head_size=self.attention_head_size, out_dim=self.hidden_size,
            key_size=self.attention_head_size, use_bias=False, attention_scale=False,
            attention_dropout=self.attention_dropout_rate,
            kernel_initializer=self.initializer, name=name,
        )

    def feed_forward(self, x, name):
        return self.apply(
            x, T5FeedForward, units=self.intermediate_size, activation=self.hidden_act,
            use_bias=False, dropout=self.dropout_rate, kernel_initializer=self.initializer,
            name=name,
        )

    def apply_encoder(self, token_ids):
        """Encoder layers on ``token_ids``; returns the hidden states (zero at padding)."""
        x = self.embed(token_ids, "Encoder")
        mask = self.apply(token_ids, T5AttentionMask, mode="padding",
                          name="Encoder-Attention-Mask")
        bias = self.apply(
            [x, x], RelativePositionEmbeddingT5, input_dim=self.relative_attention_num_buckets,
            output_dim=self.num_attention_heads, bidirectional=True,
            max_distance=self.relative_attention_max_distance,
            embeddings_initializer=self.initializer, name="Encoder-Embedding-Relative-Position",
        )
        for i in range(self.num_hidden_layers):
            x = self.residual(x, "Encoder", i, "MultiHeadSelfAttention",
                              lambda h, n: self.attention(h, n, mask, bias))
            x = self.residual(x, "Encoder", i, "FeedForward", self.feed_forward)
        x = self.norm(x, "Encoder-Output-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name="Encoder-Output-Dropout")
        return self.apply([x, token_ids], ZeroPaddedPositions, name="Encoder-Output-Masking")

    def apply_decoder(self, context, token_ids):
        """Decoder layers on ``[context, token_ids]``; returns next-token probabilities."""
        context_mask = self.apply(context, T5AttentionMask, mode="context",
                                  name="Decoder-Context-Mask")
        x = self.embed(token_ids, "Decoder")
        causal = self.apply(token_ids, T5AttentionMask, mode="causal",
                            name="Decoder-Attention-Mask")
        bias = self.apply(
            [x, x], RelativePositionEmbeddingT5, input_dim=self.relative_attention_num_buckets,
            output_dim=self.num_attention_heads, bidirectional=False,
            max_distance=self.relative_attention_max_distance,
            embeddings_initializer=self.initializer, name="Decoder-Embedding-Relative-Position",
        )
        for i in range(self.num_decoder_layers):
            x = self.residual(x, "Decoder", i, "MultiHeadSelfAttention",
                              lambda h, n: self.attention(h, n, causal, bias))
            x = self.residual(x, "Decoder", i, "MultiHeadCrossAttention",
                              lambda h, n: self.attention(h, n, context_mask, context=context))
            x = self.residual(x, "Decoder", i, "FeedForward", self.feed_forward)
        x = self.norm(x, "Decoder-Output-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name="Decoder-Output-Dropout")
        if not self.with_lm:  # bert4keras' with_lm=False: the final hidden states
            return x
        x = self.lm_logits(x)
        activation = "softmax" if self.with_lm is True else self.with_lm
        return self.apply(x, keras.layers.Activation, activation=activation,
                          name="Decoder-Output-LM-Activation")

    def lm_logits(self, x):
        """Vocabulary logits from the final decoder states (tied + scaled, or ``lm_head``)."""
        if self.tie_word_embeddings:
            x = self.apply(x, keras.layers.Rescaling, scale=self.hidden_size ** -0.5,
                           name="Decoder-Output-Scale")
            return self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        return self.apply(
            x, Embedding, arguments={"mode": "dense"}, input_dim=self.vocab_size,
            output_dim=self.hidden_size, embeddings_initializer=self.initializer,
            name="Decoder-Output-LM",
        )

    # -- weights ------------------------------------------------------------
    def expand_names(self, fmt, prefix):
        """Expand the name tables; for Google checkpoints ``prefix`` is the norm naming."""
        table = self.GOOGLE_NAMES if fmt == "google" else self.HF_NAMES
        if prefix == "rms_norm":
            norm, final = "rms_norm", "rms_norm"
        else:
            norm, final = "layer_norm", "final_layer_norm"
        counts = {"Encoder": self.num_hidden_layers, "Decoder": self.num_decoder_layers}
        expanded = {}
        for key, value in table.items():
            name, transform = value if isinstance(value, tuple) else (value, None)
            if "{i}" in key:
                indices = range(counts[key.split("-", 1)[0]])
            else:
                indices = [None]
            for i in indices:
                expanded[key.format(i=i)] = (name.format(i=i, norm=norm, final=final), transform)
        return expanded

    def google_save_prefix(self):
        """mT5 checkpoints name their norms ``rms_norm``; T5's ``layer_norm``."""
        return "rms_norm" if self.version == "mt5.1.1" else "layer_norm"

    # -- generation ---------------------------------------------------------
    def decode_graph(self, inputs, last=None):
        """Cached decoding runs the decoder's graph code on ``[context, token_ids]``."""
        context, token_ids = inputs
        return self.apply_decoder(context, token_ids)

    def cached_decoder(self):
        """The :class:`T5CachedDecoder` of this model (built once, compiled per bucket)."""
        if self.part != "seq2seq":
            raise ValueError(
                f"generate needs the encoder and the decoder; this is a T5 {self.part!r} "
                "model (build it with model='t5', 't5.1.1' or 'mt5.1.1')"
            )
        if not self.with_lm:
            raise ValueError("generate needs the LM head; this T5 was built with with_lm=False")
        if self._cached_decoder is None:
            self._cached_decoder = T5CachedDecoder(self)
        return self._cached_decoder


class T5CachedDecoder(CachedDecoder):
    """Cached T5 decoding for :func:`bert4keras3.generation.generate`.

    ``prefill`` runs the encoder, then the decoder's own graph code
    (:meth:`T5.apply_decoder` through :meth:`Transformer.cached_call`) on the start id 0
    at position 0; the cross-attention keys/values of every layer are projected once
    there and kept as read-only caches. Each ``step`` feeds one token at position
    ``index + 1``: its self-attention keys/values go into static ``[rows, L, heads, d_kv]``
    caches (``L`` = ``max_new_tokens`` rounded up to 16), it sees slots ``<=`` its
    position, with the causal relative bias of that position. Encoder inputs are padded
    with id 0 to a multiple of 16.
    """

    def __init__(self, t5):
        self.t5 = self.owner = t5
        self.vocab_size = t5.vocab_size

    def variables(self):
        return self.t5.model.weights

    def prepare(self, inputs, max_new_tokens):
        ids = np.asarray(inputs)
        if ids.ndim == 1:
            ids = ids[None]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                f"T5 generate expects encoder token ids [batch, seq] (int, 0-padded); "
                f"found an array of shape {ids.shape} and dtype {ids.dtype}"
            )
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(
                f"encoder token ids must be in [0, {self.vocab_size}); found values in "
                f"[{ids.min()}, {ids.max()}]"
            )
        rows, seq = ids.shape
        padded = np.zeros((rows, bucket_length(seq)), dtype="int32")
        padded[:, :seq] = ids
        return {"token_ids": padded}, bucket_length(max_new_tokens)

    def _decode(self, token_ids, position, length, context, cache=None, static=None):
        rows = ops.shape(token_ids)[0]
        position = ops.cast(position, "int32")
        slots = ops.arange(length, dtype="int32")
        ctx = DecodingContext(
            (slots <= position)[None, None, None, :], ops.full((rows, 1), position, "int32"),
            position, length, caches=cache, static=static, key_positions=slots,
            skip=self.t5.output_activation_names(),
        )
        logits = self.t5.cached_call([context, ops.cast(token_ids, "int32")[:, None]], ctx)
        return ops.cast(logits[:, 0], "float32"), ctx

    def prefill(self, arrays, key):
        hidden = self.t5.encoder(arrays["token_ids"], training=False)
        rows = ops.shape(hidden)[0]
        logits, ctx = self._decode(ops.zeros((rows,), "int32"), 0, key, hidden)
        return logits, ctx.caches, {"context": hidden, "cross": ctx.static}

    def step(self, cache, static, token_ids, index, key):
        logits, ctx = self._decode(token_ids, ops.cast(index, "int32") + 1, key,
                                   static["context"], cache, static["cross"])
        return logits, ctx.caches


def _register(version, names):
    for part, suffix in (("seq2seq", ""), ("encoder", "_encoder"), ("decoder", "_decoder")):
        title = {"t5.1.0": "T5", "t5.1.1": "T5_1_1", "mt5.1.1": "MT5_1_1"}[version]
        part_name = {"seq2seq": "", "encoder": "_Encoder", "decoder": "_Decoder"}[part]
        if version == "t5.1.0" and part == "seq2seq":
            cls = T5
        else:
            cls = type(title + part_name, (T5,), {
                "version": version, "part": part,
                "__doc__": f"T5 {part} of version {version} (see :class:`T5`).",
                "__module__": __name__,
            })
        globals()[cls.__name__] = cls
        __all__.append(cls.__name__)
        register_model(*[n + suffix for n in names])(cls)


_register("t5.1.0", ("t5", "t5.1.0"))
_register("t5.1.1", ("t5.1.1",))
_register("mt5.1.1", ("mt5.1.1",))
