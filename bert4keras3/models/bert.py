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
        # next sentence prediction: Google stores the kernel as [2, hidden]
        g["NSP-Proba/kernel"] = ("cls/seq_relationship/output_weights", "T")
        h["NSP-Proba/kernel"] = ("cls.seq_relationship.weight", "T")
        g["NSP-Proba/bias"] = "cls/seq_relationship/output_bias"
        h["NSP-Proba/bias"] = "cls.seq_relationship.bias"
    return g, h


@register_model("bert", "roberta")
class BERT(Transformer):
    """BERT (and RoBERTa in BERT layout): absolute positions, post-LN blocks.

    Inputs: ``Input-Token``, ``Input-Segment`` (unless ``segment_vocab_size=0``),
    ``Input-Position`` (with ``custom_position_ids=True``), then any
    ``additional_input_layers``; all float32 as in bert4keras (ids are cast inside).

    Build options (bert4keras meanings): ``max_position``, ``segment_vocab_size``,
    ``with_pool`` (pooled [CLS], ``True`` = tanh or an activation name), ``with_nsp``
    (next-sentence probabilities ``NSP-Proba`` on the pooler; implies ``with_pool``),
    ``with_mlm`` (``True`` = probabilities, ``"linear"`` = logits),
    ``hierarchical_position`` (``True`` or alpha: positions beyond ``max_position`` from
    the hierarchically decomposed table), ``custom_position_ids`` (positions are an
    input), ``layer_norm_cond`` (a tensor ``[batch, dim]``: every layer norm becomes
    conditional on it, through a ``layer_norm_cond_hidden_size`` projection with
    ``layer_norm_cond_hidden_act`` when given; its inputs go in
    ``additional_input_layers``).

    Example (a conditional language model, as bert4keras' example)::

        c_in = keras.Input((1,))
        c = keras.layers.Reshape((128,))(keras.layers.Embedding(num_classes, 128)(c_in))
        model = build_transformer_model(config, ckpt, application="lm",
                                        layer_norm_cond=c, additional_input_layers=c_in)
    """

    GOOGLE_NAMES, HF_NAMES = _bert_tables()
    GOOGLE_PREFIXES = ("bert/", "")
    HF_PREFIXES = ("", "bert.", "roberta.")
    #: the HF MLM decoder is tied to the word embeddings / output bias
    IGNORED = Transformer.IGNORED + (r"^cls\.predictions\.decoder\.(weight|bias)$",)
    UNSUPPORTED_OPTIONS = {
        **{k: v for k, v in Transformer.UNSUPPORTED_OPTIONS.items()
           if k not in ("layer_norm_cond", "additional_input_layers")},
        "shared_segment_embeddings": (
            "segment ids looked up in the token embedding would carry the token "
            "padding mask (segment 0 = padding); use a separate Embedding-Segment"),
    }
    #: name of the final MLM activation (bert4keras' name)
    MLM_ACTIVATION = "MLM-Activation"
    use_bias = True
    rotary = False

    def __init__(self, max_position=512, segment_vocab_size=2, with_nsp=False,
                 hierarchical_position=None, custom_position_ids=False,
                 shared_segment_embeddings=False, **kwargs):
        super().__init__(**kwargs)
        self.max_position = max_position
        self.segment_vocab_size = segment_vocab_size
        self.with_nsp = with_nsp
        self.hierarchical_position = hierarchical_position
        self.custom_position_ids = custom_position_ids
        self.shared_segment_embeddings = shared_segment_embeddings
        if self.with_nsp and not self.with_pool:
            self.with_pool = True

    def get_inputs(self):
        shape = (self.sequence_length,)
        names = ["Input-Token"]
        if self.segment_vocab_size > 0:
            names.append("Input-Segment")
        if self.custom_position_ids:
            names.append("Input-Position")
        return [keras.Input(shape, dtype="float32", name=self.prefixed(n)) for n in names]

    def split_inputs(self, inputs):
        """``(token_ids, segment_ids or None, position_ids or None)`` of the given inputs.

        Starts a pass of the graph code (:meth:`begin_pass`), so the attention mask
        follows these inputs.
        """
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        token_ids = inputs.pop(0)
        segment_ids = inputs.pop(0) if self.segment_vocab_size > 0 else None
        position_ids = inputs.pop(0) if self.custom_position_ids else None
        self.begin_pass(token_ids, segment_ids, position_ids)
        return token_ids, segment_ids, position_ids

    def embed_tokens_and_segments(self, token_ids, segment_ids=None):
        """Token (+ segment) embeddings, shared by the BERT family."""
        x = self.apply(
            token_ids, Embedding, input_dim=self.vocab_size, output_dim=self.embedding_size,
            embeddings_initializer=self.initializer, mask_zero=True, name="Embedding-Token",
        )
        if self.segment_vocab_size > 0:
            s = self.apply(
                segment_ids, Embedding, input_dim=self.segment_vocab_size,
                output_dim=self.embedding_size, embeddings_initializer=self.initializer,
                name="Embedding-Segment",
            )
            x = self.apply([x, s], Add, name="Embedding-Token-Segment")
        return x

    def apply_embeddings(self, inputs):
        token_ids, segment_ids, position_ids = self.split_inputs(inputs)
        x = self.embed_tokens_and_segments(token_ids, segment_ids)
        if not self.rotary:
            options = {}
            if self.hierarchical_position:
                options["hierarchical"] = self.hierarchical_position
            x = self.apply(
                x if position_ids is None else [x, position_ids], PositionEmbedding,
                input_dim=self.max_position, output_dim=self.embedding_size,
                merge_mode="add", embeddings_initializer=self.initializer,
                custom_position_ids=bool(self.custom_position_ids), name="Embedding-Position",
                **options,
            )
        x = self.layer_norm(x, "Embedding-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                x, keras.layers.Dense, units=self.hidden_size,
                kernel_initializer=self.initializer, name="Embedding-Mapping",
            )
        return x

    def layer_norm(self, x, name):
        """A standard layer norm, conditional on ``layer_norm_cond`` when it is given."""
        if self.layer_norm_cond is None:
            return self.apply(x, LayerNormalization, epsilon=self.layer_norm_eps, name=name)
        return self.apply(
            [x, self.layer_norm_cond], LayerNormalization, epsilon=self.layer_norm_eps,
            conditional=True, hidden_units=self.layer_norm_cond_hidden_size,
            hidden_activation=self.layer_norm_cond_hidden_act or "linear",
            hidden_initializer=self.initializer, name=name,
        )

    def norm(self, x, name):
        """The post-norm used after each residual (a layer norm here)."""
        return self.layer_norm(x, name)

    def attention_arguments(self):
        """Call arguments of the self-attention layers in the current pass."""
        arguments = {"attention_mask": self.compute_attention_mask()}
        position_ids = (self.pass_inputs or {}).get("position")
        if self.rotary and position_ids is not None:
            arguments["positions"] = position_ids
        return arguments

    def block_name(self, index):
        """Layer-name stem of the block applied at depth ``index`` (ALBERT shares blocks)."""
        return f"Transformer-{index}"

    def attention_options(self):
        """Extra constructor arguments of the self-attention layers (NEZHA's relative positions)."""
        return {}

    def self_attention(self, x, name):
        """The block's multi-head self-attention on ``x`` (mask of the current pass)."""
        return self.apply(
            x, MultiHeadAttention, arguments=self.attention_arguments(),
            heads=self.num_attention_heads, head_size=self.attention_head_size,
            out_dim=self.hidden_size, key_size=self.attention_key_size,
            use_bias=self.use_bias, attention_dropout=self.attention_dropout_rate,
            normalization=self.attention_normalization,
            min_length=self.softmax_plus_min_length,
            rotary=self.rotary, kernel_initializer=self.initializer, name=name,
            **self.attention_options(),
        )

    def apply_main_layers(self, inputs, index):
        """Post-LN block: attention, dropout, residual, norm; feed-forward likewise."""
        stem = self.block_name(index)
        attention_name = f"{stem}-MultiHeadSelfAttention"
        feed_forward_name = f"{stem}-FeedForward"

        x = self.self_attention(inputs, attention_name)
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
        """Transform + tied output embedding + bias (logits)."""
        x = self.apply(
            x, keras.layers.Dense, units=self.embedding_size,
            activation=get_activation(self.hidden_act),
            kernel_initializer=self.initializer, name="MLM-Dense",
        )
        x = self.layer_norm(x, "MLM-Norm")
        x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        x = self.apply(x, BiasAdd, name="MLM-Bias")
        return x

    def apply_pooler(self, x):
        """Pooled [CLS] (``Pooler``, ``Pooler-Dense``), then ``NSP-Proba`` with ``with_nsp``."""
        pool_act = self.with_pool if isinstance(self.with_pool, str) else "tanh"
        x = self.apply(x, FirstToken, name="Pooler")
        x = self.apply(x, keras.layers.Dense, units=self.hidden_size, activation=pool_act,
                       kernel_initializer=self.initializer, name="Pooler-Dense")
        if self.with_nsp:
            x = self.apply(x, keras.layers.Dense, units=2, activation="softmax",
                           kernel_initializer=self.initializer, name="NSP-Proba")
        return x

    def apply_final_layers(self, inputs):
        outputs = [inputs]
        if self.with_pool:
            outputs.append(self.apply_pooler(inputs))
        if self.with_mlm:
            x = self.apply_mlm_head(inputs)
            mlm_act = "softmax" if self.with_mlm is True else self.with_mlm
            x = self.apply(x, keras.layers.Activation, activation=mlm_act,
                           name=self.MLM_ACTIVATION)
            outputs.append(x)
        if len(outputs) == 1:
            return outputs[0]
        if len(outputs) == 2:
            return outputs[1]
        return outputs[1:]


@register_model("roformer")
class RoFormer(BERT):
    """RoFormer: BERT with rotary position embeddings in every attention layer.

    With ``custom_position_ids=True`` the ``Input-Position`` ids are the rotary positions.
    """

    GOOGLE_NAMES, HF_NAMES = _bert_tables(with_position=False)
    GOOGLE_PREFIXES = ("bert/", "roformer/", "")
    HF_PREFIXES = ("", "roformer.")
    UNSUPPORTED_OPTIONS = {
        **BERT.UNSUPPORTED_OPTIONS,
        "hierarchical_position": "RoFormer has no absolute position embedding (rotary)",
    }
    rotary = True


@register_model("roformer_v2")
class RoFormerV2(RoFormer):
    """RoFormerV2: no biases, parameter-free RMS post-norm, tied bias-free MLM head."""

    GOOGLE_NAMES, HF_NAMES = _bert_tables(with_bias=False, with_norm=False, with_position=False)
    OUTPUT_ACTIVATIONS = ("Output-MLM-Activation",)
    MLM_ACTIVATION = "Output-MLM-Activation"
    UNSUPPORTED_OPTIONS = {
        **RoFormer.UNSUPPORTED_OPTIONS,
        "with_nsp": "RoFormerV2 has no pooler / NSP head (its checkpoints hold none)",
        "with_pool": "RoFormerV2 has no pooler (its checkpoints hold none)",
        "layer_norm_cond": ("the norms are parameter-free RMS norms (no gamma / beta to "
                            "condition)"),
    }
    use_bias = False

    def __init__(self, **kwargs):
        kwargs.setdefault("hidden_act", "relu")
        super().__init__(**kwargs)

    def norm(self, x, name):
        return self.apply(x, LayerNormalization, zero_mean=False, center=False, scale=False,
                          epsilon=self.layer_norm_eps, name=name)

    def apply_embeddings(self, inputs):
        token_ids, segment_ids, _ = self.split_inputs(inputs)
        x = self.embed_tokens_and_segments(token_ids, segment_ids)
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
