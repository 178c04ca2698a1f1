"""Core Keras layers: embeddings, normalisation, attention, feed-forward.

All layers use ``keras.ops`` only, implement ``get_config`` and are registered
for ``.keras`` serialization under the package name ``bert4keras3``. Names and
arguments follow bert4keras (``ScaleOffset``, ``LayerNormalization``,
``PositionEmbedding``, ``SinusoidalPositionEmbedding``, ``RelativePositionEmbedding``,
``MultiHeadAttention``, ``FeedForward``, ...).
"""
import functools

import numpy as np

import keras
from keras import ops

from bert4keras3 import backend as B

__all__ = [
    "Layer",
    "integerize_shape",
    "Embedding",
    "Add",
    "BiasAdd",
    "ScaleOffset",
    "LayerNormalization",
    "PositionEmbedding",
    "SinusoidalPositionEmbedding",
    "RelativePositionEmbedding",
    "relative_position_table",
    "MultiHeadAttention",
    "FeedForward",
    "AttentionMask",
    "FirstToken",
]

register = keras.saving.register_keras_serializable(package="bert4keras3")


class Layer(keras.layers.Layer):
    """``keras.layers.Layer`` that passes Keras masks through (bert4keras' base ``Layer``).

    Subclass it as in bert4keras; override ``compute_mask`` to change the mask.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True


def integerize_shape(func):
    """Decorator of ``build(self, input_shape)``: dims as Python ints or ``None`` (bert4keras).

    Keras 3 shapes already are; kept so that ported layers run unchanged.
    """

    def convert(item):
        if isinstance(item, (list, tuple)):
            return type(item)(convert(i) for i in item)
        return item if item is None else int(item)

    @functools.wraps(func)
    def new_func(self, input_shape):
        return func(self, convert(input_shape))

    return new_func


def _is_shape_list(shape):
    """True for a list of shapes (list input), False for one shape."""
    return isinstance(shape, (list, tuple)) and len(shape) > 0 and isinstance(
        shape[0], (list, tuple)
    )


def _get_initializer(identifier):
    """``keras.initializers.get`` that also knows bert4keras' ``"Sinusoidal"`` by name."""
    if isinstance(identifier, str) and identifier.lower() == "sinusoidal":
        return B.Sinusoidal()
    return keras.initializers.get(identifier)


def fusable_denses(denses):
    """Whether ``keras.layers.Dense`` layers can run as one product of their concatenated
    kernels (decoding speed): built, bias-free, not quantized (LoRA is in ``Dense.kernel``)."""
    return all(d.built and not d.use_bias and getattr(d, "quantization_mode", None) is None
               for d in denses)


def _active(value):
    """bert4keras' ``scale`` / ``offset`` convention: anything but False/None is on."""
    return value is not False and value is not None


@register
class Embedding(keras.layers.Embedding):
    """Token embedding that doubles as the tied output projection.

    ``layer(ids)`` looks ids up; ``layer(hidden, mode="dense")`` returns
    ``hidden @ embeddings.T`` (logits over the vocabulary), sharing weights.

    With ``mask_zero=True`` the Keras mask is ``ids != 0`` except that the first
    position is never masked (as in bert4keras: a T5 decoder starts from id 0).
    In dense mode the incoming mask passes through.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.supports_masking = True

    def call(self, inputs, mode="embedding"):
        if mode == "embedding":
            return super().call(inputs)
        if mode == "dense":
            kernel = ops.cast(self.embeddings, inputs.dtype)
            # contract the last axes directly: with an explicit transpose XLA:CPU (JAX)
            # copies the [vocab, dim] matrix and runs the product as a strided loop
            # fusion (2.8 ms vs 1.2 ms per mT5-small decoding step). tensordot, not an
            # "...d,vd->...v" einsum: Keras' TensorFlow einsum with an ellipsis returns
            # wrong float16 results (logits off by ~30 on a 32-wide hidden state)
            return ops.tensordot(inputs, kernel, axes=[[len(inputs.shape) - 1], [1]])
        raise ValueError(f"Embedding mode must be 'embedding' or 'dense', found {mode!r}")

    def compute_mask(self, inputs, mask=None):
        if len(inputs.shape) > 2 or not self.mask_zero:
            # dense mode (hidden states in): pass the incoming mask through
            return mask if len(inputs.shape) > 2 else None
        keep = ops.not_equal(inputs, 0)
        first = ops.ones_like(keep[:, :1])
        return ops.concatenate([first, keep[:, 1:]], axis=1)

    def compute_output_shape(self, input_shape, mode="embedding"):
        if mode == "dense":
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, mode="embedding"):
        if mode == "dense":
            return keras.KerasTensor(
                tuple(inputs.shape[:-1]) + (self.input_dim,), dtype=self.compute_dtype
            )
        return super().compute_output_spec(inputs)


@register
class Add(keras.layers.Add):
    """Element-wise sum whose Keras mask is the AND of the inputs' masks.

    Inputs without a mask count as all-true, so ``Add()([token_emb, segment_emb])``
    keeps the token embedding's padding mask (Keras 3's own ``Add`` drops the mask
    as soon as one input has none, which silently lets padding reach heads,
    pooling and losses; Keras 2, which bert4keras ran on, kept it).
    """

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        masks = [m for m in mask if m is not None]
        if not masks:
            return None
        out = ops.cast(masks[0], "bool")
        for m in masks[1:]:
            out = ops.logical_and(out, ops.cast(m, "bool"))
        return out


@register
class BiasAdd(keras.layers.Layer):
    """Add a trainable bias over the last axis (e.g. the MLM output bias)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        self.bias = self.add_weight(
            name="bias", shape=(input_shape[-1],), initializer="zeros"
        )

    def call(self, inputs):
        return inputs + ops.cast(self.bias, inputs.dtype)


@register
class ScaleOffset(keras.layers.Layer):
    """Affine map of the last axis, ``x * gamma + beta`` (bert4keras).

    Args:
        scale: ``True``: learn ``gamma`` (initialised to 1); ``False``/``None``: none;
            a number (or array): a constant ``gamma``.
        offset: likewise for ``beta`` (initialised to 0).
        conditional: inputs are ``[x, condition]``; ``gamma`` and ``beta`` are shifted
            by zero-initialised projections of the condition (``gamma_dense``,
            ``beta_dense``), so the layer starts as the unconditional one.
        hidden_units: first project the condition with ``hidden_dense`` (no bias).
        hidden_activation, hidden_initializer: of ``hidden_dense``.

    A condition ``[batch, c]`` applies to every position; ``[batch, seq, c]`` per position.
    """

    def __init__(self, scale=True, offset=True, conditional=False, hidden_units=None,
                 hidden_activation="linear", hidden_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset
        self.conditional = conditional
        self.hidden_units = hidden_units
        self.hidden_activation = hidden_activation
        self.hidden_initializer = keras.initializers.get(hidden_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        shape = input_shape[0] if self.conditional else input_shape
        dim = shape[-1]
        if dim is None:
            raise ValueError(f"{type(self).__name__} needs a known last dimension, found None")
        if self.scale is True:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        if self.offset is True:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        if self.conditional:
            if not _is_shape_list(input_shape) or len(input_shape) != 2:
                raise ValueError(
                    f"{type(self).__name__}(conditional=True) takes [x, condition], "
                    f"found input shape {input_shape}"
                )
            cond_shape = tuple(input_shape[1])
            if self.hidden_units is not None:
                self.hidden_dense = keras.layers.Dense(
                    self.hidden_units,
                    activation=B.get_activation(self.hidden_activation),
                    use_bias=False,
                    kernel_initializer=self.hidden_initializer,
                    name="hidden_dense", dtype=self.dtype_policy
                )
                self.hidden_dense.build(cond_shape)
                cond_shape = cond_shape[:-1] + (self.hidden_units,)
            if _active(self.scale):
                self.gamma_dense = keras.layers.Dense(
                    dim, use_bias=False, kernel_initializer="zeros", name="gamma_dense",
                    dtype=self.dtype_policy
                )
                self.gamma_dense.build(cond_shape)
            if _active(self.offset):
                self.beta_dense = keras.layers.Dense(
                    dim, use_bias=False, kernel_initializer="zeros", name="beta_dense",
                    dtype=self.dtype_policy
                )
                self.beta_dense.build(cond_shape)

    def split_inputs(self, inputs):
        """``(x, condition)``: the condition projected and aligned with ``x`` (or None)."""
        if not self.conditional:
            return inputs, None
        x, cond = inputs
        if self.hidden_units is not None:
            cond = self.hidden_dense(cond)
        while len(cond.shape) < len(x.shape):
            cond = ops.expand_dims(cond, 1)
        return x, cond

    def scale_offset(self, x, cond=None):
        """Apply ``gamma`` / ``beta`` (shifted by the condition) to ``x``."""
        dtype = x.dtype
        if _active(self.scale):
            gamma = self.gamma if self.scale is True else self.scale
            gamma = ops.cast(gamma, dtype)
            if cond is not None:
                gamma = gamma + self.gamma_dense(cond)
            x = x * gamma
        if _active(self.offset):
            beta = self.beta if self.offset is True else self.offset
            beta = ops.cast(beta, dtype)
            if cond is not None:
                beta = beta + self.beta_dense(cond)
            x = x + beta
        return x

    def call(self, inputs):
        x, cond = self.split_inputs(inputs)
        return self.scale_offset(x, cond)

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            return mask[0]
        return mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0]) if self.conditional else tuple(input_shape)

    @staticmethod
    def _plain(value):
        if isinstance(value, (bool, int, float)) or value is None:
            return value
        return keras.ops.convert_to_numpy(value).tolist()

    def get_config(self):
        config = super().get_config()
        config.update(
            scale=self._plain(self.scale),
            offset=self._plain(self.offset),
            conditional=self.conditional,
            hidden_units=self.hidden_units,
            hidden_activation=self.hidden_activation,
            hidden_initializer=keras.initializers.serialize(self.hidden_initializer),
        )
        return config


@register
class LayerNormalization(ScaleOffset):
    """(Conditional) layer normalisation, a :class:`ScaleOffset` after normalising (bert4keras).

    * standard: ``zero_mean=True, unit_variance=True`` (gamma, beta);
    * RMS norm (T5): ``zero_mean=False, offset=False``;
    * parameter-free (RoFormerV2): ``zero_mean=False, offset=False, scale=False``;
    * conditional: ``conditional=True`` and inputs ``[x, condition]`` (see
      :class:`ScaleOffset`).

    ``epsilon`` defaults to ``keras.config.epsilon()`` (bert4keras' ``K.epsilon()``).
    ``center`` is accepted as another name of ``offset`` (Keras spelling). Statistics are
    computed in float32 whatever the compute dtype.
    """

    def __init__(self, zero_mean=True, unit_variance=True, epsilon=None, scale=True,
                 offset=True, center=None, **kwargs):
        if center is not None:
            if offset is not True and bool(offset) != bool(center):
                raise ValueError(
                    f"LayerNormalization: center={center!r} and offset={offset!r} disagree "
                    "(center is another name of offset); pass one of them"
                )
            offset = center
        super().__init__(scale=scale, offset=offset, **kwargs)
        self.zero_mean = zero_mean
        self.unit_variance = unit_variance
        self.epsilon = keras.config.epsilon() if epsilon is None else epsilon

    @property
    def center(self):
        """Keras' name of ``offset``: whether ``beta`` is used."""
        return _active(self.offset)

    def call(self, inputs):
        x, cond = self.split_inputs(inputs)
        dtype = x.dtype
        h = ops.cast(x, "float32")
        if self.zero_mean:
            h = h - ops.mean(h, axis=-1, keepdims=True)
        if self.unit_variance:
            variance = ops.mean(ops.square(h), axis=-1, keepdims=True)
            h = h * ops.rsqrt(variance + self.epsilon)
        return self.scale_offset(ops.cast(h, dtype), cond)

    def get_config(self):
        config = super().get_config()
        config.update(
            zero_mean=self.zero_mean,
            unit_variance=self.unit_variance,
            epsilon=self.epsilon,
        )
        return config


_MERGE_MODES = ("add", "mul", "zero", "concat")


class _PositionMerge(keras.layers.Layer):
    """Shared plumbing of position embeddings: inputs, merge modes, mask, shapes."""

    def __init__(self, output_dim, merge_mode="add", custom_position_ids=False, **kwargs):
        super().__init__(**kwargs)
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {_MERGE_MODES}, found {merge_mode!r}")
        self.output_dim = output_dim
        self.merge_mode = merge_mode
        self.custom_position_ids = custom_position_ids
        self.supports_masking = True

    def position_embeddings(self, x, position_ids):
        """``[batch or 1, seq, output_dim]`` embeddings (``position_ids`` None = arange)."""
        raise NotImplementedError

    #: cached decoding passes the positions of the new tokens (see ``models.base``)
    decoding_role = "positions"

    def call(self, inputs, positions=None):
        """``positions`` (int ``[batch, seq]``) overrides ``arange(seq)`` (cached decoding)."""
        if self.custom_position_ids:
            x, position_ids = inputs
        else:
            x, position_ids = inputs, positions
        pos = ops.cast(self.position_embeddings(x, position_ids), x.dtype)
        if self.merge_mode == "add":
            return x + pos
        if self.merge_mode == "mul":
            return x * (pos + 1.0)
        pos = ops.broadcast_to(pos, tuple(ops.shape(x)[:-1]) + (self.output_dim,))
        if self.merge_mode == "zero":
            return pos
        return ops.concatenate([x, pos], axis=-1)

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            return mask[0]
        return mask

    def compute_output_shape(self, input_shape):
        if self.custom_position_ids:
            input_shape = input_shape[0]
        if self.merge_mode == "concat":
            last = None if input_shape[-1] is None else input_shape[-1] + self.output_dim
            return tuple(input_shape[:-1]) + (last,)
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(output_dim=self.output_dim, merge_mode=self.merge_mode,
                      custom_position_ids=self.custom_position_ids)
        return config


@register
class PositionEmbedding(_PositionMerge):
    """Trainable absolute position embedding (BERT), bert4keras arguments.

    Input: ``x`` (``[batch, seq, dim]``), or ``[x, position_ids]`` with
    ``custom_position_ids=True``. ``merge_mode``: ``"add"``, ``"mul"`` (``x * (1 + p)``),
    ``"zero"`` (the embeddings alone, broadcast over the batch) or ``"concat"``
    (``[x, p]`` on the last axis).

    ``hierarchical`` (``True`` = 0.4, or a number ``alpha``) extends a table of ``n``
    trained positions to ``n * n`` (hierarchical decomposition): with
    ``u_i = (p_i - alpha p_0) / (1 - alpha)``, position ``k`` gets
    ``alpha * u_{k // n} + (1 - alpha) * u_{k % n}``, which equals ``p_k`` for ``k < n``.
    """

    def __init__(self, input_dim, output_dim, merge_mode="add", hierarchical=None,
                 embeddings_initializer="zeros", custom_position_ids=False, **kwargs):
        super().__init__(output_dim, merge_mode, custom_position_ids, **kwargs)
        self.input_dim = input_dim
        self.hierarchical = hierarchical
        self.embeddings_initializer = _get_initializer(embeddings_initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )

    def position_embeddings(self, x, position_ids):
        if self.hierarchical:
            alpha = 0.4 if self.hierarchical is True else float(self.hierarchical)
            if position_ids is None:
                position_ids = ops.arange(ops.shape(x)[1])[None]
            position_ids = ops.cast(position_ids, "int32")
            table = (self.embeddings - alpha * self.embeddings[:1]) / (1.0 - alpha)
            high = ops.take(table, position_ids // self.input_dim, axis=0)
            low = ops.take(table, position_ids % self.input_dim, axis=0)
            return alpha * high + (1.0 - alpha) * low
        if position_ids is None:
            return self.embeddings[None, : ops.shape(x)[1]]
        return ops.take(self.embeddings, ops.cast(position_ids, "int32"), axis=0)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            hierarchical=self.hierarchical,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config


@register
class SinusoidalPositionEmbedding(_PositionMerge):
    """Fixed sinusoidal position embedding in bert4keras' layout.

    Features alternate ``sin, cos`` per frequency ``base ** (-2i / output_dim)``
    (``emb[..., 0::2]`` sines, ``emb[..., 1::2]`` cosines), so
    ``SinusoidalPositionEmbedding(d, "zero")`` feeds
    :func:`bert4keras3.backend.apply_rotary_position_embeddings` (RoPE) directly.
    Input and ``merge_mode`` as in :class:`PositionEmbedding`; custom position ids may be
    fractional.
    """

    def __init__(self, output_dim, merge_mode="add", custom_position_ids=False,
                 base=10000.0, **kwargs):
        super().__init__(output_dim, merge_mode, custom_position_ids, **kwargs)
        self.base = base

    def position_embeddings(self, x, position_ids):
        if position_ids is None:
            position_ids = ops.arange(ops.shape(x)[1])[None]
        return B.sinusoidal_embeddings(position_ids, self.output_dim, self.base)

    def get_config(self):
        config = super().get_config()
        config.update(base=self.base)
        return config


@functools.lru_cache(maxsize=32)
def _relative_position_table(max_relative_position, dim, base):
    rows = np.arange(2 * max_relative_position + 1, dtype=np.float64)[:, None]
    angles = rows * np.power(float(base), -np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.zeros((len(rows), dim), dtype=np.float64)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles)
    table.setflags(write=False)
    return table


def relative_position_table(max_relative_position, dim, base=10000.0):
    """NEZHA's fixed table of relative position embeddings, ``[2m + 1, dim]`` float64.

    Row ``r`` (``r = clip(j - i, -m, m) + m`` for query ``i`` and key ``j``) holds the
    sinusoid of the *row index* ``r`` (not of the distance), interleaved:
    ``table[r, 2t] = sin(r / base**(2t / dim))``, ``table[r, 2t + 1] = cos(...)``.
    This is NEZHA's ``_generate_relative_positions_embeddings`` (sines in the even
    columns, cosines in the odd ones), transformers' ``NezhaRelativePositionsEncoding``,
    and bert4keras' ``RelativePositionEmbedding`` with its ``Sinusoidal`` initializer.
    """
    if dim % 2:
        raise ValueError(f"relative position embeddings need an even dim, found {dim}")
    return _relative_position_table(int(max_relative_position), int(dim), float(base))


@register
class RelativePositionEmbedding(keras.layers.Layer):
    """Relative position embedding of Shaw et al. (NEZHA), bert4keras.

    Call ``layer([query_states, key_states])``; returns ``[q_len, k_len, output_dim]``,
    row ``embeddings[clip(j - i, -m, m) + m]`` for query ``i`` and key ``j``, with
    ``m = (input_dim - 1) // 2``. Feed it to :class:`MultiHeadAttention` with
    ``p_bias="typical_relative"``. NEZHA's fixed table is
    ``embeddings_initializer="Sinusoidal"`` with ``trainable=False`` (see
    :func:`relative_position_table`; :class:`MultiHeadAttention`'s
    ``max_relative_position`` computes the same without a weight).
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = _get_initializer(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )

    def compute_position_ids(self, inputs):
        """Int ``[q_len, k_len]`` rows of ``embeddings`` used for each (query, key) pair."""
        q, v = inputs
        q_idx = ops.arange(ops.shape(q)[1], dtype="int32")[:, None]
        v_idx = ops.arange(ops.shape(v)[1], dtype="int32")[None, :]
        max_position = (self.input_dim - 1) // 2
        return ops.clip(v_idx - q_idx, -max_position, max_position) + max_position

    def call(self, inputs):
        return ops.take(self.embeddings, self.compute_position_ids(inputs), axis=0)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0][1], input_shape[1][1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            input_dim=self.input_dim,
            output_dim=self.output_dim,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config


_P_BIASES = (None, "rotary", "typical_relative", "t5_relative")


@register
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention (bert4keras layout: ``q_dense``, ``k_dense``, ``v_dense``, ``o_dense``).

    Args:
        heads: number of heads.
        head_size: per-head size of values.
        out_dim: output size (default ``heads * head_size``).
        key_size: per-head size of queries/keys (default ``head_size``).
        use_bias: biases on the four projections.
        attention_scale: divide scores by ``sqrt(key_size)``.
        attention_dropout: dropout rate on the attention weights.
        return_attention_scores: return ``[output, scores]``, ``scores`` the
            ``[batch, heads, q, k]`` logits after position bias and scaling, before the
            attention bias and masks (as bert4keras).
        normalization: ``"softmax"``, ``"softmax_plus"`` or ``"squared_relu"``
            (see :func:`bert4keras3.backend.attention_normalize`).
        min_length: clamp of n for ``softmax_plus`` (``None`` = as trained; bert4keras
            clamped at 16).
        rotary: apply RoFormer rotary position embeddings to queries and keys.
        rotary_base: rotary frequency base.
        max_relative_position: ``m`` switches on NEZHA's functional relative position
            embeddings (Shaw et al.) in the keyword call: with ``r_ij`` the row
            ``clip(p_j - p_i, -m, m) + m`` of the fixed table of
            :func:`relative_position_table` (``2m + 1`` rows of ``key_size``; needs
            ``key_size == head_size``), scores get ``q_i . r_ij`` (before scaling) and
            outputs ``sum_j a_ij r_ij``. ``p_i`` / ``p_j`` are ``positions`` /
            ``key_positions`` (see below). ``None`` (default): off.
        fused_attention: compute softmax attention with ``keras.ops.dot_product_attention``
            (the backend's fused kernel: ``torch.nn.functional.scaled_dot_product_attention``
            on PyTorch, cuDNN / flash kernels where JAX finds them) wherever the call
            allows it: keyword call without a key/value cache, no relative embeddings, no
            returned scores, no attention dropout while training. ``None`` (default): on
            for PyTorch only, where it is measured faster on CPU (``python scripts/bench.py
            attention``); on JAX and TensorFlow CPU the fused op is not faster than this
            layer's own path. Needs ``normalization="softmax"``, ``key_size == head_size``
            and no ``max_relative_position`` (a conflicting ``True`` raises).

    Two call conventions.

    bert4keras: ``layer([q, k, v] + extra, a_bias=None, p_bias=None)``. With a truthy
    ``a_bias`` the next extra input is the attention bias: boolean (true = may attend) or
    additive, ``[batch, q, k]`` or ``[batch, heads, q, k]``. ``p_bias`` takes the
    following extra input: ``"rotary"`` (interleaved sinusoids ``[batch, seq, key_size]``,
    e.g. ``SinusoidalPositionEmbedding(key_size, "zero")(x)``), ``"typical_relative"``
    (``RelativePositionEmbedding`` output ``[q, k, key_size]``) or ``"t5_relative"``
    (``RelativePositionEmbeddingT5`` output). The Keras mask of ``v`` masks the keys.

    keyword: ``layer(query, key=None, value=None, attention_mask=None,
    attention_bias=None, positions=None, key_positions=None, cache=None,
    cache_index=None)``.
    ``attention_mask`` is boolean, broadcastable to ``[batch, heads, q, k]``
    (true = may attend; without it, self-attention uses the query's Keras mask on the
    keys); ``attention_bias`` is added to the scaled scores (e.g. T5's relative bias);
    ``positions`` / ``key_positions`` are the positions (``[q]`` / ``[k]``, or per row
    ``[batch, q]`` / ``[batch, k]``) of queries and keys for rotary and relative position
    embeddings (default ``arange``; self-attention keys default to ``positions``). With a
    key/value cache, ``key_positions`` are the positions held by the cache slots (relative
    embeddings; default ``arange(length)``) and rotary keys of the new tokens use
    ``positions``.

    Key/value cache (static shapes, for decoding): ``cache = (k, v)`` with
    ``k`` ``[batch, heads, length, key_size]`` and ``v`` ``[batch, heads, length,
    head_size]`` (see :meth:`init_cache`, :meth:`kv_cache`; heads first, so no step
    transposes the cache). With ``cache_index`` (an int scalar)
    the keys/values of the new tokens are written into the cache at that slot and
    the queries attend over all ``length`` slots (``attention_mask`` must cover
    them); without it the cache is read-only (e.g. cross-attention over
    precomputed encoder keys). The call then returns ``(output, cache)``.
    """

    decoding_role = "attention"

    def __init__(self, heads, head_size, out_dim=None, key_size=None, use_bias=True,
                 attention_scale=True, attention_dropout=None, return_attention_scores=False,
                 normalization="softmax", min_length=None, rotary=False, rotary_base=10000.0,
                 max_relative_position=None, kernel_initializer="glorot_uniform",
                 fused_attention=None, **kwargs):
        super().__init__(**kwargs)
        if normalization not in ("softmax", "softmax_plus", "squared_relu"):
            raise ValueError(
                "normalization must be 'softmax', 'softmax_plus' or 'squared_relu', "
                f"found {normalization!r}"
            )
        if fused_attention not in (None, True, False):
            raise ValueError(f"fused_attention must be None, True or False, found "
                             f"{fused_attention!r}")
        if fused_attention:
            conflicts = [text for bad, text in (
                (normalization != "softmax", f"normalization={normalization!r}"),
                ((key_size or head_size) != head_size,
                 f"key_size={key_size} != head_size={head_size}"),
                (max_relative_position is not None,
                 f"max_relative_position={max_relative_position}")) if bad]
            if conflicts:
                raise ValueError("fused_attention=True needs softmax attention with "
                                 "key_size == head_size and no relative embeddings; found "
                                 + ", ".join(conflicts))
        if max_relative_position is not None:
            if isinstance(max_relative_position, bool) or int(max_relative_position) != \
                    max_relative_position or max_relative_position < 1:
                raise ValueError("max_relative_position must be a positive int (or None), "
                                 f"found {max_relative_position!r}")
            max_relative_position = int(max_relative_position)
            if (key_size or head_size) != head_size:
                raise ValueError(
                    "relative position embeddings are added to keys and values, so they "
                    f"need key_size == head_size; found key_size={key_size}, "
                    f"head_size={head_size}"
                )
        self.heads = heads
        self.head_size = head_size
        self.out_dim = out_dim or heads * head_size
        self.key_size = key_size or head_size
        self.use_bias = use_bias
        self.attention_scale = attention_scale
        self.attention_dropout = attention_dropout
        self.return_attention_scores = bool(return_attention_scores)
        self.normalization = normalization
        self.min_length = min_length
        self.rotary = rotary
        self.rotary_base = rotary_base
        self.max_relative_position = max_relative_position
        self.fused_attention = fused_attention
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        def dense(units, name):
            return keras.layers.Dense(
                units, use_bias=use_bias, kernel_initializer=self.kernel_initializer, name=name,
                dtype=self.dtype_policy
            )
        self.q_dense = dense(self.key_size * heads, "q_dense")
        self.k_dense = dense(self.key_size * heads, "k_dense")
        self.v_dense = dense(self.head_size * heads, "v_dense")
        self.o_dense = dense(self.out_dim, "o_dense")
        self.dropout = keras.layers.Dropout(attention_dropout or 0.0, dtype=self.dtype_policy)

    def build(self, query_shape, key_shape=None, value_shape=None, *args, **kwargs):
        if _is_shape_list(query_shape):  # layer([q, k, v, ...])
            query_shape, key_shape, value_shape = query_shape[:3]
        key_shape = key_shape or query_shape
        value_shape = value_shape or key_shape
        self.q_dense.build(query_shape)
        self.k_dense.build(key_shape)
        self.v_dense.build(value_shape)
        self.o_dense.build(tuple(query_shape[:-1]) + (self.heads * self.head_size,))

    def project_q(self, query):
        """Project queries to ``[batch, q, heads, key_size]`` (no rotary)."""
        q = self.q_dense(query)
        return ops.reshape(q, ops.shape(q)[:-1] + (self.heads, self.key_size))

    def rotate(self, x, positions):
        """Apply the rotary encoding for ``positions`` to projected ``x`` (no-op without rotary)."""
        if not self.rotary:
            return x
        sin, cos = B.rotary_sin_cos(positions, self.key_size, self.rotary_base)
        return B.apply_rotary(x, sin, cos)

    def project_kv(self, key, value):
        """Project keys and values to ``[batch, k, heads, size]`` (no rotary)."""
        k = self.k_dense(key)
        v = self.v_dense(value)
        k = ops.reshape(k, ops.shape(k)[:-1] + (self.heads, self.key_size))
        v = ops.reshape(v, ops.shape(v)[:-1] + (self.heads, self.head_size))
        return k, v

    def kv_cache(self, key, value):
        """A read-only cache ``(k, v)`` (heads first) of projected ``key`` / ``value``."""
        k, v = self.project_kv(key, value)
        return ops.transpose(k, (0, 2, 1, 3)), ops.transpose(v, (0, 2, 1, 3))

    def attention_scores(self, q, k, heads_first=False, relative=None, position_bias=None):
        """Scores ``[batch, heads, q, k]`` of projected ``q`` / ``k``, scaled.

        ``relative`` (``[q, k, key_size]``, or ``[batch, q, k, key_size]``) adds
        ``q . r_ij`` and ``position_bias`` (``[batch or 1, heads, q, k]``) is added, both
        before scaling (bert4keras).
        """
        scores = B.multihead_scores(q, k, key_heads_first=heads_first)
        if relative is not None:
            equation = "bjhd,jkd->bhjk" if len(relative.shape) == 3 else "bjhd,bjkd->bhjk"
            scores = scores + ops.einsum(equation, q, ops.cast(relative, q.dtype))
        if position_bias is not None:
            scores = scores + ops.cast(position_bias, scores.dtype)
        if self.attention_scale:
            scores = scores / ops.cast(self.key_size ** 0.5, scores.dtype)
        return scores

    def attention_output(self, weights, v, heads_first=False, relative=None):
        """``o_dense`` of the weighted values (+ ``sum_j a_ij r_ij`` with ``relative``)."""
        out = B.multihead_values(weights, v, value_heads_first=heads_first)
        if relative is not None:
            equation = "bhjk,jkd->bjhd" if len(relative.shape) == 3 else "bhjk,bjkd->bjhd"
            out = out + ops.einsum(equation, weights, ops.cast(relative, weights.dtype))
        out = ops.reshape(out, ops.shape(out)[:-2] + (self.heads * self.head_size,))
        return self.o_dense(out)

    def attend(self, q, k, v, attention_mask=None, attention_bias=None, training=None,
               heads_first=False, return_scores=False, relative=None):
        """Attention of projected ``q`` over projected ``k``/``v``; returns the output projection.

        ``q`` is ``[batch, q, heads, size]``; ``k``/``v`` are ``[batch, k, heads, size]``, or
        ``[batch, heads, k, size]`` with ``heads_first`` (caches). ``relative``: relative
        position embeddings (see :meth:`relative_embeddings`).
        """
        if self.uses_fused_kernel(training, heads_first, return_scores, relative):
            return self.fused_attend(q, k, v, attention_mask, attention_bias)
        scores = self.attention_scores(q, k, heads_first, relative=relative)
        if attention_bias is not None:
            scores = scores + ops.cast(attention_bias, scores.dtype)
        if attention_mask is not None:
            attention_mask = ops.cast(attention_mask, "bool")
        weights = B.attention_normalize(
            scores, attention_mask, method=self.normalization, min_length=self.min_length
        )
        weights = self.dropout(weights, training=training)
        out = self.attention_output(weights, v, heads_first, relative=relative)
        return (out, scores) if return_scores else out

    def uses_fused_kernel(self, training=None, heads_first=False, return_scores=False,
                          relative=None):
        """Whether :meth:`attend` runs ``keras.ops.dot_product_attention`` for this call."""
        wanted = self.fused_attention
        if wanted is None:
            wanted = keras.backend.backend() == "torch"
        return bool(wanted and not heads_first and not return_scores and relative is None
                    and self.normalization == "softmax" and self.key_size == self.head_size
                    and self.max_relative_position is None
                    and not (training and self.attention_dropout))

    def fused_attend(self, q, k, v, attention_mask=None, attention_bias=None):
        """:meth:`attend` through ``keras.ops.dot_product_attention`` (softmax only)."""
        scale = self.key_size ** -0.5 if self.attention_scale else 1.0
        mask = None if attention_mask is None else ops.cast(attention_mask, "bool")
        bias = None if attention_bias is None else ops.cast(attention_bias, q.dtype)
        if bias is not None and mask is not None:  # the op takes one of them
            bias = ops.where(mask, bias, ops.cast(B.large_negative(q.dtype), q.dtype))
            mask = None
        out = ops.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=scale)
        out = ops.reshape(out, ops.shape(out)[:-2] + (self.heads * self.head_size,))
        return self.o_dense(out)

    @property
    def uses_key_positions(self):
        """Whether cached decoding must pass the positions of the cache slots."""
        return self.max_relative_position is not None

    def relative_embeddings(self, positions, key_positions):
        """NEZHA's ``r_ij`` for query ``positions`` and ``key_positions``.

        Both 1-D: ``[q, k, key_size]`` (shared by the batch, as bert4keras); otherwise
        (per-row positions, e.g. cached decoding) ``[batch, q, k, key_size]``.
        """
        m = self.max_relative_position
        positions = ops.cast(positions, "int32")
        key_positions = ops.cast(key_positions, "int32")
        if len(positions.shape) == 1 and len(key_positions.shape) == 1:
            distance = key_positions[None, :] - positions[:, None]
        else:
            if len(positions.shape) == 1:
                positions = positions[None]
            if len(key_positions.shape) == 1:
                key_positions = key_positions[None]
            distance = key_positions[:, None, :] - positions[:, :, None]
        table = ops.convert_to_tensor(relative_position_table(m, self.key_size),
                                      dtype=self.compute_dtype)
        return ops.take(table, ops.clip(distance, -m, m) + m, axis=0)

    def init_cache(self, batch, length, dtype=None):
        """A zero key/value cache ``(k, v)`` with ``length`` slots."""
        dtype = dtype or self.compute_dtype
        return (ops.zeros((batch, self.heads, length, self.key_size), dtype),
                ops.zeros((batch, self.heads, length, self.head_size), dtype))

    def _call_list(self, inputs, mask, a_bias, p_bias, attention_mask, attention_bias,
                   training):
        """bert4keras' ``layer([q, k, v, (a_bias), (p_bias input)], a_bias=, p_bias=)``."""
        inputs = list(inputs)
        if len(inputs) < 3:
            raise ValueError(
                "MultiHeadAttention takes [q, k, v] (+ a_bias / p_bias inputs) as a list; "
                f"found {len(inputs)} tensor(s)"
            )
        if p_bias not in _P_BIASES:
            raise ValueError(f"p_bias must be one of {_P_BIASES}, found {p_bias!r}")
        q, k, v = inputs[:3]
        n = 3
        bias = None
        if B._is_tensor_like(a_bias):
            bias = a_bias
        elif a_bias:
            bias, n = inputs[n], n + 1
        extra = inputs[n] if p_bias is not None else None
        qw = self.project_q(q)
        kw, vw = self.project_kv(k, v)
        if p_bias == "rotary":
            qw, kw = B.apply_rotary_position_embeddings(extra, qw, kw)
        elif self.rotary:
            qw = self.rotate(qw, ops.arange(ops.shape(qw)[1]))
            kw = self.rotate(kw, ops.arange(ops.shape(kw)[1]))
        relative = extra if p_bias == "typical_relative" else None
        position_bias = None
        if p_bias == "t5_relative":
            position_bias = extra
            if len(extra.shape) == 3:  # bert4keras layout [q, k, heads]
                position_bias = ops.transpose(extra, (2, 0, 1))[None]
        scores = self.attention_scores(qw, kw, relative=relative, position_bias=position_bias)
        additive, allowed = attention_bias, None
        if bias is not None:
            if len(bias.shape) == 3:  # [batch, q, k]
                bias = bias[:, None]
            if B.dtype(bias) == "bool":
                allowed = bias
            else:
                additive = bias if additive is None else additive + ops.cast(bias, additive.dtype)
        if attention_mask is not None:
            attention_mask = ops.cast(attention_mask, "bool")
            allowed = attention_mask if allowed is None else ops.logical_and(allowed, attention_mask)
        logits = scores if additive is None else scores + ops.cast(additive, scores.dtype)
        v_mask = None if mask is None else mask[2]
        weights = B.attention_normalize(
            logits, v_mask, axis=-1, method=self.normalization, bias=allowed,
            min_length=self.min_length,
        )
        weights = self.dropout(weights, training=training)
        out = self.attention_output(weights, vw, relative=relative)
        return [out, scores] if self.return_attention_scores else out

    def call(self, query, key=None, value=None, attention_mask=None,
             attention_bias=None, positions=None, key_positions=None, cache=None,
             cache_index=None, training=None, mask=None, a_bias=None, p_bias=None):
        if isinstance(query, (list, tuple)):
            return self._call_list(query, mask, a_bias, p_bias, attention_mask,
                                   attention_bias, training)
        if a_bias is not None or p_bias is not None:
            raise ValueError(
                "a_bias / p_bias belong to the list call layer([q, k, v, ...], a_bias=..., "
                "p_bias=...); with a single query tensor use attention_mask / attention_bias"
            )
        want_scores = self.return_attention_scores
        if want_scores and cache is not None:
            raise ValueError("return_attention_scores is not available with a key/value cache")
        fused = (cache is not None and cache_index is not None and key is None
                 and fusable_denses((self.q_dense, self.k_dense, self.v_dense)))
        if fused:  # one product for q, k and v of the new tokens (decoding)
            kernel = ops.concatenate([ops.cast(d.kernel, query.dtype) for d in
                                      (self.q_dense, self.k_dense, self.v_dense)], -1)
            qf, kf, vf = ops.split(ops.matmul(query, kernel), [self.key_size * self.heads,
                                   2 * self.key_size * self.heads], axis=-1)
            lead = tuple(ops.shape(qf)[:-1])
            q = ops.reshape(qf, lead + (self.heads, self.key_size))
        else:
            q = self.project_q(query)
        relative_on = self.max_relative_position is not None
        if (self.rotary or relative_on) and positions is None:
            positions = ops.arange(ops.shape(q)[1])
        if cache is not None and cache_index is None:  # read-only cache
            k, v = cache
            relative = None
            if relative_on:
                if key_positions is None:
                    key_positions = ops.arange(ops.shape(k)[2])
                relative = self.relative_embeddings(positions, key_positions)
            out = self.attend(self.rotate(q, positions), k, v, attention_mask,
                              attention_bias, training, heads_first=True, relative=relative)
            return out, cache
        self_attention = key is None
        if self_attention and attention_mask is None and mask is not None and cache is None:
            attention_mask = ops.cast(mask, "bool")[:, None, None, :]
        key = query if key is None else key
        value = key if value is None else value
        if fused:
            k = ops.reshape(kf, lead + (self.heads, self.key_size))
            v = ops.reshape(vf, lead + (self.heads, self.head_size))
        else:
            k, v = self.project_kv(key, value)
        if key_positions is None and cache is None:
            if self_attention:
                key_positions = positions
            elif self.rotary or relative_on:
                key_positions = ops.arange(ops.shape(k)[1])
        if self.rotary:
            # with a cache the new keys are the new tokens (self-attention): at ``positions``
            q = self.rotate(q, positions)
            k = self.rotate(k, positions if cache is not None else key_positions)
        if cache is None:
            relative = (self.relative_embeddings(positions, key_positions)
                        if relative_on else None)
            out = self.attend(q, k, v, attention_mask, attention_bias, training,
                              return_scores=want_scores, relative=relative)
            return list(out) if want_scores else out
        new = (ops.transpose(k, (0, 2, 1, 3)), ops.transpose(v, (0, 2, 1, 3)))
        k, v = B.write_cache(cache, new, cache_index, axis=2)
        relative = None
        if relative_on:
            if key_positions is None:
                key_positions = ops.arange(ops.shape(k)[2])
            relative = self.relative_embeddings(positions, key_positions)
        out = self.attend(q, k, v, attention_mask, attention_bias, training, heads_first=True,
                          relative=relative)
        return out, (k, v)

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if self.return_attention_scores:
            return [mask, None]
        return mask

    def compute_output_shape(self, query_shape, key_shape=None, value_shape=None):
        if _is_shape_list(query_shape):
            query_shape, key_shape = query_shape[0], query_shape[1]
        out = tuple(query_shape[:-1]) + (self.out_dim,)
        if self.return_attention_scores:
            k_len = (key_shape or query_shape)[1]
            return [out, (query_shape[0], self.heads, query_shape[1], k_len)]
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads,
            head_size=self.head_size,
            out_dim=self.out_dim,
            key_size=self.key_size,
            use_bias=self.use_bias,
            attention_scale=self.attention_scale,
            attention_dropout=self.attention_dropout,
            return_attention_scores=self.return_attention_scores,
            normalization=self.normalization,
            min_length=self.min_length,
            rotary=self.rotary,
            rotary_base=self.rotary_base,
            max_relative_position=self.max_relative_position,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            fused_attention=self.fused_attention,
        )
        return config


@register
class FeedForward(keras.layers.Layer):
    """Position-wise feed-forward block: ``o_dense(act(i0_dense(x)))``.

    With a list of activations the block is gated (GLU family):
    ``o_dense(act_0(x W_0) * act_1(x W_1) * ...)``, sublayers ``i0_dense``,
    ``i1_dense``, ... e.g. T5.1.1 uses ``["gelu_tanh", "linear"]``.
    """

    def __init__(self, units, activation="relu", use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        acts = activation if isinstance(activation, (list, tuple)) else [activation]
        self.activation = list(acts)
        for act in self.activation:
            B.get_activation(act)  # fail early on an unknown name
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True
        self.in_denses = [
            keras.layers.Dense(units, use_bias=use_bias,
                               kernel_initializer=self.kernel_initializer, name=f"i{k}_dense",
                               dtype=self.dtype_policy)
            for k in range(len(self.activation))
        ]

    def build(self, input_shape):
        for layer in self.in_denses:
            layer.build(input_shape)
        self.o_dense = keras.layers.Dense(
            input_shape[-1], use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer, name="o_dense", dtype=self.dtype_policy
        )
        self.o_dense.build(tuple(input_shape[:-1]) + (self.units,))

    def call(self, inputs):
        h = None
        for act, layer in zip(self.activation, self.in_denses):
            y = B.get_activation(act)(layer(inputs))
            h = y if h is None else h * y
        return self.o_dense(h)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            activation=self.activation if len(self.activation) > 1 else self.activation[0],
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@register
class AttentionMask(keras.layers.Layer):
    """Boolean attention mask ``[batch, 1, seq, seq]`` from token ids.

    ``mode``: ``"encoder"`` (padding only), ``"lm"`` (causal) or ``"unilm"``
    (needs ``[token_ids, segment_ids]``). Token id 0 is padding.
    """

    #: cached decoding replaces this mask by the visibility of the cache slots
    decoding_role = "mask"

    def __init__(self, mode="encoder", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("encoder", "lm", "unilm"):
            raise ValueError(f"mode must be 'encoder', 'lm' or 'unilm', found {mode!r}")
        self.mode = mode

    def call(self, inputs):
        if self.mode == "unilm":
            token_ids, segment_ids = inputs
        else:
            token_ids = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        keys = ops.not_equal(token_ids, 0)[:, None, None, :]
        if self.mode == "encoder":
            return keys
        if self.mode == "lm":
            n = ops.shape(token_ids)[1]
            return ops.logical_and(keys, B.causal_mask(n)[None, None])
        return ops.logical_and(keys, B.unilm_mask(segment_ids)[:, None])

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config


@register
class FirstToken(keras.layers.Layer):
    """Take the first position of a sequence (the [CLS] vector)."""

    def call(self, inputs):
        return inputs[:, 0]

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])
