"""Image Transformer: generation orders, local 1D/2D key sets, cached decoding, bits/dim."""

import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.models import image_transformer as it


def reference_order(height, width, order, bh=None, bw=None):
    """Plain loops: the raster index of every generated position."""
    perm = []
    if order == "raster":
        for r in range(height):
            for c in range(width):
                perm.append(r * width + c)
        return np.array(perm)
    for br in range(0, height, bh):
        for bc in range(0, width, bw):
            for r in range(br, br + bh):
                for c in range(bc, bc + bw):
                    perm.append(r * width + c)
    return np.array(perm)


def test_orders_match_numpy_reference_and_round_trip():
    np.testing.assert_array_equal(it.pixel_order(4, 6, "raster"), reference_order(4, 6, "raster"))
    np.testing.assert_array_equal(
        it.pixel_order(4, 6, "block_raster", (2, 3)), reference_order(4, 6, "block", 2, 3)
    )
    images = np.random.default_rng(0).integers(0, 16, size=(3, 4, 3, 2))  # grid 4 x 6
    order = it.pixel_order(4, 6, "block_raster", (2, 3))
    seq = it.images_to_sequence(images, order)
    # sequence position s holds grid pixel perm[s] of the (H, W·C) grid (channels side by side)
    grid = images.reshape(3, 4, 6)
    for s, p in enumerate(order):
        np.testing.assert_array_equal(seq[:, s], grid[:, p // 6, p % 6])
    np.testing.assert_array_equal(it.sequence_to_images(seq, order, 4, 3, 2), images)
    with pytest.raises(ValueError, match="order="):
        it.pixel_order(4, 4, "zigzag")
    with pytest.raises(ValueError, match="block_shape"):
        it.pixel_order(4, 6, "block_raster", (3, 3))


def reference_block_raster_pattern(height, width, hq, wq, hm, wm):
    """Dense (L, L) mask in block-raster sequence indices, from the definition."""
    perm = reference_order(height, width, "block", hq, wq)
    length = height * width
    allowed = np.zeros((length, length), bool)
    for i in range(length):
        r, c = divmod(perm[i], width)
        r0, c0 = (r // hq) * hq, (c // wq) * wq
        for j in range(i + 1):  # causal in generation order
            rj, cj = divmod(perm[j], width)
            if r0 - hm <= rj < r0 + hq and c0 - wm <= cj < c0 + wq + wm:
                allowed[i, j] = True
    return allowed


def test_block_raster_local2d_pattern_property():
    """Catalogue V22 in block-raster order: keys in the memory rectangle (never below the query
    block, never beyond w_m to the right), already generated, at most (h_q+h_m)(w_q+2w_m)."""
    core = it.BlockRasterLocal2DAttention(
        height=8, width=8, query_height=2, query_width=4, memory_height=2, memory_width=2
    )
    pattern = core.static_pattern(64, causal=True)[0]
    np.testing.assert_array_equal(pattern, reference_block_raster_pattern(8, 8, 2, 4, 2, 2))
    assert pattern.sum(axis=1).max() <= (2 + 2) * (4 + 2 * 2)
    assert not np.triu(pattern, 1).any()


def test_local_key_sets_are_bounded():
    """Catalogue V21: keys per query <= l_q + l_m, only already generated positions."""
    core = kt.generation.CachedLocalAttention(block_size=4, memory_blocks=2)
    pattern = core.static_pattern(64, causal=True)[0]
    assert pattern.sum(axis=1).max() <= 4 + 2 * 4
    assert not np.triu(pattern, 1).any()


def small_model(attention, order, seed=0, num_layers=1):
    keras.utils.set_random_seed(seed)
    return kt.models.build_image_transformer(
        height=4,
        width=4,
        levels=8,
        d_model=16,
        num_heads=2,
        num_layers=num_layers,
        attention=attention,
        order=order,
        query_shape=(2, 2),
        memory_shape=(1, 1),
        block_size=4,
        memory_blocks=1,
    )


@pytest.mark.parametrize(
    "attention,order",
    [
        ("local2d", "block_raster"),
        pytest.param("local", "raster", marks=pytest.mark.slow),
        pytest.param("local2d", "raster", marks=pytest.mark.slow),
    ],
)
def test_cached_steps_equal_full_forward(attention, order):
    """Teacher-forced, one token at a time through the pattern caches = the blocked forward."""
    model = small_model(attention, order, num_layers=2)
    tokens = np.random.default_rng(1).integers(0, 8, size=(2, 16)).astype("int32")
    tokens[:, 0] = model.start_id
    full = keras.ops.convert_to_numpy(model(tokens))  # (2, 16, 8)
    gen = model.generator(use_cache=True, jit=False)
    cache = gen.empty_cache(2, 16)
    steps = []
    for t in range(16):
        logits, _, cache = gen.call_with_cache(tokens[:, t : t + 1], cache, t)
        steps.append(keras.ops.convert_to_numpy(logits)[:, 0])
    np.testing.assert_allclose(np.stack(steps, axis=1), full, atol=2e-4)


@pytest.mark.backends
def test_greedy_generate_equals_argmax_of_full_forward():
    model = small_model("local2d", "block_raster", seed=2)
    tokens = np.zeros((2, 16), "int32")
    tokens[:, 0] = model.start_id
    values = np.zeros((2, 16), "int32")
    for t in range(16):
        values[:, t] = keras.ops.convert_to_numpy(model(tokens))[:, t].argmax(-1)
        if t + 1 < 16:
            tokens[:, t + 1] = values[:, t]
    images = model.generate_images(2, sampler="greedy", use_cache=True, jit=False)
    np.testing.assert_array_equal(images, model.to_images(values))
    assert model.generator(use_cache=True, jit=False).use_cache


def test_bits_per_dim_matches_numpy_and_evaluate():
    model = small_model("local", "block_raster")
    images = np.random.default_rng(3).random((5, 4, 4, 1)).astype("float32")
    inputs, targets = model.prepare(images)
    assert inputs[0, 0] == model.start_id and (inputs[:, 1:] == targets[:, :-1]).all()
    logits = keras.ops.convert_to_numpy(model(inputs)).astype("float64")
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_p, targets[..., None], -1).mean() / math.log(2)
    assert model.bits_per_dim(images) == pytest.approx(expected, rel=1e-5)
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[kt.models.BitsPerDim()],
    )
    result = model.evaluate(inputs, targets, batch_size=5, verbose=0, return_dict=True)
    assert result["bits_per_dim"] == pytest.approx(expected, rel=1e-4)


def test_save_load_and_bad_arguments(tmp_path):
    model = small_model("local2d", "block_raster")
    path = str(tmp_path / "it.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, kt.models.ImageTransformer)
    tokens = np.full((1, 16), 3, "int32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(tokens)),
        keras.ops.convert_to_numpy(model(tokens)),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="attention="):
        kt.models.build_image_transformer(attention="lsh")
    with pytest.raises(ValueError, match="order="):
        kt.models.build_image_transformer(order="spiral")
    with pytest.raises(ValueError, match="query_shape"):
        kt.models.build_image_transformer(order="block_raster", query_shape=(3, 3))
    with pytest.raises(ValueError, match="beam"):
        model.generate_images(1, sampler="beam")


def test_tile_images():
    samples = np.random.default_rng(0).random((3, 4, 4, 1))
    tiled = it.tile_images(samples, columns=2, scale=2)
    assert tiled.shape == (2 * 9 - 1, 2 * 9 - 1, 1)
    np.testing.assert_allclose(tiled[:8:2, 9:17:2, 0], samples[1, ..., 0])


@pytest.mark.slow
def test_sample_logger_writes_an_image(tmp_path):
    model = small_model("local2d", "raster")
    logger = kt.models.ImageSampleLogger(str(tmp_path), num_images=3, sampler="greedy")
    logger.set_model(model)
    samples = logger.log(0)
    logger.on_train_end()
    assert samples.shape == (3, 4, 4, 1) and 0.0 <= samples.min() <= samples.max() <= 1.0
    assert it.tile_images(samples).shape == (4 * 4, 3 * 17 - 1, 1)
    assert any(p.name.startswith("events") for p in (tmp_path / "train").iterdir())


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train_image_transformer.py"


def test_example_help_is_instant():
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "--order" in proc.stdout


@pytest.mark.slow
def test_example_runs(tmp_path):
    args = ["--epochs", "1", "--layers", "1", "--d-model", "16", "--heads", "2", "--samples", "2"]
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), *args, "--logdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test bits/dim" in proc.stdout and "ms/sub-pixel cached" in proc.stdout
    assert (tmp_path / "samples.png").exists()
