#! -*- coding: utf-8 -*-
# Knowledge-base QA (KgCLUE) as constrained seq2seq: UniLM reads the question and writes
# "subject [SEP] predicate [SEP]"; every decoding step may only extend a prefix of a
# (subject, predicate) key of the knowledge base, so the answer is always a KB object.
# Data: train.json / dev.json ({"question", "answer": "s ||| p ||| o"}) and Knowledge.txt
# (s \t p \t o). Environment: B4K_MODEL_DIR, B4K_MODEL_TYPE (default roformer), B4K_DATA_DIR,
# B4K_EPOCHS, B4K_OUTPUT_DIR.
import json
import os

import numpy as np
from bert4keras3.backend import keras, K
from bert4keras3.layers import Loss
from bert4keras3.models import build_transformer_model
from bert4keras3.tokenizers import Tokenizer
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, open
from bert4keras3.snippets import DataGenerator, AutoRegressiveDecoder

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/kgclue'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_roformer-sim-char-ft_L-12_H-768_A-12')
model_type = os.environ.get('B4K_MODEL_TYPE', 'roformer')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
epochs = int(os.environ.get('B4K_EPOCHS', 10))
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')
maxlen = 128
batch_size = 16

tokenizer = Tokenizer(dict_path, do_lower_case=True)


def load_data(filename):
    """(question, (subject, predicate, object)) per line."""
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            l = json.loads(l)
            s, p, o = l['answer'].split(' ||| ')
            D.append((l['question'], (s, p, o)))
    return D


class KnowledgeTrie(object):
    """Token-id prefix tree of the KB keys "subject [SEP] predicate [SEP]" -> objects."""
    def __init__(self):
        self.data = {}

    def add(self, ids, value):
        node = self.data
        for i in ids:
            node = node.setdefault(i, {})
        node.setdefault(None, []).append(value)

    def node(self, ids):
        node = self.data
        for i in ids:
            node = node.get(i)
            if node is None:
                return {}
        return node

    def next_ones(self, ids):
        return [k for k in self.node(ids) if k is not None]

    def get(self, ids):
        return self.node(ids).get(None, [])


KG = KnowledgeTrie()
with open(os.path.join(data_dir, 'Knowledge.txt'), encoding='utf-8') as f:
    for l in f:
        s, p, o = l.rstrip('\n').split('\t')
        KG.add(tokenizer.encode(s, p)[0][1:], o)

train_data = load_data(os.path.join(data_dir, 'train.json'))
valid_data = load_data(os.path.join(data_dir, 'dev.json'))


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids = [], []
        for is_end, (q, (s, p, o)) in self.sample(random):
            q_ids = tokenizer.encode(q, maxlen=maxlen // 2)[0]
            a_ids = tokenizer.encode(s, p)[0][1:]
            token_ids = (q_ids + a_ids)[:maxlen]
            segment_ids = ([0] * len(q_ids) + [1] * len(a_ids))[:maxlen]
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                yield [batch_token_ids, batch_segment_ids], None
                batch_token_ids, batch_segment_ids = [], []


class CrossEntropy(Loss):
    """Next-token cross-entropy over segment 1 (the answer key) only."""
    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        y_true = y_true[:, 1:]
        y_mask = y_mask[:, 1:]
        y_pred = y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        return K.sum(loss * y_mask) / K.sum(y_mask)


model = build_transformer_model(
    config_path, checkpoint_path, model=model_type, application='unilm'
)
output = CrossEntropy(2)(model.inputs + model.outputs)
model = keras.models.Model(model.inputs, output)
model.summary()
model.compile(optimizer=Adam(5e-5))


class AutoQA(AutoRegressiveDecoder):
    """Beam search restricted to the KB: tokens outside the trie get probability 0."""
    @AutoRegressiveDecoder.wraps(default_rtype='probas')
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        all_token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        probas = self.last_token(model).predict([all_token_ids, segment_ids])
        new_probas = np.zeros_like(probas)
        for i, ids in enumerate(output_ids):
            next_ids = KG.next_ones(list(ids))
            if not next_ids:  # a complete key: stop
                next_ids = [self.end_id]
            new_probas[i, next_ids] = probas[i, next_ids] + 1e-12
        return new_probas / new_probas.sum(axis=1, keepdims=True)

    def generate(self, text, topk=1):
        token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen // 2)
        output_ids = self.beam_search([token_ids, segment_ids], topk=topk, min_ends=2)
        output_ids = [int(i) for i in output_ids]
        objects = KG.get(output_ids)
        sep = output_ids.index(self.end_id) if self.end_id in output_ids else len(output_ids)
        subject = tokenizer.decode(output_ids[:sep])
        predicate = tokenizer.decode(output_ids[sep + 1:])
        return subject, predicate, objects[0] if objects else ''


autoqa = AutoQA(start_id=None, end_id=tokenizer._token_end_id, maxlen=32)


class Evaluator(keras.callbacks.Callback):
    """Exact match of the answer object."""
    def __init__(self):
        self.best_em = -1.
        self.weights_path = os.path.join(output_dir, 'kgclue.weights.h5')

    def evaluate(self, data, topk=1):
        right = 0.
        for q, (s, p, o) in data:
            right += autoqa.generate(q, topk)[2] == o
        return right / len(data)

    def on_epoch_end(self, epoch, logs=None):
        em = self.evaluate(valid_data)
        if em >= self.best_em:
            self.best_em = em
            model.save_weights(self.weights_path)
        print('em: %.5f, best em: %.5f' % (em, self.best_em))


if __name__ == '__main__':
    evaluator = Evaluator()
    train_generator = data_generator(train_data, batch_size)
    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator],
    )
    print(valid_data[0][0], autoqa.generate(valid_data[0][0], topk=2))
