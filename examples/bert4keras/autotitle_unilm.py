#! -*- coding: utf-8 -*-
# Title generation as seq2seq with UniLM (BERT with the seq2seq attention mask): the
# content is segment 0, the title segment 1; a Loss layer scores only the title tokens and
# an AutoRegressiveDecoder beam search writes titles. Metric: character ROUGE-L.
# Data: CSL format (title \t content). Environment: B4K_MODEL_DIR, B4K_DATA_DIR, B4K_EPOCHS,
# B4K_OUTPUT_DIR, B4K_TITLE_MAXLEN (longest generated title, in tokens).
import os

import numpy as np
from bert4keras3.backend import keras, K
from bert4keras3.layers import Loss
from bert4keras3.models import build_transformer_model
from bert4keras3.tokenizers import Tokenizer, load_vocab
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, open
from bert4keras3.snippets import DataGenerator, AutoRegressiveDecoder
from bert4keras3.snippets import longest_common_subsequence

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/csl'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_L-12_H-768_A-12')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
epochs = int(os.environ.get('B4K_EPOCHS', 20))
title_maxlen = int(os.environ.get('B4K_TITLE_MAXLEN', 32))
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')
maxlen = 256
batch_size = 16


def load_data(filename):
    """(title, content) per line."""
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            title, content = l.strip().split('\t')
            D.append((title, content))
    return D


train_data = load_data(os.path.join(data_dir, 'train.tsv'))
valid_data = load_data(os.path.join(data_dir, 'val.tsv'))

# keep only the tokens a Chinese model needs (smaller embedding and softmax)
token_dict, keep_tokens = load_vocab(
    dict_path=dict_path,
    simplified=True,
    startswith=['[PAD]', '[UNK]', '[CLS]', '[SEP]'],
)
tokenizer = Tokenizer(token_dict, do_lower_case=True)


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids = [], []
        for is_end, (title, content) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(content, title, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                yield [batch_token_ids, batch_segment_ids], None
                batch_token_ids, batch_segment_ids = [], []


class CrossEntropy(Loss):
    """Next-token cross-entropy over segment 1 (the title) only."""
    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        y_true = y_true[:, 1:]
        y_mask = y_mask[:, 1:]
        y_pred = y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        return K.sum(loss * y_mask) / K.sum(y_mask)


model = build_transformer_model(
    config_path,
    checkpoint_path,
    application='unilm',
    keep_tokens=keep_tokens,
)
output = CrossEntropy(2)(model.inputs + model.outputs)
model = keras.models.Model(model.inputs, output)
model.summary()
model.compile(optimizer=Adam(2e-5))


class AutoTitle(AutoRegressiveDecoder):
    @AutoRegressiveDecoder.wraps(default_rtype='probas')
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        return self.last_token(model).predict([token_ids, segment_ids])

    def generate(self, text, topk=1):
        max_c_len = maxlen - self.maxlen
        token_ids, segment_ids = tokenizer.encode(text, maxlen=max_c_len)
        output_ids = self.beam_search([token_ids, segment_ids], topk=topk)
        return tokenizer.decode(output_ids)


autotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=title_maxlen)


def rouge_l(a, b):
    """Character-level ROUGE-L F1 of two strings."""
    if not a or not b:
        return 0.
    lcs = longest_common_subsequence(a, b)[0]
    return 2. * lcs / (len(a) + len(b))


class Evaluator(keras.callbacks.Callback):
    def __init__(self):
        self.best_rouge_l = -1.
        self.weights_path = os.path.join(output_dir, 'autotitle.weights.h5')

    def evaluate(self, data, topk=1):
        scores = [rouge_l(autotitle.generate(content, topk), title) for title, content in data]
        return float(np.mean(scores))

    def on_epoch_end(self, epoch, logs=None):
        score = self.evaluate(valid_data)
        if score >= self.best_rouge_l:
            self.best_rouge_l = score
            model.save_weights(self.weights_path)
        print('rouge-l: %.5f, best rouge-l: %.5f' % (score, self.best_rouge_l))
        print('generated title:', autotitle.generate(valid_data[0][1]))


if __name__ == '__main__':
    evaluator = Evaluator()
    train_generator = data_generator(train_data, batch_size)
    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator],
    )
