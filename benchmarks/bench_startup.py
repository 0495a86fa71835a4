#!/usr/bin/env python3
"""What start-up costs each command (issue #14): the time from starting the process to its exit, or to its first batch.

    .venv/bin/python benchmarks/bench_startup.py [--runs N] [--python PATH ...] [--rows N] [--env-bytecode]
                                                 [--json PATH]

Commands, each a new process started by subprocess from this one, as a user's shell would:

  baseline             `python -c pass`: the interpreter and site (the venv's path hooks included), nothing of
                       backfilld; every other row is also shown as a ratio to it
  --version            `backfilld --version`
  status               `backfilld status CONFIG` on a SQLite database whose job has completed
  run (completed)      `backfilld run CONFIG` of that completed job: opens the database, starts the throttle and
                       the HTTP endpoints (on a free port), finds the job completed, exits 0
  run (completed,      the same with `[metrics] listen = ""`: without what the HTTP endpoints (aiohttp) add
  no endpoints)
  run to first batch   `backfilld run CONFIG` of a job that has not started (endpoints on), on a fresh copy of the
                       database: from just before the process is started to the timestamp of its first
                       `batch_applied` log event (logging.level = "debug"): the first batch committed with its
                       checkpoint
  run to first batch,  the same with `[metrics] listen = ""`
  no endpoints

`backfilld` is the console script beside the interpreter (`python -m backfilld` where there is none), so
the measured path is the one a user's shell takes. Runs are interleaved (one of each command, N times over),
after one untimed warm-up round; each row reports the median and the fastest of its N runs. The figures are
wall time on this machine with whatever else it runs: the ratios to the baseline, measured in the same rounds,
are the ones to compare between machines.

Bytecode: the commands run with their .pyc files in a temporary PYTHONPYCACHEPREFIX, written in the warm-up
round, as after `pip install .`. An editable install has none for backfilld's own modules, and where
PYTHONDONTWRITEBYTECODE is set (as on the machine these figures were first taken on) every start compiles
them again, about 0.05 s more; --env-bytecode keeps the environment's settings to measure that.

--python runs the commands with another interpreter (another checkout's venv); given more than once, every
command runs with each in turn in the same rounds, so a before/after comparison sees the same machine load.
The databases and configs are made by this process either way, one set for each interpreter.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Rows in the benchmark table: enough for several batches (batch_size 1000), few enough that the first batch
# measures start-up, not work.
ROWS = 10_000
# Timed rounds; each round runs every command once. 20 keep the medians within a few ms on an idle machine.
RUNS = 20


def make_db(path: Path, rows: int) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, email_domain TEXT)")
    con.executemany("INSERT INTO users (id, email) VALUES (?, ?)",
                    ((i, f"user{i}@example{i % 97}.com") for i in range(1, rows + 1)))
    con.commit()
    con.close()


def write_config(path: Path, db: Path, *, listen: str = "127.0.0.1:0", level: str = "info") -> Path:
    path.write_text(f"""
[database]
url = "sqlite:///{db}"

[logging]
level = "{level}"
format = "json"

[metrics]
listen = "{listen}"

[[jobs]]
name = "users_email_domain"
table = "users"
[jobs.set]
email_domain = "lower(substr(email, instr(email, '@') + 1))"
""", encoding="utf-8")
    return path


def backfilld_cmd(python: str) -> list[str]:
    script = Path(python).parent / "backfilld"
    return [str(script)] if script.exists() else [python, "-m", "backfilld"]


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    run(cmd, env)
    return time.perf_counter() - t0


def first_batch_s(cmd: list[str], env: dict[str, str], template: Path, db: Path) -> float:
    """Seconds from just before the process starts to its first batch_applied event's timestamp."""
    shutil.copyfile(template, db)
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    t0 = time.time()
    proc = run(cmd, env)
    for line in proc.stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "batch_applied":
            return dt.datetime.fromisoformat(event["timestamp"]).timestamp() - t0
    raise SystemExit(f"{' '.join(cmd)} logged no batch_applied event:\n{proc.stderr}")


def commands_for(python: str, d: Path, template: Path, env: dict[str, str]) -> dict[str, Callable[[], float]]:
    """The timed commands of one interpreter, on databases and configs of its own under d."""
    d.mkdir()
    bf = backfilld_cmd(python)
    done_db = d / "done.db"
    shutil.copyfile(template, done_db)
    done = write_config(d / "done.toml", done_db)
    done_quiet = write_config(d / "done-quiet.toml", done_db, listen="")
    fresh_db = d / "fresh.db"
    fresh = write_config(d / "fresh.toml", fresh_db, level="debug")
    fresh_quiet = write_config(d / "fresh-quiet.toml", fresh_db, listen="", level="debug")
    run([*bf, "run", str(done)], env)
    return {
        BASELINE: lambda: timed([python, "-c", "pass"], env),
        "backfilld --version": lambda: timed([*bf, "--version"], env),
        "backfilld status": lambda: timed([*bf, "status", str(done)], env),
        "backfilld run (completed job)": lambda: timed([*bf, "run", str(done)], env),
        "backfilld run (completed, no endpoints)": lambda: timed([*bf, "run", str(done_quiet)], env),
        "backfilld run to first batch": lambda: first_batch_s([*bf, "run", str(fresh)], env, template, fresh_db),
        "backfilld run to first batch, no endpoints": lambda: first_batch_s([*bf, "run", str(fresh_quiet)], env,
                                                                            template, fresh_db),
    }


BASELINE = "baseline (python -c pass)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=RUNS, help=f"timed rounds (default {RUNS})")
    ap.add_argument("--python", action="append",
                    help="interpreter whose backfilld to measure (default: this one); repeat it to compare "
                         "checkouts in the same rounds")
    ap.add_argument("--rows", type=int, default=ROWS, help=f"rows in the SQLite table (default {ROWS})")
    ap.add_argument("--env-bytecode", action="store_true",
                    help="keep the environment's PYTHONDONTWRITEBYTECODE / PYTHONPYCACHEPREFIX")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    pythons: list[str] = args.python or [sys.executable]

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        d = Path(tmp)
        env = dict(os.environ)
        if not args.env_bytecode:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(d / "pycache")
        template = d / "template.db"
        make_db(template, args.rows)
        commands = {py: commands_for(py, d / f"python{i}", template, env) for i, py in enumerate(pythons)}
        for measures in commands.values():  # warm-up: bytecode caches, the page cache
            for measure in measures.values():
                measure()
        samples = {py: {name: [] for name in measures} for py, measures in commands.items()}
        for _ in range(args.runs):
            for name in commands[pythons[0]]:
                for py in pythons:
                    samples[py][name].append(commands[py][name]())

    cache = "the environment's bytecode settings" if args.env_bytecode else "bytecode cached"
    report = []
    for py in pythons:
        base = statistics.median(samples[py][BASELINE])
        print(f"{args.runs} runs each, interleaved, {cache}; {' '.join(backfilld_cmd(py))}")
        print(f"{'command':<42} {'median s':>9} {'x baseline':>11} {'fastest s':>10}")
        rows = []
        for name, values in samples[py].items():
            med = statistics.median(values)
            rows.append({"command": name, "median_s": round(med, 4), "ratio": round(med / base, 2),
                         "fastest_s": round(min(values), 4)})
            print(f"{name:<42} {med:>9.3f} {med / base:>11.2f} {min(values):>10.3f}")
        print()
        report.append({"python": py, "rows": rows})
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "bytecode_cached": not args.env_bytecode,
                                         "pythons": report}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
