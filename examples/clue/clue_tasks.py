"""The eleven CLUE 1.1 tasks as small descriptions on top of ``clue_lib``.

Facts (files, fields, label sets, input construction, hyper-parameters) follow the
CLUE 1.1 distribution and bojone's CLUE-bert4keras baselines; see README.md.
"""
import re

import numpy as np

from clue_lib import (
    json_records,
    ClassificationTask,
    MultipleChoiceTask,
    NERTask,
    SpanMRCTask,
    Where,
    assignment,
    find_file,
    require,
    write_json,
)
from common import read_json, write_json_lines

from bert4keras3.snippets import truncate_sequences

NLI_LABELS = ("entailment", "neutral", "contradiction")


class AFQMC(ClassificationTask):
    """Ant Financial question matching: do two questions mean the same (``0`` / ``1``)?"""

    name = "afqmc"
    labels = ("0", "1")
    text_fields = ("sentence1", "sentence2")


class TNEWS(ClassificationTask):
    """Toutiao news title classification (15 classes, ids from ``labels.json``)."""

    name = "tnews"
    labels = ("100", "101", "102", "103", "104", "106", "107", "108", "109", "110", "112",
              "113", "114", "115", "116")
    label_file = "labels.json"
    submission_name = "tnews11_predict.json"


class IFLYTEK(ClassificationTask):
    """App description classification (119 classes ``0``..``118``, ``labels.json``)."""

    name = "iflytek"
    labels = tuple(str(i) for i in range(119))
    label_file = "labels.json"


class CMNLI(ClassificationTask):
    """Chinese MNLI; records labelled ``-`` (no annotator agreement) are skipped."""

    name = "cmnli"
    labels = NLI_LABELS
    skip_labels = ("-",)
    text_fields = ("sentence1", "sentence2")


class OCNLI(CMNLI):
    """Original Chinese NLI (the 50k training file)."""

    name = "ocnli"
    files = {"train": ("train.50k.json", "train.json"), "dev": ("dev.json",),
             "test": ("test.json",)}
    submission_name = "ocnli_50k_predict.json"


class CLUEWSC(ClassificationTask):
    """CLUEWSC2020 pronoun resolution as text classification: the noun (span1) is wrapped
    in ``_..._`` and the pronoun (span2) in ``[...]`` (bojone's construction)."""

    name = "wsc"
    labels = ("false", "true")
    epochs = 30
    submission_name = "cluewsc11_predict.json"

    def _span(self, text, target, which, where):
        span = require(target, where, f"{which}_text", kind=str)
        start = require(target, where, f"{which}_index", kind=int)
        if text[start:start + len(span)] != span:  # a shifted index: take the nearest match
            found = [m.start() for m in re.finditer(re.escape(span), text)]
            if not found:
                raise where.error(f"{which}_text {span!r} does not occur in the text")
            start = min(found, key=lambda s: abs(s - start))
        return start, start + len(span)

    def text(self, record, where):
        text, target = require(record, where, "text", "target")
        if not isinstance(text, str) or not isinstance(target, dict):
            raise where.error("expected 'text' (string) and 'target' (object)")
        s1, e1 = self._span(text, target, "span1", where)
        s2, e2 = self._span(text, target, "span2", where)
        if s1 < s2:
            marked = (text[:s1] + "_" + text[s1:e1] + "_" + text[e1:s2] + "[" + text[s2:e2]
                      + "]" + text[e2:])
        else:
            marked = (text[:s2] + "[" + text[s2:e2] + "]" + text[e2:s1] + "_" + text[s1:e1]
                      + "_" + text[e1:])
        return marked, None


class CSL(ClassificationTask):
    """Keyword recognition: are all keywords real for the abstract? Keywords joined by
    ``；`` are the first text, the abstract the second."""

    name = "csl"
    labels = ("0", "1")

    def text(self, record, where):
        keywords, abstract = require(record, where, "keyword", "abst")
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            raise where.error(f"'keyword' must be a list of strings, found {keywords!r}")
        if not isinstance(abstract, str):
            raise where.error(f"'abst' must be a string, found {abstract!r}")
        return "；".join(keywords), abstract


class CLUENER(NERTask):
    """CLUENER2020 fine-grained NER (10 types), GlobalPointer by default."""

    name = "cluener"
    types = ("address", "book", "company", "game", "government", "movie", "name",
             "organization", "position", "scene")
    maxlen = 256


class CMRC2018(SpanMRCTask):
    """CMRC 2018 span extraction (SQuAD layout); metric EM (F1 reported too)."""

    name = "cmrc2018"


class C3(MultipleChoiceTask):
    """C3 multiple-choice reading comprehension: dialogue (``d-``) and mixed-genre
    (``m-``) files, up to 4 choices (padded with ``无效答案``). Each choice is
    ``[CLS] passage [SEP] question [SEP] choice [SEP]``, the passage's turns joined by
    ``||``."""

    name = "c3"
    files = {"train": ("d-train.json", "m-train.json"), "dev": ("d-dev.json", "m-dev.json"),
             "test": ("test.json", "test1.1.json")}
    maxlen = 512
    batch_size = 4
    grad_accum = 4
    choices = 4
    filler = "无效答案"
    submission_name = "c311_predict.json"

    def load(self, data_dir, split, limit=None):
        if split == "test":
            paths = [find_file(data_dir, self.files["test"], self.name)]
        else:
            paths = [find_file(data_dir, (name,), self.name) for name in self.files[split]]
        examples = []
        for path in paths:
            data = read_json(path, list)
            for i, item in enumerate(data):
                where = Where(path, keys=[i])
                if not (isinstance(item, list) and len(item) >= 2 and isinstance(item[0], list)
                        and isinstance(item[1], list)):
                    raise where.error("expected [[passage lines], [questions], id]")
                passage = "||".join(str(t) for t in item[0])
                for j, qa in enumerate(item[1]):
                    if limit is not None and len(examples) >= limit:
                        return examples
                    q_where = Where(path, keys=[i, 1, j])
                    question, choice = require(qa, q_where, "question", "choice")
                    if not isinstance(choice, list) or not 1 <= len(choice) <= self.choices:
                        raise q_where.error(f"'choice' must be a list of 1..{self.choices} "
                                            f"strings, found {choice!r}")
                    choice = [str(c) for c in choice]
                    example = {"passage": passage, "question": str(question),
                               "choices": choice + [self.filler] * (self.choices - len(choice)),
                               "real_choices": len(choice)}
                    if split == "test":
                        example["id"] = require(qa, q_where, "id")
                    else:
                        answer = require(qa, q_where, "answer")
                        if answer not in choice:
                            raise q_where.error(f"unknown label: answer {answer!r} is not one "
                                                f"of the choices {choice}")
                        example["label"] = choice.index(answer)
                    examples.append(example)
        return examples

    def size(self, example):
        return len(example["passage"]) + len(example["question"])

    def sequences(self, example):
        tok = self.tokenizer
        out = []
        for choice in example["choices"]:
            p_ids = tok.encode(example["passage"])[0]
            q_ids = tok.encode(example["question"])[0][1:]
            c_ids = tok.encode(choice)[0][1:]
            # drop tokens before the final [SEP] of the longest part until all fit
            truncate_sequences(self.maxlen, -2, c_ids, q_ids, p_ids)
            out.append((p_ids + q_ids + c_ids, [0] * len(p_ids) + [1] * (len(q_ids) + len(c_ids))))
        return out

    def write(self, path, examples, predictions):
        write_json_lines(path, [{"id": e["id"], "label": str(p)}
                                for e, p in zip(examples, predictions)])


IDIOM_TAG = re.compile(r"#idiom\d+#")


class CHID(MultipleChoiceTask):
    """ChID idiom cloze: each blank is scored against the line's candidates with
    ``[CLS] idiom [SEP] left [unused1] right [SEP]`` (other blanks as four ``[MASK]``,
    context trimmed symmetrically around the blank); the blanks of a line get distinct
    idioms by a maximum-likelihood assignment (Hungarian algorithm)."""

    name = "chid"
    files = {"train": ("train.json",), "dev": ("dev.json",), "test": ("test.json", "test1.1.json")}
    answer_files = {"train": "train_answer.json", "dev": "dev_answer.json",
                    "labeled_test": "test_answer.json"}
    maxlen = 64
    batch_size = 12
    epochs = 5
    grad_accum = 2
    choices = None  # set from the data (10 in CLUE)
    submission_name = "chid11_predict.json"

    def load(self, data_dir, split, limit=None):
        path = self.path(data_dir, split)
        answers, answer_path = None, None
        if split != "test":
            answer_path = find_file(data_dir, (self.answer_files[split],), self.name)
            answers = read_json(answer_path, dict)
        examples, lines = [], 0
        for where, record in json_records(path):
            if limit is not None and lines >= limit:
                break
            candidates, content = require(record, where, "candidates", "content", kind=list)
            if not candidates or not all(isinstance(c, str) for c in candidates):
                raise where.error("'candidates' must be a non-empty list of strings")
            if self.choices is None:
                self.choices = len(candidates)
            elif len(candidates) != self.choices:
                raise where.error(f"expected {self.choices} candidates (as in the first "
                                  f"line read), found {len(candidates)}")
            for passage in content:
                if not isinstance(passage, str):
                    raise where.error("'content' must be a list of strings")
                pieces = IDIOM_TAG.split(passage)
                for k, tag in enumerate(IDIOM_TAG.findall(passage)):
                    example = {"group": lines, "tag": tag, "pieces": pieces, "blank": k,
                               "candidates": candidates}
                    if answers is not None:
                        if tag not in answers:
                            raise where.error(f"blank {tag} has no answer in {answer_path}")
                        label = answers[tag]
                        if (isinstance(label, bool) or not isinstance(label, int)
                                or not 0 <= label < len(candidates)):
                            raise Where(answer_path, keys=[tag]).error(
                                f"unknown label {label!r} for {tag}; expected a candidate "
                                f"index 0..{len(candidates) - 1}")
                        example["label"] = label
                    examples.append(example)
            lines += 1
        return examples

    def setup(self, tokenizer, encoder, args):
        super().setup(tokenizer, encoder, args)
        vocab = tokenizer.token_dict
        self.marker = [vocab["[unused1]"]] if "[unused1]" in vocab else [tokenizer._token_mask_id]
        self.blank = [tokenizer._token_mask_id] * 4
        self._idioms = {}

    def size(self, example):
        return sum(len(p) for p in example["pieces"])

    def _idiom_ids(self, idiom):
        if idiom not in self._idioms:
            self._idioms[idiom] = self.tokenizer.encode(idiom)[0]
        return self._idioms[idiom]

    def sequences(self, example):
        tok = self.tokenizer
        pieces = [tok.encode(p)[0][1:-1] for p in example["pieces"]]
        k = example["blank"]
        left, right = [], []
        for i, ids in enumerate(pieces[:k + 1]):
            left += (self.blank if i else []) + ids
        for i, ids in enumerate(pieces[k + 1:]):
            right += (self.blank if i else []) + ids
        idioms = [self._idiom_ids(c) for c in example["candidates"]]
        budget = max(self.maxlen - max(len(i) for i in idioms) - 2, 2)
        keep_left = min(len(left), max(budget // 2, budget - len(right)))
        keep_right = min(len(right), budget - keep_left)
        context = left[len(left) - keep_left:] + self.marker + right[:keep_right] \
            + [tok._token_end_id]
        return [(ids + context, [0] * len(ids) + [1] * len(context)) for ids in idioms]

    def combine(self, examples, features, results):
        predictions = [0] * len(examples)
        groups = {}
        for index, example in enumerate(examples):
            groups.setdefault(example["group"], []).append(index)
        for members in groups.values():
            logits = np.stack([results[i] for i in members])
            logp = logits - logits.max(-1, keepdims=True)
            logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
            if len(members) <= logp.shape[1]:
                chosen = assignment(logp)
            else:
                chosen = logp.argmax(-1)
            for i, c in zip(members, chosen):
                predictions[i] = int(c)
        return predictions

    def write(self, path, examples, predictions):
        write_json(path, {e["tag"]: p for e, p in zip(examples, predictions)})


TASKS = {cls.name: cls for cls in (AFQMC, TNEWS, IFLYTEK, CMNLI, OCNLI, CLUEWSC, CSL, CLUENER,
                                   CMRC2018, C3, CHID)}
