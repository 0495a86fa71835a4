"""Self-test of tests/harness/replication.py: real primary/replica pairs replicate, lag on demand, and go away."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.harness.replication import (
    MariaDBPair,
    PostgresPair,
    mariadb_pair_fixture,
    postgres_pair_fixture,
)

pytestmark = pytest.mark.replication


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[PostgresPair]:
    yield from postgres_pair_fixture()


@pytest.fixture(scope="module")
def maria_pair() -> Iterator[MariaDBPair]:
    yield from mariadb_pair_fixture()


def _pg_count(pair: PostgresPair, on: str) -> int:
    return int(pair.scalar("SELECT count(*) FROM harness_t", on=on) or 0)


def _maria_count(pair: MariaDBPair, on: str) -> int:
    return int(pair.scalar("SELECT count(*) FROM harness_t", on=on))


def test_postgres_pair_replicates_and_pauses(pg_pair: PostgresPair) -> None:
    pair = pg_pair
    assert pair.primary_url == f"postgresql://postgres@127.0.0.1:{pair.primary_port}/test"
    assert pair.replica_url == f"postgresql://postgres@127.0.0.1:{pair.replica_port}/test"
    assert pair.primary_port != pair.replica_port
    assert pair.scalar("SELECT pg_is_in_recovery()", on="replica") == "t"
    assert pair.scalar("SELECT pg_is_in_recovery()") == "f"

    pair.execute("CREATE TABLE harness_t (id int PRIMARY KEY, v text); "
                 "INSERT INTO harness_t SELECT g, 'v' || g FROM generate_series(1, 10) g;")
    pair.wait_caught_up(10)
    assert _pg_count(pair, "replica") == 10
    assert pair.query("SELECT id, v FROM harness_t WHERE id = 3", on="replica") == [("3", "v3")]

    pair.pause_replay()
    assert pair.replay_paused()
    pair.execute("INSERT INTO harness_t SELECT g, NULL FROM generate_series(11, 15) g")
    assert _pg_count(pair, "primary") == 15
    # Let the WAL reach the replica: it is received but must not be applied.
    target = pair.primary_lsn()
    for _ in range(100):
        if pair.scalar(f"SELECT pg_last_wal_receive_lsn() >= '{target}'::pg_lsn", on="replica") == "t":
            break
        time.sleep(0.02)
    assert _pg_count(pair, "replica") == 10
    pair.resume_replay()
    pair.wait_caught_up(10)
    assert _pg_count(pair, "replica") == 15
    assert pair.query("SELECT v FROM harness_t WHERE id = 12", on="replica") == [(None,)]


def test_postgres_replica_restart(pg_pair: PostgresPair) -> None:
    pair = pg_pair
    port = pair.replica_port
    pair.stop_replica()
    pair.execute("INSERT INTO harness_t VALUES (100, 'while down')")
    pair.start_replica()
    assert pair.replica_port == port
    pair.wait_caught_up(20)
    assert pair.query("SELECT v FROM harness_t WHERE id = 100", on="replica") == [("while down",)]


def test_mariadb_pair_replicates_and_stops_sql_thread(maria_pair: MariaDBPair) -> None:
    pair = maria_pair
    assert pair.primary_url == f"mysql://root@127.0.0.1:{pair.primary_port}/test"
    assert pair.replica_url == f"mysql://root@127.0.0.1:{pair.replica_port}/test"
    assert pair.primary_port != pair.replica_port
    # root over TCP with an empty password works on both, and the database exists on both
    assert pair.scalar("SELECT DATABASE()") == "test"
    assert pair.scalar("SELECT DATABASE()", on="replica") == "test"

    pair.execute(["CREATE TABLE harness_t (id INT PRIMARY KEY, v VARCHAR(50)) ENGINE=InnoDB",
                  "INSERT INTO harness_t VALUES (1, 'a'), (2, 'b'), (3, 'Zoë 🦄')"])
    pair.wait_caught_up(10)
    assert _maria_count(pair, "replica") == 3
    assert pair.query("SELECT v FROM harness_t WHERE id = 3", on="replica") == [("Zoë 🦄",)]

    pair.stop_sql_thread()
    pair.execute("INSERT INTO harness_t VALUES (4, 'd'), (5, NULL)")
    assert _maria_count(pair, "primary") == 5
    with pytest.raises(Exception, match="timed out"):
        pair.wait_caught_up(1)
    assert _maria_count(pair, "replica") == 3
    pair.start_sql_thread()
    pair.wait_caught_up(10)
    assert _maria_count(pair, "replica") == 5


def test_mariadb_replica_restart(maria_pair: MariaDBPair) -> None:
    pair = maria_pair
    port = pair.replica_port
    pair.stop_replica()
    pair.execute("INSERT INTO harness_t VALUES (100, 'while down')")
    pair.start_replica()
    assert pair.replica_port == port
    pair.wait_caught_up(20)
    assert pair.query("SELECT v FROM harness_t WHERE id = 100", on="replica") == [("while down",)]


def test_close_removes_everything() -> None:
    """A pair of each kind: close() stops every server process and deletes the temp dir; close is idempotent."""
    from tests.harness.replication import replication_available, require_replication

    require_replication()
    assert replication_available() is None
    for cls in (PostgresPair, MariaDBPair):
        with cls() as pair:
            tmp = pair.tmpdir
            pids = [pair.primary.proc.pid, pair.replica.proc.pid]
            assert tmp is not None and tmp.is_dir()
        assert not tmp.exists()
        for pid in pids:
            assert not os.path.exists(f"/proc/{pid}"), f"{cls.__name__} left process {pid} behind"
        pair.close()
