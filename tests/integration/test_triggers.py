"""Sync triggers on SQLite, PostgreSQL and MariaDB: old code writes, new code writes, every target ends right.

The expected value of every row is computed in Python by a model of the documented rule
(backfilld/engines/triggers.py), independently of the SQL.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from backfilld import daemon
from backfilld.engines import triggers
from tests.dbutil import CONCAT, HIDDEN_CHANGES, TestDb, hiding_type

JOB = "label_job"
WHERE = "deleted = 0"
NAMES = ["Ada", "Zoë", "José", "Ивана", "李小龍", "محمد", "Ngọc Ánh", "🦄 emoji", "O'Brien", "50% off", "a\\b",
         "tab\there", "%s literal", "name", None]


def label_of(name: str | None, id_: int) -> str | None:
    return None if name is None else f"{name}#{id_}"


class Model:
    """The trigger rule in Python: what the target must be after each write."""

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self.rows: dict[int, dict[str, Any]] = {}

    def insert(self, id_: int, name: str | None, deleted: int, label: str | None = None) -> None:
        row = {"name": name, "deleted": deleted, "label": label}
        if deleted == 0 and (self.overwrite or label is None):
            row["label"] = label_of(name, id_)
        self.rows[id_] = row

    def update(self, id_: int, **changes: Any) -> None:
        old = self.rows[id_]
        new = {**old, **changes}
        if new["deleted"] == 0:
            if self.overwrite or new["label"] is None:
                new["label"] = label_of(new["name"], id_)
            elif new["label"] == old["label"] and old["label"] == label_of(old["name"], id_):
                new["label"] = label_of(new["name"], id_)
        self.rows[id_] = new

    def expected(self) -> list[tuple[Any, ...]]:
        return [(i, r["name"], r["deleted"], r["label"]) for i, r in sorted(self.rows.items())]


class App:
    """Writes as application code: old code never names the target; new code does."""

    def __init__(self, db: TestDb, table: str, model: Model) -> None:
        self.db, self.table, self.model = db, table, model

    async def old_insert(self, id_: int, name: str | None, deleted: int = 0) -> None:
        await self.db.x(f"INSERT INTO {self.table} (id, name, deleted) VALUES (?, ?, ?)", id_, name, deleted)
        self.model.insert(id_, name, deleted)

    async def new_insert(self, id_: int, name: str | None, label: str | None, deleted: int = 0) -> None:
        await self.db.x(f"INSERT INTO {self.table} (id, name, deleted, label) VALUES (?, ?, ?, ?)",
                        id_, name, deleted, label)
        self.model.insert(id_, name, deleted, label)

    async def update(self, id_: int, **changes: Any) -> None:
        sets = ", ".join(f"{c} = ?" for c in changes)
        await self.db.x(f"UPDATE {self.table} SET {sets} WHERE id = ?", *changes.values(), id_)
        self.model.update(id_, **changes)

    async def rows(self) -> list[tuple[Any, ...]]:
        return await self.db.q(f"SELECT id, name, deleted, label FROM {self.table} ORDER BY id")

    async def label(self, id_: int) -> str | None:
        return (await self.db.q(f"SELECT label FROM {self.table} WHERE id = ?", id_))[0][0]


async def trigger_count(db: TestDb, table: str) -> int:
    if db.engine_name == "postgresql":
        sql = "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(?) AND NOT tgisinternal"
    elif db.engine_name == "mysql":
        sql = "SELECT count(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = DATABASE() " \
              "AND EVENT_OBJECT_TABLE = ?"
    else:
        sql = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?"
    return int((await db.q(sql, table))[0][0])


async def setup(db: TestDb, *, overwrite: bool = False, where: str | None = WHERE) -> tuple[str, App]:
    table = await db.create_users()
    if db.engine_name == "postgresql":
        db.functions.append(triggers.trigger_names(table, JOB).function)
    await triggers.install(db.engine, table, None, {"label": CONCAT[db.engine_name]}, where, overwrite, JOB)
    return table, App(db, table, Model(overwrite))


async def test_old_code_fills_new_code_is_kept(db: TestDb) -> None:
    table, app = await setup(db)
    assert await triggers.installed(db.engine, table, JOB)

    # old code inserts without the target: filled where the filter holds and the expression is not NULL
    await app.old_insert(1, "Ada")
    await app.old_insert(2, "Zoë")
    await app.old_insert(3, None)
    await app.old_insert(4, "Bob", deleted=1)
    # new code writes the target itself
    await app.new_insert(5, "Eve", "hand-5 ü")
    assert await app.rows() == [(1, "Ada", 0, "Ada#1"), (2, "Zoë", 0, "Zoë#2"), (3, None, 0, None),
                                (4, "Bob", 1, None), (5, "Eve", 0, "hand-5 ü")]

    # old code changes sources: a derived target follows, a hand-written one stays, a NULL one is filled
    await app.update(1, name="Adèle")
    await app.update(5, name="Eva")
    await app.update(3, name="Cy")
    assert (await app.label(1), await app.label(5), await app.label(3)) == ("Adèle#1", "hand-5 ü", "Cy#3")

    # rows outside the filter are never touched; a row entering it is filled
    await app.update(4, name="Bobby")
    assert await app.label(4) is None
    await app.update(4, deleted=0)
    assert await app.label(4) == "Bobby#4"

    # new code writes the target and a source in one statement: its value stays
    await app.update(1, name="Ann", label="custom-1")
    assert await app.label(1) == "custom-1"
    await app.update(1, name="Anna")  # ... and later source changes by old code leave it too
    assert await app.label(1) == "custom-1"

    # a derived value whose sources become NULL follows them to NULL, and comes back with them
    await app.update(2, name=None)
    assert await app.label(2) is None
    await app.update(2, name="Zed")
    assert await app.label(2) == "Zed#2"

    # a target set to NULL is filled again, as the batch would
    await app.update(2, label=None)
    assert await app.label(2) == "Zed#2"

    # a derived row leaving the filter keeps its value; sources changed meanwhile are not followed
    await app.update(2, deleted=1)
    await app.update(2, name="Gone")
    assert await app.label(2) == "Zed#2"

    # an update touching neither sources nor target changes nothing
    await app.update(3, deleted=0)
    assert await app.rows() == app.model.expected()

    # several rows in one statement
    await app.db.x(f"UPDATE {table} SET name = ? WHERE id BETWEEN ? AND ?", "Same", 1, 5)
    for id_ in range(1, 6):
        app.model.update(id_, name="Same")
    assert await app.rows() == app.model.expected()
    assert await app.label(3) == "Same#3" and await app.label(1) == "custom-1"


async def test_random_writes_match_the_model(db: TestDb) -> None:
    table, app = await setup(db)
    if db.engine_name == "sqlite":
        # the AFTER UPDATE trigger updates its own table: with recursion on it must still stop by itself
        await db.engine.execute("PRAGMA recursive_triggers = ON")
    rnd = random.Random(7)
    ids: list[int] = []
    for step in range(500):
        op = rnd.random()
        if op < 0.3 or not ids:
            id_ = len(ids) + 1
            ids.append(id_)
            if rnd.random() < 0.25:
                await app.new_insert(id_, rnd.choice(NAMES), rnd.choice([f"hand-{id_}", None]),
                                     deleted=int(rnd.random() < 0.2))
            else:
                await app.old_insert(id_, rnd.choice(NAMES), deleted=int(rnd.random() < 0.2))
        elif op < 0.75:
            await app.update(rnd.choice(ids), name=rnd.choice(NAMES))
        elif op < 0.85:
            await app.update(rnd.choice(ids), deleted=rnd.choice([0, 1]))
        elif op < 0.95:
            id_ = rnd.choice(ids)
            await app.update(id_, label=rnd.choice([f"new-{step}", None]))
        else:
            id_ = rnd.choice(ids)
            await app.update(id_, name=rnd.choice(NAMES), label=f"both-{step}")
    got = await app.rows()
    assert got == app.model.expected()
    # the run exercised every branch of the rule
    labels = [r[3] for r in got]
    assert any(lb and lb.startswith(("hand-", "new-", "both-")) for lb in labels)
    assert any(lb and "#" in lb for lb in labels) and None in labels


async def test_overwrite_always_writes_the_expression(db: TestDb) -> None:
    table, app = await setup(db, overwrite=True)
    await app.old_insert(1, "Ada")
    await app.new_insert(2, "Eve", "hand-2")  # overwritten: that is what overwrite means
    await app.old_insert(3, "Bob", deleted=1)
    await app.new_insert(4, "Kim", "hand-4", deleted=1)  # outside the filter: kept
    assert await app.rows() == [(1, "Ada", 0, "Ada#1"), (2, "Eve", 0, "Eve#2"), (3, "Bob", 1, None),
                                (4, "Kim", 1, "hand-4")]
    await app.update(1, label="hand-1")
    await app.update(2, name=None)
    await app.update(3, name="Bo")
    assert await app.rows() == [(1, "Ada", 0, "Ada#1"), (2, None, 0, None), (3, "Bo", 1, None),
                                (4, "Kim", 1, "hand-4")]
    assert await app.rows() == app.model.expected()


async def test_without_filter_every_row_is_kept(db: TestDb) -> None:
    table, app = await setup(db, where=None)
    await app.old_insert(1, "Ada", deleted=1)
    await app.update(1, name="Ida")
    assert await app.label(1) == "Ida#1"


async def test_remove_and_install_twice(db: TestDb) -> None:
    table, app = await setup(db)
    expr = {"label": CONCAT[db.engine_name]}
    ddl = await triggers.install(db.engine, table, None, expr, WHERE, False, JOB)  # again: replaces
    assert ddl == triggers.build_install_sql(db.engine_name, table, (await db.engine.table_info(table)).columns,
                                             ["id"], expr, WHERE, False, JOB,
                                             mariadb=any("OR REPLACE TRIGGER" in s for s in ddl))
    assert await trigger_count(db, table) == 2
    await app.old_insert(1, "Ada")
    assert await app.label(1) == "Ada#1"

    # another job on the same table has its own triggers; removing one leaves the other
    await triggers.install(db.engine, table, None, expr, "deleted = 1", False, "other_job")
    if db.engine_name == "postgresql":
        db.functions.append(triggers.trigger_names(table, "other_job").function)
    assert await trigger_count(db, table) == 4
    await triggers.remove(db.engine, table, "other_job")
    assert await trigger_count(db, table) == 2
    assert await triggers.installed(db.engine, table, JOB)

    await triggers.remove(db.engine, table, JOB)
    assert not await triggers.installed(db.engine, table, JOB)
    assert await trigger_count(db, table) == 0
    await triggers.remove(db.engine, table, JOB)  # nothing left to remove: still fine
    if db.engine_name == "postgresql":
        rows = await db.q("SELECT count(*) FROM pg_proc WHERE proname = ?", triggers.trigger_names(table, JOB).function)
        assert rows[0][0] == 0
    await db.x(f"INSERT INTO {table} (id, name, deleted) VALUES (?, ?, ?)", 2, "Bob", 0)
    assert await app.label(2) is None
    await db.x(f"UPDATE {table} SET name = ? WHERE id = ?", "Ann", 1)
    assert await app.label(1) == "Ada#1"


async def test_several_targets_literals_functions(db: TestDb) -> None:
    """String literals naming columns and function names are not columns; each target keeps its own rule."""
    i = db.int_type()
    table = await db.create("multi", f"id {i} NOT NULL PRIMARY KEY, name VARCHAR(200), tag VARCHAR(255), "
                                      f"name_len {i}")
    if db.engine_name == "mysql":
        exprs = {"tag": "CONCAT(lower(name), ':name', \"'name'\")", "name_len": "char_length(`name`)"}
    else:
        exprs = {"tag": "lower(name) || ':name' || '''name'''", "name_len": 'length("name")'}
    if db.engine_name == "postgresql":
        db.functions.append(triggers.trigger_names(table, "multi").function)
    await triggers.install(db.engine, table, ["id"], exprs, None, False, "multi")
    await db.x(f"INSERT INTO {table} (id, name) VALUES (?, ?)", 1, "ABC")
    await db.x(f"INSERT INTO {table} (id, name, tag) VALUES (?, ?, ?)", 2, "Xy", "mine")
    got = await db.q(f"SELECT id, tag, name_len FROM {table} ORDER BY id")
    assert got == [(1, "abc:name'name'", 3), (2, "mine", 2)]
    await db.x(f"UPDATE {table} SET name = ? WHERE id IN (1, 2)", "Hello")
    got = await db.q(f"SELECT id, tag, name_len FROM {table} ORDER BY id")
    assert got == [(1, "hello:name'name'", 5), (2, "mine", 5)]
    # new code sets one target: the other still follows the sources
    await db.x(f"UPDATE {table} SET name = ?, name_len = ? WHERE id = ?", "Hi", 99, 1)
    got = await db.q(f"SELECT id, tag, name_len FROM {table} ORDER BY id")
    assert got == [(1, "hi:name'name'", 99), (2, "mine", 5)]


async def test_case_insensitive_collation_is_not_fooled(db: TestDb) -> None:
    """A hand-written value differing from the derived one only in case is still hand-written."""
    ci = {"mysql": " CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci", "sqlite": " COLLATE NOCASE",
          "postgresql": ""}[db.engine_name]
    i = db.int_type()
    table = await db.create("ci", f"id {i} NOT NULL PRIMARY KEY, email VARCHAR(200){ci}, domain VARCHAR(200){ci}")
    expr = {"mysql": "lower(substring_index(email, '@', -1))",
            "postgresql": "lower(split_part(email, '@', 2))",
            "sqlite": "lower(substr(email, instr(email, '@') + 1))"}[db.engine_name]
    if db.engine_name == "postgresql":
        db.functions.append(triggers.trigger_names(table, "dom").function)
    await triggers.install(db.engine, table, None, {"domain": expr}, None, False, "dom")
    await db.x(f"INSERT INTO {table} (id, email) VALUES (?, ?)", 1, "a@Example.COM")
    await db.x(f"INSERT INTO {table} (id, email, domain) VALUES (?, ?, ?)", 2, "b@Example.COM", "Example.COM")
    await db.x(f"UPDATE {table} SET email = ? WHERE id IN (1, 2)", "c@Example.org")
    got = await db.q(f"SELECT id, domain FROM {table} ORDER BY id")
    assert got == [(1, "example.org"), (2, "Example.COM")]
    # a case-only change of a source is a change: the derived value follows it
    await db.x(f"UPDATE {table} SET email = ? WHERE id = ?", "c@EXAMPLE.ORG", 1)
    await db.x(f"UPDATE {table} SET email = ? WHERE id = ?", "c@example.NET", 1)
    assert (await db.q(f"SELECT domain FROM {table} WHERE id = 1"))[0][0] == "example.net"



@pytest.mark.parametrize(("engine_name", "typ", "changed"), HIDDEN_CHANGES, indirect=["engine_name"])
async def test_a_difference_only_in_case_or_trailing_spaces_is_a_difference(db: TestDb, typ: str,
                                                                             changed: str) -> None:
    """Source and target of a type whose own comparison ignores case or trailing spaces: a source changed only
    so ('abc5' -> 'ABC5') is a change, which the derived target follows; a hand-written target differing from
    the derived value only so is hand-written, and stays when the sources change."""
    expr = "substr(email, 3)"   # the domain of x@domain (no search: nondeterministic collations have none)
    async with hiding_type(db, typ) as ddl:
        table = await db.create("hidden", f"id {db.int_type()} NOT NULL PRIMARY KEY, email {ddl}, domain {ddl}")
        if db.engine_name == "postgresql":
            db.functions.append(triggers.trigger_names(table, "dom").function)
        await triggers.install(db.engine, table, None, {"domain": expr}, None, False, "dom")
        await db.x(f"INSERT INTO {table} (id, email) VALUES (?, ?)", 1, "a@abc5")
        await db.x(f"INSERT INTO {table} (id, email, domain) VALUES (?, ?, ?)", 2, "b@abc5", changed)
        await db.x(f"UPDATE {table} SET email = ? WHERE id = ?", "a@" + changed, 1)
        assert await db.q(f"SELECT id, domain FROM {table} ORDER BY id") == [(1, changed), (2, changed)]
        await db.x(f"UPDATE {table} SET email = ? WHERE id IN (1, 2)", "c@xyz")
        assert await db.q(f"SELECT id, domain FROM {table} ORDER BY id") == [(1, "xyz"), (2, changed)]

async def test_schema_qualified_table(db: TestDb) -> None:
    table = await db.create_users()
    schema = {"postgresql": "public", "mysql": db.parsed.database, "sqlite": "main"}[db.engine_name]
    qualified = f"{schema}.{table}"
    if db.engine_name == "postgresql":
        db.functions.append(f"{schema}.{triggers.trigger_names(qualified, JOB).function}")
    await triggers.install(db.engine, qualified, None, {"label": CONCAT[db.engine_name]}, WHERE, False, JOB)
    assert await triggers.installed(db.engine, qualified, JOB)
    app = App(db, table, Model())
    await app.old_insert(1, "Ada")
    await app.update(1, name="Ida")
    assert await app.label(1) == "Ida#1"
    await triggers.remove(db.engine, qualified, JOB)
    assert await trigger_count(db, table) == 0


async def test_batch_and_triggers_together(db: TestDb) -> None:
    """Rows from before the install are the batch's; rows written after, the triggers'; the batch leaves both."""
    table = await db.create_users()
    before = [(i, NAMES[i % len(NAMES)], int(i % 7 == 0)) for i in range(1, 301)]
    await db.many(f"INSERT INTO {table} (id, name, deleted) VALUES (?, ?, ?)", before)
    if db.engine_name == "postgresql":
        db.functions.append(triggers.trigger_names(table, JOB).function)
    await triggers.install(db.engine, table, None, {"label": CONCAT[db.engine_name]}, WHERE, False, JOB)
    model = Model()
    for id_, name, deleted in before:
        model.rows[id_] = {"name": name, "deleted": deleted, "label": None}
    app = App(db, table, model)
    for id_ in range(301, 351):
        await app.old_insert(id_, f"late {id_}")
    await app.update(310, name="changed")

    cfg = db.config([{"name": JOB, "table": table, "where": WHERE, "batch_size": 40,
                      "set": {"label": {db.engine_name: CONCAT[db.engine_name]}}}])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed"
    for id_, name, deleted in before:
        if not deleted:
            model.rows[id_]["label"] = label_of(name, id_)
    assert await app.rows() == model.expected()
    assert state.rows_done == sum(1 for _, name, deleted in before if not deleted and name is not None)
    # after the batch, old code's source changes are followed on the rows the batch filled
    await app.update(1, name="after")
    assert await app.label(1) == "after#1"
