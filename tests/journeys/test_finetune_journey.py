"""Fine-tuning journey, each step a fresh interpreter: train a tiny LM (1 epoch, 2 steps) ->
``--init-from <run>/best.keras --lora 2 --export DIR`` -> the loss is finite, less than 20 % of
the parameters train (printed by the run), only the adapters changed (the base checkpoint plus
the saved ``lora_weights.npz`` gives the tuned ``best.keras``, which Keras saves with the LoRA
kernels merged), and the exported SavedModel serves the tuned logits.
A checkpoint of another architecture stops with one line naming ``--init-from``.

TensorFlow backend (the SavedModel export); the flags themselves are backend-independent.
"""

import re
import sys

import pytest
from _trained_runs import check_ok, start, wait, write_user_files
from test_example_journeys import EXAMPLES, TINY, _python

TRAIN_LM = [sys.executable, str(EXAMPLES / "train_lm.py"), *TINY, "--seq-len", "16",
            "--sample-length", "0"]  # fmt: skip

SERVE = """
    import sys
    import keras_transformers
    import keras
    import numpy as np
    import tensorflow as tf
    from keras_transformers.models.lora import load_lora_weights

    tuned = keras.saving.load_model(sys.argv[1])  # Keras saves LoRA kernels merged
    x = (np.arange(32).reshape(2, 16) % 40 + 4).astype("int32")
    want = keras.ops.convert_to_numpy(tuned(x))
    # only the adapters changed: the base checkpoint plus lora_weights.npz is the tuned model
    base = keras.saving.load_model(sys.argv[2])
    load_lora_weights(base, sys.argv[3])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(base(x)), want, atol=1e-4)
    served = tf.saved_model.load(sys.argv[4])
    got = served.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    print("served", float(np.abs(got - want).max()))
"""


@pytest.mark.slow
def test_train_then_finetune_with_lora_then_serve(tmp_path):
    write_user_files(tmp_path)
    data = ["--data", str(tmp_path / "corpus")]  # a folder of text files
    base = tmp_path / "base"
    check_ok(wait({"base": start([*TRAIN_LM, *data, "--logdir", base], tmp_path)})["base"])

    tuned, served = tmp_path / "tuned", tmp_path / "served"
    finetune = [*TRAIN_LM, *data, "--logdir", tuned, "--init-from", base / "best.keras"]
    wrong = [*finetune[:-4], "--logdir", tmp_path / "wrong", "--init-from", base / "best.keras"]
    wrong[wrong.index("--d-model") + 1] = "32"
    procs = {
        "tuned": start([*finetune, "--lora", "2", "--export", served], tmp_path),
        "wrong": start(wrong, tmp_path),
    }
    results = wait(procs)
    out = check_ok(results["tuned"])["stdout"]
    share = re.search(r"LoRA rank 2: [\d,]+ of [\d,]+ parameters trainable \(([\d.]+) %\)", out)
    assert share and float(share.group(1)) < 20, out
    loss = re.search(r"loss: first epoch (\S+), last epoch (\S+)", out)
    assert loss and all(float(v) == float(v) and abs(float(v)) < 1e6 for v in loss.groups())
    assert (tuned / "lora_weights.npz").exists()
    assert results["wrong"]["returncode"] != 0
    assert "error: --init-from" in results["wrong"]["stderr"], results["wrong"]["stderr"][-2000:]

    serve = _python(
        SERVE, tuned / "best.keras", base / "best.keras", tuned / "lora_weights.npz", served
    )
    check = wait({"serve": start(serve, tmp_path)})
    assert "served" in check_ok(check["serve"])["stdout"]
