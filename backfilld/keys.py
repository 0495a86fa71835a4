"""Key values as the state table stores them: a checkpoint's key tuple as JSON text, exact for every key type
backfilld pages by (ints, text, bytes, decimals, dates and times, UUIDs, and the server values Python cannot hold).

Owns: encode_key / decode_key and Unrepresentable. Imports nothing of backfilld's but its errors.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from backfilld.errors import SchemaError


@dataclass(frozen=True)
class Unrepresentable:
    """A server value Python's own type cannot hold (PostgreSQL: a date BC or past 9999, infinity, time
    24:00), read as the driver's raw number for it: bound back, it is exactly the value read. text is for
    people (logs, errors, a transform that shows it), never parsed."""

    type: str    # the server's type name: "date", "timestamp", "timestamptz", "time"
    raw: int     # the wire number (PostgreSQL: days or microseconds since 2000-01-01, microseconds of the day)
    text: str    # "infinity", "-infinity", "0044-03-15 BC", "10000-01-01", "24:00:00"

    def __str__(self) -> str:
        return self.text


def encode_key(values: Sequence[Any] | None) -> str | None:
    """A key tuple as JSON text for the state table; exact for ints, text, bytes, decimals and times."""
    if values is None:
        return None
    out: list[Any] = []
    for v in values:
        if v is None or isinstance(v, (bool, int, str)):
            out.append(v)
        elif isinstance(v, float):
            out.append({"f": repr(v)})
        elif isinstance(v, decimal.Decimal):
            out.append({"dec": str(v)})
        elif isinstance(v, (bytes, bytearray, memoryview)):
            out.append({"b64": base64.b64encode(bytes(v)).decode()})
        elif isinstance(v, dt.datetime):
            out.append({"dt": v.isoformat()})
        elif isinstance(v, dt.date):
            out.append({"d": v.isoformat()})
        elif isinstance(v, dt.time):
            out.append({"t": v.isoformat()})
        elif isinstance(v, dt.timedelta):   # MySQL TIME
            out.append({"td": (v.days * 86_400 + v.seconds) * 1_000_000 + v.microseconds})
        elif isinstance(v, uuid.UUID):
            out.append({"uuid": str(v)})
        elif isinstance(v, Unrepresentable):
            out.append({"raw": [v.type, v.raw, v.text]})
        else:
            raise SchemaError(f"key values of type {type(v).__name__} are not supported; use an integer, "
                              "text, binary, decimal or date/time key")
    return json.dumps(out, ensure_ascii=False)


# how decode_key reads back each tagged value encode_key wrote
_DECODE: dict[str, Callable[[Any], Any]] = {
    "f": float, "dec": decimal.Decimal, "b64": base64.b64decode, "dt": dt.datetime.fromisoformat,
    "d": dt.date.fromisoformat, "t": dt.time.fromisoformat, "td": lambda us: dt.timedelta(microseconds=us),
    "uuid": uuid.UUID, "raw": lambda r: Unrepresentable(*r)}


def decode_key(text: str | None) -> tuple[Any, ...] | None:
    """A key as encode_key wrote it; ValueError for anything else (the text is read back from a table others
    can write)."""
    if text is None:
        return None
    values = json.loads(text)
    if not isinstance(values, list):
        raise ValueError("not a JSON list")
    out: list[Any] = []
    for v in values:
        if isinstance(v, dict):
            if len(v) != 1:
                raise ValueError("a tagged value has one tag")
            ((tag, s),) = v.items()
            if tag not in _DECODE:
                raise ValueError(f"unknown tag {tag!r}")
            try:
                out.append(_DECODE[tag](s))
            except (ArithmeticError, TypeError, OverflowError) as exc:
                raise ValueError(str(exc)) from None
        elif v is not None and not isinstance(v, (str, int, float)):   # bool is an int
            raise ValueError("a key value is null, a string, a number or a tagged value")
        else:
            out.append(v)
    return tuple(out)
