"""The application on the primary as a throttle signal: a busy application gets one short batch at a time and
most of the time; an application session waiting too long for backfilld's locks pauses the job."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import structlog

from backfilld import daemon
from backfilld.engines.base import AppActivity
from backfilld.job import BatchResult
from backfilld.throttle import Throttle
from tests.dbutil import CONCAT, SLOW_ON_499, TestDb, application_session

pytestmark = pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])

SLEEP = {"postgresql": "SELECT pg_sleep(0.02)", "mysql": "SELECT SLEEP(0.02)"}


@contextlib.asynccontextmanager
async def application(db: TestDb, sessions: int):
    """`sessions` connections running short statements back to back, as a busy application's would."""
    conns = [await application_session(db) for _ in range(sessions)]
    stop = asyncio.Event()

    async def loop(c: TestDb) -> None:
        while not stop.is_set():
            await c.q(SLEEP[db.engine_name])

    tasks = [asyncio.create_task(loop(c)) for c in conns]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in conns:
            await c.engine.close()


async def test_a_busy_application_gets_one_short_batch_at_a_time_and_most_of_the_time(db: TestDb) -> None:
    table = await db.users_with(4000)
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}],
                    throttle={"min_batch": 100, "max_batch": 400, "workers": 2})
    throttle = Throttle(cfg)
    took: list[float] = []

    def on_batch(_job: object, b: BatchResult) -> None:
        took.append(b.took_s)

    async with application(db, 3):
        await throttle.start()
        try:
            for _ in range(200):   # until the probe has seen the application at work (its mean of 2 s)
                if (throttle.app is not None and (throttle.app.mean_active() or 0) >= cfg.throttle.busy_sessions):
                    break
                await asyncio.sleep(0.05)
            [state] = await daemon.run(cfg, daemon.RunOptions(), gate=throttle, on_batch=on_batch)
            assert throttle.busy(), "three sessions running statements back to back are a busy application"
            assert throttle.metrics.app_active._value.get() >= 1
        finally:
            await throttle.close()
    assert state.status == "completed" and state.rows_done == 4000
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT[db.engine_name]}") == [(4000,)]
    waited = throttle.metrics.throttled_seconds.labels("j", "busy")._value.get()
    # busy_share 0.25: after each batch, three times its time (the last batch's wait is not taken)
    assert waited >= 2 * sum(took[:-1]), (waited, sum(took))


async def test_an_application_session_waiting_too_long_pauses_the_job(db: TestDb) -> None:
    """The application wants a row of a batch that holds its rows for a second: the probe sees it wait for
    backfilld's lock past max_app_wait_s (the decision then holds the next batch back: tests/unit/
    test_throttle_decision.py; whether a batch is due while the wait lasts depends on timing), and both the
    application and the job finish."""
    table = await db.users_with(1000)
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {db.engine_name: SLOW_ON_499[db.engine_name]}}}],
                    throttle={"min_batch": 100, "max_batch": 100, "busy_share": 1.0})
    app = await application_session(db)
    throttle = Throttle(cfg)
    waits: list[float] = []
    seen = throttle._on_app_reading

    def on_reading(a: AppActivity) -> None:
        waits.append(a.longest_wait_s)
        seen(a)

    throttle._on_app_reading = on_reading  # type: ignore[method-assign]
    await throttle.start()
    try:
        with structlog.testing.capture_logs() as logs:
            run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(), gate=throttle))
            for _ in range(400):   # until the batch before (400, 500] committed
                if await db.q(f"SELECT label IS NOT NULL FROM {table} WHERE id = 400") in ([(True,)], [(1,)]):
                    break
                await asyncio.sleep(0.025)
            await asyncio.sleep(0.2)
            await app.x(f"UPDATE {table} SET deleted = 3 WHERE id = 420")   # waits for that batch's commit
            [state] = await asyncio.wait_for(run, 60)
    finally:
        await throttle.close()
        await app.engine.close()
    assert max(waits) > cfg.throttle.max_app_wait_s, waits
    assert throttle.metrics.app_lock_waits._value.get() >= 1
    for e in (e for e in logs if e["event"] == "throttle_paused" and "app_wait" in e["kinds"]):
        assert "waited" in e["reason"] and "max_app_wait_s 0.2 s" in e["reason"], e
    assert state.status == "completed" and state.rows_done == 1000
    assert await db.q(f"SELECT deleted FROM {table} WHERE id = 420") == [(3,)]
