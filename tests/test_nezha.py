"""NEZHA (``model="nezha"``): checked against a NumPy transcription of its equations.

No reference package ships NEZHA any more (transformers 5 dropped ``NezhaModel``), so the
reference is written here from the paper / the released TF code: BERT without absolute
positions, with the functional relative embeddings of Shaw et al. in every layer
(``scores = q.k + q.r_ij``, ``out = sum_j a_ij (v_j + r_ij)``, ``r_ij`` the row
``clip(j - i, -m, m) + m`` of a fixed sinusoid table). The weights are random arrays under
the released Google variable names, written with TensorFlow's ``tf.compat.v1`` Saver (with
Adam slots and ``global_step``), or with transformers 4's ``NezhaModel`` names into a
safetensors file. Cached ``lm`` / ``unilm`` decoding must equal the uncached decode.
"""
import json
import math
import warnings

import numpy as np
import pytest

import keras
from keras import ops

from conftest import uncached_greedy, write_tf1_checkpoint
from bert4keras3.backend import Sinusoidal
from bert4keras3.checkpoints import CheckpointError
from bert4keras3.layers import MultiHeadAttention, RelativePositionEmbedding
from bert4keras3.layers import relative_position_table
from bert4keras3.models import build_transformer_model

#: the heads a model is built without (pooler, NSP, MLM) are left unused on purpose
pytestmark = pytest.mark.filterwarnings("ignore:.*not used by the model:UserWarning")

V, H, LAYERS, HEADS, INTER = 60, 32, 2, 4, 48
CFG = dict(vocab_size=V, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
           intermediate_size=INTER, hidden_act="gelu", hidden_dropout_prob=0.1,
           attention_probs_dropout_prob=0.1, max_position_embeddings=512,
           max_relative_position=3, type_vocab_size=2, initializer_range=0.02,
           use_relative_position=True)
LENGTHS = (9, 5, 7)


def make_batch(seed=0, lengths=LENGTHS, maxlen=9):
    rng = np.random.RandomState(seed)
    tokens = np.zeros((len(lengths), maxlen), "int32")
    segments = np.zeros_like(tokens)
    for row, n in enumerate(lengths):
        tokens[row, :n] = rng.randint(1, V, size=n)
        segments[row, n // 2:n] = 1
    return tokens, segments


TOKENS, SEGMENTS = make_batch()


# ---------------------------------------------------------------------------
# reference (NumPy, float64)
# ---------------------------------------------------------------------------

def np_table(m, depth):
    """NEZHA's relative table, written as its TF code does it (row = clipped distance + m)."""
    table = np.zeros((2 * m + 1, depth))
    for pos in range(2 * m + 1):
        for i in range(depth // 2):
            table[pos, 2 * i] = np.sin(pos / np.power(10000, 2 * i / depth))
            table[pos, 2 * i + 1] = np.cos(pos / np.power(10000, 2 * i / depth))
    return table


def np_layer_norm(x, gamma, beta, eps=1e-12):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def np_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def np_softmax(a, axis=-1):
    a = a - a.max(axis, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis, keepdims=True)


def visibility(tokens, segments=None, mode="encoder"):
    """``[batch, q, k]`` booleans: which keys each query may attend to."""
    keys = (tokens != 0)[:, None, :]
    n = tokens.shape[1]
    if mode == "encoder":
        return np.broadcast_to(keys, (len(tokens), n, n))
    if mode == "lm":
        return keys & np.tril(np.ones((n, n), bool))[None]
    order = np.cumsum(segments, axis=1)  # unilm: segment 0 bidirectional, 1 causal
    return keys & (order[:, None, :] <= order[:, :, None])


def np_nezha(w, tokens, segments, visible, m, positions=None, vocab_rows=None):
    """Hidden states, pooled [CLS], NSP and MLM probabilities from Google-named arrays."""
    g = {k: v.astype(np.float64) for k, v in w.items()}
    word = g["bert/embeddings/word_embeddings"]
    if vocab_rows is not None:
        word = word[vocab_rows]
    x = word[tokens] + g["bert/embeddings/token_type_embeddings"][segments]
    x = np_layer_norm(x, g["bert/embeddings/LayerNorm/gamma"], g["bert/embeddings/LayerNorm/beta"])
    b, n, _ = x.shape
    d = H // HEADS
    pos = np.arange(n)[None].repeat(b, 0) if positions is None else positions
    rel = np_table(m, d)[np.clip(pos[:, None, :] - pos[:, :, None], -m, m) + m]  # [b, q, k, d]
    for i in range(LAYERS):
        p = f"bert/encoder/layer_{i}/"

        def dense(t, name):
            return t @ g[name + "/kernel"] + g[name + "/bias"]

        def heads(t):
            return t.reshape(b, n, HEADS, d)

        q = heads(dense(x, p + "attention/self/query"))
        k = heads(dense(x, p + "attention/self/key"))
        v = heads(dense(x, p + "attention/self/value"))
        scores = np.einsum("bihd,bjhd->bhij", q, k) + np.einsum("bihd,bijd->bhij", q, rel)
        scores = scores / math.sqrt(d)
        scores = np.where(visible[:, None], scores, -1e30)
        a = np_softmax(scores)
        o = np.einsum("bhij,bjhd->bihd", a, v) + np.einsum("bhij,bijd->bihd", a, rel)
        o = dense(o.reshape(b, n, H), p + "attention/output/dense")
        x = np_layer_norm(x + o, g[p + "attention/output/LayerNorm/gamma"],
                          g[p + "attention/output/LayerNorm/beta"])
        y = dense(np_gelu(dense(x, p + "intermediate/dense")), p + "output/dense")
        x = np_layer_norm(x + y, g[p + "output/LayerNorm/gamma"], g[p + "output/LayerNorm/beta"])
    pooled = np.tanh(x[:, 0] @ g["bert/pooler/dense/kernel"] + g["bert/pooler/dense/bias"])
    nsp = np_softmax(pooled @ g["cls/seq_relationship/output_weights"].T
                     + g["cls/seq_relationship/output_bias"])
    t = np_gelu(x @ g["cls/predictions/transform/dense/kernel"]
                + g["cls/predictions/transform/dense/bias"])
    t = np_layer_norm(t, g["cls/predictions/transform/LayerNorm/gamma"],
                      g["cls/predictions/transform/LayerNorm/beta"])
    bias = g["cls/predictions/output_bias"]
    if vocab_rows is not None:
        bias = bias[vocab_rows]
    probs = np_softmax(t @ word.T + bias)
    return x, pooled, nsp, probs


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------

def google_arrays(seed=0):
    """Random weights under the released NEZHA (BERT-named) variable names."""
    rng = np.random.RandomState(seed)
    a = {}

    def norm(name, dim):
        a[name + "/gamma"] = 1.0 + 0.2 * rng.randn(dim)
        a[name + "/beta"] = 0.1 * rng.randn(dim)

    def dense(name, n_in, n_out):
        a[name + "/kernel"] = rng.randn(n_in, n_out) / math.sqrt(n_in)
        a[name + "/bias"] = 0.1 * rng.randn(n_out)

    a["bert/embeddings/word_embeddings"] = rng.randn(V, H)
    a["bert/embeddings/token_type_embeddings"] = rng.randn(2, H)
    norm("bert/embeddings/LayerNorm", H)
    for i in range(LAYERS):
        p = f"bert/encoder/layer_{i}/"
        for part in ("query", "key", "value"):
            dense(p + "attention/self/" + part, H, H)
        dense(p + "attention/output/dense", H, H)
        norm(p + "attention/output/LayerNorm", H)
        dense(p + "intermediate/dense", H, INTER)
        dense(p + "output/dense", INTER, H)
        norm(p + "output/LayerNorm", H)
    dense("bert/pooler/dense", H, H)
    dense("cls/predictions/transform/dense", H, H)
    norm("cls/predictions/transform/LayerNorm", H)
    a["cls/predictions/output_bias"] = 0.1 * rng.randn(V)
    a["cls/seq_relationship/output_weights"] = rng.randn(2, H) / math.sqrt(H)
    a["cls/seq_relationship/output_bias"] = 0.1 * rng.randn(2)
    return {k: v.astype("float32") for k, v in a.items()}


def google_to_hf(arrays):
    """transformers 4 ``NezhaForPreTraining`` names (``nezha.`` prefix, torch layouts)."""
    out = {}
    for name, array in arrays.items():
        if name == "cls/predictions/output_bias":
            out["cls.predictions.bias"] = array
            continue
        if name.startswith("cls/seq_relationship/"):
            key = "weight" if name.endswith("output_weights") else "bias"
            out["cls.seq_relationship." + key] = array
            continue
        key = name.replace("bert/", "nezha.", 1) if name.startswith("bert/") else name
        key = key.replace("/layer_", ".layer.").replace("/", ".")
        if key.endswith(".gamma"):
            key = key[:-len("gamma")] + "weight"
        elif key.endswith(".beta"):
            key = key[:-len("beta")] + "bias"
        elif key.endswith(".kernel"):
            key, array = key[:-len("kernel")] + "weight", array.T
        elif key.endswith("_embeddings"):
            key = key + ".weight"
        out[key] = np.ascontiguousarray(array)
    out["cls.predictions.decoder.weight"] = out["nezha.embeddings.word_embeddings.weight"]
    # derived buffers NezhaModel wrote: its relative table per layer, default token types
    for i in range(LAYERS):
        out[f"nezha.encoder.layer.{i}.attention.self.relative_positions_encoding."
            "positions_encoding"] = np.zeros((16, 16, H // HEADS), "float32")
    out["nezha.embeddings.token_type_ids"] = np.zeros((1, 512), "int64")
    return out


@pytest.fixture(scope="module")
def nezha_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("nezha")
    config = str(root / "bert_config.json")
    with open(config, "w") as f:
        json.dump(CFG, f)
    arrays = google_arrays()
    ckpt = write_tf1_checkpoint(str(root / "model.ckpt-100"), arrays)
    return config, ckpt, arrays


def as_numpy(x):
    if isinstance(x, (list, tuple)):
        return [as_numpy(t) for t in x]
    return np.asarray(ops.convert_to_numpy(x))


def run(model, tokens=TOKENS, segments=SEGMENTS, *extra):
    inputs = [ops.convert_to_tensor(t) for t in (tokens, segments) + extra]
    return as_numpy(model(inputs, training=False))


def max_diff(a, b, tokens=TOKENS):
    keep = tokens != 0
    return float(np.max(np.abs(np.asarray(a)[keep] - np.asarray(b)[keep])))


# ---------------------------------------------------------------------------
# the relative table and the attention layer
# ---------------------------------------------------------------------------

def test_relative_table_layout():
    """Sines in the even columns, cosines in the odd ones, row = clipped distance + m."""
    table = relative_position_table(5, 8)
    assert table.shape == (11, 8)
    np.testing.assert_allclose(table, np_table(5, 8), atol=1e-12)
    # bert4keras' RelativePositionEmbedding with its Sinusoidal initializer: the same rows
    np.testing.assert_allclose(as_numpy(Sinusoidal()((11, 8))), table, atol=1e-5)
    with pytest.raises(ValueError, match="even dim, found 7"):
        relative_position_table(5, 7)


def test_attention_keyword_call_equals_list_call():
    """The keyword path (what models use) equals bert4keras' list call with p_bias."""
    rng = np.random.RandomState(1)
    x = ops.convert_to_tensor(rng.randn(2, 7, 16).astype("float32"))
    layer = MultiHeadAttention(heads=2, head_size=8, max_relative_position=2)
    layer.build((2, 7, 16))
    for w in layer.weights:
        w.assign(rng.randn(*w.shape).astype("float32") * 0.5)
    mask = np.ones((2, 7), bool)
    mask[1, 4:] = False
    attention_mask = ops.convert_to_tensor(mask[:, None, None, :])
    keyword = as_numpy(layer(x, attention_mask=attention_mask))
    rel = RelativePositionEmbedding(5, 8, embeddings_initializer="Sinusoidal")([x, x])
    listed = as_numpy(layer([x, x, x, attention_mask, rel], a_bias=True,
                            p_bias="typical_relative"))
    np.testing.assert_allclose(keyword[0], listed[0], atol=1e-5)
    np.testing.assert_allclose(keyword[1, :4], listed[1, :4], atol=1e-5)
    plain = MultiHeadAttention.from_config({**layer.get_config(), "max_relative_position": None})
    plain.build((2, 7, 16))
    plain.set_weights(layer.get_weights())
    assert np.abs(as_numpy(plain(x, attention_mask=attention_mask)) - keyword).max() > 1e-3
    # per-row positions: shifting every position of a row leaves relative attention alone
    positions = ops.convert_to_tensor(np.arange(7)[None] + np.array([[0], [5]]))
    shifted = as_numpy(layer(x, attention_mask=attention_mask, positions=positions))
    np.testing.assert_allclose(shifted, keyword, atol=1e-5)
    clone = MultiHeadAttention.from_config(layer.get_config())
    assert clone.max_relative_position == 2
    with pytest.raises(ValueError, match="key_size == head_size; found key_size=4"):
        MultiHeadAttention(heads=2, head_size=8, key_size=4, max_relative_position=2)
    with pytest.raises(ValueError, match="positive int"):
        MultiHeadAttention(heads=2, head_size=8, max_relative_position=0)


# ---------------------------------------------------------------------------
# models from a Google checkpoint vs NumPy
# ---------------------------------------------------------------------------

def test_checkpoint_holds_released_names(nezha_ckpt):
    import tensorflow as tf

    _, ckpt, _ = nezha_ckpt
    names = {n for n, _ in tf.train.list_variables(ckpt)}
    assert "bert/encoder/layer_1/attention/self/query/kernel" in names
    assert "bert/encoder/layer_1/attention/self/query/kernel/adam_m" in names
    assert not any("position_embeddings" in n for n in names)


def test_encoder_mlm_nsp_match_numpy(nezha_ckpt):
    config, ckpt, arrays = nezha_ckpt
    hidden, _, nsp, probs = np_nezha(arrays, TOKENS, SEGMENTS, visibility(TOKENS), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # optimizer slots / global_step are not reported
        model = build_transformer_model(config, ckpt, model="nezha", with_mlm=True,
                                        with_nsp=True)
    got_nsp, got_probs = run(model)
    assert max_diff(got_probs, probs) <= 1e-5
    assert np.abs(got_nsp - nsp).max() <= 1e-5
    encoder = build_transformer_model(config, ckpt, model="nezha")
    assert max_diff(run(encoder), hidden) <= 1e-4
    assert not any("Position" in w.path for w in model.weights)


@pytest.mark.parametrize("mode", ["lm", "unilm"])
def test_lm_unilm_match_numpy(nezha_ckpt, mode):
    config, ckpt, arrays = nezha_ckpt
    hidden, _, _, probs = np_nezha(arrays, TOKENS, SEGMENTS,
                                   visibility(TOKENS, SEGMENTS, mode), 3)
    model = build_transformer_model(config, ckpt, model="nezha", application=mode)
    assert max_diff(run(model), probs) <= 1e-5  # lm / unilm switch the MLM head on
    encoder = build_transformer_model(config, ckpt, model="nezha", application=mode,
                                      with_mlm=False, with_pool=True)
    got_hidden = build_transformer_model(config, ckpt, model="nezha", application=mode,
                                         with_mlm=False)
    assert max_diff(run(got_hidden), hidden) <= 1e-4
    pooled = np.tanh(hidden[:, 0] @ arrays["bert/pooler/dense/kernel"]
                     + arrays["bert/pooler/dense/bias"])
    assert np.abs(run(encoder) - pooled).max() <= 1e-4


def test_max_relative_position_is_honoured(nezha_ckpt):
    _, ckpt, arrays = nezha_ckpt
    cfg = {k: v for k, v in CFG.items() if k != "max_relative_position"}
    model = build_transformer_model(cfg, ckpt, model="nezha", return_keras_model=False)
    assert model.max_relative_position == 64  # the released configs' value
    vis = visibility(TOKENS)
    wide, _, _, _ = np_nezha(arrays, TOKENS, SEGMENTS, vis, 64)
    narrow, _, _, _ = np_nezha(arrays, TOKENS, SEGMENTS, vis, 1)
    assert max_diff(wide, narrow) > 1e-2  # the clip matters at this length
    assert max_diff(run(model.model), wide) <= 1e-4
    one = build_transformer_model(cfg, ckpt, model="nezha", max_relative_position=1)
    assert max_diff(run(one), narrow) <= 1e-4


def test_keep_tokens_and_custom_positions(nezha_ckpt):
    config, ckpt, arrays = nezha_ckpt
    keep = [0, 1, 2, 3] + list(range(59, 9, -2))
    tokens = np.where(TOKENS != 0, TOKENS % len(keep), 0)
    tokens[TOKENS != 0] = np.maximum(tokens[TOKENS != 0], 1)
    _, _, _, probs = np_nezha(arrays, tokens, SEGMENTS, visibility(tokens), 3,
                              vocab_rows=keep)
    model = build_transformer_model(config, ckpt, model="nezha", with_mlm=True,
                                    keep_tokens=keep)
    got = run(model, tokens)
    assert got.shape[-1] == len(keep)
    assert max_diff(got, probs, tokens) <= 1e-5
    # custom positions feed the relative distances: a per-row shift changes nothing,
    # a stretch of the positions does (and matches the reference)
    model = build_transformer_model(config, ckpt, model="nezha", custom_position_ids=True)
    base = np.arange(9)[None].repeat(3, 0)
    hidden, _, _, _ = np_nezha(arrays, TOKENS, SEGMENTS, visibility(TOKENS), 3)
    assert max_diff(run(model, TOKENS, SEGMENTS, base + np.array([[0], [4], [9]])),
                    hidden) <= 1e-4
    stretched, _, _, _ = np_nezha(arrays, TOKENS, SEGMENTS, visibility(TOKENS), 3,
                                  positions=2 * base)
    assert max_diff(run(model, TOKENS, SEGMENTS, 2 * base), stretched) <= 1e-4
    assert max_diff(stretched, hidden) > 1e-3


def test_hugging_face_names(nezha_ckpt, tmp_path):
    from safetensors.numpy import save_file

    config, ckpt, arrays = nezha_ckpt
    path = str(tmp_path / "model.safetensors")
    save_file(google_to_hf(arrays), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # derived buffers and the tied decoder: not reported
        from_hf = build_transformer_model(config, path, model="nezha", with_mlm=True,
                                          with_nsp=True)
    from_google = build_transformer_model(config, ckpt, model="nezha", with_mlm=True,
                                          with_nsp=True)
    for a, b in zip(run(from_hf), run(from_google)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# errors, round trips
# ---------------------------------------------------------------------------

def test_missing_misshapen_and_unknown_variables(nezha_ckpt, tmp_path):
    config, _, arrays = nezha_ckpt
    bad = dict(arrays)
    bad["bert/encoder/layer_1/attention/self/key/kernel"] = np.zeros((H, H + 2), "float32")
    del bad["bert/encoder/layer_0/output/LayerNorm/beta"]
    bad["bert/embeddings/position_embeddings"] = np.zeros((512, H), "float32")
    ckpt = write_tf1_checkpoint(str(tmp_path / "bad" / "model.ckpt"), bad)
    with pytest.raises(CheckpointError) as info:
        build_transformer_model(config, ckpt, model="nezha")
    message = str(info.value)
    assert ("shape mismatch for 'bert/encoder/layer_1/attention/self/key/kernel' -> "
            "'Transformer-1-MultiHeadSelfAttention/k_dense/kernel': checkpoint (32, 34), "
            "model (32, 32)") in message
    assert ("missing variable 'bert/encoder/layer_0/output/LayerNorm/beta' for model weight "
            "'Transformer-0-FeedForward-Norm/beta'") in message
    extra = dict(arrays, **{"bert/embeddings/position_embeddings": bad[
        "bert/embeddings/position_embeddings"]})
    ckpt = write_tf1_checkpoint(str(tmp_path / "extra" / "model.ckpt"), extra)
    with pytest.warns(UserWarning, match=r"1 checkpoint variable\(s\) of .* not used by the "
                                         r"model: \['bert/embeddings/position_embeddings'\]"):
        build_transformer_model(config, ckpt, model="nezha", with_mlm=True, with_nsp=True)


def test_options_and_config_errors():
    with pytest.raises(ValueError, match="use_relative_position=true, found False"):
        build_transformer_model(dict(CFG, use_relative_position=False), model="nezha")
    with pytest.raises(ValueError, match="max_relative_position must be a positive int, "
                                         "found 0"):
        build_transformer_model(dict(CFG, max_relative_position=0), model="nezha")
    with pytest.raises(ValueError, match="hierarchical_position"):
        build_transformer_model(CFG, model="nezha", hierarchical_position=True)
    with pytest.raises(ValueError, match="max_relative_positoin.*did you mean "
                                         "'max_relative_position'"):
        build_transformer_model(CFG, model="nezha", max_relative_positoin=4)


def test_weights_h5_and_keras_round_trips(nezha_ckpt, tmp_path):
    config, ckpt, _ = nezha_ckpt
    model = build_transformer_model(config, ckpt, model="nezha", application="unilm",
                                    with_pool=True)
    ref = run(model)
    path = str(tmp_path / "nezha.weights.h5")
    model.save_weights(path)
    again = build_transformer_model(config, path, model="nezha", application="unilm",
                                    with_pool=True)
    for a, b in zip(run(again), ref):
        np.testing.assert_array_equal(a, b)
    path = str(tmp_path / "nezha.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(run(loaded), ref):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------
# cached decoding
# ---------------------------------------------------------------------------

PROMPTS = [[5, 17, 3, 9, 22], [8, 30], [11, 4, 25, 6, 13, 2, 19]]
STEPS, WIDTH = 7, 16


def decoder_model(application, m, seed=0):
    cfg = dict(CFG, vocab_size=40, max_relative_position=m)
    obj = build_transformer_model(cfg, model="nezha", application=application,
                                  with_mlm="linear", return_keras_model=False)
    rng = np.random.RandomState(seed)
    for w in obj.model.weights:  # strong weights: the decode depends on the whole context
        shape = tuple(w.shape)
        if len(shape) == 2 and "Embedding" in w.path:
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
    obj = decoder_model(application, m=2)
    width = max(map(len, PROMPTS))
    tokens = np.zeros((len(PROMPTS), width), "int32")
    for r, p in enumerate(PROMPTS):
        tokens[r, :len(p)] = p
    inputs = [tokens, np.zeros_like(tokens)] if application == "unilm" else tokens
    cached = obj.generate(inputs, STEPS)
    assert cached == uncached_greedy(obj, PROMPTS, STEPS, WIDTH)
    assert len({tuple(c) for c in cached}) > 1
