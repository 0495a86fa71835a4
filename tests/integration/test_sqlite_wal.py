"""SQLite in WAL mode: the job's connection leaves WAL checkpoints to a second connection (fast_commit)."""

from __future__ import annotations

import pytest

from backfilld import daemon
from tests.dbutil import CONCAT, TestDb


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
