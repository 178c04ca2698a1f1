"""The ``remat`` (gradient checkpointing) and ``dtype`` build options.

``remat=True`` (or bert4keras' ``RECOMPUTE=1``) must change memory, never results: the
same weights train to the same losses and weights as without it, and the backward pass
really goes through ``keras.remat`` (counted here on every backend; on JAX the gradient's
jaxpr holds the ``checkpoint`` primitive). ``dtype=`` gives every layer of the model,
sublayers included, the policy, and leaves the global policy alone. The memory saved is
measured by ``python scripts/bench.py remat`` (compiled temp memory of a training step).
"""
import re

import numpy as np
import pytest

import keras
from keras import ops

from bert4keras3.models import base
from test_precision import TOLERANCE, build, float32_reference, model_inputs, random_weights, \
    relative_error

#: one family per kind of block: post-norm MHA, GAU, disentangled attention, shared
#: layers, pre-norm T5 (encoder + decoder)
FAMILIES = ["bert", "gau_alpha", "deberta_v3", "albert", "t5.1.1"]


def remat_layers(obj):
    """The layers of the builder that ``remat`` wraps."""
    return [l for l in obj.layers.values() if isinstance(l, base.REMAT_LAYERS)]


def train(obj, weights, x, steps=2):
    """``steps`` SGD steps on an MSE to random targets; returns (losses, weights)."""
    model = obj.model
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    out = ops.convert_to_numpy(model(x))
    y = np.random.RandomState(5).rand(*out.shape).astype("float32")
    losses = [float(model.train_on_batch(x, y)) for _ in range(steps)]
    return losses, [ops.convert_to_numpy(w) for w in model.weights]


@pytest.mark.parametrize("family", FAMILIES)
def test_remat_trains_exactly_like_the_plain_model(family, monkeypatch):
    plain = build(family)
    weights = random_weights(plain.model)
    x = model_inputs(plain)
    ref_losses, ref_weights = train(plain, weights, x)

    calls = []
    original = keras.remat

    def counting_remat(f):
        calls.append(getattr(f, "remat_layer", None))
        return original(f)

    monkeypatch.setattr(keras, "remat", counting_remat)
    obj = build(family, remat=True)
    wrapped = remat_layers(obj)
    assert wrapped and all(getattr(l.call, "remat_layer", None) is l for l in wrapped)
    losses, new_weights = train(obj, weights, x)
    # exactly these layers went through keras.remat (not their Dense sublayers)
    assert {id(l) for l in calls} == {id(l) for l in wrapped}
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    assert ref_losses[1] < ref_losses[0]  # the step did something
    for a, b, w in zip(new_weights, ref_weights, obj.model.weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=w.path)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="inspects a JAX jaxpr")
def test_remat_reaches_the_jax_program():
    import jax

    def grad_jaxpr(obj):
        model = obj.model
        x = [ops.convert_to_tensor(a) for a in model_inputs(obj)]
        trainable = [v.value for v in model.trainable_variables]
        fixed = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            y, _ = model.stateless_call(trainable, fixed, x, training=True)
            return ops.mean(ops.square(y))

        return str(jax.make_jaxpr(jax.grad(loss))(trainable))

    plain, remat = grad_jaxpr(build("bert")), grad_jaxpr(build("bert", remat=True))
    assert not re.search(r"\b(checkpoint|remat)\b", plain)
    # one rematerialised region per attention, feed-forward and norm layer (2 blocks)
    assert len(re.findall(r"\b(checkpoint|remat2?)\[", remat)) >= 2 * 4


def test_recompute_environment_variable(monkeypatch):
    monkeypatch.setenv("RECOMPUTE", "1")
    obj = build("bert")
    assert obj.remat and all(getattr(l.call, "remat_layer", None) is l
                             for l in remat_layers(obj))
    monkeypatch.setenv("RECOMPUTE", "0")
    assert not build("bert").remat
    with pytest.raises(ValueError, match=r"remat must be True or False, found 'yes please'"):
        build("bert", remat="yes please")


def test_remat_model_round_trips_through_keras_files(tmp_path):
    obj = build("roformer_v2", remat=True)
    obj.model.set_weights(random_weights(obj.model))
    x = model_inputs(obj)
    path = str(tmp_path / "m.keras")
    obj.model.save(path)
    again = keras.saving.load_model(path)
    np.testing.assert_array_equal(ops.convert_to_numpy(again(x)),
                                  ops.convert_to_numpy(obj.model(x)))


@pytest.mark.parametrize("family", ["bert", "gau_alpha", "deberta_v2", "gpt2", "t5.1.1"])
def test_dtype_option_sets_every_layer_policy(family):
    weights, x, ref = float32_reference(family)
    before = keras.config.dtype_policy().name
    obj = build(family, dtype="mixed_bfloat16")
    assert keras.config.dtype_policy().name == before  # the global policy is untouched
    layers = [l for l in obj.model._flatten_layers(include_self=False) if l.weights]
    wrong = sorted({f"{type(l).__name__}:{l.dtype_policy.name}" for l in layers
                    if l.dtype_policy.name != "mixed_bfloat16"})
    assert not wrong, wrong  # sublayers (the Denses inside attention) included
    assert all(w.dtype == "float32" for w in obj.model.weights)
    obj.model.set_weights(weights)
    err = relative_error(obj.model(x), ref, x[0])
    assert 0.0 < err <= TOLERANCE["mixed_bfloat16"], err
    # a plain bfloat16 policy stores the weights in bfloat16
    half = build(family, dtype="bfloat16")
    assert all(w.dtype == "bfloat16" for w in half.model.weights)
    # a model built afterwards without the option is float32 again
    assert all(w.dtype == "float32" for w in build(family).model.weights)


def test_unknown_dtype_is_an_error():
    with pytest.raises(ValueError, match=r"dtype must be a Keras dtype policy.*'float17'"):
        build("bert", dtype="float17")
