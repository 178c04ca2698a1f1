"""Padding masks reach heads, pooling and losses for every family.

Padding a batch further (more id-0 columns) must change no head output at real
positions, no decoded span and no loss. The reference is the same batch padded
less, on the same weights: with a dropped mask the extra padding leaks into the
heads (scores of spans ending in padding, mean pooling, masked losses).
"""
import numpy as np
import pytest
import keras
from keras import ops

from keras.src.backend.common.masking import get_keras_mask  # no public accessor yet

from bert4keras3 import losses as L
from bert4keras3.layers import (
    ConditionalRandomField,
    EfficientGlobalPointer,
    GlobalPointer,
)
from bert4keras3.layers.heads import mask_value
from bert4keras3.models import build_transformer_model

FAMILIES = ["bert", "roberta", "roformer", "roformer_v2", "gau_alpha"]
VOCAB = 40


def config(family):
    cfg = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=32, max_position_embeddings=64, type_vocab_size=2)
    if family == "gau_alpha":
        cfg.update(num_attention_heads=1, attention_key_size=8)
    return cfg


def batch(extra):
    """Two rows of unequal length, right-padded to width ``7 + extra``."""
    rows = [[2, 5, 9, 11, 3], [2, 7, 8, 6, 13, 12, 3]]
    width = 7 + extra
    ids = np.zeros((2, width), "int32")
    seg = np.zeros((2, width), "int32")
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        seg[i, 3:len(r)] = 1
    return ids, seg, [len(r) for r in rows]


def head_model(family, head):
    encoder = build_transformer_model(config(family), model=family)
    x = encoder.output
    if head == "gp":
        y = GlobalPointer(3, 8, name="head")(x)
    elif head == "egp":
        y = EfficientGlobalPointer(3, 8, name="head")(x)
    elif head == "crf":
        crf = ConditionalRandomField(name="head")
        y = crf(keras.layers.Dense(5)(x))
    else:  # mean pooling over real tokens
        y = keras.layers.GlobalAveragePooling1D(name="head")(x)
    return keras.Model(encoder.inputs, y)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("head", ["gp", "egp", "crf", "pool"])
def test_extra_padding_changes_no_head_output(family, head):
    model = head_model(family, head)
    outs, lengths = [], None
    for extra in (0, 9):
        ids, seg, lengths = batch(extra)
        outs.append(np.asarray(model.predict([ids, seg], verbose=0)))
    short, long_ = outs
    if head == "pool":
        np.testing.assert_allclose(long_, short, atol=1e-5)
        return
    n = short.shape[-2] if head != "crf" else short.shape[1]
    for r, length in enumerate(lengths):
        if head == "crf":
            np.testing.assert_allclose(long_[r, :length], short[r, :length], atol=1e-5)
            assert np.all(long_[r, length:] <= mask_value("float32") / 2)
            continue
        np.testing.assert_allclose(long_[r, :, :length, :length],
                                   short[r, :, :length, :length], atol=1e-5)
        # spans touching padding are pushed to the mask value, in both batches
        assert np.all(long_[r, :, :, length:] <= mask_value("float32") / 2)
        assert np.all(long_[r, :, length:, :] <= mask_value("float32") / 2)
        assert np.all(short[r, :, :n, length:] <= mask_value("float32") / 2)
    if head in ("gp", "egp"):
        spans = [[L.global_pointer_decode(row, threshold=0.0) for row in o] for o in (short, long_)]
        assert spans[0] == spans[1]
        y_true = np.zeros_like(short)
        y_true[0, 1, 1, 2] = y_true[1, 0, 2, 4] = 1
        y_long = np.zeros_like(long_)
        y_long[:, :, :n, :n] = y_true
        losses = [float(ops.convert_to_numpy(ops.mean(L.global_pointer_crossentropy(t, o))))
                  for t, o in ((y_true, short), (y_long, long_))]
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    if head == "crf":
        crf = model.get_layer("head")
        tags = [np.asarray(ops.convert_to_numpy(crf.decode(ops.convert_to_tensor(o))))
                for o in (short, long_)]
        np.testing.assert_array_equal(tags[1][:, :short.shape[1]], tags[0])
        labels = np.zeros(short.shape[:2], "int32")
        labels[:, 1:3] = [1, 2]
        labels_long = np.zeros(long_.shape[:2], "int32")
        labels_long[:, :short.shape[1]] = labels
        losses = [float(ops.convert_to_numpy(ops.mean(crf.sparse_loss(t, ops.convert_to_tensor(o)))))
                  for t, o in ((labels, short), (labels_long, long_))]
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_lm_loss_ignores_padding(family):
    """Keras weights the loss with the output mask: extra padding leaves it unchanged."""
    model = build_transformer_model(config(family), model=family, with_mlm=True)
    model.compile(loss="sparse_categorical_crossentropy")
    values = []
    for extra in (0, 9):
        ids, seg, _ = batch(extra)
        values.append(model.evaluate([ids, seg], ids, verbose=0, batch_size=2))
    np.testing.assert_allclose(values[1], values[0], rtol=1e-5)
    ids, seg, lengths = batch(0)
    probs = np.asarray(model.predict([ids, seg], verbose=0))
    # the reference: mean negative log-likelihood over real tokens only
    nll = [-np.log(probs[r, t, ids[r, t]]) for r, n in enumerate(lengths) for t in range(n)]
    np.testing.assert_allclose(values[0], np.mean(nll), rtol=1e-4)


@pytest.mark.parametrize("version", ["t5", "mt5.1.1"])
def test_t5_outputs_carry_masks(version):
    cfg = dict(vocab_size=VOCAB, d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8)
    t5 = build_transformer_model(cfg, model=version, return_keras_model=False)
    enc_ids, _, lengths = batch(0)
    enc_long, _, _ = batch(6)
    dec = np.array([[0, 4, 5, 0, 0], [0, 6, 7, 8, 9]], "int32")
    dec_long = np.pad(dec, [[0, 0], [0, 4]])
    # encoder: mask = ids != 0
    hidden = t5.encoder(ops.convert_to_tensor(enc_ids))
    mask = np.asarray(ops.convert_to_numpy(get_keras_mask(hidden)))
    np.testing.assert_array_equal(mask, enc_ids != 0)
    # decoder: the first position (start id 0) is never masked, later id 0 is padding
    probs = t5.model([ops.convert_to_tensor(enc_ids), ops.convert_to_tensor(dec)])
    mask = np.asarray(ops.convert_to_numpy(get_keras_mask(probs)))
    expected = dec != 0
    expected[:, 0] = True
    np.testing.assert_array_equal(mask, expected)
    # the seq2seq loss Keras computes ignores decoder and encoder padding
    t5.model.compile(loss="sparse_categorical_crossentropy")
    targets = np.roll(dec, -1, axis=1)
    a = t5.model.evaluate([enc_ids, dec], targets, verbose=0, batch_size=2)
    b = t5.model.evaluate([enc_long, dec_long], np.pad(targets, [[0, 0], [0, 4]]), verbose=0,
                          batch_size=2)
    np.testing.assert_allclose(b, a, rtol=1e-5)
    p = np.asarray(t5.model.predict([enc_ids, dec], verbose=0))
    nll = [-np.log(p[r, t, targets[r, t]]) for r in range(2) for t in range(5) if expected[r, t]]
    np.testing.assert_allclose(a, np.mean(nll), rtol=1e-4)
