"""Live writes during a backfill: old and new application code write, update and delete while a job of
100,000 rows runs; in the end every row is right, nothing written by new code is lost, nothing deleted
comes back, and the application saw no error it would not see without backfilld."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from backfilld import daemon
from backfilld.verify import Verifier
from tests.dbutil import TestDb
from tests.fixtures.writer import DOMAINS, domain_of

ROWS = 100_000
# The writer runs this long: through the job's first pass (100,000 rows at 25,000 rows/s) and into its sweeps.
# While old code keeps inserting behind the cursor every sweep finds rows, so the job completes only after
# the writes stop (or, with sync triggers, as soon as a pass finds nothing: the triggers fill new rows).
WRITER_S = 6.0
EXPR = {"postgresql": "lower(split_part(email, '@', 2))", "mysql": "lower(substring_index(email, '@', -1))",
        "sqlite": "lower(substr(email, instr(email, '@') + 1))"}


async def setup_table(db: TestDb) -> str:
    table = await db.create("torture", f"id {db.int_type()} NOT NULL PRIMARY KEY, email VARCHAR(100) NOT NULL, "
                                       "domain VARCHAR(100)")
    rows = [(i, f"user{i}@{DOMAINS[i % len(DOMAINS)]}") for i in range(2, 2 * ROWS + 1, 2)]
    await db.bulk(table, ("id", "email"), rows)
    return table


async def run_torture(db: TestDb, tmp_path: Path, *, triggers: bool) -> None:
    table = await setup_table(db)
    job = {"name": "domain", "table": table, "batch_size": 500,
           "set": {"domain": {db.engine_name: EXPR[db.engine_name]}}}
    # paced so that the writer runs through the whole job
    cfg = db.config([job], throttle={"max_rows_per_s": 25_000, "min_batch": 500, "max_batch": 500})
    if triggers:
        from backfilld.engines import triggers as trig

        prepared = await __import__("backfilld.job", fromlist=["prepare"]).prepare(db.engine, cfg.jobs[0])
        await trig.install(db.engine, table, list(prepared.key), prepared.exprs, None, False, "domain")
    stop_file, out = tmp_path / "stop", tmp_path / "writer.json"
    writer = await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.fixtures.writer", db.url, table,
                                                  str(stop_file), str(out), "7", str(WRITER_S))
    try:
        await asyncio.sleep(0.5)
        [state] = await daemon.run(cfg, daemon.RunOptions())
        assert state.status == "completed"
        if triggers:
            assert state.pass_no <= 3, "with triggers a sweep finds nothing to fill"
    finally:
        stop_file.touch()
        await asyncio.wait_for(writer.wait(), 60)
    log = json.loads(out.read_text())
    assert log["ops"] > 500, f"the writer did too little to prove anything: {log['ops']} ops"
    assert len(log["inserted"]) > 50 and len(log["new_code"]) > 50 and log["deleted"]
    assert log["errors"] == [], "the application saw errors during the backfill"

    first = await Verifier(db.engine, cfg, cfg.jobs[0]).run()
    if triggers:
        # triggers kept every row right while old code wrote: no sweep, no repair needed
        assert first.clean, first.as_dict()
    else:
        # old code changed sources of filled rows and inserted rows after the last sweep: verify --fix repairs
        fixed = await Verifier(db.engine, cfg, cfg.jobs[0], fix=True).run()
        assert fixed.fixed == fixed.missing + fixed.wrong
    final = await Verifier(db.engine, cfg, cfg.jobs[0]).run()
    assert final.clean and final.missing == 0 and final.wrong == 0, final.as_dict()

    rows = dict(await db.q(f"SELECT id, domain FROM {table}"))
    emails = dict(await db.q(f"SELECT id, email FROM {table}"))
    assert all(rows[i] == domain_of(emails[i]) for i in rows)
    for row_id, value in log["new_code"].items():
        assert rows[int(row_id)] == value, f"new code's value at id {row_id} was overwritten"
    assert not set(log["deleted"]) & set(rows), "a deleted row came back"
    assert len(rows) == ROWS + len(log["inserted"]) - len(log["deleted"])


@pytest.mark.parametrize("triggers", [False, True], ids=["sweeps_and_verify_fix", "sync_triggers"])
async def test_live_writes_end_with_every_row_right(db: TestDb, tmp_path: Path, triggers: bool) -> None:
    await run_torture(db, tmp_path, triggers=triggers)
