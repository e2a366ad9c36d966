"""Train attention variants on Long Range Arena-style tasks generated locally.

    python examples/lra.py                                # ListOps with full attention
    python examples/lra.py --task text --attention performer
    python examples/lra.py --task listops --attention all  # every registered core, one table

Tasks: ``listops`` (nested MIN/MAX/MED/SUM_MOD expressions, 10 classes), ``text`` (byte-level
documents labelled by stdlib package family), ``retrieval`` (do two byte-level documents come from
the same family?). With ``--attention all`` each variant trains in its own subprocess and the
script prints and writes a comparison table (accuracy, training steps/s, peak memory).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from keras_transformers.recipes.argtypes import non_negative, positive_int

TASKS = ("listops", "text", "retrieval")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=TASKS, default="listops")
    parser.add_argument(
        "--attention", default="full", help="a registered attention core, or 'all' (default: full)"
    )
    parser.add_argument("--position", default="learned")
    parser.add_argument(
        "--seq-len", type=positive_int, default=256, help="sequence length (default 256)"
    )
    parser.add_argument("--examples", type=positive_int, default=2000, help="training examples")
    parser.add_argument("--d-model", type=positive_int, default=64)
    parser.add_argument("--heads", type=positive_int, default=4)
    parser.add_argument("--layers", type=positive_int, default=2)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--epochs", type=positive_int, default=3)
    parser.add_argument("--lr", type=non_negative, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default=None, help="default runs/lra/<task>-<timestamp>")
    parser.add_argument("--json", default=None, help="write this run's result as JSON here")
    parser.add_argument(
        "--timeout",
        type=positive_int,
        default=1800,
        help="per-variant time limit with --attention all (seconds)",
    )
    return parser.parse_args(argv)


def load_task(args):
    from keras_transformers import data

    n_val = max(args.examples // 5, 32)
    total = args.examples + n_val
    if args.task == "listops":
        x, y, _ = data.listops(
            total, max_length=args.seq_len, min_length=min(32, args.seq_len), seed=args.seed
        )
        vocab, classes = len(data.LISTOPS_VOCAB), 10
    elif args.task == "text":
        x, y, names = data.byte_text_classification(total, length=args.seq_len, seed=args.seed)
        vocab, classes = 260, len(names)
    else:
        (a, b), y = data.document_retrieval(total, length=args.seq_len, seed=args.seed)
        x = {"document_a": a, "document_b": b}
        vocab, classes = 260, 2

    def split(arr, part):
        if isinstance(arr, dict):
            return {k: split(v, part) for k, v in arr.items()}
        return arr[: args.examples] if part == "train" else arr[args.examples :]

    return (
        (split(x, "train"), split(y, "train")),
        (split(x, "val"), split(y, "val")),
        vocab,
        classes,
    )


def train_one(args):
    import keras

    import keras_transformers as kt

    keras.utils.set_random_seed(args.seed)
    (x, y), (xv, yv), vocab, classes = load_task(args)
    sizes = dict(
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        attention=args.attention,
        position=args.position,
        dropout=0.1,
    )
    if args.task == "retrieval":
        model = kt.models.build_retrieval_classifier(vocab, args.seq_len, classes, **sizes)
    else:
        model = kt.models.build_encoder_classifier(vocab, classes, args.seq_len, **sizes)
    model.compile(
        keras.optimizers.AdamW(args.lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    logdir = args.logdir or os.path.join(
        "runs", "lra", f"{args.task}-{args.attention}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    steps = -(-len(y) // args.batch_size) * args.epochs
    start = time.perf_counter()
    history = model.fit(
        x,
        y,
        validation_data=(xv, yv),
        batch_size=args.batch_size,
        epochs=args.epochs,
        callbacks=[keras.callbacks.TensorBoard(logdir)],
    )
    seconds = time.perf_counter() - start
    result = {
        "task": args.task,
        "attention": args.attention,
        "seq_len": args.seq_len,
        "val_accuracy": float(history.history["val_accuracy"][-1]),
        "train_loss": float(history.history["loss"][-1]),
        "steps_per_second": steps / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "logdir": logdir,
    }
    print(
        f"\n{args.task} / {args.attention}: validation accuracy {result['val_accuracy']:.3f}, "
        f"{result['steps_per_second']:.2f} steps/s, peak RSS {result['peak_rss_mib']:.0f} MiB"
    )
    print(f"TensorBoard: tensorboard --logdir {logdir}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def run_all(args, argv):
    import keras_transformers as kt

    logdir = args.logdir or os.path.join(
        "runs", "lra", f"{args.task}-all-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    os.makedirs(logdir, exist_ok=True)
    rows = []
    names = kt.attention.available() if args.attention == "all" else args.attention.split(",")
    for name in names:
        out = os.path.join(logdir, f"{name}.json")
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            *_without_attention(argv),
            "--attention",
            name,
            "--json",
            out,
            "--logdir",
            os.path.join(logdir, name),
        ]
        print(f"== {name}", flush=True)
        try:
            subprocess.run(cmd, check=True, timeout=args.timeout)
            with open(out) as f:
                rows.append(json.load(f))
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            rows.append({"attention": name, "error": type(err).__name__})
    lines = ["| attention | val accuracy | steps/s | peak RSS MiB |", "|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['attention']} | {r['error']} | | |")
        else:
            lines.append(
                f"| {r['attention']} | {r['val_accuracy']:.3f} | "
                f"{r['steps_per_second']:.2f} | {r['peak_rss_mib']:.0f} |"
            )
    table = "\n".join(lines)
    print(f"\n{args.task}, L={args.seq_len}\n{table}")
    with open(os.path.join(logdir, "comparison.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(logdir, "comparison.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print(f"\nTable and JSON in {logdir}\nTensorBoard: tensorboard --logdir {logdir}")
    return rows


def _without_attention(argv):
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item in ("--attention", "--logdir", "--json"):
            skip = True
            continue
        if item.startswith(("--attention=", "--logdir=", "--json=")):
            continue
        out.append(item)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.attention == "all" or "," in args.attention:
        return run_all(args, argv)
    return train_one(args)


if __name__ == "__main__":
    main()
