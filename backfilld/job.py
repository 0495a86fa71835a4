"""One job's batch loop: wait for the throttle -> next range -> apply -> checkpoint, pass after pass.

Owns: preflight checks against the live catalog, the checkpoint protocol (advanced in the same transaction
as the batch, so a crash at any moment resumes exactly), passes and sweeps, retries with backoff and
reconnect, and the batches in flight (throttle.workers of them, on their own connections, committing in key
order). Delegates SQL to the engine, sizing to chunker, pausing to the throttle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import structlog

from backfilld.aio import wait_event
from backfilld.chunker import BatchSizer
from backfilld.config import JobConfig
from backfilld.engines.base import (BatchPlan, Engine, JobState, TableInfo, WriteShape, advanced, build_count_upto,
                                    build_transform_plan, encode_key, key_args, lookups, now_iso)
from backfilld.errors import EngineError, JobFailed, LeaseHeld, RetryableError, SchemaError, SpecChangedError
from backfilld.lookahead import Lookahead
from backfilld.metrics import Metrics, Progress
from backfilld.transforms import Transform

log = structlog.get_logger("backfilld.job")

# Backoff between attempts of a failed batch: 0.2 s doubling to 30 s, with jitter, so that many daemons
# retrying against one recovering server do not retry in step.
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 30.0

# A job's lease is tried this long before the job gives up: at start, a few seconds (a daemon killed just now
# leaves a session the server drops a moment later); after a reconnect, a minute (the session that held it may
# linger until the server notices it is gone: PostgreSQL's keepalives, set at connect, take about 30 s).
LEASE_START_WAIT_S = 3.0
LEASE_RETAKE_WAIT_S = 60.0
LEASE_RETRY_S = 0.5

# throttle.workers' upper bound (the config file's and `backfilld set`'s)
WORKERS_MAX = 16

# Operator requests (pause, resume, set) are read from the state table at most this often. Seconds:
# a primary-key read, cheap, but not worth a round trip on every batch of a fast job.
REQUEST_POLL_S = 0.5

STATUS_PENDING = "pending"      # a row made by an operator request before the job first ran
STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_FAILED = "failed"

# What `backfilld set` may change on a running job, and the type of each value.
LIVE_SETTINGS: dict[str, type] = {"batch_size": int, "target_batch_time_s": float, "max_lag_s": float,
                                  "max_rows_per_s": float, "workers": int, "busy_share": float}


# Between two sweeps that both found rows: a pause as long as the last sweep took, within these bounds (seconds).
SWEEP_PAUSE_MIN_S = 0.2
SWEEP_PAUSE_MAX_S = 30.0


class Stopped(Exception):
    """A stop was requested while a batch waited to be retried."""


class _NullWritten(Exception):
    """A batch computing its expression once wrote NULL over NULL: roll it back, redo it guarded."""


class _Superseded(Exception):
    """The batch before this one in key order failed: roll this one back too (the job resumes from the
    checkpoint, which is below both)."""


class Gate(Protocol):
    """What the job asks before each batch: wait until work may go on (or the stop event is set).
    in_flight: the job's batches being written at that moment (see Throttle.wait)."""

    async def wait(self, job: str, stop: asyncio.Event, in_flight: int = 0) -> None: ...

    def after_batch(self, job: str, rows: int, took_s: float) -> None: ...


class OpenGate:
    async def wait(self, job: str, stop: asyncio.Event, in_flight: int = 0) -> None:
        return None

    def after_batch(self, job: str, rows: int, took_s: float) -> None:
        return None


@runtime_checkable
class Retunable(Protocol):
    """A gate whose limits an operator may change while it runs (the throttle is one)."""

    def retune_live(self, **settings: float) -> None: ...


@dataclass
class BatchResult:
    rows: int
    scanned: int
    took_s: float
    size: int
    pass_no: int
    last_key: tuple[Any, ...]


@dataclass(eq=False)
class _Flight:
    """A batch being written: its range, its connection, and its task (rows written, once committed)."""

    lo: tuple[Any, ...] | None
    hi: tuple[Any, ...]
    scanned: int
    size: int
    writer: Engine
    started: float
    took: float = 0.0      # range lookup to commit, less the wait for the batch before it
    waited: float = 0.0
    task: asyncio.Task[tuple[int, int]] | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)   # committed or rolled back
    committed: bool = False
    passed_over: list[tuple[Any, ...]] = field(default_factory=list)   # keys of rows SKIP LOCKED left (a sample)


@dataclass
class Prepared:
    """A job checked against the live catalog, with its statements built."""

    job: JobConfig
    table: TableInfo
    key: tuple[str, ...]
    exprs: dict[str, str]          # SQL-expression jobs; empty for transform jobs
    plan: BatchPlan
    fingerprint: str
    transform: Transform | None = None
    shape: WriteShape | None = None


def resolve_key(job: JobConfig, info: TableInfo) -> tuple[str, ...]:
    """The key the job pages by: the configured one if it is unique and not null, else the primary key."""
    if job.key is None:
        if not info.primary_key:
            raise SchemaError(f"job {job.name!r}: table {job.table!r} has no primary key; set key = [...] to "
                              "the columns of a unique, NOT NULL index")
        nullable = [c for c in info.primary_key if info.columns[c].nullable]
        if nullable:  # SQLite lets a non-INTEGER primary key hold NULL, and keyset paging skips those rows
            raise SchemaError(f"job {job.name!r}: primary key column {nullable[0]!r} of {job.table!r} is declared "
                              "without NOT NULL, so rows with a NULL key would be skipped; declare it NOT NULL or "
                              "set key = [...] to a NOT NULL unique index")
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
    if all(getattr(job, k) == v for k, v in update.items()):
        return job
    return job.model_copy(update=update)


async def prepare(engine: Engine, job: JobConfig) -> Prepared:
    """Check table, key and targets against the catalog and every expression on sample rows. Writes nothing.
    Prepared.job is the job as the catalog spells its columns (spelled_as_catalog): use it, not the config's."""
    info = await engine.table_info(job.table)
    job = spelled_as_catalog(engine, job, info)
    key = resolve_key(job, info)
    for target in job.target_columns:
        col = info.columns.get(target)
        if col is None:
            raise SchemaError(f"job {job.name!r}: target column {target!r} does not exist in table {job.table!r}; "
                              "add it (the expand step) before the backfill")
        if col.generated:
            raise SchemaError(f"job {job.name!r}: target column {target!r} of {job.table!r} is generated (the "
                              "database computes its value and refuses writes to it); a backfill fills a stored, "
                              "nullable column")
        if not col.nullable and not job.overwrite:
            raise SchemaError(f"job {job.name!r}: target column {target!r} is NOT NULL; backfilld fills NULL "
                              "targets; make it nullable until the backfill is verified")
        if target in key:
            raise SchemaError(f"job {job.name!r}: target {target!r} is part of the key")
    for col in key:
        why = engine.unpageable_key(info.columns[col])
        if why:
            raise SchemaError(f"job {job.name!r}: key column {col!r} ({info.columns[col].type}) cannot be paged: "
                              f"{why}; set key = [...] to another unique, NOT NULL index")
    fingerprint = job.fingerprint(engine.name, list(key))
    await check_key_round_trip(engine, job, info, key)
    if job.transform:
        for source in job.sources:
            if source not in info.columns:
                raise SchemaError(f"job {job.name!r}: source column {source!r} does not exist in table "
                                  f"{job.table!r}")
        transform = Transform(job.transform, job.sources, job.targets)
        plan = build_transform_plan(engine.dialect, job.table, key, job.sources, job.targets, job.where,
                                    job.overwrite, info.columns)
        try:
            await engine.fetch(plan.read_first, {f"hi{i}": None for i in range(len(key))})
        except EngineError as exc:
            raise SchemaError(f"job {job.name!r}: the where filter fails on the table: {exc}") from None
        shape = WriteShape(tuple(key), tuple(job.sources), tuple(job.targets), job.overwrite)
        return Prepared(job, info, key, {}, plan, fingerprint, transform, shape)
    exprs = job.expressions(engine.name)
    once = None
    if len(exprs) == 1 and not job.overwrite:
        once = await engine.once_expression(job.table, key, next(iter(exprs.values())))
    lock = engine.lock_clause(info, list(exprs)) if engine.skip_locked and await engine.lock_support() is None \
        else None
    plan = engine.plan(job.table, key, exprs, job.where, job.overwrite, info.columns, once, lock)
    await engine.check_expressions(plan)
    return Prepared(job, info, key, exprs, plan, fingerprint)


async def check_key_round_trip(engine: Engine, job: JobConfig, info: TableInfo, key: tuple[str, ...]) -> None:
    """Before anything is written: the first keys, as read, must be storable in the checkpoint, and bound
    back they must find exactly their own rows in the key's order. A key type the driver or server converts on
    the way (rounded floats, bit strings, a charset that does not round-trip) would otherwise make batches skip
    rows or read the same range forever."""
    plan = lookups(engine.dialect, job.table, key, info.columns)
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
        [(n,)] = await engine.fetch(build_count_upto(engine.dialect, job.table, key), key_args("hi", k1))
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
    if not await engine.enable_concurrent_writes():
        return 1, ("SQLite has one writer at a time" if engine.name == "sqlite" else
                   "the server logs statements (binlog_format = STATEMENT), which READ COMMITTED writes need")
    return WORKERS_MAX, None


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
        self.operator_paused = False
        self.connected = True
        self._requests_at = float("-inf")
        self._applied: dict[str, Any] = {}
        self.lookahead: Lookahead | None = None
        self.workers_wanted = workers
        self.workers_cap = 1        # decided at start: more only where batches can run side by side
        self._failures = 0          # retryable failures since a batch last committed (see _with_retries)
        self._writers: list[Engine] = []   # the workers' connections (with more than one), opened when needed
        self._flights: deque[_Flight] = deque()  # batches in flight, in key order
        self._ranges_done = False   # this pass's last range is dispatched: land the flights, then end the pass
        self._pass_txns = [0, 0]   # this pass's batch transactions: begun, committed (see _nothing_else_wrote)
        # compute a fill job's expression once per row until a row shows that it can be NULL (see _fill)
        self.single_eval = True
        self.log = log.bind(job=job.name)

    def _set_status(self, status: str) -> None:
        assert self.state is not None
        self.state.status = status
        self.metrics.set_state(self.job.name, "paused" if self.operator_paused and status == STATUS_RUNNING
                               else status)

    # ------------------------------------------------------------------ start
    async def start(self, *, restart: bool = False) -> JobState:
        """Preflight, then load or create the checkpoint. Raises SpecChangedError on a changed spec."""
        try:
            return await self._with_retries(lambda: self._start(restart))
        except Stopped:
            raise JobFailed(f"job {self.job.name!r}: stopped before it could start") from None

    async def _start(self, restart: bool) -> JobState:
        self.prepared = p = await prepare(self.engine, self.job)
        problem = await self.engine.lock_timeout_problem()
        if problem:
            self.log.warning("lock_timeout_too_long", detail=problem)
        if self.engine.skip_locked and self.engine.dialect.skip_locked_clause is not None:
            why = await self.engine.lock_support()
            if why:
                self.log.warning("skip_locked_unavailable", detail=f"{why}: batches wait for rows the application "
                                 "holds, up to lock_timeout_s")
        await self._take_lease(LEASE_START_WAIT_S)
        await self.engine.ensure_state_table(self.state_table)
        state = await self.engine.read_state(self.state_table, self.job.name)
        fresh = JobState(job=self.job.name, fingerprint=p.fingerprint, status=STATUS_RUNNING,
                         started_at=now_iso(), updated_at=now_iso())
        if state is None:
            await self.engine.write_state(self.state_table, fresh, insert=True)
            state = fresh
            self.log.info("job_started", table=self.job.table, key=list(p.key), targets=list(p.exprs))
        elif restart or state.status == STATUS_PENDING:
            fresh.requests = state.requests  # operator requests outlive a restart (write_state keeps them)
            await self.engine.write_state(self.state_table, fresh)
            state = fresh
            self.log.info("job_restarted" if restart else "job_started", table=self.job.table, key=list(p.key),
                          targets=list(p.exprs))
        elif state.fingerprint != p.fingerprint:
            raise SpecChangedError(
                f"job {self.job.name!r}: its spec (table, key, where, targets or expressions) changed since its "
                f"checkpoint (fingerprint {state.fingerprint} -> {p.fingerprint}); rerun with --restart to start "
                "it over, or restore the old spec to resume")
        else:
            self.log.info("job_resumed", status=state.status, pass_no=state.pass_no, rows_done=state.rows_done,
                          last_key=list(state.last_key) if state.last_key else None)
        self.state = state
        self.workers_cap = await self._decide_workers(p)
        if self.configured_workers == 1 and self.lookahead is None and await self.engine.concurrent_reads():
            self.lookahead = Lookahead(self.engine, self.job.name)
        if self.job.on_error == "skip" and p.transform is not None:
            await self.engine.ensure_skipped_table(self.state_table)
        self.progress.reset(await self.engine.estimate_rows(self.job.table), state.pass_scanned)
        self.metrics.passes.labels(self.job.name).set(state.pass_no)
        self.metrics.batch_size.labels(self.job.name).set(self.sizer.size)
        self.metrics.rows_skipped_locked.labels(self.job.name)   # at 0 from the start, for rates and alerts
        self._set_status(state.status)
        return state

    async def _decide_workers(self, p: Prepared) -> int:
        """The most batches that may be in flight: WORKERS_MAX, or 1 where they cannot run side by side."""
        cap, why = await concurrency_limit(self.engine, p)
        if cap > 1:
            return cap
        if self.workers_wanted > 1:
            (self.log.debug if self.engine.name == "sqlite" else self.log.info)(
                "workers_limited", workers=1, configured=self.workers_wanted, detail=why)
        return 1

    @property
    def workers(self) -> int:
        """Batches that may be in flight now: one while the application is busy (see Throttle.busy)."""
        return 1 if self._app_busy() else self.configured_workers

    @property
    def configured_workers(self) -> int:
        return min(self.workers_wanted, self.workers_cap)

    def _app_busy(self) -> bool:
        busy = getattr(self.gate, "busy", None)
        return bool(busy()) if callable(busy) else False

    def retune_workers(self, wanted: int) -> None:
        """A new throttle.workers (operator `set`, SIGHUP): batches start up to it from the next one on; a
        smaller number lets the batches in flight finish, and idle workers' connections are closed."""
        self.workers_wanted = wanted

    # ------------------------------------------------------------------ lease
    @property
    def lease_name(self) -> str:
        return f"{self.state_table}/{self.job.name}"

    async def _take_lease(self, wait_s: float) -> None:
        """One daemon per job: the job's lease, held by the job's connection while it lives. Two daemons on
        one job would each write correct values, but their checkpoints and counts would interleave."""
        deadline = time.monotonic() + wait_s
        while not await self.engine.try_lease(self.lease_name):
            if time.monotonic() >= deadline or self.stop.is_set():
                holder = await self.engine.lease_holder(self.lease_name)
                self.log.error("lease_held", holder=holder)
                raise LeaseHeld(f"job {self.job.name!r} is being run by another backfilld (its lease is held by "
                                f"{holder or 'another session'}); nothing was written. Stop that one, or let it "
                                "finish; `backfilld status` shows its progress")
            await self._sleep(LEASE_RETRY_S)

    # ------------------------------------------------------------------ operator requests
    async def _poll_requests(self) -> None:
        """Apply pause/resume/set requests from the state table; wait here while paused by an operator."""
        paused_since: float | None = None
        while not self.stop.is_set():
            if time.monotonic() - self._requests_at >= REQUEST_POLL_S:
                self._requests_at = time.monotonic()
                saved = await self.engine.read_state(self.state_table, self.job.name)
                self._apply_requests(parse_requests(saved.requests if saved else None))
            if not self.operator_paused:
                break
            if paused_since is None:
                paused_since = time.monotonic()
                self.log.info("operator_paused", detail="backfilld resume CONFIG JOB to go on")
            self.metrics.throttled_seconds.labels(self.job.name, "operator").inc(REQUEST_POLL_S)
            await self._sleep(REQUEST_POLL_S)
        if paused_since is not None and not self.operator_paused:
            self.log.info("operator_resumed", paused_s=round(time.monotonic() - paused_since, 3))

    def _apply_requests(self, req: dict[str, Any]) -> None:
        paused = bool(req.get("paused"))
        if paused != self.operator_paused:
            self.operator_paused = paused
            self.metrics.operator_paused.labels(self.job.name).set(1 if paused else 0)
            self.metrics.throttled.labels(self.job.name, "operator").set(1 if paused else 0)
            if self.state is not None:
                self._set_status(self.state.status)
        settings = {k: v for k, v in (req.get("set") or {}).items() if k in LIVE_SETTINGS}
        changed = {k: v for k, v in settings.items() if self._applied.get(k) != v}
        if not changed:
            return
        self._applied.update(changed)
        if "batch_size" in changed:
            self.sizer.retune(size=int(changed["batch_size"]))
        if "target_batch_time_s" in changed:
            self.sizer.retune(target_s=float(changed["target_batch_time_s"]))
        if "workers" in changed:
            self.retune_workers(int(changed["workers"]))
        gate_settings = {k: float(v) for k, v in changed.items() if k in ("max_lag_s", "max_rows_per_s", "busy_share")}
        if gate_settings and isinstance(self.gate, Retunable):
            self.gate.retune_live(**gate_settings)
        self.log.info("settings_changed", source="operator", **changed)

    # ------------------------------------------------------------------ loop
    async def run(self, *, follow: bool = False, once: bool = False) -> JobState:
        """Run passes until a pass finds nothing to fill (or forever with follow). Returns the final state.

        With follow and once, a completed job runs one sweep pass and returns (the daemon takes turns).
        """
        assert self.state is not None and self.prepared is not None, "start() first"
        try:
            return await self._run(follow, once)
        finally:
            await self._drop_flights()
            await self._close_writers()      # connections are opened again when a later run needs them
            if self.lookahead is not None:
                await self.lookahead.close()

    async def _run(self, follow: bool, once: bool) -> JobState:
        st = self.state
        assert st is not None
        if st.status == STATUS_COMPLETED and not follow:
            self.log.info("job_already_completed", rows_done=st.rows_done, finished_at=st.finished_at)
            return st
        if st.status != STATUS_RUNNING and st.status != STATUS_COMPLETED:
            st.error = None
            self._set_status(STATUS_RUNNING)
            await self._save()
        pass_started = time.monotonic()
        writes_seen = await self._writes_token()
        while not self.stop.is_set():
            try:
                await self._with_retries(self._poll_requests)
                if self.stop.is_set():
                    break
                if self._may_dispatch():
                    await self.gate.wait(self.job.name, self.stop, len(self._flights))
                    if self.stop.is_set():
                        break
                going_on = await self._with_retries(self._step)
            except Stopped:
                break
            if going_on:
                continue
            # end of a pass
            took = time.monotonic() - pass_started
            self.log.info("pass_finished", pass_no=st.pass_no, rows=st.pass_rows, scanned=st.pass_scanned,
                          took_s=round(took, 3))
            if st.pass_rows > 0 and st.status != STATUS_COMPLETED and await self._nothing_else_wrote(writes_seen):
                # the pass ran from the table's first key and no other session wrote to the database meanwhile:
                # the sweep would find nothing (it is the pass that looks for rows others added or changed)
                self.log.info("sweep_skipped", pass_no=st.pass_no,
                              detail="no other connection wrote to the database during the pass")
                st.pass_rows = 0
            if st.pass_rows == 0 and st.status != STATUS_COMPLETED:
                st.finished_at = now_iso()
                self._set_status(STATUS_COMPLETED)
                self.log.info("job_completed", rows_done=st.rows_done, passes=st.pass_no)
            st.pass_no += 1
            st.last_key, st.pass_rows, st.pass_scanned = None, 0, 0
            self.metrics.passes.labels(self.job.name).set(st.pass_no)
            self.progress.reset(self.progress.estimate)
            try:
                await self._with_retries(self._save)
            except Stopped:
                break
            if st.status == STATUS_COMPLETED:
                if not follow or once:
                    return st
                await self._sleep(self.job.follow_interval_s)
            elif st.pass_no > 2:
                # a sweep found rows again (the application keeps writing rows without the targets, or holds
                # some locked): the next one waits as long as this one took (at least SWEEP_PAUSE_MIN_S), so
                # that sweeps take at most half of the time, however long the application goes on
                pause = min(SWEEP_PAUSE_MAX_S, max(SWEEP_PAUSE_MIN_S, took))
                self.log.info("sweep_paused", seconds=round(pause, 2), detail="the last sweep found rows to write")
                await self._sleep(pause)
            pass_started = time.monotonic()
            writes_seen = await self._writes_token()
        await self._land_all()
        if st.status == STATUS_RUNNING:
            self.log.info("job_stopped", rows_done=st.rows_done, pass_no=st.pass_no,
                          last_key=list(st.last_key) if st.last_key else None)
        return st

    async def _writes_token(self) -> object | None:
        """At a pass's start: the engine's token of other sessions' writes, if the pass may end the job without
        a sweep: it covers the whole table (starts at the first key), is a fill (a transform may leave rows
        for a later pass), and the job is not completed yet (a completed job's passes are its sweeps)."""
        self._pass_txns = [0, 0]   # the pass's batch transactions: begun, committed
        st, p = self.state, self.prepared
        if st is None or st.last_key is not None or st.status == STATUS_COMPLETED or p is None \
                or p.transform is not None:
            return None
        try:
            return await self.engine.writes_token(self.job.table)
        except EngineError:
            return None

    async def _nothing_else_wrote(self, token: object | None) -> bool:
        begun, committed = self._pass_txns
        if token is None or begun != committed:   # a rolled-back batch: the engine cannot account for it
            return False
        try:
            return await self.engine.nothing_else_wrote(self.job.table, token, committed)
        except EngineError:
            return False

    # ------------------------------------------------------------------ batches in flight
    def _may_dispatch(self) -> bool:
        return not self._ranges_done and len(self._flights) < self.workers

    async def _step(self) -> bool:
        """Start the next batch if a worker is free; when all are busy (or the pass has no range left), wait
        for the oldest batch and account for it. False: the pass is over (nothing in flight any more).

        With one worker this is: look up a range, write it, return it. With more, the next range is looked up
        and started while the earlier batches are written, each on its own connection; they commit in key
        order (see _commit_batch), so what has committed is always every range up to some key, and the
        checkpoint each commit writes is that key."""
        try:
            if self._may_dispatch():
                if await self._dispatch():
                    if len(self._flights) < self.workers:
                        return True
                else:
                    self._ranges_done = True
            if self._flights:
                await self._land()
                return True
        except Exception as exc:
            overlapped = len(self._flights) > 1
            await self._settle()
            if overlapped and isinstance(exc, RetryableError) and exc.kind in ("lock_timeout", "deadlock"):
                # batches in flight hold their rows until the one before them commits: a lock one needs from
                # the other (a trigger writing a shared row, say) is a wait no database can see, broken only by
                # the lock timeout. Do not risk it twice
                self._one_worker(f"batches in flight waited on each other's or the application's locks ({exc.kind})")
            raise
        self._ranges_done = False
        self._failures = 0
        return False

    async def _dispatch(self) -> bool:
        """Look up the range after the last one dispatched and start writing it; False if there is none."""
        st, p = self.state, self.prepared
        assert st is not None and p is not None
        after = self._flights[-1].hi if self._flights else st.last_key
        self.sizer.set_busy(self._app_busy())
        size = self.sizer.size
        t0 = time.monotonic()
        if st.pass_no > 1 and after is None and p.plan.any_pending is not None:
            # a sweep starts by asking whether any row needs a value at all: one read-only statement, which
            # on a table the fill left complete ends the pass at the cost of a scan, instead of a keyset walk
            # of lookups and no-op UPDATEs over every key (the walk runs when it finds one)
            if not await self.engine.fetch(p.plan.any_pending):
                self.log.debug("sweep_found_nothing", pass_no=st.pass_no, took_s=round(time.monotonic() - t0, 4))
                return False
        found = await self._next_range(p.plan, after, size)
        if found is None:
            return False
        hi, scanned = found
        if self.lookahead is not None:  # the next range is read on a second connection while this batch runs
            self.lookahead.start(p.plan, hi, size)
        writer = await self._free_writer()
        prev = self._flights[-1] if self._flights else None
        f = _Flight(after, hi, scanned, size, writer, t0)
        f.task = asyncio.create_task(self._fly(p, f, prev), name=f"batch:{self.job.name}")
        self._flights.append(f)
        return True

    async def _free_writer(self) -> Engine:
        """The connection for the next batch: the job's own with one worker; else one of the workers' own
        (the job's connection meanwhile looks up ranges and reads operator requests)."""
        busy = {id(f.writer) for f in self._flights}
        # the configured workers, not the one batch at a time of a busy application (workers): the workers'
        # connections stay open while the application is busy, for when it is not any more
        configured = self.configured_workers
        keep = configured if configured > 1 else 0   # one worker writes on the job's own connection
        if len(self._writers) > keep:   # fewer workers now: close the idle ones
            idle = [w for w in self._writers if id(w) not in busy]
            for w in idle[:len(self._writers) - keep]:
                self._writers.remove(w)
                with contextlib.suppress(Exception):
                    await w.close()
        if configured == 1:
            return self.engine
        for w in self._writers:
            if id(w) not in busy:
                return w
        w = self.engine.clone("writer")
        try:
            await w.connect()
            concurrent = await w.enable_concurrent_writes()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await w.close()
            if isinstance(exc, RetryableError):
                exc.on_writer = True
            raise
        if not concurrent:   # the server changed under the job (binlog_format = STATEMENT now)
            await w.close()
            self._one_worker("the server logs statements now (binlog_format = STATEMENT)")
            raise RetryableError("workers cannot write concurrently any more; going on with one")
        self._writers.append(w)
        return w

    def _one_worker(self, why: str) -> None:
        """From now on in this run, one batch at a time (on the job's own connection)."""
        if self.configured_workers > 1:
            self.log.info("workers_limited", workers=1, configured=self.workers_wanted, detail=why)
        self.workers_cap = 1

    async def _fly(self, p: Prepared, f: _Flight, prev: _Flight | None) -> tuple[int, int]:
        """A batch's task: write its range and checkpoint in one transaction; (rows written, rows pending)."""
        try:
            if p.transform is None:
                rows, pending = await self._fill(p, f, prev)
            else:
                rows, pending = await self._transform_range(p, f.lo, f.hi, f.scanned)
            f.committed = True
            f.took = time.monotonic() - f.started - f.waited
            return rows, pending
        except RetryableError as exc:
            if f.writer is not self.engine:
                exc.on_writer = True
            raise
        finally:
            f.ended.set()

    async def _land(self) -> None:
        """Wait for the oldest batch in flight and account for it (it committed)."""
        f = self._flights[0]
        assert f.task is not None
        rows, pending = await f.task
        self._flights.popleft()
        self._landed(f, rows, pending)

    def _landed(self, f: _Flight, rows: int, pending: int) -> None:
        """A batch committed: move the state in memory, the sizer, the throttle, metrics, the log, on_batch."""
        st = self.state
        assert st is not None
        self._failures = 0
        took = f.took
        st.last_key = f.hi
        st.rows_done += rows
        st.pass_rows += rows
        st.pass_scanned += f.scanned
        self.sizer.observe(f.scanned, took)
        self.gate.after_batch(st.job, rows, took)
        self.progress.add(f.scanned)
        m, j = self.metrics, self.job.name
        m.rows.labels(j).inc(rows)
        m.rows_scanned.labels(j).inc(f.scanned)
        m.batches.labels(j, "applied").inc()
        m.batch_duration.labels(j).observe(took)
        m.batch_size.labels(j).set(self.sizer.size)
        m.last_progress.labels(j).set(time.time())
        self.connected = True
        if pending:
            st.pass_rows += pending   # another pass follows: it writes the rows passed over or changed meanwhile
        if f.passed_over:
            m.rows_skipped_locked.labels(j).inc(pending)
            self.log.info("rows_skipped_locked", rows=pending, keys=[encode_key(k) for k in f.passed_over[:5]],
                          detail="the application held these rows locked; a later pass writes them")
        self.log.debug("batch_applied", rows=rows, scanned=f.scanned, size=f.size, took_s=round(took, 4),
                       pass_no=st.pass_no, **({"pending": pending} if pending else {}))
        if self.on_batch:
            self.on_batch(BatchResult(rows, f.scanned, took, f.size, st.pass_no, f.hi))

    async def _settle(self) -> None:
        """After a failure: wait until every batch in flight has ended. Those before the failed one committed
        and are accounted for; the failed one and those after it rolled back (each waits for the one before
        it to commit), so the checkpoint in the database is the last committed batch's last key."""
        flights, self._flights = list(self._flights), deque()
        self._ranges_done = False
        await asyncio.gather(*(f.task for f in flights if f.task is not None), return_exceptions=True)
        for f in flights:
            if not f.committed:
                break
            assert f.task is not None
            self._landed(f, *f.task.result())

    async def _land_all(self) -> None:
        """At a stop: let the batches in flight finish (each commits with its checkpoint) and account for them."""
        while self._flights:
            try:
                await self._land()
            except RetryableError as exc:   # stopping anyway; the checkpoint says what committed
                await self._settle()
                self.log.warning("batch_rolled_back_at_stop", error=str(exc))
                return
            except (EngineError, SchemaError) as exc:
                self.metrics.errors.labels(self.job.name, "fatal").inc()
                await self.fail(exc)

    async def _drop_flights(self) -> None:
        """Leaving run() with batches still in flight (cancelled, or an error outside _step): end them."""
        flights, self._flights = list(self._flights), deque()
        self._ranges_done = False
        for f in flights:
            if f.task is not None and not f.task.done():
                f.task.cancel()
        await asyncio.gather(*(f.task for f in flights if f.task is not None), return_exceptions=True)

    async def _close_writers(self) -> None:
        writers, self._writers = self._writers, []
        for w in writers:
            with contextlib.suppress(Exception):
                await w.close()

    async def _fill(self, p: Prepared, f: _Flight, prev: _Flight | None) -> tuple[int, int]:
        """Apply an SQL-expression batch and advance the checkpoint, in one transaction; rows written, and rows
        passed over because the application held them locked (left for a later pass).

        The guarded UPDATE computes the expression twice per row: once for `(expr) IS NOT NULL` (a row whose
        expression is NULL is left alone) and once for the value. Until a row shows that the expression can be
        NULL, a batch computes it once instead (fill jobs with one target). If such a row is in the batch, the
        batch is rolled back (nothing of it is ever committed) and redone guarded, as is every later batch of
        this run: what commits is exactly what the guarded form writes.
        """
        if self.single_eval and p.plan.fill_once_first is not None:
            try:
                return await self._commit_batch(True, p, f, prev)
            except _NullWritten:
                if self.single_eval:   # said once, by whichever batch in flight noticed first
                    self.single_eval = False
                    self.log.info("single_evaluation_off", detail="the expression is NULL on some rows; batches "
                                  "now compute it twice to leave those rows untouched",
                                  last_key=list(f.lo) if f.lo else None)
            except RetryableError:
                raise
            except EngineError as exc:   # the guarded form tells whether the error is the expression's own
                if self.single_eval:
                    self.single_eval = False
                    self.log.info("single_evaluation_off", detail="its statement failed; batches now run guarded",
                                  error=str(exc), last_key=list(f.lo) if f.lo else None)
        return await self._commit_batch(False, p, f, prev)

    async def _commit_batch(self, once: bool, p: Prepared, f: _Flight, prev: _Flight | None) -> tuple[int, int]:
        """One transaction on the batch's connection: its UPDATE, then (once the batch before it in key order
        has committed) the checkpoint. A NULL written by a single-evaluation batch raises _NullWritten inside
        it, and a batch before it that failed raises _Superseded: either way it rolls back.

        With SKIP LOCKED (plan.left_*), a batch that wrote fewer rows than its range has keys looks for rows of
        the range still needing a value: the application held them, and they count as pending, so that the
        pass is followed by another (the job completes only after a pass that passed over nothing)."""
        w = f.writer
        apply = w.apply_range_once if once else w.apply_range
        self._pass_txns[0] += 1
        async with w.transaction():
            rows = await apply(p.plan, f.lo, f.hi)
            if rows is None:
                raise _NullWritten
            left = await w.leftover(p.plan, f.lo, f.hi) if rows < f.scanned else []
            f.passed_over = left
            if prev is not None:
                t0 = time.monotonic()
                await prev.ended.wait()
                f.waited += time.monotonic() - t0
                if not prev.committed:
                    raise _Superseded
            await w.advance_state(self.state_table, self.job.name, f.hi, rows, f.scanned, len(left))
        self._pass_txns[1] += 1
        return int(rows), len(left)

    async def _next_range(self, plan: BatchPlan, after: tuple[Any, ...] | None, size: int
                          ) -> tuple[tuple[Any, ...], int] | None:
        """The next batch's last key and key count: the lookahead's, when it read this position, else read now."""
        if self.lookahead is not None:
            found = await self.lookahead.take(plan, after, size)
            if found is not None:
                return found
        return await self.engine.next_range(plan, after, size)

    async def _transform_range(self, p: Prepared, lo: Any, hi: tuple[Any, ...], scanned: int) -> tuple[int, int]:
        """Read key and sources, compute in Python, write back guarded in one statement with the checkpoint.

        Returns (rows written, rows left for a later pass because their sources or targets changed between
        the read and the write).
        """
        assert p.transform is not None and p.shape is not None and self.state is not None
        rows = await self.engine.read_range(p.plan, lo, hi)
        nk, ns, nt = len(p.key), len(p.shape.sources), len(p.shape.targets)
        outcomes = await p.transform.apply([r[nk:nk + ns] for r in rows])
        writes = []
        for row, out in zip(rows, outcomes, strict=True):
            if out.error is not None:
                key = row[:nk]
                self.metrics.errors.labels(self.job.name, "transform").inc()
                if self.job.on_error == "skip":
                    await self.engine.record_skipped(self.state_table, self.job.name, key, out.error)
                    self.log.warning("transform_skipped_row", key=list(key), error=out.error)
                    continue
                raise EngineError(f"transform {p.transform.ref} failed on key {encode_key(key)}: {out.error}")
            assert out.values is not None
            old = row[nk + ns:nk + ns + nt]
            if p.shape.overwrite:
                needed = any(n != o for n, o in zip(out.values, old, strict=True))
            else:
                needed = any(o is None and n is not None for n, o in zip(out.values, old, strict=True))
            if needed:
                writes.append((*row, *out.values))
        async with self.engine.transaction():
            written = await self.engine.write_rows(p.table, p.shape, writes)
            pending = len(writes) - written
            await self.engine.advance_state(self.state_table, self.job.name, hi, written, scanned, pending)
        if pending:
            self.log.info("rows_changed_meanwhile", rows=pending, detail="read again in a later pass")
        return written, pending

    async def _save(self) -> None:
        assert self.state is not None
        self.state.updated_at = now_iso()
        await self.engine.write_state(self.state_table, self.state)

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self.stop, seconds)

    async def _with_retries(self, op: Callable[[], Any]) -> Any:
        """Run op, retrying retryable errors with backoff. Attempts count failures in a row across calls too,
        until a batch commits: a loop step that only starts a batch succeeds before that batch has."""
        attempt = 0
        while True:
            try:
                return await op()
            except RetryableError as exc:
                self._failures += 1
                attempt = max(attempt + 1, self._failures)
                self.metrics.errors.labels(self.job.name, exc.kind).inc()
                if exc.reconnect and not exc.on_writer:
                    self.connected = False
                if attempt > self.job.max_retries:
                    await self.fail(exc, attempts=attempt)
                self.metrics.retries.labels(self.job.name, exc.kind).inc()
                self.metrics.batches.labels(self.job.name, "retried").inc()
                delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                self.log.warning("batch_retry", kind=exc.kind, attempt=attempt, delay_s=round(delay, 2),
                                 error=str(exc))
                await self._sleep(delay)
                if self.stop.is_set():
                    raise Stopped() from None
                await self._recover(exc)
            except (EngineError, SchemaError) as exc:
                self.metrics.errors.labels(self.job.name, "fatal").inc()
                await self.fail(exc)

    async def _recover(self, exc: RetryableError) -> None:
        """Reconnect if needed and reload the checkpoint: the database, not memory, says what committed."""
        await self._settle()   # batches still in flight end (and are counted) before the checkpoint is read
        try:
            if exc.reconnect:
                await self._close_writers()   # opened again for the next batches
                if not exc.on_writer:         # a worker's connection failed: the job's own (and lease) is fine
                    await self.engine.reconnect()
                    if self.state is not None:   # the job had its lease before; the old session took it along
                        await self._take_lease(LEASE_RETAKE_WAIT_S)
            if self.state is None:
                return
            saved = await self.engine.read_state(self.state_table, self.job.name)
        except EngineError as again:
            self.log.warning("recover_failed", error=str(again))
            return
        if saved is not None and self.state is not None:
            # update in place: the loop holds this object; status stays what this run decided
            for name in ("last_key", "pass_no", "rows_done", "pass_rows", "pass_scanned", "updated_at"):
                setattr(self.state, name, getattr(saved, name))

    async def fail(self, exc: Exception, attempts: int = 1) -> None:
        """Record the error in the state table (best effort) and stop the job."""
        await self._settle()   # batches still in flight end first: the state saved below counts them
        st = self.state
        message = str(exc)
        self.log.error("job_failed", error=message, attempts=attempts)
        self.metrics.batches.labels(self.job.name, "failed").inc()
        if st is not None:
            st.error = message[:4000]
            self._set_status(STATUS_FAILED)
            try:
                await self._save()
            except EngineError:
                try:
                    await self.engine.reconnect()
                    await self._save()
                except EngineError as again:
                    self.log.error("state_not_saved", error=str(again))
        raise JobFailed(f"job {self.job.name!r} failed after {attempts} attempt(s): {message}") from None


def parse_requests(text: str | None) -> dict[str, Any]:
    """The operator requests stored with a job; malformed text counts as none (and is logged)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        log.warning("requests_unreadable", text=text[:200])
        return {}
    return value if isinstance(value, dict) else {}
