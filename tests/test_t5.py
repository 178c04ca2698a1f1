"""T5 / T5.1.1 / mT5: parity with transformers, Mesh-TF checkpoints, keep_tokens, generation.

References are independent of the code under test: Hugging Face ``transformers``
(PyTorch, CPU) on identical random weights written by ``save_pretrained``, the
same weights written as a Google Mesh TensorFlow checkpoint by a real
``tf.compat.v1`` Saver under the original variable names (with Adafactor slots
and ``global_step``), and ``transformers``' ``generate`` for greedy and beam search.
Models are tiny (d_model 32, 4 heads of 8, d_ff 48, vocab 64).
"""
import os
import warnings

import numpy as np
import pytest

import keras

import torch
import transformers
import tensorflow as tf

from bert4keras3.checkpoints import CheckpointError  # noqa: E402
from bert4keras3.layers.t5 import relative_position_bucket  # noqa: E402
from bert4keras3.models import build_transformer_model  # noqa: E402
from bert4keras3.snippets import AutoRegressiveDecoder, Trie  # noqa: E402

ATOL = 1e-4
VOCAB, D_MODEL, D_KV, HEADS, D_FF = 64, 32, 8, 4, 48
NAMES = {"t5": "t5", "t5.1.1": "t5.1.1", "mt5": "mt5.1.1"}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def make_hf(kind, layers=(2, 3), lm_scale=1.0, eos_boost=0.0, seed=0):
    """A random transformers T5 / T5.1.1 / MT5 model, like the released ones.

    transformers >= 5 ties ``lm_head`` to the shared embedding in every T5 class;
    released T5.1.1 / mT5 checkpoints have an lm_head of their own, so it is
    replaced by an independent random matrix (``save_pretrained`` then writes it).
    """
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, d_model=D_MODEL, d_kv=D_KV, d_ff=D_FF,
                  num_layers=layers[0], num_decoder_layers=layers[1], num_heads=HEADS,
                  relative_attention_num_buckets=8, relative_attention_max_distance=20,
                  dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    if kind == "t5":
        model = transformers.T5ForConditionalGeneration(transformers.T5Config(**common))
    elif kind == "t5.1.1":
        config = transformers.T5Config(feed_forward_proj="gated-gelu",
                                       tie_word_embeddings=False, **common)
        model = transformers.T5ForConditionalGeneration(config)
    else:
        model = transformers.MT5ForConditionalGeneration(
            transformers.MT5Config(feed_forward_proj="gated-gelu", **common))
    if kind != "t5":
        head = torch.randn(VOCAB, D_MODEL) * lm_scale
        head[1] += eos_boost * head.std()
        model.lm_head.weight = torch.nn.Parameter(head)
    return model.eval()


def hf_reference(model, enc, dec):
    """(encoder hidden, decoder probabilities) of a transformers model."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc != 0).long(),
                    decoder_input_ids=torch.tensor(dec))
    return out.encoder_last_hidden_state.numpy(), torch.softmax(out.logits, -1).numpy()


def write_mesh_checkpoint(model, folder, norm="rms_norm", drop=()):
    """Write ``model``'s weights as a Mesh TensorFlow T5 checkpoint (original names).

    ``norm="rms_norm"`` names the norms as mT5 does (``.../rms_norm/scale``,
    ``encoder/rms_norm/scale``); ``"layer_norm"`` as T5 does (``.../layer_norm/scale``,
    ``encoder/final_layer_norm/scale``). Kernels are ``[in, out]``, the relative
    attention bias ``[heads, buckets]``, ``decoder/logits/kernel`` ``[d_model, vocab]``.
    Adafactor slots (``_slot_vr``/``_slot_vc`` for matrices, ``_slot_v`` for vectors)
    and ``global_step`` are saved too. Names in ``drop`` are left out.
    """
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    config = model.config
    final = "rms_norm" if norm == "rms_norm" else "final_layer_norm"
    wis = ["wi_0", "wi_1"] if config.is_gated_act else ["wi"]
    arrays = {"shared/embedding": sd["shared.weight"]}
    for stack, n in (("encoder", config.num_layers), ("decoder", config.num_decoder_layers)):
        arrays[f"{stack}/block_000/layer_000/SelfAttention/relative_attention_bias"] = \
            sd[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].T
        subs = ["SelfAttention"] + (["EncDecAttention"] if stack == "decoder" else [])
        subs.append("DenseReluDense")
        for i in range(n):
            for sub_index, sub in enumerate(subs):
                theirs = f"{stack}.block.{i}.layer.{sub_index}"
                mesh = f"{stack}/block_{i:03d}/layer_{sub_index:03d}"
                arrays[f"{mesh}/{norm}/scale"] = sd[f"{theirs}.layer_norm.weight"]
                if sub == "DenseReluDense":
                    for w in wis + ["wo"]:
                        arrays[f"{mesh}/{sub}/{w}/kernel"] = sd[f"{theirs}.{sub}.{w}.weight"].T
                else:
                    for x in "qkvo":
                        arrays[f"{mesh}/{sub}/{x}"] = sd[f"{theirs}.{sub}.{x}.weight"].T
        arrays[f"{stack}/{final}/scale"] = sd[f"{stack}.final_layer_norm.weight"]
    if model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr():
        arrays["decoder/logits/kernel"] = sd["lm_head.weight"].T
    for name in drop:
        del arrays[name]
    graph = tf.Graph()
    with graph.as_default():
        for name, value in arrays.items():
            tf.compat.v1.Variable(value, name=name)
            if value.ndim == 2:
                tf.compat.v1.Variable(np.zeros(value.shape[0], np.float32), name=name + "_slot_vr")
                tf.compat.v1.Variable(np.zeros(value.shape[1], np.float32), name=name + "_slot_vc")
            else:
                tf.compat.v1.Variable(np.zeros_like(value), name=name + "_slot_v")
        tf.compat.v1.Variable(np.int64(1000000), name="global_step")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, os.path.join(str(folder), "model.ckpt"), global_step=1000000)


def padded_inputs(seed=0, batch=3, enc_len=11, dec_len=7):
    """0-padded encoder ids and decoder ids starting with the start id 0."""
    rng = np.random.default_rng(seed)
    enc = rng.integers(2, VOCAB, (batch, enc_len)).astype("int32")
    enc[1, 7:] = 0
    enc[2, 3:] = 0
    dec = rng.integers(2, VOCAB, (batch, dec_len)).astype("int32")
    dec[:, 0] = 0
    dec[2, 5:] = 0  # decoder padding at the end is harmless (causal)
    return enc, dec


def build(config, checkpoint, name, **kwargs):
    return build_transformer_model(config, checkpoint, model=name, return_keras_model=False,
                                   **kwargs)


def no_unused_warning(record):
    return not [w for w in record if "not used" in str(w.message)]


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """kind -> (transformers model, save_pretrained directory); 2 encoder, 3 decoder layers."""
    out = {}
    for seed, kind in enumerate(NAMES):
        model = make_hf(kind, seed=seed)
        folder = tmp_path_factory.mktemp(kind.replace(".", "_"))
        model.save_pretrained(str(folder))
        out[kind] = (model, str(folder))
    return out


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    """An mT5 for generation tests (2+2 layers, end id 1 made likely) and ours."""
    model = make_hf("mt5", layers=(2, 2), lm_scale=1.0, eos_boost=2.0, seed=7)
    folder = tmp_path_factory.mktemp("gen")
    model.save_pretrained(str(folder))
    ours = build(os.path.join(folder, "config.json"), str(folder), "mt5.1.1")
    enc = np.array([[5, 9, 13, 2, 44, 61, 7, 8, 3],
                    [17, 22, 5, 40, 0, 0, 0, 0, 0],
                    [33, 3, 0, 0, 0, 0, 0, 0, 0]], "int32")
    return model, ours, enc


# ---------------------------------------------------------------------------
# numerics vs transformers
# ---------------------------------------------------------------------------

def test_relative_position_bucket_matches_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention

    rel = np.arange(-300, 301)
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20), (16, 7)):
            theirs = T5Attention._relative_position_bucket(
                torch.tensor(rel), bidirectional, buckets, distance).numpy()
            ours = keras.ops.convert_to_numpy(
                relative_position_bucket(rel, bidirectional, buckets, distance))
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("kind", list(NAMES))
def test_parity_with_transformers(hf_dirs, kind):
    model, folder = hf_dirs[kind]
    enc, dec = padded_inputs()
    hidden_ref, probs_ref = hf_reference(model, enc, dec)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        t5 = build(os.path.join(folder, "config.json"), folder, NAMES[kind])
    assert no_unused_warning(record)
    assert t5.num_decoder_layers == 3 and t5.num_hidden_layers == 2
    assert t5.tie_word_embeddings == (kind == "t5")
    hidden = keras.ops.convert_to_numpy(t5.encoder(enc))
    real = enc != 0
    np.testing.assert_allclose(hidden[real], hidden_ref[real], atol=ATOL)
    assert np.all(hidden[~real] == 0)  # padding carries the mask to the decoder
    probs = keras.ops.convert_to_numpy(t5.decoder([hidden, dec]))
    np.testing.assert_allclose(probs, probs_ref, atol=ATOL)
    joined = t5.model.predict([enc, dec], verbose=0)
    np.testing.assert_allclose(joined, probs_ref, atol=ATOL)


def test_bert4keras_style_config_uses_gelu_tanh(hf_dirs):
    """A bert4keras-style mT5 config says hidden_act "gelu"; it must mean tanh-GELU."""
    model, folder = hf_dirs["mt5"]
    config = {"vocab_size": VOCAB, "hidden_size": D_MODEL, "num_hidden_layers": 2,
              "num_decoder_layers": 3, "num_attention_heads": HEADS,
              "attention_head_size": D_KV, "intermediate_size": D_FF, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "relative_attention_num_buckets": 8,
              "relative_attention_max_distance": 20}
    t5 = build(config, folder, "mt5.1.1")
    assert t5.hidden_act == ["gelu_tanh", "linear"] and t5.dropout_rate == 0.1
    enc, dec = padded_inputs(seed=1)
    _, probs_ref = hf_reference(model, enc, dec)
    np.testing.assert_allclose(t5.model.predict([enc, dec], verbose=0), probs_ref, atol=ATOL)


def test_encoder_and_decoder_alone(hf_dirs):
    model, folder = hf_dirs["t5.1.1"]
    config = os.path.join(folder, "config.json")
    enc, dec = padded_inputs(seed=2)
    hidden_ref, probs_ref = hf_reference(model, enc, dec)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        encoder = build_transformer_model(config, folder, model="t5.1.1_encoder")
    assert no_unused_warning(record)  # the decoder half of the file is expected
    hidden = encoder.predict(enc, verbose=0)
    np.testing.assert_allclose(hidden[enc != 0], hidden_ref[enc != 0], atol=ATOL)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        decoder = build_transformer_model(config, folder, model="t5.1.1_decoder")
    assert no_unused_warning(record)
    context = np.where((enc != 0)[..., None], hidden_ref, 0.0).astype("float32")
    np.testing.assert_allclose(decoder.predict([context, dec], verbose=0), probs_ref, atol=ATOL)


# ---------------------------------------------------------------------------
# Mesh TensorFlow checkpoints
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind,norm", [("mt5", "rms_norm"), ("t5.1.1", "layer_norm"),
                                       ("t5", "layer_norm")])
def test_mesh_tf_checkpoint(hf_dirs, tmp_path, kind, norm):
    model, folder = hf_dirs[kind]
    prefix = write_mesh_checkpoint(model, tmp_path, norm=norm)
    assert prefix.endswith("model.ckpt-1000000")
    names = dict(tf.train.list_variables(prefix))
    assert "global_step" in names and "shared/embedding_slot_vr" in names
    assert f"encoder/block_001/layer_001/{norm}/scale_slot_v" in names
    assert names["encoder/block_000/layer_000/SelfAttention/relative_attention_bias"] == [HEADS, 8]
    enc, dec = padded_inputs(seed=3)
    _, probs_ref = hf_reference(model, enc, dec)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        t5 = build(os.path.join(folder, "config.json"), prefix, NAMES[kind])
    assert no_unused_warning(record)  # slots and global_step are not reported
    np.testing.assert_allclose(t5.model.predict([enc, dec], verbose=0), probs_ref, atol=ATOL)


def test_mesh_tf_checkpoint_missing_weight(hf_dirs, tmp_path):
    model, folder = hf_dirs["mt5"]
    missing = "decoder/block_001/layer_001/EncDecAttention/k"
    prefix = write_mesh_checkpoint(model, tmp_path, drop=[missing])
    with pytest.raises(CheckpointError) as info:
        build(os.path.join(folder, "config.json"), prefix, "mt5.1.1")
    message = str(info.value)
    assert missing in message and "Decoder-Transformer-1-MultiHeadCrossAttention/k_dense/kernel" in message


def test_keep_tokens(hf_dirs, tmp_path):
    model, folder = hf_dirs["mt5"]
    config = os.path.join(folder, "config.json")
    rng = np.random.default_rng(5)
    keep = [0, 1] + sorted(rng.choice(np.arange(2, VOCAB), 20, replace=False).tolist())
    new_enc = rng.integers(2, len(keep), (2, 9)).astype("int32")
    new_enc[1, 6:] = 0
    new_dec = rng.integers(2, len(keep), (2, 5)).astype("int32")
    new_dec[:, 0] = 0
    keep_arr = np.array(keep)
    _, full = hf_reference(model, keep_arr[new_enc], keep_arr[new_dec])
    expected = full[..., keep] / full[..., keep].sum(-1, keepdims=True)
    small = build(config, folder, "mt5.1.1", keep_tokens=keep)
    assert small.vocab_size == len(keep)
    probs = small.model.predict([new_enc, new_dec], verbose=0)
    assert probs.shape[-1] == len(keep)
    np.testing.assert_allclose(probs, expected, atol=ATOL)
    # the same cut from a Mesh-TF checkpoint ([d_model, vocab] logits kernel)
    prefix = write_mesh_checkpoint(model, tmp_path)
    small_mesh = build(config, prefix, "mt5.1.1", keep_tokens=keep)
    np.testing.assert_allclose(small_mesh.model.predict([new_enc, new_dec], verbose=0),
                               expected, atol=ATOL)


def test_keras_round_trips(hf_dirs, tmp_path):
    model, folder = hf_dirs["t5"]
    config = os.path.join(folder, "config.json")
    t5 = build(config, folder, "t5")
    enc, dec = padded_inputs(seed=4)
    before = t5.model.predict([enc, dec], verbose=0)
    path = str(tmp_path / "t5.keras")
    t5.model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(restored.predict([enc, dec], verbose=0), before)
    weights = str(tmp_path / "t5.weights.h5")
    t5.model.save_weights(weights)
    again = build_transformer_model(config, weights, model="t5")
    np.testing.assert_array_equal(again.predict([enc, dec], verbose=0), before)


def test_config_errors():
    with pytest.raises(ValueError, match="d_model"):
        build_transformer_model({"vocab_size": 10, "num_layers": 1}, model="t5")
    with pytest.raises(ValueError, match="application"):
        build_transformer_model({"vocab_size": 10, "d_model": 8, "num_layers": 1,
                                 "num_heads": 2, "d_ff": 8}, model="t5", application="lm")
    decoder = build({"vocab_size": 10, "d_model": 8, "num_layers": 1, "num_heads": 2,
                     "d_ff": 8}, None, "t5_decoder")
    with pytest.raises(ValueError, match="encoder and the decoder"):
        decoder.generate(np.ones((1, 3), "int32"), 2)


# ---------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------

def cut_at_end(rows, end_id):
    out = []
    for row in rows:
        row = list(row)
        out.append(row[:row.index(end_id) + 1] if end_id in row else row)
    return out


def full_decoder_probs(t5, hidden, prefix, length=24):
    """Next-token probabilities after ``prefix`` by running the whole decoder on it.

    The prefix is right-padded to a fixed ``length`` so the Keras model compiles
    once; positions after the prefix cannot influence it (causal attention).
    """
    prefix = np.asarray(prefix, "int32")
    ids = np.zeros((len(prefix), length), "int32")
    ids[:, :prefix.shape[1]] = prefix
    return t5.decoder.predict([hidden, ids], verbose=0)[:, prefix.shape[1] - 1]


def uncached_greedy(t5, enc, steps):
    """Greedy decoding that re-runs the whole decoder on the full prefix every step."""
    hidden = t5.encoder.predict(enc, verbose=0)
    ids = np.zeros((len(enc), 1), "int32")
    for _ in range(steps):
        probs = full_decoder_probs(t5, hidden, ids)
        ids = np.concatenate([ids, probs.argmax(-1)[:, None].astype("int32")], 1)
    return ids[:, 1:].tolist()


def test_greedy_equals_transformers(gen):
    model, t5, enc = gen
    with torch.no_grad():
        ref = model.generate(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc != 0),
                             max_new_tokens=12, num_beams=1, do_sample=False, eos_token_id=1,
                             output_scores=True, return_dict_in_generate=True)
    expected = cut_at_end(ref.sequences[:, 1:].tolist(), 1)
    # the comparison is meaningful: every chosen token wins by a clear margin
    for t, scores in enumerate(ref.scores):
        top2 = np.sort(scores.numpy(), -1)[:, -2:]
        live = [r for r in range(len(enc)) if t < len(expected[r])]
        assert np.all(top2[live, 1] - top2[live, 0] > 1e-3)
    assert any(row[-1] == 1 and len(row) < 12 for row in expected)  # some row ends early
    assert t5.generate(enc, 12, end_id=1) == expected


def test_beam_search_equals_transformers(gen):
    model, t5, enc = gen
    with torch.no_grad():
        ref = model.generate(input_ids=torch.tensor(enc), attention_mask=torch.tensor(enc != 0),
                             max_new_tokens=10, num_beams=4, do_sample=False, eos_token_id=1,
                             length_penalty=1.0, early_stopping=False)
    expected = cut_at_end(ref[:, 1:].tolist(), 1)
    ours = t5.generate(enc, 10, method="beam", beam_size=4, end_id=1)
    assert ours == expected
    assert any(len(row) < 10 and row[-1] == 1 for row in ours)  # a beam finished early
    assert ours != t5.generate(enc, 10, end_id=1)  # beam search found something else


def test_cached_equals_uncached(gen):
    _, t5, enc = gen
    assert t5.generate(enc, 14) == uncached_greedy(t5, enc, 14)
    # a different (batch, length) bucket compiles its own step and still agrees
    assert t5.generate(enc[:1], 20) == uncached_greedy(t5, enc[:1], 20)


@pytest.mark.parametrize("version", ["t5", "t5.1.1", "mt5.1.1"])
def test_cached_equals_uncached_every_version(version):
    """Every T5 version decodes through its own graph code; greedy = full re-run."""
    cfg = dict(vocab_size=VOCAB, d_model=32, d_ff=48, num_layers=2, num_decoder_layers=3,
               num_heads=4, d_kv=8, relative_attention_num_buckets=8,
               relative_attention_max_distance=12)
    t5 = build_transformer_model(cfg, model=version, return_keras_model=False)
    rng = np.random.RandomState(3)
    for w in t5.model.weights:  # strong random weights: the decode depends on the context
        shape = tuple(w.shape)
        scale = 1.0 if "Embedding" in w.path or len(shape) < 2 else 2.0 / np.sqrt(shape[0])
        value = rng.randn(*shape) * scale
        if w.path.endswith("gamma"):
            value = 1.0 + 0.2 * rng.randn(*shape)
        w.assign(value.astype("float32"))
    enc = np.array([[5, 9, 13, 2, 44, 7], [17, 22, 0, 0, 0, 0], [33, 3, 8, 9, 0, 0]], "int32")
    out = t5.generate(enc, 10)
    assert out == uncached_greedy(t5, enc, 10)
    assert len({tuple(r) for r in out}) > 1


def test_sampling_is_seeded_and_respects_top_k(gen):
    _, t5, enc = gen
    a = t5.generate(enc, 10, method="sample", top_k=3, temperature=3.0, seed=11)
    b = t5.generate(enc, 10, method="sample", top_k=3, temperature=3.0, seed=11)
    c = t5.generate(enc, 10, method="sample", top_k=3, temperature=3.0, seed=12)
    assert a == b and a != c
    hidden = t5.encoder.predict(enc, verbose=0)
    ids = np.array([[0] + row[:-1] for row in a], "int32")
    probs = t5.decoder.predict([hidden, ids], verbose=0)
    top3 = np.argsort(-probs, -1)[..., :3]
    for r, row in enumerate(a):
        for t, token in enumerate(row):
            assert token in top3[r, t]


def test_allowed_trie(gen):
    _, t5, enc = gen
    rng = np.random.default_rng(3)
    sequences = [[int(x) for x in rng.integers(2, VOCAB, rng.integers(1, 5))] + [1]
                 for _ in range(6)]
    sequences += [[9, 9, 1], [9, 10, 11, 1]]
    trie = Trie(sequences)
    for method in ("greedy", "beam"):
        out = t5.generate(enc, 8, method=method, end_id=1, allowed=trie)
        for row in out:
            assert row in trie, (method, row)


def test_autoregressive_decoder_with_t5(gen):
    """The bert4keras subclass-and-predict API runs on the T5 encoder / decoder."""
    _, t5, enc = gen

    class Generator(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            return full_decoder_probs(t5, inputs[0], output_ids)

    generator = Generator(start_id=0, end_id=1, maxlen=10)
    hidden = t5.encoder.predict(enc, verbose=0)
    expected = t5.generate(enc, 10, end_id=1)
    for r in range(len(enc)):
        # sampling from the top-1 id only is greedy decoding
        seq = generator.random_sample([hidden[r]], 1, topk=1, seed=0)[0]
        assert int(seq[0]) == 0 and [int(t) for t in seq[1:]] == expected[r]
    # beam search through the same API returns a sequence the model can produce
    best = generator.beam_search([hidden[0]], topk=3)
    assert int(best[0]) == 0 and (int(best[-1]) == 1 or len(best) == 11)


# ---------------------------------------------------------------------------
# end to end: sentencepiece + training with fit + generation
# ---------------------------------------------------------------------------

def test_train_reverse_task_end_to_end(tmp_path):
    import sentencepiece as spm
    from bert4keras3.tokenizers import SpTokenizer

    rng = np.random.default_rng(0)
    letters = list("abcdefgh")

    def word():
        return "".join(rng.choice(letters, rng.integers(3, 8)))

    corpus = [word() for _ in range(2500)]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(tmp_path / "sp"), vocab_size=12,
        model_type="char", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    tokenizer = SpTokenizer(str(tmp_path / "sp.model"))
    seen = set(corpus)
    held_out = [w for w in (word() for _ in range(300)) if w not in seen][:20]
    assert len(held_out) == 20

    def arrays(words, length=12):
        x, d, y = (np.zeros((len(words), length), "int32") for _ in range(3))
        for r, w in enumerate(words):
            source, target = tokenizer.encode(w)[0], tokenizer.encode(w[::-1])[0]
            x[r, :len(source)] = source
            y[r, :len(target)] = target
            d[r, 1:len(target)] = target[:-1]  # decoder input: start id 0, then the target
        return x, d, y

    x, d, y = arrays(corpus)
    t5 = build({"vocab_size": 12, "hidden_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "attention_head_size": 16, "intermediate_size": 128,
                "hidden_act": "gelu", "dropout_rate": 0.0, "initializer_range": 0.05,
                "relative_attention_num_buckets": 32, "relative_attention_max_distance": 20},
               None, "mt5.1.1")
    epochs, batch = 8, 32
    schedule = keras.optimizers.schedules.CosineDecay(4e-3, epochs * len(corpus) // batch)
    t5.model.compile(optimizer=keras.optimizers.Adam(schedule),
                     loss="sparse_categorical_crossentropy")
    history = t5.model.fit([x, d], y, sample_weight=(y != 0).astype("float32"),
                           batch_size=batch, epochs=epochs, verbose=0)
    assert history.history["loss"][-1] < 0.1
    out = t5.generate(arrays(held_out)[0], 12, end_id=1)
    decoded = [tokenizer.decode(row) for row in out]
    correct = sum(a == w[::-1] for a, w in zip(decoded, held_out))
    assert correct >= 18, list(zip(decoded, held_out))
