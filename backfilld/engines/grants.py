"""The privileges a job needs, declared once: `plan` checks them against the live server and prints the
statements that grant what is lacking; README (Trust boundaries: minimal grants) lists the same;
tests/acceptance/test_grants.py grants exactly the required ones and runs a job.

Owns: Need (one privilege on one object, why the job needs it, and what happens without it), Held (a Need as the
server answered for the configured user) and needs(), which derives a job's list from what it reads and writes
and from the config's probes. Delegates checking and the GRANT's spelling to each engine (Engine.privileges):
names such as "sessions" below are what a privilege is for, which each engine maps to its own (PostgreSQL
pg_read_all_stats, MySQL/MariaDB PROCESS). Knows no engine by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from backfilld.engines.sqltext import split_table

# How much a need matters: required (the job fails without it), recommended (the job runs, slower or with a
# probe failing closed), optional (only for a command besides `run`, such as `triggers install`).
Level = Literal["required", "recommended", "optional"]

# Server-wide abilities, by what they are for; each engine maps them to its own privilege or role
# (Engine.privileges): reading other sessions' state and lock waits (the application probe, the load probe,
# PostgreSQL's replay positions of streaming standbys), and reading a replica's own lag figures.
SESSIONS = "sessions"
REPLICA_STATUS = "replica status"


@dataclass(frozen=True)
class Need:
    """One privilege (or a few, granted together) on one object."""

    privileges: tuple[str, ...]               # SELECT, UPDATE, ...; or one of the server-wide names above
    on: Literal["table", "schema", "server", "sequence"]
    name: str = ""                            # the table; the schema ("" : the connection's own); "" for server;
                                              # a sequence as SQL (schema.name, quoted as needed)
    columns: tuple[str, ...] = ()             # column-level grants: these columns only
    why: str = ""
    level: Level = "required"
    without: str = ""                         # what happens without it
    where: Literal["primary", "replicas"] = "primary"   # plan checks the primary's only
    purpose: str = ""                         # what it is for, in a few words ("the state table")

    def as_dict(self) -> dict[str, object]:
        return {"privileges": list(self.privileges), "on": self.on, "name": self.name, "columns": list(self.columns),
                "purpose": self.purpose, "why": self.why, "level": self.level, "where": self.where,
                "without": self.without}


@dataclass(frozen=True)
class Held:
    """A need as the server answered for the configured user. held None: not checked (detail says why)."""

    need: Need
    held: bool | None
    grant: str = ""                            # the statement granting what is lacking (all of it when unchecked)
    missing_columns: tuple[str, ...] = ()      # of need.columns, those the user lacks
    detail: str = ""
    called: str = ""                  # as the engine names it: a server-wide need (pg_read_all_stats), a schema

    def as_dict(self) -> dict[str, object]:
        return {**self.need.as_dict(), "held": self.held, "grant": self.grant,
                **({"called": self.called} if self.called else {}),
                **({"missing_columns": list(self.missing_columns)} if self.missing_columns else {}),
                **({"detail": self.detail} if self.detail else {})}


@dataclass(frozen=True)
class JobAccess:
    """What one job reads and writes, and what its run needs besides, as plan finds it (the inputs of needs())."""

    table: str
    reads: tuple[str, ...]                    # every column it reads: key, filter, sources, targets
    writes: tuple[str, ...]                   # its targets
    state_table: str
    state_exists: bool
    skipped_table: str | None = None          # on_error = "skip": the table of rows a transform skipped
    skipped_exists: bool = False
    triggers: bool = False                    # sync triggers are available to it (a SQL-expression job)
    trigger_function_schema: bool = False     # the engine's triggers call a function created in the schema
    sessions: str | None = None               # why the run reads other sessions (None: it does not)
    heartbeat_table: str | None = None        # the heartbeat it writes on the primary (None: none)
    heartbeat_exists: bool = False
    heartbeat_level: Level = "required"
    replicas: tuple[str, ...] = ()            # configured replicas, by name
    replica_lag_native: bool = False          # the replicas' own lag figures are read (lag_probe = "native")
    lookup_table: str | None = None           # lookup jobs: the lookup table, read and inserted into
    lookup_reads: tuple[str, ...] = ()        # its id and match columns
    lookup_inserts: tuple[str, ...] = ()      # its match and values columns, set in the rows a batch creates
    lookup_conflict_updates: tuple[str, ...] = ()   # columns the INSERT's on-conflict clause assigns (MySQL: id)
    lookup_sequence: str | None = None        # the sequence its id's DEFAULT draws from (a PostgreSQL serial)


def _schema(table: str) -> str:
    """The schema a table is in as configured ("": the connection's own)."""
    return split_table(table)[0] or ""


def _table_or_create(table: str, exists: bool, schema: str, privileges: tuple[str, ...], why: str,
                     purpose: str) -> Need:
    if exists:   # created beforehand (by a DBA, with grants of its own): no CREATE then
        return Need(privileges, "table", table, why=why, without="the run fails at its first write of it",
                    purpose=purpose)
    return Need(("CREATE",), "schema", schema, why=f"{why}: it does not exist yet, and the run creates it "
                f"(or a DBA creates it beforehand and grants {', '.join(privileges)} on it)",
                without=f"the run fails naming both ways out ({table} does not exist and cannot be created)",
                purpose=f"{purpose} (to create it)")


def needs(a: JobAccess) -> list[Need]:
    """Every privilege the job's run (and `triggers install`, optional) needs, in the order plan lists them."""
    out = [
        Need(("SELECT",), "table", a.table, a.reads, why="the job reads these columns (key, filter, sources, "
             "targets); column-level grants are enough", without="preflight fails: nothing is written",
             purpose="the job's reads"),
        Need(("UPDATE",), "table", a.table, a.writes, why="the job writes its targets (column-level: sources are "
             "never written)", without="the first batch fails naming the table; nothing is written",
             purpose="the job's writes"),
    ]
    if a.lookup_table is not None:
        out.append(Need(("SELECT",), "table", a.lookup_table, a.lookup_reads, why="each batch looks up the lookup "
                        "rows of its range", without="preflight fails: nothing is written", purpose="the lookup table"))
        out.append(Need(("INSERT",), "table", a.lookup_table, a.lookup_inserts, why="each batch creates the "
                        "lookup rows its range lacks", without="the first batch that creates one fails",
                        purpose="the lookup table"))
        if a.lookup_conflict_updates:
            out.append(Need(("UPDATE",), "table", a.lookup_table, a.lookup_conflict_updates, why="the INSERT "
                            "leaves a row another session created as it is with a no-op update of its id",
                            without="the first batch that creates one fails", purpose="the lookup table"))
        if a.lookup_sequence:
            out.append(Need(("USAGE",), "sequence", a.lookup_sequence, why="the lookup rows a batch creates take "
                            "their ids from it (the id column's DEFAULT nextval)",
                            without="the first batch that creates one fails", purpose="the lookup table's ids"))
    out += [
        _table_or_create(a.state_table, a.state_exists, _schema(a.state_table),
                         ("SELECT", "INSERT", "UPDATE"), f"the state table {a.state_table} holds the checkpoint",
                         "the state table"),
    ]
    if a.skipped_table is not None:
        out.append(_table_or_create(a.skipped_table, a.skipped_exists, _schema(a.skipped_table),
                                    ("SELECT", "INSERT", "DELETE"),
                                    f"on_error = \"skip\" records skipped rows in {a.skipped_table}",
                                    "the skipped rows' table"))
    if a.heartbeat_table is not None:
        hb = _table_or_create(a.heartbeat_table, a.heartbeat_exists, _schema(a.heartbeat_table),
                              ("SELECT", "INSERT", "UPDATE"),
            f"the heartbeat table {a.heartbeat_table} carries this host's clock to the replicas", "the heartbeat table")
        out.append(Need(hb.privileges, hb.on, hb.name, why=hb.why, level=a.heartbeat_level, purpose=hb.purpose,
                        without="the replicas' lag cannot be read: the job throttles (fails closed)"))
    if a.sessions is not None:
        out.append(Need((SESSIONS,), "server", why=a.sessions, level="recommended", purpose="the probes",
                        without="the probe fails (probe_failed names the grant) and the job runs at the busy pace"))
    for name in a.replicas:
        if a.replica_lag_native:
            out.append(Need((REPLICA_STATUS,), "server", why=f"the lag probe reads replica {name}'s own lag",
                            where="replicas", purpose=f"replica {name}'s lag",
                            without="that replica's lag cannot be read: the job throttles"))
        elif a.heartbeat_table is not None:
            out.append(Need(("SELECT",), "table", a.heartbeat_table, why=f"the lag probe reads the heartbeat on "
                            f"replica {name}", where="replicas", purpose=f"replica {name}'s lag",
                            without="that replica's lag cannot be read: the job throttles"))
    if a.triggers:
        out.append(Need(("TRIGGER",), "table", a.table, why="`backfilld triggers install` creates the job's sync "
                        "triggers", level="optional", without="`triggers install` fails; `run` does not need it",
                        purpose="sync triggers"))
        if a.trigger_function_schema:
            out.append(Need(("CREATE",), "schema", _schema(a.table), why="`backfilld triggers "
                            "install` creates the sync triggers' function", level="optional",
                            without="`triggers install` fails; `run` does not need it",
                            purpose="the sync triggers' function"))
    return out


def lacking(held: Sequence[Held], levels: Sequence[Level] = ("required", "recommended")) -> list[Held]:
    """Of the checked needs at these levels, those the user lacks."""
    return [h for h in held if h.held is False and h.need.level in levels]
