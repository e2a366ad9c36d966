"""Compressive Transformer: compression functions against numpy, FIFO eviction order of the memory
into the compressed memory, compressed memory is attended (range beyond m), and the
attention-reconstruction loss exists and trains only the compression network."""

import keras
import numpy as np
import pytest
from memory_autodiff import gradients, scope_losses

from keras_transformers.memory.compressive import CompressiveTransformerBlock, MemoryCompressor
from keras_transformers.memory.segment import reset_memory
from keras_transformers.models.transformer_xl import build_transformer_xl_lm

B, L, D, V = 2, 4, 8, 20


def np_(x):
    return keras.ops.convert_to_numpy(x)


def compress(kind, states, docs, usage=None, rate=3):
    layer = MemoryCompressor(rate, kind)
    layer.build(states.shape, docs.shape)
    return layer, [np_(t) for t in layer(states, docs, usage)]


@pytest.mark.backends
def test_pooling_compression_maps_l_rows_to_l_over_c():
    # catalogue V10: mean pooling with c=3 maps L=6 rows to 2 rows, each the mean of its block
    rng = np.random.default_rng(0)
    states = rng.normal(size=(B, 6, D)).astype("float32")
    docs = np.array([[0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1]], "int32")
    _, (mean, mean_docs) = compress("mean_pool", states, docs)
    np.testing.assert_allclose(mean, states.reshape(B, 2, 3, D).mean(2), atol=1e-6)
    np.testing.assert_array_equal(mean_docs, [[0, 0], [-1, 1]])  # a slot across documents: -1
    _, (mx, _) = compress("max_pool", states, docs)
    np.testing.assert_allclose(mx, states.reshape(B, 2, 3, D).max(2), atol=1e-6)


@pytest.mark.backends
def test_conv_compression_is_a_strided_convolution():
    rng = np.random.default_rng(1)
    states = rng.normal(size=(B, 6, D)).astype("float32")
    layer, (out, _) = compress("conv", states, np.zeros((B, 6), "int32"))
    kernel = np_(layer.kernel).reshape(3, D, D)  # (tap, in, out)
    ref = np.zeros((B, 2, D))
    for s in range(2):
        for t in range(3):
            ref[:, s] += states[:, 3 * s + t] @ kernel[t]
    np.testing.assert_allclose(out, ref + np_(layer.bias), atol=1e-5)


@pytest.mark.backends
def test_most_used_keeps_the_most_attended_states_in_order():
    states = np.arange(B * 6 * D, dtype="float32").reshape(B, 6, D)
    usage = np.array([[0.1, 5, 0.2, 3, 0.3, 0.4], [9, 0, 0, 0, 0, 8]], "float32")
    docs = np.array([[0, 1, 2, 3, 4, 5], [0] * 6], "int32")
    _, (kept, kept_docs) = compress("most_used", states, docs, usage)
    np.testing.assert_allclose(kept[0], states[0, [1, 3]])
    np.testing.assert_allclose(kept[1], states[1, [0, 5]])
    np.testing.assert_array_equal(kept_docs, [[1, 3], [0, 0]])


def test_fifo_eviction_order():
    # m = L = 4, c = 2, cm = 4: after segments x1, x2, x3 the memory holds x3 and the compressed
    # memory [pool(x1); pool(x2)] (oldest first); states that never held anything stay masked
    block = CompressiveTransformerBlock(
        2,
        4,
        16,
        memory_length=4,
        compressed_memory_length=4,
        compression_rate=2,
        compression="mean_pool",
        batch_size=B,
    )
    rng = np.random.default_rng(2)
    xs = [rng.normal(size=(B, L, D)).astype("float32") for _ in range(3)]
    docs = np.zeros((B, L), "int32")
    block(xs[0], docs)
    np.testing.assert_array_equal(np_(block.compressed_documents), -1)
    block(xs[1], docs)
    pool = [x.reshape(B, 2, 2, D).mean(2) for x in xs]
    np.testing.assert_allclose(np_(block.compressed_memory)[:, 2:], pool[0], atol=1e-6)
    np.testing.assert_array_equal(np_(block.compressed_documents), [[-1, -1, 0, 0]] * B)
    block(xs[2], docs)
    np.testing.assert_allclose(np_(block.memory), xs[2], atol=1e-6)
    np.testing.assert_allclose(np_(block.compressed_memory), np.concatenate(pool[:2], 1), atol=1e-6)
    np.testing.assert_array_equal(np_(block.compressed_documents), 0)
    block.reset_state()
    np.testing.assert_array_equal(np_(block.compressed_documents), -1)
    assert np.abs(np_(block.compressed_memory)).max() == 0


def lm(compression="mean_pool", **kwargs):
    return build_transformer_xl_lm(
        V,
        L,
        4,
        B,
        d_model=D,
        num_heads=2,
        num_layers=1,
        compressed_memory_length=2,
        compression_rate=2,
        compression=compression,
        **kwargs,
    )


def tokens(seed):
    return np.random.default_rng(seed).integers(2, V, size=(B, L)).astype("int32")


def test_compressed_memory_extends_the_range():
    # one layer, m = L = 4: segment 1 has left the memory at segment 3, only its compression
    # remains; it still changes the output (plain Transformer-XL with m = 4 would not)
    model = lm()
    s1b = tokens(1).copy()
    s1b[:, 0] = (s1b[:, 0] - 1) % (V - 2) + 2

    def run(first):
        reset_memory(model)
        for s in (first, tokens(2), tokens(3)):
            out = np_(model(s))
        return out

    assert np.abs(run(tokens(1)) - run(s1b)).max() > 1e-5


def test_reconstruction_loss_trains_only_the_compressor():
    model = lm("conv")
    model(tokens(1), training=True)  # fill the memory
    weights = model.trainable_weights

    def aux_loss():
        model(tokens(2), training=True)
        (loss,) = scope_losses()  # exactly one auxiliary loss (one compressive block)
        return loss

    def lm_loss():
        logits = model(tokens(2), training=True)
        return keras.ops.mean(
            keras.losses.sparse_categorical_crossentropy(tokens(3), logits, from_logits=True)
        )

    g_aux = gradients(aux_loss, (), weights)
    g_lm = gradients(lm_loss, (), weights)
    compressor = {id(w) for w in model.get_layer("compressive_block_0").compressor.weights}
    for w, ga, gl in zip(weights, g_aux, g_lm):
        has_aux, has_lm = np.abs(ga).max() > 0, np.abs(gl).max() > 0
        if id(w) in compressor:
            assert has_aux and not has_lm, w.path  # trained by the aux loss only
        else:
            assert not has_aux, w.path  # main network untouched by the aux loss
    model(tokens(2), training=True)
    assert len(model.losses) == 1 and float(np_(model.losses[0])) > 0
    # no aux loss at inference, nor for parameter-free compressions
    model(tokens(3))
    assert len(model.losses) == 0


def test_fit_with_conv_compression_and_argument_errors():
    model = lm("conv")
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x = np.random.default_rng(0).integers(2, V, size=(12, L)).astype("int32")
    hist = model.fit(x, x, batch_size=B, shuffle=False, epochs=2, verbose=0)
    assert all(np.isfinite(hist.history["loss"]))
    with pytest.raises(ValueError, match="compression='zip'"):
        MemoryCompressor(2, "zip")
    with pytest.raises(ValueError, match="compression_rate=3"):
        MemoryCompressor(3, "mean_pool").build((B, 4, D))
    with pytest.raises(ValueError, match="compressed_memory_length=0"):
        CompressiveTransformerBlock(2, 4, 8, 4, compressed_memory_length=0)


def test_save_load_round_trip_keeps_memories(tmp_path):
    model = lm("conv")
    for seed in (1, 2, 3):
        model(tokens(seed))
    path = str(tmp_path / "compressive.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    block = loaded.get_layer("compressive_block_0")
    np.testing.assert_array_equal(np_(block.compressed_documents), 0)  # memories were saved
    np.testing.assert_allclose(np_(loaded(tokens(4))), np_(model(tokens(4))), atol=1e-5)
