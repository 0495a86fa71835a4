"""PostgreSQL engine over asyncpg: dialect, connection, catalog and error mapping (its constant SQL: sql.py)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from backfilld import tls
from backfilld.aio import within
from backfilld.engines.assessment import LogVolume, PendingIndex, Privileges, TableSize, Writes, bare_ident
from backfilld.engines.base import AppActivity, Engine, Unrepresentable, describe, lease_key
from backfilld.engines.catalog import Column, TableInfo
from backfilld.engines.grants import SESSIONS, Held, Need
from backfilld.engines.postgresql.sql import (
    APP_ACTIVITY,
    ATTACHED_REPLICAS,
    COLUMN_PRIVILEGES,
    CURRENT_USER,
    DEADLOCK_TIMEOUT_S,
    DEFAULT_SEQUENCE,
    ESTIMATE_ROWS,
    HAS_ROLE,
    HEARTBEAT_DDL,
    HEARTBEAT_READ,
    HEARTBEAT_WRITE,
    LEASE_HOLDER,
    LOAD,
    NO_SEQSCAN,
    PARTIAL_INDEXES,
    REPLICA_LAG,
    SCHEMA_CREATE,
    SEQUENCE_USAGE,
    TABLE_COLUMNS,
    TABLE_OID,
    TABLE_PRIVILEGES,
    TABLE_SIZE,
    TRY_LEASE,
    TYPE_NAME,
    UNIQUE_INDEXES,
    UNLOCK_ALL,
    UPDATE_TRIGGERS,
    WAL_POSITION,
    WAL_SETTINGS,
    XID_SNAPSHOT,
)
from backfilld.engines.sqldialect import Dialect, Lexicon, Stmt, operand
from backfilld.engines.statements import (
    BatchPlan,
    TableSpec,
    WriteShape,
    any_null,
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

# Seconds each step of closing a connection may take (releasing the lease, the goodbye): a stop on a stalled
# path then ends within one statement deadline (the batch in flight) and this.
CLOSE_STEP_S = 2.0

# SQLSTATEs worth another try: serialization_failure, deadlock_detected, lock_not_available, query_canceled
_RETRY = {"40001": "serialization", "40P01": "deadlock", "55P03": "lock_timeout", "57014": "canceled"}


# What the server-wide needs of engines/grants.py are on PostgreSQL: a role whose privileges the user must have.
_SERVER_ROLES = {SESSIONS: "pg_read_all_stats"}
# The WAL record of a heap UPDATE besides the new tuple itself: its header (24 bytes), a block reference (about
# 20) and xl_heap_update with the tuple's header (about 14). Bytes; an estimate from the record's layout.
WAL_UPDATE_RECORD_BYTES = 60
# An index an EXPLAIN's plan reads, by name
_INDEX_USED = re.compile(r"(?:Index (?:Only )?Scan(?: Backward)? using|Bitmap Index Scan on) (\S+)")


# The text apply_range_once's trap fails to cast when a batch would write NULL: its error is recognised by it.
_NULL_WRITTEN = "backfilld: NULL written at key "


# Key types max() does not take (its arguments: numbers, text, dates and times, inet, arrays, enums...).
_NO_MAX = {"bytea", "uuid", "jsonb", "boolean", "bit", "bit varying", "tsvector", "macaddr", "macaddr8"}

# How values of a type are compared where equal must mean identical (PostgresDialect.exact), by the type's name
# as format_type() spells it (an array as its element type):
# - as themselves: types whose equality is identity. Floats too, whose = calls only 0 and -0 (and any two NaNs)
#   equal: their text depends on the session's extra_float_digits (a trigger runs in the application's
#   sessions), and their bits could make a transform's guard never match a NaN the driver binds back otherwise.
#   Intervals too, whose = counts a month as 30 days and a day as 24 hours: that is all the driver's timedelta
#   keeps of one, so a transform's guard comparing their text would never match '1 mon' read and bound back.
_AS_IS = re.compile(r"smallint|integer|bigint|boolean|bytea|uuid|date|oid|money|inet|cidr|macaddr8?|real|"
                    r"double precision|interval\b.*|(time|timestamp)(\(\d+\))? with(out)? time zone|"
                    r"bit( varying)?(\(\d+\))?|\"char\"")
# - text types in the C collation: a deterministic collation's equality is byte for byte, while a
#   nondeterministic one may call 'a' and 'A' (or 'a' and 'a ') equal
_TEXT = re.compile(r"(text|character varying|character|varchar|char|name)(\(\d+\))?")
# - as their text: types with no collation whose equality is looser than identity (numeric 1.0 = 1.00, the same
#   inside jsonb) or missing (json, xml, the geometric types); the text of a value is exact, and has no collation
_AS_TEXT = re.compile(r"numeric(\(\d+(,\s*\d+)?\))?|jsonb?|xml|point|line|lseg|box|path|polygon|circle")
# - anything else (citext, whose equality folds case whatever its collation; domains, over whatever type;
#   enums, ranges, composite and extension types) as its text in the C collation, which is exact for every type


class PostgresDialect(Dialect):
    name = "postgresql"
    # the lock an UPDATE of non-key columns takes anyway: foreign-key checks (KEY SHARE) do not wait for it
    skip_locked_clause = "FOR NO KEY UPDATE SKIP LOCKED"
    lexicon = Lexicon(escape_strings=True, dollar_quotes=True, parser="postgres")

    def database_ddl(self, name: str) -> tuple[str, str]:
        q = self.quote(name)
        return f"CREATE DATABASE {q}", f"DROP DATABASE IF EXISTS {q} WITH (FORCE)"   # FORCE: PostgreSQL 13+

    def triggers(self) -> Triggers:
        from backfilld.engines.postgresql.triggers import PostgresTriggers  # only when triggers are used

        return PostgresTriggers(self)

    def placeholder(self, n: int) -> str:
        return f"${n}"

    def as_read(self, expr: str, column: Column | None) -> str:
        return expr if column is None else f"({expr})::text"

    def has_max(self, column: Column | None) -> bool:
        return column is None or re.sub(r"\(.*", "", column.type) not in _NO_MAX

    def exact(self, expr: str, column: Column | None) -> str:
        if column is None:
            return expr
        typ = re.sub(r"(\[\])+$", "", column.type)
        if _AS_IS.fullmatch(typ):
            return expr
        if _TEXT.fullmatch(typ):
            return f'{operand(expr)} COLLATE "C"'
        if _AS_TEXT.fullmatch(typ):
            return f"{operand(expr)}::text"
        return f'{operand(expr)}::text COLLATE "C"'


# --- date and time codecs
# asyncpg's own codecs read -infinity and 0001-01-01 both as date.min (infinity and 9999-12-31 as date.max, the
# same for timestamps), bind date.min back as -infinity, and raise on a date BC, past 9999 or time 24:00. These
# work on the wire numbers instead (asyncpg's format="tuple": a date is (days since 2000-01-01,), a timestamp
# (microseconds since 2000-01-01 00:00, UTC for timestamptz,), a time (microseconds since midnight,)): a value
# Python holds is read as asyncpg reads it, any other as an Unrepresentable that binds back to the same number.
# They run for every value read or bound: the usual case is one comparison and one constructor call.

_EPOCH_ORD = dt.date(2000, 1, 1).toordinal()
_EPOCH = dt.datetime(2000, 1, 1)
_EPOCH_UTC = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_DAY_US = 86_400_000_000
_CYCLE_DAYS = 146_097            # the Gregorian calendar repeats every 400 years, of this many days
_DAYS_MIN = 1 - _EPOCH_ORD       # 0001-01-01
_MAX_ORD = dt.date.max.toordinal()
_DAYS_MAX = _MAX_ORD - _EPOCH_ORD   # 9999-12-31
_US_MIN = _DAYS_MIN * _DAY_US    # 0001-01-01 00:00:00
_US_MAX = (_DAYS_MAX + 1) * _DAY_US - 1            # 9999-12-31 23:59:59.999999
# the server's infinities: int32 / int64 extremes
_DATE_INFINITY, _DATE_NEG_INFINITY = 2**31 - 1, -2**31
_TS_INFINITY, _TS_NEG_INFINITY = 2**63 - 1, -2**63
_fromordinal = dt.date.fromordinal
_timedelta = dt.timedelta


def _date_text(days: int) -> str:
    """The server's text for a date outside Python's range (the same calendar, shifted by whole 400-year cycles)."""
    ordinal = days + _EPOCH_ORD
    cycles = (-((-ordinal) // _CYCLE_DAYS + 1) if ordinal < 1
              else (ordinal - _MAX_ORD) // _CYCLE_DAYS + 1 if ordinal > _MAX_ORD else 0)
    d = _fromordinal(ordinal - cycles * _CYCLE_DAYS)
    year = d.year + 400 * cycles
    return f"{1 - year:04d}-{d.month:02d}-{d.day:02d} BC" if year < 1 else f"{year:04d}-{d.month:02d}-{d.day:02d}"


def _time_text(us: int) -> str:
    s, frac = divmod(us, 1_000_000)
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" + (f".{frac:06d}".rstrip("0") if frac else "")


def _unrepresentable(typ: str, raw: int) -> Unrepresentable:
    if raw in (_DATE_INFINITY, _TS_INFINITY):
        return Unrepresentable(typ, raw, "infinity")
    if raw in (_DATE_NEG_INFINITY, _TS_NEG_INFINITY):
        return Unrepresentable(typ, raw, "-infinity")
    if typ == "date":
        return Unrepresentable(typ, raw, _date_text(raw))
    if typ == "time":
        return Unrepresentable(typ, raw, _time_text(raw))
    days, us = divmod(raw, _DAY_US)
    text = _date_text(days)
    bc = text.endswith(" BC")
    text = text.removesuffix(" BC") + " " + _time_text(us) + ("+00" if typ == "timestamptz" else "")
    return Unrepresentable(typ, raw, text + " BC" if bc else text)


def _raw(value: Any, typ: str) -> tuple[int]:
    if isinstance(value, Unrepresentable) and value.type == typ:
        return (value.raw,)
    raise TypeError(f"expected a datetime.date or datetime.datetime instance, got {type(value).__name__!r}"
                    if typ != "time" else f"expected a datetime.time instance, got {type(value).__name__!r}")


def decode_date(t: tuple[int]) -> dt.date | Unrepresentable:
    days = t[0]
    if _DAYS_MIN <= days <= _DAYS_MAX:
        return _fromordinal(days + _EPOCH_ORD)
    return _unrepresentable("date", days)


def encode_date(value: Any) -> tuple[int]:
    try:   # a date, or a datetime (its date), as asyncpg binds them
        return (value.toordinal() - _EPOCH_ORD,)
    except AttributeError:
        return _raw(value, "date")


def decode_timestamp(t: tuple[int]) -> dt.datetime | Unrepresentable:
    us = t[0]
    if _US_MIN <= us <= _US_MAX:
        return _EPOCH + _timedelta(0, 0, us)
    return _unrepresentable("timestamp", us)


def decode_timestamptz(t: tuple[int]) -> dt.datetime | Unrepresentable:
    us = t[0]
    if _US_MIN <= us <= _US_MAX:
        return _EPOCH_UTC + _timedelta(0, 0, us)
    return _unrepresentable("timestamptz", us)


def _us(delta: dt.timedelta) -> tuple[int]:
    return ((delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds,)


def encode_timestamp(value: Any) -> tuple[int]:
    if isinstance(value, dt.datetime):
        return _us(value - _EPOCH)   # an aware datetime fails here, as with asyncpg's codec
    if isinstance(value, dt.date):
        return ((value.toordinal() - _EPOCH_ORD) * _DAY_US,)
    return _raw(value, "timestamp")


def encode_timestamptz(value: Any) -> tuple[int]:
    if isinstance(value, dt.datetime):
        if value.utcoffset() is None:   # naive: this process's local time, as asyncpg takes it
            value = value.astimezone()
        return _us(value - _EPOCH_UTC)
    if isinstance(value, dt.date):      # its midnight at the local zone's current offset, as asyncpg takes it
        local = dt.datetime.now(dt.UTC).astimezone().utcoffset()
        return _us(dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone(local or _timedelta(0)))
                   - _EPOCH_UTC)
    return _raw(value, "timestamptz")


def decode_time(t: tuple[int]) -> dt.time | Unrepresentable:
    us = t[0]
    if 0 <= us < _DAY_US:
        s, frac = divmod(us, 1_000_000)
        return dt.time(s // 3600, s // 60 % 60, s % 60, frac)
    return _unrepresentable("time", us)   # 24:00:00


def encode_time(value: Any) -> tuple[int]:
    if isinstance(value, dt.time):   # its zone, if any, ignored, as asyncpg's codec does
        return (((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond,)
    return _raw(value, "time")


# (type, encoder, decoder), registered on every connection
CODECS = (("date", encode_date, decode_date), ("timestamp", encode_timestamp, decode_timestamp),
          ("timestamptz", encode_timestamptz, decode_timestamptz), ("time", encode_time, decode_time))


async def set_codecs(conn: asyncpg.Connection) -> None:
    for typ, encoder, decoder in CODECS:
        await conn.set_type_codec(typ, schema="pg_catalog", encoder=encoder, decoder=decoder, format="tuple")


# A data exception (SQLSTATE class 22) quotes the value that failed, in double quotes that are not escaped
# (`invalid input syntax for type integer: "a"b"`, `value "99999999999" is out of range for type integer`), or
# shows its bytes (`invalid byte sequence for encoding "UTF8": 0xe2 0x28`): both are replaced. The quotes are
# matched greedily, first to last, as the value may hold one; a message naming an encoding quotes only that.
_PG_QUOTED = re.compile(r'".*"', re.DOTALL)
_PG_BYTES = re.compile(r"0x[0-9a-f]{2}(?: 0x[0-9a-f]{2})*")


def pg_message(exc: asyncpg.PostgresError) -> str:
    """The server's message and hint without a row's values. Its DETAIL is left out: it holds them (a unique
    violation's `Key (a)=(v1)`, a check violation's `Failing row contains (...)`, a deadlock's statements)."""
    state = getattr(exc, "sqlstate", "") or ""
    text = getattr(exc, "message", None) or str(exc).split("\n", 1)[0]
    if state.startswith("22") and _NULL_WRITTEN not in text:   # the trap's text is backfilld's and a key
        if 'encoding "' not in text:
            text = _PG_QUOTED.sub(VALUE_NOT_SHOWN, text)
        text = _PG_BYTES.sub(VALUE_NOT_SHOWN, text)
    hint = getattr(exc, "hint", None)
    return f"{text}\nHINT:  {hint}" if hint else text


def translate_pg(exc: BaseException) -> EngineError:
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        msg = f"{state}: {pg_message(exc)}"
        if state in _RETRY:
            return RetryableError(msg, kind=_RETRY[state])
        if state.startswith("08") or state in ("57P01", "57P02", "57P03"):
            return ConnectError(msg)
        return EngineError(msg)
    # InternalClientError: the connection's protocol is mid-way through closing (the server terminated the
    # session while it was idle); like a lost connection, it is cured by a new one
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, asyncio.TimeoutError,
                        ConnectionError)):
        return ConnectError(f"connection to PostgreSQL lost or refused: {describe(exc)}")
    return EngineError(f"{type(exc).__name__}: {exc}")


def _declined_tls(exc: BaseException) -> bool:
    """The server answered the client's TLS request with "no" (it has ssl = off): asyncpg says so in words."""
    return isinstance(exc, ConnectionError) and "rejected SSL upgrade" in str(exc)


def _refused_plaintext(exc: BaseException) -> bool:
    """The server refused a connection for being unencrypted (pg_hba.conf: hostssl lines only, or hostnossl
    reject); its message ends "no encryption"."""
    return isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError) and "no encryption" in str(exc)


class PostgresEngine(Engine):
    dialect = PostgresDialect()

    _conn: asyncpg.Connection | None = None
    _leased = False
    _generation = 0   # connections opened so far (writes_token)

    def translate(self, exc: BaseException) -> EngineError:
        return translate_pg(exc)

    async def connect(self) -> None:
        u = self.url
        try:
            self._generation += 1
            # backfilld's own context, or False: asyncpg then reads no PGSSLMODE, ~/.postgresql/ or other default
            ctx = tls.context(u.tls, f"{u.origin}.url")
            try:
                self._conn = await self._open(ctx if ctx is not None else False)
            except ConnectionError as exc:
                if not _declined_tls(exc):
                    raise
                if u.tls.mode != "prefer":
                    raise TLSError(f"{u.origin}.url: cannot connect to {u}: the server offers no TLS, and "
                                   f"{u.tls.spelled} requires it; enable ssl on the server") from None
                self._conn = await self._open(False)   # prefer, as libpq: plaintext when the server has no TLS
            transport = self._conn._transport   # asyncpg has no public accessor for it
            tls.after_connect(u, encrypted=transport.get_extra_info("ssl_object") is not None,
                              peer=transport.get_extra_info("peername"))
            await set_codecs(self._conn)
        except (ConfigError, TLSError):
            await self.close()
            raise
        except Exception as exc:  # noqa: BLE001 - every driver failure becomes one of ours
            await self.close()
            failure = tls.connect_error(exc, u)
            if failure is not None:
                raise failure from None
            hint = tls.refused_plaintext(u, certain=True) if _refused_plaintext(exc) else ""
            raise ConnectError(f"cannot connect to {u}: {translate_pg(exc)}{hint}") from None

    async def _open(self, ssl: Any) -> asyncpg.Connection:
        u = self.url
        return await asyncpg.connect(
            host=u.host, port=u.port or 5432, user=u.user, password=u.password, database=u.database, ssl=ssl,
            timeout=self.connect_timeout_s, command_timeout=self.statement_deadline_s,
            server_settings={"application_name": f"backfilld-{self.role}" if self.role else "backfilld",
                             "lock_timeout": f"{int(self.lock_timeout_s * 1000)}ms",
                             # every wait on the server bounded: a statement, and a transaction left idle
                             # by a client that vanished (its row locks go with the session)
                             "statement_timeout": f"{int(self.statement_timeout_s * 1000)}ms",
                             "idle_in_transaction_session_timeout":
                                 f"{int(self.idle_in_transaction_timeout_s * 1000)}ms",
                             # the server notices a vanished client within about 30 s, and with it
                             # releases the job's lease (an advisory lock) held by that session
                             "tcp_keepalives_idle": "15", "tcp_keepalives_interval": "5",
                             "tcp_keepalives_count": "3",
                             **({"synchronous_commit": "off"} if self.fast_commit else {})})

    async def close(self) -> None:
        """Release the lease and say goodbye, each bounded by CLOSE_STEP_S; a server that does not answer the
        first (a path that stopped forwarding) is not asked the second: the socket is dropped at once."""
        conn, self._conn = self._conn, None
        if conn is not None:
            answering = True
            if self._leased and not conn.is_closed():
                # the server drops a closed session's locks only once its backend has exited; release them
                # now, so that a daemon started right after this one finds the job's lease free
                try:
                    await within(conn.execute(UNLOCK_ALL), CLOSE_STEP_S)
                except Exception:  # noqa: BLE001 - closing anyway; the server ends the session's locks with it
                    answering = False
            if answering:
                with contextlib.suppress(Exception):
                    await within(conn.close(), CLOSE_STEP_S)
            if not conn.is_closed():   # the server did not answer the goodbye (a path that stopped forwarding)
                conn.terminate()
        self._leased = False

    def _c(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            raise ConnectError("not connected to PostgreSQL")
        return self._conn

    async def fetch(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if isinstance(stmt, str):
            stmt = Stmt(stmt)
        with self.driver_errors(), self._deadline():
            rows = await self._c().fetch(stmt.sql, *stmt.args(values or {}))
        return [tuple(r) for r in rows]

    async def execute(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> int:
        if isinstance(stmt, str):
            stmt = Stmt(stmt)
        with self.driver_errors(), self._deadline():
            status = await self._c().execute(stmt.sql, *stmt.args(values or {}))
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    @contextlib.contextmanager
    def _deadline(self) -> Iterator[None]:
        """command_timeout (statement_deadline_s) expired: the server did not answer within its own statement
        timeout, so the connection is given up (terminated, not reused) and the error is a lost connection."""
        try:
            yield
        except TimeoutError:
            if self._conn is not None:
                self._conn.terminate()
            raise ConnectError(f"PostgreSQL did not answer within {self.statement_deadline_s:g} s "
                               f"(statement_timeout_s {self.statement_timeout_s:g} s); the connection is given "
                               "up") from None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        with self.driver_errors(), self._deadline():
            tx = self._c().transaction()
            await tx.start()
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):
                await tx.rollback()
            raise
        with self.driver_errors(), self._deadline():
            await tx.commit()

    async def once_expression(self, table: str, key: Sequence[str], expr: str) -> str | None:
        # COALESCE(expr, trap): a NULL expression makes the trap run, a cast of a marked text that fails and
        # aborts the statement at that row (apply_range_once recognises the error); a value is written as is.
        # The trap is cast on to the expression's own type, so COALESCE's result type is the expression's.
        try:
            stmt = await self._c().prepare(f"SELECT ({expr}) FROM {self.dialect.table(table)}")
            [attr] = stmt.get_attributes()
            [(typ,)] = await self.fetch(Stmt(TYPE_NAME, ("t",)), {"t": attr.type.oid})
        except Exception:  # noqa: BLE001 - preflight reports a broken expression; here: no single evaluation
            return None
        if typ is None or typ == "unknown":
            return None
        return (f"COALESCE(({expr}), ('{_NULL_WRITTEN}' || {self.dialect.quote(key[0])}::text)::int::text::{typ})")

    # Did anyone else write? Every transaction that writes anything, in any database of the cluster, takes a
    # transaction id. A snapshot with no transaction in progress (xmin = xmax) has xmax = the next id to be
    # given out; if the ids given out between two such snapshots are exactly this connection's commits,
    # nobody else wrote in between. Any other activity (another writer, a heartbeat, another database's
    # traffic, a transaction left open) makes the job sweep: this only ever spares a quiet cluster the sweep.
    def lock_clause(self, info: TableInfo, targets: Sequence[str]) -> str | None:
        # writing a column of a unique index changes a key: the UPDATE then takes FOR UPDATE, which a
        # NO KEY UPDATE lock taken first would have to be upgraded to, waiting for the application's KEY SHARE
        # locks (its foreign-key checks); lock with FOR UPDATE from the start then
        if any(set(targets) & set(cols) for cols in (info.primary_key, *info.unique_keys)):
            return "FOR UPDATE SKIP LOCKED"
        return self.dialect.skip_locked_clause

    async def lock_timeout_problem(self) -> str | None:
        deadlock_s = (await self.fetch(DEADLOCK_TIMEOUT_S))[0][0]
        if deadlock_s and self.lock_timeout_s >= deadlock_s:
            return (f"lock_timeout_s = {self.lock_timeout_s:g} is not below the server's deadlock_timeout "
                    f"({deadlock_s:g} s): a batch waiting for a lock could let the server's deadlock check pick an "
                    "application transaction as the victim; set [database] lock_timeout_s below it")
        return None

    async def writes_token(self, table: str) -> object | None:
        return await self._xid_snapshot()

    async def nothing_else_wrote(self, table: str, token: object, own_commits: int) -> bool:
        now = await self._xid_snapshot()
        if not isinstance(token, tuple) or now is None or now[0] != token[0]:
            return False
        return now[1] - token[1] == own_commits

    async def _xid_snapshot(self) -> tuple[int, int] | None:
        """(this connection, the next transaction id) when no transaction holding an id is in progress."""
        rows = await self.fetch(XID_SNAPSHOT)
        xmin, xmax = rows[0]
        return (self._generation, int(xmax)) if xmin == xmax else None

    async def apply_range_once(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                               keys: int | None = None) -> int | None:
        # the plan's statement writes COALESCE(expr, trap) (once_expression): a plain UPDATE whose row count is
        # the rows written, or an error at the first row whose expression is NULL. Measured here (10 batches
        # of 100,000 rows, medians of 5): 0.93 of the guarded UPDATE's time; returning a trap from the UPDATE
        # and counting the rows it returned gave 0.97, returning the target and counting its NULLs 0.99.
        try:
            return await self.execute(*range_call(plan.fill_once_first, plan.fill_once_after, lo, hi))
        except EngineError as exc:
            if _NULL_WRITTEN in str(exc):
                return None
            raise

    # a session advisory lock: held while this connection lives, gone the moment its backend exits (kill -9 of
    # the daemon closes the socket; a silent network drop is noticed through the keepalives set at connect)
    async def try_lease(self, name: str) -> bool:
        rows = await self.fetch(Stmt(TRY_LEASE, ("k",)), {"k": lease_key(name)})
        self._leased = self._leased or bool(rows[0][0])
        return bool(rows[0][0])

    async def lease_holder(self, name: str) -> str | None:
        rows = await self.fetch(Stmt(LEASE_HOLDER, ("k",)), {"k": lease_key(name)})
        if not rows:
            return None
        pid, app, addr = rows[0]
        return f"PostgreSQL backend pid {pid} ({app or 'no application_name'}, from {addr or 'a local socket'})"

    def _regclass_arg(self, table: str) -> str:
        return self.dialect.table(table)

    async def table_info(self, table: str) -> TableInfo:
        rows = await self.fetch(Stmt(TABLE_OID, ("t",)), {"t": self._regclass_arg(table)})
        oid = rows[0][0] if rows else None
        if oid is None:
            raise SchemaError(f"table {table!r} does not exist in database {self.url.database!r}")
        # attgenerated 's': GENERATED ALWAYS AS (...) STORED; attidentity 'a': GENERATED ALWAYS AS IDENTITY
        cols = await self.fetch(Stmt(TABLE_COLUMNS, ("oid",)), {"oid": oid})
        idx = await self.fetch(Stmt(UNIQUE_INDEXES, ("oid",)), {"oid": oid})
        pk = next((tuple(r[1]) for r in idx if r[0]), ())
        triggers = await self.fetch(Stmt(UPDATE_TRIGGERS, ("oid",)), {"oid": oid})
        return TableInfo(table, {c[0]: Column(c[0], c[1], c[2], generated=c[3], auto_id=c[4]) for c in cols}, pk,
                         tuple(tuple(r[1]) for r in idx), tuple(r[0] for r in triggers))

    async def estimate_rows(self, table: str) -> int:
        rows = await self.fetch(Stmt(ESTIMATE_ROWS, ("t",)), {"t": self._regclass_arg(table)})
        n = int(rows[0][0]) if rows and rows[0][0] is not None else -1
        if n < 0:  # never analyzed: count once
            n = await self.count_rows(table)
        return n

    async def explain(self, stmt: Stmt, values: dict[str, Any]) -> list[str]:
        rows = await self.fetch(Stmt("EXPLAIN " + stmt.sql, stmt.names), values)
        return [r[0] for r in rows]

    def explain_uses_index(self, lines: list[str]) -> bool:
        text = "\n".join(lines)
        return "Seq Scan" not in text

    # --- plan's assessment
    def _name(self, ident: str) -> str:
        return ident if bare_ident(ident, lower_only=True) else self.dialect.quote(ident)

    async def grant_sql(self, need: Need, to: str) -> str:
        """The statement granting the whole need to `to` (a role's name as SQL)."""
        schema = ""
        if need.on == "schema" and not need.name:
            rows = await self.fetch(Stmt(SCHEMA_CREATE, ("s",)), {"s": None})
            schema = rows[0][0] if rows else "public"
        return self._grant(need, to, schema=schema)

    def _grant(self, need: Need, to: str, columns: Sequence[str] = (), privileges: Sequence[str] = (),
               schema: str = "") -> str:
        privs = ", ".join(privileges or need.privileges)
        if need.on == "server":
            return f"GRANT {_SERVER_ROLES[need.privileges[0]]} TO {to}"
        if need.on == "schema":
            return f"GRANT {privs} ON SCHEMA {self._name(schema or need.name)} TO {to}"
        if need.on == "sequence":
            return f"GRANT {privs} ON SEQUENCE {need.name} TO {to}"   # as DEFAULT_SEQUENCE quoted it
        cols = f" ({', '.join(self._name(c) for c in columns)})" if columns else ""
        table = ".".join(self._name(part) for part in need.name.split("."))
        return f"GRANT {privs}{cols} ON {table} TO {to}"

    async def privileges(self, needs: Sequence[Need]) -> Privileges:
        try:
            [(user,)] = await self.fetch(CURRENT_USER)
        except EngineError as exc:
            return Privileges(None, detail=f"could not check: {exc}")
        held, to = [], self._name(user)
        for need in needs:
            if need.on == "server" and need.privileges[0] not in _SERVER_ROLES:
                continue   # nothing to grant on PostgreSQL for it (a standby's own lag figures)
            if need.where == "replicas":
                held.append(Held(need, None, self._grant(need, to), detail="not checked: plan connects to the "
                                 "primary only; run it there"))
                continue
            try:
                held.append(await self._held(need, to))
            except EngineError as exc:
                held.append(Held(need, None, self._grant(need, to), detail=f"could not check: {exc}"))
        return Privileges(user, tuple(held))

    async def _held(self, need: Need, to: str) -> Held:
        if need.on == "server":
            role = _SERVER_ROLES[need.privileges[0]]
            [(ok,)] = await self.fetch(Stmt(HAS_ROLE, ("r",)), {"r": role})
            return Held(need, bool(ok), "" if ok else self._grant(need, to), called=f"{role} (or pg_monitor)")
        if need.on == "schema":
            rows = await self.fetch(Stmt(SCHEMA_CREATE, ("s",)), {"s": need.name or None})
            if not rows:
                return Held(need, None, "", detail="could not check: no schema of the search_path exists")
            schema, ok = rows[0]
            return Held(need, bool(ok), "" if ok else self._grant(need, to, schema=schema), called=schema)
        if need.on == "sequence":
            rows = await self.fetch(Stmt(SEQUENCE_USAGE, ("s",)), {"s": need.name})
            if not rows:
                return Held(need, None, self._grant(need, to), detail="could not check: no such sequence")
            return Held(need, bool(rows[0][0]), "" if rows[0][0] else self._grant(need, to))
        table = self._regclass_arg(need.name)
        if need.columns:
            [privilege] = need.privileges
            rows = await self.fetch(Stmt(COLUMN_PRIVILEGES, ("t", "p", "c")),
                                    {"t": table, "p": privilege, "c": list(need.columns)})
            missing = tuple(c for c, ok in rows if not ok)
            if any(ok is None for _, ok in rows):
                return Held(need, None, self._grant(need, to, need.columns), detail="could not check: no such table")
            return Held(need, not missing, self._grant(need, to, missing) if missing else "", missing)
        rows = await self.fetch(Stmt(TABLE_PRIVILEGES, ("t", "p")), {"t": table, "p": list(need.privileges)})
        if any(ok is None for _, ok in rows):
            return Held(need, None, self._grant(need, to), detail="could not check: no such table")
        lacks = [p for p, ok in rows if not ok]
        return Held(need, not lacks, self._grant(need, to, privileges=lacks) if lacks else "")

    async def id_sequence(self, table: str, column: str) -> str | None:
        rows = await self.fetch(Stmt(DEFAULT_SEQUENCE, ("t", "c")), {"t": self._regclass_arg(table), "c": column})
        return str(rows[0][0]) if rows else None

    async def table_size(self, table: str, rows: int) -> TableSize:
        try:
            found = await self.fetch(Stmt(TABLE_SIZE, ("t",)), {"t": self._regclass_arg(table)})
        except EngineError as exc:
            return TableSize(None, None, "pg_relation_size", detail=f"could not read: {exc}")
        if not found:
            return TableSize(None, None, "pg_relation_size", detail="no such table")
        size, reltuples = int(found[0][0]), int(found[0][1])
        n = reltuples if reltuples > 0 else rows
        return TableSize(size, size / n if n > 0 else None, "pg_relation_size / reltuples"
                         if reltuples > 0 else "pg_relation_size / the row estimate")

    async def log_volume(self, size: TableSize, writes: Writes) -> LogVolume:
        try:
            settings = {str(k): str(v) for k, v in await self.fetch(WAL_SETTINGS)}
        except EngineError as exc:
            return LogVolume(None, None, {}, f"could not read the WAL settings: {exc}")
        fpw = settings.get("full_page_writes") == "on"
        if size.row_bytes is None:
            return LogVolume(None, None, settings, "the table's row size is not known")
        # each row written is a new tuple version, in a heap-update WAL record of its own
        per_row = size.row_bytes + WAL_UPDATE_RECORD_BYTES
        total = writes.rows * per_row
        how = f"rows x (row size {size.row_bytes:.0f} B + {WAL_UPDATE_RECORD_BYTES} B of WAL record)"
        notes = []
        if fpw and size.table_bytes:
            total += size.table_bytes   # each page's first change after a checkpoint is logged whole, once
            how += " + the table's pages once (full_page_writes: each page's first change after a checkpoint)"
            if settings.get("wal_compression", "off") != "off":
                notes.append(f"wal_compression = {settings['wal_compression']}: the full pages are compressed, "
                             "so less")
        notes.append("an UPDATE that cannot be HOT (a target indexed, or no room left in the page) also writes an "
                     "entry in every index of the table: more")
        if settings.get("wal_level") == "minimal":
            notes.append("wal_level = minimal: nothing replicates (no standby can stream this server)")
        return LogVolume(int(total), per_row, settings, how, tuple(notes))

    def pending_index(self, spec: TableSpec, name: str, key_bytes: int, target_bytes: int) -> PendingIndex | None:
        if spec.overwrite:
            return None
        d = self.dialect
        ddl = (f"CREATE INDEX CONCURRENTLY {self._name(name)} ON {d.table(spec.table)} "
               f"({', '.join(d.quote(k) for k in spec.key)}) WHERE {any_null(d, spec)}")
        # a b-tree leaf entry: its 8-byte header and the key, aligned to 8 bytes, and its 4-byte line pointer
        entry = 8 + -(-key_bytes // 8) * 8 + 4
        return PendingIndex((ddl,), True, entry,
                            "CONCURRENTLY: the build reads the table twice and blocks no writes. Create it once the "
                            "fill pass is done: then it holds only the rows old code leaves NULL; created before, "
                            "it holds every row until the fill empties it, and its predicate on the target makes "
                            "every batch's UPDATE a non-HOT one (a new entry in every index of the table)")

    async def index_serves(self, table: str, stmt: Stmt, values: dict[str, Any]) -> tuple[bool, list[str]]:
        # at a small table's size the planner prefers a scan whatever its indexes: asked again with the scan
        # made its last resort, an index condition or a partial index in its plan is an index that serves
        lines = await self.explain(stmt, values)
        if "Seq Scan" not in "\n".join(lines) and "Index Cond" in "\n".join(lines):
            return True, lines
        async with self.transaction():
            await self.execute(NO_SEQSCAN)
            steered = await self.explain(stmt, values)
            partial = {r[0] for r in await self.fetch(Stmt(PARTIAL_INDEXES, ("t",)), {"t": self._regclass_arg(table)})}
        text = "\n".join(steered)
        used = set(_INDEX_USED.findall(text))
        return "Seq Scan" not in text and ("Index Cond" in text or bool(used & partial)), lines

    # --- transform writes
    async def write_rows(self, info: TableInfo, shape: WriteShape, rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        stmt = build_write(self.dialect, info, shape, lock=self.skip_locked)
        columns = [list(col) for col in zip(*rows, strict=True)]
        return await self.execute(stmt, dict(zip(stmt.names, columns, strict=True)))

    # --- replication and load
    def heartbeat_ddl(self, table: str) -> str:
        return HEARTBEAT_DDL.format(table=self.dialect.table(table))

    async def write_heartbeat(self, table: str, writer: str, ts: float) -> int | None:
        await self.execute(Stmt(HEARTBEAT_WRITE.format(table=self.dialect.table(table)), ("w", "ts")),
                           {"w": writer, "ts": ts})
        # read after the commit: a replica that replayed up to here has replayed the heartbeat
        rows = await self.fetch(WAL_POSITION)
        return parse_lsn(rows[0][0])

    async def read_heartbeat(self, table: str, writer: str) -> float | None:
        rows = await self.fetch(Stmt(HEARTBEAT_READ.format(table=self.dialect.table(table)), ("w",)),
                                {"w": writer})
        return float(rows[0][0]) if rows else None

    async def native_lag(self) -> tuple[float, str]:
        rows = await self.fetch(REPLICA_LAG)
        in_recovery, paused, lag, receiver = rows[0]
        if not in_recovery:
            return math.inf, "not a standby (pg_is_in_recovery() is false)"
        if paused:
            return math.inf, "WAL replay is paused"
        if receiver != "streaming":  # received = replayed means nothing when nothing is being received
            return math.inf, f"WAL receiver is not streaming ({receiver or 'not running'})"
        if lag is None:
            return math.inf, "nothing replayed yet"
        return max(0.0, float(lag)), "replay timestamp"

    async def attached_replicas(self) -> list[tuple[str, int]]:
        # physical standbys only (logical walsenders have no client to lag); one per pid, so two standbys
        # with the same name and address are still two replicas
        rows = await self.fetch(ATTACHED_REPLICAS)
        seen: dict[str, int] = {}
        out = []
        for _pid, app, addr, lsn in rows:
            if lsn is None:
                raise EngineError("pg_stat_replication hides replay positions from this role; grant it "
                                  "pg_read_all_stats (or list the replicas in [[replicas]])")
            name = f"{app or 'walreceiver'}@{addr}"
            seen[name] = seen.get(name, 0) + 1
            out.append((name if seen[name] == 1 else f"{name}#{seen[name]}", parse_lsn(lsn)))
        return out

    async def app_activity(self) -> AppActivity:
        # every client session of the cluster but backfilld's (application_name backfilld, backfilld-<role>):
        # all of them share the server's CPU and disks; a wait is timed from pg_locks.waitstart (PostgreSQL 14+)
        rows = await self.fetch(APP_ACTIVITY)
        active, waiting, longest, hidden = rows[0]
        if hidden:   # other roles' sessions show no state to a role without pg_read_all_stats
            raise EngineError(f"cannot see what {hidden} session(s) of other roles are doing (pg_stat_activity "
                              "shows their state only to members of pg_read_all_stats): GRANT pg_monitor TO "
                              "backfilld's role, or set [throttle] app_probe = false")
        return AppActivity(int(active), int(waiting), float(longest or 0.0))

    async def load(self) -> float:
        [(active, hidden)] = await self.fetch(LOAD)
        if hidden:   # as in app_activity: an unseen session may be running a statement
            raise EngineError(f"cannot see what {hidden} session(s) of other roles are doing (pg_stat_activity "
                              "shows their state only to members of pg_read_all_stats): GRANT pg_monitor TO "
                              "backfilld's role, or leave [throttle] max_load unset")
        return float(active)



# An explicit cast to a length-bounded type cuts what does not fit ('abcdefghijk'::varchar(10) is 'abcdefghij'),
# where storing the value in the column refuses it. The transform's values are cast to the type without its
# bound, so that a value too long for its column fails the batch rather than being stored cut.
_BOUNDED = re.compile(r"^(character varying|character|bit varying|bit)\(\d+\)(\[\])?$")
_UNBOUNDED = {"character varying": "character varying", "character": "bpchar", "bit varying": "bit varying",
              "bit": "bit varying"}


def _unbounded(typ: str) -> str:
    m = _BOUNDED.match(typ)
    return typ if m is None else _UNBOUNDED[m.group(1)] + (m.group(2) or "")


def build_write(d: PostgresDialect, info: TableInfo, shape: WriteShape, lock: bool = False) -> Stmt:
    """One UPDATE joined to unnest() of one array per column: one statement and one round trip per batch. With
    lock, only the rows it could lock without waiting (SKIP LOCKED); the others are left for a later pass."""
    types = shape.column_types(info)
    read = len(shape.key) + len(shape.sources)   # the values after the keys and sources are the targets'
    types = [*types[:read], *(_unbounded(t) for t in types[read:])]
    sets, joins, guards = transform_update_parts(d, info, shape)
    names = tuple(f"c{i}" for i in range(shape.width))
    src = ("unnest(" + ", ".join(f"${i + 1}::{typ}[]" for i, typ in enumerate(types)) + ") AS bf_v("
           + ", ".join(names) + ")")
    conds = joins + guards
    if lock:
        keys = ", ".join(d.quote(k) for k in shape.key)
        mine = ", ".join(f"bf_t.{d.quote(k)}" for k in shape.key)
        given = ", ".join(f"bf_u.{shape.col('k', i)}" for i in range(len(shape.key)))
        again = src.replace(" AS bf_v(", " AS bf_u(")
        conds.append(f"({mine}) IN (SELECT {keys} FROM {d.table(info.name)} WHERE ({keys}) IN (SELECT {given} FROM "
                     f"{again}) {d.skip_locked_clause})")
    sql = (f"UPDATE {d.table(info.name)} AS bf_t SET " + ", ".join(f"{d.quote(t)} = {v}" for t, v in sets)
           + f" FROM {src} WHERE " + " AND ".join(conds))
    return Stmt(sql, names)


def parse_lsn(text: str) -> int:
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) | int(lo, 16)
