"""Losses, metrics, label encoders and decoders against NumPy transcriptions of the formulas."""

import itertools

import numpy as np
import pytest
import keras
from keras import ops

from bert4keras3 import losses as L

RNG = np.random.default_rng(0)
NEG = -1e12


def np_(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


def value_and_grad(fn, x):
    """Gradient of ``sum(fn(x))`` w.r.t. ``x`` on the active backend (test helper)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        f = lambda v: jax.numpy.sum(fn(v))  # noqa: E731
        return np.asarray(f(x)), np.asarray(jax.grad(f)(jax.numpy.asarray(x)))
    if backend == "tensorflow":
        import tensorflow as tf

        v = tf.Variable(x)
        with tf.GradientTape() as tape:
            y = tf.reduce_sum(fn(v))
        return y.numpy(), tape.gradient(y, v).numpy()
    if backend == "torch":
        import torch

        v = torch.tensor(x, requires_grad=True)
        y = fn(v).sum()
        y.backward()
        return y.detach().numpy(), v.grad.numpy()
    pytest.skip(f"no gradient helper for backend {backend}")


# ---------------------------------------------------------------- NumPy references
def log1p_sum_exp(x):
    """Stable log(1 + sum(exp(x)))."""
    x = np.asarray(x, "float64")
    m = max(np.max(x, initial=0.0), 0.0)
    return m + np.log(np.exp(-m) + np.sum(np.exp(x - m)))


def ref_zlpr(t, s):
    """log(1 + sum t e^{-s}) + log(1 + sum (1-t) e^{s}) per row, dropping s <= -1e11."""
    t, s = np.asarray(t, "float64"), np.asarray(s, "float64")
    out = np.zeros(s.shape[:-1])
    for idx in np.ndindex(*s.shape[:-1]):
        keep = s[idx] > -1e11
        si, ti = s[idx][keep], t[idx][keep]
        pos, neg = ti > 0, ti < 1
        out[idx] = log1p_sum_exp(np.log(ti[pos]) - si[pos]) + log1p_sum_exp(
            np.log(1 - ti[neg]) + si[neg]
        )
    return out


def ref_sparse_zlpr(idx, s, mask_zero):
    out = np.zeros(s.shape[:-1])
    for pos in np.ndindex(*s.shape[:-1]):
        positives = set(int(i) for i in idx[pos])
        if mask_zero:
            positives.discard(0)
        classes = [c for c in range(s.shape[-1]) if not (mask_zero and c == 0)]
        negs = [c for c in classes if c not in positives]
        out[pos] = log1p_sum_exp([-s[pos][c] for c in positives]) + log1p_sum_exp(
            [s[pos][c] for c in negs]
        )
    return out


# ---------------------------------------------------------------- ZLPR
def test_zlpr_hard_labels_match_numpy():
    s = RNG.normal(size=(4, 3, 10)).astype("float32") * 3
    t = (RNG.random((4, 3, 10)) < 0.3).astype("float32")
    got = np_(L.multilabel_categorical_crossentropy(t, s))
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, ref_zlpr(t, s), rtol=1e-5, atol=1e-5)
    # hand-checked case: one positive (score 1), one negative (score -1)
    one = np_(L.multilabel_categorical_crossentropy(np.array([[1.0, 0.0]]), np.array([[1.0, -1.0]])))
    np.testing.assert_allclose(one, [2 * np.log1p(np.exp(-1.0))], rtol=1e-6)


def test_zlpr_soft_labels_match_numpy():
    s = RNG.normal(size=(5, 12)).astype("float32") * 2
    t = RNG.random((5, 12)).astype("float32")
    t[:, :3] = 0.0
    t[:, 3:5] = 1.0
    got = np_(L.soft_multilabel_categorical_crossentropy(t, s))
    np.testing.assert_allclose(got, ref_zlpr(t, s), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_(L.multilabel_categorical_crossentropy(t, s)), got, rtol=0, atol=0)


def test_zlpr_ignores_masked_entries():
    s = RNG.normal(size=(3, 8)).astype("float32")
    t = (RNG.random((3, 8)) < 0.4).astype("float32")
    s[:, 5:] = NEG
    t_soft = t.copy()
    t_soft[:, 5:] = 0.1  # e.g. label smoothing also on masked spans: must not count
    expected = ref_zlpr(t[:, :5], s[:, :5])
    np.testing.assert_allclose(np_(L.multilabel_categorical_crossentropy(t, s)), expected, rtol=1e-5)
    np.testing.assert_allclose(np_(L.multilabel_categorical_crossentropy(t_soft, s)), expected, rtol=1e-5)


def test_zlpr_large_logits_finite_gradients():
    s = np.array([[1e4, -1e4, 3.0, -2.0], [-1e4, 1e4, 1e4, -1e4]], "float32")
    t = np.array([[1, 0, 1, 0], [1, 0, 1, 1]], "float32")
    value, grad = value_and_grad(lambda v: L.multilabel_categorical_crossentropy(t, v), s)
    assert np.all(np.isfinite(grad)) and np.isfinite(value)
    # analytic gradient: d/ds of log(1+sum_pos e^{-s}) + log(1+sum_neg e^{s})
    # analytic gradient: d/ds of log(1+sum_pos e^{-s}) + log(1+sum_neg e^{s}) is a
    # softmax over the (included) exponents with an extra zero logit
    def softmax_with_zero(x, keep):
        x = np.where(keep, x.astype("float64"), -np.inf)
        m = max(x.max(), 0.0)
        e = np.exp(x - m)
        return e / (np.exp(-m) + e.sum())

    ref = np.stack(
        [-softmax_with_zero(-s[r], t[r] == 1) + softmax_with_zero(s[r], t[r] == 0) for r in range(2)]
    )
    np.testing.assert_allclose(grad, ref, atol=1e-6)
    np.testing.assert_allclose(value, ref_zlpr(t, s).sum(), rtol=1e-6)


def test_zlpr_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"same shape, found \(2, 3\) and \(2, 4\)"):
        L.multilabel_categorical_crossentropy(np.zeros((2, 3)), np.zeros((2, 4)))


# ---------------------------------------------------------------- sparse ZLPR
@pytest.mark.parametrize("mask_zero", [False, True])
def test_sparse_zlpr_matches_numpy(mask_zero):
    s = RNG.normal(size=(3, 2, 15)).astype("float32") * 2
    idx = RNG.integers(0, 15, size=(3, 2, 4)).astype("int32")
    idx[0, 0] = [0, 0, 3, 3]  # padding zeros and a repeated index
    got = np_(L.sparse_multilabel_categorical_crossentropy(idx, s, mask_zero=mask_zero))
    np.testing.assert_allclose(got, ref_sparse_zlpr(idx, s, mask_zero), rtol=1e-5, atol=1e-5)


def test_sparse_equals_dense_zlpr():
    s = RNG.normal(size=(6, 9)).astype("float32")
    idx = np.array([[1, 4, 7]] * 6, "int32")
    dense = np.zeros((6, 9), "float32")
    dense[:, [1, 4, 7]] = 1
    np.testing.assert_allclose(
        np_(L.sparse_multilabel_categorical_crossentropy(idx, s)),
        np_(L.multilabel_categorical_crossentropy(dense, s)),
        rtol=1e-5,
    )


def test_sparse_zlpr_large_logits_finite_gradients():
    s = np.array([[1e4, -1e4, 5.0, 1e4, -3.0]], "float32")
    idx = np.array([[0, 2, 3]], "int32")  # positives 2, 3 (0 masked)
    value, grad = value_and_grad(
        lambda v: L.sparse_multilabel_categorical_crossentropy(idx, v, mask_zero=True), s
    )
    assert np.all(np.isfinite(grad)) and np.isfinite(value)
    # class 3 is a confident positive: its gradient must not push it down
    assert grad[0, 3] <= 0 and grad[0, 0] == 0
    np.testing.assert_allclose(value, ref_sparse_zlpr(idx, s.astype("float64"), True).sum(), rtol=1e-6)


# ---------------------------------------------------------------- GlobalPointer losses
def test_global_pointer_crossentropy_matches_numpy():
    b, h, n = 2, 3, 5
    s = RNG.normal(size=(b, h, n, n)).astype("float32")
    s[:, :, np.tril_indices(n, -1)[0], np.tril_indices(n, -1)[1]] = NEG
    s[1, :, 4, :] = NEG
    s[1, :, :, 4] = NEG
    y = np.zeros((b, h, n, n), "float32")
    y[0, 0, 1, 2] = y[0, 2, 0, 4] = y[1, 1, 2, 3] = y[1, 1, 0, 0] = 1
    got = np_(L.global_pointer_crossentropy(y, s))
    ref = ref_zlpr(y.reshape(b, h, -1), s.reshape(b, h, -1)).mean(axis=1)
    assert got.shape == (b,)
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_sparse_global_pointer_crossentropy_matches_numpy():
    b, h, n = 2, 2, 6
    s = RNG.normal(size=(b, h, n, n)).astype("float32")
    labels = np.zeros((b, h, 3, 2), "int32")
    labels[0, 0, :2] = [(1, 2), (3, 3)]
    labels[0, 1, :1] = [(2, 5)]
    labels[1, 1, :3] = [(1, 1), (4, 5), (2, 4)]
    got = np_(L.sparse_global_pointer_crossentropy(labels, s))
    ref = np.zeros(b)
    for i in range(b):
        for k in range(h):
            spans = {tuple(p) for p in labels[i, k]} - {(0, 0)}
            flat = [a * n + c for a, c in spans]
            ref[i] += ref_sparse_zlpr(np.array([flat or [0]]), s[i, k].reshape(1, -1), True)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # same loss as the dense form up to the ignored (0, 0) span
    dense = np.zeros_like(s)
    for i, k, j in itertools.product(range(b), range(h), range(3)):
        if tuple(labels[i, k, j]) != (0, 0):
            dense[i, k, labels[i, k, j, 0], labels[i, k, j, 1]] = 1
    s2 = s.copy()
    s2[:, :, 0, 0] = NEG
    np.testing.assert_allclose(got, np_(L.global_pointer_crossentropy(dense, s2)) * h, rtol=1e-5)


def test_sparse_global_pointer_crossentropy_bad_labels():
    with pytest.raises(ValueError, match=r"y_true \[batch, heads, k, 2\]"):
        L.sparse_global_pointer_crossentropy(np.zeros((2, 3, 4)), np.zeros((2, 3, 5, 5)))


def test_global_pointer_f1_score():
    y = np.zeros((1, 2, 4, 4), "float32")
    y[0, 0, 0, 1] = y[0, 1, 2, 3] = y[0, 1, 1, 1] = 1
    s = np.full(y.shape, -1.0, "float32")
    s[0, 0, 0, 1] = s[0, 1, 2, 3] = 2.0  # 2 hits
    s[0, 0, 3, 3] = 0.5  # 1 false positive
    np.testing.assert_allclose(np_(L.global_pointer_f1_score(y, s)), 2 * 2 / (3 + 3), rtol=1e-6)
    np.testing.assert_allclose(np_(L.global_pointer_f1_score(np.zeros_like(y), -np.ones_like(s))), 1.0)


# ---------------------------------------------------------------- CoSENT / SimCSE
def ref_cosent(labels, emb, scale=20.0):
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = (e[0::2] * e[1::2]).sum(1) * scale
    lab = labels[0::2]
    terms = [cos[i] - cos[j] for i in range(len(cos)) for j in range(len(cos)) if lab[i] < lab[j]]
    return np.log1p(np.sum(np.exp(terms)))


def test_cosent_matches_numpy():
    emb = RNG.normal(size=(8, 6)).astype("float32")
    labels = np.repeat(np.array([0, 1, 1, 0]), 2).astype("float32")
    got = np_(L.cosent_loss(labels, emb))
    np.testing.assert_allclose(got, ref_cosent(labels, emb.astype("float64")), rtol=1e-5)
    # similarity form: same value from the pair cosines
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = (e[0::2] * e[1::2]).sum(1)
    np.testing.assert_allclose(np_(L.cosent_loss(labels[0::2], cos)), got, rtol=1e-5)


def test_cosent_odd_batch_raises():
    with pytest.raises(ValueError, match="even batch of interleaved pairs.*found batch 3"):
        L.cosent_loss(np.zeros(3), np.ones((3, 4)))


def test_simcse_matches_numpy():
    emb = RNG.normal(size=(6, 5)).astype("float32")
    got = np_(L.simcse_loss(None, emb))
    e = emb.astype("float64") / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = e @ e.T * 20
    ref = []
    for i in range(6):
        others = [j for j in range(6) if j != i]
        twin = i + 1 if i % 2 == 0 else i - 1
        ref.append(-sim[i, twin] + np.log(np.sum(np.exp(sim[i, others]))))
    np.testing.assert_allclose(got, ref, rtol=1e-5)


# ---------------------------------------------------------------- evaluation / encoding / decoding
def test_precision_recall_f1():
    true = [{(0, 1, "A"), (2, 3, "B")}, {(1, 1, "A")}]
    pred = [{(0, 1, "A"), (2, 4, "B")}, set()]
    p, r, f = L.precision_recall_f1(true, pred)
    assert (p, r) == (0.5, 1 / 3) and f == pytest.approx(2 * 1 / (2 + 3))
    assert L.precision_recall_f1([set()], [set()]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="found 1 predictions for 2 samples"):
        L.precision_recall_f1(true, pred[:1])


def test_span_label_encoders_roundtrip_through_decoder():
    spans = [(1, 3, 0), (2, 2, 1), (1, 1, 0)]
    dense = L.spans_to_dense(spans, 2, 5)
    assert dense.shape == (2, 5, 5) and dense.sum() == 3 and dense[0, 1, 3] == 1
    sparse = L.spans_to_sparse(spans, 2)
    assert sparse.shape == (2, 2, 2)
    assert {tuple(p) for p in sparse[0]} == {(1, 3), (1, 1)}
    assert [tuple(p) for p in sparse[1]] == [(2, 2), (0, 0)]
    batch = L.pad_sparse_labels([sparse, L.spans_to_sparse([(1, 2, 1)], 2)])
    assert batch.shape == (2, 2, 2, 2) and tuple(batch[1, 1, 0]) == (1, 2)
    scores = np.where(dense > 0, 3.0, -3.0)
    assert L.global_pointer_decode(scores) == sorted(spans)
    with pytest.raises(ValueError, match=r"expected 0 <= start <= end < 5"):
        L.spans_to_dense([(3, 1, 0)], 2, 5)
    with pytest.raises(ValueError, match="same heads"):
        L.pad_sparse_labels([np.zeros((2, 1, 2)), np.zeros((3, 1, 2))])


def test_global_pointer_decode_with_char_mapping():
    text = "ab cde f"
    mapping = [[], [0, 1], [3, 4, 5], [7], []]  # [CLS] ab cde f [SEP]
    scores = np.full((2, 5, 5), -5.0)
    scores[0, 1, 2] = 1.0  # "ab cde"
    scores[1, 3, 3] = 0.2  # "f"
    scores[0, 0, 1] = 9.0  # touches [CLS]: dropped
    scores[1, 3, 4] = 9.0  # touches [SEP]: dropped
    out = L.global_pointer_decode(scores, mapping=mapping)
    assert out == [(0, 6, 0), (7, 8, 1)]
    assert [text[a:b] for a, b, _ in out] == ["ab cde", "f"]
    assert L.global_pointer_decode(scores, threshold=0.5, mapping=mapping) == [(0, 6, 0)]


def test_gplinker_encode_and_decode():
    # tokens: [CLS] A B C D E ; subject (1,2) has two relations, object (2,2) is nested in it
    spoes = [(1, 2, 0, 4, 5), (1, 2, 1, 3, 3), (1, 2, 2, 2, 2)]
    entity, head, tail = L.gplinker_encode(spoes, 3)
    assert {tuple(p) for p in entity[0]} - {(0, 0)} == {(1, 2)}
    assert {tuple(p) for p in entity[1]} == {(4, 5), (3, 3), (2, 2)}
    assert [tuple(p) for p in head[1]] == [(1, 3)] and [tuple(p) for p in tail[2]] == [(2, 2)]
    n = 6
    scores = [np.full((k, n, n), -4.0) for k in (2, 3, 3)]
    for part, labels in zip(scores, (entity, head, tail)):
        for k, pairs in enumerate(labels):
            for a, b in pairs:
                if (a, b) != (0, 0):
                    part[k, a, b] = 4.0
    mapping = [[], [0], [1, 2], [4], [6], [7, 8]]
    out = L.gplinker_decode(*scores, mapping=mapping, id2predicate=["p0", "p1", "p2"])
    assert out == sorted(
        [((0, 3), "p0", (6, 9)), ((0, 3), "p1", (4, 5)), ((0, 3), "p2", (1, 3))], key=repr
    )
    # a head pair without the matching tail pair yields nothing
    scores[2][0, 2, 5] = -4.0
    out = L.gplinker_decode(*scores)
    assert {p for _, p, _ in out} == {1, 2}
    with pytest.raises(ValueError, match=r"entity scores \[2, n, n\]"):
        L.gplinker_decode(scores[1], scores[1], scores[2])
