"""PostgreSQL sync triggers: two BEFORE triggers calling one plpgsql function that evaluates over (SELECT NEW.*).

Owns: the function and trigger DDL (install_sql), dropping them (remove_sql: the triggers ON their table, then the
function), and the catalog query that finds them. Delegates the rule they follow, the names, the checks and
running the DDL to engines/triggers.py (the DDL runs in one transaction, its wait for the table's lock bounded by
the connection's lock_timeout), and quoting and the exact comparison to PostgresDialect.
"""

from __future__ import annotations

from collections.abc import Callable

from backfilld.engines.base import Dialect
from backfilld.engines.sqltext import split_table
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

    def install_sql(self, spec: TriggerSpec) -> list[str]:
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
    table, types, exprs, where, overwrite, names = (spec.table, spec.columns, spec.exprs, spec.where, spec.overwrite,
                                                    spec.names)
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
    tag = _dollar_tag(where, *exprs.values())
    fn = d.in_schema(table, names.function)
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
