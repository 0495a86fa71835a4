"""PostgreSQL sync triggers: two BEFORE triggers calling one plpgsql function that evaluates over (SELECT NEW.*).

A lookup job's function looks the lookup row up; when there is none (and every match value is known) it inserts it
(INSERT ... SELECT over NEW ... ON CONFLICT (match columns) DO NOTHING) and looks up again, a statement with its
own snapshot under READ COMMITTED, so a row another session committed meanwhile is found; under REPEATABLE READ
or SERIALIZABLE such a conflict is a serialization failure the application retries, never a NULL target.

Owns: the function and trigger DDL (install_sql), dropping them (remove_sql: the triggers ON their table, then the
function), and the catalog query that finds them. Delegates the rule they follow, the names, the checks and
running the DDL to engines/triggers.py (the DDL runs in one transaction, its wait for the table's lock bounded by
the connection's lock_timeout), and quoting and the exact comparison to PostgresDialect.
"""

from __future__ import annotations

from collections.abc import Callable

from backfilld.engines.base import Dialect
from backfilld.engines.sqltext import split_table
from backfilld.engines.statements import LookupSpec, lookup_expr, wanted
from backfilld.engines.triggers import TriggerNames, Triggers, TriggerSpec


def _dollar_tag(*texts: str | None) -> str:
    tag, n = "$bf$", 0
    while any(t and tag in t for t in texts):
        n += 1
        tag = f"$bf{n}$"
    return tag


class PostgresTriggers(Triggers):
    needs_columns = False   # %TYPE declares the function's variables; the columns only check the targets
    drops_on_table = True
    creates_function = True

    def install_sql(self, spec: TriggerSpec) -> list[str]:
        if spec.lookup is not None:
            return _install_lookup(self.dialect, spec, spec.lookup)
        return _install(self.dialect, spec)

    def remove_sql(self, table: str, names: TriggerNames, table_exists: bool) -> list[str]:
        q = self.dialect
        out = [f"DROP TRIGGER IF EXISTS {q.quote(n)} ON {q.table(table)}" for n in (names.insert, names.update)]
        return (out if table_exists else []) + [f"DROP FUNCTION IF EXISTS {q.in_schema(table, names.function)}()"]

    def installed_sql(self, schema: str | None, p: Callable[[str], str]) -> str:
        return (f"SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass({p('qualified')}) AND NOT tgisinternal "
                f"AND tgname IN ({p('ins')}, {p('upd')})")


def _install(d: Dialect, spec: TriggerSpec) -> list[str]:
    q, same = d.quote, d.same
    table, types, exprs, where, overwrite = spec.table, spec.columns, spec.exprs, spec.where, spec.overwrite
    t = d.table(table)
    alias = q(split_table(table)[1])  # so that table.column in an expression still resolves
    targets = list(exprs)
    tcol = {tg: q(tg) for tg in targets}
    n_vars = [f"bf_n{i}" for i in range(len(targets))]
    o_vars = [f"bf_o{i}" for i in range(len(targets))]
    decl = ["  bf_match boolean;"]
    decl += [f"  {v} {t}.{tcol[tg]}%TYPE;" for v, tg in zip(n_vars, targets, strict=True)]
    if not overwrite:
        decl += [f"  {v} {t}.{tcol[tg]}%TYPE;" for v, tg in zip(o_vars, targets, strict=True)]
    filt = f" WHERE ({where})" if where else ""
    sel_new = ", ".join(f"({exprs[tg]})" for tg in targets)
    body = ["BEGIN"]
    when = {"INSERT": "", "UPDATE": ""}
    if not overwrite:
        # an INSERT that filled every target itself needs nothing: skip evaluating the expressions
        all_set = " AND ".join(f"NEW.{tcol[tg]} IS NOT NULL" for tg in targets)
        body.append(f"  IF TG_OP = 'INSERT' AND {all_set} THEN RETURN NEW; END IF;")
        # an UPDATE that wrote every target itself (the batch, new code) needs nothing either
        open_ = " OR ".join(f"NEW.{tcol[tg]} IS NULL OR "
                            f"{same('NEW.' + tcol[tg], 'OLD.' + tcol[tg], types.get(tg))}" for tg in targets)
        body += ["  IF TG_OP = 'UPDATE' THEN",
                 f"    IF NOT ({open_}) THEN RETURN NEW; END IF;",
                 "  END IF;"]
        # the same test as the update trigger's WHEN: such rows (every row a batch writes) never enter
        # plpgsql, whose call per row made batches about half as fast; the function keeps the test for a
        # trigger made without WHEN (an older install)
        when["UPDATE"] = f" WHEN ({open_})"
    body.append(f"  SELECT true, {sel_new} INTO bf_match, {', '.join(n_vars)} FROM (SELECT NEW.*) AS {alias}{filt};")
    body.append("  IF bf_match IS NULL THEN RETURN NEW; END IF;  -- the where filter does not hold on NEW")
    if overwrite:
        for v, tg in zip(n_vars, targets, strict=True):
            body.append(f"  NEW.{tcol[tg]} := {v};")
    else:
        untouched = {tg: f"NEW.{tcol[tg]} IS NOT NULL AND "
                         f"{same('NEW.' + tcol[tg], 'OLD.' + tcol[tg], types.get(tg))}" for tg in targets}
        any_untouched = " OR ".join(f"({untouched[tg]})" for tg in targets)
        body += ["  IF TG_OP = 'UPDATE' THEN",
                 f"    IF {any_untouched} THEN",
                 f"      SELECT {sel_new} INTO {', '.join(o_vars)} FROM (SELECT OLD.*) AS {alias};",
                 "    END IF;",
                 "  END IF;"]
        for nv, ov, tg in zip(n_vars, o_vars, targets, strict=True):
            c = tcol[tg]
            body += [f"  IF NEW.{c} IS NULL THEN",
                     f"    NEW.{c} := {nv};",
                     "  ELSIF TG_OP = 'UPDATE' THEN",
                     f"    IF {untouched[tg]} AND {same('OLD.' + c, ov, types.get(tg))} THEN",
                     f"      NEW.{c} := {nv};  -- derived from the old row: follow the sources",
                     "    END IF;",
                     "  END IF;"]
    body += ["  RETURN NEW;", "END"]
    return _ddl(d, spec, decl, body, when, _dollar_tag(where, *exprs.values()))


def _ddl(d: Dialect, spec: TriggerSpec, decl: list[str], body: list[str], when: dict[str, str], tag: str) -> list[str]:
    q, t, names = d.quote, d.table(spec.table), spec.names
    fn = d.in_schema(spec.table, names.function)
    src = "\n".join(["#variable_conflict use_column", "DECLARE", *decl, *body])
    return [
        f"DROP TRIGGER IF EXISTS {q(names.insert)} ON {t}",
        f"DROP TRIGGER IF EXISTS {q(names.update)} ON {t}",
        # search_path pinned: the expressions mean in application sessions what they meant when installed
        f"CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS "
        f"{tag}\n{src}\n{tag}",
        f"CREATE TRIGGER {q(names.insert)} BEFORE INSERT ON {t} FOR EACH ROW{when['INSERT']} EXECUTE FUNCTION {fn}()",
        f"CREATE TRIGGER {q(names.update)} BEFORE UPDATE ON {t} FOR EACH ROW{when['UPDATE']} EXECUTE FUNCTION {fn}()",
    ]


def _install_lookup(d: Dialect, spec: TriggerSpec, lk: LookupSpec) -> list[str]:
    """A lookup job's function (see the module's docstring and engines/triggers.py for the rule). Its
    expressions are qualified by the table's name: over (SELECT NEW.*) AS <that name> they read the record."""
    q = d.quote
    [target] = spec.exprs
    c, col = q(target), spec.columns.get(target)
    t = d.table(spec.table)
    alias = q(split_table(spec.table)[1])
    new_row, old_row = f"FROM (SELECT NEW.*) AS {alias}", f"FROM (SELECT OLD.*) AS {alias}"
    find = f"({lookup_expr(d, lk)})"
    sources = spec.match_sources(d)
    # what the trigger has to look at: a NULL target, or one the statement left as it was while it changed a
    # column the match expressions read (then only a derived target follows); never an UPDATE that wrote the
    # target (the batch, verify --fix, new code)
    moved = " OR ".join(d.differs(f"NEW.{q(s)}", f"OLD.{q(s)}", spec.columns.get(s)) for s in sources)
    open_ = f"NEW.{c} IS NULL" + (f" OR ({d.same(f'NEW.{c}', f'OLD.{c}', col)} AND ({moved}))" if sources else "")
    filt = f" WHERE ({spec.where})" if spec.where else ""
    cols = [*lk.match, *lk.values]
    insert = (f"INSERT INTO {d.table(lk.table)} ({', '.join(q(x) for x in cols)}) "
              f"SELECT {', '.join(f'({e})' for e in (*lk.match.values(), *lk.values.values()))} {new_row} "
              f"{d.on_conflict_nothing(lk.id, tuple(lk.match))};")
    decl = ["  bf_match boolean;", "  bf_want boolean;", f"  bf_n0 {t}.{c}%TYPE;", f"  bf_o0 {t}.{c}%TYPE;"]
    body = ["BEGIN",
            f"  IF TG_OP = 'INSERT' AND NEW.{c} IS NOT NULL THEN RETURN NEW; END IF;",
            "  IF TG_OP = 'UPDATE' THEN",
            f"    IF NOT ({open_}) THEN RETURN NEW; END IF;",
            "  END IF;",
            f"  SELECT true, {find}, {wanted(d, lk)} INTO bf_match, bf_n0, bf_want {new_row}{filt};",
            "  IF bf_match IS NULL THEN RETURN NEW; END IF;  -- the where filter does not hold on NEW",
            f"  IF TG_OP = 'UPDATE' AND NEW.{c} IS NOT NULL THEN",
            f"    SELECT {find} INTO bf_o0 {old_row};",
            f"    IF NOT ({d.same(f'OLD.{c}', 'bf_o0', col)}) THEN RETURN NEW; END IF;  -- not derived: kept",
            "  END IF;",
            "  IF bf_n0 IS NULL AND bf_want THEN",
            f"    {insert}",
            f"    SELECT {find} INTO bf_n0 {new_row};",
            "  END IF;",
            f"  NEW.{c} := bf_n0;",
            "  RETURN NEW;",
            "END"]
    when = {"INSERT": f" WHEN (NEW.{c} IS NULL)", "UPDATE": f" WHEN ({open_})"}
    texts = (spec.where, lk.table, lk.id, *lk.match, *lk.values, *lk.match.values(), *lk.values.values())
    return _ddl(d, spec, decl, body, when, _dollar_tag(*texts))
