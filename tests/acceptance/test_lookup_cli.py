"""A lookup job as a process on every engine: killed with SIGKILL twice mid-run, then run again to the end,
with every row right and exactly one lookup row per value used."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.acceptance.test_cli import backfilld, rows_done, spawn, wait_progress
from tests.dbutil import TestDb
from tests.integration.test_lookup_jobs import check_all_right, linktarget, pagelinks

ROWS = 100_000


def write_config(path: Path, db: TestDb, pl: str, lt: str) -> Path:
    path.write_text(f"""
[database]
url = "{db.url}"

[state]
table = "{db.state_table}"

[logging]
format = "json"

[metrics]
listen = ""

[throttle]
min_batch = 500
max_batch = 500
max_rows_per_s = 25000

[[jobs]]
name = "pl_target"
table = "{pl}"
[jobs.lookup]
table = "{lt}"
id = "lt_id"
target = "pl_target_id"
match = {{ lt_namespace = "pl_namespace", lt_title = "pl_title" }}
""", encoding="utf-8")
    db.created.append(db.state_table)
    return path


async def test_kill_9_twice_then_resume(db: TestDb, tmp_path: Path) -> None:
    lt = await linktarget(db)
    pl, _ = await pagelinks(db, ROWS)
    cfg = write_config(tmp_path / "c.toml", db, pl, lt)
    for at in (20_000, 60_000):   # two crashes, each mid-run
        proc = spawn("run", str(cfg))
        await wait_progress(db, proc, at)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert await rows_done(db) < ROWS
    done = backfilld("run", str(cfg))
    assert done.returncode == 0, done.stderr
    assert await rows_done(db) == ROWS
    await check_all_right(db, pl, lt)
    verified = backfilld("verify", str(cfg))
    assert verified.returncode == 0, verified.stdout + verified.stderr
