"""The generation engine: greedy, sampling and beam search, compiled end to end.

Two kinds of decoders feed it:

* a :class:`CachedDecoder` (every model of the package: T5, the ``lm`` / ``unilm``
  applications of the encoders) is traceable: ``prefill`` and ``step`` are written in
  ``keras.ops`` around the model's own graph code with a static-shape key/value cache.
  The whole decode (prefill, then a ``while_loop`` over steps with the search, the
  constraints and the stopping rules inside) is one compiled program on JAX and
  TensorFlow, so a decode makes one host call, not one per token;
* a :class:`HostDecoder` (Python/NumPy ``start`` / ``step`` / ``reorder``) is driven by a
  host loop; :class:`bert4keras3.snippets.AutoRegressiveDecoder` uses it.

The search itself is written once, in ``keras.ops``: one :class:`Sampler` subclass per
strategy (:class:`GreedySampler`, :class:`RandomSampler`, :class:`BeamSampler`) on a
shared base, with the logit processors (repetition penalty, ``min_new_tokens``,
``allowed`` constraints) shared by all. The compiled program and the host loop call the
same ``update``. A :class:`~bert4keras3.snippets.Trie` is flattened to arrays
(:func:`compile_trie`) and followed on the device; a Python callable ``allowed`` or a
``streamer`` callback runs the host loop (one round trip per token).
"""
import numbers
import weakref

import numpy as np

import keras
from keras import ops

__all__ = [
    "CachedDecoder",
    "HostDecoder",
    "Sampler",
    "GreedySampler",
    "RandomSampler",
    "BeamSampler",
    "CompiledFunction",
    "compile_function",
    "compile_trie",
    "generate",
    "filter_logits",
    "bucket_length",
    "gather_rows",
    "host_calls",
]

NEG_INF = float("-inf")
#: beams below this score are impossible (the initial copies start at -1e9)
_IMPOSSIBLE = -1e8


def bucket_length(n, multiple=16):
    """Round ``n`` up to a positive multiple of ``multiple`` (compilation buckets)."""
    return max(multiple, -(-int(n) // multiple) * multiple)


def gather_rows(state, indices):
    """Take rows ``indices`` (int32, axis 0) of every tensor of a state pytree (beam reordering)."""
    return keras.tree.map_structure(lambda x: ops.take(x, indices, axis=0), state)


def _repeat_rows(state, copies):
    if copies == 1:
        return state
    return keras.tree.map_structure(lambda x: ops.repeat(x, copies, axis=0), state)


# ---------------------------------------------------------------------------
# compilation
# ---------------------------------------------------------------------------

_HOST_CALLS = [0]


def host_calls():
    """Number of calls of compiled functions made from the host so far (all of them).

    A compiled decode adds exactly one; a host loop adds at least one per token.
    """
    return _HOST_CALLS[0]


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


class CompiledFunction:
    """``fn(*args)`` compiled for the current backend, reading Keras ``variables``.

    JAX: ``jax.jit`` with the variables passed as arguments through
    ``keras.StatelessScope`` (weights are not baked into the program); TensorFlow:
    ``tf.function(jit_compile=True)``; PyTorch: eager under ``torch.no_grad()``.
    Python ints among the arguments become int32 scalars, so a changing step index
    does not trigger a new compilation; a new shape does. ``calls`` counts host calls,
    ``traces`` the times ``fn`` itself ran (tracing, or every call when eager).
    """

    def __init__(self, fn, variables=()):
        self.fn = fn
        self.variables = list(variables)
        self.calls = 0
        self.traces = 0
        self.backend = keras.backend.backend()
        ref = weakref.ref(self)

        def traced(*args):
            me = ref()
            if me is not None:
                me.traces += 1
            return fn(*args)

        if self.backend == "jax":
            import jax

            variables = self.variables

            def pure(values, *args):
                with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                    return traced(*args)

            self._compiled = jax.jit(pure)
        elif self.backend == "tensorflow":
            import tensorflow as tf

            self._compiled = tf.function(traced, jit_compile=True, reduce_retracing=False)
        else:
            self._compiled = traced

    def __call__(self, *args):
        self.calls += 1
        _HOST_CALLS[0] += 1
        args = _as_int32(args)
        if self.backend == "jax":
            return self._compiled([v.value for v in self.variables], *args)
        if self.backend == "torch":
            import torch

            args = keras.tree.map_structure(
                lambda a: ops.convert_to_tensor(a) if isinstance(a, np.ndarray) else a, args)
            with torch.no_grad():
                return self._compiled(*args)
        return self._compiled(*args)


def compile_function(fn, variables=()):
    """Compile ``fn`` (see :class:`CompiledFunction`)."""
    return CompiledFunction(fn, variables)


# ---------------------------------------------------------------------------
# decoders
# ---------------------------------------------------------------------------

class CachedDecoder:
    """Traceable model side of generation (``keras.ops`` only); subclass it.

    * ``prepare(inputs, max_new_tokens)`` (host, NumPy): validate and pad the inputs;
      returns ``(arrays, key)``: a pytree of arrays and a hashable static key (shapes
      that the traced functions need as Python ints, e.g. cache length).
    * ``prefill(arrays, key)`` (traced): returns ``(logits, cache, static)``: float32
      logits ``[rows, vocab]`` for the first new token, the key/value ``cache`` (a pytree,
      batch-major, reordered by beam search) and ``static`` (batch-major tensors the steps
      read but never change, e.g. encoder keys/values or prompt lengths).
    * ``step(cache, static, token_ids, index, key)`` (traced): feed ``token_ids`` (int32
      ``[rows]``) as new token number ``index``; returns ``(logits, cache)``.
    * ``variables()``: the Keras variables the traced functions read.

    ``owner`` (the model object) keeps the compiled programs, so they are freed with it.
    """

    vocab_size = None
    owner = None

    def prepare(self, inputs, max_new_tokens):
        raise NotImplementedError

    def prefill(self, arrays, key):
        raise NotImplementedError

    def step(self, cache, static, token_ids, index, key):
        raise NotImplementedError

    def variables(self):
        return []

    def program(self, key, build):
        """The compiled program ``key`` of this decoder's owner (built once by ``build()``)."""
        owner = self.owner if self.owner is not None else self
        programs = owner.__dict__.setdefault("_generation_programs", {})
        if key not in programs:
            programs[key] = build()
        return programs[key]


class HostDecoder:
    """Python (NumPy) model side of generation, driven by the host loop; subclass it.

    * ``start(inputs, num_copies, max_new_tokens)``: returns ``(logits, state)``, logits
      ``[rows, vocab]`` for the first new token, each input repeated ``num_copies`` times
      consecutively (row ``r * num_copies + j`` is input ``r``);
    * ``step(state, token_ids, index)``: feed ``token_ids`` as new token ``index``;
      returns ``(logits, state)``;
    * ``reorder(state, indices)``: new row ``r`` is old row ``indices[r]`` (beam search).
    """

    vocab_size = None

    def start(self, inputs, num_copies, max_new_tokens):
        raise NotImplementedError

    def step(self, state, token_ids, index):
        raise NotImplementedError

    def reorder(self, state, indices):
        raise NotImplementedError


# ---------------------------------------------------------------------------
# tries on the device
# ---------------------------------------------------------------------------

def compile_trie(trie):
    """Flatten a :class:`~bert4keras3.snippets.Trie` into arrays for on-device decoding.

    States are trie nodes (0 = root, -1 = no allowed continuation). The children of
    state ``s`` are edges ``offsets[s] .. offsets[s + 1] - 1`` of ``tokens`` / ``targets``
    (sorted by token); both are padded with ``width`` (the largest fan-out) entries so a
    fixed window of ``width`` edges can be read from any state. Cached on the trie until
    it changes. Returns ``{"offsets", "tokens", "targets"}`` (int32) and ``width``.
    """
    version = getattr(trie, "_version", None)
    cached = getattr(trie, "_compiled", None)
    if cached is not None and cached[0] == version and version is not None:
        return cached[1], cached[2]
    root = trie._root
    nodes = [root]
    offsets, tokens, targets = [0], [], []
    index = {id(root): 0}
    i = 0
    while i < len(nodes):
        node = nodes[i]
        for token in sorted(node.children):
            child = node.children[token]
            index[id(child)] = len(nodes)
            nodes.append(child)
            tokens.append(token)
            targets.append(index[id(child)])
        offsets.append(len(tokens))
        i += 1
    width = max(1, max((len(n.children) for n in nodes), default=1))
    arrays = {
        "offsets": np.asarray(offsets, "int32"),
        "tokens": np.asarray(tokens + [0] * width, "int32"),
        "targets": np.asarray(targets + [-1] * width, "int32"),
    }
    if version is not None:
        trie._compiled = (version, arrays, width)
    return arrays, width


def _trie_window(trie, states, width):
    s = ops.maximum(states, 0)
    start = ops.take(trie["offsets"], s, axis=0)
    stop = ops.take(trie["offsets"], s + 1, axis=0)
    idx = start[:, None] + ops.arange(width, dtype="int32")[None]
    valid = ops.logical_and(idx < stop[:, None], (states >= 0)[:, None])
    return idx, valid


def _trie_allowed(trie, states, width, vocab):
    """Boolean ``[rows, vocab]``: the tokens allowed after each row's trie state."""
    idx, valid = _trie_window(trie, states, width)
    toks = ops.take(trie["tokens"], idx, axis=0)
    toks = ops.where(ops.logical_and(valid, toks < vocab), toks, 0)
    rows = ops.shape(states)[0]
    r = ops.broadcast_to(ops.arange(rows, dtype="int32")[:, None], ops.shape(toks))
    indices = ops.stack([ops.reshape(r, (-1,)), ops.reshape(toks, (-1,))], axis=1)
    counts = ops.scatter(indices, ops.reshape(ops.cast(valid, "int32"), (-1,)), (rows, vocab))
    return counts > 0


def _trie_advance(trie, states, tokens, width):
    idx, valid = _trie_window(trie, states, width)
    toks = ops.take(trie["tokens"], idx, axis=0)
    match = ops.logical_and(valid, toks == ops.cast(tokens, "int32")[:, None])
    target = ops.sum(ops.where(match, ops.take(trie["targets"], idx, axis=0), 0), axis=1)
    return ops.where(ops.any(match, axis=1), target, -1)


# ---------------------------------------------------------------------------
# logit processors and filters
# ---------------------------------------------------------------------------

def filter_logits(logits, top_k=None, top_p=None):
    """Set logits outside the top-k / nucleus (top-p) support to ``-inf`` (``keras.ops``).

    Semantics of ``transformers``: top-k keeps every logit >= the k-th largest, then
    top-p keeps the most likely tokens whose cumulative probability (ascending order)
    exceeds ``1 - top_p``; the most likely token is always kept.
    """
    logits = ops.cast(logits, "float32")
    vocab = logits.shape[-1]
    neg = ops.full_like(logits, NEG_INF)
    if top_k is not None and 0 < int(top_k) < vocab:
        kth = ops.top_k(logits, int(top_k))[0][..., -1:]
        logits = ops.where(logits < kth, neg, logits)
    if top_p is not None:
        order = ops.argsort(logits, axis=-1)  # ascending
        sorted_logits = ops.take_along_axis(logits, order, axis=-1)
        cumulative = ops.cumsum(ops.softmax(sorted_logits, axis=-1), axis=-1)
        remove = cumulative <= (1.0 - ops.cast(top_p, "float32"))
        last = ops.arange(vocab) == vocab - 1
        remove = ops.logical_and(remove, ops.logical_not(last))
        inverse = ops.argsort(order, axis=-1)
        remove = ops.take_along_axis(remove, inverse, axis=-1)
        logits = ops.where(remove, neg, logits)
    return logits


def _log_softmax(x):
    return ops.log_softmax(ops.cast(x, "float32"), axis=-1)


def _uniform(seed, step, rows):
    """Counter-based uniform numbers in [0, 1), one per row (same on every backend)."""
    def mix(x):  # murmur3 finaliser on int32 with logical shifts
        def shr(v, k):
            return ops.bitwise_and(ops.right_shift(v, k), (1 << (32 - k)) - 1)
        x = ops.bitwise_xor(x, shr(x, 16))
        x = x * np.int32(-2048144789)  # 0x85EBCA6B
        x = ops.bitwise_xor(x, shr(x, 13))
        x = x * np.int32(-1028477387)  # 0xC2B2AE35
        return ops.bitwise_xor(x, shr(x, 16))

    row = ops.arange(rows, dtype="int32")
    x = mix(ops.cast(seed, "int32") * np.int32(-1640531535) + ops.cast(step, "int32"))
    x = mix(x + row * np.int32(-1028477379))
    return ops.cast(ops.bitwise_and(ops.right_shift(x, 8), (1 << 24) - 1), "float32") / (1 << 24)


class _Config:
    """Static (compile-time) search settings; ``params`` holds the dynamic ones."""

    __slots__ = ("method", "beams", "copies", "top_k", "top_p", "penalty", "window", "id_range",
                 "ends", "stops", "stop_width", "trie_width", "host_mask", "length")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))

    def key(self):
        return tuple(getattr(self, k) for k in self.__slots__)


def _is_end(tokens, params, cfg):
    if not cfg.ends:
        return ops.zeros_like(tokens, dtype="bool")
    return ops.any(ops.cast(tokens, "int32")[..., None] == params["end_ids"], axis=-1)


def _stop_match(seq, t, params, cfg):
    """True where ``seq`` (``[rows, length]``, written up to ``t``) ends with a stop sequence."""
    if not cfg.stops:
        return ops.zeros((ops.shape(seq)[0],), dtype="bool")
    width = cfg.stop_width
    pos = t - width + 1 + ops.arange(width, dtype="int32")
    tail = ops.take(seq, ops.maximum(pos, 0), axis=1)  # [rows, width]
    tail = ops.where((pos >= 0)[None], tail, -3)
    stops = params["stop_sequences"]  # [n, width], left-padded with -1
    ok = ops.logical_or(stops[None] == -1, stops[None] == tail[:, None])
    return ops.any(ops.all(ok, axis=-1), axis=-1)


def _repetition_penalty(x, seq, t, params, cfg):
    """Penalise ids among the last ``window`` generated tokens (``transformers``' rule)."""
    rows, length = ops.shape(seq)
    vocab = x.shape[-1]
    pos = ops.arange(length, dtype="int32")[None]
    use = pos < t
    if cfg.window is not None:
        use = ops.logical_and(use, pos >= t - cfg.window)
    if cfg.id_range is not None:
        lo, hi = cfg.id_range
        use = ops.logical_and(use, ops.logical_and(seq >= lo, seq < hi))
    use = ops.broadcast_to(use, ops.shape(seq))
    r = ops.broadcast_to(ops.arange(rows, dtype="int32")[:, None], ops.shape(seq))
    indices = ops.stack([ops.reshape(r, (-1,)), ops.reshape(ops.cast(seq, "int32"), (-1,))], 1)
    seen = ops.scatter(indices, ops.reshape(ops.cast(use, "int32"), (-1,)), (rows, vocab)) > 0
    p = ops.cast(params["repetition_penalty"], x.dtype)
    return ops.where(seen, ops.where(x > 0, x / p, x * p), x)


def _constrain(x, t, allowed, params, cfg):
    """``min_new_tokens`` (end ids forbidden before) and the ``allowed`` mask."""
    neg = ops.full_like(x, NEG_INF)
    if cfg.ends:
        vocab = x.shape[-1]
        is_end = ops.any(ops.arange(vocab, dtype="int32")[:, None] == params["end_ids"][None],
                         axis=-1)
        early = ops.logical_and(is_end[None], t < params["min_new_tokens"])
        x = ops.where(early, neg, x)
    if allowed is not None:
        x = ops.where(allowed, x, neg)
    return x


# ---------------------------------------------------------------------------
# samplers
# ---------------------------------------------------------------------------

class Sampler:
    """One search strategy; subclasses define how hypotheses are extended.

    ``update(state, logits, t, allowed, u, params)`` consumes the logits for new token
    ``t`` (0-based) and returns ``(state, tokens, parents)``: the tokens to feed and, for
    beam search, the rows they extend (``None`` otherwise). ``finished(state)`` ends the
    loop early; ``result(state, t)`` returns ``(sequences, lengths, scores)``.
    """

    def __init__(self, cfg):
        self.cfg = cfg

    def init(self, rows):
        raise NotImplementedError

    def update(self, state, logits, t, allowed, u, params):
        raise NotImplementedError

    def finished(self, state):
        raise NotImplementedError

    def result(self, state, t):
        raise NotImplementedError


class GreedySampler(Sampler):
    """One hypothesis per row; the next token is the most likely one."""

    def init(self, rows):
        length = self.cfg.length
        return {
            "seq": ops.zeros((rows, length), "int32"),
            "length": ops.zeros((rows,), "int32"),
            "done": ops.zeros((rows,), "bool"),
            "ends": ops.zeros((rows,), "int32"),
            "score": ops.zeros((rows,), "float32"),
        }

    def pick(self, x, u, params):
        return ops.cast(ops.argmax(x, axis=-1), "int32")

    def update(self, state, logits, t, allowed, u, params):
        cfg = self.cfg
        logits = ops.cast(logits, "float32")
        x = logits
        if cfg.penalty:
            x = _repetition_penalty(x, state["seq"], t, params, cfg)
        x = _constrain(x, t, allowed, params, cfg)
        tokens = self.pick(x, u, params)
        if allowed is not None or cfg.ends:
            # a row whose every token is forbidden ends here
            dead = ops.logical_not(ops.any(x > NEG_INF, axis=-1))
            active = ops.logical_not(ops.logical_or(state["done"], dead))
        else:
            dead = state["done"]
            active = ops.logical_not(dead)
        written = ops.where(active, tokens, 0)
        seq = ops.slice_update(state["seq"], [ops.zeros_like(t), t], written[:, None])
        # log-probability of the chosen token without materialising the log-softmax
        chosen = (ops.take_along_axis(logits, tokens[:, None], axis=1)[:, 0]
                  - ops.logsumexp(logits, axis=-1))
        is_end = ops.logical_and(active, _is_end(tokens, params, cfg))
        ends = state["ends"] + ops.cast(is_end, "int32")
        stop = ops.logical_or(ops.logical_and(is_end, ends >= params["min_ends"]),
                              ops.logical_and(active, _stop_match(seq, t, params, cfg)))
        done = ops.logical_or(ops.logical_or(state["done"], dead), stop)
        pad = params["end_ids"][0] if cfg.ends else 0
        feed = ops.where(active, tokens, ops.cast(pad, "int32"))
        state = {
            "seq": seq,
            "length": state["length"] + ops.cast(active, "int32"),
            "done": done,
            "ends": ends,
            "score": state["score"] + ops.where(active, chosen, 0.0),
        }
        return state, feed, None

    def finished(self, state):
        return ops.all(state["done"])

    def result(self, state, t):
        return state["seq"], state["length"], state["score"]


class RandomSampler(GreedySampler):
    """Ancestral sampling with ``temperature``, ``top_k`` and ``top_p``.

    ``u`` holds one uniform number per row; the token is drawn by inverting the CDF of
    the filtered distribution (the host loop passes NumPy randoms, the compiled loop a
    counter-based generator seeded by ``seed``).
    """

    def pick(self, x, u, params):
        cfg = self.cfg
        x = x / ops.cast(params["temperature"], "float32")
        x = filter_logits(x, cfg.top_k, params["top_p"] if cfg.top_p else None)
        probs = ops.softmax(x, axis=-1)
        cdf = ops.cumsum(probs, axis=-1)
        vocab = x.shape[-1]
        tokens = ops.sum(ops.cast(cdf < ops.cast(u, "float32")[:, None] * cdf[:, -1:], "int32"),
                         axis=-1)
        tokens = ops.minimum(tokens, vocab - 1)
        # never pick a zero-probability token through rounding
        zero = ops.take_along_axis(probs, tokens[:, None], axis=1)[:, 0] <= 0
        return ops.where(zero, ops.cast(ops.argmax(x, axis=-1), "int32"), tokens)


class BeamSampler(Sampler):
    """Beam search with ``transformers``' semantics (``early_stopping=False``).

    Scores are sums of log-probabilities; a finished hypothesis of ``n`` tokens scores
    ``sum / n ** length_penalty``. Among the ``2 * beams`` best candidates of a step, those
    ending (an end id, a stop sequence, or the last step) that rank in the first ``beams``
    join the finished set (the ``beams`` best are kept); the others continue. A batch entry
    stops once its finished set is full and no running beam can beat its worst member.
    A beam with no allowed continuation finishes as it is.
    """

    def init(self, rows):
        k, length = self.cfg.beams, self.cfg.length
        batch = rows // k
        first = ops.cast(ops.arange(k) == 0, "float32")
        return {
            "seq": ops.zeros((batch, k, length), "int32"),
            "scores": ops.broadcast_to((first - 1.0) * 1e9, (batch, k)),
            "ends": ops.zeros((batch, k), "int32"),
            "fseq": ops.zeros((batch, k, length), "int32"),
            "fscores": ops.full((batch, k), NEG_INF, "float32"),
            "flen": ops.zeros((batch, k), "int32"),
            "searching": ops.ones((batch,), "bool"),
        }

    def update(self, state, logits, t, allowed, u, params):
        cfg, k = self.cfg, self.cfg.beams
        batch = ops.shape(state["scores"])[0]
        length = cfg.length
        logp = _log_softmax(logits)
        vocab = logp.shape[-1]
        flat_seq = ops.reshape(state["seq"], (-1, length))
        if cfg.penalty:
            logp = _repetition_penalty(logp, flat_seq, t, params, cfg)
        logp = _constrain(logp, t, allowed, params, cfg)
        logp = ops.reshape(logp, (batch, k, vocab))
        scores, searching = state["scores"], state["searching"]
        tf_ = ops.cast(t, "float32")
        lp = ops.cast(params["length_penalty"], "float32")
        # beams with no allowed continuation finish as they are
        dead = ops.logical_not(ops.any(logp > NEG_INF, axis=-1))
        add_dead = ops.logical_and(ops.logical_and(dead, scores > _IMPOSSIBLE),
                                   ops.logical_and(searching[:, None], t > 0))
        dead_scores = ops.where(add_dead, scores / ops.power(ops.maximum(tf_, 1.0), lp), NEG_INF)
        # the 2k best extensions
        acc = scores[:, :, None] + logp
        acc = ops.where(ops.isnan(acc), NEG_INF, acc)
        cand_scores, cand_idx = ops.top_k(ops.reshape(acc, (batch, k * vocab)), 2 * k)
        cand_beam = ops.cast(cand_idx // vocab, "int32")
        cand_tok = ops.cast(cand_idx % vocab, "int32")
        cand_seq = ops.take_along_axis(state["seq"], cand_beam[:, :, None], axis=1)
        zero = ops.zeros_like(t)
        cand_seq = ops.slice_update(cand_seq, [zero, zero, t], cand_tok[:, :, None])
        is_end = _is_end(cand_tok, params, cfg)
        cand_ends = ops.take_along_axis(state["ends"], cand_beam, axis=1) + ops.cast(is_end, "int32")
        stop = ops.reshape(_stop_match(ops.reshape(cand_seq, (-1, length)), t, params, cfg),
                           (batch, 2 * k))
        last = t >= params["max_new_tokens"] - 1
        hits = ops.logical_or(ops.logical_and(is_end, cand_ends >= params["min_ends"]), stop)
        hits = ops.logical_or(hits, last)
        # finished: the candidates ending among the k best join the k best finished ones
        top = (ops.arange(2 * k) < k)[None]
        add = ops.logical_and(ops.logical_and(hits, top), cand_scores > _IMPOSSIBLE)
        add = ops.logical_and(add, searching[:, None])
        new_scores = ops.where(add, cand_scores / ops.power(tf_ + 1.0, lp), NEG_INF)
        pool_scores = ops.concatenate([state["fscores"], dead_scores, new_scores[:, :k]], 1)
        pool_seq = ops.concatenate([state["fseq"], state["seq"], cand_seq[:, :k]], 1)
        full = ops.ones((batch, k), "int32")
        pool_len = ops.concatenate([state["flen"], full * t, full * (t + 1)], 1)
        fscores, order = ops.top_k(pool_scores, k)
        fseq = ops.take_along_axis(pool_seq, order[:, :, None], axis=1)
        flen = ops.take_along_axis(pool_len, order, axis=1)
        # running: the best k candidates that did not end
        keep = ops.where(hits, cand_scores - 1e9, cand_scores)
        run_scores, order = ops.top_k(keep, k)
        beams = ops.take_along_axis(cand_beam, order, axis=1)
        tokens = ops.take_along_axis(cand_tok, order, axis=1)
        seq = ops.take_along_axis(cand_seq, order[:, :, None], axis=1)
        ends = ops.take_along_axis(cand_ends, order, axis=1)
        # early stop (transformers, early_stopping=False)
        full_set = ops.all(fscores > NEG_INF, axis=1)
        best_possible = run_scores[:, 0] / ops.power(tf_ + 1.0, lp)
        beaten = ops.logical_not(best_possible > fscores[:, -1])
        searching = ops.logical_and(searching, ops.logical_not(ops.logical_and(full_set, beaten)))
        parents = ops.reshape(ops.arange(batch, dtype="int32")[:, None] * k + beams, (-1,))
        state = {"seq": seq, "scores": run_scores, "ends": ends, "fseq": fseq,
                 "fscores": fscores, "flen": flen, "searching": searching}
        return state, ops.reshape(tokens, (-1,)), parents

    def finished(self, state):
        return ops.logical_not(ops.any(state["searching"]))

    def result(self, state, t):
        """The ``copies`` best finished hypotheses per input (running ones if none finished)."""
        n = self.cfg.copies
        batch = ops.shape(state["scores"])[0]
        finished = state["fscores"][:, :n] > NEG_INF
        seq = ops.where(finished[:, :, None], state["fseq"][:, :n], state["seq"][:, :n])
        lengths = ops.where(finished, state["flen"][:, :n], ops.zeros_like(state["flen"][:, :n]) + t)
        scores = ops.where(finished, state["fscores"][:, :n], state["scores"][:, :n])
        return (ops.reshape(seq, (batch * n, self.cfg.length)), ops.reshape(lengths, (-1,)),
                ops.reshape(scores, (-1,)))


_SAMPLERS = {"greedy": GreedySampler, "sample": RandomSampler, "beam": BeamSampler}


# ---------------------------------------------------------------------------
# drivers
# ---------------------------------------------------------------------------

_UPDATES = {}


def _compiled_update(cfg):
    """The sampler's ``update`` + trie bookkeeping, compiled once per configuration."""
    key = cfg.key()
    if key not in _UPDATES:
        sampler = _SAMPLERS[cfg.method](cfg)

        def update(state, logits, t, host_mask, u, params, trie_state):
            allowed = host_mask if cfg.host_mask else None
            if cfg.trie_width:
                allowed = _trie_allowed(params["trie"], trie_state, cfg.trie_width,
                                        logits.shape[-1])
            state, tokens, parents = sampler.update(state, logits, t, allowed, u, params)
            if cfg.trie_width:
                if parents is not None:
                    trie_state = ops.take(trie_state, parents, axis=0)
                trie_state = _trie_advance(params["trie"], trie_state, tokens, cfg.trie_width)
            return state, tokens, parents, trie_state, sampler.finished(state)

        _UPDATES[key] = (sampler, compile_function(update))
    return _UPDATES[key]


def _program(decoder, key, cfg, vocab):
    """One compiled program: prefill, then the whole search loop on the device."""
    sampler = _SAMPLERS[cfg.method](cfg)

    def run(arrays, params):
        logits, cache, static = decoder.prefill(arrays, key)
        copies = cfg.beams if cfg.method == "beam" else cfg.copies
        logits, cache, static = (_repeat_rows(x, copies) for x in (logits, cache, static))
        rows = ops.shape(logits)[0]
        state = sampler.init(rows)
        trie_state = ops.zeros((rows,), "int32")
        if cfg.method == "sample":
            u_seed = params["seed"]

        def cond(t, logits, cache, state, trie_state):
            return ops.logical_and(t < params["max_new_tokens"],
                                   ops.logical_not(sampler.finished(state)))

        def body(t, logits, cache, state, trie_state):
            allowed = None
            if cfg.trie_width:
                allowed = _trie_allowed(params["trie"], trie_state, cfg.trie_width, vocab)
            u = _uniform(u_seed, t, rows) if cfg.method == "sample" else None
            state, tokens, parents = sampler.update(state, logits, t, allowed, u, params)
            if parents is not None:
                cache = gather_rows(cache, parents)
                trie_state = ops.take(trie_state, parents, axis=0)
            if cfg.trie_width:
                trie_state = _trie_advance(params["trie"], trie_state, tokens, cfg.trie_width)
            logits, cache = decoder.step(cache, static, tokens, t, key)
            return t + 1, ops.cast(logits, "float32"), cache, state, trie_state

        t = ops.convert_to_tensor(0, "int32")
        t, logits, cache, state, trie_state = ops.while_loop(
            cond, body, (t, ops.cast(logits, "float32"), cache, state, trie_state))
        return sampler.result(state, t)

    return compile_function(run, decoder.variables())


class _CompiledHost(HostDecoder):
    """A :class:`CachedDecoder` driven step by step from the host (callable constraints)."""

    def __init__(self, decoder):
        self.decoder = decoder
        self.vocab_size = decoder.vocab_size

    def start(self, inputs, num_copies, max_new_tokens):
        decoder = self.decoder
        arrays, key = decoder.prepare(inputs, max_new_tokens)
        self.key = key

        def prefill(arrays):
            logits, cache, static = decoder.prefill(arrays, key)
            return tuple(_repeat_rows(x, num_copies) for x in (logits, cache, static))

        variables = decoder.variables()
        fn = decoder.program(("host-prefill", key, num_copies),
                             lambda: compile_function(prefill, variables))
        self._step = decoder.program(
            ("host-step", key),
            lambda: compile_function(lambda c, s, tok, i: decoder.step(c, s, tok, i, key),
                                     variables))
        self._gather = decoder.program(("host-gather",), lambda: compile_function(gather_rows))
        logits, cache, static = fn(arrays)
        return logits, (cache, static)

    def step(self, state, token_ids, index):
        cache, static = state
        logits, cache = self._step(cache, static, token_ids, index)
        return logits, (cache, static)

    def reorder(self, state, indices):
        cache, static = state
        return self._gather(cache, indices), static


def _to_list(x):
    return np.asarray(ops.convert_to_numpy(x))


def _host_loop(decoder, inputs, max_new_tokens, cfg, params, allowed, rng, streamer):
    """Python loop: one host round trip per token (callable ``allowed``, streaming, NumPy
    decoders). The search is the same compiled ``update`` as in the device loop."""
    sampler, update = _compiled_update(cfg)
    copies = cfg.beams if cfg.method == "beam" else cfg.copies
    logits, state = decoder.start(inputs, copies, max_new_tokens)
    logits = np.asarray(ops.convert_to_numpy(logits), "float32")
    rows, vocab = logits.shape
    search = sampler.init(rows)
    trie_state = np.zeros(rows, "int32")
    t = 0
    for t in range(max_new_tokens):
        mask = np.ones((rows, vocab), bool)
        if cfg.host_mask:
            seqs = _to_list(search["seq"]).reshape(rows, -1)
            mask = np.zeros((rows, vocab), bool)
            for r in range(rows):
                prefix = [int(x) for x in seqs[r, :t]]
                ids = [int(i) for i in allowed(prefix)]
                bad = [i for i in ids if not 0 <= i < vocab]
                if bad:
                    raise ValueError(f"allowed returned id(s) {bad} outside the vocabulary "
                                     f"[0, {vocab})")
                mask[r, ids] = True
        u = rng.random(rows).astype("float32") if cfg.method == "sample" else np.zeros(rows, "float32")
        search, tokens, parents, trie_state, done = update(search, logits, t, mask, u, params,
                                                           trie_state)
        if streamer is not None:
            streamer(t, [int(x) for x in _to_list(tokens)])
        if bool(_to_list(done)) or t == max_new_tokens - 1:
            break
        if parents is not None:
            state = decoder.reorder(state, _to_list(parents).astype("int32"))
        logits, state = decoder.step(state, _to_list(tokens).astype("int32"), t)
        logits = np.asarray(ops.convert_to_numpy(logits), "float32")
    return sampler.result(search, t + 1)


def _check(max_new_tokens, method, beam_size, temperature, top_k, top_p, min_new_tokens,
           num_return_sequences, repetition_penalty):
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, found {max_new_tokens!r}")
    if method not in _SAMPLERS:
        raise ValueError(f"method must be 'greedy', 'beam' or 'sample', found {method!r}")
    if method == "beam" and (not isinstance(beam_size, (int, np.integer)) or beam_size < 1):
        raise ValueError(f"beam_size must be a positive int, found {beam_size!r}")
    if temperature is None or temperature <= 0:
        raise ValueError(f"temperature must be > 0, found {temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 0):
        raise ValueError(f"top_k must be a non-negative int or None, found {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], found {top_p!r}")
    if min_new_tokens < 0:
        raise ValueError(f"min_new_tokens must be >= 0, found {min_new_tokens!r}")
    if not isinstance(num_return_sequences, (int, np.integer)) or num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be a positive int, found "
                         f"{num_return_sequences!r}")
    if method == "greedy" and num_return_sequences > 1:
        raise ValueError("greedy decoding returns one sequence per input; use method='sample' "
                         f"or 'beam' for num_return_sequences={num_return_sequences}")
    if method == "beam" and num_return_sequences > beam_size:
        raise ValueError(f"num_return_sequences ({num_return_sequences}) must be <= beam_size "
                         f"({beam_size})")
    if repetition_penalty is None or repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, found {repetition_penalty!r}")


def _ids(value, name):
    if value is None:
        return []
    values = [value] if isinstance(value, numbers.Integral) else list(value)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int or a list of ints, found {value!r}")
    return [int(v) for v in values]


def generate(decoder, inputs, max_new_tokens, method="greedy", beam_size=4, top_k=None,
             top_p=None, temperature=1.0, end_id=None, min_new_tokens=0, allowed=None,
             seed=None, length_penalty=1.0, repetition_penalty=1.0, repetition_window=None,
             repetition_range=None, stop_sequences=None, num_return_sequences=1,
             return_scores=False, streamer=None, min_ends=1, random=None):
    """Decode new tokens with a :class:`CachedDecoder` (compiled) or a :class:`HostDecoder`.

    Args:
        decoder: the model's decoder.
        inputs: passed to the decoder (a batch).
        max_new_tokens: number of tokens to generate at most.
        method: ``"greedy"``, ``"beam"`` (``beam_size`` beams, ``length_penalty`` and stopping
            as ``transformers`` with ``early_stopping=False``) or ``"sample"``
            (``temperature``, ``top_k``, ``top_p``, ``seed``).
        end_id: an id or a list of ids; a row stops after producing one (it is included).
            ``None``: exactly ``max_new_tokens`` ids per row.
        min_new_tokens: end ids are forbidden before this many new tokens.
        allowed: a ``snippets.Trie`` (followed on the device) or a callable
            ``prefix -> allowed ids`` (host loop) constraining every step; ``prefix`` = new
            ids so far. A row whose prefix has no allowed continuation stops there.
        repetition_penalty: ``transformers``' penalty (> 1 discourages repeats) on ids among
            the last ``repetition_window`` generated tokens (all when ``None``) whose id lies
            in ``repetition_range=(lo, hi)`` (all when ``None``). Greedy / sampling apply it
            to the logits, beam search to the log-probabilities (as ``transformers``).
        stop_sequences: lists of ids; a row stops after its new ids end with one (included).
        num_return_sequences: sequences per input (sampling: independent draws; beam: the
            best finished hypotheses). With more than one, each input gets a list of lists.
        return_scores: also return one score per sequence: the sum of the model's
            log-probabilities of the tokens (greedy, sampling) or the final beam score.
        streamer: ``streamer(step, tokens)`` called after every step with the token of each
            row (greedy / sampling; uses the host loop).
        min_ends: a row ends at its ``min_ends``-th end id (bert4keras' ``min_ends``).
        random: a ``np.random`` generator (or module) for sampling in the host loop
            (default: a generator seeded with ``seed``).

    Returns:
        A list (one per input) of lists of new token ids, or ``(sequences, scores)``.
    """
    _check(max_new_tokens, method, beam_size, temperature, top_k, top_p, min_new_tokens,
           num_return_sequences, repetition_penalty)
    ends = _ids(end_id, "end_id")
    stops = [_ids(s, "stop_sequences") for s in (stop_sequences or [])]
    if any(len(s) == 0 for s in stops):
        raise ValueError("stop_sequences must not contain an empty sequence")
    if streamer is not None and method == "beam":
        raise ValueError("streamer works with greedy and sampling, not beam search")
    if allowed is not None and not (hasattr(allowed, "next_ids") or callable(allowed)):
        raise TypeError("allowed must be a snippets.Trie, a callable prefix -> ids, or None; "
                        f"found {type(allowed).__name__}")
    trie = hasattr(allowed, "next_ids") and hasattr(allowed, "_root")
    host = (not isinstance(decoder, CachedDecoder) or streamer is not None
            or (allowed is not None and not trie))
    width = max(len(s) for s in stops) if stops else 0
    params = {
        "max_new_tokens": np.int32(max_new_tokens),
        "min_new_tokens": np.int32(min_new_tokens),
        "min_ends": np.int32(min_ends),
        "end_ids": np.asarray(ends or [0], "int32"),
        "temperature": np.float32(temperature),
        "top_p": np.float32(1.0 if top_p is None else top_p),
        "length_penalty": np.float32(length_penalty),
        "repetition_penalty": np.float32(repetition_penalty),
        "stop_sequences": np.asarray([[-1] * (width - len(s)) + s for s in stops] or [[-1]],
                                     "int32"),
        "seed": np.int32(np.random.randint(0, 2 ** 31 - 1) if seed is None else seed % (2 ** 31)),
    }
    trie_width = 0
    if trie:
        arrays, trie_width = compile_trie(allowed)
        params["trie"] = arrays
    cfg = _Config(
        method=method, beams=int(beam_size) if method == "beam" else 1,
        copies=int(num_return_sequences), top_k=int(top_k) if top_k else None,
        top_p=top_p is not None and top_p < 1.0, penalty=repetition_penalty != 1.0,
        window=None if repetition_window is None else int(repetition_window),
        id_range=None if repetition_range is None else tuple(int(x) for x in repetition_range),
        ends=bool(ends), stops=bool(stops), stop_width=width, trie_width=trie_width,
        host_mask=host and allowed is not None and not trie,
        length=bucket_length(max_new_tokens),
    )
    if host:
        if isinstance(decoder, CachedDecoder):
            decoder = _CompiledHost(decoder)
        rng = random if random is not None else np.random.default_rng(seed)
        seqs, lengths, scores = _host_loop(decoder, inputs, max_new_tokens, cfg, params,
                                           allowed if cfg.host_mask else None, rng, streamer)
    else:
        arrays, key = decoder.prepare(inputs, max_new_tokens)
        vocab = decoder.vocab_size
        program = decoder.program(("generate", key, cfg.key()),
                                  lambda: _program(decoder, key, cfg, vocab))
        seqs, lengths, scores = program(arrays, params)
    seqs, lengths, scores = _to_list(seqs), _to_list(lengths), _to_list(scores)
    out = [[int(x) for x in seqs[r, :lengths[r]]] for r in range(len(seqs))]
    scores = [float(s) for s in scores]
    n = cfg.copies
    if n > 1:
        out = [out[i:i + n] for i in range(0, len(out), n)]
        scores = [scores[i:i + n] for i in range(0, len(scores), n)]
    return (out, scores) if return_scores else out
