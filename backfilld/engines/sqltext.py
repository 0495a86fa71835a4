"""SQL text as tokens: where user SQL (a job's expressions and filter) references a table's columns.

Owns: the tokenizer (tokenize), finding column references in it (column_refs, referenced_columns) and rewriting
them (rewrite_columns), for sync triggers that must evaluate an expression over NEW or OLD; and the lexical slot
check (slot_problem), the first of engines/slots.py's two gates. Delegates each engine's lexical rules (its
quotes, comments, escapes, how it folds names) to its Dialect (Dialect.lexicon, Dialect.fold_case) and its
quoting to Dialect.quote; knows no engine by name.

sqlglot (engines/slots.py) parses the same text but does not replace this: it reads past a trailing line
comment the slot check must refuse, and it cannot parse some valid SQL (see slots.py), for which the triggers
would still need these column references; on every expression the tests write it finds the same columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backfilld.engines import dialect as named_dialect

if TYPE_CHECKING:
    from backfilld.engines.base import Dialect


def as_dialect(dialect: Dialect | str) -> Dialect:
    """The dialect itself, or the one of the engine so named (as in config: "postgresql", "mysql", "sqlite")."""
    return named_dialect(dialect) if isinstance(dialect, str) else dialect


def split_table(table: str) -> tuple[str | None, str]:
    """A table's schema (None when unqualified) and its own name."""
    schema, _, name = table.rpartition(".")
    return schema or None, name


@dataclass(frozen=True)
class Token:
    kind: str  # ident, qident, str, num, var, comment, space, op
    text: str
    value: str = ""  # ident: as written; qident: the name inside the quotes


def _is_ident_start(ch: str) -> bool:
    return ch == "_" or ch.isalpha()


def _is_ident_char(ch: str) -> bool:
    return ch in "_$" or ch.isalnum()


def tokenize(sql: str, dialect: Dialect | str) -> list[Token]:  # noqa: C901 - one branch per token kind, in order
    """Split SQL text into tokens that concatenate back to it exactly, by the dialect's lexical rules."""
    lex = as_dialect(dialect).lexicon
    strings, backslash = lex.string_quotes, lex.backslash_escapes
    idents = {pair[0]: pair[1] for pair in lex.ident_quotes}
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
        elif (sql.startswith("--", i) and not (lex.dash_comment_space and i + 2 < n and not sql[i + 2].isspace())
              or (lex.hash_comments and ch == "#")):
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
            # E'...' strings take backslash escapes; the E is lexed as an ident before it
            esc = backslash or (lex.escape_strings and bool(out) and out[-1].kind == "ident"
                                and out[-1].value.upper() == "E")
            j = quoted(i, ch, esc)
            out.append(Token("str", sql[i:j]))
            i = j
        elif ch in idents:
            j = quoted(i, idents[ch], False)
            close = idents[ch]
            out.append(Token("qident", sql[i:j], sql[i + 1:j - 1].replace(close * 2, close)))
            i = j
        elif ch == "$" and lex.dollar_quotes:
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


def column_refs(tokens: Sequence[Token], dialect: Dialect | str, columns: Iterable[str],  # noqa: C901 - see below
                table: str) -> list[ColumnRef]:
    """Where the tokens reference a column of the table.

    A reference is an identifier (bare or quoted) naming a column, or table.column with the table's own
    unqualified name. Not references: string literals, comments, anything after a '.' (a qualified member),
    a name followed by '(' (a function), charset introducers (_utf8mb4'x', N'x'), variables (@x, $1), the
    word after AS / USING / COLLATE / '::' (a type, charset or collation), and a date unit where SQL puts
    one (EXTRACT(YEAR FROM d), INTERVAL n DAY, TIMESTAMPDIFF(DAY, a, b)). Unquoted names match columns
    case-insensitively, except where the dialect's names are case-sensitive (not Dialect.fold_case: PostgreSQL),
    which folds them to lower case; quoted names match exactly there (MySQL and SQLite column names are
    case-insensitive even when quoted).
    """
    cols = list(columns)
    table_name = split_table(table)[1]
    fold = not as_dialect(dialect).fold_case

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


def referenced_columns(sql: str, dialect: Dialect | str, columns: Iterable[str], table: str) -> list[str]:
    """The table's columns the SQL text references, each once, in order of first appearance."""
    d = as_dialect(dialect)
    refs = column_refs(tokenize(sql, d), d, columns, table)
    return list(dict.fromkeys(r.column for r in refs))


def rewrite_columns(sql: str, dialect: Dialect | str, columns: Iterable[str], table: str, prefix: str) -> str:
    """The SQL with every column reference replaced by prefix.`column` (prefix NEW or OLD)."""
    d = as_dialect(dialect)
    tokens = tokenize(sql, d)
    refs = {r.first: r for r in column_refs(tokens, d, columns, table)}
    out: list[str] = []
    i = 0
    while i < len(tokens):
        ref = refs.get(i)
        if ref is not None:
            out.append(f"{prefix}.{d.quote(ref.column)}")
            i = ref.last + 1
        else:
            out.append(tokens[i].text)
            i += 1
    return "".join(out)


__all__ = ["ColumnRef", "Token", "as_dialect", "column_refs", "referenced_columns", "rewrite_columns", "split_table",
           "tokenize"]


def slot_problem(sql: str, dialect: Dialect | str, *, condition: bool) -> str | None:
    """Why `sql` is not one expression that stays in its slot of a statement, or None. backfilld puts a job's
    expressions and filter in parentheses inside its own statements (`SET t = (expr)`, `AND (where)`); text that
    closes them early, adds an assignment or a second statement, or hides the rest of the statement in a comment
    would change what the statement does (write past the filter, write a source column), so it is refused."""
    what = "a condition" if condition else "an expression"
    try:
        tokens = tokenize(sql, dialect)
    except ValueError as exc:
        return str(exc)
    depth = 0
    for t in tokens:
        if t.kind == "comment":
            if t.text.startswith("/*!"):
                return "holds a MySQL executable comment (/*! ... */): write the SQL itself"
            if not t.text.startswith("/*"):
                return f"holds a line comment ({t.text[:2]}...), which would hide the rest of the statement; use /* */"
        if t.kind != "op":
            continue
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth -= 1
            if depth < 0:
                return ("closes a parenthesis it did not open, which would end its place in the statement early; "
                        f"write one {what.split()[-1]}")
        elif t.text == ";":
            return "holds ';' (a second statement)"
        elif t.text == "," and depth == 0:
            return (f"holds a ',' outside parentheses: write one {what.split()[-1]}"
                    + ("" if condition else " (a comma would add an assignment to another column)"))
    if depth > 0:
        return "leaves a parenthesis open"
    return None
