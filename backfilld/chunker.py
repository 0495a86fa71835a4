"""Batch sizing: steer the number of keys per batch toward a target batch time.

Owns the arithmetic only; the job loop feeds it measured batches. Sizing is in keys visited (rows), never in
key span, so a sparse or already-filled key range cannot fool it (GitLab #351786).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# Growth per step is capped so that one fast batch (cache-hot, empty range) cannot jump the size: x1.5,
# the same bound Spirit uses.
MAX_GROWTH = 1.5
# ... except after a batch that took under a twentieth of the target: then x4 (a slow start), as a batch four
# times as large stays under a fifth of the target unless its rows cost five times more. From the default
# 1000 keys a table reaches 100,000-key batches in 5 steps instead of 13; on SQLite each batch costs ~3 ms
# besides its rows, so that took 8 of 21 batches (~2% of the time) off a million-row backfill.
FAST_GROWTH = 4.0
FAST_BELOW = 1 / 20
# A batch this many times over target cuts the size to a tenth at once; lock times matter more than speed.
PANIC_FACTOR = 5.0
PANIC_CUT = 0.1
# Batches in the window the size is steered from (p90 of their per-row time)
WINDOW = 10


@dataclass
class BatchSizer:
    target_s: float
    min_size: int
    max_size: int
    size: int

    # while the application is busy (set by the job before each batch), batches aim at min(target, busy_target_s)
    busy_target_s: float | None = None
    busy: bool = False

    @property
    def target(self) -> float:
        if self.busy and self.busy_target_s is not None:
            return min(self.target_s, self.busy_target_s)
        return self.target_s

    def set_busy(self, busy: bool) -> None:
        """The application became busy (or idle): from the next batch on, the size for the new target, at once
        rather than after a batch of the old size."""
        if busy == self.busy:
            return
        self.busy = busy
        if self._per_row_s:
            ordered = sorted(self._per_row_s)
            p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
            if p90 > 0:
                ideal = self.target / p90
                self.size = self.clamp(min(ideal, self.size) if busy else min(ideal, self.size * MAX_GROWTH))

    def __post_init__(self) -> None:
        self.size = self.clamp(self.size)
        self._per_row_s: deque[float] = deque(maxlen=WINDOW)

    def clamp(self, n: float) -> int:
        return int(max(self.min_size, min(self.max_size, n)))

    def retune(self, *, target_s: float | None = None, min_size: int | None = None, max_size: int | None = None,
               size: int | None = None) -> None:
        if target_s is not None:
            self.target_s = target_s
        if min_size is not None:
            self.min_size = min_size
        if max_size is not None:
            self.max_size = max_size
        if size is not None:
            self.size = size
            self._per_row_s.clear()
        self.size = self.clamp(self.size)

    def observe(self, rows: int, took_s: float) -> int:
        """Record one batch (keys visited, seconds it took); the size for the next batch."""
        if rows <= 0 or took_s <= 0:
            return self.size
        target = self.target
        if took_s > PANIC_FACTOR * target:
            self._per_row_s.clear()
            self.size = self.clamp(self.size * PANIC_CUT)
            return self.size
        self._per_row_s.append(took_s / rows)
        ordered = sorted(self._per_row_s)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        ideal = target / p90
        growth = FAST_GROWTH if took_s <= FAST_BELOW * target else MAX_GROWTH
        self.size = self.clamp(min(ideal, self.size * growth))
        return self.size
