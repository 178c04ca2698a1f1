"""bert4keras' ``snippets`` and ``tokenizers`` names and behaviours."""
import inspect
import sys
import types

import numpy as np
import pytest

import keras

from bert4keras3 import snippets
from bert4keras3.snippets import (
    AutoRegressiveDecoder,
    DataGenerator,
    open as b4k_open,
    sequence_padding,
    text_segmentate,
    to_keras_structure,
    truncate_sequences,
)

SNIPPET_NAMES = [
    "to_array", "is_string", "strQ2B", "string_matching", "convert_to_unicode",
    "convert_to_str", "lowercase_and_normalize", "open", "parallel_apply_generator",
    "parallel_apply", "sequence_padding", "truncate_sequences", "text_segmentate", "is_one_of",
    "DataGenerator", "ViterbiDecoder", "softmax", "AutoRegressiveDecoder", "insert_arguments",
    "delete_arguments", "longest_common_substring", "longest_common_subsequence",
    "orthogonally_resize", "WebServing", "uniout",
]


def params(f):
    return list(inspect.signature(f).parameters)


def test_every_bert4keras_snippet_name_exists_with_its_arguments():
    assert [n for n in SNIPPET_NAMES if not hasattr(snippets, n)] == []
    from bert4keras3.snippets import uniout  # noqa: F401  (Python 2 helper, a no-op)

    assert params(truncate_sequences) == ["maxlen", "indices", "sequences"]
    assert params(text_segmentate) == ["text", "maxlen", "seps", "strips"]
    assert params(sequence_padding)[:5] == ["inputs", "length", "value", "seq_dims", "mode"]
    assert params(snippets.parallel_apply)[:8] == [
        "func", "iterable", "workers", "max_queue_size", "callback", "dummy", "random_seeds",
        "unordered"]
    assert params(b4k_open) == ["name", "mode", "encoding", "errors", "indexable"]
    assert params(DataGenerator) == ["data", "batch_size", "buffer_size"]
    for method in ("sample", "forfit", "fortest", "to_dataset"):
        assert hasattr(DataGenerator, method)


def test_text_segmentate_is_bert4keras():
    # a part joins while gathered + part + one separator fits in maxlen
    assert text_segmentate("aaa。b。cc", 4, seps="。") == ["aaa。", "b。", "cc"]
    assert text_segmentate("ab。cd。efgh。", 6, seps="。") == ["ab。cd。", "efgh。"]
    assert text_segmentate("aaaa，bbbb。cc，dd。eeeeeeeeeeee", 6, seps="。，") == [
        "aaaa，", "bbbb。", "cc，dd。", "eeeeeeeeeeee"]
    assert text_segmentate("", 5) == [""] and text_segmentate("  abc ", 5) == ["abc"]
    assert text_segmentate("a。。b。c", 3, seps="。") == ["a。。", "b。", "c"]
    assert text_segmentate("  x。y。  ", 2, seps="。", strips="。") == ["x", "y"]


def test_small_text_helpers():
    a, b = [1, 2, 3, 4, 5], [6, 7, 8]
    assert truncate_sequences(6, -1, a, b) == [[1, 2, 3], [6, 7, 8]]
    assert snippets.strQ2B("ＡＢＣ，１２３　ｘ") == "ABC,123 x"
    assert snippets.string_matching("今天天气不错", ["天气", "^x"]) is True
    assert snippets.string_matching("abc", ["^b"]) is False
    assert snippets.lowercase_and_normalize("ÉcOLE") == "ecole"
    assert snippets.convert_to_unicode("é".encode()) == "é" and snippets.convert_to_str("x") == "x"
    arr = np.zeros(3)
    assert snippets.is_one_of(arr, [np.zeros(3), arr]) and not snippets.is_one_of(arr, [np.zeros(3)])

    class Base:
        def __init__(self, **kwargs):
            self.rest = kwargs

    class Model(Base):
        @snippets.insert_arguments(with_pool=False, pool_size=2)
        @snippets.delete_arguments("with_mlm")
        def __init__(self, **kwargs):
            super().__init__(**kwargs)

    m = Model(with_pool=True, other=1)
    assert m.with_pool is True and m.pool_size == 2 and m.rest == {"other": 1}
    with pytest.raises(TypeError, match="unexpected keyword argument 'with_mlm'"):
        Model(with_mlm=True)


def test_open_reads_writes_and_indexes(tmp_path):
    path = tmp_path / "corpus.txt"
    lines = ["第一行\n", "second line\n", "第三\n", "last"]
    with b4k_open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line)
    assert b4k_open(path, encoding="utf-8").read() == "".join(lines)
    assert list(b4k_open(path, encoding="utf-8")) == lines
    f = b4k_open(path, encoding="utf-8")
    assert next(f) == lines[0] and f.next() == lines[1]
    index = tmp_path / "corpus.idx"
    f = b4k_open(path, encoding="utf-8", indexable=str(index))
    assert len(f) == 4 and f[2] == lines[2] and f[0] == lines[0] and f[3] == "last"
    assert index.exists()
    cached = b4k_open(path, encoding="utf-8", indexable=str(index))  # offsets read back
    assert cached.offsets == f.offsets and cached[1] == lines[1]
    binary = b4k_open(path, "rb", encoding="utf-8", indexable=True)
    assert binary[2] == lines[2] and binary.readlines() == lines[3:]
    with pytest.raises(TypeError, match="indexable=True"):
        len(b4k_open(path))


def test_to_keras_structure():
    x1, x2 = np.zeros((2, 3), "int32"), np.ones((2, 3), "int32")
    out = to_keras_structure(([x1, x2], np.array([[1], [0]])))
    assert isinstance(out, tuple) and isinstance(out[0], tuple) and out[0][0] is x1
    # float64 labels (np.zeros in a generator) become floatx, as Keras does for fit(arrays)
    out = to_keras_structure(([x1, x2], np.zeros((2, 3, 3))))
    assert out[1].dtype == np.float32 and out[0][1].dtype == np.int32
    assert to_keras_structure([[0.5], [1.0]]).dtype == np.float32
    assert to_keras_structure(([x1, x2], None))[1] is None
    np.testing.assert_array_equal(to_keras_structure([[1, 2], [3, 4]]), [[1, 2], [3, 4]])
    assert isinstance(to_keras_structure({"a": [x1, x2]})["a"], tuple)


class PairGenerator(DataGenerator):
    """bert4keras style: Python lists for the inputs, labels via sequence_padding."""

    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (text, label) in self.sample(random):
            token_ids = [1 + (ord(c) % 20) for c in text]
            batch_token_ids.append(token_ids)
            batch_segment_ids.append([0] * len(token_ids))
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                yield [sequence_padding(batch_token_ids), sequence_padding(batch_segment_ids)], \
                    sequence_padding(batch_labels)
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


DATA = [("abcdef", 0), ("bcd", 1), ("xyzxyzxyz", 0), ("hello", 1), ("qq", 0)] * 4


def pair_model():
    token = keras.Input((None,), dtype="int32")
    segment = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(25, 8, mask_zero=True)(token)
    h = h + keras.layers.Embedding(2, 8)(segment)
    return [token, segment], keras.layers.GlobalAveragePooling1D()(h)


def test_data_generator_with_list_batches_fits():
    inputs, h = pair_model()
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    gen = PairGenerator(DATA, batch_size=6)
    history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert model.predict(gen.fortest(), steps=len(gen), verbose=0).shape == (20, 2)


def test_padded_lengths_may_change_after_the_first_batches():
    # Keras' own generator input fixes a dimension on which its first two batches agree
    data = [("abcde", 0)] * 10 + [("ab", 1)] * 2  # 5 batches of length 5, then length 2
    inputs, h = pair_model()
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
    model.compile("adam", "sparse_categorical_crossentropy")
    gen = PairGenerator(data, batch_size=2)
    history = model.fit(gen.forfit(random=False), steps_per_epoch=len(gen), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2


def test_data_generator_for_a_loss_layer_model():
    from bert4keras3.layers import Loss

    class MeanSquare(Loss):
        def compute_loss(self, inputs, mask=None):
            return keras.ops.mean(keras.ops.square(inputs[0] - 1.0))

    class Gen(PairGenerator):
        def __iter__(self, random=False):
            for inputs, _ in super().__iter__(random):
                yield inputs, None

    inputs, h = pair_model()
    model = keras.Model(inputs, MeanSquare()([h, h]))
    model.compile(keras.optimizers.Adam(0.05))
    gen = Gen(DATA, batch_size=5)
    history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_web_serving_wraps_functions(monkeypatch):
    class Params(dict):
        def getunicode(self, key):
            return self.get(key)

    request = types.SimpleNamespace(GET=Params(), POST=Params())
    routes = {}
    fake = types.ModuleType("bottle")
    fake.request = request
    fake.route = lambda path, method="GET": (lambda f: routes.setdefault(path, f))
    fake.run = lambda **kwargs: routes.setdefault("run", kwargs)
    monkeypatch.setitem(sys.modules, "bottle", fake)
    import json

    web = snippets.WebServing(port=8864)
    web.route("/add", lambda a, b=1: a + b, {"a": (int, True), "b": (int, False)})
    request.GET.update(a="2", b="5")
    assert json.loads(routes["/add"]()) == {"code": 0, "desc": "succeeded", "data": 7}
    request.GET.clear()
    assert json.loads(routes["/add"]())["code"] == 1

    def fail():
        raise RuntimeError("boom")

    web.route("/fail", fail, {})
    assert json.loads(routes["/fail"]()) == {"code": 2, "desc": "boom", "data": {}}
    web.start()
    assert routes["run"] == {"host": "0.0.0.0", "port": 8864, "server": "paste"}


def test_tokenizer_names_and_arguments():
    from bert4keras3 import tokenizers as T

    assert params(T.load_vocab) == ["dict_path", "encoding", "simplified", "startswith"]
    assert params(T.save_vocab) == ["dict_path", "token_dict", "encoding"]
    assert params(T.TokenizerBase) == ["token_start", "token_end", "pre_tokenize",
                                       "token_translate"]
    assert params(T.Tokenizer)[:3] == ["token_dict", "do_lower_case", "word_maxlen"]
    assert params(T.TokenizerBase.encode) == ["self", "first_text", "second_text", "maxlen",
                                              "pattern", "truncate_from"]
    for name in ("tokenize", "token_to_id", "tokens_to_ids", "id_to_token", "ids_to_tokens",
                 "encode", "decode", "_tokenize"):
        assert hasattr(T.TokenizerBase, name), name
    for name in ("stem", "_is_space", "_is_punctuation", "_cjk_punctuation", "_is_cjk_character",
                 "_is_control", "_is_special", "_is_redundant", "rematch", "_word_piece_tokenize"):
        assert hasattr(T.Tokenizer, name), name
    for name in ("token_to_id", "id_to_token", "decode", "_tokenize", "_is_special",
                 "_is_decodable"):
        assert hasattr(T.SpTokenizer, name), name
    assert T.Tokenizer._is_redundant("##中国") and T.Tokenizer._is_redundant("a,")
    assert not T.Tokenizer._is_redundant("##ab") and not T.Tokenizer._is_redundant("中")
    tok = T.Tokenizer({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4, "##b": 5})
    assert tok.tokens_to_ids(["a", "##b", "zz"]) == [4, 5, 1]
    assert tok.ids_to_tokens([4, 5]) == ["a", "##b"] and tok._tokenize("ab") == ["a", "##b"]


def test_decoder_predict_never_sees_finished_hypotheses():
    """bert4keras dropped finished hypotheses from the batch; KgCLUE's trie-walking predict
    relies on it (a prefix extended past its last end id is not in the trie)."""
    end, vocab, min_ends = 4, 6, 2
    seen = []

    class Walker(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            seen.append(output_ids.copy())
            ends = (output_ids == end).sum(axis=1)
            assert (ends < min_ends).all(), output_ids
            probas = np.tile(np.array([0.0, 0.2, 0.3, 0.1, 0.35, 0.05]), (len(output_ids), 1))
            # after the first end only the end is allowed (a trie leaf), as in KgCLUE
            probas[ends >= 1] = np.eye(vocab)[end]
            return probas

    walker = Walker(start_id=None, end_id=end, maxlen=8)
    for topk in (1, 3):
        ids = walker.beam_search([np.array([1, 2])], topk=topk, min_ends=min_ends)
        assert list(ids) == [end, end]
    samples = walker.random_sample([np.array([1, 2])], 4, min_ends=min_ends, seed=0)
    assert len(samples) == 4 and all((s == end).sum() == min_ends for s in samples)
    assert len(seen) > 3
