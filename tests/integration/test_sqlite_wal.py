"""SQLite in WAL mode: the job's connection leaves WAL checkpoints to a second connection (fast_commit)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from backfilld import daemon
from backfilld.errors import JobFailed, SchemaError
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
@pytest.mark.parametrize("fault", ["replaced", "deleted"])
async def test_a_database_file_replaced_or_deleted_during_the_run_fails_the_job(db: TestDb, fault: str) -> None:
    """The file the job opened is replaced (a restore over it) or unlinked mid-run: the next commit sees it is not
    the file any more and the job fails saying so, instead of "completing" into the unlinked file (exit 0)."""
    table = await db.users_with(2000)
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {"sqlite": CONCAT["sqlite"]}}}],
                    throttle={"min_batch": 100, "max_batch": 100})
    path = Path(db.parsed.database)
    copy = path.with_name(path.name + ".copy")

    async def swap() -> None:
        await db.x("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copyfile(path, copy)
        if fault == "replaced":
            os.replace(copy, path)
        else:
            for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                p.unlink(missing_ok=True)

    with pytest.raises(JobFailed) as failed:
        await daemon.run(cfg, daemon.RunOptions(), gate=GateAt({3: swap}))
    assert f"SQLite database file {str(path)!r} was {fault} during the run" in str(failed.value)
    if fault == "deleted":
        os.replace(copy, path)   # for the fixture's cleanup


@pytest.mark.parametrize("engine_name", ["sqlite"])
async def test_a_primary_key_declared_without_not_null_is_a_key_while_no_row_has_a_null_in_it(db: TestDb) -> None:
    """`id BIGINT PRIMARY KEY` (nullable in SQLite, and common): accepted while no row has a NULL id; refused
    with a clear message when some row has one (keyset paging would skip it); and a NULL id inserted during the
    run fails the job at the pass's end instead of completing without that row."""
    table = await db.create("nk", "id BIGINT PRIMARY KEY, name TEXT, deleted INTEGER, label TEXT")
    await db.many(f"INSERT INTO {table} (id, name, deleted) VALUES (?, ?, 0)", [(i, f"n{i}") for i in range(1, 501)])
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {"sqlite": CONCAT["sqlite"]}}}],
                    throttle={"min_batch": 50, "max_batch": 50})
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 500

    async def null_key_row() -> None:
        await db.x(f"INSERT INTO {table} (id, name, deleted) VALUES (NULL, 'late', 0)")

    with pytest.raises(JobFailed, match="some rows have a NULL key, which keyset paging would skip"):
        await daemon.run(cfg, daemon.RunOptions(restart=True), gate=GateAt({3: null_key_row}))
    with pytest.raises(SchemaError, match="primary key column 'id' .* declared without NOT NULL and some rows "
                                          "have a NULL key"):
        await daemon.run(cfg, daemon.RunOptions(restart=True))


@pytest.mark.parametrize("engine_name", ["sqlite"])
async def test_the_wal_starts_over_during_the_run_instead_of_growing_as_large_as_the_table(
        db: TestDb, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the checkpoints in the background the next batch always began before the last one's frames were
    copied, so the WAL never started over: it grew to the size of everything the job wrote (the table, and
    more). Once it holds WAL_RESTART_FRAMES, a batch waits for the checkpoint and the WAL starts over: the file
    (whose size is the most it ever held) stays near that bound plus a few batches (a start-over is put off by
    a reader still reading from the WAL, such as the next range's lookup), far below what the job wrote."""
    from backfilld.engines.sqlite.engine import SQLiteEngine

    monkeypatch.setattr(SQLiteEngine, "WAL_RESTART_FRAMES", 100)
    table = await db.create_users()
    await db.bulk(table, ("id", "name", "deleted"), [(i, f"n{i} {'x' * 200}", 0) for i in range(1, 40_001)])
    await db.x("PRAGMA wal_checkpoint(TRUNCATE)")
    [(page,)] = await db.q("PRAGMA page_size")
    [(pages,)] = await db.q("PRAGMA page_count")
    cfg = db.config([{"name": "j", "table": table, "set": {"label": {"sqlite": CONCAT["sqlite"]}}}],
                    throttle={"min_batch": 1000, "max_batch": 1000})
    [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and state.rows_done == 40_000
    wal_pages = os.path.getsize(f"{db.parsed.database}-wal") // (page + 24)
    batch_pages = pages // 40 + 1   # a batch of 1000 of the 40,000 rows rewrites about a fortieth of the pages
    assert wal_pages <= 100 + 10 * batch_pages, (wal_pages, pages)
    assert wal_pages < pages // 2   # before: at least every page the job rewrote (the whole table)
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label = {CONCAT['sqlite']}") == [(40_000,)]
