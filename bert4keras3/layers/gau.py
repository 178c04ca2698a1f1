"""Gated Attention Unit (FLASH, https://arxiv.org/abs/2202.10447) as used by GAU-alpha.

The unit replaces the attention + feed-forward pair of a transformer block::

    u, v, z = split(act(x W_i + b_i), [e, e, s])       # one projection, shared z
    q = z * gamma_q + beta_q,  k = z * gamma_k + beta_k  # per-branch scale-offset
    q, k = rotary(q), rotary(k)                          # RoPE on queries/keys
    A = normalize(q k^T / sqrt(s) + bias, mask)          # single head
    o = (u * (A v)) W_o + b_o

``normalize`` is ``softmax``, ``softmax_plus`` (``softmax(a * log(n) / log(512))``,
n = number of keys the query may see) or ``squared_relu`` (``relu(a)**2 / n``).
"""
import keras
from keras import ops

from bert4keras3 import backend as B

__all__ = ["ScaleOffset", "GatedAttentionUnit"]

register = keras.saving.register_keras_serializable(package="bert4keras3")

_NORMALIZATIONS = ("softmax", "softmax_plus", "squared_relu")


@register
class ScaleOffset(keras.layers.Layer):
    """Element-wise ``x * gamma + beta`` over the last axis (``gamma`` = 1, ``beta`` = 0 initially).

    Args:
        scale: learn ``gamma``.
        offset: learn ``beta``.
    """

    def __init__(self, scale=True, offset=True, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset
        self.supports_masking = True

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError("ScaleOffset needs a known last dimension, found None")
        if self.scale:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        if self.offset:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")

    def call(self, inputs):
        x = inputs
        if self.scale:
            x = x * ops.cast(self.gamma, x.dtype)
        if self.offset:
            x = x + ops.cast(self.beta, x.dtype)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, offset=self.offset)
        return config


def _squeeze_heads(t):
    """Accept masks/biases shaped ``[b, 1, q, k]`` (multi-head layout) as ``[b, q, k]``."""
    if t is not None and len(t.shape) == 4:
        if t.shape[1] not in (1, None):
            raise ValueError(
                "GatedAttentionUnit is single-head: a 4-D attention mask/bias must have "
                f"shape [batch, 1, q, k], found {tuple(t.shape)}"
            )
        t = ops.squeeze(t, axis=1)
    return t


@register
class GatedAttentionUnit(keras.layers.Layer):
    """Gated Attention Unit (single-head attention with a shared q/k projection).

    Sublayers (weight paths): ``i_dense`` (``hidden -> 2 * units + key_size``, activated),
    ``o_dense`` (``units -> hidden``), ``q_scaleoffset``, ``k_scaleoffset``.

    Args:
        units: width ``e`` of the gate ``u`` and the values ``v``.
        key_size: width ``s`` of the shared query/key projection.
        activation: applied to the whole input projection (GAU-alpha: ``"swish"``).
        use_bias: biases on ``i_dense``/``o_dense`` and offsets on the scale-offsets.
        normalization: ``"softmax"``, ``"softmax_plus"`` or ``"squared_relu"``.
        min_length: for ``softmax_plus``, use ``log(max(n, min_length))`` (``None`` = as
            trained).
        attention_scale: divide scores by ``sqrt(key_size)``.
        attention_dropout: dropout rate on the attention weights.
        rotary: apply rotary position embeddings to queries and keys.
        rotary_base: rotary frequency base.

    Call: ``layer(x, attention_mask=None, attention_bias=None, positions=None,
    cache=None, cache_index=None)``.
    ``attention_mask`` is boolean, broadcastable to ``[batch, q, k]`` (``[batch, 1, q, k]``
    accepted; true = may attend); without it the Keras mask of ``x`` (padding) is used.
    ``attention_bias`` is added to the scores. ``positions``: rotary positions
    (``[seq]`` or ``[batch, seq]``, default ``arange(seq)``).

    Key/value cache (decoding): ``cache = (k, v)``, ``k`` ``[batch, length, key_size]``,
    ``v`` ``[batch, length, units]`` (see :meth:`init_cache`); the new tokens' keys and
    values are written at slot ``cache_index`` and the queries attend over all slots
    (``attention_mask`` must cover them). The call then returns ``(output, cache)``.

    Example::

        gau = GatedAttentionUnit(units=1536, key_size=128, activation="swish",
                                 use_bias=False, normalization="softmax_plus")
        y = gau(x, attention_mask=mask)     # x: [batch, seq, 768]
    """

    def __init__(self, units, key_size, activation="swish", use_bias=True,
                 normalization="squared_relu", min_length=None, attention_scale=True,
                 attention_dropout=None, rotary=True, rotary_base=10000.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if normalization not in _NORMALIZATIONS:
            raise ValueError(
                f"normalization must be one of {_NORMALIZATIONS}, found {normalization!r}"
            )
        if rotary and key_size % 2:
            raise ValueError(f"rotary positions need an even key_size, found {key_size}")
        self.units = int(units)
        self.key_size = int(key_size)
        self.activation = activation
        self._act = B.get_activation(activation)
        self.use_bias = use_bias
        self.normalization = normalization
        self.min_length = min_length
        self.attention_scale = attention_scale
        self.attention_dropout = attention_dropout
        self.rotary = rotary
        self.rotary_base = rotary_base
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True
        self.i_dense = keras.layers.Dense(
            2 * self.units + self.key_size, use_bias=use_bias,
            kernel_initializer=self.kernel_initializer, name="i_dense",
        )
        self.q_scaleoffset = ScaleOffset(offset=use_bias, name="q_scaleoffset")
        self.k_scaleoffset = ScaleOffset(offset=use_bias, name="k_scaleoffset")
        self.dropout = keras.layers.Dropout(attention_dropout or 0.0)

    decoding_role = "attention"

    def build(self, input_shape, *args, **kwargs):
        hidden = input_shape[-1]
        if hidden is None:
            raise ValueError("GatedAttentionUnit needs a known hidden size, found None")
        self.i_dense.build(input_shape)
        self.q_scaleoffset.build((None, self.key_size))
        self.k_scaleoffset.build((None, self.key_size))
        self.o_dense = keras.layers.Dense(
            hidden, use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
            name="o_dense",
        )
        self.o_dense.build(tuple(input_shape[:-1]) + (self.units,))

    def init_cache(self, batch, length, dtype=None):
        """A zero key/value cache ``(k, v)`` with ``length`` slots."""
        dtype = dtype or self.compute_dtype
        return (ops.zeros((batch, length, self.key_size), dtype),
                ops.zeros((batch, length, self.units), dtype))

    def project(self, x, positions=None):
        """Project ``x`` ``[batch, seq, hidden]`` to ``(u, q, k, v)``.

        ``q``/``k`` (``[batch, seq, key_size]``) carry the rotary rotation for
        ``positions`` (default ``arange(seq)``); ``u``/``v`` are ``[batch, seq, units]``.
        """
        h = self._act(self.i_dense(x))
        u = h[..., : self.units]
        v = h[..., self.units: 2 * self.units]
        z = h[..., 2 * self.units:]
        q, k = self.q_scaleoffset(z), self.k_scaleoffset(z)
        if self.rotary:
            if positions is None:
                positions = ops.arange(ops.shape(x)[1])
            sin, cos = B.rotary_sin_cos(positions, self.key_size, self.rotary_base)
            q, k = B.apply_rotary(q, sin, cos), B.apply_rotary(k, sin, cos)
        return u, q, k, v

    def attend(self, u, q, k, v, attention_mask=None, attention_bias=None, training=None):
        """Gated attention output ``o_dense(u * (A v))`` of ``q`` over keys ``k``/values ``v``."""
        scores = ops.matmul(q, ops.transpose(k, (0, 2, 1)))
        if self.attention_scale:
            scores = scores / ops.cast(self.key_size ** 0.5, scores.dtype)
        attention_bias = _squeeze_heads(attention_bias)
        if attention_bias is not None:
            scores = scores + ops.cast(attention_bias, scores.dtype)
        attention_mask = _squeeze_heads(attention_mask)
        if attention_mask is not None:
            attention_mask = ops.cast(attention_mask, "bool")
        weights = B.attention_normalize(
            scores, attention_mask, self.normalization, min_length=self.min_length
        )
        weights = self.dropout(weights, training=training)
        return self.o_dense(u * ops.matmul(weights, v))

    def call(self, x, attention_mask=None, attention_bias=None, positions=None,
             cache=None, cache_index=None, training=None, mask=None):
        if attention_mask is None and mask is not None:
            attention_mask = ops.cast(mask, "bool")[:, None, :]
        u, q, k, v = self.project(x, positions)
        if cache is None:
            return self.attend(u, q, k, v, attention_mask, attention_bias, training)
        if cache_index is None:
            raise ValueError("GatedAttentionUnit: a cache needs cache_index (the slot to write)")
        k, v = B.write_cache(cache, (k, v), cache_index)
        return self.attend(u, q, k, v, attention_mask, attention_bias, training), (k, v)

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            key_size=self.key_size,
            activation=self.activation,
            use_bias=self.use_bias,
            normalization=self.normalization,
            min_length=self.min_length,
            attention_scale=self.attention_scale,
            attention_dropout=self.attention_dropout,
            rotary=self.rotary,
            rotary_base=self.rotary_base,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
