"""bert4keras' layer names, arguments and call conventions, against NumPy transcriptions."""
import numpy as np
import pytest

import keras
from keras import ops

from bert4keras3 import backend as B
from bert4keras3 import layers as L
from bert4keras3.backend import K

RNG = np.random.default_rng(11)


def np_(x):
    return ops.convert_to_numpy(x)


def np_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def np_sinusoidal(pos, dim):
    out = np.zeros(np.shape(pos) + (dim,))
    for i in range(dim // 2):
        theta = np.asarray(pos, "float64") * 10000.0 ** (-2 * i / dim)
        out[..., 2 * i], out[..., 2 * i + 1] = np.sin(theta), np.cos(theta)
    return out


def np_rope(sinusoidal, x):
    sin = np.repeat(sinusoidal[..., 0::2], 2, axis=-1)
    cos = np.repeat(sinusoidal[..., 1::2], 2, axis=-1)
    while sin.ndim < x.ndim:
        sin, cos = sin[:, :, None], cos[:, :, None]
    return x * cos + np.stack([-x[..., 1::2], x[..., 0::2]], -1).reshape(x.shape) * sin


BERT4KERAS_LAYERS = [
    "Layer", "integerize_shape", "GlobalAveragePooling1D", "GlobalMaxPooling1D", "Embedding",
    "ScaleOffset", "Concatenate1D", "BatchSplit", "BatchConcat", "MultiHeadAttention",
    "GatedAttentionUnit", "LayerNormalization", "PositionEmbedding",
    "SinusoidalPositionEmbedding", "RelativePositionEmbedding", "RelativePositionEmbeddingT5",
    "FeedForward", "ConditionalRandomField", "MaximumEntropyMarkovModel", "GlobalPointer",
    "EfficientGlobalPointer", "Loss",
    # bert4keras star-imported keras.layers
    "Input", "Dense", "Dropout", "Lambda", "Reshape",
]


def test_every_bert4keras_layer_name_is_importable():
    missing = [n for n in BERT4KERAS_LAYERS if not hasattr(L, n)]
    assert not missing
    assert L.Embedding is not keras.layers.Embedding and L.Dense is keras.layers.Dense
    assert "Loss" in L.__all__ and "Dense" in L.__all__


# --------------------------------------------------------------------------- Loss
class CrossEntropy(L.Loss):
    """The seq2seq/LM pattern of the bert4keras examples."""

    seen_masks = []

    def compute_loss(self, inputs, mask=None):
        y_true, y_pred = inputs
        CrossEntropy.seen_masks.append(mask is not None and mask[1] is not None)
        y_mask = K.cast(mask[1], K.floatx())[:, 1:]
        y_true = y_true[:, 1:]
        y_pred = y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        return K.sum(loss * y_mask) / K.sum(y_mask)


def test_loss_layer_trains_with_fit_and_sees_masks():
    ids = keras.Input((None,), dtype="int32")
    h = L.Embedding(12, 8, mask_zero=True)(ids)
    probs = keras.layers.Dense(12, activation="softmax")(h)
    out = CrossEntropy(1)([ids, probs])
    model = keras.Model(ids, out)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    data = RNG.integers(1, 12, size=(16, 6))
    data[:8, 4:] = 0
    probs_np = np_(keras.Model(ids, probs)(data))
    valid = (data != 0)[:, 1:]
    nll = -np.log(np.take_along_axis(probs_np[:, :-1], data[:, 1:, None], -1)[..., 0])
    ref = (nll * valid).sum() / valid.sum()
    np.testing.assert_allclose(model.evaluate(data, verbose=0, batch_size=16), ref, rtol=1e-4)

    class Gen:  # a bert4keras-style generator yields [inputs], None
        def __iter__(self):
            while True:
                yield [data], None

    from bert4keras3.snippets import to_keras_structure

    history = model.fit((to_keras_structure(b) for b in Gen()), steps_per_epoch=5, epochs=3,
                        verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0] and all(CrossEntropy.seen_masks)
    assert np_(model(data)).shape == (16, 6, 12)  # output_axis=1 returns y_pred


def test_loss_output_axis_and_config():
    layer = L.Loss(output_axis=[0, 1])
    assert layer.compute_output_shape([(2, 3), (2, 4), (2, 5)]) == [(2, 3), (2, 4)]
    assert L.Loss.from_config(layer.get_config()).output_axis == [0, 1]
    with pytest.raises(NotImplementedError, match="must implement compute_loss"):
        layer([np.zeros((1, 2)), np.zeros((1, 2))])


# --------------------------------------------------------------------------- positions
def test_sinusoidal_position_embedding_layout_and_merge_modes():
    x = RNG.normal(size=(2, 5, 6)).astype("float32")
    ref = np_sinusoidal(np.arange(5), 6)[None]
    zero = np_(L.SinusoidalPositionEmbedding(6, "zero")(x))
    np.testing.assert_allclose(zero, np.broadcast_to(ref, x.shape), atol=1e-5)
    # RoPE code ported from bert4keras reads cosines at the odd features
    np.testing.assert_allclose(zero[0, :, 1::2], np.cos(np.arange(5)[:, None] *
                                                         10000.0 ** (-2 * np.arange(3) / 6)),
                               atol=1e-5)
    np.testing.assert_allclose(np_(L.SinusoidalPositionEmbedding(6)(x)), x + ref, atol=1e-5)
    np.testing.assert_allclose(np_(L.SinusoidalPositionEmbedding(6, "mul")(x)), x * (ref + 1),
                               atol=1e-5)
    cat = np_(L.SinusoidalPositionEmbedding(4, "concat")(x))
    np.testing.assert_allclose(cat, np.concatenate(
        [x, np.broadcast_to(np_sinusoidal(np.arange(5), 4)[None], (2, 5, 4))], -1), atol=1e-5)
    pos = np.array([[0.5, 3, 1, 1, 9], [2, 2, 2, 0, 7]], "float32")
    custom = L.SinusoidalPositionEmbedding(6, "add", custom_position_ids=True)
    np.testing.assert_allclose(np_(custom([x, pos])), x + np_sinusoidal(pos, 6), atol=1e-5)
    layer = L.SinusoidalPositionEmbedding(4, "concat")
    assert layer.compute_output_shape((None, None, 6)) == (None, None, 10)


def test_position_embedding_hierarchical_and_concat():
    n, d, alpha = 4, 3, 0.4
    x = RNG.normal(size=(2, 11, d)).astype("float32")
    layer = L.PositionEmbedding(n, d, hierarchical=True, embeddings_initializer="random_normal")
    out = np_(layer(x))
    table = np_(layer.embeddings)
    u = (table - alpha * table[:1]) / (1 - alpha)
    ref = np.stack([alpha * u[k // n] + (1 - alpha) * u[k % n] for k in range(11)])
    np.testing.assert_allclose(out, x + ref[None], atol=1e-5)
    np.testing.assert_allclose(ref[:n], table, atol=1e-5)  # trained positions unchanged
    half = L.PositionEmbedding(n, d, "zero", hierarchical=0.5,
                               embeddings_initializer="random_normal")
    half.build(x.shape)
    t = np_(half.embeddings)
    u = (t - 0.5 * t[:1]) / 0.5
    np.testing.assert_allclose(np_(half(x))[0, 9], 0.5 * u[2] + 0.5 * u[1], atol=1e-5)
    cat = L.PositionEmbedding(16, 2, "concat", embeddings_initializer="random_normal")
    out = np_(cat(x))
    np.testing.assert_allclose(out, np.concatenate(
        [x, np.broadcast_to(np_(cat.embeddings)[None, :11], (2, 11, 2))], -1), atol=1e-6)
    ids = np.array([[3, 0, 1], [2, 2, 5]])
    custom = L.PositionEmbedding(8, 3, "zero", custom_position_ids=True,
                                 embeddings_initializer="random_normal")
    out = np_(custom([x[:, :3], ids]))
    np.testing.assert_allclose(out, np_(custom.embeddings)[ids], atol=1e-6)


def test_relative_position_embeddings():
    q = np.zeros((1, 3, 2), "float32")
    k = np.zeros((1, 5, 2), "float32")
    rel = L.RelativePositionEmbedding(5, 4, embeddings_initializer="random_normal")
    out = np_(rel([q, k]))
    ids = np.clip(np.arange(5)[None, :] - np.arange(3)[:, None], -2, 2) + 2
    np.testing.assert_allclose(out, np_(rel.embeddings)[ids], atol=0)
    # bert4keras argument order: (input_dim, output_dim, max_distance, bidirectional)
    t5 = L.RelativePositionEmbeddingT5(8, 2, 20, False)
    assert t5.max_distance == 20 and t5.bidirectional is False
    buckets = np_(t5.compute_position_ids([q, k]))
    assert buckets.shape == (3, 5) and (buckets[np.triu_indices(3, 1, 5)] == 0).all()


# --------------------------------------------------------------------------- attention
def np_attention(x_q, x_k, x_v, w, heads, key_size, head_size, mask=None, add=None, rope=None,
                 rel=None, t5=None, scale=True):
    """bert4keras' MultiHeadAttention.pay_attention_to in NumPy."""
    def proj(x, kernel, bias, size):
        y = x @ kernel + bias
        return y.reshape(y.shape[:2] + (heads, size))

    qw = proj(x_q, w[0], w[1], key_size)
    kw = proj(x_k, w[2], w[3], key_size)
    vw = proj(x_v, w[4], w[5], head_size)
    if rope is not None:
        qw, kw = np_rope(rope, qw), np_rope(rope, kw)
    a = np.einsum("bjhd,bkhd->bhjk", qw, kw)
    if rel is not None:
        a = a + np.einsum("bjhd,jkd->bhjk", qw, rel)
    if t5 is not None:
        a = a + t5.transpose(2, 0, 1)[None]
    scores = a / np.sqrt(key_size) if scale else a
    logits = scores if add is None else scores + add
    if mask is not None:
        logits = np.where(mask, logits, -np.inf)
    weights = np_softmax(logits)
    o = np.einsum("bhjk,bkhd->bjhd", weights, vw)
    if rel is not None:
        o = o + np.einsum("bhjk,jkd->bjhd", weights, rel)
    o = o.reshape(o.shape[:2] + (-1,)) @ w[6] + w[7]
    return o, scores


def make_attention(**kwargs):
    layer = L.MultiHeadAttention(2, 4, out_dim=6, key_size=4, **kwargs)
    layer.build((None, None, 6))
    weights = [RNG.normal(size=w.shape).astype("float32") * 0.5 for w in layer.get_weights()]
    layer.set_weights(weights)
    return layer, weights


def test_multi_head_attention_list_call_equals_keyword_call_and_numpy():
    layer, w = make_attention()
    q = RNG.normal(size=(2, 5, 6)).astype("float32")
    kv = RNG.normal(size=(2, 7, 6)).astype("float32")
    ref, _ = np_attention(q, kv, kv, w, 2, 4, 4)
    np.testing.assert_allclose(np_(layer([q, kv, kv])), ref, atol=1e-5)
    np.testing.assert_allclose(np_(layer(q, key=kv, value=kv)), ref, atol=1e-5)
    # a_bias: a boolean [batch, q, k] mask (bert4keras' UniLM/LM masks) or an additive bias
    tril = np.broadcast_to(np.tril(np.ones((5, 5), bool)), (2, 5, 5))
    ref, _ = np_attention(q, q, q, w, 2, 4, 4, mask=tril[:, None])
    np.testing.assert_allclose(np_(layer([q, q, q, tril], a_bias=True)), ref, atol=1e-5)
    np.testing.assert_allclose(np_(layer(q, attention_mask=tril[:, None])), ref, atol=1e-5)
    add = np.where(tril, 0.0, -1e12).astype("float32")
    np.testing.assert_allclose(np_(layer([q, q, q, add], a_bias=True)), ref, atol=1e-5)
    # p_bias="rotary": interleaved sinusoids of SinusoidalPositionEmbedding(key_size, "zero")
    sinus = np_(L.SinusoidalPositionEmbedding(4, "zero")(q))
    ref, _ = np_attention(q, q, q, w, 2, 4, 4, mask=tril[:, None], rope=sinus)
    out = layer([q, q, q, tril, sinus], a_bias=True, p_bias="rotary")
    np.testing.assert_allclose(np_(out), ref, atol=1e-5)
    rotary, _ = make_attention(rotary=True)
    rotary.set_weights(w)
    np.testing.assert_allclose(np_(rotary(q, attention_mask=tril[:, None])), ref, atol=1e-5)


def test_multi_head_attention_relative_biases_and_scores():
    layer, w = make_attention(return_attention_scores=True)
    q = RNG.normal(size=(2, 5, 6)).astype("float32")
    rel = RNG.normal(size=(5, 5, 4)).astype("float32")
    ref, scores = np_attention(q, q, q, w, 2, 4, 4, rel=rel)
    out, a = layer([q, q, q, rel], p_bias="typical_relative")
    np.testing.assert_allclose(np_(out), ref, atol=1e-4)
    np.testing.assert_allclose(np_(a), scores, atol=1e-4)
    t5 = RNG.normal(size=(5, 5, 2)).astype("float32")
    ref, scores = np_attention(q, q, q, w, 2, 4, 4, t5=t5)
    out, a = layer([q, q, q, t5], p_bias="t5_relative")
    np.testing.assert_allclose(np_(out), ref, atol=1e-5)
    np.testing.assert_allclose(np_(a), scores, atol=1e-5)
    heads_first = t5.transpose(2, 0, 1)[None]  # bert4keras3's RelativePositionEmbeddingT5 layout
    np.testing.assert_allclose(np_(layer([q, q, q, heads_first], p_bias="t5_relative")[0]), ref,
                               atol=1e-5)
    out, a = layer(q)
    np.testing.assert_allclose(np_(a), np_attention(q, q, q, w, 2, 4, 4)[1], atol=1e-5)
    with pytest.raises(ValueError, match="p_bias must be one of"):
        layer([q, q, q], p_bias="alibi")
    with pytest.raises(ValueError, match="list call"):
        layer(q, a_bias=True)


def test_multi_head_attention_list_call_masks_keys_in_a_model():
    ids = keras.Input((None,), dtype="int32")
    h = L.Embedding(10, 6, mask_zero=True, embeddings_initializer="random_normal")(ids)
    att = L.MultiHeadAttention(2, 3, name="att")
    o = att([h, h, h])
    model = keras.Model(ids, o)
    data = np.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]])
    out = np_(model(data))
    emb = np_(model.layers[1].embeddings)[data]
    w = att.get_weights()
    ref, _ = np_attention(emb, emb, emb, w, 2, 3, 3, mask=(data != 0)[:, None, None, :])
    np.testing.assert_allclose(out, ref, atol=1e-5)
    keyword = keras.Model(ids, att(h))  # query alone: its Keras mask masks the keys too
    np.testing.assert_allclose(np_(keyword(data)), ref, atol=1e-5)


def test_gated_attention_unit_list_call():
    gau = L.GatedAttentionUnit(8, 4, normalization="softmax")
    x = RNG.normal(size=(2, 5, 6)).astype("float32")
    gau.build(x.shape)
    gau.set_weights([RNG.normal(size=v.shape).astype("float32") * 0.5 for v in gau.get_weights()])
    tril = np.broadcast_to(np.tril(np.ones((5, 5), bool)), (2, 5, 5))
    sinus = np_sinusoidal(np.arange(5)[None], 4).astype("float32")
    ref = np_(gau(x, attention_mask=tril))  # rotary=True: the layer's own RoPE
    np.testing.assert_allclose(np_(gau([x, tril, sinus], a_bias=True, p_bias="rotary")), ref,
                               atol=1e-5)
    np.testing.assert_allclose(np_(gau([x, tril], a_bias=True)), ref, atol=1e-5)
    cross = L.GatedAttentionUnit(8, 4, self_attention=False, rotary=False)
    kv = RNG.normal(size=(2, 7, 6)).astype("float32")
    out = cross([x, kv, kv])
    assert tuple(out.shape) == (2, 5, 6)
    assert {v.path.split("/")[-2] for v in cross.weights} >= {"uq_dense", "k_dense", "v_dense"}
    with pytest.raises(ValueError, match=r"layer\(\[q, k, v, \.\.\.\]\)"):
        cross(x)


# --------------------------------------------------------------------------- norms
def test_layer_normalization_bert4keras_arguments():
    x = RNG.normal(size=(2, 3, 4)).astype("float32")
    c = RNG.normal(size=(2, 5)).astype("float32")
    rms_a = L.LayerNormalization(zero_mean=False, offset=False, epsilon=1e-6)
    rms_b = L.LayerNormalization(zero_mean=False, center=False, epsilon=1e-6)
    for layer in (rms_a, rms_b):
        layer.build(x.shape)
        assert [v.name for v in layer.weights] == ["gamma"]
    ref = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np_(rms_a(x)), ref, atol=1e-5)
    assert L.LayerNormalization().epsilon == keras.config.epsilon()
    assert L.LayerNormalization(center=False).center is False
    with pytest.raises(ValueError, match="center is another name of offset"):
        L.LayerNormalization(center=True, offset=False)
    cond = L.LayerNormalization(conditional=True, hidden_units=3, hidden_activation="relu")
    cond.build([x.shape, c.shape])
    cond.set_weights([RNG.normal(size=v.shape).astype("float32") for v in cond.get_weights()])
    get = {v.path.split("/", 1)[1]: np_(v) for v in cond.weights}
    hidden = np.maximum(c @ get["hidden_dense/kernel"], 0)[:, None]
    gamma = get["gamma"] + hidden @ get["gamma_dense/kernel"]
    beta = get["beta"] + hidden @ get["beta_dense/kernel"]
    mu = x.mean(-1, keepdims=True)
    normed = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + keras.config.epsilon())
    np.testing.assert_allclose(np_(cond([x, c])), normed * gamma + beta, atol=1e-4)


def test_scale_offset_constants_and_condition():
    x = RNG.normal(size=(2, 3, 4)).astype("float32")
    np.testing.assert_allclose(np_(L.ScaleOffset(scale=2.0, offset=0.5)(x)), x * 2 + 0.5,
                               atol=1e-6)
    layer = L.ScaleOffset(scale=2.0, offset=None, conditional=True)
    c = RNG.normal(size=(2, 3)).astype("float32")
    layer.build([x.shape, c.shape])
    assert [v.path.split("/", 1)[1] for v in layer.weights] == ["gamma_dense/kernel"]
    k = RNG.normal(size=(3, 4)).astype("float32")
    layer.set_weights([k])
    np.testing.assert_allclose(np_(layer([x, c])), x * (2.0 + (c @ k)[:, None]), atol=1e-5)
    clone = L.ScaleOffset.from_config(layer.get_config())
    assert clone.scale == 2.0 and clone.offset is None and clone.conditional


# --------------------------------------------------------------------------- heads
def np_memm_loss(tags, emissions, mask, trans):
    """bert4keras' MaximumEntropyMarkovModel.sparse_loss for one batch, in NumPy."""
    def direction(tags, em, trans):
        total, count = 0.0, 0
        for b in range(len(tags)):
            n = int(mask[b].sum())
            for t in range(n):
                hist = em[b, 0] if t == 0 else trans[tags[b, t - 1]]
                logits = (em[b, t] + hist) / 2
                total += -np.log(np_softmax(logits)[tags[b, t]])
                count += 1
        return total / count

    rev_tags = np.array([np.concatenate([tags[b, :int(mask[b].sum())][::-1],
                                         tags[b, int(mask[b].sum()):]]) for b in range(len(tags))])
    rev_em = np.stack([np.concatenate([emissions[b, :int(mask[b].sum())][::-1],
                                       emissions[b, int(mask[b].sum()):]]) for b in range(len(tags))])
    return (direction(tags, emissions, trans) + direction(rev_tags, rev_em, trans.T)) / 2


def test_maximum_entropy_markov_model_loss_and_accuracy():
    emissions = RNG.normal(size=(2, 5, 3)).astype("float32")
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    tags = RNG.integers(0, 3, size=(2, 5))
    memm = L.MaximumEntropyMarkovModel(lr_multiplier=2)
    out = np_(memm(emissions, mask=mask))
    assert (out[0, 4] < -1e11).all() and np.array_equal(out[mask], emissions[mask])
    trans = np_(memm.trans)
    np.testing.assert_allclose(np_(memm._trans) * 2, trans, atol=1e-6)
    np.testing.assert_allclose(np_(memm.sparse_loss(tags, out)),
                               np_memm_loss(tags, emissions, mask, trans), atol=1e-5)
    onehot = np.eye(3, dtype="float32")[tags]
    np.testing.assert_allclose(np_(memm.dense_loss(onehot, out)), np_(memm.sparse_loss(tags, out)),
                               atol=1e-6)
    acc = float(np_(memm.sparse_accuracy(tags, out)))
    assert 0.0 <= acc <= 1.0
    np.testing.assert_allclose(float(np_(memm.dense_accuracy(onehot, out))), acc)
    low = L.MaximumEntropyMarkovModel(hidden_dim=2)
    low.build(emissions.shape)
    trans = np_(low.l_trans) @ np_(low.r_trans).T
    np.testing.assert_allclose(np_(low.trans), trans, atol=1e-6)
    np.testing.assert_allclose(np_(low.sparse_loss(tags, np_(low(emissions, mask=mask)))),
                               np_memm_loss(tags, emissions, mask, trans), atol=1e-5)
    rev = np_(memm.reverse_sequence([np.arange(10).reshape(2, 5)], mask)[0])
    np.testing.assert_array_equal(rev, [[3, 2, 1, 0, 4], [9, 8, 7, 6, 5]])


def test_crf_metric_names_exist():
    crf = L.ConditionalRandomField(lr_multiplier=10)
    for name in ("sparse_loss", "sparse_accuracy", "dense_loss", "dense_accuracy", "trans"):
        assert hasattr(type(crf), name)


# --------------------------------------------------------------------------- utility layers
def test_pooling_and_concatenation_keep_masks():
    x = RNG.normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    out = np_(L.GlobalMaxPooling1D()(x, mask=mask))
    np.testing.assert_allclose(out, np.where(mask[..., None], x, -np.inf).max(1), atol=0)
    ids = keras.Input((None,), dtype="int32")
    a = L.Embedding(9, 3, mask_zero=True)(ids)
    b = keras.layers.Dense(3)(keras.Input((2, 3)))
    joined = L.Concatenate1D()([a, a])
    assert joined._keras_mask is not None
    layer = L.Concatenate1D()
    m = layer.compute_mask([x, x[:, :2]], [ops.convert_to_tensor(mask), None])
    np.testing.assert_array_equal(np_(m), np.concatenate([mask, np.ones((2, 2), bool)], 1))
    assert layer.compute_output_shape([(None, 4, 3), (None, 2, 3)]) == (None, 6, 3)
    del b
    parts = L.BatchSplit(2)(np.arange(10.0).reshape(5, 2))
    assert [np_(p).shape[0] for p in parts] == [3, 2]
    np.testing.assert_array_equal(np_(L.BatchConcat()(parts)), np.arange(10.0).reshape(5, 2))
    weighted = L.BatchSplit([1, 3])(np.arange(8.0).reshape(8, 1))
    assert [np_(p).shape[0] for p in weighted] == [2, 6]
    pieces = L.BatchSplit([1, 3])(a)  # in a functional model, masks follow the pieces
    joined = L.BatchConcat()(pieces)
    model = keras.Model(ids, pieces + [joined])
    outs = model(np.arange(16).reshape(8, 2) % 9)
    assert [tuple(o.shape) for o in outs] == [(2, 2, 3), (6, 2, 3), (8, 2, 3)]
    assert joined._keras_mask is not None


# --------------------------------------------------------------------------- serialization
def build_compat_model():
    ids = keras.Input((None,), dtype="int32", name="ids")
    cond = keras.Input((3,), name="cond")
    h = L.Embedding(20, 8, mask_zero=True, name="emb")(ids)
    h = L.PositionEmbedding(4, 8, hierarchical=True, embeddings_initializer="random_normal",
                            name="pos")(h)
    h = L.SinusoidalPositionEmbedding(4, "concat", name="sin")(h)
    h = keras.layers.Dense(8, name="proj")(h)
    h = L.LayerNormalization(conditional=True, hidden_units=2, offset=False, name="cln")([h, cond])
    h = L.ScaleOffset(scale=True, offset=0.1, name="so")(h)
    sinus = L.SinusoidalPositionEmbedding(4, "zero", name="rope")(h)
    rel = L.RelativePositionEmbedding(7, 4, embeddings_initializer="random_normal",
                                      name="rel")([h, h])
    a = L.MultiHeadAttention(2, 4, name="mha")([h, h, h, sinus], p_bias="rotary")
    a2 = L.MultiHeadAttention(2, 4, name="nezha")([a, a, a, rel], p_bias="typical_relative")
    g = L.GatedAttentionUnit(6, 4, name="gau")([a2], p_bias=None)
    t5 = L.RelativePositionEmbeddingT5(8, 2, 16, True, embeddings_initializer="random_normal",
                                       name="t5")([g, g])
    g = L.MultiHeadAttention(2, 4, attention_scale=False, name="t5att")([g, g, g, t5],
                                                                          p_bias="t5_relative")
    c = L.Concatenate1D(name="cat")([g, g])
    memm = L.MaximumEntropyMarkovModel(lr_multiplier=3, hidden_dim=2, name="memm")(
        keras.layers.Dense(3, name="tags")(c))
    pooled = L.GlobalMaxPooling1D(name="gmp")(c)
    return keras.Model([ids, cond], [memm, pooled])


def test_compat_layers_round_trip_keras_and_weights_files(tmp_path):
    keras.utils.set_random_seed(3)
    model = build_compat_model()
    for v in model.weights:  # non-trivial values everywhere (zero-initialised denses too)
        v.assign(RNG.normal(size=v.shape).astype("float32") * 0.3)
    data = [np.array([[1, 2, 3, 4, 5, 6, 0, 0], [7, 8, 9, 1, 2, 3, 4, 5]]),
            RNG.normal(size=(2, 3)).astype("float32")]
    ref = [np_(o) for o in model(data)]
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    for r, o in zip(ref, loaded(data)):
        np.testing.assert_array_equal(r, np_(o))
    model.save_weights(tmp_path / "m.weights.h5")
    fresh = build_compat_model()
    fresh.load_weights(tmp_path / "m.weights.h5")
    for r, o in zip(ref, fresh(data)):
        np.testing.assert_array_equal(r, np_(o))
    for layer in model.layers:
        if type(layer).__module__.startswith("bert4keras3"):
            clone = type(layer).from_config(layer.get_config())
            assert clone.get_config() == layer.get_config(), layer.name


def test_bert4keras_unilm_script_trains_unchanged():
    """The seq2seq pattern of bert4keras' UniLM examples, with only the imports changed."""
    from bert4keras3.models import build_transformer_model
    from bert4keras3.snippets import DataGenerator, sequence_padding

    class data_generator(DataGenerator):
        def __iter__(self, random=False):
            batch_token_ids, batch_segment_ids = [], []
            for is_end, (a, b) in self.sample(random):
                batch_token_ids.append([2] + a + [3] + b + [3])
                batch_segment_ids.append([0] * (len(a) + 2) + [1] * (len(b) + 1))
                if len(batch_token_ids) == self.batch_size or is_end:
                    yield [sequence_padding(batch_token_ids),
                           sequence_padding(batch_segment_ids)], None
                    batch_token_ids, batch_segment_ids = [], []

    class Seq2SeqCrossEntropy(L.Loss):
        def compute_loss(self, inputs, mask=None):
            y_true, y_mask, y_pred = inputs
            y_true, y_mask, y_pred = y_true[:, 1:], y_mask[:, 1:], y_pred[:, :-1]
            loss = K.sparse_categorical_crossentropy(y_true, y_pred)
            return K.sum(loss * y_mask) / K.sum(y_mask)

    config = dict(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                  intermediate_size=32, hidden_act="gelu", max_position_embeddings=64,
                  type_vocab_size=2)
    model = build_transformer_model(config, application="unilm")
    output = Seq2SeqCrossEntropy(2)(model.inputs + model.outputs)
    model = keras.models.Model(model.inputs, output)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    rng = np.random.RandomState(0)
    data = [(list(rng.randint(4, 20, rng.randint(2, 6))), list(rng.randint(4, 20, rng.randint(1, 5))))
            for _ in range(40)]
    gen = data_generator(data, batch_size=8)
    history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=3, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
