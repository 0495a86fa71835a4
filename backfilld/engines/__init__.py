"""Engine registry: a URL's scheme picks the engine; each driver is imported only when it is used."""

from __future__ import annotations

import importlib

from backfilld.config import DatabaseURL
from backfilld.engines.base import Dialect, Engine

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


def dialect(name: str) -> Dialect:
    """The named engine's dialect: its quoting and its exact comparison (ValueError for an unknown name)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dialect {name!r}")
    module, cls = _REGISTRY[name]
    engine_cls: type[Engine] = getattr(importlib.import_module(module), cls)
    return engine_cls.dialect


__all__ = ["Dialect", "Engine", "create", "dialect"]
