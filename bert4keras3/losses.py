"""Losses, metrics and span decoders (bert4keras semantics, ``keras.ops`` only).

* ZLPR multi-label losses: :func:`multilabel_categorical_crossentropy` (hard or soft
  labels), :func:`sparse_multilabel_categorical_crossentropy`.
* GlobalPointer: :func:`global_pointer_crossentropy`,
  :func:`sparse_global_pointer_crossentropy`, metric :func:`global_pointer_f1_score`,
  label encoders :func:`spans_to_dense` / :func:`spans_to_sparse`, decoder
  :func:`global_pointer_decode` (one sample, NumPy) and the compiled batch decoder
  :func:`global_pointer_spans` (+ host converter :func:`span_lists`).
* GPLinker (relation extraction): :func:`gplinker_encode` and :func:`gplinker_decode`
  (one sample, NumPy); compiled batch decoder :func:`gplinker_triples` (+ :func:`triple_lists`).
* Sentence embeddings: :func:`cosent_loss`, :func:`simcse_loss`.
* Evaluation: :func:`precision_recall_f1` (entity / triple level).

Losses return one value per sample (Keras averages over the batch), so
``model.compile(loss=global_pointer_crossentropy)`` gives the bert4keras numbers.
"""

import warnings

import numpy as np
import keras
from keras import ops

from bert4keras3.layers.heads import MASK_THRESHOLD

__all__ = [
    "multilabel_categorical_crossentropy",
    "soft_multilabel_categorical_crossentropy",
    "sparse_multilabel_categorical_crossentropy",
    "global_pointer_crossentropy",
    "sparse_global_pointer_crossentropy",
    "global_pointer_f1_score",
    "cosent_loss",
    "simcse_loss",
    "precision_recall_f1",
    "spans_to_dense",
    "spans_to_sparse",
    "pad_sparse_labels",
    "global_pointer_decode",
    "gplinker_encode",
    "gplinker_decode",
    "global_pointer_spans",
    "gplinker_triples",
    "span_lists",
    "triple_lists",
    "SpanOverflowWarning",
]

_BIG = 1e12  # stands for infinity inside the losses (always float32 or wider)
_EPS = 1e-7


def _float(x):
    """Tensor in float32 (float64 kept) so that masking constants stay finite."""
    x = ops.convert_to_tensor(x)
    if keras.backend.standardize_dtype(x.dtype) != "float64":
        x = ops.cast(x, "float32")
    return x


def _check_same_shape(fn, y_true, y_pred):
    a, b = tuple(y_true.shape), tuple(y_pred.shape)
    if len(a) != len(b) or any(x is not None and y is not None and x != y for x, y in zip(a, b)):
        raise ValueError(f"{fn}: y_true and y_pred must have the same shape, found {a} and {b}.")


def _log1p_sum_exp(x, include):
    """``log(1 + sum_{include} exp(x))`` along the last axis, stable for any magnitude.

    The shift is a constant for autodiff, so the gradient is the exact softmax even when
    the value itself is rounded (e.g. logits around 1e4 in float32)."""
    x = ops.where(include, x, ops.cast(-_BIG, x.dtype))
    x = ops.concatenate([x, ops.zeros_like(x[..., :1])], axis=-1)
    shift = ops.stop_gradient(ops.max(x, axis=-1, keepdims=True))
    return shift[..., 0] + ops.log(ops.sum(ops.exp(x - shift), axis=-1))


# --------------------------------------------------------------------------- ZLPR
def multilabel_categorical_crossentropy(y_true, y_pred):
    """ZLPR multi-label loss ("softmax + cross-entropy" for multi-label), per sample.

    For scores ``s`` and targets ``t`` in ``[0, 1]`` (last axis = classes)::

        loss = log(1 + sum_i t_i e^{-s_i}) + log(1 + sum_i (1 - t_i) e^{s_i})

    which for hard 0/1 labels is ``log(1 + sum_{neg} e^{s}) + log(1 + sum_{pos} e^{-s})``;
    soft labels (label smoothing, mixup) use the same formula. ``y_pred`` are raw scores
    (no sigmoid); predict class ``i`` when ``s_i > 0``. Entries with
    ``y_pred <= MASK_THRESHOLD`` (masked GlobalPointer spans) are ignored.

    Returns a tensor of shape ``y_pred.shape[:-1]``.
    """
    y_pred = _float(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    _check_same_shape("multilabel_categorical_crossentropy", y_true, y_pred)
    valid = ops.greater(y_pred, MASK_THRESHOLD)
    pos = ops.logical_and(valid, ops.greater(y_true, _EPS))
    neg = ops.logical_and(valid, ops.less(y_true, 1 - _EPS))
    log_t = ops.log(ops.clip(y_true, _EPS, 1.0))
    log_1mt = ops.log(ops.clip(1 - y_true, _EPS, 1.0))
    pos_loss = _log1p_sum_exp(-y_pred + log_t, pos)
    neg_loss = _log1p_sum_exp(y_pred + log_1mt, neg)
    return pos_loss + neg_loss


def soft_multilabel_categorical_crossentropy(y_true, y_pred):
    """Soft-label ZLPR (targets in ``[0, 1]``); same as :func:`multilabel_categorical_crossentropy`.

    ``log(1 + sum_i t_i e^{-s_i}) + log(1 + sum_i (1 - t_i) e^{s_i})``.
    """
    return multilabel_categorical_crossentropy(y_true, y_pred)


def _positive_mask(indices, num_classes):
    """Boolean ``[..., num_classes]`` with True at the (int) ``indices [..., k]``."""
    lead = ops.shape(indices)[:-1]
    k = ops.shape(indices)[-1]
    flat = ops.reshape(indices, (-1, k))
    rows = ops.shape(flat)[0]
    row_ids = ops.repeat(ops.arange(rows, dtype="int32")[:, None], k, axis=1)
    coords = ops.stack([ops.reshape(row_ids, (-1,)), ops.reshape(flat, (-1,))], axis=1)
    counts = ops.scatter(coords, ops.ones((rows * k,), "float32"), (rows, num_classes))
    return ops.reshape(ops.greater(counts, 0), tuple(lead) + (num_classes,))


def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=False):
    """ZLPR loss with the positive classes given as indices, per sample.

    Args:
        y_true: integer indices of the positive classes, shape ``[..., k]`` (repeated
            indices count once).
        y_pred: scores, shape ``[..., num_classes]``.
        mask_zero: class 0 is padding: indices equal to 0 are ignored and class 0 is
            left out of the negatives too (GlobalPointer span (0, 0) is [CLS]).

    Returns ``log(1 + sum_{pos} e^{-s}) + log(1 + sum_{neg} e^{s})``, shape ``[...]``.
    """
    y_pred = _float(y_pred)
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) != len(y_pred.shape):
        raise ValueError(
            "sparse_multilabel_categorical_crossentropy: y_true [..., k] (indices) and y_pred "
            f"[..., num_classes] must have the same rank, found {tuple(y_true.shape)} and "
            f"{tuple(y_pred.shape)}."
        )
    y_true = ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")
    num_classes = y_pred.shape[-1]
    if num_classes is None:
        num_classes = ops.shape(y_pred)[-1]
    is_pos = _positive_mask(y_true, num_classes)
    valid = ops.greater(y_pred, MASK_THRESHOLD)
    if mask_zero:
        not_zero = ops.not_equal(ops.arange(num_classes), 0)
        valid = ops.logical_and(valid, not_zero)
    pos_loss = _log1p_sum_exp(-y_pred, ops.logical_and(is_pos, valid))
    neg_loss = _log1p_sum_exp(y_pred, ops.logical_and(ops.logical_not(is_pos), valid))
    return pos_loss + neg_loss


# --------------------------------------------------------------------------- GlobalPointer
def global_pointer_crossentropy(y_true, y_pred):
    """ZLPR loss of GlobalPointer logits ``[batch, heads, n, n]`` with dense 0/1 labels.

    Each head's ``n * n`` spans form one multi-label problem; returns the mean over heads,
    one value per sample (so Keras' batch mean equals bert4keras' mean over batch*heads).
    """
    y_pred = _float(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    _check_same_shape("global_pointer_crossentropy", y_true, y_pred)
    if len(y_pred.shape) != 4:
        raise ValueError(
            "global_pointer_crossentropy expects [batch, heads, seq, seq] tensors, "
            f"found shape {tuple(y_pred.shape)}."
        )
    shape = ops.shape(y_pred)
    flat = (-1, shape[1], shape[2] * shape[3])
    loss = multilabel_categorical_crossentropy(ops.reshape(y_true, flat), ops.reshape(y_pred, flat))
    return ops.mean(loss, axis=1)


def sparse_global_pointer_crossentropy(y_true, y_pred):
    """ZLPR loss of GlobalPointer logits with sparse span labels (GPLinker style).

    Args:
        y_true: ``[batch, heads, k, 2]`` (start, end) token pairs, padded with (0, 0)
            (see :func:`spans_to_sparse`, :func:`gplinker_encode`, :func:`pad_sparse_labels`).
        y_pred: ``[batch, heads, n, n]`` logits.

    Returns the sum over heads, one value per sample (as bert4keras' GPLinker).
    """
    y_pred = _float(y_pred)
    y_true = ops.convert_to_tensor(y_true)
    if len(y_pred.shape) != 4 or len(y_true.shape) != 4 or y_true.shape[-1] != 2:
        raise ValueError(
            "sparse_global_pointer_crossentropy expects y_true [batch, heads, k, 2] and "
            f"y_pred [batch, heads, seq, seq], found {tuple(y_true.shape)} and {tuple(y_pred.shape)}."
        )
    y_true = ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")
    shape = ops.shape(y_pred)
    n = shape[3]
    index = y_true[..., 0] * n + y_true[..., 1]  # [b, heads, k]
    logits = ops.reshape(y_pred, (-1, shape[1], shape[2] * shape[3]))
    loss = sparse_multilabel_categorical_crossentropy(index, logits, mask_zero=True)
    return ops.sum(loss, axis=1)


def global_pointer_f1_score(y_true, y_pred):
    """Span F1 of a batch: ``2 |T & P| / (|T| + |P|)`` with ``P = {y_pred > 0}``.

    ``y_true`` are dense 0/1 labels of the logits' shape; 1.0 when both sets are empty.
    """
    y_pred = _float(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    pred = ops.cast(ops.greater(y_pred, 0), y_pred.dtype)
    tp = ops.sum(y_true * pred)
    total = ops.sum(y_true) + ops.sum(pred)
    return ops.where(total > 0, 2 * tp / ops.maximum(total, 1.0), ops.ones_like(total))


# --------------------------------------------------------------------------- sentence pairs
def _even_batch(fn, y_pred):
    n = y_pred.shape[0]
    if n is not None and n % 2:
        raise ValueError(
            f"{fn} expects an even batch of interleaved pairs (a0, b0, a1, b1, ...), found batch {n}."
        )


def cosent_loss(y_true, y_pred, scale=20.0):
    """CoSENT: ``log(1 + sum_{label_i < label_j} exp(scale * (cos_i - cos_j)))``.

    Args:
        y_true: pair labels (higher = more similar), one per row of ``y_pred``
            (``[2B]`` or ``[2B, 1]``, each pair's label repeated; or ``[B]`` with scores).
        y_pred: either sentence embeddings ``[2B, dim]`` with the pairs interleaved
            ``(a0, b0, a1, b1, ...)`` (the bert4keras layout), or the pair cosine
            similarities ``[B]``.
        scale: the temperature ``lambda`` (20 in the paper).

    Returns a scalar.
    """
    y_pred = _float(y_pred)
    labels = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1,))
    if len(y_pred.shape) == 2:
        _even_batch("cosent_loss", y_pred)
        emb = y_pred / ops.sqrt(ops.maximum(ops.sum(y_pred**2, axis=-1, keepdims=True), 1e-12))
        emb = ops.reshape(emb, (-1, 2, y_pred.shape[-1]))
        cos = ops.sum(emb[:, 0] * emb[:, 1], axis=-1)
        labels = ops.reshape(labels, (-1, 2))[:, 0]
    elif len(y_pred.shape) == 1:
        cos = y_pred
    else:
        raise ValueError(
            "cosent_loss expects embeddings [2B, dim] or similarities [B], "
            f"found shape {tuple(y_pred.shape)}."
        )
    cos = cos * scale
    diff = ops.reshape(cos[:, None] - cos[None, :], (-1,))
    order = ops.reshape(ops.less(labels[:, None], labels[None, :]), (-1,))
    return _log1p_sum_exp(diff, order)


def simcse_loss(y_true, y_pred, scale=20.0):
    """Unsupervised SimCSE loss; ``y_pred`` are embeddings ``[2B, dim]`` of the batch
    where rows ``2i`` and ``2i+1`` are two dropout views of the same sentence.

    Each row is classified against all other rows (cosine similarity * ``scale``),
    its twin being the target. ``y_true`` is ignored. Returns ``[2B]`` losses.
    """
    y_pred = _float(y_pred)
    if len(y_pred.shape) != 2:
        raise ValueError(f"simcse_loss expects embeddings [2B, dim], found {tuple(y_pred.shape)}.")
    _even_batch("simcse_loss", y_pred)
    emb = y_pred / ops.sqrt(ops.maximum(ops.sum(y_pred**2, axis=-1, keepdims=True), 1e-12))
    sim = ops.matmul(emb, ops.transpose(emb)) * scale
    n = ops.shape(sim)[0]
    idx = ops.arange(n)
    sim = ops.where(ops.equal(idx[:, None], idx[None, :]), ops.cast(-_BIG, sim.dtype), sim)
    twin = idx + 1 - 2 * (idx % 2)
    target = ops.take_along_axis(sim, twin[:, None], axis=1)[:, 0]
    return ops.logsumexp(sim, axis=1) - target


# --------------------------------------------------------------------------- evaluation
def precision_recall_f1(y_true, y_pred):
    """Micro precision, recall and F1 of predicted items (entities, triples, ...).

    Args:
        y_true, y_pred: sequences (one entry per sample) of collections of hashable items,
            e.g. ``[{(0, 2, 'PER')}, set()]``.

    Returns ``(precision, recall, f1)`` with ``f1 = 2|T&P| / (|T| + |P|)``; an empty
    denominator gives 1.0 (nothing to find and nothing found).
    """
    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"precision_recall_f1: expected as many predictions as samples, found "
            f"{len(y_pred)} predictions for {len(y_true)} samples."
        )
    hit = n_pred = n_true = 0
    for t, p in zip(y_true, y_pred):
        t, p = set(t), set(p)
        hit += len(t & p)
        n_pred += len(p)
        n_true += len(t)
    precision = hit / n_pred if n_pred else float(n_true == 0)
    recall = hit / n_true if n_true else float(n_pred == 0)
    f1 = 2 * hit / (n_pred + n_true) if n_pred + n_true else 1.0
    return precision, recall, f1


# --------------------------------------------------------------------------- label encoding
def spans_to_dense(spans, num_types, seq_len):
    """Dense GlobalPointer labels ``[num_types, seq_len, seq_len]`` (float32 0/1).

    ``spans``: iterable of ``(start, end, type)`` token indices, end inclusive.
    """
    labels = np.zeros((num_types, seq_len, seq_len), dtype="float32")
    for start, end, t in spans:
        if not (0 <= t < num_types and 0 <= start <= end < seq_len):
            raise ValueError(
                f"span (start={start}, end={end}, type={t}) out of range: expected "
                f"0 <= start <= end < {seq_len} and 0 <= type < {num_types}."
            )
        labels[t, start, end] = 1
    return labels


def spans_to_sparse(spans, num_types):
    """Sparse GlobalPointer labels ``[num_types, k, 2]`` (int32), padded with (0, 0).

    ``spans``: iterable of ``(start, end, type)``. ``k`` is the largest number of spans of
    one type (at least 1). Position 0 must be a special token such as [CLS] (the pair
    (0, 0) is padding for :func:`sparse_global_pointer_crossentropy`).
    """
    groups = [set() for _ in range(num_types)]
    for start, end, t in spans:
        if not 0 <= t < num_types:
            raise ValueError(f"span type {t} out of range: expected 0 <= type < {num_types}.")
        groups[t].add((int(start), int(end)))
    return _pack_groups(groups)


def _pack_groups(groups):
    k = max([len(g) for g in groups] + [1])
    out = np.zeros((len(groups), k, 2), dtype="int32")
    for i, g in enumerate(groups):
        for j, pair in enumerate(sorted(g)):
            out[i, j] = pair
    return out


def pad_sparse_labels(batch):
    """Stack per-sample sparse labels ``[heads, k_i, 2]`` into ``[batch, heads, max k, 2]``."""
    batch = [np.asarray(x) for x in batch]
    if not batch:
        raise ValueError("pad_sparse_labels: expected at least one sample, found none.")
    heads = {x.shape[0] for x in batch}
    if len(heads) != 1 or any(x.ndim != 3 or x.shape[-1] != 2 for x in batch):
        raise ValueError(
            "pad_sparse_labels: expected arrays [heads, k, 2] with the same heads, found shapes "
            f"{sorted({x.shape for x in batch})}."
        )
    k = max(x.shape[1] for x in batch)
    out = np.zeros((len(batch), batch[0].shape[0], k, 2), dtype="int32")
    for i, x in enumerate(batch):
        out[i, :, : x.shape[1]] = x
    return out


def gplinker_encode(spoes, num_predicates):
    """GPLinker sparse labels of one sample.

    Args:
        spoes: iterable of token-level quintuples
            ``(subject_start, subject_end, predicate, object_start, object_end)``.
        num_predicates: number of relation types.

    Returns ``(entity, head, tail)``: ``entity [2, k, 2]`` (subject spans, object spans),
    ``head [P, k, 2]`` (subject_start, object_start) and ``tail [P, k, 2]``
    (subject_end, object_end) pairs per predicate, padded with (0, 0). Batch them with
    :func:`pad_sparse_labels`.
    """
    entity = [set(), set()]
    head = [set() for _ in range(num_predicates)]
    tail = [set() for _ in range(num_predicates)]
    for sh, st, p, oh, ot in spoes:
        if not 0 <= p < num_predicates:
            raise ValueError(f"predicate {p} out of range: expected 0 <= p < {num_predicates}.")
        entity[0].add((sh, st))
        entity[1].add((oh, ot))
        head[p].add((sh, oh))
        tail[p].add((st, ot))
    return _pack_groups(entity), _pack_groups(head), _pack_groups(tail)


# --------------------------------------------------------------------------- decoding
def _as_numpy(x, ndim, name):
    x = np.asarray(keras.ops.convert_to_numpy(x) if not isinstance(x, np.ndarray) else x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, found shape {x.shape}.")
    return x


def _span_converter(mapping):
    """Token span -> output span; None when the span touches a token without characters."""
    if mapping is None:
        return lambda start, end: (int(start), int(end))

    def convert(start, end):
        if start >= len(mapping) or end >= len(mapping) or not mapping[start] or not mapping[end]:
            return None
        return (mapping[start][0], mapping[end][-1] + 1)

    return convert


def global_pointer_decode(scores, threshold=0.0, mapping=None):
    """Spans of one sample whose GlobalPointer score exceeds ``threshold``.

    Args:
        scores: ``[heads, n, n]`` logits of one sample.
        threshold: decision threshold (0 for ZLPR-trained heads).
        mapping: optional ``rematch``-style list (one per token) of character indices;
            spans touching a token without characters ([CLS], [SEP], padding) are dropped.

    Returns a sorted list of ``(start, end, type)``: token indices with ``end`` inclusive
    when ``mapping`` is None, otherwise character offsets with ``end`` exclusive (so
    ``text[start:end]`` is the entity).
    """
    scores = _as_numpy(scores, 3, "scores")
    convert = _span_converter(mapping)
    out = set()
    for t, start, end in zip(*np.where(scores > threshold)):
        span = convert(start, end)
        if span is not None:
            out.add(span + (int(t),))
    return sorted(out)


def gplinker_decode(entity_scores, head_scores, tail_scores, threshold=0.0, mapping=None,
                    id2predicate=None):
    """Relation triples of one sample from the three GPLinker score tensors.

    A triple ``(s, p, o)`` is output when ``s`` is a subject span and ``o`` an object span
    (``entity_scores`` above ``threshold``), and both the head pair
    ``(s_start, o_start)`` and the tail pair ``(s_end, o_end)`` of predicate ``p`` score
    above ``threshold``.

    Args:
        entity_scores: ``[2, n, n]``; head_scores, tail_scores: ``[P, n, n]``.
        threshold: decision threshold.
        mapping: optional ``rematch`` token -> characters mapping (see
            :func:`global_pointer_decode`); spans are then character offsets.
        id2predicate: optional mapping / sequence turning predicate ids into names.

    Returns a sorted list of ``((s_start, s_end), predicate, (o_start, o_end))``.
    """
    entity_scores = _as_numpy(entity_scores, 3, "entity_scores")
    head_scores = _as_numpy(head_scores, 3, "head_scores")
    tail_scores = _as_numpy(tail_scores, 3, "tail_scores")
    if entity_scores.shape[0] != 2 or head_scores.shape != tail_scores.shape:
        raise ValueError(
            "gplinker_decode expects entity scores [2, n, n] and head/tail scores [P, n, n] of "
            f"equal shape, found {entity_scores.shape}, {head_scores.shape}, {tail_scores.shape}."
        )
    convert = _span_converter(mapping)
    subjects, objects = [], []
    for t, start, end in zip(*np.where(entity_scores > threshold)):
        if convert(start, end) is not None:
            (subjects if t == 0 else objects).append((int(start), int(end)))
    out = set()
    if subjects and objects:
        s = np.array(subjects)
        o = np.array(objects)
        head_ok = head_scores[:, s[:, 0][:, None], o[:, 0][None, :]] > threshold  # [P, S, O]
        tail_ok = tail_scores[:, s[:, 1][:, None], o[:, 1][None, :]] > threshold
        for p, i, j in zip(*np.where(head_ok & tail_ok)):
            name = int(p) if id2predicate is None else id2predicate[int(p)]
            out.add((convert(*subjects[i]), name, convert(*objects[j])))
    return sorted(out, key=repr)


# --------------------------------------------------------------------------- batch decoding
# Compiled (keras.ops only, static output shapes) counterparts of the NumPy decoders above:
# they run inside jax.jit / tf.function(jit_compile=True) next to the model, so only a few
# integers per row leave the device instead of the [batch, heads, n, n] logits.


class SpanOverflowWarning(UserWarning):
    """More spans / triples passed the threshold than the decoder's static capacity."""


def _check_capacity(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, found {value!r}.")
    return int(value)


def _check_threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
        raise ValueError(f"`threshold` must be a real number, found {threshold!r}.")
    return float(threshold)


def _static_scores(fn, name, x, heads=None):
    """``x`` as a tensor of static shape ``[batch, heads, n, n]``; returns ``(x, heads, n)``."""
    x = ops.convert_to_tensor(x)
    shape = tuple(x.shape)
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError(f"{fn}: {name} must have shape [batch, heads, n, n], found {shape}.")
    if shape[1] is None or shape[2] is None:
        raise ValueError(f"{fn}: {name} needs static heads and n (they size the output), found {shape}.")
    if heads is not None and shape[1] != heads:
        raise ValueError(f"{fn}: {name} must have {heads} heads, found shape {shape}.")
    if not keras.backend.is_float_dtype(x.dtype):
        raise ValueError(f"{fn}: {name} must be floating-point logits, found dtype {x.dtype}.")
    return x, shape[1], shape[2]


def _token_mask(fn, mask, x):
    if mask is None:
        return None
    mask = ops.convert_to_tensor(mask)
    b, n = x.shape[0], x.shape[-1]
    if len(mask.shape) != 2 or mask.shape[1] != n or (
        b is not None and mask.shape[0] is not None and mask.shape[0] != b
    ):
        raise ValueError(f"{fn}: mask must have shape [batch, n] = {(b, n)}, found {tuple(mask.shape)}.")
    return ops.cast(mask, "bool")


def _neg_inf(x):
    return ops.cast(float("-inf"), x.dtype)


def _pad_last(x, size, value):
    """Pad the last axis of ``[b, k]`` up to ``size`` with ``value``."""
    short = size - x.shape[-1]
    if short <= 0:
        return x
    return ops.pad(x, ((0, 0), (0, short)), constant_values=value)


def _top_entries(rows, threshold, k):
    """Top-``k`` entries of ``rows`` ``[b, R, n]``: values ``[b, k]`` (descending), flat
    indices ``row * n + col`` ``[b, k]`` (int32) and the untruncated count above threshold.

    Two stages instead of one top-k over ``R * n`` values: an entry among the top ``k``
    lies in one of the ``k`` rows with the largest maximum (each row ranked above it holds a
    larger entry), so only those rows are searched. The exact count reads every entry
    only when more than ``k`` rows pass the threshold (then the row is overflowing anyway).
    """
    num_rows, n = rows.shape[1], rows.shape[2]
    thr = ops.cast(threshold, rows.dtype)
    row_max = ops.max(rows, axis=-1)  # [b, R]
    k1 = min(k, num_rows)
    _, top_rows = ops.top_k(row_max, k1)
    top_rows = ops.cast(top_rows, "int32")
    # whole-row gather from [b * R, n] (XLA:CPU runs it ~2x faster than take_along_axis)
    offsets = ops.arange(ops.shape(rows)[0], dtype="int32")[:, None] * num_rows
    block = ops.take(ops.reshape(rows, (-1, n)), top_rows + offsets, axis=0)  # [b, k1, n]
    k2 = min(k, k1 * n)
    values, pos = ops.top_k(ops.reshape(block, (-1, k1 * n)), k2)
    pos = ops.cast(pos, "int32")
    row = ops.take_along_axis(top_rows, ops.floor_divide(pos, n), axis=1)
    index = row * n + ops.mod(pos, n)
    passing_rows = ops.sum(ops.cast(row_max > thr, "int32"), axis=-1)
    in_block = ops.sum(ops.cast(block > thr, "int32"), axis=(1, 2))
    if k1 < num_rows:
        count = ops.cond(
            ops.any(passing_rows > k1),
            lambda: ops.sum(ops.cast(rows > thr, "int32"), axis=(1, 2)),
            lambda: in_block,
        )
    else:
        count = in_block
    values = _pad_last(values, k, float("-inf"))
    index = _pad_last(index, k, -1)
    return values, index, ops.cast(count, "int32")


def _masked_rows(x, heads, n, mask):
    """``[b, heads, n, n]`` as ``[b, heads * n, n]`` rows, spans touching masked tokens at -inf."""
    if mask is not None:
        pair = ops.logical_and(mask[:, None, :, None], mask[:, None, None, :])
        x = ops.where(pair, x, _neg_inf(x))
    return ops.reshape(x, (-1, heads * n, n))


def global_pointer_spans(logits, threshold=0.0, max_spans=64, mask=None):
    """Batch GlobalPointer decoding with static output shapes (compilable).

    Selects, per row, the ``max_spans`` highest-scoring ``(type, start, end)`` entries of
    ``logits`` above ``threshold``. Uses ``keras.ops`` only: it runs eagerly on every backend
    and inside ``jax.jit`` / ``tf.function(jit_compile=True)``, e.g. fused with the model's
    forward pass, so only ``[batch, max_spans]`` values leave the device.

    Args:
        logits: ``[batch, heads, n, n]`` scores (a :class:`~bert4keras3.layers.GlobalPointer`
            / ``EfficientGlobalPointer`` output); ``heads`` and ``n`` must be static.
        threshold: a span is predicted when its score is ``> threshold`` (0 for ZLPR).
        max_spans: static capacity ``K`` of the output per row.
        mask: optional ``[batch, n]`` token mask; spans touching a ``False`` token are
            excluded (e.g. ``[CLS]`` / ``[SEP]``; padding is already masked by the head).

    Returns ``(spans, scores, counts)``:

    * ``spans`` ``[batch, K, 3]`` int32 ``(type, start, end)`` token indices (end
      inclusive), by decreasing score, padded with ``-1``;
    * ``scores`` ``[batch, K]`` their logits (``-inf`` in padded slots);
    * ``counts`` ``[batch]`` int32 number of spans above the threshold *before* truncation:
      a row with ``counts > K`` overflowed and lost its lowest-scoring spans.

    :func:`span_lists` turns the result into per-row lists (as :func:`global_pointer_decode`
    returns) and warns or raises on overflow.

    Example:
        >>> spans, scores, counts = global_pointer_spans(model(x), max_spans=32)
        >>> entities = span_lists(spans, scores, counts, mappings=mappings)
    """
    fn = "global_pointer_spans"
    threshold = _check_threshold(threshold)
    k = _check_capacity("max_spans", max_spans)
    x, heads, n = _static_scores(fn, "logits", logits)
    mask = _token_mask(fn, mask, x)
    values, index, counts = _top_entries(_masked_rows(x, heads, n, mask), threshold, k)
    ok = values > ops.cast(threshold, values.dtype)
    spans = ops.stack(
        [ops.floor_divide(index, n * n), ops.mod(ops.floor_divide(index, n), n), ops.mod(index, n)],
        axis=-1,
    )
    spans = ops.where(ok[..., None], spans, -1)
    scores = ops.where(ok, values, _neg_inf(values))
    return ops.cast(spans, "int32"), scores, counts


def gplinker_triples(entity_logits, head_logits, tail_logits, threshold=0.0, max_entities=64,
                     max_triples=64, mask=None):
    """Batch GPLinker decoding with static output shapes (compilable).

    Per row: the top ``max_entities`` subject spans (``entity_logits[:, 0]``) and object
    spans (``entity_logits[:, 1]``) above ``threshold``; every (subject, predicate, object)
    whose head pair ``(s_start, o_start)`` and tail pair ``(s_end, o_end)`` both score above
    ``threshold`` is a triple, ranked by ``min(head score, tail score)``; the top
    ``max_triples`` are returned. Same rule as :func:`gplinker_decode`.

    Args:
        entity_logits: ``[batch, 2, n, n]``; head_logits, tail_logits: ``[batch, P, n, n]``
            (the three outputs of :class:`~bert4keras3.layers.GPLinker`).
        threshold: decision threshold.
        max_entities: static capacity for subject spans and for object spans.
        max_triples: static capacity ``K`` of the output per row.
        mask: optional ``[batch, n]`` token mask; entities touching a ``False`` token are
            excluded.

    Returns ``(triples, scores, counts, dropped_entities)``:

    * ``triples`` ``[batch, K, 5]`` int32 ``(s_start, s_end, predicate, o_start, o_end)``
      token indices, by decreasing score, padded with ``-1``;
    * ``scores`` ``[batch, K]`` ``min(head, tail)`` score (``-inf`` in padded slots);
    * ``counts`` ``[batch]`` int32 triples found among the kept entities before truncation
      (``counts > K``: overflow);
    * ``dropped_entities`` ``[batch, 2]`` int32 subject / object spans above the threshold
      that did not fit in ``max_entities`` (non-zero: overflow, triples may be missing).

    :func:`triple_lists` converts the result to per-row lists and warns or raises on overflow.
    """
    fn = "gplinker_triples"
    threshold = _check_threshold(threshold)
    ke = _check_capacity("max_entities", max_entities)
    kt = _check_capacity("max_triples", max_triples)
    entity, _, n = _static_scores(fn, "entity_logits", entity_logits, heads=2)
    head, p, n_head = _static_scores(fn, "head_logits", head_logits)
    tail, _, n_tail = _static_scores(fn, "tail_logits", tail_logits, heads=p)
    if n_head != n or n_tail != n:
        raise ValueError(
            f"{fn}: all logits must share n, found entity {tuple(entity.shape)}, "
            f"head {tuple(head.shape)}, tail {tuple(tail.shape)}."
        )
    mask = _token_mask(fn, mask, entity)
    thr = ops.cast(threshold, entity.dtype)
    ends = []
    dropped = []
    for t in range(2):
        values, index, count = _top_entries(
            _masked_rows(entity[:, t:t + 1], 1, n, mask), threshold, ke
        )
        ok = values > thr
        ends.append((ops.floor_divide(index, n), ops.mod(index, n), ok))
        dropped.append(ops.maximum(count - ke, 0))
    (s_start, s_end, s_ok), (o_start, o_end, o_ok) = ends

    def pair_scores(logits, a, b):
        a = ops.where(s_ok, a, 0)
        b = ops.where(o_ok, b, 0)
        flat = ops.reshape(a[:, :, None] * n + b[:, None, :], (-1, 1, ke * ke))
        flat = flat + ops.zeros((1, p, 1), "int32")
        return ops.take_along_axis(ops.reshape(logits, (-1, p, n * n)), flat, axis=2)

    score = ops.minimum(
        pair_scores(ops.cast(head, entity.dtype), s_start, o_start),
        pair_scores(ops.cast(tail, entity.dtype), s_end, o_end),
    )  # [b, P, E * E]
    pair_ok = ops.reshape(ops.logical_and(s_ok[:, :, None], o_ok[:, None, :]), (-1, 1, ke * ke))
    score = ops.reshape(ops.where(pair_ok, score, _neg_inf(score)), (-1, p * ke * ke))
    counts = ops.sum(ops.cast(score > thr, "int32"), axis=-1)
    k = min(kt, p * ke * ke)
    values, index = ops.top_k(score, k)
    values = _pad_last(values, kt, float("-inf"))
    index = _pad_last(ops.cast(index, "int32"), kt, 0)
    ok = values > thr
    pred = ops.floor_divide(index, ke * ke)
    si = ops.mod(ops.floor_divide(index, ke), ke)
    oi = ops.mod(index, ke)

    def pick(x, i):
        return ops.take_along_axis(x, i, axis=1)

    triples = ops.stack(
        [pick(s_start, si), pick(s_end, si), pred, pick(o_start, oi), pick(o_end, oi)], axis=-1
    )
    triples = ops.where(ok[..., None], triples, -1)
    scores = ops.where(ok, values, _neg_inf(values))
    return ops.cast(triples, "int32"), scores, counts, ops.cast(ops.stack(dropped, axis=-1), "int32")


def _overflow(fn, over, detail, advice, on_overflow):
    """Warn or raise when any row of the boolean ``over`` is set; ``detail(row)`` says how."""
    rows = np.flatnonzero(over)
    if not rows.size:
        return
    message = (
        f"{fn}: {rows.size} of {len(over)} rows overflowed the decoder's capacity ({detail(rows[0])}"
        f"{', ...' if rows.size > 1 else ''}); the lowest-scoring ones were dropped. {advice}"
    )
    if on_overflow == "raise":
        raise RuntimeError(message)
    warnings.warn(message, SpanOverflowWarning, stacklevel=3)


def _check_on_overflow(on_overflow):
    if on_overflow not in ("warn", "raise"):
        raise ValueError(f"`on_overflow` must be 'warn' or 'raise', found {on_overflow!r}.")


def _row_mappings(fn, mappings, batch):
    if mappings is None:
        return [None] * batch
    mappings = list(mappings)
    if len(mappings) != batch:
        raise ValueError(f"{fn}: expected one mapping per row ({batch}), found {len(mappings)}.")
    return mappings


def span_lists(spans, scores, counts, mappings=None, on_overflow="warn"):
    """Host-side lists from :func:`global_pointer_spans` output.

    Args:
        spans, scores, counts: the three outputs of :func:`global_pointer_spans`
            (``span_lists(*global_pointer_spans(logits), ...)``).
        mappings: optional per-row ``rematch`` mappings (see :func:`global_pointer_decode`).
        on_overflow: ``"warn"`` (a :class:`SpanOverflowWarning`) or ``"raise"``
            (``RuntimeError``) when a row had more spans than the output holds.

    Returns one sorted list of ``(start, end, type)`` per row, exactly what
    :func:`global_pointer_decode` gives for that row when nothing overflowed.
    """
    fn = "span_lists"
    _check_on_overflow(on_overflow)
    spans = np.asarray(ops.convert_to_numpy(spans))
    counts = np.asarray(ops.convert_to_numpy(counts))
    if spans.ndim != 3 or spans.shape[-1] != 3 or counts.shape != spans.shape[:1]:
        raise ValueError(
            f"{fn}: expected spans [batch, K, 3] and counts [batch], found {spans.shape} and "
            f"{counts.shape}."
        )
    k = spans.shape[1]
    _overflow(fn, counts > k, lambda r: f"row {r}: {counts[r]} spans above the threshold, max_spans={k}",
              "Raise max_spans (or the threshold).", on_overflow)
    out = []
    for row, mapping in zip(spans, _row_mappings(fn, mappings, len(spans))):
        convert = _span_converter(mapping)
        found = set()
        for t, start, end in row[row[:, 0] >= 0]:
            span = convert(start, end)
            if span is not None:
                found.add(span + (int(t),))
        out.append(sorted(found))
    return out


def triple_lists(triples, scores, counts, dropped_entities, mappings=None, id2predicate=None,
                 on_overflow="warn"):
    """Host-side lists from :func:`gplinker_triples` output.

    Args:
        triples, scores, counts, dropped_entities: the outputs of :func:`gplinker_triples`.
        mappings: optional per-row ``rematch`` mappings; spans become character offsets and
            triples touching a token without characters are dropped.
        id2predicate: optional mapping / sequence turning predicate ids into names.
        on_overflow: ``"warn"`` or ``"raise"`` when triples or entities overflowed.

    Returns one list per row of ``((s_start, s_end), predicate, (o_start, o_end))``, sorted
    as :func:`gplinker_decode` sorts them (and equal to its result when nothing overflowed).
    """
    fn = "triple_lists"
    _check_on_overflow(on_overflow)
    triples = np.asarray(ops.convert_to_numpy(triples))
    counts = np.asarray(ops.convert_to_numpy(counts))
    dropped = np.asarray(ops.convert_to_numpy(dropped_entities))
    b = triples.shape[0] if triples.ndim else 0
    if triples.ndim != 3 or triples.shape[-1] != 5 or counts.shape != (b,) or dropped.shape != (b, 2):
        raise ValueError(
            f"{fn}: expected triples [batch, K, 5], counts [batch] and dropped_entities "
            f"[batch, 2], found {triples.shape}, {counts.shape} and {dropped.shape}."
        )
    k = triples.shape[1]
    _overflow(fn, counts > k, lambda r: f"row {r}: {counts[r]} triples, max_triples={k}",
              "Raise max_triples (or the threshold).", on_overflow)
    _overflow(fn, dropped.max(axis=1) > 0,
              lambda r: f"row {r}: {dropped[r, 0]} subject and {dropped[r, 1]} object spans beyond "
              "max_entities", "Raise max_entities (or the threshold); triples may be missing.",
              on_overflow)
    out = []
    for row, mapping in zip(triples, _row_mappings(fn, mappings, b)):
        convert = _span_converter(mapping)
        found = set()
        for ss, se, p, os_, oe in row[row[:, 0] >= 0]:
            s, o = convert(ss, se), convert(os_, oe)
            if s is None or o is None:
                continue
            found.add((s, int(p) if id2predicate is None else id2predicate[int(p)], o))
        out.append(sorted(found, key=repr))
    return out
