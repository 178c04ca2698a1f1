"""KgCLUE baseline: UniLM seq2seq on an encoder + prefix-tree (Trie) constrained decoding.

Recipe (after bojone's KgCLUE-bert4keras; see README.md beside this file):

* The question is segment 0. The answer's subject and predicate are segment 1,
  linearised as ``stem ||| predicate`` or ``stem ||| predicate ||| sense`` and
  ended by ``[SEP]``, where a KB subject ``stem（sense）`` (full-width
  parentheses, KgCLUE's disambiguation suffix) is split so that the part the
  question mentions comes first and the hard-to-guess sense comes last.
* Training: ``model.fit`` on the next-token cross-entropy of segment 1 only.
* Decoding: ``obj.generate(..., allowed=trie, end_id=[SEP])`` where ``trie`` holds
  the token ids of every ``subject ||| predicate`` of ``Knowledge.txt``, so every
  output is a KB key; the object is then looked up in the KB (the first one
  listed when a key has several). ``--no-trie`` decodes freely instead: an output
  whose ids (or text) are a KB key is answered from the KB, any other output gets
  ``(S, P, "")`` read off its text, so only KB answers can score on the object.
* Metric: KgCLUE's evaluation (normalised text; EM and LCS-based F1 of S, P, O and
  of the whole triple); ``score = 0.5 * EM_O + 0.5 * F1_O``.

    python examples/kgclue/run.py --data-dir examples/data/kgclue --model-dir MODEL
"""
import math
import os
import re
import sys
import time
import unicodedata

import keras
import numpy as np
from keras import ops

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import (  # noqa: E402
    DataError,
    base_parser,
    build_model,
    load_tokenizer,
    model_files,
    progress,
    read_json_lines,
    read_triples,
    set_seed,
    write_json,
    write_json_lines,
)

TASK = "kgclue"
SEPARATOR = " ||| "
KNOWLEDGE_NAMES = ("Knowledge.txt", "knowledge.txt")
#: longest question substring considered by ``--kb-subjects mentioned``
MAX_MENTION = 64
#: padded training lengths are rounded up to this multiple (fewer compilations)
BUCKET = 16


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

def split_subject(subject):
    """``"stem（sense）"`` -> ``("stem", "sense")``; ``("subject", "")`` without a sense."""
    if subject.endswith("）") and "（" in subject[1:]:
        i = subject.index("（", 1)
        return subject[:i], subject[i + 1:-1]
    return subject, ""


def linearise(subject, predicate):
    """Segment-1 text of an answer: ``stem ||| predicate [||| sense]``."""
    stem, sense = split_subject(subject)
    parts = [stem, predicate] + ([sense] if sense else [])
    return SEPARATOR.join(parts)


def normalize_object(text):
    return " ".join(text.split())


def parse_answer(answer, where):
    """``"S ||| P ||| O"`` -> ``(S, P, O)``; a DataError naming ``where`` otherwise."""
    if not isinstance(answer, str):
        raise DataError(f"{where}: 'answer' must be a string, found {type(answer).__name__}")
    parts = answer.split(SEPARATOR, 2)
    if len(parts) != 3:
        raise DataError(f"{where}: 'answer' must be 'subject ||| predicate ||| object', "
                        f"found {answer!r}")
    return tuple(p.strip() for p in parts)


def load_split(path, with_answer, limit=None):
    """Read a KgCLUE split: a list of dicts ``id, question[, subject, predicate, object]``."""
    fields = ("id", "question", "answer") if with_answer else ("id", "question")
    records, seen = [], {}
    for line, obj in read_json_lines(path, fields=fields, limit=limit):
        where = f"{path}:{line}"
        if not isinstance(obj["question"], str) or not obj["question"].strip():
            raise DataError(f"{where}: 'question' must be a non-empty string, "
                            f"found {obj['question']!r}")
        key = str(obj["id"])
        if key in seen:
            raise DataError(f"{where}: duplicate id {obj['id']!r} (first at line {seen[key]})")
        seen[key] = line
        record = {"id": obj["id"], "question": obj["question"], "line": line}
        if with_answer:
            s, p, o = parse_answer(obj["answer"], where)
            record.update(subject=s, predicate=p, object=o)
        records.append(record)
    return records


def knowledge_path(data_dir):
    for name in KNOWLEDGE_NAMES:
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"{data_dir!r} holds no {' or '.join(KNOWLEDGE_NAMES)} "
                            "(subject<TAB>predicate<TAB>object lines)")


def mention_filter(questions, max_len=MAX_MENTION):
    """A predicate ``stem -> bool``: does the (lower-cased) stem occur in some question?"""
    spans = set()
    for q in questions:
        q = q.lower()
        for i in range(len(q)):
            for j in range(i + 1, min(len(q), i + max_len) + 1):
                spans.add(q[i:j])
    return lambda stem: stem.lower() in spans


class KnowledgeBase:
    """Token-id keys of ``subject ||| predicate`` in a :class:`~bert4keras3.snippets.Trie`,
    mapped to the KB triples that share them (in file order)."""

    def __init__(self):
        from bert4keras3.snippets import Trie

        self.trie = Trie()
        self.entries = {}
        self.max_length = 0
        self.triples = 0

    def add(self, ids, triple):
        key = tuple(ids)
        found = self.entries.get(key)
        if found is None:
            self.entries[key] = [triple]
            self.trie.insert(key)
            self.max_length = max(self.max_length, len(key))
        else:
            found.append(triple)
        self.triples += 1

    def lookup(self, ids):
        """The first triple stored under ``ids`` (``None`` if ``ids`` is not a key)."""
        found = self.entries.get(tuple(ids))
        return found[0] if found else None

    def complete(self, ids):
        """Extend a prefix along the first stored branch to a full key (decoding fallback)."""
        ids = list(ids)
        while tuple(ids) not in self.entries:
            nxt = self.trie.next_ids(ids)
            if not nxt:
                return None
            ids.append(nxt[0])
        return ids

    def __len__(self):
        return len(self.entries)


def load_knowledge(path, tokenizer, keep=None):
    """Read ``Knowledge.txt`` (``subject<TAB>predicate<TAB>object`` per line).

    ``keep(stem) -> bool`` optionally filters triples by subject stem. Malformed
    lines raise :class:`DataError` naming the file and line.
    """
    kb = KnowledgeBase()
    total = os.path.getsize(path)
    bar = keras.utils.Progbar(total, verbose=1 if sys.stdout.isatty() else 2, unit_name="byte")
    print(f"reading {path}", flush=True)
    for number, done, (s, p, o) in read_triples(path):
        if number % 20000 == 0:
            bar.update(done)
        if keep is not None and not keep(split_subject(s)[0]):
            continue
        ids = tokenizer.encode(linearise(s, p))[0][1:]
        kb.add(ids, (s, p, normalize_object(o)))
    bar.update(total, finalize=True)
    if not len(kb):
        raise DataError(f"{path}: no knowledge triples" +
                        (" mention a subject of the dev/test questions" if keep else ""))
    return kb


# ---------------------------------------------------------------------------
# Model inputs
# ---------------------------------------------------------------------------

def encode_question(tokenizer, question, maxlen):
    """Prompt ids ``[CLS] question [SEP]`` (at most ``maxlen // 2`` tokens)."""
    return tokenizer.encode(question, maxlen=max(maxlen // 2, 3))[0]


def encode_example(tokenizer, record, maxlen):
    """``(token_ids, segment_ids)``: question (segment 0) + linearised answer (segment 1)."""
    q_ids = encode_question(tokenizer, record["question"], maxlen)
    a_ids = tokenizer.encode(linearise(record["subject"], record["predicate"]))[0][1:]
    token_ids = (q_ids + a_ids)[:maxlen]
    return token_ids, [0] * len(q_ids) + [1] * (len(token_ids) - len(q_ids))


def make_batches(examples, batch_size, seed):
    """A ``keras.utils.PyDataset`` of ``((token_ids, segment_ids), targets)`` batches.

    ``targets[i]`` is the id at ``i + 1`` where that token is in segment 1, else 0
    (ignored by :func:`seq2seq_loss`). Batches are padded to a multiple of
    ``BUCKET`` and reshuffled every epoch; the last one is filled up with random
    examples so every batch has ``batch_size`` rows.
    """
    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.steps = math.ceil(len(examples) / batch_size)
            self.on_epoch_end()

        def on_epoch_end(self):
            order = self.rng.permutation(len(examples))
            extra = self.steps * batch_size - len(order)
            self.order = np.concatenate([order, self.rng.integers(0, len(examples), extra)])

        def __len__(self):
            return self.steps

        def __getitem__(self, index):
            rows = [examples[i] for i in self.order[index * batch_size:(index + 1) * batch_size]]
            width = BUCKET * math.ceil(max(len(t) for t, _ in rows) / BUCKET)
            tokens = np.zeros((len(rows), width), "int32")
            segments = np.zeros_like(tokens)
            targets = np.zeros_like(tokens)
            for r, (t, s) in enumerate(rows):
                tokens[r, :len(t)] = t
                segments[r, :len(s)] = s
                seg = np.asarray(s)
                targets[r, :len(t) - 1] = np.where(seg[1:] == 1, t[1:], 0)
            return (tokens, segments), targets

    return Batches()


def seq2seq_loss(y_true, y_pred):
    """Mean cross-entropy over the positions whose target id is not 0 (segment 1)."""
    y_true = ops.cast(y_true, "int32")
    mask = ops.cast(ops.greater(y_true, 0), y_pred.dtype)
    loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
    return ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0)


class StopAfter(keras.callbacks.Callback):
    """Stop ``fit`` after ``steps`` optimizer steps in total (``--max-steps``)."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.seen = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.steps:
            self.model.stop_training = True


# ---------------------------------------------------------------------------
# Decoding and evaluation
# ---------------------------------------------------------------------------

def plain_key(text):
    """Text of a key as the tokenizer sees it: lower case, no accents, no whitespace."""
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in text if unicodedata.category(c) != "Mn" and not c.isspace())


def parse_key_text(text):
    """Decoded ``stem ||| predicate [||| sense]`` -> ``(subject, predicate)`` as written
    (missing parts are empty)."""
    parts = [x.strip() for x in re.split(r"\s*\|\s*\|\s*\|\s*", text)]  # decode: "| | |"
    stem, predicate = parts[0], (parts[1] if len(parts) > 1 else "")
    sense = "|||".join(parts[2:])
    return (f"{stem}（{sense}）" if sense else stem), predicate


def unconstrained_answer(kb, tokenizer, ids, text_keys):
    """The KB triple of freely decoded ``ids``: found when the ids are a key, or when their
    text equals a key's text (:func:`plain_key`); otherwise ``(S, P, "")`` read off the
    decoded text, which no exact-match metric on the object can count."""
    triple = kb.lookup(ids)
    if triple is not None:
        return triple, True
    text = tokenizer.decode(ids)
    key = text_keys.get(plain_key(text))
    if key is not None:
        return kb.lookup(key), True
    return parse_key_text(text) + ("",), False


def predict(obj, tokenizer, kb, questions, maxlen, batch_size, beam_size=1, desc=None,
            constrained=True):
    """Decode each question: trie-constrained (every output is a KB key) or, with
    ``constrained=False``, freely (see :func:`unconstrained_answer`).

    Returns ``(ids, (S, P, O), in_kb)`` per question; ``in_kb``: the answer is a KB triple.
    """
    end_id = tokenizer._token_end_id
    text_keys = None
    if not constrained:
        text_keys = {}
        for key, triples in kb.entries.items():
            text_keys.setdefault(plain_key(linearise(*triples[0][:2])), key)
    method = "beam" if beam_size > 1 else "greedy"
    batches = [questions[i:i + batch_size] for i in range(0, len(questions), batch_size)]
    results = []
    for batch in progress(batches, desc=desc):
        ids = [encode_question(tokenizer, q, maxlen) for q in batch]
        if len(batches) > 1:  # same batch shape every call: one compilation
            ids += [ids[-1]] * (batch_size - len(ids))
        width = max(len(x) for x in ids)
        tokens = np.zeros((len(ids), width), "int32")
        for r, x in enumerate(ids):
            tokens[r, :len(x)] = x
        out = obj.generate([tokens, np.zeros_like(tokens)], kb.max_length, method=method,
                           beam_size=beam_size, end_id=end_id,
                           allowed=kb.trie if constrained else None)
        for seq in out[:len(batch)]:
            if constrained:
                key = seq if tuple(seq) in kb.entries else kb.complete(seq)
                triple = kb.lookup(key) if key is not None else None
                results.append((list(seq), triple or ("", "", ""), triple is not None))
            else:
                results.append((list(seq),) + unconstrained_answer(kb, tokenizer, seq,
                                                                   text_keys))
    return results


def normalize(text):
    """KgCLUE's normalisation: lower case, runs of whitespace -> one space."""
    return " ".join(text.lower().split())


def f1_sim(a, b):
    """KgCLUE's string F1: ``2 * LCS(a, b) / (len(a) + len(b))`` (0 when both are empty)."""
    from bert4keras3.snippets import longest_common_subsequence

    if not a and not b:
        return 0.0
    return 2.0 * longest_common_subsequence(a, b)[0] / (len(a) + len(b))


def evaluate(predicted, gold):
    """KgCLUE's metrics over ``(S, P, O)`` pairs, as fractions in [0, 1].

    ``EM_X`` / ``F1_X`` for X in S, P, O and All (the concatenation), and
    ``EMF1 = 0.5 * EM_O + 0.5 * F1_O`` (the leaderboard score).
    """
    if not gold:
        raise ValueError("evaluate: no examples")
    if len(predicted) != len(gold):
        raise ValueError(f"evaluate: {len(predicted)} predictions for {len(gold)} references")
    m = {f"{k}_{x}": 0.0 for k in ("EM", "F1") for x in ("All", "S", "P", "O")}
    for pred, ref in zip(predicted, gold):
        pred = [normalize(x) for x in pred]
        ref = [normalize(x) for x in ref]
        for name, a, b in zip("SPO", pred, ref):
            m[f"EM_{name}"] += float(a == b)
            m[f"F1_{name}"] += f1_sim(a, b)
        m["EM_All"] += float(pred == ref)
        m["F1_All"] += f1_sim("".join(pred), "".join(ref))
    m = {k: v / len(gold) for k, v in m.items()}
    m["EMF1"] = 0.5 * m["EM_O"] + 0.5 * m["F1_O"]
    return m


def format_answer(triple):
    return SEPARATOR.join(triple)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def decode_and_report(args, obj, tokenizer, kb, dev, test, train_examples, steps, start,
                      constrained, out):
    """Decode dev and test (with the trie when ``constrained``), write the predictions and
    ``OUT/kgclue_dev.json`` under ``out``, print the scores; returns the dev summary."""
    decode_start = time.time()
    dev_pred = predict(obj, tokenizer, kb, [r["question"] for r in dev], args.maxlen,
                       args.batch_size, args.beam_size, desc="decoding dev",
                       constrained=constrained)
    decode_seconds = time.time() - decode_start
    gold = [(r["subject"], r["predicate"], r["object"]) for r in dev]
    metrics = evaluate([t for _, t, _ in dev_pred], gold)
    write_json_lines(os.path.join(out, f"{TASK}_dev_predict.json"), [
        {"id": r["id"], "question": r["question"], "answer": format_answer(t),
         "gold": format_answer(g), "in_kb": in_kb}
        for r, (_, t, in_kb), g in zip(dev, dev_pred, gold)
    ])

    test_pred = predict(obj, tokenizer, kb, [r["question"] for r in test], args.maxlen,
                        args.batch_size, args.beam_size, desc="decoding test",
                        constrained=constrained) if test else []
    write_json_lines(os.path.join(out, f"{TASK}_predict.json"),
                     [{"id": r["id"], "answer": format_answer(t)}
                      for r, (_, t, _) in zip(test, test_pred)])

    summary = {
        "task": TASK,
        "metric": "EMF1 = 0.5 * EM_O + 0.5 * F1_O (KgCLUE evaluation)",
        "score": metrics["EMF1"],
        "examples": len(dev),
        "seconds": round(time.time() - start, 2),
        "em": metrics["EM_O"],
        "f1": metrics["F1_O"],
        "metrics": metrics,
        "model": args.model,
        "model_dir": args.model_dir,
        "backend": keras.backend.backend(),
        "train_examples": train_examples,
        "steps": steps,
        "knowledge_triples": kb.triples,
        "beam_size": args.beam_size,
        "trie": constrained,
        "kb_answers": sum(in_kb for _, _, in_kb in dev_pred) / len(dev_pred),
        "decode_seconds": round(decode_seconds, 2),
    }
    write_json(os.path.join(out, f"{TASK}_dev.json"), summary)
    mode = "trie" if constrained else "free"
    print(f"dev ({mode} decoding): EM_O {metrics['EM_O']:.4f}  F1_O {metrics['F1_O']:.4f}  "
          f"score {metrics['EMF1']:.4f}  KB answers {summary['kb_answers']:.4f}  "
          f"({len(dev)} examples, {summary['seconds']:.1f} s)")
    for r, (_, t, _), g in list(zip(dev, dev_pred, gold))[:3]:
        print(f"  {r['question']}  ->  {format_answer(t)}   (gold: {format_answer(g)})")
    print(f"wrote {os.path.join(out, TASK + '_predict.json')} ({len(test)} test answers)")
    return summary


def parse_args(argv=None):
    p = base_parser(__doc__.splitlines()[0], model="roformer", epochs=3, batch_size=32,
                    maxlen=128, learning_rate=1e-5)
    p.add_argument("--beam-size", type=int, default=1,
                   help="beam search with this many beams (1 = greedy)")
    p.add_argument("--kb-subjects", choices=("all", "mentioned"), default="all",
                   help="'mentioned': keep only KB triples whose subject stem occurs in a "
                        "dev/test question (a much smaller trie for the 20M-triple KB)")
    p.add_argument("--no-trie", action="store_true",
                   help="decode freely (no prefix tree); an output that is not a KB key "
                        "gets no object")
    p.add_argument("--also-free", action="store_true",
                   help="after the trie decode, also decode freely with the same weights; "
                        "writes those results under OUT/free/")
    args = p.parse_args(argv)
    if args.also_free and args.no_trie:
        p.error("--also-free adds a free decode to the trie one; it cannot go with --no-trie")
    for name in ("batch_size", "maxlen", "beam_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.epochs < 0 or (args.max_steps is not None and args.max_steps < 0):
        p.error("--epochs and --max-steps must be >= 0")
    return args


def main(argv=None):
    """Train, evaluate on dev, predict test; returns the dev summary dict."""
    args = parse_args(argv)
    start = time.time()
    set_seed(args.seed)
    d = args.data_dir
    train = load_split(os.path.join(d, "train.json"), True, args.limit)
    dev = load_split(os.path.join(d, "dev.json"), True, args.limit)
    test = load_split(os.path.join(d, "test.json"), False, args.limit)
    if not dev:
        raise DataError(f"{os.path.join(d, 'dev.json')}: no examples")
    print(f"train {len(train)}  dev {len(dev)}  test {len(test)}")

    tokenizer = load_tokenizer(args.model_dir)
    keep = None
    if args.kb_subjects == "mentioned":
        keep = mention_filter([r["question"] for r in dev + test])
    kb = load_knowledge(knowledge_path(d), tokenizer, keep)
    print(f"knowledge: {kb.triples} triples, {len(kb)} distinct keys, "
          f"longest key {kb.max_length} tokens")

    if model_files(args.model_dir)["checkpoint"] is None:
        print("warning: no checkpoint in --model-dir; the model starts from random weights")
    obj = build_model(args.model_dir, model=args.model, application="unilm", with_mlm=True,
                      return_keras_model=False)
    model = obj.model

    steps = 0
    if train and args.epochs > 0 and args.max_steps != 0:
        data = make_batches([encode_example(tokenizer, r, args.maxlen) for r in train],
                            args.batch_size, args.seed)
        callbacks = []
        if args.max_steps is not None:
            callbacks.append(StopAfter(args.max_steps))
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=seq2seq_loss)
        history = model.fit(data, epochs=args.epochs, callbacks=callbacks,
                            verbose=1 if sys.stdout.isatty() else 2)
        steps = int(ops.convert_to_numpy(model.optimizer.iterations))
        print(f"trained {steps} steps; final loss {history.history['loss'][-1]:.4f}")

    summary = decode_and_report(args, obj, tokenizer, kb, dev, test, len(train), steps, start,
                                constrained=not args.no_trie, out=args.output_dir)
    if args.also_free:
        summary["free"] = decode_and_report(args, obj, tokenizer, kb, dev, test, len(train),
                                            steps, start, constrained=False,
                                            out=os.path.join(args.output_dir, "free"))
    return summary


if __name__ == "__main__":
    try:
        main()
    except (DataError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
