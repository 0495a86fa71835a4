"""Jobs files on every engine: the site config names them, and a job's `after` holds in real runs (the dependent
job's first batch commits after its dependency completed; a failed or unfinished dependency keeps it from starting;
one completed in an earlier run counts)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from backfilld import config, daemon
from backfilld.errors import JobFailed
from tests.dbutil import CONCAT, TestDb

ROWS = 600
BATCH = 50   # a dozen batches a job, so that interleaved jobs would show


def site(tmp_path: Path, db: TestDb, jobs_files: list[str]) -> Path:
    """The site config in tmp_path/etc, naming jobs_files (relative to that folder)."""
    path = tmp_path / "etc" / "backfilld.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"jobs_files = {json.dumps(jobs_files)}\n[database]\nurl = {json.dumps(db.url)}\n"
                    f'[state]\ntable = "{db.state_table}"\n[logging]\nlevel = "warning"\nformat = "json"\n'
                    f'[metrics]\nlisten = ""\n[throttle]\nmin_batch = {BATCH}\nmax_batch = {BATCH}\n',
                    encoding="utf-8")
    db.created.append(db.state_table)
    return path


def jobs_file(path: Path, table: str, engine: str, *, dependency: str = "") -> Path:
    """Echo's two phases, the later one first in the file: `shout` reads `label`, which `labels` fills."""
    label = dependency or CONCAT[engine]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""[package]
name = "Echo"
version = "1.2.0"

[[jobs]]
name = "shout"
table = "{table}"
batch_size = {BATCH}
after = ["labels"]
[jobs.set]
shout = "upper(label)"

[[jobs]]
name = "labels"
table = "{table}"
batch_size = {BATCH}
[jobs.set]
label = "{label}"
""", encoding="utf-8")
    return path


async def two_phase_table(db: TestDb) -> str:
    table = await db.create("echo", f"id {db.int_type()} NOT NULL PRIMARY KEY, name VARCHAR(100), "
                                    "label VARCHAR(200), shout VARCHAR(200)")
    await db.many(f"INSERT INTO {table} (id, name) VALUES (?, ?)", [(i, f"n{i}") for i in range(1, ROWS + 1)])
    return table


async def test_a_job_after_another_starts_once_that_one_completed(db: TestDb, tmp_path: Path) -> None:
    table = await two_phase_table(db)
    jobs_file(tmp_path / "etc" / "extensions" / "Echo" / "backfills.toml", table, db.engine_name)
    cfg = config.load(site(tmp_path, db, ["extensions/*/backfills.toml"]))
    assert [j.name for j in cfg.jobs] == ["shout", "labels"] and cfg.job("shout").origin.shipped_by == "Echo 1.2.0"
    batches: list[tuple[str, str]] = []

    def on_batch(job: Any, _result: Any) -> None:
        batches.append((job.name, dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")))

    states = {s.job: s for s in await daemon.run(cfg, daemon.RunOptions(), on_batch=on_batch)}
    assert states["labels"].status == states["shout"].status == "completed"
    names = [name for name, _ in batches]
    first_shout = names.index("shout")
    assert names.count("labels") >= ROWS // BATCH and set(names[:first_shout]) == {"labels"}
    assert "labels" not in names[first_shout:]
    [(finished,)] = await db.q(f"SELECT finished_at FROM {db.state_table} WHERE job = ?", "labels")
    assert dt.datetime.fromisoformat(finished) <= dt.datetime.fromisoformat(batches[first_shout][1])
    # what shows that the order mattered: every row's later-phase value read the earlier phase's
    assert await db.q(f"SELECT count(*) FROM {table} WHERE shout IS NULL OR shout <> upper(label)") == [(0,)]


async def test_a_job_whose_dependency_failed_does_not_start_and_says_why(db: TestDb, tmp_path: Path) -> None:
    table = await db.create("props", f"id {db.int_type()} NOT NULL PRIMARY KEY, pp_value VARCHAR(100), "
                                     "pp_json VARCHAR(200), shout VARCHAR(200)")
    await db.many(f"INSERT INTO {table} (id, pp_value) VALUES (?, ?)",
                  [(i, "!unparsable" if i == 7 else f"k=v{i}") for i in range(1, 101)])
    ext = tmp_path / "ext.toml"
    ext.write_text(f"""
[[jobs]]
name = "shout"
table = "{table}"
after = ["props"]
[jobs.set]
shout = "upper(pp_json)"

[[jobs]]
name = "props"
table = "{table}"
transform = "tests.fixtures.transforms:props_to_json"   # raises on row 7
sources = ["pp_value"]
targets = ["pp_json"]
""", encoding="utf-8")
    cfg = config.load(site(tmp_path, db, []), [ext])
    with pytest.raises(JobFailed) as exc:
        await daemon.run(cfg, daemon.RunOptions())
    assert "job 'shout' did not start: it runs after 'props', which failed in this run" in str(exc.value)
    assert dict(await db.q(f"SELECT job, status FROM {db.state_table}")) == {"props": "failed"}   # none of shout's
    assert await db.q(f"SELECT count(*) FROM {table} WHERE shout IS NOT NULL") == [(0,)]


async def test_a_dependency_completed_in_an_earlier_run_counts_and_one_not_completed_holds_the_job(
        db: TestDb, tmp_path: Path) -> None:
    table = await two_phase_table(db)
    cfg = config.load(site(tmp_path, db, []), [jobs_file(tmp_path / "ext.toml", table, db.engine_name)])
    with pytest.raises(JobFailed) as exc:
        await daemon.run(cfg, daemon.RunOptions(jobs=["shout"]))
    assert ("job 'shout' did not start: it runs after 'labels', which has not completed (not started in "
            f"{db.state_table}); run both together, or 'labels' first") in str(exc.value)
    assert await db.q(f"SELECT count(*) FROM {table} WHERE shout IS NOT NULL") == [(0,)]
    [labels] = await daemon.run(cfg, daemon.RunOptions(jobs=["labels"]))
    assert labels.status == "completed"
    [shout] = await daemon.run(cfg, daemon.RunOptions(jobs=["shout"]))
    assert shout.status == "completed"
    assert await db.q(f"SELECT count(*) FROM {table} WHERE shout IS NULL OR shout <> upper(label)") == [(0,)]
    statuses = [(r["job"], r["status"], r.get("after")) for r in await daemon.status(cfg)]
    assert statuses == [("labels", "completed", None), ("shout", "completed", ["labels"])]
