"""Train a small byte-level decoder language model, then print a greedy sample.

With no arguments it trains on the docstrings of the Python standard library (real English text
that ships with every Python; nothing is downloaded) for a few minutes on a CPU, logs to
TensorBoard and prints the log folder::

    python examples/train_lm.py
    python examples/train_lm.py --data my_book.txt --epochs 10 --seq-len 256
    python examples/train_lm.py --attention sliding_window --position rope
    python examples/train_lm.py --help

Same as ``keras-transformers train lm [args...]``; the logic lives in
``keras_transformers.training.train_lm``.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_transformers.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("lm", prog=os.path.basename(__file__)))
