"""LoRA (low-rank adaptation) on the attention / feed-forward projections of a model.

Keras 3 gives every ``keras.layers.Dense`` a LoRA mode (``layer.enable_lora(rank)``: the
kernel is frozen and ``kernel + (alpha / rank) * A @ B`` is used, ``B`` starting at zero).
This module picks the right denses of a bert4keras3 model from its layer objects,
freezes everything else, and saves / loads the LoRA matrices alone.

Targets, by the class of the block that holds the denses (every family is built from
these blocks, so the choice is the same for bert, roberta, roformer, roformer_v2, nezha,
electra, albert, gpt, gpt2, gpt2_ml, deberta_v2/v3, t5, t5.1.1, mt5.1.1, gau_alpha):

* ``"attention"``: ``q_dense``, ``k_dense``, ``v_dense``, ``o_dense`` of every
  :class:`~bert4keras3.layers.MultiHeadAttention` (self- and T5 cross-attention, DeBERTa's
  :class:`~bert4keras3.layers.DisentangledSelfAttention`; DeBERTa's separate position
  projections ``pos_q_dense`` / ``pos_k_dense`` are not targets). A
  :class:`~bert4keras3.layers.GatedAttentionUnit` (GAU-alpha) has no per-role q/k/v
  projections: its ``i_dense`` yields the gate ``u``, the values ``v`` and the shared
  query/key base ``z`` in one product, and ``o_dense`` maps back, so both are its
  "attention" targets (``uq_dense`` / ``k_dense`` / ``v_dense`` / ``o_dense`` for a
  cross-attention GAU).
* ``"ffn"``: ``i0_dense`` (``i1_dense``, ... for gated T5.1.1 / mT5 blocks) and
  ``o_dense`` of every :class:`~bert4keras3.layers.FeedForward` (T5's included). GAU-alpha
  has no feed-forward block, so ``"ffn"`` selects nothing there.
* ``"all"``: both.

A layer object shared by several blocks (ALBERT) gets one LoRA pair, used at every depth.

Example::

    from bert4keras3.lora import enable_lora, save_lora_weights, load_lora_weights
    model = build_transformer_model(config, checkpoint, model="bert")
    enabled = enable_lora(model, rank=8)          # 4 denses per attention block
    model.compile(optimizer="adam", loss=...)     # compile after enabling
    model.fit(...)
    save_lora_weights(model, "adapter.npz")       # A/B matrices only

    fresh = build_transformer_model(config, checkpoint, model="bert")
    load_lora_weights(fresh, "adapter.npz")       # enables LoRA where saved, sets A/B
"""
import json

import numpy as np

import keras

__all__ = ["TARGETS", "lora_targets", "enable_lora", "lora_layers", "save_lora_weights",
           "load_lora_weights"]

#: the target groups :func:`enable_lora` knows
TARGETS = ("attention", "ffn", "all")

_META_KEY = "__lora_meta__"


def _keras_model(model):
    """The ``keras.Model`` of ``model`` (a Keras model or a builder object with ``.model``)."""
    if isinstance(model, keras.Model):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, keras.Model):
        return inner
    raise TypeError("expected a keras.Model or a bert4keras3 builder object with .model, "
                    f"found {type(model).__name__}")


def _unique_layers(model):
    """Every layer under ``model`` (nested ones included), each object once, in order."""
    seen, out = set(), []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if id(layer) not in seen:
            seen.add(id(layer))
            out.append(layer)
    return out


def _block_denses(block, group):
    """``[(role, dense)]`` of ``block`` in target group ``group`` (``"attention"``/``"ffn"``)."""
    from bert4keras3.layers import FeedForward, GatedAttentionUnit, MultiHeadAttention

    if group == "attention":
        if isinstance(block, MultiHeadAttention):
            names = ("q_dense", "k_dense", "v_dense", "o_dense")
        elif isinstance(block, GatedAttentionUnit):
            names = (("i_dense", "o_dense") if block.self_attention
                     else ("uq_dense", "k_dense", "v_dense", "o_dense"))
        else:
            return []
        return [(n, getattr(block, n)) for n in names]
    if isinstance(block, FeedForward):
        return ([(f"i{k}_dense", d) for k, d in enumerate(block.in_denses)]
                + [("o_dense", block.o_dense)])
    return []


def _groups(targets):
    if isinstance(targets, str):
        targets = (targets,)
    targets = tuple(targets)
    bad = [t for t in targets if t not in TARGETS]
    if bad or not targets:
        raise ValueError(f"LoRA targets must be a non-empty selection of {TARGETS}, "
                         f"found {targets!r}")
    if "all" in targets:
        return ("attention", "ffn")
    return tuple(g for g in ("attention", "ffn") if g in targets)


def _dense_path(dense):
    """Stable key of a dense: its kernel's variable path without the variable name."""
    path = dense._kernel.path if hasattr(dense, "_kernel") else dense.kernel.path
    return path.rsplit("/", 1)[0]


def lora_targets(model, targets=("attention",)):
    """The denses :func:`enable_lora` would adapt: a dict ``path -> keras.layers.Dense``.

    ``path`` is the dense's weight path prefix, e.g.
    ``"Transformer-0-MultiHeadSelfAttention/q_dense"`` (the key used by
    :func:`save_lora_weights`). Shared layers (ALBERT) appear once.
    """
    model = _keras_model(model)
    groups = _groups(targets)
    out = {}
    for block in _unique_layers(model):
        for group in groups:
            for _, dense in _block_denses(block, group):
                if not dense.built:
                    raise ValueError(f"LoRA target {block.name}/{dense.name} is not built; "
                                     "build the model first")
                out.setdefault(_dense_path(dense), dense)
    return out


def lora_layers(model):
    """The denses of ``model`` whose LoRA is enabled: a dict ``path -> Dense``."""
    model = _keras_model(model)
    return {_dense_path(l): l for l in _unique_layers(model)
            if isinstance(l, keras.layers.Dense) and getattr(l, "lora_enabled", False)}


def _named_layers(model, names):
    """``{name: layer}`` for ``names``; raises naming those the model lacks."""
    layers = {l.name: l for l in _unique_layers(model)}
    missing = [n for n in names if n not in layers]
    if missing:
        raise ValueError(f"train_layers: no layer named {missing} in the model; layer names "
                         f"are e.g. {sorted(layers)[:8]}")
    return {n: layers[n] for n in names}


def _freeze_others(model, keep_layers):
    """Make every variable non-trainable except LoRA matrices and those of ``keep_layers``."""
    layers = _named_layers(model, keep_layers)
    keep = set()
    for name in keep_layers:
        keep.update(id(v) for v in layers[name].weights)
    lora = set()
    for dense in lora_layers(model).values():
        lora.update((id(dense.lora_kernel_a), id(dense.lora_kernel_b)))
    for v in model.weights:
        if id(v) in lora or id(v) in keep:
            continue
        v.trainable = False


def enable_lora(model, rank, targets=("attention",), alpha=None, train_layers=(),
                freeze=True, a_initializer="he_uniform"):
    """Switch on LoRA of rank ``rank`` on the target denses of ``model``; freeze the rest.

    Args:
        model: a ``keras.Model`` (or a builder object with ``.model``, e.g. T5's with
            ``.encoder`` / ``.decoder``, which share the layers) built by this package,
            possibly with task layers on top.
        rank: LoRA rank ``r`` (positive int).
        targets: ``"attention"``, ``"ffn"``, ``"all"`` or a tuple of them (see the module
            docstring for what each family's blocks contribute).
        alpha: LoRA ``alpha`` (the update is scaled by ``alpha / rank``); ``None`` = ``rank``.
        train_layers: names of layers that stay fully trainable (e.g. a task head added on
            top of the base model, ``"Pooler-Dense"``, ``"MLM-Norm"``).
        freeze: make every other weight non-trainable (embeddings, norms, heads, the
            frozen kernels and biases of the target denses). ``False`` only adds LoRA.
        a_initializer: of the ``A`` matrices (``B`` starts at zero, so the model's output
            is unchanged until it trains).

    Returns the dict ``path -> Dense`` of the denses it enabled. Compile (again) after
    calling it: the trainable weights change. Raises if LoRA is already on for a target.
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"LoRA rank must be a positive int, found {rank!r}")
    kmodel = _keras_model(model)
    if not freeze and train_layers:
        raise ValueError("train_layers only applies with freeze=True")
    _named_layers(kmodel, tuple(train_layers))
    found = lora_targets(kmodel, targets)
    if not found:
        raise ValueError(f"model {kmodel.name!r} has no LoRA target for {targets!r} (no "
                         "MultiHeadAttention / GatedAttentionUnit / FeedForward layers)")
    already = [p for p, d in found.items() if d.lora_enabled]
    if already:
        raise ValueError(f"LoRA is already enabled on {already[:4]}; enable it once per model")
    for dense in found.values():
        dense.enable_lora(int(rank), lora_alpha=alpha, a_initializer=a_initializer)
    if freeze:
        _freeze_others(kmodel, tuple(train_layers))
    return found


def save_lora_weights(model, path):
    """Save only the LoRA ``A`` / ``B`` matrices of ``model`` to ``path`` (NumPy ``.npz``).

    Keys are ``"<dense path>/lora_kernel_a"`` / ``"/lora_kernel_b"`` (e.g.
    ``"Transformer-0-MultiHeadSelfAttention/q_dense/lora_kernel_a"``); the file also
    records each dense's rank and alpha. Returns the number of denses saved.
    """
    denses = lora_layers(model)
    if not denses:
        raise ValueError("the model has no LoRA-enabled layer; call enable_lora first")
    arrays, meta = {}, {}
    for key, dense in denses.items():
        arrays[f"{key}/lora_kernel_a"] = keras.ops.convert_to_numpy(dense.lora_kernel_a)
        arrays[f"{key}/lora_kernel_b"] = keras.ops.convert_to_numpy(dense.lora_kernel_b)
        meta[key] = {"rank": int(dense.lora_rank), "alpha": float(dense.lora_alpha)}
    arrays[_META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    if not str(path).endswith(".npz"):
        raise ValueError(f"LoRA weights are saved as a .npz file; found path {str(path)!r}")
    np.savez(path, **arrays)
    return len(denses)


def load_lora_weights(model, path, freeze=True, train_layers=()):
    """Load LoRA matrices saved by :func:`save_lora_weights` into ``model``.

    ``model`` is built from the same base weights as the tuned one. Denses without LoRA
    get it enabled with the saved rank and alpha (then, with ``freeze``, the other weights
    are frozen as by :func:`enable_lora`); denses with LoRA already on must have the saved
    rank and alpha. Raises, naming them, if the file holds a dense the model lacks, if the
    model has LoRA on a dense the file lacks, or on a shape mismatch. Returns the number
    of denses loaded.
    """
    kmodel = _keras_model(model)
    _named_layers(kmodel, tuple(train_layers))
    with np.load(path) as data:
        if _META_KEY not in data.files:
            raise ValueError(f"{path!r} is not a LoRA weights file of save_lora_weights "
                             f"(no {_META_KEY!r} entry)")
        meta = json.loads(bytes(data[_META_KEY]).decode("utf-8"))
        arrays = {k: data[k] for k in data.files if k != _META_KEY}
    candidates = {_dense_path(l): l for l in _unique_layers(kmodel)
                  if isinstance(l, keras.layers.Dense) and l.built}
    missing = sorted(k for k in meta if k not in candidates)
    if missing:
        raise ValueError(f"{path!r} holds LoRA weights for {len(missing)} dense(s) the model "
                         f"does not have, e.g. {missing[:4]}; build the same model (family, "
                         "layers, prefix) as the one that was tuned")
    extra = sorted(k for k in lora_layers(kmodel) if k not in meta)
    if extra:
        raise ValueError(f"the model has LoRA enabled on {len(extra)} dense(s) that {path!r} "
                         f"does not hold, e.g. {extra[:4]}")
    for key, info in meta.items():
        dense = candidates[key]
        if dense.lora_enabled:
            if dense.lora_rank != info["rank"] or float(dense.lora_alpha) != info["alpha"]:
                raise ValueError(
                    f"LoRA of {key} has rank {dense.lora_rank} / alpha {dense.lora_alpha}; "
                    f"{path!r} has rank {info['rank']} / alpha {info['alpha']}")
    newly = False
    for key, info in meta.items():
        dense = candidates[key]
        for name in ("lora_kernel_a", "lora_kernel_b"):
            value = arrays.get(f"{key}/{name}")
            if value is None:
                raise ValueError(f"{path!r} lacks {key}/{name}")
            a_shape = (dense.kernel.shape[0], info["rank"])
            want = a_shape if name == "lora_kernel_a" else (info["rank"], dense.kernel.shape[1])
            if tuple(value.shape) != tuple(want):
                raise ValueError(f"{key}/{name}: the model expects shape {tuple(want)}, "
                                 f"{path!r} has {tuple(value.shape)}")
    for key, info in meta.items():
        dense = candidates[key]
        if not dense.lora_enabled:
            alpha = info["alpha"]
            dense.enable_lora(info["rank"], lora_alpha=alpha)
            newly = True
        dense.lora_kernel_a.assign(arrays[f"{key}/lora_kernel_a"])
        dense.lora_kernel_b.assign(arrays[f"{key}/lora_kernel_b"])
    if newly and freeze:
        _freeze_others(kmodel, tuple(train_layers))
    return len(meta)
