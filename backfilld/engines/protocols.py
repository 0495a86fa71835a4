"""The engine boundary as protocols: a small driver every engine is, and the optional abilities some engines have.

Owns: what code outside engines/ may ask of a connection, split by concern, so that each part states the least it
needs (the throttle's lag probes take a Replication, the writer pool a Driver) and an optional ability is a type,
not a method that raises NotImplementedError:

  Driver       one connection: connect, close, statements, transactions, error translation, a second connection
  Replication  the heartbeat and the server's own lag figures (PostgreSQL, MySQL/MariaDB; not SQLite)
  AppSessions  the application's sessions on the primary and the server's load (PostgreSQL, MySQL/MariaDB)

engines.Capabilities says the same without importing an engine (config validation and the throttle's choice of
probes read it); tests/unit/test_engine_capabilities.py holds the two to agree. engines/base.py's Engine is the
shared implementation of Driver plus the job-level operations every engine has (catalog, lease, state table,
batches); each engine package adds the optional abilities it has. Delegates nothing: declarations only.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from backfilld.config import DatabaseURL
    from backfilld.engines import Capabilities
    from backfilld.engines.base import AppActivity, Dialect, Stmt
    from backfilld.errors import EngineError


@runtime_checkable
class Driver(Protocol):
    """One connection to one database."""

    url: DatabaseURL
    role: str   # what a second connection is for (clone); "" for the job's own

    @property
    def name(self) -> str: ...

    @property
    def dialect(self) -> Dialect: ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def reconnect(self) -> None: ...

    async def fetch(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    async def execute(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> int: ...

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    def translate(self, exc: BaseException) -> EngineError: ...

    def driver_errors(self) -> contextlib.AbstractContextManager[None]: ...

    def clone(self, role: str) -> Driver: ...


@runtime_checkable
class Replication(Driver, Protocol):
    """A server that replicates: backfilld's heartbeat row, and the lag figures the server keeps itself."""

    def heartbeat_ddl(self, table: str) -> str: ...

    async def write_heartbeat(self, table: str, writer: str, ts: float) -> int | None:
        """Store this host's clock; returns the WAL position just past the write where the engine has one."""

    async def read_heartbeat(self, table: str, writer: str) -> float | None: ...

    async def native_lag(self) -> tuple[float, str]:
        """The server's own lag figure on a replica: (seconds, detail); inf when replication is stopped."""

    async def attached_replicas(self) -> list[tuple[str, int]]:
        """On a primary: replicas streaming from it, as (name, replayed WAL position); [] where the server
        cannot list them (MySQL/MariaDB: Capabilities.discovers_replicas is False)."""


@runtime_checkable
class AppSessions(Driver, Protocol):
    """A server whose sessions backfilld can see: the application's, the lock waits backfilld causes, the load."""

    async def app_activity(self) -> AppActivity:
        """The application on the primary, from this connection: its active sessions, and those waiting for a
        lock a backfilld session holds (see AppActivity)."""

    async def load(self) -> float:
        """The primary's load: statements running now, other than ours."""



# Callers that found an ability in the engine's Capabilities take the engine as that ability here; TypeError (a
# bug: config validation keeps [[replicas]] and these probes from the engines without them) when it lacks it.
def replication(engine: object) -> Replication:
    if not isinstance(engine, Replication):
        raise TypeError(f"{type(engine).__name__} has no Replication ability")
    return engine


def app_sessions(engine: object) -> AppSessions:
    if not isinstance(engine, AppSessions):
        raise TypeError(f"{type(engine).__name__} has no AppSessions ability")
    return engine
