#!/usr/bin/env python3
"""What a backfill costs the application beside it (issue 13): sysbench oltp_read_write as the live
application on its table sbtest1, and a new nullable column c_digest = md5(c) filled by each contender.

    .venv/bin/python benchmarks/bench_app.py [--rows N] [--threads T] [--time S] [--warmup S] [--repeat K]
                                             [--engines postgresql,mysql] [--replicated] [--readme] [--json PATH]

Scenarios, per engine and repeat (each repeat in a rotated order, engines one after another):

  baseline           sysbench alone, for --time seconds: the reference for every ratio
  triggers_only      sysbench with backfilld's sync triggers installed and no backfill, --time seconds: what
                     the triggers cost the application's writes
  single             one `UPDATE sbtest1 SET c_digest = md5(c)` (autocommit)
  loop               the usual hand-written loop: `UPDATE ... WHERE id > lo AND id <= lo + 1000 AND c_digest
                     IS NULL`, one transaction per batch, no sleep
  backfilld          backfilld.daemon.run() in this process, default settings (only its state and heartbeat
                     table names are the benchmark's, its HTTP endpoints on a free port), the replica in
                     [[replicas]] with --replicated
  backfilld_triggers the same with the job's sync triggers installed first
  idle               backfilld alone, no sysbench: its rate on a quiet server

Each run: the table is put back in the same state (outside every measured window: sync triggers removed,
sbtest1 truncated and refilled from a pristine copy made after `sysbench prepare`, so c_digest is NULL
everywhere; PostgreSQL VACUUM (FREEZE, ANALYZE) + CHECKPOINT, MariaDB ANALYZE TABLE and a wait for InnoDB
purge; the job's state row deleted; triggers installed when the scenario has them), then sysbench starts,
runs --warmup seconds, and the contender starts. The window measured is the contender's run: the single
UPDATE's or the loop's; for backfilld its first pass (the fill; without triggers the job cannot complete while
sysbench keeps inserting rows behind its cursor); --time seconds for the two scenarios without a backfill.
sysbench is stopped once the second holding the window's end is reported. Figures over the window come from
sysbench's per-second reports (tests/harness/sysbench.py: per-interval histograms, so p95 and p99 are exact to
sysbench's 1.8 % buckets), the seconds whose middle lies in the window (a window shorter than a second: the
seconds it overlaps, so at small scale they include time around it): tps and p95/p99 as ratios to the same
repeat's baseline, then the median over repeats (min-max beside it).

Application errors: the transactions sysbench retried in the window, and every deadlock and lock wait
timeout in the server's log during the run, with the statements on both sides (tests/harness/locklog.py;
"with backfill" counts those where one side is the contender's statement: it names c_digest or the state
table). On --replicated pairs the servers are started with the settings that log all of it (and MariaDB's
sql_errlog plugin for lock wait timeouts). On the lone local servers their own logs are read
(--pg-log, MariaDB's @@log_error), innodb_print_all_deadlocks is switched on for the benchmark and back after,
sysbench's PostgreSQL sessions get log_lock_waits through PGOPTIONS; PostgreSQL logs every deadlock with both
statements anyway; lock wait timeouts of MariaDB are not counted there (no sql_errlog).

After sysbench stops, rows wrong: for single and loop, rows whose c_digest is NULL or not md5(c) (sysbench's
old code inserts rows without c_digest and changes c; nothing runs again); for backfilld the documented
procedure: the job finishes its sweep once the application stopped, then `verify` (its missing + wrong shown
as "before fix": rows whose c sysbench changed after the fill, without triggers), `verify --fix`, and
`verify` again ("rows wrong": expected 0).

--replicated: PostgreSQL and MariaDB on primary/replica pairs from tests/harness/replication.py (memory
settings of the local servers, as bench_backfill.py); a separate monitor process writes time.time() on the
primary every 50 ms and reads it back on the replica: max lag over the window.

Lone servers: postgresql://postgres@127.0.0.1:5432 and mysql://root@127.0.0.1:3306 (--pg-url / --mysql-url
name the server; the database is --database, default sbbench, created and dropped at the end).
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
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
for _p in (REPO_ROOT, REPO_ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import bench_backfill as bb

from tests.harness import locklog
from tests.harness import sysbench as sb

DEFAULT_ROWS = 500_000
LOOP_BATCH = 1000
HEARTBEAT_S = 0.05
# sysbench's --time: an upper bound only; every run stops it at the end of its window
SYSBENCH_MAX_S = 7200
PURGE_DONE_BELOW = 20   # InnoDB history length counted as purged (see bench_backfill.py)

TABLE = sb.TABLE
PRISTINE = "bench_app_pristine"
TARGET = "c_digest"
EXPR = "md5(c)"
JOB = "bench_app_digest"
STATE_TABLE = "bench_app_state"
DAEMON_HB_TABLE = "bench_app_daemon_hb"
LAG_HB_TABLE = "bench_app_lag_hb"
MARKERS = [TARGET, STATE_TABLE]

SCENARIOS = ("baseline", "triggers_only", "single", "loop", "backfilld", "backfilld_triggers", "idle")
LABELS = {"baseline": "sysbench alone", "triggers_only": "sync triggers, no backfill",
          "single": "single UPDATE", "loop": f"loop of {LOOP_BATCH}", "backfilld": "backfilld",
          "backfilld_triggers": "backfilld + sync triggers", "idle": "backfilld, no application"}
WITH_TRIGGERS = {"triggers_only", "backfilld_triggers"}
WITH_APP = set(SCENARIOS) - {"idle"}
ENGINES = ("postgresql", "mysql")
ENGINE_LABELS = {"postgresql": "PostgreSQL", "mysql": "MariaDB"}

PG_PAIR_CONF: dict[str, str | int] = {**bb.PG_PAIR_CONF, **locklog.PG_CONF}
MARIADB_PAIR_ARGS = [*bb.MARIADB_PAIR_ARGS, *locklog.MARIADB_ARGS]

log = bb.log


# ---------------------------------------------------------------------------------------------- lag monitor


def _lag_main(pipe: Any, kind: str, primary_url: str, replica_url: str) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_lag(pipe, kind, primary_url, replica_url))


async def _lag(pipe: Any, kind: str, primary_url: str, replica_url: str) -> None:
    opener = bb.PgConn.open if kind == "postgresql" else bb.MyConn.open
    ph = "$1" if kind == "postgresql" else "%s"
    prim, rep = await opener(primary_url), await opener(replica_url)
    st: dict[str, Any] = {"measuring": False, "max_lag": 0.0, "latest": None, "samples": 0}

    async def every(step: Any) -> None:
        while True:
            t0 = time.monotonic()
            with contextlib.suppress(Exception):
                await step()
            await asyncio.sleep(max(0.0, HEARTBEAT_S - (time.monotonic() - t0)))

    async def write() -> None:
        await prim.execute(f"UPDATE {LAG_HB_TABLE} SET ts = {ph} WHERE id = 1", time.time())

    async def read() -> None:
        ts = await rep.scalar(f"SELECT ts FROM {LAG_HB_TABLE} WHERE id = 1")
        if ts is not None:
            lag = max(0.0, time.time() - float(ts))
            st["latest"] = lag
            if st["measuring"]:
                st["samples"] += 1
                st["max_lag"] = max(st["max_lag"], lag)

    tasks = [asyncio.create_task(every(write)), asyncio.create_task(every(read))]
    loop = asyncio.get_running_loop()
    try:
        while True:
            cmd = await loop.run_in_executor(None, pipe.recv)
            if cmd == "start":
                st.update(measuring=True, max_lag=0.0, samples=0)
                pipe.send("ok")
            elif cmd == "finish":
                await asyncio.sleep(2 * HEARTBEAT_S)   # a lag that peaked at the very end is read too
                st["measuring"] = False
                pipe.send({"max_lag_s": st["max_lag"], "samples": st["samples"]})
            elif cmd == "lag":
                pipe.send(st["latest"])
            elif cmd == "quit":
                break
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in (prim, rep):
            with contextlib.suppress(Exception):
                await c.close()
        pipe.send("bye")


class LagMonitor:
    def __init__(self, kind: str, pair: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_lag_main, args=(child, kind, pair.primary_url, pair.replica_url),
                                daemon=True, name=f"lag-monitor-{kind}")
        self.proc.start()

    def call(self, cmd: str, timeout: float = 60.0) -> Any:
        self.pipe.send(cmd)
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


# ---------------------------------------------------------------------------------------------- one engine


# driver errors that are collisions: asyncpg's exception names, MySQL error codes
PG_COLLISIONS = {"DeadlockDetectedError": "deadlock", "LockNotAvailableError": "lock_timeout"}
MY_COLLISIONS = {1213: "deadlock", 1205: "lock_timeout"}


def collision_kind(exc: BaseException) -> str | None:
    if type(exc).__name__ in PG_COLLISIONS:
        return PG_COLLISIONS[type(exc).__name__]
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
    return MY_COLLISIONS.get(code) if code is not None else None


def with_database(url: str, database: str) -> str:
    u = urlsplit(url)
    return urlunsplit((u.scheme, u.netloc, "/" + database, "", ""))


class Server:
    """One engine's server (lone or a pair's primary): the table, its resets, the contenders, the checks."""

    def __init__(self, engine: str, url: str, rows: int, pair: Any = None) -> None:
        self.engine, self.url, self.rows, self.pair = engine, url, rows, pair
        self.target = sb.SysbenchTarget.from_url(url)
        self.serverlog: locklog.ServerLog | None = None
        self.monitor: LagMonitor | None = None
        self.restore: list[str] = []   # statements that put the server's own settings back at the end
        self.pg_options: str | None = None

    @property
    def label(self) -> str:
        return ENGINE_LABELS[self.engine] + (" (replicated)" if self.pair is not None else "")

    async def connect(self) -> bb.Conn:
        return await (bb.PgConn.open(self.url) if self.engine == "postgresql" else bb.MyConn.open(self.url))

    @contextlib.asynccontextmanager
    async def conn(self) -> Any:
        c = await self.connect()
        try:
            yield c
        finally:
            await c.close()

    def sync_replica(self) -> None:
        if self.pair is not None:
            self.pair.wait_caught_up(1800)

    def config(self) -> Any:
        from backfilld.config import from_dict

        data: dict[str, Any] = {
            "database": {"url": self.url},
            "state": {"table": STATE_TABLE, "heartbeat_table": DAEMON_HB_TABLE},
            "metrics": {"listen": "127.0.0.1:0"},
            "jobs": [{"name": JOB, "table": TABLE, "set": {TARGET: EXPR}}],
        }
        if self.pair is not None:
            data["replicas"] = [{"url": self.pair.replica_url, "name": "replica"}]
        return from_dict(data, "bench")

    # --- set-up and reset
    async def load(self) -> None:
        await asyncio.to_thread(sb.prepare, self.target, self.rows)
        async with self.conn() as c:
            await c.execute(f"ALTER TABLE {TABLE} ADD COLUMN {TARGET} VARCHAR(32) NULL")
            await c.execute(f"DROP TABLE IF EXISTS {PRISTINE}")
            await c.execute(f"CREATE TABLE {PRISTINE} AS SELECT id, k, c, pad FROM {TABLE}")
            for t in (STATE_TABLE, DAEMON_HB_TABLE):
                await c.execute(f"DROP TABLE IF EXISTS {t}")
        await asyncio.to_thread(self.sync_replica)

    async def reset(self) -> None:
        from backfilld import daemon

        await daemon.triggers(self.config(), JOB, "remove")
        async with self.conn() as c:
            await c.execute(f"TRUNCATE TABLE {TABLE}")
            await c.execute(f"INSERT INTO {TABLE} (id, k, c, pad) SELECT id, k, c, pad FROM {PRISTINE}")
            if self.engine == "postgresql":
                await c.execute(f"VACUUM (FREEZE, ANALYZE) {TABLE}")
                await c.execute("CHECKPOINT")
            else:
                await c.execute(f"ANALYZE TABLE {TABLE}")
            with contextlib.suppress(Exception):   # no state table before backfilld's first run
                mark = "$1" if self.engine == "postgresql" else "%s"
                await c.execute(f"DELETE FROM {STATE_TABLE} WHERE job = {mark}",
                                JOB)
        if self.engine == "mysql":
            await self.wait_purged()
        await asyncio.to_thread(self.sync_replica)

    async def wait_purged(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        async with self.conn() as c:
            while time.monotonic() < deadline:
                n = await c.scalar("SELECT `COUNT` FROM information_schema.INNODB_METRICS "
                                   "WHERE NAME = 'trx_rseg_history_len'")
                if n is None or int(n) <= PURGE_DONE_BELOW:
                    return
                await asyncio.sleep(0.2)
        log(f"{self.label}: InnoDB purge still behind after {timeout:.0f} s; going on")

    # --- contenders: each statement the server rolls back on a deadlock or lock wait timeout is run again at
    # once, as its author would, and counted (retries)
    async def _retrying(self, c: bb.Conn, sql: str, args: tuple[Any, ...], retries: dict[str, int]) -> int:
        while True:
            try:
                return await c.execute(sql, *args)
            except Exception as exc:
                kind = collision_kind(exc)
                if kind is None:
                    raise
                retries[kind] = retries.get(kind, 0) + 1

    async def single(self, retries: dict[str, int]) -> int:
        async with self.conn() as c:
            return await self._retrying(c, f"UPDATE {TABLE} SET {TARGET} = {EXPR}", (), retries)

    async def loop(self, retries: dict[str, int]) -> int:
        p1, p2 = ("$1", "$2") if self.engine == "postgresql" else ("%s", "%s")
        sql = f"UPDATE {TABLE} SET {TARGET} = {EXPR} WHERE id > {p1} AND id <= {p2} AND {TARGET} IS NULL"
        done = 0
        async with self.conn() as c:
            lo, hi_end = (await c.fetch(f"SELECT min(id), max(id) FROM {TABLE}"))[0]
            lo = int(lo) - 1
            while lo < int(hi_end):   # autocommit: one transaction per batch
                done += await self._retrying(c, sql, (lo, lo + LOOP_BATCH), retries)
                lo += LOOP_BATCH
        return done

    async def wrong_rows(self) -> tuple[int, int]:
        """(rows with c_digest NULL, rows whose c_digest is not md5(c), NULL included)."""
        if self.engine == "postgresql":
            sql = (f"SELECT count(*) FILTER (WHERE {TARGET} IS NULL), "
                   f"count(*) FILTER (WHERE {TARGET} IS DISTINCT FROM {EXPR}) FROM {TABLE}")
        else:
            sql = f"SELECT SUM({TARGET} IS NULL), SUM(NOT ({TARGET} <=> {EXPR})) FROM {TABLE}"
        async with self.conn() as c:
            missing, wrong = (await c.fetch(sql))[0]
        return int(missing or 0), int(wrong or 0)

    # --- the end
    async def drop(self) -> None:
        from backfilld import daemon

        with contextlib.suppress(Exception):
            await daemon.triggers(self.config(), JOB, "remove")
        async with self.conn() as c:
            for t in (TABLE, PRISTINE, STATE_TABLE, DAEMON_HB_TABLE, LAG_HB_TABLE):
                await c.execute(f"DROP TABLE IF EXISTS {t}")


async def lone_server(engine: str, base_url: str, database: str, rows: int, pg_log: str) -> Server:
    """The local server, a database of the benchmark's own, and its log."""
    admin = with_database(base_url, "postgres" if engine == "postgresql" else "mysql")
    c = await (bb.PgConn.open(admin) if engine == "postgresql" else bb.MyConn.open(admin))
    try:
        if engine == "postgresql":
            await c.execute(f'DROP DATABASE IF EXISTS "{database}"')
            await c.execute(f'CREATE DATABASE "{database}"')
        else:
            await c.execute(f"DROP DATABASE IF EXISTS `{database}`")
            await c.execute(f"CREATE DATABASE `{database}`")
    finally:
        await c.close()
    s = Server(engine, with_database(base_url, database), rows)
    async with s.conn() as c:
        if engine == "postgresql":
            s.pg_options = "-c log_lock_waits=on"
            path = Path(pg_log)
        else:
            was = await c.scalar("SELECT @@GLOBAL.innodb_print_all_deadlocks")
            await c.execute("SET GLOBAL innodb_print_all_deadlocks = ON")
            s.restore.append(f"SET GLOBAL innodb_print_all_deadlocks = {int(was)}")
            err, datadir = (await c.fetch("SELECT @@log_error, @@datadir"))[0]
            path = Path(err) if err and os.path.isabs(err) else Path(datadir) / (err or "")
    if path.is_file() and os.access(path, os.R_OK):
        s.serverlog = locklog.ServerLog(engine, [path], MARKERS)
    else:
        log(f"{s.label}: the server's log {path} cannot be read: no attribution of application errors")
    return s


async def drop_lone(s: Server, database: str) -> None:
    admin = with_database(s.url, "postgres" if s.engine == "postgresql" else "mysql")
    c = await (bb.PgConn.open(admin) if s.engine == "postgresql" else bb.MyConn.open(admin))
    try:
        for stmt in s.restore:
            await c.execute(stmt)
        if s.engine == "postgresql":
            await c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
                            "AND pid <> pg_backend_pid()", database)
            await c.execute(f'DROP DATABASE IF EXISTS "{database}"')
        else:
            await c.execute(f"DROP DATABASE IF EXISTS `{database}`")
    finally:
        await c.close()


# ---------------------------------------------------------------------------------------------- one run


@dataclasses.dataclass
class Run:
    engine: str
    scenario: str
    repeat: int
    seconds: float = 0.0              # the window: the contender's run (fill pass for backfilld)
    rows: int = 0                     # rows the contender wrote in the window
    window: dict[str, Any] | None = None
    app_errors: int = 0               # transactions sysbench retried in the window
    collisions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    other_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    max_lag_s: float | None = None
    missing_after: int | None = None  # after the application stopped (backfilld: after its sweep)
    wrong_after: int | None = None
    wrong_before_fix: int | None = None
    job_completed_s: float | None = None
    retries: dict[str, int] = dataclasses.field(default_factory=dict)   # the contender's own, by kind

    @property
    def rows_per_s(self) -> float | None:
        return self.rows / self.seconds if self.seconds > 0 and self.rows else None


class DaemonEvents:
    """A structlog processor keeping backfilld's events; notes when the first pass (the fill) ended."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.fill_done = asyncio.Event()
        self.fill_rows = 0
        self.fill_at = 0.0

    def __call__(self, _logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("event") in ("pass_finished", "batch_retry", "job_completed", "job_failed",
                                  "throttle_paused", "throttle_resumed", "workers_limited"):
            self.events.append(dict(event))
        if event.get("event") == "pass_finished" and event.get("pass_no") == 1 and not self.fill_done.is_set():
            self.fill_rows, self.fill_at = int(event.get("rows", 0)), time.time()
            self.fill_done.set()
        return event


async def run_one(s: Server, scenario: str, rep: int, args: argparse.Namespace, sink: Any) -> Run:
    from backfilld import daemon

    r = Run(s.engine, scenario, rep)
    await s.reset()
    cfg = s.config()
    if scenario in WITH_TRIGGERS:
        await daemon.triggers(cfg, JOB, "install")
        await asyncio.to_thread(s.sync_replica)
    if s.monitor is not None:
        await asyncio.to_thread(s.monitor.wait_quiet)
    mark = s.serverlog.mark() if s.serverlog else None
    watch = locklog.LockWatch(s.engine, s.url).start()
    app: sb.SysbenchRun | None = None
    job: asyncio.Task[Any] | None = None
    events = DaemonEvents()
    try:
        if scenario in WITH_APP:
            app = sb.start(s.target, threads=args.threads, time_s=SYSBENCH_MAX_S, rows=s.rows,
                           pg_options=s.pg_options)
            await asyncio.to_thread(app.wait_started)
            await asyncio.sleep(args.warmup)
        if s.monitor is not None:
            s.monitor.call("start")
        t0 = time.time()
        if scenario in ("baseline", "triggers_only"):
            await asyncio.sleep(args.time)
        elif scenario == "single":
            r.rows = await s.single(r.retries)
        elif scenario == "loop":
            r.rows = await s.loop(r.retries)
        else:
            bb.setup_daemon_logging(events, sink)  # type: ignore[arg-type]
            job = asyncio.create_task(daemon.run(cfg, daemon.RunOptions(restart=True)))
            filled = asyncio.create_task(events.fill_done.wait())
            await asyncio.wait({job, filled}, return_when=asyncio.FIRST_COMPLETED)
            if not events.fill_done.is_set():
                filled.cancel()
                job.result()   # raises what failed
                raise RuntimeError("backfilld ended before its first pass finished")
            r.rows = events.fill_rows
        t1 = events.fill_at if scenario.startswith("backfilld") or scenario == "idle" else time.time()
        r.seconds = t1 - t0
        if s.monitor is not None:
            r.max_lag_s = s.monitor.call("finish")["max_lag_s"]
        if app is not None:
            # the second holding the window's end is reported before sysbench stops
            await asyncio.to_thread(app.wait_reported, t1, 3 * sb.REPORT_INTERVAL_S)
            res = await asyncio.to_thread(app.stop_and_collect)
            w = res.window(t0, t1)
            r.window, r.app_errors = w.as_dict(), w.errors
        if job is not None:
            # the documented procedure: the job finishes its sweep now that the application stopped
            [state] = await asyncio.wait_for(job, args.job_timeout)
            if state.status != "completed":
                raise RuntimeError(f"backfilld ended with status {state.status}: {state.error}")
            r.job_completed_s = time.time() - t0
            for e in events.events:
                if e["event"] == "batch_retry":
                    r.retries[e.get("kind", "?")] = r.retries.get(e.get("kind", "?"), 0) + 1
    finally:
        if app is not None:
            app.stop()
        if job is not None and not job.done():
            job.cancel()
            with contextlib.suppress(BaseException):
                await job
        watch.stop()
    if s.serverlog is not None and mark is not None:
        report = await asyncio.to_thread(s.serverlog.report, mark, watch)
        r.collisions = [c.as_dict() for c in report.collisions]
        r.other_errors = report.other_errors
    if scenario in ("single", "loop"):
        r.missing_after, r.wrong_after = await s.wrong_rows()
    elif job is not None:
        [first] = await daemon.verify(cfg, None, fix=False)
        r.wrong_before_fix = first.missing + first.wrong
        r.missing_after = first.missing
        if not first.clean:
            await daemon.verify(cfg, None, fix=True)
            [final] = await daemon.verify(cfg, None, fix=False)
            r.wrong_after = final.missing + final.wrong
        else:
            r.wrong_after = 0
    return r


# ---------------------------------------------------------------------------------------------- report


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def spread(xs: list[float]) -> tuple[float, float] | None:
    return (min(xs), max(xs)) if xs else None


def summarize(runs: list[Run], servers: list[Server]) -> list[dict[str, Any]]:
    out = []
    for s in servers:
        mine = [r for r in runs if r.engine == s.engine]
        base = {r.repeat: r.window for r in mine if r.scenario == "baseline" and r.window}
        for sc in SCENARIOS:
            rs = [r for r in mine if r.scenario == sc]
            if not rs:
                continue
            ratios: dict[str, list[float]] = {"tps": [], "p95": [], "p99": []}
            for r in rs:
                b = base.get(r.repeat)
                if not (r.window and b):
                    continue
                for key, field in (("tps", "tps"), ("p95", "p95_ms"), ("p99", "p99_ms")):
                    if r.window.get(field) and b.get(field):
                        ratios[key].append(r.window[field] / b[field])
            coll = [c for r in rs for c in r.collisions]
            with_bf = [c for c in coll if c["involves_backfilld"]]
            pairs: dict[str, int] = {}
            for c in with_bf:
                victim = " ".join((c["victim"]["statement"] or "?").split())[:80]
                other = "; ".join(" ".join((o["statement"] or "?").split())[:80] for o in c["others"]) or "?"
                key = f"{c['kind']}: {victim} <-> {other}"
                pairs[key] = pairs.get(key, 0) + 1
            rates = [r.rows_per_s for r in rs if r.rows_per_s]
            row: dict[str, Any] = {
                "engine": s.label, "scenario": sc, "label": LABELS[sc], "runs": len(rs),
                "tps": med([r.window["tps"] for r in rs if r.window]),
                "p95_ms": med([r.window["p95_ms"] for r in rs if r.window and r.window["p95_ms"]]),
                "p99_ms": med([r.window["p99_ms"] for r in rs if r.window and r.window["p99_ms"]]),
                "tps_ratio": med(ratios["tps"]), "tps_ratio_range": spread(ratios["tps"]),
                "p95_ratio": med(ratios["p95"]), "p95_ratio_range": spread(ratios["p95"]),
                "p99_ratio": med(ratios["p99"]), "p99_ratio_range": spread(ratios["p99"]),
                "app_errors": med([float(r.app_errors) for r in rs]) if sc in WITH_APP else None,
                "deadlocks": med([float(sum(c["kind"] == "deadlock" for c in r.collisions)) for r in rs]),
                "lock_timeouts": med([float(sum(c["kind"] == "lock_timeout" for c in r.collisions)) for r in rs]),
                "collisions_with_backfill": med([float(sum(c["involves_backfilld"] for c in r.collisions))
                                                 for r in rs]),
                "collided_statements": pairs,
                "seconds": med([r.seconds for r in rs]) if sc not in ("baseline", "triggers_only") else None,
                "seconds_range": spread([r.seconds for r in rs]),
                "rows_per_s": med(rates), "rows_per_s_range": spread(rates),
                "max_lag_s": med([r.max_lag_s for r in rs if r.max_lag_s is not None]),
                "wrong_after": med([float(r.wrong_after) for r in rs if r.wrong_after is not None]),
                "wrong_before_fix": med([float(r.wrong_before_fix) for r in rs if r.wrong_before_fix is not None]),
                "retries": {k: sum(r.retries.get(k, 0) for r in rs) for k in {k for r in rs for k in r.retries}},
                "attributed": s.serverlog is not None,
            }
            out.append(row)
    return out


def fx(v: float | None, fmt: str = "{:.2f}", rng: tuple[float, float] | None = None) -> str:
    if v is None:
        return "-"
    text = fmt.format(v)
    if rng is not None and rng[0] != rng[1]:
        text += f" ({fmt.format(rng[0])}-{fmt.format(rng[1])})"
    return text


def table_rows(summary: list[dict[str, Any]], replicated: bool) -> tuple[list[str], list[list[str]]]:
    head = ["engine", "scenario", "tps x", "p95 x", "p99 x", "app errors", "with backfill", "duration s",
            "rows/s", "rows wrong"]
    if replicated:
        head.append("max lag s")
    lines = []
    for r in summary:
        wrong = fx(r["wrong_after"], "{:.0f}")
        if r["wrong_before_fix"]:
            wrong += f" ({r['wrong_before_fix']:.0f} before fix)"
        line = [r["engine"], r["label"], fx(r["tps_ratio"], rng=r["tps_ratio_range"]),
                fx(r["p95_ratio"], rng=r["p95_ratio_range"]), fx(r["p99_ratio"], rng=r["p99_ratio_range"]),
                fx(r["app_errors"], "{:.0f}"),
                fx(r["collisions_with_backfill"], "{:.0f}") if r["attributed"] else "n/a",
                fx(r["seconds"], rng=r["seconds_range"]), fx(r["rows_per_s"], "{:,.0f}"), wrong]
        if replicated:
            line.append(fx(r["max_lag_s"]))
        lines.append(line)
    return head, lines


def print_table(summary: list[dict[str, Any]], replicated: bool) -> None:
    head, lines = table_rows(summary, replicated)
    rows = [head, *lines]
    widths = [max(len(line[i]) for line in rows) for i in range(len(head))]
    for i, line in enumerate(rows):
        print("  ".join(v.ljust(w) if j < 2 else v.rjust(w) for j, (v, w) in enumerate(zip(line, widths, strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for engine in dict.fromkeys(r["engine"] for r in summary):
        rate = {r["scenario"]: r["rows_per_s"] for r in summary if r["engine"] == engine}
        if rate.get("idle") and rate.get("backfilld"):
            loop = f", the loop under load {rate['loop']:,.0f}" if rate.get("loop") else ""
            print(f"{engine}: backfilld rows/s alone {rate['idle']:,.0f}, under load {rate['backfilld']:,.0f} "
                  f"({rate['backfilld'] / rate['idle']:.2f} x alone){loop}")
    for r in summary:
        if r["collided_statements"]:
            print(f"{r['engine']}, {r['label']}: collisions with the backfill's statements (median "
                  f"{r['collisions_with_backfill']:.0f} a run; all runs):")
            for k, n in sorted(r["collided_statements"].items(), key=lambda kv: -kv[1]):
                print(f"  {n:4d}x {k}")
        if r["retries"]:
            print(f"{r['engine']}, {r['label']}: the contender's statements rolled back and run again (all runs): "
                  f"{r['retries']}")


def print_readme(summary: list[dict[str, Any]], replicated: bool, meta: str) -> None:
    head, lines = table_rows(summary, replicated)
    print("<!-- generated by benchmarks/bench_app.py --readme -->")
    print(f"| {' | '.join(head)} |")
    print("|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|")
    for line in lines:
        print(f"| {' | '.join(line)} |")
    print()
    print(meta)


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="What a backfill costs the application: sysbench oltp_read_write beside one UPDATE, a "
                    "hand-written loop, backfilld and backfilld with sync triggers, on PostgreSQL and MariaDB. "
                    "Full description at the top of this file.",
        epilog="Quick check: --rows 20000 --repeat 1 --time 5 --warmup 2. Full size (defaults) takes long: run it "
               "under `flock /tmp/backfilld-bench.lock` on a machine doing nothing else.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"rows in sbtest1 (default {DEFAULT_ROWS:,})")
    ap.add_argument("--threads", type=int, default=4, help="sysbench threads (default 4)")
    ap.add_argument("--time", type=float, default=30.0, help="seconds measured for sysbench alone and for "
                    "sysbench with the triggers only (default 30)")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds sysbench runs before each contender "
                    "starts (default 5)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each scenario; medians reported (default 3)")
    ap.add_argument("--engines", default="postgresql,mysql", help="comma-separated: postgresql,mysql")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated subset of "
                    f"{','.join(SCENARIOS)} (baseline is always run: ratios need it)")
    ap.add_argument("--replicated", action="store_true", help="primary/replica pairs from "
                    "tests/harness/replication.py instead of the local servers; reports replica lag")
    ap.add_argument("--readme", action="store_true", help="also print a markdown table")
    ap.add_argument("--json", metavar="PATH", help="also write every run and the summary as JSON to PATH")
    ap.add_argument("--pg-url", default=os.environ.get("BACKFILLD_TEST_POSTGRESQL_URL",
                                                       "postgresql://postgres@127.0.0.1:5432/test"),
                    help="the local PostgreSQL (its database part is replaced by --database)")
    ap.add_argument("--mysql-url", default=os.environ.get("BACKFILLD_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
                    help="the local MariaDB (its database part is replaced by --database)")
    ap.add_argument("--database", default="sbbench", help="database created on the local servers and dropped "
                    "at the end (default sbbench)")
    ap.add_argument("--pg-log", default="/var/log/postgresql/postgresql-15-main.log",
                    help="the local PostgreSQL's log, read for the attribution (default %(default)s)")
    ap.add_argument("--daemon-log", default=os.devnull, help="where backfilld's JSON log lines go")
    ap.add_argument("--job-timeout", type=float, default=1800.0, help="seconds backfilld may take to finish "
                    "its sweep after sysbench stopped (default 1800)")
    args = ap.parse_args(argv)
    args.engines = ["mysql" if e.strip() == "mariadb" else e.strip() for e in args.engines.split(",") if e.strip()]
    if any(e not in ENGINES for e in args.engines):
        ap.error(f"--engines takes {', '.join(ENGINES)}")
    args.scenarios = [c.strip() for c in args.scenarios.split(",") if c.strip()]
    if any(c not in SCENARIOS for c in args.scenarios):
        ap.error(f"--scenarios takes {', '.join(SCENARIOS)}")
    if "baseline" not in args.scenarios:
        args.scenarios.insert(0, "baseline")
    if args.rows < LOOP_BATCH or args.repeat < 1 or args.threads < 1 or args.time <= 0 or args.warmup < 0:
        ap.error("--rows must be at least 1000, --repeat and --threads at least 1, --time positive")
    return args


async def start_pair(engine: str) -> Any:
    from tests.harness.replication import MariaDBPair, PostgresPair, replication_available

    reason = replication_available(engine)
    if reason:
        raise SystemExit(f"--replicated: {reason}")
    log(f"starting a {ENGINE_LABELS[engine]} primary/replica pair")
    for attempt in range(3):   # mariadb-install-db fails now and then; a fresh try works
        pair = (PostgresPair(extra_conf=PG_PAIR_CONF) if engine == "postgresql"
                else MariaDBPair(extra_args=MARIADB_PAIR_ARGS))
        try:
            await asyncio.to_thread(pair.start)
            return pair
        except Exception as exc:
            await asyncio.to_thread(pair.close)
            if attempt == 2:
                raise
            log(f"starting the pair failed ({str(exc).splitlines()[0]}); trying again")
    raise AssertionError("unreachable")


async def amain(args: argparse.Namespace) -> int:
    started = time.monotonic()
    reason = sb.sysbench_available()
    if reason:
        raise SystemExit(reason)
    bb.preload()
    version = bb.code_version()
    sink = open(args.daemon_log, "a")  # noqa: SIM115, ASYNC230 - once, before anything runs
    bb.setup_daemon_logging(DaemonEvents(), sink)  # type: ignore[arg-type]  # triggers and verify log too
    servers: list[Server] = []
    pairs: list[Any] = []
    runs: list[Run] = []
    try:
        for e in args.engines:
            if args.replicated:
                pair = await start_pair(e)
                pairs.append(pair)
                s = Server(e, pair.primary_url, args.rows, pair)
                s.serverlog = locklog.ServerLog.of_pair(pair, MARKERS)
            else:
                s = await lone_server(e, args.pg_url if e == "postgresql" else args.mysql_url, args.database,
                                      args.rows, args.pg_log)
            servers.append(s)
            t0 = time.monotonic()
            log(f"{s.label}: sysbench prepare, {args.rows:,} rows")
            await s.load()
            if s.pair is not None:
                async with s.conn() as c:
                    await c.execute(f"DROP TABLE IF EXISTS {LAG_HB_TABLE}")
                    await c.execute(f"CREATE TABLE {LAG_HB_TABLE} (id int PRIMARY KEY, ts double precision NOT NULL)")
                    await c.execute(f"INSERT INTO {LAG_HB_TABLE} VALUES (1, {time.time()})")
                await asyncio.to_thread(s.sync_replica)
                s.monitor = LagMonitor(e, s.pair)
            log(f"{s.label}: loaded in {time.monotonic() - t0:.1f} s")
        for rep in range(args.repeat):
            k = rep % len(args.scenarios)
            order = args.scenarios[k:] + args.scenarios[:k]
            for s in servers:
                for sc in order:
                    r = await run_one(s, sc, rep, args, sink)
                    runs.append(r)
                    w = r.window or {}
                    bits = [f"{r.seconds:6.2f} s"]
                    if r.rows_per_s:
                        bits.append(f"{r.rows_per_s:9,.0f} rows/s")
                    if w:
                        bits.append(f"tps {w['tps']:7.1f} p95 {fx(w['p95_ms'])} p99 {fx(w['p99_ms'])} ms")
                        bits.append(f"app errors {r.app_errors}")
                    if r.collisions:
                        with_backfill = sum(c["involves_backfilld"] for c in r.collisions)
                        bits.append(f"collisions {len(r.collisions)} ({with_backfill} "
                                    "with the backfill)")
                    if r.max_lag_s is not None:
                        bits.append(f"max lag {r.max_lag_s:.2f} s")
                    if r.wrong_after is not None:
                        bits.append(f"rows wrong {r.wrong_after}"
                                    + (f" ({r.wrong_before_fix} before fix)" if r.wrong_before_fix else ""))
                    if r.retries:
                        bits.append(f"retries {r.retries}")
                    log(f"repeat {rep + 1}/{args.repeat} {s.label:24s} {LABELS[sc]:27s} " + ", ".join(bits))
        summary = summarize(runs, servers)
        total = time.monotonic() - started
        meta = (f"sysbench oltp_read_write, {args.threads} threads, {args.rows:,} rows, default (special) "
                f"distribution, {args.warmup:g} s warm-up; baseline windows {args.time:g} s; median of "
                f"{args.repeat} interleaved runs (min-max); ratios to sysbench alone over the backfill's window; "
                f"backfilld {version}; {platform.system()} {os.cpu_count()} CPUs; "
                f"{'replicated pairs' if args.replicated else 'local servers'}; whole benchmark {total / 60:.1f} min")
        print()
        print(f"application benchmark: {meta}")
        print()
        print_table(summary, args.replicated)
        if args.readme:
            print()
            print_readme(summary, args.replicated, meta)
        if args.json:
            Path(args.json).write_text(json.dumps({"meta": meta, "summary": summary,
                                                   "runs": [dataclasses.asdict(r) for r in runs]},
                                                  indent=1, default=str))
        return 0
    finally:
        for s in servers:
            if s.monitor is not None:
                s.monitor.close()
            try:
                if s.pair is None:
                    await drop_lone(s, args.database)
                else:
                    await s.drop()
            except Exception as exc:  # noqa: BLE001
                log(f"cleanup of {s.label} failed: {exc}")
        for p in pairs:
            await asyncio.to_thread(p.close)
        sink.close()
        log(f"done in {time.monotonic() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        return 130
    except Exception:  # noqa: BLE001 - the traceback, then exit 1
        traceback.print_exc()
        return 1


if __name__ == "__main__":
    sys.exit(main())
