"""backfilld: a replication-aware online backfill daemon."""

__version__ = "0.1.0"
