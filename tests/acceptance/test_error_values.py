"""A row's value from a failing expression stays out of what backfilld shows, on every engine: the state table's
error column, the log (stderr of `backfilld run`) and `backfilld status` name the error's code and the batch's
keys, never the value the database quoted (a cast of it that failed, a duplicate of it, the row a constraint
refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.test_cli import backfilld
from tests.dbutil import TestDb

SECRET = "S3cr3t-250"   # row 250's name: whatever the database says of it must not be shown
RANGE = "the batch after key [200] up to key [300]"

# (expression, what the error names): the cast of row 250's name fails
CAST = {"postgresql": ("CASE WHEN id = 250 THEN (name::int)::text ELSE name END",
                       "22P02: invalid input syntax for type integer: (value not shown)"),
        "mysql": ("CASE WHEN id = 250 THEN CAST(name AS SIGNED) ELSE name END",
                  "1292: Truncated incorrect INTEGER value: (value not shown)"),
        "sqlite": ("CASE WHEN id = 250 THEN json_extract(name, '$') ELSE name END", "SQLite: malformed JSON")}
# row 250's name is already row 1's label, which is unique: PostgreSQL's DETAIL would say Key (label)=(...)
DUPLICATE = {"postgresql": "23505: duplicate key value violates unique constraint",
             "mysql": "1062: Duplicate entry (value not shown) for key",
             "sqlite": "UNIQUE constraint failed"}


def config(path: Path, db: TestDb, table: str, expr: str) -> Path:
    path.write_text(f"""
[database]
url = "{db.url}"
[state]
table = "{db.state_table}"
[logging]
format = "json"
level = "debug"
[metrics]
listen = ""
[throttle]
min_batch = 100
max_batch = 100
[[jobs]]
name = "j"
table = "{table}"
batch_size = 100
[jobs.set]
label = "{expr}"
""", encoding="utf-8")
    db.created.append(db.state_table)
    return path


@pytest.mark.parametrize("kind", ["cast", "duplicate"])
async def test_the_value_is_not_shown_the_keys_and_the_code_are(db: TestDb, tmp_path: Path, kind: str) -> None:
    table = await db.users_with(400)
    await db.x(f"UPDATE {table} SET name = ? WHERE id = 250", SECRET)
    if kind == "duplicate":
        await db.x(f"UPDATE {table} SET label = ? WHERE id = 1", SECRET)
        await db.engine.execute(f"CREATE UNIQUE INDEX {db.name('ulabel')} ON {table} (label)")
        expr, said = "name", DUPLICATE[db.engine_name]
    else:
        expr, said = CAST[db.engine_name]
    cfg = config(tmp_path / "backfilld.toml", db, table, expr)

    run = backfilld("run", str(cfg))
    assert run.returncode == 1, run.stderr
    assert SECRET not in run.stderr and SECRET not in run.stdout
    lines = run.stderr.splitlines()   # JSON lines, then the CLI's last word (backfilld: error: ...)
    assert lines[-1].startswith("backfilld: error: job 'j' failed") and RANGE in lines[-1], lines[-1]
    [failed] = [e for e in map(json.loads, lines[:-1]) if e["event"] == "job_failed"]
    assert failed["error"].startswith(f"{RANGE}: ") and said in failed["error"], failed

    [(error, last_key)] = await db.q(f"SELECT error, last_key FROM {db.state_table}")
    assert SECRET not in error and error.startswith(f"{RANGE}: ") and said in error, error
    assert last_key == "[200]"

    status = backfilld("status", str(cfg))
    assert SECRET not in status.stdout + status.stderr
    assert RANGE in status.stdout and said in status.stdout, status.stdout
    assert await db.q(f"SELECT count(*) FROM {table} WHERE id > 200 AND label IS NOT NULL") == [(0,)]
