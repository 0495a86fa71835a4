"""Config validation: every error names its key and says what to do; secrets never appear."""

from __future__ import annotations

from pathlib import Path

import pytest

from backfilld import config
from backfilld.errors import ConfigError

BASE = {"database": {"url": "sqlite:///app.db"},
        "jobs": [{"name": "j", "table": "users", "set": {"email_domain": "lower(email)"}}]}


def cfg(**over):  # noqa: ANN003, ANN201
    data = {**BASE, **over}
    return config.from_dict(data)


def err(data: dict) -> str:
    with pytest.raises(ConfigError) as e:
        config.from_dict(data)
    return str(e.value)


def test_minimal_config_has_documented_defaults() -> None:
    c = cfg()
    job = c.jobs[0]
    assert c.engine == "sqlite"
    assert job.batch_size == 1000 and job.key is None and job.where is None and job.overwrite is False
    assert c.state.table == "backfilld_state"
    assert c.database.lock_timeout_s == 0.5 and c.database.skip_locked is True
    assert c.throttle.workers == 2


@pytest.mark.parametrize("url,engine", [("postgresql://app@db:5432/app", "postgresql"),
                                        ("postgres://app@db/app", "postgresql"),
                                        ("mysql://app@db/app", "mysql"), ("mariadb://app@db:3307/app", "mysql"),
                                        ("sqlite:///rel.db", "sqlite"), ("sqlite:////abs/path.db", "sqlite")])
def test_url_schemes(url: str, engine: str) -> None:
    assert config.parse_url(url).engine == engine


def test_sqlite_paths() -> None:
    assert config.parse_url("sqlite:///rel.db").database == "rel.db"
    assert config.parse_url("sqlite:////abs/path.db").database == "/abs/path.db"


def test_password_in_url_is_refused_and_not_echoed() -> None:
    msg = err({**BASE, "database": {"url": "postgresql://app:hunter2@db/app"}})
    assert "database.url" in msg and "password_env" in msg and "hunter2" not in msg


@pytest.mark.parametrize("url", ["postgresql://app:4711/S3cr3t@db/app", "postgresql://app:S3c/r3t@db/app",
                                 "mysql://app:S3c#r3t@db/app", "mysql://app:S3c?r3t@db/app",
                                 "postgresql://app:S3cr3t@db:S3cr3t/app"])
def test_a_password_with_url_delimiters_is_refused_and_not_echoed(url: str) -> None:
    """'/', '?' and '#' end the user:password part, so the password passed as a host, port or path, and an
    error printed it."""
    msg = err({**BASE, "database": {"url": url}})
    assert "database.url" in msg and "S3c" not in msg and "4711" not in msg, msg


@pytest.mark.parametrize("name", ["users\n", "users\n; DROP TABLE x"])
def test_an_identifier_with_a_trailing_newline_is_refused(name: str) -> None:
    assert "table" in err({**BASE, "jobs": [{**BASE["jobs"][0], "table": name.replace("\\n", "\n")}]})


def test_a_config_nested_too_deeply_is_bad_input_not_a_traceback(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[database]\nurl = "sqlite:///a.db"\nx = ' + "[" * 100_000, encoding="utf-8")
    with pytest.raises(ConfigError, match="nests arrays or tables too deeply"):
        config.load(p)


def test_a_password_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_bytes(b"\xff\xfe")
    c = config.from_dict({"database": {"url": "postgresql://a@h/d", "password_file": str(f)}})
    with pytest.raises(ConfigError, match="password_file .* is not UTF-8 text"):
        config.database_url(c.database)


@pytest.mark.parametrize("url,name", [("postgresql://app@db/app?application_name=x", "application_name"),
                                      ("mysql://app@db/app?charset=latin1", "charset"),
                                      ("sqlite:///a.db?mode=ro", "mode")])
def test_a_url_parameter_backfilld_would_ignore_is_refused_by_name(url: str, name: str) -> None:
    """sslmode=verify-full was once parsed and ignored (plaintext, exit 0); what backfilld does not understand
    is refused by name (the TLS parameters it does understand: tests/unit/test_tls_config.py)."""
    msg = err({**BASE, "database": {"url": url}})
    assert f"parameter {name!r}" in msg, msg


def test_a_url_given_where_a_name_belongs_is_echoed_without_its_password() -> None:
    """Found by tests/unit/test_config_fuzz.py: a value echoed in an error may be a URL with a password."""
    msg = err({**BASE, "replicas": [{"url": "sqlite:///r.db", "name": "postgresql://u:S3c/r3t@h/d"}]})
    assert "replicas[0].name" in msg and "postgresql://u:***@h/d" in msg and "S3c" not in msg, msg


def test_url_never_prints_password() -> None:
    u = config.parse_url("postgresql://app@db/app").with_password("s3cret")
    assert "s3cret" not in str(u) and "s3cret" not in repr(u) and "***" in str(u)


@pytest.mark.parametrize("job,where,fragment", [
    ({"batch_size": 0}, "jobs[0].batch_size", "greater than or equal to 1"),
    ({"table": "users; drop table x"}, "jobs[0].table", "not a table name"),
    ({"key": []}, "jobs[0].key", "is empty"),
    ({"key": ["id", "id"]}, "jobs[0].key", "twice"),
    ({"set": {}}, "jobs[0]", "no targets"),
    ({"set": {"bad name": "1"}}, "jobs[0].set", "not a plain SQL identifier"),
    ({"set": {"c": {"oracle": "1"}}}, "jobs[0].set", "unknown engine 'oracle'"),
    ({"set": {"c": "1; delete from users"}}, "jobs[0].set", "without ';'"),
    ({"where": " "}, "jobs[0].where", "is empty"),
    ({"bacth_size": 5}, "jobs[0].bacth_size", "unknown key"),
])
def test_job_errors_name_the_key(job: dict, where: str, fragment: str) -> None:
    msg = err({**BASE, "jobs": [{**BASE["jobs"][0], **job}]})
    assert where in msg and fragment in msg, msg


def test_duplicate_job_names() -> None:
    assert "two jobs are named 'j'" in err({**BASE, "jobs": [BASE["jobs"][0], BASE["jobs"][0]]})


def test_missing_database_section() -> None:
    assert "database: is required" in err({"jobs": []})


def test_throttle_bounds() -> None:
    assert "min_batch (500) is above max_batch (100)" in err({**BASE, "throttle": {"min_batch": 500,
                                                                                  "max_batch": 100}})


@pytest.mark.parametrize("workers", [0, 17])
def test_workers_bounds_name_the_setting(workers: int) -> None:
    assert "throttle.workers" in err({**BASE, "throttle": {"workers": workers}})


def test_engine_specific_expression_needs_this_engine() -> None:
    c = cfg(jobs=[{"name": "j", "table": "t", "set": {"c": {"postgresql": "split_part(e, '@', 2)"}}}])
    with pytest.raises(ConfigError, match="no expression for engine 'sqlite'"):
        c.jobs[0].expressions("sqlite")
    assert c.jobs[0].expressions("postgresql") == {"c": "split_part(e, '@', 2)"}


def test_fingerprint_ignores_tuning_but_not_spec() -> None:
    a = cfg().jobs[0]
    b = cfg(jobs=[{**BASE["jobs"][0], "batch_size": 5, "max_retries": 3}]).jobs[0]
    c = cfg(jobs=[{**BASE["jobs"][0], "where": "x = 1"}]).jobs[0]
    assert a.fingerprint("sqlite", ["id"]) == b.fingerprint("sqlite", ["id"])
    assert a.fingerprint("sqlite", ["id"]) != c.fingerprint("sqlite", ["id"])
    assert a.fingerprint("sqlite", ["id"]) != a.fingerprint("sqlite", ["id", "x"])


def test_password_env_and_file(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    c = config.from_dict({"database": {"url": "postgresql://a@h/d", "password_env": "BF_PW"}})
    monkeypatch.delenv("BF_PW", raising=False)
    with pytest.raises(ConfigError, match="BF_PW"):
        config.database_url(c.database)
    monkeypatch.setenv("BF_PW", "pw1")
    assert config.database_url(c.database).password == "pw1"
    f = tmp_path / "pw"
    f.write_text("pw2\n")
    c = config.from_dict({"database": {"url": "postgresql://a@h/d", "password_file": str(f)}})
    assert config.database_url(c.database).password == "pw2"
    assert "not both" in err({"database": {"url": "postgresql://a@h/d", "password_file": "x", "password_env": "y"}})


def test_password_file_from_systemd_credentials(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """password_file = "%d/NAME" reads the credential LoadCredential=NAME:... passed in (deploy/systemd/)."""
    (tmp_path / "db-password").write_text("s3cret-pw\n")
    c = config.from_dict({"database": {"url": "postgresql://a@h/d", "password_file": "%d/db-password"}})
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert config.database_url(c.database).password == "s3cret-pw"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="names a systemd credential, but CREDENTIALS_DIRECTORY is not set"):
        config.database_url(c.database)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="cannot read it") as exc:
        config.database_url(c.database)
    assert "s3cret" not in str(exc.value)


def test_load_reports_toml_errors(tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "c.toml"
    p.write_text("[database\nurl=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(p)


def test_example_config_is_valid() -> None:
    c = config.load(Path(__file__).parents[2] / "config" / "example.toml")
    assert c.jobs


LOOKUP = {"table": "linktarget", "id": "lt_id", "target": "pl_target_id",
          "match": {"lt_namespace": "pl_namespace", "lt_title": "pl_title"}}


@pytest.mark.parametrize("job,where,fragment", [
    ({"set": {"c": "1"}, "lookup": LOOKUP}, "jobs[0]", "leave out [jobs.set]"),
    ({"lookup": {**LOOKUP, "match": {}}}, "jobs[0].lookup.match", "names no column"),
    ({"lookup": {**LOOKUP, "match": {"lt title": "x"}}}, "jobs[0].lookup.match", "not a plain SQL identifier"),
    ({"lookup": {**LOOKUP, "match": {"lt_title": "x; drop table t"}}}, "jobs[0].lookup.match", "without ';'"),
    ({"lookup": {**LOOKUP, "values": {"lt_title": "x"}}}, "jobs[0].lookup", "in both match and values"),
    ({"lookup": {**LOOKUP, "match": {"lt_id": "pl_id"}}}, "jobs[0].lookup", "generated by the lookup table"),
    ({"lookup": {**LOOKUP, "table": "a.b.c"}}, "jobs[0].lookup.table", "not a table name"),
    ({"lookup": {**LOOKUP, "tabel": "x"}}, "jobs[0].lookup.tabel", "unknown key"),
    ({"lookup": LOOKUP, "overwrite": True}, "jobs[0]", "overwrite does not go with a lookup job"),
])
def test_lookup_job_errors_name_the_key(job: dict, where: str, fragment: str) -> None:
    base = {k: v for k, v in BASE["jobs"][0].items() if k != "set"}
    msg = err({**BASE, "jobs": [{**base, **job}]})
    assert where in msg and fragment in msg, msg


def test_a_lookup_job_targets_its_foreign_key_and_its_fingerprint_covers_the_lookup() -> None:
    base = {k: v for k, v in BASE["jobs"][0].items() if k != "set"}
    one = cfg(jobs=[{**base, "lookup": LOOKUP}]).jobs[0]
    other = cfg(jobs=[{**base, "lookup": {**LOOKUP, "match": {"lt_namespace": "pl_namespace",
                                                              "lt_title": "lower(pl_title)"}}}]).jobs[0]
    assert one.target_columns == ["pl_target_id"]
    assert one.fingerprint("sqlite", ["id"]) != other.fingerprint("sqlite", ["id"])
    with pytest.raises(ConfigError, match=r"jobs.j.lookup.match.lt_title: no expression for engine 'mysql'"):
        cfg(jobs=[{**base, "lookup": {**LOOKUP, "match": {"lt_title": {"sqlite": "pl_title"}}}}]).jobs[0] \
            .fingerprint("mysql", ["id"])


def test_a_relative_password_file_is_read_from_the_config_files_folder(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "db").write_text("from-beside-the-config\n")
    cfg = tmp_path / "site.toml"
    cfg.write_text('[database]\nurl = "postgresql://a@h/d"\npassword_file = "secrets/db"\n'
                   '[[jobs]]\nname = "j"\ntable = "t"\n[jobs.set]\nc = "1"\n')
    monkeypatch.chdir(tmp_path / "secrets")   # not where the file is: the config's folder counts
    assert config.database_url(config.load(cfg).database).password == "from-beside-the-config"
