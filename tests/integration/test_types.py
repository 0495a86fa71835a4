"""The type matrix (issue 12): each column type an engine offers, as a key (alone and in a composite key), as a
source and as a target, through a job and through verify.

Every case checks what a user would see: the job completes; each row's target equals what one plain
`UPDATE t SET want = (expr)` stores into a twin column of the same type (an independent query, not
backfilld's code); each row that gets a value was updated exactly once (an audit trigger counts); verify
checks every row and finds nothing wrong. A key type backfilld cannot page by exactly must be refused at
preflight: SchemaError naming the column, nothing written. A hang is a failure, not a wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiosqlite
import pytest

from backfilld import daemon
from backfilld.errors import JobFailed, SchemaError
from backfilld.verify import Verifier
from tests.dbutil import TestDb
from tests.integration.typecases import DIFFS, FILLS, INT, KEY_EXPR, KEYS, SHOW, TEXT, DiffCase, FillCase, KeyCase, Lit

# a case is a few rows: a run or a verify takes well under a second; one that takes this long (s) hangs
HANG_S = 10
pytestmark = pytest.mark.timeout(60)


def open_sqlite_connections() -> list[aiosqlite.Connection]:
    return [c for c in gc.get_objects() if isinstance(c, aiosqlite.Connection) and c._thread.is_alive()]


@pytest.fixture(autouse=True)
def no_sqlite_connection_left_open(engine_name: str) -> Any:
    """After the test and its database's cleanup: every SQLite connection is closed. One left open keeps its
    worker thread (not a daemon thread) waiting forever, so the test process could never exit: such a
    connection is stopped here, and the test fails instead."""
    yield
    if engine_name != "sqlite":
        return
    deadline = time.monotonic() + 2   # a closed connection's thread takes a moment to end (s)
    while (left := open_sqlite_connections()) and time.monotonic() < deadline:
        time.sleep(0.02)
    for conn in left:
        conn.stop()
    assert not left, f"{len(left)} SQLite connection(s) left open after the run (and its lookahead) ended"


def cases(table: dict[str, list[Any]], *, composite: bool | None = None) -> list[Any]:
    """One parameter per engine and case, so that each engine's cases run only on that engine."""
    out = []
    for engine, engine_cases in table.items():
        for case in engine_cases:
            if composite is False and getattr(case, "composite_only", False):
                continue
            out.append(pytest.param(engine, case, id=f"{engine}-{case.name}"))
    return out


async def within(coro: Coroutine[Any, Any, Any], what: str) -> Any:
    try:
        return await asyncio.wait_for(coro, HANG_S)
    except TimeoutError:
        pytest.fail(f"{what} did not finish within {HANG_S} s: it hangs")


# What a case's "{enum}" or "{ci}" stands for (PostgreSQL): created for the test under a name of its own
MADE_TYPES = {
    "enum": ("CREATE TYPE {name} AS ENUM ('m', 'b', 'z', 'a')", "DROP TYPE IF EXISTS {name} CASCADE"),
    "ci": ("CREATE COLLATION {name} (provider = icu, locale = 'und-u-ks-level2', deterministic = false)",
           "DROP COLLATION IF EXISTS {name} CASCADE"),
}


@contextlib.asynccontextmanager
async def types_for(db: TestDb, *texts: str) -> AsyncIterator[Callable[[str], str]]:
    """A substitution for "{enum}" and "{ci}" in a case's types and expressions, creating what they name."""
    made: dict[str, str] = {}

    def sub(text: str) -> str:
        for placeholder, name in made.items():
            text = text.replace("{" + placeholder + "}", name)
        return text

    try:
        for placeholder, (create_sql, _) in MADE_TYPES.items():
            if any("{" + placeholder + "}" in t for t in texts):
                made[placeholder] = db.name(placeholder)
                await db.engine.execute(create_sql.format(name=made[placeholder]))
        yield sub
    finally:
        for placeholder, name in made.items():
            await db.engine.execute(MADE_TYPES[placeholder][1].format(name=name))


async def create(db: TestDb, base: str, columns: str, options: str = "") -> str:
    table = db.name(base)
    await db.engine.execute(f"CREATE TABLE {table} ({columns}){options}{db.table_suffix()}")
    db.created.append(table)
    return table


def value_sql(db: TestDb, value: Any, column_type: str) -> tuple[str, tuple[Any, ...]]:
    """How a case's value goes into the INSERT: a Lit as SQL; on PostgreSQL its text cast to the column's type;
    elsewhere the value as a parameter."""
    if isinstance(value, Lit):
        return value.sql, ()
    if db.engine_name == "postgresql":
        return f"CAST(CAST(? AS text) AS {column_type.split(' COLLATE')[0]})", (value,)
    return "?", (value,)


async def insert(db: TestDb, table: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]], typed: str) -> None:
    """Rows whose first value is of the case's type (`typed`), the rest bound as they are."""
    if db.engine_name == "mysql":
        # zero dates ('0000-00-00', '2024-00-00') need a mode without NO_ZERO_DATE / NO_ZERO_IN_DATE; strict,
        # so that a value the column cannot hold fails here instead of being stored as something else
        await db.engine.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
    try:
        async with db.engine.transaction():
            for first, *rest in rows:
                sql, args = value_sql(db, first, typed)
                await db.x(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({sql}{', ?' * len(rest)})",
                           *args, *rest)
    finally:
        if db.engine_name == "mysql":
            await db.engine.execute("SET SESSION sql_mode = DEFAULT")


def same(a: Any, b: Any) -> bool:
    """Equal and of one type; NaN equals NaN (a float or a numeric NaN stored twice is the same value)."""
    return type(a) is type(b) and (a == b or repr(a) == repr(b))


async def state_table_exists(db: TestDb) -> bool:
    try:
        await db.q(f"SELECT count(*) FROM {db.state_table}")
    except Exception:  # noqa: BLE001 - any engine's "no such table"
        return False
    return True


async def run_and_check(db: TestDb, table: str, job: dict[str, Any], batch: int, values: dict[int, Any],
                        key_is_id: bool = False) -> None:
    """Run the job (twin column `want` already holds the independent result), then check every row.
    values: each row's id -> the case's value in it."""
    audit = await db.audit_updates(table)
    cfg = db.config([{**job, "batch_size": batch}], throttle={"min_batch": 1, "max_batch": batch})
    batches: list[tuple[int, int]] = []
    [state] = await within(daemon.run(cfg, daemon.RunOptions(), on_batch=lambda _j, b: batches.append(
        (b.rows, b.scanned))), "the job")
    assert state.status == "completed", state.error

    # PostgreSQL: as text, which is exact for a column's own type (and independent of the codecs backfilld reads
    # dates and times with)
    shown = "{}::text" if db.engine_name == "postgresql" else "{}"
    rows = await db.q(f"SELECT id, {shown.format('dst')}, {shown.format('want')} FROM {table}")
    assert len(rows) == len(values), "rows appeared or vanished"
    wrong = [(values[i], dst, want) for i, dst, want in rows if not same(dst, want)]
    assert not wrong, f"(value, written, expected) where the job wrote something else: {wrong}"
    valued = sorted(i for i, _, want in rows if want is not None)
    assert valued, "the case's expression is NULL on every row: it tests nothing"
    touched = dict(await db.q(f"SELECT id, count(*) FROM {audit} GROUP BY id"))
    assert {values[i]: n for i, n in touched.items() if n != 1} == {}, "rows updated more than once"
    assert sorted(touched) == valued, f"rows never updated: {[values[i] for i in set(valued) - set(touched)]}"
    assert state.rows_done == len(valued)
    # a batch writes the keys its range lookup counted, no more (its size is what keeps it short)
    assert all(written <= scanned for written, scanned in batches), f"(rows written, keys counted): {batches}"

    # verify with other batch boundaries than the job's (3 keys: the last range is a partial one)
    vcfg = db.config([{**job, "batch_size": 3}], throttle={"min_batch": 3, "max_batch": 3})
    clean = await within(Verifier(db.engine, vcfg, vcfg.jobs[0]).run(), "verify")
    assert (clean.complete, clean.missing, clean.wrong) == (True, 0, 0), \
        f"verify of right rows: {clean.as_dict()}" + (
            f"; values of the rows said wrong: {[values[k[0]] for k in clean.sample_wrong]}" if key_is_id else "")
    # it looks at every row: with every target emptied, each row that should have a value is missing
    await db.engine.execute(f"UPDATE {table} SET dst = NULL")
    emptied = await within(Verifier(db.engine, vcfg, vcfg.jobs[0]).run(), "verify")
    assert emptied.missing == len(valued), f"verify of emptied targets skipped rows: {emptied.as_dict()}"
    assert (clean.rows_checked, emptied.rows_checked) == (len(values), len(values)), \
        f"verify's rows_checked (right rows, emptied targets) is not the {len(values)} rows: " \
        f"{clean.rows_checked}, {emptied.rows_checked}"


async def check_key(db: TestDb, case: KeyCase, *, composite: bool) -> None:
    e = db.engine_name
    async with types_for(db, case.type) as sub:
        ktype = sub(case.type)
        pk = "k, n" if composite else "k"
        table = await create(db, "tk", f"k {ktype} NOT NULL, n {INT[e]} NOT NULL, id {INT[e]} NOT NULL, "
                                       f"src {TEXT[e]}, dst {TEXT[e]}, want {TEXT[e]}, PRIMARY KEY ({pk})",
                             case.options)
        rows, values = [], {}
        for value in case.values:
            for n in ((2, 1) if composite else (1,)):
                i = len(rows) + 1
                rows.append((value, n, i, f"s{i}-ü"))
                values[i] = (value, n) if composite else value
        await insert(db, table, ("k", "n", "id", "src"), rows, ktype)
        expr = KEY_EXPR[e].format(show=case.show or SHOW[e])
        await db.engine.execute(f"UPDATE {table} SET want = ({expr})")
        job = {"name": "types", "table": table, "key": pk.split(", "), "set": {"dst": expr}}
        if case.refuse:
            await check_refused(db, table, job)
        elif case.fails:
            await check_fails(db, table, job)
        else:
            await run_and_check(db, table, job, 3 if composite else 1, values)


async def check_fails(db: TestDb, table: str, job: dict[str, Any]) -> None:
    cfg = db.config([job], throttle={"min_batch": 1, "max_batch": 1})
    with pytest.raises((SchemaError, JobFailed)) as err:
        await within(daemon.run(cfg, daemon.RunOptions()), "the job")
    assert re.search(r"cannot be paged|does not round-trip|cannot be read", str(err.value)), str(err.value)
    assert re.search(r"[`'\"]k[`'\"]|key walk", str(err.value)), f"the error names neither k nor the walk: {err.value}"
    wrong = await db.q(f"SELECT count(*) FROM {table} WHERE dst IS NOT NULL AND dst <> want")
    assert wrong == [(0,)], "a failed job wrote a wrong value"


async def check_refused(db: TestDb, table: str, job: dict[str, Any]) -> None:
    cfg = db.config([job], throttle={"min_batch": 1, "max_batch": 1})
    with pytest.raises(SchemaError) as err:
        await within(daemon.run(cfg, daemon.RunOptions()), "the job")
    assert re.search(r"[`'\"]k[`'\"]", str(err.value)), f"the error does not name the key column k: {err.value}"
    assert await db.q(f"SELECT count(*) FROM {table} WHERE dst IS NOT NULL") == [(0,)]
    assert not await state_table_exists(db), "a refused job wrote the state table"


@pytest.mark.parametrize(("engine_name", "case"), cases(KEYS, composite=False), indirect=["engine_name"])
async def test_key(db: TestDb, case: KeyCase) -> None:
    """The type as the whole key, one key a batch: every key value is a batch's bound and its checkpoint."""
    await check_key(db, case, composite=False)


@pytest.mark.parametrize(("engine_name", "case"), cases(KEYS), indirect=["engine_name"])
async def test_composite_key(db: TestDb, case: KeyCase) -> None:
    """(k, n) with two n per k, three keys a batch: bounds fall between two n of one k and between two k."""
    await check_key(db, case, composite=True)


@pytest.mark.parametrize(("engine_name", "case"), cases(FILLS), indirect=["engine_name"])
async def test_source_and_target(db: TestDb, case: FillCase) -> None:
    """The type as the source of a text target (src_*) or as the target of an expression over text (dst_*)."""
    e = db.engine_name
    async with types_for(db, case.src, case.dst, case.expr) as sub:
        src, dst, expr = sub(case.src), sub(case.dst), sub(case.expr)
        table = await create(db, "tf", f"id {INT[e]} NOT NULL PRIMARY KEY, src {src}, dst {dst}, want {dst}")
        values = dict(enumerate(case.values, start=1))
        await insert(db, table, ("src", "id"), [(v, i) for i, v in values.items()], src)
        await db.engine.execute(f"UPDATE {table} SET want = ({expr})")
        await run_and_check(db, table, {"name": "types", "table": table, "set": {"dst": expr}}, 2, values,
                            key_is_id=True)


@pytest.mark.parametrize(("engine_name", "case"), cases(DIFFS), indirect=["engine_name"])
async def test_verify_sees_what_the_column_comparison_hides(db: TestDb, case: DiffCase) -> None:
    """A target holding a value its own collation calls equal to the right one is still wrong."""
    e = db.engine_name
    async with types_for(db, case.dst) as sub:
        table = await create(db, "td", f"id {INT[e]} NOT NULL PRIMARY KEY, src {TEXT[e]}, dst {sub(case.dst)}")
        await db.x(f"INSERT INTO {table} (id, src) VALUES (1, ?), (2, ?)", case.value, case.value)
        cfg = db.config([{"name": "types", "table": table, "set": {"dst": "src"}}])
        [state] = await within(daemon.run(cfg, daemon.RunOptions()), "the job")
        assert state.status == "completed" and state.rows_done == 2
        await db.x(f"UPDATE {table} SET dst = ? WHERE id = 2", case.other)
        result = await within(Verifier(db.engine, cfg, cfg.jobs[0]).run(), "verify")
        assert (result.wrong, result.sample_wrong) == (1, [[2]]), f"{result.as_dict()}"
