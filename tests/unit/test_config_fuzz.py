"""Property-based: whatever a config file holds, loading it gives a Config or a ConfigError naming the problem,
never another exception (a traceback for the user), and never a secret in the message."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from backfilld import config
from backfilld.errors import ConfigError

SECRET = "S3cr3tPW"
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    st.sampled_from(["sqlite:///a.db", f"postgresql://u:{SECRET}@h/d", "mysql://u@h/d", "lower(x)",
                                     "id", "users", "00:00-06:00", "info", "json",
                                     # TLS parameters: understood, contradicting, naming files that are not there
                                     "postgresql://u@h/d?sslmode=verify-full&sslrootcert=ca.pem",
                                     f"postgresql://u:{SECRET}@h/d?sslmode=require",
                                     "mysql://u@h/d?ssl-mode=REQUIRED&ssl-ca=/nonexistent/ca.pem",
                                     "mysql://u@h/d?ssl_mode=bogus&ssl-key=k", "sqlite:///a.db?sslmode=disable"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=10)
SECTIONS = ["database", "state", "throttle", "metrics", "logging", "replicas", "jobs", "nonsense"]
KEYS = ["url", "name", "table", "set", "where", "key", "batch_size", "workers", "max_lag_s", "listen", "level",
        "password_env", "password_file", "transform", "targets", "sources", "overwrite", "run_windows"]
sections = st.dictionaries(st.sampled_from(SECTIONS), st.one_of(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=5),
    st.lists(st.dictionaries(st.sampled_from(KEYS), values, max_size=5), max_size=2), values), max_size=5)


@hsettings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(sections)
def test_any_config_data_loads_or_is_a_config_error_without_the_secret(data: dict) -> None:
    try:
        config.from_dict(data)
    except ConfigError as exc:
        assert str(exc) and SECRET not in str(exc)


@hsettings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_file_content_loads_or_is_a_config_error(tmp_path: Path, raw: bytes) -> None:
    p = tmp_path / "c.toml"
    p.write_bytes(raw)
    try:
        config.load(p)
    except ConfigError as exc:
        assert str(exc)


def test_the_fuzzer_reaches_valid_configs_too() -> None:
    """The property above is not only ever the error branch: a generated-like minimal config loads."""
    data = tomllib.loads('[database]\nurl = "sqlite:///a.db"\n[[jobs]]\nname = "j"\ntable = "t"\n[jobs.set]\nc = "1"\n')
    assert config.from_dict(data).jobs[0].name == "j"
    with pytest.raises(ConfigError):
        config.from_dict({"database": {"url": f"postgresql://u:{SECRET}@h/d"}})
