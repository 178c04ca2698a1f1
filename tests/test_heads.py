"""GlobalPointer family, GPLinker and CRF: NumPy / brute-force references, masking,
serialization and small learning tasks on synthetic data."""

import itertools
import os

import numpy as np
import pytest
import keras
from keras import ops

from bert4keras3 import losses as L
from bert4keras3.layers.heads import (
    ConditionalRandomField,
    EfficientGlobalPointer,
    GlobalPointer,
    GPLinker,
)

RNG = np.random.default_rng(1)


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


# ---------------------------------------------------------------- NumPy references
def ref_rope(x):
    """RoPE as complex rotation: (x_{2i} + i x_{2i+1}) * exp(i * pos * 10000^(-2i/d)).

    ``x``: [n, ..., d] with positions along axis 0."""
    n, d = x.shape[0], x.shape[-1]
    z = x[..., 0::2] + 1j * x[..., 1::2]
    theta = 10000.0 ** (-np.arange(d // 2) * 2.0 / d)
    angle = np.arange(n)[:, None] * theta[None]
    angle = angle.reshape((n,) + (1,) * (x.ndim - 2) + (d // 2,))
    z = z * np.exp(1j * angle)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def ref_global_pointer(x, kernel, bias, heads, d, rope):
    """[n, hidden] -> [heads, n, n] unmasked logits (bert4keras GlobalPointer equations)."""
    h = x @ kernel + bias
    h = h.reshape(x.shape[0], heads, 2 * d)
    q, k = h[..., :d], h[..., d:]
    if rope:
        q, k = ref_rope(q), ref_rope(k)
    return np.einsum("mhd,nhd->hmn", q, k) / np.sqrt(d)


def ref_efficient_global_pointer(x, k1, b1, k2, b2, heads, d, rope):
    """s_a(i,j) = q_i.k_j/sqrt(d) + (w_{a,start}.p_i + w_{a,end}.p_j)/2 (Efficient GlobalPointer)."""
    p = x @ k1 + b1
    q, k = p[:, 0::2], p[:, 1::2]
    if rope:
        q, k = ref_rope(q), ref_rope(k)
    qk = q @ k.T / np.sqrt(d)
    bias = (p @ k2 + b2) / 2  # [n, 2*heads]
    out = np.empty((heads, x.shape[0], x.shape[0]))
    for a in range(heads):
        out[a] = qk + bias[:, 2 * a + 1][:, None] + bias[:, 2 * a][None, :]
    return out


def expected_mask(n, length, tril):
    valid = np.zeros((n, n), bool)
    valid[:length, :length] = True
    if tril:
        valid &= np.triu(np.ones((n, n), bool))
    return valid


# ---------------------------------------------------------------- GlobalPointer numerics
@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
@pytest.mark.parametrize("rope,tril", [(True, True), (False, False), (True, False)])
def test_pointer_matches_numpy_and_masks(cls, rope, tril):
    b, n, hidden, heads, d = 2, 6, 10, 3, 8
    x = RNG.normal(size=(b, n, hidden)).astype("float32")
    lengths = [6, 4]
    mask = np.arange(n)[None] < np.array(lengths)[:, None]
    layer = cls(heads, d, RoPE=rope, tril_mask=tril)
    layer.build((None, None, hidden))
    weights = [w.astype("float64") for w in layer.get_weights()]
    for w, v in zip(layer.weights, weights):  # random biases too
        v[...] = RNG.normal(size=v.shape) * 0.3
        w.assign(v.astype("float32"))
    out = np_(layer(x, mask=mask))
    assert out.shape == (b, heads, n, n) and out.dtype == np.float32
    for i in range(b):
        if cls is GlobalPointer:
            ref = ref_global_pointer(x[i].astype("float64"), *weights, heads, d, rope)
        else:
            ref = ref_efficient_global_pointer(x[i].astype("float64"), *weights, heads, d, rope)
        valid = expected_mask(n, lengths[i], tril)
        for a in range(heads):
            np.testing.assert_allclose(out[i, a][valid], ref[a][valid], atol=1e-4, rtol=1e-4)
            assert np.all(out[i, a][~valid] == np.float32(-1e12))


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_keras_mask_equals_explicit_mask(cls):
    ids = np.array([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5]])
    inp = keras.Input((None,), dtype="int32")
    emb_layer = keras.layers.Embedding(8, 6, mask_zero=True)
    head = cls(2, 4)
    model = keras.Model(inp, head(emb_layer(inp)))
    out = np_(model(ids))
    explicit = np_(head(emb_layer(ids), mask=ids > 0))
    np.testing.assert_array_equal(out, explicit)
    assert np.all(out[0, :, 3:, :] == np.float32(-1e12)) and np.all(out[0, :, :, 3:] == np.float32(-1e12))
    assert np.all(out[1][:, np.tril_indices(5, -1)[0], np.tril_indices(5, -1)[1]] == np.float32(-1e12))
    assert np.all(out[1][:, np.triu_indices(5)[0], np.triu_indices(5)[1]] > -1e3)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_pointer_mask_value_is_finite_in_low_precision(dtype):
    layer = GlobalPointer(2, 4, dtype=dtype)
    x = RNG.normal(size=(1, 5, 6)).astype("float32")
    out = np_(ops.cast(layer(x, mask=np.array([[1, 1, 1, 0, 0]])), "float32"))
    assert np.all(np.isfinite(out))
    masked = out[0][:, 3:, :]
    assert np.all(masked <= -3e4)  # below MASK_THRESHOLD, so the losses ignore it
    y = np.zeros((1, 2, 5, 5), "float32")
    y[0, 0, 0, 1] = 1
    assert np.isfinite(np_(L.global_pointer_crossentropy(y, out))).all()


def test_pointer_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"expects inputs of shape \[batch, seq, hidden\], found shape \(2, 5\)"):
        GlobalPointer(2, 4)(np.zeros((2, 5), "float32"))
    with pytest.raises(ValueError, match="head_size` must be even; found 5"):
        EfficientGlobalPointer(2, 5)
    with pytest.raises(ValueError, match=r"`heads` must be a positive int, found 0"):
        GlobalPointer(0, 4)
    with pytest.raises(ValueError, match=r"mask of shape \[batch, seq\] = \(2, 5\), found \(2, 4\)"):
        GlobalPointer(2, 4)(np.zeros((2, 5, 3), "float32"), mask=np.ones((2, 4), bool))


def test_parameter_counts():
    hidden, heads, d = 32, 5, 16
    gp, egp = GlobalPointer(heads, d), EfficientGlobalPointer(heads, d)
    gp.build((None, None, hidden))
    egp.build((None, None, hidden))
    assert gp.count_params() == hidden * heads * 2 * d + heads * 2 * d
    assert egp.count_params() == hidden * 2 * d + 2 * d + 2 * d * 2 * heads + 2 * heads


# ---------------------------------------------------------------- serialization
def _heads_model():
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(20, 8, mask_zero=True)(inp)
    outs = [
        GlobalPointer(2, 4, name="gp")(h),
        EfficientGlobalPointer(3, 4, RoPE=False, tril_mask=False, name="egp")(h),
        *GPLinker(2, head_size=4, name="gplinker")(h),
        ConditionalRandomField(lr_multiplier=3, name="crf")(keras.layers.Dense(4)(h)),
    ]
    return keras.Model(inp, outs)


def test_save_load_roundtrips_bit_exact(tmp_path):
    keras.utils.set_random_seed(3)
    model = _heads_model()
    ids = np.array([[1, 5, 7, 0], [2, 3, 4, 9]])
    before = [np_(o) for o in model(ids)]
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(before, loaded(ids)):
        np.testing.assert_array_equal(a, np_(b))
    crf = loaded.get_layer("crf")
    assert crf.lr_multiplier == 3 and loaded.get_layer("egp").RoPE is False
    np.testing.assert_array_equal(np_(crf.trans), np_(model.get_layer("crf").trans))
    wpath = os.path.join(tmp_path, "m.weights.h5")
    model.save_weights(wpath)
    keras.utils.set_random_seed(4)
    fresh = _heads_model()
    assert not np.array_equal(np_(fresh(ids)[0]), before[0])
    fresh.load_weights(wpath)
    for a, b in zip(before, fresh(ids)):
        np.testing.assert_array_equal(a, np_(b))


# ---------------------------------------------------------------- CRF vs brute force
def brute_force_crf(emissions, trans, length):
    paths = list(itertools.product(range(emissions.shape[-1]), repeat=length))
    scores = np.array(
        [
            sum(emissions[t, p[t]] for t in range(length))
            + sum(trans[p[t - 1], p[t]] for t in range(1, length))
            for p in paths
        ]
    )
    m = scores.max()
    return m + np.log(np.exp(scores - m).sum()), paths[int(np.argmax(scores))], dict(zip(paths, scores))


@pytest.mark.parametrize("lr_multiplier", [1, 4])
def test_crf_matches_brute_force(lr_multiplier):
    b, n, k = 3, 4, 3
    lengths = [4, 2, 1]
    emissions = RNG.normal(size=(b, n, k)).astype("float32") * 2
    mask = np.arange(n)[None] < np.array(lengths)[:, None]
    crf = ConditionalRandomField(lr_multiplier=lr_multiplier)
    out = np_(crf(emissions, mask=mask))
    assert np.all(out[~mask] <= -1e11) and np.array_equal(out[mask], emissions[mask])
    trans = RNG.normal(size=(k, k)).astype("float32")
    crf._trans.assign(trans / lr_multiplier)
    np.testing.assert_allclose(np_(crf.trans), trans, rtol=1e-6)
    labels = RNG.integers(0, k, size=(b, n))
    labels[~mask] = 0
    log_z = np_(crf.log_partition(out))
    loss = np_(crf.sparse_loss(labels, out))
    dense = np_(crf.dense_loss(np.eye(k)[labels], out))
    tags = np_(crf.decode(out))
    for i in range(b):
        ref_z, ref_path, scores = brute_force_crf(emissions[i].astype("float64"), trans.astype("float64"), lengths[i])
        np.testing.assert_allclose(log_z[i], ref_z, rtol=1e-5)
        nll = ref_z - scores[tuple(labels[i, : lengths[i]])]
        np.testing.assert_allclose(loss[i], nll, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dense[i], nll, rtol=1e-5, atol=1e-5)
        assert tuple(tags[i, : lengths[i]]) == ref_path
        assert np.all(tags[i, lengths[i]:] == 0)


def test_crf_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"emissions of shape \[batch, seq, num_labels\]"):
        ConditionalRandomField()(np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="`lr_multiplier` must be a positive number, found 0"):
        ConditionalRandomField(lr_multiplier=0)
    crf = ConditionalRandomField()
    crf.build((None, None, 3))
    with pytest.raises(ValueError, match=r"sparse labels must have shape \[batch, seq\]"):
        crf.sparse_loss(np.zeros((2, 3, 2)), np.zeros((2, 3, 3), "float32"))


def test_crf_trains_on_dynamic_lengths_from_a_data_generator():
    """bert4keras' NER script: a DataGenerator's batches (TF: tf.data with unknown lengths)."""
    from bert4keras3.snippets import DataGenerator, sequence_padding

    rng = np.random.default_rng(1)
    samples = [rng.integers(1, 9, size=n) for n in (3, 7, 5, 9, 4, 6)]

    class Gen(DataGenerator):
        def __iter__(self, random=False):
            xs, ys = [], []
            for is_end, ids in self.sample(random):
                xs.append(ids)
                ys.append((ids < 5).astype("float32"))
                if len(xs) == self.batch_size or is_end:
                    yield sequence_padding(xs), sequence_padding(ys)
                    xs, ys = [], []

    inp = keras.Input((None,))
    h = keras.layers.Embedding(9, 8, mask_zero=True)(inp)
    crf = ConditionalRandomField(lr_multiplier=10)
    model = keras.Model(inp, crf(keras.layers.Dense(2)(h)))
    model.compile(keras.optimizers.Adam(1e-2), loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
    gen = Gen(samples, batch_size=2)
    hist = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=2, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    tags = np_(crf.decode(model.predict(sequence_padding(samples[:2]), verbose=0)))
    assert tags.shape == (2, 7) and (tags[0, 3:] == 0).all()


def test_crf_learns_with_fit():
    """Tag = (token parity) but forced to alternate after a marker: needs transitions."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, k = 12, 3
    ids = rng.integers(1, 9, size=(600, n))
    lengths = rng.integers(5, n + 1, size=600)
    ids[np.arange(n)[None] >= lengths[:, None]] = 0
    # label 1 for tokens < 5, 2 for the token right after a token 8, 0 otherwise
    labels = np.where(ids < 5, 1, 0)
    labels[:, 1:][ids[:, :-1] == 8] = 2
    labels[ids == 0] = 0
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(9, 16)(inp)
    h = keras.layers.Conv1D(32, 3, padding="same", activation="relu")(h)
    crf = ConditionalRandomField(lr_multiplier=10)
    model = keras.Model(inp, crf(keras.layers.Dense(k)(h), mask=ops.not_equal(inp, 0)))
    model.compile(keras.optimizers.Adam(1e-2), loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
    hist = model.fit(ids[:500], labels[:500], batch_size=50, epochs=6, verbose=0)
    assert hist.history["loss"][-1] < 0.2 * hist.history["loss"][0]
    tags = np_(crf.decode(model.predict(ids[500:], verbose=0)))
    m = ids[500:] > 0
    assert (tags[m] == labels[500:][m]).mean() > 0.97


# ---------------------------------------------------------------- learning: nested NER
NAMES, TITLE, ORG = list(range(10, 20)), 20, 21


def make_ner_data(rng, count, max_len=26):
    """Nested / overlapping spans: PER = run of name tokens; ORG = PER + org suffix;
    TITLE = title token + PER. Token 1 is [CLS], 2..9 are fillers."""
    ids = np.zeros((count, max_len), "int32")
    spans = []
    for s in range(count):
        toks, ents = [1], set()
        for _ in range(rng.integers(1, 4)):
            toks += list(rng.integers(2, 10, size=rng.integers(1, 3)))
            if rng.random() < 0.85:
                title, org = rng.random() < 0.4, rng.random() < 0.4
                if title:
                    toks.append(TITLE)
                start = len(toks)
                toks += list(rng.choice(NAMES, size=rng.integers(1, 4)))
                end = len(toks) - 1
                ents.add((start, end, 0))
                if title:
                    ents.add((start - 1, end, 2))
                if org:
                    toks.append(ORG)
                    ents.add((start, end + 1, 1))
        ids[s, : len(toks)] = toks[:max_len]
        spans.append({e for e in ents if e[1] < max_len})
    return ids, spans


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_nested_ner_learns(cls):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ids, spans = make_ner_data(rng, 900)
    n = ids.shape[1]
    y = np.stack([L.spans_to_dense(s, 3, n) for s in spans])
    # a small convolutional encoder (the rules are local); padding reaches the head
    # through the explicit `mask` argument (the GPLinker test covers the Keras mask)
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(22, 32)(inp)
    h = keras.layers.Conv1D(64, 3, padding="same", activation="relu")(h)
    h = keras.layers.Conv1D(64, 3, padding="same", activation="relu")(h)
    model = keras.Model(inp, cls(3, 16)(h, mask=ops.not_equal(inp, 0)))
    model.compile(keras.optimizers.Adam(1e-2), loss=L.global_pointer_crossentropy,
                  metrics=[L.global_pointer_f1_score])
    model.fit(ids[:700], y[:700], batch_size=32, epochs=5, verbose=0)
    scores = np_(model.predict(ids[700:], verbose=0))
    pred = [set(L.global_pointer_decode(s)) for s in scores]
    _, _, f1 = L.precision_recall_f1(spans[700:], pred)
    assert f1 >= 0.95, f1


# ---------------------------------------------------------------- learning: GPLinker
PERSON, PLACE, RELS, COMPANY = list(range(10, 16)), list(range(20, 26)), [30, 31, 32], 33
WORDS = {t: ("w%d" % t) * (1 + t % 3) for t in range(2, 40)}


def make_relation_data(rng, count, max_len=24):
    """Clauses "PERSON [COMPANY] (REL PLACE)+": the subject (person, or person+company)
    gets one triple per (REL, PLACE); a company also yields (company, owner=3, person):
    one subject with several relations and an object nested in its subject."""
    ids = np.zeros((count, max_len), "int32")
    quints, texts, mappings = [], [], []
    for s in range(count):
        toks, spoes = [1], set()
        for _ in range(rng.integers(1, 3)):
            toks += list(rng.integers(2, 8, size=rng.integers(1, 3)))
            ps = len(toks)
            toks += list(rng.choice(PERSON, size=rng.integers(1, 3)))
            pe = len(toks) - 1
            sh, st = ps, pe
            if rng.random() < 0.4:
                toks.append(COMPANY)
                st = len(toks) - 1
                spoes.add((sh, st, 3, ps, pe))
            for _ in range(rng.integers(1, 3)):
                r = int(rng.integers(0, 3))
                toks.append(RELS[r])
                oh = len(toks)
                toks += list(rng.choice(PLACE, size=rng.integers(1, 3)))
                spoes.add((sh, st, r, oh, len(toks) - 1))
        toks = toks[:max_len]
        spoes = {q for q in spoes if max(q[1], q[4]) < max_len}
        ids[s, : len(toks)] = toks
        words = [WORDS[t] for t in toks[1:]]
        text, mapping, pos = " ".join(words), [[]], 0
        for w in words:
            mapping.append(list(range(pos, pos + len(w))))
            pos += len(w) + 1
        quints.append(spoes)
        texts.append(text)
        mappings.append(mapping)
    return ids, quints, texts, mappings


def test_gplinker_learns_overlapping_triples():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ids, quints, texts, mappings = make_relation_data(rng, 1000)
    labels = [L.gplinker_encode(q, 4) for q in quints]
    ys = [L.pad_sparse_labels([lab[i] for lab in labels]) for i in range(3)]
    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(40, 32, mask_zero=True)(inp)
    h = keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True))(h)
    model = keras.Model(inp, GPLinker(4, head_size=16)(h))
    model.compile(keras.optimizers.Adam(1e-2), loss=[L.sparse_global_pointer_crossentropy] * 3)
    model.fit(ids[:800], [y[:800] for y in ys], batch_size=32, epochs=10, verbose=0)
    outs = [np_(o) for o in model.predict(ids[800:], verbose=0)]
    gold, pred = [], []
    for i in range(200):
        m, text = mappings[800 + i], texts[800 + i]
        gold.append({((m[a][0], m[b][-1] + 1), p, (m[c][0], m[d][-1] + 1)) for a, b, p, c, d in quints[800 + i]})
        triples = L.gplinker_decode(outs[0][i], outs[1][i], outs[2][i], mapping=m)
        pred.append(set(triples))
        for (s0, s1), _, (o0, o1) in triples:
            assert text[s0:s1].strip() == text[s0:s1] and text[o0:o1].strip() == text[o0:o1]
    assert any(len({t[0] for t in g}) < len(g) for g in gold)  # shared subjects exist
    _, _, f1 = L.precision_recall_f1(gold, pred)
    assert f1 >= 0.9, f1
