"""A run folder's state: new, interrupted (resume it), or finished (refuse unless --overwrite).

:func:`check_run_folder` runs before anything is written: a folder that holds a finished run is
refused unless ``--overwrite`` is given; an interrupted run (``backup/`` present) is resumed only
when its backup files are readable and its ``config.json`` holds the same flags as this command.
:class:`ResumableBackup` extends Keras' ``BackupAndRestore`` with the state an exact resume needs
besides weights, optimizer and epoch: the dropout RNG (every ``SeedGenerator`` state) and the best
value of each ``save_best_only`` checkpoint's monitor, so ``best.keras`` is never replaced by a
worse model after a restart.
"""

import json
import os
import shutil
import zipfile

import keras
import numpy as np

# Flags that may change between the start of a run and its resume: they do not change the model,
# the data or the batches (``--epochs`` extends or shortens the run).
RESUMABLE_FLAGS = ("logdir", "verbose", "overwrite", "jit", "epochs", "distribute", "finished")
# What a run writes into its folder (removed by --overwrite; anything else is left alone).
RUN_FILES = (
    "best.keras",
    "last.keras",
    "config.json",
    "backup",
    "train",
    "validation",
    "results.json",
    "tokenizer.json",
)
BACKUP_FILES = ("latest.weights.h5", "training_metadata.json", "seeds.npz", "best.json")


def start_over_hint(logdir):
    return f"start over with --overwrite (or another --logdir than {logdir})"


def backup_dirs(logdir):
    """The ``backup/`` folders of the run (the run's own and those of its phases, one level)."""
    found = []
    for folder in [logdir] + [os.path.join(logdir, name) for name in sorted(os.listdir(logdir))]:
        if os.path.isdir(os.path.join(folder, "backup")):
            found.append(os.path.join(folder, "backup"))
    return found


def saved_config(logdir):
    path = os.path.join(logdir, "config.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        raise SystemExit(
            f"error: --logdir {logdir}: config.json is unreadable ({error}); "
            f"{start_over_hint(logdir)}"
        ) from None
    return config


def is_finished(logdir, config):
    """True when ``logdir`` holds a finished run (marked by ``finish``, or checkpoints and no
    backup: a run written before the mark existed)."""
    if config is not None and config.get("finished"):
        return True
    return os.path.exists(os.path.join(logdir, "last.keras")) and not backup_dirs(logdir)


def check_backup(logdir, backup):
    """Exit with the damaged file's name when a backup file cannot be read."""
    name = os.path.relpath(backup, logdir)

    def damaged(file, why):
        raise SystemExit(
            f"error: --logdir {logdir}: {os.path.join(name, file)} is damaged ({why}); "
            f"the interrupted run cannot resume: {start_over_hint(logdir)}"
        )

    metadata = os.path.join(backup, "training_metadata.json")
    weights = os.path.join(backup, "latest.weights.h5")
    if os.path.exists(metadata):
        try:
            with open(metadata, encoding="utf-8") as handle:
                epoch = json.load(handle)["epoch"]
            if not isinstance(epoch, int) or epoch < 0:
                raise ValueError(f"epoch={epoch!r}")
        except (OSError, ValueError, KeyError, TypeError) as error:
            damaged("training_metadata.json", error or "empty")
        if not os.path.exists(weights):
            damaged("latest.weights.h5", "missing")
    if os.path.exists(weights):
        import h5py

        try:
            with h5py.File(weights, "r") as handle:
                list(handle.keys())
        except OSError as error:
            damaged("latest.weights.h5", f"not a readable HDF5 file: {str(error)[:80]}")
    seeds = os.path.join(backup, "seeds.npz")
    if os.path.exists(seeds):
        try:
            with np.load(seeds) as handle:
                [handle[key] for key in handle.files]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            damaged("seeds.npz", error)
    best = os.path.join(backup, "best.json")
    if os.path.exists(best):
        try:
            with open(best, encoding="utf-8") as handle:
                if not isinstance(json.load(handle), dict):
                    raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            damaged("best.json", error)


def comparable(value):
    return json.loads(json.dumps(value, default=str))


def check_same_flags(logdir, config, args):
    """Exit naming the first flag whose value differs from the interrupted run's config.json."""
    for key, value in vars(args).items():
        if key in RESUMABLE_FLAGS or key not in config or callable(value):
            continue
        if comparable(value) != config[key]:
            flag = "--" + key.replace("_", "-")
            raise SystemExit(
                f"error: {flag} {comparable(value)!r} differs from the interrupted run in "
                f"{logdir} ({flag} {config[key]!r}); resume it with the same flags, or "
                f"{start_over_hint(logdir)}"
            )


def remove_run(logdir):
    """Delete what a run wrote into ``logdir`` (its phases' folders too); nothing else."""
    for name in sorted(os.listdir(logdir)):
        path = os.path.join(logdir, name)
        phase = os.path.isdir(path) and any(
            os.path.exists(os.path.join(path, f)) for f in ("last.keras", "backup", "train")
        )
        if name in RUN_FILES or phase or name.endswith(".keras"):
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)


def check_run_folder(args):
    """Decide what ``args.logdir`` holds before anything is written to it.

    Returns ``"new"``, ``"resume"`` (an interrupted run with the same flags and readable backup
    files) or ``"overwrite"`` (``--overwrite``: the old run's files were removed). Exits with a
    one-line error for a finished run without ``--overwrite``, other flags than the interrupted
    run's, a damaged backup file or a folder that cannot be written.
    """
    logdir = args.logdir
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise SystemExit(f"error: --logdir {logdir}: is a file, not a folder; give a folder")
    if not os.path.isdir(logdir) or not os.listdir(logdir):
        return "new"
    if getattr(args, "overwrite", False):
        try:
            remove_run(logdir)
        except OSError as error:
            raise SystemExit(
                f"error: --logdir {logdir}: cannot remove the old run ({error})"
            ) from None
        return "overwrite"
    config = saved_config(logdir)
    if is_finished(logdir, config):
        raise SystemExit(
            f"error: --logdir {logdir} holds a finished run; pass --overwrite to replace it, or "
            "give another --logdir (nothing was changed)"
        )
    backups = backup_dirs(logdir)
    for backup in backups:
        check_backup(logdir, backup)
    if config is not None:
        check_same_flags(logdir, config, args)
    return "resume" if backups else "new"


def seed_states(model):
    """The ``SeedGenerator`` state variables of ``model`` (dropout RNGs), in a fixed order."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` that also backs up the dropout RNG and the best monitored values.

    Next to ``latest.weights.h5`` and ``training_metadata.json`` it writes ``seeds.npz`` (every
    ``SeedGenerator`` state of the model, so the dropout masks after a resume are those of an
    uninterrupted run) and ``best.json`` (``best`` of each ``ModelCheckpoint`` in
    ``checkpoints``, restored on resume so ``save_best_only`` compares with the best epoch before
    the restart, not with ``+inf``).
    """

    def __init__(self, backup_dir, checkpoints=()):
        super().__init__(backup_dir)
        self.checkpoints = list(checkpoints)
        self._seeds_path = os.path.join(backup_dir, "seeds.npz")
        self._best_path = os.path.join(backup_dir, "best.json")

    def _load_model(self):
        super()._load_model()
        if os.path.exists(self._seeds_path):
            states = seed_states(self.model)
            with np.load(self._seeds_path) as saved:
                if len(saved.files) == len(states):
                    for index, variable in enumerate(states):
                        variable.assign(saved[f"s{index}"])
        if os.path.exists(self._best_path):
            with open(self._best_path, encoding="utf-8") as handle:
                best = json.load(handle)
            for checkpoint in self.checkpoints:
                value = best.get(os.path.basename(checkpoint.filepath))
                if value is not None:
                    checkpoint.best = value

    def _save_model(self):
        super()._save_model()
        states = {
            f"s{index}": keras.ops.convert_to_numpy(v)
            for index, v in enumerate(seed_states(self.model))
        }
        np.savez(self._seeds_path, **states)
        best = {
            os.path.basename(checkpoint.filepath): float(checkpoint.best)
            for checkpoint in self.checkpoints
            if checkpoint.best is not None and np.isfinite(checkpoint.best)
        }
        with open(self._best_path, "w", encoding="utf-8") as handle:
            json.dump(best, handle)
