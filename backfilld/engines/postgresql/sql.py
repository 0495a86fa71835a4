"""PostgreSQL's static statements, one name each: the catalog, the lease, the heartbeat, replication, load and
the application's sessions.

Owns: the text of every constant statement PostgresEngine runs. A `{table}` in one is the table as the dialect
quotes it (PostgresDialect.table), put in by the engine; values are always bound ($1, ...). Statements built
from a job (batches, verify) come from engines/statements.py; sync triggers from the trigger module.
"""

# --- the lease: a session advisory lock, keyed by a hash of the lease name
# takes the lease if no session holds it (true) or returns false at once
TRY_LEASE = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
# the session holding the lease in this database: its pid, application_name and client address
LEASE_HOLDER = (
    "SELECT l.pid, a.application_name, a.client_addr::text FROM pg_locks l "
    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
    "AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($1, 0) "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")
# releases every advisory lock of this session (the lease), before the connection closes
UNLOCK_ALL = "SELECT pg_advisory_unlock_all()"

# --- the catalog
# the table's oid from its quoted name; NULL when there is no such table
TABLE_OID = "SELECT to_regclass($1)::oid"
# the table's columns in order: name, type (format_type), nullable, generated (STORED, or identity ALWAYS),
# given a value on INSERT (identity, or a nextval() default: serial)
TABLE_COLUMNS = (
    "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull, "
    "a.attgenerated <> '' OR a.attidentity = 'a', "
    "a.attidentity <> '' OR coalesce(pg_get_expr(d.adbin, d.adrelid) LIKE 'nextval(%', false) "
    "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
    "WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum")
# the table's unique indexes on plain columns (no expression, not partial): primary or not, and their columns
UNIQUE_INDEXES = (
    "SELECT i.indisprimary, ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY AS k(n, o) "
    "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o) "
    "FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique AND i.indpred IS NULL "
    "AND i.indexprs IS NULL")
# the table's user triggers that fire on UPDATE (tgtype bit 16), row or statement level, by name
UPDATE_TRIGGERS = ("SELECT tgname FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal "
                   "AND tgtype & 16 <> 0 ORDER BY tgname")
# the planner's row estimate of the table (reltuples; -1 when never analyzed)
ESTIMATE_ROWS = "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)"
# a type's name as format_type() spells it, from its oid
TYPE_NAME = "SELECT format_type($1::oid, NULL)"

# --- the session and the cluster
# the server's deadlock_timeout, in seconds
DEADLOCK_TIMEOUT_S = "SELECT setting::float8 / 1000 FROM pg_settings WHERE name = 'deadlock_timeout'"
# the current snapshot's xmin and xmax, as numbers (equal: no transaction holding an id is in progress)
XID_SNAPSHOT = ("SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint "
                "FROM pg_current_snapshot() AS s")

# --- the heartbeat: one row per writer holding its clock
# creates the heartbeat table
HEARTBEAT_DDL = ("CREATE TABLE IF NOT EXISTS {table} (writer varchar(128) PRIMARY KEY, "
                 "ts double precision NOT NULL)")
# stores a writer's clock
HEARTBEAT_WRITE = ("INSERT INTO {table} (writer, ts) VALUES ($1, $2) ON CONFLICT (writer) DO UPDATE "
                   "SET ts = EXCLUDED.ts")
# the WAL position just past what this session committed
WAL_POSITION = "SELECT pg_current_wal_lsn()::text"
# a writer's clock as a replica has it
HEARTBEAT_READ = "SELECT ts FROM {table} WHERE writer = $1"

# --- replication
# on a standby: in recovery, replay paused, seconds behind the last replayed commit (0 when caught up), the
# WAL receiver's status
REPLICA_LAG = (
    "SELECT pg_is_in_recovery(), pg_is_in_recovery() AND pg_is_wal_replay_paused(), "
    "CASE WHEN NOT pg_is_in_recovery() THEN NULL "
    "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END, "
    "(SELECT status FROM pg_stat_wal_receiver)")
# on a primary: the physical standbys streaming from it (pid, name, address, replayed WAL position)
ATTACHED_REPLICAS = ("SELECT pid, application_name, coalesce(host(client_addr), 'local'), "
                     "replay_lsn::text FROM pg_stat_replication WHERE state = 'streaming' "
                     "ORDER BY 2, 3, 1")

# --- load and the application
# A role without pg_read_all_stats sees other roles' sessions with state and backend_type NULL: such a row
# (with a user: not an auxiliary process) may be a client running a statement, so it is counted as hidden,
# which the engine refuses to read as "idle".
# client sessions running a statement now, other than this one; and those whose state this role cannot see
LOAD = ("SELECT count(*) FILTER (WHERE state = 'active' AND backend_type = 'client backend'), "
        "count(*) FILTER (WHERE backend_type IS NULL AND usesysid IS NOT NULL) "
        "FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
# the application's sessions (every client session but backfilld's): active ones, those waiting for a lock a
# backfilld session holds, the longest of those waits (s), and those whose state this role cannot see
APP_ACTIVITY = """
WITH app AS (
    SELECT pid, state, wait_event_type FROM pg_stat_activity
    WHERE (backend_type = 'client backend' OR backend_type IS NULL AND usesysid IS NOT NULL)
      AND pid <> pg_backend_pid() AND coalesce(application_name, '') NOT LIKE 'backfilld%'
), ours AS (
    SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'backfilld%'
), behind AS (   -- pg_blocking_pids() once per waiting session: it takes the lock manager's locks
    SELECT DISTINCT a.pid FROM app AS a CROSS JOIN LATERAL unnest(pg_blocking_pids(a.pid)) AS b(pid)
    WHERE a.wait_event_type = 'Lock' AND b.pid IN (SELECT pid FROM ours)
)
SELECT (SELECT count(*) FROM app WHERE state = 'active'),
       (SELECT count(*) FROM behind),
       (SELECT coalesce(max(extract(epoch FROM clock_timestamp() - l.waitstart)), 0)::float8
          FROM pg_locks AS l WHERE NOT l.granted AND l.pid IN (SELECT pid FROM behind)),
       (SELECT count(*) FROM app WHERE state IS NULL)
"""

# --- plan's assessment: grants, sizes, the WAL's settings, indexes (read-only)
# the configured user as the server names it (GRANT ... TO it)
CURRENT_USER = "SELECT current_user::text"
# of the privileges $2 on the table $1 (quoted), whether this user holds each (NULL: no such table)
TABLE_PRIVILEGES = "SELECT p, has_table_privilege(to_regclass($1), p) FROM unnest($2::text[]) AS p"
# of the columns $3 of the table $1 (quoted), whether this user holds the privilege $2 on each (a table-level
# grant counts)
COLUMN_PRIVILEGES = "SELECT c, has_column_privilege(to_regclass($1), c, $2) FROM unnest($3::text[]) AS c"
# the schema $1 (NULL: where an unqualified CREATE TABLE puts a table) and whether this user may create in it
SCHEMA_CREATE = ("SELECT s, has_schema_privilege(s, 'CREATE') FROM (SELECT COALESCE($1::text, "
                 "current_schema()::text) AS s) AS bf_s WHERE s IS NOT NULL")
# the sequences the DEFAULT of column $2 of table $1 (quoted) calls nextval() on (a serial's; an identity column
# has no DEFAULT: it needs no grant of its own), each as SQL (schema and name quoted as needed)
DEFAULT_SEQUENCE = ("SELECT quote_ident(n.nspname) || '.' || quote_ident(s.relname) FROM pg_attribute a JOIN "
                    "pg_attrdef ad ON ad.adrelid = a.attrelid "
                    "AND ad.adnum = a.attnum JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND "
                    "dep.objid = ad.oid AND dep.refclassid = 'pg_class'::regclass JOIN pg_class s ON s.oid = "
                    "dep.refobjid AND s.relkind = 'S' JOIN pg_namespace n ON n.oid = s.relnamespace WHERE "
                    "a.attrelid = to_regclass($1) AND a.attname = $2 ORDER BY 1")
# whether this user holds USAGE on the sequence $1 (DEFAULT_SEQUENCE's form), found by its oid in the catalog: a
# lookup by name would need USAGE on its schema, which the INSERT does not (the DEFAULT holds the oid)
SEQUENCE_USAGE = ("SELECT has_sequence_privilege(s.oid, 'USAGE') FROM pg_class s JOIN pg_namespace n ON n.oid = "
                  "s.relnamespace WHERE s.relkind = 'S' AND quote_ident(n.nspname) || '.' || quote_ident(s.relname) "
                  "= $1")
# whether this user has the privileges of the role $1 (a member of it, or of one that is: pg_monitor)
HAS_ROLE = "SELECT pg_has_role($1, 'USAGE')"
# the table's data on disk (main fork, bytes) and the planner's row count (reltuples; -1: never analyzed)
TABLE_SIZE = "SELECT pg_relation_size(oid), reltuples::bigint FROM pg_class WHERE oid = to_regclass($1)"
# the WAL's settings a run's volume depends on
WAL_SETTINGS = ("SELECT name, setting FROM pg_settings WHERE name IN ('wal_level', 'full_page_writes', "
                "'wal_compression', 'block_size') ORDER BY name")
# the names of the table's partial indexes (those holding only rows that match their WHERE)
PARTIAL_INDEXES = ("SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                   "WHERE i.indrelid = to_regclass($1) AND i.indpred IS NOT NULL")
# for the rest of the transaction, the planner takes a table scan only where no index can serve
NO_SEQSCAN = "SET LOCAL enable_seqscan = off"
