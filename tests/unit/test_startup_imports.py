"""Each command imports what it uses and nothing more (issue 14): the import graph, asserted on sys.modules of a real
`backfilld` process. How long start-up takes is benchmarks/bench_startup.py's business, not a test's."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

# Runs backfilld as `python -m backfilld ARGS...` does, and at exit writes the names of the modules it imported.
# With SERVE_AFTER_S in the environment, the HTTP endpoints' timer (metrics.SERVE_AFTER_S) is set to it first.
HOOK = """
import atexit, json, os, runpy, sys

if "SERVE_AFTER_S" in os.environ:
    from backfilld import logs
    logs.import_structlog()
    from backfilld import metrics
    metrics.SERVE_AFTER_S = float(os.environ["SERVE_AFTER_S"])
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(n for n, m in sys.modules.items() if m is not None))))
sys.argv = ["backfilld", *sys.argv[2:]]
if os.environ.get("VIA_TYPER"):   # the typer app parses, as it does every line the console script hands it
    from backfilld.cli import app
    app()
runpy.run_module("backfilld", run_name="__main__", alter_sys=True)
"""
DRIVERS = {"asyncpg", "aiomysql", "pymysql", "aiosqlite"}
OTHER_DRIVERS = DRIVERS - {"aiosqlite"}


def backfilld(tmp_path: Path, *args: str, serve_after_s: float | None = None, via_typer: bool = False
              ) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    out = tmp_path / "modules.json"
    env = {**os.environ, **({"SERVE_AFTER_S": str(serve_after_s)} if serve_after_s is not None else {}),
           **({"VIA_TYPER": "1"} if via_typer else {})}
    proc = subprocess.run([sys.executable, "-c", HOOK, str(out), *args], check=False, capture_output=True, text=True,
                          timeout=60, env=env)
    return proc, set(json.loads(out.read_text()))


def sqlite_config(tmp_path: Path, listen: str = "", level: str = "info") -> Path:
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, email_domain TEXT)")
    con.executemany("INSERT INTO users (id, email) VALUES (?, ?)", [(i, f"u{i}@d{i % 3}.org") for i in range(1, 101)])
    con.commit()
    con.close()
    cfg = tmp_path / "backfilld.toml"
    cfg.write_text(f"""
[database]
url = "sqlite:///{db}"
[logging]
format = "json"
level = "{level}"
[metrics]
listen = "{listen}"
[[jobs]]
name = "domains"
table = "users"
[jobs.set]
email_domain = "substr(email, instr(email, '@') + 1)"
""", encoding="utf-8")
    return cfg


def test_version_imports_neither_config_nor_logging_nor_drivers(tmp_path: Path) -> None:
    proc, modules = backfilld(tmp_path, "--version")
    assert (proc.returncode, proc.stdout) == (0, "backfilld 0.1.0\n")
    unwanted = {*DRIVERS, "aiohttp", "pydantic", "structlog", "rich", "prometheus_client", "asyncio",
                "backfilld.config", "backfilld.logs", "backfilld.daemon", "backfilld.engines"}
    assert not sorted(unwanted & modules)


def test_version_answers_as_typer_does(tmp_path: Path) -> None:
    # `--version` alone is answered before typer parses; with anything after it typer's callback answers
    fast, _ = backfilld(tmp_path, "--version")
    parsed, modules = backfilld(tmp_path, "--version", "status", "no-such.toml")
    assert "pydantic" in modules   # typer parsed
    assert (fast.returncode, fast.stdout, fast.stderr) == (parsed.returncode, parsed.stdout, parsed.stderr)


def test_status_imports_only_the_sqlite_driver_and_not_the_job_machinery(tmp_path: Path) -> None:
    proc, modules = backfilld(tmp_path, "status", str(sqlite_config(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "domains: not_started\n"
    assert "aiosqlite" in modules
    unwanted = {*OTHER_DRIVERS, "aiohttp", "rich", "prometheus_client", "backfilld.job", "backfilld.metrics",
                "backfilld.throttle", "sqlglot"}
    assert not sorted(unwanted & modules)


def test_status_logs_nothing_so_imports_no_structlog(tmp_path: Path) -> None:
    """Loggers import structlog on the first event (logs.get_logger): `status` logs none, so never pays for it."""
    proc, modules = backfilld(tmp_path, "status", str(sqlite_config(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert "structlog" not in modules and "backfilld.daemon" in modules


def test_a_plain_status_line_is_answered_without_typer_or_pydantic(tmp_path: Path) -> None:
    proc, modules = backfilld(tmp_path, "status", str(sqlite_config(tmp_path)))
    assert (proc.returncode, proc.stdout) == (0, "domains: not_started\n"), proc.stderr
    assert not sorted({"typer", "click", "pydantic", "pydantic_core"} & modules)


def jobs_file(tmp_path: Path) -> Path:
    path = tmp_path / "more.toml"
    path.write_text('[package]\nname = "ext"\n[[jobs]]\nname = "more"\ntable = "users"\n'
                    '[jobs.set]\nemail_domain = "lower(email)"\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("args,code", [
    (["status", "{cfg}"], 0),
    (["status", "--json", "{cfg}"], 0),
    (["status", "{cfg}", "--json", "--shard", "0/2"], 0),
    (["status", "--jobs", "{jobs}", "{cfg}"], 0),
    (["status", "{cfg}", "--jobs={jobs}", "--jobs", "{jobs}"], 0),     # the same file twice: read once
    (["status", "{tmp}/missing.toml"], 2),
    (["status", "{bad}"], 2),
], ids=["plain", "json", "json-shard", "jobs", "jobs-twice", "missing-file", "bad-config"])
def test_a_plain_status_line_prints_what_typer_would(tmp_path: Path, args: list[str], code: int) -> None:
    """The console script answers a plain `status` line itself (backfilld/__main__.py): the same output and exit
    code as when typer parses it, success and every kind of error alike."""
    cfg = sqlite_config(tmp_path)
    done, _ = backfilld(tmp_path, "run", str(cfg))
    assert done.returncode == 0, done.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text(encoding="utf-8").replace('name = "domains"', 'name = "domains"\nbatch_size = 0'),
                   encoding="utf-8")
    argv = [a.format(cfg=cfg, jobs=jobs_file(tmp_path), tmp=tmp_path, bad=bad) for a in args]
    own, own_modules = backfilld(tmp_path, *argv)
    typed, typed_modules = backfilld(tmp_path, *argv, via_typer=True)
    assert "typer" not in own_modules and "typer" in typed_modules
    assert (own.returncode, own.stdout, own.stderr) == (typed.returncode, typed.stdout, typed.stderr)
    assert own.returncode == code, own.stderr
    assert ("more: not_started" in own.stdout or '"job": "more"' in own.stdout) == ("{jobs}" in " ".join(args))


def failed_with(cfg: Path, error: str) -> None:
    """The job's state row as a failed run leaves it, with this error."""
    subprocess.run([sys.executable, "-m", "backfilld", "run", str(cfg)], check=True, capture_output=True, timeout=60)
    con = sqlite3.connect(cfg.parent / "app.db")
    con.execute("UPDATE backfilld_state SET status = 'failed', error = ?", (error,))
    con.commit()
    con.close()


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_an_error_with_colour_codes_and_other_scripts_prints_as_typer_prints_it(tmp_path: Path, encoding: str) -> None:
    """What a state row holds is printed as typer's echo prints it: colour codes stripped when stdout is not a
    terminal, UTF-8 where the locale's encoding cannot take the text."""
    cfg = sqlite_config(tmp_path)
    failed_with(cfg, "RuntimeError: \x1b[31mred \u00e9\x1b[0m")
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    runs = [subprocess.run([sys.executable, "-c", HOOK, str(tmp_path / "m.json"), "status", str(cfg)],
                           capture_output=True, timeout=60, env={**env, **extra}) for extra in ({}, {"VIA_TYPER": "1"})]
    own, typed = runs
    assert (own.returncode, own.stdout, own.stderr) == (typed.returncode, typed.stdout, typed.stderr)
    assert own.returncode == 0 and "error=RuntimeError: red \u00e9".encode() in own.stdout, own.stderr


def test_a_reader_that_goes_away_ends_status_as_it_ends_typer(tmp_path: Path) -> None:
    """`backfilld status ... | head -1`: exit 1, and no traceback."""
    cfg = sqlite_config(tmp_path)
    results = []
    for extra in ({}, {"VIA_TYPER": "1"}):
        proc = subprocess.Popen([sys.executable, "-c", HOOK, str(tmp_path / "m.json"), "status", str(cfg)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **extra})
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()   # before it writes: the interpreter alone takes longer to start
        results.append((proc.wait(timeout=60), proc.stderr.read()))
        proc.stderr.close()
    assert results[0] == results[1] == (1, b"")


def test_a_bad_shard_of_a_farm_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "wikis").mkdir()
    cfg = sqlite_config(tmp_path)
    farm = tmp_path / "farm.toml"
    farm.write_text(cfg.read_text(encoding="utf-8").replace("[metrics]", '[farm]\nsqlite_glob = "wikis/*.db"\n'
                                                            "[metrics]"), encoding="utf-8")
    own, _ = backfilld(tmp_path, "status", str(farm), "--shard", "x")
    typed, _ = backfilld(tmp_path, "status", str(farm), "--shard", "x", via_typer=True)
    assert (own.returncode, own.stdout, own.stderr) == (typed.returncode, typed.stdout, typed.stderr)
    assert own.returncode == 2 and own.stderr.startswith("backfilld: error: --shard"), own.stderr


@pytest.mark.parametrize("args", [["status", "--help"], ["status"], ["status", "a.toml", "b.toml"],
                                  ["status", "--jobs"], ["status", "--bogus", "a.toml"], ["status", "--", "a.toml"]])
def test_a_status_line_that_is_not_plain_is_typers_to_parse(tmp_path: Path, args: list[str]) -> None:
    proc, modules = backfilld(tmp_path, *args)
    assert "typer" in modules
    assert proc.returncode == (0 if "--help" in args else 2), proc.stderr


@pytest.mark.parametrize("listen", ["", "127.0.0.1:0"])
def test_sqlite_run_imports_no_other_driver_and_aiohttp_only_for_the_endpoints(tmp_path: Path, listen: str) -> None:
    cfg = sqlite_config(tmp_path, listen)
    proc, modules = backfilld(tmp_path, "run", str(cfg))
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line)["event"] for line in proc.stderr.splitlines()]
    assert "job_completed" in events
    assert ("http_listening" in events) == bool(listen)
    assert {"aiosqlite", "prometheus_client", "backfilld.job", "sqlglot"} <= modules   # the job's SQL parsed
    assert not sorted((OTHER_DRIVERS | {"rich"}) & modules)
    assert ("aiohttp" in modules) == bool(listen)


def test_run_binds_the_endpoints_before_its_first_batch_and_imports_aiohttp_after_it(tmp_path: Path) -> None:
    # the socket listens before anything is written (a busy port is bad input); aiohttp, imported in a thread once
    # the first batch has committed, answers from http_serving on (the timer that would start it anyway is held off)
    cfg = sqlite_config(tmp_path, "127.0.0.1:0", level="debug")
    proc, modules = backfilld(tmp_path, "run", str(cfg), serve_after_s=60)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line)["event"] for line in proc.stderr.splitlines()]
    assert events.index("http_listening") < events.index("job_started")
    assert events.index("batch_applied") < events.index("http_serving")
    assert "aiohttp" in modules


def test_run_of_a_completed_job_never_imports_aiohttp(tmp_path: Path) -> None:
    # no batch and an exit before the timer: the endpoints were bound (and logged) but nobody was answered
    cfg = sqlite_config(tmp_path, "127.0.0.1:0")
    first, _ = backfilld(tmp_path, "run", str(cfg))
    assert first.returncode == 0, first.stderr
    proc, modules = backfilld(tmp_path, "run", str(cfg), serve_after_s=60)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line)["event"] for line in proc.stderr.splitlines()]
    assert "http_listening" in events and "batch_applied" not in events
    assert "aiohttp" not in modules


RENDER = """
import sys
if sys.argv[1] == "rich-first":
    import rich.console
from backfilld import logs
logs.import_structlog()
import structlog
print(("rich" in sys.modules), structlog.dev.ConsoleRenderer(colors=True)(None, "info", {
    "event": "batch_applied", "job": "j", "rows": 3, "key": ["id", 7], "took_s": 0.25, "level": "info",
    "timestamp": "2026-01-01T00:00:00Z"}))
"""


def test_console_log_lines_are_the_same_with_structlog_imported_without_rich() -> None:
    def render(mode: str) -> str:
        return subprocess.run([sys.executable, "-c", RENDER, mode], capture_output=True, text=True, check=True,
                              timeout=60).stdout

    with_rich, without = render("rich-first"), render("logs-first")
    assert with_rich.startswith("True ") and without.startswith("False ")
    assert with_rich.removeprefix("True ") == without.removeprefix("False ")
