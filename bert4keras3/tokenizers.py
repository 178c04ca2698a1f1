"""Tokenizers in the bert4keras style: WordPiece (`Tokenizer`) and sentencepiece (`SpTokenizer`).

Pure Python apart from the optional ``sentencepiece`` package; Keras is not needed.

Example::

    from bert4keras3.tokenizers import Tokenizer
    tokenizer = Tokenizer("vocab.txt", do_lower_case=True)
    token_ids, segment_ids = tokenizer.encode("Hello 世界", "second text", maxlen=32)
    tokens = tokenizer.tokenize("Hello 世界")    # ['[CLS]', 'hello', '世', '界', '[SEP]']
    spans = tokenizer.rematch("Hello 世界", tokens)  # [[], [0, 1, 2, 3, 4], [6], [7], []]

Behaviour follows bert4keras where it differs from Hugging Face ``transformers``:
special-token literals such as ``[MASK]`` in raw text are split like any other text
(``[``, ``mask``, ``]``); only ``Cc``/``Cf`` control characters (and U+0000, U+FFFD) are
dropped, private-use and unassigned characters are kept; no NFC normalisation is applied;
words longer than ``word_maxlen`` (default 200) or with no WordPiece segmentation are
kept as the raw word (which ``token_to_id`` maps to ``[UNK]``). ``rematch`` is exact
even for characters that grow when lower-cased or normalised (``İ``), which bert4keras
got wrong.
"""

import functools
import os
import re
import unicodedata
from collections.abc import Mapping

from bert4keras3.snippets import truncate_sequences

__all__ = ["Tokenizer", "SpTokenizer", "TokenizerBase", "load_vocab", "save_vocab"]

# CJK ideograph blocks treated as single-character words (same ranges as BERT/bert4keras).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

# Full-width / CJK punctuation after which `decode` writes no space (bert4keras' list).
_CJK_PUNCTUATION = (
    "\uff02\uff03\uff04\uff05\uff06\uff07\uff08\uff09\uff0a\uff0b\uff0c\uff0d\uff0f"
    "\uff1a\uff1b\uff1c\uff1d\uff1e\uff20\uff3b\uff3c\uff3d\uff3e\uff3f\uff40\uff5b"
    "\uff5c\uff5d\uff5e\uff5f\uff60\uff62\uff63\uff64\u3000\u3001\u3003\u3008\u3009"
    "\u300a\u300b\u300c\u300d\u300e\u300f\u3010\u3011\u3014\u3015\u3016\u3017\u3018"
    "\u3019\u301a\u301b\u301c\u301d\u301e\u301f\u3030\u303e\u303f\u2013\u2014\u2018"
    "\u2019\u201b\u201c\u201d\u201e\u201f\u2026\u2027\ufe4f\ufe51\ufe54\u00b7\uff01"
    "\uff1f\uff61\u3002"
)

_SPACE_CHARS = frozenset(" \t\n\r")

_DECODE_SPACES = re.compile(" +")
_DECODE_CONTRACTION = re.compile(r"' (re|m|s|t|ve|d|ll) ")
_DECODE_TIGHT = re.compile(
    "([%s]) " % "".join(re.escape(c) for c in _CJK_PUNCTUATION + "+-/={(<[")
)
_DECODE_DECIMAL = re.compile(r"(\d\.) (\d)")


def _cp_is_cjk(code):
    for lo, hi in _CJK_RANGES:
        if lo <= code <= hi:
            return True
    return False


def _cp_is_punctuation(code, category):
    return (
        33 <= code <= 47
        or 58 <= code <= 64
        or 91 <= code <= 96
        or 123 <= code <= 126
        or category.startswith("P")
    )


def _char_class(codes):
    """A regex character class body for a sorted list of code points."""
    parts, start, prev = [], None, None
    for code in codes:
        if start is None:
            start = prev = code
        elif code == prev + 1:
            prev = code
        else:
            parts.append((start, prev))
            start = prev = code
    if start is not None:
        parts.append((start, prev))
    out = []
    for lo, hi in parts:
        out.append("\\U%08x" % lo if lo == hi else "\\U%08x-\\U%08x" % (lo, hi))
    return "".join(out)


class _Tables:
    """Character tables built once per process by scanning every code point."""

    def __init__(self):
        split, drop, mn = [], [], []
        for code in range(0x110000):
            ch = chr(code)
            category = unicodedata.category(ch)
            if _cp_is_punctuation(code, category) or _cp_is_cjk(code):
                split.append(code)
            elif ch in _SPACE_CHARS or category == "Zs":
                pass
            elif code == 0 or code == 0xFFFD or category in ("Cc", "Cf"):
                drop.append(code)
            if category == "Mn":
                mn.append(code)
        split_class = _char_class(split)
        # Characters that bert4keras drops while splitting (controls, NUL, U+FFFD).
        self.drop_re = re.compile("[%s]+" % _char_class(drop))
        self.drop_set = frozenset(map(chr, drop))
        # A word is either one punctuation/CJK character, or a maximal run of characters
        # that are neither those nor whitespace (bert4keras' `str.split()` separators).
        self.word_re = re.compile("[%s]|[^%s\\s]+" % (split_class, split_class))
        self.mn_re = re.compile("[%s]+" % _char_class(mn))
        self.mn_set = frozenset(map(chr, mn))
        # Dropping Mn along with the controls is the same as stripping accents first:
        # Mn characters are never punctuation, CJK or whitespace.
        self.drop_lower_re = re.compile("[%s]+" % _char_class(sorted(set(drop) | set(mn))))


@functools.lru_cache(maxsize=None)
def _tables():
    return _Tables()


def _is_string(value):
    return isinstance(value, str)


def _lowercase_and_strip_accents(text):
    """Lower-case, NFD-decompose and drop non-spacing marks (Mn), as bert4keras does."""
    text = text.lower()
    if text.isascii():
        return text
    text = unicodedata.normalize("NFD", text)
    return _tables().mn_re.sub("", text)


def _check_utf8(text):
    """Raise a clear error when ``text`` cannot be encoded as UTF-8 (lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(
            f"text is not valid UTF-8: character {text[error.start]!r} at position "
            f"{error.start} is a lone surrogate; expected text without surrogates"
        ) from None


def load_vocab(dict_path, encoding="utf-8", simplified=False, startswith=None):
    """Read a BERT ``vocab.txt`` (one token per line; the id is the line number).

    A line ``token<whitespace>anything`` keeps only ``token``. With ``simplified=True``
    returns ``(token_dict, keep_tokens)``: tokens given in ``startswith`` come first, then
    every token except those longer than one character whose stem (``##`` removed)
    contains a CJK character or a punctuation character (bert4keras' rule). New ids are
    ``0..n-1`` in that order and ``keep_tokens[new_id] = old_id``, ready for
    ``build_transformer_model(..., keep_tokens=keep_tokens)``.
    """
    dict_path = os.fspath(dict_path)
    if not os.path.isfile(dict_path):
        raise FileNotFoundError(
            f"vocabulary file not found: {dict_path!r}; expected a BERT vocab.txt with one "
            "token per line"
        )
    token_dict = {}
    with open(dict_path, encoding=encoding) as reader:
        for index, line in enumerate(reader):
            line = line.rstrip("\r\n")
            parts = line.split()
            token_dict[parts[0] if parts else line] = index

    if not simplified:
        return token_dict

    new_token_dict, keep_tokens = {}, []
    for token in startswith or []:
        if token not in token_dict:
            raise KeyError(
                f"startswith token {token!r} is not in the vocabulary {dict_path!r}; "
                "expected tokens that the vocabulary contains"
            )
        if token not in new_token_dict:
            new_token_dict[token] = len(new_token_dict)
            keep_tokens.append(token_dict[token])
    for token, index in sorted(token_dict.items(), key=lambda item: item[1]):
        if token in new_token_dict:
            continue
        if len(token) > 1 and any(
            Tokenizer._is_cjk_character(c) or Tokenizer._is_punctuation(c)
            for c in Tokenizer.stem(token)
        ):
            continue
        new_token_dict[token] = len(new_token_dict)
        keep_tokens.append(index)
    return new_token_dict, keep_tokens


def save_vocab(dict_path, token_dict, encoding="utf-8"):
    """Write ``token_dict`` (token -> id, ids ``0..n-1``) as a vocab file, one token per line."""
    ids = sorted(token_dict.values())
    if ids != list(range(len(ids))):
        raise ValueError(
            "save_vocab expects ids 0..n-1 with no gaps or repeats; found "
            f"{len(ids)} tokens with ids from {ids[0] if ids else None} to "
            f"{ids[-1] if ids else None}"
        )
    for token in token_dict:
        if not token or "\n" in token or "\r" in token or token != token.strip():
            raise ValueError(
                f"cannot save token {token!r}: expected a non-empty token without line breaks "
                "or surrounding whitespace"
            )
    with open(os.fspath(dict_path), "w", encoding=encoding) as writer:
        for token, _ in sorted(token_dict.items(), key=lambda item: item[1]):
            writer.write(token + "\n")


class TokenizerBase:
    """Shared logic of `Tokenizer` and `SpTokenizer`: special tokens, `encode`, truncation.

    ``pre_tokenize``: optional callable ``text -> list of words`` applied before the
    subword model (e.g. ``jieba.lcut``). ``token_translate``: optional dict applied to
    every token after tokenization, either token -> token (strings, as in bert4keras) or
    id -> id (ints); `decode` applies the inverse mapping.
    """

    def __init__(
        self, token_start="[CLS]", token_end="[SEP]", pre_tokenize=None, token_translate=None
    ):
        self._token_pad = "[PAD]"
        self._token_unk = "[UNK]"
        self._token_mask = "[MASK]"
        self._token_start = token_start
        self._token_end = token_end
        if pre_tokenize is not None and not callable(pre_tokenize):
            raise TypeError(
                "pre_tokenize must be a callable text -> list of words; found "
                f"{type(pre_tokenize).__name__}"
            )
        self._pre_tokenize = pre_tokenize
        self._token_translate_raw = dict(token_translate or {})
        self._token_translate = {}
        self._token_translate_inv = {}

    def _init_translate(self):
        """Turn ``token_translate`` into token -> token dicts (needs the vocabulary)."""
        mapping = {}
        for key, value in self._token_translate_raw.items():
            if _is_string(key) and _is_string(value):
                mapping[key] = value
            elif isinstance(key, int) and isinstance(value, int):
                mapping[self.id_to_token(key)] = self.id_to_token(value)
            else:
                raise TypeError(
                    "token_translate must map token -> token (str) or id -> id (int); found "
                    f"{key!r} -> {value!r}"
                )
        self._token_translate = mapping
        self._token_translate_inv = {v: k for k, v in mapping.items()}

    @property
    def vocab_size(self):
        """Number of ids in the vocabulary."""
        return self._vocab_size

    def tokenize(self, text, maxlen=None):
        """Split ``text`` into tokens, with the start/end tokens added.

        With ``maxlen`` the result is cut to at most ``maxlen`` tokens by dropping tokens
        just before the end token.
        """
        tokens = self._tokenize(text)
        if self._token_translate:
            get = self._token_translate.get
            tokens = [get(token) or token for token in tokens]
        if self._token_start is not None:
            tokens.insert(0, self._token_start)
        if self._token_end is not None:
            tokens.append(self._token_end)
        if maxlen is not None:
            self._check_maxlen(maxlen, self._num_specials())
            index = int(self._token_end is not None) + 1
            truncate_sequences(maxlen, -index, tokens)
        return tokens

    def _num_specials(self):
        return int(self._token_start is not None) + int(self._token_end is not None)

    @staticmethod
    def _check_maxlen(maxlen, minimum):
        if isinstance(maxlen, bool) or not isinstance(maxlen, int):
            raise TypeError(f"maxlen must be an int or None; found {maxlen!r}")
        if maxlen < minimum:
            raise ValueError(
                f"maxlen must be at least {minimum} (room for the special tokens); found {maxlen}"
            )

    def token_to_id(self, token):
        """Id of ``token``."""
        raise NotImplementedError

    def tokens_to_ids(self, tokens):
        """Ids of a list of tokens."""
        return [self.token_to_id(token) for token in tokens]

    def id_to_token(self, i):
        """Token of id ``i``."""
        raise NotImplementedError

    def ids_to_tokens(self, ids):
        """Tokens of a list of ids."""
        return [self.id_to_token(i) for i in ids]

    def encode(
        self, first_text, second_text=None, maxlen=None, pattern="S*E*E", truncate_from="right"
    ):
        """Return ``(token_ids, segment_ids)`` for one text or a pair.

        ``first_text`` / ``second_text`` may be strings or already-tokenized lists (with
        their start/end tokens). ``pattern``: ``'S*E*E'`` (BERT: ``[CLS] a [SEP] b [SEP]``)
        or ``'S*ES*E'`` (the second text keeps its start token). ``maxlen`` bounds the total
        length; tokens are removed one at a time from the longer text, at the position given
        by ``truncate_from``: ``'right'`` (before the end token), ``'left'`` (after the start
        token) or an int index into each token list.
        """
        if pattern not in ("S*E*E", "S*ES*E"):
            raise ValueError(f"pattern must be 'S*E*E' or 'S*ES*E'; found {pattern!r}")
        if truncate_from == "right":
            index = -int(self._token_end is not None) - 1
        elif truncate_from == "left":
            index = int(self._token_start is not None)
        elif isinstance(truncate_from, int) and not isinstance(truncate_from, bool):
            index = truncate_from
        else:
            raise ValueError(
                "truncate_from must be 'right', 'left' or an int index; found "
                f"{truncate_from!r}"
            )

        first_tokens = self.tokenize(first_text) if _is_string(first_text) else list(first_text)
        if second_text is None:
            second_tokens = None
        elif _is_string(second_text):
            second_tokens = self.tokenize(second_text)
        else:
            second_tokens = list(second_text)

        drop_start = second_tokens is not None and pattern == "S*E*E" and bool(self._token_start)
        if maxlen is not None:
            specials = self._num_specials()
            if second_tokens is not None:
                specials = 2 * specials - int(drop_start)
            self._check_maxlen(maxlen, specials)
            if drop_start:
                maxlen += 1  # the second start token is removed below
            truncate_sequences(maxlen, index, first_tokens, second_tokens)

        token_ids = self.tokens_to_ids(first_tokens)
        segment_ids = [0] * len(token_ids)
        if second_tokens is not None:
            if drop_start:
                second_tokens = second_tokens[1:]
            second_ids = self.tokens_to_ids(second_tokens)
            token_ids.extend(second_ids)
            segment_ids.extend([1] * len(second_ids))
        return token_ids, segment_ids

    def decode(self, ids):
        """Readable text of ``ids``."""
        raise NotImplementedError

    def _tokenize(self, text):
        raise NotImplementedError


class Tokenizer(TokenizerBase):
    """BERT WordPiece tokenizer with bert4keras semantics.

    Args:
        token_dict: path to a ``vocab.txt`` or a dict token -> id.
        do_lower_case: lower-case and strip accents (NFD, drop Mn) before splitting.
        word_maxlen: words longer than this are not split into word pieces and become
            ``[UNK]``.
        token_start, token_end: tokens added around every text (``None`` for none).
        pre_tokenize: optional callable text -> words run first (jieba-style); words found
            in the vocabulary are kept whole.
        token_translate: optional dict token -> token or id -> id applied after tokenizing.

    Attributes ``_token_pad_id``, ``_token_unk_id``, ``_token_mask_id``,
    ``_token_start_id``, ``_token_end_id`` (``None`` when absent) and ``_vocab_size``.
    """

    _cache_limit = 1 << 17

    def __init__(self, token_dict, do_lower_case=False, word_maxlen=200, **kwargs):
        super().__init__(**kwargs)
        if isinstance(token_dict, (str, os.PathLike)):
            token_dict = load_vocab(token_dict)
        elif not isinstance(token_dict, Mapping):
            raise TypeError(
                "token_dict must be a vocab file path or a dict token -> id; found "
                f"{type(token_dict).__name__}"
            )
        token_dict = dict(token_dict)
        if not token_dict:
            raise ValueError("token_dict is empty; expected at least one token")
        inverse = {}
        for token, index in token_dict.items():
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValueError(
                    f"token ids must be non-negative ints; found {token!r} -> {index!r}"
                )
            if index in inverse:
                raise ValueError(
                    f"token id {index} is used by both {inverse[index]!r} and {token!r}"
                )
            inverse[index] = token
        if isinstance(word_maxlen, bool) or not isinstance(word_maxlen, int) or word_maxlen < 1:
            raise ValueError(f"word_maxlen must be a positive int; found {word_maxlen!r}")

        self._do_lower_case = bool(do_lower_case)
        self._token_dict = token_dict
        self._token_dict_inv = inverse
        self._vocab_size = max(inverse) + 1
        self._word_maxlen = word_maxlen
        self._max_piece_len = max(len(self.stem(token)) for token in token_dict)
        self._cache = {}
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, "_token_%s" % name)
            setattr(self, "_token_%s_id" % name, token_dict.get(token) if token else None)
        self._init_translate()
        self._tables = _tables()

    @property
    def token_dict(self):
        """The vocabulary, token -> id."""
        return self._token_dict

    @property
    def do_lower_case(self):
        """Whether text is lower-cased and accent-stripped."""
        return self._do_lower_case

    def token_to_id(self, token):
        """Id of ``token``; unknown tokens give the ``[UNK]`` id."""
        index = self._token_dict.get(token)
        if index is None:
            index = self._token_unk_id
            if index is None:
                raise KeyError(
                    f"token {token!r} is not in the vocabulary and the vocabulary has no "
                    f"{self._token_unk!r} token to fall back on"
                )
        return index

    def tokens_to_ids(self, tokens):
        """Ids of a list of tokens (unknown tokens give the ``[UNK]`` id)."""
        get, unk = self._token_dict.get, self._token_unk_id
        ids = [get(token, unk) for token in tokens]
        if unk is None and None in ids:
            self.token_to_id(tokens[ids.index(None)])  # raises with a clear message
        return ids

    def id_to_token(self, i):
        """Token of id ``i``."""
        try:
            return self._token_dict_inv[i]
        except (KeyError, TypeError):
            raise KeyError(
                f"id {i!r} is not in the vocabulary; expected an int id of a token in "
                f"0..{self._vocab_size - 1}"
            ) from None

    def ids_to_tokens(self, ids):
        """Tokens of a list of ids."""
        inv = self._token_dict_inv
        try:
            return [inv[i] for i in ids]
        except (KeyError, TypeError):
            return [self.id_to_token(i) for i in ids]

    def decode(self, ids, tokens=None):
        """Readable text of ``ids`` (or of ``tokens`` when given), bert4keras style.

        Special ``[...]`` tokens are skipped, word pieces are joined, CJK characters are
        written without spaces, and spaces around punctuation are tidied.
        """
        tokens = list(tokens) if tokens else self.ids_to_tokens(ids)
        if self._token_translate_inv:
            inv = self._token_translate_inv
            tokens = [inv.get(token) or token for token in tokens]
        tokens = [token for token in tokens if not self._is_special(token)]
        parts = []
        last = ""
        for i, token in enumerate(tokens):
            if token[:2] == "##":
                piece = token[2:]
            elif len(token) == 1 and self._is_cjk_character(token):
                piece = token
            elif len(token) == 1 and self._is_punctuation(token):
                piece = token + " "
            elif i > 0 and last and self._is_cjk_character(last):
                piece = token
            else:
                piece = " " + token
            parts.append(piece)
            if piece:
                last = piece[-1]
        text = "".join(parts)
        text = _DECODE_SPACES.sub(" ", text)
        text = _DECODE_CONTRACTION.sub(r"'\1 ", text)
        text = _DECODE_TIGHT.sub(r"\1", text)
        text = _DECODE_DECIMAL.sub(r"\1\2", text)
        return text.strip()

    def _tokenize(self, text, pre_tokenize=True):
        """Tokens of ``text`` without start/end tokens."""
        if not _is_string(text):
            raise TypeError(f"text must be a str; found {type(text).__name__}")
        tables = self._tables
        if pre_tokenize and self._pre_tokenize is not None:
            if self._do_lower_case:
                text = _lowercase_and_strip_accents(text)
            tokens = []
            for word in self._pre_tokenize(text):
                if word in self._token_dict:
                    tokens.append(word)
                else:
                    tokens.extend(self._tokenize(word, False))
            return tokens
        if self._do_lower_case:
            text = text.lower()
            if text.isascii():
                drop = tables.drop_re
            else:
                # accents (Mn after NFD) are removed together with the control characters
                text = unicodedata.normalize("NFD", text)
                drop = tables.drop_lower_re
        else:
            drop = tables.drop_re
        if drop.search(text):
            text = drop.sub("", text)
        cache = self._cache
        tokens = []
        for word in tables.word_re.findall(text):
            pieces = cache.get(word)
            if pieces is None:
                pieces = self._word_piece_tokenize(word)
            tokens.extend(pieces)
        return tokens

    def _word_piece_tokenize(self, word):
        """Greedy longest-match-first WordPiece split of one word (cached)."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        pieces = self._word_piece_uncached(word)
        if len(self._cache) >= self._cache_limit:
            self._cache.clear()
        self._cache[word] = pieces
        return pieces

    def _word_piece_uncached(self, word):
        n = len(word)
        if n > self._word_maxlen:
            return (word,)
        vocab = self._token_dict
        longest = self._max_piece_len
        pieces, start = [], 0
        while start < n:
            end = min(n, start + longest)
            while end > start:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in vocab:
                    break
                end -= 1
            if end == start:
                return (word,)
            pieces.append(sub)
            start = end
        return tuple(pieces)

    @staticmethod
    def stem(token):
        """The token without its ``##`` word-piece prefix."""
        return token[2:] if token[:2] == "##" else token

    @staticmethod
    def _is_space(ch):
        """Whether ``ch`` is a space character (space, \\t, \\n, \\r or category Zs)."""
        return ch in _SPACE_CHARS or unicodedata.category(ch) == "Zs"

    @staticmethod
    def _is_punctuation(ch):
        """Whether ``ch`` is punctuation: ASCII non-alphanumeric symbols or category P*."""
        return _cp_is_punctuation(ord(ch), unicodedata.category(ch))

    @staticmethod
    def _cjk_punctuation():
        """Full-width / CJK punctuation characters used by `decode`."""
        return _CJK_PUNCTUATION

    @staticmethod
    def _is_cjk_character(ch):
        """Whether ``ch`` is a CJK ideograph (the blocks BERT splits into single chars)."""
        return _cp_is_cjk(ord(ch))

    @staticmethod
    def _is_control(ch):
        """Whether ``ch`` is a control or format character (category Cc or Cf)."""
        return unicodedata.category(ch) in ("Cc", "Cf")

    @staticmethod
    def _is_special(ch):
        """Whether a token is a special ``[...]`` token."""
        return bool(ch) and ch[0] == "[" and ch[-1] == "]"

    @staticmethod
    def _is_redundant(token):
        """Whether a multi-character token can never come out of `tokenize` (bert4keras).

        Such tokens contain a CJK character or punctuation, which are always split off as
        single characters; vocabulary cutting uses this to drop them.
        """
        if len(token) > 1:
            for ch in Tokenizer.stem(token):
                if Tokenizer._is_cjk_character(ch) or Tokenizer._is_punctuation(ch):
                    return True
        return False

    def _normalize_with_mapping(self, text):
        """Normalise ``text`` as `_tokenize` does, keeping the source index of every char.

        Returns ``(normalized, sources)`` with ``normalized[k]`` produced by
        ``text[sources[k]]``. Lower-casing is done on the whole string (so final sigma
        matches `_tokenize`) with per-character lengths; NFD is rebuilt from per-character
        decompositions plus canonical reordering, so the result equals the whole-string
        normalisation character for character.
        """
        tables = self._tables
        if self._do_lower_case:
            lowered = text.lower()
            if lowered.isascii():
                pairs = list(zip(lowered, range(len(lowered))))
            else:
                sources = []
                for i, ch in enumerate(text):
                    sources.extend([i] * len(ch.lower()))
                if len(sources) != len(lowered):  # pragma: no cover - Unicode invariant
                    raise RuntimeError("lower() changed length non-locally; cannot rematch")
                pairs, run = [], []
                for ch, i in zip(lowered, sources):
                    for c in unicodedata.normalize("NFD", ch) if not ch.isascii() else ch:
                        ccc = unicodedata.combining(c)
                        if ccc:
                            run.append((ccc, c, i))
                        else:
                            if run:
                                run.sort(key=lambda item: item[0])
                                pairs.extend((c2, i2) for _, c2, i2 in run)
                                run = []
                            pairs.append((c, i))
                if run:
                    run.sort(key=lambda item: item[0])
                    pairs.extend((c2, i2) for _, c2, i2 in run)
                nfd = unicodedata.normalize("NFD", lowered)
                if "".join(c for c, _ in pairs) != nfd:  # pragma: no cover - invariant
                    raise RuntimeError("per-character NFD disagrees with NFD; cannot rematch")
                mn = tables.mn_set
                pairs = [(c, i) for c, i in pairs if c not in mn]
        else:
            pairs = list(zip(text, range(len(text))))
        drop = tables.drop_set
        pairs = [(c, i) for c, i in pairs if c not in drop]
        return "".join(c for c, _ in pairs), [i for _, i in pairs]

    def rematch(self, text, tokens):
        """Map each token back to the indices of the characters of ``text`` it came from.

        Returns one sorted list of character indices per token; special ``[...]`` tokens
        get ``[]``. ``tokens`` are usually ``tokenize(text)`` (possibly truncated).
        """
        if not _is_string(text):
            raise TypeError(f"text must be a str; found {type(text).__name__}")
        normalized, sources = self._normalize_with_mapping(text)
        inv = self._token_translate_inv
        mapping, offset = [], 0
        for position, token in enumerate(tokens):
            if inv:
                token = inv.get(token) or token
            if self._is_special(token):
                mapping.append([])
                continue
            stem = self.stem(token)
            start = normalized.find(stem, offset)
            if start < 0 or not stem:
                raise ValueError(
                    f"token {position} ({token!r}) does not occur in the text after character "
                    f"{sources[offset] if offset < len(sources) else len(text)}; expected tokens "
                    "produced by tokenize() on this text"
                )
            end = start + len(stem)
            mapping.append(sorted(set(sources[start:end])))
            offset = end
        return mapping


class SpTokenizer(TokenizerBase):
    """Tokenizer over a sentencepiece model (T5, mT5, ...), with the `Tokenizer` API.

    By default every text ends with ``</s>`` and has no start token, as T5's tokenizer
    does: ``encode(a, b)`` gives ``a </s> b </s>`` with segment ids 0 then 1.
    Attributes ``_token_pad_id``, ``_token_unk_id``, ``_token_end_id``,
    ``_token_start_id``, ``_token_mask_id`` (``None`` when absent) and ``_vocab_size``.
    """

    def __init__(self, sp_model_path, token_start=None, token_end="</s>", **kwargs):
        super().__init__(token_start=token_start, token_end=token_end, **kwargs)
        import sentencepiece as spm

        sp_model_path = os.fspath(sp_model_path)
        if not os.path.isfile(sp_model_path):
            raise FileNotFoundError(
                f"sentencepiece model not found: {sp_model_path!r}; expected a .model file "
                "written by sentencepiece"
            )
        self.sp_model = spm.SentencePieceProcessor()
        try:
            self.sp_model.Load(sp_model_path)
        except (OSError, RuntimeError) as error:
            raise ValueError(
                f"could not load {sp_model_path!r} as a sentencepiece model: {error}"
            ) from None
        sp = self.sp_model
        self._vocab_size = sp.get_piece_size()
        self._token_unk_id = sp.unk_id()
        self._token_unk = sp.id_to_piece(self._token_unk_id)
        pad_id = sp.pad_id()
        self._token_pad_id = pad_id if pad_id >= 0 else None
        self._token_pad = sp.id_to_piece(pad_id) if pad_id >= 0 else None
        self._token_mask_id = self._piece_id_or_none(self._token_mask)
        for name in ("start", "end"):
            token = getattr(self, "_token_%s" % name)
            index = None
            if token is not None:
                index = self._piece_id_or_none(token)
                if index is None:
                    raise ValueError(
                        f"token_{name}={token!r} is not a piece of the sentencepiece model "
                        f"{sp_model_path!r}; pass a piece it contains or None"
                    )
            setattr(self, "_token_%s_id" % name, index)
        self._init_translate()

    def _piece_id_or_none(self, piece):
        index = self.sp_model.piece_to_id(piece)
        if index == self._token_unk_id and piece != self._token_unk:
            return None
        return index

    def token_to_id(self, token):
        """Id of piece ``token`` (the unknown id for pieces not in the model)."""
        return self.sp_model.piece_to_id(token)

    def tokens_to_ids(self, tokens):
        """Ids of a list of pieces."""
        return [self.sp_model.piece_to_id(token) for token in tokens]

    def id_to_token(self, i):
        """Piece of id ``i``; ids past the vocabulary (padding rows of an embedding) give ''."""
        if isinstance(i, bool) or not isinstance(i, int) and not hasattr(i, "__index__"):
            raise TypeError(f"id must be an int; found {i!r}")
        i = int(i)
        if i < 0:
            raise KeyError(f"id {i} is negative; expected 0..{self._vocab_size - 1}")
        return self.sp_model.id_to_piece(i) if i < self._vocab_size else ""

    def _is_special(self, i):
        sp = self.sp_model
        return sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)

    def _is_decodable(self, i):
        """Whether id ``i`` is written by `decode` (in range, not control or unused)."""
        i = int(i)
        sp = self.sp_model
        return 0 <= i < self._vocab_size and not (sp.is_control(i) or sp.is_unused(i))

    def decode(self, ids):
        """Text of ``ids``; pad/eos/bos (control) and unused ids and ids past the vocabulary
        are skipped; unknown ids decode as sentencepiece writes them (`` ⁇ ``)."""
        ids = [int(i) for i in ids if self._is_decodable(i)]
        tokens = [self.sp_model.id_to_piece(i) for i in ids]
        if self._token_translate_inv:
            inv = self._token_translate_inv
            tokens = [inv.get(token) or token for token in tokens]
        return self.sp_model.decode_pieces(tokens)

    def _pre_tokenized(self, text):
        """Apply ``pre_tokenize`` and return (joined text, source index per char or -1)."""
        words = self._pre_tokenize(text)
        parts, sources, offset = [], [], 0
        for word in words:
            if parts:
                parts.append(" ")
                sources.append(-1)
            start = text.find(word, offset) if word else -1
            if start < 0:
                sources.extend([-1] * len(word))
            else:
                sources.extend(range(start, start + len(word)))
                offset = start + len(word)
            parts.append(word)
        return "".join(parts), sources

    def _tokenize(self, text):
        """Pieces of ``text`` without start/end tokens."""
        if not _is_string(text):
            raise TypeError(f"text must be a str; found {type(text).__name__}")
        if self._pre_tokenize is not None:
            text = " ".join(self._pre_tokenize(text))
        try:
            return self.sp_model.encode(text, out_type=str)
        except (RuntimeError, UnicodeError):
            _check_utf8(text)
            raise


    def rematch(self, text, tokens):
        """Map each piece back to the character indices of ``text`` it was produced from.

        Uses sentencepiece's own alignment (byte offsets of every piece's surface);
        control pieces (``</s>``, ``<pad>``) get ``[]``. A piece whose surface is only the
        whitespace its ``▁`` stands for maps to that whitespace.
        """
        if not _is_string(text):
            raise TypeError(f"text must be a str; found {type(text).__name__}")
        if self._pre_tokenize is not None:
            joined, char_sources = self._pre_tokenized(text)
        else:
            joined, char_sources = text, None
        _check_utf8(joined)
        proto = self.sp_model.encode(joined, out_type="proto")
        # byte offset -> char index of the joined text
        byte_to_char = []
        for index, ch in enumerate(joined):
            byte_to_char.extend([index] * len(ch.encode("utf-8")))
        byte_to_char.append(len(joined))
        pieces = [(p.piece, p.begin, p.end) for p in proto.pieces]
        inv = self._token_translate_inv
        mapping, j = [], 0
        for position, token in enumerate(tokens):
            if inv:
                token = inv.get(token) or token
            index = self.sp_model.piece_to_id(token)
            if self.sp_model.is_control(index):
                mapping.append([])
                continue
            while j < len(pieces) and pieces[j][0] != token:
                j += 1
            if j == len(pieces):
                raise ValueError(
                    f"token {position} ({token!r}) does not occur in the pieces of the text in "
                    "order; expected tokens produced by tokenize() on this text"
                )
            _, begin, end = pieces[j]
            j += 1
            span = sorted(set(byte_to_char[b] for b in range(begin, end)))
            if char_sources is not None:
                span = sorted(set(char_sources[k] for k in span if char_sources[k] >= 0))
            mapping.append(span)
        return mapping
