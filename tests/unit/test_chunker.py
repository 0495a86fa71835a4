"""Batch sizing toward a target time."""

from __future__ import annotations

from backfilld.chunker import BatchSizer


def sizer(size: int = 1000) -> BatchSizer:
    return BatchSizer(target_s=0.5, min_size=50, max_size=20_000, size=size)


def test_grows_by_a_bounded_step_when_fast() -> None:
    s = sizer()
    assert s.observe(1000, 0.05) == 1500  # 10x headroom, but at most x1.5 a step
    assert s.observe(1500, 0.075) == 2250


def test_grows_faster_while_far_under_target() -> None:
    s = sizer()
    assert s.observe(1000, 0.01) == 4000   # a fiftieth of the target: x4
    assert s.observe(4000, 0.025) == 16_000   # a twentieth: still x4
    assert s.observe(16_000, 0.1) == 20_000   # a fifth: x1.5, then max_size


def test_converges_on_the_target() -> None:
    s = sizer()
    per_row = 0.5 / 4000  # the table takes 4000 rows per target batch
    for _ in range(30):
        s.observe(s.size, s.size * per_row)
    assert 3600 <= s.size <= 4000


def test_shrinks_at_once_after_a_batch_far_over_target() -> None:
    s = sizer(10_000)
    assert s.observe(10_000, 3.0) == 1000


def test_stays_within_bounds() -> None:
    s = sizer(60)
    for _ in range(5):
        s.observe(s.size, 10.0)
    assert s.size == 50
    for _ in range(40):
        s.observe(s.size, 0.0001)
    assert s.size == 20_000


def test_sized_by_rows_visited_not_key_span() -> None:
    """An empty or sparse range (few rows) must not read as a fast batch of many rows."""
    s = sizer(1000)
    s.observe(10, 0.01)  # 10 rows visited in 10 ms: 1 ms per row
    assert s.size == 500  # 0.5 s target / 1 ms per row, not growth


def test_retune() -> None:
    s = sizer()
    s.retune(size=300, max_size=200)
    assert s.size == 200


def test_a_busy_application_shrinks_batches_to_the_busy_target_at_once() -> None:
    s = BatchSizer(target_s=0.5, min_size=10, max_size=100_000, size=1000, busy_target_s=0.1)
    for _ in range(5):
        s.observe(s.size, s.size * 1e-5)   # 10 us per row: 0.5 s is 50,000 rows; growing toward it
    assert s.size == 20_250
    s.set_busy(True)
    assert s.size == 10_000 and s.target == 0.1   # before the next batch, not after one of the old size
    s.observe(s.size, s.size * 1e-5)
    assert s.size == 10_000
    s.set_busy(False)
    assert s.target == 0.5 and s.size == 15_000   # grows back at the usual pace
