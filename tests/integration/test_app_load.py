"""A backfill beside a live application (issue 13): sysbench oltp_read_write runs on the primary of a
replicated pair while backfilld, with its default settings and the replica in [[replicas]], fills a new
column of the table sysbench works on.

What a user would check, and the test asserts:
- the application had no deadlock or lock wait timeout with a backfilld statement in it (the server's log
  names both sides of each: tests/harness/locklog.py), and sysbench itself failed no transaction it does not
  retry;
- backfilld logged no retry for a lock timeout or a deadlock, and the job completed;
- after the application stopped, the documented procedure leaves every row right, on the primary and the
  replica: without sync triggers the job's last sweep (it completes only once sysbench stops inserting)
  leaves no row unfilled, `verify --fix` rewrites the rows whose source sysbench changed after the fill,
  and `verify` is then clean; with sync triggers (installed before the application starts) `verify` is
  clean at once.

Nothing here depends on how fast anything runs: sysbench runs for APP_S seconds, the job runs to its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from backfilld import daemon
from backfilld.config import Config, from_dict
from tests.harness import locklog
from tests.harness import sysbench as sb
from tests.harness.replication import MariaDBPair, PostgresPair, mariadb_pair_fixture, postgres_pair_fixture

pytestmark = pytest.mark.replication

ROWS = 30_000
THREADS = 4
APP_S = 12            # sysbench's --time; the job starts once its first second is reported
JOB = "digest"
TARGET = "c_digest"
STATE_TABLE = "backfilld_state"
EXPR = "md5(c)"       # the same on PostgreSQL and MariaDB
# how long the job may take after the application stopped before the test gives up (a hang, not a figure)
JOB_DEADLINE_S = 300
# retries that mean backfilld collided with the application
COLLISION_RETRIES = ("lock_timeout", "deadlock")


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[PostgresPair]:
    sb.require_sysbench()
    yield from postgres_pair_fixture(extra_conf=locklog.PG_CONF)


@pytest.fixture(scope="module")
def maria_pair() -> Iterator[MariaDBPair]:
    sb.require_sysbench()
    yield from mariadb_pair_fixture(extra_args=locklog.MARIADB_ARGS)


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgresql),
                        pytest.param("mysql", marks=pytest.mark.mysql)])
def pair(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("pg_pair" if request.param == "postgresql" else "maria_pair")


def config(pair: Any) -> Config:
    """Defaults throughout; only the replica named, and the HTTP endpoints off (tests share the machine)."""
    return from_dict({
        "database": {"url": pair.primary_url},
        "replicas": [{"url": pair.replica_url, "name": "replica"}],
        "metrics": {"listen": ""},
        "jobs": [{"name": JOB, "table": sb.TABLE, "set": {TARGET: EXPR}}],
    })


def setup_table(pair: Any, target: sb.SysbenchTarget) -> None:
    """sbtest1 with ROWS rows and the new nullable column; no state left from an earlier test."""
    pair.execute(f"DROP TABLE IF EXISTS {STATE_TABLE}")
    sb.prepare(target, ROWS)
    pair.execute(f"ALTER TABLE {sb.TABLE} ADD COLUMN {TARGET} VARCHAR(32) NULL")
    pair.wait_caught_up(120)


def wrong_rows(pair: Any, on: str) -> int:
    null_safe = f"{TARGET} IS DISTINCT FROM {EXPR}" if pair.kind == "pg" else f"NOT ({TARGET} <=> {EXPR})"
    return int(pair.scalar(f"SELECT count(*) FROM {sb.TABLE} WHERE {null_safe}", on=on) or 0)


@pytest.mark.parametrize("triggers", [False, True], ids=["sweep_and_verify", "sync_triggers"])
async def test_backfill_beside_sysbench(pair: Any, triggers: bool) -> None:
    target = sb.SysbenchTarget.from_url(pair.primary_url)
    await asyncio.to_thread(setup_table, pair, target)
    cfg = config(pair)
    if triggers:
        await daemon.triggers(cfg, JOB, "install")
    log = locklog.ServerLog.of_pair(pair, markers=[TARGET, STATE_TABLE])
    mark = log.mark()
    batches_under_load = 0
    try:
        with locklog.LockWatch.of_pair(pair) as watch, \
                sb.start(target, threads=THREADS, time_s=APP_S, rows=ROWS) as app:
            await asyncio.to_thread(app.wait_started)

            def on_batch(_job: Any, _r: Any) -> None:
                nonlocal batches_under_load
                batches_under_load += app.running()

            with structlog.testing.capture_logs() as events:
                job = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(restart=True), on_batch=on_batch))
                # sysbench runs its APP_S seconds whatever the job does; the job then finishes its sweep
                result = await asyncio.to_thread(app.wait)
                [state] = await asyncio.wait_for(job, JOB_DEADLINE_S)
        report = log.report(mark, watch)
        print(f"{pair.kind} triggers={triggers}: {report.summary()}, sysbench ignored {result.ignored_errors} "
              f"errors, other server errors {report.other_errors}, backfilld no-wait UPDATEs that gave up at once "
              f"{report.gave_up_at_once}")

        # the application: no collision with backfilld, no error sysbench does not retry
        collided = report.of(backfilld=True)
        assert not collided, (f"{len(collided)} of the application's deadlocks/lock timeouts involve backfilld "
                              f"(sysbench ignored {result.ignored_errors} errors):\n"
                              + "\n".join(c.describe() for c in collided))
        assert result.transactions > 0 and not result.fatal_errors
        # backfilld: the job completed, under load, and never retried a collision
        assert state.status == "completed", state.error
        assert batches_under_load > 0, "no batch ran while sysbench did: the test proved nothing"
        retries = [e for e in events if e["event"] == "batch_retry" and e.get("kind") in COLLISION_RETRIES]
        assert not retries, f"backfilld retried {len(retries)} batches after collisions: {retries[:5]}"

        # the documented procedure, after the application stopped: without triggers, the job's sweep once more. The
        # job may complete before sysbench's last inserts commit (a sysbench transaction that waited for a batch's
        # row commits its DELETE + INSERT after the sweep that found nothing left), and a completed job does not
        # look again; `run --restart` is the sweep a user runs once the old application code is gone
        if not triggers:
            [again] = await daemon.run(cfg, daemon.RunOptions(restart=True))
            assert again.status == "completed", again.error
        [first] = await daemon.verify(cfg, None, fix=False)
        if triggers:
            assert first.clean, first.as_dict()
        else:
            # the last sweep ran after sysbench's last insert: nothing is left unfilled; values whose source
            # (c) sysbench changed after the fill are wrong until verify --fix (no sync triggers to follow them)
            assert first.complete and first.missing == 0, first.as_dict()
            [fixed] = await daemon.verify(cfg, None, fix=True)
            assert fixed.fixed == fixed.missing + fixed.wrong, fixed.as_dict()
            [final] = await daemon.verify(cfg, None, fix=False)
            assert final.clean, final.as_dict()
        assert await asyncio.to_thread(wrong_rows, pair, "primary") == 0
        await asyncio.to_thread(pair.wait_caught_up, 120)
        assert await asyncio.to_thread(wrong_rows, pair, "replica") == 0
    finally:
        if triggers:
            await daemon.triggers(cfg, JOB, "remove")
        await asyncio.to_thread(sb.cleanup, target)
