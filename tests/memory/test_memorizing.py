"""Memorizing Transformer: kNN-augmented attention against numpy references, memory persistence,
gating, gradients, the LM builder, fit with the reset callback and .keras round trips."""

import os

import keras
import numpy as np
import pytest
from keras import ops
from memory_autodiff import gradients

from keras_transformers.memory.memorizing import (
    KNNAugmentedAttention,
    KNNMemoryReset,
    clear_memories,
    knn_memories,
)
from keras_transformers.models.memorizing import (
    MemorizingDecoderBlock,
    build_memorizing_lm,
    default_memory_layer_index,
    segment_batches,
)

B, L, D, H, DH = 2, 5, 8, 2, 4


def _np_softmax(s, mask):
    s = np.where(mask, s, -np.inf)
    m = np.max(np.where(mask, s, -1e30), axis=-1, keepdims=True)
    e = np.where(mask, np.exp(s - m), 0.0)
    return e / np.maximum(e.sum(-1, keepdims=True), 1e-30)


def _np_qkv_weights(layer):
    """The shell's fused q/k/v kernel and bias as (d, 3, h, dh) and (3, h, dh)."""
    mha, shape = layer.attention, (3, layer.num_heads, layer.key_dim)
    kernel = ops.convert_to_numpy(mha.qkv_kernel)  # (d, 3·h·dh): [q | k | v]
    bias = ops.convert_to_numpy(mha.qkv_bias)  # (3·h·dh,)
    return kernel.reshape((kernel.shape[0],) + shape), bias.reshape(shape)


def _np_project(layer, x):
    """numpy q, k, v (B, L, h, dh) with the layer's weights (normalised q, k) and scale (h,)."""
    kernel, bias = _np_qkv_weights(layer)  # (d, 3, h, dh), (3, h, dh)
    qkv = np.einsum("btd,dshk->btshk", x, kernel) + bias
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if layer.normalize:
        q = q / np.linalg.norm(q, axis=-1, keepdims=True)
        k = k / np.linalg.norm(k, axis=-1, keepdims=True)
        scale = np.exp(ops.convert_to_numpy(layer.log_scale))
    else:
        scale = np.full(layer.num_heads, 1 / np.sqrt(layer.key_dim))
    return q, k, v, scale


def _np_local(q, k, v, scale):
    """Dense causal attention per head: (B, L, h, dh)."""
    s = np.einsum("bihd,bjhd->bhij", q, k) * scale[None, :, None, None]
    mask = np.tril(np.ones((q.shape[1], q.shape[1]), bool))
    return np.einsum("bhij,bjhd->bihd", _np_softmax(s, mask), v)


def _np_memory(q, mem_k, mem_v, scale, top_k):
    """Top-k attention over a stored set mem_k/mem_v (B, S, h, dh), per row and head."""
    sims = np.einsum("bihd,bjhd->bhij", q, mem_k)  # (B, h, L, S)
    order = np.argsort(-sims, axis=-1, kind="stable")[..., :top_k]
    sel = np.take_along_axis(sims, order, axis=-1) * scale[None, :, None, None]
    w = _np_softmax(sel, np.ones_like(sel, bool))  # (B, h, L, k)
    vals = np.take_along_axis(
        mem_v.transpose(0, 2, 1, 3)[:, :, None], order[..., None], axis=3
    )  # (B, h, L, k, dh)
    return np.einsum("bhik,bhikd->bihd", w, vals)


def _np_output(layer, o):
    mha = layer.attention
    kernel = ops.convert_to_numpy(mha.output_kernel)  # (h·dh, d)
    kernel = kernel.reshape(layer.num_heads, layer.key_dim, -1)  # (h, dh, d)
    return np.einsum("bthk,hkd->btd", o, kernel) + ops.convert_to_numpy(mha.output_bias)


def _layer(**kw):
    cfg = dict(num_heads=H, key_dim=DH, memory_size=16, batch_size=B, top_k=3, chunk_size=4)
    cfg.update(kw)
    layer = KNNAugmentedAttention(**cfg)
    layer.build((B, L, D))
    return layer


def _x(seed):
    return np.random.default_rng(seed).normal(size=(B, L, D)).astype("float32")


@pytest.mark.backends
@pytest.mark.parametrize("normalize", [True, False])
def test_local_and_memory_branches_match_numpy(normalize):
    layer = _layer(normalize=normalize)
    x1, x2, x3 = _x(1), _x(2), _x(3)
    _, local1, mem1 = layer(x1, return_parts=True)
    q1, k1, v1, scale = _np_project(layer, x1)
    np.testing.assert_allclose(
        ops.convert_to_numpy(local1), _np_local(q1, k1, v1, scale), atol=1e-5
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(mem1), 0.0)  # empty memory: zeros
    layer(x2)
    y3, local3, mem3 = layer(x3, return_parts=True)
    q2, k2, v2, _ = _np_project(layer, x2)
    q3, k3, v3, _ = _np_project(layer, x3)
    mem_k, mem_v = np.concatenate([k1, k2], 1), np.concatenate([v1, v2], 1)  # 10 of 16 slots
    ref_mem = _np_memory(q3, mem_k, mem_v, scale, top_k=3)
    ref_local = _np_local(q3, k3, v3, scale)
    np.testing.assert_allclose(ops.convert_to_numpy(mem3), ref_mem, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(local3), ref_local, atol=1e-5)
    g = 1 / (1 + np.exp(-ops.convert_to_numpy(layer.gate_bias)))[:, None]
    ref_y = _np_output(layer, g * ref_mem + (1 - g) * ref_local)
    np.testing.assert_allclose(ops.convert_to_numpy(y3), ref_y, atol=1e-5)


@pytest.mark.backends
def test_gate_fully_local_equals_dense_causal_attention():
    layer = _layer(gate_bias_initializer=-1e4)  # g = sigmoid(-1e4) = 0
    layer(_x(1))  # fill the memory
    x2 = _x(2)
    y = layer(x2)
    q, k, v, scale = _np_project(layer, x2)
    np.testing.assert_allclose(
        ops.convert_to_numpy(y), _np_output(layer, _np_local(q, k, v, scale)), atol=1e-5
    )


def test_top_k_at_least_memory_is_full_attention_over_memory_and_keys_unit_norm():
    layer = _layer(memory_size=10, top_k=10)
    x1, x2, x3 = _x(1), _x(2), _x(3)
    layer(x1)
    layer(x2)  # memory exactly full (2 x 5 = 10)
    _, _, mem = layer(x3, return_parts=True)
    _, k1, v1, scale = _np_project(layer, x1)
    _, k2, v2, _ = _np_project(layer, x2)
    q3 = _np_project(layer, x3)[0]
    mk, mv = np.concatenate([k1, k2], 1), np.concatenate([v1, v2], 1)
    s = np.einsum("bihd,bjhd->bhij", q3, mk) * scale[None, :, None, None]
    dense = np.einsum("bhij,bjhd->bihd", _np_softmax(s, np.ones_like(s, bool)), mv)
    np.testing.assert_allclose(ops.convert_to_numpy(mem), dense, atol=1e-5)
    stored = ops.convert_to_numpy(layer.memory.keys)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=-1), 1.0, atol=1e-5)


def test_memory_persists_changes_output_and_clear_restores():
    layer = _layer()
    x1, x2 = _x(1), _x(2)
    fresh = ops.convert_to_numpy(layer(x2))
    layer.reset_memory()
    layer(x1)
    after = ops.convert_to_numpy(layer(x2))
    assert np.abs(after - fresh).max() > 1e-3  # the memory of x1 changes the output on x2
    layer.reset_memory()
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x2)), fresh, atol=1e-6)


@pytest.mark.backends
def test_causal_within_segment_with_memory():
    layer = _layer()
    layer(_x(1))
    layer.update_memory = False  # freeze the memory so both probes see the same one
    x = _x(2)
    x_changed = x.copy()
    x_changed[:, 3:] += 5.0
    a, b = ops.convert_to_numpy(layer(x)), ops.convert_to_numpy(layer(x_changed))
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert np.abs(a[:, 3:] - b[:, 3:]).max() > 1e-4


def test_recall_of_a_key_seen_in_an_earlier_batch():
    """With W_q = W_k a query that repeats an earlier token retrieves exactly that token's slot."""
    layer = _layer(top_k=1, memory_size=32)
    kernel, bias = (w.copy() for w in _np_qkv_weights(layer))
    kernel[:, 0] = kernel[:, 1]  # queries = keys
    bias[0] = bias[1]
    layer.attention.qkv_kernel.assign(kernel.reshape(kernel.shape[0], -1))
    layer.attention.qkv_bias.assign(bias.reshape(-1))
    x1 = _x(1)
    layer(x1)
    layer(_x(2))  # an unrelated batch in between
    layer.update_memory = False
    query = x1[:, ::-1]  # the earlier tokens, in another order
    _, _, v1, _ = _np_project(layer, x1)
    _, _, mem = layer(query, return_parts=True)
    np.testing.assert_allclose(ops.convert_to_numpy(mem), v1[:, ::-1], atol=1e-5)


@pytest.mark.backends
def test_no_gradient_into_memory_and_gradients_finite():
    layer = _layer()

    def loss(x1, x2):
        layer(x1)  # writes x1's keys/values into the memory
        _, _, mem = layer(x2, return_parts=True)
        return ops.sum(mem**2)

    g_x1, g_x2, *g_weights = gradients(loss, [_x(1), _x(2)], layer.trainable_weights)
    np.testing.assert_array_equal(g_x1, 0.0)  # memory contents are constants
    assert np.isfinite(g_x2).all() and np.abs(g_x2).max() > 0  # the queries do get one
    assert all(np.isfinite(g).all() for g in g_weights)
    names = [w.path for w in layer.trainable_weights]
    assert not any("knn_memory" in n for n in names)


@pytest.mark.backends
def test_padding_mask_keeps_padded_positions_out():
    layer = _layer()
    x = _x(1)
    pad = np.array([[True] * 5, [True, True, True, False, False]])
    layer(x, padding_mask=pad)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer.memory.size()), [5, 3])


def test_validation_and_config_round_trip():
    with pytest.raises(ValueError, match="top_k=0"):
        KNNAugmentedAttention(2, 4, memory_size=8, batch_size=1, top_k=0)
    with pytest.raises(ValueError, match="memory_layer_index=5"):
        build_memorizing_lm(10, 4, 1, num_layers=2, memory_layer_index=5, d_model=8)
    layer = _layer(normalize=False)
    clone = KNNAugmentedAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    block = MemorizingDecoderBlock(2, 4, 16, memory_size=8, batch_size=2)
    assert MemorizingDecoderBlock.from_config(block.get_config()).get_config() == block.get_config()
    assert default_memory_layer_index(12) == 8 and default_memory_layer_index(2) == 1


def test_segment_batches_layout():
    tokens = np.arange(41)
    x, y = segment_batches(tokens, batch_size=2, segment_length=4)
    # 2 streams of 20 tokens: row b of consecutive batches continues stream b
    np.testing.assert_array_equal(x[0], [0, 1, 2, 3])
    np.testing.assert_array_equal(x[1], [20, 21, 22, 23])
    np.testing.assert_array_equal(x[2], [4, 5, 6, 7])
    np.testing.assert_array_equal(y, x + 1)
    assert x.shape == (10, 4)


def test_lm_fit_reset_callback_and_keras_round_trip(tmp_path):
    model = build_memorizing_lm(
        vocab_size=30, segment_length=6, batch_size=2, memory_size=12, top_k=4,
        d_model=16, num_heads=2, num_layers=2,
    )  # fmt: skip
    x, y = segment_batches(np.arange(200) % 30, batch_size=2, segment_length=6)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(
        x[:8], y[:8], batch_size=2, epochs=2, shuffle=False, verbose=0,
        callbacks=[KNNMemoryReset()],
    )  # fmt: skip
    assert np.isfinite(history.history["loss"]).all()
    (memory,) = knn_memories(model)
    # after the reset at epoch 2 start, 4 batches x 6 tokens = 24 writes into 12 slots
    assert int(ops.convert_to_numpy(memory.pointer)) == 24 % 12
    np.testing.assert_array_equal(ops.convert_to_numpy(memory.size()), [12, 12])
    assert clear_memories(model) == 1
    first = model.predict(x[:2], batch_size=2, verbose=0)
    second = model.predict(x[:2], batch_size=2, verbose=0)
    assert np.abs(first - second).max() > 1e-5  # the first call filled the memory
    clear_memories(model)
    path = os.path.join(tmp_path, "memorizing.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x[:2], batch_size=2, verbose=0), first, atol=1e-5)
    np.testing.assert_allclose(loaded.predict(x[:2], batch_size=2, verbose=0), second, atol=1e-5)
