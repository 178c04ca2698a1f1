"""Cached LM / UniLM generation equals the uncached decode (full model re-run every step).

For every encoder family (bert, roformer, roformer_v2, gau_alpha) and both applications,
``generate`` with the key/value cache must produce exactly the tokens of a plain loop that
re-runs the whole Keras model on ``prompt + generated`` for each row (no padding) and takes
the argmax of the last position. Beam search and ``allowed`` constraints are checked against
the same search driven by an uncached decoder. A small UniLM RoFormer trained with ``fit``
on reversing digit strings must decode held-out inputs correctly.
"""
import numpy as np
import pytest

import keras
from keras import ops

from bert4keras3 import generation
from bert4keras3.models import build_transformer_model
from bert4keras3.models.base import LMCachedDecoder
from bert4keras3.snippets import Trie


def lm_cached_decoder(obj):
    return LMCachedDecoder(obj)

V = 40
MODELS = ("bert", "roformer", "roformer_v2", "gau_alpha")
PROMPTS = [[5, 17, 3, 9, 22], [8, 30], [11, 4, 25, 6, 13, 2, 19]]


def gen(obj, inputs, max_new_tokens, **kwargs):
    """``obj.generate`` when the Transformer provides it, else the engine directly."""
    if hasattr(obj, "generate"):
        return obj.generate(inputs, max_new_tokens, **kwargs)
    return generation.generate(lm_cached_decoder(obj), inputs, max_new_tokens, **kwargs)


def build(model, application, seed=0, with_mlm="linear", **extra):
    cfg = dict(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=48, max_position=64)
    if model == "gau_alpha":
        cfg.update(num_attention_heads=1, attention_key_size=16)
        del cfg["max_position"]
    cfg.update(extra)
    obj = build_transformer_model(cfg, model=model, application=application,
                                  with_mlm=with_mlm, return_keras_model=False)
    # random weights strong enough that the decode depends on the whole context
    rng = np.random.RandomState(seed)
    for w in obj.model.weights:
        shape = tuple(w.shape)
        if len(shape) == 2 and "Embedding" in w.path:
            value = rng.randn(*shape)
        elif len(shape) == 2:
            value = 2.5 * rng.randn(*shape) / np.sqrt(shape[0])
        elif w.path.endswith("gamma"):
            value = 1.0 + 0.2 * rng.randn(*shape)
        else:
            value = 0.1 * rng.randn(*shape)
        if w.path == "Embedding-Token/embeddings":
            value[0] = 0.0  # padding id: logit 0, so random weights (almost) never pick it
        w.assign(value.astype("float32"))
    return obj


def batch(prompts, application):
    width = max(len(p) for p in prompts)
    tokens = np.zeros((len(prompts), width), "int32")
    for i, p in enumerate(prompts):
        tokens[i, :len(p)] = p
    return [tokens, np.zeros_like(tokens)] if application == "unilm" else tokens


WIDTH = 16


def full_logits(obj, rows):
    """Last-position logits of the whole model on each ``(ids, segments)`` row.

    Rows are right-padded with id 0 to a fixed width (padding is masked out, so real
    positions see exactly the unpadded sequence) so the model compiles once.
    """
    assert all(len(ids) <= WIDTH for ids, _ in rows)
    x = np.zeros((len(rows), WIDTH), "int32")
    s = np.zeros_like(x)
    for r, (ids, segs) in enumerate(rows):
        x[r, :len(ids)] = ids
        s[r, :len(segs)] = segs
    out = obj.model.predict_on_batch([x, s] if len(obj.model.inputs) == 2 else x)
    out = np.asarray(ops.convert_to_numpy(out))
    return np.stack([out[r, len(ids) - 1] for r, (ids, _) in enumerate(rows)])


def reference_greedy(obj, prompts, steps, segments=None):
    """Uncached greedy decode: the full model re-run on prompt + generated at every step."""
    new_segment = 1 if obj.application == "unilm" else 0
    segments = segments or [[0] * len(p) for p in prompts]
    rows = [(list(p), list(s)) for p, s in zip(prompts, segments)]
    out = [[] for _ in prompts]
    for _ in range(steps):
        tokens = np.argmax(full_logits(obj, rows), axis=-1)
        for r, t in enumerate(tokens):
            out[r].append(int(t))
            rows[r][0].append(int(t))
            rows[r][1].append(new_segment)
    return out


class UncachedDecoder(generation.HostDecoder):
    """Reference decoder without a cache: every step re-runs the whole model per row."""

    def __init__(self, obj):
        self.obj = obj
        self.vocab_size = obj.vocab_size
        self.new_segment = 1 if obj.application == "unilm" else 0

    def _logits(self, rows):
        return full_logits(self.obj, rows).astype("float32")

    def start(self, inputs, num_copies, max_new_tokens):
        tokens = inputs[0] if isinstance(inputs, list) else inputs
        rows = []
        for row in np.asarray(tokens):
            prompt = [int(t) for t in row if t != 0]
            rows += [(prompt, [0] * len(prompt))] * num_copies
        return self._logits(rows), rows

    def step(self, state, token_ids, index):
        rows = [(ids + [int(t)], segs + [self.new_segment])
                for (ids, segs), t in zip(state, token_ids)]
        return self._logits(rows), rows

    def reorder(self, state, indices):
        return [state[i] for i in indices]


@pytest.mark.parametrize("application", ["unilm", "lm"])
@pytest.mark.parametrize("model", MODELS)
def test_cached_greedy_equals_uncached(model, application):
    obj = build(model, application, seed=MODELS.index(model))
    inputs = batch(PROMPTS, application)
    cached = gen(obj, inputs, 6)
    expected = reference_greedy(obj, PROMPTS, 6)
    assert cached == expected
    assert all(len(row) == 6 and 0 not in row for row in cached)
    # the rows do not all decode the same thing (the prompts matter)
    assert len({tuple(r) for r in cached}) > 1


def test_compiled_once_per_bucket():
    obj = build("roformer", "unilm")
    gen(obj, batch(PROMPTS, "unilm"), 4)
    programs = dict(obj._generation_programs)
    assert len(programs) == 1
    program = next(iter(programs.values()))
    # other prompts of other lengths, same bucket: nothing new is compiled
    other = [[7, 8, 9], [3, 4, 5, 6, 7, 8, 9, 10, 11], [12]]
    before = generation.host_calls()
    out = gen(obj, batch(other, "unilm"), 3)
    assert generation.host_calls() - before == 1  # one program call for the whole decode
    assert obj._generation_programs == programs
    assert out == reference_greedy(obj, other, 3)
    if keras.backend.backend() in ("jax", "tensorflow"):
        assert program.traces <= 2


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_no_host_call_per_token(method):
    obj = build("gau_alpha", "lm", seed=6)
    trie = Trie([[3, 7, 12, 4, 4, 4, 4, 4, 4], [3, 9, 5, 5, 5, 5, 5, 5, 5]])
    for allowed in (None, trie):
        before = generation.host_calls()
        out = gen(obj, batch(PROMPTS, "lm"), 9, method=method, beam_size=2, seed=0,
                  allowed=allowed)
        assert generation.host_calls() - before == 1
        assert all(len(row) == 9 for row in out)


def test_programs_are_freed_with_their_model():
    import gc
    import weakref

    refs = []
    for seed in range(3):
        obj = build("roformer", "unilm", seed=seed)
        gen(obj, batch(PROMPTS, "unilm"), 3)
        gen(obj, batch(PROMPTS, "unilm"), 3, method="beam", beam_size=2)
        refs.append((weakref.ref(obj), weakref.ref(obj.model),
                     weakref.ref(next(iter(obj._generation_programs.values())))))
        del obj
    gc.collect()
    alive = [i for i, r in enumerate(refs) if any(x() is not None for x in r)]
    assert alive == [], f"models {alive} (or their programs) are still alive"


@pytest.mark.parametrize("model,application", [("roformer_v2", "unilm"), ("gau_alpha", "lm"),
                                               ("bert", "unilm")])
def test_beam_search_matches_uncached(model, application):
    obj = build(model, application, seed=3)
    inputs = batch(PROMPTS[:2], application)
    cached = generation.generate(lm_cached_decoder(obj), inputs, 5, method="beam", beam_size=3)
    reference = generation.generate(UncachedDecoder(obj), inputs, 5, method="beam", beam_size=3)
    assert cached == reference
    assert len(cached) == 2 and all(len(r) == 5 for r in cached)
    if hasattr(obj, "generate"):
        assert obj.generate(inputs, 5, method="beam", beam_size=3) == cached


def test_allowed_trie_and_end_id():
    obj = build("gau_alpha", "unilm", seed=4)
    inputs = batch(PROMPTS, "unilm")
    trie = Trie([[3, 7, 12], [3, 9], [21, 5, 5, 6], [21, 8]])
    for method in ("greedy", "beam"):
        cached = gen(obj, inputs, 6, method=method, beam_size=2, allowed=trie)
        reference = generation.generate(UncachedDecoder(obj), inputs, 6, method=method,
                                        beam_size=2, allowed=trie)
        assert cached == reference
        assert all(row in trie for row in cached), cached
    # end_id stops a row right after it (included)
    free = gen(obj, inputs, 6)
    end = free[0][2]
    stopped = gen(obj, inputs, 6, end_id=end)
    assert stopped[0] == free[0][:free[0].index(end) + 1]
    for row, full in zip(stopped, free):
        assert row == (full[:full.index(end) + 1] if end in full else full)


def test_unilm_prompt_with_segment_ones():
    """A prompt may already hold segment-1 tokens (a forced target prefix)."""
    obj = build("roformer", "unilm", seed=5)
    tokens = np.array([[4, 9, 14, 21, 0], [6, 7, 8, 3, 33]], "int32")
    segments = np.array([[0, 0, 1, 1, 0], [0, 0, 0, 1, 1]], "int32")
    cached = gen(obj, [tokens, segments], 4)
    prompts = [[int(t) for t in row if t] for row in tokens]
    segs = [[int(s) for t, s in zip(row, seg) if t] for row, seg in zip(tokens, segments)]
    assert cached == reference_greedy(obj, prompts, 4, segs)


def test_errors():
    encoder = build_transformer_model(
        dict(vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=16), model="roformer", with_mlm=True, return_keras_model=False)
    with pytest.raises(ValueError, match="application='lm' or 'unilm'; found application='encoder'"):
        lm_cached_decoder(encoder)
    no_head = build_transformer_model(
        dict(vocab_size=V, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
             intermediate_size=16), model="roformer", application="lm", with_mlm=False,
        return_keras_model=False)
    with pytest.raises(ValueError, match="with_mlm=True.*found with_mlm=False"):
        lm_cached_decoder(no_head)
    obj = build("roformer", "unilm")
    dec = lm_cached_decoder(obj)
    with pytest.raises(ValueError, match=r"inputs=\[token_ids, segment_ids\]"):
        dec.prepare(np.array([[3, 4]]), 2)
    with pytest.raises(ValueError, match="right only; rows \\[1\\]"):
        dec.prepare([np.array([[3, 4], [0, 5]]), np.zeros((2, 2), int)], 2)
    with pytest.raises(ValueError, match="same shape"):
        dec.prepare([np.array([[3, 4]]), np.zeros((1, 3), int)], 2)
    bert = build("bert", "lm")
    with pytest.raises(ValueError, match="exceeds the model's max_position 64"):
        lm_cached_decoder(bert).prepare(np.array([[3, 4, 5]]), 62)


def test_trained_unilm_reverses_digits():
    """End to end: fit a small UniLM RoFormer on reversing digit strings, decode held-out ones."""
    cls, sep, width = 1, 2, 13
    rng = np.random.RandomState(0)

    def encode(digits):
        src = [cls] + [d + 3 for d in digits] + [sep]
        return src, [d + 3 for d in digits[::-1]] + [sep]

    def sample(n, exclude=()):
        seen, out = set(exclude), []
        while len(out) < n:
            d = tuple(rng.randint(0, 10, size=rng.randint(2, 6)))
            if d not in seen:
                out.append(d)
                if exclude:
                    seen.add(d)
        return out

    train = sample(6000)
    tokens = np.zeros((len(train), width), "int32")
    segments = np.zeros_like(tokens)
    for r, d in enumerate(train):
        src, tgt = encode(d)
        tokens[r, :len(src) + len(tgt)] = src + tgt
        segments[r, len(src):len(src) + len(tgt)] = 1
    targets = np.zeros_like(tokens)
    targets[:, :-1] = tokens[:, 1:]  # position i predicts token i + 1
    weights = np.zeros(tokens.shape, "float32")
    weights[:, :-1] = segments[:, 1:]  # only the answer (segment 1) is learned

    obj = build_transformer_model(
        dict(vocab_size=13, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
             intermediate_size=128), model="roformer", application="unilm", with_mlm=True,
        return_keras_model=False)
    steps = 4 * len(train) // 32
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, alpha=0.05, warmup_target=2e-3, warmup_steps=200)
    obj.model.compile(keras.optimizers.Adam(schedule, clipnorm=1.0),
                      loss="sparse_categorical_crossentropy")
    obj.model.fit([tokens, segments], targets, sample_weight=weights, batch_size=32, epochs=4,
                  verbose=0)

    held_out = sample(40, exclude=train)
    prompts = [encode(d)[0] for d in held_out]
    out = gen(obj, batch(prompts, "unilm"), 7, end_id=sep)
    correct = sum(row == encode(d)[1] for row, d in zip(out, held_out))
    assert correct >= 36, (correct, out[:5], held_out[:5])
