"""Sentence-embedding methods: encoder with pooling, BERT-whitening, unsupervised SimCSE,
CoSENT, a Sentence-BERT-style classifier, and the Spearman / retrieval evaluation.

* :func:`build_encoder`: a pretrained encoder with ``cls``, ``last-avg`` or
  ``first-last-avg`` pooling (mean of the first and the last Transformer block's outputs,
  each averaged over real tokens), as in bojone's BERT-whitening / SimCSE ``get_encoder``.
* :func:`compute_whitening`: ``mu`` = mean, ``cov`` = ``U S U^T`` (SVD),
  ``W = U sqrt(S)^-1`` cut to the first ``k`` columns; ``y = (x - mu) W``
  (BERT-whitening, https://kexue.fm/archives/8069).
* :func:`train_simcse`: two dropout views of each sentence are each other's positive,
  the rest of the batch the negatives (``bert4keras3.losses.simcse_loss``, scale 20).
* :func:`train_cosent`: ``log(1 + sum_{y_i < y_j} exp(20 (cos_i - cos_j)))`` over a batch
  of pairs (``bert4keras3.losses.cosent_loss``).
* :func:`train_sbert`: softmax classifier on ``[u, v, |u - v|]`` (Reimers & Gurevych 2019;
  bojone's CoSENT repository ``sbert.py`` baseline); STS-B scores are binarised at 2.5.
* :func:`evaluate`: Spearman of cosine vs label (``examples/metrics.spearman``) and, for
  0/1 labels, retrieval top-1 accuracy.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))

import keras  # noqa: E402
from keras import ops  # noqa: E402

from common import build_model  # noqa: E402
from metrics import spearman  # noqa: E402

__all__ = ["POOLINGS", "METHODS", "build_encoder", "pool_encoder", "SentenceEncoder", "compute_whitening",
           "apply_whitening", "cosine", "retrieval_top1", "evaluate", "train_simcse",
           "train_cosent", "train_sbert", "sbert_model", "PairMerge"]

POOLINGS = ("cls", "first-last-avg", "last-avg")
METHODS = ("none", "whitening", "simcse", "cosent", "sbert")


class MaskedMean(keras.layers.Layer):
    """Mean of ``hidden [B, T, H]`` over the positions where ``token_ids != 0``."""

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs, mask=None):  # the padding is read from token_ids
        hidden, token_ids = inputs
        mask = ops.cast(ops.not_equal(token_ids, 0), hidden.dtype)[..., None]
        return ops.sum(hidden * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


class TakeFirst(keras.layers.Layer):
    """The first position (``[CLS]``) of ``[B, T, H]``."""

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, hidden, mask=None):
        return hidden[:, 0]


def build_encoder(model_dir, model="bert", pooling="cls", **kwargs):
    """A Keras model ``inputs of the base model -> [B, hidden]`` sentence vectors.

    ``kwargs`` go to ``build_transformer_model`` (e.g. ``dropout_rate``)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, found {pooling!r}")
    import warnings

    with warnings.catch_warnings():  # an MLM head in the checkpoint is not used here
        warnings.filterwarnings("ignore", message=".*not used by the model.*")
        base = build_model(model_dir, model=model, **kwargs)
    return pool_encoder(base, pooling)


def pool_encoder(base, pooling="cls"):
    """Put ``pooling`` on a built base model (outputs ``[B, T, H]``)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, found {pooling!r}")
    blocks, i = [], 0
    while True:
        try:
            blocks.append(base.get_layer(f"Transformer-{i}-FeedForward-Norm").output)
        except ValueError:
            break
        i += 1
    last = blocks[-1] if blocks else base.output
    token_ids = base.inputs[0]
    if pooling == "cls":
        out = TakeFirst(name="Pool-CLS")(last)
    elif pooling == "last-avg":
        out = MaskedMean(name="Pool-Last-Avg")([last, token_ids])
    else:
        if not blocks:
            raise ValueError("first-last-avg needs Transformer-i-FeedForward-Norm layers; "
                         f"{base.name!r} has none: use cls or last-avg")
        first = MaskedMean(name="Pool-First-Avg")([blocks[0], token_ids])
        out = keras.layers.Average(name="Pool-First-Last-Avg")(
            [first, MaskedMean(name="Pool-Last-Avg")([last, token_ids])])
    return keras.Model(base.inputs, out, name="sentence_encoder")


class SentenceEncoder:
    """Tokenises texts and batches them for an encoder from :func:`build_encoder`.

    Batches are padded to a multiple of ``bucket`` tokens (few compiled shapes; with
    ``bucket=maxlen`` every batch has one shape)."""

    def __init__(self, model, tokenizer, maxlen=64, batch_size=64, bucket=8):
        self.model, self.tokenizer = model, tokenizer
        self.maxlen, self.batch_size, self.bucket = maxlen, batch_size, bucket
        self.n_inputs = len(model.inputs)
        self._cache = {}

    def ids(self, text):
        if text not in self._cache:
            self._cache[text] = self.tokenizer.encode(text, maxlen=self.maxlen)[0]
        return self._cache[text]

    def inputs(self, texts):
        """Model inputs for ``texts``: ``[token_ids, segment_ids]`` (or ``[token_ids]``)."""
        seqs = [self.ids(t) for t in texts]
        length = max(len(s) for s in seqs)
        length = -(-length // self.bucket) * self.bucket
        token_ids = np.zeros((len(seqs), length), dtype="int32")
        for row, s in enumerate(seqs):
            token_ids[row, :len(s)] = s
        return [token_ids, np.zeros_like(token_ids)][:self.n_inputs]

    def encode(self, texts):
        """``[len(texts), hidden]`` float64 vectors (inference mode: no dropout)."""
        texts = list(texts)
        order = sorted(range(len(texts)), key=lambda i: len(self.ids(texts[i])))
        out = [None] * len(texts)
        for start in range(0, len(texts), self.batch_size):
            chunk = order[start:start + self.batch_size]
            vecs = np.asarray(self.model.predict_on_batch(self.inputs([texts[i] for i in chunk])))
            for i, v in zip(chunk, vecs):
                out[i] = v
        return np.asarray(out, dtype="float64")


# ----------------------------------------------------------------------------- whitening
def compute_whitening(vecs, dim=None):
    """BERT-whitening parameters of ``vecs [n, d]``: ``(mu [1, d], W [d, k])`` with
    ``W = U sqrt(S)^-1`` (SVD of the covariance) keeping the ``k = dim`` largest
    directions (all ``d`` when ``dim`` is None). ``apply_whitening`` then gives vectors
    whose covariance (``np.cov``) over ``vecs`` is the identity."""
    vecs = np.asarray(vecs, dtype="float64")
    if vecs.ndim != 2 or len(vecs) < 2:
        raise ValueError(f"whitening needs vectors [n >= 2, d], found shape {vecs.shape}")
    d = vecs.shape[1]
    k = d if dim is None else int(dim)
    if not 1 <= k <= d:
        raise ValueError(f"--whiten-dim must be in [1, {d}] (the embedding size), found {dim}")
    mu = vecs.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(np.cov(vecs.T))
    if s[k - 1] <= 1e-10 * max(s[0], 1e-300):
        rank = int((s > 1e-10 * max(s[0], 1e-300)).sum())
        raise ValueError(
            f"the covariance of {len(vecs)} vectors has rank {rank} < {k} kept dimensions: "
            f"use --whiten-dim {max(rank, 1)} or fewer, or more training sentences")
    return mu, u[:, :k] / np.sqrt(s[:k])


def apply_whitening(vecs, mu, kernel):
    """``(vecs - mu) @ kernel``."""
    return (np.asarray(vecs, dtype="float64") - mu) @ kernel


# ----------------------------------------------------------------------------- evaluation
def cosine(a, b):
    """Row-wise cosine similarity of ``a`` and ``b`` ``[n, d]``."""
    a = np.asarray(a, dtype="float64")
    b = np.asarray(b, dtype="float64")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.clip(na * nb, 1e-12, None)


def retrieval_top1(pairs, vectors):
    """Top-1 accuracy of finding a gold partner among all candidates.

    Queries: the first texts of pairs labelled 1; candidates: every second text of such
    pairs; a query is right when its most cosine-similar candidate is one of the texts it
    is paired with (label 1). ``vectors``: text -> vector. Returns ``(accuracy, queries)``,
    ``(None, 0)`` when labels are not 0/1 or there are fewer than two candidates."""
    if any(y not in (0.0, 1.0) for _, _, y in pairs):
        return None, 0
    gold = {}
    for a, b, y in pairs:
        if y == 1.0:
            gold.setdefault(a, set()).add(b)
    candidates = sorted({b for g in gold.values() for b in g})
    if len(candidates) < 2:
        return None, 0
    queries = sorted(gold)
    q = np.stack([vectors[t] for t in queries]).astype("float64")
    c = np.stack([vectors[t] for t in candidates]).astype("float64")
    q /= np.clip(np.linalg.norm(q, axis=1, keepdims=True), 1e-12, None)
    c /= np.clip(np.linalg.norm(c, axis=1, keepdims=True), 1e-12, None)
    best = (q @ c.T).argmax(axis=1)
    hits = sum(candidates[j] in gold[t] for t, j in zip(queries, best))
    return hits / len(queries), len(queries)


def evaluate(pairs, vectors):
    """``{"spearman", "retrieval_top1", "retrieval_queries", "pairs"}`` of ``pairs``
    (``(text1, text2, label)``) under ``vectors`` (text -> vector)."""
    a = np.stack([vectors[x] for x, _, _ in pairs])
    b = np.stack([vectors[y] for _, y, _ in pairs])
    labels = [y for _, _, y in pairs]
    top1, queries = retrieval_top1(pairs, vectors)
    return {"spearman": spearman(labels, cosine(a, b).tolist()), "retrieval_top1": top1,
            "retrieval_queries": queries, "pairs": len(pairs)}


# ----------------------------------------------------------------------------- training
def _batches(n, batch_size, rng):
    """Endless index batches of exactly ``batch_size`` (reshuffled every pass)."""
    batch_size = min(batch_size, n)
    while True:
        order = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start:start + batch_size]


def _fit(model, loss, batches, steps, learning_rate, log=print, log_every=50):
    from bert4keras3.optimizers import Adam

    model.compile(optimizer=Adam(learning_rate), loss=loss)
    history = []
    for step in range(1, steps + 1):
        x, y = next(batches)
        value = model.train_on_batch(x, y)
        value = float(value[0] if isinstance(value, (list, tuple)) else value)
        history.append(value)
        if log and (step % log_every == 0 or step == steps):
            log(f"step {step}/{steps}  loss {np.mean(history[-log_every:]):.4f}")
    return history


def cosent_batch(enc, pairs):
    """Interleaved ``(a0, b0, a1, b1, ...)`` inputs and labels ``[2B, 1]``."""
    texts = [t for a, b, _ in pairs for t in (a, b)]
    labels = np.repeat(np.asarray([y for _, _, y in pairs], dtype="float32"), 2)[:, None]
    return enc.inputs(texts), labels


def simcse_batch(enc, sentences):
    """Each sentence twice in a row (two dropout views); dummy labels ``[2B, 1]``."""
    texts = [s for s in sentences for _ in range(2)]
    return enc.inputs(texts), np.zeros((len(texts), 1), dtype="float32")


def train_cosent(enc, pairs, steps, batch_size=32, learning_rate=2e-5, seed=0, log=print):
    """CoSENT on labelled pairs; returns the per-step losses."""
    from bert4keras3.losses import cosent_loss

    rng = np.random.RandomState(seed)
    batches = (cosent_batch(enc, [pairs[i] for i in idx])
               for idx in _batches(len(pairs), batch_size, rng))
    return _fit(enc.model, cosent_loss, batches, steps, learning_rate, log)


def train_simcse(enc, sentences, steps, batch_size=64, learning_rate=1e-5, seed=0, log=print):
    """Unsupervised SimCSE on unlabelled sentences; returns the per-step losses.
    Needs dropout in the encoder (``hidden_dropout_prob`` or ``--dropout-rate``)."""
    from bert4keras3.losses import simcse_loss

    rng = np.random.RandomState(seed)
    sentences = list(sentences)
    batches = (simcse_batch(enc, [sentences[i] for i in idx])
               for idx in _batches(len(sentences), batch_size, rng))
    return _fit(enc.model, simcse_loss, batches, steps, learning_rate, log)


class PairMerge(keras.layers.Layer):
    """Interleaved rows ``(u0, v0, u1, v1, ...) [2B, H]`` -> ``[u, v, |u - v|]`` of each
    pair, on both of its rows ``[2B, 3H]``."""

    def call(self, x):
        u, v = x[::2], x[1::2]
        merged = ops.concatenate([u, v, ops.abs(u - v)], axis=1)
        return ops.reshape(ops.stack([merged, merged], axis=1), (-1, 3 * x.shape[-1]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 3 * input_shape[-1])


def sbert_model(encoder, n_classes=2):
    """Classifier on interleaved rows ``(a0, b0, a1, b1, ...)``: each pair's
    ``softmax(Dense([u, v, |u - v|]))``, repeated on both of its rows (the bert4keras
    layout of bojone's ``sbert.py``, so labels are per row like CoSENT's)."""
    inputs = [keras.Input((None,), dtype="int32", name=f"SBERT-Input-{i}")
              for i in range(len(encoder.inputs))]
    feats = PairMerge(name="SBERT-Merge")(encoder(inputs))
    out = keras.layers.Dense(n_classes, activation="softmax", name="SBERT-Classifier")(feats)
    return keras.Model(inputs, out, name="sbert")


def sbert_labels(pairs, task=None):
    """0/1 classes of ``pairs``: labels as they are when all are 0/1; STS-B scores
    binarised at ``> 2.5`` (as bojone's ``sbert.py``); anything else is an error."""
    labels = [y for _, _, y in pairs]
    if all(y in (0.0, 1.0) for y in labels):
        return np.asarray(labels, dtype="int32")
    if task == "stsb":
        return np.asarray([int(y > 2.5) for y in labels], dtype="int32")
    raise ValueError("sbert trains a 0/1 classifier: expected 0/1 labels (or --task stsb "
                     f"scores, binarised at 2.5), found values such as {sorted(set(labels))[:5]}")


def sbert_batch(enc, pairs, labels):
    """Interleaved inputs (as :func:`cosent_batch`) and each pair's class on both rows."""
    x, _ = cosent_batch(enc, pairs)
    return x, np.repeat(np.asarray(labels, dtype="int32"), 2)


def train_sbert(enc, pairs, steps, batch_size=32, learning_rate=2e-5, seed=0, task=None,
                log=print):
    """Sentence-BERT-style classifier training; returns ``(losses, classifier_model)``."""
    labels = sbert_labels(pairs, task)
    model = sbert_model(enc.model)
    rng = np.random.RandomState(seed)
    batches = (sbert_batch(enc, [pairs[i] for i in idx], labels[idx])
               for idx in _batches(len(pairs), batch_size, rng))
    return _fit(model, "sparse_categorical_crossentropy", batches, steps, learning_rate,
                log), model
