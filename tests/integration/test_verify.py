"""verify on every engine: exact comparisons, typed targets, a stopped verify proves nothing, wait."""

from __future__ import annotations

import asyncio

import pytest

from backfilld import daemon
from backfilld.verify import Verifier, record
from tests.dbutil import GateAt, TestDb

LOWER = "lower(name)"


async def names(db: TestDb, n: int = 300) -> str:
    table = await db.create("v", f"id {db.int_type()} NOT NULL PRIMARY KEY, name VARCHAR(50) NOT NULL, "
                                 "low VARCHAR(50), x INTEGER, third DECIMAL(10,2)")
    await db.many(f"INSERT INTO {table} (id, name, x) VALUES (?, ?, ?)", [(i, f"Name{i}", i) for i in range(1, n + 1)])
    return table


async def test_verify_finds_missing_and_case_only_differences_and_fix_repairs(db: TestDb) -> None:
    table = await names(db)
    cfg = db.config([{"name": "low", "table": table, "set": {"low": LOWER}}])
    await daemon.run(cfg, daemon.RunOptions())
    await db.x(f"UPDATE {table} SET low = ? WHERE id = 7", "NAME7")       # case only: a ci collation hides it
    await db.x(f"UPDATE {table} SET low = ? WHERE id = 8", "name8 ")      # trailing space: PAD SPACE hides it
    await db.x(f"UPDATE {table} SET low = NULL WHERE id = 9")
    job = cfg.jobs[0]
    found = await Verifier(db.engine, cfg, job).run()
    assert (found.missing, found.wrong, found.rows_checked) == (1, 2, 300)
    assert sorted(found.sample_wrong) == [[7], [8]] and found.sample_missing == [[9]]
    fixed = await Verifier(db.engine, cfg, job, fix=True).run()
    assert fixed.fixed == 3 and not fixed.clean
    again = await Verifier(db.engine, cfg, job).run()
    assert again.clean
    await record(db.engine, db.state_table, again)
    state = await asyncio.wait_for(daemon.wait_for(cfg, "low", "verified", 5, poll_s=0.1), 10)
    assert state.verified_at == again.at


async def test_overwrite_into_a_narrower_type_completes(db: TestDb) -> None:
    """target decimal(10,2) = x / 3.0: the stored value is rounded; comparing it with the unrounded
    expression would rewrite the same rows forever."""
    table = await names(db)
    cfg = db.config([{"name": "third", "table": table, "overwrite": True, "set": {"third": "x / 3.0"}}])
    [state] = await asyncio.wait_for(daemon.run(cfg, daemon.RunOptions()), 60)
    assert state.status == "completed" and state.pass_no <= 3
    assert (await Verifier(db.engine, cfg, cfg.jobs[0]).run()).clean


async def test_a_stopped_verify_never_counts_as_verified(db: TestDb) -> None:
    table = await names(db, 2000)
    cfg = db.config([{"name": "low", "table": table, "batch_size": 100, "set": {"low": LOWER}}],
                    throttle={"min_batch": 100, "max_batch": 100})
    await daemon.run(cfg, daemon.RunOptions())
    stop = asyncio.Event()

    async def stop_after_first() -> None:
        stop.set()

    result = await Verifier(db.engine, cfg, cfg.jobs[0], gate=GateAt({2: stop_after_first}), stop=stop).run()
    assert not result.complete and not result.clean and result.rows_checked == 100
    await record(db.engine, db.state_table, result)
    [(verified_at,)] = await db.q(f"SELECT verified_at FROM {db.state_table}")
    assert verified_at is None
    with pytest.raises(daemon.WaitTimeout):
        await daemon.wait_for(cfg, "low", "verified", 0.3, poll_s=0.1)
