"""examples/bert4keras/cws_crf.py: word segmentation with a CRF head.

The script runs once (in-process, as ``__main__``) on its bundled sample with a tiny random
BERT and a small ``maxlen`` so that sentences are split into pieces; the assertions read
what it computed and wrote. Its helpers (SBME tagging, text splitting, word F1) are checked
against hand-computed cases.
"""
import json
import os
import runpy

import pytest

import keras

from test_bert4keras_examples import DATA, EXAMPLES, write_google_model

SAMPLE = os.path.join(DATA, "cws")
MAXLEN = 16  # pieces of at most 14 characters: several sample sentences are longer


def read_words(name):
    with open(os.path.join(SAMPLE, name), encoding="utf-8") as f:
        return [line.split() for line in f if line.strip()]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    model_dir = write_google_model(str(tmp_path_factory.mktemp("cws_bert")))
    out = tmp_path_factory.mktemp("cws_out")
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    env = dict(B4K_MODEL_DIR=model_dir, B4K_OUTPUT_DIR=str(out), B4K_EPOCHS="2",
               B4K_MAX_STEPS="3", B4K_LIMIT="15", B4K_BATCH_SIZE="4", B4K_MAXLEN=str(MAXLEN),
               B4K_LR="1e-3", B4K_SEED="0")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("B4K_DATA_DIR", raising=False)  # the bundled sample
        mp.chdir(out)
        g = runpy.run_path(os.path.join(EXAMPLES, "cws_crf.py"), run_name="__main__")
    return g, out


def reference_f1(gold, pred):
    """Word F1 from word-boundary offsets: a word is right when both its ends are gold
    boundaries and no gold boundary falls inside it."""
    right = n_pred = n_gold = 0
    for g, p in zip(gold, pred):
        def bounds(words):
            out, k = [0], 0
            for w in words:
                k += len(w)
                out.append(k)
            return out
        gb, pb = bounds(g), bounds(p)
        gset = set(gb)
        for a, b in zip(pb, pb[1:]):
            right += a in gset and b in gset and not any(a < x < b for x in gset)
        n_pred += len(p)
        n_gold += len(g)
    return 2 * right / (n_pred + n_gold)


def test_run_writes_result(run):
    g, out = run
    with open(out / "cws_crf_result.json", encoding="utf-8") as f:
        result = json.load(f)
    test_words = read_words("test.txt")
    assert result["train_sentences"] == 15
    assert result["steps"] == 3  # stopped by B4K_MAX_STEPS inside the first epoch (4 batches)
    assert result["model"] == "bert" and result["maxlen"] == MAXLEN
    assert result["test"]["sentences"] == 5 and result["dev"]["sentences"] == 5
    assert result["test"]["words"] == sum(len(w) for w in test_words)
    for split in ("test", "dev"):
        assert all(0.0 <= result[split][k] <= 1.0 for k in ("precision", "recall", "f1"))
    assert os.path.exists(out / "cws_crf.weights.h5")
    assert g["segmenter"].trans.shape == (4, 4)

    # the reported test F1 is that of the segmenter's output (best weights, still loaded)
    texts = ["".join(w) for w in test_words]
    pred = g["segmenter"].segment(texts)
    assert ["".join(p) for p in pred] == texts  # every character kept, long texts included
    assert max(len(t) for t in texts) > MAXLEN - 2
    assert result["test"]["f1"] == pytest.approx(reference_f1(test_words, pred))


def test_training_pieces(run):
    g, _ = run
    train = read_words("train.txt")[:15]
    pieces = g["train_pieces"]
    assert len(pieces) > len(train)  # some sentences are longer than MAXLEN - 2 characters
    assert all(1 <= len("".join(p)) <= MAXLEN - 2 for p in pieces)
    assert "".join(w for p in pieces for w in p) == "".join(w for s in train for w in s)
    batch = next(iter(g["train_generator"]))
    (token_ids, segment_ids), labels = batch
    assert token_ids.shape == labels.shape and token_ids.shape[1] == 16  # padded to 16
    first = "".join(pieces[0])
    assert list(labels[0][:len(first) + 2]) == [0] + g["words_to_tags"](pieces[0]) + [0]


def test_word_f1_hand_cases(run):
    word_prf = run[0]["word_prf"]
    # 3 of 5 predicted words right, 4 gold words; punctuation counts as a word
    p, r, f = word_prf([["我", "喜欢", "苹果", "。"]], [["我", "喜", "欢", "苹果", "。"]])
    assert (p, r, f) == pytest.approx((3 / 5, 3 / 4, 2 / 3))
    # no correct word, although both sides contain a word "人" (at other positions)
    assert word_prf([["人", "的人"]], [["人的", "人"]]) == (0.0, 0.0, 0.0)
    # single-character words against one merged word
    assert word_prf([["我", "们"]], [["我们"]]) == (0.0, 0.0, 0.0)
    assert word_prf([["好", "好"]], [["好", "好"]]) == (1.0, 1.0, 1.0)
    # counts summed over sentences: right 3 + 2, predicted 5 + 4, gold 4 + 3
    p, r, f = word_prf([["我", "喜欢", "苹果", "。"], ["北京大学", "，", "好"]],
                       [["我", "喜", "欢", "苹果", "。"], ["北京", "大学", "，", "好"]])
    assert (p, r, f) == pytest.approx((5 / 9, 5 / 7, 10 / 16))
    with pytest.raises(ValueError, match="differs"):
        word_prf([["我们"]], [["你们"]])
    with pytest.raises(ValueError, match="expected 2 predicted sentences, found 1"):
        word_prf([["我"], ["你"]], [["我"]])


def test_sbme_round_trip(run):
    g = run[0]
    words_to_tags, tags_to_words = g["words_to_tags"], g["tags_to_words"]
    # S=0, B=1, M=2, E=3
    assert words_to_tags(["我", "喜欢", "图书馆", "。"]) == [0, 1, 3, 1, 2, 3, 0]
    assert tags_to_words("我喜欢图书馆。", [0, 1, 3, 1, 2, 3, 0]) == ["我", "喜欢", "图书馆", "。"]
    for split in ("train.txt", "dev.txt", "test.txt"):
        for words in read_words(split):
            text = "".join(words)
            assert tags_to_words(text, words_to_tags(words)) == words
    # an invalid sequence still segments (2 / 3 continue, 0 / 1 start; a leading 2 starts)
    assert tags_to_words("abcd", [2, 3, 3, 1]) == ["abc", "d"]
    with pytest.raises(ValueError, match="one tag per character"):
        tags_to_words("abc", [0, 0])


def test_split_hand_cases(run):
    g = run[0]
    split_text, split_words = g["split_text"], g["split_words"]
    assert split_text("一二三，四五六七。八九", 5) == ["一二三，", "四五六七。", "八九"]
    assert split_text("一二三四五六七", 3) == ["一二三", "四五六", "七"]
    assert split_text("短句", 5) == ["短句"]
    assert split_words(["我们", "，", "喜欢", "学习", "。"], 5) == [
        ["我们", "，"], ["喜欢", "学习", "。"]]
    assert split_words(["一二三四五六七"], 3) == [["一二三"], ["四五六"], ["七"]]
