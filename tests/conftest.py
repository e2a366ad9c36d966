"""Shared pytest set-up: quiet TensorFlow, deterministic seeds, float32 policy after each test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _reset_keras_state():
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


# Files whose tests take minutes (subprocess trainings behind module fixtures), longest first.
# xdist hands out file groups in collection order; alphabetically these came last and one worker
# ran them alone at the end of the run. Handing them out first balances the two workers.
LONG_FILES = (
    "journeys/test_example_journeys.py",
    "faults/test_kill_and_rerun.py",
    "examples/test_examples.py",
    "distribution/test_multi_worker.py",
    "distribution/test_model_parallel.py",
    "benchmarks/test_lm_throughput_smoke.py",
    "callbacks/test_callbacks.py",
    "examples_lra/test_lra_example.py",
    "examples/test_train_vit_example.py",
    "faults/test_bad_inputs.py",
    "interop/test_quantize.py",
)


def _long_first(item):
    path = item.path.as_posix()
    for rank, name in enumerate(LONG_FILES):
        if path.endswith("tests/" + name):
            return rank
    return len(LONG_FILES)


def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n 2 --dist loadgroup`` (scripts/test.sh) the tests of one file stay on one
    worker, so a module-scoped fixture (a trained journey, a built model) is made once; the
    contract suite, whose files hold hundreds of independent cases, is spread over the workers.
    The long files (:data:`LONG_FILES`) are collected first (stable: order within a file kept)."""
    items.sort(key=_long_first)
    for item in items:
        if "contract" not in item.path.parts:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))
