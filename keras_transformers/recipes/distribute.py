"""``--distribute``: the examples' training on the frameworks' own engines.

=================  ===========  ===============================================================
mode               backend      engine
=================  ===========  ===============================================================
``mirrored``       TensorFlow   ``tf.distribute.MirroredStrategy`` over the local devices
``data_parallel``  JAX          ``keras.distribution.DataParallel`` over the local devices
``model_parallel`` JAX          ``kt.distribution.ModelParallel`` on a ``--mesh B,M`` device
                                mesh (``batch`` x ``model``), weights sharded by
                                :func:`kt.distribution.get_layout_map`
``multi_worker``   TensorFlow   ``tf.distribute.MultiWorkerMirroredStrategy`` from ``TF_CONFIG``
``multi_worker``   JAX          ``jax.distributed.initialize`` from ``JAX_COORDINATOR_ADDRESS``,
                                ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` (or Keras'
                                ``KERAS_DISTRIBUTION_*`` variables), then ``DataParallel`` over
                                every process's devices
=================  ===========  ===============================================================

``--batch-size`` is the global batch in every mode but JAX ``multi_worker``, where each process
reads its own ``--batch-size`` rows of every step (the global batch is ``--batch-size`` x
processes; :func:`local_rows` hands each process its share of the same seeded stream). Only the
first worker (the chief) writes the run folder; worker ``i`` writes its checkpoints and logs
under ``<logdir>/worker-<i>``, so a restart resumes every worker from its own backup.

Each mode checks its backend and environment first and exits with a one-line error naming what
is missing (``TF_CONFIG``, a ``--mesh`` that does not match the devices, a ``--batch-size`` the
batch axis does not divide, ...). Training batches are always whole (:func:`run.epoch_batches`);
on a JAX batch axis of ``S`` devices :func:`validation_rows` keeps the first ``N - N mod S``
validation examples, so the last batch splits and the metrics stay exact means (no padding).
"""

import contextlib
import json
import os

MODES = ("none", "mirrored", "data_parallel", "model_parallel", "multi_worker")
JAX_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
KERAS_ENV = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)


def parse_mesh(text):
    """``--mesh "2,2"`` -> ``(2, 2)`` (batch x model); an argparse type."""
    import argparse

    try:
        shape = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        shape = ()
    if len(shape) != 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(
            f"--mesh {text!r}: give two positive sizes 'BATCH,MODEL', e.g. 2,2"
        )
    return shape


def add_arguments(group, modes=MODES):
    """``--distribute`` and ``--mesh`` on an argparse group (no Keras imported)."""
    group.add_argument(
        "--distribute",
        choices=modes,
        default="none",
        help="scale out on the frameworks' engines: 'mirrored' (TensorFlow) / 'data_parallel' "
        "(JAX) over the local devices; 'model_parallel' (JAX: weights sharded on a --mesh); "
        "'multi_worker' (TensorFlow: TF_CONFIG; JAX: JAX_COORDINATOR_ADDRESS, "
        "JAX_NUM_PROCESSES, JAX_PROCESS_ID) (default: %(default)s)",
    )
    group.add_argument(
        "--mesh",
        type=parse_mesh,
        default=None,
        help="with --distribute model_parallel: device mesh 'BATCH,MODEL', e.g. 2,2 "
        "(default: 1,<all devices>)",
    )


def _fail(message):
    raise SystemExit(f"error: --distribute {message}")


def _need(backend, mode, wanted):
    if backend not in wanted:
        _fail(
            f"{mode} needs KERAS_BACKEND={' or '.join(wanted)} (not {backend}); "
            + {
                "mirrored": "on JAX use --distribute data_parallel",
                "data_parallel": "on TensorFlow use --distribute mirrored",
                "model_parallel": "Keras shards weights with a LayoutMap on JAX only",
            }.get(mode, "")
        )


def tf_config():
    """The parsed ``TF_CONFIG`` (a SystemExit naming what is wrong when absent or invalid)."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        _fail(
            "multi_worker on TensorFlow needs TF_CONFIG on every worker, e.g. "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        index = int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as error:
        _fail(f"multi_worker: TF_CONFIG is not a cluster spec with a worker task ({error!r})")
    if not 0 <= index < len(workers):
        _fail(f"multi_worker: TF_CONFIG task index {index} is not one of {len(workers)} workers")
    return config


def initialize_jax():
    """``jax.distributed.initialize`` from the environment (once); returns ``(index, count)``."""
    import jax

    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    if all(os.environ.get(name) for name in JAX_ENV):
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    elif all(os.environ.get(name) for name in KERAS_ENV):
        import keras

        keras.distribution.initialize()
    else:
        given = [name for name in (*JAX_ENV, *KERAS_ENV) if os.environ.get(name)]
        _fail(
            "multi_worker on JAX needs JAX_COORDINATOR_ADDRESS (host:port of process 0), "
            "JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process (or Keras' "
            f"{', '.join(KERAS_ENV)}); set: {', '.join(given) or 'none'}"
        )
    return jax.process_index(), jax.process_count()


_WORKER = {"index": 0, "count": 1, "shards": 1}


def worker(args=None):
    """``(index, count)`` of this process in a multi-worker run (``(0, 1)`` otherwise)."""
    return _WORKER["index"], _WORKER["count"]


def batch_shards():
    """Ways this process's rows of a batch are split over its devices (1: not split).

    JAX places every batch with ``jax.make_array_from_process_local_data``, which refuses rows
    that do not divide (``IndivisibleError``); TensorFlow's strategies split uneven batches
    themselves, so there it is 1.
    """
    return _WORKER["shards"]


def _check_batch(args, mode, shards, what, record=True):
    """``--batch-size`` must divide by the ``shards`` of the batch axis; ``record``: this process
    splits its batches ``shards`` ways (then :func:`batch_shards` returns ``shards``)."""
    if args.batch_size % shards:
        _fail(
            f"{mode}: --batch-size {args.batch_size} must be divisible by {shards}, the "
            f"{what}; e.g. --batch-size {max(shards, args.batch_size // shards * shards)}"
        )
    if record:
        _WORKER["shards"] = shards


def _worker_logdir(args, index):
    """Worker ``index`` > 0 logs and checkpoints in ``<logdir>/worker-<index>``."""
    if index and getattr(args, "logdir", None):
        args.logdir = os.path.join(args.logdir, f"worker-{index}")
        os.makedirs(args.logdir, exist_ok=True)


def model_parallel_distribution(mesh_shape=None, devices=None):
    """``kt.distribution.ModelParallel`` on a ``(batch, model)`` mesh of ``devices``."""
    import keras

    from keras_transformers import distribution

    devices = devices or keras.distribution.list_devices()
    shape = tuple(mesh_shape or (1, len(devices)))
    if shape[0] * shape[1] != len(devices):
        _fail(
            f"model_parallel: --mesh {shape[0]},{shape[1]} needs {shape[0] * shape[1]} devices; "
            f"there are {len(devices)}"
        )
    mesh = keras.distribution.DeviceMesh(shape, ("batch", "model"), devices)
    layout_map = distribution.get_layout_map(mesh, "model", "batch")
    return distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


@contextlib.contextmanager
def symbolic_build_from_local_batch():
    """Work around Keras 3's TensorFlow ``fit`` under ``MultiWorkerMirroredStrategy``.

    Before training, ``TensorFlowTrainer._maybe_symbolic_build`` takes the first distributed
    batch and calls ``strategy.reduce("MEAN", (x, y), axis=None)`` on the whole tuple only to
    learn its shapes; with two or more workers ``MultiWorkerMirroredStrategy`` cannot reduce a
    tuple (``ValueError: Attempt to convert a value (PerReplica:...)``, Keras 3.15.1, TF 2.21).
    Inside this context the shapes come from this worker's first replica batch instead
    (``experimental_local_results``). Then each step reduces its logs (the loss, the metrics:
    scalars per replica) with ``strategy.reduce("MEAN", v, axis=0)``, which fails on scalars
    (``Invalid reduction dimension 0 for input with 0 dimensions``); here they are averaged
    over the replicas of every worker (``axis=None``). The gradients and updates are untouched.
    """
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    cls = tf_trainer.TensorFlowTrainer
    original = cls._maybe_symbolic_build

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return tf.distribute.get_strategy().experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None or iterator is None:
            return original(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            data_batch = tf.nest.map_structure(local, next(it))
            break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    reduce_per_replica = tf_trainer.reduce_per_replica

    def reduce_logs(values, strategy, reduction):
        if reduction not in ("auto", "mean"):
            return reduce_per_replica(values, strategy, reduction)

        def mean(value):
            if isinstance(value, tf.distribute.DistributedValues):
                axis = 0 if value.values[0].shape.rank else None
                return strategy.reduce("MEAN", value, axis=axis)
            return value

        return tf.nest.map_structure(mean, values)

    cls._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_logs
    try:
        yield
    finally:
        cls._maybe_symbolic_build = original
        tf_trainer.reduce_per_replica = reduce_per_replica


@contextlib.contextmanager
def scope(args):
    """Build, compile and fit under ``args.distribute`` (see the module docstring)."""
    import keras

    backend = keras.backend.backend()
    mode = getattr(args, "distribute", "none")
    mesh = getattr(args, "mesh", None)
    if mesh is not None and mode != "model_parallel":
        _fail(f"{mode}: --mesh applies to --distribute model_parallel only")
    _WORKER["shards"] = 1
    if mode == "none":
        yield
        return
    if mode == "mirrored":
        _need(backend, mode, ("tensorflow",))
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        print(f"MirroredStrategy: {strategy.num_replicas_in_sync} replicas")
        with strategy.scope():
            yield
        return
    if mode == "data_parallel":
        _need(backend, mode, ("jax",))
        distribution = keras.distribution.DataParallel()
        devices = len(keras.distribution.list_devices())
        _check_batch(args, mode, devices, "number of devices the batch is split over")
        print(f"DataParallel over {devices} devices")
        with distribution.scope():
            yield
        return
    if mode == "model_parallel":
        _need(backend, mode, ("jax",))
        distribution = model_parallel_distribution(mesh)
        batch, model = distribution.device_mesh.shape
        _check_batch(args, mode, batch, "size of the mesh's batch axis (--mesh BATCH,MODEL)")
        print(f"ModelParallel on a {batch} x {model} (batch x model) mesh")
        with distribution.scope():
            yield
        return
    if mode == "multi_worker":
        _need(backend, mode, ("tensorflow", "jax"))
        if backend == "tensorflow":
            config = tf_config()
            import tensorflow as tf

            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            index, count = int(config["task"]["index"]), len(config["cluster"]["worker"])
            _WORKER.update(index=index, count=count)
            _worker_logdir(args, index)
            replicas = strategy.num_replicas_in_sync
            # checked, not recorded: tf.distribute splits an uneven last batch itself
            what = "number of replicas (all workers' devices)"
            _check_batch(args, mode, replicas, what, record=False)
            print(
                f"MultiWorkerMirroredStrategy: worker {index} of {count}, "
                f"{strategy.num_replicas_in_sync} replicas"
            )
            with strategy.scope(), symbolic_build_from_local_batch():
                yield
            return
        index, count = initialize_jax()
        _WORKER.update(index=index, count=count)
        _worker_logdir(args, index)
        import jax

        # every process's --batch-size rows are split over its own devices
        _check_batch(args, mode, jax.local_device_count(), "number of this process's devices")
        # every process feeds its own rows (local_rows); Keras shards only tf.data itself
        distribution = keras.distribution.DataParallel(auto_shard_dataset=False)
        print(
            f"JAX multi-process: process {index} of {count}, DataParallel over "
            f"{len(keras.distribution.list_devices())} devices"
        )
        with distribution.scope():
            yield
        return
    _fail(f"{mode!r}: allowed values are {', '.join(MODES)}")


def local_rows(args, arrays):
    """This process's rows of a batch stream (all of them unless JAX ``multi_worker``).

    ``arrays`` hold consecutive batches of ``--batch-size`` rows per process, i.e. global batches
    of ``--batch-size`` x processes rows; process ``p`` keeps rows ``p·B .. (p+1)·B - 1`` of each.
    """
    index, count = worker(args)
    if count == 1 or getattr(args, "distribute", "none") != "multi_worker":
        return arrays
    import keras

    if keras.backend.backend() != "jax":
        return arrays  # MultiWorkerMirroredStrategy splits the global batch itself
    import numpy as np

    rows = np.arange(num_rows(arrays[0])).reshape(-1, count, args.batch_size)[:, index]
    return tuple(rows_of(array, rows.reshape(-1)) for array in arrays)


def stream_batch_size(args):
    """Rows per step of the whole run: ``--batch-size`` x processes on JAX multi-worker."""
    index, count = worker(args)
    if getattr(args, "distribute", "none") == "multi_worker" and count > 1:
        import keras

        if keras.backend.backend() == "jax":
            return args.batch_size * count
    return args.batch_size


def validation_rows(args, arrays):
    """``fit(validation_data=...)`` arrays whose last batch the batch axis can split.

    Training batches are always whole (:func:`run.epoch_batches` streams ``steps`` full batches
    per epoch) and ``--batch-size`` divides by the batch axis (checked by :func:`scope`), but
    ``N`` validation examples end in a batch of ``N mod B`` rows, which JAX cannot place on a
    batch axis of ``S`` devices unless ``S`` divides it. The last ``N mod S`` examples (at most
    ``S - 1``) are left out, with a printed note: the validation loss and metrics are then exact
    means over the ``N - N mod S`` examples kept (Keras weights each batch by its rows), never
    diluted by padding rows. Nothing changes when the batch is not split (one device, TensorFlow).

    Args:
        arrays: ``(x, y)`` or ``(x, y, sample_weight)``; ``x`` may be a dict of arrays.
    """
    shards = batch_shards()
    num = num_rows(arrays[0])
    keep = num - num % shards
    if keep == num:
        return arrays
    if keep == 0:
        _fail(
            f"{getattr(args, 'distribute', 'none')}: {num} validation examples cannot be split "
            f"over the {shards}-way batch axis; give more validation data (--val-fraction)"
        )
    print(
        f"validation: {keep} of {num} examples (the last {num - keep} cannot be split over the "
        f"{shards}-way batch axis; the metrics are means over the {keep})"
    )
    return tuple(rows_of(array, slice(0, keep)) for array in arrays)


def num_rows(data):
    """Examples (axis-0 length) of an array or of a dict of arrays (its first)."""
    return len(next(iter(data.values())) if isinstance(data, dict) else data)


def rows_of(data, index):
    """``data[index]`` along axis 0 for an array, for every array of a (nested) dict of arrays,
    ``None`` for ``None`` (an absent ``sample_weight``); ``index``: a slice or integer rows."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {key: rows_of(value, index) for key, value in data.items()}
    return data[index]
