"""What `plan` reads off an engine besides a job's statements, and the rough sizes its estimates are made of.

Owns: the answers each engine gives for plan's assessment (Privileges, TableSize, LogVolume, PendingIndex), the
approximate byte width of a column type (approx_width), the one identifier form operators copy (bare_ident) and
the rates and overheads the estimates assume, each a named constant with its unit. Delegates the catalog
queries and the server settings to each engine (Engine.privileges, table_size, log_volume, pending_index,
index_serves). Everything here is an estimate and says so where it is printed: nothing is measured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from backfilld.engines.grants import Held

# How fast a server reads a table's pages in order to build an index, for a build time estimate: bytes per
# second. A guess for a server whose table is mostly cached or on SSD (100-500 MB/s is typical); a busy or
# spinning disk is slower. Printed as "about", never as a promise.
SCAN_BYTES_PER_S = 200e6

# A text column's width when nothing better is known (no length, or a length far above what rows hold):
# bytes. A guess: labels, codes and names are mostly short.
TEXT_WIDTH_GUESS = 32


@dataclass(frozen=True)
class Privileges:
    """The configured user's standing against a job's needs (grants.needs)."""

    user: str | None                      # as the server names it; None where there are no users (SQLite)
    held: tuple[Held, ...] = ()
    detail: str = ""                      # where grants do not apply, or could not be read at all
    access: dict[str, object] = field(default_factory=dict)   # SQLite: the file's and its folder's permissions
    problems: tuple[str, ...] = ()        # SQLite: what the file's permissions keep the daemon from doing


@dataclass(frozen=True)
class TableSize:
    """A table's data on disk (indexes not counted) and its average row, as the catalog has them."""

    table_bytes: int | None
    row_bytes: float | None
    source: str                           # where the figures come from, for the reader
    detail: str = ""                      # why they could not be read


@dataclass(frozen=True)
class Writes:
    """What a run writes, for LogVolume: rows, the bytes of their key and targets, its batches and the size of
    one batch's UPDATE text (what a statement-based binlog carries)."""

    rows: int
    key_bytes: int
    target_bytes: int
    batches: int
    statement_bytes: int


@dataclass(frozen=True)
class LogVolume:
    """The replication log (WAL, binlog) a run would write: an estimate from the row size and the settings."""

    total_bytes: int | None
    per_row_bytes: float | None
    settings: dict[str, str]              # the server's settings the estimate depends on, as in force
    how: str                              # the estimate's formula, in words
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class PendingIndex:
    """An index that would serve the sweep's "any row left?" check, and what it costs."""

    ddl: tuple[str, ...]                  # the statements that create it (none run by plan)
    partial: bool                         # holds only the rows left to fill (PostgreSQL, SQLite)
    entry_bytes: int                      # per row it holds, overhead included (estimate)
    note: str


# bytes of a value, by the type's first word (int(11), double precision and timestamp with time zone by theirs)
_WIDTHS = {"bool": 1, "boolean": 1, "tinyint": 1, "year": 1, "smallint": 2, "int2": 2, "mediumint": 3,
           "integer": 4, "int": 4, "int4": 4, "serial": 4, "real": 4, "float4": 4, "float": 4, "date": 4,
           "bigint": 8, "int8": 8, "bigserial": 8, "double": 8, "float8": 8, "money": 8, "time": 8, "datetime": 8,
           "timestamp": 8, "timestamptz": 8, "interval": 16, "uuid": 16, "numeric": 12, "decimal": 12}
_LENGTH = re.compile(r"\((\d+)\)")


def approx_width(type_name: str) -> int:
    """The bytes a value of the type takes in a row or index entry, roughly (a text's: its declared length,
    up to TEXT_WIDTH_GUESS)."""
    t = type_name.strip().lower()
    first = re.split(r"[\s(]", t, maxsplit=1)[0]
    if first in _WIDTHS:
        return _WIDTHS[first]
    m = _LENGTH.search(t)
    if m:
        return min(int(m.group(1)), TEXT_WIDTH_GUESS)
    return TEXT_WIDTH_GUESS


def least_width(type_name: str) -> int:
    """The fewest bytes a value of the type takes: its width if fixed (integers, dates), else 1."""
    first = re.split(r"[\s(]", type_name.strip().lower(), maxsplit=1)[0]
    return _WIDTHS.get(first, 1)


_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words a bare identifier may not be in a GRANT on any of the engines (a short list of the common ones: any
# other reserved word is quoted too only if it fails _BARE, so a rare one may come out bare)
_RESERVED = {"all", "and", "by", "check", "column", "default", "from", "grant", "group", "index", "key", "limit",
             "not", "null", "on", "or", "order", "primary", "references", "select", "table", "to", "union",
             "unique", "update", "user", "where", "with"}


def bare_ident(name: str, *, lower_only: bool) -> bool:
    """Whether the name reads the same unquoted (PostgreSQL folds unquoted names to lower case: lower_only)."""
    return bool(_BARE.fullmatch(name)) and name.lower() not in _RESERVED and (not lower_only or name == name.lower())


def index_name(job: str) -> str:
    """The name plan suggests for a job's index: bf_pending_<job>, fit for every engine's limit (63 characters)."""
    return ("bf_pending_" + re.sub(r"\W", "_", job))[:63]
