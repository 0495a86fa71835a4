"""Verify (and repair) a job's targets against its expression or transform, row by row, in throttled batches.

Owns: the walk over the table in keyset ranges, classifying each row as right, missing (target NULL where
the job would write a value) or wrong (target differs from the expression/transform of the current
sources), repairs with the same guards as a batch, and recording the result with its time in the state
table so that a pipeline (or the application) can see that a job was verified before switching reads.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from backfilld import logs
from backfilld.chunker import BatchSizer
from backfilld.config import Config, JobConfig
from backfilld.engines.base import Engine, encode_key, now_iso
from backfilld.engines.statements import WriteShape, build_fix_row, build_read, build_verify_read, range_call
from backfilld.errors import EngineError, RetryableError
from backfilld.gate import Gate, OpenGate
from backfilld.preflight import Prepared, prepare

log = logs.get_logger("backfilld.verify")

SAMPLES = 10   # sample keys kept per kind of problem

# verify's walk gives up past this many times the estimated rows, plus WALK_MIN_KEYS: estimates (MySQL's
# TABLE_ROWS, PostgreSQL's reltuples) can be off by half, and the table may grow while verify runs
WALK_SLACK = 4
WALK_MIN_KEYS = 100_000


def max_keys(estimate: int) -> int:
    """The most keys one verify walk may check (see WALK_SLACK)."""
    return WALK_SLACK * max(0, estimate) + WALK_MIN_KEYS


@dataclass
class VerifyResult:
    job: str
    rows_checked: int = 0
    missing: int = 0
    wrong: int = 0
    errors: int = 0               # rows whose transform raised
    fixed: int = 0
    not_fixed: int = 0            # changed between the check and the repair: a later verify looks again
    sample_missing: list[Any] = field(default_factory=list)
    sample_wrong: list[Any] = field(default_factory=list)
    sample_errors: list[Any] = field(default_factory=list)
    took_s: float = 0.0
    at: str = ""
    complete: bool = False        # the walk reached the end of the table (not stopped by a signal)

    @property
    def clean(self) -> bool:
        return self.complete and self.missing == 0 and self.wrong == 0 and self.errors == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}

    def note(self, kind: str, key: tuple[Any, ...]) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        samples = getattr(self, f"sample_{kind}")
        if len(samples) < SAMPLES:
            samples.append(list(key))


class Verifier:
    def __init__(self, engine: Engine, config: Config, job: JobConfig, *, fix: bool = False,
                 gate: Gate | None = None, stop: asyncio.Event | None = None) -> None:
        self.engine, self.config, self.job, self.fix = engine, config, job, fix
        self.gate = gate or OpenGate()
        self.stop = stop or asyncio.Event()
        t = config.throttle
        self.sizer = BatchSizer(target_s=t.target_batch_time_s, min_size=t.min_batch, max_size=t.max_batch,
                                size=job.batch_size)

    async def run(self) -> VerifyResult:
        p = await prepare(self.engine, self.job)
        job = p.job
        result = VerifyResult(job.name)
        t0 = time.monotonic()
        d = self.engine.dialect
        if p.transform is None:
            reads = [build_verify_read(d, p.spec, after=a) for a in (False, True)]
            fix_stmt = build_fix_row(d, p.spec)
        else:
            reads = [build_read(d, p.spec, after=a) for a in (False, True)]
        # The walk ends: each range starts past the last (Engine.next_range fails when one does not), and it
        # may not check more keys than the table could hold, as a bound on a walk whose key compares
        # otherwise than it sorts (it would go round in circles, or check rows again). The bound starts from
        # the estimate and, once crossed, is set again from an exact count (statistics can be a day old)
        estimate, counted = await self.engine.estimate_rows(job.table), False
        most = max_keys(estimate)
        last: tuple[Any, ...] | None = None
        while not self.stop.is_set():
            await self.gate.wait(self.job.name, self.stop)
            if self.stop.is_set():
                break
            b0 = time.monotonic()
            found = await self.engine.next_range(p.plan, last, self.sizer.size)
            if found is None:
                result.complete = True
                break
            hi, scanned = found
            rows = await self.engine.fetch(*range_call(reads[0], reads[1], last, hi))
            if p.transform is None:
                await self._check_sql(p, rows, result, fix_stmt, (last, hi))
            else:
                await self._check_transform(p, rows, result)
            result.rows_checked += scanned
            if result.rows_checked > most and not counted:
                estimate, counted = await self.engine.count_rows(job.table), True
                most = max_keys(estimate)
            if result.rows_checked > most:
                raise EngineError(f"verify of job {job.name!r} checked {result.rows_checked} keys of a table of "
                                  f"{rows} rows without reaching its end: its key does not page (values that "
                                  "compare otherwise than they sort), or the table grew that much meanwhile; run "
                                  "verify again, or set key = [...] to another unique index")
            self.gate.after_batch(self.job.name, 0, time.monotonic() - b0)
            self.sizer.observe(scanned, time.monotonic() - b0)
            last = hi
        result.took_s = round(time.monotonic() - t0, 3)
        result.at = now_iso()
        return result

    async def _check_sql(self, p: Prepared, rows: list[tuple[Any, ...]], result: VerifyResult, fix_stmt: Any,
                         span: tuple[tuple[Any, ...] | None, tuple[Any, ...]]) -> None:
        nk = len(p.key)
        fixes = []
        lookup = p.spec.lookup is not None
        for row in rows:
            key = row[:nk]
            pairs = [(row[nk + 2 * i], row[nk + 2 * i + 1]) for i in range(len(p.exprs))]
            # a lookup job's row read here with its target NULL is missing, its lookup row there or not yet
            missing = any(t is None and (e is not None or lookup) for t, e in pairs)
            result.note("missing" if missing else "wrong", key)
            fixes.append({**{f"k{i}": v for i, v in enumerate(key)},
                          **{f"old{i}": t for i, (t, _) in enumerate(pairs)}})
        if self.fix and fixes and lookup:
            # the lookup rows the range's current sources need, first (committed: a fix then finds them)
            async with self.engine.transaction():
                await self.engine.create_lookups(p.plan, *span, every_row=True)
        if self.fix and fixes:
            # one row a statement, each its own transaction: a fix waiting for a row the application holds
            # (up to lock_timeout_s) holds no other row meanwhile, so it is never in a deadlock with it; a row
            # it could not lock is left for the next verify, like one that changed
            for values in fixes:
                try:
                    n = await self.engine.execute(fix_stmt, values)
                except RetryableError as exc:
                    if exc.kind != "lock_timeout":
                        raise
                    n = 0
                result.fixed += n
                result.not_fixed += 1 - n

    async def _check_transform(self, p: Prepared, rows: list[tuple[Any, ...]], result: VerifyResult) -> None:
        assert p.transform is not None
        nk, ns, nt = len(p.key), len(p.job.sources), len(p.job.targets)
        outcomes = await p.transform.apply([r[nk:nk + ns] for r in rows])
        writes = []
        for row, out in zip(rows, outcomes, strict=True):
            key = row[:nk]
            if out.error is not None:
                result.note("errors", key)
                continue
            assert out.values is not None
            current = row[nk + ns:nk + ns + nt]
            if any(c is None and e is not None for c, e in zip(current, out.values, strict=True)):
                result.note("missing", key)
            elif any(c != e for c, e in zip(current, out.values, strict=True)):
                result.note("wrong", key)
            else:
                continue
            writes.append((*row, *out.values))
        if self.fix and writes:
            shape = WriteShape(p.key, tuple(p.job.sources), tuple(p.job.targets), overwrite=True)
            async with self.engine.transaction():
                n = await self.engine.write_rows(p.table, shape, writes)
            result.fixed += n
            result.not_fixed += len(writes) - n


async def record(engine: Engine, state_table: str, result: VerifyResult) -> None:
    """Store the result with the job. A complete check sets verified_at: its time when it was clean, NULL when
    it found a row missing or wrong (an earlier clean verify no longer holds); a stopped one leaves it as it was."""
    await engine.write_verify(state_table, result.job, json.dumps(result.as_dict(), default=str, ensure_ascii=False),
                              result.at if result.clean else None, conclusive=result.complete)


def describe(result: VerifyResult, fix: bool) -> list[str]:
    lines = [f"{result.job}: checked {result.rows_checked} rows in {result.took_s} s: {result.missing} missing, "
             f"{result.wrong} wrong" + (f", {result.errors} transform errors" if result.errors else "")]
    for kind in ("missing", "wrong", "errors"):
        sample = getattr(result, f"sample_{kind}")
        if sample:
            lines.append(f"  sample {kind} keys: " + ", ".join(encode_key(k) or "" for k in sample))
    if fix:
        lines.append(f"  fixed {result.fixed}" + (f", {result.not_fixed} changed meanwhile (left alone)"
                                                  if result.not_fixed else "")
                     + ("; run verify again to confirm" if not result.clean else ""))
    if not result.complete:
        lines.append("  stopped before the end of the table: NOT verified")
    else:
        lines.append("  verified: every row is right" if result.clean else "  NOT verified")
    return lines
