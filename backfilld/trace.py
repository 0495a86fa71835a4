"""Timing hooks of the batch loop, for benchmarks (benchmarks/bench_backfill.py --breakdown): off unless a sink
is installed, and then each decorated step reports its duration, and each connection a job opens reports
itself (so that a benchmark can tell the job's round trips from the throttle probes').

Owns nothing of a job's behaviour: with no sink, a decorated call costs one global lookup.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Sink(Protocol):
    def span(self, name: str, seconds: float) -> None:
        """A step named `name` took `seconds`."""

    def connection(self, engine: Any, role: str) -> None:
        """A job's connection: "job" (its own) or "writer" (a worker's)."""


_sink: Sink | None = None


def install(sink: Sink | None) -> None:
    """Report to `sink` from now on (None: stop reporting)."""
    global _sink
    _sink = sink


def connection(engine: Any, role: str) -> None:
    if _sink is not None:
        _sink.connection(engine, role)


Async = Callable[P, Coroutine[Any, Any, T]]


def timed(name: str) -> Callable[[Async[P, T]], Async[P, T]]:
    """Decorate an async step of the batch loop: its duration goes to the sink as `name`."""
    def wrap(fn: Async[P, T]) -> Async[P, T]:
        @functools.wraps(fn)
        async def timed_call(*args: P.args, **kwargs: P.kwargs) -> T:
            sink = _sink
            if sink is None:
                return await fn(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                sink.span(name, time.perf_counter() - t0)
        return timed_call
    return wrap
