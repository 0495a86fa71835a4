"""The HTTP endpoints under hostile clients (loopback, no database): connections are capped and idle ones
closed, so they cannot hold the daemon's file descriptors, and /metrics is rendered at most once per period."""

from __future__ import annotations

import asyncio
import select
import socket
import urllib.request
from collections.abc import AsyncIterator

import pytest

from backfilld import metrics as metrics_mod
from backfilld.metrics import HTTP_MAX_CONNECTIONS, Metrics, Server


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Server]:
    monkeypatch.setattr(metrics_mod, "HTTP_IDLE_S", 1.0)   # the bound, made short for the test
    m = Metrics()
    s = Server(m, status=lambda: {"jobs": []}, ready=lambda: (True, "connected to the primary"))
    await s.listen("127.0.0.1", 0)
    s.serve_soon()
    for _ in range(100):
        if s._runner is not None:
            break
        await asyncio.sleep(0.05)
    try:
        yield s
    finally:
        await s.close()


def get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.read()


def closed_by_server(socks: list[socket.socket]) -> int:
    """How many of the sockets the server has closed (readable at once, and at their end)."""
    readable, _, _ = select.select(socks, [], [], 0.05)
    closed = 0
    for sock in readable:
        try:
            closed += sock.recv(1, socket.MSG_PEEK) == b""
        except ConnectionResetError:
            closed += 1
    return closed


async def test_connections_past_the_cap_are_closed_and_idle_ones_do_not_hold_their_place(server: Server) -> None:
    assert server.port
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(HTTP_MAX_CONNECTIONS + 8)]
    try:
        await asyncio.sleep(0.3)
        refused = closed_by_server(held)
        assert refused >= 8, f"only {refused} of {len(held)} connections over the cap were closed"
        assert server.refused >= 8
        # the ones kept sent nothing: closed once idle for HTTP_IDLE_S, and a probe gets through again
        await asyncio.sleep(1.5)
        status, body = await asyncio.to_thread(get, server.port, "/healthz")
        assert status == 200 and b'"ok"' in body
        still_open = len(held) - closed_by_server(held)
        assert still_open == 0, f"{still_open} idle connections were kept past HTTP_IDLE_S"
    finally:
        for s in held:
            s.close()


async def test_metrics_are_rendered_at_most_once_per_period(server: Server) -> None:
    m = server.metrics
    assert server.port
    m.rows.labels("j").inc(1)
    _, first = await asyncio.to_thread(get, server.port, "/metrics")
    m.rows.labels("j").inc(1)
    _, again = await asyncio.to_thread(get, server.port, "/metrics")
    assert again == first, "rendered again within METRICS_REUSE_S"
    await asyncio.sleep(metrics_mod.METRICS_REUSE_S + 0.1)
    _, later = await asyncio.to_thread(get, server.port, "/metrics")
    assert b'backfilld_rows_processed_total{backfill_job="j"} 2.0' in later
