"""T5 generation throughput: bert4keras3 (JAX, TensorFlow) vs transformers MT5 ``generate``.

Usage::

    python scripts/bench.py t5 [--layers 8 --d-model 512 --heads 6 --d-kv 64 --d-ff 1024
                                --vocab 32000 --seq 32 --new 64 --batches 1,8
                                --methods greedy,beam --threads N --quick
                                --keras-hub --hub-path DIR]

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
   settings;
4. prints tokens/s (``batch * new / seconds``; best of ``--repeats`` calls in each of
   ``--rounds`` rounds), the speed-up over
   transformers, agreement of the greedy tokens with transformers' (rows identical),
   ms/step (``(T(new) - T(8)) / (new - 8)``: the cost of one more token, prefill
   excluded) and host calls per ``generate`` (1: the whole decode is one program).

Floor (``--floor``, JAX worker): one greedy step at batch 1 must read every decoder weight it
uses and the LM head once (:func:`step_weight_count`: self-attention, the cross-attention
query/output projections, the gated FFN, norms, ``lm_head``; cross-attention keys/values are
computed once at prefill). The worker times an XLA matrix-vector product over a matrix of
exactly that many fp32 numbers (best of 50): XLA's best case for reading those weights once,
which a step built from many smaller products does not beat in practice. The tables give each side's ms/step next to it; when both sit near
the floor, neither can be much faster than the other without reading fewer bytes.

Rounds: this machine's memory bandwidth drifts by up to ~20 % between minutes, so one worker
after the other can hand either side a lucky window. ``--rounds N`` runs the worker sequence
(every backend, then keras_hub) N times, interleaved, and keeps each side's best time.

keras_hub: ``--keras-hub`` also times ``keras_hub.models.T5Seq2SeqLM.generate`` (JAX) on the
SAME weights: keras_hub 0.32 has no transformers converter for T5 (``keras_hub.src.utils.
transformers`` covers t5gemma, not T5/mT5), so :func:`load_hf_into_keras_hub` builds a
``T5Backbone(activation=tanh-GELU, use_gated_activation=True, tie_embedding_weights=False)``
and assigns every variable from the saved ``model.safetensors`` (Linear weights transposed,
``wi_0`` -> ``input_projector`` (the activated branch), ``wi_1`` -> ``gate_projector``,
``lm_head`` -> ``reverse_embeddings`` transposed; neither keras_hub with an untied head nor
transformers 5's mT5 rescales the decoder output by ``d_model**-0.5`` before the head).
The keras_hub worker checks the transfer before timing: teacher-forced decoder logits vs
transformers' (max abs diff) and its greedy tokens vs transformers' for the largest batch
(rows identical); the table also gives rows identical for every timed (method, batch).
keras_hub is not a dependency of this project (installing it pulls the full ``tensorflow``
and ``tensorflow-text``): ``pip install --no-deps -t DIR keras-hub`` and pass
``--hub-path DIR`` (or put DIR on ``PYTHONPATH``).
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


def step_weight_count(args):
    """fp32 numbers one cached decoder step reads: decoder blocks (self-attention q/k/v/o,
    cross-attention q/o, gated FFN, two-three RMS norms), the final norm and the LM head."""
    inner = args.heads * args.d_kv
    block = 6 * args.d_model * inner + 3 * args.d_model * args.d_ff + 3 * args.d_model
    return args.layers * block + args.d_model + args.vocab * args.d_model


def read_floor_ms(args, repeats=50):
    """Best time (ms) of a jitted ``w @ x`` with ``w`` holding :func:`step_weight_count`
    fp32 numbers and ``x`` one column: reading the step's weights once (JAX)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rows = -(-step_weight_count(args) // args.d_model)
    w = jnp.asarray(np.random.default_rng(0).standard_normal((rows, args.d_model), "float32"))
    x = jnp.ones((args.d_model, 1), "float32")
    f = jax.jit(lambda w, x: w @ x)
    f(w, x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(w, x).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 1000 * best


def _step_ms(run, short, new, repeats):
    """(T(new) - T(short)) / (new - short) in ms, each T the best of ``repeats`` calls of
    ``run(n)`` (``run(n)`` generates n tokens; both lengths are compiled first)."""
    times = {}
    for n in (short, new):
        run(n)
        times[n] = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            run(n)
            times[n] = min(times[n], time.perf_counter() - t0)
    return 1000 * (times[new] - times[short]) / max(new - short, 1)


# ---------------------------------------------------------------------------
# worker (one Keras backend)
# ---------------------------------------------------------------------------

def worker(args):
    sys.path.insert(0, ROOT)
    import keras
    from bert4keras3 import generation
    from bert4keras3.models import build_transformer_model

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
        calls = generation.host_calls()
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = t5.generate(x, args.new, **kw)
            best = min(best, time.perf_counter() - t0)
        calls = (generation.host_calls() - calls) / args.repeats
        step_ms = _step_ms(lambda n: t5.generate(x, n, **kw), min(8, args.new - 1), args.new,
                           args.repeats)
        results[f"{method}/{batch}"] = {
            "seconds": best, "compile_s": compile_s, "tokens": out, "host_calls": calls,
            "step_ms": step_ms,
        }
    record = {"backend": keras.backend.backend(), "results": results}
    if args.floor and record["backend"] == "jax":
        record["floor_ms"] = read_floor_ms(args)
    print(MARK + json.dumps(record))


def _gelu_tanh(x):
    """transformers' ``gelu_new`` (mT5's ``gated-gelu``): the tanh approximation."""
    import keras

    return keras.activations.gelu(x, approximate=True)


def load_hf_into_keras_hub(backbone, path):
    """Assign every ``T5Backbone`` variable from a transformers (m)T5 ``model.safetensors``.

    Raises if a variable is left unassigned, assigned twice, gets a tensor of another shape,
    or if a transformers tensor (other than the tied ``embed_tokens`` copies) is left over.
    Returns the number of variables assigned.
    """
    from safetensors.numpy import load_file

    hf = load_file(path)
    used, done = set(), {}

    def put(variable, key, transpose=False):
        value = hf[key].T if transpose else hf[key]
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"{variable.path}: shape {tuple(variable.shape)} vs {key} "
                             f"{value.shape}")
        if id(variable) in done:  # (Variable.path is not unique across layers here)
            raise ValueError(f"{variable.path} assigned twice ({done[id(variable)]}, {key})")
        variable.assign(value)
        used.add(key)
        done[id(variable)] = key

    def attention(layer, prefix):
        for name, short in (("query", "q"), ("key", "k"), ("value", "v"), ("output", "o")):
            put(getattr(layer, name + "_projector").kernel, f"{prefix}.{short}.weight", True)
        if layer.use_relative_attention_bias:
            put(layer.relative_attention_bias, f"{prefix}.relative_attention_bias.weight")

    def feed_forward(layer, prefix):
        put(layer.layer_norm.weight, f"{prefix}.layer_norm.weight")
        put(layer.input_projector.kernel, f"{prefix}.DenseReluDense.wi_0.weight", True)
        put(layer.gate_projector.kernel, f"{prefix}.DenseReluDense.wi_1.weight", True)
        put(layer.output_projector.kernel, f"{prefix}.DenseReluDense.wo.weight", True)

    put(backbone.token_embedding.embeddings, "shared.weight")
    put(backbone.token_embedding.reverse_embeddings, "lm_head.weight", True)
    for i, layer in enumerate(backbone.encoder_transformer_layers):
        p = f"encoder.block.{i}.layer"
        attention(layer.self_attention, f"{p}.0.SelfAttention")
        put(layer.self_attention_layer_norm.weight, f"{p}.0.layer_norm.weight")
        feed_forward(layer, f"{p}.1")
    put(backbone.encoder_layer_norm.weight, "encoder.final_layer_norm.weight")
    for i, layer in enumerate(backbone.decoder_transformer_layers):
        p = f"decoder.block.{i}.layer"
        attention(layer.self_attention, f"{p}.0.SelfAttention")
        put(layer.self_attention_layer_norm.weight, f"{p}.0.layer_norm.weight")
        attention(layer.cross_attention, f"{p}.1.EncDecAttention")
        put(layer.cross_attention_layer_norm.weight, f"{p}.1.layer_norm.weight")
        feed_forward(layer, f"{p}.2")
    put(backbone.decoder_layer_norm.weight, "decoder.final_layer_norm.weight")
    missing = [v.path for v in backbone.weights if id(v) not in done]
    extra = [k for k in hf if k not in used and not k.endswith("embed_tokens.weight")]
    if missing or extra:
        raise ValueError(f"keras_hub variables not assigned: {missing}; "
                         f"transformers tensors not used: {extra}")
    return len(done)


def keras_hub_worker(args):
    """keras_hub ``T5Seq2SeqLM.generate`` (JAX) on the transformers weights.

    Greedy uses keras_hub's ``"greedy"`` sampler, beam ``BeamSampler(num_beams=4)``; no stop
    id, so every row runs ``--new`` steps. Before timing, checks the weight transfer against
    the transformers outputs the parent saved in ``hub_check.npz`` (see module docstring).
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
        dropout=0.0, activation=_gelu_tanh, use_gated_activation=True,
        layer_norm_epsilon=1e-6, tie_embedding_weights=False)
    lm = keras_hub.models.T5Seq2SeqLM(backbone=backbone, preprocessor=None)
    assigned = load_hf_into_keras_hub(backbone, os.path.join(args.dir, "model.safetensors"))

    def request(x, new=args.new):
        start = np.zeros((len(x), new + 1), "int32")
        start_mask = np.zeros((len(x), new + 1), bool)
        start_mask[:, 0] = True
        return {"encoder_token_ids": x, "encoder_padding_mask": x != 0,
                "decoder_token_ids": start, "decoder_padding_mask": start_mask}

    def new_tokens(out):
        return np.asarray(out["decoder_token_ids"])[:, 1:].tolist()

    # --- equality check against transformers (same weights) ---
    ref = np.load(os.path.join(args.dir, "hub_check.npz"))
    x, ref_tokens = ref["input_ids"], ref["greedy_tokens"]
    decoder_in = np.concatenate([np.zeros((len(x), 1), "int32"), ref_tokens[:, :-1]], 1)
    logits = np.asarray(lm.predict_on_batch({
        "encoder_token_ids": x, "encoder_padding_mask": (x != 0).astype("int32"),
        "decoder_token_ids": decoder_in.astype("int32"),
        "decoder_padding_mask": np.ones_like(decoder_in, "int32")}))
    lm.compile(sampler="greedy")
    greedy = np.asarray(new_tokens(lm.generate(request(x), stop_token_ids=None)))
    check = {
        "variables": assigned,
        "logits_max_abs_diff": float(np.abs(logits - ref["logits"]).max()),
        "logits_max_abs": float(np.abs(ref["logits"]).max()),
        "teacher_forced_argmax_same": float((logits.argmax(-1) == ref_tokens).mean()),
        "greedy_rows_same": int((greedy == ref_tokens).all(1).sum()),
        "greedy_rows": len(x),
        "greedy_tokens_same": float((greedy == ref_tokens).mean()),
    }

    ids = _inputs(args)
    results = {}
    for method, batch in _jobs(args):
        sampler = keras_hub.samplers.BeamSampler(num_beams=4) if method == "beam" else "greedy"
        lm.compile(sampler=sampler)
        inputs = request(ids[:batch])
        t0 = time.perf_counter()
        lm.generate(inputs, stop_token_ids=None)  # compiles
        compile_s = time.perf_counter() - t0
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = lm.generate(inputs, stop_token_ids=None)
            best = min(best, time.perf_counter() - t0)
        step_ms = _step_ms(lambda n: lm.generate(request(ids[:batch], n), stop_token_ids=None),
                           min(8, args.new - 1), args.new, args.repeats)
        results[f"{method}/{batch}"] = {"seconds": best, "compile_s": compile_s,
                                        "tokens": new_tokens(out), "step_ms": step_ms}
    print(MARK + json.dumps({"version": keras_hub.__version__, "check": check,
                             "results": results}))


def hub_reference(args, model, ref):
    """Save what the keras_hub worker compares against: transformers' greedy tokens for the
    largest batch and its teacher-forced decoder logits on them (``hub_check.npz``)."""
    import numpy as np
    import torch

    ids = _inputs(args)
    key = f"greedy/{len(ids)}"
    if key in ref:
        tokens = np.asarray(ref[key]["tokens"], "int32")
    else:
        with torch.inference_mode():
            x = torch.tensor(ids, dtype=torch.long)
            tokens = model.generate(
                input_ids=x, attention_mask=(x != 0).long(), max_new_tokens=args.new,
                min_new_tokens=args.new, do_sample=False, num_beams=1, eos_token_id=None,
                pad_token_id=0, decoder_start_token_id=0)[:, 1:].numpy().astype("int32")
    decoder_in = np.concatenate([np.zeros((len(ids), 1), "int32"), tokens[:, :-1]], 1)
    with torch.inference_mode():
        x = torch.tensor(ids, dtype=torch.long)
        logits = model(input_ids=x, attention_mask=(x != 0).long(),
                       decoder_input_ids=torch.tensor(decoder_in, dtype=torch.long)).logits
    np.savez(os.path.join(args.dir, "hub_check.npz"), input_ids=ids, greedy_tokens=tokens,
             logits=logits.numpy())


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


def run_worker(args, backend, extra=(), pythonpath=None):
    env = dict(os.environ, KERAS_BACKEND=backend)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--dir", args.dir]
    cmd += ["--" + k.replace("_", "-") + "=" + (",".join(map(str, v)) if isinstance(v, list)
                                                  else str(v))
            for k, v in vars(args).items() if k not in ("worker", "dir", "quick", "keras_hub", "rounds",
                                                          "hub_worker", "hub_path", "floor")]
    if args.floor:
        cmd.append("--floor")
    cmd += list(extra)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    return {"error": (proc.stderr or proc.stdout)[-2000:]}


def _best(old, new):
    """Merge two worker results, keeping the faster time of every (method, batch)."""
    if old is None or "error" in old:
        return new
    if "error" in new:
        return old
    for key, r in new["results"].items():
        if r["seconds"] < old["results"][key]["seconds"]:
            old["results"][key] = r
    if "floor_ms" in new:
        old["floor_ms"] = min(new["floor_ms"], old.get("floor_ms", float("inf")))
    return old


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
    p.add_argument("--rounds", type=int, default=1,
                   help="run the workers this many times, interleaved; keep each best time")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--backends", type=lambda s: s.split(","), default=["jax", "tensorflow"])
    p.add_argument("--keras-hub", action="store_true")
    p.add_argument("--hub-path", default=os.environ.get("KERAS_HUB_PATH"),
                   help="directory of a `pip install --no-deps -t DIR keras-hub`, put on the "
                        "keras_hub worker's PYTHONPATH only")
    p.add_argument("--floor", action="store_true",
                   help="also time reading one step's weights once (JAX; see module docstring)")
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
        if args.keras_hub:
            hub_reference(args, model, ref)
        workers, hub = {}, None
        for _ in range(args.rounds):
            for b in args.backends:
                workers[b] = _best(workers.get(b), run_worker(args, b))
            if args.keras_hub:
                hub = _best(hub, run_worker(args, "jax", ["--hub-worker"],
                                            pythonpath=args.hub_path))
    report(args, ref, workers, hub)


def report(args, ref, workers, hub):
    print(f"\nmT5 generate: {args.layers}+{args.layers} layers, d_model {args.d_model}, "
          f"{args.heads} heads x {args.d_kv}, d_ff {args.d_ff}, vocab {args.vocab}, "
          f"input {args.seq} tokens, {args.new} new tokens, {args.threads} threads, "
          f"best of {args.repeats} x {args.rounds} round(s)\n")
    print("| method | batch | implementation | tokens/s | vs transformers | "
          "same tokens as transformers | ms/step | host calls per generate |")
    print("|---|---|---|---|---|---|---|---|")
    for method, batch in _jobs(args):
        key = f"{method}/{batch}"
        base = ref[key]
        base_tps = batch * args.new / base["seconds"]
        print(f"| {method} | {batch} | transformers (torch) | {base_tps:.1f} | 1.00 | - | - | - |")
        for backend, out in workers.items():
            if "error" in out:
                print(f"| {method} | {batch} | bert4keras3 {backend} | error: "
                      f"{out['error'].splitlines()[-1] if out['error'] else '?'} |||||||")
                continue
            r = out["results"][key]
            tps = batch * args.new / r["seconds"]
            same = sum(a == b for a, b in zip(r["tokens"], base["tokens"]))
            print(f"| {method} | {batch} | bert4keras3 {backend} | {tps:.1f} | "
                  f"{tps / base_tps:.2f} | {same}/{batch} rows | {r['step_ms']:.2f} | "
                  f"{r['host_calls']:g} |")
    for backend, out in workers.items():
        if "error" not in out:
            compile_s = {k: round(v["compile_s"], 1) for k, v in out["results"].items()}
            print(f"\n{backend}: first call per bucket (compile + run), seconds: {compile_s}")
    floor = workers.get("jax", {}).get("floor_ms")
    if floor is not None:
        mb = 4 * step_weight_count(args) / 1e6
        print(f"\nfloor: one decoder step reads {mb:.1f} MB of fp32 weights; an XLA "
              f"matrix-vector product over that many numbers takes {floor:.2f} ms "
              f"({mb / floor:.1f} GB/s) on this machine")
    if hub is not None:
        if "error" in hub:
            print(f"\nkeras_hub: {hub['error'].strip().splitlines()[-1]}")
        else:
            c = hub["check"]
            print(f"\nkeras_hub {hub['version']} T5Seq2SeqLM (jax), the same weights "
                  f"({c['variables']} variables assigned from the transformers safetensors); "
                  f"check vs transformers on the {c['greedy_rows']} inputs: teacher-forced "
                  f"decoder logits max |diff| {c['logits_max_abs_diff']:.2e} (max |logit| "
                  f"{c['logits_max_abs']:.2f}), argmax same "
                  f"{100 * c['teacher_forced_argmax_same']:.1f}%; "
                  f"greedy {c['greedy_rows_same']}/{c['greedy_rows']} rows identical "
                  f"({100 * c['greedy_tokens_same']:.1f}% of tokens)\n")
            print("| method | batch | tokens/s | vs transformers | vs bert4keras3 jax | "
                  "same tokens as transformers | ms/step | bert4keras3 jax ms/step |")
            print("|---|---|---|---|---|---|---|---|")
            for method, batch in _jobs(args):
                key = f"{method}/{batch}"
                r = hub["results"][key]
                tps = batch * args.new / r["seconds"]
                base = batch * args.new / ref[key]["seconds"]
                ours = workers.get("jax", {}).get("results", {}).get(key)
                vs = f"{tps / (batch * args.new / ours['seconds']):.2f}" if ours else "-"
                ours_step = f"{ours['step_ms']:.2f}" if ours else "-"
                same = sum(a == b for a, b in zip(r["tokens"], ref[key]["tokens"]))
                print(f"| {method} | {batch} | {tps:.1f} | {tps / base:.2f} | {vs} | "
                      f"{same}/{batch} rows | {r['step_ms']:.2f} | {ours_step} |")
            compile_s = {k: round(v["compile_s"], 1) for k, v in hub["results"].items()}
            print(f"\nkeras_hub: first call per bucket (compile + run), seconds: {compile_s}")

if __name__ == "__main__":
    main()
