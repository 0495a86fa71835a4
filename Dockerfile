# backfilld container image.
#   docker build -t backfilld:0.1.0 .
#   docker run --rm -v "$PWD/backfilld.toml:/etc/backfilld/backfilld.toml:ro" \
#       -e BACKFILLD_DB_PASSWORD -p 9464:9464 backfilld:0.1.0
# The config is mounted at /etc/backfilld/backfilld.toml. For the published port (and the HEALTHCHECK below)
# its [metrics] listen must be "0.0.0.0:9464": the default 127.0.0.1 is unreachable from outside the
# container. The password comes from the environment variable the config names (password_env) or a mounted
# file (password_file), never from the image.
# Default command: run every job, then keep sweeping (--follow) until SIGTERM (docker stop), which lets the
# batch in flight finish and keeps the checkpoint: give it time, e.g. `docker stop -t 90`.
# For a run that exits when done (a Kubernetes Job), pass: run /etc/backfilld/backfilld.toml

# The base, by name or (for a reproducible build) by digest: python:3.11-slim@sha256:<digest> as `skopeo inspect
# --format '{{.Digest}}' docker://docker.io/library/python:3.11-slim` gives it on the day. Any image with CPython
# 3.11 as python3 and groupadd/useradd works: scripts/build_image.py builds from one made of Debian
# packages (mmdebstrap, as no other registry is reachable there) with
#   podman build --build-arg BASE_IMAGE=localhost/backfilld-base:bookworm .
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what `pip install .` needs (.dockerignore keeps everything else out of the context), and constraints.txt:
# the image gets the versions CI tested, not whatever is newest on the day it is built.
COPY pyproject.toml README.md constraints.txt ./
COPY backfilld ./backfilld
RUN python3 -m venv /opt/backfilld \
 && /opt/backfilld/bin/pip install --no-cache-dir -c constraints.txt . \
 && /opt/backfilld/bin/backfilld --version

FROM ${BASE_IMAGE}
# A fixed uid/gid so that Kubernetes' runAsNonRoot/runAsUser (deploy/kubernetes/job.yaml) can check it.
RUN groupadd --system --gid 10001 backfilld \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin backfilld \
 && install -d -m 0755 /etc/backfilld
COPY --from=build /opt/backfilld /opt/backfilld
ENV PATH=/opt/backfilld/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /tmp
EXPOSE 9464
STOPSIGNAL SIGTERM
# /healthz answers once the daemon has connected to the primary (hence the start period); it needs
# [metrics] listen on 0.0.0.0:9464 or 127.0.0.1:9464.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
ENTRYPOINT ["backfilld"]
CMD ["run", "--follow", "/etc/backfilld/backfilld.toml"]
