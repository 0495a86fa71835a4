"""Operator requests: pause, resume and live settings, stored with the job in the state table.

A running daemon reads them before its batches (job.JobRunner), so they work from any machine that can
reach the database, with any number of daemons, and outlive restarts; no port needs to be open.
"""

from __future__ import annotations

import json
import math
from typing import Any

from backfilld.config import Config
from backfilld.daemon import open_engine
from backfilld.job import LIVE_SETTINGS, WORKERS_MAX, parse_requests

# Bounds for live settings: (lowest, highest), the same as the config file allows.
_BOUNDS: dict[str, tuple[float, float]] = {"batch_size": (1, 1_000_000), "target_batch_time_s": (0.01, 60),
                                           "max_lag_s": (0.001, 3600), "max_rows_per_s": (0, math.inf),
                                           "workers": (1, WORKERS_MAX), "busy_share": (0.01, 1)}


def parse_settings(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{item!r}: write key=value, e.g. batch_size=500")
        if key not in LIVE_SETTINGS:
            raise ValueError(f"{key!r} cannot be set live; use one of {', '.join(LIVE_SETTINGS)}")
        try:
            value = LIVE_SETTINGS[key](raw.strip())
        except ValueError:
            kind = "a whole number" if LIVE_SETTINGS[key] is int else "a number"
            raise ValueError(f"{key}: {raw!r} is not {kind}") from None
        lo, hi = _BOUNDS[key]
        if not lo <= value <= hi or (isinstance(value, float) and math.isnan(value)):
            raise ValueError(f"{key}: {value} is out of range ({lo:g} to {hi:g})")
        out[key] = value
    return out


async def request(config: Config, job: str, *, paused: bool | None = None,
                  settings: dict[str, Any] | None = None) -> dict[str, Any]:
    config.job(job)  # an unknown job is a clear error, not a stray row
    async with open_engine(config) as engine:
        await engine.ensure_state_table(config.state.table)
        state = await engine.read_state(config.state.table, job)
        req = parse_requests(state.requests if state else None)
        if paused is not None:
            req["paused"] = paused
        if settings:
            req["set"] = {**req.get("set", {}), **settings}
        await engine.write_requests(config.state.table, job, json.dumps(req, sort_keys=True))
    return req
