"""Write the measured table of ``docs/guide/choosing-an-attention.md`` from the benchmark JSON.

Reads ``benchmarks/results/attention_scaling.json`` (written by ``benchmarks/attention_scaling.py``)
and any ``benchmarks/results/attention_scaling_*.json`` next to it, and replaces the text between
the two marker comments of the guide with one table per mode (non-causal runs, causal runs) and
one row per attention core:

* forward+backward time and peak memory at the largest measured length (16k by default), and
  ``full``'s time there (or ``OOM`` / ``timeout`` where it could not run);
* the speed-up and the memory ratio against ``full`` measured in the same run, at the largest
  length where ``full`` also ran;
* the log-log slopes of memory and time against ``L`` fitted by the benchmark;
* what the core supports (causal, cross-attention, score-side positions, debug weights), read
  from the registered class.

A variant measured in several files is taken from the file that reaches the longest length (the
newest file on a tie); each file's command is listed under the table.

Usage:
    python docs/make_choosing_table.py                 # update the guide in place
    python docs/make_choosing_table.py --check         # exit 1 if the guide is out of date
    python docs/make_choosing_table.py --json a.json b.json --print
"""

import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
GUIDE = os.path.join(ROOT, "docs", "guide", "choosing-an-attention.md")
BEGIN = "<!-- BEGIN MEASURED TABLE (docs/make_choosing_table.py) -->"
END = "<!-- END MEASURED TABLE -->"


def default_json_files():
    main = os.path.join(RESULTS, "attention_scaling.json")
    extra = sorted(glob.glob(os.path.join(RESULTS, "attention_scaling_*.json")))
    return [p for p in [main, *extra] if os.path.exists(p)]


def load_runs(paths):
    """``[(path, payload), ...]`` for the readable files."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append((path, json.load(f)))
    return runs


def pick_variants(runs):
    """``{variant: (run_index, [results])}``: the run reaching the longest L wins (newest on tie)."""
    chosen = {}
    for index, (path, payload) in enumerate(runs):
        mtime = os.path.getmtime(path)
        by_variant = {}
        for r in payload.get("results", []):
            by_variant.setdefault(r["variant"], []).append(r)
        for variant, results in by_variant.items():
            longest = max((r["length"] for r in results if r["status"] == "ok"), default=0)
            key = (longest, mtime)
            if variant not in chosen or key > chosen[variant][0]:
                chosen[variant] = (key, index, results)
    return {v: (index, results) for v, (_, index, results) in chosen.items()}


def _fmt(value, digits=1, suffix=""):
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


def capabilities(name):
    """Short capability string read from the registered class (empty if unavailable)."""
    try:
        sys.path.insert(0, ROOT)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras_transformers as kt

        cls = kt.attention.registry.REGISTRY.get_class(name)
    except Exception:  # noqa: BLE001 - the table still renders without capabilities
        return ""
    marks = []
    marks.append("causal" if cls.supports_causal else "no causal")
    if cls.supports_cross_attention:
        marks.append("cross")
    if cls.supports_position_bias:
        marks.append("score biases")
    if cls.supports_cache:
        marks.append("KV cache")
    return ", ".join(marks)


def build_tables(runs, with_capabilities=True):
    """Markdown: one table per attention mode (non-causal, causal) found in the runs."""
    sections = []
    for causal, title in ((False, "Non-causal (encoder) attention"), (True, "Causal attention")):
        subset = [run for run in runs if bool(run[1].get("settings", {}).get("causal")) == causal]
        if subset:
            sections.append(f"**{title}**\n\n" + build_table(subset, with_capabilities))
    if not sections:
        return "_No benchmark results found: run `python benchmarks/attention_scaling.py`._\n"
    return "\n".join(sections)


def build_table(runs, with_capabilities=True):
    """Markdown table (string) of the chosen measurements of runs with the same settings."""
    chosen = pick_variants(runs)
    if not chosen:
        return "_No results._\n"
    lines = [
        "| variant | largest L | fwd+bwd ms | peak MiB | `full` at that L "
        "| speed-up vs full | memory ratio vs full | memory slope | time slope | supports |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(chosen, key=lambda v: (v != "full", v))
    for variant in order:
        index, results = chosen[variant]
        payload = runs[index][1]
        ok = [r for r in results if r["status"] == "ok"]
        slopes = payload.get("slopes", {}).get(variant, {})
        caps = capabilities(variant) if with_capabilities else ""
        full = {r["length"]: r for r in payload.get("results", []) if r["variant"] == "full"}
        if not ok:
            worst = max(results, key=lambda r: r["length"])
            lines.append(
                f"| `{variant}` | {worst['length']} | {worst['status']} | {worst['status']} "
                f"| – | – | – | – | – | {caps} |"
            )
            continue
        top = max(ok, key=lambda r: r["length"])
        full_top = full.get(top["length"])
        full_text = (
            "–"
            if full_top is None
            else (
                f"{full_top['time_ms']:,.1f} ms"
                if full_top["status"] == "ok"
                else full_top["status"]
            )
        )
        # ratios at the longest length where full also ran in the same run
        both = [r for r in ok if r.get("speedup_vs_full") is not None]
        if variant == "full" or not both:
            speed_text = mem_text = "–"
        else:
            ref = max(both, key=lambda r: r["length"])
            at = f" (L={ref['length']})" if ref["length"] != top["length"] else ""
            speed_text = _fmt(ref.get("speedup_vs_full"), 1, "×") + at
            mem_text = _fmt(ref.get("memory_ratio_vs_full"), 1, "×") + at
        lines.append(
            f"| `{variant}` | {top['length']} | {_fmt(top['time_ms'])} | "
            f"{_fmt(top.get('peak_mib'))} | {full_text} | {speed_text} | {mem_text} | "
            f"{_fmt(slopes.get('memory'), 2)} | {_fmt(slopes.get('time'), 2)} | {caps} |"
        )
    lines.append("")
    for index, (path, payload) in enumerate(runs):
        used = sorted(v for v, (i, _) in chosen.items() if i == index)
        if not used:
            continue
        settings = payload.get("settings", {})
        described = ", ".join(
            f"{k}={settings[k]}"
            for k in ("d_model", "num_heads", "causal", "jit", "repeats")
            if k in settings
        )
        lines.append(
            f"- `{os.path.relpath(path, ROOT)}` ({', '.join(used)}): "
            f"`{payload.get('command', '?')}`; B=1, {described}."
        )
    lines.append(
        "- Speed-up and memory ratio are `full`'s time (memory) divided by the variant's in the "
        "same run, at the largest L where `full` also ran (shown in brackets when it is not the "
        "variant's largest L); `OOM` / `timeout` in the `full` column means `full` could not run "
        "there. Slopes are the benchmark's log-log slopes of memory and time against L "
        "(L >= 2048)."
    )
    return "\n".join(lines) + "\n"


def replace_between_markers(text, table):
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{GUIDE}: marker comments {BEGIN!r} / {END!r} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}{END}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", nargs="+", default=None, help="benchmark JSON files")
    parser.add_argument("--guide", default=GUIDE)
    parser.add_argument("--print", action="store_true", help="print the table, do not write")
    parser.add_argument("--check", action="store_true", help="exit 1 if the guide is stale")
    parser.add_argument(
        "--no-capabilities",
        action="store_true",
        help="do not import the package for the 'supports' column",
    )
    args = parser.parse_args(argv)
    runs = load_runs(args.json or default_json_files())
    table = build_tables(runs, with_capabilities=not args.no_capabilities)
    if args.print:
        print(table)
        return 0
    with open(args.guide) as f:
        text = f.read()
    updated = replace_between_markers(text, table)
    if args.check:
        return 0 if updated == text else 1
    with open(args.guide, "w") as f:
        f.write(updated)
    print(
        f"wrote the measured table of {os.path.relpath(args.guide, ROOT)} from {len(runs)} file(s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
