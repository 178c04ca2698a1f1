"""MLM pretraining of a small Chinese model on one machine (bert4keras' ``pretraining/`` recipe).

The recipe: documents are split into words (jieba, for whole-word masking) and packed
into ``[CLS] ... [SEP]`` sequences of at most ``--seq-len`` tokens; every batch draws its
masks afresh (dynamic masking): each word is chosen with probability ``--mask-rate``
and each token of a chosen word becomes ``[MASK]`` (80%), a random token (10%) or stays
(10%); the loss is the cross-entropy on the chosen tokens only. AdamW (weight decay
off for norms and biases) with linear warm-up and linear decay.

Output (``--output-dir``), a model directory every example reads (``--model-dir``):
``bert_config.json``, ``vocab.txt``, a Google TF checkpoint ``bert_model.ckpt`` (with
the MLM head), the same weights as ``model.weights.h5`` and ``pretrain_log.json``
(arguments, steps, wall time, the running mean of the training loss every
``--log-every`` steps, held-out MLM accuracy).

Example (the corpus comes from ``scripts/get_data.sh``; nothing is downloaded here)::

    python examples/pretraining/pretrain.py --corpus data/corpus/train.txt \\
        --heldout-file data/corpus/dev.txt --vocab data/vocab.txt \\
        --output-dir data/models/roformer-small --model roformer --max-minutes 55

The held-out text is ``--heldout-file`` or else the last ``--heldout`` documents of the
corpus (never trained on); its masks are drawn once with a fixed seed, so accuracies of
two runs are comparable.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import keras

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------

def read_corpus(paths, limit=None):
    """Non-empty stripped lines (one document each) of the text files ``paths``."""
    docs = []
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--corpus {path!r} is not a file (expected UTF-8 text, "
                                    "one document per line; see scripts/get_data.sh)")
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    docs.append(line)
                    if limit and len(docs) >= limit:
                        return docs
    if not docs:
        raise ValueError(f"the corpus {paths} holds no text")
    return docs


def reduced_vocab(docs, token_dict, min_count, keep_unused=20):
    """The tokens of ``token_dict`` seen at least ``min_count`` times in ``docs``.

    In the base vocabulary's order, after the special tokens and the first ``keep_unused``
    ``[unusedN]`` tokens (prompt tokens for P-tuning). Returns a list of tokens.
    """
    from bert4keras3.tokenizers import Tokenizer

    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    counts = {}
    for doc in docs:
        for token in tokenizer.tokenize(doc)[1:-1]:
            counts[token] = counts.get(token, 0) + 1
    missing = [t for t in SPECIAL if t not in token_dict]
    if missing:
        raise ValueError(f"the vocabulary lacks the special tokens {missing}")
    ordered = sorted(token_dict, key=token_dict.get)
    unused = [t for t in ordered if t.startswith("[unused")][:keep_unused]
    kept = [t for t in ordered if t not in SPECIAL and not t.startswith("[unused")
            and counts.get(t, 0) >= min_count]
    return list(SPECIAL) + unused + kept


def to_words(doc, tokenizer, whole_word):
    """``doc`` as a list of words, each a list of token ids (characters when not ``whole_word``)."""
    if whole_word:
        import jieba

        pieces = jieba.lcut(doc)
    else:
        pieces = list(doc)
    words = []
    for piece in pieces:
        ids = tokenizer.encode(piece)[0][1:-1]
        if ids:
            words.append(ids)
    return words


def pack(docs_words, seq_len):
    """Pack documents (lists of words) into instances of at most ``seq_len - 2`` tokens.

    Words are appended in order until the next one would overflow; a word longer than
    an instance is cut. Returns a list of instances, each a list of words.
    """
    room = seq_len - 2
    instances, current, used = [], [], 0
    for words in docs_words:
        for word in words:
            word = word[:room]
            if used + len(word) > room and current:
                instances.append(current)
                current, used = [], 0
            current.append(word)
            used += len(word)
    if current:
        instances.append(current)
    return instances


def mask_instance(words, rng, mask_rate, mask_id, vocab_size, first_id, cls_id, sep_id):
    """Token ids, targets and 0/1 weights of one instance with fresh whole-word masks.

    Chosen tokens become ``mask_id`` (80%), a random id in ``[first_id, vocab_size)`` (10%)
    or stay (10%); ``targets`` hold the original ids, ``weights`` mark the chosen tokens.
    """
    ids, targets, weights = [cls_id], [cls_id], [0.0]
    chosen = rng.random_sample(len(words)) < mask_rate
    for word, pick in zip(words, chosen):
        for token in word:
            targets.append(token)
            if pick:
                r = rng.random_sample()
                if r < 0.8:
                    ids.append(mask_id)
                elif r < 0.9:
                    ids.append(token)
                else:
                    ids.append(int(rng.randint(first_id, vocab_size)))
                weights.append(1.0)
            else:
                ids.append(token)
                weights.append(0.0)
    ids.append(sep_id)
    targets.append(sep_id)
    weights.append(0.0)
    return ids, targets, weights


def make_batch(instances, rng, seq_len, **mask_args):
    """Padded ``(token_ids, segment_ids), targets, weights`` arrays of ``instances``.

    ``weights`` are scaled so that their mean over the batch is 1: Keras' mean over all
    positions then equals the mean loss over the masked tokens (bert4keras' normalisation).
    """
    n = len(instances)
    ids = np.zeros((n, seq_len), "int32")
    targets = np.zeros((n, seq_len), "int32")
    weights = np.zeros((n, seq_len), "float32")
    for i, words in enumerate(instances):
        a, b, c = mask_instance(words, rng, **mask_args)
        ids[i, :len(a)], targets[i, :len(b)], weights[i, :len(c)] = a, b, c
    total = weights.sum()
    if total > 0:
        weights *= weights.size / total
    return (ids, np.zeros_like(ids)), targets, weights


def batches(instances, batch_size, seq_len, seed, **mask_args):
    """Endless shuffled batches with masks drawn anew each time (dynamic masking)."""
    rng = np.random.RandomState(seed)
    order = np.arange(len(instances))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chunk = [instances[i] for i in order[start:start + batch_size]]
            yield make_batch(chunk, rng, seq_len, **mask_args)


def mlm_accuracy(model, batch_list):
    """Accuracy of the argmax prediction on the masked tokens of fixed batches."""
    right = total = 0.0
    for x, targets, weights in batch_list:
        logits = np.asarray(model.predict_on_batch(x))
        picked = weights > 0
        right += float(((logits.argmax(-1) == targets) & picked).sum())
        total += float(picked.sum())
    return right / max(total, 1.0)


# ---------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------

def model_config(args, vocab_size):
    """A Google-style ``bert_config.json`` dict from the command line."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "intermediate_size": args.intermediate or 4 * args.hidden,
        "hidden_act": "gelu",
        "hidden_dropout_prob": args.dropout,
        "attention_probs_dropout_prob": args.dropout,
        "max_position_embeddings": max(512, args.seq_len),
        "type_vocab_size": 2,
        "initializer_range": 0.02,
    }


def build_optimizer(args, model):
    from bert4keras3.optimizers import (Adam, extend_with_piecewise_linear_lr,
                                        extend_with_weight_decay)

    AdamWLR = extend_with_piecewise_linear_lr(extend_with_weight_decay(Adam, "AdamW"), "AdamWLR")
    warmup = max(1, int(args.warmup * args.steps))
    return AdamWLR(args.learning_rate, weight_decay_rate=args.weight_decay,
                   exclude_from_weight_decay=["Norm", "norm", "bias"],
                   lr_schedule={warmup: 1.0, args.steps: 0.0})


class Budget(keras.callbacks.Callback):
    """Stop training after ``minutes`` (None: never); keep the loss every ``every`` steps."""

    def __init__(self, minutes, every):
        super().__init__()
        self.minutes, self.every = minutes, every
        self.start = time.time()
        self.curve = []
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % self.every == 0 and logs:
            self.curve.append([self.steps, float(logs.get("loss", np.nan))])
        if self.minutes and time.time() - self.start > 60 * self.minutes:
            self.model.stop_training = True


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", nargs="+", required=True, help="text files, one document per line")
    p.add_argument("--vocab", required=True, help="a WordPiece vocab.txt (e.g. data/vocab.txt)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--model", default="roformer", choices=["bert", "roformer", "roformer_v2",
                                                           "nezha"])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=None, help="default 4 x hidden")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--attention-normalization", default="softmax",
                   help="softmax or softmax_plus (entropy-invariant scale)")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--max-minutes", type=float, default=None, help="stop training after this")
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of --steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--mask-rate", type=float, default=0.15)
    p.add_argument("--no-whole-word", action="store_true", help="mask characters, not words")
    p.add_argument("--min-count", type=int, default=1,
                   help="keep the vocab tokens seen this often in the corpus (0: whole vocab)")
    p.add_argument("--heldout", type=int, default=2000, help="last N documents held out")
    p.add_argument("--heldout-file", default=None,
                   help="held-out documents (then the whole corpus trains; --heldout unused)")
    p.add_argument("--limit", type=int, default=None, help="read only N documents")
    p.add_argument("--eval-lengths", default="", help="also evaluate at these lengths, e.g. "
                   "128,256,512 (packing the held-out text into longer sequences)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--log-every", type=int, default=50)
    args = p.parse_args(argv)
    if not 0 < args.mask_rate < 1:
        p.error(f"--mask-rate must be in (0, 1), found {args.mask_rate}")
    if args.seq_len < 8:
        p.error(f"--seq-len must be at least 8, found {args.seq_len}")
    return args


def main(argv=None):
    args = parse_args(argv)
    from bert4keras3.models import build_transformer_model
    from bert4keras3.tokenizers import Tokenizer, load_vocab, save_vocab

    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    t0 = time.time()
    docs = read_corpus(args.corpus, args.limit)
    if args.heldout_file:
        train_docs, heldout_docs = docs, read_corpus([args.heldout_file])
    elif len(docs) <= args.heldout:
        raise ValueError(f"--heldout {args.heldout} leaves no training text: the corpus has "
                         f"{len(docs)} documents")
    else:
        train_docs = docs[:len(docs) - args.heldout]
        heldout_docs = docs[len(docs) - args.heldout:]
    base = load_vocab(args.vocab)
    tokens = reduced_vocab(train_docs, base, args.min_count) if args.min_count else \
        sorted(base, key=base.get)
    token_dict = {t: i for i, t in enumerate(tokens)}
    save_vocab(os.path.join(args.output_dir, "vocab.txt"), token_dict)
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    whole = not args.no_whole_word
    train = pack((to_words(d, tokenizer, whole) for d in train_docs), args.seq_len)
    heldout_words = [to_words(d, tokenizer, whole) for d in heldout_docs]
    mask_args = dict(mask_rate=args.mask_rate, mask_id=token_dict["[MASK]"],
                     vocab_size=len(token_dict), first_id=len(SPECIAL),
                     cls_id=token_dict["[CLS]"], sep_id=token_dict["[SEP]"])
    lengths = [args.seq_len] + [int(x) for x in args.eval_lengths.split(",") if x]
    eval_sets = {}
    for length in lengths:
        rng = np.random.RandomState(12345)
        inst = pack(heldout_words, length)
        eval_sets[length] = [make_batch(inst[i:i + args.batch_size], rng, length, **mask_args)
                             for i in range(0, len(inst), args.batch_size)]
    prep_s = time.time() - t0
    print(f"{len(train_docs)} training documents -> {len(train)} sequences of <= {args.seq_len} "
          f"tokens; {len(heldout_docs)} held-out documents; vocab {len(token_dict)} "
          f"({prep_s:.0f} s)", flush=True)

    config = model_config(args, len(token_dict))
    with open(os.path.join(args.output_dir, "bert_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    obj = build_transformer_model(config, model=args.model, with_mlm="linear",
                                  attention_normalization=args.attention_normalization,
                                  return_keras_model=False)
    model = obj.model
    model.compile(optimizer=build_optimizer(args, model),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")])
    budget = Budget(args.max_minutes, args.log_every)
    data = batches(train, args.batch_size, args.seq_len, args.seed, **mask_args)
    t1 = time.time()
    model.fit(data, steps_per_epoch=args.steps, epochs=1, callbacks=[budget], shuffle=False,
              verbose=2 if not sys.stdout.isatty() else 1)
    train_s = time.time() - t1
    accuracy = {str(n): mlm_accuracy(model, eval_sets[n]) for n in lengths}
    obj.save_weights_as_checkpoint(os.path.join(args.output_dir, "bert_model.ckpt"))
    model.save_weights(os.path.join(args.output_dir, "model.weights.h5"))
    log = {
        "args": vars(args), "train_documents": len(train_docs),
        "train_sequences": len(train), "heldout_documents": len(heldout_docs),
        "vocab_size": len(token_dict), "parameters": int(model.count_params()),
        "steps": budget.steps, "prepare_seconds": round(prep_s, 1),
        "train_seconds": round(train_s, 1), "loss_curve": budget.curve,
        "heldout_mlm_accuracy": accuracy, "backend": keras.backend.backend(),
    }
    with open(os.path.join(args.output_dir, "pretrain_log.json"), "w") as f:
        json.dump(log, f, indent=2, ensure_ascii=False)
    print(json.dumps({"steps": budget.steps, "train_seconds": log["train_seconds"],
                      "heldout_mlm_accuracy": accuracy}), flush=True)
    return log


if __name__ == "__main__":
    main()
