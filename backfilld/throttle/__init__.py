"""The throttle: probes observe on their own clocks, the decision reads their latest readings, jobs wait on it.

Owns: starting and stopping the probe tasks (each named, each with its own connection), the wait a job
makes before each batch (logged with its reason and duration), and the rows-per-second pacing.
A dead probe task (a bug, not a database error) fails the daemon rather than leaving it blind, and so does a probe
connection that TLS forbids (tls.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import socket
import time
from collections.abc import Callable

from backfilld import engines, logs, trace
from backfilld.aio import wait_any, wait_event
from backfilld.config import Config, ThrottleConfig, database_url
from backfilld.engines.base import AppActivity, Engine
from backfilld.engines.protocols import Replication, app_sessions, replication
from backfilld.errors import BackfilldError, TLSError
from backfilld.metrics import Metrics
from backfilld.throttle.decision import Decider, Decision, Signal
from backfilld.throttle.probes import (
    APP_PROBE_INTERVAL_S,
    AppLoad,
    AttachedReplicas,
    HeartbeatWriter,
    Load,
    Loop,
    ReplicaLag,
    cancel_all,
)

log = logs.get_logger("backfilld.throttle")

# How often a waiting job looks at the decision again. Seconds; the readings it looks at refresh every
# heartbeat_interval_s, so polling faster than that buys nothing.
POLL_MAX_S = 0.05


class Throttle:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = dt.datetime.now, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.cfg: ThrottleConfig = config.throttle
        self._overrides: dict[str, dict[str, float]] = {}   # per job: an operator's live settings (cfg_for)
        self.decider = Decider(self.cfg)
        self.clock, self.wall = clock, wall
        self.writer_id = socket.gethostname()[:128]
        self.replicas: dict[str, Signal] = {}       # configured, by label
        self.attached: dict[str, Signal] = {}       # found through pg_stat_replication
        self.load_signal: Signal | None = None
        self.app: AppLoad | None = None
        self._busy_next_at = 0.0   # pacing while the application is busy (busy_share)
        self.heartbeat: HeartbeatWriter | None = None
        self._loops: list[Loop] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._next_at = 0.0
        self._last_batch_s = 0.0   # the last batch's time on the primary: what the next one adds to lag
        self.current = Decision()
        self.max_lag_seen_s = 0.0
        self._shown: dict[str, tuple[str, ...]] = {}
        # set after every probe step: a paused job decides again at once on a new reading (its first one at
        # start, or the one that shows the replica caught up) instead of at its next poll
        self._readings = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    def _engine(self, section, where: str) -> Engine:  # noqa: ANN001
        # no fast_commit here: a heartbeat that waits in the WAL writer's buffer would read as replica lag
        db = self.config.database
        return engines.create(database_url(section, where, require_tls=db.require_tls),
                              lock_timeout_s=db.lock_timeout_s, connect_timeout_s=section.connect_timeout_s,
                              statement_timeout_s=section.statement_timeout_s,
                              idle_in_transaction_timeout_s=db.idle_in_transaction_timeout_s)

    def _replication(self, section, where: str) -> Replication:  # noqa: ANN001
        return replication(self._engine(section, where))

    async def start(self) -> None:
        cfg, now = self.cfg, self.clock()
        caps = engines.capabilities(self.config.engine)
        hb_table = self.config.state.heartbeat_table
        interval = cfg.heartbeat_interval_s
        want_heartbeat = caps.discovers_replicas or (self.config.replicas and cfg.lag_probe == "heartbeat")
        if want_heartbeat:
            configured = bool(self.config.replicas)
            self.heartbeat = HeartbeatWriter(self._replication(self.config.database, "database"), hb_table,
                                             self.writer_id, needed=lambda: configured or bool(self.attached))
            self._loops.append(Loop("heartbeat", self.heartbeat.engine, interval, self.heartbeat.step,
                                    self.heartbeat.on_error))
        for i, rc in enumerate(self.config.replicas):
            sig = self.replicas[rc.label] = Signal(f"replica {rc.label}", started_at=now)
            probe = ReplicaLag(self._replication(rc, f"replicas[{i}]"), sig, cfg.lag_probe, hb_table, self.writer_id)
            self._loops.append(Loop(f"replica:{rc.label}", probe.engine, interval, probe.step, sig.fail,
                                    ready=functools.partial(_has_reading, sig)))
        if caps.discovers_replicas and self.heartbeat is not None:
            att = AttachedReplicas(self._replication(self.config.database, "database"), self.heartbeat, self.attached,
                                   fail_closed=not self.config.replicas)
            self._loops.append(Loop("attached_replicas", att.engine, interval, att.step, att.on_error, ready=att.ready))
        if cfg.max_load > 0 and caps.load_metric is not None:
            self.load_signal = Signal("primary load", started_at=now)
            lp = Load(app_sessions(self._engine(self.config.database, "database")), self.load_signal)
            self._loops.append(Loop("load", lp.engine, interval, lp.step, self.load_signal.fail))
        if cfg.app_probe and caps.app_sessions:
            self.app = AppLoad(app_sessions(self._engine(self.config.database, "database")),
                               Signal("application", started_at=now), self._on_app_reading)
            self._loops.append(Loop("application", self.app.engine, max(interval, APP_PROBE_INTERVAL_S),
                                    self.app.step, self.app.signal.fail))
        for loop in self._loops:
            loop.after_step = self._readings.set
        self._tasks = [asyncio.create_task(loop.run(), name=f"probe:{loop.name}") for loop in self._loops]
        self.metrics.max_lag.set(cfg.max_lag_s)
        log.info("throttle_started", probes=[loop.name for loop in self._loops], max_lag_s=cfg.max_lag_s,
                 lag_probe=cfg.lag_probe)

    async def close(self) -> None:
        await cancel_all(self._tasks)
        for loop in self._loops:
            await loop.close()
        self._tasks, self._loops = [], []

    def retune(self, cfg: ThrottleConfig) -> None:
        """New limits (SIGHUP reload); the probes keep running on the clock they started with."""
        self.cfg = self.decider.cfg = cfg
        self.metrics.max_lag.set(cfg.max_lag_s)

    def retune_live(self, job: str | None, **settings: float) -> None:
        """An operator's `backfilld set` of max_lag_s, max_rows_per_s or busy_share: for that job alone (kept over
        a SIGHUP reload, which changes the [throttle] values it did not set), or for every job (job None)."""
        if job is None:
            self.retune(self.cfg.model_copy(update=settings))
        else:
            self._overrides.setdefault(job, {}).update(settings)

    def cfg_for(self, job: str) -> ThrottleConfig:
        """[throttle] as it applies to the job: the config's, with the job's live settings over it."""
        update: dict[str, float] = dict(self._overrides.get(job, {}))
        if not update:
            return self.cfg
        if "max_lag_s" in update:   # the hysteresis keeps its proportion: resume under the same share of the limit
            update["resume_lag_s"] = update["max_lag_s"] * self.cfg.resume_lag_s / self.cfg.max_lag_s
        return self.cfg.model_copy(update=update)

    def _on_app_reading(self, a: AppActivity) -> None:
        if a.waiting:
            self.metrics.app_lock_waits.inc(a.waiting)
        self.metrics.app_lock_wait_seconds.set(a.longest_wait_s)
        mean = self.app.mean_active() if self.app is not None else None
        self.metrics.app_active.set(mean or 0.0)
        self.metrics.app_busy.set(1 if self.busy() else 0)

    def busy(self) -> bool:
        """Whether the application on the primary is busy (throttle.busy_sessions), or cannot be seen: batches
        are then paced to busy_share of the time, one at a time, each aiming at busy_batch_time_s."""
        if self.app is None:
            return False
        mean = self.app.mean_active()
        if self.app.signal.error is not None or mean is None:
            return True
        return mean >= self.cfg.busy_sessions

    # ------------------------------------------------------------------ decision
    def lag_signals(self) -> list[Signal]:
        return [*self.replicas.values(), *self.attached.values()]

    def decide(self, in_flight: int = 0) -> Decision:
        """The decision for the next batch; in_flight: the job's batches written now, which a replica has yet
        to apply as well (each about as long as the last batch took on the primary)."""
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                if isinstance(exc, TLSError):   # says itself which URL and what to do
                    raise exc
                raise BackfilldError(f"throttle probe {t.get_name()} died: {exc!r}")
        signals = self.lag_signals()
        for s in signals:
            if s.value is not None and s.error is None and s.value != float("inf"):
                self.max_lag_seen_s = max(self.max_lag_seen_s, s.value)
        self.current = self.decider.decide(signals, self.load_signal, self.clock(), self.wall(),
                                           next_batch_s=self._last_batch_s * (1 + max(0, in_flight)),
                                           app=self.app.signal if self.app is not None else None)
        return self.current

    @trace.timed("throttle wait")
    async def wait(self, job: str, stop: asyncio.Event, in_flight: int = 0) -> None:
        """Return when the job's next batch may start (in_flight of its batches are being written now), or
        when stop is set. Pauses are logged with reason and duration."""
        paused_at: float | None = None
        reason = ""
        kinds: tuple[str, ...] = ()
        waited_for: tuple[str, ...] = ()   # the reasons of the wait that just ended
        last = self.clock()
        while not stop.is_set():
            # jobs take turns: the decision is the waiting job's, with its live settings as they are now (an
            # operator's `set` while the job waits here counts from the next look)
            cfg = self.decider.cfg = self.cfg_for(job)
            self.metrics.max_lag.set(cfg.max_lag_s)
            poll = min(POLL_MAX_S, cfg.heartbeat_interval_s)
            self._readings.clear()
            d = self.decide(in_flight)
            now = self.clock()
            rate_pace = self._next_at - now
            busy_pace = self._busy_next_at - now if self.busy() else 0.0
            pace = max(rate_pace, busy_pace)
            shown = d.kinds if d.throttled else (("rate",) if rate_pace > 0 and rate_pace >= busy_pace
                                                 else ("busy",) if busy_pace > 0 else ())
            self._show(job, shown)
            # the time since the last look goes to the reasons of the wait it ended (so the last wait of a
            # pause or a pace counts too)
            for kind in waited_for:
                self.metrics.throttled_seconds.labels(job, kind).inc(now - last)
            waited_for = shown
            if d.throttled:
                if paused_at is None:
                    paused_at = now
                    log.info("throttle_paused", job=job, reason=d.reason, kinds=list(d.kinds))
                elif d.kinds != kinds:  # numbers in the reason change every poll; log when its kind does
                    log.info("throttle_reason_changed", job=job, reason=d.reason, kinds=list(d.kinds))
                reason, kinds = d.reason, d.kinds
            elif pace <= 0:
                break
            last = now
            if d.throttled:   # until the next poll, or a new reading
                await wait_any(poll, stop, self._readings)
            else:             # pacing (max_rows_per_s, busy_share): until the next batch is paid for
                await wait_event(stop, min(poll, pace))
        self._show(job, ())
        if paused_at is not None:
            log.info("throttle_resumed", job=job, paused_s=round(self.clock() - paused_at, 3), reason=reason)

    def _show(self, job: str, kinds: tuple[str, ...]) -> None:
        if self._shown.get(job) != kinds:
            self._shown[job] = kinds
            self.metrics.set_throttled(job, kinds)

    def after_batch(self, job: str, rows: int, took_s: float) -> None:
        """Pace to max_rows_per_s: the next batch may start once the rows written so far are paid for; and while
        the application is busy, to busy_share of the time: after (1 - share) / share of the batch's time."""
        self._last_batch_s = took_s if rows > 0 else 0.0
        cfg = self.cfg_for(job)
        share = cfg.busy_share
        if share < 1 and self.busy():
            self._busy_next_at = max(self._busy_next_at, self.clock() + took_s * (1 - share) / share)
        if cfg.max_rows_per_s > 0 and rows > 0:
            self._next_at = max(self._next_at, self.clock()) + rows / cfg.max_rows_per_s


def _has_reading(sig: Signal) -> bool:
    """A probe loop is ready once its signal has had a reading."""
    return sig.ok_at is not None
