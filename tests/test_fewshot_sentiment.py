"""examples/fewshot_sentiment.py: shot sampling, PET score reading, P-tuning freezing, CLI.

Tiny generated reviews in CLUE JSON lines and a tiny random RoFormer (with MLM head and
``[unused1..8]`` in its vocabulary) written by ``conftest.write_tiny_model_dir``.
"""
import argparse
import json
import os
import sys

import numpy as np
import pytest

import keras

from conftest import write_tiny_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from examples import fewshot_sentiment as fs  # noqa: E402

POS = ["好棒", "很赞", "满意好用", "真不错"]
NEG = ["太差", "很烂", "不满意坏了", "真糟糕"]
UNUSED = ["[unused%d]" % i for i in range(1, 9)]


def make_rows(n, offset=0):
    rows = []
    for i in range(n):
        label = i % 2
        words = (POS if label else NEG)
        text = words[(i + offset) % len(words)] + "货%d" % (i + offset)
        rows.append({"sentence": text, "label": str(label),
                     "label_desc": "positive" if label else "negative"})
    return rows


def write_lines(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fewshot")
    data = root / "data"
    data.mkdir()
    train, dev, test = make_rows(24), make_rows(6, 100), make_rows(6, 200)
    train[3] = dict(test[1])  # a test review also in train: must never be drawn as a shot
    for name, rows in (("train", train), ("dev", dev), ("test", test)):
        write_lines(data / f"{name}.json", rows)
    texts = [r["sentence"] for r in train + dev + test] + POS + NEG + [fs.PET_PREFIX, "不很货0123456789"]
    keras.utils.set_random_seed(0)
    model = write_tiny_model_dir(str(root / "model"), texts, model="roformer",
                                 extra_tokens=UNUSED, num_hidden_layers=1)
    keras.backend.clear_session()
    return {"data": str(data), "model": model, "train": train, "test": test, "dev": dev}


def args_for(workdir, **kw):
    base = dict(data_dir=workdir["data"], model_dir=workdir["model"], model="roformer",
                maxlen=32, steps=1, batch_size=4, mlm_prob=0.15)
    base.update(kw)
    return argparse.Namespace(**base)


def test_sample_shots_balanced_seeded_disjoint():
    train = [("neg%d" % i, 0) for i in range(10)] + [("pos%d" % i, 1) for i in range(10)]
    exclude = {"neg0", "neg1", "pos5"}
    a = fs.sample_shots(train, 6, seed=1, exclude=exclude)
    assert len(a) == len(set(a)) == 6
    assert sorted(train[i][1] for i in a) == [0, 0, 0, 1, 1, 1]
    assert not {train[i][0] for i in a} & exclude
    assert fs.sample_shots(train, 6, seed=1, exclude=exclude) == a
    assert any(fs.sample_shots(train, 6, seed=s, exclude=exclude) != a for s in (2, 3, 4))
    # 16 shots take all 8 allowed negatives; 18 shots need 9
    assert sorted(train[i][0] for i in fs.sample_shots(train, 16, 0, exclude=exclude)
                  if train[i][1] == 0) == sorted("neg%d" % i for i in range(2, 10))
    with pytest.raises(ValueError, match="label 0 .* found 8"):
        fs.sample_shots(train, 18, 0, exclude=exclude)
    with pytest.raises(ValueError, match="multiple of 2"):
        fs.sample_shots(train, 5, 0)


def _vocab(workdir):
    with open(os.path.join(workdir["model"], "vocab.txt"), encoding="utf-8") as f:
        return {t: i for i, t in enumerate(f.read().split("\n")) if t}


def _weights(model):
    return {w.path: keras.ops.convert_to_numpy(w).copy() for w in model.weights}


@pytest.mark.parametrize("kind", ["pet", "ptuning"])
def test_label_probs_and_trained_weights(workdir, kind):
    """The score is the MLM output at the [MASK] for the two label words; P-tuning moves only
    the prompt rows of the embedding, PET every weight."""
    keras.backend.clear_session()
    v = _vocab(workdir)
    args = args_for(workdir)
    tokenizer = fs.load_tokenizer(workdir["model"])
    if kind == "pet":
        pattern = fs.pet_pattern(tokenizer, args.maxlen)
        obj = fs.build_encoder(args)
        prefix, mask_at = ["[MASK]", "满", "意", "。"], 1
    else:
        pattern = fs.ptuning_pattern(tokenizer, args.maxlen)
        prompt = fs.prompt_ids(pattern)
        assert prompt == [v[t] for t in UNUSED]
        obj = fs.build_encoder(args, trainable_ids=prompt)
        prefix, mask_at = UNUSED[:4] + ["[MASK]"] + UNUSED[4:], 5
        loaded = _weights(fs.build_encoder(args).model)  # the checkpoint, as built plainly
        mine = _weights(obj.model)
        assert mine.keys() == loaded.keys()
        for path in loaded:
            np.testing.assert_array_equal(mine[path], loaded[path], err_msg=path)
    scorer, trainer = fs.mlm_models(obj)
    texts = ["好棒货1", "不满意坏了货2"]
    got = fs.label_probs(scorer, pattern, texts, batch_size=4)
    for row, text in enumerate(texts):
        ids = [v["[CLS]"]] + [v[t] for t in prefix] + [v[c] for c in text] + [v["[SEP]"]]
        x = np.array([ids], "int32")
        full = keras.ops.convert_to_numpy(obj.model.predict_on_batch([x, np.zeros_like(x)]))
        assert full.shape == (1, len(ids), len(v))
        assert abs(full[0, mask_at].sum() - 1) < 1e-4  # softmax over the vocabulary
        want = full[0, mask_at, [v["不"], v["很"]]]
        np.testing.assert_allclose(got[row], want, rtol=1e-4, atol=1e-6)

    shots = [(r["sentence"], int(r["label"])) for r in workdir["train"][:4]]
    if kind == "ptuning":
        fs.freeze_for_ptuning(trainer)
    trainer.compile(optimizer=keras.optimizers.Adam(0.05))
    before = _weights(trainer)
    fs.train_mlm(trainer, pattern, shots, steps=2, batch_size=4, mlm_prob=0.15,
                 rng=np.random.RandomState(0))
    after = _weights(trainer)
    assert before.keys() == after.keys() and len(before) > 20
    if kind == "pet":  # every weight trains
        assert len(trainer.trainable_weights) == len(before)
        for path in before:
            assert np.abs(after[path] - before[path]).max() > 1e-4, path
        return
    assert [w.path for w in trainer.trainable_weights] == ["Embedding-Token/embeddings"]
    for path in before:
        if path != "Embedding-Token/embeddings":
            np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    emb0, emb1 = before["Embedding-Token/embeddings"], after["Embedding-Token/embeddings"]
    others = np.setdiff1d(np.arange(len(emb0)), prompt)
    np.testing.assert_array_equal(emb1[others], emb0[others])
    assert np.all(np.abs(emb1[prompt] - emb0[prompt]).max(axis=1) > 1e-3)


def test_mlm_batch_targets():
    class Tok:
        _token_mask_id = 4
        token_dict = {"不": 7, "很": 8}

    pattern = fs.Pattern(Tok(), [4, 9, 10], 0, fs.LABEL_WORDS, maxlen=16)
    encoded = [[2, 4, 9, 10, 11, 12, 3], [2, 4, 9, 10, 13, 3]]
    x, s, pos, tgt = fs.mlm_batch(pattern, encoded, [1, 0], np.random.RandomState(0),
                                  mlm_prob=0.0, vocab_size=20, bucket=8)
    np.testing.assert_array_equal(x, [[2, 4, 9, 10, 11, 12, 3, 0], [2, 4, 9, 10, 13, 3, 0, 0]])
    assert not s.any()
    np.testing.assert_array_equal(pos[:, 0], [1, 1])
    np.testing.assert_array_equal(tgt[:, 0], [8, 7])
    assert not tgt[:, 1:].any()
    # with mlm_prob=1 every other position is a target holding its original id
    x, s, pos, tgt = fs.mlm_batch(pattern, encoded, [1, 0], np.random.RandomState(0),
                                  mlm_prob=1.0, vocab_size=20, bucket=8)
    for r, ids in enumerate(encoded):
        n = len(ids)
        assert list(pos[r, :n]) == [1] + [p for p in range(n) if p != 1]
        assert list(tgt[r, :n]) == [8 if r == 0 else 7] + [t for p, t in enumerate(ids)
                                                          if p != 1]
        assert x[r, 1] == 4


def test_main_writes_records(workdir, tmp_path, capsys):
    keras.backend.clear_session()
    out = tmp_path / "res.json"
    result = fs.main(["--data-dir", workdir["data"], "--model-dir", workdir["model"],
                      "--model", "roformer", "--methods", "finetune,pet,ptuning",
                      "--shots", "4", "--seeds", "3", "--steps", "2", "--batch-size", "4",
                      "--learning-rate", "finetune=1e-3,pet=1e-3,ptuning=1e-2",
                      "--maxlen", "32", "--limit-test", "5", "--output", str(out)])
    text = capsys.readouterr().out
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["records"] == json.loads(json.dumps(result["records"]))
    recs = saved["records"]
    assert [(r["method"], r["seed"]) for r in recs] == [("pet-zeroshot", None)] + [
        (m, 3) for m in ("finetune", "pet", "ptuning")]
    test_texts = {r["sentence"] for r in workdir["test"]} | {r["sentence"] for r in workdir["dev"]}
    for r in recs:
        assert r["test_examples"] == 5 and r["dev_examples"] == 6
        assert 0.0 <= r["test_accuracy"] <= 1.0 and r["test_accuracy"] * 5 == round(
            r["test_accuracy"] * 5)
        if r["method"] == "pet-zeroshot":
            continue
        idx = r["shot_indices"]
        assert idx == saved["shots"][str(r["seed"])]
        assert sorted(int(workdir["train"][i]["label"]) for i in idx) == [0, 0, 1, 1]
        assert not {workdir["train"][i]["sentence"] for i in idx} & test_texts
        assert r["steps"] == 2 and np.isfinite(r["final_loss"])
    assert saved["shots"]["3"] == fs.sample_shots(
        [(r["sentence"], int(r["label"])) for r in workdir["train"]], 4, 3, exclude=test_texts)
    pt = [r for r in recs if r["method"] == "ptuning"][0]
    assert pt["trainable_weights"] == ["Embedding-Token/embeddings"]
    assert pt["effective_trainable_params"] == 8 * 32
    assert [r["learning_rate"] for r in recs[1:4]] == [1e-3, 1e-3, 1e-2]
    for method in ("pet-zeroshot", "finetune", "pet", "ptuning"):
        assert f"| {method} |" in text
    assert "command: KERAS_BACKEND=" in text and "--seeds 3" in text


def test_bad_input_errors(workdir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    write_lines(bad / "train.json", [{"sentence": "好", "label": "2"}])
    with pytest.raises(fs.DataError, match=r"train.json:1: label must be one of \['0', '1'\], "
                                           r"found '2'"):
        fs.load_split(str(bad / "train.json"))
    with pytest.raises(ValueError, match="--methods"):
        fs.main(["--data-dir", workdir["data"], "--model-dir", workdir["model"],
                 "--methods", "pet,lora"])
