"""Sync triggers of a lookup job on SQLite, PostgreSQL and MariaDB: rows old code inserts with the target NULL, or
whose match sources it changes, point at their lookup row at once (created if missing, exactly one per value),
without a backfill run; existing lookup rows are never changed, and no row or id is spent on a value that has one."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from backfilld import daemon
from backfilld.engines import triggers
from backfilld.verify import Verifier
from tests.dbutil import GateAt, TestDb, application_session
from tests.integration.test_lookup_jobs import id_column, job, linktarget, pagelinks, text
from tests.integration.test_triggers import trigger_count

JOB = "pl_target"
EXISTING = [(0, "Title_7"), (4, "Zoë"), (0, "Title_9"), (0, "Title_1"), (4, "Title_3")]   # before any backfill


class Old:
    """Old application code: writes pagelinks rows and never names the target."""

    def __init__(self, db: TestDb, pl: str) -> None:
        self.db, self.pl = db, pl

    async def insert(self, pl_id: int, ns: int, title: str, pl_from: int = 1) -> None:
        await self.db.x(f"INSERT INTO {self.pl} (pl_id, pl_from, pl_namespace, pl_title) VALUES (?, ?, ?, ?)",
                        pl_id, pl_from, ns, title)

    async def update(self, pl_id: int, **changes: Any) -> None:
        sets = ", ".join(f"{c} = ?" for c in changes)
        await self.db.x(f"UPDATE {self.pl} SET {sets} WHERE pl_id = ?", *changes.values(), pl_id)

    async def target(self, pl_id: int) -> Any:
        return (await self.db.q(f"SELECT pl_target_id FROM {self.pl} WHERE pl_id = ?", pl_id))[0][0]


async def lookup_rows(db: TestDb, lt: str) -> dict[tuple[int, str], int]:
    """(namespace, title) -> id; fails on two rows for one value."""
    out: dict[tuple[int, str], int] = {}
    for lt_id, ns, title in await db.q(f"SELECT lt_id, lt_namespace, lt_title FROM {lt}"):
        assert (ns, text(title)) not in out, f"two lookup rows for {(ns, title)!r}"
        out[(ns, text(title))] = lt_id
    return out


async def wrong_targets(db: TestDb, pl: str, lt: str, kept: dict[int, Any] | None = None) -> list[Any]:
    """Rows whose target is not the id of their value's lookup row (kept: pl_id -> the target new code wrote)."""
    by_value = await lookup_rows(db, lt)
    kept = kept or {}
    rows = await db.q(f"SELECT pl_id, pl_namespace, pl_title, pl_target_id FROM {pl}")
    return [(pl_id, ns, title, target) for pl_id, ns, title, target in rows
            if target != kept.get(pl_id, by_value.get((ns, text(title))))]


async def install(db: TestDb, cfg: Any, pl: str) -> list[str]:
    if db.engine_name == "postgresql":
        db.functions.append(triggers.trigger_names(pl, JOB).function)
    return await daemon.triggers(cfg, JOB, "install")


async def test_old_code_gets_its_lookup_rows_at_once(db: TestDb) -> None:
    lt = await linktarget(db)
    await db.many(f"INSERT INTO {lt} (lt_namespace, lt_title) VALUES (?, ?)", EXISTING)
    pl, _ = await pagelinks(db, 300, step=2)   # even ids: the odd ones are old code's
    cfg = db.config([job(pl, lt)])
    [state] = await daemon.run(cfg, daemon.RunOptions())   # the rows from before: the backfill's
    assert state.status == "completed", state.error
    assert await trigger_count(db, pl) == 0
    stmts = await install(db, cfg, pl)
    assert any(lt in s for s in stmts)
    assert await triggers.installed(db.engine, pl, JOB)
    before = await lookup_rows(db, lt)
    top = max(before.values())
    old = Old(db, pl)

    # inserts with the target NULL: an existing value gets its row's id, no row is added for it
    await old.insert(1, 0, "Title_7")
    await old.insert(3, 4, "Zoë")
    assert (await old.target(1), await old.target(3)) == (before[(0, "Title_7")], before[(4, "Zoë")])
    assert await lookup_rows(db, lt) == before
    # a brand-new value gets one new row, shared by the next row with it
    await old.insert(5, 0, "Brand new")
    await old.insert(7, 0, "Brand new")
    await old.insert(9, 1, "Brand new")     # another namespace: another value
    await old.insert(11, 0, "李小龍 2")
    after = await lookup_rows(db, lt)
    assert await old.target(5) == await old.target(7) == after[(0, "Brand new")]
    assert await old.target(9) == after[(1, "Brand new")] != after[(0, "Brand new")]

    # old code changes match sources of filled rows: each follows to its value's row, created if missing
    await old.update(2, pl_title="Title_9")
    await old.update(4, pl_namespace=1, pl_title="Moved")
    await old.update(6, pl_namespace=0, pl_title="Brand new")
    await old.update(8, pl_namespace=4, pl_title="Title_3")
    # a change of another column leaves the target, a target set to NULL is filled again
    await old.update(10, pl_from=12345)
    await db.x(f"UPDATE {pl} SET pl_target_id = NULL WHERE pl_id = 12")
    # several rows in one statement, to a value none of them had
    await db.x(f"UPDATE {pl} SET pl_namespace = 0, pl_title = ? WHERE pl_id BETWEEN 14 AND 20", "Together")

    # new code writing the target itself is kept: with a source in the same statement, and alone
    hand = before[(0, "Title_1")]
    await db.x(f"UPDATE {pl} SET pl_title = ?, pl_target_id = ? WHERE pl_id = 22", "Hand written", hand)
    await db.x(f"UPDATE {pl} SET pl_target_id = ? WHERE pl_id = 24", hand)
    await old.update(24, pl_title="Then old code")   # a hand-written target does not follow its sources
    kept = {22: hand, 24: hand}
    assert (await old.target(22), await old.target(24)) == (hand, hand)

    assert await wrong_targets(db, pl, lt, kept) == []
    assert await old.target(8) == before[(4, "Title_3")] and await old.target(2) == before[(0, "Title_9")]
    after = await lookup_rows(db, lt)
    # existing rows unchanged (same ids for the same values), and rows only for the values that had none
    assert {v: i for v, i in after.items() if v in before} == before
    created = {v: i for v, i in after.items() if v not in before}
    assert set(created) == {(0, "Brand new"), (1, "Brand new"), (0, "李小龍 2"), (1, "Moved"), (0, "Together")}
    # one id each, none spent on a value that had its row (a sequence or AUTO_INCREMENT spends one per attempt)
    assert sorted(created.values()) == list(range(top + 1, top + 1 + len(created)))

    # remove: the triggers and the function go, the rows stay as they are, old code is on its own again
    rows = await db.q(f"SELECT * FROM {pl} ORDER BY pl_id")
    await daemon.triggers(cfg, JOB, "remove")
    assert not await triggers.installed(db.engine, pl, JOB)
    assert await trigger_count(db, pl) == 0
    if db.engine_name == "postgresql":
        fn = triggers.trigger_names(pl, JOB).function
        assert await db.q("SELECT count(*) FROM pg_proc WHERE proname = ?", fn) == [(0,)]
    assert await db.q(f"SELECT * FROM {pl} ORDER BY pl_id") == rows
    assert await lookup_rows(db, lt) == after
    await old.insert(13, 0, "After removal")
    assert await old.target(13) is None
    assert await lookup_rows(db, lt) == after


async def test_null_match_values_the_filter_and_values_columns(db: TestDb) -> None:
    """A NULL match value means no lookup row and a NULL target; the filter holds on the row as written; a values
    column is written when its lookup row is created, and never after."""
    title = "VARBINARY(255)" if db.engine_name == "mysql" else "TEXT"
    i = db.int_type()
    lt = await db.create("tags", f"t_id {id_column(db)}, t_name {title} NOT NULL, t_first {i}")
    await db.x(f"CREATE UNIQUE INDEX {db.name('t_name')} ON {lt} (t_name)")
    pl = await db.create("posts", f"p_id {i} NOT NULL PRIMARY KEY, p_from {i} NOT NULL, p_tag {title}, p_tag_id {i}")
    cfg = db.config([{"name": JOB, "table": pl, "where": "p_from <> 0",
                      "lookup": {"table": lt, "id": "t_id", "target": "p_tag_id",
                                 "match": {"t_name": "NULLIF(p_tag, '-')"}, "values": {"t_first": "p_from"}}}])
    await install(db, cfg, pl)

    async def insert(p_id: int, p_from: int, tag: str | None) -> None:
        await db.x(f"INSERT INTO {pl} (p_id, p_from, p_tag) VALUES (?, ?, ?)", p_id, p_from, tag)

    async def rows() -> list[tuple[Any, ...]]:
        return await db.q(f"SELECT p_id, p_tag_id FROM {pl} ORDER BY p_id")

    async def tags() -> dict[str, tuple[int, int]]:
        return {text(n): (t_id, first) for t_id, n, first in await db.q(f"SELECT t_id, t_name, t_first FROM {lt}")}

    await insert(1, 5, None)
    await insert(2, 5, "-")
    await insert(3, 0, "x")      # outside the filter
    assert await tags() == {}
    await insert(4, 5, "x")
    await insert(5, 7, "x")
    [(x_id, first)] = (await tags()).values()
    assert first == 5            # from the row that created it; row 5 does not change it
    assert await rows() == [(1, None), (2, None), (3, None), (4, x_id), (5, x_id)]

    # a derived target follows its source to NULL, and back
    await db.x(f"UPDATE {pl} SET p_tag = NULL WHERE p_id = 4")
    assert (await rows())[3] == (4, None)
    await db.x(f"UPDATE {pl} SET p_tag = 'x' WHERE p_id = 4")
    # a row entering the filter is filled; one whose match value becomes known gets its row
    await db.x(f"UPDATE {pl} SET p_from = 3 WHERE p_id = 3")
    await db.x(f"UPDATE {pl} SET p_tag = 'y' WHERE p_id = 2")
    y_id, y_first = (await tags())["y"]
    assert y_first == 5
    assert await rows() == [(1, None), (2, y_id), (3, x_id), (4, x_id), (5, x_id)]
    # a row leaving the filter in the statement that changes its source keeps its target, and makes no row
    await db.x(f"UPDATE {pl} SET p_from = 0, p_tag = 'z' WHERE p_id = 5")
    assert (await rows())[4] == (5, x_id)
    assert set(await tags()) == {"x", "y"}
    assert (await Verifier(db.engine, cfg, cfg.jobs[0]).run()).clean


async def test_a_run_with_triggers_installed_ends_clean(db: TestDb) -> None:
    """Triggers first, then the backfill while old code inserts rows behind and ahead of the cursor and moves rows
    to other values: the run completes, every target is right and verify is clean."""
    lt = await linktarget(db)
    await db.many(f"INSERT INTO {lt} (lt_namespace, lt_title) VALUES (?, ?)", EXISTING)
    pl, _ = await pagelinks(db, 2000, step=2)
    cfg = db.config([job(pl, lt, batch_size=200)])
    await install(db, cfg, pl)
    old = Old(db, pl)

    async def writes(first: int) -> None:
        for k in range(first, 4000, 194):    # odd ids across the table: behind the cursor and ahead of it
            await old.insert(k, k % 2, f"Live_{k % 13}" if k % 3 else "Title_7")
        for k in range(first + 1, 4000, 89):
            await old.update(k - k % 2, pl_title=f"Moved_{k % 7}")

    [state] = await daemon.run(cfg, daemon.RunOptions(), gate=GateAt({2: lambda: writes(1), 6: lambda: writes(3)}))
    assert state.status == "completed", state.error
    assert await wrong_targets(db, pl, lt) == []
    result = await Verifier(db.engine, cfg, cfg.jobs[0]).run()
    assert result.clean, result.as_dict()
    await daemon.triggers(cfg, JOB, "remove")


async def test_plan_shows_the_lookup_triggers(db: TestDb) -> None:
    lt = await linktarget(db)
    pl, _ = await pagelinks(db, 10)
    [p] = await daemon.plan(db.config([job(pl, lt)]))
    trig = p["triggers"]
    assert trig["supported"] and not trig["installed"]
    assert any("INSERT INTO" in s and lt in s for s in trig["install_sql"]), trig["install_sql"]


async def test_random_writes_follow_the_rule(db: TestDb) -> None:
    """Old and new code in random order; after each write the row's target is what the rule says, computed here
    from the lookup table as it is (the ids the triggers gave new values)."""
    if db.engine_name == "sqlite":
        # the AFTER UPDATE trigger updates its own table: with recursion on it must still stop by itself
        await db.engine.execute("PRAGMA recursive_triggers = ON")
    lt = await linktarget(db)
    await db.many(f"INSERT INTO {lt} (lt_namespace, lt_title) VALUES (?, ?)", EXISTING)
    pl, _ = await pagelinks(db, 0)
    cfg = db.config([job(pl, lt)])
    await install(db, cfg, pl)
    top = max((await lookup_rows(db, lt)).values())
    old = Old(db, pl)
    rnd = random.Random(11)
    values = [(ns, t) for ns in (0, 4) for t in ("Title_7", "Title_3", "Zoë", "New_a", "New_b", "李小龍")]
    rows: dict[int, tuple[int, str]] = {}
    hand = 0
    for step in range(300):
        ids = await lookup_rows(db, lt)
        op = rnd.random()
        if op < 0.3 or not rows:
            pl_id = len(rows) + 1
            ns, title = rows[pl_id] = rnd.choice(values)
            await old.insert(pl_id, ns, title)
            expected = (await lookup_rows(db, lt))[(ns, title)]
        else:
            pl_id = rnd.choice(list(rows))
            was, target = rows[pl_id], await old.target(pl_id)
            ns, title = rows[pl_id] = rnd.choice(values)
            if op < 0.75:       # old code changes the sources
                await old.update(pl_id, pl_namespace=ns, pl_title=title)
                now = await lookup_rows(db, lt)
                expected = now[(ns, title)] if target is None or target == ids.get(was) else target
            elif op < 0.9:      # new code writes sources and target together
                hand = rnd.choice([i for i in ids.values() if i != target])
                await db.x(f"UPDATE {pl} SET pl_namespace = ?, pl_title = ?, pl_target_id = ? WHERE pl_id = ?",
                           ns, title, hand, pl_id)
                expected = hand
            else:               # a target set to NULL is filled again
                await db.x(f"UPDATE {pl} SET pl_namespace = ?, pl_title = ?, pl_target_id = NULL WHERE pl_id = ?",
                           ns, title, pl_id)
                expected = (await lookup_rows(db, lt))[(ns, title)]
        assert await old.target(pl_id) == expected, (step, pl_id)
    created = [i for v, i in (await lookup_rows(db, lt)).items() if v not in EXISTING]
    assert sorted(created) == list(range(top + 1, top + 1 + len(created)))
    assert hand, "new code wrote a target"


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"], indirect=True)
async def test_two_sessions_creating_one_value_make_one_lookup_row(db: TestDb) -> None:
    """Old code in two sessions writes rows with the same new value at once: the second session's insert of the
    lookup row waits for the first's, finds it, and points at it."""
    lt = await linktarget(db)
    pl, _ = await pagelinks(db, 0)
    cfg = db.config([job(pl, lt)])
    await install(db, cfg, pl)
    first, second = await application_session(db), await application_session(db)   # the server's lock waits
    try:
        tx = first.engine.transaction()
        await tx.__aenter__()
        await Old(first, pl).insert(1, 0, "Race")        # its lookup row, not committed yet
        waiting = asyncio.create_task(Old(second, pl).insert(2, 0, "Race"))
        await asyncio.sleep(0.5)
        assert not waiting.done(), "the second session did not wait for the first's lookup row"
        await tx.__aexit__(None, None, None)
        await asyncio.wait_for(waiting, 10)
    finally:
        await first.engine.close()
        await second.engine.close()
    [(race_id,)] = await db.q(f"SELECT lt_id FROM {lt}")
    assert await db.q(f"SELECT pl_id, pl_target_id FROM {pl} ORDER BY pl_id") == [(1, race_id), (2, race_id)]
