"""examples/train_vit.py: tiny runs as subprocesses (built-in digits and a user image folder)."""

import math
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "train_vit.py"
TINY = [
    "--d-model", "16", "--heads", "2", "--layers", "1", "--batch-size", "8", "--epochs", "1",
    "--steps-per-epoch", "2", "--no-jit", "--verbose", "2", "--log-attention-every", "1",
    "--rollout-images", "2",
]  # fmt: skip
TIMEOUT_S = 300


def _env():
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _write_images(root):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("circles", "squares"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def _run(root, name, args):
    logdir = root / name
    cmd = [sys.executable, str(SCRIPT), *TINY, *args, "--logdir", str(logdir)]
    proc = subprocess.run(
        cmd, cwd=root, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S
    )
    return dict(logdir=logdir, returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("vit_digits"), "digits", [])


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vit_folder")
    _write_images(root / "images")
    args = [
        "--data", str(root / "images"), "--image-size", "8", "--patch-size", "4",
        "--attention", "local2d", "--pooling", "mean", "--position", "sinusoid2d", "--no-augment",
    ]  # fmt: skip
    return _run(root, "folder", args)


def _tags(event_dir):
    """``({scalar tag: [values]}, {image tags})`` of one TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(event_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    scalars, images = {}, set()
    for tag in accumulator.Tags()["tensors"]:
        events = accumulator.Tensors(tag)
        arrays = [tensor_util.make_ndarray(e.tensor_proto) for e in events]
        if all(a.dtype.kind == "f" and a.size == 1 for a in arrays):
            scalars[tag] = [float(a) for a in arrays]
        elif all(a.dtype.kind in "OS" and a.size == 3 for a in arrays):  # width, height, PNG
            images.add(tag)
    return scalars, images


def _check_run(run):
    assert run["returncode"] == 0, (
        f"stdout:\n{run['stdout'][-3000:]}\nstderr:\n{run['stderr'][-3000:]}"
    )
    logdir = run["logdir"]
    scalars, images = _tags(logdir / "train")
    assert math.isfinite(scalars["epoch_loss"][0])
    assert "attention_rollout" in images
    assert any(tag.startswith("attention/") for tag in images)  # per-layer, per-head maps
    assert "epoch_loss" in _tags(logdir / "validation")[0]
    assert (logdir / "best.keras").is_file() and (logdir / "last.keras").is_file()
    assert not (logdir / "backup").exists()  # BackupAndRestore cleans up after a finished run
    assert (logdir / "attention_rollout.png").is_file()
    assert "Test accuracy:" in run["stdout"]
    assert f"tensorboard --logdir {logdir}" in run["stdout"]


def test_vit_example_on_digits_trains_and_logs_rollout(digits_run):
    _check_run(digits_run)
    assert "built-in 8x8 digits" in digits_run["stdout"]


@pytest.mark.slow
def test_vit_example_on_image_folder_with_local2d(folder_run):
    _check_run(folder_run)
    assert "2 classes" in folder_run["stdout"]


def test_vit_example_help(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [SCRIPT.name, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--attention", "--position", "--patch-size", "--pooling", "--data", "--logdir"):
        assert flag in out


def test_vit_example_rejects_bad_sizes(capsys):
    from keras_transformers.recipes import vit

    with pytest.raises(SystemExit):
        vit.parse_args(["--d-model", "30", "--heads", "4"])
    assert "must be divisible by --heads" in capsys.readouterr().err


@pytest.mark.backends
def test_augmented_batches_run_on_every_backend(tmp_path):
    """The augmentation runs inside tf.data on any backend (a keras.Sequential of the
    preprocessing layers used the JAX backend's ops inside the tf.data graph and failed)."""
    from keras_transformers.recipes import vit

    args = vit.parse_args(["--batch-size", "4", "--epochs", "1", "--logdir", str(tmp_path)])
    assert args.augment
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    y = np.arange(8) % 2
    images, labels = next(iter(vit.augmented_batches(args, x, y, steps=2)))
    assert images.shape == (4, 8, 8, 1) and labels.shape == (4,)
    assert np.isfinite(images.numpy()).all() and not np.allclose(images.numpy(), 0.0)
