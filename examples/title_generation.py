#! -*- coding: utf-8 -*-
"""Title generation (content -> title) on Chinese news, UniLM or T5, scored with Rouge/BLEU.

The recipe of bert4keras' ``task_seq2seq_autotitle_csl.py`` (UniLM) and
``task_seq2seq_autotitle_csl_mt5.py`` (T5), rewritten for this package's CLI, data files and
compiled ``generate``:

* ``--arch unilm``: a BERT-family model (``--model-dir``, ``--model``) built with
  ``application="unilm"`` and its MLM head; one sequence ``[CLS] content [SEP] title [SEP]``,
  segment 0 for the content and 1 for the title; a ``CrossEntropy`` :class:`Loss` layer
  scores the next-token predictions of the segment-1 tokens only.
* ``--arch t5``: the encoder reads the content, the decoder the title (start id 0), cross
  entropy on the decoder's non-padding targets. Without ``--model-dir`` a small T5.1.1-shaped
  model (``--layers/--hidden/--heads/--ff``) is trained from scratch with a sentencepiece
  model trained here on the training contents and titles (``--vocab-size``, saved as
  ``OUT/spiece.model``). With ``--model-dir``: a directory holding a T5 config
  (``config.json`` / ``mt5_config.json``), a sentencepiece model (``spiece.model`` /
  ``sentencepiece.model``), a checkpoint (Hugging Face files, ``model.ckpt*`` or
  ``*.weights.h5``) and optionally ``keep_tokens.json``; ``--model`` then names the T5
  version (``t5.1.1`` unless it names one: ``t5``, ``t5.1.0``, ``mt5.1.1``).

Both are trained with ``model.fit`` (Adam) on batches of a fixed shape, then the test split is
decoded with the model's ``generate`` greedily and with beam search (``--beam-size``), at most
``--title-maxlen`` tokens (end token included). Scores follow bert4keras' evaluator: per
character (lower-cased, whitespace dropped) Rouge-1/2/L F1 and smoothed sentence BLEU, averaged
over every scored test example (an empty prediction scores 0).

Data: ``DIR/{train,dev,test}.json``, one ``{"title": ..., "content": ...}`` per line
(``data/inews_title``); examples with an empty title or content are skipped and counted. The
dev split only gives a teacher-forced loss after training (``--limit-dev``).

Writes ``OUT/title_generation.json``: the arguments, data counts, train seconds and loss, dev
loss, for ``greedy`` and ``beam`` the mean scores, decode seconds (after one untimed compiling
batch) and generated tokens per second, and a few example predictions. Example::

    KERAS_BACKEND=jax python examples/title_generation.py --arch unilm \\
        --data-dir data/inews_title --model-dir data/models/roformer-small --model roformer \\
        --steps 100 --limit-test 100 --output-dir outputs/title_unilm
    KERAS_BACKEND=jax python examples/title_generation.py --arch t5 \\
        --data-dir data/inews_title --steps 100 --limit-test 100 --output-dir outputs/title_t5
"""
import glob
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
from keras import ops  # noqa: E402

from bert4keras3.layers import Loss  # noqa: E402
from bert4keras3.optimizers import Adam  # noqa: E402
from examples.common import (  # noqa: E402
    DataError, base_parser, build_model, load_tokenizer, progress, read_json_lines, set_seed,
    write_json,
)
from examples.metrics import bleu, rouge_l, rouge_n  # noqa: E402

SPLITS = ("train", "dev", "test")
DEFAULT_LR = {"unilm": 1e-4, "t5": 1e-3}
METRICS = ("rouge-1", "rouge-2", "rouge-l", "bleu")
T5_VERSIONS = ("t5", "t5.1.0", "t5.1.1", "mt5.1.1")


# ----------------------------------------------------------------------------- data

def load_split(path, limit=None):
    """``([(title, content), ...], skipped)`` from a JSON-lines file.

    A line that is not a JSON object, lacks ``title``/``content`` or holds a non-string there
    raises :class:`DataError` naming ``path:line``; a pair with an empty (whitespace-only)
    side is skipped and counted. ``limit`` caps the kept pairs.
    """
    pairs, skipped = [], 0
    for number, obj in read_json_lines(path, fields=("title", "content")):
        for key in ("title", "content"):
            if not isinstance(obj[key], str):
                raise DataError(f"{path}:{number}: field {key!r} must be a string, found "
                                f"{type(obj[key]).__name__}")
        title, content = obj["title"].strip(), obj["content"].strip()
        if not title or not content:
            skipped += 1
            continue
        if limit is None or len(pairs) < limit:
            pairs.append((title, content))
    return pairs, skipped


def char_tokens(text):
    """bert4keras' evaluation tokens: the characters of the lower-cased text, spaces dropped."""
    return [c for c in text.lower() if not c.isspace()]


def score_titles(predictions, references):
    """Mean Rouge-1/2/L F1 and BLEU over the corpus, per character (bert4keras' evaluator).

    Every reference counts in the mean; an empty prediction scores 0 on every metric.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("no examples to score")
    totals = dict.fromkeys(METRICS, 0.0)
    for pred, ref in zip(predictions, references):
        hyp, gold = char_tokens(pred), char_tokens(ref)
        if not hyp:
            continue
        totals["rouge-1"] += rouge_n(hyp, gold, 1)
        totals["rouge-2"] += rouge_n(hyp, gold, 2)
        totals["rouge-l"] += rouge_l(hyp, gold)
        totals["bleu"] += bleu(hyp, [gold])
    return {k: v / len(references) for k, v in totals.items()}


def pad_rows(rows, width):
    """0-padded ``int32`` matrix ``[len(rows), width]`` (rows longer than ``width`` raise)."""
    out = np.zeros((len(rows), width), "int32")
    for r, ids in enumerate(rows):
        if len(ids) > width:
            raise ValueError(f"row {r} has {len(ids)} ids, more than the width {width}")
        out[r, :len(ids)] = ids
    return out


# ----------------------------------------------------------------------------- models

class UniLMCrossEntropy(Loss):
    """Next-token cross entropy on segment-1 (title) positions: inputs
    ``[token_ids, segment_ids, probs]``."""

    def compute_loss(self, inputs, mask=None):
        token_ids, segment_ids, probs = inputs
        y_true = token_ids[:, 1:]
        y_mask = ops.cast(segment_ids[:, 1:], probs.dtype)
        loss = keras.losses.sparse_categorical_crossentropy(y_true, probs[:, :-1])
        return ops.sum(loss * y_mask) / ops.maximum(ops.sum(y_mask), 1.0)


class DecoderCrossEntropy(Loss):
    """Next-token cross entropy on the decoder's non-padding targets: inputs
    ``[decoder_token_ids, probs]`` (the decoder input starts with the start id 0)."""

    def compute_loss(self, inputs, mask=None):
        token_ids, probs = inputs
        y_true = token_ids[:, 1:]
        y_mask = ops.cast(ops.not_equal(y_true, 0), probs.dtype)
        loss = keras.losses.sparse_categorical_crossentropy(y_true, probs[:, :-1])
        return ops.sum(loss * y_mask) / ops.maximum(ops.sum(y_mask), 1.0)


class UniLMTask:
    """UniLM title generation on a BERT-family model directory."""

    def __init__(self, args):
        self.args = args
        self.tokenizer = load_tokenizer(args.model_dir)
        self.obj = build_model(args.model_dir, model=args.model, application="unilm",
                               with_mlm=True, return_keras_model=False)
        self.end_id = self.tokenizer._token_end_id
        model = self.obj.model
        output = UniLMCrossEntropy(2)(list(model.inputs) + [model.outputs[0]])
        self.train_model = keras.Model(model.inputs, output)

    def encode_content(self, content):
        return self.tokenizer.encode(content, maxlen=self.args.maxlen)[0]

    def batch(self, pairs):
        """``[token_ids, segment_ids]`` of ``[CLS] content [SEP] title [SEP]`` rows."""
        width = self.args.maxlen + self.args.title_maxlen
        tokens, segments = [], []
        for title, content in pairs:
            c = self.encode_content(content)
            t = self.tokenizer.encode(title, maxlen=self.args.title_maxlen + 1)[0][1:]
            tokens.append(c + t)
            segments.append([0] * len(c) + [1] * len(t))
        return [pad_rows(tokens, width), pad_rows(segments, width)]

    def prompts(self, contents):
        x = pad_rows([self.encode_content(c) for c in contents], self.args.maxlen)
        return [x, np.zeros_like(x)]

    def decode(self, ids):
        return self.tokenizer.decode(ids)


def _first(directory, patterns):
    for pattern in patterns:
        found = sorted(glob.glob(os.path.join(directory, pattern)))
        if found:
            return found[0]
    return None


def train_sentencepiece(texts, prefix, vocab_size, max_sentences=50000, seed=42):
    """Train a unigram sentencepiece model with T5's special ids (pad 0, ``</s>`` 1, unk 2)
    on ``texts`` split into sentences (a seeded sample of at most ``max_sentences``: the
    trainer's time grows with it, ~50 s for 50,000 news sentences on 2 cores); returns the
    ``.model`` path."""
    import re

    import sentencepiece as spm

    spm.set_random_generator_seed(seed)

    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    sentences = [s for t in texts for s in re.split(r"(?<=[。！？；\n])", t) if s.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=prefix, vocab_size=vocab_size,
        model_type="unigram", character_coverage=0.9995, pad_id=0, eos_id=1, unk_id=2,
        bos_id=-1, hard_vocab_limit=False, max_sentence_length=16384,
        input_sentence_size=max_sentences, shuffle_input_sentence=True, minloglevel=2,
        num_threads=2)
    return prefix + ".model"


class T5Task:
    """T5 title generation: a model directory, or a small T5.1.1 trained from scratch."""

    def __init__(self, args, train_pairs):
        from bert4keras3.models import build_transformer_model
        from bert4keras3.tokenizers import SpTokenizer

        self.args = args
        version = args.model if args.model in T5_VERSIONS else "t5.1.1"
        if args.model_dir:
            d = args.model_dir
            config = _first(d, ("config.json", "mt5_config.json", "*config*.json"))
            spm_path = _first(d, ("spiece.model", "sentencepiece*.model", "*.model"))
            checkpoint = _first(d, ("*.weights.h5",))
            if checkpoint is None and _first(d, ("model.safetensors*", "pytorch_model.bin")):
                checkpoint = d
            if checkpoint is None:
                index = _first(d, ("model.ckpt*.index",))
                checkpoint = index[:-len(".index")] if index else None
            if config is None or spm_path is None:
                raise FileNotFoundError(
                    f"T5 model directory {d!r} needs a config (config.json / mt5_config.json) "
                    f"and a sentencepiece model (spiece.model); it holds {sorted(os.listdir(d))}")
            keep = _first(d, ("keep_tokens.json",))
            keep_tokens = None
            if keep:
                with open(keep, encoding="utf-8") as f:
                    keep_tokens = json.load(f)
            self.spm_path, self.spm_seconds = spm_path, None
            self.tokenizer = SpTokenizer(spm_path, token_start=None, token_end="</s>")
            self.obj = build_transformer_model(config, checkpoint, model=version,
                                               keep_tokens=keep_tokens,
                                               return_keras_model=False)
        else:
            texts = [t for pair in train_pairs for t in pair]
            start = time.time()
            self.spm_path = train_sentencepiece(texts, os.path.join(args.output_dir, "spiece"),
                                                args.vocab_size, args.spm_sentences, args.seed)
            self.spm_seconds = round(time.time() - start, 2)
            self.tokenizer = SpTokenizer(self.spm_path, token_start=None, token_end="</s>")
            config = dict(vocab_size=self.tokenizer._vocab_size, d_model=args.hidden,
                          num_layers=args.layers, num_heads=args.heads,
                          d_kv=args.hidden // args.heads, d_ff=args.ff, dropout_rate=0.1,
                          relative_attention_num_buckets=32,
                          relative_attention_max_distance=128)
            self.obj = build_transformer_model(config, model=version, return_keras_model=False)
        self.end_id = self.tokenizer._token_end_id
        model = self.obj.model
        output = DecoderCrossEntropy(1)([model.inputs[1], model.outputs[0]])
        self.train_model = keras.Model(model.inputs, output)

    def encode_content(self, content):
        return self.tokenizer.encode(content, maxlen=self.args.maxlen)[0]

    def batch(self, pairs):
        """``[encoder_token_ids, decoder_token_ids]``; decoder rows are ``0 title </s>``."""
        contents = [self.encode_content(c) for _, c in pairs]
        titles = [[0] + self.tokenizer.encode(t, maxlen=self.args.title_maxlen)[0]
                  for t, _ in pairs]
        return [pad_rows(contents, self.args.maxlen),
                pad_rows(titles, self.args.title_maxlen + 1)]

    def prompts(self, contents):
        return pad_rows([self.encode_content(c) for c in contents], self.args.maxlen)

    def decode(self, ids):
        return self.tokenizer.decode(ids)


# ----------------------------------------------------------------------------- training

class StepLosses(keras.callbacks.Callback):
    """Per-step training losses, recovered from Keras' running epoch mean (equal batches)."""

    def __init__(self):
        super().__init__()
        self.losses = []
        self._seen = 0
        self._mean = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._seen, self._mean = 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float((logs or {}).get("loss", float("nan")))
        self._seen += 1
        self.losses.append(mean * self._seen - self._mean * (self._seen - 1))
        self._mean = mean


def batches(task, pairs, batch_size, seed):
    """Endless shuffled batches of exactly ``batch_size`` pairs (fixed shapes: one compile)."""
    rng = np.random.RandomState(seed)
    order = []
    while True:
        while len(order) < batch_size:
            order.extend(rng.permutation(len(pairs)).tolist())
        chosen, order = order[:batch_size], order[batch_size:]
        yield tuple(task.batch([pairs[i] for i in chosen])), None


def train(task, pairs, args):
    """``model.fit`` for ``--steps`` steps or ``--epochs`` passes; returns the record."""
    steps_per_epoch = math.ceil(len(pairs) / args.batch_size)
    if args.max_steps:
        steps_per_epoch = min(args.max_steps, steps_per_epoch)
        epochs = math.ceil(args.max_steps / steps_per_epoch)
        if args.max_steps % steps_per_epoch:  # keep the total exact: one epoch of them all
            steps_per_epoch, epochs = args.max_steps, 1
    else:
        epochs = args.epochs or 1
    task.train_model.compile(optimizer=Adam(args.learning_rate))
    log = StepLosses()
    start = time.time()
    task.train_model.fit(batches(task, pairs, args.batch_size, args.seed),
                         steps_per_epoch=steps_per_epoch, epochs=epochs, callbacks=[log],
                         shuffle=False, verbose=2)
    seconds = time.time() - start
    tail = log.losses[-max(1, len(log.losses) // 10):]
    return {"steps": len(log.losses), "epochs": epochs, "seconds": round(seconds, 2),
            "first_loss": log.losses[0], "final_loss": float(np.mean(tail)),
            "final_loss_steps": len(tail),
            "loss_curve": [round(float(x), 4) for x in log.losses[::max(1, len(log.losses) // 20)]]}


def dev_loss(task, pairs, batch_size):
    """Teacher-forced mean loss on ``pairs`` (no dropout)."""
    if not pairs:
        return None
    total = 0.0
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        value = task.train_model.evaluate(list(task.batch(chunk)), verbose=0,
                                          batch_size=len(chunk))
        total += float(value if np.ndim(value) == 0 else value[0]) * len(chunk)
    return total / len(pairs)


# ----------------------------------------------------------------------------- decoding

def strip_end(ids, end_id):
    ids = [int(i) for i in ids]
    return ids[:ids.index(end_id)] if end_id in ids else ids


def generate_titles(task, contents, args, method):
    """Decode every content; returns ``(titles, record)`` with timings.

    All batches have ``--decode-batch-size`` rows (the last one padded by repetition), so the
    first call compiles once; it runs untimed as a warm-up, then the whole set is timed.
    """
    size = args.decode_batch_size
    kwargs = dict(method=method, end_id=task.end_id, repetition_penalty=args.repetition_penalty)
    if method == "beam":
        kwargs["beam_size"] = args.beam_size
    chunks = [contents[i:i + size] for i in range(0, len(contents), size)]

    def run(chunk):
        padded = chunk + [chunk[-1]] * (size - len(chunk))
        return task.obj.generate(task.prompts(padded), args.title_maxlen, **kwargs)[:len(chunk)]

    start = time.time()
    run(chunks[0])
    warmup = time.time() - start
    start = time.time()
    outputs = [row for chunk in progress(chunks, desc=f"decoding {len(contents)} ({method})")
               for row in run(chunk)]
    seconds = time.time() - start
    tokens = sum(len(row) for row in outputs)
    titles = [task.decode(strip_end(row, task.end_id)) for row in outputs]
    return titles, {"decode_seconds": round(seconds, 3), "warmup_seconds": round(warmup, 3),
                    "generated_tokens": tokens,
                    "tokens_per_second": round(tokens / seconds, 2) if seconds > 0 else None}


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = base_parser(__doc__.split("\n")[0], batch_size=16, maxlen=256, epochs=None)
    p.add_argument("--arch", choices=("unilm", "t5"), required=True)
    p.add_argument("--steps", dest="max_steps", type=int,
                   help="optimizer steps in total (alias of --max-steps)")
    p.add_argument("--title-maxlen", type=int, default=32,
                   help="longest title in tokens, end token included (training and decoding)")
    p.add_argument("--limit-test", type=int, default=None, help="test examples scored")
    p.add_argument("--limit-dev", type=int, default=200, help="dev examples for the dev loss")
    p.add_argument("--beam-size", type=int, default=4)
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="transformers' repetition penalty on the title's own tokens (1: none)")
    p.add_argument("--decode-batch-size", type=int, default=32)
    p.add_argument("--examples", type=int, default=5, help="predictions kept in the JSON")
    t5 = p.add_argument_group("T5 from scratch (--arch t5 without --model-dir)")
    t5.add_argument("--layers", type=int, default=4)
    t5.add_argument("--hidden", type=int, default=256)
    t5.add_argument("--heads", type=int, default=4)
    t5.add_argument("--ff", type=int, default=512)
    t5.add_argument("--vocab-size", type=int, default=8000, help="sentencepiece pieces")
    t5.add_argument("--spm-sentences", type=int, default=50000,
                    help="sentences sampled to train sentencepiece")
    args = p.parse_args(argv)
    if args.learning_rate is None:
        args.learning_rate = DEFAULT_LR[args.arch]
    if args.arch == "unilm" and not args.model_dir:
        p.error("--arch unilm needs --model-dir (a BERT-family model directory)")
    for name in ("maxlen", "title_maxlen", "batch_size", "beam_size", "decode_batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, found {getattr(args, name)}")
    if not args.repetition_penalty > 0:
        p.error(f"--repetition-penalty must be > 0, found {args.repetition_penalty}")
    if args.hidden % args.heads:
        p.error(f"--hidden {args.hidden} is not a multiple of --heads {args.heads}")
    return args


def main(argv=None):
    args = parse_args(argv)
    set_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    limits = {"train": args.limit, "dev": args.limit_dev, "test": args.limit_test}
    data, counts = {}, {}
    for split in SPLITS:
        path = os.path.join(args.data_dir, f"{split}.json")
        data[split], skipped = load_split(path, limits[split])
        counts[split] = {"used": len(data[split]), "skipped_empty": skipped}
    if not data["train"] or not data["test"]:
        raise DataError(f"{args.data_dir}: need non-empty train.json and test.json; "
                        f"found {counts}")

    print(f"data {counts}", flush=True)
    task = UniLMTask(args) if args.arch == "unilm" else T5Task(args, data["train"])
    training = train(task, data["train"], args)
    dev = dev_loss(task, data["dev"], args.batch_size)

    contents = [c for _, c in data["test"]]
    references = [t for t, _ in data["test"]]
    result = {"arch": args.arch, "args": vars(args), "backend": keras.backend.backend(),
              "data": counts, "train": training, "dev_loss": dev}
    if args.arch == "t5":
        result["sentencepiece"] = os.path.abspath(task.spm_path)
        result["vocab_size"] = task.tokenizer._vocab_size
        result["sentencepiece_seconds"] = task.spm_seconds
    predictions = {}
    for method in ("greedy", "beam"):
        titles, record = generate_titles(task, contents, args, method)
        record.update(score_titles(titles, references))
        result[method] = record
        predictions[method] = titles
    result["examples"] = [
        {"content": contents[i][:120], "title": references[i],
         "greedy": predictions["greedy"][i], "beam": predictions["beam"][i]}
        for i in range(min(args.examples, len(contents)))]
    path = os.path.join(args.output_dir, "title_generation.json")
    write_json(path, result)
    g, b = result["greedy"], result["beam"]
    print(f"title_generation {args.arch}: train {training['steps']} steps "
          f"{training['seconds']:.0f}s loss {training['final_loss']:.3f} | "
          f"greedy R1 {g['rouge-1']:.4f} R2 {g['rouge-2']:.4f} RL {g['rouge-l']:.4f} "
          f"BLEU {g['bleu']:.4f} {g['tokens_per_second']} tok/s | "
          f"beam{args.beam_size} R1 {b['rouge-1']:.4f} R2 {b['rouge-2']:.4f} "
          f"RL {b['rouge-l']:.4f} BLEU {b['bleu']:.4f} {b['tokens_per_second']} tok/s "
          f"| test {len(contents)} -> {path}")
    return result


if __name__ == "__main__":
    main()
