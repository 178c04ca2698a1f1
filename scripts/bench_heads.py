"""Benchmark of the task heads: GlobalPointer / EfficientGlobalPointer vs CRF.

Usage: ``python scripts/bench.py heads [--batch 32] [--seqs 128,256,512] [--types 4]
[--head-size 64] [--hidden 128] [--max-spans 64] [--repeats 5] [--encoder conv|bert-base]
[--train-batch B] [--train-seqs 64,128] [--skip-decode]`` (backend from ``KERAS_BACKEND``).

Prints Markdown tables:

1. decode time of one batch. Head outputs given: the host NumPy decode
   (``losses.global_pointer_decode`` on each row) vs the compiled batch decode
   (``losses.global_pointer_spans``, the same op for GP and EGP logits) vs CRF Viterbi
   (``ConditionalRandomField.decode``, compiled). From hidden states (head + decode, compiled):
   GP / EGP head + ``global_pointer_spans`` vs Dense + CRF Viterbi;
2. one training step (``train_on_batch``) of GP, EGP and CRF on the same encoder: ``conv``
   (embedding + 2 conv layers, ``--hidden``) or ``bert-base`` (``build_transformer_model``
   with a BERT-base config, 12 layers, hidden 768, random weights);
3. head parameter counts, GP vs EGP, at the benchmark hidden size and at BERT-base (768).

On CPU the host decode pays no device-to-host copy; on an accelerator it would also
copy the ``[batch, types, n, n]`` logits (``4 * 32 * 512 * 512 * 4`` bytes = 128 MiB).
"""

import argparse
import os
import statistics
import time

import numpy as np


def _timeit(fn, repeats):
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _compiled(fn):
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    return fn


BERT_BASE = {
    "vocab_size": 21128, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512,
    "type_vocab_size": 2, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
}


def _encoder(keras, kind, vocab, hidden):
    """``(input, hidden states, mask)``: a small conv encoder or a BERT-base-shaped one."""
    if kind == "bert-base":
        from bert4keras3.models import build_transformer_model

        bert = build_transformer_model(BERT_BASE, model="bert", segment_vocab_size=0)
        inp = bert.inputs[0]
        return inp, bert.outputs[0], keras.ops.not_equal(inp, 0)
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(vocab, hidden)(inp)
    h = keras.layers.Conv1D(hidden, 3, padding="same", activation="relu")(h)
    h = keras.layers.Conv1D(hidden, 3, padding="same", activation="relu")(h)
    return inp, h, keras.ops.not_equal(inp, 0)


def _decode_tables(keras, L, args, rng, seqs, heads):
    """Table 1: decode time of one batch, from the head outputs and from hidden states."""
    crf_cls, gp_cls, egp_cls = heads
    b, types, labels, k = args.batch, args.types, 2 * args.types + 1, args.max_spans
    crf = crf_cls()
    crf.build((None, None, labels))
    viterbi = _compiled(lambda e: crf.decode(e))
    spans = _compiled(lambda x: L.global_pointer_spans(x, max_spans=k))
    dense = keras.layers.Dense(labels)
    dense.build((None, None, args.hidden))
    crf_full = _compiled(lambda h, m: crf.decode(crf(dense(h), mask=m)))
    gp, egp = gp_cls(types, args.head_size), egp_cls(types, args.head_size)
    gp.build((None, None, args.hidden))
    egp.build((None, None, args.hidden))
    # random heads give scores ~ N(0, 1): threshold 4 keeps ~3e-5 of the spans (~10 per row at
    # n=512), like a trained head; the host decode below uses logits with a similar rate
    gp_full = _compiled(lambda h, m: L.global_pointer_spans(gp(h, mask=m), 4.0, max_spans=k))
    egp_full = _compiled(lambda h, m: L.global_pointer_spans(egp(h, mask=m), 4.0, max_spans=k))

    def run(fn, *xs):
        return lambda: [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(fn(*xs))]

    given, full = [], []
    for n in seqs:
        # GP logits as a trained head produces them: few spans above 0, masked lower triangle
        logits = rng.normal(-8.0, 2.0, size=(b, types, n, n)).astype("float32")
        logits[:, :, np.tril_indices(n, -1)[0], np.tril_indices(n, -1)[1]] = -1e12
        emissions = rng.normal(size=(b, n, labels)).astype("float32")
        hidden = rng.normal(size=(b, n, args.hidden)).astype("float32")
        mask = np.arange(n)[None] < rng.integers(n // 2, n + 1, size=(b, 1))
        x_logits, x_emissions = keras.ops.convert_to_tensor(logits), keras.ops.convert_to_tensor(emissions)
        x_hidden, x_mask = keras.ops.convert_to_tensor(hidden), keras.ops.convert_to_tensor(mask)
        found = np.asarray(keras.ops.convert_to_numpy(spans(x_logits)[2]))
        if found.max() > k:
            raise SystemExit(f"benchmark logits overflow max_spans={k} ({found.max()} spans)")

        t_host = _timeit(lambda: [L.global_pointer_decode(row) for row in logits], args.repeats)
        t_dev = _timeit(run(spans, x_logits), args.repeats)
        t_crf = _timeit(run(viterbi, x_emissions), args.repeats)
        given.append(f"| {b} x {n} | {found.mean():.1f} | {t_host * 1e3:.1f} | {t_dev * 1e3:.1f} | "
                     f"{t_crf * 1e3:.1f} | {t_crf / t_dev:.2f} | {t_crf / t_host:.3f} |")
        t_gp = _timeit(run(gp_full, x_hidden, x_mask), args.repeats)
        t_egp = _timeit(run(egp_full, x_hidden, x_mask), args.repeats)
        t_crf_full = _timeit(run(crf_full, x_hidden, x_mask), args.repeats)
        full.append(f"| {b} x {n} | {t_gp * 1e3:.1f} | {t_egp * 1e3:.1f} | {t_crf_full * 1e3:.1f} | "
                    f"{t_crf_full / t_gp:.2f} | {t_crf_full / t_egp:.2f} |")
    print("| decode batch (head outputs given) | spans / row | GP host NumPy (ms) | "
          "GP/EGP compiled (ms) | CRF Viterbi compiled (ms) | CRF / GP compiled | CRF / GP host |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(given) + "\n")
    print(f"| head + decode from hidden {args.hidden} (compiled) | GP (ms) | EGP (ms) | "
          "Dense + CRF Viterbi (ms) | CRF / GP | CRF / EGP |")
    print("|---|---|---|---|---|---|")
    print("\n".join(full) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.py heads", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seqs", default="128,256,512")
    parser.add_argument("--types", type=int, default=4, help="entity types (CRF: 2*types+1 BIO labels)")
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--max-spans", type=int, default=64, help="capacity K of the compiled GP decode")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--encoder", choices=("conv", "bert-base"), default="conv",
                        help="encoder of the training-step table")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch (default --batch)")
    parser.add_argument("--train-seqs", default=None, help="training lengths (default: first two --seqs)")
    parser.add_argument("--skip-decode", action="store_true", help="only the training and parameter tables")
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from bert4keras3 import losses as L
    from bert4keras3.layers.heads import ConditionalRandomField, EfficientGlobalPointer, GlobalPointer

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    seqs = [int(s) for s in args.seqs.split(",")]
    b, types, labels, k = args.batch, args.types, 2 * args.types + 1, args.max_spans
    print(f"backend: {keras.backend.backend()}, batch {b}, {types} entity types "
          f"({labels} CRF labels), head_size {args.head_size}, hidden {args.hidden}, max_spans {k}\n")

    # ---- 1. decoding
    if not args.skip_decode:
        _decode_tables(keras, L, args, rng, seqs, (ConditionalRandomField, GlobalPointer,
                                                   EfficientGlobalPointer))

    # ---- 2. training step
    tb = args.train_batch or b
    train_seqs = [int(s) for s in args.train_seqs.split(",")] if args.train_seqs else seqs[:2]
    vocab = BERT_BASE["vocab_size"] if args.encoder == "bert-base" else 1000
    rows = []
    for n in train_seqs:
        ids = rng.integers(1, vocab, size=(tb, n)).astype("int32")
        ids[:, n - n // 4:] = 0
        y_span = (rng.random((tb, types, n, n)) < 1e-3).astype("float32") * np.triu(np.ones((n, n), "float32"))
        y_tags = rng.integers(0, labels, size=(tb, n)).astype("int32")
        times = {}
        for name in ("GP", "EGP", "CRF"):
            keras.utils.set_random_seed(0)
            inp, h, mask = _encoder(keras, args.encoder, vocab, args.hidden)
            if name == "CRF":
                head = ConditionalRandomField()
                model = keras.Model(inp, head(keras.layers.Dense(labels)(h), mask=mask))
                model.compile(keras.optimizers.Adam(1e-5), loss=head.sparse_loss)
                y = y_tags
            else:
                cls = GlobalPointer if name == "GP" else EfficientGlobalPointer
                model = keras.Model(inp, cls(types, args.head_size)(h, mask=mask))
                model.compile(keras.optimizers.Adam(1e-5), loss=L.global_pointer_crossentropy)
                y = y_span
            times[name] = _timeit(lambda: model.train_on_batch(ids, y), args.repeats)
            del model
        rows.append(
            f"| {tb} x {n} | {times['GP'] * 1e3:.1f} | {times['EGP'] * 1e3:.1f} | {times['CRF'] * 1e3:.1f} "
            f"| {times['GP'] / times['CRF']:.3f} | {times['EGP'] / times['CRF']:.3f} |"
        )
    encoder = ("BERT-base: 12 layers, hidden 768, random weights" if args.encoder == "bert-base"
               else f"embedding + 2 conv, hidden {args.hidden}")
    print(f"| train step (encoder: {encoder}) | GP (ms) | EGP (ms) | CRF (ms) | GP / CRF | EGP / CRF |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows) + "\n")

    # ---- 3. parameters
    print("| head parameters | GP | EGP | EGP / GP |")
    print("|---|---|---|---|")
    for hidden in sorted({args.hidden, 768}):
        gp, egp = GlobalPointer(types, args.head_size), EfficientGlobalPointer(types, args.head_size)
        gp.build((None, None, hidden))
        egp.build((None, None, hidden))
        print(f"| hidden {hidden}, {types} types, head_size {args.head_size} | {gp.count_params():,} | "
              f"{egp.count_params():,} | {egp.count_params() / gp.count_params():.3f} |")


if __name__ == "__main__":
    main()
