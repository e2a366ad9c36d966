"""
Title: SPALM, a Transformer-XL with a gated long-term episodic memory
Description: Train a character-level SPALM on built-in text and measure its gate.

SPALM (Yogatama et al., 2021) adds to a Transformer-XL a kNN memory of ``(context, next token)``
pairs and mixes the retrieved tokens' embeddings into the top hidden state with a learned gate
``g_t = σ(w_gᵀ h_t)`` (``g_t = 1``: memory ignored). The recipe:

1. train the model with an empty store (it is then a plain Transformer-XL LM);
2. fill the store with that model's ``(h_t, x_{t+1})`` pairs over a *datastore* text (keys fixed);
3. train on a different text, once with the store (SPALM) and once, from the same weights,
   without it (the control), and compare held-out bits per character and the gate values.

    python examples/train_spalm.py                  # a few minutes on a CPU
    python examples/train_spalm.py --chars 20000 --epochs 1 --gate-epochs 1   # quick look
"""

"""
## Setup
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

parser = argparse.ArgumentParser(description=__doc__.split("\n")[2])
parser.add_argument("--chars", type=int, default=60_000, help="characters of built-in text")
parser.add_argument("--segment-length", type=int, default=32)
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--d-model", type=int, default=64)
parser.add_argument("--layers", type=int, default=2)
parser.add_argument("--top-k", type=int, default=4)
parser.add_argument("--epochs", type=int, default=3, help="epochs of step 1 (empty store)")
parser.add_argument("--gate-epochs", type=int, default=2, help="epochs of step 3")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

import keras
import numpy as np

from keras_transformers.data.streams import make_segment_streams
from keras_transformers.data.text import builtin_text
from keras_transformers.data.tokenizers import CharTokenizer
from keras_transformers.memory.state import MemoryReset, reset_memory
from keras_transformers.models.spalm import build_spalm_datastore, build_spalm_lm

keras.utils.set_random_seed(args.seed)

"""
## Data: a datastore text, a training text and a held-out text
"""

text = builtin_text(max_chars=args.chars)
tokenizer = CharTokenizer.fit(text)
tokens = tokenizer.encode(text)
n = len(tokens)
store_part, train_part, held_part = (
    tokens[: n * 9 // 20],
    tokens[n * 9 // 20 : n * 9 // 10],
    tokens[n * 9 // 10 :],
)
B, L = args.batch_size, args.segment_length
streams = {
    name: make_segment_streams(part, B, L)
    for name, part in (("store", store_part), ("train", train_part), ("held", held_part))
}
step1_x = np.concatenate([streams["store"][0], streams["train"][0]])
step1_y = np.concatenate([streams["store"][1], streams["train"][1]])

"""
## Model
"""

model = build_spalm_lm(
    vocab_size=tokenizer.vocabulary_size,
    segment_length=L,
    memory_length=L,
    batch_size=B,
    datastore_size=len(streams["store"][0]) * L,
    top_k=args.top_k,
    d_model=args.d_model,
    num_heads=4,
    num_layers=args.layers,
)
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
model.compile(keras.optimizers.Adam(1e-3), loss)
fit_args = dict(batch_size=B, shuffle=False, verbose=2, callbacks=[MemoryReset()])


def held_out_bits():
    reset_memory(model)
    nats = model.evaluate(*streams["held"], batch_size=B, verbose=0)
    return nats / np.log(2.0)


"""
## 1. Train with an empty store (a Transformer-XL LM)
"""

start = time.time()
model.fit(step1_x, step1_y, epochs=args.epochs, **fit_args)
print(f"step 1: held-out {held_out_bits():.3f} bits/char ({time.time() - start:.0f} s)")
pretrained = model.get_weights()

"""
## 3a. Control: keep training without the store
"""

model.fit(*streams["train"], epochs=args.gate_epochs, **fit_args)
control_bits = held_out_bits()

"""
## 2 + 3b. SPALM: the same weights, a store of the pretrained keys, the same training
"""

model.set_weights(pretrained)
# the store's variables are weights too: set_weights restored the empty store, so fill it now
size = build_spalm_datastore(model, *streams["store"])
print(f"store: {size} (key, next char) pairs from the datastore text")
model.fit(*streams["train"], epochs=args.gate_epochs, **fit_args)
spalm_bits = held_out_bits()

reset_memory(model)
held_x = streams["held"][0]
gates = np.concatenate(
    [model.gate_values(held_x[i : i + B]) for i in range(0, len(held_x), B)]
).reshape(-1)
reset_memory(model)
print(
    f"held-out bits/char: control (no store) {control_bits:.3f}, SPALM {spalm_bits:.3f}\n"
    f"gate g_t on held-out text: mean {gates.mean():.3f}, median {np.median(gates):.3f}, "
    f"10th-90th percentile {np.percentile(gates, 10):.3f}-{np.percentile(gates, 90):.3f}, "
    f"share relying mostly on memory (g < 0.5) {np.mean(gates < 0.5):.3f}"
)
