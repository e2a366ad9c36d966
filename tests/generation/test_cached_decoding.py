"""Cached decoding for every core that supports it equals full recomputation.

Full attention keeps all keys/values, ``sliding_window`` a ring buffer of ``w + 1`` slots (checked
with ``w`` smaller than the generated length, so the ring wraps), ``linear``/``performer`` a
constant-size recurrent state. Logits of token-by-token cached decoding are compared with one
uncached forward pass of the same model over the whole sequence, and greedy tokens with a plain
numpy recomputation loop.
"""

import keras
import keras_hub
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.generation.generator import Generator

VOCAB, MAXLEN, WINDOW = 30, 16, 3

SLOW = pytest.mark.slow
CASES = [
    ({"name": "sliding_window", "window": WINDOW}, "rope", ()),
    ({"name": "sliding_window", "window": WINDOW}, "alibi", ()),
    ({"name": "sliding_window", "window": WINDOW}, "learned", SLOW),
    ({"name": "sliding_window", "window": WINDOW, "block_size": 2}, "sinusoidal", SLOW),
    ({"name": "linear", "chunk_size": 4}, "learned", ()),
    ({"name": "linear", "chunk_size": 4}, "rope", SLOW),
    ({"name": "performer", "num_features": 16, "seed": 3, "chunk_size": 4}, "rope", ()),
    ({"name": "performer", "num_features": 16, "seed": 3}, "sinusoidal", SLOW),
    ("full", "alibi", SLOW),
]


def _name(attention):
    return attention if isinstance(attention, str) else attention["name"]


def build(attention, position, layers=2, kv_heads=None):
    keras.utils.set_random_seed(1)
    return kt.models.build_decoder_lm(
        vocab_size=VOCAB,
        max_length=MAXLEN,
        d_model=16,
        num_heads=2,
        num_layers=layers,
        attention=attention,
        position=position,
        num_key_value_heads=kv_heads,
    )


def full_logits(model, ids):
    """Uncached logits of ``ids (B, l)``, right-padded to the model's length."""
    padded = np.zeros((ids.shape[0], MAXLEN), "int32")
    padded[:, : ids.shape[1]] = ids
    return keras.ops.convert_to_numpy(model(padded))[:, : ids.shape[1]]


def recompute_greedy(model, prompt, max_length):
    ids = np.array(prompt, "int32")
    while ids.shape[1] < max_length:
        nxt = full_logits(model, ids)[:, -1].argmax(-1).astype("int32")
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
    return ids


@pytest.mark.parametrize(
    "attention,position",
    [pytest.param(a, p, marks=m, id=f"{_name(a)}-{p}") for a, p, m in CASES],
)
def test_cached_logits_equal_recomputation(attention, position):
    model = build(attention, position, layers=1)
    gen = Generator(model, jit=False)
    assert gen.use_cache
    rng = np.random.default_rng(0)
    ids = rng.integers(1, VOCAB, size=(2, 10)).astype("int32")
    cache = gen.empty_cache(2, MAXLEN)
    logits, _, cache = gen.call_with_cache(ids[:, :4], cache, 0)  # pre-fill
    steps = [keras.ops.convert_to_numpy(logits)]
    for i in range(4, ids.shape[1]):  # one token at a time, past the window (the ring wraps)
        logits, _, cache = gen.call_with_cache(ids[:, i : i + 1], cache, i)
        steps.append(keras.ops.convert_to_numpy(logits))
    np.testing.assert_allclose(
        np.concatenate(steps, axis=1), full_logits(model, ids), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    "attention",
    [{"name": "sliding_window", "window": WINDOW}, {"name": "performer", "num_features": 16}],
    ids=["sliding_window", "performer"],
)
def test_cached_greedy_tokens_equal_recomputation(attention):
    model = build(attention, "rope", layers=1)
    prompt = np.array([[5, 9, 3], [7, 2, 11]], "int32")
    np.testing.assert_array_equal(model.generate(prompt, 11), recompute_greedy(model, prompt, 11))


def test_sliding_window_cache_is_a_ring_of_w_plus_1():
    model = build({"name": "sliding_window", "window": WINDOW}, "rope", layers=1, kv_heads=1)
    gen = Generator(model, jit=False)
    cache = gen.empty_cache(2, MAXLEN)
    assert [tuple(c.shape) for c in cache] == [(2, 2, WINDOW + 1, 1, 8)]
    mha = model.transformer_layers[0].self_attention
    assert tuple(mha.init_cache(2, 4096).shape) == (2, 2, WINDOW + 1, 1, 8)  # O(w), not O(L)
    _, _, cache = gen.call_with_cache(np.ones((2, 5), "int32"), cache, 0)
    shapes = set()
    for i in range(5, MAXLEN):
        _, _, cache = gen.call_with_cache(np.ones((2, 1), "int32"), cache, i)
        shapes.add(tuple(cache[0].shape))
    assert shapes == {(2, 2, WINDOW + 1, 1, 8)}


def test_ring_holds_the_last_w_plus_1_keys():
    """After positions 0..t the slot p mod (w + 1) holds the key of position p, t - w <= p <= t."""
    core = kt.attention.registry.get({"name": "sliding_window", "window": 2})
    ring = core.init_cache(1, 100, num_key_value_heads=1, key_dim=1)
    keys = np.arange(8, dtype="float32").reshape(1, 8, 1, 1)  # key of position p = p
    ring = core._write_ring(ring, keys[:, :5], -keys[:, :5], 0)  # pre-fill positions 0..4
    for p in range(5, 8):
        ring = core._write_ring(ring, keys[:, p : p + 1], -keys[:, p : p + 1], p)
    ring = keras.ops.convert_to_numpy(ring)[0, :, :, 0, 0]  # (2, 3)
    np.testing.assert_array_equal(ring[0], [6, 7, 5])  # slots 0, 1, 2 <- positions 6, 7, 5
    np.testing.assert_array_equal(ring[1], [-6, -7, -5])


@pytest.mark.parametrize("name", ["linear", "performer"])
def test_kernel_cache_is_constant_size_state(name):
    config = {"name": name, "num_features": 12} if name == "performer" else name
    model = build(config, "rope", layers=1)
    mha = model.transformer_layers[0].self_attention
    r = 12 if name == "performer" else 8
    assert tuple(mha.init_cache(3, 16).shape) == (3, 2, r, 9)
    assert tuple(mha.init_cache(3, 100000).shape) == (3, 2, r, 9)
    gen = Generator(model, jit=False)
    cache = gen.empty_cache(3, MAXLEN)
    _, _, cache = gen.call_with_cache(np.ones((3, 6), "int32"), cache, 0)
    _, _, cache = gen.call_with_cache(np.ones((3, 1), "int32"), cache, 6)
    assert tuple(cache[0].shape) == (3, 2, r, 9)


def test_state_step_matches_numpy_recurrence():
    """Linear attention state S = Σ φ(k) vᵀ, z = Σ φ(k): outputs follow the RNN form."""
    from keras_transformers.ops.linear_attention import kernel_attention_step, kernel_state

    rng = np.random.default_rng(0)
    phi = lambda x: np.where(x > 0, x + 1, np.exp(x))  # noqa: E731  elu + 1
    q, k, v = (rng.normal(size=(1, 1, 6, 4)).astype("float32") for _ in range(3))
    state = kernel_state(phi(k[:, :, :3]), v[:, :, :3])
    out, state = kernel_attention_step(phi(q[:, :, 3:]), phi(k[:, :, 3:]), v[:, :, 3:], state)
    fq, fk = phi(q[0, 0]), phi(k[0, 0])
    for t in range(3, 6):
        s = sum(np.outer(fk[j], v[0, 0, j]) for j in range(t + 1))
        z = sum(fk[j] for j in range(t + 1))
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(out)[0, 0, t - 3], fq[t] @ s / (fq[t] @ z), rtol=1e-5
        )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(state)[0, 0, :, :4], s, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(state)[0, 0, :, 4], z, rtol=1e-5)


def test_samplers_with_caches_are_reproducible():
    model = build({"name": "sliding_window", "window": WINDOW}, "rope", layers=1)
    prompt = [[5, 9, 3], [7, 2]]
    samplers = {
        "top_k": lambda: keras_hub.samplers.TopKSampler(k=4, seed=7),
        "top_p": lambda: keras_hub.samplers.TopPSampler(p=0.9, seed=7, temperature=0.8),
        "beam": lambda: keras_hub.samplers.BeamSampler(num_beams=3),
    }
    for name, make in samplers.items():
        first = model.generate(prompt, 10, sampler=make(), jit=False)
        assert first.shape == (2, 10) and (first >= 0).all() and (first < VOCAB).all(), name
        np.testing.assert_array_equal(first[0, :3], [5, 9, 3])
        np.testing.assert_array_equal(first[1, :2], [7, 2])
        if name == "top_k":  # the same seed gives the same tokens
            np.testing.assert_array_equal(
                model.generate(prompt, 10, sampler=make(), jit=False), first
            )


def test_beam_with_linear_state_and_uncached_fallback():
    model = build("linear", "learned", layers=1)
    cached = model.generate([[4, 5, 6]], 8, sampler="beam", jit=False)
    uncached = model.generate([[4, 5, 6]], 8, sampler="beam", use_cache=False, jit=False)
    np.testing.assert_array_equal(cached, uncached)
    # a core without a cache (LSH) falls back to recomputation automatically
    lsh = build({"name": "local", "block_size": 4}, "learned", 1)
    assert not lsh.generator(jit=False).use_cache
    out = lsh.generate([[4, 5, 6]], 8, jit=False)
    np.testing.assert_array_equal(out, recompute_greedy(lsh, np.array([[4, 5, 6]]), 8))
    with pytest.raises(ValueError, match="has no KV-cache decoding"):
        Generator(lsh, use_cache=True)


def test_generate_on_reloaded_keras_file(tmp_path):
    model = build({"name": "sliding_window", "window": WINDOW}, "alibi", layers=1)
    path = str(tmp_path / "lm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    assert type(loaded).__name__ == "DecoderLM"
    prompt = np.array([[3, 4, 5]], "int32")
    out = loaded.generate(prompt, 10, jit=False)
    np.testing.assert_array_equal(out, model.generate(prompt, 10, jit=False))
    np.testing.assert_array_equal(out, recompute_greedy(loaded, prompt, 10))


@pytest.mark.slow
def test_decoder_lm_fits_saves_and_generates(tmp_path):
    model = build("full", "learned", layers=1)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).integers(1, VOCAB, size=(4, MAXLEN)).astype("int32")
    loss = model.fit(x, x, epochs=2, verbose=0).history["loss"]
    assert np.isfinite(loss).all()
    path = str(tmp_path / "lm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    prompt = np.array([[3, 4, 5]], "int32")
    np.testing.assert_array_equal(loaded.generate(prompt, 12), model.generate(prompt, 12))
