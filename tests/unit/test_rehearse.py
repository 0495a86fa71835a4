"""The parts of `backfilld rehearse` that hold no SQL: comparing two engines' values, showing values, finding the
failing rows of a statement by halving its range, the report's shape; and the statements' text."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import pytest

from backfilld import engines
from backfilld.engines.rehearsal import (
    Family,
    RowFailed,
    build_probe,
    build_scratch_values,
    build_slot_read,
    for_engine,
    plain_type,
)
from backfilld.engines.statements import TableSpec
from backfilld.errors import ConfigError
from backfilld.rehearse import (
    SHOWN,
    Finding,
    Isolation,
    JobReport,
    Report,
    TargetReport,
    against_label,
    against_url,
    same,
    shown,
)

INT, TEXT = Family("int"), Family("text")


@pytest.mark.parametrize(("family", "a", "b"), [
    (INT, 3, decimal.Decimal("3.000")),
    (INT, 3, 3.0),
    (INT, decimal.Decimal("16.6666"), 17),              # as an integer column stores them
    (Family("decimal", precision=5, scale=2), decimal.Decimal("1.5"), decimal.Decimal("1.50")),
    (Family("float"), 0.1 + 0.2, 0.30000000000000004),
    (Family("float"), float("nan"), float("nan")),
    (TEXT, "b", "b"),
    (TEXT, b"b", "b"),                                  # MySQL's binary strings
    (TEXT, 3, "3"),
    (Family("bool"), 1, True),
    (Family("date"), dt.date(2024, 2, 29), "2024-02-29"),
    (Family("datetime"), dt.datetime(2024, 1, 1, 10), "2024-01-01 10:00:00"),
    (Family("datetime_tz"), dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
     dt.datetime(2024, 1, 1, 10)),
    (Family("time"), dt.timedelta(hours=1, minutes=2), dt.time(1, 2)),
    (Family("json"), '{"a": 1, "b": [1, 2]}', '{"b":[1,2],"a":1}'),
    (Family("uuid"), "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
    (TEXT, None, None),
])
def test_values_that_agree(family: Family, a: Any, b: Any) -> None:
    assert same(family, a, b)


@pytest.mark.parametrize(("family", "a", "b"), [
    (TEXT, "b", "b@c"),
    (TEXT, "a", "A"),                                   # byte for byte, whatever a collation calls equal
    (TEXT, "a", "a "),
    (TEXT, "", None),
    (INT, decimal.Decimal("16.6666"), 16),              # SQLite's integer division
    (Family("float"), 0.1, 0.1000001),
    (Family("json"), '{"a": 1}', '{"a": "1"}'),
    (Family("date"), "2024-02-29", "2024-03-01"),
])
def test_values_that_disagree(family: Family, a: Any, b: Any) -> None:
    assert not same(family, a, b)


def test_shown_values_are_json_and_long_ones_cut() -> None:
    assert shown(None) is None and shown(7) == 7 and shown(decimal.Decimal("1.50")) == "1.50"
    assert shown(b"\x00\xff") == "\\x00ff" and shown(dt.date(2024, 1, 2)) == "2024-01-02"
    assert shown(float("inf")) == "inf"
    long = shown("x" * 1000)
    assert long.startswith("x" * 200) and long.endswith("(1000 characters)")


def test_a_finding_counts_every_row_and_shows_a_few_of_several_reasons() -> None:
    f = Finding()
    for i in range(20):
        f.add({"key": [i], "reason": "rounded: stored as 1"})
    f.add({"key": [99], "reason": "out of range for tinyint(4)"})
    assert f.count == 21 and len(f.samples) == SHOWN
    assert [s["key"] for s in f.samples] == [[0], [1], [2], [3], [99]]


async def test_isolation_halves_the_range_down_to_each_failing_row() -> None:
    rows = list(range(100))
    bad = {17, 18, 63}
    statements = []

    async def run(lo: Any, hi: Any) -> list[tuple[Any, ...]]:
        part = [r for r in rows if (lo is None or r > lo) and (hi is None or r <= hi)]
        statements.append((lo, hi))
        hit = bad & set(part)
        if hit:
            raise RowFailed(f"row {min(hit)}\nDETAIL: more")
        return [(r, r * 2) for r in part]

    iso = Isolation(run, lambda r: r, lambda: None)
    await iso.part(None, None, rows)
    assert sorted(r for r, _ in iso.failed) == [17, 18, 63] and iso.exact
    assert dict(iso.failed)[63] == "row 63 DETAIL: more"   # the server's lines on one line
    assert sorted(r for r, _ in iso.results) == [r for r in rows if r not in bad]
    assert len(statements) < 40


async def test_isolation_past_its_budget_counts_failing_ranges_whole() -> None:
    async def run(lo: Any, hi: Any) -> list[tuple[Any, ...]]:
        raise RowFailed("every row fails")

    iso = Isolation(run, lambda r: r, lambda: None, budget=3)
    await iso.part(None, None, list(range(64)))
    assert len(iso.failed) == 64 and not iso.exact


def test_report_problems_and_shape() -> None:
    t = TargetReport("dom", "varchar(10)", "lower(x)")
    t.null.add({"key": [1], "sources": {}})
    t.does_not_fit.add({"key": [2], "sources": {}, "value": "x", "reason": "too long"})
    job = JobReport("j", "mysql", "t", ["id"], "sql", 10, targets=[t])
    report = Report([job])
    d = report.as_dict()
    assert d["format"] == 1 and d["clean"] is False and d["problems"] == 2
    [jd] = d["jobs"]
    assert set(jd) == {"job", "engine", "table", "key", "kind", "defined_in", "sources", "mode", "sample", "targets",
                       "transform_raises", "against", "timing", "problems"}
    assert set(jd["targets"][0]) == {"target", "column_type", "expression", "null", "does_not_fit", "raises",
                                     "fit_not_checked"}
    assert set(jd["timing"]) >= {"update_s_per_1000", "estimated_run_s", "workers", "max_rows_per_s", "error"}
    assert Report([JobReport("k", "sqlite", "t", ["id"], "sql", 10)]).as_dict()["clean"] is True


def test_against_urls() -> None:
    assert against_label(against_url("sqlite")) == "sqlite"
    assert against_url("mysql://root@127.0.0.1:3306/test").engine == "mysql"
    with pytest.raises(ConfigError, match="--against"):
        against_url("oracle://x/y")
    with pytest.raises(ConfigError, match="password"):
        against_url("postgresql://u:secret@h/db")
    with pytest.raises(ConfigError) as err:
        against_url("postgresql://u:secret@h/db")
    assert "secret" not in str(err.value)


def test_plain_type_drops_lengths() -> None:
    assert plain_type("character varying(10)") == "character varying"
    assert plain_type("numeric(5, 2)") == "numeric"
    assert plain_type("timestamp(3) without time zone") == "timestamp without time zone"


@pytest.mark.parametrize("name", ["postgresql", "mysql", "sqlite"])
def test_statements_read_the_rows_a_batch_would_write(name: str) -> None:
    d = engines.dialect(name)
    spec = TableSpec("t", ("id",), {"dom": "lower(email)"}, "deleted = 0")
    slot = build_slot_read(d, spec, ["email"], lo=True, hi=False, desc=True)
    assert "(deleted = 0)" in slot.sql and "IS NULL" in slot.sql and "DESC" in slot.sql
    assert slot.names == ("lo0", "n")
    probe = build_probe(d, spec, "lower(email)", "bf_v IS NULL", lo=False, hi=False, empty=True)
    assert probe.sql.endswith("LIMIT 0") and "(lower(email)) AS bf_v" in probe.sql
    scratch = build_scratch_values(d, for_engine(name).temp_ref(d, "t"), "x", lo=True, hi=True)
    assert scratch.names == ("lo", "hi") and "bf_rehearse_row" in scratch.sql


def test_temporary_tables_are_never_named_so_that_a_permanent_one_could_be_dropped() -> None:
    for name, drop in (("postgresql", "DROP TABLE IF EXISTS pg_temp.\"users\""),
                       ("mysql", "DROP TEMPORARY TABLE IF EXISTS `users`"),
                       ("sqlite", "DROP TABLE IF EXISTS temp.\"users\"")):
        assert for_engine(name).temp_drop(engines.dialect(name), "users") == drop
