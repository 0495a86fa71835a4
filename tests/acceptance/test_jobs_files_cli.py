"""Jobs files through the CLI as a user runs it (a process, SQLite): each mistake a clear message naming the file,
job and key, exit 2 and no traceback; a glob matching nothing a warning; relative paths; `after` observed in the
log of a real run; plan and status showing the order."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.test_cli import backfilld

ROWS = 500
BACKFILLD = [sys.executable, "-m", "backfilld"]


def job(name: str, target: str, expr: str, *, after: str = "", extra: str = "") -> str:
    return (f'[[jobs]]\nname = "{name}"\ntable = "t"\nbatch_size = 50\n' + (f'after = ["{after}"]\n' if after else "")
            + extra + f'[jobs.set]\n{target} = "{expr}"\n')


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """tmp_path/etc/backfilld.toml on tmp_path/app.db, naming etc/ext/*/backfills.toml; no jobs of its own."""
    con = sqlite3.connect(tmp_path / "app.db")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, label TEXT, shout TEXT)")
    con.executemany("INSERT INTO t (id, name) VALUES (?, ?)", [(i, f"n{i}") for i in range(1, ROWS + 1)])
    con.commit()
    con.close()
    path = tmp_path / "etc" / "backfilld.toml"
    (path.parent / "ext").mkdir(parents=True)
    path.write_text(f'jobs_files = ["ext/*/backfills.toml"]\n[database]\nurl = "sqlite:///{tmp_path}/app.db"\n'
                    '[metrics]\nlisten = ""\n[logging]\nformat = "json"\nlevel = "debug"\n'
                    "[throttle]\nmin_batch = 50\nmax_batch = 50\n", encoding="utf-8")
    return path


def ext(site: Path, name: str, text: str) -> Path:
    path = site.parent / "ext" / name / "backfills.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


TWO_PHASES = ('[package]\nname = "Echo"\nversion = "1.2.0"\n\n'
              + job("shout", "shout", "upper(label)", after="labels") + job("labels", "label", "name || '#' || id"))


def bad_input(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "backfilld: error: " in r.stderr, r.stderr
    return r.stderr[r.stderr.index("backfilld: error: "):]   # after any warning logged before it


def events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_run_from_another_folder_follows_after_and_plan_and_status_show_the_order(site: Path, tmp_path: Path) -> None:
    ext(site, "Echo", TWO_PHASES)
    r = subprocess.run([*BACKFILLD, "run", str(site.relative_to(tmp_path))], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    log = events(r.stderr)
    order = [e for e in log if e["event"] == "run_order"]
    assert order and order[0]["jobs"] == ["labels", "shout"] and order[0]["after"] == {"shout": ["labels"]}
    done = next(i for i, e in enumerate(log) if e["event"] == "job_completed" and e["job"] == "labels")
    first = next(i for i, e in enumerate(log) if e["event"] == "batch_applied" and e["job"] == "shout")
    assert done < first and not [e for e in log[first:] if e.get("job") == "labels"]
    con = sqlite3.connect(tmp_path / "app.db")
    assert con.execute("SELECT count(*) FROM t WHERE shout IS NULL OR shout <> upper(label)").fetchone() == (0,)
    con.close()

    status = backfilld("status", str(site))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("labels: completed") and lines[1].startswith("shout: completed")
    assert "after=labels" in lines[1] and "package=Echo 1.2.0" in lines[1] and "after=" not in lines[0]
    plan = backfilld("plan", str(site))
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.index("job labels:") < plan.stdout.index("job shout:")
    assert f"  defined in {site.parent}/ext/Echo/backfills.toml (shipped by Echo 1.2.0)\n  runs 2 of 2, once labels " \
           "completed" in plan.stdout
    as_json = json.loads(backfilld("plan", str(site), "--json").stdout)
    assert [(p["job"], p["order"], p["after"], p["defined_in"]["package"]) for p in as_json] == [
        ("labels", 1, [], "Echo"), ("shout", 2, ["labels"], "Echo")]


def test_a_job_whose_dependency_was_never_run_does_not_start_exit_1(site: Path) -> None:
    ext(site, "Echo", TWO_PHASES)
    r = backfilld("run", str(site), "--job", "shout")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "job 'shout' did not start: it runs after 'labels', which has not completed (not started" in r.stderr
    assert [e["reason"] for e in events(r.stderr) if e["event"] == "job_not_started"]
    assert backfilld("run", str(site), "--job", "labels").returncode == 0
    assert backfilld("run", str(site), "--job", "shout").returncode == 0


def test_jobs_given_with_jobs_options_and_a_glob_that_matches_nothing(site: Path, tmp_path: Path) -> None:
    mine = tmp_path / "work" / "mine.toml"
    mine.parent.mkdir()
    mine.write_text(job("labels", "label", "name"), encoding="utf-8")
    r = subprocess.run([*BACKFILLD, "status", str(site), "--jobs", "mine.toml"], cwd=mine.parent,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "labels: not_started\n", r.stderr
    [warning] = [e for e in events(r.stderr) if e["event"] == "jobs_files_unmatched"]
    assert (warning["level"], warning["pattern"], warning["named_by"]) == ("warning", "ext/*/backfills.toml",
                                                                            f"{site}: jobs_files[0]")
    r = backfilld("run", str(site))
    assert "the config has no [[jobs]]" in bad_input(r) and "--jobs FILE" in r.stderr


def test_each_mistake_is_a_clear_error_naming_file_job_and_key(site: Path, tmp_path: Path) -> None:
    a = ext(site, "A", job("same", "label", "name"))
    b = ext(site, "B", '[package]\nname = "B"\n' + job("other", "shout", "1") + job("same", "label", "name"))
    msg = bad_input(backfilld("plan", str(site)))
    assert f"two jobs are named 'same': in {a} (jobs[0]) and in {b} (jobs[1], shipped by B)" in msg

    b.write_text(job("other", "shout", "1", extra="max_retries = -1\n"), encoding="utf-8")
    msg = bad_input(backfilld("run", str(site)))
    assert msg == (f"backfilld: error: {b}: invalid jobs file\n"
                   "  jobs[0].max_retries (job 'other'): Input should be greater than or equal to 0\n")

    b.write_text('[throttle]\nmax_lag_s = 5\n' + job("other", "shout", "1"), encoding="utf-8")
    msg = bad_input(backfilld("status", str(site)))
    assert f"{b}: invalid jobs file\n  [throttle]: does not belong in a jobs file" in msg

    b.write_text(job("other", "shout", "1", after="nobody"), encoding="utf-8")
    msg = bad_input(backfilld("verify", str(site)))
    assert f"{b}: jobs[0].after (job 'other'): names 'nobody', which is no job" in msg

    b.unlink()
    msg = bad_input(backfilld("run", str(site), "--jobs", str(tmp_path / "gone.toml")))
    assert f"--jobs: {tmp_path}/gone.toml: no such jobs file" in msg
    site.write_text(site.read_text().replace("ext/*/backfills.toml", "ext/B/backfills.toml"), encoding="utf-8")
    msg = bad_input(backfilld("plan", str(site)))
    assert msg == f"backfilld: error: {site}: jobs_files[0]: {b}: no such jobs file\n"


def test_an_error_found_at_the_database_about_a_jobs_file_job_names_its_file(site: Path) -> None:
    e = ext(site, "Echo", '[package]\nname = "Echo"\nversion = "1.2.0"\n' + job("labels", "nosuch", "name"))
    msg = bad_input(backfilld("run", str(site)))
    assert msg.startswith(f"backfilld: error: {e}: jobs[0] (Echo 1.2.0): job 'labels': "), msg
    assert "nosuch" in msg


def test_help_describes_jobs_files() -> None:
    for command in ("run", "plan", "verify", "status"):
        r = backfilld(command, "--help")
        assert r.returncode == 0 and "--jobs" in r.stdout and "jobs file" in r.stdout, (command, r.stdout)
    assert "after" in backfilld("run", "--help").stdout
