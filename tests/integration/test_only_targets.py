"""'Only the target columns are ever written', proven on SQLite, PostgreSQL and MariaDB (issue 12).

Before a job, every column of every row except the job's targets is read (the column list comes from the
catalog, generated columns included, so a column added to the table cannot be forgotten); after it, the
same read must return the same values: sources of several types, a DEFAULT, generated columns (STORED, and
VIRTUAL where the engine has them), a side column a user trigger maintains when a source changes, and on
MariaDB columns with ON UPDATE CURRENT_TIMESTAMP, which the server bumps on any UPDATE that changes a row
unless the statement assigns them itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from backfilld import daemon
from backfilld.engines import triggers
from backfilld.errors import SchemaError
from tests.dbutil import CONCAT, GateAt, TestDb

pytestmark = pytest.mark.timeout(120)

JOB = "fill"
ROWS = 600
OLD_TS = datetime(2001, 2, 3, 4, 5, 6)                # the ON UPDATE columns' value from the insert on
OLD_TS6 = datetime(2001, 2, 3, 4, 5, 6, 123456)
NAMES = ["Ada", "Zoë", "José", "Ивана", "李小龍", "محمد", "🦄 emoji", "O'Brien", "50% off", "a\\b", "%s literal"]
CODE = "qty * 2"
# the columns the snapshot must hold on each engine: proof that it lists the catalog, not a hand-made list
MUST_SNAPSHOT = {
    "sqlite": {"gen_v", "gen_s", "side", "note"},
    "postgresql": {"gen_s", "side", "note"},
    "mysql": {"gen_v", "gen_s", "side", "note", "touched", "touched6"},
}


# ---- the snapshot --------------------------------------------------------------------------------------------

async def catalog_columns(db: TestDb, table: str) -> list[str]:
    """Every column of the table, in order, from the catalog (generated and hidden ones too)."""
    if db.engine_name == "postgresql":
        sql = ("SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(?) AND attnum > 0 "
               "AND NOT attisdropped ORDER BY attnum")
    elif db.engine_name == "mysql":
        sql = ("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
               "AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION")
    else:  # table_info leaves generated columns out; table_xinfo lists them
        sql = "SELECT name FROM pragma_table_xinfo(?) ORDER BY cid"
    cols = [str(r[0]) for r in await db.q(sql, table)]
    assert cols, f"no columns found for {table}"
    return cols


@dataclass
class Snapshot:
    columns: list[str]
    rows: dict[tuple[Any, ...], dict[str, Any]]


async def snapshot(db: TestDb, table: str, targets: list[str], key: tuple[str, ...] = ("id",)) -> Snapshot:
    """Every non-target column of every row, by key. Targets are matched without case (as MariaDB and SQLite
    match column names)."""
    skip = {t.lower() for t in targets}
    cols = [c for c in await catalog_columns(db, table) if c.lower() not in skip]
    q = db.engine.dialect.quote
    rows = await db.q(f"SELECT {', '.join(q(c) for c in cols)} FROM {table} ORDER BY {', '.join(q(k) for k in key)}")
    at = [cols.index(k) for k in key]
    return Snapshot(cols, {tuple(r[i] for i in at): dict(zip(cols, r, strict=True)) for r in rows})


def changes(before: Snapshot, after: Snapshot, *, expect: dict[tuple[Any, ...], dict[str, Any]] | None = None,
            ignore: dict[tuple[Any, ...], set[str]] | None = None) -> list[str]:
    """What differs between two snapshots, one line per column and key. `expect` holds the values a test's
    own writes changed; `ignore` columns whose new value the test cannot know (a server clock)."""
    expect, ignore = expect or {}, ignore or {}
    out = []
    if before.columns != after.columns:
        out.append(f"columns changed: {before.columns} -> {after.columns}")
    for key in sorted(before.rows.keys() - after.rows.keys()):
        out.append(f"row {list(key)} disappeared")
    for key in sorted(after.rows.keys() - before.rows.keys()):
        out.append(f"row {list(key)} appeared")
    for key, old in before.rows.items():
        new = after.rows.get(key)
        if new is None:
            continue
        want = {**old, **expect.get(key, {})}
        for col in before.columns:
            if col in ignore.get(key, set()):
                continue
            if col in new and new[col] != want[col]:
                out.append(f"column {col!r} of row {list(key)}: {want[col]!r} -> {new[col]!r}")
    return out


def report(problems: list[str], limit: int = 15) -> str:
    head = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problem(s):\n  {head}{more}"


def wrong_targets(got: dict[int, tuple[Any, ...]], want: dict[int, tuple[Any, ...]],
                  names: tuple[str, ...]) -> list[str]:
    out = []
    for id_ in sorted(want):
        for name, g, w in zip(names, got.get(id_, (None,) * len(names)), want[id_], strict=True):
            if g != w:
                out.append(f"target {name!r} of row [{id_}]: want {w!r}, got {g!r}")
    return out


# ---- the table -----------------------------------------------------------------------------------------------

def name_of(i: int) -> str | None:
    return None if i > 450 and i % 7 == 0 and i % 40 else NAMES[i % len(NAMES)]


def qty_of(i: int) -> int | None:
    return None if i % 11 == 0 else i % 50


def label_of(name: str | None, id_: int) -> str | None:
    return None if name is None else f"{name}#{id_}"


def code_of(qty: int | None) -> int | None:
    return None if qty is None else qty * 2


def prefilled(i: int) -> str | None:
    """What new application code wrote into the target before the job (kept by every non-overwrite job)."""
    return f"new-code-{i}-ü" if i % 40 == 0 else None


def ddl(engine: str) -> str:
    if engine == "postgresql":
        return ("id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(200), qty INTEGER, price NUMERIC(10,2), "
                "ratio DOUBLE PRECISION, born DATE, data BYTEA, flag BOOLEAN, note VARCHAR(50) DEFAULT 'dflt', "
                "gen_s BIGINT GENERATED ALWAYS AS (qty * 3) STORED, side INTEGER NOT NULL DEFAULT 0, "
                "spare VARCHAR(50), label VARCHAR(255), code BIGINT")
    if engine == "mysql":
        return ("id BIGINT NOT NULL PRIMARY KEY, name VARCHAR(200), qty INT, price DECIMAL(10,2), ratio DOUBLE, "
                "born DATE, data VARBINARY(64), flag TINYINT(1), note VARCHAR(50) DEFAULT 'dflt', "
                "gen_v BIGINT AS (qty + 1) VIRTUAL, gen_s BIGINT AS (qty * 3) STORED, "
                "touched TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, "
                "touched6 DATETIME(6) NULL DEFAULT NULL ON UPDATE CURRENT_TIMESTAMP(6), "
                "side INT NOT NULL DEFAULT 0, spare VARCHAR(50), label VARCHAR(255), code BIGINT")
    return ("id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(200), qty INTEGER, price DECIMAL(10,2), ratio REAL, "
            "born DATE, data BLOB, flag INTEGER, note VARCHAR(50) DEFAULT 'dflt', "
            "gen_v INTEGER GENERATED ALWAYS AS (qty + 1) VIRTUAL, "
            "gen_s INTEGER GENERATED ALWAYS AS (qty * 3) STORED, side INTEGER NOT NULL DEFAULT 0, "
            "spare VARCHAR(50), label VARCHAR(255), code INTEGER")


async def side_trigger(db: TestDb, table: str) -> None:
    """A user trigger counting, in `side`, the updates that write a source (name or qty). PostgreSQL and
    SQLite fire it whenever a statement's SET names a source, even to its own value; MariaDB when one changes."""
    trg = db.name("side_trg")
    if db.engine_name == "postgresql":
        await db.engine.execute(f"CREATE FUNCTION {trg}() RETURNS trigger LANGUAGE plpgsql AS "
                                "$$ BEGIN NEW.side := OLD.side + 1; RETURN NEW; END $$")
        db.functions.append(trg)
        await db.engine.execute(f"CREATE TRIGGER {trg} BEFORE UPDATE OF name, qty ON {table} FOR EACH ROW "
                                f"EXECUTE FUNCTION {trg}()")
    elif db.engine_name == "mysql":
        await db.engine.execute(f"CREATE TRIGGER {trg} BEFORE UPDATE ON {table} FOR EACH ROW BEGIN "
                                "IF NOT (NEW.name <=> OLD.name) OR NOT (NEW.qty <=> OLD.qty) THEN "
                                "SET NEW.side = OLD.side + 1; END IF; END")
    else:
        await db.engine.execute(f"CREATE TRIGGER {trg} AFTER UPDATE OF name, qty ON {table} BEGIN "
                                f"UPDATE {table} SET side = side + 1 WHERE id = NEW.id; END")


async def wide_table(db: TestDb, *, label: Any = prefilled, code: Any = lambda i: None) -> str:  # noqa: ANN401
    """ROWS rows of every kind of column; label and code (the targets) as the callables say."""
    table = await db.create("wide", ddl(db.engine_name))
    e = db.engine_name
    cols = ["id", "name", "qty", "price", "ratio", "born", "data", "flag", "label", "code"]
    if e == "mysql":
        cols += ["touched", "touched6"]
    rows = []
    for i in range(1, ROWS + 1):
        price = Decimal(f"{i}.{i % 100:02d}")
        born = date(2000, 1, 1) + timedelta(days=i)
        row: list[Any] = [i, name_of(i), qty_of(i), float(price) if e == "sqlite" else price, i / 8,
                          born.isoformat() if e == "sqlite" else born, bytes([i % 256, 0, 255, 10]),
                          bool(i % 2) if e == "postgresql" else i % 2, label(i), code(i)]
        if e == "mysql":
            row += [OLD_TS, OLD_TS6]
        rows.append(tuple(row))
    await db.many(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})", rows)
    await side_trigger(db, table)
    return table


async def targets_of(db: TestDb, table: str, *cols: str) -> dict[int, tuple[Any, ...]]:
    return {int(r[0]): tuple(r[1:]) for r in await db.q(f"SELECT id, {', '.join(cols)} FROM {table}")}


def old_times_kept(db: TestDb, snap: Snapshot, skip: frozenset[int] | set[int] = frozenset()) -> list[str]:
    """The ON UPDATE columns still hold the insert's fixed time (said apart from the snapshot diff, for the
    reader of a failure)."""
    if db.engine_name != "mysql":
        return []
    bumped = [k[0] for k, r in snap.rows.items()
              if k[0] not in skip and (r["touched"], r["touched6"]) != (OLD_TS, OLD_TS6)]
    return [f"ON UPDATE columns bumped on {len(bumped)} rows, first {bumped[:5]}"] if bumped else []


def fill_job(table: str, engine: str, **kw: Any) -> dict[str, Any]:  # noqa: ANN401
    return {"name": JOB, "table": table, "batch_size": 20, "set": {"label": {engine: CONCAT[engine]}}, **kw}


# many small batches, so that a job's writes are spread over many statements and, on the servers, two workers
THROTTLE = {"min_batch": 10, "max_batch": 30}


def check_snapshot_lists_everything(db: TestDb, snap: Snapshot) -> None:
    assert MUST_SNAPSHOT[db.engine_name] <= set(snap.columns), snap.columns


async def test_the_snapshot_sees_a_changed_column(db: TestDb) -> None:
    """The check itself: a change to a source (and so to the generated columns and the side counter), named
    with its column and key."""
    table = await wide_table(db)
    before = await snapshot(db, table, ["label"])
    check_snapshot_lists_everything(db, before)
    await db.x(f"UPDATE {table} SET qty = 1000 WHERE id = 7")
    found = changes(before, await snapshot(db, table, ["label"]))
    assert "column 'qty' of row [7]: 7 -> 1000" in found
    assert {"gen_s", "side"} <= {line.split("'")[1] for line in found}, found
    assert all(line.endswith(tuple("0123456789)")) and "row [7]" in line for line in found), found


# ---- the jobs ------------------------------------------------------------------------------------------------

async def test_fill_job_writes_only_its_target(db: TestDb) -> None:
    table = await wide_table(db)
    before = await snapshot(db, table, ["label"])
    check_snapshot_lists_everything(db, before)
    batches = []
    [state] = await daemon.run(db.config([fill_job(table, db.engine_name)], throttle=THROTTLE), daemon.RunOptions(),
                               on_batch=lambda _job, result: batches.append(result))
    assert len(batches) >= 15  # many statements, each a chance to write what it should not
    after = await snapshot(db, table, ["label"])
    want = {i: (prefilled(i) or label_of(name_of(i), i),) for i in range(1, ROWS + 1)}
    problems = changes(before, after) + old_times_kept(db, after)
    problems += wrong_targets(await targets_of(db, table, "label"), want, ("label",))
    assert state.status == "completed"
    assert not problems, report(problems)
    assert state.rows_done == sum(1 for i in range(1, ROWS + 1) if not prefilled(i) and name_of(i) is not None)


async def test_overwrite_job_writes_only_its_targets(db: TestDb) -> None:
    """Some targets hold wrong values, some the right ones, some none: all end as the expressions say."""
    def label(i: int) -> str | None:
        if name_of(i) is None:
            return None
        return [None, f"wrong-{i}", label_of(name_of(i), i)][i % 3]

    def code(i: int) -> int | None:
        if qty_of(i) is None:
            return None
        return [code_of(qty_of(i)), None, -i, 10 ** 9][i % 4]

    table = await wide_table(db, label=label, code=code)
    before = await snapshot(db, table, ["label", "code"])
    cfg = db.config([fill_job(table, db.engine_name, overwrite=True,
                              set={"label": {db.engine_name: CONCAT[db.engine_name]}, "code": CODE})],
                    throttle=THROTTLE)
    [state] = await daemon.run(cfg, daemon.RunOptions())
    after = await snapshot(db, table, ["label", "code"])
    want = {i: (label_of(name_of(i), i), code_of(qty_of(i))) for i in range(1, ROWS + 1)}
    problems = changes(before, after) + old_times_kept(db, after)
    problems += wrong_targets(await targets_of(db, table, "label", "code"), want, ("label", "code"))
    assert state.status == "completed"
    assert not problems, report(problems)


async def test_verify_fix_writes_only_the_target(db: TestDb) -> None:
    """verify --fix repairs wrong and missing targets; nothing else of any row moves. The targets start as
    the expression computes them (in Python, not by a job, so that this test proves verify alone), then some
    are broken as a buggy application would break them."""
    wrong = {i for i in range(1, ROWS + 1, 13) if name_of(i) is not None}
    missing = {i for i in range(5, ROWS + 1, 19) if name_of(i) is not None} - wrong

    def label(i: int) -> str | None:
        return f"WRONG {i}" if i in wrong else None if i in missing else label_of(name_of(i), i)

    table = await wide_table(db, label=label)
    cfg = db.config([fill_job(table, db.engine_name)], throttle=THROTTLE)
    before = await snapshot(db, table, ["label"])
    [found] = await daemon.verify(cfg, None, fix=True)
    assert (found.wrong, found.missing, found.fixed) == (len(wrong), len(missing), len(wrong) + len(missing))
    after = await snapshot(db, table, ["label"])
    want = {i: (label_of(name_of(i), i),) for i in range(1, ROWS + 1)}
    problems = changes(before, after) + old_times_kept(db, after)
    problems += wrong_targets(await targets_of(db, table, "label"), want, ("label",))
    assert not problems, report(problems)
    [again] = await daemon.verify(cfg, None, fix=False)
    assert again.clean


def label_and_code(row: dict[str, Any]) -> dict[str, Any]:
    """The Python transform of test_transform_job_writes_only_its_targets."""
    name, qty = row["name"], row["qty"]
    return {"label": None if name is None else f"{name}/{qty}", "code": code_of(qty)}


async def test_transform_job_writes_only_its_targets(db: TestDb) -> None:
    table = await wide_table(db)
    before = await snapshot(db, table, ["label", "code"])
    cfg = db.config([{"name": JOB, "table": table, "batch_size": 20,
                      "transform": f"{__name__}:label_and_code", "sources": ["name", "qty"],
                      "targets": ["label", "code"]}], throttle=THROTTLE)
    [state] = await daemon.run(cfg, daemon.RunOptions())
    after = await snapshot(db, table, ["label", "code"])
    want = {i: (prefilled(i) or (None if name_of(i) is None else f"{name_of(i)}/{qty_of(i)}"), code_of(qty_of(i)))
            for i in range(1, ROWS + 1)}
    problems = changes(before, after) + old_times_kept(db, after)
    problems += wrong_targets(await targets_of(db, table, "label", "code"), want, ("label", "code"))
    assert state.status == "completed"
    assert not problems, report(problems)


async def test_job_with_sync_triggers_and_a_writer_changes_only_what_the_writer_wrote(db: TestDb) -> None:
    """backfilld's sync triggers installed, the application updates sources mid-run (rows the job has filled
    and rows it has not reached): a written row's name, side counter (and on MariaDB its ON UPDATE columns,
    which the application's own UPDATE bumps) change; nothing else of any row does."""
    table = await wide_table(db)
    cfg = db.config([fill_job(table, db.engine_name)], throttle=THROTTLE)
    if db.engine_name == "postgresql":
        db.functions.append(triggers.trigger_names(table, JOB).function)
    await daemon.triggers(cfg, JOB, "install")
    before = await snapshot(db, table, ["label"])
    writer = TestDb(db.url, db.suffix)
    await writer.open()
    names: dict[int, str] = {}
    writes: dict[int, int] = {}

    def writes_at(ids: list[int], tag: str) -> Any:  # noqa: ANN401
        async def write() -> None:
            for i in ids:
                names[i] = f"{tag} {i} ü"
                writes[i] = writes.get(i, 0) + 1
                await writer.x(f"UPDATE {table} SET name = ? WHERE id = ?", names[i], i)
        return write

    ahead = [i for i in range(560, ROWS + 1, 3) if not prefilled(i)]
    behind = [i for i in range(1, 40, 4) if not prefilled(i)]
    gate = GateAt({3: writes_at(ahead, "ahead"), 10: writes_at(behind, "behind"), 14: writes_at(ahead[:4], "again")})
    try:
        [state] = await daemon.run(cfg, daemon.RunOptions(), gate=gate)
    finally:
        await writer.engine.close()
    assert state.status == "completed"
    assert gate.calls >= 14
    after = await snapshot(db, table, ["label"])
    expect = {(i,): {"name": n, "side": before.rows[(i,)]["side"] + writes[i]} for i, n in names.items()}
    ignore = {(i,): {"touched", "touched6"} for i in names} if db.engine_name == "mysql" else {}
    problems = changes(before, after, expect=expect, ignore=ignore) + old_times_kept(db, after, skip=set(names))
    want = {i: (prefilled(i) or label_of(names.get(i, name_of(i)), i),) for i in range(1, ROWS + 1)}
    problems += wrong_targets(await targets_of(db, table, "label"), want, ("label",))
    assert not problems, report(problems)


# ---- a generated column is never a target --------------------------------------------------------------------

def generated_targets(engine: str) -> list[str]:
    return ["gen_s"] if engine == "postgresql" else ["gen_s", "gen_v"]  # PostgreSQL 15 has no VIRTUAL


async def test_a_generated_target_is_refused_before_anything_runs(db: TestDb) -> None:
    table = await wide_table(db)
    before = await snapshot(db, table, [])
    for target in generated_targets(db.engine_name):
        cfg = db.config([{"name": JOB, "table": table, "set": {target: "qty"}}])
        with pytest.raises(SchemaError, match="(?i)generated") as err:
            await daemon.run(cfg, daemon.RunOptions())
        assert target in str(err.value)
        with pytest.raises(SchemaError, match="(?i)generated"):
            await daemon.plan(cfg)
    problems = changes(before, await snapshot(db, table, []))
    assert not problems, report(problems)
    # nothing written: not even the state table
    with pytest.raises(Exception):  # noqa: B017 - any engine's "no such table"
        await db.q(f"SELECT count(*) FROM {db.state_table}")


def backfilld_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backfilld", *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))


async def test_the_cli_refuses_a_generated_target_with_exit_2(db: TestDb, tmp_path: Path) -> None:
    table = await wide_table(db)
    before = await snapshot(db, table, [])
    db.created.append(db.state_table)
    wrong: list[str] = []
    for target in generated_targets(db.engine_name):
        cfg = tmp_path / f"{target}.toml"
        cfg.write_text(f'[database]\nurl = "{db.url}"\n\n[state]\ntable = "{db.state_table}"\n\n'
                       '[logging]\nformat = "json"\n\n[metrics]\nlisten = ""\n\n'
                       f'[[jobs]]\nname = "{JOB}"\ntable = "{table}"\n[jobs.set]\n{target} = "qty"\n',
                       encoding="utf-8")
        for command in ("plan", "run"):
            r = backfilld_cli(command, str(cfg))
            if r.returncode != 2 or "generated" not in r.stderr.lower() or target not in r.stderr \
                    or "Traceback" in r.stderr:
                wrong.append(f"backfilld {command} with target {target} exited {r.returncode}, stderr: "
                             f"{r.stderr.strip()[-600:]!r}, stdout: {r.stdout.strip()[:200]!r}")
    assert not wrong, "\n".join(wrong)
    problems = changes(before, await snapshot(db, table, []))
    assert not problems, report(problems)
    with pytest.raises(Exception):  # noqa: B017 - nothing written, not even the state table
        await db.q(f"SELECT count(*) FROM {db.state_table}")


# ---- column names in another case than the catalog's (MariaDB, SQLite) --------------------------------------

def upper_label(row: dict[str, Any]) -> tuple[Any]:
    """A transform that does not care how the job spells its sources."""
    low = {k.lower(): v for k, v in row.items()}
    return (None if low["name"] is None else f"{low['name']}/{low['qty']}",)


SPELLINGS = {
    "key": {"key": ["ID"], "set": "label"},
    "target": {"set": "LABEL"},
    "key_and_target": {"key": ["ID"], "set": "LABEL"},
    "transform": {"transform": ["NAME", "QTY"], "targets": ["LABEL"]},
    "transform_and_key": {"key": ["ID"], "transform": ["NAME", "QTY"], "targets": ["LABEL"]},
}


@pytest.mark.parametrize("engine_name", ["sqlite", "mysql"], indirect=True)
@pytest.mark.parametrize("spelling", list(SPELLINGS))
async def test_names_in_another_case_work_like_the_catalogs(db: TestDb, spelling: str) -> None:
    i_ = db.int_type()
    table = await db.create("ci", f"id {i_} NOT NULL PRIMARY KEY, name VARCHAR(200), qty {i_}, label VARCHAR(255), "
                                  "note VARCHAR(50) DEFAULT 'dflt'")
    await db.many(f"INSERT INTO {table} (id, name, qty) VALUES (?, ?, ?)",
                  [(i, name_of(i), qty_of(i)) for i in range(1, 301)])
    spec = SPELLINGS[spelling]
    job: dict[str, Any] = {"name": "ci", "table": table, "batch_size": 20}
    if "key" in spec:
        job["key"] = spec["key"]
    if "transform" in spec:
        job |= {"transform": f"{__name__}:upper_label", "sources": spec["transform"], "targets": spec["targets"]}
        want = {i: (None if name_of(i) is None else f"{name_of(i)}/{qty_of(i)}",) for i in range(1, 301)}
    else:
        job["set"] = {spec["set"]: {db.engine_name: CONCAT[db.engine_name]}}
        want = {i: (label_of(name_of(i), i),) for i in range(1, 301)}
    before = await snapshot(db, table, ["label"])
    [state] = await daemon.run(db.config([job], throttle=THROTTLE), daemon.RunOptions())
    assert state.status == "completed"
    assert state.rows_done == sum(1 for v in want.values() if v[0] is not None)
    problems = changes(before, await snapshot(db, table, ["label"]))
    problems += wrong_targets(await targets_of(db, table, "label"), want, ("label",))
    assert not problems, report(problems)
