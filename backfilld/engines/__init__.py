"""Engine registry: a URL's scheme picks the engine; each driver is imported only when it is used.

Owns: the engine names, the module and class of each, and what each can do (Capabilities), declared once per
engine and readable without importing its module or driver: config validation, the throttle's choice of probes
and the job's worker limit ask these instead of testing engine names. Delegates everything else to
engines/base.py and one package per engine (postgresql/, mysql/, sqlite/). Imports nothing of backfilld at module
level, so config.py can read it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backfilld.config import DatabaseURL
    from backfilld.engines.base import Dialect, Engine


@dataclass(frozen=True)
class Capabilities:
    """What one engine can do, as far as code outside engines/ needs to know. Engine.capabilities is its engine's."""

    name: str      # as in config, logs and metrics: "postgresql", "mysql", "sqlite"
    title: str     # for people, in messages: "PostgreSQL"
    module: str    # the engine module, imported (with its driver) by create() alone
    cls: str
    # The URL names a file (sqlite:///path.db), not a server: no host, port, user or password.
    file_database: bool
    # Replicas can be configured ([[replicas]]) and their lag read.
    replicas: bool
    # Replicas streaming from the primary are found without a config entry (PostgreSQL: pg_stat_replication) and
    # their lag read from the heartbeat's replay: the heartbeat is written even with no [[replicas]].
    discovers_replicas: bool
    # What Engine.load() counts (the load signal's detail); None: the engine has no load to read, and
    # [throttle] max_load is ignored.
    load_metric: str | None
    # Engine.app_activity() sees the application's sessions on the primary ([throttle] app_probe).
    app_sessions: bool
    # Why the engine writes one batch at a time whatever its settings (the `workers_limited` detail; expected
    # there, so logged at debug level), or None where batches can be written side by side.
    single_writer: str | None


_ENGINES = (
    Capabilities("postgresql", "PostgreSQL", "backfilld.engines.postgresql", "PostgresEngine", file_database=False,
                 replicas=True, discovers_replicas=True, load_metric="active backends", app_sessions=True,
                 single_writer=None),
    Capabilities("mysql", "MySQL/MariaDB", "backfilld.engines.mysql", "MySQLEngine", file_database=False,
                 replicas=True, discovers_replicas=False, load_metric="Threads_running", app_sessions=True,
                 single_writer=None),
    Capabilities("sqlite", "SQLite", "backfilld.engines.sqlite", "SQLiteEngine", file_database=True,
                 replicas=False, discovers_replicas=False, load_metric=None, app_sessions=False,
                 single_writer="SQLite has one writer at a time"),
)
CAPABILITIES: dict[str, Capabilities] = {c.name: c for c in _ENGINES}
NAMES: tuple[str, ...] = tuple(CAPABILITIES)


def capabilities(engine: str) -> Capabilities:
    """The capabilities of the engine named as in DatabaseURL.engine; KeyError for an unknown name."""
    return CAPABILITIES[engine]


def create(url: DatabaseURL, *, lock_timeout_s: float = 0.5, connect_timeout_s: float = 10.0,
           fast_commit: bool = False, skip_locked: bool = True, statement_timeout_s: float = 60.0,
           idle_in_transaction_timeout_s: float = 10.0) -> Engine:
    caps = CAPABILITIES[url.engine]
    engine_cls: type[Engine] = getattr(importlib.import_module(caps.module), caps.cls)
    return engine_cls(url, lock_timeout_s=lock_timeout_s, connect_timeout_s=connect_timeout_s,
                      fast_commit=fast_commit, skip_locked=skip_locked, statement_timeout_s=statement_timeout_s,
                      idle_in_transaction_timeout_s=idle_in_transaction_timeout_s)


def dialect(name: str) -> Dialect:
    """The named engine's dialect: its quoting and its exact comparison (ValueError for an unknown name)."""
    if name not in CAPABILITIES:
        raise ValueError(f"unknown dialect {name!r}")
    caps = CAPABILITIES[name]
    engine_cls: type[Engine] = getattr(importlib.import_module(caps.module), caps.cls)
    return engine_cls.dialect


def __getattr__(name: str) -> Any:
    # `from backfilld.engines import Engine` keeps working without making this module import base.py (and with
    # it config.py) when it is first imported
    if name == "Engine":
        from backfilld.engines.base import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CAPABILITIES", "NAMES", "Capabilities", "Engine", "capabilities", "create", "dialect"]
