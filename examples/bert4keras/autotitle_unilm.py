#! -*- coding: utf-8 -*-
# Seq2Seq with BERT, UNILM scheme
# Article: https://kexue.fm/archives/6933
# Dataset: the CSL dataset of https://github.com/CLUEbenchmark/CLGE
# With the metrics bleu, rouge-1, rouge-2, rouge-l
# Port of bert4keras' examples/task_seq2seq_autotitle_csl.py.
# Environment: B4K_MODEL_DIR, B4K_DATA_DIR (train.tsv, val.tsv, test.tsv), B4K_EPOCHS,
# B4K_OUTPUT_DIR, B4K_TITLE_MAXLEN (longest generated title; default 32, as the original).

from __future__ import print_function
import os
import numpy as np
from tqdm import tqdm
from bert4keras3.backend import keras, K
from bert4keras3.layers import Loss
from bert4keras3.models import build_transformer_model
from bert4keras3.tokenizers import Tokenizer, load_vocab
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, open
from bert4keras3.snippets import DataGenerator, AutoRegressiveDecoder
from keras.models import Model
from rouge import Rouge  # pip install rouge
from nltk.translate.bleu_score import sentence_bleu, SmoothingFunction

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/csl'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_wwm_L-12_H-768_A-12')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
weights_path = os.path.join(output_dir, 'autotitle.weights.h5')

# basic parameters
maxlen = 256
batch_size = 16
epochs = int(os.environ.get('B4K_EPOCHS', 20))

# BERT configuration
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')


def load_data(filename):
    """Load data
    One sample: (title, content)
    """
    D = []
    with open(filename, encoding='utf-8') as f:
        for l in f:
            title, content = l.strip().split('\t')
            D.append((title, content))
    return D


# load the datasets
train_data = load_data(os.path.join(data_dir, 'train.tsv'))
valid_data = load_data(os.path.join(data_dir, 'val.tsv'))
test_data = load_data(os.path.join(data_dir, 'test.tsv'))

# load and simplify the vocabulary, build the tokenizer
token_dict, keep_tokens = load_vocab(
    dict_path=dict_path,
    simplified=True,
    startswith=['[PAD]', '[UNK]', '[CLS]', '[SEP]'],
)
tokenizer = Tokenizer(token_dict, do_lower_case=True)


class data_generator(DataGenerator):
    """Data generator
    """
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids = [], []
        for is_end, (title, content) in self.sample(random):
            token_ids, segment_ids = tokenizer.encode(
                content, title, maxlen=maxlen
            )
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            if len(batch_token_ids) == self.batch_size or is_end:
                batch_token_ids = sequence_padding(batch_token_ids)
                batch_segment_ids = sequence_padding(batch_segment_ids)
                yield [batch_token_ids, batch_segment_ids], None
                batch_token_ids, batch_segment_ids = [], []


class CrossEntropy(Loss):
    """Cross-entropy loss, with the input part masked out
    """
    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        y_true = y_true[:, 1:]  # target token_ids
        y_mask = y_mask[:, 1:]  # segment_ids mark exactly the part to predict
        y_pred = y_pred[:, :-1]  # predictions, shifted by one
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        loss = K.sum(loss * y_mask) / K.sum(y_mask)
        return loss


model = build_transformer_model(
    config_path,
    checkpoint_path,
    application='unilm',
    keep_tokens=keep_tokens,  # keep only the tokens in keep_tokens, simplifying the vocabulary
)

output = CrossEntropy(2)(model.inputs + model.outputs)

model = Model(model.inputs, output)
model.compile(optimizer=Adam(1e-5))
model.summary()


class AutoTitle(AutoRegressiveDecoder):
    """seq2seq decoder
    """
    @AutoRegressiveDecoder.wraps(default_rtype='probas')
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        return self.last_token(model).predict([token_ids, segment_ids])

    def generate(self, text, topk=1):
        max_c_len = maxlen - self.maxlen
        token_ids, segment_ids = tokenizer.encode(text, maxlen=max_c_len)
        output_ids = self.beam_search([token_ids, segment_ids],
                                      topk=topk)  # beam search
        return tokenizer.decode(output_ids)


autotitle = AutoTitle(
    start_id=None,
    end_id=tokenizer._token_end_id,
    maxlen=int(os.environ.get('B4K_TITLE_MAXLEN', 32))
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
            pred_title = ' '.join(autotitle.generate(content, topk)).lower()
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
