"""A lookup job of 100,000 rows beside a live application: old code inserts links behind the cursor and changes
titles, new code does its own get-or-create in the lookup table and writes targets, all at once. Afterwards
every row points at the lookup row of its current (namespace, title), the application saw no error, and no
lookup row that existed was changed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from backfilld import daemon
from backfilld.verify import Verifier
from tests.dbutil import TestDb
from tests.integration.test_lookup_jobs import job, linktarget, pagelinks, text

ROWS = 100_000
WRITER_S = 6.0


@pytest.mark.parametrize("triggers", [False, True], ids=["sweeps_and_verify_fix", "sync_triggers"])
async def test_lookup_job_beside_old_and_new_code(db: TestDb, tmp_path: Path, triggers: bool) -> None:
    lt = await linktarget(db)
    await db.bulk(lt, ("lt_namespace", "lt_title"), [(0, f"Title_{i}") for i in range(0, 300, 3)])
    before = {r[0]: (r[1], text(r[2])) for r in await db.q(f"SELECT lt_id, lt_namespace, lt_title FROM {lt}")}
    pl, _ = await pagelinks(db, ROWS, step=2)   # even ids: the writer's old code inserts into the gaps
    # paced so that the writer runs through the job's fill pass and into its sweeps
    cfg = db.config([job(pl, lt)], throttle={"max_rows_per_s": 20_000, "min_batch": 500, "max_batch": 500})
    if triggers:   # old code's inserts and title changes get their targets (and lookup rows) from the triggers
        await daemon.triggers(cfg, "pl_target", "install")
    stop_file, out = tmp_path / "stop", tmp_path / "writer.json"
    writer = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.fixtures.lookup_writer", db.url, pl,
                                                  lt, str(stop_file), str(out), "11", str(WRITER_S), str(ROWS))
    try:
        await asyncio.sleep(0.5)
        [state] = await daemon.run(cfg, daemon.RunOptions())
        assert state.status == "completed", state.error
    finally:
        stop_file.touch()
        await asyncio.wait_for(writer.wait(), 60)
    log = json.loads(out.read_text())
    assert log["errors"] == [], "the application saw errors during the backfill"
    assert min(log["old_insert"], log["old_update"], log["new_update"], log["new_insert"]) > 20, log
    assert log["created"] > 0, "new code never created a lookup row: the race was not run"

    if triggers:
        # the triggers kept every row right while old code wrote: no sweep after it, no repair
        first = await Verifier(db.engine, cfg, cfg.jobs[0]).run()
        assert first.clean, first.as_dict()
        await daemon.triggers(cfg, "pl_target", "remove")
    else:
        # the documented procedure once the old code is gone: run once more (rows inserted after the last
        # sweep), then verify --fix (titles old code changed after their rows were filled), then verify
        [again] = await daemon.run(cfg, daemon.RunOptions())
        assert again.status == "completed"
        fixed = await Verifier(db.engine, cfg, cfg.jobs[0], fix=True).run()
        assert fixed.fixed == fixed.missing + fixed.wrong, fixed.as_dict()
        assert fixed.wrong > 0, "old code changed titles of filled rows: verify must find them"
    final = await Verifier(db.engine, cfg, cfg.jobs[0]).run()
    assert final.clean, final.as_dict()

    after = {r[0]: (r[1], text(r[2])) for r in await db.q(f"SELECT lt_id, lt_namespace, lt_title FROM {lt}")}
    assert {k: after.get(k) for k in before} == before, "a lookup row that existed was changed or deleted"
    assert len(set(after.values())) == len(after), "two lookup rows for one value"
    by_value = {v: k for k, v in after.items()}
    rows = await db.q(f"SELECT pl_id, pl_namespace, pl_title, pl_target_id FROM {pl}")
    assert len(rows) == ROWS + log["old_insert"] + log["new_insert"]
    wrong = [r for r in rows if r[3] != by_value.get((r[1], text(r[2])))]
    assert wrong == []
