#! -*- coding: utf-8 -*-
# Conditional language model: a causal BERT LM whose layer normalisations are conditioned
# on a label embedding (conditional layer norm), so it writes positive or negative reviews
# on demand; sampled with AutoRegressiveDecoder.random_sample.
# Data: text \t label lines. Environment: B4K_MODEL_DIR, B4K_DATA_DIR, B4K_EPOCHS,
# B4K_OUTPUT_DIR, B4K_GEN_MAXLEN (longest sample, in tokens).
import os

import numpy as np
from bert4keras3.backend import keras, K
from bert4keras3.layers import Loss
from bert4keras3.models import build_transformer_model
from bert4keras3.tokenizers import Tokenizer, load_vocab
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, open, text_segmentate
from bert4keras3.snippets import DataGenerator, AutoRegressiveDecoder

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/sentiment'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_L-12_H-768_A-12')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
epochs = int(os.environ.get('B4K_EPOCHS', 20))
gen_maxlen = int(os.environ.get('B4K_GEN_MAXLEN', 64))
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')
maxlen = 128
batch_size = 16
num_classes = 2

token_dict, keep_tokens = load_vocab(
    dict_path=dict_path,
    simplified=True,
    startswith=['[PAD]', '[UNK]', '[CLS]', '[SEP]'],
)
tokenizer = Tokenizer(token_dict, do_lower_case=True)


def load_data(filenames):
    """(sentence, label) pairs, long texts cut at punctuation to fit maxlen."""
    D = []
    seps, strips = u'\n。！？!?；;，, ', u'；;，, '
    for filename in filenames:
        with open(filename, encoding='utf-8') as f:
            for l in f:
                text, label = l.strip().split('\t')
                for t in text_segmentate(text, maxlen - 2, seps, strips):
                    D.append((t, int(label)))
    return D


data = load_data([os.path.join(data_dir, 'sentiment.%s.data' % f)
                  for f in ['train', 'valid', 'test']])


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
                yield [batch_token_ids, batch_segment_ids, batch_labels], None
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []


class CrossEntropy(Loss):
    """Next-token cross-entropy over the unpadded tokens."""
    def compute_loss(self, inputs, mask=None):
        y_true, y_pred = inputs
        if mask[1] is None:
            y_mask = 1.0
        else:
            y_mask = K.cast(mask[1], K.floatx())[:, 1:]
        y_true = y_true[:, 1:]
        y_pred = y_pred[:, :-1]
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        return K.sum(loss * y_mask) / K.sum(y_mask)


c_in = keras.layers.Input(shape=(1,))
c = keras.layers.Embedding(num_classes, 128)(c_in)
c = keras.layers.Reshape((128,))(c)

model = build_transformer_model(
    config_path,
    checkpoint_path,
    application='lm',
    keep_tokens=keep_tokens,
    layer_norm_cond=c,
    additional_input_layers=c_in,
)
output = CrossEntropy(1)([model.inputs[0], model.outputs[0]])
model = keras.models.Model(model.inputs, output)
model.summary()
model.compile(optimizer=Adam(1e-5))


class RandomSentiment(AutoRegressiveDecoder):
    """Samples sentences for a label (0 negative, 1 positive)."""
    @AutoRegressiveDecoder.wraps(default_rtype='probas')
    def predict(self, inputs, output_ids, states):
        token_ids = output_ids
        segment_ids = np.zeros_like(token_ids)
        return self.last_token(model).predict([token_ids, segment_ids, inputs[0]])

    def generate(self, label, n=1, topp=0.95):
        results = self.random_sample([[label]], n, topp=topp)
        return [tokenizer.decode(ids) for ids in results]


random_sentiment = RandomSentiment(
    start_id=tokenizer._token_start_id,
    end_id=tokenizer._token_end_id,
    maxlen=gen_maxlen,
)


class Evaluator(keras.callbacks.Callback):
    def __init__(self):
        self.lowest = 1e10
        self.samples = {}
        self.weights_path = os.path.join(output_dir, 'conditional_lm.weights.h5')

    def on_epoch_end(self, epoch, logs=None):
        if logs['loss'] <= self.lowest:
            self.lowest = logs['loss']
            model.save_weights(self.weights_path)
        for label, name in [(1, 'positive'), (0, 'negative')]:
            self.samples[label] = random_sentiment.generate(label, 3)
            print(name, self.samples[label])


if __name__ == '__main__':
    evaluator = Evaluator()
    train_generator = data_generator(data, batch_size)
    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator],
    )
