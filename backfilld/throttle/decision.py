"""The throttle decision, apart from observing: pure functions of the latest readings and a clock.

Owns: what counts as too far behind (hysteresis between max_lag_s and resume_lag_s), failing closed on
readings that are missing or stale, load, flag file and run windows; each reason in words a person can act on.
No I/O here: probes (probes.py) refresh readings on their own clock, and this module only reads them.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field

from backfilld.config import ThrottleConfig


@dataclass
class Signal:
    """The latest reading of one probe: a value, or the error that stopped it."""

    name: str               # "replica db2", "load"
    started_at: float       # monotonic time the probe started
    value: float | None = None
    ok_at: float | None = None      # monotonic time of the last good reading
    error: str | None = None        # the last error, cleared by a good reading
    detail: str = ""

    def ok(self, value: float, at: float, detail: str = "") -> None:
        self.value, self.ok_at, self.error, self.detail = value, at, None, detail

    def fail(self, error: str) -> None:
        self.error = error

    def unreadable_for(self, now: float) -> float | None:
        """Seconds the signal has been unreadable (None while its last reading is good)."""
        if self.error is None and self.ok_at is not None:
            return None
        return now - (self.ok_at if self.ok_at is not None else self.started_at)


@dataclass(frozen=True)
class Decision:
    reasons: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()   # bounded labels for metrics: lag, lag_unknown, load, flag_file, window, ...

    @property
    def throttled(self) -> bool:
        return bool(self.reasons)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def _fmt(v: float) -> str:
    return "stopped" if math.isinf(v) else f"{v:.2f} s"


@dataclass
class Decider:
    cfg: ThrottleConfig
    lag_throttled: bool = field(default=False)

    def lag_reasons(self, replicas: list[Signal], now: float, next_batch_s: float = 0.0) -> list[tuple[str, str]]:
        """(kind, reason) for each replica that holds work back, with hysteresis across calls.

        next_batch_s: what the next batch, and the job's batches still in flight, will likely add to a
        replica's lag (the last batch's time on the primary for each: a replica applies one in about as
        long). A batch starts only while lag + that stays within max_lag_s, so the lag a batch leaves behind
        stays within it too; never stricter than resume_lag_s, so a replica that caught up always lets a
        batch through."""
        out: list[tuple[str, str]] = []
        cfg = self.cfg
        start_below = max(cfg.resume_lag_s, cfg.max_lag_s - max(0.0, next_batch_s))
        limit = cfg.resume_lag_s if self.lag_throttled else start_below
        for r in replicas:
            down = r.unreadable_for(now)
            why = f": {r.error}" if r.error else ""
            if r.ok_at is None:  # never read: do not write blind
                if down is not None and down >= self.cfg.fail_closed_after_s:
                    out.append(("lag_unknown", f"{r.name} lag unreadable for {down:.1f} s{why}"))
                else:
                    out.append(("lag_unknown", f"{r.name}: waiting for the first lag reading{why}"))
                continue
            if down is not None and down >= self.cfg.fail_closed_after_s:
                out.append(("lag_unknown", f"{r.name} lag unreadable for {down:.1f} s{why}"))
                continue
            assert r.value is not None
            if r.value > limit or math.isinf(r.value):
                detail = f" ({r.detail})" if math.isinf(r.value) and r.detail else ""
                if r.value > cfg.max_lag_s:
                    cmp = f"> {cfg.max_lag_s:g} s"
                elif self.lag_throttled:
                    cmp = f"not yet under the resume level {cfg.resume_lag_s:g} s"
                else:
                    cmp = f"+ the next batch (~{next_batch_s:.2f} s) would pass {cfg.max_lag_s:g} s"
                out.append(("lag", f"{r.name} lag {_fmt(r.value)}{detail} {cmp}"))
        self.lag_throttled = bool(out)
        return out

    def load_reason(self, load: Signal | None, now: float) -> list[tuple[str, str]]:
        if load is None or self.cfg.max_load <= 0:
            return []
        down = load.unreadable_for(now)
        if down is not None:
            if load.ok_at is None or down >= self.cfg.fail_closed_after_s:
                return [("load_unknown", f"primary load unreadable for {down:.1f} s" +
                         (f": {load.error}" if load.error else ""))]
            return []
        assert load.value is not None
        if load.value > self.cfg.max_load:
            return [("load", f"primary load {load.value:g} > max_load {self.cfg.max_load:g} ({load.detail})")]
        return []

    def app_reason(self, app: Signal | None) -> list[tuple[str, str]]:
        """Pause while an application session has waited longer than max_app_wait_s for backfilld's locks (an
        unreadable probe does not pause: the job counts the application as busy instead, see Throttle.busy)."""
        if app is None or app.error is not None or app.value is None:
            return []
        if app.value > self.cfg.max_app_wait_s:
            return [("app_wait", f"an application session has waited {app.value:.2f} s for a lock a backfilld "
                                 f"session holds (> max_app_wait_s {self.cfg.max_app_wait_s:g} s; {app.detail})")]
        return []

    def local_reasons(self, wall: dt.datetime) -> list[tuple[str, str]]:
        out = []
        if self.cfg.flag_file and os.path.exists(self.cfg.flag_file):
            out.append(("flag_file", f"flag file {self.cfg.flag_file} exists"))
        if self.cfg.windows and not in_windows(self.cfg.windows, wall.time()):
            out.append(("window", f"outside the run windows {', '.join(self.cfg.windows)} "
                                  f"(local time {wall:%H:%M})"))
        return out

    def decide(self, replicas: list[Signal], load: Signal | None, now: float, wall: dt.datetime,
               next_batch_s: float = 0.0, app: Signal | None = None) -> Decision:
        pairs = (self.lag_reasons(replicas, now, next_batch_s) + self.load_reason(load, now)
                 + self.app_reason(app) + self.local_reasons(wall))
        return Decision(tuple(r for _, r in pairs), tuple(dict.fromkeys(k for k, _ in pairs)))


def in_windows(windows: list[str], t: dt.time) -> bool:
    minute = t.hour * 60 + t.minute
    for w in windows:
        start_s, end_s = w.split("-")
        start = int(start_s[:2]) * 60 + int(start_s[3:])
        end = int(end_s[:2]) * 60 + int(end_s[3:])
        if (start <= minute < end) if start < end else (minute >= start or minute < end):
            return True
    return False
