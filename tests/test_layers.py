"""Core layers and backend helpers against NumPy transcriptions; serialization."""
import math

import keras
import numpy as np
import pytest

from bert4keras3 import backend as B
from bert4keras3.layers import (
    AttentionMask,
    BiasAdd,
    Embedding,
    FeedForward,
    FirstToken,
    LayerNormalization,
    MultiHeadAttention,
    PositionEmbedding,
    SinusoidalPositionEmbedding,
)

RNG = np.random.default_rng(0)


def np_(x):
    return keras.ops.convert_to_numpy(x)


def np_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def np_rotary(x, positions):
    """RoFormer rotary: pair (2i, 2i+1) rotated by pos * 10000^(-2i/d). x: [b, s, h, d]."""
    d = x.shape[-1]
    out = np.empty_like(x)
    for i in range(d // 2):
        theta = positions * 10000.0 ** (-2 * i / d)
        c, s = np.cos(theta)[None, :, None], np.sin(theta)[None, :, None]
        a, b = x[..., 2 * i], x[..., 2 * i + 1]
        out[..., 2 * i] = a * c - b * s
        out[..., 2 * i + 1] = b * c + a * s
    return out


def test_layer_norm_variants_match_numpy():
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    cond = RNG.normal(size=(2, 3)).astype("float32")
    ln = LayerNormalization(epsilon=1e-6)
    ln.build(x.shape)
    ln.gamma.assign(RNG.normal(size=8))
    ln.beta.assign(RNG.normal(size=8))
    mu = x.mean(-1, keepdims=True)
    ref = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np_(ln(x)), ref * np_(ln.gamma) + np_(ln.beta), atol=1e-5)
    rms = LayerNormalization(zero_mean=False, center=False, epsilon=1e-6)
    rms.build(x.shape)
    rms.gamma.assign(RNG.normal(size=8))
    ref = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * np_(rms.gamma)
    np.testing.assert_allclose(np_(rms(x)), ref, atol=1e-5)
    free = LayerNormalization(zero_mean=False, center=False, scale=False)
    assert not free.weights or len(free.weights) == 0
    ref = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(np_(free(x)), ref, atol=1e-5)
    con = LayerNormalization(conditional=True, hidden_units=4, epsilon=1e-6)
    con.build([x.shape, cond.shape])
    for w in con.weights:
        w.assign(RNG.normal(size=w.shape))
    h = cond @ np_(con.hidden_dense.kernel)
    gamma = np_(con.gamma) + h @ np_(con.gamma_dense.kernel)
    beta = np_(con.beta) + h @ np_(con.beta_dense.kernel)
    mu = x.mean(-1, keepdims=True)
    ref = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6)
    ref = ref * gamma[:, None] + beta[:, None]
    np.testing.assert_allclose(np_(con([x, cond])), ref, atol=1e-5)


@pytest.mark.parametrize("normalization", ["softmax", "softmax_plus", "squared_relu"])
@pytest.mark.parametrize("rotary", [False, True])
def test_multi_head_attention_matches_numpy(normalization, rotary):
    b, s, d, h, dk, dv = 2, 6, 12, 3, 4, 5
    x = RNG.normal(size=(b, s, d)).astype("float32")
    valid = np.array([[1] * 6, [1] * 4 + [0] * 2], bool)
    bias = RNG.normal(size=(1, h, s, s)).astype("float32")
    mha = MultiHeadAttention(h, dv, out_dim=7, key_size=dk, normalization=normalization,
                             rotary=rotary)
    out = np_(mha(x, attention_mask=valid[:, None, None, :], attention_bias=bias))
    w = {lay: [np_(v) for v in getattr(mha, lay).weights]
         for lay in ("q_dense", "k_dense", "v_dense", "o_dense")}
    q = (x @ w["q_dense"][0] + w["q_dense"][1]).reshape(b, s, h, dk)
    k = (x @ w["k_dense"][0] + w["k_dense"][1]).reshape(b, s, h, dk)
    v = (x @ w["v_dense"][0] + w["v_dense"][1]).reshape(b, s, h, dv)
    if rotary:
        q, k = np_rotary(q, np.arange(s)), np_rotary(k, np.arange(s))
    a = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(dk) + bias
    m = np.broadcast_to(valid[:, None, None, :], a.shape)
    n = m.sum(-1, keepdims=True)
    if normalization == "softmax_plus":
        a = a * np.log(n) / np.log(512)
    if normalization == "squared_relu":
        p = np.where(m, np.maximum(a, 0) ** 2 / n, 0)
    else:
        p = np_softmax(np.where(m, a, -1e12))
    o = np.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, s, h * dv)
    ref = o @ w["o_dense"][0] + w["o_dense"][1]
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_softmax_plus_clamped_variant():
    a = RNG.normal(size=(1, 1, 3, 5)).astype("float32")
    mask = np.array([1, 1, 0, 0, 0], bool)[None, None, None]
    out = np_(B.attention_normalize(a, mask, "softmax_plus", min_length=16))
    ref = np_softmax(np.where(mask, a * np.log(16) / np.log(512), -1e12))
    np.testing.assert_allclose(out, ref, atol=1e-6)
    with pytest.raises(ValueError, match="attention normaliser must be.*found 'relu3'"):
        B.attention_normalize(a, mask, "relu3")


def test_feed_forward_plain_and_gated():
    x = RNG.normal(size=(2, 3, 6)).astype("float32")
    ff = FeedForward(10, activation=["gelu_tanh", "linear"])
    out = np_(ff(x))
    w0, b0 = (np_(t) for t in ff.in_denses[0].weights)
    w1, b1 = (np_(t) for t in ff.in_denses[1].weights)
    wo, bo = (np_(t) for t in ff.o_dense.weights)
    g = x @ w0 + b0
    g = 0.5 * g * (1 + np.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g ** 3)))
    ref = (g * (x @ w1 + b1)) @ wo + bo
    np.testing.assert_allclose(out, ref, atol=1e-5)
    with pytest.raises(ValueError, match="unknown activation 'geluu'"):
        FeedForward(4, activation="geluu")


def test_gelu_forms():
    x = np.linspace(-4, 4, 41).astype("float32")
    from scipy.special import erf

    np.testing.assert_allclose(np_(B.get_activation("gelu")(x)),
                               0.5 * x * (1 + erf(x / math.sqrt(2))), atol=1e-6)
    tanh_form = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(np_(B.get_activation("gelu_new")(x)), tanh_form, atol=1e-6)


def test_embedding_dense_mode_and_mask():
    emb = Embedding(11, 4, mask_zero=True)
    ids = np.array([[3, 4, 0]])
    h = np_(emb(ids))
    table = np_(emb.embeddings)
    np.testing.assert_allclose(h, table[ids], atol=0)
    np.testing.assert_array_equal(np_(emb.compute_mask(ids)), ids != 0)
    logits = np_(emb(h, mode="dense"))
    np.testing.assert_allclose(logits, h @ table.T, atol=1e-6)
    with pytest.raises(ValueError, match="mode must be 'embedding' or 'dense', found 'x'"):
        emb(ids, mode="x")


def test_position_embeddings():
    x = RNG.normal(size=(2, 4, 6)).astype("float32")
    pe = PositionEmbedding(10, 6, embeddings_initializer="random_normal")
    np.testing.assert_allclose(np_(pe(x)), x + np_(pe.embeddings)[None, :4], atol=1e-6)
    sp = SinusoidalPositionEmbedding(6, merge_mode="zero")
    pos = np.arange(4)[:, None] * 10000.0 ** (-2 * np.arange(3) / 6)
    ref = np.stack([np.sin(pos), np.cos(pos)], -1).reshape(4, 6)  # bert4keras: interleaved
    np.testing.assert_allclose(np_(sp(x))[0], ref, atol=1e-5)


def test_sequence_masking_and_masks():
    x = RNG.normal(size=(2, 3, 4)).astype("float32")
    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    out = np_(B.sequence_masking(x, mask, "-inf", axis=1))
    assert (out[~mask] <= -1e11).all() and np.array_equal(out[mask], x[mask])
    seg = np.array([[0, 0, 1, 1, 0]])
    ref = np.zeros((5, 5), bool)
    idx = np.cumsum(seg[0])
    for i in range(5):
        for j in range(5):
            ref[i, j] = idx[j] <= idx[i]
    np.testing.assert_array_equal(np_(B.unilm_mask(seg))[0], ref)
    np.testing.assert_array_equal(np_(B.causal_mask(4)), np.tril(np.ones((4, 4), bool)))
    am = AttentionMask("lm")(np.array([[5, 6, 0]]))
    np.testing.assert_array_equal(np_(am)[0, 0], np.tril(np.ones((3, 3), bool)) & [1, 1, 0])


# get_config / .keras / .weights.h5 / fit / bf16 of every layer: tests/test_harness.py


def test_layers_in_a_saved_keras_model(tmp_path):
    ids = keras.Input((None,), dtype="int32")
    h = Embedding(20, 8, mask_zero=True, name="emb")(ids)
    h = PositionEmbedding(16, 8, name="pos")(h)
    h = LayerNormalization(conditional=False, name="ln")(h)
    a = MultiHeadAttention(2, 4, rotary=True, name="att")(
        h, attention_mask=AttentionMask("encoder", name="am")(ids))
    h = FeedForward(12, ["relu", "linear"], name="ff")(a)
    logits = Embedding(20, 8, name="out")(h, mode="dense")
    model = keras.Model(ids, [BiasAdd(name="bias")(logits), FirstToken(name="cls")(h)])
    x = np.array([[1, 2, 3, 0], [4, 5, 6, 7]])
    ref = [np_(o) for o in model(x)]
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for r, o in zip(ref, loaded(x)):
        np.testing.assert_array_equal(r, np_(o))
