"""Which statements the application's deadlocks and lock wait timeouts collided with, from the server's log.

Owns: the server settings that make PostgreSQL and MariaDB log every deadlock and lock wait timeout with
the statements involved, the parsers of those logs, and an optional sampler of lock waits that names what a
timed-out statement waited for (no log says it). Running the application is tests/harness/sysbench.py's.

    pair = PostgresPair(extra_conf=PG_CONF)           # or MariaDBPair(extra_args=MARIADB_ARGS)
    log = ServerLog.of_pair(pair, markers=["c_digest", "backfilld_state"])
    mark = log.mark()                                 # offsets, before the run
    with LockWatch.of_pair(pair) as watch:            # optional: holders of timed-out waits
        ...                                           # sysbench + backfill
    report = log.report(mark, watch)                  # LogReport: collisions, other errors
    [c for c in report.collisions if c.involves_backfilld]

What the servers log, and what is set for it:

- PostgreSQL always logs a deadlock (ERROR "deadlock detected") with, in its DETAIL, every process of the
  cycle and the statement it was running ("Process 123: UPDATE ..."; the default log_error_verbosity is
  enough); the victim is the process that logs it. ``log_lock_waits = on`` logs each lock wait longer than
  ``deadlock_timeout`` (1 s) with the processes holding the lock, so a lock timeout ("canceling statement due
  to lock timeout", with its STATEMENT) is tied to its holders when the wait lasted that long.
  ``log_connections = on`` and ``%a`` in ``log_line_prefix`` name every process's application_name:
  backfilld's sessions are ``backfilld`` and ``backfilld-<role>`` (backfilld/engines/postgresql/engine.py sets
  them), sysbench's ``sysbench`` (PGAPPNAME). On a server whose settings are not ours (the default Debian
  prefix has no %a) a statement is backfilld's when its text names a marker (the job's target column or
  state table).
- MariaDB: ``innodb_print_all_deadlocks = ON`` writes each deadlock to the error log with every transaction
  of the cycle (thread id, the statement it was running) and which one was rolled back. Lock wait timeouts
  are not logged by InnoDB at all; the ``sql_errlog`` plugin (shipped with the server) logs every error a
  statement returns, with thread id and statement text, to ``sql_errors.log`` in the data directory. What
  the statement waited for comes only from :class:`LockWatch`, which samples InnoDB's lock waits. MariaDB
  names no application, so parties are told apart by statement text (markers), and a thread seen running a
  statement with a marker is backfilld's for the whole run (LockWatch).

Errors that are no collision with another session (PostgreSQL's 23505 between sysbench's own threads, which
its driver ignores) are counted in ``LogReport.other_errors``; a deadlock among sysbench's own threads is a
collision with ``involves_backfilld`` False.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

__all__ = [
    "MARIADB_ARGS",
    "PG_CONF",
    "Collision",
    "LockWatch",
    "LogMark",
    "LogReport",
    "Party",
    "ServerLog",
    "parse_mariadb_error_log",
    "parse_mariadb_sql_errors",
    "parse_postgres_log",
]

# PostgresPair(extra_conf=PG_CONF): every lock wait over deadlock_timeout logged with its holders, every
# connection with its application_name, and the application_name on every line
PG_CONF: dict[str, str | int] = {
    "log_lock_waits": "on",
    "log_connections": "on",
    "log_line_prefix": "'%m [%p] [%a] '",
}
# MariaDBPair(extra_args=MARIADB_ARGS): deadlocks in the error log, every statement error in sql_errors.log
# (size limit raised from 1 MB so that it never rotates away from the offsets taken before a run)
MARIADB_ARGS: list[str] = [
    "--innodb-print-all-deadlocks=ON",
    "--plugin-load-add=sql_errlog",
    "--sql-error-log=ON",
    "--sql-error-log-with-db-and-thread-info=ON",
    "--sql-error-log-size-limit=1073741824",
]
MARIADB_SQL_ERRORS = "sql_errors.log"   # sql_error_log_filename's default, in the data directory
# error codes (MariaDB) and messages (PostgreSQL) that are collisions
MY_DEADLOCK = 1213          # ER_LOCK_DEADLOCK
MY_LOCK_WAIT_TIMEOUT = 1205  # ER_LOCK_WAIT_TIMEOUT
PG_DEADLOCK = "deadlock detected"
PG_LOCK_TIMEOUT = "canceling statement due to lock timeout"
# LockWatch polls this often, seconds: well under backfilld's 1 s lock_timeout, so each wait that times out
# is seen a few times
WATCH_INTERVAL_S = 0.2


# --------------------------------------------------------------------------------------------------------------
# results


def _norm(sql: str | None) -> str | None:
    return None if sql is None else " ".join(sql.split())


@dataclass(frozen=True)
class Party:
    """One session of a collision: PostgreSQL backend pid or MariaDB thread id, its statement (None when the
    log does not say), its application_name (PostgreSQL, when known) and whether it is backfilld's."""

    id: int
    statement: str | None
    app: str | None = None
    backfilld: bool = False

    def describe(self) -> str:
        who = f"{'backfilld' if self.backfilld else 'application'} {self.id}"
        if self.app:
            who += f" ({self.app})"
        return f"{who}: {_norm(self.statement) or '(statement unknown)'}"


@dataclass(frozen=True)
class Collision:
    """A deadlock (victim rolled back, others: the rest of the cycle) or a lock wait timeout (victim's
    statement cancelled, others: the lock's holders, when known)."""

    kind: str                       # "deadlock" | "lock_timeout"
    at: str                         # the log's timestamp
    victim: Party
    others: tuple[Party, ...]

    @property
    def involves_backfilld(self) -> bool:
        return self.victim.backfilld or any(o.backfilld for o in self.others)

    @property
    def application_victim(self) -> bool:
        return not self.victim.backfilld

    def describe(self) -> str:
        others = "; ".join(o.describe() for o in self.others) or "(other side unknown)"
        return f"{self.kind} at {self.at}: victim {self.victim.describe()} <- {others}"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "at": self.at, "involves_backfilld": self.involves_backfilld,
                "victim": self.victim.__dict__, "others": [o.__dict__ for o in self.others]}


@dataclass
class LogReport:
    collisions: list[Collision] = field(default_factory=list)
    other_errors: dict[str, int] = field(default_factory=dict)   # message (PG) / "ERROR n: message" -> count
    # MariaDB: backfilld's no-wait range UPDATEs (innodb_lock_wait_timeout = 0) that met a row another session
    # held and gave up at once, as designed (the batch then locks first): nobody waited, so no collision
    gave_up_at_once: int = 0

    def of(self, kind: str | None = None, *, backfilld: bool | None = None) -> list[Collision]:
        return [c for c in self.collisions if (kind is None or c.kind == kind)
                and (backfilld is None or c.involves_backfilld == backfilld)]

    def summary(self) -> dict[str, int]:
        return {"deadlocks": len(self.of("deadlock")), "deadlocks_backfilld": len(self.of("deadlock", backfilld=True)),
                "lock_timeouts": len(self.of("lock_timeout")),
                "lock_timeouts_backfilld": len(self.of("lock_timeout", backfilld=True))}


class Classifier:
    """backfilld's or not: application_name ``backfilld*``, a marker in the statement's text, or (MariaDB) a
    thread LockWatch saw running a statement with a marker."""

    def __init__(self, markers: Iterable[str], backfilld_ids: Iterable[int] = ()) -> None:
        self.markers = [m.lower() for m in ("backfilld", *markers) if m]
        self.ids = set(backfilld_ids)

    def text(self, statement: str | None) -> bool:
        s = (statement or "").lower()
        return any(m in s for m in self.markers)

    def party(self, id_: int, statement: str | None, app: str | None = None) -> Party:
        ours = (app or "").startswith("backfilld") or self.text(statement) or id_ in self.ids
        return Party(id_, statement.strip() if statement else None, app, ours)


# --------------------------------------------------------------------------------------------------------------
# PostgreSQL


_PG_LEVELS = ("LOG|ERROR|FATAL|PANIC|WARNING|NOTICE|INFO|DEBUG[1-5]|DETAIL|HINT|CONTEXT|STATEMENT|QUERY|LOCATION")
_PG_LINE = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [A-Za-z+\-0-9]+)?) \[(?P<pid>\d+)\] "
                      rf"(?P<prefix>.*?)(?P<level>{_PG_LEVELS}):  (?P<msg>.*)$")
_PG_APP = re.compile(r"\[(?P<app>[^\]]*)\] $")
_PG_SECONDARY = {"DETAIL", "HINT", "CONTEXT", "STATEMENT", "QUERY", "LOCATION"}
_PG_CONNECTED = re.compile(r"^connection authorized: .*?application_name=(?P<app>.*)$")
_PG_WAITING = re.compile(r"^process \d+ still waiting for .* after [\d.]+ ms$")
_PG_HOLDERS = re.compile(r"^Process(?:es)? holding the lock: (?P<pids>[\d, ]+)\.")
_PG_DETAIL_STMT = re.compile(r"^Process (?P<pid>\d+): (?P<sql>.*)$")
_PG_DETAIL_WAITS = re.compile(r"^Process \d+ waits for ")


@dataclass
class _PgMessage:
    ts: str
    pid: int
    app: str | None
    level: str
    msg: str
    fields: dict[str, str] = field(default_factory=dict)


def _pg_messages(text: str) -> list[_PgMessage]:
    """Log lines as messages: a primary line (LOG, ERROR, ...) with its DETAIL/HINT/CONTEXT/STATEMENT lines
    and tab-indented continuation lines. A server writes each message whole, in one write."""
    out: list[_PgMessage] = []
    last: tuple[_PgMessage, str] | None = None   # message, field being continued ("" = msg)
    for line in text.splitlines():
        if line.startswith("\t") and last is not None:
            msg, name = last
            if name:
                msg.fields[name] += "\n" + line[1:]
            else:
                msg.msg += "\n" + line[1:]
            continue
        m = _PG_LINE.match(line)
        if m is None:
            last = None
            continue
        pid, level = int(m["pid"]), m["level"]
        app_m = _PG_APP.search(m["prefix"])
        app = app_m["app"] if app_m else None
        if level in _PG_SECONDARY and out and out[-1].pid == pid and last is not None:
            out[-1].fields[level] = m["msg"]
            last = (out[-1], level)
        else:
            out.append(_PgMessage(m["ts"], pid, app, level, m["msg"]))
            last = (out[-1], "")
    return out


def _pg_deadlock_statements(detail: str) -> dict[int, str]:
    stmts: dict[int, str] = {}
    current: int | None = None
    for line in detail.split("\n"):
        if m := _PG_DETAIL_STMT.match(line):
            current = int(m["pid"])
            stmts[current] = m["sql"]
        elif _PG_DETAIL_WAITS.match(line):
            current = None
        elif current is not None:
            stmts[current] += "\n" + line
    return stmts


def parse_postgres_log(text: str, markers: Iterable[str] = (), watch: LockWatch | None = None,
                       apps: dict[int, str] | None = None) -> LogReport:
    """Deadlocks and lock timeouts in a PostgreSQL log segment. ``apps`` (pid -> application_name) is
    completed from the segment's "connection authorized" lines."""
    markers = list(markers)
    cls = Classifier(markers, watch.backfilld_ids(markers) if watch else ())
    apps = dict(apps or {})
    waits: dict[int, list[int]] = {}        # pid -> holders of its last logged wait
    report = LogReport()
    for m in _pg_messages(text):
        if m.app:
            apps.setdefault(m.pid, m.app)
        if m.level == "LOG":
            if c := _PG_CONNECTED.match(m.msg):
                apps[m.pid] = c["app"].strip()
            elif _PG_WAITING.match(m.msg) and (h := _PG_HOLDERS.match(m.fields.get("DETAIL", ""))):
                waits[m.pid] = [int(p) for p in h["pids"].replace(" ", "").split(",") if p]
            continue
        if m.level != "ERROR":
            continue
        first = m.msg.split("\n", 1)[0]
        if first == PG_DEADLOCK:
            stmts = _pg_deadlock_statements(m.fields.get("DETAIL", ""))
            victim = cls.party(m.pid, m.fields.get("STATEMENT") or stmts.get(m.pid), m.app or apps.get(m.pid))
            others = tuple(cls.party(pid, sql, apps.get(pid)) for pid, sql in stmts.items() if pid != m.pid)
            report.collisions.append(Collision("deadlock", m.ts, victim, others))
        elif first == PG_LOCK_TIMEOUT:
            stmt = m.fields.get("STATEMENT")
            victim = cls.party(m.pid, stmt, m.app or apps.get(m.pid))
            holders = waits.pop(m.pid, [])
            seen = watch.holders_of(m.pid, stmt) if watch else []
            parties = {pid: cls.party(pid, None, apps.get(pid)) for pid in holders}
            for pid, app, sql in seen:
                if pid in parties or not holders:
                    parties[pid] = cls.party(pid, sql, app or apps.get(pid))
            report.collisions.append(Collision("lock_timeout", m.ts, victim, tuple(parties.values())))
        else:
            report.other_errors[first] = report.other_errors.get(first, 0) + 1
    return report


# --------------------------------------------------------------------------------------------------------------
# MariaDB


_MY_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")
_MY_DEADLOCK_START = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \d+ \[Note\] InnoDB: Transactions deadlock "
                                r"detected")
_MY_TRX = re.compile(r"^\*\*\* \((?P<n>\d+)\) TRANSACTION:")
_MY_THREAD = re.compile(r"^(?:MariaDB|MySQL) thread id (?P<id>\d+), ")
_MY_ROLLBACK = re.compile(r"\*\*\* WE ROLL BACK TRANSACTION \((?P<n>\d+)\)")
_MY_SQL_ERROR = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?P<thread>\d+) \S+ @ .*? ERROR (?P<code>\d+): "
                           r"(?P<msg>.*?) : (?P<sql>.*)$")
_MY_SQL_ERROR_NO_THREAD = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \S+ @ .*? ERROR (?P<code>\d+): "
                                     r"(?P<msg>.*?) : (?P<sql>.*)$")


def parse_mariadb_error_log(text: str, markers: Iterable[str] = (), watch: LockWatch | None = None) -> LogReport:
    """Deadlocks written by innodb_print_all_deadlocks in a MariaDB error log segment."""
    markers = list(markers)
    cls = Classifier(markers, watch.backfilld_ids(markers) if watch else ())
    report = LogReport()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = _MY_DEADLOCK_START.match(lines[i])
        i += 1
        if start is None:
            continue
        trx: dict[int, tuple[int, str | None]] = {}
        current: int | None = None
        victim_n: int | None = None
        while i < len(lines):
            line = lines[i]
            if _MY_DEADLOCK_START.match(line):
                break
            i += 1
            if m := _MY_TRX.match(line):
                current = int(m["n"])
                continue
            if (m := _MY_THREAD.match(line)) and current is not None:
                sql: list[str] = []
                while i < len(lines) and not _MY_TS.match(lines[i]) and not lines[i].startswith("*** "):
                    sql.append(lines[i])
                    i += 1
                trx[current] = (int(m["id"]), "\n".join(sql).strip() or None)
                current = None
                continue
            if m := _MY_ROLLBACK.search(line):
                victim_n = int(m["n"])
                break
        if victim_n is None or victim_n not in trx:
            continue
        vid, vsql = trx[victim_n]
        others = tuple(cls.party(tid, sql) for n, (tid, sql) in sorted(trx.items()) if n != victim_n)
        report.collisions.append(Collision("deadlock", start["ts"], cls.party(vid, vsql), others))
    return report


# a statement that waits for no lock at all (backfilld's no-wait form, backfilld/engines/mysql/engine.py)
_NO_WAIT = re.compile(r"SET\s+STATEMENT\s+innodb_lock_wait_timeout\s*=\s*0\s+FOR\s", re.IGNORECASE)


def _sql_error_entries(text: str) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = []
    seen: set[tuple[str, ...]] = set()
    for line in text.splitlines():
        m = _MY_SQL_ERROR.match(line) or _MY_SQL_ERROR_NO_THREAD.match(line)
        if m is None:
            if entries and not _MY_TS.match(line):
                entries[-1]["sql"] += "\n" + line   # a statement over several lines
            continue
        entries.append({"ts": m["ts"], "thread": m.groupdict().get("thread") or "0", "code": m["code"],
                        "msg": m["msg"], "sql": m["sql"]})
    out = []
    for e in entries:
        # the plugin writes each error twice here (MariaDB 10.11); no thread gets two of the same error on the
        # same statement within one second (a lock wait times out after 1 s at the least)
        k = (e["ts"], e["thread"], e["code"], e["sql"].strip())
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out


def parse_mariadb_sql_errors(text: str, markers: Iterable[str] = (), watch: LockWatch | None = None) -> LogReport:
    """Lock wait timeouts (and other errors, counted) in a segment of sql_errlog's sql_errors.log. Deadlocks
    are left to the error log's fuller account (counted here under other_errors only when asked for by
    code)."""
    markers = list(markers)
    cls = Classifier(markers, watch.backfilld_ids(markers) if watch else ())
    report = LogReport()
    for e in _sql_error_entries(text):
        code, thread, sql = int(e["code"]), int(e["thread"]), e["sql"].strip()
        if code == MY_LOCK_WAIT_TIMEOUT and _NO_WAIT.match(sql) and cls.text(sql):
            report.gave_up_at_once += 1
        elif code == MY_LOCK_WAIT_TIMEOUT:
            holders = watch.holders_of(thread, sql) if watch and thread else []
            others = tuple(cls.party(tid, hsql) for tid, _app, hsql in holders)
            report.collisions.append(Collision("lock_timeout", e["ts"], cls.party(thread, sql), others))
        elif code != MY_DEADLOCK:
            key = f"ERROR {code}: {e['msg']}"
            report.other_errors[key] = report.other_errors.get(key, 0) + 1
    return report


# --------------------------------------------------------------------------------------------------------------
# the logs of one server


@dataclass(frozen=True)
class LogMark:
    """Sizes of a server's log files at one moment: a report covers what was written after it."""

    offsets: tuple[int, ...]


class ServerLog:
    """The log files of one server: PostgreSQL's log, or MariaDB's error log and sql_errors.log."""

    def __init__(self, engine: str, paths: Sequence[Path], markers: Iterable[str] = ()) -> None:
        if engine not in ("postgresql", "mysql"):
            raise ValueError(f"engine must be 'postgresql' or 'mysql', not {engine!r}")
        self.engine, self.paths, self.markers = engine, list(paths), list(markers)

    @classmethod
    def of_pair(cls, pair: Any, markers: Iterable[str] = ()) -> ServerLog:
        """The primary's logs of a PostgresPair / MariaDBPair (tests/harness/replication.py)."""
        if pair.kind == "pg":
            return cls("postgresql", [pair.log_path("primary")], markers)
        return cls("mysql", [pair.log_path("primary"), pair.primary.datadir / MARIADB_SQL_ERRORS], markers)

    @staticmethod
    def _size(p: Path) -> int:
        try:
            return p.stat().st_size
        except FileNotFoundError:
            return 0

    def mark(self) -> LogMark:
        return LogMark(tuple(self._size(p) for p in self.paths))

    def read_since(self, mark: LogMark) -> list[str]:
        out = []
        for p, off in zip(self.paths, mark.offsets, strict=True):
            try:
                with open(p, "rb") as f:
                    size = f.seek(0, 2)
                    f.seek(off if off <= size else 0)   # a file that shrank was rotated: read it whole
                    out.append(f.read().decode("utf-8", "replace"))
            except FileNotFoundError:
                out.append("")
        return out

    def report(self, mark: LogMark, watch: LockWatch | None = None) -> LogReport:
        texts = self.read_since(mark)
        if self.engine == "postgresql":
            return parse_postgres_log(texts[0], self.markers, watch)
        deadlocks = parse_mariadb_error_log(texts[0], self.markers, watch)
        errors = parse_mariadb_sql_errors(texts[1] if len(texts) > 1 else "", self.markers, watch)
        return LogReport(deadlocks.collisions + errors.collisions, errors.other_errors, errors.gave_up_at_once)


# --------------------------------------------------------------------------------------------------------------
# lock waits, sampled


@dataclass(frozen=True)
class WaitSeen:
    at: float                # unix time
    waiter: int
    waiter_statement: str | None
    holder: int
    holder_app: str | None
    holder_statement: str | None   # PostgreSQL: the holder's last statement, even while idle in transaction


_PG_WAITS = """
SELECT w.pid, w.query, b.pid, b.application_name, b.query
  FROM pg_stat_activity w
 CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS h(pid)
  JOIN pg_stat_activity b ON b.pid = h.pid
 WHERE w.wait_event_type = 'Lock' AND w.pid <> pg_backend_pid()
"""
_MY_WAITS = """
SELECT r.trx_mysql_thread_id, r.trx_query, b.trx_mysql_thread_id, b.trx_query
  FROM information_schema.INNODB_LOCK_WAITS w
  JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id
  JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id
"""
_MY_RUNNING = "SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE INFO IS NOT NULL AND ID <> CONNECTION_ID()"


class LockWatch:
    """Samples who waits for whom every WATCH_INTERVAL_S on its own connection (a thread), so a lock timeout
    can be tied to the statement it waited for. On MariaDB it also notes every statement each thread is
    seen running (at most a few per thread), to tell backfilld's threads by their statements."""

    def __init__(self, engine: str, url: str, interval_s: float = WATCH_INTERVAL_S) -> None:
        self.engine, self.url, self.interval_s = engine, url, interval_s
        self.seen: list[WaitSeen] = []
        self.statements: dict[int, set[str]] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def of_pair(cls, pair: Any) -> LockWatch:
        return cls("postgresql" if pair.kind == "pg" else "mysql", pair.primary_url)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="lock-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _note(self, thread_id: int, sql: str | None) -> None:
        if sql:
            s = self.statements.setdefault(thread_id, set())
            if len(s) < 8:
                s.add(_norm(sql) or "")

    def _run(self) -> None:
        if self.engine == "postgresql":
            asyncio.run(self._run_pg())
        else:
            self._run_mysql()

    async def _run_pg(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url, timeout=10, server_settings={"application_name": "lock-watch"})
        try:
            while not self._stop.is_set():
                try:
                    rows = await conn.fetch(_PG_WAITS)
                except Exception:  # noqa: BLE001 - a missed sample only: go on
                    self.errors += 1
                    rows = []
                now = time.time()
                for r in rows:
                    self.seen.append(WaitSeen(now, r[0], r[1], r[2], r[3], r[4]))
                await asyncio.sleep(self.interval_s)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    def _run_mysql(self) -> None:
        import pymysql

        from backfilld.config import parse_url

        u = parse_url(self.url)
        conn = pymysql.connect(host=u.host, port=u.port or 3306, user=u.user or "root", password=u.password or "",
                               database=u.database, autocommit=True, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    try:
                        cur.execute(_MY_WAITS)
                        waits = list(cur.fetchall())
                        cur.execute(_MY_RUNNING)
                        running = list(cur.fetchall())
                    except Exception:  # noqa: BLE001 - a missed sample only: go on
                        self.errors += 1
                        waits, running = [], []
                    now = time.time()
                    for r in waits:
                        self.seen.append(WaitSeen(now, int(r[0]), r[1], int(r[2]), None, r[3]))
                        self._note(int(r[0]), r[1])
                        self._note(int(r[2]), r[3])
                    for tid, sql in running:
                        self._note(int(tid), sql)
                    self._stop.wait(self.interval_s)
        finally:
            with contextlib.suppress(Exception):
                conn.close()

    def holders_of(self, waiter: int, statement: str | None) -> list[tuple[int, str | None, str | None]]:
        """(id, application_name, statement) of what ``waiter`` was last seen waiting for, preferring samples
        where it ran ``statement``."""
        mine = [w for w in self.seen if w.waiter == waiter]
        same = [w for w in mine if _norm(w.waiter_statement) == _norm(statement)] or mine
        if not same:
            return []
        last_at = same[-1].at
        out: dict[int, tuple[int, str | None, str | None]] = {}
        for w in same:
            if w.at == last_at:
                stmt = w.holder_statement
                if stmt is None and self.statements.get(w.holder):
                    # idle in its transaction: what the thread was seen running earlier (MariaDB)
                    stmt = "(idle in transaction; seen running) " + " | ".join(sorted(self.statements[w.holder]))
                out[w.holder] = (w.holder, w.holder_app, stmt)
        return list(out.values())

    def backfilld_ids(self, markers: Sequence[str]) -> set[int]:
        """Threads seen running a statement that names a marker."""
        cls = Classifier(markers)
        return {tid for tid, stmts in self.statements.items() if any(cls.text(s) for s in stmts)}
