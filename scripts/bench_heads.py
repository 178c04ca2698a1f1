"""Benchmark of the task heads: GlobalPointer / EfficientGlobalPointer vs CRF.

Usage: ``python scripts/bench.py heads [--batch 32] [--seqs 128,256,512] [--types 4]
[--head-size 64] [--hidden 128] [--repeats 5]`` (backend from ``KERAS_BACKEND``).

Prints Markdown tables:

1. decode time of one batch: GlobalPointer threshold decode (``losses.global_pointer_decode``
   on each row of the logits) vs CRF Viterbi (``ConditionalRandomField.decode``, compiled);
   the head outputs are given, only decoding is timed;
2. one training step (``train_on_batch``) of GP, EGP and CRF on the same small encoder;
3. head parameter counts, GP vs EGP, at the benchmark hidden size and at BERT-base (768).
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


def _encoder(keras, vocab, hidden):
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(vocab, hidden)(inp)
    h = keras.layers.Conv1D(hidden, 3, padding="same", activation="relu")(h)
    h = keras.layers.Conv1D(hidden, 3, padding="same", activation="relu")(h)
    return inp, h, keras.ops.not_equal(inp, 0)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench.py heads", description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seqs", default="128,256,512")
    parser.add_argument("--types", type=int, default=4, help="entity types (CRF: 2*types+1 BIO labels)")
    parser.add_argument("--head-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from bert4keras3 import losses as L
    from bert4keras3.layers.heads import ConditionalRandomField, EfficientGlobalPointer, GlobalPointer

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    seqs = [int(s) for s in args.seqs.split(",")]
    b, types, labels = args.batch, args.types, 2 * args.types + 1
    print(f"backend: {keras.backend.backend()}, batch {b}, {types} entity types "
          f"({labels} CRF labels), head_size {args.head_size}, hidden {args.hidden}\n")

    # ---- 1. decoding
    crf = ConditionalRandomField()
    crf.build((None, None, labels))
    viterbi = _compiled(lambda e: crf.decode(e))
    rows = []
    for n in seqs:
        # GP logits as a trained head produces them: few spans above 0, masked lower triangle
        logits = rng.normal(-8.0, 2.0, size=(b, types, n, n)).astype("float32")
        logits[:, :, np.tril_indices(n, -1)[0], np.tril_indices(n, -1)[1]] = -1e12
        emissions = rng.normal(size=(b, n, labels)).astype("float32")

        def gp_decode():
            return [L.global_pointer_decode(row) for row in logits]

        def crf_decode():
            return np.asarray(keras.ops.convert_to_numpy(viterbi(emissions)))

        t_gp = _timeit(gp_decode, args.repeats)
        t_crf = _timeit(crf_decode, args.repeats)
        rows.append(f"| {b} x {n} | {t_gp * 1e3:.1f} | {t_crf * 1e3:.1f} | {t_crf / t_gp:.2f} |")
    print("| decode batch | GlobalPointer threshold (ms) | CRF Viterbi (ms) | CRF / GP |")
    print("|---|---|---|---|")
    print("\n".join(rows) + "\n")

    # ---- 2. training step
    rows = []
    for n in seqs[:2]:
        ids = rng.integers(1, 1000, size=(b, n)).astype("int32")
        ids[:, n - n // 4:] = 0
        y_span = (rng.random((b, types, n, n)) < 1e-3).astype("float32") * np.triu(np.ones((n, n), "float32"))
        y_tags = rng.integers(0, labels, size=(b, n)).astype("int32")
        times = {}
        for name in ("GP", "EGP", "CRF"):
            keras.utils.set_random_seed(0)
            inp, h, mask = _encoder(keras, 1000, args.hidden)
            if name == "CRF":
                head = ConditionalRandomField()
                model = keras.Model(inp, head(keras.layers.Dense(labels)(h), mask=mask))
                model.compile(keras.optimizers.Adam(1e-3), loss=head.sparse_loss)
                y = y_tags
            else:
                cls = GlobalPointer if name == "GP" else EfficientGlobalPointer
                model = keras.Model(inp, cls(types, args.head_size)(h, mask=mask))
                model.compile(keras.optimizers.Adam(1e-3), loss=L.global_pointer_crossentropy)
                y = y_span
            times[name] = _timeit(lambda: model.train_on_batch(ids, y), args.repeats)
        rows.append(
            f"| {b} x {n} | {times['GP'] * 1e3:.1f} | {times['EGP'] * 1e3:.1f} | {times['CRF'] * 1e3:.1f} |"
        )
    print(f"| train step (encoder: embedding + 2 conv, hidden {args.hidden}) | GP (ms) | EGP (ms) | CRF (ms) |")
    print("|---|---|---|---|")
    print("\n".join(rows) + "\n")

    # ---- 3. parameters
    print("| head parameters | GP | EGP | EGP / GP |")
    print("|---|---|---|---|")
    for hidden in (args.hidden, 768):
        gp, egp = GlobalPointer(types, args.head_size), EfficientGlobalPointer(types, args.head_size)
        gp.build((None, None, hidden))
        egp.build((None, None, hidden))
        print(f"| hidden {hidden}, {types} types, head_size {args.head_size} | {gp.count_params():,} | "
              f"{egp.count_params():,} | {egp.count_params() / gp.count_params():.3f} |")


if __name__ == "__main__":
    main()
