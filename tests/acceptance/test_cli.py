"""The CLI as a user runs it: a process, real databases, kill -9, SIGTERM, bad input."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.dbutil import CONCAT, TestDb
from tests.harness.faultproxy import FaultProxy

ROWS = 12_000
servers = pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])


def backfilld(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backfilld", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "backfilld", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def write_config(path: Path, db: TestDb, table: str, *, batch: int = 10, extra: str = "") -> Path:
    expr = CONCAT[db.engine_name].replace('"', '\\"')
    path.write_text(f"""
[database]
url = "{db.url}"

[state]
table = "{db.state_table}"

[logging]
format = "json"

[metrics]
listen = "127.0.0.1:0"

[throttle]
min_batch = {batch}
max_batch = {batch}
{extra}
[[jobs]]
name = "labels"
table = "{table}"
batch_size = {batch}
[jobs.set]
label = "{expr}"
""", encoding="utf-8")
    db.created.append(db.state_table)
    return path


async def audited_users(db: TestDb) -> tuple[str, str]:
    """A users table whose every UPDATE is recorded by a trigger in an audit table."""
    table = await db.create_users()
    rows = [(i, f"nom {i} ü", 0) for i in range(1, ROWS + 1)]
    await db.many(f"INSERT INTO {table} (id, name, deleted) VALUES (?, ?, ?)", rows)
    return table, await db.audit_updates(table)


async def rows_done(db: TestDb) -> int:
    try:
        rows = await db.q(f"SELECT rows_done FROM {db.state_table}")
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    return int(rows[0][0]) if rows else 0


async def wait_progress(db: TestDb, proc: subprocess.Popen, at_least: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = await rows_done(db)
        if done >= at_least:
            return done
        assert proc.poll() is None, f"backfilld exited early: {proc.communicate()}"
        await asyncio.sleep(0.05)
    raise AssertionError("no progress within 60 s")


async def rerun_completes_exactly(db: TestDb, cfg: Path, table: str, audit: str) -> None:
    """`run` again: it exits 0, every row is filled, and each was updated exactly once (the audit trigger)."""
    again = backfilld("run", str(cfg))
    assert again.returncode == 0, again.stderr
    assert (await db.q(f"SELECT count(*) FROM {table} WHERE label IS NULL")) == [(0,)]
    assert (await db.q(f"SELECT count(*), count(DISTINCT id) FROM {audit}")) == [(ROWS, ROWS)]


async def test_kill_9_then_resume_skips_nothing_and_writes_nothing_twice(db: TestDb, tmp_path: Path) -> None:
    table, audit = await audited_users(db)
    cfg = write_config(tmp_path / "c.toml", db, table)
    kills = 0
    for at in (1_000, 5_000):  # two crashes at different points, each mid-run
        proc = spawn("run", str(cfg))
        await wait_progress(db, proc, at)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills += 1
        assert await rows_done(db) < ROWS
    done = backfilld("run", str(cfg))
    assert done.returncode == 0, done.stderr
    assert kills == 2

    rows = await db.q(f"SELECT id, name, label FROM {table}")
    assert len(rows) == ROWS
    wrong = [r for r in rows if r[2] != f"{r[1]}#{r[0]}"]
    assert wrong == []
    # the audit trigger saw exactly one update per row: nothing written twice, nothing skipped
    per_row = await db.q(f"SELECT id, count(*) FROM {audit} GROUP BY id HAVING count(*) <> 1")
    assert per_row == []
    assert (await db.q(f"SELECT count(DISTINCT id) FROM {audit}")) == [(ROWS,)]
    status = json.loads(backfilld("status", str(cfg), "--json").stdout)
    assert status[0]["status"] == "completed" and status[0]["rows_done"] == ROWS


async def test_sigterm_finishes_batch_keeps_checkpoint_exits_0(db: TestDb, tmp_path: Path) -> None:
    table, audit = await audited_users(db)
    cfg = write_config(tmp_path / "c.toml", db, table)
    proc = spawn("run", str(cfg))
    await wait_progress(db, proc, 500)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stop_requested" in err and "job_stopped" in err
    stopped_at = await rows_done(db)
    assert 0 < stopped_at < ROWS
    # the checkpoint matches the rows actually written: the batch in flight finished with its checkpoint
    assert (await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL")) == [(stopped_at,)]
    status = json.loads(backfilld("status", str(cfg), "--json").stdout)[0]
    assert status["status"] == "running" and status["last_key"] == [stopped_at]

    await rerun_completes_exactly(db, cfg, table, audit)


@servers
async def test_sigterm_while_the_path_to_the_primary_is_frozen_stops_within_the_deadline_exit_0(
        db: TestDb, tmp_path: Path) -> None:
    """The network path stops forwarding mid-run (tests/harness/faultproxy.py) and then SIGTERM comes: the
    batch in flight cannot finish, so the daemon gives it up at its client deadline (statement_timeout_s 2 s
    plus the 2 s margin here; 66 s by default, inside TimeoutStopSec=90), exits 0, and the checkpoint names
    exactly the rows written (the server rolled the batch back); a second run completes, none written twice."""
    table, audit = await audited_users(db)
    with FaultProxy.for_url(db.url) as proxy:
        cfg = write_config(tmp_path / "c.toml", db, table)
        text = cfg.read_text().replace(f'url = "{db.url}"', f'url = "{proxy.url_for(db.url)}"\n'
                                       "statement_timeout_s = 2\nidle_in_transaction_timeout_s = 1", 1)
        cfg.write_text(text)
        proc = spawn("run", str(cfg))
        await wait_progress(db, proc, 500)
        proxy.freeze()
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    assert proc.returncode == 0, err
    # the batch in flight's client deadline (statement_timeout_s + 2 s margin), then closing its connections
    # (each step bounded by 2 s; a server that does not answer is not asked again), and the process's exit
    assert took < (2 + 2) + 2 + 3, f"the daemon took {took:.1f} s to stop"
    assert "stop_requested" in err and "Traceback" not in err
    stopped_at = await rows_done(db)
    assert 0 < stopped_at < ROWS
    assert (await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL")) == [(stopped_at,)]
    await rerun_completes_exactly(db, write_config(tmp_path / "direct.toml", db, table), table, audit)


@servers
async def test_sigterm_while_the_start_is_retried_exits_0_at_once_having_written_nothing(
        db: TestDb, tmp_path: Path) -> None:
    """The table is locked by another session when the daemon starts (a migration's DDL, LOCK TABLES): the
    preflight gives up each look after lock_timeout_s and retries with backoff; SIGTERM then stops it within a
    couple of seconds, exit 0, nothing written."""
    table, _ = await audited_users(db)
    cfg = write_config(tmp_path / "c.toml", db, table)
    other = TestDb(db.url, db.suffix)
    await other.open()
    tx = other.engine.transaction()
    await tx.__aenter__()
    try:
        await other.x(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE" if db.engine_name == "postgresql"
                      else f"LOCK TABLES {table} WRITE")
        proc = spawn("run", str(cfg))
        await asyncio.sleep(3.0)   # start-up, and a few looks that gave up after lock_timeout_s (0.5 s)
        assert proc.poll() is None, proc.communicate()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if db.engine_name == "mysql":
            await other.x("UNLOCK TABLES")
        await tx.__aexit__(None, None, None)
        await other.engine.close()
    assert proc.returncode == 0, err
    assert took < 3.0, f"the daemon took {took:.1f} s to stop"
    assert "batch_retry" in err and "lock_timeout" in err, "the start was not being retried"
    assert "Traceback" not in err
    assert (await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL")) == [(0,)]


async def test_first_signal_waits_for_the_batch_second_exits_at_once(db: TestDb, tmp_path: Path) -> None:
    table, _ = await audited_users(db)
    cfg = write_config(tmp_path / "c.toml", db, table, batch=50)
    # skip_locked = false: the batch must wait for the held row (by default it passes over it)
    text = cfg.read_text().replace('url = "', 'lock_timeout_s = 20\nskip_locked = false\nurl = "', 1)
    cfg.write_text(text)
    # another session holds a lock that a later batch needs (SQLite: the database's write lock, taken once the
    # daemon has made progress; the servers: the last row's lock, taken before the daemon can get there)
    holder = TestDb(db.url, db.suffix)
    await holder.open()
    tx = holder.engine.transaction()
    if db.engine_name == "sqlite":
        proc = spawn("run", str(cfg))
        await wait_progress(db, proc, 100)
    await tx.__aenter__()
    try:
        await holder.x(f"UPDATE {table} SET deleted = deleted WHERE id = ?", ROWS)
        if db.engine_name != "sqlite":
            proc = spawn("run", str(cfg))
            await wait_progress(db, proc, 100)
        before = -1
        while (now := await rows_done(db)) != before:  # until the daemon is blocked
            before = now
            await asyncio.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.5)
        assert proc.poll() is None, "the first signal must let the batch in flight finish"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        assert proc.returncode == 128 + signal.SIGTERM
    finally:
        await tx.__aexit__(None, None, None)
        await holder.engine.close()
    blocked_at = await rows_done(db)
    assert (await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL")) == [(blocked_at,)]
    again = backfilld("run", str(cfg))
    assert again.returncode == 0, again.stderr
    assert (await db.q(f"SELECT count(*) FROM {table} WHERE label IS NULL")) == [(0,)]


async def test_plan_prints_the_privileges_indexes_and_replication_log(db: TestDb, tmp_path: Path) -> None:
    table = await db.users_with(100)
    cfg = write_config(tmp_path / "c.toml", db, table)
    r = backfilld("plan", str(cfg))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    privileges = {"sqlite": "  privileges: SQLite has no users or grants",
                  "postgresql": "  privileges of postgres (checked against the server):",
                  "mysql": "  privileges of root@"}[db.engine_name]
    assert privileges in out and "  indexes:\n    sweep's check for rows left" in out, out
    assert "  replication log (estimates): about " in out and "for 100 rows" in out, out
    as_json = json.loads(backfilld("plan", str(cfg), "--json").stdout)
    assert {"privileges", "indexes", "replication"} <= set(as_json[0])


def test_bad_config_is_a_clear_error_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[database]\nurl = "sqlite:///x.db"\n[[jobs]]\nname = "j"\ntable = "t"\nbatch_size = -5\n'
                   '[jobs.set]\nc = "1"\n')
    r = backfilld("run", str(bad))
    assert r.returncode == 2
    assert "jobs[0].batch_size" in r.stderr and "greater than or equal to 1" in r.stderr
    assert "Traceback" not in r.stderr

    bad.write_text('[database]\nurl = "postgresql://app:hunter2@127.0.0.1/app"\n')
    r = backfilld("plan", str(bad))
    assert r.returncode == 2 and "password_env" in r.stderr and "hunter2" not in r.stderr

    r = backfilld("run", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "no such config file" in r.stderr and "Traceback" not in r.stderr


def test_a_config_without_jobs_or_with_a_missing_sqlite_file_is_bad_input(tmp_path: Path) -> None:
    """Exit 2 (bad input) with a message naming the problem, no traceback, and no file created."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/nothere.db"\n[[jobs]]\nname = "j"\ntable = "t"\n'
                   '[jobs.set]\nc = "1"\n')
    for command in ("run", "plan", "status"):
        r = backfilld(command, str(cfg))
        assert r.returncode == 2, (command, r.stderr)
        assert "nothere.db' does not exist; check database.url" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "nothere.db").exists()
    cfg.write_text('[database]\nurl = "sqlite:///x.db"\n')
    r = backfilld("run", str(cfg))
    assert r.returncode == 2 and "the config has no [[jobs]]" in r.stderr and "Traceback" not in r.stderr


def test_unreachable_database_does_not_leak_the_password(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "postgresql://app@127.0.0.1:9/app"\npassword_env = "BF_TEST_PW"\n'
                   'connect_timeout_s = 2\n[[jobs]]\nname = "j"\ntable = "t"\n[jobs.set]\nc = "1"\n')
    r = backfilld("run", str(cfg), env={"BF_TEST_PW": "s3cret-pw-value"})
    assert r.returncode != 0
    assert "cannot connect" in r.stderr and "127.0.0.1:9" in r.stderr
    assert "s3cret-pw-value" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    r = backfilld("run", str(cfg))
    assert r.returncode == 2 and "BF_TEST_PW" in r.stderr and "not set" in r.stderr


def test_demo_runs_and_checks_every_row(tmp_path: Path) -> None:
    r = backfilld("demo", "--db", str(tmp_path / "demo.sqlite"), "--rows", "20000")
    assert r.returncode == 0, r.stderr
    assert "every row is right" in r.stdout
    assert "0 wrong" in r.stdout
