#! -*- coding:utf-8 -*-
# Adversarial training (FGM on the token embeddings) for long-text classification,
# IFLYTEK format (JSON lines with "sentence" and "label"). Blog: https://kexue.fm/archives/7234
# Port of bert4keras' examples/task_iflytek_adversarial_training.py. The one change beyond
# imports, data and config: bert4keras' `adversarial_training` patched Keras 2's
# `train_function` with `K.gradients` / `K.function`, which Keras 3 does not have; the same
# function (same arguments) now comes from `bert4keras3.training`, so its definition is gone.
# Environment: B4K_MODEL_DIR, B4K_DATA_DIR, B4K_EPOCHS, B4K_OUTPUT_DIR.
import json
import os

import numpy as np
from bert4keras3.backend import keras, search_layer, K
from bert4keras3.tokenizers import Tokenizer
from bert4keras3.models import build_transformer_model
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, DataGenerator
from bert4keras3.training import adversarial_training
from keras.layers import Lambda, Dense
from tqdm import tqdm

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/iflytek'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_L-12_H-768_A-12')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
epochs = int(os.environ.get('B4K_EPOCHS', 50))

num_classes = sum(1 for _ in open(os.path.join(data_dir, 'labels.json'), encoding='utf-8'))
maxlen = 128
batch_size = 32

# BERT base
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')
weights_path = os.path.join(output_dir, 'adversarial.weights.h5')


def load_data(filename):
    """One (text, label id) per line."""
    D = []
    with open(filename) as f:
        for i, l in enumerate(f):
            l = json.loads(l)
            text, label = l['sentence'], l['label']
            D.append((text, int(label)))
    return D


train_data = load_data(os.path.join(data_dir, 'train.json'))
valid_data = load_data(os.path.join(data_dir, 'dev.json'))

tokenizer = Tokenizer(dict_path, do_lower_case=True)


class data_generator(DataGenerator):
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids, batch_labels = [], [], []
        for is_end, (text, label) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            batch_labels.append([label])
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                batch_labels = sequence_padding(batch_labels)
                yield [batch_token_ids, batch_segment_ids], batch_labels
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


train_generator = data_generator(train_data, batch_size)
valid_generator = data_generator(valid_data, batch_size)

bert = build_transformer_model(
    config_path=config_path,
    checkpoint_path=checkpoint_path,
    return_keras_model=False,
)

output = Lambda(lambda x: x[:, 0])(bert.model.output)
output = Dense(
    units=num_classes,
    activation='softmax',
    kernel_initializer=bert.initializer
)(output)

model = keras.models.Model(bert.model.input, output)
model.summary()

model.compile(
    loss='sparse_categorical_crossentropy',
    optimizer=Adam(2e-5),
    metrics=['sparse_categorical_accuracy'],
)

# one line turns adversarial training on
adversarial_training(model, 'Embedding-Token', 0.5)


def evaluate(data):
    total, right = 0., 0.
    for x_true, y_true in data:
        y_pred = model.predict(x_true).argmax(axis=1)
        y_true = y_true[:, 0]
        total += len(y_true)
        right += (y_true == y_pred).sum()
    return right / total


class Evaluator(keras.callbacks.Callback):
    def __init__(self):
        self.best_val_acc = 0.

    def on_epoch_end(self, epoch, logs=None):
        val_acc = evaluate(valid_generator)
        if val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            model.save_weights(weights_path)
        print(u'val_acc: %.5f, best_val_acc: %.5f\n' % (val_acc, self.best_val_acc))


def predict_to_file(in_file, out_file):
    """Write test predictions in the CLUE submission format (one JSON per line)."""
    fw = open(out_file, 'w')
    with open(in_file) as fr:
        for l in tqdm(fr):
            l = json.loads(l)
            text = l['sentence']
            token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
            label = model.predict([[token_ids], [segment_ids]])[0].argmax()
            l = json.dumps({'id': str(l['id']), 'label': str(label)})
            fw.write(l + '\n')
    fw.close()


if __name__ == '__main__':
    evaluator = Evaluator()
    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator]
    )

else:

    model.load_weights(weights_path)
    # predict_to_file(os.path.join(data_dir, 'test.json'), os.path.join(output_dir, 'iflytek_predict.json'))
