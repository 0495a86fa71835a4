"""The shipped Grafana dashboard and alert rules against a real Prometheus scraping the real daemon.

One scenario (module fixture ``stack``) runs the daemon as a process on a 20,000-row SQLite table, with the
scrape job of deploy/prometheus/prometheus.example.yml and the rules of deploy/prometheus/alerts.yml loaded
into a real Prometheus (Debian package ``prometheus``) that scrapes every second. The scenario makes every
series the dashboard and the alerts use appear: it starts with the throttle's flag file present (reason
flag_file), pauses and resumes the job with the CLI (operator), paces writes with max_rows_per_s (rate),
holds SQLite's write lock so that batches fail and are retried (retries/errors, outcome="retried"), reloads
[throttle] with SIGHUP, and lets the job complete. SQLite has no replicas, so a second daemon runs on the
PostgreSQL test server with that same server configured as its replica ("self-loop"): its heartbeat probe
reads back its own heartbeat, which makes backfilld_replica_lag_seconds real (about 0).

Then every expression of every dashboard panel (template variables filled in as Grafana would) and every
alert rule is evaluated through Prometheus' HTTP API: each must succeed, each backfilld_* name it uses must
be among the scraped names, each dashboard query must return data over the run, and no alert may fire on
this healthy run. Prometheus' own evaluation of the loaded rules must report no error.

Needs prometheus and promtool (``apt-get install prometheus``; listed in .ci/apt-packages); without them the
tests are skipped, and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, PG_URL, _unreachable, require_server

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "backfilld.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts.test.yml"
PROM_EXAMPLE = DEPLOY / "prometheus" / "prometheus.example.yml"

ROWS = 20_000
JOB = "fill_label"
PG_JOB = "pg_fill"
REPLICA = "self-loop"
MAX_LAG_S = 2.5          # configured limit, read back as backfilld_max_lag_seconds
MAX_LAG_RELOADED = 3.5   # after SIGHUP
SECRET = "pw-" + uuid.uuid4().hex   # the PostgreSQL daemon's password (trust auth ignores it)
SCRAPE_S = 1
# Grafana's built-in variables, as Grafana would fill them for this run's range and a 1 s scrape interval.
RATE_INTERVAL = "10s"
INTERVAL = "1s"

# Every label backfilld may put on a series (plus Prometheus' instance and the histogram's le), and the
# values the bounded ones may take (metrics.JOB_STATES, metrics.THROTTLE_REASONS, the batch outcomes).
ALLOWED_LABELS = {"__name__", "instance", "job", "backfill_job", "state", "outcome", "reason", "kind", "replica", "le",
                  "database", "host"}
# a third daemon runs a farm of FARM_DBS SQLite files (farm mode: its series carry database and host labels)
FARM_JOB = "farm_label"
FARM_DBS = [f"wikis/wiki{i}.sqlite" for i in range(3)]
BOUNDED = {
    "state": {"pending", "running", "paused", "completed", "failed", "stopped"},
    "reason": {"lag", "lag_unknown", "load", "load_unknown", "app_wait", "busy", "flag_file", "window", "rate",
               "operator"},
    "outcome": {"applied", "retried", "failed"},
}


# ------------------------------------------------------------------------------------------ tools


def require_tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if path is None:
        msg = f"{name} is not installed (Debian package 'prometheus', listed in .ci/apt-packages)"
        if IN_CI:
            pytest.fail(f"CI=true but {msg}")
        pytest.skip(msg)
    return path


def require_yaml() -> Any:
    try:
        import yaml
    except ImportError:
        if IN_CI:
            pytest.fail("CI=true but PyYAML is not installed; it must be in the [test] extra")
        pytest.skip("PyYAML is not installed (pip install pyyaml)")
    return yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, timeout: float = 5) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


def wait_for(what: str, check, timeout: float, interval: float = 0.2):
    """Poll check() until it returns something truthy; fail with `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, ValueError, KeyError) as exc:  # server not up yet, partial output
            last_exc, value = exc, None
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last error: {last_exc})" if last_exc
                                                                          else ""))


def scrape_value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text format, or None when it is not exposed."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


# ------------------------------------------------------------------------------------------ daemon


@dataclass
class DaemonProc:
    name: str
    proc: subprocess.Popen
    log_path: Path
    config: Path
    port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"http://{self.address}"

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def metrics(self) -> str:
        status, body, _ = http(self.base + "/metrics")
        assert status == 200
        return body.decode()

    def status(self) -> dict[str, Any]:
        status, body, _ = http(self.base + "/status")
        assert status == 200
        return json.loads(body)

    def job_status(self, job: str) -> dict[str, Any]:
        return next(j for j in self.status()["jobs"] if j["job"] == job)


def start_daemon(name: str, config: Path, log_path: Path, env: dict[str, str]) -> DaemonProc:
    log = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "backfilld", "run", "--follow", str(config)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=config.parent,
                            env={**os.environ, **env})
    log.close()
    d = DaemonProc(name, proc, log_path, config)

    def listening() -> int | None:
        if proc.poll() is not None:
            pytest.fail(f"daemon {name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        for ev in d.events():
            if ev.get("event") == "http_listening":
                return int(ev["listen"].rpartition(":")[2])
        return None

    d.port = wait_for(f"daemon {name} to log http_listening", listening, 60)
    return d


def stop_process(proc: subprocess.Popen, timeout: float = 30) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def cli(*args: str, config: Path) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "backfilld", args[0], str(config), *args[1:]], check=False,
                       capture_output=True, text=True, timeout=60, cwd=config.parent)
    assert r.returncode == 0, f"backfilld {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def sqlite_config(db: Path, flag: Path, *, lock_timeout_s: float, max_lag_s: float = MAX_LAG_S) -> str:
    return f"""
[database]
url = "sqlite:///{db}"
lock_timeout_s = {lock_timeout_s}

[logging]
level = "info"
format = "json"

[metrics]
listen = "127.0.0.1:0"

[throttle]
max_lag_s = {max_lag_s}
resume_lag_s = 1.0
max_rows_per_s = 2000
flag_file = "{flag}"
target_batch_time_s = 0.05
min_batch = 100
max_batch = 1000

[[jobs]]
name = "{JOB}"
table = "items"
batch_size = 200
follow_interval_s = 1.0
max_retries = 30
[jobs.set]
label = "'item-' || id"
"""


def start_farm_daemon(tmp: Path) -> DaemonProc:
    """A farm of three SQLite files, each a small table, run with --follow like the others."""
    folder = tmp / "farm"
    (folder / "wikis").mkdir(parents=True)
    for name in FARM_DBS:
        make_items(folder / name, rows=ROWS // 4)
    config = folder / "farm.toml"
    config.write_text(f"""
[database]
url = "sqlite:///{folder}/unused.sqlite"

[logging]
level = "info"
format = "json"

[metrics]
listen = "127.0.0.1:0"

[throttle]
max_rows_per_s = 1500
min_batch = 100
max_batch = 500

[farm]
sqlite_glob = "wikis/*.sqlite"

[[jobs]]
name = "{FARM_JOB}"
table = "items"
follow_interval_s = 1.0
[jobs.set]
label = "'item-' || id"
""", encoding="utf-8")
    return start_daemon("farm", config, tmp / "farm.log", {})


# ------------------------------------------------------------------------------------------ PostgreSQL


async def _pg(sql: list[str]) -> None:
    from backfilld import engines
    from backfilld.config import parse_url

    engine = engines.create(parse_url(PG_URL))
    await engine.connect()
    try:
        for stmt in sql:
            await engine.execute(stmt)
    finally:
        await engine.close()


@dataclass
class PgSide:
    daemon: DaemonProc | None = None
    reason: str | None = None         # why there is no PostgreSQL daemon
    tables: list[str] = field(default_factory=list)


def start_pg_daemon(tmp: Path) -> PgSide:
    reason = _unreachable(PG_URL)
    if reason:
        return PgSide(reason=reason)
    sfx = uuid.uuid4().hex[:8]
    table, state, hb = f"bf_prom_items_{sfx}", f"bf_prom_state_{sfx}", f"bf_prom_hb_{sfx}"
    side = PgSide(tables=[table, state, hb])
    asyncio.run(_pg([f"CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(50), label VARCHAR(80))",
                     f"INSERT INTO {table} (id, name) SELECT g, 'n' || g FROM generate_series(1, 500) AS g"]))
    config = tmp / "pg.toml"
    config.write_text(f"""
[database]
url = "{PG_URL}"
password_env = "BACKFILLD_TEST_PG_SECRET"

[state]
table = "{state}"
heartbeat_table = "{hb}"

[logging]
format = "json"

[metrics]
listen = "127.0.0.1:0"

# The primary watched as its own replica: the heartbeat probe reads back this daemon's own heartbeat.
[[replicas]]
name = "{REPLICA}"
url = "{PG_URL}"
password_env = "BACKFILLD_TEST_PG_SECRET"

[[jobs]]
name = "{PG_JOB}"
table = "{table}"
follow_interval_s = 1.0
[jobs.set]
label = "name || '!'"
""", encoding="utf-8")
    side.daemon = start_daemon("postgresql", config, tmp / "pg.log", {"BACKFILLD_TEST_PG_SECRET": SECRET})
    return side


def drop_pg(side: PgSide) -> None:
    if side.tables:
        asyncio.run(_pg([f"DROP TABLE IF EXISTS {t}" for t in side.tables]))


# ------------------------------------------------------------------------------------------ Prometheus


@dataclass
class Prom:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: Any) -> Any:
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        status, body, _ = http(url, timeout=30)
        doc = json.loads(body)
        assert status == 200 and doc.get("status") == "success", f"{path} {params}: HTTP {status}: {doc}"
        return doc["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        assert data["resultType"] in ("vector", "scalar"), (expr, data["resultType"])
        return data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]

    def query_range(self, expr: str, start: float, end: float, step: float = SCRAPE_S) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=str(step))
        assert data["resultType"] == "matrix", (expr, data["resultType"])
        return data["result"]

    def scalar(self, expr: str) -> float | None:
        res = self.query(expr)
        return float(res[0]["value"][1]) if res else None


def start_prometheus(tmp: Path, targets: list[str]) -> Prom:
    yaml = require_yaml()
    binary = require_tool("prometheus")
    example = yaml.safe_load(PROM_EXAMPLE.read_text(encoding="utf-8"))
    scrape = dict(next(s for s in example["scrape_configs"] if s["job_name"] == "backfilld"))
    # the example's scrape job as shipped (no honor_labels), pointed at this run's daemons, every 1 s
    scrape.update(scrape_interval=f"{SCRAPE_S}s", scrape_timeout=f"{SCRAPE_S}s",
                  static_configs=[{"targets": targets}])
    config = {"global": {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": f"{SCRAPE_S}s",
                         "evaluation_interval": f"{SCRAPE_S}s"},
              "rule_files": [str(ALERTS)], "scrape_configs": [scrape]}
    cfg_path = tmp / "prometheus.yml"
    cfg_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={cfg_path}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=tmp)
    prom = Prom(proc, port, log_path)

    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"prometheus exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        return http(prom.base + "/-/ready", timeout=2)[0] == 200

    wait_for("prometheus to be ready", ready, 60)
    return prom


def wait_scrapes(prom: Prom, daemons: list[DaemonProc], after: float, n: int = 2) -> None:
    """Until Prometheus holds a sample of every daemon taken at least n scrape intervals after `after`."""
    instances = "|".join(re.escape(d.address) for d in daemons)

    def done() -> bool:
        res = prom.query(f"timestamp(backfilld_up{{instance=~`{instances}`}})")  # `raw`: no escapes
        return len(res) == len(daemons) and all(float(r["value"][1]) >= after + n * SCRAPE_S for r in res)

    wait_for(f"{n} scrapes of {[d.address for d in daemons]}", done, 30 + n * SCRAPE_S)


# ------------------------------------------------------------------------------------------ the scenario


@dataclass
class Stack:
    tmp: Path
    db: Path
    daemon: DaemonProc
    cli_config: Path
    pg: PgSide
    prom: Prom
    started: float
    finished: float = 0.0
    daemons: list[DaemonProc] = field(default_factory=list)


def make_items(db: Path, rows: int = ROWS) -> None:
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, label TEXT)")
    con.executemany("INSERT INTO items (id, name) VALUES (?, ?)", ((i, f"n{i}") for i in range(1, rows + 1)))
    con.commit()
    con.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):  # one scenario, step by step
    require_tool("prometheus")
    require_yaml()
    tmp = tmp_path_factory.mktemp("prom")
    db, flag = tmp / "items.sqlite", tmp / "pause.flag"
    make_items(db)
    config, cli_config = tmp / "backfilld.toml", tmp / "cli.toml"
    # Batches may wait only 50 ms for SQLite's write lock, so that holding it makes them fail and retry;
    # the CLI's copy (same database and state table) waits longer, so that pause/resume never lose that race.
    config.write_text(sqlite_config(db, flag, lock_timeout_s=0.05), encoding="utf-8")
    cli_config.write_text(sqlite_config(db, flag, lock_timeout_s=5.0), encoding="utf-8")
    flag.touch()  # held back until Prometheus watches: reason flag_file
    started = time.time()
    daemon = start_daemon("sqlite", config, tmp / "sqlite.log", {})
    pg = PgSide()
    prom: Prom | None = None
    farm: DaemonProc | None = None
    try:
        farm = start_farm_daemon(tmp)
        pg = start_pg_daemon(tmp)
        daemons = [daemon, farm] + ([pg.daemon] if pg.daemon else [])
        prom = start_prometheus(tmp, [d.address for d in daemons])
        s = Stack(tmp, db, daemon, cli_config, pg, prom, started, daemons=daemons)

        # 1. throttled by the flag file, seen by Prometheus
        wait_for("throttled{reason=flag_file} = 1", lambda: scrape_value(daemon.metrics(), "backfilld_throttled",
                                                                         backfill_job=JOB, reason="flag_file") == 1, 30)
        wait_scrapes(prom, daemons, time.time(), 2)
        assert daemon.job_status(JOB)["rows_done"] == 0, "the flag file did not hold the job back"
        flag.unlink()
        wait_for("progress after the flag file is gone", lambda: daemon.job_status(JOB)["rows_done"] > 0, 30)

        # 2. paused and resumed by an operator
        cli("pause", JOB, config=cli_config)
        wait_for("operator pause",
                 lambda: scrape_value(daemon.metrics(), "backfilld_operator_paused", backfill_job=JOB) == 1, 30)
        assert daemon.job_status(JOB)["operator_paused"] is True
        wait_scrapes(prom, daemons, time.time(), 2)
        cli("resume", JOB, config=cli_config)
        wait_for("operator resume",
                 lambda: scrape_value(daemon.metrics(), "backfilld_operator_paused", backfill_job=JOB) == 0, 30)

        # 3. SQLite's write lock held by someone else: batches fail with lock_timeout and are retried
        holder = sqlite3.connect(db, timeout=10, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            wait_for("a retried batch",
                     lambda: (scrape_value(daemon.metrics(), "backfilld_retries_total", backfill_job=JOB,
                                           kind="lock_timeout") or 0) >= 1, 30)
            wait_scrapes(prom, daemons, time.time(), 1)
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        # 4. SIGHUP re-reads [throttle] (systemd's ExecReload): the limit the dashboard draws changes
        config.write_text(sqlite_config(db, flag, lock_timeout_s=0.05, max_lag_s=MAX_LAG_RELOADED), encoding="utf-8")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for("max_lag_s reloaded", lambda: scrape_value(daemon.metrics(), "backfilld_max_lag_seconds")
                 == MAX_LAG_RELOADED, 30)

        # 5. to completion; then a few more scrapes so that Prometheus sees the end state
        wait_for("the job to complete", lambda: daemon.job_status(JOB)["status"] == "completed", 120, 0.5)
        if pg.daemon:
            wait_for("the PostgreSQL job to complete", lambda: pg.daemon.job_status(PG_JOB)["status"] == "completed",
                     60, 0.5)
        # --follow: a farm database that completed goes on sweeping, its job's state completed
        wait_for("the farm's databases to complete",
                 lambda: all(scrape_value(farm.metrics(), "backfilld_job_state", backfill_job=FARM_JOB, database=db,
                                          state="completed") == 1 for db in FARM_DBS), 120, 0.5)
        wait_scrapes(prom, daemons, time.time(), 3)
        s.finished = time.time()
        yield s
    finally:
        for d in (daemon, farm, pg.daemon):
            if d is not None:
                stop_process(d.proc)
        if prom is not None:
            stop_process(prom.proc)
        drop_pg(pg)
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------ queries


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    yaml = require_yaml()
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"]]


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels inside collapsed rows
    return [p for p in out if p.get("type") != "row"]


def fill(expr: str, variables: dict[str, str]) -> str:
    """Fill in template variables as Grafana does: ${name}, $name, [[name]] and its built-ins."""
    values = {"__rate_interval": RATE_INTERVAL, "__interval": INTERVAL, "__range": "1h", **variables}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in values:
            raise AssertionError(f"unknown template variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", sub, expr)


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title / refId, expression) of every target of every panel."""
    return [(f"{p['title']} / {t.get('refId', '?')}", t["expr"]) for p in panels(dashboard())
            for t in p.get("targets", []) if t.get("expr")]


def names_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(backfilld_[a-zA-Z0-9_]+)\b", expr))


ALL = {"instance": ".*", "job": ".*"}


def known_names(stack: Stack) -> set[str]:
    """The backfilld_* names Prometheus scraped; without PostgreSQL (outside CI) no daemon has a replica, so
    the replica lag is taken on trust here and test_replica_lag_series reports the skip."""
    names = set(stack.prom.api("label/__name__/values"))
    if stack.pg.daemon is None:
        names.add("backfilld_replica_lag_seconds")
    return names


# ------------------------------------------------------------------------------------------ promtool


def test_promtool_check_rules() -> None:
    promtool = require_tool("promtool")
    r = subprocess.run([promtool, "check", "rules", str(ALERTS)], check=False, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_promtool_rule_unit_tests() -> None:
    """alerts.test.yml: each alert fires on the synthetic series it is meant for, and not on the others."""
    promtool = require_tool("promtool")
    r = subprocess.run([promtool, "test", "rules", str(ALERTS_TEST)], check=False, capture_output=True, text=True,
                       timeout=120, cwd=ALERTS_TEST.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_example_config() -> None:
    promtool = require_tool("promtool")
    r = subprocess.run([promtool, "check", "config", str(PROM_EXAMPLE)], check=False, capture_output=True, text=True,
                       timeout=60, cwd=PROM_EXAMPLE.parent)
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------------------------------ the endpoints


def test_endpoints(stack: Stack) -> None:
    status, body, ctype = http(stack.daemon.base + "/healthz")
    assert status == 200 and ctype.startswith("application/json") and json.loads(body)["status"] == "ok"
    status, body, ctype = http(stack.daemon.base + "/readyz")
    assert status == 200 and ctype.startswith("application/json")
    assert json.loads(body)["ready"] is True
    status, body, ctype = http(stack.daemon.base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    st = stack.daemon.status()
    job = next(j for j in st["jobs"] if j["job"] == JOB)
    assert job["status"] == "completed" and job["rows_done"] == ROWS and job["operator_paused"] is False
    assert job["error"] is None
    assert st["throttle"]["max_lag_s"] == MAX_LAG_RELOADED and st["ready"] is True
    con = sqlite3.connect(stack.db)
    try:
        assert con.execute("SELECT count(*) FROM items WHERE label IS NULL OR label <> 'item-' || id").fetchone() \
            == (0,)
    finally:
        con.close()


def test_scenario_is_in_prometheus(stack: Stack) -> None:
    """What the scenario did, as Prometheus recorded it (and so as the dashboard shows it)."""
    # the backfill job's name in its own label, Prometheus' `job` left as the scrape job's name
    p, j = stack.prom, f'job="backfilld", backfill_job="{JOB}", instance="{stack.daemon.address}"'
    assert p.scalar(f"sum(backfilld_rows_processed_total{{{j}}})") == ROWS
    assert p.scalar(f'backfilld_job_state{{{j}, state="completed"}}') == 1
    assert p.scalar(f'backfilld_progress_ratio{{{j}}}') == 1
    for reason in ("flag_file", "operator", "rate"):
        assert (p.scalar(f'backfilld_throttled_seconds_total{{{j}, reason="{reason}"}}') or 0) > 0, reason
    assert p.scalar(f'max_over_time(backfilld_throttled{{{j}, reason="flag_file"}}[10m])') == 1
    assert p.scalar(f'max_over_time(backfilld_operator_paused{{{j}}}[10m])') == 1
    assert (p.scalar(f'backfilld_retries_total{{{j}, kind="lock_timeout"}}') or 0) >= 1
    assert (p.scalar(f'backfilld_batches_total{{{j}, outcome="retried"}}') or 0) >= 1
    assert p.scalar(f'max_over_time(backfilld_eta_seconds{{{j}}}[10m])') > 0
    assert p.scalar(f'min_over_time(backfilld_max_lag_seconds{{instance="{stack.daemon.address}"}}[10m])') \
        == MAX_LAG_S
    assert p.scalar(f'backfilld_max_lag_seconds{{instance="{stack.daemon.address}"}}') == MAX_LAG_RELOADED


def test_replica_lag_series(stack: Stack) -> None:
    if stack.pg.daemon is None:
        require_server(PG_URL)  # skips with the reason (fails under CI=true)
    lag = stack.prom.query(f'backfilld_replica_lag_seconds{{replica="{REPLICA}"}}')
    assert len(lag) == 1
    value = float(lag[0]["value"][1])
    assert 0 <= value < 1.0, f"the self-loop replica's lag should be about 0, got {value}"
    assert lag[0]["metric"]["instance"] == stack.pg.daemon.address


# ------------------------------------------------------------------------------------------ the dashboard


def test_dashboard_variables_resolve(stack: Stack) -> None:
    """The template variables' label_values() queries find both daemons and the backfill jobs' names."""
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q.strip())
        assert m, f"variable {var['name']}: expected label_values(selector, label), got {q!r}"
        selector, label = fill(m.group(1), ALL), m.group(2)
        for name in names_in(selector):
            assert stack.prom.query(f"count({name})"), f"variable {var['name']}: no series {name}"
        values = set(stack.prom.api(f"label/{label}/values", **{"match[]": selector}))
        if label == "instance":
            assert {d.address for d in stack.daemons} <= values, (var["name"], values)
        if label == "backfill_job":
            # the backfill jobs' own names
            expected = {JOB, FARM_JOB} | ({PG_JOB} if stack.pg.daemon else set())
            assert values == expected, (var["name"], values)


@pytest.mark.parametrize("variables", [ALL, {"instance": ".*", "job": JOB}], ids=["all", "one-job"])
def test_dashboard_queries(stack: Stack, variables: dict[str, str]) -> None:
    """Every panel query runs, names only scraped metrics, and shows data over the run, as Grafana would."""
    scraped = known_names(stack)
    problems = []
    for where, raw in dashboard_exprs():
        expr = fill(raw, variables)
        missing = names_in(expr) - scraped
        if missing:
            problems.append(f"{where}: {sorted(missing)} not among the scraped series")
            continue
        try:
            stack.prom.query(expr)  # instant, as stat panels run it
            series = stack.prom.query_range(expr, stack.started, stack.finished)
        except AssertionError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if not any(s["values"] for s in series):
            if "backfilld_replica_lag_seconds" in expr and stack.pg.daemon is None:
                continue  # no replica without PostgreSQL (see test_replica_lag_series)
            problems.append(f"{where}: no data over the run: {expr}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------------------ the alerts


def test_alert_queries(stack: Stack) -> None:
    """Every alert expression runs, names only scraped metrics, and none fires on this healthy run."""
    scraped = known_names(stack)
    problems = []
    for rule in alert_rules():
        expr = rule["expr"]
        missing = names_in(expr) - scraped
        if missing:
            problems.append(f"{rule['alert']}: {sorted(missing)} not among the scraped series")
        try:
            now = stack.prom.query(expr)
            stack.prom.query_range(expr, stack.started, stack.finished)
        except AssertionError as exc:
            problems.append(f"{rule['alert']}: {exc}")
            continue
        if now:
            problems.append(f"{rule['alert']} would fire on a healthy run: {now}")
    assert not problems, "\n".join(problems)


def test_rules_loaded_and_healthy(stack: Stack) -> None:
    """Prometheus loaded alerts.yml and evaluates every rule without error; nothing fires."""
    expected = {r["alert"] for r in alert_rules()}

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in stack.prom.api("rules")["groups"] for r in g["rules"]]
        ok = {r["name"] for r in rules if r.get("lastEvaluation", "").startswith("2")}
        return rules if ok >= expected else None

    rules = wait_for("every rule to be evaluated", evaluated, 30)
    for r in rules:
        assert r["health"] == "ok", (r["name"], r.get("lastError"))
        assert not r.get("lastError"), (r["name"], r["lastError"])
    firing = [a for a in stack.prom.api("alerts")["alerts"] if a["state"] == "firing"]
    assert not firing, firing


# ------------------------------------------------------------------------------------------ labels


def test_labels_bounded_and_free_of_secrets(stack: Stack) -> None:
    """Every series' labels are from the small fixed sets: no path, URL, table, key or password in any."""
    series = stack.prom.api("series", **{"match[]": '{__name__=~"backfilld_.*"}', "start": f"{stack.started:.3f}",
                                         "end": f"{time.time():.3f}"})
    assert series
    jobs = {JOB, FARM_JOB} | ({PG_JOB} if stack.pg.daemon else set())
    instances = {d.address for d in stack.daemons}
    forbidden = [str(stack.tmp), "sqlite", ".toml", "://", "items", "bf_prom", "5432", SECRET, "postgres"]
    for s in series:
        assert set(s) <= ALLOWED_LABELS, s
        assert s["job"] == "backfilld", s   # Prometheus' own: the scrape job's name, never overwritten
        assert s.get("backfill_job", JOB) in jobs, s
        assert s["instance"] in instances, s
        for label, allowed in BOUNDED.items():
            if label in s:
                assert s[label] in allowed, s
        if "replica" in s:
            assert s["replica"] == REPLICA, s
        for label in ("database", "host"):   # a farm's SQLite files, named by their path from the config
            if label in s:
                assert s[label] in FARM_DBS, s
        for label, value in s.items():
            if label in ("database", "host"):
                continue
            for bad in forbidden:
                assert bad not in value, f"label value {value!r} contains {bad!r}: {s}"
    # the password appears nowhere the daemon shows: metrics, status, log
    for d in stack.daemons:
        assert SECRET not in d.metrics()
        assert SECRET not in json.dumps(d.status())
        assert SECRET not in d.log_path.read_text(encoding="utf-8", errors="replace")


# ------------------------------------------------------------------------------------------ stop (last)


def test_sigterm_stops_cleanly(stack: Stack) -> None:
    """SIGTERM (systemd's KillSignal, Kubernetes' pod stop) ends the --follow daemons with exit 0."""
    for d in stack.daemons:
        t0 = time.monotonic()
        assert stop_process(d.proc, timeout=30) == 0, d.log_path.read_text()[-3000:]
        assert time.monotonic() - t0 < 30
        assert any(ev.get("event") == "stop_requested" for ev in d.events())
