"""Cached greedy decoding: ``kt.generation.Generator`` against a keras-hub decoder of the same shape.

Both models decode greedily with a KV cache (keras-hub: ``TransformerDecoder`` with
``CachedMultiHeadAttention`` through ``self_attention_cache``), driven by the same
``keras_hub.samplers.GreedySampler`` loop compiled with ``tf.function``. For each prompt length
the script times the generation of ``--new-tokens`` tokens and reports ms/token, so a flat
column shows that the per-token cost does not grow with the context. It also times full
recomputation (no cache) for reference.

A second table times the caches of the other cores at the same prompt lengths (``--cores``):
``sliding_window`` (a ring buffer of ``w + 1`` keys, ``--window``) and ``linear`` (the recurrent
state ``(B, h, r, dv + 1)``) should stay flat as the context grows, whereas full attention reads
an ``L_max``-long cache every token. The per-layer cache shape is reported next to each row.

    python benchmarks/generation.py                  # d=256, 4 layers, prompts 32..480
    python benchmarks/generation.py --quick          # tiny, for a smoke test
    python benchmarks/generation.py --seq2seq        # encoder-decoder: cached vs uncached

``--seq2seq`` times ``Seq2Seq.generate`` instead (greedy, ``--new-tokens`` target tokens after
``<bos>`` for ``--batch`` sources of each ``--prompts`` length): with the self-attention and
cross-attention caches (the source encoded and its keys/values projected once) against the
uncached decode (the whole model, encoder included, for every token).

Prints a table, writes ``benchmarks/results/generation.json``.
"""

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# keras, keras-hub, TensorFlow and keras_transformers are imported in the functions that use
# them, so that --help answers at once


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--ff-dim", type=int, default=1024)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--prompts", default="32,128,256,480", help="prompt lengths")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--cores",
        default="full,sliding_window,linear",
        help="attention cores of the per-core table (default: %(default)s)",
    )
    p.add_argument("--window", type=int, default=64, help="sliding_window w (default 64)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument(
        "--seq2seq", action="store_true", help="time Seq2Seq.generate cached vs uncached only"
    )
    p.add_argument(
        "--prefill",
        type=int,
        default=None,
        metavar="L",
        help="time only the pre-fill of one L-token prompt: ours with the blocked engine, ours "
        "with it off (the dense (B, h, L, L_max) scores), keras-hub's (TensorFlow)",
    )
    p.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "generation.json")
    )
    args = p.parse_args(argv)
    if args.quick:
        args.vocab, args.d_model, args.heads, args.layers, args.ff_dim = 64, 32, 2, 2, 64
        args.max_length, args.prompts, args.new_tokens, args.repeats = 48, "8,24", 8, 1
        args.window = 4
    return args


class KerasHubCachedLM:
    """A keras-hub decoder-only LM and its cached ``next`` function."""

    def __init__(self, args):
        import keras
        import keras_hub

        self.embedding = keras_hub.layers.TokenAndPositionEmbedding(
            args.vocab, args.max_length, args.d_model
        )
        self.blocks = [
            keras_hub.layers.TransformerDecoder(args.ff_dim, args.heads, normalize_first=True)
            for _ in range(args.layers)
        ]
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5)
        self.head = keras.layers.Dense(args.vocab)
        self.args = args
        self._compiled = {}
        x = self.forward(np.zeros((1, 4), "int32"))  # build
        assert x.shape[-1] == args.vocab

    def forward(self, ids):
        x = self.embedding(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def call_with_cache(self, token_ids, cache, index):
        from keras import ops

        # TokenAndPositionEmbedding has start_index for cached decoding
        x = self.embedding(token_ids, start_index=index)
        caches = []
        for i, block in enumerate(self.blocks):
            x, c = block(
                x, self_attention_cache=cache[:, i], self_attention_cache_update_index=index
            )
            caches.append(c)
        return self.head(self.norm(x)), x, ops.stack(caches, axis=1)

    def generate(self, prompt, max_length):
        import keras_hub
        import tensorflow as tf
        from keras import ops

        a = self.args
        batch = prompt.shape[0]
        start = prompt.shape[1]
        padded = np.zeros((batch, max_length), "int32")
        padded[:, :start] = prompt
        mask = np.arange(max_length)[None] < start
        sampler = keras_hub.samplers.GreedySampler()
        key = (batch, start, max_length)
        if key in self._compiled:  # trace once per shape, like kt.generation.Generator
            return self._compiled[key](padded, np.broadcast_to(mask, padded.shape))

        @tf.function
        def run(p, m):
            cache = ops.zeros((batch, a.layers, 2, max_length, a.heads, a.d_model // a.heads))
            _, _, cache = self.call_with_cache(p[:, : start - 1], cache, 0)

            def next_fn(tokens, cache, index):
                token = ops.slice(tokens, (0, index - 1), (batch, 1))
                logits, hidden, cache = self.call_with_cache(token, cache, index - 1)
                return logits[:, 0], hidden[:, 0], cache

            return sampler(next_fn, p, cache=cache, index=start, mask=m)

        self._compiled[key] = run
        return run(padded, np.broadcast_to(mask, padded.shape))


def timed(fn, repeats):
    fn()  # warm-up / trace
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def core_spec(name, args):
    if name == "sliding_window":
        return {"name": "sliding_window", "window": args.window}
    return name


def core_table(args, rng):
    """Per-core cached greedy decoding at each prompt length.

    ``ms_per_token`` divides the whole ``generate`` call (pre-fill included) by the new tokens,
    like the first table. ``decode_ms_per_token`` removes the pre-fill:
    ``(T(L0 + n) - T(L0 + 1)) / (n - 1)``, the marginal cost of one more token at that context.
    """
    import keras

    import keras_transformers as kt

    rows = []
    lengths = [int(x) for x in args.prompts.split(",")]
    n = args.new_tokens
    for name in [c for c in args.cores.split(",") if c]:
        keras.utils.set_random_seed(0)
        model = kt.models.build_decoder_lm(
            args.vocab,
            args.max_length,
            d_model=args.d_model,
            num_heads=args.heads,
            num_layers=args.layers,
            ff_dim=args.ff_dim,
            attention=core_spec(name, args),
            position="rope",
        )
        generator = kt.generation.Generator(model, use_cache=True)
        shape = tuple(generator.empty_cache(args.batch, args.max_length)[0].shape)
        for length in lengths:
            prompt = rng.integers(4, args.vocab, size=(args.batch, length)).astype("int32")
            t_n = timed(lambda p=prompt, k=length + n, g=generator: g.generate(p, k), args.repeats)
            t_1 = timed(lambda p=prompt, k=length + 1, g=generator: g.generate(p, k), args.repeats)
            rows.append(
                {
                    "attention": name,
                    "prompt_length": length,
                    "ms_per_token": 1000 * t_n / n,
                    "decode_ms_per_token": 1000 * max(t_n - t_1, 0.0) / max(n - 1, 1),
                    "prefill_ms": 1000 * t_1,
                    "cache_shape_per_layer": list(shape),
                }
            )
            r = rows[-1]
            print(
                f"{name:>15s} prompt {length:5d}: {r['decode_ms_per_token']:7.2f} ms/token "
                f"decoding, {r['ms_per_token']:7.2f} ms/token with pre-fill "
                f"(cache per layer {shape})",
                flush=True,
            )
    cores = list(dict.fromkeys(r["attention"] for r in rows))
    table = ["| attention | cache per layer | " + " | ".join(f"L0={k}" for k in lengths) + " |"]
    table.append("|---|---|" + "---|" * len(lengths))
    for core in cores:
        mine = [r for r in rows if r["attention"] == core]
        cells = " | ".join(
            f"{r['decode_ms_per_token']:.2f} ({r['ms_per_token']:.2f})" for r in mine
        )
        table.append(f"| {core} | {tuple(mine[0]['cache_shape_per_layer'])} | {cells} |")
    print(
        "\nms/token of cached greedy decoding (rope), pre-fill excluded (included):\n"
        + "\n".join(table)
        + "\n"
    )
    return rows


def seq2seq_table(args):
    """ms/token of greedy ``Seq2Seq.generate``: cached (self + cross caches) vs uncached."""
    import keras

    import keras_transformers as kt

    rng = np.random.default_rng(0)
    lengths = [int(x) for x in args.prompts.split(",")]
    tgt_len = args.new_tokens + 1  # <bos> + new tokens
    rows = []
    for length in lengths:
        keras.utils.set_random_seed(0)
        model = kt.models.build_seq2seq(
            args.vocab,
            args.vocab,
            length,
            tgt_len,
            d_model=args.d_model,
            num_heads=args.heads,
            num_encoder_layers=args.layers,
            num_decoder_layers=args.layers,
            ff_dim=args.ff_dim,
            dropout=0.0,
        )
        source = rng.integers(4, args.vocab, size=(args.batch, length)).astype("int32")
        times = {}
        for use_cache in (True, False):
            times[use_cache] = timed(
                lambda u=use_cache, m=model, s=source: m.generate(
                    s, tgt_len, start_token_id=1, use_cache=u
                ),
                args.repeats,
            )
        rows.append(
            {
                "source_length": length,
                "new_tokens": args.new_tokens,
                "cached_ms_per_token": 1000 * times[True] / args.new_tokens,
                "uncached_ms_per_token": 1000 * times[False] / args.new_tokens,
                "speedup": times[False] / times[True],
            }
        )
        r = rows[-1]
        print(
            f"source {length:5d}: cached {r['cached_ms_per_token']:7.2f} ms/token, uncached "
            f"{r['uncached_ms_per_token']:7.2f} ms/token ({r['speedup']:.1f}x)",
            flush=True,
        )
    lines = [
        "| source length | cached ms/token | uncached ms/token | speed-up |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['source_length']} | {r['cached_ms_per_token']:.2f} | "
        f"{r['uncached_ms_per_token']:.2f} | {r['speedup']:.1f}x |"
        for r in rows
    ]
    print("\n" + "\n".join(lines))
    out = args.out.replace(".json", "_seq2seq.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"config": vars(args), "seq2seq_rows": rows}, f, indent=2)
    print(f"\nwrote {out}")
    return rows


def prefill_table(args):
    """Pre-fill of one ``--prefill``-token prompt into empty caches of ``L_max = L +
    --new-tokens`` slots (what ``generate`` does before its first token), compiled with
    ``tf.function``, median of ``--repeats``: ours through the blocked exact engine (full attention
    takes it for ``Lq·L_max >= flash_min_pairs``), ours with the engine off (the dense path forms
    ``(B, h, L, L_max)`` scores per layer) and keras-hub's ``call_with_cache``, interleaved."""
    import keras
    from keras import ops

    import keras_transformers as kt

    if keras.backend.backend() != "tensorflow":
        raise SystemExit(
            "error: --prefill times the TensorFlow pre-fill; run with KERAS_BACKEND=tensorflow"
        )
    import tensorflow as tf

    length = args.prefill
    total = length + args.new_tokens
    args.max_length = max(args.max_length, total)
    keras.utils.set_random_seed(0)
    ours = kt.models.build_decoder_lm(
        args.vocab, args.max_length, d_model=args.d_model, num_heads=args.heads,
        num_layers=args.layers, ff_dim=args.ff_dim, position="learned",
    )  # fmt: skip
    generator = kt.generation.Generator(ours)
    hub = KerasHubCachedLM(args)
    prompt = np.random.default_rng(0).integers(4, args.vocab, size=(args.batch, length))
    prompt = tf.constant(prompt.astype("int32"))
    cores = [
        layer for layer in ours._flatten_layers()
        if isinstance(layer, kt.attention.full.FullAttention)
    ]  # fmt: skip

    def ours_fn():
        cache = generator.empty_cache(args.batch, total)
        return generator.call_with_cache(prompt, cache, 0)[2]

    def hub_fn():
        shape = (args.batch, args.layers, 2, total, args.heads, args.d_model // args.heads)
        return hub.call_with_cache(prompt, ops.zeros(shape), 0)[2]

    engine = tf.function(ours_fn)
    engine.get_concrete_function()  # traced with the engine on
    for core in cores:
        core.flash_min_pairs = 2**62  # off for the next trace only
    dense = tf.function(ours_fn)
    dense.get_concrete_function()
    for core in cores:
        del core.flash_min_pairs  # back to the class default
    fns = {"engine": engine, "dense": dense, "keras_hub": tf.function(hub_fn)}
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(args.repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            tf.nest.map_structure(lambda x: x.numpy(), fn())
            times[name].append(time.perf_counter() - t)
    row = {"prompt_length": length, "max_length": total, "uptime": os.getloadavg()}
    row.update({f"{name}_s": float(np.median(ts)) for name, ts in times.items()})
    print(
        f"pre-fill of a {length}-token prompt (L_max {total}, B={args.batch}, d={args.d_model}, "
        f"{args.layers} layers): ours (blocked engine) {row['engine_s']:.3f} s, ours (dense) "
        f"{row['dense_s']:.3f} s, keras-hub {row['keras_hub_s']:.3f} s; load {row['uptime']}"
    )
    return row


def main(argv=None):
    args = parse_args(argv)
    if args.seq2seq:
        return seq2seq_table(args)
    if args.prefill:
        return prefill_table(args)
    import keras

    import keras_transformers as kt

    keras.utils.set_random_seed(0)
    ours = kt.models.build_decoder_lm(
        args.vocab,
        args.max_length,
        d_model=args.d_model,
        num_heads=args.heads,
        num_layers=args.layers,
        ff_dim=args.ff_dim,
        position="learned",
    )
    generator = kt.generation.Generator(ours)
    hub = KerasHubCachedLM(args)
    rng = np.random.default_rng(0)
    rows = []
    for length in [int(x) for x in args.prompts.split(",")]:
        prompt = rng.integers(4, args.vocab, size=(args.batch, length)).astype("int32")
        total = length + args.new_tokens
        t_ours = timed(lambda p=prompt, n=total: generator.generate(p, n), args.repeats)
        t_hub = timed(lambda p=prompt, n=total: hub.generate(p, n), args.repeats)
        rows.append(
            {
                "prompt_length": length,
                "ours_ms_per_token": 1000 * t_ours / args.new_tokens,
                "keras_hub_ms_per_token": 1000 * t_hub / args.new_tokens,
                "speedup_vs_keras_hub": t_hub / t_ours,
            }
        )
        print(
            f"prompt {length:5d}: ours {rows[-1]['ours_ms_per_token']:7.2f} ms/token, "
            f"keras-hub {rows[-1]['keras_hub_ms_per_token']:7.2f} ms/token, "
            f"ours is {rows[-1]['speedup_vs_keras_hub']:.2f}x",
            flush=True,
        )
    # full recomputation for the longest prompt, a few tokens, for reference
    prompt = rng.integers(4, args.vocab, size=(args.batch, rows[-1]["prompt_length"]))
    step = keras.backend.backend() == "tensorflow" and __import__("tensorflow").function(
        lambda x: ours(x)
    )
    recompute = timed(lambda: step(prompt.astype("int32")) if step else ours(prompt), args.repeats)
    print(
        f"\nfull recomputation of a {prompt.shape[1]}-token context: {1000 * recompute:.2f} ms "
        "per token (what the cache avoids)"
    )
    core_rows = core_table(args, rng)
    header = "| prompt length | ours ms/token | keras-hub ms/token | ours vs keras-hub |"
    lines = [header, "|---|---|---|---|"] + [
        f"| {r['prompt_length']} | {r['ours_ms_per_token']:.2f} | "
        f"{r['keras_hub_ms_per_token']:.2f} | {r['speedup_vs_keras_hub']:.2f}x |"
        for r in rows
    ]
    print("\n" + "\n".join(lines))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "config": vars(args),
                "rows": rows,
                "core_rows": core_rows,
                "recompute_ms_per_token": 1000 * recompute,
            },
            f,
            indent=2,
        )
    print(f"\nwrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
