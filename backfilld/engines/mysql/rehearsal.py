"""MySQL's and MariaDB's part of `backfilld rehearse`: its types as Families, its scratch columns, its fit probe,
and its warnings.

Owns: how a value is checked against a MySQL column (MySQLRehearsal.fit_probes) and how strict mode is brought to
a SELECT (fetch_checked). A SELECT never fails where an UPDATE under strict mode would: it converts with a
warning ('abc' + 0 is 0, 1 / 0 is NULL) and CAST cuts what is too long. So a rehearsal statement that warns
counts as failing (its range is split until the row that warns is found), and the fit probe spells out the
column's rules in SQL: a text's length in characters (bytes for the TEXT and BLOB types) after conversion to the
column's character set, characters that character set cannot hold, an integer's range for its type and sign,
DECIMAL(p,s)'s range and rounding, dates that do not parse. CHECK constraints, ENUM/SET members and the
TIMESTAMP range are not checked. Delegates the statements around it to engines/rehearsal.py.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import warnings as py_warnings
from typing import Any

from backfilld.engines.catalog import Column
from backfilld.engines.mysql.engine import base_type, single_precision
from backfilld.engines.rehearsal import Family, Rehearsal, RowFailed, as_number
from backfilld.engines.sqldialect import Dialect, Stmt
from backfilld.errors import EngineError, RetryableError

# the session's mode, and the warnings of the statement before (SHOW WARNINGS does not clear them)
SQL_MODE = "SELECT @@SESSION.sql_mode"
SHOW_WARNINGS = "SHOW WARNINGS"

# signed range, unsigned top, by integer type
_INT_RANGES = {"tinyint": (-2**7, 2**7 - 1, 2**8 - 1), "smallint": (-2**15, 2**15 - 1, 2**16 - 1),
               "mediumint": (-2**23, 2**23 - 1, 2**24 - 1), "int": (-2**31, 2**31 - 1, 2**32 - 1),
               "integer": (-2**31, 2**31 - 1, 2**32 - 1), "bigint": (-2**63, 2**63 - 1, 2**64 - 1)}
# bytes the TEXT and BLOB types hold
_LONG_BYTES = {"tinytext": 255, "text": 65_535, "mediumtext": 16_777_215, "longtext": 4_294_967_295,
               "tinyblob": 255, "blob": 65_535, "mediumblob": 16_777_215, "longblob": 4_294_967_295}
# a string strict mode takes as a number (leading and trailing spaces allowed)
_NUMERIC_TEXT = r"^[[:space:]]*[-+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?[[:space:]]*$"


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


class MySQLRehearsal(Rehearsal):
    name = "mysql"

    def family(self, column: Column) -> Family:  # noqa: C901 - one branch per kind
        t, base = column.type.lower(), base_type(column)
        if base in _INT_RANGES or base == "year":
            return Family("int", unsigned="unsigned" in t)
        m = re.match(r"(decimal|numeric)\((\d+),\s*(\d+)\)", t)
        if m:
            return Family("decimal", precision=int(m.group(2)), scale=int(m.group(3)))
        if base in ("float", "double", "real"):
            return Family("float")
        m = re.match(r"(var)?char\((\d+)\)", t)
        if m:
            return Family("text", length=int(m.group(2)))
        if base in ("tinytext", "text", "mediumtext", "longtext", "enum", "set"):
            return Family("text")
        m = re.match(r"(var)?binary\((\d+)\)", t)
        if m:
            return Family("bytes", length=int(m.group(2)))
        if base in ("tinyblob", "blob", "mediumblob", "longblob"):
            return Family("bytes")
        simple = {"date": "date", "datetime": "datetime", "timestamp": "datetime", "time": "time", "json": "json"}
        return Family(simple.get(base, "other"))

    def scratch_type(self, family: Family) -> str:
        k = family.kind
        if k == "int":
            return "BIGINT UNSIGNED" if family.unsigned else "BIGINT"
        if k == "decimal":
            if family.precision and family.precision <= 65 and (family.scale or 0) <= 30:
                return f"DECIMAL({family.precision},{family.scale or 0})"
            return "DECIMAL(65,30)"
        if k == "text":
            return f"VARCHAR({family.length})" if family.length and family.length <= 16_383 else "LONGTEXT"
        if k == "bytes":
            return f"VARBINARY({family.length})" if family.length and family.length <= 65_532 else "LONGBLOB"
        return {"float": "DOUBLE", "bool": "BOOLEAN", "date": "DATE", "datetime": "DATETIME(6)",
                "datetime_tz": "DATETIME(6)", "time": "TIME(6)", "json": "JSON", "uuid": "CHAR(36)"}.get(k, "LONGTEXT")

    def bindable(self, family: Family, value: Any) -> Any:  # noqa: C901 - one branch per kind
        if value is None:
            return None
        k = family.kind
        if k == "int":
            n = as_number(value)
            if n != n.to_integral_value():
                raise ValueError(f"{value!r} is not an integer")
            return int(n)
        if k == "decimal":
            n = as_number(value)
            if not n.is_finite():
                raise ValueError(f"{value!r} has no MySQL DECIMAL")
            return n
        if k == "float":
            f = float(value)
            if f != f or f in (float("inf"), float("-inf")):
                raise ValueError(f"{value!r} has no MySQL DOUBLE")
            return f
        if k == "bool":
            return int(value in ("t", "true", "1") if isinstance(value, str) else bool(value))
        if k == "bytes":
            return value.encode() if isinstance(value, str) else bytes(value)
        if k in ("date", "datetime", "datetime_tz"):
            return _datetime(value, k)
        if k == "time":
            return value if isinstance(value, (dt.time, dt.timedelta)) else dt.time.fromisoformat(str(value))
        if k == "json":
            return value if isinstance(value, str) else json.dumps(value)
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value).decode("utf-8")
        return str(value)

    def fit_probes(self, value: str, column: Column) -> list[str]:
        probe = self._probe(value, column)
        return [f"CASE WHEN {value} IS NULL THEN NULL {probe} END"] if probe else []

    def _probe(self, v: str, column: Column) -> str:  # noqa: C901 - one branch per kind of type
        t, base = column.type.lower(), base_type(column)
        numeric_text = (f"WHEN CHARSET({v}) <> 'binary' AND NOT ({v} REGEXP {_literal(_NUMERIC_TEXT)}) "
                        f"THEN {_literal(f'not a number, which {t} refuses')} ")
        if base in _INT_RANGES:
            lo, hi, top = _INT_RANGES[base]
            lo, hi = (0, top) if "unsigned" in t else (lo, hi)
            return (numeric_text
                    + f"WHEN {v} < {lo} OR {v} > {hi} THEN {_literal(f'out of range for {t}')} "
                    f"WHEN {v} <> ROUND({v}) THEN CONCAT({_literal('rounded: stored as ')}, ROUND({v})) ")
        m = re.match(r"(decimal|numeric)\((\d+),\s*(\d+)\)", t)
        if m:
            p, s = int(m.group(2)), int(m.group(3))
            return (numeric_text
                    + f"WHEN ABS(ROUND({v}, {s})) >= {10 ** (p - s)} THEN {_literal(f'out of range for {t}')} "
                    f"WHEN ROUND({v}, {s}) <> {v} THEN CONCAT({_literal('rounded: stored as ')}, "
                    f"CAST(ROUND({v}, {s}) AS DECIMAL({p},{s}))) ")
        if base in ("float", "double", "real"):
            return (numeric_text + (f"WHEN ABS({v}) > 3.402823466E+38 THEN {_literal(f'out of range for {t}')} "
                                    if single_precision(column) else ""))
        cs = column.collation.split("_")[0] if column.collation else None
        m = re.match(r"(var)?char\((\d+)\)", t)
        if m:
            n = int(m.group(2))
            text = f"CONVERT({v} USING {cs})" if cs else v
            return (f"WHEN CHAR_LENGTH(RTRIM({text})) > {n} THEN CONCAT({_literal(f'too long for {t}: ')}, "
                    f"CHAR_LENGTH(RTRIM({text})), {_literal(' characters')}) "
                    f"WHEN CHAR_LENGTH({text}) > {n} THEN {_literal(f'trailing spaces cut to {n} characters')} "
                    + self._charset(v, cs))
        if base in _LONG_BYTES and not base.endswith("blob"):
            text = f"CONVERT({v} USING {cs})" if cs else v
            return (f"WHEN LENGTH({text}) > {_LONG_BYTES[base]} THEN CONCAT({_literal(f'too long for {t}: ')}, "
                    f"LENGTH({text}), {_literal(' bytes')}) " + self._charset(v, cs))
        m = re.match(r"(var)?binary\((\d+)\)", t)
        limit = int(m.group(2)) if m else _LONG_BYTES.get(base)
        if limit is not None:
            return (f"WHEN LENGTH({v}) > {limit} THEN CONCAT({_literal(f'too long for {t}: ')}, LENGTH({v}), "
                    f"{_literal(' bytes')}) ")
        cast = {"date": "DATE", "datetime": "DATETIME(6)", "timestamp": "DATETIME(6)", "time": "TIME(6)"}.get(base)
        if cast:
            return (f"WHEN CHARSET({v}) <> 'binary' AND CAST({v} AS {cast}) IS NULL "
                    f"THEN {_literal(f'not a valid {base}, which {t} refuses')} ")
        if base == "json" and not column.collation:   # MySQL's JSON type (MariaDB's JSON is LONGTEXT)
            return f"WHEN JSON_VALID({v}) = 0 THEN {_literal('not valid JSON')} "
        return ""

    def _charset(self, v: str, cs: str | None) -> str:
        """A text with characters the column's character set cannot hold (they would turn into '?')."""
        if not cs or cs in ("utf8mb4", "binary"):
            return ""
        return (f"WHEN CAST(CONVERT(CONVERT({v} USING {cs}) USING utf8mb4) AS BINARY) <> "
                f"CAST(CONVERT({v} USING utf8mb4) AS BINARY) "
                f"THEN {_literal(f'holds characters {cs} cannot hold')} ")

    def temp_create(self, d: Dialect, name: str, columns: Any) -> str:
        return super().temp_create(d, name, columns) + " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"

    def temp_ref(self, d: Dialect, name: str) -> str:
        return d.quote(name)   # a session's temporary table hides a permanent one of the same name from it

    def temp_drop(self, d: Dialect, name: str) -> str:
        return f"DROP TEMPORARY TABLE IF EXISTS {d.quote(name)}"

    async def fetch_checked(self, engine: Any, stmt: Stmt, values: dict[str, Any], *,
                            warnings: bool = True) -> list[tuple[Any, ...]]:
        if not warnings:
            return await super().fetch_checked(engine, stmt, values, warnings=False)
        # the statement reads a table, so that its warnings replace those of the statement before
        try:
            with py_warnings.catch_warnings():
                py_warnings.simplefilter("ignore")   # aiomysql's own report of them
                rows = list(await engine.fetch(stmt, values))
                found = await engine.fetch(SHOW_WARNINGS)
        except RetryableError:
            raise
        except EngineError as exc:
            raise RowFailed(str(exc)) from None
        problems = [f"{code}: {text}" for level, code, text in found if str(level).lower() != "note"]
        if problems:
            raise RowFailed("warns " + "; ".join(dict.fromkeys(problems))
                            + " (an UPDATE under strict mode fails on it)")
        return rows

    async def mode(self, engine: Any) -> str | None:
        [(mode,)] = await engine.fetch(SQL_MODE)
        strict = any(m in str(mode).split(",") for m in ("STRICT_TRANS_TABLES", "STRICT_ALL_TABLES"))
        return (f"sql_mode {mode or '(empty)'}: "
                + ("strict, so a value that does not fit fails its batch" if strict else
                   "not strict, so a value that does not fit is stored cut or converted, with a warning"))


def _datetime(value: Any, kind: str) -> Any:
    if isinstance(value, dt.datetime):
        v = value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value
        return v.date() if kind == "date" else v
    if isinstance(value, dt.date):
        return value if kind == "date" else dt.datetime(value.year, value.month, value.day)
    parsed = dt.datetime.fromisoformat(str(value))   # ValueError: the row is not copied
    return _datetime(parsed, kind)


REHEARSAL = MySQLRehearsal()
