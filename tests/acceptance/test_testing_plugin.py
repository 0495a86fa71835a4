"""backfilld.testing, the pytest plugin for migration authors, used as an application uses it: from a project of
its own (examples/extension/, and projects written here), in a pytest process of its own that finds the plugin
through the pytest11 entry point alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from backfilld.config import parse_url
from tests.conftest import MYSQL_URL, PG_URL, require_server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "extension"
SERVERS = {"BACKFILLD_TESTING_POSTGRESQL_URL": PG_URL, "BACKFILLD_TESTING_MYSQL_URL": MYSQL_URL}


def pytest_in(project: Path, *args: str, servers: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFILLD_TESTING_")}
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_PLUGINS", None)
    if servers:
        for url in SERVERS.values():
            require_server(url)
        env.update(SERVERS)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", *args], cwd=project,
                          env=env, capture_output=True, text=True, timeout=600)


def outcomes(out: str) -> dict[str, int]:
    last = out.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}


def scratch_left() -> list[str]:
    pg, my = parse_url(PG_URL), parse_url(MYSQL_URL)
    out = subprocess.run(["psql", "-h", pg.host or "127.0.0.1", "-p", str(pg.port or 5432), "-U", pg.user or "postgres",
                          "-d", pg.database, "-Atc", "SELECT datname FROM pg_database WHERE datname LIKE "
                          "'backfilld_test_%'"], capture_output=True, text=True, check=True).stdout.split()
    out += subprocess.run(["mariadb", "-h", my.host or "127.0.0.1", "-P", str(my.port or 3306), "-u", my.user or "root",
                           "-N", "-e", "SHOW DATABASES LIKE 'backfilld\\_test\\_%'"], capture_output=True, text=True,
                          check=True).stdout.split()
    return out


def test_the_example_extension_passes_on_all_three_engines() -> None:
    before = scratch_left()
    run = pytest_in(EXAMPLE, "--backfilld-require", "-v")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    # 3 tests, each once per engine: nothing skipped, nothing left behind on the servers
    assert outcomes(run.stdout) == {"passed": 9}, run.stdout[-2000:]
    for engine in ("sqlite", "postgresql", "mysql"):
        assert f"test_every_row_gets_its_domain[{engine}] PASSED" in run.stdout
        for kind in ("sweeps", "sync_triggers"):
            assert f"test_old_and_new_code_write_during_the_backfill[{engine}-{kind}] PASSED" in run.stdout
    assert scratch_left() == before


def test_without_server_urls_the_server_engines_skip_with_the_reason() -> None:
    run = pytest_in(EXAMPLE, servers=False)
    assert run.returncode == 0, run.stdout[-4000:]
    assert outcomes(run.stdout) == {"passed": 3, "skipped": 6}, run.stdout[-2000:]
    assert "set BACKFILLD_TESTING_POSTGRESQL_URL to a server URL" in run.stdout
    assert "set BACKFILLD_TESTING_MYSQL_URL to a server URL" in run.stdout


def test_require_turns_a_missing_server_into_a_failure() -> None:
    run = pytest_in(EXAMPLE, "--backfilld-require", servers=False)
    assert run.returncode == 1
    assert outcomes(run.stdout) == {"passed": 3, "errors": 6}, run.stdout[-2000:]
    assert "a missing server fails" in run.stdout


PROJECT = '''
[tool.pytest.ini_options]
testpaths = ["."]
'''

DISAGREEING = '''
import pytest

from backfilld.testing import App, ScratchDatabase

JOB = {"name": "dom", "table": "acct", "set": {"domain": "lower(substr(email, instr(email, '@') + 1))"}}


async def new_code(app: App) -> None:
    """New code that computes the value otherwise than the job: upper-case, where the job lower-cases."""
    row = app.random.randrange(1, 2001)
    if await app.execute("UPDATE acct SET email = ?, domain = ? WHERE id = ?", "x@Mail.Test", "MAIL.TEST", row):
        app.kept("acct", "domain", "MAIL.TEST", id=row)


@pytest.mark.backfilld_engines("sqlite")
def test_disagreement_is_reported(backfilld_db: ScratchDatabase) -> None:
    backfilld_db.execute("CREATE TABLE acct (id INTEGER PRIMARY KEY, email TEXT NOT NULL, domain TEXT)")
    backfilld_db.insert("acct", ("id", "email"), [(i, f"u{i}@Example.org") for i in range(1, 2001)])
    live = backfilld_db.run_live(jobs=[JOB], new_code=new_code, seconds=0.5,
                                 throttle={"max_rows_per_s": 1000, "min_batch": 100, "max_batch": 100})
    live.assert_clean()
'''


def test_a_new_code_value_the_job_disagrees_with_fails_the_authors_test(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(PROJECT)
    (tmp_path / "test_disagree.py").write_text(textwrap.dedent(DISAGREEING))
    run = pytest_in(tmp_path, servers=False)
    assert run.returncode == 1, run.stdout[-3000:]
    # the marker kept it to SQLite: one test, failed, with what went wrong in the author's terms
    assert outcomes(run.stdout) == {"failed": 1}, run.stdout[-3000:]
    assert "AssertionError: backfill under live writes:" in run.stdout
    assert "verify after the documented procedure" not in run.stdout   # after --fix every row is right ...
    assert re.search(r"new code wrote 'MAIL.TEST' into acct.domain at \{'id': \d+\}; it holds 'mail.test' now",
                     run.stdout), run.stdout[-3000:]   # ... but new code's values were replaced


@pytest.mark.parametrize("marker", ['"oracle"', ""])
def test_a_marker_naming_no_known_engine_is_a_usage_error(tmp_path: Path, marker: str) -> None:
    (tmp_path / "pyproject.toml").write_text(PROJECT)
    (tmp_path / "test_m.py").write_text(textwrap.dedent(f'''
        import pytest

        @pytest.mark.backfilld_engines({marker})
        def test_x(backfilld_db):
            pass
    '''))
    run = pytest_in(tmp_path, servers=False)
    assert run.returncode != 0
    assert "name engines of sqlite, postgresql, mysql" in run.stdout + run.stderr
