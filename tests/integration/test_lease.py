"""One daemon per job: a second daemon on a running job refuses and writes nothing; a reconnect keeps the lease."""

from __future__ import annotations

import asyncio
import os

import pytest

from backfilld import daemon
from backfilld.errors import EngineError, JobFailed, LeaseHeld, SchemaError
from backfilld.metrics import Metrics
from tests.dbutil import CONCAT, GateAt, TestDb, application_session

HOLDER = {"postgresql": "PostgreSQL backend pid", "mysql": "MySQL connection id", "sqlite": "process"}


def job(db: TestDb, table: str) -> dict:
    return {"name": "j", "table": table, "batch_size": 100, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}


def broken_job(db: TestDb, table: str) -> dict:
    """job() with a target column the table does not have: its preflight fails."""
    return {**job(db, table), "set": {"no_such_column": {db.engine_name: CONCAT[db.engine_name]}}}


async def state_row(db: TestDb) -> tuple:
    try:
        rows = await db.q(f"SELECT status, rows_done, error FROM {db.state_table} WHERE job = 'j'")
    except EngineError:  # no state table yet
        return ()
    return rows[0] if rows else ()


async def started(db: TestDb, cfg: object, stop: asyncio.Event) -> asyncio.Task:
    """A daemon running the job in the background, once it has committed its first batch."""
    first = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(), stop=stop))
    for _ in range(200):
        if (await state_row(db) or ("", 0))[1] > 0:
            break
        await asyncio.sleep(0.05)
    return first


async def test_a_second_daemon_on_a_running_job_refuses_and_writes_nothing(db: TestDb) -> None:
    table = await db.users_with(2000)
    cfg = db.config([job(db, table)], throttle={"max_rows_per_s": 300, "min_batch": 100, "max_batch": 100})
    stop = asyncio.Event()
    first = await started(db, cfg, stop)
    try:
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


async def test_a_stop_during_the_lease_wait_ends_the_daemon_cleanly(db: TestDb) -> None:
    """SIGTERM while a second daemon waits for the lease: it returns (exit 0) at once, writes nothing, and the
    running job's checkpoint is as the first daemon keeps it."""
    table = await db.users_with(2000)
    cfg = db.config([job(db, table)], throttle={"max_rows_per_s": 300, "min_batch": 100, "max_batch": 100})
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    first = await started(db, cfg, stop_first)
    try:
        second = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(), stop=stop_second))
        await asyncio.sleep(1.0)   # preflight done, waiting for the lease (LEASE_START_WAIT_S is 3 s)
        assert not second.done()
        stop_second.set()
        t0 = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(second, 5) == []   # no JobFailed: a stop is not a failure
        assert asyncio.get_running_loop().time() - t0 < 1.0
        after = await state_row(db)
        assert after[0] == "running" and after[2] is None, "the stopped daemon touched the job's state"
    finally:
        stop_first.set()
        [stopped] = await first
    assert stopped.status == "running"


async def test_verify_fix_refuses_to_write_beside_a_running_job(db: TestDb) -> None:
    """`verify --fix` writes the targets: it takes the job's lease, so it cannot race the running job; plain
    `verify` only reads and runs beside it."""
    table = await db.users_with(2000)
    cfg = db.config([job(db, table)], throttle={"max_rows_per_s": 300, "min_batch": 100, "max_batch": 100})
    stop = asyncio.Event()
    first = await started(db, cfg, stop)
    try:
        with pytest.raises(LeaseHeld, match="being run by another backfilld"):
            await daemon.verify(cfg, None, fix=True)
        [result] = await daemon.verify(cfg, None, fix=False)
        assert result.missing > 0
    finally:
        stop.set()
        await first
    [fixed] = await daemon.verify(cfg, None, fix=True)
    assert fixed.fixed > 0
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT[db.engine_name]}") == [(2000,)]


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
async def test_a_lock_held_at_start_is_waited_out_by_the_preflight(db: TestDb) -> None:
    """The table locked by another session when the daemon starts (a migration's DDL, LOCK TABLES): the
    preflight's reads give up after lock_timeout_s and are retried with backoff, then the job runs."""
    table = await db.users_with(500)
    cfg = db.config([job(db, table)])
    other = await application_session(db)
    tx = other.engine.transaction()
    await tx.__aenter__()
    if db.engine_name == "postgresql":
        await other.x(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    else:
        await other.x(f"LOCK TABLES {table} WRITE")
    m = Metrics()
    run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(), metrics=m))
    try:
        await asyncio.sleep(2.0)
        assert not run.done(), "the preflight did not wait for the lock"
    finally:
        if db.engine_name == "mysql":
            await other.x("UNLOCK TABLES")
        await tx.__aexit__(None, None, None)
        await other.engine.close()
    [state] = await asyncio.wait_for(run, 60)
    assert state.status == "completed" and state.rows_done == 500
    assert m.retries.labels("j", "lock_timeout")._value.get() >= 1


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


async def test_a_second_config_with_another_state_table_still_waits_for_the_job(db: TestDb) -> None:
    """The lease is the job's on its table, not its state table's: a config that differs only in [state] table
    (a copy someone edited) refuses the running job too, and writes nothing."""
    table = await db.users_with(2000)
    cfg = db.config([job(db, table)], throttle={"max_rows_per_s": 300, "min_batch": 100, "max_batch": 100})
    other_state = db.state_table + "_b"
    db.created.append(other_state)
    other = db.config([job(db, table)], state={"table": other_state})
    stop = asyncio.Event()
    first = await started(db, cfg, stop)
    try:
        with pytest.raises(JobFailed) as failed:
            await daemon.run(other, daemon.RunOptions())
        assert "being run by another backfilld" in str(failed.value)
    finally:
        stop.set()
        await first
    with pytest.raises(EngineError):   # the refused daemon did not even create its state table
        await db.q(f"SELECT count(*) FROM {other_state}")


@pytest.mark.parametrize("engine_name", ["sqlite"])
async def test_a_symlink_planted_as_the_sqlite_lease_file_is_refused_not_followed(db: TestDb, tmp_path) -> None:  # noqa: ANN001
    """The lease file beside the database is opened without following links: one pointing at another file
    made backfilld truncate and overwrite that file."""
    from backfilld.engines.base import lease_key

    table = await db.users_with(50)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me", encoding="utf-8")
    lock = f"{db.parsed.database}-{lease_key(f'{table}/j').replace(':', '-')}.lock"
    os.symlink(victim, lock)
    with pytest.raises(JobFailed) as failed:
        await daemon.run(db.config([job(db, table)]), daemon.RunOptions())
    assert "is a symbolic link" in str(failed.value) and "remove the link" in str(failed.value)
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL") == [(0,)]


async def test_a_farm_member_that_fails_its_preflight_records_the_failure_and_starts_afresh_once_mended(
        db: TestDb) -> None:
    table = await db.users_with(300)
    broken = broken_job(db, table)
    bad_cfg = db.config([broken])
    # a single run (not a farm member) writes nothing on bad input, not even its state table
    with pytest.raises(SchemaError):
        await daemon.run(bad_cfg, daemon.RunOptions())
    assert await state_row(db) == ()
    with pytest.raises(SchemaError) as failed:
        await daemon.Daemon(bad_cfg, daemon.RunOptions(), record_unstarted=True).run()
    assert "no_such_column" in str(failed.value)
    status, rows_done, error = await state_row(db)
    assert status == "failed" and rows_done == 0 and "no_such_column" in error

    # mended (the job as it should be): the record is no checkpoint, so the job starts from the first key
    [done] = await daemon.run(db.config([job(db, table)]), daemon.RunOptions())
    assert done.status == "completed" and done.rows_done == 300 and done.error is None

    # broken again later: a row with a checkpoint is never overwritten by such a record
    with pytest.raises(SchemaError):
        await daemon.Daemon(bad_cfg, daemon.RunOptions(), record_unstarted=True).run()
    assert (await state_row(db))[:2] == ("completed", 300)


async def test_a_failed_preflight_leaves_the_row_of_a_run_that_holds_the_lease_alone(db: TestDb) -> None:
    """Two farm processes on one database (overlapping shards): the one that failed its preflight does not write
    over the row of the one running the job, even while that row has no checkpoint yet."""
    table = await db.users_with(2000)
    cfg = db.config([job(db, table)], throttle={"max_rows_per_s": 300, "min_batch": 100, "max_batch": 100})
    stop = asyncio.Event()
    first = await started(db, cfg, stop)
    try:
        await db.x(f"UPDATE {db.state_table} SET fingerprint = '' WHERE job = 'j'")   # as a record would look
        before = await state_row(db)
        with pytest.raises(SchemaError):
            await daemon.Daemon(db.config([broken_job(db, table)]), daemon.RunOptions(), record_unstarted=True).run()
        now = await state_row(db)
        assert now[0] == "running" and now[2] is None and now[1] >= before[1]
    finally:
        stop.set()
        await first
