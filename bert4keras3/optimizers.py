"""bert4keras' optimizer names on top of what Keras 3 already provides.

A bert4keras training script keeps its optimizer lines::

    from bert4keras3.optimizers import Adam, extend_with_weight_decay
    from bert4keras3.optimizers import extend_with_piecewise_linear_lr
    AdamW = extend_with_weight_decay(Adam, "AdamW")
    AdamWLR = extend_with_piecewise_linear_lr(AdamW, "AdamWLR")
    optimizer = AdamWLR(learning_rate=1e-5, weight_decay_rate=0.01,
                        exclude_from_weight_decay=["Norm", "bias"],
                        lr_schedule={1000: 1, 2000: 0.1})

What is here
------------
* Optimizers: :class:`Adam` (bert4keras' update rule: ``epsilon`` added to the
  bias-corrected ``sqrt(v)``, ``bias_correction`` switch), :class:`AdaFactor`
  (bert4keras' rule, written once in ``keras.ops``), :class:`Lion` (Keras' Lion with
  bert4keras' defaults).
* Wrappers ``extend_with_*(BaseOptimizer, name=None)``: each takes an optimizer class
  (any Keras 3 optimizer class, or a class returned by another wrapper) and returns a
  new class with bert4keras' extra constructor arguments. Wrappers compose; the
  wrapper applied last sees the update produced by everything inside it, exactly as
  bert4keras' ``K.update`` hooks nested.
* What Keras 3 already has is used, not re-implemented: gradient accumulation is
  Keras' ``gradient_accumulation_steps``, the moving average lives in Keras'
  ``use_ema`` slots, the learning rate goes through Keras' ``learning_rate`` (a float
  or any ``LearningRateSchedule``). Written here once, in ``keras.ops`` for every
  backend: layer adaptation, lookahead, lazy updates, parameter-wise learning rates,
  bert4keras' in-update weight decay and EMA weight swapping for evaluation.
* Helpers for plain Keras optimizers: :func:`piecewise_linear` /
  :class:`PiecewiseLinear` (a serializable learning-rate schedule) and
  :func:`exclude_from_weight_decay` (keep norms and biases out of ``keras.optimizers.AdamW``).

Counting steps
--------------
``lr_schedule`` keys count calls to ``apply_gradients`` (training batches), as in
bert4keras and as Keras' own learning-rate schedules do. Everything that counts
updates (Adam's bias correction, AdaFactor's ``beta2``, lookahead) counts real
updates, so with gradient accumulation ``k`` accumulated batches give exactly the
large-batch step.

Variable names
--------------
Patterns (``exclude_from_weight_decay``, ``exclude_from_layer_adaptation``,
``include_in_lazy_optimization``, ``exclude_from_parameter_scale``) are regular
expressions searched (``re.search``, case-sensitive, as bert4keras) in the variable's
Keras path, e.g. ``"Transformer-0-FeedForward-Norm/gamma"``; ``paramwise_lr_schedule``
keys are plain substrings of that path.
"""

import gc
import numbers
import re

import numpy as np
import keras
from keras import ops

from bert4keras3 import backend as B

__all__ = [
    "PiecewiseLinear",
    "piecewise_linear",
    "exclude_from_weight_decay",
    "Adam",
    "AdaFactor",
    "AdaFactorBase",
    "AdaFactorV1",
    "AdaFactorV2",
    "Lion",
    "LionV2",
    "extend_with_weight_decay",
    "extend_with_weight_decay_v2",
    "extend_with_layer_adaptation",
    "extend_with_layer_adaptation_v2",
    "extend_with_piecewise_linear_lr",
    "extend_with_piecewise_linear_lr_v2",
    "extend_with_gradient_accumulation",
    "extend_with_gradient_accumulation_v2",
    "extend_with_lookahead",
    "extend_with_lookahead_v2",
    "extend_with_lazy_optimization",
    "extend_with_lazy_optimization_v2",
    "extend_with_exponential_moving_average",
    "extend_with_exponential_moving_average_v2",
    "extend_with_parameter_wise_lr",
    "extend_with_parameter_wise_lr_v2",
]


# =========================================================================== schedules
def _normalise_schedule(schedule, from_zero):
    if isinstance(schedule, dict):
        items = list(schedule.items())
    else:
        items = [tuple(x) for x in schedule]
    if not items:
        raise ValueError("piecewise_linear: expected a non-empty {step: value} schedule, found none.")
    try:
        items = sorted((int(k), float(v)) for k, v in items)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"piecewise_linear: expected {{int step: float value}}, found {schedule!r}."
        ) from e
    steps = [k for k, _ in items]
    if len(set(steps)) != len(steps) or steps[0] < 0:
        raise ValueError(f"piecewise_linear: steps must be distinct and >= 0, found {steps}.")
    if from_zero and steps[0] != 0:
        items = [(0, 0.0)] + items
    return items


@keras.saving.register_keras_serializable(package="bert4keras3")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """Piecewise-linear learning rate through ``{step: value}`` points (bert4keras).

    Between two consecutive steps the value is interpolated linearly; after the last
    step it stays at the last value. With ``from_zero=True`` (default) and no entry at
    step 0, the schedule starts from ``(0, 0.0)``, i.e. ``{1000: 1e-4}`` is a linear
    warm-up to 1e-4 over 1000 steps.

    Args:
        schedule: ``{step: value}`` dict (or list of pairs).
        from_zero: prepend ``(0, 0.0)`` when step 0 is missing.
        multiplier: every value is multiplied by it (bert4keras schedules were often
            written as multipliers of a base learning rate).
        gradient_accumulation_steps: Keras calls schedules with the number of
            micro-steps; with ``k`` here the schedule is evaluated at ``step // k``, so
            its keys count real updates of an optimizer built with
            ``gradient_accumulation_steps=k``.
    """

    def __init__(self, schedule, from_zero=True, multiplier=1.0, gradient_accumulation_steps=1):
        if not isinstance(gradient_accumulation_steps, int) or gradient_accumulation_steps < 1:
            raise ValueError(
                "gradient_accumulation_steps must be a positive int, found "
                f"{gradient_accumulation_steps!r}."
            )
        self.points = _normalise_schedule(schedule, from_zero)
        self.from_zero = bool(from_zero)
        self.multiplier = float(multiplier)
        self.gradient_accumulation_steps = gradient_accumulation_steps

    def __call__(self, step):
        step = ops.cast(step, "int32") // self.gradient_accumulation_steps
        return B.piecewise_linear(step, self.points, from_zero=False) * self.multiplier

    def get_config(self):
        return {
            "schedule": [list(p) for p in self.points],
            "from_zero": self.from_zero,
            "multiplier": self.multiplier,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
        }


def piecewise_linear(t_or_schedule, schedule=None, from_zero=True):
    """bert4keras' ``piecewise_linear``, in two forms.

    * ``piecewise_linear(t, {step: value})`` returns the interpolated value at step ``t``
      (a float32 tensor), exactly like bert4keras.
    * ``piecewise_linear({step: value}, **kwargs)`` returns a serializable
      :class:`PiecewiseLinear` learning-rate schedule for a Keras optimizer.

    Example:
        >>> opt = keras.optimizers.AdamW(piecewise_linear({100: 1e-3, 1000: 1e-4}))
    """
    if schedule is None:
        if not isinstance(t_or_schedule, (dict, list, tuple)):
            raise ValueError(
                "piecewise_linear: expected a {step: value} schedule (or (t, schedule)), "
                f"found {t_or_schedule!r}."
            )
        return PiecewiseLinear(t_or_schedule, from_zero=from_zero)
    return B.piecewise_linear(t_or_schedule, _normalise_schedule(schedule, from_zero),
                              from_zero=False)


def exclude_from_weight_decay(optimizer, model_or_variables, patterns=("norm", "bias")):
    """Keep variables whose path matches any of ``patterns`` out of weight decay.

    For Keras' own ``weight_decay`` (``keras.optimizers.AdamW`` and friends). Keras'
    ``optimizer.exclude_from_weight_decay(var_names=...)`` only looks at the variable's
    short name (``gamma``, ``bias``), so layer names such as ``...-Norm`` or
    ``layer_normalization`` cannot be matched; this helper matches the full variable
    path (``"Transformer-0-FeedForward-Norm/gamma"``), case-insensitively.
    (Classes made by :func:`extend_with_weight_decay` take bert4keras'
    ``exclude_from_weight_decay=[...]`` argument instead.)

    Args:
        optimizer: a Keras optimizer (not built yet), e.g. ``keras.optimizers.AdamW``.
        model_or_variables: a model / layer (its trainable variables are used) or a list
            of variables.
        patterns: regular expressions searched in each variable path.

    Replaces earlier exclusions of ``optimizer``. Returns the optimizer (so it can be
    written in one line).
    """
    if getattr(optimizer, "built", False):
        raise ValueError(
            "exclude_from_weight_decay must be called before the optimizer is built "
            "(before the first training step)."
        )
    if isinstance(patterns, str):
        patterns = (patterns,)
    variables = getattr(model_or_variables, "trainable_variables", model_or_variables)
    regex = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)
    excluded = [v for v in variables if regex.search(v.path)]
    optimizer.exclude_from_weight_decay(var_list=excluded)
    return optimizer


# =========================================================================== helpers
def _read(variable):
    """Current value of a variable inside ``update_step`` (Keras or backend variable)."""
    return ops.convert_to_tensor(variable)


def _snapshot(variable):
    """A copy of the current value that later in-place assignments cannot change."""
    return ops.copy(ops.convert_to_tensor(variable))


def _rms(x):
    return ops.sqrt(ops.mean(ops.square(x)))


def _norm(x):
    return ops.sqrt(ops.sum(ops.square(x)))


def _path(variable):
    return getattr(variable, "path", None) or variable.name


def _as_learning_rate(value, owner):
    """bert4keras accepted any number; Keras wants a Python float (or a schedule)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if value is None or callable(value):
        return value
    raise ValueError(
        f"{owner}: expected learning_rate to be a number, a "
        f"keras.optimizers.schedules.LearningRateSchedule or a callable, found {value!r}."
    )


def _patterns(value, argument):
    """bert4keras' list of regular expressions (a single string is one pattern)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set)) or not all(isinstance(p, str) for p in value):
        raise ValueError(
            f"{argument}: expected a list of regular-expression strings "
            f"(e.g. ['Norm', 'bias']), found {value!r}."
        )
    for p in value:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"{argument}: {p!r} is not a valid regular expression ({e}).") from e
    return list(value)


def _matches(path, patterns):
    return any(re.search(p, path) for p in patterns)


def _number(value, argument, low=None, high=None, low_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{argument}: expected a number, found {value!r}.")
    value = float(value)
    bad = (low is not None and (value <= low if low_open else value < low)) or (
        high is not None and value > high
    )
    if bad:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}, "
        hi = "inf)" if high is None else f"{high}]"
        raise ValueError(f"{argument}: expected a number in {lo}{hi}, found {value!r}.")
    return value


def _positive_int(value, argument):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument}: expected a positive int, found {value!r}.")
    return int(value)


def _set_plain(obj, name, value):
    """Set bookkeeping that Keras' / TensorFlow's attribute trackers should not wrap."""
    object.__setattr__(obj, name, value)


# =========================================================================== optimizers
@keras.saving.register_keras_serializable(package="bert4keras3")
class Adam(keras.optimizers.Adam):
    """bert4keras' Adam.

    Differs from ``keras.optimizers.Adam`` in two ways (so that bert4keras
    hyper-parameters give bert4keras results): ``epsilon`` is added to the
    bias-corrected ``sqrt(v_hat)`` (Keras adds its "epsilon hat" to the uncorrected
    ``sqrt(v)``) and defaults to ``1e-6``; ``bias_correction=False`` drops the
    ``1 - beta**t`` corrections. Per variable, with ``t`` the update count::

        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g**2
        m_hat, v_hat = m / (1 - beta_1**t), v / (1 - beta_2**t)   # bias_correction
        w = w - lr * m_hat / (sqrt(v_hat) + epsilon)

    Every Keras optimizer argument (``weight_decay``, ``clipnorm``,
    ``gradient_accumulation_steps``, ``amsgrad``, ...) is accepted too.

    Example:
        >>> opt = Adam(learning_rate=2e-5)
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 bias_correction=True, **kwargs):
        super().__init__(
            learning_rate=_as_learning_rate(learning_rate, "Adam"), beta_1=beta_1,
            beta_2=beta_2, epsilon=epsilon, **kwargs,
        )
        self.bias_correction = bool(bias_correction)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        g = ops.cast(B.dense_gradient(gradient, variable), dtype)
        lr = ops.cast(learning_rate, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        m_t = beta_1 * m + (1.0 - beta_1) * g
        v_t = beta_2 * v + (1.0 - beta_2) * ops.square(g)
        self.assign(m, m_t)
        self.assign(v, v_t)
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            v_t = ops.maximum(v_hat, v_t)
            self.assign(v_hat, v_t)
        if self.bias_correction:
            t = ops.cast(self.iterations + 1, dtype)
            m_t = m_t / (1.0 - ops.power(beta_1, t))
            v_t = v_t / (1.0 - ops.power(beta_2, t))
        self.assign_sub(variable, lr * m_t / (ops.sqrt(v_t) + ops.cast(self.epsilon, dtype)))

    def get_config(self):
        config = super().get_config()
        config["bias_correction"] = self.bias_correction
        return config


@keras.saving.register_keras_serializable(package="bert4keras3")
class AdaFactor(keras.optimizers.Optimizer):
    """bert4keras' AdaFactor (Shazeer & Stern, 2018; Mesh TensorFlow's variant).

    Written here in ``keras.ops`` rather than built on ``keras.optimizers.Adafactor``,
    whose rule differs from bert4keras': Keras always factors the last two axes (here
    the two largest, and only when the second largest has at least
    ``min_dim_size_to_factor`` entries), has no first moment (``beta1``), no
    ``multiply_by_parameter_scale`` switch, no ``exclude_from_parameter_scale`` and no
    ``learning_rate=None`` relative step; it also omits ``epsilon1`` inside the square root.

    Per variable, with ``t`` the update count::

        beta2_t = beta2 if beta2 is not None else 1 - t**-0.8
        g2 = g**2 + epsilon1
        v  = beta2_t * v + (1 - beta2_t) * g2            # or factored: row and column
        u  = g / sqrt(v + epsilon1)                       #   means, v = vr * vc / mean(vr)
        u  = u / max(1, rms(u) / clipping_threshold)      # if clipping_threshold
        u  = m = beta1 * m + (1 - beta1) * u              # if beta1 > 0
        u  = u * max(rms(w), epsilon2)                    # if multiply_by_parameter_scale
        w  = w - lr * u

    ``learning_rate=None``: ``lr = min(1 / sqrt(t), 0.01)``, times 0.05 without
    parameter scaling. Every Keras optimizer argument (``clipnorm``,
    ``gradient_accumulation_steps``, ...) is accepted too.

    Example:
        >>> opt = AdaFactor(learning_rate=1e-3, beta1=0.9)
    """

    def __init__(self, learning_rate=1e-3, beta1=0.0, beta2=None, epsilon1=1e-30,
                 epsilon2=1e-3, multiply_by_parameter_scale=True, clipping_threshold=1.0,
                 min_dim_size_to_factor=128, exclude_from_parameter_scale=None, **kwargs):
        learning_rate = _as_learning_rate(learning_rate, "AdaFactor")
        super().__init__(learning_rate=0.01 if learning_rate is None else learning_rate,
                         **kwargs)
        self.relative_step = learning_rate is None
        self.beta1 = _number(beta1, "AdaFactor beta1", 0.0, 1.0)
        self.beta2 = None if beta2 is None else _number(beta2, "AdaFactor beta2", 0.0, 1.0)
        self.epsilon1 = _number(epsilon1, "AdaFactor epsilon1", 0.0)
        self.epsilon2 = _number(epsilon2, "AdaFactor epsilon2", 0.0)
        self.multiply_by_parameter_scale = bool(multiply_by_parameter_scale)
        self.clipping_threshold = (
            None if clipping_threshold is None
            else _number(clipping_threshold, "AdaFactor clipping_threshold", 0.0, low_open=True)
        )
        self.min_dim_size_to_factor = _positive_int(
            min_dim_size_to_factor, "AdaFactor min_dim_size_to_factor")
        _set_plain(self, "exclude_from_parameter_scale", _patterns(
            exclude_from_parameter_scale, "AdaFactor exclude_from_parameter_scale"))

    def factored_shape(self, shape):
        """``(vr_shape, axis1, vc_shape, axis2)`` for a factored second moment, else None.

        ``axis1`` is the largest axis (averaged out of ``vr``), ``axis2`` the second
        largest (averaged out of ``vc``), as bert4keras.
        """
        if len(shape) < 2:
            return None
        shape = np.array(shape)
        indices = shape.argpartition(-2)
        if shape[indices[-2]] < self.min_dim_size_to_factor:
            return None
        shape1, shape2 = shape.copy(), shape.copy()
        shape1[indices[-1]] = 1
        shape2[indices[-2]] = 1
        return (tuple(int(s) for s in shape1), int(indices[-1]),
                tuple(int(s) for s in shape2), int(indices[-2]))

    def _do_parameter_scale(self, variable):
        """bert4keras' hook (a Keras variable, decided once at build)."""
        return self.multiply_by_parameter_scale and not _matches(
            _path(variable), self.exclude_from_parameter_scale)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v, self._vr, self._vc = [], [], [], []
        factors, scales = [], []
        for var in var_list:
            factored = self.factored_shape(tuple(var.shape))
            factors.append(None if factored is None else (factored[1], factored[3]))
            scales.append(self._do_parameter_scale(var))
            self._m.append(self.add_variable_from_reference(var, "momentum")
                           if self.beta1 > 0 else None)
            if factored is None:
                self._v.append(self.add_variable_from_reference(var, "velocity"))
                self._vr.append(None)
                self._vc.append(None)
            else:
                name = _path(var).replace("/", "_")
                self._v.append(None)
                self._vr.append(self.add_variable(factored[0], dtype=var.dtype, name=f"{name}_vr"))
                self._vc.append(self.add_variable(factored[2], dtype=var.dtype, name=f"{name}_vc"))
        _set_plain(self, "_b4k_factors", tuple(factors))
        _set_plain(self, "_b4k_scales", tuple(scales))

    def _get_current_learning_rate(self):
        if not self.relative_step:
            return super()._get_current_learning_rate()
        t = ops.cast(self.iterations + 1, "float32")
        lr = ops.minimum(1.0 / ops.sqrt(t), 0.01)
        return lr if self.multiply_by_parameter_scale else lr * 0.05

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        g = ops.cast(B.dense_gradient(gradient, variable), dtype)
        lr = ops.cast(learning_rate, dtype)
        t = ops.cast(self.iterations + 1, dtype)
        beta2 = 1.0 - ops.power(t, -0.8) if self.beta2 is None else ops.cast(self.beta2, dtype)
        g2 = ops.square(g) + self.epsilon1
        factors = self._b4k_factors[index]
        if factors is None:
            v = self._v[index]
            v_t = beta2 * v + (1.0 - beta2) * g2
            self.assign(v, v_t)
        else:
            axis1, axis2 = factors
            vr, vc = self._vr[index], self._vc[index]
            vr_t = beta2 * vr + (1.0 - beta2) * ops.mean(g2, axis=axis1, keepdims=True)
            vc_t = beta2 * vc + (1.0 - beta2) * ops.mean(g2, axis=axis2, keepdims=True)
            self.assign(vr, vr_t)
            self.assign(vc, vc_t)
            v_t = vr_t * vc_t / ops.mean(vr_t, axis=axis2, keepdims=True)
        u = g / ops.sqrt(v_t + self.epsilon1)
        if self.clipping_threshold is not None:
            u = u / ops.maximum(1.0, _rms(u) / self.clipping_threshold)
        if self.beta1 > 0:
            m = self._m[index]
            u = self.beta1 * m + (1.0 - self.beta1) * u
            self.assign(m, u)
        w = _read(variable)
        if self._b4k_scales[index]:
            u = u * ops.maximum(_rms(w), ops.cast(self.epsilon2, dtype))
        self.assign(variable, w - lr * u)

    def get_config(self):
        config = super().get_config()
        config.update(
            learning_rate=None if self.relative_step else config["learning_rate"],
            beta1=self.beta1, beta2=self.beta2, epsilon1=self.epsilon1,
            epsilon2=self.epsilon2,
            multiply_by_parameter_scale=self.multiply_by_parameter_scale,
            clipping_threshold=self.clipping_threshold,
            min_dim_size_to_factor=self.min_dim_size_to_factor,
            exclude_from_parameter_scale=list(self.exclude_from_parameter_scale),
        )
        return config


@keras.saving.register_keras_serializable(package="bert4keras3")
class Lion(keras.optimizers.Lion):
    """Lion (Chen et al., 2023) with bert4keras' defaults.

    The update rule is Keras' own (``keras.optimizers.Lion``, the same as bert4keras');
    only the defaults differ: ``learning_rate=3e-4, beta_1=0.95, beta_2=0.98``.
    """

    def __init__(self, learning_rate=3e-4, beta_1=0.95, beta_2=0.98, **kwargs):
        super().__init__(learning_rate=_as_learning_rate(learning_rate, "Lion"),
                         beta_1=beta_1, beta_2=beta_2, **kwargs)


#: bert4keras' names for its TF1-Keras / tf.keras implementations: one class here.
AdaFactorBase = AdaFactorV1 = AdaFactorV2 = AdaFactor
LionV2 = Lion


# =========================================================================== wrappers
def _wrapper(suffix):
    """Decorator for ``make(BaseOptimizer) -> class``: checks the base, names and
    registers the new class (``"bert4keras3>{name}"``) so that saved models reload."""

    def decorator(make):
        def extend(BaseOptimizer, name=None):
            if not (isinstance(BaseOptimizer, type)
                    and issubclass(BaseOptimizer, keras.optimizers.Optimizer)):
                raise TypeError(
                    f"{make.__name__}: expected an optimizer class (a subclass of "
                    f"keras.optimizers.Optimizer, e.g. Adam), found {BaseOptimizer!r}."
                )
            if name is not None and not (isinstance(name, str) and name.isidentifier()):
                raise ValueError(
                    f"{make.__name__}: expected name to be a Python identifier such as "
                    f"'AdamW', found {name!r}."
                )
            cls = make(BaseOptimizer)
            cls.__name__ = cls.__qualname__ = name or f"{BaseOptimizer.__name__}{suffix}"
            cls.__module__ = __name__
            cls.__doc__ = (cls.__doc__ or "").replace("{base}", BaseOptimizer.__name__)
            keras.saving.register_keras_serializable(package="bert4keras3")(cls)
            return cls

        extend.__name__ = extend.__qualname__ = make.__name__
        extend.__doc__ = make.__doc__
        return extend

    return decorator


@_wrapper("WithWeightDecay")
def extend_with_weight_decay(BaseOptimizer):
    """New optimizer class with bert4keras' decoupled weight decay (AdamW).

    New arguments: ``weight_decay_rate=0.01``, ``exclude_from_weight_decay=[]``
    (regular expressions searched in variable paths, e.g. ``['Norm', 'bias']``).
    Rule: ``w_new = w_new - lr * weight_decay_rate * w`` with ``w`` the value before
    this update and ``lr`` the current (scheduled) learning rate.

    The decay is applied inside the per-variable update, where bert4keras applied it,
    not through Keras' ``weight_decay`` (which Keras applies before the update): this
    way the wrappers applied after this one (layer adaptation, parameter-wise lr, lazy
    updates) see the decay as part of the update, as in bert4keras' LAMB
    (``extend_with_layer_adaptation(extend_with_weight_decay(Adam))``).

    Example:
        >>> AdamW = extend_with_weight_decay(Adam, "AdamW")
        >>> opt = AdamW(1e-5, weight_decay_rate=0.01, exclude_from_weight_decay=["Norm", "bias"])
    """

    class NewOptimizer(BaseOptimizer):
        """{base} with bert4keras' weight decay (``weight_decay_rate``,
        ``exclude_from_weight_decay``)."""

        def __init__(self, *args, weight_decay_rate=0.01, exclude_from_weight_decay=None,
                     **kwargs):
            super().__init__(*args, **kwargs)
            self.weight_decay_rate = _number(weight_decay_rate, "weight_decay_rate", 0.0)
            # bert4keras' attribute; it hides Keras' exclude_from_weight_decay() method,
            # which only concerns Keras' own weight_decay argument.
            _set_plain(self, "exclude_from_weight_decay", _patterns(
                exclude_from_weight_decay, "exclude_from_weight_decay"))

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            _set_plain(self, "_b4k_decay", tuple(self._do_weight_decay(v) for v in var_list))

        def _do_weight_decay(self, variable):
            """bert4keras' hook (a Keras variable, decided once at build)."""
            return not _matches(_path(variable), self.exclude_from_weight_decay)

        def update_step(self, gradient, variable, learning_rate):
            index = self._get_variable_index(variable)
            if not (self.weight_decay_rate and self._b4k_decay[index]):
                return super().update_step(gradient, variable, learning_rate)
            old = _snapshot(variable)
            super().update_step(gradient, variable, learning_rate)
            rate = ops.cast(learning_rate, variable.dtype) * self.weight_decay_rate
            self.assign(variable, _read(variable) - rate * old)

        def get_config(self):
            config = super().get_config()
            config.update(weight_decay_rate=self.weight_decay_rate,
                          exclude_from_weight_decay=list(self.exclude_from_weight_decay))
            return config

    return NewOptimizer


@_wrapper("WithLayerAdaptation")
def extend_with_layer_adaptation(BaseOptimizer):
    """New optimizer class with a layer-wise trust ratio (LAMB, You et al., 2019).

    New argument: ``exclude_from_layer_adaptation=[]`` (regular expressions).
    Rule: with ``dw`` the update produced by the wrapped optimizer,
    ``ratio = ||w|| / ||dw / lr||`` (1 when either norm is 0; ``lr`` floored at
    ``keras.config.epsilon()``) and ``w_new = w + dw * ratio``.

    Example:
        >>> LAMB = extend_with_layer_adaptation(extend_with_weight_decay(Adam), "LAMB")
    """

    class NewOptimizer(BaseOptimizer):
        """{base} with a LAMB trust ratio (``exclude_from_layer_adaptation``)."""

        def __init__(self, *args, exclude_from_layer_adaptation=None, **kwargs):
            super().__init__(*args, **kwargs)
            _set_plain(self, "exclude_from_layer_adaptation", _patterns(
                exclude_from_layer_adaptation, "exclude_from_layer_adaptation"))

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            _set_plain(self, "_b4k_adapt", tuple(self._do_layer_adaptation(v) for v in var_list))

        def _do_layer_adaptation(self, variable):
            """bert4keras' hook (a Keras variable, decided once at build)."""
            return not _matches(_path(variable), self.exclude_from_layer_adaptation)

        def update_step(self, gradient, variable, learning_rate):
            if not self._b4k_adapt[self._get_variable_index(variable)]:
                return super().update_step(gradient, variable, learning_rate)
            old = _snapshot(variable)
            super().update_step(gradient, variable, learning_rate)
            dtype = variable.dtype
            dx = _read(variable) - old
            lr = ops.maximum(ops.cast(learning_rate, dtype), keras.config.epsilon())
            x_norm, g_norm = _norm(old), _norm(dx / lr)
            ratio = ops.where(
                (x_norm > 0) & (g_norm > 0), x_norm / ops.where(g_norm > 0, g_norm, 1.0), 1.0)
            self.assign(variable, old + dx * ratio)

        def get_config(self):
            config = super().get_config()
            config["exclude_from_layer_adaptation"] = list(self.exclude_from_layer_adaptation)
            return config

    return NewOptimizer


@_wrapper("WithPiecewiseLinearLR")
def extend_with_piecewise_linear_lr(BaseOptimizer):
    """New optimizer class whose learning rate is multiplied by a piecewise-linear schedule.

    New argument: ``lr_schedule={0: 1}``, ``{step: multiplier}``; ``{1000: 1, 2000: 0.1}``
    warms up linearly from 0 to 100% over steps 0..1000, decays to 10% at 2000 and
    stays there. Steps count ``apply_gradients`` calls (training batches), like
    bert4keras and like Keras' learning-rate schedules. The multiplier scales the
    learning rate the optimizer sees (so also bert4keras weight decay), on top of a
    float or ``LearningRateSchedule`` ``learning_rate``.

    Example:
        >>> AdamLR = extend_with_piecewise_linear_lr(Adam, "AdamLR")
        >>> opt = AdamLR(1e-4, lr_schedule={1000: 1, 2000: 0.1})
    """

    class NewOptimizer(BaseOptimizer):
        """{base} with a piecewise-linear learning-rate multiplier (``lr_schedule``)."""

        def __init__(self, *args, lr_schedule=None, **kwargs):
            super().__init__(*args, **kwargs)
            if lr_schedule is None:
                lr_schedule = {0: 1}
            if not isinstance(lr_schedule, dict) or not lr_schedule:
                raise ValueError(
                    "lr_schedule: expected a non-empty {step: multiplier} dict such as "
                    f"{{1000: 1, 2000: 0.1}}, found {lr_schedule!r}."
                )
            points = _normalise_schedule(lr_schedule, from_zero=True)
            _set_plain(self, "lr_schedule", {int(k): float(v) for k, v in lr_schedule.items()})
            _set_plain(self, "_b4k_lr_points", tuple(points))

        def _get_current_learning_rate(self):
            lr = super()._get_current_learning_rate()
            return lr * B.piecewise_linear(self._iterations, self._b4k_lr_points, from_zero=False)

        def get_config(self):
            config = super().get_config()
            config["lr_schedule"] = {int(k): v for k, v in self.lr_schedule.items()}
            return config

    return NewOptimizer


@_wrapper("WithGradientAccumulation")
def extend_with_gradient_accumulation(BaseOptimizer):
    """New optimizer class that averages gradients over ``grad_accum_steps`` batches.

    New argument: ``grad_accum_steps=2``. This is Keras' own
    ``gradient_accumulation_steps``: the variables change once every
    ``grad_accum_steps`` calls, with the mean gradient, and the update counter used by
    the update rule (Adam's bias correction, ...) counts those updates, so the result
    equals one step on the large batch. (bert4keras applied each accumulated gradient
    one call late and counted calls in Adam's bias correction; both are not kept.)

    Example:
        >>> AdamG = extend_with_gradient_accumulation(Adam, "AdamG")
        >>> opt = AdamG(1e-5, grad_accum_steps=4)
    """

    class NewOptimizer(BaseOptimizer):
        """{base} with gradient accumulation (``grad_accum_steps``)."""

        def __init__(self, *args, grad_accum_steps=2, **kwargs):
            grad_accum_steps = _positive_int(grad_accum_steps, "grad_accum_steps")
            keras_steps = kwargs.pop("gradient_accumulation_steps", None)
            if keras_steps not in (None, grad_accum_steps):
                raise ValueError(
                    "grad_accum_steps and gradient_accumulation_steps disagree: expected "
                    f"one value, found {grad_accum_steps} and {keras_steps}."
                )
            keras_steps = grad_accum_steps if grad_accum_steps > 1 else None
            super().__init__(*args, gradient_accumulation_steps=keras_steps, **kwargs)
            self.grad_accum_steps = grad_accum_steps

        def get_config(self):
            config = super().get_config()
            config.pop("gradient_accumulation_steps", None)
            config["grad_accum_steps"] = self.grad_accum_steps
            return config

    return NewOptimizer


@_wrapper("WithLookahead")
def extend_with_lookahead(BaseOptimizer):
    """New optimizer class with Lookahead (Zhang et al., 2019).

    New arguments: ``steps_per_slow_update=5`` (k), ``slow_step_size=0.5`` (alpha).
    Slow weights start from the weights before the first update; after every k-th
    update ``slow = slow + alpha * (w - slow)`` and ``w = slow``. (bert4keras started
    the slow weights at zero, which scaled every weight by alpha at the first step, and
    synchronised after updates 1, k+1, 2k+1, ...; here the paper's schedule is used.)

    Example:
        >>> AdamLA = extend_with_lookahead(Adam, "AdamLA")
        >>> opt = AdamLA(1e-3, steps_per_slow_update=5, slow_step_size=0.5)
    """

    class NewOptimizer(BaseOptimizer):
        """{base} with Lookahead (``steps_per_slow_update``, ``slow_step_size``)."""

        def __init__(self, *args, steps_per_slow_update=5, slow_step_size=0.5, **kwargs):
            super().__init__(*args, **kwargs)
            self.steps_per_slow_update = _positive_int(
                steps_per_slow_update, "steps_per_slow_update")
            self.slow_step_size = _number(slow_step_size, "slow_step_size", 0.0, 1.0,
                                          low_open=True)

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            self._slow_weights = [
                self.add_variable_from_reference(v, "slow_weight") for v in var_list]

        def update_step(self, gradient, variable, learning_rate):
            old = _snapshot(variable)
            super().update_step(gradient, variable, learning_rate)
            slow_var = self._slow_weights[self._get_variable_index(variable)]
            step = self.iterations
            slow = ops.where(step == 0, old, _read(slow_var))
            new = _read(variable)
            synced = slow + self.slow_step_size * (new - slow)
            sync = (step + 1) % self.steps_per_slow_update == 0
            self.assign(slow_var, ops.where(sync, synced, slow))
            self.assign(variable, ops.where(sync, synced, new))

        def get_config(self):
            config = super().get_config()
            config.update(steps_per_slow_update=self.steps_per_slow_update,
                          slow_step_size=self.slow_step_size)
            return config

    return NewOptimizer


@_wrapper("WithLazyOptimization")
def extend_with_lazy_optimization(BaseOptimizer):
    """New optimizer class with lazy updates of matching variables (embeddings).

    New argument: ``include_in_lazy_optimization=[]`` (regular expressions). For a
    matching variable, a row (index over all but the last axis) whose gradient is all
    zero keeps its value and its optimizer slots (Adam's moments, ...): tokens absent
    from a batch are left alone. Slots shaped like the variable are kept; factored
    slots (AdaFactor's row/column statistics) cannot be split by row and still update.
    (bert4keras kept only the weights; its moments kept decaying.)

    Example:
        >>> AdamLazy = extend_with_lazy_optimization(Adam, "AdamLazy")
        >>> opt = AdamLazy(1e-3, include_in_lazy_optimization=["Embedding-Token"])
    """

    class NewOptimizer(BaseOptimizer):
        """{base} with lazy row updates (``include_in_lazy_optimization``)."""

        def __init__(self, *args, include_in_lazy_optimization=None, **kwargs):
            super().__init__(*args, **kwargs)
            _set_plain(self, "include_in_lazy_optimization", _patterns(
                include_in_lazy_optimization, "include_in_lazy_optimization"))
            _set_plain(self, "_b4k_slots", {})

        def add_variable_from_reference(self, reference_variable, name=None,
                                        initializer="zeros"):
            slot = super().add_variable_from_reference(reference_variable, name, initializer)
            # Keras' EMA and accumulators are not updated in update_step.
            if name not in ("average", "gradient_accumulator"):
                self._b4k_slots.setdefault(self._var_key(reference_variable), []).append(slot)
            return slot

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            _set_plain(self, "_b4k_lazy", tuple(self._do_lazy_optimization(v) for v in var_list))

        def _do_lazy_optimization(self, variable):
            """bert4keras' hook (a Keras variable, decided once at build)."""
            return _matches(_path(variable), self.include_in_lazy_optimization)

        def update_step(self, gradient, variable, learning_rate):
            if not self._b4k_lazy[self._get_variable_index(variable)]:
                return super().update_step(gradient, variable, learning_rate)
            targets = [variable] + [
                s for s in self._b4k_slots.get(self._var_key(variable), [])
                if tuple(s.shape) == tuple(variable.shape)
            ]
            olds = [_snapshot(t) for t in targets]
            gradient = B.dense_gradient(gradient, variable)
            super().update_step(gradient, variable, learning_rate)
            seen = ops.any(ops.not_equal(gradient, 0), axis=-1, keepdims=True)
            for target, old in zip(targets, olds):
                self.assign(target, ops.where(seen, _read(target), old))

        def get_config(self):
            config = super().get_config()
            config["include_in_lazy_optimization"] = list(self.include_in_lazy_optimization)
            return config

    return NewOptimizer


def _trainers_using(optimizer):
    """Keras models whose ``optimizer`` is (or wraps) ``optimizer``: found through the
    garbage collector, only needed on JAX in the middle of a ``fit`` epoch."""
    models, todo, seen = [], [optimizer], {id(optimizer)}
    while todo:
        target = todo.pop()
        for holder in gc.get_referrers(target):
            if not isinstance(holder, dict):
                continue
            for owner in gc.get_referrers(holder):
                if isinstance(owner, keras.Model) and owner.__dict__ is holder:
                    models.append(owner)
                elif (isinstance(owner, keras.optimizers.Optimizer)
                      and getattr(owner, "__dict__", None) is holder
                      and id(owner) not in seen):  # LossScaleOptimizer around it
                    seen.add(id(owner))
                    todo.append(owner)
    return models


def _sync_jax_training_state(optimizer):
    """Make the variables hold the current values.

    During an epoch of ``fit`` on JAX, Keras keeps the weights in its own state and
    empties the variables (reading one gives its initializer's value). A callback that
    runs in the middle of an epoch (``on_train_batch_end``) needs them back: ask the
    model to write its state into the variables (``jax_state_sync``); the training
    loop then reads the variables again before its next step, so values assigned to
    them are the ones training continues from.
    """
    if keras.backend.backend() != "jax":
        return
    variables = list(optimizer._trainable_variables) + list(optimizer.variables)
    if not any(getattr(v, "_value", 0) is None for v in variables):
        return
    for model in _trainers_using(optimizer):
        if hasattr(model, "jax_state_sync"):
            model.jax_state_sync()
    if any(getattr(v, "_value", 0) is None for v in variables):
        raise RuntimeError(
            "EMA weights: expected the model's variables to hold their values, found them "
            "emptied by a running JAX training loop whose model could not be found; call "
            "model.jax_state_sync() before apply_ema_weights()/reset_old_weights()."
        )


@_wrapper("WithEMA")
def extend_with_exponential_moving_average(BaseOptimizer):
    """New optimizer class that keeps an exponential moving average (EMA) of the weights.

    New argument: ``ema_momentum=0.999``. After every step
    ``ema = ema_momentum * ema + (1 - ema_momentum) * w`` (zero start, as bert4keras),
    stored in Keras' ``use_ema`` slots. Methods, as bert4keras:

    * ``apply_ema_weights(bias_correction=True)`` saves the weights and puts the
      averages into the model (divided by ``1 - ema_momentum**steps`` with bias
      correction);
    * ``reset_old_weights()`` puts the saved weights back, bit for bit.

    Both work from callbacks during ``model.fit`` on every backend, also in the middle
    of a JAX epoch. The weights are never replaced behind your back: unlike Keras'
    ``use_ema=True``, the end of ``fit`` does not overwrite the model with the
    averages, and ``ema_overwrite_frequency`` is not supported. Keras'
    ``SwapEMAWeights`` callback would swap in the uncorrected averages: use the two
    methods instead.

    Example:
        >>> AdamEMA = extend_with_exponential_moving_average(Adam, name="AdamEMA")
        >>> opt = AdamEMA(1e-4, ema_momentum=0.9999)
        >>> # in a callback: opt.apply_ema_weights(); evaluate(); opt.reset_old_weights()
    """

    class NewOptimizer(BaseOptimizer):
        """{base} with an exponential moving average of the weights (``ema_momentum``,
        ``apply_ema_weights()``, ``reset_old_weights()``)."""

        def __init__(self, *args, ema_momentum=0.999, **kwargs):
            ema_momentum = _number(ema_momentum, "ema_momentum", 0.0, 1.0)
            if not kwargs.pop("use_ema", True):
                raise ValueError(
                    "use_ema: expected True (or absent) for an EMA optimizer class, found False.")
            if kwargs.get("ema_overwrite_frequency") is not None:
                raise ValueError(
                    "ema_overwrite_frequency: expected None (the averages are applied with "
                    "apply_ema_weights()), found "
                    f"{kwargs['ema_overwrite_frequency']!r}."
                )
            super().__init__(*args, use_ema=True, ema_momentum=ema_momentum, **kwargs)
            _set_plain(self, "old_weights", None)

        def _update_model_variables_moving_average(self, trainable_variables):
            momentum = self.ema_momentum
            for var, average in zip(trainable_variables, self._model_variables_moving_average):
                if average is not None:
                    value = ops.cast(var, average.dtype)
                    average.assign(momentum * average + (1.0 - momentum) * value)

        def finalize_variable_values(self, var_list):
            """No-op: the weights stay the trained ones (see ``apply_ema_weights``)."""

        @property
        def model_weights(self):
            """The variables whose averages are kept (bert4keras' name)."""
            return list(self._trainable_variables)

        @property
        def ema_weights(self):
            """The average variables, uncorrected (bert4keras' name)."""
            return list(getattr(self, "_model_variables_moving_average", []))

        def _ema_pairs(self, method):
            if not self.built:
                raise ValueError(
                    f"{method}: expected an optimizer that has made a training step, found "
                    "one that is not built yet."
                )
            return [(v, a) for v, a in zip(self._trainable_variables,
                                           self._model_variables_moving_average)
                    if a is not None]

        def apply_ema_weights(self, bias_correction=True):
            """Save the model's weights, then load the moving averages into the model."""
            pairs = self._ema_pairs("apply_ema_weights")
            _sync_jax_training_state(self)
            steps = int(ops.convert_to_numpy(self._iterations))
            if bias_correction and steps == 0:
                raise ValueError(
                    "apply_ema_weights: expected at least one training step before the "
                    "bias-corrected average, found 0 steps."
                )
            scale = 1.0 - np.power(self.ema_momentum, steps) if bias_correction else 1.0
            # host copies: nothing here aliases a buffer that training will donate
            old = [np.array(ops.convert_to_numpy(v), copy=True) for v, _ in pairs]
            for var, average in pairs:
                value = np.array(ops.convert_to_numpy(average), copy=True)
                if bias_correction:
                    value = (value / scale).astype(value.dtype)
                var.assign(value)
            _set_plain(self, "old_weights", old)

        def reset_old_weights(self):
            """Put back the weights saved by the last ``apply_ema_weights()``."""
            pairs = self._ema_pairs("reset_old_weights")
            if self.old_weights is None:
                raise ValueError(
                    "reset_old_weights: expected saved weights from apply_ema_weights(), "
                    "found none."
                )
            _sync_jax_training_state(self)
            for (var, _), value in zip(pairs, self.old_weights):
                var.assign(value)

        def get_config(self):
            config = super().get_config()
            config.pop("use_ema", None)
            config.pop("ema_overwrite_frequency", None)
            return config

    return NewOptimizer


@_wrapper("WithParameterWiseLR")
def extend_with_parameter_wise_lr(BaseOptimizer):
    """New optimizer class with per-variable learning-rate multipliers.

    New argument: ``paramwise_lr_schedule={}``, ``{substring: multiplier}``; a
    variable's update is multiplied by the product of the multipliers whose key is a
    substring of its path (``{"Embedding": 0.1, "Transformer-11": 2}``).

    Example:
        >>> AdamP = extend_with_parameter_wise_lr(Adam, "AdamP")
        >>> opt = AdamP(1e-4, paramwise_lr_schedule={"Embedding": 0.1})
    """

    class NewOptimizer(BaseOptimizer):
        """{base} with parameter-wise learning-rate multipliers (``paramwise_lr_schedule``)."""

        def __init__(self, *args, paramwise_lr_schedule=None, **kwargs):
            super().__init__(*args, **kwargs)
            schedule = {} if paramwise_lr_schedule is None else paramwise_lr_schedule
            if not isinstance(schedule, dict) or not all(
                isinstance(k, str) and isinstance(v, numbers.Real) and not isinstance(v, bool)
                for k, v in schedule.items()
            ):
                raise ValueError(
                    "paramwise_lr_schedule: expected a {variable-name substring: multiplier} "
                    f"dict such as {{'Embedding': 0.1}}, found {paramwise_lr_schedule!r}."
                )
            _set_plain(self, "paramwise_lr_schedule", {k: float(v) for k, v in schedule.items()})

        def build(self, var_list):
            if self.built:
                return
            super().build(var_list)
            multipliers = []
            for v in var_list:
                multiplier = 1.0
                for key, value in self.paramwise_lr_schedule.items():
                    if key in _path(v):
                        multiplier *= value
                multipliers.append(multiplier)
            _set_plain(self, "_b4k_lr_multipliers", tuple(multipliers))

        def update_step(self, gradient, variable, learning_rate):
            multiplier = self._b4k_lr_multipliers[self._get_variable_index(variable)]
            if multiplier == 1.0:
                return super().update_step(gradient, variable, learning_rate)
            old = _snapshot(variable)
            super().update_step(gradient, variable, learning_rate)
            self.assign(variable, old + (_read(variable) - old) * multiplier)

        def get_config(self):
            config = super().get_config()
            config["paramwise_lr_schedule"] = dict(self.paramwise_lr_schedule)
            return config

    return NewOptimizer


# bert4keras had one implementation per Keras flavour (TF1 Keras, tf.keras "v2");
# Keras 3 has one optimizer API, so the "_v2" names are the same functions.
extend_with_weight_decay_v2 = extend_with_weight_decay
extend_with_layer_adaptation_v2 = extend_with_layer_adaptation
extend_with_piecewise_linear_lr_v2 = extend_with_piecewise_linear_lr
extend_with_gradient_accumulation_v2 = extend_with_gradient_accumulation
extend_with_lookahead_v2 = extend_with_lookahead
extend_with_lazy_optimization_v2 = extend_with_lazy_optimization
extend_with_exponential_moving_average_v2 = extend_with_exponential_moving_average
extend_with_parameter_wise_lr_v2 = extend_with_parameter_wise_lr
