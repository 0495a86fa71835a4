"""A fault-injecting TCP proxy on loopback, between backfilld (or a test's client) and one database server.

Owns: accepting connections on 127.0.0.1, forwarding each one to the upstream server, and the faults set on
it: freeze, reset, refuse, blackhole for new connections, latency and a bandwidth limit; counters of what it
carried. Which server to put it in front of is the test's (a URL from tests/conftest.py, a pair's
``primary_url`` / ``replica_url`` from tests/harness/replication.py).

    with FaultProxy.for_url(pg_url) as proxy:      # or FaultProxy("127.0.0.1", 5432)
        url = proxy.url_for(pg_url)                # same URL, host:port of the proxy
        ...                                        # run backfilld (in-process or CLI) against url
        proxy.freeze()                             # nothing forwarded either way, sockets kept open
        proxy.thaw()                               # forwarding resumes; no byte lost
        proxy.reset()                              # every current connection: RST to both sides
        proxy.latency(0.2)                         # each chunk 0.2 s late, in each direction
        proxy.bandwidth(100_000)                   # bytes/s, per connection and direction
        proxy.refuse(True)                         # new connections reset at once
        proxy.blackhole_new(True)                  # new connections accepted, never forwarded or answered
        proxy.clear()                              # every fault off
        proxy.stats()                              # ProxyStats: accepted, live, bytes each way, ...

From a pytest fixture:

    @pytest.fixture
    def proxy(db_url):
        yield from fault_proxy_fixture(db_url)

Faults apply to the connections already open and to new ones, except ``refuse`` and ``blackhole_new``, which
decide what happens to a connection when it is accepted (a connection blackholed stays so until it closes).

The proxy runs its own event loop in a daemon thread, so sync tests, async tests (whatever their loop) and
backfilld run as a subprocess all see the same proxy; every control method is thread-safe and returns once
the proxy's loop has applied it. Do not call them from inside the proxy's own loop (nothing there is ours).

How each fault is made:

- freeze: each direction of each connection waits before reading from its source and again before writing to
  its destination, until thawed. Bytes already read stay in that direction's queue; the kernel's socket
  buffers hold the rest and then push back on the sender (TCP flow control), so nothing is dropped and a
  client's writes eventually block, as with a stalled network path.
- reset: SO_LINGER (on, 0 s) on both sockets of every current connection, then close: the kernel sends RST,
  not FIN, and discards what was unsent, so each side sees "connection reset" on its next read or write.
- refuse: a new connection is accepted and reset at once (RST, as above). The client sees its connect
  succeed and its first read or write fail; a port with no listener at all (ECONNREFUSED) is a server that
  is down, which a test makes by closing the proxy or stopping the server.
- blackhole_new: a new connection is accepted and never connected upstream; what the client sends is read
  and discarded, nothing is ever sent back. Its connect succeeds and its first read hangs until the client's
  own timeout.
- latency: each direction has a reader task that stamps every chunk with the time it arrived and a writer
  task that delivers it at arrival + latency, so order is kept and the delay does not add up chunk after
  chunk (throughput is unchanged); a round trip is late by twice the latency, once each way. A change (or
  clearing it) applies at once to chunks still waiting.
- bandwidth: each direction of each connection writes in slices of about RATE_SLICE_S worth of bytes and
  waits after each until ``bytes written / rate`` has passed (no burst beyond one slice).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

__all__ = ["FaultProxy", "ProxyStats", "fault_proxy_fixture"]

HOST = "127.0.0.1"
# bytes read from a socket at once: a read returns what has arrived, up to this
CHUNK_BYTES = 64 * 1024
# chunks queued per direction between its reader and its writer: bounds what a frozen or slowed direction
# holds in memory (CHUNK_BYTES each) before it stops reading and TCP pushes back on the sender
QUEUE_CHUNKS = 16
# under a bandwidth limit, seconds of traffic written at once: small enough that the rate is even within a
# fraction of a second, large enough that a slice is not a handful of bytes
RATE_SLICE_S = 0.02
# seconds a control call waits for the proxy's loop to apply it: the loop does nothing slow, so only a dead
# loop takes this long
CONTROL_TIMEOUT_S = 10.0
# seconds close() waits for the loop's thread to end
CLOSE_TIMEOUT_S = 10.0
_LINGER_RST = struct.pack("ii", 1, 0)   # struct linger {l_onoff = 1, l_linger = 0}: close sends RST


@dataclass(frozen=True)
class ProxyStats:
    """What the proxy has carried since it started (``live``: connections open now)."""

    accepted: int               # connections accepted, whatever happened to them then
    live: int                   # connections open now (accepted and not yet closed on the proxy's side)
    refused: int                # accepted under refuse(True) and reset at once
    blackholed: int             # accepted under blackhole_new(True)
    resets: int                 # connections reset by reset() or after an error on one side
    bytes_to_upstream: int      # client -> server
    bytes_to_client: int        # server -> client


class _Conn:
    """One accepted connection: the client's side, the upstream's side once connected, the handler task."""

    def __init__(self, client: asyncio.StreamWriter, task: asyncio.Task[None]) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.task = task
        self.aborted = False

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client, self.upstream) if w is not None]

    def abort(self, *, rst: bool) -> None:
        """Close both sides now, discarding unsent bytes; with ``rst`` the peers get RST, not FIN. The handler
        may be parked on a fault (frozen): the caller cancels it when it must end now."""
        self.aborted = True
        for w in self.writers():
            sock = w.get_extra_info("socket")
            if rst and sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            w.transport.abort()


class FaultProxy:
    """A TCP proxy from 127.0.0.1:``port`` (or another loopback ``listen_host``) to
    ``upstream_host``:``upstream_port`` that injects faults on demand.

    Listens from construction on; ``close()`` (or leaving the ``with`` block) stops it, closes every
    connection and ends its thread.
    """

    def __init__(self, upstream_host: str, upstream_port: int, *, listen_host: str = HOST) -> None:
        # listen_host: another loopback address (127.0.0.2) reaches the server by a name its certificate lacks
        self.listen_host = listen_host
        self.upstream = (upstream_host, upstream_port)
        # faults, read by the connections on the loop's thread, changed only there (_set)
        self._frozen = False
        self._refusing = False
        self._blackholing = False
        self._latency_s = 0.0
        self._rate_bytes_per_s: float | None = None
        self._changed = asyncio.Event()     # set and replaced on every change: wakes whoever waits on a fault
        self._conns: set[_Conn] = set()
        self._counts = dict.fromkeys(("accepted", "refused", "blackholed", "resets", "bytes_to_upstream",
                                      "bytes_to_client"), 0)
        self._closed = False

        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((listen_host, 0))
            self._listener.listen(128)
            self.port: int = self._listener.getsockname()[1]
            self._loop = asyncio.new_event_loop()
        except BaseException:
            self._listener.close()
            raise
        self._thread = threading.Thread(target=self._run_loop, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        try:
            self._server: asyncio.Server = self._call(self._start())
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_url(cls, url: str) -> Self:
        """A proxy in front of the server a database URL names (its host and port)."""
        parts = urlsplit(url)
        if not parts.hostname or parts.port is None:
            raise ValueError(f"{parts.scheme or 'the'} URL names no host and port to proxy")
        return cls(parts.hostname, parts.port)

    def url_for(self, url: str) -> str:
        """``url`` with its host:port replaced by the proxy's (user, password, database, query kept)."""
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"{parts.scheme or 'the'} URL names no host to replace")
        userinfo, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{self.listen_host}:{self.port}"))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy({self.listen_host}:{self.port} -> {self.upstream[0]}:{self.upstream[1]})"

    # ----------------------------------------------------------------------------------------------------------
    # faults: each settable and clearable at any time, from any thread but the proxy's own

    def freeze(self) -> None:
        """Stop forwarding both ways on every connection, current and new; sockets stay open."""
        self._set(_frozen=True)

    def thaw(self) -> None:
        """Resume forwarding after freeze(): what was held back is delivered, in order."""
        self._set(_frozen=False)

    def reset(self) -> None:
        """Reset every current connection (RST to client and upstream); new connections are unaffected."""
        self._call(self._reset_all())

    def refuse(self, on: bool = True) -> None:
        """Reset each new connection as soon as it is accepted (while on)."""
        self._set(_refusing=bool(on))

    def blackhole_new(self, on: bool = True) -> None:
        """Accept each new connection and never forward or answer it (while on)."""
        self._set(_blackholing=bool(on))

    def latency(self, seconds: float) -> None:
        """Delay every chunk by ``seconds`` in each direction (0 clears it)."""
        if seconds < 0:
            raise ValueError(f"latency must be >= 0 s, got {seconds}")
        self._set(_latency_s=float(seconds))

    def bandwidth(self, bytes_per_s: float | None) -> None:
        """Limit each direction of each connection to ``bytes_per_s`` (None or 0 clears it)."""
        if bytes_per_s is not None and bytes_per_s < 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s or None, got {bytes_per_s}")
        self._set(_rate_bytes_per_s=float(bytes_per_s) if bytes_per_s else None)

    def clear(self) -> None:
        """Every fault off (thaw, no refuse, no blackhole, no latency, no bandwidth limit)."""
        self._set(_frozen=False, _refusing=False, _blackholing=False, _latency_s=0.0, _rate_bytes_per_s=None)

    def stats(self) -> ProxyStats:
        return ProxyStats(live=len(self._conns), **self._counts)

    def close(self) -> None:
        """Stop listening, close every connection, stop the loop and end its thread. Idempotent."""
        if self._closed:
            return
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._closed = True
        self._thread.join(CLOSE_TIMEOUT_S)
        self._listener.close()      # already closed by the server, unless the start failed

    # ----------------------------------------------------------------------------------------------------------
    # the loop's thread

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
            tasks = asyncio.all_tasks(self._loop)
            for t in tasks:
                t.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        finally:
            self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("FaultProxy controls are for other threads; the proxy's loop would deadlock")
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self!r} is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CONTROL_TIMEOUT_S)

    def _set(self, **faults: Any) -> None:
        self._call(self._apply(faults))

    async def _apply(self, faults: dict[str, Any]) -> None:
        for name, value in faults.items():
            setattr(self, name, value)
        self._changed.set()
        self._changed = asyncio.Event()

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, sock=self._listener, limit=CHUNK_BYTES)

    async def _reset_all(self) -> None:
        conns = list(self._conns)
        for c in conns:
            c.abort(rst=True)
            c.task.cancel()
        self._counts["resets"] += len(conns)
        await asyncio.gather(*(c.task for c in conns), return_exceptions=True)

    async def _shutdown(self) -> None:
        self._server.close()
        conns = list(self._conns)
        for c in conns:
            c.abort(rst=False)
            c.task.cancel()
        await asyncio.gather(*(c.task for c in conns), return_exceptions=True)
        await self._server.wait_closed()

    async def _wait_change(self, timeout_s: float | None) -> None:
        """Until a fault changes or ``timeout_s`` passes (None: until a change)."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await changed.wait()

    async def _while_frozen(self) -> None:
        while self._frozen:
            await self._wait_change(None)

    async def _until(self, deadline: Callable[[], float]) -> None:
        """Until the loop's clock reaches ``deadline()``, recomputed whenever a fault changes."""
        loop = asyncio.get_running_loop()
        while (left := deadline() - loop.time()) > 0:
            await self._wait_change(left)

    # ----------------------------------------------------------------------------------------------------------
    # connections

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Conn(client_w, task)
        self._conns.add(conn)
        self._counts["accepted"] += 1
        try:
            if self._refusing:
                self._counts["refused"] += 1
                conn.abort(rst=True)
            elif self._blackholing:
                self._counts["blackholed"] += 1
                while await client_r.read(CHUNK_BYTES):
                    pass
            else:
                await self._forward(conn, client_r)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # reset() or close() ended it. Only we cancel this task, and it must not end cancelled: Python
            # 3.11's start_server callback calls task.exception() on it, which raises and logs a traceback.
            pass
        finally:
            self._conns.discard(conn)
            if not conn.aborted:
                for w in conn.writers():
                    w.close()

    async def _forward(self, conn: _Conn, client_r: asyncio.StreamReader) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream, limit=CHUNK_BYTES)
        except OSError:
            conn.abort(rst=True)    # as the upstream refused us: the client sees its connection fail
            return
        if conn.aborted:            # reset or closed while connecting
            up_w.transport.abort()
            return
        conn.upstream = up_w
        await asyncio.gather(self._pump(conn, client_r, up_w, "bytes_to_upstream"),
                             self._pump(conn, up_r, conn.client, "bytes_to_client"))

    async def _pump(self, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter, counter: str) -> None:
        """One direction: a reader stamps chunks with their arrival time, this task delivers them in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes | BaseException]] = asyncio.Queue(QUEUE_CHUNKS)

        async def read() -> None:
            while True:
                await self._while_frozen()
                try:
                    data: bytes | BaseException = await src.read(CHUNK_BYTES)
                except OSError as exc:
                    data = exc
                await queue.put((loop.time(), data))
                if not isinstance(data, bytes) or not data:
                    return

        reader = asyncio.create_task(read(), name=f"faultproxy-{self.port}-{counter}-read")
        next_free = 0.0     # under a bandwidth limit, the loop time before which the next slice must wait
        try:
            while True:
                arrived, data = await queue.get()
                if isinstance(data, BaseException):
                    raise data
                if not data:
                    if dst.can_write_eof():
                        dst.write_eof()     # half-close, as the source did
                    return
                await self._until(lambda arrived=arrived: arrived + self._latency_s)
                view = memoryview(data)
                while view:
                    await self._until(lambda free=next_free: free if self._rate_bytes_per_s else 0.0)
                    await self._while_frozen()
                    rate = self._rate_bytes_per_s
                    n = len(view) if rate is None else max(1, min(len(view), int(rate * RATE_SLICE_S)))
                    dst.write(view[:n])
                    self._counts[counter] += n
                    view = view[n:]
                    if rate is not None:
                        next_free = max(next_free, loop.time()) + n / rate
                    await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            # one side failed: the other sees it fail too, as it would without the proxy
            if not conn.aborted:
                self._counts["resets"] += 1
                conn.abort(rst=True)
        finally:
            reader.cancel()


def fault_proxy_fixture(url: str) -> Iterator[FaultProxy]:
    """For ``yield from`` in a pytest fixture: a proxy in front of ``url``'s server, closed afterwards."""
    with FaultProxy.for_url(url) as proxy:
        yield proxy
