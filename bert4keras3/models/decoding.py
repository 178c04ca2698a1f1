"""Key/value-cached decoding for the ``lm`` / ``unilm`` applications of the encoder families.

:func:`lm_cached_decoder` turns a built :class:`~bert4keras3.models.Transformer`
(``bert``/``roberta``, ``roformer``, ``roformer_v2``, ``gau_alpha``; built with
``with_mlm``) into a :class:`bert4keras3.generation.CachedDecoder` that
:func:`bert4keras3.generation.generate` drives.

Cache layout (static shapes): for a batch of prompts padded to width ``P`` (right
padding with id 0, rounded up to a bucket) and room for ``M`` new tokens (rounded up),
every layer keeps keys and values for ``T = P + M`` slots. Prompt token ``j`` of row ``r``
sits in slot ``j`` (slots ``L_r .. P-1`` are padding and masked out); new token ``t``
sits in slot ``P + t`` for every row, with position id ``L_r + t`` (absolute position for
BERT, rotary position for RoFormer / RoFormerV2 / GAU-alpha). A new token sees the
``L_r`` prompt slots and the new-token slots up to itself, which is exactly what the
full model sees when it is re-run on ``prompt + generated`` (LM: causal; UniLM: the
prompt is segment 0, new tokens are segment 1), so the cached decode reproduces the
uncached one.

The prefill (prompt pass) and the one-token step are compiled with
:func:`bert4keras3.generation.compile_function`, once per (batch, prompt bucket,
cache length) and kept on the transformer object across ``generate`` calls.
"""
import weakref

import keras
import numpy as np
from keras import ops

from bert4keras3 import backend as B
from bert4keras3.generation import CachedDecoder, bucket_length, compile_function, gather_rows

__all__ = ["lm_cached_decoder", "LMCachedDecoder"]

#: prompt widths and new-token counts are rounded up to multiples of this
BUCKET = 16

#: transformer -> {(kind, rows, prompt_width, cache_length): compiled function}
_COMPILED = weakref.WeakKeyDictionary()


def lm_cached_decoder(transformer):
    """Return a :class:`LMCachedDecoder` for a transformer built with ``application="lm"``
    or ``"unilm"`` and an MLM head (``with_mlm=True`` / ``"linear"``).

    Example::

        obj = build_transformer_model(config, ckpt, model="roformer", application="unilm",
                                      with_mlm=True, return_keras_model=False)
        ids = generation.generate(lm_cached_decoder(obj), [token_ids, segment_ids], 32)
    """
    return LMCachedDecoder(transformer)


class LMCachedDecoder(CachedDecoder):
    """Cached decoder of an encoder family used as LM / UniLM (see the module docstring).

    ``start(inputs, ...)``: LM ``inputs`` are prompt ids ``[batch, len]`` (0-padded on
    the right); UniLM ``inputs`` are ``[token_ids, segment_ids]``.
    """

    def __init__(self, transformer):
        from bert4keras3.models.bert import BERT
        from bert4keras3.models.gau import GAU_alpha

        app = getattr(transformer, "application", None)
        if app not in ("lm", "unilm"):
            raise ValueError(
                "cached generation needs a model built with application='lm' or 'unilm'; "
                f"found application={app!r} (an encoder sees the whole sequence, so it "
                "cannot decode left to right)"
            )
        if isinstance(transformer, GAU_alpha):
            self.family = "gau"
        elif isinstance(transformer, BERT):
            self.family = "bert"
        else:
            raise ValueError(
                "lm_cached_decoder supports bert, roberta, roformer, roformer_v2 and gau_alpha; "
                f"found {type(transformer).__name__}"
            )
        if not transformer.with_mlm:
            raise ValueError(
                "cached generation needs the MLM head for next-token logits: build the model "
                "with with_mlm=True (or 'linear'); found with_mlm=False"
            )
        if transformer.model is None:
            raise ValueError("the transformer is not built yet; call build() first")
        self.transformer = transformer
        self.application = app
        self.vocab_size = transformer.vocab_size
        self.rotary = self.family == "gau" or bool(getattr(transformer, "rotary", False))
        self.segments = getattr(transformer, "segment_vocab_size", 0) > 0
        if app == "unilm" and not self.segments:
            raise ValueError("application='unilm' needs segment embeddings; found "
                             "segment_vocab_size=0")
        self.prompt_width = None
        self.cache_length = None

    # -- model pieces (called inside the compiled functions) ---------------
    def _layer(self, name):
        return self.transformer.layers[name]

    def _embed(self, token_ids, segment_ids, positions):
        t = self.transformer
        x = ops.take(self._layer("Embedding-Token").embeddings, token_ids, axis=0)
        if self.segments:
            x = x + ops.take(self._layer("Embedding-Segment").embeddings, segment_ids, axis=0)
        if not self.rotary:
            table = self._layer("Embedding-Position").embeddings
            positions = ops.minimum(positions, t.max_position - 1)
            x = x + ops.take(table, positions, axis=0)
        x = self._layer("Embedding-Norm")(x)
        if "Embedding-Mapping" in t.layers:
            x = self._layer("Embedding-Mapping")(x)
        return x

    def _block(self, index, x, positions, attend_kv):
        """One transformer block; ``attend_kv(index, k, v)`` returns ``(keys, values, mask)``."""
        t = self.transformer
        if self.family == "gau":
            name = f"Transformer-{index}-GatedAttentionUnit"
            gau = self._layer(name)
            u, q, k, v = gau.project(x, positions)
            keys, values, mask = attend_kv(index, k, v)
            o = gau.attend(u, q, keys, values, mask)
            return self._layer(f"{name}-Norm")(x + o)
        name = f"Transformer-{index}-MultiHeadSelfAttention"
        att = self._layer(name)
        k, v = att.project_kv(x, x)
        q, k = att.rotate(att.project_q(x), positions), att.rotate(k, positions)
        keys, values, mask = attend_kv(index, k, v)
        o = att.attend(q, keys, values, mask)
        x = t.norm(x + o, f"{name}-Norm")
        name = f"Transformer-{index}-FeedForward"
        return t.norm(x + self._layer(name)(x), f"{name}-Norm")

    def _logits(self, x):
        """MLM head without its final activation: ``[rows, 1, hidden] -> [rows, vocab]``."""
        return self.transformer.apply_mlm_head(x)[:, 0]

    # -- compiled functions -------------------------------------------------
    def _prefill_fn(self, width, length):
        t = self.transformer
        unilm = self.application == "unilm"

        def prefill(token_ids, segment_ids, lengths):
            rows = ops.shape(token_ids)[0]
            positions = ops.broadcast_to(ops.arange(width, dtype="int32")[None], (rows, width))
            x = self._embed(token_ids, segment_ids, positions)
            keys_ok = ops.not_equal(token_ids, 0)[:, None, None, :]
            if unilm:
                mask = ops.logical_and(keys_ok, B.unilm_mask(segment_ids)[:, None])
            else:
                mask = ops.logical_and(keys_ok, B.causal_mask(width)[None, None])
            cache_k, cache_v = [], []

            def attend_kv(index, k, v):
                pad = [[0, 0], [0, length - width]] + [[0, 0]] * (len(k.shape) - 2)
                cache_k.append(ops.pad(k, pad))
                pad = [[0, 0], [0, length - width]] + [[0, 0]] * (len(v.shape) - 2)
                cache_v.append(ops.pad(v, pad))
                return k, v, mask

            for index in range(t.num_hidden_layers):
                x = self._block(index, x, positions, attend_kv)
            last = ops.take_along_axis(x, ops.reshape(lengths - 1, (-1, 1, 1)), axis=1)
            state = {"k": cache_k, "v": cache_v, "lengths": lengths}
            return self._logits(last), state

        return prefill

    def _step_fn(self, width, length):
        t = self.transformer
        segment = 1 if self.application == "unilm" else 0

        def step(state, token_ids, index):
            lengths = state["lengths"]
            index = ops.cast(index, "int32")
            positions = (lengths + index)[:, None]
            tokens = ops.cast(token_ids, "int32")[:, None]
            segment_ids = ops.full(ops.shape(tokens), segment, dtype="int32")
            x = self._embed(tokens, segment_ids, positions)
            slot = width + index
            slots = ops.arange(length, dtype="int32")[None]
            visible = ops.logical_or(
                slots < lengths[:, None],
                ops.logical_and(slots >= width, slots <= slot),
            )
            mask = visible[:, None, None, :]
            new_k, new_v = [], []

            def attend_kv(i, k, v):
                zeros = [0] * (len(k.shape) - 2)
                keys = ops.slice_update(state["k"][i], [0, slot] + zeros,
                                        ops.cast(k, state["k"][i].dtype))
                zeros = [0] * (len(v.shape) - 2)
                values = ops.slice_update(state["v"][i], [0, slot] + zeros,
                                          ops.cast(v, state["v"][i].dtype))
                new_k.append(keys)
                new_v.append(values)
                return keys, values, mask

            for i in range(t.num_hidden_layers):
                x = self._block(i, x, positions, attend_kv)
            return self._logits(x), {"k": new_k, "v": new_v, "lengths": lengths}

        return step

    def _compiled(self, kind, rows, width, length):
        cache = _COMPILED.setdefault(self.transformer, {})
        key = (kind, rows, width, length)
        if key not in cache:
            build = self._prefill_fn if kind == "prefill" else self._step_fn
            cache[key] = compile_function(build(width, length), self.transformer.model.weights)
        return cache[key]

    # -- CachedDecoder API ----------------------------------------------------
    def _parse(self, inputs):
        if self.application == "unilm":
            if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
                raise ValueError(
                    "UniLM generation expects inputs=[token_ids, segment_ids]; found "
                    f"{type(inputs).__name__}"
                    + (f" of length {len(inputs)}" if isinstance(inputs, (list, tuple)) else "")
                )
            token_ids, segment_ids = (_as_batch(a, n) for a, n in zip(inputs, ("token_ids",
                                                                                "segment_ids")))
            if token_ids.shape != segment_ids.shape:
                raise ValueError(
                    f"token_ids and segment_ids must have the same shape; found "
                    f"{token_ids.shape} and {segment_ids.shape}"
                )
        else:
            if isinstance(inputs, (list, tuple)) and len(inputs) == 1 and \
                    np.ndim(inputs[0]) == 2:
                inputs = inputs[0]
            token_ids = _as_batch(inputs, "token_ids")
            segment_ids = np.zeros_like(token_ids)
        nonzero = token_ids != 0
        lengths = nonzero.sum(axis=1).astype("int32")
        if (lengths == 0).any():
            raise ValueError(f"every prompt needs at least one token; rows "
                             f"{np.nonzero(lengths == 0)[0].tolist()} are all padding (id 0)")
        right_padded = nonzero == (np.arange(token_ids.shape[1])[None] < lengths[:, None])
        if not right_padded.all():
            bad = np.nonzero(~right_padded.all(axis=1))[0].tolist()
            raise ValueError(f"prompts must be padded with id 0 on the right only; rows {bad} "
                             "have a 0 before a token")
        return token_ids, segment_ids, lengths

    def start(self, inputs, num_copies, max_new_tokens):
        token_ids, segment_ids, lengths = self._parse(inputs)
        t = self.transformer
        if self.segments and segment_ids.max(initial=0) >= t.segment_vocab_size:
            raise ValueError(f"segment ids must be < {t.segment_vocab_size}; found "
                             f"{int(segment_ids.max())}")
        if token_ids.max(initial=0) >= self.vocab_size or token_ids.min(initial=0) < 0:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}); found "
                             f"[{int(token_ids.min())}, {int(token_ids.max())}]")
        if not self.rotary and int(lengths.max()) + max_new_tokens > t.max_position:
            raise ValueError(
                f"prompt length {int(lengths.max())} + max_new_tokens {max_new_tokens} exceeds "
                f"the model's max_position {t.max_position}"
            )
        rows = len(token_ids)
        width = bucket_length(int(lengths.max()), BUCKET)
        length = width + bucket_length(max_new_tokens, BUCKET)
        pad = width - token_ids.shape[1]
        if pad > 0:
            token_ids = np.pad(token_ids, [[0, 0], [0, pad]])
            segment_ids = np.pad(segment_ids, [[0, 0], [0, pad]])
        else:
            token_ids, segment_ids = token_ids[:, :width], segment_ids[:, :width]
        self.prompt_width, self.cache_length = width, length
        fn = self._compiled("prefill", rows, width, length)
        logits, state = fn(token_ids.astype("int32"), segment_ids.astype("int32"), lengths)
        logits = np.asarray(ops.convert_to_numpy(logits), dtype="float32")
        if num_copies > 1:
            logits = np.repeat(logits, num_copies, axis=0)
            state = keras.tree.map_structure(lambda x: ops.repeat(x, num_copies, axis=0), state)
        return logits, state

    def step(self, state, token_ids, index):
        if self.prompt_width is None:
            raise RuntimeError("LMCachedDecoder.step called before start")
        token_ids = np.asarray(token_ids, dtype="int32").reshape(-1)
        fn = self._compiled("step", len(token_ids), self.prompt_width, self.cache_length)
        logits, state = fn(state, token_ids, int(index))
        return np.asarray(ops.convert_to_numpy(logits), dtype="float32"), state

    def reorder(self, state, indices):
        return gather_rows(state, np.asarray(indices, dtype="int32"))


def _as_batch(x, name):
    """A 2-D int array from an array or a list of (possibly ragged) id lists (0-padded)."""
    if isinstance(x, (list, tuple)) and x and all(np.ndim(r) == 1 for r in x):
        width = max(len(r) for r in x)
        out = np.zeros((len(x), width), dtype="int64")
        for i, r in enumerate(x):
            out[i, :len(r)] = r
        x = out
    x = np.asarray(ops.convert_to_numpy(x) if not isinstance(x, np.ndarray) else x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D batch [batch, length]; found shape {x.shape}")
    if not np.issubdtype(x.dtype, np.integer):
        if np.any(x != np.round(x)):
            raise ValueError(f"{name} must hold integer ids; found dtype {x.dtype}")
    return x.astype("int64")
