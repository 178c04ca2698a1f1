"""Task heads: GlobalPointer, EfficientGlobalPointer, GPLinker and a linear-chain CRF.

All layers use ``keras.ops`` only, so they run unchanged on JAX, TensorFlow and
PyTorch. Weight layouts follow bert4keras, so weights trained there map 1:1:

* ``GlobalPointer``: one ``Dense(heads * head_size * 2)`` named ``dense``; per head the
  first ``head_size`` channels are the query (span start), the next ones the key (end).
* ``EfficientGlobalPointer``: ``p_dense`` (``Dense(head_size * 2)``, even channels =
  query, odd = key) and ``q_dense`` (``Dense(heads * 2)`` on the ``p_dense`` output;
  per head, the even channel is the end bias and the odd one the start bias).
* ``ConditionalRandomField``: one ``trans`` matrix ``[num_labels, num_labels]``.
* ``MaximumEntropyMarkovModel``: ``trans`` ``[num_labels, num_labels]``, or ``l_trans`` and
  ``r_trans`` ``[num_labels, hidden_dim]`` (low-rank ``trans = l_trans r_trans^T``).
"""

import math

import keras
from keras import ops

from bert4keras3 import backend as B

__all__ = [
    "GlobalPointer",
    "EfficientGlobalPointer",
    "GPLinker",
    "ConditionalRandomField",
    "MaximumEntropyMarkovModel",
    "mask_value",
    "MASK_THRESHOLD",
]

# Values below this are treated as "masked out" by the CRF losses and the ZLPR losses.
# Every value written by ``mask_value`` is far below it, and any real logit is far above.
MASK_THRESHOLD = -3e4


def mask_value(dtype):
    """Large negative number used to mask logits, finite in ``dtype``.

    ``-1e12`` for float32/float64/bfloat16, ``-6e4`` for float16 (whose largest finite
    magnitude is 65504). Both lie below :data:`MASK_THRESHOLD`.
    """
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype == "float16":
        return -6e4
    return -1e12


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, found {value!r}.")


def _check_rank3(layer, shape):
    if len(shape) != 3:
        raise ValueError(
            f"{layer} expects inputs of shape [batch, seq, hidden], "
            f"found shape {tuple(shape)} (rank {len(shape)})."
        )
    if shape[-1] is None:
        raise ValueError(f"{layer} needs a known hidden size, found shape {tuple(shape)}.")


def _check_mask(layer, inputs, mask):
    """Validate an explicit mask against the inputs' static shape; return it as bool."""
    if mask is None:
        return None
    mshape = tuple(mask.shape)
    ishape = tuple(inputs.shape)
    if len(mshape) != 2 or any(
        a is not None and b is not None and a != b for a, b in zip(mshape, ishape[:2])
    ):
        raise ValueError(
            f"{layer} expects a mask of shape [batch, seq] = {ishape[:2]}, found {mshape}."
        )
    return ops.cast(mask, "bool")


def _check_heads(layer, x, axis, expected, what):
    found = tuple(getattr(x, "shape", ()))
    if len(found) <= axis or found[axis] != expected:
        raise ValueError(
            f"{layer}.decode expects logits [batch, {expected}, n, n] ({expected} {what}), "
            f"found shape {found}."
        )


def _rotary(x):
    """RoPE (interleaved pairs, base 10000) over positions ``0..seq-1`` of ``[batch, seq, ..., dim]``."""
    sin, cos = B.rotary_sin_cos(ops.arange(ops.shape(x)[1]), x.shape[-1])
    return B.apply_rotary(x, sin, cos)


def _mask_pairs(logits, mask, tril_mask):
    """Set padded rows/columns (and end < start spans) of ``[b, h, n, n]`` logits."""
    valid = None
    if mask is not None:
        valid = ops.logical_and(mask[:, None, :, None], mask[:, None, None, :])
    if tril_mask:
        idx = ops.arange(ops.shape(logits)[-1])
        upper = ops.less_equal(idx[:, None], idx[None, :])[None, None]
        valid = upper if valid is None else ops.logical_and(valid, upper)
    if valid is None:
        return logits
    return ops.where(valid, logits, ops.cast(mask_value(logits.dtype), logits.dtype))


class _PointerBase(keras.layers.Layer):
    """Shared config, validation and masking for the GlobalPointer family."""

    def __init__(
        self,
        heads,
        head_size,
        RoPE=True,
        use_bias=True,
        tril_mask=True,
        kernel_initializer="lecun_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("heads", heads)
        _check_positive_int("head_size", head_size)
        if RoPE and head_size % 2:
            raise ValueError(
                f"RoPE rotates channel pairs, so `head_size` must be even; found {head_size}. "
                "Use an even head_size or RoPE=False."
            )
        self.heads = heads
        self.head_size = head_size
        self.RoPE = bool(RoPE)
        self.use_bias = bool(use_bias)
        self.tril_mask = bool(tril_mask)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.heads, input_shape[1], input_shape[1])

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads,
            head_size=self.head_size,
            RoPE=self.RoPE,
            use_bias=self.use_bias,
            tril_mask=self.tril_mask,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config

    def decode(self, logits, threshold=0.0, max_spans=64, mask=None):
        """Batch span decoding of this head's output, compilable (like ``CRF.decode``).

        ``logits`` ``[batch, heads, n, n]`` -> ``(spans [batch, K, 3], scores [batch, K],
        counts [batch])``; see :func:`bert4keras3.losses.global_pointer_spans` (arguments and
        overflow rule) and :func:`bert4keras3.losses.span_lists` (host-side lists).
        """
        from bert4keras3.losses import global_pointer_spans  # losses imports this module

        _check_heads(type(self).__name__, logits, 1, self.heads, "heads")
        return global_pointer_spans(logits, threshold=threshold, max_spans=max_spans, mask=mask)

    def _dense(self, units, name):
        return keras.layers.Dense(
            units,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )


@keras.saving.register_keras_serializable(package="bert4keras3")
class GlobalPointer(_PointerBase):
    """GlobalPointer: scores every (start, end) token pair, one score matrix per type.

    ``s_a(i, j) = q_{a,i}^T k_{a,j} / sqrt(head_size)`` with ``q``, ``k`` linear projections
    of the encoder output (rotated by RoPE when ``RoPE=True``). Padded rows/columns
    (from the Keras mask or an explicit ``mask`` argument) and, with ``tril_mask``, spans
    with end < start are set to :func:`mask_value` (``-1e12`` in float32).

    Args:
        heads: number of entity types (score matrices).
        head_size: size of each query / key vector.
        RoPE: apply rotary position embedding to queries and keys.
        use_bias: use a bias in the projection.
        tril_mask: mask spans whose end precedes their start.
        kernel_initializer: initializer of the projection kernel.

    Input ``[batch, seq, hidden]``; output logits ``[batch, heads, seq, seq]``; a span
    ``(i, j)`` of type ``a`` is predicted when ``logits[:, a, i, j] > 0``.

    Example:
        >>> x = keras.Input((None,), dtype="int32")
        >>> h = keras.layers.Embedding(100, 32, mask_zero=True)(x)
        >>> logits = GlobalPointer(heads=3, head_size=16)(h)
    """

    def build(self, input_shape):
        _check_rank3(type(self).__name__, input_shape)
        self.dense = self._dense(self.heads * self.head_size * 2, "dense")
        self.dense.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None):
        mask = _check_mask(type(self).__name__, inputs, mask)
        d = self.head_size
        x = self.dense(inputs)  # [b, n, heads * 2d]
        x = ops.reshape(x, ops.shape(x)[:-1] + (self.heads, 2 * d))
        q, k = x[..., :d], x[..., d:]
        if self.RoPE:
            q, k = _rotary(q), _rotary(k)
        logits = B.multihead_scores(q, k) / ops.cast(math.sqrt(d), q.dtype)
        return _mask_pairs(logits, mask, self.tril_mask)


@keras.saving.register_keras_serializable(package="bert4keras3")
class EfficientGlobalPointer(_PointerBase):
    """Efficient GlobalPointer: one shared q/k projection plus a per-type linear bias.

    ``s_a(i, j) = q_i^T k_j / sqrt(head_size) + (w_{a,start}^T p_i + w_{a,end}^T p_j) / 2``
    (+ the ``q_dense`` bias), where ``p_i = [q_i; k_i]`` is the shared ``p_dense``
    projection of token ``i`` (before RoPE), and ``q``, ``k`` are rotated by RoPE when
    ``RoPE=True``. Far fewer parameters than :class:`GlobalPointer` (``hidden*2*head_size +
    4*head_size*heads`` instead of ``hidden*2*head_size*heads``). Same arguments, input,
    output and masking as :class:`GlobalPointer`.
    """

    def build(self, input_shape):
        _check_rank3(type(self).__name__, input_shape)
        self.p_dense = self._dense(self.head_size * 2, "p_dense")
        self.p_dense.build(input_shape)
        self.q_dense = self._dense(self.heads * 2, "q_dense")
        self.q_dense.build(tuple(input_shape[:-1]) + (self.head_size * 2,))
        self.built = True

    def call(self, inputs, mask=None):
        mask = _check_mask(type(self).__name__, inputs, mask)
        d = self.head_size
        p = self.p_dense(inputs)  # [b, n, 2d]
        pairs = ops.reshape(p, ops.shape(p)[:-1] + (d, 2))
        q, k = pairs[..., 0], pairs[..., 1]
        if self.RoPE:
            q, k = _rotary(q), _rotary(k)
        logits = ops.matmul(q, ops.transpose(k, (0, 2, 1))) / ops.cast(math.sqrt(d), q.dtype)
        bias = self.q_dense(p) / ops.cast(2.0, p.dtype)  # [b, n, 2 * heads]
        bias = ops.reshape(bias, ops.shape(bias)[:-1] + (self.heads, 2))
        bias = ops.transpose(bias, (0, 2, 1, 3))  # [b, heads, n, 2]
        end_bias, start_bias = bias[..., 0], bias[..., 1]
        logits = logits[:, None] + start_bias[:, :, :, None] + end_bias[:, :, None, :]
        return _mask_pairs(logits, mask, self.tril_mask)


@keras.saving.register_keras_serializable(package="bert4keras3")
class GPLinker(keras.layers.Layer):
    """The three GlobalPointer heads of GPLinker (joint entity-relation extraction).

    Outputs ``[entity, head, tail]`` logits:

    * ``entity`` ``[batch, 2, seq, seq]``: subject spans (type 0) and object spans (type 1),
      with RoPE and the tril mask;
    * ``head`` ``[batch, predicates, seq, seq]``: ``(subject_start, object_start)`` pairs;
    * ``tail`` ``[batch, predicates, seq, seq]``: ``(subject_end, object_end)`` pairs;
      the pair heads use neither RoPE nor the tril mask.

    Train with ``losses.sparse_global_pointer_crossentropy`` on the labels of
    ``losses.gplinker_encode`` and decode with :meth:`decode` (compiled batch) or
    ``losses.gplinker_decode`` (one sample, NumPy).

    Args:
        predicates: number of relation types.
        head_size: query / key size of every head.
        efficient: use :class:`EfficientGlobalPointer` heads (default, as in the paper's
            code) instead of :class:`GlobalPointer`.
        use_bias, kernel_initializer: passed to every head.
    """

    def __init__(
        self,
        predicates,
        head_size=64,
        efficient=True,
        use_bias=True,
        kernel_initializer="lecun_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("predicates", predicates)
        self.predicates = predicates
        self.head_size = head_size
        self.efficient = bool(efficient)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        head = EfficientGlobalPointer if self.efficient else GlobalPointer
        common = dict(
            head_size=head_size,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            dtype=self.dtype_policy,
        )
        self.entity_head = head(2, RoPE=True, tril_mask=True, name="entity", **common)
        self.head_head = head(predicates, RoPE=False, tril_mask=False, name="head", **common)
        self.tail_head = head(predicates, RoPE=False, tril_mask=False, name="tail", **common)

    def build(self, input_shape):
        _check_rank3(type(self).__name__, input_shape)
        for layer in (self.entity_head, self.head_head, self.tail_head):
            layer.build(input_shape)
        self.built = True

    def call(self, inputs, mask=None):
        return [
            self.entity_head(inputs, mask=mask),
            self.head_head(inputs, mask=mask),
            self.tail_head(inputs, mask=mask),
        ]

    def compute_output_shape(self, input_shape):
        b, n = input_shape[0], input_shape[1]
        return [(b, 2, n, n), (b, self.predicates, n, n), (b, self.predicates, n, n)]

    def decode(self, outputs, threshold=0.0, max_entities=64, max_triples=64, mask=None):
        """Batch triple decoding of this layer's ``[entity, head, tail]`` output, compilable.

        Returns ``(triples [batch, K, 5], scores, counts, dropped_entities)``; see
        :func:`bert4keras3.losses.gplinker_triples` and :func:`bert4keras3.losses.triple_lists`.
        """
        from bert4keras3.losses import gplinker_triples  # losses imports this module

        if not isinstance(outputs, (list, tuple)) or len(outputs) != 3:
            raise ValueError(
                "GPLinker.decode expects the layer's output [entity, head, tail], found "
                f"{type(outputs).__name__} of length {len(outputs) if hasattr(outputs, '__len__') else '?'}."
            )
        _check_heads("GPLinker", outputs[1], 1, self.predicates, "predicates (head logits)")
        _check_heads("GPLinker", outputs[2], 1, self.predicates, "predicates (tail logits)")
        return gplinker_triples(*outputs, threshold=threshold, max_entities=max_entities,
                                max_triples=max_triples, mask=mask)

    def compute_mask(self, inputs, mask=None):
        return [None, None, None]

    def get_config(self):
        config = super().get_config()
        config.update(
            predicates=self.predicates,
            head_size=self.head_size,
            efficient=self.efficient,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


def _to_float(x):
    x = ops.convert_to_tensor(x)
    if keras.backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
        return ops.cast(x, "float32")
    if not keras.backend.is_float_dtype(x.dtype):
        return ops.cast(x, "float32")
    return x


class _TagScores(keras.layers.Layer):
    """Base of the sequence-labelling heads: per-token tag scores pass through, padded
    positions pushed to a large negative value; the mask is consumed."""

    def call(self, inputs, mask=None):
        if mask is None:
            return inputs
        mask = _check_mask(type(self).__name__, inputs, mask)
        return ops.where(mask[..., None], inputs, ops.cast(mask_value(inputs.dtype), inputs.dtype))

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="bert4keras3")
class ConditionalRandomField(_TagScores):
    """Linear-chain CRF output layer (bert4keras semantics).

    The layer passes its input emissions ``[batch, seq, num_labels]`` through, writing
    :func:`mask_value` at padded positions so that the losses can recover the mask
    (padding must be at the end of each row). It owns the transition matrix
    ``trans[i, j]`` (score of label ``i`` followed by label ``j``).

    ``lr_multiplier`` scales the effective learning rate of ``trans``: the variable
    stores ``trans / lr_multiplier`` and :attr:`trans` returns it multiplied back.

    Use it as the output layer and its methods as loss / metric::

        crf = ConditionalRandomField(lr_multiplier=100)
        out = crf(keras.layers.Dense(num_labels)(hidden))
        model.compile(loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
        tags = crf.decode(model.predict(x))   # Viterbi

    The loss is the negative log-likelihood ``log Z - score(y)`` with
    ``score(y) = sum_t e[t, y_t] + sum_t trans[y_{t-1}, y_t]`` over unpadded positions.
    """

    def __init__(self, lr_multiplier=1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(lr_multiplier, (int, float)) or lr_multiplier <= 0:
            raise ValueError(f"`lr_multiplier` must be a positive number, found {lr_multiplier!r}.")
        self.lr_multiplier = lr_multiplier

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "ConditionalRandomField expects emissions of shape [batch, seq, num_labels] "
                f"with a known num_labels, found {tuple(input_shape)}."
            )
        self.num_labels = input_shape[-1]
        self._trans = self.add_weight(
            name="trans",
            shape=(self.num_labels, self.num_labels),
            initializer="glorot_uniform",
        )
        if self.lr_multiplier != 1:
            self._trans.assign(self._trans / self.lr_multiplier)
        self.built = True

    @property
    def trans(self):
        """The effective transition matrix ``[num_labels, num_labels]``."""
        if self.lr_multiplier != 1:
            return self._trans * self.lr_multiplier
        return ops.convert_to_tensor(self._trans)

    def get_config(self):
        config = super().get_config()
        config.update(lr_multiplier=self.lr_multiplier)
        return config

    # ------------------------------------------------------------------ helpers
    def _prepare(self, y_pred, mask=None, with_trans=True):
        y_pred = _to_float(y_pred)
        if len(y_pred.shape) != 3:
            raise ValueError(
                f"CRF expects emissions of shape [batch, seq, num_labels], found {tuple(y_pred.shape)}."
            )
        if mask is None:
            mask = ops.all(ops.greater(y_pred, MASK_THRESHOLD), axis=-1)
        else:
            mask = ops.cast(mask, "bool")
        y_pred = ops.where(mask[..., None], y_pred, ops.zeros_like(y_pred))
        trans = ops.cast(self.trans, y_pred.dtype) if with_trans else None
        return y_pred, mask, trans

    def _log_partition(self, emissions, mask, trans):
        """log Z per sequence by the forward algorithm (masked steps are skipped)."""
        xs = _time_major_steps(emissions, mask)

        def step(alpha, x):
            e, m = x[..., :-1], x[..., -1] > 0
            new = ops.logsumexp(alpha[:, :, None] + trans[None], axis=1) + e
            alpha = ops.where(m[:, None], new, alpha)
            return alpha, None

        alpha, _ = ops.scan(step, emissions[:, 0], xs)
        return ops.logsumexp(alpha, axis=-1)

    def _target_score(self, onehot, emissions, mask, trans):
        m = ops.cast(mask, emissions.dtype)
        onehot = onehot * m[..., None]
        point = ops.sum(onehot * emissions, axis=(1, 2))
        pair_trans = ops.einsum("bni,ij,bnj->b", onehot[:, :-1], trans, onehot[:, 1:])
        return point + pair_trans

    # ------------------------------------------------------------------ losses
    def log_partition(self, emissions, mask=None):
        """``log Z`` of each sequence ``[batch]`` (mask inferred from the emissions)."""
        emissions, mask, trans = self._prepare(emissions, mask)
        return self._log_partition(emissions, mask, trans)

    def dense_loss(self, y_true, y_pred):
        """CRF negative log-likelihood per sequence with one-hot ``y_true`` ``[b, n, L]``."""
        emissions, mask, trans = self._prepare(y_pred)
        y_true = ops.cast(y_true, emissions.dtype)
        if len(y_true.shape) != 3:
            raise ValueError(
                f"dense_loss expects one-hot labels [batch, seq, num_labels], found {tuple(y_true.shape)}; "
                "use sparse_loss for integer labels."
            )
        return self._log_partition(emissions, mask, trans) - self._target_score(
            y_true, emissions, mask, trans
        )

    def _sparse_labels(self, y_true, y_pred):
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == 3 and y_true.shape[-1] == 1:
            y_true = y_true[..., 0]
        if len(y_true.shape) != 2:
            raise ValueError(
                "sparse labels must have shape [batch, seq] (or [batch, seq, 1]), "
                f"found {tuple(y_true.shape)}."
            )
        y_true = ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")
        return ops.one_hot(y_true, ops.shape(y_pred)[-1])

    def sparse_loss(self, y_true, y_pred):
        """CRF negative log-likelihood per sequence with integer ``y_true`` ``[b, n]``."""
        return self.dense_loss(self._sparse_labels(y_true, y_pred), y_pred)

    def dense_accuracy(self, y_true, y_pred):
        """Per-token accuracy of ``argmax(emissions)`` over unpadded positions (one-hot labels)."""
        emissions, mask, _ = self._prepare(y_pred, with_trans=False)
        m = ops.cast(mask, "float32")
        hit = ops.cast(
            ops.equal(ops.argmax(y_true, axis=-1), ops.argmax(emissions, axis=-1)), "float32"
        )
        return ops.sum(hit * m) / ops.maximum(ops.sum(m), 1.0)

    def sparse_accuracy(self, y_true, y_pred):
        """Per-token accuracy of ``argmax(emissions)`` over unpadded positions (integer labels)."""
        return self.dense_accuracy(self._sparse_labels(y_true, y_pred), y_pred)

    # ------------------------------------------------------------------ decoding
    def decode(self, emissions, mask=None):
        """Viterbi decoding: the best label path ``[batch, seq]`` (int32).

        Args:
            emissions: ``[batch, seq, num_labels]``, e.g. the model output (padded
                positions, marked by :func:`mask_value`, are detected automatically).
            mask: optional ``[batch, seq]`` boolean mask overriding the detection.

        Padded positions get label 0.
        """
        emissions, mask, trans = self._prepare(emissions, mask)
        num_labels = ops.shape(emissions)[-1]
        identity = ops.arange(num_labels, dtype="int32")[None, :]
        xs = _time_major_steps(emissions, mask)

        def forward(score, x):
            e, m = x[..., :-1], x[..., -1] > 0
            cand = score[:, :, None] + trans[None]  # [b, prev, cur]
            back = ops.cast(ops.argmax(cand, axis=1), "int32")
            new = ops.max(cand, axis=1) + e
            score = ops.where(m[:, None], new, score)
            back = ops.where(m[:, None], back, identity)
            # carried as floats (exact for label ids): TF's scan wants one dtype
            return score, ops.cast(back, score.dtype)

        score, backs = ops.scan(forward, emissions[:, 0], xs)  # backs [n-1, b, L]
        last = ops.cast(ops.argmax(score, axis=-1), score.dtype)

        def backward(tag, back):
            index = ops.cast(tag, "int32")[:, None]
            prev = ops.take_along_axis(back, index, axis=1)[:, 0]
            return prev, prev

        _, tags = ops.scan(backward, last, backs, reverse=True)  # tags[t] = label at t
        tags = ops.concatenate([ops.transpose(tags, (1, 0)), last[:, None]], axis=1)
        tags = ops.cast(tags, "int32")
        return ops.where(mask, tags, ops.zeros_like(tags))


def _time_major_steps(emissions, mask):
    """Steps 1.. of ``emissions`` ``[b, n, L]`` and ``mask`` ``[b, n]`` as one ``[n-1, b, L+1]``.

    The mask rides along as a last channel: with several ``xs`` and an unknown length,
    Keras' TensorFlow ``scan`` fails on its static length check (``None`` dimension).
    """
    x = ops.concatenate([emissions, ops.cast(mask, emissions.dtype)[..., None]], axis=-1)
    return ops.transpose(x[:, 1:], (1, 0, 2))


def _reverse_valid(x, lengths):
    """Reverse the first ``lengths[b]`` steps of each row of ``x`` ``[batch, seq, ...]``."""
    n = ops.shape(x)[1]
    steps = ops.arange(n, dtype="int32")[None, :]
    lengths = ops.cast(lengths, "int32")[:, None]
    index = ops.where(steps < lengths, lengths - 1 - steps, steps)
    for _ in range(len(x.shape) - 2):
        index = ops.expand_dims(index, -1)
    index = ops.broadcast_to(index, ops.shape(x)) if len(x.shape) > 2 else index
    return ops.take_along_axis(x, index, axis=1)


@keras.saving.register_keras_serializable(package="bert4keras3")
class MaximumEntropyMarkovModel(_TagScores):
    """(Bidirectional) maximum-entropy Markov model output layer (bert4keras semantics).

    A lighter alternative to :class:`ConditionalRandomField` with the same use: the layer
    passes its emissions ``[batch, seq, num_labels]`` through (padded positions set to
    :func:`mask_value`) and provides losses and metrics. Each step is a softmax over
    ``(e_t + trans[y_{t-1}]) / 2`` (the first step over ``e_0``); the loss averages the
    left-to-right model and the right-to-left one (reversed sequence, transposed
    transitions), each a per-token cross-entropy over the unpadded positions.

    Args:
        lr_multiplier: scales the effective learning rate of the transitions (the variables
            store ``trans / lr_multiplier``).
        hidden_dim: if set, ``trans = l_trans @ r_trans.T`` with two
            ``[num_labels, hidden_dim]`` factors.

    Use::

        memm = MaximumEntropyMarkovModel(lr_multiplier=100)
        out = memm(keras.layers.Dense(num_labels)(hidden))
        model.compile(loss=memm.sparse_loss, metrics=[memm.sparse_accuracy])
    """

    def __init__(self, lr_multiplier=1, hidden_dim=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(lr_multiplier, (int, float)) or lr_multiplier <= 0:
            raise ValueError(f"`lr_multiplier` must be a positive number, found {lr_multiplier!r}.")
        if hidden_dim is not None:
            _check_positive_int("hidden_dim", hidden_dim)
        self.lr_multiplier = lr_multiplier
        self.hidden_dim = hidden_dim

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "MaximumEntropyMarkovModel expects emissions of shape [batch, seq, num_labels] "
                f"with a known num_labels, found {tuple(input_shape)}."
            )
        self.num_labels = num = input_shape[-1]
        if self.hidden_dim is None:
            names = {"_trans": (num, num)}
        else:
            names = {"_l_trans": (num, self.hidden_dim), "_r_trans": (num, self.hidden_dim)}
        for attr, shape in names.items():
            weight = self.add_weight(name=attr[1:], shape=shape, initializer="glorot_uniform")
            if self.lr_multiplier != 1:
                weight.assign(weight / self.lr_multiplier)
            setattr(self, attr, weight)
        self.built = True

    def _scaled(self, weight):
        if self.lr_multiplier != 1:
            return weight * self.lr_multiplier
        return ops.convert_to_tensor(weight)

    @property
    def trans(self):
        """The effective transition matrix ``[num_labels, num_labels]``."""
        if self.hidden_dim is None:
            return self._scaled(self._trans)
        return ops.matmul(self.l_trans, ops.transpose(self.r_trans))

    @property
    def l_trans(self):
        """Left factor of the low-rank transitions (``hidden_dim`` set)."""
        return self._scaled(self._l_trans)

    @property
    def r_trans(self):
        """Right factor of the low-rank transitions (``hidden_dim`` set)."""
        return self._scaled(self._r_trans)

    def get_config(self):
        config = super().get_config()
        config.update(lr_multiplier=self.lr_multiplier, hidden_dim=self.hidden_dim)
        return config

    def reverse_sequence(self, inputs, mask=None):
        """Reverse each tensor of ``inputs`` along the sequence, within the unpadded part."""
        if mask is None:
            return [ops.flip(x, axis=1) for x in inputs]
        lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
        return [_reverse_valid(x, lengths) for x in inputs]

    def _logits(self, y_true, y_pred, go_backwards):
        """Mask, labels and the per-step logits ``(e_t + history_t) / 2``."""
        y_pred = _to_float(y_pred)
        mask = ops.all(ops.greater(y_pred, MASK_THRESHOLD), axis=-1)
        y_true = ops.convert_to_tensor(y_true)
        if len(y_true.shape) == 3 and y_true.shape[-1] == 1:
            y_true = y_true[..., 0]
        y_true = ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")
        if go_backwards:
            y_true, y_pred = self.reverse_sequence([y_true, y_pred], mask)
        if self.hidden_dim is None:
            trans = ops.cast(self.trans, y_pred.dtype)
            if go_backwards:
                trans = ops.transpose(trans)
            history = ops.take(trans, y_true, axis=0)
        else:
            left, right = ops.cast(self.l_trans, y_pred.dtype), ops.cast(self.r_trans, y_pred.dtype)
            if go_backwards:
                left, right = right, left
            history = ops.matmul(ops.take(left, y_true, axis=0), ops.transpose(right))
        history = ops.concatenate([y_pred[:, :1], history[:, :-1]], axis=1)
        logits = ops.where(mask[..., None], (y_pred + history) / 2, ops.zeros_like(y_pred))
        return y_true, logits, ops.cast(mask, y_pred.dtype)

    def basic_loss(self, y_true, y_pred, go_backwards=False):
        """Token-averaged cross-entropy of one direction (integer ``y_true``)."""
        y_true, logits, mask = self._logits(y_true, y_pred, go_backwards)
        loss = ops.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
        return ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0)

    def sparse_loss(self, y_true, y_pred):
        """Loss with integer labels ``[batch, seq]``: mean of both directions."""
        return (self.basic_loss(y_true, y_pred, False) + self.basic_loss(y_true, y_pred, True)) / 2

    def dense_loss(self, y_true, y_pred):
        """Loss with one-hot labels ``[batch, seq, num_labels]``."""
        return self.sparse_loss(ops.argmax(y_true, axis=-1), y_pred)

    def basic_accuracy(self, y_true, y_pred, go_backwards=False):
        """Per-token accuracy of one direction over unpadded positions (integer ``y_true``)."""
        y_true, logits, mask = self._logits(y_true, y_pred, go_backwards)
        hit = ops.cast(ops.equal(y_true, ops.cast(ops.argmax(logits, axis=-1), "int32")), mask.dtype)
        return ops.sum(hit * mask) / ops.maximum(ops.sum(mask), 1.0)

    def sparse_accuracy(self, y_true, y_pred):
        """Per-token accuracy (integer labels), mean of both directions."""
        return (self.basic_accuracy(y_true, y_pred, False)
                + self.basic_accuracy(y_true, y_pred, True)) / 2

    def dense_accuracy(self, y_true, y_pred):
        """Per-token accuracy with one-hot labels."""
        return self.sparse_accuracy(ops.argmax(y_true, axis=-1), y_pred)
