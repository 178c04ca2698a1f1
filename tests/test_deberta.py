"""DeBERTa-v2 / v3: parity with transformers' DebertaV2 models, round trips, loader errors."""
import os

import keras
import numpy as np
import pytest
import torch
import transformers

from bert4keras3.checkpoints import CheckpointError
from bert4keras3.layers import DisentangledSelfAttention, log_bucket_position
from bert4keras3.models import build_transformer_model

VOCAB = 60
# long enough that positions beyond the exact buckets (|i - j| > 4) are log-bucketed
RNG = np.random.RandomState(0)
TOKENS = RNG.randint(1, VOCAB, size=(2, 40))
TOKENS[0, 26:] = 0  # unequal lengths, 0-padded
SEGMENTS = RNG.randint(0, 2, size=TOKENS.shape) * (TOKENS != 0)
MASK = TOKENS != 0

#: the DeBERTa-v3 config shape (shared keys, log buckets, normalised relative table)
V3 = dict(relative_attention=True, position_buckets=8, max_relative_positions=-1,
          pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm",
          position_biased_input=False, type_vocab_size=0)
#: DeBERTa-v2 xlarge shape: as v3 plus the convolution after the first block
V2_CONV = dict(V3, conv_kernel_size=3, conv_act="gelu")
#: separate position projections, no buckets, c2p only, absolute positions, segments,
#: factorised embeddings
SEPARATE = dict(relative_attention=True, position_buckets=-1, max_relative_positions=12,
                pos_att_type=["c2p"], share_att_key=False, norm_rel_ebd="none",
                position_biased_input=True, type_vocab_size=2, embedding_size=24)


def _config(**kw):
    base = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=48, max_position_embeddings=64, hidden_act="gelu",
                layer_norm_eps=1e-7)
    base.update(kw)
    return transformers.DebertaV2Config(**base)


def _perturb(model):
    """Non-trivial norms and biases (zeros / ones would hide mistakes)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _save(model, tmp_path_factory, name):
    path = tmp_path_factory.mktemp(name)
    model.save_pretrained(path)
    return str(path)


def _inputs(segments):
    return [TOKENS, SEGMENTS] if segments else TOKENS


def _torch_kwargs(segments):
    kw = dict(input_ids=torch.tensor(TOKENS),
              attention_mask=torch.tensor(MASK.astype("int64")))
    if segments:
        kw["token_type_ids"] = torch.tensor(SEGMENTS)
    return kw


def _run(model, inputs):
    """A compiled forward pass (one XLA program: much faster than eager JAX op by op)."""
    out = model.predict_on_batch(inputs)
    if isinstance(out, (list, tuple)):
        return [np.asarray(o) for o in out]
    return np.asarray(out)


CONFIGS = {"v3": V3, "v2_conv": V2_CONV, "separate": SEPARATE}


@pytest.fixture(scope="module")
def hf_saved(tmp_path_factory):
    """``kind -> (options, DebertaV2Model, save_pretrained directory)``, built once each."""
    cache = {}

    def get(kind):
        if kind not in cache:
            torch.manual_seed(0)
            model = _perturb(transformers.DebertaV2Model(_config(**CONFIGS[kind])).eval())
            cache[kind] = CONFIGS[kind], model, _save(model, tmp_path_factory, kind)
        return cache[kind]

    return get


@pytest.fixture(params=sorted(CONFIGS))
def hf_encoder(request, hf_saved):
    return (request.param,) + hf_saved(request.param)


def test_v2_and_v3_are_one_architecture():
    from bert4keras3.models import MODELS

    assert MODELS["deberta_v2"] is MODELS["deberta_v3"]


def test_hidden_states_match_transformers(hf_encoder):
    kind, options, model, path = hf_encoder
    name = "deberta_v3" if kind == "v3" else "deberta_v2"
    segments = options["type_vocab_size"] > 0
    with torch.no_grad():
        ref = model(**_torch_kwargs(segments)).last_hidden_state.numpy()
    km = build_transformer_model(os.path.join(path, "config.json"), path, model=name)
    out = _run(km, _inputs(segments))
    assert np.abs(out - ref)[MASK].max() <= 1e-4


def test_custom_position_ids_match_transformers(hf_saved):
    """``custom_position_ids`` feed the absolute embedding (relative positions stay 0..n-1)."""
    _, model, path = hf_saved("separate")
    positions = np.arange(TOKENS.shape[1])[None].repeat(2, 0) + np.array([[0], [5]])
    with torch.no_grad():
        ref = model(**_torch_kwargs(True), position_ids=torch.tensor(positions))
    km = build_transformer_model(os.path.join(path, "config.json"), path, model="deberta_v2",
                                 custom_position_ids=True)
    out = _run(km, [TOKENS, SEGMENTS, positions])
    assert np.abs(out - ref.last_hidden_state.numpy())[MASK].max() <= 1e-4


def test_layer_names_follow_bert4keras(hf_encoder):
    kind, options, _, path = hf_encoder
    km = build_transformer_model(os.path.join(path, "config.json"), model="deberta_v3")
    names = {layer.name for layer in km.layers}
    expected = {"Embedding-Token", "Embedding-Norm", "Embedding-Masking",
                "Transformer-0-MultiHeadSelfAttention", "Transformer-1-FeedForward-Norm",
                "Embedding-Relative-Position"}
    assert expected <= names
    attention = km.get_layer("Transformer-0-MultiHeadSelfAttention")
    assert isinstance(attention, DisentangledSelfAttention)
    assert ("Embedding-Position" in names) == options["position_biased_input"]
    assert ("Transformer-0-Conv" in names) == bool(options.get("conv_kernel_size"))


@pytest.fixture(scope="module")
def hf_mlm(tmp_path_factory):
    out = {}
    for legacy in (True, False):
        torch.manual_seed(1)
        model = _perturb(transformers.DebertaV2ForMaskedLM(_config(**V3, legacy=legacy)).eval())
        out[legacy] = model, _save(model, tmp_path_factory, f"mlm{int(legacy)}")
    return out


@pytest.mark.parametrize("legacy", [True, None])
def test_mlm_probabilities_match_transformers(hf_mlm, legacy):
    """``legacy=True``: ``cls.predictions.*``; ``None`` on a ``legacy=False`` file: the
    ``lm_predictions.lm_head.*`` names (those of Microsoft's releases) are found in it."""
    model, path = hf_mlm[legacy is True]
    with torch.no_grad():
        logits = model(**_torch_kwargs(False)).logits
    probs = torch.softmax(logits, -1).numpy()
    km = build_transformer_model(os.path.join(path, "config.json"), path, model="deberta_v3",
                                 with_mlm=True, legacy=legacy)
    out = _run(km, TOKENS)
    assert np.abs(out - probs)[MASK].max() <= 1e-5
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*not used by the model")
def test_pooler_matches_transformers(tmp_path_factory):
    torch.manual_seed(2)
    model = _perturb(transformers.DebertaV2ForSequenceClassification(_config(**V3)).eval())
    path = _save(model, tmp_path_factory, "cls")
    with torch.no_grad():
        hidden = model.deberta(**_torch_kwargs(False)).last_hidden_state
        pooled = model.pooler(hidden).numpy()
    km = build_transformer_model(os.path.join(path, "config.json"), path, model="deberta_v3",
                                 with_pool=True)
    assert np.abs(_run(km, TOKENS) - pooled).max() <= 1e-4


def test_log_buckets_match_transformers():
    from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

    rel = np.arange(-700, 701)[None, :] + np.zeros((1, 1), dtype="int64")
    for buckets, max_position in ((8, 64), (256, 512), (32, 100)):
        ref = make_log_bucket_position(torch.tensor(rel), buckets, max_position).numpy()
        out = keras.ops.convert_to_numpy(log_bucket_position(rel, buckets, max_position))
        np.testing.assert_array_equal(out, ref.astype(out.dtype))


def _tiny(**kw):
    config = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=32)
    config.update(V2_CONV, **kw)
    return config


def test_keras_and_weights_round_trips_are_bit_exact(tmp_path):
    # every weight kind at once: separate position projections, normalised table,
    # absolute positions, segments, factorised embeddings, convolution, both heads
    options = dict(SEPARATE, pos_att_type="c2p|p2c", norm_rel_ebd="layer_norm")
    config = _tiny(**options)
    kw = dict(with_mlm=True, with_pool=True)
    model = build_transformer_model(config, model="deberta_v3", **kw)
    ids = np.array([[2, 5, 6, 3, 0, 0], [2, 7, 8, 9, 10, 3]])
    inputs = [ids, (ids > 6).astype("int64")] if options.get("type_vocab_size") else ids
    ref = _run(model, inputs)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for r, o in zip(keras.tree.flatten(ref), keras.tree.flatten(_run(loaded, inputs))):
        np.testing.assert_array_equal(r, o)
    model.save_weights(tmp_path / "m.weights.h5")
    other = build_transformer_model(config, str(tmp_path / "m.weights.h5"), model="deberta_v3",
                                    **kw)
    assert len(model.weights) == len(other.weights)
    for a, b in zip(model.weights, other.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


@pytest.mark.parametrize("options", [V3, SEPARATE])
def test_attention_layer_config_round_trip(options):
    layer = DisentangledSelfAttention(
        heads=2, head_size=8, relative_attention=True, pos_att_type=options["pos_att_type"],
        position_buckets=options["position_buckets"], max_relative_positions=12,
        share_att_key=options["share_att_key"], position_dropout=0.1, name="att")
    clone = DisentangledSelfAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert (clone.pos_k_dense is None) == options["share_att_key"]


def test_misshapen_and_missing_variables_are_named(hf_saved):
    _, _, path = hf_saved("v3")
    config = os.path.join(path, "config.json")
    # a relative table of another size: the variable and both shapes are named
    with pytest.raises(CheckpointError) as err:
        build_transformer_model(config, path, model="deberta_v3", position_buckets=16)
    message = str(err.value)
    assert "encoder.rel_embeddings.weight" in message
    assert "(16, 32)" in message and "(32, 32)" in message
    # absolute positions the checkpoint does not have: the missing variable is named
    with pytest.raises(CheckpointError, match=r"embeddings\.position_embeddings\.weight"):
        build_transformer_model(config, path, model="deberta_v3", position_biased_input=True)


def test_unused_variables_are_named_in_a_warning(hf_saved):
    _, _, path = hf_saved("v2_conv")
    # a model without the convolution leaves the checkpoint's conv variables unused
    with pytest.warns(UserWarning, match=r"encoder\.conv\.conv\.weight"):
        build_transformer_model(os.path.join(path, "config.json"), path, model="deberta_v3",
                                conv_kernel_size=0)


@pytest.mark.parametrize("options, match", [
    (dict(application="lm"), "application='encoder'"),
    (dict(application="unilm"), "application='encoder'"),
    (dict(with_nsp=True), "with_nsp"),
    (dict(hierarchical_position=True), "hierarchical_position"),
    (dict(residual_attention_scores=True), "residual_attention_scores"),
    (dict(conv_kernel_size=4), "conv_kernel_size must be odd"),
    (dict(norm_rel_ebd="rms_norm"), "norm_rel_ebd"),
    (dict(pos_att_type="p2p|c2p"), "pos_att_type"),
    (dict(custom_position_ids=True), "position_biased_input"),
    (dict(attention_key_size=4), "attention_key_size"),
    (dict(pooler_hidden_size=8), "pooler_hidden_size"),
    (dict(not_an_option=1), "not_an_option"),
])
def test_unsupported_options_raise(options, match):
    config = _tiny()
    application = options.pop("application", "encoder")
    with pytest.raises(ValueError, match=match):
        build_transformer_model(config, model="deberta_v3", application=application, **options)
