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
