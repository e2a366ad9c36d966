"""Keras' own ``model.export(path, format="tf_saved_model")`` serves the same logits as the model
(decoder LM and classifier), also after ``model.quantize("int8")``. Run here on TensorFlow; on JAX
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
