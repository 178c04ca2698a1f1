#! -*- coding: utf-8 -*-
# Chinese word segmentation (CWS) with BERT + CRF: one SBME tag per character, Viterbi
# decoding with the learned transitions, scored by word-level precision / recall / F1 (a word
# is a (start, end) character span, as SIGHAN's `score` script counts it).
# Ported from bert4keras examples/task_sequence_labeling_cws_crf.py (PKU data there).
#
# Data: B4K_DATA_DIR holds train.txt, dev.txt, test.txt, one segmented sentence per line,
# words separated by spaces (SIGHAN / People's Daily format, e.g. data/pd1998_seg).
# Environment (defaults in brackets):
#   B4K_MODEL_DIR   bert_config.json, vocab.txt, bert_model.ckpt   [/root/kg/bert/chinese_L-12_H-768_A-12]
#   B4K_DATA_DIR    [examples/data/bert4keras/cws, a tiny sample]
#   B4K_EPOCHS [10]   B4K_OUTPUT_DIR [.]   B4K_MODEL (family for build_transformer_model) [bert]
#   B4K_MAX_STEPS   stop after this many optimizer steps [no cap]
#   B4K_LIMIT       train on the first N sentences only [all]
#   B4K_LR [1e-5]   B4K_CRF_LR_MULTIPLIER [1]   B4K_MAXLEN [256]   B4K_BATCH_SIZE [32]
#   B4K_SEED        keras.utils.set_random_seed(SEED) first [unset]
# Output: OUTPUT_DIR/cws_crf.weights.h5 (best dev F1) and OUTPUT_DIR/cws_crf_result.json
# ({"test": {"precision", "recall", "f1"}, "dev": {...}, "train_sentences", "steps", ...},
# scored with the best dev weights).
#
# Differences from the original: every character is one token (the original encodes word by
# word with WordPiece, which merges digits / Latin letters such as "1998" into fewer tokens
# than characters, so its tags and spans disagree there); sentences longer than maxlen - 2
# characters are split into pieces (training: at word boundaries, preferably after
# punctuation; prediction: after the last punctuation mark that fits, else a hard cut) where
# the original drops the rest of a training sentence and the tail of an over-long test one;
# prediction runs in batches; the dev / test score is the standard word F1 instead of the
# original's "simple_evaluate" (share of gold words found anywhere in the prediction).
#
# People's Daily 1998 (data/pd1998_seg) with the small pretrained RoFormer (4 x 256) of this
# repository; the small model wants a large learning rate (2e-3). Measured on 2 shared CPU
# cores, JAX (about 2.3 s per step of 32 x 64; PyTorch was 4-9 s per step there):
#   4-minute check, 60 steps on the first 2,000 sentences: test F1 0.738 (P 0.741, R 0.735),
#   dev F1 0.740, 224 s in all (train 142 s, dev 26 s, test 47 s); all-single-character F1 0.361.
#     KERAS_BACKEND=jax B4K_MODEL=roformer B4K_MODEL_DIR=data/models/roformer-small \
#     B4K_DATA_DIR=data/pd1998_seg B4K_OUTPUT_DIR=/tmp/cws_run B4K_LIMIT=2000 \
#     B4K_MAX_STEPS=60 B4K_MAXLEN=64 B4K_LR=2e-3 B4K_SEED=0 python examples/bert4keras/cws_crf.py
#   ~10-minute run (proposed, not yet measured): 200 steps over all 16,398 sentences
#   (about 470 s of training + 75 s of scoring at the speed above).
#     KERAS_BACKEND=jax B4K_MODEL=roformer B4K_MODEL_DIR=data/models/roformer-small \
#     B4K_DATA_DIR=data/pd1998_seg B4K_OUTPUT_DIR=out/cws B4K_EPOCHS=1 B4K_MAX_STEPS=200 \
#     B4K_MAXLEN=64 B4K_BATCH_SIZE=32 B4K_LR=2e-3 B4K_SEED=0 python examples/bert4keras/cws_crf.py
import json
import os
import re
import time

import numpy as np
from bert4keras3.backend import keras, K
from bert4keras3.models import build_transformer_model
from bert4keras3.tokenizers import Tokenizer
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, DataGenerator
from bert4keras3.snippets import open, ViterbiDecoder
from bert4keras3.layers import ConditionalRandomField
from keras.layers import Dense
from keras.models import Model

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/cws'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_L-12_H-768_A-12')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
model_type = os.environ.get('B4K_MODEL', 'bert')
epochs = int(os.environ.get('B4K_EPOCHS', 10))
max_steps = int(os.environ.get('B4K_MAX_STEPS', 0)) or None
limit = int(os.environ.get('B4K_LIMIT', 0)) or None
seed = os.environ.get('B4K_SEED')
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')
weights_path = os.path.join(output_dir, 'cws_crf.weights.h5')
result_path = os.path.join(output_dir, 'cws_crf_result.json')
maxlen = int(os.environ.get('B4K_MAXLEN', 256))
num_labels = 4
batch_size = int(os.environ.get('B4K_BATCH_SIZE', 32))
with open(config_path) as f:
    bert_layers = json.load(f)['num_hidden_layers']  # 12 in the original, for BERT-base
learning_rate = float(os.environ.get('B4K_LR', 1e-5))  # fewer layers want a larger rate
crf_lr_multiplier = float(os.environ.get('B4K_CRF_LR_MULTIPLIER', 1))  # raise if needed
if maxlen < 3:
    raise ValueError('B4K_MAXLEN must leave room for [CLS], [SEP] and one character, found %d'
                     % maxlen)
if seed is not None:
    keras.utils.set_random_seed(int(seed))
os.makedirs(output_dir, exist_ok=True)
started = time.time()

# Tags: 0 single-character word (S), 1 first character of a longer word (B),
# 2 inside (M), 3 last character (E). [CLS] / [SEP] are tagged 0.
PUNCTUATION = set(u'，。！？；：、,.!?;:')


def words_to_tags(words):
    """The SBME tag of every character of the words, in order."""
    tags = []
    for w in words:
        if len(w) == 1:
            tags.append(0)
        else:
            tags += [1] + [2] * (len(w) - 2) + [3]
    return tags


def tags_to_words(text, tags):
    """Words of text from its tags: tag 0 or 1 starts a word, 2 or 3 continues the current one
    (as the original decodes, so an invalid sequence still gives a segmentation)."""
    if len(tags) != len(text):
        raise ValueError('tags_to_words: expected one tag per character (%d), found %d tags'
                         % (len(text), len(tags)))
    words = []
    for c, t in zip(text, tags):
        if t < 2 or not words:
            words.append(c)
        else:
            words[-1] += c
    return words


def word_spans(words):
    """The set of (start, end) character spans of the words (end exclusive)."""
    spans, start = set(), 0
    for w in words:
        spans.add((start, start + len(w)))
        start += len(w)
    return spans


def word_prf(gold, pred):
    """Word-level (precision, recall, f1) of the predicted segmentations against the gold
    ones (lists of word lists), summed over all sentences: a predicted word is correct when
    the gold segmentation has a word at the same character span."""
    if len(gold) != len(pred):
        raise ValueError('word_prf: expected %d predicted sentences, found %d'
                         % (len(gold), len(pred)))
    right = n_pred = n_gold = 0
    for i, (g, p) in enumerate(zip(gold, pred)):
        if ''.join(g) != ''.join(p):
            raise ValueError('word_prf: sentence %d differs: gold %r, predicted %r'
                             % (i, ''.join(g), ''.join(p)))
        g, p = word_spans(g), word_spans(p)
        right += len(g & p)
        n_pred += len(p)
        n_gold += len(g)
    precision = right / n_pred if n_pred else 0.0
    recall = right / n_gold if n_gold else 0.0
    f1 = 2 * right / (n_pred + n_gold) if n_pred + n_gold else 0.0
    return precision, recall, f1


def split_words(words, limit):
    """Split a word list into pieces of at most limit characters, at word boundaries, cutting
    after the last punctuation word of a full piece when it has one. A word longer than limit
    is cut into limit-character words."""
    pieces, current, size = [], [], 0
    for word in words:
        for w in [word[i:i + limit] for i in range(0, len(word), limit)]:
            while size + len(w) > limit:
                cut = max([i + 1 for i, x in enumerate(current) if x in PUNCTUATION] or
                          [len(current)])
                pieces.append(current[:cut])
                current = current[cut:]
                size = sum(len(x) for x in current)
            current.append(w)
            size += len(w)
    if current:
        pieces.append(current)
    return pieces


def split_text(text, limit):
    """Split text into pieces of at most limit characters, cutting after the last punctuation
    mark of each window when it has one."""
    pieces = []
    while len(text) > limit:
        cut = max([i + 1 for i, c in enumerate(text[:limit]) if c in PUNCTUATION] or [limit])
        pieces.append(text[:cut])
        text = text[cut:]
    if text:
        pieces.append(text)
    return pieces


def load_data(filename):
    """One word list per non-empty line."""
    if not os.path.exists(filename):
        raise FileNotFoundError('%s: expected a segmented text file (one sentence per line, '
                                'words separated by spaces) in B4K_DATA_DIR' % filename)
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            l = l.strip()
            if l:
                D.append(re.split(' +', l))
    return D


train_data = load_data(os.path.join(data_dir, 'train.txt'))[:limit]
valid_data = load_data(os.path.join(data_dir, 'dev.txt'))
test_data = load_data(os.path.join(data_dir, 'test.txt'))
train_pieces = [p for d in train_data for p in split_words(d, maxlen - 2)]

tokenizer = Tokenizer(dict_path, do_lower_case=True)
char_ids = {}


def encode_chars(text):
    """[CLS] + one token id per character + [SEP] ([UNK] where a character is no token)."""
    ids = [tokenizer._token_start_id]
    for c in text:
        if c not in char_ids:
            tokens = tokenizer.tokenize(c)[1:-1]
            char_ids[c] = (tokenizer.token_to_id(tokens[0]) if len(tokens) == 1
                           else tokenizer._token_unk_id)
        ids.append(char_ids[c])
    return ids + [tokenizer._token_end_id]


def padded_length(n):
    """Pad to a multiple of 16 (at most maxlen): few distinct shapes to compile."""
    return min(-(-n // 16) * 16, maxlen)


class data_generator(DataGenerator):
    """Batches of [token_ids, segment_ids], SBME labels."""
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, item in self.sample(random):
            token_ids = encode_chars(''.join(item))
            labels = [0] + words_to_tags(item) + [0]
            segment_ids = [0] * len(token_ids)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append(labels)
            if len(batch_token_ids) == self.batch_size or is_end:
                length = padded_length(max(len(x) for x in batch_token_ids))
                batch_token_ids = sequence_padding(batch_token_ids, length)
                batch_segment_ids = sequence_padding(batch_segment_ids, length)
                batch_labels = sequence_padding(batch_labels, length)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


model = build_transformer_model(
    config_path,
    checkpoint_path,
    model=model_type,
)

output_layer = 'Transformer-%s-FeedForward-Norm' % (bert_layers - 1)
output = model.get_layer(output_layer).output
output = Dense(num_labels)(output)
CRF = ConditionalRandomField(lr_multiplier=crf_lr_multiplier)
output = CRF(output)

model = Model(model.input, output)
model.summary()

model.compile(
    loss=CRF.sparse_loss,
    optimizer=Adam(learning_rate),
    metrics=[CRF.sparse_accuracy]
)


class WordSegmenter(ViterbiDecoder):
    """Segments texts: pieces of at most maxlen - 2 characters, predicted in batches."""
    def tokenize(self, text):
        return self.segment([text])[0]

    def segment(self, texts):
        pieces = [(i, p) for i, t in enumerate(texts) for p in split_text(t, maxlen - 2)]
        groups = {}
        for k, (_, p) in enumerate(pieces):
            groups.setdefault(padded_length(len(p) + 2), []).append(k)
        words = [[] for _ in pieces]
        size = batch_size * 2
        for length, ks in sorted(groups.items()):
            token_ids = sequence_padding([encode_chars(pieces[k][1]) for k in ks], length)
            # repeat the first row up to whole batches: one compiled shape per length
            token_ids = np.concatenate([token_ids, token_ids[[0] * (-len(ks) % size)]])
            segment_ids = np.zeros_like(token_ids)
            nodes = model.predict([token_ids, segment_ids], batch_size=size, verbose=0)
            for k, n in zip(ks, nodes):
                text = pieces[k][1]
                labels = self.decode(n[:len(text) + 2])
                words[k] = tags_to_words(text, labels[1:-1])
        results = [[] for _ in texts]
        for (i, _), w in zip(pieces, words):
            results[i] += w
        return results


segmenter = WordSegmenter(trans=K.eval(CRF.trans), starts=[0], ends=[0])


def evaluate(data):
    """Word-level (precision, recall, f1) on word lists."""
    return word_prf(data, segmenter.segment([''.join(d) for d in data]))


class Evaluator(keras.callbacks.Callback):
    """Scores dev after every epoch and keeps the best weights."""
    def __init__(self):
        self.best_val_f1 = -1
        self.best_scores = None  # (precision, recall, f1) of the saved weights
        self.epochs = 0
        self.seconds = 0.0  # spent scoring dev

    def on_epoch_end(self, epoch, logs=None):
        segmenter.trans = K.eval(CRF.trans)
        print(segmenter.trans)
        t = time.time()
        precision, recall, f1 = evaluate(valid_data)
        self.seconds += time.time() - t
        self.epochs += 1
        if f1 > self.best_val_f1:
            self.best_val_f1 = f1
            self.best_scores = precision, recall, f1
            model.save_weights(weights_path)
        print('valid:  f1: %.5f, precision: %.5f, recall: %.5f, best f1: %.5f\n'
              % (f1, precision, recall, self.best_val_f1))


class StepLimit(keras.callbacks.Callback):
    """Counts optimizer steps; stops training after max_steps (when set)."""
    def __init__(self):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if max_steps is not None and self.steps >= max_steps:
            self.model.stop_training = True


if __name__ == '__main__':

    evaluator = Evaluator()
    step_limit = StepLimit()
    train_generator = data_generator(train_pieces, batch_size)
    print('train: %d sentences (%d pieces of <= %d characters), dev: %d, test: %d'
          % (len(train_data), len(train_pieces), maxlen - 2, len(valid_data), len(test_data)))

    fit_started = time.time()
    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[step_limit, evaluator]
    )
    train_seconds = time.time() - fit_started - evaluator.seconds  # dev scoring excluded

    model.load_weights(weights_path)  # best dev F1
    segmenter.trans = K.eval(CRF.trans)
    test_started = time.time()
    scores = {}
    # dev: the scores of the saved weights, measured when they were saved
    for name, data, prf in [('dev', valid_data, evaluator.best_scores),
                            ('test', test_data, None)]:
        precision, recall, f1 = prf or evaluate(data)
        scores[name] = {'precision': precision, 'recall': recall, 'f1': f1,
                        'sentences': len(data), 'words': sum(len(d) for d in data)}
        print('%s:  f1: %.5f, precision: %.5f, recall: %.5f' % (name, f1, precision, recall))
    result = dict(scores, **{
        'task': 'cws', 'data_dir': data_dir, 'model': model_type, 'model_dir': model_dir,
        'backend': keras.backend.backend(), 'train_sentences': len(train_data),
        'train_pieces': len(train_pieces), 'steps': step_limit.steps,
        'epochs': evaluator.epochs,
        'max_steps': max_steps, 'maxlen': maxlen, 'batch_size': batch_size,
        'learning_rate': learning_rate, 'crf_lr_multiplier': crf_lr_multiplier, 'seed': seed,
        'train_seconds': round(train_seconds, 1),
        'dev_seconds': round(evaluator.seconds, 1),
        'test_seconds': round(time.time() - test_started, 1),
        'seconds': round(time.time() - started, 1),
    })
    with open(result_path, 'w', encoding='utf-8') as f:
        json.dump(result, f, ensure_ascii=False, indent=2)
    print('wrote %s' % result_path)

else:

    model.load_weights(weights_path)
    segmenter.trans = K.eval(CRF.trans)
