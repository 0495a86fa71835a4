"""Farm mode without a database: which databases a farm has, the shards that split them, the caps on how many
run at once, and one database's failure kept to itself (run_one and the throttle are fakes here; the
integration tests run real farms)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from backfilld import farm
from backfilld.config import from_dict
from backfilld.errors import ConfigError, EngineError

JOB = {"name": "j", "table": "t", "set": {"b": "upper(a)"}}


def config(tmp_path: Path, **farm_section: object) -> object:
    return from_dict({"database": {"url": "postgresql://app@db1:5432/postgres"}, "farm": farm_section,
                      "jobs": [JOB]}, base_dir=tmp_path)


def test_members_come_from_the_list_the_file_the_hosts_and_the_glob_in_order(tmp_path: Path) -> None:
    (tmp_path / "all.dblist").write_text("# section s1\nenwiki\ndewiki  # a comment\n\nfrwiki\n")
    (tmp_path / "w").mkdir()
    for n in ("b", "a"):
        (tmp_path / "w" / f"{n}.sqlite").touch()
    for sidecar in ("a.sqlite-wal", "a.sqlite-shm", "a.sqlite-journal", "a.sqlite-backfilld-3dbf2e43.lock"):
        (tmp_path / "w" / sidecar).touch()   # SQLite's and backfilld's files beside a database: not databases
    cfg = config(tmp_path, databases=["enwiki", "metawiki"], databases_file="all.dblist", sqlite_glob="w/*",
                 hosts=[{"url": "mysql://app@db2:3306/mysql", "name": "s2", "databases": ["zhwiki"],
                         "replicas": [{"url": "mysql://app@db2r:3306/mysql"}]}])
    ms = farm.members(cfg)
    assert [m.name for m in ms] == ["db1:5432/enwiki", "db1:5432/metawiki", "db1:5432/dewiki", "db1:5432/frwiki",
                                    "s2/zhwiki", "w/a.sqlite", "w/b.sqlite"]
    assert ms[0].config.database.url == "postgresql://app@db1:5432/enwiki"
    assert ms[4].config.database.url == "mysql://app@db2:3306/zhwiki"
    assert [r.url for r in ms[4].config.replicas] == ["mysql://app@db2r:3306/mysql"]
    assert ms[5].config.database.url == f"sqlite:///{tmp_path / 'w' / 'a.sqlite'}" and ms[5].config.replicas == []
    # each host's throttle is made from the host's own primary (the database its URL names) and replicas
    assert ms[0].host_config.database.url == "postgresql://app@db1:5432/postgres"
    assert ms[4].host_config.database.url == "mysql://app@db2:3306/mysql" and ms[4].host_config.replicas


@pytest.mark.parametrize(("section", "fragment"), [
    ({}, "names no database"),
    ({"databases": ["en wiki"]}, "is not a database name"),
    ({"databases": ["a", "a"]}, "names database 'a' twice"),
    ({"databases_file": "missing.dblist"}, "cannot read the databases file"),
    ({"hosts": [{"url": "mysql://app@db2:3306/mysql"}]}, "names no database"),
])
def test_a_farm_without_databases_or_with_bad_names_is_refused_by_name(tmp_path: Path, section: dict,
                                                                       fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        farm.members(config(tmp_path, **section))


def test_shards_cover_every_database_exactly_once() -> None:
    names = [f"db1:5432/wiki{i}" for i in range(1000)]
    shards = [{n for n in names if farm.in_shard(n, (i, 3))} for i in range(3)]
    assert sum(len(s) for s in shards) == 1000 and set().union(*shards) == set(names)
    assert all(200 < len(s) < 470 for s in shards), [len(s) for s in shards]   # a fair share each


@pytest.mark.parametrize(("text", "env", "expected"), [
    ("1/3", {}, (1, 3)), (None, {"JOB_COMPLETION_INDEX": "2", "BACKFILLD_SHARDS": "4"}, (2, 4)), (None, {}, None)])
def test_the_shard_comes_from_the_option_or_an_indexed_job(text: str | None, env: dict, expected: object) -> None:
    assert farm.parse_shard(text, env) == expected


@pytest.mark.parametrize("text", ["3/3", "a/b", "1", "-1/2"])
def test_a_bad_shard_is_refused_with_the_form(text: str) -> None:
    with pytest.raises(ConfigError, match="I/N"):
        farm.parse_shard(text, {})


class FakeThrottle:
    def __init__(self, cfg: object) -> None:
        self.started = self.closed = 0

    async def start(self) -> None:
        self.started += 1

    async def close(self) -> None:
        self.closed += 1

    async def wait(self, job: str, stop: asyncio.Event, in_flight: int = 0) -> None:
        pass

    def after_batch(self, job: str, rows: int, took_s: float) -> None:
        pass


class State:
    def __init__(self, status: str = "completed", rows: int = 10) -> None:
        self.status, self.rows_done = status, rows


async def test_caps_hold_at_every_moment_and_a_failure_stays_with_its_database(tmp_path: Path) -> None:
    hosts = [{"url": f"mysql://app@h{h}:3306/mysql", "name": f"h{h}", "databases": [f"d{i}" for i in range(6)]}
             for h in range(3)]
    cfg = config(tmp_path, databases=[f"p{i}" for i in range(6)], hosts=hosts, max_concurrent=5,
                 max_concurrent_per_host=2)
    running: dict[str, int] = {}
    peak = {"all": 0, "host": 0}
    throttles: dict[str, FakeThrottle] = {}
    gates: dict[str, set[int]] = {}

    def make_throttle(c: object) -> FakeThrottle:
        t = FakeThrottle(c)
        throttles[str(len(throttles))] = t
        return t

    async def run_one(m: farm.Member, gate: farm.HostGate, stop: asyncio.Event) -> list[State]:
        running[m.host] = running.get(m.host, 0) + 1
        peak["host"] = max(peak["host"], running[m.host])
        peak["all"] = max(peak["all"], sum(running.values()))
        gates.setdefault(m.host, set()).add(id(gate))
        await asyncio.sleep(0.01)
        running[m.host] -= 1
        if m.name == "h1/d3":
            raise EngineError("lost connection")
        return [State()]

    summary = await farm.run(cfg, shard=None, stop=asyncio.Event(), run_one=run_one, make_throttle=make_throttle)
    assert peak == {"all": 5, "host": 2}
    assert [(o.member, o.error) for o in summary.failed] == [("h1/d3", "lost connection")]
    assert summary.counts() == {"completed": 23, "failed": 1}
    # one gate (one throttle, started once, closed once) per host, shared by its databases
    assert all(len(ids) == 1 for ids in gates.values()) and len(throttles) == 4
    assert all(t.started == 1 and t.closed == 1 for t in throttles.values())


async def test_on_failure_stop_starts_no_other_database(tmp_path: Path) -> None:
    cfg = config(tmp_path, databases=[f"p{i}" for i in range(10)], max_concurrent=1, max_concurrent_per_host=1,
                 on_failure="stop")
    ran: list[str] = []

    async def run_one(m: farm.Member, gate: farm.HostGate, stop: asyncio.Event) -> list[State]:
        ran.append(m.name)
        if len(ran) == 3:
            raise EngineError("broken")
        return [State()]

    summary = await farm.run(cfg, shard=None, stop=asyncio.Event(), run_one=run_one, make_throttle=FakeThrottle)
    assert len(ran) == 3 and summary.counts() == {"completed": 2, "failed": 1}


async def test_the_host_gate_counts_the_sets_batches_in_flight(tmp_path: Path) -> None:
    seen: list[int] = []

    class Recording(FakeThrottle):
        async def wait(self, job: str, stop: asyncio.Event, in_flight: int = 0) -> None:
            seen.append(in_flight)

    gate = farm.HostGate(Recording(None))
    stop = asyncio.Event()
    await gate.wait("j", stop, 0)      # database A's batch starts
    await gate.wait("j", stop, 0)      # database B's: A's is in flight
    gate.after_batch("j", 10, 0.1)
    await gate.wait("j", stop, 1)      # one landed; B's own second batch counts too
    assert seen == [0, 1, 2]


async def test_a_hosts_throttle_closes_with_its_last_database(tmp_path: Path) -> None:
    """Memory follows the databases running at once: with a host per database (SQLite files), at most
    max_concurrent throttles are open at any moment, and every one is closed once its database is done."""
    (tmp_path / "w").mkdir()
    for i in range(20):
        (tmp_path / "w" / f"{i:02d}.sqlite").touch()
    cfg = config(tmp_path, sqlite_glob="w/*.sqlite", max_concurrent=3)
    made: list[FakeThrottle] = []
    peak = 0

    def make_throttle(c: object) -> FakeThrottle:
        made.append(FakeThrottle(c))
        return made[-1]

    async def run_one(m: farm.Member, gate: farm.HostGate, stop: asyncio.Event) -> list[State]:
        nonlocal peak
        peak = max(peak, sum(1 for t in made if t.started and not t.closed))
        await asyncio.sleep(0.005)
        return [State()]

    summary = await farm.run(cfg, shard=None, stop=asyncio.Event(), run_one=run_one, make_throttle=make_throttle)
    assert summary.counts() == {"completed": 20}
    assert len(made) == 20 and all(t.started == 1 and t.closed == 1 for t in made)
    assert peak <= 3
