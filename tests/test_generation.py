"""The generation engine on toy decoders, against brute force and NumPy reference decodes.

Each test runs the same toy model twice: as a :class:`HostDecoder` (NumPy, host loop)
and as a traceable :class:`CachedDecoder` (``keras.ops``, the compiled device loop), so
both drivers are checked against the same independent references.
"""
import itertools

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras3 import generation
from bert4keras3.generation import (
    CachedDecoder,
    HostDecoder,
    compile_function,
    filter_logits,
    generate,
    host_calls,
)
from bert4keras3.snippets import Trie

V = 5


class MarkovHost(HostDecoder):
    """Next-token logits depend on the input row and the last token (a bigram table)."""

    vocab_size = V

    def __init__(self, tables, first):
        self.tables = tables  # [inputs, V, V]
        self.first = first  # [inputs, V]
        self.steps = 0

    def start(self, inputs, num_copies, max_new_tokens):
        rows = np.repeat(np.asarray(inputs), num_copies)
        return self.first[rows], {"rows": rows}

    def step(self, state, token_ids, index):
        self.steps += 1
        return self.tables[state["rows"], token_ids], state

    def reorder(self, state, indices):
        return {"rows": state["rows"][indices]}


class MarkovCached(CachedDecoder):
    """The same bigram model, traceable: the engine compiles prefill + loop as one program."""

    vocab_size = V

    def __init__(self, tables, first):
        self.tables = tables.astype("float32")
        self.first = first.astype("float32")
        self.traced_steps = 0

    def prepare(self, inputs, max_new_tokens):
        return {"rows": np.asarray(inputs, "int32")}, None

    def prefill(self, arrays, key):
        rows = arrays["rows"]
        logits = ops.take(ops.convert_to_tensor(self.first), rows, axis=0)
        return logits, {"last": ops.zeros_like(rows)}, {"rows": rows}

    def step(self, cache, static, token_ids, index, key):
        self.traced_steps += 1
        flat = ops.reshape(ops.convert_to_tensor(self.tables), (-1, V))
        logits = ops.take(flat, static["rows"] * V + ops.cast(token_ids, "int32"), axis=0)
        return logits, {"last": ops.cast(token_ids, "int32")}


def _tables(seed=0, n=2, scale=2.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, V, V)) * scale, rng.normal(size=(n, V)) * scale


def toy(kind, seed=0, n=2):
    tables, first = _tables(seed, n)
    return (MarkovHost if kind == "host" else MarkovCached)(tables, first)


KINDS = ["host", "compiled"]


def _logp(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _seq_logp(dec, r, seq):
    total, prev = 0.0, None
    for tok in seq:
        logits = dec.first[r] if prev is None else dec.tables[r, prev]
        total += _logp(logits)[tok]
        prev = tok
    return total


def reference_greedy(dec, r, steps, end_ids=(), penalty=1.0, window=None, id_range=None,
                     stops=(), min_new=0):
    """Greedy decode in plain NumPy with transformers' repetition penalty on the logits."""
    seq, logits = [], dec.first[r].astype(np.float64)
    for t in range(steps):
        x = logits.copy()
        if penalty != 1.0:
            recent = seq if window is None else seq[max(0, len(seq) - window):]
            for tok in set(recent):
                if id_range is None or id_range[0] <= tok < id_range[1]:
                    x[tok] = x[tok] / penalty if x[tok] > 0 else x[tok] * penalty
        if t < min_new:
            x[list(end_ids)] = -np.inf
        seq.append(int(np.argmax(x)))
        if seq[-1] in end_ids or any(seq[-len(s):] == list(s) for s in stops):
            break
        logits = dec.tables[r, seq[-1]]
    return seq


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_equals_argmax_chain(kind):
    dec = toy(kind)
    out = generate(dec, [0, 1], 6)
    assert out == [reference_greedy(dec, r, 6) for r in range(2)]


@pytest.mark.parametrize("kind", KINDS)
def test_end_id_and_min_new_tokens(kind):
    dec = toy(kind, 3)
    end = int(np.argmax(dec.first[0]))  # the greedy first token
    out = generate(dec, [0], 6, end_id=end)
    assert out[0] == [end]
    out = generate(dec, [0], 6, end_id=end, min_new_tokens=3)
    assert out[0] == reference_greedy(dec, 0, 6, end_ids=[end], min_new=3)
    assert len(out[0]) >= 3 and end not in out[0][:3]


@pytest.mark.parametrize("kind", KINDS)
def test_several_end_ids_and_stop_sequences(kind):
    dec = toy(kind, 8)
    free = generate(dec, [0, 1], 12)
    ends = [free[0][3], free[1][5]]
    out = generate(dec, [0, 1], 12, end_id=ends)
    assert out == [reference_greedy(dec, r, 12, end_ids=ends) for r in range(2)]
    stop = free[0][2:4]
    out = generate(dec, [0, 1], 12, stop_sequences=[stop, [9, 9, 9]])
    assert out == [reference_greedy(dec, r, 12, stops=[stop]) for r in range(2)]
    assert out[0][-2:] == stop and len(out[0]) <= 4


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("window,id_range", [(None, None), (2, None), (None, (1, 4))])
def test_repetition_penalty_matches_numpy(kind, window, id_range):
    dec = toy(kind, 12, n=3)
    out = generate(dec, [0, 1, 2], 10, repetition_penalty=3.0, repetition_window=window,
                   repetition_range=id_range)
    ref = [reference_greedy(dec, r, 10, penalty=3.0, window=window, id_range=id_range)
           for r in range(3)]
    assert out == ref
    assert out != generate(dec, [0, 1, 2], 10)  # the penalty changed something


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_with_all_hypotheses_equals_exhaustive(kind, length_penalty):
    dec = toy(kind, 5)
    end, T = 1, 4
    beams = V ** T
    out, scores = generate(dec, [0, 1], T, method="beam", beam_size=beams, end_id=end,
                           length_penalty=length_penalty, return_scores=True)
    for r in range(2):
        best, best_score = None, -np.inf
        for n in range(1, T + 1):
            for seq in itertools.product(range(V), repeat=n):
                if end in seq[:-1]:
                    continue
                if n < T and seq[-1] != end:
                    continue
                score = _seq_logp(dec, r, seq) / (n ** length_penalty)
                if score > best_score + 1e-9:
                    best, best_score = list(seq), score
        assert out[r] == best
        np.testing.assert_allclose(scores[r], best_score, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_beam_returns_several_sequences_best_first(kind):
    dec = toy(kind, 6)
    out, scores = generate(dec, [0, 1], 4, method="beam", beam_size=V ** 4, end_id=1,
                           num_return_sequences=3, return_scores=True)
    for r in range(2):
        assert len(out[r]) == 3 and len({tuple(s) for s in out[r]}) == 3
        assert scores[r] == sorted(scores[r], reverse=True)
        for seq, score in zip(out[r], scores[r]):
            np.testing.assert_allclose(score, _seq_logp(dec, r, seq) / len(seq), rtol=1e-5)


def test_beam_stops_early_when_finished_beams_cannot_be_beaten():
    dec = toy("host", 7)
    generate(dec, [0], 30, method="beam", beam_size=2, end_id=int(np.argmax(dec.first[0])))
    assert dec.steps < 29


def _first_token_counts(dec, kind, n, seed, **kwargs):
    out = generate(dec, [0], 1, method="sample", seed=seed, num_return_sequences=n, **kwargs)
    return np.bincount([s[0] for s in out[0]], minlength=V)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("top_k,top_p,temperature", [(None, None, 1.0), (3, None, 1.0),
                                                     (None, 0.7, 0.5), (3, 0.8, 2.0)])
def test_sampling_follows_the_filtered_distribution(kind, top_k, top_p, temperature):
    dec = toy(kind, 2)
    n = 4000
    counts = _first_token_counts(dec, kind, n, 11, top_k=top_k, top_p=top_p,
                                 temperature=temperature)
    # independent NumPy transcription of temperature, top-k then top-p
    logits = dec.first[0] / temperature
    order = np.argsort(-logits)
    keep = order[:top_k] if top_k else order
    p = np.exp(logits[keep] - logits[keep].max())
    p /= p.sum()
    if top_p is not None:
        before = np.cumsum(p) - p
        keep, p = keep[before < top_p], p[before < top_p]
    expected = np.zeros(V)
    expected[keep] = p / p.sum() * n
    assert counts[expected == 0].sum() == 0
    mask = expected > 0
    chi2 = (((counts - expected) ** 2)[mask] / expected[mask]).sum()
    assert chi2 < 25.0, (chi2, counts, expected)  # dof <= 4; p(chi2 > 25) < 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_sampling_is_reproducible(kind):
    dec = toy(kind, 2)
    a = generate(dec, [0, 1], 8, method="sample", seed=11, top_k=2)
    b = generate(dec, [0, 1], 8, method="sample", seed=11, top_k=2)
    assert a == b
    others = [generate(dec, [0, 1], 8, method="sample", seed=s, top_k=2) for s in range(12, 20)]
    assert any(o != a for o in others)
    for r in range(2):
        prev = None
        for tok in a[r]:
            logits = dec.first[r] if prev is None else dec.tables[r, prev]
            assert tok in np.argsort(-logits)[:2]
            prev = tok


def test_filter_logits_matches_definition():
    logits = np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05]], "float32"))
    out = ops.convert_to_numpy(filter_logits(logits, top_p=0.8))
    assert np.isfinite(out[0, :3]).all() and np.isinf(out[0, 3:]).all()
    out = ops.convert_to_numpy(filter_logits(logits, top_k=2))
    assert np.isfinite(out[0, :2]).all() and np.isinf(out[0, 2:]).all()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_allowed_trie_constrains_every_step(kind, method):
    dec = toy(kind, 9)
    trie = Trie([[3, 2, 1], [3, 4], [0, 0, 0, 1], [2]])
    out = generate(dec, [0, 1], 6, method=method, allowed=trie, end_id=1, seed=0, beam_size=3)
    for seq in out:
        assert seq in trie  # every sequence ends at a leaf or with the end id
    # the same constraint as a Python callable (host loop) gives the same result
    same = generate(dec, [0, 1], 6, method=method, allowed=trie.next_ids, end_id=1, seed=0,
                    beam_size=3)
    if method != "sample" or kind == "host":
        assert same == out


def test_callable_constraint_and_streamer():
    dec = toy("compiled", 4)
    even = lambda prefix: [0, 2, 4] if len(prefix) < 3 else [1]  # noqa: E731
    seen = []
    out = generate(dec, [0, 1], 6, allowed=even, end_id=1,
                   streamer=lambda step, tokens: seen.append((step, tokens)))
    for seq in out:
        assert [t % 2 for t in seq[:3]] == [0, 0, 0] and seq[3:] == [1]
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    assert [tokens for _, tokens in seen] == [[a, b] for a, b in zip(out[0], out[1])]


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_compiled_loop_makes_one_host_call(method):
    """The whole decode (prefill, every step, the search) is one call of one program."""
    dec = toy("compiled", 10)
    trie = Trie([[3, 2, 1, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4], [3, 4, 0, 0, 0, 0, 0, 0, 0, 0]])
    for allowed in (None, trie):
        before = host_calls()
        out = generate(dec, [0, 1], 12, method=method, beam_size=2, seed=1, allowed=allowed)
        assert host_calls() - before == 1
        assert all(len(row) >= 9 for row in out)
    if keras.backend.backend() in ("jax", "tensorflow"):
        # the model step was traced, not run per token
        assert dec.traced_steps <= 6 * 2


def test_callable_constraint_uses_the_host_loop():
    dec = toy("compiled", 10)
    before = host_calls()
    generate(dec, [0, 1], 8, allowed=lambda prefix: [2, 3])
    assert host_calls() - before >= 8


def test_bad_arguments():
    dec = toy("host")
    with pytest.raises(ValueError, match="method must be .*found 'topk'"):
        generate(dec, [0], 3, method="topk")
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int, found 0"):
        generate(dec, [0], 0)
    with pytest.raises(TypeError, match="allowed must be a snippets.Trie"):
        generate(dec, [0], 2, allowed=[1, 2])
    with pytest.raises(ValueError, match="greedy decoding returns one sequence"):
        generate(dec, [0], 2, num_return_sequences=2)
    with pytest.raises(ValueError, match="num_return_sequences \\(5\\) must be <= beam_size"):
        generate(dec, [0], 2, method="beam", beam_size=4, num_return_sequences=5)
    with pytest.raises(ValueError, match="streamer works with greedy and sampling"):
        generate(dec, [0], 2, method="beam", streamer=print)
    with pytest.raises(ValueError, match="repetition_penalty must be > 0"):
        generate(dec, [0], 2, repetition_penalty=0)


def test_compile_function_compiles_once_and_matches_eager():
    dense = keras.layers.Dense(4)
    dense.build((None, 3))

    def step(cache, x, index):
        y = dense(x)
        cache = ops.slice_update(cache, (0, index, 0), y[:, None, :])
        return ops.sum(cache, axis=1), cache

    compiled = compile_function(step, dense.weights)
    cache = np.zeros((2, 5, 4), "float32")
    ref_cache = cache.copy()
    rng = np.random.default_rng(0)
    for index in range(5):
        x = rng.normal(size=(2, 3)).astype("float32")
        out, cache = compiled(cache, x, index)
        ref_cache[:, index] = x @ keras.ops.convert_to_numpy(dense.kernel) + \
            keras.ops.convert_to_numpy(dense.bias)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref_cache.sum(1), atol=1e-5)
    assert compiled.calls == 5
    if keras.backend.backend() in ("jax", "tensorflow"):
        assert compiled.traces <= 2  # traced once (TF may trace twice), not once per step
    # weights are arguments, not constants: a change is seen without recompiling
    dense.kernel.assign(np.zeros((3, 4), "float32"))
    out, _ = compiled(np.zeros((2, 5, 4), "float32"), x, 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out),
                               np.broadcast_to(keras.ops.convert_to_numpy(dense.bias), (2, 4)),
                               atol=1e-6)


def test_compiled_trie_matches_the_trie():
    rng = np.random.default_rng(0)
    seqs = [list(rng.integers(0, 30, rng.integers(1, 6))) for _ in range(40)]
    trie = Trie(seqs)
    arrays, width = generation.compile_trie(trie)
    prefixes = [s[:k] for s in seqs for k in range(len(s) + 1)] + [[99], [seqs[0][0], 99]]
    states = []
    for prefix in prefixes:
        state = np.zeros(1, "int32")
        for tok in prefix:
            state = ops.convert_to_numpy(generation._trie_advance(
                arrays, ops.convert_to_tensor(state), ops.convert_to_tensor([tok]), width))
        states.append(int(state[0]))
    mask = ops.convert_to_numpy(generation._trie_allowed(
        arrays, ops.convert_to_tensor(np.asarray(states, "int32")), width, 100))
    for prefix, row in zip(prefixes, mask):
        assert sorted(np.nonzero(row)[0].tolist()) == sorted(trie.next_ids(prefix))
    # cached until the trie changes
    assert generation.compile_trie(trie)[0] is arrays
    trie.insert([77, 78])
    assert generation.compile_trie(trie)[0] is not arrays
