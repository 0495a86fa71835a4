"""run --follow: every job fills first, then all completed jobs keep sweeping for rows old code inserts."""

from __future__ import annotations

import asyncio

from backfilld import daemon
from tests.dbutil import CONCAT, TestDb


async def test_follow_fills_every_job_then_sweeps_them_all(db: TestDb) -> None:
    tables = []
    for base in ("fa", "fb"):
        tables.append(await db.users_with(300, base))
    jobs = [{"name": f"job_{i}", "table": t, "follow_interval_s": 0.2,
             "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}} for i, t in enumerate(tables)]
    stop = asyncio.Event()
    run = asyncio.create_task(daemon.run(db.config(jobs), daemon.RunOptions(follow=True), stop=stop))
    try:
        async def unfilled() -> int:
            return sum([(await db.q(f"SELECT count(*) FROM {t} WHERE label IS NULL"))[0][0] for t in tables])

        for _ in range(100):
            if await unfilled() == 0:
                break
            await asyncio.sleep(0.1)
        assert await unfilled() == 0, "both jobs fill before following"
        for t in tables:  # old code inserts into both tables after completion
            await db.x(f"INSERT INTO {t} (id, name, deleted) VALUES (?, ?, 0)", 1000, "late")
        for _ in range(100):
            if await unfilled() == 0:
                break
            await asyncio.sleep(0.1)
        assert await unfilled() == 0, "every followed job sweeps up rows inserted after it completed"
        assert not run.done()
    finally:
        stop.set()
    states = await asyncio.wait_for(run, 30)
    assert sorted(s.job for s in states) == ["job_0", "job_1"]
    assert all(s.status == "completed" for s in states)


async def test_a_completed_job_run_again_sweeps_rows_inserted_since(db: TestDb) -> None:
    """Without --follow: a second `run` of a completed job asks whether any row needs a value and sweeps the
    ones old code inserted after completion, instead of exiting `job_already_completed` with rows left NULL;
    with none left it changes nothing (the state row as it was)."""
    table = await db.users_with(300)
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}])
    [first] = await daemon.run(cfg, daemon.RunOptions())
    assert first.status == "completed" and first.rows_done == 300
    [again] = await daemon.run(cfg, daemon.RunOptions())
    assert (again.status, again.pass_no, again.rows_done) == ("completed", first.pass_no, 300)

    for i in range(1000, 1005):   # old code, after completion
        await db.x(f"INSERT INTO {table} (id, name, deleted) VALUES (?, ?, 0)", i, "late")
    [swept] = await daemon.run(cfg, daemon.RunOptions())
    assert swept.status == "completed" and swept.rows_done == 305
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NULL") == [(0,)]
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT[db.engine_name]}") == [(305,)]
