"""The UserEmails extension's 1.1.0 backfill, tested the way sites will run it: on SQLite, PostgreSQL and
MySQL/MariaDB, with backfilld's pytest plugin (its fixtures come with `pip install backfilld`).

    BACKFILLD_TESTING_POSTGRESQL_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
    BACKFILLD_TESTING_MYSQL_URL=mysql://root@127.0.0.1:3306/mysql  pytest --backfilld-require

Without a server's URL its tests are skipped with the reason; --backfilld-require makes that a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backfilld.testing import App, ScratchDatabase

HERE = Path(__file__).resolve().parent.parent
JOBS = HERE / "backfills.toml"
ROWS = 10_000
EMAILS = ["Ada@Example.COM", "bob@wiki.example.org", "carol@MAIL.test", "two@at@signs.example", "no-at-sign",
          "trailing@", "Zoë@posteo.de"]
# slow enough that the application's writes land while the job runs: 10,000 rows take about 2.5 s
PACED = {"throttle": {"max_rows_per_s": 4000, "min_batch": 250, "max_batch": 250}}


def domain(email: str) -> str:
    """What the job must write: what new code computes for the same address."""
    return email.split("@")[1].lower() if "@" in email else ""


def install_1_0(db: ScratchDatabase, rows: int) -> dict[int, str]:
    """The 1.0 schema with its rows (even ids), then the 1.1.0 patch that adds the empty column."""
    db.script(HERE / "sql" / f"tables-{db.engine}.sql")
    emails = {i: f"{i}.{EMAILS[i % len(EMAILS)]}" for i in range(2, 2 * rows + 1, 2)}
    db.insert("ue_user_email", ("ue_id", "ue_user", "ue_email"), [(i, i // 2, e) for i, e in emails.items()])
    db.script(HERE / "sql" / f"patch-ue_email_domain-{db.engine}.sql")
    return emails


def test_every_row_gets_its_domain(backfilld_db: ScratchDatabase) -> None:
    emails = install_1_0(backfilld_db, ROWS)
    [state] = backfilld_db.run(jobs_files=[JOBS])
    assert state.status == "completed"
    assert state.rows_done == ROWS
    got = dict(backfilld_db.fetch("SELECT ue_id, ue_email_domain FROM ue_user_email"))
    assert got == {i: domain(e) for i, e in emails.items()}
    backfilld_db.assert_verified(jobs_files=[JOBS])


async def old_code(app: App) -> None:
    """Release 1.0, still serving while 1.1.0 rolls out: it knows nothing of ue_email_domain."""
    email = f"{app.random.randrange(10**6)}.{app.random.choice(EMAILS)}"
    if app.random.random() < 0.5:   # a new address, into a gap behind the backfill's cursor (odd ids)
        await app.execute("INSERT INTO ue_user_email (ue_id, ue_user, ue_email) VALUES (?, ?, ?)",
                          2 * (app.call * 7919 % ROWS) + 1, 7, email)   # a new odd id each call
    else:                           # a changed address: the row's domain must follow it
        row = 2 * app.random.randrange(1, ROWS + 1)
        await app.execute("UPDATE ue_user_email SET ue_email = ? WHERE ue_id = ?", email, row)
        app.forget("ue_user_email", ue_id=row)


async def new_code(app: App) -> None:
    """Release 1.1.0: writes the address and its domain together."""
    email = f"{app.random.randrange(10**6)}.{app.random.choice(EMAILS)}"
    row = 2 * app.random.randrange(1, ROWS + 1)
    if await app.execute("UPDATE ue_user_email SET ue_email = ?, ue_email_domain = ? WHERE ue_id = ?",
                         email, domain(email), row):
        app.kept("ue_user_email", "ue_email_domain", domain(email), ue_id=row)


@pytest.mark.parametrize("triggers", [False, True], ids=["sweeps", "sync_triggers"])
def test_old_and_new_code_write_during_the_backfill(backfilld_db: ScratchDatabase, triggers: bool) -> None:
    install_1_0(backfilld_db, ROWS)
    live = backfilld_db.run_live(jobs_files=[JOBS], old_code=old_code, new_code=new_code, seconds=1.5,
                                 triggers=triggers, **PACED)
    live.assert_clean()
    emails = dict(backfilld_db.fetch("SELECT ue_id, ue_email FROM ue_user_email"))
    got = dict(backfilld_db.fetch("SELECT ue_id, ue_email_domain FROM ue_user_email"))
    assert got == {i: domain(e) for i, e in emails.items()}
