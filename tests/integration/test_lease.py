"""One daemon per job: a second daemon on a running job refuses and writes nothing; a reconnect keeps the lease."""

from __future__ import annotations

import asyncio

import pytest

from backfilld import daemon
from backfilld.errors import EngineError, JobFailed
from tests.dbutil import CONCAT, GateAt, TestDb

HOLDER = {"postgresql": "PostgreSQL backend pid", "mysql": "MySQL connection id", "sqlite": "process"}


def job(db: TestDb, table: str) -> dict:
    return {"name": "j", "table": table, "batch_size": 100, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}


async def state_row(db: TestDb) -> tuple:
    try:
        rows = await db.q(f"SELECT status, rows_done, error FROM {db.state_table} WHERE job = 'j'")
    except EngineError:  # no state table yet
        return ()
    return rows[0] if rows else ()


async def test_a_second_daemon_on_a_running_job_refuses_and_writes_nothing(db: TestDb) -> None:
    table = await db.users_with(2000)
    cfg = db.config([job(db, table)], throttle={"max_rows_per_s": 300, "min_batch": 100, "max_batch": 100})
    stop = asyncio.Event()
    first = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(), stop=stop))
    try:
        for _ in range(200):
            if (await state_row(db) or ("", 0))[1] > 0:
                break
            await asyncio.sleep(0.05)
        before = await state_row(db)
        assert before[0] == "running" and before[1] > 0

        with pytest.raises(JobFailed) as failed:   # after trying for a few seconds (LEASE_START_WAIT_S)
            await daemon.run(cfg, daemon.RunOptions())
        message = str(failed.value)
        assert "being run by another backfilld" in message and HOLDER[db.engine_name] in message
        after = await state_row(db)
        assert after[0] == "running" and after[2] is None, "the refused daemon touched the job's state"
        assert after[1] >= before[1]
    finally:
        stop.set()
        [stopped] = await first
    assert stopped.status == "running"  # stopped mid-run, resumable

    [done] = await daemon.run(cfg, daemon.RunOptions())   # the lease went with the first daemon's connection
    assert done.status == "completed" and done.rows_done == 2000
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT[db.engine_name]}") == [(2000,)]


@pytest.mark.parametrize("engine_name", ["postgresql"])
async def test_the_lease_is_taken_again_after_a_reconnect(db: TestDb) -> None:
    """The job's connection killed mid-run: it reconnects, takes its lease again and finishes."""
    table = await db.users_with(3000)
    cfg = db.config([job(db, table)], throttle={"min_batch": 100, "max_batch": 100})

    killed: list[tuple] = []

    async def kill_job_connection() -> None:
        killed.extend(await db.q("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = "
                                 "'backfilld' AND pid <> pg_backend_pid() AND datname = current_database()"))

    [state] = await daemon.run(cfg, daemon.RunOptions(), gate=GateAt({5: kill_job_connection}))
    assert killed == [(True,)]
    assert state.status == "completed" and state.rows_done == 3000
    holders = await db.q("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert holders == [(0,)], "the lease outlived the daemon"
