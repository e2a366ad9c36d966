"""Vision Transformer: patch embedding, class token, 2D sinusoid table, builder, save/load."""

import keras
import numpy as np
import pytest

from keras_transformers.models.vit import (
    ClassToken,
    PatchEmbedding,
    SinusoidalPosition2D,
    build_vit,
    sinusoid_2d_table,
)

TINY = dict(d_model=16, num_heads=2, num_layers=1, dropout=0.0)


def _images(batch=2, height=8, width=12, channels=3, seed=0):
    return (
        np.random.default_rng(seed).normal(size=(batch, height, width, channels)).astype("float32")
    )


def _numpy_patches(x, ph, pw):
    """Independent reference: loop over the patches in raster order, flatten (row, col, ch)."""
    b, h, w, c = x.shape
    rows = []
    for i in range(h // ph):
        for j in range(w // pw):
            rows.append(x[:, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw, :].reshape(b, -1))
    return np.stack(rows, axis=1)  # (B, N, ph·pw·C)


@pytest.mark.parametrize("mode", ["conv", "reshape"])
def test_patch_embedding_matches_numpy_reference(mode):
    x = _images()
    layer = PatchEmbedding((2, 3), 5, mode=mode, bias_initializer="random_normal")
    y = keras.ops.convert_to_numpy(layer(x))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
    expected = _numpy_patches(x, 2, 3) @ kernel.reshape(-1, 5) + bias
    assert y.shape == (2, (8 // 2) * (12 // 3), 5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_patch_embedding_conv_and_reshape_agree_with_copied_weights():
    x = _images(channels=2)
    conv = PatchEmbedding(4, 7, mode="conv")
    reshape = PatchEmbedding(4, 7, mode="reshape", kernel_initializer="zeros")
    conv.build(x.shape)
    reshape.build(x.shape)
    reshape.set_weights(conv.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(conv(x)),
        keras.ops.convert_to_numpy(reshape(x)),
        rtol=1e-5,
        atol=1e-5,
    )


def test_patch_embedding_errors():
    with pytest.raises(ValueError, match="rank 4"):
        PatchEmbedding(2, 4)(np.zeros((2, 8, 8), "float32"))
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        PatchEmbedding(3, 4)(np.zeros((2, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="mode='pool'"):
        PatchEmbedding(2, 4, mode="pool")
    with pytest.raises(ValueError, match="patch_size=0"):
        PatchEmbedding(0, 4)


def test_class_token_prepends_one_learned_vector():
    layer = ClassToken(initializer="random_normal")
    x = np.random.default_rng(1).normal(size=(3, 4, 6)).astype("float32")
    y = keras.ops.convert_to_numpy(layer(x))
    token = keras.ops.convert_to_numpy(layer.token)[0, 0]
    assert y.shape == (3, 5, 6)
    np.testing.assert_allclose(y[:, 1:], x)
    np.testing.assert_allclose(y[:, 0], np.broadcast_to(token, (3, 6)))


def test_sinusoid_2d_values_match_numpy_formula():
    gh, gw, d = 3, 4, 8
    table = sinusoid_2d_table(gh, gw, d)
    assert table.shape == (gh * gw, d)
    q = d // 4
    for r in range(gh):
        for c in range(gw):
            row = table[r * gw + c]
            for k in range(q):
                omega = 1.0 / 10000 ** (k / q)
                np.testing.assert_allclose(row[k], np.sin(r * omega), atol=1e-6)
                np.testing.assert_allclose(row[q + k], np.cos(r * omega), atol=1e-6)
                np.testing.assert_allclose(row[2 * q + k], np.sin(c * omega), atol=1e-6)
                np.testing.assert_allclose(row[3 * q + k], np.cos(c * omega), atol=1e-6)
    # Patches in the same row share the first half, the same column the second half.
    np.testing.assert_allclose(table[0, : d // 2], table[gw - 1, : d // 2])
    np.testing.assert_allclose(table[0, d // 2 :], table[gw, d // 2 :])
    with pytest.raises(ValueError, match="multiple of 4"):
        sinusoid_2d_table(2, 2, 6)


def test_sinusoid_2d_layer_leaves_prefix_tokens_unchanged():
    layer = SinusoidalPosition2D(2, 3, num_prefix_tokens=1)
    x = np.ones((2, 7, 8), "float32")
    y = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(y[:, 0], 1.0)
    np.testing.assert_allclose(y[0, 1:], 1.0 + sinusoid_2d_table(2, 3, 8), atol=1e-6)
    with pytest.raises(ValueError, match="sequence length 6"):
        SinusoidalPosition2D(2, 3, num_prefix_tokens=1)(np.ones((1, 6, 8), "float32"))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(pooling="cls", position="learned", patch_embedding="conv"),
        dict(pooling="mean", position="sinusoid2d", patch_embedding="reshape"),
        dict(pooling="cls", position="sinusoid2d"),
        dict(pooling="mean", position="rope"),
        dict(
            pooling="mean",
            position=None,
            attention={"name": "local2d", "query_height": 2, "query_width": 2},
        ),
    ],
)
def test_vit_shapes(kwargs):
    model = build_vit((8, 12), (2, 4), 5, channels=3, **TINY, **kwargs)
    assert model(_images()).shape == (2, 5)
    tokens = 4 * 3 + (1 if kwargs["pooling"] == "cls" else 0)
    block = model.get_layer("encoder_block_0")
    assert block.input.shape == (None, tokens, 16)


def test_local2d_gets_patch_grid():
    model = build_vit(8, 2, 3, channels=1, pooling="mean", attention="local2d", **TINY)
    core = model.get_layer("encoder_block_0").self_attention.attention_core
    assert (core.height, core.width) == (4, 4)


def test_cls_pooling_reads_class_token_and_mean_pooling_averages_patches():
    x = _images(channels=1, width=8)
    cls_model = build_vit(8, 2, 3, channels=1, pooling="cls", **TINY)
    mean_model = build_vit(8, 2, 3, channels=1, pooling="mean", **TINY)
    for model, pooling in ((cls_model, "cls"), (mean_model, "mean")):
        normed = keras.Model(model.input, model.get_layer("final_norm").output)(x)
        normed = keras.ops.convert_to_numpy(normed)  # (B, L, d)
        pooled = keras.Model(model.input, model.get_layer("pooling").output)(x)
        pooled = keras.ops.convert_to_numpy(pooled)
        expected = normed[:, 0] if pooling == "cls" else normed.mean(axis=1)
        np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-5)
    assert normed.shape[1] == 16  # mean pooling: no class token
    assert cls_model.get_layer("final_norm").output.shape[1] == 17


def test_builder_errors():
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        build_vit(10, 4, 3, **TINY)
    with pytest.raises(ValueError, match="pooling='max'"):
        build_vit(8, 2, 3, pooling="max", **TINY)
    with pytest.raises(ValueError, match="patch_embedding='linear'"):
        build_vit(8, 2, 3, patch_embedding="linear", **TINY)
    with pytest.raises(ValueError, match="multiple of 4"):
        build_vit(8, 2, 3, position="sinusoid2d", d_model=18, num_heads=2, num_layers=1)
    with pytest.raises(ValueError, match="pooling='mean'"):
        build_vit(8, 2, 3, attention="local2d", pooling="cls", **TINY)
    model = build_vit(8, 2, 3, channels=3, **TINY)
    with pytest.raises(ValueError):
        model(np.zeros((2, 8, 8, 8, 3), "float32"))  # wrong rank


def test_fit_one_step_and_keras_round_trip(tmp_path):
    model = build_vit(8, 2, 4, channels=1, position="sinusoid2d", **TINY)
    x = _images(batch=8, width=8, channels=1)
    y = np.arange(8) % 4
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    path = tmp_path / "vit.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(model(x)),
        rtol=1e-5,
        atol=1e-5,
    )
