"""Operator requests to a running job: pause, resume and live settings, read from the job's state row.

Owns: how often the row is read (REQUEST_POLL_S), the operator's pause (the job waits here, counted as throttled
time), and applying `set` requests once each. Delegates parsing and bounds to settings.py (parse_requests,
known, apply) and the row to the engine; tells the job through callbacks (its status label, its workers).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from backfilld import settings, trace
from backfilld.chunker import BatchSizer
from backfilld.engines.base import Engine
from backfilld.gate import Gate
from backfilld.metrics import Metrics
from backfilld.settings import Requests, parse_requests

# Operator requests (pause, resume, set) are read from the state table at most this often. Seconds:
# a primary-key read, cheap, but not worth a round trip on every batch of a fast job.
REQUEST_POLL_S = 0.5


class OperatorRequests:
    def __init__(self, engine: Engine, state_table: str, job: str, *, sizer: BatchSizer, gate: Gate,
                 metrics: Metrics, log: Any, stopped: Callable[[], bool], sleep: Callable[[float], Awaitable[None]],
                 paused_changed: Callable[[], None], workers: Callable[[int], None],
                 waiting: Callable[[], contextlib.AbstractContextManager[None]]) -> None:
        self.engine, self.state_table, self.job = engine, state_table, job
        self.sizer, self.gate, self.metrics, self.log = sizer, gate, metrics, log
        self.stopped, self.sleep, self.paused_changed, self.workers = stopped, sleep, paused_changed, workers
        self.waiting = waiting   # the operator's pause is a wait by choice, not a stall (health.Liveness)
        self.paused = False
        self._read_at = float("-inf")
        self.applied: dict[str, Any] = {}   # the operator's live settings in force (kept over a SIGHUP reload)
        self.rejected: tuple[str, ...] = ()   # what is wrong with the stored requests now (for /status)
        self._rejected: str | None = None     # the stored text last logged as rejected

    @trace.timed("operator request poll")
    async def poll(self) -> None:
        """Apply pause/resume/set requests from the state table; wait here while paused by an operator."""
        paused_since: float | None = None
        while not self.stopped():
            if time.monotonic() - self._read_at >= REQUEST_POLL_S:
                self._read_at = time.monotonic()
                saved = await self.engine.read_state(self.state_table, self.job)
                self.apply(self._checked(saved.requests if saved else None))
            if not self.paused:
                break
            if paused_since is None:
                paused_since = time.monotonic()
                self.log.info("operator_paused", detail="backfilld resume CONFIG JOB to go on")
            self.metrics.throttled_seconds.labels(self.job, "operator").inc(REQUEST_POLL_S)
            with self.waiting():
                await self.sleep(REQUEST_POLL_S)
        if paused_since is not None and not self.paused:
            self.log.info("operator_resumed", paused_s=round(time.monotonic() - paused_since, 3))

    def _checked(self, text: str | None) -> Requests:
        """The stored requests, checked; what is not valid is logged (once per text) and never applied."""
        req = parse_requests(text)
        if req.problems and text != self._rejected:
            self.log.error("requests_rejected", problems=list(req.problems),
                           detail="not applied; `backfilld set` / `pause` / `resume` write valid requests")
        self._rejected = text if req.problems else None
        self.rejected = req.problems
        return req

    def apply(self, req: Requests) -> None:
        paused = bool(req.paused) if req.paused_valid else self.paused   # a bad one changes nothing
        if paused != self.paused:
            self.paused = paused
            self.metrics.operator_paused.labels(self.job).set(1 if paused else 0)
            self.metrics.throttled.labels(self.job, "operator").set(1 if paused else 0)
            self.paused_changed()
        changed = {k: v for k, v in req.set.items() if self.applied.get(k) != v}
        if not changed:
            return
        self.applied.update(changed)
        settings.apply(changed, sizer=self.sizer, gate=self.gate, workers=self.workers, job=self.job)
        self.log.info("settings_changed", source="operator", **changed)
