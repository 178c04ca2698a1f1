"""Backend-agnostic helpers built on ``keras.ops``, and bert4keras' ``backend`` names.

Everything here runs unchanged on JAX, TensorFlow and PyTorch. Three groups:

* helpers used by the layers: masking, rotary and sinusoidal position encodings,
  attention normalisers, activation lookup, key/value cache writes;
* bert4keras' ``backend`` functions with their arguments and meaning
  (:func:`sequence_masking`, :func:`batch_gather`, :func:`align`,
  :func:`apply_rotary_position_embeddings`, :func:`sinusoidal_embeddings`,
  :func:`piecewise_linear`, :func:`set_gelu`, :func:`search_layer`, ...);
* ``K``: the Keras-2 backend functions bert4keras scripts call (``K.sum``,
  ``K.cast``, ``K.batch_dot``, ``K.set_value``, ...), implemented on ``keras.ops``.

A bert4keras script keeps its import line::

    from bert4keras3.backend import keras, K

See ``docs/porting.md`` (section "backend and K") for what ``K`` covers and for the
Keras-2 functions that have no Keras 3 meaning (``K.gradients``, ``K.function``,
``K.learning_phase``, ...).
"""
import functools
import math
import os

import numpy as np

import keras
from keras import ops

__all__ = [
    "keras",
    "K",
    "large_negative",
    "align",
    "sequence_masking",
    "batch_gather",
    "sinusoidal_embeddings",
    "Sinusoidal",
    "rotary_sin_cos",
    "apply_rotary",
    "apply_rotary_position_embeddings",
    "attention_normalize",
    "root_mean_square",
    "multilabel_categorical_crossentropy",
    "sparse_multilabel_categorical_crossentropy",
    "piecewise_linear",
    "gelu_erf",
    "gelu_tanh",
    "relu2",
    "swish",
    "leaky_relu",
    "set_gelu",
    "get_activation",
    "search_layer",
    "reshape",
    "flatten",
    "where",
    "dtype",
    "pool1d",
    "divisible_temporal_padding",
    "get_available_gpus",
    "symbolic",
    "recompute_grad",
    "do_recompute",
    "causal_mask",
    "write_cache",
    "unilm_mask",
    "multihead_scores",
    "multihead_values",
]

_register = keras.saving.register_keras_serializable(package="bert4keras3")

#: bert4keras' switch for recomputation (``RECOMPUTE=1`` in the environment); read by
#: :func:`recompute_grad` when it decorates a function.
do_recompute = os.environ.get("RECOMPUTE", "0").strip().lower() in ("1", "true", "yes", "on")


def large_negative(dtype="float32"):
    """A large negative number representable in ``dtype`` (used for masking)."""
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype == "float16":
        return -6.0e4
    return -1.0e12


def _ndim(x):
    return len(x.shape)


def _is_tensor_like(x):
    return hasattr(x, "shape") and hasattr(x, "dtype")


def dtype(x):
    """The standardized dtype name of ``x`` (``None`` when ``x`` has none, e.g. a float).

    bert4keras' tolerant ``K.dtype``.
    """
    if not hasattr(x, "dtype"):
        return None
    return keras.backend.standardize_dtype(x.dtype)


def align(tensor, axes, ndim=None):
    """Place the axes of ``tensor`` at positions ``axes`` of an ``ndim``-D tensor (batched
    ``expand_dims``); the other positions get size 1.

    ``axes[i]`` is where axis ``i`` goes (negative values count from ``ndim``); the
    default ``ndim`` is ``max(axes) + 1``. E.g. a ``[batch, seq]`` mask aligned with
    ``align(mask, [0, -1], 4)`` has shape ``[batch, 1, 1, seq]``.
    """
    if len(axes) != _ndim(tensor):
        raise ValueError(
            f"align: expected one target axis per axis of the tensor ({_ndim(tensor)}), "
            f"found axes={list(axes)}"
        )
    if ndim is None:
        if min(axes) < 0:
            raise ValueError("align: negative axes need an explicit ndim")
        ndim = max(axes) + 1
    targets = sorted(a % ndim for a in axes)
    if len(set(targets)) != len(targets):
        raise ValueError(f"align: axes {list(axes)} name the same position twice (ndim={ndim})")
    for position in range(ndim):
        if position not in targets:
            tensor = ops.expand_dims(tensor, position)
    return tensor


def _mask_value(value, dtype_):
    if isinstance(value, str):
        if value == "-inf":
            return large_negative(dtype_)
        if value == "inf":
            return -large_negative(dtype_)
        raise ValueError(f"mask value must be a number, '-inf' or 'inf', found {value!r}")
    return value


def sequence_masking(x, mask=None, value=0, axis=None, bias=None, return_mask=False):
    """Set the positions of ``x`` where ``mask`` is false to ``value`` (bert4keras).

    Args:
        x: tensor.
        mask: boolean or 0/1 tensor ``[batch, seq]``; its sequence axis lines up with
            axis ``axis`` of ``x`` (batch is axis 0).
        value: a number (``-np.inf`` is a real infinity), or ``'-inf'`` / ``'inf'`` for a
            large finite value safe in ``x``'s dtype (``-1e12``; ``-6e4`` in float16).
        axis: the sequence axis (default 1), or a list of axes: the mask is applied
            along each (e.g. ``[2, 3]`` for span scores ``[batch, heads, seq, seq]``).
        bias: an extra boolean mask broadcastable to ``x`` (combined with ``mask``), or
            an additive bias (added to the kept positions).
        return_mask: also return the full (aligned, combined) boolean mask.
    """
    if mask is None and bias is None:
        return (x, None) if return_mask else x
    x = ops.convert_to_tensor(x)
    full = None
    if mask is not None:
        if axis is None:
            axes = [1]
        elif isinstance(axis, (list, tuple)):
            axes = list(axis)
        else:
            axes = [axis]
        mask = ops.cast(mask, "bool")
        for ax in axes:
            aligned = align(mask, [0, ax % _ndim(x)], _ndim(x))
            full = aligned if full is None else ops.logical_and(full, aligned)
    if bias is not None:
        if dtype(bias) == "bool":
            full = bias if full is None else ops.logical_and(full, bias)
        else:
            x = x + ops.cast(bias, x.dtype)
    if full is not None:
        x = ops.where(full, x, ops.cast(_mask_value(value, x.dtype), x.dtype))
    return (x, full) if return_mask else x


def batch_gather(params, indices):
    """Gather along the first non-batch axis, batch-wise (``tf.gather(..., batch_dims)``).

    ``params`` ``[b1..bk, n, ...]``, int ``indices`` ``[b1..bk, m]`` ->
    ``[b1..bk, m, ...]`` with ``out[b, j] = params[b, indices[b, j]]``.
    """
    indices = ops.convert_to_tensor(indices)
    if "int" not in dtype(indices):
        indices = ops.cast(indices, "int32")
    batch_dims = _ndim(indices) - 1
    extra = _ndim(params) - _ndim(indices)
    if extra < 0:
        raise ValueError(
            f"batch_gather: params (rank {_ndim(params)}) must have at least the rank of "
            f"indices (rank {_ndim(indices)})"
        )
    index = indices
    for _ in range(extra):
        index = ops.expand_dims(index, -1)
    shape = tuple(ops.shape(indices)) + tuple(ops.shape(params)[batch_dims + 1:])
    index = ops.broadcast_to(index, shape)
    return ops.take_along_axis(params, index, axis=batch_dims)


def _angles(positions, dim, base):
    """``positions[..., None] * base ** (-2i / dim)`` for i < dim / 2, float32."""
    if dim % 2:
        raise ValueError(f"sinusoidal/rotary embeddings need an even dim, found {dim}")
    positions = ops.cast(positions, "float32")
    inv_freq = ops.power(float(base), -ops.arange(0, dim // 2, dtype="float32") * (2.0 / dim))
    return ops.expand_dims(positions, -1) * inv_freq


def sinusoidal_embeddings(pos, dim, base=10000, interleave=True):
    """Sinusoidal embeddings ``[..., dim]`` of (float) positions ``pos`` (bert4keras).

    Frequencies are ``base ** (-2i / dim)``. The layout is bert4keras' (and RoPE's):
    ``sin, cos`` alternating per frequency, so ``emb[..., 0::2]`` are sines and
    ``emb[..., 1::2]`` cosines. ``interleave=False`` gives ``[sin..., cos...]``
    (the Transformer paper's layout).
    """
    angles = _angles(pos, dim, base)
    sin, cos = ops.sin(angles), ops.cos(angles)
    if interleave:
        out = ops.stack([sin, cos], axis=-1)
        return ops.reshape(out, tuple(ops.shape(angles)[:-1]) + (dim,))
    return ops.concatenate([sin, cos], axis=-1)


@_register
class Sinusoidal(keras.initializers.Initializer):
    """Initializer of a ``[size, dim]`` matrix with :func:`sinusoidal_embeddings` rows.

    Row ``p`` is the (interleaved) sinusoidal embedding of position ``p``.
    """

    def __call__(self, shape, dtype=None):
        if len(shape) != 2:
            raise ValueError(f"Sinusoidal initializes [size, dim] matrices, found shape {shape}")
        size, dim = shape
        out = sinusoidal_embeddings(ops.arange(size, dtype="float32"), dim)
        return ops.cast(out, dtype or keras.config.floatx())


def rotary_sin_cos(positions, dim, base=10000.0):
    """Return ``(sin, cos)`` of shape ``[..., dim]`` for RoFormer's rotary encoding.

    Each frequency is repeated for the pair of features it rotates
    (features ``2i`` and ``2i+1``), as in RoFormer.
    """
    angles = ops.repeat(_angles(positions, dim, base), 2, axis=-1)
    return ops.sin(angles), ops.cos(angles)


def apply_rotary(x, sin, cos):
    """Rotate feature pairs ``(x[2i], x[2i+1])`` of ``x`` by the given angles.

    ``x``: ``[batch, seq, dim]`` or ``[batch, seq, heads, dim]``;
    ``sin``/``cos``: ``[seq, dim]`` or ``[batch, seq, dim]`` (from :func:`rotary_sin_cos`).
    """
    x = ops.convert_to_tensor(x)
    sin = ops.cast(sin, x.dtype)
    cos = ops.cast(cos, x.dtype)
    if len(sin.shape) == 2:
        sin, cos = sin[None], cos[None]
    for _ in range(len(x.shape) - 3):  # axes between seq and features
        sin, cos = sin[:, :, None], cos[:, :, None]
    shape = ops.shape(x)
    pairs = ops.reshape(x, tuple(shape[:-1]) + (shape[-1] // 2, 2))
    rotated = ops.stack([-pairs[..., 1], pairs[..., 0]], axis=-1)
    rotated = ops.reshape(rotated, shape)
    return x * cos + rotated * sin


def apply_rotary_position_embeddings(sinusoidal, *tensors):
    """Apply RoPE to ``tensors`` (bert4keras).

    ``sinusoidal``: ``[batch (or 1), seq, dim]`` interleaved embeddings, e.g. from
    ``SinusoidalPositionEmbedding(dim, "zero")`` or :func:`sinusoidal_embeddings`;
    each tensor is ``[batch, seq, ..., dim]``. Feature pair ``(2i, 2i+1)`` is rotated by
    the angle whose sine is ``sinusoidal[..., 2i]`` and cosine ``sinusoidal[..., 2i+1]``.
    Returns one tensor for one input, else a list.
    """
    if not tensors:
        raise ValueError("apply_rotary_position_embeddings needs at least one tensor")
    shape = tuple(tensors[0].shape)
    for t in tensors[1:]:
        if tuple(t.shape) != shape:
            raise ValueError(
                f"apply_rotary_position_embeddings: all tensors must have the same shape, "
                f"found {shape} and {tuple(t.shape)}"
            )
    dim = ops.shape(sinusoidal)[-1]
    pairs = ops.reshape(sinusoidal, tuple(ops.shape(sinusoidal)[:-1]) + (dim // 2, 2))
    sin = ops.repeat(pairs[..., 0], 2, axis=-1)
    cos = ops.repeat(pairs[..., 1], 2, axis=-1)
    if len(sin.shape) == 2:
        sin, cos = sin[None], cos[None]
    outputs = [apply_rotary(t, sin, cos) for t in tensors]
    return outputs[0] if len(outputs) == 1 else outputs


def attention_normalize(a, mask=None, axis=-1, method="softmax", bias=None, length=None,
                        min_length=16):
    """Turn attention scores ``a`` into weights along ``axis`` (bert4keras).

    Args:
        a: logits, e.g. ``[batch, heads, q, k]``.
        mask: ``[batch, k]`` sequence mask (bert4keras: lined up with axes 0 and
            ``axis``), or a boolean mask broadcastable to ``a`` (same rank); false =
            masked out.
        axis: the key axis.
        method: ``"softmax"``; ``"softmax_plus"`` (entropy-invariant softmax, logits
            scaled by ``log(n) / log(512)``, n = number of visible keys);
            ``"squared_relu"`` (``relu(a)**2 / n``).
        bias: additive bias or extra boolean mask (see :func:`sequence_masking`).
        length: optional tensor of n broadcastable to ``a``; by default n is counted
            from the mask (or is the key length).
        min_length: for ``softmax_plus``, ``log(max(n, min_length))``: bert4keras' default
            16; ``None`` is the as-trained GAU-alpha form ``log(n)``.

    The previous bert4keras3 order ``attention_normalize(a, mask, method)`` (a string in
    the third place) is still accepted.
    """
    if isinstance(axis, str):  # attention_normalize(a, mask, "softmax_plus", ...)
        axis, method = (method if isinstance(method, int) else -1), axis
    if method not in ("softmax", "softmax_plus", "squared_relu"):
        raise ValueError(
            "attention normaliser must be 'softmax', 'softmax_plus' or "
            f"'squared_relu', found {method!r}"
        )
    a = ops.convert_to_tensor(a)
    dtype_ = a.dtype
    full = None
    if mask is not None:
        mask = ops.cast(mask, "bool")
        if _ndim(mask) == 2 and _ndim(a) > 2:  # bert4keras [batch, keys] mask
            mask = align(mask, [0, axis % _ndim(a)], _ndim(a))
        full = mask
    if bias is not None:
        if dtype(bias) == "bool":
            full = bias if full is None else ops.logical_and(full, bias)
        else:
            a = a + ops.cast(bias, dtype_)
    if method != "softmax" and length is None:
        if full is not None:
            ones = ops.broadcast_to(ops.cast(full, dtype_), ops.shape(a))
            length = ops.sum(ones, axis=axis, keepdims=True)
        else:
            length = ops.cast(ops.shape(a)[axis], dtype_)
    if method == "softmax_plus":
        n = ops.maximum(ops.cast(length, dtype_), 1.0)
        if min_length is not None:
            n = ops.maximum(n, float(min_length))
        a = a * ops.log(n) / math.log(512.0)
    if method in ("softmax", "softmax_plus"):
        if full is not None:
            a = ops.where(full, a, ops.cast(large_negative(dtype_), dtype_))
        return ops.softmax(a, axis=axis)
    weights = ops.square(ops.relu(a)) / ops.maximum(ops.cast(length, dtype_), 1.0)
    if full is not None:
        weights = ops.where(full, weights, ops.zeros_like(weights))
    return weights


def root_mean_square(x, axis=None, keepdims=False):
    """``sqrt(mean(x**2))`` over ``axis`` (bert4keras)."""
    return ops.sqrt(ops.mean(ops.square(x), axis=axis, keepdims=keepdims))


def multilabel_categorical_crossentropy(y_true, y_pred):
    """bert4keras' ZLPR multi-label loss; see :func:`bert4keras3.losses.multilabel_categorical_crossentropy`.

    ``y_pred`` are raw scores; masked entries (``-inf`` or the layers' large negative
    mask value) are left out.
    """
    from bert4keras3 import losses

    return losses.multilabel_categorical_crossentropy(y_true, y_pred)


def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=False):
    """bert4keras' sparse ZLPR loss; see :func:`bert4keras3.losses.sparse_multilabel_categorical_crossentropy`."""
    from bert4keras3 import losses

    return losses.sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=mask_zero)


def dense_gradient(gradient, variable):
    """A dense gradient for ``variable``: TensorFlow hands embedding gradients over as
    ``IndexedSlices`` (other backends' gradients pass through unchanged)."""
    if type(gradient).__name__ == "IndexedSlices":  # TensorFlow only
        return ops.add(gradient, ops.zeros(variable.shape, variable.dtype))
    return gradient


def piecewise_linear(t, schedule, from_zero=True):
    """Piecewise-linear function of ``t`` through ``{t_i: x_i}`` (bert4keras).

    E.g. ``{1000: 1, 2000: 0.1}``: from 0 (with ``from_zero``) up to 1 over
    ``[0, 1000]``, down to 0.1 over ``[1000, 2000]``, then 0.1. Returns a float tensor.
    """
    items = list(schedule.items()) if isinstance(schedule, dict) else [tuple(x) for x in schedule]
    try:
        points = sorted((float(k), float(v)) for k, v in items)
    except (TypeError, ValueError):
        raise ValueError(f"piecewise_linear: expected a {{t: value}} schedule of numbers, "
                         f"found {schedule!r}") from None
    if not points:
        raise ValueError("piecewise_linear: expected a non-empty {t: value} schedule")
    if len({k for k, _ in points}) != len(points):
        raise ValueError(f"piecewise_linear: the t of a schedule must be distinct, found "
                         f"{[k for k, _ in points]}")
    if from_zero and points[0][0] != 0:
        points = [(0.0, 0.0)] + points
    t = ops.cast(t, keras.config.floatx())
    x = t * 0 + points[0][1]
    for i, (t_begin, x_begin) in enumerate(points):
        if i + 1 < len(points):
            t_end, x_end = points[i + 1]
            piece = x_begin + (x_end - x_begin) / (t_end - t_begin) * (t - t_begin)
        else:
            piece = t * 0 + x_begin
        x = ops.where(t >= t_begin, piece, x)
    return x


@_register
def gelu_erf(x):
    """GELU, exact (erf) form: ``x * Phi(x)``."""
    return keras.activations.gelu(x, approximate=False)


@_register
def gelu_tanh(x):
    """GELU, tanh approximation (``gelu_new`` in transformers)."""
    return keras.activations.gelu(x, approximate=True)


@_register
def relu2(x):
    """Squared ReLU."""
    return ops.square(ops.relu(x))


@_register
def swish(x):
    """Swish / SiLU: ``x * sigmoid(x)``."""
    return keras.activations.silu(x)


@_register
def leaky_relu(x, alpha=0.2):
    """Leaky ReLU with bert4keras' default slope 0.2."""
    return keras.activations.leaky_relu(x, negative_slope=alpha)


_ACTIVATIONS = {
    "gelu": gelu_erf,
    "gelu_erf": gelu_erf,
    "gelu_tanh": gelu_tanh,
    "gelu_new": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "relu": keras.activations.relu,
    "relu2": relu2,
    "swish": keras.activations.silu,
    "silu": keras.activations.silu,
    "leaky_relu": leaky_relu,
    "tanh": keras.activations.tanh,
    "sigmoid": keras.activations.sigmoid,
    "softmax": keras.activations.softmax,
    "linear": keras.activations.linear,
    None: keras.activations.linear,
}


def set_gelu(version):
    """Choose what the activation name ``"gelu"`` means (bert4keras): ``"erf"`` (exact,
    the default) or ``"tanh"`` (approximation).

    Affects every later lookup of ``"gelu"`` by this package (:func:`get_activation`: the
    layers, ``FeedForward``, models built afterwards). Keras' own layers resolve
    ``activation="gelu"`` to Keras' erf GELU regardless; give them
    ``activation=gelu_tanh`` (this module) instead.
    """
    version = str(version).lower()
    if version not in ("erf", "tanh"):
        raise ValueError(f"gelu version must be 'erf' or 'tanh', found {version!r}")
    _ACTIVATIONS["gelu"] = gelu_erf if version == "erf" else gelu_tanh


def get_activation(name):
    """Resolve an activation name (bert4keras / transformers spelling) to a function.

    ``"gelu"`` is the erf form (see :func:`set_gelu`); ``"gelu_new"``/``"gelu_tanh"``
    the tanh form. Callables pass through.
    """
    if callable(name):
        return name
    key = name.lower() if isinstance(name, str) else name
    if key in _ACTIVATIONS:
        return _ACTIVATIONS[key]
    try:
        return keras.activations.get(name)
    except (ValueError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; expected one of "
            f"{sorted(k for k in _ACTIVATIONS if k)} or a Keras activation"
        ) from None


def search_layer(inputs, name, exclude_from=None):
    """Find the layer called ``name`` upstream of ``inputs`` (bert4keras).

    ``inputs`` is a layer or a symbolic tensor; the search walks the graph towards the
    inputs (looking inside nested models) and returns the layer, or ``None``.

    Example::

        embeddings = search_layer(model.output, "Embedding-Token").embeddings
    """
    if exclude_from is None:
        exclude_from = set()
    if isinstance(inputs, keras.Operation):
        layer = inputs
    else:
        history = getattr(inputs, "_keras_history", None)
        if history is None:
            raise ValueError(
                "search_layer expects a layer or a symbolic (functional) tensor, found "
                f"{type(inputs).__name__}"
            )
        layer = history[0]
    if layer.name == name:
        return layer
    if id(layer) in exclude_from:
        return None
    exclude_from.add(id(layer))
    if isinstance(layer, keras.Model):
        for sub in layer.layers:
            if sub.name == name:
                return sub
    for node in getattr(layer, "_inbound_nodes", []):
        for parent in node.parent_nodes:
            found = search_layer(parent.operation, name, exclude_from)
            if found is not None:
                return found
    return None


def reshape(tensor, *args):
    """bert4keras' flexible reshape.

    ``reshape(x, shape)`` is a plain reshape; ``reshape(x, shape1, axis1, shape2, axis2,
    ...)`` replaces axis ``axis_i`` by the axes ``shape_i`` (one ``-1`` allowed in each),
    e.g. ``reshape(x, (heads, -1), -1)`` splits the last axis into heads.
    """
    if len(args) == 1:
        return ops.reshape(tensor, args[0])
    if len(args) % 2:
        raise ValueError("reshape expects (shape1, axis1, shape2, axis2, ...) pairs")
    shape = list(ops.shape(tensor))
    pieces = [[d] for d in shape]
    for new, axis in zip(args[::2], args[1::2]):
        new = list(new)
        if new.count(-1) > 1:
            raise ValueError(f"reshape: at most one -1 per new shape, found {new}")
        if -1 in new:
            known = 1
            for d in new:
                if d != -1:
                    known *= d
            new[new.index(-1)] = shape[axis] // known
        pieces[axis] = new
    return ops.reshape(tensor, tuple(d for piece in pieces for d in piece))


def _product(values):
    out = 1
    for v in values:
        out = out * v
    return out


def flatten(tensor, start=None, end=None):
    """Merge axes ``start:end`` of ``tensor`` into one (bert4keras; default all axes)."""
    start = start or 0
    end = end or _ndim(tensor)
    shape = list(ops.shape(tensor))
    new = shape[:start] + [_product(shape[start:end])] + shape[end:]
    return ops.reshape(tensor, tuple(new))


def where(cond, x, y):
    """``ops.where`` with broadcasting and Python numbers on either side (bert4keras).

    A number takes the dtype of the other branch (``floatx`` when both are numbers).
    """
    if not _is_tensor_like(x) and not _is_tensor_like(y):
        x = ops.convert_to_tensor(x, keras.config.floatx())
        y = ops.convert_to_tensor(y, keras.config.floatx())
    elif not _is_tensor_like(x):
        x = ops.convert_to_tensor(x, y.dtype)
    elif not _is_tensor_like(y):
        y = ops.convert_to_tensor(y, x.dtype)
    return ops.where(ops.cast(cond, "bool"), x, y)


def pool1d(x, pool_size, strides=1, padding="valid", data_format=None, pool_mode="max"):
    """Pooling over the sequence axis of ``[batch, seq, dim]`` (bert4keras)."""
    if pool_mode not in ("max", "avg"):
        raise ValueError(f"pool_mode must be 'max' or 'avg', found {pool_mode!r}")
    pool = ops.max_pool if pool_mode == "max" else ops.average_pool
    return pool(x, pool_size, strides=strides, padding=padding, data_format=data_format)


def divisible_temporal_padding(x, n):
    """Right-pad ``[batch, seq, dim]`` with zeros so that ``seq`` is a multiple of ``n``."""
    pad = (-ops.shape(x)[1]) % n
    return ops.pad(x, [[0, 0], [0, pad], [0, 0]])


def get_available_gpus():
    """Names of the GPUs the current backend sees (``[]`` on a CPU-only machine)."""
    if keras.backend.backend() == "torch":  # keras.distribution does not cover PyTorch
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [d for d in keras.distribution.list_devices() if d.lower().startswith(("gpu", "cuda"))]


def symbolic(f):
    """Identity decorator (bert4keras kept it for old Keras versions)."""
    return f


def recompute_grad(call):
    """Decorator of a layer's ``call``: recompute its activations in the backward pass.

    Active only when recomputation is switched on (``RECOMPUTE=1`` in the environment,
    read into :data:`do_recompute` at import, as in bert4keras); otherwise ``call`` is
    returned unchanged. Built on ``keras.remat``, so it works on every backend.
    """
    if not do_recompute:
        return call

    @functools.wraps(call)
    def inner(self, inputs, *args, **kwargs):
        return keras.remat(lambda x: call(self, x, *args, **kwargs))(inputs)

    return inner


def multihead_scores(q, k, key_heads_first=False):
    """``q [b, q, h, d]``, ``k [b, k, h, d]`` -> dot products ``[b, h, q, k]``.

    With ``key_heads_first`` ``k`` is ``[b, h, k, d]`` (the layout of decoding caches,
    which then need no transpose per step). Written as explicit transposes + batched
    matmul: XLA:CPU runs this several times faster than the equivalent ``einsum``
    (measured 18 ms vs 83 ms at 8x256x12x64 on JAX).
    """
    q = ops.transpose(q, (0, 2, 1, 3))
    return ops.matmul(q, ops.transpose(k, (0, 1, 3, 2) if key_heads_first else (0, 2, 3, 1)))


def multihead_values(weights, v, value_heads_first=False):
    """``weights [b, h, q, k]``, ``v [b, k, h, d]`` (or ``[b, h, k, d]``) -> ``[b, q, h, d]``."""
    if not value_heads_first:
        v = ops.transpose(v, (0, 2, 1, 3))
    return ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))


def write_cache(cache, new, index, axis=1):
    """Write ``new`` into ``cache`` at ``index`` along ``axis`` (tensors or tuples of them).

    Static-shape key/value cache update for decoding: ``cache`` is ``[batch, length, ...]``,
    ``new`` ``[batch, n, ...]``, ``index`` an int scalar (the first slot written).
    """
    if isinstance(cache, (tuple, list)):
        return type(cache)(write_cache(c, n, index, axis) for c, n in zip(cache, new))
    index = ops.cast(index, "int32")
    zero = ops.zeros_like(index)
    start = [zero] * len(cache.shape)
    start[axis] = index
    return ops.slice_update(cache, start, ops.cast(new, cache.dtype))


def causal_mask(q_len, k_len=None, offset=0):
    """Boolean ``[q_len, k_len]`` mask where query i (at ``offset + i``) sees keys <= it."""
    k_len = q_len if k_len is None else k_len
    rows = ops.arange(q_len)[:, None] + offset
    cols = ops.arange(k_len)[None, :]
    return rows >= cols


def unilm_mask(segment_ids):
    """Boolean ``[batch, seq, seq]`` UniLM mask from segment ids.

    Segment 0 attends to segment 0 bidirectionally; segment 1 attends to
    segment 0 and causally to itself.
    """
    idx = ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
    return idx[:, None, :] <= idx[:, :, None]


# ---------------------------------------------------------------------------
# K: the Keras-2 backend functions of bert4keras scripts, on keras.ops
# ---------------------------------------------------------------------------

#: Keras-2 backend names with no Keras 3 meaning: name -> (why, what to do instead).
_K_ABSENT = {
    "gradients": ("Keras 3 has no symbolic graph to differentiate",
                  "override Model.train_step / use the backend's autodiff"),
    "function": ("Keras 3 has no symbolic graph to run",
                 "build a keras.Model(inputs, outputs) and call it or use predict"),
    "placeholder": ("Keras 3 has no placeholders", "use keras.Input"),
    "learning_phase": ("Keras 3 has no global learning phase",
                       "pass training=... to the layer call"),
    "set_learning_phase": ("Keras 3 has no global learning phase",
                           "pass training=... to the layer call"),
    "get_session": ("Keras 3 has no TF1 session", "drop the call"),
    "set_session": ("Keras 3 has no TF1 session", "drop the call"),
    "rnn": ("Keras 3 does not expose its backend RNN loop",
            "use keras.ops.scan or keras.ops.fori_loop"),
}


def _k_tensor(x, dtype_=None):
    if dtype_ is None and not _is_tensor_like(x):
        arr = np.asarray(x)
        dtype_ = keras.config.floatx() if arr.dtype.kind == "f" else None
    return ops.convert_to_tensor(x, dtype_)


def _k_switch(condition, then_expression, else_expression):
    if callable(then_expression):
        then_expression = then_expression()
    if callable(else_expression):
        else_expression = else_expression()
    if isinstance(condition, (bool, np.bool_)):
        return then_expression if condition else else_expression
    condition = ops.cast(condition, "bool")
    target = max(_ndim(then_expression) if _is_tensor_like(then_expression) else 0,
                 _ndim(else_expression) if _is_tensor_like(else_expression) else 0)
    while _ndim(condition) < target:
        condition = ops.expand_dims(condition, -1)
    return where(condition, then_expression, else_expression)


def _k_batch_dot(x, y, axes=None):
    xd, yd = _ndim(x), _ndim(y)
    if axes is None:
        axes = (xd - 1, yd - 1 if yd == 2 else yd - 2)
    elif isinstance(axes, int):
        axes = (axes, axes)
    ax, ay = axes[0] % xd, axes[1] % yd
    if ax == 0 or ay == 0:
        raise ValueError("batch_dot cannot contract the batch axis (0)")
    x = ops.moveaxis(x, ax, -1)  # [b, X..., d]
    y = ops.moveaxis(y, ay, 1)  # [b, d, Y...]
    xs, ys = ops.shape(x), ops.shape(y)
    x_rest, y_rest = tuple(xs[1:-1]), tuple(ys[2:])
    x2 = ops.reshape(x, (xs[0], _product(x_rest), xs[-1]))
    y2 = ops.reshape(y, (ys[0], ys[1], _product(y_rest)))
    out = ops.reshape(ops.matmul(x2, y2), (xs[0],) + x_rest + y_rest)
    if _ndim(out) == 1:
        out = ops.expand_dims(out, 1)
    return out


def _k_dot(x, y):
    if _ndim(y) == 1:
        return ops.tensordot(x, y, axes=[[_ndim(x) - 1], [0]])
    if _ndim(x) <= 2 and _ndim(y) == 2:
        return ops.matmul(x, y)
    return ops.tensordot(x, y, axes=[[_ndim(x) - 1], [_ndim(y) - 2]])


def _k_prod(x, axis=None, keepdims=False):
    if isinstance(x, (list, tuple)):  # e.g. K.prod(K.shape(x)[2:])
        return _product(x)
    return ops.prod(x, axis=axis, keepdims=keepdims)


def _k_sparse_cce(target, output, from_logits=False, axis=-1):
    target = ops.convert_to_tensor(target)
    if _ndim(target) == _ndim(output) and target.shape[-1] == 1:
        target = ops.squeeze(target, -1)
    return ops.sparse_categorical_crossentropy(
        ops.cast(target, "int32"), output, from_logits=from_logits, axis=axis
    )


def _k_l2_normalize(x, axis=None):
    x = ops.convert_to_tensor(x)
    sq = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(sq, ops.cast(1e-12, x.dtype)))


def _call_context_training():
    """``training`` of the Keras layer call in progress (what ``Dropout`` gets), or None."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - Keras internals moved
        return None
    ctx = global_state.get_global_attribute("current_call_ctx")
    return getattr(ctx, "training", None)


def _k_concatenate(tensors, axis=-1):
    """Keras 2's ``concatenate``: Python lists / numbers among the tensors take their dtype.

    bert4keras' CoSENT loss writes ``K.concatenate([[0], scores], axis=0)``.
    """
    tensors = list(tensors)
    ref = next((t for t in tensors if _is_tensor_like(t)), None)
    if ref is not None:
        tensors = [t if _is_tensor_like(t) else ops.convert_to_tensor(t, dtype=ref.dtype)
                   for t in tensors]
    return ops.concatenate(tensors, axis=axis)


def _k_in_train_phase(x, alt, training=None):
    """Keras 2's ``in_train_phase``: ``training`` defaults to the enclosing layer call's.

    Keras 3 has no global learning phase; without ``training`` the value comes from the
    Keras call in progress (``fit`` trains, ``predict`` / ``evaluate`` do not), as the
    learning phase did in Keras 2. Outside any call (and while a functional model is
    being built) it is the test phase, Keras 2's default.
    """
    if training is None:
        training = _call_context_training()
    if training is None:
        training = False
    return _k_switch(training, x, alt)


def _k_set_value(x, value):
    x.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(x.dtype)))


def _in_jax_trace():
    """True inside a function JAX is tracing (jit, grad, Keras' compiled steps)."""
    if keras.backend.backend() != "jax":
        return False
    from keras.src.utils.jax_utils import is_in_jax_tracing_scope

    return is_in_jax_tracing_scope()


def _stateful_uniform(shape):
    """Uniform [0, 1) float32 numbers from XLA's stateful generator: new numbers on every run
    of the compiled function, no seed state to thread (what an unseeded Keras 2 op did)."""
    import jax.numpy as jnp
    from jax import lax

    return lax.rng_uniform(jnp.float32(0), jnp.float32(1), tuple(int(d) for d in shape))


def _k_random_uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    dtype = dtype or keras.config.floatx()
    if seed is None and _in_jax_trace():  # Keras 3 refuses unseeded random ops there
        return ops.cast(minval + (maxval - minval) * _stateful_uniform(shape), dtype)
    return keras.random.uniform(shape, minval, maxval, dtype=dtype, seed=seed)


def _k_random_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    dtype = dtype or keras.config.floatx()
    if seed is None and _in_jax_trace():  # Box-Muller on two stateful uniforms
        u1, u2 = _stateful_uniform(shape), _stateful_uniform(shape)
        z = ops.sqrt(-2.0 * ops.log1p(-u1)) * ops.cos(2.0 * math.pi * u2)
        return ops.cast(mean + stddev * z, dtype)
    return keras.random.normal(shape, mean, stddev, dtype=dtype, seed=seed)


def _k_truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    dtype = dtype or keras.config.floatx()
    if seed is None and _in_jax_trace():  # inverse CDF on [Phi(-2), Phi(2)], as Keras truncates
        lo, hi = 0.5 * math.erfc(2 / math.sqrt(2)), 0.5 * math.erfc(-2 / math.sqrt(2))
        u = lo + (hi - lo) * _stateful_uniform(shape)
        z = math.sqrt(2.0) * ops.erfinv(2.0 * u - 1.0)
        return ops.cast(mean + stddev * z, dtype)
    return keras.random.truncated_normal(shape, mean, stddev, dtype=dtype, seed=seed)


def _k_random_binomial(shape, p=0.0, dtype=None, seed=None):
    u = _k_random_uniform(shape, seed=seed, dtype="float32")
    return ops.cast(ops.less(u, p), dtype or keras.config.floatx())


def _k_dropout(x, level, noise_shape=None, seed=None):
    if seed is None and _in_jax_trace():
        x = ops.convert_to_tensor(x)
        keep = _k_random_uniform(noise_shape or ops.shape(x), dtype=x.dtype) >= level
        return ops.where(keep, x / (1.0 - level), ops.zeros_like(x))
    return keras.random.dropout(x, level, noise_shape=noise_shape, seed=seed)


def _k_hard_sigmoid(x):
    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def _k_relu(x, alpha=0.0, max_value=None, threshold=0.0):
    return keras.activations.relu(x, negative_slope=alpha, max_value=max_value,
                                  threshold=threshold)


def _k_clip(x, min_value, max_value):
    if max_value is not None and min_value is not None and not _is_tensor_like(max_value) \
            and not _is_tensor_like(min_value) and max_value < min_value:
        max_value = min_value
    return ops.clip(x, min_value, max_value)


def _k_repeat(x, n):
    return ops.repeat(ops.expand_dims(x, 1), n, axis=1)


def _k_constant(value, dtype=None, shape=None, name=None):
    out = _k_tensor(value, dtype or keras.config.floatx())
    if shape is not None:
        out = ops.broadcast_to(out, shape)
    return out


class _Keras2Backend:
    """Keras-2 ``keras.backend`` functions (``K.sum``, ``K.cast``, ...) on ``keras.ops``.

    Same names, arguments and defaults as Keras 2's backend (``K.cumsum(x, axis=0)``,
    ``K.concatenate(xs, axis=-1)``, ``K.transpose`` reverses all axes, ...), plus
    bert4keras' additions (flexible ``K.reshape``, ``K.flatten(x, start, end)``,
    broadcasting ``K.where``, ``K.logsumexp``, ``K.symbolic``). Differences from Keras 2:
    ``K.shape`` returns a tuple (ints where static); ``K.zeros``/``K.ones``/``K.eye``
    return tensors (use ``K.variable`` for a variable); random functions without a ``seed``
    also work inside compiled JAX code (fresh numbers each run, not reproducible by
    ``keras.utils.set_random_seed``; give ``seed=`` a ``keras.random.SeedGenerator`` for that).
    Names with no Keras 3 meaning (``K.gradients``, ``K.function``,
    ``K.learning_phase``, ...) raise an ``AttributeError`` that says what to do.
    """

    # configuration
    floatx = staticmethod(keras.config.floatx)
    set_floatx = staticmethod(keras.config.set_floatx)
    epsilon = staticmethod(keras.config.epsilon)
    set_epsilon = staticmethod(keras.config.set_epsilon)
    image_data_format = staticmethod(keras.config.image_data_format)
    set_image_data_format = staticmethod(keras.config.set_image_data_format)
    backend = staticmethod(keras.backend.backend)
    clear_session = staticmethod(keras.backend.clear_session)
    name_scope = staticmethod(keras.name_scope)
    symbolic = staticmethod(symbolic)

    # tensors, shapes, dtypes
    cast = staticmethod(lambda x, dtype: ops.cast(x, dtype))
    dtype = staticmethod(lambda x: keras.backend.standardize_dtype(x.dtype))
    int_shape = staticmethod(lambda x: tuple(x.shape))
    ndim = staticmethod(_ndim)
    shape = staticmethod(ops.shape)
    is_tensor = staticmethod(ops.is_tensor)
    is_keras_tensor = staticmethod(lambda x: isinstance(x, keras.KerasTensor))
    constant = staticmethod(_k_constant)
    variable = staticmethod(
        lambda value, dtype=None, name=None, constraint=None: keras.Variable(
            value, dtype=dtype or keras.config.floatx(), name=name, constraint=constraint
        )
    )
    zeros = staticmethod(lambda shape, dtype=None, name=None: ops.zeros(shape, dtype or keras.config.floatx()))
    ones = staticmethod(lambda shape, dtype=None, name=None: ops.ones(shape, dtype or keras.config.floatx()))
    eye = staticmethod(lambda size, dtype=None, name=None: ops.eye(size, dtype=dtype or keras.config.floatx()))
    zeros_like = staticmethod(lambda x, dtype=None, name=None: ops.zeros_like(x, dtype))
    ones_like = staticmethod(lambda x, dtype=None, name=None: ops.ones_like(x, dtype))
    arange = staticmethod(
        lambda start, stop=None, step=1, dtype="int32": ops.arange(start, stop, step, dtype=dtype)
    )
    count_params = staticmethod(lambda x: int(np.prod(x.shape)))

    # values of variables
    get_value = staticmethod(ops.convert_to_numpy)
    eval = staticmethod(ops.convert_to_numpy)
    set_value = staticmethod(_k_set_value)
    batch_get_value = staticmethod(lambda xs: [ops.convert_to_numpy(x) for x in xs])
    batch_set_value = staticmethod(lambda pairs: [_k_set_value(x, v) for x, v in pairs] and None)
    update = staticmethod(lambda x, new_x: x.assign(new_x))
    update_add = staticmethod(lambda x, increment: x.assign_add(increment))
    update_sub = staticmethod(lambda x, decrement: x.assign_sub(decrement))
    moving_average_update = staticmethod(
        lambda x, value, momentum: x.assign(x * momentum + value * (1.0 - momentum))
    )

    # reductions
    sum = staticmethod(lambda x, axis=None, keepdims=False: ops.sum(x, axis=axis, keepdims=keepdims))
    mean = staticmethod(lambda x, axis=None, keepdims=False: ops.mean(x, axis=axis, keepdims=keepdims))
    max = staticmethod(lambda x, axis=None, keepdims=False: ops.max(x, axis=axis, keepdims=keepdims))
    min = staticmethod(lambda x, axis=None, keepdims=False: ops.min(x, axis=axis, keepdims=keepdims))
    prod = staticmethod(_k_prod)
    std = staticmethod(lambda x, axis=None, keepdims=False: ops.std(x, axis=axis, keepdims=keepdims))
    var = staticmethod(lambda x, axis=None, keepdims=False: ops.var(x, axis=axis, keepdims=keepdims))
    any = staticmethod(lambda x, axis=None, keepdims=False: ops.any(x, axis=axis, keepdims=keepdims))
    all = staticmethod(lambda x, axis=None, keepdims=False: ops.all(x, axis=axis, keepdims=keepdims))
    argmax = staticmethod(lambda x, axis=-1: ops.argmax(x, axis=axis))
    argmin = staticmethod(lambda x, axis=-1: ops.argmin(x, axis=axis))
    cumsum = staticmethod(lambda x, axis=0: ops.cumsum(x, axis=axis))
    cumprod = staticmethod(lambda x, axis=0: ops.cumprod(x, axis=axis))
    logsumexp = staticmethod(lambda x, axis=None, keepdims=False: ops.logsumexp(x, axis=axis, keepdims=keepdims))

    # element-wise math
    square = staticmethod(ops.square)
    sqrt = staticmethod(ops.sqrt)
    exp = staticmethod(ops.exp)
    log = staticmethod(ops.log)
    abs = staticmethod(ops.abs)
    sign = staticmethod(ops.sign)
    round = staticmethod(ops.round)
    pow = staticmethod(lambda x, a: ops.power(x, a))
    clip = staticmethod(_k_clip)
    maximum = staticmethod(ops.maximum)
    minimum = staticmethod(ops.minimum)
    sin = staticmethod(ops.sin)
    cos = staticmethod(ops.cos)
    tanh = staticmethod(ops.tanh)
    sigmoid = staticmethod(ops.sigmoid)
    hard_sigmoid = staticmethod(_k_hard_sigmoid)
    softplus = staticmethod(ops.softplus)
    softsign = staticmethod(ops.softsign)
    relu = staticmethod(_k_relu)
    elu = staticmethod(lambda x, alpha=1.0: keras.activations.elu(x, alpha=alpha))
    softmax = staticmethod(lambda x, axis=-1: ops.softmax(x, axis=axis))
    l2_normalize = staticmethod(_k_l2_normalize)
    stop_gradient = staticmethod(lambda x: ops.stop_gradient(ops.convert_to_tensor(x)))
    bias_add = staticmethod(lambda x, bias, data_format=None: x + bias)
    dropout = staticmethod(_k_dropout)

    # comparisons, selection
    equal = staticmethod(ops.equal)
    not_equal = staticmethod(ops.not_equal)
    greater = staticmethod(ops.greater)
    greater_equal = staticmethod(ops.greater_equal)
    less = staticmethod(ops.less)
    less_equal = staticmethod(ops.less_equal)
    switch = staticmethod(_k_switch)
    where = staticmethod(where)
    in_train_phase = staticmethod(_k_in_train_phase)
    in_test_phase = staticmethod(
        lambda x, alt, training=None: _k_in_train_phase(alt, x, training)
    )

    # shape manipulation
    reshape = staticmethod(reshape)
    flatten = staticmethod(flatten)
    batch_flatten = staticmethod(lambda x: ops.reshape(x, (ops.shape(x)[0], -1)))
    expand_dims = staticmethod(lambda x, axis=-1: ops.expand_dims(x, axis))
    squeeze = staticmethod(lambda x, axis: ops.squeeze(x, axis))
    concatenate = staticmethod(_k_concatenate)
    stack = staticmethod(lambda x, axis=0: ops.stack(list(x), axis=axis))
    permute_dimensions = staticmethod(lambda x, pattern: ops.transpose(x, tuple(pattern)))
    transpose = staticmethod(lambda x: ops.transpose(x))
    tile = staticmethod(lambda x, n: ops.tile(x, n))
    repeat = staticmethod(_k_repeat)
    repeat_elements = staticmethod(lambda x, rep, axis: ops.repeat(x, rep, axis=axis))
    reverse = staticmethod(lambda x, axes: ops.flip(x, axis=axes))
    gather = staticmethod(lambda reference, indices: ops.take(reference, indices, axis=0))
    one_hot = staticmethod(lambda indices, num_classes: ops.one_hot(indices, num_classes))
    temporal_padding = staticmethod(
        lambda x, padding=(1, 1): ops.pad(x, [[0, 0], list(padding), [0, 0]])
    )

    # products
    dot = staticmethod(_k_dot)
    batch_dot = staticmethod(_k_batch_dot)

    # losses
    categorical_crossentropy = staticmethod(
        lambda target, output, from_logits=False, axis=-1: ops.categorical_crossentropy(
            target, output, from_logits=from_logits, axis=axis
        )
    )
    sparse_categorical_crossentropy = staticmethod(_k_sparse_cce)
    binary_crossentropy = staticmethod(
        lambda target, output, from_logits=False: ops.binary_crossentropy(
            target, output, from_logits=from_logits
        )
    )

    # random: seed=None works everywhere (inside compiled JAX code: XLA's stateful generator)
    random_uniform = staticmethod(_k_random_uniform)
    random_normal = staticmethod(_k_random_normal)
    truncated_normal = staticmethod(_k_truncated_normal)
    random_binomial = staticmethod(_k_random_binomial)
    random_bernoulli = staticmethod(_k_random_binomial)

    def __getattr__(self, name):
        if name in _K_ABSENT:
            why, fix = _K_ABSENT[name]
            raise AttributeError(f"K.{name} does not exist in bert4keras3: {why}; {fix}")
        raise AttributeError(
            f"K.{name} is not provided; use keras.ops (see docs/porting.md, 'backend and K')"
        )

    def __dir__(self):
        return sorted(k for k in vars(type(self)) if not k.startswith("_"))


#: The Keras-2 backend namespace of bert4keras scripts (``from bert4keras3.backend import K``).
K = _Keras2Backend()
