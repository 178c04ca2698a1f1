"""Google checkpoint reading: the NumPy reader (``bert4keras3.tf_checkpoint``) vs TensorFlow's.

Usage: ``python scripts/bench.py checkpoint [--layers 12] [--hidden 768] [--vocab 21128]
[--repeats 3]``

Writes a BERT-base-shaped checkpoint (with the MLM head; ``save_weights_as_checkpoint``,
Google's variable names, float32) to a temporary directory, then runs each reader in its own
fresh process, interleaved ``--repeats`` times, and prints the best wall times and the peak
resident memory (``ru_maxrss``) of the process:

* ``tf.train.load_checkpoint`` + ``get_tensor`` of every variable (TensorFlow);
* ``CheckpointReader.get`` of every variable (NumPy, TensorFlow not imported);
* ``build_transformer_model(config)`` alone and ``build_transformer_model(config, checkpoint)``
  on JAX: what loading adds to building the model.

Import time is reported apart from reading time.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MARK = "@@BENCH@@"

WORKER = r"""
import json, os, resource, sys, time
sys.path.insert(0, ROOT)
mode, prefix, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
if mode == "tensorflow":
    import tensorflow as tf
    t1 = time.perf_counter()
    reader = tf.train.load_checkpoint(prefix)
    nbytes = sum(reader.get_tensor(n).nbytes for n in reader.get_variable_to_shape_map())
elif mode == "numpy":
    from bert4keras3.tf_checkpoint import CheckpointReader
    t1 = time.perf_counter()
    reader = CheckpointReader(prefix)
    nbytes = sum(reader.get(n).nbytes for n in reader.shapes)
else:
    from bert4keras3.models import build_transformer_model
    t1 = time.perf_counter()
    model = build_transformer_model(config, prefix if mode == "load" else None, model="bert",
                                    with_mlm=True)
    nbytes = 0
t2 = time.perf_counter()
print(MARK + json.dumps({"import_s": t1 - t0, "read_s": t2 - t1, "bytes": nbytes,
                         "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                         "tensorflow_imported": "tensorflow" in sys.modules}))
"""


def _run(mode, prefix, config):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    code = f"ROOT = {ROOT!r}\nMARK = {MARK!r}\n" + WORKER
    out = subprocess.run([sys.executable, "-c", code, mode, prefix, json.dumps(config)],
                         capture_output=True, text=True, env=env)
    for line in out.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"{mode} worker failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench.py checkpoint", description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--vocab", type=int, default=21128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    config = {"vocab_size": args.vocab, "hidden_size": args.hidden,
              "num_hidden_layers": args.layers, "num_attention_heads": args.hidden // 64,
              "intermediate_size": 4 * args.hidden, "hidden_act": "gelu",
              "max_position_embeddings": 512, "type_vocab_size": 2}
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "bert_model.ckpt")
        code = (f"import sys; sys.path.insert(0, {ROOT!r})\n"
                "from bert4keras3.models import build_transformer_model\n"
                f"obj = build_transformer_model({config!r}, model='bert', with_mlm=True, "
                "return_keras_model=False)\n"
                f"obj.save_weights_as_checkpoint({prefix!r})\n")
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                       env=dict(os.environ, KERAS_BACKEND="jax"))
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)) / 2**20
        modes = ("tensorflow", "numpy", "build", "load")
        best = {}
        for _ in range(args.repeats):
            for mode in modes:
                r = _run(mode, prefix, config)
                old = best.get(mode)
                if old is None:
                    best[mode] = r
                else:
                    for key in ("import_s", "read_s", "rss_mb"):
                        old[key] = min(old[key], r[key])
    print(f"\nGoogle checkpoint of BERT ({args.layers} layers, hidden {args.hidden}, vocab "
          f"{args.vocab}, with MLM head): {size:.0f} MiB on disk; best of {args.repeats} fresh "
          "processes each\n")
    print("| reader | import s | read s | read speed-up vs TF | peak RSS MiB | TensorFlow imported |")
    print("|---|---:|---:|---:|---:|---|")
    names = {"tensorflow": "tf.train.load_checkpoint (all variables)",
             "numpy": "bert4keras3 CheckpointReader (all variables)",
             "build": "build_transformer_model, no checkpoint (JAX)",
             "load": "build_transformer_model + checkpoint (JAX)"}
    tf_read = best["tensorflow"]["read_s"]
    for mode in modes:
        r = best[mode]
        ratio = f"{tf_read / r['read_s']:.2f}x" if mode in ("tensorflow", "numpy") else ""
        print(f"| {names[mode]} | {r['import_s']:.2f} | {r['read_s']:.2f} | {ratio} | "
              f"{r['rss_mb']:.0f} | {r['tensorflow_imported']} |")
    return best


if __name__ == "__main__":
    main()
