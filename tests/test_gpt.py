"""The GPT family (``gpt``, ``gpt2``, ``gpt2_ml``), checked against independent references.

* ``gpt`` / ``gpt2``: Hugging Face ``OpenAIGPTLMHeadModel`` / ``GPT2LMHeadModel`` (PyTorch,
  CPU) on random weights written by ``save_pretrained``; the same weights written by a real
  ``tf.compat.v1`` Saver under bert4keras' GPT names / OpenAI's released GPT-2 names (fused
  ``c_attn`` as one variable, Adam slots and ``global_step`` present).
* ``gpt2_ml``: a NumPy transcription of GPT2-ML's (Grover's) equations, the weights written
  under its ``newslm/...`` names.

Tiny shapes: vocab 60, hidden 32, 2 layers, 4 heads.
"""
import json
import math
import os
import re
import warnings

import numpy as np
import pytest

import keras
from keras import ops

import tensorflow as tf
import torch
import transformers

from conftest import uncached_greedy, write_tf1_checkpoint
from bert4keras3.checkpoints import CheckpointError, Part
from bert4keras3.models import build_transformer_model

VOCAB, HIDDEN, LAYERS, HEADS, MAXPOS = 60, 32, 2, 4, 32
PROB_ATOL, HIDDEN_ATOL = 1e-5, 1e-4


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def randomize(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if ".ln_" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith(("wte.weight", "tokens_embed.weight")):
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.2 * noise)
    return model.eval()


def batch(lengths=(9, 5, 7), maxlen=9, seed=0):
    rng = np.random.RandomState(seed)
    tokens = np.zeros((len(lengths), maxlen), "int32")
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.randint(1, VOCAB, size=n)
    return tokens


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def run(model, *inputs):
    inputs = [ops.convert_to_tensor(x) for x in inputs]
    return to_numpy(model(inputs[0] if len(inputs) == 1 else inputs, training=False))


def max_diff(a, b, tokens):
    keep = tokens != 0
    return float(np.max(np.abs(np.asarray(a)[keep] - np.asarray(b)[keep])))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def read_tf_checkpoint(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if "adam" not in k and k != "global_step"}


def state_arrays(model):
    return {k: v.detach().numpy().astype("float32") for k, v in model.state_dict().items()}


def openai_gpt2_names(state):
    """HF GPT-2 state -> OpenAI's released TF names (Conv1D kernels as ``[1, in, out]``)."""
    out = {"model/wte": state["transformer.wte.weight"],
           "model/wpe": state["transformer.wpe.weight"],
           "model/ln_f/g": state["transformer.ln_f.weight"],
           "model/ln_f/b": state["transformer.ln_f.bias"]}
    for i in range(LAYERS):
        h = f"transformer.h.{i}."
        for sub in ("ln_1", "ln_2"):
            out[f"model/h{i}/{sub}/g"] = state[h + sub + ".weight"]
            out[f"model/h{i}/{sub}/b"] = state[h + sub + ".bias"]
        for sub in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            name = f"model/h{i}/" + sub.replace(".", "/")
            out[name + "/w"] = state[h + sub + ".weight"][None]
            out[name + "/b"] = state[h + sub + ".bias"]
    return out


def bert4keras_gpt_names(state):
    """HF OpenAI GPT state -> bert4keras' GPT names (``gpt/...``, q/k/v split)."""
    out = {"gpt/embeddings/word_embeddings": state["transformer.tokens_embed.weight"],
           "gpt/embeddings/position_embeddings": state["transformer.positions_embed.weight"]}
    for i in range(LAYERS):
        h, g = f"transformer.h.{i}.", f"gpt/transformer/layer_{i}/"
        w, b = state[h + "attn.c_attn.weight"], state[h + "attn.c_attn.bias"]
        for k, name in enumerate(("query", "key", "value")):
            out[f"{g}attention/self/{name}/kernel"] = w[:, k * HIDDEN:(k + 1) * HIDDEN]
            out[f"{g}attention/self/{name}/bias"] = b[k * HIDDEN:(k + 1) * HIDDEN]
        for sub, name in (("attn.c_proj", "attention/output/dense"),
                          ("mlp.c_fc", "intermediate/dense"), ("mlp.c_proj", "output/dense")):
            out[f"{g}{name}/kernel"] = state[h + sub + ".weight"]
            out[f"{g}{name}/bias"] = state[h + sub + ".bias"]
        for sub, name in (("ln_1", "attention/output/LayerNorm"), ("ln_2", "output/LayerNorm")):
            out[f"{g}{name}/gamma"] = state[h + sub + ".weight"]
            out[f"{g}{name}/beta"] = state[h + sub + ".bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


# ---------------------------------------------------------------------------
# fixtures: one set of files per module
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2")
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=MAXPOS, n_embd=HIDDEN,
                                     n_layer=LAYERS, n_head=HEADS, resid_pdrop=0.0,
                                     embd_pdrop=0.0, attn_pdrop=0.0)
    model = randomize(transformers.GPT2LMHeadModel(config), seed=1)
    model.save_pretrained(str(root / "hf"))
    with open(root / "hparams.json", "w") as f:  # OpenAI's release
        json.dump({"n_vocab": VOCAB, "n_ctx": MAXPOS, "n_embd": HIDDEN, "n_head": HEADS,
                   "n_layer": LAYERS}, f)
    arrays = openai_gpt2_names(state_arrays(model))
    write_tf1_checkpoint(str(root / "openai" / "model.ckpt"), arrays)
    return {"root": root, "hf_model": model, "hf": str(root / "hf"), "arrays": arrays,
            "config": str(root / "hparams.json"), "ckpt": str(root / "openai" / "model.ckpt")}


@pytest.fixture(scope="module")
def gpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt")
    config = transformers.OpenAIGPTConfig(vocab_size=VOCAB, n_positions=MAXPOS, n_embd=HIDDEN,
                                          n_layer=LAYERS, n_head=HEADS, resid_pdrop=0.0,
                                          embd_pdrop=0.0, attn_pdrop=0.0)
    model = randomize(transformers.OpenAIGPTLMHeadModel(config), seed=2)
    model.save_pretrained(str(root / "hf"))
    b4k_config = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
                  "num_attention_heads": HEADS, "intermediate_size": 4 * HIDDEN,
                  "max_position_embeddings": MAXPOS, "hidden_act": "gelu_new",
                  "layer_norm_eps": 1e-5, "type_vocab_size": 0}
    with open(root / "config.json", "w") as f:
        json.dump(b4k_config, f)
    arrays = bert4keras_gpt_names(state_arrays(model))
    write_tf1_checkpoint(str(root / "tf" / "gpt.ckpt"), arrays)
    return {"hf_model": model, "hf": str(root / "hf"), "arrays": arrays,
            "config": str(root / "config.json"), "ckpt": str(root / "tf" / "gpt.ckpt")}


def hf_outputs(hf_model, tokens, **kwargs):
    with torch.no_grad():
        out = hf_model(torch.tensor(tokens, dtype=torch.long),
                       attention_mask=torch.tensor(tokens != 0, dtype=torch.long),
                       output_hidden_states=True, **kwargs)
    return softmax(out.logits.numpy()), out.hidden_states[-1].numpy()


def hf_config_path(files):
    return os.path.join(files["hf"], "config.json")


# ---------------------------------------------------------------------------
# parity with transformers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gpt", "gpt2"])
@pytest.mark.parametrize("source", ["hf", "tf"])
def test_parity_with_transformers(name, source, gpt, gpt2):
    files = {"gpt": gpt, "gpt2": gpt2}[name]
    if source == "hf":
        config, ckpt = hf_config_path(files), files["hf"]
    else:
        config, ckpt = files["config"], files["ckpt"]
    # gpt: a Hugging Face config has no segment table; bert4keras' file says
    # type_vocab_size=0
    tokens = batch()
    probs_ref, hidden_ref = hf_outputs(files["hf_model"], tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unknown config keys, no unused variables
        lm = build_transformer_model(config, ckpt, model=name)
    last = {"gpt": f"Transformer-{LAYERS - 1}-FeedForward-Norm", "gpt2": "Output-Norm"}[name]
    encoder = keras.Model(lm.inputs, lm.get_layer(last).output)
    assert max_diff(run(lm, tokens), probs_ref, tokens) <= PROB_ATOL
    assert max_diff(run(encoder, tokens), hidden_ref, tokens) <= HIDDEN_ATOL


def test_gpt2_bert4keras_converted_names(gpt2, tmp_path):
    """bert4keras' GPT2 names (CPM-LM conversions): ``gpt/transformer/layer_{i}/...`` with
    the pre-norms under ``input/LayerNorm`` and ``gpt/output/LayerNorm``."""
    a = gpt2["arrays"]
    arrays = {"gpt/embeddings/word_embeddings": a["model/wte"],
              "gpt/embeddings/position_embeddings": a["model/wpe"],
              "gpt/output/LayerNorm/gamma": a["model/ln_f/g"],
              "gpt/output/LayerNorm/beta": a["model/ln_f/b"]}
    for i in range(LAYERS):
        g, o = f"gpt/transformer/layer_{i}/", f"model/h{i}/"
        w, b = a[o + "attn/c_attn/w"][0], a[o + "attn/c_attn/b"]
        for k, name in enumerate(("query", "key", "value")):
            arrays[f"{g}attention/self/{name}/kernel"] = w[:, k * HIDDEN:(k + 1) * HIDDEN]
            arrays[f"{g}attention/self/{name}/bias"] = b[k * HIDDEN:(k + 1) * HIDDEN]
        for name, sub in (("attention/output/dense", "attn/c_proj"),
                          ("intermediate/dense", "mlp/c_fc"), ("output/dense", "mlp/c_proj")):
            arrays[f"{g}{name}/kernel"] = a[o + sub + "/w"][0]
            arrays[f"{g}{name}/bias"] = a[o + sub + "/b"]
        for name, sub in (("attention/input/LayerNorm", "ln_1"), ("input/LayerNorm", "ln_2")):
            arrays[f"{g}{name}/gamma"] = a[o + sub + "/g"]
            arrays[f"{g}{name}/beta"] = a[o + sub + "/b"]
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    ckpt = write_tf1_checkpoint(str(tmp_path / "cpm" / "model.ckpt"), arrays)
    config = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
              "num_attention_heads": HEADS, "intermediate_size": 4 * HIDDEN,
              "max_position_embeddings": MAXPOS, "hidden_act": "gelu_new"}
    tokens = batch()
    probs_ref, _ = hf_outputs(gpt2["hf_model"], tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_transformer_model(config, ckpt, model="gpt2")
    assert max_diff(run(model, tokens), probs_ref, tokens) <= PROB_ATOL


def test_gpt_shared_segment_embeddings(gpt):
    """Segments looked up in the token embedding, as HF does with ``token_type_ids``."""
    tokens = batch()
    segments = np.zeros_like(tokens)
    segments[:, 3:] = 1
    segments[tokens == 0] = 0
    probs_ref, _ = hf_outputs(gpt["hf_model"], tokens,
                              token_type_ids=torch.tensor(segments, dtype=torch.long))
    model = build_transformer_model(hf_config_path(gpt), gpt["hf"], model="gpt",
                                    shared_segment_embeddings=True)
    assert [w.path for w in model.weights if "Segment" in w.path] == []
    out = model([ops.convert_to_tensor(tokens), ops.convert_to_tensor(segments)])
    assert max_diff(to_numpy(out), probs_ref, tokens) <= PROB_ATOL
    # the Keras mask is the token padding mask, not the segment ids
    mask = model.get_layer("Embedding-Token-Segment").compute_mask(
        [None, None], [ops.convert_to_tensor(tokens != 0), ops.convert_to_tensor(segments != 0)])
    np.testing.assert_array_equal(to_numpy(mask), tokens != 0)


def test_config_translation(gpt2):
    obj = build_transformer_model(gpt2["config"], model="gpt2", return_keras_model=False)
    assert (obj.vocab_size, obj.max_position, obj.hidden_size, obj.num_attention_heads,
            obj.num_hidden_layers) == (VOCAB, MAXPOS, HIDDEN, HEADS, LAYERS)
    assert obj.intermediate_size == 4 * HIDDEN and obj.hidden_act == "gelu_new"
    assert obj.layer_norm_eps == 1e-5 and obj.application == "lm"
    hf = build_transformer_model(hf_config_path(gpt2), model="gpt2", n_inner=48,
                                 return_keras_model=False)
    assert hf.intermediate_size == 48
    with pytest.raises(ValueError, match="scale_attn_weights"):
        build_transformer_model(hf_config_path(gpt2), model="gpt2", scale_attn_weights=False)
    with pytest.raises(ValueError, match="with_pool"):
        build_transformer_model(gpt2["config"], model="gpt2", with_pool=True)
    with pytest.raises(ValueError, match="segment_vocab_size"):
        build_transformer_model(gpt2["config"], model="gpt2", segment_vocab_size=2)


def test_logits_and_final_activation(gpt2):
    tokens = batch()
    probs_ref, _ = hf_outputs(gpt2["hf_model"], tokens)
    for options in ({"with_mlm": "linear"}, {"final_activation": "linear"}):
        logits = run(build_transformer_model(gpt2["config"], gpt2["ckpt"], model="gpt2",
                                             **options), tokens)
        assert max_diff(softmax(logits), probs_ref, tokens) <= PROB_ATOL


# ---------------------------------------------------------------------------
# GPT2-ML against a NumPy transcription
# ---------------------------------------------------------------------------

def gpt2_ml_arrays(seed=3, inter=48):
    rng = np.random.RandomState(seed)

    def r(*shape, scale=0.2):
        return (scale * rng.randn(*shape)).astype("float32")

    a = {"newslm/embeddings/word_embed": r(VOCAB, HIDDEN, scale=0.5),
         "newslm/embeddings/pos_embed": r(MAXPOS, HIDDEN),
         "newslm/embeddings/LayerNorm_embed_norm/gamma": 1 + r(HIDDEN),
         "newslm/embeddings/LayerNorm_embed_norm/beta": r(HIDDEN)}
    for i in range(LAYERS):
        p = f"newslm/layer{i:02d}/"
        for name in ("query_layer", "key_layer", "value_layer", "context_projection_layer"):
            a[p + name + "/kernel"], a[p + name + "/bias"] = r(HIDDEN, HIDDEN), r(HIDDEN)
        a[p + "intermediate/kernel"], a[p + "intermediate/bias"] = r(HIDDEN, inter), r(inter)
        a[p + "output/kernel"], a[p + "output/bias"] = r(inter, HIDDEN), r(HIDDEN)
        for name in ("LayerNorm_mlp_ln0", "LayerNorm_mlp_ln1"):
            a[p + name + "/gamma"], a[p + name + "/beta"] = 1 + r(HIDDEN), r(HIDDEN)
    return a


def numpy_gpt2_ml(a, ids):
    """GPT2-ML (Grover) forward pass on one unpadded sequence; returns (hidden, probs)."""
    erf = np.vectorize(math.erf)

    def norm(x, name):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-5) * a[name + "/gamma"] + a[name + "/beta"]

    def dense(x, name):
        return x @ a[name + "/kernel"] + a[name + "/bias"]

    n, d = len(ids), HIDDEN // HEADS
    wte = a["newslm/embeddings/word_embed"].astype("float64")
    h = wte[ids] + a["newslm/embeddings/pos_embed"][:n]
    h = norm(h, "newslm/embeddings/LayerNorm_embed_norm")
    causal = np.tril(np.ones((n, n), bool))
    for i in range(LAYERS):
        p = f"newslm/layer{i:02d}/"
        q, k, v = (dense(h, p + s).reshape(n, HEADS, d).transpose(1, 0, 2)
                   for s in ("query_layer", "key_layer", "value_layer"))
        scores = np.where(causal, q @ k.transpose(0, 2, 1) / math.sqrt(d), -1e10)
        ctx = (softmax(scores) @ v).transpose(1, 0, 2).reshape(n, HIDDEN)
        x = h + dense(ctx, p + "context_projection_layer")
        m = dense(norm(x, p + "LayerNorm_mlp_ln0"), p + "intermediate")
        m = dense(m * 0.5 * (1.0 + erf(m / math.sqrt(2.0))), p + "output")
        h = norm(x + m, p + "LayerNorm_mlp_ln1")
    return h, softmax(h @ wte.T)


@pytest.fixture(scope="module")
def gpt2_ml(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpt2_ml")
    arrays = gpt2_ml_arrays()
    config = {"vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
              "num_attention_heads": HEADS, "intermediate_size": 48,
              "max_position_embeddings": MAXPOS, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
              "initializer_range": 0.014}
    with open(root / "config.json", "w") as f:
        json.dump(config, f)
    write_tf1_checkpoint(str(root / "model.ckpt-100000"), arrays)
    return {"arrays": arrays, "config": str(root / "config.json"),
            "ckpt": str(root / "model.ckpt-100000")}


def test_gpt2_ml_matches_numpy(gpt2_ml):
    tokens = batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm = build_transformer_model(gpt2_ml["config"], gpt2_ml["ckpt"], model="gpt2_ml")
        enc = build_transformer_model(gpt2_ml["config"], gpt2_ml["ckpt"], model="gpt2_ml",
                                      with_mlm=False)
    probs, hidden = run(lm, tokens), run(enc, tokens)
    for row, ids in enumerate(tokens):
        ids = ids[ids != 0]
        h_ref, p_ref = numpy_gpt2_ml(gpt2_ml["arrays"], ids)
        assert np.max(np.abs(hidden[row, :len(ids)] - h_ref)) <= HIDDEN_ATOL
        assert np.max(np.abs(probs[row, :len(ids)] - p_ref)) <= PROB_ATOL


# ---------------------------------------------------------------------------
# writing checkpoints back, Keras round trips
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gpt", "gpt2", "gpt2_ml"])
def test_save_weights_as_checkpoint_bit_exact(name, gpt, gpt2, gpt2_ml, tmp_path):
    files = {"gpt": gpt, "gpt2": gpt2, "gpt2_ml": gpt2_ml}[name]
    obj = build_transformer_model(files["config"], files["ckpt"], model=name,
                                  return_keras_model=False)
    written = obj.save_weights_as_checkpoint(str(tmp_path / "out.ckpt"))
    original, back = files["arrays"], read_tf_checkpoint(str(tmp_path / "out.ckpt"))
    assert sorted(written) == sorted(back) == sorted(original)
    for key, array in original.items():
        assert back[key].shape == array.shape, key
        np.testing.assert_array_equal(back[key], array, err_msg=key)
    if name == "gpt2":  # the fused variable is one [1, n, 3n] variable
        assert back["model/h0/attn/c_attn/w"].shape == (1, HIDDEN, 3 * HIDDEN)


@pytest.mark.parametrize("name", ["gpt", "gpt2", "gpt2_ml"])
def test_keras_round_trips(name, gpt, gpt2, gpt2_ml, tmp_path):
    files = {"gpt": gpt, "gpt2": gpt2, "gpt2_ml": gpt2_ml}[name]
    extra = {"shared_segment_embeddings": True} if name == "gpt" else {}
    if name == "gpt":
        model = build_transformer_model(hf_config_path(gpt), gpt["hf"], model="gpt", **extra)
    else:
        model = build_transformer_model(files["config"], files["ckpt"], model=name)
    tokens = batch()
    inputs = [tokens, np.ones_like(tokens) * (tokens != 0)] if name == "gpt" else [tokens]
    expected = run(model, *inputs)
    model.save_weights(str(tmp_path / "w.weights.h5"))
    config = hf_config_path(gpt) if name == "gpt" else files["config"]
    again = build_transformer_model(config, str(tmp_path / "w.weights.h5"), model=name, **extra)
    np.testing.assert_array_equal(run(again, *inputs), expected)
    model.save(str(tmp_path / "m.keras"))
    loaded = keras.models.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_array_equal(run(loaded, *inputs), expected)


# ---------------------------------------------------------------------------
# loader errors, keep_tokens
# ---------------------------------------------------------------------------

def test_misshapen_missing_and_unknown_variables(gpt2, tmp_path):
    arrays = dict(gpt2["arrays"])
    arrays["model/h0/attn/c_attn/w"] = arrays["model/h0/attn/c_attn/w"][:, :, :-3]
    del arrays["model/h1/ln_2/g"]
    ckpt = write_tf1_checkpoint(str(tmp_path / "bad.ckpt"), arrays)
    with pytest.raises(CheckpointError) as info:
        build_transformer_model(gpt2["config"], ckpt, model="gpt2")
    message = str(info.value)
    assert "model/h0/attn/c_attn/w" in message and "(1, 32, 93)" in message
    assert "model/h1/ln_2/g" in message and "missing" in message
    arrays = dict(gpt2["arrays"])
    arrays["model/h0/attn/c_proj/w"] = arrays["model/h0/attn/c_proj/w"][:, :, :-1]
    ckpt = write_tf1_checkpoint(str(tmp_path / "bad2.ckpt"), arrays)
    with pytest.raises(CheckpointError, match=r"model/h0/attn/c_proj/w.*\(32, 31\).*\(32, 32\)"):
        build_transformer_model(gpt2["config"], ckpt, model="gpt2")
    arrays = dict(gpt2["arrays"], **{"model/h0/attn/extra": np.zeros(3, "float32")})
    ckpt = write_tf1_checkpoint(str(tmp_path / "extra.ckpt"), arrays)
    with pytest.warns(UserWarning, match="model/h0/attn/extra"):
        build_transformer_model(gpt2["config"], ckpt, model="gpt2")


def test_part_transform():
    fused = np.arange(1 * 4 * 6, dtype="float32").reshape(1, 4, 6)
    parts = {Part(k, 3, squeeze=(0,)): None for k in range(3)}
    for part in parts:
        parts[part] = part.load(fused)
        np.testing.assert_array_equal(parts[part], fused[0, :, 2 * part.index:2 * part.index + 2])
    np.testing.assert_array_equal(Part.join("w", parts), fused)
    with pytest.raises(ValueError, match=r"parts \[1\] of 3"):
        Part.join("w", {p: a for p, a in parts.items() if p.index != 1})
    with pytest.raises(ValueError, match="does not split into 3"):
        Part(0, 3).load(np.zeros(7))
    with pytest.raises(ValueError, match="is not 1"):
        Part(0, 1, squeeze=(0,)).load(np.zeros((2, 3)))


@pytest.mark.parametrize("source", ["hf", "tf"])
def test_keep_tokens(gpt2, source):
    keep = [0, 7, 3, 12, 41, 5, 59, 20, 33, 1]
    config, ckpt = ((hf_config_path(gpt2), gpt2["hf"]) if source == "hf"
                    else (gpt2["config"], gpt2["ckpt"]))
    model = build_transformer_model(config, ckpt, model="gpt2", keep_tokens=keep)
    rng = np.random.RandomState(4)
    new = np.zeros((2, 6), "int32")
    new[0, :6], new[1, :4] = rng.randint(1, len(keep), 6), rng.randint(1, len(keep), 4)
    old = np.asarray(keep)[new] * (new != 0)
    with torch.no_grad():
        logits = gpt2["hf_model"](torch.tensor(old, dtype=torch.long),
                                  attention_mask=torch.tensor(old != 0)).logits.numpy()
    assert max_diff(run(model, new), softmax(logits[..., keep]), new) <= PROB_ATOL


# ---------------------------------------------------------------------------
# cached generation equals the uncached greedy decode
# ---------------------------------------------------------------------------

PROMPTS = [[5, 17, 3, 9, 22], [8, 30], [11, 4, 25, 6, 13, 2, 19]]


def random_lm(name, application="lm", seed=0):
    cfg = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
               num_attention_heads=HEADS, intermediate_size=48, max_position=MAXPOS)
    obj = build_transformer_model(cfg, model=name, application=application,
                                  with_mlm="linear", return_keras_model=False)
    rng = np.random.RandomState(seed)
    for w in obj.model.weights:
        shape = tuple(w.shape)
        if "Embedding" in w.path:
            value = rng.randn(*shape)
        elif len(shape) == 2:
            value = 2.5 * rng.randn(*shape) / np.sqrt(shape[0])
        elif w.path.endswith("gamma"):
            value = 1.0 + 0.2 * rng.randn(*shape)
        else:
            value = 0.1 * rng.randn(*shape)
        if w.path == "Embedding-Token/embeddings":
            value[0] = 0.0  # padding id: never the argmax in practice
        w.assign(value.astype("float32"))
    return obj


@pytest.mark.parametrize("name,application",
                         [("gpt", "lm"), ("gpt2", "lm"), ("gpt2_ml", "lm"), ("gpt", "unilm")])
def test_generate_equals_uncached_greedy(name, application):
    obj = random_lm(name, application)
    steps = 6
    expected = uncached_greedy(obj, PROMPTS, steps)
    assert len({tuple(r) for r in expected}) > 1  # the decode depends on the prompt
    if application == "unilm":  # the prompt is segment 0
        tokens = np.zeros((len(PROMPTS), max(map(len, PROMPTS))), "int32")
        for r, p in enumerate(PROMPTS):
            tokens[r, :len(p)] = p
        assert obj.generate([tokens, np.zeros_like(tokens)], steps) == expected
    else:
        assert obj.generate(PROMPTS, steps) == expected


def test_checkpoint_is_read_one_variable_at_a_time(gpt2, tmp_path, monkeypatch):
    """load_into validates on the index's shapes, then reads and assigns variable by
    variable (the host holds the current variable, plus a fused ``c_attn`` until its last
    Part is assigned); each variable is read once; a checkpoint that does not fit reads
    nothing."""
    from bert4keras3 import checkpoints

    log = []
    get, on_layout = checkpoints.GoogleReader.get, checkpoints._on_layout

    def logged_get(self, name):
        log.append(("get", name))
        return get(self, name)

    def logged_assign(variable, array):
        log.append(("assign", variable.path))
        return on_layout(variable, array)

    monkeypatch.setattr(checkpoints.GoogleReader, "get", logged_get)
    monkeypatch.setattr(checkpoints, "_on_layout", logged_assign)
    lm = build_transformer_model(gpt2["config"], gpt2["ckpt"], model="gpt2")
    reads = [name for kind, name in log if kind == "get"]
    assert len(reads) == len(set(reads))  # every variable read once
    assert set(reads) == {n for n in gpt2["arrays"] if not re.search(r"adam_|global_step", n)}
    assert sum(kind == "assign" for kind, _ in log) == len(lm.weights)
    # reads interleave with assigns: never two reads in a row (the fused w / b stay cached)
    kinds = "".join("g" if kind == "get" else "a" for kind, _ in log)
    assert kinds.startswith("ga") and "gg" not in kinds
    # a misshapen variable stops the load before anything is read or assigned
    arrays = dict(gpt2["arrays"])
    arrays["model/h1/mlp/c_proj/w"] = arrays["model/h1/mlp/c_proj/w"][:, :-1]
    bad = write_tf1_checkpoint(str(tmp_path / "bad.ckpt"), arrays)
    log.clear()
    with pytest.raises(CheckpointError, match="model/h1/mlp/c_proj/w"):
        build_transformer_model(gpt2["config"], bad, model="gpt2")
    assert log == []
