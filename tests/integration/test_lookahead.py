"""The lookahead: the next batch's range read on a second connection while the current batch is written.

A job runs with it when it writes one batch at a time (throttle.workers = 1, and always on SQLite, whose test
databases are in WAL mode: every SQLite integration test runs with it); with more workers the job's own
connection looks up ranges while the workers write. These tests cover what is particular to it: a lost
lookahead connection costs nothing, the connection does not outlive the run, a SQLite database in
rollback-journal mode runs without one, and a lookahead is only used for the position and batch size it
was read for.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from backfilld import daemon
from backfilld.engines.statements import TableSpec
from backfilld.lookahead import Lookahead
from tests.dbutil import CONCAT, GateAt, TestDb

LOOKAHEAD_APP = "backfilld-lookahead"


def job(db: TestDb, table: str) -> dict:
    return {"name": "j", "table": table, "batch_size": 100, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
async def test_a_killed_lookahead_connection_costs_nothing(db: TestDb) -> None:
    """Its connection killed mid-run, the job still fills every row once, and the lookahead comes back."""
    table = await db.users_with(3000)
    cfg = db.config([job(db, table)], throttle={"min_batch": 100, "max_batch": 100, "workers": 1})

    killed: list[int] = []
    seen_after: list[int] = []

    async def kill_lookahead() -> None:
        conns = await db.daemon_connections(LOOKAHEAD_APP)
        assert len(conns) == 1, f"expected one lookahead connection, found {conns}"
        await db.kill_connection(conns[0])
        killed.extend(conns)

    async def look_again() -> None:
        await asyncio.sleep(0.05)  # a lookahead reconnects in the background
        seen_after.extend(await db.daemon_connections(LOOKAHEAD_APP))

    gate = GateAt({5: kill_lookahead, 15: look_again})
    [state] = await daemon.run(cfg, daemon.RunOptions(), gate=gate)
    assert state.status == "completed" and state.rows_done == 3000
    assert killed and seen_after and seen_after[0] not in killed
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NULL OR label <> {CONCAT[db.engine_name]}") \
        == [(0,)]
    assert await db.daemon_connections(LOOKAHEAD_APP) == [], "the lookahead connection outlived the run"


@pytest.mark.parametrize("engine_name", ["sqlite"])
async def test_sqlite_in_rollback_journal_mode_runs_without_lookahead(db: TestDb, tmp_path) -> None:
    """A reader would hold up the writer's commit outside WAL mode: the job reads its ranges itself."""
    path = tmp_path / "journal.sqlite"
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=DELETE")
    con.close()
    other = TestDb(f"sqlite:///{path}", db.suffix)
    await other.open()
    try:
        assert not await other.engine.concurrent_reads()
        table = await other.users_with(1000)
        [state] = await daemon.run(other.config([job(other, table)]), daemon.RunOptions())
        assert state.status == "completed" and state.rows_done == 1000
        assert await other.q(f"SELECT count(*) FROM {table} WHERE label = name || '#' || id") == [(1000,)]
        assert (await other.q("PRAGMA journal_mode"))[0][0].lower() == "delete"
    finally:
        await other.cleanup()


async def test_a_lookahead_is_used_only_where_it_was_read(db: TestDb) -> None:
    """Same position and no more keys than the batch wants now: used. Otherwise the job looks itself."""
    assert await db.engine.concurrent_reads()
    table = await db.users_with(500)
    plan = db.engine.plan(TableSpec(table, ("id",), {"label": CONCAT[db.engine_name]}))
    ahead = Lookahead(db.engine, "j")
    try:
        ahead.start(plan, (10,), 100)
        assert await ahead.take(plan, (10,), 200) == ((110,), 100)   # the batch may now be larger: still good
        ahead.start(plan, (10,), 100)
        assert await ahead.take(plan, (10,), 50) is None               # the batch must be smaller: look again
        ahead.start(plan, (10,), 100)
        assert await ahead.take(plan, (20,), 100) is None              # another position (a retry reloaded)
        ahead.start(plan, (480,), 100)
        assert await ahead.take(plan, (480,), 100) == ((500,), 20)     # the last, partial batch
        ahead.start(plan, (500,), 100)
        assert await ahead.take(plan, (500,), 100) is None             # end of table: the job makes sure itself
        assert await db.engine.next_range(plan, (500,), 100) is None
    finally:
        await ahead.close()
