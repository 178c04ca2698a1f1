"""The NumPy TensorFlow-checkpoint reader / writer against TensorFlow's own on real files."""
import os
import random
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

from bert4keras3.tf_checkpoint import (
    CheckpointFormatError,
    CheckpointReader,
    crc32c,
    write_checkpoint,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bitwise_crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("size", [0, 1, 9, 1000, 65535, 65536, 70001, 131075])
def test_crc32c_matches_bitwise_definition(size):
    data = bytes(random.Random(size).getrandbits(8) for _ in range(size))
    assert crc32c(data) == _bitwise_crc32c(data)


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the published CRC-32C check value


def _v1_checkpoint(prefix):
    """A tf.compat.v1 Saver checkpoint: many variables, every dtype, partitioned ones."""
    rng = np.random.default_rng(0)
    graph = tf.Graph()
    with graph.as_default():
        for i in range(120):  # enough entries for several index blocks
            name = f"bert/encoder/layer_{i}/attention/self/query/kernel"
            tf.compat.v1.Variable(rng.standard_normal((3, 1 + i % 5)).astype("float32"), name=name)
            tf.compat.v1.Variable(np.zeros((3, 1 + i % 5), "float32"), name=name + "/adam_m")
        values = {
            "f16": rng.standard_normal((4, 2)).astype("float16"),
            "f64": rng.standard_normal(3),
            "i8": np.array([[-3, 4, 127]], "int8"),
            "i32": np.arange(6, dtype="int32").reshape(2, 3),
            "global_step": np.int64(123456789012),
            "flag": np.array([True, False, True]),
        }
        for name, value in values.items():
            tf.compat.v1.Variable(value, name=name)
        tf.compat.v1.Variable(tf.constant(rng.standard_normal((2, 3)), tf.bfloat16), name="bf16")
        init = tf.compat.v1.random_normal_initializer(seed=1)
        tf.compat.v1.get_variable("big/rows", shape=(1000, 7), initializer=init,
                                  partitioner=tf.compat.v1.fixed_size_partitioner(3))
        tf.compat.v1.get_variable("big/cols", shape=(6, 300), initializer=init,
                                  partitioner=tf.compat.v1.fixed_size_partitioner(2, axis=1))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, prefix, write_meta_graph=False)
    return prefix


def _assert_same_as_tensorflow(prefix):
    reference = tf.train.load_checkpoint(prefix)
    reader = CheckpointReader(prefix)
    assert reader.shapes == {k: tuple(v) for k, v in
                             reference.get_variable_to_shape_map().items()}
    for name in reader.shapes:
        expected, found = reference.get_tensor(name), reader.get(name)
        if reader.dtypes[name] == "string":
            assert found.item() == expected
            continue
        assert found.dtype == np.asarray(expected).dtype, name
        assert found.shape == np.shape(expected), name
        np.testing.assert_array_equal(found, expected, err_msg=name)
    return reader


def test_reader_matches_tensorflow_on_a_v1_saver_checkpoint(tmp_path):
    prefix = _v1_checkpoint(str(tmp_path / "model.ckpt"))
    reader = _assert_same_as_tensorflow(prefix)
    assert reader.dtypes["bf16"] == "bfloat16" and reader.get("bf16").dtype == ml_dtypes.bfloat16
    assert reader.get("big/rows").shape == (1000, 7)  # reassembled from 3 slices
    assert CheckpointReader(prefix + ".index").shapes == reader.shapes


def test_reader_reads_several_data_shards(tmp_path):
    class Holder(tf.Module):
        def __init__(self):
            self.a = tf.Variable(np.arange(5000, dtype="float32").reshape(50, 100))
            self.b = tf.Variable(np.ones((300, 10)))
            self.c = tf.Variable(np.arange(10, dtype="int32"))

    policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=8000)
    prefix = tf.train.Checkpoint(m=Holder()).write(
        str(tmp_path / "ckpt"),
        options=tf.train.CheckpointOptions(experimental_sharding_callback=policy))
    reader = _assert_same_as_tensorflow(prefix)
    assert reader.num_shards > 2


def test_written_checkpoint_reads_back_in_tensorflow(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {f"bert/encoder/layer_{i}/output/dense/kernel": rng.standard_normal((2, i + 1))
              .astype("float32") for i in range(100)}
    arrays.update({
        "half": rng.standard_normal(5).astype("float16"),
        "brain": rng.standard_normal((2, 2)).astype(ml_dtypes.bfloat16),
        "global_step": np.int64(7),
        "flags": np.array([True, False]),
        "transposed": rng.standard_normal((5, 7)).astype("float32").T,
        "unicode/ü": np.arange(3, dtype="int32"),
        "big": rng.standard_normal((300, 400)).astype("float32"),
    })
    prefix = str(tmp_path / "out" / "model.ckpt")
    assert write_checkpoint(prefix, arrays) == sorted(arrays)
    reference = tf.train.load_checkpoint(prefix)
    assert set(reference.get_variable_to_shape_map()) == set(arrays)
    for name, array in arrays.items():
        got = reference.get_tensor(name)
        assert got.dtype == array.dtype and got.shape == np.shape(array), name
        np.testing.assert_array_equal(got, array, err_msg=name)
        np.testing.assert_array_equal(CheckpointReader(prefix).get(name), array)
    graph = tf.Graph()
    with graph.as_default():  # the v1 Saver checks the tensors' checksums too
        variable = tf.compat.v1.Variable(np.zeros((300, 400), "float32"), name="big")
        saver = tf.compat.v1.train.Saver([variable])
        with tf.compat.v1.Session() as session:
            saver.restore(session, prefix)
            np.testing.assert_array_equal(session.run(variable), arrays["big"])


def test_reader_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.index"):
        CheckpointReader(str(tmp_path / "nothing"))
    (tmp_path / "fake.index").write_bytes(b"not an sstable" * 10)
    with pytest.raises(CheckpointFormatError, match="not a TensorFlow checkpoint index"):
        CheckpointReader(str(tmp_path / "fake"))
    prefix = str(tmp_path / "ok.ckpt")
    write_checkpoint(prefix, {"a": np.zeros(2, "float32")})
    with pytest.raises(KeyError, match="'b' not in checkpoint"):
        CheckpointReader(prefix).get("b")
    with pytest.raises(TypeError, match="dtype <U1"):
        write_checkpoint(prefix, {"s": np.array(["x"])})


def test_reading_needs_no_tensorflow(tmp_path):
    prefix = _v1_checkpoint(str(tmp_path / "model.ckpt"))
    expected = tf.train.load_checkpoint(prefix).get_tensor("big/rows")
    np.save(tmp_path / "expected.npy", expected)
    code = (
        "import sys, numpy as np\n"
        "sys.modules['tensorflow'] = None  # any import of TensorFlow now fails\n"
        "from bert4keras3.tf_checkpoint import CheckpointReader, write_checkpoint\n"
        f"reader = CheckpointReader({prefix!r})\n"
        f"np.testing.assert_array_equal(reader.get('big/rows'), np.load({str(tmp_path / 'expected.npy')!r}))\n"
        f"write_checkpoint({str(tmp_path / 'copy.ckpt')!r}, {{'x': reader.get('big/rows')}})\n"
        "print('ok')\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
    np.testing.assert_array_equal(
        tf.train.load_checkpoint(str(tmp_path / "copy.ckpt")).get_tensor("x"), expected)


def test_models_load_and_save_google_checkpoints_without_tensorflow(tmp_path):
    """A Saver-written BERT checkpoint builds in a process where TensorFlow cannot be
    imported; the checkpoint that process writes reads back in TensorFlow, bit-exactly."""
    from conftest import write_tiny_model_dir

    import keras

    from bert4keras3.models import build_transformer_model

    folder = write_tiny_model_dir(str(tmp_path / "model"), texts=["abcdefg"],
                                  checkpoint="google")
    config, ckpt = os.path.join(folder, "bert_config.json"), os.path.join(folder,
                                                                        "bert_model.ckpt")
    tokens = np.array([[2, 5, 6, 7, 3, 0], [2, 8, 9, 3, 0, 0]])
    model = build_transformer_model(config, ckpt, with_mlm=True)
    expected = keras.ops.convert_to_numpy(model([tokens, np.zeros_like(tokens)]))
    np.save(tmp_path / "tokens.npy", tokens)
    code = (
        "import sys, numpy as np\n"
        "sys.modules['tensorflow'] = None\n"
        "from bert4keras3.models import build_transformer_model\n"
        f"obj = build_transformer_model({config!r}, {ckpt!r}, with_mlm=True, "
        "return_keras_model=False)\n"
        f"x = np.load({str(tmp_path / 'tokens.npy')!r})\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, np.asarray(obj.model.predict([x, 0 * x], "
        "verbose=0)))\n"
        f"obj.save_weights_as_checkpoint({str(tmp_path / 'copy' / 'bert_model.ckpt')!r})\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)
    original = tf.train.load_checkpoint(ckpt)
    copy = tf.train.load_checkpoint(str(tmp_path / "copy" / "bert_model.ckpt"))
    names = set(original.get_variable_to_shape_map())
    assert set(copy.get_variable_to_shape_map()) == names
    for name in names:
        np.testing.assert_array_equal(copy.get_tensor(name), original.get_tensor(name))
    assert tf.train.latest_checkpoint(str(tmp_path / "copy")).endswith("bert_model.ckpt")
