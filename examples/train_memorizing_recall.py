"""
Title: A Memorizing Transformer that learns to use its memory
Description: Key-value recall across segments, with and without the kNN memory.

Every document of the built-in task (``keras_transformers.data.recall``) is two segments: the
first lists key-value pairs, the second queries keys. A key's first query in the second segment
can only be answered from the previous segment. The Memorizing Transformer (Wu et al., 2022)
keeps the previous segment's keys and values in a non-differentiable kNN memory
(``memory_size = L``) and retrieves the top-k of them with the same query/key/value projections
as its local attention; repeated queries inside the segment teach those projections the look-up.
The control is the same decoder without the kNN layer (an ordinary causal block in its place),
trained on the same segments for the same steps.

    python examples/train_memorizing_recall.py              # a few minutes on a CPU
    python examples/train_memorizing_recall.py --index faiss   # FAISS search (eager, slower)
"""

"""
## Setup
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

parser = argparse.ArgumentParser(description=__doc__.split("\n")[2])
parser.add_argument("--documents", type=int, default=4096, help="training documents")
parser.add_argument("--pairs", type=int, default=4, help="key-value pairs per segment")
parser.add_argument("--keys", type=int, default=8, help="key and value vocabulary each")
parser.add_argument("--layers", type=int, default=2)
parser.add_argument("--top-k", type=int, default=4)
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--learning-rate", type=float, default=3e-3)
parser.add_argument("--index", choices=("exact", "faiss"), default="exact")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

import keras

from keras_transformers.data.recall import make_recall_streams, recall_vocabulary_size
from keras_transformers.memory.state import MemoryReset
from keras_transformers.models.decoder_lm import build_decoder_lm
from keras_transformers.models.memorizing import build_memorizing_lm

"""
## Data: training and held-out documents (different seeds)
"""

B, P, K = 16, args.pairs, args.keys
L = 2 * P
x, y, first, repeat = make_recall_streams(args.documents, P, K, K, B, seed=args.seed)
held = make_recall_streams(512, P, K, K, B, seed=args.seed + 1)
vocab = recall_vocabulary_size(K, K)
sizes = dict(d_model=64, num_heads=4, num_layers=args.layers)

"""
## Models: with the kNN memory of the previous segment, and without it
"""

models = {
    "memory": build_memorizing_lm(
        vocab, L, B, memory_size=L, top_k=args.top_k, index=args.index, **sizes
    ),
    "no memory": build_decoder_lm(vocab, L, **sizes),
}
results = {}
for label, model in models.items():
    keras.utils.set_random_seed(args.seed)
    model.compile(
        keras.optimizers.Adam(args.learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        run_eagerly=args.index == "faiss" and label == "memory",
    )
    start = time.time()
    model.fit(
        x,
        y,
        sample_weight=first + repeat,
        batch_size=B,
        shuffle=False,
        epochs=args.epochs,
        verbose=2,
        callbacks=[MemoryReset()],
    )
    scores = {}
    for name, mask in (("first", held[2]), ("repeat", held[3])):
        scores[name] = model.evaluate(
            held[0], held[1], sample_weight=mask, batch_size=B, verbose=0, callbacks=[MemoryReset()]
        )[1]
    results[label] = scores
    print(
        f"{label}: held-out recall accuracy, first queries (answer only in the previous "
        f"segment) {scores['first']:.3f}, repeated queries {scores['repeat']:.3f} "
        f"({time.time() - start:.0f} s)"
    )

print(
    f"held-out first-query recall: memory {results['memory']['first']:.3f} vs no memory "
    f"{results['no memory']['first']:.3f} (chance {1 / K:.3f})"
)
