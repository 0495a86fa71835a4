"""Every metric declared once, the progress/ETA arithmetic, and the HTTP endpoints.

Owns: metric names and labels (backfill_job, replica, and small fixed sets such as outcome, reason, kind, state;
never a key, a URL or anything unbounded), the recent-window rate behind the ETA, and the HTTP server for
/metrics, /healthz, /readyz and /status (its socket bound at once, aiohttp answering from the first batch on).
Delegates nothing; reads what the job and throttle report.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from backfilld import logs
from backfilld.errors import ERROR_KINDS, RETRY_KINDS
from backfilld.status import metric_states

if TYPE_CHECKING:
    from aiohttp import web

log = logs.get_logger("backfilld.metrics")

JOB_STATES = metric_states()   # backfilld/status.py: the stored statuses, paused and stopped
# The per-job label. Not `job`: that is Prometheus' own target label (the scrape job), which a series of ours
# must not set (it would need honor_labels on every scrape config, or be renamed exported_job).
JOB_LABEL = "backfill_job"
BATCH_OUTCOMES = ("applied", "retried", "failed")   # backfilld_batches_total's outcome
THROTTLE_REASONS = ("lag", "lag_unknown", "load", "load_unknown", "app_wait", "busy", "flag_file", "window", "rate",
                    "operator")
# Window of wall time the ETA's rate is measured over, throttled time included. Seconds; long enough to
# smooth batch-to-batch noise, short enough to follow a change of throttle.
RATE_WINDOW_S = 60.0
# Batch durations, seconds: around the default 0.5 s target, up to the lock-wait and retry range.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=r)  # process_start_time_seconds, CPU, memory: restarts show on the dashboard
        self.rows = Counter("backfilld_rows_processed", "Rows whose target columns a batch wrote.", [JOB_LABEL],
                            registry=r)
        self.rows_scanned = Counter("backfilld_rows_scanned", "Keys visited by batches (written or not).", [JOB_LABEL],
                                    registry=r)
        self.batches = Counter("backfilld_batches", "Batches by outcome: applied, retried, failed.",
                               [JOB_LABEL, "outcome"], registry=r)
        self.batch_duration = Histogram("backfilld_batch_duration_seconds", "Time from range lookup to commit.",
                                        [JOB_LABEL], buckets=BATCH_BUCKETS, registry=r)
        self.batch_size = Gauge("backfilld_batch_size_rows", "Keys the next batch will visit.", [JOB_LABEL], registry=r)
        self.rows_remaining = Gauge("backfilld_rows_remaining", "Estimated keys left in the current pass.", [JOB_LABEL],
                                    registry=r)
        self.progress = Gauge("backfilld_progress_ratio", "Share of the current pass done, 0 to 1.", [JOB_LABEL],
                              registry=r)
        self.eta = Gauge("backfilld_eta_seconds", "Remaining keys over the rate of the last minute of wall time "
                         "(throttled time included); -1 while unknown.", [JOB_LABEL], registry=r)
        self.passes = Gauge("backfilld_pass_number", "The pass the job is in (1 fills, later ones sweep).", [JOB_LABEL],
                            registry=r)
        self.state = Gauge("backfilld_job_state", "1 for the job's current state.", [JOB_LABEL, "state"], registry=r)
        self.last_progress = Gauge("backfilld_last_progress_timestamp_seconds", "When the job last committed a batch.",
                                   [JOB_LABEL], registry=r)
        self.operator_paused = Gauge("backfilld_operator_paused", "1 while an operator has paused the job.",
                                     [JOB_LABEL], registry=r)
        self.retries = Counter("backfilld_retries", "Batch attempts retried, by error kind.", [JOB_LABEL, "kind"],
                               registry=r)
        self.errors = Counter("backfilld_errors", "Errors by kind (retried or not).", [JOB_LABEL, "kind"], registry=r)
        self.lag = Gauge("backfilld_replica_lag_seconds", "Latest lag reading per replica; +Inf when replication "
                         "is stopped, NaN while unreadable.", ["replica"], registry=r)
        self.max_lag = Gauge("backfilld_max_lag_seconds", "The configured lag limit (throttle.max_lag_s).", registry=r)
        self.throttled = Gauge("backfilld_throttled", "1 while the job waits for this reason.", [JOB_LABEL, "reason"],
                               registry=r)
        self.throttled_seconds = Counter("backfilld_throttled_seconds", "Seconds the job waited, by reason.",
                                         [JOB_LABEL, "reason"], registry=r)
        # what backfilld costs the application on the primary
        self.rows_skipped_locked = Counter(
            "backfilld_rows_skipped_locked", "Rows a batch passed over because the application held them locked "
            "(SKIP LOCKED); a later pass writes them.", [JOB_LABEL], registry=r)
        self.app_lock_waits = Counter(
            "backfilld_app_lock_waits", "Application sessions seen waiting for a lock a backfilld session holds, "
            "summed over the application probe's looks (every 0.25 s).", registry=r)
        self.app_lock_wait_seconds = Gauge(
            "backfilld_app_lock_wait_seconds", "The longest wait of an application session behind a backfilld "
            "session at the latest sample; 0 when none waits.", registry=r)
        self.app_active = Gauge("backfilld_app_active_sessions", "Application sessions running a statement on the "
                                "primary, mean of the last 2 s (backfilld's own excluded).", registry=r)
        self.app_busy = Gauge("backfilld_app_busy", "1 while the application counts as busy (throttle.busy_sessions): "
                              "batches are paced to throttle.busy_share of the time.", registry=r)
        self.up = Gauge("backfilld_up", "1 while the daemon runs.", registry=r)
        self.up.set(1)

    def set_state(self, job: str, state: str) -> None:
        for s in JOB_STATES:
            self.state.labels(job, s).set(1 if s == state else 0)

    def declare(self, job: str) -> None:
        """Every labelled counter of a job at 0 for its known label values, from the first scrape: rate() and
        increase() then see the first error or retry instead of a series that appears with it."""
        for kind in RETRY_KINDS:
            self.retries.labels(job, kind)
        for kind in ERROR_KINDS:
            self.errors.labels(job, kind)
        for outcome in BATCH_OUTCOMES:
            self.batches.labels(job, outcome)

    def set_throttled(self, job: str, kinds: tuple[str, ...]) -> None:
        for reason in THROTTLE_REASONS:
            self.throttled.labels(job, reason).set(1 if reason in kinds else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class Progress:
    """Progress of one job's pass and an ETA from the rate over a recent window of wall time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, window_s: float = RATE_WINDOW_S) -> None:
        self.clock, self.window_s = clock, window_s
        self.samples: deque[tuple[float, int]] = deque()
        self.estimate = 0
        self.scanned = 0
        self.started = clock()

    def reset(self, estimate: int, scanned: int = 0) -> None:
        self.estimate, self.scanned = estimate, scanned
        self.samples.clear()
        self.started = self.clock()
        self.samples.append((self.started, scanned))

    def add(self, scanned: int) -> None:
        self.scanned += scanned
        now = self.clock()
        self.samples.append((now, self.scanned))
        while len(self.samples) > 2 and self.samples[1][0] < now - self.window_s:
            self.samples.popleft()

    @property
    def remaining(self) -> int:
        return max(0, self.estimate - self.scanned)

    @property
    def ratio(self) -> float:
        if self.estimate <= 0:
            return 0.0
        return min(1.0, self.scanned / self.estimate)

    def rate(self) -> float | None:
        """Keys per second over the window, ending now: time with no progress (throttled) lowers it."""
        if not self.samples:
            return None
        now = self.clock()
        t0, s0 = self.samples[0]
        if now - t0 < 1e-6:
            return None
        return (self.scanned - s0) / (now - t0)

    def eta_s(self) -> float | None:
        rate = self.rate()
        if not rate:
            return None
        return self.remaining / rate


# ------------------------------------------------------------------------------------------ HTTP


# The longest the endpoints wait for a run's first batch before aiohttp is imported anyway (for a job that waits
# for the throttle from the start). Seconds; the first batch of an unthrottled job commits well within it.
SERVE_AFTER_S = 0.5
# HTTP connections open at once; one more is closed as soon as it is accepted (http_connection_refused), so
# that clients holding connections open cannot take the file descriptors the database connections need.
# Prometheus, a probe or two and an operator's curl use a handful.
HTTP_MAX_CONNECTIONS = 32
# Seconds a connection may sit idle (before its first request, or between requests) before it is closed.
HTTP_IDLE_S = 10.0
# Seconds a /metrics exposition is reused: a client looping on /metrics costs at most one render per period,
# so it cannot slow the batches (they share this event loop). Far below any scrape interval.
METRICS_REUSE_S = 0.5


class Server:
    """/metrics (Prometheus text), /healthz (alive: 503 while a job is stalled), /readyz (connected to the primary and
    making progress), /status (JSON).

    listen() binds and listens at once (a busy port is bad input, found before anything is written); aiohttp, a
    quarter of a second to import, answers from serve_soon() on: the daemon calls it at the first batch's commit,
    and a timer SERVE_AFTER_S later. Connections accepted before then wait, unread, and are handed to aiohttp.
    """

    def __init__(self, metrics: Metrics, status: Callable[[], dict[str, Any]], ready: Callable[[], tuple[bool, str]],
                 alive: Callable[[], str | None] = lambda: None) -> None:
        self.metrics, self.status, self.ready = metrics, status, ready
        self.alive = alive   # why the daemon is not making progress (a stalled job), or None
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._parked: set[asyncio.Transport] = set()
        self._serving: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._exposition: tuple[float, bytes] = (float("-inf"), b"")
        self.refused = 0   # connections closed at once for HTTP_MAX_CONNECTIONS
        self._open = 0     # connections accepted (parked or aiohttp's) and not closed yet

    async def listen(self, host: str, port: int) -> None:
        """Bind host:port as aiohttp's TCPSite would (OSError if it cannot) and accept connections from now on."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, host, port, reuse_address=True, backlog=128)
        sockets = self._server.sockets
        self.port = sockets[0].getsockname()[1] if sockets else port
        self._timer = loop.call_later(SERVE_AFTER_S, self.serve_soon)

    def serve_soon(self) -> None:
        """Start answering (idempotent): aiohttp is imported in a thread, so batches in flight go on meanwhile."""
        if self._serving is None and self._server is not None:
            self._serving = asyncio.create_task(self._serve(), name="http_server")
            self._serving.add_done_callback(_log_failure)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            self._server.close()
        if self._serving is not None:
            await self._serving   # its error, if any, is the run's
        for transport in self._parked:  # accepted while aiohttp was never started: the daemon is leaving
            transport.abort()
        self._parked.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def _protocol(self) -> asyncio.BaseProtocol:
        # counted from accept() to close: asyncio accepts a burst of connections before any connection_made
        handler = self._runner.server if self._runner is not None else None
        open_now = self._open
        if open_now >= HTTP_MAX_CONNECTIONS:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("http_connection_refused", open=open_now, refused=self.refused,
                            detail=f"at most {HTTP_MAX_CONNECTIONS} HTTP connections are served at once")
            return _Refused()
        self._open += 1
        if handler is not None:
            return _Counted(handler(), self._closed_one)
        return _Parked(self._parked, self._closed_one)

    def _closed_one(self) -> None:
        self._open -= 1

    async def _serve(self) -> None:
        import importlib

        await asyncio.to_thread(importlib.import_module, "aiohttp.web")
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=HTTP_IDLE_S)
        await runner.setup()
        self._runner = runner
        handler = runner.server
        assert handler is not None, "set up above"
        for transport in self._parked:
            if not transport.is_closing():
                protocol = _Counted(handler(), self._closed_one)   # counted since it was parked
                transport.set_protocol(protocol)
                protocol.connection_made(transport)
                transport.resume_reading()
        waited, self._parked = len(self._parked), set()
        log.debug("http_serving", port=self.port, connections_waited=waited)

    async def _metrics(self, _req: web.Request) -> web.Response:
        from aiohttp import web

        now = time.monotonic()
        at, body = self._exposition
        if now - at >= METRICS_REUSE_S:
            body = self.metrics.exposition()
            self._exposition = (now, body)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _req: web.Request) -> web.Response:
        from aiohttp import web

        stalled = self.alive()
        if stalled:
            return web.json_response({"status": "stalled", "reason": stalled}, status=503)
        return web.json_response({"status": "ok"})

    async def _readyz(self, _req: web.Request) -> web.Response:
        from aiohttp import web

        ok, why = self.ready()
        return web.json_response({"ready": ok, "reason": why}, status=200 if ok else 503)

    async def _status(self, _req: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response(self.status(), dumps=_dumps)


def _log_failure(task: asyncio.Task[None]) -> None:
    # at once, not only when close() re-raises it at the end of the run (a --follow daemon may run for days)
    if not task.cancelled() and task.exception() is not None:
        log.error("http_failed", error=repr(task.exception()), detail="the endpoints do not answer")


class _Parked(asyncio.Protocol):
    """A connection accepted before aiohttp answers: not read from until Server._serve hands it over."""

    def __init__(self, parked: set[asyncio.Transport], closed: Callable[[], None]) -> None:
        self.parked, self.closed = parked, closed
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        self.transport = transport
        self.parked.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:   # closed before it was handed over
        self.closed()
        if self.transport is not None:
            self.parked.discard(self.transport)


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, with its close counted (Server's HTTP_MAX_CONNECTIONS)."""

    def __init__(self, inner: asyncio.Protocol, closed: Callable[[], None]) -> None:
        self.inner, self.closed = inner, closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed()
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class _Refused(asyncio.Protocol):
    """A connection over HTTP_MAX_CONNECTIONS: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


def _dumps(obj: Any) -> str:
    import json
    import math

    def clean(v: Any) -> Any:
        if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), default=str)
