"""The batches in flight and their key-order commits (backfilld/pipeline.py), with fake ranges and writers: what
the database would hold after each commit, without a database."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Collection
from typing import Any

import pytest

from backfilld.errors import RetryableError
from backfilld.pipeline import Flight, Pipeline, Range


class Ranges:
    """Keys 1..n in ranges of `size`."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    async def next(self, after: tuple[Any, ...] | None) -> Range | None:
        lo = after[0] if after else 0
        if lo >= self.n:
            return None
        hi = min(self.n, lo + self.size)
        await asyncio.sleep(0)
        return Range(after, (hi,), hi - lo, self.size, time.monotonic())


class Writers:
    def __init__(self) -> None:
        self.opened = 0

    async def acquire(self, busy: Collection[Any]) -> Any:
        for w in range(self.opened):
            if w not in busy:
                return w
        self.opened += 1
        return self.opened - 1

    def is_job_connection(self, writer: Any) -> bool:
        return writer == 0


class Database:
    """What a batch transaction leaves behind: its rows and its checkpoint, both or neither."""

    def __init__(self, seed: int, fail_at: int | None = None, error: Exception | None = None) -> None:
        self.rng = random.Random(seed)
        self.fail_at, self.error = fail_at, error
        self.written: list[tuple[int, int]] = []   # committed ranges (lo, hi], in commit order
        self.checkpoints: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.prefix_ok = True

    async def write(self, f: Flight) -> tuple[int, int]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            lo, hi = (f.lo[0] if f.lo else 0), f.hi[0]
            await asyncio.sleep(self.rng.uniform(0, 0.004))   # the UPDATE, of varying length
            if self.fail_at is not None and lo < self.fail_at <= hi:
                assert self.error is not None
                raise self.error
            await f.turn()
            # commit: rows and checkpoint together; what committed must be every range up to the checkpoint
            self.written.append((lo, hi))
            self.checkpoints.append(hi)
            covered = sorted(self.written)
            joined = all(a[1] == b[0] for a, b in zip(covered, covered[1:], strict=False))
            self.prefix_ok &= covered[0][0] == 0 and joined
            return hi - lo, 0
        finally:
            self.in_flight -= 1


def pipeline(db: Database, workers: Any, n: int = 2000, size: int = 37) -> tuple[Pipeline, list[int], list[str]]:
    landed: list[int] = []
    one: list[str] = []
    p = Pipeline(ranges=Ranges(n, size), writers=Writers(), write=db.write,
                 landed=lambda f, rows, pending: landed.append(f.hi[0]), workers=workers, one_worker=one.append)
    return p, landed, one


async def run_pass(p: Pipeline, landed: list[int]) -> None:
    while await p.step(landed[-1:] and (landed[-1],) or None):
        pass


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 8, 16])
async def test_batches_commit_in_key_order_and_the_checkpoint_is_every_range_below_it(workers: int) -> None:
    db = Database(seed=workers)
    p, landed, _ = pipeline(db, lambda: workers)
    await run_pass(p, landed)
    ends = list(range(37, 2000, 37)) + [2000]
    assert db.checkpoints == ends and landed == ends
    assert db.prefix_ok
    assert db.most_in_flight == workers
    assert len(p) == 0


@pytest.mark.parametrize("workers", [2, 4, 16])
async def test_a_failed_batch_rolls_back_the_later_ones_and_every_batch_has_ended_when_the_error_arrives(
        workers: int) -> None:
    db = Database(seed=7, fail_at=500, error=RetryableError("lock wait timeout", kind="lock_timeout"))
    p, landed, one = pipeline(db, lambda: workers)
    with pytest.raises(RetryableError):
        await run_pass(p, landed)
    # the range holding key 500 is (481, 518]: everything before it committed, nothing at or after it
    assert db.checkpoints == list(range(37, 482, 37))
    assert landed == db.checkpoints and db.prefix_ok
    assert len(p) == 0 and db.in_flight == 0   # settled: no batch still running when the error is raised
    # batches that overlapped and waited for a lock: one at a time from then on
    assert one and "lock_timeout" in one[0]


async def test_one_worker_failing_does_not_ask_for_one_worker() -> None:
    db = Database(seed=3, fail_at=100, error=RetryableError("lock wait timeout", kind="lock_timeout"))
    p, landed, one = pipeline(db, lambda: 1)
    with pytest.raises(RetryableError):
        await run_pass(p, landed)
    assert db.checkpoints == [37, 74] and not one


async def test_a_worker_connection_error_is_marked_as_the_workers() -> None:
    error = RetryableError("gone", kind="connection", reconnect=True)
    db = Database(seed=5, fail_at=100, error=error)
    p, landed, _ = pipeline(db, lambda: 4)
    with pytest.raises(RetryableError) as caught:
        await run_pass(p, landed)
    assert caught.value.on_writer   # written on writer 2 (the third), not the job's own connection 0


async def test_fewer_workers_mid_run_lets_the_batches_in_flight_finish_then_goes_one_at_a_time() -> None:
    db = Database(seed=11)
    wanted = [8]
    p, landed, _ = pipeline(db, lambda: wanted[0])
    while await p.step((landed[-1],) if landed else None):
        if len(landed) == 10:
            wanted[0] = 1
            db.most_in_flight = db.in_flight   # from here on: at most what is in flight now, draining to 1
        if len(landed) == 30:
            assert db.most_in_flight <= 8
            db.most_in_flight = 0
    assert db.most_in_flight == 1
    assert db.checkpoints == landed and db.prefix_ok and landed[-1] == 2000


async def test_a_batch_waits_for_the_one_before_it_only_so_long() -> None:
    """A batch before it that never ends (its connection stalled): turn() gives up after turn_timeout_s with
    a retryable error, so that this batch rolls back before the server ends its idle transaction."""
    hung = Flight(None, (10,), 10, 10, writer=None, started=0.0)
    f = Flight((10,), (20,), 10, 10, writer=None, started=0.0, prev=hung, turn_timeout_s=0.05)
    with pytest.raises(RetryableError, match=r"did not end within 0.05 s") as err:
        await f.turn()
    assert err.value.kind == "timeout"
    hung.committed = True
    hung.ended.set()
    await f.turn()   # ended in time: goes on
