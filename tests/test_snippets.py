"""Tests for bert4keras3.snippets against independent brute-force / NumPy references."""

import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from bert4keras3 import snippets
from bert4keras3.snippets import (
    AutoRegressiveDecoder,
    DataGenerator,
    Trie,
    ViterbiDecoder,
    WorkerError,
    is_string,
    longest_common_subsequence,
    longest_common_substring,
    orthogonally_resize,
    parallel_apply,
    sequence_padding,
    text_segmentate,
    to_array,
    truncate_sequences,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def test_is_string_and_to_array():
    assert is_string("x") and not is_string(b"x") and not is_string(3)
    a = to_array([1, 2])
    assert isinstance(a, np.ndarray) and a.tolist() == [1, 2]
    a, b = to_array([1], [[2.0]])
    assert a.shape == (1,) and b.shape == (1, 1)


# ---------------------------------------------------------------------------
# sequence_padding
# ---------------------------------------------------------------------------


def _manual_pad_1d(seqs, length, value, mode):
    out = np.full((len(seqs), length), value, dtype=np.int64)
    for r, s in enumerate(seqs):
        s = list(s)[:length]
        for c, v in enumerate(s):
            out[r, c if mode == "post" else length - len(s) + c] = v
    return out


@pytest.mark.parametrize("mode", ["post", "pre"])
@pytest.mark.parametrize("length", [None, 3, 9])
def test_sequence_padding_rank1(mode, length):
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(1, 100, size=n)) for n in [5, 1, 7, 0, 3]]
    expected_len = 7 if length is None else length
    got = sequence_padding(seqs, length=length, value=-1, mode=mode)
    assert isinstance(got, np.ndarray)
    np.testing.assert_array_equal(got, _manual_pad_1d(seqs, expected_len, -1, mode))


@pytest.mark.parametrize("mode", ["post", "pre"])
def test_sequence_padding_rank2(mode):
    rng = np.random.default_rng(1)
    # [seq, features] samples, padded on the sequence axis only
    seqs = [rng.normal(size=(n, 3)) for n in [2, 4, 1]]
    got = sequence_padding(seqs, mode=mode)
    exp = np.zeros((3, 4, 3))
    for r, s in enumerate(seqs):
        for t in range(len(s)):
            exp[r, t if mode == "post" else 4 - len(s) + t] = s[t]
    np.testing.assert_array_equal(got, exp)
    # two sequence dims (e.g. [seq, seq] matrices) with explicit lengths
    mats = [rng.integers(1, 9, size=(a, b)) for a, b in [(2, 3), (4, 1), (3, 5)]]
    got = sequence_padding(mats, length=[3, 4], seq_dims=2, mode=mode, value=7)
    exp = np.full((3, 3, 4), 7)
    for r, m in enumerate(mats):
        m = m[:3, :4]
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ii = i if mode == "post" else 3 - m.shape[0] + i
                jj = j if mode == "post" else 4 - m.shape[1] + j
                exp[r, ii, jj] = m[i, j]
    np.testing.assert_array_equal(got, exp)
    # seq_dims=2 with length=None takes the maximum of each axis
    assert sequence_padding(mats, seq_dims=2).shape == (3, 4, 5)


def test_sequence_padding_errors():
    with pytest.raises(ValueError, match="mode must be 'post' or 'pre', got 'middle'"):
        sequence_padding([[1]], mode="middle")
    with pytest.raises(ValueError, match=r"trailing dimensions must agree.*\(3,\).*\(2,\)"):
        sequence_padding([np.zeros((2, 3)), np.zeros((2, 2))])
    with pytest.raises(ValueError, match="non-empty"):
        sequence_padding([])
    with pytest.raises(ValueError, match="expected 2 length"):
        sequence_padding([np.zeros((2, 2))], length=[1, 2, 3], seq_dims=2)


def test_truncate_sequences():
    a, b = list(range(10)), list(range(4))
    out = truncate_sequences(8, -1, a, b)
    assert out[0] == [0, 1, 2, 3] and out[1] == [0, 1, 2, 3]
    a, b = list(range(6)), list(range(6))
    truncate_sequences(7, [-2, 0], a, b)
    # the (first) longest list loses one item per round: a, b, a, b, a
    # a drops its second-to-last item (4, 3, 2), b its first (0, 1)
    assert a == [0, 1, 5] and b == [2, 3, 4, 5]
    assert truncate_sequences(3, -1, [], [1, 2, 3, 4]) == [[1, 2, 3]]


# ---------------------------------------------------------------------------
# text_segmentate
# ---------------------------------------------------------------------------


def test_text_segmentate_single_separator_is_greedy_packing():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n_sent = rng.integers(1, 8)
        sents = ["".join(rng.choice(list("abcdef"), size=rng.integers(1, 6))) for _ in range(n_sent)]
        text = "。".join(sents) + ("。" if rng.random() < 0.5 else "")
        maxlen = int(rng.integers(3, 15))
        got = text_segmentate(text, maxlen, seps="。")
        assert "".join(got) == text
        if len(text) <= maxlen:
            assert got == [text]
            continue
        for k, p in enumerate(got):
            # pieces are runs of whole sentences (each keeping its separator)
            assert p.endswith("。") or k == len(got) - 1
            if len(p) > maxlen:  # only a single over-long sentence may exceed maxlen
                assert "。" not in p.rstrip("。")
            if k + 1 < len(got):  # greedy (bert4keras): next sentence + one separator won't fit
                nxt = got[k + 1].split("。")[0]
                assert len(p) + len(nxt) + 1 > maxlen


def test_text_segmentate_multi_level():
    text = "aaaa，bbbb。cc，dd。eeeeeeeeeeee"
    got = text_segmentate(text, 6, seps="。，")
    assert "".join(got) == text
    assert got == ["aaaa，", "bbbb。", "cc，dd。", "eeeeeeeeeeee"]
    # strips removes characters at both ends of every piece
    assert text_segmentate("  x。y。  ", 2, seps="。", strips="。") == ["x", "y"]
    with pytest.raises(TypeError, match="expected text as str, got bytes"):
        text_segmentate(b"abc", 2)


# ---------------------------------------------------------------------------
# longest common substring / subsequence
# ---------------------------------------------------------------------------


def test_lcs_functions_vs_brute_force():
    rng = np.random.default_rng(4)
    for _ in range(150):
        s = "".join(rng.choice(list("abc"), size=rng.integers(0, 8)))
        t = "".join(rng.choice(list("abc"), size=rng.integers(0, 8)))
        # substring: all common substrings, best = longest, ties by (source end, target end)
        best = (0, (0, 0, 0, 0))
        for i1 in range(len(s) + 1):
            for i0 in range(i1):
                for j1 in range(len(t) + 1):
                    j0 = j1 - (i1 - i0)
                    if j0 >= 0 and s[i0:i1] == t[j0:j1] and i1 - i0 > best[0]:
                        best = (i1 - i0, (i0, i1, j0, j1))
        assert longest_common_substring(s, t) == best
        # subsequence: brute force over index subsets of s
        bf = 0
        for r in range(len(s) + 1):
            for idx in itertools.combinations(range(len(s)), r):
                sub = iter(t)
                if all(s[i] in sub for i in idx):
                    bf = max(bf, r)
        length, mapping = longest_common_subsequence(s, t)
        assert length == bf == len(mapping)
        for k, (i, j) in enumerate(mapping):
            assert s[i] == t[j]
            if k:
                assert i > mapping[k - 1][0] and j > mapping[k - 1][1]
    assert longest_common_subsequence([1, 2, 3], [3, 2, 1])[0] == 1


# ---------------------------------------------------------------------------
# Trie
# ---------------------------------------------------------------------------


def test_trie_vs_brute_force():
    rng = np.random.default_rng(5)
    stored = set()
    trie = Trie()
    for _ in range(40):
        seq = tuple(int(x) for x in rng.integers(0, 5, size=rng.integers(0, 5)))
        stored.add(seq)
        trie.insert(np.array(seq, dtype=np.int64) if seq else list(seq))
    trie.insert(list(next(iter(stored))))  # duplicate: no double count
    assert len(trie) == len(stored)
    assert sorted(tuple(s) for s in trie) == sorted(stored)
    all_prefixes = [p for n in range(6) for p in itertools.product(range(5), repeat=n)]
    for p in all_prefixes:
        nxt = {s[len(p)] for s in stored if len(s) > len(p) and s[: len(p)] == p}
        assert set(trie.next_ids(list(p))) == nxt
        assert len(trie.next_ids(p)) == len(nxt)
        m = trie.mask(p, 7)
        assert m.dtype == bool and m.shape == (7,)
        assert set(np.flatnonzero(m)) == nxt
        assert (list(p) in trie) == (p in stored)
        assert trie.is_prefix(p) == any(s[: len(p)] == p for s in stored)
    assert Trie([[1, 2]]).next_ids([9]) == []
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 3\)"):
        Trie([[5]]).mask([], 3)
    with pytest.raises(TypeError, match="integer token ids"):
        Trie([[1, "a"]])
    with pytest.raises(TypeError, match="sequence of ints"):
        Trie(["abc"])


# ---------------------------------------------------------------------------
# ViterbiDecoder
# ---------------------------------------------------------------------------


def test_viterbi_vs_brute_force():
    rng = np.random.default_rng(6)
    for trial in range(30):
        n_labels, length = int(rng.integers(2, 5)), int(rng.integers(1, 6))
        trans, nodes = rng.normal(size=(n_labels, n_labels)), rng.normal(size=(length, n_labels))
        starts = ends = None
        if trial % 2:
            starts = sorted(rng.choice(n_labels, size=rng.integers(1, n_labels + 1), replace=False))
            ends = sorted(rng.choice(n_labels, size=rng.integers(1, n_labels + 1), replace=False))
        best, best_path = -np.inf, None
        for path in itertools.product(range(n_labels), repeat=length):
            if starts is not None and (path[0] not in starts or path[-1] not in ends):
                continue
            sc = sum(nodes[t, y] for t, y in enumerate(path))
            sc += sum(trans[a, b] for a, b in zip(path, path[1:]))
            if sc > best:
                best, best_path = sc, path
        nodes_copy = nodes.copy()
        got = ViterbiDecoder(trans, starts, ends).decode(nodes)
        np.testing.assert_array_equal(nodes, nodes_copy)  # input not modified
        assert tuple(got.tolist()) == best_path
    with pytest.raises(ValueError, match=r"expected nodes of shape \[seq_len, 3\], got \(2, 4\)"):
        ViterbiDecoder(np.zeros((3, 3))).decode(np.zeros((2, 4)))


# ---------------------------------------------------------------------------
# AutoRegressiveDecoder on a tiny Markov model
# ---------------------------------------------------------------------------


def _markov(seed, vocab):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(vocab) * 0.7, size=vocab)


class MarkovDecoder(AutoRegressiveDecoder):
    """Next-token distribution depends only on the last token (start id = state 0)."""

    def __init__(self, probs, rtype="probas", **kwargs):
        super().__init__(**kwargs)
        self.probs = probs
        self.calls = 0
        self.rtype = rtype

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        self.calls += 1
        assert len(inputs[0]) == len(output_ids)  # inputs follow the hypotheses
        return self.probs[output_ids[:, -1]]


class MarkovLogitsDecoder(MarkovDecoder):
    @AutoRegressiveDecoder.wraps(default_rtype="logits")
    def predict(self, inputs, output_ids, states):
        return np.log(self.probs[output_ids[:, -1]]) + 3.0  # unnormalised logits


def _exhaustive_best(probs, start, end, maxlen, minlen=1, min_ends=1, temperature=1.0, allowed=None):
    """Best generated sequence by brute-force enumeration of every token sequence."""
    vocab = len(probs)
    logp = np.log(probs) / temperature
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    best, best_seq = -np.inf, None
    for n in range(1, maxlen + 1):
        for seq in itertools.product(range(vocab), repeat=n):
            ends = np.cumsum(np.array(seq) == end)
            finished = [seq[k] == end and ends[k] >= min_ends for k in range(n)]
            if any(finished[:-1]):
                continue  # decoding would have stopped earlier
            if not finished[-1] and n < maxlen:
                continue  # not a final hypothesis
            # bert4keras counts minlen on output_ids, start id included
            if any(seq[k] == end and k + 2 < minlen for k in range(n)):
                continue
            if allowed is not None and any(seq[k] not in allowed(list(seq[:k])) for k in range(n)):
                continue
            prev = (start,) + seq
            sc = sum(logp[a, b] for a, b in zip(prev, seq))
            if sc > best + 1e-12:
                best, best_seq = sc, seq
    return best_seq, best


def _score(probs, start, seq, temperature=1.0):
    logp = np.log(probs) / temperature
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    prev = (start,) + tuple(seq)
    return sum(logp[a, b] for a, b in zip(prev, seq))


@pytest.mark.parametrize("seed", range(6))
def test_beam_search_equals_exhaustive(seed):
    vocab, start, end = 4, 0, 3
    probs = _markov(seed, vocab)
    # beam == vocabulary size is exact for two steps
    dec = MarkovDecoder(probs, start_id=start, end_id=end, maxlen=2)
    got = dec.beam_search([np.array([1])], topk=vocab)
    ref, _ = _exhaustive_best(probs, start, end, maxlen=2)
    assert got[0] == start and tuple(got[1:].tolist()) == ref
    # a beam holding every hypothesis (>= vocab) is exact for longer searches,
    # with min length, several ends, temperature and logits-returning predict
    cases = [
        dict(maxlen=4), dict(maxlen=4, minlen=3), dict(maxlen=5, min_ends=2),
        dict(maxlen=4, temperature=0.7), dict(maxlen=4, temperature=1.6, logits=True),
    ]
    for case in cases:
        case = dict(case)
        cls = MarkovLogitsDecoder if case.pop("logits", False) else MarkovDecoder
        temperature = case.pop("temperature", 1.0)
        min_ends = case.pop("min_ends", 1)
        dec = cls(probs, start_id=start, end_id=end, **case)
        got = dec.beam_search([np.array([1])], topk=vocab ** case["maxlen"], temperature=temperature,
                              min_ends=min_ends)
        ref, ref_score = _exhaustive_best(probs, start, end, temperature=temperature, min_ends=min_ends,
                                          **case)
        assert got[0] == start
        # the same best score (sequences of equal score may differ: float32 search)
        np.testing.assert_allclose(_score(probs, start, got[1:], temperature), ref_score, atol=1e-6)
        seq = got[1:].tolist()
        assert len(seq) == case["maxlen"] or (seq[-1] == end and seq.count(end) == min_ends)


def test_beam_search_start_id_none_and_errors():
    probs = _markov(11, 3)

    class NoStart(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps("probas")
        def predict(self, inputs, output_ids, states):
            last = output_ids[:, -1] if output_ids.shape[1] else np.zeros(len(output_ids), int)
            return probs[last]

    got = NoStart(start_id=None, end_id=2, maxlen=3).beam_search([[5]], topk=27)
    ref, _ = _exhaustive_best(probs, 0, 2, maxlen=3)
    assert tuple(got.tolist()) == ref
    with pytest.raises(ValueError, match="topk must be a positive int, got 0"):
        NoStart(None, 2, 3).beam_search([[5]], topk=0)
    with pytest.raises(TypeError, match="allowed must be a Trie or a callable"):
        NoStart(None, 2, 3).beam_search([[5]], topk=2, allowed=[1, 2])
    with pytest.raises(ValueError, match="default_rtype must be 'probas' or 'logits'"):
        AutoRegressiveDecoder.wraps("scores")
    with pytest.raises(NotImplementedError, match="must define predict"):
        AutoRegressiveDecoder(0, 1, 3).predict([], None)


def _support(p, topk, topp):
    """Independent NumPy transcription of top-k then top-p supports."""
    idx = sorted(range(len(p)), key=lambda i: (-p[i], i))
    if topk is not None:
        idx = idx[:topk]
    q = np.array([p[i] for i in idx])
    q = q / q.sum()
    keep, mass = [], 0.0
    for i, qi in zip(idx, q):
        keep.append(i)
        mass += qi
        if topp is not None and mass >= topp - 1e-12:
            break
        if topp is None and len(keep) == len(idx):
            break
    out = np.zeros(len(p))
    out[keep] = [p[i] for i in keep]
    return out / out.sum()


@pytest.mark.parametrize("topk,topp", [(3, None), (None, 0.6), (4, 0.7)])
def test_random_sample_respects_support(topk, topp):
    vocab, start, end = 6, 0, 5
    probs = _markov(21, vocab)
    dec = MarkovDecoder(probs, start_id=start, end_id=end, maxlen=4)
    n = 3000
    samples = dec.random_sample([np.array([1])], n=n, topk=topk, topp=topp, seed=123)
    assert len(samples) == n
    firsts = np.zeros(vocab)
    for s in samples:
        assert s[0] == start and 1 <= len(s) - 1 <= 4
        for a, b in zip(s[:-1], s[1:]):
            assert _support(probs[a], topk, topp)[b] > 0, (a, b)
        assert end not in s[1:-1]
        firsts[s[1]] += 1
    expected = _support(probs[start], topk, topp) * n
    mask = expected > 0
    assert firsts[~mask].sum() == 0
    chi2 = (((firsts - expected) ** 2)[mask] / expected[mask]).sum()
    assert chi2 < 30.0, (chi2, firsts, expected)  # dof <= 5; p(chi2 > 30) < 1e-4
    again = dec.random_sample([np.array([1])], n=n, topk=topk, topp=topp, seed=123)
    assert all(np.array_equal(a, b) for a, b in zip(samples, again))


def test_random_sample_temperature_and_min_ends():
    vocab, start, end = 3, 0, 2
    probs = _markov(31, vocab)
    dec = MarkovDecoder(probs, start_id=start, end_id=end, maxlen=6)
    n = 4000
    samples = dec.random_sample([[0]], n=n, temperature=0.5, seed=0)
    target = probs[start] ** 2 / (probs[start] ** 2).sum()
    counts = np.bincount([s[1] for s in samples], minlength=vocab)
    chi2 = ((counts - target * n) ** 2 / (target * n)).sum()
    assert chi2 < 25.0, (counts, target * n)
    for s in dec.random_sample([[0]], n=50, min_ends=2, seed=1):
        ends = int((s[1:] == end).sum())
        assert ends == 2 and s[-1] == end or ends < 2 and len(s) - 1 == 6


def test_trie_constrained_decoding():
    vocab, start, end = 6, 0, 5
    probs = _markov(41, vocab)
    trie = Trie([[1, 2, end], [1, 3, 4, end], [4, end], [2, 2, 2, end], [3, 1]])
    dec = MarkovDecoder(probs, start_id=start, end_id=end, maxlen=6)
    for topk in (1, 2, 6):
        got = dec.beam_search([[0]], topk=topk, allowed=trie)
        assert got[1:].tolist() in trie
    # with a full beam the constrained search is the best sequence of the trie
    best = max(trie, key=lambda s: _score(probs, start, s))
    assert dec.beam_search([[0]], topk=vocab ** 4, allowed=trie)[1:].tolist() == best
    ref, _ = _exhaustive_best(probs, start, end, maxlen=4, allowed=trie.next_ids)
    assert list(ref) == best  # brute force agrees ([3, 1] ends without end_id)
    samples = dec.random_sample([[0]], n=300, topk=3, seed=7, allowed=trie)
    assert all(s[1:].tolist() in trie for s in samples)
    assert len({tuple(s.tolist()) for s in samples}) >= 3
    # a callable constraint: only even ids, end allowed after two tokens
    even = lambda prefix: [0, 2, 4] if len(prefix) < 2 else [end]  # noqa: E731
    for s in dec.random_sample([[0]], n=50, seed=3, allowed=even):
        assert [t % 2 for t in s[1:3]] == [0, 0] and s[3] == end
    s = dec.beam_search([[0]], topk=3, allowed=even)
    assert len(s) == 4 and s[3] == end and s[1] % 2 == 0 and s[2] % 2 == 0


def test_states_are_passed_through():
    probs = _markov(61, 3)

    class Stateful(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps("probas", use_states=True)
        def predict(self, inputs, output_ids, states):
            self.seen.append(states)
            return probs[output_ids[:, -1]], (states or 0) + 1

    dec = Stateful(start_id=0, end_id=None, maxlen=3)
    dec.seen = []
    out = dec.beam_search([[1]], topk=2)
    assert dec.seen == [None, 1, 2] and len(out) == 4

    class Broken(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps("probas", use_states=True)
        def predict(self, inputs, output_ids, states):
            return probs[output_ids[:, -1]]

    with pytest.raises(ValueError, match=r"use_states=True, so it must return \(values, states\)"):
        Broken(0, None, 2).beam_search([[1]], topk=1)


def test_batch_decode_and_last_token():
    probs = _markov(51, 4)
    dec = MarkovDecoder(probs, start_id=0, end_id=3, maxlen=3)
    out = dec.batch_decode([[[1]], [[2]]], topk=2, verbose=0)
    single = dec.beam_search([[1]], topk=2)
    assert len(out) == 2 and np.array_equal(out[0], single)
    import keras

    inp = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(7, 4)(inp)
    model = keras.Model(inp, keras.layers.Dense(7, activation="softmax")(h))
    last = dec.last_token(model)
    x = np.array([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_allclose(last.predict(x, verbose=0), model.predict(x, verbose=0)[:, -1], atol=1e-6)
    assert dec.last_token(model) is last


# ---------------------------------------------------------------------------
# DataGenerator
# ---------------------------------------------------------------------------


class PairGenerator(DataGenerator):
    def __iter__(self, random=False):
        xs, ys = [], []
        for is_end, (x, y) in self.sample(random):
            xs.append(x)
            ys.append(y)
            if len(xs) == self.batch_size or is_end:
                yield np.array(xs, dtype="float32"), np.array(ys, dtype="float32")
                xs, ys = [], []


def _dataset(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    x[:, 0] = np.arange(n)  # sample id in column 0
    y = x[:, 1:] @ np.array([[1.5], [-2.0]], dtype="float32") + 0.5
    return [(x[i], y[i]) for i in range(n)]


@pytest.mark.parametrize("random", [False, True])
@pytest.mark.parametrize("sized", [True, False])
def test_datagenerator_covers_each_sample_once(random, sized):
    data = _dataset(23)
    src = data if sized else (d for d in data)
    gen = PairGenerator(src, batch_size=5, buffer_size=7)
    if sized:
        assert len(gen) == 5
    else:
        with pytest.raises(TypeError, match="has no len"):
            len(gen)
    batches = list(gen.__iter__(random))
    ids = np.concatenate([b[0][:, 0] for b in batches]).astype(int)
    assert sorted(ids.tolist()) == list(range(23))
    assert [len(b[0]) for b in batches] == [5, 5, 5, 5, 3]
    if not random:
        assert ids.tolist() == list(range(23))
    ends = [e for e, _ in PairGenerator(data, 4).sample(random)]
    assert ends == [False] * 22 + [True]


def test_datagenerator_shuffles_and_forfit():
    np.random.seed(0)
    gen = PairGenerator(_dataset(40), batch_size=8)
    orders = [np.concatenate([b[0][:, 0] for b in gen.__iter__(True)]).tolist() for _ in range(2)]
    assert orders[0] != orders[1] and sorted(orders[0]) == list(range(40))
    it = iter(gen.forfit())  # a generator; a tf.data.Dataset on TensorFlow
    epoch_ids = [next(it)[0][:, 0] for _ in range(2 * len(gen))]
    for e in range(2):
        assert sorted(np.concatenate(epoch_ids[e * 5:(e + 1) * 5]).tolist()) == list(range(40))
    (x,) = next(iter(gen.fortest()))  # (inputs,): what Keras' predict reads as inputs alone
    assert x.shape == (8, 3)
    assert list(PairGenerator([], 4).sample()) == []
    with pytest.raises(NotImplementedError, match="must implement __iter__"):
        next(DataGenerator([1]).forfit())
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        DataGenerator([1], batch_size=0)


def test_to_pydataset_epoch_coverage_any_order():
    gen = PairGenerator(_dataset(23), batch_size=5)
    ds = gen.to_pydataset(random=True)
    assert ds.num_batches == 5
    for _ in range(2):
        order = [3, 0, 4, 1, 2, 0]  # random access and a repeated look-ahead index
        batches = {i: ds[i] for i in order}
        ids = np.concatenate([batches[i][0][:, 0] for i in range(5)]).astype(int)
        assert sorted(ids.tolist()) == list(range(23))
        assert np.array_equal(ds[0][0], batches[0][0])
        ds.on_epoch_end()
    with pytest.raises(IndexError, match="out of range"):
        ds[5]
    inf = gen.to_pydataset(infinite=True)
    assert inf.num_batches is None and len(inf[0][0]) in (3, 5)


def _tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def _fit_losses(model, data, **kw):
    hist = model.fit(data, epochs=6, verbose=0, **kw)
    return hist.history["loss"]


def test_datagenerator_trains_keras_model_with_fit():
    import keras

    data = _dataset(50)

    class Gen(PairGenerator):
        def __iter__(self, random=False):
            for x, y in super().__iter__(random):
                yield np.concatenate([np.ones_like(x[:, :1]), x[:, 1:]], 1), y

    gen = Gen(data, batch_size=8)  # 7 steps, last batch of 2
    model = _tiny_model()
    losses = _fit_losses(model, gen.forfit(), steps_per_epoch=len(gen), shuffle=False)
    assert losses[-1] < 0.5 * losses[0], losses
    model = _tiny_model()
    losses = _fit_losses(model, gen.to_pydataset())
    assert losses[-1] < 0.5 * losses[0], losses
    assert keras.backend.backend() in ("jax", "tensorflow", "torch")


def test_to_dataset_tf():
    import tensorflow as tf

    class Single(DataGenerator):
        def __iter__(self, random=False):
            for _, (n, label) in self.sample(random):
                yield list(range(1, n + 1)), label

    gen = Single([(3, 0), (1, 1), (2, 0), (5, 1)], batch_size=2)
    ds = gen.to_dataset(("int32", "int32"), ([None], []), padded_batch=True)
    seen = []
    for x, y in ds.take(4):
        assert x.shape[0] == 2 and y.shape == (2,)
        x = x.numpy()
        for row in x:  # each row is 1..n followed by zero padding
            n = int((row > 0).sum())
            assert row[:n].tolist() == list(range(1, n + 1)) and not row[n:].any()
            seen.append(n)
    assert sorted(seen) == [1, 1, 2, 2, 3, 3, 5, 5]
    named = gen.to_dataset(("int32", "int32"), ([None], []), names=("ids", "label"), padded_batch=True)
    batch = next(iter(named))
    assert set(batch) == {"ids", "label"} and batch["label"].dtype == tf.int32


# ---------------------------------------------------------------------------
# parallel_apply (worker processes run in a fresh interpreter, with a timeout)
# ---------------------------------------------------------------------------


def _run_script(body, timeout=60):
    code = "import json, os, sys, time\nsys.path.insert(0, %r)\n" % REPO + textwrap.dedent(body)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "jax")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_parallel_apply_processes_order_and_errors():
    out = _run_script(
        """
        import random
        import numpy as np
        from bert4keras3.snippets import parallel_apply, parallel_apply_generator, WorkerError

        def slow_square(x):
            time.sleep(random.random() * 0.01)
            return (x * x, os.getpid())

        def fail_on_7(x):
            if x == 7:
                raise ValueError("bad item %d" % x)
            return x

        def die_on_3(x):
            if x == 3:
                os._exit(5)
            return x

        res = {}
        r = parallel_apply(slow_square, range(60), workers=3, max_queue_size=4)
        res["ordered"] = [v for v, _ in r]
        res["pids"] = len({p for _, p in r})
        r = parallel_apply(slow_square, range(60), workers=3, max_queue_size=4, unordered=True)
        res["unordered"] = sorted(v for v, _ in r)
        got = []
        parallel_apply(lambda x: -x, iter(range(10)), 2, 2, callback=got.append)  # closure + iterator
        res["callback"] = sorted(got)
        res["gen"] = list(parallel_apply_generator(abs, [-3, 2, -1], 2, 1))
        r = parallel_apply(lambda _: int(np.random.randint(1 << 30)), range(40), 2, 2, random_seeds=[1, 2])
        res["seeded_distinct"] = len(set(r))
        try:
            parallel_apply(fail_on_7, range(30), workers=2, max_queue_size=3)
            res["error"] = None
        except WorkerError as e:
            res["error"] = [str(e).splitlines()[0], e.index, type(e.__cause__).__name__,
                            "fail_on_7" in e.remote_traceback]
        try:
            parallel_apply(die_on_3, range(10), workers=2, max_queue_size=2)
            res["died"] = None
        except RuntimeError as e:
            res["died"] = str(e)
        import threading
        try:
            parallel_apply(str, [1, threading.Lock()], 2, 2)
            res["bad_input"] = None
        except TypeError as e:
            res["bad_input"] = str(e)
        try:
            parallel_apply(lambda x: threading.Lock(), [1, 2], 2, 2)
            res["bad_output"] = None
        except WorkerError as e:
            res["bad_output"] = str(e).splitlines()[0]
        g = parallel_apply_generator(slow_square, range(1000), 2, 2)
        next(g)
        g.close()  # early stop must not hang
        import multiprocessing as mp
        time.sleep(0.2)
        res["children_left"] = len(mp.active_children())
        print(json.dumps(res))
        """
    )
    assert out["ordered"] == [i * i for i in range(60)]
    assert out["pids"] >= 2  # really ran in several processes
    assert out["unordered"] == [i * i for i in range(60)]
    assert out["callback"] == [-i for i in range(9, -1, -1)]
    assert out["gen"] == [[0, 3], [1, 2], [2, 1]]
    assert out["seeded_distinct"] > 30
    msg, index, cause, has_tb = out["error"]
    assert "raised ValueError: bad item 7 on item 7" in msg and index == 7
    assert cause == "ValueError" and has_tb
    assert "worker" in out["died"] and "died unexpectedly (exit code 5)" in out["died"]
    assert out["children_left"] == 0
    assert "item 1 of the iterable cannot be pickled" in out["bad_input"]
    assert "raised TypeError" in out["bad_output"] and "pickle" in out["bad_output"]


def test_parallel_apply_threads_in_process():
    res = parallel_apply(lambda x: x + 1, range(50), workers=4, max_queue_size=3, dummy=True)
    assert res == list(range(1, 51))

    def boom(x):
        if x == 4:
            raise KeyError("nope")
        return x

    with pytest.raises(WorkerError, match="raised KeyError: 'nope' on item 4") as info:
        parallel_apply(boom, range(10), workers=2, max_queue_size=2, dummy=True)
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ValueError, match="workers must be a positive int, got 0"):
        parallel_apply(abs, [1], workers=0, max_queue_size=1)
    with pytest.raises(ValueError, match="max_queue_size must be a positive int"):
        parallel_apply(abs, [1], workers=1, max_queue_size=0)
    assert parallel_apply(abs, [], workers=2, max_queue_size=2, dummy=True) == []
    res = parallel_apply(abs, [-1, -2], workers=1, max_queue_size=1, dummy=True, verbose=1)
    assert res == [1, 2]


# ---------------------------------------------------------------------------
# orthogonally_resize
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("window,k", [(1, 2), (2, 2), (2, 3), (4, 4)])
def test_orthogonally_resize_widened_dense_pair_is_lossless(window, k):
    rng = np.random.default_rng(window * 10 + k)
    n, h, m = 5, 8, 3
    w1, b1, w2, b2 = rng.normal(size=(n, h)), rng.normal(size=h), rng.normal(size=(h, m)), rng.normal(size=m)
    x = rng.normal(size=(7, n))
    relu = lambda z: np.maximum(z, 0)  # noqa: E731
    small = relu(x @ w1 + b1) @ w2 + b2
    W1 = orthogonally_resize(w1, (n, k * h), window)
    B1 = orthogonally_resize(b1, (k * h,), window)
    W2 = orthogonally_resize(w2, (k * h, m), window)
    assert W1.shape == (n, k * h) and W2.shape == (k * h, m)
    np.testing.assert_allclose(relu(x @ W1 + B1) @ W2 + b2, small, atol=1e-10)
    for a, b in [(w1, W1), (b1, B1), (w2, W2)]:
        np.testing.assert_allclose(np.linalg.norm(b), np.linalg.norm(a))
    # the hidden units are window-blocks repeated k times, scaled by 1/sqrt(k)
    idx = [(j // (window * k)) * window + j % window for j in range(k * h)]
    np.testing.assert_allclose(W1, w1[:, idx] / np.sqrt(k))
    # square matrix grown on both axes maps repeated inputs to repeated outputs
    w = rng.normal(size=(h, h))
    W = orthogonally_resize(w, (k * h, k * h), window)
    np.testing.assert_allclose(x[:, :1].repeat(h, 1)[:, idx] @ W, (x[:, :1].repeat(h, 1) @ w)[:, idx],
                               atol=1e-10)
    hid = rng.normal(size=(4, h))
    np.testing.assert_allclose(hid[:, idx] @ W, (hid @ w)[:, idx], atol=1e-10)


def test_orthogonally_resize_truncation_and_errors():
    a = np.arange(1.0, 5.0)
    out = orthogonally_resize(a, (6,), window=2)  # [0,1,0,1,2,3] pattern cut to 6
    np.testing.assert_allclose(out / np.linalg.norm(out) * np.linalg.norm(a), out)
    np.testing.assert_allclose(out * np.linalg.norm([1, 2, 1, 2, 3, 4]) / np.linalg.norm(a), [1, 2, 1, 2, 3, 4])
    np.testing.assert_allclose(orthogonally_resize(np.eye(3), (2, 2)), np.eye(2) * np.sqrt(1.5))
    with pytest.raises(ValueError, match=r"new_shape \(4,\) has 1 dims, the array has 2"):
        orthogonally_resize(np.eye(2), (4,))
    with pytest.raises(ValueError, match="size 3, which must be a multiple of window=2"):
        orthogonally_resize(np.ones(3), (6,), window=2)


def test_module_exports_exist():
    for name in snippets.__all__:
        obj = getattr(snippets, name)
        assert obj.__doc__, name


def test_progress_passes_items_through(capsys):
    assert list(snippets.progress(iter(range(5)), verbose=1)) == list(range(5))
    assert "5" in capsys.readouterr().out
    assert list(snippets.progress([1, 2], verbose=0)) == [1, 2]
