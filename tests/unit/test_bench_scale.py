"""benchmarks/scale_check.py's comparison and bench_backfill.py's RSS sampler: logic only, no database, no timing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_backfill
import scale_check


def summary_row(engine: str, contender: str, ratio: float, cpu: float, peak: float | None) -> dict[str, Any]:
    return {"engine": bench_backfill.ENGINE_LABELS[engine], "contender": bench_backfill.LABELS[contender],
            "engine_id": engine, "contender_id": contender, "ratio": ratio, "cpu_s_per_mrows": cpu,
            "rss_peak_mib": peak, "rss_growth_mib": 0.5, "runs": 3}


def doc(rows: int, wide: bool, *summary: dict[str, Any]) -> dict[str, Any]:
    return {"meta": f"{rows} rows", "config": {"rows": rows, "wide": wide}, "summary": list(summary)}


def test_comparison_pairs_each_engine_and_variant_across_sizes() -> None:
    docs = {
        ("plain", 10_000_000): doc(10_000_000, False, summary_row("postgresql", "single", 1.0, 0.0, 70),
                                   summary_row("postgresql", "backfilld", 1.17, 0.06, 80)),
        ("plain", 1_000_000): doc(1_000_000, False, summary_row("postgresql", "single", 1.0, 0.0, 70),
                                  summary_row("postgresql", "backfilld", 1.30, 0.05, 80)),
        ("wide", 1_000_000): doc(1_000_000, True, summary_row("sqlite", "backfilld", 0.9, 1.0, None)),
    }
    entries = scale_check.comparison(docs)
    assert [(e["variant"], e["engine_id"]) for e in entries] == [("plain", "postgresql"), ("wide", "sqlite")]
    small, large = entries[0]["sizes"]
    assert (small["rows"], large["rows"]) == (1_000_000, 10_000_000)  # smallest first, whatever the input order
    assert small["ratio_change"] == pytest.approx(0.0)
    assert large["ratio_change"] == pytest.approx(1.17 / 1.30 - 1)
    assert large["cpu_change"] == pytest.approx(0.2)
    assert large["rss_peak_change"] == pytest.approx(0.0)
    assert entries[1]["sizes"][0]["rss_peak_change"] is None  # no /proc: no reading, no verdict


def test_verdicts() -> None:
    assert scale_check.ratio_verdict(-0.10).startswith("ok")
    assert scale_check.ratio_verdict(-0.11).startswith("WORSE")
    assert scale_check.ratio_verdict(0.25) == "better"
    assert scale_check.growth_verdict(0.05, "flat") == "ok (flat)"
    assert scale_check.growth_verdict(0.15, "flat").startswith("GROWS")
    assert scale_check.growth_verdict(None, "flat") == ""


def test_rss_sampler_brackets_the_block() -> None:
    if bench_backfill.rss_bytes() is None:
        pytest.skip("no /proc/self/statm here")
    with bench_backfill.RssSampler() as rss:
        ballast = b"\x01" * (32 * bench_backfill.MIB)  # written, so resident
    assert rss.start is not None and rss.end is not None and rss.peak is not None
    assert rss.peak >= max(rss.start, rss.end)
    assert rss.end - rss.start >= 30 * bench_backfill.MIB
    del ballast
