"""UniLM generation: cached ``generate`` vs the uncached bert4keras-style decode; GAU-alpha vs
RoFormer encoder throughput.

Usage::

    python scripts/bench.py unilm [--layers 12 --hidden 768 --heads 12 --intermediate 3072
                                   --vocab 12000 --batch 8 --source 64 --new 64
                                   --encoder-seq 512 --encoder-batch 2 --repeats 3 --quick]

Runs on the current Keras backend (``KERAS_BACKEND``, default JAX), CPU or accelerator.

Part 1, one run, same model and inputs (a UniLM RoFormer of the given shape, random
weights, ``with_mlm=True``; ``batch`` random sources of ``source`` tokens, segment 0):

* ``cached generate``: :func:`bert4keras3.generation.generate` with
  :class:`bert4keras3.models.base.LMCachedDecoder` (key/value cache; prefill
  and the whole search loop compiled as one program); greedy, ``new`` tokens; timed after
  a warm-up call (compilation excluded);
* ``uncached (full recompute)``: the bert4keras decoding scheme: every step re-runs the
  whole model on ``source + generated`` (segment ids 0 / 1) and takes the last position's
  distribution. The batch is right-padded to the final width ``source + new`` so the model
  compiles once (padding is masked out, so the results are the same); timed after a warm-up.

Both produce ``batch * new`` tokens; the table gives tokens/s and the speed-up, and checks
that both decoded the same tokens.

Part 2: encoder forward throughput at ``encoder-seq`` tokens of GAU-alpha (24 GAU layers,
hidden 768, e=1536, s=128: the released base shape) vs RoFormer (the part-1 shape), jitted
``predict_on_batch``, median of ``repeats``.
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import numpy as np  # noqa: E402


def parse(argv):
    p = argparse.ArgumentParser(prog="bench.py unilm")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--vocab", type=int, default=12000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--source", type=int, default=64)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--encoder-seq", type=int, default=512)
    p.add_argument("--encoder-batch", type=int, default=2)
    p.add_argument("--gau-layers", type=int, default=24)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-encoder", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny shapes (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.hidden, args.heads, args.intermediate = 2, 64, 4, 128
        args.vocab, args.source, args.new, args.encoder_seq = 500, 16, 8, 64
        args.gau_layers, args.repeats = 4, 2
    return args


def init_weights(model, seed=0):
    """Random weights that make the decode depend on the context (not one repeated id)."""
    rng = np.random.RandomState(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        if len(shape) == 2 and "Embedding" in w.path:
            value = rng.randn(*shape)
        elif len(shape) == 2:
            value = 2.0 * rng.randn(*shape) / np.sqrt(shape[0])
        elif w.path.endswith("gamma"):
            value = 1.0 + 0.1 * rng.randn(*shape)
        else:
            value = 0.05 * rng.randn(*shape)
        w.assign(value.astype("float32"))


def uncached_decode(model, tokens, new_tokens):
    """bert4keras-style greedy decode: the whole sequence is recomputed at every step."""
    from keras import ops

    batch, source = tokens.shape
    width = source + new_tokens
    ids = np.zeros((batch, width), "int32")
    seg = np.zeros((batch, width), "int32")
    ids[:, :source] = tokens
    out = []
    for t in range(new_tokens):
        probs = np.asarray(ops.convert_to_numpy(model.predict_on_batch([ids, seg])))
        nxt = probs[:, source + t - 1].argmax(-1).astype("int32")
        out.append(nxt)
        ids[:, source + t] = nxt
        seg[:, source + t] = 1
    return np.stack(out, 1).tolist()


def timed(fn, repeats=1):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv=None):
    import keras

    from bert4keras3.models import build_transformer_model

    args = parse(sys.argv[1:] if argv is None else argv)
    backend = keras.backend.backend()
    cfg = dict(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
               num_attention_heads=args.heads, intermediate_size=args.intermediate)
    obj = build_transformer_model(cfg, model="roformer", application="unilm", with_mlm=True,
                                  return_keras_model=False)
    init_weights(obj.model)
    rng = np.random.RandomState(1)
    tokens = rng.randint(1, args.vocab, size=(args.batch, args.source)).astype("int32")
    inputs = [tokens, np.zeros_like(tokens)]

    def cached():
        return obj.generate(inputs, args.new)

    start = time.perf_counter()
    cached()  # compile prefill + step
    compile_cached = time.perf_counter() - start
    t_cached, out_cached = timed(cached, args.repeats)
    start = time.perf_counter()
    obj.model.predict_on_batch([np.zeros((args.batch, args.source + args.new), "int32")] * 2)
    compile_full = time.perf_counter() - start
    t_full, out_full = timed(lambda: uncached_decode(obj.model, tokens, args.new), 1)
    n = args.batch * args.new
    same = out_cached == out_full
    print(f"\n### UniLM generation ({backend}; RoFormer L={args.layers} H={args.hidden} "
          f"heads={args.heads} ff={args.intermediate} V={args.vocab}; batch {args.batch}, "
          f"source {args.source}, {args.new} new tokens, greedy)\n")
    print("| decode | seconds | tokens/s | speed-up |")
    print("|---|---|---|---|")
    print(f"| uncached (full recompute each step) | {t_full:.2f} | {n / t_full:.1f} | 1.0x |")
    print(f"| cached generate (KV cache, compiled step) | {t_cached:.2f} | {n / t_cached:.1f} | "
          f"{t_full / t_cached:.1f}x |")
    print(f"\nsame tokens: {same}; warm-up (compile) cached {compile_cached:.1f}s, "
          f"full model {compile_full:.1f}s")
    if args.skip_encoder:
        return 0

    rows = []
    x = rng.randint(1, args.vocab, size=(args.encoder_batch, args.encoder_seq)).astype("int32")
    s = np.zeros_like(x)
    encoders = [
        ("RoFormer", "roformer", cfg),
        ("GAU-alpha", "gau_alpha", dict(vocab_size=args.vocab, hidden_size=args.hidden,
                                        num_hidden_layers=args.gau_layers,
                                        intermediate_size=2 * args.hidden,
                                        attention_key_size=128 if not args.quick else 16)),
    ]
    for label, name, config in encoders:
        model = build_transformer_model(config, model=name)
        init_weights(model)
        model.predict_on_batch([x, s])  # compile
        t, _ = timed(lambda m=model: m.predict_on_batch([x, s]), args.repeats)
        params = sum(int(np.prod(w.shape)) for w in model.weights)
        rows.append((label, config["num_hidden_layers"], params, t, x.size / t))
    print(f"\n### Encoder throughput ({backend}; batch {args.encoder_batch} x "
          f"{args.encoder_seq} tokens, median of {args.repeats})\n")
    print("| model | layers | parameters | seconds / batch | tokens/s | vs RoFormer |")
    print("|---|---|---|---|---|---|")
    for label, layers, params, t, tps in rows:
        print(f"| {label} | {layers} | {params / 1e6:.1f}M | {t:.3f} | {tps:.0f} | "
              f"{tps / rows[0][4]:.2f}x |")
    return 0


if __name__ == "__main__":
    main()
