"""Render ``docs/images/patterns/<name>.png`` for every registered attention core.

Each core is built with its ``example_config`` and its pattern is read off its debug path
(``return_attention_scores=True``) by :func:`keras_transformers.attention.patterns.render_pattern`:
non-causal and causal side by side, one panel per distinct head pattern (2 heads).

Usage:
    python docs/make_pattern_images.py                    # all registered cores
    python docs/make_pattern_images.py local strided      # some of them
    python docs/make_pattern_images.py --length 48
"""

import argparse
import os
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "docs", "images", "patterns")

#: Extra pictures for the variant pages: file name -> (core, constructor kwargs, length).
EXTRA_IMAGES = {
    "strided_multihead": ("strided", {"stride": 4, "mode": "multihead"}, 32),
    "fixed_multihead": ("fixed", {"stride": 8, "summary_size": 2, "mode": "multihead"}, 32),
    "local2d_8x8": (
        "local2d",
        {
            "height": 8,
            "width": 8,
            "query_height": 2,
            "query_width": 4,
            "memory_height": 2,
            "memory_width": 2,
        },
        64,
    ),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="cores to render (default: all registered)")
    parser.add_argument("--length", type=int, default=32, help="sequence length L (default 32)")
    parser.add_argument("--num-heads", type=int, default=2)
    parser.add_argument("--out-dir", default=OUT_DIR)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, ROOT)
    import keras_transformers as kt
    from keras_transformers.attention.patterns import render_pattern

    names = args.names or kt.attention.available()
    jobs = [
        (
            name,
            name,
            dict(kt.attention.registry.REGISTRY.get_class(name).example_config),
            args.length,
        )
        for name in names
    ]
    jobs += [
        (image, core, config, length)
        for image, (core, config, length) in EXTRA_IMAGES.items()
        if core in names
    ]
    failed = []
    for image, name, config, length in jobs:
        path = os.path.join(args.out_dir, f"{image}.png")
        try:
            render_pattern(
                name, length=length, path=path, num_heads=args.num_heads, causal="both", **config
            )
            print(f"wrote {os.path.relpath(path, ROOT)}")
        except Exception as error:  # noqa: BLE001 - report and go on with the others
            failed.append(image)
            print(f"skipped {image}: {type(error).__name__}: {error}")
            if os.environ.get("DEBUG"):
                traceback.print_exc()
    return 1 if failed and args.names else 0


if __name__ == "__main__":
    sys.exit(main())
