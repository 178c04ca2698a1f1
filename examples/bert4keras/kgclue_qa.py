#! -*- coding: utf-8 -*-
# KgCLUE baseline
# UniLM seq2seq directly, then trie-constrained decoding with a home-made "look-ahead" strategy;
# the base model is RoFormer-Sim-FT, 2% better than RoFormer/BERT/RoBERTa directly;
# Article: https://kexue.fm/archives/8802
# Port of KgCLUE-bert4keras' baseline.py (github.com/bojone/KgCLUE-bert4keras).
# Environment: B4K_MODEL_DIR, B4K_DATA_DIR (the datasets directory: Knowledge.txt, train.json,
# dev.json, test_public.json; KG.json is cached there), B4K_EPOCHS, B4K_OUTPUT_DIR.

import os, json
import numpy as np
from bert4keras3.backend import keras, K
from bert4keras3.layers import Loss
from bert4keras3.models import build_transformer_model
from bert4keras3.tokenizers import Tokenizer
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, open
from bert4keras3.snippets import DataGenerator, AutoRegressiveDecoder
from bert4keras3.snippets import longest_common_subsequence as lcs
from keras.models import Model
from tqdm import tqdm
try:
    import pylcs
except ImportError:  # not installed: the same length from bert4keras3's lcs (slower)
    class pylcs:
        lcs = staticmethod(lambda a, b: lcs(a, b)[0])


def subject_split(s):
    """If there is a sense (disambiguation) part, split it off
    """
    m = ''
    if s[-1] == u'）':
        i = s.index(u'（')
        m = s[i + 1:-1]
        s = s[:i]
    return s, m


def load_data(filename):
    """Read a dataset
    """
    D = []
    with open(filename) as f:
        for l in f:
            l = json.loads(l)
            s, p, o = l['answer'].split(' ||| ')
            s, m = subject_split(s)
            D.append((l['question'], (s, p, m, ' '.join(o.split()))))
    return D


class Trie(object):
    """A custom trie object to hold the knowledge base
    """
    def __init__(self, value_key=-1):
        self.data = {}
        self.value_key = str(value_key)

    def __setitem__(self, key, value):
        """Put a (key, value) pair into the trie
        """
        data = self.data
        for k in key:
            k = str(k)
            if k not in data:
                data[k] = {}
            data = data[k]
        if self.value_key in data:
            if data[self.value_key] != value:
                data[self.value_key] += ('\t' + value)
        else:
            data[self.value_key] = value

    def __getitem__(self, key):
        """Get the value of key
        """
        data = self.data
        for k in key:
            k = str(k)
            data = data[k]
        return data[self.value_key]

    def next_ones(self, prefix):
        """Get the allowed set for the position after prefix
        """
        data = self.data
        for k in prefix:
            k = str(k)
            data = data[k]
        return [k for k in data if k != self.value_key]

    def keys(self, prefix=None, data=None):
        """Get all keys starting with prefix
        """
        data = data or self.data
        prefix = prefix or []
        for k in prefix:
            k = str(k)
            if k not in data:
                return []
            data = data[k]
        results = []
        for k in data:
            if k == self.value_key:
                results.append([])
            else:
                results.extend([[k] + j for j in self.keys(None, data[k])])
        return [prefix + i for i in results]

    def save(self, filename):
        with open(filename, 'w') as f:
            json.dump(self.data, f, ensure_ascii=False)

    def load(self, filename):
        with open(filename) as f:
            self.data = json.load(f)


here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/kgclue'))
model_dir = os.environ.get(
    'B4K_MODEL_DIR', '/root/kg/bert/chinese_roformer-sim-char-ft_L-12_H-768_A-12'
)
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
weights_path = os.path.join(output_dir, 'kgclue.weights.h5')

# basic parameters
maxlen = 128
batch_size = 32
epochs = int(os.environ.get('B4K_EPOCHS', 3))

# model paths
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')

# load the tokenizer
tokenizer = Tokenizer(dict_path, do_lower_case=True)

# convert the knowledge base
KG = Trie()
if os.path.exists(os.path.join(data_dir, 'KG.json')):
    KG.load(os.path.join(data_dir, 'KG.json'))
else:
    with open(os.path.join(data_dir, 'Knowledge.txt')) as f:
        for l in tqdm(f):
            s, p, o = l.split('\t')
            s, m = subject_split(s)
            ids = tokenizer.encode(s, p)[0][1:]
            ids += tokenizer.encode(m)[0][1:-1]
            KG[ids] = ' '.join(o.split())
    KG.save(os.path.join(data_dir, 'KG.json'))

# read the datasets
train_data = load_data(os.path.join(data_dir, 'train.json'))
valid_data = load_data(os.path.join(data_dir, 'dev.json'))
test_data = load_data(os.path.join(data_dir, 'test_public.json'))


class data_generator(DataGenerator):
    """Data generator
    One sample: [CLS] Q [SEP] S [SEP] P [SEP] M [SEP]
    """
    def __iter__(self, random=False):
        batch_token_ids, batch_segment_ids = [], []
        for is_end, (q, a) in self.sample(random):
            q_ids = tokenizer.encode(q, maxlen=maxlen // 2 + 1)[0]
            a_ids = tokenizer.encode(a[0], a[1])[0]
            a_ids += tokenizer.encode(a[2])[0][1:]
            token_ids = (q_ids + a_ids[1:])[:maxlen]
            segment_ids = [0] * len(q_ids)
            segment_ids += [1] * (len(token_ids) - len(q_ids))
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
    config_path, checkpoint_path, model='roformer', application='unilm'
)

output = CrossEntropy(2)(model.inputs + model.outputs)

model = Model(model.inputs, output)
model.compile(optimizer=Adam(5e-6))
model.summary()


class AutoQA(AutoRegressiveDecoder):
    """seq2seq decoder
    """
    @AutoRegressiveDecoder.wraps(default_rtype='probas')
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        all_token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        probas = self.last_token(model).predict([all_token_ids, segment_ids])
        new_probas = np.zeros_like(probas)
        for i, ids in enumerate(output_ids):
            next_ids = [int(j) for j in KG.next_ones(ids)]  # allowed set of the next position
            if len(next_ids) > 1 and self.end_id in ids:  # more than one allowed and S already decoded
                candidates = KG.keys(list(ids))  # possible results
                weights = np.ones_like(probas[i])  # default weight 1
                lcs0 = lcs(ids, token_ids[i])[0]  # tokens covered so far
                for c in candidates:
                    if len(c) > len(ids):
                        c = [int(j) for j in c]
                        w = lcs(c, token_ids[i])[0] - lcs0  # tokens that may still be covered
                        weights[c[len(ids)]] = max(w + 1, weights[c[len(ids)]])
                probas[i] = np.power(probas[i], 1. / weights)  # raise the weight as p^(1/n)
            if not next_ids:  # an empty allowed set means the end
                next_ids.append(self.end_id)
            new_probas[i, next_ids] += probas[i, next_ids]  # keep only the allowed probabilities
        new_probas /= new_probas.sum(axis=1, keepdims=True)  # renormalize
        return new_probas

    def generate(self, text, topk=1):
        token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
        output_ids = self.beam_search([token_ids, segment_ids],
                                      topk=topk,
                                      min_ends=3)  # beam search
        end_idxs = [i for i, j in enumerate(output_ids) if j == self.end_id]
        subject_ids = output_ids[:end_idxs[0]]
        predicate_ids = output_ids[end_idxs[0]:end_idxs[1]]
        meaning_ids = output_ids[end_idxs[1]:]
        return (
            tokenizer.decode(subject_ids), tokenizer.decode(predicate_ids),
            tokenizer.decode(meaning_ids), KG[output_ids[:-1]]
        )


autoqa = AutoQA(start_id=None, end_id=tokenizer._token_end_id, maxlen=maxlen)


class Evaluator(keras.callbacks.Callback):
    """Evaluate and save
    """
    def __init__(self):
        self.best_score = 0

    def on_epoch_end(self, epoch, logs=None):
        # keep the best
        em, f1, score = self.evaluate(valid_data, topk=3)
        if score >= self.best_score:
            self.best_score = score
            model.save_weights(weights_path)
        print(
            u'[VALID] em: %.5f, f1: %.5f, score: %.5f, best_score: %.5f\n' %
            (em, f1, score, self.best_score)
        )

    def f1sim(self, text_a, text_b):
        """f1 similarity of two texts
        Note: the length of the longest common subsequence of the two texts, times 2,
        divided by the sum of their lengths. pylcs is recommended, it is faster.
        """
        if not text_a and not text_b:
            return 0.
        else:
            lcs = pylcs.lcs(text_a, text_b)
            return 2. * lcs / (len(text_a) + len(text_b))

    def evaluate(self, data, topk=1):
        """Evaluation
        Note: one (S, P) may have several O, but the labelled data keeps only
        one; to align with the labels (and score higher) only the first is kept here.
        """
        em, f1, total = 0., 0., 0.
        for d in tqdm(data, ncols=0):
            a = autoqa.generate(d[0], topk=topk)
            o = a[3].split('\t')[0]  # if there are several, keep only the first
            em += float(o == d[1][3])
            f1 += self.f1sim(o, d[1][3])
            total += 1
        em /= total
        f1 /= total
        return em, f1, (em + f1) / 2


def test_predict(in_file, out_file, topk=1):
    """Write the test predictions to a file
    The file can be submitted to https://www.cluebenchmarks.com for evaluation.
    """
    fw = open(out_file, 'w')

    with open(in_file) as fr:
        for l in tqdm(fr):
            l = json.loads(l)
            s, p, m, o = autoqa.generate(l['question'], topk=topk)
            if m:
                s += u'（%s）' % m
            l['answer'] = '%s ||| %s ||| %s' % (s, p, o.split('\t')[0])
            l = json.dumps(l, ensure_ascii=False)
            fw.write(l + '\n')

    fw.close()


if __name__ == '__main__':

    evaluator = Evaluator()
    train_generator = data_generator(train_data, batch_size)

    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator]
    )

    model.load_weights(weights_path)
    em, f1, score = evaluator.evaluate(test_data, topk=1)
    print(u'[TEST] topk=1, em: %.5f, f1: %.5f, score: %.5f' % (em, f1, score))
    em, f1, score = evaluator.evaluate(test_data, topk=3)
    print(u'[TEST] topk=3, em: %.5f, f1: %.5f, score: %.5f' % (em, f1, score))
    em, f1, score = evaluator.evaluate(test_data, topk=5)
    print(u'[TEST] topk=5, em: %.5f, f1: %.5f, score: %.5f' % (em, f1, score))

else:

    model.load_weights(weights_path)
    # test_predict('../datasets/test.json', 'kgclue_predict.json', topk=3)
