"""The KgCLUE baseline (examples/kgclue/run.py), run in-process on tiny random models."""
import glob
import importlib.util
import json
import os
import random

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "examples", "data", "kgclue")


def _load_runner():
    spec = importlib.util.spec_from_file_location(
        "kgclue_run", os.path.join(ROOT, "examples", "kgclue", "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = _load_runner()


def _texts(data_dir):
    """Every data file's text (the tiny vocabulary covers their characters) and '|'."""
    return [open(p, encoding="utf-8").read() for p in glob.glob(os.path.join(data_dir, "*"))
            if os.path.isfile(p)] + ["|"]


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _kb_triples(data_dir):
    with open(os.path.join(data_dir, "Knowledge.txt"), encoding="utf-8") as f:
        return {tuple(line.rstrip("\n").split("\t")) for line in f if line.strip()}


# -- the bundled sample --------------------------------------------------------

def test_bundled_sample_is_consistent():
    kb = _kb_triples(SAMPLE)
    assert all(len(t) == 3 for t in kb) and len(kb) >= 30
    for name in ("train.json", "dev.json"):
        rows = _lines(os.path.join(SAMPLE, name))
        assert len(rows) >= 10
        for r in rows:
            assert tuple(r["answer"].split(" ||| ")) in kb, r
    test = _lines(os.path.join(SAMPLE, "test.json"))
    assert len(test) >= 10 and all(set(r) == {"id", "question"} for r in test)
    assert len({r["id"] for r in test}) == len(test)


def test_runner_on_bundled_sample(tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir(_texts(SAMPLE), model="roformer")
    out = tmp_path / "out"
    summary = run.main(["--data-dir", SAMPLE, "--model-dir", model_dir, "--max-steps", "2",
                        "--batch-size", "8", "--output-dir", str(out)])
    assert summary["steps"] == 2

    test = _lines(os.path.join(SAMPLE, "test.json"))
    pred = _lines(out / "kgclue_predict.json")
    assert [p["id"] for p in pred] == [r["id"] for r in test]  # every test id once, in order
    kb = _kb_triples(SAMPLE)
    for p in pred:
        assert set(p) == {"id", "answer"}
        assert tuple(p["answer"].split(" ||| ")) in kb, p  # constrained decode + KB lookup

    dev = json.loads((out / "kgclue_dev.json").read_text(encoding="utf-8"))
    for key in ("task", "metric", "score", "examples", "seconds"):
        assert key in dev
    assert dev["task"] == "kgclue" and dev["examples"] == len(_lines(os.path.join(SAMPLE,
                                                                                 "dev.json")))
    assert 0.0 <= dev["score"] <= 1.0 and dev["seconds"] > 0
    assert dev["score"] == pytest.approx(0.5 * dev["metrics"]["EM_O"]
                                         + 0.5 * dev["metrics"]["F1_O"])


def test_constrained_decode_only_yields_knowledge_keys(tiny_model_dir):
    """An untrained model, greedy and beam: every decoded id sequence is a KB key."""
    model_dir = tiny_model_dir(_texts(SAMPLE), model="roformer")
    tokenizer = run.load_tokenizer(model_dir)
    kb = run.load_knowledge(os.path.join(SAMPLE, "Knowledge.txt"), tokenizer)
    assert kb.triples == len(_kb_triples(SAMPLE)) and kb.max_length > 5
    obj = run.build_model(model_dir, model="roformer", application="unilm", with_mlm=True,
                          return_keras_model=False)
    questions = [r["question"] for r in _lines(os.path.join(SAMPLE, "dev.json"))]
    questions += ["完全无关的问题", "？"]
    keys = {run.linearise(s, p) for s, p, _ in _kb_triples(SAMPLE)}
    for beam in (1, 3):
        results = run.predict(obj, tokenizer, kb, questions, 64, 4, beam_size=beam)
        assert len(results) == len(questions)
        for ids, (s, p, o) in results:
            assert ids in kb.trie and ids[-1] == tokenizer._token_end_id
            assert (s, p, o) in _kb_triples(SAMPLE)
            assert tokenizer.decode(ids).replace(" ", "") == \
                run.linearise(s, p).replace(" ", "").lower()
            assert run.linearise(s, p) in keys


# -- learnability ----------------------------------------------------------------

NAME_CHARS = "甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥金木水火土日月星山川河海江湖风云雷电"
TEMPLATES = {
    "年龄": ["{}今年多大了？", "{}的年龄是多少？"],
    "颜色": ["{}是什么颜色的？", "请问{}的颜色？"],
    "产地": ["{}产自哪里？", "你知道{}的产地吗？"],
    "价格": ["{}卖多少钱？", "{}的价格是多少？"],
}


def write_generated_kgclue(path, n_subjects=24, n_dev=20, seed=0):
    """A KgCLUE-format directory over a generated KB: random 2-3 character subjects,
    four predicates with two question templates each. Dev holds (subject, predicate)
    pairs never asked in train, so the model must copy the subject and map the
    template to the predicate. One subject carries a sense suffix."""
    rng = random.Random(seed)
    names = set()
    while len(names) < n_subjects:
        names.add("".join(rng.sample(NAME_CHARS, rng.choice([2, 3]))))
    names = sorted(names)
    triples = [(s, p, f"{rng.randint(1, 999)}号") for s in names for p in TEMPLATES]
    rng.shuffle(triples)
    dev, train = triples[:n_dev], triples[n_dev:]
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "Knowledge.txt"), "w", encoding="utf-8") as f:
        f.writelines("\t".join(t) + "\n" for t in triples)

    def dump(name, rows):
        with open(os.path.join(path, name), "w", encoding="utf-8") as f:
            for i, r in enumerate(rows):
                f.write(json.dumps(dict(id=i, **r), ensure_ascii=False) + "\n")

    dump("train.json", [{"question": t.format(s), "answer": f"{s} ||| {p} ||| {o}"}
                        for s, p, o in train for t in TEMPLATES[p]])
    dev_rows = [{"question": rng.choice(TEMPLATES[p]).format(s),
                 "answer": f"{s} ||| {p} ||| {o}"} for s, p, o in dev]
    dump("dev.json", dev_rows)
    dump("test.json", [{"question": r["question"]} for r in dev_rows])
    return path


def test_learnability_on_generated_kb(tiny_model_dir, tmp_path):
    data = write_generated_kgclue(str(tmp_path / "data"))
    model_dir = tiny_model_dir(_texts(data), model="roformer", hidden_size=64,
                               intermediate_size=128, num_attention_heads=4)
    summary = run.main(["--data-dir", data, "--model-dir", model_dir, "--epochs", "30",
                        "--batch-size", "16", "--learning-rate", "2e-3",
                        "--output-dir", str(tmp_path / "out")])
    assert summary["examples"] == 20 and summary["steps"] == 300
    assert summary["em"] >= 0.9, summary
    assert summary["metrics"]["EM_All"] >= 0.9, summary


# -- metric and linearisation ------------------------------------------------------

def test_metric_follows_kgclue_evaluation():
    assert run.normalize("  AbC \t d ") == "abc d"
    assert run.f1_sim("", "") == 0.0
    assert run.f1_sim("abc", "abd") == pytest.approx(2 * 2 / 6)
    m = run.evaluate([("A", "b", "xyz"), ("a", "c", "")], [("a", "b", "xy z"), ("a", "b", "q")])
    assert m["EM_S"] == 1.0 and m["EM_P"] == 0.5 and m["EM_O"] == 0.0 and m["EM_All"] == 0.0
    assert m["F1_O"] == pytest.approx((2 * 3 / 7 + 0.0) / 2)
    assert m["EMF1"] == pytest.approx(0.5 * m["EM_O"] + 0.5 * m["F1_O"])
    with pytest.raises(ValueError):
        run.evaluate([("a", "b", "c")], [])


def test_subject_sense_linearisation():
    assert run.split_subject("星河号（动画片）") == ("星河号", "动画片")
    assert run.split_subject("海州市") == ("海州市", "")
    assert run.split_subject("（注）") == ("（注）", "")
    assert run.linearise("星河号（动画片）", "导演") == "星河号 ||| 导演 ||| 动画片"
    assert run.linearise("海州市", "人口") == "海州市 ||| 人口"


def test_mentioned_subjects_filter(tiny_model_dir):
    tokenizer = run.load_tokenizer(tiny_model_dir(_texts(SAMPLE), checkpoint=None))
    keep = run.mention_filter(["白鹭湾大桥有多长？", "请问星河号的导演"])
    kb = run.load_knowledge(os.path.join(SAMPLE, "Knowledge.txt"), tokenizer, keep)
    subjects = {t[0] for entries in kb.entries.values() for t in entries}
    assert subjects == {"白鹭湾大桥", "星河号（科考船）", "星河号（动画片）"}
    with pytest.raises(run.DataError, match="no knowledge triples"):
        run.load_knowledge(os.path.join(SAMPLE, "Knowledge.txt"), tokenizer,
                           run.mention_filter(["无关"]))


# -- malformed input ------------------------------------------------------------------

def _copy_sample(dst):
    os.makedirs(dst, exist_ok=True)
    for name in ("train.json", "dev.json", "test.json", "Knowledge.txt"):
        with open(os.path.join(SAMPLE, name), encoding="utf-8") as f:
            lines = f.read().splitlines()
        with open(os.path.join(dst, name), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return dst


def _replace_line(path, number, text):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    lines[number - 1] = text
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


@pytest.mark.parametrize("name, number, text, message", [
    ("train.json", 3, '{"id": 2, "question": "没有答案？"}', r"missing field.*answer"),
    ("dev.json", 2, '{"id": 1, "question": "坏的 JSON"', r"invalid JSON"),
    ("dev.json", 4, '{"id": 3, "question": "只有两段？", "answer": "海州市 ||| 人口"}',
     r"subject \|\|\| predicate \|\|\| object"),
    ("test.json", 5, '{"id": 0, "question": "重复的编号？"}', r"duplicate id 0"),
    ("test.json", 6, '{"id": 5}', r"missing field.*question"),
    ("Knowledge.txt", 7, "只有\t两列", r"expected 3 tab-separated fields.*found 2"),
    ("Knowledge.txt", 9, "四\t列\t太\t多", r"expected 3 tab-separated fields.*found 4"),
])
def test_malformed_input_names_file_and_line(tiny_model_dir, tmp_path, name, number, text,
                                             message):
    data = _copy_sample(str(tmp_path / "data"))
    _replace_line(os.path.join(data, name), number, text)
    model_dir = tiny_model_dir(_texts(SAMPLE), model="roformer", checkpoint=None)
    with pytest.raises(run.DataError, match=message) as info:
        run.main(["--data-dir", data, "--model-dir", model_dir, "--max-steps", "1",
                  "--output-dir", str(tmp_path / "out")])
    assert f"{os.path.join(data, name)}:{number}:" in str(info.value)
    assert not os.path.exists(tmp_path / "out")


def test_missing_files_are_reported(tiny_model_dir, tmp_path):
    data = _copy_sample(str(tmp_path / "data"))
    os.remove(os.path.join(data, "Knowledge.txt"))
    model_dir = tiny_model_dir(_texts(SAMPLE), model="roformer", checkpoint=None)
    with pytest.raises(FileNotFoundError, match="Knowledge.txt"):
        run.main(["--data-dir", data, "--model-dir", model_dir])
    with pytest.raises(FileNotFoundError, match="test.json"):
        os.remove(os.path.join(data, "test.json"))
        run.main(["--data-dir", data, "--model-dir", model_dir])
