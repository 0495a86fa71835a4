"""plan's assessment of a job beyond its statements: the privileges it needs and which the user lacks, the
indexes its sweep, verify and filter would use, and the replication log its run would write. Read-only.

Owns: what the job reads and writes as grants.JobAccess, the three sections of a job's plan ("privileges",
"indexes", "replication") with the warnings they raise, and their human rendering (describe). Delegates the
list of needs to engines/grants.py, every catalog query, EXPLAIN and server setting to the engine
(Engine.privileges, index_serves, pending_index, table_size, log_volume), and the statements to
engines/statements.py. Every number it prints is an estimate and is labelled one; a catalog it cannot read
is "could not check: <reason>", never an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from backfilld.config import Config, JobConfig
from backfilld.engines import grants, protocols
from backfilld.engines.assessment import (
    SCAN_BYTES_PER_S,
    Privileges,
    TableSize,
    Writes,
    approx_width,
    index_name,
    least_width,
)
from backfilld.engines.base import Engine, Stmt
from backfilld.engines.sqltext import referenced_columns
from backfilld.engines.statements import build_filter_probe, build_read, build_verify_read
from backfilld.errors import BackfilldError
from backfilld.preflight import Prepared


async def assess(engine: Engine, config: Config, job: JobConfig, p: Prepared, estimate: int,
                 values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The job's "privileges", "indexes" and "replication" sections, and their warnings. values: the bounds of
    the range plan EXPLAINs its batch statements with."""
    warnings: list[str] = []
    size = _at_least_columns(await engine.table_size(job.table, estimate), p)
    out = {"privileges": await _privileges(engine, config, job, p, warnings),
           "indexes": await _indexes(engine, job, p, estimate, size, values, warnings),
           "replication": await _replication(engine, config, job, p, estimate, size)}
    return out, warnings


def _at_least_columns(size: TableSize, p: Prepared) -> TableSize:
    """The catalog's row size, or the least its columns can take where the catalog's is below that: its
    statistics are stale (a table just filled, before InnoDB's or the planner's statistics caught up)."""
    floor = sum(least_width(c.type) for c in p.table.columns.values())
    if size.row_bytes is None or size.row_bytes >= floor:
        return size
    return TableSize(size.table_bytes, float(floor), f"the least its columns take ({size.source} says "
                     f"{size.row_bytes:.0f} B: stale statistics, which ANALYZE refreshes)", size.detail)


# ------------------------------------------------------------------------------------------ privileges


async def access(engine: Engine, config: Config, job: JobConfig, p: Prepared) -> grants.JobAccess:
    """What the job reads and writes, and what its run needs besides, for grants.needs."""
    d, cols = engine.dialect, p.table.columns
    used = {*p.key, *p.spec.sources, *p.spec.targets}
    for text in (*p.exprs.values(), *([job.where] if job.where else [])):
        used.update(referenced_columns(text, d, cols, job.table))
    caps = engine.capabilities
    t = config.throttle
    sessions = []
    if caps.app_sessions and t.app_probe:
        sessions.append("the application probe (app_probe) reads other sessions' state and lock waits")
    if caps.app_sessions and t.max_load > 0:
        sessions.append("max_load reads the primary's load")
    if caps.discovers_replicas and not config.replicas:
        sessions.append("standbys streaming from the primary are found with their replay positions")
    heartbeat = caps.discovers_replicas or (bool(config.replicas) and t.lag_probe == "heartbeat")
    hb_table = config.state.heartbeat_table
    skipped = engine.skipped_table(config.state.table) if p.transform is not None and job.on_error == "skip" else None
    lk = p.spec.lookup
    lookup: dict[str, Any] = {}
    if lk is not None:
        lookup = {"lookup_table": lk.table, "lookup_reads": tuple(dict.fromkeys((lk.id, *lk.match))),
                  "lookup_inserts": tuple(dict.fromkeys((*lk.match, *lk.values))),
                  "lookup_conflict_updates": (lk.id,) if d.conflict_updates_id else (),
                  "lookup_sequence": await engine.id_sequence(lk.table, lk.id)}
    return grants.JobAccess(
        table=job.table, reads=tuple(c for c in cols if c in used), writes=tuple(p.spec.targets),
        state_table=config.state.table, state_exists=await _exists(engine, config.state.table),
        skipped_table=skipped, skipped_exists=skipped is not None and await _exists(engine, skipped),
        triggers=p.transform is None, trigger_function_schema=p.transform is None and
        engine.dialect.triggers().creates_function,
        sessions="; ".join(sessions) or None,
        heartbeat_table=hb_table if heartbeat and caps.replicas else None,
        heartbeat_exists=heartbeat and await _exists(engine, hb_table),
        heartbeat_level=await _heartbeat_level(engine, config),
        replicas=tuple(r.label for r in config.replicas), replica_lag_native=t.lag_probe == "native", **lookup)


async def _heartbeat_level(engine: Engine, config: Config) -> grants.Level:
    """How much the heartbeat matters: required with [[replicas]] read through it; else (replicas found streaming
    from the primary) required while some stream, optional while none does, recommended when plan cannot tell."""
    if config.replicas:
        return "required"
    if not engine.capabilities.discovers_replicas:
        return "optional"
    try:
        streaming = await protocols.replication(engine).attached_replicas()
    except BackfilldError:
        return "recommended"
    return "required" if streaming else "optional"


async def _exists(engine: Engine, table: str) -> bool:
    try:
        return await engine.has_table(table)
    except BackfilldError:   # a catalog this user cannot read: as if absent (CREATE is then what it needs)
        return False


def what(need: grants.Need, columns: Sequence[str] = (), called: str = "") -> str:
    """A need in words: `UPDATE (label) on users`, `CREATE on the connection's schema`, `pg_read_all_stats`."""
    cols = f" ({', '.join(columns or need.columns)})" if (columns or need.columns) else ""
    privs = ", ".join(need.privileges)
    if need.on == "server":
        return (called or f"the server-wide privilege to read {privs}") + (
            " (on each replica)" if need.where == "replicas" else "")
    if need.on == "schema":
        name = need.name or called
        return f"{privs} on " + (f"schema {name}" if name else "the connection's schema")
    return f"{privs}{cols} on {need.name}" + (" (on each replica)" if need.where == "replicas" else "")


async def _privileges(engine: Engine, config: Config, job: JobConfig, p: Prepared,
                      warnings: list[str]) -> dict[str, Any]:
    try:
        needs = grants.needs(await access(engine, config, job, p))
        got: Privileges = await engine.privileges(needs)
    except BackfilldError as exc:
        return {"checked": False, "detail": f"could not check: {exc}", "needs": [], "lacking": []}
    for problem in got.problems:
        warnings.append(problem)
    if got.user is None:   # no users on this engine (SQLite): the file's permissions instead
        return {"checked": False, "user": None, "detail": got.detail, "access": got.access,
                "needs": [], "lacking": []}
    lacking = grants.lacking(got.held)
    for h in lacking:
        warnings.append(f"{got.user} lacks {what(h.need, h.missing_columns, h.called)} ({h.need.level}: {h.need.why}; "
                        f"without it {h.need.without}); grant it: {h.grant}")
    return {"checked": True, "user": got.user, **({"detail": got.detail} if got.detail else {}),
            "needs": [h.as_dict() for h in got.held], "lacking": [h.grant for h in lacking]}


# ------------------------------------------------------------------------------------------ indexes


def _widths(p: Prepared, columns: Sequence[str]) -> int:
    return sum(approx_width(p.table.columns[c].type) for c in columns if c in p.table.columns)


async def _serves(engine: Engine, table: str, stmt: Stmt, values: dict[str, Any]) -> tuple[bool | None, list[str]]:
    try:
        return await engine.index_serves(table, stmt, values)
    except BackfilldError as exc:
        return None, [f"(EXPLAIN failed: {exc})"]


async def _indexes(engine: Engine, job: JobConfig, p: Prepared, estimate: int, size: TableSize,
                   values: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    d = engine.dialect
    table_bytes = size.table_bytes
    out: dict[str, Any] = {}
    sweep = p.plan.any_pending
    if sweep is None:
        out["sweep"] = {"sql": None, "note": "a transform job's sweep walks the key range in batches (it reads "
                        "every row to tell whether one needs a value): no index spares it"}
    else:
        served, lines = await _serves(engine, job.table, sweep, {})
        entry: dict[str, Any] = {"sql": sweep.sql, "explain": lines, "served_by_index": served,
                                 "rows_estimate": estimate, "table_bytes_estimate": table_bytes}
        if served is False:
            suggestion = engine.pending_index(p.spec, index_name(job.name), _widths(p, p.key),
                                              _widths(p, p.spec.targets))
            entry["scans"] = ("no index serves it: it reads the table up to the first row it finds, all of it "
                              "when none is left, as on every sweep of a filled table")
            if suggestion is None:
                entry["suggestion"] = None
                entry["note"] = ("an overwrite job's check compares every row's targets with its expressions: no "
                                 "index serves it")
            else:
                entry["suggestion"] = {
                    "ddl": list(suggestion.ddl), "partial": suggestion.partial,
                    "space_bytes_estimate": estimate * suggestion.entry_bytes,
                    "space_basis": (f"rows x {suggestion.entry_bytes} B an entry: every row, if created before the "
                                    "fill; only the rows left NULL once it is done" if suggestion.partial else
                                    f"rows x {suggestion.entry_bytes} B an entry: every row"),
                    "build_s_estimate": None if table_bytes is None else round(table_bytes / SCAN_BYTES_PER_S, 1),
                    "build_basis": f"one read of the table at {SCAN_BYTES_PER_S / 1e6:.0f} MB/s (a guess)",
                    "note": suggestion.note}
        out["sweep"] = entry
    read = (build_verify_read(d, p.spec, after=True) if p.transform is None
            else build_read(d, p.spec, after=True))
    served, lines = await _serves(engine, job.table, read, values)
    out["verify"] = {"sql": read.sql, "explain": lines, "uses_key_range": served, "rows_estimate": estimate,
                     "note": "verify reads every row once, in key ranges of the batch size: it checks each row, "
                             "so no index spares the read; its ranges are read through the key's index"}
    if served is False:
        warnings.append(f"verify's range read would scan the whole table for every range instead of the key range; "
                        f"check that {list(p.key)} is indexed")
    if job.where:
        probe = build_filter_probe(d, p.spec)
        served, lines = await _serves(engine, job.table, probe, {})
        out["where"] = {"sql": probe.sql, "explain": lines, "served_by_index": served}
        if served is False:
            warnings.append(f"the job's where ({job.where}) cannot use an index (EXPLAIN of {probe.sql} reads the "
                            "whole table): each batch reads every row of its key range to test it, and a sweep's "
                            "check for rows left reads the whole table; fine when most rows match, slow when few "
                            "do (an index on the filter's columns would serve the check)")
    return out


# ------------------------------------------------------------------------------------------ replication


async def _replication(engine: Engine, config: Config, job: JobConfig, p: Prepared, estimate: int,
                       size: TableSize) -> dict[str, Any]:
    batches = -(-estimate // job.batch_size) if estimate else 0
    update = p.plan.update_after or p.plan.read_after
    writes = Writes(rows=estimate, key_bytes=_widths(p, p.key), target_bytes=_widths(p, p.spec.targets),
                    batches=batches, statement_bytes=len(update.sql) if update is not None else 0)
    try:
        vol = await engine.log_volume(size, writes)
    except BackfilldError as exc:
        return {"estimate": True, "detail": f"could not check: {exc}"}
    rate = config.throttle.max_rows_per_s
    pace: dict[str, Any]
    if rate > 0:
        took = estimate / rate
        pace = {"max_rows_per_s": rate, "time_s_estimate": round(took, 1),
                "log_bytes_per_s_estimate": int(vol.total_bytes / took) if vol.total_bytes and took else None}
    else:
        t = config.throttle
        limits = [f"replica lag (max_lag_s = {t.max_lag_s:g} s)"] if engine.capabilities.replicas else []
        if engine.capabilities.app_sessions and t.app_probe:
            limits.append("the application's activity")
        limits.append(f"the batch time (target_batch_time_s = {t.target_batch_time_s:g} s)")
        pace = {"max_rows_per_s": None,
                "bounded_by": f"no max_rows_per_s: the pace is bounded by {', '.join(limits)}, so it is known "
                              "only once the run goes"}
    return {"estimate": True, "rows": estimate,
            "rows_basis": "every row of the table" + ("; its where writes fewer" if job.where else ""),
            "table_bytes": size.table_bytes, "avg_row_bytes": None if size.row_bytes is None else round(size.row_bytes),
            "size_source": size.source, **({"size_detail": size.detail} if size.detail else {}),
            "log_bytes_estimate": vol.total_bytes,
            "log_bytes_per_row": None if vol.per_row_bytes is None else round(vol.per_row_bytes, 1),
            "how": vol.how, "settings": vol.settings, "notes": list(vol.notes), "pace": pace}


# ------------------------------------------------------------------------------------------ rendering


def human_bytes(n: float | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def describe(plan: dict[str, Any]) -> list[str]:
    """The three sections of one job's plan, for people (cli.py prints them after the statements)."""
    return [*_describe_privileges(plan["privileges"]), *_describe_indexes(plan["indexes"]),
            *_describe_replication(plan["replication"])]


def _describe_privileges(pr: dict[str, Any]) -> list[str]:
    if not pr.get("checked"):
        lines = [f"  privileges: {pr.get('detail', 'not checked')}"]
        acc = pr.get("access") or {}
        if acc:
            lines.append(f"    database file {acc['file']}: {'writable' if acc['file_writable'] else 'NOT writable'}; "
                         f"its folder: {'writable' if acc['folder_writable'] else 'NOT writable'}")
        return lines
    lines = [f"  privileges of {pr['user']} (checked against the server):"]
    for n in pr["needs"]:
        need = grants.Need(tuple(n["privileges"]), n["on"], n["name"], tuple(n["columns"]), where=n["where"])
        shown = what(need, n.get("missing_columns", ()), n.get("called", ""))
        if n["held"] is True:
            state = "held"
        elif n["held"] is False:
            state = "LACKING" if n["level"] != "optional" else "lacking"
        else:
            state = "unchecked"
        tail = f"; {n['detail']}" if n.get("detail") else ""
        lines.append(f"    {state:<9} {n['level']:<11} {shown}, for {n['purpose']}{tail}")
        if n["held"] is not True and n["grant"]:
            lines.append(f"              {n['grant']}")
    return lines


def _describe_indexes(ix: dict[str, Any]) -> list[str]:
    lines = ["  indexes:"]
    sweep = ix["sweep"]
    if sweep.get("sql") is None:
        lines.append(f"    sweep: {sweep['note']}")
    elif sweep.get("served_by_index"):
        lines.append("    sweep's check for rows left: served by an index")
    elif sweep.get("served_by_index") is None:
        lines.append(f"    sweep's check for rows left: could not check: {' '.join(sweep['explain'])}")
    else:
        lines.append(f"    sweep's check for rows left ({sweep['sql']}): {sweep['scans']} "
                     f"({sweep['rows_estimate']} rows, {human_bytes(sweep['table_bytes_estimate'])}, estimates)")
        s = sweep.get("suggestion")
        if s is None:
            lines.append(f"      {sweep['note']}")
        else:
            took = s["build_s_estimate"]
            build = "unknown" if took is None else "under 0.1 s" if took < 0.1 else f"about {took:g} s"
            lines.append(f"      an index would serve it (estimate: up to {human_bytes(s['space_bytes_estimate'])}, "
                         f"{s['space_basis']}; build {build}, {s['build_basis']}):")
            lines.extend(f"        {ddl};" for ddl in s["ddl"])
            lines.append(f"      {s['note']}")
    v = ix["verify"]
    range_read = {True: "through the key's index", False: "NOT through the key's index",
                  None: "could not check"}[v["uses_key_range"]]
    lines.append(f"    verify: reads every row once ({v['rows_estimate']} rows, estimate), in key ranges read "
                 f"{range_read}; no index spares the read")
    if "where" in ix:
        w = ix["where"]
        served = {True: "served by an index", False: "NOT served by an index: it reads the whole table",
                  None: "could not check"}[w["served_by_index"]]
        lines.append(f"    the job's where: {served}")
    return lines


def _describe_replication(r: dict[str, Any]) -> list[str]:
    if "detail" in r:
        return [f"  replication log (estimate): {r['detail']}"]
    settings = ", ".join(f"{k} = {v}" for k, v in r["settings"].items())
    lines = [f"  replication log (estimates): about {human_bytes(r['log_bytes_estimate'])} for {r['rows']} rows "
             f"({r['rows_basis']}), with {settings}",
             f"    {r['how']}; average row {human_bytes(r['avg_row_bytes'])} ({r['size_source']}), table "
             f"{human_bytes(r['table_bytes'])}"]
    lines.extend(f"    {note}" for note in r["notes"])
    pace = r["pace"]
    if pace["max_rows_per_s"]:
        per_s = pace["log_bytes_per_s_estimate"]
        lines.append(f"    at max_rows_per_s = {pace['max_rows_per_s']:g}: about {pace['time_s_estimate']:g} s"
                     + (f", {human_bytes(per_s)}/s of log" if per_s else ""))
    else:
        lines.append(f"    time: {pace['bounded_by']}")
    return lines
