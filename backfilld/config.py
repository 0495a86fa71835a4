"""Typed, validated, frozen configuration.

Owns: reading the TOML file and the jobs files it names, validating every key once at the edge, resolving
secrets (password_env, password_file) and the database URL. Nothing else in backfilld reads os.environ or the
config file. Every error names the file and the key ("jobs[1].batch_size"), and a job's key its job too, and
says what is wrong. Delegates finding jobs files, what may be in one besides [[jobs]], the checks across
files and the jobs' order to jobfiles.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from backfilld import jobfiles
from backfilld import tls as tls_mod
from backfilld.engines import NAMES as ENGINES
from backfilld.engines import capabilities
from backfilld.errors import ConfigError, combined
from backfilld.jobfiles import Origin
from backfilld.models import Bound, Model, ValidationError, ValidationInfo, field_validator, model_validator
from backfilld.settings import field as live

_SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql", "mariadb": "mysql",
            "sqlite": "sqlite"}
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\Z")
_QUALIFIED = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?\Z")
_JOB_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")


class _Model(Model):
    """A config section: frozen, every key checked, an unknown key refused (backfilld/models.py)."""


def _check_ident(value: str, what: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(f"{what} {value!r} is not a plain SQL identifier (letters, digits, _ and $; "
                         "not starting with a digit)")
    return value


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed database URL. str() never shows the password (nor the TLS parameters).

    database_url() adds what the config says around it: the password, [database] require_tls, and which section
    it came from ("database", "replicas[0]"), for the TLS checks and their messages."""

    engine: str
    host: str | None
    port: int | None
    user: str | None
    database: str
    password: str | None = None
    tls: tls_mod.TLS = tls_mod.TLS()
    require_tls: bool = False
    origin: str = "database"

    def __str__(self) -> str:
        if capabilities(self.engine).file_database:
            return f"{self.engine}:///{self.database}"
        auth = f"{self.user}{':***' if self.password else ''}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.engine}://{auth}{self.host or ''}{port}/{self.database}"

    __repr__ = __str__

    def __post_init__(self) -> None:
        if self.tls.engine != self.engine:   # a DatabaseURL made without parse_url: the engine's default TLS
            object.__setattr__(self, "tls", replace(self.tls, engine=self.engine))

    def with_password(self, password: str | None) -> DatabaseURL:
        return replace(self, password=password)


def parse_url(url: str, *, allow_password: bool = False) -> DatabaseURL:
    """Parse a postgresql://, mysql:// (mariadb://) or sqlite:/// URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("is not a valid URL") from None
    engine = _SCHEMES.get(parts.scheme.lower())
    if engine and not capabilities(engine).file_database and "@" in parts.path + parts.query + parts.fragment:
        # user:pa/ss@host splits at the '/' (or '?', '#'): the password would pass as a host and a path, and
        # the text is not shown here, since part of it is a password
        raise ValueError("holds an '@' after its host: a password with '/', '?' or '#' in it? Keep passwords "
                         "out of the file: use password_env or password_file")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has a port that is not a number from 0 to 65535") from None
    if engine is None:
        raise ValueError(f"has scheme {parts.scheme or '(none)'!r}; use postgresql://, mysql:// (or mariadb://) "
                         "or sqlite:///path")
    if parts.password and not allow_password:
        raise ValueError("contains a password; keep it out of the file: use password_env or password_file")
    params = [(unquote(k), unquote(v)) for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)]
    # TLS parameters are honoured; any other is refused by name (one silently ignored would connect otherwise
    # than the URL says, as sslmode=verify-full once did: in plaintext, and exit 0)
    tls = tls_mod.parse(engine, capabilities(engine).title, params)
    if capabilities(engine).file_database:
        # sqlite:///relative.db, sqlite:////absolute.db, sqlite:///:memory:
        path = unquote(url.split("://", 1)[1])
        path = path[1:] if path.startswith("/") else path
        path = path.split("?", 1)[0]
        if not path:
            raise ValueError("names no file; use sqlite:///path/to/file.db")
        return DatabaseURL(engine, None, None, None, path, None, tls)
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ValueError(f"names no database; add it after the host, e.g. {parts.scheme}://user@host/app")
    return DatabaseURL(engine, parts.hostname or "127.0.0.1", port, unquote(parts.username) if parts.username
                       else None, database, unquote(parts.password) if parts.password else None, tls)


def _context_base(info: ValidationInfo) -> Path | None:
    """The folder from_dict was given for relative file paths."""
    base = (info.context or {}).get("base_dir")
    return base if isinstance(base, Path) else None


class _Secret(_Model):
    url: str
    password_env: str | None = None
    password_file: str | None = None
    connect_timeout_s: Annotated[float, Bound(gt=0, le=300)] = 10.0
    # The longest any one statement may run: the server cancels it (PostgreSQL statement_timeout, MariaDB
    # max_statement_time), and the client gives up on the connection a little later (STATEMENT_DEADLINE_MARGIN
    # in engines/base.py) should the server not answer at all (a network path that stopped forwarding); either
    # way the batch rolls back and the job reconnects and resumes. Seconds; a batch takes target_batch_time_s.
    statement_timeout_s: Annotated[float, Bound(ge=1, le=86_400)] = 60.0
    # the folder relative TLS file paths in the URL are taken from: the config file's (load()); None, the
    # working directory (from_dict without a file)
    _base_dir: ClassVar[Path | None] = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str, info: ValidationInfo) -> str:
        tls = parse_url(v).tls.resolved(_context_base(info))
        try:   # every file named exists, is readable and loads, before anything connects
            tls_mod.check_files(tls, "")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _base(self, info: ValidationInfo) -> _Secret:
        object.__setattr__(self, "_base_dir", _context_base(info))   # beside the fields, as the origin
        return self

    @model_validator(mode="after")
    def _one_secret(self) -> _Secret:
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both")
        return self


class DatabaseConfig(_Secret):
    # Lock waits are kept short so that the application never waits long behind a batch, and below
    # PostgreSQL's deadlock_timeout (1 s by default; plan and start warn otherwise), so that backfilld gives up
    # before the server's deadlock check could pick an application transaction. Unit: seconds; bound 0.05..30;
    # MySQL rounds up to whole seconds (innodb_lock_wait_timeout has 1 s resolution; InnoDB finds deadlocks
    # at once, and with SKIP LOCKED a batch never waits for a row).
    lock_timeout_s: Annotated[float, Bound(ge=0.05, le=30)] = 0.5
    # Commit without waiting for the local flush where the session can choose (PostgreSQL
    # synchronous_commit = off; SQLite synchronous = NORMAL in WAL mode). A crash can lose the last batches
    # with their checkpoint, atomically, and they are simply redone; nothing is torn. MySQL's equivalent is
    # server-wide, so backfilld leaves it alone. On SQLite in WAL mode it also moves WAL checkpoints off the
    # job's commits to a second connection (engines/sqlite/engine.py).
    fast_commit: bool = True
    # Batches lock their rows with SELECT ... FOR UPDATE SKIP LOCKED (PostgreSQL; MariaDB 10.6+, MySQL 8.0+):
    # a batch never waits for a row the application holds, so it is never in a deadlock with the application
    # and never makes it wait behind a lock wait of its own; rows passed over are written by a later pass.
    # It costs each batch a locking read (about 1.3x a batch's time on an idle server). false: batches UPDATE
    # their range directly and wait (up to lock_timeout_s) for rows the application holds, for a table that
    # nothing else writes while the job runs.
    skip_locked: bool = True
    # The longest a batch's transaction may sit idle, waiting for its client: the server ends the session and
    # with it the transaction and its row locks (PostgreSQL idle_in_transaction_session_timeout, MariaDB
    # idle_transaction_timeout), so that an application row is never held longer by a client that vanished or
    # a path that stopped forwarding. A worker's wait for the batch before it gives up a little sooner. Seconds.
    idle_in_transaction_timeout_s: Annotated[float, Bound(ge=1, le=3600)] = 10.0
    # A connection to a server other than this machine (loopback, unix socket) that ends up in plaintext is an
    # error, for the primary, every replica and every connection made from them, instead of a warning
    # (connection_not_encrypted) once per URL. The URL's sslmode / ssl-mode say how to encrypt (README: TLS).
    require_tls: bool = False


class StateConfig(_Model):
    table: str = "backfilld_state"
    # One row per host running backfilld: its clock's time, written on the primary and read on replicas.
    heartbeat_table: str = "backfilld_heartbeat"

    @field_validator("table", "heartbeat_table")
    @classmethod
    def _table(cls, v: str) -> str:
        if not _QUALIFIED.match(v):
            raise ValueError(f"{v!r} is not a table name (optionally schema-qualified)")
        return v


Expression = str | dict[str, str]


def _check_table(value: str) -> str:
    if not _QUALIFIED.match(value):
        raise ValueError(f"{value!r} is not a table name: use name or schema.name")
    return value


def _check_expressions(exprs: dict[str, Expression], what: str) -> None:
    """Each `column = SQL` entry: the column a plain identifier, the SQL one expression (one per engine allowed)."""
    for column, expr in exprs.items():
        _check_ident(column, what)
        forms = expr.values() if isinstance(expr, dict) else [expr]
        if isinstance(expr, dict):
            unknown = set(expr) - set(ENGINES)
            if unknown:
                raise ValueError(f"{column}: unknown engine {sorted(unknown)[0]!r}; use {', '.join(ENGINES)}")
            if not expr:
                raise ValueError(f"{column}: give at least one engine's expression")
        for form in forms:
            if not form.strip():
                raise ValueError(f"{column}: the expression is empty")
            if ";" in form:
                raise ValueError(f"{column}: must be one SQL expression, without ';'")


def _for_engine(exprs: dict[str, Expression], engine: str, where: str) -> dict[str, str]:
    """column -> SQL for this engine; ConfigError naming where (e.g. jobs.J.set) when a column has no form for it."""
    out: dict[str, str] = {}
    for column, expr in exprs.items():
        if isinstance(expr, dict):
            if engine not in expr:
                raise ConfigError(f"{where}.{column}: no expression for engine {engine!r}; add {engine} = \"...\" "
                                  f"beside {', '.join(sorted(expr))}")
            out[column] = expr[engine]
        else:
            out[column] = expr
    return out


class LookupConfig(_Model):
    """A normalization job's lookup table: each row's `target` is set to the `id` of the lookup row whose `match`
    columns equal the row's values of their expressions; a missing lookup row is created first (with `values`)."""

    table: str
    id: str
    target: str
    match: dict[str, Expression]
    values: dict[str, Expression] = field(default_factory=dict)

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        return _check_table(v)

    @field_validator("id", "target")
    @classmethod
    def _column(cls, v: str) -> str:
        return _check_ident(v, "column")

    @field_validator("match")
    @classmethod
    def _match(cls, v: dict[str, Expression]) -> dict[str, Expression]:
        if not v:
            raise ValueError("names no column: give lookup column = SQL over the row, e.g. "
                             "{ lt_title = \"pl_title\" }")
        _check_expressions(v, "lookup column")
        return v

    @field_validator("values")
    @classmethod
    def _values(cls, v: dict[str, Expression]) -> dict[str, Expression]:
        _check_expressions(v, "lookup column")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> LookupConfig:
        both = set(self.match) & set(self.values)
        if both:
            raise ValueError(f"column {sorted(both)[0]!r} is in both match and values; a column is matched or set")
        if self.id in self.match or self.id in self.values:
            raise ValueError(f"the id column {self.id!r} is generated by the lookup table: leave it out of match "
                             "and values")
        return self

    def matches(self, engine: str, job: str) -> dict[str, str]:
        return _for_engine(self.match, engine, f"jobs.{job}.lookup.match")

    def extra(self, engine: str, job: str) -> dict[str, str]:
        return _for_engine(self.values, engine, f"jobs.{job}.lookup.values")


class JobConfig(_Model):
    name: str
    table: str
    key: list[str] | None = None
    where: str | None = None
    batch_size: Annotated[int, live("batch_size")] = 1000
    set: dict[str, Expression] = field(default_factory=dict)
    # A Python transform instead of SQL: "module:function" or a name registered under the entry-point group
    # "backfilld.transforms"; it gets each row's sources and returns its targets.
    transform: str | None = None
    # A normalization job: fill a foreign key from a lookup table, creating the lookup rows it needs (README:
    # Lookup jobs); instead of [jobs.set] and transform.
    lookup: LookupConfig | None = None
    sources: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    on_error: Literal["stop", "skip"] = "stop"
    overwrite: bool = False
    # seconds between sweeps with run --follow
    follow_interval_s: Annotated[float, Bound(gt=0, le=86_400)] = 30.0
    # consecutive failed attempts of one batch before the job stops with its error recorded
    max_retries: Annotated[int, Bound(ge=0, le=1000)] = 10
    # jobs (of any file) this one starts only after they completed: a later phase's backfill that reads an
    # earlier one's target. Not part of the fingerprint: it orders work, it is not the work.
    after: list[str] = field(default_factory=list)
    # where the job was defined: set by the loader, not a key of the file (see origin)
    _origin: ClassVar[Origin | None] = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _JOB_NAME.match(v):
            raise ValueError(f"{v!r} must be 1-64 characters of letters, digits, '_', '.', '-'")
        return v

    @field_validator("after")
    @classmethod
    def _after(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _JOB_NAME.match(name):
                raise ValueError(f"{name!r} is not a job name (1-64 characters of letters, digits, '_', '.', '-')")
        if len(set(v)) != len(v):
            raise ValueError("names a job twice")
        return v

    @property
    def origin(self) -> Origin:
        """Where the job was defined (one made in code, not loaded: "config", its place unknown)."""
        return self._origin or Origin("config", None)

    def placed(self, origin: Origin) -> JobConfig:
        """This job, as defined at origin (the loader's: the origin is not one of the file's keys)."""
        job = self.model_copy()
        object.__setattr__(job, "_origin", origin)   # not a field: not a key of the file
        return job

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        return _check_table(v)

    @field_validator("key")
    @classmethod
    def _key(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("is empty; leave it out to use the primary key")
            for col in v:
                _check_ident(col, "key column")
            if len(set(v)) != len(v):
                raise ValueError("names a column twice")
        return v

    @field_validator("where")
    @classmethod
    def _where(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("is empty; leave it out to backfill every row")
        if v is not None and ";" in v:
            raise ValueError("must be one SQL condition, without ';'")
        return v

    @field_validator("set")
    @classmethod
    def _set(cls, v: dict[str, Expression]) -> dict[str, Expression]:
        _check_expressions(v, "target column")
        return v

    @field_validator("sources", "targets")
    @classmethod
    def _columns(cls, v: list[str]) -> list[str]:
        for col in v:
            _check_ident(col, "column")
        if len(set(v)) != len(v):
            raise ValueError("names a column twice")
        return v

    @field_validator("transform")
    @classmethod
    def _transform(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?\Z", v):
            raise ValueError(f"{v!r} is not \"module:function\" or an entry-point name")
        return v

    @model_validator(mode="after")
    def _has_targets(self) -> JobConfig:
        if self.lookup is not None:
            if self.set or self.transform is not None or self.sources or self.targets:
                raise ValueError(f"job {self.name!r}: a lookup job fills lookup.target; leave out [jobs.set], "
                                 "transform, sources and targets")
            if self.overwrite:
                raise ValueError(f"job {self.name!r}: overwrite does not go with a lookup job (it fills NULL "
                                 "targets; verify --fix repairs wrong ones)")
        elif self.transform is not None:
            if self.set:
                raise ValueError(f"job {self.name!r} has both [jobs.set] and transform; choose one")
            if not self.sources or not self.targets:
                raise ValueError(f"job {self.name!r}: a transform needs sources = [...] and targets = [...]")
            if set(self.sources) & set(self.targets):
                raise ValueError(f"job {self.name!r}: a column cannot be both a source and a target")
        elif not self.set:
            raise ValueError(f"job {self.name!r} has no targets: add a [jobs.set] table "
                             "(target column = SQL expression), a transform or a [jobs.lookup]")
        elif self.sources or self.targets:
            raise ValueError(f"job {self.name!r}: sources and targets go with transform; [jobs.set] names its "
                             "targets itself")
        if self.key and set(self.key) & set(self.target_columns):
            raise ValueError("a key column cannot also be a target")
        return self

    @property
    def target_columns(self) -> list[str]:
        if self.lookup is not None:
            return [self.lookup.target]
        return list(self.targets) if self.transform else list(self.set)

    def expressions(self, engine: str) -> dict[str, str]:
        """Target column -> SQL expression for this engine ([jobs.set]; a lookup job's is built by preflight)."""
        return _for_engine(self.set, engine, f"jobs.{self.name}.set")

    def fingerprint(self, engine: str, key: list[str]) -> str:
        """What identifies the work: table, key, filter, targets and expressions; not tuning."""
        spec: dict[str, Any] = {"table": self.table, "key": key, "where": self.where, "overwrite": self.overwrite}
        if self.transform:
            spec.update(transform=self.transform, sources=self.sources, targets=self.targets)
        elif self.lookup is not None:
            lk = self.lookup
            spec["lookup"] = {"table": lk.table, "id": lk.id, "target": lk.target,
                              "match": lk.matches(engine, self.name), "values": lk.extra(engine, self.name)}
        else:
            spec["set"] = self.expressions(engine)
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)\Z")


class ReplicaConfig(_Secret):
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _JOB_NAME.match(v):
            raise ValueError(f"{v!r} must be 1-64 characters of letters, digits, '_', '.', '-'")
        return v

    @property
    def label(self) -> str:
        """The name in logs and metrics: the configured one, else host:port (never credentials)."""
        if self.name:
            return self.name
        u = parse_url(self.url)
        return f"{u.host}:{u.port}" if u.port else str(u.host)


_DB_NAME = re.compile(r"^[A-Za-z0-9_$][A-Za-z0-9_$-]{0,63}\Z")


def _check_db_names(names: list[str]) -> list[str]:
    for name in names:
        if not _DB_NAME.match(name):
            raise ValueError(f"{name!r} is not a database name (1-64 letters, digits, '_', '$', '-')")
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ValueError(f"names database {twice!r} twice")
    return names


class FarmHost(_Secret):
    """One more server of a farm ([[farm.hosts]]): its databases, its replicas, its password source. url's
    database part names the database its heartbeat and probes use; each farm database replaces it."""

    name: str | None = None
    databases: list[str] = field(default_factory=list)
    databases_file: str | None = None
    replicas: list[ReplicaConfig] = field(default_factory=list)

    @field_validator("databases")
    @classmethod
    def _databases(cls, v: list[str]) -> list[str]:
        return _check_db_names(v)

    @property
    def label(self) -> str:
        """The host in logs, status and metrics: the configured name, else host:port (never credentials)."""
        if self.name:
            return self.name
        u = parse_url(self.url)
        return f"{u.host}:{u.port}" if u.port else str(u.host)


class FarmConfig(_Model):
    """Farm mode: the same jobs in many databases (README: Farm mode)."""

    # names of databases on the [database] server (its replicas: [[replicas]])
    databases: list[str] = field(default_factory=list)
    # a file of such names, one per line, '#' comments; relative to the config file
    databases_file: str | None = None
    # SQLite files, each a database of the farm; relative to the config file
    sqlite_glob: str | None = None
    hosts: list[FarmHost] = field(default_factory=list)
    # databases being written at once on one primary, and across the farm
    max_concurrent_per_host: Annotated[int, Bound(ge=1, le=64)] = 2
    max_concurrent: Annotated[int, Bound(ge=1, le=256)] = 8
    # continue: a failed database is recorded and the farm goes on; stop: the first failure stops them all
    on_failure: Literal["continue", "stop"] = "continue"

    @field_validator("databases")
    @classmethod
    def _databases(cls, v: list[str]) -> list[str]:
        return _check_db_names(v)


class ThrottleConfig(_Model):
    # Pause when any replica is further behind than this. Seconds; sub-second values work with the heartbeat
    # probe (GitHub runs gh-ost at 0.3-0.5 s).
    max_lag_s: Annotated[float, live("max_lag_s")] = 1.0
    # Resume only when every replica is back under this (hysteresis, so work does not flap at the limit).
    resume_lag_s: Annotated[float, Bound(ge=0, le=3600)] = 0.5
    lag_probe: Literal["heartbeat", "native"] = "heartbeat"
    # The heartbeat is written and every probe reads on this clock. Seconds, 0.01..10.
    heartbeat_interval_s: Annotated[float, Bound(ge=0.01, le=10)] = 0.1
    # A replica whose lag cannot be read for this long counts as too far behind: fail closed. Seconds.
    fail_closed_after_s: Annotated[float, Bound(gt=0, le=3600)] = 10.0
    # Each batch is steered toward this duration: long enough to amortise round trips, short enough that
    # row locks and the replication stream stay small. Seconds, 0.01..60.
    target_batch_time_s: Annotated[float, live("target_batch_time_s")] = 0.5
    # Bounds on keys per batch, whatever the sizer computes.
    min_batch: Annotated[int, Bound(ge=1, le=1_000_000)] = 50
    max_batch: Annotated[int, Bound(ge=1, le=1_000_000)] = 100_000
    # Batches of one job in flight at once, each its own transaction on its own connection, over consecutive
    # key ranges; they commit in key order, so the checkpoint is always a key below which every batch
    # committed. 1 writes one batch at a time. SQLite (one writer) and Python-transform jobs always use 1;
    # so does MySQL/MariaDB with binlog_format = STATEMENT (see README).
    workers: Annotated[int, live("workers")] = 2
    # Rows written per second, across the daemon; 0 means unlimited.
    max_rows_per_s: Annotated[float, live("max_rows_per_s")] = 0
    # Pause while the primary's load is above this (MySQL Threads_running, PostgreSQL active backends);
    # 0 turns the probe off. Not available on SQLite.
    max_load: Annotated[float, Bound(ge=0)] = 0
    # The application on the primary (PostgreSQL, MySQL/MariaDB; SQLite has no sessions to watch), looked at
    # every APP_PROBE_INTERVAL_S (0.25 s) on a connection of its own: its sessions running a statement, and
    # those waiting for a lock a backfilld session holds. false turns the probe, and what follows, off.
    app_probe: bool = True
    # The application is busy while, on average over the last 2 s, at least this many of its sessions run a
    # statement on the primary (backfilld's own never count; an unreadable probe counts as busy).
    busy_sessions: Annotated[float, Bound(gt=0, le=100_000)] = 1.0
    # While the application is busy, backfilld takes at most this share of the time: after each batch it
    # waits (1 - busy_share) / busy_share times as long as the batch took (0.25: 3x, gh-ost's nice ratio),
    # runs one batch at a time (whatever workers says), and steers batches toward busy_batch_time_s, so rows
    # stay locked only that long. The slowest it then goes is about busy_share of its idle rate (less the
    # smaller batches' overhead); 1 turns the pacing off (still one batch at a time, short batches).
    busy_share: Annotated[float, live("busy_share")] = 0.25
    busy_batch_time_s: Annotated[float, Bound(gt=0.005, le=60)] = 0.1
    # Pause while an application session has waited longer than this for a lock a backfilld session holds
    # (with SKIP LOCKED only a row of a batch in flight can make it wait, and never for longer than the batch).
    max_app_wait_s: Annotated[float, Bound(gt=0, le=60)] = 0.2
    # Pause while this file exists ("" is off).
    flag_file: str = ""
    # Run only inside these local-time windows, "HH:MM-HH:MM" (may cross midnight); empty: always.
    windows: list[str] = field(default_factory=list)

    @field_validator("windows")
    @classmethod
    def _windows(cls, v: list[str]) -> list[str]:
        for w in v:
            m = _WINDOW.match(w)
            if not m:
                raise ValueError(f"{w!r} is not a window; write \"HH:MM-HH:MM\" in local time, e.g. \"22:00-06:00\"")
            if m.group(1, 2) == m.group(3, 4):
                raise ValueError(f"{w!r} is empty: start and end are the same")
        return v

    @model_validator(mode="after")
    def _bounds(self) -> ThrottleConfig:
        if self.min_batch > self.max_batch:
            raise ValueError(f"min_batch ({self.min_batch}) is above max_batch ({self.max_batch})")
        if self.resume_lag_s > self.max_lag_s:
            raise ValueError(f"resume_lag_s ({self.resume_lag_s}) is above max_lag_s ({self.max_lag_s}); "
                             "work resumes when lag falls back under resume_lag_s")
        return self


class MetricsConfig(_Model):
    # host:port for /metrics, /healthz, /readyz and /status; loopback by default, "" turns it off.
    listen: str = "127.0.0.1:9464"
    # A running job that is neither throttled nor paused and has committed no batch for this long is stalled:
    # /readyz and /healthz answer 503 until it commits again. Seconds: a batch takes target_batch_time_s, a
    # retry's backoff 30 s at most.
    stall_after_s: Annotated[float, Bound(ge=1, le=86_400)] = 60.0

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if v:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"{v!r} is not host:port (e.g. \"127.0.0.1:9464\", or \"\" to turn it off)")
        return v

    @property
    def address(self) -> tuple[str, int] | None:
        if not self.listen:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Model):
    # jobs files whose [[jobs]] run besides this file's own: paths or globs ("*", "?", "[...]", "**"), relative to
    # this file's folder (jobfiles.find)
    jobs_files: list[str] = field(default_factory=list)
    database: DatabaseConfig
    state: StateConfig = StateConfig()
    logging: LoggingConfig = LoggingConfig()
    throttle: ThrottleConfig = ThrottleConfig()
    replicas: list[ReplicaConfig] = field(default_factory=list)
    metrics: MetricsConfig = MetricsConfig()
    jobs: list[JobConfig] = field(default_factory=list)
    farm: FarmConfig | None = None
    # globs of jobs_files (or --jobs) that matched no file, with who named them: warnings the CLI logs
    _unmatched: ClassVar[tuple[tuple[str, str], ...]] = ()

    @field_validator("jobs_files")
    @classmethod
    def _jobs_files(cls, v: list[str]) -> list[str]:
        for path in v:
            if not path.strip() or "\x00" in path:
                raise ValueError(f"{path!r} is not a path or glob")
        return v

    @model_validator(mode="after")
    def _replicas(self) -> Config:
        labels = [r.label for r in self.replicas]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"two replicas are named {label!r}; give each a distinct name")
        for r in self.replicas:
            if parse_url(r.url).engine != self.engine:
                raise ValueError(f"replica {r.label!r} is {parse_url(r.url).engine} but the primary is "
                                 f"{self.engine}")
        caps = capabilities(self.engine)
        if self.replicas and not caps.replicas:
            raise ValueError(f"{caps.title} has no replicas; remove the [[replicas]] entries")
        return self   # jobs are checked together with the jobs files' (from_dict)

    @property
    def engine(self) -> str:
        return parse_url(self.database.url).engine

    def job(self, name: str) -> JobConfig:
        for job in self.jobs:
            if job.name == name:
                return job
        known = ", ".join(j.name for j in self.jobs) or "none"
        raise ConfigError(f"no job named {name!r} in the config or its jobs files (jobs: {known})")

    def run_order(self) -> list[JobConfig]:
        """Every job, in the order `run` runs them (jobfiles.run_order: as defined, each after its `after`)."""
        return jobfiles.run_order(self.jobs)

    @property
    def unmatched_globs(self) -> tuple[tuple[str, str], ...]:
        """(glob, who names it) for each jobs-file glob that matched no file."""
        return self._unmatched


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "dict[str,str]", "function-after[_url(), str]"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


# the password of a URL quoted in a message (a URL given where a name belongs is echoed back as that value)
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:'\"]*):[^\s@'\"]*@")


def _format_errors(exc: ValidationError, title: str, data: Any, example: str) -> str:
    """One line per problem under the title ("site.toml: invalid configuration"), each naming its key, and a
    job's key its job too: "  jobs[1].batch_size (job 'links'): ..."."""
    return "\n".join([title, *_error_lines(exc, data, example)])


def _error_lines(exc: ValidationError, data: Any, example: str, within: tuple[Any, ...] = ()) -> list[str]:
    """Each problem as a line naming its key, `within` (a location) prefixed."""
    lines: list[str] = []
    for err in exc.errors(include_url=False, include_input=False):
        parts = within + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-",
                                                                                                   "dict[", "str"))))
        loc = _loc(parts) + _job_named(data, parts)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown key (check its spelling against {example})"
            if parts == ("package",):
                msg += "; a [package] header belongs in a jobs file, not in the site config"
        elif err["type"] == "missing":
            msg = "is required"
        msg = _URL_PASSWORD.sub(r"\1:***@", msg)   # a URL echoed from any key, its password cut
        line = f"  {loc}: {msg}"
        if line not in lines:
            lines.append(line)
    return lines


def _job_named(data: Any, loc: tuple[Any, ...]) -> str:
    """" (job 'name')" for a location inside jobs[i] whose name is readable, else ""."""
    if len(loc) < 2 or loc[0] != "jobs" or not isinstance(loc[1], int) or not isinstance(data, dict):
        return ""
    jobs = data.get("jobs")
    job = jobs[loc[1]] if isinstance(jobs, list) and 0 <= loc[1] < len(jobs) else None
    name = job.get("name") if isinstance(job, dict) else None
    return f" (job {name!r})" if isinstance(name, str) and _JOB_NAME.match(name) else ""


def from_dict(data: dict[str, Any], source: str = "config", base_dir: Path | None = None, *,
              jobs_files: Sequence[str | os.PathLike[str]] = (), read_jobs_files: bool = True) -> Config:
    """The config of this data (a site config's TOML, as read from source), with the jobs of the jobs files its
    jobs_files name and of jobs_files (the CLI's --jobs, relative to the working directory). base_dir: the
    folder relative paths in the config (jobs_files, file paths in URLs) are taken from, source's (None: the
    working directory). read_jobs_files=False: the site's settings and its own jobs alone."""
    try:
        site = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, f"{source}: invalid configuration", data,
                                         "config/example.toml")) from None
    jobs = [job.placed(Origin(source, i)) for i, job in enumerate(site.jobs)]
    unmatched: list[tuple[str, str]] = []
    if read_jobs_files:
        base = base_dir or Path(".")
        named = [(pattern, base, f"{source}: jobs_files[{i}]") for i, pattern in enumerate(site.jobs_files)]
        named += [(os.fspath(path), Path("."), "--jobs") for path in jobs_files]
        found = jobfiles.find(named)
        bad: list[str] = []
        for path in found.paths:
            try:
                jobs += read_jobs_file(path)
            except ConfigError as exc:
                bad.append(str(exc))
        if bad:   # every file's problems at once
            raise ConfigError("\n".join(bad))
        unmatched = found.unmatched
    problems = jobfiles.problems(jobs)
    if problems:
        raise combined([ConfigError(p) for p in problems])
    cfg = site.model_copy(update={"jobs": jobs})
    object.__setattr__(cfg, "_unmatched", tuple(unmatched))
    return cfg


def read_jobs_file(path: str | os.PathLike[str]) -> list[JobConfig]:
    """The jobs of one jobs file, each with its origin; ConfigError naming the file, and each job and key."""
    p = Path(path)
    content = jobfiles.read(p)
    data = {"jobs": content.jobs}
    jobs, lines = [], []
    for i, raw in enumerate(content.jobs):   # each job on its own: no model of the whole file to build at import
        try:
            job = JobConfig.model_validate(raw)
        except ValidationError as exc:
            lines += _error_lines(exc, data, "config/example-jobs.toml", within=("jobs", i))
        except RecursionError:
            raise ConfigError(f"{p}: nests arrays or tables too deeply to be a jobs file") from None
        else:
            jobs.append(job.placed(Origin(str(p), i, content.package, content.version, jobs_file=True)))
    if lines:
        raise ConfigError("\n".join([f"{p}: invalid jobs file", *lines]))
    return jobs


def load(path: str | os.PathLike[str], jobs_files: Sequence[str | os.PathLike[str]] = (), *,
         read_jobs_files: bool = True) -> Config:
    """Read and validate a TOML config file, and the jobs files it names (relative to its folder) and
    jobs_files (--jobs) name; read_jobs_files=False reads the site config alone (see from_dict)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file; see config/example.toml for a start") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.strerror})") from None
    try:
        return from_dict(tomllib.loads(raw.decode("utf-8")), str(p), base_dir=p.absolute().parent,
                         jobs_files=jobs_files, read_jobs_files=read_jobs_files)
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: is not valid TOML: {exc}") from None
    except RecursionError:   # in the TOML parser or in validating what it made (a jobs file's: read_jobs_file)
        raise ConfigError(f"{p}: nests arrays or tables too deeply to be a backfilld config") from None


# password_file = "%d/NAME": the credential NAME a systemd unit passes in with LoadCredential=NAME:PATH, read from
# the directory systemd names in $CREDENTIALS_DIRECTORY (as the unit's own %d specifier would)
CREDENTIALS_PREFIX = "%d/"


def resolve_password(section: _Secret, where: str = "database") -> str | None:
    """Read the password named by password_env / password_file. The value never appears in an error."""
    if section.password_env:
        value = os.environ.get(section.password_env)
        if value is None:
            raise ConfigError(f"{where}.password_env names {section.password_env!r}, which is not set in the "
                              "environment; export it or use password_file")
        return value
    if section.password_file:
        path = section.password_file
        if path.startswith(CREDENTIALS_PREFIX):   # systemd's LoadCredential= (deploy/systemd/backfilld.service)
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise ConfigError(f"{where}.password_file {path!r} names a systemd credential, but "
                                  "CREDENTIALS_DIRECTORY is not set: run under a unit with LoadCredential=, or "
                                  "give the file's path")
            path = str(Path(directory) / path.removeprefix(CREDENTIALS_PREFIX))
        elif section._base_dir is not None and not Path(path).is_absolute():
            path = str(section._base_dir / path)   # relative to the config file, as its other paths are
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise ConfigError(f"{where}.password_file {section.password_file!r}: is not UTF-8 text") from None
        except OSError as exc:
            raise ConfigError(f"{where}.password_file {section.password_file!r}: cannot read it "
                              f"({exc.strerror})") from None
    return None


def database_url(section: _Secret, where: str = "database", *, require_tls: bool = False) -> DatabaseURL:
    """The section's URL ready to connect to: its password, its TLS files' paths resolved, [database]
    require_tls, and `where` it came from."""
    url = parse_url(section.url)
    return replace(url, password=resolve_password(section, where), tls=url.tls.resolved(section._base_dir),
                   require_tls=require_tls, origin=where)
