"""Before a job writes anything: its table, key and targets checked against the live catalog, its statements
built, and how many of its batches may be in flight.

Owns: resolve_key (the key a job pages by), spelled_as_catalog, prepare (every check, and the BatchPlan),
check_key_round_trip, concurrency_limit; the TableSpec a job's statements are built from. Delegates SQL to
the engine and engines/statements.py. Writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backfilld import logs
from backfilld.config import JobConfig
from backfilld.engines.base import Engine, advanced, encode_key
from backfilld.engines.catalog import TableInfo
from backfilld.engines.slots import slot_check
from backfilld.engines.sqldialect import Stmt
from backfilld.engines.statements import (
    BatchPlan,
    TableSpec,
    WriteShape,
    build_count_upto,
    build_transform_plan,
    key_args,
    lookups,
)
from backfilld.errors import BackfilldError, ConfigError, EngineError, RetryableError, SchemaError, combined
from backfilld.settings import WORKERS_MAX
from backfilld.transforms import Transform

log = logs.get_logger("backfilld.preflight")


@dataclass
class Prepared:
    """A job checked against the live catalog, with its statements built."""

    job: JobConfig
    table: TableInfo
    key: tuple[str, ...]
    exprs: dict[str, str]          # SQL-expression jobs; empty for transform jobs
    plan: BatchPlan
    spec: TableSpec                # what plan was built from (verify builds its reads from it too)
    fingerprint: str
    transform: Transform | None = None
    shape: WriteShape | None = None


def resolve_key(job: JobConfig, info: TableInfo) -> tuple[str, ...]:
    """The key the job pages by: the configured one if it is unique and not null, else the primary key."""
    if job.key is None:
        if not info.primary_key:
            raise SchemaError(f"job {job.name!r}: table {job.table!r} has no primary key; set key = [...] to "
                              "the columns of a unique, NOT NULL index")
        # SQLite lets a primary key declared without NOT NULL (but INTEGER PRIMARY KEY) hold NULL, and keyset
        # paging skips such rows: prepare() accepts the key while no row has a NULL in it (null_keys)
        return info.primary_key
    key = tuple(job.key)
    for col in key:
        if col not in info.columns:
            raise SchemaError(f"job {job.name!r}: key column {col!r} does not exist in table {job.table!r}")
    if key != info.primary_key:
        if not any(set(u) == set(key) for u in info.unique_keys):
            raise SchemaError(f"job {job.name!r}: key {list(key)} is not the primary key or a unique index of "
                              f"{job.table!r}; keyset paging over a non-unique key would skip rows")
        nullable = [c for c in key if info.columns[c].nullable]
        if nullable:
            raise SchemaError(f"job {job.name!r}: key column {nullable[0]!r} is nullable; rows with a NULL key "
                              "cannot be paged; use the primary key or a NOT NULL unique index")
    return key


def null_keys_stmt(engine: Engine, job: JobConfig, info: TableInfo, key: tuple[str, ...]) -> Stmt | None:
    """Whether any row has a NULL in its key: a statement for a primary key declared without NOT NULL (SQLite
    allows one), else None."""
    nullable = [c for c in key if info.columns[c].nullable]
    if not nullable:
        return None
    d = engine.dialect
    cond = " OR ".join(f"{d.quote(c)} IS NULL" for c in nullable)
    return Stmt(d.finish(f"SELECT 1 FROM {d.table(job.table)} WHERE {cond} LIMIT 1"))


async def check_null_keys(engine: Engine, job: JobConfig, info: TableInfo, key: tuple[str, ...]) -> None:
    """A primary key declared without NOT NULL is a key while no row has NULL in it (rows with a NULL key cannot
    be paged: they would be skipped); the job checks again at each pass's end (JobRunner)."""
    stmt = null_keys_stmt(engine, job, info, key)
    if stmt is not None and await engine.fetch(stmt):
        raise SchemaError(null_key_problem(job, key, info))


def null_key_problem(job: JobConfig, key: tuple[str, ...], info: TableInfo) -> str:
    nullable = [c for c in key if info.columns[c].nullable]
    return (f"job {job.name!r}: primary key column {nullable[0]!r} of {job.table!r} is declared without NOT NULL "
            "and some rows have a NULL key, which keyset paging would skip; give those rows a key and declare it "
            "NOT NULL, or set key = [...] to a NOT NULL unique index")


def spelled_as_catalog(engine: Engine, job: JobConfig, info: TableInfo) -> JobConfig:
    """The job with its key, target and source columns named as the catalog names them, on an engine whose
    column names ignore case (MySQL, SQLite): there `ID` is the column `id`, in the job's SQL as in its key."""
    if not engine.dialect.fold_case:
        return job
    by_lower = {c.lower(): c for c in info.columns}

    def canon(names: list[str], what: str) -> list[str]:
        out = [by_lower.get(c.lower(), c) for c in names]
        if len(set(out)) != len(out):
            twice = next(c for c in out if out.count(c) > 1)
            raise SchemaError(f"job {job.name!r}: {what} name column {twice!r} twice (column names ignore case on "
                              f"{engine.name})")
        return out

    update: dict[str, Any] = {}
    if job.key is not None:
        update["key"] = canon(job.key, "key columns")
    if job.set:
        update["set"] = dict(zip(canon(list(job.set), "targets"), job.set.values(), strict=True))
    if job.transform:
        update["sources"], update["targets"] = canon(job.sources, "sources"), canon(job.targets, "targets")
        canon([*update["sources"], *update["targets"]], "sources and targets")
    if job.lookup is not None:   # its target is a column of the job's table like any other target
        [target] = canon([job.lookup.target], "lookup.target")
        if target != job.lookup.target:
            update["lookup"] = job.lookup.model_copy(update={"target": target})
    if all(getattr(job, k) == v for k, v in update.items()):
        return job
    return job.model_copy(update=update)


def check_slots(engine: Engine, job: JobConfig) -> None:
    """Each expression and the filter stay in their place in backfilld's statements (engines/slots.py: the
    engine's lexical rules, then its grammar as sqlglot parses it): ConfigError naming every one that does not,
    before any statement runs with them. Text sqlglot cannot parse stands on the lexical verdict, and is logged
    (sql_slot_not_parsed): the server parses it at preflight, inside parentheses it cannot close."""
    slots = [("where", job.where, True)] if job.where is not None else []
    if not job.transform:
        slots += [(f"set.{target}", expr, False) for target, expr in job.expressions(engine.name).items()]
    problems: list[BackfilldError] = []
    for key, sql, condition in slots:
        slot = slot_check(sql, engine.dialect, condition=condition)
        if slot.problem:
            where = key if key == "where" else f"{key} ({engine.name})"
            problems.append(ConfigError(f"job {job.name!r}: {where} {slot.problem}"))
        elif slot.unparsed:
            log.warning("sql_slot_not_parsed", job=job.name, key=key, engine=engine.name, parser=slot.unparsed)
    if job.lookup is not None:
        from backfilld import lookup

        problems += lookup.check_slots(engine, job)
    if problems:
        raise combined(problems)


async def prepare(engine: Engine, job: JobConfig) -> Prepared:
    """Check table, key and targets against the catalog and every expression on sample rows. Writes nothing.
    Prepared.job is the job as the catalog spells its columns (spelled_as_catalog): use it, not the config's."""
    check_slots(engine, job)
    info = await engine.table_info(job.table)
    job = spelled_as_catalog(engine, job, info)
    key = resolve_key(job, info)
    await check_null_keys(engine, job, info, key)
    check_targets(job, info, key)
    for name in key:
        why = engine.unpageable_key(info.columns[name])
        if why:
            raise SchemaError(f"job {job.name!r}: key column {name!r} ({info.columns[name].type}) cannot be paged: "
                              f"{why}; set key = [...] to another unique, NOT NULL index")
    fingerprint = job.fingerprint(engine.name, list(key))
    await check_key_round_trip(engine, job, info, key)
    if job.transform:
        return await prepare_transform(engine, job, info, key, fingerprint)
    lookup_spec = None
    if job.lookup is not None:
        from backfilld import lookup

        exprs, lookup_spec = await lookup.prepare(engine, job, info)
    else:
        exprs = job.expressions(engine.name)
    spec = TableSpec(job.table, key, exprs, job.where, job.overwrite, info.columns, lookup=lookup_spec)
    once = None
    # a lookup job's expression is NULL until its batch created the lookup row: computed under its guard only
    if len(exprs) == 1 and not job.overwrite and lookup_spec is None:
        once = await engine.once_expression(job.table, key, next(iter(exprs.values())))
    lock = engine.lock_clause(info, list(exprs)) if engine.skip_locked and await engine.lock_support() is None \
        else None
    plan = engine.plan(spec, once, lock)
    await engine.check_expressions(plan)
    return Prepared(job, info, key, exprs, plan, spec, fingerprint)


def check_targets(job: JobConfig, info: TableInfo, key: tuple[str, ...]) -> None:
    """Every target exists, is a stored nullable column (unless the job overwrites), and is not in the key: one
    SchemaError naming every target that is not."""
    problems = [p for target in job.target_columns if (p := _target_problem(job, info, key, target))]
    if problems:
        raise combined([SchemaError(p) for p in problems])


def _target_problem(job: JobConfig, info: TableInfo, key: tuple[str, ...], target: str) -> str | None:
    col = info.columns.get(target)
    if col is None:
        return (f"job {job.name!r}: target column {target!r} does not exist in table {job.table!r}; add it (the "
                "expand step) before the backfill")
    if col.generated:
        return (f"job {job.name!r}: target column {target!r} of {job.table!r} is generated (the database "
                "computes its value and refuses writes to it); a backfill fills a stored, nullable column")
    if not col.nullable and not job.overwrite:
        return (f"job {job.name!r}: target column {target!r} is NOT NULL; backfilld fills NULL targets; make it "
                "nullable until the backfill is verified")
    if target in key:
        return f"job {job.name!r}: target {target!r} is part of the key"
    return None


async def prepare_transform(engine: Engine, job: JobConfig, info: TableInfo, key: tuple[str, ...],
                            fingerprint: str) -> Prepared:
    """A Python-transform job: its sources exist, its where filter runs, its read and write statements."""
    for source in job.sources:
        if source not in info.columns:
            raise SchemaError(f"job {job.name!r}: source column {source!r} does not exist in table {job.table!r}")
    assert job.transform is not None
    transform = Transform(job.transform, job.sources, job.targets)
    spec = TableSpec(job.table, key, {}, job.where, job.overwrite, info.columns, tuple(job.sources),
                     tuple(job.targets))
    plan = build_transform_plan(engine.dialect, spec)
    assert plan.read_first is not None
    try:
        await engine.fetch(plan.read_first, {f"hi{i}": None for i in range(len(key))})
    except EngineError as exc:
        raise SchemaError(f"job {job.name!r}: the where filter fails on the table: {exc}") from None
    shape = WriteShape(spec.key, spec.sources, spec.targets, spec.overwrite)
    return Prepared(job, info, key, {}, plan, spec, fingerprint, transform, shape)


async def check_key_round_trip(engine: Engine, job: JobConfig, info: TableInfo, key: tuple[str, ...]) -> None:
    """Before anything is written: the first keys, as read, must be storable in the checkpoint, and bound
    back they must find exactly their own rows in the key's order. A key type the driver or server converts on
    the way (rounded floats, bit strings, a charset that does not round-trip) would otherwise make batches skip
    rows or read the same range forever."""
    spec = TableSpec(job.table, key, columns=info.columns)   # the key walk's statements need no more
    plan = lookups(engine.dialect, spec)
    try:
        first = await engine.fetch(plan["lookup_first"], {"n": 1})
    except RetryableError:
        raise
    except EngineError as exc:
        raise SchemaError(f"job {job.name!r}: the key {list(key)} of {job.table!r} cannot be read: {exc}") from None
    if not first:
        return   # an empty table: nothing to page (rows inserted later are checked when the job runs again)
    k1 = tuple(first[0][:-1])
    for col, value in zip(key, k1, strict=True):   # a type the checkpoint cannot store fails here
        try:
            encode_key([value])
        except SchemaError as exc:
            raise SchemaError(f"job {job.name!r}: key column {col!r} ({info.columns[col].type}) of {job.table!r}: "
                              f"{exc}; set key = [...] to another unique, NOT NULL index") from None
    try:
        [(n,)] = await engine.fetch(build_count_upto(engine.dialect, spec), key_args("hi", k1))
        following = await engine.fetch(plan["skip_after"], {"skip": 0, **key_args("lo", k1)})
    except RetryableError:
        raise
    except EngineError as exc:
        raise SchemaError(f"job {job.name!r}: the key {list(key)} of {job.table!r} cannot be bound back as it is "
                          f"read: {exc}") from None
    if following:
        try:
            advanced(k1, tuple(following[0]))
        except EngineError as exc:
            raise SchemaError(f"job {job.name!r}: key {list(key)} of {job.table!r}: {exc}") from None
    if int(n) == 1:
        return
    raise SchemaError(f"job {job.name!r}: key {list(key)} of {job.table!r} does not round-trip: its first value "
                      f"{encode_key(k1)}, read as the driver converts it and bound back, matches {n} rows up to "
                      "itself where it must match its own row alone; set key = [...] to another unique, NOT NULL "
                      "index")


async def concurrency_limit(engine: Engine, p: Prepared) -> tuple[int, str | None]:
    """The most batches of the job that may be in flight (WORKERS_MAX, or 1), and why 1 where it is. Where
    more may, the engine's session is made fit to write beside others (Engine.enable_concurrent_writes)."""
    if p.transform is not None:
        return 1, "a Python transform job writes one batch at a time"
    if p.spec.lookup is not None:
        # two batches creating the same new lookup value at once would wait for each other's uncommitted row
        return 1, "a lookup job writes one batch at a time (its batches create lookup rows)"
    if not await engine.enable_concurrent_writes():
        return 1, (engine.capabilities.single_writer
                   or "the server logs statements (binlog_format = STATEMENT), which READ COMMITTED writes need")
    return WORKERS_MAX, None
