"""Whether a running job is making progress: what /readyz, /healthz and /status tell about a stall.

Owns: when the job last committed a batch, and whether it is waiting for a reason of its own (the throttle, an
operator's pause, the pause between sweeps) rather than stuck. A job that is neither and has committed nothing
for [metrics] stall_after_s is stalled (a network path that stopped forwarding, a statement that never returns,
a retry loop that cannot get through). Delegates nothing: the job beats it, the daemon reads it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator


class Liveness:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.committed_at: float | None = None   # this run's last commit
        self._active_at = clock()                # the last commit, or the end of the last wait
        self._waits = 0

    def committed(self) -> None:
        self.committed_at = self._active_at = self.clock()

    def started(self) -> None:
        """A run or a pass begins: the time before it is not a stall."""
        self._active_at = self.clock()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """A wait the job chose (throttle, operator pause, sweep pause): not a stall, however long."""
        self._waits += 1
        try:
            yield
        finally:
            self._waits -= 1
            self._active_at = self.clock()

    def since_commit_s(self) -> float | None:
        return None if self.committed_at is None else self.clock() - self.committed_at

    def stalled_s(self) -> float | None:
        """How long the job has gone without a commit while not waiting by choice; None while it waits."""
        return None if self._waits else self.clock() - self._active_at
