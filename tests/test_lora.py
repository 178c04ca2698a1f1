"""``bert4keras3.lora``: targets per family, frozen base, exact save / load, decoding.

Tiny random models of every family (configs shared with ``test_precision``). The expected
targets are listed from each family's documented layer names, independently of the code
that selects them (which goes by layer class).
"""
import numpy as np
import pytest

import keras
from keras import ops

from bert4keras3.lora import (enable_lora, load_lora_weights, lora_layers, lora_targets,
                              save_lora_weights)
from test_precision import (FAMILIES, PROMPTS, _padded, build, is_t5, model_inputs,
                            random_weights, uncached_lm_greedy, uncached_t5_greedy)

ATTENTION = ("q_dense", "k_dense", "v_dense", "o_dense")
LAYERS = 2


def expected_targets(family, group):
    """Dense paths that LoRA should adapt, from the families' layer names."""
    if is_t5(family):
        blocks = ([f"Encoder-Transformer-{i}-MultiHeadSelfAttention" for i in range(LAYERS)]
                  + [f"Decoder-Transformer-{i}-MultiHead{kind}Attention"
                     for i in range(LAYERS) for kind in ("Self", "Cross")])
        ffn = [f"{side}-Transformer-{i}-FeedForward" for side in ("Encoder", "Decoder")
               for i in range(LAYERS)]
        ffn_denses = ("i0_dense", "i1_dense", "o_dense") if family != "t5" else (
            "i0_dense", "o_dense")
    elif family == "gau_alpha":
        blocks = [f"Transformer-{i}-GatedAttentionUnit" for i in range(LAYERS)]
        return sorted(f"{b}/{d}" for b in blocks for d in ("i_dense", "o_dense")) \
            if group == "attention" else []
    elif family == "albert":  # one block object shared by every depth
        blocks, ffn = ["Transformer-MultiHeadSelfAttention"], ["Transformer-FeedForward"]
        ffn_denses = ("i0_dense", "o_dense")
    else:
        blocks = [f"Transformer-{i}-MultiHeadSelfAttention" for i in range(LAYERS)]
        ffn = [f"Transformer-{i}-FeedForward" for i in range(LAYERS)]
        ffn_denses = ("i0_dense", "o_dense")
    if group == "attention":
        return sorted(f"{b}/{d}" for b in blocks for d in ATTENTION)
    return sorted(f"{b}/{d}" for b in ffn for d in ffn_denses)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_targets_per_family(family):
    obj = build(family)
    attention = expected_targets(family, "attention")
    ffn = expected_targets(family, "ffn")
    assert sorted(lora_targets(obj, "attention")) == attention
    assert sorted(lora_targets(obj, "ffn")) == ffn
    assert sorted(lora_targets(obj, "all")) == sorted(attention + ffn)
    enabled = enable_lora(obj, rank=2, targets="all")
    assert sorted(enabled) == sorted(attention + ffn)
    # every trainable weight is a LoRA matrix, two per target; the rest is frozen
    trainable = sorted(w.path for w in obj.model.trainable_weights)
    assert trainable == sorted(f"{p}/lora_kernel_{m}" for p in enabled for m in "ab")
    assert len(obj.model.non_trainable_weights) == len(obj.model.weights) - len(trainable)


def test_bad_arguments_raise():
    obj = build("bert")
    with pytest.raises(ValueError, match="targets"):
        enable_lora(obj, 2, targets="mlp")
    with pytest.raises(ValueError, match="rank"):
        enable_lora(obj, 0)
    with pytest.raises(ValueError, match="no layer named"):
        enable_lora(obj, 2, train_layers=["Classifier"])
    with pytest.raises(ValueError, match="no LoRA-enabled layer"):
        save_lora_weights(obj.model, "x.npz")
    enable_lora(obj, 2)
    with pytest.raises(ValueError, match="already enabled"):
        enable_lora(obj, 2)


def _outputs(model, x):
    y = model(x)
    return [ops.convert_to_numpy(t) for t in (y if isinstance(y, (list, tuple)) else [y])]


@pytest.mark.parametrize("family", ["bert", "albert", "gau_alpha", "deberta_v3", "gpt2",
                                    "t5.1.1"])
def test_lora_at_init_equals_base_model(family):
    obj = build(family)
    weights = random_weights(obj.model)
    obj.model.set_weights(weights)
    x = model_inputs(obj)
    base = _outputs(obj.model, x)
    enable_lora(obj, rank=4, targets="all")
    for d in lora_layers(obj).values():  # B = 0, A random
        assert not np.any(ops.convert_to_numpy(d.lora_kernel_b))
        assert np.any(ops.convert_to_numpy(d.lora_kernel_a))
    # equal up to float rounding: on PyTorch the fused attention kernel that
    # scaled_dot_product_attention picks depends on which inputs require gradients, and
    # freezing T5's relative-bias table changes that choice (2e-7 apart); elsewhere bit-exact
    for a, b in zip(_outputs(obj.model, x), base):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _tune(obj, steps=3, seed=0, **lora):
    """Enable LoRA and run ``steps`` optimizer steps of a regression on the outputs."""
    enable_lora(obj, **lora)
    x = model_inputs(obj, seed=seed)
    y = obj.model(x)
    target = np.random.RandomState(seed).randn(*ops.shape(y)).astype("float32")
    obj.model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    obj.model.fit(x, target, batch_size=2, epochs=steps, verbose=0, shuffle=False)
    return x


@pytest.mark.parametrize("family", ["bert", "albert", "gau_alpha", "t5.1.1"])
def test_fit_changes_only_lora_weights_and_save_load_restores_exactly(family, tmp_path):
    obj = build(family)
    base = random_weights(obj.model)
    obj.model.set_weights(base)
    before = {w.path: ops.convert_to_numpy(w) for w in obj.model.weights}
    x = _tune(obj, rank=2, targets="all", alpha=4)
    lora_paths = {f"{p}/lora_kernel_{m}" for p in lora_layers(obj) for m in "ab"}
    changed = set()
    for w in obj.model.weights:
        value = ops.convert_to_numpy(w)
        if w.path in lora_paths:
            if w.path.endswith("lora_kernel_b"):
                assert np.any(value), w.path  # trained away from zero
            changed.add(w.path)
        else:
            np.testing.assert_array_equal(value, before[w.path], err_msg=w.path)
    assert changed == lora_paths
    tuned = _outputs(obj.model, x)

    path = str(tmp_path / "adapter.npz")
    assert save_lora_weights(obj, path) == len(lora_layers(obj))
    with np.load(path) as data:  # nothing but the A/B matrices (and their metadata)
        assert set(data.files) - {"__lora_meta__"} == lora_paths
    fresh = build(family)
    fresh.model.set_weights(base)
    assert _outputs(fresh.model, x)[0].tolist() != tuned[0].tolist()
    assert load_lora_weights(fresh, path) == len(lora_layers(obj))
    for a, b in zip(_outputs(fresh.model, x), tuned):
        np.testing.assert_array_equal(a, b)
    assert sorted(w.path for w in fresh.model.trainable_weights) == sorted(lora_paths)
    for d in lora_layers(fresh).values():
        assert (d.lora_rank, d.lora_alpha) == (2, 4)


def test_load_errors_name_the_mismatch(tmp_path):
    obj = build("bert")
    enable_lora(obj, rank=2)
    path = str(tmp_path / "bert.npz")
    save_lora_weights(obj, path)
    other = build("bert")
    enable_lora(other, rank=3)
    with pytest.raises(ValueError, match="rank 3.*rank 2"):
        load_lora_weights(other, path)
    other = build("bert")
    enable_lora(other, rank=2, targets="all")
    with pytest.raises(ValueError, match="FeedForward"):  # LoRA on denses the file lacks
        load_lora_weights(other, path)
    with pytest.raises(ValueError, match="does not have"):
        load_lora_weights(build("gau_alpha"), path)
    wide = build("bert", hidden_size=48)
    with pytest.raises(ValueError, match=r"expects shape \(48, 2\).*\(32, 2\)"):
        load_lora_weights(wide, path)
    np.savez(str(tmp_path / "plain.npz"), a=np.zeros(2))
    with pytest.raises(ValueError, match="not a LoRA weights file"):
        load_lora_weights(build("bert"), str(tmp_path / "plain.npz"))
    with pytest.raises(ValueError, match=".npz"):
        save_lora_weights(obj, str(tmp_path / "adapter.h5"))


def test_train_layers_keeps_a_task_head_trainable():
    obj = build("bert")
    obj.model.set_weights(random_weights(obj.model))
    head = keras.layers.Dense(3, name="Classifier")
    model = keras.Model(obj.model.inputs, head(obj.model.output[:, 0]))
    enabled = enable_lora(model, rank=2, train_layers=["Classifier"])
    trainable = {w.path for w in model.trainable_weights}
    assert trainable == ({f"{p}/lora_kernel_{m}" for p in enabled for m in "ab"}
                         | {"Classifier/kernel", "Classifier/bias"})


@pytest.mark.parametrize("family,application", [("t5.1.1", None), ("roformer_v2", "unilm"),
                                                ("gpt2", "lm")])
def test_cached_greedy_with_trained_lora_equals_uncached(family, application):
    # T5.1.1 and RoFormerV2 are bias-free: their decoding fuses q/k/v (and gate/up)
    # kernels into one product, which must include the LoRA update
    kwargs = {"with_mlm": "linear"} if application else {}
    obj = build(family, application=application, **kwargs)
    obj.model.set_weights(random_weights(obj.model))
    enabled = enable_lora(obj, rank=2, targets="all")
    rng = np.random.RandomState(3)
    for d in enabled.values():  # a trained-looking (nonzero) update
        d.lora_kernel_b.assign(0.5 * rng.randn(*d.lora_kernel_b.shape).astype("float32"))
    steps = 4
    if is_t5(family):
        enc = _padded(PROMPTS)
        expected = uncached_t5_greedy(obj, enc, steps)
        got = obj.generate(enc, steps)
    elif application == "unilm":
        expected = uncached_lm_greedy(obj, PROMPTS, steps)
        tokens = _padded(PROMPTS)
        got = obj.generate([tokens, np.zeros_like(tokens)], steps)
    else:
        expected = uncached_lm_greedy(obj, PROMPTS, steps)
        got = obj.generate(PROMPTS, steps)
    assert len({tuple(r) for r in expected}) > 1
    assert got == expected


def test_lora_on_an_int8_model_trains_only_lora_weights():
    # QLoRA-style: int8 kernels stay frozen, the float32 A/B matrices train
    from test_precision import quantize_int8

    obj = build("bert")
    obj.model.set_weights(random_weights(obj.model))
    quantize_int8(obj.model)
    before = {w.path: ops.convert_to_numpy(w) for w in obj.model.weights}
    _tune(obj, rank=2)
    enabled = lora_layers(obj)
    assert len(enabled) == 8 and all(d.quantization_mode == "int8" for d in enabled.values())
    lora_paths = {f"{p}/lora_kernel_{m}" for p in enabled for m in "ab"}
    assert {w.path for w in obj.model.trainable_weights} == lora_paths
    for w in obj.model.weights:
        if w.path not in lora_paths:
            np.testing.assert_array_equal(ops.convert_to_numpy(w), before[w.path],
                                          err_msg=w.path)
    assert all(np.any(ops.convert_to_numpy(d.lora_kernel_b)) for d in enabled.values())
