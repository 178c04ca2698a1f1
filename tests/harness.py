"""Shared test cases for layers and model families (in the spirit of keras-hub's TestCase).

``run_layer_test`` puts one layer through everything a layer of this package must survive:
eager call, symbolic call (same output shapes / dtypes), ``get_config`` / ``from_config``,
``.keras`` and ``.weights.h5`` round trips (bit-exact), ``fit`` (trainable weights move,
loss finite) and a ``mixed_bfloat16`` call (float32 variables, bf16 compute, close to
float32). ``run_family_test`` does the same for a tiny model of a family and adds the
padding check (extra padding changes no output at the valid positions).

A failure names the layer or family and the step. Numbers are compared with the layer's
own float32 output: these are properties (round trips, invariances), the numerics against
references live in each layer's and family's own tests.
"""
import os

import numpy as np

import keras
from keras import ops


def _np(x):
    return np.asarray(ops.convert_to_numpy(ops.cast(x, "float32") if _is_float(x) else x))


def _is_float(x):
    return "float" in keras.backend.standardize_dtype(x.dtype)


def _flat(x):
    return keras.tree.flatten(x)


def _assert_same(a, b, what):
    for x, y in zip(_flat(a), _flat(b), strict=True):
        np.testing.assert_array_equal(_np(x), _np(y), err_msg=what)


def _symbolic(value):
    value = np.asarray(value)
    return keras.Input(value.shape[1:], dtype=str(value.dtype), batch_size=None)


def _functional(make, inputs, call_kwargs):
    """A ``keras.Model`` around a fresh layer: its inputs are the tensor inputs and the
    array-valued call arguments; returns (model, layer, feed list)."""
    layer = make()
    tensors = keras.tree.map_structure(_symbolic, inputs)
    array_kw = {k: v for k, v in call_kwargs.items() if isinstance(v, np.ndarray)}
    kw_inputs = {k: _symbolic(v) for k, v in array_kw.items()}
    out = layer(tensors, **{**call_kwargs, **kw_inputs})
    model_inputs = _flat(tensors) + list(kw_inputs.values())
    feed = _flat(inputs) + list(array_kw.values())
    return keras.Model(model_inputs, out), layer, feed


def run_layer_test(make, inputs, call_kwargs=None, tmp_path=None, train=True, mixed=True,
                   mixed_tolerance=0.05, name=None, loss=None, targets=None):
    """Check one layer (``make()`` -> a new layer) on ``inputs`` (arrays, or a list).

    ``call_kwargs``: extra call arguments; NumPy arrays among them become model inputs in
    the functional checks. ``train=False`` skips ``fit`` (layers without weights or with
    integer outputs); ``mixed=False`` skips the bf16 check (integer / boolean layers).
    ``loss(layer)`` / ``targets``: the training loss and labels where the layer brings its
    own (CRF: ``layer.sparse_loss`` on tag ids); default MSE to random targets.
    """
    call_kwargs = dict(call_kwargs or {})
    layer = make()
    name = name or type(layer).__name__
    # 1. eager call
    eager = layer(inputs, **call_kwargs)
    # 2. symbolic call: same shapes (batch free) and dtypes
    model, _, feed = _functional(make, inputs, call_kwargs)
    for sym, out in zip(_flat(model.outputs), _flat(eager), strict=True):
        assert tuple(sym.shape[1:]) == tuple(out.shape[1:]), (name, "symbolic shape",
                                                              sym.shape, out.shape)
        assert keras.backend.standardize_dtype(sym.dtype) == \
            keras.backend.standardize_dtype(out.dtype), (name, "symbolic dtype")
    # 3. config round trip
    config = layer.get_config()
    clone = type(layer).from_config(config)
    clone(inputs, **call_kwargs)
    clone.set_weights(layer.get_weights())
    _assert_same(clone(inputs, **call_kwargs), eager, f"{name}: from_config output")
    assert clone.get_config() == config, (name, "config changes on a round trip")
    # 4. .keras and .weights.h5 round trips
    ref = model(feed)
    if tmp_path is not None:
        path = os.path.join(str(tmp_path), f"{name}.keras")
        model.save(path)
        _assert_same(keras.saving.load_model(path)(feed), ref, f"{name}: .keras round trip")
        weights = os.path.join(str(tmp_path), f"{name}.weights.h5")
        model.save_weights(weights)
        other, _, _ = _functional(make, inputs, call_kwargs)
        other.load_weights(weights)
        _assert_same(other(feed), ref, f"{name}: .weights.h5 round trip")
    # 5. fit: trainable weights move, the loss is finite
    if train:
        trained, layer_t, feed_t = _functional(make, inputs, call_kwargs)
        assert layer_t.trainable_weights, (name, "has no trainable weights to fit")
        outputs = _flat(trained(feed_t))
        rng = np.random.RandomState(0)
        if targets is None:
            targets = [rng.rand(*o.shape).astype("float32") for o in outputs]
        losses = [loss(layer_t) if loss else "mse"] * len(_flat(targets))
        targets = _flat(targets)
        trained.compile(optimizer=keras.optimizers.SGD(0.1), loss=losses)
        before = [_np(w) for w in layer_t.trainable_weights]
        loss = trained.train_on_batch(feed_t, targets if len(targets) > 1 else targets[0])
        assert np.all(np.isfinite(_flat(loss))), (name, "loss", loss)
        moved = [not np.array_equal(b, _np(w))
                 for b, w in zip(before, layer_t.trainable_weights)]
        assert any(moved), (name, "fit changed no trainable weight")
    # 6. mixed_bfloat16: float32 variables, bf16 compute, close to float32
    if mixed:
        half = make()
        half = type(half).from_config({**half.get_config(), "dtype": "mixed_bfloat16"})
        half(inputs, **call_kwargs)
        half.set_weights(layer.get_weights())
        assert all(w.dtype == "float32" for w in half.weights), (name, "bf16 variables")
        wrong = [l.name for l in half._flatten_layers() if l.dtype_policy.name != "mixed_bfloat16"]
        assert not wrong, (name, "sublayers without the layer's dtype policy", wrong)
        out = half(inputs, **call_kwargs)
        for h, f in zip(_flat(out), _flat(eager), strict=True):
            if not _is_float(f):
                continue
            assert keras.backend.standardize_dtype(h.dtype) == "bfloat16", (name, h.dtype)
            scale = max(np.abs(_np(f)).max(), 1e-6)
            err = np.abs(_np(h) - _np(f)).max() / scale
            assert err <= mixed_tolerance, (name, "bf16 error", err)
    return eager


def run_family_test(build, inputs, tmp_path, pad_to=None, train=True):
    """Check a tiny model: ``build()`` -> the builder object (``.model``), ``inputs`` its
    arrays (token ids first, id 0 = padding at the end of rows).

    Steps: symbolic / eager agreement, ``.keras`` and ``.weights.h5`` round trips
    (bit-exact), extra padding up to ``pad_to`` columns leaves the outputs at the valid
    positions unchanged, and one ``fit`` step moves the weights.
    """
    obj = build()
    model = obj.model
    rng = np.random.RandomState(0)
    model.set_weights([(rng.randn(*w.shape) * 0.1).astype("float32") for w in model.weights])
    out = model(inputs)
    for sym, o in zip(_flat(model.outputs), _flat(out), strict=True):
        assert tuple(sym.shape[2:]) == tuple(o.shape[2:]), ("symbolic shape", sym.shape)
    path = os.path.join(str(tmp_path), "family.keras")
    model.save(path)
    _assert_same(keras.saving.load_model(path)(inputs), out, ".keras round trip")
    weights = os.path.join(str(tmp_path), "family.weights.h5")
    model.save_weights(weights)
    again = build().model
    again.load_weights(weights)
    _assert_same(again(inputs), out, ".weights.h5 round trip")
    if pad_to:
        padded = [np.pad(x, [(0, 0), (0, pad_to - x.shape[1])]) for x in inputs]
        valid = inputs[0] != 0
        for a, b in zip(_flat(model(padded)), _flat(out), strict=True):
            a, b = _np(a), _np(b)
            if a.ndim >= 2 and b.shape[1] == valid.shape[1]:
                np.testing.assert_allclose(a[:, :b.shape[1]][valid], b[valid], rtol=1e-5,
                                           atol=1e-5, err_msg="extra padding changed outputs")
    if train:
        targets = [np.random.RandomState(1).rand(*o.shape).astype("float32")
                   for o in _flat(out)]
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=["mse"] * len(targets))
        before = [_np(w) for w in model.trainable_weights]
        loss = model.train_on_batch(inputs, targets if len(targets) > 1 else targets[0])
        assert np.all(np.isfinite(_flat(loss)))
        assert any(not np.array_equal(b, _np(w))
                   for b, w in zip(before, model.trainable_weights)), "fit moved no weight"
    return out
