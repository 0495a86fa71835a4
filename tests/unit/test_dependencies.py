"""The installed drivers work together, and constraints.txt (what CI tests and the image ships) obeys pyproject.toml.

A stale lock or a wrong bound fails here instead of on a user's `pip install .`.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import aiomysql
import pymysql.converters
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def declared() -> list[Requirement]:
    """pyproject.toml's requirements, the test extra's included, that apply to this interpreter."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["test"]]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": "test"})]


def pins() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for n, raw in enumerate((ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, pinned = (part.strip() for part in line.partition("=="))
        assert sep and pinned, f"constraints.txt:{n}: {raw!r} is not a name==version pin (scripts/lock)"
        key = canonicalize_name(name)
        assert key not in out, f"constraints.txt:{n}: {name} is pinned twice"
        out[key] = Version(pinned)
    return out


async def test_aiomysql_binds_bytes() -> None:
    """aiomysql escapes every bytes parameter with PyMySQL's escape_bytes_prefixed, which PyMySQL 1.2.1+ removed or
    replaced with a string ("TypeError: 'str' object is not callable" for any bytes value on MySQL)."""
    assert callable(pymysql.converters.escape_bytes_prefixed), f"PyMySQL {version('PyMySQL')}: see pyproject.toml"
    assert pymysql.converters.escape_bytes_prefixed(b"\x00\xff") == "_binary'\\0\udcff'"
    # aiomysql's own escape path, on a Connection that never connects (bytes need no server state)
    conn = aiomysql.Connection()
    assert conn.escape(b"a'\x00") == "_binary'a\\'\\0'"


def test_every_declared_requirement_is_pinned() -> None:
    missing = [str(r) for r in declared() if canonicalize_name(r.name) not in pins()]
    assert not missing, f"not in constraints.txt: {missing}; run scripts/lock"


def test_every_pin_satisfies_pyproject() -> None:
    locked, wrong = pins(), []
    for r in declared():
        pinned = locked.get(canonicalize_name(r.name))
        if pinned is not None and not r.specifier.contains(pinned, prereleases=True):
            wrong.append(f"{r.name}=={pinned} (pyproject.toml: {r})")
    assert not wrong, f"constraints.txt breaks pyproject.toml's bounds: {wrong}; run scripts/lock"
