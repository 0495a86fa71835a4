"""Engine registry: a URL's scheme picks the engine; each driver is imported only when it is used."""

from __future__ import annotations

import importlib

from backfilld.config import DatabaseURL
from backfilld.engines.base import Engine

_REGISTRY = {
    "postgresql": ("backfilld.engines.postgresql", "PostgresEngine"),
    "mysql": ("backfilld.engines.mysql", "MySQLEngine"),
    "sqlite": ("backfilld.engines.sqlite", "SQLiteEngine"),
}


def create(url: DatabaseURL, *, lock_timeout_s: float = 0.5, connect_timeout_s: float = 10.0,
           fast_commit: bool = False, skip_locked: bool = True) -> Engine:
    module, cls = _REGISTRY[url.engine]
    engine_cls: type[Engine] = getattr(importlib.import_module(module), cls)
    return engine_cls(url, lock_timeout_s=lock_timeout_s, connect_timeout_s=connect_timeout_s,
                      fast_commit=fast_commit, skip_locked=skip_locked)


__all__ = ["Engine", "create"]
