"""Python transforms on every engine: computed in Python, written back guarded in one statement per batch."""

from __future__ import annotations

import json

import pytest
import structlog

from backfilld import daemon
from backfilld.errors import ConfigError, JobFailed
from backfilld.verify import Verifier
from tests.dbutil import HIDDEN_CHANGES, TestDb, hiding_type
from tests.fixtures import transforms

BLOBS = ["a=1;b=2", "ключ=значение", "emoji=🦄;x=%s", "", None, "k=v=w", "z=1"]


def expected(value: str | None) -> str | None:
    return transforms.props_to_json({"pp_value": value})["pp_json"]


async def page_props(db: TestDb, n: int, bad_every: int = 0) -> str:
    i = db.int_type()
    table = await db.create("page_props", f"pp_page {i} NOT NULL, pp_name VARCHAR(60) NOT NULL, "
                                          "pp_value VARCHAR(255), pp_json VARCHAR(400), PRIMARY KEY (pp_page, pp_name)")
    rows = []
    for k in range(1, n + 1):
        value = BLOBS[k % len(BLOBS)]
        if bad_every and k % bad_every == 0:
            value = f"!broken {k}"
        rows.append((k // 3, f"prop{k % 3}é", value))
    await db.many(f"INSERT INTO {table} (pp_page, pp_name, pp_value) VALUES (?, ?, ?)", rows)
    return table


def job(table: str, fn: str = "props_to_json", **kw) -> dict:  # noqa: ANN003
    return {"name": "props", "table": table, "transform": f"tests.fixtures.transforms:{fn}", "sources": ["pp_value"],
            "targets": ["pp_json"], "batch_size": 200, **kw}


async def check_all(db: TestDb, table: str) -> int:
    rows = await db.q(f"SELECT pp_value, pp_json FROM {table}")
    for value, got in rows:
        assert got == expected(value), (value, got)
    return len(rows)


async def test_transform_fills_every_row(db: TestDb) -> None:
    table = await page_props(db, 3000)
    [state] = await daemon.run(db.config([job(table)]), daemon.RunOptions())
    assert state.status == "completed"
    assert await check_all(db, table) == 3000
    filled = (await db.q(f"SELECT count(*) FROM {table} WHERE pp_json IS NOT NULL"))[0][0]
    assert state.rows_done == filled


async def test_async_transform_and_a_source_changed_between_read_and_write(db: TestDb) -> None:
    """Old code changes a source after the batch read it: the guarded write skips that row; a later pass
    reads it again and writes the value of the new source."""
    table = await page_props(db, 600)
    other = TestDb(db.url, db.suffix)
    await other.open()
    changed = []

    async def old_code_writes(row: dict) -> None:
        if not changed and row["pp_value"] == "a=1;b=2":
            changed.append(row)
            await other.x(f"UPDATE {table} SET pp_value = ? WHERE pp_value = ?", "changed=yes", "a=1;b=2")

    transforms.BEFORE["hook"] = old_code_writes
    try:
        with structlog.testing.capture_logs() as logs:
            [state] = await daemon.run(db.config([job(table, "props_to_json_async")]), daemon.RunOptions())
    finally:
        transforms.BEFORE.clear()
        await other.engine.close()
    assert changed
    # the batch that read the old values wrote none of them; they were left for the next pass
    assert [e for e in logs if e["event"] == "rows_changed_meanwhile"]
    assert state.status == "completed" and state.pass_no >= 3
    assert await check_all(db, table) == 600
    changed_rows = await db.q(f"SELECT pp_json FROM {table} WHERE pp_value = ?", "changed=yes")
    assert changed_rows and all(v == '{"changed": "yes"}' for (v,) in changed_rows)


async def test_value_written_by_new_code_is_kept(db: TestDb) -> None:
    table = await page_props(db, 300)
    await db.x(f"UPDATE {table} SET pp_json = ? WHERE pp_page = 1", '{"new": "code"}')
    [state] = await daemon.run(db.config([job(table)]), daemon.RunOptions())
    assert state.status == "completed"
    kept = await db.q(f"SELECT pp_json FROM {table} WHERE pp_page = 1")
    assert kept and all(v == '{"new": "code"}' for (v,) in kept)


async def test_raising_transform_stops_the_job_with_the_key(db: TestDb) -> None:
    table = await page_props(db, 500, bad_every=250)
    with pytest.raises(JobFailed, match="cannot parse"):
        await daemon.run(db.config([job(table)]), daemon.RunOptions())
    [(status, error)] = await db.q(f"SELECT status, error FROM {db.state_table}")
    assert status == "failed"
    assert 'failed on key [83, "prop1é"]' in error
    assert "ValueError: cannot parse '!broken 250'" in error


async def test_on_error_skip_records_and_counts_skipped_keys(db: TestDb) -> None:
    table = await page_props(db, 500, bad_every=100)
    cfg = db.config([job(table, on_error="skip")])
    db.created.append(db.state_table + "_skipped")
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed"
    skipped = await db.q(f"SELECT row_key, error FROM {db.state_table}_skipped ORDER BY row_key")
    assert len(skipped) == 5  # once per key, though every sweep meets them again
    assert all("cannot parse" in e for _, e in skipped)
    assert sorted(json.loads(k) for k, _ in skipped) == sorted([k // 3, f"prop{k % 3}é"] for k in range(100, 501, 100))
    bad = await db.q(f"SELECT count(*) FROM {table} WHERE pp_value LIKE '!%' AND pp_json IS NULL")
    assert bad == [(5,)]


async def test_two_targets_from_a_tuple(db: TestDb) -> None:
    table = await db.create("two", f"id {db.int_type()} NOT NULL PRIMARY KEY, name VARCHAR(50), up VARCHAR(50), "
                                   f"n {db.int_type()}")
    await db.many(f"INSERT INTO {table} (id, name) VALUES (?, ?)", [(i, f"zoë{i}" if i % 5 else None)
                                                                     for i in range(1, 201)])
    cfg = db.config([{"name": "two", "table": table, "transform": "tests.fixtures.transforms:two_targets",
                      "sources": ["name"], "targets": ["up", "n"]}])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed"
    for name, up, n in await db.q(f"SELECT name, up, n FROM {table}"):
        assert (up, n) == ((None, None) if name is None else (name.upper(), len(name)))


async def test_unknown_transform_is_a_config_error(db: TestDb) -> None:
    table = await page_props(db, 10)
    with pytest.raises(ConfigError, match="cannot import module"):
        await daemon.run(db.config([job(table) | {"transform": "no_such_module:fn"}]), daemon.RunOptions())
    with pytest.raises(ConfigError, match="entry-point group 'backfilld.transforms'"):
        await daemon.run(db.config([job(table) | {"transform": "not_registered"}]), daemon.RunOptions())


PG_DATES = {"date": ("-infinity", "4713-01-01 BC", "0001-01-01", "2024-02-29", "9999-12-31", "10000-01-01",
                     "infinity"),
            "timestamp": ("-infinity", "0044-03-15 12:00:00 BC", "0001-01-01 00:00:00", "9999-12-31 23:59:59.999999",
                          "10000-01-01 00:00:00", "infinity"),
            "time": ("00:00:00", "12:34:56", "24:00:00")}   # str(time) shows a fraction as 6 digits, the server not


@pytest.mark.parametrize("engine_name", ["postgresql"], indirect=True)
@pytest.mark.parametrize("typ", sorted(PG_DATES))
async def test_python_transform_reads_dates_python_cannot_hold(db: TestDb, typ: str) -> None:
    """A source holding infinity, a date BC, past 9999 or 24:00 reaches the transform as itself (not as
    date.min / date.max, not an error), and the write's guard, which binds it back, finds it unchanged."""
    table = await db.create("pgdates", f"id {db.int_type()} NOT NULL PRIMARY KEY, src {typ}, dst text")
    values = (*PG_DATES[typ], None)
    for i, value in enumerate(values, start=1):
        await db.x(f"INSERT INTO {table} (id, src) VALUES (?, CAST(CAST(? AS text) AS {typ}))", i, value)
    cfg = db.config([{"name": "dates", "table": table, "transform": "tests.fixtures.transforms:as_text",
                      "sources": ["src"], "targets": ["dst"], "batch_size": 2}])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed", state.error
    rows = await db.q(f"SELECT src::text, dst FROM {table} ORDER BY id")
    assert [src for src, dst in rows if src != dst] == [], f"(server text, written) {rows}"
    assert state.rows_done == len(values) - 1


async def hiding_table(db: TestDb, typ: str) -> str:
    """Ten rows, src 'abc1'..'abc10' and dst NULL, both of a type that hides a change of case or trailing spaces."""
    table = await db.create("hidden", f"id {db.int_type()} NOT NULL PRIMARY KEY, src {typ}, dst {typ}")
    await db.many(f"INSERT INTO {table} (id, src) VALUES (?, ?)", [(i, f"abc{i}") for i in range(1, 11)])
    return table


def exclaim(table: str, **kw) -> dict:  # noqa: ANN003
    return {"name": "exclaim", "table": table, "transform": "tests.fixtures.transforms:exclaim_async",
            "sources": ["src"], "targets": ["dst"], "batch_size": 4, **kw}


async def while_transformed(db: TestDb, key: int, sql: str, *args: object) -> list[bool]:
    """Set the transform hook to run `sql` (as old application code, on its own connection) once, when the
    transform sees the row with id `key`'s source; returns the list that records that it ran."""
    other = TestDb(db.url, db.suffix)
    await other.open()
    done: list[bool] = []

    async def old_code_writes(row: dict) -> None:
        if not done and row["src"] == f"abc{key}":
            done.append(True)
            await other.x(sql, *args)
            await other.engine.close()

    transforms.BEFORE["hook"] = old_code_writes
    return done


@pytest.mark.parametrize(("engine_name", "typ", "changed"), HIDDEN_CHANGES, indirect=["engine_name"])
async def test_a_source_changed_only_in_case_or_trailing_spaces_is_not_written_stale(db: TestDb, typ: str,
                                                                                     changed: str) -> None:
    """Old code changes a source between the batch's read and its write in a way the column's own comparison
    does not see ('abc5' -> 'ABC5', 'abc5' -> 'abc5  '): the write's guard sees it, writes nothing computed from
    the old value, and a later pass writes the new one; verify finds every row right."""
    async with hiding_type(db, typ) as ddl:
        table = await hiding_table(db, ddl)
        done = await while_transformed(db, 5, f"UPDATE {table} SET src = ? WHERE id = 5", changed)
        try:
            [state] = await daemon.run(db.config([exclaim(table)]), daemon.RunOptions())
        finally:
            transforms.BEFORE.clear()
        assert done and state.status == "completed", state.error
        rows = await db.q(f"SELECT id, src, dst FROM {table} ORDER BY id")
        assert [(i, dst) for i, _, dst in rows if i == 5] == [(5, changed + "!")]
        assert [src + "!" for _, src, _ in rows] == [dst for _, _, dst in rows]
        result = await Verifier(db.engine, db.config([exclaim(table)]), db.config([exclaim(table)]).jobs[0]).run()
        assert result.clean, result.as_dict()


@pytest.mark.parametrize(("engine_name", "typ", "changed"), HIDDEN_CHANGES, indirect=["engine_name"])
async def test_verify_fix_leaves_a_target_changed_only_in_case_or_trailing_spaces(db: TestDb, typ: str,
                                                                                  changed: str) -> None:
    """verify --fix of a transform job rewrites a wrong target only if it still holds what verify read: one the
    application changed meanwhile only in case or trailing spaces ('abc5' -> 'ABC5') is left as the application
    wrote it, and counted as changed meanwhile."""
    async with hiding_type(db, typ) as ddl:
        table = await hiding_table(db, ddl)
        cfg = db.config([exclaim(table)])
        [state] = await daemon.run(cfg, daemon.RunOptions())
        assert state.status == "completed", state.error
        await db.x(f"UPDATE {table} SET dst = ? WHERE id = 5", "abc5")   # wrong: the right value is abc5!
        done = await while_transformed(db, 5, f"UPDATE {table} SET dst = ? WHERE id = 5", changed)
        try:
            result = await Verifier(db.engine, cfg, cfg.jobs[0], fix=True).run()
        finally:
            transforms.BEFORE.clear()
        assert done
        assert (result.wrong, result.fixed, result.not_fixed) == (1, 0, 1), result.as_dict()
        assert await db.q(f"SELECT dst FROM {table} WHERE id = 5") == [(changed,)]


async def test_a_value_too_long_for_its_column_is_never_stored_cut(db: TestDb) -> None:
    """A transform's value longer than its VARCHAR(10) target: PostgreSQL's explicit cast of the batch's array to
    varchar(10)[] cut it to 10 characters and stored that; now the batch fails as storing it would (MariaDB's
    strict mode too). SQLite enforces no length: it stores the whole value. Never a cut one."""
    table = await db.create("too_long", f"id {db.int_type()} PRIMARY KEY, src VARCHAR(20), dst VARCHAR(10)")
    await db.many(f"INSERT INTO {table} (id, src) VALUES (?, ?)", [(1, "short"), (2, "ten chars!")])
    cfg = db.config([exclaim(table)])
    if db.engine_name == "sqlite":
        [state] = await daemon.run(cfg, daemon.RunOptions())
        assert state.status == "completed"
    else:
        with pytest.raises(JobFailed, match="(?i)too long"):
            await daemon.run(cfg, daemon.RunOptions())
    rows = dict(await db.q(f"SELECT src, dst FROM {table}"))
    assert rows["ten chars!"] in (None, "ten chars!!"), rows
