"""ELECTRA (https://arxiv.org/abs/2003.10555): BERT's layout, discriminator and generator heads.

Layout (layer names): BERT's embeddings (width ``embedding_size``), ``Embedding-Mapping``
(``embeddings_project``) when ``embedding_size != hidden_size``, BERT's blocks
``Transformer-{i}-...``; heads:

* ``with_discriminator`` (bert4keras): ``Discriminator-Dense`` (hidden, ``hidden_act``) and
  ``Discriminator-Prediction`` (1 unit; ``True`` = sigmoid probability that a token was
  replaced, or an activation name, e.g. ``"linear"`` for logits); output ``[batch, seq, 1]``;
* ``with_mlm``: the generator's head (``MLM-Dense`` to ``embedding_size`` + ``hidden_act``,
  ``MLM-Norm``, the tied token embedding, ``MLM-Bias``), as ``ElectraForMaskedLM``.

With both heads the output is ``[discriminator, mlm]``. There is no pooler (``with_pool`` /
``with_nsp`` raise), as in the released models.

Checkpoints:

* Hugging Face ``ElectraModel`` / ``ElectraForPreTraining`` / ``ElectraForMaskedLM``
  (``electra.`` prefix; ``discriminator_predictions.dense`` / ``.dense_prediction``;
  ``generator_predictions.dense`` / ``.LayerNorm``, ``generator_lm_head.bias``);
* Google's pre-training checkpoints hold both networks: the discriminator under
  ``electra/``, the generator under ``generator/``, the embedding tables (word, position,
  segment, their LayerNorm) shared under ``electra/embeddings/``; heads
  ``discriminator_predictions/dense`` / ``dense_1`` and ``generator_predictions/dense``,
  ``/LayerNorm``, ``/output_bias``. ``checkpoint_scope`` picks the network: ``"electra"``
  (the discriminator) or ``"generator"``; by default the generator when ``with_mlm`` is
  set without ``with_discriminator`` (its MLM head is the generator's), else the
  discriminator. Build the generator with its own config (its ``hidden_size`` etc.).

Example::

    disc = build_transformer_model("electra_config.json", "model.ckpt",
                                   model="electra", with_discriminator=True)
"""
import keras

from bert4keras3.backend import get_activation
from bert4keras3.models.base import register_model
from bert4keras3.models.bert import BERT, _bert_tables

__all__ = ["ELECTRA"]

#: the Google names of the embedding tables (shared by both networks); ``{e}`` is their scope
_EMBEDDINGS = ("Embedding-Token/", "Embedding-Segment/", "Embedding-Position/",
               "Embedding-Norm/")


def _electra_tables():
    """Google and Hugging Face tables of ELECTRA (``{e}``: the embeddings' Google scope)."""
    g, h = _bert_tables()
    drop = ("Pooler-Dense/", "NSP-Proba/", "MLM-")
    g = {k: v for k, v in g.items() if not k.startswith(drop)}
    h = {k: v for k, v in h.items() if not k.startswith(drop)}
    for key, value in g.items():
        if key.startswith(_EMBEDDINGS):
            g[key] = value.replace("{p}", "{e}")
    g["Embedding-Mapping/kernel"] = "{p}embeddings_project/kernel"
    g["Embedding-Mapping/bias"] = "{p}embeddings_project/bias"
    heads = [
        ("Discriminator-Dense", "discriminator_predictions/dense",
         "discriminator_predictions.dense"),
        ("Discriminator-Prediction", "discriminator_predictions/dense_1",
         "discriminator_predictions.dense_prediction"),
        ("MLM-Dense", "generator_predictions/dense", "generator_predictions.dense"),
    ]
    for key, gn, hn in heads:
        g[key + "/kernel"], h[key + "/kernel"] = gn + "/kernel", (hn + ".weight", "T")
        g[key + "/bias"], h[key + "/bias"] = gn + "/bias", hn + ".bias"
    g["MLM-Norm/gamma"] = "generator_predictions/LayerNorm/gamma"
    g["MLM-Norm/beta"] = "generator_predictions/LayerNorm/beta"
    h["MLM-Norm/gamma"] = "generator_predictions.LayerNorm.weight"
    h["MLM-Norm/beta"] = "generator_predictions.LayerNorm.bias"
    g["MLM-Bias/bias"] = "generator_predictions/output_bias"
    h["MLM-Bias/bias"] = "generator_lm_head.bias"
    return g, h


@register_model("electra")
class ELECTRA(BERT):
    """ELECTRA discriminator / generator (see the module docstring).

    Build options: BERT's, less ``with_pool`` / ``with_nsp``; ``with_discriminator``
    (bert4keras), ``with_mlm`` (the generator head), ``checkpoint_scope``
    (``"electra"`` / ``"generator"``: which network of a Google checkpoint to load).
    """

    GOOGLE_NAMES, HF_NAMES = _electra_tables()
    GOOGLE_PREFIXES = ("electra/",)
    HF_PREFIXES = ("", "electra.")
    IGNORED = BERT.IGNORED + (r"^generator_lm_head\.weight$",)
    CONFIG_IGNORED = frozenset({"summary_type", "summary_use_proj", "summary_activation",
                                "summary_last_dropout", "summary_proj_to_labels"})
    UNSUPPORTED_OPTIONS = {
        **BERT.UNSUPPORTED_OPTIONS,
        "with_pool": ("ELECTRA has no pooler (its checkpoints hold none); pool the [CLS] "
                      "hidden state yourself, or use with_discriminator"),
        "with_nsp": "ELECTRA has no next-sentence head (its checkpoints hold none)",
    }
    SCOPES = ("electra", "generator")

    def __init__(self, with_discriminator=False, checkpoint_scope=None, **kwargs):
        super().__init__(**kwargs)
        self.with_discriminator = with_discriminator
        if checkpoint_scope is None:
            generator = bool(self.with_mlm) and not with_discriminator
            checkpoint_scope = "generator" if generator else "electra"
        if checkpoint_scope not in self.SCOPES:
            raise ValueError(f"checkpoint_scope must be one of {self.SCOPES}; found "
                             f"{checkpoint_scope!r}")
        self.checkpoint_scope = checkpoint_scope
        #: Google prefix of the body (the embedding tables stay under ``electra/``)
        self.GOOGLE_PREFIXES = (checkpoint_scope + "/",)

    def expand_names(self, fmt, prefix):
        """The name table over layer indices; Google embedding tables under ``electra/``."""
        table = self.GOOGLE_NAMES if fmt == "google" else self.HF_NAMES
        shared = "electra/" if prefix == "generator/" else prefix
        expanded = {}
        for key, value in table.items():
            name, transform = value if isinstance(value, tuple) else (value, None)
            indices = range(self.num_hidden_layers) if "{i}" in key else [None]
            for i in indices:
                expanded[key.format(i=i)] = (name.format(i=i, p=prefix, e=shared), transform)
        return expanded

    def apply_discriminator(self, x):
        """``Discriminator-Dense`` (hidden_act) then ``Discriminator-Prediction`` (1 unit)."""
        final = "sigmoid" if self.with_discriminator is True else self.with_discriminator
        x = self.apply(x, keras.layers.Dense, units=self.hidden_size,
                       activation=get_activation(self.hidden_act),
                       kernel_initializer=self.initializer, name="Discriminator-Dense")
        return self.apply(x, keras.layers.Dense, units=1, activation=final,
                          kernel_initializer=self.initializer, name="Discriminator-Prediction")

    def apply_final_layers(self, inputs):
        outputs = []
        if self.with_discriminator:
            outputs.append(self.apply_discriminator(inputs))
        if self.with_mlm:
            x = self.apply_mlm_head(inputs)
            mlm_act = "softmax" if self.with_mlm is True else self.with_mlm
            outputs.append(self.apply(x, keras.layers.Activation, activation=mlm_act,
                                      name=self.MLM_ACTIVATION))
        if not outputs:
            return inputs
        return outputs[0] if len(outputs) == 1 else outputs
