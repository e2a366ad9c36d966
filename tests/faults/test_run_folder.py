"""The run folder checks in-process: every damaged backup file is named, a finished run is refused
unless --overwrite, other flags are named, an unwritable --logdir is one line, and the backup
carries the dropout RNG and the best checkpoint value across a restart."""

import argparse
import json
import os

import keras
import numpy as np
import pytest

from keras_transformers.recipes import resume, run

pytestmark = pytest.mark.backends  # the backup's seed and best state on every backend


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("interrupted")


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.5), keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 1)).astype("float32")


def interrupted_run(logdir):
    """A run folder whose backup holds epochs 0-1 (the fit was interrupted at epoch 2)."""
    x, y = data()
    model = tiny_model()
    os.makedirs(logdir, exist_ok=True)
    args = make_args(logdir)
    run.write_config(args)
    callbacks = run.make_callbacks(str(logdir))[1:]  # no TensorBoard: faster
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, y, epochs=4, validation_data=(x, y), callbacks=callbacks + [Interrupt()])
    return model, args


def make_args(logdir, **changes):
    values = dict(
        logdir=str(logdir), example="classifier", d_model=16, dropout=0.2, seed=3, overwrite=False
    )
    return argparse.Namespace(**{**values, **changes})


@pytest.fixture(scope="module")
def backup(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("interrupted") / "run"
    interrupted_run(logdir)
    return logdir


def copy(folder, tmp_path):
    import shutil

    target = tmp_path / "run"
    shutil.copytree(folder, target)
    return target


def test_interrupted_run_with_the_same_flags_resumes(backup, tmp_path):
    logdir = copy(backup, tmp_path)
    assert sorted(os.listdir(logdir / "backup")) == sorted(resume.BACKUP_FILES)
    assert resume.check_run_folder(make_args(logdir)) == "resume"


@pytest.mark.parametrize("file", resume.BACKUP_FILES)
@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_each_damaged_backup_file_is_named(backup, tmp_path, file, damage):
    logdir = copy(backup, tmp_path)
    path = logdir / "backup" / file
    path.write_bytes(b"" if damage == "empty" else path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SystemExit, match=f"backup/{file} is damaged.*--overwrite") as error:
        resume.check_run_folder(make_args(logdir))
    assert "\n" not in str(error.value)


def test_other_flags_are_named_before_anything_is_written(backup, tmp_path):
    logdir = copy(backup, tmp_path)
    config = (logdir / "config.json").read_text()
    with pytest.raises(SystemExit, match=r"--d-model 32 differs .*\(--d-model 16\)"):
        run.prepare_logdir(make_args(logdir, d_model=32))
    assert (logdir / "config.json").read_text() == config
    # flags that do not change the model or the batches may differ
    assert resume.check_run_folder(make_args(logdir, verbose=2, epochs=9)) == "resume"


def test_finished_run_is_refused_unless_overwrite(tmp_path):
    logdir = tmp_path / "run"
    logdir.mkdir()
    args = make_args(logdir)
    run.write_config(args, finished=True)
    (logdir / "best.keras").write_bytes(b"model")
    (logdir / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="holds a finished run; pass --overwrite"):
        run.prepare_logdir(args)
    assert (logdir / "best.keras").read_bytes() == b"model"
    run.prepare_logdir(make_args(logdir, overwrite=True))
    assert sorted(os.listdir(logdir)) == ["config.json", "notes.txt"]  # only the run's files
    assert not json.loads((logdir / "config.json").read_text()).get("finished")


def test_checkpoints_without_backup_count_as_finished(tmp_path):
    logdir = tmp_path / "run"
    logdir.mkdir()
    (logdir / "last.keras").write_bytes(b"model")  # a run finished before the mark existed
    with pytest.raises(SystemExit, match="finished run"):
        resume.check_run_folder(make_args(logdir))


def test_unwritable_logdir_is_one_line(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="--logdir .*cannot write there") as error:
        run.prepare_logdir(make_args(blocker / "run"))
    assert "\n" not in str(error.value)
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        run.prepare_logdir(make_args(blocker))


def test_resume_restores_best_value_and_dropout_rng(tmp_path):
    logdir = tmp_path / "run"
    model, _ = interrupted_run(logdir)
    saved_best = json.loads((logdir / "backup" / "best.json").read_text())["best.keras"]
    saved_seeds = [keras.ops.convert_to_numpy(v) for v in resume.seed_states(model)]
    assert saved_seeds  # the Dropout layer's SeedGenerator

    restarted = tiny_model()  # a new process: +inf best, another seed state
    for variable in resume.seed_states(restarted):
        variable.assign(np.zeros(variable.shape, "int32"))
    callbacks = run.make_callbacks(str(logdir))
    best, backup = callbacks[1], callbacks[3]
    backup.set_model(restarted)
    backup.on_train_begin()
    assert best.best == pytest.approx(saved_best)
    for variable, saved in zip(resume.seed_states(restarted), saved_seeds):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), saved)


class Spoil(keras.callbacks.Callback):
    """After the restore: weights far off, so the resumed epoch is worse than the best so far."""

    def on_train_begin(self, logs=None):
        for variable in self.model.trainable_variables:
            variable.assign(np.full(variable.shape, 30.0, "float32"))


def test_resumed_epoch_worse_than_the_best_keeps_best_keras(tmp_path):
    logdir = tmp_path / "run"
    interrupted_run(logdir)
    best_file = (logdir / "best.keras").read_bytes()
    x, y = data()
    callbacks = run.make_callbacks(str(logdir))[1:] + [Spoil()]
    history = tiny_model().fit(x, y, epochs=3, validation_data=(x, y), callbacks=callbacks)
    assert history.history["val_loss"][0] > callbacks[0].best  # worse, and not saved
    assert (logdir / "best.keras").read_bytes() == best_file
