"""Train a small encoder-only text classifier and print its validation accuracy.

With no arguments it learns which standard-library package family (asyncio, email, http,
unittest) a docstring sentence comes from: a real 4-class text task built from the Python sources
(nothing is downloaded). Logs to TensorBoard and prints the log folder::

    python examples/train_classifier.py
    python examples/train_classifier.py --data reviews.csv --text-column review --label-column stars
    python examples/train_classifier.py --data my_folders/ --tokenizer byte --position rope
    python examples/train_classifier.py --help

``--data`` takes a CSV/TSV file with a header row, a JSONL file (text and label keys) or a folder
with one subfolder of .txt files per class. Same as ``keras-transformers train classifier``; the
logic lives in ``keras_transformers.training.train_classifier``.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_transformers.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("classifier", prog=os.path.basename(__file__)))
