"""examples/bert4keras/: every script runs on its bundled sample with a tiny random model.

Each script is run in-process (``runpy``, as ``__main__``) with its environment variables
pointing at a tiny model directory written here (a Google-format checkpoint, as bert4keras
reads, with the pooler / MLM / NSP heads of a released BERT) and one short epoch. The
assertions read what the script itself computed (its evaluator's metric, decoded text,
files it wrote).
"""
import glob
import math
import os
import re
import runpy

import numpy as np
import pytest

import keras

from bert4keras3.models import build_transformer_model
from bert4keras3.snippets import sequence_padding

from conftest import write_tiny_model_dir

import tensorflow  # noqa: F401,E402  (Google checkpoints are written with TensorFlow)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples", "bert4keras")
DATA = os.path.join(ROOT, "examples", "data", "bert4keras")


def sample_texts():
    texts = []
    for path in glob.glob(os.path.join(DATA, "**", "*"), recursive=True):
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                texts.append(f.read())
    return texts


def write_google_model(path, model="bert", **heads):
    """A tiny model directory with a Google checkpoint holding every head of the family."""
    keras.utils.set_random_seed(0)  # the same weights whichever test creates the fixture
    write_tiny_model_dir(path, sample_texts(), model=model, checkpoint=None)
    obj = build_transformer_model(os.path.join(path, "bert_config.json"), model=model,
                                  return_keras_model=False, **heads)
    obj.save_weights_as_checkpoint(os.path.join(path, "bert_model.ckpt"))
    keras.backend.clear_session()
    return path


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    return write_google_model(str(tmp_path_factory.mktemp("bert")), with_pool=True,
                              with_nsp=True, with_mlm=True)


@pytest.fixture(scope="session")
def roformer_dir(tmp_path_factory):
    return write_google_model(str(tmp_path_factory.mktemp("roformer")), model="roformer",
                              with_mlm=True)


def run_example(name, monkeypatch, tmp_path, model_dir, **env):
    """Run examples/bert4keras/<name>.py as __main__; returns its globals."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    settings = dict(B4K_MODEL_DIR=model_dir, B4K_OUTPUT_DIR=str(tmp_path), B4K_EPOCHS="1")
    settings.update(env)
    for key, value in settings.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.chdir(tmp_path)
    return runpy.run_path(os.path.join(EXAMPLES, name + ".py"), run_name="__main__")


def test_sentence_pair(monkeypatch, tmp_path, bert_dir, capsys):
    g = run_example("sentence_pair", monkeypatch, tmp_path, bert_dir)
    assert 0.0 <= g["evaluator"].best_val_acc <= 1.0
    assert os.path.exists(tmp_path / "sentence_pair.weights.h5")
    assert 0.0 <= g["test_acc"] <= 1.0 and "test_acc:" in capsys.readouterr().out


def test_sentiment(monkeypatch, tmp_path, bert_dir):
    g = run_example("sentiment", monkeypatch, tmp_path, bert_dir)
    assert 0.0 <= g["test_acc"] <= 1.0
    assert os.path.exists(tmp_path / "sentiment.weights.h5")


def test_ner_crf(monkeypatch, tmp_path, bert_dir, capsys):
    g = run_example("ner_crf", monkeypatch, tmp_path, bert_dir)
    assert g["categories"] == ["LOC", "ORG", "PER"]
    assert 0.0 <= g["evaluator"].best_val_f1 <= 1.0 and 0.0 <= g["test_f1"] <= 1.0
    assert g["NER"].trans.shape == (7, 7)
    entities = g["NER"].recognize(g["test_data"][0][0])
    assert all(0 <= s <= e < len(g["test_data"][0][0]) and t in g["categories"]
               for s, e, t in entities)


@pytest.mark.parametrize("efficient", ["0", "1"])
def test_ner_global_pointer(monkeypatch, tmp_path, bert_dir, efficient):
    g = run_example("ner_global_pointer", monkeypatch, tmp_path, bert_dir,
                    B4K_EFFICIENT=efficient)
    assert type(g["model"].layers[-1]).__name__ == (
        "EfficientGlobalPointer" if efficient == "1" else "GlobalPointer")
    assert 0.0 <= g["evaluator"].best_val_f1 <= 1.0
    assert os.path.exists(tmp_path / "ner_global_pointer.weights.h5")


def read_json_objects(path):
    """The JSON objects of a file written as indented objects one after another."""
    import json
    with open(path, encoding="utf-8") as f:
        text = f.read()
    decoder, objects, i = json.JSONDecoder(), [], 0
    while text[i:].strip():
        i += len(text[i:]) - len(text[i:].lstrip())
        obj, i = decoder.raw_decode(text, i)
        objects.append(obj)
    return objects


def test_gplinker_relation(monkeypatch, tmp_path, bert_dir):
    g = run_example("gplinker_relation", monkeypatch, tmp_path, bert_dir)
    assert sorted(g["predicate2id"]) == ["作者", "出生地", "毕业院校"]
    f1, precision, recall = g["evaluate"](g["valid_data"][:3])
    assert all(0.0 <= v <= 1.0 for v in (f1, precision, recall))
    assert 0.0 <= g["evaluator"].best_val_f1 <= 1.0
    assert os.path.exists(tmp_path / "gplinker.weights.h5")  # saved on f1 >= best (0)
    rows = read_json_objects(tmp_path / "dev_pred.json")  # rewritten by the call above
    assert len(rows) == 3
    for row, d in zip(rows, g["valid_data"]):
        assert sorted(row) == ["lack", "new", "spo_list", "spo_list_pred", "text"]
        assert row["text"] == d["text"]
        assert sorted(map(tuple, row["spo_list"])) == sorted(set(d["spo_list"]))
        pred = set(map(tuple, row["spo_list_pred"]))
        assert set(map(tuple, row["new"])) == pred - set(map(tuple, row["spo_list"]))
        for s, p, o in pred:  # spans of the text, known predicates
            assert s in d["text"] and o in d["text"] and p in g["predicate2id"]


def test_autotitle_unilm(monkeypatch, tmp_path, bert_dir):
    g = run_example("autotitle_unilm", monkeypatch, tmp_path, bert_dir, B4K_TITLE_MAXLEN=5)
    assert len(g["test_data"]) == 3  # csl/test.tsv is read (not used in training)
    evaluator = g["evaluator"]
    assert 0.0 <= evaluator.best_bleu <= 1.0
    # saved only when the BLEU beats 0 (strict ">", as the original)
    assert os.path.exists(tmp_path / "autotitle.weights.h5") == (evaluator.best_bleu > 0)
    metrics = evaluator.evaluate(g["valid_data"][:2])
    assert sorted(metrics) == ["bleu", "rouge-1", "rouge-2", "rouge-l"]
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in metrics.values()), metrics
    # the metrics are rouge's and nltk's: a prediction equal to the title scores 1
    title, content = g["valid_data"][0]
    monkeypatch.setattr(g["autotitle"], "generate", lambda text, topk=1: title)
    perfect = evaluator.evaluate([(title, content)])
    assert all(abs(v - 1.0) < 1e-6 for v in perfect.values()), perfect
    monkeypatch.undo()
    generated = g["autotitle"].generate(content)
    assert isinstance(generated, str) and len(generated.replace(" ", "")) <= 5 * 2


def test_kgclue_qa(monkeypatch, tmp_path, roformer_dir, capsys):
    import shutil

    data_dir = tmp_path / "kgclue"  # the script caches KG.json in its data directory
    shutil.copytree(os.path.join(DATA, "kgclue"), data_dir)
    for name, n in (("dev.json", 2), ("test_public.json", 1)):  # fewer decodes (test time)
        with open(data_dir / name, encoding="utf-8") as f:
            lines = f.readlines()[:n]
        with open(data_dir / name, "w", encoding="utf-8") as f:
            f.writelines(lines)
    g = run_example("kgclue_qa", monkeypatch, tmp_path, roformer_dir, B4K_DATA_DIR=data_dir)
    assert os.path.exists(data_dir / "KG.json")
    assert os.path.exists(tmp_path / "kgclue.weights.h5")  # saved on score >= best (0)
    assert 0.0 <= g["evaluator"].best_score <= 1.0
    assert len(g["valid_data"]) == 2 and len(g["test_data"]) == 1
    tests = re.findall(r"\[TEST\] topk=(\d), em: ([\d.]+), f1: ([\d.]+), score: ([\d.]+)",
                       capsys.readouterr().out)
    assert [t[0] for t in tests] == ["1", "3", "5"]
    for _, em, f1, score in tests:
        em, f1, score = float(em), float(f1), float(score)
        assert 0.0 <= em <= f1 <= 1.0 and abs(score - (em + f1) / 2) < 1e-5
    objects = {" ".join(line.rstrip("\n").split("\t")[2].split())
               for line in open(data_dir / "Knowledge.txt", encoding="utf-8")}
    keys = {tuple(line.rstrip("\n").split("\t")[:2])
            for line in open(data_dir / "Knowledge.txt", encoding="utf-8")}
    for question, _ in g["valid_data"][:2]:
        s, p, m, o = g["autoqa"].generate(question, topk=2)
        # the trie only lets knowledge-base keys through: a (subject, predicate) of the KB
        # and its object(s)
        assert all(x in objects for x in o.split("\t"))
        subject = (s + "（%s）" % m if m else s).replace(" ", "")
        assert (subject, p.replace(" ", "")) in keys


def test_cosent(monkeypatch, tmp_path, bert_dir):
    g = run_example("cosent", monkeypatch, tmp_path, bert_dir)
    assert -1.0 <= g["evaluator"].best_val_score <= 1.0
    assert -1.0 <= g["test_score"] <= 1.0
    loss = g["cosent_loss"](np.array([[1], [1], [0], [0]], "float32"),
                            keras.ops.convert_to_tensor(np.eye(4, 3, dtype="float32")))
    assert np.isfinite(float(keras.ops.convert_to_numpy(loss)))


def test_simcse(monkeypatch, tmp_path, bert_dir, capsys):
    import sys

    monkeypatch.setattr(sys, "argv", ["simcse.py", "BERT", "first-last-avg", "LCQMC", "0.1"])
    g = run_example("simcse", monkeypatch, tmp_path, bert_dir,
                    B4K_DATA_DIR=os.path.join(DATA, "senteval_cn"))
    assert g["all_names"] == ["LCQMC-train", "LCQMC-valid", "LCQMC-test"]
    assert g["all_weights"] == [10, 6, 6]
    corrcoefs = g["all_corrcoefs"]
    assert len(corrcoefs) == 5 and all(-1.0 <= c <= 1.0 for c in corrcoefs), corrcoefs
    assert abs(corrcoefs[3] - np.mean(corrcoefs[:3])) < 1e-9
    assert abs(corrcoefs[4] - np.average(corrcoefs[:3], weights=[10, 6, 6])) < 1e-9
    assert len(g["train_token_ids"]) == 2 * 22  # both sentences of every pair
    out = capsys.readouterr().out
    assert "LCQMC-test: " in out and "w-avg: " in out
    # the SimCSE loss: a batch of identical twins ranks each row's twin first (small loss),
    # a batch whose twins are unrelated does not
    x = np.eye(4, 8, dtype="float32")
    twins = np.repeat(x, 2, axis=0)
    loss = lambda y: float(keras.ops.convert_to_numpy(
        g["simcse_loss"](None, keras.ops.convert_to_tensor(y))))
    assert loss(twins) < 1e-3 < loss(np.eye(8, 8, dtype="float32"))


def test_theseus(monkeypatch, tmp_path, bert_dir):
    g = run_example("theseus", monkeypatch, tmp_path, bert_dir, B4K_SUCCESSOR_LAYERS=1)
    assert set(g["evaluators"]) == {"predecessor", "theseus", "successor"}
    assert all(0.0 <= e.best_val_acc <= 1.0 for e in g["evaluators"].values())
    # the successor is smaller and shares the classifier trained on the predecessor
    assert g["successor"].num_hidden_layers == 1 and g["predecessor"].num_hidden_layers == 2
    for name in ("predecessor", "theseus", "successor"):
        assert os.path.exists(tmp_path / f"theseus_{name}.weights.h5")
    assert "test" not in g["result"]  # the sample's test split has no labels
    # the predecessor phase trained the predecessor: its weights left the checkpoint's
    # (Keras 3 reads the trainable flags at fit time, so freezing it early trains nothing)
    fresh = build_transformer_model(os.path.join(bert_dir, "bert_config.json"),
                                    os.path.join(bert_dir, "bert_model.ckpt"),
                                    prefix="Predecessor-")
    trained = {w.path: keras.ops.convert_to_numpy(w) for w in g["predecessor"].model.weights}
    # (the key bias gets no gradient: softmax ignores a shift shared by a query's scores)
    still = [w.path for w in fresh.weights
             if np.allclose(trained[w.path], keras.ops.convert_to_numpy(w))]
    assert len(fresh.weights) == len(trained) == 37
    assert still == [f"Predecessor-Transformer-{i}-MultiHeadSelfAttention/k_dense/bias"
                     for i in range(2)]


def test_theseus_scores_labelled_test(monkeypatch, tmp_path, bert_dir):
    import json
    import shutil

    data = tmp_path / "data"
    shutil.copytree(os.path.join(DATA, "iflytek"), data)
    shutil.copy(data / "dev.json", data / "test.json")  # a labelled test split
    g = run_example("theseus", monkeypatch, tmp_path, bert_dir, B4K_SUCCESSOR_LAYERS=1,
                    B4K_DATA_DIR=str(data), B4K_DIRECT=1, B4K_LIMIT=8, B4K_MAXLEN=32,
                    B4K_SEED=3)
    with open(tmp_path / "theseus_result.json") as f:
        result = json.load(f)
    assert result["train_examples"] == 8 and result["maxlen"] == 32
    assert set(result["test"]) == {"predecessor", "successor", "direct"}
    assert g["direct"].num_hidden_layers == 1
    # the recorded accuracy is the direct model's (the last scored) accuracy on the labels
    labels = [json.loads(line)["label"] for line in open(data / "test.json", encoding="utf-8")]
    predicted = [int(np.argmax(g["direct_model"].predict(x, verbose=0), axis=1)[i])
                 for x, _ in g["test_generator"] for i in range(len(x[0]))]
    expected = np.mean([int(a) == b for a, b in zip(labels, predicted)])
    assert result["test"]["direct"]["test_acc"] == pytest.approx(expected)
    assert result["test"]["direct"]["seconds_per_batch"] > 0


def test_conditional_lm(monkeypatch, tmp_path, bert_dir, capsys):
    import ast

    g = run_example("conditional_lm", monkeypatch, tmp_path, bert_dir, B4K_GEN_MAXLEN=6)
    assert math.isfinite(g["evaluator"].lowest)
    assert os.path.exists(tmp_path / "conditional_lm.weights.h5")
    out = capsys.readouterr().out
    for header in ("正面采样:\n", "负面采样:\n"):  # just_show(): 5 samples per label
        assert out.count(header) == 1
        # the first list printed after the header (Keras 3's predict progress bars come first)
        line = next(l for l in out.split(header)[1].splitlines() if l.startswith("["))
        samples = ast.literal_eval(line.strip())
        assert len(samples) == 5 and all(isinstance(t, str) for t in samples)
    texts = g["random_sentiment"].generate(1, 2)
    assert len(texts) == 2 and all(isinstance(t, str) and len(t) <= 6 * 4 for t in texts)


def write_mt5_model(path):
    """A tiny "pretrained" mT5.1.1 directory as autotitle_mt5.py reads it.

    ``mt5_config.json`` (bert4keras style), ``sentencepiece.model`` trained here on the bundled
    CSL texts with T5's ids (pad 0, eos 1, unk 2), ``keep_tokens.json`` (every row, in order)
    and a Google (Mesh TensorFlow) checkpoint ``model.ckpt`` written by
    ``save_weights_as_checkpoint``. The model is first fitted briefly on CSL's titles so that
    one epoch of the script gives titles that share characters with the references (a
    nonzero BLEU, so the script saves its weights).
    """
    import json

    import sentencepiece as spm
    csl = os.path.join(DATA, "csl")
    pairs = []
    for name in ("train.tsv", "val.tsv"):
        with open(os.path.join(csl, name), encoding="utf-8") as f:
            pairs += [line.rstrip("\n").split("\t") for line in f]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([text for pair in pairs for text in pair]),
        model_prefix=os.path.join(path, "sentencepiece"), vocab_size=200, model_type="char",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(path, "sentencepiece.model"))
    vocab = sp.get_piece_size()
    config = {"vocab_size": vocab, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "attention_head_size": 16, "intermediate_size": 64,
              "hidden_act": "gelu", "dropout_rate": 0.1,
              "relative_attention_num_buckets": 8, "relative_attention_max_distance": 20}
    with open(os.path.join(path, "mt5_config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(path, "keep_tokens.json"), "w") as f:
        json.dump(list(range(vocab)), f)
    keras.utils.set_random_seed(0)
    obj = build_transformer_model(os.path.join(path, "mt5_config.json"), model="mt5.1.1",
                                  return_keras_model=False)
    pairs = pairs[:24]  # train.tsv
    context = sequence_padding([sp.encode(c)[:63] + [1] for _, c in pairs])
    titles = [sp.encode(t)[:15] + [1] for t, _ in pairs]
    target = sequence_padding(titles)
    decoder_in = sequence_padding([[0] + t[:-1] for t in titles])
    obj.model.compile(optimizer=keras.optimizers.Adam(1e-2),
                      loss="sparse_categorical_crossentropy")
    obj.model.fit([context, decoder_in], target, sample_weight=(target != 0).astype("float32"),
                  batch_size=len(pairs), epochs=40, verbose=0)
    obj.save_weights_as_checkpoint(os.path.join(path, "model.ckpt"))
    keras.backend.clear_session()
    return path


@pytest.fixture(scope="session")
def mt5_dir(tmp_path_factory):
    return write_mt5_model(str(tmp_path_factory.mktemp("mt5")))


def test_autotitle_mt5(monkeypatch, tmp_path, mt5_dir):
    g = run_example("autotitle_mt5", monkeypatch, tmp_path, mt5_dir, B4K_TITLE_MAXLEN=6)
    assert len(g["test_data"]) == 3  # csl/test.tsv
    evaluator = g["evaluator"]
    assert 0.0 < evaluator.best_bleu <= 1.0  # > 0: the epoch's weights were saved
    assert os.path.exists(tmp_path / "autotitle_mt5.weights.h5")
    metrics = evaluator.evaluate(g["valid_data"][:2])
    assert sorted(metrics) == ["bleu", "rouge-1", "rouge-2", "rouge-l"]
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in metrics.values()), metrics
    title = g["autotitle"].generate(g["valid_data"][0][1])
    assert isinstance(title, str) and len(title) <= 6

    # the loss the script trains with, on one batch with padded titles, against NumPy:
    # mean next-token cross-entropy over the title tokens, padding of the decoder input
    # (the Keras mask reaching ``mask[1]``) left out
    pairs = [(title[:k], content) for k, (title, content) in enumerate(g["valid_data"][:4], 2)]
    (c, t), _ = next(iter(g["data_generator"](pairs, 4)))  # titles of 2..5 characters
    loss = g["model"].evaluate([c, t], batch_size=len(c), verbose=0)
    probs = g["t5"].model.predict([c, t], verbose=0)
    y_true, y_pred = t[:, 1:].astype(int), probs[:, :-1].astype("float64")
    picked = np.take_along_axis(y_pred, y_true[..., None], axis=-1)[..., 0]
    token_loss = -np.log(np.clip(picked, 1e-7, 1.0))
    y_mask = (y_true != 0).astype("float64")
    assert 0 < y_mask.sum() < y_mask.size  # the batch has padding to leave out
    expected = (token_loss * y_mask).sum() / y_mask.sum()
    assert abs(token_loss.mean() - expected) > 1e-3  # an unmasked loss would be told apart
    np.testing.assert_allclose(loss, expected, rtol=0, atol=1e-4)


def test_adversarial_training(monkeypatch, tmp_path, bert_dir):
    g = run_example("adversarial_training", monkeypatch, tmp_path, bert_dir)
    assert g["num_classes"] == 4 and 0.0 <= g["evaluator"].best_val_acc <= 1.0
    assert g["model"].train_step.__module__ == "bert4keras3.training"  # FGM step in use
    # best weights are saved only on a strict improvement over 0
    assert os.path.exists(g["weights_path"]) == (g["evaluator"].best_val_acc > 0)
    # the original leaves predict_to_file to the user (a comment after load_weights)
    g["predict_to_file"](os.path.join(DATA, "iflytek", "test.json"),
                         str(tmp_path / "iflytek_predict.json"))
    with open(tmp_path / "iflytek_predict.json", encoding="utf-8") as f:
        rows = [__import__("json").loads(line) for line in f]
    assert [r["id"] for r in rows] == [str(i) for i in range(6)]
    assert all(0 <= int(r["label"]) < 4 for r in rows)
