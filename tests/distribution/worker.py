"""Subprocess side of tests/distribution: one mode per run, the result as JSON in argv[2].

python worker.py model_parallel OUT [MODEL]   KERAS_BACKEND=jax, 4 virtual CPU devices
python worker.py jax_multi OUT                one of 2 JAX processes (JAX_* variables set)
python worker.py tf_multi OUT                 one of 2 TensorFlow workers (TF_CONFIG set)

Every mode trains the same small decoder LM from the same initial weights on the same global
batches, distributed and on one device, and reports the largest weight difference.
"""

import json
import os
import sys
import time

import numpy as np

MODE, OUT = sys.argv[1], sys.argv[2]
KIND = sys.argv[3] if len(sys.argv) > 3 else "lm"
GLOBAL_BATCH, STEPS, LENGTH, VOCAB = 8, 2, 8, 32

if MODE == "tf_multi":
    import tensorflow as tf

    STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()  # first: before any TF op

import keras  # noqa: E402

import keras_transformers as kt  # noqa: E402


def build(kind=KIND):
    keras.utils.set_random_seed(0)
    if kind == "lm":
        return kt.models.build_decoder_lm(
            VOCAB, LENGTH, d_model=16, num_heads=2, num_layers=1, ff_dim=32, position="rope"
        )
    if kind == "gated":  # untied head, GQA, SwiGLU
        return kt.models.build_decoder_lm(
            VOCAB,
            LENGTH,
            d_model=16,
            num_heads=4,
            num_layers=1,
            ff_dim=32,
            num_key_value_heads=2,
            activation="swiglu",
            tie_embeddings=False,
        )
    if kind == "moe":  # mixture of experts, RMSNorm, qk-norm
        return kt.models.build_decoder_lm(
            VOCAB, LENGTH, d_model=16, num_heads=2, num_layers=1, ff_dim=32,
            feedforward="moe", num_experts=2, norm="rms", qk_norm=True,
        )  # fmt: skip
    if kind == "seq2seq":
        return kt.models.build_seq2seq(
            VOCAB, VOCAB, LENGTH, LENGTH, d_model=16, num_heads=2, ff_dim=32, dropout=0.0
        )
    raise ValueError(kind)


def data(kind=KIND, batches=STEPS):
    rng = np.random.default_rng(1)
    x = rng.integers(1, VOCAB, size=(batches * GLOBAL_BATCH, LENGTH)).astype("int32")
    y = np.roll(x, -1, axis=1)
    if kind == "seq2seq":
        return {"encoder_token_ids": x, "decoder_token_ids": np.roll(x, 1, axis=1)}, y
    return x, y


def compile_(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=keras.backend.backend() == "jax",  # the cheaper one for these tiny steps
    )
    return model


def numpy_weights(model):
    return [np.asarray(keras.ops.convert_to_numpy(v.value)) for v in model.weights]


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) if x.size else 0.0 for x, y in zip(a, b))


def reference(initial, x, y, steps):
    """The same training on one device (no distribution), one global batch per step."""
    model = compile_(build())
    model.set_weights(initial)
    losses = [
        float(model.train_on_batch(_rows(x, s), _rows(y, s))) for s in range(steps)
    ]  # fmt: skip
    return model, losses


def _rows(array, step, size=GLOBAL_BATCH):
    if isinstance(array, dict):
        return {k: v[step * size : (step + 1) * size] for k, v in array.items()}
    return array[step * size : (step + 1) * size]


def mesh_distribution():
    import jax

    assert jax.device_count() == 4, jax.devices()
    mesh = keras.distribution.DeviceMesh((2, 2), ("batch", "model"), jax.devices())
    layout_map = kt.distribution.get_layout_map(mesh)
    return kt.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")


def model_parallel():
    """One SGD step sharded on a 2 x 2 mesh vs on one device; the shardings; a saved file."""
    initial = numpy_weights(build())
    x, y = data(batches=1)
    ref, ref_losses = reference(initial, x, y, 1)
    distribution = mesh_distribution()
    with distribution.scope():
        model = compile_(build())
        model.set_weights(initial)
        loss = float(model.train_on_batch(x, y))
        path = os.path.join(os.path.dirname(OUT), f"sharded-{KIND}.keras")
        model.save(path)
    layout_map = distribution._layout_map
    return {
        "rows": [list(row) for row in kt.distribution.describe(model, layout_map)],
        "shards": {v.path: list(v.value.addressable_shards[0].data.shape) for v in model.weights},
        "diff": max_diff(numpy_weights(model), numpy_weights(ref)),
        "loss": loss,
        "ref_loss": ref_losses[0],
        "saved": path,
        "weights": [w.tolist() for w in numpy_weights(model)],
    }


def step_time():
    """Median seconds of a compiled training step, 2 x 2 mesh vs one device (docs figure)."""

    def median(model, x, y, repeats=20):
        model.train_on_batch(x, y)  # compile
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - started)
        return sorted(times)[repeats // 2]

    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, size=(16, 128)).astype("int32")
    y = np.roll(x, -1, axis=1)

    def make():
        keras.utils.set_random_seed(0)
        lm = kt.models.build_decoder_lm(256, 128, d_model=256, num_heads=4, num_layers=4)
        return compile_(lm)

    single = median(make(), x, y)
    with mesh_distribution().scope():
        sharded = median(make(), x, y)
    return {"single_s": single, "mesh_2x2_s": sharded, "batch": 16, "length": 128}


def multi(index, count, fit):
    """Distributed training (``fit`` runs it); then, to balance the work, process 0 saves the
    ``.keras`` while process 1 trains the same steps on one device: each writes its weights to
    ``<OUT>.npz`` (the test compares them)."""
    initial = numpy_weights(build())
    x, y = data()
    distributed, losses = fit(initial, x, y)
    result = {"index": index, "count": count, "losses": losses}
    if index == 0:
        path = os.path.join(os.path.dirname(OUT), f"{MODE}.keras")
        distributed.save(path)
        result["saved"] = path
        weights = numpy_weights(distributed)
    else:
        ref, result["ref_losses"] = reference(initial, x, y, STEPS)
        weights = numpy_weights(ref)
    np.savez(OUT + ".npz", *weights)
    return result


def jax_multi():
    from keras_transformers.recipes import distribute

    index, count = distribute.initialize_jax()
    distribution = keras.distribution.DataParallel(auto_shard_dataset=False)
    local = GLOBAL_BATCH // count

    def fit(initial, x, y):
        with distribution.scope():
            model = compile_(build())
            model.set_weights(initial)
            # process p feeds rows p·local .. (p+1)·local - 1 of every global batch
            rows = np.arange(len(x)).reshape(-1, count, local)[:, index].reshape(-1)
            history = model.fit(
                x[rows], y[rows], batch_size=local, epochs=1, shuffle=False, verbose=0
            )
        keras.distribution.set_distribution(None)
        return model, history.history["loss"]

    return multi(index, count, fit)


def tf_multi():
    config = json.loads(os.environ["TF_CONFIG"])
    index, count = config["task"]["index"], len(config["cluster"]["worker"])

    def fit(initial, x, y):
        from keras_transformers.recipes.distribute import symbolic_build_from_local_batch

        with STRATEGY.scope(), symbolic_build_from_local_batch():
            model = compile_(build())
            model.set_weights(initial)
            # the global batch: MultiWorkerMirroredStrategy gives each worker its share
            history = model.fit(x, y, batch_size=GLOBAL_BATCH, shuffle=False, verbose=0)
        return model, history.history["loss"]

    result = multi(index, count, fit)
    result["replicas"] = STRATEGY.num_replicas_in_sync
    return result


if __name__ == "__main__":
    modes = {"model_parallel": model_parallel, "step_time": step_time}
    modes.update(jax_multi=jax_multi, tf_multi=tf_multi)
    result = modes[MODE]()
    with open(OUT, "w") as handle:
        json.dump(result, handle)
