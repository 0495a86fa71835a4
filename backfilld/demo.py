"""The embedded demo: a SQLite users table, a real backfill job over it, and an independent check of every row."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from backfilld import config as config_mod
from backfilld import daemon
from backfilld.config import JobConfig
from backfilld.engines.base import JobState
from backfilld.job import BatchResult

_FIRST = ["Ada", "Grace", "Linus", "Zoë", "José", "Søren", "Ивана", "李", "محمد", "Ngọc", "Ólafur", "Chloé"]
_DOMAINS = ["Example.COM", "wiki.example.org", "mail.test", "Posteo.DE", "uni-wien.ac.at", "example.net"]

EXPRESSION = "lower(substr(email, instr(email, '@') + 1))"


def make_database(path: Path, rows: int, seed: int = 7) -> dict[int, str]:
    """Create the users table; return the ids that "new code" already filled, with the value it wrote."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    rnd = random.Random(seed)
    prefilled: dict[int, str] = {}
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, "
                "created_at TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, email_domain TEXT)")

    def gen():  # noqa: ANN202
        for i in range(1, rows + 1):
            name = f"{rnd.choice(_FIRST)} {i}"
            email = f"user{i}.{rnd.choice(_FIRST).lower()}@{rnd.choice(_DOMAINS)}"
            domain = None
            if rnd.random() < 0.01:  # the new release already wrote these: they must be left alone
                domain = f"set-by-new-code-{i}"
                prefilled[i] = domain
            yield (i, name, email, f"2024-01-{1 + i % 28:02d}", 1 if rnd.random() < 0.02 else 0, domain)

    con.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?)", gen())
    con.commit()
    con.close()
    return prefilled


def check(path: Path, prefilled: dict[int, str]) -> tuple[int, int]:
    """Count wrong rows, computing each expected value in Python, apart from the SQL the job ran."""
    con = sqlite3.connect(path)
    wrong = checked = 0
    for i, email, deleted, domain in con.execute("SELECT id, email, deleted, email_domain FROM users"):
        checked += 1
        if i in prefilled:
            expected = prefilled[i]
        elif deleted:
            expected = None
        else:
            expected = email.split("@", 1)[1].lower()
        wrong += domain != expected
    con.close()
    return checked, wrong


async def run_demo(db: Path, rows: int) -> bool:
    console = Console(stderr=False)
    console.print(f"[bold]backfilld demo[/]: creating {db} with {rows:,} users ...")
    prefilled = make_database(db, rows)
    cfg_path = db.with_suffix(".toml")
    cfg_path.write_text(
        f'# written by backfilld demo\n[database]\nurl = "sqlite:///{db}"\n\n'
        '[logging]\nlevel = "warning"\n\n[metrics]\nlisten = ""\n\n'
        f'[[jobs]]\nname = "users_email_domain"\ntable = "users"\nwhere = "deleted = 0"\nbatch_size = 1000\n'
        f'[jobs.set]\nemail_domain = "{EXPRESSION}"\n', encoding="utf-8")
    cfg = config_mod.load(cfg_path)
    console.print(f"job users_email_domain: set email_domain = {EXPRESSION} where deleted = 0, "
                  f"only where still NULL ({len(prefilled):,} rows already written by 'new code')")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]:>8} rows/s  batch {task.fields[size]:>5}"),
                        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console)
    task = progress.add_task("pass 1 (fill)", total=rows, rate="-", size="-")
    started = time.monotonic()
    written = 0
    current_pass = 1

    def on_start(job: JobConfig, state: JobState, estimate: int) -> None:
        progress.update(task, total=estimate)

    def on_batch(job: JobConfig, r: BatchResult) -> None:
        nonlocal written, current_pass
        written += r.rows
        if r.pass_no != current_pass:
            current_pass = r.pass_no
            progress.reset(task, description=f"pass {r.pass_no} (sweep)")
        rate = int(written / max(1e-9, time.monotonic() - started))
        progress.update(task, advance=r.scanned, rate=f"{rate:,}", size=str(r.size))

    with progress:
        states = await daemon.run(cfg, daemon.RunOptions(), on_batch=on_batch, on_start=on_start)
    took = time.monotonic() - started
    state = states[0]
    checked, wrong = check(db, prefilled)
    passes = state.pass_no - 1
    console.print(f"\n[bold]summary[/]: status {state.status}, {state.rows_done:,} rows written in {took:.2f} s "
                  f"({state.rows_done / took:,.0f} rows/s), {passes} pass{'' if passes == 1 else 'es'}")
    ok = wrong == 0 and state.status == "completed"
    console.print(f"check: {checked:,} rows compared with values computed in Python: {wrong} wrong, "
                  f"{len(prefilled):,} values written by 'new code' kept -> "
                  + ("[green]every row is right[/]" if ok else "[red]MISMATCH[/]"))
    console.print(f"\nThe job's checkpoint lives in the database: backfilld status {cfg_path}")
    return ok
