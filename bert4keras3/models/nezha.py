"""NEZHA (Huawei, https://arxiv.org/abs/1909.00204) as bert4keras builds it.

NEZHA is BERT without absolute position embeddings: every self-attention layer uses the
*functional* (fixed sinusoidal, never trained) relative position embeddings of Shaw et al.
For query ``i`` and key ``j`` with ``r_ij`` row ``clip(j - i, -m, m) + m`` of the table
of :func:`bert4keras3.layers.relative_position_table` (``m = max_relative_position``):

* ``scores_ij = (q_i . k_j + q_i . r_ij) / sqrt(d)``;
* ``out_i = sum_j a_ij (v_j + r_ij)`` (then ``o_dense``).

The table has ``2m + 1`` rows of ``d`` (the head size) columns; row ``r`` holds the
sinusoid of ``r`` itself, sines in the even columns and cosines in the odd ones
(``sin(r / 10000**(2t/d))`` at ``2t``, ``cos`` at ``2t + 1``), exactly NEZHA's
``_generate_relative_positions_embeddings`` and bert4keras' ``Sinusoidal`` initializer of
its ``RelativePositionEmbedding``. No weight holds it (bert4keras keeps it as the
non-trainable ``Embedding-Relative-Position``; here :class:`MultiHeadAttention` computes it
from positions, which also serves cached decoding).

Layer names are BERT's without ``Embedding-Position``. Checkpoints: Google/TF names under
``bert/`` (the released NEZHA files; no position embeddings), Hugging Face names of
transformers 4's ``NezhaModel`` (``nezha.`` prefix, as BERT's).

Config: the released ``bert_config.json`` keys, with ``max_relative_position`` (default
64, as the released NEZHA configs and transformers' ``NezhaConfig``) and
``use_relative_position`` (must be true). ``max_position_embeddings`` is accepted and
unused (nothing bounds the length).
"""
import keras

from bert4keras3.models.base import register_model
from bert4keras3.models.bert import BERT, _bert_tables

__all__ = ["NEZHA"]


@register_model("nezha")
class NEZHA(BERT):
    """NEZHA: BERT with functional relative position embeddings in every attention layer.

    Build options as :class:`BERT` (``with_pool``, ``with_nsp``, ``with_mlm``,
    ``keep_tokens``, ``compound_tokens``, ``segment_vocab_size``, ``layer_norm_cond``,
    ``application="lm"`` / ``"unilm"``, ...), plus ``max_relative_position``. With
    ``custom_position_ids=True`` the ``Input-Position`` ids are the positions whose
    differences the relative embeddings see.

    Example::

        model = build_transformer_model("bert_config.json", "model.ckpt-900000",
                                        model="nezha", with_mlm=True)
    """

    GOOGLE_NAMES, HF_NAMES = _bert_tables(with_position=False)
    GOOGLE_PREFIXES = ("bert/", "")
    HF_PREFIXES = ("", "nezha.", "bert.")
    #: transformers' derived buffers (the relative table, the default token type ids)
    IGNORED = BERT.IGNORED + (r"relative_positions_encoding\.positions_encoding$",
                              r"embeddings\.token_type_ids$")
    UNSUPPORTED_OPTIONS = {
        **BERT.UNSUPPORTED_OPTIONS,
        "hierarchical_position": ("NEZHA has no absolute position embedding (relative "
                                  "positions are unbounded)"),
    }

    def __init__(self, max_relative_position=64, use_relative_position=True, **kwargs):
        if use_relative_position is not True:
            raise ValueError(
                "NEZHA uses relative position embeddings: expected use_relative_position="
                f"true, found {use_relative_position!r} (for absolute ones use model='bert')"
            )
        if isinstance(max_relative_position, bool) or not isinstance(
                max_relative_position, int) or max_relative_position < 1:
            raise ValueError("max_relative_position must be a positive int, found "
                             f"{max_relative_position!r}")
        super().__init__(**kwargs)
        self.max_relative_position = max_relative_position
        self.use_relative_position = use_relative_position

    def attention_options(self):
        """Every attention layer computes the relative position embeddings."""
        return {"max_relative_position": self.max_relative_position}

    def apply_embeddings(self, inputs):
        """Token (+ segment) embeddings, ``Embedding-Norm``, dropout (no positions)."""
        token_ids, segment_ids, _ = self.split_inputs(inputs)
        x = self.embed_tokens_and_segments(token_ids, segment_ids)
        x = self.layer_norm(x, "Embedding-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    def attention_arguments(self):
        arguments = super().attention_arguments()
        position_ids = (self.pass_inputs or {}).get("position")
        if position_ids is not None:
            arguments["positions"] = position_ids
        return arguments

