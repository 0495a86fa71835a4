"""PassTally: a pass that wrote nothing and left the same rows as the pass before counts as stuck; after
STUCK_PASSES_MAX such passes in a row the job is told why to stop, naming the keys."""

from __future__ import annotations

from backfilld.accounting import STUCK_PASSES_MAX, PassTally
from backfilld.pipeline import Flight


def flight(*passed_over: int) -> Flight:
    return Flight(lo=None, hi=(1000,), scanned=100, size=100, writer=None, started=0.0,
                  passed_over=[(k,) for k in passed_over])


def sweep(t: PassTally, rows: int, *left: int) -> None:
    t.add(flight(*left), rows, len(left))
    t.end_pass()


def test_the_same_rows_left_by_passes_that_wrote_nothing_stop_the_job_naming_them() -> None:
    t = PassTally()
    sweep(t, 998, 450, 7)         # the fill: wrote rows, passed over two
    for _ in range(STUCK_PASSES_MAX):
        assert t.problem() is None
        sweep(t, 0, 7, 450)       # same rows, any order
    problem = t.problem()
    assert problem is not None
    assert problem.startswith(f"2 row(s) could not be written in {STUCK_PASSES_MAX} passes in a row "
                              "(keys: [7], [450])")


def test_a_pass_that_writes_or_leaves_other_rows_starts_the_count_again() -> None:
    t = PassTally()
    for _ in range(STUCK_PASSES_MAX - 1):
        sweep(t, 0, 450)
    sweep(t, 1, 450)              # wrote a row: not stuck
    for _ in range(STUCK_PASSES_MAX - 1):
        sweep(t, 0, 450)
    assert t.problem() is None
    sweep(t, 0, 451)              # other rows now: the application moved on
    assert t.stuck == 0 and t.problem() is None
    sweep(t, 0)                   # nothing left
    assert t.stuck == 0 and t.problem() is None


def test_a_transforms_rows_without_keys_count_by_number() -> None:
    t = PassTally()
    for _ in range(STUCK_PASSES_MAX):
        t.add(flight(), 0, 3)     # a transform's guard refused 3 rows; no keys known
        t.end_pass()
    problem = t.problem()
    assert problem is not None and "3 row(s)" in problem and "not known" in problem
