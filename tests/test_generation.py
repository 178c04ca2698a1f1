"""The shared generation engine on toy decoders, against brute force."""
import itertools

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras3.generation import CachedDecoder, compile_function, filter_logits, generate
from bert4keras3.snippets import Trie

V = 5


class MarkovDecoder(CachedDecoder):
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


def _toy(seed=0, n=2):
    rng = np.random.default_rng(seed)
    return MarkovDecoder(rng.normal(size=(n, V, V)) * 2, rng.normal(size=(n, V)) * 2)


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


def test_greedy_equals_argmax_chain():
    dec = _toy()
    out = generate(dec, [0, 1], 6)
    for r in range(2):
        seq, logits = [], dec.first[r]
        for _ in range(6):
            seq.append(int(np.argmax(logits)))
            logits = dec.tables[r, seq[-1]]
        assert out[r] == seq


def test_end_id_and_min_new_tokens():
    dec = _toy(3)
    end = int(np.argmax(dec.first[0]))  # the greedy first token
    out = generate(dec, [0], 6, end_id=end)
    assert out[0] == [end]
    out = generate(dec, [0], 6, end_id=end, min_new_tokens=3)
    assert len(out[0]) >= 3 and end not in out[0][:3]
    assert out[0][-1] == end or len(out[0]) == 6


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_with_all_hypotheses_equals_exhaustive(length_penalty):
    dec = _toy(5)
    end, T = 1, 4
    beams = V ** T
    out = generate(dec, [0, 1], T, method="beam", beam_size=beams, end_id=end,
                   length_penalty=length_penalty)
    for r in range(2):
        best, best_score = None, -np.inf
        for n in range(1, T + 1):
            for seq in itertools.product(range(V), repeat=n):
                if end in seq[:-1]:
                    continue
                if n < T and seq[-1] != end:
                    continue
                score = _seq_logp(dec, r, seq) / (n ** length_penalty)
                if score > best_score + 1e-12:
                    best, best_score = list(seq), score
        assert out[r] == best


def test_beam_stops_early_when_finished_beams_cannot_be_beaten():
    dec = _toy(7)
    dec.steps = 0
    generate(dec, [0], 30, method="beam", beam_size=2, end_id=int(np.argmax(dec.first[0])))
    assert dec.steps < 29


def test_sampling_is_reproducible_and_respects_support():
    dec = _toy(2)
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
    logits = np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    out = filter_logits(logits, top_p=0.8)
    assert np.isfinite(out[0, :3]).all() and np.isinf(out[0, 3:]).all()
    out = filter_logits(logits, top_k=2)
    assert np.isfinite(out[0, :2]).all() and np.isinf(out[0, 2:]).all()


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_allowed_trie_constrains_every_step(method):
    dec = _toy(9)
    trie = Trie([[3, 2, 1], [3, 4], [0, 0, 0, 1], [2]])
    out = generate(dec, [0, 1], 6, method=method, allowed=trie, end_id=1, seed=0, beam_size=3)
    for seq in out:
        assert trie.is_prefix(seq) or seq in trie
        assert seq in trie or seq[-1] == 1 or len(seq) == 6


def test_bad_arguments():
    dec = _toy()
    with pytest.raises(ValueError, match="method must be .*found 'topk'"):
        generate(dec, [0], 3, method="topk")
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int, found 0"):
        generate(dec, [0], 0)
    with pytest.raises(TypeError, match="allowed must be a snippets.Trie"):
        generate(dec, [0], 2, allowed=[1, 2])


def test_compile_function_compiles_once_and_matches_eager():
    dense = keras.layers.Dense(4)
    dense.build((None, 3))
    traces = []

    def step(cache, x, index):
        traces.append(1)
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
    if keras.backend.backend() in ("jax", "tensorflow"):
        assert len(traces) <= 2  # traced once (TF may trace twice), not once per step
    # weights are arguments, not constants: a change is seen without recompiling
    dense.kernel.assign(np.zeros((3, 4), "float32"))
    out, _ = compiled(np.zeros((2, 5, 4), "float32"), x, 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out),
                               np.broadcast_to(keras.ops.convert_to_numpy(dense.bias), (2, 4)),
                               atol=1e-6)
