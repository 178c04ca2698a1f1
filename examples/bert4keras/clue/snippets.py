#! -*- coding: utf-8 -*-
# CLUE evaluation: shared configuration of bojone's CLUE-bert4keras (src/snippets.py), ported
# with import changes only; paths come from the environment: B4K_DATA_DIR (a folder with one
# sub-folder per task, as CLUE distributes them), B4K_MODEL_DIR (bert_config.json,
# bert_model.ckpt, vocab.txt).

import os
from bert4keras3.backend import keras, K
from bert4keras3.tokenizers import Tokenizer
from bert4keras3.models import build_transformer_model
from bert4keras3.optimizers import AdaFactor
from bert4keras3.optimizers import extend_with_gradient_accumulation

here = os.path.dirname(os.path.abspath(__file__))

# shared settings
data_path = os.environ.get('B4K_DATA_DIR', os.path.join(here, '../../data/clue')) + '/'
learning_rate = float(os.environ.get('B4K_LEARNING_RATE', 5e-4))
pooling = 'first'

# weights folder
if not os.path.exists('weights'):
    os.mkdir('weights')

# results folder
if not os.path.exists('results'):
    os.mkdir('results')

# model paths
model_dir = os.environ.get('B4K_MODEL_DIR', '/root/kg/bert/chinese_L-12_H-768_A-12')
config_path = os.path.join(model_dir, 'bert_config.json')
checkpoint_path = os.path.join(model_dir, 'bert_model.ckpt')
dict_path = os.path.join(model_dir, 'vocab.txt')

# tokenizer
tokenizer = Tokenizer(dict_path, do_lower_case=True)

# pretrained model
base = build_transformer_model(
    config_path, checkpoint_path, application='unilm', return_keras_model=False
)

# model settings
last_layer = 'Transformer-%s-FeedForward-Norm' % (base.num_hidden_layers - 1)

if pooling == 'first':
    pooling_layer = keras.layers.Lambda(lambda x: x[:, 0])
elif pooling == 'avg':
    pooling_layer = keras.layers.GlobalAveragePooling1D()
elif pooling == 'max':
    pooling_layer = keras.layers.GlobalMaxPooling1D()

# optimizers
AdaFactorG = extend_with_gradient_accumulation(AdaFactor, name='AdaFactorG')

optimizer = AdaFactor(
    learning_rate=learning_rate, beta1=0.9, min_dim_size_to_factor=10**6
)

optimizer2 = AdaFactorG(
    learning_rate=learning_rate,
    beta1=0.9,
    min_dim_size_to_factor=10**6,
    grad_accum_steps=2
)

optimizer4 = AdaFactorG(
    learning_rate=learning_rate,
    beta1=0.9,
    min_dim_size_to_factor=10**6,
    grad_accum_steps=4
)
