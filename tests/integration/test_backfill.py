"""The core scenarios, unchanged on SQLite, PostgreSQL and MariaDB: every row ends right, nothing else moves."""

from __future__ import annotations

import asyncio
import random

import pytest
import structlog

from backfilld import daemon
from backfilld.errors import JobFailed, SchemaError, SpecChangedError
from tests.dbutil import CONCAT, GateAt, TestDb

NAMES = ["Ada", "Zoë", "José", "Ивана", "李小龍", "محمد", "Ngọc Ánh", "🦄 emoji", "O'Brien", "50% off", "a\\b",
         "tab\there", "%s literal", None]


def expected_label(name: str | None, id_: int) -> str | None:
    return None if name is None else f"{name}#{id_}"


async def fill_users(db: TestDb, table: str, n: int, *, seed: int = 1, prefill_every: int = 0) -> dict[int, str | None]:
    """Insert n users; return id -> label the job must leave (None where the job must fill or skip)."""
    rnd = random.Random(seed)
    rows = []
    kept: dict[int, str | None] = {}
    for i in range(1, n + 1):
        name = rnd.choice(NAMES)
        label = None
        if prefill_every and i % prefill_every == 0:
            label = f"new-code-{i}-ü"
            kept[i] = label
        rows.append((i, name, 1 if i % 17 == 0 else 0, label))
    await db.many(f"INSERT INTO {table} (id, name, deleted, label) VALUES (?, ?, ?, ?)", rows)
    return kept


def job(table: str, engine: str, **kw) -> dict:  # noqa: ANN003
    return {"name": kw.pop("name", "label_job"), "table": table, "set": {"label": {engine: CONCAT[engine]}}, **kw}


async def test_integer_key_filter_nulls_unicode_prefilled(db: TestDb) -> None:
    table = await db.create_users()
    kept = await fill_users(db, table, 3000, prefill_every=50)
    source_before = await db.q(f"SELECT id, name, deleted FROM {table} ORDER BY id")
    cfg = db.config([job(table, db.engine_name, where="deleted = 0", batch_size=100)])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed"

    rows = await db.q(f"SELECT id, name, deleted, label FROM {table} ORDER BY id")
    assert len(rows) == 3000
    filled = 0
    for id_, name, deleted, label in rows:
        if id_ in kept:
            assert label == kept[id_], f"value written by new code overwritten at id {id_}"
        elif deleted:
            assert label is None, f"filtered-out row {id_} was written"
        else:
            assert label == expected_label(name, id_), f"row {id_}: {label!r}"
            filled += label is not None
    assert state.rows_done == filled
    # the job wrote only the target column
    assert await db.q(f"SELECT id, name, deleted FROM {table} ORDER BY id") == source_before


async def test_composite_text_key(db: TestDb) -> None:
    table = await db.create_users(composite=True)
    wikis = ["enwiki", "dewiki", "Ωwiki", "zh_wiki", "wiki 2", "ÄÖwiki"]
    rows = [(w, i, f"user {i} of {w}", 0, None) for w in wikis for i in range(1, 301)]
    await db.many(f"INSERT INTO {table} (wiki, id, name, deleted, label) VALUES (?, ?, ?, ?, ?)", rows)
    cfg = db.config([job(table, db.engine_name, key=["wiki", "id"], batch_size=37)])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed"
    assert state.rows_done == len(rows)
    got = await db.q(f"SELECT wiki, id, name, label FROM {table}")
    assert len(got) == len(rows)
    assert all(label == f"{name}#{id_}" for _, id_, name, label in got)


async def test_rows_inserted_behind_the_cursor_are_caught(db: TestDb) -> None:
    """A composite text key does not grow: rows land behind the cursor and a later pass must fill them."""
    table = await db.create_users(composite=True)
    rows = [(f"wiki{w:02d}", i, f"n{i}", 0, None) for w in range(0, 40, 2) for i in range(1, 101)]
    await db.many(f"INSERT INTO {table} (wiki, id, name, deleted, label) VALUES (?, ?, ?, ?, ?)", rows)
    cfg = db.config([job(table, db.engine_name, key=["wiki", "id"], batch_size=50)],
                    throttle={"min_batch": 50, "max_batch": 50})

    writer = TestDb(db.url, db.suffix)
    await writer.open()
    inserted = []

    async def insert_mid_pass() -> None:
        """Before the 10th batch, old application code inserts unfilled rows."""
        for w in range(1, 40, 2):  # odd wikis sort between the even ones: many land behind the cursor
            for i in range(1, 4):
                await writer.x(f"INSERT INTO {table} (wiki, id, name, deleted) VALUES (?, ?, ?, 0)",
                               f"wiki{w:02d}", i, f"late{i}")
                inserted.append((f"wiki{w:02d}", i))

    gate = GateAt({10: insert_mid_pass})
    try:
        results = await daemon.run(cfg, daemon.RunOptions(), gate=gate)
    finally:
        await writer.engine.close()
    [state] = results
    assert state.status == "completed"
    assert len(inserted) == 60
    missing = await db.q(f"SELECT wiki, id FROM {table} WHERE label IS NULL")
    assert missing == []
    got = await db.q(f"SELECT count(*) FROM {table}")
    assert got[0][0] == len(rows) + 60
    assert state.rows_done == len(rows) + 60
    assert state.pass_no >= 3  # the fill pass, a sweep that found the late rows, a sweep that found none


async def test_a_row_inserted_behind_the_cursor_by_another_connection_is_filled_by_the_sweep(db: TestDb) -> None:
    """Old code inserts a row with a key the fill pass has passed: the sweep pass fills it (on SQLite too,
    where a fill pass that no other connection wrote during ends the job without a sweep)."""
    table = await db.users_with(1000)
    await db.x(f"DELETE FROM {table} WHERE id = 5")
    writer = TestDb(db.url, db.suffix)
    await writer.open()

    async def insert_behind() -> None:
        await writer.x(f"INSERT INTO {table} (id, name, deleted) VALUES (5, 'late', 0)")

    cfg = db.config([job(table, db.engine_name)], throttle={"min_batch": 100, "max_batch": 100})
    try:
        with structlog.testing.capture_logs() as logs:
            [state] = await daemon.run(cfg, daemon.RunOptions(), gate=GateAt({4: insert_behind}))
    finally:
        await writer.engine.close()
    assert state.status == "completed" and state.rows_done == 1000
    assert await db.q(f"SELECT label FROM {table} WHERE id = 5") == [("late#5",)]
    # the fill pass, a sweep that found the late row, and a sweep that found none, which SQLite and PostgreSQL
    # may skip (no other session wrote during the pass before it; on PostgreSQL, none in the whole cluster)
    skipped = [e["pass_no"] for e in logs if e["event"] == "sweep_skipped"]
    assert (skipped, state.pass_no) in ((([2], 3), ([], 4)) if db.engine_name != "mysql" else (([], 4),))


async def test_changed_spec_refuses_to_resume_unless_restart(db: TestDb) -> None:
    table = await db.create_users()
    await fill_users(db, table, 500)
    stop = asyncio.Event()
    cfg = db.config([job(table, db.engine_name, batch_size=100)])

    def stop_after_first(_job, _r) -> None:  # noqa: ANN001
        stop.set()

    [state] = await daemon.run(cfg, daemon.RunOptions(), stop=stop, on_batch=stop_after_first)
    assert state.status == "running" and state.rows_done > 0

    changed = db.config([job(table, db.engine_name, batch_size=100, where="deleted = 0")])
    with pytest.raises(SpecChangedError, match="--restart"):
        await daemon.run(changed, daemon.RunOptions())
    # tuning is not part of the spec: a new batch size resumes
    retuned = db.config([job(table, db.engine_name, batch_size=7)])
    [state] = await daemon.run(retuned, daemon.RunOptions())
    assert state.status == "completed"
    [state] = await daemon.run(changed, daemon.RunOptions(restart=True))
    assert state.status == "completed" and state.rows_done == 0  # every target already filled


@pytest.mark.parametrize("problem", ["missing_table", "missing_target", "not_null_target", "bad_expression",
                                     "non_unique_key"])
async def test_preflight_errors_write_nothing(db: TestDb, problem: str) -> None:
    i = db.int_type()
    table = await db.create("pre", f"id {i} NOT NULL PRIMARY KEY, grp {i} NOT NULL, name VARCHAR(50), "
                                   "label VARCHAR(80), strict_label VARCHAR(80) NOT NULL DEFAULT 'x'")
    await db.many(f"INSERT INTO {table} (id, grp, name) VALUES (?, ?, ?)", [(k, k % 3, f"n{k}") for k in range(1, 21)])
    spec: dict = {"name": "pre", "table": table, "set": {"label": "name"}}
    if problem == "missing_table":
        spec["table"] = db.name("nope")
    elif problem == "missing_target":
        spec["set"] = {"nope": "name"}
    elif problem == "not_null_target":
        spec["set"] = {"strict_label": "name"}
    elif problem == "bad_expression":
        spec["set"] = {"label": "no_such_column || name"}
    elif problem == "non_unique_key":
        spec["key"] = ["grp"]
    cfg = db.config([spec])
    with pytest.raises(SchemaError) as err:
        await daemon.run(cfg, daemon.RunOptions())
    message = str(err.value)
    assert {"missing_table": "does not exist", "missing_target": "does not exist", "not_null_target": "NOT NULL",
            "bad_expression": "fails", "non_unique_key": "not the primary key"}[problem] in message
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL") == [(0,)]
    # nothing written: not even the state table
    with pytest.raises(Exception):  # noqa: B017 - any engine's "no such table"
        await db.q(f"SELECT count(*) FROM {db.state_table}")


async def test_plan_names_every_problem_of_every_job(db: TestDb) -> None:
    """`plan` goes on past the first problem: every job is checked, every target of a job, and one error
    lists them all (bad input: nothing written)."""
    i = db.int_type()
    table = await db.create("pre", f"id {i} NOT NULL PRIMARY KEY, name VARCHAR(50), label VARCHAR(80), "
                                   "strict_label VARCHAR(80) NOT NULL DEFAULT 'x'")
    await db.many(f"INSERT INTO {table} (id, name) VALUES (?, ?)", [(k, f"n{k}") for k in range(1, 21)])
    cfg = db.config([{"name": "two_targets", "table": table, "set": {"nope": "name", "strict_label": "name"}},
                     {"name": "fine", "table": table, "set": {"label": "name"}},
                     {"name": "no_table", "table": db.name("nope"), "set": {"label": "name"}}])
    with pytest.raises(SchemaError) as err:
        await daemon.plan(cfg)
    lines = str(err.value).splitlines()
    assert lines[0] == "3 problems:"
    assert "job 'two_targets': target column 'nope' does not exist" in lines[1]
    assert "job 'two_targets': target column 'strict_label' is NOT NULL" in lines[2]
    assert "does not exist" in lines[3] and "nope" in lines[3]
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL") == [(0,)]


FAILS_MID_TABLE = {
    "postgresql": "CASE WHEN id > 300 THEN (SELECT 1 UNION SELECT 2)::text ELSE name END",
    "mysql": "CASE WHEN id > 300 THEN (SELECT 1 UNION SELECT 2) ELSE name END",
    "sqlite": "CASE WHEN id > 300 THEN json_extract('not json', '$') ELSE name END",
}


async def test_runtime_error_stops_job_and_is_recorded(db: TestDb) -> None:
    table = await db.create_users()
    await fill_users(db, table, 600)
    cfg = db.config([{"name": "breaks", "table": table, "batch_size": 100,
                      "set": {"label": {db.engine_name: FAILS_MID_TABLE[db.engine_name]}}}],
                    throttle={"min_batch": 100, "max_batch": 100})
    with pytest.raises(JobFailed, match="breaks"):
        await daemon.run(cfg, daemon.RunOptions())
    [(status, error, last_key)] = await db.q(f"SELECT status, error, last_key FROM {db.state_table}")
    assert status == "failed"
    assert error
    assert last_key == "[300]"  # the batches before the bad row committed, with their checkpoint
    assert (await db.q(f"SELECT count(*) FROM {table} WHERE id > 300 AND label IS NOT NULL")) == [(0,)]


async def test_lock_wait_is_retried_and_the_job_finishes(db: TestDb) -> None:
    """Another transaction holds a row the batch needs longer than the lock timeout: retry, then succeed."""
    table = await db.create_users()
    await fill_users(db, table, 400)
    cfg = db.config([job(table, db.engine_name, batch_size=1000)], database={"url": db.url, "lock_timeout_s": 0.2})
    holder = TestDb(db.url, db.suffix)
    await holder.open()
    try:
        async with holder.engine.transaction():
            await holder.x(f"UPDATE {table} SET deleted = deleted WHERE id = 10")
            run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions()))
            await asyncio.sleep(1.5)
            assert not run.done()
        [state] = await asyncio.wait_for(run, 60)
    finally:
        await holder.engine.close()
    assert state.status == "completed"
    assert (await db.q(f"SELECT count(*) FROM {table} WHERE label IS NULL AND name IS NOT NULL")) == [(0,)]


async def test_rows_whose_expression_is_null_are_never_written(db: TestDb) -> None:
    """Batches compute the expression once until a row shows it can be NULL; that batch is rolled back and
    redone guarded. No row whose expression is NULL is ever updated (the audit trigger sees every UPDATE that
    committed, a no-op one too), every other row exactly once."""
    table = await db.create_users()
    null_from = 2_450
    rows = [(i, None if i >= null_from and i % 3 == 0 else f"n{i}", 0) for i in range(1, 3001)]
    await db.many(f"INSERT INTO {table} (id, name, deleted) VALUES (?, ?, ?)", rows)
    audit = await db.audit_updates(table)
    cfg = db.config([job(table, db.engine_name)], throttle={"min_batch": 100, "max_batch": 100})
    with structlog.testing.capture_logs() as logs:
        [state] = await daemon.run(cfg, daemon.RunOptions())
    valued = [i for i, name, _ in rows if name is not None]
    assert state.status == "completed" and state.rows_done == len(valued)
    off = [e for e in logs if e["event"] == "single_evaluation_off"]
    # the batch (2400, 2500] holds the first NULL; with two workers (2500, 2600], which holds NULLs too, is
    # written at the same time and may notice first; either way it is said once
    assert len(off) == 1 and off[0]["last_key"] in ([2400], [2500]), off
    touched = dict(await db.q(f"SELECT id, count(*) FROM {audit} GROUP BY id"))
    assert set(touched) == set(valued), "a row whose expression is NULL was updated"
    assert set(touched.values()) == {1}
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NULL AND name IS NOT NULL") == [(0,)]


async def test_an_expression_never_null_stays_single_evaluation_each_row_once(db: TestDb) -> None:
    table = await db.users_with(1000)
    audit = await db.audit_updates(table)
    cfg = db.config([job(table, db.engine_name)], throttle={"min_batch": 100, "max_batch": 100})
    with structlog.testing.capture_logs() as logs:
        [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 1000
    assert not [e for e in logs if e["event"] == "single_evaluation_off"]
    assert await db.q(f"SELECT count(*), count(DISTINCT id) FROM {audit}") == [(1000, 1000)]
