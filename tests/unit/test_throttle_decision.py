"""The throttle decision with a fake clock: hysteresis, several replicas, stale readings, load, flag, windows."""

from __future__ import annotations

import datetime as dt
import math

from backfilld.config import ThrottleConfig
from backfilld.throttle.decision import Decider, Signal, in_windows

NOON = dt.datetime(2026, 11, 26, 12, 0)


def decider(**kw) -> Decider:  # noqa: ANN003
    return Decider(ThrottleConfig(**{"max_lag_s": 1.0, "resume_lag_s": 0.5, "fail_closed_after_s": 10, **kw}))


def replica(name: str, lag: float | None, at: float = 0.0) -> Signal:
    s = Signal(f"replica {name}", started_at=0.0)
    if lag is not None:
        s.ok(lag, at)
    return s


def test_under_the_limit_goes() -> None:
    d = decider().decide([replica("db2", 0.3), replica("db3", 0.9)], None, 1.0, NOON)
    assert not d.throttled


def test_any_replica_over_the_limit_pauses_with_an_actionable_reason() -> None:
    d = decider().decide([replica("db2", 0.3), replica("db3", 2.4)], None, 1.0, NOON)
    assert d.throttled
    assert d.reason == "replica db3 lag 2.40 s > 1 s"
    assert d.kinds == ("lag",)


def test_hysteresis_resumes_only_under_resume_level() -> None:
    dec = decider()
    assert dec.decide([replica("db2", 1.5)], None, 1.0, NOON).throttled
    d = dec.decide([replica("db2", 0.8)], None, 1.1, NOON)  # under max, above resume: still paused
    assert d.throttled and "not yet under the resume level 0.5 s" in d.reason
    assert not dec.decide([replica("db2", 0.4)], None, 1.2, NOON).throttled
    assert not dec.decide([replica("db2", 0.8)], None, 1.3, NOON).throttled  # back under max: goes on


def test_a_batch_starts_only_if_the_lag_it_adds_stays_within_the_limit() -> None:
    dec = decider()
    assert not dec.decide([replica("db2", 0.5)], None, 1.0, NOON, next_batch_s=0.4).throttled   # 0.9 <= 1
    d = dec.decide([replica("db2", 0.7)], None, 1.1, NOON, next_batch_s=0.4)                       # 1.1 > 1
    assert d.throttled and d.reason == "replica db2 lag 0.70 s + the next batch (~0.40 s) would pass 1 s"
    assert not dec.decide([replica("db2", 0.45)], None, 1.2, NOON, next_batch_s=0.4).throttled  # resumed
    # a batch as long as the limit: never stricter than the resume level, so a caught-up replica lets it run
    assert not dec.decide([replica("db2", 0.45)], None, 1.3, NOON, next_batch_s=5.0).throttled
    assert dec.decide([replica("db2", 0.55)], None, 1.4, NOON, next_batch_s=5.0).throttled


def test_stopped_replication_is_not_lag_zero() -> None:
    s = replica("db2", None)
    s.ok(math.inf, 0.0, "replication SQL thread is not running (SQL_Running=No)")
    d = decider().decide([s], None, 0.5, NOON)
    assert d.throttled and "stopped (replication SQL thread is not running" in d.reason


def test_no_reading_yet_waits_rather_than_writing_blind() -> None:
    d = decider().decide([replica("db2", None)], None, 0.2, NOON)
    assert d.throttled and "waiting for the first lag reading" in d.reason


def test_stale_reading_fails_closed_after_the_limit() -> None:
    dec = decider(fail_closed_after_s=3)
    s = replica("db2", 0.1, at=0.0)
    s.fail("connection refused")
    assert not dec.decide([s], None, 2.9, NOON).throttled  # a brief error: the last good reading stands
    d = dec.decide([s], None, 3.0, NOON)
    assert d.throttled and d.reason == "replica db2 lag unreadable for 3.0 s: connection refused"
    assert d.kinds == ("lag_unknown",)
    s.ok(0.2, 4.0)  # back: resumes once under resume_lag_s
    assert not dec.decide([s], None, 4.0, NOON).throttled


def test_never_readable_fails_closed_too() -> None:
    s = replica("db2", None)
    s.fail("timeout")
    d = decider(fail_closed_after_s=2).decide([s], None, 5.0, NOON)
    assert d.reason == "replica db2 lag unreadable for 5.0 s: timeout"


def test_load_limit_and_unreadable_load() -> None:
    dec = decider(max_load=25)
    load = Signal("primary load", started_at=0.0)
    load.ok(30, 0.0, "Threads_running")
    assert dec.decide([], load, 0.1, NOON).reason == "primary load 30 > max_load 25 (Threads_running)"
    load.ok(10, 0.2, "Threads_running")
    assert not dec.decide([], load, 0.2, NOON).throttled
    load.fail("gone")
    assert "primary load unreadable" in dec.decide([], load, 20.0, NOON).reason
    assert not decider(max_load=0).decide([], load, 20.0, NOON).throttled


def test_flag_file(tmp_path) -> None:  # noqa: ANN001
    flag = tmp_path / "pause"
    dec = decider(flag_file=str(flag))
    assert not dec.decide([], None, 0, NOON).throttled
    flag.touch()
    assert dec.decide([], None, 0, NOON).reason == f"flag file {flag} exists"


def test_windows_including_across_midnight() -> None:
    assert in_windows(["22:00-06:00"], dt.time(23, 30)) and in_windows(["22:00-06:00"], dt.time(5, 59))
    assert not in_windows(["22:00-06:00"], dt.time(6, 0)) and not in_windows(["22:00-06:00"], dt.time(12, 0))
    assert in_windows(["01:00-02:00", "12:00-13:00"], dt.time(12, 30))
    d = decider(windows=["22:00-06:00"]).decide([], None, 0, NOON)
    assert d.reason == "outside the run windows 22:00-06:00 (local time 12:00)"


def test_several_reasons_are_all_reported() -> None:
    d = decider(windows=["22:00-06:00"]).decide([replica("a", 5.0), replica("b", 3.0)], None, 0.0, NOON)
    assert len(d.reasons) == 3 and d.kinds == ("lag", "window")


def test_an_application_session_waiting_for_backfilld_too_long_pauses() -> None:
    dec = decider(max_app_wait_s=0.2)
    app = Signal("application", started_at=0.0)
    app.ok(0.35, 0.0, "1 application session(s) waiting for backfilld's locks")
    d = dec.decide([], None, 0.1, NOON, app=app)
    assert d.kinds == ("app_wait",)
    assert d.reason == ("an application session has waited 0.35 s for a lock a backfilld session holds "
                        "(> max_app_wait_s 0.2 s; 1 application session(s) waiting for backfilld's locks)")
    app.ok(0.1, 0.3, "1 application session(s) waiting for backfilld's locks")   # a short wait is fine
    assert not dec.decide([], None, 0.3, NOON, app=app).throttled
    app.ok(0.0, 0.5, "no application session waits for backfilld")
    assert not dec.decide([], None, 0.5, NOON, app=app).throttled
    app.fail("permission denied")   # unreadable: no pause (the job counts the application as busy instead)
    assert not dec.decide([], None, 20.0, NOON, app=app).throttled
