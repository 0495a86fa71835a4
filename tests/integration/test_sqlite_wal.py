"""SQLite in WAL mode: the job's connection leaves WAL checkpoints to a second connection (fast_commit)."""

from __future__ import annotations

import pytest
import structlog

from backfilld import daemon
from tests.dbutil import CONCAT, GateAt, TestDb


@pytest.mark.parametrize("engine_name", ["sqlite"])
@pytest.mark.parametrize("fast_commit", [True, False])
async def test_the_wal_is_checkpointed_after_the_job(db: TestDb, fast_commit: bool) -> None:
    table = await db.create_users()
    await db.bulk(table, ("id", "name", "deleted"), [(i, f"n{i} {'x' * 80}", 0) for i in range(1, 30_001)])
    await db.x("PRAGMA wal_checkpoint(TRUNCATE)")
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {"sqlite": CONCAT["sqlite"]}}}])
    cfg = cfg.model_copy(update={"database": cfg.database.model_copy(update={"fast_commit": fast_commit})})
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 30_000
    # what the job wrote went through the WAL (far more than the 1000 pages of one checkpoint) and has been
    # copied into the database file: nothing is left for a checkpoint to do (busy 0, frames == checkpointed)
    [(busy, frames, checkpointed)] = await db.q("PRAGMA wal_checkpoint(PASSIVE)")
    assert busy == 0 and frames == checkpointed
    if fast_commit:   # by the background connection: the job's own connection does not checkpoint
        assert frames > 0
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT['sqlite']}") == [(30_000,)]


@pytest.mark.parametrize("engine_name", ["sqlite"])
async def test_a_fill_pass_no_other_connection_wrote_during_ends_the_job(db: TestDb) -> None:
    """SQLite tells (PRAGMA data_version) whether another connection committed since the fill pass began:
    when none did, no row can need a value any more and the sweep pass is skipped. A write by another
    connection, even to another table, means the sweep runs."""
    table = await db.users_with(3000)
    other = await db.create("other", "id INTEGER PRIMARY KEY")
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {"sqlite": CONCAT["sqlite"]}}}],
                    throttle={"min_batch": 500, "max_batch": 500})
    with structlog.testing.capture_logs() as logs:
        [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 3000
    assert state.pass_no == 2   # one pass: the fill
    assert [e["pass_no"] for e in logs if e["event"] == "sweep_skipped"] == [1]
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT['sqlite']}") == [(3000,)]

    await db.x(f"UPDATE {table} SET label = NULL")
    writer = TestDb(db.url, db.suffix)
    await writer.open()

    async def unrelated_write() -> None:
        await writer.x(f"INSERT INTO {other} (id) VALUES (1)")

    try:
        with structlog.testing.capture_logs() as logs:
            [state] = await daemon.run(cfg, daemon.RunOptions(restart=True), gate=GateAt({3: unrelated_write}))
    finally:
        await writer.engine.close()
    assert state.status == "completed" and state.rows_done == 3000
    assert not [e for e in logs if e["event"] == "sweep_skipped"]
    assert state.pass_no == 3   # the fill pass and a sweep that found nothing
