"""The pure builders of every statement backfilld runs against a job's table, written once over a Dialect.

Owns: BatchPlan (a job's statements, built once) and its builders, KeyedUpdate (UPDATEs of locked keys),
WriteShape and the parts of a guarded transform write, and how a plan's statements are bound for a range
(range_call). Engines add their driver-specific statements (transform writes, MySQL's locked-key list).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from backfilld.engines.catalog import Column, TableInfo
from backfilld.engines.sqldialect import Dialect, Stmt, _Params


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
    # lookup jobs: the range's match values without a lookup row (rows still to fill; every row of the range,
    # for verify --fix), and the INSERT that creates them (Engine.create_lookups)
    missing_first: Stmt | None = None
    missing_after: Stmt | None = None
    missing_any_first: Stmt | None = None
    missing_any_after: Stmt | None = None
    lookup_insert: LookupInsert | None = None


# Keys per statement of a keyed UPDATE: a long IN list costs MySQL's range optimizer memory (past
# range_optimizer_max_mem_size it scans the table instead) and MariaDB turns one of 1000 values or more into
# a subquery (in_predicate_conversion_threshold); a batch's keys go in statements of at most this many.
KEYED_CHUNK = 500
KEYED_INLINE_CHUNK = 5000   # integer literals: no binding; still far within the range optimizer's memory


def chunks(keys: Sequence[Any], size: int = KEYED_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(keys), size):
        yield keys[i:i + size]


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


Columns = Mapping[str, Column]


@dataclass(frozen=True)
class LookupSpec:
    """A lookup job's lookup table: target = the id of the lookup row whose match columns equal the row's match
    expressions (each already qualified by the job's table: they sit in a subquery over the lookup table)."""

    table: str
    id: str
    match: Mapping[str, str]              # lookup column -> SQL over the job's row
    values: Mapping[str, str] = field(default_factory=dict)   # lookup column -> SQL, set when a row is created
    # the lookup table's columns (TableInfo.columns), to read match values as they bind back
    columns: Columns = field(default_factory=dict)


@dataclass(frozen=True)
class LookupInsert:
    """INSERT of lookup rows (match and values columns) that does nothing for one another session inserted
    meanwhile: `INSERT INTO lookup (cols) VALUES (...), ... <the dialect's on-conflict-nothing>`."""

    table: str
    columns: tuple[str, ...]   # the match columns, then the values columns
    id: str
    matched: int               # how many of columns are match columns (the unique index a conflict is on)

    def stmt(self, d: Dialect, n: int) -> Stmt:
        p = _Params(d)
        rows = ", ".join("(" + ", ".join(p(f"v{i}_{j}") for j in range(len(self.columns))) + ")" for i in range(n))
        cols = ", ".join(d.quote(c) for c in self.columns)
        sql = (f"INSERT INTO {d.table(self.table)} ({cols}) VALUES {rows} "
               f"{d.on_conflict_nothing(self.id, self.columns[:self.matched])}")
        return Stmt(d.finish(sql), tuple(p.names))

    def statements(self, d: Dialect, rows: Sequence[Sequence[Any]]) -> Iterator[tuple[Stmt, dict[str, Any]]]:
        for part in chunks(rows):
            yield self.stmt(d, len(part)), {f"v{i}_{j}": v for i, row in enumerate(part) for j, v in enumerate(row)}


LOOKUP_ALIAS = "bf_l"


def lookup_expr(d: Dialect, lk: LookupSpec) -> str:
    """The id of the lookup row matching the row: what a lookup job's target is set to (NULL: none yet)."""
    conds = " AND ".join(f"{LOOKUP_ALIAS}.{d.quote(c)} = ({e})" for c, e in lk.match.items())
    return f"SELECT {LOOKUP_ALIAS}.{d.quote(lk.id)} FROM {d.table(lk.table)} {LOOKUP_ALIAS} WHERE {conds}"


def wanted(d: Dialect, lk: LookupSpec) -> str:
    """The row has a lookup row to point at: every match value is known (a NULL one matches no row)."""
    return "(" + " AND ".join(f"({e}) IS NOT NULL" for e in lk.match.values()) + ")"


@dataclass(frozen=True)
class TableSpec:
    """What a job's statements are built from, as checked against the catalog: built once per job (preflight),
    then given to every builder with only what varies per statement (the first range or one after a key, a lock).

    SQL-expression jobs name their targets in exprs; transform jobs leave exprs empty and name sources and targets.
    """

    table: str
    key: tuple[str, ...]                  # the columns the job pages by (a unique, NOT NULL index)
    exprs: Mapping[str, str] = field(default_factory=dict)   # target -> SQL expression, in the job's order
    where: str | None = None              # the job's filter (SQL); None: every row
    overwrite: bool = False               # rewrite a target that differs, not only a NULL one
    columns: Columns = field(default_factory=dict)   # the table's columns (TableInfo.columns); {}: none known
    sources: tuple[str, ...] = ()         # transform jobs: the columns the transform reads
    targets: tuple[str, ...] = ()         # the columns written: exprs' own, unless given (transform jobs)
    lookup: LookupSpec | None = None      # lookup jobs: exprs holds the target's lookup_expr

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", tuple(self.key))
        if not self.targets:
            object.__setattr__(self, "targets", tuple(self.exprs))


def key_values(d: Dialect, spec: TableSpec) -> list[str]:
    """The select list of a key's values, as Dialect.key_value reads them."""
    return [d.key_value(c, spec.columns.get(c)) for c in spec.key]


def kept_sets(d: Dialect, columns: Columns | None, targets: Sequence[str], alias: str = "") -> list[str]:
    """`c = c` for each column the server itself would change in an UPDATE of other columns (MySQL's ON UPDATE
    CURRENT_TIMESTAMP): assigned its own value, it keeps it, so that only the targets change."""
    prefix = f"{alias}." if alias else ""
    return [f"{prefix}{d.quote(c)} = {prefix}{d.quote(c)}" for c, col in (columns or {}).items()
            if col.on_update and c not in targets]


def lookups(d: Dialect, spec: TableSpec) -> dict[str, Any]:
    """A plan's range lookups: the n-th next key alone, and the last key and count of up to n next keys."""
    return {"skip_first": build_skip(d, spec, after=False), "skip_after": build_skip(d, spec, after=True),
            "lookup_first": build_lookup(d, spec, after=False), "lookup_after": build_lookup(d, spec, after=True)}


def build_skip(d: Dialect, spec: TableSpec, after: bool) -> Stmt:
    """The key `skip` keys past the next one: the last key of a full batch, found by stepping along the key's
    index without the aggregate build_lookup needs (1.4x cheaper on PostgreSQL, 1.4-3x on MariaDB, 3x on
    SQLite, for 100,000 keys here). Nothing when fewer keys are left: build_lookup then finds the tail."""
    p = _Params(d)
    cols = ", ".join(d.quote(c) for c in spec.key)
    where = f" WHERE {d.row_cmp(spec.key, '>', p, 'lo')}" if after else ""
    sql = (f"SELECT {', '.join(key_values(d, spec))} FROM {d.table(spec.table)}{where} ORDER BY {cols} "
           f"LIMIT 1 OFFSET {p('skip')}")
    return Stmt(d.finish(sql), tuple(p.names))


def build_lookup(d: Dialect, spec: TableSpec, after: bool) -> Stmt:
    """The last key of the next batch and how many keys the batch holds, in one index range read.

    A single-column key takes max() and count() of the range (no sort); a composite key, which has no max,
    sorts the range's keys in reverse and counts them with a window.
    """
    p = _Params(d)
    key = spec.key
    where = f" WHERE {d.row_cmp(key, '>', p, 'lo')}" if after else ""
    asc = ", ".join(d.quote(c) for c in key)
    # a key read otherwise than as its column (Dialect.key_value) is named bf_k<i>, so that ORDER BY still
    # names the table's column
    values = key_values(d, spec)
    names = [v if v == d.quote(c) else f"bf_k{i}" for i, (c, v) in enumerate(zip(key, values, strict=True))]
    sel = ", ".join(v if v == n else f"{v} AS {n}" for v, n in zip(values, names, strict=True))
    inner = f"(SELECT {sel} FROM {d.table(spec.table)}{where} ORDER BY {asc} LIMIT {p('n')}) AS bf_r"
    if len(key) == 1 and d.has_max(spec.columns.get(key[0])):
        sql = f"SELECT max({names[0]}), count(*) AS bf_n FROM {inner} HAVING count(*) > 0"
    else:
        desc = ", ".join(f"{n} DESC" for n in names)
        sql = f"SELECT {', '.join(names)}, count(*) OVER () AS bf_n FROM {inner} ORDER BY {desc} LIMIT 1"
    return Stmt(d.finish(sql), tuple(p.names))


def range_conds(d: Dialect, spec: TableSpec, p: _Params, after: bool) -> list[str]:
    """The conditions of a batch's rows: key in (lo, hi] (from the table's start when not after) and the filter."""
    conds = [d.row_cmp(spec.key, ">", p, "lo")] if after else []
    conds.append(d.row_cmp(spec.key, "<=", p, "hi"))
    if spec.where:
        conds.append(f"({spec.where})")
    return conds


def needs_fill(d: Dialect, spec: TableSpec) -> str:
    """A row's targets are not yet what the job would write. A lookup job's row needs its target while it is
    NULL and the row has match values, whether or not its lookup row exists yet (the batch creates it)."""
    if spec.lookup is not None:
        return f"({d.quote(spec.targets[0])} IS NULL AND {wanted(d, spec.lookup)})"
    conds = []
    for target, expr in spec.exprs.items():
        t = d.quote(target)
        conds.append(d.stale(t, f"({expr})", spec.columns.get(target)) if spec.overwrite
                     else f"({t} IS NULL AND ({expr}) IS NOT NULL)")
    return "(" + " OR ".join(conds) + ")"


def write_guard(d: Dialect, spec: TableSpec) -> str:
    """Which rows a batch's UPDATE writes: those needing a value, and for a lookup job only where the lookup row
    exists at the moment of the write (one the batch could not create, a source changed meanwhile, stays pending)."""
    if spec.lookup is not None:
        return f"({needs_fill(d, spec)} AND EXISTS ({lookup_expr(d, spec.lookup)}))"
    return needs_fill(d, spec)


def any_null(d: Dialect, spec: TableSpec) -> str:
    """Some target of the row is NULL."""
    return "(" + " OR ".join(f"{d.quote(t)} IS NULL" for t in spec.targets) + ")"


def lock_cond(d: Dialect, spec: TableSpec) -> str:
    """Which rows of a range a batch locks: those that may need a value (the UPDATE's own guard decides)."""
    return needs_fill(d, spec) if spec.overwrite else any_null(d, spec)


def locked_rows(d: Dialect, spec: TableSpec, conds: Sequence[str], clause: str) -> str:
    """`AND (key) IN (...)`: the rows of the range (conds: its range_conds and which rows to lock) that the batch
    locked without waiting (SKIP LOCKED), in key order; a row the application holds is passed over, and left
    for a later pass (see build_leftover)."""
    cols = ", ".join(d.quote(c) for c in spec.key)
    inner = f"SELECT {cols} FROM {d.table(spec.table)} WHERE {' AND '.join(conds)} ORDER BY {cols} {clause}"
    return f"({cols}) IN ({inner})" if len(spec.key) > 1 else f"{cols} IN ({inner})"


def build_update(d: Dialect, spec: TableSpec, after: bool, lock: str | None = None) -> Stmt:
    """Fill the targets of the rows in (lo, hi] that need it; a filled target is never overwritten. With lock
    (a SKIP LOCKED clause, on an engine whose lock_inline), only the rows it could lock without waiting."""
    p = _Params(d)
    conds = range_conds(d, spec, p, after)
    conds.append(write_guard(d, spec))
    if lock:
        conds.append(locked_rows(d, spec, [*range_conds(d, spec, p, after), lock_cond(d, spec)], lock))
    sql = f"{update_head(d, spec)} WHERE {' AND '.join(conds)}"
    return Stmt(d.finish(sql), tuple(p.names))


def update_head(d: Dialect, spec: TableSpec) -> str:
    sets = []
    for target, expr in spec.exprs.items():
        t = d.quote(target)
        if spec.overwrite or len(spec.exprs) == 1:
            sets.append(f"{t} = ({expr})")
        else:
            sets.append(f"{t} = COALESCE({t}, ({expr}))")
    sets += kept_sets(d, spec.columns, spec.targets)
    return f"UPDATE {d.table(spec.table)} SET {', '.join(sets)}"


def build_fill_once(d: Dialect, once: TableSpec, after: bool, lock: str | None = None) -> Stmt:
    """Fill one target computing the expression once per row (once: the job's spec with its one expression as
    the single evaluation writes it, see build_plan): every row in (lo, hi] whose target is NULL gets the
    expression's value. Exactly what build_update writes, unless the expression is NULL on some row: then
    this writes that NULL over NULL, which the engine detects (apply_range_once) so that the job rolls the batch
    back and redoes it with build_update's guard, which computes the expression a second time to skip the row."""
    p = _Params(d)
    null = f"{d.quote(once.targets[0])} IS NULL"
    conds = [*range_conds(d, once, p, after), null]
    if lock:
        conds.append(locked_rows(d, once, [*range_conds(d, once, p, after), null], lock))
    sql = f"{update_head(d, once)} WHERE {' AND '.join(conds)}"   # one target: `t = (expr)`, never COALESCE
    return Stmt(d.finish(sql), tuple(p.names))


# Keys of rows passed over by a batch (locked by the application) read back to log; the count is at least this.
LEFTOVER_SAMPLE = 100


def build_leftover(d: Dialect, spec: TableSpec, after: bool) -> Stmt:
    """In a batch's transaction, after its UPDATE: keys of rows in the range that still need a value (the
    application held them locked, so SKIP LOCKED passed them over; or it wrote them since), in key order."""
    p = _Params(d)
    conds = [*range_conds(d, spec, p, after), needs_fill(d, spec)]
    cols = ", ".join(d.quote(c) for c in spec.key)
    sql = (f"SELECT {', '.join(key_values(d, spec))} FROM {d.table(spec.table)} WHERE {' AND '.join(conds)} "
           f"ORDER BY {cols} LIMIT {LEFTOVER_SAMPLE}")
    return Stmt(d.finish(sql), tuple(p.names))


def build_lock(d: Dialect, spec: TableSpec, after: bool, clause: str) -> Stmt:
    """Engines whose lock is a statement of its own: lock the rows of (lo, hi] that may need a value (lock_cond),
    without waiting for any another session holds, and return their keys (in key order). Where the dialect's
    lock_limit: at most `n_keys` of them (a parameter), so that a range whose rows all need a value is read
    without the row past its end."""
    p = _Params(d)
    conds = [*range_conds(d, spec, p, after), lock_cond(d, spec)]
    cols = ", ".join(d.quote(c) for c in spec.key)
    stop = f"LIMIT {p('n_keys')} " if d.lock_limit else ""
    sql = (f"SELECT {', '.join(key_values(d, spec))} FROM {d.table(spec.table)} WHERE {' AND '.join(conds)} "
           f"ORDER BY {cols} {stop}{clause}")
    return Stmt(d.finish(sql), tuple(p.names))


def build_nulls_left(d: Dialect, spec: TableSpec, after: bool) -> Stmt:
    """After build_fill_once in the same transaction: a row in the range whose one target is still NULL got NULL."""
    p = _Params(d)
    conds = [*range_conds(d, spec, p, after), f"{d.quote(spec.targets[0])} IS NULL"]
    return Stmt(d.finish(f"SELECT 1 FROM {d.table(spec.table)} WHERE {' AND '.join(conds)} LIMIT 1"),
                tuple(p.names))


def build_count_upto(d: Dialect, spec: TableSpec) -> Stmt:
    """How many rows (0, 1, or 2 meaning more) have a key up to hi: 1 for the table's first key read back.
    The filter does not apply: every row counts."""
    p = _Params(d)
    upto = d.row_cmp(spec.key, "<=", p, "hi")
    sql = f"SELECT count(*) FROM (SELECT 1 AS bf_one FROM {d.table(spec.table)} WHERE {upto} LIMIT 2) AS bf_c"
    return Stmt(d.finish(sql), tuple(p.names))


def build_sample(d: Dialect, spec: TableSpec) -> Stmt:
    """Every expression evaluated on n rows; only whether each is NULL comes back, so that a value the driver
    cannot represent (a BC date, 24:00) does not fail the check of an expression the server computes fine."""
    p = _Params(d)
    cols = ", ".join(f"({e}) IS NULL" for e in spec.exprs.values())
    filt = f" WHERE ({spec.where})" if spec.where else ""
    return Stmt(d.finish(f"SELECT {cols} FROM {d.table(spec.table)}{filt} LIMIT {p('n')}"), tuple(p.names))


def build_any_pending(d: Dialect, spec: TableSpec) -> Stmt:
    """Whether any row still needs a value: one read-only statement that stops at the first it finds."""
    filt = f"({spec.where}) AND " if spec.where else ""
    return Stmt(d.finish(f"SELECT 1 FROM {d.table(spec.table)} WHERE {filt}{needs_fill(d, spec)} LIMIT 1"))


def build_filter_probe(d: Dialect, spec: TableSpec) -> Stmt:
    """The job's filter alone over the whole table (plan EXPLAINs it: whether an index serves the filter)."""
    assert spec.where, "a filter probe needs the job's where"
    return Stmt(d.finish(f"SELECT 1 FROM {d.table(spec.table)} WHERE ({spec.where}) LIMIT 1"))


def build_plan(d: Dialect, spec: TableSpec, once_expr: str | None = None, lock: str | None = None) -> BatchPlan:
    """once_expr: what a single-evaluation batch writes (the job's one expression, or an engine's form of it,
    see Engine.once_expression); None: no single evaluation. lock: the SKIP LOCKED clause batches lock their
    rows with (Engine.lock_clause), never waiting for one the application holds (inline, or as lock_* before
    keyed_*); None: they do not lock first."""
    if not spec.exprs:
        raise ValueError("a plan needs at least one target expression")
    inline = lock if lock and d.lock_inline else None
    return BatchPlan(
        **_once_statements(d, spec, once_expr, lock),
        **_locking_statements(d, spec, lock),
        **_lookup_statements(d, spec),
        **lookups(d, spec),
        update_first=build_update(d, spec, after=False, lock=inline),
        update_after=build_update(d, spec, after=True, lock=inline),
        sample=build_sample(d, spec),
        any_pending=build_any_pending(d, spec),
        key=spec.key, targets=spec.targets,
    )


def _once_statements(d: Dialect, spec: TableSpec, once_expr: str | None, lock: str | None) -> dict[str, Any]:
    """A plan's single-evaluation statements (fill jobs with one target, given once_expr), else none."""
    if spec.overwrite or len(spec.exprs) != 1 or once_expr is None:
        return {}
    once = replace(spec, exprs={spec.targets[0]: once_expr})
    inline = lock if lock and d.lock_inline else None
    stmts: dict[str, Any] = {
        "fill_once_first": build_fill_once(d, once, after=False, lock=inline),
        "fill_once_after": build_fill_once(d, once, after=True, lock=inline),
        "nulls_left_first": build_nulls_left(d, spec, after=False),
        "nulls_left_after": build_nulls_left(d, spec, after=True)}
    if lock and not inline:
        stmts["keyed_fill_once"] = KeyedUpdate(update_head(d, once), f"{d.quote(spec.targets[0])} IS NULL", spec.key)
    return stmts


def _locking_statements(d: Dialect, spec: TableSpec, lock: str | None) -> dict[str, Any]:
    """A plan's statements for batches that lock first (see build_plan's lock), else none."""
    if not lock:
        return {}
    stmts: dict[str, Any] = {"left_first": build_leftover(d, spec, after=False),
                             "left_after": build_leftover(d, spec, after=True)}
    if not d.lock_inline:
        stmts.update(lock_first=build_lock(d, spec, after=False, clause=lock),
                     lock_after=build_lock(d, spec, after=True, clause=lock),
                     keyed_update=KeyedUpdate(update_head(d, spec), write_guard(d, spec), spec.key))
    return stmts


def build_missing(d: Dialect, spec: TableSpec, after: bool, *, every_row: bool = False) -> Stmt:
    """A lookup job: the distinct match values (and values, from one of their rows) of the range's rows that have
    no lookup row yet, in the order of the match values: a batch's rows still to fill, or (every_row, verify
    --fix) every row of the range. A plain read: it locks nothing, on any engine."""
    lk = spec.lookup
    assert lk is not None
    p = _Params(d)
    conds = range_conds(d, spec, p, after)
    conds.append(needs_fill(d, spec) if not every_row else wanted(d, lk))
    conds.append(f"NOT EXISTS ({lookup_expr(d, lk)})")
    match = [f"({e})" for e in lk.match.values()]
    sel = [*match, *(f"MIN({e})" for e in lk.values.values())]
    order = ", ".join(str(i + 1) for i in range(len(match)))
    sql = (f"SELECT {', '.join(sel)} FROM {d.table(spec.table)} WHERE {' AND '.join(conds)} "
           f"GROUP BY {', '.join(match)} ORDER BY {order}")
    return Stmt(d.finish(sql), tuple(p.names))


def _lookup_statements(d: Dialect, spec: TableSpec) -> dict[str, Any]:
    lk = spec.lookup
    if lk is None:
        return {}
    return {"missing_first": build_missing(d, spec, after=False), "missing_after": build_missing(d, spec, after=True),
            "missing_any_first": build_missing(d, spec, after=False, every_row=True),
            "missing_any_after": build_missing(d, spec, after=True, every_row=True),
            "lookup_insert": LookupInsert(lk.table, (*lk.match, *lk.values), lk.id, len(lk.match))}


def build_read(d: Dialect, spec: TableSpec, after: bool, cond: str | None = None) -> Stmt:
    """Key, sources and targets of the rows in (lo, hi] that pass the filter and cond."""
    p = _Params(d)
    conds = range_conds(d, spec, p, after)
    if cond:
        conds.append(cond)
    sel = ", ".join([*key_values(d, spec), *(d.quote(c) for c in (*spec.sources, *spec.targets))])
    return Stmt(d.finish(f"SELECT {sel} FROM {d.table(spec.table)} WHERE {' AND '.join(conds)}"), tuple(p.names))


def build_transform_read(d: Dialect, spec: TableSpec, after: bool) -> Stmt:
    """What a transform batch reads: rows with a target still NULL (or every row, with overwrite)."""
    return build_read(d, spec, after, None if spec.overwrite else any_null(d, spec))


def build_verify_read(d: Dialect, spec: TableSpec, after: bool) -> Stmt:
    """SQL jobs: key, then (target, expected) per target, for rows in the range whose target is missing or wrong."""
    p = _Params(d)
    conds = range_conds(d, spec, p, after)
    columns = spec.columns
    # a lookup job's target is missing while the row has match values, whether or not its lookup row exists
    known = {t: wanted(d, spec.lookup) if spec.lookup is not None else f"({e}) IS NOT NULL"
             for t, e in spec.exprs.items()}
    problems = [f"({d.quote(t)} IS NULL AND {known[t]}) OR ({d.quote(t)} IS NOT NULL AND "
                f"{d.stale(d.quote(t), f'({e})', columns.get(t))})" for t, e in spec.exprs.items()]
    conds.append("(" + " OR ".join(problems) + ")")
    sel = ", ".join([*key_values(d, spec),
                     *(f"{d.as_read(d.quote(t), columns.get(t))}, "
                       f"{d.as_read(d.cast_to(f'({e})', columns.get(t)), columns.get(t))}"
                       for t, e in spec.exprs.items())])
    return Stmt(d.finish(f"SELECT {sel} FROM {d.table(spec.table)} WHERE {' AND '.join(conds)}"), tuple(p.names))


def build_fix_row(d: Dialect, spec: TableSpec) -> Stmt:
    """SQL jobs: rewrite one row's targets from the expression, only if they still hold what verify read."""
    p = _Params(d)
    columns = spec.columns
    sets = ", ".join([*(f"{d.quote(t)} = ({e})" for t, e in spec.exprs.items()),
                      *kept_sets(d, columns, spec.targets)])
    conds = [f"{d.quote(k)} = {p(f'k{i}')}" for i, k in enumerate(spec.key)]
    conds += [d.same(d.as_read(d.quote(t), columns.get(t)), p(f"old{i}"), columns.get(t))
              for i, t in enumerate(spec.exprs)]
    return Stmt(d.finish(f"UPDATE {d.table(spec.table)} SET {sets} WHERE {' AND '.join(conds)}"), tuple(p.names))


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


def build_transform_plan(d: Dialect, spec: TableSpec) -> BatchPlan:
    return BatchPlan(
        **lookups(d, spec),
        key=spec.key, targets=spec.targets,
        read_first=build_transform_read(d, spec, after=False),
        read_after=build_transform_read(d, spec, after=True),
    )


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

