"""The job's lease and its checkpoint at start: one daemon per job, and where a run begins.

Owns: taking the job's lease (held by the job's connection while it lives, tried for a while before giving up
with who holds it) and the start-up decision on the job's state row: create it, start over (--restart, or a
pending row the operator's requests made, or a row that records a failure before the job could start), resume
it, or refuse a changed spec; and that record itself (record_unstarted, for farm mode). Delegates the SQL to the engine
(try_lease, lease_holder, read_state, write_state) and the checks before writing to preflight.py.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from backfilld.engines.base import Engine, JobState, now_iso
from backfilld.errors import EngineError, LeaseHeld, SpecChangedError, StateError
from backfilld.preflight import Prepared
from backfilld.retry import Stopped
from backfilld.state import ERROR_CHARS
from backfilld.status import Status

# A job's lease is tried this long before the job gives up: at start, a few seconds (a daemon killed just now
# leaves a session the server drops a moment later); after a reconnect, a minute (the session that held it may
# linger until the server notices it is gone: PostgreSQL's keepalives, set at connect, take about 30 s).
LEASE_START_WAIT_S = 3.0
LEASE_RETAKE_WAIT_S = 60.0
LEASE_RETRY_S = 0.5

# the fingerprint of a row that records a job's failure before its spec was resolved (record_unstarted): no
# checkpoint to resume, so the next run starts the job afresh
UNSTARTED = ""


def lease_name(table: str, job: str) -> str:
    """The job's lease: named by the job and the table it writes (in its database)."""
    return f"{table}/{job}"


class Lease:
    """One daemon per job: two daemons on one job would each write correct values, but their checkpoints and
    counts would interleave. The lease is named by the job and the table it writes (in its database), not by
    the state table: two configs that differ only in [state] table still run the job one at a time."""

    def __init__(self, engine: Engine, table: str, job: str, *, stopped: Callable[[], bool],
                 sleep: Callable[[float], Awaitable[None]], log: Any) -> None:
        self.engine, self.job, self.stopped, self.sleep, self.log = engine, job, stopped, sleep, log
        self.name = lease_name(table, job)

    async def take(self, wait_s: float) -> None:
        """Take the lease on the job's connection, trying for wait_s; LeaseHeld names who holds it. Stopped on a
        stop meanwhile (the job has not written: a stop, not a failure)."""
        deadline = time.monotonic() + wait_s
        while not await self.engine.try_lease(self.name):
            if self.stopped():
                raise Stopped()
            if time.monotonic() >= deadline:
                holder = await self.engine.lease_holder(self.name)
                self.log.error("lease_held", holder=holder)
                raise LeaseHeld(f"job {self.job!r} is being run by another backfilld (its lease is held by "
                                f"{holder or 'another session'}); nothing was written. Stop that one, or let it "
                                "finish; `backfilld status` shows its progress")
            await self.sleep(LEASE_RETRY_S)


async def checkpoint(engine: Engine, state_table: str, p: Prepared, job: str, table: str, *, restart: bool,
                     log: Any) -> JobState:
    """The job's state row to run from, under its lease: created, started over, or resumed; SpecChangedError
    when the job's spec changed since its checkpoint."""
    await engine.ensure_state_table(state_table)
    fresh = JobState(job=job, fingerprint=p.fingerprint, status=Status.RUNNING.value, started_at=now_iso(),
                     updated_at=now_iso())
    try:
        state = await engine.read_state(state_table, job)
    except StateError as exc:
        if not restart:
            raise
        log.warning("state_row_replaced", error=str(exc))   # --restart starts over: the bad row is not needed
        await engine.write_state(state_table, fresh)
        log.info("job_restarted", table=table, key=list(p.key), targets=list(p.exprs))
        return fresh
    if state is None:
        await engine.write_state(state_table, fresh, insert=True)
        log.info("job_started", table=table, key=list(p.key), targets=list(p.exprs))
        return fresh
    if restart or state.status == Status.PENDING or state.fingerprint == UNSTARTED:
        fresh.requests = state.requests  # operator requests outlive a restart (write_state keeps them)
        await engine.write_state(state_table, fresh)
        log.info("job_restarted" if restart else "job_started", table=table, key=list(p.key), targets=list(p.exprs))
        return fresh
    if state.fingerprint != p.fingerprint:
        raise SpecChangedError(
            f"job {job!r}: its spec (table, key, where, targets or expressions) changed since its checkpoint "
            f"(fingerprint {state.fingerprint} -> {p.fingerprint}); rerun with --restart to start it over, or "
            "restore the old spec to resume")
    log.info("job_resumed", status=state.status, pass_no=state.pass_no, rows_done=state.rows_done,
             last_key=list(state.last_key) if state.last_key else None)
    return state


async def record_unstarted(engine: Engine, state_table: str, job: str, table: str, error: str, log: Any) -> None:
    """A job that failed before it could start (its preflight: a missing table or column, a broken expression)
    gets a failed state row carrying the error, so that a farm's `status` shows the database failed and why,
    not pending. Under the job's lease, tried once (a run that holds it is left alone: it passed its preflight,
    and it may be creating the row right now), and only where the job has no row or one such record: a row with
    a checkpoint is never touched. The lease goes with the connection, which the failed run closes. Best
    effort: a database that cannot be written (a lost connection, no grant) keeps the error in the log and the
    farm's summary only."""
    try:
        if not await engine.try_lease(lease_name(table, job)):
            return
        await engine.ensure_state_table(state_table)
        try:
            state = await engine.read_state(state_table, job)
        except StateError:
            return
        if state is not None and state.fingerprint != UNSTARTED:
            return
        now = now_iso()
        row = JobState(job=job, fingerprint=UNSTARTED, status=Status.FAILED.value, error=error[:ERROR_CHARS],
                       started_at=now, updated_at=now)
        await engine.write_state(state_table, row, insert=state is None)
    except (EngineError, StateError) as exc:
        log.warning("state_not_saved", job=job, error=str(exc))
