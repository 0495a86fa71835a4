"""Faults between backfilld and its servers (tests/harness/faultproxy.py in the path): what the job and its
health endpoints do, and that the job still ends with every row right."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from backfilld import daemon
from tests.dbutil import CONCAT, TestDb
from tests.harness.faultproxy import FaultProxy, fault_proxy_fixture

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
