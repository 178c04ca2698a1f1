"""Every public layer and every model family through the shared harness (tests/harness.py).

The layer table must name every layer class ``bert4keras3.layers`` exports (a new layer
without a row fails ``test_every_public_layer_has_a_row``).
"""
import inspect

import numpy as np
import pytest

import keras
from keras import ops

import bert4keras3.layers as L
from harness import run_family_test, run_layer_test
from test_precision import FAMILIES, build, is_t5, model_inputs

RNG = np.random.RandomState(0)
X = RNG.randn(2, 5, 8).astype("float32")
IDS = np.array([[3, 4, 5, 6, 7], [2, 9, 4, 0, 0]], "int32")
MASK = (IDS != 0)[:, None, None, :]
#: taggers train through their own loss on tag ids
TAGGER = {"loss": lambda layer: layer.sparse_loss, "targets": RNG.randint(0, 8, (2, 5))}


class _SquaredLoss(L.Loss):
    """The ``Loss`` extension point: mean square of the input, output unchanged."""

    def compute_loss(self, inputs, mask=None):
        return ops.mean(ops.square(inputs))


class _Scaled(L.Layer):
    """The mask-passing base ``Layer`` with one weight."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.w


keras.saving.register_keras_serializable("bert4keras3_tests")(_SquaredLoss)
keras.saving.register_keras_serializable("bert4keras3_tests")(_Scaled)

#: class name -> (make, inputs, call kwargs, options for run_layer_test)
CASES = {
    "Layer": (lambda: _Scaled(), X, {}, {}),
    "Loss": (lambda: _SquaredLoss(), X, {}, {"train": False}),
    "Add": (lambda: L.Add(), [X, X * 2], {}, {"train": False}),
    "BiasAdd": (lambda: L.BiasAdd(), X, {}, {}),
    "ScaleOffset": (lambda: L.ScaleOffset(), X, {}, {}),
    "LayerNormalization": (lambda: L.LayerNormalization(), X, {}, {}),
    "Embedding": (lambda: L.Embedding(10, 8, mask_zero=True), IDS, {}, {"mixed": True}),
    "PositionEmbedding": (lambda: L.PositionEmbedding(
        8, 8, embeddings_initializer="random_normal"), X, {}, {}),
    "SinusoidalPositionEmbedding": (lambda: L.SinusoidalPositionEmbedding(8), X, {},
                                    {"train": False}),
    "RelativePositionEmbedding": (lambda: L.RelativePositionEmbedding(
        9, 4, embeddings_initializer="random_normal"), [X, X], {}, {}),
    "RelativePositionEmbeddingT5": (lambda: L.RelativePositionEmbeddingT5(
        8, 2, embeddings_initializer="random_normal"), [X, X], {}, {}),
    "MultiHeadAttention": (lambda: L.MultiHeadAttention(2, 4, rotary=True), X,
                           {"attention_mask": MASK}, {}),
    "FeedForward": (lambda: L.FeedForward(12, ["gelu", "linear"]), X, {}, {}),
    "T5FeedForward": (lambda: L.T5FeedForward(12, ["gelu", "linear"]), X, {}, {}),
    "GatedAttentionUnit": (lambda: L.GatedAttentionUnit(12, 4), X, {"attention_mask": MASK},
                           {}),
    "DisentangledSelfAttention": (lambda: L.DisentangledSelfAttention(
        2, 4, relative_attention=False), X, {"attention_mask": MASK}, {}),
    "RelativeEmbeddingTable": (lambda: L.RelativeEmbeddingTable(
        8, 8, embeddings_initializer="random_normal"), X, {}, {}),
    "DebertaConv": (lambda: L.DebertaConv(8), [X, IDS], {}, {}),
    "AttentionMask": (lambda: L.AttentionMask("unilm"), [IDS, (IDS > 5).astype("int32")], {},
                      {"train": False, "mixed": False}),
    "T5AttentionMask": (lambda: L.T5AttentionMask("padding"), IDS, {},
                        {"train": False, "mixed": False}),
    "ZeroPaddedPositions": (lambda: L.ZeroPaddedPositions(), [X, IDS], {}, {"train": False}),
    "FirstToken": (lambda: L.FirstToken(), X, {}, {"train": False}),
    "GlobalMaxPooling1D": (lambda: L.GlobalMaxPooling1D(), X, {}, {"train": False}),
    "Concatenate1D": (lambda: L.Concatenate1D(), [X, X[:, :2]], {}, {"train": False}),
    "BatchSplit": (lambda: L.BatchSplit(2), X, {}, {"train": False}),
    "BatchConcat": (lambda: L.BatchConcat(), [X, X], {}, {"train": False}),
    "GlobalPointer": (lambda: L.GlobalPointer(3, 4), X, {}, {}),
    "EfficientGlobalPointer": (lambda: L.EfficientGlobalPointer(3, 4), X, {}, {}),
    "GPLinker": (lambda: L.GPLinker(2, head_size=4), X, {}, {}),
    "ConditionalRandomField": (lambda: L.ConditionalRandomField(), X, {}, TAGGER),
    "MaximumEntropyMarkovModel": (lambda: L.MaximumEntropyMarkovModel(), X, {}, TAGGER),
}


def public_layer_classes():
    return sorted(n for n in dir(L) if inspect.isclass(getattr(L, n))
                  and issubclass(getattr(L, n), keras.layers.Layer)
                  and getattr(L, n).__module__.startswith("bert4keras3"))


def test_every_public_layer_has_a_row():
    assert sorted(set(public_layer_classes()) - set(CASES)) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer(name, tmp_path):
    make, inputs, kwargs, options = CASES[name]
    run_layer_test(make, inputs, kwargs, tmp_path=tmp_path, name=name, **options)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family(family, tmp_path):
    obj = build(family)
    x = model_inputs(obj)
    run_family_test(lambda: build(family), x, tmp_path, pad_to=None if is_t5(family) else 16)
