#! -*- coding: utf-8 -*-
# Conditional language model with BERT
# Generates random text per class; in this demo the classes are sentiment polarity (pos/neg)
# See: https://kexue.fm/archives/7124
# Port of bert4keras' examples/task_conditional_language_model.py.
# Environment: B4K_MODEL_DIR, B4K_DATA_DIR (sentiment.{train,valid,test}.data), B4K_EPOCHS,
# B4K_OUTPUT_DIR, B4K_GEN_MAXLEN (longest sampled text; default maxlen = 128, as the original).

from __future__ import print_function
import os
import re
import numpy as np
from bert4keras3.backend import keras, K
from bert4keras3.layers import Loss
from bert4keras3.models import build_transformer_model
from bert4keras3.tokenizers import Tokenizer, load_vocab
from bert4keras3.optimizers import Adam
from bert4keras3.snippets import sequence_padding, open
from bert4keras3.snippets import text_segmentate
from bert4keras3.snippets import DataGenerator, AutoRegressiveDecoder
from bert4keras3.snippets import uniout  # print Chinese
from keras.layers import Input, Embedding, Reshape
from keras.models import Model

here = os.path.dirname(os.path.abspath(__file__))
data_dir = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../data/bert4keras/sentiment'))
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_L-12_H-768_A-12')
output_dir = os.environ.get('B4K_OUTPUT_DIR', '.')
weights_path = os.path.join(output_dir, 'conditional_lm.weights.h5')

# model configuration
maxlen = 128
batch_size = 32
num_classes = 2
epochs = int(os.environ.get('B4K_EPOCHS', 20))

# BERT configuration
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')

# load and simplify the vocabulary, build the tokenizer
token_dict, keep_tokens = load_vocab(
    dict_path=dict_path,
    simplified=True,
    startswith=['[PAD]', '[UNK]', '[CLS]', '[SEP]'],
)
tokenizer = Tokenizer(token_dict, do_lower_case=True)


def load_data(filenames):
    """Load data, split into sentences of at most maxlen where possible
    """
    D = []
    seps, strips = u'\n。！？!?；;，, ', u'；;，, '
    for filename in filenames:
        with open(filename, encoding='utf-8') as f:
            for l in f:
                text, label = l.strip().split('\t')
                for t in text_segmentate(text, maxlen - 2, seps, strips):
                    D.append((t, int(label)))
    return D


# load the datasets
data = load_data([
    os.path.join(data_dir, 'sentiment.train.data'),
    os.path.join(data_dir, 'sentiment.valid.data'),
    os.path.join(data_dir, 'sentiment.test.data'),
])


class data_generator(DataGenerator):
    """Data generator
    """
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
    """Cross-entropy loss, with the padding masked out
    """
    def compute_loss(self, inputs, mask=None):
        y_true, y_pred = inputs
        if mask[1] is None:
            y_mask = 1.0
        else:
            y_mask = K.cast(mask[1], K.floatx())[:, 1:]
        y_true = y_true[:, 1:]  # target token_ids
        y_pred = y_pred[:, :-1]  # predictions, shifted by one
        loss = K.sparse_categorical_crossentropy(y_true, y_pred)
        loss = K.sum(loss * y_mask) / K.sum(y_mask)
        return loss


c_in = Input(shape=(1,))
c = Embedding(num_classes, 128)(c_in)
c = Reshape((128,))(c)

# BERT model
model = build_transformer_model(
    config_path,
    checkpoint_path,
    application='lm',
    keep_tokens=keep_tokens,  # keep only the tokens in keep_tokens, simplifying the vocabulary
    layer_norm_cond=c,
    additional_input_layers=c_in,
)

output = CrossEntropy(1)([model.inputs[0], model.outputs[0]])

model = Model(model.inputs, output)
model.compile(optimizer=Adam(1e-5))
model.summary()


class RandomSentiment(AutoRegressiveDecoder):
    """Randomly generate sentences for a sentiment label (0: negative, 1: positive)
    """
    @AutoRegressiveDecoder.wraps(default_rtype='probas')
    def predict(self, inputs, output_ids, states):
        token_ids = output_ids
        segment_ids = np.zeros_like(token_ids)
        return self.last_token(model).predict([
            token_ids, segment_ids, inputs[0]
        ])

    def generate(self, label, n=1, topp=0.95):
        results = self.random_sample([[label]], n, topp=topp)  # random sampling
        return [tokenizer.decode(ids) for ids in results]


random_sentiment = RandomSentiment(
    start_id=tokenizer._token_start_id,
    end_id=tokenizer._token_end_id,
    maxlen=int(os.environ.get('B4K_GEN_MAXLEN', maxlen))
)


def just_show():
    print(u'正面采样:')
    print(random_sentiment.generate(1, 5, 5), '\n')
    print(u'负面采样:')
    print(random_sentiment.generate(0, 5, 5), '\n')


class Evaluator(keras.callbacks.Callback):
    """Evaluate and save
    """
    def __init__(self):
        self.lowest = 1e10

    def on_epoch_end(self, epoch, logs=None):
        # keep the best
        if logs['loss'] <= self.lowest:
            self.lowest = logs['loss']
            model.save_weights(weights_path)
        # show samples
        just_show()


if __name__ == '__main__':

    evaluator = Evaluator()
    train_generator = data_generator(data, batch_size)

    model.fit(
        train_generator.forfit(),
        steps_per_epoch=len(train_generator),
        epochs=epochs,
        callbacks=[evaluator]
    )

else:

    model.load_weights(weights_path)
# Sample output of the original (positive / negative samples):
"""
正面采样:
[
    u'外观时尚、漂亮、性价比高。',
    u'外观漂亮，配置均衡，比较满意，性价比高，外观漂亮，性能较高。',
    u'我是在大学的时候看到这本书的，所以一直在买。书中的作者是林静蕾，她用自己的口吻写出了一个孩子成长中的心路历程，让我看到了她们成长中的不同之处，以及她们成长过程中的不同境界。让我很欣赏！',
    u'我想这是一本能够告诉读者什么是坏的，而不是教你怎样说话，告诉我什么是错。这里我推荐了《我要讲故事》，这本书是我很喜欢的一本书，我认为它的理由很多，但是，我相信我。如果你从中得到一些改进，或者你已经有了一个明智的决定。',
    u'我们一家五口住的是标间，大床房，大床的床很舒服；而我们在携程网上订了两套大床房，这个酒店的价格还是比较合理的；但是房间的隔音效果不太理想，有点响的声音；酒店门口的地铁在施工中，不方便；但是酒店的门口的出租车不知道是哪个车的，打车不是很方便；酒店外面的停'
]

负面采样:
[
    u'不知道是不是因为电池不太好，不是我不喜欢。',
    u'看了评论才买的. 结果发现不是那么便宜, 价格也不便宜.',
    u'1、外壳不容易沾手印，不容易洗洗2、屏幕有点旧， 不能下载铃声',
    u'我是7月6日订购了《杜拉拉升职记》并已通过银行付款，为什么订单下了两周多至今还未到货？是收货时间太快了，可能就这么过去了吧？',
    u'这本书我是在网上先看了一遍，后来我再看了一遍。感觉作者的文笔实在太烂了，特别是在写他的博客时特别别扭，写得很不专业，特别是他写股票时那个情绪调节的小男孩，简直就是自作聪明的样子，简直就是自作聪明的一种表现！'
]
"""
