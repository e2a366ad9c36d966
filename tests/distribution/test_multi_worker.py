"""Several processes on localhost, each a worker of the frameworks' own multi-worker engines:
TensorFlow's MultiWorkerMirroredStrategy from TF_CONFIG, and JAX's jax.distributed with CPU
collectives (gloo). Each trains the same steps as one device with the same global batch and ends
with the same weights; the recipes' --distribute multi_worker does the same end to end."""

import json

import numpy as np
import pytest
from distribution_helpers import (
    RECIPE_ARGS,
    final_weights,
    finish,
    free_ports,
    start_example,
    start_worker,
)

import keras_transformers  # noqa: F401  (registers the classes load_model meets)


def tf_config(ports, index):
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def jax_env(port, index, count=2):
    return {
        "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
        "JAX_NUM_PROCESSES": str(count),
        "JAX_PROCESS_ID": str(index),
    }


def max_diff(tmp_path, name):
    """Largest difference of the distributed weights (worker 0) and one device's (worker 1)."""
    distributed = final_weights(tmp_path / f"{name}0.json")
    reference = final_weights(tmp_path / f"{name}1.json")
    assert len(distributed) == len(reference) > 0
    return max(float(np.max(np.abs(a - b))) for a, b in zip(distributed, reference))


def test_tensorflow_two_workers_match_one_device(tmp_path):
    """Two MultiWorkerMirroredStrategy workers, 2 SGD steps of global batch 8 (4 rows each):
    the weights equal one device's after the same 2 steps (1e-4); the chief's .keras loads."""
    pytest.importorskip("tensorflow")
    ports = free_ports(2)
    started = [
        start_worker(tmp_path, "tf_multi", "tensorflow", f"tf{i}", TF_CONFIG=tf_config(ports, i))
        for i in range(2)
    ]
    results = [finish(*pair) for pair in started]
    chief = results[0]
    assert chief["replicas"] == 2 and chief["count"] == 2
    assert max_diff(tmp_path, "tf") < 1e-4
    import keras

    assert keras.saving.load_model(chief["saved"]).count_params() > 0


def test_jax_two_processes_match_one_device(tmp_path):
    """Two jax.distributed processes (one CPU device each, gloo collectives), DataParallel over
    both, each feeding its half of every global batch of 8: the weights after 2 SGD steps equal
    one device's (1e-4)."""
    pytest.importorskip("jax")
    (port,) = free_ports(1)
    started = [
        start_worker(tmp_path, "jax_multi", "jax", f"jax{i}", **jax_env(port, i)) for i in range(2)
    ]
    results = [finish(*pair) for pair in started]
    chief = results[0]
    assert chief["count"] == 2 and results[1]["index"] == 1
    assert max_diff(tmp_path, "jax") < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_recipe_multi_worker_matches_single_process(tmp_path, backend):
    """``train_lm.py --distribute multi_worker`` with two workers vs one process with the same
    global batch (TensorFlow: --batch-size 8 on both; JAX: --batch-size is per process, so 4
    per process vs 8 alone): same losses (1e-4); the chief's best.keras loads on one device.
    TensorFlow also: both workers SIGKILLed after the first step of epoch 1 and started again
    resume from their own backups and end with bit-identical weights to the uninterrupted
    two-worker run."""
    pytest.importorskip(backend)
    ports = {name: free_ports(2) for name in ("multi", "killed")}
    per_process = ["--batch-size", "4"] if backend == "jax" else []

    def start(name, index, run, **variables):
        if backend == "tensorflow":
            variables["TF_CONFIG"] = tf_config(ports[run], index)
        else:
            variables.update(jax_env(ports[run][0], index))
        args = [*RECIPE_ARGS, *per_process, "--distribute", "multi_worker"]
        return start_example(
            tmp_path, "train_lm.py", name, [*args, "--logdir", str(tmp_path / run)], backend,
            **variables,
        )  # fmt: skip

    single = [*RECIPE_ARGS, "--logdir", str(tmp_path / "single")]
    started = {"single": start_example(tmp_path, "train_lm.py", "single", single, backend)}
    for i in range(2):
        started[i] = start(f"worker{i}", i, "multi")
    killed = []
    if backend == "tensorflow":
        killed = [start(f"killed{i}", i, "killed", KILL_AT="1,0")[0] for i in range(2)]
    results = {key: finish(*pair) for key, pair in started.items()}
    np.testing.assert_allclose(results[0]["loss"], results["single"]["loss"], atol=1e-4)
    assert results[1]["logdir"].endswith("worker-1")
    import keras

    assert keras.saving.load_model(str(tmp_path / "multi" / "best.keras")).count_params()
    if not killed:
        return
    for process in killed:
        process.communicate(timeout=600)
        assert process.returncode == -9  # SIGKILLed in epoch 1
    ports["killed"] = free_ports(2)
    restarted = [start(f"resumed{i}", i, "killed") for i in range(2)]
    resumed = [finish(*pair) for pair in restarted]
    assert all(len(result["loss"]) == 1 for result in resumed)  # epoch 1 only
    for name in ("0", "1"):
        uninterrupted = final_weights(tmp_path / f"worker{name}.json")
        for a, b in zip(uninterrupted, final_weights(tmp_path / f"resumed{name}.json")):
            np.testing.assert_array_equal(a, b)  # bit-identical
    loaded = keras.saving.load_model(str(tmp_path / "killed" / "last.keras"))
    for variable, expected in zip(loaded.weights, final_weights(tmp_path / "resumed0.json")):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable.value), expected)


def test_missing_environment_is_a_one_line_error(tmp_path):
    """multi_worker without TF_CONFIG (TensorFlow) / JAX_* variables (JAX), model_parallel on
    TensorFlow and a --mesh that does not match the devices: one ``error:`` line each."""
    from keras_transformers.recipes import distribute, flags

    class Args:
        batch_size, mesh = 8, None

    for backend, mode, mesh, words in [
        ("tensorflow", "multi_worker", None, "TF_CONFIG"),
        ("tensorflow", "model_parallel", None, "KERAS_BACKEND=jax"),
        ("tensorflow", "mirrored", (2, 2), "--mesh applies"),
    ]:
        import keras

        if keras.backend.backend() != backend:
            continue
        args = Args()
        args.distribute, args.mesh = mode, mesh
        with pytest.raises(SystemExit, match=words):
            with distribute.scope(args):
                pass
    with pytest.raises(SystemExit, match="JAX_COORDINATOR_ADDRESS"):
        distribute.initialize_jax()
    parser = flags.build_parser("lm")
    assert parser.parse_args(["--distribute", "model_parallel", "--mesh", "2,2"]).mesh == (2, 2)
    with pytest.raises(SystemExit):
        parser.parse_args(["--mesh", "2x2"])


def test_batch_must_divide_and_validation_keeps_what_the_batch_axis_splits(capsys):
    """A --batch-size the batch axis does not divide is one error line naming both; validation
    arrays are cut to a multiple of the axis (a note says how many are kept), untouched when the
    batch is not split."""
    from keras_transformers.recipes import distribute

    class Args:
        batch_size, distribute = 6, "model_parallel"

    with pytest.raises(SystemExit, match="--batch-size 6 must be divisible by 4"):
        distribute._check_batch(Args(), "data_parallel", 4, "number of devices")
    x, y, w = np.arange(23 * 2).reshape(23, 2), np.arange(23), np.ones(23)
    try:
        distribute._check_batch(Args(), "model_parallel", 2, "batch axis")
        kept = distribute.validation_rows(Args(), ({"a": x}, y, w))
        assert [len(kept[0]["a"]), len(kept[1]), len(kept[2])] == [22, 22, 22]
        assert "validation: 22 of 23 examples" in capsys.readouterr().out
        with pytest.raises(SystemExit, match="1 validation examples cannot be split"):
            distribute.validation_rows(Args(), (x[:1], y[:1]))
    finally:
        distribute._WORKER["shards"] = 1
    assert distribute.validation_rows(Args(), (x, y))[0] is x
