"""Sharding (bert4keras3.distribution) and data-parallel training.

The multi-device checks need virtual devices configured before the backend starts
(``XLA_FLAGS`` for JAX, logical devices for TensorFlow), so each backend's check runs
this file as a script in one subprocess that loops over every family: the reference
is the same model built on one device from the same checkpoint.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import keras

from bert4keras3.distribution import layout_map, weight_layouts
from bert4keras3.models import build_transformer_model

BASE = dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64, type_vocab_size=2,
            hidden_act="gelu")
BATCH, SEQ = 8, 12


def family_cases():
    """``(family, config, build kwargs, kind, decode)``: kind ``"encoder"`` (MLM
    probabilities from ``[ids, segments]``), ``"lm"`` (``ids``) or ``"t5"``; decode
    ``None`` or the application whose ``generate`` is compared."""
    cases = []
    for family in ("bert", "roberta", "roformer", "roformer_v2", "nezha", "electra",
                   "albert", "albert_unshared", "deberta_v2", "deberta_v3", "gau_alpha"):
        cfg = dict(BASE)
        if family == "gau_alpha":
            cfg.update(num_attention_heads=1, attention_key_size=16)
            cfg.pop("max_position_embeddings")
        if family == "albert":  # two calls of the shared block
            cfg.update(embedding_size=16, num_hidden_layers=2)
        if family == "deberta_v2":  # separate position projections, the convolution
            cfg.update(relative_attention=True, position_buckets=-1, max_relative_positions=12,
                       pos_att_type="c2p|p2c", share_att_key=False, conv_kernel_size=3,
                       conv_act="gelu")
        if family == "deberta_v3":  # shared keys, log buckets, no segments
            cfg.update(relative_attention=True, position_buckets=8, max_relative_positions=-1,
                       pos_att_type="p2c|c2p", share_att_key=True, norm_rel_ebd="layer_norm",
                       position_biased_input=False, type_vocab_size=0)
        decode = {"bert": "unilm", "roformer": "unilm", "nezha": "unilm",
                  "gau_alpha": "unilm", "roformer_v2": "lm", "albert": "lm"}.get(family)
        cases.append((family, cfg, {"with_mlm": True}, "encoder", decode))
    for family in ("gpt", "gpt2", "gpt2_ml"):
        cfg = dict(BASE)
        if family != "gpt":
            cfg.pop("type_vocab_size")
        cases.append((family, cfg, {"application": "lm"}, "lm", "lm"))
    for family in ("t5", "t5.1.1", "mt5.1.1"):
        cfg = dict(BASE, attention_head_size=8)
        cases.append((family, cfg, {}, "t5", "t5"))
    return cases


# ---------------------------------------------------------------- in-process checks


def _build(family, cfg, kwargs, checkpoint=None):
    return build_transformer_model(cfg, checkpoint, model=family, return_keras_model=False,
                                   **kwargs)


def _expected_roles(model):
    """Independent statement of the intended layout, from the documented layer names."""
    out = {}
    for w in model.weights:
        parts = w.path.split("/")
        leaf, sub = parts[-1], parts[-2] if len(parts) > 1 else ""
        owner = parts[0]
        if owner.endswith(("MultiHeadSelfAttention", "MultiHeadCrossAttention",
                           "GatedAttentionUnit", "FeedForward")) and len(parts) == 3:
            if sub == "o_dense":
                if leaf == "kernel":
                    out[w.path] = ("model", None)
            elif leaf == "kernel":
                out[w.path] = (None, "model")
            elif leaf == "bias":
                out[w.path] = ("model",)
        elif w.path in ("Embedding-Token/embeddings", "Decoder-Output-LM/embeddings"):
            out[w.path] = ("model", None)
        elif w.path == "MLM-Bias/bias":
            out[w.path] = ("model",)
    return out


@pytest.mark.parametrize("case", family_cases(), ids=lambda c: c[0])
def test_weight_layouts_per_family(case):
    family, cfg, kwargs, _, _ = case
    obj = _build(family, cfg, kwargs)
    expected = _expected_roles(obj.model)
    assert weight_layouts(obj) == expected
    # a bare keras.Model infers the vocabulary tables; a builder is built abstractly
    assert weight_layouts(obj.model) == expected
    # attention and FFN kernels and the token table are covered in every family
    assert any("o_dense/kernel" in p for p in expected)
    assert expected.get("Embedding-Token/embeddings") == ("model", None)


def test_attention_and_ffn_output_kernels_are_row_parallel():
    obj = _build("bert", BASE, {"with_mlm": True})
    layouts = weight_layouts(obj)
    assert layouts["Transformer-0-MultiHeadSelfAttention/o_dense/kernel"] == ("model", None)
    assert layouts["Transformer-0-FeedForward/o_dense/kernel"] == ("model", None)
    assert layouts["Transformer-0-FeedForward/i0_dense/kernel"] == (None, "model")
    assert layouts["Transformer-0-FeedForward/i0_dense/bias"] == ("model",)
    for path in ("Transformer-0-FeedForward/o_dense/bias", "MLM-Dense/kernel",
                 "Embedding-Segment/embeddings", "Embedding-Position/embeddings",
                 "Transformer-0-FeedForward-Norm/gamma"):
        assert path not in layouts


def _mesh(shape, axes=("batch", "model")):
    """A mesh for layout checks only (no computation runs on it; named devices, as
    ``keras.distribution.list_devices`` does not exist on every backend)."""
    return keras.distribution.DeviceMesh(shape, axes,
                                         [f"cpu:{i}" for i in range(int(np.prod(shape)))])


def test_layout_map_entries_and_lookup():
    mesh = _mesh((2, 2))
    obj = _build("t5.1.1", dict(BASE, attention_head_size=8), {})
    lm = layout_map(obj, mesh)
    assert isinstance(lm, keras.distribution.LayoutMap)
    for w in obj.model.weights:
        layout = lm[w.path]
        expected = weight_layouts(obj).get(w.path)
        assert (layout.axes if layout is not None else None) == expected, w.path


def test_layout_map_with_prefix_and_lora():
    obj = _build("bert", BASE, {"with_mlm": True, "prefix": "A-"})
    layer = obj.model.get_layer("A-Transformer-0-MultiHeadSelfAttention")
    layer.q_dense.enable_lora(4)
    layer.o_dense.enable_lora(4)
    layouts = weight_layouts(obj)
    assert layouts["A-Embedding-Token/embeddings"] == ("model", None)
    assert layouts["A-MLM-Bias/bias"] == ("model",)
    q, o = "A-Transformer-0-MultiHeadSelfAttention/q_dense", \
        "A-Transformer-0-MultiHeadSelfAttention/o_dense"
    assert layouts[f"{q}/lora_kernel_b"] == (None, "model")
    assert f"{q}/lora_kernel_a" not in layouts
    assert layouts[f"{o}/lora_kernel_a"] == ("model", None)
    assert f"{o}/lora_kernel_b" not in layouts


def test_builder_callable_is_built_without_allocating():
    calls = []

    def build():
        obj = _build("deberta_v3", BASE, {"with_mlm": True})
        calls.append([w._value is None for w in obj.model.weights])  # lazily initialised
        return obj

    assert weight_layouts(build) == _expected_roles(_build("deberta_v3", BASE,
                                                           {"with_mlm": True}).model)
    assert len(calls) == 1 and all(calls[0])


def test_indivisible_dimension_raises():
    mesh = _mesh((1, 3))
    with pytest.raises(ValueError) as info:
        layout_map(lambda: _build("bert", BASE, {"with_mlm": True}), mesh)
    message = str(info.value)
    assert "'Transformer-0-MultiHeadSelfAttention/q_dense/kernel' of shape (32, 32)" in message
    assert "not divisible by the size 3 of mesh axis 'model'" in message
    assert "'Embedding-Token/embeddings' of shape (64, 32)" in message


def test_bad_arguments():
    mesh = _mesh((1,), ("batch",))
    with pytest.raises(ValueError, match="no axis 'model'"):
        layout_map(_build("bert", BASE, {}), mesh)
    with pytest.raises(TypeError, match="DeviceMesh"):
        layout_map(_build("bert", BASE, {}), (1, 1))
    mesh = _mesh((1, 1))
    with pytest.raises(TypeError, match="keras.Model"):
        layout_map(object(), mesh)


# ---------------------------------------------------------------- multi-device runs


def _run_worker(backend, timeout=900):
    env = dict(os.environ, KERAS_BACKEND=backend)
    if backend == "jax":  # read when jax starts, so only in a fresh process
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                            + " --xla_force_host_platform_device_count=8").strip()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), backend], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout[-3000:]
    return json.loads(lines[0][len("RESULT "):])


def check_jax_result(result, full=False):
    """Assertions on the JAX worker's result (CI subset, or every family x mesh)."""
    families = [c[0] for c in family_cases()]
    assert sorted(result["forward"]) == sorted(families)
    covered = set()
    for family, per_mesh in result["forward"].items():
        assert per_mesh and (not full or sorted(per_mesh) == sorted(MESHES)), family
        covered.update(per_mesh)
        for mesh, diff in per_mesh.items():
            assert diff <= 1e-5, (family, mesh, diff)
    assert covered == set(MESHES)
    # --full: fit and decode on every mesh too (keys "family@mesh")
    every = (lambda names: sorted(f"{f}@{m}" for f in names for m in MESHES)) if full \
        else sorted
    assert sorted(result["fit"]) == every(families if full else CI_FIT)
    for family, (ref, got) in result["fit"].items():
        assert len(ref) == 3 and ref[0] != ref[-1], family  # the steps changed the weights
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5, err_msg=family)
    decoded = [c[0] for c in family_cases() if c[4] and (full or c[0] in CI_DECODE)]
    assert sorted(result["generate"]) == every(decoded)
    for family, (ref, got) in result["generate"].items():
        assert got == ref, family
        assert len(ref) == 2 and all(len(row) == 4 for row in ref), family
        assert len({t for row in ref for t in row}) > 1, (family, ref)  # not one repeated id
    same, shard_shapes = result["placement"]
    assert same and shard_shapes == [[16, 32]] * 8
    # checkpoint variables went straight into their shards: each device holds a slice
    assert result["shards"]
    for key, shards in result["shards"].items():
        assert shards, key
        for path, (shape, shard_shapes) in shards.items():
            assert len(shard_shapes) == 8 and all(s != shape for s in shard_shapes), (key, path)


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="keras.distribution.ModelParallel: run in the JAX pass")
def test_model_parallel_jax_matches_single_device():
    check_jax_result(_run_worker("jax"))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tf.distribute.MirroredStrategy: run in the TensorFlow pass")
def test_mirrored_strategy_tensorflow_matches_single_device():
    result = _run_worker("tensorflow")
    assert result["replicas"] == 2
    assert result["mirrored"] == {family: True for family in CI_FIT}
    assert sorted(result["fit"]) == sorted(CI_FIT)
    for family, (ref, got) in result["fit"].items():
        assert len(ref) == 3 and ref[0] != ref[-1], family
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5, err_msg=family)


# ---------------------------------------------------------------- worker (subprocess)


def _data(kind, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(5, BASE["vocab_size"], (BATCH, SEQ)).astype("int32")
    for r in range(BATCH):
        # padding (masked out of the loss) with the same count in each half of the batch:
        # a data-parallel replica averages the loss over its own unmasked tokens
        ids[r, SEQ - r % 4:] = 0
    labels = rng.randint(1, BASE["vocab_size"], (BATCH, SEQ)).astype("int32")
    if kind == "encoder":
        return [ids, np.zeros_like(ids)], labels
    if kind == "lm":
        return ids, labels
    return [ids, ids[:, ::-1].copy()], labels


def _inputs(obj, kind, x):
    """``x`` in the form of the model's inputs (GPT with a segment table takes two)."""
    if kind == "encoder" and len(obj.model.inputs) == 1:
        return x[0]
    if kind == "lm" and len(obj.model.inputs) == 2:
        return [x, np.zeros_like(x)]
    return x


def _prompts(decode):
    rng = np.random.RandomState(1)
    ids = rng.randint(5, BASE["vocab_size"], (2, 5)).astype("int32")
    ids[1, 3:] = 0
    if decode == "unilm":
        return [ids, np.zeros_like(ids)]
    return ids


def _perturb(obj, seed=0):
    """Add N(0, 0.1) noise to every weight: biases, norms and the MLM bias leave their
    constant initial values and decoding does not repeat one token."""
    rng = np.random.RandomState(seed)
    for w in obj.model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(w))
        w.assign((value + rng.normal(0, 0.1, value.shape)).astype(value.dtype))
    return obj


def _save_checkpoint(obj, directory):
    """Write ``obj``'s weights as a Google checkpoint (or, for families without Google
    names, a Hugging Face safetensors file); returns the checkpoint path."""
    from safetensors.numpy import save_file

    from bert4keras3.checkpoints import save_google_checkpoint

    os.makedirs(directory, exist_ok=True)
    if obj.weight_names("google", obj.google_save_prefix()):
        path = os.path.join(directory, "model.ckpt")
        save_google_checkpoint(obj, path)
        return path
    names = obj.weight_names("hf", obj.HF_PREFIXES[0])
    arrays = {}
    for w in obj.model.weights:
        name, transform = names[w.path]
        value = np.asarray(keras.ops.convert_to_numpy(w))
        arrays[name] = np.ascontiguousarray(value.T if transform == "T" else value)
    path = os.path.join(directory, "model.safetensors")
    save_file(arrays, path)
    return path


def _fit_losses(obj, kind, x, y):
    model = obj.model
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    # three epochs of one global batch: three optimizer steps, the loss of each (under a
    # distribution ``fit`` splits the batch over the data-parallel devices)
    history = model.fit(_inputs(obj, kind, x), y, batch_size=BATCH, epochs=3, shuffle=False,
                        verbose=0)
    return [float(v) for v in history.history["loss"]]


#: CI subset for the costly compiled checks (one family per layer kind: MHA/FFN with and
#: without bias, GAU, disentangled attention, T5 cross-attention / gated FFN / untied LM
#: head); ``python tests/test_distribution.py jax --full`` runs every family on every mesh
CI_FIT = ("bert", "roformer_v2", "gau_alpha", "deberta_v3", "t5.1.1")
CI_DECODE = ("nezha", "gpt2", "t5.1.1")
MESHES = {"2x4": (2, 4), "4x2": (4, 2), "8x1": (8, 1)}


def _worker_jax(tmp, full=False):
    import jax

    devices = keras.distribution.list_devices()
    assert len(devices) == 8, devices
    result = {"forward": {}, "fit": {}, "generate": {}, "shards": {}}
    # the loader's placement: a host array goes onto the variable's layout, and assign
    # keeps that array (no copy of the whole matrix onto one device, no resharding)
    from bert4keras3.checkpoints import _on_layout

    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
    probe = keras.distribution.LayoutMap(mesh)
    probe["probe"] = ("model", None)
    with keras.distribution.ModelParallel(layout_map=probe, batch_dim_name="batch").scope():
        variable = keras.Variable(np.zeros((64, 32), "float32"), name="probe")
    placed = _on_layout(variable, np.arange(64 * 32, dtype="float32").reshape(64, 32))
    variable.assign(placed)
    result["placement"] = [variable.value is placed,
                           [list(s.data.shape) for s in placed.addressable_shards]]
    for n, (family, cfg, kwargs, kind, decode) in enumerate(family_cases()):
        keras.utils.set_random_seed(n)
        if decode in ("lm", "unilm"):
            kwargs = dict(kwargs, application=decode)
        meshes = list(MESHES) if full else [list(MESHES)[n % 3]]  # CI: rotate the meshes
        do_fit = full or family in CI_FIT
        decode = decode if (full or family in CI_DECODE) else None
        ref = _perturb(_build(family, cfg, kwargs))
        ckpt = _save_checkpoint(ref, os.path.join(tmp, family))
        x, y = _data(kind)
        expected = np.asarray(ref.model.predict_on_batch(_inputs(ref, kind, x)))
        if decode:
            prompts = _prompts(decode)
            want = ref.generate(prompts, 4)
        if do_fit:
            fit_ref = _fit_losses(ref, kind, x, y)
        result["forward"][family] = {}
        for name in meshes:
            mesh = keras.distribution.DeviceMesh(MESHES[name], ("batch", "model"), devices)
            dist = keras.distribution.ModelParallel(
                layout_map=layout_map(lambda: _build(family, cfg, kwargs), mesh),
                batch_dim_name="batch")
            with dist.scope():
                obj = _build(family, cfg, kwargs, ckpt)
                if MESHES[name][1] > 1:
                    layouts = weight_layouts(obj)
                    result["shards"][f"{family} {name}"] = {
                        w.path: (list(w.shape), [list(s.data.shape)
                                                 for s in w.value.addressable_shards])
                        for w in obj.model.weights if w.path in layouts}
                    assert all(isinstance(w.value, jax.Array) for w in obj.model.weights)
                got = np.asarray(obj.model.predict_on_batch(_inputs(obj, kind, x)))
                result["forward"][family][name] = float(np.abs(got - expected).max())
                key = f"{family}@{name}" if full else family
                if decode:
                    result["generate"][key] = [want, obj.generate(prompts, 4)]
                if do_fit:
                    result["fit"][key] = [fit_ref, _fit_losses(obj, kind, x, y)]
        print(family, "done", flush=True)
    return result


def _worker_tensorflow(tmp, full=False):
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    strategy = tf.distribute.MirroredStrategy([d.name for d in
                                               tf.config.list_logical_devices("CPU")])
    result = {"fit": {}, "mirrored": {}, "replicas": strategy.num_replicas_in_sync}
    for n, (family, cfg, kwargs, kind, _) in enumerate(family_cases()):
        keras.utils.set_random_seed(n)
        if not (full or family in CI_FIT):
            continue
        ckpt = _save_checkpoint(_perturb(_build(family, cfg, kwargs)),
                                os.path.join(tmp, family))
        x, y = _data(kind)
        fit_ref = _fit_losses(_build(family, cfg, kwargs, ckpt), kind, x, y)
        with strategy.scope():
            obj = _build(family, cfg, kwargs, ckpt)
            mirrored = all(isinstance(w.value, tf.distribute.DistributedValues)
                           for w in obj.model.weights)
            result["fit"][family] = [fit_ref, _fit_losses(obj, kind, x, y)]
        result["mirrored"][family] = mirrored
        print(family, "done", flush=True)
    return result


if __name__ == "__main__":
    import tempfile

    # python tests/test_distribution.py {jax|tensorflow} [--full]
    # (--full: every family on every mesh, fit and decode included; minutes, not for CI)
    backend, full = sys.argv[1], "--full" in sys.argv[2:]
    with tempfile.TemporaryDirectory() as tmp:
        if backend == "jax":
            out = _worker_jax(tmp, full)
        else:
            out = _worker_tensorflow(tmp, full)
    print("RESULT " + json.dumps(out), flush=True)
    if full:
        if backend == "jax":
            check_jax_result(out, full=True)
            print("max forward difference:",
                  max(d for m in out["forward"].values() for d in m.values()))
        print("max fit loss difference:", max(abs(a - b) for ref, got in out["fit"].values()
                                               for a, b in zip(ref, got)))
        print("checked:", len(out["fit"]), "fit runs,", len(out.get("generate", ())),
              "decodes")
