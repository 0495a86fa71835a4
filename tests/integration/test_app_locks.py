"""Rows the application holds: a batch never waits for them (SKIP LOCKED), so it is never in a deadlock with the
application; it passes over them, a later pass writes them, and the job completes only once every row is right."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from backfilld import accounting, daemon
from backfilld.engines.statements import TableSpec
from backfilld.errors import JobFailed, RetryableError
from tests.dbutil import CONCAT, SLOW_ON_499, TestDb, holding

both = pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])


def config(db: TestDb, table: str, expr: str, **database: object) -> object:
    return db.config([{"name": "j", "table": table, "set": {"label": {db.engine_name: expr}}}],
                     throttle={"min_batch": 100, "max_batch": 100, "workers": 1, "busy_share": 1.0},
                     database={"url": db.url, **database})


@both
async def test_a_batch_passes_over_a_row_the_application_holds_and_a_later_pass_writes_it(db: TestDb) -> None:
    """The application holds row 450 in an open transaction while the job runs: the batch of (400, 500] writes
    its other rows without waiting, logs the row it passed over, and the job keeps sweeping (running, not
    failed) until the application commits; then it writes the row, keeping the application's change."""
    table = await db.users_with(1000)
    expr = CONCAT[db.engine_name]
    async with holding(db, table, 450) as (app, tx):
        with structlog.testing.capture_logs() as logs:
            run = asyncio.create_task(daemon.run(config(db, table, expr), daemon.RunOptions()))
            for _ in range(300):   # until two sweeps have passed over the row
                await asyncio.sleep(0.05)
                if sum(e["event"] == "rows_skipped_locked" for e in logs) >= 2 or run.done():
                    break
            assert not run.done(), "the job ended while a row was still unwritten"
            # meanwhile every other row is written, and the application's transaction goes on unharmed
            assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {expr}") == [(999,)]
            await app.x(f"UPDATE {table} SET deleted = 2 WHERE id = 460")
            await tx.__aexit__(None, None, None)
            [state] = await asyncio.wait_for(run, 60)
    skipped = [e for e in logs if e["event"] == "rows_skipped_locked"]
    assert skipped and all(e["keys"] == ["[450]"] and e["rows"] == 1 for e in skipped), skipped
    assert not [e for e in logs if e["event"] == "batch_retry"], "a batch waited for the application's lock"
    assert state.status == "completed" and state.rows_done == 1000
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {expr}") == [(1000,)]
    assert await db.q(f"SELECT id, deleted FROM {table} WHERE id IN (450, 460) ORDER BY id") == [(450, 1), (460, 2)]


@both
async def test_a_row_held_locked_for_good_fails_the_job_naming_it_instead_of_sweeping_forever(
        db: TestDb, monkeypatch: pytest.MonkeyPatch) -> None:
    """The application never lets go of row 450: after STUCK_PASSES_MAX sweeps in a row that wrote nothing and
    found that row again, the job fails (exit 1) naming its key; the rest is written and the checkpoint kept,
    and a run once the row is free completes the job."""
    monkeypatch.setattr(accounting, "STUCK_PASSES_MAX", 3)   # 10 in production: about a minute and a half
    table = await db.users_with(1000)
    expr = CONCAT[db.engine_name]
    cfg = config(db, table, expr)
    async with holding(db, table, 450) as (app, tx):
        with pytest.raises(JobFailed) as failed:
            await asyncio.wait_for(daemon.run(cfg, daemon.RunOptions()), 60)
        message = str(failed.value)
        assert "1 row(s) could not be written in 3 passes in a row (keys: [450])" in message, message
        assert "another session holds them locked" in message
        assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {expr}") == [(999,)]
        [(status,)] = await db.q(f"SELECT status FROM {db.state_table} WHERE job = 'j'")
        assert status == "failed"
        await tx.__aexit__(None, None, None)
    [done] = await daemon.run(cfg, daemon.RunOptions())
    assert done.status == "completed"
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {expr}") == [(1000,)]


@both
async def test_the_application_waiting_for_a_batch_is_never_a_deadlock_victim(db: TestDb) -> None:
    """The classic cycle: the application holds row 450 and then updates row 420 while the batch of (400, 500]
    holds 420. The batch did not wait for 450 (it passed over it), so the application only waits for the batch
    to commit and then goes on; no deadlock, no error on either side."""
    table = await db.users_with(1000)
    async with holding(db, table, 450) as (app, tx):
        with structlog.testing.capture_logs() as logs:
            run = asyncio.create_task(daemon.run(config(db, table, SLOW_ON_499[db.engine_name]),
                                                 daemon.RunOptions()))
            await batch_holds(db, table, 401)   # the batch of (400, 500] is in flight, holding 401..499
            await app.x(f"UPDATE {table} SET deleted = 3 WHERE id = 420")   # waits for that batch to commit
            await tx.__aexit__(None, None, None)
            [state] = await asyncio.wait_for(run, 60)
    assert not [e for e in logs if e["event"] == "batch_retry"], logs
    assert state.status == "completed" and state.rows_done == 1000
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT[db.engine_name]}") == [(1000,)]
    assert await db.q(f"SELECT id, deleted FROM {table} WHERE id IN (420, 450) ORDER BY id") == [(420, 3), (450, 1)]


@pytest.mark.parametrize("engine_name", ["mysql"])
async def test_without_skip_locked_the_same_cycle_fails_the_application_on_mariadb(db: TestDb) -> None:
    """What SKIP LOCKED prevents, shown with skip_locked = false: the batch waits for row 450 while holding
    401..449, the application's update of row 420 closes the cycle, and InnoDB, which finds the deadlock at
    once, rolls back the lighter transaction: the application's. (PostgreSQL waits deadlock_timeout before it
    looks, and backfilld's lock_timeout_s is shorter, so there backfilld gives up first.)"""
    table = await db.users_with(1000)
    async with holding(db, table, 450) as (app, _tx):   # rolled back by InnoDB, below
        run = asyncio.create_task(daemon.run(config(db, table, CONCAT[db.engine_name], skip_locked=False,
                                                    lock_timeout_s=5), daemon.RunOptions()))
        await batch_holds(db, table, 401)   # the batch has reached row 450 and waits for it
        with pytest.raises(RetryableError, match="[Dd]eadlock"):
            await app.x(f"UPDATE {table} SET deleted = 3 WHERE id = 420")
        # InnoDB rolled the application's transaction back (and with it the lock on 450): the job goes on
        [state] = await asyncio.wait_for(run, 60)
    assert state.status == "completed" and state.rows_done == 1000


async def batch_holds(db: TestDb, table: str, row: int) -> None:
    """Until the batch before the one holding `row` has committed, and a little longer: the next batch (one at
    a time, min_batch = max_batch = 100) has then locked its rows."""
    for _ in range(400):
        if await db.q(f"SELECT label IS NOT NULL FROM {table} WHERE id = {row - 1}") in ([(True,)], [(1,)]):
            await asyncio.sleep(0.3)
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"no batch reached row {row}")


@pytest.mark.parametrize("engine_name", ["mysql"])
async def test_mariadb_batches_update_at_once_and_lock_first_only_where_the_application_holds_rows(db: TestDb
                                                                                                  ) -> None:
    """MariaDB: a batch first runs its range UPDATE in a form that never waits for a lock. On a range nobody
    else holds a row of, that one statement is the whole batch (no locking read). On a range where the
    application holds a row, it gives up at once, unnoticed by the application, and the batch locks first
    (SKIP LOCKED), passing the row over; the connection's next batches lock first too, for a while."""
    table = await db.users_with(300)
    writer = TestDb(db.url, db.suffix)   # backfilld's own session, as a worker's
    await writer.open()
    try:
        w = writer.engine
        info = await w.table_info(table)
        plan = w.plan(TableSpec(table, ("id",), {"label": "CONCAT('x', name)"}, columns=info.columns),
                      lock=w.lock_clause(info, ["label"]))

        async def batch(lo: int, hi: int) -> tuple[int, int, int]:
            """Rows written, and the session's SELECT and UPDATE statements it ran."""
            def counts(rows: list[tuple[object, ...]]) -> dict[str, int]:
                return {str(name).lower(): int(str(v)) for name, v in rows}
            show = "SHOW SESSION STATUS WHERE Variable_name IN ('Com_select', 'Com_update')"
            before = counts(await writer.q(show))
            async with w.transaction():
                n = await w.apply_range(plan, (lo,), (hi,))
            after = counts(await writer.q(show))
            return n, after["com_select"] - before["com_select"], after["com_update"] - before["com_update"]

        assert await batch(0, 100) == (100, 0, 1)   # the range UPDATE alone
        async with holding(db, table, 150) as (app, tx):
            # gave up on row 150 (1 UPDATE), then the locking read (1 SELECT) and the UPDATE of the keys it locked
            assert await batch(100, 200) == (99, 1, 2)
            await app.x(f"UPDATE {table} SET deleted = 2 WHERE id = 160")   # the application's session is unharmed
            await tx.__aexit__(None, None, None)
        assert await batch(200, 300) == (100, 1, 1)   # within the hold: locking read first
    finally:
        await writer.engine.close()
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = CONCAT('x', name)") == [(299,)]
    assert await db.q(f"SELECT id, deleted, label FROM {table} WHERE id IN (150, 160) ORDER BY id") == [
        (150, 1, None), (160, 2, "xn160")]
