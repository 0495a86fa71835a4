#!/usr/bin/env python3
"""Issue 13's "also at scale" check: backfilld against the single UPDATE at two table sizes, plain and wide rows.

    .venv/bin/python benchmarks/scale_check.py [--sizes 1000000,10000000] [--variants plain,wide]
                                               [--json-dir DIR] [--readme] [bench_backfill.py options]
    .venv/bin/python benchmarks/scale_check.py --compare RUN.json RUN.json ... [--readme]

Runs benchmarks/bench_backfill.py once per variant and size (default: plain and --wide rows, 1,000,000 and
10,000,000 rows, --contenders single,backfilld; every other option, e.g. --engines, --repeat, --pg-url, is passed
on), each in a process of its own, so that one size's RSS is not lowered or raised by what the other size's runs
left in the allocator. Each run's ratios are against the single UPDATE measured in that same process, as always.
Then, per variant, engine and backfilld contender, it prints from the runs' --json files:

  x single UPDATE  the median ratio at each size, and its change from the smallest size: "ok" within
                   RATIO_TOLERANCE (issue 13: within 10% of the 1M-row ratio), else "better" or "WORSE";
  CPU s / M rows   this process's CPU per million rows at each size: "ok" unless it grew by more than
                   GROWTH_TOLERANCE (issue 13: not growing; the same contender's runs spread 5-15%);
  peak RSS MiB     this process's largest RSS reading during the run (bench_backfill.py samples it every 0.1 s):
                   "ok" unless it grew by more than GROWTH_TOLERANCE (issue 13: flat);
  RSS growth MiB   RSS at the run's end minus at its start, at each size (no verdict: shown to spot a leak).

The verdicts are printed, never turned into the exit status: 0 when every benchmark run succeeded (each verifies
every row), else the failed run's status. --compare does the same comparison over --json files written earlier
(by bench_backfill.py --json or by this script's --json-dir), grouped by their rows and --wide.

Time: bench_backfill.py's time grows about linearly with the rows (it logs each phase). On the 2-core machine, with
--repeat 3, the 1M-row runs took 4 min (plain) and 9 min (wide) for all three engines; 10M rows, ten times as long
or more (PostgreSQL's and MariaDB's 128 MB buffers hold a 1M-row plain table, not a 10M-row one): count on 2.5-3.5
hours for the whole default check, and 30 GB of free disk (at 10M wide rows each table is 4.5 GB, and the updates
and rebuilds need as much again). Hold the machine while it runs:

    flock /tmp/backfilld-bench.lock .venv/bin/python benchmarks/scale_check.py --repeat 3 --readme
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_backfill

DEFAULT_SIZES = (1_000_000, 10_000_000)
DEFAULT_VARIANTS = ("plain", "wide")
DEFAULT_CONTENDERS = "single,backfilld"
# issue 13: backfilld's ratio to the single UPDATE at 10M rows within 10% of its ratio at 1M rows
RATIO_TOLERANCE = 0.10
# CPU per million rows and peak RSS count as "not growing" / "flat" up to this much above the smallest size:
# repeated runs of one contender spread 5-15% on the 2-core machine, so a stricter bound would flag noise
GROWTH_TOLERANCE = 0.10


def fmt_rows(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"


def variant_of(wide: bool) -> str:
    return "wide" if wide else "plain"


def change(new: float | None, old: float | None) -> float | None:
    """new / old - 1, or None when either is missing (or old is 0)."""
    if new is None or old is None or old == 0:
        return None
    return new / old - 1


def fmt_change(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def ratio_verdict(x: float | None) -> str:
    if x is None:
        return ""
    if abs(x) <= RATIO_TOLERANCE:
        return f"ok (within {100 * RATIO_TOLERANCE:.0f}%)"
    return "better" if x > 0 else f"WORSE (beyond {100 * RATIO_TOLERANCE:.0f}%)"


def growth_verdict(x: float | None, word: str) -> str:
    if x is None:
        return ""
    return f"ok ({word})" if x <= GROWTH_TOLERANCE else f"GROWS (more than {100 * GROWTH_TOLERANCE:.0f}%)"


def load_runs(paths: list[Path]) -> dict[tuple[str, int], dict[str, Any]]:
    """(variant, rows) -> the --json document of that run (the later file wins when two have the same key)."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for p in paths:
        doc = json.loads(p.read_text())
        cfg = doc.get("config")
        if not cfg:
            raise SystemExit(f"{p}: no 'config' in it; written by a bench_backfill.py older than --wide?")
        out[(variant_of(bool(cfg["wide"])), int(cfg["rows"]))] = doc
    return out


def comparison(docs: dict[tuple[str, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per variant, engine and backfilld contender: its figures at each size, smallest size first."""
    series: dict[tuple[str, str, str], list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    labels: dict[tuple[str, str, str], tuple[str, str]] = {}
    for (variant, rows), doc in sorted(docs.items(), key=lambda kv: (kv[0][0] != "plain", kv[0][1])):
        for r in doc["summary"]:
            if not r["contender_id"].startswith("backfilld"):
                continue
            key = (variant, r["engine_id"], r["contender_id"])
            series[key].append((rows, r))
            labels[key] = (r["engine"], r["contender"])
    out: list[dict[str, Any]] = []
    for key, points in series.items():
        variant, engine, _contender = key
        base = points[0][1]
        sizes = []
        for rows, r in points:
            sizes.append({
                "rows": rows, "ratio": r["ratio"], "cpu_s_per_mrows": r["cpu_s_per_mrows"],
                "rss_peak_mib": r.get("rss_peak_mib"), "rss_growth_mib": r.get("rss_growth_mib"),
                "ratio_change": change(r["ratio"], base["ratio"]),
                "cpu_change": change(r["cpu_s_per_mrows"], base["cpu_s_per_mrows"]),
                "rss_peak_change": change(r.get("rss_peak_mib"), base.get("rss_peak_mib")),
                "runs": r["runs"],
            })
        out.append({"variant": variant, "engine_id": engine, "engine": labels[key][0], "contender": labels[key][1],
                    "sizes": sizes})
    order = {e: i for i, e in enumerate(bench_backfill.ENGINES)}
    out.sort(key=lambda c: (c["variant"] != "plain", order.get(c["engine_id"], 99), c["contender"]))
    return out


def print_comparison(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        sizes = e["sizes"]
        runs = " / ".join(str(s["runs"]) for s in sizes)
        print(f"\n{e['engine']}, {e['variant']} rows, {e['contender']} (runs per size: {runs}; medians):")
        lines = [
            ["", *(f"{fmt_rows(s['rows'])} rows" for s in sizes)],
            ["x single UPDATE", *(f"{s['ratio']:.2f}" if s["ratio"] is not None else "-" for s in sizes)],
            ["CPU s / M rows", *(f"{s['cpu_s_per_mrows']:.3f}" for s in sizes)],
            ["peak RSS MiB", *(bench_backfill.fmt_mib(s["rss_peak_mib"]) for s in sizes)],
            ["RSS growth MiB", *(bench_backfill.fmt_mib(s["rss_growth_mib"], signed=True) for s in sizes)],
        ]
        if len(sizes) > 1:
            lines[0].append(f"change from {fmt_rows(sizes[0]['rows'])}")
            for line, key, verdict in ((lines[1], "ratio_change", ratio_verdict),
                                       (lines[2], "cpu_change", lambda x: growth_verdict(x, "not growing")),
                                       (lines[3], "rss_peak_change", lambda x: growth_verdict(x, "flat"))):
                line.append("; ".join(f"{fmt_change(s[key])} {verdict(s[key])}" for s in sizes[1:]))
            lines[4].append("")
        n_numbers = len(sizes)
        widths = [max(len(line[i]) for line in lines) for i in range(n_numbers + 1)]
        for line in lines:
            numbers = zip(line[1:n_numbers + 1], widths[1:], strict=True)
            cells = [line[0].ljust(widths[0]), *(c.rjust(w) for c, w in numbers)]
            print("  " + "  ".join([*cells, *line[n_numbers + 1:]]).rstrip())


def print_readme(entries: list[dict[str, Any]]) -> None:
    print("<!-- generated by benchmarks/scale_check.py --readme -->")
    print("| Engine | Width | Rows | vs single UPDATE | change | CPU s / M rows | peak RSS MiB | RSS growth MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for e in entries:
        for i, s in enumerate(e["sizes"]):
            ratio = f"{s['ratio']:.2f}" if s["ratio"] is not None else "-"
            print(f"| {e['engine']} | {e['variant']} | {s['rows']:,} | {ratio} | "
                  f"{fmt_change(s['ratio_change']) if i else ''} | {s['cpu_s_per_mrows']:.2f} | "
                  f"{bench_backfill.fmt_mib(s['rss_peak_mib'])} | "
                  f"{bench_backfill.fmt_mib(s['rss_growth_mib'], signed=True)} |")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    ap = argparse.ArgumentParser(
        description="Run bench_backfill.py at two (or more) table sizes, plain and wide rows, and compare "
                    "backfilld's ratio to the single UPDATE, CPU per million rows and RSS across the sizes. "
                    "Options not listed here go to bench_backfill.py. Full description at the top of this file.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(str(n) for n in DEFAULT_SIZES),
                    help="comma-separated row counts, smallest first is the baseline (default %(default)s)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help="comma-separated: plain, wide (bench_backfill.py --wide) (default %(default)s)")
    ap.add_argument("--json-dir", help="keep each run's --json file here as VARIANT-ROWS.json (default: a temporary "
                    "directory, removed afterwards)")
    ap.add_argument("--compare", nargs="+", type=Path, metavar="JSON",
                    help="run nothing: compare these bench_backfill.py --json files")
    ap.add_argument("--readme", action="store_true", help="also print the comparison as a markdown table")
    args, rest = ap.parse_known_args(argv)
    try:
        args.sizes = sorted(int(x.replace("_", "")) for x in args.sizes.split(",") if x.strip())
    except ValueError:
        ap.error("--sizes takes comma-separated row counts")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.variants or any(v not in DEFAULT_VARIANTS for v in args.variants):
        ap.error("--variants takes plain, wide")
    if any(a == "--wide" or a.startswith(("--rows", "--json")) for a in rest):
        ap.error("--rows, --wide and --json are this script's to set: use --sizes, --variants, --json-dir")
    if args.compare and rest:
        ap.error(f"--compare runs nothing, so {rest[0]} has nothing to go to")
    if not args.compare:
        if not any(a.startswith("--contenders") for a in rest):
            rest += ["--contenders", DEFAULT_CONTENDERS]
        # the passed-on options, checked now rather than after the first size's run
        bench_backfill.parse_args([*rest, "--rows", str(args.sizes[0])])
    return args, rest


def main(argv: list[str] | None = None) -> int:
    args, rest = parse_args(argv)
    if args.compare:
        docs = load_runs(args.compare)
    else:
        json_dir = Path(args.json_dir) if args.json_dir else Path(tempfile.mkdtemp(prefix="bench-scale-"))
        json_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        try:
            for variant in args.variants:
                for rows in args.sizes:
                    path = json_dir / f"{variant}-{rows}.json"
                    cmd = [sys.executable, str(HERE / "bench_backfill.py"), *rest, "--rows", str(rows),
                           "--json", str(path), *(["--wide"] if variant == "wide" else [])]
                    bench_backfill.log(f"scale check: {' '.join(cmd[1:])}")
                    rc = subprocess.run(cmd, check=False).returncode
                    if rc != 0:
                        bench_backfill.log(f"scale check: bench_backfill.py exited with {rc}; stopping")
                        return rc
                    paths.append(path)
            docs = load_runs(paths)
        finally:
            if not args.json_dir:
                for p in paths:
                    p.unlink(missing_ok=True)
                json_dir.rmdir()
    entries = comparison(docs)
    print("\nscale check: backfilld at each size against the smallest; the runs:")
    for (variant, rows), doc in sorted(docs.items(), key=lambda kv: (kv[0][0] != "plain", kv[0][1])):
        print(f"  {variant} {fmt_rows(rows)}: {doc['meta']}")
    print_comparison(entries)
    if args.readme:
        print()
        print_readme(entries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
