"""`import keras_transformers` is cheap and registers everything a `.keras` file can name.

Each check runs in a fresh interpreter: what a module-level import did in an earlier test would
otherwise hide the bug (issue 13: a checkpoint's AdamW only loaded because a test had imported
the old training module first).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("keras", "tensorflow", "jax", "torch")
SCRIPTS = sorted(p.name for p in (REPO / "examples").glob("*.py") if not p.name.startswith("_"))


def _env(**extra):
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def _python(code, *args, timeout=300, **env):
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        env=_env(**env),
        timeout=timeout,
        cwd=REPO,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


def _last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


# Runs argv's --help (a script path or the CLI) and prints which frameworks got imported.
HELP_PROBE = """
    import contextlib, io, json, runpy, sys
    target, argv = sys.argv[1], sys.argv[2:]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            if target == "cli":
                from keras_transformers import cli
                cli.main(argv)
            else:
                sys.argv = [target, *argv]
                runpy.run_path(target, run_name="__main__")
        except SystemExit as exit:
            code = exit.code
    loaded = sorted(m for m in sys.modules if m in {frameworks})
    print(json.dumps({{"code": code, "loaded": loaded, "usage": "usage:" in out.getvalue()}}))
"""


def test_import_loads_no_framework_and_subpackages_are_attributes():
    out = _python(
        """
        import json, sys
        import keras_transformers as kt
        before = sorted(m for m in sys.modules if m in ("keras", "tensorflow", "jax", "torch"))
        print(json.dumps({"before": before, "dir": "schedules" in dir(kt)}))
        """
    )
    assert _last_json(out) == {"before": [], "dir": True}


@pytest.mark.parametrize(
    "target, argv",
    [("cli", ["--help"]), ("cli", ["train", "lm", "--help"]), ("cli", ["train", "--help"])]
    + [(f"examples/{name}", ["--help"]) for name in SCRIPTS],
)
def test_help_imports_no_framework(target, argv):
    """Every --help answers without Keras/TensorFlow (so well under a second)."""
    result = _last_json(_python(HELP_PROBE.format(frameworks=FRAMEWORKS), target, *argv))
    assert result == {"code": 0, "loaded": [], "usage": True}


# One fresh process checks the registrations (below), then writes the checkpoint that the
# import-order variants load, each in its own fresh process (one framework start-up less).
REGISTER_THEN_SAVE = """
    import inspect, json, pkgutil, importlib, sys
    import keras_transformers
    import keras
    for info in pkgutil.walk_packages(keras_transformers.__path__, "keras_transformers."):
        if not info.name.startswith("keras_transformers.cli"):
            importlib.import_module(info.name)
    bases = (keras.layers.Layer, keras.losses.Loss, keras.metrics.Metric,
             keras.optimizers.Optimizer, keras.optimizers.schedules.LearningRateSchedule)
    missing, checked = [], 0
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("keras_transformers"):
            continue
        for cls in vars(module).values():
            if inspect.isclass(cls) and cls.__module__ == name and issubclass(cls, bases):
                checked += 1
                registered = keras.saving.get_registered_name(cls)
                if keras.saving.get_registered_object(registered) is cls:
                    continue
                if cls.__name__.startswith("_") or cls.__subclasses__():
                    continue  # private helper or abstract base
                missing.append(f"{name}.{cls.__name__}")

    # A tiny LM trained one step with kt.optimizers.AdamW + kt.schedules.NoamSchedule.
    import numpy as np
    kt = keras_transformers
    model = kt.models.build_decoder_lm(40, 8, d_model=16, num_heads=2, num_layers=1)
    schedule = kt.schedules.NoamSchedule(d_model=16, warmup_steps=2)
    model.compile(optimizer=kt.optimizers.adamw(schedule), loss="mse")
    x = np.ones((2, 8), "int32")
    model.fit(x, np.zeros((2, 8, 40)), verbose=0)
    model.save(sys.argv[1])
    print(json.dumps({"checked": checked, "missing": missing}))
"""


@pytest.fixture(scope="module")
def registered_then_saved(tmp_path_factory):
    """``{"registrations": {"checked", "missing"}, "checkpoint": path}`` of REGISTER_THEN_SAVE."""
    path = tmp_path_factory.mktemp("cheap_import") / "lm.keras"
    registrations = _last_json(_python(REGISTER_THEN_SAVE, path))
    return {"registrations": registrations, "checkpoint": path}


LOAD = """
    import json, sys
    {imports}
    model = keras.saving.load_model(sys.argv[1])
    optimizer = model.optimizer
    print(json.dumps([type(optimizer).__module__, type(optimizer.learning_rate).__name__
                      if not hasattr(optimizer, "_learning_rate") else
                      type(optimizer._learning_rate).__name__]))
"""


@pytest.mark.parametrize(
    "imports",
    [
        "import keras_transformers\nimport keras",
        "import keras\nimport keras_transformers",
        "import keras_transformers.data\nimport keras",
        "from keras_transformers.models import build_decoder_lm\nimport keras",
    ],
    ids=["package-then-keras", "keras-then-package", "data-subpackage", "from-models"],
)
def test_load_model_needs_only_the_package_import(registered_then_saved, imports):
    checkpoint = registered_then_saved["checkpoint"]
    out = _python(LOAD.format(imports=imports.replace("\n", "\n    ")), checkpoint)
    assert _last_json(out) == ["keras_transformers.optimizers", "NoamSchedule"]


def test_every_serialisable_class_of_the_package_is_registered(registered_then_saved):
    """Layers, models, losses, metrics, optimizers and schedules defined anywhere in the package
    are registered after ``import keras_transformers; import keras`` (fresh process) and the
    import of every module of the package. Only abstract bases (subclassed by registered
    classes) and private helpers may stay out."""
    result = registered_then_saved["registrations"]
    assert result["missing"] == [] and result["checked"] > 50, result
