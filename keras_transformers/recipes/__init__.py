"""Training recipes: the flags, run folder, resumable loop and task data of the examples.

* :mod:`~keras_transformers.recipes.argtypes`, :mod:`~keras_transformers.recipes.flags` -- flag
  types and the ``lm`` / ``classifier`` / ``seq2seq`` parsers; no Keras import, so every
  ``--help`` answers at once.
* :mod:`~keras_transformers.recipes.run` -- run folder, callbacks, learning rate, resumable
  epoch batches, final report.
* :mod:`~keras_transformers.recipes.lm`, :mod:`~keras_transformers.recipes.classifier`,
  :mod:`~keras_transformers.recipes.seq2seq` -- each task's data and report.
* :mod:`~keras_transformers.recipes.vit`, :mod:`~keras_transformers.recipes.bert`,
  :mod:`~keras_transformers.recipes.decision_transformer` -- the flags (imported without Keras),
  data and reports of the ViT, BERT and Decision Transformer scripts.

``examples/train_<task>.py`` build, compile and fit their model in plain sight and call these for
the rest; ``keras-transformers train <task>`` runs those scripts. Submodules load on first use.
"""

import importlib

EXAMPLES = ("lm", "classifier", "seq2seq")
_SUBMODULES = (
    "argtypes",
    "bert",
    "classifier",
    "decision_transformer",
    "flags",
    "lm",
    "run",
    "seq2seq",
    "vit",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
