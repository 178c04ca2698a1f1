"""Encoder forward throughput: bert4keras3 (JAX, TensorFlow) vs transformers (PyTorch).

Usage::

    python scripts/bench.py encoder [--model roformer|bert|albert|electra|nezha]
                                    [--layers 12 --hidden 768 --heads 12 --batch 8
                                     --seq 256 --repeats 5 --rounds 2 --quick]

``--model`` (default ``roformer``) picks the family and its transformers reference
(``RoFormerModel``, ``BertModel``, ``AlbertModel`` with ``--embedding`` (default 128)
factorised embeddings and shared layers, ``ElectraModel``). ``nezha`` has no
transformers class any more (transformers 5 dropped it): its rows are timed next to our
``bert`` at the same shape, loaded from the same ``BertModel`` files, and NEZHA itself
runs on randomly initialised weights (its max abs diff is not applicable).

What it does, in one run:

1. builds ``transformers.RoFormerModel`` (fixed seed, eval mode), ``save_pretrained``
   to a temporary directory and computes the reference ``last_hidden_state`` for a fixed
   batch of random token ids (no padding, segment ids 0);
2. starts one worker subprocess per Keras backend (``KERAS_BACKEND=jax`` /
   ``tensorflow``, ``python scripts/bench_encoder.py --worker ...``), each loading the
   SAME weights with ``build_transformer_model(config.json, hf_dir, model="roformer")``,
   compiling and warming up its forward functions and reporting the max abs difference
   of each one's output against the transformers output;
3. times every implementation in interleaved rounds (``--rounds``; each round runs
   ``--repeats`` forwards of every implementation in turn, so a load change from other
   processes hits all of them alike); tokens/s and the ratios use the median over all
   repeats (the min is printed too);
4. measures the machine's fp32 matmul peak with a NumPy GEMM (2048^3, best of several,
   taken before and after the timings; the larger is used) and reports each
   implementation's achieved FLOP/s as a percentage of it.

Implementations timed (all fp32, inference, output materialised as a NumPy array):

* ``transformers (torch)``: ``RoFormerModel`` under ``torch.inference_mode()``;
* ``bert4keras3 jax: jit(stateless_call)``: ``jax.jit`` of ``model.stateless_call`` with
  the variables passed as arguments (not baked in as constants);
* ``bert4keras3 jax: predict_on_batch``: Keras' own jitted predict step;
* ``bert4keras3 tf: tf.function(jit_compile=True)``: XLA-compiled ``model(x)``;
* ``bert4keras3 tf: tf.function``: plain graph mode ``model(x)``.

Threads: every implementation gets ``--threads`` (default: all cores) intra-op threads:
``torch.set_num_threads``, ``tf.config.threading.set_intra_op_parallelism_threads``,
OpenBLAS/OMP/MKL environment variables for NumPy; XLA:CPU (JAX) sizes its pool to the
usable cores, so with ``--threads`` below the core count everything is pinned to the
first ``--threads`` cores. PyTorch's OpenMP runs with ``OMP_WAIT_POLICY=PASSIVE`` unless
the variable is set (see ``_set_threads``).

FLOPs per forward: ``2 * matmul_params * tokens + 4 * layers * batch * seq^2 * hidden``
(``matmul_params`` = per layer ``4 h^2 + 2 h * intermediate``, biases, norms, embedding
lookups, softmax and GELU not counted).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MARK = "@@BENCH@@"

TORCH = "transformers (torch)"
JAX_VARIANTS = ("jax: jit(stateless_call)", "jax: predict_on_batch")
TF_VARIANTS = ("tf: tf.function(jit_compile=True)", "tf: tf.function")


#: --model -> (transformers config / model class names, the bert4keras3 models timed)
FAMILIES = {
    "roformer": ("RoFormerConfig", "RoFormerModel", ("roformer",)),
    "bert": ("BertConfig", "BertModel", ("bert",)),
    "albert": ("AlbertConfig", "AlbertModel", ("albert",)),
    "electra": ("ElectraConfig", "ElectraModel", ("electra",)),
    "nezha": ("BertConfig", "BertModel", ("bert", "nezha")),
}


def _set_threads(threads):
    """Same intra-op thread count for every implementation (before any import spawns threads).

    With fewer threads than cores the process (and so its workers) is pinned to the first
    ``threads`` cores, which also bounds XLA:CPU's pool (it sizes itself to the usable
    cores). ``OMP_WAIT_POLICY=PASSIVE`` (unless set): PyTorch's OpenMP threads otherwise
    spin at every barrier, which makes it several times slower whenever another process
    shares the cores (measured: 2-layer forward 2.2 s spinning vs 0.5 s passive on a
    loaded 2-core machine); XLA and TensorFlow use Eigen pools and are unaffected.
    """
    cores = os.cpu_count() or 1
    if threads < cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, range(threads))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bench.py encoder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="roformer", choices=sorted(FAMILIES),
                        help="family to time (and its transformers reference)")
    parser.add_argument("--embedding", type=int, default=128,
                        help="ALBERT's factorised embedding size")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--intermediate", type=int, default=None,
                        help="feed-forward size (default 4 * hidden)")
    parser.add_argument("--vocab", type=int, default=12000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed forwards per implementation per round (default 2, quick 3)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved timing rounds (default 4, quick 1)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards after compiling")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backends", default="jax,tensorflow",
                        help="comma-separated Keras backends to run (jax, tensorflow)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="max abs diff vs transformers above which a row is flagged")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 layers, seq 64")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    # internal: worker mode
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.seq = 2, 64
    if args.repeats is None:
        args.repeats = 3 if args.quick else 2
    if args.rounds is None:
        args.rounds = 1 if args.quick else 4
    if args.intermediate is None:
        args.intermediate = 4 * args.hidden
    return args


def forward_flops(layers, hidden, intermediate, batch, seq):
    """FLOPs of one encoder forward (matmuls only)."""
    matmul_params = layers * (4 * hidden * hidden + 2 * hidden * intermediate)
    tokens = batch * seq
    return 2 * matmul_params * tokens + 4 * layers * batch * seq * seq * hidden


def numpy_gemm_peak(n=2048, repeats=7):
    """Best fp32 FLOP/s of an ``n x n @ n x n`` NumPy matmul."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n ** 3 / best


def _timed(fn, count):
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------
# worker (one Keras backend per process)
# ---------------------------------------------------------------------------

def _emit(obj):
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _build_variants(backend, model, threads):
    """``{name: fn(inputs) -> np.ndarray}`` of the compiled forwards for ``backend``."""
    import numpy as np

    variants = {}
    if backend == "jax":
        import jax

        import jax.numpy as jnp

        # own copies: Keras' predict step donates (deletes) the variables' buffers
        trainable = [jnp.array(v.value, copy=True) for v in model.trainable_variables]
        non_trainable = [jnp.array(v.value, copy=True) for v in model.non_trainable_variables]

        @jax.jit
        def forward(tv, ntv, x):
            out, _ = model.stateless_call(tv, ntv, x, training=False)
            return out

        variants[JAX_VARIANTS[0]] = lambda x: np.asarray(forward(trainable, non_trainable, x))
        variants[JAX_VARIANTS[1]] = lambda x: np.asarray(model.predict_on_batch(x))
    elif backend == "tensorflow":
        import tensorflow as tf

        xla = tf.function(lambda x: model(x, training=False), jit_compile=True)
        graph = tf.function(lambda x: model(x, training=False))
        variants[TF_VARIANTS[0]] = lambda x: xla(x).numpy()
        variants[TF_VARIANTS[1]] = lambda x: graph(x).numpy()
    else:
        raise ValueError(f"backend must be 'jax' or 'tensorflow', found {backend!r}")
    return variants


def worker(args):
    """Load the HF checkpoint, compile, check outputs, then serve timing requests on stdin."""
    import numpy as np

    backend = os.environ.get("KERAS_BACKEND", "")
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    sys.path.insert(0, ROOT)
    import keras
    from bert4keras3.models import build_transformer_model

    if keras.backend.backend() != backend:
        raise RuntimeError(f"expected Keras backend {backend!r}, found {keras.backend.backend()!r}")
    work = args.workdir
    data = np.load(os.path.join(work, "inputs.npz"))
    token_ids = data["token_ids"].astype("int32")
    segment_ids = data["segment_ids"].astype("int32")
    reference = data["reference"]
    x = [token_ids, segment_ids]
    if backend == "tensorflow":
        x = [tf.constant(token_ids), tf.constant(segment_ids)]

    config = os.path.join(work, "hf", "config.json")
    variants, load_s, random_init = {}, {}, set()
    for family in FAMILIES[args.model][2]:
        start = time.perf_counter()
        if family == "nezha":  # no transformers NEZHA: random weights, BERT's shape
            with open(config, encoding="utf-8") as f:
                shape = {k: v for k, v in json.load(f).items() if k in (
                    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "type_vocab_size", "hidden_act")}
            model = build_transformer_model(shape, model="nezha")
        else:
            model = build_transformer_model(config, os.path.join(work, "hf"), model=family)
        load_s[family] = time.perf_counter() - start
        for name, fn in _build_variants(backend, model, args.threads).items():
            label = f"{family} {name}" if len(FAMILIES[args.model][2]) > 1 else name
            variants[label] = fn
            if family == "nezha":
                random_init.add(label)
    info = {"backend": backend, "load_s": load_s, "variants": {}}
    for name, fn in variants.items():
        start = time.perf_counter()
        out = fn(x)
        compile_s = time.perf_counter() - start
        diff = (float("nan") if name in random_init
                else float(np.max(np.abs(out.astype(np.float64) - reference))))
        for _ in range(args.warmup):
            fn(x)
        info["variants"][name] = {"compile_s": compile_s, "max_abs_diff": diff}
        print(f"[{backend}] {name}: first call {compile_s:.1f}s, max abs diff {diff:.3g}",
              file=sys.stderr, flush=True)
    _emit(info)

    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "quit":
            break
        if cmd[0] == "time":
            name, count = " ".join(cmd[2:]), int(cmd[1])
            fn = variants[name]
            _emit({"name": name, "times": _timed(lambda: fn(x), count)})
        else:
            _emit({"error": f"unknown command {line.strip()!r}"})


class Worker:
    """A worker subprocess driven over stdin/stdout."""

    def __init__(self, backend, args, workdir):
        self.backend = backend
        self.log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, KERAS_BACKEND=backend)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--workdir", workdir,
               "--threads", str(args.threads), "--warmup", str(args.warmup),
               "--model", args.model]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env, text=True, bufsize=1)
        self.info = self._read()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self.log.seek(0)
        raise RuntimeError(
            f"{self.backend} worker exited ({self.proc.wait()}) without a result; "
            f"its log ends with:\n{self.log.read()[-4000:]}"
        )

    def time(self, name, count):
        self.proc.stdin.write(f"time {count} {name}\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["times"]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------

def _make_reference(args, workdir):
    """Build and save the HF model and inputs; returns ``(model, torch_inputs)``."""
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config_name, model_name, _ = FAMILIES[args.model]
    extra = {}
    if args.model in ("roformer", "electra"):
        extra["embedding_size"] = args.hidden
    elif args.model == "albert":
        extra["embedding_size"] = args.embedding
    config = getattr(transformers, config_name)(
        vocab_size=args.vocab, hidden_size=args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        intermediate_size=args.intermediate, hidden_act="gelu",
        max_position_embeddings=max(1536, args.seq), type_vocab_size=2, **extra,
    )
    model = getattr(transformers, model_name)(config).eval()
    model.save_pretrained(os.path.join(workdir, "hf"))
    rng = np.random.default_rng(args.seed)
    token_ids = rng.integers(1, args.vocab, size=(args.batch, args.seq)).astype("int64")
    segment_ids = np.zeros_like(token_ids)
    inputs = {
        "input_ids": torch.from_numpy(token_ids),
        "token_type_ids": torch.from_numpy(segment_ids),
        "attention_mask": torch.ones_like(torch.from_numpy(token_ids)),
    }
    with torch.inference_mode():
        reference = model(**inputs).last_hidden_state.numpy().astype(np.float64)
    np.savez(os.path.join(workdir, "inputs.npz"), token_ids=token_ids,
             segment_ids=segment_ids, reference=reference)
    return model, inputs


def _fmt_rate(x):
    return f"{x:,.0f}"


def main(argv=None):
    """Run the benchmark and print a Markdown table; returns the rows."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    _set_threads(args.threads)
    if args.worker:
        return worker(args)

    import numpy as np
    import torch

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    tokens = args.batch * args.seq
    flops = forward_flops(args.layers, args.hidden, args.intermediate, args.batch, args.seq)
    print(f"# encoder benchmark: {args.model} {args.layers} layers, hidden {args.hidden}, "
          f"{args.heads} heads, intermediate {args.intermediate}, vocab {args.vocab}; "
          f"batch {args.batch} x seq {args.seq} = {tokens} tokens; fp32 forward; "
          f"{args.threads} threads; {flops / 1e9:.1f} GFLOP/forward", flush=True)

    peaks = [numpy_gemm_peak()]
    with tempfile.TemporaryDirectory(prefix="bench_encoder_") as workdir:
        hf_model, hf_inputs = _make_reference(args, workdir)

        def torch_forward():
            with torch.inference_mode():
                return hf_model(**hf_inputs).last_hidden_state.numpy()

        for _ in range(args.warmup):
            torch_forward()
        diffs = {TORCH: 0.0}
        compile_s = {}
        workers = []
        try:
            for backend in backends:
                w = Worker(backend, args, workdir)
                workers.append(w)
                for name, v in w.info["variants"].items():
                    diffs[name] = v["max_abs_diff"]
                    compile_s[name] = v["compile_s"]
            order = [(TORCH, None)] + [(n, w) for w in workers for n in w.info["variants"]]
            times = {name: [] for name, _ in order}
            for r in range(args.rounds):
                for name, w in order:
                    if w is None:
                        t = _timed(torch_forward, args.repeats)
                    else:
                        t = w.time(name, args.repeats)
                    times[name].extend(t)
                    print(f"round {r + 1}/{args.rounds} {name}: "
                          + " ".join(f"{s * 1e3:.0f}" for s in t) + " ms", flush=True)
        finally:
            for w in workers:
                w.close()
    peaks.append(numpy_gemm_peak())
    peak = max(peaks)

    rows = []
    base = tokens / statistics.median(times[TORCH])
    for name, _ in order:
        med = statistics.median(times[name])
        rate = tokens / med
        label = name if name == TORCH else "bert4keras3 " + name
        rows.append({
            "impl": label,
            "median_s": med,
            "min_s": min(times[name]),
            "tokens_per_s": rate,
            "ratio_vs_transformers": rate / base,
            "gflops": flops / med / 1e9,
            "pct_numpy_peak": 100.0 * flops / med / peak,
            "max_abs_diff": diffs[name],
            "compile_s": compile_s.get(name),
        })

    print()
    print(f"NumPy fp32 GEMM peak (2048^3, best of 7, max of before/after): "
          f"{peak / 1e9:.1f} GFLOP/s (runs: "
          + ", ".join(f"{p / 1e9:.1f}" for p in peaks) + ")")
    print()
    print("| impl | tokens/s | ratio vs transformers | % of NumPy GEMM peak "
          "| max abs diff | median ms/forward | min ms/forward | first call s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        diff = row["max_abs_diff"]
        shown = "n/a (random init)" if diff != diff else f"{diff:.2e}"
        flag = " (MISMATCH)" if diff > args.tolerance else ""
        first = "" if row["compile_s"] is None else f"{row['compile_s']:.1f}"
        print(f"| {row['impl']} | {_fmt_rate(row['tokens_per_s'])} "
              f"| {row['ratio_vs_transformers']:.2f}x | {row['pct_numpy_peak']:.0f}% "
              f"| {shown}{flag} | {row['median_s'] * 1e3:.0f} "
              f"| {row['min_s'] * 1e3:.0f} | {first} |")
    if args.model == "nezha":  # NEZHA next to our BERT, variant by variant
        by_impl = {r["impl"]: r for r in rows}
        print()
        for r in rows:
            if " nezha " in r["impl"]:
                twin = by_impl.get(r["impl"].replace(" nezha ", " bert "))
                if twin:
                    print(f"{r['impl']}: {r['tokens_per_s'] / twin['tokens_per_s']:.2f}x "
                          f"our BERT ({twin['impl']})")
    jax_rows = [r for r in rows if " jax: " in r["impl"]]
    if jax_rows:
        best = max(jax_rows, key=lambda r: r["tokens_per_s"])
        verdict = "met" if best["ratio_vs_transformers"] >= 1.0 else "NOT met"
        print()
        print(f"goal JAX >= 1.0x transformers: {verdict} "
              f"(best JAX: {best['impl']}, {best['ratio_vs_transformers']:.2f}x)")
    bad = [r["impl"] for r in rows if r["max_abs_diff"] > args.tolerance]
    if bad:
        print(f"WARNING: outputs differ from transformers by more than {args.tolerance:g}: {bad}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "peak_flops": peak, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
