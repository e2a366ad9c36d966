"""
Title: Image Transformer: generating handwritten digits pixel by pixel
Description: Train a small Image Transformer (local 2D attention) on the bundled 8x8 digits,
report bits/dim and sample new digits with the cached decoder.

The Image Transformer (Parmar et al., 2018) models an image as a sequence of sub-pixels, each a
categorical over ``--levels`` intensities, generated one after the other in a fixed order. Its
self-attention is *local*: a pixel attends to a block of already generated neighbours (2D query
blocks with a memory band above, left and right, or 1D blocks of the flattened sequence), so the
cost per pixel does not grow with the image.

With no arguments it trains on scikit-learn's bundled 8x8 handwritten digits (1,797 images,
nothing is downloaded; 16 intensity levels) for a few minutes on a CPU, prints the test bits/dim
next to two baselines (uniform: ``log2 16 = 4``; an independent histogram per pixel), times
cached against uncached sampling (ms per sub-pixel) and writes TensorBoard samples (Images tab,
``samples``) and ``samples.png`` to ``--logdir``.

Examples::

    python examples/train_image_transformer.py
    python examples/train_image_transformer.py --attention local --order block_raster
    python examples/train_image_transformer.py --epochs 2 --layers 1   # a quick look
    python examples/train_image_transformer.py --help
"""

"""
## Setup

The flags are parsed before Keras is imported, so ``--help`` answers at once.
"""

import argparse
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pair(text):
    rows, cols = (int(x) for x in text.split(","))
    return rows, cols


parser = argparse.ArgumentParser(
    description="Train an Image Transformer on the bundled 8x8 digits; bits/dim and samples.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
)
parser.add_argument("--attention", default="local2d", choices=["local2d", "local", "full"])
parser.add_argument("--order", default="raster", choices=["raster", "block_raster"])
parser.add_argument("--levels", type=int, default=16, help="intensity levels (default 16)")
parser.add_argument("--query-shape", type=pair, default=(2, 4), help="2D query block h_q,w_q")
parser.add_argument("--memory-shape", type=pair, default=(2, 2), help="2D memory h_m,w_m")
parser.add_argument("--block-size", type=int, default=8, help="1D query block l_q")
parser.add_argument("--memory-blocks", type=int, default=2, help="1D memory blocks M")
parser.add_argument("--d-model", type=int, default=64)
parser.add_argument("--heads", type=int, default=4)
parser.add_argument("--layers", type=int, default=3)
parser.add_argument("--dropout", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--learning-rate", type=float, default=3e-3)
parser.add_argument("--samples", type=int, default=16, help="images sampled at the end")
parser.add_argument(
    "--sample-every", type=int, default=5, help="TensorBoard samples every N epochs"
)
parser.add_argument("--logdir", default=os.path.join("runs", "image_transformer"))
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--no-jit", action="store_true", help="graph mode without XLA")
args = parser.parse_args()

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402

import keras_transformers as kt  # noqa: E402
from keras_transformers.models.image_transformer import tile_images  # noqa: E402

keras.utils.set_random_seed(args.seed)
os.makedirs(args.logdir, exist_ok=True)

"""
## Data

8x8 grey digits in ``[0, 1]``, quantised to ``--levels`` intensities. ``model.prepare`` turns
them into the decoder's input ``[<start>, x_1 .. x_63]`` and targets ``[x_1 .. x_64]`` in the
generation order (``--order``).
"""

(x_train, _), (x_test, _), _ = kt.data.load_digits(test_fraction=0.2, seed=args.seed)
print(f"data: {len(x_train)} training and {len(x_test)} test digits of shape {x_train.shape[1:]}")

"""
## Model

``--layers`` causal decoder blocks with ``--attention`` cores; a ``--levels``-way softmax per
sub-pixel. ``loss / ln 2`` is bits per dimension.
"""

model = kt.models.build_image_transformer(
    height=8,
    width=8,
    channels=1,
    levels=args.levels,
    d_model=args.d_model,
    num_heads=args.heads,
    num_layers=args.layers,
    attention=args.attention,
    order=args.order,
    query_shape=args.query_shape,
    memory_shape=args.memory_shape,
    block_size=args.block_size,
    memory_blocks=args.memory_blocks,
    dropout=args.dropout,
)
inputs, targets = model.prepare(x_train)
test_inputs, test_targets = model.prepare(x_test)
steps = math.ceil(len(inputs) / args.batch_size) * args.epochs
model.compile(
    optimizer=keras.optimizers.AdamW(
        keras.optimizers.schedules.CosineDecay(
            0.0, steps, warmup_target=args.learning_rate, warmup_steps=max(1, steps // 20)
        ),
        weight_decay=0.01,
    ),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=[kt.models.BitsPerDim()],
    jit_compile=not args.no_jit,
)
model.summary(line_length=100)

"""
## Training

TensorBoard scalars (loss, bits/dim) and, every ``--sample-every`` epochs, a grid of sampled
digits (``kt.models.ImageSampleLogger``).
"""

model.fit(
    inputs,
    targets,
    batch_size=args.batch_size,
    epochs=args.epochs,
    validation_data=(test_inputs, test_targets),
    callbacks=[
        keras.callbacks.TensorBoard(args.logdir),
        kt.models.ImageSampleLogger(args.logdir, num_images=16, every=args.sample_every),
    ],
    verbose=2,
)

"""
## Bits per dimension

The test likelihood against a uniform model and an independent histogram per pixel position
(fitted on the training set, add-one smoothed).
"""

result = model.evaluate(test_inputs, test_targets, batch_size=256, verbose=0, return_dict=True)
counts = np.ones((targets.shape[1], args.levels))
np.add.at(counts, (np.arange(targets.shape[1])[None], targets), 1)
histogram = counts / counts.sum(axis=1, keepdims=True)
baseline = -np.log2(histogram[np.arange(targets.shape[1])[None], test_targets]).mean()
print(
    f"test bits/dim: {result['bits_per_dim']:.3f} (uniform {math.log2(args.levels):.3f}, "
    f"per-pixel histogram {baseline:.3f})"
)

"""
## Sampling

Ancestral sampling (``RandomSampler``) with the per-layer caches: each new sub-pixel is one
single-position pass that gathers its local keys from the cache. The same samples without the
cache recompute all 64 positions for every sub-pixel.
"""

length = model.sequence_length


def timed_samples(use_cache):
    sampler = keras_hub.samplers.RandomSampler(seed=args.seed)
    model.generate_images(args.samples, sampler=sampler, use_cache=use_cache)  # compile
    start = time.perf_counter()
    images = model.generate_images(args.samples, sampler=sampler, use_cache=use_cache)
    return images, 1000 * (time.perf_counter() - start) / length


samples, cached_ms = timed_samples(True)
_, uncached_ms = timed_samples(False)
print(
    f"sampling {args.samples} images: {cached_ms:.2f} ms/sub-pixel cached, "
    f"{uncached_ms:.2f} ms/sub-pixel recomputed"
)
grid = (tile_images(samples, columns=8)[..., 0] * 255).astype("uint8")
keras.utils.save_img(os.path.join(args.logdir, "samples.png"), grid[..., None], scale=False)
print(f"wrote {os.path.join(args.logdir, 'samples.png')} and TensorBoard logs in {args.logdir}")
