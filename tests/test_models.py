"""Model-level tests: parity with transformers, masks, keep_tokens, serialization, errors."""
import json
import os

import keras
import numpy as np
import pytest

from bert4keras3.models import build_transformer_model

import torch
import transformers

TOKENS = np.array([[2, 5, 6, 7, 3, 0, 0, 0], [2, 8, 9, 10, 11, 12, 13, 3]])
SEGMENTS = np.array([[0, 0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]])
MASK = TOKENS != 0


def _run(model, inputs):
    """Eager forward pass returning NumPy (a list for several outputs)."""
    out = model([np.asarray(x) for x in inputs], training=False)
    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in out]
    return keras.ops.convert_to_numpy(out)


def _torch_out(model, **kw):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(TOKENS),
            token_type_ids=torch.tensor(SEGMENTS),
            attention_mask=torch.tensor(MASK.astype("int64")),
            **kw,
        )


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=32,
    )
    model = transformers.BertForPreTraining(cfg).eval()
    # non-trivial norms and biases
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("bert")
    model.save_pretrained(path)
    return model, str(path)


@pytest.fixture(scope="module")
def hf_roformer(tmp_path_factory):
    torch.manual_seed(1)
    cfg = transformers.RoFormerConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=32, embedding_size=32,
    )
    model = transformers.RoFormerModel(cfg).eval()
    path = tmp_path_factory.mktemp("roformer")
    model.save_pretrained(path)
    return model, str(path)


@pytest.mark.filterwarnings("ignore:.*not used by the model")
def test_bert_hidden_and_mlm_match_transformers(hf_bert):
    model, path = hf_bert
    ref = _torch_out(model, output_hidden_states=True)
    probs = torch.softmax(ref.prediction_logits, -1).numpy()
    hidden = ref.hidden_states[-1].numpy()
    config = os.path.join(path, "config.json")
    encoder = build_transformer_model(config, path)
    out = (_run(encoder, [TOKENS, SEGMENTS]))
    assert np.abs(out - hidden)[MASK].max() <= 1e-4
    mlm = build_transformer_model(config, path, with_mlm=True)
    out = (_run(mlm, [TOKENS, SEGMENTS]))
    assert np.abs(out - probs)[MASK].max() <= 1e-4
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)
    logits = build_transformer_model(config, path, with_mlm="linear")
    out = (_run(logits, [TOKENS, SEGMENTS]))
    assert np.abs(out - ref.prediction_logits.numpy())[MASK].max() <= 1e-4


def test_roformer_matches_transformers(hf_roformer):
    model, path = hf_roformer
    ref = _torch_out(model).last_hidden_state.numpy()
    km = build_transformer_model(os.path.join(path, "config.json"), path, model="roformer")
    out = (_run(km, [TOKENS, SEGMENTS]))
    assert np.abs(out - ref)[MASK].max() <= 1e-4


def test_real_pretrained_minilm_matches_transformers(minilm_dir):
    ref_model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    ids = np.array([[101, 7592, 2088, 999, 102, 0, 0], [101, 2023, 2003, 1037, 3231, 6251, 102]])
    seg = np.zeros_like(ids)
    with torch.no_grad():
        ref = ref_model(
            input_ids=torch.tensor(ids), token_type_ids=torch.tensor(seg),
            attention_mask=torch.tensor((ids != 0).astype("int64")),
        ).last_hidden_state.numpy()
    km = build_transformer_model(os.path.join(minilm_dir, "config.json"), minilm_dir)
    out = (_run(km, [ids, seg]))
    assert np.abs(out - ref)[ids != 0].max() <= 1e-4


def _tiny_config(**kw):
    config = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=24, max_position_embeddings=32, type_vocab_size=2,
                  hidden_act="gelu")
    config.update(kw)
    return config


@pytest.mark.parametrize("name", ["bert", "roformer", "roformer_v2"])
def test_lm_mask_is_causal(name):
    model = build_transformer_model(_tiny_config(), model=name, application="lm", with_mlm=False)
    rng = np.random.default_rng(0)
    a = rng.integers(1, 40, size=(2, 10))
    b = a.copy()
    b[:, 6:] = rng.integers(1, 40, size=(2, 4))
    seg = np.zeros_like(a)
    oa = (_run(model, [a, seg]))
    ob = (_run(model, [b, seg]))
    np.testing.assert_allclose(oa[:, :6], ob[:, :6], atol=1e-5)
    assert np.abs(oa[:, 6:] - ob[:, 6:]).max() > 1e-3


@pytest.mark.parametrize("name", ["bert", "roformer", "roformer_v2"])
def test_unilm_mask(name):
    model = build_transformer_model(_tiny_config(), model=name, application="unilm",
                                    with_mlm=False)
    rng = np.random.default_rng(1)
    a = rng.integers(1, 40, size=(2, 10))
    seg = np.array([[0] * 5 + [1] * 5] * 2)
    # changing a later segment-1 token leaves all earlier positions unchanged
    b = a.copy()
    b[:, 8:] = rng.integers(1, 40, size=(2, 2))
    oa = (_run(model, [a, seg]))
    ob = (_run(model, [b, seg]))
    np.testing.assert_allclose(oa[:, :8], ob[:, :8], atol=1e-5)
    # segment 0 is bidirectional: changing its last token changes its first position
    c = a.copy()
    c[:, 4] = (c[:, 4] % 39) + 1
    oc = (_run(model, [c, seg]))
    assert np.abs(oc[:, 0] - oa[:, 0]).max() > 1e-3


def test_keep_tokens_restricts_vocabulary(hf_bert):
    model, path = hf_bert
    keep = [0, 1, 2, 3, 17, 5, 42, 8, 9, 30]
    config = os.path.join(path, "config.json")
    full = build_transformer_model(config, path, with_mlm="linear")
    cut = build_transformer_model(config, path, with_mlm="linear", keep_tokens=keep)
    new_ids = np.array([[2, 4, 6, 5, 3, 0], [2, 7, 8, 9, 1, 3]])
    old_ids = np.array(keep)[new_ids]
    seg = np.zeros_like(new_ids)
    out_full = (_run(full, [old_ids, seg]))
    out_cut = (_run(cut, [new_ids, seg]))
    np.testing.assert_allclose(out_cut, out_full[..., keep], atol=1e-5)


def test_pool_and_mlm_outputs(hf_bert):
    model, path = hf_bert
    config = os.path.join(path, "config.json")
    both = build_transformer_model(config, path, with_pool=True, with_mlm=True)
    assert isinstance(both.output, list) and len(both.output) == 2
    pooled, probs = _run(both, [TOKENS, SEGMENTS])
    ref = _torch_out(model.bert)
    np.testing.assert_allclose(pooled, ref.pooler_output.numpy(), atol=1e-4)
    assert pooled.shape == (2, 32) and probs.shape == (2, 8, 60)
    hidden = build_transformer_model(config, path).predict([TOKENS, SEGMENTS], verbose=0)
    dense = both.get_layer("Pooler-Dense")
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in dense.weights)
    np.testing.assert_allclose(pooled, np.tanh(hidden[:, 0] @ kernel + bias), atol=1e-5)


@pytest.mark.parametrize("name", ["bert", "roformer", "roformer_v2"])
def test_keras_and_weights_round_trips_are_bit_exact(name, tmp_path):
    kw = {"with_mlm": True}
    if name == "bert":
        kw["with_pool"] = True
    model = build_transformer_model(_tiny_config(), model=name, **kw)
    ids = np.array([[2, 5, 6, 3, 0], [2, 7, 8, 9, 3]])
    seg = np.zeros_like(ids)
    ref = _run(model, [ids, seg])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    out = _run(loaded, [ids, seg])
    for r, o in zip(keras.tree.flatten(ref), keras.tree.flatten(out)):
        np.testing.assert_array_equal(r, o)
    model.save_weights(tmp_path / "m.weights.h5")
    other = build_transformer_model(_tiny_config(), model=name, **kw)
    other.load_weights(tmp_path / "m.weights.h5")
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    # the same file through build_transformer_model's checkpoint_path
    third = build_transformer_model(_tiny_config(), str(tmp_path / "m.weights.h5"),
                                    model=name, **kw)
    out = _run(third, [ids, seg])
    for r, o in zip(keras.tree.flatten(ref), keras.tree.flatten(out)):
        np.testing.assert_array_equal(r, o)


def test_config_dict_file_and_kwargs_override(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_tiny_config()))
    model = build_transformer_model(str(path), num_hidden_layers=1)
    names = [layer.name for layer in model.layers]
    assert "Transformer-0-MultiHeadSelfAttention" in names
    assert "Transformer-1-MultiHeadSelfAttention" not in names


def test_unknown_model_name_is_an_error():
    with pytest.raises(ValueError, match=r"unknown model 'gpt9'.*expected one of"):
        build_transformer_model(_tiny_config(), model="gpt9")


def test_config_missing_required_key():
    config = _tiny_config()
    del config["intermediate_size"]
    with pytest.raises(ValueError, match=r"missing required key.*intermediate_size"):
        build_transformer_model(config)


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="config file not found"):
        build_transformer_model("/nonexistent/config.json")


def test_missing_checkpoint_path():
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found.*nowhere/bert_model.ckpt"):
        build_transformer_model(_tiny_config(), "/nowhere/bert_model.ckpt")


def test_bad_application():
    with pytest.raises(ValueError, match=r"application must be .*found 'seq2seq'"):
        build_transformer_model(_tiny_config(), application="seq2seq")


def test_unknown_config_entry_warns():
    with pytest.warns(UserWarning, match="ignores unknown config entries.*frobnicate"):
        build_transformer_model(_tiny_config(frobnicate=3))
