"""Sentence-pair readers (ATEC, BQ, LCQMC, PAWSX, STS-B) and the CMeKG alias-pair builder.

The five Chinese tasks of bojone's BERT-whitening / SimCSE / CoSENT evaluations are
distributed (``senteval_cn``) as ``TASK/TASK.{train,valid,test}.data``, one pair a line:
``text1<TAB>text2<TAB>label``. Labels are 0/1 for ATEC, BQ, LCQMC and PAWSX and a
similarity score 0..5 for STS-B. :func:`read_pairs` also takes the layouts the raw
releases use: a leading id column (``id<TAB>text1<TAB>text2<TAB>label``, ATEC's and
PAWS-X's), PAWS-X's header line (``id sentence1 sentence2 label``) and CNSD STS-B's
``id||text1||text2||score``. Every malformed line raises :class:`DataError` naming the
file and line (or is skipped and counted with ``skip_malformed=True``).

:func:`build_cmekg_pairs` turns CMeKG's ``subject<TAB>predicate<TAB>object`` triples into
an alias-pair set: positives (a name, one of its aliases), negatives (the name, an alias of
another name), split by subject with a fixed seed, written in the LCQMC layout.
"""
import collections
import json
import os
import random
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))

from common import DataError  # noqa: E402

__all__ = ["TASKS", "DataError", "infer_task", "read_pairs", "read_triples",
           "build_cmekg_pairs", "write_pairs", "ZH_ALIAS_PREDICATES", "EN_NAME_PREDICATES"]

# task -> (description of the label, check(label) -> bool)
TASKS = {
    "atec": ("0 or 1", lambda y: y in (0.0, 1.0)),
    "bq": ("0 or 1", lambda y: y in (0.0, 1.0)),
    "lcqmc": ("0 or 1", lambda y: y in (0.0, 1.0)),
    "pawsx": ("0 or 1", lambda y: y in (0.0, 1.0)),
    "stsb": ("a score in [0, 5]", lambda y: 0.0 <= y <= 5.0),
    "pairs": ("a number", lambda y: y == y),  # generic pair file: any finite label
}
_NAME_HINTS = (("STS", "stsb"), ("CNSD", "stsb"), ("PAWS", "pawsx"), ("LCQMC", "lcqmc"),
               ("ATEC", "atec"), ("BQ", "bq"))
_HEADER_LABELS = ("label", "score", "similarity")


def infer_task(path):
    """The task a file belongs to, from its name (``ATEC.test.data`` -> ``atec``);
    ``pairs`` (any numeric label) when the name says nothing."""
    name = os.path.basename(path).upper()
    for hint, task in _NAME_HINTS:
        if hint in name:
            return task
    return "pairs"


def _split(line, task):
    if "\t" not in line and "||" in line and task in ("stsb", "pairs"):
        return line.split("||")
    return line.split("\t")


def read_pairs(path, task=None, limit=None, skip_malformed=False):
    """Read a sentence-pair file into ``[(text1, text2, label), ...]`` (label a float).

    Args:
        path: the file; layouts as in the module docstring.
        task: one of :data:`TASKS` (checks the labels); ``None`` infers it from the name.
        limit: keep the first ``limit`` pairs.
        skip_malformed: skip (and count on stderr) malformed lines instead of raising.

    Raises :class:`DataError` with ``path:line``, what was expected and what was found.
    """
    task = task or infer_task(path)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"pair file not found: {path}")
    wanted, check = TASKS[task]
    pairs, skipped, first = [], 0, True
    with open(path, encoding="utf-8-sig") as f:
        for number, raw in enumerate(f, 1):
            if limit is not None and len(pairs) >= limit:
                break
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = _split(line, task)
            is_first, first = first, False
            if is_first and fields[-1].strip().lower() in _HEADER_LABELS:
                continue  # PAWS-X style header
            problem = None
            if len(fields) == 4:
                fields = fields[1:]  # leading id column (ATEC, PAWS-X, CNSD STS-B)
            if len(fields) != 3:
                problem = (f"expected 'text1<TAB>text2<TAB>label' (optionally after an id "
                           f"column), found {len(fields)} field(s)")
            else:
                text1, text2, label = (x.strip() for x in fields)
                try:
                    value = float(label)
                except ValueError:
                    value = None
                if not text1 or not text2:
                    problem = "expected two non-empty texts, found an empty one"
                elif value is None or not check(value):
                    problem = f"expected a {task} label ({wanted}), found {label!r}"
            if problem:
                if skip_malformed:
                    skipped += 1
                    continue
                raise DataError(f"{path}:{number}: {problem}: {line[:80]!r}")
            pairs.append((text1, text2, value))
    if skipped:
        print(f"{path}: skipped {skipped} malformed line(s)", file=sys.stderr)
    if not pairs:
        raise DataError(f"{path}: no sentence pairs found")
    return pairs


def write_pairs(path, pairs):
    """Write ``(text1, text2, label)`` pairs in the LCQMC layout (integer labels as ints)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for a, b, y in pairs:
            y = int(y) if float(y).is_integer() else y
            f.write(f"{a}\t{b}\t{y}\n")


# ----------------------------------------------------------------------------- CMeKG
ZH_ALIAS_PREDICATES = ("别称", "又称", "同义词", "其他名称", "中文名", "中文学名")
EN_NAME_PREDICATES = ("英文名称", "英文别名", "英文别称", "外文名")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_ENGLISH = re.compile(r"[A-Za-z][A-Za-z0-9 '\-.()]*")


def read_triples(path, predicates=None):
    """``subject<TAB>predicate<TAB>object`` lines -> list of triples (blank lines skipped),
    keeping only ``predicates`` when given. A line without three fields is a DataError."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"knowledge base not found: {path}")
    keep = set(predicates) if predicates is not None else None
    triples = []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise DataError(f"{path}:{number}: expected 'subject<TAB>predicate<TAB>object', "
                                f"found {len(fields)} field(s): {line[:80]!r}")
            if keep is None or fields[1] in keep:
                triples.append(tuple(x.strip() for x in fields))
    return triples


def _zh_aliases(triples):
    """subject -> sorted aliases: objects split on ；/;, trimmed, with a CJK character,
    different from the subject."""
    names = collections.defaultdict(set)
    for s, _, o in triples:
        for alias in re.split(r"[；;]", o):
            alias = alias.strip(" ，,。")
            if alias and alias != s and _CJK.search(alias) and _CJK.search(s):
                names[s].add(alias)
    return {s: sorted(v) for s, v in names.items() if v}


def _en_names(triples):
    """subject -> sorted English names (split on , ; ；，; lower-cased; two words or more)."""
    names = collections.defaultdict(set)
    for s, _, o in triples:
        for part in re.split(r"[;；,，]", o):
            part = " ".join(part.split()).lower()
            if _ENGLISH.fullmatch(part) and len(part.split()) >= 2:
                names[s].add(part)
    return {s: sorted(v) for s, v in names.items() if len(v) >= 2}


def _pairs_for(subjects, names, lang, rng):
    """Positives and as many negatives for ``subjects`` (all in one split)."""
    positives = []
    for s in subjects:
        if lang == "zh":
            positives += [(s, a) for a in names[s]]
        else:  # two English names of one subject
            v = names[s]
            positives += [(v[i], v[j]) for i in range(len(v)) for j in range(i + 1, len(v))]
    owner = collections.defaultdict(set)  # text -> subjects it names
    for s in subjects:
        for a in names[s]:
            owner[a].add(s)
        if lang == "zh":
            owner[s].add(s)
    pool = sorted({a for s in subjects for a in names[s]})
    pairs = [(a, b, 1) for a, b in positives]
    for a, _ in positives:
        mine = owner[a]
        for _ in range(100):
            b = pool[rng.randrange(len(pool))]
            if not (owner[b] & mine):
                pairs.append((a, b, 0))
                break
    rng.shuffle(pairs)
    return pairs


def build_cmekg_pairs(kb_path, output_dir, lang="zh", seed=0, test_fraction=0.2,
                      predicates=None):
    """Build an alias-pair set from CMeKG and write ``train.txt`` / ``test.txt`` (LCQMC
    layout) and ``stats.json`` under ``output_dir``.

    ``lang="zh"``: positives ``(subject, alias)`` for the alias-like predicates
    (:data:`ZH_ALIAS_PREDICATES`); ``lang="en"``: positives are two English names of one
    subject (:data:`EN_NAME_PREDICATES`; subjects with two or more). Each positive gets one
    negative: its first text with a text naming a different subject of the same split.
    Subjects are shuffled with ``seed`` and a ``test_fraction`` of them go to test: no
    subject is in both files. Returns the statistics written to ``stats.json``.
    """
    if lang not in ("zh", "en"):
        raise ValueError(f"lang must be 'zh' or 'en', found {lang!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), found {test_fraction}")
    predicates = tuple(predicates or (ZH_ALIAS_PREDICATES if lang == "zh" else EN_NAME_PREDICATES))
    triples = read_triples(kb_path, predicates)
    names = _zh_aliases(triples) if lang == "zh" else _en_names(triples)
    subjects = sorted(names)
    if len(subjects) < 4:
        raise DataError(f"{kb_path}: found {len(subjects)} subject(s) with aliases under "
                        f"{list(predicates)}; need at least 4 to split and draw negatives")
    rng = random.Random(seed)
    rng.shuffle(subjects)
    n_test = max(2, int(round(len(subjects) * test_fraction)))
    split = {"test": sorted(subjects[:n_test]), "train": sorted(subjects[n_test:])}
    stats = {"source": kb_path, "lang": lang, "predicates": list(predicates), "seed": seed,
             "test_fraction": test_fraction, "triples_used": len(triples)}
    texts = {}
    for name in ("train", "test"):
        pairs = _pairs_for(split[name], names, lang, rng)
        write_pairs(os.path.join(output_dir, f"{name}.txt"), pairs)
        texts[name] = {t for a, b, _ in pairs for t in (a, b)}
        stats[name] = {"subjects": len(split[name]), "pairs": len(pairs),
                       "positives": sum(y for _, _, y in pairs)}
    # aliases shared by subjects of both splits (subjects themselves never are)
    stats["test_texts_also_in_train"] = len(texts["test"] & texts["train"])
    with open(os.path.join(output_dir, "stats.json"), "w", encoding="utf-8") as f:
        json.dump(stats, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return stats
