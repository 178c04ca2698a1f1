"""BERT, RoBERTa, RoFormer and RoFormerV2 with their checkpoint name tables."""
import keras

from bert4keras3.backend import get_activation
from bert4keras3.layers import (
    Add,
    BiasAdd,
    Embedding,
    FeedForward,
    FirstToken,
    LayerNormalization,
    MultiHeadAttention,
    PositionEmbedding,
)
from bert4keras3.models.base import Transformer, register_model

__all__ = ["BERT", "RoFormer", "RoFormerV2"]


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


@register_model("bert", "roberta")
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
            x = self.apply([x, s], Add, name="Embedding-Token-Segment")
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
        x = self.apply([inputs, x], Add, name=f"{attention_name}-Add")
        x = self.norm(x, f"{attention_name}-Norm")

        xi = x
        x = self.apply(
            x, FeedForward, units=self.intermediate_size, activation=self.hidden_act,
            use_bias=self.use_bias, kernel_initializer=self.initializer, name=feed_forward_name,
        )
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name=f"{feed_forward_name}-Dropout")
        x = self.apply([xi, x], Add, name=f"{feed_forward_name}-Add")
        return self.norm(x, f"{feed_forward_name}-Norm")

    def apply_mlm_head(self, x):
        """Transform + tied output embedding + bias + activation."""
        x = self.apply(
            x, keras.layers.Dense, units=self.embedding_size,
            activation=get_activation(self.hidden_act),
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


@register_model("roformer")
class RoFormer(BERT):
    """RoFormer: BERT with rotary position embeddings in every attention layer."""

    GOOGLE_NAMES, HF_NAMES = _bert_tables(with_position=False)
    GOOGLE_PREFIXES = ("bert/", "roformer/", "")
    HF_PREFIXES = ("", "roformer.")
    rotary = True


@register_model("roformer_v2")
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
