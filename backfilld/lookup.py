"""Lookup (normalization) jobs: fill a foreign key from a lookup table, creating the lookup rows it needs.

Owns: the checks of a job's lookup table against the live catalog (a unique index on exactly the match columns,
a generated id, column types that agree), and the target's expression, `(SELECT id FROM lookup WHERE match)`,
from which everything else of an SQL-expression job follows: batches (with Engine.create_lookups before their
UPDATE, batches.FillBatch), sweeps, verify and its repair (Verifier), plan. The statements themselves are built
in engines/statements.py (LookupSpec, build_missing, LookupInsert, write_guard).
"""

from __future__ import annotations

import re

from backfilld.config import JobConfig
from backfilld.engines.base import Engine
from backfilld.engines.catalog import Column, TableInfo
from backfilld.engines.slots import slot_check
from backfilld.engines.sqltext import rewrite_columns, split_table
from backfilld.engines.statements import LookupSpec, lookup_expr
from backfilld.errors import BackfilldError, ConfigError, SchemaError, combined

_INTEGER = re.compile(r"^(tiny|small|medium|big)?int(eger)?\b|^(big|small)?serial\b|^int[248]\b", re.I)
_TEXT = re.compile(r"^(var)?char|^character|^(tiny|medium|long)?text\b|^(var)?binary|^(tiny|medium|long)?blob\b|"
                   r"^bytea\b|^citext\b|^clob\b", re.I)


def family(column: Column) -> str | None:
    """"integer" or "text" (text and binary strings) for a column type, None for any other."""
    if _INTEGER.match(column.type.strip()):
        return "integer"
    if _TEXT.match(column.type.strip()):
        return "text"
    return None


def check_slots(engine: Engine, job: JobConfig) -> list[BackfilldError]:
    """Each match and values expression stays in its slot (as [jobs.set]'s do, preflight.check_slots)."""
    assert job.lookup is not None
    problems: list[BackfilldError] = []
    for part, exprs in (("match", job.lookup.matches(engine.name, job.name)),
                        ("values", job.lookup.extra(engine.name, job.name))):
        for column, sql in exprs.items():
            slot = slot_check(sql, engine.dialect, condition=False)
            if slot.problem:
                problems.append(ConfigError(f"job {job.name!r}: lookup.{part}.{column} ({engine.name}) {slot.problem}"))
    return problems


async def prepare(engine: Engine, job: JobConfig, info: TableInfo) -> tuple[dict[str, str], LookupSpec]:
    """The lookup table checked (SchemaError naming every problem and what to do), and the job's one target
    expression with its LookupSpec."""
    lk = job.lookup
    assert lk is not None
    d = engine.dialect
    if split_table(lk.table)[1].lower() == split_table(job.table)[1].lower():
        raise SchemaError(f"job {job.name!r}: the lookup table {lk.table!r} has the name of the job's table; "
                          "a lookup table is another table")
    try:
        linfo = await engine.table_info(lk.table)
    except SchemaError as exc:
        raise SchemaError(f"job {job.name!r}: lookup table: {exc}; create it (the expand step) before the "
                          "backfill") from None
    cols = {c.lower() if d.fold_case else c: c for c in linfo.columns}

    def named(c: str) -> str:
        return cols.get(c.lower() if d.fold_case else c, c)

    match = {named(c): e for c, e in lk.matches(engine.name, job.name).items()}
    values = {named(c): e for c, e in lk.extra(engine.name, job.name).items()}
    id_col = named(lk.id)
    problems = [f"job {job.name!r}: lookup table {lk.table!r} has no column {c!r}"
                for c in (id_col, *match, *values) if c not in linfo.columns]
    if problems:
        raise combined([SchemaError(p) for p in problems])
    problems += _index_problems(job, linfo, id_col, match)
    problems += _type_problems(job, info, linfo, id_col, match)
    if problems:
        raise combined([SchemaError(p) for p in problems])
    # the match expressions sit in a subquery over the lookup table: their columns are the job table's, said so
    outer = d.quote(split_table(job.table)[1])

    def qualified(sql: str) -> str:
        return rewrite_columns(sql, d, info.columns, job.table, outer)

    spec = LookupSpec(lk.table, id_col, {c: qualified(e) for c, e in match.items()},
                      {c: qualified(e) for c, e in values.items()}, linfo.columns)
    return {lk.target: lookup_expr(d, spec)}, spec


def _index_problems(job: JobConfig, linfo: TableInfo, id_col: str, match: dict[str, str]) -> list[str]:
    lk = job.lookup
    assert lk is not None
    out = []
    uniques = {frozenset(k) for k in (linfo.primary_key, *linfo.unique_keys) if k}
    if frozenset(match) not in uniques:
        cols = ", ".join(match)
        out.append(f"job {job.name!r}: lookup table {lk.table!r} has no unique index on exactly ({cols}): without "
                   "one, the job and the application creating the same lookup row at once make duplicates; add "
                   f"CREATE UNIQUE INDEX ... ON {lk.table} ({cols})")
    column = linfo.columns[id_col]
    if not column.auto_id:
        out.append(f"job {job.name!r}: lookup id column {id_col!r} ({column.type}) is not generated by the "
                   "database; it must be an identity or serial column (PostgreSQL), AUTO_INCREMENT (MySQL/MariaDB) "
                   "or INTEGER PRIMARY KEY (SQLite)")
    for c in match:
        if linfo.columns[c].nullable:
            out.append(f"job {job.name!r}: lookup column {c!r} is nullable; a unique index does not stop two "
                       "rows with NULL in it, so match columns must be NOT NULL")
    return out


def _type_problems(job: JobConfig, info: TableInfo, linfo: TableInfo, id_col: str,
                   match: dict[str, str]) -> list[str]:
    """Types that cannot agree: the target against the id, and a match column against the job column its
    expression is (a bare column); other expressions are checked by the server on sample rows."""
    lk = job.lookup
    assert lk is not None
    out = []
    target = info.columns.get(lk.target)
    idc = linfo.columns[id_col]
    if target is not None and family(idc) and family(target) and family(idc) != family(target):
        out.append(f"job {job.name!r}: target {lk.target!r} ({target.type}) cannot hold the lookup id "
                   f"{id_col!r} ({idc.type})")
    for c, expr in match.items():
        src = info.columns.get(expr.strip())
        lc = linfo.columns[c]
        if src is not None and family(src) and family(lc) and family(src) != family(lc):
            out.append(f"job {job.name!r}: lookup column {c!r} ({lc.type}) and the column {src.name!r} "
                       f"({src.type}) it matches are of different types; convert in the expression, e.g. "
                       f"CAST({src.name} AS ...)")
    return out
