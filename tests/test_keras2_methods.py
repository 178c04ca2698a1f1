"""Keras 2 model conveniences bert4keras scripts use (bert4keras3/_keras2.py)."""
import os
import warnings

import numpy as np
import pytest

import keras

import bert4keras3  # noqa: F401 (installs the conveniences)


def two_input_model():
    a = keras.Input((3,), name="a")
    b = keras.Input((3,), name="b")
    x = keras.layers.Concatenate()([a, b])
    out = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model([a, b], out)
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    return model


def test_nested_lists_are_arrays_as_in_keras2():
    model = two_input_model()
    ids, segs = [1.0, 2.0, 3.0], [0.0, 0.0, 1.0]
    expected = keras.ops.convert_to_numpy(model([np.array([ids]), np.array([segs])]))
    np.testing.assert_allclose(model.predict([[ids], [segs]], verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(model.predict_on_batch([[ids], [segs]]), expected, atol=1e-6)
    loss = model.test_on_batch([[ids], [segs]], [1])
    assert np.isclose(loss, -np.log(expected[0, 1]), atol=1e-5)
    model.train_on_batch([[ids], [segs]], [[1]])
    assert model.evaluate([[ids, ids], [segs, segs]], [1, 1], verbose=0) > 0
    # a single-input model takes a list of rows
    single = keras.Model(model.inputs[0], keras.layers.Dense(1)(model.inputs[0]))
    np.testing.assert_allclose(single.predict([ids, ids], verbose=0),
                               keras.ops.convert_to_numpy(single(np.array([ids, ids]))),
                               atol=1e-6)


def test_ragged_lists_still_fail():
    model = two_input_model()
    with pytest.raises(Exception):
        model.predict([[[1.0, 2.0, 3.0], [1.0]], [[0.0, 0.0, 0.0], [0.0]]], verbose=0)


def test_generator_methods_forward():
    model = two_input_model()
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 3)).astype("float32")]
    y = np.array([0, 1, 1, 0])

    def batches():
        while True:
            yield (x[0], x[1]), y

    before = [w.copy() for w in model.get_weights()]
    history = model.fit_generator(batches(), steps_per_epoch=2, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert any(np.abs(a - b).max() > 0 for a, b in zip(before, model.get_weights()))
    loss = model.evaluate_generator(batches(), steps=1)
    assert np.isclose(loss, model.evaluate(x, y, verbose=0), atol=1e-5)
    np.testing.assert_allclose(model.predict_generator(((a, b),) for a, b in [x]),
                               model.predict(x, verbose=0), atol=1e-6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict_generator((((a, b),) for a, b in [x]), workers=4)
    assert any("workers" in str(w.message) for w in caught)


def test_weights_under_any_file_name(tmp_path):
    model = two_input_model()
    path = str(tmp_path / "best_model.weights")  # bert4keras scripts' name
    model.save_weights(path)
    assert sorted(os.listdir(tmp_path)) == ["best_model.weights"]  # no temporary left
    saved = [w.copy() for w in model.get_weights()]
    fresh = two_input_model()
    assert any(np.abs(a - b).max() > 0 for a, b in zip(saved, fresh.get_weights()))
    fresh.load_weights(path)
    for a, b in zip(saved, fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileExistsError, match="overwrite=False"):
        model.save_weights(path, overwrite=False)
    # Keras 3's own names behave as before
    model.save_weights(str(tmp_path / "m.weights.h5"))
    with pytest.raises(ValueError):
        model.save_weights(str(tmp_path / "m.h5"))
    (tmp_path / "junk.weights").write_text("not hdf5")
    with pytest.raises(ValueError):
        fresh.load_weights(str(tmp_path / "junk.weights"))
