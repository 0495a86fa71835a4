#!/usr/bin/env python3
"""Build the image and smoke-test it (a maintainer's script, not a test: it reaches Debian's mirror and PyPI, and
the test suite's traffic stays on loopback):

    .venv/bin/python scripts/build_image.py

The Dockerfile builds an image that runs: podman builds it here from a base made of Debian packages
(mmdebstrap; no container registry is reachable from this machine), with the pinned dependencies
(constraints.txt), and the image runs `backfilld demo` as its non-root user.

The base (CPython 3.11 from Debian 12, as python3) is built once and kept in podman's storage as
localhost/backfilld-base:bookworm; the image built from it is removed afterwards. The build mounts the host's CA
certificates for pip (a proxy that re-signs TLS needs them) without putting them in the image. Containers run
with buildah's chroot isolation: podman's OCI runtime (crun) cannot create a container on this machine's
cgroups (hybrid mode) and limits. Needs podman, buildah and mmdebstrap (Debian packages). Exit 0 when the image
built and ran the demo.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/backfilld-base:bookworm"
IMAGE = "localhost/backfilld:smoke-test"
TOOLS = ("podman", "buildah", "mmdebstrap")


def tools() -> dict[str, str]:
    found = {t: shutil.which(t) for t in TOOLS}
    missing = [t for t, path in found.items() if path is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (Debian packages: apt-get install -y {' '.join(TOOLS)})"
        sys.exit(f"build_image: {reason}")
    return {t: str(p) for t, p in found.items()}


def sh(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    assert r.returncode == 0, f"{' '.join(args)}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def base_image(t: dict[str, str], tmp_path: Path) -> str:
    """A base of Debian 12's packages: CPython 3.11, venv, CA certificates (and apt's minimal system, which has
    groupadd and useradd)."""
    if subprocess.run([t["podman"], "image", "exists", BASE], check=False).returncode != 0:
        tar = tmp_path / "base.tar"
        sh(t["mmdebstrap"], "--variant=apt", "--include=python3.11,python3.11-venv,ca-certificates", "--format=tar",
           "bookworm", str(tar), "http://deb.debian.org/debian")
        sh(t["podman"], "import", str(tar), BASE)
    return BASE


def build_and_smoke_test(tmp_path: Path) -> None:
    t = tools()
    base = base_image(t, tmp_path)
    try:
        # --layers=false: no intermediate images are kept (the build stage's would be left behind, 300 MB a run)
        sh(t["podman"], "build", "--layers=false", "--isolation=chroot", "--format=docker",
           "-v", "/etc/ssl/certs:/etc/ssl/certs:ro",
           "--build-arg", f"BASE_IMAGE={base}", "-t", IMAGE, str(ROOT))
        [config] = json.loads(sh(t["podman"], "image", "inspect", IMAGE).stdout)
        c = config["Config"]
        assert c["User"] == "10001:10001" and c["Entrypoint"] == ["backfilld"], c
        assert c["Cmd"] == ["run", "--follow", "/etc/backfilld/backfilld.toml"], c
        assert "/healthz" in " ".join(config.get("Healthcheck", {}).get("Test", []) or c.get("Healthcheck", {})
                                      .get("Test", [])), config
        container = sh(t["buildah"], "from", IMAGE).stdout.strip().splitlines()[-1]
        try:
            run = ["run", "--isolation=chroot", "--user", "10001:10001", "--workingdir", "/tmp", container, "--"]
            assert sh(t["buildah"], *run, "backfilld", "--version").stdout == "backfilld 0.1.0\n"
            # the pinned versions are what the image holds: sqlglot, as constraints.txt has it
            pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text(encoding="utf-8")
                        .splitlines() if "==" in line and not line.startswith("#"))
            version = "import importlib.metadata as m; print(m.version('sqlglot'))"
            shown = sh(t["buildah"], *run, "python", "-c", version)
            assert shown.stdout.strip() == pins["sqlglot"]
            demo = sh(t["buildah"], *run, "backfilld", "demo")
            assert "every row is right" in demo.stdout, demo.stdout[-2000:]
        finally:
            subprocess.run([t["buildah"], "rm", container], capture_output=True, check=False)
    finally:
        subprocess.run([t["podman"], "rmi", "-f", IMAGE], capture_output=True, check=False)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="backfilld-image-") as tmp:
        build_and_smoke_test(Path(tmp))
    print("build_image: the image built from Debian packages and ran `backfilld demo` as its non-root user")
