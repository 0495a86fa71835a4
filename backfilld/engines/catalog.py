"""What the live catalog says about a job's table: its columns (type, nullability, collation) and keys.

Owns: Column and TableInfo, as each engine's table_info reads them; everything that checks a job against its
table or builds its statements takes them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    collation: str | None = None    # MySQL text columns: the column's collation (charset is its prefix)
    generated: bool = False         # computed by the database (GENERATED ALWAYS AS, identity ALWAYS): never set
    on_update: bool = False         # the server sets it in any UPDATE of the row (MySQL ON UPDATE ...)
    # the server gives it a value on INSERT: identity or serial (a nextval default), AUTO_INCREMENT, SQLite's
    # rowid (INTEGER PRIMARY KEY): what a lookup table's id must be
    auto_id: bool = False


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: dict[str, Column]
    primary_key: tuple[str, ...]
    unique_keys: tuple[tuple[str, ...], ...] = field(default=())
    update_triggers: tuple[str, ...] = ()   # triggers that fire on the UPDATEs a job runs (plan names them)

