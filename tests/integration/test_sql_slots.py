"""A job's SQL stays in its place in backfilld's statements, on every engine: a filter or an expression that
closes its parentheses early, adds an assignment, a second statement or a comment hiding the rest is refused
before anything runs, with the reason, and nothing is written."""

from __future__ import annotations

import pytest

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


@pytest.mark.parametrize("case", range(6))
async def test_sql_that_escapes_its_slot_is_refused_and_nothing_is_written(db: TestDb, case: int) -> None:
    where, sets, said = escapes(db.engine_name)[case]
    table = await db.users_with(50)
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
