"""Command line: the typer app, its commands and their options. Parse, build config, call in; no logic lives
here. What every command does around its work (load the config, run it, exit codes) is cmdline.py's; the
console script (__main__.py) answers `--version` and a plain `status` line before typer is imported.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backfilld import __version__, cmdline
from backfilld import settings as live_settings
from backfilld.cmdline import fail as _fail
from backfilld.cmdline import load as _load
from backfilld.cmdline import run_async as _run_async
from backfilld.errors import BackfilldError, ConfigError

# Each command imports what it needs when it runs: config, logs (structlog), asyncio, the daemon and the engine's
# driver together cost several times the interpreter's start.
if TYPE_CHECKING:
    from backfilld import config as config_mod

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Replication-aware online backfills for PostgreSQL, MySQL/MariaDB and SQLite.\n\n"
                       "Fills new columns of a live table in small keyset batches, each its own short "
                       "transaction, with a checkpoint that makes any crash resumable.")

ConfigArg = Annotated[Path, typer.Argument(help="TOML config file (see config/example.toml); the jobs files its "
                                                "jobs_files names are read with it.", show_default=False)]
JobOpt = Annotated[list[str] | None, typer.Option("--job", "-j", help="Only this job (repeatable).")]
ShardOpt = Annotated[str | None, typer.Option(
    "--shard", help="Farm mode: take shard I of N (I/N, 0 <= I < N) of the farm's databases, a stable share by "
                    "name, so that N processes cover each exactly once; default: JOB_COMPLETION_INDEX (a Kubernetes "
                    "Indexed Job) with BACKFILLD_SHARDS, else every database.", show_default=False)]
DatabaseOpt = Annotated[str | None, typer.Option(
    "--database", help="Farm mode: only this database of the farm (as `status` names it); default: all.",
    show_default=False)]
JobsOpt = Annotated[list[Path] | None, typer.Option(
    "--jobs", help="A jobs file (jobs and a package header only, as a package or extension ships them): its jobs "
                   "run besides the config's own and its jobs_files' (repeatable; relative to the working "
                   "directory; see config/example-jobs.toml).", show_default=False)]


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        typer.echo(f"backfilld {__version__}")
        raise typer.Exit(0)


@app.command()
def run(config: ConfigArg, job: JobOpt = None, jobs: JobsOpt = None,
        restart: Annotated[bool, typer.Option(help="Start the jobs over, discarding their checkpoints.")] = False,
        follow: Annotated[bool, typer.Option(help="After completing, keep sweeping for rows old code left "
                                                  "unfilled, until stopped.")] = False,
        shard: ShardOpt = None) -> None:
    """Run every job (or those named) to completion, one after another. SIGTERM/SIGINT stop after the batches in
    flight.

    Jobs run in the order they are defined (the config's own, then each jobs file's), except that a job with
    `after = [...]` starts only once those jobs completed (in this run or an earlier one); one whose dependency
    failed or did not complete does not start, and the run exits 1.
    """
    import asyncio

    from backfilld import daemon

    cfg = _load(config, jobs)
    opts = daemon.RunOptions(jobs=job, restart=restart, follow=follow, config_path=str(config))
    if cfg.farm is not None:
        _run_async(_farm_run(cfg, opts, shard))
        return
    if shard is not None:
        _fail(ConfigError("--shard splits a farm's databases: the config has no [farm] section"), 2)

    async def main() -> None:
        stop = asyncio.Event()
        with daemon.SignalStop(stop):
            await daemon.run(cfg, opts, stop=stop)

    _run_async(main())


async def _farm_run(cfg: Any, opts: Any, shard: str | None) -> None:
    import asyncio

    from backfilld import daemon, farm
    from backfilld.errors import JobFailed

    opts.config_path = None   # SIGHUP re-reads one database's [throttle]; a farm's hosts keep theirs
    stop = asyncio.Event()
    with daemon.SignalStop(stop):
        summary = await farm.run_with_endpoints(cfg, opts, shard=farm.parse_shard(shard), stop=stop)
    if summary.failed:
        names = ", ".join(o.member for o in summary.failed[:10]) + (" ..." if len(summary.failed) > 10 else "")
        raise JobFailed(f"{len(summary.failed)} of {len(summary.outcomes)} databases failed: {names} (each one's "
                        "error: farm_database_failed in the log, and its state row)")


@app.command()
def plan(config: ConfigArg, job: JobOpt = None, jobs: JobsOpt = None,
         as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Check every job against the live database and explain what it would do, in the order `run` runs them.
    Writes nothing.

    Per job: its statements and their EXPLAIN; the privileges it needs, with the GRANT for each one it lacks;

    whether an index serves the sweep's check for rows left, verify and the where (else one to create, its cost);

    the replication log (WAL, binlog) the run would write. Sizes and times are estimates.
    """
    import json

    from backfilld import assess, daemon

    cfg = _load(config, jobs)
    plans = _run_async(daemon.plan(cfg, job))
    if as_json:
        typer.echo(json.dumps(plans, indent=2, default=str))
        return
    for p in plans:
        typer.echo(f"job {p['job']}: {p['engine']} table {p['table']} key {p['key']}"
                   + (f" where {p['where']}" if p["where"] else ""))
        origin = p["defined_in"]
        if origin["jobs_file"]:
            shipped = " ".join(v for v in (origin["package"], origin["version"]) if v)
            typer.echo(f"  defined in {origin['file']}" + (f" (shipped by {shipped})" if shipped else ""))
        if len(plans) > 1 or p["after"]:
            typer.echo(f"  runs {p['order']} of {len(plans)}"
                       + (f", once {', '.join(p['after'])} completed (in this run or an earlier one)"
                          if p["after"] else ""))
        for target, expr in p["targets"].items():
            typer.echo(f"  set {target} = {expr}" + ("" if p["overwrite"] else "   (only where still NULL)"))
        typer.echo(f"  rows (estimate): {p['estimated_rows']}  starting batch size: {p['batch_size']}  "
                   f"batches expected: {p['batches_expected']}  batches in flight: {p['workers']}")
        typer.echo("  per batch, range lookup (the batch's last key):\n    " + p["sql"]["lookup"])
        typer.echo("  at the end of the table (fewer keys left than a batch):\n    " + p["sql"]["lookup_tail"])
        typer.echo(f"  row locks: {p['locking']}")
        if "no_wait" in p["sql"]:
            typer.echo("  per batch, first the range update that never waits for a lock (it gives up at once on "
                       "a row another session holds; then, and for a few seconds after on that connection, the locking "
                       "read and the update by key below):\n    "
                       + p["sql"]["no_wait"])
        if "lock" in p["sql"]:
            first = "if it gave up, the locking read" if "no_wait" in p["sql"] else "per batch, first the locking read"
            typer.echo(f"  {first} of the range's keys (rows the application holds are passed over):\n    "
                       + p["sql"]["lock"])
        if "lookup_missing" in p["sql"]:
            typer.echo("  per batch, first the match values of its rows that have no lookup row yet (a plain read):"
                       "\n    " + p["sql"]["lookup_missing"])
            typer.echo("  then the lookup rows created, in that order (shown for two):\n    "
                       + p["sql"]["lookup_insert"])
        if "update_once" in p["sql"]:
            typer.echo("  per batch, update computing the expression once a row (one transaction with the "
                       "checkpoint):\n    " + p["sql"]["update_once"])
            typer.echo("  from the first batch with a row whose expression is NULL on, the guarded update:\n    "
                       + p["sql"]["update"])
        else:
            typer.echo("  per batch, update (one transaction with the checkpoint):\n    " + p["sql"]["update"])
        for label, lines in p["explain"].items():
            typer.echo(f"  EXPLAIN {label}:")
            for line in lines:
                typer.echo(f"    {line}")
        typer.echo("\n".join(assess.describe(p)))
        for w in p["warnings"]:
            typer.echo(f"  WARNING: {w}")
        trig = p["triggers"]
        if trig["supported"]:
            state = "installed" if trig["installed"] else "not installed (optional)"
            typer.echo(f"  sync triggers: {state}; `backfilld triggers install` would run:")
            for stmt in trig["install_sql"]:
                typer.echo("    " + stmt.replace("\n", "\n    ") + ";")
        else:
            typer.echo("  sync triggers: not available for Python transforms")
        typer.echo("")


@app.command()
def status(config: ConfigArg, jobs: JobsOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
           shard: ShardOpt = None) -> None:
    """Show each job's checkpoint and status from the state table, in the order `run` runs them. Farm mode: each
    database's, and the farm's databases done, running, failed and pending."""
    cmdline.status(config, jobs, as_json, shard, out=typer.echo)


JobArg = Annotated[str, typer.Argument(help="Job name, as in the config or a jobs file.", show_default=False)]


@app.command()
def verify(config: ConfigArg, job: JobOpt = None, jobs: JobsOpt = None,
           fix: Annotated[bool, typer.Option("--fix", help="Rewrite wrong and missing rows, with the same "
                                                            "guards as a batch.")] = False,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
           shard: ShardOpt = None, database: DatabaseOpt = None) -> None:
    """Check every row of each job against its expression or transform; exit 1 unless none is missing or wrong.

    The result and its time go into the state table (see `wait --until verified`). Farm mode: in every database of
    the farm (or the shard, or --database), one after another.
    """
    import asyncio
    import json

    from backfilld import daemon
    from backfilld.verify import describe

    cfg = _load(config, jobs)
    _farm_only(cfg, shard, database)

    async def main() -> list[Any]:
        stop = asyncio.Event()
        with daemon.SignalStop(stop):
            if cfg.farm is None:
                return await daemon.verify(cfg, job, fix=fix, stop=stop)
            from backfilld import farm

            out: list[Any] = []
            for m in farm.chosen(cfg, farm.parse_shard(shard), database):
                if stop.is_set():
                    break
                try:
                    found = await daemon.verify(m.config, job, fix=fix, stop=stop)
                except BackfilldError as exc:   # one database's problem: said, counted, and the others go on
                    failed.append(f"{m.name}: {exc}")
                    continue
                for r in found:
                    r.job = f"{m.name}: {r.job}"   # which database each result is of
                    out.append(r)
            return out

    failed: list[str] = []
    results = _run_async(main())
    for line in failed:
        typer.echo(f"backfilld: error: {line}", err=True)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in results], indent=2, default=str, ensure_ascii=False))
    else:
        for r in results:
            for line in describe(r, fix):
                typer.echo(line)
    raise typer.Exit(0 if all(r.clean for r in results) and not failed else 1)


@app.command()
def rehearse(config: ConfigArg, job: JobOpt = None, jobs: JobsOpt = None,
             sample: Annotated[int, typer.Option(help="Rows to try each job on, spread over the whole key range "
                                                      "(1 to 1,000,000).")] = 10_000,
             against: Annotated[list[str] | None, typer.Option(
                 "--against", help="Also compute each expression's form for another engine on a copy of the sample "
                                   "there, and compare every row: a database URL without a password, or `sqlite` "
                                   "for an in-memory SQLite database (repeatable).", show_default=False)] = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON (its shape: README, Rehearse).")]
             = False) -> None:
    """Try every job (or those named, in the order `run` runs them) on a sample of its table, writing nothing to
    it: values that come out NULL, that do not fit the target column, and that raise; with --against, rows where
    another engine computes otherwise; the time per 1,000 rows of the job's batch (run and rolled back) and the
    run's estimate.

    Exit 0 when there is nothing to report, 1 when something is (or the rehearsal was stopped), 2 on bad input.
    """
    import asyncio
    import json

    from backfilld import daemon
    from backfilld import rehearse as rehearse_mod

    try:
        urls = tuple(rehearse_mod.against_url(u) for u in against or ())
    except ConfigError as exc:
        _fail(exc, 2)
    cfg = _load(config, jobs)

    async def main() -> Any:
        stop = asyncio.Event()
        with daemon.SignalStop(stop):
            return await rehearse_mod.rehearse(cfg, job, rehearse_mod.Options(sample=sample, against=urls), stop)

    report = _run_async(main())
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, ensure_ascii=False, default=str))
    else:
        for line in rehearse_mod.describe(report):
            typer.echo(line)
    raise typer.Exit(0 if report.problems == 0 else 1)


@app.command()
def wait(config: ConfigArg, job: JobArg, jobs: JobsOpt = None,
         until: Annotated[str, typer.Option(help="completed, or verified (a clean verify after completing).")]
         = "completed",
         timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds (exit 1).")] = None
         ) -> None:
    """Block until JOB is completed or verified: for deploy pipelines. Exit 1 on failure or timeout."""
    from backfilld import daemon

    if until not in ("completed", "verified"):
        _fail(ConfigError(f"--until {until!r}: use completed or verified"), 2)
    cfg = _load(config, jobs)
    state = _run_async(daemon.wait_for(cfg, job, until, timeout))
    typer.echo(f"{job}: {until} (finished_at={state.finished_at}, verified_at={state.verified_at})")


@app.command()
def pause(config: ConfigArg, job: JobArg, jobs: JobsOpt = None, database: DatabaseOpt = None) -> None:
    """Ask running daemons to pause JOB before its next batch (kept in the state table, survives restarts)."""
    cfg = _load(config, jobs)
    _run_async(_request(cfg, job, database, paused=True))
    typer.echo(f"{job}: pause requested; a running daemon pauses before its next batch")


@app.command()
def resume(config: ConfigArg, job: JobArg, jobs: JobsOpt = None, database: DatabaseOpt = None) -> None:
    """Lift an operator pause of JOB."""
    cfg = _load(config, jobs)
    _run_async(_request(cfg, job, database, paused=False))
    typer.echo(f"{job}: resume requested")


@app.command("set")
def set_(config: ConfigArg, job: JobArg,
         settings: Annotated[list[str], typer.Argument(help=f"key=value: {', '.join(live_settings.LIVE)}.",
                                                       show_default=False)],
         jobs: JobsOpt = None, database: DatabaseOpt = None) -> None:
    """Change JOB's tuning while it runs; kept in the state table until set again (survives restarts)."""
    cfg = _load(config, jobs)
    try:
        values = live_settings.parse(settings)
    except ValueError as exc:
        _fail(exc, 2)
    _run_async(_request(cfg, job, database, settings=values))
    typer.echo(f"{job}: " + ", ".join(f"{k}={v}" for k, v in values.items()) + " requested")


async def _request(cfg: Any, job: str, database: str | None, **request: Any) -> None:
    """An operator request to the job's state row: in the config's database, or in farm mode in the one named
    (--database) or in every database of the farm."""
    from backfilld import control

    if cfg.farm is None:
        if database is not None:
            raise ConfigError("--database names a database of a farm: the config has no [farm] section")
        await control.request(cfg, job, **request)
        return
    from backfilld import farm

    targets = [farm.select(cfg, database)] if database is not None else farm.members(cfg)
    for m in targets:
        await control.request(m.config, job, **request)


triggers_app = typer.Typer(help="Sync triggers that keep a job's targets right while old code writes.",
                           no_args_is_help=True)
app.add_typer(triggers_app, name="triggers")


@triggers_app.command("install")
def triggers_install(config: ConfigArg, job: JobArg, jobs: JobsOpt = None, shard: ShardOpt = None,
                     database: DatabaseOpt = None) -> None:
    """Create (or replace) JOB's insert and update triggers. SQL-expression and lookup jobs, not Python transforms.

    Farm mode: in every database of the farm (or the shard, or --database); exit 1 if any failed."""
    _triggers(config, job, jobs, shard, database, "install")


@triggers_app.command("remove")
def triggers_remove(config: ConfigArg, job: JobArg, jobs: JobsOpt = None, shard: ShardOpt = None,
                    database: DatabaseOpt = None) -> None:
    """Drop JOB's sync triggers. Farm mode: in every database of the farm (or the shard, or --database)."""
    _triggers(config, job, jobs, shard, database, "remove")


def _triggers(config: Path, job: str, jobs: list[Path] | None, shard: str | None, database: str | None,
              action: str) -> None:
    from backfilld import daemon

    def done(stmts: list[str]) -> str:
        if action == "remove":
            return f"{job}: sync triggers removed"
        return f"{job}: sync triggers installed ({len(stmts)} statements); remove them after the reads switch"

    cfg = _load(config, jobs)
    _farm_only(cfg, shard, database)
    if cfg.farm is None:
        typer.echo(done(_run_async(daemon.triggers(cfg, job, action))))
        return
    from backfilld import farm

    try:   # the config's own problems (an unknown job or database, a bad --shard) once, not once per database
        daemon.trigger_job(cfg, job)
        chosen = farm.chosen(cfg, farm.parse_shard(shard), database)
    except ConfigError as exc:
        _fail(exc, 2)

    async def main() -> int:
        failed = 0
        for m in chosen:   # one database's problem is said and counted, and the others go on
            try:
                typer.echo(f"{m.name}: {done(await daemon.triggers(m.config, job, action))}")
            except BackfilldError as exc:
                typer.echo(f"backfilld: error: {m.name}: {exc}", err=True)
                failed += 1
        return failed

    failed = _run_async(main())
    if failed:
        typer.echo(f"backfilld: error: {failed} of {len(chosen)} databases failed", err=True)
    raise typer.Exit(1 if failed else 0)


def _farm_only(cfg: config_mod.Config, shard: str | None, database: str | None) -> None:
    if cfg.farm is None and (shard is not None or database is not None):
        _fail(ConfigError("--shard and --database pick databases of a farm: the config has no [farm] section"), 2)


@app.command()
def demo(db: Annotated[Path, typer.Option(help="SQLite file to create (replaced if it exists).")] =
         Path("backfilld-demo.sqlite"),
         rows: Annotated[int, typer.Option(min=1000, max=50_000_000, help="Rows in the demo table.")] = 200_000,
         ) -> None:
    """Create a SQLite database with a realistic table, backfill it with a progress bar, and check every row."""
    from backfilld import demo as demo_mod
    from backfilld import logs

    logs.setup("warning", "console" if sys.stderr.isatty() else "json")
    ok = _run_async(demo_mod.run_demo(db, rows))
    raise typer.Exit(0 if ok else 1)


def main() -> None:
    """Every line parsed by typer: what the console script (__main__.py) hands on, `python -m backfilld.cli`, and
    entry points installed before __main__.py answered the console script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
