"""MySQL/MariaDB: the engine (engine.py: dialect, connection, catalog, batches, error mapping) and its sync triggers
(triggers.py). Importing this package imports the driver; backfilld.engines.create() does so only when a URL names
MySQL/MariaDB.
"""

from backfilld.engines.mysql.engine import MySQLDialect, MySQLEngine

__all__ = ['MySQLDialect', 'MySQLEngine']
