"""Shared fixtures: one database URL per engine, servers required under CI=true, never silently skipped there."""

from __future__ import annotations

import os
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from hypothesis import settings as hypothesis_settings

from tests.dbutil import TestDb

PG_URL = os.environ.get("BACKFILLD_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("BACKFILLD_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
IN_CI = os.environ.get("CI", "").lower() == "true"

# Property-based tests (hypothesis) explore new inputs on each local run; under CI they replay the same
# derandomized examples, so that a CI result does not depend on luck (what a local run finds becomes a fixed
# regression test, as test_config.py's URL-in-a-name case did).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if IN_CI:
    hypothesis_settings.load_profile("ci")
ENGINES = ["sqlite", "postgresql", "mysql"]


def _unreachable(url: str) -> str | None:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=2):
            return None
    except OSError as exc:
        return f"{parts.scheme} server at {parts.hostname}:{parts.port} is not reachable ({exc})"


def require_server(url: str) -> None:
    """Skip with the reason on a machine without the server; under CI=true a missing server is a failure."""
    reason = _unreachable(url)
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}; .ci/run must start it")
        pytest.skip(reason + " (set BACKFILLD_TEST_*_URL or start the server)")


def engine_url(engine: str, tmp_path) -> str:  # noqa: ANN001
    if engine == "sqlite":
        path = tmp_path / "test.sqlite"
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode=WAL")
        con.close()
        return f"sqlite:///{path}"
    url = PG_URL if engine == "postgresql" else MYSQL_URL
    require_server(url)
    return url


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(engine_name: str, tmp_path) -> str:  # noqa: ANN001
    return engine_url(engine_name, tmp_path)


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[TestDb]:
    """A connection for the test's own setup and checks, and unique table names dropped afterwards."""
    tdb = TestDb(db_url, suffix=uuid.uuid4().hex[:8])
    await tdb.open()
    try:
        yield tdb
    finally:
        await tdb.cleanup()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on a server engine carries its marker, so that `-m "not mysql"` (or `-m postgresql`) selects
    by the server a test needs."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("engine_name") if callspec is not None else None
        if engine in ("postgresql", "mysql"):
            item.add_marker(getattr(pytest.mark, engine))
