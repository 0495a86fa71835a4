"""Throwaway certificates for TLS tests, and primary/replica pairs that require TLS made with them.

Owns: a CA (trustme) that signs one server certificate for ``localhost`` and ``127.0.0.1``, a second CA that
signed nothing the servers show (the "wrong CA"), their PEM files in a temporary folder, and starting a
PostgreSQL and a MariaDB pair (tests/harness/replication.py, ``tls=``) that refuse plaintext TCP. Delegates
running the servers to replication.py.

    with TLSPairs() as servers:            # or, in a module-scoped fixture: yield from tls_pairs_fixture()
        servers.files.ca                   # Path of the right CA's PEM; .wrong_ca another CA's
        servers.pg.primary_url             # postgresql://postgres@127.0.0.1:PORT/test (add sslmode=...)
        servers.mariadb.replica_url
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from tests.harness.replication import (
    MariaDBPair,
    PostgresPair,
    ServerTLS,
    require_replication,
    start_mariadb_pair,
    start_postgres_pair,
)

# the names the servers' certificate is valid for: what a test connects by for verify-full to pass
SERVER_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class TLSFiles:
    dir: Path
    ca: Path          # the CA that signed the servers' certificate
    wrong_ca: Path    # a CA that signed nothing the servers show
    server: ServerTLS

    @classmethod
    def make(cls, folder: Path, *, required: bool = True) -> Self:
        import trustme

        ca, wrong = trustme.CA(), trustme.CA()
        leaf = ca.issue_cert(*SERVER_NAMES)
        ca.cert_pem.write_to_path(str(folder / "ca.pem"))
        wrong.cert_pem.write_to_path(str(folder / "wrong-ca.pem"))
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        return cls(folder, folder / "ca.pem", folder / "wrong-ca.pem",
                   ServerTLS(chain, leaf.private_key_pem.bytes(), ca.cert_pem.bytes(), required=required))


class TLSPairs:
    """A PostgreSQL pair and a MariaDB pair, each requiring TLS, with one CA's certificate (see module doc)."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="backfilld-tls-"))
        self.files = TLSFiles.make(self._dir)
        self.pg: PostgresPair
        self.mariadb: MariaDBPair
        self._stack = contextlib.ExitStack()

    def start(self) -> Self:
        try:
            # log_connections: the server's own word that each session is encrypted ("SSL enabled")
            self.pg = self._stack.enter_context(start_postgres_pair(
                tls=self.files.server, extra_conf={"log_connections": "on"}))
            self.mariadb = self._stack.enter_context(start_mariadb_pair(tls=self.files.server))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self._stack.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def tls_pairs_fixture() -> Iterator[TLSPairs]:
    """For ``yield from`` in a module-scoped pytest fixture: skips (fails under CI=true) without the binaries."""
    require_replication()
    with TLSPairs() as servers:
        yield servers
