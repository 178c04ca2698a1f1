"""Fused attention (``keras.ops.dot_product_attention``) vs MultiHeadAttention's own path.

Usage::

    python scripts/bench.py attention [--backends jax,tensorflow,torch] [--batch 8]
                                      [--seqs 128,512] [--heads 12] [--size 64] [--repeats 5]

One worker process per Keras backend times the attention core alone on projected
``[batch, seq, heads, size]`` queries / keys / values with a padding mask (odd rows half
padded): this layer's path (``multihead_scores`` -> masked softmax -> ``multihead_values``)
and the fused op, forward and forward + backward (gradients of a squared-output loss
w.r.t. q, k, v), compiled on JAX (``jax.jit``) and TensorFlow (``tf.function(jit_compile=
True)``), eager on PyTorch. Prints best-of times, the ratio plain / fused (> 1: fused is
faster) and the largest output difference. ``MultiHeadAttention(fused_attention=None)``
turns the fused path on where this table shows it faster.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MARK = "@@BENCH@@"


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backends", type=lambda s: s.split(","),
                   default=["jax", "tensorflow", "torch"])
    p.add_argument("--seqs", type=lambda s: [int(x) for x in s.split(",")], default=[128, 512])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args):
    sys.path.insert(0, ROOT)
    import numpy as np
    import keras
    from keras import ops
    from bert4keras3 import backend as B

    backend = keras.backend.backend()
    scale = args.size ** -0.5

    def plain(q, k, v, mask):
        weights = B.attention_normalize(B.multihead_scores(q, k) * scale, mask)
        return B.multihead_values(weights, v)

    def fused(q, k, v, mask):
        return ops.dot_product_attention(q, k, v, mask=mask, scale=scale)

    def with_grad(f):
        if backend == "jax":
            import jax

            return jax.jit(jax.grad(lambda q, k, v, m: ops.sum(ops.square(f(q, k, v, m))),
                                    argnums=(0, 1, 2)))
        if backend == "tensorflow":
            import tensorflow as tf

            def grads(q, k, v, m):
                with tf.GradientTape() as tape:
                    tape.watch([q, k, v])
                    y = ops.sum(ops.square(f(q, k, v, m)))
                return tape.gradient(y, [q, k, v])

            return tf.function(grads, jit_compile=True)

        def grads(q, k, v, m):
            q, k, v = [t.detach().requires_grad_(True) for t in (q, k, v)]
            ops.sum(ops.square(f(q, k, v, m))).backward()
            return q.grad, k.grad, v.grad

        return grads

    def forward(f):
        if backend == "jax":
            import jax

            return jax.jit(f)
        if backend == "tensorflow":
            import tensorflow as tf

            return tf.function(f, jit_compile=True)
        import torch

        def run(*a):
            with torch.no_grad():
                return f(*a)

        return run

    def best(fn, args_):
        ops.convert_to_numpy(keras.tree.flatten(fn(*args_))[0])  # compile / warm up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ops.convert_to_numpy(keras.tree.flatten(fn(*args_))[0])
            times.append(time.perf_counter() - t0)
        return min(times)

    rng = np.random.default_rng(0)
    results = {}
    for seq in args.seqs:
        shape = (args.batch, seq, args.heads, args.size)
        q, k, v = (ops.convert_to_tensor(rng.standard_normal(shape).astype("float32"))
                   for _ in range(3))
        mask = np.ones((args.batch, 1, 1, seq), bool)
        mask[1::2, ..., seq // 2:] = False
        mask = ops.convert_to_tensor(mask)
        inputs = (q, k, v, mask)
        diff = float(np.abs(ops.convert_to_numpy(plain(*inputs))
                            - ops.convert_to_numpy(fused(*inputs))).max())
        results[seq] = {"diff": diff}
        for mode, wrap in (("forward", forward), ("backward", with_grad)):
            results[seq][mode] = {name: best(wrap(f), inputs)
                                  for name, f in (("plain", plain), ("fused", fused))}
    print(MARK + json.dumps(results))


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.worker:
        return worker(args)
    print(f"\nAttention core, batch {args.batch}, {args.heads} heads x {args.size}, odd rows "
          f"half padded; best of {args.repeats}\n")
    print("| backend | seq | pass | plain ms | fused ms | plain / fused | max diff |")
    print("|---|---|---|---|---|---|---|")
    for backend in args.backends:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker"] + [
            f"--{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k not in ("worker", "backends")]
        proc = subprocess.run(cmd, env=dict(os.environ, KERAS_BACKEND=backend),
                              capture_output=True, text=True, cwd=ROOT)
        lines = [l for l in proc.stdout.splitlines() if l.startswith(MARK)]
        if not lines:
            print(f"| {backend} | error: {proc.stderr.strip().splitlines()[-1:]} ||||||")
            continue
        for seq, r in json.loads(lines[0][len(MARK):]).items():
            for mode in ("forward", "backward"):
                t = r[mode]
                print(f"| {backend} | {seq} | {mode} | {1000 * t['plain']:.1f} | "
                      f"{1000 * t['fused']:.1f} | {t['plain'] / t['fused']:.2f} | "
                      f"{r['diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
