"""Sync triggers: keep a SQL-expression or lookup job's targets right while old application code still writes.

The batch fills rows that exist; these triggers cover the rows old code inserts and updates meanwhile, so a
job needs no sweeps once they are installed. One BEFORE trigger per event on PostgreSQL and MySQL/MariaDB
(assigning NEW), one AFTER trigger per event on SQLite (an UPDATE of the row just written, by its key).

The rule, per target column, for rows where the job's `where` holds on the row as written (NEW):

overwrite = true
    INSERT and UPDATE: target = expression(NEW), always (NULL if the expression is NULL), as the batch does.

overwrite = false (the default)
    INSERT: target NULL -> target = expression(NEW) (stays NULL when the expression is NULL).
    UPDATE:
      1. NEW.target IS NULL -> target = expression(NEW), as on INSERT. This includes an UPDATE that sets the
         target to NULL: NULL means "not filled" to backfilld, and the batch would fill it too.
      2. NEW.target is the same as OLD.target (the statement did not change it) and OLD.target equals
         expression(OLD) (the value was derived, not written by hand) -> target = expression(NEW), even when
         that is NULL: a derived value follows its sources.
      3. Otherwise (the statement changed the target, or the target held a hand-written value) -> untouched.

Lookup jobs ([jobs.lookup], TriggerSpec.lookup): the one target is the id of the lookup row matching the row's
match expressions, and the triggers get or create that row. The rule is the one above for a fill job, where
"target = expression(NEW)" means: if every match value of NEW is known, make sure the lookup row exists (insert
it with the dialect's on-conflict-nothing form, only after a look-up found none, so no sequence or AUTO_INCREMENT
value is spent on a value that has its row; an existing lookup row is never changed or deleted), then target =
its id; if a match value is NULL, target = NULL (as `wanted` in engines/statements.py). Rule 2 applies only when a
column the match expressions read changed (otherwise the row's lookup row is the same), and "derived" means
OLD.target was the id of OLD's lookup row. The values columns are written only when a lookup row is created.

"The same" is exact: null-safe, and on strings byte for byte (never a case-insensitive collation, citext or
trailing-space padding), so a hand-written 'Example.com' is never taken for the derived 'example.com'; the
engine's dialect defines it (Dialect.same, and Dialect.holds for "equals expression(OLD)", as the column would
store it), as it does for batches and verify. A hand-written value that happens to equal expression(OLD) is
indistinguishable from a derived one and follows its sources like one.

Expressions are user SQL over unqualified columns; each engine evaluates them over NEW and OLD its own way:
PostgreSQL selects them from a derived table made of the record (`FROM (SELECT NEW.*) AS t`); SQLite runs them
in the UPDATE of the row itself, and over OLD from a derived table of OLD's columns; MySQL/MariaDB triggers can
only assign NEW, so the expression is rewritten by a tokenizer that prefixes the table's columns with NEW. or
OLD. (see rewrite_columns for what it understands). An expression may not read a target column: the result
would depend on the order targets are assigned, which differs between engines. A lookup job's match and values
expressions come qualified by the table's own name (lookup.prepare: they sit in a subquery over the lookup table):
the derived table of NEW or OLD carries that name on PostgreSQL and SQLite (SQLite's statements read the written
row from the table itself), and MySQL's rewriting turns table.column into NEW.column like a bare column.

Owns: the rule above, the trigger names, the checks every engine's triggers share, and installing, removing and
finding them (install, remove, installed). Delegates each engine's trigger SQL, how its DDL runs and how it finds
its triggers to the engine's Triggers (engines/<engine>/triggers.py, reached through Dialect.triggers() and
imported only then), reading expressions to engines/sqltext.py (re-exported here), and a lookup job's look-up
(lookup_expr, wanted) to engines/statements.py; tests no engine name.
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from backfilld.engines.base import Column, Dialect, Engine, Stmt
from backfilld.engines.sqltext import (
    ColumnRef,
    Token,
    as_dialect,
    column_refs,
    referenced_columns,
    rewrite_columns,
    split_table,
    tokenize,
)
from backfilld.engines.statements import LookupSpec
from backfilld.errors import SchemaError

# ------------------------------------------------------------------------------------------ names

# PostgreSQL truncates identifiers at 63 bytes, MySQL refuses over 64 characters: names stay well below.
_MAX_JOB_PART = 36


@dataclass(frozen=True)
class TriggerNames:
    insert: str
    update: str
    function: str  # PostgreSQL only: the plpgsql function both triggers call


def trigger_names(table: str, job_name: str) -> TriggerNames:
    """Deterministic names: bf_<job, sanitized>_<hash of table and job>_{ins,upd,fn}; at most 53 characters.

    The hash covers the unqualified table name too, because MySQL and SQLite trigger names are unique per
    schema, not per table: two configs with the same job name on different tables must not collide.
    """
    base = re.sub(r"[^a-z0-9_]", "_", job_name.lower())[:_MAX_JOB_PART]
    digest = hashlib.sha256(f"{split_table(table)[1].lower()}\x00{job_name}".encode()).hexdigest()[:8]
    stem = f"bf_{base}_{digest}"
    return TriggerNames(f"{stem}_ins", f"{stem}_upd", f"{stem}_fn")


# ------------------------------------------------------------------------------------------ the engine part


@dataclass(frozen=True)
class TriggerSpec:
    """One job's sync triggers, checked: what an engine's Triggers.install_sql builds them from."""

    table: str
    columns: Mapping[str, Column | None]  # the table's columns, None where the type is unknown (may be empty)
    key: tuple[str, ...]  # the columns the written row is found by (empty: the primary key, or rowid)
    exprs: Mapping[str, str]  # target -> expression, without comments
    where: str | None  # without comments
    overwrite: bool
    names: TriggerNames
    or_replace: bool = False  # the server replaces a trigger in one statement (CREATE OR REPLACE TRIGGER)
    # a lookup job: its lookup table (match and values expressions qualified by the table's name, as
    # lookup.prepare builds them, without comments); exprs is then {target: lookup_expr}
    lookup: LookupSpec | None = None

    def match_sources(self, d: Dialect) -> list[str]:
        """A lookup job's columns its match expressions read, each once: what moves the row to another lookup row."""
        assert self.lookup is not None
        out: list[str] = []
        for expr in self.lookup.match.values():
            out += [c for c in referenced_columns(expr, d, list(self.columns), self.table) if c not in out]
        return out


class Triggers(abc.ABC):
    """One engine's sync triggers: the SQL that creates, drops and finds them, and how their DDL runs.

    Each engine's triggers.py subclasses it; its Dialect.triggers() returns one. The defaults: triggers live in
    their table's schema and are dropped by name there; DDL is transactional, so replacing the triggers in one
    transaction leaves no write uncovered.
    """

    # building the triggers needs the table's columns, not only checking the targets against them
    needs_columns = True
    # DROP TRIGGER names the table (... ON table): remove() drops only what else there is once the table is gone
    drops_on_table = False
    # the triggers call a function created beside the table: installing them needs CREATE on its schema too
    creates_function = False

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    @abc.abstractmethod
    def install_sql(self, spec: TriggerSpec) -> list[str]:
        """The statements that (re)create the triggers, in order."""

    @abc.abstractmethod
    def installed_sql(self, schema: str | None, p: Callable[[str], str]) -> str:
        """The query of which of the two triggers exist on the table; p(name) is the placeholder of a value:
        table, schema (None when unqualified), qualified (the quoted table), ins and upd (the trigger names)."""

    def drops(self, table: str, names: TriggerNames) -> list[str]:
        """DROP TRIGGER IF EXISTS of both triggers, named in the table's schema."""
        return [f"DROP TRIGGER IF EXISTS {self.dialect.in_schema(table, n)}" for n in (names.insert, names.update)]

    def remove_sql(self, table: str, names: TriggerNames, table_exists: bool) -> list[str]:
        """The statements that drop the triggers (and whatever else install_sql created); each is IF EXISTS."""
        return self.drops(table, names)

    async def replaces_atomically(self, engine: Engine) -> bool:
        """Whether this server has CREATE OR REPLACE TRIGGER (TriggerSpec.or_replace)."""
        return False

    async def run_ddl(self, engine: Engine, stmts: Sequence[str]) -> None:
        async with engine.transaction():
            for s in stmts:
                await engine.execute(s)


# ------------------------------------------------------------------------------------------ builders


def _table_columns(columns: Mapping[str, Any] | Iterable[str]) -> dict[str, Column | None]:
    """Column name -> Column (None where its type is unknown), from names, name -> declared type, or
    TableInfo.columns."""
    if isinstance(columns, Mapping):
        out: dict[str, Column | None] = {}
        for name, v in columns.items():
            out[name] = v if isinstance(v, Column) else Column(name, v, True) if v else None
        return out
    return dict.fromkeys(columns)


def _no_comments(sql: str, d: Dialect) -> str:
    try:
        tokens = tokenize(sql, d)
    except ValueError:
        return sql  # _check reports it
    return "".join(" " if t.kind == "comment" else t.text for t in tokens).strip()


def _check(d: Dialect, table: str, types: Mapping[str, Any], key: Sequence[str], exprs: Mapping[str, str],
           where: str | None, lookup: LookupSpec | None) -> None:
    if not exprs:
        raise SchemaError("sync triggers need at least one target")
    if lookup is not None and len(exprs) != 1:
        raise SchemaError("a lookup job's sync triggers fill exactly one target")
    if types:
        lower = {c.lower(): c for c in types}
        for target in exprs:
            if target not in types and (not d.fold_case or target.lower() not in lower):
                raise SchemaError(f"target column {target!r} does not exist in table {table!r}")
        for col in key:
            if col not in types:
                raise SchemaError(f"key column {col!r} does not exist in table {table!r}")
    # (target, what it is computed from, SQL): a lookup job's target is its look-up, which reads of the row only
    # what the match and values expressions read
    if lookup is None:
        checked = [(t, "its expression", e) for t, e in exprs.items()]
    else:
        checked = [(next(iter(exprs)), f"lookup.{part}.{c}", e)
                   for part, m in (("match", lookup.match), ("values", lookup.values)) for c, e in m.items()]
    for target, what, expr in checked:
        try:
            reads = referenced_columns(expr, d, list(types) or list(exprs), table)
        except ValueError as exc:
            raise SchemaError(f"target {target!r}: cannot read {what}: {exc}") from None
        wrong = [c for c in reads if c in exprs or c.lower() in {t.lower() for t in exprs}]
        if wrong and lookup is not None:
            raise SchemaError(f"target {target!r}: {what} reads the target column {wrong[0]!r}; a sync trigger "
                              "cannot look up by the column it fills. Match on source columns")
        if wrong:
            raise SchemaError(f"target {target!r}: its expression reads target column {wrong[0]!r}; a sync "
                              "trigger cannot keep an expression over another target (the result would depend "
                              "on the order the targets are written). Derive every target from source columns")
    if where is not None:
        try:
            tokenize(where, d)
        except ValueError as exc:
            raise SchemaError(f"where: cannot read the filter: {exc}") from None


def build_install_sql(dialect: Dialect | str, table: str, columns: Mapping[str, Any] | Iterable[str],
                      key: Sequence[str], exprs: Mapping[str, str], where: str | None, overwrite: bool,
                      job_name: str, *, mariadb: bool = False, lookup: LookupSpec | None = None) -> list[str]:
    """The statements that (re)create a job's sync triggers, in order. Pure: no database needed.

    columns: the table's columns, as names, name -> declared type, or TableInfo.columns. MySQL needs them to
    rewrite expressions (and the types to compare strings exactly); SQLite to read OLD; PostgreSQL only checks
    the targets against them (and, for a lookup job, finds the match expressions' columns). key: the columns
    SQLite finds the row by (rowid when empty); unused elsewhere. mariadb: the server replaces a trigger
    atomically (MariaDB's CREATE OR REPLACE TRIGGER): no DROP first. lookup: a lookup job's lookup table
    (Prepared.spec.lookup), with exprs its one target's look-up: the triggers get or create the lookup row.
    dialect: the engine's Dialect, or its name as in config.
    """
    d = as_dialect(dialect)
    trig = d.triggers()
    types = _table_columns(columns)
    # a line comment inside an expression would swallow what the trigger writes after it on the line
    exprs = {t: _no_comments(e, d) for t, e in exprs.items()}
    where = _no_comments(where, d) if where is not None else None
    if lookup is not None:
        lookup = replace(lookup, match={c: _no_comments(e, d) for c, e in lookup.match.items()},
                         values={c: _no_comments(e, d) for c, e in lookup.values.items()})
    if (trig.needs_columns or lookup is not None) and not types:
        raise SchemaError(f"{d.name} sync triggers{' of a lookup job' if lookup else ''} need the table's columns")
    _check(d, table, types, key, exprs, where, lookup)
    return trig.install_sql(TriggerSpec(table, types, tuple(key), dict(exprs), where, overwrite,
                                        trigger_names(table, job_name), or_replace=mariadb, lookup=lookup))


def build_remove_sql(dialect: Dialect | str, table: str, job_name: str, *, table_exists: bool = True) -> list[str]:
    """The statements that drop a job's sync triggers (and PostgreSQL's function); each is IF EXISTS."""
    return as_dialect(dialect).triggers().remove_sql(table, trigger_names(table, job_name), table_exists)

# ------------------------------------------------------------------------------------------ engine operations


async def install(engine: Engine, table: str, key: Sequence[str] | None, exprs: Mapping[str, str],
                  where: str | None, overwrite: bool, job_name: str, *, lookup: LookupSpec | None = None
                  ) -> list[str]:
    """(Re)create the job's sync triggers; returns the statements run. Idempotent.

    key: the job's key (SQLite finds the written row by it); None or empty for the primary key (rowid when
    the table has none). lookup: a lookup job's lookup table (see build_install_sql).
    """
    info = await engine.table_info(table)
    key = list(key or info.primary_key)
    trig = engine.dialect.triggers()
    stmts = build_install_sql(engine.dialect, table, info.columns, key, exprs, where, overwrite, job_name,
                              mariadb=await trig.replaces_atomically(engine), lookup=lookup)
    await trig.run_ddl(engine, stmts)
    return stmts


async def remove(engine: Engine, table: str, job_name: str) -> list[str]:
    """Drop the job's sync triggers (and PostgreSQL's function); returns the statements run. Idempotent."""
    trig = engine.dialect.triggers()
    exists = not trig.drops_on_table or await engine.has_table(table)
    stmts = build_remove_sql(engine.dialect, table, job_name, table_exists=exists)
    await trig.run_ddl(engine, stmts)
    return stmts


async def installed(engine: Engine, table: str, job_name: str) -> bool:
    """Whether both of the job's triggers exist on the table (not whether they match the current spec)."""
    names = trigger_names(table, job_name)
    schema, bare = split_table(table)
    d = engine.dialect
    order: list[str] = []

    def p(name: str) -> str:
        order.append(name)
        return d.placeholder(len(order))

    values = {"table": bare, "schema": schema, "qualified": d.table(table), "ins": names.insert,
              "upd": names.update}
    sql = d.triggers().installed_sql(schema, p)
    rows = await engine.fetch(Stmt(d.finish(sql), tuple(order)), values)
    return {r[0] for r in rows} == {names.insert, names.update}


__all__ = ["ColumnRef", "Token", "TriggerNames", "TriggerSpec", "Triggers", "build_install_sql", "build_remove_sql",
           "column_refs", "install", "installed", "referenced_columns", "remove", "rewrite_columns", "tokenize",
           "trigger_names"]
