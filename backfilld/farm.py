"""Farm mode: the same jobs in many databases, one lag budget per replica set, failures isolated.

Owns: the farm's databases (Member: each database, on which host, with its own config: its URL, the host's
replicas), the shard a process takes (`--shard I/N`, or a Kubernetes Indexed Job's JOB_COMPLETION_INDEX), the
concurrency caps (per host and across the farm), one throttle per host shared by that host's databases (HostGate:
lag is probed once per replica set and every batch of the set waits on the same decision, counting the set's
batches in flight), and the farm's summary. Each database runs exactly as a single-database run does
(daemon.Daemon: its state row, lease, checkpoint, resume, sweeps), with the host's gate instead of its own.
"""

from __future__ import annotations

import asyncio
import glob
import hashlib
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from backfilld import logs
from backfilld.config import Config, FarmHost, _check_db_names, parse_url
from backfilld.engines import capabilities
from backfilld.errors import BackfilldError, ConfigError

log = logs.get_logger("backfilld.farm")

# files beside a SQLite database that a glob like "wikis/*" also matches: never a database of the farm
_SIDECAR = re.compile(r"(-wal|-shm|-journal|-backfilld-[0-9a-f]+\.lock)$")
SHARD_ENV = ("JOB_COMPLETION_INDEX", "BACKFILLD_SHARDS")   # a Kubernetes Indexed Job's index; the shard count


@dataclass(frozen=True)
class Member:
    """One database of the farm: its name (unique across the farm: host/database, or the SQLite file), the host
    whose primary and replicas it shares, and the config a single-database run of it would have."""

    name: str
    host: str
    config: Config
    # the host's own config: its primary as the config names it (the database its heartbeat and probes use) and
    # its replicas; the host's throttle is made from it, not from any one database's
    host_config: Config


@dataclass
class Outcome:
    member: str
    host: str
    status: str                  # completed, failed, stopped
    error: str | None = None
    rows: int = 0
    took_s: float = 0.0


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)
    skipped_by_shard: int = 0

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out


# ------------------------------------------------------------------------------------------ the members


def _with_database(url: str, database: str) -> str:
    """The server URL naming another database (its user, host, port and TLS parameters kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database, safe=""), parts.query, parts.fragment))


def read_dblist(path: Path) -> list[str]:
    """A dblist: one database name per line; '#' starts a comment; blank lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"farm: cannot read the databases file {path} ({exc.strerror})") from None
    names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    names = [n for n in names if n]
    try:
        return _check_db_names(names)
    except ValueError as exc:
        raise ConfigError(f"farm: databases file {path}: {exc}") from None


def members(config: Config) -> list[Member]:
    """Every database of the farm, in a stable order: the [database] server's, then each [[farm.hosts]]'s, then
    the SQLite files (sorted). ConfigError when the config has no [farm] or it names no database."""
    farm = config.farm
    if farm is None:
        raise ConfigError("the config has no [farm] section")
    base = config.database._base_dir or Path(".")
    out: list[Member] = []

    def names(listed: list[str], file: str | None) -> list[str]:
        found = list(listed)
        if file:
            found += read_dblist(base / file)
        return list(dict.fromkeys(found))

    def server(host_label: str, section_cfg: Config, dbs: Iterable[str]) -> None:
        for db in dbs:
            database = section_cfg.database.model_copy(update={"url": _with_database(section_cfg.database.url, db)})
            object.__setattr__(database, "_base_dir", section_cfg.database._base_dir)
            out.append(Member(f"{host_label}/{db}", host_label, section_cfg.model_copy(update={"database": database}),
                              section_cfg))

    own = names(farm.databases, farm.databases_file)
    if own:
        if capabilities(config.engine).file_database:
            raise ConfigError("farm.databases names databases on a server, but [database] is SQLite: use "
                              "farm.sqlite_glob for SQLite files")
        server(_label(config.database.url), config, own)
    for i, host in enumerate(farm.hosts):
        host_cfg = _host_config(config, host)
        dbs = names(host.databases, host.databases_file)
        if not dbs:
            raise ConfigError(f"farm.hosts[{i}] ({host.label}) names no database: give databases = [...] or "
                              "databases_file")
        server(host.label, host_cfg, dbs)
    if farm.sqlite_glob:
        pattern = farm.sqlite_glob if os.path.isabs(farm.sqlite_glob) else str(base / farm.sqlite_glob)
        for path in sorted(glob.glob(pattern, recursive=True)):
            if _SIDECAR.search(path) or not os.path.isfile(path):
                continue   # SQLite's own files beside a database (-wal, -shm, -journal) and backfilld's lease files
            database = config.database.model_copy(update={"url": f"sqlite:///{os.path.abspath(path)}"})
            cfg = config.model_copy(update={"database": database, "replicas": []})
            # named by its path from the config's folder (status, the log, the database label), absolute if outside
            rel = os.path.relpath(os.path.abspath(path), os.path.abspath(base))
            name = rel if not rel.startswith("..") else os.path.abspath(path)
            out.append(Member(name, name, cfg, cfg))   # each file its own primary
    if not out:
        raise ConfigError("[farm] names no database: give databases, databases_file, sqlite_glob or [[farm.hosts]] "
                          "(a sqlite_glob that matches no file counts as none)")
    labels = [m.name for m in out]
    if len(set(labels)) != len(labels):
        twice = next(n for n in labels if labels.count(n) > 1)
        raise ConfigError(f"farm: database {twice!r} is named twice")
    return out


def _label(url: str) -> str:
    u = parse_url(url)
    return f"{u.host}:{u.port}" if u.port else str(u.host)


def _host_config(config: Config, host: FarmHost) -> Config:
    """The site config with this host's primary and replicas in place of [database]'s."""
    database = config.database.model_copy(update={"url": host.url, "password_env": host.password_env,
                                                  "password_file": host.password_file})
    object.__setattr__(database, "_base_dir", host._base_dir or config.database._base_dir)
    for r in host.replicas:
        if parse_url(r.url).engine != parse_url(host.url).engine:
            raise ConfigError(f"farm host {host.label}: replica {r.label!r} is {parse_url(r.url).engine} but "
                              f"the host is {parse_url(host.url).engine}")
    return config.model_copy(update={"database": database, "replicas": list(host.replicas)})


# ------------------------------------------------------------------------------------------ shards


def parse_shard(text: str | None, environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """`I/N` (0 <= I < N), else a Kubernetes Indexed Job's JOB_COMPLETION_INDEX with BACKFILLD_SHARDS; None: all."""
    env = os.environ if environ is None else environ
    if text is None:
        index, count = env.get(SHARD_ENV[0]), env.get(SHARD_ENV[1])
        if index is None or count is None:
            return None
        text = f"{index}/{count}"
        where = f"{SHARD_ENV[0]}={index} with {SHARD_ENV[1]}={count}"
    else:
        where = f"--shard {text}"
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        raise ConfigError(f"{where}: give I/N, the shard I of N (0 <= I < N), e.g. 0/3") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"{where}: give I/N with 0 <= I < N, e.g. 0/3")
    return i, n


def in_shard(name: str, shard: tuple[int, int] | None) -> bool:
    """Whether the database belongs to the shard: a hash of its name, stable across processes and releases, so
    that N processes with shards 0..N-1 cover every database exactly once."""
    if shard is None:
        return True
    i, n = shard
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % n == i


# ------------------------------------------------------------------------------------------ the shared gate


class HostGate:
    """One host's throttle, shared by its databases: the lag probes run once for the replica set, and each batch
    of any of its databases waits on the same decision, counting every batch of the set in flight."""

    def __init__(self, throttle: Any) -> None:
        self.throttle = throttle
        self.in_flight = 0   # batches of this host's databases written now (waited, not yet landed)

    async def wait(self, job: str, stop: asyncio.Event, in_flight: int = 0) -> None:
        await self.throttle.wait(job, stop, self.in_flight + in_flight)
        self.in_flight += 1

    def after_batch(self, job: str, rows: int, took_s: float) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.throttle.after_batch(job, rows, took_s)

    def __getattr__(self, name: str) -> Any:   # busy(), current, retune_live, ...: the throttle's own
        return getattr(self.throttle, name)


# ------------------------------------------------------------------------------------------ metrics and endpoints

# states of backfilld_farm_databases: this process's share of the farm
FARM_STATES = ("pending", "running", "completed", "failed", "stopped")


class FarmMetrics:
    """The farm's /metrics: its own gauges (databases by state, the failed ones), every running database's job
    metrics with a `database` label, and each host throttle's (replica lag, the application probe) with a `host`
    label. A database's series leave with it when it finishes (memory grows with concurrency, not with the farm);
    its outcome stays in backfilld_farm_databases and, if it failed, backfilld_farm_database_failed."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge, ProcessCollector

        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.databases = Gauge("backfilld_farm_databases", "Databases of this process's share of the farm, by "
                               "state (pending, running, completed, failed, stopped).", ["state"], registry=r)
        self.failed = Gauge("backfilld_farm_database_failed", "1 for each database of the farm that failed in this "
                            "run (its error: farm_database_failed in the log).", ["database"], registry=r)
        self.up = Gauge("backfilld_up", "1 while the daemon runs.", registry=r)
        self.up.set(1)
        self.members: dict[str, Any] = {}   # database -> the Metrics of its running daemon
        self.hosts: dict[str, Any] = {}     # host -> its throttle's Metrics
        r.register(_Series(self))

    def count(self, counts: dict[str, int]) -> None:
        for s in FARM_STATES:
            self.databases.labels(s).set(counts.get(s, 0))

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _Series:
    """A prometheus_client collector of the running databases' and the hosts' series, relabelled."""

    def __init__(self, fm: FarmMetrics) -> None:
        self.fm = fm

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import Metric

        from backfilld.metrics import JOB_LABEL

        merged: dict[str, Any] = {}

        def add(registry: Any, label: str, value: str, with_job: bool) -> None:
            for family in registry.collect():
                if family.name.startswith("process_") or family.name == "backfilld_up":
                    continue
                samples = [s for s in family.samples if (JOB_LABEL in s.labels) == with_job]
                if not samples:
                    continue
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                for s in samples:
                    out.add_sample(s.name, {**s.labels, label: value}, s.value, s.timestamp, s.exemplar)

        for db, m in list(self.fm.members.items()):   # a database's job series
            add(m.registry, "database", db, True)
        for host, m in list(self.fm.hosts.items()):   # a replica set's lag and its primary's application
            add(m.registry, "host", host, False)
        return list(merged.values())


# ------------------------------------------------------------------------------------------ the farm run


RunOne = Callable[[Member, Any, asyncio.Event], Awaitable[list[Any]]]


class Running:
    """The databases being run now, each with its Daemon: what the farm's /status, /readyz, /healthz and /metrics
    read."""

    def __init__(self, metrics: FarmMetrics | None = None) -> None:
        self.metrics = metrics
        self.daemons: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.failed: list[dict[str, str]] = []

    def status(self) -> dict[str, Any]:
        return {"farm": dict(self.counts), "failed": self.failed[-100:],
                "running": [{"database": db, **d.status()} for db, d in list(self.daemons.items())]}

    def ready(self) -> tuple[bool, str]:
        if not self.daemons:
            return True, "no database is running now"
        answers = [(db, *d.ready()) for db, d in list(self.daemons.items())]
        bad = [f"{db}: {why}" for db, ok, why in answers if not ok]
        if len(bad) == len(answers):
            return False, "; ".join(bad[:5])
        return True, f"{len(answers) - len(bad)} of {len(answers)} running databases connected"

    def stalled(self) -> str | None:
        for db, d in list(self.daemons.items()):
            why = d.stalled()
            if why:
                return f"database {db}: {why}"
        return None


def daemon_run(opts: Any, running: Running | None = None) -> RunOne:
    """Each database as `backfilld run` runs one (a Daemon with opts), behind the host's gate; its own HTTP
    endpoints off (the farm's are the process's: running is what they read)."""
    from backfilld import daemon
    from backfilld.metrics import Metrics

    async def run_one(m: Member, gate: Any, stop: asyncio.Event) -> list[Any]:
        cfg = m.config.model_copy(update={"metrics": m.config.metrics.model_copy(update={"listen": ""})})
        d = daemon.Daemon(cfg, opts, stop=stop, gate=gate, metrics=Metrics(), record_unstarted=True)
        if running is None:
            return await d.run()
        running.daemons[m.name] = d
        if running.metrics is not None:
            running.metrics.members[m.name] = d.metrics
        try:
            return await d.run()
        finally:
            running.daemons.pop(m.name, None)
            if running.metrics is not None:
                running.metrics.members.pop(m.name, None)

    return run_one


def throttle_of(config: Config, metrics: Any = None) -> Any:
    from backfilld.throttle import Throttle

    return Throttle(config, metrics=metrics) if metrics is not None else Throttle(config)


async def run(config: Config, *, shard: tuple[int, int] | None, stop: asyncio.Event, run_one: RunOne,
              make_throttle: Callable[..., Any] = throttle_of, running: Running | None = None) -> Summary:
    """Run every database of the shard: at most max_concurrent at once, max_concurrent_per_host on one host,
    each host's databases behind one HostGate. A failed database is recorded (its error in its state row where
    it got that far, and in the log) and the others go on, unless on_failure = "stop"."""
    assert config.farm is not None
    everyone = members(config)
    mine = [m for m in everyone if in_shard(m.name, shard)]
    log.info("farm_started", databases=len(mine), of=len(everyone), shard=f"{shard[0]}/{shard[1]}" if shard else None,
             hosts=sorted({m.host for m in mine}), max_concurrent=config.farm.max_concurrent,
             max_concurrent_per_host=config.farm.max_concurrent_per_host)
    farm_run = _FarmRun(config, mine, stop, run_one, make_throttle, running or Running())
    farm_run.summary.skipped_by_shard = len(everyone) - len(mine)
    try:
        await asyncio.gather(*(farm_run.one(m) for m in mine))
    finally:
        await farm_run.close()
    summary = farm_run.summary
    log.info("farm_finished", **summary.counts(), not_run=len(mine) - len(summary.outcomes),
             failed_databases=[o.member for o in summary.failed])
    return summary


class _FarmRun:
    """One farm run's shared state: the caps (semaphores), each host's gate while one of its databases is left,
    the counts by state, the summary."""

    def __init__(self, config: Config, mine: list[Member], stop: asyncio.Event, run_one: RunOne,
                 make_throttle: Callable[..., Any], running: Running) -> None:
        assert config.farm is not None
        self.farm, self.stop, self.run_one, self.make_throttle = config.farm, stop, run_one, make_throttle
        self.running = running
        self.summary = Summary()
        running.counts = {"pending": len(mine)}
        if running.metrics is not None:
            running.metrics.count(running.counts)
        self.overall = asyncio.Semaphore(self.farm.max_concurrent)
        self.per_host: dict[str, asyncio.Semaphore] = {}
        self.gates: dict[str, HostGate] = {}
        self.gate_lock = asyncio.Lock()
        # databases of each host not finished yet: a host's throttle is closed with its last one, so that what
        # the farm holds grows with the databases running at once, not with the farm (a SQLite file is a host)
        self.left = {h: sum(1 for m in mine if m.host == h) for h in {m.host for m in mine}}

    def moved(self, old: str, new: str) -> None:
        counts = self.running.counts
        counts[old] = counts.get(old, 0) - 1
        counts[new] = counts.get(new, 0) + 1
        if self.running.metrics is not None:
            self.running.metrics.count(counts)

    async def gate_for(self, m: Member) -> HostGate:
        async with self.gate_lock:
            if m.host not in self.gates:
                if self.running.metrics is not None:
                    from backfilld.metrics import Metrics

                    host_metrics = self.running.metrics.hosts[m.host] = Metrics()
                    throttle = self.make_throttle(m.host_config, host_metrics)
                else:
                    throttle = self.make_throttle(m.host_config)
                await throttle.start()
                self.gates[m.host] = HostGate(throttle)
            return self.gates[m.host]

    async def host_done(self, m: Member) -> None:
        async with self.gate_lock:
            self.left[m.host] -= 1
            if self.left[m.host] == 0 and m.host in self.gates:
                gate = self.gates.pop(m.host)
                if self.running.metrics is not None:
                    self.running.metrics.hosts.pop(m.host, None)
                await gate.throttle.close()

    async def close(self) -> None:
        for g in self.gates.values():
            await g.throttle.close()
        self.gates = {}

    async def one(self, m: Member) -> None:
        try:
            sem = self.per_host.setdefault(m.host, asyncio.Semaphore(self.farm.max_concurrent_per_host))
            async with sem, self.overall:
                if not self.stop.is_set():
                    await self.attempt(m)
        finally:
            await self.host_done(m)

    async def attempt(self, m: Member) -> None:
        t0 = time.monotonic()
        self.moved("pending", "running")
        log.info("farm_database_started", database=m.name, host=m.host)
        try:
            gate = await self.gate_for(m)
            states = await self.run_one(m, gate, self.stop)
        except Exception as exc:  # noqa: BLE001 - one database's failure, whatever it is, is that database's
            self.failed(m, str(exc) if isinstance(exc, BackfilldError) else f"{type(exc).__name__}: {exc}", t0)
            return
        status = "completed" if states and all(s.status == "completed" for s in states) else (
            "stopped" if self.stop.is_set() else "completed" if not states else states[-1].status)
        rows = sum(s.rows_done for s in states)
        self.summary.outcomes.append(Outcome(m.name, m.host, status, rows=rows, took_s=time.monotonic() - t0))
        self.moved("running", status if status in FARM_STATES else "completed")
        log.info("farm_database_finished", database=m.name, host=m.host, status=status, rows_done=rows,
                 took_s=round(time.monotonic() - t0, 3))

    def failed(self, m: Member, error: str, t0: float) -> None:
        self.summary.outcomes.append(Outcome(m.name, m.host, "failed", error, took_s=time.monotonic() - t0))
        self.moved("running", "failed")
        self.running.failed.append({"database": m.name, "error": error})
        if self.running.metrics is not None:
            self.running.metrics.failed.labels(m.name).set(1)
        log.error("farm_database_failed", database=m.name, host=m.host, error=error)
        if self.farm.on_failure == "stop":
            log.error("farm_stopping", detail="on_failure = \"stop\": the databases in flight finish their batches, "
                                              "no other starts")
            self.stop.set()


async def status(config: Config, shard: tuple[int, int] | None = None) -> dict[str, Any]:
    """Each database's jobs as `status` reads them (daemon.status), max_concurrent at a time, and the farm's
    counts: a database is done when every job completed, failed when one failed, running when one runs, pending
    when none started (or its state table is not there yet), unreadable when it cannot be read."""
    from backfilld import daemon

    assert config.farm is not None
    mine = [m for m in members(config) if in_shard(m.name, shard)]
    sem = asyncio.Semaphore(config.farm.max_concurrent)
    out: list[dict[str, Any]] = [{} for _ in mine]

    async def one(i: int, m: Member) -> None:
        async with sem:
            try:
                jobs = await daemon.status(m.config)
            except BackfilldError as exc:
                out[i] = {"database": m.name, "host": m.host, "state": "unreadable", "error": str(exc), "jobs": []}
                return
            statuses = [j["status"] for j in jobs]
            if "failed" in statuses:
                state = "failed"
            elif statuses and all(s == "completed" for s in statuses):
                state = "done"
            elif all(s in ("not_started", "pending") for s in statuses):
                state = "pending"
            else:
                state = "running"
            out[i] = {"database": m.name, "host": m.host, "state": state,
                      "rows_done": sum(int(j.get("rows_done") or 0) for j in jobs), "jobs": jobs}

    await asyncio.gather(*(one(i, m) for i, m in enumerate(mine)))
    counts: dict[str, int] = {k: 0 for k in ("done", "running", "failed", "pending", "unreadable")}
    for d in out:
        counts[d["state"]] += 1
    return {"databases": out, "counts": counts, "rows_done": sum(int(d.get("rows_done") or 0) for d in out),
            "eta_s": eta_s(out, config.farm.max_concurrent)}


def _seconds(job: dict[str, Any]) -> float | None:
    """How long a completed job's run took, from its state row's started_at and finished_at."""
    from datetime import datetime

    try:
        return (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def eta_s(databases: list[dict[str, Any]], concurrency: int) -> float | None:
    """The farm's remaining time, estimated: the databases not done (pending and running, a running one as half
    left) times the median time a done database took, over the databases that run at once. None until a
    database is done, or when none is left (0)."""
    left = sum(1.0 for d in databases if d["state"] == "pending") + \
        sum(0.5 for d in databases if d["state"] == "running")
    if not left:
        return 0.0
    took = sorted(t for d in databases if d["state"] == "done"
                  for t in [sum(filter(None, (_seconds(j) for j in d["jobs"])))] if t > 0)
    if not took:
        return None
    return round(left * took[len(took) // 2] / max(1, concurrency), 1)


def chosen(config: Config, shard: tuple[int, int] | None, database: str | None) -> list[Member]:
    """The databases a command acts on: the one named, else those of the shard (every one without a shard)."""
    if database is not None:
        return [select(config, database)]
    return [m for m in members(config) if in_shard(m.name, shard)]


def select(config: Config, database: str) -> Member:
    """The farm database named (its full name, or the database name alone where that is unique)."""
    found = [m for m in members(config) if m.name == database or m.name.rpartition("/")[2] == database
             or Path(m.name).name == database]
    if len(found) != 1:
        known = ", ".join(m.name for m in members(config)[:10])
        raise ConfigError(f"--database {database!r} names {'no' if not found else 'more than one'} database of "
                          f"the farm (e.g. {known}); give its full name as status shows it")
    return found[0]


async def run_with_endpoints(config: Config, opts: Any, *, shard: tuple[int, int] | None,
                             stop: asyncio.Event) -> Summary:
    """A farm run as `backfilld run` makes it: each database a Daemon behind its host's gate, and the process's
    HTTP endpoints ([metrics] listen) answering for the farm: /metrics (FarmMetrics), /status (the farm's counts,
    the failed databases and each running one's jobs), /readyz, /healthz (503 naming a stalled database)."""
    from backfilld.metrics import Server

    metrics = FarmMetrics()
    running = Running(metrics)
    server = None
    address = config.metrics.address
    if address is not None:
        server = Server(metrics, running.status, running.ready, running.stalled)   # type: ignore[arg-type]
        try:
            await server.listen(*address)
        except OSError as exc:
            raise ConfigError(f"metrics.listen: cannot listen on {config.metrics.listen} ({exc.strerror}); "
                              "choose a free host:port, or \"\" to turn the endpoints off") from None
        server.serve_soon()
        log.info("http_listening", listen=f"{address[0]}:{server.port}",
                 endpoints=["/metrics", "/healthz", "/readyz", "/status"])
    try:
        return await run(config, shard=shard, stop=stop, run_one=daemon_run(opts, running), running=running)
    finally:
        if server is not None:
            await server.close()
