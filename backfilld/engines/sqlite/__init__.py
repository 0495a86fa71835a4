"""SQLite: the engine (engine.py: dialect, connection, catalog, batches, error mapping) and its sync triggers
(triggers.py). Importing this package imports the driver; backfilld.engines.create() does so only when a URL names
SQLite.
"""

from backfilld.engines.sqlite.engine import SQLiteDialect, SQLiteEngine

__all__ = ['SQLiteDialect', 'SQLiteEngine']
