"""Sentence embeddings: BERT-whitening, unsupervised SimCSE, CoSENT and a Sentence-BERT baseline.

    python examples/sentence_embeddings/run.py METHOD --train PATH --test PATH --model-dir DIR
        [--model roformer] [--pooling cls|first-last-avg|last-avg] [--whiten-dim N]
        [--steps N] [--batch-size N] [--learning-rate LR] [--maxlen N] [--seed S]
        [--output OUT.json]
    python examples/sentence_embeddings/run.py --build-cmekg data/cmekg/Knowledge.txt
        [--cmekg-lang zh|en] [--output-dir data/sentence_pairs_cmekg] [--seed 0]

METHOD: none (the pretrained encoder as it is), whitening, simcse, cosent, sbert. Pair
files: ATEC / BQ / LCQMC / PAWSX / STS-B (``text1<TAB>text2<TAB>label``, see data.py).
Prints the test Spearman correlation of cosine and label (and retrieval top-1 accuracy
for 0/1 labels); ``--output`` writes them with the settings and the command as JSON.
See examples/sentence_embeddings/README.md.
"""
import argparse
import os
import shlex
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
for path in (HERE, os.path.dirname(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

import numpy as np  # noqa: E402

from common import load_tokenizer, set_seed, write_json  # noqa: E402
from se_data import TASKS, build_cmekg_pairs, infer_task, read_pairs  # noqa: E402

METHODS = ("none", "whitening", "simcse", "cosent", "sbert")
# bojone's settings: BERT-whitening / SimCSE first-last-avg; CoSENT / SBERT [CLS], Adam
# 2e-5, batch 32 pairs; SimCSE Adam 1e-5, batch 64 sentences (two views each)
DEFAULTS = {
    "none": dict(pooling="first-last-avg"),
    "whitening": dict(pooling="first-last-avg"),
    "simcse": dict(pooling="first-last-avg", batch_size=64, learning_rate=1e-5),
    "cosent": dict(pooling="cls", batch_size=32, learning_rate=2e-5),
    "sbert": dict(pooling="cls", batch_size=32, learning_rate=2e-5),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("method", nargs="?", choices=METHODS)
    p.add_argument("--train", help="training pairs (not needed by 'none')")
    p.add_argument("--test", help="test pairs (scored)")
    p.add_argument("--task", choices=sorted(TASKS), default=None,
                   help="label check of the pair files (default: from the file name)")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--model", default="bert", help="bert, roformer, roformer_v2, nezha, ...")
    p.add_argument("--pooling", choices=("cls", "first-last-avg", "last-avg"), default=None,
                   help="default: first-last-avg for none/whitening/simcse, cls for cosent/sbert")
    p.add_argument("--whiten-dim", type=int, default=None,
                   help="whitening: dimensions kept (default all); other methods: whiten too")
    p.add_argument("--whiten-fit", choices=("train", "all"), default="train",
                   help="vectors the whitening is fitted on: train sentences, or train + test "
                        "(bojone's eval.py fits on all splits)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps (default: one pass over the training data)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--maxlen", type=int, default=64)
    p.add_argument("--dropout-rate", type=float, default=None,
                   help="override the config's dropout (SimCSE: bojone tried 0.1 and 0.3)")
    p.add_argument("--limit", type=int, default=None, help="first N pairs of each file")
    p.add_argument("--skip-malformed", action="store_true",
                   help="skip malformed lines (counted on stderr) instead of stopping")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed (default 42; --build-cmekg: 0)")
    p.add_argument("--output", default=None, help="write the result as JSON here")
    p.add_argument("--build-cmekg", metavar="KNOWLEDGE_TXT", default=None,
                   help="build the CMeKG alias-pair set from this Knowledge.txt and exit")
    p.add_argument("--cmekg-lang", choices=("zh", "en"), default="zh")
    p.add_argument("--test-fraction", type=float, default=None,
                   help="--build-cmekg: share of subjects in test (default 0.2 zh, 0.5 en)")
    p.add_argument("--output-dir", default=None,
                   help="--build-cmekg: where train.txt / test.txt / stats.json go "
                        "(default data/sentence_pairs_cmekg, _en for English)")
    args = p.parse_args(argv)
    if args.build_cmekg is None:
        if args.method is None:
            p.error("give a METHOD (none, whitening, simcse, cosent, sbert) or --build-cmekg")
        if args.test is None:
            p.error("--test PATH is required")
        if args.method != "none" and args.train is None:
            p.error(f"{args.method} needs --train PATH")
        if args.seed is None:
            args.seed = 42
        for key, value in DEFAULTS[args.method].items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    return args


def build(args, log=print):
    """Build the CMeKG pair set; returns its statistics."""
    lang = args.cmekg_lang
    out = args.output_dir or ("data/sentence_pairs_cmekg" + ("_en" if lang == "en" else ""))
    fraction = args.test_fraction or (0.2 if lang == "zh" else 0.5)
    seed = 0 if args.seed is None else args.seed
    stats = build_cmekg_pairs(args.build_cmekg, out, lang=lang, seed=seed, test_fraction=fraction)
    log(f"wrote {out}/train.txt ({stats['train']['pairs']} pairs, {stats['train']['subjects']} "
        f"subjects), {out}/test.txt ({stats['test']['pairs']} pairs, "
        f"{stats['test']['subjects']} subjects), {out}/stats.json")
    return stats


def run(args, log=print, argv=None):
    """Train (per METHOD), encode the test pairs and score them; returns the result dict."""
    import keras

    from se_methods import (SentenceEncoder, apply_whitening, build_encoder, compute_whitening,
                         evaluate, train_cosent, train_sbert, train_simcse)

    start = time.time()
    set_seed(args.seed)
    test = read_pairs(args.test, args.task, args.limit, args.skip_malformed)
    train = (read_pairs(args.train, args.task, args.limit, args.skip_malformed)
             if args.train else [])
    task = args.task or infer_task(args.test)
    kwargs = {} if args.dropout_rate is None else {"dropout_rate": args.dropout_rate}
    encoder = build_encoder(args.model_dir, model=args.model, pooling=args.pooling, **kwargs)
    tokenizer = load_tokenizer(args.model_dir, do_lower_case=True)
    enc = SentenceEncoder(encoder, tokenizer, maxlen=args.maxlen)
    train_texts = sorted({t for a, b, _ in train for t in (a, b)})

    history, steps = [], 0
    t0 = time.time()
    if args.method in ("simcse", "cosent", "sbert"):
        n = len(train_texts) if args.method == "simcse" else len(train)
        if args.method == "simcse":
            n = min(n, 10000)  # bojone's SimCSE: one pass over at most 10,000 sentences
        steps = args.steps or max(1, n // args.batch_size)
        log(f"{args.method}: {steps} steps, batch {args.batch_size}, lr {args.learning_rate}")
        common = dict(steps=steps, batch_size=args.batch_size,
                      learning_rate=args.learning_rate, seed=args.seed, log=log)
        if args.method == "simcse":
            history = train_simcse(enc, train_texts, **common)
        elif args.method == "cosent":
            history = train_cosent(enc, train, **common)
        else:
            history, _ = train_sbert(enc, train, task=task, **common)
    train_seconds = time.time() - t0

    t0 = time.time()
    test_texts = sorted({t for a, b, _ in test for t in (a, b)})
    vectors = dict(zip(test_texts, enc.encode(test_texts)))
    whiten_dim = None
    if args.method == "whitening" or args.whiten_dim is not None:
        fit_texts = list(train_texts)
        if args.whiten_fit == "all":
            fit_texts = sorted(set(fit_texts) | set(test_texts))
        fit = enc.encode(fit_texts)
        mu, kernel = compute_whitening(fit, args.whiten_dim)
        whiten_dim = kernel.shape[1]
        vectors = dict(zip(test_texts, apply_whitening(np.stack([vectors[t] for t in test_texts]),
                                                       mu, kernel)))
    encode_seconds = time.time() - t0
    scores = evaluate(test, vectors)

    result = {
        "method": args.method, "task": task, "train": args.train, "test": args.test,
        "model_dir": args.model_dir, "model": args.model, "pooling": args.pooling,
        "maxlen": args.maxlen, "seed": args.seed, "backend": keras.backend.backend(),
        "steps": steps, "batch_size": args.batch_size if steps else None,
        "learning_rate": args.learning_rate if steps else None,
        "whiten_dim": whiten_dim, "whiten_fit": args.whiten_fit if whiten_dim else None,
        "train_pairs": len(train), "test_pairs": len(test),
        **scores,
        "first_loss": history[0] if history else None,
        "last_loss": float(np.mean(history[-10:])) if history else None,
        "train_seconds": round(train_seconds, 1), "encode_seconds": round(encode_seconds, 1),
        "seconds": round(time.time() - start, 1),
        "command": "python examples/sentence_embeddings/run.py " + shlex.join(
            sys.argv[1:] if argv is None else argv),
    }
    line = f"test spearman: {scores['spearman']:.4f}"
    if scores["retrieval_top1"] is not None:
        line += (f"  retrieval top-1: {scores['retrieval_top1']:.4f} "
                 f"({scores['retrieval_queries']} queries)")
    log(line + f"  [{args.method}, {result['seconds']} s]")
    if args.output:
        write_json(args.output, result)
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.build_cmekg is not None:
        return build(args)
    return run(args, argv=argv)


if __name__ == "__main__":
    main()
