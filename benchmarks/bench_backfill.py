#!/usr/bin/env python3
"""Benchmark backfilld against the physical limit and against the usual hand-written loop (issue #6).

    .venv/bin/python benchmarks/bench_backfill.py [--rows N] [--repeat K] [--engines sqlite,postgresql,mysql]
                                                  [--contenders ...] [--wide] [--replicated] [--readme]
                                                  [--json PATH]

For each engine one table of N rows (id primary key, name, email, created_at, and a new nullable column
email_domain) is loaded once, then three contenders fill email_domain = lower(substr(email, @+1)):

  single     one `UPDATE items SET email_domain = expr` statement, in one transaction: the physical limit;
  loop       the usual hand-written loop: `UPDATE ... WHERE id > lo AND id <= lo + 1000 AND email_domain IS
             NULL`, autocommit (one transaction per batch), no sleep; one round trip per batch;
  backfilld  backfilld.daemon.run() in this process with default settings ([throttle] untouched; only the
             state and heartbeat table names are the benchmark's own so it can drop them afterwards, and the
             HTTP endpoints listen on a free port instead of 9464). Its defaults include fast_commit = true
             (synchronous_commit=off on PostgreSQL, synchronous=NORMAL on SQLite for its own commits); the
             other contenders commit with the servers' defaults, as a hand-written script would.

Contenders use the drivers backfilld uses (asyncpg, aiomysql, aiosqlite), each opening its own connection
inside the timed region, so the differences are the algorithms and round trips, not the drivers (backfilld
opens more: on PostgreSQL and MariaDB two workers' connections, throttle.workers = 2 by default, writing two
ranges at once while its own looks up the next; on SQLite, one writer, a lookahead connection that reads the
next range while a batch is written). The optional contender backfilld1 is backfilld with throttle.workers = 1.
Runs are interleaved (repeat 1: single, loop, backfilld; repeat 2: loop, backfilld, single; ...; engines
interleaved too) and the median of the repeats is reported. Every run is verified afterwards (every row filled, every
value equal to the expression) outside the timed region.

--wide: every row also carries `note`, 300-400 bytes of text (300 + id % 101; hex digits: md5 of the id repeated
on PostgreSQL and MariaDB, hex(randomblob()) on SQLite), placed before email_domain and read or written by no
contender. The expression and the work per row stay the same; only the rows are 4-6x as wide (about 450-480
bytes per row on disk with the index, against 70-110), so the comparison is about row width: pages, WAL/undo
and rewrites per row. Values this short are stored inline and uncompressed by all three engines.

Between runs the table is put back in the same physical state (outside the timed region):
  PostgreSQL  ALTER TABLE ... ALTER COLUMN email_domain TYPE text USING NULL: one rewrite into a new heap with
              every email_domain NULL, and fresh indexes (compact heap: pages as full as after a bulk load, so no
              contender finds free space for HOT updates that another did not); the state UPDATE ... SET NULL
              and VACUUM FULL left, without that UPDATE, which cost as much as a contender (reset 42 -> 11 s at
              3M rows, same table size, same single UPDATE times after it); VACUUM (FREEZE, ANALYZE)
              (visibility map, hint bits, statistics); CHECKPOINT (each run starts right after a checkpoint,
              so each pays the same full-page images). autovacuum is off on the table, so it cannot tidy up in
              the middle of a slow contender only.
  MariaDB     ALTER TABLE ... DROP COLUMN email_domain, ADD COLUMN email_domain ..., FORCE: one rebuild (compact
              pages again) with the column NULL and last, as created; the state UPDATE ... SET NULL and ALTER
              TABLE FORCE left, without the UPDATE and its undo log (39 -> 7 s at 3M rows); ANALYZE TABLE;
              then wait until InnoDB purge has caught up (history list length below 20).
  SQLite      the file is in WAL mode (as for any database read while it is written); UPDATE ... SET
              email_domain = NULL; VACUUM; PRAGMA wal_checkpoint(TRUNCATE). The contenders' connections use
              SQLite's default synchronous=FULL; backfilld's uses NORMAL (fast_commit, as above).
backfilld's state row is deleted before each of its runs (and it runs with restart=True).

CPU: "CPU s/M" is this process's user+system CPU per million rows during the run (resource.getrusage).
For backfilld that is the daemon's own cost; for PostgreSQL and MariaDB the contenders' client cost is shown
beside it; on SQLite the database engine runs inside the process, so its work is included for every contender.

Memory: "RSS peak" is the largest resident set size of this process during the run, read from /proc/self/statm
at the start, every 0.1 s on a background thread (readings continue while the event loop is busy) and at the
end; "RSS growth" is RSS at the end minus at the start (MiB; "-" without /proc). Like CPU it is the process's:
for backfilld (in-process) the daemon with its connections, for the other contenders the client; on SQLite the
library's page caches are included (2 MiB per connection by default). ru_maxrss would not do: it is the
process's lifetime peak. So that the peaks of two table sizes compare, run each size in its own process
(benchmarks/scale_check.py does).

Scale: the load is one statement per engine, INSERT ... SELECT from generate_series (PostgreSQL), from a
recursive CTE (SQLite), and from MariaDB's sequence engine in statements of 250,000 rows; every phase grows about
linearly with the rows. On this 2-core machine, at 3M plain rows loading took 10 s (SQLite), 17 s (PostgreSQL),
17 s (MariaDB), a reset after a fill 6 / 11 / 7 s; at 10M plain rows on SQLite loading took 39 s, a reset after a
fill 28 s, the check after a run 16-17 s, the single UPDATE 28 s and backfilld 24 s: 10-11x the 1M figures.
--wide rows take longer (at 1M rows: loads 2.5-4x, resets 3-5x, contenders 1.5-2.5x). The log names each phase's
time (load, each reset, each run, each check) and sums them per engine at the end; --json records them too
(load_s; reset_s, verify_s per run). benchmarks/scale_check.py runs this script at 1M and 10M rows, plain and
--wide, and compares backfilld across the sizes (issue 13).

--replicated runs PostgreSQL and MariaDB on primary/replica pairs started by tests/harness/replication.py
(a streaming hot standby; a GTID binlog replica with binlog_format=ROW), with the memory settings of the local
servers (shared_buffers / innodb_buffer_pool_size 128 MB, innodb_log_file_size 96 MB); the harness runs them
with fsync=off (PostgreSQL) and innodb_flush_log_at_trx_commit=2 (MariaDB), so commits are cheaper there
than on the local servers. A separate monitor process writes time.time() into a heartbeat table on the
primary every 50 ms and reads it back on the replica every 50 ms: lag = now - newest replicated value (so a
reading includes up to one interval of age). For each run it reports the maximum lag seen from the
contender's start until the replica holds every backfilled value, and that time ("replica done"): the
replica is polled for the table's last row being filled, then for count(*) of rows still NULL whose
expression is not NULL being 0. backfilld gets the replica in [[replicas]] with the default max_lag_s = 1.0,
so its throttle is active (and, on PostgreSQL, also finds the replica through pg_stat_replication).

Databases: postgresql://postgres@127.0.0.1:5432/test and mysql://root@127.0.0.1:3306/test (override with
--pg-url / --mysql-url or BACKFILLD_TEST_POSTGRESQL_URL / BACKFILLD_TEST_MYSQL_URL); SQLite in a temporary
directory (--sqlite-dir). Everything the benchmark creates is dropped at the end: tables bench_backfill_items,
bench_backfill_state, bench_backfill_daemon_hb, bench_backfill_lag_hb, the SQLite file, the pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parent.parent
for _p in (REPO_ROOT, REPO_ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

DEFAULT_ROWS = 1_000_000
LOOP_BATCH = 1000
HEARTBEAT_S = 0.05
# InnoDB history list length counted as "purge caught up": not 0, since heartbeat writes (ours on a pair, and
# other clients on a shared server) keep adding a few; the resets' big transactions are 1 entry each anyway
PURGE_DONE_BELOW = 20
# how long to wait for it before going on anyway: 2 minutes, or 1 minute per million rows on larger tables (purge
# of a 10M-row run's undo takes minutes)
PURGE_WAIT_S, PURGE_WAIT_S_PER_MROWS = 120.0, 60.0

TABLE = "bench_backfill_items"
STATE_TABLE = "bench_backfill_state"
DAEMON_HB_TABLE = "bench_backfill_daemon_hb"
LAG_HB_TABLE = "bench_backfill_lag_hb"
TARGET = "email_domain"
JOB = "bench_email_domain"
# --wide: a text column no contender reads or writes, 300 + id % 101 bytes (300-400, 350 on average): rows 4-6x as
# wide with the same expression and the same work per row
WIDE_COLUMN = "note"
WIDE_MIN_BYTES, WIDE_SPREAD = 300, 101
# seconds between two readings of this process's RSS during a run; one reading of /proc/self/statm costs about
# 10 us, so the sampler takes about 0.01% of a core
RSS_SAMPLE_S = 0.1
MIB = 1 << 20

CONTENDERS = ("single", "loop", "backfilld", "backfilld1")
DEFAULT_CONTENDERS = ("single", "loop", "backfilld")
LABELS = {"single": "single UPDATE", "loop": f"loop of {LOOP_BATCH}", "backfilld": "backfilld",
          "backfilld1": "backfilld, 1 worker"}
ENGINES = ("sqlite", "postgresql", "mysql")
ENGINE_LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}

EXPR = {
    "sqlite": "lower(substr(email, instr(email, '@') + 1))",
    "postgresql": "lower(substr(email, strpos(email, '@') + 1))",
    "mysql": "lower(substr(email, instr(email, '@') + 1))",
}
# --wide: the value of WIDE_COLUMN for row {i}, hex text of WIDE_MIN_BYTES + i % WIDE_SPREAD bytes (13 x 32 hex
# digits of md5 cover the longest; SQLite has no md5, and hex(randomblob()) is as varied and as cheap). Values this
# short are stored inline and uncompressed by all three (PostgreSQL compresses only rows over ~2 kB).
WIDE_VALUE = {
    "sqlite": "substr(hex(randomblob(200)), 1, {lo} + {i} % {spread})",
    "postgresql": "substr(repeat(md5({i}::text), 13), 1, {lo} + ({i} % {spread})::int)",
    "mysql": "LEFT(REPEAT(MD5({i}), 13), {lo} + {i} % {spread})",
}

# Memory settings of the local servers, given to the replicated pairs too (the harness defaults are 32 MB).
PG_PAIR_CONF = {"shared_buffers": "128MB", "max_wal_size": "1GB"}
MARIADB_PAIR_ARGS = ["--innodb-buffer-pool-size=128M", "--innodb-log-file-size=96M", "--max-allowed-packet=64M"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss_bytes() -> int | None:
    """This process's resident set size now (None where there is no /proc, e.g. macOS)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class RssSampler:
    """This process's RSS over one run: at the start, every RSS_SAMPLE_S and at the end.

    The readings are taken on a thread of their own, so they keep coming while the event loop is busy (or blocked
    in a driver). getrusage's ru_maxrss is no substitute: it is the peak of the process's whole life, so after
    the first large run it says nothing about the next one."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.peak: int | None = None
        self.end: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def _note(self, rss: int | None) -> None:
        if rss is not None and (self.peak is None or rss > self.peak):
            self.peak = rss

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self._note(rss_bytes())

    def __enter__(self) -> Self:
        self.start = rss_bytes()
        self._note(self.start)
        if self.start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.end = rss_bytes()
        self._note(self.end)


def to_mib(n_bytes: int | None) -> float | None:
    return None if n_bytes is None else n_bytes / MIB


# ---------------------------------------------------------------------------------------------- drivers
# One small async connection wrapper per engine, over the drivers backfilld itself uses.


class Conn:
    async def execute(self, sql: str, *args: Any) -> int: ...
    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]: ...
    async def close(self) -> None: ...

    async def scalar(self, sql: str, *args: Any) -> Any:
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None


class PgConn(Conn):
    def __init__(self, conn: Any) -> None:
        self.c = conn

    @classmethod
    async def open(cls, url: str) -> PgConn:
        import asyncpg

        return cls(await asyncpg.connect(url, timeout=10, command_timeout=3600))

    async def execute(self, sql: str, *args: Any) -> int:
        status = await self.c.execute(sql, *args)
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.c.fetch(sql, *args)]

    async def close(self) -> None:
        await self.c.close()


class MyConn(Conn):
    def __init__(self, conn: Any) -> None:
        self.c = conn

    @classmethod
    async def open(cls, url: str) -> MyConn:
        import aiomysql

        from backfilld.config import parse_url

        u = parse_url(url)
        conn = await aiomysql.connect(host=u.host, port=u.port or 3306, user=u.user or "root", password="",
                                      db=u.database, charset="utf8mb4", autocommit=True, connect_timeout=10)
        return cls(conn)

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.c.cursor() as cur:
            await cur.execute(sql, args or None)
            return max(0, cur.rowcount)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        async with self.c.cursor() as cur:
            await cur.execute(sql, args or None)
            return [tuple(r) for r in await cur.fetchall()]

    async def close(self) -> None:
        self.c.close()


class LiteConn(Conn):
    def __init__(self, conn: Any) -> None:
        self.c = conn

    @classmethod
    async def open(cls, path: str) -> LiteConn:
        import aiosqlite

        # autocommit (isolation_level=None): every statement is its own transaction, as in the other engines
        return cls(await aiosqlite.connect(path, isolation_level=None))

    async def execute(self, sql: str, *args: Any) -> int:
        async with self.c.execute(sql, args) as cur:
            return max(0, cur.rowcount)

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        async with self.c.execute(sql, args) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    async def close(self) -> None:
        await self.c.close()


# ---------------------------------------------------------------------------------------------- targets


class Target:
    """One engine's table: load, reset, the two plain contenders, verification, cleanup."""

    engine = ""
    ph = "%s"  # placeholder style for the loop's statement

    def __init__(self, url: str, rows: int, wide: bool = False) -> None:
        self.url, self.rows, self.wide = url, rows, wide
        self.expr = EXPR[self.engine]
        self.pair: Any = None  # a harness pair when replicated
        self.load_s = 0.0
        self.table_bytes: int | None = None  # on disk after the load, indexes included

    def wide_column(self, sql_type: str) -> str:
        """The --wide column's definition, placed before the target (so the target stays the last column)."""
        return f"{WIDE_COLUMN} {sql_type} NOT NULL, " if self.wide else ""

    def wide_insert(self, i: str) -> tuple[str, str]:
        """(", note", ", <its value for row i>") for the load's INSERT, or two empty strings."""
        if not self.wide:
            return "", ""
        value = WIDE_VALUE[self.engine].format(i=i, lo=WIDE_MIN_BYTES, spread=WIDE_SPREAD)
        return f", {WIDE_COLUMN}", f", {value}"

    async def size_bytes(self) -> int:
        """The table's size on disk, indexes included (for the log: how wide the rows really are)."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        return ENGINE_LABELS[self.engine] + (" (replicated)" if self.pair is not None else "")

    @property
    def daemon_url(self) -> str:
        return self.url

    async def connect(self) -> Conn:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def conn(self) -> AsyncIterator[Conn]:
        c = await self.connect()
        try:
            yield c
        finally:
            await c.close()

    async def load(self) -> None:
        raise NotImplementedError

    async def reset(self) -> None:
        raise NotImplementedError

    async def drop(self) -> None:
        async with self.conn() as c:
            for t in (TABLE, STATE_TABLE, DAEMON_HB_TABLE, LAG_HB_TABLE):
                await c.execute(f"DROP TABLE IF EXISTS {t}")

    def sync_replica(self) -> None:
        if self.pair is not None:
            self.pair.wait_caught_up(1800)

    # --- contenders 1 and 2
    async def single(self) -> int:
        async with self.conn() as c:
            return await c.execute(f"UPDATE {TABLE} SET {TARGET} = {self.expr}")

    def loop_sql(self) -> str:
        p1, p2 = (("$1", "$2") if self.ph == "$" else (self.ph, self.ph))
        return (f"UPDATE {TABLE} SET {TARGET} = {self.expr} WHERE id > {p1} AND id <= {p2} "
                f"AND {TARGET} IS NULL")

    async def loop(self) -> int:
        sql = self.loop_sql()
        done = 0
        async with self.conn() as c:
            lo, hi_end = await self.bounds(c)
            lo -= 1
            while lo < hi_end:
                hi = lo + LOOP_BATCH
                done += await c.execute(sql, lo, hi)  # autocommit: one transaction per batch
                lo = hi
        return done

    async def bounds(self, c: Conn) -> tuple[int, int]:
        lo, hi = (await c.fetch(f"SELECT min(id), max(id) FROM {TABLE}"))[0]
        return int(lo), int(hi)

    # --- checks
    def verify_sql(self) -> str:
        raise NotImplementedError

    async def verify(self) -> tuple[int, int]:
        """(rows still NULL although their expression is not, rows whose value differs from the expression)."""
        async with self.conn() as c:
            missing, wrong = (await c.fetch(self.verify_sql()))[0]
        return int(missing or 0), int(wrong or 0)

    def pending_sql(self) -> str:
        return f"SELECT count(*) FROM {TABLE} WHERE {TARGET} IS NULL AND ({self.expr}) IS NOT NULL"

    async def clear_state(self) -> None:
        async with self.conn() as c:
            with contextlib.suppress(Exception):
                await c.execute(f"DELETE FROM {STATE_TABLE} WHERE job = {self.ph if self.ph != '$' else '$1'}",
                                JOB)

    def extra_info(self) -> str:
        return ""


class PostgresTarget(Target):
    engine = "postgresql"
    ph = "$"

    async def connect(self) -> Conn:
        return await PgConn.open(self.url)

    async def load(self) -> None:
        async with self.conn() as c:
            await c.execute(f"DROP TABLE IF EXISTS {TABLE}")
            await c.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, "
                            f"created_at timestamptz NOT NULL, {self.wide_column('text')}{TARGET} text) "
                            "WITH (autovacuum_enabled = false)")
            wide_col, wide_val = self.wide_insert("g")
            await c.execute(
                f"INSERT INTO {TABLE} (id, name, email, created_at{wide_col}) SELECT g, 'User ' || g, "
                f"'user' || g || '@Mail' || (g % 97) || '.Example.COM', "
                f"timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second'{wide_val} "
                f"FROM generate_series(1, {self.rows}) g")
            await c.execute(f"VACUUM (FREEZE, ANALYZE) {TABLE}")
            await c.execute("CHECKPOINT")

    async def reset(self) -> None:
        async with self.conn() as c:
            # one rewrite into a new heap with every target NULL and fresh indexes: what UPDATE ... SET NULL and
            # VACUUM FULL left, without the UPDATE (as costly as the single UPDATE contender; 42 -> 11 s at 3M rows)
            await c.execute(f"ALTER TABLE {TABLE} ALTER COLUMN {TARGET} TYPE text USING NULL::text")
            await c.execute(f"VACUUM (FREEZE, ANALYZE) {TABLE}")
            await c.execute("CHECKPOINT")

    async def size_bytes(self) -> int:
        async with self.conn() as c:
            return int(await c.scalar(f"SELECT pg_total_relation_size('{TABLE}')"))

    def verify_sql(self) -> str:
        return (f"SELECT count(*) FILTER (WHERE {TARGET} IS NULL AND ({self.expr}) IS NOT NULL), "
                f"count(*) FILTER (WHERE {TARGET} IS DISTINCT FROM ({self.expr})) FROM {TABLE}")

    def extra_info(self) -> str:
        return "PostgreSQL: rewrite (ALTER COLUMN ... USING NULL) + VACUUM (FREEZE, ANALYZE) + CHECKPOINT between runs"


class MySQLTarget(Target):
    engine = "mysql"
    TARGET_TYPE = "varchar(190) NULL"

    async def connect(self) -> Conn:
        return await MyConn.open(self.url)

    async def load(self) -> None:
        async with self.conn() as c:
            await c.execute(f"DROP TABLE IF EXISTS {TABLE}")
            await c.execute(f"CREATE TABLE {TABLE} (id bigint NOT NULL PRIMARY KEY, name varchar(100) NOT NULL, "
                            f"email varchar(190) NOT NULL, created_at datetime NOT NULL, {self.wide_column('text')}"
                            f"{TARGET} {self.TARGET_TYPE}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
            wide_col, wide_val = self.wide_insert("seq")
            # MariaDB's sequence engine; in chunks so that a replica applies it in reasonable events
            step = 250_000
            for lo in range(1, self.rows + 1, step):
                hi = min(self.rows, lo + step - 1)
                await c.execute(
                    f"INSERT INTO {TABLE} (id, name, email, created_at{wide_col}) SELECT seq, CONCAT('User ', seq), "
                    f"CONCAT('user', seq, '@Mail', seq % 97, '.Example.COM'), "
                    f"'2020-01-01 00:00:00' + INTERVAL seq SECOND{wide_val} FROM seq_{lo}_to_{hi}")
            await c.execute(f"ANALYZE TABLE {TABLE}")
        await self.wait_purged()

    async def reset(self) -> None:
        async with self.conn() as c:
            # one rebuild with the target NULL (dropped and added again as the last column, as created): what
            # UPDATE ... SET NULL and ALTER TABLE FORCE left, without the UPDATE and its undo log (as costly as the
            # single UPDATE contender; 39 -> 7 s at 3M rows)
            await c.execute(f"ALTER TABLE {TABLE} DROP COLUMN {TARGET}, ADD COLUMN {TARGET} {self.TARGET_TYPE}, FORCE")
            await c.execute(f"ANALYZE TABLE {TABLE}")
        await self.wait_purged()

    async def wait_purged(self) -> None:
        timeout = max(PURGE_WAIT_S, PURGE_WAIT_S_PER_MROWS * self.rows / 1e6)
        deadline = time.monotonic() + timeout
        async with self.conn() as c:
            while time.monotonic() < deadline:
                n = await c.scalar("SELECT `COUNT` FROM information_schema.INNODB_METRICS "
                                   "WHERE NAME = 'trx_rseg_history_len'")
                if n is None or int(n) <= PURGE_DONE_BELOW:
                    return
                await asyncio.sleep(0.2)
        log(f"{self.label}: InnoDB purge still behind after {timeout:.0f} s; going on")

    async def size_bytes(self) -> int:
        async with self.conn() as c:
            return int(await c.scalar("SELECT data_length + index_length FROM information_schema.TABLES "
                                      f"WHERE table_schema = DATABASE() AND table_name = '{TABLE}'"))

    def verify_sql(self) -> str:
        return (f"SELECT SUM({TARGET} IS NULL AND ({self.expr}) IS NOT NULL), "
                f"SUM(NOT ({TARGET} <=> ({self.expr}))) FROM {TABLE}")


class SQLiteTarget(Target):
    engine = "sqlite"
    ph = "?"

    def __init__(self, path: str, rows: int, wide: bool = False) -> None:
        super().__init__(path, rows, wide)
        self.path = path

    @property
    def daemon_url(self) -> str:
        return "sqlite:///" + self.path  # absolute path: sqlite:////tmp/...

    async def connect(self) -> Conn:
        return await LiteConn.open(self.path)

    async def load(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path + suffix)
        async with self.conn() as c:
            await c.execute("PRAGMA journal_mode = WAL")
            await c.execute(f"CREATE TABLE {TABLE} (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, "
                            f"created_at TEXT NOT NULL, {self.wide_column('TEXT')}{TARGET} TEXT)")
            wide_col, wide_val = self.wide_insert("i")
            await c.execute(
                f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {self.rows}) "
                f"INSERT INTO {TABLE} (id, name, email, created_at{wide_col}) SELECT i, 'User ' || i, "
                f"'user' || i || '@Mail' || (i % 97) || '.Example.COM', "
                f"datetime('2020-01-01 00:00:00', '+' || i || ' seconds'){wide_val} FROM s")
            await c.execute("ANALYZE")
            await c.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def reset(self) -> None:
        async with self.conn() as c:
            await c.execute(f"UPDATE {TABLE} SET {TARGET} = NULL WHERE {TARGET} IS NOT NULL")
            await c.execute("VACUUM")
            await c.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    async def drop(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path + suffix)

    async def size_bytes(self) -> int:
        return sum(os.path.getsize(self.path + suffix) for suffix in ("", "-wal") if os.path.exists(self.path + suffix))

    def verify_sql(self) -> str:
        return (f"SELECT SUM({TARGET} IS NULL AND ({self.expr}) IS NOT NULL), "
                f"SUM({TARGET} IS NOT ({self.expr})) FROM {TABLE}")


# ---------------------------------------------------------------------------------------------- backfilld


@dataclasses.dataclass
class DaemonStats:
    batches: int = 0
    passes: int = 0
    max_size: int = 0
    sizes: list[int] = dataclasses.field(default_factory=list)
    pass_s: list[float] = dataclasses.field(default_factory=list)
    paused: int = 0
    paused_s: float = 0.0
    breakdown: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    round_trips: int = 0


class LogCapture:
    """A structlog processor keeping the events the report uses; the rest goes on to the renderer."""

    KEEP = frozenset({"pass_finished", "throttle_paused", "throttle_resumed", "job_completed", "batch_retry",
                      "job_failed"})

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, _logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("event") in self.KEEP:
            self.events.append(dict(event))
        return event


def setup_daemon_logging(capture: LogCapture, sink: Any) -> None:
    """What `backfilld run` sets up (level info, JSON lines) with the lines going to `sink`."""
    import logging

    import structlog

    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True), capture,
                    structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=sink),
        cache_logger_on_first_use=False,
    )


class Breakdown:
    """--breakdown: time spent in each step of backfilld's batch loop, by wrapping its methods for one run.

    Only the job's own connections are counted (the one daemon.run opens and the workers'), not the throttle
    probes'. With more than one worker, batches overlap: their times add up to more than the run."""

    def __init__(self) -> None:
        self.t: dict[str, list[float]] = defaultdict(list)
        self.round_trips = 0
        self._undo: list[Callable[[], None]] = []

    def _patch(self, owner: Any, name: str, new: Any) -> None:
        if name in owner.__dict__:
            old = owner.__dict__[name]
            self._undo.append(lambda: setattr(owner, name, old))
        else:
            self._undo.append(lambda: delattr(owner, name))
        setattr(owner, name, new)

    def __enter__(self) -> Self:
        from backfilld import trace

        bd = self

        def timed(key: str, fn: Any) -> Any:
            async def wrapper(self_: Any, *a: Any, **kw: Any) -> Any:
                if not getattr(self_, "_bench_job_engine", False):
                    return await fn(self_, *a, **kw)
                t0 = time.perf_counter()
                try:
                    return await fn(self_, *a, **kw)
                finally:
                    bd.t[key].append(time.perf_counter() - t0)
            return wrapper

        self._timed = timed
        trace.install(self)   # the loop's steps (backfilld/trace.py), and which connections are the job's
        self._undo.append(lambda: trace.install(None))
        return self

    def span(self, name: str, seconds: float) -> None:
        self.t[name].append(seconds)

    def connection(self, engine: Any, role: str) -> None:
        """The job's own connection and the workers' count (not the throttle probes'): their statements are
        timed by wrapping the engine's public methods."""
        engine._bench_job_engine = True
        self._wrap_engine_class(type(engine))

    def _wrap_engine_class(self, cls: type) -> None:
        if getattr(cls, "_bench_wrapped", False):
            return

        bd, timed = self, self._timed
        for name, key in (("next_range", "lookup on the job's connection"), ("apply_range", "UPDATE (apply_range)"),
                          ("apply_range_once", "UPDATE, expression once"),
                          ("advance_state", "state UPDATE (advance_state)")):
            self._patch(cls, name, timed(key, getattr(cls, name)))
        orig_fetch, orig_exec = cls.fetch, cls.execute

        async def fetch(self_: Any, *a: Any, **kw: Any) -> Any:
            if getattr(self_, "_bench_job_engine", False):
                bd.round_trips += 1
            return await orig_fetch(self_, *a, **kw)

        async def execute(self_: Any, *a: Any, **kw: Any) -> Any:
            if getattr(self_, "_bench_job_engine", False):
                bd.round_trips += 1
            return await orig_exec(self_, *a, **kw)

        self._patch(cls, "fetch", fetch)
        self._patch(cls, "execute", execute)
        orig_tx = cls.transaction
        counts_own_rt = cls.__name__ == "SQLiteEngine"  # BEGIN/COMMIT go through execute() there

        @contextlib.asynccontextmanager
        async def transaction(self_: Any) -> AsyncIterator[None]:
            if not getattr(self_, "_bench_job_engine", False):
                async with orig_tx(self_):
                    yield
                return
            cm = orig_tx(self_)
            t0 = time.perf_counter()
            await cm.__aenter__()
            bd.t["BEGIN"].append(time.perf_counter() - t0)
            if not counts_own_rt:
                bd.round_trips += 1
            try:
                yield
            except BaseException:
                if not await cm.__aexit__(*sys.exc_info()):
                    raise
            else:
                t0 = time.perf_counter()
                await cm.__aexit__(None, None, None)
                bd.t["COMMIT"].append(time.perf_counter() - t0)
                if not counts_own_rt:
                    bd.round_trips += 1

        self._patch(cls, "transaction", transaction)
        self._patch(cls, "_bench_wrapped", True)

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


async def run_backfilld(target: Target, sink: Any, breakdown: bool, workers: int | None = None
                        ) -> tuple[int, DaemonStats]:
    from backfilld import daemon
    from backfilld.config import Config, from_dict

    data: dict[str, Any] = {
        "database": {"url": target.daemon_url},
        "state": {"table": STATE_TABLE, "heartbeat_table": DAEMON_HB_TABLE},
        "jobs": [{"name": JOB, "table": TABLE, "set": {TARGET: target.expr}}],
    }
    # a checkout's Config: pydantic models (before 2026-12) or backfilld.models' dataclasses
    fields = getattr(Config, "model_fields", None) or {f.name for f in dataclasses.fields(Config)}
    if "metrics" in fields:
        # the HTTP endpoints stay on (default), on a free port so that no other daemon's port gets in the way
        data["metrics"] = {"listen": "127.0.0.1:0"}
    if target.pair is not None:
        data["replicas"] = [{"url": target.pair.replica_url, "name": "replica"}]
        data["throttle"] = {"max_lag_s": 1.0}  # the default, spelled out
    if workers is not None:   # the backfilld1 contender: one batch at a time
        data.setdefault("throttle", {})["workers"] = workers
    cfg = from_dict(data, "bench")
    stats = DaemonStats()
    capture = LogCapture()
    setup_daemon_logging(capture, sink)

    def on_batch(_job: Any, r: Any) -> None:
        stats.batches += 1
        stats.sizes.append(r.size)
        stats.max_size = max(stats.max_size, r.size)

    bd = Breakdown() if breakdown else None
    with bd if bd is not None else contextlib.nullcontext():
        [state] = await daemon.run(cfg, daemon.RunOptions(restart=True), on_batch=on_batch)
    if state.status != "completed":
        raise RuntimeError(f"backfilld ended with status {state.status}: {state.error}")
    for e in capture.events:
        if e["event"] == "pass_finished":
            stats.passes += 1
            stats.pass_s.append(float(e.get("took_s", 0)))
        elif e["event"] == "throttle_paused":
            stats.paused += 1
        elif e["event"] == "throttle_resumed":
            stats.paused_s += float(e.get("paused_s", 0))
    if bd is not None:
        stats.breakdown = dict(bd.t)
        stats.round_trips = bd.round_trips
    return state.rows_done, stats


# ---------------------------------------------------------------------------------------------- lag monitor


def _monitor_main(pipe: Any, kind: str, primary_url: str, replica_url: str, expr: str, check_id: int) -> None:
    """Entry point of the monitor process (its own process, so it shares neither the GIL nor the CPU clock)."""
    try:
        asyncio.run(_monitor(pipe, kind, primary_url, replica_url, expr, check_id))
    except KeyboardInterrupt:
        pass


async def _monitor(pipe: Any, kind: str, primary_url: str, replica_url: str, expr: str, check_id: int) -> None:
    opener = PgConn.open if kind == "postgresql" else MyConn.open
    ph = "$1" if kind == "postgresql" else "%s"
    prim = await opener(primary_url)
    rep = await opener(replica_url)
    rep_poll = await opener(replica_url)  # completion polls on their own connection: lag reads never wait on them
    st: dict[str, Any] = {"measuring": False, "t0": 0.0, "max_lag": 0.0, "samples": 0, "done_at": None,
                          "latest": None, "errors": 0, "max_lag_at": None}

    async def every(interval: float, step: Callable[[], Any]) -> None:
        while True:
            t0 = time.monotonic()
            try:
                await step()
            except Exception as exc:  # noqa: BLE001 - keep measuring; a count of errors goes in the report
                st["errors"] += 1
                st["last_error"] = repr(exc)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - t0)))

    async def write() -> None:
        await prim.execute(f"UPDATE {LAG_HB_TABLE} SET ts = {ph} WHERE id = 1", time.time())

    async def read() -> None:
        ts = await rep.scalar(f"SELECT ts FROM {LAG_HB_TABLE} WHERE id = 1")
        if ts is None:
            return
        lag = max(0.0, time.time() - float(ts))
        st["latest"] = lag
        if st["measuring"]:
            st["samples"] += 1
            if lag > st["max_lag"]:
                st["max_lag"], st["max_lag_at"] = lag, time.time() - st["t0"]

    async def poll_done() -> None:
        if not st["measuring"] or st["done_at"] is not None:
            return
        last = await rep_poll.scalar(f"SELECT {TARGET} FROM {TABLE} WHERE id = {ph}", check_id)
        if last is None:
            return
        pending = await rep_poll.scalar(f"SELECT count(*) FROM {TABLE} WHERE {TARGET} IS NULL AND ({expr}) IS NOT NULL")
        if int(pending) == 0:
            st["done_at"] = time.time()

    tasks = [asyncio.create_task(every(HEARTBEAT_S, write)), asyncio.create_task(every(HEARTBEAT_S, read)),
             asyncio.create_task(every(HEARTBEAT_S, poll_done))]
    loop = asyncio.get_running_loop()
    try:
        while True:
            cmd, arg = await loop.run_in_executor(None, pipe.recv)
            if cmd == "start":
                st.update(measuring=True, t0=arg, max_lag=0.0, samples=0, done_at=None, errors=0, max_lag_at=None)
                pipe.send("ok")
            elif cmd == "finish":
                deadline = time.monotonic() + arg
                while st["done_at"] is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                # one more heartbeat round, so a lag that peaked at the very end is read
                await asyncio.sleep(2 * HEARTBEAT_S)
                st["measuring"] = False
                done = st["done_at"] - st["t0"] if st["done_at"] is not None else None
                pipe.send({"max_lag": st["max_lag"], "done_s": done, "samples": st["samples"],
                           "errors": st["errors"], "max_lag_at": st["max_lag_at"]})
            elif cmd == "lag":
                pipe.send(st["latest"])
            elif cmd == "quit":
                break
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in (prim, rep, rep_poll):
            with contextlib.suppress(Exception):
                await c.close()
        pipe.send("bye")


class Monitor:
    def __init__(self, target: Target) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_monitor_main, args=(child, target.engine, target.pair.primary_url,
                                                             target.pair.replica_url, target.expr, target.rows),
                                daemon=True, name=f"lag-monitor-{target.engine}")
        self.proc.start()

    def call(self, cmd: str, arg: Any = None, timeout: float = 60.0) -> Any:
        self.pipe.send((cmd, arg))
        if not self.pipe.poll(timeout):
            raise RuntimeError(f"lag monitor did not answer {cmd!r} within {timeout:.0f} s")
        return self.pipe.recv()

    def wait_quiet(self, below: float = 0.25, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lag = self.call("lag")
            if lag is not None and lag < below:
                return
            time.sleep(0.1)
        log(f"replica lag still {self.call('lag')} s after {timeout:.0f} s; going on")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("quit", timeout=10)
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# ---------------------------------------------------------------------------------------------- running


@dataclasses.dataclass
class Run:
    engine: str
    contender: str
    repeat: int
    seconds: float
    rows: int
    cpu_s: float
    daemon: DaemonStats | None = None
    lag: dict[str, Any] | None = None
    # this process's RSS at the contender's start, its largest reading during the run, at the end (MiB; None
    # without /proc)
    rss_start_mib: float | None = None
    rss_peak_mib: float | None = None
    rss_end_mib: float | None = None
    reset_s: float = 0.0   # the reset before the run (outside the timed region)
    verify_s: float = 0.0  # the check after it (outside the timed region)

    @property
    def rss_growth_mib(self) -> float | None:
        if self.rss_start_mib is None or self.rss_end_mib is None:
            return None
        return self.rss_end_mib - self.rss_start_mib


async def run_one(target: Target, contender: str, args: argparse.Namespace, monitor: Monitor | None,
                  sink: Any) -> Run:
    if contender.startswith("backfilld"):
        await target.clear_state()
    if monitor is not None:
        await asyncio.to_thread(target.sync_replica)
        await asyncio.to_thread(monitor.wait_quiet)
    daemon_stats = None
    t_wall = time.time()
    if monitor is not None:
        monitor.call("start", t_wall)
    with RssSampler() as rss:
        c0, t0 = cpu_s(), time.perf_counter()
        if contender == "single":
            rows = await target.single()
        elif contender == "loop":
            rows = await target.loop()
        else:
            rows, daemon_stats = await run_backfilld(target, sink, args.breakdown,
                                                     workers=1 if contender == "backfilld1" else None)
        seconds = time.perf_counter() - t0
        cpu = cpu_s() - c0
    lag = monitor.call("finish", args.replica_timeout, timeout=args.replica_timeout + 60) if monitor else None
    t_verify = time.monotonic()
    missing, wrong = await target.verify()
    verify_s = time.monotonic() - t_verify
    if missing or wrong:
        raise RuntimeError(f"{target.label} {contender}: {missing} rows left unfilled, {wrong} rows differ from "
                           "the expression")
    if rows != target.rows:
        log(f"note: {target.label} {contender} reported {rows} rows changed (table has {target.rows})")
    return Run(target.engine, contender, 0, seconds, target.rows, cpu, daemon_stats, lag,
               rss_start_mib=to_mib(rss.start), rss_peak_mib=to_mib(rss.peak), rss_end_mib=to_mib(rss.end),
               verify_s=verify_s)


def fmt_int(n: float) -> str:
    return f"{n:,.0f}"


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def med_or_none(xs: list[float | None]) -> float | None:
    """The median of the readings, or None when any run had none (no /proc)."""
    return None if not xs or any(x is None for x in xs) else statistics.median(x for x in xs if x is not None)


def fmt_mib(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.1f}" if signed else f"{x:.0f}"


def summarize(runs: list[Run], targets: list[Target]) -> list[dict[str, Any]]:
    out = []
    for t in targets:
        by = {c: [r for r in runs if r.engine == t.engine and r.contender == c] for c in CONTENDERS}
        base = med([t.rows / r.seconds for r in by["single"]]) if by["single"] else None
        for c in CONTENDERS:
            rs = by[c]
            if not rs:
                continue
            rate = med([t.rows / r.seconds for r in rs])
            row: dict[str, Any] = {
                "engine": t.label, "contender": LABELS[c], "rows": t.rows, "runs": len(rs),
                "seconds": [round(r.seconds, 2) for r in rs], "median_s": med([r.seconds for r in rs]),
                "rows_per_s": rate, "ratio": rate / base if base else None,
                "cpu_s_per_mrows": med([r.cpu_s / (t.rows / 1e6) for r in rs]),
                "rss_peak_mib": med_or_none([r.rss_peak_mib for r in rs]),
                "rss_growth_mib": med_or_none([r.rss_growth_mib for r in rs]),
                "rss_start_mib": med_or_none([r.rss_start_mib for r in rs]),
                "rss_peak_max_mib": max((r.rss_peak_mib for r in rs if r.rss_peak_mib is not None), default=None),
                "engine_id": t.engine, "contender_id": c, "wide": t.wide, "table_bytes": t.table_bytes,
            }
            if c.startswith("backfilld"):
                ds = [r.daemon for r in rs if r.daemon]
                row["batches"] = med([d.batches for d in ds])
                row["max_batch"] = max(d.max_size for d in ds)
                row["passes"] = med([d.passes for d in ds])
                row["last_pass_s"] = med([d.pass_s[-1] for d in ds if d.pass_s])
                row["paused"] = med([d.paused for d in ds])
                row["paused_s"] = med([d.paused_s for d in ds])
            if any(r.lag for r in rs):
                lags = [r.lag for r in rs if r.lag]
                row["max_lag_s"] = med([lg["max_lag"] for lg in lags])
                row["worst_lag_s"] = max(lg["max_lag"] for lg in lags)
                dones = [lg["done_s"] for lg in lags if lg["done_s"] is not None]
                row["replica_done_s"] = med(dones) if len(dones) == len(lags) else None
                row["monitor_errors"] = sum(lg["errors"] for lg in lags)
            out.append(row)
    return out


def print_table(rows: list[dict[str, Any]], replicated: bool) -> None:
    head = ["engine", "contender", "rows/s", "x single", "median s", "runs s", "CPU s/M rows", "RSS peak MiB",
            "RSS growth MiB"]
    if replicated:
        head += ["max lag s", "worst lag s", "replica done s"]
    lines = [head]
    for r in rows:
        line = [r["engine"], r["contender"], fmt_int(r["rows_per_s"]),
                f"{r['ratio']:.2f}" if r["ratio"] is not None else "-", f"{r['median_s']:.2f}",
                " ".join(f"{s:.2f}" for s in r["seconds"]), f"{r['cpu_s_per_mrows']:.2f}",
                fmt_mib(r["rss_peak_mib"]), fmt_mib(r["rss_growth_mib"], signed=True)]
        if replicated:
            if "max_lag_s" in r:
                line += [f"{r['max_lag_s']:.2f}", f"{r['worst_lag_s']:.2f}",
                         f"{r['replica_done_s']:.2f}" if r["replica_done_s"] is not None else "timeout"]
            else:
                line += ["-", "-", "-"]
        lines.append(line)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        cells = enumerate(zip(line, widths, strict=False))
        print("  ".join(str(v).rjust(w) if j >= 2 else str(v).ljust(w) for j, (v, w) in cells))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    notes = [r for r in rows if "batches" in r]
    if notes:
        print()
        for r in notes:
            extra = (f", throttle pauses {r['paused']:.0f} ({r['paused_s']:.2f} s paused)" if replicated else "")
            print(f"{r['contender']} on {r['engine']}: {r['batches']:.0f} batches (largest {r['max_batch']:,} keys), "
                  + (f"{r['passes']:.0f} passes, last (sweep) pass {r['last_pass_s']:.2f} s" if r["passes"] > 1 else
                     "1 pass (no sweep: no other connection wrote during the fill)") + extra)


def print_readme(rows: list[dict[str, Any]], replicated: bool, meta: str) -> None:
    head = ["Engine", "Contender", "rows/s", "vs single UPDATE", "CPU s / M rows", "peak RSS MiB", "RSS growth MiB"]
    if replicated:
        head += ["max replica lag", "replica complete after"]
    print("<!-- generated by benchmarks/bench_backfill.py --readme -->")
    print(f"| {' | '.join(head)} |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    for r in rows:
        cells = [r["engine"], r["contender"], fmt_int(r["rows_per_s"]),
                 f"{r['ratio']:.2f}" if r["ratio"] is not None else "-", f"{r['cpu_s_per_mrows']:.2f}",
                 fmt_mib(r["rss_peak_mib"]), fmt_mib(r["rss_growth_mib"], signed=True)]
        if replicated:
            if "max_lag_s" in r:
                cells += [f"{r['max_lag_s']:.2f} s",
                          f"{r['replica_done_s']:.1f} s" if r["replica_done_s"] is not None else "timeout"]
            else:
                cells += ["-", "-"]
        print(f"| {' | '.join(cells)} |")
    print()
    print(meta)


def print_breakdown(runs: list[Run]) -> None:
    for r in runs:
        d = r.daemon
        if not d or not d.breakdown:
            continue
        total = sum(d.breakdown.get("loop steps", []))
        print(f"\nbreakdown, {LABELS[r.contender]} on {r.engine}, repeat {r.repeat + 1}: run {r.seconds:.2f} s, "
              f"{d.batches} batches, {d.passes} pass{'' if d.passes == 1 else 'es'}, {d.round_trips} statements/round "
              f"trips on the job's connections ({d.round_trips / max(1, d.batches):.1f} per batch)")
        for key in ("loop steps", "batch, start to commit", "next range, waited", "lookup on the job's connection",
                    "BEGIN",
                    "UPDATE, expression once", "UPDATE (apply_range)",
                    "state UPDATE (advance_state)", "COMMIT", "throttle wait", "operator request poll"):
            xs = d.breakdown.get(key, [])
            if xs:
                print(f"  {key:31s} calls {len(xs):6d}  total {sum(xs):8.3f} s  ({100 * sum(xs) / r.seconds:5.1f}% of "
                      f"the run)  median {1000 * statistics.median(xs):8.3f} ms  max {1000 * max(xs):8.1f} ms")
        other = (r.seconds - total - sum(d.breakdown.get("throttle wait", []))
                 - sum(d.breakdown.get("operator request poll", [])))
        share = 100 * other / r.seconds
        print(f"  {'rest (start-up, pass ends)':31s}              total {other:8.3f} s  ({share:5.1f}% of "
              f"the run)")
        print(f"  pass times {', '.join(f'{s:.2f}' for s in d.pass_s)} s; batch sizes {d.sizes[:14]}"
              f"{' ...' if len(d.sizes) > 14 else ''}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Benchmark backfilld against one UPDATE statement (the physical limit) and a hand-written "
                    "keyset loop of 1000-row batches, on SQLite, PostgreSQL and MariaDB; medians of interleaved "
                    "repeats. Full description at the top of this file.",
        epilog=f"Defaults: --rows {DEFAULT_ROWS:,}, --repeat 3. On a 2-core machine the default run (3 engines, "
               "3 contenders, 3 repeats, 1,000,000 rows) takes about 3 minutes, --replicated (2 pairs) about 4; "
               "each scales about linearly with --rows and --repeat.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"rows in the table (default {DEFAULT_ROWS:,})")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each contender; medians are reported (default 3)")
    ap.add_argument("--engines", default=None, help="comma-separated: sqlite,postgresql,mysql (default all three; "
                    "postgresql,mysql with --replicated)")
    ap.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS), help="comma-separated subset of "
                    "single,loop,backfilld,backfilld1 (default single,loop,backfilld; backfilld1 is backfilld with "
                    "throttle.workers = 1)")
    ap.add_argument("--replicated", action="store_true", help="run PostgreSQL and MariaDB on primary/replica pairs "
                    "started by tests/harness/replication.py and report replica lag and catch-up time")
    ap.add_argument("--wide", action="store_true", help=f"rows also carry a {WIDE_MIN_BYTES}-"
                    f"{WIDE_MIN_BYTES + WIDE_SPREAD - 1} byte text column ({WIDE_COLUMN}) that no contender reads "
                    "or writes: the same expression over rows 4-6x as wide")
    ap.add_argument("--readme", action="store_true", help="also print a markdown table for the README")
    ap.add_argument("--breakdown", action="store_true", help="time each step of backfilld's batch loop "
                    "(lookup, BEGIN, UPDATE, state update, COMMIT, throttle) and count its round trips")
    ap.add_argument("--json", metavar="PATH", help="also write every run and the summary as JSON to PATH")
    ap.add_argument("--pg-url", default=os.environ.get("BACKFILLD_TEST_POSTGRESQL_URL",
                                                       "postgresql://postgres@127.0.0.1:5432/test"),
                    help="PostgreSQL to use without --replicated (default: $BACKFILLD_TEST_POSTGRESQL_URL or "
                         "%(default)s)")
    ap.add_argument("--mysql-url", default=os.environ.get("BACKFILLD_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
                    help="MariaDB/MySQL to use without --replicated (default: $BACKFILLD_TEST_MYSQL_URL or "
                         "%(default)s)")
    ap.add_argument("--sqlite-dir", default=None, help="directory for the SQLite file (default: a temporary one)")
    ap.add_argument("--daemon-log", default=os.devnull, help="where backfilld's JSON log lines go (default: "
                    "discarded; they are rendered all the same, as with the CLI)")
    ap.add_argument("--replica-timeout", type=float, default=900.0,
                    help="seconds to wait for a replica to hold every value after a run (default 900)")
    args = ap.parse_args(argv)
    default_engines = "postgresql,mysql" if args.replicated else ",".join(ENGINES)
    args.engines = [e.strip() for e in (args.engines or default_engines).split(",") if e.strip()]
    args.engines = ["mysql" if e == "mariadb" else e for e in args.engines]
    bad = [e for e in args.engines if e not in ENGINES]
    if bad:
        ap.error(f"unknown engine {bad[0]!r}; use {', '.join(ENGINES)}")
    args.contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if any(c not in CONTENDERS for c in args.contenders):
        ap.error(f"--contenders takes {', '.join(CONTENDERS)}")
    if args.rows < LOOP_BATCH or args.repeat < 1:
        ap.error("--rows must be at least 1000 and --repeat at least 1")
    return args


def code_version() -> str:
    """The commit the measured backfilld/ comes from (with "+changes" when its working tree differs)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "backfilld"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "(version unknown)"
    return f"{head}{'+changes' if dirty else ''}" if head else "(version unknown)"


def preload() -> None:
    """Import everything backfilld would import, so that no run pays the first import (the drivers etc.)."""
    import warnings

    import pymysql

    import backfilld.daemon
    import backfilld.engines.mysql
    import backfilld.engines.postgresql
    import backfilld.engines.sqlite
    import backfilld.throttle
    import backfilld.throttle.probes  # noqa: F401
    from backfilld.config import from_dict

    from_dict({"database": {"url": "sqlite:///x.db"}, "jobs": [{"name": "j", "table": "t", "set": {"a": "b"}}]})
    # notes such as "Unknown table" on DROP TABLE IF EXISTS are expected
    warnings.filterwarnings("ignore", category=pymysql.Warning)


async def amain(args: argparse.Namespace) -> int:
    started = time.monotonic()
    preload()
    version = code_version()  # now: the modules just imported are what runs, whatever is committed meanwhile
    tmpdir = Path(args.sqlite_dir) if args.sqlite_dir else Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    sink = open(args.daemon_log, "a")  # noqa: SIM115, ASYNC230 - once, before anything is measured; closed below
    targets: list[Target] = []
    pairs: list[Any] = []
    monitors: dict[str, Monitor] = {}
    runs: list[Run] = []
    try:
        for e in args.engines:
            if e == "sqlite":
                targets.append(SQLiteTarget(str(tmpdir / "bench_backfill.sqlite"), args.rows, args.wide))
                continue
            if args.replicated:
                from tests.harness.replication import MariaDBPair, PostgresPair, replication_available

                reason = replication_available("postgresql" if e == "postgresql" else "mariadb")
                if reason:
                    raise SystemExit(f"--replicated: {reason}")
                log(f"starting a {ENGINE_LABELS[e]} primary/replica pair")
                for attempt in range(3):  # mariadb-install-db fails now and then; a fresh try works
                    pair = (PostgresPair(extra_conf=PG_PAIR_CONF) if e == "postgresql"
                            else MariaDBPair(extra_args=MARIADB_PAIR_ARGS))
                    pairs.append(pair)
                    try:
                        await asyncio.to_thread(pair.start)
                        break
                    except Exception as exc:
                        if attempt == 2:
                            raise
                        log(f"starting the pair failed ({str(exc).splitlines()[0]}); trying again")
                t: Target = (PostgresTarget if e == "postgresql" else MySQLTarget)(pair.primary_url, args.rows,
                                                                                   args.wide)
                t.pair = pair
            else:
                t = (PostgresTarget(args.pg_url, args.rows, args.wide) if e == "postgresql"
                     else MySQLTarget(args.mysql_url, args.rows, args.wide))
            targets.append(t)
        for t in targets:
            t0 = time.monotonic()
            log(f"{t.label}: loading {t.rows:,} {'wide ' if t.wide else ''}rows")
            await t.load()
            if t.pair is not None:
                await asyncio.to_thread(t.sync_replica)
                async with t.conn() as c:
                    await c.execute(f"DROP TABLE IF EXISTS {LAG_HB_TABLE}")
                    await c.execute(f"CREATE TABLE {LAG_HB_TABLE} (id int PRIMARY KEY, ts double precision NOT NULL)")
                    await c.execute(f"INSERT INTO {LAG_HB_TABLE} VALUES (1, {time.time()})")
                await asyncio.to_thread(t.sync_replica)
                monitors[t.engine] = Monitor(t)
            t.load_s = time.monotonic() - t0
            t.table_bytes = await t.size_bytes()
            log(f"{t.label}: loaded in {t.load_s:.1f} s, {t.table_bytes / MIB:,.0f} MiB "
                f"({t.table_bytes / t.rows:.0f} bytes per row with indexes)")
        for rep in range(args.repeat):
            k = rep % len(args.contenders)
            order = args.contenders[k:] + args.contenders[:k]
            for t in targets:
                for c in order:
                    t0 = time.monotonic()
                    await t.reset()
                    await asyncio.to_thread(t.sync_replica)
                    reset_s = time.monotonic() - t0
                    r = await run_one(t, c, args, monitors.get(t.engine), sink)
                    r.repeat, r.reset_s = rep, reset_s
                    runs.append(r)
                    extra = ""
                    if r.daemon:
                        passes = f"{r.daemon.passes} pass{'' if r.daemon.passes == 1 else 'es'}"
                        extra += f", {r.daemon.batches} batches up to {r.daemon.max_size}, {passes}"
                        if r.daemon.paused:
                            extra += f", paused {r.daemon.paused}x {r.daemon.paused_s:.1f} s"
                    if r.lag:
                        done = f"{r.lag['done_s']:.2f}" if r.lag["done_s"] is not None else "timeout"
                        extra += f", max lag {r.lag['max_lag']:.2f} s, replica done {done} s"
                    if r.rss_peak_mib is not None:
                        extra += f", RSS peak {r.rss_peak_mib:.0f} MiB ({fmt_mib(r.rss_growth_mib, signed=True)})"
                    log(f"repeat {rep + 1}/{args.repeat} {t.label:24s} {LABELS[c]:14s} {r.seconds:7.2f} s "
                        f"{r.rows / r.seconds:10,.0f} rows/s  cpu {r.cpu_s:5.2f} s{extra}  (reset {reset_s:.1f} s, "
                        f"verify {r.verify_s:.1f} s)")
        for t in targets:
            mine = [r for r in runs if r.engine == t.engine]
            log(f"{t.label}: load {t.load_s:.1f} s, resets {sum(r.reset_s for r in mine):.1f} s, runs "
                + ", ".join(f"{LABELS[c]} {sum(r.seconds for r in mine if r.contender == c):.1f} s"
                            for c in args.contenders)
                + f", checks {sum(r.verify_s for r in mine):.1f} s")
        summary = summarize(runs, targets)
        total = time.monotonic() - started
        wide = f" with {WIDE_MIN_BYTES}-{WIDE_MIN_BYTES + WIDE_SPREAD - 1} bytes of text each (--wide)"
        meta = (f"{args.rows:,} rows{wide if args.wide else ''}, median of {args.repeat} interleaved runs; "
                f"backfilld {version}; "
                f"{platform.system()} "
                f"{os.cpu_count()} CPUs, Python {platform.python_version()}; "
                f"{'replicated pairs; ' if args.replicated else ''}whole benchmark {total / 60:.1f} min")
        print()
        print(f"backfill benchmark: {meta}")
        print(f"expression: {EXPR['postgresql']} (PostgreSQL), {EXPR['sqlite']} (SQLite, MariaDB)")
        print()
        print_table(summary, args.replicated)
        if args.breakdown:
            print_breakdown(runs)
        if args.readme:
            print()
            print_readme(summary, args.replicated, meta)
        if args.json:
            Path(args.json).write_text(json.dumps({
                "meta": meta,
                "config": {"rows": args.rows, "wide": args.wide, "repeat": args.repeat, "engines": args.engines,
                           "contenders": args.contenders, "replicated": args.replicated, "version": version},
                "load_s": {t.engine: round(t.load_s, 2) for t in targets},
                "summary": summary,
                "runs": [dataclasses.asdict(r) | {"rss_growth_mib": r.rss_growth_mib} for r in runs]},
                indent=1, default=str))
        return 0
    finally:
        for m in monitors.values():
            m.close()
        for t in targets:
            try:
                await t.drop()
            except Exception as exc:  # noqa: BLE001
                log(f"cleanup of {t.label} failed: {exc}")
        for p in pairs:
            await asyncio.to_thread(p.close)
        if not args.sqlite_dir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        if sink is not sys.stderr:
            sink.close()
        log(f"done in {time.monotonic() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        return 130
    except Exception:  # noqa: BLE001 - any failure: its traceback and exit 1, after amain cleaned up
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
