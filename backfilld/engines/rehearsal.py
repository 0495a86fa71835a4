"""The statements `backfilld rehearse` runs, as pure builders over a Dialect, and what each engine adds to them.

Owns: the reads of a sample's slots of the real table, an expression computed over a key range of it (its values,
and the fit probe around them), the scratch table on an --against engine (its DDL, its copy, its values), Family
(what kind of value a column holds: how it is copied to another engine and how values are compared across
engines) and RowFailed. Each engine's part (its temporary-table syntax, its types, its fit probe, MySQL's
warnings) is a Rehearsal subclass in engines/<engine>/rehearsal.py, imported when first asked for (for_engine).
Nothing here writes to a job's table: the one write of a rehearsal, the timed batch, is the job's own statement
(engines/statements.py), run inside a transaction that is rolled back (backfilld/rehearse.py).
"""

from __future__ import annotations

import decimal
import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backfilld.config import DatabaseURL, parse_url
from backfilld.engines import capabilities
from backfilld.engines.catalog import Column
from backfilld.engines.sqldialect import Dialect, Stmt, _Params
from backfilld.engines.statements import TableSpec, any_null, key_values
from backfilld.errors import ConfigError, EngineError, RetryableError

# The scratch table's own column: the sample row's number, 0..n-1, its primary key. Ranges of it split a failing
# statement on any engine, whatever order the engine sorts the job's key in (collations differ between engines).
SCRATCH_ROW = "bf_rehearse_row"

# What a value can be, for copying it onto another engine and comparing it with another engine's
KINDS = ("int", "decimal", "float", "text", "bytes", "bool", "date", "datetime", "datetime_tz", "time", "json",
         "uuid", "other")


@dataclass(frozen=True)
class Family:
    """What kind of value a column holds, engine-neutral (its Rehearsal reads it off the catalog's type)."""

    kind: str                     # one of KINDS
    length: int | None = None     # text: characters, bytes: bytes; None: unbounded or not known
    precision: int | None = None  # decimal: digits (None: unbounded)
    scale: int | None = None      # decimal: digits after the point
    unsigned: bool = False        # int: MySQL UNSIGNED


class RowFailed(Exception):
    """A statement of the rehearsal failed because of some row of its range: the server's words for it (an
    error, or on MySQL a warning that strict mode turns into an error in an UPDATE)."""

    def __init__(self, message: str) -> None:
        message = " ".join(message.split())   # a server's DETAIL and HINT lines on one line
        super().__init__(message)
        self.message = message


class Rehearsal:
    """One engine's part of a rehearsal. Subclasses: engines/<engine>/rehearsal.py."""

    name = "base"
    # why values are not checked against the target column on this engine (None: fit_probe checks them)
    fit_unchecked: str | None = None

    def family(self, column: Column) -> Family:
        """What kind of value the column holds, from its catalog type."""
        raise NotImplementedError

    def scratch_type(self, family: Family) -> str:
        """The type of a scratch column holding values of this family here."""
        raise NotImplementedError

    def bindable(self, family: Family, value: Any) -> Any:
        """value (read from another engine, of this family) as this engine's driver binds it into
        scratch_type(family); ValueError when this engine cannot hold it."""
        raise NotImplementedError

    def fit_probes(self, value: str, column: Column) -> list[str]:
        """SQL expressions over `value` (the expression's value, as SQL) that are NULL where the value fits the
        column as an UPDATE would store it, and else say why not; the first one the server accepts for the
        expression's type is used (a later one checks less). Any of them may raise on a row: that row's value
        does not convert. [] where nothing is checked (fit_unchecked)."""
        return []

    def temp_create(self, d: Dialect, name: str, columns: Sequence[tuple[str, str]]) -> str:
        """A session-private (temporary) table: gone with the session, however the session ends."""
        cols = ", ".join(f"{d.quote(c)} {t}" for c, t in columns)
        return f"CREATE TEMPORARY TABLE {d.quote(name)} ({cols})"

    def temp_ref(self, d: Dialect, name: str) -> str:
        """The temporary table as a statement names it: never a permanent table of the same name."""
        raise NotImplementedError

    def temp_drop(self, d: Dialect, name: str) -> str:
        """Drops the temporary table, and never a permanent one of the same name."""
        raise NotImplementedError

    def value_expr(self, column: Column) -> str:
        """What the fit probe reads for a value bound as value_param (a Python transform's), named bf_v."""
        return "bf_v"

    def value_param(self, value: Any) -> Any:
        """A Python transform's value (or a row number) as bound for the fit probe."""
        return value

    async def fetch_checked(self, engine: Any, stmt: Stmt, values: dict[str, Any], *,
                            warnings: bool = True) -> list[tuple[Any, ...]]:
        """A rehearsal statement's rows; RowFailed when some row made it fail (warnings: also where it only
        warned, on an engine whose UPDATE fails where its SELECT warns). Errors of the connection or the
        server's state (a lock wait, a lost connection) are raised as they are: no row is to blame."""
        try:
            return list(await engine.fetch(stmt, values))
        except RetryableError:
            raise
        except EngineError as exc:
            raise RowFailed(str(exc)) from None

    async def mode(self, engine: Any) -> str | None:
        """What of the session's settings decides whether a value fits (MySQL's sql_mode), for the report."""
        return None


# --against's word for an in-memory database of the file-database engine (SQLite): no file, no server
IN_MEMORY = "sqlite"


def against_url(text: str) -> DatabaseURL:
    """An --against value: IN_MEMORY alone is an in-memory SQLite database, else a URL as in [database] url
    (ConfigError naming it otherwise; like the config's, it cannot hold a password, which is never echoed)."""
    if text.strip().lower() == IN_MEMORY:
        return parse_url("sqlite:///:memory:")
    try:
        return parse_url(text)
    except ValueError as exc:
        raise ConfigError(f"--against: the URL {exc}") from None


def against_label(url: DatabaseURL) -> str:
    """How the report names an --against database: as given (IN_MEMORY), else its URL without a password."""
    return IN_MEMORY if capabilities(url.engine).file_database and url.database == ":memory:" else str(url)


def for_engine(name: str) -> Rehearsal:
    """The named engine's Rehearsal ("postgresql", "mysql", "sqlite"), its module imported on first use."""
    module = importlib.import_module(f"backfilld.engines.{name}.rehearsal")
    rehearsal: Rehearsal = module.REHEARSAL
    return rehearsal


# ------------------------------------------------------------------------------------------ the real table


def _conds(d: Dialect, spec: TableSpec, p: _Params, lo: bool, hi: bool) -> list[str]:
    """The rows a rehearsal looks at in a key range (lo, hi] (either end open when not given): those the job
    would write, as its batches select them (the filter, and a target still NULL unless it overwrites)."""
    conds = []
    if lo:
        conds.append(d.row_cmp(spec.key, ">", p, "lo"))
    if hi:
        conds.append(d.row_cmp(spec.key, "<=", p, "hi"))
    if spec.where:
        conds.append(f"({spec.where})")
    if not spec.overwrite:
        conds.append(any_null(d, spec))
    return conds


def _where(conds: list[str]) -> str:
    return f" WHERE {' AND '.join(conds)}" if conds else ""


def build_key_span(d: Dialect, spec: TableSpec) -> Stmt:
    """The smallest and largest key of a one-column key: two descents of its index."""
    k = d.quote(spec.key[0])
    return Stmt(d.finish(f"SELECT min({k}), max({k}) FROM {d.table(spec.table)}"))


def build_slot_read(d: Dialect, spec: TableSpec, sources: Sequence[str], *, lo: bool, hi: bool,
                    desc: bool = False) -> Stmt:
    """Key and sources of the first (desc: the last) `n` rows of (lo, hi] that the job would write."""
    p = _Params(d)
    conds = _conds(d, spec, p, lo, hi)
    order = ", ".join(d.quote(c) + (" DESC" if desc else "") for c in spec.key)
    sel = ", ".join([*key_values(d, spec), *(d.quote(s) for s in sources)])
    sql = f"SELECT {sel} FROM {d.table(spec.table)}{_where(conds)} ORDER BY {order} LIMIT {p('n')}"
    return Stmt(d.finish(sql), tuple(p.names))


def build_values(d: Dialect, spec: TableSpec, expr: str, *, lo: bool, hi: bool) -> Stmt:
    """Key and the expression's value of each row of (lo, hi] the job would write."""
    p = _Params(d)
    conds = _conds(d, spec, p, lo, hi)
    sel = ", ".join([*key_values(d, spec), f"({expr})"])
    return Stmt(d.finish(f"SELECT {sel} FROM {d.table(spec.table)}{_where(conds)}"), tuple(p.names))


def build_probe(d: Dialect, spec: TableSpec, expr: str, probe: str, *, lo: bool, hi: bool,
                empty: bool = False) -> Stmt:
    """Key and the fit probe (Rehearsal.fit_probes over bf_v, the expression's value) of each row of (lo, hi] the
    job would write. empty: no rows at all, only whether the server accepts the probe for the expression's type."""
    p = _Params(d)
    conds = _conds(d, spec, p, lo, hi)
    names = [f"bf_k{i}" for i in range(len(spec.key))]
    inner = ", ".join([*(f"{v} AS {n}" for v, n in zip(key_values(d, spec), names, strict=True)),
                       f"({expr}) AS bf_v"])
    sql = (f"SELECT {', '.join(names)}, {probe} FROM (SELECT {inner} FROM {d.table(spec.table)}{_where(conds)}) "
           f"AS bf_s" + (" LIMIT 0" if empty else ""))
    return Stmt(d.finish(sql), tuple(p.names))


def build_value_probe(d: Dialect, probe: str, n_rows: int) -> Stmt:
    """The fit probe over bound values (a Python transform's), each with its row number: (row number, probe)."""
    p = _Params(d)
    rows = " UNION ALL ".join(
        f"SELECT {p(f'i{j}')}{' AS bf_i' if j == 0 else ''}, {p(f'v{j}')}{' AS bf_v' if j == 0 else ''}"
        for j in range(n_rows))
    return Stmt(d.finish(f"SELECT bf_i, {probe} FROM ({rows}) AS bf_s"), tuple(p.names))


# ------------------------------------------------------------------------------------------ the scratch table


def build_scratch_insert(d: Dialect, table_ref: str, columns: Sequence[str], n_rows: int) -> Stmt:
    """n_rows rows into the scratch table (SCRATCH_ROW first, then the given columns)."""
    p = _Params(d)
    cols = ", ".join(d.quote(c) for c in (SCRATCH_ROW, *columns))
    rows = ", ".join("(" + ", ".join(p(f"r{i}c{j}") for j in range(len(columns) + 1)) + ")" for i in range(n_rows))
    return Stmt(d.finish(f"INSERT INTO {table_ref} ({cols}) VALUES {rows}"), tuple(p.names))


def build_scratch_values(d: Dialect, table_ref: str, expr: str, *, lo: bool, hi: bool,
                         empty: bool = False) -> Stmt:
    """The row number and the expression's value of each scratch row numbered in (lo, hi]."""
    p = _Params(d)
    row = d.quote(SCRATCH_ROW)
    conds = ([f"{row} > {p('lo')}"] if lo else []) + ([f"{row} <= {p('hi')}"] if hi else [])
    sql = f"SELECT {row}, ({expr}) FROM {table_ref}{_where(conds)}" + (" LIMIT 0" if empty else "")
    return Stmt(d.finish(sql), tuple(p.names))


def plain_type(column_type: str) -> str:
    """A type name without its length, precision or scale (character varying(10) -> character varying)."""
    return re.sub(r"\s*\(\s*\d+\s*(,\s*\d+\s*)?\)", "", column_type).strip()


def as_number(value: Any) -> decimal.Decimal:
    """A sample's value as the exact number a numeric column would be given (ValueError when it is none)."""
    if isinstance(value, bool):
        return decimal.Decimal(int(value))
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    try:
        return decimal.Decimal(str(value).strip())
    except decimal.InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
