"""sysbench ``oltp_read_write`` as the application on one table, ``sbtest1``, of a PostgreSQL or MariaDB server.

Owns: the sysbench command lines (prepare, run in the background, cleanup), reading its output into a
:class:`SysbenchResult`, and figures over a sub-window of a run (``result.window(t0, t1)``: the seconds while
a backfill ran). Which statements the application's errors collided with is tests/harness/locklog.py's.

    target = SysbenchTarget.from_url("postgresql://postgres@127.0.0.1:5432/test")
    prepare(target, rows=20_000)                  # DROP + CREATE sbtest1 (id, k, c, pad) + N rows
    with start(target, threads=4, time_s=15) as run:
        run.wait_started()                        # worker threads connected and running
        ...                                       # start a backfill beside it
        result = run.wait()                       # SysbenchResult; raises SysbenchError if sysbench failed
    w = result.window(t0, t1)                     # tps, p95/p99, errors over [t0, t1] (unix time)
    cleanup(target)

Latency percentiles. sysbench 1.0 computes one percentile (``--percentile``, default 95) per report interval
and for the whole run, and prints its histogram (``--histogram``) only once, for the whole run. Neither gives
p95 and p99 of a sub-window. So runs use ``sysbench_oltp.lua`` beside this file: sysbench's own
``oltp_read_write.lua``, unchanged (its statements, transactions and error handling are sysbench's), plus a
report hook that prints each interval's whole latency histogram with a wall-clock timestamp. Any percentile
of any set of intervals is then computed exactly as sysbench computes its own (same buckets, same rule:
the first bucket at which the running count reaches ``floor(n * p / 100 + 0.5)``; the buckets are
log-spaced, 1.8 % apart). The per-interval line's own percentile (95) is kept too, and used if the
histogram cannot be read (``Interval.hist`` empty). Window averages are computed from the buckets (within
1.8 %); the whole run's average is sysbench's exact one.

Errors. sysbench's drivers ignore some errors and go on with the next transaction: PostgreSQL 40P01
(deadlock), 23505 (duplicate key: its threads race on DELETE + INSERT of the same id, normal) and 40001;
MariaDB 1213 (deadlock), 1020 and 1205 (lock wait timeout), the ``--mysql-ignore-errors`` default. Those
are counted (``ignored_errors``, per interval ``errors``), not named: the server's log says which error and
with whom (locklog.py). Any other error ends the sysbench thread that got it and is kept in
``fatal_errors``; ``wait()`` then raises.

Scripts: ``SYSBENCH_LUA_DIR`` (``$BACKFILLD_SYSBENCH_LUA_DIR``, default ``/usr/share/sysbench``, where
Debian's package puts them); the binary is ``$BACKFILLD_SYSBENCH`` or ``sysbench`` on the PATH.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import unquote, urlsplit

__all__ = [
    "SYSBENCH_LUA_DIR",
    "Interval",
    "SysbenchError",
    "SysbenchResult",
    "SysbenchRun",
    "SysbenchTarget",
    "Window",
    "cleanup",
    "parse_output",
    "prepare",
    "require_sysbench",
    "start",
    "sysbench_available",
]

SYSBENCH = os.environ.get("BACKFILLD_SYSBENCH", "sysbench")
SYSBENCH_LUA_DIR = Path(os.environ.get("BACKFILLD_SYSBENCH_LUA_DIR", "/usr/share/sysbench"))
WRAPPER = Path(__file__).with_name("sysbench_oltp.lua")
TABLE = "sbtest1"
# application_name of sysbench's PostgreSQL sessions (libpq reads PGAPPNAME), so the server's log names them
APP_NAME = "sysbench"
# sysbench's own report interval, seconds: the resolution of every window figure
REPORT_INTERVAL_S = 1
# seconds to wait, past --time, for sysbench to end by itself before it is stopped (a thread stuck on a lock
# only notices the deadline after its statement returns)
EXIT_GRACE_S = 60.0


class SysbenchError(RuntimeError):
    """sysbench could not be started, failed, or ended with errors it does not ignore."""


# --------------------------------------------------------------------------------------------------------------
# availability


def sysbench_available() -> str | None:
    """None when sysbench and its oltp scripts are here, otherwise why not."""
    if shutil.which(SYSBENCH) is None:
        return f"sysbench is not installed ({SYSBENCH!r} not on PATH; apt-get install sysbench)"
    missing = [p for p in (SYSBENCH_LUA_DIR / "oltp_read_write.lua", SYSBENCH_LUA_DIR / "oltp_common.lua")
               if not p.is_file()]
    if missing:
        return f"sysbench scripts missing: {', '.join(map(str, missing))} (set BACKFILLD_SYSBENCH_LUA_DIR)"
    return None


def require_sysbench() -> None:
    """Skip the calling test without sysbench; under CI=true fail instead."""
    import pytest

    from tests.harness.replication import in_ci

    reason = sysbench_available()
    if reason:
        if in_ci():
            pytest.fail(f"CI=true but {reason}; .ci/apt-packages must list it", pytrace=False)
        pytest.skip(reason)


# --------------------------------------------------------------------------------------------------------------
# the server


@dataclass(frozen=True)
class SysbenchTarget:
    """Where sysbench connects. ``engine`` is "postgresql" or "mysql" (MariaDB)."""

    engine: str
    host: str
    port: int
    user: str
    database: str
    password: str = ""

    @classmethod
    def from_url(cls, url: str) -> SysbenchTarget:
        """From a backfilld-style URL: postgresql://user@host:port/db or mysql://user@host:port/db."""
        u = urlsplit(url)
        scheme = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql",
                  "mariadb": "mysql"}.get(u.scheme)
        if scheme is None:
            raise ValueError(f"sysbench drives PostgreSQL or MariaDB/MySQL, not {u.scheme!r} ({url})")
        database = u.path.lstrip("/")
        if not database:
            raise ValueError(f"the URL names no database: {url}")
        return cls(scheme, u.hostname or "127.0.0.1", u.port or (5432 if scheme == "postgresql" else 3306),
                   unquote(u.username or ("postgres" if scheme == "postgresql" else "root")), database,
                   unquote(u.password or ""))

    def args(self) -> list[str]:
        if self.engine == "postgresql":
            return ["--db-driver=pgsql", f"--pgsql-host={self.host}", f"--pgsql-port={self.port}",
                    f"--pgsql-user={self.user}", f"--pgsql-password={self.password}", f"--pgsql-db={self.database}"]
        return ["--db-driver=mysql", f"--mysql-host={self.host}", f"--mysql-port={self.port}",
                f"--mysql-user={self.user}", f"--mysql-password={self.password}", f"--mysql-db={self.database}"]

    def env(self, pg_options: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL"))}
        env.update(LC_ALL="C", LANG="C", BACKFILLD_SYSBENCH_LUA_DIR=str(SYSBENCH_LUA_DIR))
        if self.engine == "postgresql":
            env["PGAPPNAME"] = APP_NAME
            if pg_options:
                env["PGOPTIONS"] = pg_options
        return env

    def __str__(self) -> str:
        return f"{self.engine}://{self.user}@{self.host}:{self.port}/{self.database}"


def _common(rows: int) -> list[str]:
    return ["--tables=1", f"--table-size={rows}"]


def _run(target: SysbenchTarget, cmd: str, rows: int, timeout_s: float) -> str:
    reason = sysbench_available()
    if reason:
        raise SysbenchError(reason)
    args = [SYSBENCH, str(SYSBENCH_LUA_DIR / "oltp_read_write.lua"), *target.args(), *_common(rows), cmd]
    try:
        cp = subprocess.run(args, check=False, capture_output=True, text=True, timeout=timeout_s, env=target.env(),
                            stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise SysbenchError(f"sysbench {cmd} on {target} did not finish within {timeout_s:.0f} s") from exc
    if cp.returncode != 0:
        raise SysbenchError(f"sysbench {cmd} on {target} failed (exit {cp.returncode}):\n"
                            f"{(cp.stdout + cp.stderr).strip()[-3000:]}")
    return cp.stdout


def prepare(target: SysbenchTarget, rows: int, *, timeout_s: float = 1800.0) -> None:
    """Drop ``sbtest1`` if there, then sysbench's prepare: the table (id key, k indexed, c, pad) and ``rows``
    rows with ids 1..rows."""
    cleanup(target, timeout_s=timeout_s)
    _run(target, "prepare", rows, timeout_s)


def cleanup(target: SysbenchTarget, *, timeout_s: float = 120.0) -> None:
    """sysbench's cleanup: DROP TABLE IF EXISTS sbtest1."""
    _run(target, "cleanup", 1, timeout_s)


# --------------------------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class Interval:
    """One report interval. ``t_end`` is wall-clock (unix) time at its end; ``hist`` maps histogram bucket to
    transactions (empty when the histogram could not be read)."""

    t_end: float
    elapsed_s: float
    interval_s: float
    threads: int
    events: int
    reads: int
    writes: int
    other: int
    errors: int
    reconnects: int
    pct_ms: float | None = None       # sysbench's own --percentile for the interval
    hist: dict[int, int] = field(default_factory=dict)

    @property
    def t_start(self) -> float:
        return self.t_end - self.interval_s

    @property
    def tps(self) -> float:
        return self.events / self.interval_s if self.interval_s > 0 else 0.0


@dataclass(frozen=True)
class Histogram:
    """sysbench's bucket scale: bucket i holds latencies around exp(i / mult + deduct) ms."""

    deduct: float
    mult: float

    def value_ms(self, bucket: int) -> float:
        return math.exp(bucket / self.mult + self.deduct)

    def percentile_ms(self, counts: dict[int, int], pct: float) -> float | None:
        """sysbench's rule (sb_histogram_get_pct_*): the first bucket where the running count reaches
        floor(n * pct / 100 + 0.5)."""
        n = sum(counts.values())
        if n == 0:
            return None
        want = math.floor(n * pct / 100 + 0.5)
        seen = 0
        for bucket in sorted(counts):
            seen += counts[bucket]
            if seen >= want:
                return self.value_ms(bucket)
        return self.value_ms(max(counts))

    def mean_ms(self, counts: dict[int, int]) -> float | None:
        n = sum(counts.values())
        return sum(c * self.value_ms(b) for b, c in counts.items()) / n if n else None


@dataclass(frozen=True)
class Window:
    """Figures over the intervals of a sub-window of a run."""

    t0: float
    t1: float
    seconds: float
    intervals: int
    transactions: int
    errors: int                       # errors sysbench ignored (and retried with a new transaction)
    tps: float
    latency_avg_ms: float | None      # from the histogram buckets (within 1.8 %)
    p95_ms: float | None
    p99_ms: float | None
    percentiles_exact: bool           # False: the histogram was unavailable, p95 is the worst interval's

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class SysbenchResult:
    """A finished run: sysbench's final report for the whole run, and every interval."""

    threads: int
    time_s: float
    total_time_s: float = 0.0
    transactions: int = 0
    queries: int = 0
    ignored_errors: int = 0
    reconnects: int = 0
    tps: float = 0.0
    latency_avg_ms: float | None = None
    latency_max_ms: float | None = None
    latency_pct_ms: float | None = None      # sysbench's --percentile over the whole run
    percentile: int = 95
    intervals: list[Interval] = field(default_factory=list)
    histogram: Histogram | None = None
    fatal_errors: list[str] = field(default_factory=list)
    returncode: int | None = None
    started_at: float = 0.0                  # unix time the worker threads started
    ended_at: float = 0.0
    stopped: bool = False                    # ended by stop_and_collect(), not by --time
    output: str = ""

    @property
    def p95_ms(self) -> float | None:
        return self.window().p95_ms

    @property
    def p99_ms(self) -> float | None:
        return self.window().p99_ms

    def window(self, t0: float | None = None, t1: float | None = None) -> Window:
        """Figures over the intervals whose middle lies in [t0, t1] (unix time; default: the whole run), or,
        for a window shorter than that, the intervals it overlaps. Intervals are 1 s long, so a window is
        exact to within half a second at each end."""
        lo = -math.inf if t0 is None else t0
        hi = math.inf if t1 is None else t1
        picked = [iv for iv in self.intervals if lo <= (iv.t_start + iv.t_end) / 2 <= hi]
        if not picked:   # a window shorter than an interval: the intervals it overlaps
            picked = [iv for iv in self.intervals if iv.t_end > lo and iv.t_start < hi]
        seconds = sum(iv.interval_s for iv in picked)
        events = sum(iv.events for iv in picked)
        merged: dict[int, int] = {}
        for iv in picked:
            for b, c in iv.hist.items():
                merged[b] = merged.get(b, 0) + c
        exact = self.histogram is not None and bool(picked) and all(iv.hist or not iv.events for iv in picked)
        if exact and self.histogram is not None:
            avg, p95, p99 = (self.histogram.mean_ms(merged), self.histogram.percentile_ms(merged, 95),
                             self.histogram.percentile_ms(merged, 99))
        else:
            pcts = [iv.pct_ms for iv in picked if iv.pct_ms is not None]
            avg, p95, p99 = None, (max(pcts) if pcts else None), None
        return Window(t0=picked[0].t_start if picked else lo, t1=picked[-1].t_end if picked else hi,
                      seconds=seconds, intervals=len(picked), transactions=events,
                      errors=sum(iv.errors for iv in picked), tps=events / seconds if seconds else 0.0,
                      latency_avg_ms=avg, p95_ms=p95, p99_ms=p99, percentiles_exact=exact)


_INTERVAL = re.compile(r"^#bf interval (\S+) (\S+) (\S+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) ?(\S*)$")
_HISTOGRAM = re.compile(r"^#bf histogram \d+ (\S+) (\S+)$")
_DEFAULT_LINE = re.compile(r"^\[ *\d+s \] thds: .* lat \(ms,(\d+)%\): ([\d.]+) ")
_TOTALS = {
    "transactions": re.compile(r"^\s*transactions:\s+(\d+)\s+\(([\d.]+) per sec\.\)"),
    "queries": re.compile(r"^\s*queries:\s+(\d+)\s"),
    "ignored_errors": re.compile(r"^\s*ignored errors:\s+(\d+)\s"),
    "reconnects": re.compile(r"^\s*reconnects:\s+(\d+)\s"),
    "total_time_s": re.compile(r"^\s*total time:\s+([\d.]+)s"),
    "latency_avg_ms": re.compile(r"^\s*avg:\s+([\d.]+)$"),
    "latency_max_ms": re.compile(r"^\s*max:\s+([\d.]+)$"),
    "latency_pct_ms": re.compile(r"^\s*(\d+)th percentile:\s+([\d.]+)$"),
}


def parse_output(text: str, *, threads: int = 0, time_s: float = 0.0) -> SysbenchResult:
    """A run's stdout (+stderr) as a SysbenchResult. Works on plain ``oltp_read_write`` output too (then the
    intervals carry sysbench's own percentile only)."""
    r = SysbenchResult(threads=threads, time_s=time_s, output=text)
    pending_pct: tuple[int, float] | None = None
    for line in text.splitlines():
        if m := _INTERVAL.match(line):
            hist: dict[int, int] = {}
            if m[11]:
                for part in m[11].split(","):
                    b, _, c = part.partition(":")
                    hist[int(b)] = int(c)
            r.intervals.append(Interval(
                t_end=float(m[1]), elapsed_s=float(m[2]), interval_s=float(m[3]), threads=int(m[4]),
                events=int(m[5]), reads=int(m[6]), writes=int(m[7]), other=int(m[8]), errors=int(m[9]),
                reconnects=int(m[10]), pct_ms=pending_pct[1] if pending_pct else None, hist=hist))
            pending_pct = None
        elif m := _HISTOGRAM.match(line):
            r.histogram = Histogram(deduct=float(m[1]), mult=float(m[2]))
        elif m := _DEFAULT_LINE.match(line):
            pending_pct = (int(m[1]), float(m[2]))
        elif line.startswith("FATAL:") or "FATAL: " in line[:40]:
            r.fatal_errors.append(line.strip())
        else:
            for name, rx in _TOTALS.items():
                if m := rx.match(line):
                    if name == "transactions":
                        r.transactions, r.tps = int(m[1]), float(m[2])
                    elif name == "latency_pct_ms":
                        r.percentile, r.latency_pct_ms = int(m[1]), float(m[2])
                    elif name in ("latency_avg_ms", "latency_max_ms", "total_time_s"):
                        setattr(r, name, float(m[1]))
                    else:
                        setattr(r, name, int(m[1]))
                    break
    if r.intervals and not r.total_time_s:
        # no final report (the run was stopped): the totals of its intervals
        r.transactions = sum(iv.events for iv in r.intervals)
        r.queries = sum(iv.reads + iv.writes + iv.other for iv in r.intervals)
        r.ignored_errors = sum(iv.errors for iv in r.intervals)
        r.reconnects = sum(iv.reconnects for iv in r.intervals)
        seconds = sum(iv.interval_s for iv in r.intervals)
        r.tps = r.transactions / seconds if seconds else 0.0
    if r.intervals:
        first = r.intervals[0]
        r.started_at = first.t_end - first.elapsed_s
        r.ended_at = r.started_at + (r.total_time_s or r.intervals[-1].elapsed_s)
    return r


# --------------------------------------------------------------------------------------------------------------
# running


class SysbenchRun:
    """A sysbench ``run`` in the background. Output is read as it comes (a thread), so the pipe never fills."""

    def __init__(self, target: SysbenchTarget, *, threads: int, time_s: int, rows: int,
                 extra_args: Sequence[str] = (), pg_options: str | None = None) -> None:
        reason = sysbench_available()
        if reason:
            raise SysbenchError(reason)
        self.target, self.threads, self.time_s, self.rows = target, threads, time_s, rows
        self.args = [SYSBENCH, str(WRAPPER), *target.args(), *_common(rows), f"--threads={threads}",
                     f"--time={time_s}", f"--report-interval={REPORT_INTERVAL_S}", "--percentile=95",
                     *extra_args, "run"]
        self._lines: list[str] = []
        self._started = threading.Event()
        self._first_interval = threading.Event()
        self._done = threading.Event()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=target.env(pg_options),
                                     start_new_session=True)
        self.launched_at = time.time()
        self._reader = threading.Thread(target=self._read, name="sysbench-output", daemon=True)
        self._reader.start()
        self._result: SysbenchResult | None = None

    _last_reported = 0.0   # unix time at the end of the last interval reported

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self._lines.append(line)
                if line.startswith("Threads started!"):
                    self._started.set()
                elif line.startswith("#bf interval"):
                    with contextlib.suppress(IndexError, ValueError):
                        self._last_reported = float(line.split()[2])
                    self._first_interval.set()
        finally:
            self._done.set()
            self._started.set()
            self._first_interval.set()

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_started(self, timeout_s: float = 60.0) -> None:
        """Until the worker threads run and the first interval is reported (its transactions are done)."""
        if not self._first_interval.wait(timeout_s) or not self.running() and not self._started.is_set():
            raise SysbenchError(f"sysbench on {self.target} did not start within {timeout_s:.0f} s:\n"
                                f"{self.output[-3000:]}")
        if self._done.is_set() and self.proc.poll() not in (None, 0):
            raise SysbenchError(f"sysbench on {self.target} exited (code {self.proc.poll()}) before running:\n"
                                f"{self.output[-3000:]}")

    def wait_reported(self, t: float, timeout_s: float = 5.0) -> bool:
        """Until the interval holding unix time ``t`` has been reported (so a window ending at ``t`` has
        its last second), or the run ended. False if that did not happen within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self._last_reported < t and not self._done.is_set():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def wait(self, timeout_s: float | None = None, *, check: bool = True) -> SysbenchResult:
        """Wait for the run to end (``--time`` plus a grace period by default) and return its result. Raises
        SysbenchError when sysbench failed or reported errors it does not ignore (``check=False``: return the
        result anyway)."""
        if self._result is None:
            limit = timeout_s if timeout_s is not None else self.time_s + EXIT_GRACE_S
            try:
                self.proc.wait(max(0.0, self.launched_at + limit - time.time()))
            except subprocess.TimeoutExpired:
                self.stop()
                raise SysbenchError(f"sysbench on {self.target} still running {limit:.0f} s after its start; "
                                    f"stopped it:\n{self.output[-3000:]}") from None
            self._reader.join(10)
            r = parse_output(self.output, threads=self.threads, time_s=self.time_s)
            r.returncode = self.proc.returncode
            self._result = r
        r = self._result
        if check and (r.returncode != 0 or r.fatal_errors or not r.intervals):
            detail = "\n".join(r.fatal_errors[:10]) or r.output[-3000:]
            raise SysbenchError(f"sysbench on {self.target} failed (exit {r.returncode}, {len(r.fatal_errors)} "
                                f"errors it does not ignore):\n{detail}")
        return r

    def stop_and_collect(self) -> SysbenchResult:
        """End the run now and return what it reported up to then (every whole interval; the totals are the
        intervals'). Raises SysbenchError when sysbench had failed before, or hit an error it does not
        ignore."""
        if self.proc.poll() is not None:
            return self.wait()
        self.stop()
        r = parse_output(self.output, threads=self.threads, time_s=self.time_s)
        r.returncode = self.proc.returncode
        r.stopped = True
        self._result = r
        if r.fatal_errors or not r.intervals:
            detail = "\n".join(r.fatal_errors[:10]) or r.output[-3000:]
            raise SysbenchError(f"sysbench on {self.target} failed ({len(r.fatal_errors)} errors it does not "
                                f"ignore):\n{detail}")
        return r

    def stop(self) -> None:
        """End the run now (its whole process group), if still running."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(target: SysbenchTarget, *, threads: int = 4, time_s: int = 15, rows: int = 20_000,
          extra_args: Iterable[str] = (), pg_options: str | None = None) -> SysbenchRun:
    """Start ``oltp_read_write`` on ``sbtest1`` (made by ``prepare`` with the same ``rows``) in the background.
    ``pg_options`` goes to PostgreSQL sessions as PGOPTIONS (e.g. ``-c log_lock_waits=on`` on a server whose
    configuration is not ours)."""
    return SysbenchRun(target, threads=threads, time_s=time_s, rows=rows, extra_args=list(extra_args),
                       pg_options=pg_options)
