"""bert4keras3.training.adversarial_training against an independent PyTorch transcription of FGM."""
import numpy as np
import pytest
import torch

import keras

from bert4keras3.training import adversarial_training

VOCAB, DIM, CLASSES, LR, EPS = 11, 6, 3, 0.5, 0.3
TOKENS = np.array([[1, 4, 5, 0], [2, 3, 7, 9], [6, 6, 0, 0], [10, 8, 1, 2]], "int32")
LABELS = np.array([0, 2, 1, 2], "int32")


def build(seed=3):
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(VOCAB, DIM, name="Embedding-Token")(tokens)
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(CLASSES, activation="softmax")(x)
    model = keras.Model(tokens, out)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(LR))
    return model


def torch_fgm_steps(weights, steps):
    """FGM with SGD, written from the recipe: perturb, step, un-perturb."""
    emb, kernel, bias = [torch.tensor(w, dtype=torch.float64, requires_grad=True)
                         for w in weights]
    ids = torch.tensor(TOKENS, dtype=torch.long)
    labels = torch.tensor(LABELS, dtype=torch.long)

    def loss_fn(e, k, b):
        pooled = e[ids].mean(1)  # Keras' pooling without a mask averages every position
        return torch.nn.functional.cross_entropy(pooled @ k + b, labels)

    for _ in range(steps):
        (g,) = torch.autograd.grad(loss_fn(emb, kernel, bias), [emb])
        delta = EPS * g / (g.norm() + 1e-8)
        perturbed = (emb + delta).detach().requires_grad_(True)
        grads = torch.autograd.grad(loss_fn(perturbed, kernel, bias), [perturbed, kernel, bias])
        emb = (perturbed - LR * grads[0] - delta).detach().requires_grad_(True)
        kernel = (kernel - LR * grads[1]).detach().requires_grad_(True)
        bias = (bias - LR * grads[2]).detach().requires_grad_(True)
    return [emb.detach().numpy(), kernel.detach().numpy(), bias.detach().numpy()]


def plain_sgd_steps(weights, steps):
    """The same without the perturbation (to show the test can tell them apart)."""
    global EPS
    saved, EPS = EPS, 0.0
    try:
        return torch_fgm_steps(weights, steps)
    finally:
        EPS = saved


@pytest.mark.parametrize("how", ["fit", "train_on_batch"])
def test_fgm_matches_reference(how):
    model = build()
    start = [keras.ops.convert_to_numpy(w) for w in model.weights]
    adversarial_training(model, "Embedding-Token", EPS)
    if how == "fit":
        model.fit(TOKENS, LABELS, batch_size=len(TOKENS), epochs=3, shuffle=False, verbose=0)
    else:
        for _ in range(3):
            model.train_on_batch(TOKENS, LABELS)
    got = [keras.ops.convert_to_numpy(w) for w in model.weights]
    expected = torch_fgm_steps(start, 3)
    plain = plain_sgd_steps(start, 3)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, atol=2e-5)
    assert max(np.abs(p - e).max() for p, e in zip(plain, expected)) > 1e-3


def test_nested_model_and_errors():
    inner = build()
    tokens = keras.Input((None,), dtype="int32")
    outer = keras.Model(tokens, inner(tokens))
    with pytest.raises(ValueError, match="compiled"):
        adversarial_training(outer, "Embedding-Token")
    outer.compile(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(LR))
    with pytest.raises(ValueError, match="'Embedding-Tokn'"):
        adversarial_training(outer, "Embedding-Tokn")
    with pytest.raises(ValueError, match="no `embeddings`"):
        adversarial_training(outer, inner.layers[-1].name)
    start = [keras.ops.convert_to_numpy(w) for w in outer.weights]
    adversarial_training(outer, "Embedding-Token", EPS)  # found inside the nested model
    outer.train_on_batch(TOKENS, LABELS)
    got = [keras.ops.convert_to_numpy(w) for w in outer.weights]
    for g, e in zip(got, torch_fgm_steps(start, 1)):
        np.testing.assert_allclose(g, e, atol=2e-5)
