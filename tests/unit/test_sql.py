"""The statements each engine runs, built by pure functions: quoting, placeholders, guards, row comparison."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

from backfilld.engines.base import decode_key, encode_key
from backfilld.engines.catalog import Column, TableInfo
from backfilld.engines.mysql import MySQLDialect
from backfilld.engines.postgresql import PostgresDialect
from backfilld.engines.sqldialect import operand
from backfilld.engines.sqlite import SQLiteDialect
from backfilld.engines.statements import (
    TableSpec,
    WriteShape,
    build_fix_row,
    build_lookup,
    build_skip,
    build_update,
    build_verify_read,
    transform_update_parts,
)

PG, MY, LITE = PostgresDialect(), MySQLDialect(), SQLiteDialect()


def test_postgres_lookup_is_a_bounded_keyset_read() -> None:
    s = build_lookup(PG, TableSpec("app.users", ("id",)), after=True)
    assert s.sql == ('SELECT max("id"), count(*) AS bf_n FROM (SELECT "id" FROM "app"."users" WHERE "id" > $1 '
                     'ORDER BY "id" LIMIT $2) AS bf_r HAVING count(*) > 0')
    assert s.names == ("lo0", "n")
    assert "OFFSET" not in s.sql


def test_skip_steps_n_keys_past_the_checkpoint_never_from_the_start() -> None:
    s = build_skip(PG, TableSpec("app.users", ("id",)), after=True)
    assert s.sql == 'SELECT "id" FROM "app"."users" WHERE "id" > $1 ORDER BY "id" LIMIT 1 OFFSET $2'
    assert s.names == ("lo0", "skip")
    s = build_skip(MY, TableSpec("t", ("wiki", "id")), after=True)
    assert s.sql == ("SELECT `wiki`, `id` FROM `t` WHERE ((`wiki` > %s) OR (`wiki` = %s AND `id` > %s)) "
                     "ORDER BY `wiki`, `id` LIMIT 1 OFFSET %s")
    assert build_skip(LITE, TableSpec("t", ("a",)), after=False).names == ("skip",)


def test_composite_lookup_takes_the_last_key_of_the_range() -> None:
    s = build_lookup(PG, TableSpec("t", ("wiki", "id")), after=True)
    assert s.sql.endswith('AS bf_r ORDER BY "wiki" DESC, "id" DESC LIMIT 1')
    assert "count(*) OVER ()" in s.sql


def test_first_lookup_has_no_lower_bound() -> None:
    s = build_lookup(LITE, TableSpec("t", ("a", "b")), after=False)
    assert "WHERE" not in s.sql.split("FROM", 2)[2].split(")")[0]
    assert s.names == ("n",)


def test_composite_keys_use_row_values_on_postgres_and_sqlite() -> None:
    s = build_lookup(PG, TableSpec("t", ("wiki", "id")), after=True)
    assert '("wiki", "id") > ($1, $2)' in s.sql
    s = build_update(LITE, TableSpec("t", ("wiki", "id"), {"c": "x"}), after=True)
    assert '("wiki", "id") > (?, ?)' in s.sql and '("wiki", "id") <= (?, ?)' in s.sql


def test_composite_keys_are_expanded_on_mysql() -> None:
    s = build_update(MY, TableSpec("t", ("wiki", "id"), {"c": "x"}), after=True)
    assert "((`wiki` > %s) OR (`wiki` = %s AND `id` > %s))" in s.sql
    assert "((`wiki` < %s) OR (`wiki` = %s AND `id` <= %s))" in s.sql
    assert s.names == ("lo0", "lo0", "lo1", "hi0", "hi0", "hi1")


def test_update_writes_only_null_targets_whose_value_exists() -> None:
    s = build_update(PG, TableSpec("users", ("id",), {"email_domain": "lower(email)"}, "deleted = 0"), after=True)
    assert s.sql == ('UPDATE "users" SET "email_domain" = (lower(email)) WHERE "id" > $1 AND "id" <= $2 AND '
                     '(deleted = 0) AND (("email_domain" IS NULL AND (lower(email)) IS NOT NULL))')
    assert "LIMIT" not in s.sql


def test_several_targets_never_overwrite_a_filled_one() -> None:
    s = build_update(LITE, TableSpec("t", ("id",), {"a": "x", "b": "y"}), after=False)
    assert '"a" = COALESCE("a", (x)), "b" = COALESCE("b", (y))' in s.sql
    assert '(("a" IS NULL AND (x) IS NOT NULL) OR ("b" IS NULL AND (y) IS NOT NULL))' in s.sql


@pytest.mark.parametrize("dialect,guard", [(PG, '"c" IS DISTINCT FROM (x)'), (MY, "NOT (`c` <=> (x))"),
                                           (LITE, '"c" IS NOT (x)')])
def test_overwrite_mode_only_rewrites_differing_values(dialect, guard) -> None:  # noqa: ANN001
    s = build_update(dialect, TableSpec("t", ("id",), {"c": "x"}, overwrite=True), after=False)
    assert guard in s.sql


def test_mysql_escapes_percent_in_expressions_but_not_placeholders() -> None:
    s = build_update(MY, TableSpec("t", ("id",), {"c": "CONCAT(name, '%s 50%')"}, "name LIKE 'a%'"), after=True)
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


# ------------------------------------------------------------------------------------------ exact comparison


def col(typ: str, collation: str | None = None) -> Column:
    return Column("c", typ, True, collation)


@pytest.mark.parametrize(("typ", "form"), [
    ("integer", 'a IS NOT DISTINCT FROM b'),
    ("double precision", 'a IS NOT DISTINCT FROM b'),
    ("interval", 'a IS NOT DISTINCT FROM b'),
    ("timestamp(3) with time zone", 'a IS NOT DISTINCT FROM b'),
    ("text", 'a COLLATE "C" IS NOT DISTINCT FROM b COLLATE "C"'),
    ("character varying(20)[]", 'a COLLATE "C" IS NOT DISTINCT FROM b COLLATE "C"'),
    ("numeric(10,2)", "a::text IS NOT DISTINCT FROM b::text"),
    ("jsonb", "a::text IS NOT DISTINCT FROM b::text"),
    ("citext", 'a::text COLLATE "C" IS NOT DISTINCT FROM b::text COLLATE "C"'),
    ("ext.citext[]", 'a::text COLLATE "C" IS NOT DISTINCT FROM b::text COLLATE "C"'),
    ("email_address", 'a::text COLLATE "C" IS NOT DISTINCT FROM b::text COLLATE "C"'),   # a domain: over anything
])
def test_postgres_compares_each_type_exactly(typ: str, form: str) -> None:
    assert PG.same("a", "b", col(typ)) == form
    assert PG.differs("a", "b", col(typ)) == form.replace("IS NOT DISTINCT", "IS DISTINCT")


def test_mysql_compares_text_as_bytes_bits_as_binary_and_sets_by_their_bits() -> None:
    text = col("varchar(20)", "utf8mb4_general_ci")
    assert MY.same("a", "b", text) == ("CAST(CONVERT(a USING utf8mb4) AS BINARY) <=> "
                                       "CAST(CONVERT(b USING utf8mb4) AS BINARY)")
    assert MY.same("a", "b", col("json")) == MY.same("a", "b", text)   # MySQL's JSON: no collation, still text
    assert MY.same("a", "b", col("bit(8)")) == "CAST(a AS BINARY) <=> CAST(b AS BINARY)"
    assert MY.same("a", "b", col("int(11)")) == "a <=> b"
    assert MY.stale("a", "x", col("set('m','b')", "utf8mb4_general_ci")).startswith("NOT ((a + 0) <=> (CASE WHEN")
    assert MY.holds("a", "x", col("char(4)", "utf8mb4_bin")) == (
        "CAST(CONVERT(a USING utf8mb4) AS BINARY) <=> CAST(CONVERT(TRIM(TRAILING ' ' FROM x) USING utf8mb4) AS BINARY)")


def test_sqlite_compares_in_binary_and_blob_affinity_by_storage_class_too() -> None:
    assert LITE.same('"a"', "?", col("TEXT")) == '"a" IS ? COLLATE BINARY'
    assert LITE.differs('"a"', "x + 1", col("TEXT")) == '"a" IS NOT (x + 1) COLLATE BINARY'
    assert LITE.same('"a"', "?", col("BLOB")) == '("a" IS ? COLLATE BINARY AND typeof("a") = typeof(?))'
    assert LITE.same('"a"', "?", col("")) == LITE.same('"a"', "?", col("BLOB"))
    # the stored side stays a bare column: its affinity applies to the expression, whose own + strips
    assert LITE.stale('"a"', "(x)", col("INTEGER")) == '"a" IS NOT (+(x)) COLLATE BINARY'


@pytest.mark.parametrize(("dialect", "guard"), [
    (LITE, 'bf_t."s" IS bf_v.c1 COLLATE BINARY'),
    (PG, 'bf_t."s"::text COLLATE "C" IS NOT DISTINCT FROM bf_v.c1::text COLLATE "C"'),
    (MY, "CAST(CONVERT(bf_t.`s` USING utf8mb4) AS BINARY) <=> CAST(CONVERT(bf_v.c1 USING utf8mb4) AS BINARY)"),
])
def test_transform_guards_compare_sources_and_targets_exactly(dialect, guard) -> None:  # noqa: ANN001
    types = {LITE: "TEXT", PG: "citext", MY: "varchar(20)"}[dialect]
    info = TableInfo("t", {"id": Column("id", "integer", False), "s": col(types, "utf8mb4_general_ci"),
                           "g": col(types, "utf8mb4_general_ci")}, ("id",))
    _, _, guards = transform_update_parts(dialect, info, WriteShape(("id",), ("s",), ("g",), overwrite=True))
    assert guards[0] == guard
    assert guards[1] == guard.replace('"s"', '"g"').replace("`s`", "`g`").replace("c1", "c2")


def test_verify_and_its_fix_compare_exactly() -> None:
    columns = {"id": Column("id", "integer", False), "t": col("text")}
    read = build_verify_read(PG, TableSpec("x", ("id",), {"t": "lower(s)"}, columns=columns), after=False)
    assert '"t" COLLATE "C" IS DISTINCT FROM CAST((lower(s)) AS text) COLLATE "C"' in read.sql
    fix = build_fix_row(LITE, TableSpec("x", ("id",), {"t": "lower(s)"}, columns={"id": Column("id", "INTEGER", False),
                                                                         "t": col("TEXT")}))
    assert fix.sql.endswith('WHERE "id" = ? AND "t" IS ? COLLATE BINARY')


def test_a_plain_fill_batch_compares_nothing() -> None:
    """The batch UPDATE of a fill job tests only for NULL: no exact comparison costs it anything."""
    columns = {"id": Column("id", "integer", False), "t": col("text")}
    for d in (PG, MY, LITE):
        sql = build_update(d, TableSpec("x", ("id",), {"t": "lower(s)"}, columns=columns), after=True).sql
        assert "COLLATE" not in sql and "BINARY" not in sql and "DISTINCT" not in sql


def test_operand_keeps_one_and_wraps_the_rest() -> None:
    for one in ('"c"', 'bf_t."c"', "NEW.`c`", "$3", "?", "(a || b)", "CAST((x) AS text)", "lower(x)"):
        assert operand(one) == one
    for more in ("a || b", "(a) || (b)", "x::text", "lower(x) || y", "('\\') || x", "(a -- )\n)"):
        assert operand(more) == f"({more})"
