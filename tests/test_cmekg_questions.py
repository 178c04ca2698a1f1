"""examples/kgclue/cmekg_questions.py: KgCLUE-format questions over a medical KB, checked on
a small hand-built knowledge base."""
import importlib.util
import json
import os
import random

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location(
        "cmekg_questions", os.path.join(ROOT, "examples", "kgclue", "cmekg_questions.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load()

NAME_CHARS = "甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥金木水火土日月星山川河海江湖风云雷电"
#: predicates of the tiny KB and a value pool for each ("颜色" has no own templates)
VALUES = {"分类": ["抗生素", "解热镇痛药", "维生素"], "就诊科室": ["内科", "外科", "儿科"],
          "科": ["豆科", "菊科"], "颜色": ["红色", "白色"]}


def tiny_kb(n_subjects=40, seed=0):
    """Random 3-character subjects with one object for each of 2-4 predicates, plus the
    special cases of :func:`test_eligible_pairs_rules` (returned as a list of triples)."""
    rng = random.Random(seed)
    names = set()
    while len(names) < n_subjects:
        names.add("".join(rng.sample(NAME_CHARS, 3)) + "片")
    triples = []
    for s in sorted(names):
        for p in rng.sample(sorted(VALUES), rng.randint(2, 4)):
            triples.append((s, p, rng.choice(VALUES[p])))
        triples.append((s, "不良反应", "恶心"))  # never asked: no templates chosen
    return triples


def write_kb(path, triples):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines("\t".join(t) + "\n" for t in triples)
    return str(path)


def read_rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_kb(path):
    with open(path, encoding="utf-8") as f:
        return [tuple(line.rstrip("\n").split("\t")) for line in f if line.strip()]


def template_of(question, subject):
    """The template a question was made from (its subject put back as ``{s}``)."""
    assert question.count(subject) == 1, (question, subject)
    return question.replace(subject, "{s}")


PREDICATES = sorted(VALUES)


# -- templates ---------------------------------------------------------------------

def test_templates_are_disjoint_and_well_formed():
    seen = {}
    for p in list(gen.TEMPLATES) + ["颜色"]:
        train, ev = gen.templates_for(p)
        assert len(train) >= 2 and len(ev) >= 2, p
        assert not set(train) & set(ev), p
        for t in train + ev:
            assert t.count("{s}") == 1 and "{p}" not in t, (p, t)
            assert t.endswith(("？", "。")), t
            assert t not in seen, (t, p, seen.get(t))  # no template serves two predicates
            seen[t] = p
    assert gen.templates_for("颜色") == (
        ["{s}的颜色是什么？", "请问{s}的颜色？", "{s}的颜色是？"],
        ["关于{s}，它的颜色是什么？", "你知道{s}的颜色吗？"])
    assert len(gen.TEMPLATES) == 46


# -- eligibility -------------------------------------------------------------------

def test_eligible_pairs_rules():
    triples = [
        ("甲片", "分类", "抗生素"), ("甲片", "分类", "抗生素"),     # duplicate line: one object
        ("甲片", "科", "豆科"),
        ("乙片", "分类", "抗生素"), ("乙片", "分类", "维生素"),     # two objects: not asked
        ("乙片", "就诊科室", "内科"),
        ("ABC片", "分类", "维生素"), ("abc片", "分类", "抗生素"),  # same key text: both out
        ("ABC片", "科", "菊科"),                                   # unique for this predicate
        ("x|||y", "分类", "维生素"),                                # separator in the subject
        ("丙" * 41, "分类", "维生素"),                              # too long
        ("丁片", "分类", ""),                                       # empty object
        ("戊片", "不良反应", "恶心"),                               # predicate not chosen
    ]
    pairs = gen.eligible_pairs(triples, ["分类", "科", "就诊科室"], max_subject_chars=40)
    assert pairs == {"甲片": {"分类": "抗生素", "科": "豆科"}, "乙片": {"就诊科室": "内科"},
                     "ABC片": {"科": "菊科"}}
    assert gen.key_text("A b\u0301C") == "abc"


def test_read_knowledge_errors_and_dedup(tmp_path):
    path = write_kb(tmp_path / "k.txt", [("甲", "分类", "x"), ("甲", "分类", "x"),
                                         (" 乙 ", "科", "y ")])
    assert gen.read_knowledge(path) == [("甲", "分类", "x"), ("乙", "科", "y")]
    bad = tmp_path / "bad.txt"
    bad.write_text("甲\t分类\tx\n只有\t两列\n", encoding="utf-8")
    with pytest.raises(gen.DataError, match=r"bad.txt:2: expected 3 tab-separated.*found 2"):
        gen.read_knowledge(str(bad))


# -- generated splits ---------------------------------------------------------------

def _generate(tmp_path, seed=0, name="out", **kwargs):
    kb = write_kb(tmp_path / "source.txt", tiny_kb())
    out = str(tmp_path / name)
    args = ["--knowledge", kb, "--out", out, "--train", "30", "--dev", "8", "--test", "8",
            "--seed", str(seed), "--predicates", ",".join(PREDICATES)]
    for k, v in kwargs.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    gen.main(args)
    return out


def test_splits_templates_pairs_and_answers(tmp_path):
    out = _generate(tmp_path)
    source = set(tiny_kb())
    kb = read_kb(os.path.join(out, "Knowledge.txt"))
    rows = {s: read_rows(os.path.join(out, f"{s}.json")) for s in ("train", "dev")}
    rows["test"] = read_rows(os.path.join(out, "test_public.json"))
    assert {s: len(r) for s, r in rows.items()} == {"train": 30, "dev": 8, "test": 8}

    objects = {}
    for s, p, o in kb:
        objects.setdefault((s, p), set()).add(o)
    pairs, subjects = {}, {}
    for split, split_rows in rows.items():
        assert [r["id"] for r in split_rows] == list(range(len(split_rows)))
        for r in split_rows:
            s, p, o = r["answer"].split(" ||| ")
            assert (s, p, o) in source and (s, p, o) in set(kb)   # answers are KB entries
            assert objects[(s, p)] == {o}                         # ... and the only object
            assert p in PREDICATES
            train_t, eval_t = gen.templates_for(p)
            template = template_of(r["question"], s)
            assert template in (train_t if split == "train" else eval_t), (split, r)
            assert template not in (eval_t if split == "train" else train_t)
        pairs[split] = {tuple(r["answer"].split(" ||| ")[:2]) for r in split_rows}
        subjects[split] = {p[0] for p in pairs[split]}
        assert len(pairs[split]) == len(split_rows)               # each pair asked once
        assert max(sum(1 for q in pairs[split] if q[0] == s) for s in subjects[split]) <= 2
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not pairs[a] & pairs[b] and not subjects[a] & subjects[b]

    # the default KB scope: every triple of a used subject with a chosen predicate
    used = set().union(*subjects.values())
    assert set(kb) == {t for t in source if t[0] in used and t[1] in PREDICATES}
    assert len(kb) == len(set(kb))
    # test.json is test_public.json without answers
    test = read_rows(os.path.join(out, "test.json"))
    assert test == [{"id": r["id"], "question": r["question"]} for r in rows["test"]]
    meta = json.load(open(os.path.join(out, "meta.json"), encoding="utf-8"))
    assert meta["questions"] == {"test": 8, "dev": 8, "train": 30}
    assert meta["knowledge"]["triples"] == len(kb)
    assert sum(meta["predicate_counts"]["train"].values()) == 30


def test_determinism_by_seed(tmp_path):
    def files(out):
        return {n: open(os.path.join(out, n), "rb").read() for n in sorted(os.listdir(out))}

    a = files(_generate(tmp_path, seed=3, name="a"))
    b = files(_generate(tmp_path, seed=3, name="b"))
    c = files(_generate(tmp_path, seed=4, name="c"))
    assert a == b
    assert a["train.json"] != c["train.json"] and a["dev.json"] != c["dev.json"]


def test_kb_scopes(tmp_path):
    source = tiny_kb()
    out = _generate(tmp_path, kb="predicates")
    assert read_kb(os.path.join(out, "Knowledge.txt")) == [t for t in source
                                                           if t[1] in PREDICATES]
    out = _generate(tmp_path, kb="all", name="all")
    assert read_kb(os.path.join(out, "Knowledge.txt")) == source


def test_too_few_pairs_and_unknown_predicates(tmp_path):
    triples = tiny_kb()
    n_subjects = len({t[0] for t in triples})
    with pytest.raises(gen.DataError, match=rf"asked for 1000 questions.*{n_subjects} subjects"):
        gen.generate(triples, 990, 5, 5, predicates=PREDICATES)
    with pytest.raises(gen.DataError, match=r"\['性味'\] do not occur"):
        gen.generate(triples, 5, 5, 5, predicates=["分类", "性味"])
    with pytest.raises(ValueError, match="--per-subject must be >= 1"):
        gen.generate(triples, 5, 5, 5, predicates=PREDICATES, per_subject=0)
    # per_subject=1: one question per subject, so exactly 10 subjects for 10 questions
    result = gen.generate(triples, 4, 3, 3, predicates=PREDICATES, per_subject=1)
    assert sum(result["meta"]["subjects"].values()) == 10
