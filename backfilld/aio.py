"""Small asyncio helpers that keep cancellation intact.

Python 3.11's asyncio.wait_for can swallow a cancellation that arrives as the awaited thing finishes
(CPython gh-86296); a probe loop cancelled at that instant would then run forever and its owner's shutdown
would hang. asyncio.timeout() has no such race, so every timed wait here goes through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until the event is set or the time is up; whether it was set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


async def wait_any(seconds: float, *events: asyncio.Event) -> None:
    """Wait until one of the events is set or the time is up."""
    if any(e.is_set() for e in events):
        return
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """Await with a time limit (TimeoutError when it runs out)."""
    async with asyncio.timeout(seconds):
        return await awaitable
