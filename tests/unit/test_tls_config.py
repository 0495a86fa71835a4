"""TLS in the database URL (issue 16): what each engine's URL takes, what it refuses and how it says so, where
relative file paths are taken from, what each mode makes of the client's context, and the decision on a
plaintext connection. Against real TLS servers: tests/integration/test_tls.py."""

from __future__ import annotations

import ssl
from dataclasses import replace
from pathlib import Path

import pytest
import structlog
import trustme

from backfilld import config, tls
from backfilld.config import database_url, parse_url
from backfilld.errors import ConfigError, TLSError

JOB = [{"name": "j", "table": "users", "set": {"email_domain": "lower(email)"}}]
PG_MODES = ["disable", "prefer", "require", "verify-ca", "verify-full"]
MYSQL_MODES = {"DISABLED": "disable", "PREFERRED": "prefer", "REQUIRED": "require", "VERIFY_CA": "verify-ca",
               "VERIFY_IDENTITY": "verify-full"}


def err(url: str, **database: object) -> str:
    with pytest.raises(ConfigError) as e:
        config.from_dict({"database": {"url": url, **database}, "jobs": JOB})
    return str(e.value)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA, a client certificate and key it signed, and a file that is no PEM."""
    d = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    client = ca.issue_cert("backfilld@example.test")
    client.cert_chain_pems[0].write_to_path(str(d / "client.pem"))
    client.private_key_pem.write_to_path(str(d / "client.key"))
    (d / "junk.pem").write_text("not a certificate\n")
    return {p.stem if p.suffix == ".pem" else p.name: p for p in d.iterdir()}


# ------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize("mode", PG_MODES)
def test_every_postgresql_sslmode_is_understood(mode: str) -> None:
    assert parse_url(f"postgresql://app@db/app?sslmode={mode}").tls.mode == mode


@pytest.mark.parametrize("text,mode", [*MYSQL_MODES.items(), ("verify_identity", "verify-full"),
                                       ("Required", "require")])
def test_every_mysql_ssl_mode_is_understood_in_any_case(text: str, mode: str) -> None:
    assert parse_url(f"mysql://app@db/app?ssl-mode={text}").tls.mode == mode
    assert parse_url(f"mariadb://app@db/app?ssl_mode={text}").tls.mode == mode   # option-file spelling


def test_without_parameters_the_mode_is_prefer_as_libpq_and_mysql_clients_default() -> None:
    for url in ("postgresql://app@db/app", "mysql://app@db/app"):
        t = parse_url(url).tls
        assert (t.mode, t.ca, t.cert, t.key) == ("prefer", None, None, None)


def test_file_parameters_are_kept_percent_decoded() -> None:
    t = parse_url("postgresql://app@db/app?sslmode=verify-full&sslrootcert=/etc/my%20ca.pem&sslcert=c.pem"
                  "&sslkey=c.key").tls
    assert (t.ca, t.cert, t.key) == ("/etc/my ca.pem", "c.pem", "c.key")
    t = parse_url("mysql://app@db/app?ssl-mode=VERIFY_CA&ssl-ca=/ca.pem&ssl-cert=c.pem&ssl-key=c.key").tls
    assert (t.mode, t.ca, t.cert, t.key) == ("verify-ca", "/ca.pem", "c.pem", "c.key")


@pytest.mark.parametrize("url,name,takes", [
    ("postgresql://app@db/app?application_name=x", "application_name", "sslmode, sslrootcert, sslcert, sslkey"),
    ("postgresql://app@db/app?sslcrl=/crl.pem", "sslcrl", "sslmode, sslrootcert, sslcert, sslkey"),
    ("mysql://app@db/app?charset=latin1", "charset", "ssl-mode, ssl-ca, ssl-cert, ssl-key"),
    ("mysql://app@db/app?ssl-capath=/etc/ssl", "ssl-capath", "ssl-mode, ssl-ca, ssl-cert, ssl-key"),
])
def test_a_parameter_backfilld_does_not_understand_is_refused_by_name(url: str, name: str, takes: str) -> None:
    msg = err(url)
    assert "database.url" in msg and f"parameter {name!r}" in msg and takes in msg, msg


@pytest.mark.parametrize("url,other,own", [("postgresql://app@db/app?ssl-mode=REQUIRED", "ssl-mode", "sslmode"),
                                           ("mysql://app@db/app?sslrootcert=/ca.pem", "sslrootcert", "ssl-ca")])
def test_the_other_engines_spelling_is_named_with_this_ones(url: str, other: str, own: str) -> None:
    msg = err(url)
    assert f"parameter {other!r}" in msg and f"URL takes {own}" in msg, msg


@pytest.mark.parametrize("url,allowed", [
    ("postgresql://app@db/app?sslmode=verify", "disable, prefer, require, verify-ca, verify-full"),
    ("postgresql://app@db/app?sslmode=REQUIRE", "disable, prefer, require, verify-ca, verify-full"),   # libpq's case
    ("mysql://app@db/app?ssl-mode=STRICT", "DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"),
])
def test_a_bad_mode_is_refused_with_the_allowed_values(url: str, allowed: str) -> None:
    msg = err(url)
    assert "use one of " + allowed in msg, msg


def test_sslmode_allow_is_refused_with_the_reason() -> None:
    msg = err("postgresql://app@db/app?sslmode=allow")
    assert "sslmode=allow" in msg and "plaintext first" in msg and "prefer" in msg, msg


@pytest.mark.parametrize("url,says", [
    ("postgresql://app@db/app?sslmode=require&sslmode=disable", "gives sslmode twice"),
    ("mysql://app@db/app?ssl-mode=REQUIRED&ssl_mode=REQUIRED", "gives ssl-mode twice"),
    ("postgresql://app@db/app?sslrootcert=", "has sslrootcert with no value"),
    ("postgresql://app@db/app?sslmode=require&sslrootcert=/ca.pem", "sslrootcert with sslmode=require"),
    ("postgresql://app@db/app?sslrootcert=/ca.pem", "sslrootcert with sslmode=prefer"),
    ("mysql://app@db/app?ssl-mode=REQUIRED&ssl-ca=/ca.pem", "ssl-ca with ssl-mode=REQUIRED"),
    ("postgresql://app@db/app?sslmode=disable&sslcert=/c.pem", "sslcert with sslmode=disable"),
    ("mysql://app@db/app?ssl-mode=VERIFY_CA&ssl-key=/c.key", "ssl-key without ssl-cert"),
])
def test_parameters_that_contradict_each_other_are_refused(url: str, says: str) -> None:
    msg = err(url)
    assert says in msg, msg


def test_a_ca_with_a_mode_that_does_not_check_it_names_the_modes_that_do() -> None:
    """libpq quietly upgrades require + sslrootcert to verify-ca; backfilld asks for the mode to be said."""
    msg = err("postgresql://app@db/app?sslmode=require&sslrootcert=/ca.pem")
    assert "sslmode=verify-full" in msg and "sslmode=verify-ca" in msg, msg
    msg = err("mysql://app@db/app?ssl-mode=PREFERRED&ssl-ca=/ca.pem")
    assert "ssl-mode=VERIFY_IDENTITY" in msg and "ssl-mode=VERIFY_CA" in msg, msg


@pytest.mark.parametrize("param", ["sslmode=require", "ssl-mode=REQUIRED", "sslrootcert=/ca.pem", "ssl_mode=x"])
def test_sqlite_refuses_tls_parameters_as_meaningless_for_a_file(param: str) -> None:
    msg = err(f"sqlite:///app.db?{param}")
    assert "SQLite opens a local file" in msg and "TLS parameters make no sense" in msg, msg


def test_a_replica_url_is_parsed_the_same_way() -> None:
    with pytest.raises(ConfigError) as e:
        config.from_dict({"database": {"url": "postgresql://app@db/app"}, "jobs": JOB,
                          "replicas": [{"url": "postgresql://app@db2/app?sslmode=bogus"}]})
    msg = str(e.value)
    assert "replicas[0].url" in msg and "sslmode='bogus'" in msg, msg


# ------------------------------------------------------------------------------------------ files


def test_relative_paths_are_taken_from_the_config_files_folder(tmp_path: Path, pki: dict[str, Path],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc" / "backfilld"
    (etc / "tls").mkdir(parents=True)
    (etc / "tls" / "ca.pem").write_bytes(pki["ca"].read_bytes())
    (etc / "replica-ca.pem").write_bytes(pki["ca"].read_bytes())
    cfg = etc / "backfilld.toml"
    cfg.write_text('[database]\nurl = "postgresql://app@db/app?sslmode=verify-full&sslrootcert=tls/ca.pem"\n'
                   '[[replicas]]\nurl = "postgresql://app@db2/app?sslmode=verify-ca&sslrootcert=replica-ca.pem"\n')
    monkeypatch.chdir(tmp_path)   # not the config's folder
    c = config.load(Path("etc/backfilld/backfilld.toml"))
    assert database_url(c.database).tls.ca == str(etc / "tls" / "ca.pem")
    assert database_url(c.replicas[0], "replicas[0]").tls.ca == str(etc / "replica-ca.pem")
    assert database_url(c.replicas[0], "replicas[0]").origin == "replicas[0]"


def test_absolute_paths_are_kept(pki: dict[str, Path]) -> None:
    c = config.from_dict({"database": {"url": f"postgresql://app@db/app?sslmode=verify-full&sslrootcert={pki['ca']}"}})
    assert database_url(c.database).tls.ca == str(pki["ca"])


def test_a_missing_file_is_a_config_error_naming_parameter_and_path(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "mysql://app@db/app?ssl-mode=VERIFY_IDENTITY&ssl-ca=nope/ca.pem"\n')
    with pytest.raises(ConfigError) as e:
        config.load(cfg)
    msg = str(e.value)
    assert "database.url" in msg and f"ssl-ca {tmp_path / 'nope' / 'ca.pem'}: no such file" in msg, msg
    assert "Traceback" not in msg


def test_a_folder_or_a_file_that_is_no_pem_is_a_config_error(tmp_path: Path, pki: dict[str, Path]) -> None:
    msg = err(f"postgresql://app@db/app?sslmode=verify-full&sslrootcert={tmp_path}")
    assert f"sslrootcert {tmp_path}: is a folder" in msg, msg
    msg = err(f"postgresql://app@db/app?sslmode=verify-full&sslrootcert={pki['junk']}")
    assert f"sslrootcert {pki['junk']}: cannot be loaded as PEM" in msg, msg
    msg = err(f"postgresql://app@db/app?sslmode=require&sslcert={pki['junk']}")
    assert "sslcert" in msg and "cannot be loaded as PEM" in msg and "not a certificate" not in msg, msg


def test_an_unreadable_file_is_a_config_error(tmp_path: Path, pki: dict[str, Path]) -> None:
    """A path open() refuses (through a file, as if it were a folder: root reads any file, so a chmod 0 would
    not do), and a folder given as the file."""
    plain = tmp_path / "plain"
    plain.write_bytes(pki["ca"].read_bytes())
    msg = err(f"postgresql://app@db/app?sslmode=verify-full&sslrootcert={plain}/ca.pem")
    assert "cannot read it (Not a directory)" in msg, msg
    msg = err(f"postgresql://app@db/app?sslmode=verify-full&sslrootcert={tmp_path}")
    assert "is a folder, not a PEM file" in msg, msg


def test_an_encrypted_key_is_refused_without_prompting(tmp_path: Path, pki: dict[str, Path]) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki["client.key"].read_bytes(), password=None)
    enc = tmp_path / "enc.key"
    enc.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"pw")))
    msg = err(f"postgresql://app@db/app?sslmode=require&sslcert={pki['client']}&sslkey={enc}")
    assert "the key is encrypted" in msg, msg


def test_a_client_certificate_and_key_load(pki: dict[str, Path]) -> None:
    c = config.from_dict({"database": {"url": f"mysql://app@db/app?ssl-mode=VERIFY_IDENTITY&ssl-ca={pki['ca']}"
                                              f"&ssl-cert={pki['client']}&ssl-key={pki['client.key']}"}})
    assert tls.context(database_url(c.database).tls) is not None


# ------------------------------------------------------------------------------------------ the context


@pytest.mark.parametrize("mode,hostname,verify", [("verify-full", True, ssl.CERT_REQUIRED),
                                                  ("verify-ca", False, ssl.CERT_REQUIRED),
                                                  ("require", False, ssl.CERT_NONE),
                                                  ("prefer", False, ssl.CERT_NONE)])
def test_each_mode_makes_the_documented_context(mode: str, hostname: bool, verify: ssl.VerifyMode,
                                                pki: dict[str, Path]) -> None:
    ca = f"&sslrootcert={pki['ca']}" if mode.startswith("verify") else ""
    ctx = tls.context(parse_url(f"postgresql://app@db/app?sslmode={mode}{ca}").tls)
    assert ctx is not None
    assert (ctx.check_hostname, ctx.verify_mode) == (hostname, verify)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_disable_makes_no_context_and_verify_without_a_ca_uses_the_system_store() -> None:
    assert tls.context(parse_url("postgresql://app@db/app?sslmode=disable").tls) is None
    ctx = tls.context(parse_url("mysql://app@db/app?ssl-mode=VERIFY_IDENTITY").tls)
    assert ctx is not None and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED


# ------------------------------------------------------------------------------------------ plaintext


@pytest.mark.parametrize("peer,local", [(("127.0.0.1", 5432), True), (("127.8.9.10", 5432), True),
                                        (("::1", 5432, 0, 0), True), (("::ffff:127.0.0.1", 3306, 0, 0), True),
                                        ("", True), ("/run/postgresql/.s.PGSQL.5432", True),
                                        (("10.1.2.3", 5432), False), (("192.0.2.7", 3306), False),
                                        (("fd00::5", 5432, 0, 0), False), (("::ffff:10.0.0.1", 1, 0, 0), False),
                                        (None, False), (("not-an-address", 1), False)])
def test_loopback_and_unix_sockets_are_local(peer: object, local: bool) -> None:
    assert tls.is_local(peer) is local


@pytest.mark.parametrize("encrypted,peer,require_tls,verdict", [
    (False, ("127.0.0.1", 5432), False, "ok"), (False, ("127.0.0.1", 5432), True, "ok"),
    (False, "", True, "ok"), (True, ("10.1.2.3", 5432), True, "ok"),
    (False, ("10.1.2.3", 5432), False, "warn"), (False, ("10.1.2.3", 5432), True, "refuse")])
def test_plaintext_over_a_network_warns_or_is_refused_under_require_tls(encrypted: bool, peer: object,
                                                                        require_tls: bool, verdict: str) -> None:
    assert tls.plaintext_verdict(encrypted, peer, require_tls) == verdict


def test_the_warning_is_logged_once_per_url_without_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "_warned", set())
    url = parse_url("postgresql://app:S3cr3t@db.example.test/app", allow_password=True)
    replica = replace(parse_url("postgresql://app@db2.example.test/app"), origin="replicas[0]")
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            tls.after_connect(url, encrypted=False, peer=("10.1.2.3", 5432))
        tls.after_connect(replica, encrypted=False, peer=("10.1.2.4", 5432))
        tls.after_connect(url, encrypted=True, peer=("10.1.2.3", 5432))
    events = [e for e in logs if e["event"] == "connection_not_encrypted"]
    assert [(e["host"], e["role"], e["log_level"]) for e in events] == [("10.1.2.3", "primary", "warning"),
                                                                        ("10.1.2.4", "replica", "warning")]
    assert "S3cr3t" not in repr(logs) and "sslmode=verify-full" in events[0]["detail"]


def test_require_tls_refuses_plaintext_over_a_network_saying_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tls, "_warned", set())
    url = replace(parse_url("mysql://app:S3cr3t@db.example.test/app", allow_password=True), require_tls=True)
    with pytest.raises(TLSError) as e:
        tls.after_connect(url, encrypted=False, peer=("10.1.2.3", 3306))
    msg = str(e.value)
    assert "database.url" in msg and "require_tls = true" in msg and "ssl-mode=VERIFY_IDENTITY" in msg, msg
    assert "ssl-ca" in msg and "nothing was written" in msg and "S3cr3t" not in msg, msg
    tls.after_connect(url, encrypted=False, peer=("127.0.0.1", 3306))   # loopback: fine even so


def test_require_tls_is_a_database_key_defaulting_to_false() -> None:
    assert config.from_dict({"database": {"url": "sqlite:///a.db"}}).database.require_tls is False
    c = config.from_dict({"database": {"url": "postgresql://a@h/d", "require_tls": True}})
    assert database_url(c.database, require_tls=c.database.require_tls).require_tls is True
    with pytest.raises(ConfigError, match="require_tls"):
        config.from_dict({"database": {"url": "postgresql://a@h/d", "require_tls": "sometimes"}})


def test_a_tilde_is_part_of_the_path_not_a_home_directory(tmp_path: Path) -> None:
    """Found in review: ~user/... expanded by Path.expanduser raised RuntimeError (a traceback) for an unknown
    user; paths are taken as written."""
    cfg = tmp_path / "c.toml"
    cfg.write_text('[database]\nurl = "postgresql://a@h/d?sslmode=verify-full&sslrootcert=~no-such-user/ca.pem"\n')
    with pytest.raises(ConfigError) as e:
        config.load(cfg)
    assert f"sslrootcert {tmp_path / '~no-such-user' / 'ca.pem'}: no such file" in str(e.value), str(e.value)
