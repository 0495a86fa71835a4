"""What each command does around its work, parsed by typer (cli.py) or not (__main__.py): load the config (exit 2
on bad input), run the command's coroutine (the exit code by its error), say an error; and `status`, which the
console script runs without typer, since typer's parsing alone imports pydantic (issue 14).

Exit codes: 0 done (or stopped by a signal with the checkpoint kept), 1 a job failed or a check found
problems, 2 bad input (config, arguments, schema, changed spec): nothing was written.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from backfilld.errors import BackfilldError, ConfigError, SchemaError, SpecChangedError

if TYPE_CHECKING:
    from backfilld import config as config_mod


# the ANSI colour and cursor codes click strips from what it writes to anything but a terminal
_ANSI = re.compile(r"\033\[[;?0-9]*[a-zA-Z]")


def echo(text: str, *, err: bool = False) -> None:
    """A line to stdout (stderr) as typer's echo writes it: colour codes stripped unless it is a terminal (an error
    read back from a state row may hold them), and UTF-8 where the stream's encoding cannot take the text."""
    stream = sys.stderr if err else sys.stdout
    if not stream.isatty():
        text = _ANSI.sub("", text)
    line = text + "\n"
    try:
        stream.write(line)
    except UnicodeEncodeError:   # an ASCII locale; a text stream encodes the whole line before writing any of it
        stream.flush()
        stream.buffer.write(line.encode("utf-8", "replace"))
    stream.flush()


def fail(exc: BaseException, code: int) -> NoReturn:
    echo(f"backfilld: error: {exc}", err=True)
    raise SystemExit(code)


def exit_code(exc: BackfilldError) -> int:
    if isinstance(exc, (ConfigError, SchemaError, SpecChangedError)):
        return 2
    return 1


def load(path: Path, jobs_files: list[Path] | None = None) -> config_mod.Config:
    from backfilld import config as config_mod
    from backfilld import logs

    try:
        cfg = config_mod.load(path, jobs_files or ())
    except ConfigError as exc:
        fail(exc, 2)
    logs.setup(cfg.logging.level, cfg.logging.format)
    for pattern, named_by in cfg.unmatched_globs:   # an extensions folder where none ships a backfill (yet)
        logs.get_logger("backfilld.config").warning("jobs_files_unmatched", pattern=pattern, named_by=named_by,
                                                    detail="the glob matches no file; no jobs from it")
    return cfg


def run_async(coro: Any) -> Any:
    import asyncio

    try:
        return asyncio.run(coro)
    except BackfilldError as exc:
        fail(exc, exit_code(exc))


def one_line(text: str, limit: int = 300) -> str:
    """An error as one short line (the state row keeps it whole: `status --json`)."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def status(config: Path, jobs: list[Path] | None = None, as_json: bool = False, shard: str | None = None,
           out: Callable[[str], None] = echo) -> None:
    """`backfilld status`: each job's checkpoint and status from the state table, in the order `run` runs them;
    farm mode: each database's, and the farm's counts."""
    import json

    from backfilld import daemon

    cfg = load(config, jobs)
    if cfg.farm is not None:
        from backfilld import farm

        try:
            chosen = farm.parse_shard(shard)
        except ConfigError as exc:
            fail(exc, 2)
        report = run_async(farm.status(cfg, chosen))
        if as_json:
            out(json.dumps(report, indent=2, default=str))
            return
        for d in report["databases"]:
            jobs_text = "  ".join(f"{j['job']}={j['status']}" for j in d["jobs"])
            error = d.get("error") or "; ".join(f"{j['job']}: {one_line(j['error'])}" for j in d["jobs"]
                                                 if j["status"] == "failed" and j.get("error"))
            out(f"{d['database']}: {d['state']}  rows_done={d.get('rows_done', 0)}  {jobs_text}"
                + (f"  error={error}" if error else ""))
        c = report["counts"]
        eta = report["eta_s"]
        out(f"farm: {len(report['databases'])} databases: {c['done']} done, {c['running']} running, "
            f"{c['failed']} failed, {c['pending']} pending, {c['unreadable']} unreadable; "
            f"rows_done={report['rows_done']}; eta_s={'unknown' if eta is None else eta}")
        return
    rows = run_async(daemon.status(cfg))
    if as_json:
        out(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        parts = [f"{r['job']}: {r['status']}"]
        for k in ("pass_no", "rows_done", "pass_scanned", "last_key", "updated_at", "finished_at", "verified_at",
                  "error", "requests_rejected", "after", "package"):
            if k in r:
                parts.append(f"{k}={','.join(r[k]) if k == 'after' else r[k]}")
        out("  ".join(parts))


def plain_status(argv: list[str]) -> tuple[Path, list[Path] | None, bool, str | None] | None:
    """The arguments of `status` when argv is a plain status line: `status CONFIG` with any of --json,
    --jobs PATH (repeatable) and --shard I/N, in any order, each as cli.py's `status` declares it. None for
    anything else (--help, an unknown option, a missing value, `--`, a second CONFIG): typer parses that one,
    and says what is wrong."""
    if not argv or argv[0] != "status":
        return None
    config: str | None = None
    jobs: list[Path] = []
    as_json, shard = False, None
    rest = argv[1:]
    while rest:
        arg = rest.pop(0)
        name, eq, value = arg.partition("=")
        if arg == "--json":
            as_json = True
        elif name in ("--jobs", "--shard"):
            if not eq:
                if not rest or rest[0].startswith("-"):
                    return None
                value = rest.pop(0)
            if not value:
                return None
            if name == "--jobs":
                jobs.append(Path(value))
            else:
                shard = value
        elif arg.startswith("-") or not arg or config is not None:
            return None
        else:
            config = arg
    if config is None:
        return None
    return Path(config), jobs or None, as_json, shard
