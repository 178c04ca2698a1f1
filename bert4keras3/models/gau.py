"""GAU-alpha (https://github.com/ZhuiyiTechnology/GAU-alpha): RoFormerV2 with GAU blocks.

Layout (layer names):

* embeddings as RoFormerV2: ``Embedding-Token`` + ``Embedding-Segment``,
  ``Embedding-Dropout``, parameter-free RMS ``Embedding-Norm``;
* per block ``i``: ``Transformer-{i}-GatedAttentionUnit`` (``i_dense``, ``o_dense``,
  ``q_scaleoffset``, ``k_scaleoffset``; no biases, swish, rotary, single head), then
  ``-Dropout``, ``-Add`` (residual) and the parameter-free RMS post-norm ``-Norm``;
* MLM head: the tied token embedding, no bias, no transform (``Output-Mapping`` when
  ``embedding_size != hidden_size``), ``Output-MLM-Dropout``, ``Output-MLM-Activation``.

Config: ``attention_key_size`` (default 128), ``intermediate_size`` (width of ``u``/``v``),
``num_attention_heads`` = 1 (optional), no ``max_position_embeddings``.
``attention_normalization`` defaults to ``"softmax_plus"`` as trained
(``softmax(a * log(n) / log(512))``, n = keys visible to the query: the unpadded length for
the encoder); ``softmax_plus_min_length=16`` gives the later clamped ``log(max(n, 16))``.
"""
import keras

from bert4keras3.layers import Add, LayerNormalization
from bert4keras3.layers.gau import GatedAttentionUnit
from bert4keras3.models.base import register_model
from bert4keras3.models.bert import RoFormerV2

__all__ = ["GAU_alpha"]


def _gau_google_names():
    """Keras weight path -> variable name in the released GAU-alpha TF checkpoint."""
    table = {
        "Embedding-Token/embeddings": "bert/embeddings/word_embeddings",
        "Embedding-Segment/embeddings": "bert/embeddings/token_type_embeddings",
        "Embedding-Mapping/kernel": "bert/encoder/embedding_hidden_mapping_in/kernel",
        "Output-Mapping/kernel": "cls/predictions/transform/dense/kernel",
    }
    layer = "Transformer-{i}-GatedAttentionUnit/"
    ckpt = "GAU_alpha/encoder/layer_{i}/gau/"
    for sub in ("i_dense", "o_dense"):
        for w in ("kernel", "bias"):
            table[f"{layer}{sub}/{w}"] = f"{ckpt}{sub}/{w}"
    for sub in ("q_scaleoffset", "k_scaleoffset"):
        for w in ("gamma", "beta"):
            table[f"{layer}{sub}/{w}"] = f"{ckpt}{sub}/{w}"
    return table


@register_model("gau_alpha", "gau-alpha")
class GAU_alpha(RoFormerV2):
    """GAU-alpha: token/segment embeddings, GAU blocks with post RMS norm, tied MLM head.

    Example::

        model = build_transformer_model("bert_config.json", "bert_model.ckpt",
                                        model="gau_alpha", with_mlm=True)
    """

    GOOGLE_NAMES = _gau_google_names()
    HF_NAMES = {}
    GOOGLE_PREFIXES = ("",)
    REQUIRED_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size")
    use_bias = False

    def __init__(self, num_attention_heads=1, attention_key_size=128,
                 attention_normalization="softmax_plus", hidden_act="swish", **kwargs):
        if num_attention_heads != 1:
            raise ValueError(
                f"GAU-alpha is single-head: expected num_attention_heads=1, found "
                f"{num_attention_heads}"
            )
        super().__init__(num_attention_heads=1, attention_key_size=attention_key_size,
                         attention_normalization=attention_normalization,
                         hidden_act=hidden_act, **kwargs)

    def apply_main_layers(self, inputs, index):
        """GAU -> Dropout -> Add (residual) -> parameter-free RMS norm."""
        name = f"Transformer-{index}-GatedAttentionUnit"
        x = self.apply(
            inputs, GatedAttentionUnit, arguments=self.attention_arguments(),
            units=self.intermediate_size, key_size=self.attention_key_size,
            activation=self.hidden_act, use_bias=self.use_bias,
            normalization=self.attention_normalization,
            min_length=self.softmax_plus_min_length,
            attention_dropout=self.attention_dropout_rate, rotary=True,
            kernel_initializer=self.initializer, name=name,
        )
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name=f"{name}-Dropout")
        x = self.apply([inputs, x], Add, name=f"{name}-Add")
        return self.apply(x, LayerNormalization, zero_mean=False, center=False, scale=False,
                          epsilon=self.layer_norm_eps, name=f"{name}-Norm")
