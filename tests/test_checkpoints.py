"""Checkpoint loading: Google TF checkpoints and Hugging Face files, checked numerically.

References are independent of the code under test:

* BERT / RoFormer: Hugging Face ``transformers`` (PyTorch, CPU) on identical weights.
  The same weights are written by ``save_pretrained`` (HF files) and by a real
  TensorFlow ``tf.compat.v1`` Saver under Google's original variable names, with
  Adam slots, ``global_step`` and the NSP head that the model does not use.
* RoFormerV2 (no reference package): a NumPy transcription of its equations.

Everything is tiny (vocab 100, hidden 32, 2 layers, 4 heads) and written once per module.
"""
import json
import os
import re
import warnings

import numpy as np
import pytest

import keras
from keras import ops

import torch
import transformers
import tensorflow as tf

from conftest import write_tf1_checkpoint
from bert4keras3.checkpoints import CheckpointError  # noqa: E402
from bert4keras3.models import build_transformer_model  # noqa: E402

ATOL = 1e-4
VOCAB, HIDDEN, LAYERS, HEADS, INTER, MAXPOS = 100, 32, 2, 4, 64, 64


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def randomize(model, seed):
    """Give every parameter of a torch model non-trivial random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:  # e.g. RoFormer's fixed sinusoidal table
                continue
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)
    model.eval()
    return model


def batch(seed=0, lengths=(9, 5, 7), maxlen=9, vocab=VOCAB):
    """0-padded token ids of unequal lengths and segment ids (0 then 1)."""
    rng = np.random.RandomState(seed)
    tokens = np.zeros((len(lengths), maxlen), dtype="int32")
    segments = np.zeros((len(lengths), maxlen), dtype="int32")
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.randint(1, vocab, size=n)
        segments[row, n // 2:n] = 1
    return tokens, segments


def as_numpy(x):
    if isinstance(x, (list, tuple)):
        return [as_numpy(t) for t in x]
    return np.asarray(ops.convert_to_numpy(x))


def run_keras(model, tokens, segments):
    return as_numpy(model([ops.convert_to_tensor(tokens), ops.convert_to_tensor(segments)],
                          training=False))


def max_diff(a, b, tokens):
    """Max abs difference over non-padded positions."""
    keep = tokens != 0
    return float(np.max(np.abs(np.asarray(a)[keep] - np.asarray(b)[keep])))


def hf_to_google(state, prefix):
    """Convert a ``transformers`` BERT/RoFormer state dict to Google's variable names.

    ``prefix``: the HF model prefix (``"bert."``, ``"roformer."`` or ``""``).
    Linear weights are transposed to TF kernels; the NSP head keeps Google's
    ``[2, hidden]`` ``output_weights`` layout.
    """
    out = {}
    for key, tensor in state.items():
        array = tensor.detach().cpu().numpy().astype("float32")
        if key.endswith(("position_ids", "embed_positions.weight")) or ".decoder." in key:
            continue  # buffers and the tied MLM decoder
        if key == "cls.seq_relationship.weight":
            out["cls/seq_relationship/output_weights"] = array
            continue
        if key == "cls.seq_relationship.bias":
            out["cls/seq_relationship/output_bias"] = array
            continue
        if key == "cls.predictions.bias":
            out["cls/predictions/output_bias"] = array
            continue
        if key.startswith(prefix) and prefix:
            name = "bert/" + key[len(prefix):]
        elif not key.startswith("cls."):
            name = "bert/" + key
        else:
            name = key
        name = name.replace("bert/embeddings_project", "bert/encoder/embedding_hidden_mapping_in")
        name = re.sub(r"encoder\.layer\.(\d+)\.", r"encoder/layer_\1/", name)
        name = name.replace(".", "/")
        if "LayerNorm" in name:
            name = name.replace("/weight", "/gamma").replace("/bias", "/beta")
        elif "embeddings/" in name and name.endswith("/weight"):
            name = name[: -len("/weight")]
        elif name.endswith("/weight"):
            name = name[: -len("/weight")] + "/kernel"
            array = array.T
        out[name] = np.ascontiguousarray(array)
    return out


def bert_style_config(path, cfg, **extra):
    """A bert4keras / Google ``bert_config.json`` for a transformers config."""
    data = {
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": cfg.hidden_act,
        "hidden_dropout_prob": 0.1,
        "hidden_size": cfg.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "num_attention_heads": cfg.num_attention_heads,
        "num_hidden_layers": cfg.num_hidden_layers,
        "type_vocab_size": cfg.type_vocab_size,
        "vocab_size": cfg.vocab_size,
    }
    data.update(extra)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    return str(path)


def load(config, ckpt, **kwargs):
    """Build and load, returning the model and the list of warning messages."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = build_transformer_model(config, ckpt, **kwargs)
    return model, [str(w.message) for w in record]


def unused_warnings(messages):
    return [m for m in messages if "not used by the model" in m]


# ---------------------------------------------------------------------------
# fixtures: one BERT (pre-training heads) and two RoFormers, saved every way
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert")
    cfg = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=INTER, max_position_embeddings=MAXPOS,
    )
    hf = randomize(transformers.BertForPreTraining(cfg), seed=1)
    hf.save_pretrained(root / "hf")
    hf.save_pretrained(root / "sharded", max_shard_size="20KB")
    os.makedirs(root / "bin")
    hf.config.save_pretrained(root / "bin")
    torch.save(hf.state_dict(), root / "bin" / "pytorch_model.bin")

    google = hf_to_google(hf.state_dict(), "bert.")
    os.makedirs(root / "google")
    write_tf1_checkpoint(str(root / "google" / "bert_model.ckpt"), google)
    config = bert_style_config(root / "google" / "bert_config.json", cfg)

    tokens, segments = batch()
    with torch.no_grad():
        t = torch.tensor(tokens, dtype=torch.long)
        s = torch.tensor(segments, dtype=torch.long)
        mask = (t != 0).long()
        base = hf.bert(input_ids=t, token_type_ids=s, attention_mask=mask)
        logits = hf(input_ids=t, token_type_ids=s, attention_mask=mask).prediction_logits
    return dict(
        root=root, cfg=cfg, google=google, config=config,
        ckpt=str(root / "google" / "bert_model.ckpt"),
        tokens=tokens, segments=segments,
        hidden=base.last_hidden_state.numpy(), pooled=base.pooler_output.numpy(),
        logits=logits.numpy(), probs=torch.softmax(logits, -1).numpy(),
    )


def _roformer(root, embedding_size, seed):
    cfg = transformers.RoFormerConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, embedding_size=embedding_size,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=INTER,
        max_position_embeddings=MAXPOS,
    )
    hf = randomize(transformers.RoFormerModel(cfg), seed=seed)
    hf.save_pretrained(root / "hf")
    os.makedirs(root / "google")
    write_tf1_checkpoint(str(root / "google" / "bert_model.ckpt"),
                         hf_to_google(hf.state_dict(), ""))
    extra = {} if embedding_size == HIDDEN else {"embedding_size": embedding_size}
    config = bert_style_config(root / "google" / "bert_config.json", cfg, **extra)
    tokens, segments = batch(seed=seed)
    with torch.no_grad():
        t = torch.tensor(tokens, dtype=torch.long)
        hidden = hf(input_ids=t, token_type_ids=torch.tensor(segments, dtype=torch.long),
                    attention_mask=(t != 0).long()).last_hidden_state.numpy()
    return dict(root=root, config=config, ckpt=str(root / "google" / "bert_model.ckpt"),
                tokens=tokens, segments=segments, hidden=hidden)


@pytest.fixture(scope="module", params=[HIDDEN, 16], ids=["emb32", "emb16"])
def roformer(request, tmp_path_factory):
    return _roformer(tmp_path_factory.mktemp(f"roformer{request.param}"), request.param,
                     seed=10 + request.param)


# ---------------------------------------------------------------------------
# 1. Google and HF checkpoints against transformers
# ---------------------------------------------------------------------------

def test_google_checkpoint_has_original_names(bert):
    names = dict(tf.train.list_variables(bert["ckpt"]))
    assert names["bert/embeddings/word_embeddings"] == [VOCAB, HIDDEN]
    assert names["bert/encoder/layer_1/intermediate/dense/kernel"] == [HIDDEN, INTER]
    assert names["bert/encoder/layer_0/attention/output/LayerNorm/gamma"] == [HIDDEN]
    assert names["cls/seq_relationship/output_weights"] == [2, HIDDEN]
    assert "bert/encoder/layer_0/attention/self/query/kernel/adam_m" in names
    assert "cls/predictions/output_bias/adam_v" in names
    assert "global_step" in names


@pytest.mark.parametrize("source", ["google", "hf"])
def test_bert_hidden_states(bert, source):
    if source == "google":
        config, ckpt = bert["config"], bert["ckpt"]
    else:
        config, ckpt = str(bert["root"] / "hf" / "config.json"), str(bert["root"] / "hf")
    model, _ = load(config, ckpt, model="bert")
    out = run_keras(model, bert["tokens"], bert["segments"])
    assert out.shape == bert["hidden"].shape
    assert max_diff(out, bert["hidden"], bert["tokens"]) < ATOL


@pytest.mark.parametrize("source", ["google", "hf"])
def test_bert_mlm_and_pool(bert, source):
    if source == "google":
        config, ckpt = bert["config"], bert["ckpt"]
    else:
        config, ckpt = str(bert["root"] / "hf" / "config.json"), str(bert["root"] / "hf")
    model, messages = load(config, ckpt, model="bert", with_pool=True, with_mlm=True)
    pooled, probs = run_keras(model, bert["tokens"], bert["segments"])
    assert np.max(np.abs(pooled - bert["pooled"])) < ATOL
    assert probs.shape == (3, 9, VOCAB)
    assert max_diff(probs, bert["probs"], bert["tokens"]) < ATOL
    # Only the NSP head is left over: optimizer slots and global_step are not reported.
    unused = unused_warnings(messages)
    assert len(unused) == 1
    if source == "google":
        assert "cls/seq_relationship/output_weights" in unused[0]
        assert "cls/seq_relationship/output_bias" in unused[0]
    else:
        assert "cls.seq_relationship.weight" in unused[0]
    assert "adam" not in unused[0] and "global_step" not in unused[0]


@pytest.mark.parametrize("source", ["google", "hf"])
def test_roformer_hidden_states(roformer, source):
    if source == "google":
        config, ckpt = roformer["config"], roformer["ckpt"]
    else:
        config, ckpt = (str(roformer["root"] / "hf" / "config.json"),
                        str(roformer["root"] / "hf"))
    model, messages = load(config, ckpt, model="roformer")
    assert not unused_warnings(messages)
    out = run_keras(model, roformer["tokens"], roformer["segments"])
    assert out.shape == roformer["hidden"].shape
    assert max_diff(out, roformer["hidden"], roformer["tokens"]) < ATOL


def test_roformer_google_roformer_prefix(roformer, tmp_path):
    """Google RoFormer checkpoints may use ``roformer/`` instead of ``bert/``."""
    reader = tf.train.load_checkpoint(roformer["ckpt"])
    arrays = {}
    for name, _ in tf.train.list_variables(roformer["ckpt"]):
        if name.startswith("bert/") and "/adam_" not in name:
            arrays["roformer/" + name[len("bert/"):]] = reader.get_tensor(name)
    ckpt = write_tf1_checkpoint(str(tmp_path / "model.ckpt-100"), arrays)
    model, messages = load(roformer["config"], ckpt, model="roformer")
    assert not unused_warnings(messages)
    out = run_keras(model, roformer["tokens"], roformer["segments"])
    assert max_diff(out, roformer["hidden"], roformer["tokens"]) < ATOL


# ---------------------------------------------------------------------------
# 2. Hugging Face file variants
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["dir", "safetensors", "sharded", "bin"])
def test_hf_file_variants(bert, variant):
    root = bert["root"]
    path = {
        "dir": root / "hf",
        "safetensors": root / "hf" / "model.safetensors",
        "sharded": root / "sharded" / "model.safetensors.index.json",
        "bin": root / "bin" / "pytorch_model.bin",
    }[variant]
    if variant == "sharded":
        with open(path, encoding="utf-8") as f:
            assert len(set(json.load(f)["weight_map"].values())) > 1
    config = str(root / "hf" / "config.json")
    model, _ = load(config, str(path), model="bert", with_mlm=True)
    probs = run_keras(model, bert["tokens"], bert["segments"])
    assert max_diff(probs, bert["probs"], bert["tokens"]) < ATOL


# ---------------------------------------------------------------------------
# 3. errors and warnings
# ---------------------------------------------------------------------------

def test_missing_variable_is_named(bert, tmp_path):
    gone = "bert/encoder/layer_1/attention/self/key/kernel"
    arrays = {k: v for k, v in bert["google"].items() if k != gone}
    ckpt = write_tf1_checkpoint(str(tmp_path / "bert_model.ckpt"), arrays)
    with pytest.raises(CheckpointError, match=re.escape(repr(gone))) as info:
        build_transformer_model(bert["config"], ckpt, model="bert")
    assert "(32, 32)" in str(info.value)  # the expected shape is given
    assert "layer_0" not in str(info.value)  # only the missing one is listed


def test_shape_mismatch_names_both_shapes(bert, tmp_path):
    config = bert_style_config(tmp_path / "bert_config.json", bert["cfg"], intermediate_size=48)
    with pytest.raises(CheckpointError) as info:
        build_transformer_model(config, bert["ckpt"], model="bert")
    message = str(info.value)
    for name in ("bert/encoder/layer_0/intermediate/dense/kernel",
                 "bert/encoder/layer_1/output/dense/kernel"):
        assert name in message
    assert re.search(r"layer_0/intermediate/dense/kernel.*\(32, 64\).*\(32, 48\)", message)
    assert re.search(r"layer_0/output/dense/kernel.*\(64, 32\).*\(48, 32\)", message)


def test_nonexistent_checkpoint(bert, tmp_path):
    with pytest.raises(FileNotFoundError, match="bert_model.ckpt"):
        build_transformer_model(bert["config"], str(tmp_path / "nowhere" / "bert_model.ckpt"))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        build_transformer_model(bert["config"], str(tmp_path / "model.safetensors"))


def test_unused_variables_warning(bert):
    with pytest.warns(UserWarning, match="not used by the model") as record:
        build_transformer_model(bert["config"], bert["ckpt"], model="bert")
    message = " ".join(str(w.message) for w in record if "not used" in str(w.message))
    for name in ("cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias",
                 "bert/pooler/dense/kernel", "cls/predictions/output_bias",
                 "cls/predictions/transform/LayerNorm/gamma"):
        assert repr(name) in message
    assert "adam_m" not in message and "adam_v" not in message
    assert "global_step" not in message


# ---------------------------------------------------------------------------
# 4. keep_tokens
# ---------------------------------------------------------------------------

KEEP = [0, 7, 3, 99, 42, 1, 15, 64, 23, 88, 50, 2]


@pytest.fixture(scope="module")
def keep_case(bert):
    """Inputs in the kept id space, the same inputs in the full space, HF logits."""
    keep = np.array(KEEP)
    new_tokens, segments = batch(seed=3, vocab=len(KEEP))
    old_tokens = keep[new_tokens]  # padding 0 maps to 0
    hf = transformers.BertForMaskedLM.from_pretrained(str(bert["root"] / "hf")).eval()
    with torch.no_grad():
        t = torch.tensor(old_tokens, dtype=torch.long)
        ref = hf(input_ids=t, token_type_ids=torch.tensor(segments, dtype=torch.long),
                 attention_mask=(t != 0).long()).logits.numpy()
    return dict(keep=keep, new=new_tokens, old=old_tokens, segments=segments, ref=ref)


def test_keep_tokens_google(bert, keep_case):
    config, ckpt = bert["config"], bert["ckpt"]
    keep, new_tokens, old_tokens, segments = (keep_case[k] for k in
                                              ("keep", "new", "old", "segments"))
    full, _ = load(config, ckpt, model="bert", with_mlm="linear")
    cut, _ = load(config, ckpt, model="bert", with_mlm="linear", keep_tokens=KEEP)
    full_logits = run_keras(full, old_tokens, segments)
    cut_logits = run_keras(cut, new_tokens, segments)
    assert cut_logits.shape == (3, 9, len(KEEP))
    # the full model's logits restricted to the kept ids, in keep_tokens order
    assert max_diff(cut_logits, full_logits[..., keep], new_tokens) < 1e-5
    # and transformers' logits on the same inputs in the old id space
    assert max_diff(cut_logits, keep_case["ref"][..., keep], new_tokens) < ATOL

    # probabilities: softmax over the kept rows only
    cut_probs, _ = load(config, ckpt, model="bert", with_mlm=True, keep_tokens=KEEP)
    probs = run_keras(cut_probs, new_tokens, segments)
    kept = keep_case["ref"][..., keep]
    expected = np.exp(kept - kept.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    assert max_diff(probs, expected, new_tokens) < ATOL

    # hidden states equal the full model's on inputs mapped through keep_tokens
    full_hidden, _ = load(config, ckpt, model="bert")
    cut_hidden, _ = load(config, ckpt, model="bert", keep_tokens=KEEP)
    assert max_diff(run_keras(cut_hidden, new_tokens, segments),
                    run_keras(full_hidden, old_tokens, segments), new_tokens) < 1e-5


def test_keep_tokens_hf(bert, keep_case):
    cut, _ = load(str(bert["root"] / "hf" / "config.json"), str(bert["root"] / "hf"),
                  model="bert", with_mlm="linear", keep_tokens=KEEP)
    logits = run_keras(cut, keep_case["new"], keep_case["segments"])
    assert logits.shape == (3, 9, len(KEEP))
    assert max_diff(logits, keep_case["ref"][..., keep_case["keep"]], keep_case["new"]) < ATOL


# ---------------------------------------------------------------------------
# 5. RoFormerV2 against a NumPy transcription
# ---------------------------------------------------------------------------

def roformer_v2_weights(seed=5):
    rng = np.random.RandomState(seed)
    w = {
        "embeddings/word_embeddings": rng.randn(VOCAB, HIDDEN) * 0.5,
        "embeddings/token_type_embeddings": rng.randn(2, HIDDEN) * 0.5,
    }
    for i in range(LAYERS):
        p = f"encoder/layer_{i}/"
        for part in ("attention/self/query", "attention/self/key", "attention/self/value",
                     "attention/output/dense"):
            w[p + part + "/kernel"] = rng.randn(HIDDEN, HIDDEN) * 0.3
        w[p + "intermediate/dense/kernel"] = rng.randn(HIDDEN, INTER) * 0.3
        w[p + "output/dense/kernel"] = rng.randn(INTER, HIDDEN) * 0.3
    return {k: v.astype("float32") for k, v in w.items()}


def numpy_roformer_v2(w, tokens, segments, eps=1e-12):
    """RoFormerV2 forward pass from its equations; returns (hidden, mlm probabilities)."""
    d = HIDDEN // HEADS
    length = tokens.shape[1]

    def norm(x):
        return x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + eps)

    # rotary: pair (2i, 2i+1) rotated by pos * 10000^(-2i/d)
    theta = 10000.0 ** (-2.0 * np.arange(d // 2) / d)
    angle = np.arange(length)[:, None] * theta[None, :]  # [L, d/2]
    cos, sin = np.cos(angle), np.sin(angle)

    def rotate(x):  # x: [L, heads, d]
        even, odd = x[..., 0::2], x[..., 1::2]
        c, s = cos[:, None, :], sin[:, None, :]
        out = np.empty_like(x)
        out[..., 0::2] = even * c - odd * s
        out[..., 1::2] = even * s + odd * c
        return out

    hidden, probs = [], []
    for tok, seg in zip(tokens, segments):
        x = w["embeddings/word_embeddings"][tok] + w["embeddings/token_type_embeddings"][seg]
        x = norm(x.astype("float64"))
        key_mask = tok != 0
        for i in range(LAYERS):
            p = f"encoder/layer_{i}/"
            q = rotate((x @ w[p + "attention/self/query/kernel"]).reshape(length, HEADS, d))
            k = rotate((x @ w[p + "attention/self/key/kernel"]).reshape(length, HEADS, d))
            v = (x @ w[p + "attention/self/value/kernel"]).reshape(length, HEADS, d)
            scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(d)
            scores = np.where(key_mask[None, None, :], scores, -np.inf)
            a = np.exp(scores - scores.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", a, v).reshape(length, HIDDEN)
            x = norm(x + o @ w[p + "attention/output/dense/kernel"])
            f = np.maximum(x @ w[p + "intermediate/dense/kernel"], 0.0)
            x = norm(x + f @ w[p + "output/dense/kernel"])
        logits = x @ w["embeddings/word_embeddings"].T
        e = np.exp(logits - logits.max(-1, keepdims=True))
        hidden.append(x)
        probs.append(e / e.sum(-1, keepdims=True))
    return np.stack(hidden), np.stack(probs)


@pytest.fixture(scope="module")
def roformer_v2(tmp_path_factory):
    root = tmp_path_factory.mktemp("roformer_v2")
    weights = roformer_v2_weights()
    config = root / "bert_config.json"
    with open(config, "w", encoding="utf-8") as f:
        json.dump({
            "hidden_act": "relu", "hidden_size": HIDDEN, "intermediate_size": INTER,
            "max_position_embeddings": MAXPOS, "num_attention_heads": HEADS,
            "num_hidden_layers": LAYERS, "type_vocab_size": 2, "vocab_size": VOCAB,
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        }, f)
    tokens, segments = batch(seed=7)
    hidden, probs = numpy_roformer_v2(weights, tokens, segments)
    return dict(root=root, weights=weights, config=str(config), tokens=tokens,
                segments=segments, hidden=hidden, probs=probs)


@pytest.mark.parametrize("prefix", ["bert/", "roformer/"])
def test_roformer_v2_against_numpy(roformer_v2, prefix):
    folder = roformer_v2["root"] / prefix.strip("/")
    os.makedirs(folder, exist_ok=True)
    ckpt = write_tf1_checkpoint(
        str(folder / "bert_model.ckpt"),
        {prefix + k: v for k, v in roformer_v2["weights"].items()},
    )
    tokens, segments = roformer_v2["tokens"], roformer_v2["segments"]

    model, messages = load(roformer_v2["config"], ckpt, model="roformer_v2")
    assert not unused_warnings(messages)
    hidden = run_keras(model, tokens, segments)
    assert max_diff(hidden, roformer_v2["hidden"], tokens) < ATOL

    model, _ = load(roformer_v2["config"], ckpt, model="roformer_v2", with_mlm=True)
    probs = run_keras(model, tokens, segments)
    assert probs.shape == (3, 9, VOCAB)
    assert max_diff(probs, roformer_v2["probs"], tokens) < ATOL


def test_keras_weights_file_is_matched_by_layer_name(tmp_path):
    """A .weights.h5 is checked by layer name (Keras itself matches by class and order)."""
    import warnings

    from bert4keras3.checkpoints import CheckpointError

    cfg = dict(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32)
    source = build_transformer_model(cfg, model="bert", with_mlm=True)
    path = str(tmp_path / "mlm.weights.h5")
    source.save_weights(path)
    # an encoder-only model loads the shared layers and lists the MLM layers as unused
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        encoder = build_transformer_model(cfg, path, model="bert")
    messages = [str(w.message) for w in caught if "not used by the model" in str(w.message)]
    assert len(messages) == 1
    assert "'MLM-Bias'" in messages[0] and "'MLM-Dense'" in messages[0]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(encoder.get_layer("Embedding-Token").embeddings),
        keras.ops.convert_to_numpy(source.get_layer("Embedding-Token").embeddings))
    # with a pooler, Keras would load MLM-Dense into Pooler-Dense (both are "dense"): refused
    with pytest.raises(CheckpointError, match="'MLM-Dense', the model's is 'Pooler-Dense'"):
        build_transformer_model(cfg, path, model="bert", with_pool=True)
