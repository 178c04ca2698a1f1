"""examples/title_generation.py: data reading, losses, corpus scores, both archs end to end.

Runs on the bundled sample ``examples/data/title`` with a tiny random BERT (UniLM) written by
``conftest.write_tiny_model_dir`` and a tiny T5.1.1 whose sentencepiece model the script trains.
"""
import json
import math
import os
import shutil
import sys

import numpy as np
import pytest

import keras

from conftest import write_tiny_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from examples import title_generation as tg  # noqa: E402
from examples.common import DataError  # noqa: E402

SAMPLE = os.path.join(ROOT, "examples", "data", "title")
TINY = ["--steps", "3", "--batch-size", "4", "--maxlen", "40", "--title-maxlen", "10",
        "--limit-test", "5", "--limit-dev", "4", "--decode-batch-size", "8",
        "--beam-size", "2", "--examples", "3"]
METHOD_FIELDS = {"decode_seconds", "warmup_seconds", "generated_tokens", "tokens_per_second",
                 "rouge-1", "rouge-2", "rouge-l", "bleu"}


def sample_texts():
    texts = []
    for split in ("train", "dev", "test"):
        with open(os.path.join(SAMPLE, f"{split}.json"), encoding="utf-8") as f:
            for line in f:
                obj = json.loads(line)
                texts += [obj["title"], obj["content"]]
    return texts


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- data, scores

def test_sample_counts_and_skipped():
    pairs, skipped = tg.load_split(os.path.join(SAMPLE, "train.json"))
    assert (len(pairs), skipped) == (40, 2)  # two lines with an empty side
    assert all(t and c for t, c in pairs)
    pairs, skipped = tg.load_split(os.path.join(SAMPLE, "test.json"), limit=5)
    assert (len(pairs), skipped) == (5, 1)


def test_bad_data_names_file_and_line(tmp_path):
    good = json.dumps({"title": "标题", "content": "正文"}, ensure_ascii=False)
    path = str(tmp_path / "train.json")
    write_lines(path, [good, '{"title": "缺正文"}'])
    with pytest.raises(DataError, match=r"train\.json:2: missing field\(s\) \['content'\]"):
        tg.load_split(path)
    write_lines(path, [good, good, '{"title": "坏", "content": '])
    with pytest.raises(DataError, match=r"train\.json:3: invalid JSON"):
        tg.load_split(path)
    write_lines(path, ['{"title": 7, "content": "正文"}'])
    with pytest.raises(DataError, match=r"train\.json:1: field 'title' must be a string, found int"):
        tg.load_split(path)


def test_score_titles_hand_computed():
    preds = ["今天好", "A b c d", ""]
    refs = ["今天天气好", "abcd", "空白"]
    # pair 1, per character: hyp 今天好 (3), ref 今天天气好 (5)
    r1 = 2 * 1.0 * (3 / 5) / (1.0 + 3 / 5)          # 3 shared unigrams: P 3/3, R 3/5
    r2 = 2 * (1 / 2) * (1 / 4) / (1 / 2 + 1 / 4)    # 今天 shared: P 1/2, R 1/4
    rl = r1                                          # LCS 今天好 = 3
    # BLEU: p1 3/3, p2 1/2, p3 0 -> 0.1/1, p4 (no 4-grams) 0.1/1; brevity exp(1 - 5/3)
    b = math.exp(1 - 5 / 3) * (1.0 * 0.5 * 0.1 * 0.1) ** 0.25
    # pair 2: identical after lower-casing and dropping spaces -> 1.0; pair 3: empty -> 0
    expected = {"rouge-1": (r1 + 1) / 3, "rouge-2": (r2 + 1) / 3, "rouge-l": (rl + 1) / 3,
                "bleu": (b + 1) / 3}
    scores = tg.score_titles(preds, refs)
    assert set(scores) == set(expected)
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-12), key
    assert tg.score_titles(["同一个标题"], ["同一个标题"]) == pytest.approx(
        {"rouge-1": 1.0, "rouge-2": 1.0, "rouge-l": 1.0, "bleu": 1.0})
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        tg.score_titles(["a", "b"], ["a"])


# ----------------------------------------------------------------------------- losses

def _nll(probs, targets, weights):
    picked = np.take_along_axis(probs, targets[..., None], axis=-1)[..., 0]
    return float((-np.log(picked) * weights).sum() / weights.sum())


def test_loss_layers_match_numpy():
    rng = np.random.RandomState(0)
    probs = rng.rand(2, 6, 9).astype("float32") + 0.05
    probs /= probs.sum(-1, keepdims=True)
    tokens = np.array([[2, 5, 3, 6, 7, 3], [2, 4, 3, 8, 3, 0]], "int32")
    segments = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0]], "int32")
    # UniLM: the prediction at position i scores token i+1 when that token is segment 1
    ref = _nll(probs[:, :-1], tokens[:, 1:], segments[:, 1:].astype("float64"))
    got = tg.UniLMCrossEntropy().compute_loss([tokens, segments, probs])
    assert float(keras.ops.convert_to_numpy(got)) == pytest.approx(ref, rel=1e-5)
    # T5 decoder: targets are the non-zero ids after the start id 0
    dec = np.array([[0, 5, 6, 1, 0, 0], [0, 4, 1, 0, 0, 0]], "int32")
    ref = _nll(probs[:, :-1], dec[:, 1:], (dec[:, 1:] != 0).astype("float64"))
    got = tg.DecoderCrossEntropy().compute_loss([dec, probs])
    assert float(keras.ops.convert_to_numpy(got)) == pytest.approx(ref, rel=1e-5)


# ----------------------------------------------------------------------------- end to end

def check_result(result, out, arch):
    with open(os.path.join(out, "title_generation.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["arch"] == arch and saved["args"]["arch"] == arch
    assert saved["data"] == {"train": {"used": 40, "skipped_empty": 2},
                             "dev": {"used": 4, "skipped_empty": 0},
                             "test": {"used": 5, "skipped_empty": 1}}
    assert saved["train"]["steps"] == 3 and math.isfinite(saved["train"]["final_loss"])
    assert saved["train"]["seconds"] > 0 and math.isfinite(saved["dev_loss"])
    for method in ("greedy", "beam"):
        record = saved[method]
        assert set(record) == METHOD_FIELDS
        assert all(0.0 <= record[k] <= 1.0 for k in tg.METRICS)
        assert 5 <= record["generated_tokens"] <= 5 * 10  # at least the end id, at most maxlen
        assert record["tokens_per_second"] > 0
    assert len(saved["examples"]) == 3
    for example in saved["examples"]:
        assert isinstance(example["greedy"], str) and isinstance(example["beam"], str)
        assert example["title"] and example["content"]
    assert saved["greedy"] == result["greedy"]


def test_unilm_end_to_end(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    model = write_tiny_model_dir(str(tmp_path / "model"), sample_texts(), num_hidden_layers=1)
    out = str(tmp_path / "out")
    result = tg.main(["--arch", "unilm", "--data-dir", SAMPLE, "--model-dir", model,
                      "--output-dir", out, "--learning-rate", "1e-3"] + TINY)
    check_result(result, out, "unilm")
    assert "title_generation unilm" in capsys.readouterr().out


def test_t5_end_to_end_sentencepiece(tmp_path):
    import sentencepiece as spm

    out = str(tmp_path / "out")
    small = ["--layers", "1", "--hidden", "32", "--heads", "2", "--ff", "48",
             "--vocab-size", "300"]
    result = tg.main(["--arch", "t5", "--data-dir", SAMPLE, "--output-dir", out] + small + TINY)
    check_result(result, out, "t5")
    spm_path = os.path.join(out, "spiece.model")
    assert result["sentencepiece"] == os.path.abspath(spm_path)
    sp = spm.SentencePieceProcessor(model_file=spm_path)
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2)
    assert result["vocab_size"] == sp.get_piece_size() <= 300

    # a T5 model directory (config.json, spiece.model, *.weights.h5) is read by --model-dir;
    # its generated ids decode back to text, as sentencepiece itself decodes them
    from bert4keras3.models import build_transformer_model

    model_dir = tmp_path / "t5model"
    model_dir.mkdir()
    config = dict(vocab_size=sp.get_piece_size(), d_model=32, d_kv=16, d_ff=48, num_layers=1,
                  num_heads=2)
    (model_dir / "config.json").write_text(json.dumps(config))
    shutil.copy(spm_path, model_dir / "spiece.model")
    saved = build_transformer_model(config, model="t5.1.1", return_keras_model=False)
    saved.model.save_weights(str(model_dir / "model.weights.h5"))
    args = tg.parse_args(["--arch", "t5", "--data-dir", SAMPLE, "--model-dir", str(model_dir),
                          "--output-dir", str(tmp_path / "out2")] + TINY)
    task = tg.T5Task(args, [])
    assert task.spm_path == str(model_dir / "spiece.model")
    for a, b in zip(task.obj.model.weights, saved.model.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    pairs, _ = tg.load_split(os.path.join(SAMPLE, "train.json"))
    rows = task.obj.generate(task.prompts([c for _, c in pairs[:2]]), 6, method="greedy")
    assert [len(r) for r in rows] == [6, 6]
    for ids in rows:
        plain = [i for i in ids if i not in (0, 1)]  # pad and </s> are not text
        assert task.decode(ids) == sp.decode(plain)
    # the titles of the sample round-trip through the trained tokenizer
    title = pairs[0][0]
    ids = task.tokenizer.encode(title)[0]
    assert ids[-1] == 1 and task.decode(tg.strip_end(ids, 1)) == title


def test_repetition_penalty_reaches_generate_and_is_checked(capsys):
    calls = []

    class Obj:
        def generate(self, prompts, length, **kwargs):
            calls.append(kwargs)
            return [[5, 5, 1]] * len(prompts)

    class Task:
        obj, end_id = Obj(), 1

        def prompts(self, contents):
            return contents

        def decode(self, ids):
            return " ".join(map(str, ids))

    args = tg.parse_args(["--arch", "t5", "--data-dir", SAMPLE, "--repetition-penalty", "1.5",
                          "--decode-batch-size", "2", "--beam-size", "3"])
    titles, record = tg.generate_titles(Task(), ["a", "b", "c"], args, "beam")
    assert titles == ["5 5"] * 3 and record["generated_tokens"] == 9
    assert calls[-1] == {"method": "beam", "end_id": 1, "repetition_penalty": 1.5, "beam_size": 3}
    assert tg.parse_args(["--arch", "t5", "--data-dir", SAMPLE]).repetition_penalty == 1.0
    with pytest.raises(SystemExit):
        tg.parse_args(["--arch", "t5", "--data-dir", SAMPLE, "--repetition-penalty", "0"])
    assert "--repetition-penalty must be > 0, found 0.0" in capsys.readouterr().err


def test_t5_learns_to_copy_the_title(tmp_path):
    """A real learning check: the title is the first 3 characters of a 6-character content.

    The model must learn to attend to the right source positions: a model that only learned
    "the title's characters come from the content" (3 content characters in random order) scores
    Rouge-2 about 0.1 on these pairs, random characters 0.01.
    """
    import random

    alphabet = "天地玄黄宇宙洪荒日月盈昃辰宿列张"
    rng = random.Random(0)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 400), ("dev", 20), ("test", 40)):
        contents = ["".join(rng.choice(alphabet) for _ in range(6)) for _ in range(n)]
        write_lines(str(data / f"{split}.json"),
                    [json.dumps({"title": c[:3], "content": c}, ensure_ascii=False)
                     for c in contents])
    test = [json.loads(line) for line in (data / "test.json").read_text("utf-8").splitlines()]
    bag = ["".join(rng.sample(obj["content"], 3)) for obj in test]
    bag_score = tg.score_titles(bag, [obj["title"] for obj in test])["rouge-2"]
    assert bag_score < 0.2

    result = tg.main(["--arch", "t5", "--data-dir", str(data), "--output-dir", str(tmp_path / "out"),
                      "--steps", "500", "--batch-size", "32", "--learning-rate", "2e-3",
                      "--layers", "2", "--hidden", "64", "--heads", "2", "--ff", "128",
                      "--vocab-size", "24", "--maxlen", "14", "--title-maxlen", "5",
                      "--beam-size", "2", "--seed", "42"])
    for method in ("greedy", "beam"):
        assert result[method]["rouge-2"] >= 0.3, (method, result[method], bag_score)
        assert result[method]["rouge-l"] >= 0.6, (method, result[method])
