"""The state table: one row per job, its checkpoint, counts, status, operator requests and verify result.

Owns: the table's columns, declared once (COLUMNS: name, kind, constraint), and everything derived from them:
JobState (the row in memory), the CREATE TABLE of each engine (a dialect names each kind's SQL type, see
Dialect.state_types) and the statements that read and write rows. Engines run them (Engine.read_state, ...).
Imports nothing of engines/: a dialect is anything with quote, table, placeholder and finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from backfilld.errors import StateError
from backfilld.keys import decode_key, encode_key
from backfilld.status import Status


@dataclass(frozen=True)
class Column:
    name: str
    kind: str          # "name", "status", "count", "total", "text", "time": Dialect.state_types maps each
    constraint: str = ""   # what follows the type, as the engines spell it alike


COLUMNS: tuple[Column, ...] = (
    Column("job", "name", "NOT NULL PRIMARY KEY"),
    Column("fingerprint", "name", "NOT NULL"),
    Column("status", "status", "NOT NULL"),
    Column("pass_no", "count", "NOT NULL DEFAULT 1"),
    Column("last_key", "text"),
    Column("rows_done", "total", "NOT NULL DEFAULT 0"),
    Column("pass_rows", "total", "NOT NULL DEFAULT 0"),
    Column("pass_scanned", "total", "NOT NULL DEFAULT 0"),
    Column("error", "text"),
    Column("started_at", "time"),
    Column("updated_at", "time"),
    Column("finished_at", "time"),
    Column("verified_at", "time"),
    Column("verify_result", "text"),
    Column("requests", "text"),
)
NAMES = tuple(c.name for c in COLUMNS)
# the most of an error message a state row keeps (the rest is in the log)
ERROR_CHARS = 4000
_COUNTS = tuple(c.name for c in COLUMNS if c.kind in ("count", "total"))
_STATUSES = tuple(s.value for s in Status)
# written by others than the job's own save: operators (requests), verify (verified_at, verify_result)
_NOT_SAVED = ("job", "requests", "verified_at", "verify_result")
# what a retry reloads from the table: the database, not memory, says what committed
PROGRESS = ("last_key", "pass_no", "rows_done", "pass_rows", "pass_scanned", "updated_at")


@dataclass
class JobState:
    """One row of the state table."""

    job: str
    fingerprint: str
    status: str
    pass_no: int = 1
    last_key: tuple[Any, ...] | None = None
    rows_done: int = 0
    pass_rows: int = 0
    pass_scanned: int = 0
    error: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    verified_at: str | None = None
    verify_result: str | None = None
    requests: str | None = None

    COLUMNS = NAMES

    def as_row(self) -> dict[str, Any]:
        return {c: (encode_key(self.last_key) if c == "last_key" else getattr(self, c)) for c in NAMES}

    @classmethod
    def from_row(cls, row: Sequence[Any], table: str = "the state table") -> JobState:
        """The row as read back, checked like input (anyone with UPDATE on the table can write it): StateError
        naming the job, the column and what is wrong, never a value taken on trust."""
        d = dict(zip(NAMES, row, strict=True))
        job = d["job"]

        def bad(column: str, what: str) -> StateError:
            shown = repr(d[column])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            return StateError(
                f"{table}: the row of job {job!r} is unreadable: {column} holds {shown}, {what}. Nothing was "
                f"written. Correct it with SQL, or start the job over with `backfilld run CONFIG --job {job} "
                "--restart`", job=job)

        if not isinstance(job, str) or not job:
            raise StateError(f"{table}: a row has job {job!r}, not a job name; delete it with SQL", job=job)
        for c in NAMES:
            if c not in _COUNTS and d[c] is not None and not isinstance(d[c], str):
                raise bad(c, "not text")
        if d["status"] not in _STATUSES:
            raise bad("status", f"not one of {', '.join(_STATUSES)}")
        for c in _COUNTS:
            v = d[c]
            if isinstance(v, str) and v.isascii() and v.isdigit():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if c == "pass_no" else 0):
                raise bad(c, "not a whole number" + (" of 1 or more" if c == "pass_no" else " of 0 or more"))
            d[c] = v
        try:
            d["last_key"] = decode_key(d["last_key"])
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            raise bad("last_key", "not a key backfilld wrote (a JSON list of the key's values)") from None
        return cls(**d)


def row_gone(table: str, job: str) -> StateError:
    """The error of a job whose row was deleted while it ran (a checkpoint that updated no row)."""
    return StateError(f"{table}: the row of job {job!r} is gone (deleted while the job ran), so its checkpoint "
                      "cannot be kept; the batch was rolled back. Run the job again: it starts over from its first "
                      "key", job=job)


class Dialect(Protocol):
    state_types: dict[str, str]
    state_table_options: str

    def quote(self, name: str) -> str: ...

    def table(self, name: str) -> str: ...

    def placeholder(self, n: int) -> str: ...

    def finish(self, sql: str) -> str: ...


def ddl(d: Dialect, table: str) -> str:
    cols = ", ".join(f"{c.name} {d.state_types[c.kind]}{' ' + c.constraint if c.constraint else ''}"
                     for c in COLUMNS)
    options = f" {d.state_table_options}" if d.state_table_options else ""
    return f"CREATE TABLE IF NOT EXISTS {d.table(table)} ({cols}){options}"


class _Params:
    def __init__(self, d: Dialect) -> None:
        self.d, self.names = d, list[str]()

    def __call__(self, name: str) -> str:
        self.names.append(name)
        return self.d.placeholder(len(self.names))


def statements(d: Dialect, table: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each statement on the state table as (SQL, parameter names in binding order)."""
    t, q = d.table(table), d.quote
    cols = ", ".join(q(c) for c in NAMES)
    out: dict[str, tuple[str, tuple[str, ...]]] = {}

    def add(name: str, build: Any) -> None:
        p = _Params(d)
        out[name] = (d.finish(build(p)), tuple(p.names))

    add("insert", lambda p: f"INSERT INTO {t} ({cols}) VALUES ({', '.join(p(c) for c in NAMES)})")
    # a job's save writes only what the job owns: `requests` belong to operators (write_requests) and
    # verified_at / verify_result to verify (write_verify); a save must never undo theirs
    add("update", lambda p: f"UPDATE {t} SET "
        + ", ".join(f"{q(c)} = {p(c)}" for c in NAMES if c not in _NOT_SAVED) + f" WHERE {q('job')} = {p('job')}")
    add("advance", lambda p: (
        f"UPDATE {t} SET {q('last_key')} = {p('last_key')}, {q('rows_done')} = {q('rows_done')} + {p('rows')}, "
        f"{q('pass_rows')} = {q('pass_rows')} + {p('rows2')}, "
        f"{q('pass_scanned')} = {q('pass_scanned')} + {p('scanned')}, "
        f"{q('updated_at')} = {p('now')} WHERE {q('job')} = {p('job')}"))
    add("select_one", lambda p: f"SELECT {cols} FROM {t} WHERE {q('job')} = {p('job')}")
    add("select_requests", lambda p: f"SELECT {q('requests')} FROM {t} WHERE {q('job')} = {p('job')}")
    add("select_all", lambda p: f"SELECT {cols} FROM {t} ORDER BY {q('job')}")
    add("set_requests", lambda p: f"UPDATE {t} SET {q('requests')} = {p('requests')} WHERE {q('job')} = {p('job')}")
    # a verify that checked every row says whether the job is verified now (verified_at its time, or NULL: it
    # found rows missing or wrong); one stopped part way proves nothing either way and leaves verified_at be
    add("set_verify", lambda p: (
        f"UPDATE {t} SET {q('verify_result')} = {p('result')}, {q('verified_at')} = {p('verified_at')} "
        f"WHERE {q('job')} = {p('job')}"))
    add("set_verify_result", lambda p: (
        f"UPDATE {t} SET {q('verify_result')} = {p('result')} WHERE {q('job')} = {p('job')}"))
    return out
