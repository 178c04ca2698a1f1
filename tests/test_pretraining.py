"""examples/pretraining/pretrain.py: packing, whole-word dynamic masking, a tiny end-to-end run.

The end-to-end run trains a 1-layer RoFormer on generated text whose characters follow a
fixed cycle (so a masked character is decidable from its neighbours), then reloads the
saved Google checkpoint and ``.weights.h5`` and recomputes the held-out accuracy.
"""
import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples", "pretraining"))

import pretrain  # noqa: E402
from bert4keras3.models import build_transformer_model  # noqa: E402
from bert4keras3.tokenizers import Tokenizer, load_vocab  # noqa: E402

CYCLE = "甲乙丙丁戊己庚辛壬癸子丑寅卯"


def write_vocab(path, extra=()):
    tokens = list(pretrain.SPECIAL) + [f"[unused{i}]" for i in range(1, 4)] + list(CYCLE)
    tokens += list(extra)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    return path


def write_corpus(path, docs=260, seed=0):
    rng = np.random.RandomState(seed)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(docs):
            start, n = rng.randint(len(CYCLE)), rng.randint(12, 40)
            f.write("".join(CYCLE[(start + i) % len(CYCLE)] for i in range(n)) + "\n")
    return path


def test_pack_keeps_words_whole_and_fits():
    words = [[[5, 6], [7], [8, 9, 10]], [[11] * 9], [[12], [13, 14]]]
    out = pretrain.pack(words, seq_len=8)  # room for 6 tokens
    assert all(sum(len(w) for w in inst) <= 6 for inst in out)
    flat = [w for inst in out for w in inst]
    # every word kept in order; the over-long word is cut to the room
    assert flat == [[5, 6], [7], [8, 9, 10], [11] * 6, [12], [13, 14]]


def test_whole_word_masking_rates():
    rng = np.random.RandomState(0)
    vocab, mask_id = 1000, 4
    words = [[100 + 3 * i, 101 + 3 * i, 102 + 3 * i] for i in range(50)]
    args = dict(mask_rate=0.15, mask_id=mask_id, vocab_size=vocab, first_id=5, cls_id=2,
                sep_id=3)
    chosen_words = kinds = 0
    counts = {"mask": 0, "same": 0, "random": 0}
    trials = 400
    for _ in range(trials):
        ids, targets, weights = pretrain.mask_instance(words, rng, **args)
        assert ids[0] == targets[0] == 2 and ids[-1] == targets[-1] == 3
        assert targets[1:-1] == [t for w in words for t in w]
        w = np.asarray(weights[1:-1]).reshape(50, 3)
        # a word is masked as a whole or not at all
        assert np.all((w == 0).all(1) | (w == 1).all(1))
        chosen_words += int(w[:, 0].sum())
        picked = np.asarray(weights) > 0
        for i, t in zip(np.asarray(ids)[picked], np.asarray(targets)[picked]):
            kinds += 1
            counts["mask" if i == mask_id else "same" if i == t else "random"] += 1
    n = trials * 50
    rate = chosen_words / n
    assert abs(rate - 0.15) < 4 * np.sqrt(0.15 * 0.85 / n)
    for kind, p in (("mask", 0.8), ("same", 0.1), ("random", 0.1)):
        share = counts[kind] / kinds
        # each chosen token draws its kind independently
        assert abs(share - p) < 4 * np.sqrt(p * (1 - p) / kinds), (kind, share)


def test_whole_words_come_from_jieba(tmp_path):
    vocab = load_vocab(write_vocab(tmp_path / "vocab.txt", extra="我们是中国人"))
    tokenizer = Tokenizer(vocab)
    text = "我们是中国人"
    words = pretrain.to_words(text, tokenizer, whole_word=True)
    chars = pretrain.to_words(text, tokenizer, whole_word=False)
    assert [t for w in words for t in w] == [vocab[c] for c in text]
    assert all(len(w) == 1 for w in chars) and len(chars) == len(text)
    assert max(len(w) for w in words) >= 2  # jieba joins characters into words


def test_batch_weights_average_the_masked_tokens():
    rng = np.random.RandomState(1)
    inst = [[[10 + i] for i in range(12)], [[30], [31]]]
    x, targets, weights = pretrain.make_batch(inst, rng, 16, mask_rate=0.5, mask_id=4,
                                              vocab_size=40, first_id=5, cls_id=2, sep_id=3)
    assert x[0].shape == targets.shape == weights.shape == (2, 16)
    assert not x[1].any()  # segment ids
    picked = weights > 0
    assert np.isclose(weights.mean(), 1.0)
    assert np.allclose(weights[picked], weights.size / picked.sum())


def test_reduced_vocab_keeps_specials_unused_and_seen_tokens(tmp_path):
    vocab = load_vocab(write_vocab(tmp_path / "vocab.txt", extra=["天", "地"]))
    tokens = pretrain.reduced_vocab(["甲乙甲", "天乙"], vocab, min_count=2, keep_unused=2)
    assert tokens == list(pretrain.SPECIAL) + ["[unused1]", "[unused2]", "甲", "乙"]


def test_pretraining_end_to_end(tmp_path):
    vocab = write_vocab(tmp_path / "vocab.txt", extra=["天", "地"])
    corpus = write_corpus(tmp_path / "corpus.txt")
    out = tmp_path / "model"
    log = pretrain.main([
        "--corpus", str(corpus), "--vocab", str(vocab), "--output-dir", str(out),
        "--model", "roformer", "--layers", "1", "--hidden", "32", "--heads", "2",
        "--seq-len", "32", "--batch-size", "16", "--steps", "300", "--learning-rate", "5e-3",
        "--heldout", "40", "--dropout", "0", "--no-whole-word", "--mask-rate", "0.2",
        "--eval-lengths", "64", "--log-every", "10",
    ])
    assert log["train_documents"] == 220 and log["heldout_documents"] == 40
    assert log["steps"] == 300
    # unseen tokens are dropped from the vocabulary
    saved = load_vocab(out / "vocab.txt")
    assert "天" not in saved and len(saved) == log["vocab_size"] == 5 + 3 + len(CYCLE)
    # chance is 1 / 14; the cycle makes a masked character decidable
    acc = log["heldout_mlm_accuracy"]
    assert acc["32"] > 0.6, log
    assert log["loss_curve"][-1][1] < log["loss_curve"][0][1]

    # the saved Google checkpoint and .weights.h5 hold the trained model
    with open(out / "bert_config.json") as f:
        config = json.load(f)
    from_ckpt = build_transformer_model(config, str(out / "bert_model.ckpt"), model="roformer",
                                        with_mlm="linear")
    from_h5 = build_transformer_model(config, str(out / "model.weights.h5"), model="roformer",
                                      with_mlm="linear")
    tokenizer = Tokenizer(str(out / "vocab.txt"))
    docs = pretrain.read_corpus([str(corpus)])[-40:]
    words = [pretrain.to_words(d, tokenizer, False) for d in docs]
    ids = saved
    rng = np.random.RandomState(12345)
    inst = pretrain.pack(words, 32)
    batches = [pretrain.make_batch(inst[i:i + 16], rng, 32, mask_rate=0.2, mask_id=ids["[MASK]"],
                                   vocab_size=len(ids), first_id=5, cls_id=ids["[CLS]"],
                                   sep_id=ids["[SEP]"]) for i in range(0, len(inst), 16)]
    right = total = 0
    for x, targets, weights in batches:
        a = np.asarray(from_ckpt.predict_on_batch(x))
        b = np.asarray(from_h5.predict_on_batch(x))
        np.testing.assert_array_equal(a, b)
        picked = weights > 0
        right += ((a.argmax(-1) == targets) & picked).sum()
        total += picked.sum()
    assert right / total == pytest.approx(acc["32"], abs=1e-9)


def test_bad_arguments_are_named(tmp_path):
    vocab = write_vocab(tmp_path / "vocab.txt")
    corpus = write_corpus(tmp_path / "corpus.txt", docs=5)
    with pytest.raises(ValueError, match="--heldout 10 leaves no training text"):
        pretrain.main(["--corpus", str(corpus), "--vocab", str(vocab), "--output-dir",
                       str(tmp_path / "o"), "--heldout", "10"])
    with pytest.raises(FileNotFoundError, match="one document per line"):
        pretrain.main(["--corpus", str(tmp_path / "nope.txt"), "--vocab", str(vocab),
                       "--output-dir", str(tmp_path / "o")])
    with pytest.raises(SystemExit):
        pretrain.main(["--corpus", str(corpus), "--vocab", str(vocab), "--output-dir",
                       str(tmp_path / "o"), "--mask-rate", "1.5"])
