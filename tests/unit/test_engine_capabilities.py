"""What each engine can do is declared once (engines.CAPABILITIES); code outside engines/ asks it, not the name."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from backfilld import config, engines
from backfilld.engines import protocols
from backfilld.errors import ConfigError

PACKAGE = Path(engines.__file__).parent.parent
# Engine names as they are spelt in URLs and config; a comparison with one of these is an engine-name test.
SPELLINGS = {*engines.NAMES, "postgres", "mariadb"}


@pytest.mark.parametrize("name", engines.NAMES)
def test_each_engine_class_reports_its_own_record(name: str) -> None:
    caps = engines.capabilities(name)
    cls = getattr(importlib.import_module(caps.module), caps.cls)
    assert cls.dialect.name == name
    url = config.parse_url("sqlite:///x.db" if caps.file_database else f"{name}://u@h/db")
    assert url.engine == name
    assert engines.create(url).capabilities is caps


def test_config_and_throttle_read_the_records() -> None:
    assert config.ENGINES == ("postgresql", "mysql", "sqlite")
    assert str(config.parse_url("sqlite:////tmp/a.db")) == "sqlite:////tmp/a.db"
    with pytest.raises(ConfigError, match=r"SQLite has no replicas; remove the \[\[replicas\]\] entries"):
        config.from_dict({"database": {"url": "sqlite:///a.db"}, "replicas": [{"url": "sqlite:///b.db"}]})
    assert engines.capabilities("mysql").load_metric == "Threads_running"
    assert engines.capabilities("postgresql").load_metric == "active backends"
    assert engines.capabilities("sqlite").single_writer == "SQLite has one writer at a time"
    assert [c.name for c in engines.CAPABILITIES.values() if c.discovers_replicas] == ["postgresql"]
    assert [c.name for c in engines.CAPABILITIES.values() if c.app_sessions] == ["postgresql", "mysql"]


def _engine_name_tests(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for op in operands:
                values = op.elts if isinstance(op, (ast.Tuple, ast.List, ast.Set)) else [op]
                if any(isinstance(v, ast.Constant) and v.value in SPELLINGS for v in values):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_engine_name_test_outside_engines() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "engines":
            continue
        found += _engine_name_tests(path)
    assert not found, ("engine names tested outside engines/; ask engines.capabilities(...) or "
                       "Engine.capabilities instead:\n" + "\n".join(found))


@pytest.mark.parametrize("name", engines.NAMES)
def test_optional_abilities_are_the_engines_own_and_agree_with_the_record(name: str) -> None:
    # an engine without an ability lacks its methods (no stub raising NotImplementedError), and its record says so
    caps = engines.capabilities(name)
    url = config.parse_url("sqlite:///x.db" if caps.file_database else f"{name}://u@h/db")
    engine = engines.create(url)
    assert isinstance(engine, protocols.Driver)
    assert isinstance(engine, protocols.Replication) is caps.replicas
    assert isinstance(engine, protocols.AppSessions) is caps.app_sessions
    assert isinstance(engine, protocols.AppSessions) is (caps.load_metric is not None)
    if not caps.replicas:
        with pytest.raises(TypeError, match="has no Replication ability"):
            protocols.replication(engine)
    else:
        assert protocols.replication(engine) is engine
