"""bert4keras optimizers and wrappers against NumPy transcriptions of their update rules,
plus piecewise_linear, exclude_from_weight_decay, EMA swapping inside fit, serialization."""

import os
import re

import numpy as np
import pytest
import keras
from keras import ops

from bert4keras3 import optimizers as O
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


# =============================================================================
# bert4keras optimizers and wrappers
# =============================================================================
RTOL, ATOL = 1e-6, 1e-7


def np32(x):
    return np.asarray(ops.convert_to_numpy(x))


def make_variables(init):
    """Keras variables named by path (``"scope/name"``) holding ``init[path]``."""
    variables = []
    for path, value in init.items():
        scope, _, name = path.rpartition("/")
        with keras.name_scope(scope) if scope else _nullcontext():
            variables.append(keras.Variable(value.astype("float32"), name=name))
    assert [v.path for v in variables] == list(init)
    return variables


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def run_keras(opt, init, grads):
    """Apply ``grads`` (list of {path: array}) with ``opt``; returns final {path: array}."""
    variables = make_variables(init)
    for g in grads:
        opt.apply_gradients([(ops.convert_to_tensor(g[v.path].astype("float32")), v)
                             for v in variables])
    return {v.path: np32(v) for v in variables}, variables


def assert_close(got, expected, rtol=RTOL, atol=ATOL):
    assert set(got) == set(expected)
    for k in got:
        np.testing.assert_allclose(got[k], expected[k], rtol=rtol, atol=atol, err_msg=k)


# ----------------------------------------------------------------- NumPy references
def ref_adam(lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-6, bias_correction=True):
    def step(state, w, g, lr_t, t):
        m = state["m"] = beta_1 * state.get("m", 0.0) + (1 - beta_1) * g
        v = state["v"] = beta_2 * state.get("v", 0.0) + (1 - beta_2) * g * g
        if bias_correction:
            m, v = m / (1 - beta_1 ** t), v / (1 - beta_2 ** t)
        return w - lr_t * m / (np.sqrt(v) + epsilon)

    step.lr = lr
    return step


def ref_rms(x):
    return np.sqrt(np.mean(np.square(x)))


def ref_adafactor(lr=1e-3, beta1=0.0, beta2=None, epsilon1=1e-30, epsilon2=1e-3,
                  multiply_by_parameter_scale=True, clipping_threshold=1.0,
                  min_dim_size_to_factor=128, exclude_from_parameter_scale=()):
    def step(state, w, g, lr_t, t, path=""):
        b2 = 1.0 - t ** -0.8 if beta2 is None else beta2
        g2 = g * g + epsilon1
        shape = np.array(w.shape)
        factored = None
        if w.ndim >= 2:
            idx = shape.argpartition(-2)
            if shape[idx[-2]] >= min_dim_size_to_factor:
                factored = idx[-1], idx[-2]
        if factored is None:
            v = state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * g2
        else:
            a1, a2 = factored
            vr = state["vr"] = b2 * state.get("vr", 0.0) + (1 - b2) * g2.mean(a1, keepdims=True)
            vc = state["vc"] = b2 * state.get("vc", 0.0) + (1 - b2) * g2.mean(a2, keepdims=True)
            v = vr * vc / vr.mean(a2, keepdims=True)
        u = g / np.sqrt(v + epsilon1)
        if clipping_threshold is not None:
            u = u / max(1.0, ref_rms(u) / clipping_threshold)
        if beta1 > 0:
            u = state["m"] = beta1 * state.get("m", 0.0) + (1 - beta1) * u
        if multiply_by_parameter_scale and not any(
                re.search(p, path) for p in exclude_from_parameter_scale):
            u = u * max(ref_rms(w), epsilon2)
        return w - lr_t * u

    step.lr = lr
    step.wants_path = True
    return step


def ref_train(init, grads, base, transforms=(), lr_schedule=None, accum=1, ema=None):
    """Drive ``base`` (a per-variable step) and wrapper ``transforms`` like the Keras
    classes: transforms apply innermost first; ``lr_schedule`` is evaluated at the call
    count, ``accum`` averages calls, EMA updates on every call."""
    w = {k: v.astype("float64") for k, v in init.items()}
    states = {k: {} for k in w}
    acc = {k: 0.0 for k in w}
    averages = {k: np.zeros_like(v) for k, v in w.items()}
    t = 0
    for call, g in enumerate(grads):
        lr_t = base.lr
        if lr_schedule is not None:
            points = sorted(lr_schedule.items())
            if points[0][0] != 0:
                points = [(0, 0.0)] + points
            lr_t = lr_t * np.interp(call, *zip(*points))
        for k in w:
            acc[k] = acc[k] + g[k]
        if (call + 1) % accum == 0:
            t += 1
            for k in w:
                gk, old = acc[k] / accum, w[k]
                before = {n: np.copy(s) for n, s in states[k].items()}
                if getattr(base, "wants_path", False):
                    new = base(states[k], old, gk, lr_t, t, path=k)
                else:
                    new = base(states[k], old, gk, lr_t, t)
                for transform in transforms:
                    new = transform(k, old, new, gk, lr_t, t, states[k], before)
                w[k] = new
            acc = {k: 0.0 for k in w}
        if ema is not None:
            averages = {k: ema * averages[k] + (1 - ema) * w[k] for k in w}
    return w, averages, len(grads)


def tr_weight_decay(rate, exclude=()):
    def f(k, old, new, g, lr, t, state, before):
        if any(re.search(p, k) for p in exclude):
            return new
        return new - lr * rate * old
    return f


def tr_layer_adaptation(exclude=()):
    def f(k, old, new, g, lr, t, state, before):
        if any(re.search(p, k) for p in exclude):
            return new
        dx = new - old
        x_norm, g_norm = np.linalg.norm(old), np.linalg.norm(dx / max(lr, 1e-7))
        ratio = x_norm / g_norm if x_norm > 0 and g_norm > 0 else 1.0
        return old + dx * ratio
    return f


def tr_lookahead(k_steps, alpha):
    def f(k, old, new, g, lr, t, state, before):
        slow = old if t == 1 else state["slow"]
        if t % k_steps == 0:
            slow = slow + alpha * (new - slow)
            new = slow
        state["slow"] = slow
        return new
    return f


def tr_lazy(include):
    def f(k, old, new, g, lr, t, state, before):
        if not any(re.search(p, k) for p in include):
            return new
        seen = np.any(g != 0, axis=-1, keepdims=True)
        for n in before:
            if np.shape(state[n]) == old.shape:
                state[n] = np.where(seen, state[n], before[n])
        return np.where(seen, new, old)
    return f


def tr_paramwise(schedule):
    def f(k, old, new, g, lr, t, state, before):
        mult = np.prod([v for key, v in schedule.items() if key in k])
        return old + (new - old) * mult
    return f


RNG = np.random.default_rng(0)
INIT = {
    "Embedding-Token/embeddings": RNG.normal(size=(6, 4)),
    "Transformer-0-FeedForward/kernel": RNG.normal(size=(4, 3)),
    "Transformer-0-FeedForward/bias": RNG.normal(size=(3,)),
    "Transformer-0-FeedForward-Norm/gamma": 1 + 0.1 * RNG.normal(size=(3,)),
}


def make_grads(steps, zero_rows=None):
    grads = []
    for i in range(steps):
        g = {k: RNG.normal(size=v.shape) for k, v in INIT.items()}
        if zero_rows is not None and i in zero_rows:
            g["Embedding-Token/embeddings"][zero_rows[i]] = 0.0
        grads.append(g)
    return grads


GRADS = make_grads(6)


# ----------------------------------------------------------------- optimizers
@pytest.mark.parametrize("bias_correction", [True, False])
def test_adam_matches_bert4keras_rule(bias_correction):
    kw = dict(beta_1=0.8, beta_2=0.99, epsilon=1e-6, bias_correction=bias_correction)
    got, _ = run_keras(O.Adam(learning_rate=0.01, **kw), INIT, GRADS)
    expected, _, _ = ref_train(INIT, GRADS, ref_adam(lr=0.01, **kw))
    assert_close(got, expected)
    assert O.Adam().epsilon == 1e-6 and isinstance(O.Adam(), keras.optimizers.Adam)


def test_adafactor_matches_bert4keras_rule():
    init = dict(INIT, **{"Transformer-0-Attention/kernel": RNG.normal(size=(3, 2, 5))})
    grads = [dict(g, **{"Transformer-0-Attention/kernel": RNG.normal(size=(3, 2, 5))})
             for g in GRADS[:4]]
    for kw in [
        dict(learning_rate=0.01, min_dim_size_to_factor=3, beta1=0.9,
             exclude_from_parameter_scale=["Norm"]),
        dict(learning_rate=None, min_dim_size_to_factor=2, beta2=0.9,
             clipping_threshold=None),
        dict(learning_rate=None, multiply_by_parameter_scale=False),  # nothing factored
    ]:
        got, _ = run_keras(O.AdaFactor(**kw), init, grads)
        ref_kw = {k: v for k, v in kw.items() if k != "learning_rate"}
        base = ref_adafactor(lr=kw["learning_rate"] or 1.0, **ref_kw)
        if kw["learning_rate"] is None:  # relative step: min(1/sqrt(t), 0.01) (x 0.05)
            scale = 1.0 if kw.get("multiply_by_parameter_scale", True) else 0.05
            inner = base

            def base(state, w, g, lr_t, t, path="", inner=inner, scale=scale):
                return inner(state, w, g, min(1 / np.sqrt(t), 0.01) * scale, t, path=path)

            base.lr, base.wants_path = 1.0, True
        expected, _, _ = ref_train(init, grads, base)
        assert_close(got, expected, rtol=2e-6)
    assert O.AdaFactorV1 is O.AdaFactorV2 is O.AdaFactor


def test_adafactor_factors_the_two_largest_axes():
    opt = O.AdaFactor(min_dim_size_to_factor=3)
    assert opt.factored_shape((2, 5, 4)) == ((2, 1, 4), 1, (2, 5, 1), 2)
    assert opt.factored_shape((5, 2)) is None and opt.factored_shape((7,)) is None


def test_lion_has_bert4keras_defaults_and_rule():
    opt = O.Lion()
    assert (opt.beta_1, opt.beta_2) == (0.95, 0.98)
    np.testing.assert_allclose(float(np32(opt.learning_rate)), 3e-4, rtol=1e-6)
    got, _ = run_keras(O.Lion(learning_rate=0.01), INIT, GRADS[:3])

    def lion(state, w, g, lr_t, t):
        m = state.get("m", 0.0)
        w = w - lr_t * np.sign(0.95 * m + 0.05 * g)
        state["m"] = 0.98 * m + 0.02 * g
        return w

    lion.lr = 0.01
    expected, _, _ = ref_train(INIT, GRADS[:3], lion)
    assert_close(got, expected)
    assert O.LionV2 is O.Lion


# ----------------------------------------------------------------- wrappers, one by one
def test_weight_decay():
    AdamW = O.extend_with_weight_decay(O.Adam, "AdamW")
    opt = AdamW(0.01, weight_decay_rate=0.1, exclude_from_weight_decay=["Norm", "bias"])
    got, _ = run_keras(opt, INIT, GRADS)
    expected, _, _ = ref_train(INIT, GRADS, ref_adam(0.01),
                               [tr_weight_decay(0.1, ["Norm", "bias"])])
    assert_close(got, expected)
    assert AdamW.__name__ == "AdamW" and issubclass(AdamW, O.Adam)
    # patterns are case-sensitive regular expressions searched in the variable path
    assert opt._b4k_decay == (True, True, False, False)


def test_layer_adaptation_lamb():
    LAMB = O.extend_with_layer_adaptation(O.extend_with_weight_decay(O.Adam), "LAMB")
    opt = LAMB(0.01, weight_decay_rate=0.01, exclude_from_layer_adaptation=["Norm"])
    got, _ = run_keras(opt, INIT, GRADS)
    expected, _, _ = ref_train(INIT, GRADS, ref_adam(0.01),
                               [tr_weight_decay(0.01), tr_layer_adaptation(["Norm"])])
    assert_close(got, expected, rtol=2e-6)


def test_piecewise_linear_lr_counts_calls():
    AdamLR = O.extend_with_piecewise_linear_lr(O.Adam, "AdamLR")
    schedule = {2: 1, 4: 0.1}
    got, _ = run_keras(AdamLR(0.01, lr_schedule=schedule), INIT, GRADS)
    expected, _, _ = ref_train(INIT, GRADS, ref_adam(0.01), lr_schedule=schedule)
    assert_close(got, expected)
    # default {0: 1}: plain Adam
    got, _ = run_keras(AdamLR(0.01), INIT, GRADS[:2])
    expected, _, _ = ref_train(INIT, GRADS[:2], ref_adam(0.01))
    assert_close(got, expected)


def test_gradient_accumulation_equals_large_batch():
    """k accumulated calls == one step on the mean gradient (bias correction counts updates)."""
    AdamG = O.extend_with_gradient_accumulation(O.Adam, "AdamG")
    opt = AdamG(0.01, grad_accum_steps=3)
    got, variables = run_keras(opt, INIT, GRADS)
    means = [{k: np.mean([g[k] for g in GRADS[i:i + 3]], 0) for k in INIT} for i in (0, 3)]
    large, _ = run_keras(O.Adam(0.01), INIT, means)
    assert_close(got, large)
    assert int(np32(opt.iterations)) == 2 and opt.gradient_accumulation_steps == 3
    # half-way through an accumulation the weights have not moved since the last update
    partial, _ = run_keras(AdamG(0.01, grad_accum_steps=3), INIT, GRADS[:5])
    one, _ = run_keras(O.Adam(0.01), INIT, means[:1])
    for k in INIT:
        np.testing.assert_array_equal(partial[k], one[k])
    assert AdamG(0.01, grad_accum_steps=1).gradient_accumulation_steps is None


def test_lookahead():
    AdamLA = O.extend_with_lookahead(O.Adam, "AdamLA")
    opt = AdamLA(0.01, steps_per_slow_update=2, slow_step_size=0.5)
    got, _ = run_keras(opt, INIT, GRADS[:5])
    expected, _, _ = ref_train(INIT, GRADS[:5], ref_adam(0.01), [tr_lookahead(2, 0.5)])
    assert_close(got, expected)


def test_lazy_optimization_keeps_zero_gradient_rows_and_slots():
    AdamLazy = O.extend_with_lazy_optimization(O.Adam, "AdamLazy")
    grads = make_grads(3, zero_rows={1: [2, 3], 2: [3, 5]})
    opt = AdamLazy(0.01, include_in_lazy_optimization=["Embedding"])
    variables = make_variables(INIT)
    emb = variables[0]
    history = []
    for g in grads:
        opt.apply_gradients([(ops.convert_to_tensor(g[v.path].astype("float32")), v)
                             for v in variables])
        i = opt._get_variable_index(emb)
        history.append((np32(emb), np32(opt._momentums[i]), np32(opt._velocities[i])))
    # row 3: zero gradient at calls 1 and 2 -> value and moments frozen after call 0
    for arr_now, arr_then in zip(history[2], history[0]):
        np.testing.assert_array_equal(arr_now[3], arr_then[3])
    for arr_now, arr_then in zip(history[1], history[0]):
        np.testing.assert_array_equal(arr_now[2], arr_then[2])
    got = {v.path: np32(v) for v in variables}
    expected, _, _ = ref_train(INIT, grads, ref_adam(0.01), [tr_lazy(["Embedding"])])
    assert_close(got, expected)
    # sanity: without laziness the frozen rows would have moved
    plain, _, _ = ref_train(INIT, grads, ref_adam(0.01))
    emb = "Embedding-Token/embeddings"
    assert not np.allclose(plain[emb][3], got[emb][3])


def test_exponential_moving_average_apply_and_reset():
    AdamEMA = O.extend_with_exponential_moving_average(O.Adam, name="AdamEMA")
    opt = AdamEMA(0.01, ema_momentum=0.9)
    got, variables = run_keras(opt, INIT, GRADS[:4])
    expected, averages, steps = ref_train(INIT, GRADS[:4], ref_adam(0.01), ema=0.9)
    assert_close(got, expected)
    assert_close({v.path: np32(a) for v, a in zip(variables, opt.ema_weights)}, averages)
    before = [np32(v) for v in variables]
    opt.apply_ema_weights()
    corrected = {k: a / (1 - 0.9 ** steps) for k, a in averages.items()}
    assert_close({v.path: np32(v) for v in variables}, corrected)
    opt.reset_old_weights()
    for v, b in zip(variables, before):
        np.testing.assert_array_equal(np32(v), b)  # bit for bit
    opt.apply_ema_weights(bias_correction=False)
    assert_close({v.path: np32(v) for v in variables}, averages)
    opt.reset_old_weights()
    for v, b in zip(variables, before):
        np.testing.assert_array_equal(np32(v), b)
    assert opt.model_weights[0] is variables[0]


def test_parameter_wise_lr():
    AdamP = O.extend_with_parameter_wise_lr(O.Adam, "AdamP")
    schedule = {"Embedding": 0.1, "Transformer-0": 2.0, "bias": 0.5}
    got, _ = run_keras(AdamP(0.01, paramwise_lr_schedule=schedule), INIT, GRADS[:3])
    expected, _, _ = ref_train(INIT, GRADS[:3], ref_adam(0.01), [tr_paramwise(schedule)])
    assert_close(got, expected)


def test_v2_names_are_aliases():
    for name in ["weight_decay", "layer_adaptation", "piecewise_linear_lr",
                 "gradient_accumulation", "lookahead", "lazy_optimization",
                 "exponential_moving_average", "parameter_wise_lr"]:
        assert getattr(O, f"extend_with_{name}_v2") is getattr(O, f"extend_with_{name}")
    for name in O.__all__:
        assert getattr(O, name).__doc__, name


# ----------------------------------------------------------------- compositions
def test_adamw_lr_accumulation_ema_composed():
    AdamW = O.extend_with_weight_decay(O.Adam, "AdamW")
    AdamWLR = O.extend_with_piecewise_linear_lr(AdamW, "AdamWLR")
    AdamWLRG = O.extend_with_gradient_accumulation(AdamWLR, "AdamWLRG")
    AdamWLRGEMA = O.extend_with_exponential_moving_average(AdamWLRG, "AdamWLRGEMA")
    schedule = {2: 1, 5: 0.2}
    opt = AdamWLRGEMA(0.01, weight_decay_rate=0.1, exclude_from_weight_decay=["Norm", "bias"],
                      lr_schedule=schedule, grad_accum_steps=2, ema_momentum=0.8)
    got, variables = run_keras(opt, INIT, GRADS)
    expected, averages, steps = ref_train(
        INIT, GRADS, ref_adam(0.01), [tr_weight_decay(0.1, ["Norm", "bias"])],
        lr_schedule=schedule, accum=2, ema=0.8)
    assert_close(got, expected)
    opt.apply_ema_weights()
    assert_close({v.path: np32(v) for v in variables},
                 {k: a / (1 - 0.8 ** steps) for k, a in averages.items()})


def test_lamb_lookahead_lazy_paramwise_composed():
    Opt = O.extend_with_weight_decay(O.Adam)
    Opt = O.extend_with_layer_adaptation(Opt)
    Opt = O.extend_with_lookahead(Opt)
    Opt = O.extend_with_parameter_wise_lr(Opt)
    Opt = O.extend_with_lazy_optimization(Opt, "Everything")
    grads = make_grads(4, zero_rows={2: [0, 1], 3: [1]})
    opt = Opt(0.01, weight_decay_rate=0.05, exclude_from_weight_decay=["bias"],
              exclude_from_layer_adaptation=["Norm"], steps_per_slow_update=2,
              slow_step_size=0.6, paramwise_lr_schedule={"Embedding": 0.5},
              include_in_lazy_optimization=["Embedding"])
    got, _ = run_keras(opt, INIT, grads)
    expected, _, _ = ref_train(INIT, grads, ref_adam(0.01), [
        tr_weight_decay(0.05, ["bias"]), tr_layer_adaptation(["Norm"]), tr_lookahead(2, 0.6),
        tr_paramwise({"Embedding": 0.5}), tr_lazy(["Embedding"])])
    assert_close(got, expected, rtol=2e-6)


def test_wrapping_keras_optimizers_and_adafactor():
    SGDW = O.extend_with_weight_decay(keras.optimizers.SGD, "SGDW")
    got, _ = run_keras(SGDW(0.1, weight_decay_rate=0.5), INIT, GRADS[:2])

    def sgd(state, w, g, lr_t, t):
        return w - lr_t * g

    sgd.lr = 0.1
    expected, _, _ = ref_train(INIT, GRADS[:2], sgd, [tr_weight_decay(0.5)])
    assert_close(got, expected)
    AdaFactorLR = O.extend_with_piecewise_linear_lr(O.AdaFactor, "AdaFactorLR")
    got, _ = run_keras(AdaFactorLR(0.01, lr_schedule={2: 1}, min_dim_size_to_factor=3),
                       INIT, GRADS[:3])
    expected, _, _ = ref_train(INIT, GRADS[:3], ref_adafactor(0.01, min_dim_size_to_factor=3),
                               lr_schedule={2: 1})
    assert_close(got, expected, rtol=2e-6)


# ----------------------------------------------------------------- training with fit
def tiny_classifier(vocab=12):
    inp = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(vocab, 8, name="Embedding-Token")(inp)
    h = keras.layers.GlobalAveragePooling1D()(h)
    h = keras.layers.Dense(8, activation="tanh", name="Transformer-0-FeedForward")(h)
    h = keras.layers.LayerNormalization(name="Transformer-0-FeedForward-Norm")(h)
    return keras.Model(inp, keras.layers.Dense(2, name="out")(h))


def tiny_data(n=64, vocab=6):
    rng = np.random.default_rng(1)
    x = rng.integers(1, vocab, size=(n, 5)).astype("int32")
    y = (((x == 1) | (x == 2)).sum(1) >= 2).astype("int32")
    return x, y


def test_bert4keras_example_adamw_lr_reduces_loss():
    AdamW = O.extend_with_weight_decay(O.Adam, "AdamW")
    AdamWLR = O.extend_with_piecewise_linear_lr(AdamW, "AdamWLR")
    opt = AdamWLR(learning_rate=1e-2, weight_decay_rate=0.01,
                  exclude_from_weight_decay=["Norm", "bias"], lr_schedule={10: 1, 40: 0.1})
    model = tiny_classifier()
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = tiny_data()
    first = model.evaluate(x, y, verbose=0)
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0, shuffle=False)
    assert history.history["loss"][-1] < 0.8 * first
    assert int(np32(opt.iterations)) == 32


def test_lazy_fit_leaves_unseen_embedding_rows_bit_exact():
    """Tokens 6..11 never occur: with lazy AdamW their rows (and moments) never change,
    also on TensorFlow where embedding gradients are IndexedSlices."""
    LazyAdamW = O.extend_with_lazy_optimization(O.extend_with_weight_decay(O.Adam), "LazyAdamW")
    model = tiny_classifier()
    before = np32(model.get_layer("Embedding-Token").embeddings)
    opt = LazyAdamW(1e-2, weight_decay_rate=0.1, include_in_lazy_optimization=["Embedding"])
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = tiny_data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    after = np32(model.get_layer("Embedding-Token").embeddings)
    np.testing.assert_array_equal(after[6:], before[6:])
    np.testing.assert_array_equal(after[0], before[0])  # padding id 0 never occurs either
    assert not np.allclose(after[1:6], before[1:6])


class EMAEvaluator(keras.callbacks.Callback):
    """bert4keras' evaluator pattern: the script's own ``model`` / ``optimizer`` objects
    (not ``self.model``, whose access makes Keras sync its JAX state), at the end of every
    epoch and in the middle of one (there without bias correction: the averages
    themselves go into the model)."""

    def __init__(self, model, optimizer, x, y, check):
        super().__init__()
        self.net, self.opt, self.x, self.y, self.check, self.losses = (
            model, optimizer, x, y, check, [])

    def _swap_and_evaluate(self, bias_correction):
        opt = self.opt
        opt.apply_ema_weights(bias_correction=bias_correction)
        steps = int(np32(opt.iterations))
        scale = 1 - opt.ema_momentum ** steps if bias_correction else 1.0
        for v, a in zip(opt.model_weights, opt.ema_weights):
            np.testing.assert_allclose(np32(v), np32(a) / scale, rtol=1e-6)
        self.losses.append(self.net.evaluate(self.x, self.y, verbose=0))
        self.net.predict(self.x[:4], verbose=0)
        opt.reset_old_weights()

    def on_train_batch_end(self, batch, logs=None):
        if self.check and batch == 1:
            self._swap_and_evaluate(bias_correction=False)

    def on_epoch_end(self, epoch, logs=None):
        if self.check:
            self._swap_and_evaluate(bias_correction=True)


def test_ema_swap_inside_fit_callbacks_restores_exactly():
    """apply_ema_weights -> evaluate/predict -> reset_old_weights inside fit (epoch end and
    mid-epoch) must leave training bit-for-bit identical to a run without the swaps."""
    AdamW = O.extend_with_weight_decay(O.Adam, "AdamW")
    AdamWEMA = O.extend_with_exponential_moving_average(AdamW, name="AdamWEMA")
    x, y = tiny_data()
    model = tiny_classifier()
    initial = model.get_weights()
    results = []
    for check in (True, False):
        model.set_weights(initial)
        optimizer = AdamWEMA(1e-2, weight_decay_rate=0.01, ema_momentum=0.9)
        model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        evaluator = EMAEvaluator(model, optimizer, x, y, check)
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False,
                  callbacks=[evaluator])
        results.append((model.get_weights(), evaluator.losses))
        # fit's end does not overwrite the weights with the averages
        assert not np.allclose(np32(optimizer.ema_weights[0]), model.get_weights()[0])
    (swapped, losses), (plain, _) = results
    assert len(losses) == 4 and all(np.isfinite(losses))
    for a, b in zip(swapped, plain):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- serialization
def test_composed_classes_serialize_and_reload(tmp_path):
    AdamW = O.extend_with_weight_decay(O.Adam, "AdamW")
    AdamWLR = O.extend_with_piecewise_linear_lr(AdamW, "AdamWLR")
    AdamWLRG = O.extend_with_gradient_accumulation(AdamWLR, "AdamWLRG")
    AdamWLRGEMA = O.extend_with_exponential_moving_average(AdamWLRG, "AdamWLRGEMA")
    opt = AdamWLRGEMA(2e-3, weight_decay_rate=0.02, exclude_from_weight_decay=["Norm"],
                      lr_schedule={10: 1, 20: 0.5}, grad_accum_steps=2, ema_momentum=0.99,
                      bias_correction=False)
    config = opt.get_config()
    assert config["lr_schedule"] == {10: 1.0, 20: 0.5} and config["grad_accum_steps"] == 2
    clone = AdamWLRGEMA.from_config(config)
    assert clone.get_config() == config
    # JSON round trip (schedule keys become strings) through Keras' (de)serializer
    import json
    restored = keras.optimizers.deserialize(json.loads(json.dumps(keras.optimizers.serialize(opt))))
    assert type(restored) is AdamWLRGEMA and restored.get_config() == config
    # inside a saved model, with its optimizer state
    model = tiny_classifier()
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = tiny_data(32)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is AdamWLRGEMA
    assert loaded.optimizer.get_config() == config
    for a, b in zip(loaded.optimizer.variables, opt.variables):
        np.testing.assert_array_equal(np32(a), np32(b))
    for cls, kw in [(O.Adam, {}), (O.AdaFactor, {"learning_rate": None, "beta1": 0.9}),
                    (O.Lion, {})]:
        o = cls(**kw)
        back = keras.optimizers.deserialize(keras.optimizers.serialize(o))
        assert type(back) is cls and back.get_config() == o.get_config()


# ----------------------------------------------------------------- errors
def test_bad_arguments_name_expected_and_found():
    AdamW = O.extend_with_weight_decay(O.Adam, "AdamW")
    with pytest.raises(ValueError, match=r"exclude_from_weight_decay: expected a list .* found 3"):
        AdamW(exclude_from_weight_decay=3)
    with pytest.raises(ValueError,
                       match=r"weight_decay_rate: expected a number in \[0.0, inf\), found -1"):
        AdamW(weight_decay_rate=-1)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        AdamW(exclude_from_weight_decay=["("])
    with pytest.raises(TypeError,
                       match="expected an optimizer class .* found <bert4keras3.optimizers.Adam"):
        O.extend_with_weight_decay(O.Adam(), "AdamW")
    with pytest.raises(ValueError, match="expected name to be a Python identifier"):
        O.extend_with_weight_decay(O.Adam, "Adam W")
    AdamLR = O.extend_with_piecewise_linear_lr(O.Adam)
    with pytest.raises(ValueError,
                       match=r"lr_schedule: expected a non-empty \{step: multiplier\} dict"):
        AdamLR(lr_schedule=[1, 2])
    AdamG = O.extend_with_gradient_accumulation(O.Adam)
    with pytest.raises(ValueError, match="grad_accum_steps: expected a positive int, found 0"):
        AdamG(grad_accum_steps=0)
    with pytest.raises(ValueError, match="disagree"):
        AdamG(grad_accum_steps=2, gradient_accumulation_steps=4)
    AdamLA = O.extend_with_lookahead(O.Adam)
    with pytest.raises(ValueError,
                       match=r"slow_step_size: expected a number in \(0.0, 1.0\], found 2"):
        AdamLA(slow_step_size=2)
    AdamEMA = O.extend_with_exponential_moving_average(O.Adam)
    with pytest.raises(ValueError, match=r"ema_momentum: expected a number in \[0.0, 1.0\]"):
        AdamEMA(ema_momentum=1.5)
    with pytest.raises(ValueError, match="ema_overwrite_frequency: expected None"):
        AdamEMA(ema_overwrite_frequency=3)
    opt = AdamEMA()
    with pytest.raises(ValueError, match="expected an optimizer that has made a training step"):
        opt.apply_ema_weights()
    opt.build([keras.Variable(np.zeros(2, "float32"))])
    with pytest.raises(ValueError, match="expected at least one training step"):
        opt.apply_ema_weights()
    with pytest.raises(ValueError, match="reset_old_weights: expected saved weights"):
        opt.reset_old_weights()
    AdamP = O.extend_with_parameter_wise_lr(O.Adam)
    with pytest.raises(ValueError, match="paramwise_lr_schedule: expected a .* found"):
        AdamP(paramwise_lr_schedule={"Embedding": "x"})
    with pytest.raises(ValueError, match="Adam: expected learning_rate to be a number"):
        O.Adam(learning_rate="fast")
    assert O.Adam(learning_rate=1).get_config()["learning_rate"] == 1.0
