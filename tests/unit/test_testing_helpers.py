"""backfilld.testing's statement helpers: `?` parameters and script splitting by each engine's lexical rules."""

from __future__ import annotations

import pytest

from backfilld.config import parse_url
from backfilld.testing import Unavailable, _bind, server_url, split_script


@pytest.mark.parametrize(("url", "placeholder"), [("sqlite:///x.db", "?"), ("postgresql://u@h/d", "$1"),
                                                  ("mysql://u@h/d", "%s")])
def test_question_marks_outside_quotes_become_the_engines_placeholders(url: str, placeholder: str) -> None:
    stmt, values = _bind(parse_url(url), "SELECT '?', \"a?\" FROM t WHERE a = ? -- b = ?\n", (5,))
    assert stmt.sql.split("WHERE a = ")[1].startswith(placeholder + " ")
    assert stmt.sql.count(placeholder) == (4 if placeholder == "?" else 1)
    assert "'?'" in stmt.sql and '"a?"' in stmt.sql and "-- b = ?" in stmt.sql
    assert stmt.args(values) == [5]


def test_a_parameter_count_that_does_not_match_is_refused() -> None:
    with pytest.raises(ValueError, match=r"2 '\?' parameter\(s\) and 1 value\(s\)"):
        _bind(parse_url("sqlite:///x.db"), "SELECT ? + ?", (1,))


def test_scripts_split_at_semicolons_outside_strings_comments_and_dollar_quotes() -> None:
    script = """
        -- the 1.0 schema; two statements
        CREATE TABLE t (a text DEFAULT 'x;y');
        CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;
        /* nothing; here */
    """
    assert split_script(script, "postgresql") == [
        "-- the 1.0 schema; two statements\n        CREATE TABLE t (a text DEFAULT 'x;y')",
        "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql"]


def test_server_urls_come_from_the_environment_with_what_to_set() -> None:
    with pytest.raises(Unavailable, match="set BACKFILLD_TESTING_POSTGRESQL_URL to a server URL"):
        server_url("postgresql", {})
    with pytest.raises(Unavailable, match="names a mysql URL; it must be a postgresql one"):
        server_url("postgresql", {"BACKFILLD_TESTING_POSTGRESQL_URL": "mysql://root@127.0.0.1/mysql"})
    url = server_url("mysql", {"BACKFILLD_TESTING_MYSQL_URL": "mysql://root:pw@127.0.0.1:3306/mysql"})
    assert url.password == "pw" and "pw" not in str(url)
