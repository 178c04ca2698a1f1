"""piecewise_linear schedule and exclude_from_weight_decay."""

import os

import numpy as np
import pytest
import keras
from keras import ops

from bert4keras3.optimizers import PiecewiseLinear, exclude_from_weight_decay, piecewise_linear


def ref_piecewise(t, schedule, from_zero=True):
    """np.interp through the points (constant outside), with (0, 0) prepended."""
    points = sorted(schedule.items())
    if from_zero and points[0][0] != 0:
        points = [(0, 0.0)] + points
    xs, ys = zip(*points)
    return np.interp(t, xs, ys)


SCHEDULE = {1000: 1.0, 2000: 0.1, 5000: 0.01}


def test_piecewise_linear_function_matches_interp():
    steps = np.array([0, 1, 250, 999, 1000, 1500, 2000, 3500, 5000, 10**6])
    got = np.asarray(ops.convert_to_numpy(piecewise_linear(steps, SCHEDULE)))
    np.testing.assert_allclose(got, ref_piecewise(steps, SCHEDULE), rtol=1e-6, atol=1e-9)
    # from_zero=False: the first value holds before the first step
    got = np.asarray(ops.convert_to_numpy(piecewise_linear(steps, SCHEDULE, from_zero=False)))
    np.testing.assert_allclose(got, ref_piecewise(steps, SCHEDULE, False), rtol=1e-6)
    assert got[0] == 1.0


def test_piecewise_linear_schedule_object_and_serialization(tmp_path):
    lr = piecewise_linear({100: 1e-3, 1000: 1e-4})
    assert isinstance(lr, PiecewiseLinear)
    steps = np.array([0, 50, 100, 550, 1000, 4000])
    values = [float(ops.convert_to_numpy(lr(s))) for s in steps]
    np.testing.assert_allclose(values, ref_piecewise(steps, {100: 1e-3, 1000: 1e-4}), rtol=1e-5)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(lr))
    assert isinstance(clone, PiecewiseLinear) and clone.get_config() == lr.get_config()
    # inside a saved model's optimizer
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.AdamW(learning_rate=PiecewiseLinear(SCHEDULE, multiplier=2e-5)), "mse")
    model.fit(np.ones((4, 3)), np.ones((4, 1)), verbose=0, epochs=1)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    sched = loaded.optimizer._learning_rate
    assert isinstance(sched, PiecewiseLinear)
    np.testing.assert_allclose(float(ops.convert_to_numpy(sched(1500))), 2e-5 * 0.55, rtol=1e-5)


def test_piecewise_linear_bad_schedules():
    with pytest.raises(ValueError, match="non-empty"):
        piecewise_linear({})
    with pytest.raises(ValueError, match=r"expected \{int step: float value\}"):
        piecewise_linear({"a": 1.0})
    with pytest.raises(ValueError, match="expected a \\{step: value\\} schedule"):
        piecewise_linear(3)
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be a positive int, found 0"):
        PiecewiseLinear({1: 1.0}, gradient_accumulation_steps=0)


def test_schedule_with_keras_gradient_accumulation():
    """Keras accumulates; the schedule keyed by real updates gives lr(k) at update k."""
    schedule = {2: 1.0, 4: 0.5}
    lr = PiecewiseLinear(schedule, gradient_accumulation_steps=2)
    opt = keras.optimizers.SGD(learning_rate=lr, gradient_accumulation_steps=2)
    w = keras.Variable(np.zeros(2, "float32"))
    grads = np.arange(1, 17, dtype="float32").reshape(8, 2)
    for g in grads:
        opt.apply_gradients([(ops.convert_to_tensor(g), w)])
    expected = np.zeros(2)
    for k in range(4):  # update k averages micro-steps 2k and 2k+1
        expected -= ref_piecewise(k, schedule) * grads[2 * k : 2 * k + 2].mean(0)
    np.testing.assert_allclose(np.asarray(ops.convert_to_numpy(w)), expected, rtol=1e-6)
    assert int(ops.convert_to_numpy(opt.iterations)) == 4


def _small_model():
    inp = keras.Input((4,))
    h = keras.layers.Dense(5, name="dense_in")(inp)
    h = keras.layers.LayerNormalization(name="Transformer-0-FeedForward-Norm")(h)
    return keras.Model(inp, keras.layers.Dense(2, name="out")(h))


def test_exclude_norm_and_bias_from_weight_decay():
    model = _small_model()
    opt = exclude_from_weight_decay(keras.optimizers.AdamW(0.1, weight_decay=0.5), model)
    before = {v.path: np.asarray(ops.convert_to_numpy(v)) for v in model.trainable_variables}
    for v in model.trainable_variables:  # non-zero biases / beta so that decay would show
        v.assign(before[v.path] + 1.0)
    before = {v.path: np.asarray(ops.convert_to_numpy(v)) for v in model.trainable_variables}
    zeros = [ops.zeros(v.shape) for v in model.trainable_variables]
    opt.apply_gradients(zip(zeros, model.trainable_variables))  # Adam step is 0: only decay
    decayed = set()
    for v in model.trainable_variables:
        after = np.asarray(ops.convert_to_numpy(v))
        if np.allclose(after, before[v.path] * (1 - 0.1 * 0.5), rtol=1e-6):
            decayed.add(v.path)
        else:
            np.testing.assert_array_equal(after, before[v.path])
    assert decayed == {"dense_in/kernel", "out/kernel"}


def test_exclude_from_weight_decay_after_build_raises():
    model = _small_model()
    opt = keras.optimizers.AdamW(0.1, weight_decay=0.5)
    opt.build(model.trainable_variables)
    with pytest.raises(ValueError, match="before the optimizer is built"):
        exclude_from_weight_decay(opt, model)
