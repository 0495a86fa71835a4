"""Farm mode as a process on real databases: 50 SQLite files, 30 PostgreSQL databases, 20 MariaDB databases (one
config each, and one mixed config of [[farm.hosts]]), one of them broken; kill -9 mid-farm and run again;
three shards covering each database exactly once."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from backfilld import engines
from backfilld.config import parse_url
from tests.acceptance.test_cli import backfilld, spawn
from tests.conftest import MYSQL_URL, PG_URL, require_server

ROWS = 2000
EXPR = {"postgresql": "lower(split_part(email, '@', 2))", "mysql": "lower(substring_index(email, '@', -1))",
        "sqlite": "lower(substr(email, instr(email, '@') + 1))"}
SERVER = {"postgresql": PG_URL, "mysql": MYSQL_URL}


def table_sql(engine: str, broken: bool = False) -> list[str]:
    cols = "id BIGINT NOT NULL PRIMARY KEY, email VARCHAR(100) NOT NULL" + ("" if broken else ", domain VARCHAR(100)")
    fill = {"postgresql": f"INSERT INTO users (id, email) SELECT i, 'u' || i || '@Ex' || (i % 7) || '.Org' FROM "
                          f"generate_series(1, {ROWS}) AS i",
            "mysql": f"INSERT INTO users (id, email) SELECT seq, CONCAT('u', seq, '@Ex', seq % 7, '.Org') FROM "
                     f"seq_1_to_{ROWS}",
            "sqlite": f"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < {ROWS}) "
                      "INSERT INTO users (id, email) SELECT i, 'u' || i || '@Ex' || (i % 7) || '.Org' FROM c"}[engine]
    return [f"CREATE TABLE users ({cols})", fill]


def with_db(url: str, name: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


class ServerFarm:
    """n databases on one server, named <prefix>_<i>, each with a users table (database `broken` without the
    target column); dropped afterwards."""

    def __init__(self, engine: str, n: int, broken: int | None) -> None:
        self.engine, self.n, self.broken = engine, n, broken
        self.prefix = f"bffarm_{uuid.uuid4().hex[:6]}"
        self.names = [f"{self.prefix}_{i}" for i in range(n)]

    async def create(self) -> None:
        require_server(SERVER[self.engine])
        admin = engines.create(parse_url(SERVER[self.engine]))
        await admin.connect()
        try:
            for name in self.names:
                await admin.execute(admin.dialect.database_ddl(name)[0])
        finally:
            await admin.close()
        for i, name in enumerate(self.names):
            e = engines.create(parse_url(with_db(SERVER[self.engine], name)))
            await e.connect()
            try:
                for stmt in table_sql(self.engine, broken=i == self.broken):
                    await e.execute(stmt)
            finally:
                await e.close()

    async def drop(self) -> None:
        admin = engines.create(parse_url(SERVER[self.engine]))
        await admin.connect()
        try:
            for name in self.names:
                await admin.execute(admin.dialect.database_ddl(name)[1])
        finally:
            await admin.close()

    async def wrong(self, name: str) -> int:
        e = engines.create(parse_url(with_db(SERVER[self.engine], name)))
        await e.connect()
        try:
            rows = await e.fetch("SELECT email, domain FROM users")
        finally:
            await e.close()
        return sum(1 for email, domain in rows if domain != email.split("@")[1].lower()) + (ROWS - len(rows))


@contextlib.asynccontextmanager
async def server_farm(engine: str, n: int, broken: int) -> AsyncIterator[ServerFarm]:
    f = ServerFarm(engine, n, broken=broken)
    await f.create()
    try:
        yield f
    finally:
        await f.drop()


@pytest.fixture
async def pg_farm() -> AsyncIterator[ServerFarm]:
    async with server_farm("postgresql", 30, broken=17) as f:
        yield f


@pytest.fixture
async def my_farm() -> AsyncIterator[ServerFarm]:
    async with server_farm("mysql", 20, broken=5) as f:
        yield f


def sqlite_farm(folder: Path, n: int, broken: int | None) -> list[Path]:
    folder.mkdir()
    paths = []
    for i in range(n):
        p = folder / f"wiki{i:03d}.sqlite"
        con = sqlite3.connect(p)
        con.execute("PRAGMA journal_mode=WAL")
        for stmt in table_sql("sqlite", broken=i == broken):
            con.execute(stmt)
        con.commit()
        con.close()
        paths.append(p)
    return paths


def head(url: str) -> str:
    """A farm config's first sections: the default server, JSON logs, no endpoints."""
    return f"""[database]
url = "{url}"
[logging]
format = "json"
[metrics]
listen = ""
"""


def sqlite_farm_config(tmp_path: Path, farm: str = "") -> Path:
    """A farm of the SQLite files in tmp_path/wikis, JSON logs, no endpoints; `farm`: more [farm] lines."""
    return write(tmp_path / "farm.toml", f"""
{head(f"sqlite:///{tmp_path}/unused.sqlite")}
[farm]
sqlite_glob = "wikis/*.sqlite"
{farm}
""" + job_toml(("sqlite",)))


def sqlite_wrong(path: Path) -> int:
    con = sqlite3.connect(path)
    rows = con.execute("SELECT email, domain FROM users").fetchall()
    con.close()
    return sum(1 for email, domain in rows if domain != email.split("@")[1].lower())


def job_toml(engines_: tuple[str, ...]) -> str:
    forms = ", ".join(f'{e} = "{EXPR[e]}"' for e in engines_)
    return f"""
[[jobs]]
name = "domain"
table = "users"
[jobs.set]
domain = {{ {forms} }}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def outcome(err: str) -> dict:
    [finished] = [json.loads(line) for line in err.splitlines() if '"farm_finished"' in line]
    return finished


def test_a_farm_of_50_sqlite_files_with_one_broken(tmp_path: Path) -> None:
    paths = sqlite_farm(tmp_path / "wikis", 50, broken=31)
    cfg = sqlite_farm_config(tmp_path, "max_concurrent = 4")
    run = backfilld("run", str(cfg))
    assert run.returncode == 1, run.stderr[-2000:]
    assert "1 of 50 databases failed" in run.stderr and "wiki031.sqlite" in run.stderr
    done = outcome(run.stderr)
    assert done["completed"] == 49 and done["failed"] == 1 and done["failed_databases"] == ["wikis/wiki031.sqlite"]
    assert all(sqlite_wrong(p) == 0 for i, p in enumerate(paths) if i != 31)
    status = json.loads(backfilld("status", str(cfg), "--json").stdout)
    assert status["counts"]["done"] == 49 and status["rows_done"] == 49 * ROWS
    assert status["counts"]["failed"] == 1 and status["counts"]["pending"] == 0
    [bad] = [d for d in status["databases"] if d["state"] == "failed"]
    assert bad["database"] == "wikis/wiki031.sqlite"
    assert "target column 'domain' does not exist" in bad["jobs"][0]["error"]
    assert status["eta_s"] is not None and status["eta_s"] >= 0
    text = backfilld("status", str(cfg)).stdout
    assert "wikis/wiki031.sqlite: failed  rows_done=0  domain=failed  error=domain: " in text
    assert "farm: 50 databases: 49 done, 0 running, 1 failed, 0 pending, 0 unreadable" in text
    # verify in every database: the broken one named, the others clean; one database alone
    verified = backfilld("verify", str(cfg))
    assert verified.returncode == 1
    assert "wikis/wiki031.sqlite: job 'domain': target column 'domain' does not exist" in verified.stderr
    assert verified.stdout.count("verified: every row is right") == 49
    one = backfilld("verify", str(cfg), "--database", "wiki007.sqlite")
    assert one.returncode == 0 and one.stdout.startswith("wikis/wiki007.sqlite: domain: checked 2000 rows"), one
    # three shards: each database in exactly one
    seen: list[str] = []
    for i in range(3):
        part = json.loads(backfilld("status", str(cfg), "--json", "--shard", f"{i}/3").stdout)
        seen += [d["database"] for d in part["databases"]]
    assert sorted(seen) == sorted(f"wikis/{p.name}" for p in paths)
    # the broken database mended (the expand step run there too): the next run fills it, and it alone
    con = sqlite3.connect(paths[31])
    con.execute("ALTER TABLE users ADD COLUMN domain VARCHAR(100)")
    con.commit()
    con.close()
    again = backfilld("run", str(cfg))
    assert again.returncode == 0, again.stderr[-2000:]
    assert sqlite_wrong(paths[31]) == 0
    final = json.loads(backfilld("status", str(cfg), "--json").stdout)
    assert final["counts"]["done"] == 50 and final["rows_done"] == 50 * ROWS


@pytest.mark.postgresql
async def test_a_farm_of_30_postgresql_databases_with_one_broken(pg_farm: ServerFarm, tmp_path: Path) -> None:
    await run_server_farm(pg_farm, tmp_path)


@pytest.mark.mysql
async def test_a_farm_of_20_mariadb_databases_with_one_broken(my_farm: ServerFarm, tmp_path: Path) -> None:
    await run_server_farm(my_farm, tmp_path)


async def run_server_farm(f: ServerFarm, tmp_path: Path) -> None:
    (tmp_path / "all.dblist").write_text("# every wiki\n" + "\n".join(f.names) + "\n")
    cfg = write(tmp_path / "farm.toml", f"""
{head(SERVER[f.engine])}
[throttle]
max_batch = 500
max_rows_per_s = 20000
[farm]
databases_file = "all.dblist"
max_concurrent_per_host = 2
""" + job_toml((f.engine,)))
    # killed once some databases are done and others are halfway
    proc = spawn("run", str(cfg))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = json.loads(backfilld("status", str(cfg), "--json").stdout)
        if status["counts"]["done"] >= 4:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    before = {d["database"]: d["jobs"][0] for d in status["databases"] if d["state"] == "done"}
    assert 4 <= len(before) < f.n - 1, "kill -9 came too late to interrupt the farm"
    run = backfilld("run", str(cfg), timeout=600)
    assert run.returncode == 1, run.stderr[-2000:]
    broken = f.names[f.broken or 0]
    assert "1 of " in run.stderr and broken in run.stderr
    for name in f.names:
        if name != broken:
            assert await f.wrong(name) == 0, name
    now = json.loads(backfilld("status", str(cfg), "--json").stdout)
    after = {d["database"]: d["jobs"][0] for d in now["databases"]}
    for db, job in before.items():   # finished databases were not done again
        assert after[db]["finished_at"] == job["finished_at"] and after[db]["rows_done"] == job["rows_done"]
    assert now["counts"]["done"] == f.n - 1 and now["counts"]["failed"] == 1
    [failed] = [d for d in now["databases"] if d["state"] == "failed"]
    assert failed["database"].endswith(broken) and "domain" in failed["jobs"][0]["error"]


@pytest.mark.postgresql
@pytest.mark.mysql
async def test_one_mixed_config_of_hosts(pg_farm: ServerFarm, my_farm: ServerFarm, tmp_path: Path) -> None:
    paths = sqlite_farm(tmp_path / "wikis", 5, broken=None)
    my = parse_url(MYSQL_URL)
    cfg = write(tmp_path / "farm.toml", f"""
{head(SERVER['postgresql'])}
[farm]
databases = {json.dumps(pg_farm.names[:10])}
sqlite_glob = "wikis/*.sqlite"
max_concurrent = 6
[[farm.hosts]]
name = "s2"
url = "mysql://{my.user}@{my.host}:{my.port}/{my.database}"
databases = {json.dumps(my_farm.names[:10])}
""" + job_toml(("postgresql", "mysql", "sqlite")))
    run = backfilld("run", str(cfg), timeout=600)
    # the two broken databases (pg 17 is not among the first 10; mysql 5 is) fail alone
    assert run.returncode == 1, run.stderr[-2000:]
    done = outcome(run.stderr)
    assert done["completed"] == 24 and done["failed_databases"] == [f"s2/{my_farm.names[5]}"]
    for name in pg_farm.names[:10]:
        assert await pg_farm.wrong(name) == 0
    for i, name in enumerate(my_farm.names[:10]):
        if i != 5:
            assert await my_farm.wrong(name) == 0
    assert all(sqlite_wrong(p) == 0 for p in paths)


@pytest.mark.postgresql
async def test_a_host_whose_connections_are_lost_fails_alone_and_its_databases_resume_later(tmp_path: Path) -> None:
    from tests.harness.faultproxy import FaultProxy

    async with server_farm("postgresql", 6, broken=None) as f:
        with FaultProxy.for_url(PG_URL) as proxy:
            cfg = write(tmp_path / "farm.toml", f"""
{head(PG_URL)}
[throttle]
max_batch = 100
max_rows_per_s = 1500
[farm]
databases = {json.dumps(f.names[:3])}
max_concurrent_per_host = 3
[[farm.hosts]]
name = "far"
url = "{proxy.url_for(PG_URL)}"
databases = {json.dumps(f.names[3:])}
[[jobs]]
name = "domain"
table = "users"
max_retries = 2
[jobs.set]
domain = {{ postgresql = "{EXPR['postgresql']}" }}
""")
            proc = spawn("run", str(cfg))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:   # every database of the far host halfway
                status = json.loads(backfilld("status", str(cfg), "--json").stdout)
                far = [d for d in status["databases"] if d["host"] == "far"]
                if all(0 < d.get("rows_done", 0) < ROWS for d in far):
                    break
                time.sleep(0.1)
            assert all(0 < d.get("rows_done", 0) < ROWS for d in far), status
            proxy.refuse(True)   # the path to that host is gone: open connections reset, new ones refused
            proxy.reset()
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 1, err[-2000:]
            done = outcome(err)
            assert done["completed"] == 3
            assert sorted(done["failed_databases"]) == sorted(f"far/{n}" for n in f.names[3:])
            for name in f.names[:3]:
                assert await f.wrong(name) == 0, name
            failed = [json.loads(line) for line in err.splitlines() if '"farm_database_failed"' in line]
            assert len(failed) == 3 and all(e["host"] == "far" for e in failed)

            proxy.clear()   # the path is back: the next run resumes each from its checkpoint, redoing no row
            again = backfilld("run", str(cfg), timeout=120)
            assert again.returncode == 0, again.stderr[-2000:]
            for name in f.names:
                assert await f.wrong(name) == 0, name
            final = json.loads(backfilld("status", str(cfg), "--json").stdout)
            assert final["counts"]["done"] == 6
            assert all(d["jobs"][0]["rows_done"] == ROWS for d in final["databases"]), final


def test_sync_triggers_are_installed_and_removed_in_every_database_of_the_farm(tmp_path: Path) -> None:
    paths = sqlite_farm(tmp_path / "wikis", 4, broken=2)
    cfg = sqlite_farm_config(tmp_path)

    def old_code_inserts(path: Path, i: int) -> str | None:
        con = sqlite3.connect(path)
        con.execute("INSERT INTO users (id, email) VALUES (?, ?)", (i, f"new{i}@Old.Code"))
        con.commit()
        [(domain,)] = con.execute("SELECT domain FROM users WHERE id = ?", (i,)).fetchall()
        con.close()
        return domain

    installed = backfilld("triggers", "install", str(cfg), "domain")
    assert installed.returncode == 1, installed.stderr
    assert installed.stdout.count(": domain: sync triggers installed") == 3
    assert "wikis/wiki002.sqlite: job 'domain': target column 'domain' does not exist" in installed.stderr
    assert "1 of 4 databases failed" in installed.stderr
    for i, p in enumerate(paths):
        if i != 2:
            assert old_code_inserts(p, 10_001) == "old.code"   # the trigger filled what old code left out
    one = backfilld("triggers", "remove", str(cfg), "domain", "--database", "wiki001.sqlite")
    assert one.returncode == 0 and one.stdout.strip() == "wikis/wiki001.sqlite: domain: sync triggers removed"
    assert old_code_inserts(paths[1], 10_002) is None   # removed there
    assert old_code_inserts(paths[3], 10_002) == "old.code"   # and only there
    for bad, says in ((("domain", "--database", "nosuch"), "nosuch"), (("domain", "--shard", "x"), "--shard"),
                      (("nosuch",), "no job named 'nosuch'")):   # said once, before any database is touched
        refused = backfilld("triggers", "install", str(cfg), *bad)
        assert refused.returncode == 2 and says in refused.stderr and "Traceback" not in refused.stderr, refused
        assert refused.stdout == "" and refused.stderr.count("backfilld: error") == 1
    single = write(tmp_path / "one.toml", f"""
[database]
url = "sqlite:///{paths[0]}"
""" + job_toml(("sqlite",)))
    refused = backfilld("triggers", "install", str(single), "domain", "--database", "x")
    assert refused.returncode == 2 and "no [farm] section" in refused.stderr and "Traceback" not in refused.stderr
