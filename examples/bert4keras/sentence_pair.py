#! -*- coding: utf-8 -*-
# Sentence-pair classification (LCQMC format: text1 \t text2 \t label), BERT + [CLS] pooler.
# Environment: B4K_MODEL_DIR (bert_config.json, vocab.txt, bert_model.ckpt), B4K_DATA_DIR,
# B4K_EPOCHS, B4K_OUTPUT_DIR.
import os

import numpy as np
from bert4keras3.backend import keras, set_gelu, K
from bert4keras3.tokenizers import Tokenizer
from bert4keras3.models import build_transformer_model
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, DataGenerator
from bert4keras3.snippets import open
from keras.layers import Dropout, Dense

set_gelu('tanh')

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/lcqmc'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_wwm_L-12_H-768_A-12')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
epochs = int(os.environ.get('B4K_EPOCHS', 20))
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')
weights_path = os.path.join(output_dir, 'sentence_pair.weights.h5')
maxlen = 128
batch_size = 64


def load_data(filename):
    """One (text1, text2, label) per line."""
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            text1, text2, label = l.strip().split('\t')
            D.append((text1, text2, int(label)))
    return D


train_data = load_data(os.path.join(data_dir, 'lcqmc.train.data'))
valid_data = load_data(os.path.join(data_dir, 'lcqmc.valid.data'))
test_data = load_data(os.path.join(data_dir, 'lcqmc.test.data'))

tokenizer = Tokenizer(dict_path, do_lower_case=True)


class data_generator(DataGenerator):
    """Batches of ([token_ids, segment_ids], labels); the pair is one sequence."""
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (text1, text2, label) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(text1, text2, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


bert = build_transformer_model(
    config_path=config_path,
    checkpoint_path=checkpoint_path,
    with_pool=True,
    return_keras_model=False,
)
output = Dropout(rate=0.1)(bert.model.output)
output = Dense(
    units=2, activation='softmax', kernel_initializer=bert.initializer
)(output)
model = keras.models.Model(bert.model.input, output)
model.summary()

model.compile(
    loss='sparse_categorical_crossentropy',
    optimizer=Adam(2e-5),
    metrics=['accuracy'],
)

train_generator = data_generator(train_data, batch_size)
valid_generator = data_generator(valid_data, batch_size)
test_generator = data_generator(test_data, batch_size)


def evaluate(data):
    total, right = 0., 0.
    for x_true, y_true in data:
        y_pred = model.predict(x_true).argmax(axis=1)
        y_true = y_true[:, 0]
        total += len(y_true)
        right += (y_true == y_pred).sum()
    return right / total


class Evaluator(keras.callbacks.Callback):
    """Keeps the weights with the best validation accuracy."""
    def __init__(self):
        self.best_val_acc = 0.

    def on_epoch_end(self, epoch, logs=None):
        val_acc = evaluate(valid_generator)
        if val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            model.save_weights(weights_path)
        test_acc = evaluate(test_generator)
        print(
            u'val_acc: %.5f, best_val_acc: %.5f, test_acc: %.5f\n' %
            (val_acc, self.best_val_acc, test_acc)
        )


if __name__ == '__main__':
    evaluator = Evaluator()
    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator],
    )

    model.load_weights(weights_path)
    test_acc = evaluate(test_generator)  # named so that tests can read it
    print(u'final test acc: %05f\n' % test_acc)

else:

    model.load_weights(weights_path)
