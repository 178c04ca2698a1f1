"""Layers specific to the T5 family.

* :class:`RelativePositionEmbeddingT5`: T5's bucketed relative position bias
  (bidirectional buckets in the encoder, causal buckets in the decoder);
* :class:`T5AttentionMask`: the three boolean masks a T5 model needs (encoder
  padding, decoder causal, cross-attention padding read from the context);
* :class:`ZeroPaddedPositions`: zero the hidden states of padding tokens, which
  is how the encoder output carries its padding mask to a separately called decoder;
* :class:`T5FeedForward`: :class:`~bert4keras3.layers.FeedForward` with T5's
  dropout between the activation and the output projection.

All layers use ``keras.ops`` only and implement ``get_config``.
"""
import math

import keras
from keras import ops

from bert4keras3.layers.core import FeedForward, fusable_denses
from bert4keras3 import backend as B

__all__ = [
    "relative_position_bucket",
    "RelativePositionEmbeddingT5",
    "T5AttentionMask",
    "ZeroPaddedPositions",
    "T5FeedForward",
]

register = keras.saving.register_keras_serializable(package="bert4keras3")


def relative_position_bucket(relative_position, bidirectional=True, num_buckets=32,
                             max_distance=128):
    """Map relative positions (``key - query``) to T5's bucket ids (int32).

    Half of the buckets (a quarter when ``bidirectional``) hold exact small
    distances; the rest grow logarithmically up to ``max_distance``, beyond
    which everything shares the last bucket. With ``bidirectional=False``
    (decoder self-attention) keys after the query all fall in bucket 0.
    """
    rp = ops.cast(relative_position, "int32")
    buckets = ops.zeros_like(rp)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + ops.cast(rp > 0, "int32") * num_buckets
        distance = ops.abs(rp)
    else:
        distance = -ops.minimum(rp, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # log of a distance >= max_exact; clamp to 1 first so log never sees 0
    safe = ops.cast(ops.maximum(distance, 1), "float32")
    large = ops.log(safe / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + ops.cast(large * (num_buckets - max_exact), "int32")
    large = ops.minimum(large, num_buckets - 1)
    return buckets + ops.where(is_small, distance, large)


@register
class RelativePositionEmbeddingT5(keras.layers.Layer):
    """T5 relative position bias, shared by all layers of a stack.

    Args (bert4keras order):
        input_dim: number of buckets (``relative_attention_num_buckets``).
        output_dim: number of attention heads.
        max_distance: ``relative_attention_max_distance``.
        bidirectional: ``True`` for the encoder, ``False`` (causal buckets)
            for decoder self-attention.

    Call: ``layer([query_states, key_states], positions=None, key_positions=None)``
    returns the bias ``[1, heads, q_len, k_len]`` for positions ``arange(q_len)`` /
    ``arange(k_len)``; explicit ``positions`` (``[q]`` or per row ``[batch, q]``, giving
    ``[batch, heads, q, k]``) and ``key_positions`` (``[k]``) serve cached decoding.

    The weight ``embeddings`` has shape ``[buckets, heads]`` (the Hugging Face
    layout; Mesh TensorFlow stores its transpose). Unlike bert4keras (``[q, k, heads]``)
    the output is heads-first, ready to add to the scores; ``MultiHeadAttention``'s
    ``p_bias="t5_relative"`` accepts both layouts.
    """

    def __init__(self, input_dim, output_dim, max_distance=128, bidirectional=True,
                 embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = int(input_dim)
        self.output_dim = int(output_dim)
        self.bidirectional = bool(bidirectional)
        self.max_distance = int(max_distance)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )

    decoding_role = "relative_bias"

    def compute_bias(self, query_positions, key_positions):
        """Bias for int positions: ``[1, heads, q, k]`` for 1-D ``query_positions``,
        ``[batch, heads, q, k]`` for 2-D ``[batch, q]`` ones; ``key_positions`` is 1-D."""
        q = ops.cast(query_positions, "int32")
        k = ops.cast(key_positions, "int32")
        buckets = relative_position_bucket(
            k - q[..., None], self.bidirectional, self.input_dim, self.max_distance
        )
        bias = ops.take(self.embeddings, buckets, axis=0)  # [(batch,) q, k, heads]
        if len(q.shape) == 1:
            return ops.expand_dims(ops.transpose(bias, (2, 0, 1)), 0)
        return ops.transpose(bias, (0, 3, 1, 2))

    def compute_position_ids(self, inputs):
        """Int ``[q_len, k_len]`` bucket ids of the (query, key) pairs (bert4keras)."""
        query, key = inputs
        q = ops.arange(ops.shape(query)[1], dtype="int32")
        k = ops.arange(ops.shape(key)[1], dtype="int32")
        return relative_position_bucket(
            k[None, :] - q[:, None], self.bidirectional, self.input_dim, self.max_distance
        )

    def call(self, inputs, positions=None, key_positions=None):
        query, key = inputs
        if positions is None:
            positions = ops.arange(ops.shape(query)[1])
        if key_positions is None:
            key_positions = ops.arange(ops.shape(key)[1])
        return self.compute_bias(positions, key_positions)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (1, self.output_dim, input_shape[0][1], input_shape[1][1])

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            bidirectional=self.bidirectional,
            max_distance=self.max_distance,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config


@register
class T5AttentionMask(keras.layers.Layer):
    """Boolean attention masks of T5 (true = may attend).

    ``mode``:

    * ``"padding"``: input token ids ``[batch, seq]``; output ``[batch, 1, 1, seq]``,
      false where the id is 0 (encoder self-attention);
    * ``"causal"``: input ``[batch, seq, ...]``; output ``[1, 1, seq, seq]``
      lower-triangular. Decoder padding is not masked: position 0 holds the start
      id 0, and later padding is never seen by earlier positions;
    * ``"context"``: input encoder hidden states ``[batch, seq, dim]``; output
      ``[batch, 1, 1, seq]``, false where the vector is exactly zero (the encoder
      zeroes its padding positions, see :class:`ZeroPaddedPositions`).
    """

    def __init__(self, mode="padding", **kwargs):
        super().__init__(**kwargs)
        #: cached decoding replaces the causal mask by the visibility of the cache slots
        self.decoding_role = "mask" if mode == "causal" else None
        if mode not in ("padding", "causal", "context"):
            raise ValueError(f"mode must be 'padding', 'causal' or 'context', found {mode!r}")
        self.mode = mode

    def call(self, inputs):
        if self.mode == "padding":
            return ops.not_equal(inputs, 0)[:, None, None, :]
        if self.mode == "causal":
            n = ops.shape(inputs)[1]
            return B.causal_mask(n)[None, None]
        return ops.any(ops.not_equal(inputs, 0), axis=-1)[:, None, None, :]

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, inputs):
        n = inputs.shape[1]
        if self.mode == "causal":
            return keras.KerasTensor((1, 1, n, n), dtype="bool")
        return keras.KerasTensor((inputs.shape[0], 1, 1, n), dtype="bool")

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config


@register
class ZeroPaddedPositions(keras.layers.Layer):
    """``[hidden, token_ids] -> hidden`` with the vectors at id-0 positions set to zero.

    The output's Keras mask is ``token_ids != 0``.
    """

    def call(self, inputs):
        x, token_ids = inputs
        keep = ops.cast(ops.not_equal(token_ids, 0), x.dtype)
        return x * keep[..., None]

    def compute_mask(self, inputs, mask=None):
        return ops.not_equal(inputs[1], 0)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@register
class T5FeedForward(FeedForward):
    """:class:`FeedForward` with dropout on the (gated) activation, as in T5.

    ``o_dense(dropout(act_0(x W_0) * act_1(x W_1)))``; sublayers ``i0_dense``,
    ``i1_dense``, ``o_dense`` as in :class:`FeedForward`.
    """

    def __init__(self, units, activation="relu", use_bias=False, dropout=0.0, **kwargs):
        super().__init__(units, activation=activation, use_bias=use_bias, **kwargs)
        self.dropout_rate = float(dropout or 0.0)
        self.dropout = keras.layers.Dropout(self.dropout_rate, dtype=self.dtype_policy)

    def call(self, inputs, training=None):
        h = None
        if len(self.in_denses) > 1 and fusable_denses(self.in_denses):
            # one product for the gate and up projections (each Dense's own kernel; LoRA
            # included), split after: fewer, larger dots per decoding step
            kernel = ops.concatenate([ops.cast(d.kernel, inputs.dtype) for d in self.in_denses], -1)
            parts = ops.split(ops.matmul(inputs, kernel), len(self.in_denses), axis=-1)
        else:
            parts = [layer(inputs) for layer in self.in_denses]
        for act, y in zip(self.activation, parts):
            y = B.get_activation(act)(y)
            h = y if h is None else h * y
        h = self.dropout(h, training=training)
        return self.o_dense(h)

    def get_config(self):
        config = super().get_config()
        config.update(dropout=self.dropout_rate)
        return config
