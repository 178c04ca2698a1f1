"""ALBERT (https://arxiv.org/abs/1909.11942): factorised embeddings, blocks shared across depth.

Layout (layer names):

* embeddings as BERT, of width ``embedding_size`` (``Embedding-Token``, ``-Segment``,
  ``-Position``, ``-Norm``, ``-Dropout``), then ``Embedding-Mapping`` (``embedding_size ->
  hidden_size``; always present, as in the released checkpoints);
* blocks: BERT's post-LN block. ``model="albert"`` shares its layers across depth, as the
  released models do: with ``num_hidden_groups=1`` (every released model) they are named
  ``Transformer-MultiHeadSelfAttention``, ``Transformer-FeedForward`` (+ ``-Dropout``,
  ``-Add``, ``-Norm``) as in bert4keras; with ``G = num_hidden_groups > 1`` group ``g``'s
  layers are ``Transformer-{g}-MultiHeadSelfAttention``, ... and layer ``i`` uses group
  ``int(i / (num_hidden_layers / G))`` (as ``transformers`` does).
  ``model="albert_unshared"`` (bert4keras' ``ALBERT_Unshared``) has one set of layers per
  index, ``Transformer-{i}-...`` (BERT's names), each loaded from the group of its index
  (all from ``group_0`` for the released checkpoints);
* heads: ``with_pool`` (``Pooler-Dense``), ``with_nsp`` (ALBERT's sentence-order head,
  ``NSP-Proba``), ``with_mlm`` (``MLM-Dense`` to ``embedding_size`` + activation,
  ``MLM-Norm``, the tied token embedding, ``MLM-Bias``).

Config keys as the released files spell them: ``embedding_size``, ``num_hidden_groups``,
``inner_group_num`` (only 1 is supported: every released model), and Google's
``net_structure_type`` / ``gap_size`` / ``num_memory_blocks`` / ``down_scale_factor`` (only
their neutral values 0 / 0 / 0 / 1). ``hidden_act`` follows the file: ``"gelu"`` is the erf
form (Google's configs), ``"gelu_new"`` the tanh form (``transformers``' default).

Checkpoints: Google (``bert/encoder/transformer/group_{g}/inner_group_0/...``) and
Hugging Face (``AlbertModel`` / ``AlbertForMaskedLM`` / ``AlbertForPreTraining``:
``albert.encoder.albert_layer_groups.{g}.albert_layers.0...``, ``predictions.*``,
``sop_classifier.classifier``).

Example::

    model = build_transformer_model("albert_config.json", "model.ckpt-best",
                                    model="albert", with_mlm=True)
"""
import keras

from bert4keras3.models.base import register_model
from bert4keras3.models.bert import BERT, _bert_tables

__all__ = ["ALBERT", "ALBERT_Unshared"]


def _albert_tables():
    """Google and Hugging Face tables of ALBERT.

    Keys of block weights hold ``{b}`` (the block's layer-name stem) and their checkpoint
    names ``{g}`` (the group); the other entries come from BERT's tables.
    """
    g, h = _bert_tables()
    g = {k: v for k, v in g.items() if "{i}" not in k}
    h = {k: v for k, v in h.items() if "{i}" not in k}
    h["Embedding-Mapping/kernel"] = ("{p}encoder.embedding_hidden_mapping_in.weight", "T")
    h["Embedding-Mapping/bias"] = "{p}encoder.embedding_hidden_mapping_in.bias"
    h["Pooler-Dense/kernel"] = ("{p}pooler.weight", "T")
    h["Pooler-Dense/bias"] = "{p}pooler.bias"
    h["MLM-Dense/kernel"] = ("predictions.dense.weight", "T")
    h["MLM-Dense/bias"] = "predictions.dense.bias"
    h["MLM-Norm/gamma"] = "predictions.LayerNorm.weight"
    h["MLM-Norm/beta"] = "predictions.LayerNorm.bias"
    h["MLM-Bias/bias"] = "predictions.bias"
    h["NSP-Proba/kernel"] = ("sop_classifier.classifier.weight", "T")
    h["NSP-Proba/bias"] = "sop_classifier.classifier.bias"
    google = "{p}encoder/transformer/group_{g}/inner_group_0/"
    hf = "{p}encoder.albert_layer_groups.{g}.albert_layers.0."
    denses = [
        ("MultiHeadSelfAttention/q_dense", "attention_1/self/query", "attention.query"),
        ("MultiHeadSelfAttention/k_dense", "attention_1/self/key", "attention.key"),
        ("MultiHeadSelfAttention/v_dense", "attention_1/self/value", "attention.value"),
        ("MultiHeadSelfAttention/o_dense", "attention_1/output/dense", "attention.dense"),
        ("FeedForward/i0_dense", "ffn_1/intermediate/dense", "ffn"),
        ("FeedForward/o_dense", "ffn_1/intermediate/output/dense", "ffn_output"),
    ]
    for key, gn, hn in denses:
        g[f"{{b}}-{key}/kernel"] = google + gn + "/kernel"
        g[f"{{b}}-{key}/bias"] = google + gn + "/bias"
        h[f"{{b}}-{key}/kernel"] = (hf + hn + ".weight", "T")
        h[f"{{b}}-{key}/bias"] = hf + hn + ".bias"
    norms = [
        ("MultiHeadSelfAttention-Norm", "LayerNorm", "attention.LayerNorm"),
        ("FeedForward-Norm", "LayerNorm_1", "full_layer_layer_norm"),
    ]
    for key, gn, hn in norms:
        g[f"{{b}}-{key}/gamma"] = google + gn + "/gamma"
        g[f"{{b}}-{key}/beta"] = google + gn + "/beta"
        h[f"{{b}}-{key}/gamma"] = hf + hn + ".weight"
        h[f"{{b}}-{key}/beta"] = hf + hn + ".bias"
    return g, h


@register_model("albert")
class ALBERT(BERT):
    """ALBERT with its block layers shared across depth (per group), as released.

    Build options: BERT's (``with_pool``, ``with_nsp`` = the sentence-order head,
    ``with_mlm``, ``keep_tokens``, ``application``, ...). See the module docstring for the
    layer names and config keys.
    """

    GOOGLE_NAMES, HF_NAMES = _albert_tables()
    GOOGLE_PREFIXES = ("bert/", "")
    HF_PREFIXES = ("", "albert.")
    IGNORED = BERT.IGNORED + (r"^predictions\.decoder\.(weight|bias)$",)
    CONFIG_IGNORED = frozenset({"classifier_dropout_prob"})
    #: Google ALBERT config keys -> the only value supported (all released models use it)
    NEUTRAL_KEYS = {"net_structure_type": 0, "gap_size": 0, "num_memory_blocks": 0,
                    "down_scale_factor": 1}
    shared = True

    def __init__(self, num_hidden_groups=1, inner_group_num=1, net_structure_type=0,
                 gap_size=0, num_memory_blocks=0, down_scale_factor=1, **kwargs):
        super().__init__(**kwargs)
        if inner_group_num != 1:
            raise ValueError(
                f"ALBERT with inner_group_num={inner_group_num} is not supported: expected 1 "
                "(one attention + FFN block per group, as every released model)"
            )
        for key, found in (("net_structure_type", net_structure_type), ("gap_size", gap_size),
                           ("num_memory_blocks", num_memory_blocks),
                           ("down_scale_factor", down_scale_factor)):
            if found != self.NEUTRAL_KEYS[key]:
                raise ValueError(f"ALBERT config {key}={found!r} is not supported: expected "
                                 f"{self.NEUTRAL_KEYS[key]!r} (as every released model)")
        groups = int(num_hidden_groups)
        if not 1 <= groups <= self.num_hidden_layers:
            raise ValueError(
                f"num_hidden_groups must be in [1, num_hidden_layers={self.num_hidden_layers}]"
                f"; found {num_hidden_groups}"
            )
        self.num_hidden_groups = groups
        self.inner_group_num = inner_group_num

    def group_index(self, index):
        """The parameter group that layer ``index`` uses (as ``transformers`` computes it)."""
        return int(index / (self.num_hidden_layers / self.num_hidden_groups))

    def block_name(self, index):
        """Layer-name stem of the block applied at depth ``index``."""
        if not self.shared:
            return f"Transformer-{index}"
        if self.num_hidden_groups == 1:
            return "Transformer"
        return f"Transformer-{self.group_index(index)}"

    def apply_embeddings(self, inputs):
        x = super().apply_embeddings(inputs)
        if self.embedding_size == self.hidden_size:  # BERT maps only between unequal sizes
            x = self.apply(x, keras.layers.Dense, units=self.hidden_size,
                           kernel_initializer=self.initializer, name="Embedding-Mapping")
        return x

    def expand_names(self, fmt, prefix):
        """The name table expanded over depth: ``{b}`` -> block stem, ``{g}`` -> group."""
        table = self.GOOGLE_NAMES if fmt == "google" else self.HF_NAMES
        expanded = {}
        for key, value in table.items():
            name, transform = value if isinstance(value, tuple) else (value, None)
            if "{b}" not in key:
                expanded[key] = (name.format(p=prefix), transform)
                continue
            for index in range(self.num_hidden_layers):
                expanded[key.format(b=self.block_name(index))] = (
                    name.format(p=prefix, g=self.group_index(index)), transform)
        return expanded


@register_model("albert_unshared")
class ALBERT_Unshared(ALBERT):
    """ALBERT with one set of block layers per index (bert4keras' ``ALBERT_Unshared``).

    Layer names are BERT's (``Transformer-{i}-MultiHeadSelfAttention``, ...); layer ``i``
    loads the weights of its group, so a released (one-group) checkpoint initialises every
    layer with the same values, which then train apart. Saving such a model as a Google
    checkpoint needs ``num_hidden_groups == num_hidden_layers`` (one group per layer).
    """

    shared = False

    def save_weights_as_checkpoint(self, filename, mapping=None, dtype=None):
        """As :meth:`Transformer.save_weights_as_checkpoint`; the Google layout has one
        variable set per group, so each layer needs its own group
        (``num_hidden_groups == num_hidden_layers``) unless ``mapping`` is given."""
        if mapping is None and self.num_hidden_groups != self.num_hidden_layers:
            raise ValueError(
                f"ALBERT_Unshared cannot write its {self.num_hidden_layers} layers into "
                f"{self.num_hidden_groups} Google group(s): expected num_hidden_groups == "
                f"num_hidden_layers ({self.num_hidden_layers}); build the model with "
                f"num_hidden_groups={self.num_hidden_layers} (and load the released weights "
                "into it), or pass mapping="
            )
        return super().save_weights_as_checkpoint(filename, mapping=mapping, dtype=dtype)

