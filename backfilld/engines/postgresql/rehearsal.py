"""PostgreSQL's part of `backfilld rehearse`: its types as Families, its scratch columns, its fit probe.

Owns: how a value is checked against a PostgreSQL column (PostgresRehearsal.fit_probes): a too-long text by its
length, since the batch's assignment fails there ("value too long for type character varying(10)") where an
explicit CAST would cut it; anything else by casting it to the column's type as written in the catalog (format_type,
domains and typmods included), a cast that fails being a value that does not fit, one that changes it (numeric(5,2)
rounds 1.234) one that would be stored otherwise. Delegates the statements around it to engines/rehearsal.py.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import uuid
from typing import Any

from backfilld.engines.catalog import Column
from backfilld.engines.rehearsal import Family, Rehearsal, as_number, plain_type
from backfilld.engines.sqldialect import Dialect
from backfilld.keys import Unrepresentable

_INTS = {"smallint": 16, "integer": 32, "bigint": 64}
_TEXTS = re.compile(r"(text|character varying|character|varchar|char|name|citext|\"char\")(\((\d+)\))?")
# an explicit CAST to these cuts a longer value, where the batch's assignment fails: checked by length instead
_BOUNDED = re.compile(r"(character varying|character|bit varying|bit)\((\d+)\)")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class PostgresRehearsal(Rehearsal):
    name = "postgresql"

    def family(self, column: Column) -> Family:
        t = column.type.lower()
        if t in _INTS:
            return Family("int")
        m = re.fullmatch(r"numeric(\((\d+)(,\s*(\d+))?\))?", t)
        if m:
            return Family("decimal", precision=int(m.group(2)) if m.group(2) else None,
                          scale=int(m.group(4) or 0) if m.group(2) else None)
        if t in ("real", "double precision"):
            return Family("float")
        m = _TEXTS.fullmatch(t)
        if m:
            return Family("text", length=int(m.group(3)) if m.group(3) else None)
        simple = {"bytea": "bytes", "boolean": "bool", "date": "date", "uuid": "uuid", "json": "json",
                  "jsonb": "json"}
        if t in simple:
            return Family(simple[t])
        if re.fullmatch(r"timestamp(\(\d\))? without time zone", t):
            return Family("datetime")
        if re.fullmatch(r"timestamp(\(\d\))? with time zone", t):
            return Family("datetime_tz")
        if re.fullmatch(r"time(\(\d\))? without time zone", t):
            return Family("time")
        return Family("other")

    def scratch_type(self, family: Family) -> str:
        k = family.kind
        if k == "int":
            return "numeric(20,0)" if family.unsigned else "bigint"
        if k == "decimal":
            return f"numeric({family.precision},{family.scale or 0})" if family.precision else "numeric"
        return {"float": "double precision", "bytes": "bytea", "bool": "boolean", "date": "date",
                "datetime": "timestamp", "datetime_tz": "timestamptz", "time": "time", "json": "jsonb",
                "uuid": "uuid"}.get(k, "text")

    def bindable(self, family: Family, value: Any) -> Any:  # noqa: C901 - one branch per kind
        if value is None:
            return None
        k = family.kind
        if isinstance(value, Unrepresentable):   # a PostgreSQL date or time Python cannot hold: itself, or text
            if k in ("date", "datetime", "datetime_tz", "time"):
                return value
            return value.text
        if k == "int":
            n = as_number(value)
            if n != n.to_integral_value():
                raise ValueError(f"{value!r} is not an integer")
            return decimal.Decimal(int(n)) if family.unsigned else int(n)
        if k == "decimal":
            n = as_number(value)
            if not n.is_finite() and family.precision:
                raise ValueError(f"{value!r} does not fit numeric({family.precision},{family.scale})")
            return n
        if k == "float":
            return float(value)
        if k == "bool":
            return _boolean(value)
        if k == "bytes":
            return value.encode() if isinstance(value, str) else bytes(value)
        if k == "date":
            return value.date() if isinstance(value, dt.datetime) else (
                value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)))
        if k in ("datetime", "datetime_tz"):
            return _datetime(value, aware=k == "datetime_tz")
        if k == "time":
            return _time(value)
        if k == "json":
            return value if isinstance(value, str) else json.dumps(value)
        if k == "uuid":
            return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        text = _text(value)
        if "\x00" in text:
            raise ValueError("PostgreSQL text cannot hold a NUL character")
        return text

    def fit_probes(self, value: str, column: Column) -> list[str]:
        t = column.type
        m = _BOUNDED.fullmatch(t)
        if m:
            n, unit = int(m.group(2)), "bits" if "bit" in m.group(1) else "characters"
            length = f"length(({value})::text)"
            # the assignment cuts trailing spaces (never other characters) without complaint: the length that
            # fails is that of the value without them
            trimmed = f"length(rtrim(({value})::text))" if unit == "characters" else length
            return [f"CASE WHEN {value} IS NULL THEN NULL "
                    f"WHEN {trimmed} > {n} THEN {_literal(f'too long for {t}: ')} || {trimmed} || "
                    f"{_literal(f' {unit}')} "
                    f"WHEN {length} > {n} THEN {_literal(f'trailing spaces cut to {n} characters')} END"]
        converts = f"CASE WHEN CAST({value} AS {t}) IS NULL THEN NULL END"
        if t in ("real", "double precision"):   # a float is stored to its own precision: only an overflow fails
            return [converts]
        changed = (f"CASE WHEN {value} IS NULL THEN NULL WHEN CAST({value} AS {t}) IS DISTINCT FROM {value} "
                   f"THEN {_literal('stored as ')} || CAST(CAST({value} AS {t}) AS text) || {_literal(f' ({t})')} END")
        return [changed, converts]

    def value_expr(self, column: Column) -> str:
        # bound as text (value_param), read as the column's type without its length, precision or scale, which the
        # probe's CAST then applies: text that does not convert fails as the batch's write would
        return f"CAST(bf_v AS {plain_type(column.type)})"

    def value_param(self, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (bytes, bytearray, memoryview)):
            return "\\x" + bytes(value).hex()
        if isinstance(value, (dt.date, dt.time)):
            return value.isoformat()
        if isinstance(value, float):
            return repr(value)
        return str(value)   # a dict for a json column too: its repr is no JSON, and the batch's bind fails on it

    def temp_ref(self, d: Dialect, name: str) -> str:
        return f"pg_temp.{d.quote(name)}"

    def temp_drop(self, d: Dialect, name: str) -> str:
        return f"DROP TABLE IF EXISTS pg_temp.{d.quote(name)}"


def _boolean(value: Any) -> bool:
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("t", "true", "1", "yes", "on"):
            return True
        if low in ("f", "false", "0", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not a boolean")
    return bool(value)


def _datetime(value: Any, *, aware: bool) -> dt.datetime:
    if isinstance(value, dt.datetime):
        v = value
    elif isinstance(value, dt.date):
        v = dt.datetime(value.year, value.month, value.day)
    else:
        v = dt.datetime.fromisoformat(str(value))
    if aware:
        return v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)
    return v.astimezone(dt.UTC).replace(tzinfo=None) if v.tzinfo is not None else v


def _time(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value
    if isinstance(value, dt.timedelta):   # MySQL's TIME
        if not dt.timedelta(0) <= value < dt.timedelta(days=1):
            raise ValueError(f"{value} is not a time of day")
        return (dt.datetime.min + value).time()
    return dt.time.fromisoformat(str(value))


def _text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8")   # UnicodeDecodeError is a ValueError: the row is not copied
    return value if isinstance(value, str) else str(value)


REHEARSAL = PostgresRehearsal()
