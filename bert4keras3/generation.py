"""The shared generation engine: cached, compiled decoding with greedy, beam and sampling search.

A model contributes a :class:`CachedDecoder` (how to start from the inputs and
how to advance one token with a static-shape key/value cache); everything else
(search, constraints, stopping) lives here and is shared by T5 and the
LM / UniLM applications of every encoder.

The search runs in NumPy on the host; the model step is one compiled function
per (batch, length) bucket (see :func:`compile_function`).
"""
import numpy as np

import keras

__all__ = ["CachedDecoder", "compile_function", "generate", "filter_logits", "bucket_length",
           "gather_rows"]


def bucket_length(n, multiple=16):
    """Round ``n`` up to a positive multiple of ``multiple`` (compilation buckets)."""
    return max(multiple, -(-int(n) // multiple) * multiple)


def gather_rows(state, indices):
    """Take rows ``indices`` (int32, axis 0) of every tensor of a state pytree (beam reordering).

    Works eagerly and inside :func:`compile_function`.
    """
    return keras.tree.map_structure(lambda x: keras.ops.take(x, indices, axis=0), state)


class CachedDecoder:
    """Model-specific part of generation. Subclass and implement the three methods.

    Attributes:
        vocab_size: size of the output distribution.
    """

    vocab_size = None

    def start(self, inputs, num_copies, max_new_tokens):
        """Process ``inputs`` once (encoder pass / prompt prefill).

        Each input row is repeated ``num_copies`` times consecutively (row
        ``r * num_copies + j`` is input ``r``). Returns ``(logits, state)``:
        ``logits`` float32 ``[rows, vocab]`` for the first new token and a
        ``state`` pytree with static shapes sized for ``max_new_tokens``.
        """
        raise NotImplementedError

    def step(self, state, token_ids, index):
        """Feed ``token_ids`` (int32 ``[rows]``) as new token number ``index`` (0-based).

        Returns ``(logits, state)`` with the logits for the following token.
        """
        raise NotImplementedError

    def reorder(self, state, indices):
        """Gather rows of ``state``: new row ``r`` is old row ``indices[r]`` (beam search)."""
        raise NotImplementedError


def _as_int32(args):
    out = []
    for a in args:
        if isinstance(a, (bool, np.bool_)):
            out.append(a)
        elif isinstance(a, (int, np.integer)):
            out.append(np.asarray(a, dtype="int32"))
        else:
            out.append(a)
    return out


def compile_function(fn, variables):
    """Compile ``fn(*args)`` that reads the Keras ``variables`` (e.g. ``model.weights``).

    JAX: ``jax.jit`` with the variables passed as arguments through
    ``keras.StatelessScope`` (weights are not baked into the program);
    TensorFlow: ``tf.function(jit_compile=True)``; other backends: eager.
    Python ints among the arguments become int32 scalars, so a changing step
    index does not trigger a new compilation; a new shape does (one program
    per (batch, length) bucket).
    """
    backend = keras.backend.backend()
    variables = list(variables)
    if backend == "jax":
        import jax

        def pure(values, *args):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn(*args)

        jitted = jax.jit(pure)

        def call(*args):
            return jitted([v.value for v in variables], *_as_int32(args))

        return call
    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(fn, jit_compile=True, reduce_retracing=False)

        def call(*args):
            return compiled(*_as_int32(args))

        return call

    def call(*args):
        return fn(*args)

    return call


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float32)
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def filter_logits(logits, top_k=None, top_p=None):
    """Set logits outside the top-k / nucleus (top-p) support to ``-inf``.

    Order and tie handling follow ``transformers`` (top-k first, then top-p on
    the renormalised distribution; the most likely token is always kept).
    """
    logits = np.array(logits, dtype=np.float64, copy=True)
    if top_k is not None and top_k > 0 and top_k < logits.shape[-1]:
        kth = np.sort(logits, axis=-1)[..., -top_k][..., None]
        logits = np.where(logits < kth, -np.inf, logits)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(logits, axis=-1)  # ascending, as transformers does
        sorted_logits = np.take_along_axis(logits, order, axis=-1)
        probs = np.exp(_log_softmax(sorted_logits))
        cumulative = np.cumsum(probs, axis=-1)
        remove = cumulative <= (1.0 - top_p)
        remove[..., -1] = False
        mask = np.zeros_like(remove)
        np.put_along_axis(mask, order, remove, axis=-1)
        logits = np.where(mask, -np.inf, logits)
    return logits


def _allowed_fn(allowed):
    if allowed is None:
        return None
    if hasattr(allowed, "next_ids"):
        return lambda prefix: allowed.next_ids(prefix)
    if callable(allowed):
        return allowed
    raise TypeError(
        f"allowed must be a snippets.Trie, a callable prefix -> ids, or None; found {type(allowed).__name__}"
    )


def _constrain(scores, prefixes, allowed, end_id, step, min_new_tokens):
    """Apply ``min_new_tokens`` and ``allowed`` to ``scores`` [rows, vocab] in place.

    Returns a boolean array marking rows with no allowed continuation.
    """
    dead = np.zeros(len(scores), bool)
    if end_id is not None and step < min_new_tokens:
        scores[:, end_id] = -np.inf
    if allowed is not None:
        for r, prefix in enumerate(prefixes):
            ids = list(allowed(list(prefix)))
            ids = [i for i in ids if 0 <= int(i) < scores.shape[-1]]
            if not ids:
                dead[r] = True
                scores[r] = -np.inf
                continue
            keep = np.full(scores.shape[-1], -np.inf)
            keep[ids] = 0.0
            scores[r] += keep
    return dead


def _check(max_new_tokens, method, beam_size, temperature, top_p, min_new_tokens):
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, found {max_new_tokens!r}")
    if method not in ("greedy", "beam", "sample"):
        raise ValueError(f"method must be 'greedy', 'beam' or 'sample', found {method!r}")
    if method == "beam" and (not isinstance(beam_size, (int, np.integer)) or beam_size < 1):
        raise ValueError(f"beam_size must be a positive int, found {beam_size!r}")
    if temperature is None or temperature <= 0:
        raise ValueError(f"temperature must be > 0, found {temperature!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], found {top_p!r}")
    if min_new_tokens < 0:
        raise ValueError(f"min_new_tokens must be >= 0, found {min_new_tokens!r}")


def generate(decoder, inputs, max_new_tokens, method="greedy", beam_size=4, top_k=None,
             top_p=None, temperature=1.0, end_id=None, min_new_tokens=0, allowed=None,
             seed=None, length_penalty=1.0):
    """Decode new tokens with a :class:`CachedDecoder`.

    Args:
        decoder: the model's :class:`CachedDecoder`.
        inputs: passed to ``decoder.start`` (a batch).
        max_new_tokens: number of tokens to generate at most.
        method: ``"greedy"``, ``"beam"`` (``beam_size`` beams, length penalty and
            stopping as in ``transformers`` with ``early_stopping=False``) or
            ``"sample"`` (``temperature``, ``top_k``, ``top_p``, ``seed``).
        end_id: a row stops after producing it (it is included); ``None`` means
            exactly ``max_new_tokens`` ids per row.
        min_new_tokens: ``end_id`` is forbidden before this many new tokens.
        allowed: a ``snippets.Trie`` or a callable ``prefix -> allowed ids``
            constraining every step (``prefix`` = new ids so far). A row whose
            prefix has no allowed continuation stops there.

    Returns:
        A list (one per input) of lists of new token ids.
    """
    _check(max_new_tokens, method, beam_size, temperature, top_p, min_new_tokens)
    allowed = _allowed_fn(allowed)
    if method == "beam":
        return _beam_search(decoder, inputs, max_new_tokens, beam_size, end_id,
                            min_new_tokens, allowed, length_penalty)
    logits, state = decoder.start(inputs, 1, max_new_tokens)
    rows = len(logits)
    rng = np.random.default_rng(seed)
    outputs = [[] for _ in range(rows)]
    done = np.zeros(rows, bool)
    for t in range(max_new_tokens):
        scores = _log_softmax(np.asarray(logits))
        if method == "sample":
            scores = filter_logits(scores / temperature, top_k, top_p)
        dead = _constrain(scores, outputs, allowed, end_id, t, min_new_tokens)
        done |= dead
        if method == "greedy":
            tokens = np.argmax(scores, axis=-1)
        else:
            probs = np.exp(_log_softmax(scores))
            u = rng.random(rows)[:, None]
            tokens = np.minimum((np.cumsum(probs, axis=-1) < u).sum(-1), scores.shape[-1] - 1)
            # never pick a zero-probability token through rounding
            bad = ~np.isfinite(scores[np.arange(rows), tokens])
            tokens[bad] = np.argmax(scores[bad], axis=-1)
        for r in range(rows):
            if not done[r]:
                outputs[r].append(int(tokens[r]))
        if end_id is not None:
            done |= tokens == end_id
        if done.all() or t == max_new_tokens - 1:
            break
        feed = np.where(done, 0 if end_id is None else end_id, tokens).astype("int32")
        logits, state = decoder.step(state, feed, t)
    return outputs


def _beam_search(decoder, inputs, max_new_tokens, num_beams, end_id, min_new_tokens,
                 allowed, length_penalty):
    """Beam search with the semantics of ``transformers`` (``early_stopping=False``)."""
    logits, state = decoder.start(inputs, num_beams, max_new_tokens)
    rows, vocab = np.asarray(logits).shape
    batch = rows // num_beams
    k = 2 * num_beams
    running = [[[] for _ in range(num_beams)] for _ in range(batch)]
    running_scores = np.full((batch, num_beams), -1e9)
    running_scores[:, 0] = 0.0
    finished = [[] for _ in range(batch)]  # (score, seq) best first, at most num_beams
    searching = np.ones(batch, bool)  # early-stop heuristic unsatisfied
    for t in range(max_new_tokens):
        scores = _log_softmax(np.asarray(logits))
        prefixes = [seq for b in range(batch) for seq in running[b]]
        dead = _constrain(scores, prefixes, allowed, end_id, t, min_new_tokens)
        scores = scores.reshape(batch, num_beams, vocab)
        dead = dead.reshape(batch, num_beams)
        last = t == max_new_tokens - 1
        new_running, new_scores, sources = [], np.zeros((batch, num_beams)), []
        for b in range(batch):
            # beams with no allowed continuation end where they are
            for j in np.nonzero(dead[b])[0]:
                if running_scores[b, j] > -1e8 and searching[b] and t > 0:
                    _add_finished(finished[b], running_scores[b, j] / (t ** length_penalty),
                                  running[b][j], num_beams)
            acc = (running_scores[b][:, None] + scores[b]).reshape(-1)
            acc = np.where(np.isnan(acc), -np.inf, acc)
            top = np.argpartition(-acc, k - 1)[:k] if k < acc.size else np.arange(acc.size)
            top = top[np.lexsort((top, -acc[top]))]  # best first, lower index on ties
            cand_beam, cand_tok, cand_score = top // vocab, top % vocab, acc[top]
            hits = np.full(k, last)
            if end_id is not None:
                hits |= cand_tok == end_id
            if searching[b]:
                for rank in range(min(num_beams, k)):
                    if hits[rank] and cand_score[rank] > -1e8:
                        seq = running[b][cand_beam[rank]] + [int(cand_tok[rank])]
                        _add_finished(finished[b], cand_score[rank] / ((t + 1) ** length_penalty),
                                      seq, num_beams)
            keep = np.where(hits, cand_score - 1e9, cand_score)
            order = np.argsort(-keep, kind="stable")[:num_beams]
            beams = []
            for n, c in enumerate(order):
                beams.append(running[b][cand_beam[c]] + [int(cand_tok[c])])
                new_scores[b, n] = keep[c]
                sources.append(b * num_beams + int(cand_beam[c]))
            new_running.append(beams)
            # early-stop heuristic of transformers (early_stopping=False)
            if searching[b] and len(finished[b]) == num_beams:
                best_possible = new_scores[b, 0] / ((t + 1) ** length_penalty)
                if not best_possible > finished[b][-1][0]:
                    searching[b] = False
        running, running_scores = new_running, new_scores
        if last or not searching.any():
            break
        tokens = np.array([seq[-1] for b in range(batch) for seq in running[b]], "int32")
        state = decoder.reorder(state, np.asarray(sources, "int32"))
        logits, state = decoder.step(state, tokens, t)
    results = []
    for b in range(batch):
        if finished[b]:
            results.append(list(finished[b][0][1]))
        else:  # no hypothesis could finish (e.g. constrained to nothing)
            results.append(list(running[b][0]))
    return results


def _add_finished(bucket, score, seq, num_beams):
    """Keep the ``num_beams`` best finished hypotheses, best first (stable for ties)."""
    bucket.append((float(score), list(seq)))
    bucket.sort(key=lambda item: -item[0])
    del bucket[num_beams:]
