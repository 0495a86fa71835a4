"""SQLite's part of `backfilld rehearse`: its types as Families and its scratch columns; no fit probe.

Owns: how values of other engines are held in a SQLite scratch table (dates and times as ISO text, decimals as
NUMERIC, as an application storing them in SQLite would). SQLite stores any value in any column of a table that
is not STRICT (a VARCHAR(10) holds a longer text; the declared type is only an affinity), so nothing is checked
against the target column (Rehearsal.fit_unchecked); STRICT tables are not checked either. Delegates the
statements around it to engines/rehearsal.py.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

from backfilld.engines.catalog import Column
from backfilld.engines.rehearsal import Family, Rehearsal
from backfilld.engines.sqldialect import Dialect


class SQLiteRehearsal(Rehearsal):
    name = "sqlite"
    fit_unchecked = ("SQLite stores any value in any column of a table that is not STRICT (declared lengths are "
                     "not enforced); not checked")

    def family(self, column: Column) -> Family:
        t = column.type.upper()
        named = {"DATE": "date", "DATETIME": "datetime", "TIMESTAMP": "datetime", "TIME": "time",
                 "BOOLEAN": "bool", "BOOL": "bool", "JSON": "json", "UUID": "uuid"}
        if t in named:
            return Family(named[t])
        # SQLite's affinity rules, in their order
        if "INT" in t:
            return Family("int")
        if any(part in t for part in ("CHAR", "CLOB", "TEXT")):
            return Family("text")
        if "BLOB" in t or not t.strip():
            return Family("other")   # no affinity: each value keeps its own type
        if any(part in t for part in ("REAL", "FLOA", "DOUB")):
            return Family("float")
        return Family("decimal")

    def scratch_type(self, family: Family) -> str:
        return {"int": "INTEGER", "decimal": "NUMERIC", "float": "REAL", "text": "TEXT", "bytes": "BLOB",
                "bool": "INTEGER", "other": ""}.get(family.kind, "TEXT")

    def bindable(self, family: Family, value: Any) -> Any:
        if value is None or isinstance(value, (int, float, str, bytes)):
            return int(value) if isinstance(value, bool) else value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, decimal.Decimal):
            return int(value) if value == value.to_integral_value() and value.is_finite() else str(value)
        if isinstance(value, dt.datetime):
            return value.isoformat(sep=" ")
        if isinstance(value, (dt.date, dt.time)):
            return value.isoformat()
        if isinstance(value, (dict, list)):
            return json.dumps(value)
        return str(value)

    def temp_create(self, d: Dialect, name: str, columns: Any) -> str:
        cols = ", ".join(f"{d.quote(c)} {t}".rstrip() for c, t in columns)
        return f"CREATE TEMP TABLE {d.quote(name)} ({cols})"

    def temp_ref(self, d: Dialect, name: str) -> str:
        return f"temp.{d.quote(name)}"

    def temp_drop(self, d: Dialect, name: str) -> str:
        return f"DROP TABLE IF EXISTS temp.{d.quote(name)}"

    def fit_probes(self, value: str, column: Column) -> list[str]:
        return []


REHEARSAL = SQLiteRehearsal()
