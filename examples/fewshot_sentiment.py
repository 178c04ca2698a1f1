#! -*- coding: utf-8 -*-
"""Few-shot binary sentiment: plain fine-tuning vs PET vs P-tuning, over several seeds.

For every seed a class-balanced set of ``--shots`` labelled reviews is drawn from
``train.json``; each method is trained on it for the same ``--steps`` optimizer steps
(Adam, constant learning rate) and scored by accuracy on ``test.json`` (and ``dev.json``)
after the last step. No model selection on dev: 2,000 labelled dev reviews would not
exist in a real few-shot setting.

Methods (recipes read from bojone's Pattern-Exploiting-Training/sentiment.py and
P-tuning/bert.py, the latter being his P-tuning sentiment example):

* ``finetune``: a softmax ``Dense(2)`` on the [CLS] hidden state; every weight trains.
* ``pet``: ``[CLS] [MASK]满意。 <review> [SEP]`` (bojone's prefix ``很满意。`` with its first
  character masked); the class is the larger of the MLM probabilities of the label words
  ``很`` (positive) and ``不`` (negative) at the [MASK]. Training is MLM cross-entropy (over
  the whole vocabulary) on the label word at the [MASK]; every weight trains. bojone also
  masked 15% of the other positions at random (80/10/10) as extra MLM targets:
  ``--mlm-prob 0.15``. The default is 0: over a few dozen steps those ~20 extra targets per
  review dilute the label term about 20-fold (roformer-small, one seed, 30 steps at 5e-4,
  300 test reviews: accuracy 0.50 with 0.15, 0.56 without).
* ``ptuning``: ``[CLS] [unused1..4] [MASK] [unused5..8] <review> [SEP]``, the same label
  words and loss. As in bojone's example the whole model is frozen except the token
  embedding matrix, and in it only the rows of the prompt tokens receive a gradient (a
  stop-gradient on every other row, in the input lookup and in the tied MLM output alike):
  8 x hidden numbers train.
* ``pet-zeroshot`` (reported unless ``--no-zeroshot``): the PET pattern on the pretrained MLM, no training;
  it does not depend on the seed, so it is scored once.

Data: CLUE-style JSON lines ``{"sentence", "label": "0"|"1", "label_desc"}`` in
``DIR/{train,dev,test}.json`` (``data/sentiment`` from ``scripts/get_data.sh``). Model: a
BERT-family directory with MLM head weights (``bert_config.json``, ``vocab.txt``, a
checkpoint), e.g. ``data/models/roformer-small`` with ``--model roformer``.

Example::

    KERAS_BACKEND=jax python examples/fewshot_sentiment.py --data-dir data/sentiment \\
        --model-dir data/models/roformer-small --model roformer --methods finetune,pet,ptuning \\
        --shots 32 --seeds 1,2,3 --steps 30 --maxlen 64 --limit-dev 0 \\
        --output results/fewshot_sentiment.json

On CPU, JAX trains this model about 3x faster than PyTorch (one 32 x 128 step of the
4-layer RoFormer: 4 s vs 15 s on a shared 2-core machine). Prints a Markdown table (method | test accuracy mean ± sd over seeds | dev | seconds per
run) and the command; ``--output`` gets every per-seed record.
"""
import argparse
import math
import os
import shlex
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
from keras import ops  # noqa: E402

from bert4keras3.layers.core import Embedding, FirstToken  # noqa: E402
from bert4keras3.layers.extras import Loss  # noqa: E402
from bert4keras3.models import MODELS, build_transformer_model  # noqa: E402
from examples.common import (  # noqa: E402
    DataError, load_tokenizer, model_files, read_json_lines, set_seed, write_json,
)

METHODS = ("finetune", "pet", "ptuning")
LABELS = ("0", "1")  # negative, positive
PET_PREFIX = "很满意。"  # bojone's pattern; its first character is the label slot
LABEL_WORDS = ("不", "很")  # label 0 (negative), label 1 (positive)
PROMPT_TOKENS = 8  # [unused1..8]
PROMPT_MASK_AFTER = 4  # [MASK] after the 4th prompt token (bojone: mask_idx = 5 with [CLS])
DEFAULT_LR = {"finetune": 5e-4, "pet": 5e-4, "ptuning": 1e-2}


# ----------------------------------------------------------------------------- data

def load_split(path, limit=None):
    """``[(sentence, label_int), ...]`` from a CLUE-style JSON-lines file."""
    rows = []
    for number, obj in read_json_lines(path, fields=("sentence", "label"), limit=limit):
        label = str(obj["label"])
        if label not in LABELS:
            raise DataError(f"{path}:{number}: label must be one of {list(LABELS)}, "
                            f"found {obj['label']!r}")
        rows.append((str(obj["sentence"]), int(label)))
    return rows


def sample_shots(train, shots, seed, exclude=()):
    """Indices into ``train`` of a class-balanced labelled set of ``shots`` examples.

    ``shots / 2`` examples of each class, drawn without replacement with
    ``numpy.random.RandomState(seed)`` (so the same seed gives the same set), skipping
    every example whose sentence is in ``exclude`` (the dev / test sentences). Returned
    in the order drawn, negatives and positives interleaved.
    """
    n_classes = len(LABELS)
    if shots <= 0 or shots % n_classes:
        raise ValueError(f"--shots must be a positive multiple of {n_classes} (class-balanced), "
                         f"found {shots}")
    per_class = shots // n_classes
    exclude = set(exclude)
    rng = np.random.RandomState(seed)
    picked = []
    for label in range(n_classes):
        pool = [i for i, (text, y) in enumerate(train) if y == label and text not in exclude]
        if len(pool) < per_class:
            raise ValueError(f"need {per_class} training examples of label {label} for "
                             f"{shots} shots, found {len(pool)}")
        picked.append([pool[j] for j in rng.choice(len(pool), per_class, replace=False)])
    return [int(i) for pair in zip(*picked) for i in pair]


class Pattern:
    """Token ids ``[CLS] prefix <text> [SEP]`` where ``prefix`` holds one [MASK].

    ``prefix_ids``: the ids between [CLS] and the text; ``mask_index``: position of the
    [MASK] in the full sequence; ``label_ids``: the label-word id of each class.
    """

    def __init__(self, tokenizer, prefix_ids, mask_offset, label_words, maxlen):
        self.tokenizer = tokenizer
        self.prefix_ids = list(prefix_ids)
        self.mask_index = 1 + mask_offset
        self.maxlen = maxlen
        vocab = tokenizer.token_dict
        missing = [w for w in label_words if w not in vocab]
        if missing:
            raise ValueError(f"label word(s) {missing} not in the vocabulary")
        self.label_ids = [vocab[w] for w in label_words]
        if maxlen < len(self.prefix_ids) + 3:
            raise ValueError(f"--maxlen {maxlen} leaves no room for the text after the "
                             f"{len(self.prefix_ids)}-token pattern")

    def encode(self, text):
        ids = self.tokenizer.encode(text)[0][1:-1]
        ids = ids[:self.maxlen - 2 - len(self.prefix_ids)]
        tok = self.tokenizer
        return [tok._token_start_id] + self.prefix_ids + ids + [tok._token_end_id]


def pet_pattern(tokenizer, maxlen):
    """bojone's PET pattern: ``[MASK]满意。`` before the review, label words 很 / 不."""
    rest = tokenizer.encode(PET_PREFIX[1:])[0][1:-1]
    return Pattern(tokenizer, [tokenizer._token_mask_id] + rest, 0, LABEL_WORDS, maxlen)


def ptuning_pattern(tokenizer, maxlen):
    """bojone's P-tuning prompt: ``[unused1..4] [MASK] [unused5..8]`` before the review."""
    names = ["[unused%d]" % i for i in range(1, PROMPT_TOKENS + 1)]
    missing = [n for n in names if n not in tokenizer.token_dict]
    if missing:
        raise ValueError(f"P-tuning needs the prompt tokens {names} in vocab.txt; "
                         f"missing {missing}")
    ids = [tokenizer.token_dict[n] for n in names]
    ids.insert(PROMPT_MASK_AFTER, tokenizer._token_mask_id)
    return Pattern(tokenizer, ids, PROMPT_MASK_AFTER, LABEL_WORDS, maxlen)


def prompt_ids(pattern):
    """The trainable prompt ids of a P-tuning pattern (its prefix without the [MASK])."""
    return [i for i in pattern.prefix_ids if i != pattern.tokenizer._token_mask_id]


def _round_up(n, multiple):
    return max(multiple, int(math.ceil(n / multiple)) * multiple)


def pad(rows, length, n_rows=None):
    out = np.zeros((n_rows or len(rows), length), "int32")
    for r, ids in enumerate(rows):
        out[r, :len(ids)] = ids
    return out


def mlm_batch(pattern, encoded, labels, rng, mlm_prob, vocab_size, bucket=32):
    """Inputs ``[token_ids, segment_ids, positions, targets]`` of one PET / P-tuning step.

    The label slot is [MASK] with its label word as target (always position 0 of
    ``positions``); every other position is, with probability ``mlm_prob``, an extra MLM
    target (80% [MASK], 10% kept, 10% a random id in ``[1, vocab)``), as in bojone's
    ``random_masking``. Unused entries of ``positions`` have target 0 (ignored).
    """
    mask_id = pattern.tokenizer._token_mask_id
    sources, positions, targets = [], [], []
    for ids, label in zip(encoded, labels):
        src = list(ids)
        pos, tgt = [pattern.mask_index], [pattern.label_ids[label]]
        for p, t in enumerate(ids):
            if p == pattern.mask_index or mlm_prob <= 0:
                continue
            r = rng.random_sample()
            if r < mlm_prob:
                if r < mlm_prob * 0.8:
                    src[p] = mask_id
                elif r >= mlm_prob * 0.9:
                    src[p] = rng.randint(1, vocab_size)
                pos.append(p)
                tgt.append(t)
        src[pattern.mask_index] = mask_id
        sources.append(src)
        positions.append(pos)
        targets.append(tgt)
    length = _round_up(max(len(s) for s in sources), bucket)
    n_pos = _round_up(max(len(p) for p in positions), 8)
    x = pad(sources, length)
    return [x, np.zeros_like(x), pad(positions, n_pos), pad(targets, n_pos)]


# ----------------------------------------------------------------------------- models

class PtuningEmbedding(Embedding):
    """Token embedding whose gradient reaches only the rows ``trainable_ids``.

    bojone's ``PtuningEmbedding``: the table is ``E * m + stop_gradient(E) * (1 - m)``
    with ``m`` one on the prompt rows, in lookup and tied-output (``mode="dense"``) use.
    """

    def __init__(self, *args, trainable_ids=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.trainable_ids = [int(i) for i in trainable_ids]

    def _table(self):
        table = self.embeddings
        rows = np.zeros((self.input_dim, 1), "float32")
        rows[self.trainable_ids] = 1.0
        rows = ops.cast(ops.convert_to_tensor(rows), table.dtype)
        return table * rows + ops.stop_gradient(table) * (1.0 - rows)

    def call(self, inputs, mode="embedding"):
        table = self._table()
        if mode == "embedding":
            if inputs.dtype not in ("int32", "int64"):
                inputs = ops.cast(inputs, "int32")
            return ops.cast(ops.take(table, inputs, axis=0), self.compute_dtype)
        if mode == "dense":
            kernel = ops.cast(table, inputs.dtype)
            return ops.tensordot(inputs, kernel, axes=[[len(inputs.shape) - 1], [1]])
        raise ValueError(f"Embedding mode must be 'embedding' or 'dense', found {mode!r}")

    def get_config(self):
        config = super().get_config()
        config.update(trainable_ids=self.trainable_ids)
        return config


def ptuning_model_class(base, trainable_ids):
    """A subclass of the Transformer class ``base`` whose ``Embedding-Token`` is a
    :class:`PtuningEmbedding` (bojone's ``PtuningBERT``)."""

    class Ptuning(base):
        def apply(self, inputs=None, layer=None, arguments=None, **kwargs):
            if layer is Embedding and kwargs.get("name") == "Embedding-Token":
                kwargs["trainable_ids"] = trainable_ids
                layer = PtuningEmbedding
            return super().apply(inputs, layer, arguments, **kwargs)

    Ptuning.__name__ = "Ptuning" + base.__name__
    return Ptuning


class GatherPositions(keras.layers.Layer):
    """``hidden[b, positions[b, k]]``: ``[batch, seq, dim], [batch, k] -> [batch, k, dim]``."""

    def call(self, inputs):
        hidden, positions = inputs
        index = ops.expand_dims(ops.cast(positions, "int32"), -1)
        index = ops.broadcast_to(index, tuple(ops.shape(positions)) + (ops.shape(hidden)[-1],))
        return ops.take_along_axis(hidden, index, axis=1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        (batch, _, dim), (_, k) = input_shape
        return (batch, k, dim)


class MaskedCrossEntropy(Loss):
    """Mean cross-entropy over the entries whose target id is not 0 (bojone's CrossEntropy)."""

    def compute_loss(self, inputs, mask=None):
        y_true, y_pred = inputs
        y_mask = ops.cast(ops.not_equal(y_true, 0), "float32")
        loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        return ops.sum(loss * y_mask) / ops.maximum(ops.sum(y_mask), 1.0)


def build_encoder(args, trainable_ids=None):
    """The builder object (with ``.model``, MLM head on) of ``args.model_dir``."""
    if args.model not in MODELS:
        raise ValueError(f"unknown --model {args.model!r}; expected one of {sorted(MODELS)}")
    files = model_files(args.model_dir)
    cls = MODELS[args.model]
    obj = build_transformer_model(files["config"], files["checkpoint"], model=cls,
                                  with_mlm=True, return_keras_model=False)
    if not hasattr(obj, "apply_mlm_head"):
        raise ValueError(f"--model {args.model!r} has no BERT-style MLM head (apply_mlm_head); "
                         f"use bert, roberta, roformer or nezha")
    if trainable_ids is None:
        return obj
    # Build the P-tuning variant without a checkpoint and copy the loaded weights over by
    # path (a .weights.h5 file keys layers by class, which the subclassed embedding changes).
    ptuning = build_transformer_model(files["config"], None,
                                      model=ptuning_model_class(cls, trainable_ids),
                                      with_mlm=True, return_keras_model=False)
    source = {w.path: w for w in obj.model.weights}
    target = {w.path: w for w in ptuning.model.weights}
    if source.keys() != target.keys():
        raise ValueError(f"P-tuning model weights differ from the model's: only in the model "
                         f"{sorted(source.keys() - target.keys())}, only in the P-tuning model "
                         f"{sorted(target.keys() - source.keys())}")
    for path, w in target.items():
        w.assign(source[path])
    return ptuning


def last_hidden(obj):
    """The encoder's last hidden states inside ``obj.model`` (the MLM head's input)."""
    try:
        return obj.model.get_layer("MLM-Dense").input
    except ValueError:
        raise ValueError("expected an MLM head starting with a layer 'MLM-Dense' in the model "
                         "(BERT family); found none") from None


def mlm_models(obj):
    """``(scorer, trainer)``: MLM probabilities at given positions, and its training model.

    scorer: ``[token_ids, segment_ids, positions] -> [batch, k, vocab]`` through the model's
    own MLM head layers; trainer adds ``targets`` and the :class:`MaskedCrossEntropy` loss.
    """
    token_in, segment_in = obj.model.inputs[:2]
    positions_in = keras.Input((None,), dtype="int32", name="Input-Positions")
    targets_in = keras.Input((None,), dtype="int32", name="Input-Targets")
    x = GatherPositions(name="Gather-Positions")([last_hidden(obj), positions_in])
    x = obj.apply_mlm_head(x)
    probs = keras.layers.Activation("softmax", name="Positions-MLM-Softmax")(x)
    scorer = keras.Model([token_in, segment_in, positions_in], probs)
    out = MaskedCrossEntropy(1, name="Masked-Cross-Entropy")([targets_in, probs])
    trainer = keras.Model([token_in, segment_in, positions_in, targets_in], out)
    return scorer, trainer


def classifier_model(obj):
    """Softmax ``Dense(2)`` on the [CLS] hidden state (bojone's sentiment.py head)."""
    x = FirstToken(name="CLS-token")(last_hidden(obj))
    probs = keras.layers.Dense(len(LABELS), activation="softmax",
                               kernel_initializer=obj.initializer, name="Sentiment-Proba")(x)
    return keras.Model(obj.model.inputs[:2], probs)


def freeze_for_ptuning(model):
    """Freeze every layer except ``Embedding-Token`` (bojone's P-tuning example)."""
    for layer in model.layers:
        layer.trainable = layer.name == "Embedding-Token"


# ----------------------------------------------------------------------------- scoring

def _batches(encoded, batch_size, bucket=32):
    """Length-sorted batches ``(indices, token_ids)``; rows padded to ``batch_size`` and
    lengths to a multiple of ``bucket`` so compiled backends see few shapes."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        rows = [encoded[i] for i in idx]
        length = _round_up(max(len(r) for r in rows), bucket)
        yield idx, pad(rows, length, batch_size)


def label_probs(scorer, pattern, texts, batch_size=64):
    """``[n, 2]``: MLM probabilities of the two label words at the pattern's [MASK]."""
    encoded = [pattern.encode(t) for t in texts]
    out = np.zeros((len(texts), len(pattern.label_ids)), "float32")
    for idx, x in _batches(encoded, batch_size):
        x[:, pattern.mask_index] = pattern.tokenizer._token_mask_id
        pos = np.full((len(x), 1), pattern.mask_index, "int32")
        probs = keras.ops.convert_to_numpy(scorer.predict_on_batch([x, np.zeros_like(x), pos]))
        out[idx] = probs[:len(idx), 0][:, pattern.label_ids]
    return out


def class_probs(model, tokenizer, texts, maxlen, batch_size=64):
    """``[n, 2]``: the fine-tuned classifier's probabilities."""
    encoded = [tokenizer.encode(t, maxlen=maxlen)[0] for t in texts]
    out = np.zeros((len(texts), len(LABELS)), "float32")
    for idx, x in _batches(encoded, batch_size):
        probs = keras.ops.convert_to_numpy(model.predict_on_batch([x, np.zeros_like(x)]))
        out[idx] = probs[:len(idx)]
    return out


def accuracy(probs, rows):
    if not rows:
        return None
    return float(np.mean(np.argmax(probs, axis=1) == np.array([y for _, y in rows])))


# ----------------------------------------------------------------------------- training

def trainable_summary(model):
    return {"trainable_weights": sorted(w.path for w in model.trainable_weights),
            "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights))}


def shot_order(n, steps, batch_size, rng):
    """Index batches of ``steps`` steps over ``n`` shots, reshuffled each pass."""
    size = min(batch_size, n)
    order = []
    while len(order) < steps * size:
        order.extend(rng.permutation(n).tolist())
    return [order[s * size:(s + 1) * size] for s in range(steps)]


def train_mlm(trainer, pattern, shots, steps, batch_size, mlm_prob, rng):
    encoded = [pattern.encode(t) for t, _ in shots]
    losses = []
    for idx in shot_order(len(shots), steps, batch_size, rng):
        batch = mlm_batch(pattern, [encoded[i] for i in idx], [shots[i][1] for i in idx],
                          rng, mlm_prob, pattern.tokenizer._vocab_size)
        losses.append(float(np.asarray(trainer.train_on_batch(batch, None)).ravel()[0]))
    return losses


def train_classifier(model, tokenizer, shots, steps, batch_size, maxlen, rng):
    encoded = [tokenizer.encode(t, maxlen=maxlen)[0] for t, _ in shots]
    labels = np.array([y for _, y in shots], "int32")
    losses = []
    for idx in shot_order(len(shots), steps, batch_size, rng):
        rows = [encoded[i] for i in idx]
        x = pad(rows, _round_up(max(len(r) for r in rows), 32))
        loss = model.train_on_batch([x, np.zeros_like(x)], labels[idx])
        losses.append(float(np.asarray(loss).ravel()[0]))
    return losses


def run_method(method, args, tokenizer, shots, splits, seed, lr):
    """Train ``method`` on ``shots`` (``[(text, label)]``) and score it on ``splits``."""
    keras.backend.clear_session()
    set_seed(seed)
    rng = np.random.RandomState(seed)
    start = time.time()
    record = {"method": method, "seed": seed, "steps": args.steps, "learning_rate": lr,
              "batch_size": min(args.batch_size, len(shots)) if shots else None}
    texts = {name: [t for t, _ in rows] for name, rows in splits.items()}
    if method == "finetune":
        obj = build_encoder(args)
        model = classifier_model(obj)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
        record.update(trainable_summary(model))
        losses = train_classifier(model, tokenizer, shots, args.steps, args.batch_size,
                                  args.maxlen, rng)
        train_seconds = time.time() - start
        probs = {n: class_probs(model, tokenizer, texts[n], args.maxlen) for n in splits}
        shot_probs = class_probs(model, tokenizer, [t for t, _ in shots], args.maxlen)
    else:
        if method in ("pet", "pet-zeroshot"):
            pattern = pet_pattern(tokenizer, args.maxlen)
            obj = build_encoder(args)
        elif method == "ptuning":
            pattern = ptuning_pattern(tokenizer, args.maxlen)
            obj = build_encoder(args, trainable_ids=prompt_ids(pattern))
        else:
            raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
        scorer, trainer = mlm_models(obj)
        if method == "ptuning":
            freeze_for_ptuning(trainer)
            record["trainable_rows"] = prompt_ids(pattern)
        losses = []
        if method != "pet-zeroshot":
            trainer.compile(optimizer=keras.optimizers.Adam(lr))
            record.update(trainable_summary(trainer))
            if method == "ptuning":  # only the prompt rows get a gradient
                record["effective_trainable_params"] = (
                    len(record["trainable_rows"]) * int(obj.model.get_layer(
                        "Embedding-Token").embeddings.shape[1]))
            losses = train_mlm(trainer, pattern, shots, args.steps, args.batch_size,
                               args.mlm_prob, rng)
        train_seconds = time.time() - start
        probs = {n: label_probs(scorer, pattern, texts[n]) for n in splits}
        shot_probs = label_probs(scorer, pattern, [t for t, _ in shots]) if shots else None
    record.update(
        train_seconds=round(train_seconds, 2),
        seconds=round(time.time() - start, 2),
        first_loss=losses[0] if losses else None,
        final_loss=losses[-1] if losses else None,
    )
    record["shots_accuracy"] = accuracy(shot_probs, shots) if shots else None
    for name, rows in splits.items():
        record[f"{name}_accuracy"] = accuracy(probs[name], rows)
        record[f"{name}_examples"] = len(rows)
        # share of reviews called positive: 0 or 1 means one class for everything
        record[f"{name}_positive_rate"] = (float(np.mean(np.argmax(probs[name], axis=1)))
                                           if rows else None)
    return record


# ----------------------------------------------------------------------------- CLI

def parse_learning_rates(text, methods):
    """``"2e-4"`` (all methods) or ``"finetune=1e-4,pet=1e-4,ptuning=1e-2"``."""
    if text is None:
        return {m: DEFAULT_LR[m] for m in methods}
    if "=" not in text:
        return {m: float(text) for m in methods}
    rates = dict(DEFAULT_LR)
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in METHODS:
            raise ValueError(f"--learning-rate: unknown method {name!r}; expected {METHODS}")
        rates[name.strip()] = float(value)
    return {m: rates[m] for m in methods}


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", required=True, help="train.json / dev.json / test.json")
    p.add_argument("--model-dir", required=True,
                   help="bert_config.json + vocab.txt + checkpoint with MLM head weights")
    p.add_argument("--model", default="roformer")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma list of finetune, pet, ptuning")
    p.add_argument("--shots", type=int, default=32, help="labelled examples (class-balanced)")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per method")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", default=None,
                   help="one LR for all methods or method=LR,... (default: finetune=5e-4, "
                        "pet=5e-4, ptuning=1e-2; Adam, constant)")
    p.add_argument("--mlm-prob", type=float, default=0.0,
                   help="extra random MLM targets in PET / P-tuning training (bojone: 0.15)")
    p.add_argument("--maxlen", type=int, default=64, help="tokens per review incl. pattern")
    p.add_argument("--limit-test", type=int, default=None, help="first N test examples")
    p.add_argument("--limit-dev", type=int, default=None,
                   help="first N dev examples (0: skip dev)")
    p.add_argument("--no-zeroshot", action="store_true", help="skip the zero-shot PET row")
    p.add_argument("--output", default=None, help="JSON file for every per-seed record")
    return p


def _mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


def summarize(records, methods):
    lines = ["| method | test accuracy (mean ± sd over seeds) | dev accuracy | seconds per run | "
             "seeds |", "|---|---|---|---|---|"]
    for method in (["pet-zeroshot"] if any(r["method"] == "pet-zeroshot" for r in records)
                   else []) + list(methods):
        rs = [r for r in records if r["method"] == method]
        if not rs:
            continue
        seeds = "-" if method == "pet-zeroshot" else ",".join(str(r["seed"]) for r in rs)
        lines.append(f"| {method} | {_mean_sd([r['test_accuracy'] for r in rs])} | "
                     f"{_mean_sd([r.get('dev_accuracy') for r in rs])} | "
                     f"{np.mean([r['seconds'] for r in rs]):.1f} | {seeds} |")
    return "\n".join(lines)


def main(argv=None):
    args = parser().parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"--methods: expected a comma list of {list(METHODS)}, found "
                         f"{args.methods!r}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    rates = parse_learning_rates(args.learning_rate, methods)
    tokenizer = load_tokenizer(args.model_dir)
    train = load_split(os.path.join(args.data_dir, "train.json"))
    splits = {"test": load_split(os.path.join(args.data_dir, "test.json"), args.limit_test)}
    if args.limit_dev != 0:
        splits["dev"] = load_split(os.path.join(args.data_dir, "dev.json"), args.limit_dev)
    # shots never repeat a dev / test review (whole files, whatever the --limit-* options)
    held_out = set()
    for name in ("dev", "test"):
        path = os.path.join(args.data_dir, f"{name}.json")
        if name in splits or os.path.exists(path):
            held_out.update(t for t, _ in load_split(path))
    command = "KERAS_BACKEND=%s python %s" % (keras.backend.backend(), " ".join(
        shlex.quote(a) for a in ["examples/fewshot_sentiment.py"] +
        list(sys.argv[1:] if argv is None else argv)))
    records, shot_sets = [], {}
    if not args.no_zeroshot:
        rec = run_method("pet-zeroshot", args, tokenizer, [], splits, seeds[0], None)
        rec["seed"] = None
        records.append(rec)
        print(f"pet-zeroshot: test {rec['test_accuracy']:.4f} ({rec['seconds']:.1f} s)",
              flush=True)
    for seed in seeds:
        idx = sample_shots(train, args.shots, seed, exclude=held_out)
        shot_sets[str(seed)] = idx
        shots = [train[i] for i in idx]
        for method in methods:
            rec = run_method(method, args, tokenizer, shots, splits, seed, rates[method])
            rec["shot_indices"] = idx
            records.append(rec)
            dev = rec.get("dev_accuracy")
            print(f"seed {seed} {method}: test {rec['test_accuracy']:.4f}"
                  f" (positive rate {rec['test_positive_rate']:.2f})"
                  f" shots {rec['shots_accuracy']:.4f}"
                  + (f" dev {dev:.4f}" if dev is not None else "")
                  + f" loss {rec['first_loss']:.3f} -> {rec['final_loss']:.3f}"
                  + f" ({rec['seconds']:.1f} s)", flush=True)
    table = summarize(records, methods)
    print()
    print(table)
    print()
    print("command: " + command)
    result = {"command": command, "backend": keras.backend.backend(), "args": vars(args),
              "learning_rates": rates, "shots": shot_sets, "records": records,
              "table": table}
    if args.output:
        write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
