"""Batches in flight and the key-order commit rule.

Owns: the batches of one pass being written at once (up to workers() of them, each on its own connection, over
consecutive key ranges), when the next one starts, and the rule that makes a crash at any moment resume
exactly: a batch writes its checkpoint only after the batch before it in key order has committed (Flight.turn),
so what has committed is always every range up to some key, and the checkpoint in the database is that key. A
batch whose predecessor failed rolls back too (Superseded).

Delegates, through the small protocols below (no database here; tests/unit/test_pipeline.py runs it with
fakes): where the next range ends (Ranges), which connection writes it (Writers), how a batch is written
(the write callable: batches.py), and what a committed batch changes (the landed callback: the job's
accounting).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from backfilld import trace
from backfilld.errors import RetryableError

Key = tuple[Any, ...]


class Superseded(Exception):
    """The batch before this one in key order failed: roll this one back too (the job resumes from the
    checkpoint, which is below both)."""


@dataclass(frozen=True)
class Range:
    """The next batch's keys: (lo, hi], `scanned` keys in it, asked for as `size`; `started` when the lookup
    began (a batch's time runs from its range lookup to its commit)."""

    lo: Key | None
    hi: Key
    scanned: int
    size: int
    started: float


@dataclass(eq=False)
class Flight:
    """A batch being written: its range, its connection, and its task (rows written, rows pending)."""

    lo: Key | None
    hi: Key
    scanned: int
    size: int
    writer: Any
    started: float
    prev: Flight | None = None   # the batch before it in key order, while that one was in flight
    took: float = 0.0      # range lookup to commit, less the wait for the batch before it
    waited: float = 0.0
    task: asyncio.Task[tuple[int, int]] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)   # committed or rolled back
    committed: bool = False
    turn_timeout_s: float | None = None   # the longest turn() waits for the batch before it (None: unbounded)
    passed_over: list[Key] = field(default_factory=list)   # keys of rows SKIP LOCKED left (a sample)

    async def turn(self) -> None:
        """Inside the batch's transaction, before its checkpoint: wait until the batch before it has ended;
        Superseded if that one rolled back. The wait is bounded (turn_timeout_s): a batch before it that hangs
        (its connection stalled) makes this one give up and roll back, a retryable error, before the server
        ends this idle transaction itself."""
        prev = self.prev
        if prev is None:
            return
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(prev.ended.wait(), self.turn_timeout_s)
        except TimeoutError:
            raise RetryableError(f"the batch before this one did not end within {self.turn_timeout_s:g} s; "
                                 "rolled back to be retried", kind="timeout") from None
        self.waited += time.monotonic() - t0
        if not prev.committed:
            raise Superseded


class Ranges(Protocol):
    async def next(self, after: Key | None) -> Range | None:
        """The range after `after` (the table's start if None); None when the pass has none left."""


class Writers(Protocol):
    async def acquire(self, busy: Collection[Any]) -> Any:
        """A connection for the next batch, not one of `busy` (those of the batches in flight)."""

    def is_job_connection(self, writer: Any) -> bool:
        """Whether `writer` is the job's own connection (its lease and lookups), not a worker's."""


Write = Callable[[Flight], Awaitable[tuple[int, int]]]
Landed = Callable[[Flight, int, int], None]

# errors of batches waiting on each other's or the application's locks: see Pipeline.step
_CONTENTION = ("lock_timeout", "deadlock")


class Pipeline:
    """One pass's batches in flight, in key order."""

    def __init__(self, *, ranges: Ranges, writers: Writers, write: Write, landed: Landed,
                 workers: Callable[[], int], one_worker: Callable[[str], None],
                 turn_timeout_s: float | None = None) -> None:
        self.ranges = ranges
        self.turn_timeout_s = turn_timeout_s   # see Flight.turn
        self.writers = writers
        self.write = write
        self.landed = landed
        self.workers = workers          # batches that may be in flight now
        self.one_worker = one_worker    # from now on one at a time, and why
        self.flights: deque[Flight] = deque()
        self.ranges_done = False   # this pass's last range is dispatched: land the flights, then end the pass

    def __len__(self) -> int:
        return len(self.flights)

    def may_dispatch(self) -> bool:
        return not self.ranges_done and len(self.flights) < self.workers()

    async def step(self, checkpoint: Key | None) -> bool:
        """Start the next batch if a worker is free; when all are busy (or the pass has no range left), wait
        for the oldest batch and account for it. False: the pass is over (nothing in flight any more).

        With one worker this is: look up a range, write it, return it. With more, the next range is looked up
        and started while the earlier batches are written, each on its own connection. `checkpoint`: the key
        the pass resumes after when nothing is in flight.

        On an error every batch in flight ends first (settle). Where batches overlapped and the error is a
        lock wait or deadlock, one batch at a time from then on: batches in flight hold their rows until the
        one before them commits, so a lock one needs from the other (a trigger writing a shared row, say) is
        a wait no database can see, broken only by the lock timeout. Not risked twice."""
        try:
            if self.may_dispatch():
                if await self.dispatch(checkpoint):
                    if len(self.flights) < self.workers():
                        return True
                else:
                    self.ranges_done = True
            if self.flights:
                await self.land()
                return True
        except Exception as exc:
            overlapped = len(self.flights) > 1
            await self.settle()
            if overlapped and isinstance(exc, RetryableError) and exc.kind in _CONTENTION:
                self.one_worker(f"batches in flight waited on each other's or the application's locks ({exc.kind})")
            raise
        self.ranges_done = False
        return False

    async def dispatch(self, checkpoint: Key | None) -> bool:
        """Look up the range after the last one dispatched and start writing it; False if there is none."""
        after = self.flights[-1].hi if self.flights else checkpoint
        found = await self.ranges.next(after)
        if found is None:
            return False
        writer = await self.writers.acquire([f.writer for f in self.flights])
        f = Flight(found.lo, found.hi, found.scanned, found.size, writer, found.started,
                   prev=self.flights[-1] if self.flights else None, turn_timeout_s=self.turn_timeout_s)
        f.task = asyncio.create_task(self._fly(f), name="batch")
        self.flights.append(f)
        return True

    @trace.timed("batch, start to commit")
    async def _fly(self, f: Flight) -> tuple[int, int]:
        """A batch's task: write its range and checkpoint in one transaction; (rows written, rows pending)."""
        try:
            rows, pending = await self.write(f)
            f.committed = True
            f.took = time.monotonic() - f.started - f.waited
            return rows, pending
        except RetryableError as exc:
            if not self.writers.is_job_connection(f.writer):
                exc.on_writer = True
            raise
        finally:
            f.prev = None   # the chain of ended batches is not kept alive
            f.ended.set()

    async def land(self) -> None:
        """Wait for the oldest batch in flight and account for it (it committed)."""
        f = self.flights[0]
        assert f.task is not None
        rows, pending = await f.task
        self.flights.popleft()
        self.landed(f, rows, pending)

    async def settle(self) -> None:
        """After a failure: wait until every batch in flight has ended. Those before the failed one committed
        and are accounted for; the failed one and those after it rolled back (each waits for the one before
        it to commit), so the checkpoint in the database is the last committed batch's last key."""
        flights, self.flights = list(self.flights), deque()
        self.ranges_done = False
        await asyncio.gather(*(f.task for f in flights if f.task is not None), return_exceptions=True)
        for f in flights:
            if not f.committed:
                break
            assert f.task is not None
            self.landed(f, *f.task.result())

    async def land_all(self) -> RetryableError | None:
        """At a stop: let the batches in flight finish (each commits with its checkpoint) and account for them.
        A retryable error ends it (the checkpoint says what committed) and is returned; others are raised."""
        while self.flights:
            try:
                await self.land()
            except RetryableError as exc:
                await self.settle()
                return exc
            except BaseException:
                await self.settle()
                raise
        return None

    async def drop(self) -> None:
        """Leaving the job's run with batches still in flight (cancelled, or an error outside step): end them."""
        flights, self.flights = list(self.flights), deque()
        self.ranges_done = False
        for f in flights:
            if f.task is not None and not f.task.done():
                f.task.cancel()
        await asyncio.gather(*(f.task for f in flights if f.task is not None), return_exceptions=True)
