"""`backfilld rehearse`: each job tried on a sample of its table before it runs, with nothing written to the table.

Owns: the sample (SLOTS runs of rows spread over the whole key range), computing every target on it (an SQL
expression by the server, a Python transform by calling it) and counting the values that come out NULL, that do
not fit the target column and that raise, each with a few keys and their sources; the comparison with other
engines (--against: the sample's key and sources copied into a temporary table there, that engine's form of
each expression computed on it and compared row by row with the real database's); the timing of the job's own
batch statement in a transaction that is rolled back, and the estimate of the run from it; the report
(Report.as_dict is the --json shape, describe() its text, Report.problems the exit code's count).
Delegates the checks of the job and its statements to preflight, SQL to engines/rehearsal.py and each engine's
Rehearsal part.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import decimal
import json
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from backfilld import engines, logs
from backfilld.config import Config, DatabaseURL, JobConfig
from backfilld.daemon import naming_origin, open_engine, select_jobs
from backfilld.engines.base import Engine
from backfilld.engines.rehearsal import (
    SCRATCH_ROW,
    Family,
    Rehearsal,
    RowFailed,
    against_label,
    against_url,
    build_key_span,
    build_probe,
    build_scratch_insert,
    build_scratch_values,
    build_slot_read,
    build_value_probe,
    build_values,
    for_engine,
)
from backfilld.engines.sqldialect import Stmt
from backfilld.engines.sqltext import referenced_columns, slot_problem, split_table
from backfilld.engines.statements import key_args
from backfilld.errors import BackfilldError, ConfigError, EngineError, RetryableError

__all__ = ["DEFAULT_SAMPLE", "Interrupted", "Options", "Report", "against_label", "against_url", "describe",
           "rehearse"]
from backfilld.preflight import Prepared, concurrency_limit, prepare

log = logs.get_logger("backfilld.rehearse")

# Rows in a sample by default (--sample), and the most one may ask for (its rows are held in memory, and each
# --against engine gets them all).
DEFAULT_SAMPLE = 10_000
SAMPLE_MAX = 1_000_000
# The sample is this many runs of consecutive rows (slots) spread over the whole key range, the last one ending at
# the table's last key: a problem confined to a stretch of the table is in the sample once the stretch is wider
# than a slot's share of the keys (1% of them), and one that recurs with a period under the slot's rows (100 at the
# default sample) is in every slot. Runs, not single rows, keep it to one short statement per slot.
SLOTS = 100
# Keys shown for each kind of problem (with their sources)
SHOWN = 5
# Failing rows found one by one (a statement's range halved until the row) per target and engine; past that, the
# rows of each range that still fails are counted as failing (the count is then an upper bound, `exact` false),
# so that an expression raising on every row costs a few hundred statements, not two for each row.
ISOLATE_MAX = 100
# The timed batches: this many keys each, at the start, the middle and the end of the sample
TIMED_KEYS = 1_000
TIMED_RANGES = 3
# Rows of the sample copied into a scratch table per INSERT (each engine binds at most some 32,000 values a
# statement)
COPY_ROWS_MAX = 500
COPY_VALUES_MAX = 30_000
# A text value longer than this is shown cut, with its length
SHOWN_TEXT = 200
# Floats of two engines agree within this relative difference (their math libraries may differ in the last bit)
FLOAT_REL_TOL = 1e-12

# the JSON report's shape; raised when a field changes meaning or goes away (new fields do not raise it)
FORMAT = 1


class Interrupted(BackfilldError):
    """rehearsal interrupted (SIGINT or SIGTERM) before it finished: scratch tables dropped, nothing reported"""


class _RolledBack(Exception):
    """Ends a timed batch's transaction: it rolls back."""


class _NullMet(Exception):
    """A timed single-evaluation batch met a NULL: rolled back, timed again guarded, as a run redoes it."""


# ------------------------------------------------------------------------------------------ the report


def shown(value: Any) -> Any:
    """A value as the report shows it: JSON's own types, text cut at SHOWN_TEXT, bytes as \\x and hex."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value if len(value) <= SHOWN_TEXT else f"{value[:SHOWN_TEXT]}... ({len(value)} characters)"
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        return "\\x" + b[:SHOWN_TEXT // 2].hex() + (f"... ({len(b)} bytes)" if len(b) > SHOWN_TEXT // 2 else "")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return shown(str(value))


def _kind(entry: dict[str, Any]) -> str:
    """What kind of reason a sample entry gives: its text up to the first ':' (a number or value follows)."""
    return str(entry.get("reason") or entry.get("error") or "").split(":", 1)[0]


@dataclass
class Finding:
    """Rows of one kind of problem: how many, and the first SHOWN of them."""

    count: int = 0
    exact: bool = True   # False: some failing ranges were counted whole (ISOLATE_MAX), an upper bound
    samples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, entry: dict[str, Any]) -> None:
        self.count += 1
        if len(self.samples) < SHOWN:
            self.samples.append(entry)
            return
        # full: a reason not shown yet takes the place of the last one of a reason shown twice, so that one
        # common reason (rounding) does not hide a rarer one (out of range)
        kinds = [_kind(e) for e in self.samples]
        if _kind(entry) not in kinds:
            for i in range(len(kinds) - 1, -1, -1):
                if kinds.count(kinds[i]) > 1:
                    self.samples[i] = entry
                    return

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "exact": self.exact, "samples": self.samples}


@dataclass
class TargetReport:
    target: str
    column_type: str
    expression: str | None             # None: a Python transform's target
    null: Finding = field(default_factory=Finding)
    does_not_fit: Finding = field(default_factory=Finding)
    raises: Finding = field(default_factory=Finding)
    fit_unchecked_why: str | None = None     # why values were not checked against the column (None: they were)

    @property
    def problems(self) -> int:
        return self.null.count + self.does_not_fit.count + self.raises.count

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "column_type": self.column_type, "expression": self.expression,
                "null": self.null.as_dict(), "does_not_fit": self.does_not_fit.as_dict(),
                "raises": self.raises.as_dict(), "fit_not_checked": self.fit_unchecked_why}


@dataclass
class AgainstTarget:
    target: str
    expression: str | None
    error: str | None = None           # the expression cannot run there at all (or the job has no form for it)
    compared: int = 0
    disagree: Finding = field(default_factory=Finding)
    raises: Finding = field(default_factory=Finding)

    @property
    def problems(self) -> int:
        return self.disagree.count + self.raises.count + (1 if self.error else 0)

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.target, "expression": self.expression, "error": self.error, "compared": self.compared,
                "disagree": self.disagree.as_dict(), "raises": self.raises.as_dict()}


@dataclass
class AgainstReport:
    against: str                       # the URL as given ("sqlite" for an in-memory database), no password
    engine: str
    rows: int = 0                      # sample rows copied there
    not_copied: Finding = field(default_factory=Finding)
    note: str | None = None            # why nothing was compared (a transform job)
    targets: list[AgainstTarget] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return self.not_copied.count + sum(t.problems for t in self.targets)

    def as_dict(self) -> dict[str, Any]:
        return {"against": self.against, "engine": self.engine, "rows": self.rows,
                "not_copied": self.not_copied.as_dict(), "note": self.note,
                "targets": [t.as_dict() for t in self.targets]}


@dataclass
class Timing:
    keys: int = 0                      # keys the timed batches covered
    rows_written: int = 0              # rows they wrote, all rolled back
    ranges: int = 0
    update_s_per_1000: float | None = None   # median over the ranges, per 1,000 keys
    lookup_s_per_1000: float | None = None
    guarded: bool = False              # the expression was NULL on a timed row: timed as a run then writes
    estimated_rows: int = 0
    workers: int = 1
    max_rows_per_s: float = 0.0
    estimated_run_s: float | None = None
    bound_by: str | None = None        # "batches" or "max_rows_per_s"
    error: str | None = None

    @property
    def problems(self) -> int:
        return 1 if self.error else 0

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("keys", "rows_written", "ranges", "update_s_per_1000",
                                               "lookup_s_per_1000", "guarded", "estimated_rows", "workers",
                                               "max_rows_per_s", "estimated_run_s", "bound_by", "error")}


@dataclass
class JobReport:
    job: str
    engine: str
    table: str
    key: list[str]
    kind: str                          # "sql" or "transform"
    requested: int
    sources: list[str] = field(default_factory=list)
    method: str = ""                   # "interpolated" or "walked" (see take_sample)
    slots: int = 0
    rows: int = 0
    first_key: list[Any] | None = None
    last_key: list[Any] | None = None
    mode: str | None = None            # the session settings that decide what fits (MySQL's sql_mode)
    targets: list[TargetReport] = field(default_factory=list)
    transform_raises: Finding = field(default_factory=Finding)
    against: list[AgainstReport] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)
    defined_in: dict[str, Any] = field(default_factory=dict)   # the config or jobs file, as plan's "defined_in"

    @property
    def problems(self) -> int:
        return (sum(t.problems for t in self.targets) + self.transform_raises.count
                + sum(a.problems for a in self.against) + self.timing.problems)

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.job, "engine": self.engine, "table": self.table, "key": self.key, "kind": self.kind,
                "defined_in": self.defined_in, "sources": self.sources, "mode": self.mode,
                "sample": {"requested": self.requested, "rows": self.rows, "method": self.method,
                           "slots": self.slots, "first_key": self.first_key, "last_key": self.last_key},
                "targets": [t.as_dict() for t in self.targets],
                "transform_raises": self.transform_raises.as_dict(),
                "against": [a.as_dict() for a in self.against], "timing": self.timing.as_dict(),
                "problems": self.problems}


@dataclass
class Report:
    jobs: list[JobReport] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return sum(j.problems for j in self.jobs)

    def as_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "clean": self.problems == 0, "problems": self.problems,
                "jobs": [j.as_dict() for j in self.jobs]}


# ------------------------------------------------------------------------------------------ the sample


@dataclass(frozen=True)
class SampleRow:
    key: tuple[Any, ...]
    sources: tuple[Any, ...]      # Sample.sources' values


@dataclass
class Slot:
    """A run of sample rows and the key range (lo, hi] holding exactly them (lo None: from the table's start,
    hi None: to its end), which the statements computing their targets read again."""

    lo: tuple[Any, ...] | None
    hi: tuple[Any, ...] | None
    rows: list[SampleRow]


@dataclass
class Sample:
    sources: tuple[str, ...]
    slots: list[Slot]
    method: str
    requested: int

    @property
    def rows(self) -> list[SampleRow]:
        return [r for s in self.slots for r in s.rows]


Bounds = tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]


async def take_sample(engine: Engine, p: Prepared, sources: Sequence[str], n: int,
                      check: Callable[[], None]) -> Sample:
    """n rows the job would write, in SLOTS runs spread over the whole key range, the last run ending at the
    table's last key. A one-column integer key is split into equal spans between its smallest and largest value
    (two index descents, then one short read per slot: "interpolated"); any other key, or an integer key whose
    spans came back mostly empty (values in clusters with wide gaps between), is walked once from end to end in
    steps of about rows / SLOTS keys (backfilld's own range lookup, an index walk that reads every key once:
    "walked"). The sample is the same on every run of an unchanged table."""
    count = min(SLOTS, n)
    per = -(-n // count)
    spans = await _interpolated(engine, p, count)
    if spans is not None:
        slots = await _read_slots(engine, p, sources, spans, per, check)
        taken = sum(len(s.rows) for s in slots)
        if taken >= n // 2 or await engine.estimate_rows(p.job.table) < 2 * n:
            return Sample(tuple(sources), slots, "interpolated", n)
    spans = await _walked(engine, p, count, check)
    return Sample(tuple(sources), await _read_slots(engine, p, sources, spans, per, check), "walked", n)


async def _interpolated(engine: Engine, p: Prepared, count: int) -> list[Bounds] | None:
    if len(p.key) != 1:
        return None
    [(lo, hi)] = await engine.fetch(build_key_span(engine.dialect, p.spec))
    if lo is None:
        return []   # an empty table
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)):
        return None
    span = hi - lo + 1
    edges = [lo - 1 + span * j // count for j in range(count + 1)]
    out: list[Bounds] = []
    for j in range(count):
        if edges[j] < edges[j + 1]:
            out.append((None if j == 0 else (edges[j],), None if j == count - 1 else (edges[j + 1],)))
    return out


async def _walked(engine: Engine, p: Prepared, count: int, check: Callable[[], None]) -> list[Bounds]:
    estimate = max(1, await engine.estimate_rows(p.job.table))
    step = max(1, -(-estimate // count))
    groups: list[Bounds] = []
    after: tuple[Any, ...] | None = None
    while True:
        check()
        found = await engine.next_range(p.plan, after, step)
        if found is None:
            break
        hi, keys = found
        groups.append((after, hi))
        after = hi
        if keys < step:
            break
    if groups:   # the last group runs to the end of the table: rows added meanwhile are in it
        groups[-1] = (groups[-1][0], None)
    if len(groups) <= count:
        return groups
    # an estimate below the table's size made more groups: every slot a group, spread evenly, the last one kept
    picks = sorted({round(i * (len(groups) - 1) / (count - 1)) for i in range(count)}) if count > 1 else [0]
    return [groups[i] for i in picks]


async def _read_slots(engine: Engine, p: Prepared, sources: Sequence[str], spans: list[Bounds], per: int,
                      check: Callable[[], None]) -> list[Slot]:
    d, nk = engine.dialect, len(p.key)
    stmts: dict[tuple[bool, bool, bool], Stmt] = {}
    slots = []
    for i, (lo, hi) in enumerate(spans):
        check()
        desc = i == len(spans) - 1 and len(spans) > 1   # the last run ends at the table's end
        flags = (lo is not None, hi is not None, desc)
        if flags not in stmts:
            stmts[flags] = build_slot_read(d, p.spec, sources, lo=flags[0], hi=flags[1], desc=desc)
        got = await engine.fetch(stmts[flags], {"n": per + 1 if desc else per, **key_args("lo", lo),
                                                **key_args("hi", hi)})
        rows = [SampleRow(tuple(r[:nk]), tuple(r[nk:])) for r in got]
        if desc:
            if len(rows) > per:   # the row before the run bounds it below
                lo = rows[per].key
                rows = rows[:per]
            rows.reverse()
        elif rows:
            hi = rows[-1].key
        if rows:
            slots.append(Slot(lo, hi, rows))
    return slots


# ------------------------------------------------------------------------------------------ failing rows


class Isolation:
    """A statement over a range of rows, run for the whole range; where some row makes it fail (RowFailed), the
    range is halved until that row is found (ISOLATE_MAX of them; past that a failing range counts whole)."""

    def __init__(self, run: Callable[[Any, Any], Awaitable[list[tuple[Any, ...]]]], bound: Callable[[Any], Any],
                 check: Callable[[], None], budget: int = ISOLATE_MAX) -> None:
        self.run, self.bound, self.check, self.budget = run, bound, check, budget
        self.results: list[tuple[Any, ...]] = []
        self.ok: list[tuple[Any, Any, list[Any]]] = []    # ranges that ran, with their rows
        self.failed: list[tuple[Any, str]] = []           # (row, the server's words)
        self.exact = True

    async def part(self, lo: Any, hi: Any, rows: list[Any]) -> None:
        self.check()
        try:
            got = await self.run(lo, hi)
        except RowFailed as exc:
            if len(rows) > 1 and self.budget > 0:
                m = len(rows) // 2
                mid = self.bound(rows[m - 1])
                await self.part(lo, mid, rows[:m])
                await self.part(mid, hi, rows[m:])
                return
            if len(rows) > 1:
                self.exact = False
            self.budget -= 1
            self.failed.extend((r, exc.message) for r in rows)
            return
        self.results.extend(got)
        self.ok.append((lo, hi, rows))


# ------------------------------------------------------------------------------------------ comparing


def normalized(family: Family, value: Any) -> Any:  # noqa: C901 - one branch per kind
    """A value as the target column would hold it, whichever engine computed it, for comparing two engines' values:
    numbers as numbers (1, 1.0 and Decimal('1.00') are one integer for an integer column), text as text, dates
    and times as ISO text, JSON as the structure it parses to. What does not convert compares as its text."""
    if value is None:
        return None
    k = family.kind
    try:
        if k in ("int", "decimal"):
            n = decimal.Decimal(repr(value) if isinstance(value, float) else str(int(value) if isinstance(
                value, bool) else value).strip())
            if k == "int":
                return int(n.to_integral_value(decimal.ROUND_HALF_UP))
            if family.scale is not None and n.is_finite():
                n = n.quantize(decimal.Decimal(1).scaleb(-family.scale), decimal.ROUND_HALF_UP)
            return n
        if k == "float":
            return float(value)
        if k == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("t", "true", "1", "yes", "on")
            return bool(value)
        if k == "bytes":
            return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else str(value).encode()
        if k == "json":
            return json.loads(value) if isinstance(value, (str, bytes)) else value
        if k in ("date", "datetime", "datetime_tz", "time"):
            return _when(k, value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value).decode("utf-8", "surrogateescape")
        if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
            return str(int(value)) if k == "text" else value
        return value if isinstance(value, str) else str(value)
    except (ValueError, ArithmeticError, TypeError):
        return ("unconverted", str(value))


def _when(kind: str, value: Any) -> str:
    if isinstance(value, dt.timedelta):   # MySQL's TIME
        value = (dt.datetime.min + value).time()
    if isinstance(value, str):
        text = value.strip()
        value = dt.time.fromisoformat(text) if kind == "time" else dt.datetime.fromisoformat(text)
    if kind == "date":
        return (value.date() if isinstance(value, dt.datetime) else value).isoformat()
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day).isoformat(sep=" ")
    return str(value.isoformat()) if isinstance(value, dt.time) else str(value)


def same(family: Family, a: Any, b: Any) -> bool:
    """Whether two engines' values agree, as the target column (of this family) would hold them."""
    na, nb = normalized(family, a), normalized(family, b)
    if isinstance(na, float) and isinstance(nb, float):
        if math.isnan(na) or math.isnan(nb):
            return math.isnan(na) and math.isnan(nb)
        return na == nb or math.isclose(na, nb, rel_tol=FLOAT_REL_TOL)
    return bool(na == nb) and type(na) is type(nb)


# ------------------------------------------------------------------------------------------ the rehearsal


@dataclass
class Options:
    sample: int = DEFAULT_SAMPLE
    against: tuple[DatabaseURL, ...] = ()


async def rehearse(config: Config, names: list[str] | None, opts: Options,
                   stop: asyncio.Event | None = None) -> Report:
    """Rehearse the selected jobs one after another; Interrupted once `stop` is set."""
    if not 1 <= opts.sample <= SAMPLE_MAX:
        raise ConfigError(f"--sample {opts.sample}: give 1 to {SAMPLE_MAX:,} rows")
    stop = stop or asyncio.Event()
    jobs = select_jobs(config, names)
    lookups = [j.name for j in jobs if j.lookup is not None]
    if lookups:
        raise ConfigError(f"job {lookups[0]!r} is a lookup job, which rehearse does not rehearse yet (its target "
                          "is an id the run creates); `plan` shows its statements, and a run against a copy "
                          "of the database shows the rest" + ("; name the other jobs with --job" if len(jobs) > 1
                                                               else ""))

    async def work() -> Report:
        report = Report()
        async with open_engine(config) as engine:
            for job in jobs:
                report.jobs.append(await JobRehearsal(engine, config, job, opts, stop).run())
        return report

    # a stop cancels the statement in flight too (one over a whole scratch table can take a while): the timed
    # batch's transaction rolls back, the scratch tables are dropped, the connections close
    task = asyncio.create_task(work(), name="rehearsal")
    stopped = asyncio.create_task(stop.wait(), name="rehearsal_stop")
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Interrupted):
                await task
    if task.cancelled():
        raise Interrupted
    return task.result()


class JobRehearsal:
    """One job's rehearsal on the real database's engine."""

    def __init__(self, engine: Engine, config: Config, job: JobConfig, opts: Options, stop: asyncio.Event) -> None:
        self.engine, self.config, self.job, self.opts, self.stop = engine, config, job, opts, stop
        self.reh: Rehearsal = for_engine(engine.name)
        # target -> key -> the value the real database computed
        self.values: dict[str, dict[tuple[Any, ...], Any]] = {}

    def check(self) -> None:
        if self.stop.is_set():
            raise Interrupted

    async def run(self) -> JobReport:
        with naming_origin(self.job):   # a job of a jobs file: its errors name the file first
            p = self.p = await prepare(self.engine, self.job)
        job = p.job
        sources = list(job.sources) if p.transform else self.sources(p)
        r = JobReport(job.name, self.engine.name, job.table, list(p.key), "transform" if p.transform else "sql",
                      self.opts.sample, sources=sources, mode=await self.reh.mode(self.engine),
                      defined_in=self.job.origin.as_dict())
        t0 = time.monotonic()
        self.sample = smp = await take_sample(self.engine, p, sources, self.opts.sample, self.check)
        rows = smp.rows
        r.method, r.slots, r.rows = smp.method, len(smp.slots), len(rows)
        if rows:
            r.first_key, r.last_key = [shown(v) for v in rows[0].key], [shown(v) for v in rows[-1].key]
        if p.transform is None:
            for target, expr in p.exprs.items():
                r.targets.append(await self.expression(target, expr))
        else:
            await self.transform(r)
        for url in self.opts.against:
            r.against.append(await self.against(url))
        r.timing = await self.timing()
        log.info("rehearsal_finished", job=job.name, rows=r.rows, problems=r.problems,
                 took_s=round(time.monotonic() - t0, 3))
        return r

    def sources(self, p: Prepared) -> list[str]:
        """The table's columns any engine's form of the job's expressions reads, in order of first appearance."""
        out: list[str] = []
        columns = list(p.table.columns)
        for expr in p.job.set.values():
            forms = expr.items() if isinstance(expr, dict) else [(self.engine.name, expr)]
            ordered = sorted(forms, key=lambda f: f[0] != self.engine.name)   # the real engine's form first
            for engine_name, text in ordered:
                with contextlib.suppress(ValueError):   # a form that does not tokenize reads nothing known
                    out.extend(referenced_columns(text, engine_name, columns, p.job.table))
        return list(dict.fromkeys(out))

    def entry(self, row: SampleRow, **extra: Any) -> dict[str, Any]:
        return {"key": [shown(v) for v in row.key],
                "sources": {c: shown(v) for c, v in zip(self.sample.sources, row.sources, strict=True)}, **extra}

    # --- SQL expressions on the real database
    async def expression(self, target: str, expr: str) -> TargetReport:
        p, d, nk = self.p, self.engine.dialect, len(self.p.key)
        column = p.table.columns[target]
        tr = TargetReport(target, column.type, expr)
        stmts = {(lo, hi): build_values(d, p.spec, expr, lo=lo, hi=hi) for lo in (False, True) for hi in (False, True)}

        async def values(lo: Any, hi: Any) -> list[tuple[Any, ...]]:
            stmt = stmts[(lo is not None, hi is not None)]
            return await self.reh.fetch_checked(self.engine, stmt, {**key_args("lo", lo), **key_args("hi", hi)})

        iso = Isolation(values, lambda row: row.key, self.check)
        for slot in self.sample.slots:
            await iso.part(slot.lo, slot.hi, slot.rows)
        got = {tuple(r[:nk]): r[nk] for r in iso.results}
        mine = self.values[target] = {}
        for slot in self.sample.slots:
            for row in slot.rows:
                if row.key in got:
                    mine[row.key] = got[row.key]
                    if got[row.key] is None:
                        tr.null.add(self.entry(row))
        tr.raises.exact = iso.exact
        for row, message in iso.failed:
            tr.raises.add(self.entry(row, error=message))
        await self.fit(tr, expr, column, iso.ok)
        return tr

    async def first_probe(self, tr: TargetReport, candidates: Iterable[str],
                          attempt: Callable[[str], Awaitable[object]]) -> str | None:
        """The first of the engine's fit probes the server accepts (attempt runs it once); None, with the reason in
        tr.fit_unchecked_why, when it accepts none."""
        refused = "the engine has no check for this type"
        for candidate in candidates:
            try:
                await attempt(candidate)
            except RetryableError:
                raise
            except EngineError as exc:
                refused = str(exc)
                continue
            return candidate
        tr.fit_unchecked_why = f"not checked: {refused}"
        return None

    async def fit(self, tr: TargetReport, expr: str, column: Any, ranges: list[tuple[Any, Any, list[Any]]]) -> None:
        """Each value computed without error, checked against the target column by the engine's fit probe."""
        p, d, nk = self.p, self.engine.dialect, len(self.p.key)
        if self.reh.fit_unchecked:
            tr.fit_unchecked_why = self.reh.fit_unchecked
            return
        probe = await self.first_probe(tr, self.reh.fit_probes("bf_v", column), lambda candidate: self.engine.fetch(
            build_probe(d, p.spec, expr, candidate, lo=False, hi=False, empty=True)))
        if probe is None:
            return
        stmts = {(lo, hi): build_probe(d, p.spec, expr, probe, lo=lo, hi=hi) for lo in (False, True)
                 for hi in (False, True)}

        async def run(lo: Any, hi: Any) -> list[tuple[Any, ...]]:
            stmt = stmts[(lo is not None, hi is not None)]
            return await self.reh.fetch_checked(self.engine, stmt, {**key_args("lo", lo), **key_args("hi", hi)},
                                                warnings=False)

        iso = Isolation(run, lambda row: row.key, self.check)
        for lo, hi, rows in ranges:
            await iso.part(lo, hi, rows)
        computed = self.values[tr.target]
        reasons = {tuple(r[:nk]): r[nk] for r in iso.results if r[nk] is not None}
        for row in self.sample.rows:
            if row.key in reasons and row.key in computed:
                tr.does_not_fit.add(self.entry(row, value=shown(computed[row.key]), reason=reasons[row.key]))
        tr.does_not_fit.exact = iso.exact
        for row, message in iso.failed:
            tr.does_not_fit.add(self.entry(row, value=shown(computed.get(row.key)), reason=message))

    # --- Python transforms, called on the sample
    async def transform(self, r: JobReport) -> None:
        p = self.p
        assert p.transform is not None
        rows = self.sample.rows
        outcomes = await p.transform.apply([row.sources for row in rows])
        for target in p.job.targets:
            r.targets.append(TargetReport(target, p.table.columns[target].type, None))
        computed: list[tuple[SampleRow, tuple[Any, ...]]] = []
        for row, out in zip(rows, outcomes, strict=True):
            if out.error is not None:
                r.transform_raises.add(self.entry(row, error=out.error))
                continue
            assert out.values is not None
            computed.append((row, out.values))
            for tr, value in zip(r.targets, out.values, strict=True):
                if value is None:
                    tr.null.add(self.entry(row))
        for i, tr in enumerate(r.targets):
            await self.fit_values(tr, [(row, vals[i]) for row, vals in computed if vals[i] is not None])

    async def fit_values(self, tr: TargetReport, values: list[tuple[SampleRow, Any]]) -> None:
        """A transform's values checked against the target column: bound, cast as the column would, on the real
        database."""
        column = self.p.table.columns[tr.target]
        if self.reh.fit_unchecked:
            tr.fit_unchecked_why = self.reh.fit_unchecked
            return
        if not values:
            return
        d = self.engine.dialect
        # one NULL: whether the server takes the probe for the column's type at all
        probe = await self.first_probe(tr, self.reh.fit_probes(self.reh.value_expr(column), column),
                                       lambda candidate: self.engine.fetch(build_value_probe(d, candidate, 1), {
                                           "i0": self.reh.value_param(0), "v0": None}))
        if probe is None:
            return

        async def run(lo: Any, hi: Any) -> list[tuple[Any, ...]]:
            first = 0 if lo is None else lo + 1
            part = values[first:len(values) if hi is None else hi + 1]
            out: list[tuple[Any, ...]] = []
            for at in range(0, len(part), COPY_ROWS_MAX):
                chunk = part[at:at + COPY_ROWS_MAX]
                args = {}
                for j, (_, v) in enumerate(chunk):
                    args[f"i{j}"], args[f"v{j}"] = self.reh.value_param(first + at + j), self.reh.value_param(v)
                out.extend(await self.reh.fetch_checked(self.engine, build_value_probe(d, probe, len(chunk)), args,
                                                        warnings=False))
            return out

        iso = Isolation(run, lambda i: i, self.check)
        await iso.part(None, None, list(range(len(values))))
        tr.does_not_fit.exact = iso.exact
        for i_text, reason in iso.results:
            if reason is not None:
                row, v = values[int(i_text)]
                tr.does_not_fit.add(self.entry(row, value=shown(v), reason=reason))
        for i, message in iso.failed:
            row, v = values[i]
            tr.does_not_fit.add(self.entry(row, value=shown(v), reason=message))

    # --- another engine
    async def against(self, url: DatabaseURL) -> AgainstReport:
        p = self.p
        db = self.config.database
        # its TLS parameters are the URL's own (files relative to the working directory); require_tls is the config's
        url = dataclasses.replace(url, require_tls=db.require_tls, origin="--against")
        other = engines.create(url, lock_timeout_s=db.lock_timeout_s, connect_timeout_s=db.connect_timeout_s,
                               statement_timeout_s=db.statement_timeout_s,
                               idle_in_transaction_timeout_s=db.idle_in_transaction_timeout_s)
        ar = AgainstReport(against_label(url), other.name)
        if p.transform is not None:
            ar.note = "a Python transform computes its values in backfilld, the same on every engine: not compared"
            return ar
        areh, od = for_engine(other.name), other.dialect
        name = split_table(p.job.table)[1]
        key = list(p.key)
        columns = key + [c for c in self.sample.sources if c not in key]
        families = {c: self.reh.family(p.table.columns[c]) for c in columns}
        await other.connect()
        created = False
        try:
            self.check()
            ddl = areh.temp_create(od, name, [(SCRATCH_ROW, areh.scratch_type(Family("int")) + " PRIMARY KEY"),
                                              *((c, areh.scratch_type(families[c])) for c in columns)])
            await other.execute(ddl)
            created = True
            ref = areh.temp_ref(od, name)
            copied = await self.copy(other, areh, ref, columns, families, ar)
            for target in p.exprs:
                ar.targets.append(await self.against_target(other, areh, ref, target, copied))
            log.info("against_compared", job=p.job.name, against=ar.against, rows=ar.rows, problems=ar.problems)
        finally:
            if created:   # a temporary table goes with its session anyway; dropped first, so that it is gone now
                with contextlib.suppress(Exception):
                    await asyncio.shield(other.execute(areh.temp_drop(od, name)))
            with contextlib.suppress(Exception):
                await asyncio.shield(other.close())
        return ar

    async def copy(self, other: Engine, areh: Rehearsal, ref: str, columns: list[str],
                   families: dict[str, Family], ar: AgainstReport) -> dict[int, SampleRow]:
        """The sample's key and sources into the scratch table, numbered; a row holding a value the other engine
        cannot hold (a date past 9999 on MySQL, a NUL in PostgreSQL text) is left out and reported."""
        key = list(self.p.key)
        srcs = list(self.sample.sources)
        good: list[tuple[int, SampleRow, list[Any]]] = []
        for i, row in enumerate(self.sample.rows):
            values = []
            try:
                for c in columns:
                    raw = row.sources[srcs.index(c)] if c in srcs else row.key[key.index(c)]
                    values.append(areh.bindable(families[c], raw))
            except (ValueError, TypeError, ArithmeticError, OverflowError) as exc:
                ar.not_copied.add(self.entry(row, reason=f"{c}: {exc}"))
                continue
            good.append((i, row, values))
        per = max(1, min(COPY_ROWS_MAX, COPY_VALUES_MAX // (len(columns) + 1)))
        async with other.transaction():
            for at in range(0, len(good), per):
                self.check()
                chunk = good[at:at + per]
                stmt = build_scratch_insert(other.dialect, ref, columns, len(chunk))
                args = {f"r{n}c{j}": v for n, (i, _, values) in enumerate(chunk)
                        for j, v in enumerate([i, *values])}
                await other.execute(stmt, args)
        ar.rows = len(good)
        return {i: row for i, row, _ in good}

    async def against_target(self, other: Engine, areh: Rehearsal, ref: str, target: str,
                             copied: dict[int, SampleRow]) -> AgainstTarget:
        expr = self.p.job.set[target]
        form = expr if isinstance(expr, str) else expr.get(other.name)
        at = AgainstTarget(target, form)
        if form is None:
            at.error = (f"the job has no {other.name} form of this expression (set.{target} = {{ {other.name} = "
                        "\"...\" }})")
            return at
        why = slot_problem(form, other.dialect, condition=False)
        if why:
            at.error = f"refused: {why}"
            return at
        od = other.dialect
        stmts = {(lo, hi): build_scratch_values(od, ref, form, lo=lo, hi=hi) for lo in (False, True)
                 for hi in (False, True)}
        try:
            await areh.fetch_checked(other, build_scratch_values(od, ref, form, lo=False, hi=False, empty=True), {})
        except RowFailed as exc:
            at.error = exc.message
            return at

        async def run(lo: Any, hi: Any) -> list[tuple[Any, ...]]:
            return await areh.fetch_checked(other, stmts[(lo is not None, hi is not None)],
                                            {**({"lo": lo} if lo is not None else {}),
                                             **({"hi": hi} if hi is not None else {})})

        iso = Isolation(run, lambda i: i, self.check)
        await iso.part(None, None, sorted(copied))
        at.raises.exact = iso.exact
        for i, message in iso.failed:
            at.raises.add(self.entry(copied[i], error=message))
        family = self.reh.family(self.p.table.columns[target])
        real = self.values.get(target, {})
        for i, value in ((int(r[0]), r[1]) for r in iso.results):
            row = copied.get(i)
            if row is None or row.key not in real:
                continue   # the real database raised on it (reported there)
            at.compared += 1
            if not same(family, real[row.key], value):
                at.disagree.add(self.entry(row, real=shown(real[row.key]), against=shown(value)))
        return at

    # --- timing
    async def timing(self) -> Timing:
        """The job's own batch statement over TIMED_RANGES ranges of TIMED_KEYS keys (the sample's first, middle and
        last slot), each in a transaction that is rolled back; the run's estimate from the median."""
        p, engine = self.p, self.engine
        t = self.config.throttle
        limit, _ = await concurrency_limit(engine, p)
        tm = Timing(estimated_rows=max(0, await engine.estimate_rows(p.job.table)), workers=min(t.workers, limit),
                    max_rows_per_s=float(t.max_rows_per_s))
        slots = self.sample.slots
        starts = [slots[i].lo for i in sorted({0, len(slots) // 2, len(slots) - 1})][:TIMED_RANGES] if slots else []
        updates, lookups = [], []
        for lo in starts:
            self.check()
            t0 = time.monotonic()
            found = await engine.next_range(p.plan, lo, TIMED_KEYS)
            t1 = time.monotonic()
            if found is None:
                continue
            hi, keys = found
            try:
                took, rows, guarded = await self.timed_batch(lo, hi, keys)
            except RetryableError as exc:
                tm.error = f"the timed batch could not run now ({exc}); run rehearse again"
                break
            except EngineError as exc:
                tm.error = f"the batch statement fails: {exc}"
                break
            tm.guarded = tm.guarded or guarded
            tm.ranges += 1
            tm.keys += keys
            tm.rows_written += rows
            updates.append(took * TIMED_KEYS / keys)
            lookups.append((t1 - t0) * TIMED_KEYS / keys)
        if updates:
            tm.update_s_per_1000 = round(statistics.median(updates), 6)
            tm.lookup_s_per_1000 = round(statistics.median(lookups), 6)
            batches_s = tm.estimated_rows / TIMED_KEYS * tm.update_s_per_1000 / max(1, tm.workers)
            rate_s = (tm.estimated_rows * tm.rows_written / max(1, tm.keys) / tm.max_rows_per_s
                      if tm.max_rows_per_s else 0.0)
            tm.estimated_run_s = round(max(batches_s, rate_s), 3)
            tm.bound_by = "max_rows_per_s" if rate_s > batches_s else "batches"
        return tm

    async def timed_batch(self, lo: tuple[Any, ...] | None, hi: tuple[Any, ...], keys: int) -> tuple[float, int, bool]:
        """One batch of the job as its run writes it (single evaluation first, where the job has it), rolled back:
        (seconds, rows written, whether it was the guarded form after a NULL)."""
        p, engine = self.p, self.engine
        once = p.transform is None and p.plan.fill_once_first is not None
        if once:
            try:
                return (*await self._rolled_back(lambda: engine.apply_range_once(p.plan, lo, hi, keys)), False)
            except _NullMet:
                pass
        if p.transform is not None:
            return (*await self._rolled_back(lambda: self._transform_batch(lo, hi)), False)
        return (*await self._rolled_back(lambda: engine.apply_range(p.plan, lo, hi, keys)), once)

    async def _rolled_back(self, write: Callable[[], Awaitable[int | None]]) -> tuple[float, int]:
        took, rows = 0.0, 0
        try:
            async with self.engine.transaction():
                t0 = time.monotonic()
                n = await write()
                took = time.monotonic() - t0
                if n is None:
                    raise _NullMet
                rows = n
                raise _RolledBack
        except _RolledBack:
            pass
        return took, rows

    async def _transform_batch(self, lo: tuple[Any, ...] | None, hi: tuple[Any, ...]) -> int:
        p, engine = self.p, self.engine
        assert p.transform is not None and p.shape is not None
        rows = await engine.read_range(p.plan, lo, hi)
        nk, ns = len(p.key), len(p.shape.sources)
        outcomes = await p.transform.apply([r[nk:nk + ns] for r in rows])
        writes = [(*row, *out.values) for row, out in zip(rows, outcomes, strict=True) if out.values is not None]
        return await engine.write_rows(p.table, p.shape, writes)


# ------------------------------------------------------------------------------------------ text


def _v(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _entry(e: dict[str, Any]) -> str:
    srcs = " ".join(f"{c}={_v(v)}" for c, v in e["sources"].items())
    return f"key {_v(e['key'])}" + (f" {srcs}" if srcs else "")


def _finding(label: str, f: Finding, detail: Callable[[dict[str, Any]], str]) -> Iterable[str]:
    if not f.count:
        return
    rows = "row" if f.count == 1 else "rows"
    yield f"    {label}: {f.count} {rows}{'' if f.exact else ' at most (ranges that kept failing counted whole)'}"
    for e in f.samples:
        yield f"      {_entry(e)}{detail(e)}"


def describe(report: Report) -> list[str]:
    """The report as text, one job after another."""
    lines: list[str] = []
    for j in report.jobs:
        lines.append(f"job {j.job}: {j.engine} table {j.table} key {j.key}")
        if j.defined_in.get("jobs_file"):
            shipped = " ".join(str(v) for v in (j.defined_in.get("package"), j.defined_in.get("version")) if v)
            lines.append(f"  defined in {j.defined_in.get('file')}" + (f" (shipped by {shipped})" if shipped else ""))
        span = f", keys {_v(j.first_key)} to {_v(j.last_key)}" if j.rows else ""
        lines.append(f"  sample: {j.rows} of {j.requested} rows asked for, in {j.slots} runs spread over the key "
                     f"range ({j.method}{span})" + ("" if j.rows else "; no row needs a value"))
        if j.mode:
            lines.append(f"  {j.mode}")
        for t in j.targets:
            lines.append(f"  {t.target} ({t.column_type})" + (f" = {t.expression}" if t.expression else ""))
            lines.extend(_finding("NULL (the job leaves these rows NULL)", t.null, lambda e: ""))
            lines.extend(_finding("does not fit the column", t.does_not_fit,
                                  lambda e: f" -> {_v(e['value'])}: {e['reason']}"))
            lines.extend(_finding("raises", t.raises, lambda e: f": {e['error']}"))
            if t.fit_unchecked_why:
                lines.append(f"    fit: {t.fit_unchecked_why}")
            if not t.problems:
                lines.append("    no problem found")
        lines.extend(_finding("the transform raises", j.transform_raises, lambda e: f": {e['error']}"))
        for a in j.against:
            lines.append(f"  against {a.against} ({a.engine}): {a.rows} rows copied" + (f"; {a.note}" if a.note
                                                                                          else ""))
            lines.extend(_finding("not copied", a.not_copied, lambda e: f": {e['reason']}"))
            for at in a.targets:
                lines.append(f"    {at.target} = {at.expression}" if at.expression else f"    {at.target}")
                if at.error:
                    lines.append(f"      fails: {at.error}")
                    continue
                def both(e: dict[str, Any], real: str = j.engine, other: str = a.engine) -> str:
                    return f": {real} {_v(e['real'])}, {other} {_v(e['against'])}"

                lines.extend("  " + ln for ln in _finding("disagree", at.disagree, both))
                lines.extend("  " + ln for ln in _finding("raises", at.raises, lambda e: f": {e['error']}"))
                if not at.problems:
                    lines.append(f"      agrees on all {at.compared} rows compared")
        lines.extend(_timing_lines(j.timing))
        lines.append(f"  {j.problems} problem(s)" if j.problems else "  nothing to report")
        lines.append("")
    lines.append(f"rehearsal: {report.problems} problem(s) in {len(report.jobs)} job(s)" if report.problems
                 else f"rehearsal: nothing to report in {len(report.jobs)} job(s)")
    return lines


def _timing_lines(t: Timing) -> list[str]:
    if t.error:
        return [f"  timing: {t.error}"]
    if t.update_s_per_1000 is None:
        return ["  timing: no batch to time (no row needs a value)"]
    rate = f"max_rows_per_s {t.max_rows_per_s:g}" if t.max_rows_per_s else "no max_rows_per_s"
    return [f"  timing: {t.update_s_per_1000:.4f} s per 1,000 rows for the batch statement (median of {t.ranges} "
            f"batches of up to {TIMED_KEYS:,} keys, {t.rows_written} rows written and rolled back"
            + (", guarded: the expression is NULL on some rows" if t.guarded else "")
            + f"); range lookup {t.lookup_s_per_1000:.4f} s per 1,000",
            f"  estimate: {t.estimated_run_s:,.1f} s for about {t.estimated_rows:,} rows with {t.workers} "
            f"worker(s) and {rate} (bound by {t.bound_by}; pauses for replica lag, load, the application and "
            "windows come on top)"]
