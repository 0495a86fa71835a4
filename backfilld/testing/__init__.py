"""Test a backfill the way it will run: scratch databases, jobs run in-process, old and new application code
writing while the job runs, and the checks that matter afterwards. The pytest fixtures (backfilld.testing.plugin,
registered through the pytest11 entry point) hand out ScratchDatabase objects; README's "Testing a backfill
with pytest" and examples/extension/ show them in use.

Owns: scratch databases (SQLite files; PostgreSQL and MySQL/MariaDB databases created on a server the tests name
and dropped afterwards), the synchronous helpers a migration author's test calls, and the simulated application
of run_live. It drives the daemon exactly as `backfilld run` and `backfilld verify` do (daemon.run, daemon.verify),
with the author's jobs files.

The helpers are synchronous, so a plain test function can call them and no asyncio plugin is needed: each
ScratchDatabase runs its work on an event loop of its own in a background thread. The application functions
given to run_live are coroutines (`async def old_code(app): await app.execute(...)`), run on that loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from backfilld.config import DatabaseURL, parse_url
from backfilld.engines import capabilities
from backfilld.engines.sqltext import tokenize

T = TypeVar("T")

ENGINES = ("sqlite", "postgresql", "mysql")
# the server to create scratch databases on, per server engine: a URL whose user may CREATE and DROP databases
URL_ENV = {"postgresql": "BACKFILLD_TESTING_POSTGRESQL_URL", "mysql": "BACKFILLD_TESTING_MYSQL_URL"}
# "1": a server engine whose URL is missing or whose server does not answer fails the test instead of skipping it
# (an application's CI sets it, so that a missing server is never counted as a pass); also --backfilld-require
REQUIRE_ENV = "BACKFILLD_TESTING_REQUIRE"
# how long the setup waits for a server to accept a connection before the reason is reported
CONNECT_TIMEOUT_S = 5.0
# The application's patience with a row lock, in run_live's sessions: a server's own default is far longer; 5 s is
# long enough that a lock wait caused by a batch (a fraction of a second) never ends in an error, short enough
# that a test never hangs on one.
APP_LOCK_TIMEOUT_S = 5.0


class Unavailable(Exception):
    """This engine cannot be tested here: the reason names what to set or start."""


# ----------------------------------------------------------------------------------------------- the event loop


class _Loop:
    """An event loop in a daemon thread: run() hands it a coroutine from any thread and waits for the result, so
    that the same connections serve a test's successive calls, from a plain or from an async test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="backfilld-testing", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("backfilld.testing helpers are synchronous: call them from the test, not from an "
                               "application function given to run_live (use `await app.execute(...)` there)")
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def close(self) -> None:
        async def drain() -> None:   # what the drivers left scheduled (aiosqlite's closing thread, transports)
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(drain(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


# ------------------------------------------------------------------------------------------- statements


def _bind(url: DatabaseURL, sql: str, params: Sequence[Any]) -> tuple[Any, dict[str, Any]]:
    """`?` marks a parameter (outside quotes and comments), for every engine: the statement in the engine's own
    placeholders, and its values."""
    from backfilld import engines
    from backfilld.engines.sqldialect import Stmt

    dialect = engines.dialect(url.engine)
    out, n = [], 0
    for tok in tokenize(sql, dialect):
        if tok.kind == "op" and tok.text == "?":
            n += 1
            out.append(dialect.placeholder(n))
        else:
            out.append(tok.text)
    if n != len(params):
        raise ValueError(f"the statement has {n} '?' parameter(s) and {len(params)} value(s) were given")
    names = tuple(f"p{i}" for i in range(n))
    return Stmt(dialect.finish("".join(out)), names), dict(zip(names, params, strict=True))


def split_script(sql: str, engine: str) -> list[str]:
    """The statements of a script, split at each `;` outside quotes, comments and PostgreSQL's dollar quotes.
    MySQL compound statements (a trigger's BEGIN ... END) hold `;` of their own: execute those one by one."""
    from backfilld import engines

    statements: list[str] = []
    current: list[str] = []
    for tok in tokenize(sql, engines.dialect(engine)):
        if tok.kind == "op" and tok.text == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(tok.text)
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip() and not _only_comments(s, engine)]


def _only_comments(sql: str, engine: str) -> bool:
    from backfilld import engines

    return all(t.kind in ("comment", "space") for t in tokenize(sql, engines.dialect(engine)))


class _Session:
    """One connection of backfilld's engine layer (its quoting, its timeouts), used by the test's own statements
    and by each application function of run_live."""

    def __init__(self, url: DatabaseURL, lock_timeout_s: float) -> None:
        from backfilld import engines

        self.url = url
        self.engine = engines.create(url, lock_timeout_s=lock_timeout_s, connect_timeout_s=CONNECT_TIMEOUT_S)

    async def open(self) -> None:
        await self.engine.connect()

    async def close(self) -> None:
        await self.engine.close()

    async def execute(self, sql: str, *params: Any) -> int:
        stmt, values = _bind(self.url, sql, params)
        return await self.engine.execute(stmt, values)

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        stmt, values = _bind(self.url, sql, params)
        return await self.engine.fetch(stmt, values)


# ------------------------------------------------------------------------------------------- the application


@dataclass
class App:
    """What an application function of run_live is given, once per call: its own connection (execute and fetch,
    `?` parameters), a seeded random generator, the call's number, and where to record what new code wrote.

    new code: `app.kept(table, column, value, id=5)` after writing value into column of the row id = 5: the job,
    verify --fix and the sync triggers must leave it there. old code: `app.forget(table, id=5)` after it changed
    that row's sources (or deleted the row): new code's value there is no longer expected to survive."""

    name: str
    session: _Session
    random: random.Random
    expected: dict[tuple[str, str, tuple[tuple[str, Any], ...]], Any]
    call: int = 0

    async def execute(self, sql: str, *params: Any) -> int:
        return await self.session.execute(sql, *params)

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        return await self.session.fetch(sql, *params)

    def kept(self, table: str, column: str, value: Any, **key: Any) -> None:
        if not key:
            raise ValueError("kept() needs the row's key as keyword arguments, e.g. app.kept(table, col, v, id=5)")
        self.expected[(table, column, tuple(sorted(key.items())))] = value

    def forget(self, table: str, **key: Any) -> None:
        row = tuple(sorted(key.items()))
        for k in [k for k in self.expected if k[0] == table and k[2] == row]:
            del self.expected[k]


AppFunction = Callable[[App], Awaitable[None]]


@dataclass
class LiveRun:
    """What run_live did and found. assert_clean() is the check: every row right after the documented procedure,
    new code's values kept, no application error, and the application really wrote while the job ran."""

    states: list[Any]                        # the job states of the run beside the application
    final_states: list[Any]                  # after the run once more, with the application stopped
    verified: list[Any]                      # verify before any repair (VerifyResult per job)
    fixed: list[Any]                         # verify --fix (empty with sync triggers: verify alone)
    final: list[Any]                         # verify after the repair
    calls: dict[str, int]                    # application function name -> calls made
    calls_while_job_ran: dict[str, int]      # ... of them before the job's run returned
    errors: list[str]                        # errors the application functions raised
    expected: dict[tuple[str, str, tuple[tuple[str, Any], ...]], Any]   # new code's values that must survive
    lost: list[str] = field(default_factory=list)   # of them, the ones the table does not hold (a message each)
    triggers: bool = False

    def problems(self) -> list[str]:
        out = [f"the application saw an error: {e}" for e in self.errors[:10]]
        if len(self.errors) > 10:
            out.append(f"... and {len(self.errors) - 10} more application errors")
        for name, n in self.calls_while_job_ran.items():
            if n == 0:
                out.append(f"{name} made no call while the job ran, so the test proves nothing about it: give "
                           "the table more rows or slow the job (throttle={'max_rows_per_s': ...})")
        for s in self.states + self.final_states:
            if s.status != "completed":
                out.append(f"job {s.job!r} ended {s.status}: {s.error}")
        for r in self.final:
            if not r.clean:
                out.append(f"job {r.job!r}: verify after the documented procedure found {r.missing} missing and "
                           f"{r.wrong} wrong values, {r.errors} errors (keys: "
                           f"{(r.sample_missing + r.sample_wrong + r.sample_errors)[:5]})")
        if self.triggers:
            for r in self.verified:
                if not r.clean:
                    out.append(f"job {r.job!r}: with sync triggers every row should be right without a repair; "
                               f"verify found {r.missing} missing and {r.wrong} wrong")
        out += self.lost[:10]
        if len(self.lost) > 10:
            out.append(f"... and {len(self.lost) - 10} more values of new code lost")
        return out

    def assert_clean(self) -> None:
        problems = self.problems()
        if problems:
            raise AssertionError("backfill under live writes: " + "\n  ".join(["", *problems]).lstrip())


# ---------------------------------------------------------------------------------------- the scratch database


class ScratchDatabase:
    """A database of its own for one test: `url` for backfilld, `execute`/`fetch` for the test's statements (one
    connection, autocommit, `?` parameters on every engine), `run`/`verify`/`run_live`/`triggers` to drive jobs.

    Jobs come from jobs files (`jobs_files=[path]`, as shipped) and/or inline (`jobs=[{...}]`, the keys of a
    `[[jobs]]` table); other config sections (`throttle={...}`, `state={...}`, `database={...}` settings beside
    the URL) as keyword arguments. The metrics endpoint is off and the state table is `backfilld_state` unless
    a section says otherwise."""

    def __init__(self, engine: str, url: DatabaseURL, password: str | None = None,
                 on_close: Callable[[], Awaitable[None]] | None = None) -> None:
        self.engine = engine
        self._url = url
        self._password = password
        self._on_close = on_close
        self._loop = _Loop()
        self._session: _Session | None = None
        self._password_env = f"BACKFILLD_TESTING_PASSWORD_{uuid.uuid4().hex[:8].upper()}"
        if password:
            os.environ[self._password_env] = password

    # --- the database
    @property
    def url(self) -> str:
        """The database's URL as a backfilld config takes it (the password, if any, travels in password_env)."""
        return _url_text(self._url)

    @property
    def name(self) -> str:
        """The database's name (the SQLite file's path)."""
        return self._url.database

    def pick(self, **per_engine: T) -> T:
        """The value given for this database's engine: db.pick(sqlite=..., postgresql=..., mysql=...)."""
        if self.engine not in per_engine:
            raise KeyError(f"no value given for {self.engine} (got {', '.join(per_engine) or 'none'})")
        return per_engine[self.engine]

    def open(self) -> ScratchDatabase:
        self._loop.run(self._open())
        return self

    async def _open(self) -> None:
        self._session = _Session(self._url.with_password(self._password), lock_timeout_s=APP_LOCK_TIMEOUT_S)
        await self._session.open()

    def close(self) -> None:
        try:
            self._loop.run(self._close())
        finally:
            self._loop.close()
            os.environ.pop(self._password_env, None)

    async def _close(self) -> None:
        try:
            if self._session is not None:
                await self._session.close()
        finally:
            if self._on_close is not None:
                await self._on_close()

    def _s(self) -> _Session:
        if self._session is None:
            raise RuntimeError("the scratch database is not open")
        return self._session

    def execute(self, sql: str, *params: Any) -> int:
        """Run one statement; returns the rows it changed."""
        return self._loop.run(self._s().execute(sql, *params))

    def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one query; returns its rows as tuples."""
        return self._loop.run(self._s().fetch(sql, *params))

    def scalar(self, sql: str, *params: Any) -> Any:
        """The first column of the query's only row."""
        rows = self.fetch(sql, *params)
        if len(rows) != 1:
            raise AssertionError(f"expected one row, got {len(rows)}: {sql}")
        return rows[0][0]

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement per row of values, in one transaction."""
        async def go() -> None:
            s = self._s()
            async with s.engine.transaction():
                for row in rows:
                    await s.execute(sql, *row)

        self._loop.run(go())

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], chunk: int = 500) -> int:
        """Insert rows with multi-row INSERTs of `chunk` rows, in one transaction (for tables of many rows);
        returns the rows inserted."""
        rows = list(rows)
        one = "(" + ", ".join("?" for _ in columns) + ")"

        async def go() -> int:
            s = self._s()
            async with s.engine.transaction():
                for i in range(0, len(rows), chunk):
                    part = rows[i:i + chunk]
                    values = ", ".join([one] * len(part))
                    await s.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}",
                                    *(v for r in part for v in r))
            return len(rows)

        return self._loop.run(go())

    def script(self, sql: str | os.PathLike[str]) -> None:
        """Run each statement of a script (text, or a .sql file's path), in order (split_script)."""
        text = Path(sql).read_text(encoding="utf-8") if isinstance(sql, os.PathLike) else sql
        for statement in split_script(text, self.engine):
            self.execute(statement)

    # --- jobs
    def config(self, *, jobs_files: Sequence[str | os.PathLike[str]] = (), jobs: Sequence[Mapping[str, Any]] = (),
               **sections: Any) -> Any:
        """The backfilld Config of a site whose database is this one, with these jobs (see the class)."""
        from backfilld.config import from_dict

        database = {"url": self.url, **sections.pop("database", {})}
        if self._password:
            database["password_env"] = self._password_env
        data: dict[str, Any] = {"database": database, "metrics": {"listen": ""},
                                "logging": {"level": "warning", "format": "json"}, "jobs": [dict(j) for j in jobs]}
        data.update(sections)
        _log_at(data["logging"].get("level", "warning"))
        return from_dict(data, "backfilld.testing", jobs_files=[os.fspath(p) for p in jobs_files])

    def run(self, *, job: str | Sequence[str] | None = None, restart: bool = False, **config: Any) -> list[Any]:
        """Run the jobs (all, or those named) to completion in-process, as `backfilld run` does; returns their
        states. Raises what `run` would report: ConfigError, SchemaError, JobFailed (with the job's error)."""
        from backfilld import daemon

        cfg = self.config(**config)
        return self._loop.run(daemon.run(cfg, daemon.RunOptions(jobs=_names(job), restart=restart)))

    def verify(self, *, job: str | Sequence[str] | None = None, fix: bool = False, **config: Any) -> list[Any]:
        """`backfilld verify [--fix]`: one VerifyResult per job (`.clean`, `.missing`, `.wrong`, samples)."""
        from backfilld import daemon

        cfg = self.config(**config)
        return self._loop.run(daemon.verify(cfg, _names(job), fix=fix))

    def assert_verified(self, *, job: str | Sequence[str] | None = None, **config: Any) -> None:
        """verify finds every row of every job (or those named) right."""
        bad = [r for r in self.verify(job=job, **config) if not r.clean]
        if bad:
            raise AssertionError("verify found rows not right: " + "; ".join(
                f"job {r.job!r}: {r.missing} missing, {r.wrong} wrong, {r.errors} errors, keys "
                f"{(r.sample_missing + r.sample_wrong + r.sample_errors)[:5]}" for r in bad))

    def triggers(self, action: str, *, job: str, **config: Any) -> list[str]:
        """`backfilld triggers install|remove|show` for one job; returns the statements run (or shown)."""
        from backfilld import daemon

        return self._loop.run(daemon.triggers(self.config(**config), job, action))

    def run_live(self, *, old_code: AppFunction | Sequence[AppFunction] = (),
                 new_code: AppFunction | Sequence[AppFunction] = (), seconds: float = 2.0, seed: int = 1,
                 triggers: bool = False, job: str | Sequence[str] | None = None, **config: Any) -> LiveRun:
        """Run the jobs while the application writes, then follow the documented procedure and check.

        Each application function is called over and over on its own connection for `seconds`, beside the job's
        run (from its start): old code inserts rows without the new columns and changes sources; new code writes
        sources and targets together (recording them with app.kept). With triggers=True the jobs' sync triggers
        are installed first and removed afterwards. Once the application stopped: the jobs are run once more
        (rows old code wrote after the last sweep), then verify, and without triggers verify --fix (sources old
        code changed after their rows were filled) and verify again. Returns a LiveRun; call assert_clean()."""
        cfg = self.config(**config)
        names = _names(job) or [j.name for j in cfg.run_order()]
        funcs = [("old_code", f) for f in _funcs(old_code)] + [("new_code", f) for f in _funcs(new_code)]
        if not funcs:
            raise ValueError("run_live needs at least one old_code or new_code function")
        if triggers:
            for name in names:
                self.triggers("install", job=name, **config)
        try:
            live = self._loop.run(self._live(cfg, names, funcs, seconds, seed))
        finally:
            if triggers:
                for name in names:
                    self.triggers("remove", job=name, **config)
        live.triggers = triggers
        live.final_states = self.run(job=names, **config)
        live.verified = self.verify(job=names, **config)
        if not triggers:
            live.fixed = self.verify(job=names, fix=True, **config)
            live.final = self.verify(job=names, **config)
        else:
            live.final = live.verified
        live.lost = self._lost(live.expected)
        return live

    async def _live(self, cfg: Any, names: list[str], funcs: list[tuple[str, AppFunction]], seconds: float,
                    seed: int) -> LiveRun:
        from backfilld import daemon

        expected: dict[tuple[str, str, tuple[tuple[str, Any], ...]], Any] = {}
        labels = _labels(funcs)
        calls = dict.fromkeys(labels, 0)
        during = dict.fromkeys(labels, 0)
        errors: list[str] = []
        job_done = asyncio.Event()

        async def drive(label: str, fn: AppFunction, n: int) -> None:
            session = _Session(self._url.with_password(self._password), lock_timeout_s=APP_LOCK_TIMEOUT_S)
            await session.open()
            app = App(label, session, random.Random(seed * 1000 + n), expected)
            deadline = time.monotonic() + seconds
            try:
                while time.monotonic() < deadline:
                    try:
                        await fn(app)
                    except Exception as exc:  # noqa: BLE001 - every error the application sees is a finding
                        errors.append(f"{label} call {app.call}: {type(exc).__name__}: {exc}")
                    app.call += 1
                    calls[label] += 1
                    if not job_done.is_set():
                        during[label] += 1
                    await asyncio.sleep(0.001)
            finally:
                await session.close()

        async def job_run() -> list[Any]:
            try:
                return await daemon.run(cfg, daemon.RunOptions(jobs=names))
            finally:
                job_done.set()

        writers = [asyncio.create_task(drive(label, fn, i)) for i, (label, (_, fn)) in enumerate(zip(labels, funcs,
                                                                                                   strict=True))]
        try:
            states = await job_run()
        finally:
            await asyncio.gather(*writers, return_exceptions=True)
        return LiveRun(states=states, final_states=[], verified=[], fixed=[], final=[], calls=calls,
                       calls_while_job_ran=during, errors=errors, expected=expected)

    def _lost(self, expected: Mapping[tuple[str, str, tuple[tuple[str, Any], ...]], Any]) -> list[str]:
        lost = []
        for (table, column, key), value in expected.items():
            cond = " AND ".join(f"{k} = ?" for k, _ in key)
            rows = self.fetch(f"SELECT {column} FROM {table} WHERE {cond}", *(v for _, v in key))
            if rows and rows[0][0] != value:
                lost.append(f"new code wrote {value!r} into {table}.{column} at {dict(key)}; it holds "
                            f"{rows[0][0]!r} now (overwritten by the backfill, or new code and the job disagree "
                            "on the value)")
        return lost

    def __enter__(self) -> ScratchDatabase:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _log_at(level: str) -> None:
    """backfilld's log at the config's level (warning by default), as the CLI would set it, unless the test
    process configured structlog itself (the application's own logging, or structlog.testing.capture_logs)."""
    from backfilld import logs

    logs.import_structlog()
    import structlog

    if not structlog.is_configured():
        logs.setup(level if level in ("debug", "info", "warning", "error") else "warning", "auto")


def _names(job: str | Sequence[str] | None) -> list[str] | None:
    if job is None:
        return None
    return [job] if isinstance(job, str) else list(job)


def _funcs(f: AppFunction | Sequence[AppFunction]) -> list[AppFunction]:
    return [f] if callable(f) else list(f)


def _labels(funcs: list[tuple[str, AppFunction]]) -> list[str]:
    labels = []
    for role, fn in funcs:
        base = f"{role} {getattr(fn, '__name__', 'function')}"
        label, n = base, 2
        while label in labels:
            label, n = f"{base} #{n}", n + 1
        labels.append(label)
    return labels


def _url_text(url: DatabaseURL) -> str:
    if capabilities(url.engine).file_database:
        return f"sqlite:///{url.database}"
    return str(url.with_password(None))


# ------------------------------------------------------------------------------------------ making scratch databases


def server_url(engine: str, environ: Mapping[str, str] | None = None) -> DatabaseURL:
    """The server named for this engine's scratch databases (URL_ENV), parsed; Unavailable says what to set."""
    env = os.environ if environ is None else environ
    name = URL_ENV[engine]
    text = env.get(name, "").strip()
    if not text:
        raise Unavailable(f"{engine}: set {name} to a server URL whose user may create databases, e.g. "
                          f"{_EXAMPLE[engine]}")
    try:
        url = parse_url(text, allow_password=True)
    except ValueError as exc:
        raise Unavailable(f"{name} {exc}") from None
    if url.engine != engine:
        raise Unavailable(f"{name} names a {url.engine} URL; it must be a {engine} one, e.g. {_EXAMPLE[engine]}")
    return url


_EXAMPLE = {"postgresql": "postgresql://postgres@127.0.0.1:5432/postgres", "mysql": "mysql://root@127.0.0.1:3306/mysql"}


def sqlite_database(folder: str | os.PathLike[str]) -> ScratchDatabase:
    """A new SQLite database file in folder (WAL mode, as a site runs it), open."""
    import sqlite3

    path = Path(folder) / f"scratch-{uuid.uuid4().hex[:8]}.sqlite"
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.close()
    return ScratchDatabase("sqlite", parse_url(f"sqlite:///{path}")).open()


def server_database(engine: str, environ: Mapping[str, str] | None = None) -> ScratchDatabase:
    """A new, empty database on the server URL_ENV names (dropped when the ScratchDatabase closes), open.
    Unavailable when the URL is missing or the server does not answer, with the reason."""
    admin = server_url(engine, environ)
    name = f"backfilld_test_{uuid.uuid4().hex[:12]}"
    from backfilld import engines

    create, drop = engines.dialect(engine).database_ddl(name)

    async def on_admin(statement: str) -> None:
        s = _Session(admin, lock_timeout_s=APP_LOCK_TIMEOUT_S)
        try:
            await asyncio.wait_for(s.open(), CONNECT_TIMEOUT_S * 2)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the server is the reason to report
            raise Unavailable(f"{engine}: cannot connect to the server {URL_ENV[engine]} names ({admin}): "
                              f"{type(exc).__name__}: {exc}") from None
        try:
            await s.engine.execute(statement)
        except Exception as exc:  # noqa: BLE001 - reported with what to do, whatever the driver raised
            raise RuntimeError(f"{engine}: {' '.join(statement.split()[:2])} {name} failed on {admin}: {exc} (the "
                               f"user of {URL_ENV[engine]} must be allowed to create and drop databases)") from None
        finally:
            await s.close()

    async def dropped() -> None:
        await on_admin(drop)

    scratch = ScratchDatabase(engine, DatabaseURL(engine, admin.host, admin.port, admin.user, name, None, admin.tls),
                              admin.password, on_close=dropped)
    try:
        scratch._loop.run(on_admin(create))
    except BaseException:
        scratch._on_close = None   # not created (the server refused or was not reached): nothing to drop
        scratch.close()
        raise
    try:
        return scratch.open()
    except BaseException:
        scratch.close()            # drops the database
        raise


def scratch_database(engine: str, folder: str | os.PathLike[str], environ: Mapping[str, str] | None = None
                     ) -> ScratchDatabase:
    """A new scratch database of this engine (SQLite in folder), open; close() drops it."""
    if engine in ENGINES and capabilities(engine).file_database:
        return sqlite_database(folder)
    if engine not in URL_ENV:
        raise ValueError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    return server_database(engine, environ)


__all__ = ["ENGINES", "REQUIRE_ENV", "URL_ENV", "App", "LiveRun", "ScratchDatabase", "Unavailable",
           "scratch_database", "server_database", "split_script", "sqlite_database"]
