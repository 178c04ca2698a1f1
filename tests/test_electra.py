"""ELECTRA (``model="electra"``): parity with transformers, Google pre-training checkpoints.

References: ``transformers``' ``ElectraForPreTraining`` (discriminator) and
``ElectraForMaskedLM`` (generator, embedding tables shared with the discriminator as in
ELECTRA's pre-training) on random weights written by ``save_pretrained``; the same weights
written as one Google TF checkpoint (``tf.compat.v1`` Saver, released variable names:
discriminator under ``electra/``, generator under ``generator/``, shared embedding tables
under ``electra/embeddings/``, Adam slots and ``global_step``) by a converter written here.
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
VOCAB, EMB = 60, 16
DISC = dict(hidden_size=32, num_attention_heads=4, intermediate_size=37)
GEN = dict(hidden_size=16, num_attention_heads=2, intermediate_size=24)  # no embeddings_project
pytestmark = pytest.mark.filterwarnings("ignore:.*not used by the model")


def google_arrays(model, scope):
    """Released ELECTRA variables of an HF ELECTRA state dict; the body under ``scope``."""
    out = {}
    for key, tensor in model.state_dict().items():
        array = tensor.detach().numpy().copy()
        if key == "generator_lm_head.weight":
            continue  # tied to the word embeddings
        if key == "generator_lm_head.bias":
            out["generator_predictions/output_bias"] = array
            continue
        name = key.replace("electra.embeddings.", "electra/embeddings/")
        name = name.replace("electra.embeddings_project.", scope + "/embeddings_project/")
        name = name.replace("electra.encoder.", scope + "/encoder/")
        name = name.replace("dense_prediction", "dense_1")
        name = re.sub(r"layer\.(\d+)\.", r"layer_\1/", name).replace(".", "/")
        if "LayerNorm" in name:
            name = name.replace("/weight", "/gamma").replace("/bias", "/beta")
        elif name.endswith("_embeddings/weight"):
            name = name[: -len("/weight")]
        elif name.endswith("/weight"):
            name, array = name[: -len("/weight")] + "/kernel", array.T
        out[name] = array
    return out


def _perturb(model):
    with torch.no_grad():  # non-trivial norms and biases
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))


def _reference(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor(TOKENS), token_type_ids=torch.tensor(SEGMENTS),
                     attention_mask=torch.tensor(MASK.astype("int64")),
                     output_hidden_states=True)


@pytest.fixture(scope="module")
def electra(tmp_path_factory):
    root = tmp_path_factory.mktemp("electra")
    common = dict(vocab_size=VOCAB, embedding_size=EMB, num_hidden_layers=2,
                  max_position_embeddings=32)
    torch.manual_seed(0)
    disc = transformers.ElectraForPreTraining(transformers.ElectraConfig(**common, **DISC)).eval()
    _perturb(disc)
    with torch.no_grad():  # a head strong enough that the probabilities spread out
        for name, p in disc.discriminator_predictions.named_parameters():
            if name.endswith("weight"):
                p.mul_(10.0)
    gen = transformers.ElectraForMaskedLM(transformers.ElectraConfig(**common, **GEN)).eval()
    _perturb(gen)
    with torch.no_grad():  # ELECTRA's pre-training shares the embedding tables
        gen.electra.embeddings.load_state_dict(disc.electra.embeddings.state_dict())
    disc.save_pretrained(root / "disc")
    gen.save_pretrained(root / "gen")
    arrays = google_arrays(disc, "electra")
    generator = google_arrays(gen, "generator")
    for name, array in generator.items():
        if name in arrays:
            np.testing.assert_array_equal(arrays[name], array)  # the shared tables
    arrays.update(generator)
    ckpt = write_tf1_checkpoint(str(root / "model.ckpt-1000"), arrays)
    configs = {}
    for part, sizes in (("disc", DISC), ("gen", GEN)):
        config = {"vocab_size": VOCAB, "embedding_size": EMB, "num_hidden_layers": 2,
                  "max_position_embeddings": 32, "type_vocab_size": 2, "hidden_act": "gelu",
                  "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, **sizes}
        configs[part] = str(root / f"{part}_config.json")
        (root / f"{part}_config.json").write_text(json.dumps(config))
    disc_ref, gen_ref = _reference(disc), _reference(gen)
    return {
        "root": root, "disc_model": disc, "gen_model": gen, "arrays": arrays,
        "disc_hidden": disc_ref.hidden_states[-1].numpy(),
        "disc_probs": torch.sigmoid(disc_ref.logits).numpy(),
        "disc_logits": disc_ref.logits.numpy(),
        "gen_hidden": gen_ref.hidden_states[-1].numpy(),
        "gen_probs": torch.softmax(gen_ref.logits, -1).numpy(),
        "sources": {
            ("disc", "hf"): (str(root / "disc" / "config.json"), str(root / "disc")),
            ("gen", "hf"): (str(root / "gen" / "config.json"), str(root / "gen")),
            ("disc", "google"): (configs["disc"], ckpt),
            ("gen", "google"): (configs["gen"], ckpt),
        },
    }


def run(model, inputs=(TOKENS, SEGMENTS)):
    out = model([np.asarray(x) for x in inputs], training=False)
    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in out]
    return keras.ops.convert_to_numpy(out)


def diff(a, b):
    return float(np.abs(a - b)[MASK].max())


@pytest.mark.parametrize("source", ["hf", "google"])
def test_discriminator_matches_transformers(electra, source):
    config, ckpt = electra["sources"]["disc", source]
    hidden = run(build_transformer_model(config, ckpt, model="electra"))
    assert diff(hidden, electra["disc_hidden"]) <= 1e-4
    probs = run(build_transformer_model(config, ckpt, model="electra", with_discriminator=True))
    assert probs.shape == (2, 8, 1)
    assert 0.05 < probs[MASK].std()  # not saturated: the comparison means something
    assert diff(probs[..., 0], electra["disc_probs"]) <= 1e-5
    logits = run(build_transformer_model(config, ckpt, model="electra",
                                         with_discriminator="linear"))
    assert diff(logits[..., 0], electra["disc_logits"]) <= 1e-4


@pytest.mark.parametrize("source", ["hf", "google"])
def test_generator_matches_transformers(electra, source):
    config, ckpt = electra["sources"]["gen", source]
    probs = run(build_transformer_model(config, ckpt, model="electra", with_mlm=True))
    assert diff(probs, electra["gen_probs"]) <= 1e-5
    # the generator's body alone: chosen explicitly in a Google checkpoint
    hidden = run(build_transformer_model(config, ckpt, model="electra",
                                         checkpoint_scope="generator"))
    assert diff(hidden, electra["gen_hidden"]) <= 1e-4


def test_layer_names_and_unsupported_options(electra):
    config, ckpt = electra["sources"]["disc", "google"]
    model = build_transformer_model(config, ckpt, model="electra", with_discriminator=True)
    names = {layer.name for layer in model.layers}
    assert {"Embedding-Mapping", "Transformer-1-FeedForward", "Discriminator-Dense",
            "Discriminator-Prediction"} <= names
    gen = build_transformer_model(electra["sources"]["gen", "hf"][0], model="electra")
    assert "Embedding-Mapping" not in {layer.name for layer in gen.layers}
    with pytest.raises(ValueError, match="with_pool=True.*no pooler"):
        build_transformer_model(config, model="electra", with_pool=True)
    with pytest.raises(ValueError, match="checkpoint_scope must be one of .*'discriminator'"):
        build_transformer_model(config, model="electra", checkpoint_scope="discriminator")


def test_keep_tokens(electra):
    config, ckpt = electra["sources"]["gen", "google"]
    keep = [0, 1, 2, 3, 17, 5, 42, 8, 9, 30]
    full = build_transformer_model(config, ckpt, model="electra", with_mlm="linear")
    cut = build_transformer_model(config, ckpt, model="electra", with_mlm="linear",
                                  keep_tokens=keep)
    assert cut.get_layer("Embedding-Token").weights[0].shape == (len(keep), EMB)
    new_ids = np.array([[2, 4, 6, 5, 3, 0], [2, 7, 8, 9, 1, 3]])
    seg = np.zeros_like(new_ids)
    out_full = run(full, [np.array(keep)[new_ids], seg])
    np.testing.assert_allclose(run(cut, [new_ids, seg]), out_full[..., keep], atol=1e-5)


def test_missing_and_misshapen_variables_are_named(electra, tmp_path):
    config, _ = electra["sources"]["disc", "google"]
    arrays = dict(electra["arrays"])
    gone = "electra/encoder/layer_1/attention/self/key/kernel"
    del arrays[gone]
    bad = "discriminator_predictions/dense_1/bias"
    arrays[bad] = np.zeros(2, "float32")
    ckpt = write_tf1_checkpoint(str(tmp_path / "broken.ckpt"), arrays)
    with pytest.raises(CheckpointError) as info:
        build_transformer_model(config, ckpt, model="electra", with_discriminator=True)
    message = str(info.value)
    assert repr(gone) in message and "Transformer-1-MultiHeadSelfAttention/k_dense" in message
    assert repr(bad) in message and "(2,)" in message and "(1,)" in message
    arrays = dict(electra["arrays"], **{"electra/encoder/layer_9/output/dense/bias":
                                        np.zeros(3, "float32")})
    ckpt = write_tf1_checkpoint(str(tmp_path / "extra.ckpt"), arrays)
    with pytest.warns(UserWarning, match="layer_9/output/dense/bias") as record:
        build_transformer_model(config, ckpt, model="electra", with_discriminator=True)
    assert not any("adam_" in str(w.message) for w in record)


def test_keras_and_weights_round_trips_are_bit_exact(electra, tmp_path):
    config, ckpt = electra["sources"]["disc", "hf"]
    kw = dict(model="electra", with_discriminator=True, with_mlm=True)
    model = build_transformer_model(config, **kw)
    ref = run(model)
    assert len(ref) == 2 and ref[0].shape == (2, 8, 1) and ref[1].shape == (2, 8, VOCAB)
    model.save(tmp_path / "m.keras")
    for r, o in zip(ref, run(keras.saving.load_model(tmp_path / "m.keras"))):
        np.testing.assert_array_equal(r, o)
    model.save_weights(tmp_path / "m.weights.h5")
    other = build_transformer_model(config, str(tmp_path / "m.weights.h5"), **kw)
    for r, o in zip(ref, run(other)):
        np.testing.assert_array_equal(r, o)


def test_google_writer_uses_the_generator_layout(electra, tmp_path):
    config, ckpt = electra["sources"]["gen", "hf"]
    obj = build_transformer_model(config, ckpt, model="electra", with_mlm=True,
                                  return_keras_model=False)
    written = obj.save_weights_as_checkpoint(str(tmp_path / "gen.ckpt"))
    assert "electra/embeddings/word_embeddings" in written
    assert "generator/encoder/layer_0/attention/self/query/kernel" in written
    assert "generator_predictions/output_bias" in written
    back = build_transformer_model(config, str(tmp_path / "gen.ckpt"), model="electra",
                                   with_mlm=True)
    np.testing.assert_array_equal(run(obj.model), run(back))


# ---------------------------------------------------------------------------
# cached decoding
# ---------------------------------------------------------------------------

PROMPTS = [[5, 17, 3, 9, 22], [8, 30], [11, 4, 25, 6, 13, 2, 19]]
WIDTH = 16


def random_model(application):
    cfg = dict(vocab_size=40, embedding_size=EMB, num_hidden_layers=2, max_position=64, **DISC)
    obj = build_transformer_model(cfg, model="electra", application=application,
                                  with_mlm="linear", return_keras_model=False)
    rng = np.random.RandomState(0)
    for w in obj.model.weights:  # strong weights: the decode depends on the whole context
        shape = tuple(w.shape)
        if len(shape) == 2 and "Embedding-" in w.path and "Mapping" not in w.path:
            value = rng.randn(*shape)
        elif len(shape) == 2:
            value = 2.5 * rng.randn(*shape) / np.sqrt(shape[0])
        elif w.path.endswith("gamma"):
            value = 1.0 + 0.2 * rng.randn(*shape)
        else:
            value = 0.1 * rng.randn(*shape)
        if w.path == "Embedding-Token/embeddings":
            value[0] = 0.0
        w.assign(value.astype("float32"))
    return obj


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_cached_greedy_equals_uncached(application):
    obj = random_model(application)
    steps = 6
    width = max(len(p) for p in PROMPTS)
    tokens = np.array([p + [0] * (width - len(p)) for p in PROMPTS])
    inputs = [tokens, np.zeros_like(tokens)] if application == "unilm" else tokens
    cached = obj.generate(inputs, steps)
    reference = uncached_greedy(obj, PROMPTS, steps, WIDTH)
    assert cached == reference
    assert len({t for r in reference for t in r}) > 1  # not a constant decode
