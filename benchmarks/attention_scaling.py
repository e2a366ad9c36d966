"""Forward+backward time and peak memory of attention cores against ``full`` as L grows.

Every registered attention core (``kt.attention.available()``, or ``--variants``) runs inside
``kt.attention.MultiHeadAttention`` (B=1, d_model=256, h=4, dh=64 by default) on the CPU at
L = 512 ... 64k. One (variant, L) pair is measured per subprocess
(``benchmarks/_scaling_points.py``), so the peak resident memory belongs to that measurement alone:

* time: median wall time of ``--repeats`` forward+backward steps (loss = mean(y²), gradients
  w.r.t. the input and all weights), after tracing/compilation and one untimed first step;
* memory: the peak RSS during the steps minus the RSS just before the first step (after model
  build and tracing; the process high-water mark is reset through ``/proc/self/clear_refs``
  after ``malloc_trim``), i.e. the memory one forward+backward step needs, in MiB. It has to
  include the first step: allocators keep freed memory, so later steps add no new RSS.

A measurement that passes ``--timeout`` seconds is reported as ``timeout``; one that needs more
than ``--max-memory`` MiB (the parent watches the child's RSS and stops it) or fails to allocate
as ``OOM``. The script prints a table (time ms, peak MiB, speed-up and memory ratio against
``full``), the log-log slope of memory and time against L per variant (fitted on the lengths
``>= --slope-from``), and writes JSON (``--output``), a log-log PNG (``--plot``) and optionally a
Markdown table (``--markdown``).

Usage:
    python benchmarks/attention_scaling.py                         # everything, ~30+ min
    python benchmarks/attention_scaling.py --variants full sliding_window --lengths 512 1024
    python benchmarks/attention_scaling.py --quick --variants full local   # smoke test, seconds

Each core is built with its constructor defaults updated by ``BENCH_CONFIGS`` below (or by a
``benchmark_config`` class attribute, or ``--config name='{"window": 64}'``). Two more variant
spellings: ``full@alibi`` (a core with a score-side position: ``alibi``, ``t5``, ``xl``, ...) and
``sdpa``, the best exact baseline: the same layer written in plain PyTorch (fused q/k/v and output
projections around ``torch.nn.functional.scaled_dot_product_attention``, its flash CPU kernel).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LENGTHS = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
QUICK_LENGTHS = [64, 128]
DEFAULT_JSON = os.path.join(ROOT, "benchmarks", "results", "attention_scaling.json")
DEFAULT_PNG = os.path.join(ROOT, "docs", "images", "attention_scaling.png")
#: The per-point worker script (one process per measurement).
WORKER = os.path.join(ROOT, "benchmarks", "_scaling_points.py")

#: Benchmark settings per core (window/block 128); cores not listed use their defaults.
BENCH_CONFIGS = {
    "full": {},
    "local": {"block_size": 128, "memory_blocks": 1},
    "local2d": {"query_height": 8, "query_width": 8, "memory_height": 4, "memory_width": 4},
    "sliding_window": {"window": 128},
    "strided": {"stride": 128, "mode": "merged"},
    "fixed": {"stride": 128, "summary_size": 16, "mode": "merged"},
    "blockwise": {"block_size": 128},
}
#: Small settings for ``--quick``.
QUICK_CONFIGS = {
    "local": {"block_size": 16, "memory_blocks": 1},
    "local2d": {"query_height": 4, "query_width": 4, "memory_height": 2, "memory_width": 2},
    "sliding_window": {"window": 16},
    "strided": {"stride": 16},
    "fixed": {"stride": 16, "summary_size": 2},
    "blockwise": {"block_size": 16},
}


# ----------------------------------------------------------------------------- parent side
def _child_rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return None


def measure(spec, timeout, max_memory_mib):
    """Run one measurement in a subprocess; returns the result dict."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, WORKER, json.dumps(spec)]
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    status, max_seen = None, 0.0
    while proc.poll() is None:
        rss = _child_rss_mib(proc.pid)
        if rss is not None:
            max_seen = max(max_seen, rss)
            if max_memory_mib and rss > max_memory_mib:
                status = "OOM"
                proc.kill()
                break
        if time.time() - start > timeout:
            status = "timeout"
            proc.kill()
            break
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    elapsed = time.time() - start
    base = {
        "variant": spec["variant"],
        "length": spec["length"],
        "config": spec["config"],
        "wall_s": elapsed,
        "max_rss_seen_mib": max_seen,
    }
    if status is not None:
        return {**base, "status": status}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return {**base, **json.loads(line[len("RESULT ") :])}
    text = stderr.strip().splitlines()
    oom_words = ("MemoryError", "ResourceExhausted", "OOM", "out of memory", "Cannot allocate")
    if proc.returncode in (-9, 137) or any(w in stderr for w in oom_words):
        return {**base, "status": "OOM", "error": text[-1] if text else ""}
    return {**base, "status": "error", "error": text[-1] if text else f"rc={proc.returncode}"}


def run_interleaved(specs, lengths, repeats, timeout):
    """``--interleave``: per L, one process times every variant's step in turn (round ``r`` runs
    each once), so the ratios hold under a changing load; wall and CPU ms, no memory."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    results = []
    for length in lengths:
        group = [spec for spec in specs if spec["length"] == length]
        cmd = [sys.executable, WORKER, "--interleave", json.dumps(group), str(repeats)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            results += [{**spec, "status": "timeout"} for spec in group]
            continue
        found = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line[:7] == "RESULT "]
        if not found:
            text = proc.stderr.strip().splitlines()
            error = text[-1] if text else f"rc={proc.returncode}"
            results += [{**spec, "status": "error", "error": error} for spec in group]
            continue
        base = found[0]
        for r in found:
            r["ratio_vs_first"] = r["time_ms"] / base["time_ms"]
            r["cpu_ratio_vs_first"] = r["cpu_ms"] / base["cpu_ms"]
            print(
                f"  {r['variant']:>16s} L={length:<6d} {r['time_ms']:.1f} ms "
                f"({r['ratio_vs_first']:.2f}x {base['variant']}), CPU {r['cpu_ms']:.1f} ms "
                f"({r['cpu_ratio_vs_first']:.2f}x)",
                flush=True,
            )
        results += found
    return results


def _show(r):
    shown = (
        f"{r['time_ms']:.1f} ms, {_fmt(r.get('peak_mib'))} MiB"
        if r["status"] == "ok"
        else r["status"] + (f" ({r['error']})" if r.get("error") else "")
    )
    print(f"  {r['variant']:>16s} L={r['length']:<6d} {shown}", flush=True)


def run_all(specs, timeout, max_memory_mib, jobs=1):
    """Measure every spec (in order); after an OOM/timeout the longer lengths of the same
    variant are skipped and marked the same. ``jobs > 1`` runs variants side by side (only for
    smoke tests: concurrent measurements disturb each other's timings)."""
    by_variant = {}
    for spec in specs:
        by_variant.setdefault(spec["variant"], []).append(spec)

    def run_variant(variant_specs):
        out, stopped = [], None
        for spec in variant_specs:
            if stopped is not None:
                r = {
                    "variant": spec["variant"],
                    "length": spec["length"],
                    "config": spec["config"],
                    "status": stopped,
                    "skipped": True,
                }
            else:
                r = measure(spec, timeout, max_memory_mib)
                if r["status"] in ("OOM", "timeout"):
                    stopped = r["status"]
            _show(r)
            out.append(r)
        return out

    groups = list(by_variant.values())
    if jobs == 1:
        outputs = [run_variant(g) for g in groups]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(jobs) as pool:
            outputs = list(pool.map(run_variant, groups))
    return [r for group in outputs for r in group]


def config_for(name, quick, overrides):
    """Constructor kwargs used for ``name``."""
    if name in overrides:
        return overrides[name]
    if quick and name in QUICK_CONFIGS:
        return QUICK_CONFIGS[name]
    if name in BENCH_CONFIGS:
        return BENCH_CONFIGS[name]
    try:
        sys.path.insert(0, ROOT)
        import keras_transformers as kt

        cls = kt.attention.registry.REGISTRY.get_class(name)
        return dict(getattr(cls, "quick_benchmark_config" if quick else "benchmark_config", {}))
    except Exception:  # noqa: BLE001 - unknown names fail later with a clear message
        return {}


def loglog_slope(points):
    """Least-squares slope of log(y) against log(L) over ``[(L, y), ...]`` (None if < 2)."""
    points = [(x, y) for x, y in points if y is not None and y > 0]
    if len(points) < 2:
        return None
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def summarise(results, variants, lengths, slope_from):
    """Speed-up/memory ratios against full and per-variant slopes (in place + returned)."""
    full = {r["length"]: r for r in results if r["variant"] == "full" and r["status"] == "ok"}
    for r in results:
        f = full.get(r["length"])
        if r["status"] == "ok" and f is not None:
            r["speedup_vs_full"] = f["time_ms"] / r["time_ms"] if r["time_ms"] else None
            if r.get("peak_mib") and f.get("peak_mib"):
                r["memory_ratio_vs_full"] = f["peak_mib"] / r["peak_mib"]
    slopes = {}
    for v in variants:
        ok = [r for r in results if r["variant"] == v and r["status"] == "ok"]
        tail = [r for r in ok if r["length"] >= slope_from]
        use = tail if len(tail) >= 2 else ok
        slopes[v] = {
            "memory": loglog_slope([(r["length"], r.get("peak_mib")) for r in use]),
            "time": loglog_slope([(r["length"], r.get("time_ms")) for r in use]),
            "lengths": [r["length"] for r in use],
        }
    return slopes


def _fmt(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def table_rows(results, variants, lengths):
    by_key = {(r["variant"], r["length"]): r for r in results}
    rows = []
    for v in variants:
        for length in lengths:
            r = by_key.get((v, length))
            if r is None:
                continue
            if r["status"] != "ok":
                rows.append([v, str(length), r["status"], r["status"], "-", "-"])
                continue
            rows.append(
                [
                    v,
                    str(length),
                    _fmt(r["time_ms"]),
                    _fmt(r.get("peak_mib")),
                    _fmt(r.get("speedup_vs_full"), 2),
                    _fmt(r.get("memory_ratio_vs_full"), 2),
                ]
            )
    return rows


HEADER = ["variant", "L", "fwd+bwd ms", "peak MiB", "speed-up vs full", "memory ratio vs full"]


def format_table(rows):
    widths = [max(len(str(x)) for x in col) for col in zip(HEADER, *rows)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
    return "\n".join(lines)


def markdown_table(rows, slopes, command, settings):
    lines = [f"Command: `{command}`", "", f"Settings: {settings}", ""]
    lines.append("| " + " | ".join(HEADER) + " |")
    lines.append("|" + "---|" * len(HEADER))
    for row in rows:
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "| variant | memory slope | time slope | fitted on L |", "|---|---|---|---|"]
    for v, s in slopes.items():
        lines.append(
            f"| {v} | {_fmt(s['memory'], 2)} | {_fmt(s['time'], 2)} | "
            f"{', '.join(str(x) for x in s['lengths'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(results, variants, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for v in variants:
        ok = sorted(
            (r for r in results if r["variant"] == v and r["status"] == "ok"),
            key=lambda r: r["length"],
        )
        if not ok:
            continue
        style = {"linewidth": 2.5, "color": "black"} if v == "full" else {}
        lengths = [r["length"] for r in ok]
        axes[0].plot(lengths, [r["time_ms"] for r in ok], marker="o", label=v, **style)
        mem = [(r["length"], r["peak_mib"]) for r in ok if r.get("peak_mib")]
        if mem:
            axes[1].plot(*zip(*mem), marker="o", label=v, **style)
    for ax, label in zip(axes, ["forward+backward time (ms)", "peak memory over baseline (MiB)"]):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="attention cores to measure (default: all registered); 'full' is "
        "always added as the baseline; 'sdpa' = plain PyTorch SDPA; 'full@alibi' = core@position",
    )
    p.add_argument(
        "--lengths",
        nargs="+",
        type=int,
        default=None,
        help=f"sequence lengths (default {DEFAULT_LENGTHS})",
    )
    p.add_argument("--causal", action="store_true", help="causal attention")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per measurement")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds per (variant, L) measurement, import and tracing included",
    )
    p.add_argument(
        "--max-memory",
        type=float,
        default=8192.0,
        help="MiB of RSS after which a measurement is stopped and reported as OOM (0: no limit)",
    )
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--jit", action="store_true", help="compile the step with XLA")
    p.add_argument(
        "--interleave",
        action="store_true",
        help="per L, time all variants in one process with their steps interleaved (ratios "
        "robust to a changing load; wall and CPU ms, no memory; JSON only with --output); "
        "--timeout is per L",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="variants measured side by side (default 1; >1 only for smoke tests, "
        "since parallel runs disturb each other's timings and memory)",
    )
    p.add_argument(
        "--slope-from",
        type=int,
        default=2048,
        help="fit the log-log slopes on lengths >= this (all if fewer than 2)",
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="constructor kwargs for one variant, e.g. sliding_window='{\"window\": 64}'",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (L 64, 128; d_model 32; 2 heads; 1 repeat) for a smoke test; "
        "writes files only where --output/--plot/--markdown are given",
    )
    p.add_argument("--output", default=None, help=f"JSON path (default {DEFAULT_JSON})")
    p.add_argument("--plot", default=None, help=f"PNG path (default {DEFAULT_PNG})")
    p.add_argument("--markdown", default=None, help="also write the table as Markdown here")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker is not None:  # kept for old command lines: same as _scaling_points.py
        sys.path.insert(0, os.path.dirname(WORKER))
        from _scaling_points import run_worker

        run_worker(json.loads(args.worker))
        return 0
    if args.quick:
        lengths = args.lengths or QUICK_LENGTHS
        d_model, num_heads, repeats = 32, 2, 1
        output, png = args.output, args.plot
    else:
        lengths = args.lengths or DEFAULT_LENGTHS
        d_model, num_heads, repeats = args.d_model, args.num_heads, args.repeats
        output, png = args.output or DEFAULT_JSON, args.plot or DEFAULT_PNG
    if d_model % num_heads:
        raise SystemExit(f"--d-model={d_model} must be a multiple of --num-heads={num_heads}")
    overrides = {}
    for item in args.config:
        name, _, text = item.partition("=")
        overrides[name.strip()] = json.loads(text)
    if args.variants:
        variants = [v for part in args.variants for v in part.split(",") if v]
    else:
        sys.path.insert(0, ROOT)
        import keras_transformers as kt

        variants = kt.attention.available()
    variants = ["full"] + [v for v in variants if v != "full"]
    settings = (
        f"B=1, d_model={d_model}, h={num_heads}, causal={args.causal}, "
        f"repeats={repeats}, timeout={args.timeout:g}s, max-memory={args.max_memory:g}MiB, "
        f"jit={args.jit}"
    )
    print(f"attention scaling: {settings}", flush=True)
    specs = []
    for v in variants:
        config = config_for(v, args.quick, overrides)
        for length in lengths:
            specs.append(
                {
                    "variant": v,
                    "length": length,
                    "config": config,
                    "d_model": d_model,
                    "num_heads": num_heads,
                    "causal": args.causal,
                    "repeats": repeats,
                    "jit": args.jit,
                }
            )
    if args.interleave:  # ratios only: a file only where --output is given
        results = run_interleaved(specs, lengths, repeats, args.timeout)
        output = args.output
        if output:
            os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
            command = " ".join(sys.argv if argv is None else ["attention_scaling.py", *argv])
            with open(output, "w") as f:
                json.dump(
                    {"settings": settings, "command": command, "results": results}, f, indent=1
                )
            print(f"wrote {output}")
        return 0
    results = run_all(specs, args.timeout, args.max_memory, max(1, args.jobs))
    slopes = summarise(results, variants, lengths, args.slope_from)
    rows = table_rows(results, variants, lengths)
    print()
    print(format_table(rows))
    print()
    print(f"log-log slopes (fitted on L >= {args.slope_from} where possible):")
    for v, s in slopes.items():
        print(f"  {v:>16s} memory {_fmt(s['memory'], 2)}  time {_fmt(s['time'], 2)}")
    command = "python benchmarks/attention_scaling.py " + " ".join(
        a if " " not in a else repr(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    payload = {
        "settings": {
            "B": 1,
            "d_model": d_model,
            "num_heads": num_heads,
            "causal": args.causal,
            "repeats": repeats,
            "timeout_s": args.timeout,
            "max_memory_mib": args.max_memory,
            "jit": args.jit,
            "lengths": lengths,
            "slope_from": args.slope_from,
        },
        "command": command.strip(),
        "results": results,
        "slopes": slopes,
    }
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as f:
            json.dump(payload, f, indent=1)
        print(f"wrote {output}")
    if png and not args.no_plot:
        plot(results, variants, png, f"attention scaling ({settings})")
        print(f"wrote {png}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown_table(rows, slopes, command.strip(), settings))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
