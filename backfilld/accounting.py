"""What one committed batch changes outside the database: the job's state in memory and everyone told of it.

Owns: a landed batch's effect on the state in memory (checkpoint, counts), the batch sizer, the gate, progress,
the batch metrics, the batch log lines and the on_batch callback (BatchResult). Delegates nothing: the database
already holds the batch and its checkpoint (batches.py committed both in one transaction).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backfilld.chunker import BatchSizer
from backfilld.engines.base import JobState, encode_key
from backfilld.gate import Gate
from backfilld.metrics import Metrics, Progress
from backfilld.pipeline import Flight


@dataclass
class BatchResult:
    rows: int
    scanned: int
    took_s: float
    size: int
    pass_no: int
    last_key: tuple[Any, ...]


class Accounting:
    def __init__(self, job: str, *, sizer: BatchSizer, gate: Gate, progress: Progress,
                 metrics: Metrics, log: Any, on_batch: Callable[[BatchResult], None] | None) -> None:
        self.job, self.sizer, self.gate, self.progress = job, sizer, gate, progress
        self.metrics, self.log, self.on_batch = metrics, log, on_batch

    def landed(self, st: JobState, f: Flight, rows: int, pending: int) -> None:
        """A batch committed: move the state in memory, the sizer, the throttle, metrics, the log, on_batch."""
        took = f.took
        st.last_key = f.hi
        st.rows_done += rows
        st.pass_rows += rows
        st.pass_scanned += f.scanned
        self.sizer.observe(f.scanned, took)
        self.gate.after_batch(st.job, rows, took)
        self.progress.add(f.scanned)
        if pending:
            st.pass_rows += pending   # another pass follows: it writes the rows passed over or changed meanwhile
        self._count(st, f, rows, pending, took)
        if self.on_batch:
            self.on_batch(BatchResult(rows, f.scanned, took, f.size, st.pass_no, f.hi))

    def _count(self, st: JobState, f: Flight, rows: int, pending: int, took: float) -> None:
        """A committed batch's metrics and log lines."""
        m, j = self.metrics, self.job
        m.rows.labels(j).inc(rows)
        m.rows_scanned.labels(j).inc(f.scanned)
        m.batches.labels(j, "applied").inc()
        m.batch_duration.labels(j).observe(took)
        m.batch_size.labels(j).set(self.sizer.size)
        m.last_progress.labels(j).set(time.time())
        if f.passed_over:
            m.rows_skipped_locked.labels(j).inc(pending)
            self.log.info("rows_skipped_locked", rows=pending, keys=[encode_key(k) for k in f.passed_over[:5]],
                          detail="the application held these rows locked; a later pass writes them")
        self.log.debug("batch_applied", rows=rows, scanned=f.scanned, size=f.size, took_s=round(took, 4),
                       pass_no=st.pass_no, **({"pending": pending} if pending else {}))


# A pass that wrote no row but found rows it could not write (held locked by another session; changed between a
# transform's read and write each time), with the same keys as the pass before: after this many in a row the job
# fails, naming them, instead of sweeping forever. The pauses between those passes double from the sweep pause
# (job.py: 0.2 s at least, 30 s at most), so the rows have been held for a minute and a half at least by then.
STUCK_PASSES_MAX = 10


@dataclass
class PassTally:
    """One pass's rows written and left pending, and a sample of the keys left; and how many passes in a row
    wrote nothing while leaving the same rows."""

    written: int = 0
    pending: int = 0
    keys: list[tuple[Any, ...]] = field(default_factory=list)
    stuck: int = 0
    _last: tuple[int, list[tuple[Any, ...]]] | None = None

    def add(self, f: Flight, rows: int, pending: int) -> None:
        self.written += rows
        self.pending += pending
        if len(self.keys) < 10:
            self.keys.extend(f.passed_over[:10 - len(self.keys)])

    def end_pass(self) -> None:
        """At a pass's end: count it as stuck or not, and start the next pass's tally."""
        try:
            keys = sorted(self.keys)   # in key order (one job's keys are of one type)
        except TypeError:
            keys = sorted(self.keys, key=repr)
        now = (self.pending, keys)
        self.stuck = self.stuck + 1 if self.written == 0 and self.pending and now == self._last else 0
        self._last = now if self.written == 0 and self.pending else None
        self.written = self.pending = 0
        self.keys = []

    def problem(self) -> str | None:
        """Why the job must stop sweeping, once STUCK_PASSES_MAX passes in a row were stuck; else None."""
        if self.stuck + 1 < STUCK_PASSES_MAX or self._last is None:
            return None
        pending, keys = self._last
        shown = ", ".join(str(encode_key(k)) for k in keys) if keys else "not known: rows a transform's guard refused"
        return (f"{pending} row(s) could not be written in {self.stuck + 1} passes in a row (keys: "
                f"{shown}): another session holds them locked (SKIP LOCKED passed them over each time) or changes "
                "them between each read and write; end that session's transaction, then run the job again (it "
                "resumes from its checkpoint)")
