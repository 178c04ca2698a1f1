"""Shared machinery of the CLUE 1.1 baselines (``examples/clue/run.py``).

A task is a small description (see ``clue_tasks.py``): how to read its files into
examples, how to turn an example into model features, which head to put on the
encoder, how to score dev predictions and how to write the CLUE submission file.
Everything else lives here, written once:

* file lookup and record validation (every problem names ``file:line``);
* batching with bucketed lengths (few distinct shapes, so few compilations);
* the four task kinds: :class:`ClassificationTask` (sentence / pair classification,
  ``[CLS]`` pooling), :class:`NERTask` (GlobalPointer, EfficientGlobalPointer or CRF),
  :class:`SpanMRCTask` (extractive reading comprehension over sliding windows) and
  :class:`MultipleChoiceTask` (one score per choice, softmax over choices);
* training with ``model.fit``, a callback that keeps the best dev weights, and the
  CLUE metrics (accuracy, entity F1, CMRC 2018 EM / F1).
"""
import json
import math
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
from keras import ops  # noqa: E402

from common import DataError, progress, read_json, write_json, write_json_lines  # noqa: E402

from bert4keras3.layers import (  # noqa: E402
    ConditionalRandomField,
    EfficientGlobalPointer,
    FirstToken,
    GlobalPointer,
)
from bert4keras3.losses import (  # noqa: E402
    global_pointer_crossentropy,
    global_pointer_decode,
    precision_recall_f1,
)
from bert4keras3.optimizers import AdaFactor  # noqa: E402
from bert4keras3.snippets import DataGenerator, sequence_padding  # noqa: E402

#: characters the task readers insert into texts (WSC span markers, the CSL keyword
#: separator, the C3 turn separator and padding choice); a vocabulary should hold them
INSERTED_TEXT = "_[]；||无效答案"

#: sequence lengths are padded up to one of these (or to the task's maxlen)
LENGTH_BUCKETS = (32, 64, 128, 256, 384, 512)


# --------------------------------------------------------------------------- files
def find_file(data_dir, names, task):
    """The first of ``names`` present in ``data_dir``; else an error listing what was expected."""
    for name in names:
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    present = sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else None
    where = f"it holds {present}" if present is not None else "it is not a directory"
    raise FileNotFoundError(
        f"{task}: expected {' or '.join(names)} in --data-dir {data_dir!r}; {where}"
    )


def json_path_line(path, keys):
    """Line (1-based) where the element ``keys`` (list indices / dict keys) of a JSON file
    starts, or ``None`` if it cannot be located. Only used to word error messages."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    decoder = json.JSONDecoder()
    space = re.compile(r"[ \t\n\r]*")
    i = space.match(text, 0).end()
    try:
        for key in keys:
            if isinstance(key, int):
                if text[i] != "[":
                    return None
                i = space.match(text, i + 1).end()
                for _ in range(key):
                    _, i = decoder.raw_decode(text, i)
                    i = space.match(text, i).end()
                    if text[i] != ",":
                        return None
                    i = space.match(text, i + 1).end()
            else:
                if text[i] != "{":
                    return None
                i = space.match(text, i + 1).end()
                while True:
                    name, i = decoder.raw_decode(text, i)
                    i = space.match(text, i).end()
                    if text[i] != ":":
                        return None
                    i = space.match(text, i + 1).end()
                    if name == key:
                        break
                    _, i = decoder.raw_decode(text, i)
                    i = space.match(text, i).end()
                    if text[i] != ",":
                        return None
                    i = space.match(text, i + 1).end()
    except (ValueError, IndexError):
        return None
    return text.count("\n", 0, i) + 1


def format_keys(keys):
    """``["data", 0, "qas", 2]`` -> ``data[0].qas[2]``."""
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out or "top level"


class Where:
    """Location of a record for error messages: ``file:line`` (+ a JSON path)."""

    def __init__(self, path, line=None, keys=None):
        self.path, self.line, self.keys = path, line, keys

    def __str__(self):
        line = self.line
        if line is None and self.keys is not None:
            line = json_path_line(self.path, self.keys)
        head = f"{self.path}:{line}" if line is not None else str(self.path)
        return f"{head} ({format_keys(self.keys)})" if self.keys else head

    def error(self, message):
        return DataError(f"{self}: {message}")


def require(record, where, *fields, kind=None):
    """Return ``record[field]`` for each field; a missing one raises a DataError naming ``where``."""
    if not isinstance(record, dict):
        raise where.error(f"expected a JSON object, found {type(record).__name__}")
    missing = [f for f in fields if f not in record]
    if missing:
        raise where.error(f"missing field(s) {missing}; found {sorted(record)}")
    values = [record[f] for f in fields]
    if kind is not None:
        for f, v in zip(fields, values):
            if not isinstance(v, kind):
                name = getattr(kind, "__name__", str(kind))
                raise where.error(f"field {f!r} must be a {name}, found {v!r}")
    return values[0] if len(values) == 1 else values


# --------------------------------------------------------------------------- batching
def json_records(path):
    """Yield ``(where, record)`` for every non-blank line of a JSON-lines file; a line that
    is not JSON raises :class:`DataError` naming ``file:line``."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = Where(path, number)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise where.error(f"invalid JSON ({e.msg})") from None
            yield where, record


def bucket(length, cap):
    """Pad ``length`` up to a bucket (not beyond ``cap`` unless ``length`` is longer)."""
    for b in LENGTH_BUCKETS:
        if b >= length:
            return max(length, min(b, cap))
    return length


def int_array(ids):
    """Token ids as a compact int32 array (features of a large training set stay small)."""
    return np.asarray(ids, dtype="int32")


def pad_ids(seqs, cap, extra_dims=0):
    """Pad token-id lists to a bucketed length; ``extra_dims`` > 0 for nested lists."""
    if extra_dims:
        longest = max(len(s) for group in seqs for s in group)
        n = bucket(longest, cap)
        return np.stack([sequence_padding(group, length=n) for group in seqs]).astype("int32")
    n = bucket(max(len(s) for s in seqs), cap)
    return sequence_padding(seqs, length=n).astype("int32")


class Batches(DataGenerator):
    """Training batches of encoded features, collated by ``collate(list) -> (x, y)``.

    The last batch of an epoch is topped up with random features so that every batch
    has the same size (one compiled train step per length bucket).
    """

    def __init__(self, features, batch_size, collate):
        super().__init__(features, batch_size)
        self.collate = collate

    def __iter__(self, random=False):
        batch = []
        for is_end, feature in self.sample(random):
            batch.append(feature)
            if len(batch) == self.batch_size or is_end:
                short = self.batch_size - len(batch)
                if short > 0:
                    extra = np.random.randint(len(self.data), size=short)
                    batch += [self.data[i] for i in extra]
                yield self.collate(batch)
                batch = []


def run_model(model, features, collate, reduce, batch_size, desc=None):
    """Predict every feature (sorted by length, constant batch size) and reduce the
    outputs: ``reduce(batch_outputs, batch_features) -> one result per feature``."""
    order = sorted(range(len(features)), key=lambda i: features[i]["length"])
    results = [None] * len(features)
    starts = range(0, len(order), batch_size)
    for start in progress(starts, desc=desc) if desc else starts:
        index = order[start:start + batch_size]
        batch = [features[i] for i in index]
        x, _ = collate(batch + [batch[0]] * (batch_size - len(batch)))
        out = model.predict_on_batch(x)
        out = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)[:len(batch)]
        for i, result in zip(index, reduce(out, batch)):
            results[i] = result
    return results


# --------------------------------------------------------------------------- optimizer
def make_optimizer(name, learning_rate, grad_accum=1):
    """``adafactor`` (bert4keras' CLUE default) or ``adamw`` (weight decay 0.01, no
    decay on norms and biases)."""
    accum = grad_accum if grad_accum and grad_accum > 1 else None
    if name == "adafactor":
        # bojone's CLUE setting: a first moment, and no matrix of BERT factored
        return AdaFactor(learning_rate=learning_rate, beta1=0.9, min_dim_size_to_factor=10**6,
                         gradient_accumulation_steps=accum)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=0.01,
                                      gradient_accumulation_steps=accum)
    raise ValueError(f"unknown optimizer {name!r}; expected 'adafactor' or 'adamw'")


# --------------------------------------------------------------------------- small layers
@keras.saving.register_keras_serializable(package="clue")
class MergeChoices(keras.layers.Layer):
    """``[batch, choices, seq] -> [batch * choices, seq]``."""

    def call(self, inputs):
        return ops.reshape(inputs, (-1, ops.shape(inputs)[-1]))

    def compute_output_shape(self, input_shape):
        batch = None if input_shape[0] is None or input_shape[1] is None else (
            input_shape[0] * input_shape[1])
        return (batch, input_shape[-1])


@keras.saving.register_keras_serializable(package="clue")
class SplitChoices(keras.layers.Layer):
    """``[batch * choices, 1] -> [batch, choices]``."""

    def __init__(self, choices, **kwargs):
        super().__init__(**kwargs)
        self.choices = choices

    def call(self, inputs):
        return ops.reshape(inputs, (-1, self.choices))

    def compute_output_shape(self, input_shape):
        return (None, self.choices)

    def get_config(self):
        return {**super().get_config(), "choices": self.choices}


@keras.saving.register_keras_serializable(package="clue")
class FirstHead(keras.layers.Layer):
    """``[batch, heads, n, n] -> [batch, n, n]`` (the only head of a one-type pointer)."""

    def call(self, inputs):
        return inputs[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])


def flat_span_crossentropy(y_true, y_pred):
    """Softmax cross-entropy over all ``n * n`` spans; ``y_true`` = ``[batch, 2]`` (start, end)."""
    n = ops.shape(y_pred)[-1]
    y_true = ops.cast(ops.reshape(y_true, (-1, 2)), "int32")
    target = y_true[:, 0] * n + y_true[:, 1]
    logits = ops.reshape(ops.cast(y_pred, "float32"), (ops.shape(y_pred)[0], -1))
    return keras.losses.sparse_categorical_crossentropy(target, logits, from_logits=True)


# --------------------------------------------------------------------------- tasks
class Task:
    """Base of the task kinds. Subclasses set the class attributes and implement
    ``load`` (file -> examples), ``encode`` (example -> features), ``collate`` (features
    -> model inputs and labels), ``build`` (encoder -> task model, loss), ``reduce``
    (model outputs -> one result per feature), ``combine`` (results -> one prediction per
    example), ``score`` (dev metric) and ``write`` (the submission file)."""

    name = None
    metric = "accuracy"
    #: candidate file names per split (the first present is used)
    files = {"train": ("train.json",), "dev": ("dev.json",), "test": ("test.json",)}
    #: hyper-parameters of bojone's CLUE-bert4keras baselines
    maxlen = 128
    batch_size = 32
    epochs = 10
    learning_rate = 5e-4
    grad_accum = 1
    #: output file name the CLUE site expects (README); this script writes <task>_predict.json
    submission_name = None

    def __init__(self, **options):
        for key, value in options.items():
            setattr(self, key, value)
        self.tokenizer = None
        self.with_segments = True

    # -- data ---------------------------------------------------------------
    def path(self, data_dir, split):
        """The file of ``split``; ``"labeled_test"`` is the test file read with its labels
        (data sets whose test file carries them, e.g. ``scripts/get_data.sh``'s)."""
        return find_file(data_dir, self.files["test" if split == "labeled_test" else split],
                         self.name)

    def load(self, data_dir, split, limit=None):
        """Examples of a split (dicts; test examples carry ``id``); at most ``limit``."""
        raise NotImplementedError

    def setup(self, tokenizer, encoder, args):
        """Bind the tokenizer and encoder inputs; apply command-line overrides."""
        self.tokenizer = tokenizer
        self.with_segments = len(encoder.inputs) > 1
        if args.maxlen:
            self.maxlen = args.maxlen

    def inputs(self, token_ids, segment_ids):
        """Model inputs as a tuple (tf.data wants tuples, not lists)."""
        return (token_ids, segment_ids) if self.with_segments else (token_ids,)

    def features(self, examples, training, desc=None):
        """Encode examples; each feature records the index of its example."""
        out = []
        items = progress(examples, desc=desc) if desc and len(examples) > 1000 else examples
        for index, example in enumerate(items):
            for feature in self.encode(example, training):
                feature["example"] = index
                out.append(feature)
        return out

    # -- model --------------------------------------------------------------
    def build(self, encoder):
        """The task model on top of ``encoder``: ``(model, loss, metrics)``."""
        raise NotImplementedError

    # -- prediction ---------------------------------------------------------
    def predict(self, model, examples, batch_size, desc=None):
        feats = self.features(examples, training=False)
        results = run_model(model, feats, self.collate, self.reduce, batch_size, desc)
        return self.combine(examples, feats, results)

    def combine(self, examples, features, results):
        """Per-example predictions from per-feature results (one feature each by default)."""
        return results

    def score(self, examples, predictions):
        """``{"score": ..., ...}`` on labelled examples."""
        right = sum(p == e["label"] for e, p in zip(examples, predictions))
        return {"score": right / max(len(examples), 1)}


def _first_token_logits(hidden, units, initializer, name):
    x = FirstToken(name=f"{name}-CLS")(hidden)
    return keras.layers.Dense(units, kernel_initializer=initializer, name=f"{name}-Dense")(x)


def _initializer():
    return keras.initializers.TruncatedNormal(stddev=0.02)


def read_label_file(data_dir, name):
    """The ``label`` values of ``data_dir/name`` (CLUE's ``labels.json`` lines), or None
    when ``name`` is None or the file is absent."""
    path = os.path.join(data_dir, name) if name else None
    if path is None or not os.path.exists(path):
        return None
    labels = [str(require(record, where, "label")) for where, record in json_records(path)]
    if not labels:
        raise DataError(f"{path}: no labels found")
    if len(set(labels)) != len(labels):
        raise DataError(f"{path}: repeated labels in {labels}")
    return tuple(labels)


class ClassificationTask(Task):
    """One text or a text pair -> ``[CLS]`` of the last layer -> Dense softmax.

    ``text(record, where)`` returns ``(text_a, text_b_or_None)``; labels are the strings
    of ``labels`` (``label_file`` overrides them when present); records whose label is in
    ``skip_labels`` are dropped (the ``-`` of the NLI sets), any other label outside the
    set is an error.
    """

    labels = ()
    label_file = None
    skip_labels = ()
    text_fields = ("sentence",)

    def text(self, record, where):
        values = require(record, where, *self.text_fields)
        values = [values] if len(self.text_fields) == 1 else values
        for field, value in zip(self.text_fields, values):
            if not isinstance(value, str):
                raise where.error(f"field {field!r} must be a string, found {value!r}")
        return (values[0], values[1] if len(values) > 1 else None)

    def read_labels(self, data_dir):
        labels = read_label_file(data_dir, self.label_file)
        if labels is not None:
            self.labels = labels

    def load(self, data_dir, split, limit=None):
        self.read_labels(data_dir)
        path = self.path(data_dir, split)
        index = {label: i for i, label in enumerate(self.labels)}
        examples = []
        for where, record in json_records(path):
            if limit is not None and len(examples) >= limit:
                break
            text_a, text_b = self.text(record, where)
            example = {"text_a": text_a, "text_b": text_b}
            if split == "test":
                example["id"] = require(record, where, "id")
            else:
                label = str(require(record, where, "label"))
                if label in self.skip_labels:
                    continue
                if label not in index:
                    raise where.error(
                        f"unknown label {label!r}; expected one of {list(self.labels)}")
                example["label"] = index[label]
            examples.append(example)
        return examples

    def encode(self, example, training):
        token_ids, segment_ids = self.tokenizer.encode(
            example["text_a"], example["text_b"], maxlen=self.maxlen)
        return [{"token_ids": int_array(token_ids), "segment_ids": int_array(segment_ids),
                 "label": example.get("label", 0), "length": len(token_ids)}]

    def collate(self, batch):
        x = self.inputs(pad_ids([f["token_ids"] for f in batch], self.maxlen),
                        pad_ids([f["segment_ids"] for f in batch], self.maxlen))
        return x, np.array([f["label"] for f in batch], dtype="int32")

    def build(self, encoder):
        logits = _first_token_logits(encoder.output, len(self.labels), _initializer(),
                                     "Classifier")
        model = keras.Model(encoder.inputs, logits)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return model, loss, ["sparse_categorical_accuracy"]

    def reduce(self, outputs, batch):
        return [int(i) for i in outputs.argmax(-1)]

    def write(self, path, examples, predictions):
        write_json_lines(path, [{"id": e["id"], "label": self.labels[p]}
                                for e, p in zip(examples, predictions)])


class NERTask(Task):
    """Entity recognition (CLUENER): records ``{"text", "label": {type: {entity: [[s, e]]}}}``
    with inclusive character offsets. ``head``: ``global_pointer`` (default, bojone's),
    ``efficient_global_pointer`` or ``crf`` (BIO tags + Viterbi). A ``labels.json`` in the
    data directory (``{"label": type}`` lines) replaces ``types`` (e.g. MSRA's PER/LOC/ORG)."""

    metric = "f1"
    types = ()
    label_file = "labels.json"
    head = "global_pointer"
    head_size = 64
    crf_lr_multiplier = 1000

    def load(self, data_dir, split, limit=None):
        types = read_label_file(data_dir, self.label_file)
        if types is not None:
            self.types = types
        path = self.path(data_dir, split)
        examples = []
        for where, record in json_records(path):
            if limit is not None and len(examples) >= limit:
                break
            text = require(record, where, "text", kind=str)
            example = {"text": text}
            if split == "test":
                example["id"] = require(record, where, "id")
            else:
                example["spans"] = self.read_spans(record, text, where)
            examples.append(example)
        return examples

    def read_spans(self, record, text, where):
        labels = require(record, where, "label")
        if not isinstance(labels, dict):
            raise where.error(f"'label' must be an object {{type: {{entity: [[start, end]]}}}}, "
                              f"found {labels!r}")
        spans = set()
        for kind, entities in labels.items():
            if kind not in self.types:
                raise where.error(f"unknown label {kind!r}; expected one of {list(self.types)}")
            if not isinstance(entities, dict):
                raise where.error(f"label {kind!r} must map entity -> [[start, end], ...]")
            for entity, offsets in entities.items():
                if not isinstance(offsets, list):
                    raise where.error(f"{kind}/{entity}: expected a list of [start, end]")
                for pair in offsets:
                    if (not isinstance(pair, list) or len(pair) != 2
                            or not all(isinstance(v, int) for v in pair)):
                        raise where.error(f"{kind}/{entity}: expected [start, end], found {pair!r}")
                    start, end = pair
                    if not 0 <= start <= end < len(text) or text[start:end + 1] != entity:
                        raise where.error(
                            f"{kind}/{entity}: span [{start}, {end}] does not hold the entity "
                            f"(text[{start}:{end + 1}] = {text[start:end + 1]!r})")
                    spans.add((kind, start, end))
        return spans

    def encode(self, example, training):
        text = example["text"]
        tokens = self.tokenizer.tokenize(text, maxlen=self.maxlen)
        mapping = self.tokenizer.rematch(text, tokens)
        feature = {"token_ids": int_array(self.tokenizer.tokens_to_ids(tokens)),
                   "mapping": mapping,
                   "length": len(tokens), "spans": []}
        if "spans" in example:
            starts = {m[0]: i for i, m in enumerate(mapping) if m}
            ends = {m[-1]: i for i, m in enumerate(mapping) if m}
            feature["spans"] = [(starts[s], ends[e], self.types.index(k))
                                for k, s, e in sorted(example["spans"])
                                if s in starts and e in ends]
        return [feature]

    def collate(self, batch):
        token_ids = pad_ids([f["token_ids"] for f in batch], self.maxlen)
        x = self.inputs(token_ids, np.zeros_like(token_ids))
        n = token_ids.shape[1]
        if self.head == "crf":
            y = np.zeros((len(batch), n), dtype="int32")
            for row, f in enumerate(batch):
                for start, end, t in f["spans"]:
                    y[row, start] = 1 + 2 * t
                    y[row, start + 1:end + 1] = 2 + 2 * t
        else:
            y = np.zeros((len(batch), len(self.types), n, n), dtype="float32")
            for row, f in enumerate(batch):
                for start, end, t in f["spans"]:
                    y[row, t, start, end] = 1
        return x, y

    def build(self, encoder):
        hidden = encoder.output
        if self.head in ("global_pointer", "efficient_global_pointer"):
            layer = GlobalPointer if self.head == "global_pointer" else EfficientGlobalPointer
            logits = layer(heads=len(self.types), head_size=self.head_size, use_bias=False,
                           kernel_initializer=_initializer(), name="GlobalPointer")(hidden)
            return keras.Model(encoder.inputs, logits), global_pointer_crossentropy, []
        if self.head == "crf":
            emissions = keras.layers.Dense(1 + 2 * len(self.types),
                                           kernel_initializer=_initializer(),
                                           name="CRF-Emissions")(hidden)
            self.crf = ConditionalRandomField(lr_multiplier=self.crf_lr_multiplier, name="CRF")
            output = self.crf(emissions)
            return keras.Model(encoder.inputs, output), self.crf.sparse_loss, []
        raise ValueError(f"unknown head {self.head!r}; expected global_pointer, "
                         "efficient_global_pointer or crf")

    def reduce(self, outputs, batch):
        results = []
        if self.head == "crf":
            tags = np.asarray(ops.convert_to_numpy(self.crf.decode(outputs)))
            for row, f in zip(tags, batch):
                results.append(self._bio_spans(row, f["mapping"]))
            return results
        for scores, f in zip(outputs, batch):
            found = global_pointer_decode(scores, 0.0, f["mapping"])
            results.append({(self.types[t], s, e - 1) for s, e, t in found})
        return results

    def _bio_spans(self, tags, mapping):
        spans, i = set(), 0
        while i < len(mapping):
            tag = int(tags[i])
            if tag and tag % 2 == 1 and mapping[i]:
                t, j = (tag - 1) // 2, i
                while j + 1 < len(mapping) and int(tags[j + 1]) == 2 + 2 * t and mapping[j + 1]:
                    j += 1
                spans.add((self.types[t], mapping[i][0], mapping[j][-1]))
                i = j + 1
            else:
                i += 1
        return spans

    def score(self, examples, predictions):
        p, r, f1 = precision_recall_f1([e["spans"] for e in examples], predictions)
        return {"score": f1, "precision": p, "recall": r}

    def write(self, path, examples, predictions):
        rows = []
        for example, spans in zip(examples, predictions):
            label = {}
            for kind, start, end in sorted(spans, key=lambda s: (s[1], s[2], s[0])):
                entity = example["text"][start:end + 1]
                label.setdefault(kind, {}).setdefault(entity, []).append([start, end])
            rows.append({"id": example["id"], "label": label})
        write_json_lines(path, rows)


# --------------------------------------------------------------------------- CMRC 2018 metric
#: punctuation removed by CLUE's CMRC 2018 evaluation before comparing answers
CMRC_PUNCTUATION = frozenset(
    "-:_*^/\\~`+=，。：？！“”；’《》·、「」（）－～『』"
) | {"……"}
_CJK = re.compile(r"[\u4e00-\u9fa5]")
_WORD = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*|\S")


def cmrc_segments(text, remove_punctuation=True):
    """Split into Chinese characters and non-Chinese words (lower-cased), as CLUE's
    CMRC 2018 script does. Runs of non-Chinese characters are split into words and
    punctuation by a regular expression (the script uses ``nltk.word_tokenize``; the
    two agree on numbers such as ``78.1`` and on plain words)."""
    out, run = [], ""
    for ch in str(text).lower().strip():
        if remove_punctuation and ch in CMRC_PUNCTUATION:
            continue
        if _CJK.match(ch) or ch in CMRC_PUNCTUATION:
            if run:
                out.extend(_WORD.findall(run))
                run = ""
            out.append(ch)
        else:
            run += ch
    if run:
        out.extend(_WORD.findall(run))
    return out


def _longest_common_run(a, b):
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                cur[j + 1] = prev[j] + 1
                best = max(best, cur[j + 1])
        prev = cur
    return best


def cmrc_f1(answers, prediction):
    """Max over gold answers of the F1 of the longest common run of segments."""
    pred = cmrc_segments(prediction)
    best = 0.0
    for answer in answers:
        gold = cmrc_segments(answer)
        common = _longest_common_run(gold, pred)
        if common:
            p, r = common / len(pred), common / len(gold)
            best = max(best, 2 * p * r / (p + r))
    return best


def cmrc_em(answers, prediction):
    """1.0 when the prediction equals a gold answer once punctuation is removed."""
    def clean(s):
        return "".join(ch for ch in str(s).lower().strip() if ch not in CMRC_PUNCTUATION)

    pred = clean(prediction)
    return float(any(clean(a) == pred for a in answers))


class SpanMRCTask(Task):
    """Extractive reading comprehension (CMRC 2018, SQuAD layout).

    The context is tokenized once and cut into windows of ``maxlen - len(question) - 3``
    tokens every ``stride`` tokens; each window is ``[CLS] question [SEP] window [SEP]``.
    A one-type GlobalPointer scores every (start, end) pair of window tokens (the
    question and the final ``[SEP]`` are masked out) and is trained with a softmax over
    all pairs; ``(0, 0)`` (the ``[CLS]`` pair) means "the answer is not in this window".
    A question's answer is the best-scoring span over its windows, cut from the
    original context.
    """

    metric = "em"
    maxlen = 512
    batch_size = 16
    grad_accum = 2
    stride = 128
    max_question_tokens = 64
    head_size = 64

    def load(self, data_dir, split, limit=None):
        path = self.path(data_dir, split)
        data = read_json(path, dict)
        articles = data.get("data")
        if not isinstance(articles, list):
            raise DataError(f"{path}: expected a SQuAD-style object with a 'data' list, "
                            f"found keys {sorted(data)}")
        examples = []
        for a, article in enumerate(articles):
            paragraphs = require(article, Where(path, keys=["data", a]), "paragraphs", kind=list)
            for p, paragraph in enumerate(paragraphs):
                keys = ["data", a, "paragraphs", p]
                context, qas = require(paragraph, Where(path, keys=keys), "context", "qas")
                if not isinstance(context, str) or not isinstance(qas, list):
                    raise Where(path, keys=keys).error("'context' must be a string and 'qas' a list")
                for q, qa in enumerate(qas):
                    if limit is not None and len(examples) >= limit:
                        return examples
                    where = Where(path, keys=keys + ["qas", q])
                    qid, question = require(qa, where, "id", "question")
                    answers = qa.get("answers") or []
                    if split != "test" and not answers:
                        raise where.error("missing field(s) ['answers'] (non-empty list)")
                    gold = []
                    for k, answer in enumerate(answers if split != "test" else []):
                        text = require(answer, Where(path, keys=where.keys + ["answers", k]),
                                       "text", kind=str)
                        gold.append((text, answer.get("answer_start", -1)))
                    examples.append({"id": qid, "question": str(question), "context": context,
                                     "answers": gold})
        return examples

    def setup(self, tokenizer, encoder, args):
        super().setup(tokenizer, encoder, args)
        self._contexts = {}

    def _context(self, context):
        """Tokens (without [CLS]/[SEP]) and char spans of a context, cached."""
        if context not in self._contexts:
            tokens = self.tokenizer.tokenize(context)
            mapping = self.tokenizer.rematch(context, tokens)[1:-1]
            self._contexts[context] = (self.tokenizer.tokens_to_ids(tokens[1:-1]), mapping)
        return self._contexts[context]

    @staticmethod
    def _locate(context, text, start):
        """Character start of answer ``text``: ``start`` when it matches, else the
        occurrence nearest to it; ``None`` when the text is not in the context."""
        if text and 0 <= start and context[start:start + len(text)] == text:
            return start
        found = [m.start() for m in re.finditer(re.escape(text), context)] if text else []
        return min(found, key=lambda s: abs(s - start)) if found else None

    def encode(self, example, training):
        tok = self.tokenizer
        q_ids = tok.encode(example["question"])[0][1:-1][:self.max_question_tokens]
        c_ids, mapping = self._context(example["context"])
        offset = len(q_ids) + 2
        window = self.maxlen - offset - 1
        if window < 1:
            raise ValueError(f"--maxlen {self.maxlen} leaves no room for the context")
        step = max(1, min(self.stride, window // 2))
        span = None
        if training and example["answers"]:
            text, start = example["answers"][0]
            start = self._locate(example["context"], text, start)
            if start is None:
                return []  # the answer is not in the context: nothing to learn from
            inside = [i for i, m in enumerate(mapping) if m and start <= m[0] < start + len(text)]
            if not inside:
                return []
            span = (inside[0], inside[-1])
        features, begin = [], 0
        while True:
            end = min(begin + window, len(c_ids))
            token_ids = [tok._token_start_id] + q_ids + [tok._token_end_id] + c_ids[begin:end] \
                + [tok._token_end_id]
            label = (0, 0)
            if span is not None and begin <= span[0] and span[1] < end:
                label = (span[0] - begin + offset, span[1] - begin + offset)
            features.append({
                "token_ids": int_array(token_ids),
                "segment_ids": int_array([0] * offset + [1] * (end - begin + 1)),
                "context_mask": int_array([1] + [0] * (offset - 1) + [1] * (end - begin) + [0]),
                "label": label, "begin": begin, "offset": offset, "length": len(token_ids),
            })
            if end >= len(c_ids):
                return features
            begin += step

    def collate(self, batch):
        cap = self.maxlen
        token_ids = pad_ids([f["token_ids"] for f in batch], cap)
        segment_ids = pad_ids([f["segment_ids"] for f in batch], cap)
        mask = pad_ids([f["context_mask"] for f in batch], cap)
        x = self.inputs(token_ids, segment_ids) + (mask,)
        return x, np.array([f["label"] for f in batch], dtype="int32")

    def build(self, encoder):
        mask = keras.Input((None,), dtype="int32", name="Input-Context-Mask")
        scores = GlobalPointer(heads=1, head_size=self.head_size, use_bias=False,
                               kernel_initializer=_initializer(), name="GlobalPointer")(
            encoder.output, mask=mask)
        scores = FirstHead(name="Span-Scores")(scores)
        return keras.Model(encoder.inputs + [mask], scores), flat_span_crossentropy, []

    def reduce(self, outputs, batch):
        results = []
        for scores, f in zip(outputs, batch):
            scores = np.array(scores[:f["length"], :f["length"]], dtype="float64")
            scores[0, :] = -np.inf
            scores[:, 0] = -np.inf
            flat = int(scores.argmax())
            start, end = divmod(flat, scores.shape[1])
            results.append((float(scores[start, end]), start - f["offset"] + f["begin"],
                            end - f["offset"] + f["begin"]))
        return results

    def combine(self, examples, features, results):
        best = {}
        for f, r in zip(features, results):
            if f["example"] not in best or r[0] > best[f["example"]][0]:
                best[f["example"]] = r
        predictions = []
        for index, example in enumerate(examples):
            _, start, end = best[index]
            mapping = self._context(example["context"])[1]
            chars = [c for m in mapping[start:end + 1] for c in m]
            predictions.append(example["context"][chars[0]:chars[-1] + 1] if chars else "")
        return predictions

    def score(self, examples, predictions):
        em = [cmrc_em([a for a, _ in e["answers"]], p) for e, p in zip(examples, predictions)]
        f1 = [cmrc_f1([a for a, _ in e["answers"]], p) for e, p in zip(examples, predictions)]
        n = max(len(examples), 1)
        return {"score": sum(em) / n, "em": sum(em) / n, "f1": sum(f1) / n}

    def write(self, path, examples, predictions):
        write_json(path, {e["id"]: p for e, p in zip(examples, predictions)})


def assignment(scores):
    """Rows -> distinct columns maximising the total score (Hungarian algorithm).

    ``scores``: ``[rows, cols]`` with ``rows <= cols``. Returns the column of each row.
    """
    cost = -np.asarray(scores, dtype="float64")
    n, m = cost.shape
    if n > m:
        raise ValueError(f"assignment needs rows <= columns, found {cost.shape}")
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=int)  # owner[j]: row (1-based) holding column j; 0 = free
    way = np.zeros(m + 1, dtype=int)
    for row in range(1, n + 1):
        owner[0], j0 = row, 0
        best = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while owner[j0]:
            used[j0] = True
            i0, delta, j1 = owner[j0], np.inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    reduced = cost[i0 - 1, j - 1] - u[i0] - v[j]
                    if reduced < best[j]:
                        best[j], way[j] = reduced, j0
                    if best[j] < delta:
                        delta, j1 = best[j], j
            for j in range(m + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    best[j] -= delta
            j0 = j1
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    result = np.zeros(n, dtype=int)
    for j in range(1, m + 1):
        if owner[j]:
            result[owner[j] - 1] = j - 1
    return result


class MultipleChoiceTask(Task):
    """Multiple choice: each example is ``choices`` sequences; each sequence's ``[CLS]``
    gets one score (Dense(1)) and a softmax over the choices is trained. Subclasses
    provide ``load``, ``sequences(example) -> [(token_ids, segment_ids)] * choices`` and
    ``size(example)`` (a length estimate used to order prediction batches).

    Sequences are built when a batch is collated (``choices`` sequences per example
    would not fit in memory for ChID's half million blanks).
    """

    choices = 4

    def size(self, example):
        return 0

    def encode(self, example, training):
        return [{"source": example, "label": example.get("label", 0),
                 "length": self.size(example)}]

    def collate(self, batch):
        seqs = [self.sequences(f["source"]) for f in batch]
        token_ids = pad_ids([[s[0] for s in group] for group in seqs], self.maxlen, 1)
        segment_ids = pad_ids([[s[1] for s in group] for group in seqs], self.maxlen, 1)
        return (self.inputs(token_ids, segment_ids),
                np.array([f["label"] for f in batch], dtype="int32"))

    def build(self, encoder):
        inputs = [keras.Input((self.choices, None), dtype="int32", name=f"Choices-{i}")
                  for i in range(len(encoder.inputs))]
        merged = [MergeChoices(name=f"Merge-Choices-{i}")(x) for i, x in enumerate(inputs)]
        hidden = encoder(merged if len(merged) > 1 else merged[0])
        logits = _first_token_logits(hidden, 1, _initializer(), "Choice")
        logits = SplitChoices(self.choices, name="Split-Choices")(logits)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        return keras.Model(inputs, logits), loss, ["sparse_categorical_accuracy"]

    def reduce(self, outputs, batch):
        return list(np.asarray(outputs, dtype="float64"))

    def combine(self, examples, features, results):
        # padding choices (an example's "real_choices" onwards) are never predicted
        return [int(np.argmax(r[:e.get("real_choices", len(r))]))
                for e, r in zip(examples, results)]


# --------------------------------------------------------------------------- training
class BestOnDev(keras.callbacks.Callback):
    """Score the dev set after every epoch and keep (in memory) the best weights."""

    def __init__(self, task, examples, batch_size):
        super().__init__()
        self.task, self.examples, self.batch_size = task, examples, batch_size
        self.best, self.best_epoch, self.weights, self.history = None, None, None, []

    def evaluate(self):
        predictions = self.task.predict(self.model, self.examples, self.batch_size,
                                        desc="dev" if len(self.examples) > 1000 else None)
        return self.task.score(self.examples, predictions)

    def on_epoch_end(self, epoch, logs=None):
        result = self.evaluate()
        self.history.append(result["score"])
        if self.best is None or result["score"] > self.best["score"]:
            self.best, self.best_epoch = result, epoch + 1
            self.weights = self.model.get_weights()
        print(f"epoch {epoch + 1}: dev {self.task.metric} {result['score']:.5f}, "
              f"best {self.best['score']:.5f} (epoch {self.best_epoch})", flush=True)


class StepLimit(keras.callbacks.Callback):
    """Stop training after ``limit`` batches in total."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.seen = limit, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.limit:
            self.model.stop_training = True


def train_and_predict(task, encoder, data, args, started=None):
    """Train ``task`` on ``data["train"]``, keep the best dev weights, predict the test
    set and write ``<task>_predict.json`` and ``<task>_dev.json``. Returns the dev record.

    ``started``: ``time.time()`` at the start of the run (for the ``seconds`` field).
    """
    started = time.time() if started is None else started
    model, loss, metrics = task.build(encoder)
    batch_size = args.batch_size or task.batch_size
    epochs = task.epochs if args.epochs is None else args.epochs
    accum = args.grad_accum or task.grad_accum
    lr = args.learning_rate or (task.learning_rate if args.optimizer == "adafactor" else 2e-5)
    model.compile(optimizer=make_optimizer(args.optimizer, lr, accum), loss=loss,
                  metrics=metrics)
    os.makedirs(args.output_dir, exist_ok=True)
    weights = os.path.join(args.output_dir, f"{task.name}.weights.h5")

    train = task.features(data["train"], training=True, desc="encoding train")
    if not train:
        raise DataError(f"{task.name}: no training examples left after reading the train file")
    batches = Batches(train, batch_size, task.collate)
    total = epochs * len(batches)
    if args.max_steps is not None:
        total = min(total, args.max_steps * accum)
    best = BestOnDev(task, data["dev"], batch_size)
    if total > 0:
        model.fit(batches.to_pydataset(random=True), epochs=math.ceil(total / len(batches)),
                  callbacks=[StepLimit(total), best], verbose=1 if sys.stdout.isatty() else 2)
    steps = int(ops.convert_to_numpy(model.optimizer.iterations))
    if best.best is None:  # no training: score the initial weights
        best.model = model
        best.best, best.best_epoch = best.evaluate(), 0
    else:
        model.set_weights(best.weights)
    # the best weights alone (a model without an optimizer saves no optimizer slots)
    keras.Model(model.inputs, model.outputs).save_weights(weights)

    predictions = task.predict(model, data["test"], batch_size, desc="predicting test")
    predict_path = os.path.join(args.output_dir, f"{task.name}_predict.json")
    task.write(predict_path, data["test"], predictions)
    test_result = None
    if data.get("labeled_test") is not None:  # --score-test
        labeled = data["labeled_test"]
        test_result = task.score(labeled, task.predict(model, labeled, batch_size,
                                                       desc="scoring test"))
    record = {
        "task": task.name, "metric": task.metric, "score": best.best["score"],
        "examples": len(data["dev"]), "seconds": round(time.time() - started, 2),
        **{k: v for k, v in best.best.items() if k != "score"},
        "best_epoch": best.best_epoch, "dev_history": best.history,
        "steps": steps, "weights_file": weights,
        "train_examples": len(data["train"]),
        "test_examples": len(data["test"]), "model": args.model,
        "optimizer": args.optimizer, "learning_rate": lr, "batch_size": batch_size,
        "maxlen": task.maxlen, "predict_file": predict_path,
        "submission_name": task.submission_name or f"{task.name}_predict.json",
    }
    if test_result is not None:
        record["test"] = test_result
    write_json(os.path.join(args.output_dir, f"{task.name}_dev.json"), record)
    return record
