"""Training-loop extensions that need more than a loss: adversarial training (FGM).

bert4keras' examples patched Keras 2's graph-mode ``train_function`` (``K.gradients``,
``K.function``); Keras 3 has neither, so the same recipes live here, written once per
backend's ``train_step``.
"""
import keras
from keras import ops

from bert4keras3.backend import dense_gradient

__all__ = ["adversarial_training"]


def _find_layer(model, name):
    """The layer called ``name`` in ``model`` or in any model nested in it."""
    stack = [model]
    while stack:
        current = stack.pop()
        for layer in getattr(current, "layers", []):
            if layer.name == name:
                return layer
            stack.append(layer)
    return None


def _perturbation(gradient, epsilon):
    """``epsilon * g / (||g|| + 1e-8)`` (the fast gradient method, norm over the whole matrix)."""
    return epsilon * gradient / (ops.sqrt(ops.sum(ops.square(gradient))) + 1e-8)


def adversarial_training(model, embedding_name="Embedding-Token", epsilon=1.0):
    """Add FGM adversarial training to a compiled ``model`` (bert4keras' recipe, kexue.fm/7234).

    Each training step computes the gradient ``g`` of the loss with respect to the embedding
    matrix of the layer ``embedding_name``, adds ``epsilon * g / ||g||`` to that matrix, runs
    the normal training step (forward, backward, optimizer update) on the perturbed matrix,
    then subtracts the perturbation again. Works with ``fit`` / ``train_on_batch`` on JAX,
    TensorFlow and PyTorch; call it after ``compile``. Returns ``model``.
    """
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", False):
        raise ValueError("adversarial_training: expected a compiled model (call model.compile(...) "
                         "first), found an uncompiled one")
    layer = _find_layer(model, embedding_name)
    if layer is None:
        raise ValueError(f"adversarial_training: expected an Embedding layer named "
                         f"{embedding_name!r} in the model, found none")
    variable = getattr(layer, "embeddings", None)
    if variable is None:
        raise ValueError(f"adversarial_training: layer {embedding_name!r} "
                         f"({type(layer).__name__}) has no `embeddings` matrix")
    if not variable.trainable:
        raise ValueError(f"adversarial_training: the embeddings of {embedding_name!r} are not "
                         f"trainable")
    base_step = model.train_step
    backend = keras.backend.backend()
    unpack = keras.utils.unpack_x_y_sample_weight

    if backend == "jax":
        import jax

        index = next(i for i, v in enumerate(model.trainable_variables) if v is variable)

        def train_step(state, data):
            trainable, non_trainable, optimizer_vars, metrics_vars = state
            x, y, sample_weight = unpack(data)

            def loss_of(embeddings):
                values = list(trainable)
                values[index] = embeddings
                loss, _ = model.compute_loss_and_updates(
                    values, non_trainable, metrics_vars, x, y, sample_weight,
                    training=True, optimizer_variables=optimizer_vars)
                return loss

            delta = _perturbation(jax.grad(loss_of)(trainable[index]), epsilon)
            trainable = list(trainable)
            trainable[index] = trainable[index] + delta
            logs, state = base_step((trainable, non_trainable, optimizer_vars, metrics_vars),
                                    data)
            trainable = list(state[0])
            trainable[index] = trainable[index] - delta
            return logs, (trainable,) + tuple(state[1:])

    else:
        def embedding_gradient(x, y, sample_weight):
            if backend == "tensorflow":
                import tensorflow as tf

                with tf.GradientTape() as tape:
                    y_pred = model(x, training=True)
                    loss = model.compute_loss(x=x, y=y, y_pred=y_pred,
                                              sample_weight=sample_weight, training=True)
                return dense_gradient(tape.gradient(loss, variable.value), variable)
            if backend == "torch":
                import torch

                y_pred = model(x, training=True)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                          training=True)
                (gradient,) = torch.autograd.grad(loss, variable.value)
                return gradient.detach()
            raise NotImplementedError(f"adversarial_training: backend {backend!r} is not "
                                      f"supported (jax, tensorflow, torch)")

        def train_step(data):
            delta = _perturbation(embedding_gradient(*unpack(data)), epsilon)
            variable.assign(variable.value + delta)
            logs = base_step(data)
            variable.assign(variable.value - delta)
            return logs

    model.train_step = train_step
    model.train_function = None  # rebuilt around the new step by the next fit / train_on_batch
    return model
