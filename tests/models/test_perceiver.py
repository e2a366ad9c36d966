"""Perceiver, Perceiver IO and Perceiver AR: linear cost in M, masking, causality, save/load."""

import re

import keras
import numpy as np
import pytest

from keras_transformers.attention import MultiHeadAttention
from keras_transformers.models.perceiver import (
    PrefixCausalMask,
    build_perceiver,
    build_perceiver_ar,
    build_perceiver_io,
)

SMALL = dict(num_latents=4, latent_dim=16, num_self_heads=2, num_self_attends_per_block=1)


def _tokens(batch, length, vocab=20, seed=0):
    return np.random.default_rng(seed).integers(1, vocab, size=(batch, length)).astype("int32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _attention_score_sizes(model, x):
    """``[(Lq, Lk, h·Lq·Lk)]`` of every attention layer, from one recorded forward pass."""
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, MultiHeadAttention)
    ]
    for layer in layers:
        layer.record_attention_scores = True
    try:
        model(x)
    finally:
        for layer in layers:
            layer.record_attention_scores = False
    sizes = []
    for layer in layers:
        _, h, lq, lk = layer.last_attention_scores.shape
        sizes.append((lq, lk, h * lq * lk))
        layer.last_attention_scores = None
    return sizes


def test_attention_cost_is_linear_in_input_length():
    totals = {}
    for m in (16, 32, 64):
        model = build_perceiver(
            m, num_classes=3, vocab_size=20, num_blocks=2, share_weights=False, **SMALL
        )
        sizes = _attention_score_sizes(model, _tokens(1, m))
        # 2 cross-attentions (N x M) + 2 latent self-attentions (N x N); never M x M.
        assert sorted((lq, lk) for lq, lk, _ in sizes) == sorted([(4, m)] * 2 + [(4, 4)] * 2)
        totals[m] = sum(s for _, _, s in sizes)
    # Affine in M: doubling M adds twice as much as the previous doubling.
    assert totals[64] - totals[32] == 2 * (totals[32] - totals[16])
    assert totals[32] - totals[16] == 2 * 16 * 4  # two 1-head cross-attentions, N = 4 more keys


def test_perceiver_io_and_ar_cost_linear_in_input_length():
    io_totals, ar_totals = {}, {}
    for m in (16, 32, 64):
        io = build_perceiver_io(m, output_dim=5, vocab_size=20, num_outputs=3, **SMALL)
        io_totals[m] = sum(s for _, _, s in _attention_score_sizes(io, _tokens(1, m)))
        ar = build_perceiver_ar(20, m, 4, d_model=16, num_heads=2, num_layers=1)
        sizes = _attention_score_sizes(ar, _tokens(1, m))
        assert all(lq == 4 for lq, _, _ in sizes)  # every query set is the N latents
        ar_totals[m] = sum(s for _, _, s in sizes)
    for totals in (io_totals, ar_totals):
        assert totals[64] - totals[32] == 2 * (totals[32] - totals[16]) > 0


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="reads TensorFlow's XLA HLO")
def test_compiled_graph_has_no_m_by_m_tensor():
    import tensorflow as tf

    m = 96  # no other size of the model is 96
    x = _tokens(2, m)

    def hlo(model):
        return tf.function(lambda t: model(t), jit_compile=True).experimental_get_compiler_ir(x)(
            stage="hlo"
        )

    square = re.compile(rf"\[[0-9,]*\b{m},{m}\b[0-9,]*\]")
    perceiver = build_perceiver(m, num_classes=3, vocab_size=20, num_blocks=2, **SMALL)
    assert not square.search(hlo(perceiver))
    ar = build_perceiver_ar(20, m, 4, d_model=16, num_heads=2, num_layers=1)
    assert not square.search(hlo(ar))
    # Control: a dense encoder over the same M does build (.., M, M) scores.
    from keras_transformers.models.encoder_classifier import build_encoder_classifier

    dense = build_encoder_classifier(20, 3, m, d_model=16, num_heads=2, num_layers=1)
    assert square.search(hlo(dense))


def _copy_weights(small, big):
    """Copy ``small``'s weights into ``big`` by path; position tables copy their first rows."""
    big_weights = {w.path: w for w in big.weights}
    for w in small.weights:
        value = _np(w)
        target = big_weights[w.path]
        if tuple(target.shape) != value.shape:
            full = _np(target).copy()
            full[: value.shape[0]] = value
            value = full
        target.assign(value)


def test_padding_tokens_do_not_change_outputs():
    kwargs = dict(num_classes=3, vocab_size=20, num_blocks=2, **SMALL)
    short = build_perceiver(8, **kwargs)
    long = build_perceiver(13, **kwargs)
    _copy_weights(short, long)
    x = _tokens(2, 8)
    x[1, 6:] = 0  # padding inside the short input too
    padded = np.concatenate([x, np.zeros((2, 5), "int32")], axis=1)
    np.testing.assert_allclose(_np(long(padded)), _np(short(x)), rtol=1e-5, atol=1e-5)


def test_masked_feature_inputs_ignore_padded_positions():
    model = build_perceiver(
        10, num_classes=3, input_dim=5, masked_inputs=True, num_blocks=2, **SMALL
    )
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 10, 5)).astype("float32")
    mask = np.ones((2, 10), bool)
    mask[:, 7:] = False
    garbage = features.copy()
    garbage[:, 7:] = rng.normal(size=(2, 3, 5)) * 100
    out = _np(model({"features": features, "padding_mask": mask}))
    out_garbage = _np(model({"features": garbage, "padding_mask": mask}))
    np.testing.assert_allclose(out, out_garbage, rtol=1e-5, atol=1e-5)
    # Unmasked, the same change does matter.
    full = np.ones((2, 10), bool)
    changed = _np(model({"features": garbage, "padding_mask": full}))
    assert not np.allclose(changed, _np(model({"features": features, "padding_mask": full})))


def test_weight_sharing_between_blocks():
    def params(blocks, share):
        model = build_perceiver(
            12, num_classes=3, input_dim=4, num_blocks=blocks, share_weights=share, **SMALL
        )
        return model.count_params()

    # Shared: block 0 has its own cross-attention, every later block reuses one more set.
    assert params(2, True) == params(3, True) == params(5, True)
    assert params(3, False) > params(2, False) > params(2, True)


def test_perceiver_ar_is_causal_and_latents_see_the_whole_prefix():
    m, n = 16, 6
    model = build_perceiver_ar(20, m, n, d_model=16, num_heads=2, num_layers=2)
    x = _tokens(2, m)
    base = _np(model(x))
    assert base.shape == (2, n, 20)
    first_latent = m - n  # absolute position of latent 0
    for t in (first_latent + 2, m - 1):
        changed = x.copy()
        changed[:, t] = (changed[:, t] % 19) + 1  # another non-padding token
        out = _np(model(changed))
        i = t - first_latent
        np.testing.assert_allclose(out[:, :i], base[:, :i], rtol=1e-5, atol=1e-5)
        assert np.abs(out[:, i] - base[:, i]).max() > 1e-4
    # A change at the very first prefix token reaches every latent position.
    changed = x.copy()
    changed[:, 0] = (changed[:, 0] % 19) + 1
    diff = np.abs(_np(model(changed)) - base).max(axis=-1)  # (B, N)
    assert (diff > 1e-5).all()


def test_prefix_causal_mask_values():
    padding = np.ones((1, 6), bool)
    padding[0, 1] = False
    mask = _np(PrefixCausalMask(2)(padding))[0]  # (N=2, M=6)
    expected = np.array([[1, 0, 1, 1, 1, 0], [1, 0, 1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(mask, expected)


def test_perceiver_io_output_shape_follows_query_array():
    x = _tokens(2, 12)
    per_token = build_perceiver_io(12, output_dim=20, vocab_size=20, **SMALL)
    assert per_token(x).shape == (2, 12, 20)
    other = build_perceiver_io(
        12, output_dim=3, vocab_size=20, num_outputs=5, query_dim=8, num_decoder_heads=2, **SMALL
    )
    assert other(x).shape == (2, 5, 3)
    assert other.get_layer("output_queries").array.shape == (5, 8)


def test_builder_errors():
    with pytest.raises(ValueError, match="exactly one"):
        build_perceiver(8, 4, 16, 3)
    with pytest.raises(ValueError, match="exactly one"):
        build_perceiver(8, 4, 16, 3, input_dim=2, vocab_size=5)
    with pytest.raises(ValueError, match="num_latents=0"):
        build_perceiver(8, 0, 16, 3, vocab_size=5)
    with pytest.raises(ValueError, match="num_self_heads=3"):
        build_perceiver(8, 4, 16, 3, vocab_size=5, num_self_heads=3)
    with pytest.raises(ValueError, match="num_latents=9"):
        build_perceiver_ar(20, 8, 9)
    with pytest.raises(ValueError, match="rope"):
        build_perceiver(8, 4, 16, 3, vocab_size=5, position="rope")


def test_fit_one_step_and_keras_round_trip(tmp_path):
    x = _tokens(4, 12)
    models = {
        "perceiver": (
            build_perceiver(12, num_classes=3, vocab_size=20, num_blocks=2, **SMALL),
            np.arange(4) % 3,
        ),
        "perceiver_io": (build_perceiver_io(12, output_dim=20, vocab_size=20, **SMALL), x),
        "perceiver_ar": (
            build_perceiver_ar(20, 12, 4, d_model=16, num_heads=2, num_layers=1),
            x[:, -4:],
        ),
    }
    for name, (model, y) in models.items():
        model.compile(
            "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True
        )
        before = [_np(w).copy() for w in model.trainable_weights]
        loss = model.fit(x, y, batch_size=4, epochs=1, verbose=0).history["loss"][0]
        assert np.isfinite(loss), name
        after = [_np(w) for w in model.trainable_weights]
        assert sum(not np.allclose(a, b) for a, b in zip(before, after)) > len(before) // 2
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), rtol=1e-5, atol=1e-5)
