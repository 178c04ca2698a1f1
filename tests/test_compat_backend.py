"""bert4keras' ``backend`` names and the Keras-2 ``K`` namespace, against NumPy transcriptions."""
import numpy as np
import pytest

import keras
from keras import ops

from bert4keras3 import backend as B
from bert4keras3.backend import K

RNG = np.random.default_rng(7)


def np_(x):
    return ops.convert_to_numpy(x)


def np_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def test_script_import_line():
    from bert4keras3.backend import K as K2, keras as keras2  # noqa: F401

    assert keras2 is keras and K2.floatx() == keras.config.floatx()
    assert K.epsilon() == keras.config.epsilon()


# --------------------------------------------------------------------------- masking
def test_sequence_masking_bert4keras_signature():
    x = RNG.normal(size=(2, 3, 4, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    out = np_(B.sequence_masking(x, mask, 0, -1))
    np.testing.assert_array_equal(out, np.where(mask[:, None, None, :], x, 0))
    out = np_(B.sequence_masking(x, mask, "-inf", [2, 3]))
    both = np.broadcast_to(mask[:, None, :, None] & mask[:, None, None, :], x.shape)
    np.testing.assert_array_equal(out[both], x[both])
    assert (out[~both] == -1e12).all()
    out = np_(B.sequence_masking(x, mask, -np.inf, -1))
    assert np.isneginf(out[~np.broadcast_to(mask[:, None, None, :], x.shape)]).all()
    # bias: boolean (extra mask) or additive
    tril = np.tril(np.ones((4, 4), bool))
    out, full = B.sequence_masking(x, mask, "inf", -1, bias=tril, return_mask=True)
    ref_mask = mask[:, None, None, :] & tril
    np.testing.assert_array_equal(np_(full), np.broadcast_to(ref_mask, np_(full).shape))
    np.testing.assert_array_equal(np_(out), np.where(ref_mask, x, 1e12).astype("float32"))
    add = RNG.normal(size=(4, 4)).astype("float32")
    out = np_(B.sequence_masking(x, mask, 0, -1, bias=add))
    np.testing.assert_allclose(out, np.where(mask[:, None, None, :], x + add, 0), atol=1e-6)
    np.testing.assert_allclose(np_(B.sequence_masking(x, None, bias=add)), x + add, atol=1e-6)
    assert B.sequence_masking(x, None) is x
    # the earlier bert4keras3 call form
    y = RNG.normal(size=(2, 4, 3)).astype("float32")
    out = np_(B.sequence_masking(y, mask, value=-1.0, axis=1))
    np.testing.assert_array_equal(out, np.where(mask[:, :, None], y, -1.0))


def test_align_and_batch_gather():
    m = np.ones((2, 5))
    assert tuple(B.align(ops.convert_to_tensor(m), [0, -1], 4).shape) == (2, 1, 1, 5)
    assert tuple(B.align(ops.convert_to_tensor(m), [0, 2]).shape) == (2, 1, 5)
    params = RNG.normal(size=(2, 3, 6, 4)).astype("float32")
    idx = RNG.integers(0, 6, size=(2, 3, 5))
    ref = np.empty((2, 3, 5, 4), "float32")
    for a in range(2):
        for b in range(3):
            ref[a, b] = params[a, b][idx[a, b]]
    np.testing.assert_array_equal(np_(B.batch_gather(params, idx)), ref)
    p2 = RNG.normal(size=(2, 6)).astype("float32")
    i2 = np.array([[0, 5, 5], [1, 2, 3]])
    np.testing.assert_array_equal(np_(B.batch_gather(p2, i2.astype("float32"))),
                                  np.stack([p2[0][i2[0]], p2[1][i2[1]]]))


# --------------------------------------------------------------------------- positions
def np_sinusoidal(pos, dim, base=10000.0):
    out = np.zeros(pos.shape + (dim,))
    for i in range(dim // 2):
        theta = pos * base ** (-2 * i / dim)
        out[..., 2 * i], out[..., 2 * i + 1] = np.sin(theta), np.cos(theta)
    return out


def test_sinusoidal_embeddings_layout():
    pos = np.array([[0.0, 1.0, 2.5, 7.0]])
    np.testing.assert_allclose(np_(B.sinusoidal_embeddings(pos, 8)), np_sinusoidal(pos, 8),
                               atol=1e-5)
    half = np_(B.sinusoidal_embeddings(pos, 8, interleave=False))
    ref = np_sinusoidal(pos, 8)
    np.testing.assert_allclose(half, np.concatenate([ref[..., 0::2], ref[..., 1::2]], -1),
                               atol=1e-5)
    table = np_(B.Sinusoidal()((5, 6)))
    np.testing.assert_allclose(table, np_sinusoidal(np.arange(5.0), 6), atol=1e-5)


def np_rope(sinusoidal, x):
    """bert4keras: x * cos + rotate_half(x) * sin with sin/cos read at even/odd features."""
    sin = np.repeat(sinusoidal[..., 0::2], 2, axis=-1)
    cos = np.repeat(sinusoidal[..., 1::2], 2, axis=-1)
    while sin.ndim < x.ndim:
        sin, cos = sin[:, :, None], cos[:, :, None]
    rot = np.stack([-x[..., 1::2], x[..., 0::2]], -1).reshape(x.shape)
    return x * cos + rot * sin


def test_apply_rotary_position_embeddings():
    x = RNG.normal(size=(2, 5, 3, 8)).astype("float32")
    y = RNG.normal(size=(2, 5, 3, 8)).astype("float32")
    sinus = np_sinusoidal(np.arange(5.0)[None], 8).astype("float32")
    qx, qy = B.apply_rotary_position_embeddings(sinus, x, y)
    np.testing.assert_allclose(np_(qx), np_rope(sinus, x), atol=1e-5)
    np.testing.assert_allclose(np_(qy), np_rope(sinus, y), atol=1e-5)
    z = RNG.normal(size=(2, 5, 8)).astype("float32")
    single = B.apply_rotary_position_embeddings(np.repeat(sinus, 2, 0), z)
    np.testing.assert_allclose(np_(single), np_rope(np.repeat(sinus, 2, 0), z), atol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        B.apply_rotary_position_embeddings(sinus, x, z)


# --------------------------------------------------------------------------- normalisers
def test_attention_normalize_bert4keras():
    a = RNG.normal(size=(2, 2, 3, 5)).astype("float32") * 3
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    full = np.broadcast_to(mask[:, None, None, :], a.shape)
    n = mask.sum(-1)[:, None, None, None].astype("float32")
    ref = np_softmax(np.where(full, a, -np.inf))
    np.testing.assert_allclose(np_(B.attention_normalize(a, mask)), ref, atol=1e-6)
    # softmax_plus: bert4keras clamps n at 16 by default; min_length=None is as trained
    ref = np_softmax(np.where(full, a * np.log(np.maximum(n, 16)) / np.log(512), -np.inf))
    np.testing.assert_allclose(np_(B.attention_normalize(a, mask, -1, "softmax_plus")), ref,
                               atol=1e-6)
    ref = np_softmax(np.where(full, a * np.log(n) / np.log(512), -np.inf))
    out = B.attention_normalize(a, mask, method="softmax_plus", min_length=None)
    np.testing.assert_allclose(np_(out), ref, atol=1e-6)
    ref = np.where(full, np.maximum(a, 0) ** 2 / n, 0)
    np.testing.assert_allclose(np_(B.attention_normalize(a, mask, method="squared_relu")), ref,
                               atol=1e-6)
    # bias: boolean combines with the mask (and counts in n), additive shifts the logits
    tril = np.tril(np.ones((3, 5), bool))
    both = full & tril
    ref = np.where(both, np.maximum(a, 0) ** 2 / both.sum(-1, keepdims=True), 0)
    out = B.attention_normalize(a, mask, -1, "squared_relu", tril)
    np.testing.assert_allclose(np_(out), ref, atol=1e-6)
    add = RNG.normal(size=(3, 5)).astype("float32")
    ref = np_softmax(np.where(full, a + add, -np.inf))
    np.testing.assert_allclose(np_(B.attention_normalize(a, mask, bias=add)), ref, atol=1e-6)
    # the earlier bert4keras3 positional form: (scores, full mask, method)
    out = B.attention_normalize(a, full, "softmax_plus", min_length=None)
    np.testing.assert_allclose(np_(out), np_softmax(np.where(full, a * np.log(n) / np.log(512),
                                                             -np.inf)), atol=1e-6)


def test_multilabel_losses_and_rms():
    y_pred = RNG.normal(size=(3, 6)).astype("float32") * 2
    y_pred[0, 5] = -np.inf
    y_true = (RNG.random((3, 6)) < 0.4).astype("float32")
    y_true[0, 5] = 0
    ref = []
    for t, s in zip(y_true, y_pred):
        ok = np.isfinite(s)
        neg = np.concatenate([s[ok & (t == 0)], [0.0]])
        pos = np.concatenate([-s[ok & (t == 1)], [0.0]])
        ref.append(np.log(np.exp(neg).sum()) + np.log(np.exp(pos).sum()))
    out = B.multilabel_categorical_crossentropy(y_true, y_pred)
    np.testing.assert_allclose(np_(out), ref, atol=1e-5)
    idx = np.array([[1, 2], [0, 4], [3, 3]])
    dense = np.zeros((3, 6), "float32")
    for r, ids in enumerate(idx):
        dense[r, ids] = 1
    s = RNG.normal(size=(3, 6)).astype("float32")
    np.testing.assert_allclose(np_(B.sparse_multilabel_categorical_crossentropy(idx, s)),
                               np_(B.multilabel_categorical_crossentropy(dense, s)), atol=1e-5)
    x = RNG.normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(np_(B.root_mean_square(x, axis=-1)),
                               np.sqrt((x ** 2).mean(-1)), atol=1e-6)


def test_piecewise_linear():
    t = np.array([0, 500, 1000, 1500, 2000, 5000], "float32")
    out = np_(B.piecewise_linear(t, {1000: 1, 2000: 0.1}))
    np.testing.assert_allclose(out, np.interp(t, [0, 1000, 2000], [0, 1, 0.1]), atol=1e-6)
    out = np_(B.piecewise_linear(t, {1000: 1, 2000: 0.1}, from_zero=False))
    np.testing.assert_allclose(out, np.interp(t, [1000, 2000], [1, 0.1]), atol=1e-6)


def test_set_gelu_switches_the_meaning_of_gelu():
    x = np.linspace(-3, 3, 13).astype("float32")
    from math import erf

    exact = np.array([0.5 * v * (1 + erf(v / np.sqrt(2))) for v in x])
    approx = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    try:
        B.set_gelu("tanh")
        np.testing.assert_allclose(np_(B.get_activation("gelu")(x)), approx, atol=1e-5)
        from bert4keras3.layers import FeedForward

        ff = FeedForward(1, activation="gelu", kernel_initializer="ones", use_bias=False)
        ff.build((13, 1))
        np.testing.assert_allclose(np_(ff(x[:, None]))[:, 0], approx, atol=1e-5)
        B.set_gelu("erf")
        np.testing.assert_allclose(np_(B.get_activation("gelu")(x)), exact, atol=1e-5)
        with pytest.raises(ValueError, match="'erf' or 'tanh'"):
            B.set_gelu("relu")
    finally:
        B.set_gelu("erf")


def test_search_layer_walks_the_graph():
    x = keras.Input((4,), name="in")
    inner = keras.Sequential([keras.layers.Dense(3, name="inner_dense")], name="inner")
    h = keras.layers.Dense(4, name="first")(x)
    y = keras.layers.Dense(2, name="last")(inner(h))
    assert B.search_layer(y, "first").name == "first"
    assert B.search_layer(y, "inner_dense").name == "inner_dense"
    assert B.search_layer(y, "missing") is None


def test_shape_helpers():
    x = RNG.normal(size=(2, 3, 12)).astype("float32")
    np.testing.assert_array_equal(np_(B.reshape(x, (4, -1), -1)), x.reshape(2, 3, 4, 3))
    np.testing.assert_array_equal(np_(B.reshape(x, (6, 12))), x.reshape(6, 12))
    np.testing.assert_array_equal(np_(B.flatten(x, 1)), x.reshape(2, 36))
    np.testing.assert_array_equal(np_(B.flatten(x)), x.reshape(-1))
    np.testing.assert_array_equal(np_(B.where(x > 0, x, 0)), np.where(x > 0, x, 0))
    assert B.dtype(1.0) is None and B.dtype(x) == "float32"
    pooled = np_(B.pool1d(x, 2, 2))
    np.testing.assert_array_equal(pooled, x[:, :2].reshape(2, 1, 2, 12).max(2))
    padded = np_(B.divisible_temporal_padding(x, 4))
    assert padded.shape == (2, 4, 12) and (padded[:, 3] == 0).all()
    assert isinstance(B.get_available_gpus(), list)
    assert B.symbolic(len) is len


def test_recompute_grad_gives_the_same_training(monkeypatch):
    monkeypatch.setattr(B, "do_recompute", True)

    class Tanh(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 4), initializer="glorot_uniform")

        def call(self, x):
            return ops.tanh(ops.matmul(x, self.w))

    class Recomputed(Tanh):
        call = B.recompute_grad(Tanh.call)

    assert Recomputed.call is not Tanh.call

    def train(cls):
        keras.utils.set_random_seed(0)
        x = keras.Input((3,))
        model = keras.Model(x, cls()(x))
        model.compile(keras.optimizers.SGD(0.1), "mse")
        data = np.random.RandomState(0).randn(8, 3).astype("float32")
        model.fit(data, np.ones((8, 4), "float32"), epochs=2, batch_size=4, verbose=0)
        return model.get_weights()[0]

    np.testing.assert_allclose(train(Recomputed), train(Tanh), atol=1e-6)
    monkeypatch.setattr(B, "do_recompute", False)
    assert B.recompute_grad(Tanh.call) is Tanh.call


# --------------------------------------------------------------------------- K
def test_k_elementwise_and_reductions():
    x = RNG.normal(size=(2, 3, 4)).astype("float32")
    y = RNG.normal(size=(2, 3, 4)).astype("float32")
    cases = [
        (K.sum(x, 1), x.sum(1)), (K.mean(x, -1, True), x.mean(-1, keepdims=True)),
        (K.max(x), x.max()), (K.min(x, 0), x.min(0)), (K.prod(x, 2), x.prod(2)),
        (K.std(x, 1), x.std(1)), (K.var(x), x.var()),
        (K.square(x), x ** 2), (K.sqrt(K.abs(x)), np.sqrt(np.abs(x))), (K.exp(x), np.exp(x)),
        (K.log(K.abs(x)), np.log(np.abs(x))), (K.sign(x), np.sign(x)), (K.round(x), np.round(x)),
        (K.pow(x, 2), x ** 2), (K.clip(x, -0.5, 0.5), np.clip(x, -0.5, 0.5)),
        (K.maximum(x, y), np.maximum(x, y)), (K.minimum(x, y), np.minimum(x, y)),
        (K.sin(x), np.sin(x)), (K.cos(x), np.cos(x)), (K.tanh(x), np.tanh(x)),
        (K.sigmoid(x), 1 / (1 + np.exp(-x))), (K.hard_sigmoid(x), np.clip(0.2 * x + 0.5, 0, 1)),
        (K.relu(x), np.maximum(x, 0)), (K.relu(x, alpha=0.1), np.where(x > 0, x, 0.1 * x)),
        (K.softplus(x), np.log1p(np.exp(x))), (K.softmax(x), np_softmax(x)),
        (K.elu(x), np.where(x > 0, x, np.exp(x) - 1)),
        (K.logsumexp(x, 1), np.log(np.exp(x).sum(1))),
        (K.cumsum(x), np.cumsum(x, 0)), (K.cumprod(x, 1), np.cumprod(x, 1)),
        (K.l2_normalize(x, -1), x / np.sqrt((x ** 2).sum(-1, keepdims=True))),
        (K.stop_gradient(x), x), (K.bias_add(x, y[0, 0]), x + y[0, 0]),
        (K.switch(x > 0, x, y), np.where(x > 0, x, y)),
        (K.switch((x > 0)[..., 0], x, y), np.where((x > 0)[..., :1], x, y)),
        (K.where(x > 0, 1.0, y), np.where(x > 0, 1.0, y)),
    ]
    for k, (got, ref) in enumerate(cases):
        np.testing.assert_allclose(np_(got), ref, atol=1e-5, rtol=1e-5, err_msg=f"case {k}")
    ids = np.array([[1, 0, 2]])
    for got, ref in [
        (K.argmax(x), x.argmax(-1)), (K.argmin(x, 1), x.argmin(1)),
        (K.equal(ids, 0), ids == 0), (K.not_equal(ids, 0), ids != 0),
        (K.greater(ids, 0), ids > 0), (K.greater_equal(ids, 1), ids >= 1),
        (K.less(ids, 1), ids < 1), (K.less_equal(ids, 1), ids <= 1),
        (K.any(K.greater(x, 2), 1), (x > 2).any(1)), (K.all(K.greater(x, -3)), (x > -3).all()),
    ]:
        np.testing.assert_array_equal(np_(got), ref)


def test_k_shapes_and_structure():
    x = RNG.normal(size=(2, 3, 4)).astype("float32")
    assert K.int_shape(x) == (2, 3, 4) and K.ndim(x) == 3 and K.dtype(x) == "float32"
    assert tuple(K.shape(x)) == (2, 3, 4) and K.prod(K.shape(x)[1:]) == 12
    assert K.dtype(K.cast(x, "int32")) == "int32" and K.count_params(x) == 24
    for got, ref in [
        (K.reshape(x, (2, 12)), x.reshape(2, 12)), (K.reshape(x, (2, -1), -1), x.reshape(2, 3, 2, 2)),
        (K.flatten(x), x.reshape(-1)), (K.batch_flatten(x), x.reshape(2, -1)),
        (K.expand_dims(x), x[..., None]), (K.squeeze(x[:, :1], 1), x[:, 0]),
        (K.concatenate([x, x]), np.concatenate([x, x], -1)), (K.stack([x, x], 1), np.stack([x, x], 1)),
        (K.permute_dimensions(x, (2, 0, 1)), x.transpose(2, 0, 1)), (K.transpose(x), x.T),
        (K.tile(x, [1, 2, 1]), np.tile(x, [1, 2, 1])), (K.repeat(x[:, 0], 3), np.repeat(x[:, :1], 3, 1)),
        (K.repeat_elements(x, 2, 1), np.repeat(x, 2, 1)), (K.reverse(x, 1), x[:, ::-1]),
        (K.gather(x, np.array([1, 0, 1])), x[[1, 0, 1]]),
        (K.one_hot(np.array([0, 2]), 3), np.eye(3)[[0, 2]]),
        (K.temporal_padding(x, (1, 2)), np.pad(x, [(0, 0), (1, 2), (0, 0)])),
        (K.arange(2, 7, 2), np.arange(2, 7, 2)), (K.zeros((2, 2)), np.zeros((2, 2))),
        (K.ones_like(x), np.ones_like(x)), (K.zeros_like(x, "int32"), np.zeros_like(x, "int32")),
        (K.eye(3), np.eye(3)), (K.constant([[0, 1]]), np.array([[0.0, 1.0]])),
    ]:
        np.testing.assert_allclose(np_(got), ref, atol=1e-6)
    assert K.dtype(K.constant([[0, 1]])) == K.floatx()


def test_k_products_follow_keras2():
    x = RNG.normal(size=(2, 3, 4)).astype("float32")
    y = RNG.normal(size=(2, 4, 5)).astype("float32")
    w = RNG.normal(size=(4, 5)).astype("float32")
    np.testing.assert_allclose(np_(K.dot(x, w)), x @ w, atol=1e-5)
    np.testing.assert_allclose(np_(K.dot(x[0], w)), x[0] @ w, atol=1e-5)
    z = RNG.normal(size=(3, 4, 5)).astype("float32")
    np.testing.assert_allclose(np_(K.dot(x, z)), np.einsum("abi,cij->abcj", x, z), atol=1e-5)
    np.testing.assert_allclose(np_(K.batch_dot(x, y)), np.einsum("bij,bjk->bik", x, y), atol=1e-5)
    np.testing.assert_allclose(np_(K.batch_dot(x, x, axes=[2, 2])),
                               np.einsum("bid,bjd->bij", x, x), atol=1e-5)
    a, b = x[:, 0], x[:, 1]
    np.testing.assert_allclose(np_(K.batch_dot(a, b)), (a * b).sum(-1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(np_(K.batch_dot(x, a, axes=(2, 1))), np.einsum("bid,bd->bi", x, a),
                               atol=1e-5)


def test_k_losses_follow_keras2():
    logits = RNG.normal(size=(2, 3, 5)).astype("float32")
    probs = np_softmax(logits)
    labels = RNG.integers(0, 5, size=(2, 3))
    ref = -np.log(np.take_along_axis(probs, labels[..., None], -1)[..., 0])
    np.testing.assert_allclose(np_(K.sparse_categorical_crossentropy(labels, probs)), ref, atol=1e-5)
    np.testing.assert_allclose(np_(K.sparse_categorical_crossentropy(labels[..., None], probs)),
                               ref, atol=1e-5)
    np.testing.assert_allclose(
        np_(K.sparse_categorical_crossentropy(labels, logits, from_logits=True)), ref, atol=1e-5)
    onehot = np.eye(5, dtype="float32")[labels]
    np.testing.assert_allclose(np_(K.categorical_crossentropy(onehot, probs)), ref, atol=1e-5)
    p = 1 / (1 + np.exp(-logits))
    t = (RNG.random(logits.shape) < 0.5).astype("float32")
    ref = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    np.testing.assert_allclose(np_(K.binary_crossentropy(t, p)), ref, atol=1e-4)


def test_k_variables_and_absent_names():
    v = K.variable(np.ones((2, 2)))
    K.set_value(v, np.full((2, 2), 3.0))
    np.testing.assert_array_equal(K.get_value(v), np.full((2, 2), 3.0))
    np.testing.assert_array_equal(K.eval(v), K.batch_get_value([v])[0])
    K.batch_set_value([(v, np.zeros((2, 2)))])
    K.update_add(v, np.ones((2, 2)))
    np.testing.assert_array_equal(K.eval(v), np.ones((2, 2)))
    with pytest.raises(AttributeError, match="K.gradients does not exist.*train_step"):
        K.gradients
    with pytest.raises(AttributeError, match="K.learning_phase .*training="):
        K.learning_phase()
    with pytest.raises(AttributeError, match="not provided; use keras.ops"):
        K.no_such_function
    assert K.in_train_phase(1.0, 0.0) == 0.0  # outside a layer call: test phase (Keras 2)
    assert K.in_train_phase(1.0, 0.0, training=True) == 1.0
    assert "sum" in dir(K) and "batch_dot" in dir(K)
    u = np_(K.random_uniform((100,), seed=3))
    assert u.shape == (100,) and (u >= 0).all() and (u < 1).all()
    b = np_(K.random_binomial((1000,), p=0.3, seed=4))
    assert set(np.unique(b)) <= {0.0, 1.0} and 0.2 < b.mean() < 0.4


def test_k_in_train_phase_follows_the_layer_call():
    """Without ``training``, ``K.in_train_phase`` takes the enclosing call's (Theseus example)."""

    class TrainOnly(keras.layers.Layer):
        def call(self, inputs):  # no training argument, as in bert4keras' examples
            return K.in_train_phase(inputs * 0.0, inputs)

    x_in = keras.Input((3,))
    model = keras.Model(x_in, TrainOnly()(keras.layers.Dense(3)(x_in)))
    x = np.ones((4, 3), "float32")
    assert np.abs(np_(model(x, training=True))).max() == 0.0
    assert np.abs(np_(model(x, training=False))).max() > 0.0
    assert np.abs(model.predict(x, verbose=0)).max() > 0.0
    # fit trains through the train-phase branch: a zero output gives the constant loss 1
    model.compile("sgd", "mse")
    loss = model.fit(x, np.ones((4, 3)), epochs=1, verbose=0).history["loss"][0]
    assert loss == pytest.approx(1.0)


def test_k_concatenate_takes_python_lists():
    """CoSENT's loss: ``K.concatenate([[0], scores], axis=0)`` (the list takes the dtype)."""
    scores = ops.convert_to_tensor(np.array([1.5, -2.0], "float32"))
    out = K.concatenate([[0], scores], axis=0)
    assert K.dtype(out) == "float32"
    np.testing.assert_allclose(np_(out), [0.0, 1.5, -2.0])
    np.testing.assert_allclose(np_(K.logsumexp(out)), np.log(1 + np.exp(1.5) + np.exp(-2.0)),
                               rtol=1e-6)
    np.testing.assert_array_equal(np_(K.concatenate([np.ones((1, 2)), np.zeros((1, 2))])),
                                  [[1, 1, 0, 0]])


def test_k_random_without_seed_inside_compiled_steps():
    """bert4keras' BinaryRandomChoice calls ``K.random_binomial`` with no seed in a layer."""

    class Draws(keras.layers.Layer):
        def call(self, inputs):
            n = (4000,)
            return ops.stack([K.random_uniform(n, 2.0, 4.0), K.random_normal(n, 1.0, 2.0),
                              K.truncated_normal(n), K.random_binomial(n, p=0.3),
                              K.dropout(ops.ones(n), 0.25)])[None] + 0.0 * inputs[:, :1, None]

        def compute_output_shape(self, input_shape):
            return (input_shape[0], 5, 4000)

    x_in = keras.Input((3,))
    model = keras.Model(x_in, Draws()(x_in))
    x = np.ones((1, 3), "float32")
    first, second = model.predict(x, verbose=0)[0], model.predict(x, verbose=0)[0]
    assert np.abs(first - second).max() > 0.1  # fresh numbers on each compiled run
    u, normal, trunc, binom, drop = first.astype("float64")
    assert u.min() >= 2.0 and u.max() < 4.0 and abs(u.mean() - 3.0) < 0.05
    assert abs(normal.mean() - 1.0) < 0.15 and abs(normal.std() - 2.0) < 0.1
    # N(0, 1) truncated at 2 stddev has std 0.880
    assert np.abs(trunc).max() <= 2.0 and abs(trunc.std() - 0.880) < 0.04
    assert set(np.unique(binom)) <= {0.0, 1.0} and abs(binom.mean() - 0.3) < 0.03
    assert set(np.round(np.unique(drop), 5)) <= {0.0, round(1 / 0.75, 5)}
    assert abs((drop == 0).mean() - 0.25) < 0.03
    # and a model with such a layer trains with fit
    model.compile(loss="mse", optimizer="sgd")
    model.fit(x, np.zeros((1, 5, 4000), "float32"), epochs=1, verbose=0)
