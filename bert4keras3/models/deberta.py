"""DeBERTa-v2 and DeBERTa-v3 (``model="deberta_v2"`` / ``"deberta_v3"``, one architecture).

Layout (layer names):

* ``Embedding-Token`` (+ ``Embedding-Position`` when ``position_biased_input``)
  (+ ``Embedding-Segment`` / ``Embedding-Token-Segment`` when ``segment_vocab_size > 0``),
  ``Embedding-Mapping`` (no bias, when ``embedding_size != hidden_size``),
  ``Embedding-Norm``, ``Embedding-Masking`` (padding vectors set to 0), ``Embedding-Dropout``;
* ``Embedding-Relative-Position`` (the shared table, ``[2 * span, hidden]``) and
  ``Embedding-Relative-Position-Norm`` (with ``norm_rel_ebd="layer_norm"``), with
  ``relative_attention``;
* per block ``i``: ``Transformer-{i}-MultiHeadSelfAttention`` (a
  :class:`~bert4keras3.layers.DisentangledSelfAttention`) + ``-Dropout``, ``-Add``, ``-Norm``,
  then ``Transformer-{i}-FeedForward`` + ``-Dropout``, ``-Add``, ``-Norm`` (post-LN as BERT);
* after block 0, with ``conv_kernel_size``: ``Transformer-0-Conv`` (on the embedding output),
  ``Transformer-0-Conv-Add``, ``Transformer-0-Conv-Norm``, ``Transformer-0-Conv-Masking``;
* heads: ``Pooler`` / ``Pooler-Dropout`` / ``Pooler-Dense`` (DeBERTa's context pooler,
  ``pooler_dropout``, ``pooler_hidden_act``),
  ``MLM-Dense``, ``MLM-Norm``, tied ``Embedding-Token``, ``MLM-Bias``, ``MLM-Activation``.

Hugging Face configs load as they are (``relative_attention``, ``max_relative_positions``,
``position_buckets``, ``pos_att_type``, ``share_att_key``, ``norm_rel_ebd``,
``position_biased_input``, ``conv_kernel_size``, ...). DeBERTa-v3 checkpoints are
DeBERTa-v2-architecture files. There are no Google TF checkpoints of DeBERTa: the weight
table is Hugging Face's (``deberta.`` prefix optional).
"""
import os

import keras

from bert4keras3.backend import get_activation
from bert4keras3.layers import (
    Add,
    Dense,
    Embedding,
    FeedForward,
    FirstToken,
    LayerNormalization,
    PositionEmbedding,
)
from bert4keras3.layers.deberta import (
    DebertaConv,
    DisentangledSelfAttention,
    RelativeEmbeddingTable,
    _parse_pos_att_type,
)
from bert4keras3.layers.t5 import ZeroPaddedPositions
from bert4keras3.models.base import Transformer, register_model
from bert4keras3.models.bert import BERT

__all__ = ["DeBERTaV2"]


def _deberta_hf_names(mlm="cls"):
    """Keras weight path -> Hugging Face name (``{p}`` = ``deberta.`` or empty).

    ``mlm``: ``"cls"`` (``DebertaV2ForMaskedLM`` with ``legacy=True``:
    ``cls.predictions.*``) or ``"lm_predictions"`` (``legacy=False`` and Microsoft's
    released checkpoints: ``lm_predictions.lm_head.*``).
    """
    table = {
        "Embedding-Token/embeddings": "{p}embeddings.word_embeddings.weight",
        "Embedding-Position/embeddings": "{p}embeddings.position_embeddings.weight",
        "Embedding-Segment/embeddings": "{p}embeddings.token_type_embeddings.weight",
        "Embedding-Mapping/kernel": ("{p}embeddings.embed_proj.weight", "T"),
        "Embedding-Relative-Position/embeddings": "{p}encoder.rel_embeddings.weight",
        "Transformer-0-Conv/conv/kernel": ("{p}encoder.conv.conv.weight", "T"),
        "Transformer-0-Conv/conv/bias": "{p}encoder.conv.conv.bias",
        "Pooler-Dense/kernel": ("pooler.dense.weight", "T"),
        "Pooler-Dense/bias": "pooler.dense.bias",
    }
    norms = {
        "Embedding-Norm": "{p}embeddings.LayerNorm",
        "Embedding-Relative-Position-Norm": "{p}encoder.LayerNorm",
        "Transformer-0-Conv-Norm": "{p}encoder.conv.LayerNorm",
        "Transformer-{i}-MultiHeadSelfAttention-Norm":
            "{p}encoder.layer.{i}.attention.output.LayerNorm",
        "Transformer-{i}-FeedForward-Norm": "{p}encoder.layer.{i}.output.LayerNorm",
    }
    attention = "Transformer-{i}-MultiHeadSelfAttention/"
    block = "{p}encoder.layer.{i}."
    denses = {
        attention + "q_dense": block + "attention.self.query_proj",
        attention + "k_dense": block + "attention.self.key_proj",
        attention + "v_dense": block + "attention.self.value_proj",
        attention + "pos_q_dense": block + "attention.self.pos_query_proj",
        attention + "pos_k_dense": block + "attention.self.pos_key_proj",
        attention + "o_dense": block + "attention.output.dense",
        "Transformer-{i}-FeedForward/i0_dense": block + "intermediate.dense",
        "Transformer-{i}-FeedForward/o_dense": block + "output.dense",
    }
    if mlm == "cls":
        denses["MLM-Dense"] = "cls.predictions.transform.dense"
        norms["MLM-Norm"] = "cls.predictions.transform.LayerNorm"
        table["MLM-Bias/bias"] = "cls.predictions.bias"
    else:
        denses["MLM-Dense"] = "lm_predictions.lm_head.dense"
        norms["MLM-Norm"] = "lm_predictions.lm_head.LayerNorm"
        table["MLM-Bias/bias"] = "lm_predictions.lm_head.bias"
    for key, name in denses.items():
        table[key + "/kernel"] = (name + ".weight", "T")
        table[key + "/bias"] = name + ".bias"
    for key, name in norms.items():
        table[key + "/gamma"] = name + ".weight"
        table[key + "/beta"] = name + ".bias"
    return table


@register_model("deberta_v2", "deberta_v3", "deberta-v2", "deberta-v3")
class DeBERTaV2(BERT):
    """DeBERTa-v2 / v3 encoder: disentangled relative attention, post-LN blocks.

    Inputs as BERT: ``Input-Token`` (+ ``Input-Segment`` when ``segment_vocab_size > 0``;
    DeBERTa-v3 has none) (+ ``Input-Position`` with ``custom_position_ids``, only with
    ``position_biased_input``). Output: last hidden states (``with_pool``, ``with_mlm`` as
    in bert4keras).

    DeBERTa options (Hugging Face config keys): ``relative_attention`` (default False, as
    ``DebertaV2Config``), ``max_relative_positions`` (< 1: ``max_position``),
    ``position_buckets`` (log buckets; <= 0: none), ``pos_att_type`` (``"p2c|c2p"`` or a
    list), ``share_att_key``, ``norm_rel_ebd`` (``"none"`` or ``"layer_norm"``),
    ``position_biased_input`` (add absolute position embeddings), ``conv_kernel_size`` /
    ``conv_groups`` / ``conv_act`` (the convolution after the first block of v2 xlarge),
    ``pooler_hidden_act``, ``pooler_dropout``, ``legacy`` (MLM weight names: ``True``
    ``cls.predictions.*``, ``False`` ``lm_predictions.lm_head.*``, ``None`` = whichever
    the checkpoint has). ``application`` must be ``"encoder"``.

    Example::

        model = build_transformer_model("deberta-v3-base/config.json", "deberta-v3-base",
                                        model="deberta_v3")
        hidden = model.predict(token_ids)
    """

    GOOGLE_NAMES = {}
    HF_NAMES = _deberta_hf_names("cls")
    HF_NAMES_LM_PREDICTIONS = _deberta_hf_names("lm_predictions")
    GOOGLE_PREFIXES = ("",)
    HF_PREFIXES = ("deberta.", "")
    IGNORED = BERT.IGNORED + (r"^mask_predictions\.", r"^lm_predictions\.lm_head\.decoder\.")
    UNSUPPORTED_OPTIONS = {
        **Transformer.UNSUPPORTED_OPTIONS,
        "with_nsp": "DeBERTa has no next-sentence head (its checkpoints hold none)",
        "hierarchical_position": ("DeBERTa's absolute positions are not extended "
                                  "hierarchically (its relative attention covers long inputs)"),
        "shared_segment_embeddings": BERT.UNSUPPORTED_OPTIONS["shared_segment_embeddings"],
    }

    def __init__(self, segment_vocab_size=0, layer_norm_eps=1e-7, relative_attention=False,
                 max_relative_positions=-1, position_buckets=-1, pos_att_type=None,
                 share_att_key=False, norm_rel_ebd="none", position_biased_input=True,
                 conv_kernel_size=0, conv_groups=1, conv_act="tanh", pooler_hidden_act="gelu",
                 pooler_hidden_size=None, pooler_dropout=0.0, legacy=None, application="encoder",
                 **kwargs):
        if application != "encoder":
            raise ValueError(
                f"DeBERTa is built as an encoder only: expected application='encoder', found "
                f"{application!r} (its relative attention has no key/value cache for "
                "left-to-right decoding)")
        super().__init__(segment_vocab_size=segment_vocab_size, layer_norm_eps=layer_norm_eps,
                         application=application, **kwargs)
        if self.attention_key_size != self.attention_head_size:
            raise ValueError(
                "DeBERTa's queries, keys and values have one head size: expected "
                f"attention_key_size={self.attention_head_size}, found {self.attention_key_size}")
        if pooler_hidden_size not in (None, self.hidden_size):
            raise ValueError(f"pooler_hidden_size must equal hidden_size {self.hidden_size}; "
                             f"found {pooler_hidden_size}")
        norms = [n.strip() for n in str(norm_rel_ebd or "none").lower().split("|")]
        unknown = [n for n in norms if n not in ("none", "layer_norm")]
        if unknown:
            raise ValueError(f"norm_rel_ebd must be 'none' or 'layer_norm'; found "
                             f"{norm_rel_ebd!r}")
        if not _conv_size_ok(conv_kernel_size):
            raise ValueError(f"conv_kernel_size must be odd (or 0 for no convolution); found "
                             f"{conv_kernel_size}")
        if self.custom_position_ids and not position_biased_input:
            raise ValueError("custom_position_ids=True needs position_biased_input=True (the "
                             "position ids feed the absolute position embedding); found "
                             "position_biased_input=False")
        self.relative_attention = bool(relative_attention)
        if max_relative_positions is None or max_relative_positions < 1:
            max_relative_positions = self.max_position
        self.max_relative_positions = int(max_relative_positions)
        self.position_buckets = int(position_buckets if position_buckets is not None else -1)
        self.pos_att_type = list(_parse_pos_att_type(pos_att_type))
        self.share_att_key = bool(share_att_key)
        self.norm_rel_ebd = "layer_norm" in norms
        self.position_biased_input = bool(position_biased_input)
        self.conv_kernel_size = int(conv_kernel_size or 0)
        self.conv_groups = conv_groups
        self.conv_act = conv_act
        self.pooler_hidden_act = pooler_hidden_act
        self.pooler_dropout = float(pooler_dropout or 0.0)
        self.legacy = legacy
        #: entries of the relative embedding table (``2 * span``)
        self.span = self.position_buckets if self.position_buckets > 0 else \
            self.max_relative_positions
        self._rel_embeddings = None
        self._embedding_output = None

    # -- graph --------------------------------------------------------------
    def apply_embeddings(self, inputs):
        token_ids, segment_ids, position_ids = self.split_inputs(inputs)
        x = self.apply(
            token_ids, Embedding, input_dim=self.vocab_size, output_dim=self.embedding_size,
            embeddings_initializer=self.initializer, mask_zero=True, name="Embedding-Token",
        )
        if self.position_biased_input:
            x = self.apply(
                x if position_ids is None else [x, position_ids], PositionEmbedding,
                input_dim=self.max_position, output_dim=self.embedding_size, merge_mode="add",
                embeddings_initializer=self.initializer,
                custom_position_ids=bool(self.custom_position_ids), name="Embedding-Position",
            )
        if self.segment_vocab_size > 0:
            s = self.apply(
                segment_ids, Embedding, input_dim=self.segment_vocab_size,
                output_dim=self.embedding_size, embeddings_initializer=self.initializer,
                name="Embedding-Segment",
            )
            x = self.apply([x, s], Add, name="Embedding-Token-Segment")
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, Dense, units=self.hidden_size, use_bias=False,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        x = self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps, name="Embedding-Norm")
        x = self.apply([x, token_ids], ZeroPaddedPositions, name="Embedding-Masking")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        self._rel_embeddings = None
        self._embedding_output = x
        return x

    def relative_embeddings(self, x):
        """The (normalised) relative embedding table of the current pass, or None."""
        if not self.relative_attention:
            return None
        if self._rel_embeddings is None:
            rel = self.apply(
                x, RelativeEmbeddingTable, input_dim=2 * self.span, output_dim=self.hidden_size,
                embeddings_initializer=self.initializer, name="Embedding-Relative-Position",
            )
            if self.norm_rel_ebd:
                rel = self.apply(rel, LayerNormalization, epsilon=self.layer_norm_eps,
                                 name="Embedding-Relative-Position-Norm")
            self._rel_embeddings = rel
        return self._rel_embeddings

    def apply_main_layers(self, inputs, index):
        attention_name = f"Transformer-{index}-MultiHeadSelfAttention"
        feed_forward_name = f"Transformer-{index}-FeedForward"
        arguments = {"attention_mask": self.compute_attention_mask()}
        rel = self.relative_embeddings(inputs)
        if rel is not None:
            arguments["rel_embeddings"] = rel
        x = self.apply(
            inputs, DisentangledSelfAttention, arguments=arguments,
            heads=self.num_attention_heads, head_size=self.attention_head_size,
            out_dim=self.hidden_size, attention_dropout=self.attention_dropout_rate,
            relative_attention=self.relative_attention, pos_att_type=self.pos_att_type,
            position_buckets=self.position_buckets,
            max_relative_positions=self.max_relative_positions,
            share_att_key=self.share_att_key, position_dropout=self.dropout_rate,
            kernel_initializer=self.initializer, name=attention_name,
        )
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name=f"{attention_name}-Dropout")
        x = self.apply([inputs, x], Add, name=f"{attention_name}-Add")
        x = self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps,
                       name=f"{attention_name}-Norm")

        xi = x
        x = self.apply(
            x, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
            kernel_initializer=self.initializer, name=feed_forward_name,
        )
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name=f"{feed_forward_name}-Dropout")
        x = self.apply([xi, x], Add, name=f"{feed_forward_name}-Add")
        x = self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps,
                       name=f"{feed_forward_name}-Norm")
        if index == 0 and self.conv_kernel_size > 0:
            x = self.apply_conv(x)
        return x

    def apply_conv(self, x):
        """DeBERTa-v2's ConvLayer after the first block (on the embedding output)."""
        token_ids = self.pass_inputs["token"]
        c = self.apply(
            [self._embedding_output, token_ids], DebertaConv, filters=self.hidden_size,
            kernel_size=self.conv_kernel_size, groups=self.conv_groups, activation=self.conv_act,
            dropout=self.dropout_rate, kernel_initializer=self.initializer,
            name="Transformer-0-Conv",
        )
        x = self.apply([x, c], Add, name="Transformer-0-Conv-Add")
        x = self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps,
                       name="Transformer-0-Conv-Norm")
        return self.apply([x, token_ids], ZeroPaddedPositions, name="Transformer-0-Conv-Masking")

    def apply_pooler(self, x):
        """DeBERTa's context pooler: [CLS] -> ``Pooler-Dropout`` -> ``Pooler-Dense`` with
        ``pooler_hidden_act`` (``with_pool="tanh"`` etc. chooses another activation)."""
        act = self.with_pool if isinstance(self.with_pool, str) else self.pooler_hidden_act
        x = self.apply(x, FirstToken, name="Pooler")
        x = self.apply(x, keras.layers.Dropout, rate=self.pooler_dropout, name="Pooler-Dropout")
        return self.apply(x, Dense, units=self.hidden_size, activation=get_activation(act),
                          kernel_initializer=self.initializer, name="Pooler-Dense")

    def layer_norm(self, x, name):
        return self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps, name=name)

    # -- weights ------------------------------------------------------------
    def expand_names(self, fmt, prefix):
        """The name table; with ``legacy=False`` the MLM head is ``lm_predictions.lm_head.*``."""
        if fmt == "hf" and self.legacy is False:
            self.HF_NAMES = self.HF_NAMES_LM_PREDICTIONS  # instance attribute, for this call
            try:
                return super().expand_names(fmt, prefix)
            finally:
                del self.HF_NAMES
        return super().expand_names(fmt, prefix)

    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        """As :meth:`Transformer.load_weights_from_checkpoint`; with ``legacy=None`` the MLM
        weight names (``cls.predictions.*`` or ``lm_predictions.lm_head.*``) follow the file."""
        legacy = self.legacy
        if legacy is None and mapping is None and self.with_mlm and \
                isinstance(checkpoint, (str, os.PathLike)):
            from bert4keras3 import checkpoints

            if checkpoints.detect_format(checkpoint) == "hf":
                _, reader = checkpoints.open_checkpoint(checkpoint)
                if "lm_predictions.lm_head.bias" in reader.shapes:
                    self.legacy = False
        try:
            super().load_weights_from_checkpoint(checkpoint, mapping=mapping)
        finally:
            self.legacy = legacy


def _conv_size_ok(value):
    """``conv_kernel_size`` check: 0/None (no convolution) or an odd positive int."""
    value = int(value or 0)
    return value == 0 or (value > 0 and value % 2 == 1)
