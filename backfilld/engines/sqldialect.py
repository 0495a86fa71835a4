"""How one engine spells the parts of a statement that differ: quoting, placeholders, row comparison, and
the one exact comparison (Dialect.same and its kin) every guard, verify and trigger compares values with.

Owns: Stmt (SQL text and its parameters' names), _Params (placeholders in binding order), operand, Dialect.
Each engine package subclasses Dialect; the statements built over it live in statements.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backfilld.engines.catalog import Column

if TYPE_CHECKING:
    from backfilld.engines.triggers import Triggers


@dataclass(frozen=True)
class Stmt:
    """SQL text with its parameters named in the order the driver binds them."""

    sql: str
    names: tuple[str, ...] = ()

    def args(self, values: dict[str, Any]) -> list[Any]:
        return [values[n] for n in self.names]


class _Params:
    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.names: list[str] = []

    def __call__(self, name: str) -> str:
        self.names.append(name)
        return self.dialect.placeholder(len(self.names))


# One operand as it stands: a name (qualified, quoted), a placeholder (MySQL's marker too), or a function call
_NAME = r'(?:[A-Za-z_][\w$]*|"(?:[^"]|"")*"|`(?:[^`]|``)*`)'
_OPERAND = re.compile(rf"{_NAME}(?:\.{_NAME})*|\$\d+|\?|\x00p\x00")
_CALL = re.compile(rf"{_NAME}\s*\(")


def operand(expr: str) -> str:
    """expr as one operand of an operator that binds tighter than anything in it (COLLATE, ::): as it is when it
    already is one (a name, a placeholder, a function call, or wholly in parentheses), else in parentheses."""
    if _OPERAND.fullmatch(expr):
        return expr
    m = _CALL.match(expr)
    start = m.end() - 1 if m else 0
    # what the scan below does not read (a backslash that may or may not escape a quote, comments, dollar
    # quotes): wrapped, as extra parentheses never change a meaning
    plain = not any(mark in expr for mark in ("\\", "--", "/*", "#", "$"))
    if plain and expr[start:start + 1] == "(" and _closing(expr, start) == len(expr) - 1:
        return expr
    return f"({expr})"


def _closing(sql: str, i: int) -> int:
    """Where the parenthesis opened at sql[i] closes (-1: nowhere); quoted text and names are skipped."""
    depth, quote = 0, ""
    for j in range(i, len(sql)):
        ch = sql[j]
        if quote:
            quote = "" if ch == quote else quote   # a doubled quote closes and reopens: the same result
        elif ch in "'\"`":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return j
    return -1


@dataclass(frozen=True)
class Lexicon:
    """How one engine's SQL text splits into tokens (engines/sqltext.py), as far as telling a column reference
    from everything else needs; the defaults are standard SQL."""

    string_quotes: str = "'"   # the characters that open (and close) a string literal
    backslash_escapes: bool = False   # a backslash escapes the next character in every string (MySQL)
    escape_strings: bool = False   # E'...' strings take backslash escapes (PostgreSQL)
    dollar_quotes: bool = False   # $tag$...$tag$ strings and $1 parameters (PostgreSQL)
    ident_quotes: tuple[str, ...] = ('""',)   # identifier quotes, each its opening and its closing character
    hash_comments: bool = False   # '#' opens a line comment (MySQL)
    dash_comment_space: bool = False   # '--' opens a comment only before whitespace (MySQL)
    # sqlglot's name for the engine's dialect, which parses a job's SQL in its slot (engines/slots.py); None:
    # the lexical checks alone
    parser: str | None = None


class Dialect:
    """How one engine spells the parts of a statement that differ."""

    name = "base"
    quote_char = '"'
    # MySQL writes row comparisons out: its optimizer does not always use an index for (a, b) > (x, y).
    row_values = True
    # Column names that differ only in case name the same column (MySQL, SQLite; PostgreSQL's quoted names do not).
    # False: names are case-sensitive, and unquoted ones are folded to lower case (PostgreSQL).
    fold_case = False
    lexicon = Lexicon()
    # How a batch locks its rows without waiting for any the application holds (None: the engine has no row
    # locks, SQLite), and whether that locking read can sit inside the batch's UPDATE as a subquery (PostgreSQL)
    # or must run as a statement of its own before it (MySQL/MariaDB: an IN (subquery) on the table being
    # updated is turned into a join that locks, and waits for, every row of the range).
    skip_locked_clause: str | None = None
    lock_inline = True
    # the state table's SQL types, by kind (state.COLUMNS), and what follows its CREATE TABLE
    state_types: dict[str, str] = {"name": "varchar(64)", "status": "varchar(16)", "count": "integer",
                                   "total": "bigint", "text": "text", "time": "varchar(40)"}
    state_table_options = ""
    # a separate locking read stops at the range's key count (LIMIT): it then does not read, and lock for a
    # moment, the row past the range's end, which the next batch in flight may be about to lock
    lock_limit = False

    def placeholder(self, n: int) -> str:
        return "?"

    def quote(self, ident: str) -> str:
        q = self.quote_char
        return q + ident.replace(q, q + q) + q

    def table(self, name: str) -> str:
        return ".".join(self.quote(p) for p in name.split("."))

    def in_schema(self, table: str, name: str) -> str:
        """The object `name` in the schema of table, quoted: triggers and their functions live beside their table."""
        schema = table.rpartition(".")[0]
        return f"{self.quote(schema)}.{self.quote(name)}" if schema else self.quote(name)

    # on_conflict_nothing's clause assigns the id column (to itself): the INSERT then needs UPDATE on it too
    conflict_updates_id = False

    def on_conflict_nothing(self, id_col: str, unique: Sequence[str]) -> str:
        """What follows an INSERT of lookup rows so that a row another session inserted meanwhile (a conflict on
        the unique index of `unique`) is left as it is, without an error; any other error still raises."""
        return f"ON CONFLICT ({', '.join(self.quote(c) for c in unique)}) DO NOTHING"

    def database_ddl(self, name: str) -> tuple[str, str]:
        """CREATE and DROP (IF EXISTS, whoever is connected) of a whole database: backfilld.testing's scratch
        databases, on a server engine."""
        raise NotImplementedError(f"{self.name} has no databases to create")

    def triggers(self) -> Triggers:
        """The engine's sync-trigger SQL and DDL (engines/<engine>/triggers.py, imported when first asked for)."""
        raise NotImplementedError(f"{self.name} has no sync triggers")

    # --- exact comparison: the one definition every guard, verify and trigger compares values with. "The same"
    # is null-safe (NULL is the same as NULL) and exact: byte for byte on text, whatever the column's collation
    # (case-insensitive, PAD SPACE, nondeterministic) or type (citext) would call equal.
    def exact(self, expr: str, column: Column | None) -> str:
        """expr in a form whose equality is identity for the column's values (see the engines' overrides).
        Here: expr itself, for a column whose own equality already is."""
        return expr

    def same(self, a: str, b: str, column: Column | None = None) -> str:
        """a and b are the same value of the column (null-safe, exact); column None: the engine's plain
        null-safe equality."""
        return f"{self.exact(a, column)} IS NOT DISTINCT FROM {self.exact(b, column)}"

    def differs(self, a: str, b: str, column: Column | None = None) -> str:
        """NOT same(a, b, column)."""
        return f"{self.exact(a, column)} IS DISTINCT FROM {self.exact(b, column)}"

    def holds(self, stored: str, expr: str, column: Column | None) -> str:
        """The stored value is exactly what writing expr into the column would store."""
        return self.same(stored, self.cast_to(expr, column), column)

    def stale(self, stored: str, expr: str, column: Column | None) -> str:
        """NOT holds: the stored value is not what writing expr would store (a target verify counts wrong and
        overwrite rewrites)."""
        return self.differs(stored, self.cast_to(expr, column), column)

    def cast_to(self, expr: str, column: Column | None) -> str:
        """expr as the column would store it, so that a stored value compares equal to what was written
        (numeric(10,2) rounds x / 3.0; a TEXT column holds 10 as '10')."""
        return f"CAST({expr} AS {column.type})" if column is not None and column.type else expr

    def finish(self, sql: str) -> str:
        """Last touch on a statement's text before it is sent (MySQL escapes % for its driver)."""
        return sql

    def as_read(self, expr: str, column: Column | None) -> str:
        """How verify reads a target's value and the value it should hold, to compare and bind back (a
        PostgreSQL value as its text: every value has one, where the driver cannot hold a BC date or 24:00);
        same(as_read(x, column), the value read, column) is exact."""
        return expr

    def has_max(self, column: Column | None) -> bool:
        """Whether max() takes the column's type (a pass's last range is then found without a sort)."""
        return True

    def key_value(self, col: str, column: Column | None) -> str:
        """How a key column is read, so that the value read binds back as one that compares equal and in the
        key's order (MySQL reads BIT, ENUM and SET keys as numbers)."""
        return self.quote(col)

    def row_cmp(self, cols: Sequence[str], op: str, p: _Params, prefix: str) -> str:
        """(cols) op (params), op one of > or <=."""
        qcols = [self.quote(c) for c in cols]
        if len(cols) == 1:
            return f"{qcols[0]} {op} {p(prefix + '0')}"
        if self.row_values:
            return f"({', '.join(qcols)}) {op} ({', '.join(p(f'{prefix}{i}') for i in range(len(cols)))})"
        # a > x OR (a = x AND b > y) ...; the last column takes op, earlier ones strict
        strict = ">" if op == ">" else "<"
        ors = []
        for i in range(len(cols)):
            parts = [f"{qcols[j]} = {p(f'{prefix}{j}')}" for j in range(i)]
            last_op = op if i == len(cols) - 1 else strict
            parts.append(f"{qcols[i]} {last_op} {p(f'{prefix}{i}')}")
            ors.append("(" + " AND ".join(parts) + ")")
        return "(" + " OR ".join(ors) + ")"

