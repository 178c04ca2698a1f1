"""Keras 2 model conveniences that bert4keras scripts use, added to ``keras.Model``.

Installed once when ``bert4keras3`` is imported; nothing that Keras 3 accepts changes meaning:

* ``fit_generator`` / ``evaluate_generator`` / ``predict_generator`` (removed in Keras 3)
  forward to ``fit`` / ``evaluate`` / ``predict``;
* ``fit``, ``evaluate``, ``predict``, ``train_on_batch``, ``test_on_batch`` and
  ``predict_on_batch`` take nested Python lists of numbers as arrays, as Keras 2 did
  (``model.predict([[token_ids], [segment_ids]])``); Keras 3 rejects them;
* ``save_weights`` / ``load_weights`` take any file name (``'best_model.weights'``), as Keras 2
  did; Keras 3 insists on ``.weights.h5``. The file is a Keras 3 ``.weights.h5`` file under the
  name given.
"""
import functools
import os
import tempfile
import warnings

import numpy as np
import keras

__all__ = ["install"]


def _is_plain(value):
    """A (nested) Python list/tuple of numbers with a rectangular shape."""
    if not isinstance(value, (list, tuple)):
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif not isinstance(item, (bool, int, float, np.number)):
            return False
    try:
        array = np.asarray(value)
    except ValueError:  # ragged
        return False
    return array.dtype != object and array.ndim >= 1


def _as_arrays(data, count):
    """``data`` for a model with ``count`` inputs (or outputs), plain lists made arrays."""
    if data is None or not isinstance(data, (list, tuple)) or not data:
        return data
    if count == 1:
        return np.asarray(data) if _is_plain(data) else data
    if count and len(data) == count:
        return type(data)(np.asarray(d) if _is_plain(d) else d for d in data)
    return data


def _counts(model):
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    return (len(inputs) if inputs else None), (len(outputs) if outputs else None)


def _accept_lists(method):
    @functools.wraps(method)
    def wrapper(self, x=None, y=None, *args, **kwargs):
        n_in, n_out = _counts(self)
        return method(self, _as_arrays(x, n_in), _as_arrays(y, n_out), *args, **kwargs)

    return wrapper


def _accept_lists_x(method):
    @functools.wraps(method)
    def wrapper(self, x, *args, **kwargs):
        return method(self, _as_arrays(x, _counts(self)[0]), *args, **kwargs)

    return wrapper


def _no_loader_options(name, max_queue_size, workers, use_multiprocessing):
    if (max_queue_size, workers, use_multiprocessing) != (10, 1, False):
        warnings.warn(f"{name}: Keras 3 has no max_queue_size / workers / use_multiprocessing "
                      f"in fit/evaluate/predict (a keras.utils.PyDataset takes them); found "
                      f"{max_queue_size}, {workers}, {use_multiprocessing}: not used",
                      stacklevel=3)


def fit_generator(self, generator, steps_per_epoch=None, epochs=1, verbose=1, callbacks=None,
                  validation_data=None, validation_steps=None, validation_freq=1,
                  class_weight=None, max_queue_size=10, workers=1, use_multiprocessing=False,
                  shuffle=True, initial_epoch=0):
    """Keras 2's ``fit_generator``: ``fit`` on a generator."""
    _no_loader_options("fit_generator", max_queue_size, workers, use_multiprocessing)
    return self.fit(generator, steps_per_epoch=steps_per_epoch, epochs=epochs, verbose=verbose,
                    callbacks=callbacks, validation_data=validation_data,
                    validation_steps=validation_steps, validation_freq=validation_freq,
                    class_weight=class_weight, initial_epoch=initial_epoch,
                    # Keras 2 shuffled only a Sequence; a generator yields its own order
                    shuffle=shuffle and isinstance(generator, keras.utils.PyDataset))


def evaluate_generator(self, generator, steps=None, callbacks=None, max_queue_size=10,
                       workers=1, use_multiprocessing=False, verbose=0):
    """Keras 2's ``evaluate_generator``: ``evaluate`` on a generator."""
    _no_loader_options("evaluate_generator", max_queue_size, workers, use_multiprocessing)
    return self.evaluate(generator, steps=steps, callbacks=callbacks, verbose=verbose)


def predict_generator(self, generator, steps=None, callbacks=None, max_queue_size=10,
                      workers=1, use_multiprocessing=False, verbose=0):
    """Keras 2's ``predict_generator``: ``predict`` on a generator."""
    _no_loader_options("predict_generator", max_queue_size, workers, use_multiprocessing)
    return self.predict(generator, steps=steps, callbacks=callbacks, verbose=verbose)


_KERAS3_SUFFIXES = (".keras", ".weights.h5", ".weights.json", ".h5", ".hdf5")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _other_name(filepath):
    """True for a file name Keras 3's weight saving would refuse (bert4keras' ``x.weights``)."""
    return isinstance(filepath, (str, os.PathLike)) and \
        not str(filepath).endswith(_KERAS3_SUFFIXES)


def _save_any_name(method):
    @functools.wraps(method)
    def save_weights(self, filepath, overwrite=True, *args, **kwargs):
        if not _other_name(filepath):
            return method(self, filepath, overwrite, *args, **kwargs)
        filepath = os.fspath(filepath)
        if os.path.exists(filepath) and not overwrite:
            raise FileExistsError(f"save_weights: {filepath!r} exists and overwrite=False")
        fd, tmp = tempfile.mkstemp(suffix=".weights.h5", dir=os.path.dirname(filepath) or ".")
        os.close(fd)
        try:
            method(self, tmp, True, *args, **kwargs)
            os.replace(tmp, filepath)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    return save_weights


def _load_any_name(method):
    @functools.wraps(method)
    def load_weights(self, filepath, *args, **kwargs):
        if _other_name(filepath) and not os.path.exists(filepath):
            raise FileNotFoundError(f"load_weights: expected a weights file at {filepath!r}, "
                                    f"found nothing there")
        if _other_name(filepath) and os.path.isfile(filepath):
            with open(filepath, "rb") as f:
                is_hdf5 = f.read(8) == _HDF5_MAGIC
            if is_hdf5:
                with tempfile.TemporaryDirectory() as folder:
                    link = os.path.join(folder, "model.weights.h5")
                    os.symlink(os.path.abspath(filepath), link)
                    return method(self, link, *args, **kwargs)
        return method(self, filepath, *args, **kwargs)

    return load_weights


def install():
    """Add the Keras 2 conveniences to ``keras.Model`` (idempotent)."""
    model = keras.Model
    if getattr(model, "_bert4keras3_keras2", False):
        return
    for name in ("fit", "evaluate", "train_on_batch", "test_on_batch"):
        setattr(model, name, _accept_lists(getattr(model, name)))
    for name in ("predict", "predict_on_batch"):
        setattr(model, name, _accept_lists_x(getattr(model, name)))
    model.save_weights = _save_any_name(model.save_weights)
    model.load_weights = _load_any_name(model.load_weights)
    for function in (fit_generator, evaluate_generator, predict_generator):
        if not hasattr(model, function.__name__):
            setattr(model, function.__name__, function)
    model._bert4keras3_keras2 = True
