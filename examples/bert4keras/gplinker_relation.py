#! -*- coding: utf-8 -*-
# Relation (triple) extraction with GPLinker: one EfficientGlobalPointer finds subject and
# object spans, two more link (subject head, object head) and (subject tail, object tail)
# per predicate. Sparse multi-label loss; Adam with exponential moving average weights.
# Data: DuIE format (JSON lines {"text", "spo_list": [{"subject", "predicate", "object"}]}
# and all_50_schemas). Environment: B4K_MODEL_DIR, B4K_DATA_DIR, B4K_EPOCHS, B4K_OUTPUT_DIR.
import json
import os

import numpy as np
from bert4keras3.backend import keras, K
from bert4keras3.backend import sparse_multilabel_categorical_crossentropy
from bert4keras3.tokenizers import Tokenizer
from bert4keras3.layers import EfficientGlobalPointer
from bert4keras3.models import build_transformer_model
from bert4keras3.optimizers import Adam, extend_with_exponential_moving_average
from bert4keras3.snippets import sequence_padding, DataGenerator
from bert4keras3.snippets import open, to_array

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/duie'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_L-12_H-768_A-12')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
epochs = int(os.environ.get('B4K_EPOCHS', 20))
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')
maxlen = 128
batch_size = 16


def load_data(filename):
    """{'text': text, 'spo_list': [(s, p, o), ...]} per line."""
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            l = json.loads(l)
            D.append({
                'text': l['text'],
                'spo_list': [(spo['subject'], spo['predicate'], spo['object'])
                             for spo in l['spo_list']]
            })
    return D


train_data = load_data(os.path.join(data_dir, 'train_data.json'))
valid_data = load_data(os.path.join(data_dir, 'dev_data.json'))
predicate2id, id2predicate = {}, {}
with open(os.path.join(data_dir, 'all_50_schemas'), encoding='utf-8') as f:
    for l in f:
        l = json.loads(l)
        if l['predicate'] not in predicate2id:
            id2predicate[len(predicate2id)] = l['predicate']
            predicate2id[l['predicate']] = len(predicate2id)

tokenizer = Tokenizer(dict_path, do_lower_case=True)


def search(pattern, sequence):
    """First index of the sub-list pattern in sequence, or -1."""
    n = len(pattern)
    for i in range(len(sequence)):
        if sequence[i:i + n] == pattern:
            return i
    return -1


class data_generator(DataGenerator):
    """Labels are lists of (row, column) pairs per head (sparse multi-label targets)."""
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids = [], []
        batch_entity_labels, batch_head_labels, batch_tail_labels = [], [], []
        for is_end, d in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(d['text'], maxlen=maxlen)
            spoes = set()
            for s, p, o in d['spo_list']:
                s = tokenizer.encode(s)[0][1:-1]
                p = predicate2id[p]
                o = tokenizer.encode(o)[0][1:-1]
                sh = search(s, token_ids)
                oh = search(o, token_ids)
                if sh != -1 and oh != -1:
                    spoes.add((sh, sh + len(s) - 1, p, oh, oh + len(o) - 1))
            entity_labels = [set() for _ in range(2)]
            head_labels = [set() for _ in range(len(predicate2id))]
            tail_labels = [set() for _ in range(len(predicate2id))]
            for sh, st, p, oh, ot in spoes:
                entity_labels[0].add((sh, st))
                entity_labels[1].add((oh, ot))
                head_labels[p].add((sh, oh))
                tail_labels[p].add((st, ot))
            for label in entity_labels + head_labels + tail_labels:
                if not label:  # at least one target: (0, 0), the [CLS] cell, never predicted
                    label.add((0, 0))
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_entity_labels.append(sequence_padding([list(l) for l in entity_labels]))
            batch_head_labels.append(sequence_padding([list(l) for l in head_labels]))
            batch_tail_labels.append(sequence_padding([list(l) for l in tail_labels]))
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_entity_labels = sequence_padding(batch_entity_labels, seq_dims=2)
                batch_head_labels = sequence_padding(batch_head_labels, seq_dims=2)
                batch_tail_labels = sequence_padding(batch_tail_labels, seq_dims=2)
                yield [batch_token_ids, batch_segment_ids], [
                    batch_entity_labels, batch_head_labels, batch_tail_labels
                ]
                batch_token_ids, batch_segment_ids = [], []
                batch_entity_labels, batch_head_labels, batch_tail_labels = [], [], []


def globalpointer_crossentropy(y_true, y_pred):
    """Sparse multi-label cross-entropy: (row, column) targets index the flattened scores."""
    shape = K.shape(y_pred)
    y_true = y_true[..., 0] * K.cast(shape[2], K.floatx()) + y_true[..., 1]
    y_pred = K.reshape(y_pred, (shape[0], -1, K.prod(shape[2:])))
    loss = sparse_multilabel_categorical_crossentropy(y_true, y_pred, True)
    return K.mean(K.sum(loss, axis=1))


base = build_transformer_model(config_path, checkpoint_path, return_keras_model=False)
entity_output = EfficientGlobalPointer(heads=2, head_size=64)(base.model.output)
head_output = EfficientGlobalPointer(
    heads=len(predicate2id), head_size=64, RoPE=False, tril_mask=False
)(base.model.output)
tail_output = EfficientGlobalPointer(
    heads=len(predicate2id), head_size=64, RoPE=False, tril_mask=False
)(base.model.output)
model = keras.models.Model(base.model.inputs, [entity_output, head_output, tail_output])
model.summary()
AdamEMA = extend_with_exponential_moving_average(Adam, name='AdamEMA')
optimizer = AdamEMA(learning_rate=2e-5, ema_momentum=0.99)
model.compile(loss=globalpointer_crossentropy, optimizer=optimizer)


def extract_spoes(text, threshold=0):
    tokens = tokenizer.tokenize(text, maxlen=maxlen)
    mapping = tokenizer.rematch(text, tokens)
    token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
    token_ids, segment_ids = to_array([token_ids], [segment_ids])
    outputs = model.predict([token_ids, segment_ids])
    outputs = [o[0] for o in outputs]
    subjects, objects = set(), set()
    outputs[0][:, [0, -1]] -= np.inf
    outputs[0][:, :, [0, -1]] -= np.inf
    for l, h, t in zip(*np.where(outputs[0] > threshold)):
        if l == 0:
            subjects.add((h, t))
        else:
            objects.add((h, t))
    spoes = set()
    for sh, st in subjects:
        for oh, ot in objects:
            p1s = np.where(outputs[1][:, sh, oh] > threshold)[0]
            p2s = np.where(outputs[2][:, st, ot] > threshold)[0]
            for p in set(p1s) & set(p2s):
                spoes.add((
                    text[mapping[sh][0]:mapping[st][-1] + 1], id2predicate[p],
                    text[mapping[oh][0]:mapping[ot][-1] + 1]
                ))
    return list(spoes)


def evaluate(data):
    """Triple-level F1, precision, recall; predictions written to dev_pred.json."""
    X, Y, Z = 1e-10, 1e-10, 1e-10
    with open(os.path.join(output_dir, 'dev_pred.json'), 'w', encoding='utf-8') as f:
        for d in data:
            R = set(extract_spoes(d['text']))
            T = set(d['spo_list'])
            X += len(R & T)
            Y += len(R)
            Z += len(T)
            f.write(json.dumps({'text': d['text'], 'spo_list': list(T),
                                'spo_list_pred': list(R)}, ensure_ascii=False) + '\n')
    return 2 * X / (Y + Z), X / Y, X / Z


class Evaluator(keras.callbacks.Callback):
    def __init__(self):
        self.best_val_f1 = 0.
        self.weights_path = os.path.join(output_dir, 'gplinker.weights.h5')

    def on_epoch_end(self, epoch, logs=None):
        optimizer.apply_ema_weights()
        f1, precision, recall = evaluate(valid_data)
        if f1 >= self.best_val_f1:
            self.best_val_f1 = f1
            model.save_weights(self.weights_path)
        optimizer.reset_old_weights()
        print('f1: %.5f, precision: %.5f, recall: %.5f, best f1: %.5f' %
              (f1, precision, recall, self.best_val_f1))


if __name__ == '__main__':
    train_generator = data_generator(train_data, batch_size)
    evaluator = Evaluator()
    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator],
    )
