"""Gradient checkpointing (``remat=True``): memory and time of one training step (JAX).

Usage::

    python scripts/bench.py remat [--layers 6 --hidden 512 --heads 8 --inter 2048
                                   --batch 16 --seq 256 --models bert,gau_alpha --steps 3]

For each model, builds the same random encoder with ``remat=False`` and ``remat=True``
(MLM head, so the loss covers every block), and jit-compiles one SGD step
(forward + ``jax.grad`` + update) through ``model.stateless_call``. Reports XLA's own
account of the compiled program (``memory_analysis()``: temporary buffers, i.e. the
activations kept for the backward pass, and the total with arguments / outputs) and the
median step time, both as ratios remat / plain on identical weights and inputs; the losses
of the two programs must agree (printed).
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=lambda s: s.split(","), default=["bert", "gau_alpha"])
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--inter", type=int, default=2048)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    return p.parse_args(argv)


def step_program(model):
    """A jitted SGD step on the model's stateless call, and its arguments."""
    import jax
    from keras import ops

    def loss_fn(trainable, fixed, x):
        probs, _ = model.stateless_call(trainable, fixed, x, training=True)
        ids = x[0]
        picked = ops.take_along_axis(probs, ops.expand_dims(ids, -1), axis=-1)
        return -ops.mean(ops.log(picked + 1e-7))

    def step(trainable, fixed, x):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, fixed, x)
        return loss, [w - 0.01 * g for w, g in zip(trainable, grads)]

    return jax.jit(step)


def measure(args, family, remat, weights, x):
    import jax
    import numpy as np
    from bert4keras3.models import build_transformer_model

    config = dict(vocab_size=args.vocab, hidden_size=args.hidden,
                  num_hidden_layers=args.layers, num_attention_heads=args.heads,
                  intermediate_size=args.inter, max_position_embeddings=args.seq,
                  type_vocab_size=2, hidden_act="gelu")
    if family == "gau_alpha":
        config.update(num_attention_heads=1, attention_key_size=128)
        config.pop("max_position_embeddings")
    model = build_transformer_model(config, model=family, with_mlm=True, remat=remat)
    if weights is None:
        weights = [np.asarray(w.numpy()) for w in model.weights]
    model.set_weights(weights)
    trainable = [v.value for v in model.trainable_variables]
    fixed = [v.value for v in model.non_trainable_variables]
    program = step_program(model)
    compiled = program.lower(trainable, fixed, x).compile()
    memory = compiled.memory_analysis()
    loss, _ = compiled(trainable, fixed, x)
    jax.block_until_ready(loss)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(trainable, fixed, x))
        times.append(time.perf_counter() - t0)
    total = (memory.temp_size_in_bytes + memory.argument_size_in_bytes
             + memory.output_size_in_bytes - memory.alias_size_in_bytes)
    return weights, {"temp": memory.temp_size_in_bytes, "total": total,
                     "seconds": statistics.median(times), "loss": float(loss)}


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    os.environ["KERAS_BACKEND"] = "jax"
    sys.path.insert(0, ROOT)
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(1, args.vocab, (args.batch, args.seq)).astype("int32")
    x = [ids, np.zeros_like(ids)]
    mib = 2 ** 20
    print(f"\nOne SGD step, JAX, {args.layers} layers, hidden {args.hidden}, batch "
          f"{args.batch} x {args.seq} tokens, MLM loss; median of {args.steps}\n")
    print("| model | remat | temp MiB | total MiB | step s | loss | temp ratio | time ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for family in args.models:
        weights, plain = measure(args, family, False, None, x)
        _, remat = measure(args, family, True, weights, x)
        for name, r in (("no", plain), ("yes", remat)):
            ratio = (f"{r['temp'] / plain['temp']:.2f} | {r['seconds'] / plain['seconds']:.2f}"
                     if r is remat else "1.00 | 1.00")
            print(f"| {family} | {name} | {r['temp'] / mib:.0f} | {r['total'] / mib:.0f} | "
                  f"{r['seconds']:.2f} | {r['loss']:.5f} | {ratio} |")


if __name__ == "__main__":
    main()
