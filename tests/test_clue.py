"""examples/clue: the eleven CLUE baselines behind ``run.py``.

* smoke: every task runs on the bundled samples (``examples/data/clue``) with a tiny
  random model for two optimizer steps and writes a valid CLUE submission file;
* malformed input: errors name the file and the line;
* learnability: on generated data a small model reaches >= 0.9 on a classification
  task, CLUENER and CMRC 2018;
* the CMRC 2018 metric and the chid assignment on hand-checked cases.
"""
import glob
import importlib.util
import itertools
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUE = os.path.join(ROOT, "examples", "clue")
SAMPLES = os.path.join(ROOT, "examples", "data", "clue")


def _module(name, filename):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(CLUE, filename))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


runner = _module("clue_run", "run.py")  # puts examples/clue and examples/ on sys.path
import clue_lib  # noqa: E402
import clue_tasks  # noqa: E402
from common import DataError  # noqa: E402

samples = _module("clue_samples", "samples.py")


def vocab_texts(*dirs):
    """Every character of the data files (plus the text the readers insert)."""
    texts = [clue_lib.INSERTED_TEXT]
    for d in dirs:
        for path in glob.glob(os.path.join(d, "*.json")):
            with open(path, encoding="utf-8") as f:
                texts.append(f.read())
    return texts


def run(task, data_dir, model_dir, out, *extra):
    argv = [task, "--data-dir", str(data_dir), "--model-dir", str(model_dir),
            "--output-dir", str(out), *map(str, extra)]
    return runner.main(argv)


def json_lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# --------------------------------------------------------------------------- predict checks
def check_classification(task, data_dir, predict, limit=None):
    test = json_lines(os.path.join(data_dir, "test.json"))[:limit]
    rows = json_lines(predict)
    assert all(set(r) == {"id", "label"} for r in rows)
    ids = [r["id"] for r in rows]
    assert sorted(ids) == sorted(t["id"] for t in test) and len(set(ids)) == len(ids)
    labels = set(clue_tasks.TASKS[task].labels)
    if task in ("tnews", "iflytek"):
        labels = {str(r["label"]) for r in json_lines(os.path.join(data_dir, "labels.json"))}
    assert {r["label"] for r in rows} <= labels
    assert all(isinstance(r["label"], str) for r in rows)


def check_cluener(data_dir, predict):
    test = {t["id"]: t["text"] for t in json_lines(os.path.join(data_dir, "test.json"))}
    rows = json_lines(predict)
    assert sorted(r["id"] for r in rows) == sorted(test) and len(rows) == len(test)
    types = set(clue_tasks.CLUENER.types)
    for r in rows:
        assert set(r) == {"id", "label"} and isinstance(r["label"], dict)
        for kind, entities in r["label"].items():
            assert kind in types
            for entity, spans in entities.items():
                for start, end in spans:
                    assert test[r["id"]][start:end + 1] == entity


def check_cmrc2018(data_dir, predict):
    contexts = {}
    for article in load(os.path.join(data_dir, "test.json"))["data"]:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                contexts[qa["id"]] = p["context"]
    answers = load(predict)
    assert sorted(answers) == sorted(contexts)
    for qid, text in answers.items():
        assert isinstance(text, str) and text and text in contexts[qid]


def check_c3(data_dir, predict):
    choices = {qa["id"]: len(qa["choice"]) for item in load(os.path.join(data_dir, "test.json"))
               for qa in item[1]}
    rows = json_lines(predict)
    assert sorted(r["id"] for r in rows) == sorted(choices) and len(rows) == len(choices)
    for r in rows:
        assert set(r) == {"id", "label"} and 0 <= int(r["label"]) < choices[r["id"]]


def check_chid(data_dir, predict):
    lines = json_lines(os.path.join(data_dir, "test.json"))
    answers = load(predict)
    tags = [re.findall(r"#idiom\d+#", c) for line in lines for c in line["content"]]
    assert sorted(answers) == sorted(t for group in tags for t in group)
    for line in lines:
        line_tags = [t for c in line["content"] for t in re.findall(r"#idiom\d+#", c)]
        picks = [answers[t] for t in line_tags]
        assert all(isinstance(p, int) and 0 <= p < len(line["candidates"]) for p in picks)
        assert len(set(picks)) == len(picks)  # one idiom per blank of a line


def check_predictions(task, data_dir, predict, limit=None):
    if task == "cluener":
        check_cluener(data_dir, predict)
    elif task == "cmrc2018":
        check_cmrc2018(data_dir, predict)
    elif task == "c3":
        check_c3(data_dir, predict)
    elif task == "chid":
        check_chid(data_dir, predict)
    else:
        check_classification(task, data_dir, predict, limit)


# --------------------------------------------------------------------------- smoke
SMOKE = [
    # task, model family, checkpoint format, extra options
    ("afqmc", "bert", "google", ()),
    ("tnews", "roformer", "h5", ()),
    ("iflytek", "roformer_v2", "h5", ()),
    ("cmnli", "gau_alpha", "h5", ()),
    ("ocnli", "bert", "h5", ("--optimizer", "adamw")),
    ("wsc", "bert", "h5", ()),
    ("csl", "bert", "h5", ("--limit", 10)),
    ("cluener", "bert", "h5", ()),
    ("cluener", "roformer", "h5", ("--head", "efficient_global_pointer")),
    ("cluener", "bert", "h5", ("--head", "crf")),
    ("cmrc2018", "bert", "h5", ("--maxlen", 48)),
    ("c3", "roformer", "h5", ()),
    ("chid", "gau_alpha", "h5", ()),
]


@pytest.mark.parametrize("task,family,checkpoint,extra", SMOKE,
                         ids=["-".join([t, f, c] + [str(v) for v in e[1:2]]) for t, f, c, e in SMOKE])
def test_smoke(task, family, checkpoint, extra, tiny_model_dir, tmp_path):
    data_dir = os.path.join(SAMPLES, task)
    model_dir = tiny_model_dir(vocab_texts(data_dir), model=family, checkpoint=checkpoint,
                               extra_tokens=("[unused1]",))
    assert os.path.exists(os.path.join(model_dir, "bert_model.ckpt.index")) == (
        checkpoint == "google")
    record = run(task, data_dir, model_dir, tmp_path, "--model", family, "--max-steps", 2,
                 *extra)
    predict = tmp_path / f"{task}_predict.json"
    limit = extra[extra.index("--limit") + 1] if "--limit" in extra else None
    check_predictions(task, data_dir, predict, limit)
    dev = load(tmp_path / f"{task}_dev.json")
    assert dev == record
    assert {"task", "metric", "score", "examples", "seconds"} <= set(dev)
    assert dev["task"] == task and dev["model"] == family
    assert dev["metric"] == {"cluener": "f1", "cmrc2018": "em"}.get(task, "accuracy")
    assert 0.0 <= dev["score"] <= 1.0 and dev["seconds"] > 0 and dev["examples"] > 0
    assert 1 <= dev["steps"] <= 2
    if limit is not None:  # the first N examples of each split
        assert dev["examples"] == dev["test_examples"] == dev["train_examples"] == limit
        first = [t["id"] for t in json_lines(os.path.join(data_dir, "test.json"))[:limit]]
        assert [r["id"] for r in json_lines(predict)] == first


def test_missing_files_are_named(tmp_path, tiny_model_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"bert_config\.json or config\.json.*vocab\.txt"):
        run("afqmc", os.path.join(SAMPLES, "afqmc"), empty, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"bert_config\.json.*vocab\.txt"):
        runner.main(["afqmc", "--data-dir", os.path.join(SAMPLES, "afqmc")])
    model_dir = tiny_model_dir(["无"], checkpoint=None)
    with pytest.raises(FileNotFoundError, match=r"c3: expected d-train\.json"):
        run("c3", os.path.join(SAMPLES, "afqmc"), model_dir, tmp_path / "out")


# --------------------------------------------------------------------------- malformed input
def _edit_line(path, number, edit):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    lines[number - 1] = edit(lines[number - 1])
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def _drop(field):
    def edit(line):
        record = json.loads(line)
        del record[field]
        return json.dumps(record, ensure_ascii=False)
    return edit


def _set(**values):
    def edit(line):
        return json.dumps({**json.loads(line), **values}, ensure_ascii=False)
    return edit


def _edit_json(path, edit):
    data = load(path)
    edit(data)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)


def _cmrc_drop_question(data):
    del data["data"][3]["paragraphs"][0]["qas"][0]["question"]


def _c3_bad_answer(data):
    data[2][1][0]["answer"] = "不存在的选项"


MALFORMED = [
    # task, file, line to damage, edit (JSON lines) or None, whole-file edit, error pattern
    ("afqmc", "train.json", 3, _drop("sentence2"), None, r"missing field.*sentence2"),
    ("tnews", "dev.json", 2, lambda line: line[:-3], None, r"invalid JSON"),
    ("cmnli", "train.json", 5, _set(label="maybe"), None, r"unknown label 'maybe'"),
    ("iflytek", "test.json", 4, _drop("id"), None, r"missing field.*'id'"),
    ("wsc", "train.json", 2, _set(label="yes"), None, r"unknown label 'yes'"),
    ("cluener", "train.json", 6, _set(label={"person": {"李华": [[0, 1]]}}), None,
     r"unknown label 'person'"),
    ("cluener", "dev.json", 3, _set(label={"name": {"李华": [[0, 5]]}}), None,
     r"does not hold the entity"),
    ("chid", "train.json", 2, _drop("candidates"), None, r"missing field.*candidates"),
    ("cmrc2018", "train.json", None, None, _cmrc_drop_question, r"missing field.*question"),
    ("c3", "d-train.json", None, None, _c3_bad_answer, r"unknown label"),
]


@pytest.mark.parametrize("task,name,line,edit,whole,pattern", MALFORMED,
                         ids=[f"{m[0]}-{m[1]}-{m[5][:12]}" for m in MALFORMED])
def test_malformed_input_names_file_and_line(task, name, line, edit, whole, pattern,
                                             tiny_model_dir, tmp_path):
    data_dir = tmp_path / task
    shutil.copytree(os.path.join(SAMPLES, task), data_dir)
    path = data_dir / name
    if whole is None:
        _edit_line(path, line, edit)
    else:
        _edit_json(path, whole)
        with open(path, encoding="utf-8") as f:
            line = _damaged_line(task, f.read())
    model_dir = tiny_model_dir(vocab_texts(data_dir), checkpoint=None)
    with pytest.raises(DataError, match=pattern) as info:
        run(task, data_dir, model_dir, tmp_path / "out", "--max-steps", 1)
    message = str(info.value)
    assert f"{path}:{line}:" in message or f"{path}:{line} " in message, message


def _damaged_line(task, text):
    """Line of the element the whole-file edits damage (found independently of the code)."""
    lines = text.splitlines()
    if task == "cmrc2018":  # the first "qas" entry of the fourth article: its "{" line
        article = [i for i, s in enumerate(lines) if s.strip() == '"paragraphs": ['][3]
        qas = next(i for i in range(article, len(lines)) if lines[i].strip() == '"qas": [')
        return qas + 2
    # c3: the first question of the third item: the "{" after the item's questions list
    items = [i for i, s in enumerate(lines) if s == " ["]
    return next(i for i in range(items[2], len(lines)) if lines[i] == "   {") + 1


def test_nli_skips_unannotated_records(tmp_path):
    task = clue_tasks.CMNLI()
    examples = task.load(os.path.join(SAMPLES, "cmnli"), "train")
    raw = json_lines(os.path.join(SAMPLES, "cmnli", "train.json"))
    assert sum(r["label"] == "-" for r in raw) >= 1
    assert len(examples) == sum(r["label"] != "-" for r in raw)


# --------------------------------------------------------------------------- learnability
LEARN = ("--epochs", 10, "--batch-size", 32, "--optimizer", "adamw", "--learning-rate", 3e-3,
         "--max-steps", 240, "--grad-accum", 1)


def _learn(task, tmp_path, tiny_model_dir, sizes=(256, 64, 16), maxlen=32, score_test=False,
           **generator):
    data_dir = samples.generate(task, str(tmp_path / "data"), sizes, seed=7, **generator)
    model_dir = tiny_model_dir(vocab_texts(data_dir))
    extra = ()
    if score_test:  # a labelled test file: the dev records with ids
        dev = json_lines(os.path.join(data_dir, "dev.json"))
        with open(os.path.join(data_dir, "test.json"), "w", encoding="utf-8") as f:
            for i, r in enumerate(dev):
                f.write(json.dumps(dict(r, id=i), ensure_ascii=False) + "\n")
        extra = ("--score-test",)
    record = run(task, data_dir, model_dir, tmp_path / "out", "--maxlen", maxlen, *LEARN, *extra)
    check_predictions(task, data_dir, tmp_path / "out" / f"{task}_predict.json")
    return data_dir, record


def test_learns_keyword_classification(tmp_path, tiny_model_dir):
    # four TNEWS classes, each decided by its keyword inside random filler
    _, record = _learn("tnews", tmp_path, tiny_model_dir, classes=samples.TNEWS_CLASSES[:4],
                       score_test=True)
    assert record["examples"] == 64
    assert record["score"] >= 0.9, record
    # --score-test: the labelled test file (here the dev records) is scored with the best weights
    assert record["test"]["score"] == record["score"] and record["test_examples"] == 64


def test_learns_cluener_spans(tmp_path, tiny_model_dir):
    _, record = _learn("cluener", tmp_path, tiny_model_dir)
    assert record["metric"] == "f1" and record["score"] >= 0.9, record
    assert record["precision"] >= 0.9 and record["recall"] >= 0.9


def test_learns_cmrc2018_spans_over_windows(tmp_path, tiny_model_dir):
    maxlen = 48
    data_dir, record = _learn("cmrc2018", tmp_path, tiny_model_dir, maxlen=maxlen)
    contexts = [p["context"] for a in load(os.path.join(data_dir, "dev.json"))["data"]
                for p in a["paragraphs"]]
    # many contexts need several windows, so the answer must be picked across them
    assert sum(len(c) > maxlen for c in contexts) >= len(contexts) // 3
    assert record["em"] >= 0.9 and record["f1"] >= 0.9, record


# --------------------------------------------------------------------------- metrics
def test_cmrc_metric_cases():
    assert clue_lib.cmrc_em(["《山间来信》"], "山间来信") == 1.0  # punctuation removed
    assert clue_lib.cmrc_em(["山间来信"], "山间来") == 0.0
    # 5 common characters of a 7-character prediction: P = 5/7, R = 1
    assert clue_lib.cmrc_f1(["工商协进会"], "工商协进会报告") == pytest.approx(10 / 12)
    # a number is one segment: ["2013", "年"] vs ["2013"]
    assert clue_lib.cmrc_f1(["2013年"], "2013") == pytest.approx(2 / 3)
    assert clue_lib.cmrc_segments("Hello World 78.1元") == ["hello", "world", "78.1", "元"]
    # punctuation is dropped before splitting, so the words around it join (as in CLUE's script)
    assert clue_lib.cmrc_segments("ab，cd：二") == ["abcd", "二"]
    assert clue_lib.cmrc_segments("ab，二", remove_punctuation=False) == ["ab", "，", "二"]
    # the best of several gold answers counts
    assert clue_lib.cmrc_f1(["甲乙", "甲乙丙丁"], "甲乙丙丁") == 1.0
    assert clue_lib.cmrc_f1(["甲乙"], "丙丁") == 0.0


def test_assignment_is_optimal():
    rng = np.random.default_rng(0)
    for rows, cols in [(1, 4), (2, 5), (3, 3), (4, 6), (5, 10)]:
        scores = rng.normal(size=(rows, cols))
        got = clue_lib.assignment(scores)
        assert len(set(got.tolist())) == rows
        best = max(itertools.permutations(range(cols), rows),
                   key=lambda p: sum(scores[i, j] for i, j in enumerate(p)))
        assert sum(scores[i, j] for i, j in enumerate(got)) == pytest.approx(
            sum(scores[i, j] for i, j in enumerate(best)))


def test_cmrc_windows_cover_the_context_and_label_the_answer():
    from argparse import Namespace

    from bert4keras3.tokenizers import Tokenizer

    context = "南山灯塔在夜里非常安静。白云水库位于城市的东边。青石书院的编号是丙辛甲。红叶茶园附近有一条小河。"
    question = "青石书院的编号是什么？"
    chars = sorted(set(context + question))
    tokenizer = Tokenizer({t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                        "[MASK]"] + chars)})
    task = clue_tasks.CMRC2018(stride=8)
    task.setup(tokenizer, Namespace(inputs=[0, 1]), Namespace(maxlen=28))
    start = context.index("丙辛甲")
    example = {"id": "q", "question": question, "context": context,
               "answers": [("丙辛甲", start)]}
    features = task.encode(example, training=True)
    assert len(features) >= 3
    covered = set()
    for f in features:
        assert len(f["token_ids"]) <= 28 and f["offset"] == len(question) + 2
        n = len(f["token_ids"]) - f["offset"] - 1  # context tokens in the window
        covered.update(range(f["begin"], f["begin"] + n))
        assert f["context_mask"].tolist() == [1] + [0] * (f["offset"] - 1) + [1] * n + [0]
        s, e = f["label"]
        if (s, e) != (0, 0):
            # the labelled tokens are exactly the answer's characters
            ids = f["token_ids"][s:e + 1].tolist()
            assert tokenizer.decode(ids).replace(" ", "") == "丙辛甲"
    assert covered == set(range(len(context)))  # one token per character here
    labelled = [f for f in features if tuple(f["label"]) != (0, 0)]
    assert labelled and all(f["begin"] <= start < f["begin"] + 28 for f in labelled)
    # a misplaced answer_start is repaired to the occurrence of the text
    shifted = dict(example, answers=[("丙辛甲", start + 5)])
    assert [f["label"] for f in task.encode(shifted, True)] == [f["label"] for f in features]
