"""Keras' own ``model.quantize("int8")`` reaches every projection of the attention shell and the
feed-forward; the int8 logits stay close to float32."""

import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.models.lora import projection_layers

pytestmark = pytest.mark.backends


def _relative_error(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _float_projection_kernels(model):
    layers = projection_layers(model)
    assert layers, "the model has no projection"
    return [
        layer.path
        for layer in layers
        for w in layer.weights
        if w.path.endswith("/kernel") and "float" in str(w.dtype)
    ]


@pytest.mark.parametrize(
    "build",
    [
        lambda: kt.models.build_decoder_lm(
            vocab_size=50, max_length=16, d_model=32, num_heads=4, num_layers=2, ff_dim=64
        ),
        lambda: kt.models.build_encoder_classifier(
            vocab_size=50,
            num_classes=3,
            max_length=16,
            d_model=32,
            num_heads=4,
            num_layers=2,
            ff_dim=64,
        ),
    ],
    ids=["decoder_lm", "classifier"],
)
def test_int8_quantizes_every_projection_and_keeps_the_logits(build):
    model = build()
    x = np.random.default_rng(0).integers(1, 50, size=(4, 16))
    want = np.asarray(model.predict(x, verbose=0), "float32")
    assert _float_projection_kernels(model)  # float before
    model.quantize("int8")
    assert _float_projection_kernels(model) == []
    # the token embedding (and the tied head that reads it) is int8 too
    embedding = getattr(model, "backbone", model).token_embedding
    assert str(embedding.embeddings.dtype) == "int8"
    got = np.asarray(model.predict(x, verbose=0), "float32")
    assert _relative_error(got, want) < 0.05


def test_every_shell_projection_is_a_keras_layer():
    mha = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4)
    x = np.random.default_rng(1).normal(size=(2, 5, 8)).astype("float32")
    mha(x)
    assert sorted(mha.projections()) == ["output", "qkv"]
    assert mha.qkv_dense.kernel.shape == (8, 24)  # one fused q, k, v matmul
    cross = kt.attention.MultiHeadAttention(num_heads=2, key_dim=4)
    cross(x, value=x[:, :3])
    assert sorted(cross.projections()) == ["kv", "output", "query"]
    for dense in cross.projections().values():
        dense.quantize("int8")
    assert all(d.kernel.dtype == "int8" for d in cross.projections().values())
    assert cross(x, value=x[:, :3]).shape == (2, 5, 8)


LOAD_QUANTIZED = """
import sys
import numpy as np
import keras_transformers
import keras

model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], np.asarray(model.predict(x, verbose=0), "float32"))
kernels = [w for layer in model.transformer_layers for w in layer.weights if w.path.endswith("/kernel")]
assert kernels and all(str(w.dtype) == "int8" for w in kernels), [(w.path, w.dtype) for w in kernels]
assert str(model.token_embedding.embeddings.dtype) == "int8"
"""


def test_an_int8_model_saves_and_loads_in_a_fresh_process(tmp_path):
    """The backbone records which layers ``quantize`` changed, so ``load_model`` rebuilds them
    quantized and the int8 weights load into them (same logits, int8 kernels)."""
    import keras

    if keras.backend.backend() == "jax":
        # CI time: a fresh JAX process re-compiles the model (~20 s on 2 cores); the reload is
        # backend-neutral Keras code, checked here on TensorFlow and PyTorch, and int8 on JAX
        # is checked in-process above.
        pytest.skip("fresh-process int8 reload runs on TensorFlow and PyTorch")
    import os
    import subprocess
    import sys

    import keras

    model = kt.models.build_decoder_lm(
        vocab_size=50, max_length=16, d_model=32, num_heads=4, num_layers=2, ff_dim=64
    )
    model.quantize("int8")
    x = np.random.default_rng(0).integers(1, 50, size=(4, 16))
    want = np.asarray(model.predict(x, verbose=0), "float32")
    path, inputs, out = tmp_path / "int8.keras", tmp_path / "x.npy", tmp_path / "y.npy"
    model.save(path)
    np.save(inputs, x)
    env = {**os.environ, "KERAS_BACKEND": keras.backend.backend()}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_QUANTIZED, str(path), str(inputs), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(out), want, rtol=1e-5, atol=1e-5)


def test_compressive_content_attention_asks_the_projection_for_its_kernel():
    """The Compressive Transformer's reconstruction loss attends with the block's projections
    frozen; it reads the kernel the layer applies (``P(I) - P(0)``), so int8 and LoRA reach it.
    Checked against numpy: float kernel, kernel + (alpha/r)·A·B, int8 kernel / scale."""
    import keras

    from keras_transformers.memory.compressive import CompressiveTransformerBlock

    frozen = CompressiveTransformerBlock._frozen_kernel
    rng = np.random.default_rng(0)
    dense = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 6), name="query")
    dense.build((None, None, 4))
    dense.kernel.assign(rng.normal(size=(4, 6)))
    w = keras.ops.convert_to_numpy(dense.kernel)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(frozen(dense)), w, atol=1e-6)

    dense.enable_lora(2)
    dense.lora_kernel_b.assign(rng.normal(size=(2, 6)))
    a, b = (keras.ops.convert_to_numpy(t) for t in (dense.lora_kernel_a, dense.lora_kernel_b))
    want = w + (dense.lora_alpha / 2) * a @ b
    np.testing.assert_allclose(keras.ops.convert_to_numpy(frozen(dense)), want, atol=1e-5)

    plain = keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 6))
    plain.build((None, None, 4))
    plain.kernel.assign(w)
    plain.quantize("int8")
    q = keras.ops.convert_to_numpy(plain._kernel).astype("float32")
    scale = keras.ops.convert_to_numpy(plain.kernel_scale).reshape(1, -1)  # per output column
    np.testing.assert_allclose(keras.ops.convert_to_numpy(frozen(plain)), q / scale, rtol=1e-5)
    assert np.abs(q / scale - w).max() < 0.05 * np.abs(w).max()
