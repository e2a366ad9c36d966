"""Train a small encoder-decoder Transformer and report greedy exact-match accuracy.

With no arguments it learns to reverse random token sequences (a generated task; also
``--task copy``, ``sort`` or ``arithmetic``). Logs to TensorBoard and prints the log folder::

    python examples/train_seq2seq.py
    python examples/train_seq2seq.py --task arithmetic --epochs 8
    python examples/train_seq2seq.py --data pairs.tsv --seq-len 48
    python examples/train_seq2seq.py --help

``--data`` takes a UTF-8 file of ``source<TAB>target`` lines. Same as
``keras-transformers train seq2seq``; the logic lives in
``keras_transformers.training.train_seq2seq``.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_transformers.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("seq2seq", prog=os.path.basename(__file__)))
