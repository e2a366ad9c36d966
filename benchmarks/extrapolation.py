"""Length extrapolation ("train short, test long"): which position encodings keep working past the
training length? A small ALiBi-paper style experiment (Press et al., 2022, Fig. 1 / Fig. 11).

For each position encoding (``sinusoidal``, ``learned``, ``rope``, ``alibi``, ``t5``, and the
DA-Transformer ``distance_aware`` attention core with no position encoding) the script

1. trains a small byte-level decoder LM (``kt.models.build_decoder_lm``, full attention) on the
   built-in text (standard-library docstrings, ``kt.data.builtin_text`` + ``ByteTokenizer``) with
   windows of the training length ``L`` (same data, seed, steps and optimizer for every row);
2. evaluates it on held-out text cut into non-overlapping windows of ``L``, ``2L``, ``4L``
   (``--factors``) with the same number of tokens at every length: a model of the longer length
   is built with the same builder and the trained weights are copied into it (all weights are
   length independent). The loss is averaged over every token of every window (the paper's
   non-overlapping evaluation), so at ``4L`` three quarters of the tokens sit at positions the
   model never saw in training. The learned table has exactly ``L`` rows: it cannot be evaluated
   past ``L`` and its cell shows the layer's error message instead.

Prints a table (loss and perplexity per length), writes JSON (``--out``, default
``benchmarks/results/extrapolation.json``) and a PNG (``--plot``, default
``docs/images/extrapolation.png``): loss against evaluation length, and loss against token
position at the longest length.

Usage::

    python benchmarks/extrapolation.py                  # defaults, ~5-8 min on 2 busy CPU cores
    python benchmarks/extrapolation.py --seq-len 64 --steps 800 --positions alibi sinusoidal
    python benchmarks/extrapolation.py --quick --out /tmp/x.json --plot /tmp/x.png   # seconds
"""

import argparse
import json
import math
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(HERE, "results", "extrapolation.json")
DEFAULT_PLOT = os.path.join(REPO, "docs", "images", "extrapolation.png")

#: Row name -> (attention, position) for ``build_decoder_lm``.
ROWS = {
    "sinusoidal": ("full", "sinusoidal"),
    "learned": ("full", "learned"),
    "rope": ("full", "rope"),
    "alibi": ("full", "alibi"),
    "t5": ("full", "t5"),
    "distance_aware": ("distance_aware", None),
}
#: One colour per row in both panels.
COLORS = {
    "sinusoidal": "tab:blue",
    "learned": "tab:orange",
    "rope": "tab:green",
    "alibi": "tab:red",
    "t5": "tab:purple",
    "distance_aware": "tab:brown",
}
DEFAULTS = dict(
    seq_len=32,
    factors=[1, 2, 4],
    d_model=64,
    heads=4,
    layers=2,
    batch_size=32,
    steps=500,
    lr=5e-3,
    max_chars=250_000,
    eval_tokens=16_384,
    position_bins=16,
)
QUICK = dict(
    seq_len=8,
    factors=[1, 2],
    d_model=16,
    heads=2,
    layers=1,
    batch_size=8,
    steps=3,
    lr=3e-3,
    max_chars=20_000,
    eval_tokens=256,
    position_bins=4,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Defaults: " + ", ".join(f"{k}={v}" for k, v in DEFAULTS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--positions",
        nargs="+",
        choices=list(ROWS),
        default=list(ROWS),
        help="rows to run (default: all six)",
    )
    parser.add_argument("--seq-len", type=int, help="training length L")
    parser.add_argument(
        "--factors", type=int, nargs="+", help="evaluate at these multiples of L (default 1 2 4)"
    )
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps", type=int, help="training steps per row")
    parser.add_argument("--lr", type=float, help="peak learning rate (warm-up then cosine decay)")
    parser.add_argument("--max-chars", type=int, help="characters of built-in text to use")
    parser.add_argument("--eval-tokens", type=int, help="held-out tokens evaluated at every length")
    parser.add_argument(
        "--position-bins", type=int, help="bins of the loss-by-position curve at the longest length"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train with XLA (jit_compile=True; default on, --no-jit for off)",
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="run fit/predict eagerly (no tracing; on by default with --quick, "
        "where tracing costs more than the tiny steps)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON results path")
    parser.add_argument(
        "--from-json",
        metavar="PATH",
        help="do not train: print the table and redraw --plot from a saved report",
    )
    parser.add_argument("--plot", default=DEFAULT_PLOT, help="PNG path ('' to skip)")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    for key in (
        "seq_len",
        "d_model",
        "heads",
        "layers",
        "batch_size",
        "steps",
        "max_chars",
        "eval_tokens",
        "position_bins",
    ):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')}={getattr(args, key)}: must be >= 1")
    if any(f < 1 for f in args.factors):
        parser.error(f"--factors={args.factors}: every factor must be >= 1")
    args.factors = sorted(set(args.factors))
    args.eager = args.eager or args.quick
    if args.eval_tokens < args.seq_len * max(args.factors):
        parser.error(
            f"--eval-tokens={args.eval_tokens}: must be >= seq_len * max(factors) = "
            f"{args.seq_len * max(args.factors)}"
        )
    return args


def load_tokens(args):
    from keras_transformers import data

    text = data.builtin_text(max_chars=args.max_chars, seed=args.seed)
    ids = data.ByteTokenizer().encode(text).astype("int32")  # (T,)
    longest = args.seq_len * max(args.factors)
    num_val = args.eval_tokens + longest + 1
    if ids.size < num_val + 4 * args.seq_len:
        raise SystemExit(
            f"--max-chars={args.max_chars} gives {ids.size} tokens: too few for "
            f"--eval-tokens={args.eval_tokens} plus training data; raise --max-chars."
        )
    return ids[: ids.size - num_val], ids[ids.size - num_val :]  # train, held-out


def build(args, row, length):
    import keras_transformers as kt

    attention, position = ROWS[row]
    return kt.models.build_decoder_lm(
        vocab_size=260,
        max_length=length,
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        attention=attention,
        position=position,
    )


def token_losses(model, x, y, batch_size, eager=False):
    """Per-token cross-entropy ``(N, L)`` in float64 from the model's logits."""
    import keras
    import numpy as np

    out = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        if eager:
            logits = keras.ops.convert_to_numpy(model(batch, training=False))
        else:
            logits = model.predict_on_batch(batch)
        logits = np.asarray(logits, np.float64)
        logits -= logits.max(-1, keepdims=True)
        log_z = np.log(np.exp(logits).sum(-1))  # (b, L)
        target = np.take_along_axis(logits, y[start : start + batch_size, :, None], -1)[..., 0]
        out.append(log_z - target)
    return np.concatenate(out, 0)


def run_row(args, row, train_ids, val_ids):
    import keras
    import numpy as np

    from keras_transformers import data

    keras.utils.set_random_seed(args.seed)
    L = args.seq_len
    x, y = data.make_lm_windows(train_ids, L, stride=max(1, L // 2))  # (N, L)
    rng = np.random.default_rng(args.seed)
    idx = rng.integers(0, len(x), size=args.steps * args.batch_size)  # same batches every row
    model = build(args, row, L)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=args.steps,
        warmup_target=args.lr,
        warmup_steps=max(1, args.steps // 10),
        alpha=0.1,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule, clipnorm=1.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=args.jit and not args.eager,
        run_eagerly=args.eager,
    )
    started = time.time()
    history = model.fit(
        x[idx], y[idx], batch_size=args.batch_size, epochs=1, shuffle=False, verbose=0
    )
    train_seconds = time.time() - started
    result = {
        "row": row,
        "attention": ROWS[row][0],
        "position": ROWS[row][1],
        "params": int(model.count_params()),
        "train_loss": float(history.history["loss"][-1]),
        "train_seconds": round(train_seconds, 1),
        "eval": {},
    }
    weights = model.get_weights()
    for factor in args.factors:
        length = L * factor
        n = args.eval_tokens // length
        ex, ey = data.make_lm_windows(val_ids, length)  # non-overlapping windows
        ex, ey = ex[:n], ey[:n]  # (n, length): the same eval_tokens at every length
        key = str(length)
        if row == "learned" and length > L:
            # The learned table has L rows; calling the trained model past it is the point.
            try:
                model(ex[:1])
                raise AssertionError("a learned table accepted a longer input")
            except ValueError as error:
                message = str(error).strip().splitlines()
                text = next((m for m in message if "max_length=" in m), message[-1])
                result["eval"][key] = {"error": text.replace("\x1b[1m", "").replace("\x1b[0m", "")}
            continue
        if length == L:
            eval_model = model
        else:
            eval_model = build(args, row, length)
            eval_model.set_weights(weights)
        losses = token_losses(eval_model, ex, ey, args.batch_size, eager=args.eager)  # (n, length)
        bins = np.array_split(np.arange(length), args.position_bins)
        result["eval"][key] = {
            "loss": float(losses.mean()),
            "perplexity": float(math.exp(losses.mean())),
            "loss_first_L": float(losses[:, :L].mean()),
            "loss_beyond_L": float(losses[:, L:].mean()) if length > L else None,
            "tokens": int(losses.size),
            "loss_by_position": [
                {"start": int(b[0]), "end": int(b[-1]) + 1, "loss": float(losses[:, b].mean())}
                for b in bins
                if b.size
            ],
        }
    return result


def cell(entry):
    if "error" in entry:
        return "error: cannot extrapolate"
    return f"{entry['loss']:.3f} ({entry['perplexity']:.2f})"


def print_table(report):
    lengths = [str(report["config"]["seq_len"] * f) for f in report["config"]["factors"]]
    header = ["row", "train loss"] + [f"L={n}" for n in lengths]
    lines = [header]
    for r in report["rows"]:
        lines.append([r["row"], f"{r['train_loss']:.3f}"] + [cell(r["eval"][n]) for n in lengths])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print(" | ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    print(
        "cells: mean next-byte loss in nats over every token (perplexity); trained at "
        f"L={report['config']['seq_len']}"
    )
    for r in report["rows"]:
        for n, entry in r["eval"].items():
            if "error" in entry:
                print(f"{r['row']} at L={n}: ValueError: {entry['error']}")


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = report["config"]
    train_len = cfg["seq_len"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    longest = str(train_len * max(cfg["factors"]))
    for r in report["rows"]:
        color = COLORS.get(r["row"])
        points = [(int(n), e["loss"]) for n, e in r["eval"].items() if "loss" in e]
        marker = "x" if len(points) < len(cfg["factors"]) else "o"
        label = r["row"] + (" (error past L)" if marker == "x" else "")
        ax1.plot(*zip(*points, strict=True), marker=marker, color=color, label=label)
        curve = r["eval"].get(longest, {}).get("loss_by_position")
        if curve:
            mids = [(b["start"] + b["end"]) / 2 for b in curve]
            ax2.plot(mids, [b["loss"] for b in curve], marker=".", color=color, label=r["row"])
    for ax in (ax1, ax2):
        ax.axvline(train_len, color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    ax1.set_xscale("log", base=2)
    ax1.set_xticks([train_len * f for f in cfg["factors"]])
    ax1.set_xticklabels([str(train_len * f) for f in cfg["factors"]])
    ax1.set_xlabel("evaluation length (tokens)")
    ax1.set_ylabel("mean loss (nats / byte)")
    ax1.set_title(f"Trained at L={train_len}: loss vs evaluation length")
    ax1.legend(fontsize=8)
    ax2.set_xlabel(f"token position in windows of {longest}")
    ax2.set_ylabel("mean loss (nats / byte)")
    ax2.set_title(f"Loss by position at L={longest} (dashed: training length)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        print_table(report)
        if args.plot:
            plot(report, args.plot)
            print(f"wrote {args.plot}")
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, REPO)
    import keras

    started = time.time()
    train_ids, val_ids = load_tokens(args)
    print(
        f"data: built-in text, {train_ids.size:,} training bytes, {val_ids.size:,} held-out; "
        f"L={args.seq_len}, factors {args.factors}, d_model={args.d_model}, heads={args.heads}, "
        f"layers={args.layers}, batch {args.batch_size} x {args.steps} steps, "
        f"backend {keras.backend.backend()}",
        flush=True,
    )
    rows = []
    for row in args.positions:
        result = run_row(args, row, train_ids, val_ids)
        rows.append(result)
        summary = ", ".join(f"L={n}: {cell(e)}" for n, e in result["eval"].items())
        print(
            f"[{row}] train loss {result['train_loss']:.3f} in {result['train_seconds']}s; "
            f"{summary}",
            flush=True,
        )
    report = {
        "benchmark": "extrapolation",
        "config": {
            k: getattr(args, k)
            for k in list(DEFAULTS) + ["positions", "seed", "jit", "eager", "quick"]
        },
        "environment": {
            "backend": keras.backend.backend(),
            "keras": keras.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "rows": rows,
        "seconds": round(time.time() - started, 1),
    }
    print()
    print_table(report)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")
    if args.plot:
        plot(report, args.plot)
        print(f"wrote {args.plot}")
    print(f"total {report['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
