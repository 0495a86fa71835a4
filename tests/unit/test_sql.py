"""The statements each engine runs, built by pure functions: quoting, placeholders, guards, row comparison."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from backfilld.engines.base import build_lookup, build_skip, build_update, decode_key, encode_key
from backfilld.engines.mysql import MySQLDialect
from backfilld.engines.postgresql import PostgresDialect
from backfilld.engines.sqlite import SQLiteDialect

PG, MY, LITE = PostgresDialect(), MySQLDialect(), SQLiteDialect()


def test_postgres_lookup_is_a_bounded_keyset_read() -> None:
    s = build_lookup(PG, "app.users", ["id"], after=True)
    assert s.sql == ('SELECT max("id"), count(*) AS bf_n FROM (SELECT "id" FROM "app"."users" WHERE "id" > $1 '
                     'ORDER BY "id" LIMIT $2) AS bf_r HAVING count(*) > 0')
    assert s.names == ("lo0", "n")
    assert "OFFSET" not in s.sql


def test_skip_steps_n_keys_past_the_checkpoint_never_from_the_start() -> None:
    s = build_skip(PG, "app.users", ["id"], after=True)
    assert s.sql == 'SELECT "id" FROM "app"."users" WHERE "id" > $1 ORDER BY "id" LIMIT 1 OFFSET $2'
    assert s.names == ("lo0", "skip")
    s = build_skip(MY, "t", ["wiki", "id"], after=True)
    assert s.sql == ("SELECT `wiki`, `id` FROM `t` WHERE ((`wiki` > %s) OR (`wiki` = %s AND `id` > %s)) "
                     "ORDER BY `wiki`, `id` LIMIT 1 OFFSET %s")
    assert build_skip(LITE, "t", ["a"], after=False).names == ("skip",)


def test_composite_lookup_takes_the_last_key_of_the_range() -> None:
    s = build_lookup(PG, "t", ["wiki", "id"], after=True)
    assert s.sql.endswith('AS bf_r ORDER BY "wiki" DESC, "id" DESC LIMIT 1')
    assert "count(*) OVER ()" in s.sql


def test_first_lookup_has_no_lower_bound() -> None:
    s = build_lookup(LITE, "t", ["a", "b"], after=False)
    assert "WHERE" not in s.sql.split("FROM", 2)[2].split(")")[0]
    assert s.names == ("n",)


def test_composite_keys_use_row_values_on_postgres_and_sqlite() -> None:
    s = build_lookup(PG, "t", ["wiki", "id"], after=True)
    assert '("wiki", "id") > ($1, $2)' in s.sql
    s = build_update(LITE, "t", ["wiki", "id"], {"c": "x"}, None, False, after=True)
    assert '("wiki", "id") > (?, ?)' in s.sql and '("wiki", "id") <= (?, ?)' in s.sql


def test_composite_keys_are_expanded_on_mysql() -> None:
    s = build_update(MY, "t", ["wiki", "id"], {"c": "x"}, None, False, after=True)
    assert "((`wiki` > %s) OR (`wiki` = %s AND `id` > %s))" in s.sql
    assert "((`wiki` < %s) OR (`wiki` = %s AND `id` <= %s))" in s.sql
    assert s.names == ("lo0", "lo0", "lo1", "hi0", "hi0", "hi1")


def test_update_writes_only_null_targets_whose_value_exists() -> None:
    s = build_update(PG, "users", ["id"], {"email_domain": "lower(email)"}, "deleted = 0", False, after=True)
    assert s.sql == ('UPDATE "users" SET "email_domain" = (lower(email)) WHERE "id" > $1 AND "id" <= $2 AND '
                     '(deleted = 0) AND (("email_domain" IS NULL AND (lower(email)) IS NOT NULL))')
    assert "LIMIT" not in s.sql


def test_several_targets_never_overwrite_a_filled_one() -> None:
    s = build_update(LITE, "t", ["id"], {"a": "x", "b": "y"}, None, False, after=False)
    assert '"a" = COALESCE("a", (x)), "b" = COALESCE("b", (y))' in s.sql
    assert '(("a" IS NULL AND (x) IS NOT NULL) OR ("b" IS NULL AND (y) IS NOT NULL))' in s.sql


@pytest.mark.parametrize("dialect,guard", [(PG, '"c" IS DISTINCT FROM (x)'), (MY, "NOT (`c` <=> (x))"),
                                           (LITE, '"c" IS NOT (x)')])
def test_overwrite_mode_only_rewrites_differing_values(dialect, guard) -> None:  # noqa: ANN001
    s = build_update(dialect, "t", ["id"], {"c": "x"}, None, True, after=False)
    assert guard in s.sql


def test_mysql_escapes_percent_in_expressions_but_not_placeholders() -> None:
    s = build_update(MY, "t", ["id"], {"c": "CONCAT(name, '%s 50%')"}, "name LIKE 'a%'", False, after=True)
    assert "'%%s 50%%'" in s.sql and "LIKE 'a%%'" in s.sql
    assert s.sql.count("%s") - s.sql.count("%%s") == 2


def test_identifiers_are_quoted_with_embedded_quotes_doubled() -> None:
    assert PG.quote('we"ird') == '"we""ird"'
    assert MY.quote("we`ird") == "`we``ird`"


@pytest.mark.parametrize("key", [(1,), ("enwiki", 42), ("Ωmega 🦄", -1), (b"\x00\xff",), (decimal.Decimal("1.10"),),
                                 (dt.datetime(2024, 1, 2, 3, 4, 5, 6),), (dt.date(2024, 1, 2),),
                                 (uuid.UUID(int=5),), (1.5,)])
def test_key_codec_round_trips_exactly(key: tuple) -> None:
    assert decode_key(encode_key(key)) == key
    assert decode_key(None) is None
