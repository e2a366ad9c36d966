"""build_decoder_lm's checkpoint-family options (issue 15) against a plain numpy forward pass.

RMSNorm, bias-free projections, QK-norm, head_dim != d/h, grouped KV heads, tanh-GeGLU, embedding
scaling and norm, untied head, logit soft-cap and RoPE: the numpy model below reads the weights
from the model's part attributes and recomputes the logits in float64.
"""

import math

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.blocks import RMSNormalization

V, L, B = 31, 7, 2
IDS = np.random.default_rng(0).integers(0, V, size=(B, L)).astype("int32")

#: every option set away from its default
ALL_OPTIONS = dict(
    d_model=24,
    num_heads=4,
    num_key_value_heads=2,
    head_dim=10,
    num_layers=2,
    ff_dim=20,
    position={
        "name": "rope",
        "max_wavelength": 500.0,
        "scaling": {"type": "linear", "factor": 2.0},
    },
    activation="geglu_approximate",
    norm="rms",
    layer_norm_epsilon=1e-6,
    use_bias=False,
    qk_norm=True,
    scale_embeddings=True,
    embedding_norm=True,
    logit_soft_cap=3.0,
    tie_embeddings=False,
)


def np_rms(x, scale, eps):
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps) * scale


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def np_rope_half(x, base=500.0, factor=2.0):
    """x (L, h, dh): rotate dimension t with t + dh/2 by the angle position · base^(-2t/dh) / factor
    (the linear scaling of ALL_OPTIONS)."""
    length, dh = x.shape[0], x.shape[-1]
    inv = base ** (-np.arange(dh // 2) * 2.0 / dh) / factor
    ang = np.arange(length)[:, None] * inv[None, :]  # (L, dh/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x1, x2 = x[..., : dh // 2], x[..., dh // 2 :]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def np_causal_attention(q, k, v):
    """q (L, h, dh), k/v (L, h_kv, dh): grouped causal softmax attention -> (L, h, dh)."""
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(np.tril(np.ones(scores.shape[1:], bool)), scores, -np.inf)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", w, v)


def numpy_lm(model, ids, o):
    """The logits of ``model`` (built with options ``o``) recomputed in float64 numpy."""

    def w(variable):
        return np.asarray(keras.ops.convert_to_numpy(variable), np.float64)

    eps, d, h, h_kv, dh = (
        o["layer_norm_epsilon"],
        o["d_model"],
        o["num_heads"],
        o["num_key_value_heads"],
        o["head_dim"],
    )
    out = []
    for row in ids:
        x = w(model.token_embedding.embeddings)[row] * np.sqrt(d)  # (L, d)
        x = np_rms(x, w(model.embedding_norm.scale), eps)
        for block in model.transformer_layers:
            attn = block.self_attention
            hn = np_rms(x, w(block.self_attention_norm.scale), eps)
            qkv = hn @ w(attn.qkv_dense.kernel)
            q = qkv[:, : h * dh].reshape(L, h, dh)
            k = qkv[:, h * dh : (h + h_kv) * dh].reshape(L, h_kv, dh)
            v = qkv[:, (h + h_kv) * dh :].reshape(L, h_kv, dh)
            q = np_rope_half(np_rms(q, w(attn.query_norm.scale), eps))
            k = np_rope_half(np_rms(k, w(attn.key_norm.scale), eps))
            x = x + np_causal_attention(q, k, v).reshape(L, h * dh) @ w(attn.output_dense.kernel)
            hn = np_rms(x, w(block.feedforward_norm.scale), eps)
            gate, up = np.split(hn @ w(block.feedforward.inner.kernel), 2, axis=-1)
            x = x + (np_gelu_tanh(gate) * up) @ w(block.feedforward.outer.kernel)
        x = np_rms(x, w(model.final_norm.scale), eps)
        logits = x @ w(model.token_embedding.reverse_embeddings)  # (L, V)
        out.append(o["logit_soft_cap"] * np.tanh(logits / o["logit_soft_cap"]))
    return np.stack(out)


def randomize(model, seed=1):
    """Non-trivial weights (norm scales away from 1) so every part shows in the logits."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(
            rng.normal(0.0, 0.3, variable.shape).astype("float32")
            + (1.0 if variable.path.endswith("scale") else 0.0)
        )


@pytest.fixture(scope="module")
def all_options_lm():
    model = kt.models.build_decoder_lm(V, L, **ALL_OPTIONS)
    randomize(model)
    return model


def test_every_option_matches_numpy(all_options_lm):
    got = keras.ops.convert_to_numpy(all_options_lm(IDS))
    want = numpy_lm(all_options_lm, IDS, ALL_OPTIONS)
    assert got.shape == (B, L, V) and np.abs(got).max() < ALL_OPTIONS["logit_soft_cap"]
    np.testing.assert_allclose(got, want, atol=2e-4)


def test_parts_and_shapes(all_options_lm):
    m = all_options_lm
    block = m.transformer_layers[0]
    attn = block.self_attention
    assert isinstance(m.final_norm, RMSNormalization)
    assert isinstance(m.embedding_norm, RMSNormalization)
    assert isinstance(block.self_attention_norm, RMSNormalization)
    assert attn.qkv_dense.bias is None and attn.output_dense.bias is None
    assert block.feedforward.inner.bias is None and block.feedforward.outer.bias is None
    assert tuple(attn.qkv_dense.kernel.shape) == (24, (4 + 2 * 2) * 10)
    assert tuple(attn.output_dense.kernel.shape) == (4 * 10, 24)  # h·head_dim -> d_model
    assert tuple(attn.query_norm.scale.shape) == (10,)
    assert tuple(m.token_embedding.reverse_embeddings.shape) == (24, V)
    assert m.logit_soft_cap.cap == 3.0 and m.embedding_scale.scale == pytest.approx(24**0.5)


def test_options_round_trip_keras_file(all_options_lm, tmp_path):
    config = all_options_lm.get_config()
    for name, value in ALL_OPTIONS.items():
        assert config[name] == value, name
    path = str(tmp_path / "lm.keras")
    all_options_lm.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(all_options_lm)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(IDS)),
        keras.ops.convert_to_numpy(all_options_lm(IDS)),
        atol=1e-6,
    )


def test_cached_generation_uses_every_part(all_options_lm):
    """The KV-cache path (Generator) applies the embedding scale and norm and the soft-cap too."""
    generator = all_options_lm.generator(True, False)
    logits, _, _ = generator.call_with_cache(IDS, generator.empty_cache(B, L), 0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(logits),
        keras.ops.convert_to_numpy(all_options_lm(IDS)),
        atol=1e-5,
    )


def test_defaults_are_the_previous_architecture():
    m = kt.models.build_decoder_lm(V, L, d_model=16, num_heads=2, num_layers=1)
    block = m.transformer_layers[0]
    assert isinstance(m.final_norm, keras.layers.LayerNormalization)
    assert m.final_norm.epsilon == 1e-5 and m.embedding_norm is None
    assert m.embedding_scale is None and m.logit_soft_cap is None
    assert block.self_attention.qkv_dense.bias is not None
    assert block.feedforward.inner.bias is not None and block.self_attention.query_norm is None
    assert (
        isinstance(m.token_embedding, keras.layers.ReversibleEmbedding)
        and m.token_embedding.tie_weights
    )


def test_layer_norm_options_match_numpy():
    """norm="layer" with embedding_norm, a custom epsilon and the tanh GELU (GPT-2 / Bloom)."""
    m = kt.models.build_decoder_lm(
        V,
        L,
        d_model=8,
        num_heads=2,
        num_layers=1,
        position=None,
        embedding_norm=True,
        layer_norm_epsilon=1e-3,
        activation="gelu_approximate",
    )
    randomize(m, seed=2)

    def w(v):
        return np.asarray(keras.ops.convert_to_numpy(v), np.float64)

    def ln(x, layer):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-3) * w(layer.gamma) + w(layer.beta)

    block, x = m.transformer_layers[0], w(m.token_embedding.embeddings)[IDS[0]]
    x = ln(x, m.embedding_norm)
    attn = block.self_attention
    qkv = ln(x, block.self_attention_norm) @ w(attn.qkv_dense.kernel) + w(attn.qkv_dense.bias)
    q, k, v = (t.reshape(L, 2, 4) for t in np.split(qkv, 3, axis=-1))
    ctx = np_causal_attention(q, k, v).reshape(L, 8)
    x = x + ctx @ w(attn.output_dense.kernel) + w(attn.output_dense.bias)
    ff = block.feedforward
    hid = np_gelu_tanh(ln(x, block.feedforward_norm) @ w(ff.inner.kernel) + w(ff.inner.bias))
    x = x + hid @ w(ff.outer.kernel) + w(ff.outer.bias)
    want = ln(x, m.final_norm) @ w(m.token_embedding.embeddings).T
    np.testing.assert_allclose(keras.ops.convert_to_numpy(m(IDS[:1]))[0], want, atol=2e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(norm="batch"), "norm='batch'"),
        (dict(activation="gelu_tanh"), "activation='gelu_tanh'"),
        (dict(logit_soft_cap=0.0), "logit_soft_cap=0.0"),
        (dict(head_dim=0), "head_dim=0"),
        (dict(d_model=10, num_heads=4), "pass head_dim"),
        (dict(memory_length=4, batch_size=2, norm="rms"), "does not take norm"),
    ],
)
def test_bad_options_name_the_argument(kwargs, message):
    args = {**dict(d_model=16, num_heads=2, num_layers=1), **kwargs}
    with pytest.raises(ValueError, match=message):
        kt.models.build_decoder_lm(V, L, **args)


def test_bert_style_encoder_matches_numpy(tmp_path):
    """Post-norm encoder with segment embeddings, an embedding norm and BERT's epsilon."""
    enc = kt.models.build_text_encoder(
        V,
        L,
        d_model=8,
        num_heads=2,
        num_layers=1,
        ff_dim=12,
        num_segments=2,
        embedding_norm=True,
        norm_first=False,
        layer_norm_epsilon=1e-12,
        pooling=None,
        dropout=0.0,
    )
    randomize(enc, seed=3)
    ids = np.array([[5, 6, 7, 8, 9, 0, 0]], "int32")
    seg = np.array([[0, 0, 0, 1, 1, 0, 0]], "int32")
    got = keras.ops.convert_to_numpy(enc({"token_ids": ids, "segment_ids": seg}))[0]

    def w(v):
        return np.asarray(keras.ops.convert_to_numpy(v), np.float64)

    def ln(x, layer):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w(layer.gamma) + w(layer.beta)

    x = w(enc.token_embedding.embeddings)[ids[0]] + w(enc.position_embedding.weights[0])[:L]
    x = ln(x + w(enc.segment_embedding.embeddings)[seg[0]], enc.embedding_norm)
    block = enc.transformer_layers[0]
    attn, ff = block.self_attention, block.feedforward
    qkv = x @ w(attn.qkv_dense.kernel) + w(attn.qkv_dense.bias)
    q, k, v = (t.reshape(L, 2, 4) for t in np.split(qkv, 3, axis=-1))
    scores = np.einsum("qhd,khd->hqk", q, k) / 2.0 + np.where(ids[0] > 0, 0.0, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ctx = np.einsum("hqk,khd->qhd", p, v).reshape(L, 8)
    x = ln(
        x + ctx @ w(attn.output_dense.kernel) + w(attn.output_dense.bias), block.self_attention_norm
    )
    pre = x @ w(ff.inner.kernel) + w(ff.inner.bias)
    hid = 0.5 * pre * (1.0 + np.vectorize(math.erf)(pre / np.sqrt(2.0)))  # exact GELU
    x = ln(x + hid @ w(ff.outer.kernel) + w(ff.outer.bias), block.feedforward_norm)
    keep = ids[0] > 0  # padded queries are zeroed by the attention layer
    np.testing.assert_allclose(got[keep], x[keep], atol=2e-4)
    assert enc.final_norm is None and enc.pooling is None
    assert enc.get_config()["num_segments"] == 2
    path = str(tmp_path / "enc.keras")
    enc.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded({"token_ids": ids, "segment_ids": seg}))[0],
        got,
        atol=1e-6,
    )
