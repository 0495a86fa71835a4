"""Lifecycle: open the engine, run the jobs, stop cleanly on a signal; and the read-only reports (plan, status).

Owns: signal handling (first SIGTERM/SIGINT finishes the batches in flight and keeps the checkpoint; a second
exits at once), running the jobs one after another (so load on the primary stays that of one job) in their
order (jobfiles.run_order), a job's `after` (it starts only once each job it names completed, in this run or an
earlier one), and the exit code. Delegates the batch loop to job.JobRunner.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from backfilld import config as config_mod
from backfilld import engines, jobfiles, logs, settings
from backfilld.aio import wait_event
from backfilld.chunker import BatchSizer
from backfilld.config import Config, JobConfig, database_url
from backfilld.engines.base import Engine, JobState, key_args
from backfilld.errors import (
    BackfilldError,
    ConfigError,
    JobFailed,
    RetryableError,
    SchemaError,
    StateError,
    combined,
)
from backfilld.retry import Retrier, Stopped

# job, metrics and throttle (with prometheus_client) are imported where a command first needs them, so that
# `status`, `wait` and the like do not pay for what only `run`, `plan` and `verify` use
if TYPE_CHECKING:
    from backfilld.gate import Gate
    from backfilld.job import BatchResult, JobRunner
    from backfilld.metrics import Metrics, Server
    from backfilld.throttle import Throttle

log = logs.get_logger("backfilld.daemon")


@contextlib.asynccontextmanager
async def open_engine(config: Config) -> AsyncIterator[Engine]:
    db = config.database
    engine = engines.create(database_url(db, require_tls=db.require_tls), lock_timeout_s=db.lock_timeout_s,
                            connect_timeout_s=db.connect_timeout_s, fast_commit=db.fast_commit,
                            skip_locked=db.skip_locked,
                            statement_timeout_s=db.statement_timeout_s,
                            idle_in_transaction_timeout_s=db.idle_in_transaction_timeout_s)
    await engine.connect()
    try:
        yield engine
    finally:
        await engine.close()


def select_jobs(config: Config, names: list[str] | None) -> list[JobConfig]:
    """The jobs named (every job without names), in the order they run: as defined (or named), each moved
    after the jobs of the selection its `after` names."""
    if not names:
        if not config.jobs:
            raise ConfigError("the config has no [[jobs]]; add one (see config/example.toml), or name a jobs file "
                              "(jobs_files = [...] in the config, or --jobs FILE)")
        return jobfiles.run_order(config.jobs)
    return jobfiles.run_order([config.job(n) for n in dict.fromkeys(names)])


@contextlib.contextmanager
def naming_origin(job: JobConfig) -> Iterator[None]:
    """A bad-input error about a job defined in a jobs file names the file first (a site runs many extensions'
    jobs; the job's name alone does not say whose it is)."""
    try:
        yield
    except (ConfigError, SchemaError) as exc:
        origin = job.origin
        if not origin.jobs_file:
            raise
        where = origin.where() + (f" ({origin.shipped_by})" if origin.shipped_by else "")
        err = type(exc)(f"{where}: {exc}")
        err.problems = [f"{where}: {line}" for line in exc.problems]
        raise err from None


def make_sizer(config: Config, job: JobConfig) -> BatchSizer:
    t = config.throttle
    return BatchSizer(target_s=t.target_batch_time_s, min_size=t.min_batch, max_size=t.max_batch,
                      size=job.batch_size, busy_target_s=t.busy_batch_time_s if t.app_probe else None)


class SignalStop:
    """First SIGTERM/SIGINT sets the stop event; the second exits the process at once."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.count = 0

    def __enter__(self) -> SignalStop:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self.count += 1
        if self.count == 1:
            log.info("stop_requested", signal=sig.name, detail="finishing the batches in flight; signal again to "
                     "exit at once")
            self.stop.set()
        else:
            log.warning("exit_now", signal=sig.name)
            os._exit(128 + sig.value)


@dataclass
class RunOptions:
    jobs: list[str] | None = None
    restart: bool = False
    follow: bool = False
    config_path: str | None = None   # re-read on SIGHUP for new throttle settings


# How often gauges that change without a batch (lag, ETA while throttled) are refreshed. Seconds.
TICK_S = 1.0


class Daemon:
    """One run of the daemon: engine, throttle, HTTP endpoints, the jobs one after another."""

    def __init__(self, config: Config, opts: RunOptions, *, stop: asyncio.Event | None = None,
                 gate: Gate | None = None, on_batch: Callable[[JobConfig, BatchResult], None] | None = None,
                 on_start: Callable[[JobConfig, JobState, int], None] | None = None,
                 metrics: Metrics | None = None, record_unstarted: bool = False) -> None:
        """record_unstarted: a job whose preflight fails gets a failed state row with the error (farm mode:
        `status` reads each database's state rows), where a single run writes nothing on bad input."""
        from backfilld.metrics import Metrics
        from backfilld.throttle import Throttle

        self.config, self.opts = config, opts
        self.stop = stop or asyncio.Event()
        self.metrics = metrics or Metrics()
        self.throttle: Throttle | None = None
        if gate is None:
            gate = self.throttle = Throttle(config, metrics=self.metrics)
        self.gate = gate
        self.on_batch, self.on_start = on_batch, on_start
        self.record_unstarted = record_unstarted
        self.runners: dict[str, JobRunner] = {}
        self.current: JobRunner | None = None
        self.engine: Engine | None = None
        self.server: Server | None = None

    async def run(self) -> list[JobState]:
        jobs = select_jobs(self.config, self.opts.jobs)
        for job in jobs:  # every series a dashboard or alert reads exists from the start
            self.metrics.set_state(job.name, "pending")
            self.metrics.operator_paused.labels(job.name).set(0)
            self.metrics.declare(job.name)
        results: dict[str, JobState] = {}
        failures: list[str] = []
        if len(jobs) > 1 or any(j.after for j in jobs):
            log.info("run_order", jobs=[j.name for j in jobs], after={j.name: j.after for j in jobs if j.after})
        async with contextlib.AsyncExitStack() as stack:
            self._handle_sighup(stack)
            _log_loop_errors(asyncio.get_running_loop())
            self.engine = engine = await stack.enter_async_context(open_engine(self.config))
            try:   # every job checked before anything is written, the heartbeat table included
                for job in jobs:
                    await self._preflight(engine, job)
            except Stopped:
                log.info("daemon_stopped", detail="stopped during the preflight; nothing was written")
                return []
            if self.throttle is not None:
                await self.throttle.start()
                stack.push_async_callback(self.throttle.close)
            await self._serve(stack)
            ticker = asyncio.create_task(self._tick(), name="metrics_ticker")
            stack.push_async_callback(_cancel, ticker)
            await self._fill(engine, jobs, results, failures)
            if self.opts.follow:
                await self._follow(results, failures)
        if failures:
            raise JobFailed("; ".join(failures))
        return list(results.values())

    async def _preflight(self, engine: Engine, job: JobConfig) -> None:
        from backfilld.lease import record_unstarted
        from backfilld.preflight import prepare

        try:
            with naming_origin(job):
                await self._retrier(job, engine).run(functools.partial(prepare, engine, job))
        except BackfilldError as exc:
            if self.record_unstarted:
                await record_unstarted(engine, self.config.state.table, job.name, job.table, str(exc),
                                       log.bind(job=job.name))
            raise

    async def _fill(self, engine: Engine, jobs: list[JobConfig], results: dict[str, JobState],
                    failures: list[str]) -> None:
        """One job after another, so the primary carries one job's writes at a time; a job whose `after` is not
        done does not start (and counts as failed)."""
        from backfilld.job import JobRunner

        not_run: dict[str, str] = {}   # job -> how it ended in this run without completing
        for job in jobs:
            if self.stop.is_set():
                break
            waiting = await self._waits_for(engine, job, results, not_run)
            if waiting:
                log.error("job_not_started", job=job.name, after=job.after, reason=waiting)
                not_run[job.name] = "did not start"
                failures.append(f"job {job.name!r} did not start: {waiting}")
                continue
            runner = self.current = JobRunner(
                engine, job, state_table=self.config.state.table, sizer=make_sizer(self.config, job),
                gate=self.gate, stop=self.stop, metrics=self.metrics, workers=self.config.throttle.workers,
                on_batch=functools.partial(self._on_batch, job))
            self.runners[job.name] = runner
            try:
                state = await runner.start(restart=self.opts.restart)
                if self.on_start:
                    self.on_start(job, state, runner.progress.estimate)
                results[job.name] = await runner.run()
            except JobFailed as exc:
                not_run[job.name] = "failed"
                failures.append(str(exc))
            except Stopped:   # before the job could start (a lease wait, a retry): its checkpoint as it was
                break

    async def _follow(self, results: dict[str, JobState], failures: list[str]) -> None:
        """Completed jobs take turns sweeping until stopped (one connection, one statement at a time)."""
        following = [r for name, r in self.runners.items()
                     if name in results and results[name].status == "completed"]
        interval = min((r.job.follow_interval_s for r in following), default=0.0)
        while following and not self.stop.is_set():
            await wait_event(self.stop, interval)
            for r in list(following):
                if self.stop.is_set():
                    break
                try:
                    results[r.job.name] = await r.run(follow=True, once=True)
                except JobFailed as exc:
                    failures.append(str(exc))
                    following.remove(r)

    async def _waits_for(self, engine: Engine, job: JobConfig, results: dict[str, JobState],
                         not_run: dict[str, str]) -> str | None:
        """Why the job may not start yet (a job its `after` names has not completed), or None. A job of this run
        counts as it ended; any other as the state table has it (completed in an earlier run counts)."""
        for dep in job.after:
            if dep in not_run:
                return f"it runs after {dep!r}, which {not_run[dep]} in this run"
            if dep in results:
                status = results[dep].status
                if status != "completed":
                    return f"it runs after {dep!r}, which is {status}, not completed"
                continue
            try:
                state = await engine.read_state(self.config.state.table, dep)
            except StateError as exc:
                return f"it runs after {dep!r}, whose state row is unreadable ({exc})"
            except BackfilldError:   # no state table yet: nothing ever ran
                state = None
            if state is None or state.status != "completed":
                now = state.status if state else "not started"
                return (f"it runs after {dep!r}, which has not completed ({now} in {self.config.state.table}); run "
                        f"both together, or {dep!r} first")
        return None

    def _retrier(self, job: JobConfig, engine: Engine) -> Retrier:
        """Retries of a step before any job runs (the preflight), as a job's own: a lock held at start or a
        dropped connection is retried with backoff up to the job's max_retries; a stop ends the wait."""
        async def give_up(exc: Exception, attempts: int) -> NoReturn:
            raise exc

        async def sleep(seconds: float) -> None:
            await wait_event(self.stop, seconds)

        async def reconnect(exc: RetryableError) -> None:
            if exc.reconnect:
                await engine.reconnect()

        return Retrier(job.name, max_retries=job.max_retries, metrics=self.metrics, log=log.bind(job=job.name),
                       sleep=sleep, stopped=self.stop.is_set, recover=reconnect,
                       fail=give_up, disconnected=lambda: None)

    async def _serve(self, stack: contextlib.AsyncExitStack) -> None:
        address = self.config.metrics.address
        if address is None:
            return
        from backfilld.metrics import Server

        self.server = Server(self.metrics, self.status, self.ready, self.stalled)
        try:
            await self.server.listen(*address)
        except OSError as exc:
            raise ConfigError(f"metrics.listen: cannot listen on {self.config.metrics.listen} ({exc.strerror}); "
                              "choose a free host:port, or \"\" to turn the endpoints off") from None
        stack.push_async_callback(self.server.close)
        log.info("http_listening", listen=f"{address[0]}:{self.server.port}",
                 endpoints=["/metrics", "/healthz", "/readyz", "/status"])

    def _on_batch(self, job: JobConfig, result: BatchResult) -> None:
        if self.server is not None:
            self.server.serve_soon()   # the first batch is written: aiohttp's import no longer delays it
        if self.on_batch:
            self.on_batch(job, result)

    async def _tick(self) -> None:
        while True:
            self.refresh_gauges()
            await asyncio.sleep(TICK_S)

    def refresh_gauges(self) -> None:
        m = self.metrics
        if self.throttle is not None:
            for sig in self.throttle.lag_signals():
                name = sig.name.removeprefix("replica ")
                stale = sig.error is not None or sig.value is None
                m.lag.labels(name).set(float("nan") if stale or sig.value is None else sig.value)
        for name, r in self.runners.items():
            m.rows_remaining.labels(name).set(r.progress.remaining)
            m.progress.labels(name).set(r.progress.ratio if r.state and r.state.status != "completed" else 1.0)
            eta = r.progress.eta_s()
            m.eta.labels(name).set(-1 if eta is None else round(eta, 1))

    def status(self) -> dict[str, Any]:
        jobs = []
        for name, r in self.runners.items():
            st = r.state
            eta = r.progress.eta_s()
            jobs.append({"job": name, "status": st.status if st else "starting",
                         "operator_paused": r.operator_paused, "pass_no": st.pass_no if st else None,
                         "rows_done": st.rows_done if st else 0, "pass_scanned": st.pass_scanned if st else 0,
                         "rows_estimate": r.progress.estimate, "progress": round(r.progress.ratio, 4),
                         "eta_s": _rounded(eta), "batch_size": r.sizer.size,
                         "since_commit_s": _rounded(r.liveness.since_commit_s()),
                         "requests_rejected": list(r.requests.rejected) or None,
                         "error": st.error if st else None})
        throttle: dict[str, Any] = {}
        if self.throttle is not None:
            d = self.throttle.current
            throttle = {"throttled": d.throttled, "reason": d.reason or None,
                        "replicas": {s.name.removeprefix("replica "): {"lag_s": s.value, "error": s.error}
                                     for s in self.throttle.lag_signals()},
                        "max_lag_s": (self.throttle.cfg_for(self.current.job.name) if self.current
                                      else self.throttle.cfg).max_lag_s}
        ready, why = self.ready()
        return {"jobs": jobs, "throttle": throttle, "ready": ready, **({} if ready else {"not_ready": why})}

    def ready(self) -> tuple[bool, str]:
        if self.engine is None:
            return False, "not connected to the primary yet"
        if self.current is not None and not self.current.connected:
            return False, "the connection to the primary is down; retrying"
        stalled = self.stalled()
        if stalled:
            return False, stalled
        return True, "connected to the primary"

    def stalled(self) -> str | None:
        """Why the running job counts as stalled (health.Liveness), or None: /readyz and /healthz fail on it."""
        r = self.current
        if r is None or r.state is None or r.state.status != "running" or r.stopped:
            return None
        age, limit = r.liveness.stalled_s(), self.config.metrics.stall_after_s
        if age is None or age < limit:
            return None
        return (f"job {r.job.name!r} is running, neither throttled nor paused, and has committed nothing for "
                f"{age:.0f} s (stall_after_s = {limit:g}); its log says what it waits for")

    # ------------------------------------------------------------------ SIGHUP
    def _handle_sighup(self, stack: contextlib.AsyncExitStack) -> None:
        if not self.opts.config_path:
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)

    def reload(self) -> None:
        """Re-read the config file and apply its [throttle] section; an invalid file changes nothing."""
        assert self.opts.config_path
        try:
            new = config_mod.load(self.opts.config_path, read_jobs_files=False)   # its [throttle] is all we apply
        except ConfigError as exc:
            log.error("config_reload_failed", error=str(exc), detail="the running settings stay")
            return
        t = new.throttle
        if self.throttle is not None:
            self.throttle.retune(t)
        for r in self.runners.values():
            r.sizer.retune(min_size=t.min_batch, max_size=t.max_batch)
            r.sizer.busy_target_s = t.busy_batch_time_s if t.app_probe else None
            # the live settings of [throttle] as `backfilld set` applies them (the gate's: retuned above), but
            # for those an operator set on this job: they stay until the operator sets them again
            reloaded = {k: v for k, v in settings.of(t).items() if k not in r.requests.applied}
            settings.apply(reloaded, sizer=r.sizer, gate=None, workers=r.retune_workers)
            if r.requests.applied:
                log.info("operator_settings_kept", job=r.job.name, **r.requests.applied)
        log.info("config_reloaded", **t.model_dump(exclude={"windows"}), windows=t.windows)


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run(config: Config, opts: RunOptions, *, stop: asyncio.Event | None = None, gate: Gate | None = None,
              on_batch: Callable[[JobConfig, BatchResult], None] | None = None,
              on_start: Callable[[JobConfig, JobState, int], None] | None = None,
              metrics: Metrics | None = None) -> list[JobState]:
    """Run the selected jobs one after another. Raises JobFailed when one fails (the others still run)."""
    return await Daemon(config, opts, stop=stop, gate=gate, on_batch=on_batch, on_start=on_start,
                        metrics=metrics).run()


# ------------------------------------------------------------------------------------------ reports


async def plan(config: Config, names: list[str] | None = None) -> list[dict[str, Any]]:
    """What each job would do: statements, EXPLAIN, estimates, and its assessment (the privileges it needs and
    lacks, the indexes its sweep, verify and filter use, the replication log it writes). Writes nothing. Every
    job is checked: the problems of all of them are raised together."""
    out: list[dict[str, Any]] = []
    problems: list[BackfilldError] = []
    async with open_engine(config) as engine:
        jobs = select_jobs(config, names)
        for order, job in enumerate(jobs, start=1):
            try:   # every job's problems, not only the first job's
                with naming_origin(job):
                    out.append({**await _plan_job(engine, config, job), "order": order, "after": job.after,
                                "defined_in": job.origin.as_dict()})
            except (ConfigError, SchemaError) as exc:
                problems.append(exc)
    if problems:
        raise combined(problems)
    return out


async def _plan_job(engine: Engine, config: Config, job: JobConfig) -> dict[str, Any]:
    """One job's plan (see plan)."""
    from backfilld.assess import assess
    from backfilld.engines import triggers as trig
    from backfilld.preflight import concurrency_limit, prepare

    p = await prepare(engine, job)
    estimate = await engine.estimate_rows(job.table)
    first = await engine.next_range(p.plan, None, job.batch_size)
    # explain a realistic batch: the first range's bounds, or placeholders' worth of the first key
    lo = first[0] if first else tuple(0 for _ in p.key)
    values = {"n": job.batch_size, "skip": job.batch_size - 1, **key_args("lo", lo), **key_args("hi", lo)}
    explains = {}
    warnings = []
    for label, stmt in (("lookup", p.plan.skip_after), *((("lock", p.plan.lock_after),) if p.plan.lock_after
                                                         else ()),
                        ("update", p.plan.update_after or p.plan.read_after),
                        *((("lookup_missing", p.plan.missing_after),) if p.plan.missing_after else ())):
        try:
            lines = await engine.explain(stmt, values)
        except BackfilldError as exc:
            lines = [f"(EXPLAIN failed: {exc})"]
        explains[label] = lines
        if not engine.explain_uses_index(lines):
            warnings.append(f"the {label} statement would scan the whole table instead of a key range; "
                            f"check that {list(p.key)} is indexed (on a tiny table the planner may "
                            "prefer a scan anyway)")
    trig_info: dict[str, Any] = {"supported": p.transform is None}
    own = trig.trigger_names(job.table, job.name)
    fired = [t for t in p.table.update_triggers if t not in (own.insert, own.update)]
    if fired:
        warnings.append(f"UPDATE triggers on {job.table} fire for every row the job writes: "
                        f"{', '.join(fired)}; whatever they change besides the targets changes too "
                        "(backfilld itself writes only the targets)")
    locking = await engine.lock_support() if engine.skip_locked else "[database] skip_locked = false"
    if locking is not None and engine.dialect.skip_locked_clause is not None:
        warnings.append(f"batches wait for rows the application holds ({locking}): a batch can then "
                        "make the application wait behind its own lock waits, or be in a deadlock with it")
    keyed = [t for t in p.exprs if any(t in cols for cols in (p.table.primary_key, *p.table.unique_keys))]
    if keyed and locking is None:
        warnings.append(f"target(s) {', '.join(keyed)} are part of a unique index: a batch's uniqueness check "
                        "waits for an application insert of the same value not yet committed")
    problem = await engine.lock_timeout_problem()
    if problem:
        warnings.append(problem)
    if p.transform is None:

        trig_info["installed"] = await trig.installed(engine, job.table, job.name)
        trig_info["install_sql"] = trig.build_install_sql(
            engine.name, job.table, p.table.columns, list(p.key), p.exprs, job.where, job.overwrite,
            job.name, lookup=p.spec.lookup)
    # MariaDB: the batch's range UPDATE first, failing at once on a row held (then the lock read)
    batch_stmt = p.plan.fill_once_after if p.plan.keyed_fill_once else p.plan.update_after
    no_wait = None
    if p.plan.keyed_update is not None and batch_stmt is not None:
        no_wait = engine.no_wait(batch_stmt, p.key)
    assessment, assessed = await assess(engine, config, job, p, estimate, values)
    warnings.extend(assessed)
    return {
        "job": job.name, "engine": engine.name, "table": job.table, "key": list(p.key),
        "targets": p.exprs or {t: f"python transform {job.transform}" for t in job.targets},
        "where": job.where, "overwrite": job.overwrite, "triggers": trig_info,
        "estimated_rows": estimate, "batch_size": job.batch_size,
        "workers": min(config.throttle.workers, (await concurrency_limit(engine, p))[0]),
        "batches_expected": -(-estimate // job.batch_size) if estimate else 0,
        "fingerprint": p.fingerprint,
        "locking": "SKIP LOCKED" if locking is None else f"waits ({locking})",
        "sql": {"lookup": p.plan.skip_after.sql,
                **({"no_wait": no_wait.sql} if no_wait is not None else {}),
                **({"lock": p.plan.lock_after.sql} if p.plan.lock_after else {}),
                "lookup_tail": p.plan.lookup_after.sql,
                # what runs: with a separate lock read, the UPDATE of the keys it locked (shown for two)
                "update": (p.plan.keyed_update.stmt(engine.dialect, 2).sql if p.plan.keyed_update
                           else _sql(p.plan.update_after or p.plan.read_after)),
                **({"update_once": p.plan.keyed_fill_once.stmt(engine.dialect, 2).sql
                    if p.plan.keyed_fill_once else p.plan.fill_once_after.sql}
                   if p.plan.fill_once_after else {}),
                # lookup jobs: the batch's missing match values, and the INSERT of their lookup rows
                **({"lookup_missing": _sql(p.plan.missing_after),
                    "lookup_insert": p.plan.lookup_insert.stmt(engine.dialect, 2).sql}
                   if p.plan.lookup_insert is not None else {})},
        "explain": explains, "warnings": warnings,
        **assessment,   # "privileges", "indexes", "replication": see backfilld/assess.py
    }


async def status(config: Config) -> list[dict[str, Any]]:
    async with open_engine(config) as engine:
        try:
            states = await engine.read_state_rows(config.state.table)
        except BackfilldError:  # no state table yet: nothing has run
            states = []
    by_name = {str(s.job): s for s in states}
    rows = []
    for job in config.run_order():
        s = by_name.pop(job.name, None)
        rows.append({**_state_dict(job.name, s), **({"after": job.after} if job.after else {}),
                     **({"package": job.origin.shipped_by} if job.origin.shipped_by else {})})
    rows.extend(_state_dict(name, s) for name, s in by_name.items())
    return rows


# Seconds between two log lines of the same kind of event-loop error (an accept() failing for want of file
# descriptors repeats as fast as the loop turns).
LOOP_ERROR_EVERY_S = 10.0


def _log_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Errors asyncio reports outside any task (a failed accept(), a callback's exception) as one JSON log event,
    at most every LOOP_ERROR_EVERY_S per kind, instead of asyncio's multi-line tracebacks on stderr."""
    last: dict[str, float] = {}

    def handler(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "event loop error"))
        exc = context.get("exception")
        kind = f"{message}:{type(exc).__name__ if exc else ''}"
        now = time.monotonic()
        if now - last.get(kind, float("-inf")) >= LOOP_ERROR_EVERY_S:
            last[kind] = now
            log.error("event_loop_error", message=message, error=repr(exc) if exc else None)

    loop.set_exception_handler(handler)


def _state_dict(name: str, s: JobState | StateError | None) -> dict[str, Any]:
    if s is None:
        return {"job": name, "status": "not_started"}
    if isinstance(s, StateError):
        return {"job": name, "status": "unreadable", "error": str(s)}
    d = s.as_row()
    d["last_key"] = list(s.last_key) if s.last_key else None
    req = d.pop("requests", None)
    if req:
        from backfilld.settings import parse_requests

        parsed = parse_requests(req)
        d["requests"] = parsed.as_dict()
        if parsed.problems:
            d["requests_rejected"] = list(parsed.problems)
    return {k: v for k, v in d.items() if v is not None}


async def verify(config: Config, names: list[str] | None, *, fix: bool,
                 stop: asyncio.Event | None = None) -> list[Any]:
    """Verify the selected jobs in throttled batches and record each result in the state table."""
    from backfilld.lease import LEASE_START_WAIT_S, Lease
    from backfilld.throttle import Throttle
    from backfilld.verify import Verifier, record

    results = []
    throttle = Throttle(config)
    async with open_engine(config) as engine:
        await throttle.start()
        try:
            for job in select_jobs(config, names):
                if fix:   # --fix writes the targets: never beside a running job (the lease is the job's own)
                    await Lease(engine, job.table, job.name, stopped=lambda: False, sleep=asyncio.sleep,
                                log=log.bind(job=job.name)).take(LEASE_START_WAIT_S)
                with naming_origin(job):
                    result = await Verifier(engine, config, job, fix=fix, gate=throttle, stop=stop).run()
                await record(engine, config.state.table, result)
                log.info("verify_finished", **{k: v for k, v in result.as_dict().items() if not k.startswith("sample")})
                results.append(result)
        finally:
            await throttle.close()
    return results


async def wait_for(config: Config, job: str, until: str, timeout_s: float | None, poll_s: float = 1.0) -> JobState:
    """Return the job's state once it is completed (or verified since completing); BackfilldError on failure
    or timeout."""
    config.job(job)
    deadline = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
    async with open_engine(config) as engine:
        while True:
            try:
                state = await engine.read_state(config.state.table, job)
            except BackfilldError:
                state = None
            if state is not None:
                if state.status == "failed":
                    raise JobFailed(f"job {job!r} failed: {state.error}")
                done = state.status == "completed"
                if until == "verified":
                    done = done and state.verified_at is not None and (state.finished_at or "") <= state.verified_at
                if done:
                    return state
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                now = state.status if state else "not started"
                raise WaitTimeout(f"job {job!r} is not {until} after {timeout_s:g} s (status: {now})")
            await asyncio.sleep(poll_s)


class WaitTimeout(BackfilldError):
    """The job did not reach the state in time."""


def trigger_job(config: Config, job_name: str) -> JobConfig:
    """The job sync triggers are for; ConfigError for an unknown one, or one with a Python transform."""
    job = config.job(job_name)
    if job.transform:
        raise ConfigError(f"job {job_name!r} uses a Python transform; sync triggers need a [jobs.set] SQL expression "
                          "job (run it with --follow to keep catching rows old code writes)")
    return job


async def triggers(config: Config, job_name: str, action: str) -> list[str]:
    """Install or remove a SQL-expression or lookup job's sync triggers; the statements run."""
    from backfilld.engines import triggers as trig
    from backfilld.preflight import prepare

    job = trigger_job(config, job_name)
    async with open_engine(config) as engine:
        if action == "remove":
            return await trig.remove(engine, job.table, job.name)
        with naming_origin(job):
            p = await prepare(engine, job)
        return await trig.install(engine, job.table, list(p.key), p.exprs, job.where, job.overwrite, job.name,
                                  lookup=p.spec.lookup)


def _sql(stmt: Any) -> str:
    assert stmt is not None, "a plan has an update or a read statement"
    return str(stmt.sql)
