"""Knowledge-base QA questions over PyCMeKG's medical triples, written in KgCLUE's format.

    python examples/kgclue/cmekg_questions.py --knowledge data/cmekg/Knowledge.txt \\
        --out data/kgclue_cmekg --train 20000 --dev 2000 --test 2000 --seed 0

reads ``subject<TAB>predicate<TAB>object`` lines (``data/cmekg/Knowledge.txt``, made by
``examples/zh_datasets.py``) and writes, under ``--out``, what ``examples/kgclue/run.py``
reads: ``train.json``, ``dev.json`` (``{"id", "question", "answer": "S ||| P ||| O"}`` per
line), ``test.json`` (``{"id", "question"}``, as KgCLUE ships it), ``test_public.json`` (the
test questions with their answers), ``Knowledge.txt`` (the KB the runner loads) and
``meta.json`` (options, sizes, predicate counts, the templates used).

Rules (all decisions depend only on the input file, the options and ``--seed``):

* **Well-defined answers.** A question asks for one ``(subject, predicate)`` pair whose
  KB has exactly one distinct object (duplicate lines count once), so the gold answer is
  that single triple; pairs with several objects are never asked (they stay in the KB as
  distractor keys). Pairs are also dropped when the subject is empty, longer than
  ``--max-subject-chars``, contains ``|||``, or when another subject with the same
  predicate has the same text after lower-casing, accent stripping and whitespace removal
  (the runner's tokenizer would give both the same key).
* **Predicates.** Those of :data:`TEMPLATES` (46 predicates of drugs, diseases, herbs
  and examinations), or ``--predicates a,b,...``; a predicate without its own templates
  uses :data:`GENERIC` (``{p}`` is replaced by the predicate's name).
* **Disjoint subjects.** The subjects with an eligible pair are sorted and shuffled with
  ``random.Random(seed)``; test takes subjects from the front until it has ``--test``
  pairs, then dev, then train. Each subject belongs to one split only, so no test or dev
  ``(subject, predicate)`` pair (indeed no test subject) occurs in train. A subject
  contributes at most ``--per-subject`` pairs (default 2, drawn among its eligible
  predicates) so that the questions cover many subjects.
* **Disjoint templates.** Every predicate has a list of *train* templates and a list of
  *eval* templates, with no string in both (and no string shared by two predicates).
  Train questions use the train templates; dev and test questions use the eval templates
  (which mostly paraphrase the predicate instead of naming it): each pair gets one
  template drawn at random from its split's list. Rows are shuffled within each split.
* **Knowledge base** (``--kb``): ``subjects`` (default) keeps every triple whose subject
  occurs in some split and whose predicate is among the chosen predicates (so other
  objects of those subjects, and the multi-object pairs, are distractors in the trie);
  ``predicates`` keeps every triple of the chosen predicates (all subjects); ``all``
  copies the whole input. Duplicate lines are written once.

Sizes with the defaults on PyCMeKG 0.2.5 (967,409 triples, 27,403 subjects, 469
predicates): 138,723 eligible pairs of 26,951 subjects; ``--train 20000 --dev 2000
--test 2000`` uses 10,367 / 1,041 / 1,038 subjects and writes a ``Knowledge.txt`` of
330,320 triples (95,211 distinct ``subject ||| predicate`` keys); ``--kb predicates``:
716,529 triples. ``meta.json`` records the figures of each run.

The templates are listed in :data:`TEMPLATES` below (one line per predicate: train
templates, then eval templates) and copied into ``meta.json``.
"""
import argparse
import json
import os
import random
import sys
import unicodedata
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import DataError, read_triples  # noqa: E402

SEPARATOR = " ||| "

#: predicate -> (train templates, eval templates); ``{s}`` is the subject
TEMPLATES = {
    # drugs
    "分类": (["{s}属于哪一类药物？", "{s}的药物分类是什么？", "{s}在药品分类里归为哪一类？"],
           ["{s}是什么类别的药？", "请问{s}被划分到哪个药物类别？"]),
    "OTC类型": (["{s}是甲类还是乙类非处方药？", "{s}的OTC类型是什么？", "{s}属于哪种OTC？"],
              ["{s}属于哪一类非处方药？", "请问{s}的非处方药类别是什么？"]),
    "英文名": (["{s}的英文名是什么？", "{s}这个药用英语怎么说？", "{s}的英文药名叫什么？"],
            ["{s}的英语药名是什么？", "{s}在英文里叫什么药？"]),
    "药品监管分级": (["{s}的药品监管分级是什么？", "{s}在监管上属于哪一级别的药品？",
                "{s}属于哪种监管类别的药品？"],
               ["国家对{s}按哪一类药品监管？", "{s}的监管分级是什么？"]),
    "贮藏": (["{s}应该怎么保存？", "{s}的贮藏条件是什么？", "{s}要如何储存？"],
           ["{s}的贮藏方法是什么？", "买回来的{s}该怎样存放？"]),
    "规格": (["{s}的规格是什么？", "{s}有哪些规格？", "{s}每粒或每片含多少？"],
           ["{s}是什么规格的？", "请问{s}的剂量规格？"]),
    "用途分类": (["{s}的用途分类是什么？", "{s}按用途属于哪类药？", "从用途上看{s}是什么药？"],
             ["{s}按用途划分属于哪一类？", "{s}是用于哪方面的药？"]),
    "通用名": (["{s}的通用名是什么？", "{s}这个药的通用名称叫什么？", "{s}的学名是什么药？"],
            ["{s}的药品通用名是什么？", "{s}其实是什么药？"]),
    "药品类型": (["{s}是处方药还是非处方药？", "{s}的药品类型是什么？", "{s}属于什么类型的药品？"],
             ["买{s}需要处方吗？", "{s}属于哪种药品类型？"]),
    "用法用量": (["{s}怎么吃？", "{s}的用法用量是什么？", "{s}一次用多少？"],
             ["{s}应该如何服用？", "请问{s}的用量和用法？"]),
    "禁忌": (["{s}有什么禁忌？", "哪些人不能用{s}？", "{s}的禁忌是什么？"],
           ["{s}的使用禁忌有哪些？", "什么情况下禁用{s}？"]),
    "性状": (["{s}的性状是什么样的？", "{s}长什么样？", "{s}外观如何？"],
           ["{s}是什么性状？", "请描述一下{s}的外观性状。"]),
    "成份": (["{s}的成份是什么？", "{s}含有什么成分？", "{s}里面有什么药物成分？"],
           ["{s}的主要成分是什么？", "{s}是由什么成份组成的？"]),
    "商品名": (["{s}的商品名是什么？", "{s}在市场上叫什么名字？", "{s}有什么商品名？"],
            ["{s}的商品名称叫什么？", "{s}卖的时候用什么品牌名？"]),
    "有效期": (["{s}的有效期是多久？", "{s}能保存多长时间？", "{s}多久过期？"],
            ["{s}的保质期有多长？", "请问{s}的有效期限？"]),
    "适应症": (["{s}主要治什么病？", "{s}的适应症是什么？", "{s}用于治疗什么？"],
            ["{s}适用于哪些病症？", "什么病可以用{s}来治？"]),
    "不良反应": (["{s}有什么不良反应？", "{s}的副作用是什么？", "吃{s}会有什么不良反应？"],
             ["{s}有副作用吗？", "使用{s}可能出现什么不良反应？"]),
    "注意事项": (["{s}有什么注意事项？", "使用{s}要注意什么？", "{s}的注意事项是什么？"],
             ["服用{s}时需要注意哪些问题？", "{s}用药时应注意什么？"]),
    "特殊药品": (["{s}属于哪类特殊管理药品？", "{s}是什么特殊药品？", "{s}的特殊药品类别是什么？"],
             ["{s}被列为哪一种特殊药品？", "{s}在特殊药品管理中属于哪类？"]),
    "汉语拼音": (["{s}的汉语拼音怎么写？", "{s}的拼音是什么？", "{s}用拼音怎么拼？"],
             ["{s}怎么用拼音拼写？", "写出{s}的汉语拼音。"]),
    # diseases
    "就诊科室": (["{s}应该挂哪个科？", "{s}的就诊科室是什么？", "得了{s}去哪个科看？"],
             ["患{s}应该去哪个科室就诊？", "{s}归哪个科室诊治？"]),
    "英文名称": (["{s}的英文名称是什么？", "{s}这种病用英文怎么说？", "{s}的英文叫什么？"],
             ["{s}的英语名称是什么？", "请给出{s}这种病的英文名。"]),
    "ICD10": (["{s}的ICD10编码是什么？", "{s}的ICD-10代码是多少？", "{s}在ICD10中的编号是？"],
              ["{s}的国际疾病分类编码是多少？", "查一下{s}的ICD10码。"]),
    "上位关系": (["{s}的上位疾病是什么？", "{s}属于哪一类疾病？", "{s}的上位关系是什么？"],
             ["{s}归属于哪个更大的疾病类别？", "{s}是哪种疾病的一种？"]),
    "常见发病部位": (["{s}常发生在哪个部位？", "{s}的常见发病部位是哪里？", "{s}一般长在哪里？"],
               ["{s}好发于身体哪个部位？", "{s}多见于什么部位？"]),
    "多发群体": (["{s}多发于哪些人群？", "{s}的多发群体是什么？", "什么人容易得{s}？"],
             ["哪类人群是{s}的高发人群？", "{s}好发于什么人？"]),
    "常见病因": (["{s}的常见病因是什么？", "{s}是怎么引起的？", "什么原因会导致{s}？"],
             ["{s}的病因通常是什么？", "引起{s}的常见原因有哪些？"]),
    "别称": (["{s}的别称是什么？", "{s}又叫什么？", "{s}还有什么别名？"],
           ["{s}也被称为什么？", "{s}的另一个名字是什么？"]),
    "传染性": (["{s}有传染性吗？", "{s}会传染吗？", "{s}是否具有传染性？"],
            ["{s}会不会传染给别人？", "请问{s}传染吗？"]),
    "传播途径": (["{s}的传播途径是什么？", "{s}是怎么传播的？", "{s}通过什么途径传染？"],
             ["{s}经由什么方式传播？", "{s}靠什么传给人？"]),
    "标准住院时间": (["{s}的标准住院时间是多久？", "{s}一般要住院几天？", "{s}需要住院多长时间？"],
               ["治疗{s}通常住院多少天？", "{s}的住院天数标准是多少？"]),
    # herbs and other materia medica
    "界": (["{s}属于哪个界？", "{s}在生物分类上是什么界？", "{s}是植物界还是动物界？"],
          ["{s}在分类学上归于哪一界？", "{s}所属的界是什么？"]),
    "门": (["{s}属于哪个门？", "{s}在生物分类上是什么门？", "{s}的分类门是什么？"],
          ["{s}在分类学上归于哪一门？", "{s}所属的门是什么？"]),
    "纲": (["{s}属于哪个纲？", "{s}在生物分类上是什么纲？", "{s}的分类纲是什么？"],
          ["{s}在分类学上归于哪一纲？", "{s}所属的纲是什么？"]),
    "目": (["{s}属于哪个目？", "{s}在生物分类上是什么目？", "{s}的分类目是什么？"],
          ["{s}在分类学上归于哪一目？", "{s}所属的目是什么？"]),
    "科": (["{s}是哪个科的生物？", "{s}属于什么科？", "{s}在生物分类上是什么科？"],
          ["{s}在分类学上归于哪一科？", "{s}所属的科是什么？"]),
    "属": (["{s}是哪个属的？", "{s}属于什么属？", "{s}在生物分类上是什么属？"],
          ["{s}在分类学上归于哪一属？", "{s}所属的属是什么？"]),
    "种": (["{s}的物种是什么？", "{s}来源于哪个物种？", "{s}的原物种叫什么？"],
          ["{s}的基原物种是什么？", "{s}是从什么生物来的？"]),
    "入药部位": (["{s}的入药部位是什么？", "{s}用哪个部位入药？", "{s}取什么部位做药？"],
             ["{s}以什么部位入药？", "{s}药用的是哪个部分？"]),
    "毒性": (["{s}有毒吗？", "{s}的毒性如何？", "{s}是否有毒性？"],
           ["{s}有没有毒？", "请问{s}的毒性大小？"]),
    "采收时间": (["{s}什么时候采收？", "{s}的采收时间是什么时候？", "{s}在哪个季节采？"],
             ["{s}一般何时采集？", "{s}宜在什么时节采收？"]),
    "用量": (["{s}的用量是多少？", "{s}一般用多少克？", "{s}入药用多少？"],
           ["{s}的常用剂量是多少？", "{s}每次该用多少量？"]),
    "分布区域": (["{s}分布在哪里？", "{s}的分布区域是哪里？", "哪里有{s}？"],
             ["{s}主要产于哪些地区？", "{s}在什么地方有分布？"]),
    "功效": (["{s}有什么功效？", "{s}的功效是什么？", "{s}有什么作用？"],
           ["{s}具有哪些功效？", "{s}能起到什么作用？"]),
    "出处": (["{s}出自哪本书？", "{s}的出处是什么？", "{s}最早记载于哪里？"],
           ["{s}出自哪部典籍？", "{s}这个方子来源于哪里？"]),
    # examinations
    "所属分类": (["{s}这项检查属于哪个分类？", "{s}的所属分类是什么？", "{s}归在哪类检查里？"],
             ["{s}属于哪一类检查项目？", "{s}是哪个类别的检查？"]),
}

#: templates of a predicate without its own (``{p}``: the predicate's name)
GENERIC = (["{s}的{p}是什么？", "请问{s}的{p}？", "{s}的{p}是？"],
           ["关于{s}，它的{p}是什么？", "你知道{s}的{p}吗？"])

SPLITS = ("test", "dev", "train")  # the order in which splits take subjects
KB_SCOPES = ("subjects", "predicates", "all")



def templates_for(predicate):
    """``(train templates, eval templates)`` of ``predicate``, each with only ``{s}`` left."""
    if predicate in TEMPLATES:
        return TEMPLATES[predicate]
    return tuple([t.replace("{p}", predicate) for t in group] for group in GENERIC)


def read_knowledge(path):
    """``(subject, predicate, object)`` triples of a ``Knowledge.txt`` (fields stripped,
    blank lines skipped, duplicates kept once, file order)."""
    triples = {}
    for _, _, triple in read_triples(path):
        triples.setdefault(triple, None)
    if not triples:
        raise DataError(f"{path}: no triples")
    return list(triples)


def key_text(text):
    """What the runner's lower-casing WordPiece tokenizer cannot tell apart: case, accents
    and whitespace are dropped."""
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in text if unicodedata.category(c) != "Mn" and not c.isspace())


def eligible_pairs(triples, predicates, max_subject_chars=40):
    """``{subject: {predicate: object}}`` of the askable pairs (see the module rules)."""
    wanted = set(predicates)
    objects, owners = {}, {}
    for s, p, o in triples:
        if p in wanted:
            objects.setdefault((s, p), set()).add(o)
            owners.setdefault((key_text(s), p), set()).add(s)
    pairs = {}
    for (s, p), found in objects.items():
        (o,) = found if len(found) == 1 else ("",)
        if (o and s and len(s) <= max_subject_chars and "|||" not in s
                and len(owners[(key_text(s), p)]) == 1):
            pairs.setdefault(s, {})[p] = o
    return pairs


def split_pairs(pairs, sizes, per_subject, rng):
    """``{split: [(s, p, o), ...]}`` with ``sizes[split]`` pairs each, subject-disjoint."""
    subjects = sorted(pairs)
    rng.shuffle(subjects)
    out, at = {}, 0
    for split in SPLITS:
        chosen = []
        while len(chosen) < sizes[split]:
            if at == len(subjects):
                need = sum(sizes.values())
                raise DataError(
                    f"asked for {need} questions ({', '.join(f'{k} {sizes[k]}' for k in SPLITS)})"
                    f" but the eligible pairs of {len(subjects)} subjects, at most "
                    f"{per_subject} per subject, give only "
                    f"{sum(min(len(v), per_subject) for v in pairs.values())}")
            s = subjects[at]
            at += 1
            preds = sorted(pairs[s])
            take = min(per_subject, len(preds), sizes[split] - len(chosen))
            chosen += [(s, p, pairs[s][p]) for p in sorted(rng.sample(preds, take))]
        out[split] = chosen
    return out


def make_questions(split_triples, split, rng):
    """KgCLUE rows ``{"id", "question", "answer"}`` (shuffled) from ``(s, p, o)`` triples."""
    which = 0 if split == "train" else 1
    rows = [(rng.choice(templates_for(p)[which]).format(s=s), SEPARATOR.join((s, p, o)))
            for s, p, o in split_triples]
    rng.shuffle(rows)
    return [{"id": i, "question": q, "answer": a} for i, (q, a) in enumerate(rows)]


def knowledge_subset(triples, subjects, predicates, scope):
    """The triples the runner loads (``scope``: one of :data:`KB_SCOPES`)."""
    if scope not in KB_SCOPES:
        raise ValueError(f"kb scope must be one of {KB_SCOPES}, found {scope!r}")
    if scope == "all":
        return list(triples)
    predicates = set(predicates)
    if scope == "predicates":
        return [t for t in triples if t[1] in predicates]
    subjects = set(subjects)
    return [t for t in triples if t[0] in subjects and t[1] in predicates]


def generate(triples, train, dev, test, seed=0, predicates=None, per_subject=2,
             kb="subjects", max_subject_chars=40):
    """Everything :func:`write` saves: ``{"train", "dev", "test": rows, "knowledge": triples,
    "meta": {...}}``. Deterministic given the arguments."""
    for name, value in (("train", train), ("dev", dev), ("test", test)):
        if value < 0:
            raise ValueError(f"--{name} must be >= 0, found {value}")
    if per_subject < 1:
        raise ValueError(f"--per-subject must be >= 1, found {per_subject}")
    if kb not in KB_SCOPES:
        raise ValueError(f"kb scope must be one of {KB_SCOPES}, found {kb!r}")
    predicates = list(TEMPLATES) if predicates is None else list(dict.fromkeys(predicates))
    present = {t[1] for t in triples}
    missing = [p for p in predicates if p not in present]
    if missing:
        raise DataError(f"predicates {missing} do not occur in the knowledge base")
    rng = random.Random(seed)
    pairs = eligible_pairs(triples, predicates, max_subject_chars)
    chosen = split_pairs(pairs, {"train": train, "dev": dev, "test": test}, per_subject, rng)
    rows = {split: make_questions(chosen[split], split, rng) for split in SPLITS}
    used = {s for split in SPLITS for s, _, _ in chosen[split]}
    knowledge = knowledge_subset(triples, used, predicates, kb)
    meta = {
        "seed": seed, "per_subject": per_subject, "kb": kb,
        "max_subject_chars": max_subject_chars,
        "questions": {split: len(rows[split]) for split in SPLITS},
        "subjects": {split: len({s for s, _, _ in chosen[split]}) for split in SPLITS},
        "eligible": {"pairs": sum(map(len, pairs.values())), "subjects": len(pairs)},
        "knowledge": {"triples": len(knowledge), "subjects": len({t[0] for t in knowledge}),
                      "predicates": len({t[1] for t in knowledge})},
        "predicate_counts": {split: dict(Counter(p for _, p, _ in chosen[split]).most_common())
                             for split in SPLITS},
        "templates": {p: {"train": templates_for(p)[0], "eval": templates_for(p)[1]}
                      for p in predicates},
    }
    return dict(rows, knowledge=knowledge, meta=meta)


def write(out, result):
    """Write the KgCLUE directory ``out`` (see the module docstring)."""
    os.makedirs(out, exist_ok=True)

    def dump(name, rows):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    dump("train.json", result["train"])
    dump("dev.json", result["dev"])
    dump("test.json", [{"id": r["id"], "question": r["question"]} for r in result["test"]])
    dump("test_public.json", result["test"])
    with open(os.path.join(out, "Knowledge.txt"), "w", encoding="utf-8") as f:
        f.writelines("\t".join(t) + "\n" for t in result["knowledge"])
    with open(os.path.join(out, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(result["meta"], f, ensure_ascii=False, indent=1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--knowledge", required=True, help="subject<TAB>predicate<TAB>object file")
    p.add_argument("--out", required=True, help="output KgCLUE directory")
    p.add_argument("--train", type=int, default=20000, help="train questions")
    p.add_argument("--dev", type=int, default=2000, help="dev questions")
    p.add_argument("--test", type=int, default=2000, help="test questions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-subject", type=int, default=2,
                   help="at most this many questions per subject")
    p.add_argument("--predicates", default=None,
                   help="comma-separated predicates (default: those with templates)")
    p.add_argument("--kb", choices=KB_SCOPES, default="subjects",
                   help="which triples go into the output Knowledge.txt")
    p.add_argument("--max-subject-chars", type=int, default=40)
    args = p.parse_args(argv)
    predicates = None
    if args.predicates:
        predicates = [x.strip() for x in args.predicates.split(",") if x.strip()]
    try:
        result = generate(read_knowledge(args.knowledge), args.train, args.dev, args.test,
                          seed=args.seed, predicates=predicates, per_subject=args.per_subject,
                          kb=args.kb, max_subject_chars=args.max_subject_chars)
    except ValueError as e:  # DataError included
        sys.exit(f"error: {e}")
    write(args.out, result)
    m = result["meta"]
    print(f"wrote {args.out}: questions {m['questions']}, subjects {m['subjects']}, "
          f"knowledge {m['knowledge']['triples']} triples "
          f"(eligible {m['eligible']['pairs']} pairs of {m['eligible']['subjects']} subjects)")
    return result


if __name__ == "__main__":
    main()
