"""examples/sentence_embeddings: pair readers, whitening, Spearman / retrieval, training steps,
the CMeKG alias-pair builder and the CLI, on hand-written data and a tiny random model.

References are independent of the code under test: hand-computed Spearman and retrieval
cases, a NumPy transcription of BERT-whitening's published formula, hand-listed alias pairs.
"""
import glob
import importlib.util
import json
import math
import os
import sys

import numpy as np
import pytest

import keras

from conftest import write_tiny_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "examples", "sentence_embeddings")
SAMPLES = os.path.join(HERE, "samples")
LCQMC = os.path.join(ROOT, "examples", "data", "bert4keras", "senteval_cn", "LCQMC")
for _p in (HERE, os.path.join(ROOT, "examples")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from common import DataError  # noqa: E402
from se_data import build_cmekg_pairs, infer_task, read_pairs  # noqa: E402
from se_methods import (SentenceEncoder, apply_whitening,  # noqa: E402
                        build_encoder, compute_whitening, cosent_batch, evaluate,
                        pool_encoder, retrieval_top1,
                        sbert_batch, sbert_labels, simcse_batch, train_cosent, train_sbert,
                        train_simcse)

_spec = importlib.util.spec_from_file_location("sentence_embeddings_run",
                                               os.path.join(HERE, "run.py"))
se_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(se_run)


def write(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return str(path)


# ----------------------------------------------------------------------------- readers
def test_read_pairs_each_format(tmp_path):
    atec = write(tmp_path / "ATEC.train.data", ["花呗怎么还款\t花呗如何还钱\t1",
                                                "12\t借呗能提前还吗\t花呗额度多少\t0"])  # raw: id first
    assert read_pairs(atec) == [("花呗怎么还款", "花呗如何还钱", 1.0),
                                ("借呗能提前还吗", "花呗额度多少", 0.0)]
    bq = write(tmp_path / "BQ.test.data", ["", "贷款利息多少\t利息怎么算\t1", ""])
    assert read_pairs(bq) == [("贷款利息多少", "利息怎么算", 1.0)]
    lcqmc = write(tmp_path / "LCQMC.valid.data", ["喜欢打篮球的男生喜欢什么样的女生\t爱打篮球的男生喜欢什么样的女生\t1"])
    assert read_pairs(lcqmc)[0][2] == 1.0
    paws = write(tmp_path / "PAWSX.test.data", ["id\tsentence1\tsentence2\tlabel",
                                                "7\t他住在北京。\t他在北京住。\t1"])
    assert read_pairs(paws) == [("他住在北京。", "他在北京住。", 1.0)]
    sts = write(tmp_path / "STS-B.train.data", ["一架飞机要起飞了。\t一架飞机正在起飞。\t5",
                                                "一个人在吹笛子。\t一个人在吹长笛。\t3.8"])
    assert [y for _, _, y in read_pairs(sts)] == [5.0, 3.8]
    cnsd = write(tmp_path / "cnsd-sts-dev.txt", ["1||一个男人在弹吉他。||一个人在弹乐器。||4"])
    assert read_pairs(cnsd) == [("一个男人在弹吉他。", "一个人在弹乐器。", 4.0)]
    assert [infer_task(p) for p in (atec, bq, lcqmc, paws, sts, cnsd)] == [
        "atec", "bq", "lcqmc", "pawsx", "stsb", "stsb"]
    assert infer_task("train.txt") == "pairs"
    assert len(read_pairs(os.path.join(LCQMC, "LCQMC.train.data"), limit=3)) == 3


def test_read_pairs_errors_name_file_and_line(tmp_path):
    bad = write(tmp_path / "LCQMC.test.data", ["甲\t乙\t1", "丙\t丁\t0", "只有一句\t1"])
    with pytest.raises(DataError, match=r"LCQMC\.test\.data:3: expected 'text1<TAB>text2<TAB>"
                                        r"label'.*found 2 field\(s\)"):
        read_pairs(bad)
    assert len(read_pairs(bad, skip_malformed=True)) == 2
    label = write(tmp_path / "BQ.train.data", ["甲\t乙\t1", "丙\t丁\t2"])
    with pytest.raises(DataError, match=r"BQ\.train\.data:2: expected a bq label \(0 or 1\), "
                                        r"found '2'"):
        read_pairs(label)
    score = write(tmp_path / "STS-B.test.data", ["甲\t乙\t6"])
    with pytest.raises(DataError, match=r":1: expected a stsb label \(a score in \[0, 5\]\)"):
        read_pairs(score)
    empty_text = write(tmp_path / "ATEC.test.data", ["\t乙\t1"])
    with pytest.raises(DataError, match=r"ATEC\.test\.data:1: expected two non-empty texts"):
        read_pairs(empty_text)
    with pytest.raises(DataError, match="no sentence pairs"):
        read_pairs(write(tmp_path / "x.txt", [""]))
    with pytest.raises(FileNotFoundError, match="missing.data"):
        read_pairs(str(tmp_path / "missing.data"))


# ----------------------------------------------------------------------------- metrics
def test_spearman_of_cosines_hand_computed():
    # pair i: a = r_i (1, 0), b = s_i (cos t_i, sin t_i): cosine = cos t_i whatever the norms
    cosines = [0.9, 0.1, 0.5, 0.7]
    labels = [1, 0, 1, 0]
    rng = np.random.RandomState(0)
    vectors, pairs = {}, []
    for i, (c, y) in enumerate(zip(cosines, labels)):
        t = math.acos(c)
        vectors[f"a{i}"] = rng.uniform(0.5, 3) * np.array([1.0, 0.0])
        vectors[f"b{i}"] = rng.uniform(0.5, 3) * np.array([math.cos(t), math.sin(t)])
        pairs.append((f"a{i}", f"b{i}", float(y)))
    # label ranks (ties averaged): [3.5, 1.5, 3.5, 1.5] -> centred [1, -1, 1, -1]
    # cosine ranks: [4, 1, 2, 3] -> centred [1.5, -1.5, -0.5, 0.5]
    # rho = (1.5 + 1.5 - 0.5 - 0.5) / sqrt(4 * 5) = 2 / sqrt(20)
    result = evaluate(pairs, vectors)
    assert result["spearman"] == pytest.approx(2 / math.sqrt(20), abs=1e-12)
    assert result["pairs"] == 4
    # STS-B style graded labels with the same order as the cosines: rho = 1
    graded = [(a, b, y) for (a, b, _), y in zip(pairs, [4.5, 0.5, 2.0, 3.0])]
    assert evaluate(graded, vectors)["spearman"] == pytest.approx(1.0)
    assert evaluate(graded, vectors)["retrieval_top1"] is None  # not 0/1 labels


def test_retrieval_top1_hand_computed():
    v = {"q1": [1, 0], "q2": [0, 1], "x1": [0.9, 0.1], "x2": [0.8, 0.2], "n": [0, -1]}
    v = {k: np.asarray(x, dtype=float) for k, x in v.items()}
    # candidates x1, x2. q1: cos(q1, x1) = 0.994 > cos(q1, x2) = 0.970 -> x1, its gold;
    # q2: cos(q2, x1) = 0.110 < cos(q2, x2) = 0.243 -> x2, its gold: 2 of 2 right
    pairs = [("q1", "x1", 1), ("q2", "x2", 1), ("q1", "n", 0)]
    assert retrieval_top1(pairs, v) == (1.0, 2)
    # q2's gold is now x1 (cos 0.11) but x2 (0.24) is nearer -> 1 of 2 right
    pairs = [("q1", "x1", 1), ("q2", "x1", 1), ("q1", "x2", 1)]
    # q1 gold {x1, x2}: nearest of {x1, x2} is x1 (0.994 > 0.970) -> right
    assert retrieval_top1(pairs, v) == (0.5, 2)


# ----------------------------------------------------------------------------- whitening
def whitening_transcription(vecs, n_components):
    """BERT-whitening as published: mu = mean, U, S = svd(cov), W = U sqrt(S)^-1, cut."""
    mu = vecs.mean(axis=0, keepdims=True)
    cov = np.cov(vecs.T)
    u, s, vh = np.linalg.svd(cov)
    W = np.dot(u, np.diag(1 / np.sqrt(s)))
    return W[:, :n_components], -mu


def test_whitening_matches_published_formula():
    rng = np.random.RandomState(1)
    train = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) + rng.normal(size=8) * 3
    test = rng.normal(size=(20, 8)) @ rng.normal(size=(8, 8))
    for k in (8, 3):
        mu, kernel = compute_whitening(train, k)
        ref_kernel, ref_bias = whitening_transcription(train, k)
        assert kernel.shape == (8, k)
        ours, ref = apply_whitening(test, mu, kernel), (test + ref_bias) @ ref_kernel
        # columns may differ in sign between SVD calls: compare inner products
        np.testing.assert_allclose(ours @ ours.T, ref @ ref.T, rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(np.abs(ours), np.abs(ref), rtol=1e-8, atol=1e-8)
        # the whitened training vectors: zero mean, identity covariance
        white = apply_whitening(train, mu, kernel)
        np.testing.assert_allclose(white.mean(axis=0), 0, atol=1e-10)
        np.testing.assert_allclose(np.cov(white.T).reshape(k, k), np.eye(k), atol=1e-9)
    with pytest.raises(ValueError, match=r"--whiten-dim must be in \[1, 8\].*found 9"):
        compute_whitening(train, 9)
    with pytest.raises(ValueError, match="rank 4 < 6 kept dimensions"):
        compute_whitening(train[:5], 6)


# ----------------------------------------------------------------------------- training
def sample_pairs():
    return (read_pairs(os.path.join(LCQMC, "LCQMC.train.data"))
            + read_pairs(os.path.join(SAMPLES, "STS-B", "STS-B.train.data"), task="pairs"))


def all_sample_texts():
    texts = []
    for path in glob.glob(os.path.join(SAMPLES, "**", "*.data"), recursive=True):
        texts.append(open(path, encoding="utf-8").read())
    for path in glob.glob(os.path.join(LCQMC, "*.data")):
        texts.append(open(path, encoding="utf-8").read())
    return texts


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = write_tiny_model_dir(str(tmp_path_factory.mktemp("se_model")), all_sample_texts())
    keras.backend.clear_session()
    return path


def tiny_encoder(model_dir, pooling, **kwargs):
    from common import load_tokenizer

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build_encoder(model_dir, pooling=pooling, **kwargs)
    return SentenceEncoder(model, load_tokenizer(model_dir), maxlen=24, bucket=24)


def test_pooling_against_hidden_states(model_dir):
    from common import build_model, load_tokenizer

    keras.backend.clear_session()
    texts = ["今天天气怎么样", "游泳"]
    base = build_model(model_dir)
    tokenizer = load_tokenizer(model_dir)
    names = ["Transformer-0-FeedForward-Norm", "Transformer-1-FeedForward-Norm"]
    probe = keras.Model(base.inputs, [base.get_layer(n).output for n in names])
    enc = SentenceEncoder(probe, tokenizer, maxlen=24, bucket=24)
    x = enc.inputs(texts)
    first, last = [np.asarray(h) for h in probe.predict_on_batch(x)]
    vecs = {p: SentenceEncoder(pool_encoder(base, p), tokenizer, maxlen=24, bucket=24)
            .encode(texts) for p in ("first-last-avg", "last-avg", "cls")}
    for row, text in enumerate(texts):
        n = len(text) + 2  # [CLS] text [SEP]; the rest is padding
        assert (x[0][row, :n] != 0).all() and (x[0][row, n:] == 0).all()
        np.testing.assert_allclose(vecs["first-last-avg"][row],
                                   (first[row, :n].mean(0) + last[row, :n].mean(0)) / 2,
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(vecs["last-avg"][row], last[row, :n].mean(0),
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vecs["cls"], last[:, 0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="pooling must be one of"):
        pool_encoder(base, "max")


# The tiny model has no dropout (SimCSE's gets 0.1) and every batch holds all 16 training
# pairs / sentences, so history[0] is the loss before any update and history[-1] the loss of
# the same batch after 14 updates (CoSENT's and the classifier's losses do not depend on the
# order of the pairs in the batch).
def test_cosent_training_lowers_its_loss(model_dir):
    from bert4keras3.losses import cosent_loss

    pairs = sample_pairs()[:16]
    enc = tiny_encoder(model_dir, "cls")
    x, y = cosent_batch(enc, pairs)
    assert y[:, 0].tolist() == [p[2] for p in pairs for _ in range(2)]
    assert len(x) == 2 and x[0].shape[0] == 32  # [token_ids, segment_ids], 2 rows a pair
    history = train_cosent(enc, pairs, steps=15, batch_size=16, learning_rate=2e-3, log=None)
    assert len(history) == 15 and history[-1] < 0.6 * history[0], history
    # the first step's loss is the library loss of the untrained encoder's vectors
    keras.utils.set_random_seed(0)
    fresh = tiny_encoder(model_dir, "cls")
    vecs = keras.ops.convert_to_tensor(fresh.model.predict_on_batch(x))
    first = float(keras.ops.convert_to_numpy(cosent_loss(keras.ops.convert_to_tensor(y), vecs)))
    assert first == pytest.approx(history[0], rel=1e-4)


def test_simcse_training_lowers_its_loss(model_dir):
    sentences = sorted({t for a, b, _ in sample_pairs() for t in (a, b)})[:16]
    enc = tiny_encoder(model_dir, "first-last-avg", dropout_rate=0.1)
    x, y = simcse_batch(enc, sentences)
    assert (x[0][::2] == x[0][1::2]).all() and x[0].shape[0] == 32  # each sentence twice
    history = train_simcse(enc, sentences, steps=15, batch_size=16, learning_rate=3e-3, log=None)
    assert len(history) == 15 and np.mean(history[-3:]) < 0.5 * history[0], history


def test_sbert_training_lowers_its_loss(model_dir):
    pairs = sample_pairs()[:16]
    enc = tiny_encoder(model_dir, "cls")
    labels = sbert_labels(pairs, task="stsb")
    # STS-B scores binarised at 2.5, 0/1 labels kept
    assert sbert_labels([("a", "b", 3.0), ("c", "d", 2.5)], task="stsb").tolist() == [1, 0]
    assert sbert_labels([("a", "b", 1.0), ("c", "d", 0.0)]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="expected 0/1 labels"):
        sbert_labels([("a", "b", 3.0)], task="pairs")
    history, model = train_sbert(enc, pairs, steps=15, batch_size=16, learning_rate=3e-3,
                                 task="stsb", log=None)
    assert len(history) == 15 and history[-1] < 0.5 * history[0], history
    x, y = sbert_batch(enc, pairs, labels)
    assert y.tolist() == np.repeat(labels, 2).tolist()
    probs = np.asarray(model.predict_on_batch(x))
    np.testing.assert_allclose(probs[::2], probs[1::2])  # one prediction per pair, twice
    # the classifier sees [u, v, |u - v|] of each pair
    u, v = enc.model.predict_on_batch(x)[::2], enc.model.predict_on_batch(x)[1::2]
    dense = model.get_layer("SBERT-Classifier")
    logits = np.concatenate([u, v, np.abs(u - v)], 1) @ np.asarray(dense.kernel) + np.asarray(
        dense.bias)
    ref = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs[::2], ref / ref.sum(1, keepdims=True), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- CMeKG
KB = ["感冒\t别称\t伤风", "感冒\t别称\t上呼吸道感染；普通感冒", "感冒\t症状\t咳嗽",
      "红眼病\t又称\t急性结膜炎", "麻风\t同义词\t汉森病", "麻风\t同义词\tHD",
      "水痘\t别称\t水花", "水痘\t别称\t水痘", "汞\t中文名\t水银", "当归\t别称\t秦归",
      "黄精\t别称\t鸡头参",
      "肾癌\t英文名称\trenal carcinoma,renal cell cancer",
      "胃潴留\t英文名称\tgastric stasis；gastric retention", "胃潴留\t英文别名\tGastric  Retention",
      "肾旋转异常\t英文名称\trenal malrotation,malrotation of kidney",
      "脐带绕颈\t英文名称\tnuchal cord, cord around neck", "肺癌\t英文名称\tlung cancer",
      "麻风\t英文名称\tHD"]


def read_split(directory, name):
    with open(os.path.join(directory, f"{name}.txt"), encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split("\t")) for line in f]


def test_cmekg_alias_pairs(tmp_path):
    kb = write(tmp_path / "Knowledge.txt", KB)
    out = str(tmp_path / "zh")
    stats = build_cmekg_pairs(kb, out, seed=3, test_fraction=0.3)
    train, test = read_split(out, "train"), read_split(out, "test")
    aliases = {"感冒": {"伤风", "上呼吸道感染", "普通感冒"}, "红眼病": {"急性结膜炎"},
               "麻风": {"汉森病"}, "水痘": {"水花"}, "汞": {"水银"}, "当归": {"秦归"},
               "黄精": {"鸡头参"}}  # HD: no Chinese; 水痘 = its subject; 咳嗽: not an alias
    positives = {(a, b) for a, b, y in train + test if y == "1"}
    assert positives == {(s, a) for s, v in aliases.items() for a in v}
    for split in (train, test):
        subjects = {a for a, _, _ in split}
        for a, b, y in split:
            assert y in ("0", "1")
            if y == "0":  # the subject with an alias of another subject of the same split
                assert b not in aliases[a] and any(b in aliases[s] for s in subjects - {a})
        assert sum(y == "0" for _, _, y in split) == sum(y == "1" for _, _, y in split)
    assert not {a for a, _, _ in train} & {a for a, _, _ in test}
    assert len({a for a, _, _ in test}) == 2  # round(7 * 0.3)
    assert stats["train"]["pairs"] == len(train) and stats["test"]["subjects"] == 2
    assert json.load(open(os.path.join(out, "stats.json")))["seed"] == 3
    # same seed, same files; another seed, another split
    again = str(tmp_path / "zh2")
    build_cmekg_pairs(kb, again, seed=3, test_fraction=0.3)
    assert read_split(again, "test") == test and read_split(again, "train") == train
    # the pair files read back as LCQMC-layout pairs
    assert len(read_pairs(os.path.join(out, "test.txt"))) == len(test)


def test_cmekg_english_names(tmp_path):
    kb = write(tmp_path / "Knowledge.txt", KB)
    out = str(tmp_path / "en")
    build_cmekg_pairs(kb, out, lang="en", seed=0, test_fraction=0.5)
    rows = read_split(out, "train") + read_split(out, "test")
    positives = {frozenset((a, b)) for a, b, y in rows if y == "1"}
    assert positives == {frozenset(p) for p in [
        ("renal carcinoma", "renal cell cancer"), ("gastric stasis", "gastric retention"),
        ("renal malrotation", "malrotation of kidney"), ("nuchal cord", "cord around neck")]}
    assert sum(y == "0" for _, _, y in rows) == 4


def test_cmekg_errors(tmp_path):
    bad = write(tmp_path / "kb.txt", ["感冒\t别称\t伤风", "坏行\t只有两列"])
    with pytest.raises(DataError, match=r"kb\.txt:2: expected 'subject<TAB>predicate<TAB>"
                                        r"object', found 2 field"):
        build_cmekg_pairs(bad, str(tmp_path / "o"))
    few = write(tmp_path / "few.txt", ["感冒\t别称\t伤风"])
    with pytest.raises(DataError, match="found 1 subject"):
        build_cmekg_pairs(few, str(tmp_path / "o"))


# ----------------------------------------------------------------------------- CLI
def test_cli_runs_every_method(model_dir, tmp_path, capsys, monkeypatch):
    import se_methods

    sts = os.path.join(SAMPLES, "STS-B")
    base = ["--train", os.path.join(sts, "STS-B.train.data"),
            "--test", os.path.join(sts, "STS-B.test.data"), "--model-dir", model_dir,
            "--maxlen", "16"]
    train_texts = {t for a, b, _ in read_pairs(base[1]) for t in (a, b)}
    calls = {}

    def stub(name, result):  # simcse / sbert training is tested above: record the call
        def train(enc, data, steps, **kwargs):
            calls[name] = (data, steps, kwargs)
            return result
        monkeypatch.setattr(se_methods, f"train_{name}", train)

    stub("simcse", [2.0, 1.0])
    stub("sbert", ([2.0, 1.0], None))
    results = {}
    for method, extra in [("none", []), ("whitening", ["--whiten-dim", "4"]),
                          ("cosent", ["--steps", "2", "--batch-size", "4"]),
                          ("simcse", ["--batch-size", "4"]),
                          ("sbert", ["--steps", "3", "--learning-rate", "1e-3"])]:
        out = str(tmp_path / f"{method}.json")
        argv = [method] + base + extra + ["--output", out]
        se_run.main(argv)
        results[method] = json.load(open(out))
        assert results[method]["command"].endswith(" ".join(argv))
    printed = capsys.readouterr().out
    assert printed.count("test spearman: ") == 5
    for method, r in results.items():
        assert -1 <= r["spearman"] <= 1 and r["test_pairs"] == 8 and r["task"] == "stsb"
    assert [results[m]["steps"] for m in results] == [0, 0, 2, 24 // 4, 3]
    assert results["cosent"]["last_loss"] is not None and results["none"]["first_loss"] is None
    assert results["whitening"]["whiten_dim"] == 4 and results["none"]["whiten_dim"] is None
    assert results["cosent"]["pooling"] == "cls" and results["none"]["pooling"] == "first-last-avg"
    # simcse trains on the unique texts of the training pairs; sbert on the pairs (STS-B task)
    assert set(calls["simcse"][0]) == train_texts and calls["simcse"][1] == 6
    assert calls["simcse"][2]["learning_rate"] == 1e-5 and calls["simcse"][2]["batch_size"] == 4
    assert len(calls["sbert"][0]) == 12 and calls["sbert"][2]["task"] == "stsb"
    assert calls["sbert"][2]["learning_rate"] == 1e-3 and calls["sbert"][2]["batch_size"] == 32
    # the CMeKG builder from the command line
    out_dir = str(tmp_path / "pairs")
    se_run.main(["--build-cmekg", os.path.join(SAMPLES, "cmekg_kb.txt"), "--output-dir", out_dir])
    assert {os.path.basename(p) for p in glob.glob(os.path.join(out_dir, "*"))} == {
        "train.txt", "test.txt", "stats.json"}
    with pytest.raises(SystemExit):
        se_run.parse_args(["cosent", "--test", "x.data"])  # no --train
