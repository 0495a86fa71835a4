"""The pytest plugin of backfilld.testing, registered through the pytest11 entry point: installing backfilld
gives an application's tests these fixtures.

    backfilld_sqlite       a new SQLite database file, per test
    backfilld_postgresql   a new database on the server BACKFILLD_TESTING_POSTGRESQL_URL names, dropped afterwards
    backfilld_mysql        a new database on the server BACKFILLD_TESTING_MYSQL_URL names, dropped afterwards
    backfilld_db           each of the three in turn: the test runs once per engine (ids sqlite, postgresql,
                           mysql); @pytest.mark.backfilld_engines("postgresql", "mysql") narrows the list

Each is a backfilld.testing.ScratchDatabase. A server engine without its URL, or whose server does not answer, is
skipped with the reason; with --backfilld-require (or BACKFILLD_TESTING_REQUIRE=1), as an application's CI
should run, it fails instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfilld import testing

_MARK = "backfilld_engines"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("backfilld", "backfilld.testing")
    group.addoption("--backfilld-require", action="store_true", default=False,
                    help="fail, instead of skipping, a backfilld_* fixture whose server is not configured or does "
                         f"not answer ({', '.join(testing.URL_ENV.values())}); also {testing.REQUIRE_ENV}=1")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{_MARK}(*engines): run a backfilld_db test on these engines only "
                                       f"(of {', '.join(testing.ENGINES)})")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backfilld_db" not in metafunc.fixturenames:
        return
    engines = list(testing.ENGINES)
    mark = metafunc.definition.get_closest_marker(_MARK)
    if mark is not None:
        unknown = [e for e in mark.args if e not in testing.ENGINES]
        if unknown or not mark.args:
            raise pytest.UsageError(f"@pytest.mark.{_MARK}{mark.args}: name engines of "
                                    f"{', '.join(testing.ENGINES)}")
        engines = [e for e in testing.ENGINES if e in mark.args]
    metafunc.parametrize("backfilld_engine", engines, ids=engines)


def _required(config: pytest.Config) -> bool:
    return bool(config.getoption("--backfilld-require")) or os.environ.get(testing.REQUIRE_ENV, "") in ("1", "true")


def _scratch(request: pytest.FixtureRequest, engine: str, folder: Path) -> Iterator[testing.ScratchDatabase]:
    try:
        db = testing.scratch_database(engine, folder)
    except testing.Unavailable as exc:
        if _required(request.config):
            pytest.fail(f"{exc} (--backfilld-require / {testing.REQUIRE_ENV}: a missing server fails)",
                        pytrace=False)
        pytest.skip(str(exc))
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def backfilld_sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[testing.ScratchDatabase]:
    yield from _scratch(request, "sqlite", tmp_path)


@pytest.fixture
def backfilld_postgresql(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[testing.ScratchDatabase]:
    yield from _scratch(request, "postgresql", tmp_path)


@pytest.fixture
def backfilld_mysql(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[testing.ScratchDatabase]:
    yield from _scratch(request, "mysql", tmp_path)


@pytest.fixture
def backfilld_engine(request: pytest.FixtureRequest) -> str:
    """The engine of backfilld_db in this run of the test (parametrized by pytest_generate_tests)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def backfilld_db(request: pytest.FixtureRequest, backfilld_engine: str, tmp_path: Path
                 ) -> Iterator[testing.ScratchDatabase]:
    yield from _scratch(request, backfilld_engine, tmp_path)


__all__: list[Any] = []
