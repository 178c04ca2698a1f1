"""Data utilities, decoders and helpers in the bert4keras style.

Everything here is plain Python / NumPy; Keras and TensorFlow are imported
lazily (only by the helpers that need them), so importing this module is cheap
and safe before forking worker processes.

Main entry points:

* padding / text helpers: :func:`sequence_padding`, :func:`truncate_sequences`,
  :func:`text_segmentate`, :func:`is_string`, :func:`to_array`, :func:`strQ2B`,
  :func:`string_matching`, :func:`lowercase_and_normalize`, :func:`convert_to_unicode`,
  :func:`convert_to_str`;
* files: :class:`open` (bert4keras' opener: encoding / errors, line index of big files);
* training data: :class:`DataGenerator` (``forfit``, ``to_pydataset``,
  ``to_dataset``);
* multiprocessing: :func:`parallel_apply`, :func:`parallel_apply_generator`;
* decoding: :class:`AutoRegressiveDecoder` (beam search / sampling with an
  optional :class:`Trie` constraint), :class:`ViterbiDecoder`;
* misc: :func:`longest_common_substring`, :func:`longest_common_subsequence`,
  :func:`orthogonally_resize`, :func:`softmax`, :func:`log_softmax`,
  :func:`progress`, :func:`is_one_of`, :func:`insert_arguments`,
  :func:`delete_arguments`, :class:`WebServing`, ``uniout`` (a no-op on Python 3).
"""

import builtins
import functools
import json
import os
import pickle
import queue as _queue
import random as _random
import re
import threading
import traceback
import types
import unicodedata

import numpy as np

__all__ = [
    "is_string",
    "to_array",
    "strQ2B",
    "string_matching",
    "convert_to_unicode",
    "convert_to_str",
    "lowercase_and_normalize",
    "open",
    "is_one_of",
    "insert_arguments",
    "delete_arguments",
    "WebServing",
    "uniout",
    "softmax",
    "log_softmax",
    "sequence_padding",
    "truncate_sequences",
    "text_segmentate",
    "progress",
    "to_keras_structure",
    "DataGenerator",
    "WorkerError",
    "parallel_apply_generator",
    "parallel_apply",
    "Trie",
    "AutoRegressiveDecoder",
    "ViterbiDecoder",
    "longest_common_substring",
    "longest_common_subsequence",
    "orthogonally_resize",
]


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def is_string(s):
    """Return True if ``s`` is a ``str``.

    >>> is_string("abc"), is_string(b"abc"), is_string(1)
    (True, False, False)
    """
    return isinstance(s, str)


def to_array(*args):
    """Convert each argument to a NumPy array.

    Returns one array for one argument, otherwise a list of arrays::

        token_ids, segment_ids = to_array(token_ids, segment_ids)
    """
    results = [np.array(a) for a in args]
    return results[0] if len(args) == 1 else results


_builtin_open = builtins.open

#: ``from bert4keras.snippets import uniout`` printed unicode on Python 2; on Python 3
#: there is nothing to do, so the import gets this empty module.
uniout = types.ModuleType("uniout", "bert4keras' Python 2 unicode-printing helper; a no-op on Python 3.")


def strQ2B(ustring):
    """Full-width characters to their half-width forms (ideographic space to space).

    >>> strQ2B("ＡＢＣ，１２３　x")
    'ABC,123 x'
    """
    chars = []
    for ch in ustring:
        code = ord(ch)
        if code == 0x3000:
            code = 0x20
        elif 0xFF01 <= code <= 0xFF5E:
            code -= 0xFEE0
        chars.append(chr(code))
    return "".join(chars)


def string_matching(s, keywords):
    """True if any of the regular expressions ``keywords`` is found in ``s``."""
    return any(re.search(k, s) for k in keywords)


def convert_to_unicode(text, encoding="utf-8", errors="ignore"):
    """Decode ``bytes`` to ``str`` (other values are returned unchanged)."""
    if isinstance(text, bytes):
        return text.decode(encoding, errors=errors)
    return text


def convert_to_str(text, encoding="utf-8", errors="ignore"):
    """``str`` of ``text`` (bytes are decoded; on Python 3 this is :func:`convert_to_unicode`)."""
    return convert_to_unicode(text, encoding, errors)


def lowercase_and_normalize(text):
    """Lower-case, NFD-normalise and drop combining marks (category ``Mn``).

    >>> lowercase_and_normalize("Café")
    'cafe'
    """
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


def is_one_of(x, ys):
    """True if ``x`` *is* one of ``ys`` (identity, so it works for arrays and tensors)."""
    return any(x is y for y in ys)


def insert_arguments(**arguments):
    """Decorator of ``__init__``: accept extra keyword arguments, stored as attributes.

    Each ``name=default`` becomes ``self.name`` (the caller's value if given)::

        class Model(Base):
            @insert_arguments(with_pool=False)
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
    """

    def actual_decorator(func):
        @functools.wraps(func)
        def new_func(self, *args, **kwargs):
            for name, value in arguments.items():
                setattr(self, name, kwargs.pop(name, value))
            return func(self, *args, **kwargs)

        return new_func

    return actual_decorator


def delete_arguments(*arguments):
    """Decorator of ``__init__``: refuse the named keyword arguments with a ``TypeError``."""

    def actual_decorator(func):
        @functools.wraps(func)
        def new_func(self, *args, **kwargs):
            for name in arguments:
                if name in kwargs:
                    raise TypeError(
                        f"{type(self).__name__} got an unexpected keyword argument {name!r}"
                    )
            return func(self, *args, **kwargs)

        return new_func

    return actual_decorator


class open:  # noqa: A001 - bert4keras' name, shadows the builtin on purpose
    """bert4keras' file object: ``open(name, mode='r', encoding=None, errors='strict',
    indexable=False)``.

    Behaves like the builtin ``open`` (iteration, ``read``, ``readline``, ``readlines``,
    ``write``, ``seek``, ``tell``, context manager). In a binary ``mode`` an ``encoding``
    decodes what is read and encodes what is written (the builtin refuses it). With
    ``indexable=True`` the position of every line is recorded once, so ``f[i]`` reads line
    ``i`` and ``len(f)`` counts lines without loading the file; ``indexable`` may also be
    a path where the positions are cached as JSON (read if it exists, written otherwise).

    Example::

        f = open("corpus.txt", encoding="utf-8", indexable="corpus.idx")
        n, line = len(f), f[12345]
    """

    def __init__(self, name, mode="r", encoding=None, errors="strict", indexable=False):
        self.name = os.fspath(name)
        binary = "b" in mode
        if binary:
            self.file = _builtin_open(self.name, mode)
        else:
            self.file = _builtin_open(self.name, mode, encoding=encoding, errors=errors)
        self.encoding = encoding if binary else None  # text mode: the file decodes
        self.errors = errors
        self.iterator = None
        self.offsets = None
        if indexable:
            if is_string(indexable) and os.path.exists(indexable):
                with _builtin_open(indexable) as f:
                    self.offsets = json.load(f)
            else:
                self.create_indexes()
                if is_string(indexable):
                    with _builtin_open(indexable, "w") as f:
                        json.dump(self.offsets, f)

    def _decode(self, text):
        if self.encoding:
            return convert_to_unicode(text, self.encoding, self.errors)
        return text

    def create_indexes(self):
        """Record the offset of every line (shows a progress bar)."""
        from keras.utils import Progbar

        offsets, offset = [], 0
        bar = Progbar(os.path.getsize(self.name), verbose=1)
        self.seek(0)
        while self.file.readline():
            offsets.append(offset)
            offset = self.tell()
            bar.update(offset)
        self.seek(0)
        self.offsets = offsets

    def __getitem__(self, key):
        if self.offsets is None:
            raise TypeError("open(...)[i] needs indexable=True")
        self.seek(self.offsets[key])
        return self.readline()

    def __len__(self):
        if self.offsets is None:
            raise TypeError("len(open(...)) needs indexable=True")
        return len(self.offsets)

    def __iter__(self):
        for line in self.file:
            yield self._decode(line)

    def next(self):
        """The next line."""
        if self.iterator is None:
            self.iterator = self.__iter__()
        return next(self.iterator)

    __next__ = next

    def read(self, *args):
        """Read (and decode) the rest of the file."""
        return self._decode(self.file.read(*args))

    def readline(self):
        """Read (and decode) one line."""
        return self._decode(self.file.readline())

    def readlines(self):
        """Read (and decode) all remaining lines."""
        return [self._decode(line) for line in self.file.readlines()]

    def write(self, text):
        """Write ``text`` (encoded with ``encoding`` in a binary mode)."""
        if self.encoding and isinstance(text, str):
            text = text.encode(self.encoding, errors=self.errors)
        return self.file.write(text)

    def flush(self):
        """Flush the underlying file."""
        self.file.flush()

    def close(self):
        """Close the underlying file."""
        self.file.close()

    def tell(self):
        """Current position."""
        return self.file.tell()

    def seek(self, offset=0):
        """Move to ``offset``."""
        return self.file.seek(offset)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()


def log_softmax(x, axis=-1):
    """Numerically stable ``log(softmax(x))`` in NumPy (``-inf`` entries allowed)."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = x - m
        return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def softmax(x, axis=-1):
    """Numerically stable softmax in NumPy."""
    return np.exp(log_softmax(x, axis=axis))


def _safe_log(p):
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(p, dtype=np.float64))


def progress(iterable, target=None, verbose=1, unit_name="step"):
    """Iterate over ``iterable`` while showing a ``keras.utils.Progbar``.

    ``target`` defaults to ``len(iterable)`` when available (otherwise the bar
    shows a running count). With ``verbose=0`` this is a plain pass-through.

    >>> for x in progress(range(3), verbose=0):
    ...     pass
    """
    if not verbose:
        yield from iterable
        return
    if target is None and hasattr(iterable, "__len__"):
        target = len(iterable)
    from keras.utils import Progbar  # lazy: keeps this module light

    bar = Progbar(target, verbose=verbose, unit_name=unit_name)
    count = 0
    for item in iterable:
        yield item
        count += 1
        bar.update(count)
    if target is None:
        bar.update(count, finalize=True)


# ---------------------------------------------------------------------------
# Padding / text
# ---------------------------------------------------------------------------


def sequence_padding(inputs, length=None, value=0, seq_dims=1, mode="post", dtype=None):
    """Pad (and truncate) a list of arrays to a common shape.

    Each element of ``inputs`` is array-like; its first ``seq_dims`` axes are
    padded with ``value`` up to ``length`` (an int, or one int per padded axis;
    ``None`` = the maximum over ``inputs``). Longer elements are truncated by
    keeping their head (as bert4keras does, also with ``mode='pre'``). Trailing
    axes beyond ``seq_dims`` must agree across elements.

    Returns an ``np.ndarray`` of shape ``(len(inputs), *length, *rest)``.

    >>> sequence_padding([[1, 2, 3], [4]])
    array([[1, 2, 3],
           [4, 0, 0]])
    >>> sequence_padding([[1, 2, 3], [4]], length=2, mode="pre")
    array([[1, 2],
           [0, 4]])
    """
    if mode not in ("post", "pre"):
        raise ValueError(f"sequence_padding: mode must be 'post' or 'pre', got {mode!r}")
    arrays = [np.asarray(x) for x in inputs]
    if not arrays:
        raise ValueError("sequence_padding: expected a non-empty list of sequences, got an empty one")
    if not isinstance(seq_dims, int) or seq_dims < 1:
        raise ValueError(f"sequence_padding: seq_dims must be a positive int, got {seq_dims!r}")
    for k, x in enumerate(arrays):
        if x.ndim < seq_dims:
            raise ValueError(
                f"sequence_padding: element {k} has shape {x.shape}, expected at least "
                f"{seq_dims} dimension(s) (seq_dims={seq_dims})"
            )
    rest = arrays[0].shape[seq_dims:]
    for k, x in enumerate(arrays):
        if x.shape[seq_dims:] != rest:
            raise ValueError(
                f"sequence_padding: trailing dimensions must agree; element 0 has {rest}, "
                f"element {k} has {x.shape[seq_dims:]} (shape {x.shape})"
            )
    if length is None:
        length = [max(x.shape[i] for x in arrays) for i in range(seq_dims)]
    elif np.ndim(length) == 0:
        length = [int(length)] * seq_dims
    else:
        length = [int(v) for v in length]
        if len(length) != seq_dims:
            raise ValueError(
                f"sequence_padding: expected {seq_dims} length(s) (one per seq dim), got {len(length)}"
            )
    if any(v < 0 for v in length):
        raise ValueError(f"sequence_padding: lengths must be >= 0, got {length}")
    if dtype is None:  # empty lists come out as float64; ignore them when others have data
        nonempty = [x for x in arrays if x.size]
        dtype = np.result_type(*nonempty) if nonempty else arrays[0].dtype
    out = np.full((len(arrays), *length, *rest), value, dtype=dtype)
    for k, x in enumerate(arrays):
        src, dst = [], []
        for i in range(seq_dims):
            n = min(x.shape[i], length[i])
            src.append(slice(0, n))
            dst.append(slice(0, n) if mode == "post" else slice(length[i] - n, length[i]))
        out[(k, *dst)] = x[tuple(src)]
    return out


def truncate_sequences(maxlen, indices, *sequences):
    """Truncate several lists in place until their total length is <= maxlen.

    The longest list loses one element per round, at position ``indices``
    (one index for all lists, or one per list; ``-1`` drops from the end).
    Empty/None sequences are dropped from the returned list.
    """
    sequences = [s for s in sequences if s]
    if not isinstance(indices, (list, tuple)):
        indices = [indices] * len(sequences)
    while True:
        lengths = [len(s) for s in sequences]
        if sum(lengths) <= maxlen:
            return sequences
        i = max(range(len(lengths)), key=lambda k: lengths[k])
        sequences[i].pop(indices[i])


def text_segmentate(text, maxlen, seps="\n", strips=None):
    """Split ``text`` into pieces of about ``maxlen`` characters at separators (bert4keras).

    ``seps`` lists separators in priority order (a string is taken character by
    character). The stripped text (whitespace, then the characters of ``strips``) is
    returned whole when it fits in ``maxlen`` or no separator is left. Otherwise it is
    split at ``seps[0]``; the parts (each followed by its separator, except the last) are
    gathered left to right, and the gathered text is emitted once the next non-empty part
    plus one separator would take it past ``maxlen``; every emitted text is split again
    with the remaining separators. As in bert4keras an empty text gives ``['']``.

    >>> text_segmentate("ab。cd。efgh。", 6, seps="。")
    ['ab。cd。', 'efgh。']
    >>> text_segmentate("aaa。b。cc", 4, seps="。")
    ['aaa。', 'b。', 'cc']
    """
    if not is_string(text):
        raise TypeError(f"text_segmentate: expected text as str, got {type(text).__name__}")
    text = text.strip().strip(strips)
    if not seps or len(text) <= maxlen:
        return [text]
    sep, rest = seps[0], seps[1:]
    parts = text.split(sep)
    results, gathered = [], ""
    for i, part in enumerate(parts):
        if gathered and part and len(gathered) + len(part) + 1 > maxlen:
            results.extend(text_segmentate(gathered, maxlen, rest, strips))
            gathered = ""
        gathered += part if i == len(parts) - 1 else part + sep
    if gathered:
        results.extend(text_segmentate(gathered, maxlen, rest, strips))
    return results


# ---------------------------------------------------------------------------
# DataGenerator
# ---------------------------------------------------------------------------


def _is_number(x):
    return isinstance(x, (bool, int, float, complex, np.number, np.bool_))


def _only_numbers(x):
    if isinstance(x, (list, tuple)):
        return all(_only_numbers(v) for v in x)
    return _is_number(x)


def to_keras_structure(batch):
    """A batch in the structure every Keras backend accepts from a generator.

    bert4keras scripts yield ``[token_ids, segment_ids], labels`` with Python lists for
    the multi-input part; ``tf.data`` (Keras' TensorFlow input pipeline) rejects lists,
    so lists of arrays become tuples. A (nested) list of plain numbers becomes one NumPy
    array, and ``None`` entries (``yield [x1, x2], None`` for a ``Loss`` layer model) stay.
    Float arrays of another precision (NumPy's default float64) become ``floatx``, as Keras
    does for arrays passed to ``fit`` (and Keras 2 did for generators too), so a float64
    label array meets float32 predictions in losses and metrics.
    """
    if isinstance(batch, dict):
        return {k: to_keras_structure(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        if batch and _only_numbers(batch):
            return _to_floatx(np.asarray(batch))
        return tuple(to_keras_structure(v) for v in batch)
    return _to_floatx(batch)


def _to_floatx(x):
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        import keras

        if x.dtype != np.dtype(keras.config.floatx()):
            return x.astype(keras.config.floatx())
    return x


def _strip_trailing_none(batch):
    """``(x, None)`` -> ``(x,)``: what Keras reads the same way, and ``tf.data`` can hold."""
    if isinstance(batch, tuple):
        while len(batch) > 1 and batch[-1] is None:
            batch = batch[:-1]
    return batch


_PEEK_BATCHES = 4


def _for_keras(batches):
    """``batches`` as Keras' best input: the generator itself, or on TensorFlow a
    ``tf.data.Dataset`` with dynamic sequence dimensions (see ``DataGenerator.forfit``).

    On TensorFlow the first batches are looked at: an axis (after the batch axis) is
    static only where it has the same size in all of them and is either of size 1
    (``[batch, 1]`` labels) or the last axis of a float array (features, one-hot labels);
    every other axis, such as padded lengths, is dynamic.
    """
    import itertools

    import keras

    if keras.backend.backend() != "tensorflow":
        return batches
    import tensorflow as tf

    peeked = [_strip_trailing_none(b) for b in itertools.islice(batches, _PEEK_BATCHES)]
    if not peeked:
        raise ValueError("DataGenerator.__iter__ yielded no batch")

    def spec(*leaves):
        if any(leaf is None for leaf in leaves):
            raise ValueError(
                "DataGenerator batches may end with None (no targets), but not hold None "
                "in the middle of their structure"
            )
        arrays = [np.asarray(leaf) for leaf in leaves]
        first = arrays[0]
        shape = [None]
        for axis in range(1, first.ndim):
            sizes = {a.shape[axis] for a in arrays}
            size = sizes.pop() if len(sizes) == 1 else None
            fixed = size == 1 or (axis == first.ndim - 1 and first.dtype.kind == "f")
            shape.append(size if size is not None and fixed else None)
        return tf.TensorSpec(shape=shape, dtype=tf.as_dtype(first.dtype))

    signature = tf.nest.map_structure(spec, *peeked)

    def generator():
        yield from peeked
        for batch in batches:
            yield _strip_trailing_none(batch)

    return tf.data.Dataset.from_generator(generator, output_signature=signature)


class DataGenerator:
    """Base class for batch generators (bert4keras API).

    Subclass it and implement ``__iter__(self, random=False)``, drawing
    samples from ``self.sample(random)``, which yields ``(is_end, item)``
    (``is_end`` is True for the last item of the epoch), and yielding batches::

        class Gen(DataGenerator):
            def __iter__(self, random=False):
                X, Y = [], []
                for is_end, (x, y) in self.sample(random):
                    X.append(x); Y.append(y)
                    if len(X) == self.batch_size or is_end:
                        yield sequence_padding(X), np.array(Y)
                        X, Y = [], []

        gen = Gen(data, batch_size=32)
        model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=3)  # any backend
        model.fit(gen.to_pydataset(), epochs=3)                     # any backend

    ``data`` is a sized sequence (shuffled by permutation when ``random``) or
    any iterable (shuffled through a buffer of ``buffer_size`` items, default
    ``1000 * batch_size``). Shuffling uses NumPy's global random state.
    """

    def __init__(self, data, batch_size=32, buffer_size=None):
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataGenerator: batch_size must be a positive int, got {batch_size!r}")
        self.data = data
        self.batch_size = int(batch_size)
        if hasattr(data, "__len__"):
            self.steps = -(-len(data) // self.batch_size)
        else:
            self.steps = None
        self.buffer_size = buffer_size or self.batch_size * 1000

    def __len__(self):
        """Number of batches per epoch (``ceil(len(data) / batch_size)``)."""
        if self.steps is None:
            raise TypeError(
                "DataGenerator: the data has no len(), so the number of steps per epoch is "
                "unknown; pass steps_per_epoch explicitly"
            )
        return self.steps

    def _shuffled(self):
        if self.steps is not None and hasattr(self.data, "__getitem__"):
            for i in np.random.permutation(len(self.data)):
                yield self.data[i]
            return
        cache = []
        for d in self.data:
            cache.append(d)
            if len(cache) >= self.buffer_size:
                yield cache.pop(np.random.randint(len(cache)))
        while cache:
            yield cache.pop(np.random.randint(len(cache)))

    def sample(self, random=False):
        """Yield ``(is_end, item)`` over one epoch, shuffled when ``random``."""
        it = self._shuffled() if random else iter(self.data)
        try:
            current = next(it)
        except StopIteration:
            return
        for nxt in it:
            yield False, current
            current = nxt
        yield True, current

    def __iter__(self, random=False):
        raise NotImplementedError(
            f"{type(self).__name__} must implement __iter__(self, random=False) yielding batches"
        )

    def _batches(self, random):
        """Endless converted batches (see :func:`to_keras_structure`)."""
        while True:
            for d in self.__iter__(random):
                yield to_keras_structure(d)

    def forfit(self, random=True):
        """Endless batches (shuffled by default) for ``model.fit(..., steps_per_epoch=len(gen))``.

        Batches pass through :func:`to_keras_structure` (lists of arrays become tuples),
        so bert4keras' ``yield [token_ids, segment_ids], labels`` works on every backend.
        A generator on JAX and PyTorch. On TensorFlow a ``tf.data.Dataset`` over the same
        batches whose padded (sequence) dimensions are dynamic: Keras' own generator input
        fixes every dimension on which its first two batches agree, so per-batch padded
        lengths would otherwise fail later in the epoch. Iterate it with ``for`` /
        ``iter()`` (``next(iter(gen.forfit()))`` works on every backend).
        """
        return _for_keras(self._batches(random))

    def fortest(self, random=False):
        """Endless ``(inputs,)`` 1-tuples (``batch[0]`` of each batch) for ``model.predict``.

        The 1-tuple is what Keras reads as inputs alone (a bare tuple of arrays would be
        taken for ``(x, y)``). Generator or ``tf.data.Dataset`` as in :meth:`forfit`.
        """
        return _for_keras((d[0],) for d in self._batches(random))

    def to_pydataset(self, random=True, infinite=False, **kwargs):
        """Wrap this generator as a ``keras.utils.PyDataset`` (works on every backend).

        With ``infinite=False`` (needs ``len(data)``) the dataset has
        ``len(self)`` batches per epoch: the epoch's batches are produced
        lazily and kept until the epoch ends, so any index order (``fit``'s
        ``shuffle=True``) and Keras' look-ahead at the first batches are served
        consistently; every sample appears exactly once per epoch. With
        ``infinite=True`` each ``__getitem__`` returns the next batch of
        ``forfit(random)`` (the index is ignored); use ``steps_per_epoch``.
        ``kwargs`` go to ``PyDataset`` (keep ``workers=1``: batches come from
        one Python generator).
        """
        import keras

        gen = self
        if not infinite and self.steps is None:
            raise TypeError(
                "DataGenerator.to_pydataset: the data has no len(); use "
                "to_pydataset(infinite=True) with steps_per_epoch"
            )

        class _GeneratorPyDataset(keras.utils.PyDataset):
            def __init__(self):
                super().__init__(**kwargs)
                self._lock = threading.Lock()
                self._reset()

            def _reset(self):
                self._iter = gen._batches(random) if infinite else iter(gen.__iter__(random))
                self._cache = []

            @property
            def num_batches(self):
                return None if infinite else len(gen)

            def __len__(self):
                if infinite:
                    raise TypeError("an infinite PyDataset has no len()")
                return len(gen)

            def __getitem__(self, index):
                with self._lock:
                    if infinite:
                        return next(self._iter)  # already converted
                    if not 0 <= index < len(gen):
                        raise IndexError(f"batch index {index} out of range [0, {len(gen)})")
                    while len(self._cache) <= index:
                        try:
                            self._cache.append(to_keras_structure(next(self._iter)))
                        except StopIteration:
                            raise IndexError(
                                f"{type(gen).__name__}.__iter__ yielded {len(self._cache)} batches "
                                f"in an epoch, but len() is {len(gen)}"
                            ) from None
                    return self._cache[index]

            def on_epoch_end(self):
                with self._lock:
                    if not infinite:
                        self._reset()

        return _GeneratorPyDataset()

    def to_dataset(self, types, shapes, names=None, padded_batch=False):
        """Build a ``tf.data.Dataset`` from ``forfit()`` (needs TensorFlow).

        As in bert4keras, ``__iter__`` must then yield *single samples*; the
        dataset batches them by ``batch_size`` (``padded_batch=True`` pads
        variable-length dimensions). ``types`` / ``shapes`` mirror the
        structure of one sample (e.g. ``('int32', 'int32')`` and
        ``([None], [None])``). ``names`` turns a sample into a dict: a string
        for one input, a list of strings for a tuple, or a list of lists for a
        tuple of tuples.
        """
        try:
            import tensorflow as tf
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "DataGenerator.to_dataset needs TensorFlow (tf.data), which is not importable "
                f"({e}); install tensorflow-cpu, or use to_pydataset() / forfit() instead"
            ) from e

        if names is None:
            wrap = None
        elif is_string(names):
            wrap = lambda k, v: {k: v}  # noqa: E731
        elif is_string(names[0]):
            wrap = lambda k, v: dict(zip(k, v))  # noqa: E731
        else:
            wrap = lambda k, v: tuple(dict(zip(i, j)) for i, j in zip(k, v))  # noqa: E731

        def generator():
            while True:  # forfit() without its structure conversion: types/shapes describe it
                for d in self.__iter__(True):
                    yield d if wrap is None else wrap(names, d)

        if wrap is not None:
            types, shapes = wrap(names, types), wrap(names, shapes)
        def zip_up(fn, t, s, where="types"):
            # walk ``types``; at each leaf (a dtype) the matching ``shapes`` entry is a shape
            if isinstance(t, dict):
                if not isinstance(s, dict) or set(s) != set(t):
                    raise ValueError(f"to_dataset: shapes {s!r} do not match the structure of {where} {t!r}")
                return {k: zip_up(fn, t[k], s[k]) for k in t}
            if isinstance(t, (list, tuple)):
                if not isinstance(s, (list, tuple)) or len(s) != len(t):
                    raise ValueError(f"to_dataset: shapes {s!r} do not match the structure of {where} {t!r}")
                return tuple(zip_up(fn, a, b) for a, b in zip(t, s))
            return fn(tf.as_dtype(t), tf.TensorShape(s))

        signature = zip_up(lambda t, s: tf.TensorSpec(shape=s, dtype=t), types, shapes)
        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        if padded_batch:
            padded = zip_up(lambda t, s: s, types, shapes)
            return dataset.padded_batch(self.batch_size, padded)
        return dataset.batch(self.batch_size)


# ---------------------------------------------------------------------------
# parallel_apply
# ---------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A function run by :func:`parallel_apply` raised in a worker.

    Attributes: ``index`` (position of the failing item in the input),
    ``remote_traceback`` (the worker's formatted traceback). The original
    exception is chained as ``__cause__`` when it could be transferred.
    """

    def __init__(self, index, description, remote_traceback):
        super().__init__(
            f"parallel_apply: the worker function raised {description} on item {index} "
            f"(input position {index}).\nWorker traceback:\n{remote_traceback}"
        )
        self.index = index
        self.remote_traceback = remote_traceback


_STOP = None


def _worker_loop(func, in_queue, out_queue, seed, use_seed, serialize):
    if use_seed:
        np.random.seed(seed)
        _random.seed(seed)
    while True:
        task = in_queue.get()
        if task is _STOP:
            break
        i, d = task
        try:
            if serialize:
                d = pickle.loads(d)
            r = func(d)
            payload = pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) if serialize else r
            out_queue.put((i, True, payload))
        except BaseException as e:  # report everything to the caller
            tb = traceback.format_exc()
            exc = e
            if serialize:
                try:
                    pickle.loads(pickle.dumps(e))
                except Exception:
                    exc = None
            out_queue.put((i, False, (f"{type(e).__name__}: {e}", tb, exc)))


def parallel_apply_generator(
    func,
    iterable,
    workers,
    max_queue_size,
    dummy=False,
    random_seeds=True,
    unordered=False,
    verbose=0,
    start_method=None,
):
    """Apply ``func`` to every item of ``iterable`` in parallel; yield ``(index, result)``.

    * ``workers``: number of worker processes (threads with ``dummy=True``).
    * ``max_queue_size``: how many items may wait beyond the ones being
      processed (bounds memory for long/infinite iterables).
    * ``random_seeds``: ``True`` reseeds NumPy's and ``random``'s global state
      in each worker process from fresh entropy (forked workers would
      otherwise share it); a list gives worker ``k`` the seed ``seeds[k]``
      (workers beyond the list are not reseeded); ``False``/``None`` leaves the
      state alone. Ignored for threads (they share one global state).
    * ``unordered``: yield results as they complete instead of in input order.
    * ``verbose``: show a ``keras.utils.Progbar``.
    * ``start_method``: multiprocessing start method; default ``'fork'`` where
      available (so closures and lambdas work, as in bert4keras), else the
      platform default (then ``func`` must be picklable).

    If ``func`` raises, the generator raises :class:`WorkerError` (original
    exception as ``__cause__``); a worker process that dies raises
    ``RuntimeError``. Workers are always shut down, also when the caller stops
    iterating early.

    >>> list(parallel_apply_generator(abs, [-1, 2, -3], workers=2, max_queue_size=4, dummy=True))
    [(0, 1), (1, 2), (2, 3)]
    """
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"parallel_apply: workers must be a positive int, got {workers!r}")
    if not isinstance(max_queue_size, (int, np.integer)) or max_queue_size < 1:
        raise ValueError(f"parallel_apply: max_queue_size must be a positive int, got {max_queue_size!r}")
    workers = int(workers)

    if random_seeds is True:
        seeds = [int(s) for s in np.random.SeedSequence().generate_state(workers)]
        use = [True] * workers
    elif random_seeds is None or random_seeds is False:
        seeds, use = [None] * workers, [False] * workers
    else:
        given = list(random_seeds)
        seeds = [given[k] if k < len(given) else None for k in range(workers)]
        use = [k < len(given) for k in range(workers)]

    if dummy:
        in_q, out_q = _queue.Queue(), _queue.Queue()
        procs = [
            threading.Thread(
                target=_worker_loop, args=(func, in_q, out_q, None, False, False), daemon=True
            )
            for _ in range(workers)
        ]
    else:
        import multiprocessing as mp

        if start_method is None and "fork" in mp.get_all_start_methods():
            start_method = "fork"
        ctx = mp.get_context(start_method)
        in_q, out_q = ctx.Queue(), ctx.Queue()
        procs = [
            ctx.Process(
                target=_worker_loop,
                args=(func, in_q, out_q, seeds[k], use[k], True),
                daemon=True,
            )
            for k in range(workers)
        ]
    for p in procs:
        p.start()

    bar = None
    try:
        if verbose:
            from keras.utils import Progbar

            target = len(iterable) if hasattr(iterable, "__len__") else None
            bar = Progbar(target, verbose=verbose)
        it = iter(iterable)
        limit = max_queue_size + workers
        submitted = yielded = received = 0
        exhausted = False
        buffer = {}
        while True:
            while not exhausted and submitted - yielded < limit:
                try:
                    d = next(it)
                except StopIteration:
                    exhausted = True
                    break
                if not dummy:  # pickle here: a failure inside the queue's feeder thread would be lost
                    try:
                        d = pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL)
                    except Exception as e:
                        raise TypeError(
                            f"parallel_apply: item {submitted} of the iterable cannot be pickled for a "
                            f"worker process ({type(e).__name__}: {e}); use dummy=True (threads)"
                        ) from e
                in_q.put((submitted, d))
                submitted += 1
            if received == submitted:
                break
            while True:
                try:
                    i, ok, payload = out_q.get(timeout=0.1)
                    break
                except _queue.Empty:
                    for k, p in enumerate(procs):
                        if not p.is_alive():
                            code = getattr(p, "exitcode", None)
                            raise RuntimeError(
                                f"parallel_apply: worker {k} died unexpectedly (exit code {code}) "
                                f"with {submitted - received} item(s) unfinished"
                            )
            received += 1
            if not ok:
                description, tb, exc = payload
                raise WorkerError(i, description, tb) from exc
            result = pickle.loads(payload) if not dummy else payload
            if unordered:
                ready = [(i, result)]
            else:
                buffer[i] = result
                ready = []
                while yielded + len(ready) in buffer:
                    j = yielded + len(ready)
                    ready.append((j, buffer.pop(j)))
            for item in ready:
                yielded += 1
                if bar is not None:
                    bar.update(yielded)
                yield item
        if bar is not None and bar.target is None:
            bar.update(yielded, finalize=True)
    finally:
        for _ in procs:
            in_q.put(_STOP)
        if dummy:
            for p in procs:
                p.join(timeout=1.0)
        else:
            for p in procs:
                p.join(timeout=1.0)
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=1.0)
            for q in (in_q, out_q):
                q.cancel_join_thread()
                q.close()


def parallel_apply(
    func,
    iterable,
    workers,
    max_queue_size,
    callback=None,
    dummy=False,
    random_seeds=True,
    unordered=False,
    verbose=0,
    start_method=None,
):
    """Apply ``func`` to every item of ``iterable`` with several workers.

    Without ``callback`` returns the list of results (in input order unless
    ``unordered=True``); with ``callback`` calls ``callback(result)`` for each
    result and returns None. Other arguments: see
    :func:`parallel_apply_generator`.

    >>> parallel_apply(abs, [-1, 2, -3], workers=2, max_queue_size=4, dummy=True)
    [1, 2, 3]
    """
    generator = parallel_apply_generator(
        func, iterable, workers, max_queue_size, dummy=dummy, random_seeds=random_seeds,
        unordered=unordered, verbose=verbose, start_method=start_method,
    )
    if callback is None:
        return [r for _, r in generator]
    for _, r in generator:
        callback(r)
    return None


# ---------------------------------------------------------------------------
# Trie
# ---------------------------------------------------------------------------


class _TrieNode:
    __slots__ = ("children", "is_end")

    def __init__(self):
        self.children = {}
        self.is_end = False


class Trie:
    """Prefix tree over sequences of token ids, used to constrain decoding.

    >>> t = Trie([[1, 2, 3], [1, 4]])
    >>> t.next_ids([1]), [1, 4] in t, [1] in t, t.is_prefix([1])
    ([2, 4], True, False, True)
    >>> t.mask([1], vocab_size=6)
    array([False, False,  True, False,  True, False])

    ``next_ids`` and ``mask`` cost O(len(prefix)) dictionary look-ups (plus
    the number of children). The empty sequence may be stored too.
    """

    def __init__(self, sequences=None):
        self._root = _TrieNode()
        self._size = 0
        self._version = 0  # bumped by every change (compiled copies check it)
        if sequences is not None:
            for s in sequences:
                self.insert(s)

    @staticmethod
    def _ids(ids, what):
        if is_string(ids) or not hasattr(ids, "__iter__"):
            raise TypeError(f"Trie: expected {what} as a sequence of ints, got {ids!r}")
        out = []
        for t in ids:
            if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
                raise TypeError(f"Trie: expected integer token ids in {what}, got {t!r} ({type(t).__name__})")
            out.append(int(t))
        return out

    def insert(self, ids):
        """Add one sequence of ids (a no-op if already stored)."""
        node = self._root
        for t in self._ids(ids, "the sequence to insert"):
            child = node.children.get(t)
            if child is None:
                child = node.children[t] = _TrieNode()
            node = child
        if not node.is_end:
            node.is_end = True
            self._size += 1
        self._version += 1

    def _find(self, prefix):
        node = self._root
        for t in prefix:
            node = node.children.get(int(t))
            if node is None:
                return None
        return node

    def next_ids(self, prefix=()):
        """Ids that may follow ``prefix`` (insertion order); ``[]`` if ``prefix`` is not a prefix."""
        node = self._find(prefix)
        return [] if node is None else list(node.children)

    def is_prefix(self, prefix):
        """True if some stored sequence starts with ``prefix`` (a stored sequence counts)."""
        return self._find(prefix) is not None

    def __contains__(self, ids):
        try:
            node = self._find(ids)
        except (TypeError, ValueError):
            return False
        return node is not None and node.is_end

    def mask(self, prefix, vocab_size):
        """Boolean array of length ``vocab_size``: True at the ids allowed after ``prefix``."""
        m = np.zeros(int(vocab_size), dtype=bool)
        ids = self.next_ids(prefix)
        if ids:
            bad = [i for i in ids if not 0 <= i < vocab_size]
            if bad:
                raise ValueError(
                    f"Trie.mask: stored id(s) {bad} fall outside the vocabulary [0, {vocab_size})"
                )
            m[ids] = True
        return m

    def __len__(self):
        return self._size

    def __iter__(self):
        """Yield every stored sequence as a list of ids (depth first, insertion order)."""
        stack = [(self._root, [])]
        while stack:
            node, path = stack.pop()
            if node.is_end:
                yield list(path)
            for t, child in reversed(list(node.children.items())):
                stack.append((child, path + [t]))

    def __repr__(self):
        return f"Trie({len(self)} sequences)"


def _allowed_fn(allowed):
    if allowed is None:
        return None
    if isinstance(allowed, Trie):
        return allowed.next_ids
    if callable(allowed):
        return allowed
    raise TypeError(
        f"allowed must be a Trie or a callable prefix -> allowed next ids, got {type(allowed).__name__}"
    )


# ---------------------------------------------------------------------------
# AutoRegressiveDecoder
# ---------------------------------------------------------------------------


class _PredictDecoder:
    """An :class:`AutoRegressiveDecoder`'s ``predict`` as a host decoder of the engine.

    Rows hold ``inputs`` repeated per hypothesis and the ``output_ids`` so far (start id
    included); ``predict`` sees both, as in bert4keras. ``states`` pass through.

    The engine keeps finished rows (static shapes); ``predict`` sees only the unfinished
    ones (fewer than ``min_ends`` end ids), as bert4keras dropped finished hypotheses
    from its batch: a ``predict`` that walks a trie of ``output_ids`` (KgCLUE) never gets
    a prefix extended past its end. Finished rows get the end id with probability 1.
    """

    def __init__(self, owner, states, temperature, min_ends=1):
        self.owner = owner
        self.states = states
        self.temperature = temperature
        self.min_ends = min_ends
        self.vocab_size = None

    def _call(self, inputs, output_ids):
        logp, self.states = self.owner.predict(inputs, output_ids, self.states,
                                               self.temperature, "logits")
        logp = np.asarray(logp, dtype=np.float32)
        if len(logp) != len(output_ids):
            raise ValueError(f"predict returned {len(logp)} rows for {len(output_ids)} hypotheses")
        self.vocab_size = logp.shape[-1]
        return logp

    def _predict(self, inputs, output_ids):
        end_id = self.owner.end_id
        if end_id is None or self.vocab_size is None:
            return self._call(inputs, output_ids)
        live = np.isin(output_ids, np.atleast_1d(end_id)).sum(axis=1) < self.min_ends
        if live.all():
            return self._call(inputs, output_ids)
        logp = np.full((len(output_ids), self.vocab_size), -np.inf, np.float32)
        logp[:, end_id] = 0.0
        if live.any():
            logp[live] = self._call([i[live] for i in inputs], output_ids[live])
        return logp

    def start(self, inputs, num_copies, max_new_tokens):
        inputs = [np.array([i]) for i in inputs]
        output_ids = self.owner.first_output_ids
        logp = self._predict(inputs, output_ids)
        inputs = [np.repeat(i, num_copies, axis=0) for i in inputs]
        output_ids = np.repeat(output_ids, num_copies, axis=0)
        return np.repeat(logp, num_copies, axis=0), (inputs, output_ids)

    def step(self, state, token_ids, index):
        inputs, output_ids = state
        output_ids = np.concatenate([output_ids, np.asarray(token_ids)[:, None]], 1)
        return self._predict(inputs, output_ids), (inputs, output_ids)

    def reorder(self, state, indices):
        inputs, output_ids = state
        return [i[indices] for i in inputs], output_ids[indices]


class AutoRegressiveDecoder:
    """Base class for autoregressive decoding (bert4keras API) on the generation engine.

    Subclass it and define ``predict`` decorated with :meth:`wraps`::

        class Generator(AutoRegressiveDecoder):
            @AutoRegressiveDecoder.wraps(default_rtype="probas")
            def predict(self, inputs, output_ids, states):
                token_ids = np.concatenate([inputs[0], output_ids], 1)
                return self.last_token(model).predict(token_ids, verbose=0)

        gen = Generator(start_id=None, end_id=sep_id, maxlen=32)
        ids = gen.beam_search([token_ids], topk=4)            # one array
        samples = gen.random_sample([token_ids], n=5, topp=0.9)  # list of arrays

    ``predict`` receives ``inputs`` (the list passed to the decoding method,
    each with a leading batch axis of the number of live hypotheses),
    ``output_ids`` (``[batch, t]``, starting with ``start_id`` unless it is
    None) and ``states``; it returns next-token probabilities (or logits) of
    shape ``[batch, vocab]`` (plus new states with ``use_states=True``).
    Returned sequences include the start id, as in bert4keras.

    The search (beam search, sampling, ``allowed`` constraints, top-k / top-p) is the
    one of :func:`bert4keras3.generation.generate`, driven by a host loop around
    ``predict``. Counted as bert4keras counts them: ``minlen`` is the minimum length of
    ``output_ids`` (start id included) at which a sequence may end (``end_id`` is masked
    before, where bert4keras keeps extending such sequences), ``min_ends`` the number of
    ``end_id`` that end a sequence. ``allowed`` (a :class:`Trie` or a callable) receives
    the generated ids so far (start id excluded) and returns the ids allowed next; a
    hypothesis with no allowed continuation is complete as it stands.
    """

    def __init__(self, start_id, end_id, maxlen, minlen=1):
        if not isinstance(maxlen, (int, np.integer)) or maxlen < 1:
            raise ValueError(f"AutoRegressiveDecoder: maxlen must be a positive int, got {maxlen!r}")
        self.start_id = start_id
        self.end_id = end_id
        self.maxlen = int(maxlen)
        self.minlen = int(minlen)
        self.models = {}
        if start_id is None:
            self.first_output_ids = np.empty((1, 0), dtype=int)
        else:
            self.first_output_ids = np.array([[start_id]])

    @staticmethod
    def wraps(default_rtype="probas", use_states=False):
        """Decorator for ``predict``: declares what it returns and normalises it.

        ``default_rtype``: ``'probas'`` (``predict`` returns probabilities) or
        ``'logits'``. The wrapped method takes ``(inputs, output_ids, states,
        temperature=1, rtype=default_rtype)`` and returns ``(values, states)``
        where ``values`` are probabilities (``rtype='probas'``) or normalised
        log-probabilities (``rtype='logits'``) after temperature scaling,
        computed in log space.
        """
        if default_rtype not in ("probas", "logits"):
            raise ValueError(f"wraps: default_rtype must be 'probas' or 'logits', got {default_rtype!r}")

        def decorator(predict):
            def new_predict(self, inputs, output_ids, states, temperature=1, rtype=default_rtype):
                if rtype not in ("probas", "logits"):
                    raise ValueError(f"predict: rtype must be 'probas' or 'logits', got {rtype!r}")
                out = predict(self, inputs, output_ids, states)
                if use_states:
                    if not isinstance(out, (tuple, list)) or len(out) != 2:
                        raise ValueError(
                            "predict declared use_states=True, so it must return (values, states); "
                            f"got {type(out).__name__}"
                        )
                    values, states = out
                else:
                    values, states = out, None
                values = np.asarray(values, dtype=np.float64)
                if values.ndim == 1:
                    values = values[None]
                if temperature <= 0:
                    raise ValueError(f"temperature must be > 0, got {temperature}")
                if default_rtype == "logits":
                    logp = log_softmax(values / temperature)
                else:
                    logp = _safe_log(values)
                    if temperature != 1:
                        logp = log_softmax(logp / temperature)
                    else:
                        logp = log_softmax(logp)
                return (np.exp(logp) if rtype == "probas" else logp), states

            new_predict.__doc__ = predict.__doc__
            new_predict.__name__ = getattr(predict, "__name__", "predict")
            return new_predict

        return decorator

    def last_token(self, model):
        """A Keras model with ``model``'s inputs returning only the last position's output (cached)."""
        key = id(model)
        if key not in self.models:
            import keras

            outputs = [keras.layers.Lambda(lambda x: x[:, -1])(o) for o in model.outputs]
            self.models[key] = keras.Model(model.inputs, outputs[0] if len(outputs) == 1 else outputs)
        return self.models[key]

    def predict(self, inputs, output_ids, states=None):
        """Return next-token probabilities/logits; override with ``@AutoRegressiveDecoder.wraps``."""
        raise NotImplementedError(
            f"{type(self).__name__} must define predict(self, inputs, output_ids, states) "
            "decorated with @AutoRegressiveDecoder.wraps(...)"
        )

    # -- decoding --------------------------------------------------------

    def _generate(self, inputs, states, temperature, allowed, **kwargs):
        from bert4keras3.generation import generate

        _allowed_fn(allowed)  # validates
        decoder = _PredictDecoder(self, states, temperature, kwargs.get("min_ends", 1))
        n0 = self.first_output_ids.shape[1]
        out = generate(decoder, inputs, self.maxlen, end_id=self.end_id, allowed=allowed,
                       min_new_tokens=max(0, self.minlen - n0 - 1), **kwargs)
        if kwargs.get("num_return_sequences", 1) > 1:
            out = out[0]  # one input, several sequences
        start = [int(t) for t in self.first_output_ids[0]]
        return [np.array(start + list(seq), dtype=int) for seq in out]

    def beam_search(self, inputs, topk, states=None, temperature=1, min_ends=1, allowed=None):
        """Beam search; returns the best sequence (np array, start id included).

        Scores are sums of log-probabilities (``length_penalty=0``). A hypothesis is
        finished when it has produced ``end_id`` ``min_ends`` times; the search keeps the
        ``topk`` best finished ones and stops once no running hypothesis can beat them
        (scores only decrease) or after ``maxlen`` steps. ``allowed`` constrains every
        step (see the class docstring).
        """
        if not isinstance(topk, (int, np.integer)) or topk < 1:
            raise ValueError(f"beam_search: topk must be a positive int, got {topk!r}")
        return self._generate(inputs, states, temperature, allowed, method="beam",
                              beam_size=int(topk), length_penalty=0.0, min_ends=min_ends)[0]

    def random_sample(
        self, inputs, n, topk=None, topp=None, states=None, temperature=1, min_ends=1,
        seed=None, allowed=None,
    ):
        """Draw ``n`` sequences by ancestral sampling; returns a list of np arrays.

        ``topk`` keeps the ``topk`` most probable ids at each step (ties with the
        ``topk``-th are kept); ``topp`` then keeps the smallest most-probable set whose
        probability reaches ``topp`` (nucleus sampling; ``topp >= 1`` keeps everything).
        Randomness comes from ``np.random`` as in bert4keras (``np.random.seed`` makes it
        reproducible), or from a private generator seeded with ``seed``. Sequences are
        listed in the order they finish, unfinished ones last.
        """
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"random_sample: n must be a positive int, got {n!r}")
        if topk is not None and (not isinstance(topk, (int, np.integer)) or topk < 1):
            raise ValueError(f"random_sample: topk must be a positive int or None, got {topk!r}")
        if topp is not None and not topp > 0:
            raise ValueError(f"random_sample: topp must be > 0 or None, got {topp!r}")
        rng = np.random if seed is None else np.random.default_rng(seed)
        out = self._generate(inputs, states, temperature, allowed, method="sample",
                             num_return_sequences=int(n), top_k=topk,
                             top_p=None if topp is None or topp >= 1 else topp,
                             min_ends=min_ends, random=rng)
        return sorted(out, key=len)  # stable: shorter ones finished earlier

    def batch_decode(self, batch_inputs, method="beam_search", verbose=1, **kwargs):
        """Run ``beam_search`` / ``random_sample`` on each item of ``batch_inputs``
        (each a list of inputs), with a ``keras.utils.Progbar`` when ``verbose``.

        >>> # results = gen.batch_decode([[ids1], [ids2]], topk=4, verbose=1)
        """
        if method not in ("beam_search", "random_sample"):
            raise ValueError(f"batch_decode: method must be 'beam_search' or 'random_sample', got {method!r}")
        fn = getattr(self, method)
        return [fn(x, **kwargs) for x in progress(batch_inputs, verbose=verbose)]


def filter_top_k_top_p(logp, topk=None, topp=None):
    """NumPy front of :func:`bert4keras3.generation.filter_logits` (``[batch, vocab]``):
    ids outside the top-k, then top-p (nucleus), support are set to ``-inf``."""
    from keras import ops

    from bert4keras3.generation import filter_logits

    out = filter_logits(np.asarray(logp, dtype=np.float32), topk,
                        None if topp is None or topp >= 1 else topp)
    return np.asarray(ops.convert_to_numpy(out), dtype=np.float64)


__all__.append("filter_top_k_top_p")


# ---------------------------------------------------------------------------
# Viterbi
# ---------------------------------------------------------------------------


class ViterbiDecoder:
    """Viterbi decoding for linear-chain CRF-style scores.

    ``trans[i, j]`` scores the transition from label ``i`` to label ``j``;
    ``starts`` / ``ends`` optionally list the labels allowed first / last.
    ``decode(nodes)`` takes per-position label scores ``[seq_len, num_labels]``
    and returns the label path maximising
    ``sum(nodes[t, y_t]) + sum(trans[y_{t-1}, y_t])``.

    >>> ViterbiDecoder(np.zeros((2, 2))).decode(np.array([[0., 1.], [2., 0.]]))
    array([1, 0])
    """

    def __init__(self, trans, starts=None, ends=None):
        trans = np.asarray(trans, dtype=np.float64)
        if trans.ndim != 2 or trans.shape[0] != trans.shape[1]:
            raise ValueError(f"ViterbiDecoder: trans must be a square matrix, got shape {trans.shape}")
        self.trans = trans
        self.num_labels = trans.shape[0]
        self.starts = None if starts is None else [int(s) for s in starts]
        self.ends = None if ends is None else [int(s) for s in ends]
        self.non_starts = [] if starts is None else [i for i in range(self.num_labels) if i not in self.starts]
        self.non_ends = [] if ends is None else [i for i in range(self.num_labels) if i not in self.ends]

    def decode(self, nodes):
        """Best label path for ``nodes`` (``[seq_len, num_labels]``), as an int array."""
        nodes = np.array(nodes, dtype=np.float64)
        if nodes.ndim != 2 or nodes.shape[1] != self.num_labels:
            raise ValueError(
                f"ViterbiDecoder.decode: expected nodes of shape [seq_len, {self.num_labels}], got {nodes.shape}"
            )
        if len(nodes) == 0:
            return np.zeros(0, dtype=int)
        nodes[0, self.non_starts] = -np.inf
        nodes[-1, self.non_ends] = -np.inf
        score = nodes[0]
        back = []
        for t in range(1, len(nodes)):
            m = score[:, None] + self.trans + nodes[t][None, :]
            arg = np.argmax(m, axis=0)
            back.append(arg)
            score = m[arg, np.arange(self.num_labels)]
        path = [int(np.argmax(score))]
        for arg in reversed(back):
            path.append(int(arg[path[-1]]))
        return np.array(path[::-1], dtype=int)


# ---------------------------------------------------------------------------
# Longest common substring / subsequence
# ---------------------------------------------------------------------------


def longest_common_substring(source, target):
    """Longest common contiguous run of ``source`` and ``target``.

    Returns ``(length, (i0, i1, j0, j1))`` with ``source[i0:i1] == target[j0:j1]``;
    among ties the one ending first in ``source`` (then in ``target``) wins.

    >>> longest_common_substring("abcde", "xcdey")
    (3, (2, 5, 1, 4))
    """
    best, span = 0, (0, 0, 0, 0)
    prev = [0] * (len(target) + 1)
    for i, s in enumerate(source, 1):
        cur = [0] * (len(target) + 1)
        for j, t in enumerate(target, 1):
            if s == t:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best = cur[j]
                    span = (i - best, i, j - best, j)
        prev = cur
    return best, span


def longest_common_subsequence(source, target):
    """Longest common (not necessarily contiguous) subsequence.

    Returns ``(length, mapping)`` where ``mapping`` lists the matched index
    pairs ``(i, j)`` (``source[i] == target[j]``), increasing in both.

    >>> longest_common_subsequence("abcbdab", "bdcaba")[0]
    4
    """
    n, m = len(source), len(target)
    c = np.zeros((n + 1, m + 1), dtype=np.int64)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if source[i - 1] == target[j - 1]:
                c[i, j] = c[i - 1, j - 1] + 1
            else:
                c[i, j] = max(c[i - 1, j], c[i, j - 1])
    mapping = []
    i, j = n, m
    while i > 0 and j > 0:
        if source[i - 1] == target[j - 1] and c[i, j] == c[i - 1, j - 1] + 1:
            mapping.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif c[i - 1, j] >= c[i, j - 1]:
            i -= 1
        else:
            j -= 1
    return int(c[n, m]), mapping[::-1]


# ---------------------------------------------------------------------------
# orthogonally_resize
# ---------------------------------------------------------------------------


def orthogonally_resize(a, new_shape, window=2):
    """Resize a weight array for lossless model enlargement (Su Jianlin's construction).

    Along every axis that grows from ``d`` to ``D``, the axis is cut into
    blocks of ``window`` entries and each block is repeated ``k = ceil(D / d)``
    times in place (``[b0, b0, b1, b1, ...]`` for ``k = 2``), then cut to
    ``D``; shrinking axes are cut. Finally the result is rescaled to keep the
    Frobenius norm of ``a``.

    When every grown axis grows by an integer factor, the hidden vector of the
    enlarged model is the block-repeated small one scaled by ``1/sqrt(k)``:
    for ``W1 (n, h) -> (n, k*h)``, ``b1 (h,) -> (k*h,)`` and
    ``W2 (h, m) -> (k*h, m)``, ``relu(x @ W1' + b1') @ W2' == relu(x @ W1 + b1) @ W2``
    exactly (any positively homogeneous activation). A matrix grown by the
    same factor on both axes maps the block-repeated input to the
    block-repeated output.

    >>> orthogonally_resize(np.array([[1., 2.]]), (1, 4), window=1) * np.sqrt(2)
    array([[1., 1., 2., 2.]])
    """
    a = np.asarray(a)
    new_shape = tuple(int(d) for d in new_shape)
    if a.ndim != len(new_shape):
        raise ValueError(
            f"orthogonally_resize: new_shape {new_shape} has {len(new_shape)} dims, "
            f"the array has {a.ndim} (shape {a.shape})"
        )
    if not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"orthogonally_resize: window must be a positive int, got {window!r}")
    norm = np.linalg.norm(a)
    for axis, (d, D) in enumerate(zip(a.shape, new_shape)):
        if D <= 0:
            raise ValueError(f"orthogonally_resize: new_shape entries must be positive, got {new_shape}")
        k = -(-D // d)
        if k > 1:
            if d % window:
                raise ValueError(
                    f"orthogonally_resize: axis {axis} has size {d}, which must be a multiple of "
                    f"window={window} to grow it to {D}"
                )
            blocks = a.reshape(a.shape[:axis] + (d // window, window) + a.shape[axis + 1:])
            blocks = np.repeat(blocks, k, axis=axis)
            a = blocks.reshape(a.shape[:axis] + (d * k,) + a.shape[axis + 1:])
        a = np.take(a, np.arange(D), axis=axis)
    new_norm = np.linalg.norm(a)
    if new_norm == 0:
        return a.astype(np.result_type(a, np.float32))
    return a * (norm / new_norm)


class WebServing:
    """A minimal JSON web API around Python functions (bert4keras; for quick demos).

    Built on ``bottle`` (``pip install bottle``; ``server='paste'`` also needs ``paste``,
    or pass ``server='wsgiref'``)::

        arguments = {"text": (None, True), "n": (int, False)}
        web = WebServing(port=8864)
        web.route("/gen_synonyms", gen_synonyms, arguments)
        web.start()   # http://127.0.0.1:8864/gen_synonyms?text=...

    ``arguments`` maps each parameter name to ``(converter or None, required)``. Every
    response is ``{"code": 0, "desc": "succeeded", "data": func(**kwargs)}``; code 1 is a
    missing required argument, code 2 an exception raised by ``func``. (bert4keras' TF1
    graph/session juggling is not needed under Keras 3.)
    """

    def __init__(self, host="0.0.0.0", port=8000, server="paste"):
        try:
            import bottle
        except ImportError as e:
            raise ImportError(
                "WebServing needs the bottle package: pip install bottle"
            ) from e
        self.host = host
        self.port = port
        self.server = server
        self.bottle = bottle

    def wraps(self, func, arguments, method="GET"):
        """Wrap ``func`` as a request handler returning a JSON string."""

        def new_func():
            outputs = {"code": 0, "desc": "succeeded", "data": {}}
            request = self.bottle.request
            params = request.GET if method == "GET" else request.POST
            kwargs = {}
            for key, (convert, required) in arguments.items():
                value = params.getunicode(key)
                if value is None:
                    if required:
                        outputs["code"] = 1
                        outputs["desc"] = f'lack of "{key}" argument'
                        return json.dumps(outputs, ensure_ascii=False)
                    continue
                kwargs[key] = convert(value) if convert is not None else value
            try:
                outputs["data"] = func(**kwargs)
            except Exception as e:  # reported to the client, as bert4keras does
                outputs["code"] = 2
                outputs["desc"] = str(e)
            return json.dumps(outputs, ensure_ascii=False)

        return new_func

    def route(self, path, func, arguments, method="GET"):
        """Serve ``func`` at ``path``."""
        self.bottle.route(path, method=method)(self.wraps(func, arguments, method))

    def start(self):
        """Run the server (blocks)."""
        self.bottle.run(host=self.host, port=self.port, server=self.server)
