"""The ``keras-transformers`` command.

::

    keras-transformers list                         # registered attention cores and positions
    keras-transformers train lm [--epochs 2 ...]    # runs examples/train_lm.py ...
    keras-transformers train classifier [...]       # runs examples/train_classifier.py ...
    keras-transformers train seq2seq [...]          # runs examples/train_seq2seq.py ...
    keras-transformers bench                        # how to run the benchmarks
    keras-transformers <command> --help

Also ``python -m keras_transformers.cli ...``. ``train`` runs the example script of the checkout
this package runs from (as ``bench`` lists its ``benchmarks/``), so the command and the script are
one piece of code. Nothing here imports Keras before it is needed: ``--help`` answers at once.
"""

import argparse
import ast
import os
import runpy
import sys
from pathlib import Path

from keras_transformers.recipes import EXAMPLES

PROG = "keras-transformers"


def _first_line(obj):
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def _section(title, registry):
    lines = [f"{title} ({len(registry.available())}):"]
    names = registry.available()
    width = max((len(n) for n in names), default=0)
    for name in names:
        lines.append(f"  {name:<{width}}  {_first_line(registry.get_class(name))}".rstrip())
    return lines


def list_variants():
    """Return the text of ``keras-transformers list``: attention cores, then positions."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_transformers import attention, positional

    lines = _section("Attention cores (--attention, attention=)", attention.REGISTRY)
    lines.append("")
    lines += _section("Positional encodings (--position, position=)", positional.REGISTRY)
    return "\n".join(lines)


def _checkout_dir(name):
    """``<name>/`` of the checkout this package runs from (None when installed elsewhere)."""
    folder = Path(__file__).resolve().parents[1] / name
    return folder if folder.is_dir() else None


def _benchmarks_dir():
    return _checkout_dir("benchmarks")


def train(example, argv):
    """Run ``examples/train_<example>.py`` of the checkout with ``argv``; return the exit status."""
    folder = _checkout_dir("examples")
    script = folder / f"train_{example}.py" if folder else None
    if script is None or not script.is_file():
        print(
            f"{PROG} train {example}: examples/train_{example}.py not found next to this "
            "installation; clone the repository and run it from the checkout.",
            file=sys.stderr,
        )
        return 2
    from keras_transformers.recipes import flags

    saved = sys.argv
    sys.argv = [str(script), *argv]
    flags.prog_override = f"{PROG} train {example}"  # what the script's --help shows
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved
        flags.prog_override = None
    return 0


def _script_summary(path):
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        doc = None
    return doc.strip().splitlines()[0] if doc else ""


def bench_help():
    """Return the text of ``keras-transformers bench``."""
    folder = _benchmarks_dir()
    lines = [
        "Benchmarks are plain scripts in the repository's benchmarks/ folder; each prints a table",
        "and writes JSON/PNG results. Run them from a checkout, one at a time, e.g.:",
        "",
    ]
    scripts = sorted(folder.glob("*.py")) if folder else []
    scripts = [s for s in scripts if not s.name.startswith("_")]
    if scripts:
        width = max(len(s.name) for s in scripts)
        for script in scripts:
            summary = _script_summary(script)
            lines.append(f"  python benchmarks/{script.name:<{width}}  {summary}".rstrip())
        lines += ["", "Each script accepts --help for its options."]
    else:
        where = f" ({folder})" if folder else ""
        lines += [
            "  python benchmarks/<name>.py --help",
            "",
            f"No benchmark scripts found next to this installation{where}; clone the repository",
            "to get them.",
        ]
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The transformer family as Keras 3 layers: list the registered variants, "
        "train the example models, find the benchmarks.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{list,train,bench}")
    commands.add_parser(
        "list",
        help="print the registered attention cores and positional encodings",
        description="Print the registered attention cores and positional encodings, each with "
        "the first line of its docstring.",
    )
    train = commands.add_parser(
        "train",
        help="train an example model (lm, classifier, seq2seq)",
        description="Train one of the example models; the arguments after the example name "
        "are the example script's own (see `keras-transformers train <example> --help`).",
    )
    train.add_argument(
        "example",
        choices=EXAMPLES,
        help="lm: byte-level decoder LM; classifier: encoder text classifier; "
        "seq2seq: encoder-decoder on a generated task",
    )
    train.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="arguments of the example, e.g. --epochs 2 --attention full",
    )
    commands.add_parser(
        "bench",
        help="print how to run the benchmarks",
        description="Print the benchmark scripts and how to run them.",
    )
    return parser


def main(argv=None):
    """Entry point of the ``keras-transformers`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `train <example> ...`: everything after the example name (``--help`` included) belongs
    # to the example's own parser.
    if len(argv) >= 2 and argv[0] == "train" and argv[1] in EXAMPLES:
        return train(argv[1], argv[2:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        print(list_variants())
    elif args.command == "bench":
        print(bench_help())
    elif args.command == "train":  # reached only for an unusual argument order
        return train(args.example, args.args)
    else:
        parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
