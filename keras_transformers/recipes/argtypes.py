"""``argparse`` types shared by every example and ``keras-transformers train``.

Imports no Keras or TensorFlow, so ``--help`` and a bad flag answer at once. Each type raises
``argparse.ArgumentTypeError`` with the value given and what is allowed.
"""

import argparse
import json
import re


def positive_int(text):
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return value


def integer(low):
    """An integer >= ``low`` (``integer(1)`` is :func:`positive_int`)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= {low}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value}: must be >= {low}")
        return value

    return parse


def number(low, high=None, open_low=False):
    """A float in ``[low, high)`` (``(low, high)`` with ``open_low``); ``high=None``: no bound."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
        if value < low or (open_low and value == low) or (high is not None and value >= high):
            if high is None and not open_low:
                raise argparse.ArgumentTypeError(f"{value}: must be >= {low:g}")
            bounds = f"{'(' if open_low else '['}{low:g}, {high if high is not None else 'inf'})"
            raise argparse.ArgumentTypeError(f"{value}: must be in {bounds}")
        return value

    return parse


non_negative = number(0)  # a float >= 0 (learning rates, weight decay)
fraction = number(0, 1)  # a float in [0, 1) (dropout)
open_fraction = number(0, 1, open_low=True)  # a float in (0, 1) (validation fraction)


def layer_spec(text):
    """A registered name or a JSON config dict with a ``'name'`` key."""
    text = text.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: invalid JSON ({error})") from None
        if not isinstance(spec, dict) or "name" not in spec:
            raise argparse.ArgumentTypeError(
                f"{text!r}: a JSON config needs a 'name' key, e.g. "
                '\'{"name": "sliding_window", "window": 16}\''
            )
        return spec
    return text


def layer_spec_or_none(text):
    """Like :func:`layer_spec`, and ``none`` (or an empty value) gives None."""
    spec = layer_spec(text)
    return None if isinstance(spec, str) and spec.lower() in ("", "none") else spec


def spec_name(spec):
    """Short name of an ``--attention``/``--position`` value, for a run folder's name."""
    if spec is None:
        return "none"
    if isinstance(spec, dict):
        spec = spec["name"]
    return re.sub(r"[^A-Za-z0-9_.]+", "_", str(spec))


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to a flag's help unless the help already says its default."""

    def _get_help_string(self, action):
        if "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_run_arguments(group, example):
    """The flags of the training loop every example shares, added to ``group``.

    ``--steps-per-epoch``, ``--schedule``, ``--warmup-steps``, ``--seed``, ``--jit`` /
    ``--no-jit``, ``--verbose``, ``--logdir`` (default ``runs/<example>/<time>-...``) and
    ``--overwrite``.
    """
    group.add_argument(
        "--steps-per-epoch",
        type=positive_int,
        default=None,
        help="batches per epoch (default: one pass over the training data)",
    )
    group.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        default="cosine",
        help="learning-rate schedule: linear warm-up then cosine decay to 10%% of the peak, or "
        "constant (default: %(default)s)",
    )
    group.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="warm-up steps of the cosine schedule (default: 5%% of all steps, at most 100)",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed for data, initialisation and dropout (default: %(default)s)",
    )
    group.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compile the train step with XLA (default: Keras decides, 'auto')",
    )
    group.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="fit() verbosity: 0 silent, 1 progress bar, 2 one line per epoch "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--logdir",
        default=None,
        help=f"folder for TensorBoard logs and checkpoints (default: runs/{example}/<time>-...); "
        "pass the folder of an interrupted run to resume it",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the finished run in --logdir (without it, such a folder is refused)",
    )
