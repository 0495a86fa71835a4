"""Throttles that need no replica, on every engine: rows per second, flag file, run windows."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import structlog

from backfilld import daemon
from backfilld.throttle import Throttle
from tests.dbutil import CONCAT, TestDb


def job(db: TestDb, table: str) -> dict:
    return {"name": "j", "table": table, "batch_size": 100, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}


async def test_rate_limit_paces_rows_per_second(db: TestDb) -> None:
    table = await db.users_with(1500)
    cfg = db.config([job(db, table)], throttle={"max_rows_per_s": 1000, "min_batch": 100, "max_batch": 100})
    t0 = time.monotonic()
    [state] = await daemon.run(cfg, daemon.RunOptions())
    took = time.monotonic() - t0
    assert state.status == "completed" and state.rows_done == 1500
    # 1500 rows at 1000 rows/s: the last batch may start once 1400 rows are paid for
    assert took >= 1.4, f"1500 rows at 1000 rows/s took only {took:.2f} s"


async def test_flag_file_pauses_until_removed(db: TestDb, tmp_path) -> None:  # noqa: ANN001
    table = await db.users_with(500)
    flag = tmp_path / "pause-backfills"
    flag.touch()
    cfg = db.config([job(db, table)], throttle={"flag_file": str(flag)})
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions()))
        await asyncio.sleep(1.0)
        assert (await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL")) == [(0,)]
        assert not run.done()
        flag.unlink()
        [state] = await asyncio.wait_for(run, 60)
    assert state.status == "completed" and state.rows_done == 500
    paused = [e for e in logs if e["event"] == "throttle_paused"]
    assert paused and paused[0]["reason"] == f"flag file {flag} exists"
    assert [e for e in logs if e["event"] == "throttle_resumed"][0]["paused_s"] > 0.5


async def test_outside_the_window_nothing_runs(db: TestDb) -> None:
    table = await db.users_with(300)
    now = dt.datetime(2026, 11, 26, 14, 0)
    cfg = db.config([job(db, table)], throttle={"windows": ["22:00-06:00"]})
    clock = {"now": now}
    throttle = Throttle(cfg, wall=lambda: clock["now"])
    stop = asyncio.Event()
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(), gate=throttle, stop=stop))
        await throttle.start()
        try:
            await asyncio.sleep(0.8)
            assert (await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL")) == [(0,)]
            clock["now"] = dt.datetime(2026, 11, 26, 23, 0)  # the window opens
            [state] = await asyncio.wait_for(run, 60)
        finally:
            await throttle.close()
    assert state.status == "completed"
    reasons = [e["reason"] for e in logs if e["event"] == "throttle_paused"]
    assert reasons == ["outside the run windows 22:00-06:00 (local time 14:00)"]
