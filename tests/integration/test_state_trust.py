"""What backfilld reads back from its state table is checked like what a person types, on every engine.

Anyone with UPDATE on the state table can write its rows; a bad value must be named and never applied, never
end in a traceback, and leave the operator able to inspect and repair the job with backfilld's own commands.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import structlog

from backfilld import control, daemon
from backfilld.errors import JobFailed
from tests.dbutil import CONCAT, TestDb

ROWS = 3000


def config(db: TestDb, table: str, **throttle: object) -> object:
    return db.config([{"name": "j", "table": table, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}],
                     throttle={"min_batch": 100, "max_batch": 100, **throttle})


async def unfilled(db: TestDb, table: str) -> int:
    return (await db.q(f"SELECT count(*) FROM {table} WHERE label IS NULL"))[0][0]


async def stored_requests(db: TestDb) -> str | None:
    return (await db.q(f"SELECT requests FROM {db.state_table} WHERE job = 'j'"))[0][0]


async def test_requests_out_of_bounds_are_named_and_never_applied(db: TestDb) -> None:
    """workers = 0 made the job write nothing and call itself completed; "false" (a string) paused it;
    max_lag_s = 1e9 turned the lag throttle off. Now each is logged and shown by `status`, the job runs with
    its configured settings and fills every row, and `pause` still writes a valid request over the bad one."""
    table = await db.users_with(ROWS)
    cfg = config(db, table)
    await control.request(cfg, "j", paused=False)   # the job's row, as an operator request makes it
    bad = '{"paused": "false", "set": {"workers": 0, "max_lag_s": 1e9, "batch_size": "abc"}}'
    await db.x(f"UPDATE {db.state_table} SET requests = ? WHERE job = 'j'", bad)
    [shown] = await daemon.status(cfg)
    assert shown["requests_rejected"] == [
        "paused: 'false' is not true or false (a JSON boolean)", "workers: 0 is out of range (1 to 16)",
        "max_lag_s: 1000000000.0 is out of range (above 0 to 3600)", "batch_size: 'abc' is not a whole number"]
    with structlog.testing.capture_logs() as logs:
        [state] = await asyncio.wait_for(daemon.run(cfg, daemon.RunOptions()), 60)
    assert state.status == "completed" and state.rows_done == ROWS
    assert await unfilled(db, table) == 0
    rejected = [e for e in logs if e["event"] == "requests_rejected"]
    assert len(rejected) == 1 and len(rejected[0]["problems"]) == 4, rejected
    assert not [e for e in logs if e["event"] in ("settings_changed", "operator_paused")]
    await control.request(cfg, "j", paused=True)
    assert json.loads(await stored_requests(db) or "") == {"paused": True}


@pytest.mark.parametrize("column,value,named", [
    ("last_key", '{"x', "last_key holds"),
    ("last_key", '"12"', "last_key holds"),
    ("status", "bogus", "status holds 'bogus', not one of pending, running, completed, failed"),
])
async def test_an_unreadable_state_row_fails_the_run_clearly_and_status_set_and_restart_still_work(
        db: TestDb, column: str, value: str, named: str) -> None:
    table = await db.users_with(ROWS)
    cfg = config(db, table)
    await control.request(cfg, "j", settings={"batch_size": 200})
    await db.x(f"UPDATE {db.state_table} SET status = 'running', fingerprint = 'x' WHERE job = 'j'")
    await db.x(f"UPDATE {db.state_table} SET {column} = ? WHERE job = 'j'", value)

    with pytest.raises(JobFailed) as err:
        await asyncio.wait_for(daemon.run(cfg, daemon.RunOptions()), 60)
    message = str(err.value)
    assert named in message and "job 'j' is unreadable" in message and "--restart" in message, message
    assert await unfilled(db, table) == ROWS, "rows were written from an unreadable checkpoint"

    [shown] = await daemon.status(cfg)
    assert shown["status"] == "unreadable" and named in shown["error"]
    await control.request(cfg, "j", paused=False)   # the operator's commands still work on the row
    assert json.loads(await stored_requests(db) or "") == {"paused": False, "set": {"batch_size": 200}}

    [state] = await asyncio.wait_for(daemon.run(cfg, daemon.RunOptions(restart=True)), 60)
    assert state.status == "completed" and state.rows_done == ROWS and await unfilled(db, table) == 0
    [shown] = await daemon.status(cfg)
    assert shown["status"] == "completed"


async def test_a_state_row_deleted_mid_run_fails_the_job_and_status_says_why(db: TestDb) -> None:
    """The checkpoint UPDATE matched no row and nobody noticed: the job "completed" and status said
    not_started. Now the batch rolls back, the job fails naming the cause, and its row holds the failure."""
    table = await db.users_with(ROWS)
    cfg = config(db, table, max_rows_per_s=1000)
    run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions()))
    while await unfilled(db, table) > ROWS - 500:
        assert not run.done()
        await asyncio.sleep(0.05)
    await db.x(f"DELETE FROM {db.state_table} WHERE job = 'j'")
    with pytest.raises(JobFailed) as err:
        await asyncio.wait_for(run, 60)
    assert "the row of job 'j' is gone" in str(err.value)
    left = await unfilled(db, table)
    assert 0 < left < ROWS
    [shown] = await daemon.status(cfg)
    assert shown["status"] == "failed" and "is gone" in shown["error"]
    assert shown["rows_done"] == ROWS - left, "the recorded count is not what was written"
