"""Issue 12's six reproductions, each on the engines it concerns: binary and BIT keys on MySQL, ON UPDATE
columns, generated targets, SQLite BLOB targets, and column names whose case differs from the catalog's."""

from __future__ import annotations

import pytest

from backfilld import daemon
from backfilld.errors import SchemaError
from backfilld.verify import VerifyResult
from tests.dbutil import TestDb

mysql_only = pytest.mark.parametrize("engine_name", ["mysql"], indirect=True)
sqlite_only = pytest.mark.parametrize("engine_name", ["sqlite"], indirect=True)
folding = pytest.mark.parametrize("engine_name", ["sqlite", "mysql"], indirect=True)
pytestmark = pytest.mark.timeout(120)


async def verified(db: TestDb, cfg) -> VerifyResult:  # noqa: ANN001
    [result] = await daemon.verify(cfg, None, fix=False)
    return result


@mysql_only
async def test_varbinary_key_with_zero_and_high_bytes(db: TestDb) -> None:
    table = await db.create("t_vb", "id VARBINARY(16) NOT NULL PRIMARY KEY, v INT NOT NULL, v2 INT NULL")
    keys = [b"\x00", b"A", b"\xff\x00", b"\xff", b"", b"\x00\x00", b"a b"]
    await db.many(f"INSERT INTO {table} (id, v) VALUES (?, ?)", [(k, i) for i, k in enumerate(keys)])
    cfg = db.config([{"name": "vb", "table": table, "set": {"v2": "v * 2"}, "batch_size": 1}])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == len(keys)
    assert sorted(await db.q(f"SELECT id, v2 FROM {table}")) == sorted((k, 2 * i) for i, k in enumerate(keys))
    result = await verified(db, cfg)
    assert result.clean and result.rows_checked == len(keys)


@mysql_only
@pytest.mark.parametrize("bits", [1, 8, 64])
async def test_bit_key(db: TestDb, bits: int) -> None:
    values = sorted({0, 1, 2 ** bits - 1, 2 ** (bits - 1), 5 % 2 ** bits})
    table = await db.create("t_bit", f"id BIT({bits}) NOT NULL PRIMARY KEY, v INT NOT NULL, v2 INT NULL")
    await db.many(f"INSERT INTO {table} (id, v) VALUES (?, ?)", [(k, k % 1000) for k in values])
    cfg = db.config([{"name": "bits", "table": table, "set": {"v2": "v + 1"}, "batch_size": 1}])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == len(values)
    assert sorted(await db.q(f"SELECT id + 0, v2 FROM {table}")) == [(k, k % 1000 + 1) for k in values]
    result = await verified(db, cfg)
    assert result.clean and result.rows_checked == len(values)


@mysql_only
async def test_enum_key_sorts_by_member_index_not_alphabetically(db: TestDb) -> None:
    members = ["m", "b", "z", "a"]
    table = await db.create("t_enum", "id ENUM('m','b','z','a') NOT NULL PRIMARY KEY, v VARCHAR(8), v2 VARCHAR(16)")
    await db.many(f"INSERT INTO {table} (id, v) VALUES (?, ?)", [(m, m * 2) for m in members])
    cfg = db.config([{"name": "enum", "table": table, "set": {"v2": "CONCAT(id, '-', v)"}, "batch_size": 1}])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 4
    assert sorted(await db.q(f"SELECT id, v2 FROM {table}")) == sorted((m, f"{m}-{m * 2}") for m in members)
    assert (await verified(db, cfg)).clean


@mysql_only
async def test_on_update_columns_keep_their_values(db: TestDb) -> None:
    old = "2001-02-03 04:05:06"
    table = await db.create("t_onupd", "id INT NOT NULL PRIMARY KEY, name VARCHAR(20) NOT NULL, low VARCHAR(20), "
                                       "low2 VARCHAR(20), "
                                       "ts TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, "
                                       "dt DATETIME(6) NULL ON UPDATE CURRENT_TIMESTAMP(6)")
    await db.many(f"INSERT INTO {table} (id, name, ts, dt) VALUES (?, ?, ?, ?)",
                  [(i, f"Name{i}", old, old) for i in range(1, 41)])
    times = f"SELECT id, CAST(ts AS CHAR), CAST(dt AS CHAR) FROM {table} ORDER BY id"
    before = await db.q(times)
    # a fill of one target (single evaluation), of two targets (guarded), then verify --fix and an overwrite
    cfg = db.config([{"name": "one", "table": table, "set": {"low": "lower(name)"}, "batch_size": 7},
                     {"name": "two", "table": table, "set": {"low2": "upper(name)", "low": "lower(name)"},
                      "batch_size": 5}])
    await daemon.run(cfg, daemon.RunOptions())
    assert await db.q(f"SELECT count(*) FROM {table} WHERE low = lower(name) AND low2 = upper(name)") == [(40,)]
    await db.x(f"UPDATE {table} SET low = 'wrong', ts = ?, dt = ? WHERE id IN (3, 4)", old, old)
    [fixed] = await daemon.verify(cfg, ["one"], fix=True)
    assert fixed.fixed == 2
    over = db.config([{"name": "over", "table": table, "set": {"low2": "lower(name)"}, "overwrite": True}])
    await daemon.run(over, daemon.RunOptions())
    assert await db.q(f"SELECT count(*) FROM {table} WHERE low2 = lower(name)") == [(40,)]
    assert await db.q(times) == before, "an ON UPDATE column changed"
    assert before[0][1:] == (old, old + ".000000")


async def test_generated_target_is_refused_before_anything_runs(db: TestDb) -> None:
    i = db.int_type()
    kinds = ["stored"] if db.engine_name == "postgresql" else ["virtual", "stored"]   # PostgreSQL 15: stored only
    for kind in kinds:
        if db.engine_name == "postgresql":
            gen = "g INTEGER GENERATED ALWAYS AS (v * 2) STORED"
        elif db.engine_name == "mysql":
            gen = f"g INT AS (v * 2) {kind.upper()}"
        else:
            gen = f"g INTEGER GENERATED ALWAYS AS (v * 2) {kind.upper()}"
        table = await db.create(f"t_gen_{kind}", f"id {i} NOT NULL PRIMARY KEY, v INTEGER NOT NULL, {gen}")
        await db.many(f"INSERT INTO {table} (id, v) VALUES (?, ?)", [(1, 1), (2, 2)])
        cfg = db.config([{"name": "gen", "table": table, "set": {"g": "v * 3"}}])
        with pytest.raises(SchemaError, match="generated"):
            await daemon.run(cfg, daemon.RunOptions())
        with pytest.raises(SchemaError, match="generated"):
            await daemon.plan(cfg)
        assert await db.q(f"SELECT id, g FROM {table} ORDER BY id") == [(1, 2), (2, 4)]


@sqlite_only
async def test_sqlite_blob_targets_verify_and_stay_put(db: TestDb) -> None:
    table = await db.create("page", "id INTEGER NOT NULL PRIMARY KEY, page_title BLOB NOT NULL, "
                                    "page_title_lower BLOB, title_copy TEXT, title_len INTEGER")
    titles = [b"Main_Page", b"\xc3\x84rger", b"Zero\x00Byte", b"\xff\xfe", b"", b"MiXeD"]
    await db.many(f"INSERT INTO {table} (id, page_title) VALUES (?, ?)", list(enumerate(titles, 1)))
    cfg = db.config([{"name": "low", "table": table, "batch_size": 2,
                      "set": {"page_title_lower": "lower(page_title)", "title_copy": "page_title",
                              "title_len": "length(page_title)"}}])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed"
    result = await verified(db, cfg)
    assert result.clean and result.rows_checked == len(titles), (result.sample_wrong, result.sample_missing)
    [fix] = await daemon.verify(cfg, None, fix=True)
    assert fix.clean and fix.fixed == 0
    # an overwrite job over a complete table writes nothing: its guard sees every value as already right
    over = db.config([{"name": "over", "table": table, "overwrite": True,
                       "set": {"page_title_lower": "lower(page_title)"}}])
    audit = await db.audit_updates(table)
    [state] = await daemon.run(over, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 0 and state.pass_no == 2   # one pass, then done
    assert await db.q(f"SELECT count(*) FROM {audit}") == [(0,)]


@folding
async def test_column_names_in_another_case_name_the_same_columns(db: TestDb) -> None:
    table = await db.create("t_case", "id INTEGER NOT NULL PRIMARY KEY, Name VARCHAR(20) NOT NULL, "
                                      "code VARCHAR(20) NOT NULL, label VARCHAR(40)")
    await db.x(f"CREATE UNIQUE INDEX {db.name('t_case_code')} ON {table} (code)")
    await db.many(f"INSERT INTO {table} (id, Name, code) VALUES (?, ?, ?)", [(i, f"N{i}", f"c{i:03}")
                                                                              for i in range(1, 21)])
    cfg = db.config([{"name": "upper", "table": table, "key": ["CODE"], "set": {"LABEL": "lower(NAME)"},
                      "batch_size": 3}])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 20
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = lower(Name)") == [(20,)]
    assert (await verified(db, cfg)).clean
    same = db.config([{"name": "upper", "table": table, "key": ["code"], "set": {"label": "lower(NAME)"}}])
    [again] = await daemon.run(same, daemon.RunOptions())   # the same spec, spelled as the catalog spells it
    assert again.status == "completed"
    twice = db.config([{"name": "twice", "table": table, "set": {"label": "'a'", "LABEL": "'b'"}}])
    with pytest.raises(SchemaError, match="twice"):
        await daemon.run(twice, daemon.RunOptions())


@pytest.mark.parametrize("engine_name", ["postgresql"], indirect=True)
async def test_postgresql_column_names_are_case_sensitive(db: TestDb) -> None:
    table = await db.create("t_pgcase", 'id INTEGER NOT NULL PRIMARY KEY, name TEXT, label TEXT')
    await db.x(f"INSERT INTO {table} (id, name) VALUES (1, 'a')")
    cfg = db.config([{"name": "pgcase", "table": table, "key": ["ID"], "set": {"label": "name"}}])
    with pytest.raises(SchemaError, match="'ID' does not exist"):
        await daemon.run(cfg, daemon.RunOptions())


@mysql_only
async def test_float_key_is_refused_and_a_stuck_walk_fails(db: TestDb) -> None:
    table = await db.create("t_flt", "id FLOAT NOT NULL PRIMARY KEY, v INT NOT NULL, v2 INT")
    await db.many(f"INSERT INTO {table} (id, v) VALUES (?, ?)", [(0.1, 1), (0.2, 2), (0.3, 3)])
    cfg = db.config([{"name": "flt", "table": table, "set": {"v2": "v"}}])
    with pytest.raises(SchemaError, match="FLOAT"):
        await daemon.run(cfg, daemon.RunOptions())
    assert await db.q(f"SELECT count(*) FROM {table} WHERE v2 IS NOT NULL") == [(0,)]


@mysql_only
async def test_double_key_walks_exactly(db: TestDb) -> None:
    # unlike FLOAT, the server sends a DOUBLE with every digit it needs: each key binds back as itself
    table = await db.create("t_dbl", "id DOUBLE NOT NULL PRIMARY KEY, v INT NOT NULL, v2 INT")
    keys = [0.1, 0.2, 1e-300, 1.7976931348623157e308, -2.5, 1 / 3]
    await db.many(f"INSERT INTO {table} (id, v) VALUES (?, ?)", [(k, i) for i, k in enumerate(keys)])
    cfg = db.config([{"name": "dbl", "table": table, "set": {"v2": "v"}, "batch_size": 1}])
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == len(keys)
    assert (await verified(db, cfg)).clean



async def test_plan_names_the_update_triggers_a_job_fires(db: TestDb) -> None:
    table = await db.users_with(5)
    await db.audit_updates(table)
    cfg = db.config([{"name": "trig", "table": table, "set": {"label": "name"}}])
    [report] = await daemon.plan(cfg)
    [warning] = [w for w in report["warnings"] if "trigger" in w]
    assert db.name("audit_trg") in warning
    # the job's own sync triggers are not among them
    await daemon.triggers(cfg, "trig", "install")
    [report] = await daemon.plan(cfg)
    [warning] = [w for w in report["warnings"] if "trigger" in w]
    assert f"writes: {db.name('audit_trg')}; whatever" in warning, warning
    await daemon.triggers(cfg, "trig", "remove")


@mysql_only
async def test_bit_targets_and_sources_fix_and_transform(db: TestDb) -> None:
    table = await db.create("t_bits", "id INT NOT NULL PRIMARY KEY, v INT NOT NULL, b BIT(8), bt BIT(8), n INT")
    await db.many(f"INSERT INTO {table} (id, v, b) VALUES (?, ?, ?)", [(i, i * 7 % 256, i % 256) for i in range(1, 31)])
    cfg = db.config([{"name": "bt", "table": table, "set": {"bt": "v"}, "batch_size": 7},
                     {"name": "n", "table": table, "transform": "tests.fixtures.transforms:bits_to_int",
                      "sources": ["b"], "targets": ["n"], "batch_size": 7}])
    await daemon.run(cfg, daemon.RunOptions())
    assert await db.q(f"SELECT count(*) FROM {table} WHERE bt + 0 = v AND n = b + 0") == [(30,)]
    await db.x(f"UPDATE {table} SET bt = 1, n = -1 WHERE id IN (4, 5)")
    found = await daemon.verify(cfg, None, fix=True)
    assert [(r.wrong, r.fixed) for r in found] == [(2, 2), (2, 2)]
    assert all(r.clean for r in await daemon.verify(cfg, None, fix=False))


@pytest.mark.parametrize("engine_name", ["postgresql"], indirect=True)
async def test_citext_target_is_compared_exactly(db: TestDb) -> None:
    await db.x("CREATE EXTENSION IF NOT EXISTS citext")
    table = await db.create("t_citext", "id INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, low citext")
    await db.many(f"INSERT INTO {table} (id, name) VALUES (?, ?)", [(i, f"Name{i}") for i in range(1, 11)])
    cfg = db.config([{"name": "low", "table": table, "set": {"low": "lower(name)"}}])
    await daemon.run(cfg, daemon.RunOptions())
    await db.x(f"UPDATE {table} SET low = 'NAME3' WHERE id = 3")   # citext calls it equal to 'name3'
    result = await verified(db, cfg)
    assert (result.wrong, result.sample_wrong) == (1, [[3]])
