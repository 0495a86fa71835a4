"""The engine base class: every job-level operation backfilld performs on one database connection.

Owns: Engine (driver primitives each engine implements, and the shared operations over them: the key walk,
batches, the state table, leases), AppActivity, and the key walk's advance check. Delegates the spelling of
SQL to sqldialect.py, a job's statements to statements.py (pure builders), what the catalog says to catalog.py,
what plan's assessment reads (grants, sizes, log settings, indexes) to assessment.py and grants.py.
Each engine package (postgresql, mysql, sqlite) supplies its Dialect, its driver calls, its catalog queries,
its error mapping, its sync triggers (Dialect.triggers()) and its answers to plan's assessment; nothing above
engines/ imports a driver or writes SQL.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import decimal
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from backfilld import state
from backfilld.config import DatabaseURL
from backfilld.engines import Capabilities, capabilities
from backfilld.engines.assessment import LogVolume, PendingIndex, Privileges, TableSize, Writes
from backfilld.engines.catalog import Column, TableInfo
from backfilld.engines.grants import Need
from backfilld.engines.sqldialect import Dialect, Stmt, _Params
from backfilld.engines.statements import BatchPlan, TableSpec, WriteShape, build_plan, key_args, keys_limit, range_call
from backfilld.errors import EngineError, RetryableError, SchemaError, StateError
from backfilld.keys import Unrepresentable, decode_key, encode_key  # noqa: F401 - engines' and callers' names
from backfilld.state import JobState  # noqa: F401 - callers' name

# Column, TableInfo, Dialect, Stmt, BatchPlan, WriteShape, key_args: Engine's own names, which other modules
# import from here too, as they did before base.py was split (catalog.py, sqldialect.py, statements.py)


@dataclass(frozen=True)
class AppActivity:
    """One look at the application on the primary (backfilld's own sessions are never counted in it)."""

    active: int            # sessions running a statement now
    waiting: int           # of them, those waiting for a lock that a backfilld session holds
    longest_wait_s: float  # the longest of those waits so far; 0 when none waits


# Key values whose Python order is the order every engine sorts them in (bytes: byte by byte, as bytea, BINARY
# and BLOB sort); text is left out (collations), and so are floats (NaN) and times with a zone.
_PYTHON_ORDERED = (int, decimal.Decimal, dt.date, dt.timedelta, bytes)


def advanced(after: Sequence[Any] | None, hi: tuple[Any, ...]) -> tuple[Any, ...]:
    """hi, the last key of the range after `after`; an error if it is not past `after`: the walk would read the
    same ranges forever (a key the server compares otherwise than it sorts, or a driver that reads two values
    as one; preflight's round trip catches most). Past is checked where Python orders the values as the
    servers do (_PYTHON_ORDERED), equality everywhere."""
    if after is None:
        return hi
    after = tuple(after)
    back = hi == after
    if not back and all(isinstance(v, _PYTHON_ORDERED) and not (isinstance(v, decimal.Decimal) and v.is_nan())
                        for v in (*hi, *after)):
        with contextlib.suppress(TypeError):   # two types in one column (SQLite): no order to check
            back = hi < after
    if back:
        raise EngineError(f"the key walk stopped advancing: the range after key {encode_key(after)} ends at "
                          f"{encode_key(hi)}, so this key cannot be paged (its values do not compare as they sort, "
                          "or the driver reads two of them as one); set key = [...] to another unique, NOT NULL "
                          "index")
    return hi



def lease_key(name: str) -> str:
    """A lease name as a short, fixed-size token (MySQL's lock names stop at 64 characters)."""
    return "backfilld:" + hashlib.sha256(name.encode()).hexdigest()[:40]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------------------------------ engine


# The client's deadline on a statement exceeds the server's statement timeout by this much (or a tenth of it):
# the server's cancel comes back first whenever the server can answer at all. Seconds.
STATEMENT_DEADLINE_MARGIN_S = 2.0


def describe(exc: BaseException) -> str:
    """A driver or socket error's text for a message, never empty (a timeout's str() is "")."""
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    return str(exc) or type(exc).__name__


class Engine(abc.ABC):
    """One connection to one database, and every job-level operation backfilld performs on it: the shared
    implementation of protocols.Driver, plus catalog, lease, state table and batches. The optional abilities
    (protocols.Replication, AppSessions) are the engine packages' own."""

    dialect: Dialect
    role = ""   # what a second connection is for (see clone); "" for the job's own

    def __init__(self, url: DatabaseURL, *, lock_timeout_s: float = 1.0, connect_timeout_s: float = 10.0,
                 fast_commit: bool = False, skip_locked: bool = True, statement_timeout_s: float = 60.0,
                 idle_in_transaction_timeout_s: float = 10.0) -> None:
        self.url = url
        self.fast_commit = fast_commit
        # batches lock their rows without waiting for one the application holds ([database] skip_locked)
        self.skip_locked = skip_locked
        self.lock_timeout_s = lock_timeout_s
        self.connect_timeout_s = connect_timeout_s
        # every wait on the server is bounded ([database] statement_timeout_s, idle_in_transaction_timeout_s)
        self.statement_timeout_s = statement_timeout_s
        self.idle_in_transaction_timeout_s = idle_in_transaction_timeout_s

    @property
    def statement_deadline_s(self) -> float:
        """The client's own bound on one statement: the server's, plus a margin for the server's cancel to come
        back. Past it the connection is given up for lost (the server ends the session's transaction)."""
        return self.statement_timeout_s + max(STATEMENT_DEADLINE_MARGIN_S, 0.1 * self.statement_timeout_s)

    @property
    def name(self) -> str:
        return self.dialect.name

    @property
    def capabilities(self) -> Capabilities:
        """What this engine can do (engines.CAPABILITIES), for code outside engines/ that must not test names."""
        return capabilities(self.dialect.name)

    @abc.abstractmethod
    def translate(self, exc: BaseException) -> EngineError:
        """A driver exception as one of ours: retryable, reconnect-worthy, or final."""

    @contextlib.contextmanager
    def driver_errors(self) -> Iterator[None]:
        try:
            yield
        except EngineError:
            raise
        except Exception as exc:  # noqa: BLE001 - every driver failure becomes one of ours
            raise self.translate(exc) from None

    # --- driver primitives, one implementation per engine
    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def fetch(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    @abc.abstractmethod
    async def execute(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> int:
        """Run a statement; the number of rows it changed."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    def clone(self, role: str) -> Engine:
        """An unconnected engine for the same database and settings: a second connection, named for its role
        where the server shows names (PostgreSQL's application_name "backfilld-<role>")."""
        other = type(self)(self.url, lock_timeout_s=self.lock_timeout_s, connect_timeout_s=self.connect_timeout_s,
                           fast_commit=self.fast_commit, skip_locked=self.skip_locked,
                           statement_timeout_s=self.statement_timeout_s,
                           idle_in_transaction_timeout_s=self.idle_in_transaction_timeout_s)
        other.role = role
        return other

    def unpageable_key(self, column: Column) -> str | None:
        """Why a column cannot be (part of) the key a job pages by on this engine, or None."""
        return None

    async def concurrent_reads(self) -> bool:
        """Whether a second connection may read the table while this one writes it, without blocking either."""
        return True

    async def enable_concurrent_writes(self) -> bool:
        """Make this session fit to write one key range while another session writes the next one (without
        waiting on its locks); False if the engine cannot (the job then writes one batch at a time)."""
        return True

    async def reconnect(self) -> None:
        with contextlib.suppress(Exception):
            await self.close()
        await self.connect()

    # --- catalog, one implementation per engine
    @abc.abstractmethod
    async def table_info(self, table: str) -> TableInfo:
        """Columns, primary key and unique keys; SchemaError if the table does not exist."""

    @abc.abstractmethod
    async def estimate_rows(self, table: str) -> int: ...

    async def count_rows(self, table: str) -> int:
        """The exact row count: a scan of the table (or of its smallest index)."""
        return int((await self.fetch(f"SELECT count(*) FROM {self.dialect.table(table)}"))[0][0])

    @abc.abstractmethod
    async def explain(self, stmt: Stmt, values: dict[str, Any]) -> list[str]: ...

    @abc.abstractmethod
    def explain_uses_index(self, lines: list[str]) -> bool:
        """Whether an EXPLAIN output reads a key range rather than the whole table."""

    # --- plan's assessment (engines/assessment.py, engines/grants.py): read-only looks at the user's grants, the
    # table's size, the replication log's settings and the indexes; plan prints them as estimates
    @abc.abstractmethod
    async def privileges(self, needs: Sequence[Need]) -> Privileges:
        """The configured user's standing against each need: held or lacking, with the GRANT that gives what
        lacks; a catalog that cannot be read makes a need "not checked" with the reason, never an error."""

    async def id_sequence(self, table: str, column: str) -> str | None:
        """The sequence (as SQL: schema.name) the column's DEFAULT takes its values from, whose USAGE an INSERT needs
        besides the table's INSERT; None where there is none or the engine has no such object (an
        AUTO_INCREMENT, SQLite's rowid, an identity column)."""
        return None

    @abc.abstractmethod
    async def table_size(self, table: str, rows: int) -> TableSize:
        """The table's data on disk and its average row (rows: the row estimate, for engines that divide)."""

    @abc.abstractmethod
    async def log_volume(self, size: TableSize, writes: Writes) -> LogVolume:
        """What the run's writes put into the replication log (WAL, binlog), by the server's settings."""

    @abc.abstractmethod
    def pending_index(self, spec: TableSpec, name: str, key_bytes: int, target_bytes: int) -> PendingIndex | None:
        """The index that would serve the sweep's "any row left?" check (statements.build_any_pending), or None
        when no index can (an overwrite job compares every row's target with its expression)."""

    async def index_serves(self, table: str, stmt: Stmt, values: dict[str, Any]) -> tuple[bool, list[str]]:
        """Whether an index serves the statement's conditions (rather than a read of the whole table), and its
        EXPLAIN. Here: what the planner picks (explain_uses_index); engines whose planner scans a small table
        whatever its indexes ask it again, steered off the scan."""
        lines = await self.explain(stmt, values)
        return self.explain_uses_index(lines), lines

    def state_table_ddl(self, table: str) -> str:
        return state.ddl(self.dialect, table)

    # --- the job lease: one daemon per job at a time
    @abc.abstractmethod
    async def try_lease(self, name: str) -> bool:
        """Take the named lease for as long as this connection lives; False if another session holds it.
        Taking a lease this connection already holds succeeds."""

    @abc.abstractmethod
    async def lease_holder(self, name: str) -> str | None:
        """Who holds the named lease, as an operator would find it (a backend pid, a connection id)."""

    # --- replication and the application's sessions: optional abilities (engines/protocols.py: Replication,
    # AppSessions), which the engines that have them add; callers ask Capabilities, then protocols.replication()
    # or protocols.app_sessions()

    # --- transform writes: one guarded statement joining the table to the batch's computed rows
    @abc.abstractmethod
    async def write_rows(self, info: TableInfo, shape: WriteShape, rows: Sequence[Sequence[Any]]) -> int:
        """Write computed targets; each row is key + sources read + targets read + new targets. Rows written."""

    # --- shared operations
    def plan(self, spec: TableSpec, once_expr: str | None = None, lock: str | None = None) -> BatchPlan:
        """A SQL-expression job's statements (statements.build_plan: once_expr, lock)."""
        return build_plan(self.dialect, spec, once_expr, lock)

    def lock_clause(self, info: TableInfo, targets: Sequence[str]) -> str | None:
        """The clause a batch locks its rows with before writing `targets`: the dialect's SKIP LOCKED form
        (None where the engine has no row locks)."""
        return self.dialect.skip_locked_clause

    async def lock_support(self) -> str | None:
        """Why batches on this server cannot lock rows with SKIP LOCKED (None: they can). SQLite has no row
        locks: a batch is the database's one write transaction, which the application waits for."""
        if self.dialect.skip_locked_clause is None:
            return "SQLite has no row locks"
        return None

    async def lock_timeout_problem(self) -> str | None:
        """Why lock_timeout_s may let the server pick the application, not backfilld, as a deadlock's victim."""
        return None

    def no_wait(self, stmt: Stmt, key: Sequence[str] = ()) -> Stmt | None:
        """`stmt` in a form that fails at once rather than wait for a row lock, which a batch that locks first
        tries before its locking read (MySQLEngine); None where the engine has none."""
        return None

    async def locked_keys(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                          keys: int | None = None) -> list[tuple[Any, ...]]:
        """Lock the rows of (lo, hi] that may need a value, passing over those another session holds; their keys.
        keys: how many keys the range held when it was looked up (None: not known), which MySQL stops at."""
        stmt, values = range_call(plan.lock_first, plan.lock_after, lo, hi)
        return await self.fetch(stmt, {**values, "n_keys": keys_limit(keys)})

    async def leftover(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any]) -> list[tuple[Any, ...]]:
        """In a batch's transaction, after its UPDATE: keys (up to LEFTOVER_SAMPLE) of the range's rows still
        needing a value, which SKIP LOCKED passed over; [] when the plan does not lock."""
        if plan.left_first is None:
            return []
        return await self.fetch(*range_call(plan.left_first, plan.left_after, lo, hi))

    async def once_expression(self, table: str, key: Sequence[str], expr: str) -> str | None:
        """What a batch computing the expression once per row writes (see apply_range_once); None when this
        engine cannot do it for this expression. Here: the expression itself."""
        return expr

    async def writes_token(self, table: str) -> object | None:
        """At a pass's start: a token nothing_else_wrote compares with at its end; None when this engine cannot
        tell (the job then always runs a sweep pass after a fill pass)."""
        return None

    async def nothing_else_wrote(self, table: str, token: object, own_commits: int) -> bool:
        """Whether, since writes_token gave `token` and on this connection throughout, no session but this
        one (which committed `own_commits` write transactions meanwhile, none rolled back) wrote to the
        database holding the table. False whenever unsure."""
        return False

    async def next_range(self, plan: BatchPlan, after: Sequence[Any] | None, n: int
                         ) -> tuple[tuple[Any, ...], int] | None:
        """The last key of the next n keys after `after` (start of table if None), and how many there are.

        First the n-th key alone (plan.skip_*), the answer for every batch but a pass's last; when fewer than n
        keys are left, the last key and count of those (plan.lookup_*)."""
        skip = plan.skip_first if after is None else plan.skip_after
        rows = await self.fetch(skip, {"skip": n - 1, **key_args("lo", after)})
        if rows:
            return advanced(after, tuple(rows[0])), n
        stmt = plan.lookup_first if after is None else plan.lookup_after
        rows = await self.fetch(stmt, {"n": n, **key_args("lo", after)})
        if not rows:
            return None
        row = rows[0]
        return advanced(after, tuple(row[:-1])), int(row[-1])

    async def apply_range(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                          keys: int | None = None) -> int:
        if plan.keyed_update is not None:   # lock first, then write the rows locked
            n = 0
            locked = await self.locked_keys(plan, lo, hi, keys)
            for stmt, values in plan.keyed_update.statements(self.dialect, locked):
                n += await self.execute(stmt, values)
            return n
        return await self.execute(*range_call(plan.update_first, plan.update_after, lo, hi))

    @abc.abstractmethod
    async def apply_range_once(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                               keys: int | None = None) -> int | None:
        """The batch with the expression computed once per row (plan.fill_once_*): rows written, or None when
        some row's expression was NULL, in which case the caller must roll the transaction back. PostgreSQL
        and SQLite trap the NULL inside the UPDATE (once_expression), MySQL reads it off the UPDATE's result."""

    async def apply_range_once_check(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                                     rows: int) -> int | None:
        """After apply_range_once's UPDATE, for an engine that cannot tell from the UPDATE itself: rows, unless
        a target in the range is still NULL (it got NULL; the write lock is held, so no other session can have
        added one)."""
        return None if await self.fetch(*range_call(plan.nulls_left_first, plan.nulls_left_after, lo, hi)) else rows

    async def create_lookups(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any], *,
                             every_row: bool = False) -> int:
        """A lookup job, inside the batch's transaction before its UPDATE: insert the lookup rows the range's
        rows need (every_row: all its rows, for verify --fix) that do not exist yet, in the order of their match
        values; one another session inserts meanwhile is left alone. Returns the rows inserted. Only missing
        values are inserted, so no sequence or AUTO_INCREMENT value is spent on a row that exists already."""
        assert plan.lookup_insert is not None
        first, after = ((plan.missing_any_first, plan.missing_any_after) if every_row
                        else (plan.missing_first, plan.missing_after))
        rows = await self.fetch(*range_call(first, after, lo, hi))
        created = 0
        for stmt, values in plan.lookup_insert.statements(self.dialect, rows):
            created += await self.execute(stmt, values)
        return created

    async def read_range(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any]
                         ) -> list[tuple[Any, ...]]:
        return await self.fetch(*range_call(plan.read_first, plan.read_after, lo, hi))

    async def ensure_state_table(self, table: str) -> None:
        """Create the state table unless it is there: one created beforehand, with grants of its own, spares
        backfilld the CREATE privilege (PostgreSQL and MySQL check it for CREATE TABLE IF NOT EXISTS before they
        look; README, Trust boundaries: minimal grants)."""
        if await self.has_table(table):
            return
        try:
            await self.execute(self.state_table_ddl(table))
        except RetryableError:
            raise
        except EngineError as exc:
            raise EngineError(f"the state table {table!r} does not exist and cannot be created ({exc}): grant "
                              "backfilld's user CREATE where it goes, or create it beforehand (backfilld's DDL: "
                              "README, Trust boundaries) and grant SELECT, INSERT, UPDATE on it") from None

    async def has_table(self, table: str) -> bool:
        """Whether the table exists (and this session can see it in the catalog)."""
        try:
            await self.table_info(table)
        except SchemaError:
            return False
        return True

    def _state_stmts(self, table: str) -> dict[str, Stmt]:
        cache: dict[str, dict[str, Stmt]] = self.__dict__.setdefault("_state_cache", {})
        if table not in cache:
            cache[table] = self._build_state_stmts(table)
        return cache[table]

    def _build_state_stmts(self, table: str) -> dict[str, Stmt]:
        return {name: Stmt(sql, names) for name, (sql, names) in state.statements(self.dialect, table).items()}

    async def read_state(self, table: str, job: str) -> JobState | None:
        """The job's row, checked (StateError when it holds what no backfilld wrote), or None."""
        rows = await self.fetch(self._state_stmts(table)["select_one"], {"job": job})
        return JobState.from_row(rows[0], table) if rows else None

    async def read_requests(self, table: str, job: str) -> str | None:
        """The job's stored operator requests alone (readable when the rest of its row is not)."""
        rows = await self.fetch(self._state_stmts(table)["select_requests"], {"job": job})
        return rows[0][0] if rows and isinstance(rows[0][0], str) else None

    async def read_state_rows(self, table: str) -> list[JobState | StateError]:
        """Every row, each checked on its own: an unreadable one is its StateError, for `status` to show."""
        out: list[JobState | StateError] = []
        for r in await self.fetch(self._state_stmts(table)["select_all"]):
            try:
                out.append(JobState.from_row(r, table))
            except StateError as exc:
                out.append(exc)
        return out

    async def write_state(self, table: str, st: JobState, *, insert: bool = False) -> None:
        """Insert or update the job's row; StateError when an update finds no row (deleted meanwhile)."""
        stmts = self._state_stmts(table)
        changed = await self.execute(stmts["insert" if insert else "update"], st.as_row())
        if not insert and changed != 1:
            raise state.row_gone(table, st.job)

    async def write_requests(self, table: str, job: str, requests: str) -> None:
        """Store operator requests for a job; a job that has not run yet gets a pending row."""
        await self.ensure_state_table(table)
        if not await self.execute(self._state_stmts(table)["set_requests"], {"requests": requests, "job": job}):
            await self.write_state(table, JobState(job=job, fingerprint="", status="pending", requests=requests,
                                                   updated_at=now_iso()), insert=True)

    async def write_verify(self, table: str, job: str, result: str, verified_at: str | None, *,
                           conclusive: bool = True) -> None:
        """Store a verify result without touching the rest; a conclusive one (it checked every row) also sets
        verified_at: its time when it was clean, NULL when it was not."""
        await self.ensure_state_table(table)
        if await self.read_state(table, job) is None:
            await self.write_state(table, JobState(job=job, fingerprint="", status="pending", updated_at=now_iso()),
                                   insert=True)
        if conclusive:
            await self.execute(self._state_stmts(table)["set_verify"],
                               {"result": result, "verified_at": verified_at, "job": job})
        else:
            await self.execute(self._state_stmts(table)["set_verify_result"], {"result": result, "job": job})

    async def advance_state(self, table: str, job: str, last_key: Sequence[Any], rows: int, scanned: int,
                            pending: int = 0) -> None:
        """Move the checkpoint; `pending` rows were left for a later pass (they count toward another pass)."""
        changed = await self.execute(self._state_stmts(table)["advance"],
                                     {"last_key": encode_key(last_key), "rows": rows, "rows2": rows + pending,
                                      "scanned": scanned, "now": now_iso(), "job": job})
        if changed != 1:   # in the batch's transaction: raising rolls the batch back with it
            raise state.row_gone(table, job)

    def skipped_table(self, state_table: str) -> str:
        return state_table + "_skipped"

    async def ensure_skipped_table(self, state_table: str) -> None:
        if await self.has_table(self.skipped_table(state_table)):   # as ensure_state_table
            return
        t = self.dialect.table(self.skipped_table(state_table))
        await self.execute(f"CREATE TABLE IF NOT EXISTS {t} (job varchar(64) NOT NULL, row_key varchar(700) NOT NULL, "
                           "error text, at_time varchar(40))")

    async def record_skipped(self, state_table: str, job: str, key: Sequence[Any], error: str) -> None:
        """A row a transform could not compute, with on_error = "skip": kept once per key, newest error."""
        t = self.dialect.table(self.skipped_table(state_table))
        d = self.dialect
        k = encode_key(key)
        p = _Params(d)
        await self.execute(Stmt(d.finish(f"DELETE FROM {t} WHERE job = {p('job')} AND row_key = {p('k')}"),
                                tuple(p.names)), {"job": job, "k": k})
        p = _Params(d)
        await self.execute(Stmt(d.finish(f"INSERT INTO {t} (job, row_key, error, at_time) VALUES ({p('job')}, "
                                          f"{p('k')}, {p('e')}, {p('at')})"), tuple(p.names)),
                           {"job": job, "k": k, "e": error[:2000], "at": now_iso()})

    async def skipped(self, state_table: str, job: str, limit: int = 10) -> tuple[int, list[tuple[str, str]]]:
        """How many rows the transform skipped, and a sample of (key, error)."""
        t = self.dialect.table(self.skipped_table(state_table))
        d = self.dialect
        p = _Params(d)
        try:
            n = await self.fetch(Stmt(d.finish(f"SELECT count(*) FROM {t} WHERE job = {p('job')}"), tuple(p.names)),
                                 {"job": job})
        except EngineError:
            return 0, []
        p = _Params(d)
        rows = await self.fetch(Stmt(d.finish(f"SELECT row_key, error FROM {t} WHERE job = {p('job')} "
                                              f"ORDER BY at_time LIMIT {int(limit)}"), tuple(p.names)), {"job": job})
        return int(n[0][0]), [(r[0], r[1]) for r in rows]

    async def check_expressions(self, plan: BatchPlan) -> None:
        """Evaluate every target expression on a few rows; SchemaError names what failed."""
        assert plan.sample is not None
        try:
            await self.fetch(plan.sample, {"n": 5})
        except EngineError as exc:
            raise SchemaError(f"an expression or the where filter fails on the table: {exc}") from None
