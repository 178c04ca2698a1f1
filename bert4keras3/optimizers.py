"""Only what Keras 3 lacks: bert4keras' piecewise-linear schedule and a one-line way to
keep norms and biases out of AdamW weight decay.

Everything else is Keras' own: ``keras.optimizers.AdamW``, gradient accumulation
(``gradient_accumulation_steps=...``), EMA (``use_ema=True``), clipping.

Example::

    from bert4keras3.optimizers import piecewise_linear, exclude_from_weight_decay
    lr = piecewise_linear({1000: 2e-5, 10000: 1e-6})       # warmup then decay
    opt = exclude_from_weight_decay(keras.optimizers.AdamW(lr, weight_decay=0.01), model)
"""

import re

import keras
from keras import ops

__all__ = ["PiecewiseLinear", "piecewise_linear", "exclude_from_weight_decay"]


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


def _interpolate(t, points):
    """Linear interpolation through ``points`` [(step, value)], constant outside."""
    t = ops.cast(t, "float32")
    value = ops.cast(points[0][1], "float32") + t * 0
    for (t0, v0), (t1, v1) in zip(points[:-1], points[1:]):
        slope = (v1 - v0) / (t1 - t0)
        segment = v0 + slope * (t - t0)
        value = ops.where(t >= t0, segment, value)
    return ops.where(t >= points[-1][0], ops.cast(points[-1][1], "float32") + t * 0, value)


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
        return _interpolate(step, self.points) * self.multiplier

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
    return _interpolate(t_or_schedule, _normalise_schedule(schedule, from_zero))


def exclude_from_weight_decay(optimizer, model_or_variables, patterns=("norm", "bias")):
    """Keep variables whose path matches any of ``patterns`` out of weight decay.

    Keras' own ``optimizer.exclude_from_weight_decay(var_names=...)`` only looks at the
    variable's short name (``gamma``, ``bias``), so layer names such as
    ``...-Norm`` or ``layer_normalization`` cannot be matched; this helper matches
    the full variable path (``"Transformer-0-FeedForward-Norm/gamma"``), case-insensitively,
    like bert4keras' ``exclude_from_weight_decay=['Norm', 'bias']``.

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
