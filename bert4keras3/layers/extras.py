"""bert4keras' utility layers: the ``Loss`` layer, masked pooling, sequence/batch concat.

* :class:`Loss`: subclass it and implement ``compute_loss(inputs, mask=None)``; the
  value is added to the model with ``add_loss``, so ``model.compile(optimizer)`` +
  ``model.fit(x)`` (no ``y``) trains it on every backend;
* :class:`GlobalMaxPooling1D`: max over the unmasked steps (Keras 3's ignores the mask);
  ``GlobalAveragePooling1D`` is Keras' own, which already averages unmasked steps;
* :class:`Concatenate1D`: concatenation along the sequence axis that keeps the masks;
* :class:`BatchSplit` / :class:`BatchConcat`: split / join along the batch axis.
"""
import numpy as np

import keras
from keras import ops

from bert4keras3.layers.core import Layer

__all__ = [
    "Loss",
    "GlobalMaxPooling1D",
    "GlobalAveragePooling1D",
    "Concatenate1D",
    "BatchSplit",
    "BatchConcat",
]

register = keras.saving.register_keras_serializable(package="bert4keras3")

GlobalAveragePooling1D = keras.layers.GlobalAveragePooling1D


@register
class Loss(Layer):
    """A layer that defines a loss from its inputs (bert4keras' extension point).

    Subclass it and implement :meth:`compute_loss`; calling the layer adds the loss to
    the model and returns ``inputs`` (or ``inputs[output_axis]``, or a list for a list
    of axes). ``mask`` holds the Keras masks of the inputs (a list for a list input)::

        class CrossEntropy(Loss):
            def compute_loss(self, inputs, mask=None):
                y_true, y_pred = inputs
                y_mask = K.cast(mask[1], K.floatx())[:, 1:]
                loss = K.sparse_categorical_crossentropy(y_true[:, 1:], y_pred[:, :-1])
                return K.sum(loss * y_mask) / K.sum(y_mask)

        output = CrossEntropy(1)([model.inputs[0], model.outputs[0]])
        model = keras.Model(model.inputs, output)
        model.compile(optimizer=keras.optimizers.Adam(1e-5))
        model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator))

    Subclasses with constructor arguments need their own ``get_config`` (and
    registration) to be saved as ``.keras`` files; weights always save.
    """

    def __init__(self, output_axis=None, **kwargs):
        super().__init__(**kwargs)
        self.output_axis = output_axis

    def compute_loss(self, inputs, mask=None):
        """Return the scalar loss of ``inputs`` (``mask``: their Keras masks)."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement compute_loss(self, inputs, mask=None)"
        )

    def _select(self, items):
        if self.output_axis is None:
            return items
        if isinstance(self.output_axis, (list, tuple)):
            return [items[i] for i in self.output_axis]
        return items[self.output_axis]

    def call(self, inputs, mask=None):
        loss = self.compute_loss(inputs, mask)
        self.add_loss(loss)
        return self._select(inputs)

    def compute_output_shape(self, input_shape):
        return self._select(input_shape)

    def compute_output_spec(self, inputs, mask=None):
        # the selected inputs themselves (dtype included); compute_loss runs on real data
        return keras.tree.map_structure(
            lambda x: keras.KerasTensor(x.shape, x.dtype), self._select(inputs)
        )

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        return self._select(mask)

    def get_config(self):
        config = super().get_config()
        config.update(output_axis=self.output_axis)
        return config


@register
class GlobalMaxPooling1D(keras.layers.GlobalMaxPooling1D):
    """Max over the sequence axis that skips masked steps (bert4keras)."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        axis = 1 if self.data_format == "channels_last" else 2
        if mask is not None:
            keep = ops.expand_dims(ops.cast(mask, "bool"), 2 if axis == 1 else 1)
            inputs = ops.where(keep, inputs, ops.cast(float("-inf"), inputs.dtype))
        return ops.max(inputs, axis=axis, keepdims=self.keepdims)

    def compute_mask(self, inputs, mask=None):
        return None


@register
class Concatenate1D(Layer):
    """Concatenate sequences ``[batch, seq_i, dim]`` along the sequence axis.

    The output mask joins the inputs' masks (an input without a mask counts as all
    valid), which Keras' ``Concatenate`` does not do for mixed inputs.
    """

    def call(self, inputs):
        return ops.concatenate(list(inputs), axis=1)

    def compute_mask(self, inputs, mask=None):
        if mask is None or all(m is None for m in mask):
            return None
        masks = [
            ops.ones_like(x[..., 0], dtype="bool") if m is None else ops.cast(m, "bool")
            for x, m in zip(inputs, mask)
        ]
        return ops.concatenate(masks, axis=1)

    def compute_output_shape(self, input_shape):
        lengths = [s[1] for s in input_shape]
        total = None if any(n is None for n in lengths) else sum(lengths)
        return (input_shape[0][0], total) + tuple(input_shape[0][2:])


def _split_points(batch_size, parts):
    """End index of each part (the last part runs to the end)."""
    if np.ndim(parts) > 0:
        cumulative = np.cumsum(parts).astype("float64") / float(np.sum(parts))
        if isinstance(batch_size, int):
            return [int(c * batch_size) for c in cumulative]
        size = ops.cast(batch_size, "float32")
        return [ops.cast(c * size, "int32") for c in cumulative]
    if isinstance(batch_size, int):
        stride = -(-batch_size // parts)
    else:
        stride = ops.cast(ops.ceil(ops.cast(batch_size, "float32") / parts), "int32")
    return [stride * (i + 1) for i in range(parts)]


@register
class BatchSplit(Layer):
    """Split along the batch axis into ``parts`` pieces (bert4keras; manual data parallel).

    ``parts``: a number of (almost) equal pieces, or a list of proportions. A list input
    gives the pieces of each tensor in turn. (For multi-device training Keras 3 offers
    ``keras.distribution``.)
    """

    def __init__(self, parts, **kwargs):
        super().__init__(**kwargs)
        self.parts = parts

    def _count(self):
        return len(self.parts) if np.ndim(self.parts) > 0 else int(self.parts)

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            return [o for x in inputs for o in self.call(x)]
        ends = _split_points(ops.shape(inputs)[0], self.parts)
        starts = [0] + ends[:-1]
        return [inputs[s:] if i == len(ends) - 1 else inputs[s:e]
                for i, (s, e) in enumerate(zip(starts, ends))]

    def compute_mask(self, inputs, mask=None):
        if isinstance(inputs, (list, tuple)):
            masks = mask if isinstance(mask, (list, tuple)) else [None] * len(inputs)
            return [o for x, m in zip(inputs, masks) for o in self.compute_mask(x, m)]
        if mask is None:
            return [None] * self._count()
        if isinstance(mask, keras.KerasTensor):  # symbolic: sizes known only at run time
            return self.compute_output_spec(mask)
        return self.call(mask)

    def compute_output_spec(self, inputs):
        if isinstance(inputs, (list, tuple)):
            return [o for x in inputs for o in self.compute_output_spec(x)]
        return [keras.KerasTensor((None,) + tuple(inputs.shape[1:]), inputs.dtype)
                for _ in range(self._count())]

    def get_config(self):
        config = super().get_config()
        config.update(parts=list(self.parts) if np.ndim(self.parts) > 0 else self.parts)
        return config


@register
class BatchConcat(Layer):
    """Concatenate a list of tensors along the batch axis (inverse of :class:`BatchSplit`)."""

    def call(self, inputs):
        return ops.concatenate(list(inputs), axis=0)

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)) and all(m is not None for m in mask):
            return ops.concatenate(list(mask), axis=0)
        return None

    def compute_output_spec(self, inputs):
        return keras.KerasTensor((None,) + tuple(inputs[0].shape[1:]), inputs[0].dtype)

