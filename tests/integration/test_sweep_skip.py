"""The sweep pass after a fill pass, and when an engine can tell it would find nothing."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from backfilld import daemon
from tests.dbutil import CONCAT, GateAt, TestDb


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
async def test_a_fill_pass_no_other_connection_wrote_during_ends_the_job(db: TestDb) -> None:
    """SQLite (PRAGMA data_version) and PostgreSQL (transaction ids given out) tell whether another session
    wrote since the fill pass began: when none did, no row can need a value any more and the sweep pass is
    skipped. A write by another session, even to another table, means the sweep runs."""
    table = await db.users_with(3000)
    other = await db.create("other", "id INTEGER PRIMARY KEY")
    expr = CONCAT[db.engine_name]
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {db.engine_name: expr}}}],
                    throttle={"min_batch": 500, "max_batch": 500})
    with structlog.testing.capture_logs() as logs:
        [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 3000
    assert state.pass_no == 2   # one pass: the fill
    assert [e["pass_no"] for e in logs if e["event"] == "sweep_skipped"] == [1]
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {expr}") == [(3000,)]

    await db.x(f"UPDATE {table} SET label = NULL")
    writer = TestDb(db.url, db.suffix)
    await writer.open()

    async def unrelated_write() -> None:
        await writer.x(f"INSERT INTO {other} (id) VALUES (1)")

    try:
        with structlog.testing.capture_logs() as logs:
            [state] = await daemon.run(cfg, daemon.RunOptions(restart=True), gate=GateAt({3: unrelated_write}))
    finally:
        await writer.engine.close()
    assert state.status == "completed" and state.rows_done == 3000
    assert not [e for e in logs if e["event"] == "sweep_skipped"]
    assert state.pass_no == 3   # the fill pass and a sweep that found nothing


@pytest.mark.parametrize("engine_name", ["postgresql"])
async def test_a_transaction_open_at_the_pass_start_means_a_sweep(db: TestDb) -> None:
    """Old code's transaction, open when the fill pass starts, inserts a row behind the cursor and commits
    mid-pass: its transaction id was given out before the pass began, so only a sweep can be trusted."""
    table = await db.users_with(3000)
    await db.x(f"DELETE FROM {table} WHERE id = 5")
    writer = TestDb(db.url, db.suffix)
    await writer.open()
    inserted, commit = asyncio.Event(), asyncio.Event()

    async def old_code() -> None:
        async with writer.engine.transaction():
            await writer.x(f"INSERT INTO {table} (id, name, deleted) VALUES (5, 'late', 0)")
            inserted.set()
            await commit.wait()

    async def let_it_commit() -> None:
        commit.set()
        await task

    task = asyncio.create_task(old_code())
    await inserted.wait()
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {"postgresql": CONCAT["postgresql"]}}}],
                    throttle={"min_batch": 500, "max_batch": 500})
    try:
        with structlog.testing.capture_logs() as logs:
            [state] = await daemon.run(cfg, daemon.RunOptions(), gate=GateAt({3: let_it_commit}))
    finally:
        commit.set()
        await asyncio.gather(task, return_exceptions=True)
        await writer.engine.close()
    assert state.status == "completed" and state.rows_done == 3000
    assert await db.q(f"SELECT label FROM {table} WHERE id = 5") == [("late#5",)]
    assert [e["pass_no"] for e in logs if e["event"] == "sweep_skipped"] in ([2], [])   # never the fill pass


@pytest.mark.parametrize("engine_name", ["mysql"])
async def test_mariadb_always_sweeps_after_a_fill_pass(db: TestDb) -> None:
    table = await db.users_with(1000)
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {"mysql": CONCAT["mysql"]}}}])
    with structlog.testing.capture_logs() as logs:
        [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 1000
    assert not [e for e in logs if e["event"] == "sweep_skipped"]
    assert state.pass_no == 3   # the fill pass and a sweep that found nothing
