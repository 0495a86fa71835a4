"""Several batches in flight (throttle.workers): each on its own connection, committing in key order.

What a user relies on: every row is written once whatever happens to one worker's connection, the checkpoint
never claims a range whose batch has not committed (nor one before it), and no worker connection outlives
the run. Every other PostgreSQL and MariaDB integration test runs with the default of two workers as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import structlog

from backfilld import daemon
from backfilld.engines.base import decode_key, lease_key
from backfilld.errors import JobFailed
from tests.dbutil import CONCAT, GateAt, TestDb

WRITER_APP = "backfilld-writer"


def job(db: TestDb, table: str) -> dict:
    return {"name": "j", "table": table, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}


async def job_connection(db: TestDb, table: str) -> int:
    """Server id of the job's own connection: the one holding the job's lease."""
    if db.engine_name == "postgresql":
        rows = await db.q("SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                          "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()")
    else:
        rows = await db.q("SELECT IS_USED_LOCK(?)", lease_key(f"{db.parsed.database}/{table}/j"))
    assert len(rows) == 1 and rows[0][0] is not None, rows
    return int(rows[0][0])


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
async def test_a_killed_worker_connection_loses_no_row_and_writes_none_twice(db: TestDb) -> None:
    """A worker's connection is killed while batches are in flight: the batch on it and any after it roll
    back, the job resumes from its checkpoint, and every row is updated exactly once (an audit trigger sees
    every UPDATE that committed)."""
    table = await db.users_with(3000)
    audit = await db.audit_updates(table)
    cfg = db.config([job(db, table)], throttle={"min_batch": 100, "max_batch": 100, "workers": 2})
    killed: list[int] = []
    own: list[int] = []

    async def kill_a_worker() -> None:
        own.append(await job_connection(db, table))
        conns = await db.daemon_connections(WRITER_APP)
        assert len(conns) == 2, f"expected two worker connections, found {conns}"
        await db.kill_connection(conns[-1])
        killed.append(conns[-1])

    async def look_again() -> None:
        own.append(await job_connection(db, table))

    [state] = await daemon.run(cfg, daemon.RunOptions(), gate=GateAt({8: kill_a_worker, 20: look_again}))
    assert killed
    assert own[0] == own[1], "the job's own connection (and its lease) was given up for a worker's failure"
    assert state.status == "completed" and state.rows_done == 3000
    touched = dict(await db.q(f"SELECT id, count(*) FROM {audit} GROUP BY id"))
    assert len(touched) == 3000 and set(touched.values()) == {1}, "a row was updated twice, or not at all"
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT[db.engine_name]}") == [(3000,)]
    assert await db.daemon_connections(WRITER_APP) == [], "a worker connection outlived the run"


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
async def test_a_batch_waits_for_the_one_before_it_to_commit(db: TestDb) -> None:
    """Another transaction holds a row of one batch: the batch after it writes its range meanwhile, on the
    other worker's connection, but commits neither its rows nor the checkpoint before the held batch does.
    (With skip_locked = false, so that the held batch waits for the row: by default it passes over it, see
    test_app_locks.py.)"""
    table = await db.users_with(1000)
    cfg = db.config([job(db, table)], throttle={"min_batch": 100, "max_batch": 100, "workers": 2},
                    database={"url": db.url, "lock_timeout_s": 5, "skip_locked": False})
    holder = TestDb(db.url, db.suffix)
    await holder.open()
    seen: dict[str, object] = {}
    released = asyncio.Event()

    async def hold_row_450() -> None:   # before the 5th batch, (400, 500]: that batch waits for the row
        tx = holder.engine.transaction()
        await tx.__aenter__()
        await holder.x(f"UPDATE {table} SET deleted = 1 WHERE id = 450")

        async def release() -> None:
            await asyncio.sleep(1.0)
            seen["label_550"] = (await db.q(f"SELECT label FROM {table} WHERE id = 550"))[0][0]
            seen["checkpoint"] = (await db.q(f"SELECT last_key FROM {db.state_table} WHERE job = 'j'"))[0][0]
            if db.engine_name == "postgresql":   # the other worker: in its transaction, waiting on ours
                seen["waiting"] = (await db.q("SELECT count(*) FROM pg_stat_activity WHERE application_name = ? "
                                              "AND state = 'idle in transaction'", WRITER_APP))[0][0]
            await tx.__aexit__(None, None, None)
            released.set()

        seen["task"] = asyncio.create_task(release())

    try:
        [state] = await daemon.run(cfg, daemon.RunOptions(), gate=GateAt({5: hold_row_450}))
        await asyncio.wait_for(released.wait(), 10)
    finally:
        await holder.engine.close()
    assert state.status == "completed" and state.rows_done == 1000
    assert seen["label_550"] is None, "the batch after the held one committed first"
    assert decode_key(str(seen["checkpoint"])) == (400,), seen["checkpoint"]
    if db.engine_name == "postgresql":
        assert seen["waiting"] == 1
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT[db.engine_name]}") == [(1000,)]
    assert await db.q(f"SELECT deleted FROM {table} WHERE id = 450") == [(1,)]


@pytest.mark.parametrize("engine_name", ["sqlite"])
async def test_sqlite_writes_one_batch_at_a_time(db: TestDb) -> None:
    """One writer per SQLite database: workers = 4 runs as one, on the job's own connection, and finishes."""
    table = await db.users_with(2000)
    cfg = db.config([job(db, table)], throttle={"min_batch": 100, "max_batch": 100, "workers": 4})
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 2000
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT[db.engine_name]}") == [(2000,)]


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
async def test_the_job_connection_killed_with_batches_in_flight_counts_every_row_once(db: TestDb) -> None:
    """The job's own connection (lookups, lease, operator requests) dies while a worker's batch is in flight:
    that batch still commits, the job reconnects, and the counts in the state table match the rows."""
    table = await db.users_with(3000)
    audit = await db.audit_updates(table)
    cfg = db.config([job(db, table)], throttle={"min_batch": 100, "max_batch": 100, "workers": 2})
    killed: list[int] = []

    async def kill_the_job_connection() -> None:
        conn = await job_connection(db, table)
        await db.kill_connection(conn)
        killed.append(conn)

    [state] = await daemon.run(cfg, daemon.RunOptions(), gate=GateAt({8: kill_the_job_connection}))
    assert killed
    assert state.status == "completed" and state.rows_done == 3000
    saved = await db.q(f"SELECT rows_done FROM {db.state_table} WHERE job = 'j'")
    assert saved == [(3000,)]
    touched = dict(await db.q(f"SELECT id, count(*) FROM {audit} GROUP BY id"))
    assert len(touched) == 3000 and set(touched.values()) == {1}


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
async def test_a_row_locked_for_good_fails_the_job_after_max_retries(db: TestDb) -> None:
    """An application transaction holds a row of the table for longer than the job will wait: after a lock
    timeout with batches overlapping the job goes on with one worker, and max_retries failures in a row stop
    it as failed, with everything before the locked batch written and checkpointed. (With skip_locked = false:
    by default a batch passes over the row instead, see test_app_locks.py.)"""
    table = await db.users_with(1000)
    cfg = db.config([{**job(db, table), "max_retries": 2}],
                    throttle={"min_batch": 100, "max_batch": 100, "workers": 2},
                    database={"url": db.url, "lock_timeout_s": 0.2, "skip_locked": False})
    holder = TestDb(db.url, db.suffix)
    await holder.open()
    try:
        async with holder.engine.transaction():
            await holder.x(f"UPDATE {table} SET deleted = 1 WHERE id = 450")
            with structlog.testing.capture_logs() as logs, pytest.raises(JobFailed, match="after 3 attempt"):
                await asyncio.wait_for(daemon.run(cfg, daemon.RunOptions()), 60)
    finally:
        await holder.engine.close()
    assert [e["workers"] for e in logs if e["event"] == "workers_limited"] == [1]
    [(status, last_key)] = await db.q(f"SELECT status, last_key FROM {db.state_table} WHERE job = 'j'")
    assert status == "failed" and decode_key(last_key) == (400,)
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL") == [(400,)]


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
async def test_workers_set_live_by_the_operator(db: TestDb) -> None:
    """`backfilld set ... workers=N` on a running job: down to one, the workers' connections close and the
    job writes on its own; back up to two, they open again. Every row is written once throughout."""
    from backfilld import control

    table = await db.users_with(3000)
    audit = await db.audit_updates(table)
    cfg = db.config([job(db, table)], throttle={"min_batch": 100, "max_batch": 100, "workers": 2})
    seen: dict[str, list[int]] = {}

    def set_workers(n: int, label: str) -> Callable[[], Awaitable[None]]:
        async def action() -> None:
            seen[label] = await db.daemon_connections(WRITER_APP)
            await control.request(cfg, "j", settings={"workers": n})
            await asyncio.sleep(0.6)   # the job reads requests at most every 0.5 s
        return action

    async def look() -> None:
        seen["after one"] = await db.daemon_connections(WRITER_APP)

    async def look_again() -> None:
        seen["after two"] = await db.daemon_connections(WRITER_APP)

    gate = GateAt({4: set_workers(1, "two"), 8: look, 12: set_workers(2, "one"), 16: look_again})
    with structlog.testing.capture_logs() as logs:
        [state] = await daemon.run(cfg, daemon.RunOptions(), gate=gate)
    assert state.status == "completed" and state.rows_done == 3000
    assert len(seen["two"]) == 2 and seen["after one"] == [] and seen["one"] == []
    assert len(seen["after two"]) == 2
    assert [e["workers"] for e in logs if e["event"] == "settings_changed"] == [1, 2]
    touched = dict(await db.q(f"SELECT id, count(*) FROM {audit} GROUP BY id"))
    assert len(touched) == 3000 and set(touched.values()) == {1}

