"""The engine protocol, the SQL dialect and the pure SQL builders every engine shares.

Owns: the shape of every statement backfilld runs against a job's table and its state table, written once
over a Dialect (quoting, placeholders, row comparison, and the one exact comparison: Dialect.same and its
kin; its lexical rules, Dialect.lexicon, for engines/sqltext.py). Each engine package (postgresql, mysql,
sqlite) supplies its Dialect, its driver calls, its catalog queries, its error mapping and its sync triggers
(Dialect.triggers()); nothing above engines/ imports a driver or writes SQL.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import decimal
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backfilld import state
from backfilld.config import DatabaseURL
from backfilld.engines import Capabilities, capabilities
from backfilld.errors import EngineError, SchemaError
from backfilld.keys import Unrepresentable, decode_key, encode_key  # noqa: F401 - engines' and callers' names
from backfilld.state import JobState  # noqa: F401 - callers' name

if TYPE_CHECKING:
    from backfilld.engines.triggers import Triggers

# ------------------------------------------------------------------------------------------ dialect


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


# ------------------------------------------------------------------------------------------ builders


@dataclass(frozen=True)
class BatchPlan:
    """The statements of one job, built once, reused for every batch (drivers cache them prepared).

    SQL-expression jobs update in SQL; transform jobs read (read_*) and write computed rows instead.
    """

    lookup_first: Stmt
    lookup_after: Stmt
    skip_first: Stmt   # the n-th key alone (next_range)
    skip_after: Stmt
    key: tuple[str, ...]
    targets: tuple[str, ...]
    update_first: Stmt | None = None
    update_after: Stmt | None = None
    sample: Stmt | None = None
    any_pending: Stmt | None = None
    # single evaluation (fill jobs with one target): the expression computed once per row; see build_fill_once
    fill_once_first: Stmt | None = None
    fill_once_after: Stmt | None = None
    nulls_left_first: Stmt | None = None
    nulls_left_after: Stmt | None = None
    read_first: Stmt | None = None
    read_after: Stmt | None = None
    # SKIP LOCKED (see build_plan's lock): the rows of a range still needing a value after its batch, which the
    # application held locked; and, where the lock is its own statement (lock_inline False), the locking read of
    # a range's keys and the UPDATEs of locked keys (KeyedUpdate)
    left_first: Stmt | None = None
    left_after: Stmt | None = None
    lock_first: Stmt | None = None
    lock_after: Stmt | None = None
    keyed_update: KeyedUpdate | None = None
    keyed_fill_once: KeyedUpdate | None = None
    # MySQL, a one-column integer key: the locking read's keys in one row, as text (Engine.locked_keys)
    lock_list_first: Stmt | None = None
    lock_list_after: Stmt | None = None


# Keys per statement of a keyed UPDATE: a long IN list costs MySQL's range optimizer memory (past
# range_optimizer_max_mem_size it scans the table instead) and MariaDB turns one of 1000 values or more into
# a subquery (in_predicate_conversion_threshold); a batch's keys go in statements of at most this many.
KEYED_CHUNK = 500
KEYED_INLINE_CHUNK = 5000   # integer literals: no binding; still far within the range optimizer's memory


def chunks(keys: Sequence[Any], size: int = KEYED_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(keys), size):
        yield keys[i:i + size]


@dataclass(frozen=True)
class AppActivity:
    """One look at the application on the primary (backfilld's own sessions are never counted in it)."""

    active: int            # sessions running a statement now
    waiting: int           # of them, those waiting for a lock that a backfilld session holds
    longest_wait_s: float  # the longest of those waits so far; 0 when none waits


@dataclass(frozen=True)
class KeyedUpdate:
    """An UPDATE of the rows a locking read returned, by their keys: `head WHERE (key) IN (...) AND cond`."""

    head: str
    cond: str
    key: tuple[str, ...]
    # per key column, how a bound value is written ("{}" the placeholder): MySQL converts text to the column's
    # character set and collation, as the value read back must compare equal to its own row
    wrap: tuple[str, ...] = ()

    def stmt(self, d: Dialect, n: int) -> Stmt:
        p = _Params(d)
        wrap = self.wrap or ("{}",) * len(self.key)
        if len(self.key) == 1:
            keys = f"{d.quote(self.key[0])} IN ({', '.join(wrap[0].format(p(f'k{i}_0')) for i in range(n))})"
        else:
            tuples = ", ".join("(" + ", ".join(wrap[j].format(p(f"k{i}_{j}")) for j in range(len(self.key))) + ")"
                               for i in range(n))
            keys = f"({', '.join(d.quote(c) for c in self.key)}) IN ({tuples})"
        return Stmt(d.finish(f"{self.head} WHERE {keys} AND {self.cond}"), tuple(p.names))

    @staticmethod
    def values(keys: Sequence[Sequence[Any]]) -> dict[str, Any]:
        return {f"k{i}_{j}": v for i, row in enumerate(keys) for j, v in enumerate(row)}

    def statements(self, d: Dialect, keys: Sequence[Sequence[Any]]) -> Iterator[tuple[Stmt, dict[str, Any]]]:
        """The statements (and their values) that write these keys. A one-column key whose values are all
        integers (as the server returned them) is written into the text as literals, KEYED_INLINE_CHUNK a
        statement: binding each value cost the client about 10 us a row, more than the server's UPDATE."""
        if len(self.key) == 1 and all(type(k[0]) is int for k in keys):
            col = d.quote(self.key[0])
            for part in chunks(keys, KEYED_INLINE_CHUNK):
                listed = ", ".join(str(k[0]) for k in part)   # int's own text: digits and a sign, nothing else
                yield Stmt(d.finish(f"{self.head} WHERE {col} IN ({listed}) AND {self.cond}")), {}
            return
        for part in chunks(keys):
            yield self.stmt(d, len(part)), self.values(part)


Columns = Mapping[str, "Column"]


def key_values(d: Dialect, key: Sequence[str], columns: Columns | None) -> list[str]:
    """The select list of a key's values, as Dialect.key_value reads them."""
    columns = columns or {}
    return [d.key_value(c, columns.get(c)) for c in key]


def kept_sets(d: Dialect, columns: Columns | None, targets: Sequence[str], alias: str = "") -> list[str]:
    """`c = c` for each column the server itself would change in an UPDATE of other columns (MySQL's ON UPDATE
    CURRENT_TIMESTAMP): assigned its own value, it keeps it, so that only the targets change."""
    prefix = f"{alias}." if alias else ""
    return [f"{prefix}{d.quote(c)} = {prefix}{d.quote(c)}" for c, col in (columns or {}).items()
            if col.on_update and c not in targets]


def lookups(d: Dialect, table: str, key: Sequence[str], columns: Columns | None = None) -> dict[str, Any]:
    """A plan's range lookups: the n-th next key alone, and the last key and count of up to n next keys."""
    return {"skip_first": build_skip(d, table, key, after=False, columns=columns),
            "skip_after": build_skip(d, table, key, after=True, columns=columns),
            "lookup_first": build_lookup(d, table, key, after=False, columns=columns),
            "lookup_after": build_lookup(d, table, key, after=True, columns=columns)}


def build_skip(d: Dialect, table: str, key: Sequence[str], after: bool, columns: Columns | None = None) -> Stmt:
    """The key `skip` keys past the next one: the last key of a full batch, found by stepping along the key's
    index without the aggregate build_lookup needs (1.4x cheaper on PostgreSQL, 1.4-3x on MariaDB, 3x on
    SQLite, for 100,000 keys here). Nothing when fewer keys are left: build_lookup then finds the tail."""
    p = _Params(d)
    cols = ", ".join(d.quote(c) for c in key)
    where = f" WHERE {d.row_cmp(key, '>', p, 'lo')}" if after else ""
    sql = (f"SELECT {', '.join(key_values(d, key, columns))} FROM {d.table(table)}{where} ORDER BY {cols} "
           f"LIMIT 1 OFFSET {p('skip')}")
    return Stmt(d.finish(sql), tuple(p.names))


def build_lookup(d: Dialect, table: str, key: Sequence[str], after: bool, columns: Columns | None = None) -> Stmt:
    """The last key of the next batch and how many keys the batch holds, in one index range read.

    A single-column key takes max() and count() of the range (no sort); a composite key, which has no max,
    sorts the range's keys in reverse and counts them with a window.
    """
    p = _Params(d)
    where = f" WHERE {d.row_cmp(key, '>', p, 'lo')}" if after else ""
    asc = ", ".join(d.quote(c) for c in key)
    # a key read otherwise than as its column (Dialect.key_value) is named bf_k<i>, so that ORDER BY still
    # names the table's column
    values = key_values(d, key, columns)
    names = [v if v == d.quote(c) else f"bf_k{i}" for i, (c, v) in enumerate(zip(key, values, strict=True))]
    sel = ", ".join(v if v == n else f"{v} AS {n}" for v, n in zip(values, names, strict=True))
    inner = f"(SELECT {sel} FROM {d.table(table)}{where} ORDER BY {asc} LIMIT {p('n')}) AS bf_r"
    if len(key) == 1 and d.has_max((columns or {}).get(key[0])):
        sql = f"SELECT max({names[0]}), count(*) AS bf_n FROM {inner} HAVING count(*) > 0"
    else:
        desc = ", ".join(f"{n} DESC" for n in names)
        sql = f"SELECT {', '.join(names)}, count(*) OVER () AS bf_n FROM {inner} ORDER BY {desc} LIMIT 1"
    return Stmt(d.finish(sql), tuple(p.names))


def range_conds(d: Dialect, key: Sequence[str], p: _Params, where: str | None, after: bool) -> list[str]:
    """The conditions of a batch's rows: key in (lo, hi] (from the table's start when not after) and the filter."""
    conds = [d.row_cmp(key, ">", p, "lo")] if after else []
    conds.append(d.row_cmp(key, "<=", p, "hi"))
    if where:
        conds.append(f"({where})")
    return conds


def needs_fill(d: Dialect, exprs: dict[str, str], overwrite: bool, columns: Columns | None = None) -> str:
    """A row's targets are not yet what the job would write."""
    columns = columns or {}
    conds = []
    for target, expr in exprs.items():
        t = d.quote(target)
        conds.append(d.stale(t, f"({expr})", columns.get(target)) if overwrite
                     else f"({t} IS NULL AND ({expr}) IS NOT NULL)")
    return "(" + " OR ".join(conds) + ")"


def lock_cond(d: Dialect, targets: Sequence[str], exprs: dict[str, str], overwrite: bool,
              columns: Columns | None = None) -> str:
    """Which rows of a range a batch locks: those that may need a value (the UPDATE's own guard decides)."""
    if overwrite:
        return needs_fill(d, exprs, overwrite, dict(columns or {}))
    return "(" + " OR ".join(f"{d.quote(t)} IS NULL" for t in targets) + ")"


def locked_rows(d: Dialect, table: str, key: Sequence[str], p: _Params, where: str | None, after: bool,
                cond: str, clause: str) -> str:
    """`AND (key) IN (...)`: the rows of the range that the batch locked without waiting (SKIP LOCKED), in key
    order; a row the application holds is passed over, and left for a later pass (see build_leftover)."""
    cols = ", ".join(d.quote(c) for c in key)
    conds = [*range_conds(d, key, p, where, after), cond]
    inner = f"SELECT {cols} FROM {d.table(table)} WHERE {' AND '.join(conds)} ORDER BY {cols} {clause}"
    return f"({cols}) IN ({inner})" if len(key) > 1 else f"{cols} IN ({inner})"


def build_update(d: Dialect, table: str, key: Sequence[str], exprs: dict[str, str], where: str | None,
                 overwrite: bool, after: bool, columns: Columns | None = None, lock: str | None = None) -> Stmt:
    """Fill the targets of the rows in (lo, hi] that need it; a filled target is never overwritten. With lock
    (a SKIP LOCKED clause, on an engine whose lock_inline), only the rows it could lock without waiting."""
    p = _Params(d)
    conds = range_conds(d, key, p, where, after)
    conds.append(needs_fill(d, exprs, overwrite, columns))
    if lock:
        conds.append(locked_rows(d, table, key, p, where, after, lock_cond(d, list(exprs), exprs, overwrite, columns),
                                 lock))
    sql = f"{update_head(d, table, exprs, overwrite, columns)} WHERE {' AND '.join(conds)}"
    return Stmt(d.finish(sql), tuple(p.names))


def update_head(d: Dialect, table: str, exprs: dict[str, str], overwrite: bool, columns: Columns | None) -> str:
    sets = []
    for target, expr in exprs.items():
        t = d.quote(target)
        if overwrite or len(exprs) == 1:
            sets.append(f"{t} = ({expr})")
        else:
            sets.append(f"{t} = COALESCE({t}, ({expr}))")
    sets += kept_sets(d, columns, list(exprs))
    return f"UPDATE {d.table(table)} SET {', '.join(sets)}"


def build_fill_once(d: Dialect, table: str, key: Sequence[str], target: str, expr: str, where: str | None,
                    after: bool, columns: Columns | None = None, lock: str | None = None) -> Stmt:
    """Fill one target computing the expression once per row: every row in (lo, hi] whose target is NULL gets
    the expression's value. Exactly what build_update writes, unless the expression is NULL on some row: then
    this writes that NULL over NULL, which the engine detects (apply_range_once) so that the job rolls the batch
    back and redoes it with build_update's guard, which computes the expression a second time to skip the row."""
    p = _Params(d)
    null = f"{d.quote(target)} IS NULL"
    conds = [*range_conds(d, key, p, where, after), null]
    if lock:
        conds.append(locked_rows(d, table, key, p, where, after, null, lock))
    sql = f"{fill_once_head(d, table, target, expr, columns)} WHERE {' AND '.join(conds)}"
    return Stmt(d.finish(sql), tuple(p.names))


def fill_once_head(d: Dialect, table: str, target: str, expr: str, columns: Columns | None) -> str:
    sets = ", ".join([f"{d.quote(target)} = ({expr})", *kept_sets(d, columns, [target])])
    return f"UPDATE {d.table(table)} SET {sets}"


# Keys of rows passed over by a batch (locked by the application) read back to log; the count is at least this.
LEFTOVER_SAMPLE = 100


def build_leftover(d: Dialect, table: str, key: Sequence[str], exprs: dict[str, str], where: str | None,
                   overwrite: bool, after: bool, columns: Columns | None = None) -> Stmt:
    """In a batch's transaction, after its UPDATE: keys of rows in the range that still need a value (the
    application held them locked, so SKIP LOCKED passed them over; or it wrote them since), in key order."""
    p = _Params(d)
    conds = [*range_conds(d, key, p, where, after), needs_fill(d, exprs, overwrite, dict(columns or {}))]
    cols = ", ".join(d.quote(c) for c in key)
    sql = (f"SELECT {', '.join(key_values(d, key, columns))} FROM {d.table(table)} WHERE {' AND '.join(conds)} "
           f"ORDER BY {cols} LIMIT {LEFTOVER_SAMPLE}")
    return Stmt(d.finish(sql), tuple(p.names))


def build_lock(d: Dialect, table: str, key: Sequence[str], where: str | None, after: bool, cond: str,
               clause: str, columns: Columns | None = None, limit: bool = False) -> Stmt:
    """Engines whose lock is a statement of its own: lock the rows of (lo, hi] that may need a value, without
    waiting for any another session holds, and return their keys (in key order). limit: at most `n_keys` of
    them (a parameter), so that a range whose rows all need a value is read without the row past its end."""
    p = _Params(d)
    conds = [*range_conds(d, key, p, where, after), cond]
    cols = ", ".join(d.quote(c) for c in key)
    stop = f"LIMIT {p('n_keys')} " if limit else ""
    sql = (f"SELECT {', '.join(key_values(d, key, columns))} FROM {d.table(table)} WHERE {' AND '.join(conds)} "
           f"ORDER BY {cols} {stop}{clause}")
    return Stmt(d.finish(sql), tuple(p.names))


def build_nulls_left(d: Dialect, table: str, key: Sequence[str], target: str, where: str | None,
                     after: bool) -> Stmt:
    """After build_fill_once in the same transaction: a row in the range whose target is still NULL got NULL."""
    p = _Params(d)
    conds = [*range_conds(d, key, p, where, after), f"{d.quote(target)} IS NULL"]
    return Stmt(d.finish(f"SELECT 1 FROM {d.table(table)} WHERE {' AND '.join(conds)} LIMIT 1"), tuple(p.names))


def build_count_upto(d: Dialect, table: str, key: Sequence[str]) -> Stmt:
    """How many rows (0, 1, or 2 meaning more) have a key up to hi: 1 for the table's first key read back."""
    p = _Params(d)
    conds = range_conds(d, key, p, None, after=False)
    sql = f"SELECT count(*) FROM (SELECT 1 AS bf_one FROM {d.table(table)} WHERE {' AND '.join(conds)} LIMIT 2) AS bf_c"
    return Stmt(d.finish(sql), tuple(p.names))


def build_sample(d: Dialect, table: str, exprs: dict[str, str], where: str | None) -> Stmt:
    """Every expression evaluated on n rows; only whether each is NULL comes back, so that a value the driver
    cannot represent (a BC date, 24:00) does not fail the check of an expression the server computes fine."""
    p = _Params(d)
    cols = ", ".join(f"({e}) IS NULL" for e in exprs.values())
    filt = f" WHERE ({where})" if where else ""
    return Stmt(d.finish(f"SELECT {cols} FROM {d.table(table)}{filt} LIMIT {p('n')}"), tuple(p.names))


def build_any_pending(d: Dialect, table: str, exprs: dict[str, str], where: str | None, overwrite: bool,
                      columns: dict[str, Column] | None = None) -> Stmt:
    """Whether any row still needs a value: one read-only statement that stops at the first it finds."""
    filt = f"({where}) AND " if where else ""
    sql = f"SELECT 1 FROM {d.table(table)} WHERE {filt}{needs_fill(d, exprs, overwrite, columns)} LIMIT 1"
    return Stmt(d.finish(sql))


def build_plan(d: Dialect, table: str, key: Sequence[str], exprs: dict[str, str], where: str | None,
               overwrite: bool, columns: dict[str, Column] | None = None, once_expr: str | None = None,
               lock: str | None = None) -> BatchPlan:
    """once_expr: what a single-evaluation batch writes (the job's one expression, or an engine's form of it,
    see Engine.once_expression); None: no single evaluation. lock: the SKIP LOCKED clause batches lock their
    rows with (Engine.lock_clause), never waiting for one the application holds (inline, or as lock_* before
    keyed_*); None: they do not lock first."""
    if not exprs:
        raise ValueError("a plan needs at least one target expression")
    inline = lock if lock and d.lock_inline else None
    once: dict[str, Any] = {}
    if not overwrite and len(exprs) == 1 and once_expr is not None:
        [target] = exprs
        once = {"fill_once_first": build_fill_once(d, table, key, target, once_expr, where, after=False,
                                                   columns=columns, lock=inline),
                "fill_once_after": build_fill_once(d, table, key, target, once_expr, where, after=True,
                                                   columns=columns, lock=inline),
                "nulls_left_first": build_nulls_left(d, table, key, target, where, after=False),
                "nulls_left_after": build_nulls_left(d, table, key, target, where, after=True)}
        if lock and not inline:
            once["keyed_fill_once"] = KeyedUpdate(fill_once_head(d, table, target, once_expr, columns),
                                                  f"{d.quote(target)} IS NULL", tuple(key))
    locking: dict[str, Any] = {}
    if lock:
        locking = {"left_first": build_leftover(d, table, key, exprs, where, overwrite, after=False, columns=columns),
                   "left_after": build_leftover(d, table, key, exprs, where, overwrite, after=True, columns=columns)}
        if not inline:
            cond = lock_cond(d, list(exprs), exprs, overwrite, columns)
            locking.update(
                lock_first=build_lock(d, table, key, where, after=False, cond=cond, clause=lock, columns=columns,
                                      limit=d.lock_limit),
                lock_after=build_lock(d, table, key, where, after=True, cond=cond, clause=lock, columns=columns,
                                      limit=d.lock_limit),
                keyed_update=KeyedUpdate(update_head(d, table, exprs, overwrite, columns),
                                         needs_fill(d, exprs, overwrite, columns), tuple(key)))
    return BatchPlan(
        **once,
        **locking,
        **lookups(d, table, key, columns),
        update_first=build_update(d, table, key, exprs, where, overwrite, after=False, columns=columns, lock=inline),
        update_after=build_update(d, table, key, exprs, where, overwrite, after=True, columns=columns, lock=inline),
        sample=build_sample(d, table, exprs, where),
        any_pending=build_any_pending(d, table, exprs, where, overwrite, columns),
        key=tuple(key), targets=tuple(exprs),
    )


def build_read(d: Dialect, table: str, key: Sequence[str], cols: Sequence[str], where: str | None,
               cond: str | None, after: bool, columns: Columns | None = None) -> Stmt:
    """Key and columns of the rows in (lo, hi] that pass the filter and cond."""
    p = _Params(d)
    conds = range_conds(d, key, p, where, after)
    if cond:
        conds.append(cond)
    sel = ", ".join([*key_values(d, key, columns), *(d.quote(c) for c in cols)])
    return Stmt(d.finish(f"SELECT {sel} FROM {d.table(table)} WHERE {' AND '.join(conds)}"), tuple(p.names))


def build_transform_read(d: Dialect, table: str, key: Sequence[str], sources: Sequence[str],
                         targets: Sequence[str], where: str | None, overwrite: bool, after: bool,
                         columns: Columns | None = None) -> Stmt:
    """What a transform batch reads: rows with a target still NULL (or every row, with overwrite)."""
    cond = None if overwrite else "(" + " OR ".join(f"{d.quote(t)} IS NULL" for t in targets) + ")"
    return build_read(d, table, key, (*sources, *targets), where, cond, after, columns)


def build_verify_read(d: Dialect, table: str, key: Sequence[str], exprs: dict[str, str], where: str | None,
                      after: bool, columns: dict[str, Column] | None = None) -> Stmt:
    """SQL jobs: key, then (target, expected) per target, for rows in the range whose target is missing or wrong."""
    p = _Params(d)
    conds = range_conds(d, key, p, where, after)
    columns = columns or {}
    problems = [f"({d.quote(t)} IS NULL AND ({e}) IS NOT NULL) OR ({d.quote(t)} IS NOT NULL AND "
                f"{d.stale(d.quote(t), f'({e})', columns.get(t))})" for t, e in exprs.items()]
    conds.append("(" + " OR ".join(problems) + ")")
    sel = ", ".join([*key_values(d, key, columns),
                     *(f"{d.as_read(d.quote(t), columns.get(t))}, "
                       f"{d.as_read(d.cast_to(f'({e})', columns.get(t)), columns.get(t))}" for t, e in exprs.items())])
    return Stmt(d.finish(f"SELECT {sel} FROM {d.table(table)} WHERE {' AND '.join(conds)}"), tuple(p.names))


def build_fix_row(d: Dialect, table: str, key: Sequence[str], exprs: dict[str, str],
                  columns: Columns | None = None) -> Stmt:
    """SQL jobs: rewrite one row's targets from the expression, only if they still hold what verify read."""
    p = _Params(d)
    sets = ", ".join([*(f"{d.quote(t)} = ({e})" for t, e in exprs.items()), *kept_sets(d, columns, list(exprs))])
    conds = [f"{d.quote(k)} = {p(f'k{i}')}" for i, k in enumerate(key)]
    columns = columns or {}
    conds += [d.same(d.as_read(d.quote(t), columns.get(t)), p(f"old{i}"), columns.get(t)) for i, t in enumerate(exprs)]
    return Stmt(d.finish(f"UPDATE {d.table(table)} SET {sets} WHERE {' AND '.join(conds)}"), tuple(p.names))


@dataclass(frozen=True)
class WriteShape:
    """The columns of the derived table a transform batch joins against: key, sources read, old and new targets."""

    key: tuple[str, ...]
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    overwrite: bool

    @property
    def width(self) -> int:
        return len(self.key) + len(self.sources) + 2 * len(self.targets)

    def col(self, part: str, i: int) -> str:
        base = {"k": 0, "s": len(self.key), "o": len(self.key) + len(self.sources),
                "n": len(self.key) + len(self.sources) + len(self.targets)}[part]
        return f"c{base + i}"

    def column_types(self, info: TableInfo) -> list[str]:
        cols = [*self.key, *self.sources, *self.targets, *self.targets]
        return [info.columns[c].type for c in cols]


def transform_update_parts(d: Dialect, info: TableInfo, shape: WriteShape,
                           join_value: dict[str, str] | None = None
                           ) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """(target, value) assignments, join conditions, and guards for a guarded transform write.

    Guards: the sources still hold what was read, and each target is still NULL (fill) or still holds what
    was read (overwrite), compared exactly (Dialect.same: a source changed only in case or trailing spaces is
    changed); a row that fails them is left for a later pass to read again. join_value maps a key column to a
    cast of the joined value only, so that the table's side stays a plain indexed column.
    """
    join_value = join_value or {}
    t, v = "bf_t", "bf_v"
    sets = []
    for i, tg in enumerate(shape.targets):
        new = f"{v}.{shape.col('n', i)}"
        if shape.overwrite or len(shape.targets) == 1:
            sets.append((tg, new))
        else:
            sets.append((tg, f"CASE WHEN {t}.{d.quote(tg)} IS NULL THEN {new} ELSE {t}.{d.quote(tg)} END"))
    joins = [f"{t}.{d.quote(k)} = " + join_value.get(k, "{}").format(f"{v}.{shape.col('k', i)}")
             for i, k in enumerate(shape.key)]
    guards = [d.same(f"{t}.{d.quote(s)}", f"{v}.{shape.col('s', i)}", info.columns[s])
              for i, s in enumerate(shape.sources)]
    if shape.overwrite:
        guards += [d.same(f"{t}.{d.quote(tg)}", f"{v}.{shape.col('o', i)}", info.columns[tg])
                   for i, tg in enumerate(shape.targets)]
    else:
        guards.append("(" + " OR ".join(f"({t}.{d.quote(tg)} IS NULL AND {v}.{shape.col('n', i)} IS NOT NULL)"
                                        for i, tg in enumerate(shape.targets)) + ")")
    return sets, joins, guards


def build_transform_plan(d: Dialect, table: str, key: Sequence[str], sources: Sequence[str],
                         targets: Sequence[str], where: str | None, overwrite: bool,
                         columns: Columns | None = None) -> BatchPlan:
    return BatchPlan(
        **lookups(d, table, key, columns),
        key=tuple(key), targets=tuple(targets),
        read_first=build_transform_read(d, table, key, sources, targets, where, overwrite, after=False,
                                        columns=columns),
        read_after=build_transform_read(d, table, key, sources, targets, where, overwrite, after=True,
                                        columns=columns),
    )


# Key values whose Python order is the order every engine sorts them in (bytes: byte by byte, as bytea, BINARY
# and BLOB sort); text is left out (collations), and so are floats (NaN) and times with a zone.
_PYTHON_ORDERED = (int, decimal.Decimal, dt.date, dt.timedelta, bytes)


def advanced(after: Sequence[Any] | None, hi: tuple[Any, ...]) -> tuple[Any, ...]:
    """hi, the last key of the range after `after`; an error if it is not past `after`: the walk would read the
    same ranges forever (a key the server compares otherwise than it sorts, or a driver that reads two values
    as one; preflight's round trip catches most). Past is checked where Python orders the values as the
    servers do (_PYTHON_ORDERED), equality everywhere."""
    if after is None:
        return hi
    after = tuple(after)
    back = hi == after
    if not back and all(isinstance(v, _PYTHON_ORDERED) and not (isinstance(v, decimal.Decimal) and v.is_nan())
                        for v in (*hi, *after)):
        with contextlib.suppress(TypeError):   # two types in one column (SQLite): no order to check
            back = hi < after
    if back:
        raise EngineError(f"the key walk stopped advancing: the range after key {encode_key(after)} ends at "
                          f"{encode_key(hi)}, so this key cannot be paged (its values do not compare as they sort, "
                          "or the driver reads two of them as one); set key = [...] to another unique, NOT NULL "
                          "index")
    return hi


def key_args(prefix: str, values: Sequence[Any] | None) -> dict[str, Any]:
    return {f"{prefix}{i}": v for i, v in enumerate(values or ())}


def keys_limit(keys: int | None) -> int:
    """A LIMIT for a range of `keys` keys (None: not known, no limit)."""
    return keys if keys is not None and keys > 0 else 2 ** 63 - 1


def range_call(first: Stmt | None, after: Stmt | None, lo: Sequence[Any] | None,
               hi: Sequence[Any]) -> tuple[Stmt, dict[str, Any]]:
    """A batch statement for (lo, hi] and its values: the `first` form from the table's start (lo None)."""
    stmt = first if lo is None else after
    assert stmt is not None, "the plan has no such statement"
    return stmt, {**key_args("lo", lo), **key_args("hi", hi)}


# ------------------------------------------------------------------------------------------ catalog


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    collation: str | None = None    # MySQL text columns: the column's collation (charset is its prefix)
    generated: bool = False         # computed by the database (GENERATED ALWAYS AS, identity ALWAYS): never set
    on_update: bool = False         # the server sets it in any UPDATE of the row (MySQL ON UPDATE ...)


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: dict[str, Column]
    primary_key: tuple[str, ...]
    unique_keys: tuple[tuple[str, ...], ...] = field(default=())
    update_triggers: tuple[str, ...] = ()   # triggers that fire on the UPDATEs a job runs (plan names them)


def lease_key(name: str) -> str:
    """A lease name as a short, fixed-size token (MySQL's lock names stop at 64 characters)."""
    return "backfilld:" + hashlib.sha256(name.encode()).hexdigest()[:40]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# ------------------------------------------------------------------------------------------ engine


class Engine(abc.ABC):
    """One connection to one database, and every job-level operation backfilld performs on it: the shared
    implementation of protocols.Driver, plus catalog, lease, state table and batches. The optional abilities
    (protocols.Replication, AppSessions) are the engine packages' own."""

    dialect: Dialect
    role = ""   # what a second connection is for (see clone); "" for the job's own

    def __init__(self, url: DatabaseURL, *, lock_timeout_s: float = 1.0, connect_timeout_s: float = 10.0,
                 fast_commit: bool = False, skip_locked: bool = True) -> None:
        self.url = url
        self.fast_commit = fast_commit
        # batches lock their rows without waiting for one the application holds ([database] skip_locked)
        self.skip_locked = skip_locked
        self.lock_timeout_s = lock_timeout_s
        self.connect_timeout_s = connect_timeout_s

    @property
    def name(self) -> str:
        return self.dialect.name

    @property
    def capabilities(self) -> Capabilities:
        """What this engine can do (engines.CAPABILITIES), for code outside engines/ that must not test names."""
        return capabilities(self.dialect.name)

    @abc.abstractmethod
    def translate(self, exc: BaseException) -> EngineError:
        """A driver exception as one of ours: retryable, reconnect-worthy, or final."""

    @contextlib.contextmanager
    def driver_errors(self) -> Iterator[None]:
        try:
            yield
        except EngineError:
            raise
        except Exception as exc:  # noqa: BLE001 - every driver failure becomes one of ours
            raise self.translate(exc) from None

    # --- driver primitives, one implementation per engine
    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def fetch(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    @abc.abstractmethod
    async def execute(self, stmt: Stmt | str, values: dict[str, Any] | None = None) -> int:
        """Run a statement; the number of rows it changed."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    def clone(self, role: str) -> Engine:
        """An unconnected engine for the same database and settings: a second connection, named for its role
        where the server shows names (PostgreSQL's application_name "backfilld-<role>")."""
        other = type(self)(self.url, lock_timeout_s=self.lock_timeout_s, connect_timeout_s=self.connect_timeout_s,
                           fast_commit=self.fast_commit, skip_locked=self.skip_locked)
        other.role = role
        return other

    def unpageable_key(self, column: Column) -> str | None:
        """Why a column cannot be (part of) the key a job pages by on this engine, or None."""
        return None

    async def concurrent_reads(self) -> bool:
        """Whether a second connection may read the table while this one writes it, without blocking either."""
        return True

    async def enable_concurrent_writes(self) -> bool:
        """Make this session fit to write one key range while another session writes the next one (without
        waiting on its locks); False if the engine cannot (the job then writes one batch at a time)."""
        return True

    async def reconnect(self) -> None:
        with contextlib.suppress(Exception):
            await self.close()
        await self.connect()

    # --- catalog, one implementation per engine
    @abc.abstractmethod
    async def table_info(self, table: str) -> TableInfo:
        """Columns, primary key and unique keys; SchemaError if the table does not exist."""

    @abc.abstractmethod
    async def estimate_rows(self, table: str) -> int: ...

    async def count_rows(self, table: str) -> int:
        """The exact row count: a scan of the table (or of its smallest index)."""
        return int((await self.fetch(f"SELECT count(*) FROM {self.dialect.table(table)}"))[0][0])

    @abc.abstractmethod
    async def explain(self, stmt: Stmt, values: dict[str, Any]) -> list[str]: ...

    @abc.abstractmethod
    def explain_uses_index(self, lines: list[str]) -> bool:
        """Whether an EXPLAIN output reads a key range rather than the whole table."""

    def state_table_ddl(self, table: str) -> str:
        return state.ddl(self.dialect, table)

    # --- the job lease: one daemon per job at a time
    @abc.abstractmethod
    async def try_lease(self, name: str) -> bool:
        """Take the named lease for as long as this connection lives; False if another session holds it.
        Taking a lease this connection already holds succeeds."""

    @abc.abstractmethod
    async def lease_holder(self, name: str) -> str | None:
        """Who holds the named lease, as an operator would find it (a backend pid, a connection id)."""

    # --- replication and the application's sessions: optional abilities (engines/protocols.py: Replication,
    # AppSessions), which the engines that have them add; callers ask Capabilities, then protocols.ability()

    # --- transform writes: one guarded statement joining the table to the batch's computed rows
    @abc.abstractmethod
    async def write_rows(self, info: TableInfo, shape: WriteShape, rows: Sequence[Sequence[Any]]) -> int:
        """Write computed targets; each row is key + sources read + targets read + new targets. Rows written."""

    # --- shared operations
    def plan(self, table: str, key: Sequence[str], exprs: dict[str, str], where: str | None,
             overwrite: bool, columns: dict[str, Column] | None = None, once_expr: str | None = None,
             lock: str | None = None) -> BatchPlan:
        return build_plan(self.dialect, table, key, exprs, where, overwrite, columns, once_expr, lock)

    def lock_clause(self, info: TableInfo, targets: Sequence[str]) -> str | None:
        """The clause a batch locks its rows with before writing `targets`: the dialect's SKIP LOCKED form
        (None where the engine has no row locks)."""
        return self.dialect.skip_locked_clause

    async def lock_support(self) -> str | None:
        """Why batches on this server cannot lock rows with SKIP LOCKED (None: they can). SQLite has no row
        locks: a batch is the database's one write transaction, which the application waits for."""
        if self.dialect.skip_locked_clause is None:
            return "SQLite has no row locks"
        return None

    async def lock_timeout_problem(self) -> str | None:
        """Why lock_timeout_s may let the server pick the application, not backfilld, as a deadlock's victim."""
        return None

    def no_wait(self, stmt: Stmt, key: Sequence[str] = ()) -> Stmt | None:
        """`stmt` in a form that fails at once rather than wait for a row lock, which a batch that locks first
        tries before its locking read (MySQLEngine); None where the engine has none."""
        return None

    async def locked_keys(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                          keys: int | None = None) -> list[tuple[Any, ...]]:
        """Lock the rows of (lo, hi] that may need a value, passing over those another session holds; their keys.
        keys: how many keys the range held when it was looked up (None: not known), which MySQL stops at."""
        stmt, values = range_call(plan.lock_first, plan.lock_after, lo, hi)
        return await self.fetch(stmt, {**values, "n_keys": keys_limit(keys)})

    async def leftover(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any]) -> list[tuple[Any, ...]]:
        """In a batch's transaction, after its UPDATE: keys (up to LEFTOVER_SAMPLE) of the range's rows still
        needing a value, which SKIP LOCKED passed over; [] when the plan does not lock."""
        if plan.left_first is None:
            return []
        return await self.fetch(*range_call(plan.left_first, plan.left_after, lo, hi))

    async def once_expression(self, table: str, key: Sequence[str], expr: str) -> str | None:
        """What a batch computing the expression once per row writes (see apply_range_once); None when this
        engine cannot do it for this expression. Here: the expression itself."""
        return expr

    async def writes_token(self, table: str) -> object | None:
        """At a pass's start: a token nothing_else_wrote compares with at its end; None when this engine cannot
        tell (the job then always runs a sweep pass after a fill pass)."""
        return None

    async def nothing_else_wrote(self, table: str, token: object, own_commits: int) -> bool:
        """Whether, since writes_token gave `token` and on this connection throughout, no session but this
        one (which committed `own_commits` write transactions meanwhile, none rolled back) wrote to the
        database holding the table. False whenever unsure."""
        return False

    async def next_range(self, plan: BatchPlan, after: Sequence[Any] | None, n: int
                         ) -> tuple[tuple[Any, ...], int] | None:
        """The last key of the next n keys after `after` (start of table if None), and how many there are.

        First the n-th key alone (plan.skip_*), the answer for every batch but a pass's last; when fewer than n
        keys are left, the last key and count of those (plan.lookup_*)."""
        skip = plan.skip_first if after is None else plan.skip_after
        rows = await self.fetch(skip, {"skip": n - 1, **key_args("lo", after)})
        if rows:
            return advanced(after, tuple(rows[0])), n
        stmt = plan.lookup_first if after is None else plan.lookup_after
        rows = await self.fetch(stmt, {"n": n, **key_args("lo", after)})
        if not rows:
            return None
        row = rows[0]
        return advanced(after, tuple(row[:-1])), int(row[-1])

    async def apply_range(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                          keys: int | None = None) -> int:
        if plan.keyed_update is not None:   # lock first, then write the rows locked
            n = 0
            locked = await self.locked_keys(plan, lo, hi, keys)
            for stmt, values in plan.keyed_update.statements(self.dialect, locked):
                n += await self.execute(stmt, values)
            return n
        return await self.execute(*range_call(plan.update_first, plan.update_after, lo, hi))

    @abc.abstractmethod
    async def apply_range_once(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                               keys: int | None = None) -> int | None:
        """The batch with the expression computed once per row (plan.fill_once_*): rows written, or None when
        some row's expression was NULL, in which case the caller must roll the transaction back. PostgreSQL
        and SQLite trap the NULL inside the UPDATE (once_expression), MySQL reads it off the UPDATE's result."""

    async def apply_range_once_check(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any],
                                     rows: int) -> int | None:
        """After apply_range_once's UPDATE, for an engine that cannot tell from the UPDATE itself: rows, unless
        a target in the range is still NULL (it got NULL; the write lock is held, so no other session can have
        added one)."""
        return None if await self.fetch(*range_call(plan.nulls_left_first, plan.nulls_left_after, lo, hi)) else rows

    async def read_range(self, plan: BatchPlan, lo: Sequence[Any] | None, hi: Sequence[Any]
                         ) -> list[tuple[Any, ...]]:
        return await self.fetch(*range_call(plan.read_first, plan.read_after, lo, hi))

    async def ensure_state_table(self, table: str) -> None:
        await self.execute(self.state_table_ddl(table))

    def _state_stmts(self, table: str) -> dict[str, Stmt]:
        cache: dict[str, dict[str, Stmt]] = self.__dict__.setdefault("_state_cache", {})
        if table not in cache:
            cache[table] = self._build_state_stmts(table)
        return cache[table]

    def _build_state_stmts(self, table: str) -> dict[str, Stmt]:
        return {name: Stmt(sql, names) for name, (sql, names) in state.statements(self.dialect, table).items()}

    async def read_state(self, table: str, job: str) -> JobState | None:
        rows = await self.fetch(self._state_stmts(table)["select_one"], {"job": job})
        return JobState.from_row(rows[0]) if rows else None

    async def read_states(self, table: str) -> list[JobState]:
        return [JobState.from_row(r) for r in await self.fetch(self._state_stmts(table)["select_all"])]

    async def write_state(self, table: str, state: JobState, *, insert: bool = False) -> None:
        stmts = self._state_stmts(table)
        await self.execute(stmts["insert" if insert else "update"], state.as_row())

    async def write_requests(self, table: str, job: str, requests: str) -> None:
        """Store operator requests for a job; a job that has not run yet gets a pending row."""
        await self.ensure_state_table(table)
        if await self.read_state(table, job) is None:
            await self.write_state(table, JobState(job=job, fingerprint="", status="pending", requests=requests,
                                                   updated_at=now_iso()), insert=True)
        else:
            await self.execute(self._state_stmts(table)["set_requests"], {"requests": requests, "job": job})

    async def write_verify(self, table: str, job: str, result: str, verified_at: str | None) -> None:
        """Store a verify result (and, when it was clean and complete, its time) without touching the rest."""
        await self.ensure_state_table(table)
        if await self.read_state(table, job) is None:
            await self.write_state(table, JobState(job=job, fingerprint="", status="pending", updated_at=now_iso()),
                                   insert=True)
        await self.execute(self._state_stmts(table)["set_verify"],
                           {"result": result, "verified_at": verified_at, "job": job})

    async def advance_state(self, table: str, job: str, last_key: Sequence[Any], rows: int, scanned: int,
                            pending: int = 0) -> None:
        """Move the checkpoint; `pending` rows were left for a later pass (they count toward another pass)."""
        await self.execute(self._state_stmts(table)["advance"],
                           {"last_key": encode_key(last_key), "rows": rows, "rows2": rows + pending,
                            "scanned": scanned, "now": now_iso(), "job": job})

    def skipped_table(self, state_table: str) -> str:
        return state_table + "_skipped"

    async def ensure_skipped_table(self, state_table: str) -> None:
        t = self.dialect.table(self.skipped_table(state_table))
        await self.execute(f"CREATE TABLE IF NOT EXISTS {t} (job varchar(64) NOT NULL, row_key varchar(700) NOT NULL, "
                           "error text, at_time varchar(40))")

    async def record_skipped(self, state_table: str, job: str, key: Sequence[Any], error: str) -> None:
        """A row a transform could not compute, with on_error = "skip": kept once per key, newest error."""
        t = self.dialect.table(self.skipped_table(state_table))
        d = self.dialect
        k = encode_key(key)
        p = _Params(d)
        await self.execute(Stmt(d.finish(f"DELETE FROM {t} WHERE job = {p('job')} AND row_key = {p('k')}"),
                                tuple(p.names)), {"job": job, "k": k})
        p = _Params(d)
        await self.execute(Stmt(d.finish(f"INSERT INTO {t} (job, row_key, error, at_time) VALUES ({p('job')}, "
                                          f"{p('k')}, {p('e')}, {p('at')})"), tuple(p.names)),
                           {"job": job, "k": k, "e": error[:2000], "at": now_iso()})

    async def skipped(self, state_table: str, job: str, limit: int = 10) -> tuple[int, list[tuple[str, str]]]:
        """How many rows the transform skipped, and a sample of (key, error)."""
        t = self.dialect.table(self.skipped_table(state_table))
        d = self.dialect
        p = _Params(d)
        try:
            n = await self.fetch(Stmt(d.finish(f"SELECT count(*) FROM {t} WHERE job = {p('job')}"), tuple(p.names)),
                                 {"job": job})
        except EngineError:
            return 0, []
        p = _Params(d)
        rows = await self.fetch(Stmt(d.finish(f"SELECT row_key, error FROM {t} WHERE job = {p('job')} "
                                              f"ORDER BY at_time LIMIT {int(limit)}"), tuple(p.names)), {"job": job})
        return int(n[0][0]), [(r[0], r[1]) for r in rows]

    async def check_expressions(self, plan: BatchPlan) -> None:
        """Evaluate every target expression on a few rows; SchemaError names what failed."""
        assert plan.sample is not None
        try:
            await self.fetch(plan.sample, {"n": 5})
        except EngineError as exc:
            raise SchemaError(f"an expression or the where filter fails on the table: {exc}") from None

