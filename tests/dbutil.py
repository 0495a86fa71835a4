"""Test-side database access: the test's own connection, per-engine DDL, and cleanup of what a test made."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from backfilld import engines
from backfilld.config import from_dict, parse_url
from backfilld.engines.base import Engine, Stmt

CONCAT = {"postgresql": "name || '#' || id", "sqlite": "name || '#' || id", "mysql": "CONCAT(name, '#', id)"}

# Text column types whose own comparison calls 'abc5' equal to another value, differing from it only in case or
# only in trailing spaces, and that value: each kind each engine has. hiding_type creates what "{ci}" (a
# nondeterministic ICU collation that ignores case and spaces) and "{email}" (a domain over citext) name.
_U = "CHARACTER SET utf8mb4 COLLATE"
HIDDEN_CHANGES = [
    pytest.param("sqlite", "TEXT COLLATE NOCASE", "ABC5", id="sqlite-nocase-case"),
    pytest.param("sqlite", "TEXT COLLATE RTRIM", "abc5  ", id="sqlite-rtrim-spaces"),
    pytest.param("postgresql", "citext", "ABC5", id="postgresql-citext-case"),
    pytest.param("postgresql", "{email}", "ABC5", id="postgresql-citext-domain-case"),
    pytest.param("postgresql", 'text COLLATE "{ci}"', "ABC5", id="postgresql-nondeterministic-case"),
    pytest.param("postgresql", 'varchar(40) COLLATE "{ci}"', "abc5  ", id="postgresql-nondeterministic-spaces"),
    pytest.param("mysql", f"VARCHAR(40) {_U} utf8mb4_general_ci", "ABC5", id="mysql-general-ci-case"),
    pytest.param("mysql", f"VARCHAR(40) {_U} utf8mb4_general_ci", "abc5  ", id="mysql-general-ci-spaces"),
    pytest.param("mysql", f"VARCHAR(40) {_U} utf8mb4_bin", "abc5  ", id="mysql-bin-pad-spaces"),
    pytest.param("mysql", "VARCHAR(40) CHARACTER SET latin1 COLLATE latin1_swedish_ci", "ABC5",
                 id="mysql-latin1-ci-case"),
]


@contextlib.asynccontextmanager
async def hiding_type(db: TestDb, typ: str) -> AsyncIterator[str]:
    """A HIDDEN_CHANGES column type as DDL, with what it names made: PostgreSQL's citext extension, and "{ci}"
    and "{email}" (dropped afterwards, with the columns using them)."""
    made = {"ci": ("CREATE COLLATION {name} (provider = icu, locale = 'und-u-ka-shifted-ks-level2', "
                   "deterministic = false)", "DROP COLLATION IF EXISTS {name} CASCADE"),
            "email": ("CREATE DOMAIN {name} AS citext", "DROP DOMAIN IF EXISTS {name} CASCADE")}
    if "citext" in typ or "{email}" in typ:
        await db.x("CREATE EXTENSION IF NOT EXISTS citext")
    names = {part: db.name(part) for part in made if "{" + part + "}" in typ}
    try:
        for part, name in names.items():
            await db.x(made[part][0].format(name=name))
            typ = typ.replace("{" + part + "}", name)
        yield typ
    finally:
        for part, name in names.items():
            await db.x(made[part][1].format(name=name))


class GateAt:
    """A job gate that never throttles and, before the Nth batch (N from 1), awaits actions[N]: what a test
    does to the database mid-run. `calls` counts the batches asked for."""

    def __init__(self, actions: dict[int, Callable[[], Awaitable[None]]]) -> None:
        self.actions = actions
        self.calls = 0

    async def wait(self, job: str, stop: asyncio.Event, in_flight: int = 0) -> None:
        self.calls += 1
        action = self.actions.get(self.calls)
        if action is not None:
            await action()

    def after_batch(self, job: str, rows: int, took_s: float) -> None:
        pass


class TestDb:
    __test__ = False

    def __init__(self, url: str, suffix: str) -> None:
        self.url = url
        self.parsed = parse_url(url)
        self.engine_name = self.parsed.engine
        self.suffix = suffix
        self.engine: Engine = engines.create(self.parsed)
        self.created: list[str] = []
        self.functions: list[str] = []

    async def open(self) -> None:
        await self.engine.connect()

    def name(self, base: str) -> str:
        return f"{base}_{self.suffix}"

    @property
    def state_table(self) -> str:
        return self.name("bf_state")

    def _stmt(self, sql: str, args: tuple[Any, ...]) -> tuple[Stmt, dict[str, Any]]:
        parts = sql.split("?")
        out = parts[0]
        for i, part in enumerate(parts[1:], start=1):
            out += self.engine.dialect.placeholder(i) + part
        names = tuple(f"a{i}" for i in range(len(args)))
        return Stmt(self.engine.dialect.finish(out), names), dict(zip(names, args, strict=True))

    async def q(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        stmt, vals = self._stmt(sql, args)
        return await self.engine.fetch(stmt, vals)

    async def x(self, sql: str, *args: Any) -> int:
        stmt, vals = self._stmt(sql, args)
        return await self.engine.execute(stmt, vals)

    async def many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        async with self.engine.transaction():
            for r in rows:
                await self.x(sql, *r)

    async def bulk(self, table: str, cols: tuple[str, ...], rows: list[tuple[Any, ...]], chunk: int = 500) -> None:
        """Multi-row INSERTs, for tables of 100,000 rows and more."""
        async with self.engine.transaction():
            for i in range(0, len(rows), chunk):
                part = rows[i:i + chunk]
                one = "(" + ", ".join("?" for _ in cols) + ")"
                await self.x(f"INSERT INTO {table} ({', '.join(cols)}) VALUES " + ", ".join([one] * len(part)),
                             *(v for r in part for v in r))

    def table_suffix(self) -> str:
        return " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin" if self.engine_name == "mysql" else ""

    def int_type(self) -> str:
        return "INTEGER" if self.engine_name == "sqlite" else "BIGINT"

    async def create(self, base: str, columns: str) -> str:
        table = self.name(base)
        await self.engine.execute(f"CREATE TABLE {table} ({columns}){self.table_suffix()}")
        self.created.append(table)
        return table

    async def create_users(self, base: str = "users", *, composite: bool = False) -> str:
        i = self.int_type()
        if composite:
            cols = (f"wiki VARCHAR(64) NOT NULL, id {i} NOT NULL, name VARCHAR(200), deleted {i} NOT NULL DEFAULT 0, "
                    "label VARCHAR(255), PRIMARY KEY (wiki, id)")
        else:
            cols = (f"id {i} NOT NULL PRIMARY KEY, name VARCHAR(200), deleted {i} NOT NULL DEFAULT 0, "
                    "label VARCHAR(255)")
        return await self.create(base, cols)

    async def users_with(self, n: int, base: str = "users") -> str:
        """A users table holding ids 1..n named n<id>, label NULL."""
        table = await self.create_users(base)
        await self.many(f"INSERT INTO {table} (id, name, deleted) VALUES (?, ?, 0)",
                        [(i, f"n{i}") for i in range(1, n + 1)])
        return table

    async def audit_updates(self, table: str) -> str:
        """An audit table, and an AFTER UPDATE trigger on `table` recording the id of every row an UPDATE
        touched (whether or not its values changed). Returns the audit table."""
        audit = await self.create("audit", f"id {self.int_type()} NOT NULL")
        trig = self.name("audit_trg")
        if self.engine_name == "postgresql":
            await self.engine.execute(f"CREATE FUNCTION {trig}() RETURNS trigger LANGUAGE plpgsql AS "
                                      f"$$ BEGIN INSERT INTO {audit}(id) VALUES (NEW.id); RETURN NEW; END $$")
            await self.engine.execute(f"CREATE TRIGGER {trig} AFTER UPDATE ON {table} FOR EACH ROW "
                                      f"EXECUTE FUNCTION {trig}()")
            self.functions.append(trig)
        elif self.engine_name == "mysql":
            await self.engine.execute(f"CREATE TRIGGER {trig} AFTER UPDATE ON {table} FOR EACH ROW "
                                      f"INSERT INTO {audit}(id) VALUES (NEW.id)")
        else:
            await self.engine.execute(f"CREATE TRIGGER {trig} AFTER UPDATE ON {table} BEGIN "
                                      f"INSERT INTO {audit}(id) VALUES (NEW.id); END")
        return audit

    async def daemon_connections(self, app: str) -> list[int]:
        """Server ids of the daemon's second connections of one role, open now: PostgreSQL by application_name
        (`backfilld-<role>`); MariaDB, which shows no names, the connections to this database other than this
        test's own and the daemon's first (the job's own, opened before any other)."""
        if self.engine_name == "postgresql":
            rows = await self.q("SELECT pid FROM pg_stat_activity WHERE application_name = ? ORDER BY pid", app)
            return [int(r[0]) for r in rows]
        rows = await self.q("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
                            "AND ID <> CONNECTION_ID() ORDER BY ID")
        return [int(r[0]) for r in rows[1:]]

    async def kill_connection(self, conn_id: int) -> None:
        if self.engine_name == "postgresql":
            assert await self.q("SELECT pg_terminate_backend(?)", conn_id) == [(True,)]
        else:
            await self.x(f"KILL {int(conn_id)}")

    def config(self, jobs: list[dict[str, Any]], **extra: Any) -> Any:
        data: dict[str, Any] = {"database": {"url": self.url}, "state": {"table": self.state_table},
                                "logging": {"level": "warning", "format": "json"}, "metrics": {"listen": ""},
                                "jobs": jobs}
        for section, values in extra.items():
            data[section] = values
        self.created.append(self.state_table)
        return from_dict(data)

    async def cleanup(self) -> None:
        try:
            for t in dict.fromkeys(reversed(self.created)):
                await self.engine.execute(f"DROP TABLE IF EXISTS {t}")
            for f in self.functions:
                await self.engine.execute(f"DROP FUNCTION IF EXISTS {f}()")
        finally:
            await self.engine.close()


# An expression that takes a second on row 499, so that the batch of (400, 500] (batches of 100) holds its rows
# that long: long enough for an application session to come and wait for one of them.
SLOW_ON_499 = {"postgresql": "CASE WHEN id = 499 THEN name || '#' || id || (SELECT '' FROM pg_sleep(1)) "
                             "ELSE name || '#' || id END",
               "mysql": "CONCAT(name, '#', id, IF(id = 499, LEFT(SLEEP(1), 0), ''))"}


async def application_session(db: TestDb) -> TestDb:
    """A connection that backfilld counts as the application's, not its own (tests open theirs through
    backfilld's engines: on PostgreSQL it takes another application_name, on MySQL its connection id leaves the
    set of this process's own), with the server's default lock waits, as an application has."""
    from backfilld.engines.mysql import MySQLEngine

    c = TestDb(db.url, db.suffix)
    await c.open()
    if db.engine_name == "postgresql":
        await c.x("SET application_name = 'app'")
        await c.x("SET lock_timeout = 0")
    else:
        engine = c.engine
        assert isinstance(engine, MySQLEngine)
        MySQLEngine.own_ids.get(engine._server_key, set()).discard(engine._id or 0)
        await c.x("SET SESSION innodb_lock_wait_timeout = 50")
    return c


@contextlib.asynccontextmanager
async def holding(db: TestDb, table: str, row: int) -> AsyncIterator[tuple[TestDb, Any]]:
    """An application session with `row` of the users table `table` updated (deleted = 1) in a transaction
    left open: yields the session and the transaction (`await tx.__aexit__(None, None, None)` commits)."""
    app = await application_session(db)
    try:
        tx = app.engine.transaction()
        await tx.__aenter__()
        await app.x(f"UPDATE {table} SET deleted = 1 WHERE id = {row}")
        yield app, tx
    finally:
        await app.engine.close()

