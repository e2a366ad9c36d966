"""Keras' own ``model.export(path, format="tf_saved_model")`` serves the same logits as the model
(decoder LM and classifier), also after ``model.quantize("int8")`` and, with a static-length
``input_signature``, through the blocked attention engine. Run here on TensorFlow; on JAX
the same export works (jax2tf; the learned position table gathers its rows under the symbolic
length), checked by hand; PyTorch's SavedModel path in Keras needs ``torch_xla`` (not installed)."""

import keras
import numpy as np
import pytest

import keras_transformers as kt

tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize(
    "build",
    [
        lambda: kt.models.build_decoder_lm(
            vocab_size=40, max_length=12, d_model=16, num_heads=2, num_layers=1, ff_dim=32
        ),
        lambda: kt.models.build_encoder_classifier(
            vocab_size=40,
            num_classes=3,
            max_length=12,
            d_model=16,
            num_heads=2,
            num_layers=1,
            ff_dim=32,
        ),
    ],
    ids=["decoder_lm", "classifier"],
)
def test_saved_model_serves_the_same_logits(build, tmp_path):
    model = build()
    x = np.random.default_rng(0).integers(1, 40, size=(3, 12)).astype("int32")
    want = keras.ops.convert_to_numpy(model(x))
    path = str(tmp_path / "served")
    model.export(path, format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(path)
    got = served.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_a_static_long_length_exports_through_the_blocked_engine(position, tmp_path, monkeypatch):
    """With ``input_signature`` of a static length L = 2048 the export traces the blocked engine
    (its nested XLA tile functions on TensorFlow), and the SavedModel serves the eager logits.
    (The default signature has a dynamic length, which takes the dense path.)"""
    from keras_transformers.attention.full import FullAttention

    length = 2048
    model = kt.models.build_decoder_lm(
        vocab_size=40, max_length=length, d_model=16, num_heads=2, num_layers=1, ff_dim=32,
        position=position,
    )  # fmt: skip
    x = np.random.default_rng(0).integers(1, 40, size=(1, length)).astype("int32")
    want = keras.ops.convert_to_numpy(model(x))
    traced = []
    flash = FullAttention.flash
    monkeypatch.setattr(
        FullAttention, "flash", lambda self, *a: traced.append(1) or flash(self, *a)
    )
    path = str(tmp_path / "served")
    signature = [keras.InputSpec(shape=(None, length), dtype="int32")]
    model.export(path, format="tf_saved_model", verbose=False, input_signature=signature)
    assert traced  # the exported graph holds the engine
    served = tf.saved_model.load(path)
    got = served.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow
def test_an_int8_model_exports_and_serves_the_same_logits(tmp_path):
    model = kt.models.build_decoder_lm(
        vocab_size=40, max_length=12, d_model=16, num_heads=2, num_layers=1, ff_dim=32
    )
    model.quantize("int8")
    x = np.random.default_rng(0).integers(1, 40, size=(3, 12)).astype("int32")
    want = keras.ops.convert_to_numpy(model(x))
    path = str(tmp_path / "int8")
    model.export(path, format="tf_saved_model", verbose=False)
    served = tf.saved_model.load(path)
    np.testing.assert_allclose(served.serve(tf.constant(x)).numpy(), want, atol=1e-5)


JAX_EXPORT = """
import sys
import numpy as np
import keras
import keras_transformers as kt
import tensorflow as tf

model = kt.models.build_decoder_lm(
    vocab_size=40, max_length=12, d_model=16, num_heads=2, num_layers=1, ff_dim=32
)
x = np.random.default_rng(0).integers(1, 40, size=(3, 12)).astype("int32")
want = keras.ops.convert_to_numpy(model(x))
model.export(sys.argv[1], format="tf_saved_model", verbose=False)
served = tf.saved_model.load(sys.argv[1])
np.testing.assert_allclose(served.serve(tf.constant(x)).numpy(), want, atol=1e-5)
np.testing.assert_allclose(served.serve(tf.constant(x[:, :7])).numpy(), want[:, :7], atol=1e-5)
"""


@pytest.mark.slow
def test_a_jax_model_exports_with_a_symbolic_length(tmp_path):
    """On JAX, jax2tf traces a symbolic batch and length: the learned position table gathers its
    rows (no Python comparison with max_length), and shorter inputs are served too (causal)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", JAX_EXPORT, str(tmp_path / "jax_served")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
