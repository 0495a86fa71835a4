"""What a job asks before each batch (the throttle is one; OpenGate lets every batch go at once)."""

from __future__ import annotations

import asyncio
from typing import Protocol


class Gate(Protocol):
    """Wait until work may go on (or the stop event is set). in_flight: the job's batches being written at
    that moment (see Throttle.wait). after_batch: one batch committed, `rows` written in `took_s`."""

    async def wait(self, job: str, stop: asyncio.Event, in_flight: int = 0) -> None: ...

    def after_batch(self, job: str, rows: int, took_s: float) -> None: ...


class OpenGate:
    async def wait(self, job: str, stop: asyncio.Event, in_flight: int = 0) -> None:
        return None

    def after_batch(self, job: str, rows: int, took_s: float) -> None:
        return None


def app_busy(gate: object) -> bool:
    """Whether the gate says the application on the primary is busy (see Throttle.busy); False if it cannot."""
    busy = getattr(gate, "busy", None)
    return bool(busy()) if callable(busy) else False
