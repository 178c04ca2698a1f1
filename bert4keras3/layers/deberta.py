"""Layers of DeBERTa-v2 / DeBERTa-v3 (He et al., "DeBERTa: Decoding-enhanced BERT with
Disentangled Attention", and DeBERTa-v3).

* :func:`log_bucket_position` / :func:`deberta_relative_positions`: the (log-bucketed)
  relative distances ``i - j`` between query ``i`` and key ``j``;
* :class:`RelativeEmbeddingTable`: the table of relative-position embeddings shared by
  every layer (``[2 * span, hidden]``, returned whole);
* :class:`DisentangledSelfAttention`: self-attention with the content-to-position (c2p)
  and position-to-content (p2c) terms;
* :class:`DebertaConv`: the convolution of DeBERTa-v2 xlarge / xxlarge after the first
  block (``conv_kernel_size``).

All layers use ``keras.ops`` only and implement ``get_config``.
"""
import math

import keras
from keras import ops

from bert4keras3 import backend as B
from bert4keras3.layers.core import MultiHeadAttention

__all__ = [
    "log_bucket_position",
    "deberta_relative_positions",
    "RelativeEmbeddingTable",
    "DisentangledSelfAttention",
    "DebertaConv",
]

register = keras.saving.register_keras_serializable(package="bert4keras3")

#: attention terms beyond content-to-content that DeBERTa-v2 knows
POS_ATT_TYPES = ("c2p", "p2c")


def log_bucket_position(relative_position, bucket_size, max_position):
    """DeBERTa-v2's log buckets of relative distances (int in, int32 out).

    Distances with ``|r| <= bucket_size // 2`` (= ``mid``) are kept; longer ones become
    ``sign(r) * (mid + ceil(log(|r| / mid) / log((max_position - 1) / mid) * (mid - 1)))``.
    """
    rel = ops.cast(relative_position, "int32")
    mid = bucket_size // 2
    sign = ops.sign(rel)
    near = ops.logical_and(rel < mid, rel > -mid)
    abs_pos = ops.where(near, mid - 1, ops.abs(rel))
    ratio = ops.cast(abs_pos, "float32") / float(mid)
    log_pos = ops.ceil(ops.log(ratio) / ops.log(ops.cast((max_position - 1) / mid, "float32"))
                       * float(mid - 1)) + float(mid)
    far = ops.cast(log_pos, "int32") * sign
    return ops.where(abs_pos <= mid, rel, far)


def deberta_relative_positions(query_length, key_length, bucket_size=-1, max_position=-1):
    """Int32 ``[query_length, key_length]`` relative distances ``i - j``.

    Log-bucketed (:func:`log_bucket_position`) when ``bucket_size`` and ``max_position``
    are both positive, as in DeBERTa-v2.
    """
    q = ops.arange(query_length, dtype="int32")[:, None]
    k = ops.arange(key_length, dtype="int32")[None, :]
    rel = q - k
    if bucket_size > 0 and max_position > 0:
        rel = log_bucket_position(rel, bucket_size, max_position)
    return rel


@register
class RelativeEmbeddingTable(keras.layers.Layer):
    """DeBERTa's relative-position embedding table (``embeddings``, ``[input_dim, output_dim]``).

    ``layer(x)`` returns the whole table (cast to ``x``'s dtype); ``x`` only carries the
    dtype. It is shared by every :class:`DisentangledSelfAttention` of a model.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs):
        return ops.cast(self.embeddings, inputs.dtype)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (self.input_dim, self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config


@register
class DisentangledSelfAttention(MultiHeadAttention):
    """DeBERTa-v2 disentangled self-attention (sublayers ``q_dense``, ``k_dense``, ``v_dense``,
    ``o_dense``, and ``pos_k_dense`` / ``pos_q_dense`` unless ``share_att_key``).

    Scores of query ``i`` and key ``j`` (per head, ``d = head_size``)::

        (q_i . k_j + q_i . Kr[idx_ij] + k_j . Qr[idx'_ij]) / sqrt(d * (1 + len(pos_att_type)))

    with ``Kr`` / ``Qr`` the relative embeddings projected by ``pos_k_dense`` /
    ``pos_q_dense`` (by ``k_dense`` / ``q_dense`` with ``share_att_key``),
    ``idx_ij = clip(r(i - j) + span, 0, 2 span - 1)`` (c2p), ``idx'_ij =
    clip(-r(j - i) + span, 0, 2 span - 1)`` (p2c), ``r`` the log buckets
    (``position_buckets > 0``) or the identity, and ``span = position_buckets`` if positive,
    else ``max_relative_positions``. The scale counts ``pos_att_type`` even without
    ``relative_attention`` (as DeBERTa does).

    Call: ``layer(x, attention_mask=None, rel_embeddings=None)``; ``attention_mask`` boolean,
    broadcastable to ``[batch, heads, q, k]`` (default: the Keras mask of ``x`` on the
    keys); ``rel_embeddings`` the (normalised) table ``[2 * span, hidden]`` (required with
    ``relative_attention``; dropout ``position_dropout`` is applied here).
    """

    decoding_role = None  # encoder only: no key/value cache

    def __init__(self, heads, head_size, out_dim=None, use_bias=True, attention_dropout=None,
                 relative_attention=True, pos_att_type=POS_ATT_TYPES, position_buckets=-1,
                 max_relative_positions=512, share_att_key=False, position_dropout=0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        for option in ("key_size", "attention_scale", "normalization", "min_length", "rotary",
                       "rotary_base", "return_attention_scores"):
            if option in kwargs:
                raise ValueError(f"DisentangledSelfAttention does not take {option!r} (its "
                                 "scale and normalisation are DeBERTa's)")
        pos_att_type = list(_parse_pos_att_type(pos_att_type))
        super().__init__(heads, head_size, out_dim=out_dim, use_bias=use_bias,
                         attention_scale=False, attention_dropout=attention_dropout,
                         kernel_initializer=kernel_initializer, **kwargs)
        if relative_attention and max_relative_positions < 1 and position_buckets < 1:
            raise ValueError(
                "relative attention needs max_relative_positions >= 1 or position_buckets "
                f">= 1; found {max_relative_positions} and {position_buckets}")
        self.relative_attention = bool(relative_attention)
        self.pos_att_type = pos_att_type
        self.position_buckets = int(position_buckets)
        self.max_relative_positions = int(max_relative_positions)
        self.share_att_key = bool(share_att_key)
        self.position_dropout_rate = float(position_dropout or 0.0)
        self.position_dropout = keras.layers.Dropout(self.position_dropout_rate,
                                                     dtype=self.dtype_policy)
        self.span = self.position_buckets if self.position_buckets > 0 else \
            self.max_relative_positions
        self.scale_factor = 1 + len(self.pos_att_type)
        self.pos_k_dense = self.pos_q_dense = None
        if self.relative_attention and not self.share_att_key:
            def dense(name):
                return keras.layers.Dense(heads * head_size, use_bias=True,
                                          kernel_initializer=self.kernel_initializer, name=name,
                                          dtype=self.dtype_policy)
            if "c2p" in self.pos_att_type:
                self.pos_k_dense = dense("pos_k_dense")
            if "p2c" in self.pos_att_type:
                self.pos_q_dense = dense("pos_q_dense")

    def build(self, query_shape, attention_mask_shape=None, rel_embeddings_shape=None):
        super().build(query_shape)
        rel_shape = (None, (rel_embeddings_shape or query_shape)[-1])
        for layer in (self.pos_k_dense, self.pos_q_dense):
            if layer is not None:
                layer.build(rel_shape)

    def relative_positions(self, length):
        """Int32 ``[length, length]`` relative distances (bucketed when configured)."""
        return deberta_relative_positions(length, length, self.position_buckets,
                                          self.max_relative_positions)

    def _heads(self, x):
        return ops.reshape(x, ops.shape(x)[:-1] + (self.heads, self.head_size))

    def disentangled_bias(self, q, k, rel_embeddings, training=None):
        """c2p + p2c scores ``[batch, heads, q, k]`` (unscaled) of projected ``q`` / ``k``."""
        n = ops.shape(q)[1]
        rel = self.position_dropout(rel_embeddings[: 2 * self.span], training=training)
        relative = self.relative_positions(n)
        batch = ops.shape(q)[0]
        full = (batch, self.heads, n, n)
        score = 0.0
        if "c2p" in self.pos_att_type:
            pos_k = self._heads(self.k_dense(rel) if self.share_att_key else self.pos_k_dense(rel))
            c2p = ops.einsum("bihd,rhd->bhir", q, pos_k)  # [batch, heads, q, 2 span]
            index = ops.clip(relative + self.span, 0, 2 * self.span - 1)
            score = score + ops.take_along_axis(
                c2p, ops.broadcast_to(index[None, None], full), axis=-1)
        if "p2c" in self.pos_att_type:
            pos_q = self._heads(self.q_dense(rel) if self.share_att_key else self.pos_q_dense(rel))
            p2c = ops.einsum("bjhd,rhd->bhjr", k, pos_q)  # [batch, heads, k, 2 span]
            index = ops.clip(-relative + self.span, 0, 2 * self.span - 1)
            p2c = ops.take_along_axis(p2c, ops.broadcast_to(index[None, None], full), axis=-1)
            score = score + ops.swapaxes(p2c, -1, -2)
        return score

    def call(self, query, attention_mask=None, rel_embeddings=None, training=None, mask=None):
        if attention_mask is None and mask is not None:
            attention_mask = ops.cast(mask, "bool")[:, None, None, :]
        q = self.project_q(query)
        k, v = self.project_kv(query, query)
        scores = B.multihead_scores(q, k)
        if self.relative_attention:
            if rel_embeddings is None:
                raise ValueError("DisentangledSelfAttention with relative_attention needs "
                                 "rel_embeddings (the relative embedding table); found None")
            scores = scores + ops.cast(self.disentangled_bias(q, k, rel_embeddings, training),
                                       scores.dtype)
        scale = math.sqrt(self.head_size * self.scale_factor)
        scores = scores / ops.cast(scale, scores.dtype)
        if attention_mask is not None:
            attention_mask = ops.cast(attention_mask, "bool")
        weights = B.attention_normalize(scores, attention_mask)
        weights = self.dropout(weights, training=training)
        return self.attention_output(weights, v)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, query_shape, attention_mask_shape=None,
                             rel_embeddings_shape=None):
        return tuple(query_shape[:-1]) + (self.out_dim,)

    def get_config(self):
        config = super().get_config()
        for key in ("key_size", "attention_scale", "return_attention_scores", "normalization",
                    "min_length", "rotary", "rotary_base", "fused_attention"):
            config.pop(key, None)
        config.update(
            relative_attention=self.relative_attention,
            pos_att_type=list(self.pos_att_type),
            position_buckets=self.position_buckets,
            max_relative_positions=self.max_relative_positions,
            share_att_key=self.share_att_key,
            position_dropout=self.position_dropout_rate,
        )
        return config


def _parse_pos_att_type(value):
    """``"p2c|c2p"`` / ``["p2c", "c2p"]`` / ``None`` -> tuple of known attention types."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in value.lower().split("|")]
    items = [str(v).strip().lower() for v in value if str(v).strip()]
    unknown = [v for v in items if v not in POS_ATT_TYPES]
    if unknown:
        raise ValueError(f"pos_att_type entries must be among {list(POS_ATT_TYPES)}; found "
                         f"{unknown}")
    return tuple(dict.fromkeys(items))


@register
class DebertaConv(keras.layers.Layer):
    """DeBERTa-v2's ``ConvLayer`` before its residual: ``act(conv1d(x))`` with padding zeroed.

    Inputs ``[x, token_ids]``: a 1-D convolution over the sequence (``kernel_size`` odd,
    ``same`` padding, ``groups``; sublayer ``conv``), outputs at id-0 positions set to 0,
    dropout, then ``activation``. The model adds it to the first block's output, layer-
    normalises and zeroes padding again.
    """

    def __init__(self, filters, kernel_size=3, groups=1, activation="tanh", dropout=0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if kernel_size % 2 != 1:
            raise ValueError(f"conv_kernel_size must be odd (the sequence length is kept); "
                             f"found {kernel_size}")
        self.filters = filters
        self.kernel_size = kernel_size
        self.groups = groups
        self.activation = activation
        B.get_activation(activation)  # fail early on an unknown name
        self.dropout_rate = float(dropout or 0.0)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.conv = keras.layers.Conv1D(filters, kernel_size, padding="same", groups=groups,
                                        kernel_initializer=self.kernel_initializer, name="conv",
                                        dtype=self.dtype_policy)
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build(input_shape[0])

    def call(self, inputs, training=None):
        x, token_ids = inputs
        keep = ops.cast(ops.not_equal(token_ids, 0), x.dtype)[..., None]
        out = self.conv(x * keep) * keep  # x is zero at padding already
        out = self.dropout(out, training=training)
        return B.get_activation(self.activation)(out)

    def compute_mask(self, inputs, mask=None):
        return ops.not_equal(inputs[1], 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            groups=self.groups,
            activation=self.activation,
            dropout=self.dropout_rate,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
