"""Tests of the pattern helpers (`pattern_matrix`, `render_pattern`) and the docs image script."""

import importlib.util
import pathlib

import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.attention.patterns import (
    attention_weights,
    pattern_matrix,
    render_pattern,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_pattern_matrix_of_a_band_and_of_full():
    i = np.arange(12)
    band = np.abs(i[:, None] - i[None, :]) <= 2
    got = pattern_matrix("sliding_window", length=12, window=2)
    assert got.dtype == bool and got.shape == (12, 12)
    np.testing.assert_array_equal(got, band)
    np.testing.assert_array_equal(
        pattern_matrix({"name": "sliding_window", "window": 2}, length=12, causal=True),
        band & (i[None, :] <= i[:, None]),
    )
    assert pattern_matrix("full", length=6).all()
    assert pattern_matrix("full", length=6, causal=True).sum() == 21


def test_per_head_patterns_and_union():
    core = kt.attention.get("strided", stride=4, mode="multihead")
    heads = [pattern_matrix(core, length=16, num_heads=2, causal=True, head=h) for h in (0, 1)]
    union = pattern_matrix(core, length=16, num_heads=2, causal=True)
    merged = pattern_matrix("strided", length=16, causal=True, stride=4, mode="merged")
    np.testing.assert_array_equal(heads[0] | heads[1], union)
    np.testing.assert_array_equal(union, merged)
    assert not (heads[0] == heads[1]).all()
    np.testing.assert_array_equal(union, core.static_pattern(16, True, 2).any(0))


def test_weights_rows_sum_to_one():
    weights = attention_weights("local", length=10, num_heads=2, block_size=3)
    assert weights.shape == (2, 10, 10)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)


def test_render_pattern_writes_png(tmp_path):
    path = tmp_path / "fixed.png"
    out = render_pattern(
        "fixed",
        length=24,
        path=str(path),
        num_heads=2,
        causal="both",
        stride=4,
        summary_size=1,
        mode="multihead",
    )
    assert out == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = render_pattern("blockwise", length=12, num_blocks=3)
    assert len(fig.axes) == 1


def test_errors():
    core = kt.attention.get("local")
    with pytest.raises(ValueError, match="instance"):
        pattern_matrix(core, length=8, block_size=2)
    with pytest.raises(ValueError, match="length=0"):
        pattern_matrix("local", length=0)
    with pytest.raises(ValueError, match="head=3"):
        pattern_matrix("local", length=8, num_heads=2, head=3)


def test_docs_script_renders_images(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_pattern_images", ROOT / "docs" / "make_pattern_images.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["local", "blockwise", "--length", "16", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "local.png").exists() and (tmp_path / "blockwise.png").exists()
