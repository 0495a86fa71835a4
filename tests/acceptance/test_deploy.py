"""The deployment files under deploy/, the Dockerfile and .dockerignore, checked offline.

systemd: `systemd-analyze verify` and its offline security review on the unit. Kubernetes: every manifest
parses and validates against the Kubernetes JSON schemas that the kubernetes-validate package ships (no
network, no cluster), and the pieces fit together (the ConfigMap's config is a valid backfilld config that
listens where the probes look, the Secret key the Job reads exists, ...). Grafana and the alert rules: they
parse and have what the dashboard/alerting needs; their queries are run against a real Prometheus in
test_prometheus.py.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest

from backfilld.config import from_dict
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "backfilld.service"
K8S = DEPLOY / "kubernetes"
DASHBOARD = DEPLOY / "grafana" / "backfilld.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROM_CONFIGS = [DEPLOY / "prometheus" / "prometheus.example.yml",
                DEPLOY / "prometheus" / "kubernetes-scrape.example.yml"]
CONFIG_PATH = "/etc/backfilld/backfilld.toml"   # the same in the unit, the image and the pod
METRICS_PORT = 9464
# Oldest Kubernetes the manifests are written for (podReplacementPolicy needs 1.29+; beta, on by default).
KUBE_VERSION = "1.30"


def need(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        pkg = {"yaml": "pyyaml", "kubernetes_validate": "kubernetes-validate"}.get(module, module)
        if IN_CI:
            pytest.fail(f"CI=true but {pkg} is not installed; it must be in the [test] extra")
        pytest.skip(f"{pkg} is not installed (pip install {pkg})")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"CI=true but {name} is not installed")
        pytest.skip(f"{name} is not installed")
    return path


# ------------------------------------------------------------------------------------------ systemd


def unit_entries(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; keys may repeat, as systemd allows."""
    out, section = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit_value(entries: list[tuple[str, str, str]], key: str, section: str = "Service") -> str | None:
    values = [v for s, k, v in entries if s == section and k == key]
    return values[-1] if values else None


def installed_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart names this venv's real backfilld entry point.

    `systemd-analyze verify` fails when the ExecStart binary does not exist, and the shipped unit names
    /opt/backfilld/bin/backfilld (the venv its install steps create), which this machine does not have. The
    rest of the unit is verified as shipped.
    """
    entry = Path(sys.executable).parent / "backfilld"
    assert entry.exists(), f"{entry}: the package's console script is missing (pip install -e .)"
    text = UNIT.read_text(encoding="utf-8")
    assert "ExecStart=/opt/backfilld/bin/backfilld " in text
    path = tmp_path / "backfilld.service"
    path.write_text(text.replace("ExecStart=/opt/backfilld/bin/backfilld ", f"ExecStart={entry} "), encoding="utf-8")
    return path


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    tool = need_tool("systemd-analyze")
    unit = installed_unit(tmp_path)
    r = subprocess.run([tool, "verify", "--man=no", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # Unknown keys, bad values and missing files are warnings with exit 0: none may mention the unit.
    complaints = [line for line in out.splitlines() if "backfilld" in line]
    assert not complaints, "\n".join(complaints)


def test_systemd_unit_hardening(tmp_path: Path) -> None:
    """systemd's own review of the sandbox: overall exposure at most 2.0 ("OK")."""
    tool = need_tool("systemd-analyze")
    unit = installed_unit(tmp_path)
    r = subprocess.run([tool, "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit)],
                       check=False, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr
    assert "Overall exposure level" in r.stdout


def test_systemd_unit_settings() -> None:
    e = unit_entries(UNIT.read_text(encoding="utf-8"))
    exec_start = shlex.split(unit_value(e, "ExecStart") or "")
    assert exec_start[0].startswith("/") and exec_start[0].endswith("/backfilld")
    assert exec_start[1:] == ["run", "--follow", CONFIG_PATH]
    assert unit_value(e, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert unit_value(e, "KillSignal") == "SIGTERM"
    timeout = unit_value(e, "TimeoutStopSec") or ""
    assert re.fullmatch(r"\d+s?", timeout) and int(timeout.rstrip("s")) >= 60, "too short for the batch in flight"
    assert unit_value(e, "Restart") == "on-failure"
    assert unit_value(e, "RestartPreventExitStatus") == "2"  # bad input: a restart cannot fix it
    # the password as a credential (LoadCredential=), not in the environment its children would inherit
    assert unit_value(e, "EnvironmentFile") is None and not [k for _, k, v in e if k == "Environment" and "PASS" in v]
    assert unit_value(e, "LoadCredential") == "db-password:/etc/backfilld/db-password"
    assert unit_value(e, "User") == "backfilld" and unit_value(e, "DynamicUser") == "yes"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "PrivateDevices": "yes", "CapabilityBoundingSet": "",
                       "SystemCallArchitectures": "native"}.items():
        assert unit_value(e, key) == value, key
    assert "@system-service" in [v for s, k, v in e if k == "SystemCallFilter"]
    families = set((unit_value(e, "RestrictAddressFamilies") or "").split())
    assert families == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_the_config_reads_the_units_credential(tmp_path: Path) -> None:
    """The credential the unit loads is the one config/example.toml's password_file names, and backfilld reads it
    from $CREDENTIALS_DIRECTORY as systemd sets it (a process, as the unit starts it)."""
    e = unit_entries(UNIT.read_text(encoding="utf-8"))
    name, _, source = (unit_value(e, "LoadCredential") or "").partition(":")
    assert source.startswith("/etc/backfilld/")
    example = (ROOT / "config" / "example.toml").read_text(encoding="utf-8")
    assert f'# password_file = "%d/{name}"' in example
    (tmp_path / name).write_text("pw-from-systemd\n", encoding="utf-8")
    probe = ("from backfilld import config; c = config.from_dict({'database': {'url': 'postgresql://a@h/d', "
             f"'password_file': '%d/{name}'}}}}); print(config.database_url(c.database).password)")
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert (r.returncode, r.stdout) == (0, "pw-from-systemd\n"), r.stderr


# ------------------------------------------------------------------------------------------ Kubernetes


def manifest_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    yaml = need("yaml")
    out = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                out.append((path, doc))
    return out


def test_kubernetes_manifests_validate() -> None:
    """Every document against the Kubernetes OpenAPI schemas shipped in kubernetes-validate (offline, strict:
    an unknown or misspelt field is an error)."""
    kv = need("kubernetes_validate")
    docs = manifests()
    assert {p.relative_to(K8S).as_posix() for p, _ in docs} >= {
        "configmap.yaml", "job.yaml", "networkpolicy.yaml", "per-shard/shard-a.yaml", "per-shard/shard-b.yaml",
        "examples/secret.yaml", "examples/secret-shards.yaml"}
    for path, doc in docs:
        try:
            kv.validate(doc, KUBE_VERSION, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{path.relative_to(ROOT)}: {doc['kind']}/{doc['metadata']['name']}: "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")


def test_kubernetes_schema_check_is_real() -> None:
    """The validator catches a misspelt field and a wrong type (so that a pass above means something)."""
    kv = need("kubernetes_validate")
    job = next(d for _, d in manifests() if d["kind"] == "Job")
    bad = copy.deepcopy(job)
    container = bad["spec"]["template"]["spec"]["containers"][0]
    container["livenessprobe"] = container.pop("livenessProbe")
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBE_VERSION, strict=True)
    bad = copy.deepcopy(job)
    bad["spec"]["backoffLimit"] = "six"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBE_VERSION, strict=True)


def jobs() -> list[tuple[Path, dict[str, Any]]]:
    """The Jobs of one daemon each (the farm's Indexed Job, several pods by design, has its own test)."""
    found = [(p, d) for p, d in manifests() if d["kind"] == "Job" and p.parent.name != "farm"]
    assert len(found) >= 3, "job.yaml and one Job per shard in per-shard/"
    return found


def by_kind_name(kind: str, name: str, near: Path) -> dict[str, Any]:
    """The object of that kind and name in the same directory (what `kubectl apply -f DIR` creates together)."""
    found = [d for p, d in manifests() if p.parent == near.parent and d["kind"] == kind
             and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name} next to {near.relative_to(ROOT)}: found {len(found)}"
    return found[0]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_kubernetes_job(index: int) -> None:
    path, job = jobs()[index]
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure"
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 1
    assert spec.get("parallelism", 1) == 1 and spec.get("completions", 1) == 1, "one daemon per set of jobs"
    assert pod["terminationGracePeriodSeconds"] >= 60, "time for the batch in flight after SIGTERM"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    # runs to completion (no --follow, or the Job would never complete), with the mounted config
    assert c["args"] == ["run", CONFIG_PATH]
    # probes on the metrics port, which the config must listen on (see test_configmap_config)
    (port,) = c["ports"]
    assert port["containerPort"] == METRICS_PORT
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in (port["name"], METRICS_PORT), probe
    # the config comes from a ConfigMap next to the Job, mounted where the args look
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    config_volume = next(v for v in pod["volumes"] if "configMap" in v)
    assert mounts[config_volume["name"]]["mountPath"] + "/backfilld.toml" == CONFIG_PATH
    assert mounts[config_volume["name"]].get("readOnly") is True
    cm = by_kind_name("ConfigMap", config_volume["configMap"]["name"], path)
    assert "backfilld.toml" in cm["data"]
    # the password comes from a Secret next to the Job, into the variable the config names
    config = tomllib.loads(cm["data"]["backfilld.toml"])
    env = {e["name"]: e for e in c["env"]}
    ref = env[config["database"]["password_env"]]["valueFrom"]["secretKeyRef"]
    # ... created out of band: the example of its shape sits in examples/, out of what `kubectl apply -f DIR`
    # applies, so that applying the folder never overwrites a real Secret with the example's "change-me"
    assert not [d for p, d in manifests() if p.parent == path.parent and d["kind"] == "Secret"]
    [secret] = [d for p, d in manifests() if p.parent == K8S / "examples" and d["kind"] == "Secret"
                and d["metadata"]["name"] == ref["name"]]
    assert ref["key"] in secret["stringData"]
    # a writable /tmp (read-only root filesystem), where the config's flag_file lives
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    assert config["throttle"]["flag_file"].startswith("/tmp/")


def test_farm_indexed_job_shards_the_farm() -> None:
    """farm/job.yaml: an Indexed Job whose pods each take their shard of the farm in the ConfigMap beside it."""
    [(path, job)] = [(p, d) for p, d in manifests() if d["kind"] == "Job" and p.parent.name == "farm"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] >= 2
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure" and pod["terminationGracePeriodSeconds"] >= 60
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    # the shard count the pods split by is the Job's own completion count (JOB_COMPLETION_INDEX is Kubernetes')
    assert env["BACKFILLD_SHARDS"]["value"] == str(spec["completions"])
    assert c["args"] == ["run", CONFIG_PATH]
    for probe, path_ in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert c[probe]["httpGet"]["path"] == path_
    config_volume = next(v for v in pod["volumes"] if "configMap" in v)
    cm = by_kind_name("ConfigMap", config_volume["configMap"]["name"], path)
    mounted = {i["key"]: i["path"] for i in config_volume["configMap"]["items"]}
    data = tomllib.loads(cm["data"]["backfilld.toml"])
    # the dblist the config names is mounted beside it
    assert mounted[data["farm"]["databases_file"]] == data["farm"]["databases_file"]
    from backfilld import farm

    with tempfile.TemporaryDirectory() as tmp:   # the files as the pod sees them in /etc/backfilld
        for key, name in mounted.items():
            Path(tmp, name).write_text(cm["data"][key], encoding="utf-8")
        cfg = from_dict(data, "farm/configmap.yaml", base_dir=Path(tmp))
        names = [m.name for m in farm.members(cfg)]
        assert len(names) == 4
        shards = [{n for n in names if farm.in_shard(n, (i, spec["completions"]))} for i in range(spec["completions"])]
        assert sorted(n for s in shards for n in s) == sorted(names), "each database in exactly one pod's shard"
    env_ref = env[cfg.database.password_env]["valueFrom"]["secretKeyRef"]
    [secret] = [d for p, d in manifests() if p.parent == K8S / "examples" and d["kind"] == "Secret"
                and d["metadata"]["name"] == env_ref["name"]]
    assert env_ref["key"] in secret["stringData"]


def test_network_policy_admits_only_metrics_in_and_dns_and_databases_out() -> None:
    [(_, policy)] = [(p, d) for p, d in manifests() if d["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
    for _, job in jobs():   # every Job's pods (the per-shard ones too) are selected
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= labels.items()
    [ingress] = spec["ingress"]
    assert [p["port"] for p in ingress["ports"]] == [METRICS_PORT]
    out = {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]}
    assert out == {("UDP", 53), ("TCP", 53), ("TCP", 5432), ("TCP", 3306)}


def test_configmap_config() -> None:
    """Each ConfigMap's backfilld.toml is a valid backfilld config that serves the probes on 0.0.0.0:9464."""
    configmaps = [(p, d) for p, d in manifests() if d["kind"] == "ConfigMap"]
    assert len(configmaps) >= 3
    for path, cm in configmaps:
        data = tomllib.loads(cm["data"]["backfilld.toml"])
        cfg = from_dict(data, f"{path.name}: {cm['metadata']['name']}")  # raises ConfigError with the key
        assert cfg.metrics.address == ("0.0.0.0", METRICS_PORT), "probes and Prometheus reach the pod's IP"
        assert cfg.database.password_env and not cfg.database.password_file
        assert cfg.logging.format == "json"
        assert cfg.jobs


def test_per_shard_jobs_follow_the_base_job() -> None:
    """per-shard/ repeats job.yaml with names changed: a change to the base must reach the shards."""
    base_path = K8S / "job.yaml"
    base = next(d for p, d in manifests() if p == base_path)
    shards = [(p, d) for p, d in jobs() if p.parent.name == "per-shard"]
    assert len(shards) >= 2
    names = set()
    for path, job in shards:
        name = job["metadata"]["name"]
        names.add(name)
        text = json.dumps(job)
        text = text.replace(f"{name}-config", "backfilld-config")
        text = text.replace('"backfilld-shards"', '"backfilld-db"')
        text = re.sub(r'"key": "shard-[a-z0-9-]+"', '"key": "password"', text)
        normal = json.loads(text)
        normal["metadata"]["name"] = "backfilld"
        for meta in (normal["metadata"], normal["spec"]["template"]["metadata"]):
            assert meta["labels"].pop("app.kubernetes.io/instance") == name
        assert normal == base, f"{path.relative_to(ROOT)} drifted from job.yaml"
    assert len(names) == len(shards), "each shard's Job needs its own name"
    hosts = {tomllib.loads(d["data"]["backfilld.toml"])["database"]["url"] for p, d in manifests()
             if d["kind"] == "ConfigMap" and p.parent.name == "per-shard"}
    assert len(hosts) == len(shards), "each shard's config names its own database"


# ------------------------------------------------------------------------------------------ Grafana


def all_panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_grafana_dashboard() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"instance", "job"} <= set(variables)
    panels = all_panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    exprs = []
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        assert p["title"] and p.get("description"), p["id"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], f"panel {p['title']!r} has no targets"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            exprs.append(t["expr"])
    used = set(re.findall(r"\bbackfilld_\w+", " ".join(exprs)))
    # what the issue asks the dashboard to show
    assert {"backfilld_progress_ratio", "backfilld_eta_seconds", "backfilld_rows_processed_total",
            "backfilld_batch_duration_seconds_bucket", "backfilld_batch_size_rows", "backfilld_replica_lag_seconds",
            "backfilld_max_lag_seconds", "backfilld_throttled_seconds_total", "backfilld_errors_total",
            "backfilld_retries_total", "backfilld_job_state"} <= used
    assert any("histogram_quantile" in e for e in exprs)
    assert any(re.search(r"rate\(backfilld_rows_processed_total\{[^}]*\}\[\$__rate_interval\]\)", e) for e in exprs)


# ------------------------------------------------------------------------------------------ Prometheus


def test_alert_rules_parse() -> None:
    yaml = need("yaml")
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert {"BackfilldJobFailed", "BackfilldJobStalled", "BackfilldReplicaLagAboveLimit",
            "BackfilldThrottledMostOfTheTime"} <= set(names)
    for r in rules:
        assert r["expr"].strip() and r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
    by_name = {r["alert"]: r for r in rules}
    assert 'backfilld_job_state{state="failed"} == 1' in by_name["BackfilldJobFailed"]["expr"]
    assert "backfilld_max_lag_seconds" in by_name["BackfilldReplicaLagAboveLimit"]["expr"]
    assert "backfilld_throttled_seconds_total" in by_name["BackfilldThrottledMostOfTheTime"]["expr"]
    assert "backfilld_operator_paused" in by_name["BackfilldJobStalled"]["expr"]


def test_scrape_configs_keep_prometheus_job_label() -> None:
    """backfilld's per-job label is `backfill_job`, so the shipped scrape configs leave Prometheus' own `job`
    alone: no honor_labels (which would let a target overwrite the labels Prometheus attaches)."""
    yaml = need("yaml")
    for path in PROM_CONFIGS:
        scrapes = yaml.safe_load(path.read_text(encoding="utf-8"))["scrape_configs"]
        assert scrapes
        for s in scrapes:
            assert not s.get("honor_labels"), f"{path.name}: {s['job_name']}"


# ------------------------------------------------------------------------------------------ Docker


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    # Docker's rule: comment lines go first (a backslash ending one continues nothing), then continuations join
    lines = (ln for ln in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
             if not ln.strip().startswith("#"))
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for these patterns: the last matching pattern wins; a directory's exclusion
    covers what is under it."""
    parts = rel.split("/")
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.rstrip("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        hit = any(fnmatch.fnmatchcase(c, p) or (p.startswith("**/") and
                                                 any(fnmatch.fnmatchcase(seg, p[3:]) for seg in c.split("/")))
                  for c in candidates)
        if hit:
            ignored = not neg
    return ignored


def test_dockerfile() -> None:
    ins = dockerfile()
    froms = [a for i, a in ins if i == "FROM"]
    assert froms and all(a.split()[0] == "${BASE_IMAGE}" for a in froms)
    # one base for both stages (the venv links to its python3), CPython 3.11, by digest once one is known
    [base] = [a for i, a in ins[:ins.index(("FROM", froms[0]))] if i == "ARG" and a.startswith("BASE_IMAGE=")]
    assert re.fullmatch(r"BASE_IMAGE=python:3\.11-slim(@sha256:[0-9a-f]{64})?", base), base
    final = ins[max(k for k, (i, _) in enumerate(ins) if i == "FROM"):]
    get = {i: a for i, a in final}
    user = get["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric non-root user, so that runAsNonRoot can check it"
    pod_user = {d["spec"]["template"]["spec"]["securityContext"]["runAsUser"] for _, d in jobs()}
    assert pod_user == {int(user)}
    assert json.loads(get["ENTRYPOINT"]) == ["backfilld"]
    assert json.loads(get["CMD"]) == ["run", "--follow", CONFIG_PATH]
    assert get["EXPOSE"].split() == [str(METRICS_PORT)]
    assert "pip install" in " ".join(a for i, a in ins if i == "RUN") and any(
        re.search(r"pip install[^&]* \.(\s|$)", a) for i, a in ins if i == "RUN")
    # the versions CI tested (constraints.txt), not the newest on the day of the build
    assert any(re.search(r"pip install[^&]* -c constraints\.txt[^&]* \.(\s|$)", a) for i, a in ins if i == "RUN")
    assert "HEALTHCHECK" in get and "/healthz" in get["HEALTHCHECK"]
    # every COPY source from the context exists and is not excluded by .dockerignore
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if ln.strip() and not ln.startswith("#")]
    for i, a in ins:
        if i == "COPY" and "--from=" not in a:
            for src in a.split()[:-1]:
                assert (ROOT / src).exists(), src
                assert not dockerignored(src, patterns), f"{src} is excluded by .dockerignore"
    for src in ("backfilld/__init__.py", "backfilld/engines/base.py"):
        assert not dockerignored(src, patterns), src
    for junk in (".venv", ".venv/bin/python", ".venv-latest", ".git", ".git/HEAD", "tests", ".pytest_cache",
                 "backfilld.egg-info", "backfilld/__pycache__/cli.cpython-311.pyc", "demo.sqlite",
                 "deploy/systemd/backfilld.env"):
        assert dockerignored(junk, patterns), f"{junk} would be sent to the build"
