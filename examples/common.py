"""Shared plumbing of the example scripts: model directories, data files, CLI, progress.

Used by ``examples/clue/`` and ``examples/kgclue/`` (and any script that takes
``--model-dir``). Nothing here downloads anything: every path is local.

* :func:`model_files` finds the config, vocabulary and checkpoint in a model
  directory (Google release, Hugging Face directory or a ``.weights.h5``);
  :func:`build_model` / :func:`load_tokenizer` build from it.
* :func:`read_json`, :func:`read_json_lines` read data files; every problem is a
  :class:`DataError` naming the file and the line.
* :func:`base_parser` holds the options every baseline shares (DESIGN.md, "Baselines").
* :func:`progress` wraps an iterable with a Keras progress bar.
"""
import argparse
import glob
import json
import os
import random
import sys

import numpy as np

__all__ = [
    "DataError",
    "model_files",
    "build_model",
    "load_tokenizer",
    "read_json",
    "read_json_lines",
    "write_json",
    "write_json_lines",
    "base_parser",
    "set_seed",
    "progress",
]

CONFIG_NAMES = ("bert_config.json", "config.json")
VOCAB_NAMES = ("vocab.txt",)
GOOGLE_PREFIXES = ("bert_model.ckpt", "model.ckpt", "roformer_model.ckpt",
                   "bert4keras_model.ckpt")
HF_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class DataError(ValueError):
    """A malformed data file; the message names the file and line."""


def model_files(model_dir):
    """Return ``{"config", "vocab", "checkpoint"}`` paths found in ``model_dir``.

    Looks for ``bert_config.json`` or ``config.json``; ``vocab.txt``; and a
    checkpoint: a Google checkpoint prefix (``bert_model.ckpt``,
    ``model.ckpt-N``, ... with its ``.index``), Hugging Face files
    (``model.safetensors``, a sharded index, ``pytorch_model.bin``: the
    directory itself is returned) or a ``*.weights.h5``. ``checkpoint`` is
    ``None`` when the directory holds none (random initialisation). Raises
    ``FileNotFoundError`` saying what was expected and what was found.
    """
    if model_dir is None:
        raise FileNotFoundError(
            "no --model-dir given: expected a directory with bert_config.json or config.json, "
            "vocab.txt and a checkpoint (bert_model.ckpt.index, model.safetensors, "
            "pytorch_model.bin or *.weights.h5)"
        )
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"--model-dir {model_dir!r} is not a directory")
    present = sorted(os.listdir(model_dir))

    def first(names):
        for name in names:
            if os.path.exists(os.path.join(model_dir, name)):
                return os.path.join(model_dir, name)
        return None

    config, vocab = first(CONFIG_NAMES), first(VOCAB_NAMES)
    missing = []
    if config is None:
        missing.append(" or ".join(CONFIG_NAMES))
    if vocab is None:
        missing.append("vocab.txt")
    if missing:
        raise FileNotFoundError(
            f"model directory {model_dir!r} lacks {', '.join(missing)}; it holds {present}"
        )
    checkpoint = None
    h5 = sorted(glob.glob(os.path.join(model_dir, "*.weights.h5")))
    indexes = sorted(glob.glob(os.path.join(model_dir, "*.ckpt*.index")))
    if h5:
        checkpoint = h5[0]
    elif any(os.path.exists(os.path.join(model_dir, f)) for f in HF_FILES):
        checkpoint = model_dir
    elif indexes:
        preferred = [p for p in indexes
                     if os.path.basename(p)[:-len(".index")] in GOOGLE_PREFIXES]
        checkpoint = (preferred or indexes)[-1][:-len(".index")]
    return {"config": config, "vocab": vocab, "checkpoint": checkpoint}


def build_model(model_dir, model="bert", require_checkpoint=False, **kwargs):
    """``build_transformer_model`` from a model directory (see :func:`model_files`).

    ``kwargs`` go to ``build_transformer_model`` (``application``, ``with_mlm``,
    ``return_keras_model``, config overrides, ...).
    """
    from bert4keras3.models import build_transformer_model

    files = model_files(model_dir)
    if require_checkpoint and files["checkpoint"] is None:
        raise FileNotFoundError(
            f"model directory {model_dir!r} holds no checkpoint: expected bert_model.ckpt.index "
            f"(Google), model.safetensors / pytorch_model.bin (Hugging Face) or *.weights.h5"
        )
    return build_transformer_model(files["config"], files["checkpoint"], model=model, **kwargs)


def load_tokenizer(model_dir, do_lower_case=True, **kwargs):
    """The WordPiece :class:`~bert4keras3.tokenizers.Tokenizer` of a model directory."""
    from bert4keras3.tokenizers import Tokenizer

    return Tokenizer(model_files(model_dir)["vocab"], do_lower_case=do_lower_case, **kwargs)


def _describe(path, line=None):
    return f"{path}:{line}" if line is not None else str(path)


def read_json(path, kind=(list, dict)):
    """Load a whole JSON file; errors name the file (and the line of a syntax error)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{_describe(path, e.lineno)}: invalid JSON ({e.msg})") from None
    if not isinstance(data, kind):
        raise DataError(f"{path}: expected a JSON {getattr(kind, '__name__', kind)}, "
                        f"found {type(data).__name__}")
    return data


def read_json_lines(path, fields=(), limit=None):
    """Read one JSON object per line (blank lines skipped).

    Returns a list of ``(line_number, object)`` pairs. A line that is not a JSON
    object or lacks one of ``fields`` raises :class:`DataError` with ``path:line``.
    ``limit`` stops after that many records.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"data file not found: {path}")
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if limit is not None and len(records) >= limit:
                break
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{number}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, "
                                f"found {type(obj).__name__}")
            absent = [k for k in fields if k not in obj]
            if absent:
                raise DataError(f"{path}:{number}: missing field(s) {absent}; "
                                f"found {sorted(obj)}")
            records.append((number, obj))
    return records


def read_triples(path):
    """Yield ``(line_number, bytes_read, (subject, predicate, object))`` for each non-blank
    ``subject<TAB>predicate<TAB>object`` line of a KgCLUE ``Knowledge.txt`` (fields
    stripped); a line that is not UTF-8 or not three fields raises a DataError naming the
    file and line."""
    done = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            done += len(raw)
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{number}: not UTF-8 ({e.reason})") from None
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise DataError(f"{path}:{number}: expected 3 tab-separated fields "
                                f"subject<TAB>predicate<TAB>object, found {len(fields)}: "
                                f"{line[:80]!r}")
            yield number, done, tuple(x.strip() for x in fields)


def write_json(path, obj):
    """Write ``obj`` as UTF-8 JSON (non-ASCII kept), creating the directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def write_json_lines(path, objs):
    """Write one JSON object per line (the CLUE submission layout)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for obj in objs:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


def base_parser(description, **defaults):
    """Argument parser with the options every baseline shares.

    ``defaults`` override the defaults of these options (e.g. ``maxlen=256``).
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", required=True, help="directory of the task's official files")
    p.add_argument("--model-dir", default=None,
                   help="config (bert_config.json/config.json) + vocab.txt + checkpoint")
    p.add_argument("--model", default="bert",
                   help="model family: bert, roberta, roformer, roformer_v2, gau_alpha, ...")
    p.add_argument("--output-dir", default="outputs")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None,
                   help="cap on optimizer steps in total (smoke runs)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--maxlen", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--limit", type=int, default=None,
                   help="take only the first N examples of each split")
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(**defaults)
    return p


def set_seed(seed):
    """Seed Python, NumPy and Keras."""
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def progress(iterable, total=None, desc=None):
    """Yield from ``iterable`` while drawing a progress bar on stderr-like stdout."""
    import keras

    if total is None:
        try:
            total = len(iterable)
        except TypeError:
            total = None
    if desc:
        print(desc, file=sys.stdout, flush=True)
    bar = keras.utils.Progbar(total, verbose=1 if sys.stdout.isatty() else 2)
    for i, item in enumerate(iterable, 1):
        yield item
        bar.update(i)
