"""MySQL's and MariaDB's static statements, one name each: the session, the catalog, the lease, the heartbeat,
replication, load and the application's sessions.

Owns: the text of every constant statement MySQLEngine runs, in the driver's form (%s placeholders, a literal
% doubled). A `{...}` in one is filled in by the engine: `{table}` the table as the dialect quotes it, escaped
for the driver (MySQLDialect.finish); a number it computed itself. Statements built from a job (batches,
verify) come from engines/statements.py; sync triggers from the trigger module.
"""

# what follows backfilld's own CREATE TABLEs (the state table, the heartbeat)
TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"

# --- the session, at connect
# how long a row lock is waited for, in whole seconds ({seconds}: at least 1)
ROW_LOCK_WAIT_S = "SET SESSION innodb_lock_wait_timeout = {seconds}"
# how long a metadata lock (an ALTER's) is waited for, in whole seconds
METADATA_LOCK_WAIT_S = "SET SESSION lock_wait_timeout = {seconds}"
# every wait on the server bounded: MariaDB cancels a statement past max_statement_time (seconds) and ends a
# session whose transaction sat idle past idle_transaction_timeout (whole seconds), releasing its row locks
MARIADB_BOUNDS = "SET SESSION max_statement_time = {statement_s}, idle_transaction_timeout = {idle_s}"
# MySQL 8 bounds only SELECTs (milliseconds) and has no idle-transaction timeout (the client's deadline, then
# wait_timeout, end such a session)
MYSQL_BOUNDS = "SET SESSION max_execution_time = {statement_ms}"
# the connection's character set
SET_NAMES = "SET NAMES utf8mb4"
# room for a batch's locked keys in one GROUP_CONCAT (MySQLEngine.plan): 64 MiB, allocated only as used
GROUP_CONCAT_MAX = "SET SESSION group_concat_max_len = 67108864"
# the server's version, whether it logs, its binlog format, this connection's id, innodb_rollback_on_timeout
SERVER_FACTS = ("SELECT VERSION(), @@log_bin, @@session.binlog_format, CONNECTION_ID(), "
                "@@innodb_rollback_on_timeout")
# whether the server logs, and this session's binlog format
BINLOG_FORMAT = "SELECT @@log_bin, @@session.binlog_format"
# this session's transactions in READ COMMITTED (no gap or next-key locks)
READ_COMMITTED = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"

# --- the lease: a named user lock, server-wide
# takes the lease if no session holds it (1), else 0 at once
TRY_LEASE = "SELECT GET_LOCK(%s, 0)"
# the connection id holding the lease, or NULL
LEASE_HOLDER = "SELECT IS_USED_LOCK(%s)"
# releases every user lock of this session (the lease), before the connection closes
RELEASE_LOCKS = "SELECT RELEASE_ALL_LOCKS()"

# --- the catalog: a table by schema (NULL: the connection's database) and name
_IN_TABLE = "TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s"
# the table's columns in order: name, type, nullable, collation, EXTRA (generated, on update)
TABLE_COLUMNS = (f"SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME, EXTRA FROM information_schema.COLUMNS "
                 f"WHERE {_IN_TABLE} ORDER BY ORDINAL_POSITION")
# the columns of the table's unique indexes, by index (PRIMARY is the primary key)
UNIQUE_INDEX_COLUMNS = (f"SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE {_IN_TABLE} "
                        "AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX")
# the table's triggers that fire on UPDATE, in the order they fire
UPDATE_TRIGGERS = ("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = "
                   "COALESCE(%s, DATABASE()) AND EVENT_OBJECT_TABLE = %s AND EVENT_MANIPULATION = 'UPDATE' "
                   "ORDER BY ACTION_ORDER")
# InnoDB's row estimate of the table
ESTIMATE_ROWS = ("SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) "
                 "AND TABLE_NAME = %s")

# --- the heartbeat: one row per writer holding its clock
# creates the heartbeat table
HEARTBEAT_DDL = ("CREATE TABLE IF NOT EXISTS {table} (writer varchar(128) NOT NULL PRIMARY KEY, "
                 f"ts double NOT NULL) {TABLE_OPTIONS}")
# stores a writer's clock
HEARTBEAT_WRITE = "INSERT INTO {table} (writer, ts) VALUES (%s, %s) ON DUPLICATE KEY UPDATE ts = VALUES(ts)"
# a writer's clock as a replica has it
HEARTBEAT_READ = "SELECT ts FROM {table} WHERE writer = %s"

# --- replication
# on a replica: its threads, positions and Seconds_Behind_Source (MariaDB 10.5+, MySQL 8.0.22+)
REPLICA_STATUS = "SHOW REPLICA STATUS"
# the same on older servers
SLAVE_STATUS = "SHOW SLAVE STATUS"

# --- load and the application
# threads running a statement now, this one included
THREADS_RUNNING = "SHOW GLOBAL STATUS LIKE 'Threads_running'"
# sessions running a statement now but backfilld's ({own}: their connection ids, as integers)
ACTIVE_SESSIONS = ("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND IN ('Query', 'Execute') "
                   "AND ID NOT IN ({own})")
# application transactions waiting for a lock held by one of backfilld's sessions (own: their connection ids;
# waits, req, blk: the lock-wait table and its columns, which differ between MariaDB and MySQL 8.0)
LOCK_WAITS = """
SELECT DISTINCT r.trx_id
FROM {waits} AS w
JOIN information_schema.INNODB_TRX AS r ON r.trx_id = w.{req}
JOIN information_schema.INNODB_TRX AS b ON b.trx_id = w.{blk}
WHERE b.trx_mysql_thread_id IN ({own}) AND r.trx_mysql_thread_id NOT IN ({own})
"""

# --- plan's assessment: grants, sizes, the binlog's settings (read-only)
# the account this session authenticated as (user@host) and the role in force (NULL, or NONE on MySQL: none)
CURRENT_ACCOUNT = "SELECT CURRENT_USER(), CURRENT_ROLE()"
# the same on a server without roles
CURRENT_ACCOUNT_ONLY = "SELECT CURRENT_USER(), NULL"
# the connection's database (the schema of an unqualified table)
CURRENT_DATABASE = "SELECT DATABASE()"
# the grantee's privileges, at each level ({grantee}: a %s placeholder; a schema's name may be a LIKE pattern)
USER_PRIVILEGES = "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = %s"
SCHEMA_PRIVILEGES = "SELECT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = %s"
TABLE_PRIVILEGES = ("SELECT TABLE_SCHEMA, TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES "
                    "WHERE GRANTEE = %s")
COLUMN_PRIVILEGES = ("SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, PRIVILEGE_TYPE FROM "
                     "information_schema.COLUMN_PRIVILEGES WHERE GRANTEE = %s")
# the table's data on disk (bytes), its average row (bytes) and row estimate, as InnoDB's statistics have them
TABLE_SIZE = ("SELECT DATA_LENGTH, AVG_ROW_LENGTH, TABLE_ROWS FROM information_schema.TABLES "
              f"WHERE {_IN_TABLE}")
# whether the server logs, and this session's binlog format and row image
BINLOG_SETTINGS = "SELECT @@log_bin, @@session.binlog_format, @@session.binlog_row_image"
