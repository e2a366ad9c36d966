"""BERT masked-LM pre-training: masking statistics, loss on masked positions, tied weights,
fine-tuning from the pre-trained encoder."""

import keras
import numpy as np
import pytest

from keras_transformers.models.bert import (
    MaskedLMHead,
    build_bert_pretrainer,
    default_max_selections,
    encoder_from_pretrainer,
    load_pretrained_encoder,
    mask_token_id_for,
    mask_tokens,
)
from keras_transformers.models.encoder_classifier import build_encoder_classifier

V, MASK, L = 40, 39, 12
SIZES = dict(d_model=16, num_heads=2, num_layers=1, dropout=0.0)


def _corpus(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, MASK, size=(n, L)).astype("int32")
    lengths = rng.integers(3, L + 1, size=n)
    ids[np.arange(L)[None, :] >= lengths[:, None]] = 0  # right padding
    ids[:, 0] = 1  # <bos>
    return ids


def _selected(batch):
    weights = batch["mask_weights"] > 0
    rows, slots = np.nonzero(weights)
    positions = batch["mask_positions"][rows, slots]
    return rows, positions, batch["mask_ids"][rows, slots], batch["token_ids"][rows, positions]


@pytest.mark.parametrize("engine", ["numpy", "keras_hub"])
def test_mask_rate_and_80_10_10(engine):
    ids = _corpus()
    batch = mask_tokens(ids, V, MASK, seed=1, engine=engine, max_selections=L)
    eligible = (ids > 2).sum()
    rows, positions, original, corrupted = _selected(batch)
    assert len(rows) / eligible == pytest.approx(0.15, abs=0.02)
    np.testing.assert_array_equal(original, ids[rows, positions])  # targets are the originals
    as_mask = np.mean(corrupted == MASK)
    kept = np.mean(corrupted == original)
    # a random replacement equal to the original counts as "kept" (1/V chance)
    assert as_mask == pytest.approx(0.8, abs=0.03)
    assert kept == pytest.approx(0.1, abs=0.03)
    assert 1 - as_mask - kept == pytest.approx(0.1, abs=0.03)
    # nothing outside the selected positions changes
    untouched = np.ones_like(ids, bool)
    untouched[rows, positions] = False
    np.testing.assert_array_equal(batch["token_ids"][untouched], ids[untouched])


def test_padding_and_specials_never_selected():
    ids = _corpus()
    for engine in ("numpy", "keras_hub"):
        batch = mask_tokens(ids, V, MASK, seed=2, engine=engine, max_selections=L)
        rows, positions, original, _ = _selected(batch)
        assert np.all(ids[rows, positions] > 2)  # no <pad>, <bos>, <eos>
        np.testing.assert_array_equal(batch["token_ids"][ids == 0], 0)  # padding stays padding


def test_numpy_engine_counts_and_ordinary_random_ids():
    ids = _corpus(500)
    batch = mask_tokens(ids, V, MASK, seed=3, max_selections=L)
    eligible = (ids > 2).sum(1)
    counts = batch["mask_weights"].sum(1)
    assert np.all((counts == np.floor(0.15 * eligible)) | (counts == np.ceil(0.15 * eligible)))
    _, _, original, corrupted = _selected(batch)
    replaced = corrupted[(corrupted != MASK) & (corrupted != original)]
    assert replaced.size and replaced.min() >= 4 and np.all(replaced != MASK)
    # seeded: the same seed gives the same masks, another seed others
    again = mask_tokens(ids, V, MASK, seed=3, max_selections=L)
    np.testing.assert_array_equal(again["token_ids"], batch["token_ids"])
    other = mask_tokens(ids, V, MASK, seed=4, max_selections=L)
    assert not np.array_equal(other["mask_positions"], batch["mask_positions"])


def test_mask_argument_errors():
    ids = _corpus(4)
    with pytest.raises(ValueError, match="mask_token_id=40"):
        mask_tokens(ids, V, 40)
    with pytest.raises(ValueError, match="selection_rate=0"):
        mask_tokens(ids, V, MASK, selection_rate=0)
    with pytest.raises(ValueError, match="engine='torch'"):
        mask_tokens(ids, V, MASK, engine="torch")
    assert mask_token_id_for(260) == (261, 260)
    assert default_max_selections(128) == 24


def _model():
    return build_bert_pretrainer(V, L, max_selections=4, **SIZES)


def test_tied_weights_are_shared():
    model = _model()
    table = model.get_layer("token_embedding").embeddings
    vocab_sized = [w for w in model.weights if V in tuple(w.shape)]
    assert [w.path for w in vocab_sized] == [table.path, "mlm_head/output_bias"]
    batch = mask_tokens(_corpus(4), V, MASK, seed=0, max_selections=4)
    x = {"token_ids": batch["token_ids"], "mask_positions": batch["mask_positions"]}
    before = keras.ops.convert_to_numpy(model(x))
    # logits = h·Eᵀ + c: changing row j of the embedding changes the logits of token j
    new = keras.ops.convert_to_numpy(table).copy()
    new[7] += 1.0
    table.assign(new)
    after = keras.ops.convert_to_numpy(model(x))
    assert not np.allclose(after[..., 7], before[..., 7])
    # the head owns no (V, d) matrix: its only vocabulary-sized weight is the bias
    head = model.get_layer("mlm_head")
    assert [tuple(w.shape) for w in head.weights if V in tuple(w.shape)] == [(V,)]


def test_head_matches_numpy_reference():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(2, 5, 8)).astype("float32")
    table = rng.normal(size=(V, 8)).astype("float32")
    positions = np.array([[0, 3], [4, 4]], "int32")
    head = MaskedLMHead(V)
    logits = keras.ops.convert_to_numpy(head(hidden, table, positions))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in head.dense.weights)
    gamma, beta = (keras.ops.convert_to_numpy(w) for w in head.norm.weights)
    picked = hidden[np.arange(2)[:, None], positions]  # (2, 2, 8)
    h = picked @ kernel + bias
    h = keras.ops.convert_to_numpy(keras.activations.gelu(h))
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5) * gamma + beta
    expected = h @ table.T + keras.ops.convert_to_numpy(head.output_bias)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_loss_only_on_masked_positions():
    model = _model()
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batch = mask_tokens(_corpus(16), V, MASK, seed=0, max_selections=4)
    x = {"token_ids": batch["token_ids"], "mask_positions": batch["mask_positions"]}
    weights = batch["mask_weights"]
    assert 0 < weights.sum() < weights.size  # some unused slots
    loss = model.evaluate(x, batch["mask_ids"], sample_weight=weights, verbose=0)
    logits = keras.ops.convert_to_numpy(model(x)).astype("float64")
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_p, batch["mask_ids"][..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, (ce * weights).sum() / weights.size, rtol=1e-4)
    # the labels of unused slots do not matter
    other = batch["mask_ids"].copy()
    other[weights == 0] = 5
    assert model.evaluate(x, other, sample_weight=weights, verbose=0) == pytest.approx(loss)
    # the reduction the example uses: the mean over the selected tokens only
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        )
    )
    mean = model.evaluate(x, batch["mask_ids"], sample_weight=weights, verbose=0)
    np.testing.assert_allclose(mean, (ce * weights).sum() / weights.sum(), rtol=1e-4)


def test_selection_rate_sets_prediction_slots():
    batch = mask_tokens(_corpus(8), V, MASK, selection_rate=0.3, seed=0)
    model = build_bert_pretrainer(V, L, selection_rate=0.3, **SIZES)
    assert batch["mask_positions"].shape[1] == default_max_selections(L, 0.3) == 5
    assert model.input["mask_positions"].shape[1] == 5
    logits = model({"token_ids": batch["token_ids"], "mask_positions": batch["mask_positions"]})
    assert tuple(logits.shape) == (8, 5, V)


def test_fit_and_round_trip_keep_the_tie(tmp_path):
    model = _model()
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    batch = mask_tokens(_corpus(64), V, MASK, seed=0, max_selections=4)
    x = {"token_ids": batch["token_ids"], "mask_positions": batch["mask_positions"]}
    table = model.get_layer("token_embedding").embeddings
    before = keras.ops.convert_to_numpy(table).copy()
    model.fit(x, batch["mask_ids"], sample_weight=batch["mask_weights"], epochs=1, verbose=0)
    after = keras.ops.convert_to_numpy(table)
    # id 2 (<eos>) never occurs in the inputs: its embedding row is trained only through the
    # tied output projection
    assert not np.any(x["token_ids"] == 2)
    assert not np.allclose(after[2], before[2])
    path = str(tmp_path / "bert.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5
    )
    assert len(loaded.weights) == len(model.weights)  # no untied copy appeared
    table = loaded.get_layer("token_embedding").embeddings
    table.assign(keras.ops.zeros_like(table))
    logits = keras.ops.convert_to_numpy(loaded(x))
    bias = keras.ops.convert_to_numpy(loaded.get_layer("mlm_head").output_bias)
    np.testing.assert_allclose(logits, np.broadcast_to(bias, logits.shape), atol=1e-6)


def test_fine_tune_model_starts_from_pretrained_encoder(tmp_path):
    pretrainer = _model()
    path = str(tmp_path / "pre.keras")
    pretrainer.save(path)
    classifier = build_encoder_classifier(V, 3, L, **SIZES)
    copied = load_pretrained_encoder(classifier, path)
    assert copied == ["token_embedding", "position_embedding", "encoder_block_0", "final_norm"]
    encoder = classifier.get_layer("text_encoder")
    for name in copied:
        for mine, theirs in zip(
            encoder.get_layer(name).weights, pretrainer.get_layer(name).weights
        ):
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(mine), keras.ops.convert_to_numpy(theirs)
            )
    ids = _corpus(4)
    shared = encoder_from_pretrainer(pretrainer)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(shared(ids)),
        keras.ops.convert_to_numpy(encoder(ids)),
        rtol=1e-5,
        atol=1e-5,
    )
    assert shared.get_layer("token_embedding") is pretrainer.get_layer("token_embedding")
    with pytest.raises(ValueError, match="weight shapes"):
        load_pretrained_encoder(build_encoder_classifier(V + 1, 3, L, **SIZES), pretrainer)
