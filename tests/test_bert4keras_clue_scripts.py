"""examples/bert4keras/clue/: bojone's CLUE-bert4keras scripts (their shared snippets.py,
cluener.py, cmrc2018.py), ported with import changes only, run on the bundled CLUE samples
with a tiny Google-format model written here."""
import glob
import json
import os
import runpy
import sys

import numpy as np
import pytest

import keras

from bert4keras3.models import build_transformer_model

from conftest import write_tiny_model_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "examples", "bert4keras", "clue")
DATA = os.path.join(ROOT, "examples", "data", "clue")


def write_model(path, silent_output=False):
    """Tiny BERT with a Google checkpoint; ``silent_output`` zeroes the last LayerNorm, so the
    encoder outputs 0 and an untrained GlobalPointer on it predicts no span at all (the
    original cluener.py cannot map a span on [CLS] / [SEP] back to the text)."""
    texts = [open(p, encoding="utf-8").read()
             for p in glob.glob(os.path.join(DATA, "**", "*.json"), recursive=True)]
    write_tiny_model_dir(path, texts, checkpoint=None)
    obj = build_transformer_model(os.path.join(path, "bert_config.json"), with_mlm=True,
                                  return_keras_model=False)
    if silent_output:
        norm = obj.model.get_layer("Transformer-1-FeedForward-Norm")
        norm.set_weights([np.zeros_like(w) for w in norm.get_weights()])
    obj.save_weights_as_checkpoint(os.path.join(path, "bert_model.ckpt"))
    keras.backend.clear_session()
    return path


def run_script(name, monkeypatch, tmp_path, model_dir, **env):
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    for key, value in dict(B4K_MODEL_DIR=model_dir, B4K_DATA_DIR=DATA, **env).items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(SCRIPTS)
    monkeypatch.delitem(sys.modules, "snippets", raising=False)  # reads the environment
    return runpy.run_path(os.path.join(SCRIPTS, name + ".py"), run_name="__main__")


def test_cluener(monkeypatch, tmp_path):
    model_dir = write_model(str(tmp_path / "model"), silent_output=True)
    g = run_script("cluener", monkeypatch, tmp_path, model_dir, B4K_EPOCHS=1)
    assert g["categories"] == sorted(g["categories"]) and g["num_classes"] == 10
    assert g["evaluator"].best_val_f1 < 1e-9  # a silent encoder finds no entity
    assert (tmp_path / "weights" / "cluener.weights").is_file()
    with open(DATA + "/cluener/test.json", encoding="utf-8") as f:
        inputs = [json.loads(line) for line in f]
    with open(tmp_path / "results" / "cluener_predict.json", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert [r["id"] for r in rows] == [r["id"] for r in inputs]
    assert all(r["label"] == {} and r["text"] == i["text"] for r, i in zip(rows, inputs))


def test_cmrc2018(monkeypatch, tmp_path):
    model_dir = write_model(str(tmp_path / "model"))
    # AdaFactor scales its step by the parameters' RMS (0.02 here): a large rate lets the tiny
    # model learn within three epochs; the script only saves (and then loads) an improvement
    g = run_script("cmrc2018", monkeypatch, tmp_path, model_dir, B4K_EPOCHS=3,
                   B4K_LEARNING_RATE=1)
    assert 0.0 < g["evaluator"].best_val_acc <= 1.0
    assert (tmp_path / "weights" / "cmrc2018.weights").is_file()
    with open(DATA + "/cmrc2018/test.json", encoding="utf-8") as f:
        test = json.load(f)["data"]
    contexts = {qa["id"]: p["context"] for d in test for p in d["paragraphs"] for qa in p["qas"]}
    with open(tmp_path / "results" / "cmrc2018_predict.json", encoding="utf-8") as f:
        predictions = json.load(f)
    assert sorted(predictions) == sorted(contexts)
    assert all(isinstance(a, str) and a in contexts[k] for k, a in predictions.items())
