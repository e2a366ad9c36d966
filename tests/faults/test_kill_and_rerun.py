"""A run killed mid-epoch (SIGKILL, real subprocesses) resumes bit-identical, dropout included,
with ``best.keras`` carried over; a finished folder, other flags and damaged backup files are
refused with one line before anything is written.

Stage 1 runs an uninterrupted and a killed run in parallel; stage 2 resumes the killed run while
the refusals run next to it.
"""

import os
import shutil
import signal

import keras
import numpy as np
import pytest
from faults_helpers import one_line_error, run_all, start

import keras_transformers  # noqa: F401  (registers the layers for load_model)

ARGS = [
    "--d-model",
    "16",
    "--heads",
    "2",
    "--layers",
    "1",
    "--seq-len",
    "24",
    "--batch-size",
    "8",
    "--epochs",
    "3",
    "--steps-per-epoch",
    "6",
    "--no-jit",
    "--verbose",
    "0",
    "--seed",
    "3",
    "--lr",
    "3e-2",
]  # fmt: skip  (default --dropout 0.2: the dropout RNG must resume too)


def make_data(tmp_path):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma"]
    lines = ["text,label"]
    for i in range(120):
        label = i % 2
        pool = words[:3] if label else words[3:]
        lines.append(" ".join(rng.choice(pool, size=6)) + f",{label}")
    path = tmp_path / "data.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def snapshot(folder):
    """``{relative path: bytes}`` of every file under ``folder``."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                files[os.path.relpath(path, folder)] = handle.read()
    return files


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    data = make_data(tmp)

    def command(logdir, *extra):
        return [*ARGS, "--data", str(data), "--logdir", str(tmp / logdir), *extra]

    script = "train_classifier.py"
    results = run_all(
        {
            "reference": start(tmp, script, command("reference")),
            "killed": start(tmp, script, command("resumed"), kill_at="1,3"),
        }
    )
    # Copies of the interrupted folder for the refusals (taken before it resumes).
    for name in ("other_flags", "truncated_weights", "empty_metadata"):
        shutil.copytree(tmp / "resumed", tmp / name)
    weights = tmp / "truncated_weights" / "backup" / "latest.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (tmp / "empty_metadata" / "backup" / "training_metadata.json").write_text("")
    before = {
        name: snapshot(tmp / name)
        for name in ("reference", "other_flags", "truncated_weights", "empty_metadata")
    }
    results.update(
        run_all(
            {
                "resumed": start(tmp, script, command("resumed")),
                "rerun": start(tmp, script, command("reference")),
                "other_flags": start(tmp, script, command("other_flags", "--d-model", "32")),
                "truncated_weights": start(tmp, script, command("truncated_weights")),
                "empty_metadata": start(tmp, script, command("empty_metadata")),
            }
        )
    )
    return tmp, results, before


def weights(path):
    model = keras.saving.load_model(path)
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_sigkill_mid_epoch_then_resume_is_bit_identical_with_dropout(runs):
    tmp, results, _ = runs
    assert results["reference"].returncode == 0, results["reference"].stderr[-3000:]
    killed = results["killed"]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "killing myself" in killed.stdout
    resumed = results["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "starting epoch 0" not in resumed.stdout  # resumed at the saved epoch (1)
    assert "starting epoch 1" in resumed.stdout
    assert not (tmp / "resumed" / "backup").exists()
    for name in ("last.keras", "best.keras"):  # best.keras: the best epoch across the restart
        for a, b in zip(weights(tmp / "reference" / name), weights(tmp / "resumed" / name)):
            np.testing.assert_array_equal(a, b)


def test_rerun_of_a_finished_folder_is_refused_and_changes_nothing(runs):
    tmp, results, before = runs
    one_line_error(results["rerun"], "finished run", "--overwrite")
    assert snapshot(tmp / "reference") == before["reference"]


def test_resume_with_other_flags_names_the_flag_and_changes_nothing(runs):
    tmp, results, before = runs
    one_line_error(results["other_flags"], "--d-model", "32", "16")
    assert snapshot(tmp / "other_flags") == before["other_flags"]


@pytest.mark.parametrize(
    "case, file",
    [
        ("truncated_weights", "latest.weights.h5"),
        ("empty_metadata", "training_metadata.json"),
    ],
)
def test_damaged_backup_file_is_named_with_how_to_start_over(runs, case, file):
    tmp, results, before = runs
    one_line_error(results[case], file, "--overwrite")
    assert snapshot(tmp / case) == before[case]
