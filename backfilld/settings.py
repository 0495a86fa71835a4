"""Live settings: what an operator may change on a running job (`backfilld set`, SIGHUP), declared once.

Owns: each live setting's name, type, bounds and what it retunes. config.py takes its field bounds from here,
control.py parses `set key=value` with parse(), the job applies stored requests with apply(), and the daemon's
SIGHUP reload applies the reloaded config's values with apply() too. Imports nothing of backfilld's but
models.Bound (for the config's bounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as field_
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from backfilld.models import Bound

# throttle.workers' upper bound (the config file's and `backfilld set`'s)
WORKERS_MAX = 16


@dataclass(frozen=True)
class LiveSetting:
    name: str
    type: type[int] | type[float]
    lo: float
    hi: float
    lo_open: bool     # the value must be above lo, not lo itself
    applies_to: Literal["batch_size", "batch_time", "workers", "gate"]   # see apply()

    def field(self) -> Bound:
        """The bounds of the config key."""
        from backfilld.models import Bound

        return Bound(gt=self.lo if self.lo_open else None, ge=None if self.lo_open else self.lo,
                     le=self.hi if math.isfinite(self.hi) else None)

    def parse(self, raw: str) -> int | float:
        """A value from `set key=value`; ValueError saying what is wrong."""
        try:
            value = self.type(raw.strip())
        except ValueError:
            raise ValueError(f"{self.name}: {raw!r} is not {self._kind()}") from None
        return self._bounded(value)

    def check(self, stored: object) -> int | float:
        """A value read back from a stored request (JSON: a number, or text as `set` would take it); ValueError
        saying what is wrong."""
        if isinstance(stored, str):
            return self.parse(stored)
        if isinstance(stored, bool) or not isinstance(stored, (int, float)) \
                or (self.type is int and not float(stored).is_integer()):
            shown = repr(stored) if len(repr(stored)) <= 40 else repr(stored)[:37] + "..."
            raise ValueError(f"{self.name}: {shown} is not {self._kind()}")
        return self._bounded(self.type(stored))

    def _kind(self) -> str:
        return "a whole number" if self.type is int else "a number"

    def _bounded(self, value: int | float) -> int | float:
        low_ok = value > self.lo if self.lo_open else value >= self.lo
        if math.isnan(value) or not low_ok or value > self.hi:
            low = f"above {self.lo:g}" if self.lo_open else f"{self.lo:g}"
            raise ValueError(f"{self.name}: {value} is out of range ({low} to {self.hi:g})")
        return value


def _declare(*settings: LiveSetting) -> dict[str, LiveSetting]:
    return {s.name: s for s in settings}


LIVE: dict[str, LiveSetting] = _declare(
    LiveSetting("batch_size", int, 1, 1_000_000, False, "batch_size"),
    LiveSetting("target_batch_time_s", float, 0.01, 60, True, "batch_time"),
    LiveSetting("max_lag_s", float, 0, 3600, True, "gate"),
    LiveSetting("max_rows_per_s", float, 0, math.inf, False, "gate"),
    LiveSetting("workers", int, 1, WORKERS_MAX, False, "workers"),
    LiveSetting("busy_share", float, 0, 1, True, "gate"),
)


def field(name: str) -> Bound:
    return LIVE[name].field()


def parse(items: list[str]) -> dict[str, int | float]:
    """`set key=value ...` as settings; ValueError naming the first wrong item."""
    out: dict[str, int | float] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{item!r}: write key=value, e.g. batch_size=500")
        if key not in LIVE:
            raise ValueError(f"{key!r} cannot be set live; use one of {', '.join(LIVE)}")
        out[key] = LIVE[key].parse(raw)
    return out


def of(section: object) -> dict[str, Any]:
    """The live settings a config section holds (e.g. [throttle]'s), by name."""
    return {name: getattr(section, name) for name in LIVE if hasattr(section, name)}


class Sizer(Protocol):
    def retune(self, *, target_s: float | None = None, min_size: int | None = None, max_size: int | None = None,
               size: int | None = None) -> None: ...


def apply(changed: Mapping[str, Any], *, sizer: Sizer, gate: object, workers: Callable[[int], None],
          job: str | None = None) -> None:
    """Retune what each changed setting applies to: the batch sizer, the number of workers, the gate (when it
    is Retunable, for the named job alone; the open gate of a daemon without a throttle has nothing to
    retune)."""
    gate_settings: dict[str, float] = {}
    for name, value in changed.items():
        where = LIVE[name].applies_to
        if where == "batch_size":
            sizer.retune(size=int(value))
        elif where == "batch_time":
            sizer.retune(target_s=float(value))
        elif where == "workers":
            workers(int(value))
        else:
            gate_settings[name] = float(value)
    retune = getattr(gate, "retune_live", None)
    if gate_settings and callable(retune):
        retune(job, **gate_settings)


@dataclass(frozen=True)
class Requests:
    """Operator requests stored with a job, checked like `backfilld set` input: what is valid, and what was not
    (each problem named; never applied)."""

    paused: bool | None = None           # None: not asked (or not valid: see problems)
    paused_valid: bool = True            # False: a "paused" was stored, but not true or false
    set: Mapping[str, int | float] = field_(default_factory=dict)
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The valid requests as stored: {"paused": bool, "set": {setting: value}}."""
        out: dict[str, Any] = {}
        if self.paused is not None:
            out["paused"] = self.paused
        if self.set:
            out["set"] = dict(self.set)
        return out


def parse_requests(text: str | None) -> Requests:
    """The operator requests stored with a job ({"paused": bool, "set": {setting: value}}), each part checked:
    a part that is not valid is left out and named in problems. Settings this backfilld does not know (a newer
    one's) are left out without a problem."""
    if not text:
        return Requests()
    import json  # here, not at the top: cli imports this module for `set`'s help, --version included

    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return Requests(paused_valid=False, problems=("requests: not JSON",))
    if not isinstance(value, dict):   # unreadable as a whole: a pause in force stays, as for a bad "paused"
        return Requests(paused_valid=False, problems=("requests: not a JSON object",))
    problems: list[str] = []
    paused, paused_valid = value.get("paused"), True
    if paused is not None and not isinstance(paused, bool):
        paused_valid = False
        problems.append(f"paused: {str(paused)[:40]!r} is not true or false (a JSON boolean)")
        paused = None
    chosen: dict[str, int | float] = {}
    stored = value.get("set")
    if stored is not None and not isinstance(stored, dict):
        problems.append("set: not a JSON object of setting: value")
    for name, raw in (stored.items() if isinstance(stored, dict) else ()):
        if name not in LIVE:
            continue
        try:
            chosen[name] = LIVE[name].check(raw)
        except ValueError as exc:
            problems.append(str(exc))
    return Requests(paused=paused, paused_valid=paused_valid, set=chosen, problems=tuple(problems))
