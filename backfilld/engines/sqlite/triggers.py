"""SQLite sync triggers: AFTER triggers updating the row just written, found by its key.

A lookup job's triggers first insert the lookup row the written row needs unless it exists (INSERT ... SELECT
from the row ... WHERE NOT EXISTS (the look-up) ON CONFLICT DO NOTHING), then set the target to its id. Statements
inside a trigger cannot name another schema: the lookup table must be in the job table's schema.

Owns: the trigger DDL (install_sql) and the catalog query that finds the triggers. Delegates the rule they follow,
the names, the checks, dropping them and running the DDL (one transaction) to engines/triggers.py, and quoting and
the exact comparison to SQLiteDialect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from backfilld.engines.base import Dialect
from backfilld.engines.sqltext import split_table
from backfilld.engines.statements import LookupSpec, lookup_expr, wanted
from backfilld.engines.triggers import Triggers, TriggerSpec
from backfilld.errors import SchemaError


class SQLiteTriggers(Triggers):
    def install_sql(self, spec: TriggerSpec) -> list[str]:
        if spec.lookup is not None:
            return _install_lookup(self.dialect, spec, spec.lookup, self.drops(spec.table, spec.names))
        return _install(self.dialect, spec, self.drops(spec.table, spec.names))

    def installed_sql(self, schema: str | None, p: Callable[[str], str]) -> str:
        master = f"{self.dialect.quote(schema)}.sqlite_master" if schema else "sqlite_master"
        return (f"SELECT name FROM {master} WHERE type = 'trigger' AND tbl_name = {p('table')} COLLATE NOCASE "
                f"AND name IN ({p('ins')}, {p('upd')})")


def _install(d: Dialect, spec: TriggerSpec, drops: list[str]) -> list[str]:
    q = d.quote
    table, types, key, exprs, where, names = spec.table, spec.columns, spec.key, spec.exprs, spec.where, spec.names
    by_lower = {c.lower(): col for c, col in types.items()}   # SQLite's column names ignore case
    col = {tg: types.get(tg) or by_lower.get(tg.lower()) for tg in exprs}
    _, bare = split_table(table)
    t = q(bare)  # statements inside a SQLite trigger may not name the schema; the trigger lives in it
    match_row = " AND ".join(f"{q(k)} = NEW.{q(k)}" for k in key) if key else "rowid = NEW.rowid"
    filt = f" AND ({where})" if where else ""
    # the OLD row as a derived table with the table's column names: expressions read it unchanged
    old_row = "SELECT " + ", ".join(f"OLD.{q(c)} AS {q(c)}" for c in types)

    def old_value(expr: str) -> str:
        return f"(SELECT ({expr}) FROM ({old_row}) AS {t})"

    def create(name: str, event: str, when: str | None, sets: list[str], need: list[str]) -> str:
        when_sql = f"\nWHEN {when}" if when else ""
        return (f"CREATE TRIGGER {d.in_schema(table, name)} AFTER {event} ON {t} FOR EACH ROW{when_sql}\nBEGIN\n"
                f"  UPDATE {t} SET {', '.join(sets)}\n  WHERE {match_row}{filt}\n"
                f"    AND ({' OR '.join(need)});\nEND")

    if spec.overwrite:
        sets = [f"{q(tg)} = ({e})" for tg, e in exprs.items()]
        need = [d.stale(q(tg), f"({e})", col[tg]) for tg, e in exprs.items()]
        return drops + [create(names.insert, "INSERT", None, sets, need),
                        create(names.update, "UPDATE", None, sets, need)]

    fill = {tg: f"{q(tg)} IS NULL" for tg in exprs}
    ins_sets = [f"{q(tg)} = COALESCE({q(tg)}, ({e}))" for tg, e in exprs.items()]
    ins_need = [f"({fill[tg]} AND ({e}) IS NOT NULL)" for tg, e in exprs.items()]
    ins_when = " OR ".join(f"NEW.{q(tg)} IS NULL" for tg in exprs)
    # derived: the statement left the target as it was, and it was the OLD row's expression. "The same" is
    # byte for byte (the dialect's COLLATE BINARY), so a NOCASE column cannot pass a hand-written value for a
    # derived one. The current row is NEW here (AFTER trigger), so the comparison with OLD's expression reads the
    # column, which carries the column's affinity: it compares as verify compares the stored value (holds).
    derived = {tg: f"({d.same(f'NEW.{q(tg)}', f'OLD.{q(tg)}', col[tg])} AND {q(tg)} IS NOT NULL "
                   f"AND {d.holds(q(tg), old_value(e), col[tg])})" for tg, e in exprs.items()}
    upd_sets = [f"{q(tg)} = CASE WHEN {fill[tg]} OR {derived[tg]} THEN ({e}) ELSE {q(tg)} END"
                for tg, e in exprs.items()]
    upd_need = [f"({fill[tg]} AND ({e}) IS NOT NULL) OR ({derived[tg]} AND {d.stale(q(tg), f'({e})', col[tg])})"
                for tg, e in exprs.items()]
    # the WHEN keeps the trigger from running its UPDATE where it cannot apply, and stops any recursion (with
    # recursive_triggers on): the UPDATE writes only targets it changes, so in the nested run each written
    # target differs from OLD and is either not NULL or has a NULL expression: nothing left to do.
    upd_when = " OR ".join(f"NEW.{q(tg)} IS NULL OR {d.same(f'NEW.{q(tg)}', f'OLD.{q(tg)}', col[tg])}"
                           for tg in exprs)
    return drops + [create(names.insert, "INSERT", ins_when, ins_sets, ins_need),
                    create(names.update, "UPDATE", upd_when, upd_sets, upd_need)]


def _install_lookup(d: Dialect, spec: TriggerSpec, lk: LookupSpec, drops: list[str]) -> list[str]:
    """A lookup job's triggers (see the module's docstring and engines/triggers.py for the rule). Their statements
    read the written row from the table by its key: the expressions, qualified by the table's name, read it."""
    q = d.quote
    schema, bare = split_table(spec.table)
    lschema, lbare = split_table(lk.table)
    if (schema or "main").lower() != (lschema or "main").lower():
        raise SchemaError(f"lookup table {lk.table!r} is in another schema than {spec.table!r}: a SQLite trigger "
                          "cannot write it; put both tables in one database file")
    lk = replace(lk, table=lbare)   # inside the trigger, unqualified: it lives in the table's schema
    [target] = spec.exprs
    col = spec.columns.get(target) or {c.lower(): v for c, v in spec.columns.items()}.get(target.lower())
    c, t = q(target), q(bare)
    match_row = " AND ".join(f"{q(k)} = NEW.{q(k)}" for k in spec.key) if spec.key else "rowid = NEW.rowid"
    filt = f" AND ({spec.where})" if spec.where else ""
    find = f"({lookup_expr(d, lk)})"
    old_row = "SELECT " + ", ".join(f"OLD.{q(x)} AS {q(x)}" for x in spec.columns)
    # derived: the statement left the target as it was, and it was the id of OLD's lookup row (as the column
    # stores it: Dialect.holds); the WHEN below lets a non-NULL target in only when a match source changed
    derived = (f"({d.same(f'NEW.{c}', f'OLD.{c}', col)} AND {c} IS NOT NULL "
               f"AND {d.holds(c, f'(SELECT {find} FROM ({old_row}) AS {t})', col)})")
    selected = ", ".join(f"({e})" for e in (*lk.match.values(), *lk.values.values()))

    def create(name: str, event: str, when: str, follow: bool) -> str:
        todo = f"({c} IS NULL OR {derived})" if follow else f"{c} IS NULL"
        # the WHERE also ends SQLite's parsing ambiguity of INSERT ... SELECT ... ON CONFLICT
        insert = (f"INSERT INTO {q(lk.table)} ({', '.join(q(x) for x in (*lk.match, *lk.values))})\n"
                  f"  SELECT {selected} FROM {t}\n  WHERE {match_row}{filt} AND {todo} AND {wanted(d, lk)}\n"
                  f"    AND NOT EXISTS ({lookup_expr(d, lk)})\n  {d.on_conflict_nothing(lk.id, tuple(lk.match))};")
        # a NULL target is set only to an id, so that the nested run of the update trigger (recursive_triggers
        # on) finds nothing to do; a derived one follows to NULL too, once
        need = f"({c} IS NULL AND {find} IS NOT NULL)"
        if follow:
            need += f" OR ({derived} AND {d.stale(c, find, col)})"
        return (f"CREATE TRIGGER {d.in_schema(spec.table, name)} AFTER {event} ON {t} FOR EACH ROW\nWHEN {when}\n"
                f"BEGIN\n  {insert}\n  UPDATE {t} SET {c} = {find}\n  WHERE {match_row}{filt} AND ({need});\nEND")

    sources = spec.match_sources(d)
    moved = " OR ".join(d.differs(f"NEW.{q(s)}", f"OLD.{q(s)}", spec.columns.get(s)) for s in sources)
    upd_when = f"NEW.{c} IS NULL" + (f" OR ({d.same(f'NEW.{c}', f'OLD.{c}', col)} AND ({moved}))" if sources else "")
    return drops + [create(spec.names.insert, "INSERT", f"NEW.{c} IS NULL", False),
                    create(spec.names.update, "UPDATE", upd_when, bool(sources))]
