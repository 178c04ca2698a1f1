"""ALBERT (``model="albert"`` / ``"albert_unshared"``): transformers parity, Google checkpoints.

References: ``transformers``' ``AlbertForPreTraining`` on random weights written by
``save_pretrained``; the same weights written as a Google TF checkpoint (``tf.compat.v1``
Saver, the released ALBERT variable names, Adam slots and ``global_step``) by a converter
written here. Cached greedy decoding is checked against an argmax loop over the full model.
"""
import json
import re

import numpy as np
import pytest
import torch
import transformers

import keras

from conftest import uncached_greedy, write_tf1_checkpoint
from bert4keras3.checkpoints import CheckpointError
from bert4keras3.models import build_transformer_model

TOKENS = np.array([[2, 5, 6, 7, 3, 0, 0, 0], [2, 8, 9, 10, 11, 12, 13, 3]])
SEGMENTS = np.array([[0, 0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]])
MASK = TOKENS != 0
VOCAB, EMB, HIDDEN, INTER = 60, 16, 32, 37
pytestmark = pytest.mark.filterwarnings("ignore:.*not used by the model")

#: Hugging Face module -> Google scope of the released ALBERT checkpoints
_GOOGLE_MODULES = [
    (r"albert\.embeddings\.(word|position|token_type)_embeddings",
     r"bert/embeddings/\1_embeddings"),
    (r"albert\.embeddings\.LayerNorm", "bert/embeddings/LayerNorm"),
    (r"albert\.encoder\.embedding_hidden_mapping_in", "bert/encoder/embedding_hidden_mapping_in"),
    (r"albert\.pooler", "bert/pooler/dense"),
    (r"predictions\.dense", "cls/predictions/transform/dense"),
    (r"predictions\.LayerNorm", "cls/predictions/transform/LayerNorm"),
    (r"sop_classifier\.classifier", "cls/seq_relationship"),
]
_GROUP = r"albert\.encoder\.albert_layer_groups\.(\d+)\.albert_layers\.0\."
_INNER = {
    "attention.query": "attention_1/self/query", "attention.key": "attention_1/self/key",
    "attention.value": "attention_1/self/value", "attention.dense": "attention_1/output/dense",
    "attention.LayerNorm": "LayerNorm", "ffn": "ffn_1/intermediate/dense",
    "ffn_output": "ffn_1/intermediate/output/dense", "full_layer_layer_norm": "LayerNorm_1",
}
for _hf, _google in _INNER.items():
    _GOOGLE_MODULES.append((_GROUP + re.escape(_hf),
                            r"bert/encoder/transformer/group_\1/inner_group_0/" + _google))


def google_arrays(model):
    """The released ALBERT variables of an ``AlbertForPreTraining`` state dict."""
    out = {}
    for key, tensor in model.state_dict().items():
        array = tensor.detach().numpy().copy()
        if key.startswith("predictions.decoder."):
            continue  # tied to the word embeddings / output bias
        if key == "predictions.bias":
            out["cls/predictions/output_bias"] = array
            continue
        module, leaf = key.rsplit(".", 1)
        for pattern, scope in _GOOGLE_MODULES:
            if re.fullmatch(pattern, module):
                name = re.sub(pattern, scope, module)
                break
        else:
            raise AssertionError(f"no Google name for {key}")
        if name.endswith("_embeddings"):
            out[name] = array
        elif "LayerNorm" in name:
            out[name + ("/gamma" if leaf == "weight" else "/beta")] = array
        elif name == "cls/seq_relationship":  # stored as [2, hidden]
            out[name + ("/output_weights" if leaf == "weight" else "/output_bias")] = array
        else:
            out[name + ("/kernel" if leaf == "weight" else "/bias")] = (
                array.T if leaf == "weight" else array)
    return out


def make_albert(root, layers, groups, act, seed):
    """An ``AlbertForPreTraining`` saved by ``save_pretrained`` and as a Google checkpoint."""
    torch.manual_seed(seed)
    cfg = transformers.AlbertConfig(
        vocab_size=VOCAB, embedding_size=EMB, hidden_size=HIDDEN, num_hidden_layers=layers,
        num_hidden_groups=groups, num_attention_heads=4, intermediate_size=INTER,
        max_position_embeddings=32, hidden_act=act,
    )
    model = transformers.AlbertForPreTraining(cfg).eval()
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(root / "hf")
    google = {"attention_probs_dropout_prob": 0.0, "hidden_act": act, "hidden_dropout_prob": 0.0,
              "embedding_size": EMB, "hidden_size": HIDDEN, "initializer_range": 0.02,
              "intermediate_size": INTER, "max_position_embeddings": 32,
              "num_attention_heads": 4, "num_hidden_layers": layers,
              "num_hidden_groups": groups, "net_structure_type": 0, "gap_size": 0,
              "num_memory_blocks": 0, "inner_group_num": 1, "down_scale_factor": 1,
              "type_vocab_size": 2, "vocab_size": VOCAB}
    (root / "albert_config.json").write_text(json.dumps(google))
    write_tf1_checkpoint(str(root / "model.ckpt-best"), google_arrays(model))
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(TOKENS), token_type_ids=torch.tensor(SEGMENTS),
                    attention_mask=torch.tensor(MASK.astype("int64")), output_hidden_states=True)
        hidden = ref.hidden_states[-1]
        pooled = model.albert.pooler_activation(model.albert.pooler(hidden[:, 0]))
    return {
        "root": root, "model": model,
        "hidden": hidden.numpy(), "pooled": pooled.numpy(),
        "probs": torch.softmax(ref.prediction_logits, -1).numpy(),
        "logits": ref.prediction_logits.numpy(),
        "sop": torch.softmax(ref.sop_logits, -1).numpy(),
        "sources": {
            "hf": (str(root / "hf" / "config.json"), str(root / "hf")),
            "google": (str(root / "albert_config.json"), str(root / "model.ckpt-best")),
        },
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The released layout: one group for every layer; transformers' default gelu_new."""
    return make_albert(tmp_path_factory.mktemp("albert_shared"), 2, 1, "gelu_new", 0)


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """num_hidden_groups = num_hidden_layers (unshared); Google's erf ``gelu``."""
    return make_albert(tmp_path_factory.mktemp("albert_grouped"), 2, 2, "gelu", 1)


@pytest.fixture(scope="module")
def two_of_four(tmp_path_factory):
    """Four layers in two groups: layers 0, 1 use group 0, layers 2, 3 group 1."""
    return make_albert(tmp_path_factory.mktemp("albert_2of4"), 4, 2, "gelu_new", 2)


def run(model, inputs=(TOKENS, SEGMENTS)):
    out = model([np.asarray(x) for x in inputs], training=False)
    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in out]
    return keras.ops.convert_to_numpy(out)


def diff(a, b):
    return float(np.abs(a - b)[MASK].max())


@pytest.mark.parametrize("which,name,source", [
    ("shared", "albert", "hf"), ("shared", "albert", "google"),
    ("shared", "albert_unshared", "google"),
    ("grouped", "albert", "hf"), ("grouped", "albert", "google"),
    ("grouped", "albert_unshared", "hf"),
    ("two_of_four", "albert", "hf"), ("two_of_four", "albert_unshared", "google"),
])
def test_albert_matches_transformers(which, name, source, request):
    ref = request.getfixturevalue(which)
    config, ckpt = ref["sources"][source]
    hidden = run(build_transformer_model(config, ckpt, model=name))
    assert diff(hidden, ref["hidden"]) <= 1e-4
    pooled, probs = run(build_transformer_model(config, ckpt, model=name, with_pool=True,
                                                with_mlm=True))
    assert diff(probs, ref["probs"]) <= 1e-5
    assert np.abs(pooled - ref["pooled"]).max() <= 1e-4
    logits = run(build_transformer_model(config, ckpt, model=name, with_mlm="linear"))
    assert diff(logits, ref["logits"]) <= 1e-4
    sop = run(build_transformer_model(config, ckpt, model=name, with_nsp=True))
    assert np.abs(sop - ref["sop"]).max() <= 1e-5


def test_shared_layers_are_one_set(shared, two_of_four):
    config, ckpt = shared["sources"]["google"]
    model = build_transformer_model(config, ckpt, model="albert")
    names = {layer.name for layer in model.layers}
    assert {"Transformer-MultiHeadSelfAttention", "Transformer-FeedForward-Norm"} <= names
    assert not any(n.startswith("Transformer-0") for n in names)
    unshared = build_transformer_model(config, ckpt, model="albert_unshared")
    names = {layer.name for layer in unshared.layers}
    assert {"Transformer-0-MultiHeadSelfAttention", "Transformer-1-FeedForward"} <= names
    # released (one-group) weights initialise every unshared layer alike
    a, b = (unshared.get_layer(f"Transformer-{i}-FeedForward").weights[0] for i in (0, 1))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    config, ckpt = two_of_four["sources"]["hf"]
    model = build_transformer_model(config, ckpt, model="albert")
    stems = sorted({layer.name.split("-Multi")[0] for layer in model.layers
                    if "MultiHeadSelfAttention" in layer.name})
    assert stems == ["Transformer-0", "Transformer-1"]


def test_keep_tokens(shared):
    config, ckpt = shared["sources"]["google"]
    keep = [0, 1, 2, 3, 17, 5, 42, 8, 9, 30]
    full = build_transformer_model(config, ckpt, model="albert", with_mlm=True)
    cut = build_transformer_model(config, ckpt, model="albert", with_mlm=True, keep_tokens=keep)
    assert cut.get_layer("Embedding-Token").weights[0].shape == (len(keep), EMB)
    new_ids = np.array([[2, 4, 6, 5, 3, 0], [2, 7, 8, 9, 1, 3]])
    seg = np.zeros_like(new_ids)
    out_full = run(full, [np.array(keep)[new_ids], seg])
    out_cut = run(cut, [new_ids, seg])
    expected = out_full[..., keep] / out_full[..., keep].sum(-1, keepdims=True)
    np.testing.assert_allclose(out_cut, expected, atol=1e-5)


def test_inner_group_num_and_other_structures_raise():
    cfg = dict(vocab_size=VOCAB, embedding_size=EMB, hidden_size=HIDDEN, num_hidden_layers=2,
               num_attention_heads=4, intermediate_size=INTER)
    with pytest.raises(ValueError, match="inner_group_num=2"):
        build_transformer_model({**cfg, "inner_group_num": 2}, model="albert")
    with pytest.raises(ValueError, match="net_structure_type=1"):
        build_transformer_model({**cfg, "net_structure_type": 1}, model="albert")
    with pytest.raises(ValueError, match=r"num_hidden_groups must be in \[1, num_hidden_lay"):
        build_transformer_model({**cfg, "num_hidden_groups": 3}, model="albert")


def test_missing_and_misshapen_variables_are_named(shared, tmp_path):
    config, _ = shared["sources"]["google"]
    arrays = google_arrays(shared["model"])
    gone = "bert/encoder/transformer/group_0/inner_group_0/ffn_1/intermediate/dense/kernel"
    del arrays[gone]
    bad = "bert/encoder/transformer/group_0/inner_group_0/LayerNorm_1/gamma"
    arrays[bad] = np.ones(HIDDEN + 1, "float32")
    ckpt = write_tf1_checkpoint(str(tmp_path / "broken.ckpt"), arrays)
    with pytest.raises(CheckpointError) as info:
        build_transformer_model(config, ckpt, model="albert")
    message = str(info.value)
    assert repr(gone) in message and "Transformer-FeedForward/i0_dense/kernel" in message
    assert repr(bad) in message and f"({HIDDEN + 1},)" in message and f"({HIDDEN},)" in message
    arrays = google_arrays(shared["model"])
    arrays["bert/encoder/transformer/group_0/inner_group_0/extra/kernel"] = np.ones(3, "float32")
    ckpt = write_tf1_checkpoint(str(tmp_path / "extra.ckpt"), arrays)
    with pytest.warns(UserWarning, match="inner_group_0/extra/kernel") as record:
        build_transformer_model(config, ckpt, model="albert", with_pool=True, with_mlm=True,
                                with_nsp=True)
    assert not any("adam_" in str(w.message) for w in record)


@pytest.mark.parametrize("name,which", [("albert", "shared"), ("albert_unshared", "grouped")])
def test_keras_and_weights_round_trips_are_bit_exact(name, which, tmp_path, request):
    config, ckpt = request.getfixturevalue(which)["sources"]["google"]
    kw = dict(model=name, with_pool=True, with_mlm=True)
    model = build_transformer_model(config, ckpt, **kw)
    ref = run(model)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for r, o in zip(ref, run(loaded)):
        np.testing.assert_array_equal(r, o)
    model.save_weights(tmp_path / "m.weights.h5")
    other = build_transformer_model(config, str(tmp_path / "m.weights.h5"), **kw)
    for r, o in zip(ref, run(other)):
        np.testing.assert_array_equal(r, o)


def test_google_writer_round_trip(shared, tmp_path):
    config, ckpt = shared["sources"]["hf"]
    obj = build_transformer_model(config, ckpt, model="albert", with_mlm=True,
                                  return_keras_model=False)
    written = obj.save_weights_as_checkpoint(str(tmp_path / "out.ckpt"))
    assert "bert/encoder/transformer/group_0/inner_group_0/attention_1/self/query/kernel" in written
    back = build_transformer_model(config, str(tmp_path / "out.ckpt"), model="albert",
                                   with_mlm=True)
    np.testing.assert_array_equal(run(obj.model), run(back))
    unshared = build_transformer_model(config, ckpt, model="albert_unshared",
                                       return_keras_model=False)
    with pytest.raises(ValueError, match="expected num_hidden_groups == num_hidden_layers"):
        unshared.save_weights_as_checkpoint(str(tmp_path / "unshared.ckpt"))


# ---------------------------------------------------------------------------
# cached decoding
# ---------------------------------------------------------------------------

PROMPTS = [[5, 17, 3, 9, 22], [8, 30], [11, 4, 25, 6, 13, 2, 19]]
WIDTH = 16


def random_model(name, application, groups=1, layers=2):
    cfg = dict(vocab_size=40, embedding_size=EMB, hidden_size=HIDDEN, num_hidden_layers=layers,
               num_hidden_groups=groups, num_attention_heads=2, intermediate_size=INTER,
               max_position=64)
    obj = build_transformer_model(cfg, model=name, application=application, with_mlm="linear",
                                  return_keras_model=False)
    rng = np.random.RandomState(5)
    for w in obj.model.weights:  # strong weights: the decode depends on the whole context
        shape = tuple(w.shape)
        if len(shape) == 2 and "Embedding-" in w.path and "Mapping" not in w.path:
            value = rng.randn(*shape)
        elif len(shape) == 2:
            value = 1.5 * rng.randn(*shape) / np.sqrt(shape[0])
        elif w.path.endswith("gamma"):
            value = 1.0 + 0.2 * rng.randn(*shape)
        else:
            value = 0.1 * rng.randn(*shape)
        if w.path == "Embedding-Token/embeddings":
            value[0] = 0.0
        w.assign(value.astype("float32"))
    return obj


@pytest.mark.parametrize("name,groups,layers,application", [
    ("albert", 1, 2, "lm"), ("albert", 2, 4, "unilm")])
def test_cached_greedy_equals_uncached(name, groups, layers, application):
    obj = random_model(name, application, groups, layers)
    steps = 6
    width = max(len(p) for p in PROMPTS)
    tokens = np.array([p + [0] * (width - len(p)) for p in PROMPTS])
    inputs = [tokens, np.zeros_like(tokens)] if application == "unilm" else tokens
    cached = obj.generate(inputs, steps)
    reference = uncached_greedy(obj, PROMPTS, steps, WIDTH)
    assert cached == reference
    assert len({t for r in reference for t in r}) > 1  # not a constant decode
