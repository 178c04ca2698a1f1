#! -*- coding: utf-8 -*-
# Fine-tune multilingual T5 (mT5.1.1) for seq2seq: generate a paper's title from its abstract.
# Port of bert4keras' examples/task_seq2seq_autotitle_csl_mt5.py (introduction:
# https://kexue.fm/archives/7867, details: https://github.com/bojone/t5_in_bert4keras).
# Data: CSL from https://github.com/CLUEbenchmark/CLGE, one "title \t content" per line in
# train.tsv / val.tsv / test.tsv (val.tsv is also the test set when there is no test.tsv).
# Metrics: bleu, rouge-1, rouge-2, rouge-l (pip install rouge nltk).
# Environment: B4K_MODEL_DIR (holds mt5_config.json: a bert4keras- or Hugging Face-style
# T5 config; model.ckpt: Google's (Mesh TensorFlow) checkpoint prefix; sentencepiece.model;
# keep_tokens.json: the ids of the kept vocabulary rows), B4K_DATA_DIR (default: the bundled
# CSL sample), B4K_EPOCHS, B4K_OUTPUT_DIR (autotitle_mt5.weights.h5 is saved there),
# B4K_TITLE_MAXLEN (longest title, in tokens).

from __future__ import print_function
import os
import json
import numpy as np
from tqdm import tqdm
from bert4keras3.backend import keras, K
from bert4keras3.layers import Loss
from bert4keras3.models import build_transformer_model
from bert4keras3.tokenizers import SpTokenizer
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, open
from bert4keras3.snippets import DataGenerator, AutoRegressiveDecoder
from rouge import Rouge  # pip install rouge
from nltk.translate.bleu_score import sentence_bleu, SmoothingFunction

Model = keras.models.Model

# basic parameters
here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/csl'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/mt5/mt5_base')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
max_c_len = 256
max_t_len = int(os.environ.get('B4K_TITLE_MAXLEN', 32))
batch_size = 16
epochs = int(os.environ.get('B4K_EPOCHS', 40))

# model paths
config_path = os.path.join(model_dir, 'mt5_config.json')
checkpoint_path = os.path.join(model_dir, 'model.ckpt')
spm_path = os.path.join(model_dir, 'sentencepiece.model')
keep_tokens_path = os.path.join(model_dir, 'keep_tokens.json')
weights_path = os.path.join(output_dir, 'autotitle_mt5.weights.h5')


def load_data(filename):
    """Load the data
    one sample: (title, content)
    """
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            title, content = l.strip().split('\t')
            D.append((title, content))
    return D


# load the data sets
train_data = load_data(os.path.join(data_dir, 'train.tsv'))
valid_data = load_data(os.path.join(data_dir, 'val.tsv'))
test_file = os.path.join(data_dir, 'test.tsv')
if not os.path.exists(test_file):
    test_file = os.path.join(data_dir, 'val.tsv')
test_data = load_data(test_file)

# load the tokenizer
tokenizer = SpTokenizer(spm_path, token_start=None, token_end='</s>')
keep_tokens = json.load(open(keep_tokens_path))


class data_generator(DataGenerator):
    """Data generator
    """
    def __iter__(self, random=False):
        batch_c_token_ids, batch_t_token_ids = [], []
        for is_end, (title, content) in self.sample(random):
            c_token_ids, _ = tokenizer.encode(content, maxlen=max_c_len)
            t_token_ids, _ = tokenizer.encode(title, maxlen=max_t_len)
            batch_c_token_ids.append(c_token_ids)
            batch_t_token_ids.append([0] + t_token_ids)
            if len(batch_c_token_ids) == self.batch_size or is_end:
                batch_c_token_ids = sequence_padding(batch_c_token_ids)
                batch_t_token_ids = sequence_padding(batch_t_token_ids)
                yield [batch_c_token_ids, batch_t_token_ids], None
                batch_c_token_ids, batch_t_token_ids = [], []


class CrossEntropy(Loss):
    """Cross-entropy as the loss, with the input part masked out
    """
    def compute_loss(self, inputs, mask=None):
        y_true, y_pred = inputs
        y_true = y_true[:, 1:]  # target token_ids
        y_mask = K.cast(mask[1], K.floatx())[:, 1:]  # the decoder's own mask
        y_pred = y_pred[:, :-1]  # predictions, shifted by one
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        loss = K.sum(loss * y_mask) / K.sum(y_mask)
        return loss


t5 = build_transformer_model(
    config_path=config_path,
    checkpoint_path=checkpoint_path,
    keep_tokens=keep_tokens,
    model='mt5.1.1',
    return_keras_model=False,
    name='T5',
)

encoder = t5.encoder
decoder = t5.decoder
model = t5.model
model.summary()

output = CrossEntropy(1)([model.inputs[1], model.outputs[0]])

model = Model(model.inputs, output)
model.compile(optimizer=Adam(2e-4))


class AutoTitle(AutoRegressiveDecoder):
    """seq2seq decoder
    """
    @AutoRegressiveDecoder.wraps(default_rtype='probas')
    def predict(self, inputs, output_ids, states):
        c_encoded = inputs[0]
        return self.last_token(decoder).predict([c_encoded, output_ids])

    def generate(self, text, topk=1):
        c_token_ids, _ = tokenizer.encode(text, maxlen=max_c_len)
        c_encoded = encoder.predict(np.array([c_token_ids]))[0]
        output_ids = self.beam_search([c_encoded], topk=topk)  # beam search
        return tokenizer.decode([int(i) for i in output_ids])


# Note: T5's <bos> id is 0, so <bos> and <pad> are both 0
autotitle = AutoTitle(
    start_id=0, end_id=tokenizer._token_end_id, maxlen=max_t_len
)


class Evaluator(keras.callbacks.Callback):
    """Evaluate and save
    """
    def __init__(self):
        self.rouge = Rouge()
        self.smooth = SmoothingFunction().method1
        self.best_bleu = 0.

    def on_epoch_end(self, epoch, logs=None):
        metrics = self.evaluate(valid_data)  # evaluate the model
        if metrics['bleu'] > self.best_bleu:
            self.best_bleu = metrics['bleu']
            model.save_weights(weights_path)  # save the model
        metrics['best_bleu'] = self.best_bleu
        print('valid_data:', metrics)

    def evaluate(self, data, topk=1):
        total = 0
        rouge_1, rouge_2, rouge_l, bleu = 0, 0, 0, 0
        for title, content in tqdm(data):
            total += 1
            title = ' '.join(title).lower()
            pred_title = ' '.join(autotitle.generate(content,
                                                     topk=topk)).lower()
            if pred_title.strip():
                scores = self.rouge.get_scores(hyps=pred_title, refs=title)
                rouge_1 += scores[0]['rouge-1']['f']
                rouge_2 += scores[0]['rouge-2']['f']
                rouge_l += scores[0]['rouge-l']['f']
                bleu += sentence_bleu(
                    references=[title.split(' ')],
                    hypothesis=pred_title.split(' '),
                    smoothing_function=self.smooth
                )
        rouge_1 /= total
        rouge_2 /= total
        rouge_l /= total
        bleu /= total
        return {
            'rouge-1': rouge_1,
            'rouge-2': rouge_2,
            'rouge-l': rouge_l,
            'bleu': bleu,
        }


if __name__ == '__main__':

    evaluator = Evaluator()
    train_generator = data_generator(train_data, batch_size)

    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator]
    )

else:

    model.load_weights(weights_path)
