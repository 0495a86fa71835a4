#!/usr/bin/env python3
"""Farm mode against running the same databases one after another, in one process.

    .venv/bin/python benchmarks/bench_farm.py [--dbs 200] [--rows 20000] [--engine sqlite|postgresql]

A farm of --dbs databases (SQLite files, or PostgreSQL databases on the test server), each with a table of
--rows rows and one fill job. Contenders, interleaved and repeated (--repeat), each from the same start:

  sequential  daemon.run of each database's config, one after another (what a loop over configs does, minus
              the process start per database): the baseline
  farm        farm mode with its defaults (max_concurrent 8, max_concurrent_per_host 2: on SQLite every file is
              its own primary, so 8 run at once; on one PostgreSQL server, 2)

Prints the total time, its ratio to the sequential run, and what the process held at its peak: RSS (sampled
every 0.1 s), open file descriptors (connections and SQLite files) and, on PostgreSQL, the server's backfilld
sessions. Every database is checked afterwards (no row left NULL). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from backfilld import daemon, engines, farm, logs
from backfilld.config import from_dict, parse_url

PG_URL = os.environ.get("BACKFILLD_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test")
JOB = {"name": "domain", "table": "users", "set": {"domain": {
    "sqlite": "lower(substr(email, instr(email, '@') + 1))", "postgresql": "lower(split_part(email, '@', 2))"}}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Peak:
    """RSS and open descriptors, sampled every 0.1 s while a contender runs; the server's sessions too."""

    def __init__(self, sessions: Any = None) -> None:
        self.rss = self.fds = self.sessions = 0.0
        self._sessions = sessions
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            self.rss, self.fds = max(self.rss, rss_mib()), max(self.fds, open_fds())
            if self._sessions is not None:
                self.sessions = max(self.sessions, await self._sessions())
            await asyncio.sleep(0.1)

    def __enter__(self) -> Peak:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def base_config(url: str) -> dict[str, Any]:
    return {"database": {"url": url}, "metrics": {"listen": ""}, "logging": {"level": "error"}, "jobs": [JOB]}


class SqliteFarm:
    def __init__(self, n: int, rows: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-farm-"))
        (self.dir / "wikis").mkdir()
        self.paths = [self.dir / "wikis" / f"w{i:04d}.sqlite" for i in range(n)]
        first = self.paths[0]
        con = sqlite3.connect(first)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, domain TEXT)")
        con.executemany("INSERT INTO users (id, email) VALUES (?, ?)",
                        ((i, f"u{i}@Ex{i % 7}.Org") for i in range(1, rows + 1)))
        con.commit()
        con.close()
        for p in self.paths[1:]:
            shutil.copyfile(first, p)

    def farm_config(self) -> Any:
        data = {**base_config(f"sqlite:///{self.dir}/unused.sqlite"), "farm": {"sqlite_glob": "wikis/*.sqlite"}}
        return from_dict(data, base_dir=self.dir)

    def configs(self) -> list[Any]:
        return [from_dict(base_config(f"sqlite:///{p}")) for p in self.paths]

    async def reset(self) -> None:
        for p in self.paths:
            con = sqlite3.connect(p)
            con.execute("UPDATE users SET domain = NULL")
            con.execute("DROP TABLE IF EXISTS backfilld_state")
            con.commit()
            con.close()

    async def left(self) -> int:
        n = 0
        for p in self.paths:
            con = sqlite3.connect(p)
            n += con.execute("SELECT count(*) FROM users WHERE domain IS NULL").fetchone()[0]
            con.close()
        return n

    sessions = None

    async def drop(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class PgFarm:
    def __init__(self, n: int, rows: int) -> None:
        self.n, self.rows = n, rows
        self.names = [f"bench_farm_{i:04d}" for i in range(n)]
        self.admin: Any = None

    def url(self, name: str) -> str:
        return PG_URL.rsplit("/", 1)[0] + "/" + name

    async def create(self) -> None:
        self.admin = engines.create(parse_url(PG_URL))
        await self.admin.connect()
        await self.admin.execute("DROP DATABASE IF EXISTS bench_farm_template")
        await self.admin.execute("CREATE DATABASE bench_farm_template")
        t = engines.create(parse_url(self.url("bench_farm_template")))
        await t.connect()
        await t.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, domain text)")
        await t.execute(f"INSERT INTO users (id, email) SELECT i, 'u' || i || '@Ex' || (i % 7) || '.Org' "
                        f"FROM generate_series(1, {self.rows}) i")
        await t.close()
        for name in self.names:
            await self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await self.admin.execute(f"CREATE DATABASE {name} TEMPLATE bench_farm_template")

    def farm_config(self) -> Any:
        return from_dict({**base_config(PG_URL), "farm": {"databases": self.names}})

    def configs(self) -> list[Any]:
        return [from_dict(base_config(self.url(n))) for n in self.names]

    async def each(self, sql: str) -> int:
        n = 0
        for name in self.names:
            e = engines.create(parse_url(self.url(name)))
            await e.connect()
            try:
                rows = await e.fetch(sql) if sql.startswith("SELECT") else (await e.execute(sql), [])[1]
                n += int(rows[0][0]) if rows else 0
            finally:
                await e.close()
        return n

    async def reset(self) -> None:
        for sql in ("UPDATE users SET domain = NULL", "DROP TABLE IF EXISTS backfilld_state", "VACUUM users"):
            await self.each(sql)

    async def left(self) -> int:
        return await self.each("SELECT count(*) FROM users WHERE domain IS NULL")

    async def sessions(self) -> int:
        rows = await self.admin.fetch("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'backfilld%'")
        return int(rows[0][0])

    async def drop(self) -> None:
        for name in [*self.names, "bench_farm_template"]:
            await self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await self.admin.close()


async def sequential(f: Any) -> None:
    for cfg in f.configs():
        await daemon.run(cfg, daemon.RunOptions())


async def farmed(f: Any) -> None:
    summary = await farm.run_with_endpoints(f.farm_config(), daemon.RunOptions(), shard=None, stop=asyncio.Event())
    assert not summary.failed, summary.failed[:3]


async def amain(args: argparse.Namespace) -> None:
    logs.setup("error", "json")
    log(f"{args.engine}: {args.dbs} databases x {args.rows:,} rows")
    f: Any = SqliteFarm(args.dbs, args.rows) if args.engine == "sqlite" else PgFarm(args.dbs, args.rows)
    if isinstance(f, PgFarm):
        await f.create()
    results: dict[str, list[tuple[float, float, float, float]]] = {}
    try:
        for rep in range(args.repeat):
            for name, fn in (("sequential", sequential), ("farm", farmed))[:: 1 if rep % 2 == 0 else -1]:
                await f.reset()
                with Peak(f.sessions) as peak:
                    t0 = time.perf_counter()
                    await fn(f)
                    took = time.perf_counter() - t0
                left = await f.left()
                if left:
                    raise SystemExit(f"{name}: {left} rows left NULL")
                results.setdefault(name, []).append((took, peak.rss, peak.fds, peak.sessions))
                log(f"repeat {rep + 1}/{args.repeat} {name:<10} {took:7.2f} s  peak RSS {peak.rss:.0f} MiB, "
                    f"{peak.fds:.0f} fds" + (f", {peak.sessions:.0f} server sessions" if f.sessions else ""))
    finally:
        await f.drop()
    base = statistics.median(r[0] for r in results["sequential"])
    print(f"\n{args.engine}: {args.dbs} databases x {args.rows:,} rows, medians of {args.repeat}; "
          "x sequential: the sequential run's time over this one's (same process)")
    print(f"{'contender':<11} {'total s':>8} {'x sequential':>13} {'peak RSS MiB':>13} {'peak fds':>9} "
          f"{'server sessions':>16}")
    for name in ("sequential", "farm"):
        rs = results[name]
        m = statistics.median(r[0] for r in rs)
        print(f"{name:<11} {m:>8.2f} {base / m:>13.2f} {max(r[1] for r in rs):>13.0f} {max(r[2] for r in rs):>9.0f} "
              f"{(max(r[3] for r in rs) if f.sessions else float('nan')):>16.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dbs", type=int, default=200)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    asyncio.run(amain(ap.parse_args()))


if __name__ == "__main__":
    main()
