"""bert4keras build options of ``build_transformer_model``, checked against independent references.

* conditional layer normalisation, compound tokens, hierarchical positions and custom
  position ids: a NumPy transcription of the bert4keras definitions (BERT / RoFormer forward
  pass from the Keras weights by path);
* the NSP head: ``transformers``' ``BertForPreTraining`` on the same weights;
* ``save_weights_as_checkpoint``: TensorFlow's own checkpoint reader (original Google names)
  and a fresh model loaded from the file (bit-exact);
* errors for unknown / unsupported options, ``prefix``, lm / unilm heads, Theseus-style reuse
  of the graph code on other inputs, float32 inputs.
"""
import math
import os
import warnings

import numpy as np
import pytest

import keras
from keras import ops

from bert4keras3.models import build_transformer_model

import tensorflow as tf  # noqa: E402  (writes and reads the Google checkpoints)

V, H, HEADS, INTER, MAXPOS = 40, 16, 2, 24, 32
CFG = dict(vocab_size=V, hidden_size=H, num_hidden_layers=2, num_attention_heads=HEADS,
           intermediate_size=INTER, max_position_embeddings=MAXPOS, type_vocab_size=2,
           hidden_act="gelu")
TOKENS = np.array([[2, 5, 6, 7, 3, 0, 0], [2, 8, 9, 10, 11, 12, 3]])
SEGMENTS = np.array([[0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1]])
KEEP = TOKENS != 0


def numpy_of(x):
    if isinstance(x, (list, tuple)):
        return [numpy_of(t) for t in x]
    return np.asarray(ops.convert_to_numpy(x))


def randomize(model, seed=0):
    """Non-trivial random values for every weight; returns ``{path: float64 array}``."""
    rng = np.random.RandomState(seed)
    weights = {}
    for w in model.weights:
        shape = tuple(w.shape)
        if w.path.endswith("/gamma"):
            value = 1.0 + 0.2 * rng.randn(*shape)
        elif "Embedding" in w.path and len(shape) == 2:
            value = 0.5 * rng.randn(*shape)
        else:
            value = 0.3 * rng.randn(*shape)
        w.assign(value.astype("float32"))
        weights[w.path] = value.astype("float32").astype("float64")
    return weights


def write_google(obj, path):
    """A Google checkpoint of ``obj`` written here with TF1's Saver (not the code under test)."""
    names = obj.weight_names("google", obj.google_save_prefix())
    arrays = {}
    for w in obj.model.weights:
        name, transform = names[w.path]
        value = numpy_of(w)
        arrays[name] = value.T if transform == "T" else value
    graph = tf.Graph()
    with graph.as_default():
        variables = [tf.compat.v1.Variable(v, name=n) for n, v in arrays.items()]
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, path, write_meta_graph=False)
    return path, arrays


# ---------------------------------------------------------------------------
# NumPy transcription of the BERT family (bert4keras definitions)
# ---------------------------------------------------------------------------

def gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def swish(x):
    return x / (1.0 + np.exp(-x))


def np_norm(w, name, x, cond=None, cond_act=None):
    """bert4keras LayerNormalization; conditional: gamma/beta shifted by projections of cond."""
    gamma, beta = w[name + "/gamma"], w[name + "/beta"]
    if cond is not None:
        c = cond
        if name + "/hidden_dense/kernel" in w:
            c = c @ w[name + "/hidden_dense/kernel"]
            c = swish(c) if cond_act == "swish" else c
        gamma = gamma + (c @ w[name + "/gamma_dense/kernel"])[:, None, :]
        beta = beta + (c @ w[name + "/beta_dense/kernel"])[:, None, :]
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-12) * gamma + beta


def np_rotary(x, positions):
    """RoFormer rotation of pairs (2i, 2i+1); x [b, s, heads, d], positions [b, s]."""
    d = x.shape[-1]
    theta = 10000.0 ** (-2.0 * np.arange(d // 2) / d)
    angle = positions[..., None].astype("float64") * theta  # [b, s, d/2]
    cos, sin = np.cos(angle)[:, :, None], np.sin(angle)[:, :, None]
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
    out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
    return out


def np_hierarchical(table, positions, alpha):
    """bert4keras' hierarchical decomposition of a position table."""
    n = table.shape[0]
    u = (table - alpha * table[:1]) / (1.0 - alpha)
    return alpha * u[positions // n] + (1.0 - alpha) * u[positions % n]


def np_bert(w, tokens, segments, layers=2, positions=None, rotary=False, cond=None,
            cond_act=None, hierarchical=None, application="encoder", mlm=False):
    """BERT / RoFormer forward pass from Keras weights by path (float64)."""
    b, s = tokens.shape
    if positions is None:
        positions = np.broadcast_to(np.arange(s), (b, s))
    x = w["Embedding-Token/embeddings"][tokens] + w["Embedding-Segment/embeddings"][segments]
    if not rotary:
        table = w["Embedding-Position/embeddings"]
        if hierarchical:
            alpha = 0.4 if hierarchical is True else hierarchical
            x = x + np_hierarchical(table, positions, alpha)
        else:
            x = x + table[positions]
    x = np_norm(w, "Embedding-Norm", x, cond, cond_act)
    visible = np.broadcast_to((tokens != 0)[:, None, :], (b, s, s))
    if application == "lm":
        visible = visible & np.tril(np.ones((s, s), bool))[None]
    d = H // HEADS
    for i in range(layers):
        p = f"Transformer-{i}-MultiHeadSelfAttention"

        def dense(t, name):
            return t @ w[name + "/kernel"] + w[name + "/bias"]

        q = dense(x, p + "/q_dense").reshape(b, s, HEADS, d)
        k = dense(x, p + "/k_dense").reshape(b, s, HEADS, d)
        v = dense(x, p + "/v_dense").reshape(b, s, HEADS, d)
        if rotary:
            q, k = np_rotary(q, positions), np_rotary(k, positions)
        a = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        a = np.where(visible[:, None], a, -np.inf)
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = np.einsum("bhqk,bkhd->bqhd", a, v).reshape(b, s, H)
        x = np_norm(w, p + "-Norm", x + dense(o, p + "/o_dense"), cond, cond_act)
        f = f"Transformer-{i}-FeedForward"
        y = dense(gelu(dense(x, f + "/i0_dense")), f + "/o_dense")
        x = np_norm(w, f + "-Norm", x + y, cond, cond_act)
    if not mlm:
        return x
    h = gelu(x @ w["MLM-Dense/kernel"] + w["MLM-Dense/bias"])
    h = np_norm(w, "MLM-Norm", h, cond, cond_act)
    logits = h @ w["Embedding-Token/embeddings"].T + w["MLM-Bias/bias"]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def assert_close(out, expected, tokens=TOKENS, atol=1e-4):
    keep = tokens != 0
    assert np.abs(numpy_of(out) - expected)[keep].max() <= atol


# ---------------------------------------------------------------------------
# errors, defaults, names, dtypes
# ---------------------------------------------------------------------------

def test_unknown_and_unsupported_options_raise_naming_them():
    with pytest.raises(ValueError, match=r"'frobnicate'"):
        build_transformer_model(CFG, frobnicate=1)
    with pytest.raises(ValueError, match=r"'with_mlp' \(did you mean 'with_mlm'"):
        build_transformer_model(CFG, with_mlp=True)
    with pytest.raises(ValueError, match="with_nsp=True"):
        build_transformer_model(CFG, model="roformer_v2", with_nsp=True)
    with pytest.raises(ValueError, match="hierarchical_position=True"):
        build_transformer_model(CFG, model="roformer", hierarchical_position=True)
    with pytest.raises(ValueError, match="residual_attention_scores=True"):
        build_transformer_model(CFG, residual_attention_scores=True)
    with pytest.raises(ValueError, match="layer_norm_cond"):
        build_transformer_model(CFG, model="roformer_v2", layer_norm_cond=keras.Input((3,)))
    t5 = dict(vocab_size=V, d_model=H, d_ff=INTER, num_layers=1, num_heads=2, d_kv=8)
    with pytest.raises(ValueError, match="with_pool=True"):
        build_transformer_model(t5, model="t5", with_pool=True)
    with pytest.raises(ValueError, match="'custom_position_ids'"):
        build_transformer_model(t5, model="t5", custom_position_ids=True)
    # a bert4keras option switched off is accepted by a family without it
    build_transformer_model(t5, model="t5", custom_position_ids=False, segment_vocab_size=0)
    # unknown keys of the config file (not build options) are only listed in a warning
    with pytest.warns(UserWarning, match="ignores unknown config entries.*frobnicate"):
        build_transformer_model(dict(CFG, frobnicate=3))


def test_lm_and_unilm_turn_the_mlm_head_on():
    for application in ("lm", "unilm"):
        obj = build_transformer_model(CFG, application=application, return_keras_model=False)
        probs = numpy_of(obj.model([TOKENS, SEGMENTS]))
        assert probs.shape == (2, 7, V) and obj.model.get_layer("MLM-Activation")
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
        hidden = build_transformer_model(CFG, application=application, with_mlm=False)
        assert tuple(hidden.output.shape) == (None, None, H)
    assert tuple(build_transformer_model(CFG).output.shape) == (None, None, H)
    v2 = build_transformer_model(CFG, model="roformer_v2", application="lm")
    assert v2.get_layer("Output-MLM-Activation") and tuple(v2.output.shape)[-1] == V


def test_outputs_inputs_and_float32_inputs():
    obj = build_transformer_model(CFG, with_pool=True, with_mlm=True, return_keras_model=False)
    assert [t.name for t in obj.inputs] == ["Input-Token", "Input-Segment"]
    assert obj.input is obj.inputs and obj.output is obj.outputs and len(obj.outputs) == 2
    assert all(t.dtype == "float32" for t in obj.model.inputs)
    # bert4keras scripts mix the inputs with float losses: y_mask = segment_ids[:, 1:]
    segment_ids = obj.inputs[1]
    y_mask = segment_ids[:, 1:]
    loss = ops.sum(obj.outputs[1][:, :-1, 0] * y_mask, axis=1)
    model = keras.Model(obj.inputs, loss)
    assert numpy_of(model([TOKENS, SEGMENTS])).shape == (2,)
    single = build_transformer_model(CFG, return_keras_model=False)
    assert single.output is single.outputs[0]
    assert single.model.get_layer("Transformer-1-FeedForward-Norm").output is single.output


# ---------------------------------------------------------------------------
# conditional layer normalisation
# ---------------------------------------------------------------------------

def test_conditional_layer_norm_matches_numpy():
    # the condition as a model input ...
    c_in = keras.Input((5,), name="Condition")
    obj = build_transformer_model(CFG, application="lm", layer_norm_cond=c_in,
                                  additional_input_layers=c_in, return_keras_model=False)
    assert [t.name for t in obj.model.inputs] == ["Input-Token", "Input-Segment", "Condition"]
    w = randomize(obj.model, seed=1)
    cond = np.random.RandomState(2).randn(2, 5)
    expected = np_bert(w, TOKENS, SEGMENTS, cond=cond, application="lm", mlm=True)
    assert_close(obj.model([TOKENS, SEGMENTS, cond]), expected)
    with pytest.raises(ValueError, match="layer_norm_cond"):
        obj.generate([TOKENS], 2)
    # ... or a tensor computed from one, through a hidden projection with an activation
    c_in = keras.Input((1,))
    c = keras.layers.Reshape((6,))(keras.layers.Embedding(3, 6, name="Condition-Embedding")(c_in))
    obj = build_transformer_model(CFG, layer_norm_cond=c, additional_input_layers=c_in,
                                  layer_norm_cond_hidden_size=4,
                                  layer_norm_cond_hidden_act="swish", return_keras_model=False)
    w = randomize(obj.model, seed=3)
    labels = np.array([[2], [0]])
    cond = w["Condition-Embedding/embeddings"][labels[:, 0]]
    expected = np_bert(w, TOKENS, SEGMENTS, cond=cond, cond_act="swish")
    assert_close(obj.model([TOKENS, SEGMENTS, labels]), expected)


def test_conditional_model_loads_a_plain_checkpoint(tmp_path):
    plain = build_transformer_model(CFG, with_mlm=True, return_keras_model=False)
    randomize(plain.model, seed=4)
    ckpt, _ = write_google(plain, str(tmp_path / "bert_model.ckpt"))
    c_in = keras.Input((3,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every checkpoint variable is used, nothing missing
        cond = build_transformer_model(CFG, ckpt, with_mlm=True, layer_norm_cond=c_in,
                                       additional_input_layers=c_in)
    # the condition projections start at zero: the pretrained model is unchanged
    c = np.random.RandomState(5).randn(2, 3)
    np.testing.assert_allclose(numpy_of(cond([TOKENS, SEGMENTS, c])),
                               numpy_of(plain.model([TOKENS, SEGMENTS])), atol=1e-6)
    # the condition computed by the user's own layers (bert4keras' conditional LM example):
    # their weights are not the checkpoint's and keep their values
    c_in = keras.Input((1,))
    c = keras.layers.Reshape((6,))(keras.layers.Embedding(2, 6, name="Label-Embedding")(c_in))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cond = build_transformer_model(CFG, ckpt, application="lm", layer_norm_cond=c,
                                       additional_input_layers=c_in)
    table = cond.get_layer("Label-Embedding").get_weights()[0]
    assert table.shape == (2, 6) and np.abs(table).max() > 0
    lm = build_transformer_model(CFG, ckpt, application="lm")
    np.testing.assert_allclose(numpy_of(cond([TOKENS, SEGMENTS, np.array([[1], [0]])])),
                               numpy_of(lm([TOKENS, SEGMENTS])), atol=1e-6)


# ---------------------------------------------------------------------------
# positions
# ---------------------------------------------------------------------------

def test_custom_position_ids_match_numpy():
    positions = np.array([[0, 3, 1, 7, 2, 0, 0], [9, 8, 7, 6, 5, 4, 3]])
    for name, rotary in (("bert", False), ("roformer", True)):
        obj = build_transformer_model(CFG, model=name, custom_position_ids=True,
                                      return_keras_model=False)
        assert [t.name for t in obj.inputs] == ["Input-Token", "Input-Segment", "Input-Position"]
        w = randomize(obj.model, seed=6)
        expected = np_bert(w, TOKENS, SEGMENTS, positions=positions, rotary=rotary)
        assert_close(obj.model([TOKENS, SEGMENTS, positions]), expected)


def test_hierarchical_position_matches_numpy():
    cfg = dict(CFG, max_position_embeddings=4)  # 10 positions > 4: decomposed
    tokens = np.array([[2] + list(range(5, 13)) + [3]])
    segments = np.zeros_like(tokens)
    for option, alpha in ((True, 0.4), (0.25, 0.25)):
        obj = build_transformer_model(cfg, hierarchical_position=option,
                                      return_keras_model=False)
        w = randomize(obj.model, seed=7)
        expected = np_bert(w, tokens, segments, hierarchical=alpha)
        assert_close(obj.model([tokens, segments]), expected, tokens)


def test_generate_with_custom_position_ids():
    """generate feeds its own positions to Input-Position: same tokens as without the input."""
    cfg = dict(CFG, num_hidden_layers=1)
    plain = build_transformer_model(cfg, application="lm", return_keras_model=False)
    custom = build_transformer_model(cfg, application="lm", custom_position_ids=True,
                                     return_keras_model=False)
    randomize(plain.model, seed=8)
    custom.model.set_weights(plain.model.get_weights())
    prompts = np.array([[4, 9, 13, 0], [6, 7, 8, 5]])
    assert custom.generate(prompts, 5) == plain.generate(prompts, 5)


# ---------------------------------------------------------------------------
# compound tokens, NSP, checkpoint writer, ignore_invalid_weights
# ---------------------------------------------------------------------------

def test_compound_tokens_are_means_of_their_rows(tmp_path):
    source = build_transformer_model(CFG, with_mlm=True, return_keras_model=False)
    randomize(source.model, seed=9)
    ckpt, arrays = write_google(source, str(tmp_path / "bert_model.ckpt"))
    keep = [0, 1, 2, 3, 17, 5, 30, 8, 9, 11]
    compound = [[4, 6], ([2, 7, 9], [1.0, 2.0, 1.0])]
    obj = build_transformer_model(CFG, ckpt, with_mlm="linear", keep_tokens=keep,
                                  compound_tokens=compound, return_keras_model=False)
    assert obj.vocab_size == len(keep) + 2
    for layer, name in (("Embedding-Token", "bert/embeddings/word_embeddings"),
                        ("MLM-Bias", "cls/predictions/output_bias")):
        table = arrays[name].astype("float64")[keep]
        expected = np.concatenate([
            table, table[[4, 6]].mean(0)[None],
            ((table[2] + 2 * table[7] + table[9]) / 4.0)[None]])
        np.testing.assert_allclose(numpy_of(obj.model.get_layer(layer).weights[0]), expected,
                                   rtol=1e-6, atol=1e-7)
    # a compound id is an ordinary token of the model
    ids = np.array([[2, 10, 11, 3]])
    assert numpy_of(obj.model([ids, np.zeros_like(ids)])).shape == (1, 4, len(keep) + 2)
    with pytest.raises(ValueError, match=r"compound_tokens\[0\] holds ids \[12\]"):
        build_transformer_model(CFG, keep_tokens=keep, compound_tokens=[[12]])


@pytest.fixture(scope="module")
def hf_pretraining(tmp_path_factory):
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=V, hidden_size=H, num_hidden_layers=2,
                                  num_attention_heads=HEADS, intermediate_size=INTER,
                                  max_position_embeddings=MAXPOS)
    model = transformers.BertForPreTraining(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.2 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("bert_pretraining")
    model.save_pretrained(path)
    with torch.no_grad():
        t = torch.tensor(TOKENS)
        out = model(input_ids=t, token_type_ids=torch.tensor(SEGMENTS),
                    attention_mask=(t != 0).long())
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return dict(path=str(path), state=state,
                nsp=torch.softmax(out.seq_relationship_logits, -1).numpy(),
                mlm=torch.softmax(out.prediction_logits, -1).numpy())


def test_nsp_head_matches_transformers(hf_pretraining):
    path = hf_pretraining["path"]
    nsp = build_transformer_model(os.path.join(path, "config.json"), path, with_nsp=True)
    assert nsp.output is nsp.get_layer("NSP-Proba").output
    np.testing.assert_allclose(numpy_of(nsp([TOKENS, SEGMENTS])), hf_pretraining["nsp"],
                               atol=1e-5)
    both = build_transformer_model(os.path.join(path, "config.json"), path, with_nsp=True,
                                   with_mlm=True)
    probs, mlm = numpy_of(both([TOKENS, SEGMENTS]))
    np.testing.assert_allclose(probs, hf_pretraining["nsp"], atol=1e-5)
    assert_close(mlm, hf_pretraining["mlm"])


def test_save_weights_as_checkpoint_google_names(hf_pretraining, tmp_path):
    path = hf_pretraining["path"]
    obj = build_transformer_model(os.path.join(path, "config.json"), path, with_nsp=True,
                                  with_mlm=True, return_keras_model=False)
    ckpt = str(tmp_path / "out" / "bert_model.ckpt")
    obj.save_weights_as_checkpoint(ckpt)
    reader = tf.train.load_checkpoint(ckpt)
    shapes = reader.get_variable_to_shape_map()
    assert len(shapes) == len(obj.model.weights)
    state = hf_pretraining["state"]
    for name, key, transpose in (
            ("bert/embeddings/word_embeddings", "bert.embeddings.word_embeddings.weight", False),
            ("bert/encoder/layer_1/attention/self/query/kernel",
             "bert.encoder.layer.1.attention.self.query.weight", True),
            ("bert/encoder/layer_0/output/LayerNorm/gamma",
             "bert.encoder.layer.0.output.LayerNorm.weight", False),
            ("bert/pooler/dense/kernel", "bert.pooler.dense.weight", True),
            ("cls/predictions/output_bias", "cls.predictions.bias", False),
            ("cls/seq_relationship/output_weights", "cls.seq_relationship.weight", False),
            ("cls/seq_relationship/output_bias", "cls.seq_relationship.bias", False)):
        expected = state[key].T if transpose else state[key]
        np.testing.assert_array_equal(reader.get_tensor(name), expected)
    assert shapes["cls/seq_relationship/output_weights"] == [2, H]
    # a fresh model from the written file: bit-exact
    again = build_transformer_model(os.path.join(path, "config.json"), ckpt, with_nsp=True,
                                    with_mlm=True)
    for a, b in zip(obj.model.weights, again.weights):
        np.testing.assert_array_equal(numpy_of(a), numpy_of(b))
    # dtype: the variables are written in that dtype
    half = str(tmp_path / "half" / "bert_model.ckpt")
    obj.save_weights_as_checkpoint(half, dtype="float16")
    assert tf.train.load_checkpoint(half).get_tensor("bert/pooler/dense/bias").dtype == np.float16


@pytest.mark.parametrize("model", ["mt5.1.1", "roformer_v2"])
def test_save_weights_as_checkpoint_round_trip(model, tmp_path):
    if model == "mt5.1.1":
        cfg = dict(vocab_size=V, d_model=H, d_ff=INTER, num_layers=1, num_heads=2, d_kv=8)
        names = ["encoder/rms_norm/scale", "decoder/block_000/layer_001/EncDecAttention/k",
                 "decoder/logits/kernel"]
    else:
        cfg, names = CFG, ["bert/encoder/layer_1/attention/self/query/kernel"]
    obj = build_transformer_model(cfg, model=model, return_keras_model=False)
    randomize(obj.model, seed=10)
    ckpt = str(tmp_path / "model.ckpt")
    obj.save_weights_as_checkpoint(ckpt)
    shapes = tf.train.load_checkpoint(ckpt).get_variable_to_shape_map()
    assert set(names) <= set(shapes)
    again = build_transformer_model(cfg, ckpt, model=model, return_keras_model=False)
    for a, b in zip(obj.model.weights, again.model.weights):
        np.testing.assert_array_equal(numpy_of(a), numpy_of(b))


def test_ignore_invalid_weights(tmp_path):
    source = build_transformer_model(CFG, return_keras_model=False)
    randomize(source.model, seed=11)
    ckpt, _ = write_google(source, str(tmp_path / "bert_model.ckpt"))
    with pytest.warns(UserWarning, match=r"(?s)ignore_invalid_weights.*MLM-Dense/kernel"):
        model = build_transformer_model(CFG, ckpt, with_mlm=True, ignore_invalid_weights=True)
    np.testing.assert_array_equal(numpy_of(model.get_layer("Embedding-Token").embeddings),
                                  numpy_of(source.model.get_layer("Embedding-Token").embeddings))
    with pytest.raises(ValueError, match="missing variable 'cls/predictions/transform/dense"):
        build_transformer_model(CFG, ckpt, with_mlm=True)


def test_load_from_a_dict_with_a_mapping():
    source = build_transformer_model(CFG, num_hidden_layers=1, return_keras_model=False)
    w = randomize(source.model, seed=14)
    names = source.weight_names("google", "bert/")
    arrays = {names[k][0]: (v.T if names[k][1] == "T" else v) for k, v in w.items()}
    target = build_transformer_model(CFG, num_hidden_layers=1, return_keras_model=False)
    target.load_weights_from_checkpoint(arrays)  # bert4keras accepts {name: array}
    for a, b in zip(source.model.weights, target.model.weights):
        np.testing.assert_allclose(numpy_of(a), numpy_of(b), atol=0)
    swapped = {"Embedding-Segment/embeddings": "bert/embeddings/word_embeddings"}
    with pytest.raises(ValueError, match="not a weight path"):
        target.load_weights_from_checkpoint(arrays, mapping={"Nope/kernel": "x"})
    with pytest.raises(ValueError, match="is a list"):
        target.load_weights_from_checkpoint(arrays, mapping={"Embedding-Norm": ["a", "b"]})
    with pytest.raises(ValueError, match=r"shape mismatch.*Embedding-Segment"):
        target.load_weights_from_checkpoint(arrays, mapping=swapped)


# ---------------------------------------------------------------------------
# prefix and Theseus-style reuse of the graph code
# ---------------------------------------------------------------------------

def test_prefix_lets_two_models_coexist(tmp_path):
    source = build_transformer_model(CFG, return_keras_model=False)
    randomize(source.model, seed=12)
    ckpt, _ = write_google(source, str(tmp_path / "bert_model.ckpt"))
    a = build_transformer_model(CFG, ckpt, prefix="Predecessor-", return_keras_model=False)
    b = build_transformer_model(CFG, ckpt, prefix="Successor-", num_hidden_layers=1,
                                return_keras_model=False)
    assert a.model.get_layer("Predecessor-Transformer-1-FeedForward-Norm")
    assert [t.name for t in b.inputs] == ["Successor-Input-Token", "Successor-Input-Segment"]
    joint = keras.Model(a.inputs + b.inputs, [a.output, b.output])
    names = [layer.name for layer in joint.layers]
    assert len(names) == len(set(names))
    out_a, out_b = numpy_of(joint([TOKENS, SEGMENTS, TOKENS, SEGMENTS]))
    np.testing.assert_allclose(out_a, numpy_of(source.model([TOKENS, SEGMENTS])), atol=1e-6)
    one_layer = build_transformer_model(CFG, ckpt, num_hidden_layers=1)
    np.testing.assert_allclose(out_b, numpy_of(one_layer([TOKENS, SEGMENTS])), atol=1e-6)
    path = str(tmp_path / "b.weights.h5")
    b.model.save_weights(path)
    again = build_transformer_model(CFG, path, prefix="Successor-", num_hidden_layers=1)
    np.testing.assert_array_equal(numpy_of(again([TOKENS, SEGMENTS])), out_b)


@pytest.mark.parametrize("application", ["encoder", "unilm"])
def test_theseus_reuse_on_other_inputs(application):
    """bert4keras' BERT-of-Theseus: the successor's layers run on the predecessor's inputs."""
    predecessor = build_transformer_model(CFG, application=application, with_mlm=False,
                                          prefix="Predecessor-", return_keras_model=False)
    successor = build_transformer_model(CFG, application=application, with_mlm=False,
                                        num_hidden_layers=1, prefix="Successor-",
                                        return_keras_model=False)
    w = randomize(successor.model, seed=13)
    w = {successor.unprefixed(k): v for k, v in w.items()}
    inputs = predecessor.inputs
    outputs = successor.apply_embeddings(inputs)
    outputs = successor.apply_main_layers(outputs, 0)
    theseus = keras.Model(inputs, outputs)
    # masks follow the predecessor's inputs (padding, and unilm's segments)
    expected = np_bert(w, TOKENS, SEGMENTS, layers=1)
    if application == "unilm":
        seg = SEGMENTS
        out = numpy_of(theseus([TOKENS, seg]))
        np.testing.assert_allclose(out, numpy_of(successor.model([TOKENS, seg])), atol=1e-6)
        changed = TOKENS.copy()
        changed[1, 6] = 20  # the last segment-1 token: earlier positions unchanged
        again = numpy_of(theseus([changed, seg]))
        np.testing.assert_allclose(again[1, :6], out[1, :6], atol=1e-6)
        assert np.abs(again[1, 6] - out[1, 6]).max() > 1e-3
    else:
        assert_close(theseus([TOKENS, SEGMENTS]), expected)
    # the successor's own model still works on its own inputs
    assert numpy_of(successor.model([TOKENS, SEGMENTS])).shape == (2, 7, H)
