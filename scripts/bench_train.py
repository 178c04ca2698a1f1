"""Training step time of the CLUE baselines vs ``transformers`` on the same machine.

Usage::

    python scripts/bench.py train [--tasks afqmc,cluener] [--batch 32] [--maxlen 128]
                                  [--layers 12] [--hidden 768] [--steps 3]
                                  [--backends jax,tensorflow] [--threads N]

For each task, one optimizer step (forward, backward, AdamW update) on a random batch of
``--batch`` x ``--maxlen`` tokens of a BERT of the given shape (default: BERT-base,
vocabulary 21128):

* bert4keras3: the model the CLUE runner trains (``examples/clue``: ``afqmc`` =
  ``[CLS]`` + Dense over 2 labels, softmax cross-entropy; ``cluener`` = GlobalPointer over
  10 entity types, ZLPR loss), ``model.compile(AdamW)`` + ``train_on_batch`` (XLA on JAX and
  TensorFlow), one worker process per Keras backend;
* transformers (PyTorch): ``BertForSequenceClassification`` (afqmc) and
  ``BertForTokenClassification`` with 21 BIO tags (cluener), ``torch.optim.AdamW``.

The first step of every implementation (compilation, allocation) is not timed; the table
gives the median of ``--steps`` timed steps and the ratio to transformers.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MARK = "@@BENCH@@"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=lambda s: s.split(","), default=["afqmc", "cluener"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--vocab", type=int, default=21128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--backends", type=lambda s: s.split(","), default=["jax", "tensorflow"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _batch(args, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, args.vocab, (args.batch, args.maxlen)).astype("int32")
    ids[:, 0] = 101
    lengths = rng.integers(args.maxlen // 2, args.maxlen + 1, args.batch)
    for row, n in enumerate(lengths):
        ids[row, n - 1] = 102
        ids[row, n:] = 0
    return ids


def _timed(step, steps):
    step()  # compile / warm up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(args):
    import numpy as np

    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "examples", "clue"))
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import keras
    from bert4keras3.models import build_transformer_model
    from clue_tasks import TASKS

    ids = _batch(args)
    results = {}
    for name in args.tasks:
        keras.utils.set_random_seed(0)
        cfg = dict(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                   num_attention_heads=args.heads, intermediate_size=args.intermediate)
        encoder = build_transformer_model(cfg, model="bert")
        task = TASKS[name]()
        model, loss, _ = task.build(encoder)
        model.compile(optimizer=keras.optimizers.AdamW(2e-5), loss=loss)
        x = [ids, np.zeros_like(ids)]
        if name == "cluener":
            y = np.zeros((args.batch, len(task.types), args.maxlen, args.maxlen), "float32")
            y[:, 0, 1, 3] = 1
        else:
            y = np.zeros(args.batch, "int32")
        seconds = _timed(lambda: model.train_on_batch(x, y), args.steps)
        results[name] = {"seconds": seconds, "params": int(model.count_params())}
    print(MARK + json.dumps({"backend": keras.backend.backend(), "results": results}))


def reference(args):
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    ids = torch.tensor(_batch(args), dtype=torch.long)
    mask = (ids != 0).long()
    config = transformers.BertConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=args.intermediate,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    out = {}
    for name in args.tasks:
        torch.manual_seed(0)
        if name == "cluener":
            config.num_labels = 21
            model = transformers.BertForTokenClassification(config)
            labels = torch.zeros_like(ids)
        else:
            config.num_labels = 2
            model = transformers.BertForSequenceClassification(config)
            labels = torch.zeros(len(ids), dtype=torch.long)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)

        def step():
            optimizer.zero_grad()
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()

        out[name] = {"seconds": _timed(step, args.steps),
                     "params": sum(p.numel() for p in model.parameters())}
    return out


def run_worker(args, backend, argv):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker"] + argv,
                          env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return {"error": proc.stderr[-2000:]}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    if args.worker:
        return worker(args)
    ref = reference(args)
    workers = {b: run_worker(args, b, argv) for b in args.backends}
    print(f"\nTraining step (forward + backward + AdamW), batch {args.batch} x {args.maxlen} "
          f"tokens, BERT L={args.layers} H={args.hidden} heads={args.heads} "
          f"ff={args.intermediate} V={args.vocab}, {args.threads} threads, median of "
          f"{args.steps} steps after a warm-up step\n")
    print("| task | implementation | params | s/step | vs transformers |")
    print("|---|---|---:|---:|---:|")
    for name in args.tasks:
        base = ref[name]
        head = "BertForTokenClassification" if name == "cluener" else \
            "BertForSequenceClassification"
        print(f"| {name} | transformers {head} (torch) | {base['params']:,} | "
              f"{base['seconds']:.2f} | 1.00 |")
        for backend, out in workers.items():
            if "error" in out:
                print(f"| {name} | bert4keras3 {backend} | error: "
                      f"{out['error'].strip().splitlines()[-1] if out['error'] else '?'} |||")
                continue
            r = out["results"][name]
            print(f"| {name} | bert4keras3 {backend} (CLUE runner model) | {r['params']:,} | "
                  f"{r['seconds']:.2f} | {base['seconds'] / r['seconds']:.2f} |")


if __name__ == "__main__":
    main()
