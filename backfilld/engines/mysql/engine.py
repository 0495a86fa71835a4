"""MySQL 8 and MariaDB engine over aiomysql: dialect, connection, catalog, error mapping (constant SQL: sql.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import math
import re
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import aiomysql
import pymysql
import pymysql.converters
from pymysql.constants import CLIENT

from backfilld import tls
from backfilld.aio import within
from backfilld.engines import grants
from backfilld.engines.assessment import LogVolume, PendingIndex, Privileges, TableSize, Writes, bare_ident
from backfilld.engines.base import AppActivity, Engine, describe, lease_key
from backfilld.engines.catalog import Column, TableInfo
from backfilld.engines.grants import Held, Need
from backfilld.engines.mysql.sql import (
    ACTIVE_SESSIONS,
    BINLOG_FORMAT,
    BINLOG_SETTINGS,
    COLUMN_PRIVILEGES,
    CURRENT_ACCOUNT,
    CURRENT_ACCOUNT_ONLY,
    CURRENT_DATABASE,
    ESTIMATE_ROWS,
    GROUP_CONCAT_MAX,
    HEARTBEAT_DDL,
    HEARTBEAT_READ,
    HEARTBEAT_WRITE,
    LEASE_HOLDER,
    LOCK_WAITS,
    MARIADB_BOUNDS,
    METADATA_LOCK_WAIT_S,
    MYSQL_BOUNDS,
    READ_COMMITTED,
    RELEASE_LOCKS,
    REPLICA_STATUS,
    ROW_LOCK_WAIT_S,
    SCHEMA_PRIVILEGES,
    SERVER_FACTS,
    SET_NAMES,
    SLAVE_STATUS,
    TABLE_COLUMNS,
    TABLE_OPTIONS,
    TABLE_PRIVILEGES,
    TABLE_SIZE,
    THREADS_RUNNING,
    TRY_LEASE,
    UNIQUE_INDEX_COLUMNS,
    UPDATE_TRIGGERS,
    USER_PRIVILEGES,
)
from backfilld.engines.sqldialect import Dialect, Lexicon, Stmt
from backfilld.engines.statements import (
    BatchPlan,
    KeyedUpdate,
    TableSpec,
    WriteShape,
    chunks,
    kept_sets,
    keys_limit,
    range_call,
    transform_update_parts,
)
from backfilld.errors import (
    VALUE_NOT_SHOWN,
    ConfigError,
    ConnectError,
    EngineError,
    RetryableError,
    SchemaError,
    TLSError,
)

if TYPE_CHECKING:
    from backfilld.engines.triggers import Triggers

# Server error codes worth another try: lock wait timeout, deadlock, statement timeouts
# (MySQL max_execution_time, MariaDB max_statement_time).
T = TypeVar("T")

_RETRY = {1205: "lock_timeout", 1213: "deadlock", 3024: "canceled", 1969: "canceled"}
# Client and server codes that mean the connection is gone: reconnect, then retry.
_RECONNECT = {2002, 2003, 2006, 2013, 2055, 1053, 1927, 4031, 0}


_MATCHED = re.compile(rb"Rows matched: (\d+)\s+Changed: (\d+)")

# MariaDB: a batch's range UPDATE that gives up at once (error 1205) on a row another session holds, instead of
# waiting: InnoDB runs no deadlock search for a wait of 0 s, so the application is never picked as a victim by it.
# (MySQL's innodb_lock_wait_timeout is 1 s at least: there a batch always locks first, then updates by key.)
_NO_WAIT = "SET STATEMENT innodb_lock_wait_timeout = 0 FOR "
# after a no-wait UPDATE met a row another session holds, this connection's batches lock first for this long
# (the application is writing there; each failed try cost an UPDATE of the range up to the row it met)
CONTENDED_HOLD_S = 5.0


def driver_problem() -> str | None:
    """What makes the installed driver unfit, or None. aiomysql binds bytes through PyMySQL's
    escape_bytes_prefixed, which PyMySQL 1.2 removed (1.2.3 left a placeholder string in its place): every
    binary key or value would fail with "'str' object is not callable". pyproject.toml bounds PyMySQL below 1.2."""
    if not callable(getattr(pymysql.converters, "escape_bytes_prefixed", None)):
        import importlib.metadata  # here: it costs every command on MySQL ~0.015 s, and only this message uses it

        return (f"PyMySQL {importlib.metadata.version('PyMySQL')} cannot bind binary values for aiomysql (it lacks "
                "escape_bytes_prefixed); install a PyMySQL below 1.2: pip install 'PyMySQL>=1.0.2,<1.2'")
    return None


# Column types that sort (and compare with a number) by a number the server shows otherwise: BIT as a bit
# string, ENUM by its members' index (not alphabetically), SET by its bits. A key of these types is read as
# that number (key_value), so that `key > value read` compares as ORDER BY key sorts.
_NUMBERED = ("bit", "enum", "set")
_INTEGERS = ("tinyint", "smallint", "mediumint", "int", "integer", "bigint")


def base_type(column: Column) -> str:
    return re.split(r"[\s(]", column.type.lower(), maxsplit=1)[0]


# Types holding text, which their collation (MySQL's JSON: its own equality, 1 = 1.0) compares loosely
_TEXT_TYPES = ("char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "json")


def is_text(column: Column) -> bool:
    """Whether the column holds text (a collation names its character set; JSON is text in utf8mb4)."""
    return bool(column.collation) or base_type(column) in _TEXT_TYPES


def single_precision(column: Column) -> bool:
    """FLOAT or FLOAT(p) with p up to 24: a 4-byte float (FLOAT(25..53) is a DOUBLE)."""
    m = re.match(r"float(?:\((\d+)\))?", column.type.lower())
    return m is not None and (m.group(1) is None or int(m.group(1)) <= 24)


class MySQLDialect(Dialect):
    name = "mysql"
    state_types = {**Dialect.state_types, "count": "int"}
    state_table_options = TABLE_OPTIONS
    quote_char = "`"
    row_values = False
    fold_case = True
    skip_locked_clause = "FOR UPDATE SKIP LOCKED"
    lock_inline = False   # UPDATE ... WHERE key IN (SELECT ... SKIP LOCKED) locks (and waits for) the whole range
    lock_limit = True
    lexicon = Lexicon(string_quotes="'\"", backslash_escapes=True, ident_quotes=("``",), hash_comments=True,
                      dash_comment_space=True, parser="mysql")

    def database_ddl(self, name: str) -> tuple[str, str]:
        q = self.quote(name)
        return f"CREATE DATABASE {q} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", f"DROP DATABASE IF EXISTS {q}"

    conflict_updates_id = True

    def on_conflict_nothing(self, id_col: str, unique: Sequence[str]) -> str:
        # not INSERT IGNORE, which turns every error into a warning; a no-op update on a duplicate key (of any
        # unique index: MySQL cannot name one) keeps the existing row as it is
        q = self.quote(id_col)
        return f"ON DUPLICATE KEY UPDATE {q} = {q}"

    def triggers(self) -> Triggers:
        from backfilld.engines.mysql.triggers import MySQLTriggers  # only when triggers are used

        return MySQLTriggers(self)

    # placeholders are a marker until finish(), so that a literal %s inside an expression stays literal
    _MARK = "\x00p\x00"

    def placeholder(self, n: int) -> str:
        return self._MARK

    def exact(self, expr: str, column: Column | None) -> str:
        if column is None:
            return expr
        if is_text(column):   # bytes, not a collation: even utf8mb4_bin pads trailing spaces on MariaDB
            return _bytes(expr)
        if base_type(column) == "bit":   # a BIT compares with bytes (as the driver reads it) as a decimal
            return f"CAST({expr} AS BINARY)"
        return expr

    def same(self, a: str, b: str, column: Column | None = None) -> str:
        return f"{self.exact(a, column)} <=> {self.exact(b, column)}"

    def differs(self, a: str, b: str, column: Column | None = None) -> str:
        return f"NOT ({self.same(a, b, column)})"

    def holds(self, stored: str, expr: str, column: Column | None) -> str:
        if column is not None and base_type(column) == "set":   # members in any order, each once: compare bits
            return f"({stored} + 0) <=> {self.cast_to(expr, column)}"
        if column is not None and base_type(column) == "bit":   # the expression's number or bits, as a number
            return f"{stored} <=> {expr}"
        return super().holds(stored, expr, column)

    def stale(self, stored: str, expr: str, column: Column | None) -> str:
        return f"NOT ({self.holds(stored, expr, column)})"

    def key_value(self, col: str, column: Column | None) -> str:
        if column is not None and base_type(column) in _NUMBERED:
            return f"({self.quote(col)} + 0)"
        return self.quote(col)

    def as_read(self, expr: str, column: Column | None) -> str:
        # BIT as its number (its bytes would bind back as a string, which BIT compares as a decimal); text as its
        # bytes, so that verify --fix's guard sees a change in case only
        if column is not None and base_type(column) == "bit":
            return f"({expr} + 0)"
        if column is not None and column.collation:
            return _bytes(expr)
        return expr

    def cast_to(self, expr: str, column: Column | None) -> str:
        # MySQL's CAST takes a few type names only; map the column's type onto the nearest
        if column is None:
            return expr
        t, base = column.type.lower(), base_type(column)
        if base == "json":   # MySQL's JSON type (MariaDB's JSON is LONGTEXT, a text column)
            return f"CAST({expr} AS JSON)"
        m = re.match(r"(decimal|numeric)\((\d+),\s*(\d+)\)", t)
        if m:
            return f"CAST({expr} AS DECIMAL({m.group(2)},{m.group(3)}))"
        if base in ("tinyint", "smallint", "mediumint", "int", "integer", "bigint"):
            return f"CAST({expr} AS {'UNSIGNED' if 'unsigned' in t else 'SIGNED'})"
        if single_precision(column):
            return f"CAST({expr} AS FLOAT)"
        if base in ("float", "double", "real"):
            return f"CAST({expr} AS DOUBLE)"
        if base in ("date", "time", "datetime", "timestamp"):
            fsp = re.search(r"\((\d)\)", t)
            return f"CAST({expr} AS {'TIME' if base == 'time' else base.upper().replace('TIMESTAMP', 'DATETIME')}" \
                   f"{f'({fsp.group(1)})' if fsp else ''})"
        if base == "binary":   # BINARY(n) pads with zero bytes, as CAST to it does
            return f"CAST({expr} AS {t.upper()})"
        if base == "set":
            return set_mask(expr, column)
        if base == "year":
            return year_value(expr)
        if base == "char":   # CHAR drops trailing spaces (it is read without them)
            return f"TRIM(TRAILING ' ' FROM {expr})"
        return expr

    def finish(self, sql: str) -> str:
        # the driver formats parameters with the % operator: a literal % in an expression must be doubled
        return sql.replace("%", "%%").replace(self._MARK, "%s")


# Errors whose text quotes a row's value, in single quotes the server does not escape, before what it names:
ER_DUP_ENTRY = 1062                  # Duplicate entry 'v1' for key 'a'
ER_TRUNCATED_WRONG_VALUE = 1292      # Truncated incorrect INTEGER value: 'abc' / Incorrect date value: 'abc' for column
ER_ILLEGAL_VALUE_FOR_TYPE = 1367     # Illegal double '1e999' value found during parsing
ER_TRUNCATED_WRONG_VALUE_FOR_FIELD = 1366   # Incorrect integer value: 'abc' for column `db`.`t`.`c` at row 1
ER_INVALID_CHARACTER_STRING = 1300   # Invalid utf8mb4 character string: 'E228A1'
ER_WRONG_VALUE_FOR_TYPE = 1411       # Incorrect datetime value: 'v1' for function str_to_date
ER_WRONG_VALUE = 1525                # Incorrect DATE value: 'abc'
ER_CANNOT_CONVERT_CHARACTER = 3854   # Cannot convert string '\xE2\x82' from binary to utf8mb4
_VALUE_CODES = {ER_DUP_ENTRY, ER_TRUNCATED_WRONG_VALUE, ER_ILLEGAL_VALUE_FOR_TYPE, ER_TRUNCATED_WRONG_VALUE_FOR_FIELD,
                ER_INVALID_CHARACTER_STRING, ER_WRONG_VALUE_FOR_TYPE, ER_WRONG_VALUE, ER_CANNOT_CONVERT_CHARACTER}
# what follows the value's closing quote in those texts, if anything does
_AFTER_VALUE = re.compile(r"' (?:for (?:key|column|function)|at row|value found|from \w+ to) ")


def mysql_message(code: int, text: str) -> str:
    """The server's text without the row's value it quotes (_VALUE_CODES): from its first quote to the first
    quote followed by what such a value is followed by (or to the end), which stays."""
    if code not in _VALUE_CODES or "'" not in text:
        return text
    start = text.index("'")
    after = _AFTER_VALUE.search(text, start + 1)
    return text[:start] + VALUE_NOT_SHOWN + (text[after.start() + 1:] if after else "")


def translate_mysql(exc: BaseException) -> EngineError:
    if isinstance(exc, pymysql.err.MySQLError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        text = mysql_message(code, exc.args[1] if len(exc.args) > 1 else str(exc))
        msg = f"{code}: {text}" if code else f"connection closed: {text or type(exc).__name__}"
        if code in _RETRY:
            return RetryableError(msg, kind=_RETRY[code])
        if code in _RECONNECT or isinstance(exc, pymysql.err.InterfaceError):
            return ConnectError(msg)
        return EngineError(msg)
    if isinstance(exc, (OSError, asyncio.TimeoutError, ConnectionError, RuntimeError)):
        return ConnectError(f"connection to MySQL lost or refused: {describe(exc)}")
    return EngineError(f"{type(exc).__name__}: {exc}")


class _NoTLS(Exception):
    """The server offers no TLS where the URL requires it."""


class _Connection(aiomysql.Connection):
    """aiomysql's connection, which, given a TLS context, goes on in plaintext when the server offers no TLS.
    This one refuses to where the URL's ssl-mode requires TLS, before it authenticates (nothing of the
    password's exchange in plaintext)."""

    tls_required = False

    async def _request_authentication(self) -> None:
        if self.tls_required and not self.server_capabilities & CLIENT.SSL:
            raise _NoTLS()
        await super()._request_authentication()


# A plaintext connection refused by a server with require_secure_transport = ON: MySQL says so
# (ER_SECURE_TRANSPORT_REQUIRED); MariaDB answers ER_ACCESS_DENIED_ERROR, as for a wrong password.
_INSECURE_TRANSPORT = 3159
_ACCESS_DENIED = 1045


def _refused_plaintext(exc: BaseException, mode: str) -> str | None:
    """Whether a failed connection was refused for being unencrypted: "yes", "maybe" (MariaDB's access denied
    to a connection made in plaintext), or None."""
    code = exc.args[0] if isinstance(exc, pymysql.err.MySQLError) and exc.args else None
    if code == _INSECURE_TRANSPORT:
        return "yes"
    if code == _ACCESS_DENIED and mode == "disable":
        return "maybe"
    return None


class MySQLEngine(Engine):
    dialect = MySQLDialect()

    _conn: aiomysql.Connection | None = None
    _leased = False
    _read_committed = False   # set by enable_concurrent_writes, kept across reconnects
    # VERSION(), binlog_format = STATEMENT, innodb_rollback_on_timeout; read at the first connect
    _server: tuple[str, bool, bool] | None = None
    _contended_until = 0.0   # monotonic: until then batches lock first (see _no_wait)
    _id: int | None = None
    # connection ids of the MySQL sessions this process has open, by server (host, port): backfilld's own,
    # which app_activity leaves out (ids are per server: a replica's may be an application's on the primary)
    own_ids: ClassVar[dict[tuple[str, int], set[int]]] = {}
    _waits_seen: dict[Any, float] | None = None   # app_activity: lock waits by transaction, first seen when

    @property
    def _server_key(self) -> tuple[str, int]:
        return (str(self.url.host), int(self.url.port or 3306))

    def translate(self, exc: BaseException) -> EngineError:
        return translate_mysql(exc)

    async def connect(self) -> None:
        problem = driver_problem()
        if problem:
            raise EngineError(problem)
        u = self.url
        try:
            # the whole handshake within connect_timeout_s (the driver's own bound covers the TCP connect only:
            # a listener that accepts but never speaks would hang it)
            await within(self._connect(), self.connect_timeout_s)
        except (ConfigError, TLSError):
            await self.close()
            raise
        except _NoTLS:
            await self.close()
            raise TLSError(f"{u.origin}.url: cannot connect to {u}: the server offers no TLS, and {u.tls.spelled} "
                           "requires it; enable TLS on the server (ssl_cert and ssl_key); nothing of the login was "
                           "sent") from None
        except Exception as exc:  # noqa: BLE001 - every driver failure becomes one of ours
            await self.close()
            failure = tls.connect_error(exc, u)
            if failure is not None:
                raise failure from None
            refused = _refused_plaintext(exc, u.tls.mode)
            hint = tls.refused_plaintext(u, certain=refused == "yes") if refused else ""
            raise ConnectError(f"cannot connect to {u}: {translate_mysql(exc)}{hint}") from None

    async def _connect(self) -> None:
        u = self.url
        conn = _Connection(
            host=u.host, port=u.port or 3306, user=u.user or "root", password=u.password or "", db=u.database,
            charset="utf8mb4", use_unicode=True, autocommit=True, connect_timeout=self.connect_timeout_s,
            # rowcount = rows matched, as on PostgreSQL and SQLite, not rows whose bytes changed
            client_flag=CLIENT.FOUND_ROWS, ssl=tls.context(u.tls, f"{u.origin}.url"))
        conn.tls_required = u.tls.required
        self._conn = conn
        await conn._connect()   # what aiomysql.connect() does, with this connection class
        writer = conn._writer   # aiomysql has no public accessor for the stream
        tls.after_connect(u, encrypted=writer is not None and writer.get_extra_info("ssl_object") is not None,
                          peer=writer.get_extra_info("peername") if writer is not None else None)
        async with self._conn.cursor() as cur:
            # innodb_lock_wait_timeout has whole-second resolution: round up, at least 1 s
            wait_s = max(1, math.ceil(self.lock_timeout_s))
            await cur.execute(ROW_LOCK_WAIT_S.format(seconds=wait_s))
            # metadata locks too (default: a year): a batch queued behind an ALTER gives up and retries
            await cur.execute(METADATA_LOCK_WAIT_S.format(seconds=wait_s))
            await cur.execute(SET_NAMES)
            await cur.execute(GROUP_CONCAT_MAX)
            await cur.execute(SERVER_FACTS)
            version, log_bin, fmt, self._id, rollback_all = await cur.fetchone()
            MySQLEngine.own_ids.setdefault(self._server_key, set()).add(self._id)
            if self._server is None:
                self._server = (str(version), bool(int(log_bin or 0)) and str(fmt).upper() == "STATEMENT",
                                bool(int(rollback_all or 0)))
            # READ COMMITTED wherever the server allows it (not with binlog_format = STATEMENT): a batch's
            # locking read then takes no gap locks, which would make the application's inserts next to
            # its range wait (see enable_concurrent_writes)
            if self._read_committed or not self._server[1]:
                await cur.execute(READ_COMMITTED)
            if "mariadb" in str(version).lower():
                idle_s = max(1, math.ceil(self.idle_in_transaction_timeout_s))   # whole seconds
                await cur.execute(MARIADB_BOUNDS.format(statement_s=f"{self.statement_timeout_s:g}", idle_s=idle_s))
            else:
                await cur.execute(MYSQL_BOUNDS.format(statement_ms=int(self.statement_timeout_s * 1000)))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        MySQLEngine.own_ids.get(self._server_key, set()).discard(self._id or 0)
        if conn is not None:
            if self._leased and not conn.closed:
                # the server drops a closed session's locks only once its thread notices; release them now, so
                # that a daemon started right after this one finds the job's lease free
                with contextlib.suppress(Exception):
                    async with conn.cursor() as cur:
                        await within(cur.execute(RELEASE_LOCKS), 2)
            conn.close()
        self._leased = False

    async def enable_concurrent_writes(self) -> bool:
        """READ COMMITTED for this session's batches. Under REPEATABLE READ, InnoDB's UPDATE of `key > lo AND
        key <= hi` also locks the first row past hi (a next-key lock): the first row of the next batch, which
        the other session holds until it commits. READ COMMITTED takes no gap or next-key locks (it also stops
        a batch from blocking the application's inserts next to its range). A server that logs statements
        (binlog_format = STATEMENT) refuses InnoDB writes under READ COMMITTED: one batch at a time there."""
        rows = await self.fetch(BINLOG_FORMAT)
        log_bin, fmt = rows[0] if rows else (0, "")
        if int(log_bin or 0) and str(fmt).upper() == "STATEMENT":
            return False
        if not self._read_committed:
            await self.execute(READ_COMMITTED)
            self._read_committed = True
        return True

    def _c(self) -> aiomysql.Connection:
        if self._conn is None or self._conn.closed:
            raise ConnectError("not connected to MySQL")
        return self._conn

    async def _run(self, stmt: Stmt | str, values: dict[str, Any] | None
                   ) -> tuple[list[tuple[Any, ...]], int, bytes]:
        """Rows, row count, and the OK packet's text (e.g. b"Rows matched: 5  Changed: 5  Warnings: 0")."""
        with self.driver_errors(), warnings.catch_warnings():
            # notes such as "table already exists" on IF NOT EXISTS are expected, not news
            warnings.simplefilter("ignore", pymysql.Warning)
            async with self._c().cursor() as cur:
                args = None if isinstance(stmt, str) else tuple(bindable(v) for v in stmt.args(values or {}))
                # one deadline for the statement's round trip (the cursor buffers the whole result on execute)
                await self._within_deadline(cur.execute(stmt if isinstance(stmt, str) else stmt.sql, args))
                rows = await cur.fetchall() if cur.description else ()
                info = getattr(cur._result, "message", None) or b""  # the driver keeps the OK packet's text there
                return [tuple(r) for r in rows], cur.rowcount, info if isinstance(info, bytes) else str(info).encode()

    async def fetch(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return (await self._run(stmt, values))[0]

    async def execute(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> int:
        return max(0, (await self._run(stmt, values))[1])

    async def _within_deadline(self, step: Awaitable[T]) -> T:
        """A round trip within statement_deadline_s: past it the server did not answer within its own statement
        bound, so the connection is given up (closed, not reused) and the error is a lost connection."""
        try:
            return await within(step, self.statement_deadline_s)
        except TimeoutError:
            if self._conn is not None:
                self._conn.close()
            raise ConnectError(f"MySQL did not answer within {self.statement_deadline_s:g} s "
                               f"(statement_timeout_s {self.statement_timeout_s:g} s); the connection is given "
                               "up") from None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        with self.driver_errors():
            await self._within_deadline(self._c().begin())
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                await within(self._c().rollback(), self.statement_deadline_s)
            raise
        with self.driver_errors():
            await self._within_deadline(self._c().commit())

    def plan(self, spec: TableSpec, once_expr: str | None = None, lock: str | None = None) -> BatchPlan:
        plan = super().plan(spec, once_expr, lock)
        key, columns = spec.key, spec.columns
        wrap = key_wraps(key, columns)
        if plan.keyed_update is not None:
            plan = dataclasses.replace(plan, keyed_update=dataclasses.replace(plan.keyed_update, wrap=wrap))
        if plan.keyed_fill_once is not None:
            plan = dataclasses.replace(plan, keyed_fill_once=dataclasses.replace(plan.keyed_fill_once, wrap=wrap))
        col = columns.get(key[0]) if len(key) == 1 else None
        if plan.lock_first is None or plan.lock_after is None or col is None or base_type(col) not in _INTEGERS:
            return plan
        # the locked keys of an integer key as one comma-separated text: reading 100,000 one-column rows cost
        # the client 5-6 us each, parsing one string a fraction of that
        k = self.dialect.quote(key[0])

        def listed(stmt: Stmt) -> Stmt:
            return Stmt(f"SELECT GROUP_CONCAT({k} ORDER BY {k} SEPARATOR ','), COUNT(*) FROM ({stmt.sql}) AS bf_l",
                        stmt.names)

        return dataclasses.replace(plan, lock_list_first=listed(plan.lock_first),
                                   lock_list_after=listed(plan.lock_after))

    def no_wait(self, stmt: Stmt, key: Sequence[str] = ()) -> Stmt | None:
        """`stmt` run so that it never waits for a row lock (MariaDB), or None where that cannot be done safely:
        MySQL (no wait shorter than 1 s), or innodb_rollback_on_timeout = ON (the error would end the batch's
        whole transaction, not only its statement). With the batch's `key`: in key order, at most `n_keys`
        rows (a parameter: the range's key count), so that a range whose rows all need a value (a fill pass)
        ends without reading the row past it, which the next batch in flight holds: waiting for it, the UPDATE
        would give up. (A server logging statements takes no LIMIT in an UPDATE without a warning; it runs
        one batch at a time, so no batch holds the next range there.)"""
        version, logs_statements, rollback_all = self._server or ("", False, True)
        if "mariadb" not in version.lower() or rollback_all:
            return None
        if not key or logs_statements:
            return Stmt(_NO_WAIT + stmt.sql, stmt.names)
        order = ", ".join(self.dialect.quote(k) for k in key)
        return Stmt(f"{_NO_WAIT}{stmt.sql} ORDER BY {order} LIMIT %s", (*stmt.names, "n_keys"))

    async def _no_wait(self, plan: BatchPlan, stmt: Stmt, values: dict[str, Any], keys: int | None
                       ) -> tuple[int, bytes] | None:
        """A batch's range UPDATE, tried before the locking read: on an idle range it is the whole batch (one
        walk of the range, where locking first walks it twice: at 10M rows the pages no longer stay cached in
        between). It never waits: on the first row of the range that another session holds it fails at once,
        its statement rolled back (locks it took stay with the batch's transaction, on rows of this batch's
        range), and the batch locks first instead (SKIP LOCKED), as do this connection's batches for
        CONTENDED_HOLD_S. A row the application inserted and has not committed is passed over by the UPDATE
        (no committed version to match), as by the locking read: a later pass finds it. None: locked first."""
        quick = self.no_wait(stmt, plan.key)
        if quick is None or time.monotonic() < self._contended_until:
            return None
        try:
            _, matched, info = await self._run(quick, {**values, "n_keys": keys_limit(keys)})
        except RetryableError as exc:
            if exc.kind != "lock_timeout":
                raise
            self._contended_until = time.monotonic() + CONTENDED_HOLD_S
            return None
        return max(0, matched), info

    async def apply_range(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                          keys: int | None = None) -> int:
        if plan.keyed_update is not None:
            done = await self._no_wait(plan, *range_call(plan.update_first, plan.update_after, lo, hi), keys)
            if done is not None:
                return done[0]
        return await super().apply_range(plan, lo, hi, keys)

    async def locked_keys(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                          keys: int | None = None) -> list[tuple[Any, ...]]:
        if plan.lock_list_first is None:
            return await super().locked_keys(plan, lo, hi, keys)
        stmt, values = range_call(plan.lock_list_first, plan.lock_list_after, lo, hi)
        [(text, n)] = await self.fetch(stmt, {**values, "n_keys": keys_limit(keys)})
        locked = [(int(v),) for v in (text.decode() if isinstance(text, bytes) else text).split(",")] if n else []
        if len(locked) != n:   # cut at group_concat_max_len (set at connect): cannot be, but never trust a count
            raise EngineError(f"the locked keys of a batch came back cut short ({len(locked)} of {n}); lower "
                              "[throttle] max_batch")
        return list[tuple[Any, ...]](locked)

    async def lock_support(self) -> str | None:
        version = self._server[0] if self._server else ""   # read at connect
        m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
        if m is None:
            return f"the server's version {version!r} is unknown"
        v = tuple(int(x) for x in m.groups())
        if "mariadb" in version.lower():
            return None if v >= (10, 6, 0) else f"MariaDB {version} has no SKIP LOCKED (10.6 and later have)"
        return None if v >= (8, 0, 1) else f"MySQL {version} has no SKIP LOCKED (8.0.1 and later have)"

    async def apply_range_once(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                               keys: int | None = None) -> int | None:
        # the UPDATE's OK packet says "Rows matched: M  Changed: C": a row matched (its target NULL) but not
        # changed was written NULL over NULL, its expression NULL; one statement, no second look at the range
        if plan.keyed_fill_once is not None:   # lock first (SKIP LOCKED), then write the rows locked
            done = await self._no_wait(plan, *range_call(plan.fill_once_first, plan.fill_once_after, lo, hi), keys)
            if done is not None:
                return once_counted(*done)
            written = 0
            locked = await self.locked_keys(plan, lo, hi, keys)
            for stmt, values in plan.keyed_fill_once.statements(self.dialect, locked):
                _, matched, info = await self._run(stmt, values)
                # without the counts, no telling a NULL written from a row passed over: the guarded form then
                rows = once_counted(max(0, matched), info)
                if rows is None:
                    return None
                written += rows
            return written
        _, matched, info = await self._run(*range_call(plan.fill_once_first, plan.fill_once_after, lo, hi))
        m = _MATCHED.search(info)
        if m is None:   # a server that words it otherwise: look at the range instead
            return await self.apply_range_once_check(plan, lo, hi, max(0, matched))
        return once_counted(max(0, matched), info)

    # a named user lock: held while this connection lives; the name is server-wide, so it includes the database
    async def try_lease(self, name: str) -> bool:
        rows = await self.fetch(Stmt(TRY_LEASE, ("k",)), {"k": self._lease(name)})
        self._leased = self._leased or rows[0][0] == 1
        return rows[0][0] == 1

    async def lease_holder(self, name: str) -> str | None:
        rows = await self.fetch(Stmt(LEASE_HOLDER, ("k",)), {"k": self._lease(name)})
        holder = rows[0][0] if rows else None
        return None if holder is None else f"MySQL connection id {holder} (KILL {holder} if its daemon is gone)"

    def _lease(self, name: str) -> str:
        return lease_key(f"{self.url.database}/{name}")

    def unpageable_key(self, column: Column) -> str | None:
        if single_precision(column):
            return "the server sends FLOAT values rounded to 6 digits, so a value read does not bind back as the " \
                   "stored one"
        return None

    def _split(self, table: str) -> tuple[str | None, str]:
        schema, _, name = table.rpartition(".")
        return schema or None, name

    async def table_info(self, table: str) -> TableInfo:
        schema, name = self._split(table)
        args = {"s": schema, "t": name}
        cols = await self.fetch(Stmt(TABLE_COLUMNS, ("s", "t")), args)
        if not cols:
            raise SchemaError(f"table {table!r} does not exist in database {self.url.database!r}")
        idx = await self.fetch(Stmt(UNIQUE_INDEX_COLUMNS, ("s", "t")), args)
        keys: dict[str, list[str]] = {}
        for index, col in idx:
            keys.setdefault(index, []).append(col)
        triggers = await self.fetch(Stmt(UPDATE_TRIGGERS, ("s", "t")), args)
        return TableInfo(table, {c[0]: column(*c) for c in cols}, tuple(keys.get("PRIMARY", ())),
                         tuple(tuple(v) for v in keys.values()), tuple(r[0] for r in triggers))

    async def estimate_rows(self, table: str) -> int:
        schema, name = self._split(table)
        rows = await self.fetch(Stmt(ESTIMATE_ROWS, ("s", "t")), {"s": schema, "t": name})
        return int(rows[0][0] or 0) if rows else 0

    async def explain(self, stmt: Stmt, values: dict[str, Any]) -> list[str]:
        with self.driver_errors():
            async with self._c().cursor() as cur:
                await cur.execute("EXPLAIN " + stmt.sql, tuple(stmt.args(values)))
                names = [d[0] for d in cur.description]
                return [", ".join(f"{n}={v}" for n, v in zip(names, r, strict=True) if v is not None)
                        for r in await cur.fetchall()]

    def explain_uses_index(self, lines: list[str]) -> bool:
        # type=ALL is a full table scan, type=index a full index scan (an ENUM or SET key's range: its index
        # sorts by number, which a range on it does not use); DERIVED rows read a derived table we built
        return not any(("type=ALL" in ln or "type=index" in ln) and "DERIVED" not in ln and "<derived" not in ln
                       for ln in lines)

    # --- plan's assessment
    def _name(self, ident: str) -> str:
        return ident if bare_ident(ident, lower_only=False) else self.dialect.quote(ident)

    async def grant_sql(self, need: Need, to: str) -> str:
        """The statement granting the whole need to `to` (an account as SQL: 'user'@'host')."""
        [(database,)] = await self.fetch(CURRENT_DATABASE)
        schema = (self._split(need.name)[0] if need.on == "table" else need.name) or str(database or "")
        return self._grant(need, to, schema)

    def _server_privilege(self, need: str) -> str:
        """A server-wide need of engines/grants.py as this server names it (MariaDB 10.5.9 split SLAVE MONITOR
        off REPLICATION CLIENT)."""
        version = self._server[0] if self._server else ""
        m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
        newer = "mariadb" in version.lower() and m is not None and tuple(int(x) for x in m.groups()) >= (10, 5, 9)
        return _SERVER_PRIVILEGES[need][newer]

    def _grant(self, need: Need, to: str, schema: str, columns: Sequence[str] = (),
               privileges: Sequence[str] = ()) -> str:
        if need.on == "server":
            return f"GRANT {self._server_privilege(need.privileges[0])} ON *.* TO {to}"
        privs = ", ".join(privileges or need.privileges)
        if need.on == "schema":
            return f"GRANT {privs} ON {self._name(schema)}.* TO {to}"
        cols = f" ({', '.join(self._name(c) for c in columns)})" if columns else ""
        return f"GRANT {privs}{cols} ON {self._name(schema)}.{self._name(self._split(need.name)[1])} TO {to}"

    async def privileges(self, needs: Sequence[Need]) -> Privileges:
        try:
            try:
                [(account, role)] = await self.fetch(CURRENT_ACCOUNT)
            except EngineError:   # a server without roles
                [(account, role)] = await self.fetch(CURRENT_ACCOUNT_ONLY)
            [(database,)] = await self.fetch(CURRENT_DATABASE)
        except EngineError as exc:
            return Privileges(None, detail=f"could not check: {exc}")
        account, role = str(account), None if role in (None, "NONE") else str(role)
        user, _, host = account.rpartition("@")
        grantee = "'" + user + "'@'" + host + "'"   # as information_schema spells it
        to = "'" + user.replace("'", "''") + "'@'" + host.replace("'", "''") + "'"
        try:
            owned = _Grants(
                {str(r[0]) for r in await self.fetch(Stmt(USER_PRIVILEGES, ("g",)), {"g": grantee})},
                [(str(a), str(b)) for a, b in await self.fetch(Stmt(SCHEMA_PRIVILEGES, ("g",)), {"g": grantee})],
                {tuple(map(str, r)) for r in await self.fetch(Stmt(TABLE_PRIVILEGES, ("g",)), {"g": grantee})},
                {tuple(map(str, r)) for r in await self.fetch(Stmt(COLUMN_PRIVILEGES, ("g",)), {"g": grantee})})
        except EngineError as exc:
            unread = f"could not check: information_schema's privilege tables are not readable ({exc})"
            return Privileges(account, tuple(Held(n, None, self._grant(n, to, self._split(n.name)[0] or
                                                                          str(database or "")), detail=unread)
                                             for n in needs))
        held = []
        for need in needs:
            schema = (self._split(need.name)[0] if need.on == "table" else need.name) or str(database or "")
            if need.where == "replicas":
                called = f"{self._server_privilege(need.privileges[0])} (global)" if need.on == "server" else ""
                held.append(Held(need, None, self._grant(need, to, schema), called=called,
                                 detail="not checked: plan connects to the primary only; run it there"))
                continue
            called = (f"{_SERVER_PRIVILEGES[need.privileges[0]][0]} (global)" if need.on == "server"
                      else schema if need.on == "schema" else "")
            missing = owned.missing(need, schema, self._split(need.name)[1])
            if missing is None:
                held.append(Held(need, True, called=called))
                continue
            columns, privileges = missing
            grant = self._grant(need, to, schema, columns, privileges)
            if role is not None:   # information_schema shows the user's own grants, not its role's
                held.append(Held(need, None, grant, columns, detail=f"not shown: the role {role} in force may grant "
                                 f"it (information_schema lists the user's own grants; see SHOW GRANTS FOR {role})",
                                 called=called))
            else:
                held.append(Held(need, False, grant, columns, called=called))
        return Privileges(account, tuple(held))

    async def table_size(self, table: str, rows: int) -> TableSize:
        schema, name = self._split(table)
        try:
            found = await self.fetch(Stmt(TABLE_SIZE, ("s", "t")), {"s": schema, "t": name})
        except EngineError as exc:
            return TableSize(None, None, "information_schema.TABLES", detail=f"could not read: {exc}")
        if not found:
            return TableSize(None, None, "information_schema.TABLES", detail="no such table")
        data, avg, n = (int(v or 0) for v in found[0])
        if avg > 0:
            return TableSize(data, float(avg), "information_schema.TABLES AVG_ROW_LENGTH")
        n = n or rows
        return TableSize(data, data / n if n > 0 else None, "information_schema.TABLES DATA_LENGTH / the rows")

    async def log_volume(self, size: TableSize, writes: Writes) -> LogVolume:
        try:
            [(log_bin, fmt, image)] = await self.fetch(BINLOG_SETTINGS)
        except EngineError as exc:
            return LogVolume(None, None, {}, f"could not read the binlog settings: {exc}")
        settings = {"log_bin": "ON" if int(log_bin or 0) else "OFF", "binlog_format": str(fmt).upper(),
                    "binlog_row_image": str(image).upper()}
        per_batch = writes.batches * BINLOG_TRANSACTION_BYTES
        notes = []
        if settings["log_bin"] == "OFF":   # still estimated: what the same run writes once the binlog is on
            notes.append("binary logging is off (log_bin = OFF): this run writes no binlog, and nothing replicates "
                         "through one; the figure is what it would write with log_bin on")
        if settings["binlog_format"] == "STATEMENT":
            logged = writes.batches * writes.statement_bytes + per_batch
            notes.append("each replica runs every batch's UPDATE again: its replay time, not the log's size, is the "
                         "replica's lag; backfilld writes one batch at a time under STATEMENT")
            return LogVolume(logged, logged / writes.rows if writes.rows else None, settings,
                             "batches x (the UPDATE's text + a transaction's events)", tuple(notes))
        if settings["binlog_format"] == "MIXED":
            notes.append("binlog_format = MIXED: backfilld's sessions run in READ COMMITTED, under which InnoDB's "
                         "changes are logged as rows")
        if size.row_bytes is None:
            return LogVolume(None, None, settings, "the table's row size is not known", tuple(notes))
        per_row: float
        if settings["binlog_row_image"] == "MINIMAL":
            per_row = writes.key_bytes + writes.target_bytes + BINLOG_ROW_BYTES
            how = "rows x (the key, as the before image, + the targets, as the after image)"
        else:   # FULL, NOBLOB: every column before and after (NOBLOB leaves out unchanged BLOB/TEXT columns)
            per_row = 2 * size.row_bytes + BINLOG_ROW_BYTES
            how = (f"rows x 2 x row size {size.row_bytes:.0f} B (binlog_row_image = {settings['binlog_row_image']}: "
                   "the row before and after)")
        total = writes.rows * per_row + per_batch
        return LogVolume(int(total), per_row, settings, how + " + a transaction's events per batch", tuple(notes))

    def pending_index(self, spec: TableSpec, name: str, key_bytes: int, target_bytes: int) -> PendingIndex | None:
        if spec.overwrite:
            return None
        t = self.dialect.table(spec.table)
        targets = spec.targets
        ddl = tuple(f"ALTER TABLE {t} ADD INDEX {self._name(name if len(targets) == 1 else f'{name}_{i}')} "
                    f"({self.dialect.quote(c)}), ALGORITHM=INPLACE, LOCK=NONE" for i, c in enumerate(targets))
        # an InnoDB secondary entry: the indexed value, the primary key, and a record header of about 7 bytes
        entry = target_bytes // max(1, len(targets)) + key_bytes + 7
        return PendingIndex(ddl, False, entry,
                            "MySQL/MariaDB have no partial indexes: an index on a target holds every row, and every "
                            "batch's UPDATE moves its row's entry (more writes; the binlog is the same). Without "
                            "it, each sweep's check reads the table up to its first row left: all of it when none "
                            "is, then the sweep walks the whole key range in batches when one is")

    # --- transform writes
    async def write_rows(self, info: TableInfo, shape: WriteShape, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        if self.skip_locked and await self.lock_support() is None:
            # lock the rows first, passing over those the application holds (left for a later pass): the
            # UPDATE's join would wait for them, holding the rows it already wrote
            nk = len(shape.key)
            keyed = KeyedUpdate(f"SELECT {', '.join(self.dialect.key_value(k, info.columns[k]) for k in shape.key)} "
                                f"FROM {self.dialect.table(info.name)}", "TRUE", shape.key,
                                key_wraps(shape.key, info.columns))
            held: set[tuple[Any, ...]] = set()
            for part in chunks(rows):
                lock = keyed.stmt(self.dialect, len(part))
                lock = Stmt(f"{lock.sql} {self.dialect.skip_locked_clause}", lock.names)
                held.update(tuple(k) for k in await self.fetch(lock, KeyedUpdate.values([r[:nk] for r in part])))
            rows = [row for row in rows if tuple(row[:nk]) in held]
        written = 0
        for part in chunks(rows):
            stmt = build_write(self.dialect, info, shape, len(part))
            written += await self.execute(stmt, dict(zip(stmt.names, (v for row in part for v in row), strict=True)))
        return written

    # --- replication and load
    def heartbeat_ddl(self, table: str) -> str:
        return HEARTBEAT_DDL.format(table=self.dialect.table(table))

    async def write_heartbeat(self, table: str, writer: str, ts: float) -> int | None:
        await self.execute(Stmt(HEARTBEAT_WRITE.format(table=self._bound_table(table)), ("w", "ts")),
                           {"w": writer, "ts": ts})
        return None

    def _bound_table(self, table: str) -> str:
        """The quoted table, escaped as finish() escapes a statement bound through the driver (a % doubled)."""
        return self.dialect.finish(self.dialect.table(table))

    async def read_heartbeat(self, table: str, writer: str) -> float | None:
        rows = await self.fetch(Stmt(HEARTBEAT_READ.format(table=self._bound_table(table)), ("w",)), {"w": writer})
        return float(rows[0][0]) if rows else None

    async def _replica_status(self) -> dict[str, Any]:
        with self.driver_errors(), warnings.catch_warnings():
            warnings.simplefilter("ignore", pymysql.Warning)
            async with self._c().cursor(aiomysql.DictCursor) as cur:
                try:
                    await cur.execute(REPLICA_STATUS)
                except pymysql.err.ProgrammingError:
                    await cur.execute(SLAVE_STATUS)
                rows = await cur.fetchall()
        return dict(rows[0]) if rows else {}

    async def native_lag(self) -> tuple[float, str]:
        st = await self._replica_status()
        if not st:
            return math.inf, "not a replica (SHOW REPLICA STATUS is empty)"
        sql = st.get("Replica_SQL_Running", st.get("Slave_SQL_Running"))
        io = st.get("Replica_IO_Running", st.get("Slave_IO_Running"))
        if sql != "Yes":
            return math.inf, f"replication SQL thread is not running (SQL_Running={sql})"
        if io != "Yes":
            return math.inf, f"replication IO thread is not running (IO_Running={io})"
        lag = st.get("Seconds_Behind_Source", st.get("Seconds_Behind_Master"))
        if lag is None:
            return math.inf, "Seconds_Behind_Master is NULL"
        return float(lag), "Seconds_Behind_Master"

    async def attached_replicas(self) -> list[tuple[str, int]]:
        """None to list: a primary does not know its replicas' positions (Capabilities.discovers_replicas)."""
        return []

    async def app_activity(self) -> AppActivity:
        mine = MySQLEngine.own_ids.get(self._server_key, set()) | {self._id or 0}
        own = ", ".join(str(int(i)) for i in sorted(mine))
        [(active,)] = await self.fetch(ACTIVE_SESSIONS.format(own=own))
        try:   # MariaDB (and MySQL 5.7)
            rows = await self.fetch(LOCK_WAITS.format(
                waits="information_schema.INNODB_LOCK_WAITS", req="requesting_trx_id", blk="blocking_trx_id", own=own))
        except EngineError as first:   # MySQL 8.0
            try:
                rows = await self.fetch(LOCK_WAITS.format(
                    waits="performance_schema.data_lock_waits", req="REQUESTING_ENGINE_TRANSACTION_ID",
                    blk="BLOCKING_ENGINE_TRANSACTION_ID", own=own))
            except EngineError:
                raise EngineError(f"cannot read InnoDB's lock waits ({first}): backfilld's user needs the PROCESS "
                                  "privilege, or set [throttle] app_probe = false") from None
        # trx_wait_started has whole seconds: a wait is timed from when this probe first saw it instead
        now = time.monotonic()
        seen = self._waits_seen if self._waits_seen is not None else {}
        self._waits_seen = {trx: seen.get(trx, now) for (trx,) in rows}
        longest = max((now - t for t in self._waits_seen.values()), default=0.0)
        return AppActivity(int(active), len(rows), longest)

    async def load(self) -> float:
        rows = await self.fetch(THREADS_RUNNING)
        return max(0.0, float(rows[0][1]) - 1)  # not counting our own statement



# What the server-wide needs of engines/grants.py are on MySQL and MariaDB: (MySQL's and MariaDB's before 10.5.9,
# MariaDB's since) privilege.
_SERVER_PRIVILEGES = {grants.SESSIONS: ("PROCESS", "PROCESS"),
                      grants.REPLICA_STATUS: ("REPLICATION CLIENT", "SLAVE MONITOR")}
# A ROW event's bytes per row besides the values: the null bitmap and the column count, about this many (bytes)
BINLOG_ROW_BYTES = 8
# A transaction's events besides its rows: GTID, Query (BEGIN), Table_map, the rows event's header, Xid; bytes,
# roughly, from their layouts (a longer table or database name adds its length)
BINLOG_TRANSACTION_BYTES = 200


class _Grants:
    """The user's own privileges as information_schema lists them, at each level."""

    def __init__(self, server: set[str], schemas: list[tuple[str, str]], tables: set[tuple[str, ...]],
                 columns: set[tuple[str, ...]]) -> None:
        self.server, self.schemas, self.tables, self.columns = server, schemas, tables, columns

    def _in_schema(self, privilege: str, schema: str) -> bool:
        return any(p == privilege and _like(pattern, schema) for pattern, p in self.schemas)

    def missing(self, need: Need, schema: str, table: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """What the user lacks of the need: (columns, privileges), or None when it holds it all."""
        if need.on == "server":
            privilege = _SERVER_PRIVILEGES[need.privileges[0]][0]
            return None if privilege in self.server else ((), ())
        lacks = [p for p in need.privileges if p not in self.server and not self._in_schema(p, schema)
                 and (need.on != "table" or (schema, table, p) not in self.tables)]
        if not lacks:
            return None
        if need.on == "table" and need.columns:
            [p] = lacks
            cols = tuple(c for c in need.columns if (schema, table, c, p) not in self.columns)
            return (cols, tuple(lacks)) if cols else None
        return (), tuple(lacks)


def _like(pattern: str, name: str) -> bool:
    """Whether a schema name matches a grant's database pattern (`_` and `%` wildcards, `\\` escaping them)."""
    rx = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch.removeprefix("\\"))
                 for ch in re.findall(r"\\.|.", pattern, re.DOTALL))
    return re.fullmatch(rx, name, re.DOTALL) is not None


def once_counted(matched: int, info: bytes) -> int | None:
    """A single-evaluation UPDATE's rows, from its OK packet: None when a row matched but did not change (it
    was written NULL over NULL: its expression is NULL) or the packet does not say."""
    m = _MATCHED.search(info)
    return matched if m is not None and int(m.group(1)) == int(m.group(2)) else None


def bindable(value: Any) -> Any:
    """A parameter as the driver binds it right. PyMySQL writes a negative timedelta (a TIME value read back)
    wrongly: -838:59:59 as '-839:00:01'; written here as the TIME literal it is."""
    if isinstance(value, dt.timedelta):
        us = abs(value) // dt.timedelta(microseconds=1)
        sign = "-" if value < dt.timedelta(0) else ""
        return f"{sign}{us // 3_600_000_000}:{us // 60_000_000 % 60:02}:{us // 1_000_000 % 60:02}.{us % 1_000_000:06}"
    return value


def column(name: str, typ: str, nullable: str, collation: str | None, extra: str | None) -> Column:
    """A column from information_schema.COLUMNS. EXTRA says "VIRTUAL GENERATED" / "STORED GENERATED" (MariaDB
    also "PERSISTENT GENERATED") for a generated column, MySQL's "DEFAULT_GENERATED" for an expression default
    (an ordinary column), and "on update current_timestamp(...)" for a column the server sets on UPDATE."""
    extra = (extra or "").lower()
    return Column(name, typ, nullable == "YES", collation,
                  generated=re.search(r"\b(virtual|stored|persistent) generated\b", extra) is not None,
                  on_update="on update" in extra, auto_id="auto_increment" in extra)


def key_wraps(key: Sequence[str], columns: Mapping[str, Column]) -> tuple[str, ...]:
    """How a keyed statement writes each key value: text converted to the column's character set and collation
    (a value bound as utf8mb4 compares with a latin1 or gbk column otherwise than its own row's value)."""
    out = []
    for k in key:
        col = columns.get(k)
        if col is not None and col.collation and base_type(col) not in _NUMBERED:
            out.append(f"CONVERT({{}} USING {col.collation.split('_')[0]}) COLLATE {col.collation}")
        else:
            out.append("{}")
    return tuple(out)


def build_write(d: MySQLDialect, info: TableInfo, shape: WriteShape, n_rows: int) -> Stmt:
    """UPDATE joined to a derived table of the batch's computed rows (MariaDB has no VALUES ROW()).

    The guards compare exactly (MySQLDialect.exact: text as its utf8mb4 bytes), so a source changed only in case,
    accents or trailing spaces counts as changed; the key join casts only the joined value to the key column's own
    collation, so the primary key is used and no "illegal mix of collations" can arise.
    """
    collations = {c: col.collation for c, col in info.columns.items() if col.collation}
    join_value = {k: f"CONVERT({{}} USING {collations[k].split('_')[0]}) COLLATE {collations[k]}" for k in shape.key
                  if k in collations and base_type(info.columns[k]) not in _NUMBERED}   # those are read as numbers
    sets, joins, guards = transform_update_parts(d, info, shape, join_value)
    ph = d.placeholder(0)
    first = "SELECT " + ", ".join(f"{ph} AS c{j}" for j in range(shape.width))
    rest = "SELECT " + ", ".join(ph for _ in range(shape.width))
    src = " UNION ALL ".join([first] + [rest] * (n_rows - 1))
    assigns = [f"bf_t.{d.quote(t)} = {v}" for t, v in sets] + kept_sets(d, info.columns, shape.targets, "bf_t")
    sql = (f"UPDATE {d.table(info.name)} AS bf_t JOIN ({src}) AS bf_v ON {' AND '.join(joins)} SET "
           + ", ".join(assigns) + " WHERE " + " AND ".join(guards))
    return Stmt(d.finish(sql), tuple(f"r{i}c{j}" for i in range(n_rows) for j in range(shape.width)))


def year_value(expr: str) -> str:
    """The year a YEAR column stores for expr: a 1- or 2-digit string '0'..'69' is 2000..2069 and '70'..'99'
    1970..1999; a number 1..69 or 70..99 likewise, but the number 0 is 0 (CHARSET() of a number is 'binary')."""
    return (f"(CASE WHEN {expr} IS NULL THEN NULL "
            f"WHEN CHARSET({expr}) <> 'binary' AND TRIM({expr}) REGEXP '^[0-9]{{1,2}}$' "
            f"THEN IF({expr} + 0 < 70, 2000, 1900) + {expr} "
            f"WHEN CHARSET({expr}) = 'binary' AND {expr} BETWEEN 1 AND 99 THEN IF({expr} < 70, 2000, 1900) + {expr} "
            f"ELSE {expr} + 0 END)")


def set_mask(expr: str, column: Column) -> str:
    """The number a SET column stores for expr (a comma-separated list of members): bit i for member i."""
    members = [m.replace("''", "'") for m in re.findall(r"'((?:[^']|'')*)'", column.type)]
    bits = " + ".join(f"(FIND_IN_SET('{m.replace(chr(39), chr(39) * 2)}', {expr}) > 0) * {1 << i}"
                      for i, m in enumerate(members))
    return f"(CASE WHEN {expr} IS NULL THEN NULL ELSE {bits or '0'} END)"


def _bytes(expr: str) -> str:
    """Text as its utf8mb4 bytes: equal only when identical (no case folding, no trailing-space padding)."""
    return f"CAST(CONVERT({expr} USING utf8mb4) AS BINARY)"
