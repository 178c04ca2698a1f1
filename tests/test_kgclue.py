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
        for ids, (s, p, o), in_kb in results:
            assert in_kb and ids in kb.trie and ids[-1] == tokenizer._token_end_id
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


# -- questions generated from a medical KB (examples/kgclue/cmekg_questions.py) ---------

def _load_generator():
    spec = importlib.util.spec_from_file_location(
        "cmekg_questions", os.path.join(ROOT, "examples", "kgclue", "cmekg_questions.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_generated_cmekg(path, seed=0):
    """A tiny PyCMeKG-like KB (drugs with 分类 / 就诊科室 / 科 objects, a multi-object
    不良反应 each) turned into KgCLUE questions by the generator."""
    gen = _load_generator()
    rng = random.Random(seed)
    values = {"分类": ["抗生素", "维生素"], "就诊科室": ["内科", "儿科"], "科": ["豆科", "菊科"]}
    names = set()
    while len(names) < 16:
        names.add("".join(rng.sample(NAME_CHARS, 2)) + "片")
    triples = []
    for s in sorted(names):
        triples += [(s, p, rng.choice(v)) for p, v in values.items()]
        triples += [(s, "不良反应", "恶心"), (s, "不良反应", "头痛")]
    result = gen.generate(triples, 12, 6, 6, seed=seed, predicates=list(values))
    gen.write(path, result)
    return path


def test_generated_cmekg_runner_answers_are_kb_entries(tiny_model_dir, tmp_path):
    """Acceptance: with the trie, every dev and test answer the runner writes is a triple
    of the KB it loaded (an untrained random model; beam search is covered on the bundled
    sample by test_constrained_decode_only_yields_knowledge_keys)."""
    data = write_generated_cmekg(str(tmp_path / "data"))
    kb = _kb_triples(data)
    model_dir = tiny_model_dir(_texts(data), model="roformer")
    out = tmp_path / "out"
    summary = run.main(["--data-dir", data, "--model-dir", model_dir, "--epochs", "0",
                        "--batch-size", "4", "--output-dir", str(out)])
    assert summary["trie"] is True and summary["kb_answers"] == 1.0
    dev = _lines(out / "kgclue_dev_predict.json")
    test = _lines(out / "kgclue_predict.json")
    assert len(dev) == 6 and len(test) == 6
    for p in dev + test:
        assert tuple(p["answer"].split(" ||| ")) in kb, p
    assert all(p["in_kb"] for p in dev)


def test_no_trie_runner(tiny_model_dir, tmp_path):
    """--no-trie: free decoding; an answer that is not a KB entry has an empty object and
    EM on the object counts only KB answers that equal the gold object."""
    data = write_generated_cmekg(str(tmp_path / "data"))
    kb = _kb_triples(data)
    model_dir = tiny_model_dir(_texts(data), model="roformer")
    out = tmp_path / "out"
    summary = run.main(["--data-dir", data, "--model-dir", model_dir, "--epochs", "0",
                        "--batch-size", "4", "--no-trie", "--output-dir", str(out)])
    assert summary["trie"] is False
    dev = _lines(out / "kgclue_dev_predict.json")
    in_kb = 0
    em = 0
    for p in dev:
        s, pred, o = p["answer"].split(" ||| ")
        if p["in_kb"]:
            assert (s, pred, o) in kb
            in_kb += 1
            em += o == p["gold"].split(" ||| ")[2]
        else:
            assert o == "" and (s, pred) not in {t[:2] for t in kb}
    assert summary["kb_answers"] == pytest.approx(in_kb / len(dev))
    assert summary["em"] == pytest.approx(em / len(dev))
    assert len(_lines(out / "kgclue_predict.json")) == 6


def test_also_free_matches_separate_runs(tiny_model_dir, tmp_path):
    """--also-free decodes the same weights twice: its OUT/ equals a trie run's and its
    OUT/free/ equals a --no-trie run's, prediction files included."""
    data = write_generated_cmekg(str(tmp_path / "data"))
    model_dir = tiny_model_dir(_texts(data), model="roformer")
    common = ["--data-dir", data, "--model-dir", model_dir, "--max-steps", "3",
              "--batch-size", "4", "--seed", "3"]
    both = run.main(common + ["--also-free", "--output-dir", str(tmp_path / "both")])
    trie = run.main(common + ["--output-dir", str(tmp_path / "trie")])
    free = run.main(common + ["--no-trie", "--output-dir", str(tmp_path / "free")])
    assert both["steps"] == trie["steps"] == free["steps"] == 3
    for got, want in ((both, trie), (both["free"], free)):
        for key in ("score", "metrics", "kb_answers", "trie"):
            assert got[key] == want[key], key
    for folder, want in (("both", "trie"), ("both/free", "free")):
        for name in ("kgclue_dev_predict.json", "kgclue_predict.json"):
            assert _lines(tmp_path / folder / name) == _lines(tmp_path / want / name)
    with pytest.raises(SystemExit):
        run.parse_args(["--data-dir", data, "--model-dir", model_dir, "--also-free",
                        "--no-trie"])


class _FixedDecoder:
    """Stands in for the builder object: ``generate`` returns fixed id sequences and
    records the ``allowed`` it was given."""

    def __init__(self, outputs):
        self.outputs, self.allowed = outputs, []

    def generate(self, inputs, max_new_tokens, method, beam_size, end_id, allowed):
        self.allowed.append(allowed)
        return [list(x) for x in self.outputs[:len(inputs[0])]]


def test_unconstrained_answers_by_hand(tiny_model_dir, tmp_path):
    triples = [("abc片", "分类", "抗生素"), ("abc片", "分类", "维生素"),
               ("星河号（动画片）", "导演", "李明"), ("海州市", "人口", "100万")]
    path = tmp_path / "Knowledge.txt"
    path.write_text("".join("\t".join(t) + "\n" for t in triples), encoding="utf-8")
    model_dir = tiny_model_dir(["".join(map("".join, triples)) + "|长度"],
                               extra_tokens=["abc", "##b", "##c"], checkpoint=None)
    tok = run.load_tokenizer(model_dir)
    kb = run.load_knowledge(str(path), tok)

    def ids(*tokens):
        return tok.tokens_to_ids(list(tokens))

    sep = ["|", "|", "|"]
    key = ids("abc", "片", *sep, "分", "类", "[SEP]")
    assert key == tok.encode("abc片 ||| 分类")[0][1:]
    outputs = [
        key,                                                       # a key: first object
        ids("a", "##b", "##c", "片", *sep, "分", "类", "[SEP]"),   # other ids, key's text
        ids("海", "州", *sep, "长", "度", "[SEP]"),                # not a key
        ids("星", "河", "号", *sep, "导", "演", *sep, "动", "画", "[SEP]"),  # wrong sense
        ids("海", "州", "市"),                                     # no separator at all
    ]
    fake = _FixedDecoder(outputs)
    questions = ["问题"] * len(outputs)
    got = run.predict(fake, tok, kb, questions, 32, len(questions), constrained=False)
    assert fake.allowed == [None]
    assert [(t, in_kb) for _, t, in_kb in got] == [
        (("abc片", "分类", "抗生素"), True),
        (("abc片", "分类", "抗生素"), True),
        (("海州", "长度", ""), False),
        (("星河号（动画）", "导演", ""), False),
        (("海州市", "", ""), False),
    ]
    m = run.evaluate([t for _, t, _ in got], [("abc片", "分类", "抗生素")] * 2
                     + [("海州市", "人口", "100万"), ("星河号（动画片）", "导演", "李明"),
                        ("海州市", "人口", "100万")])
    assert m["EM_O"] == pytest.approx(2 / 5) and m["EM_S"] == pytest.approx(3 / 5)

    fake = _FixedDecoder([key])
    got = run.predict(fake, tok, kb, ["问题"], 32, 1)  # the default: constrained
    assert fake.allowed == [kb.trie] and got[0][1:] == (("abc片", "分类", "抗生素"), True)
