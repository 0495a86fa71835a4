"""Retries: which errors are worth another try, how long to wait before it, and when to give up.

Owns: the backoff (0.2 s doubling to 30 s, with jitter, so that many daemons retrying against one recovering
server do not retry in step), the count of failures in a row (across calls too, until a batch commits), and the
metrics and log line of each retry. Delegates what happens between attempts (settle the batches in flight,
reconnect, reload the checkpoint) and what giving up means (record the error, stop the job) to its caller.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from backfilld.errors import EngineError, RetryableError, SchemaError, StateError

if TYPE_CHECKING:
    from backfilld.metrics import Metrics

BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 30.0

T = TypeVar("T")


class Stopped(Exception):
    """A stop was requested while a batch waited to be retried."""


def backoff_s(attempt: int) -> float:
    """The wait before attempt `attempt` + 1: BACKOFF_FIRST_S doubling up to BACKOFF_MAX_S, times 0.5-1.0."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


class Retrier:
    def __init__(self, job: str, *, max_retries: int, metrics: Metrics, log: Any,
                 sleep: Callable[[float], Awaitable[None]], stopped: Callable[[], bool],
                 recover: Callable[[RetryableError], Awaitable[None]],
                 fail: Callable[[Exception, int], Awaitable[NoReturn]],
                 disconnected: Callable[[], None]) -> None:
        self.job, self.max_retries, self.metrics, self.log = job, max_retries, metrics, log
        self.sleep, self.stopped, self.recover, self.fail = sleep, stopped, recover, fail
        self.disconnected = disconnected   # the job's own connection failed (a worker's does not count)
        self.failures = 0   # retryable failures since a batch last committed (the job resets it then)

    async def run(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run op, retrying retryable errors with backoff. Attempts count failures in a row across calls too,
        until a batch commits: a loop step that only starts a batch succeeds before that batch has. Any other
        database or schema error fails the job at once."""
        attempt = 0
        while True:
            try:
                return await op()
            except RetryableError as exc:
                self.failures += 1
                attempt = max(attempt + 1, self.failures)
                self.metrics.errors.labels(self.job, exc.kind).inc()
                if exc.reconnect and not exc.on_writer:
                    self.disconnected()
                if attempt > self.max_retries:
                    await self.fail(exc, attempt)
                self.metrics.retries.labels(self.job, exc.kind).inc()
                self.metrics.batches.labels(self.job, "retried").inc()
                delay = backoff_s(attempt)
                self.log.warning("batch_retry", kind=exc.kind, attempt=attempt, delay_s=round(delay, 2),
                                 error=str(exc))
                await self.sleep(delay)
                if self.stopped():
                    raise Stopped() from None
                await self.recover(exc)
            except (EngineError, SchemaError, StateError) as exc:
                self.metrics.errors.labels(self.job, "fatal").inc()
                await self.fail(exc, 1)
