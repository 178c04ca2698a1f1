#! -*- coding: utf-8 -*-
# Unsupervised SimCSE: each sentence is encoded twice (different dropout masks); the two
# encodings are positives, every other sentence of the batch a negative. Evaluated by the
# Spearman correlation of cosine and label on labelled pairs (text1 \t text2 \t label).
# Environment: B4K_MODEL_DIR, B4K_DATA_DIR, B4K_EPOCHS, B4K_OUTPUT_DIR, B4K_POOLING
# (first-last-avg, last-avg, cls).
import os

import numpy as np
import scipy.stats
from bert4keras3.backend import keras, K
from bert4keras3.tokenizers import Tokenizer
from bert4keras3.models import build_transformer_model
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, DataGenerator, open

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/lcqmc'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_L-12_H-768_A-12')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
epochs = int(os.environ.get('B4K_EPOCHS', 1))
pooling = os.environ.get('B4K_POOLING', 'first-last-avg')
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')
maxlen = 64
batch_size = 16
dropout_rate = 0.1


def load_data(filename):
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            l = l.strip().split('\t')
            if len(l) == 3:
                D.append((l[0], l[1], float(l[2])))
    return D


datasets = {f: load_data(os.path.join(data_dir, 'lcqmc.%s.data' % f))
            for f in ['train', 'valid', 'test']}
tokenizer = Tokenizer(dict_path, do_lower_case=True)

# every sentence of every split, without labels, is training text
train_token_ids = []
for data in datasets.values():
    for text1, text2, _ in data:
        train_token_ids.append(tokenizer.encode(text1, maxlen=maxlen)[0])
        train_token_ids.append(tokenizer.encode(text2, maxlen=maxlen)[0])


class data_generator(DataGenerator):
    """Every sentence twice in a row; dummy labels (the loss builds its own)."""
    def __iter__(self, random=False):
        batch_token_ids = []
        for is_end, token_ids in self.sample(random):
            batch_token_ids.append(token_ids)
            batch_token_ids.append(token_ids)
            if len(batch_token_ids) == self.batch_size * 2 or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = np.zeros_like(batch_token_ids)
                batch_labels = np.zeros_like(batch_token_ids[:, :1])
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids = []


def simcse_loss(y_true, y_pred):
    """Cross-entropy picking row i's twin (i xor 1) among the other rows of the batch."""
    idxs = K.arange(0, K.shape(y_pred)[0])
    idxs_1 = idxs[None, :]
    idxs_2 = (idxs + 1 - idxs % 2 * 2)[:, None]
    y_true = K.cast(K.equal(idxs_1, idxs_2), K.floatx())
    y_pred = K.l2_normalize(y_pred, axis=1)
    similarities = K.dot(y_pred, K.transpose(y_pred))
    similarities = similarities - K.eye(K.shape(y_pred)[0]) * 1e12
    similarities = similarities * 20
    loss = K.categorical_crossentropy(y_true, similarities, from_logits=True)
    return K.mean(loss)


bert = build_transformer_model(config_path, checkpoint_path, dropout_rate=dropout_rate)
outputs, count = [], 0
while True:
    try:
        outputs.append(bert.get_layer('Transformer-%d-FeedForward-Norm' % count).output)
        count += 1
    except ValueError:
        break
if pooling == 'first-last-avg':
    output = keras.layers.Average()([
        keras.layers.GlobalAveragePooling1D()(outputs[0]),
        keras.layers.GlobalAveragePooling1D()(outputs[-1]),
    ])
elif pooling == 'last-avg':
    output = keras.layers.GlobalAveragePooling1D()(outputs[-1])
else:
    output = keras.layers.Lambda(lambda x: x[:, 0])(outputs[-1])
encoder = keras.models.Model(bert.inputs, output)
encoder.summary()
encoder.compile(loss=simcse_loss, optimizer=Adam(1e-5))


def l2_normalize(vecs):
    return vecs / np.clip((vecs**2).sum(axis=1, keepdims=True)**0.5, 1e-8, np.inf)


def evaluate(data):
    a_token_ids = sequence_padding([tokenizer.encode(d[0], maxlen=maxlen)[0] for d in data])
    b_token_ids = sequence_padding([tokenizer.encode(d[1], maxlen=maxlen)[0] for d in data])
    a_vecs = l2_normalize(encoder.predict([a_token_ids, np.zeros_like(a_token_ids)]))
    b_vecs = l2_normalize(encoder.predict([b_token_ids, np.zeros_like(b_token_ids)]))
    sims = (a_vecs * b_vecs).sum(axis=1)
    return scipy.stats.spearmanr([d[2] for d in data], sims).correlation


if __name__ == '__main__':
    train_generator = data_generator(train_token_ids, batch_size)
    encoder.fit(
        train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=epochs
    )
    scores = {name: evaluate(data) for name, data in datasets.items()}
    for name, score in scores.items():
        print('%s: %.5f' % (name, score))
    encoder.save_weights(os.path.join(output_dir, 'simcse.weights.h5'))
