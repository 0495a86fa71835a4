"""The statement application code reads a backfill's phase with (README, "What the application reads"), run as the
README writes it on every engine, through every phase: no row, pending, running, completed, verified, completed
again after a verify that found a wrong row, a restart, and failed. And the columns it reads, as each engine's
catalog has them."""

from __future__ import annotations

from typing import Any

from backfilld import control, daemon
from backfilld.errors import JobFailed
from backfilld.verify import Verifier, record
from tests.dbutil import CONCAT, GateAt, TestDb
from tests.unit.test_state_contract import READ, TIMESTAMP, statement

# the column types each engine's catalog reports for the columns the statement reads (all text: the statement
# compares the timestamps as text, and applications read them as strings)
TYPES = {
    "sqlite": {"job": "TEXT", "status": "TEXT", "finished_at": "TEXT", "verified_at": "TEXT", "error": "TEXT"},
    "postgresql": {"job": "character varying(64)", "status": "character varying(16)",
                   "finished_at": "character varying(40)", "verified_at": "character varying(40)", "error": "text"},
    "mysql": {"job": "varchar(64)", "status": "varchar(16)", "finished_at": "varchar(40)",
              "verified_at": "varchar(40)", "error": "text"},
}


async def phase(db: TestDb, job: str) -> tuple[Any, ...] | None:
    """(phase, finished_at, verified_at, error) as the application reads them, or None without a row."""
    sql = statement().replace("backfilld_state", db.state_table).replace("'users_email_domain'", "?")
    rows = await db.q(sql, job)
    assert len(rows) <= 1
    return tuple(rows[0]) if rows else None


async def test_the_documented_statement_tells_every_phase_on_every_engine(db: TestDb) -> None:
    table = await db.users_with(400)
    cfg = db.config([{"name": "labels", "table": table, "batch_size": 50, "set": {"label": CONCAT[db.engine_name]}}],
                    throttle={"min_batch": 50, "max_batch": 50})
    await db.engine.ensure_state_table(db.state_table)
    assert await phase(db, "labels") is None                                       # never ran

    await control.request(cfg, "labels", paused=True)
    await control.request(cfg, "labels", paused=False)
    assert await phase(db, "labels") == ("pending", None, None, None)              # an operator's request first

    seen: list[Any] = []

    async def look() -> None:
        seen.append(await phase(db, "labels"))

    [done] = await daemon.run(cfg, daemon.RunOptions(), gate=GateAt({3: look}))
    assert seen == [("running", None, None, None)]                                 # mid-run
    name, finished, verified, error = await phase(db, "labels") or ()
    assert (name, verified, error) == ("completed", None, None) and TIMESTAMP.match(finished)
    assert finished == done.finished_at

    clean = await Verifier(db.engine, cfg, cfg.jobs[0]).run()
    await record(db.engine, db.state_table, clean)
    name, _, verified, _ = await phase(db, "labels") or ()
    assert (name, verified) == ("verified", clean.at) and TIMESTAMP.match(verified) and verified >= finished

    await db.x(f"UPDATE {table} SET label = ? WHERE id = 5", "wrong")
    found = await Verifier(db.engine, cfg, cfg.jobs[0]).run()
    assert found.complete and found.wrong == 1
    await record(db.engine, db.state_table, found)
    assert await phase(db, "labels") == ("completed", finished, None, None)        # the old verify no longer holds

    fixed = await Verifier(db.engine, cfg, cfg.jobs[0], fix=True).run()
    await record(db.engine, db.state_table, fixed)
    again = await Verifier(db.engine, cfg, cfg.jobs[0]).run()
    await record(db.engine, db.state_table, again)
    assert (await phase(db, "labels") or ())[:3] == ("verified", finished, again.at)

    seen.clear()
    [redone] = await daemon.run(cfg, daemon.RunOptions(restart=True), gate=GateAt({2: look}))
    assert seen[0][:2] == ("running", None)                                        # restarted: not verified
    name, refinished, verified, _ = await phase(db, "labels") or ()
    assert (name, refinished, verified) == ("completed", redone.finished_at, again.at) and refinished > verified


async def test_a_failed_job_reads_as_failed_with_its_error(db: TestDb) -> None:
    table = await db.create("props", f"id {db.int_type()} NOT NULL PRIMARY KEY, pp_value VARCHAR(100), "
                                     "pp_json VARCHAR(200)")
    await db.many(f"INSERT INTO {table} (id, pp_value) VALUES (?, ?)", [(1, "a=1"), (2, "!broken"), (3, "b=2")])
    cfg = db.config([{"name": "props", "table": table, "transform": "tests.fixtures.transforms:props_to_json",
                      "sources": ["pp_value"], "targets": ["pp_json"]}])
    try:
        await daemon.run(cfg, daemon.RunOptions())
    except JobFailed:
        pass
    name, finished, verified, error = await phase(db, "props") or ()
    assert (name, finished, verified) == ("failed", None, None) and "cannot parse '!broken'" in error


async def test_the_columns_it_reads_are_text_in_every_engine_catalog(db: TestDb) -> None:
    db.created.append(db.state_table)
    await db.engine.ensure_state_table(db.state_table)
    columns = (await db.engine.table_info(db.state_table)).columns
    assert {name: columns[name].type for name in READ} == TYPES[db.engine_name]
    assert not columns["job"].nullable and not columns["status"].nullable
