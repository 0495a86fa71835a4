"""Self-test of tests/harness/faultproxy.py: real PostgreSQL and MariaDB clients through the proxy see each fault.

The clients are the drivers themselves (asyncpg, aiomysql), nothing of backfilld's, so that what is tested is
the proxy. Timing assertions are lower bounds only (a fault can make things slower, never faster), with slack
for the event loop's clock.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomysql
import asyncpg
import pytest

from tests.harness.faultproxy import FaultProxy, fault_proxy_fixture

both = pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])

# a query that cannot finish within this many seconds counts as hanging
HANG_S = 1.0
# seconds a client is given for what must happen at once (an error after a reset, a query after thaw)
PROMPT_S = 5.0
# asyncio wakes timers up to its clock's resolution early; every lower bound below allows this, seconds
CLOCK_SLACK_S = 0.01
# what each driver raises when its connection is reset or closed under it
CONNECTION_ERRORS: dict[str, tuple[type[BaseException], ...]] = {
    "postgresql": (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError),
    "mysql": (OSError, aiomysql.OperationalError, aiomysql.InterfaceError),
}


class Client:
    """The test's own driver connection: asyncpg or aiomysql, with the few statements these tests send."""

    def __init__(self, engine: str, conn: Any) -> None:
        self.engine = engine
        self.conn = conn

    @classmethod
    async def connect(cls, engine: str, url: str) -> Client:
        if engine == "postgresql":
            return cls(engine, await asyncpg.connect(url))
        parts = urlsplit(url)
        conn = await aiomysql.connect(host=parts.hostname, port=parts.port, user=unquote(parts.username or ""),
                                      password=unquote(parts.password or ""), db=parts.path.lstrip("/"))
        return cls(engine, conn)

    async def _scalar(self, sql: str, *args: Any) -> Any:
        if self.engine == "postgresql":
            return await self.conn.fetchval(sql, *args)
        async with self.conn.cursor() as cur:
            await cur.execute(sql, args)
            return (await cur.fetchone())[0]

    async def ping(self) -> int:
        return int(await self._scalar("SELECT 1"))

    async def blob(self, n_bytes: int) -> str:
        """A result of ``n_bytes`` ASCII bytes."""
        sql = "SELECT repeat('x', $1)" if self.engine == "postgresql" else "SELECT REPEAT('x', %s)"
        return str(await self._scalar(sql, n_bytes))

    def close(self) -> None:
        """At once, whatever state the connection is in (a reset one cannot say goodbye)."""
        if self.engine == "postgresql":
            self.conn.terminate()
        else:
            self.conn.close()


@pytest.fixture
def proxy(db_url: str) -> Iterator[FaultProxy]:
    yield from fault_proxy_fixture(db_url)


@pytest.fixture
async def client(engine_name: str, db_url: str, proxy: FaultProxy) -> Any:
    c = await Client.connect(engine_name, proxy.url_for(db_url))
    try:
        yield c
    finally:
        c.close()


async def eventually(pred: Callable[[], bool], timeout_s: float = PROMPT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def timed(coro: Any) -> tuple[Any, float]:
    t0 = time.monotonic()
    result = await coro
    return result, time.monotonic() - t0


def test_url_for_keeps_all_but_the_address() -> None:
    with FaultProxy("127.0.0.1", 9) as p:
        assert p.url_for("postgresql://u:p%40ss@db.example:5432/test?sslmode=disable") == \
            f"postgresql://u:p%40ss@127.0.0.1:{p.port}/test?sslmode=disable"
        assert p.url_for("mysql://root@127.0.0.1:3306/test") == f"mysql://root@127.0.0.1:{p.port}/test"
        with pytest.raises(ValueError):
            p.url_for("sqlite:///tmp/x.sqlite")


@both
async def test_queries_pass_and_are_counted(engine_name: str, db_url: str, proxy: FaultProxy) -> None:
    c = await Client.connect(engine_name, proxy.url_for(db_url))
    assert await c.ping() == 1
    s = proxy.stats()
    assert (s.accepted, s.live) == (1, 1)
    assert s.bytes_to_upstream > 0 and s.bytes_to_client > 0
    c.close()
    await eventually(lambda: proxy.stats().live == 0)


@both
async def test_freeze_holds_queries_until_thaw(engine_name: str, db_url: str, proxy: FaultProxy,
                                               client: Client) -> None:
    proxy.freeze()
    before = proxy.stats()
    query = asyncio.create_task(client.ping())
    connect = asyncio.create_task(Client.connect(engine_name, proxy.url_for(db_url)))   # frozen too
    done, _ = await asyncio.wait({query, connect}, timeout=HANG_S)
    assert not done
    after = proxy.stats()
    assert (after.bytes_to_upstream, after.bytes_to_client) == (before.bytes_to_upstream, before.bytes_to_client)
    assert after.live == 2      # both sockets kept open
    proxy.thaw()
    assert await asyncio.wait_for(query, PROMPT_S) == 1
    second = await asyncio.wait_for(connect, PROMPT_S)
    assert await second.ping() == 1
    second.close()


@both
async def test_freeze_mid_transfer_loses_nothing(proxy: FaultProxy, client: Client) -> None:
    n = 1_500_000
    proxy.bandwidth(1_000_000)      # so that the freeze lands in the middle of the result
    result = asyncio.create_task(client.blob(n))
    await eventually(lambda: proxy.stats().bytes_to_client > 200_000)
    proxy.freeze()
    held = proxy.stats().bytes_to_client
    await asyncio.sleep(0.3)
    assert proxy.stats().bytes_to_client == held < n
    proxy.bandwidth(None)
    proxy.thaw()
    assert await asyncio.wait_for(result, PROMPT_S) == "x" * n


@both
async def test_reset_breaks_current_connections_only(engine_name: str, db_url: str, proxy: FaultProxy,
                                                     client: Client) -> None:
    assert await client.ping() == 1
    proxy.reset()
    assert proxy.stats().live == 0
    with pytest.raises(CONNECTION_ERRORS[engine_name]):
        await asyncio.wait_for(client.ping(), PROMPT_S)
    assert proxy.stats().resets == 1
    fresh = await Client.connect(engine_name, proxy.url_for(db_url))
    assert await fresh.ping() == 1
    fresh.close()


@both
async def test_reset_of_a_frozen_connection(engine_name: str, proxy: FaultProxy, client: Client) -> None:
    proxy.freeze()
    query = asyncio.create_task(client.ping())
    await asyncio.sleep(0.1)
    proxy.reset()
    with pytest.raises(CONNECTION_ERRORS[engine_name]):
        await asyncio.wait_for(query, PROMPT_S)


def test_reset_sends_rst_to_both_sides() -> None:
    """On loopback sockets of our own, since what a server saw is not observable: both ends read ECONNRESET,
    not an orderly end of stream."""
    with socket.create_server(("127.0.0.1", 0)) as upstream, FaultProxy(*upstream.getsockname()[:2]) as p:
        with socket.create_connection(("127.0.0.1", p.port), timeout=PROMPT_S) as cli:
            server_side, _ = upstream.accept()
            with server_side:
                server_side.settimeout(PROMPT_S)
                cli.sendall(b"ping")
                assert server_side.recv(4) == b"ping"
                server_side.sendall(b"pong")
                assert cli.recv(4) == b"pong"
                p.reset()
                with pytest.raises(ConnectionResetError):
                    cli.recv(1)
                with pytest.raises(ConnectionResetError):
                    server_side.recv(1)


@both
async def test_latency_delays_each_direction(proxy: FaultProxy, client: Client) -> None:
    latency_s = 0.15
    proxy.latency(latency_s)
    result, took_s = await timed(client.ping())
    assert result == 1
    assert took_s >= 2 * latency_s - CLOCK_SLACK_S      # the query out and its result back, each late
    proxy.latency(0)
    assert await client.ping() == 1


@both
async def test_bandwidth_limits_a_large_result(proxy: FaultProxy, client: Client) -> None:
    n, rate = 1_000_000, 1_000_000
    proxy.bandwidth(rate)
    result, took_s = await timed(client.blob(n))
    assert result == "x" * n
    assert took_s >= 0.5 * n / rate      # 1.0 s at the limit; half of it as the bound, generously


@both
async def test_blackhole_new_accepts_and_never_answers(engine_name: str, db_url: str, proxy: FaultProxy,
                                                       client: Client) -> None:
    proxy.blackhole_new(True)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(Client.connect(engine_name, proxy.url_for(db_url)), HANG_S)
    assert proxy.stats().blackholed == 1
    assert await client.ping() == 1     # connections from before are not affected
    proxy.blackhole_new(False)
    fresh = await Client.connect(engine_name, proxy.url_for(db_url))
    assert await fresh.ping() == 1
    fresh.close()


@both
async def test_refuse_fails_new_connections(engine_name: str, db_url: str, proxy: FaultProxy,
                                            client: Client) -> None:
    proxy.refuse(True)
    with pytest.raises(CONNECTION_ERRORS[engine_name]):
        await asyncio.wait_for(Client.connect(engine_name, proxy.url_for(db_url)), PROMPT_S)
    assert proxy.stats().refused == 1
    assert await client.ping() == 1
    proxy.refuse(False)
    fresh = await Client.connect(engine_name, proxy.url_for(db_url))
    assert await fresh.ping() == 1
    fresh.close()


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@both
def test_close_leaves_no_thread_or_socket(db_url: str) -> None:
    """Closed with a client still connected: the client sees the end, and no thread or descriptor is left."""
    threads, fds = set(threading.enumerate()), _open_fds()
    parts = urlsplit(db_url)
    with FaultProxy.for_url(db_url) as p, socket.create_connection(("127.0.0.1", p.port), PROMPT_S) as cli:
        if parts.scheme == "postgresql":
            cli.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))    # SSLRequest
        assert cli.recv(1)      # PostgreSQL answers 'S' or 'N'; MariaDB greets first
        assert p.stats().live == 1
        p.close()
        assert p.stats().live == 0
        while cli.recv(65536):
            pass
    assert set(threading.enumerate()) == threads
    assert _open_fds() == fds
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p.port), PROMPT_S).close()
    with pytest.raises(RuntimeError):
        p.freeze()
