"""GatedAttentionUnit and GAU-alpha against a NumPy transcription of the published equations.

References (written here, independent of the code under test):

* GAU (FLASH, arXiv:2202.10447; GAU-alpha, kexue.fm/archives/9052):
  ``u, v, z = split(swish(x W_i + b_i))``, ``q = z*g_q + b_q``, ``k = z*g_k + b_k``, RoPE on
  q/k, ``A = norm(q k^T / sqrt(s))``, ``o = (u * A v) W_o + b_o``;
* normalisers: softmax; softmax_plus ``softmax(a * log(n) / log(512))`` (n = keys the query
  sees; optional clamp ``max(n, m)``); squared_relu ``relu(a)^2 / n``;
* GAU-alpha: token + segment embeddings, parameter-free RMS norm, ``x = rms(x + GAU(x))``,
  tied MLM head.

GAU-alpha checkpoints are written with ``tf.compat.v1`` under the released variable names
(``bert/embeddings/...``, ``GAU_alpha/encoder/layer_{i}/gau/...``).
"""
import json
import math

import numpy as np
import pytest

import keras
from keras import ops

from conftest import write_tf1_checkpoint
from bert4keras3.checkpoints import CheckpointError
from bert4keras3.layers.gau import GatedAttentionUnit, ScaleOffset
from bert4keras3.models import build_transformer_model

TOL = 1e-4
NORMALIZERS = ("softmax", "softmax_plus", "squared_relu")


# ---------------------------------------------------------------------------
# NumPy reference
# ---------------------------------------------------------------------------

def np_swish(x):
    return x / (1.0 + np.exp(-x))


def np_rotary(x, positions, base=10000.0):
    """RoPE: rotate feature pairs (2i, 2i+1) of ``x`` [..., seq, d] by ``pos * base^(-2i/d)``."""
    d = x.shape[-1]
    theta = positions[:, None] * base ** (-2.0 * np.arange(d // 2) / d)[None, :]
    sin, cos = np.sin(theta), np.cos(theta)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = odd * cos + even * sin
    return out


def np_normalize(a, visible, method, min_length=None):
    """Attention weights over the last axis; ``visible`` is the boolean key mask."""
    n = np.maximum(visible.sum(-1, keepdims=True), 1).astype(np.float64)
    if method == "softmax_plus":
        n_eff = n if min_length is None else np.maximum(n, min_length)
        a = a * np.log(n_eff) / np.log(512.0)
        method = "softmax"
    if method == "softmax":
        a = np.where(visible, a, -np.inf)
        e = np.exp(a - a.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    return np.where(visible, np.maximum(a, 0.0) ** 2 / n, 0.0)


def np_gau(x, w, visible, method, min_length=None, bias=None, positions=None):
    """One GAU on ``x`` [b, s, h]; ``w``: i_kernel, i_bias, gq, bq, gk, bk, o_kernel, o_bias."""
    x = x.astype(np.float64)
    e = w["o_kernel"].shape[0]
    h = x @ w["i_kernel"]
    if w.get("i_bias") is not None:
        h = h + w["i_bias"]
    h = np_swish(h)
    u, v, z = h[..., :e], h[..., e:2 * e], h[..., 2 * e:]
    q, k = z * w["gq"], z * w["gk"]
    if w.get("bq") is not None:
        q, k = q + w["bq"], k + w["bk"]
    pos = np.arange(x.shape[1], dtype=np.float64) if positions is None else positions
    q, k = np_rotary(q, pos), np_rotary(k, pos)
    a = np.einsum("bqd,bkd->bqk", q, k) / math.sqrt(z.shape[-1])
    if bias is not None:
        a = a + bias
    out = u * np.einsum("bqk,bkd->bqd", np_normalize(a, visible, method, min_length), v)
    out = out @ w["o_kernel"]
    if w.get("o_bias") is not None:
        out = out + w["o_bias"]
    return out


def np_rms(x, eps=1e-12):
    return x / np.sqrt(np.mean(x ** 2, -1, keepdims=True) + eps)


def visibility(tokens, segments=None, mode="encoder"):
    """Boolean [b, q, k]: which keys each query may see, written position by position."""
    b, s = tokens.shape
    vis = np.zeros((b, s, s), bool)
    for r in range(b):
        for i in range(s):
            for j in range(s):
                if tokens[r, j] == 0:
                    continue
                if mode == "encoder":
                    vis[r, i, j] = True
                elif mode == "lm":
                    vis[r, i, j] = j <= i
                else:  # unilm: segment-0 keys always, segment-1 keys causally
                    vis[r, i, j] = segments[r, j] == 0 or (segments[r, i] == 1 and j <= i)
    return vis


def np_gau_alpha(ckpt, tokens, segments, num_layers, visible, method, min_length=None):
    """GAU-alpha forward from the checkpoint arrays (released names); returns (hidden, probs)."""
    emb = ckpt["bert/embeddings/word_embeddings"].astype(np.float64)
    x = emb[tokens] + ckpt["bert/embeddings/token_type_embeddings"][segments]
    x = np_rms(x)
    for i in range(num_layers):
        p = f"GAU_alpha/encoder/layer_{i}/gau/"
        w = {"i_kernel": ckpt[p + "i_dense/kernel"], "o_kernel": ckpt[p + "o_dense/kernel"],
             "gq": ckpt[p + "q_scaleoffset/gamma"], "gk": ckpt[p + "k_scaleoffset/gamma"]}
        x = np_rms(x + np_gau(x, w, visible, method, min_length))
    logits = x @ emb.T
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return x, e / e.sum(-1, keepdims=True)


def assert_close(actual, expected, tokens=None, tol=TOL):
    actual = np.asarray(ops.convert_to_numpy(actual), dtype=np.float64)
    if tokens is not None:  # compare real (unpadded) positions only
        keep = tokens != 0
        actual, expected = actual[keep], expected[keep]
    diff = np.max(np.abs(actual - expected))
    assert diff < tol, f"max abs diff {diff:.3g} >= {tol}"


# ---------------------------------------------------------------------------
# the layer
# ---------------------------------------------------------------------------

def randomize_gau(layer, rng):
    w = {}
    for var in layer.weights:
        key = "/".join(var.path.split("/")[-2:])
        value = rng.randn(*var.shape).astype("float32") * 0.3
        if key.endswith("gamma"):
            value = 1.0 + value
        var.assign(value)
        w[key] = value
    return {
        "i_kernel": w["i_dense/kernel"], "i_bias": w.get("i_dense/bias"),
        "o_kernel": w["o_dense/kernel"], "o_bias": w.get("o_dense/bias"),
        "gq": w["q_scaleoffset/gamma"], "bq": w.get("q_scaleoffset/beta"),
        "gk": w["k_scaleoffset/gamma"], "bk": w.get("k_scaleoffset/beta"),
    }


TOKENS = np.array([[5, 3, 9, 2, 7, 4, 1, 8], [6, 2, 4, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 0, 0, 0]])
SEGMENTS = np.array([[0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0]])


@pytest.mark.parametrize("normalization", NORMALIZERS)
@pytest.mark.parametrize("use_bias", [True, False])
def test_gau_layer_matches_numpy(normalization, use_bias):
    rng = np.random.RandomState(0)
    x = rng.randn(3, 8, 12).astype("float32")
    layer = GatedAttentionUnit(units=10, key_size=6, use_bias=use_bias,
                               normalization=normalization)
    layer.build(x.shape)
    w = randomize_gau(layer, rng)
    vis = visibility(TOKENS, SEGMENTS, "unilm")
    out = layer(x, attention_mask=vis[:, None])  # [b, 1, q, k] layout accepted
    assert_close(out, np_gau(x, w, vis, normalization), TOKENS)
    # the reference is sensitive to the normaliser: another one gives other numbers
    other = [m for m in NORMALIZERS if m != normalization][0]
    assert np.max(np.abs(np_gau(x, w, vis, other) - np_gau(x, w, vis, normalization))) > 1e-2


def test_gau_layer_bias_positions_and_keras_mask():
    rng = np.random.RandomState(1)
    x = rng.randn(2, 8, 12).astype("float32")
    layer = GatedAttentionUnit(units=10, key_size=6, normalization="softmax")
    layer.build(x.shape)
    w = randomize_gau(layer, rng)
    tokens = TOKENS[:2]
    vis = visibility(tokens)
    bias = rng.randn(2, 8, 8).astype("float32")
    positions = np.array([3, 4, 5, 6, 7, 8, 9, 10], "float32")
    out = layer(x, attention_mask=vis, attention_bias=bias, positions=positions)
    assert_close(out, np_gau(x, w, vis, "softmax", bias=bias, positions=positions), tokens)
    # rotary only sees position differences: shifting all positions changes nothing
    assert_close(out, np_gau(x, w, vis, "softmax", bias=bias), tokens)
    # without attention_mask the Keras (padding) mask of the input is used
    inp = keras.Input((8,), dtype="int32")
    emb = keras.layers.Embedding(20, 12, mask_zero=True)
    model = keras.Model(inp, layer(emb(inp)))
    emb.embeddings.assign(rng.randn(20, 12).astype("float32"))
    xe = ops.convert_to_numpy(emb.embeddings)[tokens]
    assert_close(model(tokens), np_gau(xe, w, vis, "softmax"), tokens)


def test_softmax_plus_clamp():
    rng = np.random.RandomState(2)
    x = rng.randn(3, 8, 12).astype("float32")
    layer = GatedAttentionUnit(units=10, key_size=6, normalization="softmax_plus", min_length=16)
    layer.build(x.shape)
    w = randomize_gau(layer, rng)
    vis = visibility(TOKENS)
    out = layer(x, attention_mask=vis)
    assert_close(out, np_gau(x, w, vis, "softmax_plus", min_length=16), TOKENS)
    # rows are shorter than 16, so the clamp matters
    diff = np.abs(np_gau(x, w, vis, "softmax_plus", 16) - np_gau(x, w, vis, "softmax_plus"))
    assert diff.max() > 1e-3


def test_gau_split_methods_equal_call():
    rng = np.random.RandomState(3)
    x = rng.randn(2, 6, 12).astype("float32")
    layer = GatedAttentionUnit(units=8, key_size=4, normalization="softmax_plus")
    layer.build(x.shape)
    randomize_gau(layer, rng)
    mask = np.tril(np.ones((6, 6), bool))[None]
    full = ops.convert_to_numpy(layer(x, attention_mask=mask))
    u, q, k, v = layer.project(x)
    # the last query attending to all keys, computed from the projected pieces
    last = layer.attend(u[:, -1:], q[:, -1:], k, v, np.ones((2, 1, 6), bool))
    assert_close(last, full[:, -1:].astype(np.float64))


def test_gau_config_and_errors():
    layer = GatedAttentionUnit(units=8, key_size=4, use_bias=False,
                               normalization="softmax_plus", min_length=16, name="g")
    config = layer.get_config()
    clone = GatedAttentionUnit.from_config(config)
    for key in ("units", "key_size", "use_bias", "normalization", "min_length", "activation"):
        assert getattr(clone, key) == getattr(layer, key)
    assert ScaleOffset.from_config(ScaleOffset(offset=False).get_config()).offset is False
    with pytest.raises(ValueError, match="normalization must be one of.*found 'relu'"):
        GatedAttentionUnit(units=8, key_size=4, normalization="relu")
    with pytest.raises(ValueError, match="even key_size, found 5"):
        GatedAttentionUnit(units=8, key_size=5)
    layer = GatedAttentionUnit(units=8, key_size=4)
    x = np.zeros((1, 3, 6), "float32")
    with pytest.raises(ValueError, match=r"shape \[batch, 1, q, k\], found \(1, 2, 3, 3\)"):
        layer(x, attention_mask=np.ones((1, 2, 3, 3), bool))


def test_gau_keras_and_weights_round_trip(tmp_path):
    rng = np.random.RandomState(4)
    inp = keras.Input((7, 12))
    out = GatedAttentionUnit(units=8, key_size=4, normalization="squared_relu", name="gau")(inp)
    out = ScaleOffset(name="so")(out)
    model = keras.Model(inp, out)
    for var in model.weights:
        var.assign(rng.randn(*var.shape).astype("float32"))
    x = rng.randn(2, 7, 12).astype("float32")
    ref = ops.convert_to_numpy(model(x))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.get_layer("gau"), GatedAttentionUnit)
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded(x)), ref)
    model.save_weights(str(tmp_path / "m.weights.h5"))
    fresh = keras.Model(inp, ScaleOffset(name="so")(
        GatedAttentionUnit(units=8, key_size=4, normalization="squared_relu", name="gau")(inp)))
    fresh.load_weights(str(tmp_path / "m.weights.h5"))
    np.testing.assert_array_equal(ops.convert_to_numpy(fresh(x)), ref)


# ---------------------------------------------------------------------------
# GAU-alpha
# ---------------------------------------------------------------------------

GAU_CFG = {  # the released config's keys, small sizes
    "hidden_act": "swish", "hidden_size": 16, "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "num_attention_heads": 1, "attention_key_size": 8,
    "intermediate_size": 24, "num_hidden_layers": 2, "type_vocab_size": 2, "vocab_size": 30,
}


def gau_alpha_arrays(cfg, seed=0):
    """Random weights under the released GAU-alpha variable names."""
    rng = np.random.RandomState(seed)
    h, e, s = cfg["hidden_size"], cfg["intermediate_size"], cfg["attention_key_size"]
    arrays = {
        "bert/embeddings/word_embeddings": rng.randn(cfg["vocab_size"], h),
        "bert/embeddings/token_type_embeddings": rng.randn(2, h),
    }
    for i in range(cfg["num_hidden_layers"]):
        p = f"GAU_alpha/encoder/layer_{i}/gau/"
        arrays[p + "i_dense/kernel"] = rng.randn(h, 2 * e + s) * 0.3
        arrays[p + "o_dense/kernel"] = rng.randn(e, h) * 0.3
        arrays[p + "q_scaleoffset/gamma"] = 1.0 + 0.3 * rng.randn(s)
        arrays[p + "k_scaleoffset/gamma"] = 1.0 + 0.3 * rng.randn(s)
    return {k: v.astype("float32") for k, v in arrays.items()}


@pytest.fixture(scope="module")
def gau_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("gau_alpha")
    config = str(root / "bert_config.json")
    with open(config, "w") as f:
        json.dump(GAU_CFG, f)
    arrays = gau_alpha_arrays(GAU_CFG)
    ckpt = write_tf1_checkpoint(str(root / "bert_model.ckpt"), arrays)
    return config, ckpt, arrays


def test_checkpoint_holds_released_names(gau_ckpt):
    import tensorflow as tf

    _, ckpt, _ = gau_ckpt
    names = {n for n, _ in tf.train.list_variables(ckpt)}
    assert "GAU_alpha/encoder/layer_1/gau/q_scaleoffset/gamma" in names
    assert "bert/embeddings/token_type_embeddings" in names


@pytest.mark.parametrize("normalization", [None, "softmax", "squared_relu"])
def test_gau_alpha_from_checkpoint_matches_numpy(gau_ckpt, normalization):
    config, ckpt, arrays = gau_ckpt
    kwargs = {} if normalization is None else {"attention_normalization": normalization}
    model = build_transformer_model(config, ckpt, model="gau_alpha", with_mlm=True, **kwargs)
    method = normalization or "softmax_plus"  # softmax_plus is the default, as trained
    vis = visibility(TOKENS)
    hidden, probs = np_gau_alpha(arrays, TOKENS, SEGMENTS, 2, vis, method)
    assert_close(model([TOKENS, SEGMENTS]), probs, TOKENS)
    encoder = build_transformer_model(config, ckpt, model="gau_alpha", **kwargs)
    assert_close(encoder([TOKENS, SEGMENTS]), hidden, TOKENS)


def test_gau_alpha_softmax_plus_min_length(gau_ckpt):
    config, ckpt, arrays = gau_ckpt
    model = build_transformer_model(config, ckpt, model="gau_alpha", softmax_plus_min_length=16)
    vis = visibility(TOKENS)
    hidden, _ = np_gau_alpha(arrays, TOKENS, SEGMENTS, 2, vis, "softmax_plus", min_length=16)
    assert_close(model([TOKENS, SEGMENTS]), hidden, TOKENS)
    plain, _ = np_gau_alpha(arrays, TOKENS, SEGMENTS, 2, vis, "softmax_plus")
    assert np.abs(plain - hidden)[TOKENS != 0].max() > 1e-3


@pytest.mark.parametrize("mode", ["lm", "unilm"])
def test_gau_alpha_lm_unilm_match_numpy(gau_ckpt, mode):
    config, ckpt, arrays = gau_ckpt
    model = build_transformer_model(config, ckpt, model="gau_alpha", application=mode,
                                    with_mlm=False)
    vis = visibility(TOKENS, SEGMENTS, mode)
    hidden, _ = np_gau_alpha(arrays, TOKENS, SEGMENTS, 2, vis, "softmax_plus")
    assert_close(model([TOKENS, SEGMENTS]), hidden, TOKENS)


def test_gau_alpha_lm_and_unilm_invariance(gau_ckpt):
    config, ckpt, _ = gau_ckpt
    lm = build_transformer_model(config, ckpt, model="gau_alpha", application="lm",
                                 with_mlm=False)
    unilm = build_transformer_model(config, ckpt, model="gau_alpha", application="unilm",
                                    with_mlm=False)
    tokens = np.array([[4, 7, 9, 3, 5, 6, 8, 2]])
    changed = tokens.copy()
    changed[0, 5:] = [11, 12, 13]
    seg = np.array([[0, 0, 0, 0, 0, 1, 1, 1]])
    a = ops.convert_to_numpy(lm([tokens, seg * 0]))
    b = ops.convert_to_numpy(lm([changed, seg * 0]))
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-5)  # LM: past unchanged
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-3
    a = ops.convert_to_numpy(unilm([tokens, seg]))
    b = ops.convert_to_numpy(unilm([changed, seg]))
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-5)  # segment 0 ignores segment 1
    changed2 = tokens.copy()
    changed2[0, 7] = 10  # last segment-1 token: earlier segment-1 positions unchanged
    c = ops.convert_to_numpy(unilm([changed2, seg]))
    np.testing.assert_allclose(a[:, :7], c[:, :7], atol=1e-5)
    # segment 0 is bidirectional: changing a later segment-0 token moves the first position
    changed3 = tokens.copy()
    changed3[0, 4] = 14
    d = ops.convert_to_numpy(unilm([changed3, seg]))
    assert np.abs(a[:, 0] - d[:, 0]).max() > 1e-3


def test_gau_alpha_missing_variable(gau_ckpt, tmp_path):
    config, _, arrays = gau_ckpt
    arrays = dict(arrays)
    del arrays["GAU_alpha/encoder/layer_1/gau/k_scaleoffset/gamma"]
    ckpt = write_tf1_checkpoint(str(tmp_path / "bert_model.ckpt"), arrays)
    with pytest.raises(CheckpointError,
                       match=r"missing variable 'GAU_alpha/encoder/layer_1/gau/k_scaleoffset"
                             r"/gamma'.*Transformer-1-GatedAttentionUnit/k_scaleoffset/gamma"):
        build_transformer_model(config, ckpt, model="gau_alpha")


def test_gau_alpha_weights_h5_and_config_errors(gau_ckpt, tmp_path):
    config, ckpt, arrays = gau_ckpt
    model = build_transformer_model(config, ckpt, model="gau_alpha", with_mlm=True)
    path = str(tmp_path / "gau.weights.h5")
    model.save_weights(path)
    again = build_transformer_model(config, path, model="gau_alpha", with_mlm=True)
    np.testing.assert_array_equal(ops.convert_to_numpy(again([TOKENS, SEGMENTS])),
                                  ops.convert_to_numpy(model([TOKENS, SEGMENTS])))
    assert not any("Position" in w.path for w in model.weights)
    cfg = dict(GAU_CFG, num_attention_heads=4)
    with pytest.raises(ValueError, match="num_attention_heads=1, found 4"):
        build_transformer_model(cfg, model="gau_alpha")
    cfg = {k: v for k, v in GAU_CFG.items() if k != "intermediate_size"}
    with pytest.raises(ValueError, match="intermediate_size"):
        build_transformer_model(cfg, model="gau_alpha")


def test_gau_alpha_keras_round_trip(gau_ckpt, tmp_path):
    config, ckpt, _ = gau_ckpt
    model = build_transformer_model(config, ckpt, model="gau_alpha", application="unilm",
                                    with_mlm=True)
    ref = ops.convert_to_numpy(model([TOKENS, SEGMENTS]))
    path = str(tmp_path / "gau.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded([TOKENS, SEGMENTS])), ref)


# ---------------------------------------------------------------------------
# RoFormer with softmax_plus (the option flows into MultiHeadAttention)
# ---------------------------------------------------------------------------

def np_layer_norm(x, gamma, beta, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def np_roformer(w, tokens, segments, layers, heads, visible, method):
    """RoFormer encoder (post-LN BERT with RoPE on every head's q/k) from Keras weight paths."""
    gelu = np.vectorize(lambda t: 0.5 * t * (1.0 + math.erf(t / math.sqrt(2.0))))
    x = w["Embedding-Token/embeddings"][tokens] + w["Embedding-Segment/embeddings"][segments]
    x = np_layer_norm(x, w["Embedding-Norm/gamma"], w["Embedding-Norm/beta"])
    b, s, h = x.shape
    d = h // heads
    pos = np.arange(s, dtype=np.float64)
    for i in range(layers):
        p = f"Transformer-{i}-MultiHeadSelfAttention"

        def dense(t, name):
            return t @ w[f"{name}/kernel"] + w[f"{name}/bias"]

        def split(t):
            return t.reshape(b, s, heads, d).transpose(0, 2, 1, 3)  # [b, heads, s, d]

        q = np_rotary(split(dense(x, p + "/q_dense")), pos)
        k = np_rotary(split(dense(x, p + "/k_dense")), pos)
        v = split(dense(x, p + "/v_dense"))
        a = np.einsum("bhqd,bhkd->bhqk", q, k) / math.sqrt(d)
        att = np_normalize(a, visible[:, None], method)
        o = np.einsum("bhqk,bhkd->bhqd", att, v).transpose(0, 2, 1, 3).reshape(b, s, h)
        x = np_layer_norm(x + dense(o, p + "/o_dense"), w[p + "-Norm/gamma"], w[p + "-Norm/beta"])
        f = f"Transformer-{i}-FeedForward"
        y = dense(gelu(dense(x, f + "/i0_dense")), f + "/o_dense")
        x = np_layer_norm(x + y, w[f + "-Norm/gamma"], w[f + "-Norm/beta"])
    return x


@pytest.mark.parametrize("mode", ["encoder", "unilm"])
def test_roformer_softmax_plus_matches_numpy(mode):
    cfg = dict(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=24, hidden_act="gelu")
    model = build_transformer_model(cfg, model="roformer", application=mode, with_mlm=False,
                                    attention_normalization="softmax_plus")
    rng = np.random.RandomState(6)
    w = {}
    for var in model.weights:
        value = rng.randn(*var.shape).astype("float32") * 0.5
        var.assign(value)
        w[var.path] = value.astype(np.float64)
    vis = visibility(TOKENS, SEGMENTS, mode)
    expected = np_roformer(w, TOKENS, SEGMENTS, 2, 2, vis, "softmax_plus")
    assert_close(model([TOKENS, SEGMENTS]), expected, TOKENS)
    plain = np_roformer(w, TOKENS, SEGMENTS, 2, 2, vis, "softmax")
    assert np.abs(plain - expected)[TOKENS != 0].max() > 1e-3
