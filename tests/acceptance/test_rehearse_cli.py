"""`backfilld rehearse` as a user runs it: a process, its exit codes, its JSON, SIGINT half-way."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.acceptance.test_cli import backfilld, spawn
from tests.conftest import MYSQL_URL, PG_URL, require_server
from tests.dbutil import TestDb

DOMAIN = {"postgresql": "lower(split_part(email, '@', 2))", "mysql": "lower(substring_index(email, '@', -1))",
          "sqlite": "lower(substr(email, instr(email, '@') + 1))"}


def sqlite_app(tmp_path: Path, rows: int = 5_000, *, twice_at: bool = False) -> Path:
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, email_domain TEXT)")
    con.executemany("INSERT INTO users (id, email) VALUES (?, ?)", [(i, f"u{i}@d{i % 3}.org") for i in
                                                                    range(1, rows + 1)])
    if twice_at:
        con.execute("UPDATE users SET email = 'a@b@c.org' WHERE id = ?", (rows,))
    con.commit()
    con.close()
    return db


def config(path: Path, url: str, table: str = "users", target: str = "email_domain", extra: str = "") -> Path:
    forms = ", ".join(f'{e} = "{f}"' for e, f in DOMAIN.items())
    path.write_text(f"""
[database]
url = "{url}"
[logging]
format = "json"
[metrics]
listen = ""
[[jobs]]
name = "domains"
table = "{table}"
{extra}
[jobs.set]
{target} = {{ {forms} }}
""", encoding="utf-8")
    return path


def sqlite_checksum(db: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT * FROM users ORDER BY id").fetchall()
    finally:
        con.close()


def test_nothing_to_report_exits_0_and_writes_nothing(tmp_path: Path) -> None:
    db = sqlite_app(tmp_path)
    before = sqlite_checksum(db)
    proc = backfilld("rehearse", str(config(tmp_path / "c.toml", f"sqlite:///{db}")), "--sample", "500")
    assert proc.returncode == 0, proc.stderr
    assert "nothing to report" in proc.stdout and "Traceback" not in proc.stderr
    assert "per 1,000 rows" in proc.stdout
    assert sqlite_checksum(db) == before
    assert not list(tmp_path.glob("*.lock"))   # no lease taken either


def test_a_disagreement_exits_1_with_the_json_report(tmp_path: Path) -> None:
    db = sqlite_app(tmp_path, twice_at=True)
    before = sqlite_checksum(db)
    proc = backfilld("rehearse", str(config(tmp_path / "c.toml", f"sqlite:///{db}")), "--against", "sqlite",
                     "--against", PG_URL if _reachable(PG_URL) else "sqlite", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["format"] == 1 and report["clean"] is False and report["problems"] >= 1
    [job] = report["jobs"]
    assert job["sample"]["rows"] == 5_000 and job["targets"][0]["null"]["count"] == 0
    against = {a["engine"]: a for a in job["against"]}
    assert against["sqlite"]["targets"][0]["disagree"]["count"] == 0   # SQLite agrees with itself
    if "postgresql" in against:
        [s] = against["postgresql"]["targets"][0]["disagree"]["samples"]
        assert (s["key"], s["real"], s["against"]) == ([5_000], "b@c.org", "b")
    assert job["timing"]["estimated_run_s"] is not None
    assert sqlite_checksum(db) == before


def _reachable(url: str) -> bool:
    try:
        require_server(url)
    except BaseException:  # noqa: BLE001 - pytest's skip and fail are BaseExceptions
        return False
    return True


@pytest.mark.parametrize("args", [["--job", "nope"], ["--sample", "0"], ["--against", "oracle://h/db"],
                                  ["--against", "postgresql://u:hunter2@h/db"]])
def test_bad_input_exits_2_naming_it(tmp_path: Path, args: list[str]) -> None:
    db = sqlite_app(tmp_path, 10)
    proc = backfilld("rehearse", str(config(tmp_path / "c.toml", f"sqlite:///{db}")), *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "backfilld: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr


def test_a_target_that_does_not_exist_exits_2(tmp_path: Path) -> None:
    db = sqlite_app(tmp_path, 10)
    proc = backfilld("rehearse", str(config(tmp_path / "c.toml", f"sqlite:///{db}", target="nope")))
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_help_describes_it() -> None:
    proc = backfilld("rehearse", "--help", env={"COLUMNS": "100"})
    assert proc.returncode == 0
    text = " ".join(proc.stdout.replace("│", " ").split())   # rich's box and line breaks
    for words in ("--sample", "--against", "--json", "--jobs", "sqlite", "rolled back", "Exit 0", "writing nothing"):
        assert words in text, words


async def test_sigint_during_a_comparison_stops_drops_the_scratch_table_and_exits_1(tmp_path: Path) -> None:
    """The comparison against PostgreSQL takes a while (its form of the expression sleeps on every row); SIGINT
    once its scratch table exists: the statement in flight is cancelled, the scratch table is gone, the real table
    (MariaDB) is as it was, exit 1 saying it was interrupted."""
    require_server(PG_URL)
    require_server(MYSQL_URL)
    real = TestDb(MYSQL_URL, uuid.uuid4().hex[:8])
    pg = TestDb(PG_URL, real.suffix)
    await real.open()
    await pg.open()
    try:
        table = await real.create("users", "id BIGINT NOT NULL PRIMARY KEY, email VARCHAR(200), email_domain "
                                           "VARCHAR(100)")
        await real.bulk(table, ("id", "email"), [(i, f"u{i}@d{i % 3}.org") for i in range(1, 3_001)])
        before = await real.q(f"SELECT * FROM {table} ORDER BY id")
        slow = DOMAIN["postgresql"] + " || CAST(pg_sleep(0.005) AS text)"
        cfg = config(tmp_path / "c.toml", MYSQL_URL, table)
        cfg.write_text(cfg.read_text().replace(DOMAIN["postgresql"], slow), encoding="utf-8")
        proc = spawn("rehearse", str(cfg), "--sample", "3000", "--against", PG_URL)
        deadline = time.monotonic() + 60
        temp = "SELECT count(*) FROM pg_class WHERE relname = ? AND relpersistence = 't'"
        while (await pg.q(temp, table)) != [(1,)]:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the scratch table never appeared"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)   # the comparison's statement is running: 3,000 rows of 5 ms
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
        assert proc.returncode == 1, (out, err)
        assert "interrupted" in err and "Traceback" not in err
        assert took < 5, f"took {took:.1f} s to stop"
        assert (await pg.q(temp, table)) == [(0,)]
        assert (await real.q(f"SELECT * FROM {table} ORDER BY id")) == before
    finally:
        if proc_alive := locals().get("proc"):
            if isinstance(proc_alive, subprocess.Popen) and proc_alive.poll() is None:
                proc_alive.kill()
        await pg.engine.close()
        await real.cleanup()


def test_a_jobs_file_is_rehearsed_and_its_errors_name_it(tmp_path: Path) -> None:
    """--jobs FILE, as an extension ships its backfills: its job is rehearsed (the report says where it is defined),
    and one whose target does not exist is bad input naming the file first."""
    db = sqlite_app(tmp_path, 2_000, twice_at=True)
    site = tmp_path / "site.toml"
    site.write_text(f'[database]\nurl = "sqlite:///{db}"\n[logging]\nformat = "json"\n[metrics]\nlisten = ""\n',
                    encoding="utf-8")
    forms = ", ".join(f'{e} = "{f}"' for e, f in DOMAIN.items())
    shipped = tmp_path / "backfills.toml"
    shipped.write_text(f'[package]\nname = "Echo"\nversion = "1.2.0"\n[[jobs]]\nname = "echo_domains"\n'
                       f'table = "users"\n[jobs.set]\nemail_domain = {{ {forms} }}\n', encoding="utf-8")
    proc = backfilld("rehearse", str(site), "--jobs", str(shipped), "--json")
    assert proc.returncode == 0, proc.stderr
    [job] = json.loads(proc.stdout)["jobs"]
    assert job["job"] == "echo_domains"
    assert job["defined_in"] == {"file": str(shipped), "jobs_file": True, "package": "Echo", "version": "1.2.0"}
    text = backfilld("rehearse", str(site), "--jobs", str(shipped))
    assert f"defined in {shipped} (shipped by Echo 1.2.0)" in text.stdout
    shipped.write_text(shipped.read_text().replace("email_domain =", "nope ="), encoding="utf-8")
    bad = backfilld("rehearse", str(site), "--jobs", str(shipped))
    assert bad.returncode == 2 and str(shipped) in bad.stderr and "nope" in bad.stderr, bad.stderr
