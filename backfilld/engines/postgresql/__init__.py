"""PostgreSQL: the engine (engine.py: dialect, connection, catalog, batches, error mapping) and its sync triggers
(triggers.py). Importing this package imports the driver; backfilld.engines.create() does so only when a URL names
PostgreSQL.
"""

from backfilld.engines.postgresql.engine import CODECS, PostgresDialect, PostgresEngine

__all__ = ['CODECS', 'PostgresDialect', 'PostgresEngine']
