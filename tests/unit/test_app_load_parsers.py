"""The parsers of tests/harness/sysbench.py and tests/harness/locklog.py on output and logs captured from
sysbench 1.0.20, PostgreSQL 15 and MariaDB 10.11 (the integration test and bench_app.py run them live)."""

from __future__ import annotations

from tests.harness.locklog import parse_mariadb_error_log, parse_mariadb_sql_errors, parse_postgres_log
from tests.harness.sysbench import parse_output

PG_LOG = """\
2026-12-01 22:16:45.704 UTC [7303] [[unknown]] LOG:  connection authorized: user=postgres database=test application_name=backfilld-writer
2026-12-01 22:16:45.715 UTC [7304] [[unknown]] LOG:  connection authorized: user=postgres database=test application_name=sysbench
2026-12-01 22:16:45.944 UTC [7303] [backfilld-writer] LOG:  process 7303 still waiting for ShareLock on transaction 728 after 200.158 ms
2026-12-01 22:16:45.944 UTC [7303] [backfilld-writer] DETAIL:  Process holding the lock: 7304. Wait queue: 7303.
2026-12-01 22:16:45.944 UTC [7303] [backfilld-writer] CONTEXT:  while updating tuple (0,2) in relation "t"
2026-12-01 22:16:45.944 UTC [7303] [backfilld-writer] STATEMENT:  UPDATE t SET c_digest = 'x'
\t WHERE id=2
2026-12-01 22:16:46.445 UTC [7304] [sysbench] ERROR:  deadlock detected
2026-12-01 22:16:46.445 UTC [7304] [sysbench] DETAIL:  Process 7304 waits for ShareLock on transaction 727; blocked by process 7303.
\tProcess 7303 waits for ShareLock on transaction 728; blocked by process 7304.
\tProcess 7304: UPDATE t SET v=v+1 WHERE id=1
\tProcess 7303: UPDATE t SET c_digest = 'x'
\t WHERE id=2
2026-12-01 22:16:46.445 UTC [7304] [sysbench] HINT:  See server log for query details.
2026-12-01 22:16:46.445 UTC [7304] [sysbench] CONTEXT:  while updating tuple (0,1) in relation "t"
2026-12-01 22:16:46.445 UTC [7304] [sysbench] STATEMENT:  UPDATE t SET v=v+1 WHERE id=1
2026-12-01 22:16:46.651 UTC [7303] [backfilld-writer] LOG:  process 7303 still waiting for ShareLock on transaction 729 after 200.154 ms
2026-12-01 22:16:46.651 UTC [7303] [backfilld-writer] DETAIL:  Process holding the lock: 7304. Wait queue: 7303.
2026-12-01 22:16:46.651 UTC [7303] [backfilld-writer] STATEMENT:  UPDATE t SET v=6 WHERE id=$1
2026-12-01 22:16:47.454 UTC [7303] [backfilld-writer] ERROR:  canceling statement due to lock timeout
2026-12-01 22:16:47.454 UTC [7303] [backfilld-writer] CONTEXT:  while updating tuple (0,1) in relation "t"
2026-12-01 22:16:47.454 UTC [7303] [backfilld-writer] STATEMENT:  UPDATE t SET v=6 WHERE id=$1
2026-12-01 22:16:48.000 UTC [7305] [sysbench] ERROR:  duplicate key value violates unique constraint "sbtest1_pkey"
2026-12-01 22:16:48.000 UTC [7305] [sysbench] DETAIL:  Key (id)=(1) already exists.
2026-12-01 22:16:48.000 UTC [7305] [sysbench] STATEMENT:  INSERT INTO sbtest1 (id, k, c, pad) VALUES ($1, $2, $3, $4)
2026-12-01 22:16:49.100 UTC [7305] [sysbench] ERROR:  deadlock detected
2026-12-01 22:16:49.100 UTC [7305] [sysbench] DETAIL:  Process 7305 waits for ShareLock on transaction 731; blocked by process 7306.
\tProcess 7306 waits for ShareLock on transaction 730; blocked by process 7305.
\tProcess 7305: DELETE FROM sbtest1 WHERE id=$1
\tProcess 7306: UPDATE sbtest1 SET k=k+1 WHERE id=$1
2026-12-01 22:16:49.100 UTC [7305] [sysbench] STATEMENT:  DELETE FROM sbtest1 WHERE id=$1
"""


def test_postgres_deadlocks_and_lock_timeouts_name_both_sides() -> None:
    report = parse_postgres_log(PG_LOG, markers=["c_digest"])
    dl, timeout, own = report.collisions
    assert (dl.kind, dl.victim.id, dl.victim.app, dl.victim.backfilld) == ("deadlock", 7304, "sysbench", False)
    assert dl.victim.statement == "UPDATE t SET v=v+1 WHERE id=1"
    [other] = dl.others
    assert (other.id, other.app, other.backfilld) == (7303, "backfilld-writer", True)
    assert other.statement == "UPDATE t SET c_digest = 'x'\n WHERE id=2"
    assert dl.involves_backfilld
    # a lock timeout: the victim's statement, the holder from the wait logged before it
    assert (timeout.kind, timeout.victim.id, timeout.victim.backfilld) == ("lock_timeout", 7303, True)
    assert timeout.victim.statement == "UPDATE t SET v=6 WHERE id=$1"
    assert [(o.id, o.app, o.backfilld) for o in timeout.others] == [(7304, "sysbench", False)]
    # sysbench's threads among themselves: a collision, not backfilld's
    assert not own.involves_backfilld and own.others[0].statement == "UPDATE sbtest1 SET k=k+1 WHERE id=$1"
    assert report.other_errors == {'duplicate key value violates unique constraint "sbtest1_pkey"': 1}
    assert report.summary() == {"deadlocks": 2, "deadlocks_backfilld": 1, "lock_timeouts": 1,
                                "lock_timeouts_backfilld": 1}


def test_postgres_default_debian_prefix_tells_backfilld_by_its_statement() -> None:
    text = "\n".join(line.replace("[sysbench] ", "postgres@test ").replace("[backfilld-writer] ", "postgres@test ")
                     .replace("[[unknown]] ", "") for line in PG_LOG.splitlines()
                     if "connection authorized" not in line)
    dl = parse_postgres_log(text, markers=["c_digest"]).collisions[0]
    assert dl.victim.app is None and not dl.victim.backfilld and dl.others[0].backfilld


MARIA_LOG = """\
2026-12-01 22:15:55 7 [Note] Start binlog_dump to slave_server(2), pos(, 4), using_gtid(1), gtid('')
2026-12-01 22:15:56 11 [Note] InnoDB: Transactions deadlock detected, dumping detailed information.
2026-12-01 22:15:56 11 [Note] InnoDB: 
*** (1) TRANSACTION:

TRANSACTION 24, ACTIVE 1 sec starting index read
mysql tables in use 1, locked 1
LOCK WAIT 3 lock struct(s), heap size 1128, 2 row lock(s), undo log entries 1
MariaDB thread id 11, OS thread handle 140462544033472, query id 37 127.0.0.1 root Updating
UPDATE sbtest1 SET k=k+1 WHERE id=1
2026-12-01 22:15:56 11 [Note] InnoDB: *** WAITING FOR THIS LOCK TO BE GRANTED:

RECORD LOCKS space id 5 page no 3 n bits 320 index PRIMARY of table `test`.`sbtest1` trx id 24 lock_mode X locks rec but not gap waiting
2026-12-01 22:15:56 11 [Note] InnoDB: *** CONFLICTING WITH:

2026-12-01 22:15:56 11 [Note] InnoDB: 
*** (2) TRANSACTION:

TRANSACTION 23, ACTIVE 1 sec starting index read
mysql tables in use 1, locked 1
MariaDB thread id 10, OS thread handle 140462544340672, query id 36 127.0.0.1 root Updating
UPDATE `sbtest1` SET `c_digest` = (md5(c))
 WHERE `id` > 0 AND `id` <= 1000 AND `c_digest` IS NULL
2026-12-01 22:15:56 11 [Note] InnoDB: *** WAITING FOR THIS LOCK TO BE GRANTED:

2026-12-01 22:15:56 11 [Note] InnoDB: *** WE ROLL BACK TRANSACTION (1)
"""

SQL_ERRORS = """\
2026-12-01 22:15:56 11 root[root] @  [127.0.0.1] `test` ERROR 1213: Deadlock found when trying to get lock; try restarting transaction : UPDATE sbtest1 SET k=k+1 WHERE id=1 
2026-12-01 22:15:56 11 root[root] @  [127.0.0.1] `test` ERROR 1213: Deadlock found when trying to get lock; try restarting transaction : UPDATE sbtest1 SET k=k+1 WHERE id=1 
2026-12-01 22:15:58 10 root[root] @  [127.0.0.1] `test` ERROR 1205: Lock wait timeout exceeded; try restarting transaction : UPDATE `sbtest1` SET `c_digest` = (md5(c))
 WHERE `id` > 0 AND `id` <= 1000 AND `c_digest` IS NULL 
2026-12-01 22:15:58 10 root[root] @  [127.0.0.1] `test` ERROR 1205: Lock wait timeout exceeded; try restarting transaction : UPDATE `sbtest1` SET `c_digest` = (md5(c))
 WHERE `id` > 0 AND `id` <= 1000 AND `c_digest` IS NULL 
2026-12-01 22:15:59 12 root[root] @  [127.0.0.1] `test` ERROR 1158: Got an error reading communication packets : 
2026-12-01 22:16:00 10 root[root] @  [127.0.0.1] `test` ERROR 1205: Lock wait timeout exceeded; try restarting transaction : SET STATEMENT innodb_lock_wait_timeout = 0 FOR UPDATE `sbtest1` SET `c_digest` = (md5(c)) WHERE `id` > 0 AND `id` <= 1000 AND `c_digest` IS NULL ORDER BY `id` LIMIT 1000
2026-12-01 22:16:01 11 root[root] @  [127.0.0.1] `test` ERROR 1205: Lock wait timeout exceeded; try restarting transaction : SET STATEMENT innodb_lock_wait_timeout = 0 FOR UPDATE sbtest1 SET k=k+1 WHERE id=1
"""


def test_mariadb_deadlock_dump_names_the_victim_and_the_cycle() -> None:
    [dl] = parse_mariadb_error_log(MARIA_LOG, markers=["c_digest"]).collisions
    assert (dl.kind, dl.at, dl.victim.id, dl.victim.backfilld) == ("deadlock", "2026-12-01 22:15:56", 11, False)
    assert dl.victim.statement == "UPDATE sbtest1 SET k=k+1 WHERE id=1"
    [other] = dl.others
    assert other.id == 10 and other.backfilld and other.statement is not None
    assert other.statement.endswith("`c_digest` IS NULL")


def test_mariadb_sql_errors_give_lock_timeouts_once_each() -> None:
    report = parse_mariadb_sql_errors(SQL_ERRORS, markers=["c_digest"])
    # deadlocks come from the error log; the doubled line counts once; backfilld's no-wait UPDATE giving up at
    # once is no collision (nobody waited), but the same form from another session still counts
    [timeout, other] = report.collisions
    assert (timeout.kind, timeout.victim.id, timeout.victim.backfilld, timeout.others) == ("lock_timeout", 10, True, ())
    assert (other.kind, other.victim.id, other.victim.backfilld) == ("lock_timeout", 11, False)
    assert report.other_errors == {"ERROR 1158: Got an error reading communication packets": 1}
    assert report.gave_up_at_once == 1


SYSBENCH_OUT = """\
Threads started!

#bf histogram 1024 -6.9077552789821368 55.535406873378321
[ 1s ] thds: 2 tps: 3.00 qps: 60.00 (r/w/o: 42.00/12.00/6.00) lat (ms,95%): 12.52 err/s 0.00 reconn/s: 0.00
#bf interval 1000.500000 1.0000 1.0000 2 3 42 12 6 0 0 458:1,463:1,500:1
[ 2s ] thds: 2 tps: 4.00 qps: 80.00 (r/w/o: 56.00/16.00/8.00) lat (ms,95%): 20.00 err/s 1.00 reconn/s: 0.00
#bf interval 1001.500000 2.0000 1.0000 2 4 56 16 8 1 0 450:2,520:2
SQL statistics:
    transactions:                        7    (3.49 per sec.)
    queries:                             140  (69.80 per sec.)
    ignored errors:                      1      (0.50 per sec.)
    reconnects:                          0      (0.00 per sec.)

General statistics:
    total time:                          2.0050s
    total number of events:              7

Latency (ms):
         min:                                    3.35
         avg:                                    8.97
         max:                                   57.52
         95th percentile:                       16.12
         sum:                                 6004.13
"""


def test_sysbench_output_gives_totals_and_windows() -> None:
    r = parse_output(SYSBENCH_OUT, threads=2, time_s=2)
    assert (r.transactions, r.tps, r.ignored_errors, r.total_time_s) == (7, 3.49, 1, 2.005)
    assert (r.latency_avg_ms, r.latency_pct_ms, r.percentile) == (8.97, 16.12, 95)
    assert r.started_at == 999.5 and [iv.events for iv in r.intervals] == [3, 4]
    assert r.histogram is not None and abs(r.histogram.value_ms(0) - 0.001) < 1e-9
    assert r.intervals[0].pct_ms == 12.52
    whole = r.window()
    assert whole.transactions == 7 and whole.errors == 1 and whole.percentiles_exact
    # sysbench's rule: the first bucket where the count reaches floor(n * p / 100 + 0.5)
    assert whole.p95_ms == r.histogram.value_ms(520) and whole.p99_ms == r.histogram.value_ms(520)
    second = r.window(1000.6, 1001.6)
    assert (second.intervals, second.transactions, second.p95_ms) == (1, 4, r.histogram.value_ms(520))
    assert r.window(999.6, 1000.4).p95_ms == r.histogram.value_ms(500)
