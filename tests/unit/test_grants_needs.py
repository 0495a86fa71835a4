"""The privileges a job needs, as plan lists them (engines/grants.py), and the pieces its estimates are made of."""

from __future__ import annotations

from backfilld.engines import grants
from backfilld.engines.assessment import approx_width, bare_ident, index_name
from backfilld.engines.grants import JobAccess, Need
from backfilld.engines.mysql.engine import _Grants, _like

BASE = JobAccess(table="app.users", reads=("id", "name", "label"), writes=("label",), state_table="bf_state",
                 state_exists=True)


def listed(a: JobAccess) -> list[tuple[tuple[str, ...], str, str, tuple[str, ...], str]]:
    return [(n.privileges, n.on, n.name, n.columns, n.level) for n in grants.needs(a)]


def test_a_job_needs_select_on_what_it_reads_update_on_its_targets_and_its_state_table() -> None:
    assert listed(BASE) == [(("SELECT",), "table", "app.users", ("id", "name", "label"), "required"),
                            (("UPDATE",), "table", "app.users", ("label",), "required"),
                            (("SELECT", "INSERT", "UPDATE"), "table", "bf_state", (), "required")]


def test_without_a_state_table_it_needs_create_where_the_table_goes() -> None:
    needs = grants.needs(JobAccess(**{**BASE.__dict__, "state_exists": False, "state_table": "ops.bf_state"}))
    [create] = [n for n in needs if n.on == "schema"]
    assert (create.privileges, create.name, create.level) == (("CREATE",), "ops", "required")
    assert "or a DBA creates it beforehand and grants SELECT, INSERT, UPDATE on it" in create.why


def test_probes_heartbeat_replicas_and_triggers_add_needs_at_their_level() -> None:
    a = JobAccess(**{**BASE.__dict__, "sessions": "the application probe", "heartbeat_table": "hb",
                     "heartbeat_exists": False, "heartbeat_level": "optional", "replicas": ("r1",),
                     "triggers": True, "trigger_function_schema": True, "skipped_table": "bf_state_skipped"})
    got = listed(a)[3:]
    assert got == [(("CREATE",), "schema", "", (), "required"),                 # the skipped rows' table
                   (("CREATE",), "schema", "", (), "optional"),                 # the heartbeat, no standby streams
                   ((grants.SESSIONS,), "server", "", (), "recommended"),
                   (("SELECT",), "table", "hb", (), "required"),                # on the replica
                   (("TRIGGER",), "table", "app.users", (), "optional"),
                   (("CREATE",), "schema", "app", (), "optional")]
    assert [n.where for n in grants.needs(a)][6] == "replicas"
    native = grants.needs(JobAccess(**{**a.__dict__, "replica_lag_native": True}))
    assert [n.privileges for n in native if n.where == "replicas"] == [(grants.REPLICA_STATUS,)]


def test_lacking_leaves_out_the_optional_and_the_unchecked() -> None:
    need = Need(("UPDATE",), "table", "t", ("a",))
    optional = Need(("TRIGGER",), "table", "t", level="optional")
    held = [grants.Held(need, False, "GRANT ..."), grants.Held(optional, False), grants.Held(need, None),
            grants.Held(need, True)]
    assert grants.lacking(held) == [held[0]]


def test_mysql_grants_count_at_every_level_and_by_column() -> None:
    owned = _Grants({"PROCESS"}, [("te\\_st%", "INSERT")], {("test", "t", "UPDATE")},
                    {("test", "t", "a", "SELECT"), ("test", "t", "b", "SELECT")})
    assert owned.missing(Need((grants.SESSIONS,), "server"), "", "") is None
    assert owned.missing(Need(("SELECT",), "table", "t", ("a", "b", "c")), "test", "t") == (("c",), ("SELECT",))
    assert owned.missing(Need(("UPDATE",), "table", "t", ("c",)), "test", "t") is None
    assert owned.missing(Need(("INSERT", "DELETE"), "table", "t"), "te_st2", "t") == ((), ("DELETE",))
    assert owned.missing(Need(("INSERT",), "table", "t"), "teXst", "t") == ((), ("INSERT",))   # \_ is a _
    assert _like("db%", "db_one") and not _like("db", "dbx")


def test_widths_names_and_identifiers() -> None:
    assert [approx_width(t) for t in ("bigint(20)", "integer", "varchar(3)", "character varying(200)", "text",
                                      "timestamp with time zone", "uuid")] == [8, 4, 3, 32, 32, 8, 16]
    assert bare_ident("label", lower_only=True) and not bare_ident("Label", lower_only=True)
    assert bare_ident("Label", lower_only=False) and not bare_ident("user", lower_only=False)
    assert index_name("a.b-c") == "bf_pending_a_b_c" and len(index_name("x" * 80)) == 63
