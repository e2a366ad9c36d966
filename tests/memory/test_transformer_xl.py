"""Transformer-XL segment recurrence: dense numpy reference with an explicit memory, memory carried
across batches, stop-gradient, reset, document boundaries, range N·m, fit/save/load, and (slow) a
long-range copy task where evaluating with memory beats evaluating without."""

import math
import os

import keras
import numpy as np
import pytest
from memory_autodiff import gradients

from keras_transformers.data.streams import make_segment_streams
from keras_transformers.memory.segment import (
    MemoryReset,
    SegmentDocuments,
    TransformerXLBlock,
    reset_memory,
)
from keras_transformers.models.transformer_xl import build_transformer_xl_lm

B, L, M, H, DH = 2, 5, 3, 2, 4
D = H * DH
V = 20


def np_(x):
    return keras.ops.convert_to_numpy(x)


def np_layer_norm(x, gamma, beta, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def np_gelu(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def np_sinusoid(dist, dim):
    inv = 10000.0 ** (-2.0 * np.arange(dim // 2) / dim)
    out = np.zeros(np.shape(dist) + (dim,))
    out[..., 0::2] = np.sin(np.asarray(dist)[..., None] * inv)
    out[..., 1::2] = np.cos(np.asarray(dist)[..., None] * inv)
    return out


def np_xl_block(block, x, memory):
    """One pre-norm XL layer in numpy: queries x at positions m.., keys [memory; x]."""
    ln1 = [np_(w) for w in block.attention_norm.weights]
    ln2 = [np_(w) for w in block.feedforward_norm.weights]
    mha = block.attention  # the block's projections are its MultiHeadAttention's
    wq, wk, wv, wo = (
        np_(mha.query_kernel),
        np_(mha.key_kernel),
        np_(mha.value_kernel),
        np_(mha.output_kernel),
    )
    w_r = np_(block.position.position_kernel)  # (D, h, dh)
    u, v = np_(block.position.content_bias), np_(block.position.position_bias)
    ff = [np_(w) for w in block.feedforward_inner.weights + block.feedforward_outer.weights]
    m, length = memory.shape[1], x.shape[1]
    out = np.zeros_like(x, dtype="float64")
    for b in range(x.shape[0]):
        ctx = np.concatenate([memory[b], x[b]], 0)  # (m+L, d)
        n = np_layer_norm(ctx, *ln1)
        q = (n[m:] @ wq).reshape(length, H, DH)
        k = (n @ wk).reshape(m + length, H, DH)
        val = (n @ wv).reshape(m + length, H, DH)
        heads = []
        for a in range(H):
            s = np.zeros((length, m + length))
            for i in range(length):
                for j in range(m + length):
                    wr = np_sinusoid((i + m) - j, D) @ w_r[:, a]  # W_R r_{i-j}
                    s[i, j] = (q[i, a] + u[a]) @ k[j, a] + (q[i, a] + v[a]) @ wr
            s = s / np.sqrt(DH)
            s = np.where(np.arange(m + length)[None] <= np.arange(length)[:, None] + m, s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            heads.append(p @ val[:, a])
        y = x[b] + np.concatenate(heads, -1) @ wo
        hid = np_gelu(np_layer_norm(y, *ln2) @ ff[0] + ff[1])
        out[b] = y + hid @ ff[2] + ff[3]
    return out


def make_block(**kwargs):
    block = TransformerXLBlock(H, DH, 16, memory_length=M, batch_size=B, **kwargs)
    block.build((B, L, D))
    rng = np.random.default_rng(0)
    for w in block.position.weights:
        w.assign(rng.normal(size=w.shape).astype("float32") * 0.3)
    return block


@pytest.mark.backends
def test_block_matches_dense_reference_with_explicit_memory():
    block = make_block()
    rng = np.random.default_rng(1)
    memory = rng.normal(size=(B, M, D)).astype("float32")
    x = rng.normal(size=(B, L, D)).astype("float32")
    block.memory.assign(memory)
    block.memory_documents.assign(np.zeros((B, M), "int32"))
    y = np_(block(x, np.zeros((B, L), "int32")))
    np.testing.assert_allclose(y, np_xl_block(block, x, memory), atol=1e-4)
    # the new memory is the last m inputs: [memory; x][-m:]
    np.testing.assert_allclose(np_(block.memory), x[:, -M:], atol=1e-6)
    # empty memory (after a reset) is masked out: same as attending to the segment only
    block.reset_state()
    y0 = np_(block(x, np.zeros((B, L), "int32")))
    np.testing.assert_allclose(y0, np_xl_block(block, x, memory[:, :0]), atol=1e-4)


def test_score_shape_is_segment_by_memory_plus_segment():
    block = make_block()
    q = np.zeros((B, L, H, DH), "float32")
    k = np.zeros((B, M + L, H, DH), "float32")
    _, w = block.core(q, k, k, causal=True, query_offset=M, return_attention_scores=True)
    assert tuple(w.shape) == (B, H, L, M + L)
    # query i sees all m memory slots and current positions <= i
    np.testing.assert_array_equal(np_(w)[0, 0] > 0, np.tri(L, M + L, M, dtype=bool))


def lm(num_layers=1, segment=4, memory=4, **kwargs):
    return build_transformer_xl_lm(
        V, segment, memory, B, d_model=D, num_heads=H, num_layers=num_layers, **kwargs
    )


def tokens(seed, length=4):
    return np.random.default_rng(seed).integers(2, V, size=(B, length)).astype("int32")


def run(model, segments):
    reset_memory(model)
    out = None
    for s in segments:
        out = np_(model(s))
    return out


def test_memory_carries_across_batches_and_reset_works():
    model = lm()
    s1a, s1b, s2 = tokens(1), tokens(2), tokens(3)
    out_a, out_b = run(model, [s1a, s2]), run(model, [s1b, s2])
    assert np.abs(out_a - out_b).max() > 1e-4  # segment 2 depends on segment 1
    fresh = run(model, [s2])
    reset_memory(model)
    np.testing.assert_allclose(np_(model(s2)), fresh, atol=1e-6)
    # the callback resets too
    model(s1a)
    callback = MemoryReset()
    callback.set_model(model)
    callback.on_epoch_begin(0)
    np.testing.assert_allclose(np_(model(s2)), fresh, atol=1e-6)


def test_range_grows_with_depth_to_n_times_m():
    # L = m = 4: a token of segment 1 is 8+ positions before segment 3. One layer sees only m = 4
    # back; two layers see N·m = 8 back through the memory of the memory.
    s1, s2, s3 = tokens(1), tokens(2), tokens(3)
    s1b = s1.copy()
    s1b[:, 0] = (s1b[:, 0] + 1 - 2) % (V - 2) + 2
    for layers, changes in ((1, False), (2, True)):
        model = lm(num_layers=layers)
        diff = np.abs(run(model, [s1, s2, s3]) - run(model, [s1b, s2, s3])).max()
        assert (diff > 1e-5) == changes, (layers, diff)


@pytest.mark.backends
def test_no_gradient_into_previous_segment():
    block = make_block()
    rng = np.random.default_rng(2)
    memory = rng.normal(size=(B, M, D)).astype("float32")
    block.memory.assign(memory)
    block.memory_documents.assign(np.zeros((B, M), "int32"))
    x = rng.normal(size=(B, L, D)).astype("float32")
    docs = np.zeros((B, L), "int32")

    def loss(x):
        return keras.ops.sum(block(x, docs) ** 2)

    grad_x, grad_memory = gradients(loss, [x], [block.memory])
    np.testing.assert_array_equal(grad_memory, 0.0)  # SG(mem): no gradient into the memory
    assert np.abs(grad_x).max() > 0  # the current segment does get one
    # and the memory does change the output (it is used, only not differentiated)
    np.testing.assert_allclose(np_(block.memory), memory)  # gradients() left the state alone
    y = np_(block(x, docs))
    block.memory.assign(np.zeros((B, M, D), "float32"))
    assert np.abs(np_(block(x, docs)) - y).max() > 1e-4


def test_document_start_masks_earlier_documents():
    model = lm(document_start_id=1)
    s2 = tokens(3)
    s2[:, 0] = 1  # segment 2 starts a new document in every row
    out_a, out_b = run(model, [tokens(1), s2]), run(model, [tokens(2), s2])
    np.testing.assert_allclose(out_a, out_b, atol=1e-6)
    docs = SegmentDocuments(2, document_start_id=1)
    first = np_(docs(np.array([[5, 1, 4, 1], [1, 6, 7, 8]])))
    np.testing.assert_array_equal(first, [[0, 1, 1, 2], [1, 1, 1, 1]])
    np.testing.assert_array_equal(
        np_(docs(np.array([[5, 5, 1, 5], [5] * 4]))), [[2, 2, 3, 3], [1] * 4]
    )


def test_fit_on_streams_updates_memory_and_save_load(tmp_path):
    model = lm(num_layers=2)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = make_segment_streams(np.random.default_rng(0).integers(2, V, 200), B, 4)
    hist = model.fit(
        x[:8], y[:8], batch_size=B, shuffle=False, epochs=1, verbose=0, callbacks=[MemoryReset()]
    )
    assert np.isfinite(hist.history["loss"][0])
    block = model.get_layer("xl_block_0")
    assert np.abs(np_(block.memory)).max() > 0  # filled by the training steps
    assert np_(block.memory_documents).min() == 0  # every slot is valid
    path = os.path.join(tmp_path, "xl.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # memory variables are saved with the weights
    np.testing.assert_allclose(np_(loaded(x[16:18])), np_(model(x[16:18])), atol=1e-5)
    reset_memory(model)
    reset_memory(loaded)
    np.testing.assert_allclose(np_(loaded(x[16:18])), np_(model(x[16:18])), atol=1e-5)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="memory_length=0"):
        TransformerXLBlock(2, 4, 8, memory_length=0)
    with pytest.raises(ValueError, match="fixed batch size"):
        TransformerXLBlock(2, 4, 8, memory_length=2).build((None, 4, 8))
    with pytest.raises(ValueError, match="batch_size=0"):
        build_transformer_xl_lm(10, 4, 4, 0)


def periodic_stream(period, num_docs, doc_periods, vocab, seed):
    """Documents of ``doc_periods`` repetitions of ``period`` fresh random tokens."""
    rng = np.random.default_rng(seed)
    docs = [np.tile(rng.integers(2, vocab, period), doc_periods) for _ in range(num_docs)]
    return np.concatenate(docs)


@pytest.mark.slow
def test_memory_lowers_loss_on_long_range_copy():
    # each token repeats the token P = 12 positions earlier; L = 8 < P <= m = 16
    seg, mem, period, vocab, batch = 8, 16, 12, 16, 8
    train = periodic_stream(period, 400, 4, vocab, 0)
    test = periodic_stream(period, 60, 4, vocab, 1)
    model = build_transformer_xl_lm(
        vocab, seg, mem, batch, d_model=32, num_heads=2, num_layers=2, ff_dim=64
    )
    model.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    x, y = make_segment_streams(train, batch, seg)
    model.fit(x, y, batch_size=batch, shuffle=False, epochs=6, verbose=0, callbacks=[MemoryReset()])
    tx, ty = make_segment_streams(test, batch, seg)
    with_memory = model.evaluate(tx, ty, batch_size=batch, verbose=0, callbacks=[MemoryReset()])

    class ResetEveryBatch(keras.callbacks.Callback):
        def on_test_batch_begin(self, batch, logs=None):
            reset_memory(self.model)

    without = model.evaluate(tx, ty, batch_size=batch, verbose=0, callbacks=[ResetEveryBatch()])
    print(f"eval loss with memory {with_memory:.3f}, without memory {without:.3f}")
    assert with_memory < without - 0.3
