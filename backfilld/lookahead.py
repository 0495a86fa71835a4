"""Read the next batch's range on a second connection while the current batch is being written.

Owns: one extra read-only connection per running job (opened lazily, closed when the job's run ends) and at
most one lookup in flight on it. The job asks for the range after its current batch's last key as soon as it
knows that key, and takes the answer when the batch has committed; on a server the lookup then costs no time
on the batch loop's critical path (it ran on another backend while the UPDATE ran).

Why it is safe: a range is only two bounds (lo, hi]; the job's UPDATE applies its own conditions to whatever
rows lie between them when it runs. Keys are never written by a job, so the batch in flight cannot move them;
rows another client inserts or deletes between the lookup and the write are simply inside or outside the range
(only the batch's "scanned" count, a statistic, can be off by them). A lookahead that found nothing (the end
of the table) is not trusted: the job looks again on its own connection, so rows appended meanwhile are not
left to the next pass.

Any failure here (connect, lock timeout, a cancelled read) only discards the lookahead: the job then does the
lookup itself, on its own connection, with its usual retries. The lookahead never raises into the job.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from backfilld import logs
from backfilld.engines.base import BatchPlan, Engine

log = logs.get_logger("backfilld.lookahead")

Range = tuple[tuple[Any, ...], int]


class Lookahead:
    def __init__(self, engine: Engine, job: str) -> None:
        self._engine = engine
        self._job = job
        self._reader: Engine | None = None
        self._task: asyncio.Task[Range | None] | None = None
        self._for: tuple[int, tuple[Any, ...], int] | None = None   # (id of plan, after, n) of the task

    def start(self, plan: BatchPlan, after: Sequence[Any], n: int) -> None:
        """Begin reading the range of n keys after `after` (a previous lookahead still running is dropped)."""
        self.discard()
        self._for = (id(plan), tuple(after), n)
        self._task = asyncio.create_task(self._lookup(plan, tuple(after), n), name=f"lookahead:{self._job}")

    async def _lookup(self, plan: BatchPlan, after: tuple[Any, ...], n: int) -> Range | None:
        if self._reader is None:
            # owned from before it connects: a lookahead dropped (cancelled) mid-connect is still closed by
            # close(); a leaked SQLite connection's worker thread would keep the process from exiting
            self._reader = reader = self._engine.clone("lookahead")
            try:
                await reader.connect()
            except BaseException:
                if self._reader is reader:
                    self._reader = None
                with contextlib.suppress(Exception):
                    await reader.close()
                raise
        return await self._reader.next_range(plan, after, n)

    async def take(self, plan: BatchPlan, after: Sequence[Any] | None, n: int) -> Range | None:
        """The lookahead's range if it was read for this position with no more than n keys and found one;
        None when there is none to use (the caller then looks itself)."""
        task, wanted = self._task, self._for
        self._task, self._for = None, None
        if task is None or after is None or wanted is None:
            if task is not None:
                await _drop(task)
            return None
        if wanted[0] != id(plan) or wanted[1] != tuple(after) or wanted[2] > n:
            await _drop(task)   # another position (a retry reloaded the checkpoint) or a smaller batch now
            return None
        try:
            found = await task
        except asyncio.CancelledError:
            _reraise_if_cancelled()
            return None
        except Exception as exc:  # noqa: BLE001 - any failure only means: look on the job's own connection
            log.info("lookahead_failed", job=self._job, error=str(exc), detail="the job reads its next range itself")
            await self._close_reader()
            return None
        return found

    def discard(self) -> None:
        task, self._task, self._for = self._task, None, None
        if task is not None and not task.done():
            task.cancel()
            task.add_done_callback(_quiet)

    async def close(self) -> None:
        task, self._task, self._for = self._task, None, None
        if task is not None:
            await _drop(task)
        await self._close_reader()

    async def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                await reader.close()


def _quiet(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()   # retrieved, so asyncio does not log "exception was never retrieved"


def _reraise_if_cancelled() -> None:
    """Inside `except CancelledError` after awaiting another task: re-raise if it is this task being cancelled."""
    me = asyncio.current_task()
    if me is not None and me.cancelling():
        raise asyncio.CancelledError


async def _drop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        _reraise_if_cancelled()
    except Exception:  # noqa: BLE001, S110 - a dropped lookahead's failure is of no interest
        pass
