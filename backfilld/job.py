"""One job's passes: start, pass after pass until a pass finds nothing to write, stop and failure.

Owns: the job's life (start, run, stop, fail), the decision that ends a pass (a sweep follows a fill unless
nobody else wrote) and completes the job (a pass that wrote and passed over nothing), the pause between sweeps
that keep finding rows, and the number of workers. Delegates the checks before writing to preflight.py, the lease
and the checkpoint to start from to lease.py, operator requests to requests.py, the batches in flight and their
key-order commits to pipeline.py, what a committed batch changes in memory (state, sizer, gate, progress,
metrics, log, on_batch) to accounting.py, the workers' connections to writers.py, how a batch is written to
batches.py, retries to retry.py, SQL to the engine, sizing to chunker, pausing to the throttle (a Gate).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, NoReturn

from backfilld import logs, trace
from backfilld import state as state_mod
from backfilld.accounting import Accounting, BatchResult, PassTally
from backfilld.aio import wait_event
from backfilld.batches import FillBatch, KeyRanges, TransformBatch, TxnCount
from backfilld.chunker import BatchSizer
from backfilld.config import JobConfig
from backfilld.engines.base import Engine, JobState, now_iso
from backfilld.errors import EngineError, JobFailed, RetryableError, SchemaError, StateError
from backfilld.gate import Gate, OpenGate, app_busy
from backfilld.health import Liveness
from backfilld.lease import LEASE_RETAKE_WAIT_S, LEASE_START_WAIT_S, Lease, checkpoint
from backfilld.lookahead import Lookahead
from backfilld.metrics import Metrics, Progress
from backfilld.pipeline import Flight, Pipeline, Range, Write
from backfilld.preflight import Prepared, concurrency_limit, null_key_problem, null_keys_stmt, prepare
from backfilld.requests import REQUEST_POLL_S, OperatorRequests
from backfilld.retry import Retrier, Stopped
from backfilld.status import Status, metric_state
from backfilld.writers import WriterPool

__all__ = ["BatchResult", "JobRunner", "Stopped"]

log = logs.get_logger("backfilld.job")

# A batch waits for the batch before it in key order at most this share of [database]
# idle_in_transaction_timeout_s (inside its transaction, idle on the server meanwhile), then rolls back.
TURN_SHARE = 0.8

# Between two sweeps that both found rows: a pause as long as the last sweep took, within these bounds (seconds).
SWEEP_PAUSE_MIN_S = 0.2
SWEEP_PAUSE_MAX_S = 30.0


class JobRunner:
    def __init__(self, engine: Engine, job: JobConfig, *, state_table: str, sizer: BatchSizer,
                 gate: Gate | None = None, stop: asyncio.Event | None = None,
                 on_batch: Callable[[BatchResult], None] | None = None, metrics: Metrics | None = None,
                 workers: int = 1) -> None:
        self.engine = engine
        self.job = job
        self.state_table = state_table
        self.sizer = sizer
        self.gate = gate or OpenGate()
        self.stop = stop or asyncio.Event()
        self.on_batch = on_batch
        self.metrics = metrics or Metrics()
        self.progress = Progress()
        self.state: JobState | None = None
        self.prepared: Prepared | None = None
        self.stopped = False        # this run ended on a stop, the job not completed (metrics: "stopped")
        self.connected = True
        self.lookahead: Lookahead | None = None
        self.workers_wanted = workers
        self.workers_cap = 1        # decided at start: more only where batches can run side by side
        self.log = log.bind(job=job.name)
        self.txns = TxnCount()      # this pass's batch transactions (see _nothing_else_wrote)
        self.retry = Retrier(job.name, max_retries=job.max_retries, metrics=self.metrics, log=self.log,
                             sleep=self._sleep, stopped=self.stop.is_set, recover=self._recover, fail=self.fail,
                             disconnected=self._disconnected)
        trace.connection(engine, "job")
        self.liveness = Liveness()   # when it last committed; whether it waits by choice (/readyz, /status)
        self.lease = Lease(engine, job.table, job.name, stopped=self.stop.is_set, sleep=self._sleep, log=self.log)
        self.requests = OperatorRequests(engine, state_table, job.name, sizer=sizer, gate=self.gate,
                                         metrics=self.metrics, log=self.log, stopped=self.stop.is_set,
                                         sleep=self._sleep, paused_changed=self._paused_changed,
                                         workers=self.retune_workers, waiting=self.liveness.waiting)
        self.tally = PassTally()   # this pass's rows written and left, and the passes in a row stuck on rows
        self.accounting = Accounting(job.name, sizer=sizer, gate=self.gate, progress=self.progress,
                                     metrics=self.metrics, log=self.log, on_batch=on_batch)
        self.writers = WriterPool(engine, configured=lambda: self.configured_workers, one_worker=self._one_worker)
        self._batch: Write | None = None   # how this job's batches are written (batches.py), set at start
        self._ranges: KeyRanges | None = None   # where they end, set at start
        # a batch waits for the one before it a little less long than the server keeps its transaction open idle
        self.pipeline = Pipeline(ranges=self, writers=self.writers, write=self._write, landed=self._landed,
                                 workers=lambda: self.workers, one_worker=self._one_worker,
                                 turn_timeout_s=TURN_SHARE * engine.idle_in_transaction_timeout_s)

    @property
    def operator_paused(self) -> bool:
        return self.requests.paused

    def _paused_changed(self) -> None:
        if self.state is not None:
            self._set_status(self.state.status)

    def _set_status(self, status: str) -> None:
        assert self.state is not None
        self.state.status = str(status)
        self.metrics.set_state(self.job.name, metric_state(status, paused=self.operator_paused,
                                                           stopped=self.stopped))

    # ------------------------------------------------------------------ start
    async def start(self, *, restart: bool = False) -> JobState:
        """Preflight, then load or create the checkpoint. Raises SpecChangedError on a changed spec, Stopped on a
        stop before the job could start."""
        try:
            return await self.retry.run(lambda: self._start(restart))
        except Stopped:   # during a lease wait or a retry's backoff: nothing written, the checkpoint as it was
            self.log.info("job_stopped", detail="stopped before it could start")
            raise

    async def _start(self, restart: bool) -> JobState:
        self.prepared = p = await prepare(self.engine, self.job)
        self._batch = self._batch_writer(p)
        problem = await self.engine.lock_timeout_problem()
        if problem:
            self.log.warning("lock_timeout_too_long", detail=problem)
        if self.engine.skip_locked and self.engine.dialect.skip_locked_clause is not None:
            why = await self.engine.lock_support()
            if why:
                self.log.warning("skip_locked_unavailable", detail=f"{why}: batches wait for rows the application "
                                 "holds, up to lock_timeout_s")
        await self.lease.take(LEASE_START_WAIT_S)
        state = await checkpoint(self.engine, self.state_table, p, self.job.name, self.job.table, restart=restart,
                                 log=self.log)
        self.state = state
        self.workers_cap = await self._decide_workers(p)
        if self.configured_workers == 1 and self.lookahead is None and await self.engine.concurrent_reads():
            self.lookahead = Lookahead(self.engine, self.job.name)
        self._ranges = KeyRanges(self.engine, p.plan, state, self.sizer, lambda: app_busy(self.gate),
                                 self.lookahead, self.log)
        if self.job.on_error == "skip" and p.transform is not None:
            await self.engine.ensure_skipped_table(self.state_table)
        self.progress.reset(await self.engine.estimate_rows(self.job.table), state.pass_scanned)
        self.metrics.passes.labels(self.job.name).set(state.pass_no)
        self.metrics.batch_size.labels(self.job.name).set(self.sizer.size)
        self.metrics.rows_skipped_locked.labels(self.job.name)   # at 0 from the start, for rates and alerts
        self._set_status(state.status)
        return state

    def _batch_writer(self, p: Prepared) -> Write:
        if p.transform is not None:
            return TransformBatch(p, self.job, state_table=self.state_table, metrics=self.metrics, log=self.log)
        return FillBatch(p, state_table=self.state_table, job=self.job.name, txns=self.txns, log=self.log)

    async def _decide_workers(self, p: Prepared) -> int:
        """The most batches that may be in flight: WORKERS_MAX, or 1 where they cannot run side by side."""
        cap, why = await concurrency_limit(self.engine, p)
        if cap > 1:
            return cap
        if self.workers_wanted > 1:
            # expected on an engine with one writer: said at debug level there
            (self.log.debug if self.engine.capabilities.single_writer else self.log.info)(
                "workers_limited", workers=1, configured=self.workers_wanted, detail=why)
        return 1

    @property
    def workers(self) -> int:
        """Batches that may be in flight now: one while the application is busy (see Throttle.busy)."""
        return 1 if app_busy(self.gate) else self.configured_workers

    @property
    def configured_workers(self) -> int:
        return min(self.workers_wanted, self.workers_cap)

    def retune_workers(self, wanted: int) -> None:
        """A new throttle.workers (operator `set`, SIGHUP): batches start up to it from the next one on; a
        smaller number lets the batches in flight finish, and idle workers' connections are closed."""
        self.workers_wanted = wanted

    def _one_worker(self, why: str) -> None:
        """From now on in this run, one batch at a time (on the job's own connection)."""
        if self.configured_workers > 1:
            self.log.info("workers_limited", workers=1, configured=self.workers_wanted, detail=why)
        self.workers_cap = 1

    # ------------------------------------------------------------------ passes
    async def run(self, *, follow: bool = False, once: bool = False) -> JobState:
        """Run passes until a pass finds nothing to fill (or forever with follow). Returns the final state.

        With follow and once, a completed job runs one sweep pass and returns (the daemon takes turns).
        """
        assert self.state is not None and self.prepared is not None, "start() first"
        self.stopped = False
        try:
            return await self._run(follow, once)
        finally:
            await self.pipeline.drop()
            await self.writers.close()      # connections are opened again when a later run needs them
            if self.lookahead is not None:
                await self.lookahead.close()

    async def _run(self, follow: bool, once: bool) -> JobState:
        st = self.state
        assert st is not None
        if st.status == Status.COMPLETED and not follow:
            if not await self.retry.run(self._rows_left):
                self.log.info("job_already_completed", rows_done=st.rows_done, finished_at=st.finished_at)
                return st
            # old code went on inserting rows without the targets after the job completed: one sweep writes them
            self.log.info("rows_left_after_completion", finished_at=st.finished_at,
                          detail="rows without their targets were added since the job completed; sweeping")
        if st.status != Status.RUNNING and st.status != Status.COMPLETED:
            st.error = None
            self._set_status(Status.RUNNING)
            await self._save()
        pass_started = time.monotonic()
        self.liveness.started()
        writes_seen = await self._writes_token()
        while not self.stop.is_set():
            try:
                going_on = await self._loop_step()
                if going_on is None:
                    break
                if going_on:
                    continue
                if await self._end_pass(time.monotonic() - pass_started, writes_seen, follow and not once):
                    return st
            except Stopped:
                break
            pass_started = time.monotonic()
            writes_seen = await self._writes_token()
        await self._land_all()
        if st.status == Status.RUNNING:
            self.stopped = True
            self._set_status(st.status)
            self.log.info("job_stopped", rows_done=st.rows_done, pass_no=st.pass_no,
                          last_key=list(st.last_key) if st.last_key else None)
        return st

    async def _loop_step(self) -> bool | None:
        """Operator requests, the gate, then one pipeline step: True while the pass goes on, False at its end,
        None on a stop."""
        await self.retry.run(self.requests.poll)
        if self.stop.is_set():
            return None
        if self.pipeline.may_dispatch():
            with self.liveness.waiting():
                await self._wait_gate()
            if self.stop.is_set():
                return None
        return bool(await self.retry.run(self._step))

    async def _wait_gate(self) -> None:
        """The gate's wait, with the operator's requests read meanwhile: a `set` (max_lag_s, say) or a pause
        made while the throttle holds the job counts at once, not only once the throttle lets it go."""
        wait = asyncio.create_task(self.gate.wait(self.job.name, self.stop, len(self.pipeline)), name="gate")
        try:
            while not (await asyncio.wait({wait}, timeout=REQUEST_POLL_S))[0]:
                await self.retry.run(self.requests.poll)
            await wait
        finally:
            if not wait.done():
                wait.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await wait

    async def _end_pass(self, took: float, writes_seen: object | None, follow: bool) -> bool:
        """A pass ended: complete the job if it found nothing to write, start the next pass (saved). True: the
        run is over (completed, and not following)."""
        st = self.state
        assert st is not None
        self.log.info("pass_finished", pass_no=st.pass_no, rows=st.pass_rows, scanned=st.pass_scanned,
                      took_s=round(took, 3))
        if st.pass_rows > 0 and st.status != Status.COMPLETED and await self._nothing_else_wrote(writes_seen):
            # the pass ran from the table's first key and no other session wrote to the database meanwhile:
            # the sweep would find nothing (it is the pass that looks for rows others added or changed)
            self.log.info("sweep_skipped", pass_no=st.pass_no,
                          detail="no other connection wrote to the database during the pass")
            st.pass_rows = 0
        if st.pass_rows == 0 and st.status != Status.COMPLETED:
            st.finished_at = now_iso()
            self._set_status(Status.COMPLETED)
            self.log.info("job_completed", rows_done=st.rows_done, passes=st.pass_no)
        self.tally.end_pass()
        stuck = self.tally.problem() if st.status != Status.COMPLETED else None
        if stuck:
            await self.fail(JobFailed(stuck))
        await self.retry.run(self._check_null_keys)
        st.pass_no += 1
        st.last_key, st.pass_rows, st.pass_scanned = None, 0, 0
        self.metrics.passes.labels(self.job.name).set(st.pass_no)
        self.progress.reset(self.progress.estimate)
        await self.retry.run(self._save)
        if st.status == Status.COMPLETED:
            if not follow:
                return True
            with self.liveness.waiting():
                await self._sleep(self.job.follow_interval_s)
        elif st.pass_no > 2:
            # a sweep found rows again (the application keeps writing rows without the targets, or holds
            # some locked): the next one waits as long as this one took (at least SWEEP_PAUSE_MIN_S), so
            # that sweeps take at most half of the time, however long the application goes on; twice as long
            # after each sweep that wrote nothing and found the same rows again (accounting.PassTally)
            pause = min(SWEEP_PAUSE_MAX_S, max(SWEEP_PAUSE_MIN_S, took) * 2 ** self.tally.stuck)
            self.log.info("sweep_paused", seconds=round(pause, 2), detail="the last sweep found rows to write")
            with self.liveness.waiting():
                await self._sleep(pause)
        return False

    async def _check_null_keys(self) -> None:
        """A primary key declared without NOT NULL (SQLite): rows the application gave a NULL key during the pass
        were not paged; the job fails naming the problem rather than complete without them."""
        p = self.prepared
        assert p is not None
        stmt = null_keys_stmt(self.engine, p.job, p.table, p.key)
        if stmt is not None and await self.engine.fetch(stmt):
            raise SchemaError(null_key_problem(p.job, p.key, p.table))

    async def _rows_left(self) -> bool:
        """Whether any row needs a value: a fill's one read-only statement (a transform job cannot tell without
        reading every row: False, as before; `run --restart` sweeps it)."""
        assert self.prepared is not None
        any_pending = self.prepared.plan.any_pending
        return any_pending is not None and bool(await self.engine.fetch(any_pending))

    async def _writes_token(self) -> object | None:
        """At a pass's start: the engine's token of other sessions' writes, if the pass may end the job without
        a sweep: it covers the whole table (starts at the first key), is a fill (a transform may leave rows
        for a later pass), and the job is not completed yet (a completed job's passes are its sweeps)."""
        self.txns.begun = self.txns.committed = 0
        st, p = self.state, self.prepared
        if st is None or st.last_key is not None or st.status == Status.COMPLETED or p is None \
                or p.transform is not None:
            return None
        try:
            return await self.engine.writes_token(self.job.table)
        except EngineError:
            return None

    async def _nothing_else_wrote(self, token: object | None) -> bool:
        begun, committed = self.txns.begun, self.txns.committed
        if token is None or begun != committed:   # a rolled-back batch: the engine cannot account for it
            return False
        try:
            return await self.engine.nothing_else_wrote(self.job.table, token, committed)
        except EngineError:
            return False

    # ------------------------------------------------------------------ batches
    @trace.timed("loop steps")
    async def _step(self) -> bool:
        """One step of the pipeline (start a batch, or land the oldest); False at the pass's end."""
        assert self.state is not None
        going_on = await self.pipeline.step(self.state.last_key)
        if not going_on:
            self.retry.failures = 0
        return going_on

    async def next(self, after: tuple[Any, ...] | None) -> Range | None:
        """The pipeline's Ranges: the range after `after` (KeyRanges, built at start)."""
        assert self._ranges is not None, "start() first"
        return await self._ranges.next(after)

    async def _write(self, f: Flight) -> tuple[int, int]:
        assert self._batch is not None, "start() first"
        return await self._batch(f)

    def _landed(self, f: Flight, rows: int, pending: int) -> None:
        assert self.state is not None
        self.retry.failures = 0
        self.connected = True
        self.tally.add(f, rows, pending)
        self.liveness.committed()
        self.accounting.landed(self.state, f, rows, pending)

    async def _land_all(self) -> None:
        """At a stop: let the batches in flight finish (each commits with its checkpoint) and account for them."""
        exc = None
        try:
            exc = await self.pipeline.land_all()
        except (EngineError, SchemaError, StateError) as err:
            self.metrics.errors.labels(self.job.name, "fatal").inc()
            await self.fail(err)
        if exc is not None:   # stopping anyway; the checkpoint says what committed
            self.log.warning("batch_rolled_back_at_stop", error=str(exc))

    # ------------------------------------------------------------------ state, retries, failure
    async def _save(self) -> None:
        assert self.state is not None
        self.state.updated_at = now_iso()
        await self.engine.write_state(self.state_table, self.state)

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self.stop, seconds)

    def _disconnected(self) -> None:
        self.connected = False

    async def _recover(self, exc: RetryableError) -> None:
        """Reconnect if needed and reload the checkpoint: the database, not memory, says what committed."""
        await self.pipeline.settle()   # batches still in flight end (and are counted) before the checkpoint is read
        try:
            if exc.reconnect:
                await self.writers.close()    # opened again for the next batches
                if not exc.on_writer:         # a worker's connection failed: the job's own (and lease) is fine
                    await self.engine.reconnect()
                    if self.state is not None:   # the job had its lease before; the old session took it along
                        await self.lease.take(LEASE_RETAKE_WAIT_S)
            if self.state is None:
                return
            saved = await self.engine.read_state(self.state_table, self.job.name)
        except EngineError as again:
            self.log.warning("recover_failed", error=str(again))
            return
        if saved is None:
            await self.fail(state_mod.row_gone(self.state_table, self.job.name))
        if self.state is not None:
            # update in place: the loop holds this object; status stays what this run decided
            for name in state_mod.PROGRESS:
                setattr(self.state, name, getattr(saved, name))

    async def fail(self, exc: Exception, attempts: int = 1) -> NoReturn:
        """Record the error in the state table (best effort) and stop the job."""
        await self.pipeline.settle()   # batches still in flight end first: the state saved below counts them
        st = self.state
        message = str(exc)
        self.log.error("job_failed", error=message, attempts=attempts)
        self.metrics.batches.labels(self.job.name, "failed").inc()
        if st is not None:
            st.error = message[:state_mod.ERROR_CHARS]
            self._set_status(Status.FAILED)
            try:
                await self._save()
            except StateError:   # the row was deleted meanwhile: put the failure back where `status` looks
                try:
                    await self.engine.write_state(self.state_table, st, insert=True)
                except EngineError as again:
                    self.log.error("state_not_saved", error=str(again))
            except EngineError:
                try:
                    await self.engine.reconnect()
                    await self._save()
                except (EngineError, StateError) as again:
                    self.log.error("state_not_saved", error=str(again))
        raise JobFailed(f"job {self.job.name!r} failed after {attempts} attempt(s): {message}") from None
