"""Checkpoint readers and the weight loader.

Formats, detected from the path:

* Google / TensorFlow checkpoint prefix (``bert_model.ckpt``, ``model.ckpt-1000000``):
  read with NumPy (:mod:`bert4keras3.tf_checkpoint`; TensorFlow is not needed);
* Hugging Face: a model directory, ``*.safetensors`` (sharded index too),
  ``pytorch_model.bin`` (loaded with ``weights_only=True``);
* Keras ``*.weights.h5`` saved from this package.

Writer: :func:`save_google_checkpoint` (``Transformer.save_weights_as_checkpoint``) writes
a TensorFlow checkpoint under Google's variable names (NumPy too).

The name mapping itself lives beside each model (``GOOGLE_NAMES`` / ``HF_NAMES``): a
Keras weight path maps to ``name`` or ``(name, transform)``, the transform being ``"T"``
(transpose) or a :class:`Part` (one of several equal chunks of a fused variable, e.g.
GPT-2's ``c_attn`` holding q, k and v; the writer concatenates the parts back).
"""
import collections
import json
import os
import re
import warnings

import numpy as np

import keras

from bert4keras3.tf_checkpoint import CheckpointReader, write_checkpoint

__all__ = [
    "detect_format",
    "open_checkpoint",
    "load_into",
    "save_google_checkpoint",
    "CheckpointError",
    "OPTIMIZER_PATTERNS",
    "Part",
]

#: checkpoint variables that belong to optimizers / bookkeeping, never reported
OPTIMIZER_PATTERNS = (
    r"(^|/)global_step$", r"/adam_[mv]$", r"/Adam(_\d+)?$", r"_slot_v[cr]?$",
    r"/Momentum$", r"/RMSProp(_\d+)?$", r"/Adafactor", r"(^|/)beta[12]_power$",
    r"(^|/)(good|bad)_steps$", r"(^|/)loss_scale$", r"/ExponentialMovingAverage$",
    r"/lamb_[mv]$", r"/accum$",
)


class CheckpointError(ValueError):
    """Raised when a checkpoint does not fit the model (missing or misshapen weights)."""


def detect_format(path):
    """Return ``"keras"``, ``"hf"`` or ``"google"`` for a checkpoint path."""
    path = os.fspath(path)
    if path.endswith(".weights.h5") or path.endswith(".h5"):
        fmt = "keras"
    elif os.path.isdir(path):
        fmt = "hf"
    elif path.endswith((".safetensors", ".bin", ".pt", ".pth", ".index.json")):
        fmt = "hf"
    else:
        fmt = "google"
    if fmt == "google":
        if not (os.path.exists(path + ".index") or os.path.exists(path)):
            raise FileNotFoundError(
                f"checkpoint not found: expected a TensorFlow checkpoint prefix with "
                f"{path!r}.index beside it, a Hugging Face directory / *.safetensors / "
                f"pytorch_model.bin, or a *.weights.h5 file; found nothing at {path!r}"
            )
    elif not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r} does not exist")
    return fmt


class Part:
    """Transform: chunk ``index`` of ``count`` equal chunks of a variable along ``axis``.

    ``squeeze``: axes of the checkpoint variable (size 1) dropped after the split, e.g.
    OpenAI's GPT-2 stores ``attn/c_attn/w`` as ``[1, n, 3n]`` with q, k, v side by side:
    the query kernel is ``Part(0, 3, axis=-1, squeeze=(0,))`` -> ``[n, n]``;
    ``Part(0, 1, squeeze=(0,))`` only drops the leading axis. Writing a checkpoint
    (:func:`save_google_checkpoint`) inserts the axes again and concatenates the parts
    of one name in ``index`` order, so every part must be mapped.
    """

    def __init__(self, index, count, axis=-1, squeeze=()):
        if not 0 <= index < count:
            raise ValueError(f"Part index must be in [0, {count}), found {index}")
        self.index, self.count, self.axis = int(index), int(count), int(axis)
        self.squeeze = tuple(int(a) for a in squeeze)

    def __repr__(self):
        return (f"Part({self.index}, {self.count}, axis={self.axis}"
                + (f", squeeze={self.squeeze}" if self.squeeze else "") + ")")

    def __eq__(self, other):
        return isinstance(other, Part) and repr(self) == repr(other)

    def __hash__(self):
        return hash(repr(self))

    def shape(self, shape):
        """The shape :meth:`load` returns for a checkpoint variable of ``shape``;
        ValueError when it does not split."""
        shape = tuple(shape)
        ndim = len(shape)
        axes = [a % ndim if -ndim <= a < ndim else None for a in self.squeeze + (self.axis,)]
        if None in axes:
            raise ValueError(f"{self!r} needs a variable with more axes; found shape {shape}")
        size = shape[axes[-1]]
        if size % self.count:
            raise ValueError(f"{self!r}: axis {self.axis} of shape {shape} does "
                             f"not split into {self.count} equal parts")
        for a in axes[:-1]:
            if shape[a] != 1:
                raise ValueError(f"{self!r}: axis {a} of shape {shape} is not 1")
        out = list(shape)
        out[axes[-1]] = size // self.count
        return tuple(d for i, d in enumerate(out) if i not in axes[:-1])

    def load(self, array):
        """The chunk of the checkpoint ``array``; ValueError when it does not split."""
        array = np.asarray(array)
        self.shape(array.shape)
        ndim = array.ndim
        step = array.shape[self.axis] // self.count
        out = np.take(array, np.arange(self.index * step, (self.index + 1) * step),
                      axis=self.axis)
        if not self.squeeze:
            return out
        return np.squeeze(out, axis=tuple(a % ndim for a in self.squeeze))

    @staticmethod
    def join(name, pieces):
        """One variable from ``{Part: array}`` (every part of ``name``), inverse of ``load``."""
        parts = sorted(pieces, key=lambda p: p.index)
        first = parts[0]
        if any((p.count, p.axis, p.squeeze) != (first.count, first.axis, first.squeeze)
               for p in parts):
            raise ValueError(f"the parts of {name!r} disagree: {parts}")
        indices = [p.index for p in parts]
        if indices != list(range(first.count)):
            missing = sorted(set(range(first.count)) - set(indices))
            raise ValueError(f"cannot write {name!r}: parts {missing} of {first.count} have "
                             "no model weight (a fused variable needs all its parts)")
        arrays = []
        for p in parts:
            array = np.asarray(pieces[p])
            # insert the squeezed axes back, in increasing order of the full rank
            ndim = array.ndim + len(p.squeeze)
            for a in sorted(a % ndim for a in p.squeeze):
                array = np.expand_dims(array, a)
            arrays.append(array)
        return np.concatenate(arrays, axis=first.axis)


def transformed_shape(transform, shape):
    """The shape :func:`apply_transform` gives a checkpoint variable of ``shape``."""
    if transform is None:
        return tuple(shape)
    if transform == "T":
        return tuple(shape)[::-1]
    if isinstance(transform, Part):
        return transform.shape(shape)
    raise ValueError(f"unknown transform {transform!r}: expected None, 'T' or a Part")


def apply_transform(transform, array):
    """A checkpoint array as the model weight wants it (``None``, ``"T"`` or :class:`Part`)."""
    if transform is None:
        return array
    if transform == "T":
        return array.T
    if isinstance(transform, Part):
        return transform.load(array)
    raise ValueError(f"unknown transform {transform!r}: expected None, 'T' or a Part")


class GoogleReader:
    """Read variables of a TensorFlow checkpoint (NumPy only, one variable at a time).

    See :class:`bert4keras3.tf_checkpoint.CheckpointReader`; TensorFlow is not imported.
    """

    def __init__(self, path):
        self.reader = CheckpointReader(path)
        self.shapes = dict(self.reader.shapes)

    def get(self, name):
        return self.reader.get(name)


class HFReader:
    """Read tensors of Hugging Face files (safetensors, sharded or not, or a torch ``.bin``)."""

    def __init__(self, path):
        files = self._resolve(os.fspath(path))
        self.where = {}
        self.shapes = {}
        self._torch_cache = {}
        for file in files:
            if file.endswith(".safetensors"):
                from safetensors import safe_open

                with safe_open(file, framework="np") as f:
                    for k in f.keys():
                        self.where[k] = file
                        self.shapes[k] = tuple(f.get_slice(k).get_shape())
            else:
                state = self._load_torch(file)
                for k, v in state.items():
                    self.where[k] = file
                    self.shapes[k] = tuple(v.shape)

    @staticmethod
    def _resolve(path):
        if os.path.isdir(path):
            for name in ("model.safetensors", "model.safetensors.index.json",
                         "pytorch_model.bin", "pytorch_model.bin.index.json"):
                candidate = os.path.join(path, name)
                if os.path.exists(candidate):
                    return HFReader._resolve(candidate)
            raise FileNotFoundError(
                f"no weights in Hugging Face directory {path!r}: expected model.safetensors, "
                "model.safetensors.index.json, pytorch_model.bin or its index"
            )
        if path.endswith(".index.json"):
            with open(path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
            folder = os.path.dirname(path)
            return sorted({os.path.join(folder, v) for v in weight_map.values()})
        return [path]

    def _load_torch(self, file):
        if file not in self._torch_cache:
            try:
                import torch
            except ImportError as e:  # pragma: no cover
                raise ImportError(
                    f"reading {file!r} needs 'torch'; or save the model as safetensors"
                ) from e
            state = torch.load(file, map_location="cpu", weights_only=True)
            self._torch_cache[file] = state
        return self._torch_cache[file]

    def get(self, name):
        file = self.where[name]
        if file.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(file, framework="np") as f:
                return np.asarray(f.get_tensor(name))
        tensor = self._torch_cache[file][name]
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return tensor.detach().cpu().numpy()


class DictReader:
    """Variables given as a dict ``{Google name: array}`` (bert4keras accepts such a dict)."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.shapes = {k: tuple(np.shape(v)) for k, v in arrays.items()}

    def get(self, name):
        return np.asarray(self.arrays[name])


def user_mapping(transformer, mapping):
    """A user ``mapping`` ``{unprefixed keras weight path: name or (name, "T")}`` checked
    against the model; returns ``{weight path: (name, transform)}``."""
    unprefixed = getattr(transformer, "unprefixed", lambda path: path)
    paths = {unprefixed(w.path): w.path for w in transformer.model.weights}
    names = {}
    for key, value in mapping.items():
        if isinstance(value, list):
            raise ValueError(
                f"mapping[{key!r}] is a list ({value!r}): bert4keras3 maps each Keras weight "
                "path (e.g. 'Transformer-0-FeedForward/i0_dense/kernel') to one name or "
                "(name, 'T'), not a layer to a list of names"
            )
        if key not in paths:
            raise ValueError(f"mapping names {key!r}, which is not a weight path of the model; "
                             f"weight paths are e.g. {sorted(paths)[:3]}")
        names[paths[key]] = value if isinstance(value, tuple) else (value, None)
    return names


def open_checkpoint(path):
    """Open a Google or Hugging Face checkpoint; returns ``(format, reader)``.

    ``reader.shapes`` maps every variable name to its shape; ``reader.get(name)``
    returns a NumPy array.
    """
    fmt = detect_format(path)
    if fmt == "keras":
        raise ValueError("a .weights.h5 file is loaded with model.load_weights, not a reader")
    return fmt, (GoogleReader(path) if fmt == "google" else HFReader(path))


def _choose_prefix(transformer, fmt, reader):
    prefixes = transformer.GOOGLE_PREFIXES if fmt == "google" else transformer.HF_PREFIXES
    best, best_hits = prefixes[0], -1
    for prefix in prefixes:
        mapping = transformer.weight_names(fmt, prefix)
        hits = sum(name in reader.shapes for name, _ in mapping.values())
        if hits > best_hits:
            best, best_hits = prefix, hits
    return best


def _is_ignored(name, patterns):
    return any(re.search(p, name) for p in patterns)


def _has_datasets(group):
    import h5py

    found = []
    group.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset)
                     else None)
    return bool(found)


def check_keras_weights_file(model, path):
    """Check that a ``.weights.h5`` lines up with ``model`` before Keras loads it.

    Keras addresses the layers of a weights file by class name and position
    (``dense``, ``dense_1``, ...), not by layer name, so a file saved from a model with
    other heads could load into the wrong layers. This compares the layer name recorded
    in the file with the model's layer at the same address: a mismatch on a layer with
    weights raises :class:`CheckpointError`; file layers with weights that the model
    lacks are listed in a warning (as unused checkpoint variables are).
    """
    import h5py
    from keras.src.utils.naming import to_snake_case

    expected, used = {}, {}
    for layer in model.layers:
        base = to_snake_case(type(layer).__name__)
        key = base if base not in used else f"{base}_{used[base] + 1}"
        used[base] = used.get(base, -1) + 1
        expected[key] = layer
    problems, unused = [], []
    with h5py.File(path, "r") as f:
        if "layers" not in f:
            return
        group = f["layers"]
        for key, layer in expected.items():
            if not layer.weights:
                continue
            if key not in group:
                problems.append(f"layer {layer.name!r} ({key}) has no weights in the file")
                continue
            vars_group = group[key].get("vars")
            recorded = vars_group.attrs.get("name") if vars_group is not None else None
            if recorded is not None and recorded != layer.name:
                problems.append(f"the file's {key} is layer {recorded!r}, the model's is "
                                f"{layer.name!r}")
        for key in group:
            if key not in expected and _has_datasets(group[key]):
                vars_group = group[key].get("vars")
                unused.append(vars_group.attrs.get("name", key) if vars_group is not None
                              else key)
    if problems:
        raise CheckpointError(
            f"cannot load {path!r}: its layers do not line up with the model's (build the "
            "model with the options the file was saved with):\n  " + "\n  ".join(problems))
    if unused:
        warnings.warn(f"{len(unused)} layer(s) of {path!r} not used by the model: "
                      f"{sorted(unused)}", stacklevel=4)


def _vocab_shape(transformer, name, shape):
    """``(shape, problem)`` of a vocabulary matrix of ``shape`` after :func:`_vocab_rows`;
    ``problem`` is a message when the checkpoint does not have the vocabulary the config
    declares."""
    keep = transformer.keep_tokens
    compound = getattr(transformer, "compound_tokens", None) or ()
    shape = tuple(shape)
    if keep is None and not compound:
        return shape, None
    if shape[0] != transformer.full_vocab_size:
        return shape, (f"variable {name!r} has {shape[0]} vocabulary rows, expected "
                       f"{transformer.full_vocab_size} (vocab_size) before keep_tokens / "
                       "compound_tokens")
    rows = shape[0] if keep is None else len(keep)
    return (rows + len(compound),) + shape[1:], None


def _vocab_rows(transformer, array):
    """Cut a vocabulary matrix by ``keep_tokens`` and extend it by ``compound_tokens``
    (its row count checked by :func:`_vocab_shape`)."""
    keep = transformer.keep_tokens
    compound = getattr(transformer, "compound_tokens", None)
    if keep is not None:
        array = array[keep]
    if compound:
        # bert4keras: each compound token starts as the (weighted) mean of its rows
        extra = [np.average(array[ids].astype("float64"), axis=0, weights=weights)
                 for ids, weights in compound]
        array = np.concatenate([array, np.stack(extra).astype(array.dtype)], axis=0)
    return array


def _on_layout(variable, array):
    """A host array placed on ``variable``'s ``keras.distribution`` layout (JAX), so each
    device receives only its shard (``assign`` would first copy the whole array to one
    device); unchanged without a layout or on other backends."""
    layout = getattr(variable, "_layout", None)
    if layout is None or keras.backend.backend() != "jax":
        return array
    import jax

    return jax.device_put(array, getattr(layout, "backend_layout", layout))


def load_into(transformer, checkpoint_path, mapping=None):
    """Set every weight of ``transformer.model`` from ``checkpoint_path``.

    Raises :class:`CheckpointError` naming every missing or misshapen variable
    (with both shapes); warns about checkpoint variables left unused
    (optimizer slots and known derived buffers excepted). With the model's
    ``ignore_invalid_weights`` option, missing variables are listed in a warning and
    their weights keep their initial values (shape mismatches still raise).
    Weights matching the model's ``NOT_IN_CHECKPOINTS`` (e.g. the condition projections
    of conditional layer normalisation) keep their initial values, and so do the weights
    of layers the transformer did not create (the user's layers computing a
    ``layer_norm_cond`` from ``additional_input_layers``), as in bert4keras.

    ``checkpoint_path`` may also be a dict ``{Google name: array}``; ``mapping``
    (``{unprefixed keras weight path: name or (name, "T")}``) replaces the model's table.
    """
    model = transformer.model
    if isinstance(checkpoint_path, dict):
        fmt, reader = "google", DictReader(checkpoint_path)
        checkpoint_path = "<dict of arrays>"
    else:
        fmt = detect_format(checkpoint_path)
        if fmt == "keras":
            if mapping is not None:
                raise ValueError("mapping applies to Google / Hugging Face checkpoints, not to "
                                 "a .weights.h5 file")
            check_keras_weights_file(model, checkpoint_path)
            model.load_weights(checkpoint_path)
            return
        fmt, reader = open_checkpoint(checkpoint_path)
    if mapping is None:
        mapping = transformer.weight_names(fmt, _choose_prefix(transformer, fmt, reader))
    else:
        mapping = user_mapping(transformer, mapping)
    vocab_weights = set(getattr(transformer, "VOCAB_WEIGHTS", ()))
    unprefixed = getattr(transformer, "unprefixed", lambda path: path)
    not_in_checkpoints = tuple(getattr(transformer, "NOT_IN_CHECKPOINTS", ()))
    lenient = bool(getattr(transformer, "ignore_invalid_weights", False))
    problems, skipped, plan, used = [], [], [], set()
    own = getattr(transformer, "layers", None)
    own = {id(w) for layer in own.values() for w in layer.weights} if isinstance(own, dict) else None
    # 1. validate every weight on the checkpoint's shapes only (no variable is read yet)
    for w in model.weights:
        if own is not None and id(w) not in own:
            continue  # a layer of the user's (e.g. feeding layer_norm_cond): not the checkpoint's
        if w.path not in mapping:
            if _is_ignored(w.path, not_in_checkpoints):
                continue
            message = (f"model weight {w.path!r} {tuple(w.shape)} has no checkpoint name "
                       f"in {type(transformer).__name__}'s {fmt} table")
            (skipped if lenient else problems).append(message)
            continue
        name, transform = mapping[w.path]
        if name not in reader.shapes:
            message = (f"missing variable {name!r} for model weight {w.path!r} "
                       f"(expected shape {tuple(w.shape)})")
            (skipped if lenient else problems).append(message)
            continue
        used.add(name)
        try:
            shape = transformed_shape(transform, reader.shapes[name])
        except ValueError as e:
            problems.append(f"variable {name!r} {tuple(reader.shapes[name])} for model weight "
                            f"{w.path!r} (expected shape {tuple(w.shape)}): {e}")
            continue
        vocab = unprefixed(w.path) in vocab_weights
        if vocab:
            shape, problem = _vocab_shape(transformer, name, shape)
            if problem:
                problems.append(problem)
                continue
        if shape != tuple(w.shape):
            part = (f" {tuple(reader.shapes[name])}, its {transform!r}"
                    if isinstance(transform, Part) else "")
            problems.append(f"shape mismatch for {name!r}{part} -> {w.path!r}: checkpoint "
                            f"{shape}, model {tuple(w.shape)}")
            continue
        plan.append((w, name, transform, vocab))
    if problems:
        raise CheckpointError(
            f"cannot load {checkpoint_path!r} into {type(transformer).__name__}:\n  "
            + "\n  ".join(problems)
        )
    # 2. read and assign one variable at a time: the host holds at most one checkpoint
    #    variable (and its converted copy) besides the model
    #    (a fused variable split by Parts is kept until its last part is assigned)
    parts = collections.Counter(name for _, name, t, _ in plan if isinstance(t, Part))
    fused = {}
    for w, name, transform, vocab in plan:
        array = fused.pop(name) if name in fused else reader.get(name)
        if isinstance(transform, Part):
            parts[name] -= 1
            if parts[name]:
                fused[name] = array
        value = apply_transform(transform, array)
        if vocab:
            value = _vocab_rows(transformer, value)
        if tuple(value.shape) != tuple(w.shape):  # the reader disagrees with its own index
            raise CheckpointError(f"{checkpoint_path!r}: variable {name!r} read as shape "
                                  f"{tuple(value.shape)}, its index says "
                                  f"{tuple(reader.shapes[name])}")
        w.assign(_on_layout(w, value.astype(w.dtype)))
        del array, value
    if skipped:
        warnings.warn(
            f"ignore_invalid_weights: {len(skipped)} weight(s) not in {checkpoint_path!r} "
            "keep their initial values:\n  " + "\n  ".join(skipped),
            stacklevel=3,
        )
    ignored = OPTIMIZER_PATTERNS + tuple(getattr(transformer, "IGNORED", ()))
    unused = sorted(n for n in reader.shapes if n not in used and not _is_ignored(n, ignored))
    if unused:
        warnings.warn(
            f"{len(unused)} checkpoint variable(s) of {checkpoint_path!r} not used by the "
            f"model: {unused}",
            stacklevel=3,
        )


def save_google_checkpoint(transformer, filename, mapping=None, dtype=None):
    """Write ``transformer``'s weights as a TensorFlow checkpoint with Google's names.

    The variables are written with NumPy (:func:`bert4keras3.tf_checkpoint.write_checkpoint`,
    no TensorFlow needed) in TensorFlow's V2 format under the names of the
    model's Google table (``transformer.weight_names("google", ...)``) or of ``mapping``
    (``{unprefixed keras weight path: name or (name, "T")}``), transposed where the table
    says so (the :class:`Part` s of a fused variable are concatenated into it), so
    ``tf.train.load_checkpoint(filename)`` and the loaders of this package
    (and of bert4keras) read them back. ``dtype`` (e.g. ``"float16"``) converts every
    variable; default: the weights' own dtype. Weights without a name are listed in a
    warning and not written. Returns the list of written variable names.
    """
    model = transformer.model
    if mapping is None:
        names = transformer.weight_names("google", transformer.google_save_prefix())
    else:
        names = user_mapping(transformer, mapping)
    np_dtype = None if dtype is None else _numpy_dtype(dtype)
    arrays, pieces, missing = {}, {}, []
    for w in model.weights:
        if w.path not in names:
            missing.append(w.path)
            continue
        name, transform = names[w.path]
        array = np.asarray(keras.ops.convert_to_numpy(w))
        if isinstance(transform, Part):
            parts = pieces.setdefault(name, {})
            if name in arrays or transform in parts:
                raise ValueError(f"two weights map to {transform!r} of the checkpoint name "
                                 f"{name!r}")
            parts[transform] = array
            continue
        if name in arrays or name in pieces:
            raise ValueError(f"two weights map to the checkpoint name {name!r}")
        if transform == "T":
            array = array.T
        elif transform is not None:
            raise ValueError(f"unknown transform {transform!r} for {name!r}: expected None, "
                             "'T' or a Part")
        arrays[name] = np.ascontiguousarray(array.astype(np_dtype or array.dtype))
    for name, parts in pieces.items():
        array = Part.join(name, parts)
        arrays[name] = np.ascontiguousarray(array.astype(np_dtype or array.dtype))
    if missing:
        warnings.warn(f"{len(missing)} weight(s) have no Google name and are not written: "
                      f"{missing}", stacklevel=3)
    filename = os.fspath(filename)
    write_checkpoint(filename, arrays)
    # the state file tf.train.latest_checkpoint reads, as TensorFlow's Saver writes it
    base = os.path.basename(filename)
    with open(os.path.join(os.path.dirname(os.path.abspath(filename)), "checkpoint"), "w",
              encoding="utf-8") as f:
        f.write(f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n')
    return sorted(arrays)


def _numpy_dtype(dtype):
    """A NumPy dtype from a name or dtype (``"bfloat16"`` through ``ml_dtypes``)."""
    if str(dtype) == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(dtype)
    except TypeError as e:
        raise ValueError(f"dtype must be a NumPy dtype name such as 'float16', found "
                         f"{dtype!r}") from e
