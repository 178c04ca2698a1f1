"""Sharding layouts for ``keras.distribution`` (model parallelism).

:func:`layout_map` returns a ``keras.distribution.LayoutMap`` for
``keras.distribution.ModelParallel``, derived from the layers of a built model, with
one exact-path entry per sharded variable (Megatron-style tensor parallelism):

* column-parallel projections (attention ``q/k/v_dense`` and DeBERTa's
  ``pos_q/pos_k_dense``, feed-forward ``i0_dense``, ``i1_dense``, ..., GAU's
  ``i_dense`` / ``uq_dense`` / ``k_dense`` / ``v_dense``): kernel ``(None, "model")``,
  bias ``("model",)``, LoRA ``lora_kernel_b`` ``(None, "model")``;
* row-parallel projections (attention and feed-forward ``o_dense``): kernel
  ``("model", None)``, LoRA ``lora_kernel_a`` ``("model", None)``, bias replicated;
* vocabulary matrices (token embeddings, T5's ``Decoder-Output-LM``, the MLM bias):
  the vocabulary axis on ``"model"``;
* everything else (norms, position and segment tables, relative position biases, pooler
  and MLM transform denses, the user's own layers) is replicated.

The layout only says where each variable lives; the compiled program is the same
computation (XLA inserts the collectives), so results equal single-device results up
to float reassociation.

Example (JAX; 8 devices as 4 data-parallel x 2 model-parallel)::

    import keras
    from bert4keras3.distribution import layout_map
    from bert4keras3.models import build_transformer_model

    mesh = keras.distribution.DeviceMesh((4, 2), ("batch", "model"))
    build = lambda: build_transformer_model(config, model="bert", with_mlm=True,
                                            return_keras_model=False)
    dist = keras.distribution.ModelParallel(layout_map=layout_map(build, mesh),
                                            batch_dim_name="batch")
    with dist.scope():
        model = build_transformer_model(config, checkpoint, model="bert", with_mlm=True)
"""
import re

import keras

from bert4keras3.layers.core import BiasAdd, FeedForward, MultiHeadAttention
from bert4keras3.layers.gau import GatedAttentionUnit

__all__ = ["layout_map", "weight_layouts"]

#: layer class -> (column-parallel sublayer attributes, row-parallel sublayer attributes);
#: subclasses match their base (DisentangledSelfAttention, T5FeedForward)
PARALLEL_SUBLAYERS = (
    (MultiHeadAttention, ("q_dense", "k_dense", "v_dense", "pos_q_dense", "pos_k_dense"),
     ("o_dense",)),
    (FeedForward, ("in_denses",), ("o_dense",)),
    (GatedAttentionUnit, ("i_dense", "uq_dense", "k_dense", "v_dense"), ("o_dense",)),
)


def _sublayers(layer, attrs):
    out = []
    for attr in attrs:
        value = getattr(layer, attr, None)
        for sub in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(sub, keras.layers.Dense):
                out.append(sub)
    return out


def _dense_layouts(dense, column, axis):
    """``[(variable, axes)]`` for a column- or row-parallel ``Dense``."""
    out = []
    for w in dense.weights:
        name = w.path.rsplit("/", 1)[-1]
        if name == "kernel":
            out.append((w, (None, axis) if column else (axis, None)))
        elif name == "bias" and column:
            out.append((w, (axis,)))
        elif name == "lora_kernel_b" and column:
            out.append((w, (None, axis)))
        elif name == "lora_kernel_a" and not column:
            out.append((w, (axis, None)))
    return out


def _all_layers(model):
    seen, stack, out = set(), [model], []
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        out.append(layer)
        stack.extend(reversed(layer._flatten_layers(include_self=False, recursive=False)))
    return out


def _vocab_variables(transformer, model):
    """The variables with one row per vocabulary entry.

    With the builder object: its ``VOCAB_WEIGHTS`` (under its ``prefix``). With a bare
    ``keras.Model``: the tables of ``keras.layers.Embedding`` layers with the largest
    ``input_dim`` (the token vocabulary; segment tables are smaller) and the 1-D
    ``BiasAdd`` biases of that size (the MLM bias).
    """
    if transformer is not None:
        names = {transformer.prefixed(n) for n in getattr(transformer, "VOCAB_WEIGHTS", ())}
        return [w for w in model.weights if w.path in names]
    layers = _all_layers(model)
    tables = [l for l in layers if isinstance(l, keras.layers.Embedding)]
    if not tables:
        return []
    vocab = max(l.input_dim for l in tables)
    out = [l.embeddings for l in tables if l.input_dim == vocab]
    out += [w for l in layers if isinstance(l, BiasAdd)
            for w in l.weights if tuple(w.shape) == (vocab,)]
    return out


def _resolve(model_or_builder):
    """``(transformer or None, keras.Model)`` from a model, builder object or callable."""
    obj = model_or_builder
    if callable(obj) and not isinstance(obj, keras.Model) and not hasattr(obj, "model"):
        # build once without allocating: variables created in a StatelessScope stay
        # uninitialised (shapes and paths only)
        with keras.StatelessScope():
            obj = obj()
    if isinstance(obj, keras.Model):
        return None, obj
    model = getattr(obj, "model", None)
    if isinstance(model, keras.Model):
        return obj, model
    raise TypeError(
        "layout_map expects a keras.Model, a bert4keras3 builder object (with .model, from "
        "build_transformer_model(..., return_keras_model=False)) or a zero-argument "
        f"callable returning one; found {type(model_or_builder).__name__}"
    )


def weight_layouts(model_or_builder, model_axis="model"):
    """``{variable path: axes tuple}`` of the sharded variables (see :func:`layout_map`).

    Variables not listed are replicated. No mesh is needed (nothing is checked against
    axis sizes here).
    """
    return _layouts(model_or_builder, model_axis)[0]


def _layouts(model_or_builder, model_axis):
    """``({path: axes}, {path: shape})`` of the sharded variables."""
    transformer, model = _resolve(model_or_builder)
    layouts = []
    for layer in _all_layers(model):
        for cls, column, row in PARALLEL_SUBLAYERS:
            if isinstance(layer, cls):
                for dense in _sublayers(layer, column):
                    layouts += _dense_layouts(dense, True, model_axis)
                for dense in _sublayers(layer, row):
                    layouts += _dense_layouts(dense, False, model_axis)
                break
    for w in _vocab_variables(transformer, model):
        layouts.append((w, (model_axis,) + (None,) * (len(w.shape) - 1)))
    out = {}
    for w, axes in layouts:
        if w.path in out and out[w.path] != axes:
            raise ValueError(f"variable path {w.path!r} is shared by variables with different "
                             f"layouts {out[w.path]} and {axes}; give the layers unique names")
        out[w.path] = (axes, tuple(w.shape))
    return {path: axes for path, (axes, _) in out.items()}, {
        path: shape for path, (_, shape) in out.items()}


def layout_map(model_or_builder, mesh, model_axis="model"):
    """A ``keras.distribution.LayoutMap`` sharding a bert4keras3 model on ``mesh``.

    Args:
        model_or_builder: a built ``keras.Model``, the builder object of
            ``build_transformer_model(..., return_keras_model=False)``, or a zero-argument
            callable returning either. A callable is called once inside a
            ``keras.StatelessScope`` (variables get shapes and paths but no memory), so
            pass the same builder that will build the real model under
            ``distribution.scope()``. Variable paths come from layer names: layers that
            should be sharded need stable names (all of this package's layers have them).
        mesh: a ``keras.distribution.DeviceMesh`` with an axis named ``model_axis``
            (other axes, e.g. ``"batch"``, only replicate the weights).
        model_axis: the mesh axis the weights are split over.

    Returns a ``LayoutMap`` with one exact-path entry (escaped as a regex) per sharded
    variable; variables without an entry are replicated. Raises ``ValueError`` if a
    sharded dimension is not divisible by the size of ``model_axis``, naming the variable,
    its shape, the dimension and the axis.
    """
    if not isinstance(mesh, keras.distribution.DeviceMesh):
        raise TypeError(f"mesh must be a keras.distribution.DeviceMesh, found "
                        f"{type(mesh).__name__}")
    names = list(mesh.axis_names)
    if model_axis not in names:
        raise ValueError(f"the mesh has no axis {model_axis!r} to shard the weights over; "
                         f"its axes are {names}")
    size = int(mesh.shape[names.index(model_axis)])
    layouts, shapes = _layouts(model_or_builder, model_axis)
    problems = []
    for path, axes in layouts.items():
        for dim, axis in enumerate(axes):
            if axis is not None and shapes[path][dim] % size:
                problems.append(f"{path!r} of shape {shapes[path]}: dimension {dim} "
                                f"({shapes[path][dim]}) is not divisible by the size {size} "
                                f"of mesh axis {model_axis!r}")
    if problems:
        raise ValueError("cannot shard these variables evenly:\n  " + "\n  ".join(problems)
                         + f"\nchoose a {model_axis!r} axis size dividing them (heads, "
                         "intermediate and vocabulary sizes)")
    result = keras.distribution.LayoutMap(mesh)
    for path, axes in layouts.items():
        # exact entries: LayoutMap looks a path up as a key, then tries every key as a
        # regex; a path of word characters, "/" and "-" is a regex matching only itself
        result[path if re.fullmatch(r"[\w/-]+", path) else re.escape(path)] = axes
    return result
