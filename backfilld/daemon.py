"""Lifecycle: open the engine, run the jobs, stop cleanly on a signal; and the read-only reports (plan, status).

Owns: signal handling (first SIGTERM/SIGINT finishes the batch in flight and keeps the checkpoint; a second
exits at once), the order jobs run in (one after another, so load on the primary stays that of one job),
and the exit code. Delegates the batch loop to job.JobRunner.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from backfilld import engines
from backfilld.chunker import BatchSizer
from backfilld.config import Config, JobConfig, database_url
from backfilld.engines.base import Engine, JobState, key_args
from backfilld.errors import BackfilldError, JobFailed
from backfilld.job import BatchResult, Gate, JobRunner, prepare

log = structlog.get_logger("backfilld.daemon")


@contextlib.asynccontextmanager
async def open_engine(config: Config) -> AsyncIterator[Engine]:
    db = config.database
    engine = engines.create(database_url(db), lock_timeout_s=db.lock_timeout_s, connect_timeout_s=db.connect_timeout_s)
    await engine.connect()
    try:
        yield engine
    finally:
        await engine.close()


def select_jobs(config: Config, names: list[str] | None) -> list[JobConfig]:
    if not names:
        if not config.jobs:
            raise BackfilldError("the config has no [[jobs]]; add one (see config/example.toml)")
        return list(config.jobs)
    return [config.job(n) for n in names]


def make_sizer(config: Config, job: JobConfig) -> BatchSizer:
    t = config.throttle
    return BatchSizer(target_s=t.target_batch_time_s, min_size=t.min_batch, max_size=t.max_batch,
                      size=job.batch_size)


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
            log.info("stop_requested", signal=sig.name, detail="finishing the batch in flight; signal again to "
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


async def run(config: Config, opts: RunOptions, *, stop: asyncio.Event | None = None, gate: Gate | None = None,
              on_batch: Callable[[JobConfig, BatchResult], None] | None = None,
              on_start: Callable[[JobConfig, JobState, int], None] | None = None) -> list[JobState]:
    """Run the selected jobs one after another. Raises JobFailed when one fails (the others still run)."""
    jobs = select_jobs(config, opts.jobs)
    stop = stop or asyncio.Event()
    results: list[JobState] = []
    failures: list[str] = []
    throttle = None
    if gate is None:
        from backfilld.throttle import Throttle

        gate = throttle = Throttle(config)
    async with open_engine(config) as engine, _started(throttle):
        for job in jobs:
            if stop.is_set():
                break
            runner = JobRunner(engine, job, state_table=config.state.table, sizer=make_sizer(config, job),
                               gate=gate, stop=stop,
                               on_batch=(lambda r, j=job: on_batch(j, r)) if on_batch else None)
            try:
                state = await runner.start(restart=opts.restart)
                if on_start:
                    on_start(job, state, await engine.estimate_rows(job.table))
                results.append(await runner.run(follow=opts.follow))
            except JobFailed as exc:
                failures.append(str(exc))
    if failures:
        raise JobFailed("; ".join(failures))
    return results


@contextlib.asynccontextmanager
async def _started(throttle: Any) -> AsyncIterator[None]:
    if throttle is None:
        yield
        return
    await throttle.start()
    try:
        yield
    finally:
        await throttle.close()


# ------------------------------------------------------------------------------------------ reports


async def plan(config: Config, names: list[str] | None = None) -> list[dict[str, Any]]:
    """What each job would do: statements, EXPLAIN, estimates. Writes nothing."""
    out = []
    async with open_engine(config) as engine:
        for job in select_jobs(config, names):
            p = await prepare(engine, job)
            estimate = await engine.estimate_rows(job.table)
            first = await engine.next_range(p.plan, None, job.batch_size)
            # explain a realistic batch: the first range's bounds, or placeholders' worth of the first key
            lo = first[0] if first else tuple(0 for _ in p.key)
            values = {"n": job.batch_size, **key_args("lo", lo), **key_args("hi", lo)}
            explains = {}
            warnings = []
            for label, stmt in (("lookup", p.plan.lookup_after), ("update", p.plan.update_after)):
                try:
                    lines = await engine.explain(stmt, values)
                except BackfilldError as exc:
                    lines = [f"(EXPLAIN failed: {exc})"]
                explains[label] = lines
                if not engine.explain_uses_index(lines):
                    warnings.append(f"the {label} statement would scan the whole table instead of a key range; "
                                    f"check that {list(p.key)} is indexed (on a tiny table the planner may "
                                    "prefer a scan anyway)")
            out.append({
                "job": job.name, "engine": engine.name, "table": job.table, "key": list(p.key),
                "targets": p.exprs, "where": job.where, "overwrite": job.overwrite,
                "estimated_rows": estimate, "batch_size": job.batch_size,
                "batches_expected": -(-estimate // job.batch_size) if estimate else 0,
                "fingerprint": p.fingerprint,
                "sql": {"lookup": p.plan.lookup_after.sql, "update": p.plan.update_after.sql},
                "explain": explains, "warnings": warnings,
            })
    return out


async def status(config: Config) -> list[dict[str, Any]]:
    async with open_engine(config) as engine:
        try:
            states = await engine.read_states(config.state.table)
        except BackfilldError:  # no state table yet: nothing has run
            states = []
    by_name = {s.job: s for s in states}
    rows = []
    for job in config.jobs:
        s = by_name.pop(job.name, None)
        rows.append(_state_dict(job.name, s))
    rows.extend(_state_dict(name, s) for name, s in by_name.items())
    return rows


def _state_dict(name: str, s: JobState | None) -> dict[str, Any]:
    if s is None:
        return {"job": name, "status": "not_started"}
    d = s.as_row()
    d["last_key"] = list(s.last_key) if s.last_key else None
    return {k: v for k, v in d.items() if v is not None}
