"""The matmul ceiling of the blocked attention engine on TensorFlow, against PyTorch SDPA.

Causal exact attention, forward + backward, does seven tile matmuls per pair of tiles (forward
``S = QKᵀ`` and ``O += PV``; backward ``S`` again, ``dP = dO Vᵀ``, ``dV += Pᵀ dO``,
``dQ += dS K``, ``dK += dSᵀ Q``), ``3.5 · 4 · L² · dh · h / 2`` FLOPs in all. This script
measures, in one process with the runs interleaved:

1. the rate of one tile matmul of each shape (``T = --tile``, ``dh``, ``h`` heads, batch 1):
   ``tf.matmul`` inside a ``tf.while_loop`` with ``parallel_iterations=1`` (as the engine runs
   its tiles) and ``torch.matmul`` in a Python loop, in GFLOP/s over all cores;
2. one causal forward + backward at ``--length``: the engine
   (:func:`keras_transformers.ops.flash_attention.flash_attention`, ``tf.function``) and
   ``torch.nn.functional.scaled_dot_product_attention`` (its fused flash CPU kernel), wall and
   CPU time and effective GFLOP/s;
3. the *matmul floor* of the engine: its FLOPs at the measured TensorFlow tile-matmul rates, the
   time the seven matmuls alone take before any softmax, masking or loop overhead.

When the floor is above SDPA's whole step, no arrangement of ``keras.ops`` tiles on TensorFlow
reaches SDPA: that needs a fused kernel (issue 16's ``full <= SDPA`` goal).

    python benchmarks/matmul_ceiling.py                         # L=8192, T=512, h=4, dh=64
    python benchmarks/matmul_ceiling.py --length 16384 --output benchmarks/results/m.json
    python benchmarks/matmul_ceiling.py --quick                 # tiny, a smoke test
"""

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow, PyTorch and keras_transformers are imported in the functions that use them, so that
# --help answers at once

#: The engine's matmuls per pair of tiles: (name, count in forward + backward, A shape, B shape)
#: with ``T`` the tile and ``d`` the head size; ``n·T²·d·2`` FLOPs each.
SHAPES = (
    ("S = Q Kᵀ, dP = dO Vᵀ", 3, ("T", "d"), ("d", "T")),
    ("O += P V, dV += Pᵀ dO, dQ += dS K, dK += dSᵀ Q", 4, ("T", "T"), ("T", "d")),
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--length", type=int, default=8192, help="sequence length L (default 8192)")
    p.add_argument("--tile", type=int, default=512, help="tile size T (the engine's default)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--matmuls", type=int, default=200, help="tile matmuls per rate measurement")
    p.add_argument("--repeats", type=int, default=5, help="interleaved attention steps each")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--output", help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.quick:
        args.length, args.tile, args.matmuls, args.repeats = 256, 64, 20, 2
    for name in ("length", "tile", "heads", "head_dim", "matmuls", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)}: must be >= 1")
    return args


def _shape(symbols, tile, head_dim, heads):
    return (1, heads) + tuple(tile if s == "T" else head_dim for s in symbols)


def matmul_rates(args):
    """GFLOP/s of each tile shape: ``{name: {"tensorflow": r, "torch": r}}``."""
    import tensorflow as tf
    import torch

    rng = np.random.default_rng(0)
    rates = {}
    for name, _, a_sym, b_sym in SHAPES:
        a = rng.normal(size=_shape(a_sym, args.tile, args.head_dim, args.heads)).astype("float32")
        b = rng.normal(size=_shape(b_sym, args.tile, args.head_dim, args.heads)).astype("float32")
        flops = 2.0 * args.heads * a.shape[-2] * a.shape[-1] * b.shape[-1] * args.matmuls
        # the loop index perturbs the smaller (T, d) operand so that no matmul is loop-invariant
        small_is_b = b.size <= a.size
        ta, tb = tf.constant(a), tf.constant(b)

        @tf.function
        def tf_loop(ta, tb, small_is_b=small_is_b):
            def body(i, acc):
                shift = tf.cast(i, tf.float32)
                out = tf.matmul(ta, tb + shift) if small_is_b else tf.matmul(ta + shift, tb)
                return i + 1, acc + out[0, 0, 0, 0]

            loop = tf.while_loop(
                lambda i, _: i < args.matmuls, body, (0, 0.0), parallel_iterations=1
            )
            return loop[1]

        pa, pb = torch.tensor(a), torch.tensor(b)

        def torch_loop(pa=pa, pb=pb, small_is_b=small_is_b):
            acc = 0.0
            for i in range(args.matmuls):
                out = torch.matmul(pa, pb + i) if small_is_b else torch.matmul(pa + i, pb)
                acc += float(out[0, 0, 0, 0])
            return acc

        runs = {
            "tensorflow": lambda f=tf_loop, a=ta, b=tb: f(a, b).numpy(),
            "torch": torch_loop,
        }
        seconds = {key: [] for key in runs}
        for run in runs.values():
            run()  # trace / warm up
        for _ in range(3):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[key].append(time.perf_counter() - start)
        rates[name] = {key: flops / float(np.median(s)) / 1e9 for key, s in seconds.items()}
    return rates


def attention_flops(args):
    """FLOPs of the seven matmuls of a causal forward + backward (half the pairs)."""
    return 3.5 * 4.0 * args.length**2 / 2.0 * args.head_dim * args.heads


def attention_steps(args):
    """Median wall / CPU seconds of one causal forward + backward: engine (TF) and SDPA."""
    import tensorflow as tf
    import torch

    from keras_transformers.ops.flash_attention import flash_attention

    shape = (1, args.heads, args.length, args.head_dim)
    rng = np.random.default_rng(1)
    q, k, v = (rng.normal(size=shape).astype("float32") for _ in range(3))
    tq, tk, tv = (tf.constant(x) for x in (q, k, v))

    @tf.function
    def engine(q, k, v):
        with tf.GradientTape() as tape:
            tape.watch([q, k, v])
            out = flash_attention(q, k, v, causal=True, block_size=args.tile)  # (B, h, L, dh)
            loss = tf.reduce_sum(out * out)
        return tape.gradient(loss, [q, k, v])

    pq, pk, pv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))

    def sdpa():
        out = torch.nn.functional.scaled_dot_product_attention(pq, pk, pv, is_causal=True)
        (out * out).sum().backward()

    runs = {"engine_tensorflow": lambda: [g.numpy() for g in engine(tq, tk, tv)], "sdpa": sdpa}
    for run in runs.values():
        run()
        run()
    times = {key: ([], []) for key in runs}
    for _ in range(args.repeats):
        for key, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            times[key][0].append(time.perf_counter() - wall)
            times[key][1].append(time.process_time() - cpu)
    return {key: (float(np.median(w)), float(np.median(c))) for key, (w, c) in times.items()}


def main(argv=None):
    args = parse_args(argv)
    rates = matmul_rates(args)
    steps = attention_steps(args)
    total = attention_flops(args)
    # the floor: each shape's share of the FLOPs at TensorFlow's rate for that shape
    per_kind = {name: count / 7.0 * total for name, count, _, _ in SHAPES}
    floor = sum(per_kind[name] / (rates[name]["tensorflow"] * 1e9) for name in per_kind)
    sdpa_wall = steps["sdpa"][0]

    print(f"tile matmuls, T={args.tile}, dh={args.head_dim}, h={args.heads} (GFLOP/s, all cores)")
    print("| matmuls | TensorFlow tf.matmul | torch.matmul | TF / torch |")
    print("|---|---:|---:|---:|")
    for name, rate in rates.items():
        ratio = rate["tensorflow"] / rate["torch"]
        print(f"| {name} | {rate['tensorflow']:.0f} | {rate['torch']:.0f} | {ratio:.2f} |")
    print(f"\ncausal forward + backward, L={args.length} ({total / 1e9:.1f} GFLOP of matmuls)")
    print("| | wall ms | CPU ms | effective GFLOP/s | / SDPA wall |")
    print("|---|---:|---:|---:|---:|")
    for key, (wall, cpu) in steps.items():
        print(
            f"| {key} | {wall * 1e3:.0f} | {cpu * 1e3:.0f} | {total / wall / 1e9:.0f} | "
            f"{wall / sdpa_wall:.2f} |"
        )
    print(
        f"| engine matmul floor (TF tile rates) | {floor * 1e3:.0f} | | | {floor / sdpa_wall:.2f} |"
    )
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(
                {
                    "args": vars(args),
                    "matmul_gflops": rates,
                    "steps_wall_cpu_s": steps,
                    "attention_gflop": total / 1e9,
                    "engine_matmul_floor_s": floor,
                },
                handle,
                indent=1,
            )


if __name__ == "__main__":
    main()
