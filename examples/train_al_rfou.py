"""
Title: A deep character transformer with Al-Rfou et al.'s auxiliary losses
Description: Train the same deep character LM with and without the auxiliary losses.

Al-Rfou et al. (2019) trained 64-layer character transformers with three auxiliary losses (every
position predicts, every intermediate layer predicts with a weight that decays to 0 at ``i/(2N)``
of training, the top layer also predicts further characters) and a learned position table at
every layer. This script trains two models of the same depth on the built-in text for the same
number of steps:

- ``plain``: one position table after the embedding, only the top layer's next-character loss
  (at every position, as any causal LM);
- ``al_rfou``: per-layer positions, the decaying intermediate-layer losses and one extra
  future-character head,

and prints the held-out bits per character of the top layer's next-character prediction and the
intermediate weights at the end of each epoch (the decay schedule, also in the logs).

    python examples/train_al_rfou.py                       # a few minutes on a CPU
    python examples/train_al_rfou.py --layers 12 --epochs 4
"""

"""
## Setup
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

parser = argparse.ArgumentParser(description=__doc__.split("\n")[2])
parser.add_argument("--chars", type=int, default=120_000, help="characters of built-in text")
parser.add_argument("--length", type=int, default=64, help="window (characters)")
parser.add_argument("--layers", type=int, default=8)
parser.add_argument("--d-model", type=int, default=64)
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

import keras
import numpy as np

from keras_transformers.callbacks.aux_schedule import AuxiliaryLossSchedule
from keras_transformers.data.text import builtin_text
from keras_transformers.data.tokenizers import CharTokenizer
from keras_transformers.models.al_rfou import build_al_rfou_lm

"""
## Data: non-overlapping windows of the built-in text, the last 10% held out
"""

text = builtin_text(max_chars=args.chars)
tokenizer = CharTokenizer.fit(text)
tokens = tokenizer.encode(text)
L = args.length
n = (len(tokens) - 1) // L
windows = np.stack([tokens[i * L : i * L + L + 1] for i in range(n)]).astype("int32")
split = n * 9 // 10
train_x, train_y = windows[:split, :-1], windows[:split, 1:]
held_x, held_y = windows[split:, :-1], windows[split:, 1:]


def held_out_bits(model):
    """Bits per character of the top layer's next-character prediction on held-out windows."""
    logits = model.predict(held_x, batch_size=args.batch_size, verbose=0)[:, args.layers - 1]
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nats = -np.take_along_axis(logp, held_y[..., None], axis=-1).mean()
    return nats / np.log(2.0)


"""
## Train both models for the same steps
"""

results = {}
for label, options in (
    ("plain", dict(position="learned", num_future=0, intermediate_layers=False)),
    ("al_rfou", dict(position="learned_per_layer", num_future=1, intermediate_layers=True)),
):
    keras.utils.set_random_seed(args.seed)
    model = build_al_rfou_lm(
        vocab_size=tokenizer.vocabulary_size,
        max_length=L,
        d_model=args.d_model,
        num_heads=4,
        num_layers=args.layers,
        **options,
    )
    model.compile(keras.optimizers.Adam(1e-3))
    schedule = AuxiliaryLossSchedule()
    start = time.time()
    model.fit(
        train_x,
        train_y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=2,
        callbacks=[schedule] if options["intermediate_layers"] else [],
    )
    results[label] = held_out_bits(model)
    print(f"{label}: held-out {results[label]:.3f} bits/char ({time.time() - start:.0f} s)")
    if options["intermediate_layers"]:
        for epoch, progress, weights in schedule.history:
            shown = ", ".join(f"{w:.3f}" for w in weights)
            print(
                f"  after epoch {epoch + 1} (p = {progress:.2f}): w_1..w_{args.layers - 1} = {shown}"
            )

print(
    f"{args.layers}-layer character LM, held-out bits/char of the top layer: plain "
    f"{results['plain']:.3f}, with Al-Rfou auxiliary losses {results['al_rfou']:.3f}"
)
