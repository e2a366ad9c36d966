"""Sample text from a saved decoder language model with a KV cache and a keras-hub sampler.

Loads a ``.keras`` model written by ``examples/train_lm.py`` (``runs/lm/<run>/best.keras`` or
``last.keras``) and the ``tokenizer.json`` next to it, then continues a prompt::

    python examples/train_lm.py                      # trains and prints its run folder
    python examples/generate.py --model runs/lm/<run>/best.keras --prompt "The "
    python examples/generate.py --model runs/lm/<run>/best.keras --sampler top_p --top-p 0.9 \\
        --temperature 0.8 --seed 1
    python examples/generate.py --train-tiny         # no model yet: train a tiny one (~1 min)
    python examples/generate.py --help

Decoding uses ``model.generate`` (``kt.generation.Generator``): the prompt is run once, then every
new token reads the per-layer caches (full attention: all keys/values; ``sliding_window``: a ring
of ``w + 1``; ``linear``/``performer``: a constant-size recurrent state).
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_transformers.recipes.argtypes import integer, number, positive_int

SAMPLERS = ("greedy", "top_k", "top_p", "random", "beam")

HOW_TO = """no --model given. Train a model first, for example:

    python examples/train_lm.py --epochs 2

It prints its run folder (runs/lm/<time>-<attention>-<position>/) holding best.keras, last.keras
and tokenizer.json; then run

    python examples/generate.py --model runs/lm/<run>/best.keras --prompt "The "

or pass --train-tiny to train a tiny model now (about a minute on a CPU) and sample from it."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Sample from a saved keras_transformers decoder LM (.keras + tokenizer.json).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=HOW_TO.split("\n\n", 1)[1],
    )
    p.add_argument("--model", help="path of a .keras LM (e.g. runs/lm/<run>/best.keras)")
    p.add_argument("--tokenizer", help="tokenizer JSON (default: tokenizer.json next to the model)")
    p.add_argument("--prompt", default="The ", help="text to continue (default: %(default)r)")
    p.add_argument(
        "--max-length",
        type=integer(2),
        default=None,
        help="total tokens, prompt included, >= 2 (default and maximum: the model's length)",
    )
    p.add_argument("--sampler", choices=SAMPLERS, default="top_k", help="(default: %(default)s)")
    p.add_argument(
        "--temperature", type=number(0, open_low=True), default=1.0, help="(default: %(default)s)"
    )
    p.add_argument(
        "--top-k", type=positive_int, default=10, help="k of top_k (default: %(default)s)"
    )
    p.add_argument("--top-p", type=float, default=0.9, help="p of top_p (default: %(default)s)")
    p.add_argument(
        "--num-beams", type=positive_int, default=4, help="beams of beam (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument(
        "--num-samples", type=positive_int, default=1, help="samples (default: %(default)s)"
    )
    p.add_argument(
        "--no-cache", action="store_true", help="recompute the whole sequence for every token"
    )
    p.add_argument(
        "--train-tiny",
        action="store_true",
        help="without --model: train a tiny LM first (its run folder is printed)",
    )
    p.add_argument(
        "--logdir", default=None, help="run folder of --train-tiny (default: runs/lm/<time>-...)"
    )
    args = p.parse_args(argv)
    if not 0 < args.top_p <= 1:
        p.error(f"--top-p={args.top_p}: must be in (0, 1]")
    return args


def make_sampler(args):
    import keras_hub

    s = keras_hub.samplers
    if args.sampler == "greedy":
        return s.GreedySampler(temperature=args.temperature)
    if args.sampler == "top_k":
        return s.TopKSampler(k=args.top_k, seed=args.seed, temperature=args.temperature)
    if args.sampler == "top_p":
        return s.TopPSampler(p=args.top_p, seed=args.seed, temperature=args.temperature)
    if args.sampler == "random":
        return s.RandomSampler(seed=args.seed, temperature=args.temperature)
    return s.BeamSampler(num_beams=args.num_beams, temperature=args.temperature)


def train_tiny(logdir):
    """Train a tiny byte-level LM by running examples/train_lm.py; return its best.keras."""
    import runpy

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_lm.py")
    argv = [
        "--d-model", "32", "--heads", "2", "--layers", "2", "--seq-len", "64",
        "--batch-size", "16", "--epochs", "1", "--steps-per-epoch", "30",
        "--max-chars", "60000", "--sample-length", "0", "--verbose", "2",
    ]  # fmt: skip
    if logdir:
        argv += ["--logdir", logdir]
    saved, sys.argv = sys.argv, [script, *argv]
    try:
        namespace = runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = saved
    return os.path.join(namespace["args"].logdir, "best.keras")


def model_length(model):
    """The longest sequence the model reads: its ``max_length`` (the positions it was built
    for), else its static input length, else 1024."""
    try:
        length = model.get_config().get("max_length")
    except (NotImplementedError, AttributeError):
        length = None
    return int(length or model.inputs[0].shape[1] or 1024)


def main(argv=None):
    args = parse_args(argv)
    if args.model is None and not args.train_tiny:
        print(f"generate.py: {HOW_TO}", file=sys.stderr)
        return 2
    if args.model is None:
        args.model = train_tiny(args.logdir)
    if not os.path.isfile(args.model):
        print(f"generate.py: --model {args.model}: no such file.\n\n{HOW_TO}", file=sys.stderr)
        return 2
    tokenizer_path = args.tokenizer or os.path.join(os.path.dirname(args.model), "tokenizer.json")
    if not os.path.isfile(tokenizer_path):
        print(
            f"generate.py: tokenizer {tokenizer_path} not found; pass --tokenizer "
            "(examples/train_lm.py writes tokenizer.json into its run folder).",
            file=sys.stderr,
        )
        return 2

    import keras
    import numpy as np

    import keras_transformers  # noqa: F401  (registers every class a .keras file names)
    from keras_transformers.data.tokenizers import load_tokenizer
    from keras_transformers.generation.generator import Generator

    keras.utils.set_random_seed(args.seed)
    model = keras.saving.load_model(args.model)
    tokenizer = load_tokenizer(tokenizer_path)
    limit = model_length(model)
    if args.max_length is not None and args.max_length > limit:
        print(
            f"generate.py: --max-length {args.max_length}: the model reads at most {limit} "
            f"tokens; allowed values are 2 .. {limit}",
            file=sys.stderr,
        )
        return 2
    max_length = args.max_length or limit
    ids = [int(i) for i in tokenizer.encode(args.prompt)] or [1]
    ids = ids[-(max_length - 1) :]  # keep room for at least one new token
    generator = Generator(model, use_cache=False if args.no_cache else None)
    print(
        f"model {args.model} ({model.count_params():,} parameters, "
        f"{'cached' if generator.use_cache else 'uncached'} decoding), tokenizer "
        f"{type(tokenizer).__name__}, sampler {args.sampler}, {max_length} tokens"
    )
    prompt = np.array([ids] * args.num_samples, "int32")
    started = time.time()
    out = generator.generate(prompt, max_length, sampler=make_sampler(args))
    seconds = time.time() - started
    for row in out:
        print("-" * 72)
        print(tokenizer.decode(row))
    print("-" * 72)
    new = out.shape[0] * (max_length - len(ids))
    print(f"{new} new tokens in {seconds:.2f} s (first call includes compilation).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
