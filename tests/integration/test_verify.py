"""verify on every engine: exact comparisons, typed targets, a stopped verify proves nothing, wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from backfilld import daemon
from backfilld.engines.base import Engine, Stmt
from backfilld.verify import Verifier, record
from tests.dbutil import HIDDEN_CHANGES, GateAt, TestDb, hiding_type

LOWER = "lower(name)"
EXCLAIM = {"postgresql": "src || '!'", "sqlite": "src || '!'", "mysql": "CONCAT(src, '!')"}


async def names(db: TestDb, n: int = 300) -> str:
    table = await db.create("v", f"id {db.int_type()} NOT NULL PRIMARY KEY, name VARCHAR(50) NOT NULL, "
                                 "low VARCHAR(50), x INTEGER, third DECIMAL(10,2)")
    await db.many(f"INSERT INTO {table} (id, name, x) VALUES (?, ?, ?)", [(i, f"Name{i}", i) for i in range(1, n + 1)])
    return table


async def test_verify_finds_missing_and_case_only_differences_and_fix_repairs(db: TestDb) -> None:
    table = await names(db)
    cfg = db.config([{"name": "low", "table": table, "set": {"low": LOWER}}])
    await daemon.run(cfg, daemon.RunOptions())
    await db.x(f"UPDATE {table} SET low = ? WHERE id = 7", "NAME7")       # case only: a ci collation hides it
    await db.x(f"UPDATE {table} SET low = ? WHERE id = 8", "name8 ")      # trailing space: PAD SPACE hides it
    await db.x(f"UPDATE {table} SET low = NULL WHERE id = 9")
    job = cfg.jobs[0]
    found = await Verifier(db.engine, cfg, job).run()
    assert (found.missing, found.wrong, found.rows_checked) == (1, 2, 300)
    assert sorted(found.sample_wrong) == [[7], [8]] and found.sample_missing == [[9]]
    fixed = await Verifier(db.engine, cfg, job, fix=True).run()
    assert fixed.fixed == 3 and not fixed.clean
    again = await Verifier(db.engine, cfg, job).run()
    assert again.clean
    await record(db.engine, db.state_table, again)
    state = await asyncio.wait_for(daemon.wait_for(cfg, "low", "verified", 5, poll_s=0.1), 10)
    assert state.verified_at == again.at


async def test_overwrite_into_a_narrower_type_completes(db: TestDb) -> None:
    """target decimal(10,2) = x / 3.0: the stored value is rounded; comparing it with the unrounded
    expression would rewrite the same rows forever."""
    table = await names(db)
    cfg = db.config([{"name": "third", "table": table, "overwrite": True, "set": {"third": "x / 3.0"}}])
    [state] = await asyncio.wait_for(daemon.run(cfg, daemon.RunOptions()), 60)
    assert state.status == "completed" and state.pass_no <= 3
    assert (await Verifier(db.engine, cfg, cfg.jobs[0]).run()).clean


async def test_a_stopped_verify_never_counts_as_verified(db: TestDb) -> None:
    table = await names(db, 2000)
    cfg = db.config([{"name": "low", "table": table, "batch_size": 100, "set": {"low": LOWER}}],
                    throttle={"min_batch": 100, "max_batch": 100})
    await daemon.run(cfg, daemon.RunOptions())
    stop = asyncio.Event()

    async def stop_after_first() -> None:
        stop.set()

    result = await Verifier(db.engine, cfg, cfg.jobs[0], gate=GateAt({2: stop_after_first}), stop=stop).run()
    assert not result.complete and not result.clean and result.rows_checked == 100
    await record(db.engine, db.state_table, result)
    [(verified_at,)] = await db.q(f"SELECT verified_at FROM {db.state_table}")
    assert verified_at is None
    with pytest.raises(daemon.WaitTimeout):
        await daemon.wait_for(cfg, "low", "verified", 0.3, poll_s=0.1)


class WritesBefore:
    """An engine that runs `action` (the application writing, on its own connection) just before its first
    UPDATE: between what verify read and verify --fix's repair."""

    def __init__(self, engine: Engine, action: Callable[[], Awaitable[None]]) -> None:
        self._engine, self._action = engine, action

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - everything else is the engine's
        return getattr(self._engine, name)

    async def execute(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> int:
        sql = stmt if isinstance(stmt, str) else stmt.sql
        if self._action is not None and sql.lstrip().upper().startswith("UPDATE"):
            action, self._action = self._action, None
            await action()
        return await self._engine.execute(stmt, values)


@pytest.mark.parametrize(("engine_name", "typ", "changed"), HIDDEN_CHANGES, indirect=["engine_name"])
async def test_fix_leaves_a_target_changed_only_in_case_or_trailing_spaces(db: TestDb, typ: str, changed: str) -> None:
    """verify --fix rewrites a wrong target only if it still holds what verify read: one the application changed
    meanwhile only in case or trailing spaces ('abc5' -> 'ABC5'), which the column's collation calls equal, is
    left as the application wrote it and counted as changed meanwhile."""
    async with hiding_type(db, typ) as ddl:
        text = {"postgresql": "text", "sqlite": "TEXT", "mysql": "VARCHAR(40)"}[db.engine_name]
        table = await db.create("hv", f"id {db.int_type()} NOT NULL PRIMARY KEY, src {text}, dst {ddl}")
        await db.many(f"INSERT INTO {table} (id, src) VALUES (?, ?)", [(i, f"abc{i}") for i in range(1, 11)])
        cfg = db.config([{"name": "exclaim", "table": table, "set": {"dst": EXCLAIM[db.engine_name]}}])
        [state] = await daemon.run(cfg, daemon.RunOptions())
        assert state.status == "completed", state.error
        await db.x(f"UPDATE {table} SET dst = ? WHERE id = 5", "abc5")   # wrong: the right value is abc5!

        async def application_writes() -> None:
            await db.x(f"UPDATE {table} SET dst = ? WHERE id = 5", changed)

        result = await Verifier(WritesBefore(db.engine, application_writes), cfg, cfg.jobs[0], fix=True).run()
        assert (result.wrong, result.fixed, result.not_fixed) == (1, 0, 1), result.as_dict()
        assert await db.q(f"SELECT dst FROM {table} WHERE id = 5") == [(changed,)]
