"""A job's SQL stays in its place in backfilld's statements, on every engine: a filter or an expression that
closes its parentheses early, adds an assignment, a second statement or a comment hiding the rest is refused
before anything runs, with the reason, and nothing is written; so is one that parses, in the engine's grammar, as
something that writes, assigns a variable, gives more than one value, or (for the filter) is not a condition.
Valid SQL the grammar does not know runs, logged as not parsed."""

from __future__ import annotations

import pytest
import structlog

from backfilld import daemon
from backfilld.errors import ConfigError
from tests.dbutil import CONCAT, TestDb

NAME = {"postgresql": "name", "mysql": "name", "sqlite": "name"}


def escapes(engine: str) -> list[tuple[str, dict[str, str], str]]:
    """(where, set, what the error says) for each way out of the slot."""
    label = CONCAT[engine]
    return [
        ("deleted = 0) OR (1 = 1", {"label": label}, "where closes a parenthesis it did not open"),
        (None, {"label": "lower(name)) , name = (upper(name)"}, "set.label"),
        (None, {"label": "lower(name), name = upper(name)"}, "holds a ',' outside parentheses"),
        (None, {"label": f"{label}; DELETE FROM t"}, "without ';'"),   # refused as the config is read
        ("deleted = 0 --", {"label": label}, "holds a line comment"),
        (None, {"label": "(name"}, "leaves a parenthesis open"),
    ]


def parsed(engine: str, table: str) -> list[tuple[str | None, dict[str, str], str]]:
    """(where, set, what the error says) for what stays in its slot but is not one expression that only reads."""
    label = CONCAT[engine]
    writes = {"postgresql": f"(WITH d AS (DELETE FROM {table} RETURNING 1) SELECT 'x' FROM d LIMIT 1)",
              "mysql": "CONCAT(@was := name, '!')",
              "sqlite": f"DELETE FROM {table}"}[engine]
    said = {"postgresql": "set.label (postgresql) holds a statement that writes (DELETE)",
            "mysql": "set.label (mysql) holds an assignment to a variable",
            "sqlite": "set.label (sqlite) holds a statement that writes (DELETE)"}[engine]
    return [
        (None, {"label": writes}, said),
        (None, {"label": f"(SELECT name, id FROM {table} LIMIT 1)"},
         f"set.label ({engine}) is a subquery of 2 columns"),
        ("id * 2", {"label": label}, "where is a value, not a condition"),
    ]


CASES = [("escape", i) for i in range(6)] + [("parsed", i) for i in range(3)]


@pytest.mark.parametrize("case", CASES, ids=[f"{kind}{i}" for kind, i in CASES])
async def test_sql_that_escapes_its_slot_is_refused_and_nothing_is_written(db: TestDb, case: tuple[str, int]) -> None:
    table = await db.users_with(50)
    kind, i = case
    where, sets, said = (escapes(db.engine_name) if kind == "escape" else parsed(db.engine_name, table))[i]
    before = await db.q(f"SELECT id, name, label, deleted FROM {table} ORDER BY id")
    job = {"name": "j", "table": table, "set": sets, **({"where": where} if where else {})}
    try:
        cfg = db.config([job])
    except ConfigError as exc:
        assert said in str(exc) and "jobs[0]" in str(exc), str(exc)
    else:
        for attempt in (daemon.plan(cfg), daemon.run(cfg, daemon.RunOptions())):
            with pytest.raises(ConfigError) as err:
                await attempt
            assert said in str(err.value) and "job 'j'" in str(err.value), str(err.value)
    assert await db.q(f"SELECT id, name, label, deleted FROM {table} ORDER BY id") == before


async def test_sql_that_only_looks_like_an_escape_runs(db: TestDb) -> None:
    """Parentheses and commas inside strings, function calls and block comments are the expression's own."""
    table = await db.users_with(20)
    concat = {"postgresql": "name || ')' || ', x = 1' /* ) */", "sqlite": "name || ')' || ', x = 1' /* ) */",
              "mysql": "CONCAT(name, ')', ', x = 1') /* ) */"}[db.engine_name]
    cfg = db.config([{"name": "j", "table": table, "set": {"label": concat}, "where": "(deleted = 0)"}])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 20
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {NAME[db.engine_name]} || ')' || ', x = 1'"
                      if db.engine_name != "mysql" else
                      f"SELECT count(*) FROM {table} WHERE label = CONCAT(name, ')', ', x = 1')") == [(20,)]


UNPARSED = {"postgresql": ("substring(name similar '%' escape '#')", "name IS NFC NORMALIZED"),
            "mysql": ("CAST(name AS CHAR(3) ASCII)", None),
            "sqlite": ("CAST(id AS BIG INT) || ''", None)}


async def test_valid_sql_the_grammar_does_not_know_runs_and_is_logged(db: TestDb) -> None:
    """sqlglot's grammar is not the server's: a valid expression it cannot parse stands on the lexical verdict."""
    table = await db.users_with(20)
    expr, where = UNPARSED[db.engine_name]
    cfg = db.config([{"name": "j", "table": table, "set": {"label": expr}, **({"where": where} if where else {})}])
    with structlog.testing.capture_logs() as logs:
        [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 20
    unparsed = [e for e in logs if e["event"] == "sql_slot_not_parsed"]
    assert {e["key"] for e in unparsed} == {"set.label", *(["where"] if where else [])}, unparsed
    assert all(e["job"] == "j" and e["engine"] == db.engine_name and e["log_level"] == "warning" for e in unparsed)
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NULL") == [(0,)]
