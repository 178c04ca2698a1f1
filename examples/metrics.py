"""Evaluation metrics of the seq2seq, QA and sentence-embedding examples (NumPy only).

* ``rouge_n(hyp, ref, n)`` / ``rouge_l(hyp, ref)``: ROUGE-N and ROUGE-L F1 of one pair of
  token sequences (Lin, 2004; F1 as the ``rouge`` package reports ``f``);
* ``bleu(hyp, refs, max_n=4)``: sentence BLEU (Papineni et al., 2002) with uniform
  weights, the brevity penalty and Chen & Cherry's smoothing "method 1" (an n-gram order
  with no match counts ``epsilon / total`` instead of 0), the setting bert4keras'
  autotitle scripts use through NLTK's ``sentence_bleu``;
* ``spearman(x, y)``: Spearman's rank correlation, ties given their average rank;
* ``exact_match(pred, gold)`` / ``char_f1(pred, gold)``: QA answer scores over characters.

Chinese text is scored per character: pass ``list(text)`` (what bert4keras does with
``" ".join(text)``). Every function is checked against hand-computed cases in
``tests/test_metrics.py``.
"""
import collections
import math

import numpy as np


def _ngrams(tokens, n):
    return collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _f1(overlap, hyp_total, ref_total):
    if overlap == 0 or hyp_total == 0 or ref_total == 0:
        return 0.0
    precision, recall = overlap / hyp_total, overlap / ref_total
    return 2 * precision * recall / (precision + recall)


def rouge_n(hyp, ref, n=1):
    """ROUGE-N F1: clipped n-gram overlap between ``hyp`` and ``ref`` (token lists)."""
    h, r = _ngrams(list(hyp), n), _ngrams(list(ref), n)
    overlap = sum((h & r).values())
    return _f1(overlap, sum(h.values()), sum(r.values()))


def lcs_length(a, b):
    """Length of the longest common subsequence of two sequences."""
    a, b = list(a), list(b)
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hyp, ref):
    """ROUGE-L F1: the longest common subsequence over the two lengths."""
    return _f1(lcs_length(hyp, ref), len(hyp), len(ref))


def bleu(hyp, refs, max_n=4, epsilon=0.1):
    """Sentence BLEU of ``hyp`` against the list ``refs`` (smoothing method 1).

    As NLTK's ``sentence_bleu(refs, hyp, smoothing_function=SmoothingFunction().method1)``:
    0 without any unigram match; an order with no match scores ``epsilon / total`` (total
    at least 1, so a hypothesis shorter than n still gets ``epsilon``).
    """
    hyp = list(hyp)
    refs = [list(r) for r in refs]
    if not hyp:
        return 0.0
    log_sum = 0.0
    for n in range(1, max_n + 1):
        counts = _ngrams(hyp, n)
        total = max(1, sum(counts.values()))
        best = collections.Counter()
        for r in refs:
            best |= _ngrams(r, n)
        matches = sum((counts & best).values())
        if n == 1 and matches == 0:
            return 0.0
        log_sum += math.log((matches if matches else epsilon) / total)
    # brevity penalty against the reference length closest to the hypothesis length
    closest = min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
    penalty = 1.0 if len(hyp) > closest else math.exp(1 - closest / len(hyp))
    return penalty * math.exp(log_sum / max_n)


def average_ranks(values):
    """Ranks 1..n of ``values``; tied values share the mean of their ranks."""
    values = np.asarray(values, dtype="float64")
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype="float64")
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[order[j + 1]] == values[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y):
    """Spearman's rho: the Pearson correlation of the average ranks of ``x`` and ``y``."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman needs two sequences of equal length >= 2; found "
                         f"{len(x)} and {len(y)}")
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx ** 2).sum() * (ry ** 2).sum()))
    return float((rx * ry).sum() / denominator) if denominator else 0.0


def exact_match(pred, gold):
    """1.0 when the answers are identical after stripping whitespace, else 0.0."""
    return float("".join(str(pred).split()) == "".join(str(gold).split()))


def char_f1(pred, gold):
    """Character-overlap F1 of two answers (whitespace ignored; KgCLUE / CMRC style)."""
    p, g = "".join(str(pred).split()), "".join(str(gold).split())
    overlap = sum((collections.Counter(p) & collections.Counter(g)).values())
    return _f1(overlap, len(p), len(g))
