"""The blocked exact engine (ops/flash_attention.py) against a dense numpy reference.

Values and gradients (queries, keys, values and a learned bias table) for causal and
bidirectional attention, key padding, an arbitrary attention_mask, an ALiBi-like fixed bias, a
T5-like learned table (also declared constant beyond a distance), Shaw's key and value tables,
odd lengths (padded to the tile), a query offset, rows with no key (zeros, zero gradients) and
causal tiles above the diagonal that are never read.
"""

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.ops._flash_layout import diagonal_sums, toeplitz
from keras_transformers.ops.flash_attention import flash_attention

B, H, D = 2, 2, 8
CLIP = 3  # T5-like table: one learned scalar per (clipped distance, head)


def numpy_attention_and_grads(
    q, k, v, d_out, causal, offset, keep, bias_table, alibi, value_table=None, key_table=None
):
    """Dense softmax attention and its gradients, in numpy (the independent reference)."""
    lq, lk = q.shape[2], k.shape[2]
    rel = np.arange(lk)[None, :] - (np.arange(lq)[:, None] + offset)  # (Lq, Lk)
    labels = np.clip(rel, -CLIP, CLIP) + CLIP
    s = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(D)
    if bias_table is not None:
        s = s + np.transpose(bias_table[labels], (2, 0, 1))[None]  # (1, h, Lq, Lk)
    if key_table is not None:  # Shaw's a^K_ij = table[label(j - i)], scaled like the scores
        s = s + np.einsum("bhqd,qkd->bhqk", q, key_table[labels]) / np.sqrt(D)
    if alibi:
        s = s - np.abs(rel)[None, None] * np.array([0.5, 0.25])[None, :, None, None]
    mask = np.broadcast_to(keep, s.shape).copy()
    if causal:
        mask &= rel <= 0
    s = np.where(mask, s, -np.inf)
    m = s.max(-1, keepdims=True)
    e = np.where(mask, np.exp(s - np.where(np.isfinite(m), m, 0.0)), 0.0)
    p = e / np.maximum(e.sum(-1, keepdims=True), 1e-30)  # (B, h, Lq, Lk)
    out = p @ v
    dp = d_out @ np.swapaxes(v, -1, -2)
    if value_table is not None:  # Shaw's a^V_ij = table[label(j - i)]
        a_v = value_table[labels]  # (Lq, Lk, dv)
        out = out + np.einsum("bhqk,qkd->bhqd", p, a_v)
        dp = dp + np.einsum("bhqd,qkd->bhqk", d_out, a_v)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    grads = {
        "q": ds @ k / np.sqrt(D),
        "k": np.swapaxes(ds, -1, -2) @ q / np.sqrt(D),
        "v": np.swapaxes(p, -1, -2) @ d_out,
    }
    if bias_table is not None:
        d_table = np.zeros_like(bias_table)
        for head in range(H):
            np.add.at(d_table[:, head], labels, ds[:, head].sum(0))
        grads["table"] = d_table
    if key_table is not None:
        grads["q"] = grads["q"] + np.einsum("bhqk,qkd->bhqd", ds, key_table[labels]) / np.sqrt(D)
        d_keys = np.zeros_like(key_table)
        np.add.at(d_keys, labels, np.einsum("bhqk,bhqd->qkd", ds, q) / np.sqrt(D))
        grads["keys"] = d_keys
    if value_table is not None:
        d_values = np.zeros_like(value_table)
        np.add.at(d_values, labels, np.einsum("bhqk,bhqd->qkd", p, d_out))
        grads["values"] = d_values
    return out, grads


def table_bias(params, q_tile, k_tile, rel):
    """Elementwise in ``rel`` (any rank): ``(Tq, Tk) -> (h, Tq, Tk)``, ``(n,) -> (h, n)``."""
    (table,) = params
    labels = keras.ops.clip(rel, -CLIP, CLIP) + CLIP
    return keras.ops.moveaxis(keras.ops.take(table, labels, axis=0), -1, 0)


def alibi_bias(params, q_tile, k_tile, rel):
    slopes = keras.ops.convert_to_tensor(np.array([0.5, 0.25], "float32"))
    slopes = keras.ops.reshape(slopes, (H,) + (1,) * len(rel.shape))
    return -slopes * keras.ops.abs(keras.ops.cast(rel, "float32"))[None]  # (h, *rel.shape)


def value_labels(rel):
    return keras.ops.clip(rel, -CLIP, CLIP) + CLIP


def engine_and_grads(q, k, v, d_out, table, values=None, keys=None, **kwargs):
    """The engine's output and gradients on the current backend (numpy in, numpy out)."""
    backend = keras.backend.backend()
    to_numpy = keras.ops.convert_to_numpy
    extra = [
        (n, x) for n, x in (("table", table), ("keys", keys), ("values", values)) if x is not None
    ]
    inputs = [q, k, v] + [x for _, x in extra]
    names = ["q", "k", "v"] + [n for n, _ in extra]

    def run(q, k, v, *params):
        named = dict(zip(names[3:], params))
        if values is not None:
            kwargs.update(value_table=named["values"], value_labels=value_labels)
        if keys is not None:
            kwargs.update(key_table=named["keys"], key_labels=value_labels)
        bias = (named["table"],) if table is not None else ()
        return flash_attention(q, k, v, bias_params=bias, **kwargs)

    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def forward_backward(*xs):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                out = run(*xs)
                loss = tf.reduce_sum(out * d_out)
            return out, tape.gradient(loss, xs)

        out, grads = forward_backward(*[tf.constant(x) for x in inputs])
    elif backend == "jax":
        import jax

        def loss(*xs):
            out = run(*xs)
            return (out * d_out).sum(), out

        grad_fn = jax.grad(loss, argnums=tuple(range(len(inputs))), has_aux=True)
        grads, out = jax.jit(grad_fn)(*inputs)
    else:
        import torch

        xs = [torch.tensor(x, requires_grad=True) for x in inputs]
        out = run(*xs)
        grads = torch.autograd.grad((out * torch.tensor(d_out)).sum(), xs)
    return to_numpy(out), {n: to_numpy(g) for n, g in zip(names, grads)}


def check(
    lq, lk, causal=False, offset=0, padding=False, attention_mask=False, bias=None, block=16,
    relative=False, values=False, constant_beyond=False, keys=False,
):  # fmt: skip
    rng = np.random.default_rng(lq * 31 + lk)
    q = rng.normal(size=(B, H, lq, D)).astype("float32")
    k, v = (rng.normal(size=(B, H, lk, D)).astype("float32") for _ in range(2))
    d_out = rng.normal(size=(B, H, lq, D)).astype("float32")
    keep = np.ones((B, 1, lq, lk), bool)
    kwargs = {"causal": causal, "query_offset": offset, "block_size": block}
    if relative:
        kwargs["bias_relative"] = True  # the bias from each tile's Tq + Tk - 1 offsets
    if constant_beyond:  # the table clips |rel| at CLIP: one value per head on far tiles
        kwargs["constant_beyond"] = CLIP
    if padding:
        pm = rng.random((B, lk)) > 0.3
        pm[1] = False  # a sequence with no key at all: zero rows
        keep &= pm[:, None, None, :]
        kwargs["padding_mask"] = pm
    if attention_mask:
        am = rng.random((B, lq, lk)) > 0.4
        am[0, 2] = False  # one query with no key
        keep &= am[:, None]
        kwargs["attention_mask"] = am
    table = None
    if bias == "table":
        table = rng.normal(size=(2 * CLIP + 1, H)).astype("float32")
        kwargs.update(bias_fn=table_bias, bias_reads_qk=False)
    elif bias == "alibi":
        kwargs.update(bias_fn=alibi_bias, bias_reads_qk=False)
    value_table = rng.normal(size=(2 * CLIP + 1, D)).astype("float32") if values else None
    key_table = rng.normal(size=(2 * CLIP + 1, D)).astype("float32") if keys else None
    want, want_grads = numpy_attention_and_grads(
        q, k, v, d_out, causal, offset, keep, table, bias == "alibi", value_table, key_table
    )
    got, got_grads = engine_and_grads(q, k, v, d_out, table, value_table, key_table, **kwargs)
    np.testing.assert_allclose(got, want, atol=2e-5, err_msg="output")
    for name, grad in want_grads.items():
        np.testing.assert_allclose(got_grads[name], grad, atol=5e-5, err_msg=f"d{name}")
    empty = ~keep.any(-1)  # (B, 1, Lq)
    assert np.all(got[np.broadcast_to(empty[..., None], got.shape)] == 0.0)


@pytest.mark.backends
def test_causal_padding_and_table_bias_match_numpy_on_every_backend():
    check(35, 35, causal=True, padding=True, bias="table", relative=True, constant_beyond=True)


@pytest.mark.parametrize(
    "case",
    [
        dict(lq=13, lk=29, padding=True, attention_mask=True),
        dict(lq=11, lk=27, causal=True, offset=16, bias="alibi", block=8, relative=True),
        dict(lq=33, lk=33, causal=False, bias="table", attention_mask=True),
        dict(lq=21, lk=45, causal=False, bias="table", relative=True),
        dict(lq=27, lk=27, causal=True, padding=True, values=True, keys=True, block=8),
        dict(lq=37, lk=45, bias="table", relative=True, constant_beyond=True, block=8),
        dict(lq=37, lk=45, values=True, keys=True, constant_beyond=True, block=8),
    ],
    ids=[
        "masks-cross",
        "causal-offset-alibi",
        "table-mask-odd",
        "t5-diagonals",
        "shaw-values",
        "t5-far-tiles",
        "shaw-far-tiles",
    ],  # fmt: skip
)
def test_engine_matches_numpy(case):
    check(**case)


def test_causal_tiles_above_the_diagonal_are_never_read():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(1, 1, 32, D)).astype("float32") for _ in range(3))
    v[:, :, 24:] = np.nan  # the last key tile: only the last query tile may read it
    out = keras.ops.convert_to_numpy(flash_attention(q, k, v, causal=True, block_size=8))
    assert np.isfinite(out[:, :, :24]).all()


def tiled_and_dense(position, grads):
    """MultiHeadAttention(full, position) on the dense path, then on the tiled engine."""
    x = np.random.default_rng(1).normal(size=(1, 40, 16)).astype("float32")
    layer = kt.attention.MultiHeadAttention(
        num_heads=2, key_dim=8, position=position, causal=True, attention="full"
    )
    dense = output_and_weight_grads(layer, x, grads)
    core = layer.attention_core
    assert core.flash_min_pairs > 40 * 40
    core.flash_min_pairs, core.flash_block_size = 1, 16
    return output_and_weight_grads(layer, x, grads), dense, layer


def test_full_attention_takes_the_engine_for_long_sequences_with_positions():
    """MultiHeadAttention(full, t5 | shaw with value vectors): the tiled path equals the dense."""
    for position in ("t5", "shaw"):
        (tiled, _), (dense, _), _ = tiled_and_dense(position, grads=False)
        np.testing.assert_allclose(tiled, dense, atol=1e-5, err_msg=position)


@pytest.mark.slow
def test_shaw_values_on_the_engine_train_like_the_dense_path():
    """Gradients of every weight (Shaw's key and value tables included) through the layer."""
    (tiled, tiled_grads), (dense, dense_grads), layer = tiled_and_dense("shaw", grads=True)
    np.testing.assert_allclose(tiled, dense, atol=1e-5)
    for var, got, want in zip(layer.trainable_variables, tiled_grads, dense_grads):
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=var.path)


def output_and_weight_grads(layer, x, grads=True):
    """The layer's output and d(Σ y²)/d(weights) (TensorFlow; otherwise no gradients)."""
    if not grads or keras.backend.backend() != "tensorflow":
        return keras.ops.convert_to_numpy(layer(x)), []
    import tensorflow as tf

    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(y * y)
    grads = tape.gradient(loss, layer.trainable_variables)
    return y.numpy(), [tf.convert_to_tensor(g).numpy() for g in grads]


def test_toeplitz_lays_offsets_along_diagonals():
    x = np.arange(2 * 12, dtype="float32").reshape(2, 12)  # rows 5 + cols 8 - 1
    got = keras.ops.convert_to_numpy(toeplitz(x, 5, 8))
    r, c = np.arange(5)[:, None], np.arange(8)[None, :]
    np.testing.assert_array_equal(got, x[:, c - r + 4])
    tiles = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    sums = keras.ops.convert_to_numpy(diagonal_sums(tiles, 5, 8))  # the transpose of toeplitz
    want = np.stack([[np.trace(t, offset=d) for d in range(-4, 8)] for t in tiles])
    np.testing.assert_allclose(sums, want, atol=1e-5)


def test_bad_arguments_are_named():
    x = np.zeros((1, 1, 8, D), "float32")
    with pytest.raises(ValueError, match="query_offset"):
        flash_attention(x, x, x, query_offset=1.5)
    with pytest.raises(ValueError, match="block_size"):
        flash_attention(x, x, x, block_size=0)


def test_generation_prefill_takes_the_engine():
    """A long prompt's pre-fill (Lq = L queries, L_max cache slots) goes through the engine and
    gives the dense path's logits and cache; the cached one-token step stays dense."""
    keras.utils.set_random_seed(0)
    model = kt.models.build_decoder_lm(32, 40, d_model=16, num_heads=2, num_layers=1, ff_dim=32)
    generator = kt.generation.Generator(model, jit=False)
    core = next(
        layer for layer in model._flatten_layers()
        if isinstance(layer, kt.attention.full.FullAttention)
    )  # fmt: skip
    prompt = np.random.default_rng(0).integers(1, 32, size=(2, 29)).astype("int32")
    dense_logits, _, dense_cache = generator.call_with_cache(
        prompt, generator.empty_cache(2, 40), 0
    )
    calls = []
    core.flash_min_pairs, core.flash_block_size = 2 * 29, 8
    core.flash = lambda *args, _flash=core.flash: calls.append(args[0].shape) or _flash(*args)
    logits, _, cache = generator.call_with_cache(prompt, generator.empty_cache(2, 40), 0)
    assert calls == [(2, 29, 2, 8)]
    np.testing.assert_allclose(
        *(keras.ops.convert_to_numpy(x) for x in (logits, dense_logits)), atol=1e-5
    )
    np.testing.assert_allclose(
        *(keras.ops.convert_to_numpy(x) for x in (cache[0], dense_cache[0])), atol=1e-6
    )
    generator.call_with_cache(prompt[:, :1], cache, 29)  # the cached step: Lq·L_max = 40, dense
    assert len(calls) == 1
