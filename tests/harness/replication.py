"""Throw-away primary/replica pairs started from the server binaries on this machine.

Each pair lives in its own temporary directory, listens only on 127.0.0.1 on free ports and is torn down
by ``close()`` (also on context-manager exit, on a failed start, and at interpreter exit as a last resort).

    with PostgresPair() as pg:            # or: pg = start_postgres_pair(); ...; pg.close()
        pg.execute("CREATE TABLE t (id int primary key)")
        pg.wait_caught_up()
        pg.query("SELECT count(*) FROM t", on="replica")

From a pytest fixture:

    @pytest.fixture
    def pg_pair():
        yield from postgres_pair_fixture()

The servers are started as direct child processes (own session, so a Ctrl-C in the terminal does not reach
them before the cleanup does). Running as root, PostgreSQL runs as the ``postgres`` OS user and mariadbd
with ``--user=mysql``; running as any other user, both run as that user.

The harness is synchronous (``psql`` for PostgreSQL, PyMySQL for MariaDB), so its methods can also be
called from inside async tests; they block the event loop while they run.

``tls=ServerTLS(...)`` gives both servers of a pair a certificate; with ``required=True`` (the default) they refuse
plaintext TCP connections (PostgreSQL: ``hostssl`` lines only and ``hostnossl ... reject``; MariaDB:
``require_secure_transport=ON``), and the harness's own connections and the replica's stream use TLS themselves.
tests/harness/tls.py makes the certificates.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

__all__ = [
    "HarnessError",
    "ServerDied",
    "MariaDBPair",
    "PostgresPair",
    "ServerTLS",
    "in_ci",
    "mariadb_pair_fixture",
    "postgres_pair_fixture",
    "replication_available",
    "require_replication",
    "start_mariadb_pair",
    "start_postgres_pair",
]

PG_BIN_DIR = Path(os.environ.get("BACKFILLD_PG_BIN_DIR", "/usr/lib/postgresql/15/bin"))
MARIADBD = os.environ.get("BACKFILLD_MARIADBD", "/usr/sbin/mariadbd")
MARIADB_INSTALL_DB = os.environ.get("BACKFILLD_MARIADB_INSTALL_DB", "/usr/bin/mariadb-install-db")
HOST = "127.0.0.1"
TMP_PREFIX = "backfilld-repl-"
LOG_TAIL_LINES = 40

KINDS = ("postgresql", "mariadb")
_KIND_ALIASES = {"postgres": "postgresql", "postgresql": "postgresql", "pg": "postgresql",
                 "mariadb": "mariadb", "mysql": "mariadb"}


class HarnessError(RuntimeError):
    """A server of a pair failed to start, stop, answer or catch up."""


class ServerDied(HarnessError):
    """A server process exited while we were waiting on it (stops polling at once)."""


# --------------------------------------------------------------------------------------------------------------
# availability


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _kinds(kind: str | None) -> list[str]:
    if kind is None:
        return list(KINDS)
    try:
        return [_KIND_ALIASES[kind.lower()]]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; use one of {sorted(_KIND_ALIASES)}") from None


def _missing_executables(paths: Sequence[str | Path]) -> list[str]:
    return [str(p) for p in paths if not (os.path.isfile(p) and os.access(p, os.X_OK))]


def _missing_user(name: str) -> str | None:
    if os.geteuid() != 0:
        return None  # servers run as the current user
    try:
        pwd.getpwnam(name)
    except KeyError:
        return f"OS user {name!r} does not exist (needed to run the server as root)"
    return None


def replication_available(kind: str | None = None) -> str | None:
    """None when primary/replica pairs of ``kind`` ("postgresql"/"mariadb", None = both) can be started here,
    otherwise the reason why not (missing binaries, OS user or Python driver)."""
    reasons: list[str] = []
    for k in _kinds(kind):
        if k == "postgresql":
            missing = _missing_executables([PG_BIN_DIR / n for n in ("initdb", "postgres", "pg_basebackup", "psql")])
            if missing:
                reasons.append("PostgreSQL server binaries missing: " + ", ".join(missing)
                               + " (set BACKFILLD_PG_BIN_DIR)")
            elif (r := _missing_user("postgres")) is not None:
                reasons.append(r)
        else:
            missing = _missing_executables([MARIADBD, MARIADB_INSTALL_DB])
            if missing:
                reasons.append("MariaDB server binaries missing: " + ", ".join(missing))
            elif (r := _missing_user("mysql")) is not None:
                reasons.append(r)
            else:
                try:
                    import pymysql  # noqa: F401
                except ImportError:
                    reasons.append("Python package pymysql is not installed")
    return "; ".join(reasons) or None


def require_replication(kind: str | None = None) -> None:
    """Skip the calling test when pairs cannot be started here; under CI=true fail instead."""
    import pytest

    reason = replication_available(kind)
    if reason:
        if in_ci():
            pytest.fail(f"CI=true but replication pairs are unavailable: {reason}", pytrace=False)
        pytest.skip(f"replication pairs unavailable: {reason}")


# --------------------------------------------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (the server start retries on a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"<no log at {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or f"<empty log {path}>"


def _chown_tree(path: Path, user: str | None) -> None:
    if user is None:
        return
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for n in dirs + files:
            os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def _user_kwargs(user: str | None) -> dict[str, Any]:
    """Popen kwargs that run the child as ``user`` (only when we are root)."""
    if user is None:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL", "MARIADB"))}
    env.update(LC_ALL="C", LANG="C")
    env.update(extra)
    return env


def _stop_process(proc: subprocess.Popen | None, sig: int, timeout: float, hard_sig: int | None = None) -> bool:
    """Signal ``proc`` and wait for it to exit; escalate to ``hard_sig`` then SIGKILL of its process group.
    Returns True if it exited after the first, polite signal."""
    if proc is None or proc.poll() is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        pass
    if hard_sig is not None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(hard_sig)
        try:
            proc.wait(10)
            return False
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the server was started in its own session: pgid == pid
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    return False


def _kill_group_leftovers(proc: subprocess.Popen | None) -> None:
    """After the leader exited, make sure no child of its session (e.g. a postgres backend) survives."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _run_utility(args: list[str], what: str, timeout: float, **popen_kw: Any) -> subprocess.CompletedProcess:
    """Run a setup utility (initdb, pg_basebackup, mariadb-install-db) in its own session; on timeout kill the
    whole process group (mariadb-install-db is a script whose ``mariadbd --bootstrap`` child would survive)."""
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **popen_kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            detail = f"{out[-2000:]}\n{err[-2000:]}".rstrip()
            raise HarnessError(f"{what} timed out after {timeout:.1f}s:\n{detail}") from exc
        raise
    finally:
        _kill_group_leftovers(proc)
    if proc.returncode != 0:
        raise HarnessError(f"{what} failed (exit {proc.returncode}):\n{out[-3000:]}\n{err[-3000:]}".rstrip())
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


T = TypeVar("T")


def _poll(what: str, fn: Callable[[], T | None], timeout: float, interval: float = 0.05,
          on_timeout: Callable[[], str] | None = None) -> T:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = fn()
            if result is not None and result is not False:
                return result
        except ServerDied:
            raise
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last error
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc})" if last_exc else ""
            extra = ("\n" + on_timeout()) if on_timeout else ""
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.5)


@dataclass(frozen=True)
class ServerTLS:
    """TLS for a pair's servers: PEM of the server's certificate chain, its key and the CA that signed it.
    required: plaintext TCP connections are refused (unix sockets stay open to the harness)."""

    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes
    required: bool = True


_LIVE: set[_Pair] = set()
_LIVE_LOCK = threading.Lock()


@atexit.register
def _close_all_live() -> None:  # last resort for pairs a test forgot to close
    with _LIVE_LOCK:
        pairs = list(_LIVE)
    for p in pairs:
        with contextlib.suppress(Exception):
            p.close()


class _Node:
    """One server process of a pair."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.dir = root / name
        self.datadir = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def died_message(self) -> str:
        rc = self.proc.poll() if self.proc else None
        return f"{self.name} server exited with code {rc}; tail of {self.log}:\n{log_tail(self.log)}"


class _Pair:
    """Common life cycle: temp dir, start with cleanup on failure, context manager, close."""

    kind = ""

    def __init__(self, *, startup_timeout: float, base_dir: str | os.PathLike | None, keep_on_failure: bool,
                 tls: ServerTLS | None = None) -> None:
        self.tls = tls
        self.startup_timeout = startup_timeout
        self._base_dir = base_dir
        self.keep_on_failure = keep_on_failure
        self.tmpdir: Path | None = None
        self.primary = _Node("primary", Path("/nonexistent"))
        self.replica = _Node("replica", Path("/nonexistent"))
        self.startup_seconds: float | None = None
        self._closed = False
        self._started = False

    # public attributes -----------------------------------------------------------------------------------
    @property
    def primary_port(self) -> int:
        return self.primary.port

    @property
    def replica_port(self) -> int:
        return self.replica.port

    def log_path(self, on: str = "primary") -> Path:
        """The server's log: PostgreSQL's stderr (logging_collector off), MariaDB's --log-error file. Both are
        appended to for the pair's life (also across restarts), so a size taken before a run is an offset
        from which to read what the run logged."""
        if on not in ("primary", "replica"):
            raise ValueError(f"on must be 'primary' or 'replica', not {on!r}")
        return (self.primary if on == "primary" else self.replica).log

    # life cycle --------------------------------------------------------------------------------------------
    def start(self) -> Self:
        """Create the temp dir and start both servers (``startup_timeout`` applies to each step). On any failure
        everything started so far is killed and removed (kept with ``keep_on_failure=True``)."""
        if self._started:
            raise HarnessError(f"{type(self).__name__} already started")
        if self._closed:
            raise HarnessError(f"{type(self).__name__} is closed")
        self._started = True
        t0 = time.monotonic()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{self.kind}-", dir=self._base_dir))
        self.primary = _Node("primary", self.tmpdir)
        self.replica = _Node("replica", self.tmpdir)
        with _LIVE_LOCK:
            _LIVE.add(self)
        try:
            self._start()
        except BaseException as exc:
            self._close(remove_dir=not self.keep_on_failure)
            if self.keep_on_failure and isinstance(exc, HarnessError):
                raise HarnessError(f"{exc}\n(files kept in {self.tmpdir})") from exc
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start(self) -> None:
        raise NotImplementedError

    @property
    def tls_dir(self) -> Path:
        """Where the servers' certificate files are (tls set)."""
        assert self.tmpdir is not None
        return self.tmpdir / "tls"

    def _write_tls(self, owner: str | None) -> None:
        """The server's certificate, key (mode 0600, owned by the server's OS user: PostgreSQL insists) and CA."""
        if self.tls is None:
            return
        self.tls_dir.mkdir()
        for name, pem in (("server.crt", self.tls.cert_pem), ("server.key", self.tls.key_pem),
                          ("ca.crt", self.tls.ca_pem)):
            (self.tls_dir / name).write_bytes(pem)
        os.chmod(self.tls_dir / "server.key", 0o600)
        os.chmod(self.tls_dir, 0o755)
        _chown_tree(self.tls_dir, owner)

    def _stop_node(self, node: _Node) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Stop both servers (politely, then by force) and delete the temp dir. Idempotent."""
        self._close(remove_dir=True)

    def _close(self, *, remove_dir: bool) -> None:
        if self._closed:
            return
        self._closed = True
        for node in (self.replica, self.primary):
            try:
                self._stop_node(node)
            except Exception:  # noqa: BLE001, S110 - fall through to the forced kill below
                pass
            finally:
                if node.proc is not None and node.proc.poll() is None:
                    _stop_process(node.proc, signal.SIGKILL, 5)
                _kill_group_leftovers(node.proc)
        if remove_dir and self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def __enter__(self) -> Self:
        if not self._started:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort only; do not rely on it.
        if getattr(self, "_started", False) and not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()

    def _start_with_port_retry(self, node: _Node, start: Callable[[], None], attempts: int = 3) -> None:
        """Start ``node`` on a fresh free port, retrying on a lost port race ("Address already in use")."""
        for attempt in range(attempts):
            node.port = free_port()
            try:
                start()
                return
            except HarnessError:
                tail = log_tail(node.log, 15)
                if attempt + 1 < attempts and "already in use" in tail:
                    continue
                raise


# --------------------------------------------------------------------------------------------------------------
# PostgreSQL


class PostgresPair(_Pair):
    """A PostgreSQL primary and a streaming hot-standby replica made with ``pg_basebackup -R``.

    Attributes after ``start()``: ``primary_url``, ``replica_url`` (``postgresql://postgres@127.0.0.1:PORT/test``),
    ``primary_port``, ``replica_port``, ``tmpdir``, ``primary``/``replica`` nodes (``.datadir``, ``.log``),
    ``startup_seconds``.
    """

    kind = "pg"
    SLOT = "harness_replica"

    def __init__(
        self,
        *,
        database: str = "test",
        bin_dir: str | os.PathLike | None = None,
        startup_timeout: float = 60.0,
        base_dir: str | os.PathLike | None = None,
        extra_conf: dict[str, str | int] | None = None,
        keep_on_failure: bool = False,
        tls: ServerTLS | None = None,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, base_dir=base_dir, keep_on_failure=keep_on_failure,
                         tls=tls)
        self.database = database
        self.bin_dir = Path(bin_dir) if bin_dir else PG_BIN_DIR
        self.extra_conf = dict(extra_conf or {})
        self.os_user = "postgres" if os.geteuid() == 0 else None
        self.db_user = "postgres"

    # URLs -----------------------------------------------------------------------------------------------
    def url(self, on: str = "primary", database: str | None = None) -> str:
        node = self._node(on)
        return f"postgresql://{self.db_user}@{HOST}:{node.port}/{database or self.database}"

    @property
    def primary_url(self) -> str:
        return self.url("primary")

    @property
    def replica_url(self) -> str:
        return self.url("replica")

    def _node(self, on: str) -> _Node:
        if on not in ("primary", "replica"):
            raise ValueError(f"on must be 'primary' or 'replica', not {on!r}")
        return self.primary if on == "primary" else self.replica

    # processes ------------------------------------------------------------------------------------------
    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _run(self, args: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
        """Run a PostgreSQL utility as the server's OS user."""
        assert self.tmpdir is not None
        return _run_utility(args, what, timeout, cwd=self.tmpdir, env=_clean_env(HOME=str(self.tmpdir)),
                            **_user_kwargs(self.os_user))

    def _psql(self, on: str, sql: str, *, database: str | None = None, script: bool = False,
              timeout: float = 30.0) -> str:
        node = self._node(on)
        args = [self._bin("psql"), "-X", "-q", "-A", "-t", "-F", "\x1f", "-P", "null=\x1d", "-v", "ON_ERROR_STOP=1",
                "-h", HOST, "-p", str(node.port), "-U", self.db_user, "-d", database or self.database]
        args += [] if script else ["-c", sql]
        try:
            cp = subprocess.run(args, input=sql if script else None, env=_clean_env(PGCONNECT_TIMEOUT="5"),
                                capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise HarnessError(f"psql on {on} timed out after {timeout:.0f}s: {sql[:200]!r}") from exc
        if cp.returncode != 0:
            raise HarnessError(f"psql on {on} failed (exit {cp.returncode}) for {sql[:200]!r}:\n{cp.stderr.strip()}")
        return cp.stdout

    def query(self, sql: str, *, on: str = "primary", database: str | None = None) -> list[tuple[str | None, ...]]:
        """Run one statement through psql; rows as tuples of text (None for NULL).

        Values containing newlines are not supported (use asyncpg on ``primary_url`` for real work)."""
        out = self._psql(on, sql, database=database)
        if not out:
            return []
        # not str.splitlines(): it also splits on \x1c-\x1e, and \x1d is our NULL marker
        lines = out[:-1].split("\n") if out.endswith("\n") else out.split("\n")
        return [tuple(None if v == "\x1d" else v for v in line.split("\x1f")) for line in lines]

    def scalar(self, sql: str, *, on: str = "primary", database: str | None = None) -> str | None:
        rows = self.query(sql, on=on, database=database)
        return rows[0][0] if rows else None

    def execute(self, sql: str, *, on: str = "primary", database: str | None = None) -> None:
        """Run a script of one or more statements (each in its own transaction unless it says BEGIN)."""
        self._psql(on, sql, database=database, script=True)

    def _conf_lines(self) -> str:
        assert self.tmpdir is not None
        conf: dict[str, str | int] = {
            "listen_addresses": f"'{HOST}'",
            "unix_socket_directories": f"'{self.tmpdir}'",
            "wal_level": "replica",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "hot_standby": "on",
            "hot_standby_feedback": "off",
            "shared_buffers": "32MB",
            "max_connections": 50,
            "fsync": "off",
            "full_page_writes": "off",
            "wal_keep_size": "64MB",
            "wal_receiver_status_interval": "1s",
            "wal_retrieve_retry_interval": "500ms",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "log_line_prefix": "'%m [%p] '",
            "dynamic_shared_memory_type": "posix",
            "max_worker_processes": 4,
            "autovacuum_naptime": "5s",
        }
        if self.tls is not None:
            conf.update(ssl="on", ssl_cert_file=f"'{self.tls_dir / 'server.crt'}'",
                        ssl_key_file=f"'{self.tls_dir / 'server.key'}'")
        conf.update(self.extra_conf)
        return "\n# --- tests/harness/replication.py ---\n" + "".join(f"{k} = {v}\n" for k, v in conf.items())

    def _start(self) -> None:
        assert self.tmpdir is not None
        for node in (self.primary, self.replica):
            node.dir.mkdir()
        self._write_tls(self.os_user)
        _chown_tree(self.tmpdir, self.os_user)
        os.chmod(self.tmpdir, 0o700)
        self._run([self._bin("initdb"), "-D", str(self.primary.datadir), "-U", self.db_user, "-A", "trust", "-E",
                   "UTF8", "--locale=C", "--no-sync", "--no-instructions"], "initdb", self.startup_timeout)
        with open(self.primary.datadir / "postgresql.conf", "a") as f:
            f.write(self._conf_lines())
        (self.primary.datadir / "pg_hba.conf").write_text(self._hba())
        self._start_with_port_retry(self.primary, lambda: self._launch(self.primary))
        self._psql("primary", f'CREATE DATABASE "{self.database}"', database="postgres")
        self._run([self._bin("pg_basebackup"), "-h", HOST, "-p", str(self.primary.port), "-U", self.db_user,
                   "-D", str(self.replica.datadir), "-R", "-X", "stream", "-C", "-S", self.SLOT,
                   "--checkpoint=fast", "--no-sync", "--no-manifest"], "pg_basebackup", self.startup_timeout)
        self._start_with_port_retry(self.replica, lambda: self._launch(self.replica))
        self.wait_caught_up(self.startup_timeout)

    def _hba(self) -> str:
        """Trust on the unix socket and on loopback TCP; with TLS required, TCP over TLS only (the replica's
        stream too: libpq's default sslmode=prefer takes TLS where the server offers it)."""
        local = "local all all trust\nlocal replication all trust\n"
        if self.tls is None or not self.tls.required:
            return local + f"host all all {HOST}/32 trust\nhost replication all {HOST}/32 trust\n"
        return (local + f"hostssl all all {HOST}/32 trust\nhostssl replication all {HOST}/32 trust\n"
                "hostnossl all all 0.0.0.0/0 reject\nhostnossl replication all 0.0.0.0/0 reject\n")

    def _launch(self, node: _Node) -> None:
        """Start ``postgres`` on ``node.port`` as a child process and wait until it accepts queries."""
        if node.running:
            raise HarnessError(f"{node.name} is already running")
        with open(node.log, "ab") as log:
            node.proc = subprocess.Popen(
                [self._bin("postgres"), "-D", str(node.datadir), "-p", str(node.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmpdir,
                env=_clean_env(HOME=str(self.tmpdir)), start_new_session=True, **_user_kwargs(self.os_user))

        def ready() -> bool:
            if not node.running:
                raise ServerDied(node.died_message())
            self._psql(node.name, "SELECT 1", database="postgres", timeout=10)
            return True

        try:
            _poll(f"PostgreSQL {node.name} on port {node.port}", ready, self.startup_timeout,
                  on_timeout=lambda: f"tail of {node.log}:\n{log_tail(node.log)}")
        except BaseException:
            _stop_process(node.proc, signal.SIGQUIT, 5)
            _kill_group_leftovers(node.proc)
            raise

    def _stop_node(self, node: _Node) -> None:
        # SIGINT = "fast" shutdown (what pg_ctl stop -m fast sends), then SIGQUIT = immediate.
        if node.proc is not None:
            _stop_process(node.proc, signal.SIGINT, 30, hard_sig=signal.SIGQUIT)
            _kill_group_leftovers(node.proc)

    # replica control --------------------------------------------------------------------------------------
    def pause_replay(self, timeout: float = 10.0) -> None:
        """``pg_wal_replay_pause()`` on the replica. WAL keeps streaming in but is not applied (nor visible)."""
        self._psql("replica", "SELECT pg_wal_replay_pause()")
        # pause is only *requested*; it takes effect before the next record is applied, which is all we need
        # for visibility. Wait for 'paused' when the server gets there, but don't insist on it.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.scalar("SELECT pg_get_wal_replay_pause_state()", on="replica") == "paused":
                return
            time.sleep(0.05)

    def resume_replay(self) -> None:
        self._psql("replica", "SELECT pg_wal_replay_resume()")

    def replay_paused(self) -> bool:
        return self.scalar("SELECT pg_get_wal_replay_pause_state()", on="replica") != "not paused"

    def stop_replica(self) -> None:
        """Fast shutdown of the replica (like ``pg_ctl stop -m fast``). Its slot keeps the primary's WAL."""
        if not self.replica.running:
            raise HarnessError("replica is not running")
        if not _stop_process(self.replica.proc, signal.SIGINT, 30, hard_sig=signal.SIGQUIT):
            raise HarnessError(f"replica did not stop within 30s; tail of log:\n{log_tail(self.replica.log)}")
        _kill_group_leftovers(self.replica.proc)

    def start_replica(self) -> None:
        """Start the replica again on the same port; it reconnects and streams from where it stopped."""
        self._launch(self.replica)

    def stop_primary(self) -> None:
        if not _stop_process(self.primary.proc, signal.SIGINT, 30, hard_sig=signal.SIGQUIT):
            raise HarnessError(f"primary did not stop within 30s; tail of log:\n{log_tail(self.primary.log)}")
        _kill_group_leftovers(self.primary.proc)

    def start_primary(self) -> None:
        self._launch(self.primary)

    def primary_lsn(self) -> str:
        lsn = self.scalar("SELECT pg_current_wal_lsn()")
        assert lsn is not None
        return lsn

    def replay_lsn(self) -> str | None:
        return self.scalar("SELECT pg_last_wal_replay_lsn()", on="replica")

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the replica has replayed everything the primary had written when this was called."""
        target = self.primary_lsn()

        def caught_up() -> bool:
            if not self.replica.running:
                raise ServerDied(self.replica.died_message())
            r = self.scalar(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn", on="replica")
            if r is None:
                raise ServerDied("replica is not in recovery (pg_last_wal_replay_lsn() is NULL)")
            return r == "t"

        def diagnose() -> str:
            try:
                state = self.query("SELECT pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), "
                                   "pg_get_wal_replay_pause_state()", on="replica")
                return f"primary LSN {target}; replica receive/replay/pause: {state}"
            except Exception as exc:  # noqa: BLE001
                return f"replica unreachable: {exc}\n{log_tail(self.replica.log)}"

        _poll(f"the PostgreSQL replica to replay up to {target}", caught_up, timeout, on_timeout=diagnose)


# --------------------------------------------------------------------------------------------------------------
# MariaDB


class MariaDBPair(_Pair):
    """A MariaDB primary (binlog, ROW format) and a GTID replica (``MASTER_USE_GTID=slave_pos``).

    Attributes after ``start()``: ``primary_url``, ``replica_url`` (``mysql://root@127.0.0.1:PORT/test``),
    ``primary_port``, ``replica_port``, ``tmpdir``, ``primary``/``replica`` nodes (``.datadir``, ``.log``,
    ``.socket``), ``startup_seconds``.
    """

    kind = "mariadb"

    def __init__(
        self,
        *,
        database: str = "test",
        mariadbd: str | None = None,
        install_db: str | None = None,
        startup_timeout: float = 60.0,
        base_dir: str | os.PathLike | None = None,
        extra_args: Sequence[str] = (),
        keep_on_failure: bool = False,
        tls: ServerTLS | None = None,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout, base_dir=base_dir, keep_on_failure=keep_on_failure,
                         tls=tls)
        self.database = database
        self.mariadbd = mariadbd or MARIADBD
        self.install_db = install_db or MARIADB_INSTALL_DB
        self.extra_args = list(extra_args)
        self.os_user = "mysql" if os.geteuid() == 0 else None
        self.db_user = "root"

    def url(self, on: str = "primary", database: str | None = None) -> str:
        return f"mysql://{self.db_user}@{HOST}:{self._node(on).port}/{database or self.database}"

    @property
    def primary_url(self) -> str:
        return self.url("primary")

    @property
    def replica_url(self) -> str:
        return self.url("replica")

    def _node(self, on: str) -> _Node:
        if on not in ("primary", "replica"):
            raise ValueError(f"on must be 'primary' or 'replica', not {on!r}")
        return self.primary if on == "primary" else self.replica

    @staticmethod
    def _socket(node: _Node) -> Path:
        return node.dir / "mysqld.sock"

    # SQL ------------------------------------------------------------------------------------------------
    def connect(self, on: str = "primary", *, database: str | None = "", via_socket: bool = False, **kw: Any):
        """A PyMySQL connection (autocommit) as root; ``database=""`` means the pair's database."""
        import pymysql

        node = self._node(on)
        db = self.database if database == "" else database
        params: dict[str, Any] = dict(user=self.db_user, password="", database=db, autocommit=True,
                                      connect_timeout=5, charset="utf8mb4")
        if via_socket:
            params["unix_socket"] = str(self._socket(node))
        else:
            params.update(host=HOST, port=node.port)
            if self.tls is not None:
                params["ssl"] = {"ca": str(self.tls_dir / "ca.crt")}
        params.update(kw)
        return pymysql.connect(**params)

    def query(self, sql: str, args: Any = None, *, on: str = "primary", database: str | None = "") -> list[tuple]:
        with contextlib.closing(self.connect(on, database=database)) as con, con.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def scalar(self, sql: str, args: Any = None, *, on: str = "primary", database: str | None = "") -> Any:
        rows = self.query(sql, args, on=on, database=database)
        return rows[0][0] if rows else None

    def execute(self, sql: str | Sequence[str], args: Any = None, *, on: str = "primary",
                database: str | None = "") -> None:
        """Run one statement (with optional args) or a list of statements, autocommit."""
        stmts = [sql] if isinstance(sql, str) else list(sql)
        with contextlib.closing(self.connect(on, database=database)) as con, con.cursor() as cur:
            for s in stmts:
                cur.execute(s, args if isinstance(sql, str) else None)

    # processes ------------------------------------------------------------------------------------------
    def _common_args(self) -> list[str]:
        return [
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            "--innodb-use-native-aio=0",
            "--innodb-flush-log-at-trx-commit=2",
            "--innodb-doublewrite=0",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
            "--skip-name-resolve",
        ]

    def _server_args(self, node: _Node, server_id: int) -> list[str]:
        args = [
            self.mariadbd, "--no-defaults",
            *(["--user=" + self.os_user] if self.os_user else []),
            f"--datadir={node.datadir}",
            f"--port={node.port}",
            f"--bind-address={HOST}",
            f"--socket={self._socket(node)}",
            f"--pid-file={node.dir / 'mysqld.pid'}",
            f"--log-error={node.log}",
            f"--tmpdir={node.dir}",
            f"--server-id={server_id}",
            "--max-connections=50",
            "--table-open-cache=400",
            "--sync-binlog=0",
            "--relay-log=relay-bin",
            "--relay-log-index=relay-bin.index",
            *self._common_args(),
        ]
        if self.tls is not None:
            args += [f"--ssl-cert={self.tls_dir / 'server.crt'}", f"--ssl-key={self.tls_dir / 'server.key'}",
                     f"--ssl-ca={self.tls_dir / 'ca.crt'}"]
            if self.tls.required:
                args.append("--require-secure-transport=ON")
        if node is self.primary:
            args += ["--log-bin=mysql-bin", "--log-bin-index=mysql-bin.index", "--binlog-format=ROW"]
        else:
            args += ["--read-only=0", "--skip-log-bin"]
        return args + self.extra_args

    def _install(self, node: _Node) -> None:
        # a tmpdir of its own: bootstraps sharing /tmp with other servers have failed here on temp tables
        args = [self.install_db, "--no-defaults", f"--datadir={node.datadir}", f"--tmpdir={node.dir}",
                "--auth-root-authentication-method=normal", "--skip-test-db", *self._common_args()]
        if self.os_user:
            args.append(f"--user={self.os_user}")
        _run_utility(args, f"mariadb-install-db for {node.name}", self.startup_timeout, cwd=node.dir,
                     env=_clean_env())

    def _launch(self, node: _Node, server_id: int) -> None:
        if node.running:
            raise HarnessError(f"{node.name} is already running")
        # mariadbd writes its own log (--log-error); stdout/stderr catch what comes before that is open.
        with open(node.dir / "stdout.log", "ab") as out:
            node.proc = subprocess.Popen(self._server_args(node, server_id), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=node.dir, env=_clean_env(),
                                         start_new_session=True)

        def ready() -> bool:
            if not node.running:
                raise ServerDied(node.died_message() + "\nstdout/stderr:\n" + log_tail(node.dir / "stdout.log"))
            with contextlib.closing(self.connect(node.name, database=None, via_socket=True)):
                return True

        try:
            _poll(f"MariaDB {node.name} on port {node.port}", ready, self.startup_timeout,
                  on_timeout=lambda: f"tail of {node.log}:\n{log_tail(node.log)}")
        except BaseException:
            _stop_process(node.proc, signal.SIGKILL, 5)
            raise

    def _server_id(self, node: _Node) -> int:
        return 1 if node is self.primary else 2

    def _ensure_root_over_tcp(self, node: _Node) -> None:
        """root@127.0.0.1 with an empty password (mariadb-install-db normally makes it; make sure)."""
        with contextlib.closing(self.connect(node.name, database=None, via_socket=True)) as con, \
                con.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute(f"CREATE USER IF NOT EXISTS 'root'@'{HOST}' IDENTIFIED BY ''")
            cur.execute(f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{HOST}' WITH GRANT OPTION")

    def _start(self) -> None:
        assert self.tmpdir is not None
        os.chmod(self.tmpdir, 0o755)  # mysql must be able to traverse it
        for node in (self.primary, self.replica):
            node.dir.mkdir()
            node.datadir.mkdir()
        _chown_tree(self.primary.dir, self.os_user)
        _chown_tree(self.replica.dir, self.os_user)
        self._write_tls(self.os_user)

        self._parallel([lambda: self._install(self.primary), lambda: self._install(self.replica)])
        self._parallel([
            lambda: self._start_with_port_retry(self.primary, lambda: self._launch(self.primary, 1)),
            lambda: self._start_with_port_retry(self.replica, lambda: self._launch(self.replica, 2)),
        ])
        self._ensure_root_over_tcp(self.primary)
        self._ensure_root_over_tcp(self.replica)
        # Binlogged, so the replica gets the database through replication.
        self.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`", database=None)
        ssl = f", MASTER_SSL=1, MASTER_SSL_CA='{self.tls_dir / 'ca.crt'}'" if self.tls is not None else ""
        self.execute([
            f"CHANGE MASTER TO MASTER_HOST='{HOST}', MASTER_PORT={self.primary.port}, MASTER_USER='root', "
            f"MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1{ssl}",
            "START SLAVE",
        ], on="replica", database=None)
        self.wait_caught_up(self.startup_timeout)

    @staticmethod
    def _parallel(fns: list[Callable[[], None]]) -> None:
        errors: list[BaseException] = []

        def run(fn: Callable[[], None]) -> None:
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(fn,), daemon=True) for fn in fns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def _stop_node(self, node: _Node) -> None:
        if node.proc is not None:
            _stop_process(node.proc, signal.SIGTERM, 60)  # SIGTERM = normal shutdown

    # replica control --------------------------------------------------------------------------------------
    def stop_sql_thread(self) -> None:
        """STOP SLAVE SQL_THREAD: events keep arriving in the relay log but are not applied."""
        self.execute("STOP SLAVE SQL_THREAD", on="replica", database=None)

    def start_sql_thread(self) -> None:
        self.execute("START SLAVE SQL_THREAD", on="replica", database=None)

    def stop_replica(self) -> None:
        """Shut the replica server down (normal shutdown)."""
        if not self.replica.running:
            raise HarnessError("replica is not running")
        if not _stop_process(self.replica.proc, signal.SIGTERM, 60):
            raise HarnessError(f"replica did not shut down within 60s; tail of log:\n{log_tail(self.replica.log)}")

    def start_replica(self) -> None:
        """Start the replica on the same port; its slave threads start by themselves (master.info in datadir)."""
        self._launch(self.replica, self._server_id(self.replica))

    def stop_primary(self) -> None:
        if not _stop_process(self.primary.proc, signal.SIGTERM, 60):
            raise HarnessError(f"primary did not shut down within 60s; tail of log:\n{log_tail(self.primary.log)}")

    def start_primary(self) -> None:
        self._launch(self.primary, self._server_id(self.primary))

    def slave_status(self) -> dict[str, Any]:
        import pymysql.cursors

        with contextlib.closing(self.connect("replica", database=None,
                                             cursorclass=pymysql.cursors.DictCursor)) as con, con.cursor() as cur:
            cur.execute("SHOW SLAVE STATUS")
            return cur.fetchone() or {}

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the replica has applied every GTID the primary had binlogged when this was called."""
        pos = self.scalar("SELECT @@GLOBAL.gtid_binlog_pos", database=None) or ""
        if not self.replica.running:
            raise ServerDied(self.replica.died_message())
        import pymysql

        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                r = self.scalar("SELECT MASTER_GTID_WAIT(%s, %s)", (pos, min(remaining, 2.0)), on="replica",
                                database=None)
            except pymysql.err.OperationalError:
                r = None  # e.g. replica restarting: retry until the deadline
            if r == 0:
                return
            if time.monotonic() >= deadline:
                try:
                    st = self.slave_status()
                    keys = ("Slave_IO_Running", "Slave_SQL_Running", "Last_IO_Error", "Last_SQL_Error",
                            "Gtid_IO_Pos", "Seconds_Behind_Master")
                    detail = ", ".join(f"{k}={st.get(k)!r}" for k in keys)
                    detail += f", gtid_slave_pos={self.scalar('SELECT @@GLOBAL.gtid_slave_pos', on='replica')!r}"
                except Exception as exc:  # noqa: BLE001
                    detail = f"replica unreachable: {exc}\n{log_tail(self.replica.log)}"
                raise HarnessError(f"timed out after {timeout:.0f}s waiting for the MariaDB replica to reach "
                                   f"gtid {pos!r}: {detail}")
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------------------------
# convenience for tests / fixtures


def start_postgres_pair(**kwargs: Any) -> PostgresPair:
    """A started PostgresPair; the caller closes it."""
    return PostgresPair(**kwargs).start()


def start_mariadb_pair(**kwargs: Any) -> MariaDBPair:
    """A started MariaDBPair; the caller closes it."""
    return MariaDBPair(**kwargs).start()


def postgres_pair_fixture(**kwargs: Any) -> Iterator[PostgresPair]:
    """For ``yield from`` in a pytest fixture: skips (fails under CI=true) without the binaries."""
    require_replication("postgresql")
    pair = start_postgres_pair(**kwargs)
    try:
        yield pair
    finally:
        pair.close()


def mariadb_pair_fixture(**kwargs: Any) -> Iterator[MariaDBPair]:
    """For ``yield from`` in a pytest fixture: skips (fails under CI=true) without the binaries."""
    require_replication("mariadb")
    pair = start_mariadb_pair(**kwargs)
    try:
        yield pair
    finally:
        pair.close()

