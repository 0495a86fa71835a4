"""Faults between backfilld and its servers (tests/harness/faultproxy.py in the path): what the job and its
health endpoints do, and that the job still ends with every row right."""

from __future__ import annotations

import asyncio
import json
import statistics
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from backfilld import daemon
from backfilld.accounting import BatchResult
from backfilld.errors import ConnectError
from backfilld.metrics import Metrics
from tests.dbutil import CONCAT, SLOW_ON_499, GateAt, TestDb, application_session
from tests.harness.faultproxy import FaultProxy, ProxyStats, fault_proxy_fixture

both = pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])


@pytest.fixture
def proxy(db_url: str) -> Iterator[FaultProxy]:
    yield from fault_proxy_fixture(db_url)


def http_get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def until(pred, timeout_s: float = 30.0) -> None:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await pred():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@both
async def test_a_stalled_network_path_makes_the_job_not_ready_until_it_commits_again(
        db: TestDb, proxy: FaultProxy) -> None:
    """The path to the primary stops forwarding mid-run: /readyz's answer turns to not ready once the running,
    unthrottled job has committed nothing for stall_after_s, /status shows the time since its last commit;
    when the path comes back the job goes on and ends with every row right."""
    table = await db.users_with(2000)
    expr = CONCAT[db.engine_name]
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {db.engine_name: expr}}}],
                    database={"url": proxy.url_for(db.url)}, metrics={"listen": "127.0.0.1:0", "stall_after_s": 1},
                    throttle={"max_rows_per_s": 400, "min_batch": 100, "max_batch": 100})
    d = daemon.Daemon(cfg, daemon.RunOptions())
    run = asyncio.create_task(d.run())

    async def committed() -> bool:
        return bool(d.current and d.current.state and d.current.state.rows_done > 0)

    try:
        await until(committed)
        assert d.ready() == (True, "connected to the primary")
        proxy.freeze()
        await asyncio.sleep(2.0)
        ready, why = d.ready()
        assert not ready and "has committed nothing for" in why and "stall_after_s = 1" in why, why
        assert d.server is not None and d.server.port
        for path, body in (("/readyz", {"ready": False}), ("/healthz", {"status": "stalled"})):
            code, answer = await asyncio.to_thread(http_get, d.server.port, path)
            assert code == 503 and body.items() <= answer.items() and "committed nothing" in str(answer), answer
        [job] = d.status()["jobs"]
        assert job["status"] == "running" and job["since_commit_s"] >= 1.5
        assert d.status()["not_ready"] == why
        proxy.thaw()

        async def ready_again() -> bool:
            return d.ready()[0]

        await until(ready_again)
        assert (await asyncio.to_thread(http_get, d.server.port, "/healthz"))[0] == 200
    finally:
        proxy.thaw()
    [state] = await asyncio.wait_for(run, 60)
    assert state.status == "completed" and state.rows_done == 2000
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {expr}") == [(2000,)]


@both
async def test_a_path_frozen_mid_batch_releases_its_row_locks_within_the_bounds_and_the_job_resumes(
        db: TestDb, proxy: FaultProxy) -> None:
    """The path stops forwarding while a batch's UPDATE runs (row 499 takes a second): the server ends the
    batch's transaction once it sits idle past idle_in_transaction_timeout_s, so an application UPDATE of a row
    of that batch goes through during the freeze, within the bounds; the client gives up on the connection past
    its statement deadline, reconnects once the path is back, and the job ends with every row right, none
    written twice by backfilld (the audit trigger's count)."""
    table = await db.users_with(1000)
    audit = await db.audit_updates(table)
    expr = SLOW_ON_499[db.engine_name]
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {db.engine_name: expr}}, "max_retries": 30}],
                    database={"url": proxy.url_for(db.url), "connect_timeout_s": 2, "statement_timeout_s": 2,
                              "idle_in_transaction_timeout_s": 1},
                    throttle={"min_batch": 100, "max_batch": 100, "workers": 1})
    loop = asyncio.get_running_loop()
    frozen = asyncio.Event()

    async def freeze_inside_the_slow_batch() -> None:   # before the batch of (400, 500]
        def freeze() -> None:
            proxy.freeze()
            frozen.set()
        loop.call_later(0.5, freeze)

    app = await application_session(db)
    run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(), gate=GateAt({5: freeze_inside_the_slow_batch})))
    try:
        await asyncio.wait_for(frozen.wait(), 30)
        await asyncio.sleep(0.2)
        if db.engine_name == "postgresql":
            await app.x("SET lock_timeout = '5s'")
        else:
            await app.x("SET SESSION innodb_lock_wait_timeout = 5")
        t0 = loop.time()
        assert await app.x(f"UPDATE {table} SET deleted = 0 WHERE id = 499") == 1
        waited = loop.time() - t0
        assert waited < 3.0, f"the application waited {waited:.1f} s for a row of the frozen batch"
        await asyncio.sleep(max(0.0, 6.0 - (loop.time() - t0)))   # past the client's deadline (2 + 2 s)
        assert not run.done()
    finally:
        proxy.thaw()
        await app.engine.close()
    [state] = await asyncio.wait_for(run, 120)
    assert state.status == "completed"
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT[db.engine_name]}") == [(1000,)]
    counts = dict(await db.q(f"SELECT id, count(*) FROM {audit} GROUP BY id"))
    assert counts.pop(499) == 2   # the application's UPDATE, and backfilld's
    assert set(counts.values()) == {1} and len(counts) == 999, "a row written twice, or not at all"


@both
async def test_a_listener_that_accepts_but_never_speaks_fails_the_connect_within_its_timeout(
        db: TestDb, proxy: FaultProxy) -> None:
    """`plan` (any command) against a server address that accepts TCP and then says nothing: the whole
    handshake is bounded by connect_timeout_s, and the error says what happened (it was empty on PostgreSQL,
    and MySQL hung past its timeout)."""
    proxy.blackhole_new(True)
    cfg = db.config([{"name": "j", "table": "t", "set": {"label": "name"}}],
                    database={"url": proxy.url_for(db.url), "connect_timeout_s": 1})
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ConnectError) as err:
        await asyncio.wait_for(daemon.plan(cfg), 30)
    assert loop.time() - t0 < 5.0
    message = str(err.value)
    assert "cannot connect to" in message and "timed out" in message, message
    assert not message.rstrip().endswith(":"), message


class Commits:
    """on_batch callback: when each batch committed (loop time), to wait for progress after a fault."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.took: list[tuple[float, float]] = []   # (commit time, batch time from range lookup to commit)

    def __call__(self, _job: object, result: BatchResult) -> None:
        now = asyncio.get_running_loop().time()
        self.at.append(now)
        self.took.append((now, result.took_s))

    async def after(self, t: float, timeout_s: float = 60.0) -> float:
        """Seconds from t to the first commit after it."""
        async def seen() -> bool:
            return any(c > t for c in self.at)
        await until(seen, timeout_s)
        return min(c for c in self.at if c > t) - t


async def written_once(db: TestDb, table: str, audit: str, rows: int) -> None:
    """Every row right, and backfilld's UPDATE touched each exactly once (the audit trigger's count)."""
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT[db.engine_name]}") == [(rows,)]
    counts = dict(await db.q(f"SELECT id, count(*) FROM {audit} GROUP BY id"))
    assert len(counts) == rows and set(counts.values()) == {1}, "a row written twice, or not at all"


# Seconds a job may take to commit again after every connection was reset: a reconnect (well under a second on
# loopback) after the retry's backoff (0.2 s doubling; a few attempts while the server ends the old sessions).
RECOVER_S = 15.0


@both
async def test_every_connection_reset_three_times_mid_run_the_job_resumes_exactly(
        db: TestDb, proxy: FaultProxy) -> None:
    """RST on every connection of backfilld (the job's, the writers', the probes') three times while it runs:
    each time it reconnects, re-reads its checkpoint and commits again within RECOVER_S, and it ends with every
    row right, none written twice."""
    rows = 6000
    table = await db.users_with(rows)
    audit = await db.audit_updates(table)
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}},
                      "max_retries": 30}],
                    database={"url": proxy.url_for(db.url), "connect_timeout_s": 2},
                    throttle={"max_rows_per_s": 600, "min_batch": 50, "max_batch": 50})
    loop = asyncio.get_running_loop()
    commits = Commits()
    run = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(), on_batch=commits))
    recovered = []
    for _ in range(3):
        await commits.after(commits.at[-1] if commits.at else loop.time() - 60)
        await asyncio.sleep(0.3)
        before = proxy.stats()
        t = loop.time()
        proxy.reset()
        assert proxy.stats().resets > before.resets, "nothing was open to reset"

        async def reconnected(before: ProxyStats = before) -> bool:
            return proxy.stats().accepted > before.accepted

        await until(reconnected, RECOVER_S)   # (a batch whose COMMIT was answered before the RST may land first)
        recovered.append(loop.time() - t + await commits.after(loop.time(), RECOVER_S))
    assert not run.done()
    [state] = await asyncio.wait_for(run, 120)
    assert state.status == "completed" and state.rows_done == rows
    await written_once(db, table, audit, rows)
    assert max(recovered) < RECOVER_S, recovered


@both
async def test_added_latency_slows_the_job_but_it_completes_exactly_without_a_retry(
        db: TestDb, proxy: FaultProxy) -> None:
    """50 ms each way on every connection (a 100 ms round trip: another region), set mid-run: batches take
    longer, but no bound (lock, statement, idle-in-transaction) is reached, so nothing is retried, and the job
    ends with every row right, none written twice."""
    rows = 2000
    table = await db.users_with(rows)
    audit = await db.audit_updates(table)
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}],
                    database={"url": proxy.url_for(db.url)},
                    throttle={"min_batch": 100, "max_batch": 200, "max_rows_per_s": 1000})
    loop = asyncio.get_running_loop()
    commits = Commits()
    metrics = Metrics()
    d = daemon.Daemon(cfg, daemon.RunOptions(), on_batch=commits, metrics=metrics)
    run = asyncio.create_task(d.run())
    await commits.after(loop.time() - 60)
    proxy.latency(0.05)
    t = loop.time()
    await commits.after(t + 0.1)
    [state] = await asyncio.wait_for(run, 120)
    took = [s for at, s in commits.took if at - s > t + 0.2]   # batches begun once the latency was in place
    assert state.status == "completed" and state.rows_done == rows
    await written_once(db, table, audit, rows)
    assert took and statistics.median(took) >= 0.2, "the latency did not reach the writers' connections"
    assert counter_sum(metrics, "backfilld_retries_total") == 0


@both
async def test_a_bandwidth_limit_slows_the_job_but_it_completes_exactly_without_a_retry(
        db: TestDb, proxy: FaultProxy) -> None:
    """Every connection limited to 5 kB/s each way from the start (a saturated link; the statements are most
    of backfilld's traffic, the values stay on the server): the run takes as long as the limit makes it,
    nothing is retried, and the job ends with every row right, none written twice."""
    rows = 1500
    table = await db.users_with(rows)
    audit = await db.audit_updates(table)
    rate = 5_000
    proxy.bandwidth(rate)
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}],
                    database={"url": proxy.url_for(db.url), "connect_timeout_s": 5},
                    throttle={"min_batch": 50, "max_batch": 500})
    metrics = Metrics()
    d = daemon.Daemon(cfg, daemon.RunOptions(), metrics=metrics)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    [state] = await asyncio.wait_for(d.run(), 180)
    took = loop.time() - t0
    assert state.status == "completed" and state.rows_done == rows
    await written_once(db, table, audit, rows)
    assert counter_sum(metrics, "backfilld_retries_total") == 0
    sent = proxy.stats().bytes_to_upstream
    assert took >= 0.8 * sent / rate, f"{sent} bytes in {took:.1f} s: the limit was not in force"


def counter_sum(metrics: Metrics, name: str) -> float:
    """The sum over every label set of one counter, as a scrape would show it."""
    return sum(s.value for fam in metrics.registry.collect() for s in fam.samples if s.name == name)
