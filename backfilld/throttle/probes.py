"""Probes: each observes one thing on its own clock and leaves its latest reading in a Signal.

Owns: the heartbeat writer on the primary, lag readers on configured replicas (heartbeat or native),
replicas found streaming from a PostgreSQL primary, and the primary's load. Each probe has its own
connection; an error becomes the Signal's error (the decision fails closed on it), never a crash.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Awaitable, Callable

from backfilld import logs
from backfilld.aio import within
from backfilld.engines.base import AppActivity
from backfilld.engines.protocols import AppSessions, Driver, Replication
from backfilld.errors import EngineError, TLSError
from backfilld.throttle.decision import Signal

log = logs.get_logger("backfilld.throttle")

# Heartbeat samples (WAL position, time) kept for mapping a replica's replay position to a time. At the
# default 0.1 s interval this covers 10 minutes; a replica further behind reads as at least that far.
SAMPLES = 6000


# Until a probe has its first reading, it tries this often instead of every interval: the jobs wait for that
# reading (they never write blind), and at start it only waits for the first heartbeat to replicate.
FIRST_READING_RETRY_S = 0.02


class Loop:
    """Runs one probe step every interval; errors go to on_error, the loop goes on, but for a TLSError, which ends
    it (Throttle.decide raises it).

    `ready` says whether the probe has its first reading; until then a step is retried sooner."""

    def __init__(self, name: str, engine: Driver, interval_s: float, step: Callable[[], Awaitable[None]],
                 on_error: Callable[[str], None], ready: Callable[[], bool] = lambda: True) -> None:
        self.name, self.engine, self.interval_s, self.step, self.on_error = name, engine, interval_s, step, on_error
        self.ready = ready
        self.after_step: Callable[[], None] = lambda: None   # told after every step, read or failed
        self._logged_error: str | None = None

    async def run(self) -> None:
        connected = False
        while True:
            t0 = time.monotonic()
            try:
                if not connected:
                    await self.engine.reconnect()
                    connected = True
                await within(self.step(), max(2.0, 10 * self.interval_s))
                if self._logged_error:
                    log.info("probe_recovered", probe=self.name)
                    self._logged_error = None
            except TLSError:
                raise   # a connection that must not be made (or failed verification): the daemon stops with it
            except (TimeoutError, EngineError, OSError) as exc:
                msg = str(exc) or type(exc).__name__
                connected = False
                self.on_error(msg)
                if msg != self._logged_error:
                    log.warning("probe_failed", probe=self.name, error=msg)
                    self._logged_error = msg
            self.after_step()
            interval = self.interval_s if self.ready() else min(self.interval_s, FIRST_READING_RETRY_S)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0)))

    async def close(self) -> None:
        await self.engine.close()


class HeartbeatWriter:
    """Writes this host's clock into the heartbeat table on the primary every interval."""

    def __init__(self, engine: Replication, table: str, writer: str, needed: Callable[[], bool] = lambda: True) -> None:
        self.engine, self.table, self.writer = engine, table, writer
        self.samples: deque[tuple[int, float]] = deque(maxlen=SAMPLES)   # (WAL position, time.time())
        self.error: str | None = None
        self._ready = False
        # with no replica configured or streaming, a heartbeat is a commit (a flush) every interval for nothing
        self.needed = needed

    async def step(self) -> None:
        if not self.needed():
            return
        if not self._ready:
            await self.engine.execute(self.engine.heartbeat_ddl(self.table))
            self._ready = True
        ts = time.time()
        pos = await self.engine.write_heartbeat(self.table, self.writer, ts)
        self.error = None
        if pos is not None:
            self.samples.append((pos, ts))

    def on_error(self, msg: str) -> None:
        self.error = msg

    def time_at(self, pos: int) -> float | None:
        """The time of the newest heartbeat at or before a WAL position."""
        i = bisect.bisect_right(self.samples, (pos, float("inf")))
        if i == 0:
            return None
        return self.samples[i - 1][1]


class ReplicaLag:
    """Reads one configured replica's lag: heartbeat age (now minus the newest replicated heartbeat) or native."""

    def __init__(self, engine: Replication, signal: Signal, mode: str, table: str, writer: str) -> None:
        self.engine, self.signal, self.mode, self.table, self.writer = engine, signal, mode, table, writer
        self.since = time.time()

    async def step(self) -> None:
        if self.mode == "native":
            lag, detail = await self.engine.native_lag()
            self.signal.ok(lag, time.monotonic(), detail)
            return
        ts = await self.engine.read_heartbeat(self.table, self.writer)
        if ts is None or ts < self.since:  # an older row is an earlier run's heartbeat: not a reading
            raise EngineError("no heartbeat from this run has reached the replica yet")
        self.signal.ok(max(0.0, time.time() - ts), time.monotonic(), "heartbeat")


class AttachedReplicas:
    """PostgreSQL: replicas streaming from the primary, found in pg_stat_replication with no config entry.

    Lag is the age of the newest heartbeat whose WAL position the replica has replayed: measured by this
    process's clock alone, correct while replay is paused, and sub-second.
    """

    def __init__(self, engine: Replication, heartbeat: HeartbeatWriter, signals: dict[str, Signal],
                 fail_closed: bool = True) -> None:
        self.engine, self.heartbeat, self.signals = engine, heartbeat, signals
        # without [[replicas]] entries, discovery is the only view of the replicas: if it cannot read
        # pg_stat_replication, hold work back (fail closed) with a reason that says what to grant
        self.fail_closed = fail_closed

    async def step(self) -> None:
        now_m, now_w = time.monotonic(), time.time()
        seen = set()
        found = await self.engine.attached_replicas()
        self.signals.pop("(discovery)", None)
        for name, replayed in found:
            seen.add(name)
            sig = self.signals.setdefault(name, Signal(f"replica {name}", started_at=now_m))
            t = self.heartbeat.time_at(replayed)
            if t is None:
                if self.heartbeat.samples:
                    oldest = self.heartbeat.samples[0][1]
                    sig.ok(now_w - oldest, now_m, "behind every remembered heartbeat")
                else:
                    sig.fail("no heartbeat written yet")
            else:
                sig.ok(max(0.0, now_w - t), now_m, "heartbeat via pg_stat_replication")
        for name, sig in self.signals.items():
            if name not in seen:  # it was streaming and is gone: fail closed until it is back
                sig.fail("no longer streaming from the primary (pg_stat_replication)")

    def ready(self) -> bool:
        """Every replica found has had a lag reading."""
        return all(sig.ok_at is not None for sig in self.signals.values())

    def on_error(self, msg: str) -> None:
        if not self.signals and self.fail_closed:
            self.signals["(discovery)"] = Signal("replica discovery", started_at=time.monotonic())
        for sig in self.signals.values():
            sig.fail(msg)


class Load:
    def __init__(self, engine: AppSessions, signal: Signal) -> None:
        self.engine, self.signal = engine, signal

    async def step(self) -> None:
        value = await self.engine.load()
        detail = self.engine.capabilities.load_metric or "load"
        self.signal.ok(value, time.monotonic(), detail)


# The application probe looks this often, and judges "busy" on the mean over this window. Seconds.
APP_PROBE_INTERVAL_S = 0.25
APP_WINDOW_S = 2.0


class AppLoad:
    """The application on the primary: how many of its sessions run a statement (averaged over APP_WINDOW_S),
    and whether any waits for a lock a backfilld session holds. The signal's value is the longest such wait."""

    def __init__(self, engine: AppSessions, signal: Signal, on_reading: Callable[[AppActivity], None] = lambda a: None
                 ) -> None:
        self.engine, self.signal, self.on_reading = engine, signal, on_reading
        self.samples: deque[tuple[float, int]] = deque()
        self.last: AppActivity | None = None

    async def step(self) -> None:
        a = await self.engine.app_activity()
        now = time.monotonic()
        self.samples.append((now, a.active))
        while self.samples and self.samples[0][0] < now - APP_WINDOW_S:
            self.samples.popleft()
        self.last = a
        detail = (f"{a.waiting} application session(s) waiting for backfilld's locks" if a.waiting
                  else "no application session waits for backfilld")
        self.signal.ok(a.longest_wait_s, now, detail)
        self.on_reading(a)

    def mean_active(self) -> float | None:
        if not self.samples:
            return None
        return sum(n for _, n in self.samples) / len(self.samples)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=5)
        for t in pending:  # should not happen; never let a stuck probe hold the daemon's exit
            log.error("probe_did_not_stop", probe=t.get_name())
