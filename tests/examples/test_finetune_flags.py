"""The fine-tuning flags of train_lm.py / train_classifier.py, in process (fast): --init-from,
--lora and --export parse and are checked; run.start_from loads a checkpoint's weights, refuses
another architecture in one line naming --init-from, and leaves only the LoRA adapters trainable.
The whole journey across processes is tests/journeys/test_finetune_journey.py (slow)."""

import argparse

import keras
import numpy as np
import pytest

import keras_transformers as kt
from keras_transformers.recipes import flags, run


def _lm(d_model=16):
    return kt.models.build_decoder_lm(
        vocab_size=30, max_length=8, d_model=d_model, num_heads=2, num_layers=1, ff_dim=32
    )


def test_the_flags_parse_for_lm_and_classifier_only(tmp_path, capsys):
    checkpoint = tmp_path / "best.keras"
    checkpoint.write_bytes(b"")
    for example in ("lm", "classifier"):
        args = flags.parse_args(
            example, ["--init-from", str(checkpoint), "--lora", "2", "--export", "out"]
        )
        assert (args.init_from, args.lora, args.export) == (str(checkpoint), 2, "out")
        assert flags.parse_args(example, []).lora is None
    with pytest.raises(SystemExit):
        flags.parse_args("lm", ["--init-from", str(tmp_path / "missing.keras")])
    assert "--init-from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        flags.parse_args("lm", ["--lora", "0"])
    assert "--lora" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        flags.parse_args("seq2seq", ["--lora", "2"])


def test_start_from_loads_the_weights_then_enables_lora(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    trained = _lm()
    x = np.arange(16).reshape(2, 8) % 30
    want = keras.ops.convert_to_numpy(trained(x))
    path = str(tmp_path / "best.keras")
    trained.save(path)

    keras.utils.set_random_seed(1)
    model = run.start_from(_lm(), argparse.Namespace(init_from=path, lora=2))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), want, atol=1e-6)
    assert model.trainable_weights
    assert all("lora" in w.path for w in model.trainable_weights)
    assert "LoRA rank 2:" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="--init-from .*do not fit the model"):
        run.start_from(_lm(d_model=8), argparse.Namespace(init_from=path, lora=None))
