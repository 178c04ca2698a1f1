"""Reduced precision on every family: bf16 / fp16 dtype policies and int8 quantization.

The reference is the same model in float32 on identical weights (its float32 numerics are
checked against ``transformers`` / NumPy transcriptions in the family tests). Metric: the
largest absolute difference over unpadded positions divided by the largest absolute float32
value (hidden states of encoders; probabilities of LM / T5 models). Tolerances (measured
values on tiny random models, 2 layers, hidden 32, in docs/precision.md):

* ``mixed_bfloat16`` (bf16 compute, float32 variables): 0.08 (measured 0.008-0.046);
* ``mixed_float16``: 0.015 (measured 0.0009-0.0070);
* ``model.quantize("int8")`` (every Dense kernel int8, per-channel scales; activations
  quantized per token; embeddings and norms stay float): 0.15 (measured 0.006-0.082).

Each check also asserts that the half-precision / int8 path was really taken (compute
dtype, quantized denses, a nonzero difference), so a silent float32 fallback fails.
"""
import contextlib
import functools
import gc

import numpy as np
import pytest

import keras
from keras import ops

from bert4keras3.models import build_transformer_model

BASE = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=64, hidden_act="gelu")
T5_CONFIG = dict(vocab_size=64, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,
                 relative_attention_num_buckets=8)
DEBERTA = dict(relative_attention=True, position_buckets=8, max_relative_positions=-1,
               pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm",
               position_biased_input=False, type_vocab_size=0)
#: family -> config overrides of BASE (T5 names use T5_CONFIG)
FAMILIES = {
    "bert": dict(type_vocab_size=2),
    "roberta": dict(type_vocab_size=2),
    "roformer": dict(type_vocab_size=2),
    "roformer_v2": dict(type_vocab_size=2),
    "gau_alpha": dict(type_vocab_size=2, num_attention_heads=1, attention_key_size=16,
                      max_position_embeddings=None),
    "nezha": dict(type_vocab_size=2, max_relative_position=16),
    "electra": dict(type_vocab_size=2),
    "albert": dict(type_vocab_size=2, embedding_size=16),
    "gpt": dict(type_vocab_size=2),
    "gpt2": dict(),
    "gpt2_ml": dict(),
    "deberta_v2": dict(DEBERTA, conv_kernel_size=3, conv_act="gelu"),
    "deberta_v3": dict(DEBERTA),
    "t5": dict(),
    "t5.1.1": dict(),
    "mt5.1.1": dict(),
}
#: families built with application="lm" (probabilities out)
LM_FAMILIES = ("gpt", "gpt2", "gpt2_ml")

TOLERANCE = {"mixed_bfloat16": 0.08, "mixed_float16": 0.015, "int8": 0.15}
HALF = {"mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}


def is_t5(family):
    return family.startswith(("t5", "mt5"))


def family_config(family):
    """The tiny config of ``family``."""
    if is_t5(family):
        return dict(T5_CONFIG)
    cfg = dict(BASE, **FAMILIES[family])
    return {k: v for k, v in cfg.items() if v is not None}


def build(family, application=None, **kwargs):
    """The builder object of a tiny ``family`` model (LM families: ``application="lm"``)."""
    if application is None:
        application = "lm" if family in LM_FAMILIES else "encoder"
    return build_transformer_model(family_config(family), model=family,
                                   application=application, return_keras_model=False,
                                   **kwargs)


def random_weights(model, seed=0):
    """Well-conditioned random values for ``model``'s weights (a list, model order).

    Kernels ``N(0, 1/fan_in)``, token embeddings ``N(0, 1)``, T5's untied output embedding
    ``N(0, 1/dim)``, relative tables ``N(0, 0.25)``, norm scales ``1 + N(0, 0.04)``, biases
    ``N(0, 0.01)``: activations stay O(1) and attention is far from uniform.
    """
    rng = np.random.RandomState(seed)
    values = []
    for w in model.weights:
        shape = tuple(w.shape)
        if "Output-LM" in w.path:
            value = rng.randn(*shape) / np.sqrt(shape[1])
        elif len(shape) >= 2 and "mbedding" in w.path:
            value = (0.5 if "Relative" in w.path else 1.0) * rng.randn(*shape)
        elif len(shape) >= 2:
            value = rng.randn(*shape) / np.sqrt(np.prod(shape[:-1]))
        elif w.path.endswith(("gamma", "scale")):
            value = 1.0 + 0.2 * rng.randn(*shape)
        else:
            value = 0.1 * rng.randn(*shape)
        values.append(value.astype("float32"))
    return values


def model_inputs(obj, seed=1):
    """Inputs of the tiny model: 2 rows of 12 ids, the second padded after 8."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, 64, size=(2, 12)).astype("int32")
    ids[1, 8:] = 0
    names = [t.name for t in obj.model.inputs]
    if len(names) == 1:
        return [ids]
    if "Segment" in names[1]:
        segments = np.zeros_like(ids)
        segments[:, 6:] = 1
        segments[ids == 0] = 0
        return [ids, segments]
    decoder = rng.randint(1, 64, size=(2, 7)).astype("int32")
    decoder[:, 0] = 0
    return [ids, decoder]


@contextlib.contextmanager
def dtype_policy(name):
    """Set the global Keras dtype policy for the block (restored after)."""
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(old)


def relative_error(y, ref, ids):
    """max |y - ref| over unpadded positions / max |ref| there."""
    y = np.asarray(ops.convert_to_numpy(ops.cast(y, "float32")), dtype="float64")
    ref = np.asarray(ref, dtype="float64")
    valid = ids != 0 if ref.shape[1] == ids.shape[1] else np.ones(ref.shape[:2], bool)
    return float(np.abs(y - ref)[valid].max() / np.abs(ref[valid]).max())


@functools.lru_cache(maxsize=None)
def float32_reference(family):
    """``(weights, inputs, float32 output)`` of the tiny ``family`` model (computed once)."""
    obj = build(family)
    weights = random_weights(obj.model)
    obj.model.set_weights(weights)
    x = model_inputs(obj)
    return weights, x, ops.convert_to_numpy(obj.model(x))


def quantize_int8(model):
    """``model.quantize("int8")`` with the garbage collector's heap frozen.

    Keras runs ``gc.collect()`` once per quantized Dense; in a process holding three
    backends that full collection costs ~0.3 s each. ``gc.freeze()`` leaves the existing
    objects out of it (same result, a fraction of the time).
    """
    gc.freeze()
    try:
        model.quantize("int8")
    finally:
        gc.unfreeze()


def _denses(model):
    return [l for l in model._flatten_layers(include_self=False)
            if isinstance(l, keras.layers.Dense)]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_half_precision_forward_is_close_to_float32(family):
    weights, x, ref = float32_reference(family)
    for policy in ("mixed_bfloat16", "mixed_float16"):
        with dtype_policy(policy):
            obj = build(family)
        # variables stay float32 under a mixed policy: the same weights load unchanged
        assert all(w.dtype == "float32" for w in obj.model.weights)
        obj.model.set_weights(weights)
        dense = _denses(obj.model)[0]
        assert dense.compute_dtype == HALF[policy], (family, policy, dense.compute_dtype)
        y = obj.model(x)
        err = relative_error(y, ref, x[0])
        assert 0.0 < err <= TOLERANCE[policy], (family, policy, err)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_int8_forward_is_close_to_float32(family):
    weights, x, ref = float32_reference(family)
    obj = build(family)
    obj.model.set_weights(weights)
    quantize_int8(obj.model)
    denses = _denses(obj.model)
    assert denses and all(d.quantization_mode == "int8" for d in denses)
    err = relative_error(obj.model(x), ref, x[0])
    assert 0.0 < err <= TOLERANCE["int8"], (family, err)


def test_float16_norm_statistics_do_not_overflow():
    # token embeddings of size ~1000: their squares (~1e6) overflow float16 (max 65504), so
    # LayerNormalization must compute its statistics in float32 to stay finite and close
    obj = build("bert")
    weights = list(random_weights(obj.model))
    paths = [w.path for w in obj.model.weights]
    weights[paths.index("Embedding-Token/embeddings")] *= 500.0
    obj.model.set_weights(weights)
    x = model_inputs(obj)
    ref = ops.convert_to_numpy(obj.model(x))
    with dtype_policy("mixed_float16"):
        half = build("bert")
    half.model.set_weights(weights)
    y = ops.convert_to_numpy(ops.cast(half.model(x), "float32"))
    assert np.isfinite(y).all()
    assert relative_error(y, ref, x[0]) <= TOLERANCE["mixed_float16"]


# ---------------------------------------------------------------------------
# cached greedy decoding under int8 / bf16
# ---------------------------------------------------------------------------

PROMPTS = [[5, 17, 3, 9, 22], [8, 30], [11, 4, 25, 6, 13, 2, 19]]


def uncached_t5_greedy(obj, encoder_ids, steps, width=8):
    """Greedy decode of a T5 builder object re-running the full model at every step.

    The decoder ids are 0-padded to ``width`` (one shape for every step; the causal mask
    keeps the padding out of earlier positions).
    """
    rows = [[0] for _ in encoder_ids]
    for t in range(steps):
        dec = np.zeros((len(rows), width), "int32")
        dec[:, :t + 1] = np.asarray(rows, "int32")
        probs = ops.convert_to_numpy(obj.model([encoder_ids, dec]))
        for r in range(len(rows)):
            rows[r].append(int(np.argmax(probs[r, t])))
    return [r[1:] for r in rows]


def uncached_lm_greedy(obj, prompts, steps, width=16):
    from conftest import uncached_greedy

    return uncached_greedy(obj, prompts, steps, width)


def _padded(prompts):
    out = np.zeros((len(prompts), max(map(len, prompts))), "int32")
    for r, p in enumerate(prompts):
        out[r, :len(p)] = p
    return out


@pytest.mark.parametrize("family", ["gpt2", "t5.1.1"])
def test_int8_cached_greedy_generation_equals_uncached(family):
    obj = build(family, with_mlm="linear") if family == "gpt2" else build(family)
    obj.model.set_weights(random_weights(obj.model))
    quantize_int8(obj.model)
    steps = 5
    if is_t5(family):
        enc = _padded(PROMPTS)
        expected = uncached_t5_greedy(obj, enc, steps)
        got = obj.generate(enc, steps)
    else:
        expected = uncached_lm_greedy(obj, PROMPTS, steps)
        got = obj.generate(PROMPTS, steps)
    assert len({tuple(r) for r in expected}) > 1
    assert got == expected


@pytest.mark.parametrize("family", ["gpt2", "t5.1.1"])
def test_bfloat16_cached_greedy_generation_runs(family):
    kwargs = {"with_mlm": "linear"} if family == "gpt2" else {}
    ref = build(family, **kwargs)
    weights = random_weights(ref.model)
    ref.model.set_weights(weights)
    with dtype_policy("mixed_bfloat16"):
        obj = build(family, **kwargs)
    obj.model.set_weights(weights)
    steps = 4
    if is_t5(family):
        enc = _padded(PROMPTS)
        got = obj.generate(enc, steps)
        # float32 scores of the first new token (decoder input: the start id 0)
        scores = ops.convert_to_numpy(ref.model([enc, np.zeros((len(enc), 1), "int32")]))[:, 0]
    else:
        got = obj.generate(PROMPTS, steps)
        scores = ops.convert_to_numpy(ref.model.predict_on_batch(_padded(PROMPTS)))
        scores = np.stack([scores[r, len(p) - 1] for r, p in enumerate(PROMPTS)])
    assert [len(r) for r in got] == [steps] * len(PROMPTS)
    # bf16 rounding may swap near-ties, so the first new token must be a near-argmax of the
    # float32 scores (within the bf16 tolerance of their range), not necessarily the argmax
    span = scores.max(axis=-1) - scores.min(axis=-1)
    chosen = scores[np.arange(len(got)), [r[0] for r in got]]
    assert (chosen >= scores.max(axis=-1) - TOLERANCE["mixed_bfloat16"] * span).all()
