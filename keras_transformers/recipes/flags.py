"""The flags of the three training recipes (``lm``, ``classifier``, ``seq2seq``).

``examples/train_<example>.py`` and ``keras-transformers train <example>`` parse their arguments
with :func:`parse_args`. This module imports no Keras, so ``--help`` answers at once.
"""

import argparse
import datetime
import os

from keras_transformers.recipes import EXAMPLES, distribute
from keras_transformers.recipes.argtypes import (
    add_run_arguments,
    fraction,
    integer,
    layer_spec_or_none,
    non_negative,
    open_fraction,
    positive_int,
    spec_name,
)

# Per-example defaults: small enough for a few minutes on 2 CPU cores, large enough that the loss
# visibly goes down.
DEFAULTS = {
    "lm": dict(
        attention="full",
        position="rope",
        d_model=128,
        heads=4,
        layers=2,
        ff_dim=None,
        seq_len=128,
        batch_size=32,
        epochs=5,
        lr=5e-3,
        dropout=0.0,
    ),
    "classifier": dict(
        attention="full",
        position="learned",
        d_model=64,
        heads=4,
        layers=2,
        ff_dim=None,
        seq_len=None,
        batch_size=32,
        epochs=5,
        lr=1e-3,
        dropout=0.2,
    ),
    "seq2seq": dict(
        attention="full",
        position="learned",
        d_model=64,
        heads=4,
        layers=2,
        ff_dim=None,
        seq_len=16,
        batch_size=64,
        epochs=4,
        lr=2e-3,
        dropout=0.0,
    ),
}

DESCRIPTIONS = {
    "lm": (
        "Train a byte- (or character-) level decoder-only language model. With no --data it "
        "trains on the docstrings of the Python standard library (nothing is downloaded), "
        "then prints a short greedy sample."
    ),
    "classifier": (
        "Train an encoder-only text classifier. With no --data it learns to tell which "
        "standard-library package family (asyncio, email, http, unittest) a docstring sentence "
        "comes from; prints the validation accuracy."
    ),
    "seq2seq": (
        "Train an encoder-decoder Transformer. With no --data it learns a generated task "
        "(--task reverse|copy|sort|arithmetic); prints the exact-match accuracy of greedy "
        "decoding on validation examples."
    ),
}


def add_common_arguments(parser, example):
    """Add the flags the three examples share, with ``example``'s defaults."""
    d = DEFAULTS[example]
    model = parser.add_argument_group("model")
    model.add_argument(
        "--attention",
        type=layer_spec_or_none,
        default=d["attention"],
        help="attention core: a name from `keras-transformers list` or a JSON config such as "
        '\'{"name": "sliding_window", "window": 16}\' (default: %(default)s)',
    )
    model.add_argument(
        "--position",
        type=layer_spec_or_none,
        default=d["position"],
        help="positional encoding: a name from `keras-transformers list`, a JSON config, or "
        "'none' (default: %(default)s)",
    )
    model.add_argument(
        "--d-model",
        type=positive_int,
        default=d["d_model"],
        help="model width d (default: %(default)s)",
    )
    model.add_argument(
        "--heads",
        type=positive_int,
        default=d["heads"],
        help="attention heads h; must divide --d-model (default: %(default)s)",
    )
    model.add_argument(
        "--layers",
        type=positive_int,
        default=d["layers"],
        help="blocks (per stack for seq2seq) (default: %(default)s)",
    )
    model.add_argument(
        "--ff-dim",
        type=positive_int,
        default=d["ff_dim"],
        help="feed-forward width (default: 4 * d-model)",
    )
    model.add_argument(
        "--dropout",
        type=fraction,
        default=d["dropout"],
        help="dropout rate (default: %(default)s)",
    )
    seq_default = d["seq_len"] if d["seq_len"] is not None else "depends on --tokenizer"
    model.add_argument(
        "--seq-len",
        type=positive_int,
        default=d["seq_len"],
        help=f"sequence length L (default: {seq_default})",
    )

    train = parser.add_argument_group("training")
    add_run_arguments(train, example)
    train.add_argument(
        "--data",
        default=None,
        help="your own data (see the description above); default: built-in data",
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=d["batch_size"],
        help="batch size B (default: %(default)s)",
    )
    train.add_argument(
        "--epochs", type=positive_int, default=d["epochs"], help="epochs (default: %(default)s)"
    )
    train.add_argument(
        "--lr",
        type=non_negative,
        default=d["lr"],
        help="peak learning rate of AdamW (default: %(default)s)",
    )
    train.add_argument(
        "--weight-decay",
        type=non_negative,
        default=0.01,
        help="AdamW weight decay; norms, biases and embeddings are excluded (default: %(default)s)",
    )
    train.add_argument(
        "--val-fraction",
        type=open_fraction,
        default=0.1,
        help="fraction of the data held out for validation (default: %(default)s)",
    )
    distribute.add_arguments(train)
    train.add_argument(
        "--precision",
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
        default="float32",
        help="dtype policy; mixed_float16 trains with dynamic loss scaling (Keras wraps the "
        "optimizer in a LossScaleOptimizer) (default: %(default)s)",
    )
    return parser


#: the examples that take --init-from, --lora and --export (recipes.run.start_from / export_best)
FINETUNE_EXAMPLES = ("lm", "classifier")


def add_finetune_arguments(parser):
    """``--init-from``, ``--lora`` and ``--export`` (fine-tuning from a checkpoint, serving)."""
    group = parser.add_argument_group("fine-tuning and export")
    group.add_argument(
        "--init-from",
        default=None,
        metavar="PATH.keras",
        help="start from the weights of this checkpoint (e.g. an earlier run's best.keras); "
        "the model flags must build the same architecture",
    )
    group.add_argument(
        "--lora",
        type=positive_int,
        default=None,
        metavar="RANK",
        help="fine-tune low-rank adapters of this rank on the query and value projections "
        "(the fused qkv of self-attention; kt.models.enable_lora's default targets), "
        "everything else frozen; the adapters are also saved as lora_weights.npz in the run "
        "folder",
    )
    group.add_argument(
        "--export",
        default=None,
        metavar="DIR",
        help="after training, export best.keras to DIR with model.export (a TensorFlow "
        "SavedModel on the TensorFlow and JAX backends)",
    )


def build_parser(example, prog=None):
    """The full ``argparse`` parser of one example (``"lm"``, ``"classifier"``, ``"seq2seq"``)."""
    if example not in EXAMPLES:
        raise ValueError(f"example={example!r}: allowed values are {', '.join(EXAMPLES)}")
    epilog = {
        "lm": "--data: a UTF-8 text file, or a folder whose *.txt, *.md and *.py files are read.",
        "classifier": "--data: a .csv/.tsv file with a header row, or a .jsonl file, holding "
        "text and label columns (see --text-column/--label-column); or a folder with one "
        "subfolder of .txt files per class.",
        "seq2seq": "--data: a UTF-8 file with one 'source<TAB>target' pair per line.",
    }[example]
    parser = argparse.ArgumentParser(
        prog=prog,
        description=DESCRIPTIONS[example],
        epilog=epilog,
    )
    add_common_arguments(parser, example)
    if example in FINETUNE_EXAMPLES:
        add_finetune_arguments(parser)
    extra = parser.add_argument_group(f"{example} options")
    if example == "lm":
        extra.add_argument(
            "--tokenizer",
            choices=("byte", "char", "codepoint", "wordpiece", "bpe"),
            default="byte",
            help="byte (260 ids, no fitting), char (fitted on the text), codepoint (keras-hub), "
            "or wordpiece / bpe sub-words trained on the text with keras-hub's vocabulary tools "
            "(default: %(default)s)",
        )
        extra.add_argument(
            "--vocab-size",
            type=positive_int,
            default=1000,
            help="vocabulary size of wordpiece / bpe (default: %(default)s)",
        )
        extra.add_argument(
            "--max-chars",
            type=positive_int,
            default=300_000,
            help="characters of built-in text to use (default: %(default)s)",
        )
        extra.add_argument(
            "--stride",
            type=positive_int,
            default=None,
            help="step between training windows (default: seq-len, no overlap)",
        )
        extra.add_argument(
            "--prompt", default="The ", help="prompt of the greedy sample (default: %(default)r)"
        )
        extra.add_argument(
            "--sample-length",
            type=integer(0),
            default=200,
            help="tokens to generate after training; 0 skips (default: %(default)s)",
        )
    elif example == "classifier":
        extra.add_argument(
            "--tokenizer",
            choices=("word", "byte", "wordpiece", "bpe"),
            default="word",
            help="word (vocabulary fitted on the training texts), byte, or wordpiece / bpe "
            "sub-words trained with keras-hub's vocabulary tools (default: %(default)s)",
        )
        extra.add_argument(
            "--vocab-size",
            type=positive_int,
            default=2000,
            help="vocabulary size of word / wordpiece / bpe, reserved ids included "
            "(default: %(default)s)",
        )
        extra.add_argument(
            "--num-examples",
            type=positive_int,
            default=2400,
            help="examples of the built-in task, at most about 2,700 (default: %(default)s)",
        )
        extra.add_argument(
            "--pooling",
            choices=("mean", "max", "cls"),
            default="mean",
            help="sequence pooling before the classifier head (default: %(default)s)",
        )
        extra.add_argument(
            "--text-column",
            default="text",
            help="text column / JSON key of --data (default: %(default)s)",
        )
        extra.add_argument(
            "--label-column",
            default="label",
            help="label column / JSON key of --data (default: %(default)s)",
        )
    else:
        extra.add_argument(
            "--task",
            choices=("reverse", "copy", "sort", "arithmetic"),
            default="reverse",
            help="generated task when no --data is given (default: %(default)s)",
        )
        extra.add_argument(
            "--num-examples",
            type=positive_int,
            default=10_000,
            help="generated examples (default: %(default)s)",
        )
        extra.add_argument(
            "--task-vocab",
            type=integer(5),
            default=24,
            help="vocabulary of reverse/copy/sort, 4 reserved ids included (default: %(default)s)",
        )
        extra.add_argument(
            "--max-digits",
            type=integer(1),
            default=3,
            help="operand digits of the arithmetic task (default: %(default)s)",
        )
        extra.add_argument(
            "--tokenizer",
            choices=("char", "byte"),
            default="char",
            help="tokenizer of --data pairs (default: %(default)s)",
        )
        extra.add_argument(
            "--eval-examples",
            type=positive_int,
            default=200,
            help="validation examples decoded greedily at the end (default: %(default)s)",
        )
    return parser


# The program name `keras-transformers train <example>` sets while it runs the example script
# (``runpy`` points ``sys.argv[0]`` at the script's path, which argparse would show).
prog_override = None


def parse_args(example, argv=None, prog=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) for ``example`` and check cross-flag rules."""
    parser = build_parser(example, prog=prog or prog_override)
    args = parser.parse_args(argv)
    if args.d_model % args.heads:
        parser.error(f"--d-model={args.d_model} must be divisible by --heads={args.heads}")
    if args.warmup_steps is not None and args.warmup_steps < 0:
        parser.error(f"--warmup-steps={args.warmup_steps}: must be >= 0")
    init_from = getattr(args, "init_from", None)
    if init_from is not None and not (init_from.endswith(".keras") and os.path.isfile(init_from)):
        parser.error(f"--init-from={init_from}: not a .keras file")
    args.example = example
    return args


def default_logdir(example, attention_spec, position_spec, root="runs"):
    """``runs/<example>/<YYYYmmdd-HHMMSS>-<attention>-<position>``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    names = f"{spec_name(attention_spec)}-{spec_name(position_spec)}"
    return os.path.join(root, example, f"{stamp}-{names}")
