#! -*- coding: utf-8 -*-
# CoSENT: sentence embeddings trained so that every positive pair's cosine ranks above
# every negative pair's (a ranking cross-entropy on cosine differences); evaluated by the
# Spearman correlation of cosine and label. Data: text1 \t text2 \t label (LCQMC format).
# Environment: B4K_MODEL_DIR, B4K_DATA_DIR, B4K_EPOCHS, B4K_OUTPUT_DIR.
import os

import numpy as np
import scipy.stats
from bert4keras3.backend import keras, K
from bert4keras3.tokenizers import Tokenizer
from bert4keras3.models import build_transformer_model
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import open
from bert4keras3.snippets import sequence_padding, DataGenerator
from tqdm import tqdm

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/lcqmc'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_L-12_H-768_A-12')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
epochs = int(os.environ.get('B4K_EPOCHS', 5))
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')
weights_path = os.path.join(output_dir, 'cosent.weights.h5')
maxlen = 64
batch_size = 32


def load_data(filename):
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            l = l.strip().split('\t')
            if len(l) == 3:
                D.append((l[0], l[1], int(l[2])))
    return D


train_data, valid_data, test_data = [
    load_data(os.path.join(data_dir, 'lcqmc.%s.data' % f)) for f in ['train', 'valid', 'test']
]
tokenizer = Tokenizer(dict_path, do_lower_case=True)


class data_generator(DataGenerator):
    """Each pair contributes two consecutive rows (text1, text2) with the pair's label."""
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (text1, text2, label) in self.sample(random):
            for text in [text1, text2]:
                token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
                batch_token_ids.append(token_ids)
                batch_segment_ids.append(segment_ids)
                batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size * 2 or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


def cosent_loss(y_true, y_pred):
    """log(1 + sum over (i, j) with label_i > label_j of exp(20 (cos_j - cos_i)))."""
    y_true = y_true[::2, 0]
    y_true = K.cast(y_true[:, None] < y_true[None, :], K.floatx())
    y_pred = K.l2_normalize(y_pred, axis=1)
    y_pred = K.sum(y_pred[::2] * y_pred[1::2], axis=1) * 20
    y_pred = y_pred[:, None] - y_pred[None, :]
    y_pred = K.reshape(y_pred - (1 - y_true) * 1e12, [-1])
    y_pred = K.concatenate([[0], y_pred], axis=0)
    return K.logsumexp(y_pred)


# build the model
base = build_transformer_model(config_path, checkpoint_path)
output = keras.layers.Lambda(lambda x: x[:, 0])(base.output)
encoder = keras.models.Model(base.inputs, output)

model = encoder
model.compile(loss=cosent_loss, optimizer=Adam(2e-5))

train_generator = data_generator(train_data, batch_size)
valid_generator = data_generator(valid_data, batch_size)
test_generator = data_generator(test_data, batch_size)


def compute_corrcoef(x, y):
    """Spearman correlation."""
    return scipy.stats.spearmanr(x, y).correlation


def l2_normalize(vecs):
    """L2 normalisation."""
    norms = (vecs**2).sum(axis=1, keepdims=True)**0.5
    return vecs / np.clip(norms, 1e-8, np.inf)


class Evaluator(keras.callbacks.Callback):
    """Keeps the weights with the best validation score."""
    def __init__(self):
        self.best_val_score = 0.

    def on_epoch_end(self, epoch, logs=None):
        val_score = self.evaluate(valid_generator)
        if val_score > self.best_val_score:
            self.best_val_score = val_score
            model.save_weights(weights_path)
        print(
            u'val_score: %.5f, best_val_score: %.5f\n' %
            (val_score, self.best_val_score)
        )

    def evaluate(self, data):
        Y_true, Y_pred = [], []
        for x_true, y_true in data:
            Y_true.extend(y_true[::2, 0])
            x_vecs = encoder.predict(x_true)
            x_vecs = l2_normalize(x_vecs)
            y_pred = (x_vecs[::2] * x_vecs[1::2]).sum(1)
            Y_pred.extend(y_pred)
        return compute_corrcoef(Y_true, Y_pred)


if __name__ == '__main__':

    evaluator = Evaluator()

    model.fit_generator(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator]
    )

    model.load_weights(weights_path)
    test_score = evaluator.evaluate(test_generator)
    print(u'test_score: %.5f' % test_score)

else:

    model.load_weights(weights_path)
