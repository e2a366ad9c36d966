"""The worker side of ``benchmarks/lm_throughput.py``: data, models and per-step timing.

``python benchmarks/lm_throughput.py --worker SPEC RESULT`` (launched by the script, one fresh
interpreter per run) calls :func:`run_worker`, which reads the JSON spec, builds and trains one
model (or measures the matmul peak, or trains the Keras models interleaved) and writes the result
JSON. Here:

* the token data (:func:`make_tokens`, a fixed random bigram process) and the figures of a run
  (:func:`summarise`: tokens/s, tokens per CPU second, step times, losses);
* the models: ``ours`` (``kt.models.build_decoder_lm``), the keras-hub decoder-only LM
  (:func:`build_keras_hub_lm`) and the plain PyTorch GPT (in :func:`worker_torch`), with the
  AdamW settings below shared by all;
* the workers: :func:`worker_peak` (float32 matmul GFLOP/s), :func:`worker_keras` (``fit()``),
  :func:`worker_interleaved` (Keras models in one process, one step of each in turn) and
  :func:`worker_torch` (plain Python loop).

Heavy libraries (numpy, Keras, TensorFlow, JAX, torch) are imported inside the functions, so
importing this module (and ``lm_throughput.py --help``) stays instant.
"""

import json
import os
import statistics
import time

#: successors of each token in the bigram process of :func:`make_tokens`
SUCCESSORS = 4

# AdamW settings shared by every model.
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01
BETAS = (0.9, 0.999)
EPSILON = 1e-8


# --------------------------------------------------------------------------- shared helpers
def make_tokens(sizes, num_batches, seed):
    """``(num_batches·B, L + 1)`` int32 tokens from a fixed random bigram process."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab, length = sizes["vocab"], sizes["length"]
    successors = rng.integers(0, vocab, size=(vocab, SUCCESSORS))
    rows = num_batches * sizes["batch"]
    tokens = np.empty((rows, length + 1), dtype="int32")
    tokens[:, 0] = rng.integers(0, vocab, size=rows)
    for t in range(length):
        choice = rng.integers(0, SUCCESSORS, size=rows)
        tokens[:, t + 1] = successors[tokens[:, t], choice]
    return tokens


def step_losses_from_running_mean(means):
    """Per-step losses from Keras' running epoch mean ``m_i`` (equal batch sizes)."""
    losses, previous = [], 0.0
    for i, m in enumerate(means):
        losses.append((i + 1) * m - i * previous)
        previous = m
    return losses


def summarise(step_times, cpu_times, losses, sizes, warmup):
    """Throughput and loss figures from per-step wall and CPU times (warm-up steps included).

    ``cpu_times`` are the process CPU seconds (all threads) of each step: on a machine shared
    with other jobs they vary less than wall time (but include spin-waiting of thread pools).
    """
    tokens = sizes["batch"] * sizes["length"]
    timed = step_times[warmup:]
    total = sum(timed)
    median = statistics.median(timed)
    cpu = sum(cpu_times[warmup:])
    return {
        "tokens_per_cpu_s": tokens * len(timed) / cpu if cpu > 0 else None,
        "cpu_s_per_step": cpu / len(timed),
        "tokens_per_s": tokens * len(timed) / total,
        "tokens_per_s_median_step": tokens / median,
        "step_ms_mean": 1e3 * total / len(timed),
        "step_ms_median": 1e3 * median,
        "step_ms_min": 1e3 * min(timed),
        "step_ms_max": 1e3 * max(timed),
        "warmup_s": sum(step_times[:warmup]),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_last5_mean": statistics.fmean(losses[-5:]),
        "losses": losses,
    }


# --------------------------------------------------------------------------- workers
def worker_peak(spec):
    """Best-of-N GFLOP/s of an ``n x n`` float32 matmul with numpy, the backend and torch."""
    import numpy as np

    n, repeats = spec["matmul_size"], spec["matmul_repeats"]
    flops = 2.0 * n**3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype="float32")
    b = rng.standard_normal((n, n), dtype="float32")

    def best(fn):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9

    result = {"matmul_size": n, "numpy_gflops": best(lambda: a @ b)}
    backend = spec["backend"]
    if backend == "tensorflow":
        import tensorflow as tf

        ta, tb = tf.constant(a), tf.constant(b)
        result["backend_gflops"] = best(lambda: tf.matmul(ta, tb).numpy())
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        ja, jb = jnp.asarray(a), jnp.asarray(b)
        mm = jax.jit(jnp.matmul)
        result["backend_gflops"] = best(lambda: mm(ja, jb).block_until_ready())
    if backend == "torch" or spec["with_torch"]:
        import torch

        pa, pb = torch.from_numpy(a), torch.from_numpy(b)
        result["torch_gflops"] = best(lambda: torch.matmul(pa, pb))
        if backend == "torch":
            result["backend_gflops"] = result["torch_gflops"]
    return result


def build_keras_hub_lm(sizes):
    import keras
    import keras_hub

    token_ids = keras.Input(shape=(sizes["length"],), dtype="int32", name="token_ids")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        vocabulary_size=sizes["vocab"],
        sequence_length=sizes["length"],
        embedding_dim=sizes["d_model"],
        name="embedding",
    )(token_ids)
    for i in range(sizes["layers"]):
        x = keras_hub.layers.TransformerDecoder(
            intermediate_dim=sizes["ff"],
            num_heads=sizes["heads"],
            activation="gelu",
            layer_norm_epsilon=1e-5,
            normalize_first=True,
            name=f"decoder_{i}",
        )(x)  # decoder-only: no encoder_sequence, causal mask by default
    x = keras.layers.LayerNormalization(epsilon=1e-5, name="final_norm")(x)
    logits = keras.layers.Dense(sizes["vocab"], name="head")(x)
    return keras.Model(token_ids, logits, name="keras_hub_lm")


def split_label(label):
    """``"ours@mixed_bfloat16"`` -> ``("ours", "mixed_bfloat16")``; no ``@``: float32. A loss
    tag (``"ours@mixed_bfloat16#kt:0"``, see :func:`make_loss`) is not part of either."""
    model, _, policy = label.partition("#")[0].partition("@")
    return model, policy or "float32"


def make_loss(name):
    """``--loss`` value -> Keras loss: ``keras`` / ``kt`` (Keras' sparse cross-entropy from
    logits / ``kt.losses.SparseSoftmaxCrossEntropy``), ``:N`` adding ``ignore_class=N``."""
    import keras

    kind, _, ignore = name.partition(":")
    ignore_class = int(ignore) if ignore else None
    if kind == "kt":
        import keras_transformers as kt

        return kt.losses.SparseSoftmaxCrossEntropy(ignore_class=ignore_class)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=ignore_class)


def build_compiled(spec, model_name, jit_name):
    """Build and compile ``ours`` or ``keras_hub`` (seeded) with the shared AdamW and loss.

    ``model_name`` may carry a dtype policy (``ours@mixed_bfloat16``): the model is built under
    it (the global policy is restored afterwards), so both precisions can share a process.
    """
    import keras

    sizes = spec["sizes"]
    loss = make_loss(model_name.partition("#")[2] or spec.get("loss", "keras"))
    model_name, policy = split_label(model_name)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = _build_uncompiled(spec, model_name, sizes)
    finally:
        keras.config.set_dtype_policy(previous)
    jit = {"auto": "auto", "true": True, "false": False}[jit_name]
    optimizer = keras.optimizers.AdamW(
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        beta_1=BETAS[0],
        beta_2=BETAS[1],
        epsilon=EPSILON,
    )
    # a mixed_float16 model gets Keras' loss-scale optimizer (from its dtype policy)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=jit)
    return model


def _build_uncompiled(spec, model_name, sizes):
    import keras

    keras.utils.set_random_seed(spec["seed"])
    if model_name == "ours":
        import keras_transformers as kt

        model = kt.models.build_decoder_lm(
            vocab_size=sizes["vocab"],
            max_length=sizes["length"],
            d_model=sizes["d_model"],
            num_heads=sizes["heads"],
            num_layers=sizes["layers"],
            ff_dim=sizes["ff"],
            attention="full",
            position="learned",
            tie_embeddings=not spec["untied"],
        )
    else:
        model = build_keras_hub_lm(sizes)
    return model


def worker_interleaved(spec):
    """Keras models (default ``ours`` and ``keras_hub``) in one process, one step of each in turn.

    All models see the same load at the same time (the order rotates every step), which
    makes their ratios far less noisy on a shared machine than separate runs. Steps use
    ``train_on_batch`` (per-batch losses). ``spec["labels"]`` lists the models, each
    ``name`` or ``name@policy`` (``ours@mixed_bfloat16``); ``spec["jits"]`` maps a base name
    to its jit setting.
    """
    import keras

    sizes, warmup, steps = spec["sizes"], spec["warmup"], spec["steps"]
    names = tuple(spec.get("labels", ("ours", "keras_hub")))
    models = {n: build_compiled(spec, n, spec["jits"][split_label(n)[0]]) for n in names}
    tokens = make_tokens(sizes, warmup + steps, spec["data_seed"])
    batch = sizes["batch"]
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    losses = {n: [] for n in names}
    for i in range(warmup + steps):
        chunk = tokens[i * batch : (i + 1) * batch]
        shift = i % len(names)
        order = names[shift:] + names[:shift]
        for n in order if i % 2 == 0 else order[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            loss = models[n].train_on_batch(chunk[:, :-1], chunk[:, 1:])
            losses[n].append(float(loss))  # waits for the step
            times[n].append(time.perf_counter() - start)
            cpu[n].append(time.process_time() - start_cpu)
    result = {}
    for n in names:
        r = summarise(times[n], cpu[n], losses[n], sizes, warmup)
        r.update(
            jit_resolved=bool(models[n].jit_compile),
            params=int(models[n].count_params()),
            dtype_policy=models[n].dtype_policy.name,
            timed_s=sum(times[n][warmup:]),
            keras_version=keras.__version__,
        )
        result[n] = r
    return result


def worker_keras(spec):
    import keras

    sizes, warmup, steps = spec["sizes"], spec["warmup"], spec["steps"]
    model = build_compiled(spec, spec["model"], spec["jit"])
    resolved_jit = bool(model.jit_compile)
    tokens = make_tokens(sizes, warmup + steps, spec["data_seed"])
    x, y = tokens[:, :-1], tokens[:, 1:]

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self.means = [], []

            self.cpu = []

        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()
            self.start_cpu = time.process_time()

        def on_train_batch_end(self, batch, logs=None):
            self.means.append(float(logs["loss"]))  # also waits for the step to finish
            self.times.append(time.perf_counter() - self.start)
            self.cpu.append(time.process_time() - self.start_cpu)

    timer = StepTimer()
    start = time.perf_counter()
    model.fit(
        x, y, batch_size=sizes["batch"], epochs=1, shuffle=False, verbose=0, callbacks=[timer]
    )
    fit_s = time.perf_counter() - start
    losses = step_losses_from_running_mean(timer.means)
    result = summarise(timer.times, timer.cpu, losses, sizes, warmup)
    timed = sum(timer.times[warmup:])
    result.update(
        jit_resolved=resolved_jit,
        params=int(model.count_params()),
        dtype_policy=model.dtype_policy.name,
        fit_s=fit_s,
        fit_overhead_s=fit_s - sum(timer.times),
        timed_s=timed,
        keras_version=keras.__version__,
    )
    return result


def worker_torch(spec):
    import torch
    from torch import nn
    from torch.nn import functional as F

    sizes, warmup, steps = spec["sizes"], spec["warmup"], spec["steps"]
    d, heads = sizes["d_model"], sizes["heads"]
    torch.manual_seed(spec["seed"])

    def linear(n_in, n_out):
        layer = nn.Linear(n_in, n_out)
        nn.init.xavier_uniform_(layer.weight)  # Keras' glorot_uniform
        nn.init.zeros_(layer.bias)
        return layer

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(d, eps=1e-5)
            self.qkv = linear(d, 3 * d)
            self.proj = linear(d, d)
            self.norm2 = nn.LayerNorm(d, eps=1e-5)
            self.fc1 = linear(d, sizes["ff"])
            self.fc2 = linear(sizes["ff"], d)

        def forward(self, x):
            b, length, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)  # (B, L, d) each
            q, k, v = (t.view(b, length, heads, d // heads).transpose(1, 2) for t in (q, k, v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, h, L, dh)
            x = x + self.proj(a.transpose(1, 2).reshape(b, length, d))
            return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.token = nn.Embedding(sizes["vocab"], d)
            nn.init.uniform_(self.token.weight, -0.05, 0.05)  # Keras' Embedding default
            self.position = nn.Parameter(torch.empty(sizes["length"], d))
            nn.init.xavier_uniform_(self.position)
            self.blocks = nn.ModuleList(Block() for _ in range(sizes["layers"]))
            self.norm = nn.LayerNorm(d, eps=1e-5)
            self.head = None if not spec["untied"] else linear(d, sizes["vocab"])

        def forward(self, ids):
            x = self.token(ids) + self.position[: ids.shape[1]]
            for block in self.blocks:
                x = block(x)
            x = self.norm(x)
            return self.head(x) if self.head is not None else x @ self.token.weight.T

    model = GPT()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=LEARNING_RATE, betas=BETAS, eps=EPSILON, weight_decay=WEIGHT_DECAY
    )
    tokens = torch.from_numpy(make_tokens(sizes, warmup + steps, spec["data_seed"])).long()
    batch = sizes["batch"]
    times, cpu_times, losses = [], [], []
    model.train()
    for i in range(warmup + steps):
        chunk = tokens[i * batch : (i + 1) * batch]
        start, start_cpu = time.perf_counter(), time.process_time()
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, sizes["vocab"]), chunk[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    result = summarise(times, cpu_times, losses, sizes, warmup)
    result.update(
        jit_resolved=False,
        params=sum(p.numel() for p in model.parameters()),
        timed_s=sum(times[warmup:]),
        torch_version=torch.__version__,
        torch_threads=torch.get_num_threads(),
    )
    return result


def set_threads(threads, backend):
    """Pin the compute thread count of numpy/torch/TensorFlow (0 = library defaults)."""
    if not threads:
        return
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def run_worker(spec_path, result_path):
    with open(spec_path) as f:
        spec = json.load(f)
    kind = spec["kind"]
    set_threads(spec.get("threads", 0), os.environ.get("KERAS_BACKEND", "tensorflow"))
    if kind == "peak":
        result = worker_peak(spec)
    elif kind == "interleaved":
        result = worker_interleaved(spec)
    elif spec["model"] == "torch":
        result = worker_torch(spec)
    else:
        result = worker_keras(spec)
    with open(result_path, "w") as f:
        json.dump(result, f)
