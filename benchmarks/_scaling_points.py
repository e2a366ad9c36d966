"""One (variant, L) point of ``benchmarks/attention_scaling.py``, run in its own process.

``python benchmarks/_scaling_points.py '<spec JSON>'`` builds the layer (or the plain PyTorch
SDPA baseline for ``variant="sdpa"``), traces/compiles one forward+backward step, runs it once
untimed and ``repeats`` times timed, and prints one line ``RESULT {json}``: median and minimum
time (ms), tracing and first-step seconds, and the peak RSS over the steps above the RSS after
tracing (``VmHWM`` after ``malloc_trim`` and ``/proc/self/clear_refs``; ``ru_maxrss`` where that
is not available). The parent script launches it per point, watches its RSS and kills it on
``--timeout`` / ``--max-memory``.

``python benchmarks/_scaling_points.py --interleave '<list of specs>' REPEATS`` times several
variants at one L in one process with their steps interleaved (``attention_scaling.py
--interleave``): ratios that a changing load on a shared machine does not skew.
"""

import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_kib(field="VmRSS"):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak():
    """Release freed heap to the OS and reset the RSS high-water mark; True on success."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_kib(reset_ok):
    if reset_ok:
        value = _rss_kib("VmHWM")
        if value is not None:
            return value
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _make_step(mha, length, d_model, jit):
    """``(prepare, run)``: ``prepare()`` traces/compiles the forward+backward step without
    running it, ``run()`` runs one step on the active backend."""
    import keras
    import numpy as np

    backend = keras.backend.backend()
    x_np = np.random.default_rng(0).normal(size=(1, length, d_model)).astype("float32")
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x_np)

        @tf.function(jit_compile=jit)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = mha(x)
                loss = tf.reduce_mean(tf.square(y))
            grads = tape.gradient(loss, [x] + mha.trainable_variables)
            return loss, grads

        def prepare():
            step.get_concrete_function(x)

        def run():
            loss, grads = step(x)
            return float(loss.numpy()) + float(tf.reduce_sum(grads[0]).numpy())

        return prepare, run
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in mha.trainable_variables]
        frozen = [v.value for v in mha.non_trainable_variables]
        x = jnp.asarray(x_np)

        def loss_fn(tv, x):
            y, _ = mha.stateless_call(tv, frozen, x)
            return jnp.mean(jnp.square(y))

        # JAX always compiles; --jit is for TensorFlow.
        jitted = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))
        compiled = {}

        def prepare():
            compiled["fn"] = jitted.lower(trainable, x).compile()

        def run():
            loss, grads = compiled.get("fn", jitted)(trainable, x)
            jax.block_until_ready(grads)
            return float(loss)

        return prepare, run
    if backend == "torch":
        import torch

        x = torch.tensor(x_np, requires_grad=True)

        def run():
            mha.zero_grad()
            x.grad = None
            y = mha(x)
            loss = torch.mean(torch.square(y))
            loss.backward()
            return float(loss.detach())

        return (lambda: None), run
    raise ValueError(f"unsupported backend {backend!r}")


def _sdpa_step(length, d_model, num_heads, causal):
    """``(prepare, run)`` of the plain PyTorch SDPA layer (the best-exact baseline)."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    qkv = torch.nn.Linear(d_model, 3 * d_model)
    proj = torch.nn.Linear(d_model, d_model)
    x_np = np.random.default_rng(0).normal(size=(1, length, d_model)).astype("float32")
    x = torch.tensor(x_np, requires_grad=True)
    dh = d_model // num_heads

    def run():
        qkv.zero_grad()
        proj.zero_grad()
        x.grad = None
        q, k, v = qkv(x).view(1, length, 3, num_heads, dh).permute(2, 0, 3, 1, 4)  # (B, h, L, dh)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        y = proj(y.transpose(1, 2).reshape(1, length, d_model))
        loss = torch.mean(torch.square(y))
        loss.backward()
        return float(loss.detach())

    return (lambda: None), run


def build_step(spec):
    """``(prepare, run, backend)`` of one spec: the layer (or the PyTorch SDPA baseline)."""
    if spec["variant"] == "sdpa":
        prepare, run = _sdpa_step(
            spec["length"], spec["d_model"], spec["num_heads"], spec["causal"]
        )
        return prepare, run, "torch"
    import keras

    import keras_transformers as kt

    keras.utils.set_random_seed(0)
    name, _, position = spec["variant"].partition("@")
    mha = kt.attention.MultiHeadAttention(
        num_heads=spec["num_heads"],
        key_dim=spec["d_model"] // spec["num_heads"],
        attention={"name": name, **spec["config"]},
        position=position or None,
        causal=spec["causal"],
    )
    mha.build((1, spec["length"], spec["d_model"]))
    prepare, run = _make_step(mha, spec["length"], spec["d_model"], spec.get("jit"))
    return prepare, run, keras.backend.backend()


def run_interleaved(specs, repeats):
    """Time several variants at one L in this process, their steps interleaved (round ``r``
    runs every variant once), so that a change of load hits them alike; print one
    ``RESULT {json}`` per variant: median wall and CPU (process) ms. No memory figure."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    import numpy as np

    steps = []
    for spec in specs:
        prepare, run, backend = build_step(spec)
        prepare()
        run()  # first step (one-time set-up), not timed
        steps.append((spec, run, backend, [], []))
    for _ in range(repeats):
        for _, run, _, wall, cpu in steps:
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    for spec, _, backend, wall, cpu in steps:
        result = {
            "variant": spec["variant"], "length": spec["length"], "status": "ok",
            "time_ms": 1000.0 * float(np.median(wall)), "cpu_ms": 1000.0 * float(np.median(cpu)),
            "times_ms": [1000.0 * t for t in wall], "backend": backend,
        }  # fmt: skip
        print("RESULT " + json.dumps(result), flush=True)


def run_worker(spec):
    """Measure one (variant, L); print one JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    import numpy as np

    prepare, run, backend = build_step(spec)
    start = time.perf_counter()
    prepare()  # tracing / compilation, no step yet
    trace_s = time.perf_counter() - start
    # Memory: RSS high-water mark over the steps, above the RSS after tracing. (Measured from
    # the first step: allocators keep freed memory, so later steps reuse it without new RSS.)
    reset_ok = _reset_peak()
    base = _rss_kib() if reset_ok else _peak_kib(False)
    start = time.perf_counter()
    run()  # first step (one-time kernel set-up), not timed
    first_s = time.perf_counter() - start
    times = []
    for _ in range(spec["repeats"]):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    peak = _peak_kib(reset_ok)
    result = {
        "status": "ok",
        "time_ms": 1000.0 * float(np.median(times)),
        "time_min_ms": 1000.0 * float(np.min(times)),
        "trace_s": trace_s,
        "first_step_s": first_s,
        "peak_mib": max(peak - base, 0) / 1024.0 if base is not None else None,
        "peak_total_mib": peak / 1024.0,
        "memory_method": "VmHWM delta" if reset_ok else "ru_maxrss delta",
        "backend": backend,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--interleave":
        run_interleaved(json.loads(sys.argv[2]), int(sys.argv[3]))
    else:
        run_worker(json.loads(sys.argv[1]))
