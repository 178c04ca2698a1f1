"""examples/metrics.py against cases computed by hand (the arithmetic is in the comments)."""
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples"))
from metrics import (average_ranks, bleu, char_f1, exact_match, lcs_length,  # noqa: E402
                     rouge_l, rouge_n, spearman)


def test_rouge_n():
    # hyp 我爱北京 / ref 我爱上海: unigrams 2 of 4 each -> P = R = 0.5 -> F1 0.5
    assert rouge_n("我爱北京", "我爱上海", 1) == pytest.approx(0.5)
    # bigrams: 我爱 shared of 3 and 3 -> 1/3
    assert rouge_n("我爱北京", "我爱上海", 2) == pytest.approx(1 / 3)
    # clipping: hyp 的的的 vs ref 的人: overlap min(3,1)=1, P=1/3, R=1/2 -> F1 = 0.4
    assert rouge_n("的的的", "的人", 1) == pytest.approx(0.4)
    assert rouge_n("", "的人", 1) == 0.0 and rouge_n("甲", "乙", 1) == 0.0


def test_rouge_l():
    # LCS(ABCBDAB, BDCABA) = 4 (BCBA) -> P = 4/7, R = 4/6 -> F1 = 2*4/(7+6) = 8/13
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    assert rouge_l("ABCBDAB", "BDCABA") == pytest.approx(8 / 13)
    assert rouge_l("abc", "abc") == 1.0 and rouge_l("", "abc") == 0.0


def test_bleu():
    ref = list("abcdefgh")
    assert bleu(ref, [ref]) == pytest.approx(1.0)
    # hyp abcdxyzw (8 tokens): matches 4/8, 3/7, 2/6, 1/5, no brevity penalty
    expected = math.exp((math.log(4 / 8) + math.log(3 / 7) + math.log(2 / 6)
                         + math.log(1 / 5)) / 4)
    assert bleu("abcdxyzw", [ref]) == pytest.approx(expected)
    # hyp abxy: 2/4, 1/3, 0 -> 0.1/2, 0 -> 0.1/1; closest ref length 8 -> BP = e^(1-8/4)
    expected = math.exp(1 - 2) * math.exp(
        (math.log(2 / 4) + math.log(1 / 3) + math.log(0.1 / 2) + math.log(0.1 / 1)) / 4)
    assert bleu("abxy", [ref]) == pytest.approx(expected)
    # two references: the closer length (4 vs 8) removes the penalty, counts clip per ref max
    assert bleu("abxy", [ref, list("abzz")]) == pytest.approx(
        math.exp((math.log(2 / 4) + math.log(1 / 3) + math.log(0.1 / 2)
                  + math.log(0.1 / 1)) / 4))
    assert bleu("xyz", [ref]) == 0.0  # no unigram match
    assert bleu("", [ref]) == 0.0


def test_spearman_and_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # x ranks 1,2,3,4,5; y = [2,1,4,3,5] -> d^2 = 1+1+1+1+0 = 4 -> 1 - 6*4/(5*24) = 0.8
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert list(average_ranks([10, 20, 20, 30])) == [1.0, 2.5, 2.5, 4.0]
    # with ties: x ranks [1, 2.5, 2.5, 4], y ranks [1,2,3,4]: centred x [-1.5,0,0,1.5],
    # y [-1.5,-.5,.5,1.5]: cov 4.5, |x| = sqrt(4.5), |y| = sqrt(5) -> 4.5/sqrt(22.5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2], [1, 2, 3])


def test_exact_match_and_char_f1():
    assert exact_match("高 血压", "高血压") == 1.0 and exact_match("高血压", "低血压") == 0.0
    # 高血压 vs 低血压: overlap 血压 = 2 of 3 and 3 -> F1 2/3
    assert char_f1("高血压", "低血压") == pytest.approx(2 / 3)
    assert char_f1("", "低血压") == 0.0
