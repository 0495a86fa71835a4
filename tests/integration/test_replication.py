"""Throttling against real replicas: PostgreSQL streaming and MariaDB binlog pairs started by the harness.

Every scenario runs the daemon in-process against the pair's primary while the test plays the operator's
worst day: replay paused, replica killed, and a long unpaused run whose lag is measured independently.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from backfilld import control, daemon
from backfilld.config import from_dict
from backfilld.job import BatchResult
from tests.harness.faultproxy import FaultProxy
from tests.harness.replication import mariadb_pair_fixture, postgres_pair_fixture

pytestmark = pytest.mark.replication

ROWS = 200_000
HEARTBEAT_S = 0.1
MAX_LAG_S = 1.0
# Tests that stop a replica while the job runs pace it, so that it is still running when the lag crosses the
# limit: unpaced, 200-key batches with the lookahead finish 200,000 rows in about a second here.
PACED = {"min_batch": 200, "max_batch": 200, "max_rows_per_s": 40_000}


class Pair:
    """One interface over both harness pairs, for the scenarios below."""

    def __init__(self, kind: str, pair: Any) -> None:
        self.kind, self.pair = kind, pair

    def execute(self, sql: str) -> None:
        self.pair.execute(sql)

    def replica_scalar(self, sql: str) -> Any:
        return self.pair.scalar(sql, on="replica")

    def pause(self) -> None:
        self.pair.pause_replay() if self.kind == "postgresql" else self.pair.stop_sql_thread()

    def resume(self) -> None:
        self.pair.resume_replay() if self.kind == "postgresql" else self.pair.start_sql_thread()

    def create_table(self, name: str, rows: int) -> None:
        self.execute(f"DROP TABLE IF EXISTS {name}")
        self.execute("DROP TABLE IF EXISTS bf_state")
        if self.kind == "postgresql":
            self.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, name text NOT NULL, label text)")
            self.execute(f"INSERT INTO {name} (id, name) SELECT g, 'name ' || g FROM generate_series(1, {rows}) g")
        else:
            self.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, name varchar(100) NOT NULL, "
                         "label varchar(120)) DEFAULT CHARSET=utf8mb4")
            self.execute(f"INSERT INTO {name} (id, name) SELECT seq, CONCAT('name ', seq) FROM seq_1_to_{rows}")
        self.pair.wait_caught_up(60)


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[Any]:
    yield from postgres_pair_fixture()


@pytest.fixture(scope="module")
def maria_pair() -> Iterator[Any]:
    yield from mariadb_pair_fixture()


@pytest.fixture(params=["postgresql", "mariadb"])
def pair(request: pytest.FixtureRequest) -> Pair:
    kind = request.param
    return Pair(kind, request.getfixturevalue("pg_pair" if kind == "postgresql" else "maria_pair"))


def config(p: Pair, *, replicas: bool = True, replica_url: str | None = None, farm: dict | None = None,
           **throttle: Any) -> Any:
    expr = "name || '!'" if p.kind == "postgresql" else "CONCAT(name, '!')"
    return from_dict({
        "database": {"url": p.pair.primary_url},
        "state": {"table": "bf_state"},
        "metrics": {"listen": ""},
        "replicas": [{"url": replica_url or p.pair.replica_url, "name": "replica1"}] if replicas else [],
        "throttle": {"max_lag_s": MAX_LAG_S, "resume_lag_s": 0.5, "heartbeat_interval_s": HEARTBEAT_S,
                     "fail_closed_after_s": 1.0, **throttle},
        "jobs": [{"name": "label", "table": "items", "batch_size": 200, "set": {"label": expr}}],
        **({"farm": farm} if farm else {}),
    })


class Recorder:
    """Batch start/end times, from the job's own callback."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, float, BatchResult]] = []
        self.progress = asyncio.Event()

    def __call__(self, _job: Any, r: BatchResult) -> None:
        end = time.monotonic()
        self.batches.append((end - r.took_s, end, r))
        if len(self.batches) >= 20:
            self.progress.set()

    def started_after(self, t: float) -> list[tuple[float, float, BatchResult]]:
        return [b for b in self.batches if b[0] > t]

    @property
    def longest_s(self) -> float:
        return max(b[2].took_s for b in self.batches)


async def wait_for_event(logs: list[dict], event: str, timeout: float = 30, after: int = 0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in logs[after:]:
            if entry["event"] == event:
                return entry
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {event} within {timeout} s; saw {[e['event'] for e in logs][-20:]}")


async def check_replica_complete(p: Pair) -> None:
    await asyncio.to_thread(p.pair.wait_caught_up, 60)
    missing = await asyncio.to_thread(p.replica_scalar, "SELECT count(*) FROM items WHERE label IS NULL")
    assert int(missing) == 0


async def test_paused_replay_pauses_the_job_and_resuming_lets_it_finish(pair: Pair) -> None:
    await asyncio.to_thread(pair.create_table, "items", ROWS)
    cfg = config(pair, **PACED)
    rec = Recorder()
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(restart=True), on_batch=rec))
        await asyncio.wait_for(rec.progress.wait(), 60)
        mark = len(logs)
        await asyncio.to_thread(pair.pause)
        try:
            paused_at = time.monotonic()
            entry = await wait_for_event(logs, "throttle_paused", after=mark)
            # the heartbeat lag crosses the limit MAX_LAG_S after replay stopped; from then on, within two
            # heartbeat intervals plus the batch in flight, no new batch may start
            deadline = paused_at + MAX_LAG_S + 2 * HEARTBEAT_S
            late = rec.started_after(deadline)
            assert len(late) <= 1, f"{len(late)} batches started after the lag crossed the limit"
            # the replica as configured (replica1) or, on PostgreSQL, as found in pg_stat_replication (the same
            # server, named by its walreceiver): whichever reading crossed the limit first; or the one whose lag
            # plus the next batch would cross it (batches that take longer make that one come first)
            assert re.search(r"replica (replica1|walreceiver@127\.0\.0\.1) lag [\d.]+ s (> 1 s|\+ the next batch "
                             r"\(~[\d.]+ s\) would pass 1 s)", entry["reason"]), entry
            assert not run.done()
            held = len(rec.batches)
            await asyncio.sleep(1.0)
            assert len(rec.batches) == held, "batches ran while replay was paused"
        finally:
            await asyncio.to_thread(pair.resume)   # never leave the pair paused for the next test
        [state] = await asyncio.wait_for(run, 300)
        resumed = await wait_for_event(logs, "throttle_resumed", after=mark)
    assert state.status == "completed" and state.rows_done == ROWS
    assert resumed["paused_s"] >= 1.0
    await check_replica_complete(pair)


async def test_killed_replica_fails_closed_and_restart_lets_it_finish(pair: Pair) -> None:
    await asyncio.to_thread(pair.create_table, "items", ROWS)
    cfg = config(pair, **PACED)
    rec = Recorder()
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(restart=True), on_batch=rec))
        await asyncio.wait_for(rec.progress.wait(), 60)
        mark = len(logs)
        await asyncio.to_thread(pair.pair.stop_replica)
        try:
            entry = await wait_for_event(logs, "throttle_paused", after=mark)
            assert "unreadable" in entry["reason"] or "lag" in entry["reason"]
            await asyncio.sleep(1.5)
            held = len(rec.batches)
            await asyncio.sleep(1.0)
            assert len(rec.batches) == held, "batches ran while the replica was down"
            assert not run.done(), "the daemon must not crash when a replica is down"
            unreadable = [e for e in logs[mark:] if e["event"] in ("throttle_paused", "throttle_reason_changed")
                          and "unreadable" in e["reason"]]
            assert unreadable, "the log must say the replica's lag cannot be read"
        finally:
            await asyncio.to_thread(pair.pair.start_replica)
        [state] = await asyncio.wait_for(run, 300)
    assert state.status == "completed" and state.rows_done == ROWS
    await check_replica_complete(pair)


async def test_a_frozen_path_to_the_replica_fails_closed_and_the_job_goes_on_once_it_thaws(pair: Pair) -> None:
    """The network path to the replica stops forwarding (tests/harness/faultproxy.py; sockets kept open, so no
    error comes back, the lag reading just stops): within fail_closed_after_s the job counts the replica as
    unreadable and writes nothing; once the path thaws it goes on and completes, the replica with it."""
    await asyncio.to_thread(pair.create_table, "items", ROWS)
    with FaultProxy.for_url(pair.pair.replica_url) as proxy:
        cfg = config(pair, replica_url=proxy.url_for(pair.pair.replica_url), **PACED)
        rec = Recorder()
        with structlog.testing.capture_logs() as logs:
            run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(restart=True), on_batch=rec))
            await asyncio.wait_for(rec.progress.wait(), 60)
            mark = len(logs)
            try:
                frozen_at = time.monotonic()
                proxy.freeze()
                entry = await wait_for_unreadable(logs, after=mark)
                noticed = time.monotonic() - frozen_at
                # the last reading goes stale after fail_closed_after_s (1 s here), seen within a probe interval
                assert noticed < 1.0 + 2.0, f"the job noticed the frozen replica after {noticed:.1f} s"
                assert "replica1" in entry["reason"], entry
                await asyncio.sleep(0.5)   # the batch in flight lands
                held = len(rec.batches)
                await asyncio.sleep(1.5)
                assert len(rec.batches) == held, "batches ran while the replica's lag could not be read"
                assert not run.done()
            finally:
                proxy.thaw()
            [state] = await asyncio.wait_for(run, 300)
    assert state.status == "completed" and state.rows_done == ROWS
    await check_replica_complete(pair)


async def wait_for_unreadable(logs: list[dict], after: int, timeout: float = 30) -> dict:
    """The first log entry after `after` whose throttle reason says a replica's lag cannot be read."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in logs[after:]:
            if entry["event"] in ("throttle_paused", "throttle_reason_changed") and "unreadable" in entry["reason"]:
                return entry
        await asyncio.sleep(0.05)
    raise AssertionError(f"no unreadable replica within {timeout} s; saw {[e['event'] for e in logs][-20:]}")


async def test_max_lag_of_an_unpaused_run_stays_under_the_limit(pair: Pair) -> None:
    """600,000 rows with default batch sizing (a few seconds of full-speed writes); lag measured by the test
    itself on the replica."""
    rows = 3 * ROWS
    await asyncio.to_thread(pair.create_table, "items", rows)
    cfg = config(pair)
    rec = Recorder()
    writer = socket.gethostname()[:128]
    seen: list[float] = []
    done = asyncio.Event()

    def read_heartbeat() -> float | None:
        q = f"SELECT ts FROM backfilld_heartbeat WHERE writer = '{writer}'"
        try:
            v = pair.replica_scalar(q)
        except Exception:  # noqa: BLE001 - the table may not have replicated yet
            return None
        return float(v) if v is not None else None

    started = time.time()

    async def observe() -> None:
        while not done.is_set():
            ts = await asyncio.to_thread(read_heartbeat)
            if ts is not None and ts >= started:  # older rows are an earlier run's heartbeat
                seen.append(time.time() - ts)
            await asyncio.sleep(0.05)

    observer = asyncio.create_task(observe())
    try:
        [state] = await asyncio.wait_for(daemon.run(cfg, daemon.RunOptions(restart=True), on_batch=rec), 300)
    finally:
        done.set()
        await observer
    assert state.status == "completed" and state.rows_done == rows
    assert len(seen) > 10
    bound = MAX_LAG_S + rec.longest_s + HEARTBEAT_S
    assert max(seen) < bound, f"max lag {max(seen):.3f} s over {bound:.3f} s"
    await check_replica_complete(pair)


async def test_postgres_replicas_are_found_without_config(pg_pair: Any) -> None:
    p = Pair("postgresql", pg_pair)
    await asyncio.to_thread(p.create_table, "items", ROWS)
    cfg = config(p, replicas=False, **PACED)
    rec = Recorder()
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(restart=True), on_batch=rec))
        await asyncio.wait_for(rec.progress.wait(), 60)
        mark = len(logs)
        await asyncio.to_thread(p.pause)
        entry = await wait_for_event(logs, "throttle_paused", after=mark)
        assert "@127.0.0.1 lag" in entry["reason"]
        await asyncio.to_thread(p.resume)
        [state] = await asyncio.wait_for(run, 300)
    assert state.status == "completed"
    await check_replica_complete(p)


async def test_native_probe_sees_stopped_replication(pair: Pair) -> None:
    await asyncio.to_thread(pair.create_table, "items", ROWS)
    cfg = config(pair, lag_probe="native", **PACED)
    rec = Recorder()
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(restart=True), on_batch=rec))
        await asyncio.wait_for(rec.progress.wait(), 60)
        mark = len(logs)
        await asyncio.to_thread(pair.pause)
        try:
            entry = await wait_for_event(logs, "throttle_paused", after=mark)
            assert "replica replica1 lag stopped" in entry["reason"]
        finally:
            await asyncio.to_thread(pair.resume)
        [state] = await asyncio.wait_for(run, 300)
    assert state.status == "completed"


def audit_updates(p: Pair) -> None:
    """An audit table on the primary and an AFTER UPDATE trigger recording every row an UPDATE touched."""
    p.execute("DROP TABLE IF EXISTS items_audit")
    if p.kind == "postgresql":
        p.execute("CREATE TABLE items_audit (id bigint NOT NULL)")
        p.execute("CREATE OR REPLACE FUNCTION items_audit_f() RETURNS trigger LANGUAGE plpgsql AS "
                  "$$ BEGIN INSERT INTO items_audit(id) VALUES (NEW.id); RETURN NEW; END $$")
        p.execute("CREATE TRIGGER items_audit_t AFTER UPDATE ON items FOR EACH ROW EXECUTE FUNCTION items_audit_f()")
    else:
        p.execute("CREATE TABLE items_audit (id bigint NOT NULL)")
        p.execute("CREATE TRIGGER items_audit_t AFTER UPDATE ON items FOR EACH ROW "
                  "INSERT INTO items_audit(id) VALUES (NEW.id)")


def kill_backfilld(p: Pair) -> int:
    """Every backfilld session on the primary killed (pg_terminate_backend; KILL CONNECTION); how many."""
    if p.kind == "postgresql":
        rows = p.pair.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name LIKE 'backfilld%'")
        return len(rows)
    ids = p.pair.query("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = 'test' AND ID <> CONNECTION_ID() "
                       "AND COMMAND <> 'Binlog Dump'")
    for (conn_id,) in ids:
        p.execute(f"KILL CONNECTION {int(conn_id)}")
    return len(ids)


async def test_a_primary_restart_and_killed_backends_mid_run_leave_every_row_right_and_none_written_twice(
        pair: Pair) -> None:
    """The primary shut down fast and started again mid-run, then every backfilld backend killed three
    times: the job reconnects, takes its lease again, resumes from its checkpoint within its retries and
    completes, every row right on the primary and the replica, and no row updated twice (the audit trigger)."""
    rows = 20_000
    await asyncio.to_thread(pair.create_table, "items", rows)
    await asyncio.to_thread(audit_updates, pair)
    cfg = config(pair, min_batch=200, max_batch=200, max_rows_per_s=3000)
    cfg = cfg.model_copy(update={"jobs": [cfg.jobs[0].model_copy(update={"max_retries": 40})]})
    rec = Recorder()
    run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(restart=True), on_batch=rec))

    async def more_batches(n: int) -> None:
        start = len(rec.batches)
        for _ in range(600):
            if len(rec.batches) >= start + n or run.done():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {n} more batches within 30 s")

    await more_batches(5)
    await asyncio.to_thread(pair.pair.stop_primary)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(pair.pair.start_primary)
    await more_batches(5)
    killed = 0
    for _ in range(3):
        killed += await asyncio.to_thread(kill_backfilld, pair)
        await more_batches(3)
    assert killed >= 3
    [state] = await asyncio.wait_for(run, 180)
    assert state.status == "completed"
    assert int(pair.pair.scalar("SELECT count(*) FROM items WHERE label IS NULL")) == 0
    twice = pair.pair.scalar("SELECT count(*) FROM (SELECT id FROM items_audit GROUP BY id HAVING count(*) > 1) t")
    assert int(twice) == 0, "rows updated twice"
    assert int(pair.pair.scalar("SELECT count(DISTINCT id) FROM items_audit")) == rows
    await check_replica_complete(pair)


async def test_a_set_of_max_lag_s_while_the_lag_holds_the_job_counts_at_once(pair: Pair) -> None:
    """Replay paused, the job held by the lag: an operator accepts more lag (`set max_lag_s=...`) and the job
    goes on while replay is still paused (the request is read during the throttle's wait, not after it)."""
    await asyncio.to_thread(pair.create_table, "items", ROWS)
    cfg = config(pair, **PACED)
    rec = Recorder()
    with structlog.testing.capture_logs() as logs:
        run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(restart=True), on_batch=rec))
        await asyncio.wait_for(rec.progress.wait(), 60)
        mark = len(logs)
        await asyncio.to_thread(pair.pause)
        try:
            await wait_for_event(logs, "throttle_paused", after=mark)
            held = len(rec.batches)
            await asyncio.sleep(0.5)
            assert len(rec.batches) <= held + 1, "batches went on while the lag held the job"
            await control.request(cfg, "label", settings={"max_lag_s": 3600})
            await wait_for_event(logs, "throttle_resumed", after=mark, timeout=10)
            for _ in range(100):
                if len(rec.batches) >= held + 5:
                    break
                await asyncio.sleep(0.05)
            assert len(rec.batches) >= held + 5, "the job did not go on after the operator's set"
        finally:
            await asyncio.to_thread(pair.resume)
        [state] = await asyncio.wait_for(run, 300)
    assert state.status == "completed" and state.rows_done == ROWS
    await check_replica_complete(pair)


async def test_a_farm_of_databases_on_one_pair_keeps_its_lag_within_the_limit(pair: Pair) -> None:
    """Farm mode: four databases on the pair's primary, three writing at once, share one lag budget: the lag the
    test measures on the replica stays under max_lag_s plus one batch, as for one database."""
    from urllib.parse import urlsplit, urlunsplit

    from backfilld import engines, farm
    from backfilld.config import parse_url

    names = [f"bffarm{i}" for i in range(4)]
    rows = ROWS
    parts = urlsplit(pair.pair.primary_url)

    def url_of(db: str) -> str:
        return urlunsplit((parts.scheme, parts.netloc, "/" + db, parts.query, parts.fragment))

    admin = engines.create(parse_url(pair.pair.primary_url))
    await admin.connect()
    try:
        for name in names:
            await admin.execute(admin.dialect.database_ddl(name)[1])
            await admin.execute(admin.dialect.database_ddl(name)[0])
    finally:
        await admin.close()
    for name in names:
        e = engines.create(parse_url(url_of(name)))
        await e.connect()
        try:
            if pair.kind == "postgresql":
                await e.execute("CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, label text)")
                await e.execute(f"INSERT INTO items (id, name) SELECT g, 'name ' || g "
                                f"FROM generate_series(1, {rows}) g")
            else:
                await e.execute("CREATE TABLE items (id bigint PRIMARY KEY, name varchar(100) NOT NULL, "
                                "label varchar(120)) DEFAULT CHARSET=utf8mb4")
                await e.execute(f"INSERT INTO items (id, name) SELECT seq, CONCAT('name ', seq) "
                                f"FROM seq_1_to_{rows}")
        finally:
            await e.close()
    await asyncio.to_thread(pair.pair.wait_caught_up, 120)
    cfg = config(pair, farm={"databases": names, "max_concurrent_per_host": 3})
    rec = Recorder()
    writer = socket.gethostname()[:128]
    seen: list[float] = []
    done = asyncio.Event()
    started = time.time()

    def read_heartbeat() -> float | None:
        try:
            v = pair.replica_scalar(f"SELECT ts FROM backfilld_heartbeat WHERE writer = '{writer}'")
        except Exception:  # noqa: BLE001 - not replicated yet
            return None
        return float(v) if v is not None else None

    async def observe() -> None:
        while not done.is_set():
            ts = await asyncio.to_thread(read_heartbeat)
            if ts is not None and ts >= started:
                seen.append(time.time() - ts)
            await asyncio.sleep(0.05)

    async def run_one(m: farm.Member, gate: Any, stop: asyncio.Event) -> list[Any]:
        return await daemon.run(m.config, daemon.RunOptions(restart=True), stop=stop, gate=gate, on_batch=rec)

    observer = asyncio.create_task(observe())
    try:
        summary = await asyncio.wait_for(farm.run(cfg, shard=None, stop=asyncio.Event(), run_one=run_one), 600)
    finally:
        done.set()
        await observer
    assert summary.counts() == {"completed": 4}, summary.outcomes
    assert len(seen) > 10
    bound = MAX_LAG_S + rec.longest_s + HEARTBEAT_S
    assert max(seen) < bound, f"max lag {max(seen):.3f} s over {bound:.3f} s with three databases writing"
    await asyncio.to_thread(pair.pair.wait_caught_up, 60)
    admin = engines.create(parse_url(pair.pair.primary_url))
    await admin.connect()
    try:
        for name in names:
            await admin.execute(admin.dialect.database_ddl(name)[1])
    finally:
        await admin.close()
