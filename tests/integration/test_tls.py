"""TLS to real servers (issue 16): a PostgreSQL and a MariaDB primary/replica pair that require TLS, with a
certificate for localhost and 127.0.0.1 from a throwaway CA (tests/harness/tls.py), and the plaintext servers of
tests/conftest.py for what happens without TLS.

What a user sees: verify-full with the right CA runs a job to completion, encrypted by the server's own account;
a wrong CA, a host name the certificate lacks, or a plaintext attempt fails with a message saying so and what to
do (no traceback, nothing written); verify-ca passes where only the name differs; a replica's URL gets the same
handling; require_tls refuses plaintext to an address not on this machine, and plaintext on loopback never warns.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import structlog

from backfilld import daemon, engines, tls
from backfilld.config import parse_url
from backfilld.errors import TLSError
from tests.dbutil import CONCAT, TestDb
from tests.harness.faultproxy import FaultProxy
from tests.harness.tls import TLSPairs, tls_pairs_fixture

ROWS = 500
KINDS = ["postgresql", "mariadb"]
MODES = {"postgresql": {"disable": "disable", "prefer": "prefer", "require": "require", "verify-ca": "verify-ca",
                        "verify-full": "verify-full"},
         "mariadb": {"disable": "DISABLED", "prefer": "PREFERRED", "require": "REQUIRED", "verify-ca": "VERIFY_CA",
                     "verify-full": "VERIFY_IDENTITY"}}
PARAM = {"postgresql": ("sslmode", "sslrootcert"), "mariadb": ("ssl-mode", "ssl-ca")}


pairs = pytest.mark.replication


@pytest.fixture(scope="module")
def servers() -> Iterator[TLSPairs]:
    yield from tls_pairs_fixture()


@dataclass
class Server:
    """One TLS pair, and URLs to it in any mode."""

    kind: str
    servers: TLSPairs

    @property
    def pair(self) -> Any:
        return self.servers.pg if self.kind == "postgresql" else self.servers.mariadb

    @property
    def engine(self) -> str:
        return "postgresql" if self.kind == "postgresql" else "mysql"

    def url(self, mode: str | None = "verify-full", *, on: str = "primary", host: str = "localhost",
            port: int | None = None, ca: str | Path | None = "right") -> str:
        port = port or (self.pair.primary_port if on == "primary" else self.pair.replica_port)
        scheme, user = ("postgresql", "postgres") if self.kind == "postgresql" else ("mysql", "root")
        mode_param, ca_param = PARAM[self.kind]
        params = [f"{mode_param}={MODES[self.kind][mode]}"] if mode else []
        if ca and mode in ("verify-ca", "verify-full"):
            path = {"right": self.servers.files.ca, "wrong": self.servers.files.wrong_ca}.get(str(ca), ca)
            params.append(f"{ca_param}={path}")
        return f"{scheme}://{user}@{host}:{port}/test" + ("?" + "&".join(params) if params else "")


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest, servers: TLSPairs) -> Server:
    return Server(request.param, servers)


@pytest.fixture
async def tdb(server: Server) -> AsyncIterator[TestDb]:
    """The test's own connection (verify-full) and a users table of ROWS rows, label NULL."""
    t = TestDb(server.url(), suffix=uuid.uuid4().hex[:8])
    await t.open()
    try:
        yield t
    finally:
        await t.cleanup()


async def encrypted_by_the_servers_word(url: str) -> bool:
    """A session opened with `url` as the server reports it: pg_stat_ssl, or the session's Ssl_cipher."""
    t = TestDb(url, suffix="x")
    await t.open()
    try:
        if t.engine_name == "postgresql":
            [(on,)] = await t.q("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            return bool(on)
        [(_, cipher)] = await t.q("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        return bool(cipher)
    finally:
        await t.engine.close()


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-m", "backfilld", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd)


def write_config(path: Path, url: str, table: str, state_table: str, engine: str, *, replica: str = "",
                 extra: str = "") -> Path:
    expr = CONCAT[engine].replace('"', '\\"')
    replicas = f'[[replicas]]\nname = "r1"\nurl = "{replica}"\n' if replica else ""
    path.write_text(f"""
[database]
url = "{url}"
{extra}
[state]
table = "{state_table}"

[logging]
format = "json"

[metrics]
listen = ""

[throttle]
heartbeat_interval_s = 0.05
{replicas}
[[jobs]]
name = "labels"
table = "{table}"
batch_size = 100
[jobs.set]
label = "{expr}"
""", encoding="utf-8")
    return path


async def labels(tdb: TestDb, table: str) -> tuple[int, int]:
    """(rows labelled right, rows labelled at all)."""
    rows = await tdb.q(f"SELECT id, name, label FROM {table}")
    return (sum(1 for i, n, lab in rows if lab == f"{n}#{i}"), sum(1 for _, _, lab in rows if lab is not None))


def connections_log(server: Server, on: str, offset: int) -> list[str]:
    """PostgreSQL's "connection authorized" lines of backfilld's sessions (log_connections) since offset."""
    text = server.pair.log_path(on).read_bytes()[offset:].decode("utf-8", "replace")
    return [line for line in text.splitlines()
            if "connection authorized" in line and "application_name=backfilld" in line]


def ssl_accepts(server: Server, on: str = "primary") -> int:
    """MariaDB's count of TLS handshakes it accepted."""
    return int(server.pair.query("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'", on=on, database=None)[0][1])


# ------------------------------------------------------------------------------------------ the right CA


@pairs
async def test_verify_full_runs_a_job_to_completion_encrypted(server: Server, tdb: TestDb, tmp_path: Path) -> None:
    """The CLI as a process, the CA given relative to the config file: every row right, exit 0, and the server's
    word that backfilld's sessions were encrypted."""
    table = await tdb.users_with(ROWS)
    shutil.copy(server.servers.files.ca, tmp_path / "our-ca.pem")
    url = server.url().replace(str(server.servers.files.ca), "our-ca.pem")   # relative: the config's folder
    cfg = write_config(tmp_path / "backfilld.toml", url, table, tdb.state_table, server.engine)
    tdb.created.append(tdb.state_table)
    log_at = server.pair.log_path().stat().st_size
    accepts = ssl_accepts(server) if server.kind == "mariadb" else 0
    proc = cli("run", str(cfg), cwd=Path("/"))
    assert proc.returncode == 0, proc.stderr
    assert "job_completed" in proc.stderr and "connection_not_encrypted" not in proc.stderr
    assert await labels(tdb, table) == (ROWS, ROWS)
    if server.kind == "postgresql":
        lines = connections_log(server, "primary", log_at)
        assert lines and all("SSL enabled" in line for line in lines), lines
    else:   # require_secure_transport = ON admits no plaintext TCP; and the server counted TLS handshakes
        assert ssl_accepts(server) > accepts
    assert await encrypted_by_the_servers_word(server.url())


@pairs
@pytest.mark.parametrize("mode", ["require", "prefer", None])
async def test_require_and_prefer_encrypt_without_a_ca(server: Server, mode: str | None) -> None:
    """require encrypts without checking the certificate (none is given); prefer (also the default, no
    parameter) takes TLS where the server offers it."""
    assert await encrypted_by_the_servers_word(server.url(mode, host="127.0.0.1"))


@pairs
async def test_an_encrypted_connection_is_read_as_encrypted(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The verdict reads the connection itself (no round trip): taken for remote and under require_tls, a TLS
    connection passes and a plaintext one (to a server that allows it, see below) would not."""
    monkeypatch.setattr(tls, "is_local", lambda peer: False)
    for mode in ("verify-full", "require"):
        engine = engines.create(replace(parse_url(server.url(mode)), require_tls=True))
        await engine.connect()
        await engine.close()


# ------------------------------------------------------------------------------------------ what fails


@pairs
async def test_a_wrong_ca_fails_naming_certificate_verification(server: Server, tdb: TestDb,
                                                                tmp_path: Path) -> None:
    table = await tdb.users_with(ROWS)
    cfg = write_config(tmp_path / "c.toml", server.url(ca="wrong"), table, tdb.state_table, server.engine)
    proc = cli("run", str(cfg))
    assert proc.returncode == 1, proc.stderr
    assert "certificate verification failed" in proc.stderr, proc.stderr
    assert "give the CA that signed it" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert await labels(tdb, table) == (0, 0)
    assert not await tdb.q(f"SELECT 1 FROM information_schema.tables WHERE table_name = '{tdb.state_table}'")


@pairs
async def test_a_plaintext_attempt_is_refused_by_the_server_requiring_tls(server: Server, tdb: TestDb,
                                                                          tmp_path: Path) -> None:
    table = await tdb.users_with(ROWS)
    cfg = write_config(tmp_path / "c.toml", server.url("disable", host="127.0.0.1"), table, tdb.state_table,
                       server.engine)
    proc = cli("run", str(cfg))
    assert proc.returncode == 1, proc.stderr
    mode_param, ca_param = PARAM[server.kind]
    fix = f"set {mode_param}={MODES[server.kind]['verify-full']} and {ca_param}=<the CA's file> in database.url"
    if server.kind == "postgresql":   # the server says why ("no encryption"), so the hint is firm
        assert "no encryption; the server accepts only encrypted connections: " + fix in proc.stderr, proc.stderr
    else:   # MariaDB answers "Access denied", as for a wrong password: the hint says it may mean this
        assert "Access denied" in proc.stderr and "refuses it in these words: if it does, " + fix in proc.stderr
    assert "Traceback" not in proc.stderr
    assert await labels(tdb, table) == (0, 0)


@pairs
async def test_a_host_name_the_certificate_lacks_fails_verify_full_and_passes_verify_ca(server: Server) -> None:
    """127.0.0.2 is this machine too, but the certificate names localhost and 127.0.0.1 only."""
    with FaultProxy("127.0.0.1", server.pair.primary_port, listen_host="127.0.0.2") as proxy:
        with pytest.raises(TLSError) as e:
            await encrypted_by_the_servers_word(server.url(host="127.0.0.2", port=proxy.port))
        msg = str(e.value)
        assert "certificate verification failed" in msg and "mismatch" in msg.lower(), msg
        assert "connect by a host name the certificate names" in msg, msg
        assert await encrypted_by_the_servers_word(server.url("verify-ca", host="127.0.0.2", port=proxy.port))


# ------------------------------------------------------------------------------------------ replicas


@pairs
async def test_a_replica_url_reaches_the_lag_probe_encrypted(server: Server, tdb: TestDb) -> None:
    """The job waits for the replica's first lag reading: it completes only if the probe connected, and the
    replica (which also requires TLS) says the probe's session was encrypted."""
    table = await tdb.users_with(ROWS)
    server.pair.wait_caught_up(30)
    log_at = server.pair.log_path("replica").stat().st_size
    accepts = ssl_accepts(server, "replica") if server.kind == "mariadb" else 0
    cfg = tdb.config([{"name": "labels", "table": table, "batch_size": 100,
                       "set": {"label": CONCAT[server.engine]}}],
                     replicas=[{"name": "r1", "url": server.url(on="replica")}],
                     throttle={"heartbeat_interval_s": 0.05, "fail_closed_after_s": 5})
    with structlog.testing.capture_logs() as logs:
        [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and await labels(tdb, table) == (ROWS, ROWS)
    assert not [e for e in logs if e["event"] == "connection_not_encrypted"]
    if server.kind == "postgresql":
        lines = connections_log(server, "replica", log_at)
        assert lines and all("SSL enabled" in line for line in lines), lines
    else:
        assert ssl_accepts(server, "replica") > accepts


@pairs
async def test_a_replica_url_with_a_wrong_ca_stops_the_daemon_before_a_batch(server: Server, tdb: TestDb) -> None:
    table = await tdb.users_with(ROWS)
    cfg = tdb.config([{"name": "labels", "table": table, "set": {"label": CONCAT[server.engine]}}],
                     replicas=[{"name": "r1", "url": server.url(on="replica", ca="wrong")}],
                     throttle={"heartbeat_interval_s": 0.05})
    with pytest.raises(TLSError) as e:
        await daemon.run(cfg, daemon.RunOptions())
    msg = str(e.value)
    assert msg.startswith("replicas[0].url: ") and "certificate verification failed" in msg, msg
    assert await labels(tdb, table) == (0, 0)


# ------------------------------------------------------------------------------------------ without TLS


plaintext = pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])


@plaintext
async def test_plaintext_on_loopback_does_not_warn(db: TestDb, monkeypatch: pytest.MonkeyPatch) -> None:
    """The conftest servers have no TLS: prefer (the default) goes on in plaintext, which on loopback is no
    network to protect, and require_tls does not object either."""
    monkeypatch.setattr(tls, "_warned", set())
    table = await db.users_with(ROWS)
    cfg = db.config([{"name": "labels", "table": table, "set": {"label": CONCAT[db.engine_name]}}],
                    database={"url": db.url, "require_tls": True})
    with structlog.testing.capture_logs() as logs:
        [state] = await daemon.run(cfg, daemon.RunOptions())
    assert state.status == "completed" and await labels(db, table) == (ROWS, ROWS)
    assert not [e for e in logs if e["event"] == "connection_not_encrypted"]


@plaintext
async def test_require_tls_refuses_plaintext_to_an_address_off_this_machine(db: TestDb,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine offers no database at an address off it (and tests send nothing off it), so the server is
    the loopback one, taken for remote: a real plaintext connection, judged as one over a network would be.
    Without require_tls: one warning per URL, the job runs; with it: an error saying what to do, nothing written."""
    monkeypatch.setattr(tls, "is_local", lambda peer: False)
    monkeypatch.setattr(tls, "_warned", set())
    table = await db.users_with(ROWS)
    job = [{"name": "labels", "table": table, "set": {"label": CONCAT[db.engine_name]}}]
    with pytest.raises(TLSError) as e:
        await daemon.run(db.config(job, database={"url": db.url, "require_tls": True}), daemon.RunOptions())
    msg = str(e.value)
    assert "not encrypted" in msg and "require_tls = true" in msg and "nothing was written" in msg, msg
    assert await labels(db, table) == (0, 0)
    with structlog.testing.capture_logs() as logs:
        [state] = await daemon.run(db.config(job), daemon.RunOptions())
    assert state.status == "completed"
    warned = [e for e in logs if e["event"] == "connection_not_encrypted"]
    assert len(warned) == 1 and warned[0]["role"] == "primary" and warned[0]["host"] == "127.0.0.1", warned


@plaintext
async def test_tls_required_of_a_server_without_tls_fails_before_authenticating(db: TestDb) -> None:
    url = db.url + ("?sslmode=require" if db.engine_name == "postgresql" else "?ssl-mode=REQUIRED")
    with pytest.raises(TLSError) as e:
        await encrypted_by_the_servers_word(url)
    assert re.search(r"the server offers no TLS, and (sslmode|ssl-mode)=(require|REQUIRED) requires it",
                     str(e.value)), str(e.value)


def test_a_missing_ca_file_is_a_config_error_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "postgresql://app@db.example.test/app?sslmode=verify-full&sslrootcert='
                   'certs/ca.pem"\n[[jobs]]\nname = "j"\ntable = "t"\n[jobs.set]\nc = "1"\n')
    proc = cli("plan", str(cfg))
    assert proc.returncode == 2, proc.stderr
    assert f"database.url: sslrootcert {tmp_path / 'certs' / 'ca.pem'}: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr

