"""A job's SQL in its slot: whether its filter and each expression is one expression that stays where backfilld
puts it in its own statements (`SET t = (expr)`, `AND (where)`).

Owns: slot_check (both gates and their verdict, Slot), the parsed gate (parsed_problem). Delegates the first,
lexical gate to engines/sqltext.slot_problem (the engine's own quotes, comments and escapes, as the triggers read
them) and parsing to sqlglot in the engine's dialect (Lexicon.parser), imported the first time a slot is checked.
Both gates must pass. Where sqlglot cannot parse text the lexical gate passed, the lexical verdict stands
(Slot.unparsed says why, for a log line): sqlglot's grammars are not the servers', and a valid expression
(say, an operator or function sqlglot does not know) must not stop a job; the server then parses it at preflight
(check_expressions), inside the parentheses the lexical gate proved it cannot close.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backfilld.engines.sqltext import as_dialect, slot_problem

if TYPE_CHECKING:
    from backfilld.engines.base import Dialect


@dataclass(frozen=True)
class Slot:
    """A slot's verdict: problem is why the text is refused (None: accepted); unparsed is why sqlglot could
    not parse text the lexical gate accepted (None: it parsed, or the engine has no parser)."""

    problem: str | None
    unparsed: str | None = None


def slot_check(sql: str, dialect: Dialect | str, *, condition: bool) -> Slot:
    """The lexical gate, then the parsed one: refused by either is refused."""
    d = as_dialect(dialect)
    problem = slot_problem(sql, d, condition=condition)
    if problem is not None or d.lexicon.parser is None:
        return Slot(problem)
    try:
        return Slot(parsed_problem(sql, d.lexicon.parser, condition=condition))
    except Unparsed as exc:
        return Slot(None, str(exc))


class Unparsed(Exception):
    """sqlglot could not parse the text (its first line of error)."""


_sqlglot: Any = None


def _parser() -> Any:
    global _sqlglot
    if _sqlglot is None:
        import sqlglot  # the first slot checked pays for it (0.29 s here, import and first parse); status never

        # sqlglot logs a warning (through the root logger, as plain text on stderr) whenever it falls back to
        # reading a statement as an opaque Command; such a fallback is refused here, and stderr is JSON lines
        logging.getLogger("sqlglot").setLevel(logging.ERROR)
        _sqlglot = sqlglot
    return _sqlglot


def parsed_problem(sql: str, parser: str, *, condition: bool) -> str | None:
    """Why the text, parsed in sqlglot's dialect `parser`, is not one scalar expression (a condition where
    `condition`) that writes nothing, or None; Unparsed when sqlglot cannot parse it.

    The text is parsed where backfilld puts it, in parentheses (`SELECT (text)`): read alone, a function that
    shares a statement's name (MySQL's replace()) would parse as that statement. Call it only on text the
    lexical gate accepted, which cannot close those parentheses."""
    sqlglot = _parser()
    from sqlglot import exp
    from sqlglot.errors import ParseError, TokenError

    try:
        [tree] = sqlglot.parse(f"SELECT ({sql})", read=parser)
    except (ParseError, TokenError) as exc:
        why = _statement(sql, parser, exp)
        if why:
            return why
        raise Unparsed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    if not isinstance(tree, exp.Select) or len(tree.expressions) != 1:
        raise Unparsed("not read as one expression in parentheses")
    writes = _writes(tree, exp)
    if writes:
        return writes
    value = tree.expressions[0].this   # inside the slot's own parentheses, and any the text adds
    while isinstance(value, exp.Paren | exp.Subquery):
        value = value.this
    if isinstance(value, exp.Query):   # a bare SELECT: the slot's parentheses make it a scalar subquery
        if isinstance(value, exp.Select) and len(value.expressions) > 1:
            return f"is a subquery of {len(value.expressions)} columns; a slot takes one value: select one column"
        return None
    if isinstance(value, exp.Tuple | exp.Star):
        return "is a list of values; a slot takes one value"
    if isinstance(value, exp.Alias):
        # `x AS y` the server refuses in parentheses, and a word sqlglot does not know reads as an alias too
        # (PostgreSQL's `name IS NFC NORMALIZED`): unparsed, unless it is a statement (TRUNCATE t)
        why = _statement(sql, parser, exp)
        if why:
            return why
        raise Unparsed(f"read as {value.alias!r} naming a value, which the grammar may not know")
    if condition and isinstance(value, _not_conditions(exp)):
        return ("is a value, not a condition (true or false for a row): write a comparison, e.g. "
                f"({sql.strip()}) <> 0")
    return None


def _statement(sql: str, parser: str, exp: Any) -> str | None:
    """Why text that does not parse as an expression is refused, where it parses as a statement (DELETE ...,
    SET ...): said as such. None: it parses as nothing, or as something that writes nothing."""
    try:
        trees = [t for t in _parser().parse(sql, read=parser) if t is not None]
    except Exception:  # noqa: BLE001 - sqlglot's own errors; the caller reports the first parse's
        return None
    return _writes(trees[0], exp) if len(trees) == 1 else None


def _writes(tree: Any, exp: Any) -> str | None:
    """What in the tree would write or run a statement of its own (a data-modifying CTE, SELECT ... INTO, an
    assignment to a variable, a statement sqlglot kept as an opaque Command), or None."""
    statements = (exp.Command, exp.Set, exp.Use, exp.Transaction, exp.Commit, exp.Rollback, exp.Pragma, exp.Grant,
                  exp.Revoke)
    for node in tree.walk():
        if isinstance(node, exp.DML | exp.DDL | exp.Drop | exp.Alter | exp.TruncateTable):
            what = "TRUNCATE" if isinstance(node, exp.TruncateTable) else node.key.upper()
            return f"holds a statement that writes ({what}); a slot takes one expression that only reads"
        if isinstance(node, exp.Into):
            return "holds SELECT ... INTO, which writes; a slot takes one expression that only reads"
        # MySQL's @x := value sets a variable; PostgreSQL's f(name := value) names an argument, and stays
        if isinstance(node, exp.PropertyEQ) and isinstance(node.this, exp.Parameter | exp.SessionParameter):
            return "holds an assignment to a variable (:=); a slot takes one expression that only reads"
        if isinstance(node, statements):
            return "holds a statement, not an expression; write one expression"
    return None


def _not_conditions(exp: Any) -> tuple[type, ...]:
    # what computes a number or a text, never true or false: MySQL and SQLite would take it as a condition (a
    # non-zero number is true; a text is cast, 'abc' being 0), which is a mistake more often than it is meant
    return (exp.Literal, exp.Add, exp.Sub, exp.Mul, exp.Div, exp.IntDiv, exp.Mod, exp.DPipe, exp.Concat,
            exp.Interval)


__all__ = ["Slot", "Unparsed", "parsed_problem", "slot_check"]
