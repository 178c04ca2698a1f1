"""Gradient checkpointing (``remat=True``): memory and time of one training step.

Usage::

    python scripts/bench.py remat [--backends torch,jax --models bert,gau_alpha
                                   --layers 6 --hidden 512 --heads 8 --inter 2048
                                   --vocab 8000 --batch 16 --seq 256 --steps 2]

For each (backend, model, remat) a fresh worker process builds the same random encoder
(MLM head, weights from one seed) and runs forward + backward of an MLM loss on the same
batch, no optimizer: PyTorch through ``loss.backward()``, JAX through a jitted
``jax.value_and_grad`` of ``model.stateless_call``. Memory:

* ``peak RSS +MiB``: the growth of the process' peak resident memory over the first
  step (``ru_maxrss`` before / after; the model and its weight gradients are the same in
  both runs, so the difference is the activations kept for the backward pass);
* JAX also: ``memory_analysis().temp_size_in_bytes`` of the compiled step.

Time: the median of ``--steps`` steps after the first. The losses of the two runs must
agree (printed). Ratios are remat / plain of the same backend and model.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MARK = "@@BENCH@@"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", type=lambda s: s.split(","), default=["torch", "jax"])
    p.add_argument("--models", type=lambda s: s.split(","), default=["bert", "gau_alpha"])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--inter", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(args):
    family, remat = args.worker.split(":")
    sys.path.insert(0, ROOT)
    import numpy as np
    import keras
    from keras import ops
    from bert4keras3.models import build_transformer_model

    keras.utils.set_random_seed(0)
    config = dict(vocab_size=args.vocab, hidden_size=args.hidden,
                  num_hidden_layers=args.layers, num_attention_heads=args.heads,
                  intermediate_size=args.inter, max_position_embeddings=args.seq,
                  type_vocab_size=2, hidden_act="gelu")
    if family == "gau_alpha":
        config.update(num_attention_heads=1, attention_key_size=128)
        config.pop("max_position_embeddings")
    model = build_transformer_model(config, model=family, with_mlm=True, remat=remat == "1")
    rng = np.random.default_rng(0)
    model.set_weights([(rng.standard_normal(w.shape) * 0.02).astype("float32")
                       for w in model.weights])
    ids = rng.integers(1, args.vocab, (args.batch, args.seq)).astype("int32")
    x = [ids, np.zeros_like(ids)]

    def loss_of(probs):
        picked = ops.take_along_axis(probs, ops.expand_dims(ops.convert_to_tensor(ids), -1),
                                     axis=-1)
        return -ops.mean(ops.log(picked + 1e-7))

    backend = keras.backend.backend()
    temp = None
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        fixed = [v.value for v in model.non_trainable_variables]

        def loss_fn(trainable, xs):
            probs, _ = model.stateless_call(trainable, fixed, xs, training=True)
            return loss_of(probs)

        compiled = jax.jit(jax.value_and_grad(loss_fn)).lower(trainable, x).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes / 2 ** 20

        def step():
            loss, grads = compiled(trainable, x)
            jax.block_until_ready(grads)
            return float(loss)
    elif backend == "torch":
        def step():
            model.zero_grad()
            loss = loss_of(model(x, training=True))
            loss.backward()
            return float(loss.detach())
    else:
        raise SystemExit(f"bench remat: backend {backend} not measured (use torch or jax)")
    before = peak_mib()
    t0 = time.perf_counter()
    loss = step()
    first = time.perf_counter() - t0
    grown = peak_mib() - before
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(MARK + json.dumps({"loss": loss, "rss": grown, "temp": temp, "first": first,
                             "seconds": statistics.median(times) if times else first}))


def run(args, backend, family, remat):
    cmd = [sys.executable, os.path.abspath(__file__), f"--worker={family}:{int(remat)}"]
    for key in ("layers", "hidden", "heads", "inter", "vocab", "batch", "seq", "steps"):
        cmd.append(f"--{key}={getattr(args, key)}")
    env = dict(os.environ, KERAS_BACKEND=backend)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"{backend} {family} remat={remat}: {proc.stderr[-2000:]}")


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker(args)
    print(f"\nForward + backward of an MLM loss, {args.layers} layers, hidden {args.hidden}, "
          f"batch {args.batch} x {args.seq} tokens, vocab {args.vocab}; fresh process per "
          f"row, time = median of {args.steps} steps after the first\n")
    print("| backend | model | remat | peak RSS +MiB | XLA temp MiB | step s | loss | "
          "RSS ratio | time ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for backend in args.backends:
        for family in args.models:
            plain = run(args, backend, family, False)
            remat = run(args, backend, family, True)
            for name, r in (("no", plain), ("yes", remat)):
                temp = "-" if r["temp"] is None else f"{r['temp']:.0f}"
                print(f"| {backend} | {family} | {name} | {r['rss']:.0f} | {temp} | "
                      f"{r['seconds']:.2f} | {r['loss']:.5f} | "
                      f"{r['rss'] / plain['rss']:.2f} | {r['seconds'] / plain['seconds']:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
