#! -*- coding: utf-8 -*-
# Model compression with BERT-of-Theseus: train a classifier on the full model
# (predecessor), then train a model whose modules are randomly replaced, per batch, by a
# smaller successor's (each successor layer stands for several predecessor layers), then
# fine-tune the successor alone. Data: iflytek-like JSON lines {"sentence", "label"}; when
# test.json carries labels, the best predecessor and successor are scored on it and timed.
# Environment: B4K_MODEL_DIR, B4K_DATA_DIR, B4K_EPOCHS, B4K_OUTPUT_DIR, B4K_SUCCESSOR_LAYERS,
# B4K_MODEL (family, default bert), B4K_LR (default 2e-5), B4K_LIMIT (first N training
# examples), B4K_MAXLEN (default 128), B4K_DIRECT=1 (also fine-tune a successor-sized model
# from the checkpoint's first layers without Theseus, the baseline it should beat),
# B4K_SEED (keras.utils.set_random_seed first).
# Results: OUTPUT_DIR/theseus_result.json.
import json
import os
import time

from bert4keras3.backend import keras, K
from bert4keras3.tokenizers import Tokenizer
from bert4keras3.models import build_transformer_model
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, DataGenerator
from bert4keras3.snippets import open
from keras.layers import Input, Lambda, Dense, Layer
from keras.models import Model

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/iflytek'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_L-12_H-768_A-12')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
epochs = int(os.environ.get('B4K_EPOCHS', 5))
successor_layers = int(os.environ.get('B4K_SUCCESSOR_LAYERS', 3))
model_name = os.environ.get('B4K_MODEL', 'bert')
learning_rate = float(os.environ.get('B4K_LR', 2e-5))
limit = int(os.environ['B4K_LIMIT']) if os.environ.get('B4K_LIMIT') else None
direct_baseline = os.environ.get('B4K_DIRECT', '0') == '1'
if os.environ.get('B4K_SEED'):
    keras.utils.set_random_seed(int(os.environ['B4K_SEED']))
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')
maxlen = int(os.environ.get('B4K_MAXLEN', 128))
batch_size = 32


def load_data(filename):
    D = []
    with open(filename) as f:
        for i, l in enumerate(f):
            l = json.loads(l)
            text, label = l['sentence'], l.get('label')
            D.append((text, None if label is None else int(label)))
    return D


train_data = load_data(os.path.join(data_dir, 'train.json'))[:limit]
valid_data = load_data(os.path.join(data_dir, 'dev.json'))
test_path = os.path.join(data_dir, 'test.json')
test_data = load_data(test_path) if os.path.exists(test_path) else []
if any(label is None for _, label in test_data):
    test_data = []  # an unlabelled (submission) test split is not scored
num_classes = max(d[1] for d in train_data + valid_data) + 1
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
test_generator = data_generator(test_data, batch_size) if test_data else None


class BinaryRandomChoice(Layer):
    """While training, one of its two inputs at random (per batch); otherwise the second."""
    def __init__(self, **kwargs):
        super(BinaryRandomChoice, self).__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        if mask is not None:
            return mask[1]

    def call(self, inputs):
        source, target = inputs
        mask = K.random_binomial(shape=[1], p=0.5)
        output = mask * source + (1 - mask) * target
        return K.in_train_phase(output, target)

    def compute_output_shape(self, input_shape):
        return input_shape[1]


def set_predecessor_trainable(trainable):
    """Freeze (or unfreeze) the predecessor and the shared classifier.

    The original froze them while building the Theseus model, before any training: Keras 2
    collected each model's trainable weights at compile time, so the predecessor (compiled
    earlier) still trained. Keras 3 reads the flags when ``fit`` builds its train step, so the
    flags are set between the phases here, each model being recompiled after the change.
    """
    for layer in predecessor.model.layers:
        layer.trainable = trainable
    classfier.trainable = trainable


def bert_of_theseus(predecessor, successor, classfier):
    inputs = predecessor.inputs
    predecessor_outputs = predecessor.apply_embeddings(inputs)
    successor_outputs = successor.apply_embeddings(inputs)
    outputs = BinaryRandomChoice()([predecessor_outputs, successor_outputs])
    layers_per_module = predecessor.num_hidden_layers // successor.num_hidden_layers
    for index in range(successor.num_hidden_layers):
        predecessor_outputs = outputs
        for sub_index in range(layers_per_module):
            predecessor_outputs = predecessor.apply_main_layers(
                predecessor_outputs, layers_per_module * index + sub_index
            )
        successor_outputs = successor.apply_main_layers(outputs, index)
        outputs = BinaryRandomChoice()([predecessor_outputs, successor_outputs])
    outputs = classfier(outputs)
    model = Model(inputs, outputs)
    return model


def evaluate(data, model):
    total, right = 0., 0.
    for x_true, y_true in data:
        y_pred = model.predict(x_true).argmax(axis=1)
        y_true = y_true[:, 0]
        total += len(y_true)
        right += (y_true == y_pred).sum()
    return right / total


def score_and_time(model, weights):
    """Test accuracy of ``model`` with ``weights`` and its predict time per batch."""
    model.load_weights(weights)
    batches = list(test_generator)
    model.predict(batches[0][0], verbose=0)  # compile first
    started = time.time()
    accuracy = evaluate(batches, model)
    return {'test_acc': float(accuracy), 'batches': len(batches),
            'seconds_per_batch': (time.time() - started) / len(batches)}


class Evaluator(keras.callbacks.Callback):
    def __init__(self, savename):
        self.best_val_acc = 0.
        self.savename = savename

    def on_epoch_end(self, epoch, logs=None):
        val_acc = evaluate(valid_generator, self.model)
        if val_acc > self.best_val_acc:
            self.best_val_acc = val_acc
            self.model.save_weights(self.savename)
        print(
            u'val_acc: %.5f, best_val_acc: %.5f\n' %
            (val_acc, self.best_val_acc)
        )


predecessor = build_transformer_model(
    config_path=config_path,
    checkpoint_path=checkpoint_path,
    model=model_name,
    return_keras_model=False,
    prefix='Predecessor-',
)
successor = build_transformer_model(
    config_path=config_path,
    checkpoint_path=checkpoint_path,
    model=model_name,
    return_keras_model=False,
    num_hidden_layers=successor_layers,
    prefix='Successor-',
)

x_in = Input(shape=K.int_shape(predecessor.output)[1:])
x = Lambda(lambda x: x[:, 0])(x_in)
x = Dense(units=num_classes, activation='softmax')(x)
classfier = Model(x_in, x)


def compile_classifier(model):
    model.compile(
        loss='sparse_categorical_crossentropy', optimizer=Adam(learning_rate),
        metrics=['sparse_categorical_accuracy'],
    )


predecessor_model = Model(predecessor.inputs, classfier(predecessor.output))
compile_classifier(predecessor_model)
predecessor_model.summary()
successor_model = Model(successor.inputs, classfier(successor.output))
compile_classifier(successor_model)
successor_model.summary()
theseus_model = bert_of_theseus(predecessor, successor, classfier)
compile_classifier(theseus_model)
theseus_model.summary()

if __name__ == '__main__':
    started = time.time()
    os.makedirs(output_dir, exist_ok=True)
    # train the predecessor
    predecessor_evaluator = Evaluator(
        os.path.join(output_dir, 'theseus_predecessor.weights.h5')
    )
    predecessor_model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[predecessor_evaluator]
    )
    # train theseus: the trained predecessor and the classifier stay fixed
    set_predecessor_trainable(False)
    compile_classifier(theseus_model)
    theseus_evaluator = Evaluator(os.path.join(output_dir, 'theseus_theseus.weights.h5'))
    theseus_model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=2 * epochs,
        callbacks=[theseus_evaluator]
    )
    theseus_model.load_weights(os.path.join(output_dir, 'theseus_theseus.weights.h5'))
    # fine-tune the successor alone, classifier included
    classfier.trainable = True
    compile_classifier(successor_model)
    successor_evaluator = Evaluator(
        os.path.join(output_dir, 'theseus_successor.weights.h5')
    )
    successor_model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[successor_evaluator]
    )
    # added so that tests can read them
    evaluators = {
        'predecessor': predecessor_evaluator,
        'theseus': theseus_evaluator,
        'successor': successor_evaluator,
    }
    if direct_baseline:  # the same small model fine-tuned without Theseus
        direct = build_transformer_model(
            config_path=config_path, checkpoint_path=checkpoint_path, model=model_name,
            return_keras_model=False, num_hidden_layers=successor_layers, prefix='Direct-',
        )
        direct_classifier = Dense(units=num_classes, activation='softmax')
        direct_model = Model(direct.inputs,
                             direct_classifier(Lambda(lambda x: x[:, 0])(direct.output)))
        compile_classifier(direct_model)
        direct_evaluator = Evaluator(os.path.join(output_dir, 'theseus_direct.weights.h5'))
        direct_model.fit(
            train_generator.forfit(),
            steps_per_epoch=len(train_generator),
            epochs=epochs,
            callbacks=[direct_evaluator]
        )
        evaluators['direct'] = direct_evaluator
    result = {
        'model': model_name, 'predecessor_layers': predecessor.num_hidden_layers,
        'successor_layers': successor_layers, 'epochs': epochs,
        'learning_rate': learning_rate, 'maxlen': maxlen,
        'train_examples': len(train_data), 'dev_examples': len(valid_data),
        'test_examples': len(test_data), 'train_seconds': round(time.time() - started, 1),
        'dev_acc': {k: float(e.best_val_acc) for k, e in evaluators.items()},
    }
    if test_generator is not None:  # best dev weights of each, scored and timed on test
        result['test'] = {
            'successor': score_and_time(
                successor_model, os.path.join(output_dir, 'theseus_successor.weights.h5')),
            'predecessor': score_and_time(
                predecessor_model, os.path.join(output_dir, 'theseus_predecessor.weights.h5')),
        }
        if direct_baseline:
            result['test']['direct'] = score_and_time(
                direct_model, os.path.join(output_dir, 'theseus_direct.weights.h5'))
    with open(os.path.join(output_dir, 'theseus_result.json'), 'w') as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
