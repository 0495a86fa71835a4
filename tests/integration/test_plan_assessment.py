"""plan's assessment against real engines: the indexes its sweep, verify and where use (and the index it suggests,
gone once created), the replication log it estimates, SQLite's file permissions; and that plan stays read-only.
The privilege checks against a user lacking a grant are in tests/acceptance/test_grants.py (they need a user)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backfilld import daemon, state
from tests.acceptance.test_grants import User, needs, plan_as
from tests.dbutil import CONCAT, TestDb

ROWS = 2000
partial_indexes = pytest.mark.parametrize("engine_name", ["postgresql", "sqlite"])

# the keys plan --json had before the assessment: they stay as they were
OLD_KEYS = {"job", "engine", "table", "key", "targets", "where", "overwrite", "triggers", "estimated_rows",
            "batch_size", "workers", "batches_expected", "fingerprint", "locking", "sql", "explain", "warnings",
            "order", "after", "defined_in"}


async def plan(db: TestDb, table: str, **job: Any) -> dict[str, Any]:
    sections = {k: job.pop(k) for k in ("throttle", "replicas") if k in job}
    cfg = db.config([{"name": "j", "table": table, "set": {"label": CONCAT[db.engine_name]}, **job}], **sections)
    [report] = await daemon.plan(cfg)
    return report


async def catalog(db: TestDb) -> list[Any]:
    """What plan could have created: tables and indexes of the test's database."""
    if db.engine_name == "sqlite":
        return await db.q("SELECT type, name FROM sqlite_master ORDER BY name")
    if db.engine_name == "postgresql":
        return await db.q("SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                          "ORDER BY relname")
    return await db.q("SELECT TABLE_NAME, INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = "
                      "DATABASE() ORDER BY 1, 2")


async def test_plan_keeps_its_keys_adds_the_assessment_and_writes_nothing(db: TestDb) -> None:
    table = await db.users_with(ROWS)
    before = await catalog(db)
    report = await plan(db, table)
    assert OLD_KEYS <= set(report) and {"privileges", "indexes", "replication"} <= set(report)
    assert await catalog(db) == before   # no state table, no index: plan is read-only


@partial_indexes
async def test_the_sweep_check_scans_the_table_until_the_suggested_index_exists(db: TestDb) -> None:
    table = await db.users_with(ROWS)
    sweep = (await plan(db, table))["indexes"]["sweep"]
    assert sweep["served_by_index"] is False and sweep["rows_estimate"] == ROWS, sweep
    suggestion = sweep["suggestion"]
    [ddl] = suggestion["ddl"]
    assert suggestion["partial"] and f"ON {db.engine.dialect.table(table)} (\"id\") WHERE (\"label\" IS NULL)" in ddl
    # estimates, plausible for 2000 rows of a bigint key: tens of bytes an entry, a fraction of a second to build
    assert 8 * ROWS < suggestion["space_bytes_estimate"] < 100 * ROWS, suggestion
    assert 0 <= suggestion["build_s_estimate"] < 1, suggestion
    # built plainly here: CONCURRENTLY waits for every older transaction of the cluster, longer than the test
    # connection's lock_timeout when another session's is open
    await db.x(ddl.replace(" CONCURRENTLY", ""))
    sweep = (await plan(db, table))["indexes"]["sweep"]
    assert sweep["served_by_index"] is True and "suggestion" not in sweep, sweep


async def test_verify_reads_its_ranges_through_the_key_and_an_overwrite_job_gets_no_index(db: TestDb) -> None:
    table = await db.users_with(ROWS)
    report = await plan(db, table, overwrite=True)
    assert report["indexes"]["verify"]["uses_key_range"] is True, report["indexes"]["verify"]
    sweep = report["indexes"]["sweep"]
    if sweep["served_by_index"] is False:   # MySQL may read an overwrite job's check off the key's index
        assert sweep["suggestion"] is None and "no index serves it" in sweep["note"], sweep


async def test_a_where_on_an_unindexed_column_warns(db: TestDb) -> None:
    table = await db.users_with(ROWS)
    report = await plan(db, table, where="deleted = 0")
    assert report["indexes"]["where"]["served_by_index"] is False
    [warning] = [w for w in report["warnings"] if "where" in w]
    assert warning.startswith("the job's where (deleted = 0) cannot use an index"), warning


@partial_indexes
async def test_a_where_an_index_serves_does_not_warn(db: TestDb) -> None:
    table = await db.users_with(ROWS)
    await db.x(f"CREATE INDEX {db.name('by_deleted')} ON {table} (deleted)")
    report = await plan(db, table, where="deleted = 0")
    assert report["indexes"]["where"]["served_by_index"] is True, report["indexes"]["where"]
    assert not [w for w in report["warnings"] if "where" in w], report["warnings"]


async def test_the_replication_estimate_is_positive_and_plausible(db: TestDb) -> None:
    table = await db.users_with(ROWS)
    rep = (await plan(db, table, throttle={"max_rows_per_s": 1000}))["replication"]
    assert rep["estimate"] is True and rep["rows"] == ROWS
    # a row of a bigint, two short texts and a bigint: tens of bytes, well under a kilobyte
    assert 10 <= rep["avg_row_bytes"] < 1000, rep
    assert 10 * ROWS <= rep["log_bytes_estimate"] < 10_000 * ROWS, rep
    assert rep["pace"]["time_s_estimate"] == 2.0 and rep["pace"]["log_bytes_per_s_estimate"] > 0, rep
    settings = rep["settings"]
    expected = {"postgresql": {"wal_level", "full_page_writes"}, "sqlite": {"journal_mode", "page_size"},
                "mysql": {"log_bin", "binlog_format", "binlog_row_image"}}[db.engine_name]
    assert expected <= set(settings), settings
    if db.engine_name == "mysql":
        assert settings["binlog_format"] in ("ROW", "MIXED", "STATEMENT") and \
            settings["binlog_row_image"] in ("FULL", "MINIMAL", "NOBLOB"), settings


async def test_without_a_rate_limit_the_time_is_bounded_by_the_throttle(db: TestDb) -> None:
    table = await db.users_with(ROWS)
    pace = (await plan(db, table))["replication"]["pace"]
    assert pace["max_rows_per_s"] is None and pace["bounded_by"].startswith("no max_rows_per_s: the pace is bounded by")
    assert ("replica lag" in pace["bounded_by"]) is db.engine.capabilities.replicas


@pytest.mark.parametrize("engine_name", ["sqlite"])
async def test_sqlite_has_no_grants_and_plan_says_whether_the_file_and_folder_are_writable(db: TestDb) -> None:
    table = await db.users_with(ROWS)
    priv = (await plan(db, table))["privileges"]
    assert priv["checked"] is False and priv["detail"].startswith("SQLite has no users or grants")
    assert priv["access"]["file_writable"] is True and priv["access"]["folder_writable"] is True, priv


@pytest.mark.parametrize("engine_name", ["mysql"])
async def test_grants_through_a_role_are_not_shown_and_plan_says_so_rather_than_fail(db: TestDb,
                                                                                     tmp_path: Path) -> None:
    """information_schema lists a MariaDB user's own grants, not those of the role in force: plan marks what it
    cannot see as unchecked, naming the role, and reports nothing lacking it cannot prove."""
    table = await db.users_with(ROWS)
    role = db.name("bfrole")
    user = User(db)
    await user.create()
    try:
        await db.x(f"CREATE ROLE {role}")
        await db.engine.execute(state.ddl(db.engine.dialect, db.state_table))
        db.created.append(db.state_table)
        for need in await needs(db, table):
            if need.level == "required":
                await db.engine.execute(await db.engine.grant_sql(need, role))  # type: ignore[attr-defined]
        await db.x(f"GRANT {role} TO {user.sql}")
        await db.x(f"SET DEFAULT ROLE {role} FOR {user.sql}")
        report = await plan_as(db, user, table, tmp_path)
        priv = report["privileges"]
        assert priv["checked"] and priv["lacking"] == [], priv
        unseen = [n for n in priv["needs"] if n["level"] == "required"]
        assert unseen and all(n["held"] is None and f"the role {role} in force may grant it" in n["detail"]
                              for n in unseen), unseen
    finally:
        for t in reversed(db.created):
            await db.x(f"DROP TABLE IF EXISTS {t}")
        db.created.clear()
        await user.drop()
        await db.x(f"DROP ROLE IF EXISTS {role}")


@pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
@pytest.mark.parametrize("lag_probe", ["heartbeat", "native"])
async def test_with_replicas_plan_lists_their_grants_unchecked_and_the_heartbeat_as_required(db: TestDb,
                                                                                            lag_probe: str) -> None:
    table = await db.users_with(10)
    report = await plan(db, table, throttle={"lag_probe": lag_probe},
                        replicas=[{"url": db.url, "name": "r1"}])
    needs = report["privileges"]["needs"]
    on_replicas = [n for n in needs if n["where"] == "replicas"]
    if lag_probe == "native" and db.engine_name == "postgresql":
        assert on_replicas == []   # a standby's own lag figures need no grant on PostgreSQL
    else:
        [n] = on_replicas
        assert n["held"] is None and n["detail"].startswith("not checked: plan connects to the primary only")
        assert n["grant"].startswith("GRANT "), n
        assert n["purpose"] == "replica r1's lag"
    heartbeat = [n for n in needs if n["purpose"].startswith("the heartbeat table")]
    if lag_probe == "heartbeat" or db.engine_name == "postgresql":   # PostgreSQL writes it for its standbys too
        [hb] = heartbeat
        assert hb["level"] == "required" and hb["held"] is True, hb
    else:
        assert heartbeat == []


async def test_a_transform_job_with_on_error_skip_gets_its_assessment_too(db: TestDb) -> None:
    table = await db.create("t_src", f"id {db.int_type()} NOT NULL PRIMARY KEY, src VARCHAR(20), dst VARCHAR(40)")
    await db.many(f"INSERT INTO {table} (id, src) VALUES (?, ?)", [(i, f"s{i}") for i in range(1, 101)])
    cfg = db.config([{"name": "tr", "table": table, "transform": "tests.fixtures.transforms:as_text",
                      "sources": ["src"], "targets": ["dst"], "on_error": "skip"}])
    [report] = await daemon.plan(cfg)
    ix = report["indexes"]
    assert ix["sweep"]["sql"] is None and "walks the key range" in ix["sweep"]["note"]
    assert ix["verify"]["uses_key_range"] is True, ix["verify"]
    assert report["replication"]["log_bytes_estimate"] > 0
    if db.engine.capabilities.file_database:
        return
    needs = report["privileges"]["needs"]
    reads = [n["columns"] for n in needs if n["privileges"] == ["SELECT"] and n["name"] == table]
    assert reads == [["id", "src", "dst"]], needs
    assert any(n["purpose"] == "the skipped rows' table (to create it)" for n in needs), needs
    assert not any(n["purpose"] == "sync triggers" for n in needs)   # none for a transform job
