"""Argument types shared by the example scripts that parse their own flags.

Kept free of TensorFlow/Keras imports so that ``--help`` and argument errors answer at once;
the scripts import it as a sibling module (``python examples/<script>.py`` puts ``examples/`` on
``sys.path``).
"""

import argparse
import json


def positive_int(text):
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return value


def number(low, high=None, open_low=False):
    """A float in ``[low, high)`` (``(low, high)`` with ``open_low``); ``high=None``: no bound."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
        if value < low or (open_low and value == low) or (high is not None and value >= high):
            bounds = f"{'(' if open_low else '['}{low}, {high if high is not None else 'inf'})"
            raise argparse.ArgumentTypeError(f"{value}: must be in {bounds}")
        return value

    return parse


def layer_spec(text):
    """A registered name or a JSON config dict with a 'name' key."""
    text = text.strip()
    if text.startswith("{"):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as error:
            raise argparse.ArgumentTypeError(f"{text!r}: invalid JSON ({error})") from None
        if not isinstance(spec, dict) or "name" not in spec:
            raise argparse.ArgumentTypeError(f"{text!r}: a JSON config needs a 'name' key")
        return spec
    return text


def layer_spec_or_none(text):
    """Like :func:`layer_spec`, and ``none`` (or an empty value) gives None."""
    spec = layer_spec(text)
    return None if isinstance(spec, str) and spec.lower() in ("", "none") else spec
