"""SQLite's static statements, one name each: the connection's pragmas, transactions, WAL checkpoints and the
catalog.

Owns: the text of every constant statement SQLiteEngine runs. A `{...}` in one is filled in by the engine:
`{schema}` a quoted schema and its dot (or nothing), `{name}` and `{index}` quoted names, `{table}` the table
as the dialect quotes it, a number it computed itself; values are always bound (?). Statements built from a
job (batches, verify) come from engines/statements.py; sync triggers from the trigger module.
"""

# --- the connection
# how long a statement waits for another connection's lock, in milliseconds
BUSY_TIMEOUT_MS = "PRAGMA busy_timeout = {ms}"
# the database's journal mode (wal, delete, ...)
JOURNAL_MODE = "PRAGMA journal_mode"
# commits sync the WAL less often (corruption-safe in WAL mode only)
SYNCHRONOUS_NORMAL = "PRAGMA synchronous = NORMAL"
# the connection no longer checkpoints the WAL at its commits (another connection does)
AUTOCHECKPOINT_OFF = "PRAGMA wal_autocheckpoint = 0"
# the connection checkpoints the WAL itself again, past 1000 pages (SQLite's default)
AUTOCHECKPOINT_ON = "PRAGMA wal_autocheckpoint = 1000"
# copies the WAL into the database file as far as no reader or writer is blocked
CHECKPOINT_PASSIVE = "PRAGMA wal_checkpoint(PASSIVE)"
# a counter that changes when another connection commits to the database
DATA_VERSION = "PRAGMA {schema}data_version"

# --- transactions: the write lock taken up front
BEGIN = "BEGIN IMMEDIATE"
ROLLBACK = "ROLLBACK"
COMMIT = "COMMIT"

# --- the catalog
# the table's columns, generated ones included: cid, name, type, notnull, default, pk position, hidden
TABLE_COLUMNS = "PRAGMA {schema}table_xinfo({name})"
# the table's indexes: seq, name, unique, origin, partial
INDEXES = "PRAGMA {schema}index_list({name})"
# an index's columns: seqno, cid, name
INDEX_COLUMNS = "PRAGMA {schema}index_info({index})"
# the table's triggers with their text (the engine keeps those that fire on UPDATE)
TRIGGERS = "SELECT name, sql FROM {schema}sqlite_master WHERE type = 'trigger' AND tbl_name = ? ORDER BY name"
# the table's smallest and largest rowid (an error for a WITHOUT ROWID table)
ROWID_SPAN = "SELECT (SELECT min(rowid) FROM {table}), (SELECT max(rowid) FROM {table})"

# --- plan's assessment: sizes, the journal's settings (read-only)
# the bytes of the table's b-tree pages ({schema}: the schema's name as a bound value's text; the dbstat
# virtual table, where SQLite was built with it)
TABLE_BYTES = "SELECT sum(pgsize) FROM dbstat(?) WHERE name = ?"
# the database's pages and their size (every table and index together)
PAGE_COUNT = "PRAGMA {schema}page_count"
PAGE_SIZE = "PRAGMA {schema}page_size"
