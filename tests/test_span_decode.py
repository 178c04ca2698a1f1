"""Compiled batch GlobalPointer / GPLinker decoding against NumPy loop references."""

import warnings

import numpy as np
import pytest
import keras
from keras import ops

from bert4keras3 import losses as L
from bert4keras3.layers import GPLinker, GlobalPointer

NEG = -1e12


def compiled(fn):
    """``fn`` under jax.jit / tf.function(jit_compile=True); eager on torch."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    return fn


def numpy_(x):
    return np.asarray(ops.convert_to_numpy(x))


def ref_spans(x, threshold, k, mask=None):
    """Per row: the top-k (score, type, start, end) above threshold by a plain loop, and the count."""
    out = []
    for b in range(x.shape[0]):
        found = []
        for t, s, e in zip(*np.where(x[b] > threshold)):
            if mask is None or (mask[b, s] and mask[b, e]):
                found.append((float(x[b, t, s, e]), int(t), int(s), int(e)))
        found.sort(reverse=True)
        out.append((found[:k], len(found)))
    return out


def ref_triples(ent, head, tail, threshold, ke, kt):
    """Top-ke subjects / objects, then all triples ranked by min(head, tail) score."""
    out = []
    for b in range(ent.shape[0]):
        (subs, ns), = ref_spans(ent[b:b + 1, :1], threshold, ke)
        (objs, no), = ref_spans(ent[b:b + 1, 1:], threshold, ke)
        found = []
        for _, _, ss, se in subs:
            for _, _, os_, oe in objs:
                for p in range(head.shape[1]):
                    score = min(head[b, p, ss, os_], tail[b, p, se, oe])
                    if score > threshold:
                        found.append((float(score), (ss, se, p, os_, oe)))
        found.sort(reverse=True)
        out.append((found, len(found), (max(ns - ke, 0), max(no - ke, 0))))
    return out


def gp_logits(rng, b, heads, n, loc=-4.0):
    """Random logits masked like the GlobalPointer layer: padding rows/columns and end < start."""
    x = rng.normal(loc, 2.0, size=(b, heads, n, n)).astype("float32")
    lengths = rng.integers(n // 2, n + 1, size=b)
    mask = np.arange(n)[None] < lengths[:, None]
    valid = mask[:, None, :, None] & mask[:, None, None, :] & np.triu(np.ones((n, n), bool))
    return np.where(valid, x, NEG).astype("float32"), mask


def check_spans(result, x, threshold, k, mask=None):
    spans, scores, counts = map(numpy_, result)
    assert spans.shape == (x.shape[0], k, 3) and scores.shape == (x.shape[0], k)
    for b, (top, count) in enumerate(ref_spans(x, threshold, k, mask)):
        assert counts[b] == count
        kept = len(top)
        assert [tuple(r) for r in spans[b, :kept]] == [r[1:] for r in top]
        np.testing.assert_allclose(scores[b, :kept], [r[0] for r in top], rtol=1e-6)
        assert (spans[b, kept:] == -1).all() and np.isneginf(scores[b, kept:]).all()


@pytest.mark.parametrize("k", [3, 40, 400])
def test_global_pointer_spans_matches_numpy_loop_compiled(k):
    rng = np.random.default_rng(k)
    x, mask = gp_logits(rng, 4, 3, 12)
    fn = compiled(lambda v: L.global_pointer_spans(v, threshold=0.5, max_spans=k))
    check_spans(fn(x), x, 0.5, k)
    # k=3: more than k rows pass, so the exact count takes the full-count branch


def test_global_pointer_spans_few_rows_exact_count_and_token_mask():
    rng = np.random.default_rng(1)
    x = np.full((2, 2, 9, 9), -5.0, "float32")
    x[0, 1, 2, 2:] = rng.uniform(1, 2, size=7)  # 7 spans in one row: overflow of k=4
    x[1, 0, 3, 4] = 2.0
    x[1, 0, 0, 4] = 3.0  # touches token 0, masked out below
    check_spans(compiled(lambda v: L.global_pointer_spans(v, max_spans=4))(x), x, 0.0, 4)
    mask = np.ones((2, 9), bool)
    mask[:, 0] = False
    fn = compiled(lambda v, m: L.global_pointer_spans(v, max_spans=4, mask=m))
    check_spans(fn(x, mask), x, 0.0, 4, mask)
    # capacity above heads * n * n: the output is padded to max_spans
    small = x[:, :, 2:5, 2:5]
    check_spans(compiled(lambda v: L.global_pointer_spans(v, max_spans=30))(small), small, 0.0, 30)


def test_global_pointer_spans_half_precision_and_eager():
    rng = np.random.default_rng(2)
    x, _ = gp_logits(rng, 2, 2, 10, loc=-1.0)
    x = np.maximum(x, -6e4).astype("float16")
    spans, scores, counts = L.global_pointer_spans(ops.convert_to_tensor(x), max_spans=20)
    ref = ref_spans(x.astype("float32"), 0.0, 20)
    for b, (top, count) in enumerate(ref):
        assert numpy_(counts)[b] == count
        # float16 ties may reorder equal scores: compare as sets
        assert {tuple(r) for r in numpy_(spans)[b, :len(top)]} == {r[1:] for r in top}


def test_span_lists_equal_global_pointer_decode_with_mappings():
    rng = np.random.default_rng(3)
    x, _ = gp_logits(rng, 3, 2, 6, loc=-1.0)
    mappings = [[[], [0, 1], [3], [4, 5], [7], []]] * 3
    out = L.span_lists(*compiled(lambda v: L.global_pointer_spans(v, max_spans=72))(x), mappings=mappings)
    for b in range(3):
        expected = set()
        for _, t, s, e in ref_spans(x[b:b + 1], 0.0, 10**6)[0][0]:
            if mappings[b][s] and mappings[b][e]:
                expected.add((mappings[b][s][0], mappings[b][e][-1] + 1, t))
        assert out[b] == sorted(expected)
        assert out[b] == L.global_pointer_decode(x[b], mapping=mappings[b])


def test_overflow_warns_or_raises():
    x = np.full((2, 1, 5, 5), -5.0, "float32")
    x[1, 0, np.triu_indices(5)[0], np.triu_indices(5)[1]] = 1.0  # 15 spans
    result = L.global_pointer_spans(x, max_spans=4)
    assert list(numpy_(result[2])) == [0, 15]
    with pytest.warns(L.SpanOverflowWarning, match=r"row 1: 15 spans above the threshold, max_spans=4"):
        out = L.span_lists(*result)
    assert out[0] == [] and len(out[1]) == 4
    with pytest.raises(RuntimeError, match="1 of 2 rows overflowed"):
        L.span_lists(*result, on_overflow="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error", L.SpanOverflowWarning)
        L.span_lists(*L.global_pointer_spans(x, max_spans=15))  # exactly full: no warning


def gplinker_logits(rng, b, p, n):
    ent, _ = gp_logits(rng, b, 2, n, loc=-0.5)
    head = rng.normal(-0.5, 1.0, size=(b, p, n, n)).astype("float32")
    tail = rng.normal(-0.5, 1.0, size=(b, p, n, n)).astype("float32")
    return ent, head, tail


def check_ranked(items, scores, found, k):
    """``items`` / ``scores`` (one row) hold the first ``k`` of the reference ``found`` [(score, item)] by decreasing
    score. Triples share head or tail pair scores, so equal scores come in any order: items
    are compared per score value, and a tie at the cut-off only has to come from that value."""
    top = found[:k]
    kept = len(top)
    np.testing.assert_allclose(scores[:kept], [r[0] for r in top], rtol=1e-6)
    assert (items[kept:] == -1).all() and np.isneginf(scores[kept:]).all()
    by_score = {}
    for score, item in found:
        by_score.setdefault(score, set()).add(item)
    for score, item in zip(scores[:kept], items[:kept]):
        assert tuple(int(v) for v in item) in by_score[float(np.float32(score))]
    assert len({tuple(r) for r in items[:kept]}) == kept


@pytest.mark.parametrize("ke,kt", [(50, 500), (4, 6)])
def test_gplinker_triples_match_numpy_loop_compiled(ke, kt):
    rng = np.random.default_rng(ke)
    ent, head, tail = gplinker_logits(rng, 3, 3, 8)
    fn = compiled(lambda e, h, t: L.gplinker_triples(e, h, t, 0.0, max_entities=ke, max_triples=kt))
    triples, scores, counts, dropped = map(numpy_, fn(ent, head, tail))
    assert triples.shape == (3, kt, 5)
    for b, (top, count, drop) in enumerate(ref_triples(ent, head, tail, 0.0, ke, kt)):
        assert counts[b] == count and tuple(dropped[b]) == drop
        check_ranked(triples[b], scores[b], top, kt)
    if ke == 50:
        mappings = [[[], [0], [1, 2], [4], [6], [7, 8], [9], []]] * 3
        out = L.triple_lists(triples, scores, counts, dropped, mappings=mappings, id2predicate="abc")
        for b in range(3):
            assert out[b] == L.gplinker_decode(ent[b], head[b], tail[b], mapping=mappings[b],
                                               id2predicate="abc")
    else:
        assert dropped.max() > 0 and counts.max() > kt
        with pytest.warns(L.SpanOverflowWarning) as record:
            L.triple_lists(triples, scores, counts, dropped)
        assert {("max_triples" in str(w.message), "max_entities" in str(w.message)) for w in record} == {
            (True, False), (False, True)}
        with pytest.raises(RuntimeError, match="max_triples"):
            L.triple_lists(triples, scores, counts, dropped, on_overflow="raise")


def test_layer_decode_methods():
    rng = np.random.default_rng(5)
    h = rng.normal(size=(2, 7, 16)).astype("float32")
    mask = np.arange(7)[None] < np.array([[7], [5]])
    gp = GlobalPointer(3, 8)
    logits = gp(h, mask=mask)
    x = numpy_(logits)
    check_spans(gp.decode(logits, threshold=-0.1, max_spans=10), x, -0.1, 10)
    with pytest.raises(ValueError, match=r"expects logits \[batch, 3, n, n\]"):
        gp.decode(x[:, :2])
    linker = GPLinker(2, head_size=8)
    outs = linker(h, mask=mask)
    ent, head, tail = map(numpy_, outs)
    triples, scores, counts, dropped = map(numpy_, linker.decode(outs, threshold=-0.05, max_triples=200))
    for b, (top, count, drop) in enumerate(ref_triples(ent, head, tail, -0.05, 64, 200)):
        assert counts[b] == count and tuple(dropped[b]) == drop
        check_ranked(triples[b], scores[b], top, 200)
    with pytest.raises(ValueError, match="expects the layer's output"):
        linker.decode(outs[:2])


def test_bad_inputs_raise_clear_errors():
    x = np.zeros((2, 1, 4, 4), "float32")
    with pytest.raises(ValueError, match=r"logits must have shape \[batch, heads, n, n\], found \(2, 4, 4\)"):
        L.global_pointer_spans(x[:, 0])
    with pytest.raises(ValueError, match=r"found \(2, 1, 4, 3\)"):
        L.global_pointer_spans(x[..., :3])
    with pytest.raises(ValueError, match="`max_spans` must be a positive int, found 0"):
        L.global_pointer_spans(x, max_spans=0)
    with pytest.raises(ValueError, match="`threshold` must be a real number"):
        L.global_pointer_spans(x, threshold="0")
    with pytest.raises(ValueError, match="floating-point logits"):
        L.global_pointer_spans(x.astype("int32"))
    with pytest.raises(ValueError, match=r"mask must have shape \[batch, n\]"):
        L.global_pointer_spans(x, mask=np.ones((2, 5), bool))
    result = L.global_pointer_spans(x)
    with pytest.raises(ValueError, match="`on_overflow` must be 'warn' or 'raise', found 'ignore'"):
        L.span_lists(*result, on_overflow="ignore")
    with pytest.raises(ValueError, match=r"expected one mapping per row \(2\), found 1"):
        L.span_lists(*result, mappings=[None])
    with pytest.raises(ValueError, match="entity_logits must have 2 heads"):
        L.gplinker_triples(np.zeros((1, 3, 4, 4), "float32"), x[:1], x[:1])
    with pytest.raises(ValueError, match="tail_logits must have 1 heads"):
        L.gplinker_triples(np.zeros((1, 2, 4, 4), "float32"), x[:1], np.zeros((1, 2, 4, 4), "float32"))
    with pytest.raises(ValueError, match="must share n"):
        L.gplinker_triples(np.zeros((1, 2, 5, 5), "float32"), x[:1], x[:1])
