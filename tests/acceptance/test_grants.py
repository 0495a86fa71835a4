"""The least privileges a job needs (README, Trust boundaries: minimal grants), proved on PostgreSQL and MariaDB: a
user holding exactly those runs a job to completion and verifies it, as a process, its password read as a systemd
credential (password_file = "%d/..."); each grant taken away gives the error backfilld prints for it, and a
missing one that writes nothing more than it should. The grants are the list `plan` checks and prints
(backfilld/engines/grants.py, spelled by the engine's grant_sql), so these tests prove that list; and `plan`, run
as such a user, names what it lacks with the statement that grants it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from backfilld import daemon, state
from backfilld.assess import access
from backfilld.config import from_dict
from backfilld.engines import grants
from backfilld.preflight import prepare
from tests.acceptance.test_cli import backfilld
from tests.dbutil import TestDb

pytestmark = pytest.mark.parametrize("engine_name", ["postgresql", "mysql"])
ROWS = 2000

# per engine: the job's expression
EXPR = {"postgresql": "name || '!'", "mysql": "CONCAT(name, '!')"}


class User:
    """A database user unique to the test, with a password, dropped afterwards."""

    def __init__(self, db: TestDb) -> None:
        self.db, self.name = db, db.name("bfuser")
        self.password = f"pw-{self.name}"
        self.sql = f'"{self.name}"' if db.engine_name == "postgresql" else f"'{self.name}'@'%'"

    async def create(self) -> None:
        if self.db.engine_name == "postgresql":
            await self.db.engine.execute(f"CREATE ROLE {self.sql} LOGIN PASSWORD '{self.password}'")
        else:
            await self.db.engine.execute(f"CREATE USER {self.sql} IDENTIFIED BY '{self.password}'")

    async def grant(self, template: str, **names: str) -> None:
        await self.db.engine.execute(template.format(user=self.sql, **names))

    async def drop(self) -> None:
        if self.db.engine_name == "postgresql":
            await self.db.engine.execute(f"DROP OWNED BY {self.sql}")
            await self.db.engine.execute(f"DROP ROLE IF EXISTS {self.sql}")
        else:
            await self.db.engine.execute(f"DROP USER IF EXISTS {self.sql}")


def config(tmp_path: Path, db: TestDb, user: User, table: str) -> tuple[Path, dict[str, str]]:
    """The job's config connecting as the user, and the environment a systemd unit with
    LoadCredential=db-password:... gives the daemon."""
    creds = tmp_path / "credentials"
    creds.mkdir(exist_ok=True)
    (creds / "db-password").write_text(user.password + "\n", encoding="utf-8")
    u = urlsplit(db.url)
    path = tmp_path / "backfilld.toml"
    path.write_text(f"""
[database]
url = "{u.scheme}://{user.name}@{u.hostname}:{u.port}{u.path}"
password_file = "%d/db-password"
[state]
table = "{db.state_table}"
[logging]
format = "json"
[metrics]
listen = ""
[throttle]
min_batch = 200
max_batch = 200
[[jobs]]
name = "j"
table = "{table}"
batch_size = 200
[jobs.set]
label = "{EXPR[db.engine_name]}"
""", encoding="utf-8")
    db.created.append(db.state_table)
    return path, {"CREDENTIALS_DIRECTORY": str(creds)}


def events(proc: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]


@pytest.fixture
async def user(db: TestDb) -> Any:
    u = User(db)
    await u.create()
    try:
        yield u
    finally:
        for t in reversed(db.created):   # the user's grants on them go first (PostgreSQL: DROP OWNED)
            await db.engine.execute(f"DROP TABLE IF EXISTS {t}")
        db.created.clear()
        await u.drop()


async def needs(db: TestDb, table: str) -> list[grants.Need]:
    """The job's needs as plan derives them (the admin's connection: what it holds itself does not matter)."""
    cfg = db.config([{"name": "j", "table": table, "set": {"label": EXPR[db.engine_name]}}])
    job = cfg.job("j")
    return grants.needs(await access(db.engine, cfg, job, await prepare(db.engine, job)))


async def setup(db: TestDb, user: User, *, state_table: bool = True, probe: bool = True,
                update: bool = True) -> str:
    """The table, and the grants plan lists as required, and the probes' (all of them unless one is left out):
    a state table created beforehand (as a DBA would, with grants of its own: no CREATE for backfilld), or the
    CREATE it needs left out."""
    table = await db.users_with(ROWS)
    if state_table:
        await db.engine.execute(state.ddl(db.engine.dialect, db.state_table))
        db.created.append(db.state_table)
    for need in await needs(db, table):
        wanted = need.level == "required" or (probe and need.on == "server")
        if not update and need.privileges == ("UPDATE",) and need.name == table:
            wanted = False
        if wanted and need.on != "schema":   # CREATE only ever where there is no state table: left out then
            await db.engine.execute(await db.engine.grant_sql(need, user.sql))  # type: ignore[attr-defined]
    return table


async def test_the_minimal_grants_run_a_job_to_completion_and_verify_it(db: TestDb, user: User,
                                                                      tmp_path: Path) -> None:
    table = await setup(db, user)
    cfg, env = config(tmp_path, db, user, table)
    run = backfilld("run", str(cfg), env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = [e["event"] for e in events(run)]
    assert "job_completed" in seen and "probe_failed" not in seen, run.stderr[-3000:]
    verify = backfilld("verify", str(cfg), env=env)
    assert verify.returncode == 0 and "every row is right" in verify.stdout, verify.stdout + verify.stderr
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NULL") == [(0,)]


async def test_without_update_the_first_batch_fails_naming_the_table(db: TestDb, user: User, tmp_path: Path) -> None:
    table = await setup(db, user, update=False)
    cfg, env = config(tmp_path, db, user, table)
    run = backfilld("run", str(cfg), env=env)
    said = {"postgresql": f"42501: permission denied for table {table}",
            "mysql": "1142: UPDATE command denied to user"}[db.engine_name]
    assert run.returncode == 1 and said in run.stderr.splitlines()[-1], run.stderr[-3000:]
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL") == [(0,)]


async def test_without_a_state_table_or_create_the_error_says_both_ways_out(db: TestDb, user: User,
                                                                           tmp_path: Path) -> None:
    table = await setup(db, user, state_table=False)
    cfg, env = config(tmp_path, db, user, table)
    run = backfilld("run", str(cfg), env=env)
    last = run.stderr.splitlines()[-1]
    assert run.returncode == 1 and f"the state table '{db.state_table}' does not exist and cannot be created" in last
    assert "grant backfilld's user CREATE" in last and "create it beforehand" in last, last
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NOT NULL") == [(0,)]


async def test_without_the_probe_grant_the_probe_names_it_and_the_job_still_completes(db: TestDb, user: User,
                                                                                     tmp_path: Path) -> None:
    """The probe fails closed (the application counts as busy: the job goes on at the busy pace) and says which
    grant it lacks. On PostgreSQL an application's session of another user is there for it to see (the test's own
    connection is named backfilld, and so is left out)."""
    table = await setup(db, user, probe=False)
    cfg, env = config(tmp_path, db, user, table)
    app = await asyncpg.connect(db.url) if db.engine_name == "postgresql" else None
    try:
        run = backfilld("run", str(cfg), env=env)
    finally:
        if app is not None:
            await app.close()
    assert run.returncode == 0, run.stderr[-3000:]
    failed = [e for e in events(run) if e["event"] == "probe_failed"]
    grant = {"postgresql": "pg_read_all_stats", "mysql": "PROCESS privilege"}[db.engine_name]
    assert failed and all(grant in e["error"] for e in failed), failed
    assert await db.q(f"SELECT count(*) FROM {table} WHERE label IS NULL") == [(0,)]


def config_as(db: TestDb, user: User, jobs: list[dict[str, Any]], tmp_path: Path) -> Any:
    """A config connecting as the user (in-process: its password in a file)."""
    secret = tmp_path / "password"
    secret.write_text(user.password, encoding="utf-8")
    u = urlsplit(db.url)
    return from_dict({"database": {"url": f"{u.scheme}://{user.name}@{u.hostname}:{u.port}{u.path}",
                                   "password_file": str(secret)},
                      "state": {"table": db.state_table}, "logging": {"level": "warning", "format": "json"},
                      "metrics": {"listen": ""}, "jobs": jobs})


async def plan_as(db: TestDb, user: User, table: str, tmp_path: Path) -> dict[str, Any]:
    """`plan` in-process, connected as the user."""
    [report] = await daemon.plan(config_as(db, user, [{"name": "j", "table": table,
                                                       "set": {"label": EXPR[db.engine_name]}}], tmp_path))
    return report


async def test_plan_names_the_grant_the_user_lacks_with_the_statement_that_gives_it(db: TestDb, user: User,
                                                                                   tmp_path: Path) -> None:
    table = await setup(db, user, update=False)
    report = await plan_as(db, user, table, tmp_path)
    priv = report["privileges"]
    to = user.name if db.engine_name == "postgresql" else f"'{user.name}'@'%'"
    on = table if db.engine_name == "postgresql" else f"test.{table}"
    grant = f"GRANT UPDATE (label) ON {on} TO {to}"
    assert priv["checked"] and priv["lacking"] == [grant], priv
    [warning] = [w for w in report["warnings"] if "lacks" in w]
    who = user.name if db.engine_name == "postgresql" else f"{user.name}@%"   # as the server names the user
    assert warning.startswith(f"{who} lacks UPDATE (label) on {table} (required") \
        and warning.endswith(f"grant it: {grant}"), warning
    held = {(tuple(n["privileges"]), n["name"]): n["held"] for n in priv["needs"]}
    assert held[(("SELECT",), table)] is True and held[(("UPDATE",), table)] is False
    assert held[(("SELECT", "INSERT", "UPDATE"), db.state_table)] is True
    assert held[((grants.SESSIONS,), "")] is True
    assert held[(("TRIGGER",), table)] is False   # optional: listed, never a warning
    assert not any("TRIGGER" in w for w in report["warnings"])


async def test_with_the_grants_plan_lists_nothing_is_lacking(db: TestDb, user: User, tmp_path: Path) -> None:
    table = await setup(db, user)
    report = await plan_as(db, user, table, tmp_path)
    priv = report["privileges"]
    assert priv["checked"] and priv["lacking"] == [], priv
    assert all(n["held"] for n in priv["needs"] if n["level"] == "required"), priv["needs"]
    assert not [w for w in report["warnings"] if "lacks" in w], report["warnings"]


async def test_without_the_probe_grant_plan_names_it(db: TestDb, user: User, tmp_path: Path) -> None:
    table = await setup(db, user, probe=False)
    report = await plan_as(db, user, table, tmp_path)
    to = user.name if db.engine_name == "postgresql" else f"'{user.name}'@'%'"
    grant = {"postgresql": f"GRANT pg_read_all_stats TO {to}", "mysql": f"GRANT PROCESS ON *.* TO {to}"}
    assert report["privileges"]["lacking"] == [grant[db.engine_name]], report["privileges"]


async def test_a_lookup_job_runs_with_the_grants_plan_lists_for_it(db: TestDb, user: User, tmp_path: Path) -> None:
    """A lookup job also reads the lookup table and creates its missing rows: SELECT and INSERT there (and on
    MySQL/MariaDB UPDATE of its id, which ON DUPLICATE KEY UPDATE id = id assigns)."""
    from tests.integration.test_lookup_jobs import check_all_right, linktarget, pagelinks
    from tests.integration.test_lookup_jobs import job as lookup_job

    lt = await linktarget(db)
    pl, _ = await pagelinks(db, 300)
    await db.engine.execute(state.ddl(db.engine.dialect, db.state_table))
    admin = db.config([lookup_job(pl, lt)])
    j = admin.job("pl_target")
    listed = grants.needs(await access(db.engine, admin, j, await prepare(db.engine, j)))
    on_lookup = {n.privileges: n.columns for n in listed if n.name == lt}
    assert on_lookup[("SELECT",)] == ("lt_id", "lt_namespace", "lt_title")
    assert on_lookup[("INSERT",)] == ("lt_namespace", "lt_title")
    assert (("UPDATE",) in on_lookup) is (db.engine_name == "mysql")
    assert [n for n in listed if n.on == "sequence"] == []   # an identity id (PostgreSQL) needs no sequence grant
    for need in listed:
        if need.level == "required" or need.on == "server":
            await db.engine.execute(await db.engine.grant_sql(need, user.sql))  # type: ignore[attr-defined]
    cfg = config_as(db, user, [lookup_job(pl, lt)], tmp_path)
    [report] = await daemon.plan(cfg)
    assert report["privileges"]["lacking"] == [], report["privileges"]
    [st] = await daemon.run(cfg, daemon.RunOptions())
    assert st.status == "completed"
    await check_all_right(db, pl, lt)


async def test_a_lookup_table_whose_id_is_a_serial_needs_usage_of_its_sequence(db: TestDb, user: User,
                                                                                tmp_path: Path) -> None:
    """A serial id (PostgreSQL: DEFAULT nextval of a sequence) takes USAGE on the sequence besides INSERT; plan lists
    it, names the GRANT while it lacks, and the run works once it is held. An identity column (the lookup test
    above) and MySQL's AUTO_INCREMENT need nothing more."""
    from tests.integration.test_lookup_jobs import check_all_right, id_column, linktarget, pagelinks
    from tests.integration.test_lookup_jobs import job as lookup_job

    lt = await linktarget(db, id_sql="BIGSERIAL PRIMARY KEY" if db.engine_name == "postgresql" else id_column(db))
    pl, _ = await pagelinks(db, 300)
    await db.engine.execute(state.ddl(db.engine.dialect, db.state_table))
    admin = db.config([lookup_job(pl, lt)])
    j = admin.job("pl_target")
    listed = grants.needs(await access(db.engine, admin, j, await prepare(db.engine, j)))
    on_sequence = [n for n in listed if n.on == "sequence"]
    if db.engine_name == "mysql":
        assert on_sequence == []
    else:
        [need] = on_sequence
        assert need.privileges == ("USAGE",) and need.name == f"public.{lt}_lt_id_seq"
    for need in listed:
        if (need.level == "required" or need.on == "server") and need.on != "sequence":
            await db.engine.execute(await db.engine.grant_sql(need, user.sql))  # type: ignore[attr-defined]
    cfg = config_as(db, user, [lookup_job(pl, lt)], tmp_path)
    [report] = await daemon.plan(cfg)
    if db.engine_name == "postgresql":
        assert report["privileges"]["lacking"] == [f"GRANT USAGE ON SEQUENCE public.{lt}_lt_id_seq TO {user.name}"]
        for need in on_sequence:
            await db.engine.execute(await db.engine.grant_sql(need, user.sql))  # type: ignore[attr-defined]
        [report] = await daemon.plan(cfg)
    assert report["privileges"]["lacking"] == [], report["privileges"]
    [st] = await daemon.run(cfg, daemon.RunOptions())
    assert st.status == "completed"
    await check_all_right(db, pl, lt)
