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
from bert4keras3.layers.core import ScaleOffset, _is_shape_list

__all__ = ["GatedAttentionUnit"]

register = keras.saving.register_keras_serializable(package="bert4keras3")

_NORMALIZATIONS = ("softmax", "softmax_plus", "squared_relu")


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
    ``o_dense`` (``units -> hidden``), ``q_scaleoffset``, ``k_scaleoffset``; with
    ``self_attention=False`` ``uq_dense``, ``k_dense``, ``v_dense`` (all activated) and
    ``o_dense``, as bert4keras.

    Args:
        units: width ``e`` of the gate ``u`` and the values ``v``.
        key_size: width ``s`` of the shared query/key projection.
        activation: applied to the input projections (GAU-alpha: ``"swish"``).
        use_bias: biases on the projections and offsets on the scale-offsets.
        normalization: ``"softmax"``, ``"softmax_plus"`` or ``"squared_relu"``.
        self_attention: ``False`` for attention of ``q`` over separate ``k``, ``v``
            (bert4keras list call ``layer([q, k, v, ...])`` only).
        attention_scale: divide scores by ``sqrt(key_size)``.
        attention_dropout: dropout rate on the attention weights.
        kernel_initializer: of every projection.
        min_length: for ``softmax_plus``, use ``log(max(n, min_length))`` (``None`` = as
            trained).
        rotary: apply rotary position embeddings to queries and keys (GAU-alpha; the
            default). In the list call ``p_bias="rotary"`` supplies them instead.
        rotary_base: rotary frequency base.

    Two call conventions.

    keyword: ``layer(x, attention_mask=None, attention_bias=None, positions=None,
    cache=None, cache_index=None)``.
    ``attention_mask`` is boolean, broadcastable to ``[batch, q, k]`` (``[batch, 1, q, k]``
    accepted; true = may attend); without it the Keras mask of ``x`` (padding) is used.
    ``attention_bias`` is added to the scores. ``positions``: rotary positions
    (``[seq]`` or ``[batch, seq]``, default ``arange(seq)``).

    bert4keras: ``layer([x] + extra, a_bias=None, p_bias=None)`` (``[q, k, v] + extra``
    with ``self_attention=False``): a truthy ``a_bias`` takes the next input as the
    attention bias (boolean mask or additive, ``[batch, q, k]``); ``p_bias="rotary"``
    takes the next input as interleaved sinusoids ``[batch, seq, key_size]``. The Keras
    mask of the first input masks the keys.

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
                 normalization="squared_relu", self_attention=True, attention_scale=True,
                 attention_dropout=None, kernel_initializer="glorot_uniform", min_length=None,
                 rotary=True, rotary_base=10000.0, **kwargs):
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
        self.self_attention = bool(self_attention)
        self.min_length = min_length
        self.attention_scale = attention_scale
        self.attention_dropout = attention_dropout
        self.rotary = rotary
        self.rotary_base = rotary_base
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

        def dense(units, name):
            return keras.layers.Dense(units, use_bias=use_bias,
                                      kernel_initializer=self.kernel_initializer, name=name,
                                      dtype=self.dtype_policy)

        if self.self_attention:
            self.i_dense = dense(2 * self.units + self.key_size, "i_dense")
            self.q_scaleoffset = ScaleOffset(offset=use_bias, name="q_scaleoffset",
                                             dtype=self.dtype_policy)
            self.k_scaleoffset = ScaleOffset(offset=use_bias, name="k_scaleoffset",
                                             dtype=self.dtype_policy)
        else:
            self.uq_dense = dense(self.units + self.key_size, "uq_dense")
            self.k_dense = dense(self.key_size, "k_dense")
            self.v_dense = dense(self.units, "v_dense")
        self.dropout = keras.layers.Dropout(attention_dropout or 0.0, dtype=self.dtype_policy)

    decoding_role = "attention"

    def build(self, input_shape, *args, **kwargs):
        shapes = list(input_shape) if _is_shape_list(input_shape) else [input_shape]
        hidden = shapes[0][-1]
        if hidden is None:
            raise ValueError("GatedAttentionUnit needs a known hidden size, found None")
        if self.self_attention:
            self.i_dense.build(shapes[0])
            self.q_scaleoffset.build((None, self.key_size))
            self.k_scaleoffset.build((None, self.key_size))
        else:
            if len(shapes) < 3:
                raise ValueError(
                    "GatedAttentionUnit(self_attention=False) takes [q, k, v, ...]; found "
                    f"input shape {input_shape}"
                )
            self.uq_dense.build(shapes[0])
            self.k_dense.build(shapes[1])
            self.v_dense.build(shapes[2])
        self.o_dense = keras.layers.Dense(
            hidden, use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
            name="o_dense", dtype=self.dtype_policy,
        )
        self.o_dense.build(tuple(shapes[0][:-1]) + (self.units,))

    def init_cache(self, batch, length, dtype=None):
        """A zero key/value cache ``(k, v)`` with ``length`` slots."""
        dtype = dtype or self.compute_dtype
        return (ops.zeros((batch, length, self.key_size), dtype),
                ops.zeros((batch, length, self.units), dtype))

    def _rotate(self, q, k, positions):
        if positions is None:
            positions = ops.arange(ops.shape(q)[1])
        sin, cos = B.rotary_sin_cos(positions, self.key_size, self.rotary_base)
        return B.apply_rotary(q, sin, cos), B.apply_rotary(k, sin, cos)

    def project(self, x, positions=None, rotate=True):
        """Project ``x`` ``[batch, seq, hidden]`` to ``(u, q, k, v)``.

        ``q``/``k`` (``[batch, seq, key_size]``) carry the rotary rotation for
        ``positions`` (default ``arange(seq)``) when ``rotary`` and ``rotate``;
        ``u``/``v`` are ``[batch, seq, units]``.
        """
        if not self.self_attention:
            raise ValueError(
                "GatedAttentionUnit(self_attention=False) is called as layer([q, k, v, ...])"
            )
        h = self._act(self.i_dense(x))
        u = h[..., : self.units]
        v = h[..., self.units: 2 * self.units]
        z = h[..., 2 * self.units:]
        q, k = self.q_scaleoffset(z), self.k_scaleoffset(z)
        if self.rotary and rotate:
            q, k = self._rotate(q, k, positions)
        return u, q, k, v

    def attend(self, u, q, k, v, attention_mask=None, attention_bias=None, training=None,
               key_mask=None):
        """Gated attention output ``o_dense(u * (A v))`` of ``q`` over keys ``k``/values ``v``.

        ``key_mask``: a ``[batch, k]`` sequence mask of the keys.
        """
        scores = ops.matmul(q, ops.transpose(k, (0, 2, 1)))
        if self.attention_scale:
            scores = scores / ops.cast(self.key_size ** 0.5, scores.dtype)
        attention_mask = _squeeze_heads(attention_mask)
        attention_bias = _squeeze_heads(attention_bias)
        if attention_bias is not None:
            if B.dtype(attention_bias) == "bool":
                attention_mask = attention_bias if attention_mask is None else ops.logical_and(
                    ops.cast(attention_mask, "bool"), attention_bias)
            else:
                scores = scores + ops.cast(attention_bias, scores.dtype)
        if key_mask is not None:
            key_mask = ops.cast(key_mask, "bool")[:, None, :]
            attention_mask = key_mask if attention_mask is None else ops.logical_and(
                ops.cast(attention_mask, "bool"), key_mask)
        if attention_mask is not None:
            attention_mask = ops.cast(attention_mask, "bool")
        weights = B.attention_normalize(
            scores, attention_mask, method=self.normalization, min_length=self.min_length
        )
        weights = self.dropout(weights, training=training)
        return self.o_dense(u * ops.matmul(weights, v))

    def _call_list(self, inputs, mask, a_bias, p_bias, training):
        """bert4keras' ``layer([x (or q, k, v), (a_bias), (sinusoids)], a_bias=, p_bias=)``."""
        inputs = list(inputs)
        if p_bias not in (None, "rotary"):
            raise ValueError(f"GatedAttentionUnit: p_bias must be None or 'rotary', found {p_bias!r}")
        n = 1 if self.self_attention else 3
        if len(inputs) < n:
            raise ValueError(
                f"GatedAttentionUnit(self_attention={self.self_attention}) takes at least {n} "
                f"input(s) in its list call, found {len(inputs)}"
            )
        key_mask = None
        if isinstance(mask, (list, tuple)):
            key_mask = mask[0] if self.self_attention else mask[2]
        bias = None
        if a_bias:
            bias, n = inputs[n], n + 1
            if len(bias.shape) == 4:
                bias = _squeeze_heads(bias)
        if self.self_attention:
            u, q, k, v = self.project(inputs[0], rotate=p_bias is None)
        else:
            q, k, v = inputs[:3]
            uq = self._act(self.uq_dense(q))
            u, q = uq[..., : self.units], uq[..., self.units:]
            k, v = self._act(self.k_dense(k)), self._act(self.v_dense(v))
            if self.rotary and p_bias is None:
                q, k = self._rotate(q, k, None)
        if p_bias == "rotary":
            q, k = B.apply_rotary_position_embeddings(inputs[n], q, k)
        return self.attend(u, q, k, v, attention_bias=bias, training=training,
                           key_mask=key_mask)

    def call(self, x, attention_mask=None, attention_bias=None, positions=None,
             cache=None, cache_index=None, training=None, mask=None, a_bias=None, p_bias=None):
        if isinstance(x, (list, tuple)):
            return self._call_list(x, mask, a_bias, p_bias, training)
        if a_bias is not None or p_bias is not None:
            raise ValueError(
                "a_bias / p_bias belong to the list call layer([x, ...], a_bias=..., p_bias=...); "
                "with a single tensor use attention_mask / attention_bias / positions"
            )
        if attention_mask is None and mask is not None:
            attention_mask = ops.cast(mask, "bool")[:, None, :]
        u, q, k, v = self.project(x, positions)
        if cache is None:
            return self.attend(u, q, k, v, attention_mask, attention_bias, training)
        if cache_index is None:
            raise ValueError("GatedAttentionUnit: a cache needs cache_index (the slot to write)")
        k, v = B.write_cache(cache, (k, v), cache_index)
        return self.attend(u, q, k, v, attention_mask, attention_bias, training), (k, v)

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            return mask[0]
        return mask

    def compute_output_shape(self, input_shape, *args, **kwargs):
        if _is_shape_list(input_shape):
            return tuple(input_shape[0])
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            key_size=self.key_size,
            activation=self.activation,
            use_bias=self.use_bias,
            normalization=self.normalization,
            self_attention=self.self_attention,
            min_length=self.min_length,
            attention_scale=self.attention_scale,
            attention_dropout=self.attention_dropout,
            rotary=self.rotary,
            rotary_base=self.rotary_base,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
