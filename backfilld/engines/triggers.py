"""Sync triggers: keep a SQL-expression job's targets right while old application code still writes.

The batch fills rows that exist; these triggers cover the rows old code inserts and updates meanwhile, so a
job needs no sweeps once they are installed. One BEFORE trigger per event on PostgreSQL and MySQL/MariaDB
(assigning NEW), one AFTER trigger per event on SQLite (an UPDATE of the row just written, by its key).

The rule, per target column, for rows where the job's `where` holds on the row as written (NEW):

overwrite = true
    INSERT and UPDATE: target = expression(NEW), always (NULL if the expression is NULL), as the batch does.

overwrite = false (the default)
    INSERT: target NULL -> target = expression(NEW) (stays NULL when the expression is NULL).
    UPDATE:
      1. NEW.target IS NULL -> target = expression(NEW), as on INSERT. This includes an UPDATE that sets the
         target to NULL: NULL means "not filled" to backfilld, and the batch would fill it too.
      2. NEW.target is the same as OLD.target (the statement did not change it) and OLD.target equals
         expression(OLD) (the value was derived, not written by hand) -> target = expression(NEW), even when
         that is NULL: a derived value follows its sources.
      3. Otherwise (the statement changed the target, or the target held a hand-written value) -> untouched.

"The same" is exact: null-safe, and on strings byte for byte (never a case-insensitive collation, citext or
trailing-space padding), so a hand-written 'Example.com' is never taken for the derived 'example.com'; the
engine's dialect defines it (Dialect.same, and Dialect.holds for "equals expression(OLD)", as the column would
store it), as it does for batches and verify. A hand-written value that happens to equal expression(OLD) is
indistinguishable from a derived one and follows its sources like one.

Expressions are user SQL over unqualified columns; each engine evaluates them over NEW and OLD its own way:
PostgreSQL selects them from a derived table made of the record (`FROM (SELECT NEW.*) AS t`); SQLite runs them
in the UPDATE of the row itself, and over OLD from a derived table of OLD's columns; MySQL/MariaDB triggers can
only assign NEW, so the expression is rewritten by a tokenizer that prefixes the table's columns with NEW. or
OLD. (see rewrite_columns for what it understands). An expression may not read a target column: the result
would depend on the order targets are assigned, which differs between engines.

Engine SQL lives here (it is under engines/); nothing else in backfilld needs to know how triggers look.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backfilld.engines import dialect
from backfilld.engines.base import Column, Dialect, Engine, Stmt
from backfilld.errors import SchemaError

# ------------------------------------------------------------------------------------------ names

# PostgreSQL truncates identifiers at 63 bytes, MySQL refuses over 64 characters: names stay well below.
_MAX_JOB_PART = 36


@dataclass(frozen=True)
class TriggerNames:
    insert: str
    update: str
    function: str  # PostgreSQL only: the plpgsql function both triggers call


def trigger_names(table: str, job_name: str) -> TriggerNames:
    """Deterministic names: bf_<job, sanitized>_<hash of table and job>_{ins,upd,fn}; at most 53 characters.

    The hash covers the unqualified table name too, because MySQL and SQLite trigger names are unique per
    schema, not per table: two configs with the same job name on different tables must not collide.
    """
    base = re.sub(r"[^a-z0-9_]", "_", job_name.lower())[:_MAX_JOB_PART]
    digest = hashlib.sha256(f"{_split(table)[1].lower()}\x00{job_name}".encode()).hexdigest()[:8]
    stem = f"bf_{base}_{digest}"
    return TriggerNames(f"{stem}_ins", f"{stem}_upd", f"{stem}_fn")


def _split(table: str) -> tuple[str | None, str]:
    schema, _, name = table.rpartition(".")
    return schema or None, name


# ------------------------------------------------------------------------------------------ quoting


class _Quote:
    """The engine dialect's quoting (and its exact comparison, as .dialect), with names beside a table."""

    def __init__(self, dialect_name: str) -> None:
        self.dialect: Dialect = dialect(dialect_name)

    def __call__(self, ident: str) -> str:
        return self.dialect.quote(ident)

    def table(self, name: str) -> str:
        return self.dialect.table(name)

    def in_schema(self, table: str, obj: str) -> str:
        """obj in the schema of table (triggers and functions live beside their table)."""
        schema, _ = _split(table)
        return f"{self(schema)}.{self(obj)}" if schema else self(obj)


# ------------------------------------------------------------------------------------------ tokenizer


@dataclass(frozen=True)
class Token:
    kind: str  # ident, qident, str, num, var, comment, space, op
    text: str
    value: str = ""  # ident: as written; qident: the name inside the quotes


_LEX = {
    # string quotes, backslash escapes in strings, identifier quotes (open -> close), '#' comments
    "mysql": ("'\"", True, {"`": "`"}, True),
    "postgresql": ("'", False, {'"': '"'}, False),
    "sqlite": ("'", False, {'"': '"', "`": "`", "[": "]"}, False),
}


def _is_ident_start(ch: str) -> bool:
    return ch == "_" or ch.isalpha()


def _is_ident_char(ch: str) -> bool:
    return ch in "_$" or ch.isalnum()


def tokenize(sql: str, dialect_name: str) -> list[Token]:  # noqa: C901 - one branch per token kind, read in order
    """Split SQL text into tokens that concatenate back to it exactly."""
    strings, backslash, idents, hash_comments = _LEX[dialect_name]
    out: list[Token] = []
    i, n = 0, len(sql)

    def quoted(start: int, close: str, escapes: bool) -> int:
        """Index just past the closing quote of a quoted run starting at `start` (the opening quote)."""
        j = start + 1
        while j < n:
            ch = sql[j]
            if escapes and ch == "\\":
                j += 2
                continue
            if ch == close:
                if j + 1 < n and sql[j + 1] == close:  # doubled quote
                    j += 2
                    continue
                return j + 1
            j += 1
        raise ValueError(f"unterminated quote in SQL: {sql[start:start + 40]!r}")

    while i < n:
        ch = sql[i]
        if ch.isspace():
            j = i
            while j < n and sql[j].isspace():
                j += 1
            out.append(Token("space", sql[i:j]))
            i = j
        elif (sql.startswith("--", i) and not (hash_comments and i + 2 < n and not sql[i + 2].isspace())
              or (hash_comments and ch == "#")):  # MySQL: "--" opens a comment only before whitespace
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(Token("comment", sql[i:j]))
            i = j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                raise ValueError("unterminated /* comment in SQL")
            out.append(Token("comment", sql[i:j + 2]))
            i = j + 2
        elif ch in strings:
            # PostgreSQL E'...' strings take backslash escapes; the E is lexed as an ident before it
            esc = backslash or (dialect_name == "postgresql" and bool(out) and out[-1].kind == "ident"
                                and out[-1].value.upper() == "E")
            j = quoted(i, ch, esc)
            out.append(Token("str", sql[i:j]))
            i = j
        elif ch in idents:
            j = quoted(i, idents[ch], False)
            close = idents[ch]
            out.append(Token("qident", sql[i:j], sql[i + 1:j - 1].replace(close * 2, close)))
            i = j
        elif ch == "$" and dialect_name == "postgresql":
            m = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])
            if m:  # dollar-quoted string
                tag = m.group(0)
                j = sql.find(tag, i + len(tag))
                if j < 0:
                    raise ValueError("unterminated dollar-quoted string in SQL")
                out.append(Token("str", sql[i:j + len(tag)]))
                i = j + len(tag)
            else:  # $1: a parameter
                j = i + 1
                while j < n and sql[j].isdigit():
                    j += 1
                out.append(Token("var", sql[i:j]))
                i = j
        elif ch == "@":  # MySQL user and system variables: @x, @@sql_mode, @`quoted`
            j = i + 1
            while j < n and (_is_ident_char(sql[j]) or sql[j] in "@."):
                j += 1
            out.append(Token("var", sql[i:j]))
            i = j
        elif ch.isdigit() or (ch == "." and i + 1 < n and sql[i + 1].isdigit()):
            j = i + 1
            while j < n and (_is_ident_char(sql[j]) or sql[j] == "."
                             or (sql[j] in "+-" and sql[j - 1] in "eE" and not sql[i:j].lower().startswith("0x"))):
                j += 1
            out.append(Token("num", sql[i:j]))
            i = j
        elif _is_ident_start(ch):
            j = i + 1
            while j < n and _is_ident_char(sql[j]):
                j += 1
            out.append(Token("ident", sql[i:j], sql[i:j]))
            i = j
        else:
            out.append(Token("op", ch))
            i += 1
    return out


# Words that name a unit or a type where an identifier could stand: never a column in those places.
_UNITS = {"MICROSECOND", "SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "QUARTER", "YEAR", "SECOND_MICROSECOND",
          "MINUTE_MICROSECOND", "MINUTE_SECOND", "HOUR_MICROSECOND", "HOUR_SECOND", "HOUR_MINUTE", "DAY_MICROSECOND",
          "DAY_SECOND", "DAY_MINUTE", "DAY_HOUR", "YEAR_MONTH", "EPOCH", "DOW", "DOY", "ISODOW", "ISOYEAR", "DECADE",
          "CENTURY", "MILLENNIUM", "MILLISECOND", "MILLISECONDS", "MICROSECONDS", "TIMEZONE", "TIMEZONE_HOUR",
          "TIMEZONE_MINUTE", "JULIAN"}
_UNIT_FUNCS = {"TIMESTAMPADD", "TIMESTAMPDIFF"}
_NAME_AFTER = {"AS", "USING", "COLLATE", "CHARSET"}  # the next word names a type, charset or collation


@dataclass(frozen=True)
class ColumnRef:
    first: int  # index of the first token of the reference (the qualifier when qualified)
    last: int  # index of the column token
    column: str  # the column's name as the catalog spells it


def column_refs(tokens: Sequence[Token], dialect_name: str, columns: Iterable[str],  # noqa: C901 - see below
                table: str) -> list[ColumnRef]:
    """Where the tokens reference a column of the table.

    A reference is an identifier (bare or quoted) naming a column, or table.column with the table's own
    unqualified name. Not references: string literals, comments, anything after a '.' (a qualified member),
    a name followed by '(' (a function), charset introducers (_utf8mb4'x', N'x'), variables (@x, $1), the
    word after AS / USING / COLLATE / '::' (a type, charset or collation), and a date unit where SQL puts
    one (EXTRACT(YEAR FROM d), INTERVAL n DAY, TIMESTAMPDIFF(DAY, a, b)). Unquoted names match columns
    case-insensitively, except on PostgreSQL, which folds them to lower case; quoted names match exactly
    (MySQL and SQLite column names are case-insensitive even when quoted).
    """
    cols = list(columns)
    table_name = _split(table)[1]
    fold = dialect_name == "postgresql"

    def match(tok: Token) -> str | None:
        if tok.kind == "ident":
            name = tok.value.lower() if fold else tok.value
            for c in cols:
                if (c == name) if fold else (c.lower() == name.lower()):
                    return c
        elif tok.kind == "qident":
            for c in cols:
                if (c == tok.value) if fold else (c.lower() == tok.value.lower()):
                    return c
        return None

    def is_table(tok: Token) -> bool:
        if tok.kind == "ident":
            return (tok.value.lower() == table_name) if fold else tok.value.lower() == table_name.lower()
        if tok.kind == "qident":
            return tok.value == table_name if fold else tok.value.lower() == table_name.lower()
        return False

    sig = [i for i, t in enumerate(tokens) if t.kind not in ("space", "comment")]

    def at(k: int) -> Token | None:
        return tokens[sig[k]] if 0 <= k < len(sig) else None

    def word(tok: Token | None) -> str:
        return tok.value.upper() if tok is not None and tok.kind == "ident" else ""

    refs: list[ColumnRef] = []
    depth = 0
    interval_at: dict[int, int] = {}  # paren depth -> index (in sig) of an INTERVAL still waiting for its unit
    skip_until = -1
    for k, ti in enumerate(sig):
        tok = tokens[ti]
        if tok.kind == "op":
            depth += tok.text == "("
            if tok.text == ")":
                interval_at.pop(depth, None)
                depth -= 1
            continue
        if k <= skip_until or tok.kind not in ("ident", "qident"):
            continue
        prev, nxt = at(k - 1), at(k + 1)
        if tok.kind == "ident":
            w = tok.value.upper()
            if w == "INTERVAL":
                interval_at[depth] = k
                continue
            if w in _UNITS:
                pending = interval_at.get(depth)
                if (word(nxt) == "FROM" or (pending is not None and k > pending + 1)
                        or (prev is not None and prev.text == "(" and word(at(k - 2)) in _UNIT_FUNCS)):
                    interval_at.pop(depth, None)
                    continue
            if ti + 1 < len(tokens) and tokens[ti + 1].kind == "str":
                continue  # introducer: _utf8mb4'x', N'x', E'x', X'ff'
        if prev is not None and prev.kind == "op" and prev.text in ".:":
            continue  # qualified member, or the type after ::
        if word(prev) in _NAME_AFTER or (word(prev) == "SET" and word(at(k - 2)) == "CHARACTER"):
            continue
        if nxt is not None and nxt.kind == "op" and nxt.text == "(":
            continue  # a function
        if nxt is not None and nxt.kind == "op" and nxt.text == "." and is_table(tok):
            member = at(k + 2)
            col = match(member) if member is not None else None
            nn = at(k + 3)
            if col is not None and not (nn is not None and nn.kind == "op" and nn.text == "("):
                refs.append(ColumnRef(ti, sig[k + 2], col))
                skip_until = k + 2
            continue
        if nxt is not None and nxt.kind == "op" and nxt.text == ".":
            continue  # a qualifier of something else (schema.function, other_table.column)
        col = match(tok)
        if col is not None:
            refs.append(ColumnRef(ti, ti, col))
    return refs


def referenced_columns(sql: str, dialect_name: str, columns: Iterable[str], table: str) -> list[str]:
    """The table's columns the SQL text references, each once, in order of first appearance."""
    refs = column_refs(tokenize(sql, dialect_name), dialect_name, columns, table)
    return list(dict.fromkeys(r.column for r in refs))


def rewrite_columns(sql: str, dialect_name: str, columns: Iterable[str], table: str, prefix: str) -> str:
    """The SQL with every column reference replaced by prefix.`column` (prefix NEW or OLD)."""
    q = _Quote(dialect_name)
    tokens = tokenize(sql, dialect_name)
    refs = {r.first: r for r in column_refs(tokens, dialect_name, columns, table)}
    out: list[str] = []
    i = 0
    while i < len(tokens):
        ref = refs.get(i)
        if ref is not None:
            out.append(f"{prefix}.{q(ref.column)}")
            i = ref.last + 1
        else:
            out.append(tokens[i].text)
            i += 1
    return "".join(out)


# ------------------------------------------------------------------------------------------ builders


def _table_columns(columns: Mapping[str, Any] | Iterable[str]) -> dict[str, Column | None]:
    """Column name -> Column (None where its type is unknown), from names, name -> declared type, or
    TableInfo.columns."""
    if isinstance(columns, Mapping):
        out: dict[str, Column | None] = {}
        for name, v in columns.items():
            out[name] = v if isinstance(v, Column) else Column(name, v, True) if v else None
        return out
    return dict.fromkeys(columns)


def _no_comments(sql: str, dialect_name: str) -> str:
    try:
        tokens = tokenize(sql, dialect_name)
    except ValueError:
        return sql  # _check reports it
    return "".join(" " if t.kind == "comment" else t.text for t in tokens).strip()


def _check(dialect_name: str, table: str, types: Mapping[str, Any], key: Sequence[str], exprs: Mapping[str, str],
           where: str | None) -> None:
    if not exprs:
        raise SchemaError("sync triggers need at least one target")
    if types:
        lower = {c.lower(): c for c in types}
        for target in exprs:
            if target not in types and (dialect_name == "postgresql" or target.lower() not in lower):
                raise SchemaError(f"target column {target!r} does not exist in table {table!r}")
        for col in key:
            if col not in types:
                raise SchemaError(f"key column {col!r} does not exist in table {table!r}")
    for target, expr in exprs.items():
        try:
            reads = referenced_columns(expr, dialect_name, list(types) or list(exprs), table)
        except ValueError as exc:
            raise SchemaError(f"target {target!r}: cannot read the expression: {exc}") from None
        wrong = [c for c in reads if c in exprs or c.lower() in {t.lower() for t in exprs}]
        if wrong:
            raise SchemaError(f"target {target!r}: its expression reads target column {wrong[0]!r}; a sync "
                              "trigger cannot keep an expression over another target (the result would depend "
                              "on the order the targets are written). Derive every target from source columns")
    if where is not None:
        try:
            tokenize(where, dialect_name)
        except ValueError as exc:
            raise SchemaError(f"where: cannot read the filter: {exc}") from None


def build_install_sql(dialect_name: str, table: str, columns: Mapping[str, Any] | Iterable[str],
                      key: Sequence[str], exprs: Mapping[str, str], where: str | None, overwrite: bool,
                      job_name: str, *, mariadb: bool = False) -> list[str]:
    """The statements that (re)create a job's sync triggers, in order. Pure: no database needed.

    columns: the table's columns, as names, name -> declared type, or TableInfo.columns. MySQL needs them to
    rewrite expressions (and the types to compare strings exactly); SQLite to read OLD; PostgreSQL only checks
    the targets against them. key: the columns SQLite finds the row by (rowid when empty); unused elsewhere.
    mariadb: use MariaDB's atomic CREATE OR REPLACE TRIGGER instead of DROP + CREATE.
    """
    types = _table_columns(columns)
    # a line comment inside an expression would swallow what the trigger writes after it on the line
    exprs = {t: _no_comments(e, dialect_name) for t, e in exprs.items()}
    where = _no_comments(where, dialect_name) if where is not None else None
    if dialect_name in ("mysql", "sqlite") and not types:
        raise SchemaError(f"{dialect_name} sync triggers need the table's columns")
    _check(dialect_name, table, types, key, exprs, where)
    names = trigger_names(table, job_name)
    if dialect_name == "postgresql":
        return _pg_install(table, types, dict(exprs), where, overwrite, names)
    if dialect_name == "mysql":
        return _mysql_install(table, types, dict(exprs), where, overwrite, names, mariadb)
    if dialect_name == "sqlite":
        return _sqlite_install(table, types, list(key), dict(exprs), where, overwrite, names)
    raise ValueError(f"unknown dialect {dialect_name!r}")


def build_remove_sql(dialect_name: str, table: str, job_name: str, *, table_exists: bool = True) -> list[str]:
    """The statements that drop a job's sync triggers (and PostgreSQL's function); each is IF EXISTS."""
    q = _Quote(dialect_name)
    names = trigger_names(table, job_name)
    if dialect_name == "postgresql":
        out = [f"DROP TRIGGER IF EXISTS {q(n)} ON {q.table(table)}" for n in (names.insert, names.update)]
        return (out if table_exists else []) + [f"DROP FUNCTION IF EXISTS {q.in_schema(table, names.function)}()"]
    return [f"DROP TRIGGER IF EXISTS {q.in_schema(table, n)}" for n in (names.insert, names.update)]


# --- PostgreSQL: BEFORE triggers calling one plpgsql function that evaluates over (SELECT NEW.*)


def _dollar_tag(*texts: str | None) -> str:
    tag, n = "$bf$", 0
    while any(t and tag in t for t in texts):
        n += 1
        tag = f"$bf{n}$"
    return tag


def _pg_install(table: str, types: dict[str, Column | None], exprs: dict[str, str], where: str | None,
                overwrite: bool, names: TriggerNames) -> list[str]:
    q = _Quote("postgresql")
    same = q.dialect.same
    t = q.table(table)
    alias = q(_split(table)[1])  # so that table.column in an expression still resolves
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
    fn = q.in_schema(table, names.function)
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


# --- MySQL / MariaDB: BEFORE triggers assigning NEW, expressions rewritten to NEW.`col` / OLD.`col`

def _mysql_install(table: str, types: dict[str, Column | None], exprs: dict[str, str], where: str | None,
                   overwrite: bool, names: TriggerNames, mariadb: bool) -> list[str]:
    q = _Quote("mysql")
    d = q.dialect
    t = q.table(table)
    cols = list(types)
    canon = {c.lower(): c for c in cols}
    targets = {tg: canon.get(tg.lower(), tg) for tg in exprs}

    def new(sql: str) -> str:
        return rewrite_columns(sql, "mysql", cols, table, "NEW")

    def old(sql: str) -> str:
        return rewrite_columns(sql, "mysql", cols, table, "OLD")

    def body(event: str) -> str:
        lines: list[str] = []
        for tg, expr in exprs.items():
            c = q(targets[tg])
            if overwrite:
                lines.append(f"SET NEW.{c} = ({new(expr)});")
                continue
            lines.append(f"IF NEW.{c} IS NULL THEN")
            lines.append(f"  SET NEW.{c} = ({new(expr)});")
            sources = referenced_columns(expr, "mysql", cols, table)
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

    create = "CREATE OR REPLACE TRIGGER" if mariadb else "CREATE TRIGGER"
    out = [] if mariadb else [f"DROP TRIGGER IF EXISTS {q.in_schema(table, n)}" for n in (names.insert, names.update)]
    for name, event in ((names.insert, "INSERT"), (names.update, "UPDATE")):
        out.append(f"{create} {q.in_schema(table, name)} BEFORE {event} ON {t} FOR EACH ROW\n{body(event)}")
    return out


# --- SQLite: AFTER triggers updating the row just written, found by its key

def _sqlite_install(table: str, types: dict[str, Column | None], key: list[str], exprs: dict[str, str],
                    where: str | None, overwrite: bool, names: TriggerNames) -> list[str]:
    q = _Quote("sqlite")
    d = q.dialect
    by_lower = {c.lower(): col for c, col in types.items()}   # SQLite's column names ignore case
    col = {tg: types.get(tg) or by_lower.get(tg.lower()) for tg in exprs}
    _, bare = _split(table)
    t = q(bare)  # statements inside a SQLite trigger may not name the schema; the trigger lives in it
    match_row = " AND ".join(f"{q(k)} = NEW.{q(k)}" for k in key) if key else "rowid = NEW.rowid"
    filt = f" AND ({where})" if where else ""
    # the OLD row as a derived table with the table's column names: expressions read it unchanged
    old_row = "SELECT " + ", ".join(f"OLD.{q(c)} AS {q(c)}" for c in types)

    def old_value(expr: str) -> str:
        return f"(SELECT ({expr}) FROM ({old_row}) AS {t})"

    def create(name: str, event: str, when: str | None, sets: list[str], need: list[str]) -> str:
        when_sql = f"\nWHEN {when}" if when else ""
        return (f"CREATE TRIGGER {q.in_schema(table, name)} AFTER {event} ON {t} FOR EACH ROW{when_sql}\nBEGIN\n"
                f"  UPDATE {t} SET {', '.join(sets)}\n  WHERE {match_row}{filt}\n"
                f"    AND ({' OR '.join(need)});\nEND")

    drops = [f"DROP TRIGGER IF EXISTS {q.in_schema(table, n)}" for n in (names.insert, names.update)]
    if overwrite:
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


# ------------------------------------------------------------------------------------------ engine operations


async def _mysql_flavor(engine: Engine) -> bool:
    rows = await engine.fetch("SELECT VERSION()")
    return "mariadb" in str(rows[0][0]).lower()


async def _run_ddl(engine: Engine, stmts: list[str]) -> None:
    if engine.name == "mysql":
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
        return
    # PostgreSQL and SQLite: transactional DDL, so replacing the triggers is atomic (no write goes uncovered);
    # PostgreSQL's lock_timeout (set per connection) bounds the wait for the table's lock.
    async with engine.transaction():
        for s in stmts:
            await engine.execute(s)


async def install(engine: Engine, table: str, key: Sequence[str] | None, exprs: Mapping[str, str],
                  where: str | None, overwrite: bool, job_name: str) -> list[str]:
    """(Re)create the job's sync triggers; returns the statements run. Idempotent.

    key: the job's key (SQLite finds the written row by it); None or empty for the primary key (rowid when
    the table has none).
    """
    info = await engine.table_info(table)
    key = list(key or info.primary_key)
    mariadb = engine.name == "mysql" and await _mysql_flavor(engine)
    stmts = build_install_sql(engine.name, table, info.columns, key, exprs, where, overwrite, job_name,
                              mariadb=mariadb)
    await _run_ddl(engine, stmts)
    return stmts


async def _table_exists(engine: Engine, table: str) -> bool:
    try:
        await engine.table_info(table)
    except SchemaError:
        return False
    return True


async def remove(engine: Engine, table: str, job_name: str) -> list[str]:
    """Drop the job's sync triggers (and PostgreSQL's function); returns the statements run. Idempotent."""
    exists = engine.name != "postgresql" or await _table_exists(engine, table)
    stmts = build_remove_sql(engine.name, table, job_name, table_exists=exists)
    await _run_ddl(engine, stmts)
    return stmts


async def installed(engine: Engine, table: str, job_name: str) -> bool:
    """Whether both of the job's triggers exist on the table (not whether they match the current spec)."""
    names = trigger_names(table, job_name)
    schema, bare = _split(table)
    d = engine.dialect
    order: list[str] = []

    def p(name: str) -> str:
        order.append(name)
        return d.placeholder(len(order))

    values = {"table": bare, "schema": schema, "qualified": d.table(table), "ins": names.insert,
              "upd": names.update}
    if engine.name == "postgresql":
        sql = (f"SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass({p('qualified')}) AND NOT tgisinternal "
               f"AND tgname IN ({p('ins')}, {p('upd')})")
    elif engine.name == "mysql":
        sql = (f"SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = "
               f"COALESCE({p('schema')}, DATABASE()) AND EVENT_OBJECT_TABLE = {p('table')} "
               f"AND TRIGGER_NAME IN ({p('ins')}, {p('upd')})")
    else:
        master = f"{d.quote(schema)}.sqlite_master" if schema else "sqlite_master"
        sql = (f"SELECT name FROM {master} WHERE type = 'trigger' AND tbl_name = {p('table')} COLLATE NOCASE "
               f"AND name IN ({p('ins')}, {p('upd')})")
    rows = await engine.fetch(Stmt(d.finish(sql), tuple(order)), values)
    return {r[0] for r in rows} == {names.insert, names.update}


__all__ = ["TriggerNames", "build_install_sql", "build_remove_sql", "column_refs", "install", "installed",
           "referenced_columns", "remove", "rewrite_columns", "tokenize", "trigger_names"]
