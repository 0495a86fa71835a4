"""Operator requests: pause, resume and live settings, stored with the job in the state table.

A running daemon reads them before its batches (job.JobRunner), so they work from any machine that can
reach the database, with any number of daemons, and outlive restarts; no port needs to be open.
"""

from __future__ import annotations

import json
from typing import Any

from backfilld.config import Config
from backfilld.daemon import open_engine
from backfilld.errors import StateError
from backfilld.settings import parse_requests


async def request(config: Config, job: str, *, paused: bool | None = None,
                  settings: dict[str, Any] | None = None) -> dict[str, Any]:
    config.job(job)  # an unknown job is a clear error, not a stray row
    async with open_engine(config) as engine:
        await engine.ensure_state_table(config.state.table)
        try:
            state = await engine.read_state(config.state.table, job)
            stored = state.requests if state else None
        except StateError:   # the row is unreadable: an operator must still be able to pause the job
            stored = await engine.read_requests(config.state.table, job)
        req = parse_requests(stored).as_dict()   # what was not valid is dropped, replaced by this request
        if paused is not None:
            req["paused"] = paused
        if settings:
            req["set"] = {**req.get("set", {}), **settings}
        await engine.write_requests(config.state.table, job, json.dumps(req, sort_keys=True))
    return req
