"""How one batch is written: its range looked up, its rows written, its checkpoint advanced, one transaction.

Owns: KeyRanges (where the next batch ends: the sizer's size, the lookahead's answer, a sweep's first
"any row left?" question), FillBatch (an SQL-expression batch, computing the expression once per row until a
row shows it can be NULL, and the rows SKIP LOCKED passed over), TransformBatch (read, compute in Python,
write back guarded). Each batch writes its checkpoint after Flight.turn (pipeline.py: the key-order rule).
Delegates SQL to the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backfilld import trace
from backfilld.chunker import BatchSizer
from backfilld.config import JobConfig
from backfilld.engines.base import BatchPlan, Engine, JobState, encode_key
from backfilld.errors import EngineError, RetryableError
from backfilld.lookahead import Lookahead
from backfilld.metrics import Metrics
from backfilld.pipeline import Flight, Key, Range
from backfilld.preflight import Prepared


class NullWritten(Exception):
    """A batch computing its expression once wrote NULL over NULL: roll it back, redo it guarded."""


@dataclass
class TxnCount:
    """A pass's batch transactions: begun and committed (see JobRunner._nothing_else_wrote)."""

    begun: int = 0
    committed: int = 0


class KeyRanges:
    """The next batch's range: Pipeline's Ranges."""

    def __init__(self, engine: Engine, plan: BatchPlan, state: JobState, sizer: BatchSizer,
                 busy: Callable[[], bool], lookahead: Lookahead | None, log: Any) -> None:
        self.engine, self.plan, self.state, self.sizer = engine, plan, state, sizer
        self.busy, self.lookahead, self.log = busy, lookahead, log

    async def next(self, after: Key | None) -> Range | None:
        st, plan = self.state, self.plan
        self.sizer.set_busy(self.busy())
        size = self.sizer.size
        t0 = time.monotonic()
        if st.pass_no > 1 and after is None and plan.any_pending is not None:
            # a sweep starts by asking whether any row needs a value at all: one read-only statement, which
            # on a table the fill left complete ends the pass at the cost of a scan, instead of a keyset walk
            # of lookups and no-op UPDATEs over every key (the walk runs when it finds one)
            if not await self.engine.fetch(plan.any_pending):
                self.log.debug("sweep_found_nothing", pass_no=st.pass_no, took_s=round(time.monotonic() - t0, 4))
                return None
        found = await self.lookup(after, size)
        if found is None:
            return None
        hi, scanned = found
        if self.lookahead is not None:  # the next range is read on a second connection while this batch runs
            self.lookahead.start(plan, hi, size)
        return Range(after, hi, scanned, size, t0)

    @trace.timed("next range, waited")
    async def lookup(self, after: Key | None, size: int) -> tuple[Key, int] | None:
        """The next batch's last key and key count: the lookahead's, when it read this position, else read now."""
        if self.lookahead is not None:
            found = await self.lookahead.take(self.plan, after, size)
            if found is not None:
                return found
        return await self.engine.next_range(self.plan, after, size)


def batch_keys(f: Flight) -> str:
    """The batch's key range, for an error: the rows to look at (its values are left out of the error itself)."""
    first = f"after key {encode_key(f.lo)} " if f.lo is not None else "from the table's start "
    return f"the batch {first}up to key {encode_key(f.hi)}"


class FillBatch:
    """An SQL-expression batch: the UPDATE, then (in turn) the checkpoint, one transaction on the batch's
    connection; (rows written, rows pending: passed over because the application held them locked)."""

    def __init__(self, p: Prepared, *, state_table: str, job: str, txns: TxnCount, log: Any) -> None:
        self.p, self.state_table, self.job, self.txns, self.log = p, state_table, job, txns, log
        # compute a fill job's expression once per row until a row shows that it can be NULL
        self.single_eval = True

    async def __call__(self, f: Flight) -> tuple[int, int]:
        """The guarded UPDATE computes the expression twice per row: once for `(expr) IS NOT NULL` (a row whose
        expression is NULL is left alone) and once for the value. Until a row shows that the expression can be
        NULL, a batch computes it once instead (fill jobs with one target). If such a row is in the batch, the
        batch is rolled back (nothing of it is ever committed) and redone guarded, as is every later batch of
        this run: what commits is exactly what the guarded form writes."""
        if self.single_eval and self.p.plan.fill_once_first is not None:
            try:
                return await self.commit(True, f)
            except NullWritten:
                self.single_eval_off("the expression is NULL on some rows; batches now compute it twice to "
                                     "leave those rows untouched", f)
            except RetryableError:
                raise
            except EngineError as exc:   # the guarded form tells whether the error is the expression's own
                self.single_eval_off("its statement failed; batches now run guarded", f, error=str(exc))
        try:
            return await self.commit(False, f)
        except RetryableError:
            raise
        except EngineError as exc:   # the keys say where; the database's text no longer shows the row's values
            raise EngineError(f"{batch_keys(f)}: {exc}") from None

    def single_eval_off(self, detail: str, f: Flight, **extra: Any) -> None:
        if self.single_eval:   # said once, by whichever batch in flight noticed first
            self.single_eval = False
            self.log.info("single_evaluation_off", detail=detail, **extra, last_key=list(f.lo) if f.lo else None)

    async def commit(self, once: bool, f: Flight) -> tuple[int, int]:
        """One transaction: the UPDATE, then (once the batch before it in key order has committed) the
        checkpoint. A NULL written by a single-evaluation batch raises NullWritten inside it, and a batch
        before it that failed raises Superseded: either way it rolls back.

        With SKIP LOCKED (plan.left_*), a batch that wrote fewer rows than its range has keys looks for rows of
        the range still needing a value: the application held them, and they count as pending, so that the
        pass is followed by another (the job completes only after a pass that passed over nothing)."""
        w, plan = f.writer, self.p.plan
        apply = w.apply_range_once if once else w.apply_range
        self.txns.begun += 1
        async with w.transaction():
            if plan.lookup_insert is not None:   # a lookup job: its missing lookup rows first
                await w.create_lookups(plan, f.lo, f.hi)
            rows = await apply(plan, f.lo, f.hi, f.scanned)
            if rows is None:
                raise NullWritten
            left = await w.leftover(plan, f.lo, f.hi) if rows < f.scanned else []
            f.passed_over = left
            await f.turn()
            await w.advance_state(self.state_table, self.job, f.hi, rows, f.scanned, len(left))
        self.txns.committed += 1
        return int(rows), len(left)


class TransformBatch:
    """Read key and sources, compute in Python, write back guarded in one statement with the checkpoint;
    (rows written, rows left for a later pass because their sources or targets changed between the read and
    the write). One batch at a time, on the job's own connection."""

    def __init__(self, p: Prepared, job: JobConfig, *, state_table: str, metrics: Metrics, log: Any) -> None:
        self.p, self.job, self.state_table, self.metrics, self.log = p, job, state_table, metrics, log

    async def __call__(self, f: Flight) -> tuple[int, int]:
        p, engine = self.p, f.writer
        assert p.transform is not None and p.shape is not None
        rows = await engine.read_range(p.plan, f.lo, f.hi)
        nk, ns, nt = len(p.key), len(p.shape.sources), len(p.shape.targets)
        outcomes = await p.transform.apply([r[nk:nk + ns] for r in rows])
        writes = []
        for row, out in zip(rows, outcomes, strict=True):
            if out.error is not None:
                await self.transform_failed(engine, row[:nk], out.error)
                continue
            assert out.values is not None
            old = row[nk + ns:nk + ns + nt]
            if p.shape.overwrite:
                needed = any(n != o for n, o in zip(out.values, old, strict=True))
            else:
                needed = any(o is None and n is not None for n, o in zip(out.values, old, strict=True))
            if needed:
                writes.append((*row, *out.values))
        async with engine.transaction():
            written = await engine.write_rows(p.table, p.shape, writes)
            pending = len(writes) - written
            await f.turn()
            await engine.advance_state(self.state_table, self.job.name, f.hi, written, f.scanned, pending)
        if pending:
            self.log.info("rows_changed_meanwhile", rows=pending, detail="read again in a later pass")
        return written, pending

    async def transform_failed(self, engine: Engine, key: tuple[Any, ...], error: str) -> None:
        """A row the transform raised on: recorded and passed over with on_error = "skip", else the job fails."""
        assert self.p.transform is not None
        self.metrics.errors.labels(self.job.name, "transform").inc()
        if self.job.on_error != "skip":
            raise EngineError(f"transform {self.p.transform.ref} failed on key {encode_key(key)}: {error}")
        await engine.record_skipped(self.state_table, self.job.name, key, error)
        self.log.warning("transform_skipped_row", key=list(key), error=error)
