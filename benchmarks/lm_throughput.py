"""Training throughput of a decoder-only language model: ours vs keras-hub vs plain PyTorch.

Three models of the same shape (vocab ``V``, length ``L``, width ``d``, ``h`` heads, ``n`` layers,
feed-forward ``ff``; pre-norm, GELU, no dropout, float32), trained with AdamW on the same token
batches (batch ``B``):

* ``ours``: ``kt.models.build_decoder_lm(..., attention="full", position="learned")`` (token
  embedding tied to the output projection, the builder's default), trained with ``fit()``; with
  each ``jit_compile`` setting asked for (``--jit auto,true,false``).
* ``keras_hub``: ``keras_hub.layers.TokenAndPositionEmbedding`` + ``n`` x
  ``keras_hub.layers.TransformerDecoder`` (decoder-only, causal, ``normalize_first=True``,
  GELU) + final LayerNorm + ``Dense(V)`` head, trained with ``fit()``.
* ``torch`` (when torch is installed): a plain PyTorch GPT, fused QKV projection,
  ``F.scaled_dot_product_attention(is_causal=True)``, pre-norm, tied head, ``torch.optim.AdamW``,
  trained in a plain Python loop.

Each model runs in its own subprocess (``KERAS_BACKEND`` from ``--backend`` for the Keras models),
one after the other, so backends and thread pools do not interfere. With ``--interleave``, ours and
keras_hub instead train in one subprocess, one step of each in turn, so that on a shared machine
both see the same load (the fair ratio). Each run trains
``--warmup`` steps (tracing / XLA compilation happen there), then ``--steps`` timed steps, and
reports training tokens/s = ``B·L·steps / time``. Before the models, a subprocess measures a
float32 matmul peak (GFLOP/s) with numpy, with the Keras backend and with torch; model FLOPs
utilisation (MFU) is the model's training FLOP/s over the best of those peaks.

Model FLOPs per training token: ``6·N + 12·n·L·d`` where ``N`` counts the parameters of every
matmul (Q/K/V/output and feed-forward kernels, and the ``V·d`` output projection; not the
embedding lookups, biases or norms) and ``12·n·L·d`` is the attention score and weighted-value
matmuls (forward ``4·L·d`` per layer, backward twice that; causal kernels may skip half of it,
the count does not).

Mixed precision: a Keras model may be named with a dtype policy, ``ours@mixed_bfloat16`` (built
under that policy; ``--models ours,ours@mixed_bfloat16 --interleave`` trains float32 and
bfloat16 of the same model in one process, one step of each in turn, and reports the
``ours@mixed_bfloat16/ours`` ratio). ``--loss kt`` trains every Keras model with
``kt.losses.SparseSoftmaxCrossEntropy`` (same values as Keras' loss, XLA-fused on TensorFlow)
instead of ``keras.losses.SparseCategoricalCrossentropy(from_logits=True)``; ``kt:0`` /
``keras:0`` add ``ignore_class=0`` (padding, as examples/train_lm.py trains). With
``--interleave``, a comma list (``--loss keras:0,kt:0``) trains every Keras model once per loss
in the one process (labels ``ours@mixed_bfloat16#kt:0``) and reports the ``kt*/keras*`` ratio.

Data: random token sequences from a fixed random bigram process (each token has 4 possible
successors), the same batches in the same order for every model, so the loss falls from
``ln V`` and the first/last losses of the models can be compared ("same numerics").

Usage::

    python benchmarks/lm_throughput.py                      # full size, TensorFlow backend
    python benchmarks/lm_throughput.py --backend jax --steps 30
    python benchmarks/lm_throughput.py --quick --out /tmp/lm.json   # tiny smoke run
    python benchmarks/lm_throughput.py --interleave --steps 12      # ours/keras_hub ratio
    python benchmarks/lm_throughput.py --interleave --models ours,ours@mixed_bfloat16

Prints a table and writes JSON (default ``benchmarks/results/lm_throughput.json``).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(HERE, "results", "lm_throughput.json")

FULL_SIZES = dict(vocab=8192, length=256, d_model=256, heads=4, layers=4, ff=1024, batch=16)
QUICK_SIZES = dict(vocab=128, length=32, d_model=32, heads=2, layers=1, ff=64, batch=4)
MODELS = ("ours", "keras_hub", "torch")
#: Keras dtype policies a Keras model may train under (``--models ours@mixed_bfloat16``)
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
JIT_CHOICES = ("auto", "true", "false")

# The workers (data, model builders, per-step timing) live beside this script; the path makes
# the import work when the script is run from anywhere or loaded from a file by the tests.
if HERE not in sys.path:
    sys.path.insert(0, HERE)
# SUCCESSORS, make_tokens, step_losses_from_running_mean, summarise and the worker_* functions
# are not used here: re-exported, as this script offered them before the split (the smoke
# test reads them from here).
from _lm_workers import (  # noqa: E402, F401
    BETAS,
    EPSILON,
    LEARNING_RATE,
    SUCCESSORS,
    WEIGHT_DECAY,
    make_tokens,
    run_worker,
    split_label,
    step_losses_from_running_mean,
    summarise,
    worker_interleaved,
    worker_keras,
    worker_peak,
    worker_torch,
)


# --------------------------------------------------------------------------- shared helpers
def flops_per_token(sizes):
    """Training FLOPs per token: ``6·N_matmul + 12·n·L·d`` (see the module docstring)."""
    d, ff, n = sizes["d_model"], sizes["ff"], sizes["layers"]
    matmul_params = n * (4 * d * d + 2 * d * ff) + sizes["vocab"] * d
    return 6 * matmul_params + 12 * n * sizes["length"] * d


# --------------------------------------------------------------------------- driver
def launch(spec, backend, timeout):
    """Run one worker in a fresh interpreter; returns its result dict or ``{"error": ...}``."""
    env = dict(os.environ)
    env["KERAS_BACKEND"] = backend
    if spec.get("threads"):
        n = str(spec["threads"])
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = n
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = os.path.join(tmp, "spec.json")
        result_path = os.path.join(tmp, "result.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", spec_path, result_path]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        wall = time.perf_counter() - start
        if proc.returncode != 0 or not os.path.exists(result_path):
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-8:]
            return {"error": f"exit code {proc.returncode}: " + " | ".join(tail)}
        with open(result_path) as f:
            result = json.load(f)
        result["process_s"] = wall
        return result


def parse_list(text, allowed, flag):
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise SystemExit(
            f"{flag}={text!r}: allowed values are {', '.join(allowed)} (comma separated)."
        )
    return list(dict.fromkeys(items))


def interleaved_pairs(labels):
    """The ratios reported for interleaved runs, as ``(numerator, denominator)`` labels: each
    ``ours*`` over the ``keras_hub*`` of the same policy, each policy of a model over its
    float32 run (``ours@mixed_bfloat16`` / ``ours``), both with the same loss, and with several
    ``--loss`` values the kt loss over Keras' (same model, policy and ignore_class)."""
    pairs = []
    for a in labels:
        model_a, policy_a = split_label(a)
        base_a, _, loss_a = a.partition("#")
        for b in labels:
            model_b, policy_b = split_label(b)
            base_b, _, loss_b = b.partition("#")
            if loss_a == loss_b:
                if model_a == "ours" and model_b == "keras_hub" and policy_a == policy_b:
                    pairs.append((a, b))
                elif model_a == model_b and policy_b == "float32" and policy_a != "float32":
                    pairs.append((a, b))
            elif base_a == base_b and loss_a.startswith("kt") and loss_b == "keras" + loss_a[2:]:
                pairs.append((a, b))
    return pairs


def parse_losses(text, interleave):
    """``--loss``: a comma list of ``keras`` / ``kt``, each optionally ``:N`` (ignore_class=N);
    more than one only with ``--interleave``."""
    items = list(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    bad = []
    for item in items:
        kind, colon, ignore = item.partition(":")
        if kind not in ("keras", "kt") or (colon and not ignore.lstrip("-").isdigit()):
            bad.append(item)
    if bad or not items or (len(items) > 1 and not interleave):
        raise SystemExit(
            f"--loss={text!r}: allowed values are keras, kt, keras:N, kt:N (N: the ignore_class "
            "integer); a comma list (keras:0,kt:0) needs --interleave."
        )
    return items


def parse_models(text):
    """``--models``: names of :data:`MODELS`, Keras ones optionally ``name@policy``."""
    items = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = []
    for item in items:
        model, _, policy = item.partition("@")
        if model not in MODELS or (policy and (model == "torch" or policy not in POLICIES)):
            bad.append(item)
    if bad or not items:
        raise SystemExit(
            f"--models={text!r}: allowed values are {', '.join(MODELS)} (comma separated); "
            f"ours and keras_hub may carry a dtype policy, name@policy with policy one of "
            f"{', '.join(POLICIES)} (e.g. ours,ours@mixed_bfloat16)."
        )
    # ours@float32 is ours: one label per distinct model
    return list(
        dict.fromkeys(i[: -len("@float32")] if i.endswith("@float32") else i for i in items)
    )


def torch_available():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def fmt(value, pattern="{:,.0f}"):
    return "-" if value is None else pattern.format(value)


def print_table(runs, peak_gflops):
    header = (
        f"{'model':<24} {'backend':<10} {'jit':<11} {'tokens/s':>9} {'tok/s med':>9} "
        f"{'step ms':>8} {'tok/CPU-s':>9} {'MFU %':>6} {'params':>10} {'loss 1st':>8} "
        f"{'loss end5':>9}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        jit = run["jit"] if run["model"] != "torch" else "-"
        if run["model"] != "torch" and "jit_resolved" in run:
            jit = f"{run['jit']}({'xla' if run['jit_resolved'] else 'no'})"
        if "error" in run:
            print(f"{run['model']:<24} {run['backend']:<10} {jit:<11} ERROR {run['error'][:120]}")
            continue
        mfu = 100 * run["model_gflops"] / peak_gflops if peak_gflops else None
        print(
            f"{run['model']:<24} {run['backend']:<10} {jit:<11} {run['tokens_per_s']:>9,.0f} "
            f"{run['tokens_per_s_median_step']:>9,.0f} {run['step_ms_mean']:>8,.0f} "
            f"{fmt(run['tokens_per_cpu_s']):>9} "
            f"{fmt(mfu, '{:.1f}'):>6} {run['params']:>10,} {run['loss_first']:>8.3f} "
            f"{run['loss_last5_mean']:>9.3f}"
        )
    print(
        "tokens/s: all timed steps; tok/s med: from the median step; tok/CPU-s: tokens per "
        "process CPU second;\nMFU: model FLOP/s over the measured matmul peak; loss end5: mean "
        "training loss of the last 5 steps."
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--backend",
        default="tensorflow",
        choices=("tensorflow", "jax", "torch"),
        help="Keras backend for ours and keras_hub (default tensorflow).",
    )
    parser.add_argument(
        "--models",
        default="ours,keras_hub,torch",
        help="comma list of ours, keras_hub, torch (torch skipped if missing); ours and "
        "keras_hub may name a Keras dtype policy, e.g. ours,ours@mixed_bfloat16 (policies: "
        + ", ".join(POLICIES)
        + "). With --interleave every Keras model listed trains in the one process.",
    )
    parser.add_argument(
        "--jit",
        default="auto,true,false",
        help="jit_compile settings for ours: comma list of auto, true, false. "
        "An explicit setting equal to what auto resolved to is not rerun.",
    )
    parser.add_argument("--hub-jit", default="auto", help="jit_compile settings for keras_hub.")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="train the Keras models of --models (ours, keras_hub, name@policy) in ONE "
        "process, one step of each in turn (first --jit and --hub-jit value), instead of one "
        "process each: a fairer ratio on a shared machine.",
    )
    parser.add_argument(
        "--loss",
        default="keras",
        help="training loss of every Keras model: keras (SparseCategoricalCrossentropy("
        "from_logits=True), default) or kt (kt.losses.SparseSoftmaxCrossEntropy: same values, "
        "XLA-fused float32 statistics on TensorFlow); keras:N / kt:N add ignore_class=N. "
        "With --interleave a comma list (keras:0,kt:0) trains each Keras model once per loss "
        "in the one process.",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps (smoke).")
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps (default 20; 3 quick)."
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed warm-up steps (default 3; 1 quick)."
    )
    for key in FULL_SIZES:
        parser.add_argument(
            f"--{key.replace('_', '-')}",
            type=int,
            default=None,
            help=f"override {key} (default {FULL_SIZES[key]}).",
        )
    parser.add_argument(
        "--untied",
        action="store_true",
        help="untie the output projection of ours and torch (keras_hub's Dense "
        "head is always untied).",
    )
    parser.add_argument(
        "--matmul-size",
        type=int,
        default=None,
        help="matmul peak size n (n x n @ n x n; default 2048, 256 quick).",
    )
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed.")
    parser.add_argument("--data-seed", type=int, default=1234, help="token data seed.")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per subprocess.")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="compute threads for numpy/torch/TensorFlow (0: library defaults).",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="subprocesses at once (default 1; >1 only for smoke runs, the "
        "timings then interfere).",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"JSON path (default {DEFAULT_OUT}).")
    parser.add_argument("--worker", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(*args.worker)
        return 0

    sizes = dict(QUICK_SIZES if args.quick else FULL_SIZES)
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    for key, value in sizes.items():
        if value < 1:
            raise SystemExit(f"--{key.replace('_', '-')}={value}: must be >= 1.")
    if sizes["d_model"] % sizes["heads"]:
        raise SystemExit(
            f"--d-model={sizes['d_model']} must be a multiple of --heads={sizes['heads']}."
        )
    steps = args.steps if args.steps is not None else (3 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    if steps < 1 or warmup < 1:
        raise SystemExit("--steps and --warmup must be >= 1 (warm-up absorbs compilation).")
    models = parse_models(args.models)
    losses = parse_losses(args.loss, args.interleave)
    jits = parse_list(args.jit, JIT_CHOICES, "--jit")
    hub_jits = parse_list(args.hub_jit, JIT_CHOICES, "--hub-jit")
    has_torch = torch_available()
    if "torch" in models and not has_torch:
        print("torch is not installed: skipping the plain PyTorch model.")
        models.remove("torch")
    matmul_size = args.matmul_size or (256 if args.quick else 2048)

    machine = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        machine["load_average_start"] = os.getloadavg()
    except OSError:
        pass
    print(
        f"CPU: {machine['cpu_model']} ({machine['cpu_count']} logical CPUs); "
        f"Keras backend: {args.backend}"
    )
    print(
        f"sizes: {sizes}; warm-up {warmup} + timed {steps} steps; "
        f"{sizes['batch'] * sizes['length']} tokens/step"
    )

    fpt = flops_per_token(sizes)
    base = {
        "kind": "train",
        "sizes": sizes,
        "warmup": warmup,
        "steps": steps,
        "seed": args.seed,
        "data_seed": args.data_seed,
        "untied": args.untied,
        "threads": args.threads,
        "loss": losses[0],
    }
    peak_spec = {
        "kind": "peak",
        "backend": args.backend,
        "matmul_size": matmul_size,
        "matmul_repeats": 3 if args.quick else 5,
        "with_torch": has_torch,
        "threads": args.threads,
    }
    plan = []
    for model in models:
        if model == "torch":
            plan.append(("torch", "torch", "-"))
        elif not args.interleave:
            for jit in jits if split_label(model)[0] == "ours" else hub_jits:
                plan.append((model, args.backend, jit))

    def finish(result, model, backend, jit):
        result.update(model=model, backend=backend, jit=jit)
        if "error" in result:
            print(f"  {model} (jit {jit}) failed: {result['error']}", flush=True)
            return result
        result["model_gflops"] = result["tokens_per_s"] * fpt / 1e9
        print(
            f"  {model} (backend {backend}, jit {jit}): {result['tokens_per_s']:,.0f} tokens/s "
            f"(median step {result['tokens_per_s_median_step']:,.0f}), "
            f"loss {result['loss_first']:.3f} -> {result['loss_last']:.3f}",
            flush=True,
        )
        return result

    runs = []
    if args.jobs > 1:
        # Smoke-test mode: all subprocesses at once; the timings then disturb each other.
        print(f"--jobs {args.jobs}: runs overlap, so the timings below are not comparable.")
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.jobs) as pool:
            peak_future = pool.submit(launch, peak_spec, args.backend, args.timeout)
            futures = [
                (pool.submit(launch, {**base, "model": m, "jit": j}, b, args.timeout), m, b, j)
                for m, b, j in plan
            ]
            peak = peak_future.result()
            runs = [finish(f.result(), m, b, j) for f, m, b, j in futures]
    else:
        peak = launch(peak_spec, args.backend, args.timeout)
    if "error" in peak:
        print(f"matmul peak failed: {peak['error']}")
        peak_gflops = None
    else:
        peaks = {k: v for k, v in peak.items() if k.endswith("_gflops")}
        peak_gflops = max(peaks.values())
        print(
            f"float32 matmul peak ({matmul_size}^2): "
            + ", ".join(f"{k[:-7]} {v:,.1f}" for k, v in peaks.items())
            + f" GFLOP/s -> MFU denominator {peak_gflops:,.1f} GFLOP/s",
            flush=True,
        )

    if args.jobs <= 1:
        resolved_auto = {}
        for model, backend, jit in plan:
            if jit in ("true", "false") and resolved_auto.get(model) == (jit == "true"):
                print(f"  {model} jit={jit}: same as jit=auto on this backend, not rerun.")
                continue
            print(f"running {model} (backend {backend}, jit {jit}) ...", flush=True)
            result = finish(
                launch({**base, "model": model, "jit": jit}, backend, args.timeout),
                model,
                backend,
                jit,
            )
            if jit == "auto" and "error" not in result:
                resolved_auto[model] = result["jit_resolved"]
            runs.append(result)
    labels = [m for m in models if m != "torch"]
    if len(losses) > 1:  # one label per model and loss: ours@mixed_bfloat16#kt:0
        labels = [f"{m}#{loss}" for m in labels for loss in losses]
    if args.interleave and labels:
        spec = {
            **base,
            "kind": "interleaved",
            "labels": labels,
            "jits": {"ours": jits[0], "keras_hub": hub_jits[0]},
        }
        print(f"running {' + '.join(labels)} interleaved in one process ...", flush=True)
        both = launch(spec, args.backend, args.timeout)
        for name in labels:
            result = both.get(name, both) if "error" not in both else dict(both)
            label = spec["jits"][split_label(name)[0]] + "/il"
            runs.append(finish(dict(result), name, args.backend, label))
    for result in runs:
        if peak_gflops and "error" not in result:
            result["mfu"] = result["model_gflops"] / peak_gflops

    def best(model, key="tokens_per_s"):
        ok = [r[key] for r in runs if r["model"] == model and "error" not in r]
        return max(ok) if ok else None

    ratios = {}
    ours_runs = [r for r in runs if r["model"] == "ours" and "error" not in r]
    for other in ("keras_hub", "torch"):
        ref = best(other)
        if ref is None:
            continue
        for key in ("tokens_per_s", "tokens_per_s_median_step"):
            ref_key = best(other, key)
            suffix = "" if key == "tokens_per_s" else "_median_step"
            if ours_runs:
                ratios[f"ours_best/{other}{suffix}"] = best("ours", key) / ref_key
            for r in ours_runs:
                ratios[f"ours[jit={r['jit']}]/{other}{suffix}"] = r[key] / ref_key

    inter = {r["model"]: r for r in runs if r["jit"].endswith("/il") and "error" not in r}
    for a, b in interleaved_pairs(list(inter)):
        for key, suffix in (("tokens_per_s", ""), ("tokens_per_cpu_s", "_per_cpu_s")):
            ratios[f"interleaved {a}/{b}{suffix}"] = inter[a][key] / inter[b][key]
    print()
    print_table(runs, peak_gflops)
    print()
    for name, value in ratios.items():
        if "median" not in name:
            print(f"{name}: {value:.2f}x")
    try:
        machine["load_average_end"] = os.getloadavg()
    except OSError:
        pass

    report = {
        "command": " ".join(
            ["python", "benchmarks/lm_throughput.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine,
        "backend": args.backend,
        "sizes": sizes,
        "warmup": warmup,
        "steps": steps,
        "tokens_per_step": sizes["batch"] * sizes["length"],
        "flops_per_token": fpt,
        "optimizer": {
            "name": "AdamW",
            "learning_rate": LEARNING_RATE,
            "weight_decay": WEIGHT_DECAY,
            "betas": BETAS,
            "epsilon": EPSILON,
        },
        "threads": args.threads,
        "loss": args.loss,
        "jobs": args.jobs,
        "peak": peak,
        "peak_gflops": peak_gflops,
        "runs": runs,
        "ratios": ratios,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {args.out}")
    return 0 if all("error" not in r for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
