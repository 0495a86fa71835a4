"""The type matrix of issue 12 as data: per engine, each column type as a key (single and composite), as a
source and as a target, with the edge values each one must survive. test_types.py runs them.

Values are bound as parameters (MySQL, SQLite: the Python value; PostgreSQL: the value's text, cast to the
column's type, as a DBA would write it) except a Lit, which goes into the INSERT as SQL (zero dates, literals
no driver binds). Where a column type is written "{enum}", the test creates an enum type and substitutes it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True)
class Lit:
    """A value written into the INSERT as SQL."""

    sql: str


@dataclass(frozen=True)
class KeyCase:
    """A key column type and distinct keys of it. The job writes dst = show(k) + ':' + src."""

    name: str
    type: str
    values: tuple[Any, ...]
    show: str | None = None      # SQL rendering k as text in the job's expression; None: the engine's default
    refuse: bool = False         # backfilld must refuse it at preflight (SchemaError naming the column)
    # backfilld cannot page it exactly and must say so: refused at preflight, or the run fails with its key
    # walk's error (never completed); whatever it wrote before is right
    fails: bool = False
    options: str = ""            # after the table's closing parenthesis (SQLite: WITHOUT ROWID)
    composite_only: bool = False


@dataclass(frozen=True)
class FillCase:
    """src of one type, dst of another, dst = expr over src. A source case has the type on src, a target
    case on dst; None among the values makes the expression NULL on that row (or not: JSON_OBJECT)."""

    name: str
    src: str
    dst: str
    values: tuple[Any, ...]
    expr: str


@dataclass(frozen=True)
class DiffCase:
    """A target type, the value the job writes into it, and another value the column's own comparison may
    hold equal to it (case, accents, trailing spaces): verify must still count that row wrong."""

    name: str
    dst: str
    value: str
    other: str


# Per engine: the job's expression over a key, k as text by default, and the text column types
KEY_EXPR = {"mysql": "CONCAT({show}, ':', src)", "postgresql": "{show} || ':' || src",
            "sqlite": "{show} || ':' || src"}
SHOW = {"mysql": "k", "postgresql": "k::text", "sqlite": "quote(k)"}
TEXT = {"mysql": "VARCHAR(400)", "postgresql": "text", "sqlite": "TEXT"}
INT = {"mysql": "INT", "postgresql": "integer", "sqlite": "INTEGER"}

U = "CHARACTER SET utf8mb4 COLLATE"
HEX = "HEX(k)"

# ------------------------------------------------------------------------------------------- MariaDB

MYSQL_KEYS = [
    KeyCase("tinyint", "TINYINT", (-128, -1, 0, 1, 127)),
    KeyCase("tinyint_unsigned", "TINYINT UNSIGNED", (0, 1, 254, 255)),
    KeyCase("smallint", "SMALLINT", (-32768, -1, 0, 32767)),
    KeyCase("smallint_unsigned", "SMALLINT UNSIGNED", (0, 32768, 65535)),
    KeyCase("mediumint", "MEDIUMINT", (-8388608, 0, 8388607)),
    KeyCase("mediumint_unsigned", "MEDIUMINT UNSIGNED", (0, 16777215)),
    KeyCase("int", "INT", (-2147483648, -1, 0, 2147483647)),
    KeyCase("int_unsigned", "INT UNSIGNED", (0, 2147483648, 4294967295)),
    KeyCase("bigint", "BIGINT", (-2**63, -2**53 - 1, -1, 0, 2**53 + 1, 2**63 - 1)),
    KeyCase("bigint_unsigned", "BIGINT UNSIGNED", (0, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1)),
    KeyCase("decimal_30_0", "DECIMAL(30,0)",
            (Decimal(-10**30 + 1), Decimal(-2**64 - 1), Decimal(-1), Decimal(0), Decimal(2**64), Decimal(2**64 + 1),
             Decimal(10**30 - 1))),
    KeyCase("decimal_30_10", "DECIMAL(30,10)",
            (Decimal("-99999999999999999999.9999999999"), Decimal("-0.0000000001"), Decimal("0.0000000000"),
             Decimal("0.0000000001"), Decimal("18446744073709551616.5000000000"))),
    KeyCase("double", "DOUBLE",
            (-1.7976931348623157e308, -2.5, -5e-324, 0.0, 5e-324, 0.1, 0.30000000000000004, 2.0**53,
             1.7976931348623157e308)),
    # the server sends a FLOAT rounded to 6 digits: a key read back is not the key stored
    KeyCase("float", "FLOAT", (-3.4e38, 0.1, 1.1, 16777217.0, 3.4e38), refuse=True),
    KeyCase("char_latin1_swedish_ci", "CHAR(4) CHARACTER SET latin1 COLLATE latin1_swedish_ci",
            ("", " x", "Ab", "é", "ÿÿÿÿ", "zz"), show=HEX),
    KeyCase("varchar_latin1_bin", "VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_bin",
            ("", "A", "a", "a\t", "a\tb", "é", "ÿ", "Zz"), show=HEX),
    KeyCase("varchar_gbk_chinese_ci", "VARCHAR(20) CHARACTER SET gbk COLLATE gbk_chinese_ci",
            ("", "A", "b", "中", "文", "中文 x", "丂"), show=HEX),
    KeyCase("varchar_gbk_bin", "VARCHAR(20) CHARACTER SET gbk COLLATE gbk_bin",
            ("", "A", "a", "中", "丂", "a b"), show=HEX),
    KeyCase("varchar_utf8mb4_bin", f"VARCHAR(40) {U} utf8mb4_bin",
            ("", "A", "a", "a\t", "ä", "🦄", "李小龍", "O'Brien", "%s"), show=HEX),
    KeyCase("varchar_utf8mb4_general_ci", f"VARCHAR(40) {U} utf8mb4_general_ci",
            ("", "a", "B", "Ω", "z ", "🦄", "李"), show=HEX),
    KeyCase("varchar_utf8mb4_nopad_bin", f"VARCHAR(40) {U} utf8mb4_nopad_bin",
            ("", " ", "a", "a ", "a  ", "b"), show=HEX),
    KeyCase("binary_4", "BINARY(4)",
            (b"\x00\x00\x00\x00", b"\x00\x00\x00\x01", b"a\x00\x00\x00", b"\xff\x00\x00\x00", b"\xff\xff\xff\xff"),
            show=HEX),
    KeyCase("varbinary_8", "VARBINARY(8)",
            (b"", b"\x00", b"\x00\x00", b"\x00\xff", b"\xff", b"\xff\x00", b"a", b"a "), show=HEX),
    KeyCase("bit_8", "BIT(8)", (0, 1, 127, 128, 255), show="BIN(k)"),
    KeyCase("bit_1", "BIT(1)", (0, 1), show="BIN(k)"),
    # ENUM sorts by member index, not by name: members declared out of alphabetical order
    KeyCase("enum", "ENUM('m','b','z','a')", ("m", "b", "z", "a"), show="CONCAT(k, '#', k + 0)"),
    KeyCase("set", "SET('m','b','z','a')", ("", "m", "b", "m,b", "z", "a", "b,a"), show="CONCAT(k, '#', k + 0)"),
    KeyCase("date", "DATE", (dt.date(1000, 1, 1), dt.date(1970, 1, 1), dt.date(2038, 1, 19), dt.date(9999, 12, 31))),
    KeyCase("date_zero", "DATE", (Lit("'0000-00-00'"), Lit("'2024-00-00'"), Lit("'2024-01-00'"),
                                  dt.date(1000, 1, 1), dt.date(2024, 1, 1))),
    KeyCase("datetime_6", "DATETIME(6)",
            (dt.datetime(1000, 1, 1), dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1, 0, 0, 0, 1),
             dt.datetime(2020, 1, 1, 0, 0, 0, 999999), dt.datetime(9999, 12, 31, 23, 59, 59, 999999))),
    KeyCase("datetime_zero", "DATETIME",
            (Lit("'0000-00-00 00:00:00'"), dt.datetime(1000, 1, 1), dt.datetime(2024, 2, 29))),
    # an explicit default: no server may give the key column ON UPDATE CURRENT_TIMESTAMP
    KeyCase("timestamp_3", "TIMESTAMP(3) DEFAULT '1970-01-01 00:00:01'",
            (Lit("'0000-00-00 00:00:00.000'"), dt.datetime(1970, 1, 1, 0, 0, 1), dt.datetime(2000, 1, 1, 0, 0, 0, 1000),
             dt.datetime(2000, 1, 1, 0, 0, 0, 2000), dt.datetime(2038, 1, 19, 3, 14, 7, 999000))),
    KeyCase("time_6", "TIME(6)",
            ("-838:59:59", "-00:00:00.000001", "00:00:00", "00:00:00.000001", "12:34:56.789012", "838:59:59")),
    KeyCase("year", "YEAR", (0, 1901, 1970, 2069, 2155)),
    KeyCase("uuid", "UUID",
            ("00000000-0000-0000-0000-000000000000", "6ccd780c-baba-1026-9564-5b8c656024db",
             "78c955df-edc4-11f1-8949-02fc00000001", "78c955df-edc5-11f0-8949-02fc00000001",
             "ffffffff-ffff-ffff-ffff-ffffffffffff")),
]

MYSQL_FILLS = [
    # sources: the type on src, dst text
    FillCase("src_tinyint", "TINYINT", TEXT["mysql"], (-128, 127, 0, None), "CAST(src AS CHAR)"),
    FillCase("src_bigint_unsigned", "BIGINT UNSIGNED", TEXT["mysql"], (0, 2**64 - 1, None), "CAST(src AS CHAR)"),
    FillCase("src_decimal_30_0", "DECIMAL(30,0)", TEXT["mysql"], (Decimal(-10**30 + 1), Decimal(2**64), None),
             "CAST(src AS CHAR)"),
    FillCase("src_float", "FLOAT", TEXT["mysql"], (1.1, -3.4e38, 16777217.0, None), "CAST(src AS CHAR)"),
    FillCase("src_double", "DOUBLE", TEXT["mysql"], (0.1, 5e-324, -1.7976931348623157e308, None), "CAST(src AS CHAR)"),
    FillCase("src_char_latin1", "CHAR(4) CHARACTER SET latin1", TEXT["mysql"], ("é", "ab", "", None), "HEX(src)"),
    FillCase("src_varchar_gbk", "VARCHAR(20) CHARACTER SET gbk", TEXT["mysql"], ("中文", "a ", None), "HEX(src)"),
    FillCase("src_text_utf8mb4", f"TEXT {U} utf8mb4_general_ci", TEXT["mysql"], ("🦄", "a  ", "", None), "HEX(src)"),
    FillCase("src_binary_4", "BINARY(4)", TEXT["mysql"], (b"\x00", b"\xff\x00", b"", None), "HEX(src)"),
    FillCase("src_varbinary", "VARBINARY(8)", TEXT["mysql"], (b"\x00", b"\xff\x00", b"", None), "HEX(src)"),
    FillCase("src_blob", "BLOB", TEXT["mysql"], (b"\x00" * 3, b"\xff\x00\xfe", b"", None), "HEX(src)"),
    FillCase("src_bit_8", "BIT(8)", TEXT["mysql"], (0, 255, None), "BIN(src)"),
    FillCase("src_enum", "ENUM('m','b','z','a')", TEXT["mysql"], ("m", "a", None), "CONCAT(src, '#', src + 0)"),
    FillCase("src_set", "SET('m','b','z','a')", TEXT["mysql"], ("", "m,a", "b", None), "CONCAT(src, '#', src + 0)"),
    FillCase("src_date_zero", "DATE", TEXT["mysql"], (Lit("'0000-00-00'"), dt.date(9999, 12, 31), None),
             "CAST(src AS CHAR)"),
    FillCase("src_datetime_6", "DATETIME(6)", TEXT["mysql"],
             (Lit("'0000-00-00 00:00:00'"), dt.datetime(2020, 1, 1, 0, 0, 0, 1), None), "CAST(src AS CHAR)"),
    FillCase("src_timestamp_3", "TIMESTAMP(3) NULL", TEXT["mysql"], (dt.datetime(2038, 1, 19, 3, 14, 7, 999000), None),
             "CAST(src AS CHAR)"),
    FillCase("src_time_6", "TIME(6)", TEXT["mysql"], ("-838:59:59", "12:34:56.789012", None), "CAST(src AS CHAR)"),
    FillCase("src_year", "YEAR", TEXT["mysql"], (0, 2155, None), "CAST(src AS CHAR)"),
    FillCase("src_uuid", "UUID", TEXT["mysql"], ("ffffffff-ffff-ffff-ffff-ffffffffffff", None), "CAST(src AS CHAR)"),
    FillCase("src_json", "JSON", TEXT["mysql"], ('{"a": [1, "é"]}', "null", '"s"', None), "JSON_EXTRACT(src, '$')"),
    FillCase("src_geometry", "GEOMETRY", TEXT["mysql"],
             (Lit("ST_GeomFromText('POINT(1 2)')"), Lit("ST_GeomFromText('LINESTRING(0 0,1 1)')"), None),
             "ST_AsText(src)"),
    FillCase("src_point", "POINT", TEXT["mysql"], (Lit("POINT(-1.5, 2e10)"), None),
             "CONCAT(ST_X(src), ' ', ST_Y(src))"),
    # targets: text on src, the type on dst
    FillCase("dst_tinyint", TEXT["mysql"], "TINYINT", ("-128", "127", "0", None), "CAST(src AS SIGNED)"),
    FillCase("dst_bigint_unsigned", TEXT["mysql"], "BIGINT UNSIGNED", ("0", "18446744073709551615", None),
             "CAST(src AS UNSIGNED)"),
    FillCase("dst_decimal_30_0", TEXT["mysql"], "DECIMAL(30,0)", ("-999999999999999999999999999999",
                                                                  "18446744073709551616", None),
             "CAST(src AS DECIMAL(30,0))"),
    FillCase("dst_decimal_10_2_rounded", TEXT["mysql"], "DECIMAL(10,2)", ("1", "2", "-1", None),
             "CAST(src AS DECIMAL(10,0)) / 3"),
    FillCase("dst_float", TEXT["mysql"], "FLOAT", ("1.1", "0.1", "-3.4e38", None), "CAST(src AS DOUBLE)"),
    FillCase("dst_double", TEXT["mysql"], "DOUBLE", ("0.1", "5e-324", "1.7976931348623157e308", None),
             "CAST(src AS DOUBLE)"),
    FillCase("dst_char_latin1", TEXT["mysql"], "CHAR(4) CHARACTER SET latin1", ("é", "ab  ", "ÿ", "", None),
             "CONVERT(src USING latin1)"),
    FillCase("dst_varchar_gbk", TEXT["mysql"], "VARCHAR(20) CHARACTER SET gbk COLLATE gbk_chinese_ci",
             ("中文", "A", "a ", "", None), "CONVERT(src USING gbk)"),
    FillCase("dst_varchar_general_ci", TEXT["mysql"], f"VARCHAR(40) {U} utf8mb4_general_ci",
             ("A", "a ", "Ä", "🦄", None), "src"),
    FillCase("dst_text", TEXT["mysql"], f"TEXT {U} utf8mb4_bin", ("a  ", "🦄", "", None), "src"),
    FillCase("dst_binary_4", TEXT["mysql"], "BINARY(4)", ("00", "FF00", "", "00000000", None), "UNHEX(src)"),
    FillCase("dst_varbinary", TEXT["mysql"], "VARBINARY(8)", ("", "00", "FF00", "FFFFFFFFFFFFFFFF", None),
             "UNHEX(src)"),
    FillCase("dst_blob", TEXT["mysql"], "BLOB", ("", "00", "FF00FE", None), "UNHEX(src)"),
    FillCase("dst_bit_8", TEXT["mysql"], "BIT(8)", ("0", "128", "255", None), "CAST(src AS UNSIGNED)"),
    FillCase("dst_bit_1", TEXT["mysql"], "BIT(1)", ("0", "1", None), "CAST(src AS UNSIGNED)"),
    FillCase("dst_enum", TEXT["mysql"], "ENUM('m','b','z','a')", ("m", "a", "z", None), "src"),
    # a SET stores its members in declaration order, whatever order they were written in
    FillCase("dst_set", TEXT["mysql"], "SET('m','b','z','a')", ("", "m,a", "a,m", "b", None), "src"),
    FillCase("dst_date", TEXT["mysql"], "DATE", ("1000-01-01", "9999-12-31", None), "CAST(src AS DATE)"),
    FillCase("dst_date_zero", TEXT["mysql"], "DATE", ("0000-00-00", "2024-02-29", None), "src"),
    FillCase("dst_datetime_6", TEXT["mysql"], "DATETIME(6)",
             ("2020-01-01 00:00:00.000001", "9999-12-31 23:59:59.999999", None), "CAST(src AS DATETIME(6))"),
    FillCase("dst_timestamp_3", TEXT["mysql"], "TIMESTAMP(3) NULL",
             ("1970-01-01 00:00:01.000", "2038-01-19 03:14:07.999", None), "CAST(src AS DATETIME(3))"),
    FillCase("dst_time_6", TEXT["mysql"], "TIME(6)", ("-838:59:59", "12:34:56.789012", "-00:00:00.000001", None),
             "CAST(src AS TIME(6))"),
    FillCase("dst_year", TEXT["mysql"], "YEAR", ("1901", "2155", "0", "69", "70", None), "src"),
    FillCase("dst_uuid", TEXT["mysql"], "UUID", ("00000000-0000-0000-0000-000000000000",
                                                 "6ccd780c-baba-1026-9564-5b8c656024db", None), "src"),
    FillCase("dst_json", TEXT["mysql"], "JSON", ("a", '"q"', "é🦄", None), "JSON_OBJECT('v', src)"),
    FillCase("dst_geometry", TEXT["mysql"], "GEOMETRY",
             ("POINT(1 2)", "LINESTRING(0 0,1 1)", "POLYGON((0 0,1 0,1 1,0 0))", None), "ST_GeomFromText(src)"),
    FillCase("dst_point", TEXT["mysql"], "POINT", ("POINT(-1.5 2e10)", "POINT(0 0)", None), "ST_PointFromText(src)"),
]

# ---------------------------------------------------------------------------------------- PostgreSQL

PG_KEYS = [
    KeyCase("smallint", "smallint", ("-32768", "-1", "0", "32767")),
    KeyCase("integer", "integer", ("-2147483648", "0", "2147483647")),
    KeyCase("bigint", "bigint", (str(-2**63), str(-2**53 - 1), "0", str(2**53 + 1), str(2**63 - 1))),
    KeyCase("numeric", "numeric",
            ("-1e40", str(-2**64 - 1), "-0.000000000000000000001", "0", str(2**64), str(2**64 + 1), "1e40", "NaN")),
    KeyCase("numeric_30_10", "numeric(30,10)",
            ("-99999999999999999999.9999999999", "-0.0000000001", "0", "0.0000000001", "18446744073709551616.5")),
    KeyCase("real", "real", ("-Infinity", "-3.4028235e38", "-1.4e-45", "0", "1.4e-45", "0.1", "16777217",
                             "3.4028235e38", "Infinity", "NaN")),
    KeyCase("double", "double precision",
            ("-Infinity", "-1.7976931348623157e308", "-5e-324", "0", "5e-324", "0.1", "0.30000000000000004",
             "1.7976931348623157e308", "Infinity", "NaN")),
    KeyCase("text_default", "text", ("", " ", "A", "a", "a ", "a\t", "ä", "🦄", "李小龍")),
    KeyCase("text_C", 'text COLLATE "C"', ("", " ", "A", "a", "a ", "ä", "🦄", "z")),
    KeyCase("text_en_icu", 'text COLLATE "en-x-icu"', ("", "a", "A", "ä", "b", "B", "ss", "ß")),
    # nondeterministic: case-insensitive, so 'a' and 'A' cannot both be keys
    KeyCase("text_nondeterministic_ci", 'text COLLATE "{ci}"', ("", "a", "B", "c ", "ä", "🦄")),
    KeyCase("varchar_und_icu", 'varchar(20) COLLATE "und-x-icu"', ("", "a", "A", "a-b", "ab", "Ω", "🦄")),
    KeyCase("varchar_POSIX", 'varchar(20) COLLATE "POSIX"', ("", "A", "a", "é", "\x7f")),
    KeyCase("char_4", "char(4)", ("", " x", "a", "a b", "abcd", "é")),
    KeyCase("bytea", "bytea", ("\\x", "\\x00", "\\x0000", "\\x00ff", "\\xff", "\\xff00", "\\x61")),
    KeyCase("bool", "boolean", ("false", "true"), composite_only=True),
    KeyCase("date", "date", ("0001-01-02", "1970-01-01", "2000-02-29", "9999-12-30", "infinity")),
    # asyncpg's own codecs read 0001-01-01 and -infinity both as date.min, 9999-12-31 and infinity both as
    # date.max (and bind date.min as -infinity): backfilld's read each exactly
    KeyCase("date_python_limits", "date", ("-infinity", "0001-01-01", "2024-01-01", "9999-12-31", "infinity")),
    # dates Python's date cannot hold (asyncpg's own codec raises ValueError reading them)
    KeyCase("date_bc_and_year_10000", "date", ("4713-01-01 BC", "0044-03-15 BC", "0001-12-31 BC", "2024-01-01",
                                               "10000-01-01")),
    KeyCase("timestamp_python_limits", "timestamp",
            ("-infinity", "4713-01-01 00:00:00 BC", "0001-12-31 23:59:59.999999 BC", "0001-01-01 00:00:00",
             "0001-01-01 00:00:00.000001", "2024-01-01 00:00:00", "9999-12-31 23:59:59.999999",
             "10000-01-01 00:00:00", "infinity")),
    KeyCase("timestamptz_python_limits", "timestamptz",
            ("-infinity", "0044-03-15 12:00:00+00 BC", "0001-01-01 00:00:00+00", "9999-12-31 23:59:59.999999+00",
             "10000-01-01 00:00:00+00", "infinity")),
    KeyCase("timestamp_3", "timestamp(3)",
            ("-infinity", "1970-01-01 00:00:00", "2000-01-01 00:00:00.001", "2000-01-01 00:00:00.002",
             "9999-12-31 23:59:59.999", "infinity")),
    KeyCase("timestamptz", "timestamptz",
            ("1970-01-01 00:00:00+00", "2000-01-01 12:00:00.000001+05:30", "2000-01-01 12:00:00.000002+00",
             "2038-01-19 03:14:08+00", "infinity")),
    KeyCase("time", "time", ("00:00:00", "00:00:00.000001", "12:34:56.789", "23:59:59.999999")),
    # 24:00:00, which Python's time cannot hold
    KeyCase("time_24", "time", ("00:00:00", "23:59:59.999999", "24:00:00")),
    KeyCase("uuid", "uuid", ("00000000-0000-0000-0000-000000000000", "6ccd780c-baba-1026-9564-5b8c656024db",
                             "7fffffff-ffff-ffff-ffff-ffffffffffff", "ffffffff-ffff-ffff-ffff-ffffffffffff")),
    # enum types sort by declaration order
    KeyCase("enum", "{enum}", ("m", "b", "z", "a")),
    KeyCase("jsonb", "jsonb", ("null", '""', '"a"', "0", "1.5", "false", "true", "[]", "[1, 2]", "{}",
                               '{"a": 1}')),
    KeyCase("inet", "inet", ("10.0.0.1", "10.0.0.0/8", "::1", "192.168.0.1"), refuse=True),
    KeyCase("int_array", "integer[]", ("{}", "{1}", "{1,2}", "{2}"), refuse=True),
]

PG_FILLS = [
    FillCase("src_smallint", "smallint", "text", ("-32768", "32767", None), "src::text"),
    FillCase("src_bigint", "bigint", "text", (str(-2**63), str(2**63 - 1), None), "src::text"),
    FillCase("src_numeric_nan", "numeric", "text", ("NaN", "1e40", "-0.000000000000000000001", None), "src::text"),
    FillCase("src_real", "real", "text", ("0.1", "NaN", "-Infinity", None), "src::text"),
    FillCase("src_double", "double precision", "text", ("5e-324", "NaN", "Infinity", None), "src::text"),
    FillCase("src_text_C", 'text COLLATE "C"', "text", ("a ", "🦄", "", None), "upper(src)"),
    FillCase("src_char_4", "char(4)", "text", ("a", "", None), "src || '|'"),
    FillCase("src_bytea", "bytea", "text", ("\\x00", "\\xff00", "\\x", None), "encode(src, 'hex')"),
    FillCase("src_bool", "boolean", "text", ("true", "false", None), "src::text"),
    FillCase("src_date", "date", "text", ("infinity", "-infinity", "0044-03-15 BC", None), "src::text"),
    FillCase("src_date_python_limits", "date", "text",
             ("-infinity", "4713-01-01 BC", "0001-01-01", "9999-12-31", "10000-01-01", "infinity", None), "src::text"),
    FillCase("src_timestamp_python_limits", "timestamp", "text",
             ("-infinity", "0044-03-15 12:00:00 BC", "0001-01-01 00:00:00", "9999-12-31 23:59:59.999999",
              "10000-01-01 00:00:00", "infinity", None), "src::text"),
    FillCase("src_timestamp_3", "timestamp(3)", "text", ("2000-01-01 00:00:00.001", "infinity", None), "src::text"),
    FillCase("src_timestamptz", "timestamptz", "text", ("2000-01-01 12:00:00.000001+05:30", None), "src::text"),
    FillCase("src_time", "time", "text", ("24:00:00", "00:00:00.000001", None), "src::text"),
    FillCase("src_interval", "interval", "text", ("1 mon", "30 days", "-1 us", None), "src::text"),
    FillCase("src_uuid", "uuid", "text", ("ffffffff-ffff-ffff-ffff-ffffffffffff", None), "src::text"),
    FillCase("src_enum", "{enum}", "text", ("m", "a", None), "src::text"),
    FillCase("src_jsonb", "jsonb", "text", ('{"b": 1, "a": [null]}', "null", None), "src->>'b'"),
    FillCase("src_json", "json", "text", ('{"b": 1,  "b": 2}', '"é"', None), "src::text"),
    FillCase("src_inet", "inet", "text", ("10.0.0.1/8", "::1", None), "host(src)"),
    FillCase("src_point", "point", "text", ("(1,2)", "(-1.5,2e10)", None), "src::text"),
    FillCase("src_int_array", "integer[]", "text", ("{}", "{1,NULL,3}", None), "src::text"),
    FillCase("dst_smallint", "text", "smallint", ("-32768", "32767", None), "src::smallint"),
    FillCase("dst_numeric_10_2_rounded", "text", "numeric(10,2)", ("1", "2", "-1", None), "src::numeric / 3"),
    FillCase("dst_numeric_nan", "text", "numeric", ("NaN", "1e40", None), "src::numeric"),
    FillCase("dst_real", "text", "real", ("0.1", "NaN", "-Infinity", "16777217", None), "src::double precision"),
    FillCase("dst_double", "text", "double precision", ("0.1", "NaN", "5e-324", None), "src::double precision"),
    FillCase("dst_text_C", "text", 'text COLLATE "C"', ("a ", "B", "", None), "src || ''"),
    FillCase("dst_varchar_icu", "text", 'varchar(20) COLLATE "en-x-icu"', ("a ", "ß", None), "src"),
    FillCase("dst_char_4", "text", "char(4)", ("a", "ab  ", "", None), "src"),
    FillCase("dst_bytea", "text", "bytea", ("00", "ff00", "", None), "decode(src, 'hex')"),
    FillCase("dst_bool", "text", "boolean", ("t", "no", None), "src::boolean"),
    FillCase("dst_date", "text", "date", ("infinity", "0001-01-01", "0044-03-15 BC", None), "src::date"),
    FillCase("dst_timestamp_3", "text", "timestamp(3)", ("2000-01-01 00:00:00.0015", "-infinity", None),
             "src::timestamp"),
    FillCase("dst_timestamptz", "text", "timestamptz", ("2000-01-01 12:00:00.000001+05:30", None), "src::timestamptz"),
    FillCase("dst_time", "text", "time", ("24:00:00", "12:34:56.789", None), "src::time"),
    FillCase("dst_interval", "text", "interval", ("1 mon", "30 days", None), "src::interval"),
    FillCase("dst_uuid", "text", "uuid", ("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", None), "src::uuid"),
    FillCase("dst_enum", "text", "{enum}", ("m", "a", None), "src::{enum}"),
    FillCase("dst_jsonb", "text", "jsonb", ('{"b": 1, "a": 2}', "[]", None), "src::jsonb"),
    FillCase("dst_json", "text", "json", ('{"b": 1,  "b": 2}', '"é"', None), "src::json"),
    FillCase("dst_json_built", "text", "json", ("a", None), "json_build_object('v', src)"),
    FillCase("dst_inet", "text", "inet", ("10.0.0.1/8", "::1", None), "src::inet"),
    FillCase("dst_point", "text", "point", ("(1,2)", "(-1.5,2e10)", None), "src::point"),
    FillCase("dst_int_array", "text", "integer[]", ("{}", "{1,NULL,3}", None), "src::integer[]"),
]

# -------------------------------------------------------------------------------------------- SQLite

SQLITE_KEYS = [
    KeyCase("integer", "INTEGER", (-2**63, -2**53 - 1, -1, 0, 1, 2**53 + 1, 2**63 - 1)),
    KeyCase("text", "TEXT", ("", " ", "A", "a", "a ", "a\t", "ä", "🦄", "%s", "?")),
    KeyCase("text_nocase", "TEXT COLLATE NOCASE", ("", "a", "B", "c ", "Ä", "ä", "_")),
    KeyCase("text_rtrim", "TEXT COLLATE RTRIM", ("", "a", "a\t", "b  ", "B")),
    KeyCase("blob", "BLOB", (b"", b"\x00", b"\x00\x00", b"\x00\xff", b"\xff", b"\xff\x00", b"a")),
    KeyCase("real", "REAL", (float("-inf"), -1.7976931348623157e308, -5e-324, 0.0, 5e-324, 0.1, 2.0**63,
                             float("inf"))),
    # NUMERIC affinity: '1e3' is stored as 1000, 2^63 as a REAL, text that is not a number as TEXT
    KeyCase("numeric", "NUMERIC", (-2**63, 1, 1.5, "1e3", Lit("9223372036854775808"), 2**63 - 1, "abc")),
    # no declared type: no affinity, integers, reals, text and blobs side by side (they sort in that order)
    KeyCase("untyped", "", (-2**63, 1, 2.5, "", "1", "a", b"", b"\x00", b"\xff")),
    KeyCase("text_without_rowid", "TEXT", ("", "A", "a", "ä", "🦄"), options=" WITHOUT ROWID"),
    KeyCase("blob_without_rowid", "BLOB", (b"", b"\x00", b"\xff\x00", b"\xff"), options=" WITHOUT ROWID"),
]

SQLITE_FILLS = [
    FillCase("src_integer", "INTEGER", "TEXT", (-2**63, 2**63 - 1, None), "typeof(src) || ':' || quote(src)"),
    FillCase("src_real", "REAL", "TEXT", (0.1, 5e-324, float("inf"), None), "typeof(src) || ':' || quote(src)"),
    FillCase("src_text_nocase", "TEXT COLLATE NOCASE", "TEXT", ("Aa", "", "ä", None), "upper(src) || src"),
    FillCase("src_blob", "BLOB", "TEXT", (b"\x00", b"\xff\x00", b"", None), "hex(src)"),
    FillCase("src_numeric", "NUMERIC", "TEXT", ("1.0", "1e3", "abc", Lit("9223372036854775808"), None),
             "typeof(src) || ':' || quote(src)"),
    FillCase("src_untyped", "", "TEXT", (1, "1", b"1", 1.5, None), "typeof(src) || ':' || quote(src)"),
    FillCase("dst_integer_cast", "TEXT", "INTEGER", ("12", "-9223372036854775808", "abc", None),
             "CAST(src AS INTEGER)"),
    # INTEGER affinity: text that reads as an integer is stored as one, other text as text
    FillCase("dst_integer_affinity", "TEXT", "INTEGER", ("12", "1.0", "abc", " 7", None), "src"),
    FillCase("dst_real", "TEXT", "REAL", ("0.1", "1e308", "1", "abc", None), "src"),
    FillCase("dst_text_nocase", "TEXT", "TEXT COLLATE NOCASE", ("A", "a ", "", None), "src"),
    FillCase("dst_blob", "TEXT", "BLOB", ("\x00", "é\x00ÿ", "", None), "CAST(src AS BLOB)"),
    # BLOB affinity converts nothing: text written into a BLOB column stays text
    FillCase("dst_blob_text_expr", "TEXT", "BLOB", ("a", "é", "", None), "src"),
    FillCase("dst_blob_from_blob", "BLOB", "BLOB", (b"\x00", b"\xff\x00", b"", None), "substr(src, 1)"),
    FillCase("dst_numeric", "TEXT", "NUMERIC", ("1.0", "1e3", "abc", "9223372036854775808", None), "src"),
    FillCase("dst_untyped", "TEXT", "", ("1", "a", None), "src"),
]

# ---------------------------------------------------------------------------------- verify's exactness

DIFFS = {
    "mysql": [
        DiffCase("utf8mb4_general_ci_case", f"VARCHAR(20) {U} utf8mb4_general_ci", "abc", "ABC"),
        DiffCase("utf8mb4_general_ci_accent", f"VARCHAR(20) {U} utf8mb4_general_ci", "abc", "äbc"),
        DiffCase("utf8mb4_general_ci_trailing_space", f"VARCHAR(20) {U} utf8mb4_general_ci", "abc", "abc "),
        DiffCase("utf8mb4_bin_trailing_space", f"VARCHAR(20) {U} utf8mb4_bin", "abc", "abc "),
        DiffCase("latin1_swedish_ci_case", "VARCHAR(20) CHARACTER SET latin1 COLLATE latin1_swedish_ci", "abc", "ABC"),
        DiffCase("gbk_chinese_ci_case", "VARCHAR(20) CHARACTER SET gbk COLLATE gbk_chinese_ci", "abc", "ABC"),
        DiffCase("text_general_ci_case", f"TEXT {U} utf8mb4_general_ci", "abc", "ABC"),
    ],
    "postgresql": [
        DiffCase("text_nondeterministic_ci_case", 'text COLLATE "{ci}"', "abc", "ABC"),
        DiffCase("text_icu_case", 'text COLLATE "en-x-icu"', "abc", "ABC"),
    ],
    "sqlite": [
        DiffCase("text_nocase_case", "TEXT COLLATE NOCASE", "abc", "ABC"),
        DiffCase("text_rtrim_trailing_space", "TEXT COLLATE RTRIM", "abc", "abc "),
    ],
}

KEYS = {"mysql": MYSQL_KEYS, "postgresql": PG_KEYS, "sqlite": SQLITE_KEYS}
FILLS = {"mysql": MYSQL_FILLS, "postgresql": PG_FILLS, "sqlite": SQLITE_FILLS}
