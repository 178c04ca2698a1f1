"""T5 generation throughput: bert4keras3 (JAX, TensorFlow) vs transformers MT5 ``generate``.

Usage::

    python scripts/bench.py t5 [--layers 8 --d-model 512 --heads 6 --d-kv 64 --d-ff 1024
                                --vocab 32000 --seq 32 --new 64 --batches 1,8
                                --methods greedy,beam --threads N --quick]

What it does, in one run:

1. builds a random ``transformers.MT5ForConditionalGeneration`` of the mT5-small shape
   (8 + 8 layers, d_model 512, 6 heads of 64, d_ff 1024, gated GELU) with the
   vocabulary cut to 32k (the embedding and an untied ``lm_head`` of 32000 rows, as
   ``keep_tokens`` would leave them), ``save_pretrained`` to a temporary directory;
2. times ``generate`` of transformers (PyTorch, ``torch.inference_mode``, its own
   key/value cache) for every (method, batch): greedy = ``num_beams=1, do_sample=False``,
   beam = ``num_beams=4, length_penalty=1.0, early_stopping=False``; no end id, so
   exactly ``--new`` tokens per row; inputs are ``--seq`` random ids (rows 2k+1 padded to
   half length);
3. runs one worker subprocess per Keras backend (``KERAS_BACKEND=jax`` / ``tensorflow``)
   that loads the SAME files with ``build_transformer_model(..., model="mt5.1.1")``,
   generates once to compile (not timed), then times ``t5.generate`` with the same
   settings; it also records the wall time of every cached-decoder ``step`` call;
4. prints tokens/s (``batch * new / seconds``; best of ``--repeats``), the speed-up over
   transformers, agreement of the greedy tokens with transformers' (rows identical),
   and ms/step averaged over new tokens 2-9 vs 57-64 (token 1 comes from the encoder
   pass in ``start``), whose ratio shows whether the step time stays flat.

keras_hub: ``--keras-hub`` also times ``keras_hub.models.T5Seq2SeqLM.generate`` (JAX) on a
backbone of the same shape with keras_hub's own random weights (see
:func:`keras_hub_worker`); keras_hub is not a dependency of this project (installing it
pulls the full ``tensorflow`` and ``tensorflow-text``), so point ``PYTHONPATH`` at a
separate ``pip install --no-deps -t DIR keras-hub`` to use it.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MARK = "@@BENCH@@"


def _set_threads(threads):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _inputs(args):
    import numpy as np

    rng = np.random.default_rng(0)
    batch = max(args.batches)
    ids = rng.integers(2, args.vocab, (batch, args.seq)).astype("int32")
    ids[1::2, args.seq // 2:] = 0
    return ids


def _jobs(args):
    return [(m, b) for m in args.methods for b in args.batches]


# ---------------------------------------------------------------------------
# worker (one Keras backend)
# ---------------------------------------------------------------------------

def worker(args):
    import numpy as np

    sys.path.insert(0, ROOT)
    import keras
    from bert4keras3.models import build_transformer_model
    from bert4keras3.models.t5 import T5CachedDecoder

    step_times = []
    original_step = T5CachedDecoder.step

    def timed_step(self, state, token_ids, index):
        start = time.perf_counter()
        out = original_step(self, state, token_ids, index)  # returns NumPy logits: synced
        step_times.append((index, time.perf_counter() - start))
        return out

    T5CachedDecoder.step = timed_step
    t5 = build_transformer_model(os.path.join(args.dir, "config.json"), args.dir,
                                 model="mt5.1.1", return_keras_model=False)
    ids = _inputs(args)
    results = {}
    for method, batch in _jobs(args):
        kw = dict(method=method, beam_size=4) if method == "beam" else dict(method=method)
        x = ids[:batch]
        t0 = time.perf_counter()
        out = t5.generate(x, args.new, **kw)  # compiles this bucket
        compile_s = time.perf_counter() - t0
        best = float("inf")
        per_step = {}
        for _ in range(args.repeats):
            del step_times[:]
            t0 = time.perf_counter()
            out = t5.generate(x, args.new, **kw)
            best = min(best, time.perf_counter() - t0)
            for index, seconds in step_times:
                per_step.setdefault(index, []).append(seconds)
        step_ms = {i: 1000 * min(v) for i, v in per_step.items()}
        early = [step_ms[i] for i in range(0, 8) if i in step_ms]  # new tokens 2-9
        late = [step_ms[i] for i in range(args.new - 9, args.new - 1) if i in step_ms]  # 57-64
        results[f"{method}/{batch}"] = {
            "seconds": best, "compile_s": compile_s, "tokens": out,
            "early_ms": sum(early) / max(len(early), 1), "late_ms": sum(late) / max(len(late), 1),
        }
    print(MARK + json.dumps({"backend": keras.backend.backend(), "results": results}))


def keras_hub_worker(args):
    """keras_hub ``T5Seq2SeqLM.generate`` (JAX) on a backbone of the same shape.

    Its weights are keras_hub's random initialisation, not the transformers weights:
    with no stop id every row runs ``--new`` steps, so the work per token does not
    depend on the values. Greedy uses keras_hub's default sampler, beam
    ``BeamSampler(num_beams=4)``.
    """
    import numpy as np

    try:
        import keras_hub
    except ImportError as e:
        print(MARK + json.dumps({"error": f"keras_hub not importable ({e})"}))
        return
    if not hasattr(keras_hub.models, "T5Seq2SeqLM"):
        print(MARK + json.dumps({"error": f"keras_hub {keras_hub.__version__} has no T5Seq2SeqLM"}))
        return
    backbone = keras_hub.models.T5Backbone(
        vocabulary_size=args.vocab, num_layers=args.layers, num_heads=args.heads,
        hidden_dim=args.d_model, intermediate_dim=args.d_ff, key_value_dim=args.d_kv,
        dropout=0.0, activation="gelu", use_gated_activation=True, tie_embedding_weights=False)
    lm = keras_hub.models.T5Seq2SeqLM(backbone=backbone, preprocessor=None)
    ids = _inputs(args)
    results = {}
    for method, batch in _jobs(args):
        sampler = keras_hub.samplers.BeamSampler(num_beams=4) if method == "beam" else "greedy"
        lm.compile(sampler=sampler)
        x = ids[:batch]
        start = np.zeros((batch, args.new + 1), "int32")
        start_mask = np.zeros((batch, args.new + 1), bool)
        start_mask[:, 0] = True
        inputs = {"encoder_token_ids": x, "encoder_padding_mask": x != 0,
                  "decoder_token_ids": start, "decoder_padding_mask": start_mask}
        t0 = time.perf_counter()
        lm.generate(inputs, stop_token_ids=None)  # compiles
        compile_s = time.perf_counter() - t0
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            lm.generate(inputs, stop_token_ids=None)
            best = min(best, time.perf_counter() - t0)
        results[f"{method}/{batch}"] = {"seconds": best, "compile_s": compile_s}
    print(MARK + json.dumps({"version": keras_hub.__version__, "results": results}))


# ---------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------

def reference(args, model):
    import torch

    ids = torch.tensor(_inputs(args), dtype=torch.long)
    results = {}
    for method, batch in _jobs(args):
        kw = dict(max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False,
                  eos_token_id=None, pad_token_id=0, decoder_start_token_id=0)
        if method == "beam":
            kw.update(num_beams=4, length_penalty=1.0, early_stopping=False)
        else:
            kw.update(num_beams=1)
        x = ids[:batch]
        mask = (x != 0).long()
        with torch.inference_mode():
            model.generate(input_ids=x, attention_mask=mask, **kw)  # warm-up
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = model.generate(input_ids=x, attention_mask=mask, **kw)
                best = min(best, time.perf_counter() - t0)
        results[f"{method}/{batch}"] = {"seconds": best, "tokens": out[:, 1:].tolist()}
    return results


def run_worker(args, backend, extra=()):
    env = dict(os.environ, KERAS_BACKEND=backend)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--dir", args.dir]
    cmd += ["--" + k.replace("_", "-") + "=" + (",".join(map(str, v)) if isinstance(v, list)
                                                  else str(v))
            for k, v in vars(args).items() if k not in ("worker", "dir", "quick", "keras_hub",
                                                          "hub_worker")]
    cmd += list(extra)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return {"error": (proc.stderr or proc.stdout)[-2000:]}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--d-model", type=int, default=512)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--d-kv", type=int, default=64)
    p.add_argument("--d-ff", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    p.add_argument("--methods", type=lambda s: s.split(","), default=["greedy", "beam"])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--backends", type=lambda s: s.split(","), default=["jax", "tensorflow"])
    p.add_argument("--keras-hub", action="store_true")
    p.add_argument("--quick", action="store_true", help="2+2 layers, 16 new tokens")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--hub-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.layers, args.new, args.repeats = 2, 16, 1
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    _set_threads(args.threads)
    if args.hub_worker:
        return keras_hub_worker(args)
    if args.worker:
        return worker(args)
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = transformers.MT5Config(
        vocab_size=args.vocab, d_model=args.d_model, d_kv=args.d_kv, d_ff=args.d_ff,
        num_layers=args.layers, num_decoder_layers=args.layers, num_heads=args.heads,
        dropout_rate=0.0, feed_forward_proj="gated-gelu", decoder_start_token_id=0,
        pad_token_id=0, eos_token_id=1)
    model = transformers.MT5ForConditionalGeneration(config).eval()
    model.lm_head.weight = torch.nn.Parameter(torch.randn(args.vocab, args.d_model) * 0.05)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        args.dir = folder
        ref = reference(args, model)
        workers = {b: run_worker(args, b) for b in args.backends}
        hub = run_worker(args, "jax", ["--hub-worker"]) if args.keras_hub else None
    report(args, ref, workers, hub)


def report(args, ref, workers, hub):
    print(f"\nmT5 generate: {args.layers}+{args.layers} layers, d_model {args.d_model}, "
          f"{args.heads} heads x {args.d_kv}, d_ff {args.d_ff}, vocab {args.vocab}, "
          f"input {args.seq} tokens, {args.new} new tokens, {args.threads} threads, "
          f"best of {args.repeats}\n")
    print("| method | batch | implementation | tokens/s | vs transformers | "
          "same tokens as transformers | ms/step tokens 2-9 | ms/step tokens 57-64 | "
          "late/early |")
    print("|---|---|---|---|---|---|---|---|---|")
    for method, batch in _jobs(args):
        key = f"{method}/{batch}"
        base = ref[key]
        base_tps = batch * args.new / base["seconds"]
        print(f"| {method} | {batch} | transformers (torch) | {base_tps:.1f} | 1.00 | - | - | - | - |")
        for backend, out in workers.items():
            if "error" in out:
                print(f"| {method} | {batch} | bert4keras3 {backend} | error: "
                      f"{out['error'].splitlines()[-1] if out['error'] else '?'} |||||||")
                continue
            r = out["results"][key]
            tps = batch * args.new / r["seconds"]
            same = sum(a == b for a, b in zip(r["tokens"], base["tokens"]))
            print(f"| {method} | {batch} | bert4keras3 {backend} | {tps:.1f} | "
                  f"{tps / base_tps:.2f} | {same}/{batch} rows | {r['early_ms']:.2f} | "
                  f"{r['late_ms']:.2f} | {r['late_ms'] / r['early_ms']:.2f} |")
    for backend, out in workers.items():
        if "error" not in out:
            compile_s = {k: round(v["compile_s"], 1) for k, v in out["results"].items()}
            print(f"\n{backend}: first call per bucket (compile + run), seconds: {compile_s}")
    if hub is not None:
        if "error" in hub:
            print(f"\nkeras_hub: {hub['error'].strip().splitlines()[-1]}")
        else:
            print(f"\nkeras_hub {hub['version']} T5Seq2SeqLM (jax, same shape, its own random "
                  "weights):\n")
            print("| method | batch | tokens/s | vs transformers | vs bert4keras3 jax |")
            print("|---|---|---|---|---|")
            for method, batch in _jobs(args):
                key = f"{method}/{batch}"
                tps = batch * args.new / hub["results"][key]["seconds"]
                base = batch * args.new / ref[key]["seconds"]
                ours = workers.get("jax", {}).get("results", {}).get(key)
                vs = f"{tps / (batch * args.new / ours['seconds']):.2f}" if ours else "-"
                print(f"| {method} | {batch} | {tps:.1f} | {tps / base:.2f} | {vs} |")


if __name__ == "__main__":
    main()
