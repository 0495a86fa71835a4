"""SQLite engine over aiosqlite: dialect, connection, catalog and error mapping (its constant SQL: sql.py)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import sqlite3
import stat
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiosqlite

from backfilld import logs
from backfilld.aio import within
from backfilld.engines.assessment import LogVolume, PendingIndex, Privileges, TableSize, Writes
from backfilld.engines.base import Engine, lease_key
from backfilld.engines.catalog import Column, TableInfo
from backfilld.engines.grants import Need
from backfilld.engines.sqldialect import Dialect, Lexicon, Stmt, operand
from backfilld.engines.sqlite.sql import (
    AUTOCHECKPOINT_OFF,
    AUTOCHECKPOINT_ON,
    BEGIN,
    BUSY_TIMEOUT_MS,
    CHECKPOINT_PASSIVE,
    COMMIT,
    DATA_VERSION,
    INDEX_COLUMNS,
    INDEXES,
    JOURNAL_MODE,
    PAGE_COUNT,
    PAGE_SIZE,
    ROLLBACK,
    ROWID_SPAN,
    SYNCHRONOUS_NORMAL,
    TABLE_BYTES,
    TABLE_COLUMNS,
    TRIGGERS,
)
from backfilld.engines.statements import BatchPlan, TableSpec, WriteShape, any_null, range_call, transform_update_parts
from backfilld.errors import ConfigError, ConnectError, EngineError, RetryableError, SchemaError

if TYPE_CHECKING:
    from backfilld.engines.triggers import Triggers

log = logs.get_logger("backfilld.sqlite")

# A WAL frame's header: bytes before each page it holds
WAL_FRAME_HEADER_BYTES = 24
# The b-tree pages above the leaves a batch's commit writes besides them: the root and an interior page, for a
# table of up to some millions of rows (pages)
BTREE_UPPER_PAGES = 2
# An EXPLAIN QUERY PLAN line reading every entry of an index: SCAN t USING [COVERING] INDEX name
_SCAN_INDEX = re.compile(r"SCAN \S+ USING (?:COVERING )?INDEX (\S+)")


class SQLiteDialect(Dialect):
    name = "sqlite"
    state_types = {"name": "TEXT", "status": "TEXT", "count": "INTEGER", "total": "INTEGER", "text": "TEXT",
                   "time": "TEXT"}
    fold_case = True
    lexicon = Lexicon(ident_quotes=('""', "``", "[]"), parser="sqlite")

    def triggers(self) -> Triggers:
        from backfilld.engines.sqlite.triggers import SQLiteTriggers  # only when triggers are used

        return SQLiteTriggers(self)

    def exact(self, expr: str, column: Column | None) -> str:
        # BINARY: the column's own collation (NOCASE folds case, RTRIM ignores trailing spaces) never applies. An
        # explicit COLLATE on either side of a comparison is the one used, and COLLATE keeps the affinity of what
        # it follows: a column compared keeps its affinity, which applies to the other side as storing does
        return f"{operand(expr)} COLLATE BINARY"

    def same(self, a: str, b: str, column: Column | None = None) -> str:
        eq = f"{operand(a)} IS {self.exact(b, column)}"
        # a column of BLOB affinity converts nothing it stores: 1 and 1.0 are two values there, which IS calls equal
        return f"({eq} AND typeof({a}) = typeof({b}))" if _verbatim(column) else eq

    def differs(self, a: str, b: str, column: Column | None = None) -> str:
        ne = f"{operand(a)} IS NOT {self.exact(b, column)}"
        return f"({ne} OR typeof({a}) <> typeof({b}))" if _verbatim(column) else ne

    def cast_to(self, expr: str, column: Column | None) -> str:
        # What storing expr in the column stores is expr converted by the column's affinity (a TEXT column
        # holds 10 as '10', an INTEGER one '10' as 10, a BLOB one anything as it is), which no CAST does: CAST
        # to BLOB turns text into bytes, CAST to TEXT turns bytes into text, CAST to INTEGER 'abc' into 0. A
        # comparison with a column applies the column's affinity to an operand that has none, exactly as
        # storing does; unary + strips the expression's own affinity (a column it names, a CAST in it). So the
        # stored side of holds and stale must stay a bare column.
        return expr if column is None else f"(+{expr})"


def _verbatim(column: Column | None) -> bool:
    """Whether the column has BLOB affinity (declared BLOB, or no type), so stores each value as it is given."""
    if column is None:
        return False
    typ = column.type.upper()   # SQLite's rules, in their order: INT, then CHAR/CLOB/TEXT, then BLOB or none
    return not any(part in typ for part in ("INT", "CHAR", "CLOB", "TEXT")) and ("BLOB" in typ or not typ.strip())


# The function apply_range_once's trap calls when a batch would write NULL (registered on every connection).
_NULL_TRAP = "backfilld_null_written"

# A trigger's header names its event before its table: CREATE TRIGGER name [BEFORE|AFTER] UPDATE [OF cols] ON t
_UPDATE_EVENT = re.compile(r"^CREATE\s+(?:TEMP\w*\s+)?TRIGGER\s+.*?\bUPDATE\b(?:\s+OF\s+[^;]*?)?\s+ON\s",
                           re.IGNORECASE | re.DOTALL)

# SQLite binds at most 32766 parameters a statement (SQLITE_MAX_VARIABLE_NUMBER since 3.32); a batch's
# transform write is split into statements under that, all in the batch's one transaction.
MAX_PARAMS = 32_766


def read_text(raw: bytes) -> str:
    """A TEXT value as str. SQLite stores whatever bytes it was given as text (lower() of a BLOB title, say),
    not always UTF-8; such a value reads with its bad bytes kept as surrogates (a strict decode would fail the
    whole statement), and binding it back fails with a clear error instead of binding other text."""
    return raw.decode("utf-8", "surrogateescape")


def translate_sqlite(exc: BaseException) -> EngineError:
    text = str(exc)
    if isinstance(exc, UnicodeEncodeError):
        return EngineError("SQLite: a text value read from the table is not valid UTF-8, so it cannot be bound "
                           "back as the same text (a key, or a value verify --fix compares); store such values "
                           "as BLOB, or page by another key")
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return RetryableError(f"SQLite: {text}", kind="lock_timeout")
    if isinstance(exc, (sqlite3.ProgrammingError, ValueError)) and "closed" in text:
        return ConnectError(f"SQLite connection closed: {text}")
    return EngineError(f"SQLite: {text}")


class SQLiteEngine(Engine):
    dialect = SQLiteDialect()

    _conn: aiosqlite.Connection | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._leases: dict[str, int] = {}
        self._ckpt: aiosqlite.Connection | None = None
        self._ckpt_task: asyncio.Task[None] | None = None
        self._ckpt_again = False
        self._wal_frames = 0   # frames in the WAL at the last background checkpoint
        self._generation = 0   # connections opened so far (writes_token)
        self._file: tuple[int, int] | None = None   # the database file first opened: (device, inode)
        self._null_trapped = False   # the trap fired in the last apply_range_once

    def translate(self, exc: BaseException) -> EngineError:
        return translate_sqlite(exc)

    async def connect(self) -> None:
        path = self.url.database
        if path != ":memory:" and not Path(path).is_file():
            if self._file is not None:   # it was there when this engine first connected
                raise EngineError(f"SQLite database file {path!r} was deleted during the run; nothing more is "
                                  "written: restore it, then run the job again (it resumes from its checkpoint)")
            raise ConfigError(f"SQLite database file {path!r} does not exist; check database.url")
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves
            self._conn = await aiosqlite.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)
            self._conn.text_factory = read_text
            self._generation += 1
            self._check_file()
            await self._conn.execute(BUSY_TIMEOUT_MS.format(ms=int(self.lock_timeout_s * 1000)))
            await self._conn.create_function(_NULL_TRAP, 1, self._null_trap)
            if self.fast_commit:
                async with self._conn.execute(JOURNAL_MODE) as cur:
                    mode = (await cur.fetchone() or ("",))[0]
                if str(mode).lower() == "wal":  # NORMAL is only corruption-safe in WAL mode
                    await self._conn.execute(SYNCHRONOUS_NORMAL)
                    if not self.role:
                        await self._start_background_checkpoints(path)
        except BaseException as exc:  # cancelled too: an open connection's thread would outlive the process
            await asyncio.shield(self.close())
            if not isinstance(exc, Exception):
                raise
            raise EngineError(f"cannot open SQLite database {path!r}: {exc}") from None

    # WAL checkpoints off the batch loop's path. By default the connection that commits past 1000 WAL pages
    # copies them into the database file during its COMMIT: about a fifth of a backfill's time here. With
    # fast_commit, the job's connection does not checkpoint itself (wal_autocheckpoint = 0); after each of its
    # commits a second connection runs a PASSIVE checkpoint (it never blocks a reader or the writer), in its own
    # thread, on another core. If that connection fails, the job's connection checkpoints itself again.
    async def _start_background_checkpoints(self, path: str) -> None:
        try:
            self._ckpt = await aiosqlite.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None)
        except Exception:  # noqa: BLE001 - then the job's connection keeps checkpointing itself
            self._ckpt = None
            return
        await self._c().execute(AUTOCHECKPOINT_OFF)

    # The WAL is written again from its start only by a write transaction that begins once every frame of it has
    # been copied into the database file (and no reader still reads from it). With the checkpoints in the
    # background, the job's next batch begins while the last one's frames are still being copied: the WAL
    # would then grow for the whole run, as large as the table (measured: a 451 MB WAL for a 380 MB table of 1M
    # rows of 300-400 bytes), on disk and in the WAL index every connection maps (+14 MiB of RSS at 10M such
    # rows). So once the WAL holds more than this many frames (pages: 256 MiB at SQLite's default 4 KiB page),
    # the next batch waits for the running checkpoint before it begins, and its first write restarts the WAL.
    # A reader still reading from the WAL then (the next range's lookup, an application's long read) puts the
    # start-over off to a later batch: SQLite restarts a WAL only when no reader uses it.
    WAL_RESTART_FRAMES = 65_536

    async def _before_begin(self) -> None:
        task = self._ckpt_task
        if task is not None and not task.done() and self._wal_frames > self.WAL_RESTART_FRAMES:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    def _after_commit(self) -> None:
        if self._ckpt is None:
            return
        if self._ckpt_task is not None and not self._ckpt_task.done():
            self._ckpt_again = True   # one more pass once the running one ends
            return
        self._ckpt_task = asyncio.create_task(self._checkpoint(), name="sqlite-checkpoint")

    async def _checkpoint(self) -> None:
        try:
            while self._ckpt is not None:
                self._ckpt_again = False
                async with self._ckpt.execute(CHECKPOINT_PASSIVE) as cur:
                    rows = list(await cur.fetchall())
                self._wal_frames = int(rows[0][1]) if rows else 0   # (busy, frames in the WAL, copied)
                if not self._ckpt_again:
                    return
        except Exception as exc:  # noqa: BLE001 - any failure: back to checkpointing on the job's connection
            log.warning("background_checkpoint_failed", error=str(exc), detail="the job's connection checkpoints "
                        "the WAL itself again")
            await self._stop_background_checkpoints(restore=True)

    async def _stop_background_checkpoints(self, *, restore: bool) -> None:
        ckpt, self._ckpt = self._ckpt, None
        if ckpt is not None:
            with contextlib.suppress(Exception):
                await ckpt.close()
        if restore and self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.execute(AUTOCHECKPOINT_ON)

    async def close(self) -> None:
        self._release_leases()
        task, self._ckpt_task = self._ckpt_task, None
        if task is not None:   # let a running checkpoint finish: the WAL it copies is the job's own writes
            with contextlib.suppress(Exception):
                await within(asyncio.shield(task), 30)
        await self._stop_background_checkpoints(restore=False)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def _c(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise ConnectError("not connected to SQLite")
        return self._conn

    async def fetch(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if isinstance(stmt, str):
            stmt = Stmt(stmt)
        with self.driver_errors():
            async with self._c().execute(stmt.sql, stmt.args(values or {})) as cur:
                return [tuple(r) for r in await cur.fetchall()]

    async def execute(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> int:
        if isinstance(stmt, str):
            stmt = Stmt(stmt)
        with self.driver_errors():
            async with self._c().execute(stmt.sql, stmt.args(values or {})) as cur:
                return max(0, cur.rowcount)

    # SQLite has no session locks: a lease is an exclusive flock() on a small file beside the database, one per
    # job (released by the kernel when the process exits, however it exits). Not on the database file itself:
    # SQLite's own POSIX locks live there, and any close() of that file by this process would drop them.
    def _lease_path(self, name: str) -> Path:
        return Path(f"{self.url.database}-{lease_key(name).replace(':', '-')}.lock")

    async def try_lease(self, name: str) -> bool:
        if self.url.database == ":memory:" or name in self._leases:
            return True
        path = self._lease_path(name)
        try:   # never through a symlink: one planted there would have us truncate the file it points to
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise EngineError(f"the job's lease file {path} is a symbolic link; backfilld does not follow "
                                  "it: remove the link") from None
            raise EngineError(f"cannot create the job's lease file beside the database: {exc.strerror}; the "
                              "directory must be writable (SQLite needs that for its WAL files too)") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise EngineError(f"the job's lease file {path} is not a regular file: remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._leases[name] = fd
        return True

    async def lease_holder(self, name: str) -> str | None:
        try:
            pid = self._lease_path(name).read_text().strip()
        except OSError:
            return None
        return f"process {pid} (lock file {self._lease_path(name)})" if pid else None

    def _release_leases(self) -> None:
        leases, self._leases = self._leases, {}
        for fd in leases.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def _null_trap(self, key: object) -> None:
        # runs in the driver's thread, inside the UPDATE, only for a row whose expression is NULL (COALESCE
        # evaluates its second argument only then); the exception aborts the statement
        self._null_trapped = True
        raise ValueError(f"backfilld: NULL written at key {key!r}")

    async def once_expression(self, table: str, key: Sequence[str], expr: str) -> str | None:
        # COALESCE(expr, trap): a value is written as it is (COALESCE returns it unchanged, affinity included);
        # a NULL one calls the trap, which aborts the statement (apply_range_once recognises it)
        return f"COALESCE(({expr}), {_NULL_TRAP}({self.dialect.quote(key[0])}))"

    async def apply_range_once(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                               keys: int | None = None) -> int | None:
        # the trap of once_expression instead of a second look at the range for a NULL written: that look took
        # 0.07 s per million rows here, 7% of a one-statement UPDATE's time; the trap costs nothing measurable
        self._null_trapped = False
        try:
            return await self.execute(*range_call(plan.fill_once_first, plan.fill_once_after, lo, hi))
        except EngineError:
            if self._null_trapped:
                return None
            raise

    async def writes_token(self, table: str) -> object | None:
        # PRAGMA data_version changes when another connection (of any process) commits, never for this
        # connection's own commits, nor for checkpoints; the connection is part of the token, as a reconnect
        # starts a new count
        rows = await self.fetch(DATA_VERSION.format(schema=self._split(table)[0]))
        return (self._generation, rows[0][0]) if rows else None

    async def nothing_else_wrote(self, table: str, token: object, own_commits: int) -> bool:
        return await self.writes_token(table) == token

    async def enable_concurrent_writes(self) -> bool:
        return False   # one writer per database: a second batch would only wait for the first one's lock

    async def concurrent_reads(self) -> bool:
        # only WAL lets a reader and the writer run at once (a reader would hold up a rollback journal's commit),
        # and an in-memory database is private to its connection
        if self.url.database == ":memory:":
            return False
        rows = await self.fetch(JOURNAL_MODE)
        return bool(rows) and str(rows[0][0]).lower() == "wal"

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        await self._before_begin()
        # IMMEDIATE takes the write lock up front, so a batch never fails half-way on a lock upgrade
        await self.execute(BEGIN)
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                await self.execute(ROLLBACK)
            raise
        try:
            self._check_file()
        except EngineError:
            with contextlib.suppress(Exception):
                await self.execute(ROLLBACK)
            raise
        await self.execute(COMMIT)
        self._after_commit()

    def _check_file(self) -> None:
        """The database file is still the one this engine first opened: a file deleted or replaced during the
        run (its connection would go on writing into the unlinked one) is an error, not a completed job."""
        path = self.url.database
        if path == ":memory:":
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        now = None if st is None else (st.st_dev, st.st_ino)
        if self._file is None:
            self._file = now
        elif now != self._file:
            raise EngineError(f"SQLite database file {path!r} was {'deleted' if now is None else 'replaced'} "
                              "during the run (it is not the file the job opened); nothing more is written: "
                              "restore it, or run the job again against the new file")

    async def write_rows(self, info: TableInfo, shape: WriteShape, rows: Sequence[Sequence[Any]]) -> int:
        per_stmt = max(1, MAX_PARAMS // shape.width)
        written = 0
        for i in range(0, len(rows), per_stmt):
            chunk = rows[i:i + per_stmt]
            stmt = build_write(self.dialect, info, shape, len(chunk))
            values = dict(zip(stmt.names, (v for row in chunk for v in row), strict=True))
            written += await self.execute(stmt, values)
        return written

    def _split(self, table: str) -> tuple[str, str]:
        schema, _, name = table.rpartition(".")
        return (self.dialect.quote(schema) + ".") if schema else "", self.dialect.quote(name)

    async def table_info(self, table: str) -> TableInfo:
        schema, name = self._split(table)
        # table_xinfo lists generated columns too (hidden 2: VIRTUAL, 3: STORED; 1 is a virtual table's hidden one)
        cols = [c for c in await self.fetch(TABLE_COLUMNS.format(schema=schema, name=name)) if c[6] != 1]
        if not cols:
            raise SchemaError(f"table {table!r} does not exist in {self.url.database!r}")
        pk = tuple(c[1] for c in sorted((c for c in cols if c[5]), key=lambda c: c[5]))
        rowid_alias = len(pk) == 1 and next(c for c in cols if c[1] == pk[0])[2].upper() == "INTEGER"
        columns = {c[1]: Column(c[1], c[2], not c[3] and not (rowid_alias and c[1] == pk[0]), generated=c[6] in (2, 3),
                                auto_id=rowid_alias and c[1] == pk[0]) for c in cols}
        uniques = [pk] if pk else []
        for idx in await self.fetch(INDEXES.format(schema=schema, name=name)):
            if idx[2] and not (len(idx) > 4 and idx[4]):  # unique and not partial
                info = await self.fetch(INDEX_COLUMNS.format(schema=schema, index=self.dialect.quote(idx[1])))
                uniques.append(tuple(r[2] for r in sorted(info)))
        triggers = [n for n, text in await self.fetch(Stmt(TRIGGERS.format(schema=schema), ("t",)),
                                                      {"t": table.rpartition(".")[2]})
                    if _UPDATE_EVENT.search(text or "")]
        return TableInfo(table, columns, pk, tuple(uniques), tuple(triggers))

    async def estimate_rows(self, table: str) -> int:
        # an estimate for progress and ETA, as PostgreSQL's and MySQL's statistics are: the span of rowids, two
        # b-tree descents (exact on a table without gaps). count(*) reads every page of the table: 30 ms a
        # million rows here, 3% of that table's backfill. A WITHOUT ROWID table is counted.
        t = self.dialect.table(table)
        try:
            [(lo, hi)] = await self.fetch(ROWID_SPAN.format(table=t))
        except EngineError:   # no rowid
            return await self.count_rows(table)
        return hi - lo + 1 if isinstance(lo, int) and isinstance(hi, int) else 0

    async def explain(self, stmt: Stmt, values: dict[str, Any]) -> list[str]:
        rows = await self.fetch(Stmt("EXPLAIN QUERY PLAN " + stmt.sql, stmt.names), values)
        return [r[-1] for r in rows]

    def explain_uses_index(self, lines: list[str]) -> bool:
        # "SCAN t" without an index reads the whole table; scans of our own subquery (bf_r) are bounded
        return not any(ln.startswith("SCAN") and "subquery" not in ln and "bf_r" not in ln and "INDEX" not in ln
                       for ln in lines)

    # --- plan's assessment
    async def privileges(self, needs: Sequence[Need]) -> Privileges:
        detail = ("SQLite has no users or grants: the daemon may do what its OS user may do with the database "
                  "file and its folder")
        path = self.url.database
        if path == ":memory:":
            return Privileges(None, detail=detail)
        file, folder = Path(path), Path(path).resolve().parent
        access: dict[str, object] = {"file": str(file), "file_writable": os.access(file, os.R_OK | os.W_OK),
                                     "folder": str(folder), "folder_writable": os.access(folder, os.W_OK | os.X_OK)}
        problems = []
        if not access["file_writable"]:
            problems.append(f"the database file {file} is not writable by this OS user: the run cannot write it")
        if not access["folder_writable"]:
            problems.append(f"the folder {folder} is not writable by this OS user: SQLite creates the WAL's files "
                            "there (-wal, -shm), and backfilld the job's lease file")
        return Privileges(None, detail=detail, access=access, problems=tuple(problems))

    async def table_size(self, table: str, rows: int) -> TableSize:
        schema, _, name = table.rpartition(".")
        try:
            [(size,)] = await self.fetch(Stmt(TABLE_BYTES, ("s", "t")), {"s": schema or "main", "t": name})
            source = "dbstat: the table's pages"
        except EngineError:   # SQLite built without dbstat: the whole database's pages, an upper bound
            try:
                q = self._split(table)[0]
                [(pages,)] = await self.fetch(PAGE_COUNT.format(schema=q))
                [(page,)] = await self.fetch(PAGE_SIZE.format(schema=q))
            except EngineError as exc:
                return TableSize(None, None, "page_count x page_size", detail=f"could not read: {exc}")
            size, source = int(pages) * int(page), "page_count x page_size: the whole database's pages (at most)"
        if size is None:
            return TableSize(None, None, source, detail="no such table")
        return TableSize(int(size), int(size) / rows if rows > 0 else None, source + " / the row estimate")

    async def log_volume(self, size: TableSize, writes: Writes) -> LogVolume:
        try:
            [(mode,)] = await self.fetch(JOURNAL_MODE)
            [(page,)] = await self.fetch(PAGE_SIZE.format(schema=""))
        except EngineError as exc:
            return LogVolume(None, None, {}, f"could not read the journal settings: {exc}")
        settings = {"journal_mode": str(mode).lower(), "page_size": str(page)}
        frame = int(page) + WAL_FRAME_HEADER_BYTES
        if size.table_bytes is None:
            return LogVolume(None, None, settings, "the table's size is not known")
        # batches run in key order: each page of the table is changed about once, and each commit also
        # writes the b-tree's pages above the leaves it changed
        total = -(-size.table_bytes // int(page)) * frame + writes.batches * BTREE_UPPER_PAGES * frame
        what = "WAL frames" if settings["journal_mode"] == "wal" else "the rollback journal's pages"
        return LogVolume(int(total), total / writes.rows if writes.rows else None, settings,
                         f"{what}: the table's pages once + {BTREE_UPPER_PAGES} b-tree pages per batch, "
                         f"each {frame} B",
                         ("SQLite has no replication: the WAL is copied into the database file at checkpoints "
                          "(a tool shipping the WAL, such as Litestream, ships about this much); rows that grow "
                          "split pages: more",))

    def pending_index(self, spec: TableSpec, name: str, key_bytes: int, target_bytes: int) -> PendingIndex | None:
        if spec.overwrite:
            return None
        d = self.dialect
        ddl = (f"CREATE INDEX {d.in_schema(spec.table, name)} ON {d.quote(spec.table.rpartition('.')[2])} "
               f"({', '.join(d.quote(k) for k in spec.key)}) WHERE {any_null(d, spec)}")
        # an index record: its header, the key and the rowid (varints), about this much besides the key
        return PendingIndex((ddl,), True, key_bytes + 6,
                            "SQLite builds it in one write transaction: the application's writes wait for the "
                            "build (one read of the table). Create it once the fill pass is done: it then holds "
                            "only the rows old code leaves NULL")

    async def index_serves(self, table: str, stmt: Stmt, values: dict[str, Any]) -> tuple[bool, list[str]]:
        lines = await self.explain(stmt, values)
        schema, name = self._split(table)
        partial = {r[1] for r in await self.fetch(INDEXES.format(schema=schema, name=name)) if len(r) > 4 and r[4]}
        for ln in lines:
            if ln.startswith("SEARCH"):
                return True, lines
            m = _SCAN_INDEX.match(ln)
            if m and m.group(1) in partial:
                return True, lines
        return False, lines


def build_write(d: Dialect, info: TableInfo, shape: WriteShape, n_rows: int) -> Stmt:
    """UPDATE ... FROM a VALUES list of the batch's computed rows, guarded per row."""
    sets, joins, guards = transform_update_parts(d, info, shape)
    width = shape.width
    row = "(" + ", ".join("?" * 1 for _ in range(width)) + ")"
    cols = ", ".join(f"column{j + 1} AS c{j}" for j in range(width))
    src = f"(SELECT {cols} FROM (VALUES {', '.join([row] * n_rows)})) AS bf_v"
    sql = (f"UPDATE {d.table(info.name)} AS bf_t SET " + ", ".join(f"{d.quote(t)} = {v}" for t, v in sets)
           + f" FROM {src} WHERE " + " AND ".join(joins + guards))
    return Stmt(sql, tuple(f"r{i}c{j}" for i in range(n_rows) for j in range(width)))
