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


# These files share the session fixture ``trained_runs``: one xdist group, so it trains once.
TRAINED_RUNS_FILES = {"test_examples", "test_example_journeys"}


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    """The lm / classifier / seq2seq example runs of tests/_trained_runs.py, trained once."""
    import _trained_runs

    return _trained_runs.train(tmp_path_factory.mktemp("trained_runs"))


# tryfirst: the marks must be there when xdist's hook reads them into the node ids (they were
# added after it, so no test had a group).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under ``pytest -n 2 --dist loadgroup`` (scripts/test.sh) the tests of one file stay on one
    worker, so a module-scoped fixture (a trained journey, a built model) is made once; the
    contract suite, whose files hold hundreds of independent cases, is spread over the workers."""
    for item in items:
        if item.path.stem in TRAINED_RUNS_FILES:
            item.add_marker(pytest.mark.xdist_group("trained_runs"))
        elif "contract" not in item.path.parts:
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


class _GroupSuffixWherePytestReadsIt:
    """pytest 9.2 reads ``item.nodeid`` from ``item._id``; pytest-xdist 3.8 (loadgroup) still
    appends the ``@<group>`` suffix to ``item._nodeid``, which pytest no longer reads, so every
    test was scheduled alone and the tests of one file (and their module fixtures) ran on both
    workers. Wraps the hook: after xdist's part, copies its suffixed id into ``item._id``."""

    @pytest.hookimpl(wrapper=True)
    def pytest_collection_modifyitems(self, config, items):
        result = yield
        if not getattr(config.option, "loadgroup", False):
            return result
        from _pytest.nodeid import coerce_node_id

        for item in items:
            wanted = getattr(item, "_nodeid", None)
            if isinstance(wanted, str) and wanted != item.nodeid:
                item._id = coerce_node_id(wanted)
        return result


def pytest_configure(config):
    if hasattr(pytest.Item, "id"):  # pytest >= 9.2 (structured node ids)
        config.pluginmanager.register(_GroupSuffixWherePytestReadsIt(), "kt_xdist_group_ids")
