"""TLS to the database servers: the URL's TLS parameters, the client's ssl.SSLContext, and what a connection that
ended up in plaintext means.

Owns: each server engine's TLS parameters and modes as its URL spells them (PostgreSQL's sslmode, sslrootcert,
sslcert, sslkey; MySQL's ssl-mode, ssl-ca, ssl-cert, ssl-key), parsed into one TLS value with one vocabulary of
modes; the context the engines hand their driver, built here so that each mode means exactly what the README
says, whatever the driver's own defaults or environment variables; the decision on a plaintext connection
(nothing on loopback or a unix socket, else a warning once per URL, or an error under [database] require_tls); the
messages of TLS failures. Delegates connecting, and reading whether a connection is encrypted, to the engines.
Imports nothing of backfilld but errors and logs, and ssl only where it is used, so config.py can read it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from backfilld import logs
from backfilld.errors import ConfigError, TLSError

if TYPE_CHECKING:
    import ssl

    from backfilld.config import DatabaseURL

Mode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]
# weakest first: every mode from "require" on fails rather than connect in plaintext, from "verify-ca" on the
# server's certificate must chain to the CA, and "verify-full" also checks that it names the host of the URL
MODES: tuple[Mode, ...] = ("disable", "prefer", "require", "verify-ca", "verify-full")


@dataclass(frozen=True)
class URLParams:
    """How one engine's URL spells the TLS parameters and modes."""

    title: str
    mode: str
    ca: str
    cert: str
    key: str
    modes: dict[str, Mode]                     # as written in the URL -> ours
    refused: dict[str, str] = field(default_factory=dict)   # a mode the engine's clients know, and why not here
    case_sensitive: bool = True

    @property
    def names(self) -> tuple[str, str, str, str]:
        return (self.mode, self.ca, self.cert, self.key)

    def spell(self, mode: Mode) -> str:
        """`mode` as this engine's URL writes it: "sslmode=verify-full", "ssl-mode=VERIFY_IDENTITY"."""
        return f"{self.mode}={next(k for k, v in self.modes.items() if v == mode)}"


POSTGRESQL = URLParams(
    "PostgreSQL", "sslmode", "sslrootcert", "sslcert", "sslkey",
    {m: m for m in MODES},
    refused={"allow": "it tries plaintext first and TLS only if the server insists; use prefer, or require"})
MYSQL = URLParams(
    "MySQL/MariaDB", "ssl-mode", "ssl-ca", "ssl-cert", "ssl-key",
    {"DISABLED": "disable", "PREFERRED": "prefer", "REQUIRED": "require", "VERIFY_CA": "verify-ca",
     "VERIFY_IDENTITY": "verify-full"},
    case_sensitive=False)
# by engine name (engines.Capabilities.name); an engine not here (SQLite: a local file) takes no TLS parameter
PARAMS: dict[str, URLParams] = {"postgresql": POSTGRESQL, "mysql": MYSQL}


@dataclass(frozen=True)
class TLS:
    """One URL's TLS settings. Paths are as written until resolved() makes them absolute."""

    engine: str = ""
    mode: Mode = "prefer"   # the default of libpq and of MySQL's clients alike
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def params(self) -> URLParams:
        return PARAMS[self.engine]

    @property
    def required(self) -> bool:
        """Whether the connection fails rather than go on in plaintext."""
        return MODES.index(self.mode) >= MODES.index("require")

    @property
    def verifies(self) -> bool:
        return MODES.index(self.mode) >= MODES.index("verify-ca")

    @property
    def spelled(self) -> str:
        return self.params.spell(self.mode) if self.engine in PARAMS else ""

    def resolved(self, base_dir: Path | None) -> TLS:
        """Relative file paths taken from base_dir (the config file's folder); None keeps them relative to the
        working directory."""
        if base_dir is None:
            return self

        def at(p: str | None) -> str | None:
            return None if p is None else str(base_dir / p)   # an absolute p stays itself; no ~ expansion

        return replace(self, ca=at(self.ca), cert=at(self.cert), key=at(self.key))


def parse(engine: str, title: str, params: Sequence[tuple[str, str]]) -> TLS:
    """A URL's query parameters, decoded, as TLS settings; ValueError saying what is wrong (for config.parse_url).
    Every parameter backfilld does not understand is refused by name: one ignored would connect otherwise than
    the URL says."""
    spec = PARAMS.get(engine)
    if spec is None:
        if params:
            name = params[0][0][:40]
            tls_name = any(name in (*s.names, s.mode.replace("-", "_")) for s in PARAMS.values())
            why = ("TLS parameters make no sense for it" if tls_name else "it takes no parameters")
            raise ValueError(f"has the parameter {name!r}; {title} opens a local file, so {why}; remove it")
        return TLS(engine)
    given: dict[str, str] = {}
    for raw, value in params:
        name = raw.replace("_", "-") if spec is MYSQL else raw   # MySQL's options: ssl_mode is ssl-mode
        if name not in spec.names:
            raise ValueError(_unknown(raw[:40], spec))
        if name in given:
            raise ValueError(f"gives {name} twice; keep one")
        if not value:
            raise ValueError(f"has {name} with no value")
        given[name] = value
    text = given.get(spec.mode)
    if text is None:
        mode: Mode = "prefer"
    else:
        key = text if spec.case_sensitive else text.upper()
        if key in spec.refused:
            raise ValueError(f"has {spec.mode}={text}, which backfilld does not support: {spec.refused[key]}")
        if key not in spec.modes:
            raise ValueError(f"has {spec.mode}={text[:40]!r}; use one of {', '.join(spec.modes)}")
        mode = spec.modes[key]
    tls = TLS(engine, mode, given.get(spec.ca), given.get(spec.cert), given.get(spec.key))
    if tls.ca and not tls.verifies:
        raise ValueError(f"has {spec.ca} with {tls.spelled}, which does not check the server's certificate: set "
                         f"{spec.spell('verify-full')} (or {spec.spell('verify-ca')}) to check it against that CA, "
                         f"or remove {spec.ca}")
    if mode == "disable" and (tls.cert or tls.key):
        raise ValueError(f"has {spec.cert if tls.cert else spec.key} with {tls.spelled}, which makes no TLS "
                         f"connection; remove one of them")
    if tls.key and not tls.cert:
        raise ValueError(f"has {spec.key} without {spec.cert}: give the client certificate the key belongs to")
    return tls


def _unknown(name: str, spec: URLParams) -> str:
    other = next((s for s in PARAMS.values() if s is not spec and name in s.names), None)
    hint = (f" ({name} is how a {other.title} URL says it; this {spec.title} URL takes "
            f"{spec.names[other.names.index(name)]})") if other else ""
    return (f"has the parameter {name!r}, which backfilld does not understand{hint}; a {spec.title} URL takes "
            f"{', '.join(spec.names)} (see the README's TLS section), nothing else")


# ------------------------------------------------------------------------------------------ the client's context

# The oldest protocol version offered: TLS 1.0 and 1.1 are deprecated (RFC 8996), and every supported server
# release (PostgreSQL 12+, MySQL 8, MariaDB 10.4+) speaks TLS 1.2. asyncpg's own default is the same.
MIN_TLS_VERSION = "TLSv1_2"


def context(tls: TLS, where: str = "database.url") -> ssl.SSLContext | None:
    """The client context for `tls` (None for disable): verify-full checks the chain and the host name,
    verify-ca the chain alone, prefer and require neither. The CA is tls.ca, else the system's trust store; no
    driver default (~/.postgresql/root.crt, PGSSLMODE and the like) is read. ConfigError names a file that cannot
    be used; the message never quotes a file's contents."""
    if tls.mode == "disable":
        return None
    import ssl

    spec = tls.params
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion[MIN_TLS_VERSION]
    ctx.check_hostname = tls.mode == "verify-full"
    if tls.verifies:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if tls.ca:
            _load(where, spec.ca, tls.ca, lambda: ctx.load_verify_locations(cafile=tls.ca))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert:
        cert = tls.cert
        if tls.key:
            _readable(where, spec.key, tls.key)
        _load(where, f"{spec.cert}/{spec.key}" if tls.key else spec.cert, cert,
              lambda: ctx.load_cert_chain(cert, keyfile=tls.key, password=_no_password))
    return ctx


def _no_password() -> str:
    # an encrypted key would make OpenSSL prompt on the terminal; instead it fails to load, and says so
    raise ValueError("encrypted")


def check_files(tls: TLS, where: str) -> None:
    """Every file `tls` names exists, is readable and loads (ConfigError naming the parameter otherwise)."""
    if tls.engine in PARAMS and (tls.ca or tls.cert):
        context(tls, where)


def _readable(where: str, param: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(f"{_at(where)}{param} {path}: no such file (a relative path is taken from the config "
                          "file's folder)") from None
    except IsADirectoryError:
        raise ConfigError(f"{_at(where)}{param} {path}: is a folder, not a PEM file") from None
    except OSError as exc:
        raise ConfigError(f"{_at(where)}{param} {path}: cannot read it ({exc.strerror})") from None


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def _load(where: str, param: str, path: str, load: Callable[[], None]) -> None:
    import ssl

    _readable(where, param, path)
    try:
        load()
    except (ssl.SSLError, ValueError, OSError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        if "encrypted" in str(exc) or reason == "BAD_DECRYPT":
            reason = "the key is encrypted; backfilld needs it unencrypted (protect it by the file's permissions)"
        raise ConfigError(f"{_at(where)}{param} {path}: cannot be loaded as PEM ({reason})") from None


# ------------------------------------------------------------------------------------------ after connecting

log = logs.get_logger("backfilld.tls")
_warned: set[str] = set()   # URLs (without password) already warned about in this process


def is_local(peer: object) -> bool:
    """Whether a connection's peer address is this machine: a loopback address, or a unix socket (a path, or
    the empty name a socket without one has). Anything unreadable counts as remote."""
    if isinstance(peer, (tuple, list)) and peer:
        peer = peer[0]
    if isinstance(peer, str) and (peer == "" or peer.startswith("/")):
        return True
    if not isinstance(peer, str):
        return False
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def plaintext_verdict(encrypted: bool, peer: object, require_tls: bool) -> Literal["ok", "warn", "refuse"]:
    """What a connection in the state found means: "ok" (encrypted, or on this machine), "warn" (plaintext over
    a network), or "refuse" (that, under [database] require_tls)."""
    if encrypted or is_local(peer):
        return "ok"
    return "refuse" if require_tls else "warn"


def role(url: DatabaseURL) -> str:
    """What the URL's server is to backfilld, for log lines: "primary" or "replica"."""
    return "replica" if url.origin.startswith("replicas") else "primary"


def after_connect(url: DatabaseURL, *, encrypted: bool, peer: object) -> None:
    """Judge a connection just made to `url` (see plaintext_verdict): warn once per URL, or raise TLSError saying
    what to do. Messages show the URL as str(DatabaseURL) does: without password."""
    tls, where = url.tls, f"{url.origin}.url"
    if tls.required and not encrypted:   # the drivers refuse this themselves: here only as the last check
        raise TLSError(f"{where}: {url}: the connection is not encrypted although {tls.spelled} requires it")
    verdict = plaintext_verdict(encrypted, peer, url.require_tls)
    if verdict == "ok":
        return
    host = str(peer[0] if isinstance(peer, (tuple, list)) and peer else peer)
    spec = tls.params
    if verdict == "refuse":
        raise TLSError(f"{where}: the connection to {url} (the {role(url)}, at {host}) is not encrypted, and "
                       f"[database] require_tls = true forbids that: add {spec.spell('verify-full')} and "
                       f"{spec.ca}=<the CA's file> to the URL (or {spec.spell('require')} where the server's "
                       "certificate cannot be checked), with TLS enabled on the server; nothing was written")
    key = str(url)
    if key not in _warned:
        _warned.add(key)
        log.warning(
            "connection_not_encrypted", host=host, role=role(url), url=key, where=where, mode=tls.spelled,
            detail=f"the connection crosses a network in plaintext: add {spec.spell('verify-full')} to the URL "
                   "(with TLS enabled on the server), or set [database] require_tls = true to refuse such "
                   "connections")


def connect_error(exc: BaseException, url: DatabaseURL) -> TLSError | None:
    """A driver's failure to connect to `url` as a TLSError saying what to do, when TLS is what failed (the
    exception or one it was raised from); None otherwise."""
    import ssl

    tls, where, spec = url.tls, f"{url.origin}.url", url.tls.params
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ssl.SSLCertVerificationError):
            why = str(cur.verify_message or cur.reason or "rejected")
            if "mismatch" in why.lower():
                fix = (f"connect by a host name the certificate names (or, only where the name cannot match, use "
                       f"{spec.spell('verify-ca')}, which checks the CA but not the name)")
            else:
                ca = f"{spec.ca} {tls.ca}" if tls.ca else f"the system's trust store (no {spec.ca} given)"
                fix = f"the server's certificate is not signed by a CA in {ca}: give the CA that signed it"
            return TLSError(f"{where}: cannot connect to {url}: certificate verification failed ({why}) under "
                            f"{tls.spelled}; {fix}")
        if isinstance(cur, ssl.SSLError):
            return TLSError(f"{where}: cannot connect to {url}: the TLS handshake failed "
                            f"({cur.reason or cur.strerror or type(cur).__name__}) under {tls.spelled}")
        cur = cur.__cause__ or cur.__context__
    return None


def refused_plaintext(url: DatabaseURL, *, certain: bool) -> str:
    """What to add to a server's refusal of a plaintext connection backfilld made (mode disable, or prefer
    against a server that offered no TLS); not certain: the server's words could mean something else too."""
    spec = url.tls.params
    fix = f"set {spec.spell('verify-full')} and {spec.ca}=<the CA's file> in {url.origin}.url"
    if certain:
        return f"; the server accepts only encrypted connections: {fix}"
    return (f"; with {url.tls.spelled} the connection was not encrypted, and a server that requires secure "
            f"transport refuses it in these words: if it does, {fix}")
