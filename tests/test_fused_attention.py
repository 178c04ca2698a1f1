"""MultiHeadAttention through ``keras.ops.dot_product_attention`` (``fused_attention``).

The fused path must equal the layer's own softmax attention on identical weights (padding
masks including fully masked rows, T5's additive bias with a mask, no scaling), in values
and gradients, on every backend; it must really be taken where it is on (counted calls of
the op) and never where the call does not allow it (caches, relative embeddings, returned
scores, attention dropout while training). Whole-model parity on PyTorch, where it is on by
default, is covered by every family's transformers test.
"""
import numpy as np
import pytest

import keras
from keras import ops

from bert4keras3.layers import MultiHeadAttention


def pair(**kwargs):
    """Two layers with the same weights: fused and plain."""
    fused = MultiHeadAttention(heads=2, head_size=8, fused_attention=True, **kwargs)
    plain = MultiHeadAttention(heads=2, head_size=8, fused_attention=False, **kwargs)
    x = np.zeros((1, 5, 16), "float32")
    fused(x), plain(x)
    rng = np.random.RandomState(0)
    weights = [rng.randn(*w.shape).astype("float32") * 0.5 for w in fused.weights]
    fused.set_weights(weights), plain.set_weights(weights)
    return fused, plain


@pytest.fixture
def count_calls(monkeypatch):
    calls = []
    original = ops.dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(ops, "dot_product_attention", counting)
    return calls


def inputs(seed=1):
    rng = np.random.RandomState(seed)
    x = rng.randn(3, 7, 16).astype("float32")
    mask = np.ones((3, 1, 1, 7), bool)
    mask[1, ..., 4:] = False
    mask[2] = False  # a fully masked row: uniform weights in both paths
    return x, mask


@pytest.mark.parametrize("scale", [True, False])
def test_fused_equals_plain_with_mask_and_bias(scale, count_calls):
    fused, plain = pair(attention_scale=scale)
    x, mask = inputs()
    bias = np.random.RandomState(2).randn(1, 2, 7, 7).astype("float32")
    for kw in ({"attention_mask": mask}, {"attention_bias": bias},
               {"attention_mask": mask, "attention_bias": bias}, {}):
        count_calls.clear()
        got = ops.convert_to_numpy(fused(x, **kw))
        assert count_calls, kw  # the fused op ran
        count_calls.clear()
        want = ops.convert_to_numpy(plain(x, **kw))
        assert not count_calls
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6, err_msg=str(kw))


def test_fused_gradients_equal_plain():
    """Rows with at least one visible key (a fully masked row's uniform weights pass
    gradient to its scores in the fused kernels, not through this layer's ``where``)."""
    fused, plain = pair()
    x, mask = inputs()
    mask[2, ..., :3] = True
    grads = []
    for layer in (fused, plain):
        inp = keras.Input((7, 16))
        m = keras.Input((1, 1, 7), dtype="bool")
        model = keras.Model([inp, m], layer(inp, attention_mask=m))
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        before = [ops.convert_to_numpy(w) for w in layer.weights]
        model.train_on_batch([x, mask], np.ones((3, 7, 16), "float32"))
        grads.append([b - ops.convert_to_numpy(w) for b, w in zip(before, layer.weights)])
    for g_fused, g_plain in zip(*grads):
        assert np.abs(g_plain).max() > 0
        np.testing.assert_allclose(g_fused, g_plain, rtol=1e-4, atol=1e-6)


def test_default_is_on_for_pytorch_only_and_calls_that_allow_it(count_calls):
    layer = MultiHeadAttention(heads=2, head_size=8)
    x, mask = inputs()
    layer(x, attention_mask=mask)
    assert bool(count_calls) == (keras.backend.backend() == "torch")
    fused, _ = pair(attention_dropout=0.1)
    count_calls.clear()
    fused(x, attention_mask=mask, training=True)  # dropout on the weights: own path
    assert not count_calls
    fused(x, attention_mask=mask, training=False)
    assert count_calls
    count_calls.clear()
    cache = fused.init_cache(3, 8)
    fused(x[:, :1], attention_mask=np.ones((3, 1, 1, 8), bool), cache=cache, cache_index=0)
    assert not count_calls  # caches are heads-first: own path


def test_conflicting_options_raise_and_config_round_trips():
    with pytest.raises(ValueError, match="normalization='softmax_plus'"):
        MultiHeadAttention(2, 8, normalization="softmax_plus", fused_attention=True)
    with pytest.raises(ValueError, match="key_size=4 != head_size=8"):
        MultiHeadAttention(2, 8, key_size=4, fused_attention=True)
    with pytest.raises(ValueError, match="found 'yes'"):
        MultiHeadAttention(2, 8, fused_attention="yes")
    layer = MultiHeadAttention(2, 8, fused_attention=True)
    assert MultiHeadAttention.from_config(layer.get_config()).fused_attention is True
