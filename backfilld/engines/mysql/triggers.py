"""MySQL/MariaDB sync triggers: BEFORE triggers assigning NEW, expressions rewritten to NEW.`col` / OLD.`col`.

A lookup job's triggers look the lookup row up; when there is none (and every match value is known) they insert it
(INSERT ... VALUES over NEW ... ON DUPLICATE KEY UPDATE id = id: a row another session inserted meanwhile is kept
as it is) and read its id again with LOCK IN SHARE MODE, a read of the latest committed row whatever the
transaction's snapshot (the row is locked by that INSERT already, so the lock adds no wait). A trigger cannot write
a table its statement reads: an application statement that reads the lookup table itself and writes a row needing a
new lookup row fails (error 1442); new code that fills the target itself never reaches the INSERT.

Owns: the trigger DDL (install_sql: DROP + CREATE, or MariaDB's atomic CREATE OR REPLACE), telling MariaDB from
MySQL for it, running the DDL outside a transaction within the engine's lock timeout, and the catalog query that
finds the triggers. Delegates the rule they follow, the names and the checks to engines/triggers.py, the rewriting
of expressions to engines/sqltext.py, and quoting and the exact comparison to MySQLDialect.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from backfilld.engines.base import Dialect, Engine
from backfilld.engines.sqltext import referenced_columns, rewrite_columns
from backfilld.engines.statements import LookupSpec, lookup_expr, wanted
from backfilld.engines.triggers import Triggers, TriggerSpec


class MySQLTriggers(Triggers):
    def install_sql(self, spec: TriggerSpec) -> list[str]:
        if spec.lookup is not None:
            return _install_lookup(self.dialect, spec, spec.lookup, self.drops(spec.table, spec.names))
        return _install(self.dialect, spec, self.drops(spec.table, spec.names))

    def installed_sql(self, schema: str | None, p: Callable[[str], str]) -> str:
        return (f"SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = "
                f"COALESCE({p('schema')}, DATABASE()) AND EVENT_OBJECT_TABLE = {p('table')} "
                f"AND TRIGGER_NAME IN ({p('ins')}, {p('upd')})")

    async def replaces_atomically(self, engine: Engine) -> bool:
        rows = await engine.fetch("SELECT VERSION()")
        return "mariadb" in str(rows[0][0]).lower()

    async def run_ddl(self, engine: Engine, stmts: Sequence[str]) -> None:
        # MySQL DDL commits implicitly: no transaction. CREATE/DROP TRIGGER wait for an exclusive metadata lock
        # on the table, and every statement on the table queues behind that wait: keep it as short as the
        # engine's lock timeout, then fail (retryable) rather than stall the application.
        rows = await engine.fetch("SELECT @@SESSION.lock_wait_timeout")
        before = int(rows[0][0])
        await engine.execute(f"SET SESSION lock_wait_timeout = {max(1, math.ceil(engine.lock_timeout_s))}")
        restore = f"SET SESSION lock_wait_timeout = {before}"
        try:
            for s in stmts:
                await engine.execute(s)
        except BaseException:
            with contextlib.suppress(Exception):  # the DDL's own error is the one worth reporting
                await engine.execute(restore)
            raise
        await engine.execute(restore)


def _install(d: Dialect, spec: TriggerSpec, drops: list[str]) -> list[str]:
    q = d.quote
    table, types, exprs, where, overwrite = spec.table, spec.columns, spec.exprs, spec.where, spec.overwrite
    cols = list(types)
    canon = {c.lower(): c for c in cols}
    targets = {tg: canon.get(tg.lower(), tg) for tg in exprs}

    def new(sql: str) -> str:
        return rewrite_columns(sql, d, cols, table, "NEW")

    def old(sql: str) -> str:
        return rewrite_columns(sql, d, cols, table, "OLD")

    def body(event: str) -> str:
        lines: list[str] = []
        for tg, expr in exprs.items():
            c = q(targets[tg])
            if overwrite:
                lines.append(f"SET NEW.{c} = ({new(expr)});")
                continue
            lines.append(f"IF NEW.{c} IS NULL THEN")
            lines.append(f"  SET NEW.{c} = ({new(expr)});")
            sources = referenced_columns(expr, d, cols, table)
            if event == "UPDATE" and sources:
                col = types.get(targets[tg])
                changed = " AND ".join(d.same(f"NEW.{q(s)}", f"OLD.{q(s)}", types.get(s)) for s in sources)
                lines.append(f"ELSEIF {d.same(f'NEW.{c}', f'OLD.{c}', col)} AND NOT ({changed}) "
                             f"AND {d.holds(f'OLD.{c}', f'({old(expr)})', col)} THEN")
                lines.append(f"  SET NEW.{c} = ({new(expr)});")
            lines.append("END IF;")
        if where:
            lines = [f"IF ({new(where)}) THEN", *("  " + ln for ln in lines), "END IF;"]
        return "BEGIN\n" + "\n".join("  " + ln for ln in lines) + "\nEND"

    return _creates(d, spec, drops, body)


def _creates(d: Dialect, spec: TriggerSpec, drops: list[str], body: Callable[[str], str]) -> list[str]:
    create = "CREATE OR REPLACE TRIGGER" if spec.or_replace else "CREATE TRIGGER"
    out = [] if spec.or_replace else drops
    for name, event in ((spec.names.insert, "INSERT"), (spec.names.update, "UPDATE")):
        out.append(f"{create} {d.in_schema(spec.table, name)} BEFORE {event} ON {d.table(spec.table)} FOR EACH "
                   f"ROW\n{body(event)}")
    return out


def _install_lookup(d: Dialect, spec: TriggerSpec, lk: LookupSpec, drops: list[str]) -> list[str]:
    """A lookup job's triggers (see the module's docstring and engines/triggers.py for the rule). The match and
    values expressions, qualified by the table's name, are rewritten over NEW (and OLD) like any expression."""
    q = d.quote
    cols = list(spec.columns)
    [target] = spec.exprs
    target = {c.lower(): c for c in cols}.get(target.lower(), target)
    c, col = q(target), spec.columns.get(target)

    def over(prefix: str) -> LookupSpec:
        return replace(lk, match={m: rewrite_columns(e, d, cols, spec.table, prefix) for m, e in lk.match.items()},
                       values={v: rewrite_columns(e, d, cols, spec.table, prefix) for v, e in lk.values.items()})

    new, old = over("NEW"), over("OLD")
    values = ", ".join(f"({e})" for e in (*new.match.values(), *new.values.values()))
    insert = (f"INSERT INTO {d.table(lk.table)} ({', '.join(q(x) for x in (*lk.match, *lk.values))}) "
              f"VALUES ({values}) {d.on_conflict_nothing(lk.id, tuple(lk.match))};")
    get_or_create = [f"IF {wanted(d, new)} THEN",
                     f"  SET NEW.{c} = ({lookup_expr(d, new)});",
                     f"  IF NEW.{c} IS NULL THEN",
                     f"    {insert}",
                     f"    SET NEW.{c} = ({lookup_expr(d, new)} LOCK IN SHARE MODE);",
                     "  END IF;",
                     "ELSE",
                     f"  SET NEW.{c} = NULL;",
                     "END IF;"]
    sources = spec.match_sources(d)
    same_sources = " AND ".join(d.same(f"NEW.{q(s)}", f"OLD.{q(s)}", spec.columns.get(s)) for s in sources)
    derived = (f" OR ({d.same(f'NEW.{c}', f'OLD.{c}', col)} AND NOT ({same_sources}) "
               f"AND {d.holds(f'OLD.{c}', f'({lookup_expr(d, old)})', col)})") if sources else ""

    def body(event: str) -> str:
        when = f"NEW.{c} IS NULL" + (derived if event == "UPDATE" else "")
        lines = [f"IF {when} THEN", *("  " + ln for ln in get_or_create), "END IF;"]
        if spec.where:
            lines = [f"IF ({rewrite_columns(spec.where, d, cols, spec.table, 'NEW')}) THEN",
                     *("  " + ln for ln in lines), "END IF;"]
        return "BEGIN\n" + "\n".join("  " + ln for ln in lines) + "\nEND"

    return _creates(d, spec, drops, body)
