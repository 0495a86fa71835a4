"""A job's filter and expressions as the slot check reads them (engines/slots.py), without a server: the SQL the
tests, the README and config/example.toml write is accepted on its engine; what would write, assign, run a
statement of its own or give more than one value is refused with the reason; valid SQL the grammar does not
know stands on the lexical verdict, marked unparsed. tests/integration/test_sql_slots.py runs jobs with them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from backfilld.engines.slots import slot_check
from backfilld.engines.sqltext import slot_problem
from tests.dbutil import CONCAT, SLOW_ON_499
from tests.integration.typecases import FILLS, KEY_EXPR, KEYS, SHOW

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ("postgresql", "mysql", "sqlite")


def written_by_the_tests() -> list[tuple[str, bool, str]]:
    """(engine, is the filter, SQL) the type matrix, the shared expressions and the example config use."""
    out = [(e, False, case.expr.replace("{enum}", "enum_t")) for e, cases in FILLS.items() for case in cases]
    out += [(e, False, KEY_EXPR[e].format(show=case.show or SHOW[e])) for e, cases in KEYS.items() for case in cases]
    out += [(e, False, expr) for e, expr in {**CONCAT, **SLOW_ON_499}.items()]
    example = tomllib.loads((ROOT / "config" / "example.toml").read_text(encoding="utf-8"))
    for job in example["jobs"]:
        out += [(e, True, job["where"]) for e in ENGINES if "where" in job]
        out += [(e, False, expr) for e in ENGINES for expr in job["set"].values()]
    # the commented-out per-engine form the README and example.toml show
    line = next(x for x in (ROOT / "config" / "example.toml").read_text(encoding="utf-8").splitlines()
                if x.startswith("# email_domain = {"))
    out += [(e, False, expr) for e, expr in re.findall(r'(\w+) = "([^"]*)"', line)]
    return out


VALID = [
    # forms users write that need the engine's own lexical rules or grammar
    ("postgresql", False, "$$it's$$ || name"), ("postgresql", False, "E'a\\'b' || name"),
    ("postgresql", False, 'name COLLATE "C"'), ("postgresql", False, "doc #>> '{a,b}'"),
    ("postgresql", True, "tags && ARRAY['a']"), ("postgresql", False, "extract(year from created)::int"),
    ("postgresql", False, "date_trunc('day', created) + interval '1 day'"), ("postgresql", True, "name ILIKE 'a%'"),
    ("postgresql", True, "id = ANY('{1,2}'::int[])"), ("postgresql", False, "make_interval(days := 1)"),
    ("postgresql", False, "(SELECT max(v) FROM other o WHERE o.id = users.id)"),
    ("postgresql", False, "SELECT max(v) FROM other"),   # the slot's parentheses make it a scalar subquery
    ("postgresql", True, "EXISTS (SELECT 1 FROM other o WHERE o.id = users.id)"),
    ("postgresql", False, "name || ')' || ', x = 1' /* ) */"),
    ("mysql", False, "'a\\'b'"), ("mysql", False, "doc->>'$.a'"), ("mysql", False, "DATE_ADD(created, INTERVAL 1 DAY)"),
    ("mysql", False, "_utf8mb4'x' COLLATE utf8mb4_bin"), ("mysql", True, "flags & 4"), ("mysql", True, "NOT deleted"),
    ("mysql", False, "replace(name, 'a', 'b')"), ("mysql", False, "insert(name, 1, 2, 'x')"),
    ("mysql", False, "TIMESTAMPDIFF(DAY, a, b)"), ("mysql", True, "name <=> NULL"), ("mysql", False, "`weird col` + 1"),
    ("mysql", False, "CONCAT(name, ')', ', x = 1') /* ) */"), ("mysql", False, "(SELECT a FROM other LIMIT 1)"),
    ("sqlite", False, "[weird col] || 'x'"), ("sqlite", True, "name GLOB 'a*'"), ("sqlite", True, "a IS NOT b"),
    ("sqlite", False, "iif(a, b, c)"), ("sqlite", False, "doc ->> '$.a'"), ("sqlite", True, "deleted"),
    ("sqlite", False, "replace(name, 'a', 'b')"), ("sqlite", False, "x'ff'"),
]

# valid on the engine (each ran on the servers of this repository's tests), not known to sqlglot's grammar
UNPARSED = [
    ("postgresql", False, "substring(name similar '%' escape '#')"),
    ("postgresql", True, "name IS NFC NORMALIZED"),
    ("mysql", False, "CAST(name AS CHAR(3) ASCII)"),
    ("sqlite", False, "CAST(id AS BIG INT)"),
]


@pytest.mark.parametrize(("engine", "condition", "sql"), [*written_by_the_tests(), *VALID])
def test_the_sql_users_write_is_accepted(engine: str, condition: bool, sql: str) -> None:
    assert slot_check(sql, engine, condition=condition).problem is None


@pytest.mark.parametrize(("engine", "condition", "sql"), written_by_the_tests())
def test_the_sql_the_tests_write_parses(engine: str, condition: bool, sql: str) -> None:
    assert slot_check(sql, engine, condition=condition).unparsed is None


@pytest.mark.parametrize(("engine", "condition", "sql"), UNPARSED)
def test_valid_sql_the_grammar_does_not_know_stands_on_the_lexical_verdict(engine: str, condition: bool,
                                                                           sql: str) -> None:
    slot = slot_check(sql, engine, condition=condition)
    assert slot.problem is None and slot.unparsed


REFUSED = [
    # what closes the slot, adds an assignment or a statement: the lexical gate
    ("postgresql", True, "deleted = 0) OR (1 = 1", "closes a parenthesis it did not open"),
    ("mysql", False, "lower(name)) , name = (upper(name)", "closes a parenthesis it did not open"),
    ("sqlite", False, "lower(name), name = upper(name)", "holds a ',' outside parentheses"),
    ("mysql", True, "deleted = 0 #", "holds a line comment"),
    ("postgresql", True, "deleted = 0 --", "holds a line comment"),   # sqlglot alone reads past it
    ("mysql", False, "/*! name */", "MySQL executable comment"),
    ("sqlite", False, "(name", "leaves a parenthesis open"),
    ("postgresql", False, "'abc", "unterminated quote"),
    # what writes, assigns or runs a statement inside one expression: the grammar
    ("postgresql", False, "(WITH d AS (DELETE FROM t RETURNING 1) SELECT 1)", "writes (DELETE)"),
    ("postgresql", False, "(WITH d AS (UPDATE t SET a = 1 RETURNING a) SELECT a FROM d)", "writes (UPDATE)"),
    ("postgresql", True, "id IN (WITH d AS (INSERT INTO t VALUES (1) RETURNING 1) SELECT 1)", "writes (INSERT)"),
    ("mysql", False, "@x := 5", "assignment to a variable"),
    ("mysql", False, "CONCAT(@x := name, 'a')", "assignment to a variable"),
    ("mysql", False, "(SELECT a INTO @v FROM t)", "SELECT ... INTO"),
    ("postgresql", False, "DELETE FROM t", "writes (DELETE)"),
    ("mysql", False, "REPLACE INTO t VALUES (1)", "a statement"),
    ("sqlite", False, "PRAGMA foo", "a statement"),
    ("postgresql", False, "TRUNCATE t", "writes (TRUNCATE)"),
    ("postgresql", False, "DROP TABLE t", "writes (DROP)"),
    ("mysql", False, "SET @a = 1", "a statement"),
    ("postgresql", False, "COPY t TO '/tmp/x'", "writes (COPY)"),
    ("postgresql", False, "CALL p()", "a statement"),
    # more than one value, or a value where a condition belongs
    ("postgresql", False, "(SELECT a, b FROM t)", "a subquery of 2 columns"),
    ("sqlite", False, "SELECT a, b FROM t", "holds a ','"),   # the lexical gate says it first
    ("mysql", False, "(a, b)", "a list of values"),
    ("postgresql", True, "'yes'", "not a condition"),
    ("mysql", True, "id % 2", "not a condition"),
    ("sqlite", True, "name || 'x'", "not a condition"),
    ("mysql", True, "1", "not a condition"),
]


@pytest.mark.parametrize(("engine", "condition", "sql", "said"), REFUSED)
def test_sql_that_leaves_its_slot_or_writes_is_refused_with_the_reason(engine: str, condition: bool, sql: str,
                                                                      said: str) -> None:
    slot = slot_check(sql, engine, condition=condition)
    assert slot.problem is not None and said in slot.problem, slot


@pytest.mark.parametrize(("engine", "condition", "sql", "said"), [r for r in REFUSED if slot_problem(r[2], r[0],
                                                                                                       condition=r[1])])
def test_both_gates_must_pass(engine: str, condition: bool, sql: str, said: str) -> None:
    """What the lexical gate refuses stays refused whatever the grammar says of it."""
    assert slot_check(sql, engine, condition=condition).problem == slot_problem(sql, engine, condition=condition)
