"""The GPT family: OpenAI GPT (``gpt``), GPT-2 (``gpt2``) and GPT2-ML (``gpt2_ml``).

Every model of the family is a causal language model (as in bert4keras the mask is causal
whatever ``application`` says, except ``application="unilm"`` for ``gpt`` with segments)
whose output is the LM probabilities over the vocabulary through the tied token embedding.
``with_mlm="linear"`` (or bert4keras' ``final_activation="linear"``) gives logits,
``with_mlm=False`` the last hidden states (GPT-2: after its final norm). Token id 0 is
padding.

Layer names (the keys of the checkpoint tables below):

* ``gpt``: ``Embedding-Token`` (+ ``Embedding-Segment``, or the token embedding itself
  with ``shared_segment_embeddings=True``, added by ``Embedding-Token-Segment``),
  ``Embedding-Position``, ``Embedding-Dropout`` (no embedding norm); post-LN blocks as
  BERT (``Transformer-{i}-MultiHeadSelfAttention`` -> ``-Dropout`` -> ``-Add`` ->
  ``-Norm``, ``Transformer-{i}-FeedForward`` -> ... -> ``-Norm``);
* ``gpt2``: ``Embedding-Token``, ``Embedding-Position``, ``Embedding-Dropout``; pre-LN
  blocks (``...-MultiHeadSelfAttention-Norm`` -> attention -> ``-Dropout`` -> ``-Add``,
  ``...-FeedForward-Norm`` -> feed-forward -> ``-Dropout`` -> ``-Add``); ``Output-Norm``,
  ``Output-Dropout``;
* ``gpt2_ml``: ``Embedding-Token``, ``Embedding-Position``, ``Embedding-Norm``; blocks
  attention -> ``-Dropout`` -> ``-Add``, ``Transformer-{i}-FeedForward-Norm-0`` ->
  feed-forward -> ``-Dropout`` -> ``-Add`` (to the attention sum) ->
  ``Transformer-{i}-FeedForward-Norm-1``;
* then ``Embedding-Token`` (dense mode, tied LM head) and ``LM-Activation``.

Configs: bert4keras / Google keys, Hugging Face keys (``n_embd``, ``n_layer``, ``n_head``,
``n_positions``, ``n_inner``, ``layer_norm_epsilon``, ``activation_function`` / ``afn``,
``resid_pdrop``, ``attn_pdrop``) or OpenAI's GPT-2 ``hparams.json`` (``n_vocab``, ``n_ctx``,
``n_embd``, ``n_head``, ``n_layer``); ``intermediate_size`` defaults to ``4 * hidden_size``.

Checkpoints: bert4keras' GPT names (``gpt/...``), OpenAI's released GPT-2 TF checkpoint
(``model/wte``, ``model/h{i}/attn/c_attn/w`` fused ``[1, n, 3n]``, ...), GPT2-ML's
(``newslm/...``) and Hugging Face ``OpenAIGPTLMHeadModel`` / ``GPT2LMHeadModel`` files.

Example::

    gpt2 = build_transformer_model("hparams.json", "model.ckpt", model="gpt2",
                                   return_keras_model=False)
    new_ids = gpt2.generate(prompt_ids, max_new_tokens=20)
"""
from types import SimpleNamespace

import keras

from bert4keras3.checkpoints import Part
from bert4keras3.layers import Add, Embedding, FeedForward, PositionEmbedding
from bert4keras3.models.base import Transformer, register_model
from bert4keras3.models.bert import BERT

__all__ = ["GPT", "GPT2", "GPT2_ML", "SegmentAdd"]


@keras.saving.register_keras_serializable(package="bert4keras3")
class SegmentAdd(Add):
    """Sum of token and segment embeddings whose Keras mask is the token embedding's.

    Used when segments are looked up in the token embedding
    (``shared_segment_embeddings=True``): that lookup would mask segment 0 as padding.
    """

    def compute_mask(self, inputs, mask=None):
        return mask[0] if isinstance(mask, (list, tuple)) else mask


# ---------------------------------------------------------------------------
# name tables
# ---------------------------------------------------------------------------

_ATT = "Transformer-{i}-MultiHeadSelfAttention"
_FF = "Transformer-{i}-FeedForward"
_QKV = ("q_dense", "k_dense", "v_dense")


def _norm(g, key, name, gamma="gamma", beta="beta"):
    g[key + "/gamma"], g[key + "/beta"] = f"{name}/{gamma}", f"{name}/{beta}"


def _hf_norm(h, key, name):
    h[key + "/gamma"], h[key + "/beta"] = name + ".weight", name + ".bias"


def _hf_conv1d_blocks(h, fused=True):
    """Hugging Face ``Conv1D`` (kernel ``[in, out]``) names of the GPT / GPT-2 blocks."""
    layer = "{p}h.{i}."
    for k, sub in enumerate(_QKV):
        h[f"{_ATT}/{sub}/kernel"] = (layer + "attn.c_attn.weight", Part(k, 3))
        h[f"{_ATT}/{sub}/bias"] = (layer + "attn.c_attn.bias", Part(k, 3))
    for key, name in ((f"{_ATT}/o_dense", "attn.c_proj"), (f"{_FF}/i0_dense", "mlp.c_fc"),
                      (f"{_FF}/o_dense", "mlp.c_proj")):
        h[key + "/kernel"], h[key + "/bias"] = layer + name + ".weight", layer + name + ".bias"


def _gpt_tables():
    """bert4keras' GPT names (BERT's with ``gpt/`` and ``transformer``) and HF OpenAI GPT."""
    g = {
        "Embedding-Token/embeddings": "{p}embeddings/word_embeddings",
        "Embedding-Segment/embeddings": "{p}embeddings/token_type_embeddings",
        "Embedding-Position/embeddings": "{p}embeddings/position_embeddings",
    }
    layer = "{p}transformer/layer_{i}/"
    denses = [(f"{_ATT}/{sub}", f"{layer}attention/self/{name}")
              for sub, name in zip(_QKV, ("query", "key", "value"))]
    denses += [(f"{_ATT}/o_dense", layer + "attention/output/dense"),
               (f"{_FF}/i0_dense", layer + "intermediate/dense"),
               (f"{_FF}/o_dense", layer + "output/dense")]
    for key, name in denses:
        g[key + "/kernel"], g[key + "/bias"] = name + "/kernel", name + "/bias"
    _norm(g, f"{_ATT}-Norm", layer + "attention/output/LayerNorm")
    _norm(g, f"{_FF}-Norm", layer + "output/LayerNorm")
    h = {"Embedding-Token/embeddings": "{p}tokens_embed.weight",
         "Embedding-Position/embeddings": "{p}positions_embed.weight"}
    _hf_conv1d_blocks(h)
    _hf_norm(h, f"{_ATT}-Norm", "{p}h.{i}.ln_1")
    _hf_norm(h, f"{_FF}-Norm", "{p}h.{i}.ln_2")
    return g, h


def _gpt2_tables():
    """OpenAI's released GPT-2 TF names (``model/...``) and HF ``GPT2LMHeadModel``."""
    g = {"Embedding-Token/embeddings": "{p}wte", "Embedding-Position/embeddings": "{p}wpe"}
    layer = "{p}h{i}/"
    squeezed = Part(0, 1, squeeze=(0,))  # Conv1D kernels are stored as [1, in, out]
    for k, sub in enumerate(_QKV):
        g[f"{_ATT}/{sub}/kernel"] = (layer + "attn/c_attn/w", Part(k, 3, squeeze=(0,)))
        g[f"{_ATT}/{sub}/bias"] = (layer + "attn/c_attn/b", Part(k, 3))
    for key, name in ((f"{_ATT}/o_dense", "attn/c_proj"), (f"{_FF}/i0_dense", "mlp/c_fc"),
                      (f"{_FF}/o_dense", "mlp/c_proj")):
        g[key + "/kernel"] = (layer + name + "/w", squeezed)
        g[key + "/bias"] = layer + name + "/b"
    _norm(g, f"{_ATT}-Norm", layer + "ln_1", "g", "b")
    _norm(g, f"{_FF}-Norm", layer + "ln_2", "g", "b")
    _norm(g, "Output-Norm", "{p}ln_f", "g", "b")
    h = {"Embedding-Token/embeddings": "{p}wte.weight",
         "Embedding-Position/embeddings": "{p}wpe.weight"}
    _hf_conv1d_blocks(h)
    _hf_norm(h, f"{_ATT}-Norm", "{p}h.{i}.ln_1")
    _hf_norm(h, f"{_FF}-Norm", "{p}h.{i}.ln_2")
    _hf_norm(h, "Output-Norm", "{p}ln_f")
    return g, h


def _bert4keras_gpt2_table():
    """bert4keras' converted GPT-2 names (e.g. CPM-LM): its GPT names with the pre-norms
    under ``input/LayerNorm`` and the final norm ``gpt/output/LayerNorm``."""
    g = {k: v for k, v in _gpt_tables()[0].items() if "Segment" not in k}
    layer = "{p}transformer/layer_{i}/"
    _norm(g, f"{_ATT}-Norm", layer + "attention/input/LayerNorm")
    _norm(g, f"{_FF}-Norm", layer + "input/LayerNorm")
    _norm(g, "Output-Norm", "{p}output/LayerNorm")
    return g


def _gpt2_ml_table():
    """GPT2-ML's (Grover's) TF names, ``newslm/...``."""
    g = {"Embedding-Token/embeddings": "{p}embeddings/word_embed",
         "Embedding-Position/embeddings": "{p}embeddings/pos_embed"}
    _norm(g, "Embedding-Norm", "{p}embeddings/LayerNorm_embed_norm")
    layer = "{p}layer{i:02d}/"
    denses = [(f"{_ATT}/{sub}", layer + name) for sub, name in
              zip(_QKV + ("o_dense",),
                  ("query_layer", "key_layer", "value_layer", "context_projection_layer"))]
    denses += [(f"{_FF}/i0_dense", layer + "intermediate"), (f"{_FF}/o_dense", layer + "output")]
    for key, name in denses:
        g[key + "/kernel"], g[key + "/bias"] = name + "/kernel", name + "/bias"
    _norm(g, f"{_FF}-Norm-0", layer + "LayerNorm_mlp_ln0")
    _norm(g, f"{_FF}-Norm-1", layer + "LayerNorm_mlp_ln1")
    return g


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------

#: OpenAI / Hugging Face config keys -> bert4keras keys
_GPT_ALIASES = {
    "n_vocab": "vocab_size", "n_ctx": "max_position", "n_positions": "max_position",
    "n_embd": "hidden_size", "n_head": "num_attention_heads", "n_layer": "num_hidden_layers",
    "n_inner": "intermediate_size", "layer_norm_epsilon": "layer_norm_eps",
    "activation_function": "hidden_act", "resid_pdrop": "dropout_rate",
    "attn_pdrop": "attention_dropout_rate",
}
#: Hugging Face config keys without a bert4keras meaning (heads of other tasks, dropout
#: of the embeddings, which uses ``dropout_rate`` here as in bert4keras)
_GPT_IGNORED = frozenset({
    "summary_type", "summary_use_proj", "summary_activation", "summary_proj_to_labels",
    "summary_first_dropout", "embd_pdrop", "reorder_and_upcast_attn", "n_special",
    "predict_special_tokens",
})


@register_model("gpt")
class GPT(BERT):
    """OpenAI GPT as bert4keras' ``GPT``: token + segment + position embeddings without a
    norm, BERT's post-LN blocks under a causal mask, the tied LM head.

    Build options: ``segment_vocab_size`` (default 2 as bert4keras; 0 with a Hugging Face
    config, whose ``OpenAIGPTLMHeadModel`` has no segment table), ``shared_segment_embeddings``
    (segments looked up in the token embedding, as Hugging Face does with
    ``token_type_ids``; then ``segment_vocab_size`` defaults to 2), ``max_position``, ``custom_position_ids``,
    ``hierarchical_position``, ``final_activation`` (bert4keras; default ``"softmax"``),
    ``with_mlm`` (``True`` = ``final_activation``, ``"linear"`` = logits, ``False`` = hidden
    states), ``keep_tokens``, ``compound_tokens``, ``layer_norm_cond``.
    """

    GOOGLE_NAMES, HF_NAMES = _gpt_tables()
    GOOGLE_PREFIXES = ("gpt/",)
    HF_PREFIXES = ("transformer.", "")
    CONFIG_ALIASES = _GPT_ALIASES
    CONFIG_IGNORED = _GPT_IGNORED
    REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    #: the Hugging Face LM head is the tied token embedding; old files keep mask buffers
    IGNORED = Transformer.IGNORED + (r"^lm_head\.weight$", r"\.attn\.(masked_)?bias$")
    VOCAB_WEIGHTS = ("Embedding-Token/embeddings",)
    OUTPUT_ACTIVATIONS = ("LM-Activation",)
    UNSUPPORTED_OPTIONS = {
        **{k: v for k, v in BERT.UNSUPPORTED_OPTIONS.items()
           if k != "shared_segment_embeddings"},
        "with_pool": "the GPT family has no pooler (bert4keras' GPT has no with_pool)",
        "with_nsp": "the GPT family has no NSP head",
    }
    default_segment_vocab_size = 2
    default_layer_norm_eps = 1e-12

    def __init__(self, hidden_size, intermediate_size=None, final_activation="softmax",
                 application="lm", afn=None, scale_attn_weights=True,
                 scale_attn_by_inverse_layer_idx=False, segment_vocab_size=None, **kwargs):
        if application == "encoder":
            application = "lm"  # bert4keras: the GPT family is always causal
        if afn is not None:  # Hugging Face OpenAI GPT: "gelu" there is the tanh form
            kwargs["hidden_act"] = {"gelu": "gelu_new"}.get(afn, afn)
        for key, value, wanted in (("scale_attn_weights", scale_attn_weights, True),
                                   ("scale_attn_by_inverse_layer_idx",
                                    scale_attn_by_inverse_layer_idx, False)):
            if bool(value) != wanted:
                raise ValueError(f"{type(self).__name__} supports {key}={wanted} only (what "
                                 f"the released models use); found {key}={value!r}")
        if segment_vocab_size is None:
            segment_vocab_size = self.default_segment_vocab_size
            if afn is not None and not kwargs.get("shared_segment_embeddings"):
                segment_vocab_size = 0  # a Hugging Face config: no segment table
        if kwargs.get("layer_norm_eps") is None:
            kwargs["layer_norm_eps"] = self.default_layer_norm_eps
        embedding_size = kwargs.get("embedding_size")
        if embedding_size not in (None, hidden_size):
            raise ValueError(
                f"{type(self).__name__} ties its LM head to the token embedding, so "
                f"embedding_size must equal hidden_size ({hidden_size}); found {embedding_size}"
            )
        super().__init__(hidden_size=hidden_size,
                         intermediate_size=intermediate_size or 4 * hidden_size,
                         application=application, segment_vocab_size=segment_vocab_size,
                         **kwargs)
        self.final_activation = final_activation

    def embed_tokens_and_segments(self, token_ids, segment_ids=None):
        x = self.apply(
            token_ids, Embedding, input_dim=self.vocab_size, output_dim=self.embedding_size,
            embeddings_initializer=self.initializer, mask_zero=True, name="Embedding-Token",
        )
        if self.segment_vocab_size > 0:
            if self.shared_segment_embeddings:
                s = self.apply(segment_ids, Embedding, name="Embedding-Token")
                return self.apply([x, s], SegmentAdd, name="Embedding-Token-Segment")
            s = self.apply(
                segment_ids, Embedding, input_dim=self.segment_vocab_size,
                output_dim=self.embedding_size, embeddings_initializer=self.initializer,
                name="Embedding-Segment",
            )
            x = self.apply([x, s], Add, name="Embedding-Token-Segment")
        return x

    def embed_positions(self, x, position_ids):
        options = {}
        if self.hierarchical_position:
            options["hierarchical"] = self.hierarchical_position
        return self.apply(
            x if position_ids is None else [x, position_ids], PositionEmbedding,
            input_dim=self.max_position, output_dim=self.embedding_size, merge_mode="add",
            embeddings_initializer=self.initializer,
            custom_position_ids=bool(self.custom_position_ids), name="Embedding-Position",
            **options,
        )

    def apply_embeddings(self, inputs):
        """Token (+ segment) + position embeddings, dropout; no norm."""
        token_ids, segment_ids, position_ids = self.split_inputs(inputs)
        x = self.embed_tokens_and_segments(token_ids, segment_ids)
        x = self.embed_positions(x, position_ids)
        return self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                          name="Embedding-Dropout")

    def apply_lm_head(self, x):
        """The tied LM head: ``Embedding-Token`` in dense mode, then ``LM-Activation``."""
        if not self.with_mlm:
            return x
        x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        activation = self.with_mlm if isinstance(self.with_mlm, str) else self.final_activation
        return self.apply(x, keras.layers.Activation, activation=activation,
                          name="LM-Activation")

    def apply_final_layers(self, inputs):
        return self.apply_lm_head(inputs)


@register_model("gpt2")
class GPT2(GPT):
    """OpenAI GPT-2: token + position embeddings, pre-LN blocks, ``Output-Norm``, tied LM head.

    Takes ``Input-Token`` only (plus ``Input-Position`` with ``custom_position_ids``).
    Defaults as released: ``hidden_act="gelu_new"`` (tanh GELU), ``layer_norm_eps=1e-5``,
    ``intermediate_size = 4 * hidden_size``.
    """

    GOOGLE_NAMES, HF_NAMES = _gpt2_tables()
    #: ``gpt/``: bert4keras' converted names (its GPT2 class), read and written with
    #: ``GOOGLE_TABLES["gpt/"]``; the writer uses OpenAI's (``model/``)
    GOOGLE_PREFIXES = ("model/", "gpt/", "")
    GOOGLE_TABLES = {"gpt/": _bert4keras_gpt2_table()}
    UNSUPPORTED_OPTIONS = {
        **GPT.UNSUPPORTED_OPTIONS,
        "segment_vocab_size": "GPT-2 takes no segment ids; leave segment_vocab_size at 0",
        "shared_segment_embeddings": "GPT-2 takes no segment ids",
    }
    default_segment_vocab_size = 0
    default_layer_norm_eps = 1e-5

    def __init__(self, hidden_act="gelu_new", **kwargs):
        super().__init__(hidden_act=hidden_act, **kwargs)

    def expand_names(self, fmt, prefix):
        """The table of ``prefix`` (``GOOGLE_TABLES``) expanded, else the default one."""
        if fmt == "google" and prefix in self.GOOGLE_TABLES:
            view = SimpleNamespace(GOOGLE_NAMES=self.GOOGLE_TABLES[prefix],
                                   num_hidden_layers=self.num_hidden_layers)
            return Transformer.expand_names(view, fmt, prefix)
        return super().expand_names(fmt, prefix)

    def apply_main_layers(self, inputs, index):
        """Norm -> attention -> dropout -> add; norm -> feed-forward -> dropout -> add."""
        attention_name = f"Transformer-{index}-MultiHeadSelfAttention"
        feed_forward_name = f"Transformer-{index}-FeedForward"
        x = self.layer_norm(inputs, f"{attention_name}-Norm")
        x = self.self_attention(x, attention_name)
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name=f"{attention_name}-Dropout")
        xi = self.apply([inputs, x], Add, name=f"{attention_name}-Add")
        x = self.layer_norm(xi, f"{feed_forward_name}-Norm")
        x = self.feed_forward(x, feed_forward_name)
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name=f"{feed_forward_name}-Dropout")
        return self.apply([xi, x], Add, name=f"{feed_forward_name}-Add")

    def feed_forward(self, x, name):
        return self.apply(
            x, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
            kernel_initializer=self.initializer, name=name,
        )

    def apply_final_layers(self, inputs):
        x = self.layer_norm(inputs, "Output-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Output-Dropout")
        return self.apply_lm_head(x)


@register_model("gpt2_ml", "gpt2-ml")
class GPT2_ML(GPT2):
    """GPT2-ML (https://github.com/imcaspar/gpt2-ml, Grover's code): token + position
    embeddings with ``Embedding-Norm``; per block attention -> add, then
    ``FeedForward-Norm-0`` -> feed-forward -> add (to the attention sum) ->
    ``FeedForward-Norm-1``; no final norm; tied LM head.

    Defaults as released: ``hidden_act="gelu"`` (erf form, Grover's ``gelu``),
    ``layer_norm_eps=1e-5``.
    """

    GOOGLE_NAMES = _gpt2_ml_table()
    HF_NAMES = {}
    GOOGLE_PREFIXES = ("newslm/",)
    GOOGLE_TABLES = {}
    HF_PREFIXES = ("",)

    def __init__(self, hidden_act="gelu", **kwargs):
        super().__init__(hidden_act=hidden_act, **kwargs)

    def apply_embeddings(self, inputs):
        token_ids, _, position_ids = self.split_inputs(inputs)
        x = self.embed_tokens_and_segments(token_ids)
        x = self.embed_positions(x, position_ids)
        x = self.layer_norm(x, "Embedding-Norm")
        return self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                          name="Embedding-Dropout")

    def apply_main_layers(self, inputs, index):
        attention_name = f"Transformer-{index}-MultiHeadSelfAttention"
        feed_forward_name = f"Transformer-{index}-FeedForward"
        x = self.self_attention(inputs, attention_name)
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name=f"{attention_name}-Dropout")
        xi = self.apply([inputs, x], Add, name=f"{attention_name}-Add")
        x = self.layer_norm(xi, f"{feed_forward_name}-Norm-0")
        x = self.feed_forward(x, feed_forward_name)
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name=f"{feed_forward_name}-Dropout")
        x = self.apply([xi, x], Add, name=f"{feed_forward_name}-Add")
        return self.layer_norm(x, f"{feed_forward_name}-Norm-1")

    def apply_final_layers(self, inputs):
        return self.apply_lm_head(inputs)
