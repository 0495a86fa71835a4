"""The engines' error translation leaves out the row values the servers quote (tests/acceptance/test_error_values.py
runs it against the servers): each message shape as the server words it, the value replaced, the rest kept."""

from __future__ import annotations

import asyncpg
import pymysql
import pytest

from backfilld.engines.mysql.engine import translate_mysql
from backfilld.engines.postgresql.engine import _NULL_WRITTEN, translate_pg
from backfilld.errors import VALUE_NOT_SHOWN as HIDDEN


def pg(code: str, message: str, detail: str | None = None, hint: str | None = None) -> str:
    fields = {"C": code, "M": message, "S": "ERROR", **({"D": detail} if detail else {}),
              **({"H": hint} if hint else {})}
    return str(translate_pg(asyncpg.PostgresError.new(fields)))


@pytest.mark.parametrize(("code", "message", "shown"), [
    ("22P02", 'invalid input syntax for type integer: "abc"', f"invalid input syntax for type integer: {HIDDEN}"),
    ("22P02", 'invalid input syntax for type integer: "a"b"', f"invalid input syntax for type integer: {HIDDEN}"),
    ("22003", 'value "99999999999" is out of range for type integer',
     f"value {HIDDEN} is out of range for type integer"),
    ("22007", 'invalid input syntax for type date: "2020-13-01"', f"invalid input syntax for type date: {HIDDEN}"),
    ("22P02", 'invalid input value for enum mood: "sadd"', f"invalid input value for enum mood: {HIDDEN}"),
    ("22021", 'invalid byte sequence for encoding "UTF8": 0xe2 0x28 0xa1',
     f'invalid byte sequence for encoding "UTF8": {HIDDEN}'),
    ("22012", "division by zero", "division by zero"),
    ("42703", 'column "nope" does not exist', 'column "nope" does not exist'),   # names, not values: kept
])
def test_postgres_data_exceptions_lose_their_value(code: str, message: str, shown: str) -> None:
    assert pg(code, message) == f"{code}: {shown}"


def test_postgres_detail_is_left_out_and_the_hint_kept() -> None:
    assert pg("23505", 'duplicate key value violates unique constraint "u"', "Key (a)=(v1) already exists.") == \
        '23505: duplicate key value violates unique constraint "u"'
    assert pg("23514", 'new row for relation "t" violates check constraint "c"', "Failing row contains (v1, 1).") \
        == '23514: new row for relation "t" violates check constraint "c"'
    assert pg("42883", "function f(integer) does not exist", hint="You might need to add explicit type casts.") == \
        "42883: function f(integer) does not exist\nHINT:  You might need to add explicit type casts."


def test_postgres_null_trap_keeps_its_text() -> None:
    """PostgresEngine.apply_range_once recognises its own trap by its text, which holds a key, not a value."""
    message = f'invalid input syntax for type integer: "{_NULL_WRITTEN}17"'
    assert _NULL_WRITTEN in pg("22P02", message)


@pytest.mark.parametrize(("code", "text", "shown"), [
    (1292, "Truncated incorrect INTEGER value: 'abc'", f"Truncated incorrect INTEGER value: {HIDDEN}"),
    (1292, "Incorrect date value: 'abc' for column `test`.`t`.`b` at row 1",
     f"Incorrect date value: {HIDDEN} for column `test`.`t`.`b` at row 1"),
    (1366, "Incorrect integer value: 'it's' for column 'b' at row 1",
     f"Incorrect integer value: {HIDDEN} for column 'b' at row 1"),
    (1062, "Duplicate entry 'v1' for key 'label'", f"Duplicate entry {HIDDEN} for key 'label'"),
    (1411, "Incorrect datetime value: 'v1' for function str_to_date",
     f"Incorrect datetime value: {HIDDEN} for function str_to_date"),
    (1367, "Illegal double '1e999' value found during parsing", f"Illegal double {HIDDEN} value found during parsing"),
    (1146, "Table 'test.nope' doesn't exist", "Table 'test.nope' doesn't exist"),   # a name: kept
])
def test_mysql_value_errors_lose_their_value(code: int, text: str, shown: str) -> None:
    assert str(translate_mysql(pymysql.err.OperationalError(code, text))) == f"{code}: {shown}"
