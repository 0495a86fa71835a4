"""Live control through the state table on every engine, and SIGHUP reload of [throttle]."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog

from backfilld import control, daemon
from tests.dbutil import CONCAT, TestDb


def job(db: TestDb, table: str) -> dict:
    return {"name": "ctl", "table": table, "batch_size": 50, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}


async def filled(db: TestDb, table: str) -> int:
    return (await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL"))[0][0]


async def test_pause_before_start_set_and_resume(db: TestDb) -> None:
    table = await db.users_with(2000)
    cfg = db.config([job(db, table)], throttle={"max_rows_per_s": 2000, "min_batch": 10, "max_batch": 5000})
    # an operator pauses a job that has never run: the request waits for it in the state table
    await control.request(cfg, "ctl", paused=True)
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions()))
        await asyncio.sleep(1.5)
        assert await filled(db, table) == 0 and not run.done()
        await control.request(cfg, "ctl", settings={"batch_size": 10, "max_rows_per_s": 100_000})
        await control.request(cfg, "ctl", paused=False)
        [state] = await asyncio.wait_for(run, 60)
    assert state.status == "completed" and await filled(db, table) == 2000
    events = [e["event"] for e in logs]
    assert "operator_paused" in events and "operator_resumed" in events
    changed = [e for e in logs if e["event"] == "settings_changed"]
    assert changed and changed[0]["batch_size"] == 10 and changed[0]["max_rows_per_s"] == 100_000
    # the requests outlive the run: a restarted daemon sees the same settings
    [(requests,)] = await db.q(f"SELECT requests FROM {db.state_table}")
    assert json.loads(requests) == {"paused": False, "set": {"batch_size": 10, "max_rows_per_s": 100_000}}


async def test_pause_mid_run_holds_batches(db: TestDb) -> None:
    table = await db.users_with(3000)
    cfg = db.config([job(db, table)], throttle={"max_rows_per_s": 1500, "min_batch": 50, "max_batch": 50})
    run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions()))
    while await filled(db, table) < 200:
        await asyncio.sleep(0.05)
    await control.request(cfg, "ctl", paused=True)
    await asyncio.sleep(1.0)  # a request is read within REQUEST_POLL_S, before the next batch
    held = await filled(db, table)
    await asyncio.sleep(1.0)
    assert await filled(db, table) == held < 3000
    await control.request(cfg, "ctl", paused=False)
    [state] = await asyncio.wait_for(run, 60)
    assert state.status == "completed"


def test_set_rejects_bad_input(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "sqlite:///x.db"\n[[jobs]]\nname = "j"\ntable = "t"\n[jobs.set]\nc = "1"\n')
    for args, msg in ((["j", "batch_size=0"], "out of range"), (["j", "colour=red"], "cannot be set live"),
                      (["j", "max_lag_s=soon"], "is not a number"), (["nope", "batch_size=5"], "no job named"),
                      (["j", "workers=17"], "out of range (1 to 16)"), (["j", "workers=1.5"], "is not a whole number")):
        r = subprocess.run([sys.executable, "-m", "backfilld", "set", str(cfg), *args], capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_sighup_reloads_throttle_and_rejects_an_invalid_file(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "h.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
    con.executemany("INSERT INTO t (id, a) VALUES (?, ?)", [(i, f"x{i}") for i in range(1, 3001)])
    con.commit()
    con.close()
    cfg = tmp_path / "c.toml"
    base = (f'[database]\nurl = "sqlite:///{db}"\n[metrics]\nlisten = ""\n[logging]\nformat = "json"\n'
            '[[jobs]]\nname = "j"\ntable = "t"\nbatch_size = 10\n[jobs.set]\nb = "a"\n')
    cfg.write_text(base + "[throttle]\nmax_rows_per_s = 200\nmin_batch = 10\nmax_batch = 10\n")
    proc = subprocess.Popen([sys.executable, "-m", "backfilld", "run", str(cfg)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ})
    try:
        time.sleep(2.0)
        cfg.write_text(base + "[throttle]\nmax_rows_per_s = -1\n")  # invalid: the old settings must stay
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None
        cfg.write_text(base + "[throttle]\nmax_rows_per_s = 0\nmin_batch = 10\nmax_batch = 1000\n")
        proc.send_signal(signal.SIGHUP)
        proc.wait(30)  # unthrottled, the rest goes quickly; 3000 rows at 200 rows/s would take 15 s
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read()
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    failed = [e for e in events if e["event"] == "config_reload_failed"]
    assert failed and "max_rows_per_s" in failed[0]["error"]
    assert [e for e in events if e["event"] == "config_reloaded"][0]["max_rows_per_s"] == 0
    assert proc.returncode == 0


async def test_a_reload_keeps_what_the_operator_set_and_set_applies_to_that_job_only(
        db: TestDb, tmp_path: Path) -> None:
    """`set ctl max_rows_per_s=... target_batch_time_s=...` then a SIGHUP reload of a file that changes
    [throttle]: the reload's other values apply, the operator's stay (until set again); and the job's live
    max_lag_s is that job's alone, not the other job's of the same daemon."""
    table = await db.users_with(3000)
    other = await db.users_with(100, "other")
    jobs = [job(db, table), {**job(db, other), "name": "other"}]
    cfg = db.config(jobs, throttle={"max_rows_per_s": 1000, "min_batch": 10, "max_batch": 50})
    path = tmp_path / "c.toml"
    path.write_text(f'[database]\nurl = "{db.url}"\n[state]\ntable = "{db.state_table}"\n[metrics]\nlisten = ""\n'
                    '[[jobs]]\nname = "ctl"\ntable = "t"\n[jobs.set]\nb = "a"\n'
                    '[throttle]\nmax_rows_per_s = 2000\nmax_lag_s = 3\nmin_batch = 10\nmax_batch = 40\n')
    d = daemon.Daemon(cfg, daemon.RunOptions(config_path=str(path)))
    run = asyncio.create_task(d.run())
    try:
        while await filled(db, table) < 100:
            await asyncio.sleep(0.05)
        await control.request(cfg, "ctl", settings={"max_rows_per_s": 500, "target_batch_time_s": 0.25,
                                                   "max_lag_s": 0.5})
        runner = d.runners["ctl"]
        while runner.requests.applied.get("max_rows_per_s") != 500:
            await asyncio.sleep(0.05)
        assert d.throttle is not None
        d.reload()
        t = d.throttle.cfg_for("ctl")
        assert (t.max_rows_per_s, t.max_lag_s) == (500, 0.5), "the reload undid the operator's set"
        assert runner.sizer.target_s == 0.25 and runner.sizer.max_size == 40   # kept; the reload's bound
        base = d.throttle.cfg_for("other")
        assert (base.max_rows_per_s, base.max_lag_s) == (2000, 3), "the other job got ctl's live settings"
        await control.request(cfg, "ctl", settings={"max_rows_per_s": 100_000})
    finally:
        d.stop.set()
    await asyncio.wait_for(run, 60)
